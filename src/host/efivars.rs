//! systemd-boot's EFI variables (the Boot Loader Interface), as efivarfs
//! shows them below `--root`: `LoaderBootCountPath` (which entry file
//! systemd-boot booted, counter included), `LoaderEntryOneShot` (the
//! entry to boot next time only), `LoaderEntryDefault` (the default the
//! menu's `d` key set) and `LoaderDevicePartUUID` (the ESP it started from).
//!
//! An efivarfs file is 4 attribute bytes followed by the value; strings
//! are UTF-16LE with a terminating NUL. efivarfs makes existing variables
//! immutable (`chattr +i`); the flag is cleared before a write, as systemd
//! does, and a failure to clear it is an error, not ignored.

use crate::fsutil::IoError;
use crate::state::{State, StateError};
use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The systemd-boot vendor GUID of `LoaderEntryOneShot` and friends.
pub const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// Where efivarfs is mounted.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// Non-volatile, boot-service and runtime access.
const ATTRIBUTES: [u8; 4] = [0x07, 0, 0, 0];
/// `FS_IMMUTABLE_FL` of `linux/fs.h`.
const FS_IMMUTABLE_FL: libc::c_int = 0x10;

/// The efivarfs directory below `--root`, resolved inside it.
pub fn dir(state: &State) -> Result<PathBuf, StateError> {
    state.in_root(Path::new(EFIVARS))
}

/// `<dir>/<name>-<systemd-boot's GUID>`.
pub fn var(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-{LOADER_GUID}"))
}

/// A UTF-16LE, NUL-terminated EFI string variable's value (after the
/// 4 attribute bytes); `None` when it is missing or not such a string.
pub fn read_string(path: &Path) -> Option<String> {
    let data = fs::read(path).ok()?;
    let units: Vec<u16> = data
        .get(4..)?
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

/// The entry file systemd-boot booted (`genboot-3+1-2.conf`), from
/// `LoaderBootCountPath` (`\loader\entries\genboot-3+1-2.conf`).
pub fn booted_entry_file(dir: &Path) -> Option<String> {
    let p = read_string(&var(dir, "LoaderBootCountPath"))?;
    p.replace('\\', "/").rsplit('/').next().map(str::to_string)
}

/// The PARTUUID of the ESP systemd-boot was started from, lower-cased
/// (`LoaderDevicePartUUID`); `None` when it is missing or not a UUID (the
/// firmware's bytes are checked, not trusted).
pub fn loader_device_part_uuid(dir: &Path) -> Option<String> {
    let v = read_string(&var(dir, "LoaderDevicePartUUID"))?.to_ascii_lowercase();
    let shape = v.len() == 36
        && v.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    shape.then_some(v)
}

/// The bytes of a string variable: attributes, UTF-16LE, NUL.
fn encode_string(value: &str) -> Vec<u8> {
    let mut data = ATTRIBUTES.to_vec();
    for u in value.encode_utf16().chain([0]) {
        data.extend_from_slice(&u.to_le_bytes());
    }
    data
}

/// Set the string variable `name` to `value`: the immutable flag of an
/// existing one cleared first, then one write (efivarfs takes the variable
/// in one go), never through a link.
pub fn write_string(dir: &Path, name: &str, value: &str) -> Result<(), IoError> {
    write_raw(&var(dir, name), &encode_string(value))
}

/// Write the efivarfs file `path` (attribute bytes, then the value): the
/// immutable flag of an existing one cleared first, then one write, never
/// through a link.
pub fn write_raw(path: &Path, data: &[u8]) -> Result<(), IoError> {
    let path = path.to_path_buf();
    if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
        make_mutable(&path).map_err(IoError::at(
            "make writable (clear the immutable flag of)",
            &path,
        ))?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .and_then(|mut f| f.write_all(data))
        .map_err(IoError::at("write", &path))
}

/// What to do with the inode flags `get` read: `Ok(None)` when nothing is
/// to change (not immutable, or a file system without inode flags, where
/// nothing can be immutable), `Ok(Some(flags))` to set, `Err` when the
/// flags could not be read for another reason.
fn without_immutable(get: io::Result<libc::c_int>) -> io::Result<Option<libc::c_int>> {
    match get {
        Ok(flags) if flags & FS_IMMUTABLE_FL != 0 => Ok(Some(flags & !FS_IMMUTABLE_FL)),
        Ok(_) => Ok(None),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EOPNOTSUPP)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Clear `path`'s immutable flag (`chattr -i`, by ioctl).
#[allow(unsafe_code)]
fn make_mutable(path: &Path) -> io::Result<()> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int through the pointer, which
    // points to `flags`, alive and writable for the call; `f` keeps the
    // descriptor open.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    let got = if rc == 0 {
        Ok(flags)
    } else {
        Err(io::Error::last_os_error())
    };
    let Some(new) = without_immutable(got)? else {
        return Ok(());
    };
    // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer, which
    // points to `new`, alive for the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &new) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_utf16_with_attributes_and_a_nul() {
        let t = tempfile::tempdir().unwrap();
        write_string(t.path(), "LoaderEntryOneShot", "genboot-1.conf").unwrap();
        let data = fs::read(var(t.path(), "LoaderEntryOneShot")).unwrap();
        let mut want = vec![7u8, 0, 0, 0];
        for u in "genboot-1.conf".encode_utf16().chain([0]) {
            want.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(data, want);
        // And it is written again over the existing variable.
        write_string(t.path(), "LoaderEntryOneShot", "genboot-2.conf").unwrap();
        assert_eq!(
            read_string(&var(t.path(), "LoaderEntryOneShot")).as_deref(),
            Some("genboot-2.conf")
        );
        fs::write(
            var(t.path(), "LoaderBootCountPath"),
            encode_string("\\loader\\entries\\genboot-3+1-2.conf"),
        )
        .unwrap();
        assert_eq!(
            booted_entry_file(t.path()).as_deref(),
            Some("genboot-3+1-2.conf")
        );
    }

    #[test]
    fn the_loader_partition_uuid_is_checked_and_lower_cased() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(loader_device_part_uuid(t.path()), None);
        for (value, want) in [
            (
                "65737000-0000-4000-8000-00000000000A",
                Some("65737000-0000-4000-8000-00000000000a"),
            ),
            ("../../etc/passwd", None),
            ("65737000-0000-4000-8000-00000000000", None),
            ("65737000x0000-4000-8000-000000000001", None),
        ] {
            write_string(t.path(), "LoaderDevicePartUUID", value).unwrap();
            assert_eq!(
                loader_device_part_uuid(t.path()).as_deref(),
                want,
                "{value}"
            );
        }
    }

    #[test]
    fn the_immutable_flag_is_cleared_and_a_failure_to_read_flags_is_an_error() {
        let imm = FS_IMMUTABLE_FL | 0x80;
        assert_eq!(without_immutable(Ok(imm)).unwrap(), Some(0x80));
        assert_eq!(without_immutable(Ok(0x80)).unwrap(), None);
        // A file system without inode flags: nothing can be immutable.
        for errno in [libc::ENOTTY, libc::EOPNOTSUPP] {
            let e = io::Error::from_raw_os_error(errno);
            assert_eq!(without_immutable(Err(e)).unwrap(), None);
        }
        // Anything else is not ignored (the old `chattr -i` shell-out's
        // failure was).
        for errno in [libc::EIO, libc::EPERM, libc::EACCES] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(without_immutable(Err(e)).is_err(), "{errno}");
        }
    }

    #[test]
    fn a_variable_that_is_a_symlink_is_never_written_through() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, var(t.path(), "LoaderEntryOneShot")).unwrap();
        assert!(write_string(t.path(), "LoaderEntryOneShot", "x").is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }
}
