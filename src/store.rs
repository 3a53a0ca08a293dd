//! The content-addressed store: `<state>/store/<hash>-<name>`.
//!
//! Objects are directories. They are built in a temporary directory inside
//! the store, hashed ([`genboot_format::storehash`] has the exact format),
//! flushed to disk, made read-only and renamed into place; an object is never
//! changed after that. Hashing is parallel over files and streams each file.

use crate::failpoint::{self, FailPoint};
use crate::fsutil::{self, CopyError, IoError, OwnFileError};
use crate::hint::Hint;
use crate::notes::{Note, Notes, Silent, Wait};
use crate::state::{State, STORE_DIR};
use genboot_format::store_name::split_store_name;
pub use genboot_format::store_name::StoreHash;
use genboot_format::storehash::{self, Entry, EntryKind, SELF_MASK};
use rayon::prelude::*;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store object name {name:?} is not allowed: {why}")]
    BadName { name: String, why: &'static str },
    #[error("symlink {link} in store object {name:?} points to {target}, outside the store")]
    LinkLeavesStore {
        name: String,
        link: String,
        target: String,
    },
    #[error("{path} is not a regular file, directory or symlink, so it cannot enter the store")]
    SpecialFile { path: PathBuf },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("the state directory {path} is not writable: {cause}")]
    NotWritable { path: PathBuf, cause: io::Error },
    #[error("building store object {name:?} failed: {cause}")]
    Fill {
        name: String,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the store {path} is in use: {what}")]
    Busy { path: PathBuf, what: &'static str },
    #[error(transparent)]
    LockFile(#[from] OwnFileError),
}

impl Hint for StoreError {
    fn hint(&self) -> Option<String> {
        match self {
            StoreError::BadName { .. } => Some(
                "names may not contain '/', '..', control characters or spaces".into(),
            ),
            StoreError::LinkLeavesStore { .. } => Some(format!(
                "store objects may only link to other store objects (relative links that stay inside {STORE_DIR})"
            )),
            StoreError::NotWritable { .. } => Some(
                "run as root, or pass --root DIR to work on a tree you own".into(),
            ),
            StoreError::Busy { .. } => Some(
                "wait for it to finish, or run without --no-wait to wait for it".into(),
            ),
            StoreError::LockFile(e) => e.hint(),
            StoreError::SpecialFile { .. } | StoreError::Io(_) | StoreError::Fill { .. } => None,
        }
    }
}

impl From<CopyError> for StoreError {
    fn from(e: CopyError) -> StoreError {
        match e {
            CopyError::Io(e) => StoreError::Io(e),
            CopyError::Special { path } => StoreError::SpecialFile { path },
        }
    }
}

/// A store object: `<hash>-<name>`. Serialised as that string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath {
    pub hash: StoreHash,
    pub name: String,
}

impl StorePath {
    /// `<hash>-<name>`.
    pub fn base_name(&self) -> String {
        format!("{}-{}", self.hash, self.name)
    }
    /// The path as the booted system sees it.
    pub fn boot_path(&self) -> String {
        format!("{STORE_DIR}/{}", self.base_name())
    }
    pub fn parse(base_name: &str) -> Option<StorePath> {
        let (hash, name) = split_store_name(base_name)?;
        check_name(name).ok()?;
        Some(StorePath {
            hash,
            name: name.into(),
        })
    }
}

impl serde::Serialize for StorePath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.base_name())
    }
}

impl<'de> serde::Deserialize<'de> for StorePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StorePath, D::Error> {
        let text = String::deserialize(d)?;
        StorePath::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a store object name")))
    }
}

/// How an object is built.
#[derive(Clone, Copy)]
pub struct BuildOptions<'a> {
    /// Files may name the object itself by writing [`SELF_MASK`] where the
    /// hash goes; it is replaced by the real hash before the object lands.
    pub self_refs: bool,
    /// Symlinks (relative paths in the object) allowed to point outside the
    /// store, such as a generation's `init`, which names the root's init.
    pub external_links: &'a [&'a str],
    /// Where the warning goes when a damaged object is replaced.
    pub notes: &'a dyn Notes,
}

impl Default for BuildOptions<'_> {
    fn default() -> Self {
        BuildOptions {
            self_refs: false,
            external_links: &[],
            notes: &Silent,
        }
    }
}

impl std::fmt::Debug for BuildOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildOptions")
            .field("self_refs", &self.self_refs)
            .field("external_links", &self.external_links)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    pub dir: PathBuf,
    /// `<state>/cache`, the build input cache (resolved like the store).
    pub(crate) cache_dir: PathBuf,
    /// `<state>/.store.lock`, beside the store so the store holds objects only.
    lock_file: PathBuf,
}

/// Which store lock: builds share it, `gc` holds it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Adding objects (`build`, `switch`, `image`) and reading them (`verify`).
    Shared,
    /// Deleting objects and leftovers of interrupted builds (`gc`).
    Exclusive,
}

/// A held store lock (`<state>/.store.lock`, flock(2)); released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: fs::File,
    pub kind: LockKind,
}

/// What sits where an object is about to land.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Existing {
    Missing,
    Good,
    Bad(String),
}

/// A verification failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub object: String,
    pub problem: String,
}

pub fn check_name(name: &str) -> Result<(), StoreError> {
    let bad = |why| {
        Err(StoreError::BadName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.contains('/') {
        return bad("it contains '/'");
    }
    if name.contains("..") {
        return bad("it contains '..'");
    }
    if name.starts_with('.') {
        return bad("it starts with '.'");
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("it contains a control character or space");
    }
    if name.len() > 200 {
        return bad("it is longer than 200 bytes");
    }
    Ok(())
}

impl Store {
    /// Open the store below `state`, creating it if needed.
    pub fn open(state: &State) -> Result<Store, StoreError> {
        // Resolved inside --root: whatever part is missing holds no symlink.
        let dir = state.store_dir();
        fs::create_dir_all(&dir).map_err(|cause| StoreError::NotWritable {
            path: state.dir.clone(),
            cause,
        })?;
        // Creating the directory may succeed on an existing, read-only tree.
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        fs::create_dir(&probe)
            .and_then(|_| fs::remove_dir(&probe))
            .map_err(|cause| StoreError::NotWritable {
                path: dir.clone(),
                cause,
            })?;
        Ok(Store {
            dir,
            cache_dir: state.cache_dir(),
            lock_file: state.dir.join(".store.lock"),
        })
    }

    /// Open an existing store without writing to it.
    pub fn open_read_only(state: &State) -> Store {
        Store {
            dir: state.store_dir(),
            cache_dir: state.cache_dir(),
            lock_file: state.dir.join(".store.lock"),
        }
    }

    /// Take the store lock. Builds share it; `gc` takes it alone, so it
    /// never deletes a build's staging directory or an object a running
    /// build has made but not yet linked. Without `wait`, fail at once when
    /// it is held the other way.
    pub fn lock(&self, kind: LockKind, wait: Wait<'_>) -> Result<StoreLock, StoreError> {
        let path = &self.lock_file;
        let file = fsutil::open_lock_file(path, "store lock file")?;
        let tried = match kind {
            LockKind::Shared => file.try_lock_shared(),
            LockKind::Exclusive => file.try_lock(),
        };
        let what = match kind {
            LockKind::Shared => "`genboot gc` is deleting unreachable objects",
            LockKind::Exclusive => "a build is adding objects",
        };
        match tried {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let Wait::Yes(notes) = wait else {
                    return Err(StoreError::Busy {
                        path: self.dir.clone(),
                        what,
                    });
                };
                notes.note(Note::Waiting(&format!(
                    "waiting: {what} in {}",
                    self.dir.display()
                )));
                match kind {
                    LockKind::Shared => file.lock_shared(),
                    LockKind::Exclusive => file.lock(),
                }
                .map_err(IoError::at("lock", path))?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(IoError::at("lock", path)(e).into()),
        }
        Ok(StoreLock { _file: file, kind })
    }

    /// The shared lock for a command that only reads the store; `None` when
    /// the store cannot hold a lock file (read-only), where nothing can
    /// delete objects either.
    pub fn lock_for_reading(&self, wait: Wait<'_>) -> Result<Option<StoreLock>, StoreError> {
        if !self.dir.is_dir() {
            return Ok(None);
        }
        match self.lock(LockKind::Shared, wait) {
            Ok(l) => Ok(Some(l)),
            Err(StoreError::LockFile(OwnFileError::Io(e)))
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EROFS | libc::EACCES | libc::EPERM)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether `sp` is in the store: a real directory (a symlink or a file
    /// under an object's name is not an object).
    pub fn has(&self, sp: &StorePath) -> bool {
        fs::symlink_metadata(self.path(sp)).is_ok_and(|m| m.is_dir())
    }

    /// Host path of an object.
    pub fn path(&self, sp: &StorePath) -> PathBuf {
        self.dir.join(sp.base_name())
    }

    /// Map a boot-time store path (`/var/lib/genboot/store/<h>-<n>/rest`)
    /// to the object and the host path.
    pub fn resolve_boot_path(&self, boot_path: &str) -> Option<(StorePath, PathBuf)> {
        let rest = boot_path.strip_prefix(STORE_DIR)?.strip_prefix('/')?;
        let (base, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let sp = StorePath::parse(base)?;
        let host = if tail.is_empty() {
            self.path(&sp)
        } else {
            self.path(&sp).join(tail)
        };
        Some((sp, host))
    }

    /// Build an object: `fill` writes its contents into an empty directory.
    /// If an object with the same hash exists, it is kept and the new copy
    /// discarded.
    pub fn build<E>(
        &self,
        name: &str,
        opts: BuildOptions<'_>,
        fill: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<StorePath, StoreError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        check_name(name)?;
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}-{name}",
            std::process::id(),
            fsutil::tmp_number()
        ));
        fs::create_dir(&tmp).map_err(IoError::at("create", &tmp))?;
        let result = self.build_in(&tmp, name, opts, fill);
        if result.is_err() {
            // The error is what matters; a staging directory left behind is
            // removed by the next `gc`.
            let _ = fsutil::remove_tree(&tmp);
        }
        result
    }

    fn build_in<E>(
        &self,
        tmp: &Path,
        name: &str,
        opts: BuildOptions<'_>,
        fill: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<StorePath, StoreError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        fill(tmp).map_err(|e| StoreError::Fill {
            name: name.to_string(),
            cause: e.into(),
        })?;
        failpoint::hit(FailPoint::StoreStaged).map_err(IoError::at("stage", tmp))?;
        let entries = scan(tmp)?;
        check_links(name, tmp, &entries, opts.external_links)?;
        // Staged content carries SELF_MASK where it names itself, which is
        // exactly what the hash sees, so no own hash is passed here.
        let hash = hash_entries(tmp, name, entries.clone(), None)?;
        let sp = StorePath {
            hash,
            name: name.to_string(),
        };
        failpoint::hit(FailPoint::StoreHashed).map_err(IoError::at("hash", tmp))?;
        // An object already there is reused only after it is checked like
        // `verify` checks it: a damaged one (or a symlink or file under its
        // name) is replaced by this fresh copy.
        let existing = self.existing(&sp)?;
        if existing == Existing::Good {
            fsutil::remove_tree(tmp)?;
            return Ok(sp);
        }
        if opts.self_refs {
            rewrite_self_refs(tmp, &entries, sp.hash.as_bytes())?;
        }
        make_read_only(tmp, &entries)?;
        fsutil::syncfs(tmp)?;
        failpoint::hit(FailPoint::StoreSynced).map_err(IoError::at("sync", tmp))?;
        self.land(tmp, &sp, existing, opts.notes)?;
        fsutil::fsync_dir(&self.dir)?;
        failpoint::hit(FailPoint::StoreRenamed).map_err(IoError::at("rename", &self.path(&sp)))?;
        Ok(sp)
    }

    fn existing(&self, sp: &StorePath) -> Result<Existing, StoreError> {
        let dest = self.path(sp);
        match fs::symlink_metadata(&dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Existing::Missing),
            Err(e) => Err(IoError::at("look up", &dest)(e).into()),
            Ok(_) => Ok(match self.verify_object(sp)? {
                None => Existing::Good,
                Some(problem) => Existing::Bad(problem),
            }),
        }
    }

    /// Move the finished staging directory `tmp` to its place. Another build
    /// may land the same object first (builds run concurrently under the
    /// shared lock): losing that race to a good object is success.
    fn land(
        &self,
        tmp: &Path,
        sp: &StorePath,
        existing: Existing,
        notes: &dyn Notes,
    ) -> Result<(), StoreError> {
        let dest = self.path(sp);
        let problem = match existing {
            Existing::Bad(problem) => problem,
            Existing::Good | Existing::Missing => match fs::rename(tmp, &dest) {
                Ok(()) => return Ok(()),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOTEMPTY | libc::EEXIST | libc::ENOTDIR | libc::EISDIR)
                    ) =>
                {
                    match self.existing(sp)? {
                        Existing::Good => return Ok(fsutil::remove_tree(tmp)?),
                        Existing::Bad(problem) => problem,
                        Existing::Missing => {
                            return Err(IoError::at("rename into place", &dest)(e).into());
                        }
                    }
                }
                Err(e) => return Err(IoError::at("rename into place", &dest)(e).into()),
            },
        };
        // Swap the fresh copy in atomically: the name never goes missing
        // (a running system may be reading the old object through it).
        exchange(tmp, &dest)?;
        notes.note(Note::Warning(&format!(
            "store object {} was damaged ({problem}); replaced it with a fresh copy",
            dest.display()
        )));
        // `tmp` now holds the damaged object.
        Ok(fsutil::remove_tree(tmp)?)
    }

    /// Add a copy of `src` (a file or a directory tree) as object `name`.
    /// A file becomes `<object>/<file_name>`.
    pub fn add_path(&self, name: &str, src: &Path) -> Result<StorePath, StoreError> {
        self.build(
            name,
            BuildOptions::default(),
            |dir| -> Result<(), StoreError> {
                let meta = fs::metadata(src).map_err(IoError::at("read", src))?;
                if meta.is_dir() {
                    Ok(fsutil::copy_tree(src, dir)?)
                } else {
                    let dest = dir.join(src.file_name().unwrap_or(OsStr::new("file")));
                    fs::copy(src, &dest).map_err(IoError::at("copy", src))?;
                    Ok(())
                }
            },
        )
    }

    /// All objects (ignores temporary directories of interrupted builds).
    pub fn objects(&self) -> Result<Vec<StorePath>, StoreError> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(IoError::at("list", &self.dir)(e).into()),
        };
        for item in rd {
            let item = item.map_err(IoError::at("list", &self.dir))?;
            if let Some(sp) = item.file_name().to_str().and_then(StorePath::parse) {
                out.push(sp);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Temporary directories left by interrupted builds.
    pub fn leftovers(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut out = Vec::new();
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for item in rd.flatten() {
                if item.file_name().as_bytes().starts_with(b".tmp-") {
                    out.push(item.path());
                }
            }
        }
        Ok(out)
    }

    /// Check one object as `verify` does; `Some(problem)` if it is not a
    /// real directory, a file or directory has another mode than the store
    /// gives (directories 0555, files 0444 or 0555: nothing writable,
    /// setuid, setgid or sticky), is owned by anyone but the user genboot
    /// runs as (root on a real system), or the contents do not hash to the
    /// object's name.
    pub fn verify_object(&self, sp: &StorePath) -> Result<Option<String>, StoreError> {
        let dir = self.path(sp);
        let meta = fs::symlink_metadata(&dir).map_err(IoError::at("look up", &dir))?;
        if meta.file_type().is_symlink() {
            let to = fs::read_link(&dir).unwrap_or_default();
            return Ok(Some(format!(
                "it is a symlink to {}, not a directory",
                to.display()
            )));
        }
        if !meta.is_dir() {
            return Ok(Some("it is not a directory".into()));
        }
        let scanned = match scan_full(&dir) {
            Ok(s) => s,
            Err(e) => return Ok(Some(e.to_string())),
        };
        let mut problems = Vec::new();
        let owner = expected_owner();
        if let Some(p) = perm_problem(".", true, &Perm::of(&meta), owner) {
            problems.push(p);
        }
        for (e, perm) in &scanned {
            let is_dir = match e.kind {
                EntryKind::Dir => true,
                EntryKind::File { .. } => false,
                EntryKind::Symlink { .. } => continue,
            };
            if let Some(p) = perm_problem(&String::from_utf8_lossy(&e.path), is_dir, perm, owner) {
                problems.push(p);
            }
        }
        if problems.len() > 3 {
            let more = problems.len() - 3;
            problems.truncate(3);
            problems.push(format!("and {more} more with wrong modes or owners"));
        }
        let entries = scanned.into_iter().map(|(e, _)| e).collect();
        let hash = hash_entries(&dir, &sp.name, entries, Some(sp.hash.as_bytes()))?;
        if hash != sp.hash {
            problems.insert(0, format!("contents hash to {hash}"));
        }
        Ok((!problems.is_empty()).then(|| problems.join("; ")))
    }

    /// A fingerprint of an object's metadata (paths, modes, owners, sizes,
    /// inode numbers, mtimes and ctimes), read without reading contents: it
    /// changes when anything writes to the object. `None` if `sp` is not a
    /// real directory.
    pub fn metadata_stamp(&self, sp: &StorePath) -> Option<String> {
        let dir = self.path(sp);
        let top = fs::symlink_metadata(&dir).ok()?;
        if !top.is_dir() {
            return None;
        }
        let line = |rel: &Path, m: &fs::Metadata| {
            format!(
                "{} {:o} {}:{} {} {} {}.{} {}.{}\n",
                rel.display(),
                m.mode(),
                m.uid(),
                m.gid(),
                m.len(),
                m.ino(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec()
            )
        };
        // `DirEntry::metadata` stats relative to the open directory (and
        // never follows a link); subdirectories are walked in parallel.
        fn go(
            base: &Path,
            rel: &Path,
            line: &(dyn Fn(&Path, &fs::Metadata) -> String + Sync),
        ) -> io::Result<Vec<(PathBuf, String)>> {
            let mut out = Vec::new();
            let mut subdirs = Vec::new();
            for item in fs::read_dir(base.join(rel))? {
                let item = item?;
                let child = rel.join(item.file_name());
                let m = item.metadata()?;
                out.push((child.clone(), line(&child, &m)));
                if m.is_dir() {
                    subdirs.push(child);
                }
            }
            let below: Vec<Vec<(PathBuf, String)>> = subdirs
                .par_iter()
                .map(|d| go(base, d, line))
                .collect::<io::Result<_>>()?;
            out.extend(below.into_iter().flatten());
            Ok(out)
        }
        let mut lines = go(&dir, Path::new(""), &line).ok()?;
        lines.sort();
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(line(Path::new("."), &top));
        for (_, l) in &lines {
            h.update(l.as_bytes());
        }
        Some(genboot_format::hex(&h.finalize()[..16]))
    }

    /// Re-hash every object.
    pub fn verify(&self) -> Result<Vec<Mismatch>, StoreError> {
        let mut out = Vec::new();
        for sp in self.objects()? {
            match self.verify_object(&sp) {
                Ok(None) => {}
                Ok(Some(problem)) => out.push(Mismatch {
                    object: sp.base_name(),
                    problem,
                }),
                Err(e) => out.push(Mismatch {
                    object: sp.base_name(),
                    problem: e.to_string(),
                }),
            }
        }
        Ok(out)
    }

    /// Objects `sp` refers to through symlinks (directly).
    pub fn references(&self, sp: &StorePath) -> Result<Vec<StorePath>, StoreError> {
        let dir = self.path(sp);
        let mut out = Vec::new();
        for e in scan(&dir)? {
            if let EntryKind::Symlink { target } = &e.kind {
                let link_dir = Path::new(OsStr::from_bytes(&e.path))
                    .parent()
                    .unwrap_or(Path::new(""));
                let target = Path::new(OsStr::from_bytes(target));
                if let Some(other) = self.object_of_target(&sp.base_name(), link_dir, target) {
                    if &other != sp {
                        out.push(other);
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn object_of_target(&self, object: &str, link_dir: &Path, target: &Path) -> Option<StorePath> {
        let inside = resolve_in_store(object, link_dir, target)?;
        let first = inside.components().next()?;
        StorePath::parse(first.as_os_str().to_str()?)
    }

    /// Delete an object (for gc).
    pub fn delete(&self, sp: &StorePath) -> Result<(), StoreError> {
        Ok(fsutil::remove_tree(&self.path(sp))?)
    }
}

/// Swap the fresh copy `a` in for the damaged object `b`: atomically
/// (`renameat2(RENAME_EXCHANGE)`), or on a file system without it with two
/// renames; between them the object's name is missing for an instant,
/// which only a reader opening it at that moment notices (open files stay
/// valid), and which a crash there leaves as a missing object that the
/// next build makes again.
fn exchange(a: &Path, b: &Path) -> Result<(), StoreError> {
    if fsutil::exchange(a, b)? {
        return Ok(());
    }
    let aside = a.with_file_name(format!(
        ".tmp-{}-{}-damaged",
        std::process::id(),
        fsutil::tmp_number()
    ));
    fs::rename(b, &aside).map_err(IoError::at("move aside", b))?;
    fs::rename(a, b).map_err(IoError::at("rename into place", b))?;
    fs::rename(&aside, a).map_err(IoError::at("rename", &aside))?;
    Ok(())
}

/// Where `target` (a symlink in `object`, in directory `link_dir` relative to
/// the object) lands, relative to the store directory; `None` if outside.
fn resolve_in_store(object: &str, link_dir: &Path, target: &Path) -> Option<PathBuf> {
    let mut parts: Vec<&OsStr> = Vec::new();
    let start: Vec<&OsStr> = if target.is_absolute() {
        let rel = target.strip_prefix(STORE_DIR).ok()?;
        return normalise(Vec::new(), rel);
    } else {
        let mut v = vec![OsStr::new(object)];
        v.extend(link_dir.components().map(|c| c.as_os_str()));
        v
    };
    parts.extend(start);
    normalise(parts, target)
}

fn normalise<'a>(mut parts: Vec<&'a OsStr>, rel: &'a Path) -> Option<PathBuf> {
    for c in rel.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.iter().collect())
}

fn check_links(
    name: &str,
    dir: &Path,
    entries: &[Entry],
    external: &[&str],
) -> Result<(), StoreError> {
    let object = dir.file_name().and_then(OsStr::to_str).unwrap_or(name);
    for e in entries {
        if let EntryKind::Symlink { target } = &e.kind {
            let path = String::from_utf8_lossy(&e.path).into_owned();
            if external.contains(&path.as_str()) {
                continue;
            }
            let link_dir = Path::new(OsStr::from_bytes(&e.path))
                .parent()
                .unwrap_or(Path::new(""));
            let t = Path::new(OsStr::from_bytes(target));
            // A relative link may go to a sibling object: the temporary
            // directory stands where the object will stand.
            if resolve_in_store(object, link_dir, t).is_none() {
                return Err(StoreError::LinkLeavesStore {
                    name: name.to_string(),
                    link: path,
                    target: t.display().to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Mode and owner of one entry.
#[derive(Debug, Clone, Copy)]
struct Perm {
    mode: u32,
    uid: u32,
    gid: u32,
}

impl Perm {
    fn of(m: &fs::Metadata) -> Perm {
        Perm {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
        }
    }
}

/// Store files and directories belong to the user genboot runs as: root
/// on a real system (a user who builds a tree below --root owns it).
#[allow(unsafe_code)]
fn expected_owner() -> (u32, u32) {
    // SAFETY: geteuid and getegid take no arguments, cannot fail and touch
    // no memory of ours.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

fn perm_problem(path: &str, is_dir: bool, p: &Perm, owner: (u32, u32)) -> Option<String> {
    let ok_mode = if is_dir {
        p.mode == 0o555
    } else {
        p.mode == 0o444 || p.mode == 0o555
    };
    if !ok_mode {
        let expected = if is_dir { "0555" } else { "0444 or 0555" };
        return Some(format!(
            "{path} has mode {:04o}, expected {expected}",
            p.mode
        ));
    }
    if (p.uid, p.gid) != owner {
        return Some(format!(
            "{path} is owned by {}:{}, expected {}:{}",
            p.uid, p.gid, owner.0, owner.1
        ));
    }
    None
}

/// List the entries of an object directory, sorted; file digests are not
/// computed yet (zeroed).
fn scan(dir: &Path) -> Result<Vec<Entry>, StoreError> {
    Ok(scan_full(dir)?.into_iter().map(|(e, _)| e).collect())
}

/// [`scan`], with each entry's mode and owner. The directory itself must be
/// a real directory, not a symlink to one.
fn scan_full(dir: &Path) -> Result<Vec<(Entry, Perm)>, StoreError> {
    let top = fs::symlink_metadata(dir).map_err(IoError::at("look up", dir))?;
    if !top.is_dir() {
        return Err(IoError::at("list", dir)(io::Error::from_raw_os_error(libc::ENOTDIR)).into());
    }
    fn walk(base: &Path, rel: &Path, out: &mut Vec<(Entry, Perm)>) -> Result<(), StoreError> {
        let here = base.join(rel);
        for item in fs::read_dir(&here).map_err(IoError::at("list", &here))? {
            let item = item.map_err(IoError::at("list", &here))?;
            let path = item.path();
            let meta = fs::symlink_metadata(&path).map_err(IoError::at("stat", &path))?;
            let rel_path = rel.join(item.file_name());
            let bytes = rel_path.as_os_str().as_bytes().to_vec();
            let ft = meta.file_type();
            let perm = Perm::of(&meta);
            if ft.is_dir() {
                out.push((
                    Entry {
                        path: bytes,
                        kind: EntryKind::Dir,
                    },
                    perm,
                ));
                walk(base, &rel_path, out)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(IoError::at("read link", &path))?;
                out.push((
                    Entry {
                        path: bytes,
                        kind: EntryKind::Symlink {
                            target: target.as_os_str().as_bytes().to_vec(),
                        },
                    },
                    perm,
                ));
            } else if ft.is_file() {
                out.push((
                    Entry {
                        path: bytes,
                        kind: EntryKind::File {
                            executable: meta.permissions().mode() & 0o100 != 0,
                            size: meta.len(),
                            digest: [0; 32],
                        },
                    },
                    perm,
                ));
            } else {
                return Err(StoreError::SpecialFile { path });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, Path::new(""), &mut out)?;
    out.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    Ok(out)
}

/// Hash the scanned entries of `dir` as object `name`, file digests in
/// parallel.
fn hash_entries(
    dir: &Path,
    name: &str,
    mut entries: Vec<Entry>,
    own: Option<&[u8; 32]>,
) -> Result<StoreHash, StoreError> {
    entries
        .par_iter_mut()
        .try_for_each(|e| -> Result<(), StoreError> {
            match &mut e.kind {
                EntryKind::File { size, digest, .. } => {
                    let path = dir.join(OsStr::from_bytes(&e.path));
                    let f = fs::File::open(&path).map_err(IoError::at("read", &path))?;
                    let (n, d) =
                        storehash::file_digest(f, own).map_err(IoError::at("read", &path))?;
                    *size = n;
                    *digest = d;
                }
                EntryKind::Symlink { target } => {
                    if let Some(own) = own {
                        storehash::mask_self(target, own);
                    }
                }
                EntryKind::Dir => {}
            }
            Ok(())
        })?;
    Ok(storehash::object_hash(name, &entries))
}

/// Hash a directory tree as if it were object `name` (used by benchmarks and
/// by callers that need a hash without adding to the store).
pub fn hash_tree(dir: &Path, name: &str) -> Result<StoreHash, StoreError> {
    let entries = scan(dir)?;
    hash_entries(dir, name, entries, None)
}

fn rewrite_self_refs(dir: &Path, entries: &[Entry], hash: &[u8]) -> Result<(), StoreError> {
    for e in entries {
        let path = dir.join(OsStr::from_bytes(&e.path));
        match &e.kind {
            EntryKind::File { size, .. } if *size <= 16 << 20 => {
                let data = fs::read(&path).map_err(IoError::at("read", &path))?;
                if memchr::memmem::find(&data, SELF_MASK).is_some() {
                    let replaced = replace_all(&data, SELF_MASK, hash);
                    fs::write(&path, replaced).map_err(IoError::at("write", &path))?;
                }
            }
            EntryKind::Symlink { target } if memchr::memmem::find(target, SELF_MASK).is_some() => {
                let new = replace_all(target, SELF_MASK, hash);
                fs::remove_file(&path).map_err(IoError::at("replace link", &path))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&new), &path)
                    .map_err(IoError::at("replace link", &path))?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn replace_all(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while let Some(i) = memchr::memmem::find(rest, from) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to);
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fn make_read_only(dir: &Path, entries: &[Entry]) -> Result<(), StoreError> {
    // Deepest first so directories lose their write bit after their contents.
    for e in entries.iter().rev() {
        let path = dir.join(OsStr::from_bytes(&e.path));
        let mode = match e.kind {
            EntryKind::Dir => 0o555,
            EntryKind::File {
                executable: true, ..
            } => 0o555,
            EntryKind::File { .. } => 0o444,
            EntryKind::Symlink { .. } => continue,
        };
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(IoError::at("make read-only", &path))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o555))
        .map_err(IoError::at("make read-only", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(&State::open(t.path()).unwrap()).unwrap();
        (t, s)
    }

    #[test]
    fn same_contents_same_hash_and_one_object() {
        let (_t, s) = store();
        let a = s
            .build("x", BuildOptions::default(), |d| {
                fs::write(d.join("f"), b"hello")
            })
            .unwrap();
        let b = s
            .build("x", BuildOptions::default(), |d| {
                fs::write(d.join("f"), b"hello")
            })
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(s.objects().unwrap(), vec![a.clone()]);
        assert!(s.leftovers().unwrap().is_empty());
        let c = s
            .build("x", BuildOptions::default(), |d| {
                fs::write(d.join("f"), b"hellO")
            })
            .unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn objects_are_read_only() {
        let (_t, s) = store();
        let a = s
            .build("x", BuildOptions::default(), |d| {
                fs::write(d.join("f"), b"1")
            })
            .unwrap();
        let mode = fs::metadata(s.path(&a).join("f"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
    }

    #[test]
    fn names_with_slash_or_dotdot_are_refused() {
        for bad in ["a/b", "..", "a..b", "", "x\ny", "a b"] {
            assert!(
                matches!(check_name(bad), Err(StoreError::BadName { .. })),
                "{bad:?}"
            );
        }
        check_name("linux-6.1.0-50-amd64").unwrap();
    }

    #[test]
    fn link_leaving_the_store_is_refused_and_nothing_added() {
        let (_t, s) = store();
        let e = s
            .build("x", BuildOptions::default(), |d| {
                std::os::unix::fs::symlink("../../../etc/passwd", d.join("l"))
            })
            .unwrap_err();
        assert!(matches!(e, StoreError::LinkLeavesStore { .. }), "{e}");
        let e = s
            .build("x", BuildOptions::default(), |d| {
                std::os::unix::fs::symlink("/etc/passwd", d.join("l"))
            })
            .unwrap_err();
        assert!(matches!(e, StoreError::LinkLeavesStore { .. }), "{e}");
        assert!(s.objects().unwrap().is_empty());
        assert!(s.leftovers().unwrap().is_empty());
    }

    #[test]
    fn links_to_other_objects_are_references() {
        let (_t, s) = store();
        let a = s
            .build("a", BuildOptions::default(), |d| {
                fs::write(d.join("f"), b"1")
            })
            .unwrap();
        let target = format!("../{}/f", a.base_name());
        let b = s
            .build("b", BuildOptions::default(), |d| {
                std::os::unix::fs::symlink(&target, d.join("l"))
            })
            .unwrap();
        assert_eq!(s.references(&b).unwrap(), vec![a]);
    }

    #[test]
    fn self_reference_is_replaced_and_verifies() {
        let (_t, s) = store();
        let mask = std::str::from_utf8(SELF_MASK).unwrap();
        let a = s
            .build(
                "gen",
                BuildOptions {
                    self_refs: true,
                    ..BuildOptions::default()
                },
                |d| {
                    fs::write(
                        d.join("boot.json"),
                        format!("{{\"toplevel\":\"/x/{mask}-gen\"}}"),
                    )
                },
            )
            .unwrap();
        let text = fs::read_to_string(s.path(&a).join("boot.json")).unwrap();
        assert!(text.contains(&format!("/x/{}-gen", a.hash)), "{text}");
        assert_eq!(s.verify().unwrap(), vec![]);
    }

    #[test]
    fn verify_finds_a_flipped_byte() {
        let (_t, s) = store();
        let a = s
            .build("x", BuildOptions::default(), |d| {
                fs::write(d.join("f"), b"hello")
            })
            .unwrap();
        let f = s.path(&a).join("f");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&f, b"hellp").unwrap();
        let m = s.verify().unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].object, a.base_name());
    }

    #[test]
    fn parallel_hash_equals_the_activators_sequential_hash() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("a/b")).unwrap();
        fs::write(t.path().join("a/b/f"), vec![7u8; 300_000]).unwrap();
        fs::write(t.path().join("x"), b"x").unwrap();
        fs::set_permissions(t.path().join("x"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("a/b/f", t.path().join("l")).unwrap();
        let ours = hash_tree(t.path(), "n").unwrap();
        let theirs = storehash::hash_tree(t.path(), "n", None).unwrap();
        assert_eq!(ours, theirs);
    }
}
