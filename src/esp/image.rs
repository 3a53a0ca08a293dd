//! The disk-image backend: the FAT volume inside the ESP partition of a GPT
//! disk image, written through a byte-range view of the image file — no
//! root, no loop device.
//!
//! Every FAT call of genboot is in this file. The FAT code is
//! `starry-fatfs` 0.4.1-preview.2: fatfs's master branch (the fatfs 0.4
//! API) published on crates.io. fatfs 0.3.6, the newest fatfs release,
//! writes directories `fsck.fat` rejects. When fatfs 0.4 is published, only
//! this file changes.

use super::{Esp, EspError, Space, WriteStats};
use fatfs::{FileSystem, FormatVolumeOptions, FsOptions, LossyOemCpConverter, TimeProvider};
use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// A byte range of a file, as a `Read + Write + Seek` device. Counts what
/// it writes.
pub struct PartView {
    file: Rc<File>,
    start: u64,
    len: u64,
    pos: u64,
    writable: bool,
    written: Rc<Cell<u64>>,
}

impl PartView {
    pub fn new(file: Rc<File>, start: u64, len: u64, writable: bool) -> PartView {
        PartView {
            file,
            start,
            len,
            pos: 0,
            writable,
            written: Rc::new(Cell::new(0)),
        }
    }
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
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the image is open read-only",
            ));
        }
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let put = self.file.write_at(&buf[..n], self.start + self.pos)?;
        self.pos += put as u64;
        self.written.set(self.written.get() + put as u64);
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

/// Every timestamp genboot writes on FAT: 1980-01-01 00:00:00, the first
/// valid DOS date, so images are reproducible. (fatfs's `NullTimeProvider`
/// writes the raw value 0 = month 0, day 0, an invalid date: the UEFI FAT
/// driver then refuses systemd-boot's boot-counting rename with "Invalid
/// Parameter".)
#[derive(Debug, Clone, Copy)]
struct FixedTime;

impl TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date::new(1980, 1, 1)
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime::new(self.get_current_date(), fatfs::Time::new(0, 0, 0, 0))
    }
}

type Fs = FileSystem<fatfs::StdIoWrapper<PartView>, FixedTime, LossyOemCpConverter>;

pub struct ImageEsp {
    path: PathBuf,
    file: Rc<File>,
    fs: Option<Fs>,
    written: Rc<Cell<u64>>,
    touched: u64,
    partition: u32,
    dirty: bool,
}

/// Open `path` for writing, or say clearly that it is read-only.
pub fn open_image(path: &Path, writable: bool) -> Result<File, EspError> {
    let meta = std::fs::metadata(path).map_err(|source| EspError::ImageOpen {
        path: path.to_path_buf(),
        source,
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
        .map_err(|source| match source.raw_os_error() {
            Some(libc::EACCES | libc::EPERM | libc::EROFS) => EspError::ImageReadOnly {
                path: path.to_path_buf(),
            },
            _ => EspError::ImageOpen {
                path: path.to_path_buf(),
                source,
            },
        })
}

impl ImageEsp {
    /// Open the ESP inside the GPT image `path` (the partition with the ESP
    /// type GUID).
    pub fn open(path: &Path, writable: bool) -> Result<ImageEsp, EspError> {
        let file = Rc::new(open_image(path, writable)?);
        let part = crate::disk::find_esp(&file).map_err(|e| EspError::Image {
            path: path.to_path_buf(),
            what: e.to_string(),
            hint: "pass a GPT disk image with an EFI System Partition (e.g. one made by `genboot image`)".into(),
        })?;
        let view = PartView::new(file.clone(), part.start, part.len, writable);
        let written = view.written.clone();
        let fs = FileSystem::new(view, FsOptions::new().time_provider(FixedTime))
            .map_err(|e| EspError::Image {
                path: path.to_path_buf(),
                what: format!("partition {} is not a FAT file system: {e}", part.number),
                hint: "format the ESP with FAT32 (mkfs.fat -F 32), or make a new image with `genboot image`".into(),
            })?;
        let dirty = fs.read_status_flags().map(|f| f.dirty()).unwrap_or(false);
        Ok(ImageEsp {
            dirty,
            path: path.to_path_buf(),
            file,
            fs: Some(fs),
            written,
            touched: 0,
            partition: part.number,
        })
    }

    fn fs(&self) -> &Fs {
        self.fs.as_ref().expect("file system is open until close")
    }

    fn fat(
        &self,
        op: &'static str,
        path: &str,
    ) -> impl FnOnce(fatfs::Error<io::Error>) -> EspError + '_ {
        let esp = self.describe();
        let path = path.to_string();
        move |e| match e {
            fatfs::Error::Io(source) => EspError::Io {
                op,
                path,
                esp,
                source,
            },
            fatfs::Error::NotEnoughSpace => EspError::Fat {
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

    fn sync(&self, path: &str) -> Result<(), EspError> {
        self.file.sync_data().map_err(|source| EspError::Io {
            op: "sync",
            path: path.to_string(),
            esp: self.describe(),
            source,
        })
    }
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

impl Esp for ImageEsp {
    fn describe(&self) -> String {
        format!("{} (partition {})", self.path.display(), self.partition)
    }

    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>, EspError> {
        let mut f = match self.fs().root_dir().open_file(path) {
            Ok(f) => f,
            Err(fatfs::Error::NotFound) => return Ok(None),
            Err(e) => return Err(self.fat("open", path)(e)),
        };
        let mut out = Vec::new();
        f.read_to_end(&mut out).map_err(|source| EspError::Io {
            op: "read",
            path: path.to_string(),
            esp: self.describe(),
            source,
        })?;
        Ok(Some(out))
    }

    fn size(&mut self, path: &str) -> Result<Option<u64>, EspError> {
        let (dir, name) = split(path);
        let root = self.fs().root_dir();
        let d = if dir.is_empty() {
            root
        } else {
            match root.open_dir(dir) {
                Ok(d) => d,
                Err(fatfs::Error::NotFound) => return Ok(None),
                Err(e) => return Err(self.fat("open", dir)(e)),
            }
        };
        for e in d.iter() {
            let e = e.map_err(self.fat("list", dir))?;
            if e.is_file() && e.eq_name(name) {
                return Ok(Some(e.len()));
            }
        }
        Ok(None)
    }

    fn list(&mut self, dir: &str) -> Result<Vec<String>, EspError> {
        let d = match self.fs().root_dir().open_dir(dir) {
            Ok(d) => d,
            Err(fatfs::Error::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(self.fat("open", dir)(e)),
        };
        let mut out = Vec::new();
        for e in d.iter() {
            let e = e.map_err(self.fat("list", dir))?;
            if e.is_file() {
                out.push(e.file_name());
            }
        }
        out.sort();
        Ok(out)
    }

    fn create_dir_all(&mut self, dir: &str) -> Result<(), EspError> {
        let mut rel = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(part);
            match self.fs().root_dir().open_dir(&rel) {
                Ok(_) => continue,
                Err(fatfs::Error::NotFound) => {}
                Err(e) => return Err(self.fat("open", &rel)(e)),
            }
            self.fs()
                .root_dir()
                .create_dir(&rel)
                .map_err(self.fat("create directory", &rel))?;
            self.sync(&rel)?;
            self.touched += 1;
        }
        Ok(())
    }

    fn write_file(&mut self, path: &str, data: &mut dyn Read) -> Result<(), EspError> {
        {
            let mut f = self
                .fs()
                .root_dir()
                .create_file(path)
                .map_err(self.fat("create", path))?;
            f.truncate().map_err(self.fat("truncate", path))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = data.read(&mut buf).map_err(|source| EspError::Io {
                    op: "read source for",
                    path: path.to_string(),
                    esp: self.describe(),
                    source,
                })?;
                if n == 0 {
                    break;
                }
                fatfs::Write::write_all(&mut f, &buf[..n]).map_err(self.fat("write", path))?;
            }
            fatfs::Write::flush(&mut f).map_err(self.fat("flush", path))?;
        }
        self.sync(path)?;
        self.touched += 1;
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), EspError> {
        {
            let root = self.fs().root_dir();
            match root.remove(to) {
                Ok(()) | Err(fatfs::Error::NotFound) => {}
                Err(e) => return Err(self.fat("replace", to)(e)),
            }
            root.rename(from, &root, to)
                .map_err(self.fat("rename", from))?;
        }
        self.sync(to)?;
        self.touched += 1;
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<(), EspError> {
        match self.fs().root_dir().remove(path) {
            Ok(()) => {}
            Err(fatfs::Error::NotFound) => return Ok(()),
            Err(e) => return Err(self.fat("remove", path)(e)),
        }
        self.sync(path)?;
        self.touched += 1;
        Ok(())
    }

    fn space(&mut self) -> Result<Space, EspError> {
        let st = self
            .fs()
            .stats()
            .map_err(self.fat("count free clusters of", "/"))?;
        Ok(Space {
            cluster_size: u64::from(st.cluster_size()),
            free_clusters: u64::from(st.free_clusters()),
        })
    }

    fn notes(&self) -> Vec<String> {
        if self.dirty {
            vec![format!(
                "the FAT volume in {} was not cleanly unmounted (a crash or power loss?); genboot's files are consistent, but run `fsck.fat -a` on the partition to clear the dirty bit and check the rest",
                self.describe()
            )]
        } else {
            Vec::new()
        }
    }

    fn stats(&self) -> WriteStats {
        WriteStats {
            bytes_written: self.written.get(),
            files_touched: self.touched,
        }
    }

    fn close(mut self: Box<Self>) -> Result<WriteStats, EspError> {
        if let Some(fs) = self.fs.take() {
            fs.unmount().map_err(self.fat("unmount", "/"))?;
        }
        if self.written.get() > 0 {
            self.sync("/")?;
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
        return Err(EspError::Other(format!(
            "an ESP of {} is too small for FAT32\nHint: give --esp-size 40M or more",
            super::human(len)
        )));
    }
    let cluster = [4096u32, 2048, 1024, 512]
        .into_iter()
        .find(|c| len / u64::from(*c) >= 66_000)
        .unwrap_or(512);
    let mut view = fatfs::StdIoWrapper::new(PartView::new(file, start, len, true));
    let opts = FormatVolumeOptions::new()
        .fat_type(fatfs::FatType::Fat32)
        .bytes_per_cluster(cluster)
        .volume_id(VOLUME_ID)
        .volume_label(VOLUME_LABEL);
    fatfs::format_volume(&mut view, opts)
        .map_err(|e| EspError::Other(format!("cannot format the ESP: {e}")))
}
