//! genboot-init: wires the real machine into the activator and makes sure
//! PID 1 never exits: a panic or a returning sequence ends in a reboot.

use genboot_init::activate::{self, Outcome};
use genboot_init::sys::real::RealSys;
use genboot_init::sys::Sys;
use std::time::Duration;

fn main() {
    if std::process::id() != 1 {
        eprintln!("{}", activate::banner());
        eprintln!("genboot-init: not PID 1; this program is the /init of a genboot initrd and only runs there");
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| {
        let mut sys = RealSys::new();
        let msg = format!("genboot-init: FAILED: internal error: {info}");
        sys.console(&msg);
        sys.kmsg(3, &msg);
        sys.console("genboot-init: rebooting in 5 s");
        sys.sleep(activate::REBOOT_DELAY);
        let _ = sys.reboot();
        hang(&mut sys);
    }));
    let mut sys = RealSys::new();
    match activate::run(&mut sys) {
        Outcome::Exec(_) | Outcome::Rebooted(_) | Outcome::RebootFailed => hang(&mut sys),
    }
}

/// PID 1 must not exit (the kernel would panic): stay, and say so.
fn hang(sys: &mut RealSys) -> ! {
    loop {
        sys.console("genboot-init: cannot continue and cannot reboot; reset the machine");
        sys.sleep(Duration::from_secs(600));
    }
}
