//! Disk images' partition table: a GPT (with a protective MBR) with fixed
//! GUIDs, read back and checked before an ESP inside it is used.
//!
//! Layout: LBA 0 protective MBR, LBA 1–33 primary GPT, the ESP from 1 MiB,
//! the root partition (type [`ROOT_TYPE`]) right after it up to 1 MiB
//! before the end, the backup GPT in the last 33 sectors. Same inputs,
//! same bytes.

use crate::fsutil::IoError;
use crate::hint::Hint;
use crate::units::human;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The disk GUID of images genboot writes.
pub const DISK_GUID: &str = "67656e62-6f6f-4000-8000-000000000000";
/// The PARTUUID of the ESP.
pub const ESP_PARTUUID: &str = "65737000-0000-4000-8000-000000000001";
/// The root partition's type: the Discoverable Partitions Specification's
/// root partition for x86-64 (systemd-gpt-auto-generator mounts the ESP of
/// a disk whose root partition has it).
pub const ROOT_TYPE: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
/// The PARTUUID of the root partition (`root=PARTUUID=…`).
pub const ROOT_PARTUUID: &str = "6e6f6f74-0000-4000-8000-000000000002";
/// The ext4 UUID of the root file system (`root=UUID=…`).
pub const ROOT_FS_UUID: &str = "6e6f6f74-6673-4000-8000-000000000003";
/// The ext4 label of the root file system (`root=LABEL=…`).
pub const ROOT_FS_LABEL: &str = "genboot-root";
/// ext4 directory hash seed, fixed so images are reproducible.
pub(crate) const ROOT_HASH_SEED: &str = "6e6f6f74-6861-4000-8000-000000000004";

const SECTOR: u64 = 512;
pub(crate) const MIB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("no GPT partition table: {0}")]
    NoGpt(String),
    #[error("the GPT has no EFI System Partition (type C12A7328-F81F-11D2-BA4B-00A0C93EC93B)")]
    NoEsp,
    #[error("{what}")]
    BadGpt { what: String, hint: String },
    #[error("cannot write the GPT of {path}: {what}")]
    Gpt { path: PathBuf, what: String },
    #[error("an image of {} has no room for an ESP of {} and a root partition", human(*.size), human(*.esp_size))]
    NoRoom { size: u64, esp_size: u64 },
    #[error("mke2fs failed on {path} (exit {code}): {stderr}")]
    Mke2fs {
        path: PathBuf,
        code: String,
        stderr: String,
    },
}

impl Hint for DiskError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            DiskError::BadGpt { hint, .. } => hint.clone(),
            DiskError::NoRoom { .. } => "give a larger --size or a smaller --esp-size".into(),
            DiskError::Mke2fs { .. } => "is e2fsprogs installed (`apt-get install e2fsprogs`)? Is the image big enough for the tree below --root?".into(),
            DiskError::Io(_) | DiskError::NoGpt(_) | DiskError::NoEsp | DiskError::Gpt { .. } => {
                return None
            }
        })
    }
}

/// A partition: number (1-based), byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub number: u32,
    pub start: u64,
    pub len: u64,
}

/// The EFI System Partition type GUID as stored on disk (mixed endian).
const ESP_TYPE: [u8; 16] = [
    0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B,
];

/// One used entry of a GPT.
#[derive(Debug, Clone, Copy)]
struct GptEntry {
    number: u32,
    type_guid: [u8; 16],
    /// The partition's unique GUID, as stored (mixed endian).
    unique: [u8; 16],
    first: u64,
    last: u64,
}

/// A GPT header and its entries, checked.
struct GptHeader {
    first_usable: u64,
    last_usable: u64,
    entries: Vec<GptEntry>,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(data);
    c.sum()
}

/// Read and check the GPT header at `lba` and its entry array: signature,
/// both CRCs, and that everything lies inside the `size` bytes of the
/// image. `Err` says what is wrong.
fn read_header(file: &File, lba: u64, size: u64) -> Result<GptHeader, String> {
    use std::os::unix::fs::FileExt;
    let mut h = [0u8; 512];
    let at = lba.checked_mul(SECTOR).ok_or("its location overflows")?;
    file.read_exact_at(&mut h, at)
        .map_err(|e| format!("cannot read LBA {lba}: {e}"))?;
    if &h[..8] != b"EFI PART" {
        return Err(format!("no GPT signature at LBA {lba}"));
    }
    let hsize = le32(&h, 12) as usize;
    if !(92..=512).contains(&hsize) {
        return Err(format!("its header size is {hsize} bytes"));
    }
    let stored = le32(&h, 16);
    let mut copy = h;
    copy[16..20].fill(0);
    let computed = crc32(&copy[..hsize]);
    if stored != computed {
        return Err(format!(
            "its header CRC does not match (stored {stored:08x}, computed {computed:08x})"
        ));
    }
    if le64(&h, 24) != lba {
        return Err(format!(
            "the header at LBA {lba} says it is at LBA {}",
            le64(&h, 24)
        ));
    }
    let (first_usable, last_usable) = (le64(&h, 40), le64(&h, 48));
    let (entries_lba, count, esize) = (le64(&h, 72), le32(&h, 80) as u64, le32(&h, 84) as u64);
    if esize < 128 || esize % 8 != 0 || esize > 4096 || count > 16384 {
        return Err(format!("{count} partition entries of {esize} bytes"));
    }
    let array = count * esize;
    let start = entries_lba
        .checked_mul(SECTOR)
        .ok_or("its entries' location overflows")?;
    if start.checked_add(array).is_none_or(|end| end > size) {
        return Err(format!(
            "its partition entries (LBA {entries_lba}, {array} bytes) lie past the end of the image"
        ));
    }
    let mut data = vec![0u8; array as usize];
    file.read_exact_at(&mut data, start)
        .map_err(|e| format!("cannot read its partition entries: {e}"))?;
    let stored = le32(&h, 88);
    let computed = crc32(&data);
    if stored != computed {
        return Err(format!(
            "its partition entry array CRC does not match (stored {stored:08x}, computed {computed:08x})"
        ));
    }
    if first_usable > last_usable {
        return Err(format!(
            "first usable LBA {first_usable} > last usable LBA {last_usable}"
        ));
    }
    let mut entries = Vec::new();
    for (i, e) in data.chunks_exact(esize as usize).enumerate() {
        let type_guid: [u8; 16] = e[..16].try_into().expect("16 bytes");
        if type_guid == [0; 16] {
            continue;
        }
        entries.push(GptEntry {
            number: i as u32 + 1,
            type_guid,
            unique: e[16..32].try_into().expect("16 bytes"),
            first: le64(e, 32),
            last: le64(e, 40),
        });
    }
    Ok(GptHeader {
        first_usable,
        last_usable,
        entries,
    })
}

const GDISK_HINT: &str = "the backup GPT at the end of the image is intact: rebuild the primary one from it with `gdisk IMAGE` (keys: r, b, c, y, w, y), check with `sgdisk -v IMAGE`, and run genboot again; nothing was changed";

/// Find the EFI System Partition of a GPT disk image, after checking the
/// table: the primary header and its entry array must pass their CRCs
/// (a damaged primary is refused even when the backup is intact: genboot
/// does not pick between two tables, `gdisk` does), partitions must lie in
/// the usable area without overlapping, and the ESP must lie inside the
/// file.
pub fn find_esp(file: &File) -> Result<Part, DiskError> {
    let size = file
        .metadata()
        .map_err(IoError::at("read", Path::new("image")))?
        .len();
    if size < 34 * SECTOR {
        return Err(DiskError::NoGpt(format!(
            "the file is only {size} bytes, too small for one"
        )));
    }
    let gpt = match read_header(file, 1, size) {
        Ok(h) => h,
        Err(why) => {
            let backup = read_header(file, size / SECTOR - 1, size);
            if why.starts_with("no GPT signature") && backup.is_err() {
                return Err(DiskError::NoGpt(why));
            }
            return Err(DiskError::BadGpt {
                what: format!("its primary GPT is damaged: {why}"),
                hint: if backup.is_ok() {
                    GDISK_HINT.into()
                } else {
                    "the backup GPT is damaged or missing too; restore the image from a copy, or make a new one with `genboot image`; nothing was changed".into()
                },
            });
        }
    };
    let bad = |what: String| {
        DiskError::BadGpt {
        what,
        hint: "repair the partition table with gdisk (`sgdisk -v IMAGE` shows the problem), or make a new image with `genboot image`; nothing was changed".into(),
    }
    };
    let mut parts = gpt.entries.clone();
    for p in &parts {
        if p.first > p.last {
            return Err(bad(format!(
                "partition {} ends (LBA {}) before it starts (LBA {})",
                p.number, p.last, p.first
            )));
        }
        if p.first < gpt.first_usable || p.last > gpt.last_usable {
            return Err(bad(format!(
                "partition {} (LBA {}..{}) lies outside the usable area of the disk (LBA {}..{})",
                p.number, p.first, p.last, gpt.first_usable, gpt.last_usable
            )));
        }
    }
    parts.sort_by_key(|p| p.first);
    for w in parts.windows(2) {
        if w[1].first <= w[0].last {
            return Err(bad(format!(
                "partitions {} (LBA {}..{}) and {} (LBA {}..{}) overlap",
                w[0].number, w[0].first, w[0].last, w[1].number, w[1].first, w[1].last
            )));
        }
    }
    let esp = gpt
        .entries
        .iter()
        .find(|p| p.type_guid == ESP_TYPE)
        .ok_or(DiskError::NoEsp)?;
    let start = esp.first * SECTOR;
    let end = (esp.last + 1) * SECTOR;
    if start >= size {
        return Err(DiskError::BadGpt {
            what: format!(
                "its ESP (partition {}) starts at byte {start}, past the end of the file ({size} bytes)",
                esp.number
            ),
            hint: "the image is truncated or its partition table is wrong; restore it from a copy; nothing was changed".into(),
        });
    }
    if end > size {
        return Err(DiskError::BadGpt {
            what: format!(
                "the image ends inside its ESP: partition {} spans bytes {start}..{end}, the file has {size}",
                esp.number
            ),
            hint: "the image is truncated (an interrupted copy or download?); restore it from a copy; nothing was changed".into(),
        });
    }
    Ok(Part {
        number: esp.number,
        start,
        len: end - start,
    })
}

/// The unique GUID (PARTUUID) and first LBA of partition `number` of the
/// disk `file` (a disk image or a whole-disk device node), from its primary
/// GPT, checked as [`find_esp`] checks it (signature, both CRCs).
pub fn partition_guid(file: &File, number: u32) -> Result<(Uuid, u64), DiskError> {
    // A block device's metadata says 0 bytes; seeking to its end does not.
    let size = {
        use std::io::{Seek, SeekFrom};
        let mut f = file;
        f.seek(SeekFrom::End(0))
            .map_err(IoError::at("find the size of", Path::new("disk")))?
    };
    let gpt = read_header(file, 1, size).map_err(DiskError::NoGpt)?;
    let e = gpt
        .entries
        .iter()
        .find(|e| e.number == number)
        .ok_or_else(|| DiskError::NoGpt(format!("it has no partition {number}")))?;
    Ok((Uuid::from_bytes_le(e.unique), e.first))
}

impl DiskError {
    /// The message and the hint, apart.
    pub fn what_and_hint(&self) -> (String, String) {
        match self {
            DiskError::BadGpt { what, hint } => (what.clone(), hint.clone()),
            other => (
                other.to_string(),
                "pass a GPT disk image with an EFI System Partition (e.g. one made by `genboot image`); nothing was changed".into(),
            ),
        }
    }
}

/// Where the partitions of an image of `size` bytes go.
pub(crate) fn layout(size: u64, esp_size: u64) -> Result<(Part, Part), DiskError> {
    let size = size / MIB * MIB;
    let esp_size = esp_size.div_ceil(MIB) * MIB;
    if size < esp_size + 2 * MIB + 16 * MIB {
        return Err(DiskError::NoRoom { size, esp_size });
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
    let io = |op| IoError::at(op, path);
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
        // The Discoverable Partitions root type for x86-64: systemd's
        // gpt-auto generator then mounts the ESP on the same disk at /efi.
        gpt::partition_types::LINUX_ROOT_X64,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_type_is_the_discoverable_partitions_x86_64_root() {
        assert_eq!(
            gpt::partition_types::LINUX_ROOT_X64.guid,
            Uuid::parse_str(ROOT_TYPE).unwrap()
        );
    }

    #[test]
    fn the_partition_guids_of_a_written_image_are_read_back() {
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("disk.img");
        write_gpt(&img, 64 << 20, 40 << 20).unwrap();
        let f = File::open(&img).unwrap();
        assert_eq!(
            partition_guid(&f, 1).unwrap(),
            (Uuid::parse_str(ESP_PARTUUID).unwrap(), 2048)
        );
        assert_eq!(
            partition_guid(&f, 2).unwrap().0,
            Uuid::parse_str(ROOT_PARTUUID).unwrap()
        );
        assert!(partition_guid(&f, 3).is_err());
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
