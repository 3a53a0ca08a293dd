//! The API file systems: mounted first, moved onto the root before the
//! switch; and the initramfs, emptied so its memory is freed.

use super::{banner, errno_text, fail, Boot, Failure, Step, KMSG_INFO};
use crate::inroot::Follow;
use crate::sys::flags::*;
use crate::sys::{Kind, Sys};
use genboot_format::manifest;

impl<S: Sys> Boot<'_, S> {
    pub(super) fn mount_api(&mut self) -> Result<(), Failure> {
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

    pub(super) fn move_api(&mut self) -> Result<(), Failure> {
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
    pub(super) fn free_initramfs(&mut self) {
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
