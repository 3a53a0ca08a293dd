//! The boot sequence: from the kernel's hand-over to the exec of the
//! generation's stage-2 init. Every effect goes through [`Sys`]; each step is
//! timed (microseconds since kernel start) and logged to the console and the
//! kernel log. On failure: the step, the error and the likely fix, then a
//! shell if `genboot.shell_on_fail` and the root has one, else a reboot so
//! the boot loader's boot counting falls back to the previous generation.
//!
//! [`activate`] is the sequence; the steps live by group:
//! - `api`: the API file systems (`mount-api`, `move-api`) and emptying
//!   the initramfs (`free-initramfs`);
//! - `modules`: the initrd manifest and its modules (`manifest`, `modules`,
//!   `modalias`);
//! - `root`: the root device (`wait-root`, `mount-root`);
//! - `generation`: the generation `init=` names (`generation`, `verify`);
//! - `tree`: a generation's whole-system tree as the root (`mount-tree`,
//!   `mount-etc`, `bind-var`), only for a generation with a tree;
//! - `switch`: the hand-over (`bind-modules`, `record`, `switch-root`,
//!   `exec`, and the `debug` stop).
//!
//! This file holds the sequence, the step names, the logging and timing, and
//! the failure policy.

mod api;
mod generation;
mod modules;
mod root;
mod switch;
mod tree;

use crate::inroot::{resolve_in_root, Follow};
use crate::sys::{Kind, Sys};
use genboot_format::cmdline::{BootArgs, Cmdline};
use std::io;
use std::time::Duration;

/// Where the root file system is mounted before the switch.
pub const SYSROOT: &str = "/sysroot";
/// How long the failure policy waits before rebooting.
pub const REBOOT_DELAY: Duration = Duration::from_secs(5);
const KMSG_ERR: u8 = 3;
const KMSG_INFO: u8 = 6;
const KMSG_DEBUG: u8 = 7;

/// The steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    MountApi,
    Cmdline,
    Manifest,
    Modules,
    Modalias,
    WaitRoot,
    MountRoot,
    Generation,
    Verify,
    MountTree,
    MountEtc,
    BindVar,
    BindModules,
    Record,
    Debug,
    MoveApi,
    FreeInitramfs,
    SwitchRoot,
    Recovery,
    Exec,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::MountApi => "mount-api",
            Step::Cmdline => "cmdline",
            Step::Manifest => "manifest",
            Step::Modules => "modules",
            Step::Modalias => "modalias",
            Step::WaitRoot => "wait-root",
            Step::MountRoot => "mount-root",
            Step::Generation => "generation",
            Step::Verify => "verify",
            Step::MountTree => "mount-tree",
            Step::MountEtc => "mount-etc",
            Step::BindVar => "bind-var",
            Step::BindModules => "bind-modules",
            Step::Record => "record",
            Step::Debug => "debug",
            Step::MoveApi => "move-api",
            Step::FreeInitramfs => "free-initramfs",
            Step::SwitchRoot => "switch-root",
            Step::Recovery => "recovery",
            Step::Exec => "exec",
        }
    }
}

/// A failed step: what failed and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub step: Step,
    pub what: String,
    pub hint: String,
}

fn fail<T>(step: Step, what: impl Into<String>, hint: impl Into<String>) -> Result<T, Failure> {
    Err(Failure {
        step,
        what: what.into(),
        hint: hint.into(),
    })
}

/// How [`run`] ended. With the real machine it does not return after an
/// exec or a reboot; the fake returns here instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exec'd the stage-2 init.
    Exec(String),
    /// The failure policy rebooted.
    Rebooted(Step),
    /// `reboot` itself failed; the caller must stay alive.
    RebootFailed,
}

/// The boot in progress: the machine, the steps done so far with their
/// times, and what the failure policy needs to know.
struct Boot<'a, S: Sys> {
    sys: &'a mut S,
    steps: Vec<(&'static str, u64)>,
    /// Whether a shell may be started on failure (known as soon as the
    /// command line is read, even when it is not valid).
    shell_on_fail: bool,
    /// Where the root is: `None` before it is mounted.
    root_at: Option<&'static str>,
    /// Each manifest module's load: name, start and end (µs since kernel
    /// start), loaded or not; in manifest order.
    module_times: Vec<(String, u64, u64, bool)>,
}

fn secs(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

fn errno_text(e: &io::Error) -> String {
    // std's text is "No such file or directory (os error 2)"; keep it.
    e.to_string()
}

impl<'a, S: Sys> Boot<'a, S> {
    fn new(sys: &'a mut S) -> Self {
        Boot {
            sys,
            steps: Vec::new(),
            shell_on_fail: false,
            root_at: None,
            module_times: Vec::new(),
        }
    }

    /// A line on the console, and in the kernel log at debug level: the
    /// kernel would otherwise print it on the console a second time.
    fn say(&mut self, msg: &str) {
        self.say_at(KMSG_DEBUG, msg);
    }

    /// Errors go to the kernel log as errors (shown on the console twice).
    fn say_error(&mut self, msg: &str) {
        self.say_at(KMSG_ERR, msg);
    }

    fn say_at(&mut self, level: u8, msg: &str) {
        let line = format!("genboot-init: {msg}");
        self.sys.console(&line);
        self.sys.kmsg(level, &line);
    }

    fn done(&mut self, step: Step, detail: &str) {
        let t = self.sys.now_us();
        self.steps.push((step.name(), t));
        let msg = format!("[{:>11}] {}: {detail}", secs(t), step.name());
        self.say(&msg);
    }

    fn timings_json(&self) -> String {
        let mut s = String::from(
            "{\n  \"clock\": \"CLOCK_BOOTTIME\",\n  \"unit\": \"us\",\n  \"steps\": [",
        );
        for (i, (name, us)) in self.steps.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!("\n    {{\"step\": \"{name}\", \"us\": {us}}}"));
        }
        s.push_str("\n  ],\n  \"modules\": [");
        for (i, (name, start, end, ok)) in self.module_times.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                "\n    {{\"module\": \"{name}\", \"start_us\": {start}, \"end_us\": {end}, \"loaded\": {ok}}}"
            ));
        }
        s.push_str("\n  ]\n}\n");
        s
    }

    /// `path` on the root file system (mounted at [`SYSROOT`]), resolved
    /// inside it.
    fn on_root(&mut self, path: &str, follow: Follow) -> io::Result<String> {
        resolve_in_root(self.sys, SYSROOT, path, follow)
    }

    fn cmdline(&mut self) -> Result<BootArgs, Failure> {
        let text = match self.sys.read_file("/proc/cmdline") {
            Ok(t) => String::from_utf8_lossy(&t).into_owned(),
            Err(e) => {
                return fail(
                    Step::Cmdline,
                    format!("cannot read /proc/cmdline: {}", errno_text(&e)),
                    "/proc must be mounted; see the mount-api step",
                )
            }
        };
        let c = Cmdline::parse(&text);
        self.shell_on_fail = c.flag("genboot.shell_on_fail");
        let args = match BootArgs::from_cmdline(&c) {
            Ok(a) => a,
            Err(e) => {
                return fail(
                    Step::Cmdline,
                    e,
                    "fix the kernel command line in the boot entry (press 'e' in systemd-boot's menu to edit it once)",
                )
            }
        };
        let detail = format!(
            "root={} {}{}{}{}{}",
            args.root,
            if args.read_only { "ro" } else { "rw" },
            if args.recovery { " recovery" } else { "" },
            if args.debug { " debug" } else { "" },
            if args.verify { " verify" } else { "" },
            if args.shell_on_fail {
                " shell_on_fail"
            } else {
                ""
            },
        );
        self.done(Step::Cmdline, &detail);
        Ok(args)
    }

    // ---- failure policy ----

    /// The root whose `/bin/sh` can be started, if any. The shell is looked
    /// for inside the root (Debian: `/bin -> usr/bin`, `sh -> dash`), as
    /// `run_shell` will find it after its chroot.
    fn shell_reachable(&mut self) -> Option<&'static str> {
        let root = self.root_at?;
        let sh = resolve_in_root(self.sys, root, "/bin/sh", Follow::All).ok()?;
        match self.sys.stat(&sh) {
            Ok(m) if m.kind == Kind::File => Some(root),
            _ => None,
        }
    }

    fn reboot(&mut self, step: Step) -> Outcome {
        let msg = format!(
            "rebooting in {} s (the boot loader falls back to the previous generation when this one keeps failing)",
            REBOOT_DELAY.as_secs()
        );
        self.say(&msg);
        self.sys.sleep(REBOOT_DELAY);
        match self.sys.reboot() {
            Ok(()) => Outcome::Rebooted(step),
            Err(e) => {
                let msg = format!("reboot failed: {}; reset the machine", errno_text(&e));
                self.say(&msg);
                Outcome::RebootFailed
            }
        }
    }

    fn on_failure(&mut self, f: Failure) -> Outcome {
        let t = self.sys.now_us();
        let msg = format!(
            "[{:>11}] FAILED at step {}: {}",
            secs(t),
            f.step.name(),
            f.what
        );
        self.say_error(&msg);
        let msg = format!("hint: {}", f.hint);
        self.say_error(&msg);
        if self.shell_on_fail {
            match self.shell_reachable() {
                Some(root) => {
                    let msg = format!("genboot.shell_on_fail: starting /bin/sh (root {root}); exit it to reboot");
                    self.say(&msg);
                    if let Err(e) = self.sys.run_shell(root, "/bin/sh") {
                        let msg = format!("cannot start /bin/sh: {}", errno_text(&e));
                        self.say(&msg);
                    }
                }
                None => self.say("genboot.shell_on_fail: no shell is reachable (the root is not mounted or has no /bin/sh)"),
            }
        }
        self.reboot(f.step)
    }
}

/// A path below [`SYSROOT`] as the root file system sees it.
fn in_root_text(path: &str) -> String {
    match path.strip_prefix(SYSROOT) {
        Some("") => "/".to_string(),
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ => path.to_string(),
    }
}

/// The first line genboot-init prints.
pub fn banner() -> String {
    format!(
        "genboot-init {} (PID 1): activating a genboot generation",
        env!("CARGO_PKG_VERSION")
    )
}

/// Run the whole boot sequence on `sys`. With the real machine this returns
/// only if even `reboot` failed; the caller then keeps PID 1 alive.
pub fn run<S: Sys>(sys: &mut S) -> Outcome {
    let b = banner();
    sys.console(&b);
    let mut boot = Boot::new(sys);
    match activate(&mut boot) {
        Ok(o) => o,
        Err(f) => boot.on_failure(f),
    }
}

/// The boot sequence, step by step; the first failure ends it (and [`run`]
/// applies the failure policy).
fn activate<S: Sys>(b: &mut Boot<'_, S>) -> Result<Outcome, Failure> {
    // The initramfs: API file systems, the command line, the manifest.
    b.mount_api()?;
    let args = b.cmdline()?;
    let m = b.manifest()?;
    // Modules: the listed ones, then those devices ask for. `settled`:
    // the modules no device alias may pick again (loaded, or failed in a
    // way no new device can change).
    let (mut settled, mut failed) = (Vec::new(), Vec::new());
    b.modules(&m, &mut settled, &mut failed);
    b.modalias(&m, &mut settled, &failed);
    // The root file system.
    let (dev, fs) = b.wait_root(&args, &m, &mut settled, &failed)?;
    b.mount_root(&args, &dev, fs.as_ref())?;
    // The generation on it.
    let mut g = b.generation(&args)?;
    if args.verify {
        b.verify(&g)?;
    }
    // Its tree, when it has one, becomes the root (a generation without
    // one skips these steps).
    if g.tree.is_some() {
        b.mount_tree(&g)?;
        b.mount_etc(&args, &g)?;
        b.bind_var(&args, &mut g)?;
    }
    // The hand-over to stage 2.
    let binds = b.bind_modules(&args, &g)?;
    b.record(&g, &binds)?;
    let sulogin = if args.recovery {
        b.find_sulogin()
    } else {
        None
    };
    if args.debug {
        return Ok(b.debug_stop());
    }
    b.move_api()?;
    b.free_initramfs();
    b.switch_root()?;
    if args.recovery {
        b.recovery(&g, sulogin);
    }
    b.exec(&args, &g)
}

#[cfg(test)]
mod tests;
