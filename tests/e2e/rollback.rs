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
