//! The generation `init=` names: found on the root, read and checked, and
//! with `genboot.verify` hashed.

use super::{errno_text, fail, in_root_text, Boot, Failure, Step};
use crate::inroot::Follow;
use crate::json;
use crate::sys::{Kind, Sys};
use genboot_format::cmdline::BootArgs;
use genboot_format::store_name::{StoreHash, StoreName};
use genboot_format::{GENERATION_FORMAT, GENERATION_NAME_PREFIX, STORE_DIR};
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

/// The kernel release `boot.json` (`text`, of generation `gen`) names,
/// after checking that it is a generation of [`GENERATION_FORMAT`].
fn boot_json_release(gen: &str, text: &str) -> Result<String, Failure> {
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
        Some(n) if n == u64::from(GENERATION_FORMAT) => Ok(release.to_string()),
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
        let release = self.generation_release(gen, &on_root)?;
        let running = self.sys.kernel_release().unwrap_or_default();
        if release != running {
            return fail(
                Step::Generation,
                format!("generation {gen} is for kernel {release}, but kernel {running} is running"),
                "the boot entry pairs the wrong kernel and generation; run `genboot install` or pick another entry",
            );
        }
        let resolved = self.stage2_init(gen, &on_root)?;
        let kernel_modules = self.kernel_modules(gen, &on_root)?;
        let detail = format!("{gen} (kernel {release}, init {})", in_root_text(&resolved));
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
        })
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

    /// The kernel release the generation's `boot.json` names.
    fn generation_release(&mut self, gen: &str, on_root: &str) -> Result<String, Failure> {
        // Inside the generation every path is its own: nothing is resolved
        // through a link (`on_root` holds none).
        let bj = format!("{on_root}/boot.json");
        let text = match self.sys.lstat(&bj) {
            Ok(m) if m.kind == Kind::File => self.sys.read_file(&bj),
            Ok(_) => Err(io::Error::from_raw_os_error(libc::EISDIR)),
            Err(e) => Err(e),
        };
        match text {
            Ok(t) => boot_json_release(gen, &String::from_utf8_lossy(&t)),
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
    /// /lib/systemd/systemd), an executable file.
    fn stage2_init(&mut self, gen: &str, on_root: &str) -> Result<String, Failure> {
        let target = match self.sys.read_link(&format!("{on_root}/init")) {
            Ok(t) => t,
            Err(e) => {
                return fail(
                    Step::Generation,
                    format!("{gen}/init is not a symlink: {}", errno_text(&e)),
                    "the generation is damaged; run `genboot verify`",
                )
            }
        };
        let not_there = |why: String| -> Result<String, Failure> {
            fail(
                Step::Generation,
                format!("{gen}/init points to {target}, which is not a file on the root: {why}"),
                "install the stage-2 init on the root file system, or set system.init in system.toml and rebuild",
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
        let detail = format!(
            "{} store objects match their hashes, read-only and owned by root",
            objects.len()
        );
        self.done(Step::Verify, &detail);
        Ok(())
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
