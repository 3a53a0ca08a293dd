//! End to end under UEFI: automatic fallback. Generation 2 has boot
//! counting (`[boot] tries = 2`) and a stage-2 init that fails (it reboots
//! without blessing the boot). systemd-boot counts its tries down across the
//! reboots, then boots generation 1 by itself; the bad entry is left with
//! zero tries (`+0-2`) and is no longer what boots by default.

use crate::support::{self, scenario::*};

#[test]
fn failing_generation_falls_back_to_the_previous_after_its_tries() {
    let s = Scenario::new("e2e_fallback", BUDGET);
    let k = support::kernel(support::CLOUD);
    s.tree_file(
        "/sbin/init-broken",
        &format!(
            "#!/bin/sh\n\
             # A stage 2 that fails: it reboots without blessing the boot.\n\
             echo \"{MARK}broken booted=$(cat /run/genboot/booted 2>/dev/null)\"\n\
             sync\n\
             reboot -f\n"
        ),
    );
    let good = s.config("E2E good", &k, "");
    let bad = s.config("E2E broken", &k, "[boot]\ntries = 2\n");
    let text = std::fs::read_to_string(&bad)
        .unwrap()
        .replace("init = \"/sbin/init\"", "init = \"/sbin/init-broken\"");
    std::fs::write(&bad, text).unwrap();
    s.image(&[&good, &bad]);
    let (g1, g2) = (s.generation(1), s.generation(2));
    let entries = s.esp_ls("/loader/entries");
    assert!(
        entries.iter().any(|e| e == "genboot-2+2.conf"),
        "generation 2 should start with 2 tries (genboot-2+2.conf): {entries:?}"
    );

    // One VM across firmware reboots: the guest's `reboot -f` resets it.
    let mut vm = s.boot("fallback", true);
    let mut broken = 0;
    let booted = loop {
        let (i, seen) = vm.wait_for_any(
            &[
                &format!("{MARK}broken"),
                &format!("{MARK}booted="),
                "genboot.recovery",
            ],
            BOOT,
        );
        if i == 2 {
            vm.fail(&format!(
                "after {broken} failed boots of generation 2, systemd-boot started a recovery entry \
                 (genboot.recovery on the kernel command line) instead of generation 1: an \
                 unattended machine would sit in a shell; recovery entries must sort below the \
                 normal entries so the fallback is the previous generation"
            ));
        }
        if i == 1 {
            let line = seen.lines().rev().find(|l| l.contains(MARK)).unwrap();
            break base_name(
                line.split("booted=")
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap_or(""),
            );
        }
        if !seen
            .lines()
            .rev()
            .find(|l| l.contains(MARK))
            .unwrap()
            .contains(&g2)
        {
            vm.fail(&format!(
                "the broken init ran, but not in generation 2 ({g2})"
            ));
        }
        broken += 1;
        if broken > 2 {
            vm.fail(&format!(
                "generation 2 (tries = 2) booted {broken} times; systemd-boot should have fallen back after 2"
            ));
        }
    };
    if broken != 2 {
        vm.fail(&format!(
            "generation 2 (tries = 2) should fail twice before the fallback; it failed {broken} times"
        ));
    }
    if booted != g1 {
        vm.fail(&format!(
            "after generation 2 used up its tries, generation 1 ({g1}) should boot; {booted} came up"
        ));
    }
    vm.wait_exit(BOOT);
    drop(vm);

    let entries = s.esp_ls("/loader/entries");
    assert!(
        entries.iter().any(|e| e == "genboot-2+0-2.conf"),
        "the bad entry should be left with zero tries (genboot-2+0-2.conf): {entries:?}"
    );
    // And it stays out of the way: a fresh machine boots generation 1 again.
    let why = "the entry with zero tries must not be what boots by default";
    let (mut vm, _) = s.boot_expecting("after", 1, why);
    vm.wait_exit(BOOT);
}
