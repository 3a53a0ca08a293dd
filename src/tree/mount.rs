//! Mount a tree object read-only (`genboot mount GEN DIR`): the view of a
//! generation that is not booted, exactly as genboot-init shows it at boot.
//!
//! 1. `root.erofs` is mounted read-only on a private mount point
//!    `/run/genboot/mnt/<hash>-<pid>-<n>/meta`, directly from the file
//!    (kernels with `EROFS_FS_BACKED_BY_FILE`, ≥ 6.12); when the kernel
//!    says `ENOTBLK` (6.1, or an image on tmpfs) through a loop device
//!    attached read-only with autoclear (`LOOP_CONFIGURE`), which goes away
//!    with the mount.
//! 2. `DIR` becomes a read-only overlay
//!    `metacopy=on,redirect_dir=on,lowerdir=META::OBJECTS` (objects a
//!    data-only layer, ≥ 6.5); on `EINVAL` the legacy
//!    `lowerdir=META:OBJECTS` (the image's opaque root and `00`…`ff`
//!    whiteouts hide the object directories).
//! 3. `/run/genboot/mnt/<id>/target` records `DIR`, so [`umount_tree`]
//!    finds and removes the private mount and its directory, and
//!    `…/object` the tree object, so `gc` keeps a mounted tree and its
//!    objects ([`mounted_trees`]).
//!
//! Every mount goes through [`MountSys`]; the unit tests drive the
//! fallbacks with a recording fake.

use super::objects::Objects;
use super::{sys, TreeError, IMAGE_FILE};
use crate::store::{Store, StorePath};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the private image mounts live.
pub const RUN_DIR: &str = "/run/genboot/mnt";

/// The mount calls, as a seam.
pub trait MountSys {
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fstype: &str,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()>;
    fn umount(&self, target: &Path) -> io::Result<()>;
    /// Attach `file` to a read-only loop device with autoclear and mount
    /// that device at `target`; the device stays open until the mount
    /// holds it (autoclear detaches it at its last close). Returns the
    /// device.
    fn mount_loop(
        &self,
        file: &Path,
        target: &Path,
        fstype: &str,
        flags: libc::c_ulong,
    ) -> io::Result<PathBuf>;
}

/// The real system calls.
pub struct RealSys;

impl MountSys for RealSys {
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fstype: &str,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        sys::mount(source, target, fstype, flags, data)
    }
    fn umount(&self, target: &Path) -> io::Result<()> {
        sys::umount(target, 0)
    }
    fn mount_loop(
        &self,
        file: &Path,
        target: &Path,
        fstype: &str,
        flags: libc::c_ulong,
    ) -> io::Result<PathBuf> {
        let (dev, held) = sys::loop_attach(file)?;
        let mounted = sys::mount(&dev, target, fstype, flags, None);
        drop(held);
        mounted.map(|()| dev)
    }
}

/// A mounted tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    pub dir: PathBuf,
    /// The private EROFS mount.
    pub meta: PathBuf,
    /// The loop device, when one was needed.
    pub loop_device: Option<PathBuf>,
    /// The legacy `META:OBJECTS` form was used.
    pub legacy: bool,
}

/// Escape a path for an overlay `lowerdir=` list (`\`, `:` and `,`).
fn ovl_escape(p: &Path) -> String {
    let mut s = String::new();
    for c in p.to_string_lossy().chars() {
        if matches!(c, '\\' | ':' | ',') {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

static MNT: AtomicU64 = AtomicU64::new(0);

/// Mount tree `object` read-only at `dir` (an existing directory).
pub fn mount_tree(store: &Store, object: &StorePath, dir: &Path) -> Result<Mounted, TreeError> {
    mount_tree_with(&RealSys, Path::new(RUN_DIR), store, object, dir)
}

/// [`mount_tree`] with the mount calls and the private directory given.
pub fn mount_tree_with(
    s: &dyn MountSys,
    run_dir: &Path,
    store: &Store,
    object: &StorePath,
    dir: &Path,
) -> Result<Mounted, TreeError> {
    let image = store.path(object).join(IMAGE_FILE);
    if !image.is_file() || !super::is_tree(store, object) {
        return Err(TreeError::NotATree {
            object: object.base_name(),
            why: format!("it has no {IMAGE_FILE} and v2 manifest"),
        });
    }
    let objects = Objects::of(store).dir;
    let dir = fs::canonicalize(dir).map_err(super::io_err("find the mount point", dir))?;
    if !dir.is_dir() {
        return Err(TreeError::Mount {
            op: "mount a tree on",
            target: dir,
            cause: io::Error::from_raw_os_error(libc::ENOTDIR),
            hint: "give an existing, empty directory".into(),
        });
    }
    let id = format!(
        "{}-{}-{}",
        object.hash,
        std::process::id(),
        MNT.fetch_add(1, Ordering::Relaxed)
    );
    let priv_dir = run_dir.join(&id);
    let meta = priv_dir.join("meta");
    fs::create_dir_all(&meta).map_err(super::io_err("create", &meta))?;
    let cleanup = |mounted: bool| {
        if mounted {
            let _ = s.umount(&meta);
        }
        let _ = fs::remove_dir_all(&priv_dir);
    };
    let mut loop_device = None;
    let erofs_flags = libc::MS_RDONLY as libc::c_ulong;
    if let Err(e) = s.mount(&image, &meta, "erofs", erofs_flags, None) {
        let fallback = e.raw_os_error() == Some(libc::ENOTBLK);
        let attempt = if fallback {
            s.mount_loop(&image, &meta, "erofs", erofs_flags)
                .map(|dev| loop_device = Some(dev))
        } else {
            Err(e)
        };
        if let Err(cause) = attempt {
            cleanup(false);
            return Err(TreeError::Mount {
                op: "mount the metadata image",
                target: image,
                cause,
                hint: "the kernel needs EROFS (modprobe erofs) and, before 6.12, loop devices (modprobe loop)".into(),
            });
        }
    }
    let opts = |sep: &str| {
        format!(
            "metacopy=on,redirect_dir=on,lowerdir={}{sep}{}",
            ovl_escape(&meta),
            ovl_escape(&objects)
        )
    };
    let ovl_flags = (libc::MS_RDONLY | libc::MS_NODEV | libc::MS_NOSUID) as libc::c_ulong;
    let mut legacy = false;
    let mut r = s.mount(
        Path::new("overlay"),
        &dir,
        "overlay",
        ovl_flags,
        Some(&opts("::")),
    );
    if matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EINVAL)) {
        legacy = true;
        r = s.mount(
            Path::new("overlay"),
            &dir,
            "overlay",
            ovl_flags,
            Some(&opts(":")),
        );
    }
    if let Err(cause) = r {
        cleanup(true);
        return Err(TreeError::Mount {
            op: "mount the overlay of the tree on",
            target: dir,
            cause,
            hint: "the kernel needs overlayfs with metacopy and redirect_dir (modprobe overlay)"
                .into(),
        });
    }
    let record = priv_dir.join("target");
    let written = fs::write(
        priv_dir.join("object"),
        store.path(object).as_os_str().as_encoded_bytes(),
    )
    .and_then(|_| fs::write(&record, dir.as_os_str().as_encoded_bytes()));
    if let Err(e) = written {
        let _ = s.umount(&dir);
        cleanup(true);
        return Err(super::io_err("write", &record)(e));
    }
    Ok(Mounted {
        dir,
        meta,
        loop_device,
        legacy,
    })
}

/// Unmount a tree [`mount_tree`] mounted at `dir`, and its private mount.
pub fn umount_tree(dir: &Path) -> Result<(), TreeError> {
    umount_tree_with(&RealSys, Path::new(RUN_DIR), dir)
}

/// [`umount_tree`] with the calls and the private directory given.
pub fn umount_tree_with(s: &dyn MountSys, run_dir: &Path, dir: &Path) -> Result<(), TreeError> {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut found = None;
    if let Ok(rd) = fs::read_dir(run_dir) {
        for e in rd.flatten() {
            if let Ok(t) = fs::read(e.path().join("target")) {
                if t == dir.as_os_str().as_encoded_bytes() {
                    found = Some(e.path());
                    break;
                }
            }
        }
    }
    let Some(priv_dir) = found else {
        return Err(TreeError::Mount {
            op: "unmount",
            target: dir,
            cause: io::Error::from_raw_os_error(libc::EINVAL),
            hint: format!(
                "it is not a tree genboot mounted (nothing in {} names it)",
                run_dir.display()
            ),
        });
    };
    let busy_hint = |what: &Path| {
        format!(
            "something still uses {} (a shell's working directory, an open file): close it and retry",
            what.display()
        )
    };
    // The tree, then the private metadata mount below it.
    for target in [dir.clone(), priv_dir.join("meta")] {
        match s.umount(&target) {
            Ok(()) => {}
            // Already gone (e.g. unmounted by hand): clean up the rest.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(cause) => {
                return Err(TreeError::Mount {
                    op: "unmount",
                    hint: busy_hint(&target),
                    target,
                    cause,
                })
            }
        }
    }
    fs::remove_dir_all(&priv_dir).map_err(super::io_err("remove", &priv_dir))
}

/// The tree objects of `store` that [`mount_tree`] has mounted (as
/// recorded in `run_dir`, [`RUN_DIR`] on a real system).
pub fn mounted_trees(run_dir: &Path, store: &Store) -> Vec<StorePath> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(run_dir) else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(t) = fs::read(e.path().join("object")) else {
            continue;
        };
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(&t));
        if path.parent() != Some(store.dir.as_path()) {
            continue;
        }
        if let Some(sp) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(StorePath::parse)
        {
            out.push(sp);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Mount points at or below `dir` (from `/proc/self/mountinfo`), sorted.
pub fn mounts_below(dir: &Path) -> Result<Vec<PathBuf>, TreeError> {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(super::io_err("read", Path::new("/proc/self/mountinfo")))?;
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(&dir))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;
    use std::cell::RefCell;

    /// A recording fake for the unit tests: answers each call from a script.
    #[derive(Default)]
    pub struct FakeSys {
        pub calls: RefCell<Vec<String>>,
        /// Errors to return, by call prefix (`"mount erofs"`, `"mount overlay ::"`, …).
        pub fail: Vec<(&'static str, i32)>,
    }

    impl FakeSys {
        fn answer(&self, call: String) -> io::Result<()> {
            let err = self
                .fail
                .iter()
                .find(|(p, _)| call.starts_with(p))
                .map(|(_, e)| *e);
            self.calls.borrow_mut().push(call);
            match err {
                Some(e) => Err(io::Error::from_raw_os_error(e)),
                None => Ok(()),
            }
        }
    }

    impl MountSys for FakeSys {
        fn mount(
            &self,
            source: &Path,
            target: &Path,
            fstype: &str,
            flags: libc::c_ulong,
            data: Option<&str>,
        ) -> io::Result<()> {
            let sep = match data {
                Some(d) if d.contains("::") => " ::",
                Some(_) => " :",
                None => "",
            };
            self.answer(format!(
                "mount {fstype}{sep} {} {} ro={} {}",
                source.display(),
                target.display(),
                flags & libc::MS_RDONLY as libc::c_ulong != 0,
                data.unwrap_or("-")
            ))
        }
        fn umount(&self, target: &Path) -> io::Result<()> {
            self.answer(format!("umount {}", target.display()))
        }
        fn mount_loop(
            &self,
            file: &Path,
            target: &Path,
            fstype: &str,
            flags: libc::c_ulong,
        ) -> io::Result<PathBuf> {
            self.answer(format!("loop {}", file.display()))?;
            let dev = PathBuf::from("/dev/loop7");
            self.mount(&dev, target, fstype, flags, None).map(|()| dev)
        }
    }

    fn fixture() -> (tempfile::TempDir, Store, StorePath, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(&State::open(t.path()).unwrap()).unwrap();
        let sp = StorePath {
            hash: crate::store::StoreHash::parse("0123456789abcdef0123456789abcdef").unwrap(),
            name: "rootfs-x".into(),
        };
        let obj = store.path(&sp);
        fs::create_dir_all(&obj).unwrap();
        fs::write(obj.join(IMAGE_FILE), b"img").unwrap();
        fs::write(
            obj.join(super::super::MANIFEST_FILE),
            format!("{}\n", super::super::manifest::HEADER),
        )
        .unwrap();
        let dir = t.path().join("mnt");
        fs::create_dir(&dir).unwrap();
        let run = t.path().join("run");
        (t, store, sp, dir, run)
    }

    fn calls(f: &FakeSys) -> Vec<String> {
        f.calls.borrow().clone()
    }

    #[test]
    fn file_mount_then_data_only_overlay() {
        let (_t, store, sp, dir, run) = fixture();
        let f = FakeSys::default();
        let m = mount_tree_with(&f, &run, &store, &sp, &dir).unwrap();
        assert!(!m.legacy && m.loop_device.is_none());
        let c = calls(&f);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(
            c[0].starts_with("mount erofs ")
                && c[0].contains("root.erofs")
                && c[0].contains("ro=true"),
            "{c:?}"
        );
        assert!(
            c[1].starts_with("mount overlay :: overlay ") && c[1].contains("ro=true"),
            "{c:?}"
        );
        assert!(
            c[1].contains("metacopy=on,redirect_dir=on,lowerdir="),
            "{c:?}"
        );
        assert!(
            c[1].ends_with(&format!("::{}", store.dir.join("objects").display())),
            "{c:?}"
        );
        // gc sees what is mounted (in this store only).
        assert_eq!(mounted_trees(&run, &store), vec![sp.clone()]);
        let other = Store::open(&State::open(&dir.join("other")).unwrap()).unwrap();
        assert!(mounted_trees(&run, &other).is_empty());
        // Unmount finds the private mount through the record.
        umount_tree_with(&f, &run, &dir).unwrap();
        assert!(mounted_trees(&run, &store).is_empty());
        let c = calls(&f);
        assert_eq!(
            c[2],
            format!("umount {}", fs::canonicalize(&dir).unwrap().display())
        );
        assert_eq!(c[3], format!("umount {}", m.meta.display()));
        assert_eq!(
            fs::read_dir(&run).unwrap().count(),
            0,
            "private directory removed"
        );
    }

    #[test]
    fn enotblk_falls_back_to_a_loop_device_and_einval_to_the_legacy_form() {
        let (_t, store, sp, dir, run) = fixture();
        let f = Script {
            inner: FakeSys::default(),
        };
        let m = mount_tree_with(&f, &run, &store, &sp, &dir).unwrap();
        assert_eq!(m.loop_device, Some(PathBuf::from("/dev/loop7")));
        assert!(m.legacy);
        let c = calls(&f.inner);
        assert_eq!(c.len(), 5, "{c:?}");
        assert!(c[0].starts_with("mount erofs ") && c[0].contains("root.erofs"));
        assert!(c[1].starts_with("loop ") && c[1].ends_with("root.erofs"));
        assert!(c[2].starts_with("mount erofs /dev/loop7 "));
        assert!(c[3].starts_with("mount overlay :: "));
        assert!(c[4].starts_with("mount overlay : "));
        assert!(!c[4].contains("::"));
    }

    /// ENOTBLK for the file mount, EINVAL for `::`.
    struct Script {
        inner: FakeSys,
    }
    impl MountSys for Script {
        fn mount(
            &self,
            source: &Path,
            target: &Path,
            fstype: &str,
            flags: libc::c_ulong,
            data: Option<&str>,
        ) -> io::Result<()> {
            self.inner.mount(source, target, fstype, flags, data)?;
            if fstype == "erofs" && source.ends_with("root.erofs") {
                return Err(io::Error::from_raw_os_error(libc::ENOTBLK));
            }
            if data.is_some_and(|d| d.contains("::")) {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            Ok(())
        }
        fn umount(&self, target: &Path) -> io::Result<()> {
            self.inner.umount(target)
        }
        fn mount_loop(
            &self,
            file: &Path,
            target: &Path,
            fstype: &str,
            flags: libc::c_ulong,
        ) -> io::Result<PathBuf> {
            self.inner.answer(format!("loop {}", file.display()))?;
            let dev = PathBuf::from("/dev/loop7");
            self.mount(&dev, target, fstype, flags, None).map(|()| dev)
        }
    }

    #[test]
    fn a_failed_overlay_leaves_nothing_mounted() {
        let (_t, store, sp, dir, run) = fixture();
        let f = FakeSys {
            fail: vec![("mount overlay", libc::EPERM)],
            ..Default::default()
        };
        let e = mount_tree_with(&f, &run, &store, &sp, &dir).unwrap_err();
        assert!(e.to_string().contains("overlay"), "{e}");
        let c = calls(&f);
        assert!(
            c.last().unwrap().starts_with("umount ") && c.last().unwrap().ends_with("/meta"),
            "{c:?}"
        );
        assert_eq!(fs::read_dir(&run).unwrap().count(), 0);
    }

    #[test]
    fn unmounting_what_genboot_did_not_mount_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let f = FakeSys::default();
        let e = umount_tree_with(&f, &t.path().join("run"), t.path()).unwrap_err();
        let e = crate::hint::Hint::with_hint(&e);
        assert!(e.contains("not a tree genboot mounted"), "{e}");
        assert!(calls(&f).is_empty());
    }

    #[test]
    fn lowerdir_paths_are_escaped_and_mountinfo_unescaped() {
        assert_eq!(ovl_escape(Path::new("/a:b,c\\d")), "/a\\:b\\,c\\\\d");
        assert_eq!(unescape_mountinfo("/mnt/with\\040space"), "/mnt/with space");
    }
}
