//! The generation `init=` names: found on the root, read and checked, and
//! with `genboot.verify` hashed.

use super::{errno_text, fail, in_root_text, Boot, Failure, Step};
use crate::inroot::Follow;
use crate::json;
use crate::sys::{Kind, Sys};
use genboot_format::cmdline::BootArgs;
use genboot_format::store_name::{StoreHash, StoreName};
use genboot_format::{
    DEFAULT_PERSIST, GENERATION_FORMAT, GENERATION_NAME_PREFIX, OBJECTS_DIR, STORE_DIR, TREE_IMAGE,
};
use std::io;

/// A store object on the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Object {
    hash: StoreHash,
    name: String,
    /// Where it is now: below [`SYSROOT`](super::SYSROOT), every link resolved inside the root.
    pub(super) dir: String,
}

impl Object {
    /// Its store path as stage 2 sees it.
    pub(super) fn store_path(&self) -> String {
        format!("{STORE_DIR}/{}-{}", self.hash, self.name)
    }
}

/// A generation found on the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Generation {
    /// `/var/lib/genboot/store/<hash>-<name>`, as stage 2 sees it.
    pub(super) path: String,
    object: Object,
    /// The kernel-modules object, when linked.
    pub(super) kernel_modules: Option<Object>,
    /// The kernel release `boot.json` names (the running one).
    pub(super) release: String,
    /// The whole-system tree it boots, when `boot.json` names one.
    pub(super) tree: Option<Tree>,
}

impl Generation {
    /// Its store object's name, `<hash>-genboot-system-<release>`.
    pub(super) fn store_name(&self) -> String {
        format!("{}-{}", self.object.hash, self.object.name)
    }
}

/// The tree a generation boots: `org.genboot.v1.tree` of its `boot.json`
/// (docs/formats.md). Paths as stage 2 sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Tree {
    /// `/var/lib/genboot/store/<hash>-rootfs-<label>`.
    pub(super) object: String,
    /// Its metadata image, `<object>/root.erofs`.
    pub(super) image: String,
    /// The image's SHA-256, lower-case hex (checked with `genboot.verify`).
    pub(super) image_sha256: String,
    /// The content objects, the overlay's data layer.
    pub(super) objects: String,
    /// The paths kept on the root partition (`persist`, else
    /// [`DEFAULT_PERSIST`]).
    pub(super) persist: Vec<String>,
}

pub(super) use genboot_format::persist_problem;

/// The tree `boot.json`'s `org.genboot.v1` (`g`, of generation `gen`)
/// names, if any, after checking its shape: a store object, its image
/// inside it, the store's content objects, a SHA-256, plain persistent
/// paths.
fn boot_json_tree(gen: &str, g: Option<&json::Value>) -> Result<Option<Tree>, Failure> {
    let t = match g.and_then(|g| g.get("tree")) {
        None | Some(json::Value::Null) => return Ok(None),
        Some(t) => t,
    };
    let bad = |what: String| -> Result<Option<Tree>, Failure> {
        fail(
            Step::Generation,
            format!("{gen}/boot.json: org.genboot.v1.tree {what}"),
            "the generation is damaged or was not made by genboot: boot another generation and run `genboot verify`",
        )
    };
    let field = |k: &str| t.get(k).and_then(json::Value::as_str).map(str::to_string);
    let (Some(object), Some(image), Some(image_sha256), Some(objects)) = (
        field("object"),
        field("image"),
        field("imageSha256"),
        field("objects"),
    ) else {
        return bad("lacks one of object, image, imageSha256, objects (strings)".into());
    };
    let base = object
        .strip_prefix(STORE_DIR)
        .and_then(|b| b.strip_prefix('/'))
        .unwrap_or_default();
    if base.contains('/') || StoreName::parse(base).is_none() {
        return bad(format!("object {object:?} is not a store object"));
    }
    if image != format!("{object}/{TREE_IMAGE}") {
        return bad(format!("image {image:?} is not {object}/{TREE_IMAGE}"));
    }
    if objects != OBJECTS_DIR {
        return bad(format!("objects {objects:?} is not {OBJECTS_DIR}"));
    }
    if image_sha256.len() != 64
        || !image_sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return bad(format!("imageSha256 {image_sha256:?} is not a SHA-256"));
    }
    let persist = match t.get("persist") {
        None | Some(json::Value::Null) => DEFAULT_PERSIST.iter().map(|p| p.to_string()).collect(),
        Some(json::Value::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                let Some(p) = item.as_str() else {
                    return bad("persist holds something that is not a string".into());
                };
                if let Some(why) = persist_problem(p) {
                    return bad(format!("persist {p:?}: {why}"));
                }
                out.push(p.to_string());
            }
            out
        }
        Some(_) => return bad("persist is not a list".into()),
    };
    Ok(Some(Tree {
        object,
        image,
        image_sha256,
        objects,
        persist,
    }))
}

/// What `init=` names: a generation's `init` in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InitPath<'a> {
    /// The generation, `<STORE_DIR>/<hash>-genboot-system-<kernel>`.
    pub(super) generation: &'a str,
    pub(super) object: StoreName<'a>,
}

/// Read `init=` as a generation's init,
/// `<STORE_DIR>/<hash>-genboot-system-<kernel>/init`; else why it is not one.
pub(super) fn parse_init_path(init: &str) -> Result<InitPath<'_>, String> {
    let Some(generation) = init.strip_suffix("/init") else {
        return Err("it does not end in /init".into());
    };
    let Some(base) = generation
        .strip_prefix(STORE_DIR)
        .and_then(|b| b.strip_prefix('/'))
    else {
        return Err(format!("it is not in {STORE_DIR}"));
    };
    let Some(object) = StoreName::parse(base) else {
        return Err("the directory is not named <32 hex digits>-<name>".into());
    };
    if base.contains('/') || !object.name.starts_with(GENERATION_NAME_PREFIX) {
        return Err("the store object is not a genboot-system generation".into());
    }
    Ok(InitPath { generation, object })
}

/// The kernel release and the tree `boot.json` (`text`, of generation
/// `gen`) names, after checking that it is a generation of
/// [`GENERATION_FORMAT`].
fn read_boot_json(gen: &str, text: &str) -> Result<(String, Option<Tree>), Failure> {
    let v = match json::parse(text) {
        Ok(v) => v,
        Err(e) => {
            return fail(
                Step::Generation,
                format!("{gen}/boot.json is not JSON: {e}"),
                "the generation is damaged; run `genboot verify` from another generation",
            )
        }
    };
    let g = v.get("org.genboot.v1");
    let Some(release) = g
        .and_then(|g| g.get("kernelRelease"))
        .and_then(json::Value::as_str)
    else {
        return fail(
            Step::Generation,
            format!("{gen}/boot.json has no org.genboot.v1.kernelRelease"),
            "the generation was not made by genboot or is damaged",
        );
    };
    let format = match g.and_then(|g| g.get("format")) {
        Some(json::Value::Number(n)) => n.parse::<u64>().ok(),
        _ => None,
    };
    match format {
        Some(n) if n == u64::from(GENERATION_FORMAT) => {
            Ok((release.to_string(), boot_json_tree(gen, g)?))
        }
        Some(n) if n > u64::from(GENERATION_FORMAT) => fail(
            Step::Generation,
            format!("{gen} has generation format {n}; this genboot-init reads format {GENERATION_FORMAT}"),
            "the generation was built by a newer genboot: boot an entry whose initrd comes from that genboot, or rebuild the initrd",
        ),
        _ => fail(
            Step::Generation,
            format!("{gen}/boot.json has no valid org.genboot.v1.format"),
            "the generation was not made by genboot or is damaged",
        ),
    }
}

impl<S: Sys> Boot<'_, S> {
    /// Find the generation `init=` names on the root, check its `boot.json`
    /// and its stage-2 init, and find its kernel-modules object.
    pub(super) fn generation(&mut self, args: &BootArgs) -> Result<Generation, Failure> {
        let Some(init) = args.init.as_deref() else {
            return fail(
                Step::Generation,
                "no init= on the kernel command line",
                format!("boot an entry written by `genboot install`: it passes init={STORE_DIR}/<hash>-{GENERATION_NAME_PREFIX}<kernel>/init"),
            );
        };
        let InitPath { generation: gen, object } = match parse_init_path(init) {
            Ok(p) => p,
            Err(why) => {
                return fail(
                    Step::Generation,
                    format!("init={init} is not a generation's init: {why}"),
                    format!("init= must be {STORE_DIR}/<hash>-{GENERATION_NAME_PREFIX}<kernel>/init, as `genboot install` writes it"),
                )
            }
        };
        let on_root = self.generation_dir(args, gen)?;
        let (release, tree) = self.generation_release(gen, &on_root)?;
        let running = self.sys.kernel_release().unwrap_or_default();
        if release != running {
            return fail(
                Step::Generation,
                format!("generation {gen} is for kernel {release}, but kernel {running} is running"),
                "the boot entry pairs the wrong kernel and generation; run `genboot install` or pick another entry",
            );
        }
        // A tree's init is in the tree: checked once it is mounted (bind-var).
        let init = match &tree {
            None => format!(
                "init {}",
                in_root_text(&self.stage2_init(Step::Generation, gen, &on_root)?)
            ),
            Some(t) => format!("tree {}", t.object),
        };
        let kernel_modules = self.kernel_modules(gen, &on_root)?;
        let detail = format!("{gen} (kernel {release}, {init})");
        self.done(Step::Generation, &detail);
        Ok(Generation {
            path: gen.to_string(),
            object: Object {
                hash: object.hash,
                name: object.name.to_string(),
                dir: on_root,
            },
            kernel_modules,
            release,
            tree,
        })
    }

    /// Once the tree is the root and the root partition's `/var` is bound
    /// on its `/var` (`bind-var`): the generation and its kernel-modules
    /// object found again, through that `/var`, where stage 2 will find
    /// them; then the stage-2 init, which lives in the tree. Returns the
    /// init, below [`SYSROOT`](super::SYSROOT).
    pub(super) fn locate_in_tree(&mut self, g: &mut Generation) -> Result<String, Failure> {
        let mut objects = vec![(g.path.clone(), &mut g.object)];
        if let Some(km) = &mut g.kernel_modules {
            objects.push((km.store_path(), km));
        }
        for (path, o) in objects {
            match self.on_root(&path, Follow::NotLast) {
                Ok(d) if matches!(self.sys.lstat(&d), Ok(m) if m.kind == Kind::Dir) => o.dir = d,
                _ => {
                    return fail(
                        Step::BindVar,
                        format!("{path} is not in the tree's /var once the root partition's /var is bound there"),
                        "the store must be on the root partition, below its /var (a link there that leads elsewhere?)",
                    )
                }
            }
        }
        let gen = g.path.clone();
        self.stage2_init(Step::BindVar, &gen, &g.object.dir)
    }

    /// Where the generation `gen` is below [`SYSROOT`](super::SYSROOT): a directory.
    fn generation_dir(&mut self, args: &BootArgs, gen: &str) -> Result<String, Failure> {
        let on_root = match self.on_root(gen, Follow::NotLast) {
            Ok(p) => p,
            Err(e) => {
                return fail(
                    Step::Generation,
                    format!(
                        "generation {gen} is not on the root file system {}: {}",
                        args.root,
                        errno_text(&e)
                    ),
                    "a directory on the way to the store is a broken or looping symlink; boot another generation and fix the root",
                )
            }
        };
        match self.sys.lstat(&on_root) {
            Ok(m) if m.kind == Kind::Dir => Ok(on_root),
            _ => fail(
                Step::Generation,
                format!("generation {gen} is not on the root file system {}", args.root),
                "it may have been garbage-collected or root= names another system; pick another entry in the boot menu",
            ),
        }
    }

    /// The kernel release and the tree the generation's `boot.json` names.
    fn generation_release(
        &mut self,
        gen: &str,
        on_root: &str,
    ) -> Result<(String, Option<Tree>), Failure> {
        // Inside the generation every path is its own: nothing is resolved
        // through a link (`on_root` holds none).
        let bj = format!("{on_root}/boot.json");
        let text = match self.sys.lstat(&bj) {
            Ok(m) if m.kind == Kind::File => self.sys.read_file(&bj),
            Ok(_) => Err(io::Error::from_raw_os_error(libc::EISDIR)),
            Err(e) => Err(e),
        };
        match text {
            Ok(t) => read_boot_json(gen, &String::from_utf8_lossy(&t)),
            Err(e) => {
                let why = if e.raw_os_error() == Some(libc::EISDIR) {
                    "not a file".to_string()
                } else {
                    errno_text(&e)
                };
                fail(
                    Step::Generation,
                    format!("cannot read {gen}/boot.json: {why}"),
                    "the generation is damaged; run `genboot verify` from another generation",
                )
            }
        }
    }

    /// The stage-2 init the generation names, below [`SYSROOT`](super::SYSROOT): it must be
    /// on the root, found the way stage 2 will find it: every link resolved
    /// inside the root (Debian: /sbin -> usr/sbin, /usr/sbin/init ->
    /// /lib/systemd/systemd), an executable file. `step`: where it is
    /// checked (`generation`; `bind-var` for a tree, once mounted).
    fn stage2_init(&mut self, step: Step, gen: &str, on_root: &str) -> Result<String, Failure> {
        let target = match self.sys.read_link(&format!("{on_root}/init")) {
            Ok(t) => t,
            Err(e) => {
                return fail(
                    step,
                    format!("{gen}/init is not a symlink: {}", errno_text(&e)),
                    "the generation is damaged; run `genboot verify`",
                )
            }
        };
        let (root, hint) = if step == Step::Generation {
            ("on the root", "install the stage-2 init on the root file system, or set system.init in system.toml and rebuild")
        } else {
            ("in the generation's tree", "the tree lacks its init: add the package that has it to [tree] packages (systemd-sysv for /sbin/init), or set system.init in system.toml, and rebuild; boot another generation meanwhile")
        };
        let not_there = |why: String| -> Result<String, Failure> {
            fail(
                step,
                format!("{gen}/init points to {target}, which is not a file {root}: {why}"),
                hint,
            )
        };
        let resolved = match self.on_root(&format!("{gen}/init"), Follow::All) {
            Ok(p) => p,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return not_there(format!(
                    "more than {} symbolic links on the way (a loop?)",
                    crate::inroot::MAX_LINKS
                ))
            }
            Err(e) => return not_there(errno_text(&e)),
        };
        let shown = in_root_text(&resolved);
        match self.sys.lstat(&resolved) {
            Ok(m) if m.kind == Kind::File && m.mode & 0o111 != 0 => Ok(resolved),
            Ok(m) if m.kind == Kind::File => {
                not_there(format!("{shown} is not executable (mode {:04o})", m.mode))
            }
            Ok(_) => not_there(format!("{shown} is not a regular file")),
            Err(e) => not_there(format!("{shown}: {}", errno_text(&e))),
        }
    }

    /// The kernel-modules object the generation links to, if it links one:
    /// a store object on the root.
    fn kernel_modules(&mut self, gen: &str, on_root: &str) -> Result<Option<Object>, Failure> {
        let Ok(t) = self.sys.read_link(&format!("{on_root}/kernel-modules")) else {
            return Ok(None);
        };
        let base = t.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        let in_store = t.trim_end_matches('/') == format!("../{base}")
            || t.trim_end_matches('/') == format!("{STORE_DIR}/{base}");
        let Some(StoreName { hash, name }) = StoreName::parse(base).filter(|_| in_store) else {
            return fail(
                Step::Generation,
                format!("{gen}/kernel-modules points to {t}, not a store object"),
                "the generation is damaged; run `genboot verify`",
            );
        };
        let obj = format!("{STORE_DIR}/{base}");
        let dir = match self.on_root(&obj, Follow::NotLast) {
            Ok(d) if matches!(self.sys.lstat(&d), Ok(m) if m.kind == Kind::Dir) => d,
            _ => {
                return fail(
                    Step::Generation,
                    format!("the generation's kernel-modules object {obj} is not on the root"),
                    "the store is damaged (an object was deleted by hand?); boot another generation and run `genboot verify`",
                )
            }
        };
        Ok(Some(Object {
            hash,
            name: name.to_string(),
            dir,
        }))
    }

    pub(super) fn verify(&mut self, g: &Generation) -> Result<(), Failure> {
        let mut objects = vec![g.object.clone()];
        objects.extend(g.kernel_modules.clone());
        for o in &objects {
            let path = o.store_path();
            match self.sys.hash_tree(&o.dir, &o.name, &o.hash) {
                Ok(h) if h == o.hash => {}
                Ok(h) => {
                    return fail(
                        Step::Verify,
                        format!("{path} was changed: its contents hash to {h}"),
                        "the generation was tampered with or damaged; boot another generation and run `genboot verify`, then rebuild",
                    )
                }
                Err(e) => {
                    return fail(
                        Step::Verify,
                        format!("cannot hash {path}: {}", errno_text(&e)),
                        "the store object is unreadable or missing; boot another generation and run `genboot verify`",
                    )
                }
            }
            let mut bad = Vec::new();
            let mut count = 0usize;
            check_modes(self.sys, &o.dir, "", 0, &mut bad, &mut count);
            if count > 0 {
                let more = if count > bad.len() {
                    format!(" and {} more", count - bad.len())
                } else {
                    String::new()
                };
                return fail(
                    Step::Verify,
                    format!(
                        "{path} has entries a store object must not have: {}{more}",
                        bad.join("; ")
                    ),
                    "store objects are read-only and owned by root (files 0444 or 0555, directories 0555); this one was changed by hand or tampered with: boot another generation and run `genboot verify`, then rebuild",
                );
            }
        }
        let mut detail = format!(
            "{} store objects match their hashes, read-only and owned by root",
            objects.len()
        );
        if let Some(t) = &g.tree {
            self.verify_image(t)?;
            detail.push_str(&format!("; {} matches boot.json's SHA-256", t.image));
        }
        self.done(Step::Verify, &detail);
        Ok(())
    }

    /// The tree's metadata image against the SHA-256 `boot.json` (which
    /// the generation's hash covers) gives for it: what the overlay shows
    /// is then what was built. (The content objects it redirects to are
    /// not read here; fs-verity is for them.)
    fn verify_image(&mut self, t: &Tree) -> Result<(), Failure> {
        let got = self
            .on_root(&t.image, Follow::All)
            .and_then(|p| self.sys.sha256_file(&p));
        match got {
            Ok(d) if genboot_format::hex(&d) == t.image_sha256 => Ok(()),
            Ok(d) => fail(
                Step::Verify,
                format!(
                    "{} was changed: its SHA-256 is {}, boot.json says {}",
                    t.image,
                    genboot_format::hex(&d),
                    t.image_sha256
                ),
                "the tree object was tampered with or damaged; boot another generation and run `genboot verify`, then rebuild",
            ),
            Err(e) => fail(
                Step::Verify,
                format!("cannot read {}: {}", t.image, errno_text(&e)),
                "the tree object is unreadable or missing; boot another generation and run `genboot verify`",
            ),
        }
    }
}

/// Up to this many bad entries are named in a `genboot.verify` failure.
const MODE_PROBLEMS_SHOWN: usize = 3;

/// Store objects nest no deeper than this (a module tree: about 8).
const MAX_OBJECT_DEPTH: u32 = 64;

/// Check the modes and owner of everything in a store object (`dir` is the
/// object, `rel` the part below it): files 0444 or 0555, directories 0555,
/// all owned by root, nothing but files, directories and symlinks. The
/// store hash covers contents and the owner-execute bit only, so this is
/// what notices a setuid or world-writable file. Counts the bad entries,
/// names the first few.
fn check_modes<S: Sys>(
    sys: &mut S,
    dir: &str,
    rel: &str,
    depth: u32,
    bad: &mut Vec<String>,
    count: &mut usize,
) {
    fn note(what: String, bad: &mut Vec<String>, count: &mut usize) {
        *count += 1;
        if bad.len() < MODE_PROBLEMS_SHOWN {
            bad.push(what);
        }
    }
    let here = if rel.is_empty() {
        dir.to_string()
    } else {
        format!("{dir}/{rel}")
    };
    let shown = if rel.is_empty() { "." } else { rel };
    let m = match sys.lstat(&here) {
        Ok(m) => m,
        Err(e) => return note(format!("{shown}: {}", errno_text(&e)), bad, count),
    };
    if m.uid != 0 {
        note(format!("{shown} is owned by uid {}", m.uid), bad, count);
    }
    match m.kind {
        Kind::Symlink => {}
        Kind::File if m.mode == 0o444 || m.mode == 0o555 => {}
        Kind::File => note(format!("{shown} has mode {:04o}", m.mode), bad, count),
        Kind::Other => note(format!("{shown} is a device, fifo or socket"), bad, count),
        Kind::Dir => {
            if m.mode != 0o555 {
                note(format!("{shown}/ has mode {:04o}", m.mode), bad, count);
            }
            if depth >= MAX_OBJECT_DEPTH {
                return note(format!("{shown}/ is nested too deep"), bad, count);
            }
            let mut names = match sys.read_dir(&here) {
                Ok(v) => v,
                Err(e) => return note(format!("{shown}/: {}", errno_text(&e)), bad, count),
            };
            names.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, _) in names {
                let sub = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                check_modes(sys, dir, &sub, depth + 1, bad, count);
            }
        }
    }
}
