//! `/etc` across generations (issue 15): a generation with a tree boots
//! with `/etc` an overlay of the image's `/etc` (below) and the
//! generation's own layer on the root partition
//! (`/var/lib/genboot/etc/<generation>/upper`, above). The layer holds the
//! admin's changes: changed and new files as whole copies, deletions as
//! whiteouts (character device 0:0), replaced directories as opaque
//! directories (`trusted.overlay.opaque=y`).
//!
//! - [`local_changes`]: what a layer changes against its image (`genboot
//!   etc status|diff`, like `ostree admin config-diff`): a file the layer
//!   holds that is identical to the image's (an overlay copy-up that
//!   changed nothing) is no change.
//! - [`prepare_layer`]: the new generation's layer from the old one's, by
//!   the 3-way rule (docs/trees.md, "/etc across generations"):
//!   - a file the admin changed (in the old layer and different from the
//!     old image, a deletion included) is kept, even when the new image
//!     changed it too (the admin wins, as in ostree); a kept whiteout of a
//!     path the new image no longer has is dropped (it would hide nothing);
//!   - an untouched file follows the new image (nothing in the new layer);
//!   - a file the new image dropped goes (nothing to do);
//!   - `passwd`, `group`, `shadow`, `gshadow` are merged by name
//!     ([`merge_accounts`]).
//!
//!   An existing layer of the new generation is never touched (a re-run or
//!   a rollback keeps that generation's own `/etc`). The layer is written in
//!   `.tmp-<name>-<pid>` beside it, flushed, then renamed into place
//!   (failpoint `etc::layer-written` between), so a crash leaves no half
//!   layer; a leftover temporary directory is removed by the next run.
//!
//! Everything here works on plain directories and an image given as a
//! manifest with a reader of its content objects ([`Image`]), so the unit
//! tests run on temporary directories.

use super::manifest::{Kind, Manifest, Meta, Sha256Digest};
use super::{io_err, sys, TreeError};
use crate::failpoint::{self, FailPoint};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The account files merged by name.
pub const ACCOUNT_FILES: [&str; 4] = ["passwd", "group", "shadow", "gshadow"];
/// The xattr that makes an upper directory opaque.
pub const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";
/// The layer's directory of changes and overlayfs' work directory.
pub const UPPER: &str = "upper";
pub const WORK: &str = "work";

/// An image's `/etc`: the tree's manifest and how to read a content object.
pub struct Image<'a> {
    pub manifest: &'a Manifest,
    pub read: &'a dyn Fn(&Sha256Digest) -> io::Result<Vec<u8>>,
}

/// `rel` (relative to `/etc`) as a path of the tree.
fn tree_path(rel: &[u8]) -> Vec<u8> {
    let mut p = b"/etc".to_vec();
    if !rel.is_empty() {
        p.push(b'/');
        p.extend_from_slice(rel);
    }
    p
}

fn join_rel(rel: &[u8], name: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        name.to_vec()
    } else {
        [rel, b"/", name].concat()
    }
}

/// `/etc/<rel>` for messages.
pub fn shown(rel: &[u8]) -> String {
    super::manifest::show(&tree_path(rel))
}

impl Image<'_> {
    pub fn entry(&self, rel: &[u8]) -> Option<(&Meta, &Kind)> {
        self.manifest.inode(&tree_path(rel))
    }

    /// The content of regular file `/etc/<rel>`, `None` when it is not one.
    pub fn read_file(&self, rel: &[u8]) -> Result<Option<Vec<u8>>, TreeError> {
        let p = tree_path(rel);
        super::packages::read_file(self.manifest, &p, self.read).map_err(|cause| TreeError::Io {
            op: "read the image's",
            path: PathBuf::from(super::manifest::show(&p)),
            cause,
        })
    }

    /// Names of the entries directly below `/etc/<rel>`.
    fn children(&self, rel: &[u8]) -> BTreeSet<Vec<u8>> {
        let mut prefix = tree_path(rel);
        prefix.push(b'/');
        self.manifest
            .entries
            .range(prefix.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&prefix))
            .filter_map(|k| {
                let rest = &k[prefix.len()..];
                (!rest.contains(&b'/')).then(|| rest.to_vec())
            })
            .collect()
    }
}

/// What a layer does to a path of the image (`genboot etc status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Local {
    /// The image has no such path.
    Added,
    /// The layer's differs from the image's.
    Modified,
    /// Deleted (a whiteout, or hidden by an opaque directory).
    Deleted,
}

impl Local {
    pub fn letter(self) -> char {
        match self {
            Local::Added => 'A',
            Local::Modified => 'M',
            Local::Deleted => 'D',
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    Dir {
        opaque: bool,
    },
    Leaf,
    Whiteout,
    /// A path of the image an opaque directory hides (not in the layer).
    Hidden,
}

/// One entry of a layer, classified against its image.
#[derive(Debug, Clone)]
struct Item {
    rel: Vec<u8>,
    /// The entry in the layer (`None` for [`What::Hidden`]).
    upper: Option<PathBuf>,
    what: What,
    /// What `status` shows.
    local: Option<Local>,
    /// What differs from the image (`content`, `mode`, …) for a change.
    differs: Vec<&'static str>,
    /// The merge carries it into the next layer.
    keep: bool,
    /// Below an opaque directory (kept whole, as it is).
    below_opaque: bool,
}

/// The layer's metadata of an entry: mode bits, owner, group, xattrs
/// (overlayfs' own left out).
struct UpperMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    opaque: bool,
}

fn overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

fn upper_meta(path: &Path, st: &fs::Metadata) -> Result<UpperMeta, TreeError> {
    let mut xattrs = BTreeMap::new();
    let mut opaque = false;
    for name in sys::list_xattrs(path).map_err(io_err("list xattrs of", path))? {
        let value = match sys::get_xattr(path, &name) {
            Ok(v) => v,
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(e) => return Err(io_err("read xattrs of", path)(e)),
        };
        if name == OPAQUE_XATTR {
            opaque = value == b"y";
        } else if !overlay_xattr(&name) {
            xattrs.insert(name, value);
        }
    }
    Ok(UpperMeta {
        mode: st.mode() & 0o7777,
        uid: st.uid(),
        gid: st.gid(),
        xattrs,
        opaque,
    })
}

fn is_whiteout(st: &fs::Metadata) -> bool {
    st.file_type().is_char_device() && st.rdev() == 0
}

/// What differs between the layer's entry and the image's (empty: the
/// same, a copy-up that changed nothing).
fn differences(
    path: &Path,
    st: &fs::Metadata,
    um: &UpperMeta,
    img: Option<(&Meta, &Kind)>,
) -> Result<Vec<&'static str>, TreeError> {
    let Some((meta, kind)) = img else {
        return Ok(vec!["kind"]);
    };
    let ft = st.file_type();
    let mut w = Vec::new();
    match kind {
        Kind::Dir if ft.is_dir() => {}
        Kind::File { size, sha256, .. } if ft.is_file() => {
            let same = *size == st.len()
                && super::objects::hash_file(path)
                    .map_err(io_err("read", path))?
                    .1
                    == *sha256;
            if !same {
                w.push("content");
            }
        }
        Kind::Symlink { target } if ft.is_symlink() => {
            let t = fs::read_link(path).map_err(io_err("read link", path))?;
            if t.as_os_str().as_bytes() != target.as_slice() {
                w.push("target");
            }
        }
        _ => return Ok(vec!["kind"]),
    }
    // A symlink's mode means nothing.
    if !ft.is_symlink() && um.mode != meta.mode {
        w.push("mode");
    }
    if um.uid != meta.uid {
        w.push("owner");
    }
    if um.gid != meta.gid {
        w.push("group");
    }
    if um.xattrs != meta.xattrs {
        w.push("xattrs");
    }
    Ok(w)
}

fn list_dir(dir: &Path) -> Result<Vec<Vec<u8>>, TreeError> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let e = e.map_err(io_err("list", dir))?;
        names.push(e.file_name().as_bytes().to_vec());
    }
    names.sort();
    Ok(names)
}

/// Classify every entry of the layer `upper` below `rel` (pre-order:
/// a directory before its entries). `hidden`: below an opaque directory,
/// where the image shows nothing.
fn walk(
    upper: &Path,
    rel: &[u8],
    image: &Image,
    hidden: bool,
    out: &mut Vec<Item>,
) -> Result<(), TreeError> {
    let dir = upper.join(std::ffi::OsStr::from_bytes(rel));
    let names = list_dir(&dir)?;
    for name in &names {
        let r = join_rel(rel, name);
        let path = dir.join(std::ffi::OsStr::from_bytes(name));
        let st = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
        let img = image.entry(&r);
        if is_whiteout(&st) {
            out.push(Item {
                rel: r,
                upper: Some(path),
                what: What::Whiteout,
                local: img.is_some().then_some(Local::Deleted),
                differs: Vec::new(),
                keep: true,
                below_opaque: hidden,
            });
            continue;
        }
        let um = upper_meta(&path, &st)?;
        let differs = differences(&path, &st, &um, img)?;
        let local = if img.is_none() {
            Some(Local::Added)
        } else if !differs.is_empty() || (um.opaque && !hidden) {
            Some(Local::Modified)
        } else {
            None
        };
        if st.is_dir() {
            out.push(Item {
                rel: r.clone(),
                upper: Some(path),
                what: What::Dir { opaque: um.opaque },
                local,
                differs,
                keep: local.is_some() || hidden || um.opaque,
                below_opaque: hidden,
            });
            walk(upper, &r, image, hidden || um.opaque, out)?;
        } else {
            out.push(Item {
                rel: r,
                upper: Some(path),
                what: What::Leaf,
                local,
                differs,
                keep: local.is_some() || hidden,
                below_opaque: hidden,
            });
        }
    }
    // Below an opaque directory, what the image has and the layer does not
    // is gone.
    let opaque_here = hidden && (rel.is_empty() || image.entry(rel).is_some());
    if opaque_here {
        let have: BTreeSet<&Vec<u8>> = names.iter().collect();
        for name in image.children(rel) {
            if !have.contains(&name) {
                out.push(Item {
                    rel: join_rel(rel, &name),
                    upper: None,
                    what: What::Hidden,
                    local: Some(Local::Deleted),
                    differs: Vec::new(),
                    keep: false,
                    below_opaque: true,
                });
            }
        }
    }
    Ok(())
}

fn classify(upper: &Path, image: &Image) -> Result<Vec<Item>, TreeError> {
    let mut items = Vec::new();
    walk(upper, b"", image, false, &mut items)?;
    Ok(items)
}

/// One local change of a layer against its image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalChange {
    /// `/etc/…`.
    pub path: String,
    #[serde(skip)]
    pub rel: Vec<u8>,
    pub change: Local,
    /// For a modification: what differs (`content`, `mode`, `owner`,
    /// `group`, `xattrs`, `kind`, `target`).
    pub what: Vec<&'static str>,
    /// The layer's entry, when it has one (not for a deletion).
    #[serde(skip)]
    pub upper: Option<PathBuf>,
    /// A directory.
    pub dir: bool,
}

/// What the layer `upper` changes against `image`'s `/etc`, in path order.
pub fn local_changes(upper: &Path, image: &Image) -> Result<Vec<LocalChange>, TreeError> {
    let mut out: Vec<LocalChange> = classify(upper, image)?
        .into_iter()
        .filter_map(|i| {
            let change = i.local?;
            let dir = matches!(i.what, What::Dir { .. })
                || (i.what != What::Leaf && matches!(image.entry(&i.rel), Some((_, Kind::Dir))));
            Some(LocalChange {
                path: shown(&i.rel),
                upper: (change != Local::Deleted).then_some(i.upper).flatten(),
                rel: i.rel,
                change,
                what: i.differs,
                dir,
            })
        })
        .collect();
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// What [`prepare_layer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// The generation has its layer already; it was left as it is.
    Existing(PathBuf),
    /// A new layer was written.
    Written(Merged),
}

/// What a merge carried into the new layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    pub layer: PathBuf,
    /// `/etc/…` paths the admin changed, kept (files, directories).
    pub kept: Vec<String>,
    /// Deletions (whiteouts) kept.
    pub deleted: Vec<String>,
    /// Account files written merged (`/etc/passwd`, …).
    pub accounts: Vec<String>,
    /// Admin changes kept where the new image changed the path too (the
    /// admin's version wins).
    pub conflicts: Vec<String>,
    /// What was left behind, with why (a whiteout of a path the new image
    /// does not have; an account the new image dropped whose id it gives
    /// another name).
    pub dropped: Vec<String>,
    /// Warnings: a local account whose id the new image gives another name.
    pub warnings: Vec<String>,
}

/// The previous generation's layer and image.
pub struct Old<'a> {
    pub upper: &'a Path,
    pub image: Image<'a>,
}

/// Write generation `name`'s layer below `layers` (`<layers>/<name>/upper`
/// and an empty `work`) from `old` by the 3-way rule, unless it exists.
/// With no old layer the new one is empty.
pub fn prepare_layer(
    layers: &Path,
    name: &str,
    old: Option<&Old>,
    new: &Image,
) -> Result<Prepared, TreeError> {
    let target = layers.join(name);
    if fs::symlink_metadata(&target).is_ok() {
        return Ok(Prepared::Existing(target));
    }
    fs::create_dir_all(layers).map_err(io_err("create", layers))?;
    remove_leftovers(layers, name)?;
    let tmp = layers.join(format!(".tmp-{name}-{}", std::process::id()));
    let written = (|| {
        fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod", &tmp))?;
        let upper = tmp.join(UPPER);
        let mut merged = match old {
            Some(o) => merge(o, new, &upper)?,
            None => {
                make_root(&upper, new)?;
                Merged::default()
            }
        };
        let work = tmp.join(WORK);
        fs::create_dir(&work).map_err(io_err("create", &work))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", &tmp))?;
        crate::fsutil::syncfs(&tmp)?;
        failpoint::hit(FailPoint::EtcLayerWritten).map_err(io_err("write", &tmp))?;
        merged.layer = target.clone();
        Ok::<_, TreeError>(merged)
    })();
    let merged = match written {
        Ok(m) => m,
        Err(e) => {
            // Best effort: the next run removes what stays.
            let _ = crate::fsutil::remove_tree(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, &target).map_err(io_err("rename into place", &target))?;
    crate::fsutil::fsync_dir(layers)?;
    Ok(Prepared::Written(merged))
}

/// Remove `.tmp-<name>-*` below `layers` (an interrupted run's).
fn remove_leftovers(layers: &Path, name: &str) -> Result<(), TreeError> {
    let prefix = format!(".tmp-{name}-");
    for e in fs::read_dir(layers).map_err(io_err("list", layers))? {
        let e = e.map_err(io_err("list", layers))?;
        if e.file_name().as_bytes().starts_with(prefix.as_bytes()) {
            crate::fsutil::remove_tree(&e.path())?;
        }
    }
    Ok(())
}

/// The new layer's root, with the new image's `/etc` metadata.
fn make_root(upper: &Path, new: &Image) -> Result<(), TreeError> {
    fs::create_dir(upper).map_err(io_err("create", upper))?;
    let (mode, uid, gid) = match new.entry(b"") {
        Some((m, Kind::Dir)) => (m.mode, m.uid, m.gid),
        _ => (0o755, 0, 0),
    };
    std::os::unix::fs::lchown(upper, Some(uid), Some(gid)).map_err(io_err("chown", upper))?;
    fs::set_permissions(upper, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", upper))
}

/// Give `to` the owner, xattrs, mode and (not for a symlink) mtime of `from`.
fn copy_meta(from: &Path, st: &fs::Metadata, um: &UpperMeta, to: &Path) -> Result<(), TreeError> {
    std::os::unix::fs::lchown(to, Some(um.uid), Some(um.gid)).map_err(io_err("chown", to))?;
    for (n, v) in &um.xattrs {
        sys::set_xattr(to, n, v).map_err(io_err("set xattrs of", to))?;
    }
    if um.opaque {
        sys::set_xattr(to, OPAQUE_XATTR, b"y").map_err(io_err("set xattrs of", to))?;
    }
    if !st.file_type().is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(um.mode))
            .map_err(io_err("chmod", to))?;
        let mtime = st.modified().map_err(io_err("stat", from))?;
        fs::File::open(to)
            .and_then(|f| f.set_modified(mtime))
            .map_err(io_err("set the mtime of", to))?;
    }
    Ok(())
}

/// Copy one non-directory entry of the old layer (file, symlink, other).
fn copy_leaf(from: &Path, to: &Path) -> Result<(), TreeError> {
    let st = fs::symlink_metadata(from).map_err(io_err("stat", from))?;
    let um = upper_meta(from, &st)?;
    let ft = st.file_type();
    if ft.is_symlink() {
        let t = fs::read_link(from).map_err(io_err("read link", from))?;
        std::os::unix::fs::symlink(t, to).map_err(io_err("create link", to))?;
    } else if ft.is_file() {
        let data = fs::read(from).map_err(io_err("read", from))?;
        write_new(to, &data)?;
    } else if is_whiteout(&st) {
        sys::mknod_whiteout(to).map_err(io_err("create a whiteout at", to))?;
        return Ok(());
    } else {
        return Err(TreeError::Io {
            op: "carry",
            path: from.to_path_buf(),
            cause: io::Error::other(
                "a device, FIFO or socket in /etc's layer cannot be carried; remove it",
            ),
        });
    }
    copy_meta(from, &st, &um, to)
}

fn write_new(to: &Path, data: &[u8]) -> Result<(), TreeError> {
    use std::io::Write as _;
    let mut f = crate::fsutil::create_new_nofollow(to, 0o600)?;
    f.write_all(data).map_err(io_err("write", to))
}

/// A directory of the new layer: created empty with mode 0700; its
/// metadata is applied after its entries are in (a read-only directory
/// would refuse them).
struct NewDir {
    path: PathBuf,
    /// Where its metadata comes from: the old layer's directory, or the
    /// new image's entry.
    meta: DirMeta,
}

enum DirMeta {
    Upper(PathBuf),
    Image { mode: u32, uid: u32, gid: u32 },
}

struct Writer<'a> {
    upper: &'a Path,
    /// The old layer's directories, by `rel`: (path, carried because the
    /// admin changed it).
    old_dirs: BTreeMap<Vec<u8>, PathBuf>,
    new: &'a Image<'a>,
    made: BTreeSet<Vec<u8>>,
    dirs: Vec<NewDir>,
}

impl Writer<'_> {
    fn dest(&self, rel: &[u8]) -> PathBuf {
        self.upper.join(std::ffi::OsStr::from_bytes(rel))
    }

    /// Create `rel` (a directory the old layer has) and its parents.
    fn make_dir(&mut self, rel: &[u8], carried: bool) -> Result<(), TreeError> {
        if rel.is_empty() || self.made.contains(rel) {
            return Ok(());
        }
        if let Some(i) = rel.iter().rposition(|&b| b == b'/') {
            self.make_dir(&rel[..i], false)?;
        }
        let path = self.dest(rel);
        fs::create_dir(&path).map_err(io_err("create", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod", &path))?;
        let from = self.old_dirs.get(rel).cloned().ok_or_else(|| {
            TreeError::Internal(format!("{}: no directory in the old layer", shown(rel)))
        })?;
        // A directory the admin did not change (only there to hold a
        // change) takes the new image's metadata where it has one.
        let meta = match self.new.entry(rel) {
            Some((m, Kind::Dir)) if !carried => DirMeta::Image {
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
            },
            _ => DirMeta::Upper(from),
        };
        self.dirs.push(NewDir { path, meta });
        self.made.insert(rel.to_vec());
        Ok(())
    }

    fn parent(&mut self, rel: &[u8]) -> Result<(), TreeError> {
        match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => self.make_dir(&rel[..i], false),
            None => Ok(()),
        }
    }

    fn finish(self) -> Result<(), TreeError> {
        for d in self.dirs.iter().rev() {
            match &d.meta {
                DirMeta::Upper(from) => {
                    let st = fs::symlink_metadata(from).map_err(io_err("stat", from))?;
                    let um = upper_meta(from, &st)?;
                    copy_meta(from, &st, &um, &d.path)?;
                }
                DirMeta::Image { mode, uid, gid } => {
                    std::os::unix::fs::lchown(&d.path, Some(*uid), Some(*gid))
                        .map_err(io_err("chown", &d.path))?;
                    fs::set_permissions(&d.path, fs::Permissions::from_mode(*mode))
                        .map_err(io_err("chmod", &d.path))?;
                }
            }
        }
        Ok(())
    }
}

/// Whether the image's entry at `rel` is the same in both images (mtimes
/// aside).
fn same_in_images(a: &Image, b: &Image, rel: &[u8]) -> bool {
    match (a.entry(rel), b.entry(rel)) {
        (None, None) => true,
        (Some((ma, ka)), Some((mb, kb))) => {
            ka == kb
                && ma.mode == mb.mode
                && ma.uid == mb.uid
                && ma.gid == mb.gid
                && ma.xattrs == mb.xattrs
        }
        _ => false,
    }
}

fn is_account_file(rel: &[u8]) -> bool {
    ACCOUNT_FILES.iter().any(|f| f.as_bytes() == rel)
}

/// The 3-way merge of `old` into the new layer `upper` (which must not
/// exist).
fn merge(old: &Old, new: &Image, upper: &Path) -> Result<Merged, TreeError> {
    make_root(upper, new)?;
    let items = classify(old.upper, &old.image)?;
    let mut w = Writer {
        upper,
        old_dirs: items
            .iter()
            .filter(|i| matches!(i.what, What::Dir { .. }))
            .filter_map(|i| Some((i.rel.clone(), i.upper.clone()?)))
            .collect(),
        new,
        made: BTreeSet::new(),
        dirs: Vec::new(),
    };
    let mut m = Merged::default();
    let mut accounts = BTreeMap::new();
    for i in &items {
        if !i.keep {
            continue;
        }
        let Some(from) = &i.upper else { continue };
        let path = shown(&i.rel);
        let below_opaque = i.below_opaque;
        match i.what {
            What::Hidden => {}
            What::Dir { .. } => {
                w.make_dir(&i.rel, true)?;
                if i.local.is_some() {
                    m.kept.push(path.clone());
                }
            }
            What::Whiteout => {
                if new.entry(&i.rel).is_none() && !below_opaque {
                    m.dropped.push(format!(
                        "{path}: deleted locally, and the new image does not have it"
                    ));
                    continue;
                }
                w.parent(&i.rel)?;
                sys::mknod_whiteout(&w.dest(&i.rel))
                    .map_err(io_err("create a whiteout at", &w.dest(&i.rel)))?;
                if i.local.is_some() {
                    m.deleted.push(path.clone());
                }
            }
            What::Leaf if is_account_file(&i.rel) && !below_opaque => {
                accounts.insert(i.rel.clone(), from.clone());
                continue;
            }
            What::Leaf => {
                w.parent(&i.rel)?;
                copy_leaf(from, &w.dest(&i.rel))?;
                if i.local.is_some() {
                    m.kept.push(path.clone());
                }
            }
        }
        if i.local.is_some() && !same_in_images(&old.image, new, &i.rel) {
            m.conflicts.push(path);
        }
    }
    merge_account_files(old, new, &accounts, &mut w, &mut m)?;
    w.finish()?;
    Ok(m)
}

/// The account files the admin changed, merged by name into the new layer.
fn merge_account_files(
    old: &Old,
    new: &Image,
    changed: &BTreeMap<Vec<u8>, PathBuf>,
    w: &mut Writer,
    m: &mut Merged,
) -> Result<(), TreeError> {
    // passwd and group first: shadow and gshadow keep only the names the
    // new /etc/passwd and /etc/group have.
    let mut names: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (file, ids, partner) in [
        ("passwd", true, None),
        ("group", true, None),
        ("shadow", false, Some("passwd")),
        ("gshadow", false, Some("group")),
    ] {
        let new_image = new.read_file(file.as_bytes())?;
        let Some(from) = changed.get(file.as_bytes()) else {
            let text = new_image.unwrap_or_default();
            names.insert(file, entries(&text).into_iter().map(|(k, _)| k).collect());
            continue;
        };
        let effective = fs::read(from).map_err(io_err("read", from))?;
        let old_image = old.image.read_file(file.as_bytes())?;
        let r = merge_accounts(
            old_image.as_deref(),
            &effective,
            new_image.as_deref(),
            ids,
            partner.and_then(|p| names.get(p)),
        );
        names.insert(file, entries(&r.text).into_iter().map(|(k, _)| k).collect());
        let path = shown(file.as_bytes());
        for (name, why) in &r.dropped {
            m.dropped.push(format!("{path}: {name}: {why}"));
        }
        for wn in &r.warnings {
            m.warnings.push(format!("{path}: {wn}"));
        }
        let st = fs::symlink_metadata(from).map_err(io_err("stat", from))?;
        let um = upper_meta(from, &st)?;
        let same_as_new = new_image.as_deref() == Some(&r.text[..])
            && new.entry(file.as_bytes()).is_some_and(|(nm, _)| {
                nm.mode == um.mode && nm.uid == um.uid && nm.gid == um.gid && nm.xattrs == um.xattrs
            });
        if same_as_new {
            continue;
        }
        let to = w.dest(file.as_bytes());
        write_new(&to, &r.text)?;
        copy_meta(from, &st, &um, &to)?;
        m.accounts.push(path);
    }
    Ok(())
}

/// What [`merge_accounts`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountsMerged {
    pub text: Vec<u8>,
    /// Names left out, with why.
    pub dropped: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

fn entries(text: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(text)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| (l.split(':').next().unwrap_or(l).to_string(), l.to_string()))
        .collect()
}

/// The id field (third) of an account line.
fn id_of(line: &str) -> Option<&str> {
    line.split(':').nth(2)
}

/// Merge one account file (`passwd`, `group`, `shadow`, `gshadow`) by
/// name, line by line:
/// - the new image's lines, in its order; where the admin changed or added
///   the name (the old effective line differs from the old image's, or the
///   old image has no such name) the admin's line instead; a name the
///   admin deleted (in the old image, not in the old effective file) stays
///   deleted;
/// - then, in their old order, the old effective file's names the new
///   image does not have: local accounts (always kept; a warning when the
///   new image gives their id to another name) and accounts the new image
///   dropped (kept, as Debian never deletes system users, unless `ids` and
///   the new image gives the id to another name: then left out, reported);
///   with `keep_only` (`shadow`, `gshadow`: the names of the new `passwd`,
///   `group`), names outside it are left out.
pub fn merge_accounts(
    old_image: Option<&[u8]>,
    effective: &[u8],
    new_image: Option<&[u8]>,
    ids: bool,
    keep_only: Option<&BTreeSet<String>>,
) -> AccountsMerged {
    let oi: BTreeMap<String, String> = entries(old_image.unwrap_or_default()).into_iter().collect();
    let oe = entries(effective);
    let oe_map: BTreeMap<&str, &str> = oe.iter().map(|(k, l)| (k.as_str(), l.as_str())).collect();
    let ni = entries(new_image.unwrap_or_default());
    let ni_names: BTreeSet<&str> = ni.iter().map(|(k, _)| k.as_str()).collect();
    let mut new_ids: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, l) in &ni {
        if let Some(id) = id_of(l) {
            new_ids.entry(id).or_default().push(k);
        }
    }
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    let mut warnings = Vec::new();
    for (k, l) in &ni {
        match (oi.get(k), oe_map.get(k.as_str())) {
            (old, Some(e)) if old.map(String::as_str) != Some(*e) => out.push(e.to_string()),
            (Some(_), None) => {}
            _ => out.push(l.clone()),
        }
    }
    for (k, e) in &oe {
        if ni_names.contains(k.as_str()) {
            continue;
        }
        if keep_only.is_some_and(|names| !names.contains(k)) {
            dropped.push((k.clone(), "left out with its account".to_string()));
            continue;
        }
        let other = ids
            .then(|| id_of(e))
            .flatten()
            .and_then(|id| new_ids.get(id).map(|names| (id, names.join(", "))));
        let local = !oi.contains_key(k);
        match other {
            Some((id, names)) if !local => {
                dropped.push((
                    k.clone(),
                    format!("the new image no longer has it and gives its id {id} to {names}"),
                ));
                continue;
            }
            Some((id, names)) => warnings.push(format!(
                "local {k} kept, but the new image gives its id {id} to {names} too; renumber one (usermod/groupmod -u/-g)"
            )),
            None => {}
        }
        out.push(e.clone());
    }
    let mut text = out.join("\n").into_bytes();
    if !text.is_empty() {
        text.push(b'\n');
    }
    AccountsMerged {
        text,
        dropped,
        warnings,
    }
}

/// One hunk of a unified line diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    /// First line (from 1; 0 for an empty range) and count, in a and b.
    pub a: (usize, usize),
    pub b: (usize, usize),
    /// `' '`, `'-'` or `'+'` and the line (without its newline).
    pub lines: Vec<(char, String)>,
}

/// Cells of the longest-common-subsequence table beyond which the diff
/// gives up finding common lines in the middle (one hunk replaces all).
const LCS_CELLS: usize = 4 << 20;

/// The unified diff of two texts, with `context` lines around each change.
pub fn line_diff(a: &str, b: &str, context: usize) -> Vec<Hunk> {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    // Edit script: (op, index in a, index in b).
    let pre = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suf = a[pre..]
        .iter()
        .rev()
        .zip(b[pre..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (&a[pre..a.len() - suf], &b[pre..b.len() - suf]);
    let mut ops: Vec<(char, usize, usize)> = (0..pre).map(|i| (' ', i, i)).collect();
    if ma.len().saturating_mul(mb.len()) <= LCS_CELLS {
        let (n, m) = (ma.len(), mb.len());
        // lcs[i][j]: common lines of ma[i..] and mb[j..].
        let mut lcs = vec![0u32; (n + 1) * (m + 1)];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i * (m + 1) + j] = if ma[i] == mb[j] {
                    lcs[(i + 1) * (m + 1) + j + 1] + 1
                } else {
                    lcs[(i + 1) * (m + 1) + j].max(lcs[i * (m + 1) + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && ma[i] == mb[j] {
                ops.push((' ', pre + i, pre + j));
                i += 1;
                j += 1;
            } else if i < n && (j == m || lcs[(i + 1) * (m + 1) + j] >= lcs[i * (m + 1) + j + 1]) {
                ops.push(('-', pre + i, pre + j));
                i += 1;
            } else {
                ops.push(('+', pre + i, pre + j));
                j += 1;
            }
        }
    } else {
        ops.extend((0..ma.len()).map(|i| ('-', pre + i, pre)));
        ops.extend((0..mb.len()).map(|j| ('+', pre + ma.len(), pre + j)));
    }
    ops.extend((0..suf).map(|k| (' ', a.len() - suf + k, b.len() - suf + k)));
    // Group the changes with their context into hunks.
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let mut hunks = Vec::new();
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(context);
        let mut end = changed[k];
        while k < changed.len() && changed[k] <= end + 2 * context + 1 {
            end = changed[k];
            k += 1;
        }
        let end = (end + context + 1).min(ops.len());
        let slice = &ops[start..end];
        let count = |c: char| slice.iter().filter(|o| o.0 == ' ' || o.0 == c).count();
        let (na, nb) = (count('-'), count('+'));
        let first = slice[0];
        let line = |o: &(char, usize, usize)| match o.0 {
            '+' => b[o.2].to_string(),
            _ => a[o.1].to_string(),
        };
        hunks.push(Hunk {
            a: (if na == 0 { first.1 } else { first.1 + 1 }, na),
            b: (if nb == 0 { first.2 } else { first.2 + 1 }, nb),
            lines: slice.iter().map(|o| (o.0, line(o))).collect(),
        });
    }
    hunks
}

#[cfg(test)]
mod tests;
