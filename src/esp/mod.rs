//! The EFI System Partition: one interface ([`Esp`]), two backends (a
//! mounted directory, a FAT volume inside a disk image) plus an in-memory
//! one for unit tests, and the installer written once against it.
//!
//! The installer reconciles an ESP with the profile in three steps:
//! [`survey`] reads the ESP into an [`EspSnapshot`]; [`plan`](plan::plan)
//! computes, without any I/O, what to write and remove (or refuses:
//! a full ESP, a foreign default); [`apply`](apply::apply) does the writes,
//! each step followed by its failpoint. [`install`] runs the three.
//! Every path is in [`layout`]; entries as genboot writes them in `entry`.

pub mod apply;
pub mod bless;
pub mod check;
pub mod dir;
pub(crate) mod entry;
pub mod fat;
pub mod layout;
#[cfg(test)]
pub(crate) mod memory;
pub mod plan;
pub mod survey;
#[cfg(test)]
mod tests;

pub use apply::apply;
pub use bless::bless;
pub use plan::{plan, Plan};
pub use survey::{survey, EspSnapshot};

use crate::hint::Hint;
use crate::store::StoreHash;
use crate::units::human;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Errors of the ESP backends and the installer.
#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error("cannot {op} {path} on {esp}: {cause}")]
    Io {
        op: &'static str,
        path: String,
        esp: String,
        cause: io::Error,
    },
    #[error("{path} is not an EFI System Partition: it is on a {fstype} file system, not FAT")]
    NotFat { path: PathBuf, fstype: String },
    #[error("{path} is not a mount point (the FAT file system is mounted at {mount})")]
    NotMountPoint { path: PathBuf, mount: String },
    #[error("ESP directory {path} does not exist or is not a directory")]
    NoSuchDir { path: PathBuf },
    #[error("no EFI System Partition found: nothing given with --esp/--image, no [boot] esp in the configuration, no LoaderDevicePartUUID EFI variable naming the partition the machine booted from, and no FAT file system mounted at /efi, /boot or /boot/efi below {root}")]
    NotFound { root: PathBuf },
    #[error("the machine booted from the EFI System Partition PARTUUID={partuuid}{}, but it is not mounted below {}", .device.as_ref().map(|d| format!(" ({})", d.display())).unwrap_or_default(), .root.display())]
    NotMounted {
        partuuid: String,
        device: Option<PathBuf>,
        root: PathBuf,
    },
    #[error("cannot open disk image {path}: {cause}")]
    ImageOpen { path: PathBuf, cause: io::Error },
    #[error("disk image {path} is read-only")]
    ImageReadOnly { path: PathBuf },
    #[error("disk image {path}: {what}")]
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
    #[error("cannot read {path}: {cause}")]
    Input { path: PathBuf, cause: io::Error },
    #[error("generation {generation}: {what}")]
    Generation { generation: u32, what: String },
    #[error("{path} on {esp} is not genboot's (it has no ownership line, or it was edited), so genboot will not make it the default entry of generation {generation}")]
    ForeignDefault {
        esp: String,
        path: String,
        generation: u32,
    },
    #[error("the profile has no current generation")]
    NoCurrent,
    #[error("no boot entry for {what} on {esp}")]
    NoEntry { what: String, esp: String },
    #[error("an ESP of {} is too small for FAT32", human(*.0))]
    TooSmall(u64),
    #[error("cannot format the ESP: {0}")]
    Format(String),
}

impl Hint for EspError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            EspError::NotFat { .. } => "pass the mount point of the FAT ESP with --esp (e.g. /boot/efi), or an image with --image; set GENBOOT_ESP_ANY_DIR=1 to use a plain directory (tests)".into(),
            EspError::NotMountPoint { mount, .. } => {
                format!("pass the ESP's mount point itself with --esp {mount}")
            }
            EspError::NoSuchDir { .. } => {
                "mount the ESP there, or pass its mount point with --esp PATH".into()
            }
            EspError::NotFound { .. } => "mount the ESP, or pass --esp PATH or --image FILE".into(),
            EspError::NotMounted {
                partuuid, device, ..
            } => crate::host::esp::how_to_mount(partuuid, device.as_deref()),
            EspError::ImageOpen { .. } => {
                "check the path; create an image with `genboot image`".into()
            }
            EspError::ImageReadOnly { path } => format!(
                "make it writable (chmod u+w {}) or copy it; nothing was changed",
                path.display()
            ),
            EspError::Image { hint, .. } => hint.clone(),
            EspError::Full(f) => return f.hint(),
            EspError::Generation { generation, .. } => format!("run `genboot verify`; delete the generation with `genboot delete {generation}` if it is damaged"),
            EspError::ForeignDefault { generation, .. } => format!("remove or rename it, then run `genboot install` again: genboot writes its own entry for generation {generation}. Nothing on the ESP was changed."),
            EspError::NoCurrent => "run `genboot switch --config FILE` first".into(),
            EspError::NoEntry { .. } => "run `genboot install` to write the boot menu".into(),
            EspError::TooSmall(_) => "give --esp-size 40M or more".into(),
            EspError::Io { .. }
            | EspError::Fat { .. }
            | EspError::Input { .. }
            | EspError::Format(_) => return None,
        })
    }
}

/// Why an install did not fit, and what to delete.
#[derive(Debug, thiserror::Error)]
#[error("the ESP {esp} has too little free space: this install needs {} more ({missing_clusters} clusters of {cluster_size} bytes; {} free, {} needed)", human(.missing_clusters * .cluster_size), human(.free_clusters * .cluster_size), human(.need * .cluster_size))]
pub struct Full {
    pub esp: String,
    /// Clusters the install needs in all.
    pub need: u64,
    pub missing_clusters: u64,
    pub cluster_size: u64,
    pub free_clusters: u64,
    /// Generations whose deletion makes room (oldest first), and the
    /// clusters that frees; empty when even deleting all of them does not.
    pub delete: Vec<u32>,
    pub freed_clusters: u64,
}

impl Hint for Full {
    fn hint(&self) -> Option<String> {
        let advice = if self.delete.is_empty() {
            "even the default generation alone does not fit: use a larger ESP, or remove files genboot did not write from it".to_string()
        } else {
            let list: Vec<String> = self.delete.iter().map(u32::to_string).collect();
            format!(
                "delete old generations to make room: `genboot delete {}` frees about {} on the ESP (or set [boot] limit); then run `genboot install` again",
                list.join(" "),
                human(self.freed_clusters * self.cluster_size)
            )
        };
        Some(format!("{advice}\nNothing was written."))
    }
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
///   an empty list / `false`, not an error.
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
    /// Names of the files (not directories) in `dir`, sorted.
    fn list(&mut self, dir: &str) -> Result<Vec<String>, EspError>;
    /// Whether `dir` exists as a directory.
    fn is_dir(&mut self, dir: &str) -> Result<bool, EspError>;
    /// Create the directory `dir` (its parent exists, it does not), durably.
    fn create_dir(&mut self, dir: &str) -> Result<(), EspError>;
    /// Create `dir` and its parents; existing ones are fine.
    fn create_dir_all(&mut self, dir: &str) -> Result<(), EspError> {
        let mut rel = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(part);
            if !self.is_dir(&rel)? {
                self.create_dir(&rel)?;
            }
        }
        Ok(())
    }
    fn write_file(&mut self, path: &str, data: &mut dyn Read) -> Result<(), EspError>;
    fn rename(&mut self, from: &str, to: &str) -> Result<(), EspError>;
    fn remove(&mut self, path: &str) -> Result<(), EspError>;
    fn space(&mut self) -> Result<Space, EspError>;
    fn stats(&self) -> WriteStats;
    /// Where it is mounted, for a mounted ESP (the directory backend).
    fn mount_point(&self) -> Option<&Path> {
        None
    }
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

/// A store file the ESP holds a copy of (a kernel or an initrd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFile {
    /// Store hash of the object holding it (names the ESP copy).
    pub hash: StoreHash,
    /// Where it is on this machine.
    pub host: PathBuf,
    /// Its size in bytes.
    pub len: u64,
    /// SHA-256 of its bytes, when an ESP copy of the same size needs the
    /// comparison (see [`install`]); `None` otherwise.
    pub digest: Option<[u8; 32]>,
}

impl StoreFile {
    /// The file at `host`, its size read; no digest yet.
    pub fn at(hash: StoreHash, host: PathBuf) -> Result<StoreFile, EspError> {
        let len = std::fs::metadata(&host)
            .map_err(|cause| EspError::Input {
                path: host.clone(),
                cause,
            })?
            .len();
        Ok(StoreFile {
            hash,
            host,
            len,
            digest: None,
        })
    }
}

/// One profile generation, as the installer needs it.
#[derive(Debug, Clone)]
pub struct GenInput {
    pub number: u32,
    pub current: bool,
    /// `YYYY-MM-DD`.
    pub date: String,
    pub label: String,
    pub kernel_release: String,
    pub kernel: StoreFile,
    pub initrd: Option<StoreFile>,
    /// Kernel parameters and `init=`.
    pub options: String,
    pub tries: Option<u32>,
}

impl GenInput {
    /// The ESP path of its kernel.
    pub fn kernel_path(&self) -> String {
        layout::kernel_path(self.kernel.hash.as_str(), &self.kernel_release)
    }

    /// The ESP path of its initrd.
    pub fn initrd_path(&self) -> Option<String> {
        self.initrd
            .as_ref()
            .map(|i| layout::initrd_path(i.hash.as_str(), &self.kernel_release))
    }

    /// The ESP files this generation needs: (ESP path, store file).
    pub fn files(&self) -> Vec<(String, &StoreFile)> {
        let mut out = vec![(self.kernel_path(), &self.kernel)];
        if let (Some(p), Some(i)) = (self.initrd_path(), &self.initrd) {
            out.push((p, i));
        }
        out
    }
}

#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// Keep at most this many newest generations.
    pub limit: Option<u32>,
    pub timeout: u32,
    /// The systemd-boot binary to install, if asked.
    pub loader: Option<Vec<u8>>,
    pub machine_id: Option<String>,
    /// The generation this machine booted.
    pub booted: Option<u32>,
    /// Profile generations left out because they cannot be read: their
    /// entries already on the ESP are kept, not removed.
    pub unreadable: Vec<u32>,
    /// The firmware's `LoaderEntryDefault` (set in the menu with `d`, or by
    /// `bootctl set-default`), when this ESP is the one the machine booted
    /// from: systemd-boot prefers it to `loader.conf`'s default.
    pub efi_default: Option<String>,
}

#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallReport {
    pub default: u32,
    pub written: Vec<String>,
    pub removed: Vec<String>,
    pub warnings: Vec<String>,
    /// Removal ran before the writes to make room.
    pub cleaned_first: bool,
    pub stats: WriteStats,
}

/// SHA-256 of a host file (a store object's file), read in pieces.
pub(crate) fn host_digest(path: &Path) -> Result<[u8; 32], EspError> {
    use sha2::Digest;
    let err = |cause| EspError::Input {
        path: path.to_path_buf(),
        cause,
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

/// Give each store file the digest the plan compares: only those whose ESP
/// copy has their size (a copy of another size is rewritten anyway).
fn fill_digests(gens: &mut [GenInput], snapshot: &EspSnapshot) -> Result<(), EspError> {
    for g in gens.iter_mut() {
        let (kernel, initrd) = (g.kernel_path(), g.initrd_path());
        let mut files: Vec<(String, &mut StoreFile)> = vec![(kernel, &mut g.kernel)];
        if let (Some(p), Some(i)) = (initrd, g.initrd.as_mut()) {
            files.push((p, i));
        }
        for (path, file) in files {
            let same_size = snapshot.file(&path).is_some_and(|f| f.size == file.len);
            if same_size && file.digest.is_none() {
                file.digest = Some(host_digest(&file.host)?);
            }
        }
    }
    Ok(())
}

/// The entry file of `generation` (not its recovery entry) as it is on the
/// ESP now, boot counter included (`genboot-3+2-1.conf`): the id
/// systemd-boot gives it.
pub fn entry_file(esp: &mut dyn Esp, generation: u32) -> Result<String, EspError> {
    esp.list(layout::ENTRIES_DIR)?
        .into_iter()
        .find(|f| {
            entry::EntryName::parse(f).is_some_and(|n| n.generation == generation && !n.recovery)
        })
        .ok_or_else(|| EspError::NoEntry {
            what: format!("generation {generation}"),
            esp: esp.describe(),
        })
}

/// Reconcile `esp` with `gens`: survey, plan, apply (see the module
/// documentation). A refusal (full ESP, foreign default) writes nothing.
pub fn install(
    esp: &mut dyn Esp,
    gens: &[GenInput],
    opts: &InstallOptions,
) -> Result<InstallReport, EspError> {
    let snapshot = survey(esp, gens, opts)?;
    let mut gens = gens.to_vec();
    fill_digests(&mut gens, &snapshot)?;
    let plan = plan(&snapshot, &gens, opts)?;
    let applied = apply(&plan, esp)?;
    Ok(InstallReport {
        default: plan.default,
        written: applied.written,
        removed: applied.removed,
        warnings: plan.warnings.clone(),
        cleaned_first: plan.clean_first,
        stats: esp.stats(),
    })
}
