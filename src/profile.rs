//! The system profile: `<state>/profiles/system-<N>-link` → generation,
//! `system` → the current link. Every change writes a new symlink under a
//! temporary name and renames it over the old one, under an exclusive lock.

use crate::failpoint::{self, FailPoint};
use crate::fsutil::{self, IoError, OwnFileError};
use crate::hint::Hint;
use crate::notes::{Note, Wait};
use crate::state::State;
use crate::store::{Store, StorePath};
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("another genboot (pid {holder}) is changing {path}")]
    Locked { path: PathBuf, holder: String },
    #[error("generation {0} does not exist")]
    NoSuchGeneration(u32),
    #[error("generation {0} is the current one and cannot be deleted")]
    DeleteCurrent(u32),
    #[error("generation {0} is the running system (genboot-init recorded it in /run/genboot/booted) and cannot be deleted: its kernel modules are mounted at /lib/modules")]
    DeleteBooted(u32),
    #[error("there is no generation before {0} to roll back to")]
    NothingToRollBack(u32),
    #[error("the profile has no current generation")]
    NoCurrent,
    #[error("profile link {path} does not point into the store")]
    BadLink { path: PathBuf },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("the state directory {path} is not writable: {cause}")]
    NotWritable { path: PathBuf, cause: io::Error },
    #[error(transparent)]
    LockFile(#[from] OwnFileError),
}

impl Hint for ProfileError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            ProfileError::Locked { .. } => {
                "wait for it to finish, or run without --no-wait to wait for it".into()
            }
            ProfileError::NoSuchGeneration(_) => "`genboot list` shows the generations".into(),
            ProfileError::DeleteCurrent(_) => "make another generation current first (`genboot rollback` or `genboot set-default N`)".into(),
            ProfileError::DeleteBooted(_) => "boot another generation first (`genboot set-default N`, then reboot), then delete it".into(),
            ProfileError::NoCurrent => "run `genboot switch --config FILE` first".into(),
            ProfileError::NotWritable { .. } => {
                "run as root, or pass --root DIR to work on a tree you own".into()
            }
            ProfileError::LockFile(e) => return e.hint(),
            ProfileError::NothingToRollBack(_)
            | ProfileError::BadLink { .. }
            | ProfileError::Io(_) => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub number: u32,
    pub target: StorePath,
    /// When the link was made.
    pub date: SystemTime,
    pub current: bool,
}

#[derive(Debug)]
pub struct Profile {
    pub dir: PathBuf,
}

/// The held profile lock; released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: fs::File,
}

pub const CURRENT: &str = "system";

fn link_name(n: u32) -> String {
    format!("system-{n}-link")
}

fn parse_link_name(name: &str) -> Option<u32> {
    name.strip_prefix("system-")?
        .strip_suffix("-link")?
        .parse()
        .ok()
}

impl Profile {
    pub fn new(state: &State) -> Profile {
        Profile {
            dir: state.profiles_dir(),
        }
    }

    /// Take the exclusive lock. Without `wait`, fail at once if it is held;
    /// with it, say who holds it and wait.
    pub fn lock(&self, wait: Wait<'_>) -> Result<Lock, ProfileError> {
        fs::create_dir_all(&self.dir).map_err(|cause| ProfileError::NotWritable {
            path: self.dir.clone(),
            cause,
        })?;
        let path = self.dir.join(".lock");
        // Never through a symlink or a hard link: the pid is written into it.
        let mut file = match fsutil::open_lock_file(&path, "profile lock file") {
            Ok(f) => f,
            Err(OwnFileError::Io(e))
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EROFS | libc::EACCES | libc::EPERM)
                ) =>
            {
                return Err(ProfileError::NotWritable {
                    path,
                    cause: e.source,
                })
            }
            Err(e) => return Err(e.into()),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim().to_string();
                let holder = if holder.is_empty() {
                    "unknown".to_string()
                } else {
                    holder
                };
                let Wait::Yes(notes) = wait else {
                    return Err(ProfileError::Locked { path, holder });
                };
                notes.note(Note::Waiting(&format!(
                    "waiting for another genboot (pid {holder}) to release {}",
                    path.display()
                )));
                file.lock().map_err(IoError::at("lock", &path))?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(IoError::at("lock", &path)(e).into()),
        }
        file.set_len(0).map_err(IoError::at("write", &path))?;
        file.rewind().map_err(IoError::at("write", &path))?;
        write!(file, "{}", std::process::id()).map_err(IoError::at("write", &path))?;
        Ok(Lock { _file: file })
    }

    /// All generations, oldest first.
    pub fn generations(&self) -> Result<Vec<Generation>, ProfileError> {
        let current = self.current_number()?;
        let mut out = Vec::new();
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(IoError::at("list", &self.dir)(e).into()),
        };
        for item in rd {
            let item = item.map_err(IoError::at("list", &self.dir))?;
            let Some(number) = item.file_name().to_str().and_then(parse_link_name) else {
                continue;
            };
            let path = item.path();
            let target = self.read_link(&path)?;
            let date = fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .map_err(IoError::at("stat", &path))?;
            out.push(Generation {
                number,
                target,
                date,
                current: current == Some(number),
            });
        }
        out.sort_by_key(|g| g.number);
        Ok(out)
    }

    fn read_link(&self, path: &Path) -> Result<StorePath, ProfileError> {
        let t = fs::read_link(path).map_err(IoError::at("read link", path))?;
        t.file_name()
            .and_then(|n| n.to_str())
            .and_then(StorePath::parse)
            .ok_or_else(|| ProfileError::BadLink {
                path: path.to_path_buf(),
            })
    }

    pub fn current_number(&self) -> Result<Option<u32>, ProfileError> {
        let path = self.dir.join(CURRENT);
        match fs::read_link(&path) {
            Ok(t) => Ok(t.to_str().and_then(parse_link_name)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(IoError::at("read link", &path)(e).into()),
        }
    }

    pub fn current(&self) -> Result<Generation, ProfileError> {
        self.generations()?
            .into_iter()
            .find(|g| g.current)
            .ok_or(ProfileError::NoCurrent)
    }

    /// Add `target` as a new generation and make it current. If the current
    /// generation is already `target`, nothing changes. Caller holds the lock.
    pub fn add(&self, target: &StorePath, _lock: &Lock) -> Result<(u32, bool), ProfileError> {
        let gens = self.generations()?;
        if let Some(cur) = gens.iter().find(|g| g.current) {
            if &cur.target == target {
                return Ok((cur.number, false));
            }
        }
        let n = gens.last().map_or(1, |g| g.number + 1);
        let link = self.dir.join(link_name(n));
        let tmp = self.dir.join(format!(".{}.tmp", link_name(n)));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("../store/{}", target.base_name()), &tmp)
            .map_err(IoError::at("create link", &tmp))?;
        failpoint::hit(FailPoint::ProfileLinkWritten).map_err(IoError::at("create link", &tmp))?;
        fs::rename(&tmp, &link).map_err(IoError::at("rename", &link))?;
        failpoint::hit(FailPoint::ProfileLinkRenamed).map_err(IoError::at("rename", &link))?;
        self.set_current(n, _lock)?;
        Ok((n, true))
    }

    /// Point `system` at generation `n`.
    pub fn set_current(&self, n: u32, _lock: &Lock) -> Result<(), ProfileError> {
        let link = self.dir.join(link_name(n));
        if fs::symlink_metadata(&link).is_err() {
            return Err(ProfileError::NoSuchGeneration(n));
        }
        let tmp = self.dir.join(".system.tmp");
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(link_name(n), &tmp).map_err(IoError::at("create link", &tmp))?;
        failpoint::hit(FailPoint::ProfileCurrentWritten)
            .map_err(IoError::at("create link", &tmp))?;
        fs::rename(&tmp, self.dir.join(CURRENT)).map_err(IoError::at("rename", &tmp))?;
        failpoint::hit(FailPoint::ProfileCurrentRenamed).map_err(IoError::at("rename", &tmp))?;
        fsutil::fsync_dir(&self.dir)?;
        Ok(())
    }

    /// Make the generation before the current one current.
    pub fn rollback(&self, lock: &Lock) -> Result<u32, ProfileError> {
        let cur = self.current()?;
        let prev = self
            .generations()?
            .into_iter()
            .rfind(|g| g.number < cur.number)
            .ok_or(ProfileError::NothingToRollBack(cur.number))?;
        self.set_current(prev.number, lock)?;
        Ok(prev.number)
    }

    /// Delete generation links: never the current one, nor `booted`, the
    /// generation the running system booted (like NixOS's
    /// `/run/booted-system`, it stays until the next boot).
    pub fn delete(
        &self,
        numbers: &[u32],
        booted: Option<u32>,
        _lock: &Lock,
    ) -> Result<(), ProfileError> {
        let gens = self.generations()?;
        for n in numbers {
            let g = gens
                .iter()
                .find(|g| g.number == *n)
                .ok_or(ProfileError::NoSuchGeneration(*n))?;
            if g.current {
                return Err(ProfileError::DeleteCurrent(*n));
            }
            if booted == Some(*n) {
                return Err(ProfileError::DeleteBooted(*n));
            }
        }
        for n in numbers {
            let link = self.dir.join(link_name(*n));
            fs::remove_file(&link).map_err(IoError::at("remove", &link))?;
        }
        fsutil::fsync_dir(&self.dir)?;
        Ok(())
    }

    /// Store objects the profile's generations point at.
    pub fn roots(&self) -> Result<Vec<StorePath>, ProfileError> {
        Ok(self.generations()?.into_iter().map(|g| g.target).collect())
    }

    /// Put the profile back as `before` (from [`Profile::generations`]) was:
    /// links added since are removed, links removed since come back with
    /// their old dates, and `system` points where it pointed. Used when the
    /// boot menu cannot follow a profile change, so the error changes
    /// nothing.
    pub fn restore(&self, before: &[Generation], lock: &Lock) -> Result<(), ProfileError> {
        let now = self.generations()?;
        for b in before {
            if now.iter().any(|g| g.number == b.number) {
                continue;
            }
            let link = self.dir.join(link_name(b.number));
            let tmp = self.dir.join(format!(".{}.tmp", link_name(b.number)));
            let _ = fs::remove_file(&tmp);
            std::os::unix::fs::symlink(format!("../store/{}", b.target.base_name()), &tmp)
                .map_err(IoError::at("create link", &tmp))?;
            set_link_mtime(&tmp, b.date).map_err(IoError::at("set the date of", &tmp))?;
            fs::rename(&tmp, &link).map_err(IoError::at("rename", &link))?;
        }
        match before.iter().find(|g| g.current) {
            Some(c) => self.set_current(c.number, lock)?,
            None => {
                let cur = self.dir.join(CURRENT);
                match fs::remove_file(&cur) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(IoError::at("remove", &cur)(e).into())
                    }
                    _ => {}
                }
            }
        }
        for g in &now {
            if !before.iter().any(|b| b.number == g.number) {
                let link = self.dir.join(link_name(g.number));
                fs::remove_file(&link).map_err(IoError::at("remove", &link))?;
            }
        }
        fsutil::fsync_dir(&self.dir)?;
        Ok(())
    }
}

/// Set a symlink's own modification time (the generation's date).
#[allow(unsafe_code)]
fn set_link_mtime(path: &Path, date: SystemTime) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let since = date
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path contains NUL"))?;
    let t = libc::timespec {
        tv_sec: since.as_secs().try_into().unwrap_or(i64::MAX as _),
        tv_nsec: since.subsec_nanos() as _,
    };
    let times = [t, t];
    // SAFETY: `c` is a valid NUL-terminated path and `times` two valid
    // timespecs; both outlive the call, which only reads them.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Everything reachable from `roots` through references.
pub fn closure(
    store: &Store,
    roots: &[StorePath],
) -> Result<std::collections::BTreeSet<StorePath>, crate::store::StoreError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut todo: Vec<StorePath> = roots.to_vec();
    while let Some(sp) = todo.pop() {
        if !seen.insert(sp.clone()) {
            continue;
        }
        if store.has(&sp) {
            todo.extend(store.references(&sp)?);
        }
    }
    Ok(seen)
}
