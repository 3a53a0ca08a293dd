//! A generation's `[tree]`: the configuration becomes a [`TreeSpec`], the
//! tree is built and imported into the store (through the input cache: an
//! unchanged configuration against an unchanged mirror re-runs nothing),
//! and, when `[kernel]` names no image, the tree's own kernel is found and
//! its files handed to the kernel and module steps.
//!
//! The input cache entry of a tree (`<state>/cache/rootfs-<key>.json`) is
//! keyed by everything the tree is made from except the mirror's state:
//! genboot's version and tree format, the source and its keys, the mirror lines (this
//! machine's apt sources when `mirror` is absent), the customize hooks'
//! contents and, for a `dir` tree, the stamps (size, times, inode) of every
//! path below it. The entry records the mirrors' `Release` files (their
//! SHA-256); a hit needs them unchanged. A mirror that cannot be asked
//! (offline) keeps the tree built before, with a warning; a `file://`
//! mirror is read directly, others through `apt-helper download-file`.

use super::cache::{self, Cache};
use super::BuildError;
use crate::config::{
    KernelChoice, SystemConfig, TreeSection, TreeSourceKind, DEFAULT_EPOCH, NEWEST,
};
use crate::fsutil::Stamp;
use crate::notes::{Note, Notes};
use crate::store::{Store, StorePath};
use crate::tree::extract::{self, TreeKernel};
use crate::tree::mmdebstrap::{self, MmdebstrapSpec};
use crate::tree::{self, Objects, Rules, TreeError, TreeSource, TreeSpec};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The object name's label: `[system] label` as a store name part
/// (`Debian 12` → `debian-12`).
pub fn label_slug(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').trim_start_matches('.');
    let mut out: String = out.chars().take(100).collect();
    while out.contains("..") {
        out = out.replace("..", ".");
    }
    if out.is_empty() {
        "system".into()
    } else {
        out
    }
}

/// The tree `[tree]` describes.
pub fn spec(cfg: &SystemConfig, t: &TreeSection) -> TreeSpec {
    let mut rules = Rules::default();
    if let Some(h) = &t.hostname {
        rules.hostname = h.clone();
    }
    let (source, epoch) = match t.source {
        TreeSourceKind::Mmdebstrap => {
            let mut mm = MmdebstrapSpec::new(t.suite.as_deref().unwrap_or_default());
            if let Some(v) = &t.variant {
                mm.variant = v.clone();
            }
            mm.mirrors = t.mirror.clone();
            mm.packages = t.packages.clone();
            mm.customize = t.customize.clone();
            mm.dpkgopts = t.dpkgopts.clone();
            mm.aptopts.extend(t.aptopts.iter().cloned());
            mm.config = Some(cfg.source.clone());
            (
                TreeSource::Mmdebstrap(mm),
                Some(t.source_date_epoch.unwrap_or(DEFAULT_EPOCH)),
            )
        }
        TreeSourceKind::Dir => (
            TreeSource::Dir(t.path.clone().unwrap_or_default()),
            t.source_date_epoch,
        ),
    };
    TreeSpec {
        label: label_slug(&cfg.system.label),
        source,
        epoch,
        rules,
    }
}

/// The cache key of a tree and the mirrors whose state the entry records.
struct Key {
    key: String,
    /// (Release URL, how to read it), for the mmdebstrap mirrors.
    releases: Vec<String>,
    /// The newest change among a `dir` tree's paths.
    newest_change_ns: i128,
}

fn sha_hex(data: &[u8]) -> String {
    genboot_format::hex(&Sha256::digest(data))
}

/// Bump when genboot would make another tree from the same inputs (the
/// scan, the build rules, the manifest or the image changed). The key holds
/// this and genboot's version, not the executable's stamp as the kernel
/// cache does: a new genboot binary must not re-run mmdebstrap for every
/// tree.
const ROOTFS_CACHE_FORMAT: u32 = 1;

/// What the tree is made from (see the module docs).
fn key(spec: &TreeSpec) -> Result<Key, TreeError> {
    let mut s = format!(
        "genboot {} rootfs {ROOTFS_CACHE_FORMAT}\n",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        s,
        "label {}\nepoch {:?}\nrules {:?}",
        spec.label, spec.epoch, spec.rules
    );
    let mut releases = Vec::new();
    let mut newest = i128::MIN;
    match &spec.source {
        TreeSource::Mmdebstrap(mm) => {
            let mirrors = if mm.mirrors.is_empty() {
                mmdebstrap::machine_sources(Path::new("/etc/apt"), &mm.suite)?
            } else {
                mm.mirrors.clone()
            };
            let _ = writeln!(
                s,
                "mmdebstrap {} {} {}\nmirrors {mirrors:?}\npackages {:?}\naptopts {:?}\ndpkgopts {:?}",
                mm.suite, mm.variant, mm.architecture, mm.packages, mm.aptopts, mm.dpkgopts
            );
            for h in &mm.customize {
                let digest = std::fs::read(h).map(|d| sha_hex(&d)).unwrap_or_default();
                let _ = writeln!(s, "customize {} {digest}", h.display());
            }
            releases = release_urls(&mirrors, &mm.suite);
        }
        TreeSource::Dir(path) => {
            let (digest, n) =
                walk_stamps(path, Path::new("")).map_err(crate::tree::io_err("read", path))?;
            newest = n;
            let _ = writeln!(s, "dir {} {}", path.display(), genboot_format::hex(&digest));
        }
    }
    Ok(Key {
        key: sha_hex(s.as_bytes())[..32].to_string(),
        releases,
        newest_change_ns: newest,
    })
}

/// A digest of every path below `root` with its stamp and mode (sorted by
/// name in each directory, subdirectories in parallel), and the newest
/// change among them.
fn walk_stamps(root: &Path, rel: &Path) -> std::io::Result<([u8; 32], i128)> {
    use rayon::prelude::*;
    use std::os::unix::ffi::OsStrExt;
    let dir = root.join(rel);
    let mut items: Vec<_> = std::fs::read_dir(&dir)?
        .map(|e| {
            let e = e?;
            let m = e.metadata()?;
            Ok((e.file_name(), m))
        })
        .collect::<std::io::Result<_>>()?;
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let below: Vec<Option<([u8; 32], i128)>> = items
        .par_iter()
        .map(|(n, m)| {
            m.is_dir()
                .then(|| walk_stamps(root, &rel.join(n)))
                .transpose()
        })
        .collect::<std::io::Result<_>>()?;
    let mut h = Sha256::new();
    let mut newest = i128::MIN;
    for ((n, m), sub) in items.iter().zip(below) {
        let st = Stamp::of(m);
        newest = newest.max(st.changed_ns());
        h.update(n.as_bytes());
        h.update([0]);
        for v in [
            st.size as i128,
            st.mtime_ns,
            st.ctime_ns,
            i128::from(st.ino),
            i128::from(m.mode()),
        ] {
            h.update(v.to_le_bytes());
        }
        if let Some((d, sub_newest)) = sub {
            h.update(d);
            newest = newest.max(sub_newest);
        }
    }
    Ok((h.finalize().into(), newest))
}

/// The `Release` file of each mirror (`InRelease` when it has one).
fn release_urls(mirrors: &[String], suite: &str) -> Vec<String> {
    let mut out = Vec::new();
    for m in mirrors {
        let (uri, suite) = if m.trim_start().starts_with("deb") {
            match mmdebstrap::parse_sources_list(m).into_iter().next() {
                Some(src) => (src.uri, src.suite),
                None => continue,
            }
        } else {
            match m.split_whitespace().next() {
                Some(u) => (u.to_string(), suite.to_string()),
                None => continue,
            }
        };
        out.push(format!("{}/dists/{suite}", uri.trim_end_matches('/')));
    }
    out
}

/// The SHA-256 of a suite's `InRelease` (else `Release`) at `dists` (a
/// mirror's `…/dists/<suite>`), or why it cannot be read.
fn release_state(dists: &str, scratch: &Path) -> Result<String, String> {
    if let Some(p) = dists.strip_prefix("file:") {
        let dir = PathBuf::from(format!("/{}", p.trim_start_matches('/')));
        for f in ["InRelease", "Release"] {
            if let Ok(d) = std::fs::read(dir.join(f)) {
                return Ok(sha_hex(&d));
            }
        }
        return Err(format!("{} has no Release file", dir.display()));
    }
    let mut why = String::new();
    if let Err(e) = std::fs::create_dir_all(scratch) {
        return Err(format!("cannot create {}: {e}", scratch.display()));
    }
    for f in ["InRelease", "Release"] {
        let dest = scratch.join(format!("release-{}", std::process::id()));
        let out = std::process::Command::new("/usr/lib/apt/apt-helper")
            .args([
                "-o",
                "APT::Sandbox::User=root",
                "-o",
                "Acquire::http::Timeout=10",
                "-o",
                "Acquire::https::Timeout=10",
                "-o",
                "Acquire::Retries=0",
                "download-file",
            ])
            .arg(format!("{dists}/{f}"))
            .arg(&dest)
            .stdin(std::process::Stdio::null())
            .output();
        let data = std::fs::read(&dest);
        // A scratch file that stays only takes a little space in the cache.
        let _ = std::fs::remove_file(&dest);
        match (out, data) {
            (Ok(o), Ok(d)) if o.status.success() => return Ok(sha_hex(&d)),
            (Ok(o), _) => why = String::from_utf8_lossy(&o.stderr).trim().to_string(),
            (Err(e), _) => why = format!("cannot run /usr/lib/apt/apt-helper: {e}"),
        }
    }
    Err(why)
}

/// A cache entry: the tree and the mirrors' states it was built from.
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    tree: StorePath,
    releases: Vec<String>,
    stamp: String,
}

/// Build (or find) the tree of `cfg` in the store; `state_dir` holds the
/// uid map and the build logs.
pub fn build_tree(
    store: &Store,
    state_dir: &Path,
    cfg: &SystemConfig,
    t: &TreeSection,
    notes: &dyn Notes,
) -> Result<StorePath, BuildError> {
    let started = cache::now_ns();
    let spec = spec(cfg, t);
    let key = key(&spec)?;
    let cache = Cache::new(store);
    let scratch = store.cache_dir.clone();
    let states: Vec<Result<String, String>> = key
        .releases
        .iter()
        .map(|d| release_state(d, &scratch))
        .collect();
    let name = format!("rootfs-{}.json", key.key);
    if let Some(e) = cache.read::<Entry>(&name) {
        let unchanged = e.releases.len() == states.len()
            && e.releases.iter().zip(&states).all(|(was, now)| match now {
                Ok(now) => now == was,
                Err(_) => true,
            });
        if unchanged && intact(store, &e.tree, &e.stamp) {
            for (url, st) in key.releases.iter().zip(&states) {
                if let Err(why) = st {
                    notes.note(Note::Warning(&format!(
                        "cannot see whether the mirror changed ({url}: {why}); using the tree built from it before"
                    )));
                }
            }
            notes.note(Note::Progress(&format!(
                "tree unchanged; reusing {}",
                e.tree.base_name()
            )));
            return Ok(e.tree);
        }
    }
    match &spec.source {
        TreeSource::Mmdebstrap(mm) => notes.note(Note::Progress(&format!(
            "building the tree with mmdebstrap ({} packages of {}; log: {})",
            mm.packages.len(),
            mm.suite,
            state_dir
                .join("logs")
                .join(format!("build-{}.log", spec.label))
                .display()
        ))),
        TreeSource::Dir(p) => notes.note(Note::Progress(&format!(
            "importing the tree {}",
            p.display()
        ))),
    }
    // Without [kernel] image, the tree must have the kernel to take: checked
    // on the built tree before it is imported, so a tree that cannot be
    // used changes nothing in the store.
    let mut check_kernel = |root: &Path| -> Result<(), TreeError> {
        if let Some(pattern) = from_tree(cfg) {
            let name = match &spec.source {
                TreeSource::Dir(p) => p.display().to_string(),
                TreeSource::Mmdebstrap(_) => "mmdebstrap built".to_string(),
            };
            extract::pick(extract::kernels_in_dir(root), pattern, &cfg.source, &name)?;
        }
        Ok(())
    };
    let built = tree::build_tree_with(store, state_dir, &spec, &mut check_kernel)?;
    let i = &built.imported;
    notes.note(Note::Progress(&format!(
        "tree {}: {} contents, {} new ({}), image {}",
        i.object.base_name(),
        i.objects,
        i.new_objects,
        crate::units::human(i.new_object_bytes),
        crate::units::human(i.image_bytes)
    )));
    let releases: Option<Vec<String>> = states.into_iter().collect::<Result<_, _>>().ok();
    let settled = cache::settled(key.newest_change_ns, started);
    if let (Some(releases), true, Some(stamp)) =
        (releases, settled, store.metadata_stamp(&i.object))
    {
        cache.write(
            &name,
            &Entry {
                tree: i.object.clone(),
                releases,
                stamp,
            },
        );
    }
    Ok(built.imported.object)
}

/// Whether a cached tree is still in the store as it was: its metadata
/// stamp unchanged, or else it verifies.
fn intact(store: &Store, tree: &StorePath, stamp: &str) -> bool {
    match store.metadata_stamp(tree) {
        Some(now) if now == stamp => true,
        Some(_) => tree::verify_tree(store, tree).is_ok_and(|p| p.is_empty()),
        None => false,
    }
}

/// `[kernel] release` when the kernel is the `[tree]`'s
/// ([`KernelChoice::FromTree`]).
fn from_tree(cfg: &SystemConfig) -> Option<&str> {
    match &cfg.kernel.chosen {
        KernelChoice::FromTree { pattern } => Some(pattern),
        KernelChoice::Named(_) | KernelChoice::Installed { .. } => None,
    }
}

/// The newest kernel of the tree `object` whose release matches `[kernel]
/// release` ([`extract::pick`]), and what identifies it for the input
/// cache ([`extract::identity`]).
///
/// A tree object never changes, so the answer is kept in the input cache
/// (`kernel-<tree>-<release>.json`): a warm build does not read the
/// manifest again.
pub fn kernel_of(
    store: &Store,
    object: &StorePath,
    cfg: &SystemConfig,
) -> Result<(TreeKernel, String), BuildError> {
    let pattern = from_tree(cfg).unwrap_or(NEWEST);
    let cache = Cache::new(store);
    let name = format!(
        "kernel-{}-{}.json",
        object.hash,
        sha_hex(pattern.as_bytes())
    );
    if let Some(k) = cache.read::<CachedKernel>(&name) {
        if store.has(object) {
            return Ok((k.kernel, k.id));
        }
    }
    let m = tree::read_manifest(store, object)?;
    let k = extract::pick(
        extract::kernels(&m),
        pattern,
        &cfg.source,
        &object.base_name(),
    )?;
    let id = extract::identity(&m, &k);
    cache.write(
        &name,
        &CachedKernel {
            kernel: k.clone(),
            id: id.clone(),
        },
    );
    Ok((k, id))
}

/// [`kernel_of`]'s answer for one tree and `[kernel] release`.
#[derive(serde::Serialize, serde::Deserialize)]
struct CachedKernel {
    kernel: TreeKernel,
    id: String,
}

/// The tree's kernel image and module tree as files: a temporary directory
/// in the store, removed on drop.
pub struct Extracted {
    pub dir: PathBuf,
    pub image: PathBuf,
    pub modules: PathBuf,
}

impl Extracted {
    pub fn new(store: &Store, object: &StorePath, k: &TreeKernel) -> Result<Extracted, BuildError> {
        let m = tree::read_manifest(store, object)?;
        let dir = store.dir.join(format!(
            ".tmp-{}-{}-kernel",
            std::process::id(),
            crate::fsutil::tmp_number()
        ));
        std::fs::create_dir(&dir)
            .map_err(crate::fsutil::IoError::at("create", &dir))
            .map_err(crate::store::StoreError::from)?;
        let out = Extracted {
            image: dir.join(rel(&k.image)),
            modules: dir.join(rel(&k.modules)),
            dir,
        };
        let firmware = k.firmware();
        extract::extract(
            &m,
            &Objects::of(store),
            &[&k.image, &k.modules, &firmware],
            &out.dir,
        )?;
        Ok(out)
    }
}

fn rel(p: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(
        p.strip_prefix(b"/").unwrap_or(p),
    ))
}

impl Drop for Extracted {
    fn drop(&mut self) {
        // Only hard links and small files; what stays is a leftover `gc`
        // removes.
        let _ = crate::fsutil::remove_tree(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_become_store_name_parts() {
        assert_eq!(label_slug("Debian 12"), "debian-12");
        assert_eq!(label_slug("  web/1 (test) "), "web-1-test");
        assert_eq!(label_slug("..x..y"), "x.y");
        assert_eq!(label_slug("☃"), "system");
        crate::store::check_name(&format!("rootfs-{}", label_slug("a b/c..d"))).unwrap();
    }

    #[test]
    fn release_files_of_urls_and_lines() {
        let m = vec![
            "deb [trusted=yes] file:///srv/m bookworm main".to_string(),
            "http://deb.debian.org/debian/".to_string(),
        ];
        assert_eq!(
            release_urls(&m, "bookworm"),
            [
                "file:///srv/m/dists/bookworm",
                "http://deb.debian.org/debian/dists/bookworm"
            ]
        );
    }

    #[test]
    fn a_file_mirror_state_is_its_release_file() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("dists/bookworm");
        std::fs::create_dir_all(&d).unwrap();
        let url = format!("file://{}", d.display());
        assert!(release_state(&url, t.path()).is_err());
        std::fs::write(d.join("Release"), "Date: x\n").unwrap();
        let a = release_state(&url, t.path()).unwrap();
        std::fs::write(d.join("Release"), "Date: y\n").unwrap();
        assert_ne!(release_state(&url, t.path()).unwrap(), a);
    }
}
