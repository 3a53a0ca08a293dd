//! The build input cache: fingerprints of what the objects are made from
//! — paths, sizes, mtimes and inode numbers of the genboot executable, the
//! kernel image, every file of the module tree and the activator, plus the
//! configuration values that matter — mapped to the objects a build made
//! from them. Two levels: `tree-<key>.json` for the kernel and
//! kernel-modules objects (same kernel, same tree), `build-<key>.json` for
//! those plus the initrd (same initrd settings too). A warm build stats the
//! tree instead of reading 390 MB; another initrd module set re-reads only
//! the `.modinfo` sections, not the whole tree.
//!
//! A hit counts only while its objects are in the store (`gc` may have
//! removed them). The cache is advisory: a torn or unreadable entry is a
//! miss, and entries are written without fsync.

use crate::config::SystemConfig;
use crate::modules::index::TreeFile;
use crate::store::{Store, StorePath};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bump when the objects built from the same inputs change.
const CACHE_FORMAT: u32 = 1;

/// What a cached build made.
#[derive(Debug, Clone)]
pub struct Hit {
    pub release: String,
    pub kernel: StorePath,
    pub kernel_modules: StorePath,
    pub initrd: StorePath,
    pub warnings: Vec<String>,
    /// Files whose state (stamp, or absence) the result depends on beyond
    /// the fingerprint: firmware found or looked for.
    pub watch: Vec<(PathBuf, Option<Stamp>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ino: u64,
}

pub fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        size: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ino: m.ino(),
    })
}

#[derive(Serialize, Deserialize)]
struct Entry {
    release: String,
    kernel: String,
    kernel_modules: String,
    initrd: String,
    warnings: Vec<String>,
    watch: Vec<(PathBuf, Option<Stamp>)>,
}

/// The fingerprints (hex) of a build's inputs: `.0` covers what the kernel
/// and kernel-modules objects are made from (genboot, the kernel image, the
/// module tree), `.1` everything (adds the initrd settings and the
/// activator).
pub fn fingerprints(cfg: &SystemConfig, files: &[TreeFile], activator: &Path) -> (String, String) {
    let mut s = String::with_capacity(files.len() * 80);
    let _ = writeln!(
        s,
        "genboot {} cache {CACHE_FORMAT}",
        env!("CARGO_PKG_VERSION")
    );
    let file = |s: &mut String, label: &str, p: &Path| {
        let _ = writeln!(s, "{label} {} {:?}", p.display(), stamp(p));
    };
    // The program itself: a rebuilt genboot may write objects differently.
    if let Ok(exe) = std::env::current_exe() {
        file(&mut s, "genboot", &exe);
    }
    file(&mut s, "kernel", &cfg.kernel.image);
    let _ = writeln!(s, "modules-dir {}", cfg.kernel.modules.display());
    for f in files {
        let _ = writeln!(s, "{} {} {} {}", f.rel, f.size, f.mtime_ns, f.ino);
    }
    let tree = hex(&s);
    file(&mut s, "activator", activator);
    let _ = writeln!(s, "initrd-modules {:?}", cfg.initrd.modules);
    let _ = writeln!(
        s,
        "compression {} {:?} strict-firmware {}",
        cfg.initrd.compression, cfg.initrd.level, cfg.initrd.strict_firmware
    );
    (tree, hex(&s))
}

fn hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The kernel and kernel-modules objects of one kernel image and tree.
#[derive(Debug, Clone)]
pub struct TreeHit {
    pub release: String,
    pub kernel: StorePath,
    pub kernel_modules: StorePath,
}

#[derive(Serialize, Deserialize)]
struct TreeEntry {
    release: String,
    kernel: String,
    kernel_modules: String,
}

pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// `<state>/cache` for the store `<state>/store`.
    pub fn new(store: &Store) -> Cache {
        let state = store.dir.parent().unwrap_or(&store.dir);
        Cache {
            dir: state.join("cache"),
        }
    }

    /// The kernel objects for the tree fingerprint `key`, if still in the
    /// store.
    pub fn lookup_tree(&self, key: &str, store: &Store) -> Option<TreeHit> {
        let data = std::fs::read(self.dir.join(format!("tree-{key}.json"))).ok()?;
        let e: TreeEntry = serde_json::from_slice(&data).ok()?;
        let hit = TreeHit {
            release: e.release,
            kernel: StorePath::parse(&e.kernel)?,
            kernel_modules: StorePath::parse(&e.kernel_modules)?,
        };
        (store.path(&hit.kernel).is_dir() && store.path(&hit.kernel_modules).is_dir())
            .then_some(hit)
    }

    pub fn store_tree(&self, key: &str, hit: &TreeHit) {
        let e = TreeEntry {
            release: hit.release.clone(),
            kernel: hit.kernel.base_name(),
            kernel_modules: hit.kernel_modules.base_name(),
        };
        if let Ok(bytes) = serde_json::to_vec(&e) {
            self.write(&format!("tree-{key}.json"), &bytes);
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        let _ = std::fs::create_dir_all(&self.dir);
        let tmp = self.dir.join(format!(".tmp-{}-{name}", std::process::id()));
        if std::fs::write(&tmp, bytes).is_ok()
            && std::fs::rename(&tmp, self.dir.join(name)).is_err()
        {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("build-{key}.json"))
    }

    pub fn lookup(&self, key: &str, store: &Store) -> Option<Hit> {
        let data = std::fs::read(self.path(key)).ok()?;
        let e: Entry = serde_json::from_slice(&data).ok()?;
        let hit = Hit {
            release: e.release,
            kernel: StorePath::parse(&e.kernel)?,
            kernel_modules: StorePath::parse(&e.kernel_modules)?,
            initrd: StorePath::parse(&e.initrd)?,
            warnings: e.warnings,
            watch: e.watch,
        };
        let present = [&hit.kernel, &hit.kernel_modules, &hit.initrd]
            .iter()
            .all(|sp| store.path(sp).is_dir());
        let unchanged = hit.watch.iter().all(|(p, st)| stamp(p) == *st);
        (present && unchanged).then_some(hit)
    }

    /// Record a build; failures only cost the next build its speed.
    pub fn store(&self, key: &str, hit: &Hit) {
        let e = Entry {
            release: hit.release.clone(),
            kernel: hit.kernel.base_name(),
            kernel_modules: hit.kernel_modules.base_name(),
            initrd: hit.initrd.base_name(),
            warnings: hit.warnings.clone(),
            watch: hit.watch.clone(),
        };
        if let Ok(bytes) = serde_json::to_vec(&e) {
            self.write(&format!("build-{key}.json"), &bytes);
        }
    }
}
