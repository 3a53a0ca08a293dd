//! Whole-system generations: the generation's tree (`org.genboot.v1.tree`
//! in its `boot.json`) becomes the root. These steps run only for a
//! generation with a tree; one without never reaches them, and boots
//! exactly as before.
//!
//! - `mount-tree`: the root partition moves from [`SYSROOT`] to
//!   [`ROOT_PARTITION`]; the tree's metadata image (EROFS) is mounted
//!   read-only, from the file where the kernel's EROFS reads files (6.12),
//!   else through a read-only autoclear loop device (6.1); then a read-only
//!   overlay on [`SYSROOT`] shows the tree: `metacopy=on,redirect_dir=on,
//!   lowerdir=META::OBJECTS` (the content objects a data-only layer), or
//!   where the kernel refuses that with `EINVAL` (6.1, before 6.5), the
//!   legacy `lowerdir=META:OBJECTS` (the image's opaque root and its `00`…`ff`
//!   whiteouts hide the objects' fan-out directories: tests/it/tree.rs
//!   `the_legacy_overlay_form_hides_the_objects_and_shows_the_same_tree`).
//!   The image's own mount is then detached: the overlay holds it.
//! - `mount-etc`: `/etc` an overlay over the image's `/etc` with this
//!   generation's own layer on the root partition
//!   (`/var/lib/genboot/etc/<generation>/{upper,work}`, created when
//!   missing); then the machine's identity from `/var/lib/genboot/identity/`
//!   (made on the first boot: `machine-id`; SSH host keys by the tree's
//!   `genboot-ssh-keygen.service`): the keys bound over `/etc/ssh`, the
//!   machine-id written into this generation's layer (bound when `/etc` is
//!   read-only).
//! - `bind-var`: the root partition's `/var` on the tree's `/var`
//!   (persistent, never rolled back); the image's package state bound
//!   read-only where the package manager looks for it; the persistent
//!   paths (`/home`, `/root`, `/srv` unless `boot.json` names others) the
//!   tree has as directories; a tmpfs on `/tmp`; the root partition's own
//!   mount made read-only (what stage 2 writes there goes through the binds).
//!
//! With a read-only root partition (`ro`, `genboot.recovery`) nothing is
//! created on it: `/etc` is the generation's layer read-only (or the
//! image's, when it has none yet), and a bind without its mount point is
//! left out with a warning.

use super::generation::Generation;
use super::{errno_text, fail, in_root_text, Boot, Failure, Step, SYSROOT};
use crate::inroot::{resolve_in_root, Follow};
use crate::sys::flags::*;
use crate::sys::{Kind, Sys};
use genboot_format::cmdline::BootArgs;
use genboot_format::{
    ETC_LAYERS_DIR, IDENTITY_DIR, PACKAGE_STATE, PACKAGE_STATE_DIR, ROOT_PARTITION, RUN_DIR,
    STATE_DIR, TREE_INITRD_MODULES,
};
use std::io;

/// Where the metadata image is mounted until the overlay holds it.
pub(super) const META: &str = "/run/genboot/meta";

/// systemd's hint that `/` is not on a disk of its own: the root
/// partition's block device (as ostree-prepare-root writes it), so
/// systemd-gpt-auto-generator and friends still find the disk.
pub(super) const VOLATILE_ROOT: &str = "/run/systemd/volatile-root";

/// A path for an overlay option: `\`, `:` and `,` escaped with `\`.
fn ovl_escape(p: &str) -> String {
    let mut s = String::with_capacity(p.len());
    for c in p.chars() {
        if matches!(c, '\\' | ':' | ',') {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// The options of the tree's overlay: the metadata image `meta` over the
/// content objects `objects`, as a data-only layer (`::`, Linux ≥ 6.5) or,
/// `legacy`, as a second lower layer (`:`).
pub(super) fn root_overlay_options(meta: &str, objects: &str, legacy: bool) -> String {
    format!(
        "metacopy=on,redirect_dir=on,lowerdir={}{}{}",
        ovl_escape(meta),
        if legacy { ":" } else { "::" },
        ovl_escape(objects)
    )
}

/// The options of the writable `/etc`: the image's `/etc` below, this
/// generation's layer above. `index=off`: a kernel built with
/// `CONFIG_OVERLAY_FS_INDEX=y` would otherwise refuse a lower layer that
/// is itself an overlay.
pub(super) fn etc_overlay_options(etc: &str, upper: &str, work: &str) -> String {
    format!(
        "lowerdir={},upperdir={},workdir={},index=off",
        ovl_escape(etc),
        ovl_escape(upper),
        ovl_escape(work)
    )
}

/// The options of a read-only `/etc` (a read-only root partition): the
/// generation's layer as the upper of two lower layers.
pub(super) fn etc_read_only_options(etc: &str, upper: &str) -> String {
    format!("lowerdir={}:{}", ovl_escape(upper), ovl_escape(etc))
}

/// `dev_t`'s major and minor numbers (the kernel's encoding, as glibc's
/// and musl's `major()`/`minor()` read it).
pub(super) fn major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    (major, minor)
}

/// A path below [`ROOT_PARTITION`] as the root partition sees it.
fn on_partition_text(path: &str) -> String {
    match path.strip_prefix(ROOT_PARTITION) {
        Some("") => "/".to_string(),
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ => path.to_string(),
    }
}

/// `path` with [`SYSROOT`] at its start replaced by [`ROOT_PARTITION`]:
/// where a path resolved on the root partition is once it has moved.
fn moved(path: &str) -> String {
    match path.strip_prefix(SYSROOT) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            format!("{ROOT_PARTITION}{rest}")
        }
        _ => path.to_string(),
    }
}

fn mkdir_ok<S: Sys>(sys: &mut S, path: &str) -> io::Result<()> {
    match sys.mkdir(path, 0o755) {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => Err(e),
        _ => Ok(()),
    }
}

impl<S: Sys> Boot<'_, S> {
    /// `path` on the root partition (at [`ROOT_PARTITION`] once the tree is
    /// the root), resolved inside it.
    fn on_partition(&mut self, path: &str, follow: Follow) -> io::Result<String> {
        resolve_in_root(self.sys, ROOT_PARTITION, path, follow)
    }

    /// `mount-tree`: see the module documentation.
    pub(super) fn mount_tree(&mut self, g: &Generation) -> Result<(), Failure> {
        let Some(t) = &g.tree else {
            return Ok(());
        };
        let damaged = "the tree object is damaged or was deleted by hand: boot another generation and run `genboot verify`";
        // On the root partition, still at /sysroot.
        let image = match self.on_root(&t.image, Follow::All) {
            Ok(p) if matches!(self.sys.lstat(&p), Ok(m) if m.kind == Kind::File) => p,
            Ok(p) => {
                let why = match self.sys.lstat(&p) {
                    Ok(_) => "not a file".to_string(),
                    Err(e) => errno_text(&e),
                };
                return fail(
                    Step::MountTree,
                    format!("the tree's metadata image {}: {why}", t.image),
                    damaged,
                );
            }
            Err(e) => {
                return fail(
                    Step::MountTree,
                    format!("the tree's metadata image {}: {}", t.image, errno_text(&e)),
                    damaged,
                )
            }
        };
        let objects = match self.on_root(&t.objects, Follow::All) {
            Ok(p) if matches!(self.sys.lstat(&p), Ok(m) if m.kind == Kind::Dir) => p,
            _ => {
                return fail(
                    Step::MountTree,
                    format!(
                        "the store's content objects {} are not a directory on the root",
                        t.objects
                    ),
                    "the store is damaged: boot another generation and run `genboot verify`",
                )
            }
        };
        // The root partition out of the way: the tree takes /sysroot.
        let r = mkdir_ok(self.sys, RUN_DIR)
            .and_then(|()| mkdir_ok(self.sys, ROOT_PARTITION))
            .and_then(|()| mkdir_ok(self.sys, META));
        if let Err(e) = r {
            return fail(
                Step::MountTree,
                format!(
                    "cannot create {ROOT_PARTITION} and {META}: {}",
                    errno_text(&e)
                ),
                "/run must be a writable tmpfs; see the mount-api step",
            );
        }
        if let Err(e) = self.sys.mount(SYSROOT, ROOT_PARTITION, "", MS_MOVE, "") {
            return fail(
                Step::MountTree,
                format!("cannot move the root partition from {SYSROOT} to {ROOT_PARTITION}: {}", errno_text(&e)),
                "the kernel refused to move the mount; boot with genboot.debug to see the mount table",
            );
        }
        self.root_at = Some(ROOT_PARTITION);
        let (image, objects) = (moved(&image), moved(&objects));
        let modules = TREE_INITRD_MODULES.join(", ");
        let how = match self.sys.mount(&image, META, "erofs", MS_RDONLY, "") {
            Ok(()) => "from the file".to_string(),
            // The kernel's EROFS reads only block devices (before 6.12).
            Err(e) if e.raw_os_error() == Some(libc::ENOTBLK) => {
                match self.sys.mount_loop(&image, META, "erofs", MS_RDONLY, "") {
                    Ok(dev) => format!("through {dev}"),
                    Err(e) => {
                        return fail(
                            Step::MountTree,
                            format!("cannot mount {} through a loop device: {}", t.image, errno_text(&e)),
                            format!("the kernel needs loop devices to mount an EROFS image before 6.12: the initrd of a generation with a tree carries {modules}; rebuild it with this genboot"),
                        )
                    }
                }
            }
            Err(e) => {
                return fail(
                    Step::MountTree,
                    format!("cannot mount {} (erofs): {}", t.image, errno_text(&e)),
                    format!("the kernel needs EROFS: the initrd of a generation with a tree carries {modules}; rebuild it with this genboot. Or the image is damaged: boot another generation and run `genboot verify`"),
                )
            }
        };
        let mut form = "lowerdir=META::OBJECTS";
        let mut r = self.sys.mount(
            "overlay",
            SYSROOT,
            "overlay",
            MS_RDONLY,
            &root_overlay_options(META, &objects, false),
        );
        if matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EINVAL)) {
            // No data-only layers (Linux before 6.5).
            form = "legacy lowerdir=META:OBJECTS";
            r = self.sys.mount(
                "overlay",
                SYSROOT,
                "overlay",
                MS_RDONLY,
                &root_overlay_options(META, &objects, true),
            );
        }
        if let Err(e) = r {
            return fail(
                Step::MountTree,
                format!("cannot mount the tree's overlay on {SYSROOT}: {}", errno_text(&e)),
                format!("the kernel needs overlayfs with metacopy and redirect_dir: the initrd of a generation with a tree carries {modules}; rebuild it with this genboot"),
            );
        }
        self.root_at = Some(SYSROOT);
        // The overlay holds the image; its own mount point goes.
        if let Err(e) = self
            .sys
            .umount(META, MNT_DETACH)
            .and_then(|()| self.sys.rmdir(META))
        {
            let msg = format!("warning: cannot detach {META}: {}", errno_text(&e));
            self.say(&msg);
        }
        let detail = format!(
            "{} read-only on {SYSROOT} (image {how}, overlay {form}); the root partition at {ROOT_PARTITION}",
            t.object
        );
        self.done(Step::MountTree, &detail);
        Ok(())
    }

    /// `mount-etc`: see the module documentation.
    pub(super) fn mount_etc(&mut self, args: &BootArgs, g: &Generation) -> Result<(), Failure> {
        if g.tree.is_none() {
            return Ok(());
        }
        let writable = !args.read_only;
        let etc = match self.on_root("/etc", Follow::All) {
            Ok(p) if matches!(self.sys.lstat(&p), Ok(m) if m.kind == Kind::Dir) => p,
            _ => {
                return fail(
                    Step::MountEtc,
                    "the tree has no /etc directory",
                    "the tree is not a system: build it with an /etc (any Debian tree has one)",
                )
            }
        };
        let layer = format!("{ETC_LAYERS_DIR}/{}", g.store_name());
        let resolved = self
            .on_partition(&format!("{layer}/upper"), Follow::All)
            .and_then(|u| Ok((u, self.on_partition(&format!("{layer}/work"), Follow::All)?)));
        let (upper, work) = match resolved {
            Ok(p) => p,
            Err(e) => {
                return fail(
                    Step::MountEtc,
                    format!("{layer} on the root partition cannot be resolved: {}", errno_text(&e)),
                    "a link on the way is broken or loops; boot another generation and fix /var/lib/genboot/etc",
                )
            }
        };
        let mut said = Vec::new();
        if writable {
            for d in [&upper, &work] {
                if let Err(e) = self.mkdir_p(d) {
                    return fail(
                        Step::MountEtc,
                        format!(
                            "cannot create {} on the root partition: {}",
                            on_partition_text(d),
                            errno_text(&e)
                        ),
                        "the root partition must be writable and have room (boot with rw)",
                    );
                }
            }
            let opts = etc_overlay_options(&etc, &upper, &work);
            if let Err(e) = self.sys.mount("overlay", &etc, "overlay", 0, &opts) {
                return fail(
                    Step::MountEtc,
                    format!("cannot mount /etc's overlay ({opts}): {}", errno_text(&e)),
                    "the root partition's file system must support overlayfs upper layers (ext4, xfs, btrfs do)",
                );
            }
            said.push(format!("/etc: the image's with the layer {layer}"));
        } else if matches!(self.sys.lstat(&upper), Ok(m) if m.kind == Kind::Dir) {
            let opts = etc_read_only_options(&etc, &upper);
            if let Err(e) = self.sys.mount("overlay", &etc, "overlay", MS_RDONLY, &opts) {
                return fail(
                    Step::MountEtc,
                    format!("cannot mount /etc's overlay ({opts}): {}", errno_text(&e)),
                    "boot with rw, or another generation",
                );
            }
            said.push(format!(
                "/etc: the image's with the layer {layer}, read-only (the root partition is)"
            ));
        } else {
            said.push(format!(
                "/etc: the image's, read-only (the root partition is, and has no {layer} yet)"
            ));
        }
        if writable {
            self.ensure_machine_id(&upper);
        }
        let ids = self.bind_identity(writable)?;
        if ids.is_empty() {
            said.push(format!("no identity in {IDENTITY_DIR}"));
        } else {
            said.push(format!("{} from {IDENTITY_DIR}", ids.join(" ")));
        }
        self.done(Step::MountEtc, &said.join("; "));
        Ok(())
    }

    /// A machine-id in [`IDENTITY_DIR`] when it has none (the machine's
    /// first boot of a generation with a tree, or its file is torn): this
    /// generation's `/etc` layer's own when it is valid (systemd made it at
    /// an earlier boot), else a new random one (a version-4 UUID in hex, as
    /// systemd makes). It is then bound over every generation's
    /// `/etc/machine-id`, so all of them are one machine. Never fails the
    /// boot: with a warning systemd makes one in this generation's `/etc`.
    fn ensure_machine_id(&mut self, upper: &str) {
        let Ok(state) = self.on_partition(STATE_DIR, Follow::All) else {
            return;
        };
        let dir = format!("{state}/identity");
        let file = format!("{dir}/machine-id");
        if matches!(self.sys.read_file(&file), Ok(b) if valid_machine_id(&b)) {
            return;
        }
        let (id, whose) = match self.sys.read_file(&format!("{upper}/machine-id")) {
            Ok(b) if valid_machine_id(&b) => (
                String::from_utf8_lossy(b.get(..32).unwrap_or_default()).into_owned(),
                "this generation's /etc's",
            ),
            _ => match self.sys.read_at("/dev/urandom", 0, 16) {
                Ok(r) if r.len() == 16 => (random_machine_id(&r), "new"),
                other => {
                    let why = match other {
                        Err(e) => errno_text(&e),
                        Ok(_) => "short read".into(),
                    };
                    let msg = format!("warning: cannot read /dev/urandom for a machine-id: {why}; systemd makes one in this generation's /etc");
                    self.say(&msg);
                    return;
                }
            },
        };
        let written = self
            .mkdir_p(&dir)
            .and_then(|()| self.sys.write_file(&file, format!("{id}\n").as_bytes()));
        match written {
            Ok(()) => {
                let msg = format!("identity: machine-id {id} ({whose}) written to {IDENTITY_DIR}");
                self.say(&msg);
            }
            Err(e) => {
                let msg = format!("warning: cannot write {IDENTITY_DIR}/machine-id: {}; systemd makes one in this generation's /etc", errno_text(&e));
                self.say(&msg);
            }
        }
    }

    /// The machine's identity, the same in every generation: each of
    /// `machine-id` and `ssh/ssh_host_*` in [`IDENTITY_DIR`] on the root
    /// partition bound over its `/etc` path. A missing mount point is made
    /// (an empty file, in this generation's `/etc` layer) when `/etc` is
    /// writable. Returns the `/etc` paths bound.
    fn bind_identity(&mut self, writable: bool) -> Result<Vec<String>, Failure> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let is_file =
            |s: &mut Self, p: &str| matches!(s.sys.lstat(p), Ok(m) if m.kind == Kind::File);
        if let Ok(src) = self.on_partition(&format!("{IDENTITY_DIR}/machine-id"), Follow::All) {
            if is_file(self, &src) {
                pairs.push((src, "/etc/machine-id".into()));
            }
        }
        if let Ok(dir) = self.on_partition(&format!("{IDENTITY_DIR}/ssh"), Follow::All) {
            let mut names: Vec<String> = self
                .sys
                .read_dir(&dir)
                .map(|v| v.into_iter().map(|(n, _)| n).collect())
                .unwrap_or_default();
            names.sort();
            for n in names {
                let src = format!("{dir}/{n}");
                if n.starts_with("ssh_host_") && is_file(self, &src) {
                    pairs.push((src, format!("/etc/ssh/{n}")));
                }
            }
        }
        let mut bound = Vec::new();
        for (src, at) in pairs {
            // A writable /etc gets the machine-id as a file in this
            // generation's layer, not a bind: systemd-machine-id-commit
            // (ConditionPathIsMountPoint=/etc/machine-id, with /etc
            // writable) would take a bind for a transient id and fail, as
            // it is not on a tmpfs.
            if writable && at == "/etc/machine-id" {
                let Ok(target) = self.on_root(&at, Follow::All) else {
                    continue;
                };
                let Ok(id) = self.sys.read_file(&src) else {
                    continue;
                };
                if self.sys.read_file(&target).ok().as_deref() == Some(&id[..]) {
                    bound.push(at);
                    continue;
                }
                if let Err(e) = self.sys.write_file(&target, &id) {
                    return fail(
                        Step::MountEtc,
                        format!("cannot write the machine's machine-id to {at}: {}", errno_text(&e)),
                        "boot with genboot.shell_on_fail and look at /var/lib/genboot/etc on the root partition",
                    );
                }
                bound.push(at);
                continue;
            }
            let target = match self.on_root(&at, Follow::All) {
                Ok(t) => t,
                Err(e) => {
                    let msg = format!("warning: {at} cannot be resolved in the tree: {}; the machine's is not bound", errno_text(&e));
                    self.say(&msg);
                    continue;
                }
            };
            match self.sys.stat(&target) {
                Ok(m) if m.kind == Kind::File => {}
                Ok(_) => {
                    let msg = format!(
                        "warning: {at} is not a file in the tree; the machine's is not bound"
                    );
                    self.say(&msg);
                    continue;
                }
                Err(_) => {
                    let parent = target.rsplit_once('/').map(|(p, _)| p).unwrap_or("/");
                    if !matches!(self.sys.stat(parent), Ok(m) if m.kind == Kind::Dir) {
                        // No /etc/ssh: the tree has no SSH server to give keys to.
                        continue;
                    }
                    if !writable {
                        let msg = format!("warning: {at} is missing on the read-only /etc; the machine's is not bound");
                        self.say(&msg);
                        continue;
                    }
                    if let Err(e) = self.sys.write_file(&target, b"") {
                        let msg = format!(
                            "warning: cannot create {at} to bind the machine's onto: {}",
                            errno_text(&e)
                        );
                        self.say(&msg);
                        continue;
                    }
                }
            }
            if let Err(e) = self.sys.mount(&src, &target, "", MS_BIND, "") {
                return fail(
                    Step::MountEtc,
                    format!("cannot bind {} on {at}: {}", on_partition_text(&src), errno_text(&e)),
                    "boot with genboot.shell_on_fail and look at /var/lib/genboot/identity on the root partition",
                );
            }
            bound.push(at);
        }
        Ok(bound)
    }

    /// `bind-var`: see the module documentation. Then the generation is
    /// found again through the bound `/var`, and its stage-2 init checked
    /// in the tree.
    pub(super) fn bind_var(&mut self, args: &BootArgs, g: &mut Generation) -> Result<(), Failure> {
        let Some(t) = g.tree.clone() else {
            return Ok(());
        };
        let writable = !args.read_only;
        let src = match self.on_partition("/var", Follow::All) {
            Ok(p) if matches!(self.sys.stat(&p), Ok(m) if m.kind == Kind::Dir) => p,
            _ => {
                return fail(
                    Step::BindVar,
                    "the root partition has no /var directory",
                    "the root partition holds /var (and the store in /var/lib/genboot); root= may name another file system",
                )
            }
        };
        let var = match self.on_root("/var", Follow::All) {
            Ok(p) if matches!(self.sys.lstat(&p), Ok(m) if m.kind == Kind::Dir) => p,
            _ => {
                return fail(
                    Step::BindVar,
                    "the tree has no /var directory",
                    "the tree is not a system: build it with a /var (any Debian tree has one)",
                )
            }
        };
        if let Err(e) = self.sys.mount(&src, &var, "", MS_BIND, "") {
            return fail(
                Step::BindVar,
                format!(
                    "cannot bind the root partition's /var on the tree's: {}",
                    errno_text(&e)
                ),
                "boot with genboot.debug to see the mount table",
            );
        }
        let init = self.locate_in_tree(g)?;
        let mut said = vec!["/var: the root partition's".to_string()];
        let state = self.bind_package_state(writable)?;
        if !state.is_empty() {
            said.push(format!("{}: the image's (read-only)", state.join(" ")));
        }
        let kept = self.bind_persistent(&t.persist, writable)?;
        if !kept.is_empty() {
            said.push(format!("{}: the root partition's", kept.join(" ")));
        }
        if let Ok(tmp) = self.on_root("/tmp", Follow::NotLast) {
            if matches!(self.sys.lstat(&tmp), Ok(m) if m.kind == Kind::Dir) {
                if let Err(e) =
                    self.sys
                        .mount("tmpfs", &tmp, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
                {
                    return fail(
                        Step::BindVar,
                        format!("cannot mount a tmpfs on /tmp: {}", errno_text(&e)),
                        "the kernel needs tmpfs (CONFIG_TMPFS)",
                    );
                }
                said.push("/tmp: tmpfs".into());
            }
        }
        // What stage 2 may change on the root partition is bound; the rest
        // of it stays as it is (`mount -o remount,rw` undoes this).
        if let Err(e) = self
            .sys
            .mount("", ROOT_PARTITION, "", MS_BIND | MS_REMOUNT | MS_RDONLY, "")
        {
            let msg = format!(
                "warning: cannot make {ROOT_PARTITION} read-only: {}",
                errno_text(&e)
            );
            self.say(&msg);
        }
        said.push(format!("init {}", in_root_text(&init)));
        self.done(Step::BindVar, &said.join("; "));
        Ok(())
    }

    /// The image's package state ([`PACKAGE_STATE`], kept in the image at
    /// [`PACKAGE_STATE_DIR`]) bound read-only on its `/var` path, now on
    /// the root partition: `dpkg -l` then always describes the booted
    /// `/usr`. A path the image lacks is skipped; a missing mount point is
    /// made on a writable root partition (an empty directory or file, as
    /// the image's), else the bind is left out with a warning.
    fn bind_package_state(&mut self, writable: bool) -> Result<Vec<String>, Failure> {
        let mut bound = Vec::new();
        for p in PACKAGE_STATE {
            let rest = p.strip_prefix("/var").unwrap_or(p);
            let in_image = format!("{PACKAGE_STATE_DIR}{rest}");
            let Ok(src) = self.on_root(&in_image, Follow::NotLast) else {
                continue;
            };
            let kind = match self.sys.lstat(&src) {
                Ok(m) if m.kind == Kind::Dir || m.kind == Kind::File => m.kind,
                _ => continue,
            };
            let target = match self.on_root(p, Follow::All) {
                Ok(t) => t,
                Err(e) => {
                    let msg = format!(
                        "warning: {p} cannot be resolved: {}; the image's package state is not bound there",
                        errno_text(&e)
                    );
                    self.say(&msg);
                    continue;
                }
            };
            match self.sys.stat(&target) {
                Ok(m) if m.kind == kind => {}
                Ok(_) => {
                    let msg = format!("warning: {p} on the root partition is not a {} like the image's; the image's package state is not bound there", if kind == Kind::Dir { "directory" } else { "file" });
                    self.say(&msg);
                    continue;
                }
                Err(_) if !writable => {
                    let msg = format!("warning: {p} is missing on the read-only root partition; the image's package state is not bound there");
                    self.say(&msg);
                    continue;
                }
                Err(_) => {
                    let made = if kind == Kind::Dir {
                        self.mkdir_p(&target)
                    } else {
                        let parent = target.rsplit_once('/').map(|(d, _)| d).unwrap_or("/");
                        self.mkdir_p(parent)
                            .and_then(|()| self.sys.write_file(&target, b""))
                    };
                    if let Err(e) = made {
                        let msg = format!(
                            "warning: cannot create {p} on the root partition: {}; the image's package state is not bound there",
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
                    Step::BindVar,
                    format!("cannot bind {in_image} on {p}: {}", errno_text(&e)),
                    "boot with genboot.debug to see the mount table",
                );
            }
            bound.push(p.to_string());
        }
        Ok(bound)
    }

    /// Each persistent path the tree has as a directory (not a link) bound
    /// from the root partition, where it is kept across generations. A
    /// missing one is made on a writable root partition with the tree's
    /// directory's mode; on a read-only one the tree's shows, with a
    /// warning.
    fn bind_persistent(
        &mut self,
        paths: &[String],
        writable: bool,
    ) -> Result<Vec<String>, Failure> {
        let mut bound = Vec::new();
        for p in paths {
            let Ok(at) = self.on_root(p, Follow::NotLast) else {
                continue;
            };
            let mode = match self.sys.lstat(&at) {
                Ok(m) if m.kind == Kind::Dir => m.mode,
                _ => continue,
            };
            let src = match self.on_partition(p, Follow::All) {
                Ok(s) => s,
                Err(e) => {
                    let msg = format!("warning: {p} on the root partition cannot be resolved: {}; the tree's {p} is used", errno_text(&e));
                    self.say(&msg);
                    continue;
                }
            };
            match self.sys.stat(&src) {
                Ok(m) if m.kind == Kind::Dir => {}
                Ok(_) => {
                    let msg = format!("warning: {p} on the root partition is not a directory; the tree's {p} is used");
                    self.say(&msg);
                    continue;
                }
                Err(_) if !writable => {
                    let msg = format!("warning: {p} is missing on the read-only root partition; the tree's {p} is used");
                    self.say(&msg);
                    continue;
                }
                Err(_) => {
                    let parent = src.rsplit_once('/').map(|(d, _)| d).unwrap_or("/");
                    let made = self
                        .mkdir_p(parent)
                        .and_then(|()| self.sys.mkdir(&src, mode));
                    if let Err(e) = made {
                        let msg = format!("warning: cannot create {p} on the root partition: {}; the tree's {p} is used", errno_text(&e));
                        self.say(&msg);
                        continue;
                    }
                }
            }
            if let Err(e) = self.sys.mount(&src, &at, "", MS_BIND, "") {
                return fail(
                    Step::BindVar,
                    format!(
                        "cannot bind the root partition's {p} on the tree's: {}",
                        errno_text(&e)
                    ),
                    "boot with genboot.debug to see the mount table",
                );
            }
            bound.push(p.clone());
        }
        Ok(bound)
    }

    /// `record`, for a tree: `/run/systemd/volatile-root` → the root
    /// partition's `/dev/block/MAJ:MIN`. Returns what to say, or a warning.
    pub(super) fn volatile_root(&mut self) -> Result<String, String> {
        let dev = self
            .sys
            .lstat(ROOT_PARTITION)
            .map_err(|e| format!("cannot stat {ROOT_PARTITION}: {}", errno_text(&e)))?;
        let (major, minor) = major_minor(dev.dev);
        let link = format!("/dev/block/{major}:{minor}");
        mkdir_ok(self.sys, "/run/systemd")
            .and_then(|()| self.sys.symlink(&link, VOLATILE_ROOT))
            .map_err(|e| format!("cannot write {VOLATILE_ROOT}: {}", errno_text(&e)))?;
        Ok(format!("{VOLATILE_ROOT} -> {link}"))
    }
}

/// A machine-id file's content: 32 lower-case hex digits, then a newline
/// or nothing (machine-id(5)).
pub(super) fn valid_machine_id(b: &[u8]) -> bool {
    let (id, rest) = b.split_at(b.len().min(32));
    id.len() == 32
        && id
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        && id.iter().any(|&c| c != b'0')
        && (rest.is_empty() || rest == b"\n")
}

/// A machine-id from 16 random bytes: a version-4 UUID (RFC 4122 variant)
/// in lower-case hex without dashes, as systemd's `id128_make_v4`.
pub(super) fn random_machine_id(r: &[u8]) -> String {
    let mut b = [0u8; 16];
    for (d, s) in b.iter_mut().zip(r) {
        *d = *s;
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    genboot_format::hex(&b)
}
