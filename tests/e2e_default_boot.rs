//! End to end under UEFI: with two generations and no key pressed,
//! systemd-boot boots the newest, and `genboot status` in stage 2 names it
//! as the booted generation.

mod common;
mod vm;

use std::time::Duration;
use vm::{Scenario, MARK};

#[test]
fn newest_generation_boots_by_default_and_status_names_it() {
    let s = Scenario::new("e2e_default_boot", Duration::from_secs(900));
    let k = common::kernel(common::CLOUD);
    s.stage2(&format!(
        "genboot status 2>&1 | sed 's/^/{MARK}status: /'\n"
    ));
    let first = s.config("E2E first", &k, "");
    let second = s.config("E2E second", &k, "");
    s.image(&[&first, &second]);
    let (g1, g2) = (s.generation(1), s.generation(2));
    assert_ne!(g1, g2, "the two configurations must make two generations");

    let mut vm = s.boot("boot", false);
    let booted = vm.expect_boot();
    if booted.generation != g2 {
        vm.fail(&format!(
            "the newest generation 2 ({g2}) should boot by default; {} came up",
            booted.generation
        ));
    }
    assert_eq!(booted.kernel, k.release);
    let status = vm.stage2_lines("status: ").join("\n");
    vm.wait_exit(vm::BOOT);
    // `genboot status` (text form: "booted generation:  N") names it.
    let booted_number = status
        .lines()
        .find_map(|l| l.strip_prefix("booted generation:"))
        .map(str::trim);
    assert_eq!(
        booted_number,
        Some("2"),
        "`genboot status` in stage 2 should name generation 2 as booted; it said:\n{status}"
    );
}
