//! Garbage collection of content objects: an object lives while a live
//! tree object's manifest names it. Deleting a generation (and then its
//! tree object, through the store's gc) and collecting objects frees
//! exactly the objects no other tree uses.
//!
//! A live tree whose manifest cannot be read stops the collection before
//! anything is deleted (its objects cannot be known, so none may go) — the
//! rule lanzaboote's gc follows for malformed generations. Run under the
//! state lock (an import in progress places objects before its tree object
//! is visible).

use super::manifest::Sha256Digest;
use super::objects::Objects;
use super::{read_manifest, TreeError};
use crate::fsutil::remove_tree;
use crate::store::{Store, StorePath};
use std::collections::HashSet;

/// Objects reachable from `trees`.
pub fn reachable_objects(
    store: &Store,
    trees: &[StorePath],
) -> Result<HashSet<Sha256Digest>, TreeError> {
    let mut out = HashSet::new();
    for t in trees {
        let m = read_manifest(store, t)?;
        out.extend(m.objects().into_keys());
    }
    Ok(out)
}

/// What [`collect_objects`] deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectGc {
    pub deleted: Vec<Sha256Digest>,
    /// Content bytes of the deleted objects.
    pub bytes: u64,
    /// `objects/.tmp-*` directories of interrupted imports removed.
    pub leftovers: u64,
    /// Objects kept.
    pub kept: u64,
}

/// Delete every object no tree in `live` names, and the leftovers of
/// interrupted imports.
pub fn collect_objects(store: &Store, live: &[StorePath]) -> Result<ObjectGc, TreeError> {
    let keep = reachable_objects(store, live)?;
    let objects = Objects::of(store);
    let mut report = ObjectGc::default();
    let mut list = objects.list()?;
    list.sort();
    for (sha, size) in list {
        if keep.contains(&sha) {
            report.kept += 1;
            continue;
        }
        objects.delete(&sha)?;
        report.bytes += size;
        report.deleted.push(sha);
    }
    for tmp in objects.leftovers() {
        remove_tree(&tmp)?;
        report.leftovers += 1;
    }
    // Empty fan-out directories go too.
    if let Ok(rd) = std::fs::read_dir(&objects.dir) {
        for e in rd.flatten() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
    Ok(report)
}
