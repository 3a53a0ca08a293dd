//! The boot sequence: from the kernel's hand-over to the exec of the
//! generation's stage-2 init. Every effect goes through [`Sys`]; each step is
//! timed (microseconds since kernel start) and logged to the console and the
//! kernel log. On failure: the step, the error and the likely fix, then a
//! shell if `genboot.shell_on_fail` and the root has one, else a reboot so
//! the boot loader's boot counting falls back to the previous generation.

use crate::inroot::{resolve_in_root, Follow};
use crate::json;
use crate::probe::{self, FsInfo};
use crate::sys::flags::*;
use crate::sys::{Kind, Sys};
use genboot_format::cmdline::{BootArgs, Cmdline, RootSpec};
use genboot_format::manifest::{self, Manifest};
use genboot_format::module_name::{self, ModName, ModuleCompression};
use genboot_format::store_name::{StoreHash, StoreName};
use genboot_format::GENERATION_NAME_PREFIX;
pub use genboot_format::{BOOTED, GENERATION_FORMAT, STORE_DIR, TIMINGS};
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
    BindModules,
    Record,
    Debug,
    MoveApi,
    FreeInitramfs,
    SwitchRoot,
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
            Step::BindModules => "bind-modules",
            Step::Record => "record",
            Step::Debug => "debug",
            Step::MoveApi => "move-api",
            Step::FreeInitramfs => "free-initramfs",
            Step::SwitchRoot => "switch-root",
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
    /// Exec'd the stage-2 init (or, in recovery, the shell).
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
    // Modules: the listed ones, then those devices ask for.
    let (mut loaded, mut failed) = (Vec::new(), Vec::new());
    b.modules(&m, &mut loaded, &mut failed);
    b.modalias(&m, &mut loaded);
    // The root file system.
    let (dev, fs) = b.wait_root(&args, &m, &mut loaded, &failed)?;
    b.mount_root(&args, &dev, fs.as_ref())?;
    // The generation on it.
    let g = b.generation(&args)?;
    if args.verify {
        b.verify(&g)?;
    }
    // The hand-over to stage 2.
    b.bind_modules(&args, &g)?;
    b.record(&g)?;
    if args.debug {
        return Ok(b.debug_stop());
    }
    b.move_api()?;
    b.free_initramfs();
    b.switch_root()?;
    b.exec(&args, &g)
}

impl<S: Sys> Boot<'_, S> {
    fn mount_api(&mut self) -> Result<(), Failure> {
        let mounts: [(&str, &str, u64, &str); 4] = [
            ("proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, ""),
            ("sysfs", "/sys", MS_NOSUID | MS_NODEV | MS_NOEXEC, ""),
            ("devtmpfs", "/dev", MS_NOSUID, "mode=0755"),
            ("tmpfs", "/run", MS_NOSUID | MS_NODEV, "mode=0755"),
        ];
        for (fstype, target, flags, data) in mounts {
            match self.sys.mkdir(target, 0o755) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => {
                    return fail(
                        Step::MountApi,
                        format!("cannot create {target}: {}", errno_text(&e)),
                        "the initramfs must be writable; was the initrd unpacked?",
                    )
                }
            }
            match self.sys.mount(fstype, target, fstype, flags, data) {
                Ok(()) => {}
                // The kernel may have mounted devtmpfs itself.
                Err(e) if fstype == "devtmpfs" && e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => {
                    return fail(
                        Step::MountApi,
                        format!("cannot mount {fstype} on {target}: {}", errno_text(&e)),
                        format!(
                            "the kernel needs {fstype} support (CONFIG_{})",
                            fstype.to_uppercase()
                        ),
                    )
                }
            }
            if target == "/dev" {
                // The kernel log is writable from here on: the banner again.
                let banner = banner();
                self.sys.kmsg(KMSG_INFO, &banner);
            }
        }
        self.done(Step::MountApi, "/proc /sys /dev /run");
        Ok(())
    }

    fn move_api(&mut self) -> Result<(), Failure> {
        for d in ["/dev", "/proc", "/sys", "/run"] {
            let target = match self.on_root(d, Follow::All) {
                Ok(t) => t,
                Err(e) => {
                    return fail(
                        Step::MoveApi,
                        format!("{d} on the root cannot be resolved: {}", errno_text(&e)),
                        "make /dev /proc /sys /run plain directories on the root file system",
                    )
                }
            };
            if self.sys.stat(&target).is_err() {
                if let Err(e) = self.sys.mkdir(&target, 0o755) {
                    return fail(
                        Step::MoveApi,
                        format!(
                            "{d} is missing on the root and cannot be created: {}",
                            errno_text(&e)
                        ),
                        "create /dev /proc /sys /run on the root file system",
                    );
                }
            }
            if let Err(e) = self.sys.mount(d, &target, "", MS_MOVE, "") {
                return fail(
                    Step::MoveApi,
                    format!("cannot move {d} to {target}: {}", errno_text(&e)),
                    "the kernel refused to move the mount; boot with genboot.debug to see the mount table",
                );
            }
        }
        self.done(Step::MoveApi, "/dev /proc /sys /run");
        Ok(())
    }

    /// Delete the initramfs's files (not crossing mounts) so its memory is
    /// freed: after the switch nothing can reach them.
    fn free_initramfs(&mut self) {
        let root_dev = self.sys.lstat("/").map(|m| m.dev);
        let in_initramfs = self.sys.lstat(manifest::PATH).map(|m| m.dev);
        let (Ok(dev), Ok(mdev)) = (root_dev, in_initramfs) else {
            self.done(Step::FreeInitramfs, "skipped: / is not a genboot initramfs");
            return;
        };
        if dev != mdev {
            self.done(Step::FreeInitramfs, "skipped: / is not a genboot initramfs");
            return;
        }
        let mut count = 0usize;
        remove_below(self.sys, "", dev, &mut count);
        let detail = format!("{count} entries removed");
        self.done(Step::FreeInitramfs, &detail);
    }
}

/// Remove everything below `dir` (`""` is `/`) on device `dev`.
fn remove_below<S: Sys>(sys: &mut S, dir: &str, dev: u64, count: &mut usize) {
    let Ok(entries) = sys.read_dir(if dir.is_empty() { "/" } else { dir }) else {
        return;
    };
    for (name, _) in entries {
        let path = format!("{dir}/{name}");
        let Ok(m) = sys.lstat(&path) else { continue };
        if m.dev != dev {
            continue; // a mount point: not ours to empty
        }
        if m.kind == Kind::Dir {
            remove_below(sys, &path, dev, count);
            if sys.rmdir(&path).is_ok() {
                *count += 1;
            }
        } else if sys.unlink(&path).is_ok() {
            *count += 1;
        }
    }
}

impl<S: Sys> Boot<'_, S> {
    fn manifest(&mut self) -> Result<Manifest, Failure> {
        let text = match self.sys.read_file(manifest::PATH) {
            Ok(t) => String::from_utf8_lossy(&t).into_owned(),
            Err(e) => {
                return fail(
                    Step::Manifest,
                    format!("cannot read {}: {}", manifest::PATH, errno_text(&e)),
                    "this initrd was not written by genboot; rebuild it with `genboot build`",
                )
            }
        };
        let m = match Manifest::parse(&text) {
            Ok(m) => m,
            Err(e) => {
                return fail(
                    Step::Manifest,
                    format!("{}: {e}", manifest::PATH),
                    "the initrd is damaged or from another genboot version; rebuild it with `genboot build`",
                )
            }
        };
        let running = self.sys.kernel_release().unwrap_or_default();
        if m.kernel_release != running {
            return fail(
                Step::Manifest,
                format!(
                    "the initrd is for kernel {} but kernel {running} is running",
                    m.kernel_release
                ),
                "the boot entry pairs the wrong kernel and initrd; pick another entry or run `genboot install`",
            );
        }
        let detail = format!(
            "kernel {}, {} modules, {} aliases",
            m.kernel_release,
            m.modules.len(),
            m.aliases.len()
        );
        self.done(Step::Manifest, &detail);
        Ok(m)
    }

    /// Load one module; `Ok` when it is in the kernel now (an `EEXIST`:
    /// built in, or loaded already).
    fn load(&mut self, path: &str) -> Result<(), io::Error> {
        match self
            .sys
            .load_module(path, ModuleCompression::is_compressed(path))
        {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn modules(&mut self, m: &Manifest, loaded: &mut Vec<ModName>, failed: &mut Vec<String>) {
        for (name, path) in &m.modules {
            match self.load(path) {
                Ok(()) => loaded.push(ModName::new(name)),
                Err(e) => {
                    let msg = format!(
                        "warning: module {name} ({path}) did not load: {}{}",
                        errno_text(&e),
                        load_hint(path, &e)
                    );
                    self.say(&msg);
                    failed.push(name.clone());
                }
            }
        }
        let detail = format!("{} of {} loaded", loaded.len(), m.modules.len());
        self.done(Step::Modules, &detail);
    }

    /// One pass over `/sys/devices/**/modalias`; returns the modules loaded.
    fn modalias_pass(&mut self, m: &Manifest, loaded: &mut Vec<ModName>) -> Vec<ModName> {
        // Walking sysfs costs time (a quarter second under emulation): skip
        // it when every module the alias table could pick is loaded.
        let pending = m.aliases.iter().any(|(_, module)| {
            let module = ModName::new(module);
            !loaded.contains(&module) && m.modules.iter().any(|(n, _)| ModName::new(n) == module)
        });
        if !pending {
            return Vec::new();
        }
        let mut aliases = Vec::new();
        walk_modalias(self.sys, "/sys/devices", 0, &mut aliases);
        let mut new = Vec::new();
        for a in &aliases {
            for module in module_name::modules_for(&m.aliases, a) {
                let module = ModName::new(module);
                if loaded.contains(&module) {
                    continue;
                }
                let Some((_, path)) = m.modules.iter().find(|(n, _)| ModName::new(n) == module)
                else {
                    continue;
                };
                let path = path.clone();
                loaded.push(module.clone());
                match self.load(&path) {
                    Ok(()) => new.push(module),
                    Err(e) => {
                        let msg = format!(
                            "warning: module {module} for {a} did not load: {}",
                            errno_text(&e)
                        );
                        self.say(&msg);
                    }
                }
            }
        }
        new
    }

    fn modalias(&mut self, m: &Manifest, loaded: &mut Vec<ModName>) {
        let mut all = Vec::new();
        // Loading a bus driver makes new devices appear: repeat a few times.
        for _ in 0..4 {
            let new = self.modalias_pass(m, loaded);
            if new.is_empty() {
                break;
            }
            all.extend(new);
        }
        let detail = if all.is_empty() {
            "nothing new".to_string()
        } else {
            let names: Vec<&str> = all.iter().map(ModName::as_str).collect();
            format!("loaded {}", names.join(" "))
        };
        self.done(Step::Modalias, &detail);
    }
}

/// What a failed module load most likely means.
fn load_hint(path: &str, e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOEXEC) if ModuleCompression::is_compressed(path) => {
            " (this kernel cannot load compressed modules, CONFIG_MODULE_DECOMPRESS is off: the initrd must hold them uncompressed)"
        }
        Some(libc::ENOEXEC) => " (not a module for this kernel: vermagic or format mismatch)",
        Some(libc::ENODEV) => " (no such hardware or CPU feature here; harmless if it is optional)",
        Some(libc::EKEYREJECTED) | Some(libc::EBADMSG) => " (signature rejected: module signing enforcement)",
        _ => "",
    }
}

fn walk_modalias<S: Sys>(sys: &mut S, dir: &str, depth: u32, out: &mut Vec<String>) {
    if depth > 32 {
        return;
    }
    let Ok(entries) = sys.read_dir(dir) else {
        return;
    };
    for (name, kind) in entries {
        let path = format!("{dir}/{name}");
        match kind {
            Kind::Dir => walk_modalias(sys, &path, depth + 1, out),
            Kind::File if name == "modalias" => {
                if let Ok(b) = sys.read_file(&path) {
                    let a = String::from_utf8_lossy(&b).trim().to_string();
                    if !a.is_empty() && !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
            _ => {}
        }
    }
}

/// How often the root device is looked for.
const POLL: Duration = Duration::from_millis(50);

impl<S: Sys> Boot<'_, S> {
    fn wait_root(
        &mut self,
        args: &BootArgs,
        m: &Manifest,
        loaded: &mut Vec<ModName>,
        failed: &[String],
    ) -> Result<(String, Option<FsInfo>), Failure> {
        let spec = args.root.clone();
        let timeout = args.timeout;
        let start = self.sys.now_us();
        let timeout_us = u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX);
        let mut next_note = start.saturating_add(5_000_000);
        let mut round = 0u32;
        let mut notes: Vec<String> = Vec::new();
        let mut said = 0usize;
        loop {
            let found = find_root(self.sys, &spec, &mut notes);
            // Each odd thing a disk says is said once.
            while let Some(note) = notes.get(said).cloned() {
                self.say(&format!("warning: {note}"));
                said += 1;
            }
            if let Some(found) = found {
                let detail = format!("{spec} is {}", found.0);
                self.done(Step::WaitRoot, &detail);
                return Ok(found);
            }
            let now = self.sys.now_us();
            if now.saturating_sub(start) >= timeout_us {
                break;
            }
            if now >= next_note {
                let msg = format!("waiting for root device {spec} ...");
                self.say(&msg);
                next_note = now.saturating_add(5_000_000);
            }
            round = round.wrapping_add(1);
            if round.is_multiple_of(10) {
                self.modalias_pass(m, loaded);
            }
            self.sys.sleep(POLL);
        }
        let seen = block_devices(self.sys);
        let mut hint = format!(
            "block devices seen: {}. Check root= in the boot entry (`blkid` on the running system shows PARTUUID/UUID/LABEL), and that the disk's driver is in the initrd (initrd.modules in system.toml)",
            if seen.is_empty() { "none".to_string() } else { seen.join(" ") }
        );
        if !failed.is_empty() {
            hint.push_str(&format!(
                "; modules that failed to load: {}",
                failed.join(" ")
            ));
        }
        if !notes.is_empty() {
            hint.push_str(&format!("; skipped: {}", notes.join("; ")));
        }
        fail(
            Step::WaitRoot,
            format!(
                "root device {spec} did not appear within {} s (genboot.timeout)",
                timeout.as_secs()
            ),
            hint,
        )
    }

    fn mount_root(
        &mut self,
        args: &BootArgs,
        dev: &str,
        fs: Option<&FsInfo>,
    ) -> Result<(), Failure> {
        let mut types = args.fstypes.clone();
        if types.is_empty() {
            match fs {
                Some(f) => types.push(f.fstype.to_string()),
                None => {
                    return fail(
                        Step::MountRoot,
                        format!("no file system recognised on {dev} and no rootfstype= given"),
                        "add rootfstype=<type> to the kernel command line",
                    )
                }
            }
        }
        match self.sys.mkdir(SYSROOT, 0o755) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => {
                return fail(
                    Step::MountRoot,
                    format!("cannot create {SYSROOT}: {}", errno_text(&e)),
                    "the initramfs must be writable",
                )
            }
        }
        let flags = if args.read_only { MS_RDONLY } else { 0 };
        let mut errors = Vec::new();
        for t in &types {
            match self.sys.mount(dev, SYSROOT, t, flags, &args.rootflags) {
                Ok(()) => {
                    self.root_at = Some(SYSROOT);
                    let detail = format!(
                        "{dev} ({t}, {}{}) on {SYSROOT}",
                        if args.read_only { "ro" } else { "rw" },
                        if args.rootflags.is_empty() {
                            String::new()
                        } else {
                            format!(",{}", args.rootflags)
                        }
                    );
                    self.done(Step::MountRoot, &detail);
                    return Ok(());
                }
                Err(e) => errors.push(format!("{t}: {}", errno_text(&e))),
            }
        }
        fail(
            Step::MountRoot,
            format!("cannot mount {dev} on {SYSROOT}: {}", errors.join("; ")),
            "check rootfstype= and rootflags=; the file-system driver must be built in or in the initrd (initrd.modules), and the file system may need fsck",
        )
    }
}

fn read_trim<S: Sys>(sys: &mut S, path: &str) -> Option<String> {
    sys.read_file(path)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
}

/// Names in `/sys/class/block`, sorted.
fn block_devices<S: Sys>(sys: &mut S) -> Vec<String> {
    let mut names: Vec<String> = sys
        .read_dir("/sys/class/block")
        .map(|v| v.into_iter().map(|(n, _)| n).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Logical block sizes a disk may report (`queue/logical_block_size`).
const SECTOR_SIZES: [u64; 8] = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];

/// The partition's PARTUUID, read from its disk's GPT. `Ok(None)`: not a
/// partition, no GPT, an unused entry; `Err`: the disk says something
/// impossible (a note for the console, naming the disk).
fn partuuid_of<S: Sys>(sys: &mut S, name: &str) -> Result<Option<String>, String> {
    let Some(n) = read_trim(sys, &format!("/sys/class/block/{name}/partition"))
        .and_then(|t| t.parse::<u64>().ok())
    else {
        return Ok(None);
    };
    let Ok(link) = sys.read_link(&format!("/sys/class/block/{name}")) else {
        return Ok(None);
    };
    let mut parts = link.trim_end_matches('/').rsplit('/');
    parts.next();
    let Some(disk) = parts.next().map(str::to_string) else {
        return Ok(None);
    };
    let ss = match read_trim(
        sys,
        &format!("/sys/class/block/{disk}/queue/logical_block_size"),
    ) {
        None => 512,
        Some(t) => match t.parse::<u64>() {
            Ok(v) if SECTOR_SIZES.contains(&v) => v,
            _ => {
                return Err(format!(
                    "{disk}: logical block size {t:?} is not a power of two from 512 to 65536; its GPT is not read"
                ))
            }
        },
    };
    let dev = format!("/dev/{}", disk.replace('!', "/"));
    let Some(h) = sys
        .read_at(&dev, ss, ss as usize)
        .ok()
        .and_then(|b| probe::gpt_header(&b))
    else {
        return Ok(None);
    };
    if n == 0 || n > u64::from(h.entries) {
        return Ok(None);
    }
    let Some(off) = h.entry_offset(n, ss) else {
        return Err(format!(
            "{disk}: the GPT header puts partition entry {n} past any disk (entries at LBA {}, {} bytes each); the GPT is damaged",
            h.entries_lba, h.entry_size
        ));
    };
    Ok(sys
        .read_at(&dev, off, 128)
        .ok()
        .and_then(|e| probe::gpt_entry_partuuid(&e)))
}

/// Look once for the root device: its `/dev` path and what its superblock
/// says. Disks that say something impossible are skipped with a note.
fn find_root<S: Sys>(
    sys: &mut S,
    spec: &RootSpec,
    notes: &mut Vec<String>,
) -> Option<(String, Option<FsInfo>)> {
    let probe_dev = |sys: &mut S, dev: &str| {
        sys.read_at(dev, 0, probe::PROBE_LEN)
            .ok()
            .and_then(|b| probe::probe_fs(&b))
    };
    if let RootSpec::Path(p) = spec {
        sys.stat(p).ok()?;
        let fs = probe_dev(sys, p);
        return Some((p.clone(), fs));
    }
    for name in block_devices(sys) {
        let dev = format!("/dev/{}", name.replace('!', "/"));
        if sys.stat(&dev).is_err() {
            continue;
        }
        let hit = match spec {
            RootSpec::PartUuid(u) => match partuuid_of(sys, &name) {
                Ok(p) => p.is_some_and(|p| p.eq_ignore_ascii_case(u)),
                Err(note) => {
                    if !notes.contains(&note) {
                        notes.push(note);
                    }
                    false
                }
            },
            RootSpec::Uuid(u) => {
                probe_dev(sys, &dev).is_some_and(|f| f.uuid.eq_ignore_ascii_case(u))
            }
            RootSpec::Label(l) => probe_dev(sys, &dev).is_some_and(|f| &f.label == l),
            RootSpec::Path(_) => false,
        };
        if hit {
            let fs = probe_dev(sys, &dev);
            return Some((dev, fs));
        }
    }
    None
}

/// A store object on the root.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Object {
    hash: StoreHash,
    name: String,
    /// Where it is now: below [`SYSROOT`], every link resolved inside the root.
    dir: String,
}

impl Object {
    /// Its store path as stage 2 sees it.
    fn store_path(&self) -> String {
        format!("{STORE_DIR}/{}-{}", self.hash, self.name)
    }
}

/// A generation found on the root.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Generation {
    /// `/var/lib/genboot/store/<hash>-<name>`, as stage 2 sees it.
    path: String,
    object: Object,
    /// The kernel-modules object, when linked.
    kernel_modules: Option<Object>,
}

/// What `init=` names: a generation's `init` in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InitPath<'a> {
    /// The generation, `<STORE_DIR>/<hash>-genboot-system-<kernel>`.
    generation: &'a str,
    object: StoreName<'a>,
}

/// Read `init=` as a generation's init,
/// `<STORE_DIR>/<hash>-genboot-system-<kernel>/init`; else why it is not one.
fn parse_init_path(init: &str) -> Result<InitPath<'_>, String> {
    let Some(generation) = init.strip_suffix("/init") else {
        return Err("it does not end in /init".into());
    };
    let Some(base) = generation
        .strip_prefix(STORE_DIR)
        .and_then(|b| b.strip_prefix('/'))
    else {
        return Err(format!("it is not in {STORE_DIR}"));
    };
    let Some(object) = StoreName::parse(base) else {
        return Err("the directory is not named <32 hex digits>-<name>".into());
    };
    if base.contains('/') || !object.name.starts_with(GENERATION_NAME_PREFIX) {
        return Err("the store object is not a genboot-system generation".into());
    }
    Ok(InitPath { generation, object })
}

/// The kernel release `boot.json` (`text`, of generation `gen`) names,
/// after checking that it is a generation of [`GENERATION_FORMAT`].
fn boot_json_release(gen: &str, text: &str) -> Result<String, Failure> {
    let v = match json::parse(text) {
        Ok(v) => v,
        Err(e) => {
            return fail(
                Step::Generation,
                format!("{gen}/boot.json is not JSON: {e}"),
                "the generation is damaged; run `genboot verify` from another generation",
            )
        }
    };
    let g = v.get("org.genboot.v1");
    let Some(release) = g
        .and_then(|g| g.get("kernelRelease"))
        .and_then(json::Value::as_str)
    else {
        return fail(
            Step::Generation,
            format!("{gen}/boot.json has no org.genboot.v1.kernelRelease"),
            "the generation was not made by genboot or is damaged",
        );
    };
    let format = match g.and_then(|g| g.get("format")) {
        Some(json::Value::Number(n)) => n.parse::<u64>().ok(),
        _ => None,
    };
    match format {
        Some(n) if n == u64::from(GENERATION_FORMAT) => Ok(release.to_string()),
        Some(n) if n > u64::from(GENERATION_FORMAT) => fail(
            Step::Generation,
            format!("{gen} has generation format {n}; this genboot-init reads format {GENERATION_FORMAT}"),
            "the generation was built by a newer genboot: boot an entry whose initrd comes from that genboot, or rebuild the initrd",
        ),
        _ => fail(
            Step::Generation,
            format!("{gen}/boot.json has no valid org.genboot.v1.format"),
            "the generation was not made by genboot or is damaged",
        ),
    }
}

impl<S: Sys> Boot<'_, S> {
    /// Find the generation `init=` names on the root, check its `boot.json`
    /// and its stage-2 init, and find its kernel-modules object.
    fn generation(&mut self, args: &BootArgs) -> Result<Generation, Failure> {
        let Some(init) = args.init.as_deref() else {
            return fail(
                Step::Generation,
                "no init= on the kernel command line",
                format!("boot an entry written by `genboot install`: it passes init={STORE_DIR}/<hash>-{GENERATION_NAME_PREFIX}<kernel>/init"),
            );
        };
        let InitPath { generation: gen, object } = match parse_init_path(init) {
            Ok(p) => p,
            Err(why) => {
                return fail(
                    Step::Generation,
                    format!("init={init} is not a generation's init: {why}"),
                    format!("init= must be {STORE_DIR}/<hash>-{GENERATION_NAME_PREFIX}<kernel>/init, as `genboot install` writes it"),
                )
            }
        };
        let on_root = self.generation_dir(args, gen)?;
        let release = self.generation_release(gen, &on_root)?;
        let running = self.sys.kernel_release().unwrap_or_default();
        if release != running {
            return fail(
                Step::Generation,
                format!("generation {gen} is for kernel {release}, but kernel {running} is running"),
                "the boot entry pairs the wrong kernel and generation; run `genboot install` or pick another entry",
            );
        }
        let resolved = self.stage2_init(gen, &on_root)?;
        let kernel_modules = self.kernel_modules(gen, &on_root)?;
        let detail = format!("{gen} (kernel {release}, init {})", in_root_text(&resolved));
        self.done(Step::Generation, &detail);
        Ok(Generation {
            path: gen.to_string(),
            object: Object {
                hash: object.hash,
                name: object.name.to_string(),
                dir: on_root,
            },
            kernel_modules,
        })
    }

    /// Where the generation `gen` is below [`SYSROOT`]: a directory.
    fn generation_dir(&mut self, args: &BootArgs, gen: &str) -> Result<String, Failure> {
        let on_root = match self.on_root(gen, Follow::NotLast) {
            Ok(p) => p,
            Err(e) => {
                return fail(
                    Step::Generation,
                    format!(
                        "generation {gen} is not on the root file system {}: {}",
                        args.root,
                        errno_text(&e)
                    ),
                    "a directory on the way to the store is a broken or looping symlink; boot another generation and fix the root",
                )
            }
        };
        match self.sys.lstat(&on_root) {
            Ok(m) if m.kind == Kind::Dir => Ok(on_root),
            _ => fail(
                Step::Generation,
                format!("generation {gen} is not on the root file system {}", args.root),
                "it may have been garbage-collected or root= names another system; pick another entry in the boot menu",
            ),
        }
    }

    /// The kernel release the generation's `boot.json` names.
    fn generation_release(&mut self, gen: &str, on_root: &str) -> Result<String, Failure> {
        // Inside the generation every path is its own: nothing is resolved
        // through a link (`on_root` holds none).
        let bj = format!("{on_root}/boot.json");
        let text = match self.sys.lstat(&bj) {
            Ok(m) if m.kind == Kind::File => self.sys.read_file(&bj),
            Ok(_) => Err(io::Error::from_raw_os_error(libc::EISDIR)),
            Err(e) => Err(e),
        };
        match text {
            Ok(t) => boot_json_release(gen, &String::from_utf8_lossy(&t)),
            Err(e) => {
                let why = if e.raw_os_error() == Some(libc::EISDIR) {
                    "not a file".to_string()
                } else {
                    errno_text(&e)
                };
                fail(
                    Step::Generation,
                    format!("cannot read {gen}/boot.json: {why}"),
                    "the generation is damaged; run `genboot verify` from another generation",
                )
            }
        }
    }

    /// The stage-2 init the generation names, below [`SYSROOT`]: it must be
    /// on the root, found the way stage 2 will find it: every link resolved
    /// inside the root (Debian: /sbin -> usr/sbin, /usr/sbin/init ->
    /// /lib/systemd/systemd), an executable file.
    fn stage2_init(&mut self, gen: &str, on_root: &str) -> Result<String, Failure> {
        let target = match self.sys.read_link(&format!("{on_root}/init")) {
            Ok(t) => t,
            Err(e) => {
                return fail(
                    Step::Generation,
                    format!("{gen}/init is not a symlink: {}", errno_text(&e)),
                    "the generation is damaged; run `genboot verify`",
                )
            }
        };
        let not_there = |why: String| -> Result<String, Failure> {
            fail(
                Step::Generation,
                format!("{gen}/init points to {target}, which is not a file on the root: {why}"),
                "install the stage-2 init on the root file system, or set system.init in system.toml and rebuild",
            )
        };
        let resolved = match self.on_root(&format!("{gen}/init"), Follow::All) {
            Ok(p) => p,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return not_there(format!(
                    "more than {} symbolic links on the way (a loop?)",
                    crate::inroot::MAX_LINKS
                ))
            }
            Err(e) => return not_there(errno_text(&e)),
        };
        let shown = in_root_text(&resolved);
        match self.sys.lstat(&resolved) {
            Ok(m) if m.kind == Kind::File && m.mode & 0o111 != 0 => Ok(resolved),
            Ok(m) if m.kind == Kind::File => {
                not_there(format!("{shown} is not executable (mode {:04o})", m.mode))
            }
            Ok(_) => not_there(format!("{shown} is not a regular file")),
            Err(e) => not_there(format!("{shown}: {}", errno_text(&e))),
        }
    }

    /// The kernel-modules object the generation links to, if it links one:
    /// a store object on the root.
    fn kernel_modules(&mut self, gen: &str, on_root: &str) -> Result<Option<Object>, Failure> {
        let Ok(t) = self.sys.read_link(&format!("{on_root}/kernel-modules")) else {
            return Ok(None);
        };
        let base = t.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        let in_store = t.trim_end_matches('/') == format!("../{base}")
            || t.trim_end_matches('/') == format!("{STORE_DIR}/{base}");
        let Some(StoreName { hash, name }) = StoreName::parse(base).filter(|_| in_store) else {
            return fail(
                Step::Generation,
                format!("{gen}/kernel-modules points to {t}, not a store object"),
                "the generation is damaged; run `genboot verify`",
            );
        };
        let obj = format!("{STORE_DIR}/{base}");
        let dir = match self.on_root(&obj, Follow::NotLast) {
            Ok(d) if matches!(self.sys.lstat(&d), Ok(m) if m.kind == Kind::Dir) => d,
            _ => {
                return fail(
                    Step::Generation,
                    format!("the generation's kernel-modules object {obj} is not on the root"),
                    "the store is damaged (an object was deleted by hand?); boot another generation and run `genboot verify`",
                )
            }
        };
        Ok(Some(Object {
            hash,
            name: name.to_string(),
            dir,
        }))
    }

    fn verify(&mut self, g: &Generation) -> Result<(), Failure> {
        let mut objects = vec![g.object.clone()];
        objects.extend(g.kernel_modules.clone());
        for o in &objects {
            let path = o.store_path();
            match self.sys.hash_tree(&o.dir, &o.name, &o.hash) {
                Ok(h) if h == o.hash => {}
                Ok(h) => {
                    return fail(
                        Step::Verify,
                        format!("{path} was changed: its contents hash to {h}"),
                        "the generation was tampered with or damaged; boot another generation and run `genboot verify`, then rebuild",
                    )
                }
                Err(e) => {
                    return fail(
                        Step::Verify,
                        format!("cannot hash {path}: {}", errno_text(&e)),
                        "the store object is unreadable or missing; boot another generation and run `genboot verify`",
                    )
                }
            }
            let mut bad = Vec::new();
            let mut count = 0usize;
            check_modes(self.sys, &o.dir, "", 0, &mut bad, &mut count);
            if count > 0 {
                let more = if count > bad.len() {
                    format!(" and {} more", count - bad.len())
                } else {
                    String::new()
                };
                return fail(
                    Step::Verify,
                    format!(
                        "{path} has entries a store object must not have: {}{more}",
                        bad.join("; ")
                    ),
                    "store objects are read-only and owned by root (files 0444 or 0555, directories 0555); this one was changed by hand or tampered with: boot another generation and run `genboot verify`, then rebuild",
                );
            }
        }
        let detail = format!(
            "{} store objects match their hashes, read-only and owned by root",
            objects.len()
        );
        self.done(Step::Verify, &detail);
        Ok(())
    }
}

/// Up to this many bad entries are named in a `genboot.verify` failure.
const MODE_PROBLEMS_SHOWN: usize = 3;

/// Store objects nest no deeper than this (a module tree: about 8).
const MAX_OBJECT_DEPTH: u32 = 64;

/// Check the modes and owner of everything in a store object (`dir` is the
/// object, `rel` the part below it): files 0444 or 0555, directories 0555,
/// all owned by root, nothing but files, directories and symlinks. The
/// store hash covers contents and the owner-execute bit only, so this is
/// what notices a setuid or world-writable file. Counts the bad entries,
/// names the first few.
fn check_modes<S: Sys>(
    sys: &mut S,
    dir: &str,
    rel: &str,
    depth: u32,
    bad: &mut Vec<String>,
    count: &mut usize,
) {
    fn note(what: String, bad: &mut Vec<String>, count: &mut usize) {
        *count += 1;
        if bad.len() < MODE_PROBLEMS_SHOWN {
            bad.push(what);
        }
    }
    let here = if rel.is_empty() {
        dir.to_string()
    } else {
        format!("{dir}/{rel}")
    };
    let shown = if rel.is_empty() { "." } else { rel };
    let m = match sys.lstat(&here) {
        Ok(m) => m,
        Err(e) => return note(format!("{shown}: {}", errno_text(&e)), bad, count),
    };
    if m.uid != 0 {
        note(format!("{shown} is owned by uid {}", m.uid), bad, count);
    }
    match m.kind {
        Kind::Symlink => {}
        Kind::File if m.mode == 0o444 || m.mode == 0o555 => {}
        Kind::File => note(format!("{shown} has mode {:04o}", m.mode), bad, count),
        Kind::Other => note(format!("{shown} is a device, fifo or socket"), bad, count),
        Kind::Dir => {
            if m.mode != 0o555 {
                note(format!("{shown}/ has mode {:04o}", m.mode), bad, count);
            }
            if depth >= MAX_OBJECT_DEPTH {
                return note(format!("{shown}/ is nested too deep"), bad, count);
            }
            let mut names = match sys.read_dir(&here) {
                Ok(v) => v,
                Err(e) => return note(format!("{shown}/: {}", errno_text(&e)), bad, count),
            };
            names.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, _) in names {
                let sub = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                check_modes(sys, dir, &sub, depth + 1, bad, count);
            }
        }
    }
}

impl<S: Sys> Boot<'_, S> {
    /// Create `path` and its missing parents. `path` holds no symlink (it
    /// comes from [`resolve_in_root`]), so nothing is created through one.
    fn mkdir_p(&mut self, path: &str) -> io::Result<()> {
        if self.sys.stat(path).is_ok() {
            return Ok(());
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            if !parent.is_empty() {
                self.mkdir_p(parent)?;
            }
        }
        match self.sys.mkdir(path, 0o755) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => Err(e),
            _ => Ok(()),
        }
    }

    fn bind_modules(&mut self, args: &BootArgs, g: &Generation) -> Result<(), Failure> {
        let Some(km) = &g.kernel_modules else {
            self.done(
                Step::BindModules,
                "the generation has no kernel-modules object; stage 2 uses the root's /lib/modules",
            );
            return Ok(());
        };
        let ro = args.read_only;
        let mut bound = Vec::new();
        for sub in ["lib/modules", "lib/firmware"] {
            // Both ends resolved inside the root: on Debian /lib is a link
            // (to usr/lib), and a link to an absolute path would otherwise
            // put the bind into the initramfs.
            let inside = format!("{}/", km.dir);
            let src = match self.on_root(&format!("{}/{sub}", km.store_path()), Follow::All) {
                Ok(p) if p.starts_with(&inside) => p,
                Ok(p) => {
                    let msg = format!(
                        "warning: {sub} in the kernel-modules object leads out of it (to {}); not bound",
                        in_root_text(&p)
                    );
                    self.say(&msg);
                    continue;
                }
                Err(_) => continue,
            };
            if !matches!(self.sys.stat(&src), Ok(m) if m.kind == Kind::Dir) {
                continue;
            }
            let target = match self.on_root(&format!("/{sub}"), Follow::All) {
                Ok(t) => t,
                Err(e) => {
                    let msg = format!(
                        "warning: /{sub} on the root cannot be resolved: {}; stage 2 goes without the generation's /{sub}",
                        errno_text(&e)
                    );
                    self.say(&msg);
                    continue;
                }
            };
            let shown = in_root_text(&target);
            if !matches!(self.sys.stat(&target), Ok(m) if m.kind == Kind::Dir) {
                if ro {
                    let msg = format!("warning: /{sub} is missing on the read-only root; stage 2 goes without the generation's /{sub}");
                    self.say(&msg);
                    continue;
                }
                if let Err(e) = self.mkdir_p(&target) {
                    let msg = format!(
                        "warning: cannot create {shown} on the root: {}",
                        errno_text(&e)
                    );
                    self.say(&msg);
                    continue;
                }
            }
            let r = self
                .sys
                .mount(&src, &target, "", MS_BIND, "")
                .and_then(|()| {
                    self.sys
                        .mount("", &target, "", MS_BIND | MS_REMOUNT | MS_RDONLY, "")
                });
            if let Err(e) = r {
                return fail(
                    Step::BindModules,
                    format!("cannot bind {src} on {target}: {}", errno_text(&e)),
                    "the generation may be damaged; run `genboot verify`",
                );
            }
            bound.push(if shown == format!("/{sub}") {
                shown
            } else {
                format!("/{sub} (at {shown})")
            });
        }
        let detail = if bound.is_empty() {
            "nothing bound".to_string()
        } else {
            format!("{} (read-only)", bound.join(" "))
        };
        self.done(Step::BindModules, &detail);
        Ok(())
    }

    fn record(&mut self, g: &Generation) -> Result<(), Failure> {
        let r = match self.sys.mkdir("/run/genboot", 0o755) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => Err(e),
            _ => Ok(()),
        }
        .and_then(|()| {
            self.sys
                .write_file(BOOTED, format!("{}\n", g.path).as_bytes())
        });
        if let Err(e) = r {
            return fail(
                Step::Record,
                format!("cannot write {BOOTED}: {}", errno_text(&e)),
                "/run must be a writable tmpfs; see the mount-api step",
            );
        }
        self.done(Step::Record, BOOTED);
        let json = self.timings_json();
        // Timings are informative: a failure to write them is not fatal.
        let _ = self.sys.write_file(TIMINGS, json.as_bytes());
        Ok(())
    }

    fn debug_stop(&mut self) -> Outcome {
        let table = self
            .sys
            .read_file("/proc/self/mountinfo")
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .unwrap_or_else(|e| format!("(cannot read /proc/self/mountinfo: {e})"));
        self.say("genboot.debug: stopped before switching root. Mount table:");
        for l in table.lines() {
            self.sys.console(l);
        }
        self.done(Step::Debug, "stopped");
        if self.shell_reachable().is_some() {
            self.say("genboot.debug: starting the root's /bin/sh (chrooted into /sysroot); exit it to reboot");
            let _ = self.sys.run_shell(SYSROOT, "/bin/sh");
            return self.reboot(Step::Debug);
        }
        loop {
            self.say("genboot.debug: no shell on the root; waiting for a reset (remove genboot.debug to boot)");
            self.sys.sleep(Duration::from_secs(600));
        }
    }

    fn switch_root(&mut self) -> Result<(), Failure> {
        let r = self
            .sys
            .chdir(SYSROOT)
            .map_err(|e| ("chdir /sysroot", e))
            .and_then(|()| {
                self.sys
                    .mount(SYSROOT, "/", "", MS_MOVE, "")
                    .map_err(|e| ("move /sysroot onto /", e))
            })
            .and_then(|()| self.sys.chroot(".").map_err(|e| ("chroot .", e)))
            .and_then(|()| self.sys.chdir("/").map_err(|e| ("chdir /", e)));
        if let Err((what, e)) = r {
            return fail(
                Step::SwitchRoot,
                format!("{what}: {}", errno_text(&e)),
                "the kernel refused the switch; boot with genboot.debug to see the mount table",
            );
        }
        self.root_at = Some("/");
        self.done(Step::SwitchRoot, "/sysroot is now /");
        Ok(())
    }

    fn exec(&mut self, args: &BootArgs, g: &Generation) -> Result<Outcome, Failure> {
        let (path, argv) = if args.recovery {
            ("/bin/sh".to_string(), vec!["sh".to_string()])
        } else {
            let p = format!("{}/init", g.path);
            let mut argv = vec![p.clone()];
            argv.extend(args.init_args.iter().cloned());
            (p, argv)
        };
        self.done(Step::Exec, &path);
        let total = self.steps.last().map(|s| s.1).unwrap_or(0);
        let msg = format!("kernel start to stage 2: {} s", secs(total));
        self.say(&msg);
        let json = self.timings_json();
        let _ = self.sys.write_file(TIMINGS, json.as_bytes());
        if args.recovery {
            let banner = format!(
                "\n*** genboot recovery shell ***\nGeneration {} is active; the root is mounted read-only.\n  continue booting:   exec {}/init\n  make / writable:    mount -o remount,rw /\n  restart:            reboot -f\n",
                g.path, g.path
            );
            for l in banner.lines() {
                self.sys.console(l);
            }
        }
        match self.sys.exec(&path, &argv) {
            Ok(()) => Ok(Outcome::Exec(path)),
            Err(e) => fail(
                Step::Exec,
                format!("cannot execute {path}: {}", errno_text(&e)),
                if args.recovery {
                    "the root has no /bin/sh; boot without genboot.recovery".to_string()
                } else {
                    format!("{}/init must point to an executable stage-2 init on the root (system.init in system.toml)", g.path)
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests;
