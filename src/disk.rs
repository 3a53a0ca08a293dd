//! Disk images: a GPT (with a protective MBR) with fixed GUIDs, an ESP
//! formatted and filled by genboot, and an ext4 root partition made by
//! `mke2fs -d` from the system tree.
//!
//! Layout: LBA 0 protective MBR, LBA 1–33 primary GPT, the ESP from 1 MiB,
//! the root partition right after it up to 1 MiB before the end, the backup
//! GPT in the last 33 sectors. Same inputs, same bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use uuid::Uuid;

/// The disk GUID of images genboot writes.
pub const DISK_GUID: &str = "67656e62-6f6f-4000-8000-000000000000";
/// The PARTUUID of the ESP.
pub const ESP_PARTUUID: &str = "65737000-0000-4000-8000-000000000001";
/// The PARTUUID of the root partition (`root=PARTUUID=…`).
pub const ROOT_PARTUUID: &str = "6e6f6f74-0000-4000-8000-000000000002";
/// The ext4 UUID of the root file system (`root=UUID=…`).
pub const ROOT_FS_UUID: &str = "6e6f6f74-6673-4000-8000-000000000003";
/// The ext4 label of the root file system (`root=LABEL=…`).
pub const ROOT_FS_LABEL: &str = "genboot-root";
/// ext4 directory hash seed, fixed so images are reproducible.
const ROOT_HASH_SEED: &str = "6e6f6f74-6861-4000-8000-000000000004";

const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no GPT partition table: {0}")]
    NoGpt(String),
    #[error("the GPT has no EFI System Partition (type C12A7328-F81F-11D2-BA4B-00A0C93EC93B)")]
    NoEsp,
    #[error("cannot write the GPT of {path}: {what}")]
    Gpt { path: PathBuf, what: String },
    #[error("{what}\nHint: {hint}")]
    Size { what: String, hint: String },
    #[error("mke2fs failed on {path} (exit {code}): {stderr}\nHint: is e2fsprogs installed (`apt-get install e2fsprogs`)? Is the image big enough for the tree below --root?")]
    Mke2fs {
        path: PathBuf,
        code: String,
        stderr: String,
    },
}

/// A partition: number (1-based), byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub number: u32,
    pub start: u64,
    pub len: u64,
}

/// Find the EFI System Partition of a GPT disk image.
pub fn find_esp(file: &File) -> Result<Part, DiskError> {
    let dev = file.try_clone().map_err(|source| DiskError::Io {
        op: "read",
        path: PathBuf::from("image"),
        source,
    })?;
    let disk = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open_from_device(dev)
        .map_err(|e| DiskError::NoGpt(e.to_string()))?;
    disk.partitions()
        .iter()
        .find(|(_, p)| p.part_type_guid == gpt::partition_types::EFI)
        .map(|(n, p)| Part {
            number: *n,
            start: p.first_lba * SECTOR,
            len: (p.last_lba + 1 - p.first_lba) * SECTOR,
        })
        .ok_or(DiskError::NoEsp)
}

/// Parse `512M`, `1G`, `300MiB`, `4096` (bytes).
pub(crate) fn parse_size(s: &str) -> Result<u64, DiskError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let bad = || DiskError::Size {
        what: format!("{s:?} is not a size"),
        hint: "write a number and a unit, e.g. 512M or 2G".into(),
    };
    let n: u64 = n.parse().map_err(|_| bad())?;
    let mult = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KIB" => 1 << 10,
        "M" | "MIB" => 1 << 20,
        "G" | "GIB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// Where the partitions of an image of `size` bytes go.
pub(crate) fn layout(size: u64, esp_size: u64) -> Result<(Part, Part), DiskError> {
    let size = size / MIB * MIB;
    let esp_size = esp_size.div_ceil(MIB) * MIB;
    if size < esp_size + 2 * MIB + 16 * MIB {
        return Err(DiskError::Size {
            what: format!(
                "an image of {} has no room for an ESP of {} and a root partition",
                crate::esp::human(size),
                crate::esp::human(esp_size)
            ),
            hint: "give a larger --size or a smaller --esp-size".into(),
        });
    }
    let esp = Part {
        number: 1,
        start: MIB,
        len: esp_size,
    };
    let root = Part {
        number: 2,
        start: MIB + esp_size,
        len: size - 2 * MIB - esp_size,
    };
    Ok((esp, root))
}

/// Write a new image file of `size` bytes holding a protective MBR and a
/// GPT with the ESP and root partitions (fixed GUIDs). Returns them.
pub fn write_gpt(path: &Path, size: u64, esp_size: u64) -> Result<(Part, Part), DiskError> {
    let (esp, root) = layout(size, esp_size)?;
    let size = size / MIB * MIB;
    let io = |op| {
        move |source| DiskError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io("create"))?;
    file.set_len(size).map_err(io("size"))?;
    let gerr = |e: &dyn std::fmt::Display| DiskError::Gpt {
        path: path.to_path_buf(),
        what: e.to_string(),
    };
    let sectors = size / SECTOR;
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(u32::MAX));
    let mut dev = file.try_clone().map_err(io("open"))?;
    mbr.overwrite_lba0(&mut dev).map_err(|e| gerr(&e))?;
    let guid = |s: &str| Uuid::parse_str(s).expect("fixed GUID parses");
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(dev, Some(guid(DISK_GUID)))
        .map_err(|e| gerr(&e))?;
    disk.add_partition_at(
        "EFI System Partition",
        esp.number,
        esp.start / SECTOR,
        esp.len / SECTOR,
        gpt::partition_types::EFI,
        0,
    )
    .map_err(|e| gerr(&e))?;
    disk.add_partition_at(
        "genboot root",
        root.number,
        root.start / SECTOR,
        root.len / SECTOR,
        gpt::partition_types::LINUX_FS,
        0,
    )
    .map_err(|e| gerr(&e))?;
    let mut parts: BTreeMap<u32, gpt::partition::Partition> = disk.take_partitions();
    for (n, p) in parts.iter_mut() {
        p.part_guid = guid(if *n == esp.number {
            ESP_PARTUUID
        } else {
            ROOT_PARTUUID
        });
    }
    disk.update_partitions(parts).map_err(|e| gerr(&e))?;
    let f = disk.write().map_err(|e| gerr(&e))?;
    f.sync_all().map_err(io("sync"))?;
    Ok((esp, root))
}

/// A root partition size that holds `tree` as ext4 (4 KiB blocks): the
/// files' blocks, a block per inode-table slot and directory, the journal
/// and the reserve, rounded up to MiB.
pub(crate) fn root_size_for(tree: &Path) -> Result<u64, DiskError> {
    fn walk(dir: &Path, sum: &mut u64) -> Result<(), DiskError> {
        let rd = std::fs::read_dir(dir).map_err(|source| DiskError::Io {
            op: "read",
            path: dir.to_path_buf(),
            source,
        })?;
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
    walk(tree, &mut sum)?;
    // ext4 metadata (inode tables at 1 inode per 16 KiB, group
    // descriptors, bitmaps) ~ 2 %, 5 % reserve, the journal (up to 64 MiB),
    // and room to grow.
    let size = sum + sum / 8 + (96 << 20);
    Ok(size.div_ceil(MIB) * MIB)
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
        .map_err(|source| DiskError::Io {
            op: "run mke2fs for",
            path: image.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        return Err(DiskError::Mke2fs {
            path: image.to_path_buf(),
            code: out.status.code().map_or("signal".into(), |c| c.to_string()),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("300MiB").unwrap(), 300 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("1T").is_err());
        assert!(parse_size("big").is_err());
    }

    #[test]
    fn layout_puts_esp_at_one_mib_and_root_after_it() {
        let (esp, root) = layout(1 << 30, 256 << 20).unwrap();
        assert_eq!(esp.start, 1 << 20);
        assert_eq!(root.start, esp.start + esp.len);
        assert_eq!(root.start + root.len, (1 << 30) - (1 << 20));
        assert!(layout(100 << 20, 256 << 20).is_err());
    }
}
