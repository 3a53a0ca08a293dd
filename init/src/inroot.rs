//! Paths on the root file system, resolved inside it.
//!
//! Before the switch the root is mounted at `/sysroot`, and the kernel
//! resolves an absolute symlink found there against the process root: the
//! initramfs. Stock Debian reaches its init through one (`/sbin -> usr/sbin`,
//! `/usr/sbin/init -> /lib/systemd/systemd`), so `stat("/sysroot/sbin/init")`
//! looks for `/lib/systemd/systemd` in the initramfs and fails; worse, a bind
//! onto `/sysroot/lib/modules` through an absolute link would land in the
//! initramfs. [`resolve_in_root`] walks a path one component at a time
//! through the [`Sys`] seam (`lstat`, `readlink`) the way the kernel would
//! after `chroot(root)`: an absolute link restarts at the root, `..` stops at
//! the root, more than [`MAX_LINKS`] links is `ELOOP`. What it returns holds
//! no symlink, so the kernel follows none when the activator then stats,
//! reads, creates or mounts on it.
//!
//! Why a walk and not `openat2(RESOLVE_IN_ROOT)`: `openat2` gives a file
//! descriptor, and `mount(2)` takes paths (the bind targets would have to go
//! through `/proc/self/fd/N`); it needs Linux 5.6; and a walk through the
//! seam is what the recording fake can check, link by link. `RESOLVE_IN_ROOT`
//! exists to close races with a concurrent writer; in the initramfs nothing
//! else runs while PID 1 walks, and the root is the one being booted.

use crate::sys::{Kind, Sys};
use std::io;

/// At most this many symlinks in one resolution, as the kernel (`MAXSYMLINKS`).
pub const MAX_LINKS: u32 = 40;

/// Whether a symlink in the last component is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// `stat`, `open`, `mount` targets.
    All,
    /// `lstat`, `readlink`: the last component is looked at itself.
    NotLast,
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

/// `root` with the components `inside` appended.
fn host_path(root: &str, inside: &[String]) -> String {
    let mut p = root.trim_end_matches('/').to_string();
    for c in inside {
        p.push('/');
        p.push_str(c);
    }
    if p.is_empty() {
        p.push('/');
    }
    p
}

/// The path on the machine (below `root`, e.g. `/sysroot`) of `path` as the
/// root file system sees it (e.g. `/sbin/init`), with every symlink resolved
/// inside the root. Relative `path`s are taken from the root's `/`.
///
/// Missing components at the end are kept as they are (the caller's `stat`
/// then says `ENOENT`, `mkdir` can create them); a `..` after a missing
/// component is `ENOENT`. A component that is not a directory with more
/// after it is `ENOTDIR`; an empty link target is `ENOENT`; more than
/// [`MAX_LINKS`] links is `ELOOP`; other errors of `lstat`/`readlink` are
/// returned unchanged.
pub fn resolve_in_root<S: Sys>(
    sys: &mut S,
    root: &str,
    path: &str,
    follow: Follow,
) -> io::Result<String> {
    // Components still to walk, the next one last.
    let mut todo: Vec<String> = components(path).rev().map(String::from).collect();
    // Components resolved so far: real directories (or the last entry).
    let mut cur: Vec<String> = Vec::new();
    let mut links = 0u32;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        cur.push(c);
        let here = host_path(root, &cur);
        let last = todo.is_empty();
        match sys.lstat(&here) {
            Ok(m) if m.kind == Kind::Symlink && (!last || follow == Follow::All) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(errno(libc::ELOOP));
                }
                let target = sys.read_link(&here)?;
                if target.is_empty() {
                    return Err(errno(libc::ENOENT));
                }
                cur.pop();
                if target.starts_with('/') {
                    cur.clear();
                }
                todo.extend(components(&target).rev().map(String::from));
            }
            Ok(m) if !last && m.kind != Kind::Dir && m.kind != Kind::Symlink => {
                return Err(errno(libc::ENOTDIR));
            }
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                // Nothing below a missing entry exists: keep the rest as it is.
                while let Some(c) = todo.pop() {
                    match c.as_str() {
                        "." => {}
                        ".." => return Err(errno(libc::ENOENT)),
                        _ => cur.push(c),
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(host_path(root, &cur))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSys;

    const INITRAMFS: u64 = 1;
    const ROOT: u64 = 2;

    /// Stock Debian 12's links, with the root at /sysroot of an initramfs
    /// that has its own /lib and /usr.
    fn debian() -> FakeSys {
        let mut f = FakeSys::new();
        f.exe("/init", b"genboot-init", INITRAMFS);
        f.dir("/lib/modules/6.1.0-50-amd64", INITRAMFS);
        f.dir("/sysroot", ROOT);
        f.link("/sysroot/bin", "usr/bin", ROOT);
        f.link("/sysroot/sbin", "usr/sbin", ROOT);
        f.link("/sysroot/lib", "usr/lib", ROOT);
        f.link("/sysroot/lib64", "usr/lib64", ROOT);
        f.exe("/sysroot/usr/lib/systemd/systemd", b"\x7fELF", ROOT);
        f.link("/sysroot/usr/sbin/init", "/lib/systemd/systemd", ROOT);
        f.exe("/sysroot/usr/bin/dash", b"\x7fELF", ROOT);
        f.link("/sysroot/usr/bin/sh", "dash", ROOT);
        f.dir("/sysroot/usr/lib/modules", ROOT);
        f.dir("/sysroot/var/lib/genboot/store", ROOT);
        f
    }

    fn r(f: &mut FakeSys, path: &str) -> io::Result<String> {
        resolve_in_root(f, "/sysroot", path, Follow::All)
    }

    fn errno_of(r: io::Result<String>) -> Option<i32> {
        r.err().and_then(|e| e.raw_os_error())
    }

    #[test]
    fn the_kernel_resolves_debians_init_against_the_initramfs() {
        // Pins the fake to the kernel's behaviour: this is the bug.
        let mut f = debian();
        let e = f.stat("/sysroot/sbin/init").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        // And /sysroot/lib/modules through an absolute /lib link is the
        // initramfs's own module tree.
        f.tree.remove("/sysroot/lib");
        f.link("/sysroot/lib", "/usr/lib", ROOT);
        f.dir("/usr/lib/modules", INITRAMFS);
        assert_eq!(f.stat("/sysroot/lib/modules").unwrap().dev, INITRAMFS);
    }

    #[test]
    fn debians_init_and_shell_resolve_inside_the_root() {
        let mut f = debian();
        assert_eq!(
            r(&mut f, "/sbin/init").unwrap(),
            "/sysroot/usr/lib/systemd/systemd"
        );
        assert_eq!(r(&mut f, "/bin/sh").unwrap(), "/sysroot/usr/bin/dash");
        assert_eq!(
            r(&mut f, "/lib/modules").unwrap(),
            "/sysroot/usr/lib/modules"
        );
        assert_eq!(
            f.stat("/sysroot/usr/lib/systemd/systemd").unwrap().dev,
            ROOT
        );
    }

    #[test]
    fn an_absolute_lib_link_stays_in_the_root() {
        let mut f = debian();
        f.tree.remove("/sysroot/lib");
        f.link("/sysroot/lib", "/usr/lib", ROOT);
        assert_eq!(
            r(&mut f, "/lib/modules").unwrap(),
            "/sysroot/usr/lib/modules"
        );
        // Missing at the end: kept for mkdir, not resolved in the initramfs.
        assert_eq!(
            r(&mut f, "/lib/firmware").unwrap(),
            "/sysroot/usr/lib/firmware"
        );
    }

    #[test]
    fn not_last_leaves_the_final_link_alone() {
        let mut f = debian();
        assert_eq!(
            resolve_in_root(&mut f, "/sysroot", "/sbin/init", Follow::NotLast).unwrap(),
            "/sysroot/usr/sbin/init"
        );
    }

    #[test]
    fn dot_dot_stops_at_the_root() {
        let mut f = debian();
        f.link("/sysroot/usr/sbin/evil", "../../../../../../init", ROOT);
        f.exe("/sysroot/init", b"root's own", ROOT);
        assert_eq!(r(&mut f, "/sbin/evil").unwrap(), "/sysroot/init");
        f.link("/sysroot/etc/x", "/../../..//etc/shadow", ROOT);
        assert_eq!(r(&mut f, "/etc/x").unwrap(), "/sysroot/etc/shadow");
        assert_eq!(r(&mut f, "/../../init").unwrap(), "/sysroot/init");
        // A hostile /sbin/init -> ../../../../etc/x: /etc/x in the root.
        f.tree.remove("/sysroot/usr/sbin/init");
        f.link("/sysroot/usr/sbin/init", "../../../../etc/passwd", ROOT);
        f.file("/sysroot/etc/passwd", b"root:x:0:0", ROOT);
        f.file("/etc/passwd", b"initramfs", INITRAMFS);
        assert_eq!(r(&mut f, "/sbin/init").unwrap(), "/sysroot/etc/passwd");
    }

    #[test]
    fn loops_and_long_chains_are_eloop() {
        let mut f = debian();
        f.link("/sysroot/a", "b", ROOT);
        f.link("/sysroot/b", "/a", ROOT);
        assert_eq!(errno_of(r(&mut f, "/a")), Some(libc::ELOOP));
        f.link("/sysroot/self", ".", ROOT);
        f.link("/sysroot/up", "self/up", ROOT);
        assert_eq!(errno_of(r(&mut f, "/up/x")), Some(libc::ELOOP));
        // 40 links are fine, 41 are not.
        for i in 0..41 {
            f.link(&format!("/sysroot/chain/{i}"), &format!("{}", i + 1), ROOT);
        }
        f.file("/sysroot/chain/41", b"end", ROOT);
        assert_eq!(r(&mut f, "/chain/1").unwrap(), "/sysroot/chain/41");
        assert_eq!(errno_of(r(&mut f, "/chain/0")), Some(libc::ELOOP));
        // A loop in the last component is not walked without Follow::All.
        assert_eq!(
            resolve_in_root(&mut f, "/sysroot", "/a", Follow::NotLast).unwrap(),
            "/sysroot/a"
        );
    }

    #[test]
    fn files_in_the_middle_missing_parts_and_empty_links() {
        let mut f = debian();
        assert_eq!(errno_of(r(&mut f, "/usr/bin/dash/x")), Some(libc::ENOTDIR));
        assert_eq!(r(&mut f, "/no/such/x").unwrap(), "/sysroot/no/such/x");
        assert_eq!(errno_of(r(&mut f, "/no/../x")), Some(libc::ENOENT));
        f.link("/sysroot/empty", "", ROOT);
        assert_eq!(errno_of(r(&mut f, "/empty")), Some(libc::ENOENT));
        assert_eq!(r(&mut f, "/").unwrap(), "/sysroot");
        assert_eq!(r(&mut f, "").unwrap(), "/sysroot");
    }

    #[test]
    fn after_the_switch_the_root_is_slash() {
        let mut f = FakeSys::new();
        f.link("/sbin", "usr/sbin", ROOT);
        f.link("/usr/sbin/init", "/lib/systemd/systemd", ROOT);
        f.link("/lib", "usr/lib", ROOT);
        f.exe("/usr/lib/systemd/systemd", b"\x7fELF", ROOT);
        assert_eq!(
            resolve_in_root(&mut f, "/", "/sbin/init", Follow::All).unwrap(),
            "/usr/lib/systemd/systemd"
        );
        assert_eq!(resolve_in_root(&mut f, "/", "/", Follow::All).unwrap(), "/");
    }
}
