//! The root partition of a disk image: ext4 made by `mke2fs -d` from the
//! system tree, with a fixed UUID, label and hash seed, written at the
//! partition's offset (the GPT around it is [`crate::gpt`]'s). Same
//! inputs, same bytes.
//!
//! The tree is a directory below `--root`, copied whole, or (`--root /`,
//! a running system or a chroot) the root file system alone
//! ([`Tree::RootFs`]): what is mounted on it (`/proc`, `/sys`, `/dev`,
//! `/run`, a tmpfs `/tmp`, the ESP) stays out, as `cp -x` leaves it out.

use crate::fsutil::IoError;
use crate::gpt::{DiskError, Part, MIB, ROOT_FS_LABEL, ROOT_FS_UUID, ROOT_HASH_SEED};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A root partition size that holds `tree` as ext4 (4 KiB blocks): the
/// files' blocks, a block per inode-table slot and directory, the journal
/// and the reserve, rounded up to MiB.
pub(crate) fn root_size_for(tree: Tree) -> Result<u64, DiskError> {
    let sum = tree_bytes(tree)?;
    // ext4 metadata (inode tables at 1 inode per 16 KiB, group
    // descriptors, bitmaps) ~ 2 %, 5 % reserve, the journal (up to 64 MiB),
    // and room to grow.
    let size = sum + sum / 8 + (96 << 20);
    Ok(size.div_ceil(MIB) * MIB)
}

/// What the files of `tree` take on ext4 with 4 KiB blocks: each file
/// rounded up to whole blocks, plus a block and an inode for every entry
/// (a directory block, a link target). Links are not followed.
pub(crate) fn tree_bytes(tree: Tree) -> Result<u64, DiskError> {
    use std::os::unix::fs::MetadataExt;
    /// `dev`: stay on this device (the root file system alone).
    fn walk(dir: &Path, dev: Option<u64>, sum: &mut u64) -> Result<(), DiskError> {
        let rd = std::fs::read_dir(dir).map_err(IoError::at("read", dir))?;
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            *sum += 4096 + 256; // a directory block or link target, an inode
            if dev.is_some_and(|d| d != m.dev()) {
                continue; // a mount point: an empty directory in the image
            }
            if m.is_dir() {
                walk(&p, dev, sum)?;
            } else if m.is_file() {
                *sum += m.len().div_ceil(4096) * 4096;
            }
        }
        Ok(())
    }
    let mut sum = 0;
    match tree {
        Tree::Dir(d) => walk(d, None, &mut sum)?,
        Tree::RootFs => {
            let dev = std::fs::symlink_metadata("/")
                .map_err(IoError::at("stat", Path::new("/")))?
                .dev();
            walk(Path::new("/"), Some(dev), &mut sum)?
        }
    }
    Ok(sum)
}

/// What the root partition holds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tree<'a> {
    /// Everything below a directory.
    Dir(&'a Path),
    /// The file system mounted at `/`, without what is mounted on it.
    RootFs,
}

/// The root file system without what is mounted on it: a detached,
/// non-recursive bind mount of `/` (`open_tree(2)` with
/// `OPEN_TREE_CLONE`), attached nowhere, so no other process sees it and
/// nothing propagates; the kernel unmounts it when the descriptor closes.
/// Needs Linux 5.2 and `CAP_SYS_ADMIN`.
#[allow(unsafe_code)]
fn detached_root_fs() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let cloexec = libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: the path is a NUL-terminated literal, the flags plain
    // integers; the call only reads them and returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            OPEN_TREE_CLONE | cloexec,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("descriptor out of range"))?;
    // SAFETY: `fd` was just returned by open_tree and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Make the root partition: ext4 with fixed UUID, label and hash seed,
/// filled from `tree`, written into the image at the partition's offset.
/// `mke2fs` (a child process) reads [`Tree::RootFs`] through
/// `/proc/<genboot's pid>/fd/<fd>` of [`detached_root_fs`].
pub(crate) fn make_root(image: &Path, root: Part, tree: Tree) -> Result<(), DiskError> {
    use std::os::fd::AsRawFd;
    let blocks = root.len / 4096;
    // `view` keeps the detached mount alive until mke2fs is done.
    let (view, source) = match tree {
        Tree::Dir(d) => (None, d.to_path_buf()),
        Tree::RootFs => {
            let fd = detached_root_fs().map_err(|e| DiskError::Mke2fs {
                path: image.to_path_buf(),
                code: "not run".into(),
                stderr: format!(
                    "cannot take the root file system without its mounts (open_tree of /): {e}; this needs Linux 5.2 or later and root"
                ),
            })?;
            let path = format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd());
            (Some(fd), PathBuf::from(path))
        }
    };
    let out = Command::new("mke2fs")
        .env("E2FSPROGS_FAKE_TIME", "1")
        .env("MKE2FS_DEVICE_SECTSIZE", "512")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096"])
        .args(["-U", ROOT_FS_UUID, "-L", ROOT_FS_LABEL])
        .arg("-E")
        .arg(format!(
            "offset={},hash_seed={ROOT_HASH_SEED},nodiscard,root_owner=0:0",
            root.start
        ))
        .arg("-d")
        .arg(&source)
        .arg(image)
        .arg(blocks.to_string())
        .output()
        .map_err(IoError::at("run mke2fs for", image))?;
    drop(view);
    if !out.status.success() {
        return Err(DiskError::Mke2fs {
            path: image.to_path_buf(),
            code: out.status.code().map_or("signal".into(), |c| c.to_string()),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}
