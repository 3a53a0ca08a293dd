//! End to end under UEFI: a kernel upgrade. Generation 1 runs Debian's cloud
//! kernel, generation 2 the generic one; each boots its own kernel, and in
//! each stage 2's stock `modprobe` (kmod) loads a module that is not in the
//! initrd from the generation's module tree.

use crate::support::{self, scenario::*};

#[test]
fn both_kernels_boot_and_load_modules_in_stage_2() {
    let s = Scenario::new("e2e_kernel_upgrade", BUDGET);
    let cloud = support::kernel(support::CLOUD);
    let generic = support::kernel(support::GENERIC);
    let old = s.config("E2E cloud kernel", &cloud, "");
    let new = s.config("E2E generic kernel", &generic, "");
    s.image(&[&old, &new]);

    // The upgrade: generation 2 is the default; then back: `set-default 1`.
    for (vm_name, n, k) in [("upgraded", 2, &generic), ("previous", 1, &cloud)] {
        if n == 1 {
            s.genboot(&["set-default", "1"]);
        }
        let (mut vm, b) = s.boot_expecting(vm_name, n, &format!("on {}", k.release));
        if b.kernel != k.release || b.modprobe != "ok" {
            vm.fail(&format!(
                "generation {n} should run {} and load `loop` with modprobe in stage 2; came up: {b:?}",
                k.release
            ));
        }
        vm.wait_exit(BOOT);
    }
}
