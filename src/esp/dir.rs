//! The mounted-directory backend: an ESP mounted somewhere in the file
//! system (`/boot/efi`, `/efi`, `/boot`), written with ordinary file calls,
//! `fsync` and `rename(2)`.
//!
//! Only a FAT (vfat/msdos) mount point is accepted, so a typo never turns
//! `/boot` on the root file system into a "ESP"; tests and tools that want
//! a plain directory say so ([`MountCheck::AnyDir`]).

use super::{Esp, EspError, Small, Space, WriteStats};
use crate::host::mounts::{is_fat, mount_of, mounts, Mount};
use crate::modules::input::{self, InputError};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Whether [`DirEsp::open`] insists on a FAT mount point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountCheck {
    /// The directory must be the mount point of a FAT file system.
    FatMountPoint,
    /// Any directory (tests, tools).
    AnyDir,
}

pub struct DirEsp {
    root: PathBuf,
    stats: WriteStats,
}

/// An ESP directory must be the mount point of a FAT file system.
pub(crate) fn check_mount(mounts: &[Mount], path: &Path, canon: &Path) -> Result<(), EspError> {
    let m = mount_of(mounts, canon).cloned().unwrap_or(Mount {
        point: PathBuf::from("/"),
        fstype: "unknown".into(),
        ..Mount::default()
    });
    if !is_fat(&m.fstype) {
        return Err(EspError::NotFat {
            path: path.to_path_buf(),
            fstype: m.fstype,
        });
    }
    if m.point != canon {
        return Err(EspError::NotMountPoint {
            path: path.to_path_buf(),
            mount: m.point.display().to_string(),
        });
    }
    Ok(())
}

impl DirEsp {
    /// Open the ESP mounted at `path`: the mount point of a FAT file
    /// system (or, with [`MountCheck::AnyDir`], any directory).
    pub fn open(path: &Path, check: MountCheck) -> Result<DirEsp, EspError> {
        if !path.is_dir() {
            return Err(EspError::NoSuchDir {
                path: path.to_path_buf(),
            });
        }
        let canon = fs::canonicalize(path).map_err(|cause| EspError::Input {
            path: path.to_path_buf(),
            cause,
        })?;
        if check == MountCheck::FatMountPoint {
            check_mount(&mounts(), path, &canon)?;
        }
        Ok(DirEsp {
            root: canon,
            stats: WriteStats::default(),
        })
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn io(&self, op: &'static str, rel: &str) -> impl FnOnce(io::Error) -> EspError + '_ {
        let path = rel.to_string();
        move |cause| EspError::Io {
            op,
            path,
            esp: self.root.display().to_string(),
            cause,
        }
    }

    /// Refuse to write below a directory of `rel` that is a symlink: a
    /// FAT mount has none, and one planted in a plain directory would send
    /// the write out of the ESP.
    fn no_symlinked_dirs(&self, rel: &str) -> Result<(), EspError> {
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        let mut at = self.root.clone();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            at.push(part);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.io("write below", rel)(io::Error::other(format!(
                        "{} is a symbolic link; genboot follows no symlink on the ESP",
                        at.display()
                    ))))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(self.io("stat", rel)(e)),
            }
        }
        Ok(())
    }

    fn sync_dir_of(&self, rel: &str) -> Result<(), EspError> {
        let dir = self
            .p(rel)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(self.io("sync directory of", rel))
    }
}

impl Esp for DirEsp {
    fn mount_point(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>, EspError> {
        match fs::read(self.p(path)) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("read", path)(e)),
        }
    }

    fn read_small(&mut self, path: &str, cap: u64) -> Result<Option<Small>, EspError> {
        // No symlink is followed, nothing but a regular file is read, and
        // never more than `cap` bytes (a FAT mount has no symlinks or
        // devices; a plain directory used as an ESP may).
        match input::read_regular(&self.p(path), false, cap) {
            Ok(d) => Ok(Some(Small::Data(d))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(InputError::Io(e)) => Err(self.io("read", path)(e)),
            Err(InputError::TooBig { size, cap }) => {
                Ok(Some(Small::Skipped(super::too_big(size, cap))))
            }
            Err(e) => Ok(Some(Small::Skipped(e.to_string()))),
        }
    }

    fn digest(&mut self, path: &str) -> Result<Option<[u8; 32]>, EspError> {
        use sha2::Digest;
        let (mut f, _) = match input::open_regular(&self.p(path), false, u64::MAX) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(InputError::Io(e)) => return Err(self.io("read", path)(e)),
            Err(e) => return Err(self.io("read", path)(io::Error::other(e.to_string()))),
        };
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(self.io("read", path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(Some(h.finalize().into()))
    }

    fn size(&mut self, path: &str) -> Result<Option<u64>, EspError> {
        match fs::metadata(self.p(path)) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("stat", path)(e)),
        }
    }

    fn list(&mut self, dir: &str) -> Result<Vec<String>, EspError> {
        let rd = match fs::read_dir(self.p(dir)) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io("list", dir)(e)),
        };
        let mut out = Vec::new();
        for item in rd {
            let item = item.map_err(self.io("list", dir))?;
            if item.file_type().map_err(self.io("list", dir))?.is_file() {
                if let Some(n) = item.file_name().to_str() {
                    out.push(n.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn is_dir(&mut self, dir: &str) -> Result<bool, EspError> {
        match fs::symlink_metadata(self.p(dir)) {
            Ok(m) if m.is_dir() => Ok(true),
            Ok(m) if m.file_type().is_symlink() => Err(self.io("create directory", dir)(
                io::Error::other("it is a symbolic link; genboot follows no symlink on the ESP"),
            )),
            _ => Ok(false),
        }
    }

    fn create_dir(&mut self, dir: &str) -> Result<(), EspError> {
        fs::create_dir(self.p(dir)).map_err(self.io("create directory", dir))?;
        self.sync_dir_of(dir)?;
        self.stats.files_touched += 1;
        Ok(())
    }

    fn write_file(&mut self, path: &str, data: &mut dyn Read) -> Result<(), EspError> {
        // The installer writes only temporary names, which are predictable:
        // remove whatever sits there (a leftover, or a symlink planted to
        // send the write elsewhere; removing a symlink removes the link),
        // then create the file anew, never following a symlink.
        self.no_symlinked_dirs(path)?;
        let p = self.p(path);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io("remove the leftover", path)(e)),
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&p)
            .map_err(self.io("create", path))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = data
                .read(&mut buf)
                .map_err(self.io("read source for", path))?;
            if n == 0 {
                break;
            }
            f.write_all(&buf[..n]).map_err(self.io("write", path))?;
            self.stats.bytes_written += n as u64;
        }
        f.sync_all().map_err(self.io("sync", path))?;
        self.stats.files_touched += 1;
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), EspError> {
        self.no_symlinked_dirs(from)?;
        self.no_symlinked_dirs(to)?;
        fs::rename(self.p(from), self.p(to)).map_err(self.io("rename", from))?;
        self.sync_dir_of(to)?;
        self.stats.files_touched += 1;
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<(), EspError> {
        self.no_symlinked_dirs(path)?;
        match fs::remove_file(self.p(path)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io("remove", path)(e)),
        }
        self.sync_dir_of(path)?;
        self.stats.files_touched += 1;
        Ok(())
    }

    fn space(&mut self) -> Result<Space, EspError> {
        let (bsize, bavail) = statvfs(&self.root).map_err(self.io("get free space of", "."))?;
        Ok(Space {
            cluster_size: bsize.max(1),
            free_clusters: bavail,
        })
    }

    fn stats(&self) -> WriteStats {
        self.stats
    }

    fn close(self: Box<Self>) -> Result<WriteStats, EspError> {
        Ok(self.stats)
    }
}

/// Block size and blocks available to unprivileged users.
#[allow(unsafe_code)]
fn statvfs(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path contains NUL"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated string and `st` points to
    // writable memory of the right size; statvfs fills it on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    Ok((st.f_frsize, st.f_bavail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hint::Hint;

    #[test]
    fn esp_must_be_a_fat_mount_point() {
        let m = crate::host::mounts::parse_mountinfo(
            "36 35 98:0 / /boot/efi rw - vfat /dev/sda1 rw\n1 0 8:1 / / rw - ext4 /dev/vda rw\n",
        );
        let p = Path::new("/boot/efi");
        assert!(check_mount(&m, p, p).is_ok());
        let sub = Path::new("/boot/efi/EFI");
        let e = check_mount(&m, sub, sub).unwrap_err().with_hint();
        assert!(
            e.contains("not a mount point") && e.contains("--esp /boot/efi"),
            "{e}"
        );
        let boot = Path::new("/boot");
        let e = check_mount(&m, boot, boot).unwrap_err().with_hint();
        assert!(e.contains("ext4 file system, not FAT"), "{e}");
    }
}
