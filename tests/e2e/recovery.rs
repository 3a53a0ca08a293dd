//! End to end under UEFI: the recovery entry (of a configuration with boot
//! counting, `tries = 3`) asks for root's password (the root's sulogin)
//! and then gives a shell on the serial console, with the root file system
//! mounted read-only, that answers commands; the stage-2 init does not run
//! while the shell is open.

use crate::support::{self, scenario::*};
use std::time::Duration;

#[test]
fn recovery_entry_asks_for_the_password_then_gives_a_shell_with_a_read_only_root() {
    let s = Scenario::new("e2e_recovery", BUDGET);
    let k = support::kernel(support::CLOUD);
    let cfg = s.config("E2E system", &k, "[boot]\ntimeout = 5\ntries = 3\n");
    s.image(&[&cfg]);

    let mut vm = s.boot("recovery", false);
    let titles = vm.menu();
    let Some(at) = titles.iter().position(|t| t.contains("Recovery")) else {
        vm.fail(&format!("the menu has no recovery entry: {titles:?}"));
    };
    vm.choose(at);
    vm.wait_for("Give root password", BOOT);
    vm.send(b"genboot\n");

    let mode = vm.shell_root_mode(BOOT);
    if mode != "ro" {
        vm.fail(&format!(
            "the root is mounted {mode:?} in the recovery shell; expected ro"
        ));
    }
    if vm.console().contains(&format!("{MARK}booted=")) {
        vm.fail("the stage-2 init ran on a recovery boot");
    }
    vm.send(b"poweroff -f\n");
    vm.wait_exit(Duration::from_secs(60));
}
