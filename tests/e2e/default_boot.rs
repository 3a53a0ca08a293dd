//! End to end under UEFI: with two generations and no key pressed,
//! systemd-boot boots the newest, and `genboot status` in stage 2 names it
//! as the booted generation.

use crate::support::{self, scenario::*};

#[test]
fn newest_generation_boots_by_default_and_status_names_it() {
    let s = Scenario::new("e2e_default_boot", BUDGET);
    let k = support::kernel(support::CLOUD);
    s.stage2(&format!(
        "genboot status 2>&1 | sed 's/^/{MARK}status: /'\n"
    ));
    let first = s.config("E2E first", &k, "");
    let second = s.config("E2E second", &k, "");
    s.image(&[&first, &second]);
    assert_ne!(
        s.generation(1),
        s.generation(2),
        "two configurations, two generations"
    );

    let (mut vm, booted) = s.boot_expecting("boot", 2, "without a key press the newest");
    assert_eq!(booted.kernel, k.release);
    let status = vm.stage2_lines("status: ").join("\n");
    vm.wait_exit(BOOT);
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
