//! Building a generation from a configuration: the kernel object, the
//! kernel-modules and initrd objects, and the generation object holding
//! `boot.json` and links to them.

pub mod bootjson;
mod cache;
pub mod kernel;
pub mod tree;

use self::bootjson::{BootJson, BootspecV1, GenbootV1, RootSpec};
use crate::config::SystemConfig;
use crate::fsutil::Stamp;
use crate::hint::Hint;
use crate::initrd::{self, InitrdError};
use crate::modules::{self, modinfo::ModuleCompression, ModuleIndex, ModulesError};
use crate::notes::{Note, Notes};
use crate::state::STORE_DIR;
use crate::store::{BuildOptions, Store, StoreError, StoreLock, StorePath};
use genboot_format::storehash::SELF_MASK;
use genboot_format::{GENERATION_FORMAT, GENERATION_NAME_PREFIX};
use rayon::prelude::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Kernel(#[from] kernel::KernelError),
    #[error(transparent)]
    Modules(#[from] ModulesError),
    #[error(transparent)]
    Initrd(#[from] InitrdError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tree(#[from] crate::tree::TreeError),
}

impl Hint for BuildError {
    fn hint(&self) -> Option<String> {
        match self {
            BuildError::Kernel(e) => e.hint(),
            BuildError::Modules(e) => e.hint(),
            BuildError::Initrd(e) => e.hint(),
            BuildError::Store(e) => e.hint(),
            BuildError::Tree(e) => e.hint(),
        }
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub generation: StorePath,
    pub kernel: StorePath,
    pub initrd: Option<StorePath>,
    pub kernel_modules: Option<StorePath>,
    /// The `[tree]`'s tree object.
    pub tree: Option<StorePath>,
    pub boot: BootJson,
}

/// Build the generation for `cfg` into `store`, under the store's lock
/// (shared: builds run side by side, `gc` waits for them). `state_dir`
/// holds the uid map and build logs of trees. Progress and warnings go to
/// `notes`.
///
/// A `[tree]` is built or found first ([`tree::build_tree`]); without
/// `[kernel] image`, its kernel is the generation's. Everything else is
/// checked before anything is written: a bad kernel image, module tree,
/// module name or missing strict firmware leaves the store as it was. The
/// kernel, kernel-modules and initrd objects of unchanged inputs are found
/// through the input cache (`<state>/cache/`) without reading the module
/// tree again.
pub fn build(
    store: &Store,
    state_dir: &Path,
    cfg: &SystemConfig,
    _lock: &StoreLock,
    notes: &dyn Notes,
) -> Result<Built, BuildError> {
    let tree = match &cfg.tree {
        Some(t) => Some(tree::build_tree(store, state_dir, cfg, t, notes)?),
        None => None,
    };
    match (cfg.kernel.files(), &tree) {
        (Some(f), _) => {
            let from = KernelFrom::Files {
                image: &f.image,
                modules: &f.modules,
            };
            build_with(store, cfg, from, tree.clone(), notes)
        }
        (None, Some(object)) => {
            let (kernel, id) = tree::kernel_of(store, object, cfg)?;
            let from = KernelFrom::Tree {
                object,
                kernel: &kernel,
                id: &id,
            };
            build_with(store, cfg, from, tree.clone(), notes)
        }
        // The configuration makes this impossible: the tree's kernel is
        // chosen only with a [tree].
        (None, None) => Err(crate::tree::TreeError::Kernel {
            what: format!(
                "{}: [kernel] takes the [tree]'s kernel, but there is no [tree]",
                cfg.source.display()
            ),
            hint: "name the kernel image and modules, or add a [tree]".into(),
        }
        .into()),
    }
}

/// Where the kernel and its modules come from.
#[derive(Clone, Copy)]
enum KernelFrom<'a> {
    Files {
        image: &'a Path,
        modules: &'a Path,
    },
    Tree {
        object: &'a StorePath,
        kernel: &'a crate::tree::extract::TreeKernel,
        /// Its content's identity, for the input cache.
        id: &'a str,
    },
}

/// The kernel image and module tree as files to read. `link`: the module
/// files are content objects (a tree's), so the kernel-modules object
/// links them instead of copying.
struct KernelFiles {
    image: PathBuf,
    modules: PathBuf,
    link: bool,
}

fn build_with(
    store: &Store,
    cfg: &SystemConfig,
    from: KernelFrom<'_>,
    tree: Option<StorePath>,
    notes: &dyn Notes,
) -> Result<Built, BuildError> {
    let step = |what: &str| notes.note(Note::Progress(what));
    let started_ns = cache::now_ns();
    let activator = initrd::find_activator(cfg.initrd.activator.as_deref())?;
    // This machine's root device, for [initrd] autodetect: part of the
    // inputs (other hardware, another initrd).
    let facts = if cfg.initrd.autodetect {
        Some(
            modules::autodetect::this_machine()
                .map_err(|what| ModulesError::Autodetect { what })?,
        )
    } else {
        None
    };
    let facts_text = facts.as_ref().map(|f| f.fingerprint()).unwrap_or_default();
    // A kernel on this machine is read now: its files and microcode are
    // inputs. A tree's is known by its identity; its files are read only
    // when the cache has no answer.
    let (local, prints) = match from {
        KernelFrom::Files { image, modules } => {
            let files = modules::index::walk(modules)?;
            let microcode = microcode(cfg, modules);
            let id = cache::KernelId::Files {
                image,
                modules,
                files: &files,
            };
            let paths = microcode_paths(&microcode);
            let prints = cache::fingerprints(cfg, id, &activator, &paths, &facts_text);
            (Some((files, microcode)), prints)
        }
        KernelFrom::Tree { id, .. } => {
            let id = cache::KernelId::Tree(id);
            let prints = cache::fingerprints(cfg, id, &activator, &[], &facts_text);
            (None, prints)
        }
    };
    // Inputs changed just before the build cannot vouch for a later build.
    let record = cache::settled(prints.newest_change_ns, started_ns);
    let cache = cache::Cache::new(store);
    if let Some(hit) = cache.lookup(&prints.all, store) {
        step("inputs unchanged; reusing the kernel, modules and initrd objects");
        for w in &hit.warnings {
            notes.note(Note::Warning(w));
        }
        let parts = Parts {
            kernel: hit.kernel,
            initrd: Some(hit.initrd),
            kernel_modules: Some(hit.kernel_modules),
            tree,
        };
        return assemble(store, cfg, &hit.release, parts, notes);
    }

    let (kf, extracted) = kernel_files(store, from, notes)?;
    let (files, microcode) = match local {
        Some(read) => read,
        None => (
            modules::index::walk(&kf.modules)?,
            microcode(cfg, &kf.modules),
        ),
    };

    // The same kernel and tree with other initrd settings: keep the kernel
    // and kernel-modules objects, build only the initrd.
    let tree_hit = cache.lookup_tree(&prints.tree, store);
    let release = match &tree_hit {
        Some(hit) => hit.release.clone(),
        None => {
            step("reading the kernel image");
            kernel::inspect(&kf.image)?.release
        }
    };
    let kver = release.as_str();
    // A release that cannot name store objects is refused before the tree is read.
    crate::store::check_name(&format!("kernel-modules-{kver}"))?;
    let inputs = read_modules(cfg, &kf.modules, kver, &files, facts.as_ref(), notes)?;
    let record = record
        && inputs.watch.iter().all(|(_, st)| {
            st.as_ref()
                .is_none_or(|s| cache::settled(s.changed_ns(), started_ns))
        });
    let mut watch = inputs.watch.clone();
    for file in &inputs.missing {
        for p in modules::firmware::firmware_candidates(&inputs.fw_dir, kver, file) {
            watch.push((p, None));
        }
    }
    if extracted.is_some() {
        // The tree's firmware is as immutable as the tree (and the
        // extracted files go away).
        watch.clear();
    }

    let (kernel, kernel_modules, built_tree) = match tree_hit {
        Some(hit) => {
            step("module tree unchanged; reusing the kernel and kernel-modules objects");
            (hit.kernel, hit.kernel_modules, false)
        }
        None => {
            let (k, m) = kernel_objects(store, &kf, &inputs.index, &files, notes)?;
            (k, m, true)
        }
    };
    let initrd_obj = initrd_object(store, cfg, &inputs, &activator, &microcode, notes)?;
    // The extracted files go before the cache records the objects' stamps:
    // a tree's kernel-modules object shares their inodes (link counts).
    drop(extracted);
    if record {
        if built_tree {
            let hit = cache::TreeHit {
                release: kver.to_string(),
                kernel: kernel.clone(),
                kernel_modules: kernel_modules.clone(),
            };
            cache.store_tree(&prints.tree, &hit, store);
        }
        let hit = cache::Hit {
            release: kver.to_string(),
            kernel: kernel.clone(),
            kernel_modules: kernel_modules.clone(),
            initrd: initrd_obj.clone(),
            warnings: inputs.warnings,
            watch,
        };
        cache.store(&prints.all, &hit, store);
    }
    let parts = Parts {
        kernel,
        initrd: Some(initrd_obj),
        kernel_modules: Some(kernel_modules),
        tree,
    };
    let built = assemble(store, cfg, kver, parts, notes);
    step("done");
    built
}

/// The kernel image and module tree to read: files on this machine, or a
/// tree's, extracted (linked out of the content objects) into a temporary
/// directory that goes away with the returned [`tree::Extracted`].
fn kernel_files(
    store: &Store,
    from: KernelFrom<'_>,
    notes: &dyn Notes,
) -> Result<(KernelFiles, Option<tree::Extracted>), BuildError> {
    Ok(match from {
        KernelFrom::Files { image, modules } => {
            let kf = KernelFiles {
                image: image.to_path_buf(),
                modules: modules.to_path_buf(),
                link: false,
            };
            (kf, None)
        }
        KernelFrom::Tree { object, kernel, .. } => {
            notes.note(Note::Progress(&format!(
                "taking kernel {} from the tree",
                kernel.release
            )));
            let x = tree::Extracted::new(store, object, kernel)?;
            let kf = KernelFiles {
                image: x.image.clone(),
                modules: x.modules.clone(),
                link: true,
            };
            (kf, Some(x))
        }
    })
}

/// The CPU microcode beside a module tree's firmware, when `[initrd]
/// microcode` (the default) wants it.
fn microcode(cfg: &SystemConfig, modules: &Path) -> Vec<(&'static str, Vec<PathBuf>)> {
    if cfg.initrd.microcode {
        initrd::microcode_files(&firmware_dir(modules))
    } else {
        Vec::new()
    }
}

fn microcode_paths<'a>(microcode: &'a [(&'static str, Vec<PathBuf>)]) -> Vec<&'a Path> {
    microcode
        .iter()
        .flat_map(|(_, ps)| ps.iter().map(PathBuf::as_path))
        .collect()
}

/// The module tree as the initrd needs it: the index, the closure of the
/// configured modules and their firmware.
struct ModuleInputs {
    index: ModuleIndex,
    closure: modules::Closure,
    firmware: Vec<modules::firmware::Firmware>,
    fw_dir: PathBuf,
    /// Firmware named but not found (built without, with a warning).
    missing: Vec<String>,
    warnings: Vec<String>,
    /// Firmware files found or refused, with their stamps: the cache entry
    /// holds only while they stay as they are.
    watch: Vec<(PathBuf, Option<Stamp>)>,
}

/// Read the module tree, resolve the configured modules and their firmware;
/// missing firmware is an error with `strict_firmware`, else a warning.
fn read_modules(
    cfg: &SystemConfig,
    modules_dir: &Path,
    kver: &str,
    files: &[modules::index::TreeFile],
    facts: Option<&modules::autodetect::Facts>,
    notes: &dyn Notes,
) -> Result<ModuleInputs, BuildError> {
    let module_count = files
        .iter()
        .filter(|f| {
            ModuleCompression::of_file_name(f.rel.rsplit('/').next().unwrap_or("")).is_some()
        })
        .count();
    notes.note(Note::Progress(&format!("parsing {module_count} modules")));
    let index = ModuleIndex::read(modules_dir, kver, files)?;
    let mut wanted = cfg.initrd.modules.clone();
    if let Some(facts) = facts {
        wanted.extend(autodetected(facts, &index, notes));
    }
    let tree_warnings = if cfg.tree.is_some() {
        add_tree_modules(&index, kver, &mut wanted)
    } else {
        Vec::new()
    };
    let closure = modules::closure(&index, &wanted)?;
    let fw_dir = firmware_dir(modules_dir);
    let modules::firmware::Found {
        files: firmware,
        missing,
        refused,
        refused_paths,
    } = modules::firmware::firmware(&index, &closure, &fw_dir, cfg.initrd.strict_firmware)?;
    let mut warnings = tree_warnings;
    warnings.extend(refused);
    let mut missing_files = Vec::new();
    for (module, file) in missing {
        if cfg.initrd.strict_firmware {
            return Err(ModulesError::MissingFirmware {
                module,
                file,
                dir: fw_dir,
            }
            .into());
        }
        warnings.push(format!(
            "firmware {file} named by module {module} is not in {}; the initrd is built without it",
            fw_dir.display()
        ));
        missing_files.push(file);
    }
    for w in &warnings {
        notes.note(Note::Warning(w));
    }
    let watch = firmware
        .iter()
        .map(|f| f.source.clone())
        .chain(refused_paths)
        .map(|p| {
            let stamp = Stamp::of_path(&p);
            (p, stamp)
        })
        .collect();
    Ok(ModuleInputs {
        index,
        closure,
        firmware,
        fw_dir,
        missing: missing_files,
        warnings,
        watch,
    })
}

/// With a `[tree]`, genboot-init mounts the tree with overlayfs, EROFS
/// and loop devices ([`genboot_format::TREE_INITRD_MODULES`]): each the
/// kernel has (a module, or built in) joins `wanted` unless it is there
/// already. One the kernel lacks gives a warning (returned): the
/// generation is built, but cannot boot its tree.
fn add_tree_modules(index: &ModuleIndex, kver: &str, wanted: &mut Vec<String>) -> Vec<String> {
    let mut warnings = Vec::new();
    for m in genboot_format::TREE_INITRD_MODULES {
        if matches!(index.resolve(m), modules::closure::Resolved::Unknown) {
            warnings.push(format!(
                "kernel {kver} has no {m} (as a module or built in): genboot-init mounts a [tree] with {}, so this generation cannot boot its tree; use a kernel that has them (Debian's do)",
                genboot_format::TREE_INITRD_MODULES.join(", ")
            ));
        } else if !wanted.iter().any(|w| w == m) {
            wanted.push(m.to_string());
        }
    }
    warnings
}

/// The modules [`modules::autodetect`] finds for this machine's root
/// device in `index`, told as a note; devices nothing matches, as warnings.
fn autodetected(
    facts: &modules::autodetect::Facts,
    index: &ModuleIndex,
    notes: &dyn Notes,
) -> Vec<String> {
    let d = modules::autodetect::resolve(facts, index);
    notes.note(Note::Info(&format!(
        "autodetect: the root ({}, {}) needs {} in {}",
        facts.source,
        if facts.fstype.is_empty() {
            "file system type unknown"
        } else {
            &facts.fstype
        },
        if d.why.is_empty() {
            "no module".to_string()
        } else {
            d.why.join(", ")
        },
        index.release
    )));
    for u in &d.unmatched {
        notes.note(Note::Warning(&format!(
            "autodetect: nothing in the modules of {} matches {u}; if that kernel needs a module for it, add it to [initrd] modules",
            index.release
        )));
    }
    d.modules
}

/// The kernel and kernel-modules objects.
fn kernel_objects(
    store: &Store,
    kf: &KernelFiles,
    index: &ModuleIndex,
    files: &[modules::index::TreeFile],
    notes: &dyn Notes,
) -> Result<(StorePath, StorePath), BuildError> {
    let kver = &index.release;
    let opts = BuildOptions {
        notes,
        ..BuildOptions::default()
    };
    notes.note(Note::Progress("copying the kernel"));
    let kernel = store.build(&format!("linux-{kver}"), opts, |dir| {
        kernel::copy_image(&kf.image, &dir.join("bzImage"))
    })?;
    notes.note(Note::Progress(&format!(
        "copying and hashing {} module files, writing kmod indexes",
        index.modules.len()
    )));
    let kernel_modules = store.build(&format!("kernel-modules-{kver}"), opts, |dir| {
        fill_kernel_modules(dir, index, files, kf.link)
    })?;
    Ok((kernel, kernel_modules))
}

/// The initrd object: activator, modules, firmware, manifest; compressed;
/// behind the uncompressed early archive of CPU `microcode` when there is
/// some.
fn initrd_object(
    store: &Store,
    cfg: &SystemConfig,
    inputs: &ModuleInputs,
    activator: &Path,
    microcode: &[(&'static str, Vec<PathBuf>)],
    notes: &dyn Notes,
) -> Result<StorePath, BuildError> {
    let step = |what: &str| notes.note(Note::Progress(what));
    step(&format!(
        "writing the initrd ({} modules, {} firmware files)",
        inputs.closure.modules.len(),
        inputs.firmware.len()
    ));
    let members = initrd::members(&initrd::Contents {
        index: &inputs.index,
        closure: &inputs.closure,
        firmware: &inputs.firmware,
        activator,
    })?;
    let archive = initrd::cpio(&members);
    step(&format!(
        "compressing the initrd ({}, {} bytes)",
        cfg.initrd.compression,
        archive.len()
    ));
    let mut compressed = initrd::compress(&archive, cfg.initrd.compression, cfg.initrd.level)?;
    if let Some(mut early) = initrd::early_microcode(microcode)? {
        for (name, files) in microcode {
            step(&format!(
                "CPU microcode: {name} from {} file(s) as the early archive",
                files.len()
            ));
        }
        early.append(&mut compressed);
        compressed = early;
    }
    let opts = BuildOptions {
        notes,
        ..BuildOptions::default()
    };
    let kver = &inputs.index.release;
    let initrd = store.build(&format!("initrd-{kver}"), opts, |dir| {
        std::fs::write(dir.join("initrd"), &compressed)
    })?;
    step(&format!("initrd: {} bytes", compressed.len()));
    Ok(initrd)
}

/// Where firmware for a module tree lives: `<root>/lib/firmware` for
/// `<root>/lib/modules/<release>`.
pub fn firmware_dir(modules: &Path) -> PathBuf {
    modules
        .parent()
        .and_then(Path::parent)
        .map(|lib| lib.join("firmware"))
        .unwrap_or_else(|| PathBuf::from("/lib/firmware"))
}

/// The kernel-modules object: `lib/modules/<release>/` with every file of
/// the tree byte for byte, and the kmod index files. `link`: the files are
/// the store's own read-only content objects (a tree's), hard-linked
/// instead of copied, so a tree's modules are stored once.
pub fn fill_kernel_modules(
    dir: &Path,
    index: &ModuleIndex,
    files: &[modules::index::TreeFile],
    link: bool,
) -> std::io::Result<()> {
    let root = dir.join("lib/modules").join(&index.release);
    std::fs::create_dir_all(&root)?;
    let mut dirs: BTreeSet<&str> = BTreeSet::new();
    for f in files {
        if let Some((parent, _)) = f.rel.rsplit_once('/') {
            dirs.insert(parent);
        }
    }
    for d in &dirs {
        std::fs::create_dir_all(root.join(d))?;
    }
    files.par_iter().try_for_each(|f| {
        let (from, to) = (index.dir.join(&f.rel), root.join(&f.rel));
        if link {
            std::fs::hard_link(from, to)
        } else {
            std::fs::copy(from, to).map(|_| ())
        }
    })?;
    modules::kmod::write_index_files(index, &root)
}

/// The kernel command line a generation boots with, except `init=`.
pub fn kernel_params(cfg: &SystemConfig) -> Vec<String> {
    let mut p = vec![
        format!("root={}", cfg.root.device),
        format!("rootfstype={}", cfg.root.fstype),
    ];
    let mut flags: Vec<&str> = Vec::new();
    let mut rw = "rw";
    for o in cfg.root.options.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" | "rw" => rw = o,
            other => flags.push(other),
        }
    }
    p.push(rw.to_string());
    if !flags.is_empty() {
        p.push(format!("rootflags={}", flags.join(",")));
    }
    p.extend(cfg.kernel.params.iter().cloned());
    p
}

/// The objects a generation links to.
#[derive(Debug, Clone)]
pub struct Parts {
    pub kernel: StorePath,
    pub initrd: Option<StorePath>,
    pub kernel_modules: Option<StorePath>,
    /// The `[tree]`'s tree object.
    pub tree: Option<StorePath>,
}

/// Write the generation object from its parts.
pub fn assemble(
    store: &Store,
    cfg: &SystemConfig,
    kver: &str,
    parts: Parts,
    notes: &dyn Notes,
) -> Result<Built, BuildError> {
    let Parts {
        kernel,
        initrd,
        kernel_modules,
        tree,
    } = parts;
    let persist = cfg.tree.as_ref().and_then(|t| t.persist.clone());
    let tree_ref = tree
        .as_ref()
        .map(|t| tree_ref(store, t, persist))
        .transpose()?;
    let name = format!("{GENERATION_NAME_PREFIX}{kver}");
    let mask = std::str::from_utf8(SELF_MASK).expect("mask is ASCII");
    let toplevel = format!("{STORE_DIR}/{mask}-{name}");
    let boot = BootJson {
        bootspec: BootspecV1 {
            system: "x86_64-linux".into(),
            init: format!("{toplevel}/init"),
            initrd: initrd.as_ref().map(|i| format!("{}/initrd", i.boot_path())),
            kernel: format!("{}/bzImage", kernel.boot_path()),
            kernel_params: kernel_params(cfg),
            label: cfg.system.label.clone(),
            toplevel: toplevel.clone(),
        },
        genboot: GenbootV1 {
            format: GENERATION_FORMAT,
            kernel_release: kver.to_string(),
            initrd_modules: cfg.initrd.modules.clone(),
            kernel_modules: kernel_modules.as_ref().map(StorePath::boot_path),
            root: RootSpec {
                device: cfg.root.device.clone(),
                fstype: cfg.root.fstype.clone(),
                options: cfg.root.options.clone(),
            },
            stage2_init: cfg.system.init.clone(),
            tries: cfg.boot.tries,
            tree: tree_ref,
        },
    };
    let bytes = boot.to_bytes();
    let opts = BuildOptions {
        self_refs: true,
        external_links: &["init"],
        notes,
    };
    let generation = store.build(&name, opts, |dir| -> std::io::Result<()> {
        use std::os::unix::fs::symlink;
        std::fs::write(dir.join("boot.json"), &bytes)?;
        symlink(&cfg.system.init, dir.join("init"))?;
        symlink(
            format!("../{}/bzImage", kernel.base_name()),
            dir.join("kernel"),
        )?;
        if let Some(i) = &initrd {
            symlink(format!("../{}/initrd", i.base_name()), dir.join("initrd"))?;
        }
        if let Some(m) = &kernel_modules {
            symlink(format!("../{}", m.base_name()), dir.join("kernel-modules"))?;
        }
        if let Some(t) = &tree {
            symlink(format!("../{}", t.base_name()), dir.join("tree"))?;
        }
        Ok(())
    })?;
    // What landed names itself by its real hash.
    let real = |s: String| s.replace(mask, generation.hash.as_str());
    let mut boot = boot;
    boot.bootspec.init = real(boot.bootspec.init);
    boot.bootspec.toplevel = real(boot.bootspec.toplevel);
    Ok(Built {
        generation,
        kernel,
        initrd,
        kernel_modules,
        tree,
        boot,
    })
}

/// What `boot.json` says about a tree object.
fn tree_ref(
    store: &Store,
    t: &StorePath,
    persist: Option<Vec<String>>,
) -> Result<bootjson::TreeRef, BuildError> {
    use sha2::Digest;
    let image = store.path(t).join(crate::tree::IMAGE_FILE);
    let data = std::fs::read(&image)
        .map_err(crate::fsutil::IoError::at("read", &image))
        .map_err(StoreError::from)?;
    Ok(bootjson::TreeRef {
        object: t.boot_path(),
        image: format!("{}/{}", t.boot_path(), crate::tree::IMAGE_FILE),
        image_sha256: genboot_format::hex(&sha2::Sha256::digest(&data)),
        objects: format!("{STORE_DIR}/{}", crate::tree::objects::OBJECTS_DIR),
        persist,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notes::Silent;

    /// A configuration with the test kernel `package` (unpacked in
    /// `$GENBOOT_KERNEL_CACHE`, default `target/kernels`) and `extra` TOML.
    fn cfg_with(package: &str, extra: &str) -> (SystemConfig, PathBuf, String) {
        let cache = std::env::var_os("GENBOOT_KERNEL_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/kernels"));
        let dir = cache.join(package);
        let release = std::fs::read_dir(dir.join("lib/modules"))
            .ok()
            .and_then(|mut rd| rd.next())
            .and_then(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .unwrap_or_else(|| {
                panic!(
                    "test kernel {package} is not unpacked in {}: run `GENBOOT_KERNEL_CACHE={} tools/fetch-kernels {package}`",
                    cache.display(),
                    cache.display()
                )
            });
        let modules = dir.join("lib/modules").join(&release);
        let image = dir.join("boot").join(format!("vmlinuz-{release}"));
        (cfg(&image, &modules, extra), modules, release)
    }

    /// A configuration with the kernel `image` and `modules` and `extra` TOML.
    fn cfg(image: &Path, modules: &Path, extra: &str) -> SystemConfig {
        let text = format!(
            "[kernel]\nimage = \"{}\"\nmodules = \"{}\"\n\
             [initrd]\nmodules = [\"virtio_blk\", \"virtio_pci\", \"ext4\", \"vfat\"]\n\
             [root]\ndevice = \"LABEL=root\"\n[system]\nlabel = \"T\"\n{extra}",
            image.display(),
            modules.display(),
        );
        SystemConfig::parse(&text, Path::new("/etc/genboot/system.toml")).unwrap()
    }

    fn nowhere(extra: &str) -> SystemConfig {
        cfg(
            Path::new("/nonexistent/vmlinuz"),
            Path::new("/nonexistent/modules"),
            extra,
        )
    }

    const TREE: &str = "[tree]\nsource = \"dir\"\npath = \"/srv/rootfs\"\n";

    /// An index with `modules` (no dependencies) and `builtin`.
    fn index(modules: &[&str], builtin: &[&str]) -> ModuleIndex {
        ModuleIndex {
            dir: PathBuf::from("/t"),
            release: "r".into(),
            modules: modules
                .iter()
                .map(|m| {
                    let info = crate::modules::ModuleInfo {
                        name: m.to_string(),
                        path: format!("kernel/{m}.ko"),
                        order: 0,
                        info: Default::default(),
                    };
                    (m.to_string(), info)
                })
                .collect(),
            builtin: builtin.iter().map(|s| s.to_string()).collect(),
            builtin_paths: vec![],
            builtin_aliases: vec![],
        }
    }

    #[test]
    fn a_tree_asks_for_overlay_erofs_and_loop_once_and_warns_for_one_the_kernel_lacks() {
        let mut wanted = vec!["virtio_blk".to_string(), "loop".to_string()];
        let idx = index(&["virtio_blk", "overlay", "erofs", "loop"], &[]);
        assert!(add_tree_modules(&idx, "r", &mut wanted).is_empty());
        assert_eq!(wanted, ["virtio_blk", "loop", "overlay", "erofs"]);
        // Built in counts; missing is a warning naming the kernel.
        let mut wanted = vec!["virtio_blk".to_string()];
        let idx = index(&["virtio_blk", "overlay"], &["loop"]);
        let w = add_tree_modules(&idx, "6.1.0-1-synthetic", &mut wanted);
        assert_eq!(wanted, ["virtio_blk", "overlay", "loop"]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("kernel 6.1.0-1-synthetic has no erofs (as a module or built in)"),
            "{w:?}"
        );
    }

    #[test]
    fn the_initrd_of_a_tree_generation_carries_overlay_erofs_loop_and_their_closure() {
        // Debian 12's 6.1 and 6.12 (with .ko.xz): erofs depends on
        // libcrc32c, whose softdep pulls crc32c; none of it without a tree.
        for package in [
            "linux-image-6.1.0-47-cloud-amd64",
            "linux-image-6.12.117+deb12-amd64",
        ] {
            let closure = |extra: &str| {
                let (cfg, modules, release) = cfg_with(package, extra);
                let files = modules::index::walk(&modules).unwrap();
                read_modules(&cfg, &modules, &release, &files, None, &Silent)
                    .unwrap()
                    .closure
                    .modules
            };
            let (plain, tree) = (closure(""), closure(TREE));
            let added: Vec<&String> = tree.iter().filter(|m| !plain.contains(m)).collect();
            for m in ["overlay", "erofs", "loop", "libcrc32c"] {
                assert!(
                    added.iter().any(|a| *a == m),
                    "{package}: {m} not added: {added:?}"
                );
                assert!(
                    !plain.contains(&m.to_string()),
                    "{package}: {m} without a tree"
                );
            }
            assert!(
                added.iter().any(|a| a.starts_with("crc32c"))
                    || plain.iter().any(|a| a.starts_with("crc32c")),
                "{package}: libcrc32c's crc32c: {tree:?}"
            );
            // Dependencies load first.
            let at = |m: &str| tree.iter().position(|x| x == m).unwrap();
            assert!(at("libcrc32c") < at("erofs"), "{package}: {tree:?}");
            assert!(plain.iter().all(|m| tree.contains(m)), "{package}");
        }
    }

    #[test]
    fn a_tree_changes_the_input_fingerprint_of_the_initrd() {
        let (plain, tree) = (nowhere(""), nowhere(TREE));
        let id = cache::KernelId::Tree("x-rootfs-a 6.1");
        let none = Path::new("/nonexistent");
        let a = cache::fingerprints(&plain, id, none, &[], "");
        let b = cache::fingerprints(&tree, id, none, &[], "");
        assert_eq!(a.tree, b.tree, "the same kernel objects");
        assert_ne!(a.all, b.all, "another initrd");
    }

    #[test]
    fn the_builders_tree_paths_are_the_contract_genboot_init_reads() {
        assert_eq!(crate::tree::IMAGE_FILE, genboot_format::TREE_IMAGE);
        assert_eq!(
            format!("{STORE_DIR}/{}", crate::tree::objects::OBJECTS_DIR),
            genboot_format::OBJECTS_DIR
        );
    }
}
