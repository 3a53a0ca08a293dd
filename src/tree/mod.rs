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
//! | `objects.rs`, `import.rs` | content objects, the tree object, `verify_tree` | the store (failpoints `tree::*`) |
//! | `image.rs`, `packages.rs` | `root.erofs`, `packages` from a manifest | pure |
//! | `diff.rs` | two trees → packages, users, files, `/etc` | reads the store |
//! | `mount.rs` | `mount_tree`/`umount_tree` (EROFS + overlay, `MountSys` seam) | mounts |
//! | `gc.rs` | objects reachable from trees; delete the rest | the store |
//!
//! # What is image, what is per machine, what is state
//!
//! What a generation with a tree shows at boot (issue 15 mounts it; this
//! module makes the image accordingly):
//!
//! | path | lifecycle | how |
//! |---|---|---|
//! | `/usr`, `/bin`, `/sbin`, `/lib*` (usrmerge links), `/opt`, `/boot` | image | read-only, from the tree; rolled back with the generation |
//! | `/usr/lib/genboot/var/lib/dpkg`, `…/var/lib/apt/extended_states`, `…/var/cache/debconf/templates.dat`, `…/var/lib/ucf`, `…/var/lib/systemd/deb-systemd-{helper-enabled,helper-masked,user-helper-enabled}` | image (package state that describes `/usr`) | moved there by the build rules ([`rules::RELOCATED`]); bound read-only onto the `/var` paths at boot, so `dpkg -l` always matches `/usr` and package operations on a booted image fail |
//! | `/etc` | image defaults + per-machine changes | the image's `/etc` is the lower layer of an overlay; local edits live in a per-generation upper, merged at `switch` (issue 15) |
//! | `/etc/passwd`, `/etc/group` | image, ids pinned | ids from `<state>/uid-map`; merged by name with the machine's accounts at `switch` (issue 15) |
//! | `/etc/machine-id`, `/etc/ssh/ssh_host_*` | per machine (identity) | empty / absent in every image; bound from the machine's identity directory, the same in every generation (issue 15); `genboot-ssh-keygen.service` makes missing host keys on first boot |
//! | `/etc/hostname`, `/etc/resolv.conf` | per machine | fixed in the image (`localhost`, empty); the machine's values live in the `/etc` upper |
//! | `/var` (except the package state above), `/home`, `/root`, `/srv` | state | persistent, never rolled back; the image's `/var` only seeds what is missing |
//! | `/tmp`, `/run` | volatile | tmpfs |
//! | `/var/lib/genboot` | genboot's own state | store, objects, profiles, uid map, logs |
//!
//! # Wiring (the follow-up, once the issue-12 restructure lands)
//!
//! **`system.toml`.** `[tree]` maps onto [`TreeSpec`]: `source`
//! (`"mmdebstrap"` → [`TreeSource::Mmdebstrap`], `"dir"` →
//! [`TreeSource::Dir`] with `path`), `suite`, `variant`, `mirror` (a string
//! or a list; absent = this machine's apt sources,
//! [`mmdebstrap::machine_sources`]), `packages`, `customize` (paths relative
//! to the file), `source_date_epoch` (→ [`TreeSpec::epoch`]; required for
//! mmdebstrap), `hostname` (→ [`Rules::hostname`]); the label is `[system]
//! label`'s slug. The config layer sets [`mmdebstrap::MmdebstrapSpec::config`]
//! so mmdebstrap's errors name the file. `[kernel]` without `image` takes the
//! kernel from the tree (`/boot/vmlinuz-*`, `/usr/lib/modules/*`, read
//! through the manifest and the objects: [`packages::read_stored`]).
//!
//! **`genboot build` / `switch`** (the generation builder, under the state
//! lock): [`build_tree`]`(&store, &state.dir, &spec)` before the boot
//! material; the input cache keys on the resolved spec (packages, mirror
//! lines and the mirror's `Release` hash, hook contents, epoch, genboot's
//! version) so an unchanged configuration re-runs nothing. The generation
//! object gets a symlink `tree -> ../<hash>-rootfs-<label>` (the v1 store
//! hash covers link targets, so the generation's hash covers the tree's; the
//! existing `Store::references`/`closure` then keep the tree object alive),
//! and `boot.json` a namespace:
//!
//! ```json
//! "org.genboot.v2.tree": {
//!   "object": "/var/lib/genboot/store/<hash>-rootfs-<label>",
//!   "image": "/var/lib/genboot/store/<hash>-rootfs-<label>/root.erofs",
//!   "image_sha256": "<sha256 of root.erofs, for genboot.verify at boot>",
//!   "objects": "/var/lib/genboot/store/objects",
//!   "hash": "tree-v2"
//! }
//! ```
//!
//! genboot-init (issue 15) mounts exactly what [`mount::mount_tree`] mounts,
//! in the same order, behind its own `Sys` seam, then binds
//! [`rules::relocated_path`]`(p)` onto each [`rules::RELOCATED`] path.
//!
//! **`genboot verify`**: for every store object, [`is_tree`] →
//! [`verify_tree`], else the v1 `Store::verify_object` (which must skip tree
//! objects: their hash is v2); then `Objects::of(&store).verify_all()` for
//! the objects no tree names.
//!
//! **`genboot gc`**: as today (generations, then unreachable store objects
//! through the `tree` links), then [`collect_objects`]`(&store,
//! &trees(&store)?)`. The store's `.tmp-build-*` leftovers may hold mounts
//! of a killed mmdebstrap: delete them with [`build::remove_staging`], never
//! a plain recursive delete.
//!
//! **`genboot diff A B [--json]`**: the generations' `tree` links →
//! [`diff_trees`], printed with [`TreeDiff::to_text`] / [`TreeDiff::to_json`],
//! next to the boot.json fields (kernel, parameters, initrd modules) the app
//! layer compares itself.
//!
//! **`genboot mount GEN DIR` / `genboot umount DIR`**: [`mount_tree`] of the
//! generation's tree, [`umount_tree`].
//!
//! **Space**: [`import()`] refuses before writing when the new objects (copied
//! bytes), image, manifest and package list do not fit ([`TreeError::NoSpace`]
//! with the numbers); `import::plan` gives the same numbers for a dry run.

pub mod build;
pub mod diff;
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
