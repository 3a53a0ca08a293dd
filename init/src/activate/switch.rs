//! Handing over to stage 2: the generation's modules bound onto the root,
//! the booted generation recorded, the root switched to, its init executed
//! (or, with `genboot.debug`, a stop before the switch).

use super::generation::Generation;
use super::{errno_text, fail, in_root_text, secs, Boot, Failure, Outcome, Step, SYSROOT};
use crate::inroot::Follow;
use crate::sys::flags::*;
use crate::sys::{Kind, Sys};
use genboot_format::cmdline::BootArgs;
use genboot_format::{BOOTED, RUN_DIR, TIMINGS};
use std::io;
use std::time::Duration;

/// A bind genboot-init made, as stage 2 sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Bound {
    /// The source, in the store.
    what: String,
    /// The mount point on the root.
    at: String,
}

/// Where genboot-init puts the mount units of its binds.
const UNIT_DIR: &str = "/run/systemd/system";

/// systemd's unit name for the mount point `path` (`systemd-escape
/// --path --suffix=mount`): `/` between components becomes `-`; ASCII
/// letters, digits, `:`, `_` and `.` (but a leading `.`) stay; every other
/// byte becomes `\xNN`.
pub(super) fn unit_name(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    let mut out = String::new();
    for (i, part) in trimmed.split('/').filter(|p| !p.is_empty()).enumerate() {
        if i > 0 {
            out.push('-');
        }
        for (j, b) in part.bytes().enumerate() {
            let keep = b.is_ascii_alphanumeric() || b == b':' || b == b'_' || (b == b'.' && j > 0);
            if keep {
                out.push(b as char);
            } else {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    out.push_str(".mount");
    out
}

/// The mount unit for `b`: it describes the bind systemd finds already
/// mounted, without default dependencies, so systemd's shutdown
/// transaction (`umount.target`) does not stop it; systemd-shutdown
/// unmounts it last, after every process is gone.
fn mount_unit(b: &Bound) -> (String, String) {
    let text = format!(
        "# Written by genboot-init: the booted generation's kernel modules.\n\
         # No default dependencies: systemd-shutdown unmounts it last, once\n\
         # udevd no longer maps kmod's index files from it.\n\
         [Unit]\n\
         Description=Kernel modules of the booted genboot generation\n\
         DefaultDependencies=no\n\
         \n\
         [Mount]\n\
         What={}\n\
         Where={}\n\
         Options=bind,ro\n",
        b.what, b.at
    );
    (unit_name(&b.at), text)
}

/// What a bind of the kernel-modules object covers.
#[derive(Debug, Clone, Copy)]
enum Bind {
    /// `lib/modules/<release>`.
    Modules,
    /// `lib/firmware`.
    Firmware,
}

impl<S: Sys> Boot<'_, S> {
    /// Create `path` and its missing parents. `path` holds no symlink (it
    /// comes from [`resolve_in_root`]), so nothing is created through one.
    /// Bind `src` on `target`, then make the bind read-only (a bind takes
    /// the flags of its source until remounted).
    pub(super) fn bind_read_only(&mut self, src: &str, target: &str) -> io::Result<()> {
        self.sys.mount(src, target, "", MS_BIND, "")?;
        self.sys
            .mount("", target, "", MS_BIND | MS_REMOUNT | MS_RDONLY, "")
    }

    pub(super) fn mkdir_p(&mut self, path: &str) -> io::Result<()> {
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

    /// Make the booted generation's kernel modules reachable in stage 2,
    /// without taking the root's module trees from dpkg, DKMS and depmod:
    /// the kernel-modules object's `lib/modules/<release>` is bound
    /// read-only on the root's `/lib/modules/<release>` only when the root
    /// has no module tree of its own there (the directory is missing,
    /// empty, or holds only what depmod left after `apt remove`: no
    /// `kernel/`, `modules.order` or `modules.builtin`); the rest of
    /// `/lib/modules` stays the root's, writable. `lib/firmware`, when the
    /// object has one, is bound only on a root without `/lib/firmware`.
    /// A missing mount point is created on a writable root; on a read-only
    /// one the bind is left out with a warning.
    pub(super) fn bind_modules(
        &mut self,
        args: &BootArgs,
        g: &Generation,
    ) -> Result<Vec<Bound>, Failure> {
        let Some(km) = &g.kernel_modules else {
            self.done(
                Step::BindModules,
                "the generation has no kernel-modules object; stage 2 uses the root's /lib/modules",
            );
            return Ok(Vec::new());
        };
        let mut binds = Vec::new();
        let mut said = Vec::new();
        let modules = format!("lib/modules/{}", g.release);
        for (sub, what) in [
            (modules.as_str(), Bind::Modules),
            ("lib/firmware", Bind::Firmware),
        ] {
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
            let at = if shown == format!("/{sub}") {
                shown.clone()
            } else {
                format!("/{sub} (at {shown})")
            };
            match self.sys.stat(&target) {
                Ok(m) if m.kind == Kind::Dir => {
                    if self.roots_own(&target, what) {
                        said.push(format!("{at}: the root's own"));
                        continue;
                    }
                }
                Ok(_) => {
                    let msg = format!("warning: {at} on the root is not a directory; stage 2 goes without the generation's /{sub}");
                    self.say(&msg);
                    continue;
                }
                Err(_) if args.read_only => {
                    let msg = format!("warning: /{sub} is missing on the read-only root; stage 2 goes without the generation's /{sub} (genboot's kernel postrm hook keeps it for a kernel a generation boots; or boot with rw)");
                    self.say(&msg);
                    continue;
                }
                Err(_) => {
                    if let Err(e) = self.mkdir_p(&target) {
                        let msg = format!(
                            "warning: cannot create {shown} on the root: {}",
                            errno_text(&e)
                        );
                        self.say(&msg);
                        continue;
                    }
                }
            }
            let r = self.bind_read_only(&src, &target);
            if let Err(e) = r {
                return fail(
                    Step::BindModules,
                    format!("cannot bind {src} on {target}: {}", errno_text(&e)),
                    "the generation may be damaged; run `genboot verify`",
                );
            }
            said.push(format!("{at}: the generation's (read-only)"));
            binds.push(Bound {
                what: in_root_text(&src),
                at: shown,
            });
        }
        let detail = if said.is_empty() {
            "nothing bound".to_string()
        } else {
            said.join("; ")
        };
        self.done(Step::BindModules, &detail);
        Ok(binds)
    }

    /// Whether the root's directory `dir` (a directory) is its own tree to
    /// keep: a module tree a kernel package installed (`kernel/`,
    /// `modules.order` or `modules.builtin` in it), or any firmware
    /// directory.
    fn roots_own(&mut self, dir: &str, what: Bind) -> bool {
        match what {
            Bind::Firmware => true,
            Bind::Modules => self.sys.read_dir(dir).is_ok_and(|names| {
                names.iter().any(|(n, _)| {
                    matches!(n.as_str(), "kernel" | "modules.order" | "modules.builtin")
                })
            }),
        }
    }

    /// Record the boot for stage 2: `/run/genboot/booted`, the timings,
    /// and for each bind a mount unit in `/run/systemd/system` that tells
    /// systemd to leave the bind alone at shutdown
    /// ([`mount_unit`]); without it systemd's `umount.target` tries to
    /// unmount it while udevd still maps kmod's index files from it, and
    /// says "Failed unmounting"; systemd-shutdown unmounts it last.
    pub(super) fn record(&mut self, g: &Generation, binds: &[Bound]) -> Result<(), Failure> {
        let r = match self.sys.mkdir(RUN_DIR, 0o755) {
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
        let mut detail = BOOTED.to_string();
        if g.tree.is_some() {
            match self.volatile_root() {
                Ok(said) => detail.push_str(&format!(" {said}")),
                Err(why) => {
                    // systemd then does not find the disk under the overlay
                    // root (gpt-auto, the ESP); the boot goes on.
                    let msg = format!("warning: {why}");
                    self.say(&msg);
                }
            }
        }
        let dirs = if binds.is_empty() {
            Ok(())
        } else {
            ["/run/systemd", UNIT_DIR].into_iter().try_for_each(|d| {
                match self.sys.mkdir(d, 0o755) {
                    Err(e) if e.raw_os_error() != Some(libc::EEXIST) => Err(e),
                    _ => Ok(()),
                }
            })
        };
        for b in binds {
            let (name, text) = mount_unit(b);
            let path = format!("{UNIT_DIR}/{name}");
            let r = match &dirs {
                Ok(()) => self.sys.write_file(&path, text.as_bytes()),
                Err(e) => Err(io::Error::from_raw_os_error(
                    e.raw_os_error().unwrap_or(libc::EIO),
                )),
            };
            match r {
                Ok(()) => detail.push_str(&format!(" {path}")),
                Err(e) => {
                    // systemd then tries to unmount the bind too early at
                    // shutdown and says so; the boot is not worse for it.
                    let msg = format!("warning: cannot write {path}: {}", errno_text(&e));
                    self.say(&msg);
                }
            }
        }
        self.done(Step::Record, &detail);
        let json = self.timings_json();
        // Timings are informative: a failure to write them is not fatal.
        let _ = self.sys.write_file(TIMINGS, json.as_bytes());
        Ok(())
    }

    pub(super) fn debug_stop(&mut self) -> Outcome {
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

    pub(super) fn switch_root(&mut self) -> Result<(), Failure> {
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

    /// The root's `sulogin`, found on the root before the switch (every
    /// link resolved inside it), as the root will see it after.
    pub(super) fn find_sulogin(&mut self) -> Option<String> {
        ["/sbin/sulogin", "/usr/sbin/sulogin", "/bin/sulogin"]
            .into_iter()
            .find_map(|p| {
                // Executed by its own name (busybox picks the applet by it);
                // the file it leads to must be an executable.
                let at = self.on_root(p, Follow::NotLast).ok()?;
                let file = self.on_root(p, Follow::All).ok()?;
                match self.sys.stat(&file) {
                    Ok(m) if m.kind == Kind::File && m.mode & 0o111 != 0 => Some(in_root_text(&at)),
                    _ => None,
                }
            })
    }

    /// `genboot.recovery`, after the switch: a banner saying how to work
    /// on the system, then the root's `sulogin` (util-linux's on Debian,
    /// as Debian's rescue mode runs it) in a child process on the console:
    /// it asks for root's password and gives root's shell. When it exits
    /// (the shell ended, or Control-D at the prompt), the boot goes on. A
    /// root without `sulogin` gets no shell: nobody is asked for a
    /// password, so nobody gets one.
    pub(super) fn recovery(&mut self, g: &Generation, sulogin: Option<String>) {
        let var =
            "/sys/firmware/efi/efivars/LoaderDevicePartUUID-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
        // A tree's / is its read-only image: what can be made writable is
        // the root partition, through /var (/etc stays read-only).
        let writable = if g.tree.is_some() {
            "make /var writable: mount -o remount,rw /var  (the root partition; /usr and /etc stay read-only)"
        } else {
            "make / writable:    mount -o remount,rw /"
        };
        let banner = format!(
            "\n*** genboot recovery ***\n\
             Generation {gen} is active; the root is mounted read-only.\n\
             sulogin asks for root's password (Control-D there continues the boot), then gives root's shell:\n\
             \x20 {writable}\n\
             \x20 mount the ESP:      mount -t efivarfs efivarfs /sys/firmware/efi/efivars\n\
             \x20                     mount PARTUUID=$(tr -cd 0-9A-Fa-f- < {var} | tr A-F a-f) /mnt\n\
             \x20                     (then e.g. genboot --esp /mnt rollback)\n\
             \x20 continue booting:   exit the shell\n\
             \x20 restart:            reboot -f\n",
            gen = g.path
        );
        for l in banner.lines() {
            self.sys.console(l);
        }
        let detail = match sulogin {
            Some(path) => {
                let msg = format!("genboot.recovery: {path} asks for root's password");
                self.say(&msg);
                match self.sys.run_shell("/", &path) {
                    Ok(()) => format!("{path} exited; continuing the boot"),
                    Err(e) => format!(
                        "cannot start {path}: {}; continuing the boot",
                        errno_text(&e)
                    ),
                }
            }
            None => {
                self.say("genboot.recovery: the root has no sulogin (util-linux) to ask for root's password, so there is no shell; continuing the boot");
                "no sulogin; continuing the boot".to_string()
            }
        };
        self.done(Step::Recovery, &detail);
    }

    pub(super) fn exec(&mut self, args: &BootArgs, g: &Generation) -> Result<Outcome, Failure> {
        let path = format!("{}/init", g.path);
        let mut argv = vec![path.clone()];
        argv.extend(args.init_args.iter().cloned());
        self.done(Step::Exec, &path);
        let total = self.steps.last().map(|s| s.1).unwrap_or(0);
        let msg = format!("kernel start to stage 2: {} s", secs(total));
        self.say(&msg);
        let json = self.timings_json();
        let _ = self.sys.write_file(TIMINGS, json.as_bytes());
        match self.sys.exec(&path, &argv) {
            Ok(()) => Ok(Outcome::Exec(path)),
            Err(e) => fail(
                Step::Exec,
                format!("cannot execute {path}: {}", errno_text(&e)),
                format!("{}/init must point to an executable stage-2 init on the root (system.init in system.toml)", g.path),
            ),
        }
    }
}
