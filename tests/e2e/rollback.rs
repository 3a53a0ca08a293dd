//! End to end under UEFI: `genboot rollback`, run on the host against the
//! disk image, makes the previous generation the default, and the next boot
//! comes up in it.

use crate::support::{self, scenario::*};

#[test]
fn rollback_on_the_image_boots_the_previous_generation() {
    let s = Scenario::new("e2e_rollback", BUDGET);
    let k = support::kernel(support::CLOUD);
    let first = s.config("E2E first", &k, "");
    let second = s.config("E2E second", &k, "");
    s.image(&[&first, &second]);
    let before = s.esp_read("/loader/loader.conf");

    s.genboot(&["rollback"]);
    let after = s.esp_read("/loader/loader.conf");
    assert_ne!(
        before, after,
        "`genboot rollback` left loader.conf unchanged:\n{after}"
    );

    let why = format!("after `genboot rollback` (loader.conf: {after:?})");
    let (mut vm, _) = s.boot_expecting("after-rollback", 1, &why);
    vm.wait_exit(BOOT);
}

/// Issue 13: with `[boot] tries = 3` every entry carries a boot counter,
/// and Debian 12's systemd-boot (252, the one `genboot image` installs
/// from this machine's systemd-boot-efi) takes the file name with its
/// counter as the entry id: `default genboot-2.conf` matched nothing, so a
/// rollback booted the newest generation again. Here `rollback`,
/// `set-oneshot` (in stage 2) and `set-default` each decide the next boot
/// with no key pressed, while systemd-boot renames the entries it counts.
#[test]
fn with_boot_counting_rollback_oneshot_and_set_default_boot_what_they_say() {
    let s = Scenario::new("e2e_rollback_counted", BUDGET);
    let k = support::kernel(support::CLOUD);
    // Which boot of the scenario this is, kept on the root file system.
    s.stage2(&format!(
        "n=$(cat /var/lib/e2e-boots 2>/dev/null || echo 0); n=$((n + 1))\n\
         echo $n > /var/lib/e2e-boots; sync\n\
         echo \"{MARK}boot-number=$n\"\n\
         if [ $n = 1 ]; then\n\
           /sbin/modprobe vfat 2>&1 | sed 's/^/{MARK}vfat: /'\n\
           mount -t vfat /dev/vda1 /boot/efi || echo \"{MARK}mount failed\"\n\
           for e in /boot/efi/loader/entries/*; do echo \"{MARK}entry: ${{e##*/}}\"; done\n\
           genboot --esp /boot/efi set-oneshot 1 2>&1 | sed 's/^/{MARK}oneshot: /'\n\
           umount /boot/efi\n\
           action=reboot\n\
         elif [ $n = 2 ]; then\n\
           action=reboot\n\
         fi\n"
    ));
    let tries = "[boot]\ntries = 3\n";
    let c1 = s.config("E2E counted one", &k, tries);
    let c2 = s.config("E2E counted two", &k, tries);
    let c3 = s.config("E2E counted three", &k, tries);
    s.image(&[&c1, &c2, &c3]);
    let entries = s.esp_ls("/loader/entries");
    for n in 1..=3 {
        assert!(
            entries.contains(&format!("genboot-{n}+3.conf")),
            "every entry should start with 3 tries: {entries:?}"
        );
    }

    s.genboot(&["rollback"]);
    let conf = s.esp_read("/loader/loader.conf");
    // One VM across the guest's reboots: its OVMF variables (the one-shot
    // entry) live as long as it does.
    let mut vm = s.boot("counted", true);
    let why = format!("after `genboot rollback` with counted entries (loader.conf: {conf:?})");
    s.expect_generation(&mut vm, 2, &why);
    let lines = vm.stage2_lines("");
    let said = lines.join("\n");
    if !lines.iter().any(|l| l == "entry: genboot-2+2-1.conf") {
        vm.fail(&format!(
            "systemd-boot should have counted the boot of generation 2 (genboot-2+2-1.conf); stage 2 said:\n{said}"
        ));
    }
    if !lines
        .iter()
        .any(|l| l.starts_with("oneshot: ") && l.contains("genboot-1+3.conf"))
    {
        vm.fail(&format!(
            "`genboot set-oneshot 1` should name the counted entry genboot-1+3.conf; stage 2 said:\n{said}"
        ));
    }
    // The one-shot boot, then the default again (the variable is used once).
    s.expect_generation(&mut vm, 1, "`genboot set-oneshot 1` in the previous boot");
    s.expect_generation(
        &mut vm,
        2,
        "the one-shot entry is used once; then loader.conf's default (generation 2, counted twice)",
    );
    vm.wait_exit(BOOT);
    drop(vm);

    // set-default 1, whose entry systemd-boot counted once (genboot-1+2-1.conf).
    s.genboot(&["set-default", "1"]);
    let entries = s.esp_ls("/loader/entries");
    assert!(
        entries.iter().any(|e| e == "genboot-1+2-1.conf"),
        "generation 1's entry should carry its counter: {entries:?}"
    );
    let conf = s.esp_read("/loader/loader.conf");
    let why = format!("after `genboot set-default 1` with a counted entry (loader.conf: {conf:?})");
    let (mut vm, _) = s.boot_expecting("set-default", 1, &why);
    vm.wait_exit(BOOT);
}
