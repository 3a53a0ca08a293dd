//! The disk-image backend: the FAT volume inside the ESP partition of a GPT
//! disk image, read and written by genboot's own FAT driver through the
//! image file — no root, no loop device.
//!
//! - `dev.rs`: the partition as bytes; whole-sector writes, counted and
//!   killable at the I/O layer (`GENBOOT_KILL_AT_WRITE`), barriers.
//! - `fat.rs`: the FAT driver, and **the crash guarantee**: the order of
//!   every write, so that a stop at any write leaves no torn entry.
//! - `check.rs`: the check run on every open for writing, and the repairs
//!   of what an interrupted run leaves (so a re-run always converges).
//!
//! The GPT is checked first (`crate::gpt::find_esp`): a damaged table,
//! overlapping partitions or an image that ends inside its ESP are refused
//! before anything is read from the FAT volume.
//!
//! Formatting a new ESP uses `starry-fatfs` 0.4.1-preview.2 (fatfs's master,
//! the fatfs 0.4 API; fatfs 0.3.6 writes directories `fsck.fat` rejects).
//! Nothing else uses it: fatfs writes a directory entry one field at a time
//! and a file's chain before nothing, in no safe order, gives no way to
//! replace a file in one write, to keep an entry inside one sector, to
//! detect a looping chain, or to see the raw entries a repair needs.

mod check;
mod dev;
mod fs;

use super::{Esp, EspError, Space, WriteStats};
use dev::Dev;
use fatfs::FormatVolumeOptions;
use fs::{FatError, Volume};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The most genboot reads of one ESP file into memory: entries,
/// `loader.conf` and boot loaders are far smaller; kernels and initrds are
/// never read back.
pub const MAX_READ: u64 = 64 << 20;

/// A byte range of a file, as a `Read + Write + Seek` device for fatfs's
/// formatter.
struct PartView {
    file: Rc<File>,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for PartView {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for PartView {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let put = self.file.write_at(&buf[..n], self.start + self.pos)?;
        self.pos += put as u64;
        Ok(put)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for PartView {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(n) => n as i128,
            SeekFrom::End(d) => self.len as i128 + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if new < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the partition",
            ));
        }
        self.pos = new as u64;
        Ok(self.pos)
    }
}

pub struct ImageEsp {
    path: PathBuf,
    partition: u32,
    vol: Volume,
    notes: Vec<String>,
    /// Checked for writing and free of damage genboot leaves alone.
    checked: bool,
}

/// Open `path` for writing, or say clearly that it is read-only.
pub fn open_image(path: &Path, writable: bool) -> Result<File, EspError> {
    let meta = std::fs::metadata(path).map_err(|cause| EspError::ImageOpen {
        path: path.to_path_buf(),
        cause,
    })?;
    if writable && meta.permissions().readonly() {
        // Root could write anyway; a read-only mode is the owner's intent.
        return Err(EspError::ImageReadOnly {
            path: path.to_path_buf(),
        });
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(writable)
        .open(path)
        .map_err(|cause| match cause.raw_os_error() {
            Some(libc::EACCES | libc::EPERM | libc::EROFS) => EspError::ImageReadOnly {
                path: path.to_path_buf(),
            },
            _ => EspError::ImageOpen {
                path: path.to_path_buf(),
                cause,
            },
        })
}

const FSCK_HINT: &str = "repair the FAT file system with `fsck.fat -a` on the partition (attach the image with `losetup --find --show --partscan IMAGE`, then `fsck.fat -a /dev/loopNp1`); nothing was changed";

impl ImageEsp {
    /// Open the ESP inside the GPT image `path` (the partition with the ESP
    /// type GUID). For writing, the volume is checked and the repairs of an
    /// interrupted run are staged (see `check.rs`); damage genboot did not
    /// cause is refused before anything is written.
    pub fn open(path: &Path, writable: bool) -> Result<ImageEsp, EspError> {
        let file = Rc::new(open_image(path, writable)?);
        let part = crate::gpt::find_esp(&file).map_err(|e| {
            let (what, hint) = e.what_and_hint();
            EspError::Image {
                path: path.to_path_buf(),
                what,
                hint,
            }
        })?;
        let dev = Dev::new(file, part.start, part.len, writable);
        let mut vol = Volume::open(dev).map_err(|e| EspError::Image {
            path: path.to_path_buf(),
            what: match &e {
                FatError::Refused(w) => {
                    format!("the FAT file system in partition {} is damaged: {w}", part.number)
                }
                _ => format!("partition {} is not a FAT file system: {e}", part.number),
            },
            hint: "format the ESP with FAT32 (mkfs.fat -F 32), or make a new image with `genboot image`; nothing was changed".into(),
        })?;
        let desc = format!("{} (partition {})", path.display(), part.number);
        let mut notes = Vec::new();
        let mut checked = false;
        if writable {
            let f = vol.check().map_err(|e| EspError::Image {
                path: path.to_path_buf(),
                what: format!(
                    "cannot check the FAT file system in partition {}: {e}",
                    part.number
                ),
                hint: FSCK_HINT.into(),
            })?;
            if !f.damage.is_empty() {
                return Err(EspError::Image {
                    path: path.to_path_buf(),
                    what: format!(
                        "the FAT file system in partition {} is damaged in ways genboot did not cause, so genboot does not write to it:\n  {}",
                        part.number,
                        f.damage.join("\n  ")
                    ),
                    hint: FSCK_HINT.into(),
                });
            }
            checked = true;
            let repairs = if f.repairs.is_empty() {
                String::new()
            } else {
                format!(": {}", f.repairs.join("; "))
            };
            if f.was_dirty {
                notes.push(format!(
                    "the FAT volume in {desc} was not cleanly unmounted (a crash or power loss?); genboot checked it{}{repairs}, and marks it clean when this run ends",
                    if f.repairs.is_empty() { " and found nothing to repair" } else { " and repairs what an interrupted run left" }
                ));
            } else if !f.repairs.is_empty() {
                notes.push(format!("genboot repairs the FAT volume in {desc}{repairs}"));
            }
        } else if vol.marked_dirty() {
            notes.push(format!(
                "the FAT volume in {desc} was not cleanly unmounted (a crash or power loss?); the next genboot run that writes to it checks and repairs it"
            ));
        }
        Ok(ImageEsp {
            path: path.to_path_buf(),
            partition: part.number,
            vol,
            notes,
            checked,
        })
    }

    fn err(&self, op: &'static str, path: &str) -> impl FnOnce(FatError) -> EspError + '_ {
        let esp = self.describe();
        let image = self.path.clone();
        let path = path.to_string();
        move |e| match e {
            FatError::Io { cause, .. } => EspError::Io {
                op,
                path,
                esp,
                cause,
            },
            FatError::Source(cause) => EspError::Io {
                op: "read source for",
                path,
                esp,
                cause,
            },
            FatError::Damaged(what) => EspError::Image {
                path: image,
                what: format!("the FAT file system is damaged: {what}"),
                hint: FSCK_HINT.into(),
            },
            FatError::Full => EspError::Fat {
                esp,
                op,
                path,
                what: "the FAT file system is full".into(),
            },
            other => EspError::Fat {
                esp,
                op,
                path,
                what: other.to_string(),
            },
        }
    }
}

impl Esp for ImageEsp {
    fn describe(&self) -> String {
        format!("{} (partition {})", self.path.display(), self.partition)
    }

    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>, EspError> {
        let e = match self.vol.lookup(path).map_err(self.err("open", path))? {
            Some(e) if !e.is_dir() => e,
            _ => return Ok(None),
        };
        if u64::from(e.size) > MAX_READ {
            return Err(EspError::Image {
                path: self.path.clone(),
                what: format!(
                    "{path} on {} is {} bytes; genboot reads at most {MAX_READ} bytes of a file it compares (entries, loader.conf, the boot loader)",
                    self.describe(),
                    e.size
                ),
                hint: "if the file is genboot's, `genboot install` repairs it; else remove it (or run `fsck.fat -a` on the partition if its size is damage)".into(),
            });
        }
        let data = self
            .vol
            .read_file(path, &e, MAX_READ)
            .map_err(self.err("read", path))?;
        Ok(Some(data))
    }

    fn size(&mut self, path: &str) -> Result<Option<u64>, EspError> {
        Ok(
            match self.vol.lookup(path).map_err(self.err("open", path))? {
                Some(e) if !e.is_dir() => Some(u64::from(e.size)),
                _ => None,
            },
        )
    }

    fn list(&mut self, dir: &str) -> Result<Vec<String>, EspError> {
        let Some((_, listing)) = self.vol.open_dir(dir).map_err(self.err("list", dir))? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<String> = listing
            .entries
            .into_iter()
            .filter(|e| !e.is_dir())
            .map(|e| e.name)
            .collect();
        out.sort();
        Ok(out)
    }

    fn is_dir(&mut self, dir: &str) -> Result<bool, EspError> {
        Ok(self
            .vol
            .open_dir(dir)
            .map_err(self.err("open", dir))?
            .is_some())
    }

    fn create_dir(&mut self, dir: &str) -> Result<(), EspError> {
        self.vol
            .mkdir(dir)
            .map_err(self.err("create directory", dir))
    }

    fn write_file(&mut self, path: &str, data: &mut dyn Read) -> Result<(), EspError> {
        self.vol
            .create_file(path, data)
            .map_err(self.err("write", path))
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), EspError> {
        self.vol.rename(from, to).map_err(self.err("rename", from))
    }

    fn remove(&mut self, path: &str) -> Result<(), EspError> {
        self.vol.remove(path).map_err(self.err("remove", path))?;
        Ok(())
    }

    fn space(&mut self) -> Result<Space, EspError> {
        Ok(Space {
            cluster_size: u64::from(self.vol.cluster_bytes),
            free_clusters: self.vol.free_clusters(),
        })
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn stats(&self) -> WriteStats {
        WriteStats {
            bytes_written: self.vol.dev.bytes,
            files_touched: self.vol.touched,
        }
    }

    fn close(mut self: Box<Self>) -> Result<WriteStats, EspError> {
        if self.checked {
            let checked = self.checked;
            self.vol
                .finish(checked)
                .map_err(self.err("finish writing", "/"))?;
        }
        Ok(self.stats())
    }
}

/// Volume id of ESPs genboot formats (fixed: images are reproducible).
pub const VOLUME_ID: u32 = 0x6765_6e62;
/// Volume label of ESPs genboot formats.
pub const VOLUME_LABEL: [u8; 11] = *b"GENBOOT-ESP";

/// The smallest ESP genboot formats: FAT32 needs 65525 clusters.
pub const MIN_ESP_BYTES: u64 = 66_000 * 512 + (1 << 20);

/// Format `len` bytes at `start` of `file` as FAT32. The cluster size is
/// the largest (up to 4 KiB) that still gives FAT32 enough clusters.
pub fn format(file: Rc<File>, start: u64, len: u64) -> Result<(), EspError> {
    if len < MIN_ESP_BYTES {
        return Err(EspError::TooSmall(len));
    }
    let cluster = [4096u32, 2048, 1024, 512]
        .into_iter()
        .find(|c| len / u64::from(*c) >= 66_000)
        .unwrap_or(512);
    let mut view = fatfs::StdIoWrapper::new(PartView {
        file,
        start,
        len,
        pos: 0,
    });
    let opts = FormatVolumeOptions::new()
        .fat_type(fatfs::FatType::Fat32)
        .bytes_per_cluster(cluster)
        .volume_id(VOLUME_ID)
        .volume_label(VOLUME_LABEL);
    fatfs::format_volume(&mut view, opts).map_err(|e| EspError::Format(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 40 MiB file formatted FAT32 as genboot formats ESPs (no GPT: the
    /// volume starts at byte 0), opened for writing.
    fn volume() -> (tempfile::TempDir, PathBuf, Volume) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("esp.fat");
        let len = 40u64 << 20;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(len).unwrap();
        let f = Rc::new(f);
        format(f.clone(), 0, len).unwrap();
        let v = Volume::open(Dev::new(f, 0, len, true)).unwrap();
        (dir, path, v)
    }

    #[track_caller]
    fn fsck_clean(path: &Path) {
        let o = std::process::Command::new("fsck.fat")
            .arg("-n")
            .arg(path)
            .output()
            .expect("fsck.fat runs (apt-get install dosfstools)");
        assert!(
            o.status.success(),
            "fsck.fat -n:\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }

    fn read(v: &Volume, path: &str) -> Option<Vec<u8>> {
        let e = v.lookup(path).unwrap()?;
        Some(v.read_file(path, &e, MAX_READ).unwrap())
    }

    #[test]
    fn create_rename_replace_remove_leave_a_clean_volume() {
        let (_d, path, mut v) = volume();
        v.mkdir("loader").unwrap();
        v.mkdir("loader/entries").unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
        v.create_file("loader/big.genboot-tmp", &mut &big[..])
            .unwrap();
        v.rename("loader/big.genboot-tmp", "loader/big").unwrap();
        assert_eq!(read(&v, "loader/big").unwrap(), big);
        assert!(v.lookup("loader/big.genboot-tmp").unwrap().is_none());
        // Replace: the target takes the new content.
        v.create_file("loader/big.genboot-tmp", &mut &b"small"[..])
            .unwrap();
        let free_before = v.free_clusters();
        v.rename("loader/big.genboot-tmp", "loader/BIG").unwrap();
        assert_eq!(read(&v, "loader/big").unwrap(), b"small");
        assert!(v.free_clusters() > free_before);
        // Many long names: every entry sits in one sector.
        for n in 0..60 {
            let name = format!("loader/entries/genboot-{n}+3.conf.genboot-tmp");
            v.create_file(&name, &mut &b"x"[..]).unwrap();
            v.rename(&name, &format!("loader/entries/genboot-{n}+3.conf"))
                .unwrap();
        }
        for n in (0..60).step_by(3) {
            assert!(v
                .remove(&format!("loader/entries/genboot-{n}+3.conf"))
                .unwrap());
        }
        let (dir, listing) = v.open_dir("loader/entries").unwrap().unwrap();
        assert_eq!(listing.entries.len(), 40);
        assert!(listing.orphans.is_empty());
        for e in &listing.entries {
            assert!(
                e.long && e.first * 32 / 512 == e.sfn_slot * 32 / 512,
                "{} spans sectors",
                e.name
            );
        }
        assert!(dir.clusters.len() > 1, "the directory grew");
        v.finish(true).unwrap();
        fsck_clean(&path);
    }

    /// A source that fails after `ok` bytes.
    struct Failing {
        ok: usize,
    }
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.ok == 0 {
                return Err(io::Error::other("the source broke"));
            }
            let n = buf.len().min(self.ok);
            buf[..n].fill(1);
            self.ok -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_failed_write_leaves_no_file_and_no_fat_change() {
        let (_d, path, mut v) = volume();
        v.mkdir("EFI").unwrap();
        v.finish(true).unwrap();
        let fat_before = v.fat_bytes().to_vec();
        let free = v.free_clusters();
        let e = v
            .create_file("EFI/k.genboot-tmp", &mut Failing { ok: 3 << 20 })
            .unwrap_err();
        assert!(matches!(e, FatError::Source(_)), "{e}");
        assert!(v.lookup("EFI/k.genboot-tmp").unwrap().is_none());
        assert_eq!(v.free_clusters(), free);
        // Full: more than the volume holds.
        let huge = vec![0u8; 41 << 20];
        let e = v
            .create_file("EFI/huge.genboot-tmp", &mut &huge[..])
            .unwrap_err();
        assert!(matches!(e, FatError::Full), "{e}");
        assert!(v.lookup("EFI/huge.genboot-tmp").unwrap().is_none());
        assert_eq!(v.free_clusters(), free);
        v.finish(true).unwrap();
        assert_eq!(v.fat_bytes(), &fat_before[..]);
        fsck_clean(&path);
    }
}

#[cfg(test)]
mod other_formats {
    use super::*;

    /// genboot's writes on volumes `mkfs.fat` made, FAT12, FAT16 and
    /// FAT32 (with its own cluster sizes and layouts), pass `fsck.fat -n`.
    #[test]
    fn writes_on_mkfs_fat_volumes_of_every_fat_type_pass_fsck() {
        for (bits, kib, extra) in [
            ("12", 4096u64, &[][..]),
            ("16", 32768, &[][..]),
            ("32", 40960, &["-s", "1"][..]),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("v.fat");
            let o = std::process::Command::new("mkfs.fat")
                .args(["-F", bits, "-C"])
                .args(extra)
                .arg(&path)
                .arg(kib.to_string())
                .output()
                .expect("mkfs.fat runs (apt-get install dosfstools)");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let f = Rc::new(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .unwrap(),
            );
            let len = kib << 10;
            let mut v = Volume::open(Dev::new(f, 0, len, true)).unwrap();
            let f = v.check().unwrap();
            assert!(
                f.damage.is_empty() && f.repairs.is_empty(),
                "FAT{bits}: {:?} {:?}",
                f.damage,
                f.repairs
            );
            v.mkdir("EFI").unwrap();
            v.mkdir("EFI/genboot").unwrap();
            v.mkdir("loader").unwrap();
            let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
            for n in 0..12 {
                let p = format!("EFI/genboot/{n:032x}-linux-6.1.0-50-amd64.efi");
                v.create_file(&format!("{p}.genboot-tmp"), &mut &data[..(n + 1) * 1000])
                    .unwrap();
                v.rename(&format!("{p}.genboot-tmp"), &p).unwrap();
            }
            v.create_file("loader/loader.conf", &mut &b"default a\n"[..])
                .unwrap();
            v.create_file("loader/loader.conf.genboot-tmp", &mut &b"default b\n"[..])
                .unwrap();
            v.rename("loader/loader.conf.genboot-tmp", "loader/loader.conf")
                .unwrap();
            assert!(v
                .remove("EFI/genboot/00000000000000000000000000000003-linux-6.1.0-50-amd64.efi")
                .unwrap());
            v.create_file("BIG.BIN", &mut &data[..]).unwrap();
            v.finish(true).unwrap();
            let e = v.lookup("loader/loader.conf").unwrap().unwrap();
            assert_eq!(
                v.read_file("loader/loader.conf", &e, 100).unwrap(),
                b"default b\n"
            );
            let o = std::process::Command::new("fsck.fat")
                .arg("-n")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "FAT{bits}: fsck.fat -n:\n{}",
                String::from_utf8_lossy(&o.stdout)
            );
        }
    }
}
