//! Import a tree into the store: content objects plus the tree object
//! `store/<hash>-rootfs-<label>/` holding
//!
//! - `manifest` — the canonical manifest ([`super::manifest`]); its tree
//!   hash v2 is `<hash>`;
//! - `root.erofs` — the metadata image ([`super::image`]);
//! - `packages` — `name version arch` of the installed packages
//!   ([`super::packages`]).
//!
//! All three are functions of the manifest (and, for `packages`, of
//! objects it names), so the same tree gives byte-identical files and
//! [`verify_tree`] regenerates them.
//!
//! # Steps and failpoints
//!
//! Planning ([`plan`]) reads only: it hashes the manifest, builds the image
//! in memory, lists the objects the store does not have, and compares the
//! bytes that will be written with the free space (`statvfs`) — a tree that
//! does not fit is refused here, before any write, with the numbers. Then:
//!
//! 1. new objects are prepared: moved ones (same file system, [`ImportMode::Move`])
//!    are made plain where they are (owner, 0444, no xattrs); copied ones are
//!    written to `objects/.tmp-*` — `tree::objects-written`;
//! 2. `syncfs`: every new object's content is durable — `tree::objects-synced`;
//! 3. each is renamed to `objects/ab/cdef…` — `tree::objects-placed`;
//! 4. the tree object is written to `store/.tmp-tree-*` — `tree::staged`;
//! 5. the uid map (when given) is saved — `tree::uid-map-saved` (before the
//!    tree becomes visible, so no visible tree has ids the map lacks);
//! 6. read-only, `syncfs` (object renames included) — `tree::synced`;
//! 7. rename into place, fsync the store directory — `tree::renamed`.
//!
//! A crash at any point leaves only complete objects under their names
//! (an object is renamed after its content is on disk) and no partial tree
//! object (temporary names start with `.tmp-`, which the store and `gc`
//! ignore and remove); re-running the import converges on the same object.
//! Import and object gc must run under the state lock (gc deletes objects no
//! visible tree names, which includes the objects of an import in progress).

use super::manifest::{hex, Manifest, Sha256Digest};
use super::objects::{Contents, Objects, Source};
use super::packages;
use super::rules::UidMap;
use super::{image, io_err, TreeError, IMAGE_FILE, MANIFEST_FILE, PACKAGES_FILE};
use crate::failpoint::{self, FailPoint};
use crate::fsutil::{fsync_dir, remove_tree, syncfs};
use crate::store::{check_name, Mismatch, Store, StorePath};
use rayon::prelude::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How contents get into the object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    /// Rename files of the (throw-away) staging tree into `objects/` when it
    /// is on the store's file system; copy otherwise. The staging tree is
    /// consumed: delete it afterwards.
    Move,
    /// Copy (a tree that is not ours, `source = "dir"`); the tree is only read.
    Copy,
}

/// A tree ready to import: the manifest after the build rules and where
/// its contents are.
#[derive(Debug, Clone)]
pub struct Staged {
    pub manifest: Manifest,
    pub contents: Contents,
    /// `st_dev` of the tree the `Source::Path`s are in.
    pub dev: u64,
    pub mode: ImportMode,
}

/// What an import wrote.
#[derive(Debug, Clone)]
pub struct Imported {
    pub object: StorePath,
    /// The tree object was already in the store: nothing was written.
    pub existed: bool,
    /// Objects the tree references, and how many were new.
    pub objects: u64,
    pub new_objects: u64,
    /// Content bytes of the new objects.
    pub new_object_bytes: u64,
    /// Of those, bytes copied (the rest was moved).
    pub copied_bytes: u64,
    pub image_bytes: u64,
    pub manifest_bytes: u64,
    /// Wall time per step.
    pub timings: Vec<(&'static str, Duration)>,
}

/// The object name of a tree with `label`: `rootfs-<label>`.
pub fn tree_name(label: &str) -> Result<String, TreeError> {
    let name = format!("rootfs-{label}");
    check_name(&name).map_err(TreeError::Store)?;
    Ok(name)
}

/// Everything an import will write, computed without writing.
#[derive(Debug)]
pub struct Plan {
    pub object: StorePath,
    pub exists: bool,
    pub manifest_text: Vec<u8>,
    pub image: Vec<u8>,
    pub packages_text: Vec<u8>,
    /// Objects the tree references.
    pub objects: u64,
    /// (digest, size, source, moved) of each new object.
    pub new: Vec<(Sha256Digest, u64, Source, bool)>,
    /// Bytes the writes need on the store's file system, and what is free.
    pub need_bytes: u64,
    pub free_bytes: u64,
}

/// Compute the import of `staged` as object `name` (see the module docs).
pub fn plan(store: &Store, staged: &Staged, name: &str) -> Result<Plan, TreeError> {
    check_name(name).map_err(TreeError::Store)?;
    let m = &staged.manifest;
    let object = StorePath {
        hash: m.tree_hash(name),
        name: name.to_string(),
    };
    let exists = store.path(&object).exists();
    let manifest_text = m.to_text();
    let image = image::build_image(m).map_err(|cause| TreeError::Erofs {
        object: object.base_name(),
        cause,
    })?;
    let packages_text = packages::to_text(
        &packages::packages_of(m, |sha| staged.contents.read(sha)).map_err(|e| TreeError::Io {
            op: "read the dpkg status of",
            path: PathBuf::from(object.base_name()),
            cause: e,
        })?,
    );
    let objects = Objects::of(store);
    let store_dev = fs::metadata(&store.dir)
        .map_err(io_err("stat", &store.dir))?
        .dev();
    let movable = staged.mode == ImportMode::Move && staged.dev == store_dev;
    let wanted = m.objects();
    let mut new = Vec::new();
    for (sha, size) in &wanted {
        if objects.contains(sha) {
            continue;
        }
        let src = staged.contents.map.get(sha).cloned().ok_or_else(|| {
            TreeError::Internal(format!(
                "the manifest names content {} but the import has no source for it",
                hex(sha)
            ))
        })?;
        let moved = movable && matches!(src, Source::Path(_));
        new.push((*sha, *size, src, moved));
    }
    let (frsize, avail) =
        super::sys::free_space(&store.dir).map_err(io_err("get free space of", &store.dir))?;
    let blocks = |n: u64| n.div_ceil(frsize.max(1)) * frsize.max(1);
    let mut need = 0u64;
    if !exists {
        let mut fans = std::collections::BTreeSet::new();
        for (sha, size, _, moved) in &new {
            if !*moved {
                need += blocks(*size);
            }
            if !objects.dir.join(&hex(sha)[..2]).exists() {
                fans.insert(sha[0]);
            }
        }
        need += blocks(image.len() as u64)
            + blocks(manifest_text.len() as u64)
            + blocks(packages_text.len() as u64)
            + (fans.len() as u64 + 3) * blocks(1);
    }
    Ok(Plan {
        object,
        exists,
        manifest_text,
        image,
        packages_text,
        objects: wanted.len() as u64,
        new,
        need_bytes: need,
        free_bytes: avail * frsize,
    })
}

static TMP: AtomicU64 = AtomicU64::new(0);

fn tmp_name(prefix: &str) -> String {
    format!(
        ".tmp-{prefix}-{}-{}",
        std::process::id(),
        TMP.fetch_add(1, Ordering::Relaxed)
    )
}

fn fp(name: FailPoint, path: &Path) -> Result<(), TreeError> {
    failpoint::hit(name).map_err(io_err("continue after", path))
}

/// Import `staged` as object `name`; `uid_map` = (path, map) is saved
/// before the tree becomes visible.
pub fn import(
    store: &Store,
    staged: &Staged,
    name: &str,
    uid_map: Option<(&Path, &UidMap)>,
) -> Result<Imported, TreeError> {
    let t = Instant::now();
    let plan = plan(store, staged, name)?;
    let mut timings = vec![("plan (hash manifest, image, space check)", t.elapsed())];
    let mut out = Imported {
        object: plan.object.clone(),
        existed: plan.exists,
        objects: plan.objects,
        new_objects: 0,
        new_object_bytes: 0,
        copied_bytes: 0,
        image_bytes: plan.image.len() as u64,
        manifest_bytes: plan.manifest_text.len() as u64,
        timings: Vec::new(),
    };
    if plan.exists {
        if let Some((path, map)) = uid_map {
            map.save(path)?;
        }
        out.timings = timings;
        return Ok(out);
    }
    if plan.need_bytes > plan.free_bytes {
        let copied: u64 = plan.new.iter().filter(|n| !n.3).map(|n| n.1).sum();
        return Err(TreeError::NoSpace {
            dir: store.dir.clone(),
            need: plan.need_bytes,
            free: plan.free_bytes,
            new_objects: plan.new.len() as u64,
            copied_bytes: copied,
            metadata_bytes: (plan.image.len() + plan.manifest_text.len() + plan.packages_text.len())
                as u64,
        });
    }
    let objects = Objects::of(store);
    objects.create()?;
    let owner = objects.owner()?;

    // 1–3: the new objects, through `objects/.tmp-*` for copies; on any
    // error the temporary directory goes (placed objects stay: complete).
    let tmp = objects.dir.join(tmp_name("objects"));
    let any_copy = plan.new.iter().any(|n| !n.3);
    let placed = place_objects(store, &objects, &plan, &tmp, any_copy, owner, &mut timings);
    if any_copy {
        if let Err(e) = remove_tree(&tmp) {
            if placed.is_ok() {
                return Err(e.into());
            }
        }
    }
    placed?;
    for (_, size, _, moved) in &plan.new {
        out.new_objects += 1;
        out.new_object_bytes += size;
        if !moved {
            out.copied_bytes += size;
        }
    }

    // 4. The tree object.
    let t = Instant::now();
    let ttmp = store.dir.join(tmp_name("tree"));
    let result = write_tree_object(store, &plan, &ttmp, uid_map);
    if result.is_err() {
        let _ = remove_tree(&ttmp);
    }
    result?;
    timings.push(("write, sync and rename the tree object", t.elapsed()));
    out.timings = timings;
    Ok(out)
}

/// Steps 1–3 of the import (see the module docs).
fn place_objects(
    store: &Store,
    objects: &Objects,
    plan: &Plan,
    tmp: &Path,
    any_copy: bool,
    owner: (u32, u32),
    timings: &mut Vec<(&'static str, Duration)>,
) -> Result<(), TreeError> {
    // 1. Prepare.
    let t = Instant::now();
    if any_copy {
        fs::create_dir(tmp).map_err(io_err("create", tmp))?;
    }
    let prepared: Vec<(Sha256Digest, PathBuf)> = plan
        .new
        .par_iter()
        .map(|(sha, _, src, moved)| {
            if *moved {
                let Source::Path(p) = src else {
                    unreachable!("only paths move")
                };
                Objects::make_plain(p, owner)?;
                Ok((*sha, p.clone()))
            } else {
                Ok((*sha, Objects::write_staged(tmp, sha, src, owner)?))
            }
        })
        .collect::<Result<_, TreeError>>()?;
    timings.push(("prepare objects (copy or chown/chmod)", t.elapsed()));
    fp(FailPoint::TreeObjectsWritten, &objects.dir)?;

    // 2. Durable content.
    let t = Instant::now();
    syncfs(&store.dir)?;
    timings.push(("syncfs", t.elapsed()));
    fp(FailPoint::TreeObjectsSynced, &objects.dir)?;

    // 3. Names.
    let t = Instant::now();
    prepared
        .par_iter()
        .try_for_each(|(sha, from)| objects.place(from, sha))?;
    timings.push(("rename objects into place", t.elapsed()));
    fp(FailPoint::TreeObjectsPlaced, &objects.dir)
}

fn write_tree_object(
    store: &Store,
    plan: &Plan,
    ttmp: &Path,
    uid_map: Option<(&Path, &UidMap)>,
) -> Result<(), TreeError> {
    fs::create_dir(ttmp).map_err(io_err("create", ttmp))?;
    for (file, data) in [
        (MANIFEST_FILE, &plan.manifest_text),
        (IMAGE_FILE, &plan.image),
        (PACKAGES_FILE, &plan.packages_text),
    ] {
        let p = ttmp.join(file);
        fs::write(&p, data).map_err(io_err("write", &p))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o444))
            .map_err(io_err("make read-only", &p))?;
    }
    fp(FailPoint::TreeStaged, ttmp)?;
    if let Some((path, map)) = uid_map {
        map.save(path)?;
        fp(FailPoint::TreeUidMapSaved, path)?;
    }
    fs::set_permissions(ttmp, fs::Permissions::from_mode(0o555))
        .map_err(io_err("make read-only", ttmp))?;
    syncfs(&store.dir)?;
    fp(FailPoint::TreeSynced, ttmp)?;
    let dest = store.path(&plan.object);
    if dest.exists() {
        // Imported meanwhile by someone else: theirs is the same tree.
        remove_tree(ttmp)?;
        return Ok(());
    }
    fs::rename(ttmp, &dest).map_err(io_err("rename into place", &dest))?;
    fsync_dir(&store.dir)?;
    fp(FailPoint::TreeRenamed, &dest)?;
    Ok(())
}

/// Check a tree object: its manifest hashes to its name, `root.erofs` and
/// `packages` regenerate byte for byte, its files are read-only, and every
/// object it names exists with the manifest's size as a plain 0444 file of
/// the store's owner. The objects' contents are not read here:
/// [`Objects::verify_all`] hashes each once, however many trees share it.
/// Returns the problems (empty: all good).
pub fn verify_tree(store: &Store, object: &StorePath) -> Result<Vec<Mismatch>, TreeError> {
    let dir = store.path(object);
    let mut out = Vec::new();
    let mut problem = |p: String| {
        out.push(Mismatch {
            object: object.base_name(),
            problem: p,
        })
    };
    let m = match super::read_manifest(store, object) {
        Ok(m) => m,
        Err(e) => {
            problem(e.to_string());
            return Ok(out);
        }
    };
    let h = m.tree_hash(&object.name);
    if h != object.hash {
        problem(format!("manifest hashes to {h}"));
    }
    let objects = Objects::of(store);
    match image::build_image(&m) {
        Ok(img) => match fs::read(dir.join(IMAGE_FILE)) {
            Ok(on_disk) if on_disk == img => {}
            Ok(_) => problem(format!(
                "{IMAGE_FILE} differs from the image of its manifest"
            )),
            Err(e) => problem(format!("{IMAGE_FILE}: {e}")),
        },
        Err(e) => problem(format!("the manifest does not make an image: {e}")),
    }
    match packages::packages_of(&m, |sha| fs::read(objects.path(sha))) {
        Ok(p) => match fs::read(dir.join(PACKAGES_FILE)) {
            Ok(on_disk) if on_disk == packages::to_text(&p) => {}
            Ok(_) => problem(format!(
                "{PACKAGES_FILE} differs from the tree's dpkg status"
            )),
            Err(e) => problem(format!("{PACKAGES_FILE}: {e}")),
        },
        Err(e) => problem(format!("cannot read the dpkg status: {e}")),
    }
    for f in [MANIFEST_FILE, IMAGE_FILE, PACKAGES_FILE] {
        if let Ok(meta) = fs::metadata(dir.join(f)) {
            if meta.permissions().mode() & 0o222 != 0 {
                problem(format!("{f} is writable"));
            }
        }
    }
    if let Ok(rd) = fs::read_dir(&dir) {
        for e in rd.flatten() {
            let n = e.file_name();
            if ![MANIFEST_FILE, IMAGE_FILE, PACKAGES_FILE]
                .iter()
                .any(|f| n == *f)
            {
                problem(format!("unexpected file {}", n.to_string_lossy()));
            }
        }
    }
    let owner = objects.owner().unwrap_or((0, 0));
    let wanted: Vec<(Sha256Digest, u64)> = m.objects().into_iter().collect();
    let mut bad: Vec<String> = wanted
        .par_iter()
        .filter_map(|(sha, size)| {
            objects
                .check(sha, Some(*size), owner, false)
                .map(|p| format!("object {}: {p}", super::objects::rel(sha)))
        })
        .collect();
    bad.sort();
    for b in bad {
        problem(b);
    }
    Ok(out)
}
