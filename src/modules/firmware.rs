//! The firmware files the closure's modules name (`.modinfo` `firmware=`),
//! found in the firmware directory as the kernel looks for them, and read
//! without ever leaving that directory.
//!
//! A module tree is not trusted (DKMS and third parties write there), and
//! what it names is read as root and copied into a world-readable initrd
//! and onto the ESP. So a name is refused when it is absolute, holds a
//! `..` component, a space or a control character, or when the file it
//! finds resolves (through symlinks in the firmware tree) to a place
//! outside the firmware directory, or is not a regular file, or is bigger
//! than [`MAX_FIRMWARE_BYTES`]. The kernel's own loader refuses `..` too.
//! With `[initrd] strict_firmware = true` a refused name fails the build;
//! otherwise it is left out of the initrd with a warning.

use super::index::ModuleIndex;
use super::input::{self, InputError, MAX_FIRMWARE_BYTES};
use super::{Closure, ModulesError};
use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// A firmware file for the initrd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    /// As `.modinfo` names it.
    pub name: String,
    /// Where it goes below `/lib/firmware` (possibly `.xz`/`.zst`
    /// compressed, possibly below `<release>/`): the path the kernel asks
    /// for, normalised (no `.` or empty components).
    pub rel: String,
    /// The path it was found at (below the firmware directory).
    pub source: PathBuf,
    /// Its bytes, read once, from the file that was checked.
    pub data: Vec<u8>,
}

/// What was found for the closure.
#[derive(Debug, Default)]
pub struct Found {
    /// Sorted by `rel`.
    pub files: Vec<Firmware>,
    /// (module, firmware name) not in the directory.
    pub missing: Vec<(String, String)>,
    /// Warnings for names that were refused (only without `strict`).
    pub refused: Vec<String>,
    /// The files whose state made a name refused (a symlink out of the
    /// directory, a device): the build cache watches them.
    pub refused_paths: Vec<PathBuf>,
}

/// Find and read the firmware the closure's modules name in `fw_dir`. A
/// refused name fails with [`ModulesError::UnsafeFirmware`] when `strict`,
/// else it becomes a warning in [`Found::refused`].
pub fn firmware(
    index: &ModuleIndex,
    closure: &Closure,
    fw_dir: &Path,
    strict: bool,
) -> Result<Found, ModulesError> {
    let mut out = Found::default();
    let mut seen = BTreeSet::new();
    let dir = FirmwareDir::open(fw_dir);
    for module in &closure.modules {
        let info = &index.modules[module];
        for fw in &info.info.firmware {
            if !seen.insert(fw.clone()) {
                continue;
            }
            let refused = |why: String| ModulesError::UnsafeFirmware {
                module: module.clone(),
                path: index.dir.join(&info.path),
                file: fw.clone(),
                dir: fw_dir.to_path_buf(),
                why,
            };
            let found = match check_name(fw) {
                Err(why) => Err(why),
                Ok(rel) => dir.find(&index.release, &rel).map_err(|(why, path)| {
                    out.refused_paths.push(path);
                    why
                }),
            };
            match found {
                Ok(Some(f)) => out.files.push(Firmware {
                    name: fw.clone(),
                    ..f
                }),
                Ok(None) => out.missing.push((module.clone(), fw.clone())),
                Err(why) if strict => return Err(refused(why)),
                Err(why) => out.refused.push(format!(
                    "{}; the initrd is built without it (remove or fix the module; [initrd] strict_firmware = true makes this an error)",
                    refused(why)
                )),
            }
        }
    }
    out.files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// Where the kernel looks for firmware `name`, first to last:
/// `<dir>/<release>/<name>`, then `<dir>/<name>`, each also compressed.
pub fn firmware_candidates(fw_dir: &Path, release: &str, name: &str) -> Vec<PathBuf> {
    candidates(release, name)
        .into_iter()
        .map(|rel| fw_dir.join(rel))
        .collect()
}

fn candidates(release: &str, rel: &str) -> Vec<String> {
    let mut out = Vec::new();
    for base in [format!("{release}/"), String::new()] {
        for ext in ["", ".zst", ".xz"] {
            out.push(format!("{base}{rel}{ext}"));
        }
    }
    out
}

/// A firmware name as it may be looked up: relative, no `..`, no spaces or
/// control characters (the initrd manifest separates fields by spaces);
/// returned normalised (no `.` or empty components).
pub fn check_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.starts_with('/') {
        return Err("the name is an absolute path".into());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the name holds a space or a control character".into());
    }
    if name.split('/').any(|c| c == "..") {
        return Err("the name holds a \"..\" component".into());
    }
    let parts: Vec<&str> = name
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() {
        return Err("the name names the firmware directory itself".into());
    }
    Ok(parts.join("/"))
}

/// The firmware directory, resolved once.
struct FirmwareDir {
    /// `None` when it does not exist: every name is missing.
    canon: Option<PathBuf>,
    fd: Option<File>,
}

impl FirmwareDir {
    fn open(dir: &Path) -> FirmwareDir {
        let canon = std::fs::canonicalize(dir).ok().filter(|c| c.is_dir());
        let fd = canon.as_ref().and_then(|c| File::open(c).ok());
        FirmwareDir { canon, fd }
    }

    /// The first candidate for `rel` that exists, read; `Ok(None)` when
    /// none does; `Err((why, path))` when the one the kernel would load is
    /// refused.
    fn find(&self, release: &str, rel: &str) -> Result<Option<Firmware>, (String, PathBuf)> {
        let (Some(canon), Some(fd)) = (&self.canon, &self.fd) else {
            return Ok(None);
        };
        for cand in candidates(release, rel) {
            let path = canon.join(&cand);
            // Resolve every symlink; the file must end up inside the directory.
            let real = match std::fs::canonicalize(&path) {
                Ok(r) => r,
                // Missing, or a dangling symlink: the kernel finds nothing either.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err((format!("{} cannot be resolved: {e}", path.display()), path))
                }
            };
            let Ok(inside) = real.strip_prefix(canon) else {
                let why = format!(
                    "{} resolves to {}, outside the firmware directory (genboot copies no file from outside it)",
                    path.display(),
                    real.display()
                );
                return Err((why, path));
            };
            let file = match open_beneath(fd, inside, &real) {
                Ok(f) => f,
                Err(e) => return Err((format!("{} cannot be opened: {e}", path.display()), path)),
            };
            let data = match input::checked(file, MAX_FIRMWARE_BYTES)
                .and_then(|(f, size)| input::read_all(f, size, MAX_FIRMWARE_BYTES))
            {
                Ok(d) => d,
                Err(e) => {
                    let why = match e {
                        InputError::NotRegular(_) | InputError::TooBig { .. } => {
                            format!("{}: {e}", real.display())
                        }
                        InputError::Io(e) => format!("{} cannot be read: {e}", real.display()),
                    };
                    return Err((why, path));
                }
            };
            return Ok(Some(Firmware {
                name: String::new(),
                rel: cand,
                source: path,
                data,
            }));
        }
        Ok(None)
    }
}

/// Open `rel` (free of symlinks: a canonical path's tail) below the
/// directory `dir` with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`:
/// if anything was swapped for a symlink since it was resolved, the open
/// fails instead of following it out. Where the kernel has no `openat2`
/// (before 5.6, or a seccomp filter), `abs` is opened with `O_NOFOLLOW`.
fn open_beneath(dir: &File, rel: &Path, abs: &Path) -> io::Result<File> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::{AsRawFd, FromRawFd};
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    let c = std::ffi::CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path contains NUL"))?;
    match openat2(dir.as_raw_fd(), &c, flags) {
        Ok(fd) => {
            // SAFETY: openat2 returned a new file descriptor that nothing
            // else owns.
            #[allow(unsafe_code)]
            Ok(unsafe { File::from_raw_fd(fd) })
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(abs)
        }
        Err(e) => Err(e),
    }
}

/// `openat2(2)` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`.
#[allow(unsafe_code)]
fn openat2(dir: libc::c_int, path: &std::ffi::CStr, flags: libc::c_int) -> io::Result<libc::c_int> {
    // SAFETY: open_how is plain old data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
    // SAFETY: `path` is a valid NUL-terminated string and `how` a valid
    // open_how of the size passed; the kernel only reads both.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as libc::c_int)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_the_directory_are_refused() {
        for bad in [
            "/etc/shadow",
            "../../../etc/shadow",
            "a/../../b",
            "..",
            "",
            "a b",
            "a\nfirmware /etc/shadow",
            ".",
            "./",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_name("vendor/nic.bin").unwrap(), "vendor/nic.bin");
        assert_eq!(check_name("vendor//./nic.bin").unwrap(), "vendor/nic.bin");
        assert_eq!(check_name("a..b/c").unwrap(), "a..b/c");
    }

    #[test]
    fn symlinks_out_of_the_directory_are_refused_and_inside_followed() {
        let t = tempfile::tempdir().unwrap();
        let fw = t.path().join("fw");
        std::fs::create_dir_all(fw.join("vendor")).unwrap();
        std::fs::write(t.path().join("secret"), b"SECRET").unwrap();
        std::fs::write(fw.join("vendor/real.bin"), b"REAL").unwrap();
        std::os::unix::fs::symlink("real.bin", fw.join("vendor/rel.bin")).unwrap();
        std::os::unix::fs::symlink(fw.join("vendor/real.bin"), fw.join("vendor/abs.bin")).unwrap();
        std::os::unix::fs::symlink(t.path().join("secret"), fw.join("vendor/out.bin")).unwrap();
        std::os::unix::fs::symlink("../../secret", fw.join("vendor/up.bin")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", fw.join("vendor/zero.bin")).unwrap();
        std::os::unix::fs::symlink("nothere", fw.join("vendor/dangling.bin")).unwrap();
        std::os::unix::fs::symlink(t.path(), fw.join("up")).unwrap();
        let d = FirmwareDir::open(&fw);
        let get = |n: &str| d.find("6.1.0-50-amd64", n);
        for ok in ["vendor/real.bin", "vendor/rel.bin", "vendor/abs.bin"] {
            let f = get(ok).unwrap().unwrap();
            assert_eq!(f.data, b"REAL", "{ok}");
            assert_eq!(f.rel, ok);
        }
        for bad in [
            "vendor/out.bin",
            "vendor/up.bin",
            "vendor/zero.bin",
            "up/secret",
        ] {
            let (e, _) = get(bad).unwrap_err();
            assert!(e.contains("outside the firmware directory"), "{bad}: {e}");
        }
        assert_eq!(get("vendor/dangling.bin").unwrap(), None);
        assert_eq!(get("vendor/none.bin").unwrap(), None);
        // A FIFO inside the directory: not a regular file, and no hang.
        let st = std::process::Command::new("mkfifo")
            .arg(fw.join("vendor/fifo.bin"))
            .status()
            .unwrap();
        assert!(st.success());
        let (e, _) = get("vendor/fifo.bin").unwrap_err();
        assert!(e.contains("FIFO, not a regular file"), "{e}");
    }
}
