//! genboot's FAT driver for the ESP inside a disk image: FAT12/16/32,
//! long names, and every write in an order that leaves the volume
//! consistent at every moment.
//!
//! # The guarantee
//!
//! Every change is a sequence of whole-sector writes (one `pwrite` each),
//! ordered so that a stop before any one of them — a `kill -9`, a crash, a
//! power loss after an `fdatasync` barrier — leaves a volume on which
//!
//! - every directory entry the firmware, `fsck.fat` or genboot can see is
//!   complete: its long name and short name sit in **one sector**, so they
//!   appear and disappear in one write; its cluster chain is fully written
//!   and marked in both FAT copies; its size matches its chain;
//! - no entry points at a free cluster and no two entries share a
//!   cluster;
//! - a file being replaced shows its old content or its new content,
//!   never neither, never a mix.
//!
//! What a stop *can* leave is only this, and the next genboot run that
//! opens the volume for writing repairs it (see `check.rs`): clusters
//! marked used that no entry references (the new file's chain before its
//! entry appeared, the old chain after a replace or remove), FAT copy 2
//! one operation behind copy 1, a stale free count in the FS information
//! sector, the dirty bit, and a `*.genboot-tmp` file.
//!
//! # The order of the writes
//!
//! - **New file** (`create_file`, always a `*.genboot-tmp` name): the data
//!   into free clusters; FAT copy 1, then copy 2 (the chain); barrier; the
//!   one directory sector holding the new entry; barrier.
//! - **Replace** (`rename` onto an existing name): the sector that deletes
//!   the temporary entry; barrier; the sector of the target's short entry,
//!   now naming the new chain and size; barrier; FAT 1 and 2 free the old
//!   chain. When both are in one sector, that is one write.
//! - **Rename** to a new name: the one sector holding the old entry is
//!   rewritten with the new name in place (a new name never needs more
//!   slots than `x.genboot-tmp` had). An entry another tool wrote across
//!   two sectors (the firmware's boot-counting rename can) is renamed by
//!   writing the new entry first, then clearing the old one: a stop in
//!   between leaves two names on one chain, which the check repairs.
//! - **Remove**: the sector of the entry (the short entry's sector first,
//!   should an entry written by another tool span two); barrier; FAT 1
//!   and 2 free the chain.
//! - **New directory**: its cluster (`.` and `..`); FAT 1 and 2; barrier;
//!   the entry in the parent; barrier.
//! - A directory that needs room first grows by one zeroed cluster: marked
//!   used in FAT 1 and 2, then linked to the end of the directory's chain
//!   in FAT 1 and 2 (an empty cluster at the end of a directory is valid);
//!   free slots before the new entry that hold the end-of-directory mark
//!   are first turned into deleted slots, so readers that stop at that
//!   mark see the new entry.
//! - The session starts by setting the dirty bit (barrier) and ends by
//!   writing the FS information sector and clearing the dirty bit
//!   (barriers), so a stopped run leaves the bit set for other tools.

use super::dev::Dev;
use std::collections::BTreeSet;
use std::io::{self, Read};

/// Bytes of one directory slot.
const SLOT: usize = 32;
const ATTR_VOLUME: u8 = 0x08;
pub(super) const ATTR_DIR: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LFN: u8 = 0x0F;
const DELETED: u8 = 0xE5;
/// 1980-01-01, the first valid DOS date: every timestamp genboot writes,
/// so images are reproducible. (Date 0, month 0 day 0, is invalid: the
/// UEFI FAT driver then refuses systemd-boot's boot-counting rename.)
const DOS_DATE: u16 = (1 << 5) | 1;
/// Data is written in runs of at most this many bytes.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Fat12,
    Fat16,
    Fat32,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum FatError {
    #[error("{op}: {cause}")]
    Io { op: &'static str, cause: io::Error },
    #[error("{0}")]
    NotFat(String),
    #[error("{0}")]
    Damaged(String),
    #[error("the FAT file system is full")]
    Full,
    #[error("{0}")]
    Refused(String),
    #[error("cannot read the data to write: {0}")]
    Source(io::Error),
}

fn io(op: &'static str) -> impl FnOnce(io::Error) -> FatError {
    move |cause| FatError::Io { op, cause }
}

/// Where a directory's slots live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DirRef {
    /// The fixed root directory region of FAT12/16.
    FixedRoot,
    /// A cluster chain; `root` for the FAT32 root directory.
    Chain { first: u32, root: bool },
}

/// A directory read into memory.
pub(super) struct Dir {
    pub r: DirRef,
    /// On a FAT32 volume (entries keep the high half of their cluster).
    pub fat32: bool,
    pub clusters: Vec<u32>,
    pub bytes: Vec<u8>,
    pub path: String,
}

impl Dir {
    pub fn slots(&self) -> usize {
        self.bytes.len() / SLOT
    }
    pub fn slot(&self, i: usize) -> &[u8] {
        &self.bytes[i * SLOT..(i + 1) * SLOT]
    }
    fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bytes[i * SLOT..(i + 1) * SLOT]
    }
    /// The FAT32 cluster `..` entries of children name (0 for the root).
    fn cluster_for_children(&self) -> u32 {
        match self.r {
            DirRef::Chain { first, root: false } => first,
            _ => 0,
        }
    }
}

/// One file or directory as found in a directory.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// The long name if it is intact, else the short name as `NAME.EXT`.
    pub name: String,
    pub sfn: [u8; 11],
    pub attr: u8,
    pub cluster: u32,
    pub size: u32,
    /// First slot of the entry (its first long-name slot, or the short
    /// entry when it has no long name).
    pub first: usize,
    pub sfn_slot: usize,
    /// Has an intact long name.
    pub long: bool,
    /// Long-name slots right before it did not belong to it (a torn write).
    pub torn_lfn: bool,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.attr & ATTR_DIR != 0
    }
    pub fn short_display(&self) -> String {
        sfn_display(&self.sfn, 0)
    }
}

/// What a directory holds.
pub(super) struct Listing {
    pub entries: Vec<Entry>,
    /// Long-name slots that belong to no entry.
    pub orphans: Vec<usize>,
    /// The first end-of-directory slot (or the slot count).
    pub end: usize,
    /// Something other than free slots after the end mark.
    pub junk_after_end: bool,
}

impl Listing {
    pub fn find(&self, name: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| eq_name(&e.name, name) || eq_name(&e.short_display(), name))
    }
}

/// FAT names compare case-insensitively.
pub(super) fn eq_name(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_uppercase)
        .eq(b.chars().flat_map(char::to_uppercase))
}

pub(super) struct Volume {
    pub dev: Dev,
    pub kind: Kind,
    pub bps: u32,
    pub cluster_bytes: u32,
    reserved: u32,
    fat_sectors: u32,
    /// The FAT copies that are written (all of them unless mirroring is
    /// off), the one read first.
    copies: Vec<u32>,
    root_start: u64,
    root_bytes: u64,
    pub root_cluster: u32,
    data_start: u64,
    /// Data clusters: valid cluster numbers are 2..clusters+2.
    pub clusters: u32,
    fsinfo_sector: Option<u32>,
    /// The FAT as it is meant to be (the active copy, with every change).
    fat: Vec<u8>,
    /// Each written copy as it is on disk.
    on_disk: Vec<Vec<u8>>,
    /// FAT sectors changed in memory since the last flush.
    fat_dirty: BTreeSet<u32>,
    /// Lowest cluster that may be free.
    low_free: u32,
    /// The FAT copies on disk differed when the volume was opened.
    pub copies_differed: bool,
    boot: Vec<u8>,
    pub dirty_on_disk: bool,
    /// FSInfo (free count, next free) as on disk.
    fsinfo_on_disk: Option<(u32, u32)>,
    /// Writes have started: the dirty bit is set and staged repairs are
    /// written.
    started: bool,
    /// Files and directories created, renamed or removed.
    pub touched: u64,
}

fn le16(b: &[u8], at: usize) -> u32 {
    u32::from(u16::from_le_bytes([b[at], b[at + 1]]))
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

const FSINFO_LEAD: u32 = 0x4161_5252;
const FSINFO_STRUC: u32 = 0x6141_7272;
const FSINFO_TRAIL: u32 = 0xAA55_0000;

impl Volume {
    /// Read and check the boot sector and load the FAT.
    pub fn open(dev: Dev) -> Result<Volume, FatError> {
        let bad = |what: String| FatError::NotFat(what);
        let mut boot = vec![0u8; 512];
        dev.read(0, &mut boot).map_err(io("read the boot sector"))?;
        if boot[510] != 0x55 || boot[511] != 0xAA {
            return Err(bad("its boot sector has no 55 AA signature".into()));
        }
        let bps = le16(&boot, 0x0B);
        if !matches!(bps, 512 | 1024 | 2048 | 4096) {
            return Err(bad(format!("bytes per sector is {bps}")));
        }
        let spc = u32::from(boot[0x0D]);
        if spc == 0 || !spc.is_power_of_two() || spc * bps > 64 * 1024 {
            return Err(bad(format!("sectors per cluster is {spc}")));
        }
        let reserved = le16(&boot, 0x0E);
        let nfats = u32::from(boot[0x10]);
        let root_entries = le16(&boot, 0x11);
        let total = match le16(&boot, 0x13) {
            0 => le32(&boot, 0x20),
            n => n,
        };
        let fat16_size = le16(&boot, 0x16);
        let fat_sectors = if fat16_size != 0 {
            fat16_size
        } else {
            le32(&boot, 0x24)
        };
        if reserved == 0 || !(1..=2).contains(&nfats) || fat_sectors == 0 || total == 0 {
            return Err(bad(format!(
                "reserved sectors {reserved}, FATs {nfats}, sectors per FAT {fat_sectors}, total sectors {total}"
            )));
        }
        let root_sectors = (root_entries * 32).div_ceil(bps);
        let data_sector = u64::from(reserved)
            + u64::from(nfats) * u64::from(fat_sectors)
            + u64::from(root_sectors);
        if data_sector >= u64::from(total) {
            return Err(bad("it has no data area".into()));
        }
        if u64::from(total) * u64::from(bps) > dev.len() {
            return Err(FatError::Refused(format!(
                "its boot sector says it has {total} sectors of {bps} bytes ({} bytes), more than the partition's {} bytes",
                u64::from(total) * u64::from(bps),
                dev.len()
            )));
        }
        let clusters = ((u64::from(total) - data_sector) / u64::from(spc)) as u32;
        let kind = if clusters < 4085 {
            Kind::Fat12
        } else if clusters < 65525 {
            Kind::Fat16
        } else {
            Kind::Fat32
        };
        if (kind == Kind::Fat32) != (fat16_size == 0 && root_entries == 0) {
            return Err(bad(format!(
                "{clusters} clusters make it FAT32, but its boot sector is laid out for FAT12/16 (or the other way round)"
            )));
        }
        let bits = match kind {
            Kind::Fat12 => 12,
            Kind::Fat16 => 16,
            Kind::Fat32 => 32,
        };
        if (u64::from(clusters) + 2) * bits > u64::from(fat_sectors) * u64::from(bps) * 8 {
            return Err(bad(format!(
                "its FAT ({fat_sectors} sectors) is too small for {clusters} clusters"
            )));
        }
        let (root_cluster, fsinfo_sector, copies) = if kind == Kind::Fat32 {
            let rc = le32(&boot, 0x2C);
            if rc < 2 || rc >= clusters + 2 {
                return Err(bad(format!(
                    "its root directory cluster {rc} is out of range"
                )));
            }
            let fsi = le16(&boot, 0x30);
            let fsi = (fsi != 0 && fsi != 0xFFFF && fsi < reserved).then_some(fsi);
            let ext = le16(&boot, 0x28);
            let copies = if ext & 0x80 != 0 {
                let active = ext & 0x0F;
                if active >= nfats {
                    return Err(bad(format!("its active FAT {active} does not exist")));
                }
                vec![active]
            } else {
                (0..nfats).collect()
            };
            (rc, fsi, copies)
        } else {
            (0, None, (0..nfats).collect())
        };
        // Only the part of each FAT that holds entries of real clusters is
        // read and kept (the rest is padding); a volume whose FAT would
        // not fit in memory comfortably is not an ESP.
        let fat_len = ((u64::from(clusters) + 2) * bits)
            .div_ceil(8)
            .div_ceil(u64::from(bps))
            * u64::from(bps);
        if fat_len > 256 << 20 {
            return Err(FatError::Refused(format!(
                "its FAT is {fat_len} bytes ({clusters} clusters), too large for an EFI System Partition genboot handles"
            )));
        }
        let on_disk = read_fats(&dev, fat_len as usize, &copies, reserved, fat_sectors, bps)?;
        let fat = on_disk[0].clone();
        let fsinfo_on_disk = match fsinfo_sector {
            Some(s) => Some(read_fsinfo(&dev, s, bps)?),
            None => None,
        };
        let flag_at = if kind == Kind::Fat32 { 0x41 } else { 0x25 };
        let dirty_on_disk = boot[flag_at] & 1 != 0;
        let mut v = Volume {
            dev,
            kind,
            bps,
            cluster_bytes: spc * bps,
            reserved,
            fat_sectors,
            copies,
            root_start: (u64::from(reserved) + u64::from(nfats) * u64::from(fat_sectors))
                * u64::from(bps),
            root_bytes: u64::from(root_entries) * 32,
            root_cluster,
            data_start: data_sector * u64::from(bps),
            clusters,
            fsinfo_sector,
            fat,
            on_disk,
            fat_dirty: BTreeSet::new(),
            low_free: 2,
            copies_differed: false,
            boot,
            dirty_on_disk,
            fsinfo_on_disk,
            started: false,
            touched: 0,
        };
        // Copies that differ from the active one are rewritten by the next
        // flush (genboot always writes copy 1 first, so it is the newer).
        for s in 0..(v.fat.len() / v.bps as usize) as u32 {
            let r = v.sector_range(s);
            if v.on_disk.iter().any(|d| d[r.clone()] != v.fat[r.clone()]) {
                v.fat_dirty.insert(s);
                v.copies_differed = true;
            }
        }
        Ok(v)
    }

    /// The FAT as genboot keeps it (for tests).
    #[cfg(test)]
    pub fn fat_bytes(&self) -> &[u8] {
        &self.fat
    }

    fn sector_range(&self, s: u32) -> std::ops::Range<usize> {
        let b = self.bps as usize;
        s as usize * b..(s as usize + 1) * b
    }

    /// The volume was marked dirty (boot sector flag, or the FAT's
    /// clean-shutdown bit clear).
    pub fn marked_dirty(&self) -> bool {
        self.dirty_on_disk || !self.clean_bit()
    }

    fn clean_bit(&self) -> bool {
        match self.kind {
            Kind::Fat32 => self.fat_raw(1) & 0x0800_0000 != 0,
            Kind::Fat16 => self.fat_raw(1) & 0x8000 != 0,
            Kind::Fat12 => true,
        }
    }

    // ----- the FAT -----

    fn fat_raw(&self, c: u32) -> u32 {
        let c = c as usize;
        match self.kind {
            Kind::Fat32 => le32(&self.fat, c * 4),
            Kind::Fat16 => le16(&self.fat, c * 2),
            Kind::Fat12 => {
                let w = le16(&self.fat, c + c / 2);
                if c.is_multiple_of(2) {
                    w & 0xFFF
                } else {
                    w >> 4
                }
            }
        }
    }

    /// The FAT entry of cluster `c`.
    pub fn fat_get(&self, c: u32) -> u32 {
        match self.kind {
            Kind::Fat32 => self.fat_raw(c) & 0x0FFF_FFFF,
            _ => self.fat_raw(c),
        }
    }

    pub fn fat_set(&mut self, c: u32, v: u32) {
        let i = c as usize;
        let (at, len) = match self.kind {
            Kind::Fat32 => {
                let keep = le32(&self.fat, i * 4) & 0xF000_0000;
                self.fat[i * 4..i * 4 + 4]
                    .copy_from_slice(&(keep | (v & 0x0FFF_FFFF)).to_le_bytes());
                (i * 4, 4)
            }
            Kind::Fat16 => {
                self.fat[i * 2..i * 2 + 2].copy_from_slice(&(v as u16).to_le_bytes());
                (i * 2, 2)
            }
            Kind::Fat12 => {
                let at = i + i / 2;
                let w = le16(&self.fat, at);
                let w = if i.is_multiple_of(2) {
                    (w & 0xF000) | (v & 0xFFF)
                } else {
                    (w & 0x000F) | ((v & 0xFFF) << 4)
                };
                self.fat[at..at + 2].copy_from_slice(&(w as u16).to_le_bytes());
                (at, 2)
            }
        };
        let b = self.bps as usize;
        self.fat_dirty.insert((at / b) as u32);
        self.fat_dirty.insert(((at + len - 1) / b) as u32);
        if v == 0 {
            self.low_free = self.low_free.min(c);
        }
    }

    fn eoc(&self) -> u32 {
        match self.kind {
            Kind::Fat32 => 0x0FFF_FFFF,
            Kind::Fat16 => 0xFFFF,
            Kind::Fat12 => 0xFFF,
        }
    }

    pub fn is_eoc(&self, v: u32) -> bool {
        v >= self.eoc() - 7
    }

    pub fn is_bad(&self, v: u32) -> bool {
        v == self.eoc() - 8
    }

    pub fn in_range(&self, c: u32) -> bool {
        c >= 2 && c < self.clusters + 2
    }

    /// Free clusters, counted from the FAT itself (the FS information
    /// sector's count is only a hint).
    pub fn free_clusters(&self) -> u64 {
        (2..self.clusters + 2)
            .filter(|c| self.fat_get(*c) == 0)
            .count() as u64
    }

    /// Allocate `n` free clusters (lowest first), chained, the last marked
    /// end of chain; in memory only until [`Volume::flush_fat`].
    fn alloc(&mut self, n: usize) -> Result<Vec<u32>, FatError> {
        let mut out = Vec::with_capacity(n);
        let mut c = self.low_free.max(2);
        while out.len() < n {
            if c >= self.clusters + 2 {
                for got in &out {
                    self.fat_set(*got, 0);
                }
                return Err(FatError::Full);
            }
            if self.fat_get(c) == 0 {
                out.push(c);
                let eoc = self.eoc();
                self.fat_set(c, eoc);
            }
            c += 1;
        }
        self.low_free = c;
        for w in out.windows(2) {
            self.fat_set(w[0], w[1]);
        }
        Ok(out)
    }

    /// The chain starting at `first`, checked: every cluster in range and
    /// in use, no loop, and exactly `expect` clusters when given.
    pub fn chain(&self, first: u32, expect: Option<u64>) -> Result<Vec<u32>, String> {
        if !self.in_range(first) {
            return Err(format!("it starts at cluster {first}, outside the volume"));
        }
        if let Some(e) = expect {
            if e > u64::from(self.clusters) {
                return Err(format!(
                    "its size needs {e} clusters, more than the volume has ({})",
                    self.clusters
                ));
            }
        }
        let mut out = Vec::new();
        let mut c = first;
        loop {
            if expect.is_some_and(|e| out.len() as u64 >= e) {
                return Err(format!(
                    "its cluster chain is longer than its size ({} clusters of {} bytes)",
                    expect.unwrap_or(0),
                    self.cluster_bytes
                ));
            }
            if out.len() > self.clusters as usize {
                return Err("its cluster chain loops".into());
            }
            out.push(c);
            let v = self.fat_get(c);
            if v == 0 {
                return Err(format!("its cluster {c} is marked free in the FAT"));
            }
            if self.is_bad(v) {
                return Err(format!("its cluster chain reaches a bad cluster after {c}"));
            }
            if self.is_eoc(v) {
                break;
            }
            if !self.in_range(v) {
                return Err(format!(
                    "its cluster chain leaves the volume after cluster {c} ({v:#x})"
                ));
            }
            c = v;
        }
        if let Some(e) = expect {
            if out.len() as u64 != e {
                return Err(format!(
                    "its cluster chain is shorter than its size ({} of {e} clusters)",
                    out.len()
                ));
            }
        }
        Ok(out)
    }

    fn cluster_off(&self, c: u32) -> u64 {
        self.data_start + u64::from(c - 2) * u64::from(self.cluster_bytes)
    }

    fn fat_off(&self, copy: u32) -> u64 {
        (u64::from(self.reserved) + u64::from(copy) * u64::from(self.fat_sectors))
            * u64::from(self.bps)
    }

    /// Write the FAT sectors that changed, to copy 1 and then copy 2
    /// (adjacent sectors in one write).
    pub fn flush_fat(&mut self, what: &str) -> Result<(), FatError> {
        if self.fat_dirty.is_empty() {
            return Ok(());
        }
        self.begin_write()?;
        let dirty: Vec<u32> = std::mem::take(&mut self.fat_dirty).into_iter().collect();
        for (k, copy) in self.copies.clone().into_iter().enumerate() {
            let changed: Vec<u32> = dirty
                .iter()
                .copied()
                .filter(|s| {
                    let r = self.sector_range(*s);
                    self.on_disk[k][r.clone()] != self.fat[r]
                })
                .collect();
            let mut i = 0;
            while i < changed.len() {
                let mut j = i + 1;
                while j < changed.len() && changed[j] == changed[j - 1] + 1 && j - i < 64 {
                    j += 1;
                }
                let (a, b) = (changed[i], changed[j - 1]);
                let r = self.sector_range(a).start..self.sector_range(b).end;
                let data = self.fat[r.clone()].to_vec();
                self.dev
                    .write(
                        self.fat_off(copy) + r.start as u64,
                        &data,
                        &format!("FAT copy {} ({what})", copy + 1),
                    )
                    .map_err(io("write the FAT"))?;
                self.on_disk[k][r].copy_from_slice(&data);
                i = j;
            }
        }
        Ok(())
    }

    pub fn barrier(&mut self) -> Result<(), FatError> {
        self.dev.sync().map_err(io("sync"))
    }

    // ----- session: dirty bit, staged repairs, FS information -----

    fn flag_offset(&self) -> usize {
        if self.kind == Kind::Fat32 {
            0x41
        } else {
            0x25
        }
    }

    fn write_flag(&mut self, dirty: bool, what: &str) -> Result<(), FatError> {
        let at = self.flag_offset();
        let mut sector = self.boot.clone();
        sector[at] = if dirty {
            sector[at] | 1
        } else {
            sector[at] & !1
        };
        // The boot sector as it is on disk (512 bytes read at open).
        self.dev
            .write(0, &sector, what)
            .map_err(io("write the boot sector"))?;
        self.boot = sector;
        self.dirty_on_disk = dirty;
        Ok(())
    }

    /// Before the first write of a session: set the dirty bit, then write
    /// the repairs staged when the volume was opened (directory sectors,
    /// then the FAT).
    pub fn begin_write(&mut self) -> Result<(), FatError> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        if !self.dirty_on_disk {
            self.write_flag(true, "boot sector: set the dirty bit")?;
            self.barrier()?;
        }
        if self.dev.has_staged() {
            self.dev.write_staged().map_err(io("write repairs"))?;
            self.barrier()?;
        }
        self.flush_fat("repairs")?;
        Ok(())
    }

    /// Stage a write of directory bytes (repairs at open).
    pub fn stage_dir_sector(
        &mut self,
        dir: &Dir,
        slot: usize,
        what: String,
    ) -> Result<(), FatError> {
        let (off, r) = self.slot_sector(dir, slot);
        self.dev
            .stage(off, dir.bytes[r].to_vec(), what)
            .map_err(io("stage a repair"))
    }

    /// Whether closing has anything to write: changes, staged repairs, a
    /// stale FS information sector or a dirty mark.
    pub fn needs_finish(&self) -> bool {
        self.started
            || self.dev.has_staged()
            || !self.fat_dirty.is_empty()
            || self.marked_dirty()
            || self.fsinfo_stale()
    }

    fn fsinfo_want(&self) -> (u32, u32) {
        let free = self.free_clusters() as u32;
        let next = (2..self.clusters + 2)
            .find(|c| self.fat_get(*c) == 0)
            .unwrap_or(0xFFFF_FFFF);
        (free, next)
    }

    /// The free count in the FS information sector is wrong (unknown,
    /// 0xFFFFFFFF as a fresh format writes it, is not wrong).
    pub fn fsinfo_stale(&self) -> bool {
        self.fsinfo_on_disk
            .is_some_and(|(free, _)| free != 0xFFFF_FFFF && free != self.free_clusters() as u32)
    }

    /// End the session: the FS information sector, the FAT's clean bit,
    /// and the dirty bit cleared — only when `clean` (the volume was
    /// checked and holds no damage genboot left alone).
    pub fn finish(&mut self, clean: bool) -> Result<(), FatError> {
        if !self.needs_finish() {
            return Ok(());
        }
        self.begin_write()?;
        if clean && !self.clean_bit() {
            let bit = if self.kind == Kind::Fat32 {
                0x0800_0000
            } else {
                0x8000
            };
            let v = self.fat_get(1) | bit;
            self.fat_set(1, v);
        }
        self.flush_fat("finish")?;
        if let (Some(s), Some(old)) = (self.fsinfo_sector, self.fsinfo_on_disk) {
            let want = self.fsinfo_want();
            if want != old {
                let off = u64::from(s) * u64::from(self.bps);
                let mut b = vec![0u8; 512];
                self.dev
                    .read(off, &mut b)
                    .map_err(io("read the FS information sector"))?;
                b[488..492].copy_from_slice(&want.0.to_le_bytes());
                b[492..496].copy_from_slice(&want.1.to_le_bytes());
                self.dev
                    .write(off, &b, "FS information sector (free count)")
                    .map_err(io("write the FS information sector"))?;
                self.fsinfo_on_disk = Some(want);
            }
        }
        self.barrier()?;
        if clean && self.dirty_on_disk {
            self.write_flag(false, "boot sector: clear the dirty bit")?;
            self.barrier()?;
        }
        Ok(())
    }

    // ----- directories -----

    pub fn root(&self) -> DirRef {
        match self.kind {
            Kind::Fat32 => DirRef::Chain {
                first: self.root_cluster,
                root: true,
            },
            _ => DirRef::FixedRoot,
        }
    }

    /// Read a directory (staged repairs included).
    pub fn load_dir(&self, r: DirRef, path: &str) -> Result<Dir, FatError> {
        match r {
            DirRef::FixedRoot => {
                let mut bytes = vec![0u8; self.root_bytes as usize];
                self.dev
                    .read(self.root_start, &mut bytes)
                    .map_err(io("read the root directory"))?;
                Ok(Dir {
                    r,
                    fat32: false,
                    clusters: Vec::new(),
                    bytes,
                    path: path.to_string(),
                })
            }
            DirRef::Chain { first, .. } => {
                let clusters = self
                    .chain(first, None)
                    .map_err(|e| FatError::Damaged(format!("directory /{path}: {e}")))?;
                // 65536 slots is the most a FAT directory may have.
                if clusters.len() as u64 * u64::from(self.cluster_bytes) > 65536 * 32 {
                    return Err(FatError::Damaged(format!(
                        "directory /{path}: its cluster chain is longer than a directory may be"
                    )));
                }
                let bytes = self.read_clusters(
                    &clusters,
                    clusters.len() as u64 * u64::from(self.cluster_bytes),
                )?;
                Ok(Dir {
                    r,
                    fat32: self.kind == Kind::Fat32,
                    clusters,
                    bytes,
                    path: path.to_string(),
                })
            }
        }
    }

    /// `len` bytes from the start of a chain (contiguous clusters in one
    /// read).
    pub fn read_clusters(&self, chain: &[u32], len: u64) -> Result<Vec<u8>, FatError> {
        let cb = u64::from(self.cluster_bytes);
        let mut out = vec![0u8; len as usize];
        let mut i = 0;
        while i < chain.len() && (i as u64) * cb < len {
            let mut j = i + 1;
            while j < chain.len() && chain[j] == chain[j - 1] + 1 && (j - i) * (cb as usize) < CHUNK
            {
                j += 1;
            }
            let from = i as u64 * cb;
            let to = (j as u64 * cb).min(len);
            self.dev
                .read(
                    self.cluster_off(chain[i]),
                    &mut out[from as usize..to as usize],
                )
                .map_err(io("read"))?;
            i = j;
        }
        Ok(out)
    }

    /// Partition offset of the sector holding `slot`, and that sector's
    /// range in `dir.bytes`.
    fn slot_sector(&self, dir: &Dir, slot: usize) -> (u64, std::ops::Range<usize>) {
        let b = self.bps as usize;
        let byte = slot * SLOT;
        let start = byte / b * b;
        let off = match dir.r {
            DirRef::FixedRoot => self.root_start + start as u64,
            DirRef::Chain { .. } => {
                let cb = self.cluster_bytes as usize;
                self.cluster_off(dir.clusters[start / cb]) + (start % cb) as u64
            }
        };
        (off, start..start + b)
    }

    fn same_sector(&self, a: usize, b: usize) -> bool {
        a * SLOT / self.bps as usize == b * SLOT / self.bps as usize
    }

    /// Write the sector of `dir` holding `slot`, from `dir.bytes`.
    fn write_dir_sector(&mut self, dir: &Dir, slot: usize, what: &str) -> Result<(), FatError> {
        let (off, r) = self.slot_sector(dir, slot);
        let data = dir.bytes[r].to_vec();
        self.dev
            .write(off, &data, &format!("directory /{} ({what})", dir.path))
            .map_err(io("write a directory"))
    }

    /// The entries of `dir`.
    pub fn parse(&self, dir: &Dir) -> Listing {
        parse(dir)
    }

    /// The directory at `path` ("" is the root).
    pub fn open_dir(&self, path: &str) -> Result<Option<(Dir, Listing)>, FatError> {
        let mut dir = self.load_dir(self.root(), "")?;
        let mut so_far = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let listing = parse(&dir);
            let Some(e) = listing.find(part).cloned() else {
                return Ok(None);
            };
            if !e.is_dir() {
                return Ok(None);
            }
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(&e.name);
            if !self.in_range(e.cluster) {
                return Err(FatError::Damaged(format!(
                    "directory /{so_far} starts at cluster {}, outside the volume",
                    e.cluster
                )));
            }
            let r = DirRef::Chain {
                first: e.cluster,
                root: false,
            };
            dir = self.load_dir(r, &so_far)?;
        }
        let listing = parse(&dir);
        Ok(Some((dir, listing)))
    }

    /// The entry at `path`.
    pub fn lookup(&self, path: &str) -> Result<Option<Entry>, FatError> {
        let (parent, name) = split(path);
        Ok(self
            .open_dir(parent)?
            .and_then(|(_, l)| l.find(name).cloned()))
    }

    /// The whole content of a file entry, at most `cap` bytes (a bigger
    /// file is an error), its chain checked first.
    pub fn read_file(&self, path: &str, e: &Entry, cap: u64) -> Result<Vec<u8>, FatError> {
        if u64::from(e.size) > cap {
            return Err(FatError::Refused(format!(
                "/{path} is {} bytes; genboot reads at most {cap} bytes of a file it compares",
                e.size
            )));
        }
        if e.size == 0 {
            return Ok(Vec::new());
        }
        let chain = self
            .chain(e.cluster, Some(self.clusters_for(u64::from(e.size))))
            .map_err(|w| FatError::Damaged(format!("/{path}: {w}")))?;
        self.read_clusters(&chain, u64::from(e.size))
    }

    pub fn clusters_for(&self, size: u64) -> u64 {
        size.div_ceil(u64::from(self.cluster_bytes))
    }

    // ----- writes -----

    /// Find room for `n` slots inside one sector of `dir` (growing it by
    /// one cluster if there is none), turn end-of-directory slots before
    /// it into deleted slots, and return the first slot.
    fn make_room(&mut self, dir: &mut Dir, listing: &Listing, n: usize) -> Result<usize, FatError> {
        let per_sector = self.bps as usize / SLOT;
        if n > per_sector {
            return Err(FatError::Refused(format!(
                "a name that long needs {n} directory slots, more than one sector holds ({per_sector})"
            )));
        }
        let free = |d: &Dir, i: usize| i >= listing.end || d.slot(i)[0] == DELETED;
        let slots = dir.slots();
        let mut found = None;
        let mut i = 0;
        while i + n <= slots {
            if self.same_sector(i, i + n - 1) && (i..i + n).all(|k| free(dir, k)) {
                found = Some(i);
                break;
            }
            i += 1;
        }
        let at = match found {
            Some(i) => i,
            None => {
                let DirRef::Chain { .. } = dir.r else {
                    return Err(FatError::Refused(format!(
                        "the root directory is full ({slots} slots)"
                    )));
                };
                if (slots + per_sector) * SLOT > 65536 * 32 {
                    return Err(FatError::Refused(format!(
                        "directory /{} is full (65536 slots)",
                        dir.path
                    )));
                }
                // Grow: a zeroed cluster, marked used (end of chain) in
                // both FATs, and only then linked at the end of the chain:
                // one flush for both could write the link first (the FAT
                // sectors go out in order), and a stop in between would
                // leave the directory running into a free cluster.
                self.begin_write()?;
                let c = self.alloc(1)?[0];
                let zeros = vec![0u8; self.cluster_bytes as usize];
                self.dev
                    .write(
                        self.cluster_off(c),
                        &zeros,
                        &format!("directory /{} (new cluster)", dir.path),
                    )
                    .map_err(io("write a directory"))?;
                self.flush_fat(&format!("new cluster of /{}", dir.path))?;
                let last = *dir.clusters.last().expect("a chain has a cluster");
                self.fat_set(last, c);
                self.flush_fat(&format!("link the new cluster into /{}", dir.path))?;
                self.barrier()?;
                dir.clusters.push(c);
                dir.bytes.extend_from_slice(&zeros);
                slots
            }
        };
        // End-of-directory slots before `at` become deleted slots, so
        // readers that stop at the mark reach the new entry.
        let gap: Vec<usize> = (listing.end..at).filter(|k| dir.slot(*k)[0] == 0).collect();
        if !gap.is_empty() {
            let mut sectors = Vec::new();
            for k in gap {
                dir.slot_mut(k)[0] = DELETED;
                let s = self.slot_sector(dir, k).0;
                if !sectors.iter().any(|(o, _)| *o == s) {
                    sectors.push((s, k));
                }
            }
            for (_, k) in sectors {
                self.write_dir_sector(dir, k, "extend past the end mark")?;
            }
            self.barrier()?;
        }
        Ok(at)
    }

    /// Put `set` at `at` in memory and write its one sector.
    fn write_set(
        &mut self,
        dir: &mut Dir,
        at: usize,
        set: &[[u8; 32]],
        what: &str,
    ) -> Result<(), FatError> {
        for (k, s) in set.iter().enumerate() {
            dir.slot_mut(at + k).copy_from_slice(s);
        }
        self.write_dir_sector(dir, at, what)
    }

    /// Create `path` (a new name) with the bytes of `data`. The entry
    /// appears only once its data and chain are written; on an error
    /// nothing of it remains (its clusters stay free).
    pub fn create_file(&mut self, path: &str, data: &mut dyn Read) -> Result<(), FatError> {
        let (parent, name) = split(path);
        check_name(name)?;
        let (mut dir, mut listing) = self
            .open_dir(parent)?
            .ok_or_else(|| FatError::Refused(format!("directory /{parent} does not exist")))?;
        if let Some(old) = listing.find(name).cloned() {
            if old.is_dir() {
                return Err(FatError::Refused(format!("/{path} is a directory")));
            }
            self.remove_entry(&mut dir, &old, path)?;
            listing = parse(&dir);
        }
        self.begin_write()?;
        let mut chain: Vec<u32> = Vec::new();
        let written = self.write_data(path, data, &mut chain);
        let size = match written {
            Ok(size) => size,
            Err(e) => {
                for c in &chain {
                    self.fat_set(*c, 0);
                }
                return Err(e);
            }
        };
        self.flush_fat(&format!("chain of /{path}"))?;
        self.barrier()?;
        let sfn = unique_sfn(&listing, name, None);
        let set = entry_set(
            name,
            &sfn_entry(
                sfn,
                ATTR_ARCHIVE,
                chain.first().copied().unwrap_or(0),
                size,
                self.kind,
            ),
        );
        let at = self.make_room(&mut dir, &listing, set.len())?;
        self.write_set(&mut dir, at, &set, &format!("new entry {name}"))?;
        self.barrier()?;
        self.touched += 1;
        Ok(())
    }

    fn write_data(
        &mut self,
        path: &str,
        data: &mut dyn Read,
        chain: &mut Vec<u32>,
    ) -> Result<u32, FatError> {
        let cb = self.cluster_bytes as usize;
        let chunk = CHUNK / cb * cb;
        let mut buf = vec![0u8; chunk.max(cb)];
        let mut size: u64 = 0;
        loop {
            let mut n = 0;
            while n < buf.len() {
                match data.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(FatError::Source(e)),
                }
            }
            if n == 0 {
                break;
            }
            size += n as u64;
            if size > u64::from(u32::MAX) {
                return Err(FatError::Refused(format!(
                    "/{path} would be bigger than a FAT file may be (4 GiB)"
                )));
            }
            let want = n.div_ceil(cb);
            let new = self.alloc(want)?;
            if let Some(&last) = chain.last() {
                self.fat_set(last, new[0]);
            }
            chain.extend_from_slice(&new);
            // Whole clusters (zero-padded), so the image bytes do not
            // depend on what free clusters held before.
            buf[n..want * cb].fill(0);
            let mut i = 0;
            while i < new.len() {
                let mut j = i + 1;
                while j < new.len() && new[j] == new[j - 1] + 1 {
                    j += 1;
                }
                self.dev
                    .write(
                        self.cluster_off(new[i]),
                        &buf[i * cb..j * cb],
                        &format!("data of /{path}"),
                    )
                    .map_err(io("write file data"))?;
                i = j;
            }
            if n < buf.len() {
                break;
            }
        }
        Ok(size as u32)
    }

    /// Mark the slots of `e` deleted (the short entry's sector first),
    /// then free its chain.
    fn remove_entry(&mut self, dir: &mut Dir, e: &Entry, path: &str) -> Result<(), FatError> {
        let chain = if e.cluster == 0 {
            Vec::new()
        } else {
            let expect = (!e.is_dir()).then(|| self.clusters_for(u64::from(e.size)));
            self.chain(e.cluster, expect)
                .map_err(|w| FatError::Damaged(format!("/{path}: {w}")))?
        };
        self.begin_write()?;
        for s in self.sectors_sfn_first(dir, e) {
            for k in e.first..=e.sfn_slot {
                if self.same_sector(k, s) {
                    dir.slot_mut(k)[0] = DELETED;
                }
            }
            self.write_dir_sector(dir, s, &format!("remove {}", e.name))?;
            self.barrier()?;
        }
        for c in chain {
            self.fat_set(c, 0);
        }
        self.flush_fat(&format!("free /{path}"))?;
        self.touched += 1;
        Ok(())
    }

    /// A slot in each sector `e` spans, the short entry's sector first.
    fn sectors_sfn_first(&self, _dir: &Dir, e: &Entry) -> Vec<usize> {
        let mut out = vec![e.sfn_slot];
        for k in (e.first..e.sfn_slot).rev() {
            if !out.iter().any(|s| self.same_sector(*s, k)) {
                out.push(k);
            }
        }
        out
    }

    /// Remove the file at `path`; `false` when there is none.
    pub fn remove(&mut self, path: &str) -> Result<bool, FatError> {
        let (parent, name) = split(path);
        let Some((mut dir, listing)) = self.open_dir(parent)? else {
            return Ok(false);
        };
        let Some(e) = listing.find(name).cloned() else {
            return Ok(false);
        };
        if e.is_dir() {
            return Err(FatError::Refused(format!("/{path} is a directory")));
        }
        self.remove_entry(&mut dir, &e, path)?;
        Ok(true)
    }

    /// Rename `from` to `to` in the same directory, replacing `to`.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), FatError> {
        let (fp, fname) = split(from);
        let (tp, tname) = split(to);
        if !eq_name(fp, tp) {
            return Err(FatError::Refused(format!(
                "cannot move /{from} to another directory (/{to})"
            )));
        }
        check_name(tname)?;
        let (mut dir, listing) = self
            .open_dir(fp)?
            .ok_or_else(|| FatError::Refused(format!("directory /{fp} does not exist")))?;
        let src = listing
            .find(fname)
            .cloned()
            .ok_or_else(|| FatError::Refused(format!("/{from} does not exist")))?;
        let dst = listing
            .find(tname)
            .cloned()
            .filter(|d| d.sfn_slot != src.sfn_slot);
        self.begin_write()?;
        match dst {
            Some(dst) => self.replace(&mut dir, &src, &dst, to)?,
            None => self.rename_entry(&mut dir, &listing, &src, tname)?,
        }
        self.touched += 1;
        Ok(())
    }

    /// `dst` takes over the chain and size of `src`; `src`'s entry goes
    /// first, so a stop in between leaves `dst` as it was (and the new
    /// chain unreferenced), never two entries on one chain.
    fn replace(
        &mut self,
        dir: &mut Dir,
        src: &Entry,
        dst: &Entry,
        to: &str,
    ) -> Result<(), FatError> {
        if dst.is_dir() || src.is_dir() {
            return Err(FatError::Refused(format!("/{to} is a directory")));
        }
        let old = if dst.cluster == 0 {
            Vec::new()
        } else {
            self.chain(dst.cluster, Some(self.clusters_for(u64::from(dst.size))))
                .map_err(|w| FatError::Damaged(format!("/{to}: {w}")))?
        };
        let dst_sector = dst.sfn_slot;
        let mut pending_dst = true;
        for s in self.sectors_sfn_first(dir, src) {
            for k in src.first..=src.sfn_slot {
                if self.same_sector(k, s) {
                    dir.slot_mut(k)[0] = DELETED;
                }
            }
            if self.same_sector(s, dst_sector) {
                set_cluster_size(dir.slot_mut(dst.sfn_slot), src.cluster, src.size, self.kind);
                pending_dst = false;
            }
            self.write_dir_sector(dir, s, &format!("replace {} with {}", dst.name, src.name))?;
            self.barrier()?;
        }
        if pending_dst {
            set_cluster_size(dir.slot_mut(dst.sfn_slot), src.cluster, src.size, self.kind);
            self.write_dir_sector(
                dir,
                dst.sfn_slot,
                &format!("{} gets the new content", dst.name),
            )?;
            self.barrier()?;
        }
        // (A target on the same chain — never written so — keeps it.)
        if dst.cluster != src.cluster {
            for c in old {
                self.fat_set(c, 0);
            }
        }
        self.flush_fat(&format!("free the old chain of /{to}"))?;
        Ok(())
    }

    /// Give `src` the name `name`: in place when its slots are in one
    /// sector and the new name needs no more of them (one write); else the
    /// new entry first, then the old one removed.
    fn rename_entry(
        &mut self,
        dir: &mut Dir,
        listing: &Listing,
        src: &Entry,
        name: &str,
    ) -> Result<(), FatError> {
        let sfn = unique_sfn(listing, name, Some(src.sfn_slot));
        let mut short = [0u8; 32];
        short.copy_from_slice(dir.slot(src.sfn_slot));
        short[..11].copy_from_slice(&sfn);
        short[12] = 0;
        let set = entry_set(name, &short);
        let have = src.sfn_slot + 1 - src.first;
        if self.same_sector(src.first, src.sfn_slot) && set.len() <= have {
            for k in src.first..src.sfn_slot + 1 - set.len() {
                dir.slot_mut(k)[0] = DELETED;
            }
            let at = src.sfn_slot + 1 - set.len();
            self.write_set(dir, at, &set, &format!("rename {} to {name}", src.name))?;
            self.barrier()?;
            return Ok(());
        }
        let at = self.make_room(dir, listing, set.len())?;
        self.write_set(
            dir,
            at,
            &set,
            &format!("rename {} to {name} (new entry)", src.name),
        )?;
        self.barrier()?;
        for s in self.sectors_sfn_first(dir, src) {
            for k in src.first..=src.sfn_slot {
                if self.same_sector(k, s) {
                    dir.slot_mut(k)[0] = DELETED;
                }
            }
            self.write_dir_sector(
                dir,
                s,
                &format!("rename {} to {name} (old entry)", src.name),
            )?;
            self.barrier()?;
        }
        Ok(())
    }

    /// Create the directory `path` (its parent must exist); an existing
    /// directory is fine.
    pub fn mkdir(&mut self, path: &str) -> Result<(), FatError> {
        let (parent, name) = split(path);
        check_name(name)?;
        let (mut dir, listing) = self
            .open_dir(parent)?
            .ok_or_else(|| FatError::Refused(format!("directory /{parent} does not exist")))?;
        if let Some(e) = listing.find(name) {
            if e.is_dir() {
                return Ok(());
            }
            return Err(FatError::Refused(format!(
                "/{path} exists and is not a directory"
            )));
        }
        self.begin_write()?;
        let c = self.alloc(1)?[0];
        let mut data = vec![0u8; self.cluster_bytes as usize];
        let mut dot = [b' '; 11];
        dot[0] = b'.';
        data[..32].copy_from_slice(&sfn_entry(dot, ATTR_DIR, c, 0, self.kind));
        dot[1] = b'.';
        data[32..64].copy_from_slice(&sfn_entry(
            dot,
            ATTR_DIR,
            dir.cluster_for_children(),
            0,
            self.kind,
        ));
        self.dev
            .write(
                self.cluster_off(c),
                &data,
                &format!("directory /{path} (its first cluster)"),
            )
            .map_err(io("write a directory"))?;
        self.flush_fat(&format!("chain of /{path}"))?;
        self.barrier()?;
        let sfn = unique_sfn(&listing, name, None);
        let set = entry_set(name, &sfn_entry(sfn, ATTR_DIR, c, 0, self.kind));
        let at = self.make_room(&mut dir, &listing, set.len())?;
        self.write_set(&mut dir, at, &set, &format!("new directory {name}"))?;
        self.barrier()?;
        self.touched += 1;
        Ok(())
    }
}

/// `dir/name` → (`dir`, `name`).
pub(super) fn split(path: &str) -> (&str, &str) {
    let path = path.trim_matches('/');
    path.rsplit_once('/').unwrap_or(("", path))
}

/// Names genboot may write: what FAT long names allow.
fn check_name(name: &str) -> Result<(), FatError> {
    let units = name.encode_utf16().count();
    if name.is_empty()
        || units > 255
        || name == "."
        || name == ".."
        || name.chars().any(|c| c < ' ' || "\"*/:<>?\\|".contains(c))
        || name.ends_with(' ')
        || name.ends_with('.')
    {
        return Err(FatError::Refused(format!(
            "{name:?} is not a valid FAT file name"
        )));
    }
    Ok(())
}

/// A 32-byte short entry.
fn sfn_entry(sfn: [u8; 11], attr: u8, cluster: u32, size: u32, kind: Kind) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[..11].copy_from_slice(&sfn);
    e[11] = attr;
    e[16..18].copy_from_slice(&DOS_DATE.to_le_bytes());
    e[18..20].copy_from_slice(&DOS_DATE.to_le_bytes());
    e[24..26].copy_from_slice(&DOS_DATE.to_le_bytes());
    set_cluster_size(&mut e, cluster, size, kind);
    e
}

fn set_cluster_size(e: &mut [u8], cluster: u32, size: u32, kind: Kind) {
    let hi = if kind == Kind::Fat32 {
        (cluster >> 16) as u16
    } else {
        0
    };
    e[20..22].copy_from_slice(&hi.to_le_bytes());
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
    e[28..32].copy_from_slice(&size.to_le_bytes());
}

/// The first cluster of a short entry (the high half only on FAT32: on
/// FAT12/16 those bytes mean something else).
fn entry_cluster(e: &[u8], fat32: bool) -> u32 {
    if fat32 {
        (le16(e, 20) << 16) | le16(e, 26)
    } else {
        le16(e, 26)
    }
}

pub(super) fn lfn_checksum(sfn: &[u8]) -> u8 {
    sfn.iter()
        .take(11)
        .fold(0u8, |s, b| s.rotate_right(1).wrapping_add(*b))
}

/// The slots of an entry named `name` whose short entry is `short`: the
/// long-name slots (last part first) and the short entry, or the short
/// entry alone when it spells the name exactly.
fn entry_set(name: &str, short: &[u8; 32]) -> Vec<[u8; 32]> {
    let mut sfn = [0u8; 11];
    sfn.copy_from_slice(&short[..11]);
    if sfn_display(&sfn, 0) == name {
        return vec![*short];
    }
    let mut units: Vec<u16> = name.encode_utf16().collect();
    if !units.len().is_multiple_of(13) {
        units.push(0);
        while !units.len().is_multiple_of(13) {
            units.push(0xFFFF);
        }
    }
    let parts = units.len() / 13;
    let sum = lfn_checksum(&sfn);
    let mut out = Vec::with_capacity(parts + 1);
    for k in (1..=parts).rev() {
        let u = &units[(k - 1) * 13..k * 13];
        let mut s = [0u8; 32];
        s[0] = k as u8 | if k == parts { 0x40 } else { 0 };
        s[11] = ATTR_LFN;
        s[13] = sum;
        for (j, unit) in u.iter().enumerate() {
            let at = match j {
                0..=4 => 1 + j * 2,
                5..=10 => 14 + (j - 5) * 2,
                _ => 28 + (j - 11) * 2,
            };
            s[at..at + 2].copy_from_slice(&unit.to_le_bytes());
        }
        out.push(s);
    }
    out.push(*short);
    out
}

/// `NAME.EXT` of a short name (NT case flags applied).
pub(super) fn sfn_display(sfn: &[u8; 11], ntres: u8) -> String {
    let conv = |b: &[u8], lower: bool| -> String {
        let mut s = String::new();
        for (i, &c) in b.iter().enumerate() {
            let c = if i == 0 && c == 0x05 { 0xE5 } else { c };
            if c > 0x7F {
                s.push('\u{FFFD}');
            } else if lower {
                s.push((c as char).to_ascii_lowercase());
            } else {
                s.push(c as char);
            }
        }
        s.trim_end_matches(' ').to_string()
    };
    let base = conv(&sfn[..8], ntres & 0x08 != 0);
    let ext = conv(&sfn[8..], ntres & 0x10 != 0);
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

/// A short name for `name` that no other entry of the directory has
/// (`skip`: the slot of the entry being renamed).
fn unique_sfn(listing: &Listing, name: &str, skip: Option<usize>) -> [u8; 11] {
    let taken: BTreeSet<[u8; 11]> = listing
        .entries
        .iter()
        .filter(|e| Some(e.sfn_slot) != skip)
        .map(|e| e.sfn)
        .collect();
    let conv = |s: &str, lossy: &mut bool| -> Vec<u8> {
        let mut out = Vec::new();
        for c in s.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_uppercase() as u8);
            } else if "!#$%&'()-@^_`{}~".contains(c) {
                out.push(c as u8);
            } else {
                *lossy = true;
                if c != ' ' && c != '.' {
                    out.push(b'_');
                }
            }
        }
        out
    };
    let mut lossy = false;
    let trimmed = name.trim_start_matches('.');
    if trimmed.len() != name.len() {
        lossy = true;
    }
    let (b, e) = match trimmed.rfind('.') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (trimmed, ""),
    };
    let mut base = conv(b, &mut lossy);
    let mut ext = conv(e, &mut lossy);
    if base.len() > 8 {
        base.truncate(8);
        lossy = true;
    }
    if ext.len() > 3 {
        ext.truncate(3);
        lossy = true;
    }
    if base.is_empty() {
        base.push(b'_');
        lossy = true;
    }
    let make = |base: &[u8]| -> [u8; 11] {
        let mut s = [b' '; 11];
        s[..base.len()].copy_from_slice(base);
        s[8..8 + ext.len()].copy_from_slice(&ext);
        if s[0] == 0xE5 {
            s[0] = 0x05;
        }
        s
    };
    if !lossy {
        let s = make(&base);
        if !taken.contains(&s) {
            return s;
        }
    }
    for n in 1u32.. {
        let tail = format!("~{n}");
        let keep = base.len().min(8 - tail.len());
        let mut b = base[..keep].to_vec();
        b.extend_from_slice(tail.as_bytes());
        let s = make(&b);
        if !taken.contains(&s) {
            return s;
        }
    }
    unreachable!("a directory holds at most 65536 entries")
}

/// Parse the slots of a directory: entries with their long names, long-name
/// slots that belong to nothing, the end mark.
fn parse(dir: &Dir) -> Listing {
    struct Seq {
        start: usize,
        next: u8,
        sum: u8,
        units: Vec<u16>,
    }
    let mut out = Listing {
        entries: Vec::new(),
        orphans: Vec::new(),
        end: dir.slots(),
        junk_after_end: false,
    };
    let mut seq: Option<Seq> = None;
    let orphan = |seq: &mut Option<Seq>, upto: usize, out: &mut Listing| {
        if let Some(s) = seq.take() {
            out.orphans.extend(s.start..upto);
        }
    };
    let mut ended = false;
    for i in 0..dir.slots() {
        let b = dir.slot(i);
        if ended {
            if b[0] != 0 {
                out.junk_after_end = true;
            }
            continue;
        }
        if b[0] == 0 {
            orphan(&mut seq, i, &mut out);
            out.end = i;
            ended = true;
            continue;
        }
        if b[0] == DELETED {
            orphan(&mut seq, i, &mut out);
            continue;
        }
        if b[11] & 0x3F == ATTR_LFN {
            let ord = b[0];
            let n = ord & 0x1F;
            if ord & 0x40 != 0 {
                orphan(&mut seq, i, &mut out);
                if n == 0 || n > 20 {
                    out.orphans.push(i);
                    continue;
                }
                let mut s = Seq {
                    start: i,
                    next: n,
                    sum: b[13],
                    units: vec![0xFFFF; n as usize * 13],
                };
                put_units(&mut s.units, n, b);
                s.next = n - 1;
                seq = Some(s);
            } else {
                match &mut seq {
                    Some(s) if n >= 1 && n == s.next && b[13] == s.sum => {
                        put_units(&mut s.units, n, b);
                        s.next -= 1;
                    }
                    _ => {
                        orphan(&mut seq, i, &mut out);
                        out.orphans.push(i);
                    }
                }
            }
            continue;
        }
        let mut sfn = [0u8; 11];
        sfn.copy_from_slice(&b[..11]);
        let is_dot = &sfn == b".          " || &sfn == b"..         ";
        if b[11] & ATTR_VOLUME != 0 || is_dot {
            orphan(&mut seq, i, &mut out);
            continue;
        }
        let long = seq
            .as_ref()
            .is_some_and(|s| s.next == 0 && s.sum == lfn_checksum(&sfn));
        let torn = (seq.is_some() && !long) || (i > 0 && out.orphans.last() == Some(&(i - 1)));
        let (first, name) = match (long, &seq) {
            (true, Some(s)) => {
                let end = s
                    .units
                    .iter()
                    .position(|u| *u == 0)
                    .unwrap_or(s.units.len());
                (s.start, String::from_utf16_lossy(&s.units[..end]))
            }
            _ => (i, sfn_display(&sfn, b[12])),
        };
        if long {
            seq = None;
        } else {
            orphan(&mut seq, i, &mut out);
        }
        out.entries.push(Entry {
            name,
            sfn,
            attr: b[11],
            cluster: entry_cluster(b, dir.fat32),
            size: le32(b, 28),
            first,
            sfn_slot: i,
            long,
            torn_lfn: torn,
        });
    }
    orphan(&mut seq, out.end, &mut out);
    out
}

fn put_units(units: &mut [u16], part: u8, b: &[u8]) {
    let base = (part as usize - 1) * 13;
    for j in 0..13 {
        let at = match j {
            0..=4 => 1 + j * 2,
            5..=10 => 14 + (j - 5) * 2,
            _ => 28 + (j - 11) * 2,
        };
        units[base + j] = u16::from_le_bytes([b[at], b[at + 1]]);
    }
}

/// Each FAT copy genboot keeps, the first `fat_len` bytes of it.
fn read_fats(
    dev: &Dev,
    fat_len: usize,
    copies: &[u32],
    reserved: u32,
    fat_sectors: u32,
    bps: u32,
) -> Result<Vec<Vec<u8>>, FatError> {
    let mut on_disk = Vec::new();
    for c in copies {
        let mut f = vec![0u8; fat_len];
        dev.read(
            (u64::from(reserved) + u64::from(*c) * u64::from(fat_sectors)) * u64::from(bps),
            &mut f,
        )
        .map_err(io("read the FAT"))?;
        on_disk.push(f);
    }
    Ok(on_disk)
}

/// The free-cluster count and next-free hint of the FS information sector
/// `s`, whose signatures must be right.
fn read_fsinfo(dev: &Dev, s: u32, bps: u32) -> Result<(u32, u32), FatError> {
    let mut b = vec![0u8; 512];
    dev.read(u64::from(s) * u64::from(bps), &mut b)
        .map_err(io("read the FS information sector"))?;
    if le32(&b, 0) != FSINFO_LEAD || le32(&b, 484) != FSINFO_STRUC || le32(&b, 508) != FSINFO_TRAIL
    {
        return Err(FatError::NotFat(format!(
            "its FS information sector ({s}) has bad signatures"
        )));
    }
    Ok((le32(&b, 488), le32(&b, 492)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_of(slots: &[[u8; 32]]) -> Dir {
        let mut bytes = Vec::new();
        for s in slots {
            bytes.extend_from_slice(s);
        }
        bytes.resize(512, 0);
        Dir {
            r: DirRef::FixedRoot,
            fat32: true,
            clusters: Vec::new(),
            bytes,
            path: String::new(),
        }
    }

    fn empty() -> Listing {
        parse(&dir_of(&[]))
    }

    #[test]
    fn long_names_round_trip() {
        let name = "0123456789abcdef0123456789abcdef-linux-6.1.0-50-amd64.efi.genboot-tmp";
        let sfn = unique_sfn(&empty(), name, None);
        assert_eq!(&sfn, b"012345~1GEN");
        let set = entry_set(name, &sfn_entry(sfn, ATTR_ARCHIVE, 5, 100, Kind::Fat32));
        assert_eq!(set.len(), 7);
        let l = parse(&dir_of(&set));
        assert!(l.orphans.is_empty());
        assert_eq!(l.entries.len(), 1);
        let e = &l.entries[0];
        assert!(e.long);
        assert_eq!(e.name, name);
        assert_eq!((e.cluster, e.size, e.first, e.sfn_slot), (5, 100, 0, 6));
    }

    #[test]
    fn exact_short_names_have_no_long_name() {
        let sfn = unique_sfn(&empty(), "BOOTX64.EFI", None);
        assert_eq!(&sfn, b"BOOTX64 EFI");
        assert_eq!(
            entry_set("BOOTX64.EFI", &sfn_entry(sfn, 0x20, 0, 0, Kind::Fat32)).len(),
            1
        );
        let sfn = unique_sfn(&empty(), "loader", None);
        assert_eq!(&sfn, b"LOADER     ");
        assert_eq!(
            entry_set("loader", &sfn_entry(sfn, 0x10, 3, 0, Kind::Fat32)).len(),
            2
        );
    }

    #[test]
    fn short_names_get_unique_tails() {
        let name = "genboot-3+3.conf";
        let s1 = unique_sfn(&empty(), name, None);
        assert_eq!(&s1, b"GENBOO~1CON");
        let l = parse(&dir_of(&entry_set(
            name,
            &sfn_entry(s1, 0x20, 0, 0, Kind::Fat32),
        )));
        let s2 = unique_sfn(&l, "genboot-4+3.conf", None);
        assert_eq!(&s2, b"GENBOO~2CON");
    }

    #[test]
    fn torn_long_names_are_orphans() {
        let name = "genboot-12+3.conf.genboot-tmp";
        let sfn = unique_sfn(&empty(), name, None);
        let set = entry_set(name, &sfn_entry(sfn, 0x20, 0, 0, Kind::Fat32));
        // The first long-name slot lost: the rest cannot name the entry.
        let l = parse(&dir_of(&set[1..]));
        assert_eq!(l.orphans, vec![0, 1]);
        assert_eq!(l.entries.len(), 1);
        assert!(!l.entries[0].long && l.entries[0].torn_lfn);
        // Long-name slots and no short entry.
        let l = parse(&dir_of(&set[..3]));
        assert_eq!(l.orphans, vec![0, 1, 2]);
        assert!(l.entries.is_empty());
    }

    #[test]
    fn checksum_matches_the_spec_example() {
        // The checksum is a rotate-right-and-add over the 11 bytes.
        let mut sum = 0u8;
        for b in b"FOO     BAR" {
            sum = (((sum & 1) << 7) | (sum >> 1)).wrapping_add(*b);
        }
        assert_eq!(lfn_checksum(b"FOO     BAR"), sum);
    }
}
