//! Reading files genboot does not trust to be what they claim: a module
//! tree (third parties and DKMS write there), firmware, and the files the
//! configuration names. Every read is of a regular file and bounded, so a
//! device (`/dev/zero`), a FIFO or a huge file cannot exhaust memory or hang
//! a build.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest kernel module file or uncompressed module ELF genboot reads:
/// 128 MiB. The largest module of the test kernels is `amdgpu` (19 MB on
/// Debian's 6.1, 29 MB uncompressed on 6.12); the cap is four times that,
/// and bounds the memory a hostile tree can make a build use to this much
/// per thread.
pub const MAX_MODULE_BYTES: u64 = 128 << 20;

/// The largest firmware file genboot copies into an initrd: 128 MiB (the
/// largest files of Debian's firmware packages are a few tens of MB, and an
/// initrd is loaded whole into memory by the firmware and the kernel).
pub const MAX_FIRMWARE_BYTES: u64 = 128 << 20;

/// The largest index file of a module tree genboot reads
/// (`modules.order`, `modules.builtin`, `modules.builtin.modinfo`): 16 MiB
/// (on Debian's 6.12 kernel they are 160 KB, 40 KB and 900 KB).
pub const MAX_INDEX_BYTES: u64 = 16 << 20;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("it is a {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("it is {size} bytes, more than the {cap} bytes genboot reads from such a file")]
    TooBig { size: u64, cap: u64 },
}

impl InputError {
    /// The file does not exist (dangling symlinks included).
    pub fn is_not_found(&self) -> bool {
        matches!(self, InputError::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

/// What kind of file `ft` is, for messages.
pub fn kind(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symbolic link"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

/// Open `path` for reading as a regular file of at most `cap` bytes;
/// returns the file and its size. With `follow` false a symlink as the
/// last component is refused (`O_NOFOLLOW`). Opening never blocks on a
/// FIFO (`O_NONBLOCK`, which does not affect regular files).
pub fn open_regular(path: &Path, follow: bool, cap: u64) -> Result<(File, u64), InputError> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
    {
        Ok(f) => f,
        // O_NOFOLLOW on a symlink.
        Err(e) if !follow && e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(InputError::NotRegular("symbolic link"))
        }
        Err(e) => return Err(e.into()),
    };
    checked(file, cap)
}

/// `file` if it is a regular file of at most `cap` bytes, with its size.
pub fn checked(file: File, cap: u64) -> Result<(File, u64), InputError> {
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(InputError::NotRegular(kind(meta.file_type())));
    }
    if meta.len() > cap {
        return Err(InputError::TooBig {
            size: meta.len(),
            cap,
        });
    }
    Ok((file, meta.len()))
}

/// Read all of an opened file of `size` bytes, but never more than `cap`
/// (a file that grows while it is read is refused, not followed).
pub fn read_all(file: File, size: u64, cap: u64) -> Result<Vec<u8>, InputError> {
    let mut data = Vec::with_capacity(size.min(cap) as usize);
    file.take(cap + 1).read_to_end(&mut data)?;
    if data.len() as u64 > cap {
        return Err(InputError::TooBig {
            size: data.len() as u64,
            cap,
        });
    }
    Ok(data)
}

/// [`open_regular`] then [`read_all`].
pub fn read_regular(path: &Path, follow: bool, cap: u64) -> Result<Vec<u8>, InputError> {
    let (file, size) = open_regular(path, follow, cap)?;
    read_all(file, size, cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_directories_are_refused() {
        for (p, k) in [("/dev/zero", "character device"), ("/", "directory")] {
            match read_regular(Path::new(p), true, 1 << 20) {
                Err(InputError::NotRegular(kind)) => assert_eq!(kind, k),
                other => panic!("{p}: {other:?}"),
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(st.success());
        // Would block forever without O_NONBLOCK.
        assert!(matches!(
            read_regular(&fifo, true, 10),
            Err(InputError::NotRegular("FIFO"))
        ));
    }

    #[test]
    fn symlinks_are_refused_without_follow_and_sizes_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"0123456789").unwrap();
        let l = dir.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        assert_eq!(read_regular(&l, true, 10).unwrap(), b"0123456789");
        assert!(matches!(
            read_regular(&l, false, 10),
            Err(InputError::NotRegular("symbolic link"))
        ));
        assert!(matches!(
            read_regular(&f, false, 9),
            Err(InputError::TooBig { size: 10, cap: 9 })
        ));
        assert!(read_regular(&dir.path().join("none"), true, 9)
            .unwrap_err()
            .is_not_found());
    }
}
