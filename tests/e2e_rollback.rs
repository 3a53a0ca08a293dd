//! End to end under UEFI: `genboot rollback`, run on the host against the
//! disk image, makes the previous generation the default, and the next boot
//! comes up in it.

mod common;
mod vm;

use std::time::Duration;
use vm::Scenario;

#[test]
fn rollback_on_the_image_boots_the_previous_generation() {
    let s = Scenario::new("e2e_rollback", Duration::from_secs(900));
    let k = common::kernel(common::CLOUD);
    let first = s.config("E2E first", &k, "");
    let second = s.config("E2E second", &k, "");
    s.image(&[&first, &second]);
    let g1 = s.generation(1);
    let before = s.esp_read("/loader/loader.conf");

    s.genboot(&["rollback"]);
    let after = s.esp_read("/loader/loader.conf");
    assert_ne!(
        before, after,
        "`genboot rollback` left loader.conf unchanged:\n{after}"
    );

    let mut vm = s.boot("after-rollback", false);
    let b = vm.expect_boot();
    if b.generation != g1 {
        vm.fail(&format!(
            "after `genboot rollback` generation 1 ({g1}) should boot; {} came up (loader.conf: {after:?})",
            b.generation
        ));
    }
    vm.wait_exit(vm::BOOT);
}
