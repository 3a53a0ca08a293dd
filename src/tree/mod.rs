//! Whole-system trees in the store (issue 14): an operating-system tree as
//! an immutable store object, its file contents stored once and shared by
//! every tree, a composefs-style metadata image genboot-init mounts (issue
//! 15), and the diff, mount, verify and gc that work on them.
//!
//! # Layout
//!
//! ```text
//! <state>/store/objects/ab/cdef…           content objects: one plain 0444 file per distinct
//!                                           content (SHA-256), shared by all trees (objects.rs)
//! <state>/store/<hash>-rootfs-<label>/     a tree object (import.rs):
//!     manifest                              every path: kind, mode, uid, gid, size+sha256 or
//!                                           inline data, target, rdev, xattrs, hard links, mtime;
//!                                           <hash> = tree hash v2 of it (manifest.rs)
//!     root.erofs                            metadata image: files > 64 bytes redirect to objects
//!     packages                              "name version arch" from the tree's dpkg status
//! <state>/store/.tmp-*                      interrupted imports and builds (never a tree)
//! <state>/uid-map                           pinned user and group ids (rules.rs)
//! <state>/logs/build-<label>.log            mmdebstrap's output of the last build of a label
//! ```
//!
//! # The pieces
//!
//! | file | concern | writes? |
//! |---|---|---|
//! | `manifest.rs` | manifest text format, tree hash v2 | pure |
//! | `scan.rs` | a real root → manifest (lstat, xattrs, hard links, parallel hashing) | reads |
//! | `rules.rs` | build rules on the manifest; the uid map | `uid-map` only |
//! | `mmdebstrap.rs` | `source = "mmdebstrap"`: run it, explain its failures | a staging dir |
//! | `build.rs` | source → scan → rules → import | via import |
//! | `extract.rs` | a tree's kernels; parts of a stored tree as files (hard links) | a temporary directory |
//! | `objects.rs`, `import.rs` | content objects, the tree object, `verify_tree` | the store (failpoints `tree::*`) |
//! | `image.rs`, `packages.rs` | `root.erofs`, `packages` from a manifest | pure |
//! | `diff.rs` | two trees → packages, users, files, `/etc` | reads the store |
//! | `etc.rs` | a generation's `/etc` layer: local changes, the 3-way merge into the next | `<root>/var/lib/genboot/etc` (failpoint `etc::layer-written`) |
//! | `mount.rs` | `mount_tree`/`umount_tree` (EROFS + overlay, `MountSys` seam) | mounts |
//! | `gc.rs` | objects reachable from trees; delete the rest | the store |
//!
//! # What is image, what is per machine, what is state
//!
//! docs/trees.md has the table of which paths are image, per machine and
//! state; the build rules ([`rules`]) make the image accordingly, and
//! genboot-init (issue 15) will mount it so.
//!
//! # Where it is used
//!
//! - `system.toml`'s `[tree]` (`TreeSection` in src/config.rs) becomes a
//!   [`TreeSpec`] in src/generation/tree.rs, which builds it through the
//!   input cache, checks the tree's kernel before the import
//!   ([`extract::kernels_in_dir`], [`extract::pick`]) and, without `[kernel]
//!   image`, reads the kernel from the stored tree ([`extract::extract`]).
//!   The generation object links its tree (`tree -> ../<hash>-rootfs-…`) and
//!   `boot.json` names it (`org.genboot.v1.tree`).
//! - `genboot diff`, `mount`, `umount`: src/app/tree.rs ([`diff_trees`],
//!   [`mount_tree`], [`umount_tree`]).
//! - `genboot gc`: src/gc.rs keeps the trees generations reach and the
//!   ones mounted ([`mount::mounted_trees`]), then [`collect_objects`];
//!   staging directories go through [`build::remove_staging`].
//! - `genboot verify`: [`verify_tree`] for tree objects, then
//!   [`Objects::verify_all`] hashes every content object once.
//!
//! genboot-init (issue 15) mounts exactly what [`mount::mount_tree`] mounts,
//! in the same order, behind its own `Sys` seam, then binds
//! [`rules::relocated_path`]`(p)` onto each [`rules::RELOCATED`] path.
//!
//! **Space**: [`import()`] refuses before writing when the new objects (copied
//! bytes), image, manifest and package list do not fit ([`TreeError::NoSpace`]
//! with the numbers); `import::plan` gives the same numbers for a dry run.

pub mod build;
pub mod diff;
pub mod etc;
pub mod extract;
pub mod gc;
pub mod image;
pub mod import;
pub mod manifest;
pub mod mmdebstrap;
pub mod mount;
pub mod objects;
pub mod packages;
pub mod rules;
pub mod scan;
mod sys;

pub use build::{build_tree, build_tree_with, import_root, Built, TreeSource, TreeSpec};
pub use diff::{diff_trees, TreeDiff};
pub use gc::{collect_objects, reachable_objects, ObjectGc};
pub use import::{import, tree_name, verify_tree, ImportMode, Imported, Staged};
pub use manifest::{Manifest, ManifestError};
pub use mount::{mount_tree, umount_tree, Mounted};
pub use objects::Objects;
pub use rules::{Rules, RulesReport, UidMap};
pub use scan::scan_tree;

use crate::store::{Store, StoreError, StorePath};
use std::io;
use std::path::{Path, PathBuf};

/// Files of a tree object.
pub const MANIFEST_FILE: &str = "manifest";
pub const IMAGE_FILE: &str = "root.erofs";
pub const PACKAGES_FILE: &str = "packages";

/// Everything that can go wrong with trees. Each variant names the file or
/// path, what failed and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("cannot {op} {path}: {cause}")]
    Io {
        op: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    #[error("{path}: invalid tree manifest: {cause}")]
    Manifest { path: PathBuf, cause: ManifestError },
    #[error("cannot import {path}: it {why}")]
    Hostile {
        path: PathBuf,
        why: String,
        hint: &'static str,
    },
    #[error(
        "not enough space in {dir} for this tree: it needs {} ({new_objects} new objects, {} of them copied; {} of manifest, image and package list), {} are free; nothing was written",
        crate::units::human(*need), crate::units::human(*copied_bytes), crate::units::human(*metadata_bytes), crate::units::human(*free)
    )]
    NoSpace {
        dir: PathBuf,
        need: u64,
        free: u64,
        new_objects: u64,
        copied_bytes: u64,
        metadata_bytes: u64,
    },
    #[error(
        "not enough space in {dir} to build this tree: mmdebstrap writes about {} (the size of the last build, {last}), {} are free; nothing was written",
        crate::units::human(*need), crate::units::human(*free)
    )]
    NoSpaceToBuild {
        dir: PathBuf,
        need: u64,
        free: u64,
        last: String,
    },
    #[error("{object}: cannot write its metadata image: {cause}")]
    Erofs {
        object: String,
        cause: genboot_erofs::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{object} is not a tree object: {why}")]
    NotATree { object: String, why: String },
    #[error("{path}:{line}: {why}")]
    UidMap {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("{what}")]
    Source { what: String, hint: String },
    /// The tree has no kernel, several, or not the one `[kernel] release` names.
    #[error("{what}")]
    Kernel { what: String, hint: String },
    #[error("cannot {op} {target}: {cause}")]
    Mount {
        op: &'static str,
        target: PathBuf,
        cause: io::Error,
        hint: String,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl crate::hint::Hint for TreeError {
    fn hint(&self) -> Option<String> {
        match self {
            TreeError::Hostile { hint, .. } => Some(hint.to_string()),
            TreeError::NoSpace { .. } | TreeError::NoSpaceToBuild { .. } => Some(
                "free space (`genboot gc` deletes old generations and their unique objects) or put the state directory on a larger file system".into(),
            ),
            TreeError::UidMap { .. } => Some(
                "each line is \"user NAME ID\" or \"group NAME ID\"; fix or remove the line (ids already used by built trees must stay)".into(),
            ),
            TreeError::Source { hint, .. }
            | TreeError::Kernel { hint, .. }
            | TreeError::Mount { hint, .. } => Some(hint.clone()),
            TreeError::Store(e) => e.hint(),
            TreeError::Io { .. }
            | TreeError::Manifest { .. }
            | TreeError::Erofs { .. }
            | TreeError::NotATree { .. }
            | TreeError::Internal(_) => None,
        }
    }
}

impl From<crate::fsutil::IoError> for TreeError {
    fn from(e: crate::fsutil::IoError) -> TreeError {
        TreeError::Io {
            op: e.op,
            path: e.path,
            cause: e.source,
        }
    }
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> TreeError + 'a {
    move |cause| TreeError::Io {
        op,
        path: path.to_path_buf(),
        cause,
    }
}

/// Read and parse the manifest of a tree object.
pub fn read_manifest(store: &Store, object: &StorePath) -> Result<Manifest, TreeError> {
    let path = store.path(object).join(MANIFEST_FILE);
    let text = std::fs::read(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            TreeError::NotATree {
                object: object.base_name(),
                why: format!("it has no {MANIFEST_FILE}"),
            }
        } else {
            io_err("read", &path)(e)
        }
    })?;
    Manifest::parse(&text).map_err(|cause| TreeError::Manifest { path, cause })
}

/// Whether a store object is a tree object (has a v2 manifest).
pub fn is_tree(store: &Store, object: &StorePath) -> bool {
    use std::io::Read;
    let mut head = [0u8; manifest::HEADER.len()];
    std::fs::File::open(store.path(object).join(MANIFEST_FILE))
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|_| head == manifest::HEADER.as_bytes())
}

/// Every tree object in the store.
pub fn trees(store: &Store) -> Result<Vec<StorePath>, TreeError> {
    Ok(store
        .objects()?
        .into_iter()
        .filter(|sp| is_tree(store, sp))
        .collect())
}
