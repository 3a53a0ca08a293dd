//! The root partition of a disk image: ext4 made by `mke2fs -d` from the
//! system tree, with a fixed UUID, label and hash seed, written at the
//! partition's offset (the GPT around it is [`crate::gpt`]'s). Same
//! inputs, same bytes.

use crate::fsutil::IoError;
use crate::gpt::{DiskError, Part, MIB, ROOT_FS_LABEL, ROOT_FS_UUID, ROOT_HASH_SEED};
use std::path::Path;
use std::process::Command;

/// A root partition size that holds `tree` as ext4 (4 KiB blocks): the
/// files' blocks, a block per inode-table slot and directory, the journal
/// and the reserve, rounded up to MiB.
pub(crate) fn root_size_for(tree: &Path) -> Result<u64, DiskError> {
    let sum = tree_bytes(tree)?;
    // ext4 metadata (inode tables at 1 inode per 16 KiB, group
    // descriptors, bitmaps) ~ 2 %, 5 % reserve, the journal (up to 64 MiB),
    // and room to grow.
    let size = sum + sum / 8 + (96 << 20);
    Ok(size.div_ceil(MIB) * MIB)
}

/// What the files below `dir` take on ext4 with 4 KiB blocks: each file
/// rounded up to whole blocks, plus a block and an inode for every entry
/// (a directory block, a link target). Links are not followed.
pub(crate) fn tree_bytes(dir: &Path) -> Result<u64, DiskError> {
    fn walk(dir: &Path, sum: &mut u64) -> Result<(), DiskError> {
        let rd = std::fs::read_dir(dir).map_err(IoError::at("read", dir))?;
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            *sum += 4096 + 256; // a directory block or link target, an inode
            if m.is_dir() {
                walk(&p, sum)?;
            } else if m.is_file() {
                *sum += m.len().div_ceil(4096) * 4096;
            }
        }
        Ok(())
    }
    let mut sum = 0;
    walk(dir, &mut sum)?;
    Ok(sum)
}

/// Make the root partition: ext4 with fixed UUID, label and hash seed,
/// filled from `tree`, written into the image at the partition's offset.
pub(crate) fn make_root(image: &Path, root: Part, tree: &Path) -> Result<(), DiskError> {
    let blocks = root.len / 4096;
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
        .arg(tree)
        .arg(image)
        .arg(blocks.to_string())
        .output()
        .map_err(IoError::at("run mke2fs for", image))?;
    if !out.status.success() {
        return Err(DiskError::Mke2fs {
            path: image.to_path_buf(),
            code: out.status.code().map_or("signal".into(), |c| c.to_string()),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}
