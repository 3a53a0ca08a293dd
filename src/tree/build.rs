//! A whole tree build: source → scan → build rules → import.
//!
//! - `source = "mmdebstrap"`: mmdebstrap builds into
//!   `store/.tmp-build-*/root` (on the store's file system), which is
//!   imported by moving its files into `objects/` and then deleted.
//! - `source = "dir"`: an existing tree (debootstrap, mkosi, a container
//!   export) is scanned where it is and only read: new contents are copied.
//!
//! Both get the same build rules ([`super::rules`]) and the uid map of the
//! state directory.

use super::import::{import, tree_name, ImportMode, Imported, Staged};
use super::mmdebstrap::{self, MmdebstrapSpec};
use super::rules::{self, Rules, RulesReport, UidMap};
use super::scan::scan_tree;
use super::{io_err, TreeError};
use crate::failpoint::{self, FailPoint};
use crate::store::Store;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where a tree comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeSource {
    Mmdebstrap(MmdebstrapSpec),
    /// An existing tree, imported as it is (read-only).
    Dir(PathBuf),
}

/// What `[tree]` in `system.toml` resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeSpec {
    /// The object is `<hash>-rootfs-<label>`.
    pub label: String,
    pub source: TreeSource,
    /// `SOURCE_DATE_EPOCH`: mtimes are clamped to it; mmdebstrap gets it.
    /// `None` for a `dir` tree keeps its mtimes (an mmdebstrap build
    /// requires one).
    pub epoch: Option<i64>,
    pub rules: Rules,
}

/// The result of [`build_tree`].
#[derive(Debug, Clone)]
pub struct Built {
    pub imported: Imported,
    pub rules: RulesReport,
    /// mmdebstrap's output (kept in `<state>/logs/`).
    pub log: Option<PathBuf>,
    /// Wall time per step (source, scan, rules, then the import's steps).
    pub timings: Vec<(&'static str, Duration)>,
}

static STAGING: AtomicU64 = AtomicU64::new(0);

/// Build the tree `spec` describes into `store`; `state_dir` holds the uid
/// map (`uid-map`) and the build logs (`logs/`).
pub fn build_tree(store: &Store, state_dir: &Path, spec: &TreeSpec) -> Result<Built, TreeError> {
    build_tree_with(store, state_dir, spec, &mut |_| Ok(()))
}

/// [`build_tree`], calling `before_import` with the built root before it is
/// scanned (tests keep a pristine copy; a `--keep-tree` option could).
pub fn build_tree_with(
    store: &Store,
    state_dir: &Path,
    spec: &TreeSpec,
    before_import: &mut dyn FnMut(&Path) -> Result<(), TreeError>,
) -> Result<Built, TreeError> {
    tree_name(&spec.label)?;
    match &spec.source {
        TreeSource::Dir(path) => {
            before_import(path)?;
            failpoint::hit(FailPoint::TreeSourceReady).map_err(io_err("read", path))?;
            import_root(
                store,
                state_dir,
                path,
                spec,
                ImportMode::Copy,
                Vec::new(),
                None,
            )
        }
        TreeSource::Mmdebstrap(mm) => {
            let epoch = spec.epoch.ok_or_else(|| TreeError::Source {
                what: "[tree] source = \"mmdebstrap\" needs a build epoch (SOURCE_DATE_EPOCH)"
                    .into(),
                hint: "set [tree] source_date_epoch".into(),
            })?;
            mmdebstrap::check(mm)?;
            preflight(store, &tree_name(&spec.label)?)?;
            let staging = store.dir.join(format!(
                ".tmp-build-{}-{}",
                std::process::id(),
                STAGING.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir(&staging).map_err(io_err("create", &staging))?;
            let log = state_dir
                .join("logs")
                .join(format!("build-{}.log", spec.label));
            let result = (|| {
                let root = staging.join("root");
                let t = Instant::now();
                mmdebstrap::run(mm, epoch, &root, &staging.join("hooks"), &log)?;
                let timings = vec![("mmdebstrap", t.elapsed())];
                before_import(&root)?;
                failpoint::hit(FailPoint::TreeSourceReady).map_err(io_err("import", &root))?;
                import_root(
                    store,
                    state_dir,
                    &root,
                    spec,
                    ImportMode::Move,
                    timings,
                    Some(log.clone()),
                )
            })();
            let removed = remove_staging(&staging);
            let built = result?;
            removed?;
            Ok(built)
        }
    }
}

/// Scan `root`, apply `spec.rules` with the state's uid map, import it
/// (moving or copying its contents, see [`ImportMode`]) as
/// `rootfs-<spec.label>`; the map gains the tree's new users and groups.
/// `spec.source` is not looked at.
pub fn import_root(
    store: &Store,
    state_dir: &Path,
    root: &Path,
    spec: &TreeSpec,
    mode: ImportMode,
    mut timings: Vec<(&'static str, Duration)>,
    log: Option<PathBuf>,
) -> Result<Built, TreeError> {
    let name = tree_name(&spec.label)?;
    let map_path = rules::uid_map_path(state_dir);
    // One import at a time reads and extends the uid map (builds share the
    // store lock; two new system users must not get the same id).
    let lock_path = state_dir.join(".uid-map.lock");
    let lock = crate::fsutil::open_lock_file(&lock_path, "uid map lock file")
        .map_err(|e| TreeError::Store(e.into()))?;
    lock.lock().map_err(io_err("lock", &lock_path))?;
    let mut ids = UidMap::load(&map_path)?;
    let t = Instant::now();
    let scanned = scan_tree(root, spec.epoch)?;
    timings.push(("scan and hash", t.elapsed()));
    let t = Instant::now();
    let mut staged = Staged {
        manifest: scanned.manifest,
        contents: scanned.contents,
        dev: scanned.dev,
        mode,
    };
    let before = ids.clone();
    let report = rules::apply(
        &mut staged.manifest,
        &mut staged.contents,
        &spec.rules,
        &mut ids,
    )?;
    timings.push(("build rules", t.elapsed()));
    let map = (ids != before).then_some((map_path.as_path(), &ids));
    let imported = import(store, &staged, &name, map)?;
    timings.extend(imported.timings.iter().cloned());
    Ok(Built {
        imported,
        rules: report,
        log,
        timings,
    })
}

/// Before mmdebstrap writes a whole tree into the store's file system:
/// refuse when the last tree of this name (the best guess of what the
/// build writes) would not fit, with the numbers. Without an earlier tree
/// there is no guess, and the import's own check (before it writes
/// objects) is what stops a full disk.
fn preflight(store: &Store, name: &str) -> Result<(), TreeError> {
    let mut last = None;
    for sp in super::trees(store)? {
        if sp.name != name {
            continue;
        }
        let when = std::fs::metadata(store.path(&sp))
            .and_then(|m| m.modified())
            .ok();
        if last.as_ref().is_none_or(|(w, _)| when > *w) {
            last = Some((when, sp));
        }
    }
    let Some((_, sp)) = last else { return Ok(()) };
    let m = super::read_manifest(store, &sp)?;
    let need: u64 = m
        .entries
        .values()
        .filter_map(|e| match e.kind() {
            Some(super::manifest::Kind::File { size, .. }) => Some(*size),
            _ => None,
        })
        .sum();
    let (frsize, avail) =
        super::sys::free_space(&store.dir).map_err(io_err("get free space of", &store.dir))?;
    let free = frsize * avail;
    if need > free {
        return Err(TreeError::NoSpaceToBuild {
            dir: store.dir.clone(),
            need,
            free,
            last: sp.base_name(),
        });
    }
    Ok(())
}

/// Delete a staging directory (`store/.tmp-build-*`) safely: a build that
/// was killed can leave mounts inside it (mmdebstrap's `/proc`, `/dev`, a
/// bind-mounted mirror), and deleting through a mount would delete what it
/// shows. Those are detached first (deepest first); then the tree goes.
pub fn remove_staging(dir: &Path) -> Result<(), TreeError> {
    let mounts = super::mount::mounts_below(dir)?;
    for m in mounts.iter().rev() {
        super::sys::umount(m, libc::MNT_DETACH).map_err(|cause| TreeError::Mount {
            op: "unmount (before deleting the build directory)",
            target: m.clone(),
            cause,
            hint: format!("unmount it by hand, then delete {}", dir.display()),
        })?;
    }
    if !super::mount::mounts_below(dir)?.is_empty() {
        return Err(TreeError::Internal(format!(
            "{} still has mounts below it; not deleting it",
            dir.display()
        )));
    }
    Ok(crate::fsutil::remove_tree(dir)?)
}
