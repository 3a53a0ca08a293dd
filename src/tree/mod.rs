//! Whole-system trees in the store (issue 14): an operating-system tree as
//! an immutable store object, its file contents stored once and shared by
//! every tree, a composefs-style metadata image genboot-init mounts (issue
//! 15), and the diff, mount, verify and gc that work on them.
//!
//! WIRING-PLAN-PLACEHOLDER

pub mod build;
pub mod diff;
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
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path}: invalid tree manifest: {source}")]
    Manifest {
        path: PathBuf,
        source: ManifestError,
    },
    #[error("cannot import {path}: it {why}\nHint: {hint}")]
    Hostile {
        path: PathBuf,
        why: String,
        hint: &'static str,
    },
    #[error(
        "not enough space in {dir} for this tree: it needs {} ({new_objects} new objects, {} of them copied; {} of manifest, image and package list), {} are free\nHint: free space (`genboot gc` deletes old generations and their unique objects) or put the state directory on a larger file system.\nNothing was written.",
        human(*need), human(*copied_bytes), human(*metadata_bytes), human(*free)
    )]
    NoSpace {
        dir: PathBuf,
        need: u64,
        free: u64,
        new_objects: u64,
        copied_bytes: u64,
        metadata_bytes: u64,
    },
    #[error("{object}: cannot write its metadata image: {source}")]
    Erofs {
        object: String,
        source: genboot_erofs::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{object} is not a tree object: {why}")]
    NotATree { object: String, why: String },
    #[error("{path}:{line}: {why}\nHint: each line is \"user NAME ID\" or \"group NAME ID\"; fix or remove the line (ids already used by built trees must stay)")]
    UidMap {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("{what}\nHint: {hint}")]
    Source { what: String, hint: String },
    #[error("cannot {op} {target}: {source}\nHint: {hint}")]
    Mount {
        op: &'static str,
        target: PathBuf,
        source: io::Error,
        hint: String,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> TreeError + 'a {
    move |source| TreeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Bytes for people: `236.6 MB`.
pub fn human(n: u64) -> String {
    if n < 10_000 {
        format!("{n} bytes")
    } else if n < 10_000_000 {
        format!("{:.1} kB", n as f64 / 1e3)
    } else if n < 10_000_000_000 {
        format!("{:.1} MB", n as f64 / 1e6)
    } else {
        format!("{:.2} GB", n as f64 / 1e9)
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
    Manifest::parse(&text).map_err(|source| TreeError::Manifest { path, source })
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
