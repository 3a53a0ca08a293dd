//! File-system calls genboot makes the same way everywhere: one error type
//! for a failed call ([`IoError`]: what, on which path, why), durable
//! replacement of a file, directory and file-system flushes, tree copy and
//! removal, and the `O_NOFOLLOW`/`O_EXCL` opens of the files genboot keeps
//! in its state.
//!
//! Errors carry their cause in their message (`cannot read X: <why>`) and
//! return no [`std::error::Error::source`], so a chain is printed without
//! repeating anything.

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What a file's metadata says about its content without reading it:
/// size, modification and change times (nanoseconds), inode number. The
/// change time is what makes it trustworthy: size and mtime can be put
/// back after an edit (`touch -r`), the ctime cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
}

impl Stamp {
    pub fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            size: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            ino: m.ino(),
        }
    }

    /// The stamp of `path` (symlinks followed); `None` if it is missing.
    pub fn of_path(path: &Path) -> Option<Stamp> {
        fs::metadata(path).ok().map(|m| Stamp::of(&m))
    }

    /// The newer of its change and modification times.
    pub fn changed_ns(&self) -> i128 {
        self.ctime_ns.max(self.mtime_ns)
    }
}

/// A failed file-system call: `cannot {op} {path}: {source}`.
#[derive(Debug)]
pub struct IoError {
    pub op: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl IoError {
    /// `map_err(IoError::at("read", path))`.
    pub fn at<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> IoError + 'a {
        move |source| IoError {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The OS error number, if the cause has one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.op,
            self.path.display(),
            self.source
        )
    }
}

/// The cause is part of the message, so there is no separate source.
impl std::error::Error for IoError {}

/// Why one of genboot's own state files (a lock, the settings, a cache
/// entry) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OwnFileError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{path} is a symlink; genboot's {what} must be a plain file")]
    Symlinked { path: PathBuf, what: &'static str },
    #[error("{path} is not a plain file genboot created ({why}); genboot's {what} must be a regular file with one link")]
    Foreign {
        path: PathBuf,
        what: &'static str,
        why: String,
    },
}

impl crate::hint::Hint for OwnFileError {
    fn hint(&self) -> Option<String> {
        match self {
            OwnFileError::Io(_) => None,
            OwnFileError::Symlinked { path, .. } => Some(format!(
                "remove {} (genboot creates it again); a symlink there would make genboot write to whatever it points at",
                path.display()
            )),
            OwnFileError::Foreign { path, .. } => Some(format!(
                "remove {} (genboot creates it again)",
                path.display()
            )),
        }
    }
}

fn nofollow_error(e: io::Error, path: &Path, what: &'static str) -> OwnFileError {
    if e.raw_os_error() == Some(libc::ELOOP) {
        OwnFileError::Symlinked {
            path: path.to_path_buf(),
            what,
        }
    } else {
        IoError::at("open", path)(e).into()
    }
}

fn check_own_file(file: &fs::File, path: &Path, what: &'static str) -> Result<(), OwnFileError> {
    let m = file.metadata().map_err(IoError::at("stat", path))?;
    let why = if !m.is_file() {
        Some("not a regular file".to_string())
    } else if m.nlink() != 1 {
        Some(format!("it has {} hard links", m.nlink()))
    } else {
        None
    };
    match why {
        Some(why) => Err(OwnFileError::Foreign {
            path: path.to_path_buf(),
            what,
            why,
        }),
        None => Ok(()),
    }
}

/// Open (creating it) a lock file genboot keeps in its state: never through
/// a symlink, and only a regular file with one link (a hard link to another
/// file would have genboot overwrite that file).
pub fn open_lock_file(path: &Path, what: &'static str) -> Result<fs::File, OwnFileError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| nofollow_error(e, path, what))?;
    check_own_file(&file, path, what)?;
    Ok(file)
}

/// Read a state file genboot wrote, never through a symlink; `None` if it
/// does not exist.
pub fn read_own_file(path: &Path, what: &'static str) -> Result<Option<Vec<u8>>, OwnFileError> {
    let mut f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(nofollow_error(e, path, what)),
    };
    if !f.metadata().map_err(IoError::at("stat", path))?.is_file() {
        return Err(OwnFileError::Foreign {
            path: path.to_path_buf(),
            what,
            why: "not a regular file".into(),
        });
    }
    let mut data = Vec::new();
    f.read_to_end(&mut data)
        .map_err(IoError::at("read", path))?;
    Ok(Some(data))
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name for a temporary sibling of `path`, unique in this process:
/// `.<name>.tmp-<pid>-<n>`.
fn tmp_sibling(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .unwrap_or(OsStr::new("file"))
        .to_string_lossy();
    dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A unique number for temporary names in this process.
pub fn tmp_number() -> u64 {
    TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Whether [`replace_file`] flushes the new file and its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file before the rename and the directory after it.
    Durable,
    /// No flushes (caches, which are advisory).
    Cached,
}

/// Replace `path` with `data`: a fresh temporary file beside it (`O_EXCL`,
/// `O_NOFOLLOW`, so a planted file or link at the temporary name is never
/// written through), optionally flushed, then renamed over `path` (rename
/// replaces a link at `path`, it does not follow it).
pub fn replace_file(path: &Path, data: &[u8], durability: Durability) -> Result<(), IoError> {
    let tmp = tmp_sibling(path);
    let durable = durability == Durability::Durable;
    let result = (|| {
        let mut f = create_new_nofollow(&tmp, 0o644)?;
        f.write_all(data).map_err(IoError::at("write", &tmp))?;
        if durable {
            f.sync_all().map_err(IoError::at("sync", &tmp))?;
        }
        fs::rename(&tmp, path).map_err(IoError::at("rename into place", path))?;
        if durable {
            fsync_dir(path.parent().unwrap_or(Path::new(".")))?;
        }
        Ok(())
    })();
    if result.is_err() {
        // Best effort: a leftover temporary name is harmless and unique.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Create a new file, failing if anything (a file, a symlink) is there.
pub fn create_new_nofollow(path: &Path, mode: u32) -> Result<fs::File, IoError> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(IoError::at("create", path))
}

/// fsync a directory so a rename, creation or removal in it is durable.
pub fn fsync_dir(path: &Path) -> Result<(), IoError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(IoError::at("sync", path))
}

/// Flush the whole file system holding `path` (one call instead of an
/// fsync per file).
pub fn syncfs(path: &Path) -> Result<(), IoError> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).map_err(IoError::at("open", path))?;
    #[allow(unsafe_code)]
    // SAFETY: syncfs only reads the file descriptor, which `f` keeps open.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc != 0 {
        return Err(IoError::at("sync", path)(io::Error::last_os_error()));
    }
    Ok(())
}

/// A file with no name yet (`O_TMPFILE`) in `dir`: invisible to anything
/// that walks the directory until [`link_unnamed`] gives it one. Its path
/// for `open` is `/proc/self/fd/<fd>` (`/proc/<pid>/fd/<fd>` for a child).
pub fn create_unnamed(dir: &Path, mode: u32) -> Result<fs::File, IoError> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(mode)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir)
        .map_err(IoError::at("create an unnamed file in", dir))
}

/// Give `file` (from [`create_unnamed`]) the name `path`, replacing what
/// is there: linked at a fresh temporary name beside `path`, flushed,
/// renamed over `path`, the directory flushed.
#[allow(unsafe_code)]
pub fn link_unnamed(file: &fs::File, path: &Path) -> Result<(), IoError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    file.sync_all().map_err(IoError::at("sync", path))?;
    let tmp = tmp_sibling(path);
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .expect("no NUL in a number");
    let to = std::ffi::CString::new(tmp.as_os_str().as_bytes())
        .map_err(|_| IoError::at("link", path)(io::Error::other("path contains NUL")))?;
    // SAFETY: both are valid NUL-terminated paths that outlive the call,
    // which only reads them; `file` keeps the descriptor open.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc != 0 {
        return Err(IoError::at("link", &tmp)(io::Error::last_os_error()));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        // Best effort: a leftover temporary name is harmless and unique.
        let _ = fs::remove_file(&tmp);
        return Err(IoError::at("rename into place", path)(e));
    }
    fsync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Copy a directory tree (files, directories, symlinks as they are).
/// Anything else (a device, a FIFO) is refused with `ENOTSUP`-like error.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), CopyError> {
    for item in fs::read_dir(src).map_err(IoError::at("list", src))? {
        let item = item.map_err(IoError::at("list", src))?;
        let from = item.path();
        let to = dst.join(item.file_name());
        let ft = item.file_type().map_err(IoError::at("stat", &from))?;
        if ft.is_dir() {
            fs::create_dir(&to).map_err(IoError::at("create", &to))?;
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            let t = fs::read_link(&from).map_err(IoError::at("read link", &from))?;
            std::os::unix::fs::symlink(t, &to).map_err(IoError::at("create link", &to))?;
        } else if ft.is_file() {
            fs::copy(&from, &to).map_err(IoError::at("copy", &from))?;
        } else {
            return Err(CopyError::Special { path: from });
        }
    }
    Ok(())
}

/// Why [`copy_tree`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{path} is not a regular file, directory or symlink, so it cannot enter the store")]
    Special { path: PathBuf },
}

/// Remove a tree, restoring write permission on read-only directories
/// first. A symlink or file is removed as a name (never what a link points
/// at); a missing path is not an error.
pub fn remove_tree(path: &Path) -> Result<(), IoError> {
    fn unlock(p: &Path) {
        if let Ok(meta) = fs::symlink_metadata(p) {
            if meta.is_dir() {
                // Best effort: remove_dir_all reports what stays locked.
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o755));
                if let Ok(rd) = fs::read_dir(p) {
                    for item in rd.flatten() {
                        unlock(&item.path());
                    }
                }
            }
        }
    }
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(IoError::at("remove", path)(e)),
        Ok(m) if !m.is_dir() => return fs::remove_file(path).map_err(IoError::at("remove", path)),
        Ok(_) => {}
    }
    unlock(path);
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(IoError::at("remove", path)(e)),
    }
}

/// Swap two names atomically (`renameat2(RENAME_EXCHANGE)`). `Ok(false)`
/// when the file system cannot (the caller falls back to renames).
#[allow(unsafe_code)]
pub fn exchange(a: &Path, b: &Path) -> Result<bool, IoError> {
    use std::ffi::CString;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| IoError::at("rename", p)(io::Error::other("path contains NUL")))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // The raw system call: the musl that Rust's static target bundles has
    // no renameat2 wrapper.
    // SAFETY: both are valid NUL-terminated paths that outlive the call;
    // renameat2 only reads them, and takes exactly these five arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
        return Ok(false);
    }
    Err(IoError::at("swap into place", b)(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn io_errors_say_what_where_and_why_once() {
        let e = IoError::at("read", Path::new("/x"))(io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(
            e.to_string(),
            "cannot read /x: No such file or directory (os error 2)"
        );
        assert!(std::error::Error::source(&e).is_none());
    }

    #[test]
    fn lock_files_are_never_opened_through_links() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let lock = t.path().join(".lock");
        symlink(&victim, &lock).unwrap();
        let e = open_lock_file(&lock, "lock file").unwrap_err();
        assert!(matches!(e, OwnFileError::Symlinked { .. }), "{e}");
        fs::remove_file(&lock).unwrap();
        fs::hard_link(&victim, &lock).unwrap();
        let e = open_lock_file(&lock, "lock file").unwrap_err();
        assert!(e.to_string().contains("2 hard links"), "{e}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn state_files_replace_links_instead_of_writing_through_them() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let path = t.path().join("settings.json");
        symlink(&victim, &path).unwrap();
        assert!(read_own_file(&path, "settings").is_err());
        replace_file(&path, b"{}", Durability::Cached).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(read_own_file(&path, "settings").unwrap().unwrap(), b"{}");
        replace_file(&path, b"{1}", Durability::Durable).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{1}");
        // Nothing but the file itself is left beside it.
        let names: Vec<_> = fs::read_dir(t.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn remove_tree_removes_read_only_trees_and_only_the_name_of_a_link() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        fs::write(tree.join("a/b/f"), b"x").unwrap();
        fs::set_permissions(tree.join("a/b"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(tree.join("a"), fs::Permissions::from_mode(0o555)).unwrap();
        let keep = t.path().join("keep");
        fs::create_dir(&keep).unwrap();
        symlink(&keep, t.path().join("link")).unwrap();
        remove_tree(&tree).unwrap();
        remove_tree(&t.path().join("link")).unwrap();
        remove_tree(&t.path().join("missing")).unwrap();
        assert!(!tree.exists());
        assert!(keep.is_dir());
    }
}
