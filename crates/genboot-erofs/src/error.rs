//! One error type: every variant names the path in the image (or the file
//! read), what is wrong and, where there is one, the fix.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    /// The path cannot name an entry of the image.
    InvalidPath { path: PathBuf, reason: &'static str },
    /// An entry was added below a directory that does not exist yet.
    ParentMissing { path: PathBuf },
    /// An entry was added below something that is not a directory.
    ParentNotDir { path: PathBuf, parent: PathBuf },
    /// Two entries for the same path.
    AlreadyExists { path: PathBuf },
    /// A hard link's target is not in the image.
    LinkTargetMissing { path: PathBuf, target: PathBuf },
    /// Directories and whiteouts cannot be hard-linked.
    LinkTargetInvalid {
        path: PathBuf,
        target: PathBuf,
        reason: &'static str,
    },
    /// Mode bits outside `0o7777`.
    InvalidMode { path: PathBuf, mode: u32 },
    /// An xattr EROFS (or the kernel) cannot store.
    InvalidXattr {
        path: PathBuf,
        name: String,
        reason: String,
    },
    /// A symlink target that is empty, too long or contains NUL.
    InvalidSymlink { path: PathBuf, reason: &'static str },
    /// A redirect that overlayfs would not follow.
    InvalidRedirect { path: PathBuf, reason: &'static str },
    /// The tree does not fit EROFS's limits (e.g. more than 2^32 blocks).
    TooLarge { what: String },
    /// Reading a data file or writing the image failed.
    Io {
        op: &'static str,
        path: Option<PathBuf>,
        source: std::io::Error,
    },
    /// A data file's size is not the size it was added with.
    DataChanged {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidPath { path, reason } => {
                write!(f, "{}: invalid path in the image: {reason}", path.display())
            }
            Error::ParentMissing { path } => write!(
                f,
                "{}: its parent directory is not in the image; add the directory first",
                path.display()
            ),
            Error::ParentNotDir { path, parent } => write!(
                f,
                "{}: parent {} is not a directory",
                path.display(),
                parent.display()
            ),
            Error::AlreadyExists { path } => write!(
                f,
                "{}: already in the image; each path is added once (use add_hardlink for a second name of the same file)",
                path.display()
            ),
            Error::LinkTargetMissing { path, target } => write!(
                f,
                "{}: hard link target {} is not in the image; add it first",
                path.display(),
                target.display()
            ),
            Error::LinkTargetInvalid { path, target, reason } => write!(
                f,
                "{}: cannot hard-link to {}: {reason}",
                path.display(),
                target.display()
            ),
            Error::InvalidMode { path, mode } => write!(
                f,
                "{}: mode {mode:#o} has bits outside 0o7777; pass the permission bits only (st_mode & 0o7777), the file type comes from the entry kind",
                path.display()
            ),
            Error::InvalidXattr { path, name, reason } => {
                write!(f, "{}: xattr {name:?}: {reason}", path.display())
            }
            Error::InvalidSymlink { path, reason } => {
                write!(f, "{}: symlink target {reason}", path.display())
            }
            Error::InvalidRedirect { path, reason } => {
                write!(f, "{}: redirect {reason}", path.display())
            }
            Error::TooLarge { what } => write!(f, "the image does not fit EROFS: {what}"),
            Error::Io { op, path: Some(p), source } => {
                write!(f, "{op} {}: {source}", p.display())
            }
            Error::Io { op, path: None, source } => write!(f, "{op}: {source}"),
            Error::DataChanged { path, expected, found } => write!(
                f,
                "{}: data file has {found} bytes, but was added with {expected}; it changed after add_file (rebuild the image)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
