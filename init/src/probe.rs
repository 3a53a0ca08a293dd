//! Reading what names a block device: the GPT (for `PARTUUID=`; sysfs does
//! not expose it) and file-system superblocks (for `UUID=`/`LABEL=`, and the
//! file-system type when `rootfstype=` is not given). Pure functions on bytes;
//! the reads go through the [`crate::sys::Sys`] seam.

/// How many bytes from the start of a device [`probe_fs`] wants to see:
/// up to and including the btrfs superblock at 64 KiB.
pub const PROBE_LEN: usize = 0x10000 + 0x1000;

/// The parts of a GPT header needed to find an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptHeader {
    pub entries_lba: u64,
    pub entries: u32,
    pub entry_size: u32,
}

// Bounds-checked readers: the bytes come from disks, and a panic in PID 1
// is a kernel panic (indexing is denied crate-wide).

/// `len` bytes of `b` at `at`, if `b` has them.
fn at(b: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    b.get(at..at.checked_add(len)?)
}
fn array<const N: usize>(b: &[u8], o: usize) -> Option<[u8; N]> {
    b.get(o..)?.first_chunk::<N>().copied()
}
fn u16le(b: &[u8], o: usize) -> Option<u16> {
    array(b, o).map(u16::from_le_bytes)
}
fn u32le(b: &[u8], o: usize) -> Option<u32> {
    array(b, o).map(u32::from_le_bytes)
}
fn u64le(b: &[u8], o: usize) -> Option<u64> {
    array(b, o).map(u64::from_le_bytes)
}

/// Parse the GPT header in `sector` (LBA 1). `None` if it is not one.
pub fn gpt_header(sector: &[u8]) -> Option<GptHeader> {
    if sector.len() < 92 || at(sector, 0, 8)? != b"EFI PART" {
        return None;
    }
    let h = GptHeader {
        entries_lba: u64le(sector, 72)?,
        entries: u32le(sector, 80)?,
        entry_size: u32le(sector, 84)?,
    };
    if h.entry_size < 128 || h.entries == 0 || h.entries_lba < 2 {
        return None;
    }
    Some(h)
}

impl GptHeader {
    /// The byte offset of partition entry `n` (from 1) on a disk with
    /// `sector`-byte logical blocks; `None` when `n` is not in the table or
    /// the offset does not fit in 64 bits (a damaged or hostile header:
    /// `entries_lba` is read from the disk).
    pub fn entry_offset(&self, n: u64, sector: u64) -> Option<u64> {
        if n == 0 || n > u64::from(self.entries) {
            return None;
        }
        self.entries_lba
            .checked_mul(sector)?
            .checked_add((n - 1).checked_mul(u64::from(self.entry_size))?)
    }
}

/// A GUID as text (mixed-endian, as GPT stores it), lower case.
pub fn guid_text(g: &[u8; 16]) -> String {
    let [a0, a1, a2, a3, b0, b1, c0, c1, d @ ..] = *g;
    let [d0, d1, d2, d3, d4, d5, d6, d7] = d;
    format!(
        "{:08x}-{:04x}-{:04x}-{d0:02x}{d1:02x}-{d2:02x}{d3:02x}{d4:02x}{d5:02x}{d6:02x}{d7:02x}",
        u32::from_le_bytes([a0, a1, a2, a3]),
        u16::from_le_bytes([b0, b1]),
        u16::from_le_bytes([c0, c1]),
    )
}

/// The unique partition GUID of a GPT entry; `None` for an unused entry
/// or fewer than 32 bytes.
pub fn gpt_entry_partuuid(entry: &[u8]) -> Option<String> {
    let type_guid = at(entry, 0, 16)?;
    if type_guid.iter().all(|&b| b == 0) {
        return None;
    }
    Some(guid_text(&array(entry, 16)?))
}

/// What a superblock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    /// The kernel's name of the file-system type.
    pub fstype: &'static str,
    pub uuid: String,
    pub label: String,
}

/// Text up to the first NUL.
fn cstr(b: &[u8]) -> String {
    let text = b.split(|&c| c == 0).next().unwrap_or_default();
    String::from_utf8_lossy(text).into_owned()
}

/// Identify the file system whose first bytes are `b` (ideally
/// [`PROBE_LEN`] of them): ext2/3/4, xfs, btrfs or vfat.
pub fn probe_fs(b: &[u8]) -> Option<FsInfo> {
    xfs(b)
        .or_else(|| ext4(b))
        .or_else(|| btrfs(b))
        .or_else(|| vfat(b))
}

/// xfs: superblock at 0.
fn xfs(b: &[u8]) -> Option<FsInfo> {
    if at(b, 0, 4)? != b"XFSB" {
        return None;
    }
    Some(FsInfo {
        fstype: "xfs",
        uuid: guid_be(&array(b, 32)?),
        label: cstr(at(b, 108, 12)?),
    })
}

/// ext2/3/4: superblock at 1024, magic 0xEF53 at 0x38.
fn ext4(b: &[u8]) -> Option<FsInfo> {
    let sb = at(b, 1024, 0x88)?;
    if u16le(sb, 0x38)? != 0xEF53 {
        return None;
    }
    Some(FsInfo {
        fstype: "ext4",
        uuid: guid_be(&array(sb, 0x68)?),
        label: cstr(at(sb, 0x78, 16)?),
    })
}

/// btrfs: superblock at 64 KiB, magic at 0x40.
fn btrfs(b: &[u8]) -> Option<FsInfo> {
    let sb = at(b, 0x10000, 0x12b + 256)?;
    if at(sb, 0x40, 8)? != b"_BHRfS_M" {
        return None;
    }
    Some(FsInfo {
        fstype: "btrfs",
        uuid: guid_be(&array(sb, 0x20)?),
        label: cstr(at(sb, 0x12b, 256)?),
    })
}

/// vfat: boot sector signature, then the FAT32 or FAT12/16 extended BPB.
fn vfat(b: &[u8]) -> Option<FsInfo> {
    if at(b, 510, 2)? != [0x55, 0xAA] {
        return None;
    }
    let (serial_at, label_at) = if at(b, 0x52, 5)? == b"FAT32" {
        (0x43, 0x47)
    } else if at(b, 0x36, 3)? == b"FAT" {
        (0x27, 0x2B)
    } else {
        return None;
    };
    let serial = u32le(b, serial_at)?;
    let label = String::from_utf8_lossy(at(b, label_at, 11)?)
        .trim_end()
        .to_string();
    Some(FsInfo {
        fstype: "vfat",
        uuid: format!("{:04X}-{:04X}", serial >> 16, serial & 0xffff),
        label: if label == "NO NAME" {
            String::new()
        } else {
            label
        },
    })
}

/// A UUID stored as 16 bytes in order (ext4, xfs, btrfs).
fn guid_be(g: &[u8; 16]) -> String {
    let [a0, a1, a2, a3, b0, b1, c0, c1, d0, d1, e @ ..] = *g;
    format!(
        "{}-{}-{}-{}-{}",
        genboot_format::hex(&[a0, a1, a2, a3]),
        genboot_format::hex(&[b0, b1]),
        genboot_format::hex(&[c0, c1]),
        genboot_format::hex(&[d0, d1]),
        genboot_format::hex(&e)
    )
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
pub(crate) mod tests {
    use super::*;

    /// A synthetic GPT disk: LBA 1 header, entries at LBA 2, one partition
    /// number `n` with `partuuid`'s bytes (already in on-disk order).
    pub(crate) fn gpt_disk(n: u32, partuuid_on_disk: [u8; 16]) -> Vec<u8> {
        let mut d = vec![0u8; 512 * 34];
        d[512..520].copy_from_slice(b"EFI PART");
        d[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        d[512 + 80..512 + 84].copy_from_slice(&128u32.to_le_bytes());
        d[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        let e = 1024 + (n as usize - 1) * 128;
        d[e..e + 16].copy_from_slice(&[0x11; 16]);
        d[e + 16..e + 32].copy_from_slice(&partuuid_on_disk);
        d
    }

    /// `6e6f6f74-0000-4000-8000-000000000002` as GPT stores it.
    pub(crate) const ROOT_PARTUUID_ON_DISK: [u8; 16] = [
        0x74, 0x6f, 0x6f, 0x6e, 0, 0, 0, 0x40, 0x80, 0, 0, 0, 0, 0, 0, 2,
    ];

    pub(crate) fn ext4_image(uuid: [u8; 16], label: &str) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        b[1024 + 0x68..1024 + 0x78].copy_from_slice(&uuid);
        b[1024 + 0x78..1024 + 0x78 + label.len()].copy_from_slice(label.as_bytes());
        b
    }

    #[test]
    fn gpt_partuuid_of_an_entry() {
        let d = gpt_disk(2, ROOT_PARTUUID_ON_DISK);
        let h = gpt_header(&d[512..1024]).unwrap();
        assert_eq!(
            h,
            GptHeader {
                entries_lba: 2,
                entries: 128,
                entry_size: 128
            }
        );
        let off = (h.entries_lba * 512 + h.entry_size as u64) as usize;
        assert_eq!(
            gpt_entry_partuuid(&d[off..off + 128]).as_deref(),
            Some("6e6f6f74-0000-4000-8000-000000000002")
        );
        assert_eq!(
            gpt_entry_partuuid(&d[1024..1152]),
            None,
            "entry 1 is unused"
        );
    }

    #[test]
    fn entry_offsets_are_checked() {
        let h = GptHeader {
            entries_lba: 2,
            entries: 128,
            entry_size: 128,
        };
        assert_eq!(h.entry_offset(1, 512), Some(1024));
        assert_eq!(h.entry_offset(128, 4096), Some(8192 + 127 * 128));
        assert_eq!(h.entry_offset(0, 512), None);
        assert_eq!(h.entry_offset(129, 512), None);
        // Issue 10, item 17: entries_lba 2^62 overflows times 512.
        let h = GptHeader {
            entries_lba: 1 << 62,
            ..h
        };
        assert_eq!(h.entry_offset(1, 512), None);
        let h = GptHeader {
            entries_lba: u64::MAX / 512,
            entries: u32::MAX,
            entry_size: u32::MAX,
        };
        assert_eq!(h.entry_offset(u64::from(u32::MAX), 512), None);
    }

    #[test]
    fn not_a_gpt() {
        assert_eq!(gpt_header(&[0u8; 512]), None);
        let mut d = gpt_disk(1, [1; 16]);
        d[512 + 84..512 + 88].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(gpt_header(&d[512..1024]), None, "entry size 0");
    }

    #[test]
    fn ext4_uuid_and_label() {
        let uuid = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ];
        let fs = probe_fs(&ext4_image(uuid, "genroot")).unwrap();
        assert_eq!(
            fs,
            FsInfo {
                fstype: "ext4",
                uuid: "12345678-9abc-def0-0123-456789abcdef".into(),
                label: "genroot".into()
            }
        );
    }

    #[test]
    fn xfs_uuid_and_label() {
        let mut b = vec![0u8; 512];
        b[..4].copy_from_slice(b"XFSB");
        b[32..48].copy_from_slice(&[0xab; 16]);
        b[108..112].copy_from_slice(b"data");
        let fs = probe_fs(&b).unwrap();
        assert_eq!(fs.fstype, "xfs");
        assert_eq!(fs.uuid, "abababab-abab-abab-abab-abababababab");
        assert_eq!(fs.label, "data");
    }

    #[test]
    fn btrfs_uuid_and_label() {
        let mut b = vec![0u8; PROBE_LEN];
        let sb = 0x10000;
        b[sb + 0x40..sb + 0x48].copy_from_slice(b"_BHRfS_M");
        b[sb + 0x20..sb + 0x30].copy_from_slice(&[0x01; 16]);
        b[sb + 0x12b..sb + 0x12b + 5].copy_from_slice(b"bfsrt");
        let fs = probe_fs(&b).unwrap();
        assert_eq!(fs.fstype, "btrfs");
        assert_eq!(fs.uuid, "01010101-0101-0101-0101-010101010101");
        assert_eq!(fs.label, "bfsrt");
    }

    #[test]
    fn vfat_serial_and_label() {
        let mut b = vec![0u8; 512];
        b[510] = 0x55;
        b[511] = 0xAA;
        b[0x52..0x5a].copy_from_slice(b"FAT32   ");
        b[0x43..0x47].copy_from_slice(&0x1234ABCDu32.to_le_bytes());
        b[0x47..0x52].copy_from_slice(b"ESP        ");
        let fs = probe_fs(&b).unwrap();
        assert_eq!(fs.fstype, "vfat");
        assert_eq!(fs.uuid, "1234-ABCD");
        assert_eq!(fs.label, "ESP");
        // FAT16, no label.
        let mut b = vec![0u8; 512];
        b[510] = 0x55;
        b[511] = 0xAA;
        b[0x36..0x3e].copy_from_slice(b"FAT16   ");
        b[0x27..0x2b].copy_from_slice(&0x0000BEEFu32.to_le_bytes());
        b[0x2B..0x36].copy_from_slice(b"NO NAME    ");
        let fs = probe_fs(&b).unwrap();
        assert_eq!((fs.uuid.as_str(), fs.label.as_str()), ("0000-BEEF", ""));
    }

    #[test]
    fn unknown_bytes_are_no_file_system() {
        assert_eq!(probe_fs(&vec![0u8; PROBE_LEN]), None);
        assert_eq!(probe_fs(&[1, 2, 3]), None);
    }
}
