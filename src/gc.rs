//! Garbage collection: delete profile generations by policy, then every
//! store object that no remaining generation reaches, then every content
//! object (`store/objects/`) no remaining tree names. The booted
//! generation's object (`/run/genboot/booted`) is always a root, as NixOS's
//! `/run/booted-system` is: the running system's kernel modules are bind
//! mounted from it; so is a tree `genboot mount` shows.

use crate::profile::{closure, Lock, Profile, ProfileError};
use crate::store::{LockKind, Store, StoreError, StoreLock, StorePath};
use crate::tree::{self, TreeError};
use std::path::Path;
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tree(#[from] TreeError),
}

impl crate::hint::Hint for GcError {
    fn hint(&self) -> Option<String> {
        match self {
            GcError::Profile(e) => e.hint(),
            GcError::Store(e) => e.hint(),
            GcError::Tree(e) => e.hint(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Policy {
    /// Keep the newest N generations.
    pub keep: Option<u32>,
    /// Delete generations older than this.
    pub older_than: Option<Duration>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub objects: Vec<StorePath>,
    pub bytes: u64,
    /// Content objects deleted, and their bytes.
    pub contents: u64,
    pub content_bytes: u64,
}

/// Which generations the policy deletes: never the current one, nor any in
/// `protect` (the booted generation).
pub fn select(
    profile: &Profile,
    policy: Policy,
    protect: &[u32],
    now: SystemTime,
) -> Result<Vec<u32>, GcError> {
    let gens = profile.generations()?;
    let mut out = Vec::new();
    let n = gens.len();
    for (i, g) in gens.iter().enumerate() {
        if g.current || protect.contains(&g.number) {
            continue;
        }
        let newest_rank = n - i; // 1 = newest
        let beyond_keep = policy.keep.is_some_and(|k| newest_rank > k as usize);
        let too_old = policy
            .older_than
            .is_some_and(|age| now.duration_since(g.date).unwrap_or_default() > age);
        if beyond_keep || too_old {
            out.push(g.number);
        }
    }
    Ok(out)
}

/// Delete every object that neither a profile generation nor `booted` (the
/// running system's generation object) reaches, and the leftovers of
/// interrupted builds. Needs the profile lock and the store's exclusive lock
/// (no build is running, so every staging directory is a leftover).
pub fn collect(
    store: &Store,
    profile: &Profile,
    booted: Option<&StorePath>,
    _lock: &Lock,
    store_lock: &StoreLock,
) -> Result<Report, GcError> {
    assert_eq!(
        store_lock.kind,
        LockKind::Exclusive,
        "gc needs the store to itself"
    );
    let mut roots = profile.roots()?;
    roots.extend(booted.cloned());
    roots.extend(tree::mount::mounted_trees(
        Path::new(tree::mount::RUN_DIR),
        store,
    ));
    let live = closure(store, &roots)?;
    let mut report = Report::default();
    for sp in store.objects()? {
        if live.contains(&sp) {
            continue;
        }
        report.bytes += du(&store.path(&sp));
        store.delete(&sp)?;
        report.objects.push(sp);
    }
    for tmp in store.leftovers()? {
        report.bytes += du(&tmp);
        // A killed tree build may have left mounts in its directory.
        tree::build::remove_staging(&tmp)?;
    }
    // A live tree whose manifest cannot be read stops this before anything
    // goes: its objects cannot be known.
    let objects = tree::collect_objects(store, &tree::trees(store)?)?;
    report.contents = objects.deleted.len() as u64;
    report.content_bytes = objects.bytes;
    Ok(report)
}

fn du(path: &std::path::Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
            .unwrap_or(0)
    } else {
        meta.len()
    }
}
