//! The EFI System Partition: one interface, two backends (a mounted
//! directory, a FAT volume inside a disk image), and the installer written
//! once against it.
//!
//! Layout (Boot Loader Specification Type #1):
//!
//! ```text
//! /EFI/genboot/<hash>-linux-<kver>.efi      content-addressed, shared
//! /EFI/genboot/<hash>-initrd-<kver>.img
//! /loader/entries/genboot-<N>[+<left>[-<done>]].conf, genboot-<N>-recovery.conf
//! /loader/loader.conf, /loader/entries.srel
//! /EFI/systemd/systemd-bootx64.efi, /EFI/BOOT/BOOTX64.EFI   (--install-loader)
//! ```

pub mod check;
pub mod dir;
pub(crate) mod entry;
pub mod image;
pub mod install;

pub use install::{bless, install, plan_generations, GenInput, InstallOptions, InstallReport};

use std::io::{self, Read};
use std::path::PathBuf;

/// Errors of the ESP backends and the installer.
#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error("cannot {op} {path} on {esp}: {source}")]
    Io {
        op: &'static str,
        path: String,
        esp: String,
        source: io::Error,
    },
    #[error("{path} is not an EFI System Partition: it is on a {fstype} file system, not FAT\nHint: pass the mount point of the FAT ESP with --esp (e.g. /boot/efi), or an image with --image; set GENBOOT_ESP_ANY_DIR=1 to use a plain directory (tests)")]
    NotFat { path: PathBuf, fstype: String },
    #[error("{path} is not a mount point (the FAT file system is mounted at {mount})\nHint: pass the ESP's mount point itself with --esp {mount}")]
    NotMountPoint { path: PathBuf, mount: String },
    #[error("ESP directory {path} does not exist or is not a directory\nHint: mount the ESP there, or pass its mount point with --esp PATH")]
    NoSuchDir { path: PathBuf },
    #[error("no EFI System Partition found: nothing given with --esp/--image, no [boot] esp in the configuration, and no FAT file system mounted at /efi, /boot or /boot/efi below {root}\nHint: mount the ESP, or pass --esp PATH or --image FILE")]
    NotFound { root: PathBuf },
    #[error("cannot open disk image {path}: {source}\nHint: check the path; create an image with `genboot image`")]
    ImageOpen { path: PathBuf, source: io::Error },
    #[error("disk image {path} is read-only\nHint: make it writable (chmod u+w {path}) or copy it; nothing was changed")]
    ImageReadOnly { path: PathBuf },
    #[error("disk image {path}: {what}\nHint: {hint}")]
    Image {
        path: PathBuf,
        what: String,
        hint: String,
    },
    #[error("FAT error on {esp} while trying to {op} {path}: {what}")]
    Fat {
        esp: String,
        op: &'static str,
        path: String,
        what: String,
    },
    #[error("{0}")]
    Full(Box<Full>),
    #[error("cannot read {path}: {source}")]
    Input { path: PathBuf, source: io::Error },
    #[error("generation {generation}: {what}\nHint: run `genboot verify`; delete the generation with `genboot delete {generation}` if it is damaged")]
    Generation { generation: u32, what: String },
    #[error("{path} on {esp} is not genboot's (it has no ownership line, or it was edited), so genboot will not make it the default entry of generation {generation}\nHint: remove or rename it, then run `genboot install` again: genboot writes its own entry for generation {generation}. Nothing on the ESP was changed.")]
    ForeignDefault {
        esp: String,
        path: String,
        generation: u32,
    },
    #[error("{0}")]
    Other(String),
}

/// Why an install did not fit, and what to delete.
#[derive(Debug, thiserror::Error)]
#[error("the ESP {esp} has too little free space: this install needs {need} more ({missing_clusters} clusters of {cluster_size} bytes; {free} free, {total_needed} needed)\nHint: {hint}\nNothing was written.")]
pub struct Full {
    pub esp: String,
    pub need: String,
    pub missing_clusters: u64,
    pub cluster_size: u64,
    pub free: String,
    pub total_needed: String,
    pub hint: String,
    /// Generations whose deletion makes room (oldest first).
    pub delete: Vec<u32>,
}

/// The largest entry, `loader.conf` or `entries.srel` genboot reads from an
/// ESP: 64 KiB (genboot's entries are about 500 bytes; systemd-boot's own
/// files and other tools' entries are a few KiB). A bigger one is not read
/// and counts as foreign.
pub const MAX_SMALL_FILE: u64 = 64 << 10;

/// What [`Esp::read_small`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Small {
    Data(Vec<u8>),
    /// Not read, and why (too big, not a regular file).
    Skipped(String),
}

/// Free space of an ESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub cluster_size: u64,
    pub free_clusters: u64,
}

impl Space {
    /// Clusters a file of `size` bytes occupies.
    pub fn clusters(&self, size: u64) -> u64 {
        size.div_ceil(self.cluster_size)
    }
}

/// What a backend wrote, for the "a no-op run writes nothing" promise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteStats {
    /// Bytes written to the ESP (the image backend counts every byte that
    /// reached the image file, FAT metadata included).
    pub bytes_written: u64,
    /// Files and directories created, renamed or removed.
    pub files_touched: u64,
}

/// An ESP the installer can reconcile.
///
/// Contract, for every backend:
/// - Paths are ESP-relative, `/`-separated, without a leading slash
///   (`loader/entries/genboot-3.conf`). Names are ASCII in
///   `[A-Za-z0-9+_.-]`; FAT compares them case-insensitively, genboot
///   writes lower case only.
/// - Read methods never write. A missing file or directory is `Ok(None)` /
///   an empty list, not an error.
/// - `write_file` creates or truncates `path` (its directory must exist),
///   writes all of `data` and makes it durable (fsync, or flush + sync of
///   the image file) before returning. It is never used on a file the
///   installer has not named as temporary.
/// - `rename` moves `from` to `to`, replacing `to` if it exists, and makes
///   it durable. On the directory backend it is atomic (`rename(2)` +
///   directory fsync); on a FAT image a crash leaves `to` with its old or
///   its new content (see `image/fat.rs`).
/// - `remove` deletes a file, durably; removing a missing file is not an
///   error.
/// - `space` reports free space in whole clusters (allocation units).
/// - `stats` counts what this backend wrote since it was opened.
pub trait Esp {
    /// For messages: `/boot/efi`, `disk.img (partition 1)`.
    fn describe(&self) -> String;
    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>, EspError>;
    /// Read a file only when it has at most `cap` bytes (entries,
    /// `loader.conf`); a bigger one is [`Small::Skipped`], unread.
    fn read_small(&mut self, path: &str, cap: u64) -> Result<Option<Small>, EspError> {
        match self.size(path)? {
            None => Ok(None),
            Some(size) if size > cap => Ok(Some(Small::Skipped(too_big(size, cap)))),
            Some(_) => Ok(self.read(path)?.map(|d| {
                if d.len() as u64 > cap {
                    Small::Skipped(too_big(d.len() as u64, cap))
                } else {
                    Small::Data(d)
                }
            })),
        }
    }
    /// SHA-256 of a file's bytes, `None` if it does not exist. Callers
    /// compare sizes first, so the file read is as big as the expected one.
    fn digest(&mut self, path: &str) -> Result<Option<[u8; 32]>, EspError> {
        use sha2::Digest;
        Ok(self.read(path)?.map(|d| sha2::Sha256::digest(&d).into()))
    }
    /// The size of a file, `None` if it does not exist.
    fn size(&mut self, path: &str) -> Result<Option<u64>, EspError>;
    /// Names of the files (not directories) in `dir`.
    fn list(&mut self, dir: &str) -> Result<Vec<String>, EspError>;
    /// Create `dir` and its parents; existing ones are fine.
    fn create_dir_all(&mut self, dir: &str) -> Result<(), EspError>;
    fn write_file(&mut self, path: &str, data: &mut dyn Read) -> Result<(), EspError>;
    fn rename(&mut self, from: &str, to: &str) -> Result<(), EspError>;
    fn remove(&mut self, path: &str) -> Result<(), EspError>;
    fn space(&mut self) -> Result<Space, EspError>;
    fn stats(&self) -> WriteStats;
    /// Things the user should know about this ESP (e.g. a FAT volume that
    /// was not cleanly unmounted).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// Finish: flush what is cached (FAT: the FS information sector) and
    /// mark the volume clean.
    fn close(self: Box<Self>) -> Result<WriteStats, EspError>;
}

pub(crate) fn too_big(size: u64, cap: u64) -> String {
    format!(
        "is {}, more than the {} genboot reads from such a file",
        human(size),
        human(cap)
    )
}

/// SHA-256 of a host file (a store object's file), read in pieces.
pub(crate) fn host_digest(path: &std::path::Path) -> Result<[u8; 32], EspError> {
    use sha2::Digest;
    let err = |source| EspError::Input {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(err)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Human-readable bytes.
pub fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} bytes")
    }
}
