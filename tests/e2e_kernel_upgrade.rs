//! End to end under UEFI: a kernel upgrade. Generation 1 runs Debian's cloud
//! kernel, generation 2 the generic one; each boots its own kernel, and in
//! each stage 2's stock `modprobe` (kmod) loads a module that is not in the
//! initrd from the generation's module tree.

mod common;
mod vm;

use std::time::Duration;
use vm::Scenario;

#[test]
fn both_kernels_boot_and_load_modules_in_stage_2() {
    let s = Scenario::new("e2e_kernel_upgrade", Duration::from_secs(900));
    let cloud = common::kernel(common::CLOUD);
    let generic = common::kernel(common::GENERIC);
    let old = s.config("E2E cloud kernel", &cloud, "");
    let new = s.config("E2E generic kernel", &generic, "");
    s.image(&[&old, &new]);
    let (g1, g2) = (s.generation(1), s.generation(2));

    // The upgrade: generation 2 is the default.
    let mut vm = s.boot("upgraded", false);
    let b = vm.expect_boot();
    if b.generation != g2 || b.kernel != generic.release {
        vm.fail(&format!(
            "expected generation 2 ({g2}) on {}; came up: {b:?}",
            generic.release
        ));
    }
    if b.modprobe != "ok" {
        vm.fail(&format!(
            "`modprobe loop` in stage 2 on {} did not load the module: {}",
            generic.release, b.modprobe
        ));
    }
    vm.wait_exit(vm::BOOT);
    drop(vm);

    // And back: generation 1 with the old kernel still boots.
    s.genboot(&["set-default", "1"]);
    let mut vm = s.boot("previous", false);
    let b = vm.expect_boot();
    if b.generation != g1 || b.kernel != cloud.release {
        vm.fail(&format!(
            "after `set-default 1`, expected generation 1 ({g1}) on {}; came up: {b:?}",
            cloud.release
        ));
    }
    if b.modprobe != "ok" {
        vm.fail(&format!(
            "`modprobe loop` in stage 2 on {} did not load the module: {}",
            cloud.release, b.modprobe
        ));
    }
    vm.wait_exit(vm::BOOT);
}
