//! The build input cache: fingerprints of what the objects are made from
//! — paths, sizes, mtimes, ctimes and inode numbers of the genboot
//! executable, the kernel image, every file of the module tree and the
//! activator, plus the configuration values that matter — mapped to the
//! objects a build made from them. Two levels: `tree-<key>.json` for the kernel and
//! kernel-modules objects (same kernel, same tree), `build-<key>.json` for
//! those plus the initrd (same initrd settings too). A warm build stats the
//! tree instead of reading 390 MB; another initrd module set re-reads only
//! the `.modinfo` sections, not the whole tree.
//!
//! The ctime is what makes a stamp trustworthy: size and mtime can be put
//! back after an edit (`touch -r`), the ctime cannot. A file changed within
//! [`RACY_NS`] before a build began may share its ctime with a later edit
//! (timestamps are as coarse as the clock tick, or a second on some file
//! systems), so such a build records no entry, as git treats "racily
//! clean" files.
//!
//! A hit counts only while its objects are in the store (`gc` may have
//! removed them) and unchanged: an entry records each object's metadata
//! stamp ([`Store::metadata_stamp`]); when it differs, the object is
//! re-hashed and the hit dropped if it no longer matches its name. The
//! cache is advisory: a torn or unreadable entry is a miss, and entries are
//! written without fsync.

use crate::config::SystemConfig;
use crate::fsutil::{self, Durability, Stamp};
use crate::modules::index::TreeFile;
use crate::store::{Store, StorePath};
use rayon::prelude::*;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Bump when the objects built from the same inputs change.
const CACHE_FORMAT: u32 = 2;

/// Inputs changed less than this before a build began are too fresh to
/// vouch for (see the module documentation): 2 s, above the timestamp
/// granularity of every Linux file system a module tree lives on.
pub const RACY_NS: i128 = 2_000_000_000;

/// What a cached build made.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// The kernel and kernel-modules objects of one kernel image and tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TreeHit {
    pub release: String,
    pub kernel: StorePath,
    pub kernel_modules: StorePath,
}

/// A cache file: what a build made, and each object's metadata stamp when
/// it was written.
#[derive(Serialize, Deserialize)]
struct Recorded<T> {
    #[serde(flatten)]
    hit: T,
    stamps: Vec<(String, String)>,
}

/// Now, in nanoseconds since the epoch (for the racy check).
pub fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// The fingerprints (hex) of a build's inputs.
#[derive(Debug, Clone)]
pub struct Fingerprints {
    /// What the kernel and kernel-modules objects are made from (genboot,
    /// the kernel image, the module tree).
    pub tree: String,
    /// Everything (adds the initrd settings and the activator).
    pub all: String,
    /// The newest change (ctime or mtime) among the input files.
    pub newest_change_ns: i128,
}

/// What the kernel and its module tree are, for a fingerprint.
#[derive(Debug, Clone, Copy)]
pub enum KernelId<'a> {
    /// Files on this machine: their paths and stamps.
    Files {
        image: &'a Path,
        modules: &'a Path,
        files: &'a [TreeFile],
    },
    /// The kernel of a tree: its release and a digest of its files in the
    /// tree's manifest (`crate::tree::extract::identity`), firmware and
    /// CPU microcode included.
    Tree(&'a str),
}

/// `microcode`: the CPU microcode files the initrd starts with (files on
/// this machine; a tree's are in its [`KernelId::Tree`]); `autodetect`:
/// what this machine's root device is (or nothing).
pub fn fingerprints(
    cfg: &SystemConfig,
    kernel: KernelId<'_>,
    activator: &Path,
    microcode: &[&Path],
    autodetect: &str,
) -> Fingerprints {
    let mut newest = i128::MIN;
    let mut s = String::with_capacity(80);
    let _ = writeln!(
        s,
        "genboot {} cache {CACHE_FORMAT}",
        env!("CARGO_PKG_VERSION")
    );
    let mut file = |s: &mut String, label: &str, p: &Path| {
        let st = Stamp::of_path(p);
        if let Some(st) = &st {
            newest = newest.max(st.changed_ns());
        }
        let _ = writeln!(s, "{label} {} {st:?}", p.display());
    };
    // The program itself: a rebuilt genboot may write objects differently.
    if let Ok(exe) = std::env::current_exe() {
        file(&mut s, "genboot", &exe);
    }
    let mut tree_files: &[TreeFile] = &[];
    match kernel {
        KernelId::Files {
            image,
            modules,
            files,
        } => {
            file(&mut s, "kernel", image);
            let _ = writeln!(s, "modules-dir {}", modules.display());
            for f in files {
                let st = &f.stamp;
                let _ = writeln!(
                    s,
                    "{} {} {} {} {}",
                    f.rel, st.size, st.mtime_ns, st.ctime_ns, st.ino
                );
            }
            tree_files = files;
        }
        KernelId::Tree(id) => {
            let _ = writeln!(s, "tree-kernel {id}");
        }
    }
    let tree = hex(&s);
    file(&mut s, "activator", activator);
    for m in microcode {
        file(&mut s, "microcode", m);
    }
    s.push_str(autodetect);
    let _ = writeln!(s, "initrd-modules {:?}", cfg.initrd.modules);
    if cfg.tree.is_some() {
        // The initrd also carries overlay, erofs and loop.
        let _ = writeln!(
            s,
            "tree-initrd-modules {:?}",
            genboot_format::TREE_INITRD_MODULES
        );
    }
    let _ = writeln!(
        s,
        "compression {} {:?} strict-firmware {} microcode {}",
        cfg.initrd.compression, cfg.initrd.level, cfg.initrd.strict_firmware, cfg.initrd.microcode
    );
    for f in tree_files {
        newest = newest.max(f.stamp.changed_ns());
    }
    Fingerprints {
        tree,
        all: hex(&s),
        newest_change_ns: newest,
    }
}

/// Whether inputs whose newest change is `newest_ns` may be recorded for a
/// build that began at `started_ns`: not when they changed within
/// [`RACY_NS`] of it (or after it).
pub fn settled(newest_ns: i128, started_ns: i128) -> bool {
    newest_ns < started_ns - RACY_NS
}

fn hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub struct Cache {
    dir: PathBuf,
}

/// Each object's metadata stamp, for an entry.
fn stamps_of(store: &Store, objects: &[&StorePath]) -> Option<Vec<(String, String)>> {
    objects
        .par_iter()
        .map(|sp| Some((sp.base_name(), store.metadata_stamp(sp)?)))
        .collect()
}

/// Whether the objects of an entry are still there and as they were: a
/// changed metadata stamp is a doubt, settled by re-hashing the object.
/// `Some(true)` when they are intact but a stamp changed (the entry should
/// be written again with the new stamps), `None` when one is not intact.
fn intact(store: &Store, objects: &[&StorePath], recorded: &[(String, String)]) -> Option<bool> {
    let now: Vec<Option<String>> = objects
        .par_iter()
        .map(|sp| store.metadata_stamp(sp))
        .collect();
    let mut changed = false;
    for (sp, now) in objects.iter().zip(now) {
        let now = now?;
        let was = recorded.iter().find(|(n, _)| *n == sp.base_name());
        if was.is_some_and(|(_, st)| *st == now) {
            continue;
        }
        if !matches!(store.verify_object(sp), Ok(None)) {
            return None;
        }
        changed = true;
    }
    Some(changed)
}

impl Hit {
    fn objects(&self) -> [&StorePath; 3] {
        [&self.kernel, &self.kernel_modules, &self.initrd]
    }
}

impl TreeHit {
    fn objects(&self) -> [&StorePath; 2] {
        [&self.kernel, &self.kernel_modules]
    }
}

impl Cache {
    /// The store's input cache (`<state>/cache`).
    pub fn new(store: &Store) -> Cache {
        Cache {
            dir: store.cache_dir.clone(),
        }
    }

    /// The kernel objects for the tree fingerprint `key`, if still in the
    /// store and intact.
    pub fn lookup_tree(&self, key: &str, store: &Store) -> Option<TreeHit> {
        let e: Recorded<TreeHit> = self.read(&format!("tree-{key}.json"))?;
        if intact(store, &e.hit.objects(), &e.stamps)? {
            self.store_tree(key, &e.hit, store);
        }
        Some(e.hit)
    }

    pub fn store_tree(&self, key: &str, hit: &TreeHit, store: &Store) {
        if let Some(stamps) = stamps_of(store, &hit.objects()) {
            self.write(&format!("tree-{key}.json"), &Recorded { hit, stamps });
        }
    }

    pub fn lookup(&self, key: &str, store: &Store) -> Option<Hit> {
        let e: Recorded<Hit> = self.read(&format!("build-{key}.json"))?;
        if !e.hit.watch.iter().all(|(p, st)| Stamp::of_path(p) == *st) {
            return None;
        }
        if intact(store, &e.hit.objects(), &e.stamps)? {
            self.store(key, &e.hit, store);
        }
        Some(e.hit)
    }

    /// Record a build; failures only cost the next build its speed.
    pub fn store(&self, key: &str, hit: &Hit, store: &Store) {
        if let Some(stamps) = stamps_of(store, &hit.objects()) {
            self.write(&format!("build-{key}.json"), &Recorded { hit, stamps });
        }
    }

    /// A cache file; a missing, unreadable or torn one is a miss.
    pub(super) fn read<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        let data = fsutil::read_own_file(&self.dir.join(name), "cache entry")
            .ok()
            .flatten()?;
        serde_json::from_slice(&data).ok()
    }

    /// Write a cache file; failures only cost the next build its speed.
    pub(super) fn write<T: Serialize>(&self, name: &str, value: &T) {
        let Ok(bytes) = serde_json::to_vec(value) else {
            return;
        };
        if std::fs::create_dir_all(&self.dir).is_ok() {
            // Advisory: a cache file that cannot be written is a miss later.
            let _ = fsutil::replace_file(&self.dir.join(name), &bytes, Durability::Cached);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SystemConfig {
        SystemConfig::parse(
            "[kernel]\nimage = \"/nonexistent/vmlinuz\"\nmodules = \"/nonexistent/modules\"\n\
             [root]\ndevice = \"LABEL=root\"\n[system]\nlabel = \"T\"\n",
            Path::new("/etc/genboot/system.toml"),
        )
        .unwrap()
    }

    fn file(ctime_ns: i128) -> TreeFile {
        TreeFile {
            rel: "kernel/fs/x.ko".into(),
            stamp: Stamp {
                size: 100,
                mtime_ns: 1_000_000_000,
                ctime_ns,
                ino: 7,
            },
        }
    }

    #[test]
    fn an_edit_with_size_and_mtime_restored_changes_the_fingerprint() {
        let id = |files| KernelId::Files {
            image: Path::new("/nonexistent/vmlinuz"),
            modules: Path::new("/nonexistent/modules"),
            files,
        };
        let none = Path::new("/nonexistent");
        let (fa, fb) = ([file(5_000_000_000)], [file(5_000_000_001)]);
        let a = fingerprints(&cfg(), id(&fa), none, &[], "");
        let b = fingerprints(&cfg(), id(&fb), none, &[], "");
        let t = fingerprints(&cfg(), KernelId::Tree("x-rootfs-a 6.1"), none, &[], "");
        assert_ne!(t.tree, a.tree);
        // Another machine's root device: the same kernel, another initrd.
        let t2 = fingerprints(&cfg(), KernelId::Tree("x-rootfs-a 6.1"), none, &[], "sda");
        assert_eq!(t2.tree, t.tree);
        assert_ne!(t2.all, t.all);
        assert_ne!(a.tree, b.tree);
        assert_ne!(a.all, b.all);
        assert!(b.newest_change_ns >= 5_000_000_001);
    }

    #[test]
    fn fresh_inputs_are_not_recorded() {
        let started = 100 * RACY_NS;
        assert!(settled(started - RACY_NS - 1, started));
        assert!(!settled(started - RACY_NS, started));
        assert!(!settled(started + 1, started));
    }
}
