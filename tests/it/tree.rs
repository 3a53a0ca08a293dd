//! Whole-system generations with real parts, through the `genboot` CLI:
//! Debian 12 trees built by mmdebstrap from the local package repository
//! (`tools/deb-cache`, no network) as `[tree]`s of generations, judged by
//! `fsck.erofs`, mounted by `genboot mount` (this machine's EROFS and
//! overlayfs) and compared with mmdebstrap's own output by `ls`, `getcap`,
//! `getfattr`, `lstat` and SHA-256, and by `dpkg-query` for packages.
//!
//! mmdebstrap runs three times per test binary, shared through [`trees`]:
//! root `a` switches to generation 1 (the base set of
//! `tools/debian-packages`) and generation 2 (base + `nginx-light` +
//! `chrony`, which adds a system user); root `b` builds the same
//! system.toml as generation 1 (reproducibility). Each `a` build is held at
//! the failpoint `tree::source-ready` (`wait:`) while the test copies
//! mmdebstrap's output: that copy is what the trees are compared with.
//! Everything is under `target/tree-tests/<pid>`, removed at exit.
//!
//! Without mmdebstrap: synthetic trees (a fake kernel and modules) for the
//! kernel taken from a tree and the verbs' errors, a part of the extras
//! tree for the crash and space tests, and a hostile tree. The crash test
//! of a moving import runs the import in a child process: this test binary
//! (`it`) running the ignored test `tree::crash_child`.

use crate::support::judges::Tmpfs;
use crate::support::{
    self, debian, fake_ko, ok, repo, require_tool, run, run_ok, snapshot, stderr, stdout,
    synthetic_bzimage, write_config, SyntheticTree,
};
use genboot::hint::Hint;
use genboot::state::State;
use genboot::store::{Store, StorePath};
use genboot::tree::mount::{mount_tree_with, MountSys, RealSys};
use genboot::tree::{
    self, import_root, rules, ImportMode, Objects, Rules, RulesReport, TreeSource, TreeSpec,
};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `source_date_epoch` of every tree here (2025-01-01).
const EPOCH: i64 = 1_735_689_600;

/// The label of the mmdebstrap systems: their trees are `rootfs-debian-tree`.
const LABEL: &str = "Debian tree";

// ---------------------------------------------------------------------------
// Shared fixtures.

fn work() -> PathBuf {
    repo()
        .join("target/tree-tests")
        .join(std::process::id().to_string())
}

extern "C" fn remove_work() {
    let dir = work();
    if dir.exists() {
        let _ = tree::build::remove_staging(&dir);
    }
}

/// Remove the work directories of test runs that are gone, and this one's
/// when the process exits.
fn prepare_work() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let top = repo().join("target/tree-tests");
        if let Ok(rd) = fs::read_dir(&top) {
            for e in rd.flatten() {
                let pid = e.file_name().to_string_lossy().into_owned();
                if !Path::new("/proc").join(&pid).exists() {
                    tree::build::remove_staging(&e.path()).expect("remove a stale test directory");
                }
            }
        }
        fs::create_dir_all(work()).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: `remove_work` is an `extern "C" fn()` that takes nothing
        // and catches nothing across the boundary (it only calls functions
        // that return errors instead of panicking).
        let rc = unsafe { libc::atexit(remove_work) };
        assert_eq!(rc, 0);
    });
}

/// A state directory (`<root>/var/lib/genboot`) and its store, for the
/// tests that call the library.
fn state(name: &str) -> (State, Store) {
    prepare_work();
    let s = State::open(&work().join(name)).unwrap();
    let store = Store::open(&s).unwrap();
    (s, store)
}

/// A fresh directory below the work directory.
fn fresh(name: &str) -> PathBuf {
    prepare_work();
    let d = work().join(name);
    if d.exists() {
        tree::build::remove_staging(&d).unwrap();
    }
    fs::create_dir_all(&d).unwrap();
    d
}

/// The state directory and store below `root`, for reading.
fn store_of(root: &Path) -> Store {
    Store::open(&State::open(root).unwrap()).unwrap()
}

fn state_dir(root: &Path) -> PathBuf {
    root.join("var/lib/genboot")
}

/// `boot.json` of generation `n` of the profile below `root`.
fn boot_json(root: &Path, n: u32) -> serde_json::Value {
    let p = state_dir(root).join(format!("profiles/system-{n}-link/boot.json"));
    serde_json::from_slice(&fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// The store name of generation `n` below `root` (`<hash>-genboot-system-…`).
fn generation_name(root: &Path, n: u32) -> String {
    let boot = boot_json(root, n);
    let toplevel = boot["org.nixos.bootspec.v1"]["toplevel"].as_str().unwrap();
    toplevel.rsplit('/').next().unwrap().to_string()
}

/// The tree object a `boot.json` names.
fn tree_in(boot: &serde_json::Value) -> StorePath {
    let object = boot["org.genboot.v1"]["tree"]["object"]
        .as_str()
        .unwrap_or_else(|| panic!("boot.json names no tree: {boot:#}"));
    StorePath::parse(object.rsplit('/').next().unwrap()).unwrap()
}

/// The tree object of generation `n` below `root`.
fn tree_of(root: &Path, n: u32) -> StorePath {
    tree_in(&boot_json(root, n))
}

/// Every tree object in the store below `root`.
fn trees_in(root: &Path) -> Vec<StorePath> {
    tree::trees(&store_of(root)).unwrap()
}

/// Content objects of the store below `root`.
fn contents(root: &Path) -> BTreeSet<[u8; 32]> {
    Objects::of(&store_of(root))
        .list()
        .unwrap()
        .into_iter()
        .map(|o| o.0)
        .collect()
}

/// `genboot --root root ARGS` with `GENBOOT_FAILPOINTS` and the stand-in
/// activator (for synthetic kernels).
fn run_fp(root: &Path, failpoints: &str, args: &[&str]) -> Output {
    fs::create_dir_all(root).unwrap();
    let mut c = support::genboot();
    c.env(
        "GENBOOT_ACTIVATOR",
        support::fake_activator(root.parent().unwrap()),
    )
    .env("GENBOOT_FAILPOINTS", failpoints)
    .arg("--root")
    .arg(root)
    .args(args);
    c.output().unwrap()
}

/// `genboot verify` below `root` finds nothing wrong.
#[track_caller]
fn assert_verifies(root: &Path, what: &str) {
    let o = run(root, &["verify"]);
    assert!(
        o.status.success(),
        "{what}: genboot verify:\n{}{}",
        stdout(&o),
        stderr(&o)
    );
}

/// The customize hook every test tree gets: a file with a capability, so
/// `getcap` has something to compare (minbase has no `ping`).
fn cap_hook() -> PathBuf {
    let p = work().join("hooks/cap");
    if !p.exists() {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(
            &p,
            "#!/bin/sh\nset -e\ncp \"$1/usr/bin/true\" \"$1/usr/local/bin/genboot-cap-test\"\n\
             setcap cap_net_raw+ep \"$1/usr/local/bin/genboot-cap-test\"\n",
        )
        .unwrap();
        run_ok(Command::new("chmod").arg("0755").arg(&p));
    }
    p
}

fn base_packages() -> Vec<String> {
    let resolved = debian::mirror().join("resolved");
    let text = fs::read_to_string(&resolved).unwrap_or_else(|e| {
        panic!(
            "{}: {e}\nthe local Debian package repository is missing: run `tools/deb-cache` \
             (`tools/install-deps` does; it downloads the packages once, tests never do)",
            resolved.display()
        )
    });
    let mut v: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("base "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    // The kernel without initramfs-tools (as tools/debian-root does).
    v.push("genboot-test-no-initramfs".into());
    v
}

/// A system.toml whose `[tree]` is `tree` (TOML lines) and whose kernel
/// comes from the tree; written to `<work>/cfg-<name>/system.toml`.
fn tree_config(name: &str, label: &str, tree: &str) -> PathBuf {
    let dir = work().join(format!("cfg-{name}"));
    fs::create_dir_all(&dir).unwrap();
    let p = dir.join("system.toml");
    let initrd: Vec<String> = support::scenario::INITRD_MODULES
        .iter()
        .map(|m| format!("{m:?}"))
        .collect();
    fs::write(
        &p,
        format!(
            "[kernel]\nparams = [\"console=ttyS0\"]\n\n[initrd]\nmodules = [{}]\n\n\
             [root]\ndevice = \"PARTUUID=6e6f6f74-0000-4000-8000-000000000002\"\n\n\
             [system]\nlabel = {label:?}\n\n[tree]\n{tree}",
            initrd.join(", ")
        ),
    )
    .unwrap();
    p
}

/// An mmdebstrap `[tree]` of the base packages and `extra`, from the local
/// repository.
fn mm_tree(extra: &[&str]) -> String {
    let mut packages = base_packages();
    packages.extend(extra.iter().map(|s| s.to_string()));
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let dpkgopts: Vec<String> = [
        "force-unsafe-io",
        "path-exclude=/usr/share/man/*",
        "path-exclude=/usr/share/info/*",
        "path-exclude=/usr/share/locale/*",
        "path-include=/usr/share/locale/locale.alias",
        "path-exclude=/usr/share/doc/*",
        "path-include=/usr/share/doc/*/copyright",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    format!(
        "source = \"mmdebstrap\"\nsuite = \"bookworm\"\n\
         mirror = \"deb [trusted=yes] file://{} bookworm main\"\n\
         packages = [{}]\ncustomize = [{:?}]\ndpkgopts = [{}]\nsource_date_epoch = {EPOCH}\n",
        debian::mirror().display(),
        list(&packages),
        cap_hook(),
        list(&dpkgopts)
    )
}

fn dpkg_query(root: &Path) -> BTreeSet<(String, String, String)> {
    let out = run_ok(
        Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                root.join("var/lib/dpkg").display()
            ))
            .args([
                "-W",
                "-f",
                "${db:Status-Status} ${Package} ${Version} ${Architecture}\n",
            ]),
    );
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() == 4 && f[0] == "installed")
                .then(|| (f[1].to_string(), f[2].to_string(), f[3].to_string()))
        })
        .collect()
}

/// mmdebstrap's output of one build, as the test copied it.
struct Capture {
    /// `cp -a` of the tree before genboot read it.
    pristine: PathBuf,
    /// `dpkg-query` on it: (name, version, arch).
    dpkg: BTreeSet<(String, String, String)>,
}

/// `genboot --root root switch --config cfg`, held at `tree::source-ready`
/// (mmdebstrap done, nothing imported) while the test copies the tree
/// mmdebstrap wrote into the store's staging directory.
fn switch_capturing(root: &Path, cfg: &Path, name: &str) -> Capture {
    let gate = work().join(format!("gate-{name}"));
    let reached = PathBuf::from(format!("{}.reached", gate.display()));
    let mut child = support::genboot()
        .arg("--root")
        .arg(root)
        .args(["switch", "--config"])
        .arg(cfg)
        .env(
            "GENBOOT_FAILPOINTS",
            format!("tree::source-ready=wait:{}", gate.display()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // mmdebstrap takes minutes on a busy two-core machine.
    let deadline = Instant::now() + Duration::from_secs(45 * 60);
    while !reached.exists() {
        if let Some(st) = child.try_wait().unwrap() {
            let o = child.wait_with_output().unwrap();
            panic!(
                "genboot switch {name} ended ({st}) before its tree was built:\n{}",
                stderr(&o)
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("genboot switch {name}: mmdebstrap did not finish within 45 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let staging: Vec<PathBuf> = fs::read_dir(state_dir(root).join("store"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-build-"))
        .map(|e| e.path().join("root"))
        .collect();
    assert_eq!(staging.len(), 1, "{staging:?}");
    let pristine = work().join(format!("pristine-{name}"));
    run_ok(Command::new("cp").arg("-a").arg(&staging[0]).arg(&pristine));
    let dpkg = dpkg_query(&pristine);
    fs::write(&gate, b"").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "genboot switch {name}:\n{}", stderr(&o));
    Capture { pristine, dpkg }
}

/// The three mmdebstrap builds, once per test binary (see the module docs).
struct Trees {
    /// Generation 1 (base) and 2 (extras).
    a: PathBuf,
    /// `build` of generation 1's system.toml.
    b: PathBuf,
    base_cfg: PathBuf,
    base: Capture,
    extras: Capture,
    /// What `build` printed under `b`.
    b_generation: String,
}

fn trees() -> &'static Trees {
    static TREES: OnceLock<Result<Trees, String>> = OnceLock::new();
    let r = TREES.get_or_init(|| {
        prepare_work();
        require_tool("mmdebstrap", "mmdebstrap");
        require_tool("setcap", "libcap2-bin");
        require_tool("dpkg-query", "dpkg");
        // The generations' initrds need it (fails saying how to build it).
        support::activator();
        std::panic::catch_unwind(|| {
            let (a, b) = (fresh("a"), fresh("b"));
            let base_cfg = tree_config("base", LABEL, &mm_tree(&[]));
            let extras_cfg = tree_config("extras", LABEL, &mm_tree(&["nginx-light", "chrony"]));
            let base = switch_capturing(&a, &base_cfg, "base");
            let extras = switch_capturing(&a, &extras_cfg, "extras");
            let b_generation = ok(run(&b, &["build", "--config", base_cfg.to_str().unwrap()]));
            Trees {
                a,
                b,
                base_cfg,
                base,
                extras,
                b_generation,
            }
        })
        .map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "building the test trees panicked".into())
        })
    });
    match r {
        Ok(t) => t,
        Err(e) => panic!("the shared test trees could not be built: {e}"),
    }
}

// ---------------------------------------------------------------------------
// Reading trees the independent way.

#[derive(Debug, Clone, PartialEq, Eq)]
struct Info {
    kind: char,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    /// Files: size, nlink, SHA-256; devices: rdev; symlinks: target.
    size: u64,
    nlink: u64,
    rdev: u64,
    target: Vec<u8>,
    sha: [u8; 32],
}

/// lstat + content hash of every path below `root`, keyed by the path
/// relative to it (`""` for the root).
fn walk(root: &Path) -> BTreeMap<Vec<u8>, Info> {
    fn rec(root: &Path, rel: &[u8], out: &mut Vec<(Vec<u8>, PathBuf, fs::Metadata)>) {
        let here = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(rel))
        };
        let m = fs::symlink_metadata(&here).unwrap();
        let is_dir = m.is_dir();
        out.push((rel.to_vec(), here.clone(), m));
        if is_dir {
            for e in fs::read_dir(&here).unwrap() {
                let e = e.unwrap();
                let mut r = rel.to_vec();
                if !r.is_empty() {
                    r.push(b'/');
                }
                r.extend_from_slice(e.file_name().as_bytes());
                rec(root, &r, out);
            }
        }
    }
    let mut list = Vec::new();
    rec(root, b"", &mut list);
    list.into_par_iter()
        .map(|(rel, path, m)| {
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                'd'
            } else if ft.is_file() {
                'f'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_char_device() {
                'c'
            } else if ft.is_block_device() {
                'b'
            } else if ft.is_fifo() {
                'p'
            } else {
                's'
            };
            let mut info = Info {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                size: 0,
                nlink: 0,
                rdev: 0,
                target: Vec::new(),
                sha: [0; 32],
            };
            match kind {
                'f' => {
                    info.size = m.len();
                    info.nlink = m.nlink();
                    info.sha = Sha256::digest(fs::read(&path).unwrap()).into();
                }
                'l' => {
                    info.target = fs::read_link(&path)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                }
                'c' | 'b' => info.rdev = m.rdev(),
                _ => {}
            }
            (rel, info)
        })
        .collect()
}

/// `getfattr -R -d -m - -e hex` of a tree: relative path → xattrs.
fn xattrs(root: &Path) -> BTreeMap<Vec<u8>, BTreeMap<String, String>> {
    require_tool("getfattr", "attr");
    let out = Command::new("getfattr")
        .args(["-R", "-P", "-d", "-m", "-", "-e", "hex", "--absolute-names"])
        .arg(root)
        .output()
        .expect("getfattr runs");
    let root_b = root.as_os_str().as_bytes();
    let mut map = BTreeMap::new();
    let mut cur: Option<Vec<u8>> = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(p) = line.strip_prefix("# file: ") {
            let p = unescape_octal(p);
            let rel = p[root_b.len()..].strip_prefix(b"/").unwrap_or(&[]).to_vec();
            cur = Some(rel);
        } else if let Some((k, v)) = line.split_once('=') {
            map.entry(cur.clone().unwrap())
                .or_insert_with(BTreeMap::new)
                .insert(k.to_string(), v.to_string());
        }
    }
    map
}

fn unescape_octal(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && b.len() >= i + 4
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else if b[i] == b'\\' && b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn rel_of(manifest_path: &[u8]) -> Vec<u8> {
    manifest_path.strip_prefix(b"/").unwrap_or(&[]).to_vec()
}

/// Compare a mounted tree with the tree it was imported from, through what
/// the build rules say they did. Returns the differences (empty = equal).
fn compare(
    pristine: &Path,
    mounted: &Path,
    report: &RulesReport,
    epoch: Option<i64>,
) -> Vec<String> {
    let a = walk(pristine);
    let b = walk(mounted);
    let xa = xattrs(pristine);
    let xb = xattrs(mounted);
    let ur = report.uid_remap();
    let gr = report.gid_remap();
    let removed: BTreeSet<Vec<u8>> = report.removed.iter().map(|p| rel_of(p)).collect();
    let rewritten: BTreeSet<Vec<u8>> = report.rewritten.iter().map(|p| rel_of(p)).collect();
    let added: BTreeSet<Vec<u8>> = report.added.iter().map(|p| rel_of(p)).collect();
    let placeholders: BTreeSet<Vec<u8>> = report.placeholders.iter().map(|p| rel_of(p)).collect();
    let moved: HashMap<Vec<u8>, Vec<u8>> = report
        .moved
        .iter()
        .map(|(f, t)| (rel_of(f), rel_of(t)))
        .collect();
    let mut diffs = Vec::new();
    let mut seen = BTreeSet::new();
    let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    for (p, ia) in &a {
        if removed.contains(p) {
            if b.contains_key(p) {
                diffs.push(format!("{}: removed by the rules but present", show(p)));
            }
            continue;
        }
        let q = moved.get(p).cloned().unwrap_or_else(|| p.clone());
        seen.insert(q.clone());
        let Some(ib) = b.get(&q) else {
            diffs.push(format!(
                "{}: missing in the mounted tree (as {})",
                show(p),
                show(&q)
            ));
            continue;
        };
        let mut want = ia.clone();
        want.uid = *ur.get(&ia.uid).unwrap_or(&ia.uid);
        want.gid = *gr.get(&ia.gid).unwrap_or(&ia.gid);
        if let Some(e) = epoch {
            if want.mtime.0 >= e {
                want.mtime = (e, 0);
            }
        }
        let mut got = ib.clone();
        if ia.kind == 'd' {
            // Directory sizes and link counts are the file system's own.
            want.size = 0;
            got.size = 0;
        }
        if rewritten.contains(p) {
            want.sha = got.sha;
            want.size = got.size;
            want.mtime = got.mtime;
            want.mode = got.mode;
        }
        if want != got {
            diffs.push(format!(
                "{}: mmdebstrap {:?}\n    mounted {:?}",
                show(p),
                want,
                got
            ));
        }
        let (ea, eb) = (xa.get(p), xb.get(&q));
        if ea != eb && !rewritten.contains(p) {
            diffs.push(format!("{}: xattrs {:?} vs mounted {:?}", show(p), ea, eb));
        }
    }
    for p in b.keys() {
        if !seen.contains(p) && !added.contains(p) && !placeholders.contains(p) {
            diffs.push(format!("{}: in the mounted tree only", show(p)));
        }
    }
    diffs
}

/// A mounted tree, unmounted on drop.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Err(e) = tree::umount_tree(&self.0) {
            eprintln!("unmounting {}: {e}", self.0.display());
        }
    }
}

fn mount(store: &Store, object: &StorePath, name: &str) -> MountGuard {
    let dir = work().join(format!("mnt-{name}"));
    fs::create_dir_all(&dir).unwrap();
    tree::mount_tree(store, object, &dir).unwrap_or_else(|e| panic!("mount_tree: {e}"));
    MountGuard(dir)
}

fn is_mount_point(p: &Path) -> bool {
    let p = fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*p.to_string_lossy()))
}

/// `ls -lnR --time-style=+` of `dir` below `root`, without the `total` lines
/// (block counts are the file system's).
fn ls(root: &Path, dir: &str) -> String {
    let out = run_ok(
        Command::new("ls")
            .args(["-lnR", "--time-style=+"])
            .current_dir(root)
            .arg(dir),
    );
    out.lines()
        .filter(|l| !l.starts_with("total "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A tree `genboot mount` mounted; `genboot umount` on drop.
struct CliMount {
    root: PathBuf,
    dir: PathBuf,
}

impl CliMount {
    fn new(root: &Path, n: u32, name: &str) -> CliMount {
        let dir = fresh(&format!("mnt-{name}"));
        ok(run(root, &["mount", &n.to_string(), dir.to_str().unwrap()]));
        CliMount {
            root: root.to_path_buf(),
            dir,
        }
    }
}

impl Drop for CliMount {
    fn drop(&mut self) {
        let o = run(&self.root, &["umount", self.dir.to_str().unwrap()]);
        if !o.status.success() {
            eprintln!("genboot umount {}: {}", self.dir.display(), stderr(&o));
        }
    }
}

/// What the build rules do to the mmdebstrap output `pristine`: the same
/// rules on a scan of it, with the uid map its build ended with (its new
/// users are pinned there by then, so they keep their ids).
fn rules_of(pristine: &Path, root: &Path) -> RulesReport {
    let mut s = tree::scan_tree(pristine, Some(EPOCH)).unwrap();
    let mut ids = tree::UidMap::load(&state_dir(root).join("uid-map")).unwrap();
    rules::apply(
        &mut s.manifest,
        &mut s.contents,
        &Rules::default(),
        &mut ids,
    )
    .unwrap()
}

// ---------------------------------------------------------------------------
// The mmdebstrap generations.

#[test]
fn diff_shows_exactly_the_package_changes_and_the_new_user() {
    let t = trees();
    let json: serde_json::Value =
        serde_json::from_str(&ok(run(&t.a, &["diff", "1", "2", "--json"]))).unwrap();
    let text = ok(run(&t.a, &["diff", "1", "2"]));
    eprintln!("{text}");
    // Same kernel, parameters and initrd modules.
    assert_eq!(json["kernel"], serde_json::Value::Null, "{json:#}");
    for k in [
        "paramsAdded",
        "paramsRemoved",
        "initrdModulesAdded",
        "initrdModulesRemoved",
    ] {
        assert_eq!(json[k], serde_json::json!([]), "{k}");
    }
    let d = &json["tree"];
    // What dpkg itself says changed between the two mmdebstrap outputs.
    let by_key = |s: &BTreeSet<(String, String, String)>| -> BTreeMap<(String, String), String> {
        s.iter()
            .map(|(n, v, a)| ((n.clone(), a.clone()), v.clone()))
            .collect()
    };
    let (before, after) = (by_key(&t.base.dpkg), by_key(&t.extras.dpkg));
    let mut expected = Vec::new();
    for k in before.keys().chain(after.keys()).collect::<BTreeSet<_>>() {
        let (x, y) = (before.get(k), after.get(k));
        if x != y {
            expected.push((k.0.clone(), x.cloned(), y.cloned()));
        }
    }
    let s = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let got: Vec<(String, Option<String>, Option<String>)> = d["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (s(&p["name"]).unwrap(), s(&p["from"]), s(&p["to"])))
        .collect();
    assert_eq!(got, expected, "the diff's packages must be dpkg's");
    let names: Vec<&str> = got.iter().map(|p| p.0.as_str()).collect();
    assert!(
        names.contains(&"nginx-light") && names.contains(&"chrony"),
        "{names:?}"
    );
    assert!(d["packages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["change"] == "added"));
    // Exactly one new user and group; every other id pinned.
    for what in ["users", "groups"] {
        let list: Vec<(String, String)> = d[what]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| (s(&u["name"]).unwrap(), s(&u["change"]).unwrap()))
            .collect();
        assert_eq!(
            list,
            vec![("_chrony".to_string(), "added".to_string())],
            "{what}"
        );
    }
    // /etc defaults: the new packages' configuration appears.
    let etc: BTreeMap<String, String> = d["etc"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (s(&e["path"]).unwrap(), s(&e["change"]).unwrap()))
        .collect();
    for f in ["/etc/chrony/chrony.conf", "/etc/nginx/nginx.conf"] {
        assert_eq!(
            etc.get(f).map(String::as_str),
            Some("added"),
            "{f}: {etc:?}"
        );
    }
    assert!(d["files"]["added"].as_u64().unwrap() > 0);
    assert!(d["files"]["newContentBytes"].as_u64().unwrap() > 0);
    // The text says the same.
    assert!(text.contains("users: added _chrony (∅ → "), "{text}");
    assert!(
        text.contains("  added    /etc/chrony/chrony.conf"),
        "{text}"
    );
    let nginx = after
        .iter()
        .find(|((n, _), _)| n == "nginx-light")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("nginx-light")
                && l.ends_with(&format!("∅ → {nginx}"))),
        "{text}"
    );
    // The tree's own packages file agrees with dpkg too.
    let store = store_of(&t.a);
    let listed: BTreeSet<(String, String, String)> = tree::packages::parse_text(
        &fs::read(store.path(&tree_of(&t.a, 2)).join(tree::PACKAGES_FILE)).unwrap(),
    )
    .into_iter()
    .map(|p| (p.name, p.version, p.arch))
    .collect();
    assert_eq!(listed, t.extras.dpkg);
}

#[test]
fn fsck_erofs_passes_on_every_image() {
    require_tool("fsck.erofs", "erofs-utils");
    let t = trees();
    let mut n = 0;
    for root in [&t.a, &t.b] {
        let store = store_of(root);
        for sp in trees_in(root) {
            let img = store.path(&sp).join(tree::IMAGE_FILE);
            run_ok(Command::new("fsck.erofs").arg(&img));
            let size = fs::metadata(&img).unwrap().len();
            assert!(
                size < 8 << 20,
                "a metadata image should be small; {} is {size} bytes",
                img.display()
            );
            n += 1;
        }
    }
    assert_eq!(n, 3, "two trees under a, one under b");
}

#[test]
fn genboot_mount_shows_the_tree_mmdebstrap_built() {
    require_tool("getcap", "libcap2-bin");
    let t = trees();
    let pristine = &t.extras.pristine;
    let m = CliMount::new(&t.a, 2, "extras");
    let diffs = compare(pristine, &m.dir, &rules_of(pristine, &t.a), Some(EPOCH));
    assert!(
        diffs.is_empty(),
        "{} differences between the mmdebstrap output and the mounted tree:\n{}",
        diffs.len(),
        diffs[..diffs.len().min(40)].join("\n")
    );
    // The same through the tools people use.
    for dir in [
        "usr/bin",
        "usr/sbin",
        "usr/local/bin",
        "etc/ssh",
        "usr/lib/dbus-1.0",
    ] {
        if pristine.join(dir).exists() {
            let (x, y) = (ls(pristine, dir), ls(&m.dir, dir));
            if dir == "usr/lib/dbus-1.0" {
                // Group messagebus may be renumbered by the uid map.
                assert_eq!(x.lines().count(), y.lines().count());
                continue;
            }
            assert_eq!(x, y, "ls -ln {dir}");
        }
    }
    let caps = |root: &Path| -> String {
        let out = run_ok(Command::new("getcap").arg("-r").arg(".").current_dir(root));
        let mut l: Vec<&str> = out.lines().collect();
        l.sort();
        l.join("\n")
    };
    let c = caps(&m.dir);
    assert!(
        c.contains("./usr/local/bin/genboot-cap-test cap_net_raw=ep"),
        "getcap: {c}"
    );
    assert_eq!(caps(pristine), c);
    let suid = |root: &Path| {
        let out = run_ok(
            Command::new("find")
                .args([".", "-perm", "/6000", "-type", "f"])
                .current_dir(root),
        );
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    let s1 = suid(pristine);
    assert!(s1.iter().any(|l| l == "./usr/bin/passwd"), "{s1:?}");
    assert_eq!(s1, suid(&m.dir), "setuid/setgid files");
    // The rules' results, seen through the mount.
    assert_eq!(fs::read(m.dir.join("etc/machine-id")).unwrap(), b"");
    assert_eq!(
        fs::read_to_string(m.dir.join("etc/hostname")).unwrap(),
        "localhost\n"
    );
    assert!(m.dir.join("usr/lib/genboot/var/lib/dpkg/status").is_file());
    assert_eq!(fs::read_dir(m.dir.join("var/lib/dpkg")).unwrap().count(), 0);
    // Unmounting removes the private mount too.
    let dir = m.dir.clone();
    drop(m);
    assert!(!is_mount_point(&dir), "{} is still mounted", dir.display());
    let object = tree_of(&t.a, 2);
    let left: Vec<_> = fs::read_dir(tree::mount::RUN_DIR)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(object.hash.as_str())
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "private mounts left: {left:?}");
}

/// Real mounts, but as Debian 12's 6.1 kernel answers: `::` refused, and an
/// EROFS image in a file refused with ENOTBLK, so the image goes through a
/// real loop device (read-only, autoclear).
struct Legacy;
impl MountSys for Legacy {
    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fstype: &str,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> std::io::Result<()> {
        if data.is_some_and(|d| d.contains("::")) {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        if fstype == "erofs" && source.is_file() {
            return Err(std::io::Error::from_raw_os_error(libc::ENOTBLK));
        }
        RealSys.mount(source, target, fstype, flags, data)
    }
    fn umount(&self, target: &Path) -> std::io::Result<()> {
        RealSys.umount(target)
    }
    fn mount_loop(
        &self,
        file: &Path,
        target: &Path,
        fstype: &str,
        flags: libc::c_ulong,
    ) -> std::io::Result<PathBuf> {
        RealSys.mount_loop(file, target, fstype, flags)
    }
}

#[test]
fn the_legacy_overlay_form_hides_the_objects_and_shows_the_same_tree() {
    let t = trees();
    let dir = fresh("mnt-legacy");
    let (store, object) = (store_of(&t.a), tree_of(&t.a, 1));
    let m = mount_tree_with(
        &Legacy,
        Path::new(tree::mount::RUN_DIR),
        &store,
        &object,
        &dir,
    )
    .unwrap();
    let g = MountGuard(dir.clone());
    assert!(m.legacy);
    assert!(
        m.loop_device.is_some(),
        "the image should have gone through a loop device, as on 6.1"
    );
    let top: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !top.iter()
            .any(|n| n.len() == 2 && n.bytes().all(|c| c.is_ascii_hexdigit())),
        "object fan-out directories show in /: {top:?}"
    );
    assert!(top.contains(&"usr".to_string()) && top.contains(&"etc".to_string()));
    let sh = fs::read(dir.join("usr/bin/dash")).unwrap();
    assert_eq!(&sh[..4], b"\x7fELF");
    let a = ls(&dir, "usr/bin");
    drop(g);
    let g2 = mount(&store, &object, "modern");
    assert_eq!(
        ls(&g2.0, "usr/bin"),
        a,
        "both overlay forms show the same tree"
    );
}

#[test]
fn gc_after_deleting_a_generation_frees_exactly_its_unique_objects() {
    let t = trees();
    // On a copy of root a (its store hard-linked; lock files are not
    // shared): the other tests keep theirs.
    let copy = fresh("gc");
    let (from, to) = (state_dir(&t.a), state_dir(&copy));
    fs::create_dir_all(&to).unwrap();
    run_ok(
        Command::new("cp")
            .arg("-al")
            .arg(from.join("store"))
            .arg(&to),
    );
    for part in ["profiles", "cache", "uid-map"] {
        run_ok(Command::new("cp").arg("-a").arg(from.join(part)).arg(&to));
    }
    let _ = fs::remove_file(to.join("profiles/.lock"));
    let store = store_of(&copy);
    let (t1, t2) = (tree_of(&copy, 1), tree_of(&copy, 2));
    let m1 = tree::read_manifest(&store, &t1).unwrap().objects();
    let m2 = tree::read_manifest(&store, &t2).unwrap().objects();
    let unique: BTreeSet<[u8; 32]> = m1
        .keys()
        .filter(|k| !m2.contains_key(*k))
        .copied()
        .collect();
    assert!(
        !unique.is_empty(),
        "the base tree should have contents of its own (dpkg status, passwd, …)"
    );
    assert_eq!(
        contents(&copy),
        m1.keys().chain(m2.keys()).copied().collect(),
        "the content objects are exactly the trees' contents"
    );
    let gen1 = generation_name(&copy, 1);
    let before: BTreeSet<String> = support::store_objects(&copy).into_iter().collect();
    // Nothing goes while both generations live.
    let out = ok(run(&copy, &["gc"]));
    assert!(
        out.contains("0 generation(s), 0 store object(s), 0 content object(s)"),
        "{out}"
    );
    ok(run(&copy, &["delete", "1"]));
    let out = ok(run(&copy, &["gc"]));
    eprintln!("{out}");
    let bytes: u64 = unique.iter().map(|k| m1[k]).sum();
    assert!(
        out.contains(&format!(
            "deleted {} content object(s) no tree names ({bytes} bytes)",
            unique.len()
        )),
        "gc must free exactly the dropped tree's unique contents:\n{out}"
    );
    assert_eq!(
        contents(&copy),
        m2.keys().copied().collect(),
        "what is left is the live tree's contents"
    );
    // Of the store objects, the generation and its tree went; the kernel,
    // its modules and the initrd are generation 2's too.
    let after: BTreeSet<String> = support::store_objects(&copy).into_iter().collect();
    let gone: BTreeSet<String> = before.difference(&after).cloned().collect();
    assert_eq!(
        gone,
        [gen1, t1.base_name()].into_iter().collect(),
        "store objects deleted"
    );
    assert_verifies(&copy, "after gc");
    tree::build::remove_staging(&copy).unwrap();
}

#[test]
fn the_same_system_toml_under_two_roots_gives_the_same_tree_and_images() {
    let t = trees();
    let (sa, sb) = (store_of(&t.a), store_of(&t.b));
    let tb = trees_in(&t.b);
    assert_eq!(
        tb,
        vec![tree_of(&t.a, 1)],
        "same system.toml, same tree hash"
    );
    for f in [tree::IMAGE_FILE, tree::PACKAGES_FILE, tree::MANIFEST_FILE] {
        assert!(
            fs::read(sa.path(&tb[0]).join(f)).unwrap()
                == fs::read(sb.path(&tb[0]).join(f)).unwrap(),
            "{f} differs between two builds of the same system.toml"
        );
    }
    // The whole generation is the same object (kernel, initrd, boot.json).
    let g1 = generation_name(&t.a, 1);
    assert!(
        t.b_generation.trim().ends_with(&g1),
        "{} vs {g1}",
        t.b_generation
    );
    assert_ne!(
        tree_of(&t.a, 1),
        tree_of(&t.a, 2),
        "other packages, other tree"
    );
    // The uid maps agree; the extras build only added.
    let a = tree::UidMap::load(&state_dir(&t.a).join("uid-map")).unwrap();
    let b = tree::UidMap::load(&state_dir(&t.b).join("uid-map")).unwrap();
    for (n, id) in &b.users {
        assert_eq!(a.users.get(n), Some(id), "user {n}");
    }
    assert!(a.users.contains_key("_chrony") && !b.users.contains_key("_chrony"));
    assert_verifies(&t.a, "root a");
    assert_verifies(&t.b, "root b");
}

#[test]
fn an_unchanged_system_toml_rebuilds_nothing() {
    let t = trees();
    let log = state_dir(&t.b).join("logs/build-debian-tree.log");
    let stamp = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    let was = stamp(&log);
    let before = (support::store_objects(&t.b), contents(&t.b));
    // A tree build or import would fail here (the generation object is
    // written again, as always, and found in the store).
    let every: Vec<&str> = genboot::failpoint::ALL
        .iter()
        .filter(|p| p.starts_with("tree::"))
        .copied()
        .collect();
    let fps: Vec<String> = every.iter().map(|p| format!("{p}=error")).collect();
    let mut c = support::genboot();
    c.env("GENBOOT_FAILPOINTS", fps.join(","))
        .arg("--root")
        .arg(&t.b)
        .args(["build", "--config", t.base_cfg.to_str().unwrap()]);
    let out = ok(c.output().unwrap());
    assert_eq!(out, t.b_generation, "the same generation");
    assert_eq!(stamp(&log), was, "mmdebstrap did not run again");
    assert_eq!((support::store_objects(&t.b), contents(&t.b)), before);
}

#[test]
fn the_kernel_comes_from_the_tree_and_its_modules_are_stored_once() {
    let t = trees();
    let store = store_of(&t.a);
    let boot = boot_json(&t.a, 1);
    let g = &boot["org.genboot.v1"];
    let tree = tree_of(&t.a, 1);
    assert_eq!(g["tree"]["object"], tree.boot_path());
    assert_eq!(
        g["tree"]["image"],
        format!("{}/{}", tree.boot_path(), tree::IMAGE_FILE)
    );
    let image = fs::read(store.path(&tree).join(tree::IMAGE_FILE)).unwrap();
    assert_eq!(
        g["tree"]["imageSha256"],
        genboot_format::hex(&Sha256::digest(&image))
    );
    assert_eq!(g["tree"]["objects"], "/var/lib/genboot/store/objects");
    // The kernel is the tree's (linux-image-amd64 of the local mirror).
    let release = g["kernelRelease"].as_str().unwrap();
    assert!(
        t.base
            .pristine
            .join(format!("boot/vmlinuz-{release}"))
            .is_file(),
        "{release}"
    );
    // The generation links its tree.
    let gen_dir = state_dir(&t.a).join("profiles/system-1-link");
    assert_eq!(
        fs::read_link(gen_dir.join("tree")).unwrap(),
        Path::new(&format!("../{}", tree.base_name()))
    );
    // Each module file of the kernel-modules object is the tree's content
    // object itself (a hard link), not a copy.
    let km = fs::canonicalize(gen_dir.join("kernel-modules")).unwrap();
    let m = tree::read_manifest(&store, &tree).unwrap();
    let objects = Objects::of(&store);
    let prefix = format!("/usr/lib/modules/{release}/");
    let mut linked = 0;
    for (path, e) in m.entries.range(prefix.as_bytes().to_vec()..) {
        if !path.starts_with(prefix.as_bytes()) {
            break;
        }
        let Some(tree::manifest::Kind::File { size, sha256, .. }) = e.kind() else {
            continue;
        };
        // The module files (genboot writes kmod's index files itself).
        if *size <= tree::manifest::INLINE_MAX || !path.ends_with(b".ko") {
            continue;
        }
        let rel = OsStr::from_bytes(&path[prefix.len()..]);
        let in_km = km.join("lib/modules").join(release).join(rel);
        assert_eq!(
            fs::metadata(&in_km).unwrap().ino(),
            fs::metadata(objects.path(sha256)).unwrap().ino(),
            "{}",
            in_km.display()
        );
        linked += 1;
    }
    assert!(linked > 1000, "{linked} module files");
}

// ---------------------------------------------------------------------------
// Synthetic trees (no mmdebstrap): the kernel taken from a tree, picked
// among several, the verbs on them and their errors.

/// A small OS tree at `dir` with a synthetic kernel and modules for each
/// of `releases` (`/boot/vmlinuz-R`, `/usr/lib/modules/R`), usrmerged.
fn synthetic_os(dir: &Path, releases: &[&str]) {
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::create_dir_all(dir.join("usr/bin")).unwrap();
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
    fs::write(dir.join("etc/os-release"), "ID=synthetic\n").unwrap();
    fs::write(dir.join("usr/bin/hello"), vec![b'h'; 1000]).unwrap();
    if !dir.join("lib").exists() {
        std::os::unix::fs::symlink("usr/lib", dir.join("lib")).unwrap();
    }
    for r in releases {
        add_kernel(dir, r);
    }
}

fn add_kernel(dir: &Path, release: &str) {
    fs::create_dir_all(dir.join("boot")).unwrap();
    fs::write(
        dir.join(format!("boot/vmlinuz-{release}")),
        synthetic_bzimage(release),
    )
    .unwrap();
    let m = dir.join(format!("usr/lib/modules/{release}"));
    let vermagic = format!("vermagic={release} SMP preempt mod_unload modversions ");
    for (path, name, deps, extra) in support::basic_modules() {
        let (n, d) = (format!("name={name}"), format!("depends={deps}"));
        let mut info = vec![d.as_str(), n.as_str(), vermagic.as_str()];
        info.extend_from_slice(extra);
        let p = m.join("kernel").join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, fake_ko(&info)).unwrap();
    }
    fs::write(m.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
}

/// A system.toml with `source = "dir"` at `tree` and the kernel from the
/// tree (`release` when given).
fn dir_config(name: &str, tree: &Path, release: Option<&str>) -> PathBuf {
    let p = tree_config(
        name,
        "Synthetic OS",
        &format!("source = \"dir\"\npath = {tree:?}\nsource_date_epoch = {EPOCH}\n"),
    );
    let text = fs::read_to_string(&p).unwrap();
    let text = text
        .replace(
            "modules = [\"virtio_blk\", \"virtio_pci\", \"ext4\"]",
            "modules = [\"virtio_blk\"]",
        )
        .replace(
            "[kernel]\n",
            &match release {
                Some(r) => format!("[kernel]\nrelease = {r:?}\n"),
                None => "[kernel]\n".into(),
            },
        );
    fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_tree_kernel_is_taken_picked_and_cached() {
    let w = fresh("synthetic-kernel");
    let (os, root) = (w.join("os"), w.join("root"));
    synthetic_os(&os, &["6.1.0-1-synthetic"]);
    wait_settled(&os);
    let cfg = dir_config("synthetic", &os, None);
    let c = cfg.to_str().unwrap();
    let gen1 = ok(run_fp(&root, "", &["switch", "--config", c]));
    let boot = boot_json(&root, 1);
    assert_eq!(boot["org.genboot.v1"]["kernelRelease"], "6.1.0-1-synthetic");
    let t1 = tree_in(&boot);
    assert_verifies(&root, "after the first switch");
    // Unchanged: the tree is neither read nor imported again.
    let tree_points: Vec<String> = genboot::failpoint::ALL
        .iter()
        .filter(|p| p.starts_with("tree::"))
        .map(|p| format!("{p}=error"))
        .collect();
    let again = ok(run_fp(
        &root,
        &tree_points.join(","),
        &["build", "--config", c],
    ));
    assert_eq!(again, gen1);
    // A second kernel: without release, the tree's newest is taken (by
    // Debian's version order, as for kernels installed below --root).
    add_kernel(&os, "6.1.0-10-synthetic");
    ok(run_fp(&root, "", &["switch", "--config", c]));
    let boot2 = boot_json(&root, 2);
    assert_eq!(
        boot2["org.genboot.v1"]["kernelRelease"],
        "6.1.0-10-synthetic"
    );
    let t2 = tree_in(&boot2);
    assert_ne!(t1, t2, "a changed dir is another tree");
    let d: serde_json::Value =
        serde_json::from_str(&ok(run(&root, &["diff", "1", "2", "--json"]))).unwrap();
    assert_eq!(
        d["kernel"],
        serde_json::json!(["6.1.0-1-synthetic", "6.1.0-10-synthetic"])
    );
    let by_dir: Vec<&str> = d["tree"]["files"]["byDir"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["dir"].as_str().unwrap())
        .collect();
    assert_eq!(by_dir, ["/boot", "/usr/lib"], "{d:#}");
    // A pattern picks the newest it matches: generation 3, the same tree.
    let cfg2 = dir_config("synthetic2", &os, Some("6.1.0-1-*"));
    ok(run_fp(
        &root,
        "",
        &["switch", "--config", cfg2.to_str().unwrap()],
    ));
    let boot3 = boot_json(&root, 3);
    assert_eq!(
        boot3["org.genboot.v1"]["kernelRelease"],
        "6.1.0-1-synthetic"
    );
    assert_eq!(tree_in(&boot3), t2);
    // A pattern no kernel of the tree matches is refused naming the key
    // and the tree's kernels; nothing changes in the store.
    let cfg3 = dir_config("synthetic3", &os, Some("5.10.*"));
    let before = snapshot(&state_dir(&root));
    let o = run_fp(&root, "", &["build", "--config", cfg3.to_str().unwrap()]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(
        e.contains(&format!(
            "{}: [kernel] release = \"5.10.*\", but no kernel of the tree",
            cfg3.display()
        )) && e.contains("it has, newest first: 6.1.0-10-synthetic, 6.1.0-1-synthetic")
            && e.contains("Hint: set release to one of the tree's kernels"),
        "{e}"
    );
    assert_eq!(
        snapshot(&state_dir(&root)),
        before,
        "the refused build changed the state"
    );
    assert_verifies(&root, "after the switches");
}

/// The tree's kernel gets the tree's CPU microcode (`/usr/lib/firmware/
/// intel-ucode`) as the early archive in front of its initrd, as a kernel
/// on this machine gets the machine's (issue 13); another microcode in the
/// tree is another kernel identity, so another initrd.
#[test]
fn a_tree_kernel_starts_with_the_trees_microcode() {
    let w = fresh("synthetic-microcode");
    let (os, root) = (w.join("os"), w.join("root"));
    synthetic_os(&os, &["6.1.0-1-synthetic"]);
    let ucode = os.join("usr/lib/firmware/intel-ucode");
    fs::create_dir_all(&ucode).unwrap();
    fs::write(ucode.join("06-55-04"), b"INTEL-A;").unwrap();
    let cfg = dir_config("microcode", &os, None);
    let c = cfg.to_str().unwrap();
    let initrd = |n: u32| {
        fs::read(state_dir(&root).join(format!("profiles/system-{n}-link/initrd"))).unwrap()
    };
    // The early archive is uncompressed newc; the main one is compressed,
    // so the microcode's bytes in the clear are the early archive's.
    let early_has = |i: &[u8], what: &[u8]| {
        i.starts_with(b"070701") && i.windows(what.len()).any(|x| x == what)
    };
    ok(run_fp(&root, "", &["switch", "--config", c]));
    let one = initrd(1);
    assert!(
        early_has(&one, b"kernel/x86/microcode/GenuineIntel.bin") && early_has(&one, b"INTEL-A;"),
        "generation 1's initrd starts with the tree's microcode"
    );
    fs::write(ucode.join("06-8f-08"), b"INTEL-B;").unwrap();
    ok(run_fp(&root, "", &["switch", "--config", c]));
    assert!(
        early_has(&initrd(2), b"INTEL-A;INTEL-B;"),
        "generation 2's initrd has the tree's new microcode"
    );
    // microcode = false: the compressed archive alone.
    let text = fs::read_to_string(&cfg)
        .unwrap()
        .replace("[initrd]\n", "[initrd]\nmicrocode = false\n");
    fs::write(&cfg, text).unwrap();
    ok(run_fp(&root, "", &["switch", "--config", c]));
    assert!(!initrd(3).starts_with(b"070701"), "no early archive");
    assert_verifies(&root, "after the switches");
}

/// Wait until the newest change below `dir` is older than the input
/// cache's racy window (2 s): only then does a build record its inputs
/// (genboot's rule, as git's for racily clean files), and the tests that
/// check the cache need it recorded.
fn wait_settled(dir: &Path) {
    fn newest(p: &Path) -> i128 {
        let m = fs::symlink_metadata(p).unwrap();
        let mut n = i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec());
        if m.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                n = n.max(newest(&e.unwrap().path()));
            }
        }
        n
    }
    let settled_at = newest(dir) + 2_100_000_000;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128;
        if now > settled_at {
            return;
        }
        assert!(Instant::now() < deadline, "the clock does not move");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn mount_diff_and_gc_of_synthetic_generations() {
    let w = fresh("synthetic-verbs");
    let (os, root) = (w.join("os"), w.join("root"));
    synthetic_os(&os, &["6.1.0-1-synthetic"]);
    let cfg = dir_config("verbs", &os, None);
    ok(run_fp(
        &root,
        "",
        &["switch", "--config", cfg.to_str().unwrap()],
    ));
    fs::write(os.join("etc/os-release"), "ID=synthetic\nVERSION=2\n").unwrap();
    fs::write(os.join("usr/bin/new"), vec![b'n'; 5000]).unwrap();
    fs::write(os.join("usr/bin/hello"), vec![b'H'; 1000]).unwrap();
    ok(run_fp(
        &root,
        "",
        &["switch", "--config", cfg.to_str().unwrap()],
    ));
    let t1 = tree_of(&root, 1);
    let text = ok(run(&root, &["diff", "1", "2"]));
    assert!(
        text.contains("files: 1 added, 0 removed, 2 changed"),
        "{text}"
    );
    assert!(
        text.contains("  changed  /etc/os-release (content)"),
        "{text}"
    );
    assert!(!text.contains("packages:"), "no dpkg, no packages: {text}");
    // Mounted, generation 1's tree survives its deletion and a gc.
    let m = CliMount::new(&root, 1, "synthetic1");
    assert_eq!(
        fs::read_to_string(m.dir.join("etc/os-release")).unwrap(),
        "ID=synthetic\n"
    );
    assert_eq!(
        fs::read(m.dir.join("usr/bin/hello")).unwrap(),
        vec![b'h'; 1000]
    );
    ok(run(&root, &["delete", "1"]));
    let out = ok(run(&root, &["gc"]));
    assert!(
        trees_in(&root).contains(&t1),
        "gc took a mounted tree: {out}"
    );
    assert_eq!(
        fs::read(m.dir.join("usr/bin/hello")).unwrap(),
        vec![b'h'; 1000]
    );
    drop(m);
    let out = ok(run(&root, &["gc"]));
    assert!(!trees_in(&root).contains(&t1), "{out}");
    assert!(
        out.contains("deleted 1 content object(s) no tree names (1000 bytes)"),
        "only the old hello is generation 1's own (os-release is inline, the kernel shared): {out}"
    );
    assert_verifies(&root, "after gc");
}

#[test]
fn verbs_name_what_is_wrong() {
    let w = fresh("verb-errors");
    let t = SyntheticTree::new(&support::basic_modules());
    let root = w.join("root");
    // A generation without a tree.
    let cfg = write_config(&w.join("plain"), &t.k, &[], "");
    ok(run_fp(
        &root,
        "",
        &["switch", "--config", cfg.to_str().unwrap()],
    ));
    let dir = fresh("mnt-none");
    let o = run(&root, &["mount", "1", dir.to_str().unwrap()]);
    assert!(
        stderr(&o).contains("generation 1 has no tree") && stderr(&o).contains("Hint:"),
        "{}",
        stderr(&o)
    );
    let o = run(&root, &["mount", "7", dir.to_str().unwrap()]);
    assert!(
        stderr(&o).contains("generation 7 does not exist"),
        "{}",
        stderr(&o)
    );
    assert!(!is_mount_point(&dir));
    let text = ok(run(&root, &["diff", "1", "1"]));
    assert!(text.contains("generation 1 has no tree"), "{text}");
    let o = run(&root, &["umount", dir.to_str().unwrap()]);
    assert!(
        stderr(&o).contains("not a tree genboot mounted"),
        "{}",
        stderr(&o)
    );
    // A tree without a kernel, and no [kernel] image: refused before import.
    let os = w.join("os");
    synthetic_os(&os, &[]);
    let before = snapshot(&state_dir(&root));
    let cfg = dir_config("nokernel", &os, None);
    let o = run_fp(&root, "", &["build", "--config", cfg.to_str().unwrap()]);
    assert!(
        stderr(&o).contains("has no kernel") && stderr(&o).contains("linux-image-amd64"),
        "{}",
        stderr(&o)
    );
    assert_eq!(snapshot(&state_dir(&root)), before);
}

// ---------------------------------------------------------------------------
// A smaller real tree for the crash and space tests: part of the extras
// tree (its /etc, /usr/sbin, /usr/local, /var, /dev and the usrmerge links;
// about 20 MB in 1,100 files, setuid programs and a file capability).

fn subset() -> &'static PathBuf {
    static SUB: OnceLock<PathBuf> = OnceLock::new();
    SUB.get_or_init(|| {
        let t = trees();
        let src = &t.extras.pristine;
        let dst = work().join("subset");
        fs::create_dir_all(&dst).unwrap();
        let parts = [
            "./etc",
            "./usr/sbin",
            "./usr/local",
            "./var",
            "./dev",
            "./bin",
            "./sbin",
            "./lib",
            "./lib64",
        ];
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar --xattrs --xattrs-include='*' -C '{}' -cf - {} | tar --xattrs --xattrs-include='*' -C '{}' -xpf -",
                src.display(),
                parts.join(" "),
                dst.display()
            ))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "copying a subset of the tree with tar failed");
        dst
    })
}

fn dir_spec(label: &str) -> TreeSpec {
    TreeSpec {
        label: label.into(),
        source: TreeSource::Dir(subset().clone()),
        epoch: Some(EPOCH),
        rules: Rules::default(),
    }
}

/// The child side of the crash tests: import as the environment says.
/// Not a test of its own (it needs the parent's setup).
#[test]
#[ignore = "child process of crash_at_each_failpoint_of_a_moving_import; run that instead"]
fn crash_child() {
    let spec = std::env::var("GENBOOT_TREE_CRASH")
        .expect("crash_child runs only as the child of the crash tests (GENBOOT_TREE_CRASH unset)");
    let f: Vec<&str> = spec.split('\n').collect();
    let (mode, root, src, label) = (f[0], f[1], f[2], f[3]);
    let st = State::open(Path::new(root)).unwrap();
    let store = Store::open(&st).unwrap();
    let mode = if mode == "move" {
        ImportMode::Move
    } else {
        ImportMode::Copy
    };
    let spec = dir_spec_for(label, Path::new(src));
    import_root(
        &store,
        &st.dir,
        Path::new(src),
        &spec,
        mode,
        Vec::new(),
        None,
    )
    .unwrap_or_else(|e| panic!("import failed: {e}"));
}

fn dir_spec_for(label: &str, src: &Path) -> TreeSpec {
    TreeSpec {
        label: label.into(),
        source: TreeSource::Dir(src.to_path_buf()),
        epoch: Some(EPOCH),
        rules: Rules::default(),
    }
}

/// Everything a crash must leave right: every tree object verifies, every
/// object hashes to its name, nothing partial has a store name.
fn assert_consistent(store: &Store, what: &str) {
    for sp in store.objects().unwrap() {
        assert!(
            tree::is_tree(store, &sp),
            "{what}: {} is not a complete tree object",
            sp.base_name()
        );
        assert_eq!(tree::verify_tree(store, &sp).unwrap(), vec![], "{what}");
    }
    assert_eq!(Objects::of(store).verify_all().unwrap(), vec![], "{what}");
}

/// Run [`crash_child`] in a child process with `GENBOOT_FAILPOINTS=failpoints`.
fn child(mode: &str, root: &Path, src: &Path, failpoints: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "tree::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GENBOOT_FAILPOINTS", failpoints)
        .env(
            "GENBOOT_TREE_CRASH",
            format!("{mode}\n{}\n{}\ncrash", root.display(), src.display()),
        )
        .output()
        .unwrap()
}

fn crash_mode(mode: &str) {
    let src = subset().clone();
    // The reference: a clean import.
    let (rst, rstore) = state(&format!("crash-{mode}-reference"));
    let reference = import_root(
        &rstore,
        &rst.dir,
        &src,
        &dir_spec("crash"),
        ImportMode::Copy,
        Vec::new(),
        None,
    )
    .unwrap();
    let ref_objects: BTreeSet<[u8; 32]> = Objects::of(&rstore)
        .list()
        .unwrap()
        .into_iter()
        .map(|o| o.0)
        .collect();
    let ref_map = fs::read(rst.dir.join("uid-map")).unwrap();
    // The import's points (`tree::source-ready` is before it, in the build:
    // the CLI test covers it).
    let points: Vec<&str> = genboot::failpoint::ALL
        .iter()
        .copied()
        .filter(|p| p.starts_with("tree::") && *p != "tree::source-ready")
        .collect();
    assert!(points.len() >= 7, "{points:?}");
    for fp in points {
        let (st, store) = state(&format!("crash-{mode}-{}", fp.replace("::", "-")));
        // What the import reads: the tree itself (copy) or a staging copy
        // in the store (move).
        let stage = |n: u32| -> PathBuf {
            if mode == "copy" {
                return src.clone();
            }
            let s = store.dir.join(format!(".tmp-build-test-{n}"));
            fs::create_dir(&s).unwrap();
            run_ok(Command::new("cp").arg("-a").arg(&src).arg(s.join("root")));
            s.join("root")
        };
        // An injected error: the import fails and cleans up after itself.
        {
            let (est, estore) = state(&format!("crash-{mode}-{}-error", fp.replace("::", "-")));
            let src1 = if mode == "copy" {
                src.clone()
            } else {
                let s = estore.dir.join(".tmp-build-test-0");
                fs::create_dir(&s).unwrap();
                run_ok(Command::new("cp").arg("-a").arg(&src).arg(s.join("root")));
                s.join("root")
            };
            let out = child(mode, &est.root, &src1, &format!("{fp}=error"));
            assert_eq!(
                out.status.code(),
                Some(101),
                "{mode} {fp}=error: the import should fail:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                String::from_utf8_lossy(&out.stderr)
                    .contains(&format!("failpoint {fp} injected an error")),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_consistent(&estore, &format!("{mode}: after an error at {fp}"));
            let tmp: Vec<PathBuf> = estore
                .leftovers()
                .unwrap()
                .into_iter()
                .filter(|p| !p.ends_with(".tmp-build-test-0"))
                .collect();
            assert!(tmp.is_empty(), "{mode} {fp}=error left {tmp:?}");
            assert!(
                Objects::of(&estore).leftovers().is_empty(),
                "{mode} {fp}=error"
            );
            tree::build::remove_staging(&est.root).unwrap();
        }
        let first = stage(1);
        let out = child(mode, &st.root, &first, fp);
        assert_eq!(
            out.status.code(),
            Some(99),
            "{mode} {fp}: the child should stop at the failpoint:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_consistent(&store, &format!("{mode}: after a crash at {fp}"));
        let visible = store.objects().unwrap();
        if fp == "tree::renamed" {
            assert_eq!(visible, vec![reference.imported.object.clone()], "{fp}");
        } else {
            assert!(
                visible.is_empty(),
                "{mode} {fp}: no tree may be visible yet: {visible:?}"
            );
        }
        // The re-run converges on the same tree.
        if mode == "move" {
            tree::build::remove_staging(first.parent().unwrap()).unwrap();
        }
        let again = stage(2);
        let r = import_root(
            &store,
            &st.dir,
            &again,
            &dir_spec("crash"),
            if mode == "move" {
                ImportMode::Move
            } else {
                ImportMode::Copy
            },
            Vec::new(),
            None,
        )
        .unwrap_or_else(|e| panic!("{mode} {fp}: re-run failed: {e}"));
        assert_eq!(r.imported.object, reference.imported.object, "{mode} {fp}");
        assert_consistent(&store, &format!("{mode}: after the re-run of {fp}"));
        // Leftovers are only temporary names, and gc takes them.
        for l in store.leftovers().unwrap() {
            let n = l.file_name().unwrap().to_string_lossy().into_owned();
            assert!(n.starts_with(".tmp-"), "{n}");
            tree::build::remove_staging(&l).unwrap();
        }
        tree::collect_objects(&store, &tree::trees(&store).unwrap()).unwrap();
        assert!(Objects::of(&store).leftovers().is_empty());
        let objects: BTreeSet<[u8; 32]> = Objects::of(&store)
            .list()
            .unwrap()
            .into_iter()
            .map(|o| o.0)
            .collect();
        assert_eq!(objects, ref_objects, "{mode} {fp}: the store converged");
        assert_eq!(
            fs::read(st.dir.join("uid-map")).unwrap(),
            ref_map,
            "{mode} {fp}: uid map"
        );
        fs::remove_dir_all(&st.root).ok();
        tree::build::remove_staging(&st.root).ok();
    }
}

#[test]
fn crash_at_each_failpoint_of_a_moving_import() {
    crash_mode("move");
}

/// A system.toml importing `src` (`source = "dir"`) with the synthetic
/// kernel `t` (small and quick: the crash and space tests run many builds).
fn subset_config(name: &str, t: &SyntheticTree, src: &Path) -> PathBuf {
    write_config(
        &work().join(format!("cfg-{name}")),
        &t.k,
        &[],
        &format!("\n[tree]\nsource = \"dir\"\npath = {src:?}\nsource_date_epoch = {EPOCH}\n"),
    )
}

/// Leftovers of interrupted builds and imports in the store below `root`.
fn leftovers(root: &Path) -> Vec<String> {
    let store = state_dir(root).join("store");
    let mut v: Vec<String> = support::dir_names(&store)
        .into_iter()
        .chain(support::dir_names(&store.join("objects")))
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_crash_or_error_at_each_tree_failpoint_leaves_a_verified_store_and_a_rerun_converges() {
    let src = subset().clone();
    let t = SyntheticTree::new(&support::basic_modules());
    let cfg = subset_config("crash", &t, &src);
    let c = cfg.to_str().unwrap();
    // The reference: a clean switch (gc keeps what a generation reaches).
    let reference_root = fresh("crash-reference");
    let reference = ok(run_fp(&reference_root, "", &["switch", "--config", c]));
    let ref_contents = contents(&reference_root);
    let ref_trees = trees_in(&reference_root);
    let ref_map = fs::read(state_dir(&reference_root).join("uid-map")).unwrap();
    let points: Vec<&str> = genboot::failpoint::ALL
        .iter()
        .copied()
        .filter(|p| p.starts_with("tree::"))
        .collect();
    assert!(points.len() >= 8, "{points:?}");
    for fp in points {
        let name = fp.replace("::", "-");
        // An injected error: the build fails, cleans up, nothing is wrong.
        let root = fresh(&format!("crash-{name}-error"));
        let o = run_fp(&root, &format!("{fp}=error"), &["switch", "--config", c]);
        assert!(
            !o.status.success()
                && stderr(&o).contains(&format!("failpoint {fp} injected an error")),
            "{fp}=error:\n{}",
            stderr(&o)
        );
        assert_verifies(&root, &format!("after an error at {fp}"));
        assert!(
            leftovers(&root).is_empty(),
            "{fp}=error left {:?}",
            leftovers(&root)
        );
        tree::build::remove_staging(&root).unwrap();
        // A crash: the store verifies, no partial tree is visible, and the
        // re-run builds the reference's generation.
        let root = fresh(&format!("crash-{name}"));
        let o = run_fp(&root, fp, &["switch", "--config", c]);
        assert_eq!(
            o.status.code(),
            Some(99),
            "{fp}: the build should stop at the failpoint:\n{}",
            stderr(&o)
        );
        assert_verifies(&root, &format!("after a crash at {fp}"));
        let visible = trees_in(&root);
        if fp == "tree::renamed" {
            assert_eq!(visible, ref_trees, "{fp}");
        } else {
            assert!(visible.is_empty(), "{fp}: a tree is visible: {visible:?}");
        }
        let again = ok(run_fp(&root, "", &["switch", "--config", c]));
        assert_eq!(
            again,
            reference.replace(reference_root.to_str().unwrap(), root.to_str().unwrap()),
            "{fp}: the re-run converges"
        );
        // gc takes the leftovers; what stays is what a clean build makes.
        ok(run(&root, &["gc"]));
        assert!(leftovers(&root).is_empty(), "{fp}: {:?}", leftovers(&root));
        assert_eq!(contents(&root), ref_contents, "{fp}: content objects");
        assert_eq!(
            fs::read(state_dir(&root).join("uid-map")).unwrap(),
            ref_map,
            "{fp}: uid map"
        );
        assert_verifies(&root, &format!("after the re-run of {fp}"));
        tree::build::remove_staging(&root).unwrap();
    }
}

#[test]
fn a_full_disk_is_refused_before_any_write() {
    let src = subset().clone();
    let t = SyntheticTree::new(&support::basic_modules());
    let cfg = subset_config("full", &t, &src);
    let top = fresh("full");
    let _u = Tmpfs::new(&top, "8m");
    let o = run_fp(
        &top.join("root"),
        "",
        &["build", "--config", cfg.to_str().unwrap()],
    );
    let e = stderr(&o);
    eprintln!("{e}");
    assert!(!o.status.success());
    assert!(
        e.contains("not enough space in")
            && e.contains("MiB")
            && e.contains("free; nothing was written")
            && e.contains("Hint: free space (`genboot gc`"),
        "{e}"
    );
    let root = top.join("root");
    assert!(
        support::store_objects(&root).is_empty(),
        "{:?}",
        support::store_objects(&root)
    );
    assert!(
        !state_dir(&root).join("uid-map").exists(),
        "not even the uid map"
    );
}

#[test]
fn a_tree_build_that_would_not_fit_is_refused_before_mmdebstrap_runs() {
    let src = subset().clone();
    let t = SyntheticTree::new(&support::basic_modules());
    let top = fresh("full-build");
    // Room for the subset (about 20 MB) once, not for a second build of
    // the same size.
    let _u = Tmpfs::new(&top, "32m");
    let root = top.join("root");
    // The last tree of this name ("Test system" → rootfs-test-system).
    let cfg = subset_config("fit", &t, &src);
    ok(run_fp(
        &root,
        "",
        &["switch", "--config", cfg.to_str().unwrap()],
    ));
    let before = snapshot(&state_dir(&root));
    let mm = tree_config("fit-mm", "Test system", &mm_tree(&[]));
    let o = run(&root, &["build", "--config", mm.to_str().unwrap()]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(
        e.contains("to build this tree: mmdebstrap writes about")
            && e.contains("(the size of the last build, ")
            && e.contains("rootfs-test-system), ")
            && e.contains("free; nothing was written")
            && e.contains("Hint: free space"),
        "{e}"
    );
    assert!(
        !state_dir(&root).join("logs").exists(),
        "mmdebstrap did not run"
    );
    assert_eq!(snapshot(&state_dir(&root)), before);
}

// ---------------------------------------------------------------------------
// mmdebstrap's errors through the CLI: each names the key and changes
// nothing (each fails within seconds).

#[test]
fn an_unknown_package_names_the_key_and_changes_nothing() {
    let root = fresh("unknown-package");
    let cfg = tree_config("unknown", LABEL, &mm_tree(&["no-such-package-genboot"]));
    let o = run(&root, &["build", "--config", cfg.to_str().unwrap()]);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains("Unable to locate package no-such-package-genboot"),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "{}: [tree] packages lists \"no-such-package-genboot\"",
            cfg.display()
        )),
        "{e}"
    );
    assert!(
        support::store_objects(&root).is_empty(),
        "nothing left in the store"
    );
    assert!(
        tree::mount::mounts_below(&root).unwrap().is_empty(),
        "no mount left behind"
    );
}

#[test]
fn an_unreachable_mirror_says_so() {
    let root = fresh("no-mirror");
    let text = mm_tree(&[]).replace(
        &format!("file://{}", debian::mirror().display()),
        "http://127.0.0.1:9/debian",
    );
    let cfg = tree_config("no-mirror", LABEL, &text);
    let o = run(&root, &["build", "--config", cfg.to_str().unwrap()]);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains("could not reach the mirror") && e.contains("127.0.0.1:9"),
        "{e}"
    );
    assert!(e.contains("[tree] mirror"), "{e}");
    assert!(support::store_objects(&root).is_empty());
}

// ---------------------------------------------------------------------------
// A hostile tree (no mmdebstrap): odd names, every file type, hard links,
// capabilities, big symlinks, odd owners and modes.

#[test]
fn a_hostile_tree_round_trips_through_import_and_mount() {
    require_tool("setcap", "libcap2-bin");
    let (st, store) = state("hostile");
    let r = work().join("hostile-src");
    let _ = fs::remove_dir_all(&r);
    fs::create_dir_all(r.join("d/sub")).unwrap();
    let sh = |cmd: &str| run_ok(Command::new("sh").arg("-c").arg(cmd).current_dir(&r));
    fs::write(r.join("d/new\nline"), b"x").unwrap();
    fs::write(
        r.join(OsStr::from_bytes(b"d/bytes \xff\x01\\=")),
        vec![1u8; 65],
    )
    .unwrap();
    fs::write(r.join("d/sixty-four"), vec![2u8; 64]).unwrap();
    fs::write(r.join("d/empty"), b"").unwrap();
    fs::write(r.join("d/big"), vec![3u8; 300_000]).unwrap();
    fs::write(r.join(format!("d/{}", "n".repeat(255))), b"long name").unwrap();
    sh("ln d/big d/big-link1 && ln d/big d/sub/big-link2");
    sh("chmod 4755 d/big && chown 0:42 d/sixty-four && chmod 0640 d/sixty-four");
    sh("chown 100000:100001 d/empty && chmod 1777 d/sub && chmod 2755 d");
    sh("mknod d/null c 1 3 && mknod d/loop b 7 0 && mkfifo d/fifo && chmod 0600 d/fifo");
    sh("setcap cap_net_raw+ep d/big-link1 && setfattr -n user.comment -v 'hello world' d/sixty-four");
    std::os::unix::fs::symlink("t".repeat(4000), r.join("d/long-link")).unwrap();
    std::os::unix::fs::symlink("../d/big", r.join("d/sub/rel")).unwrap();
    let sock = std::os::unix::net::UnixListener::bind(r.join("d/socket")).unwrap();
    drop(sock);
    let spec = TreeSpec {
        label: "hostile".into(),
        source: TreeSource::Dir(r.clone()),
        epoch: None,
        rules: Rules::default(),
    };
    let built = tree::build_tree(&store, &st.dir, &spec).unwrap();
    assert_eq!(
        built.rules,
        RulesReport::default(),
        "no rule applies to a tree without /etc"
    );
    let obj = built.imported.object.clone();
    assert_eq!(tree::verify_tree(&store, &obj).unwrap(), vec![]);
    require_tool("fsck.erofs", "erofs-utils");
    run_ok(Command::new("fsck.erofs").arg(store.path(&obj).join(tree::IMAGE_FILE)));
    // Importing again (nothing changed) is a no-op.
    let again = tree::build_tree(&store, &st.dir, &spec).unwrap();
    assert!(again.imported.existed);
    let m = mount(&store, &obj, "hostile");
    let diffs = compare(&r, &m.0, &RulesReport::default(), None);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    assert_eq!(
        fs::read_link(m.0.join("d/long-link"))
            .unwrap()
            .as_os_str()
            .len(),
        4000
    );
    drop(m);
    // A mount point inside the tree is refused, naming it.
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(r.join("d/sub")),
    );
    let e = tree::build_tree(
        &store,
        &st.dir,
        &TreeSpec {
            label: "hostile3".into(),
            ..spec.clone()
        },
    );
    run_ok(Command::new("umount").arg(r.join("d/sub")));
    let e = e.expect_err("a mount point inside the tree").to_string();
    assert!(e.contains("d/sub") && e.contains("mount point"), "{e}");
    // A tree with overlayfs's own xattrs is refused, naming the path.
    sh("setfattr -n trusted.overlay.opaque -v y d/sub");
    let e = tree::build_tree(
        &store,
        &st.dir,
        &TreeSpec {
            label: "hostile2".into(),
            ..spec.clone()
        },
    )
    .err()
    .unwrap()
    .with_hint();
    assert!(
        e.contains("d/sub") && e.contains("trusted.overlay.opaque") && e.contains("Hint:"),
        "{e}"
    );
    assert_eq!(
        store.objects().unwrap(),
        vec![obj],
        "the refused tree added nothing"
    );
}

// ---------------------------------------------------------------------------
// mmdebstrap: the default mirror, and errors that name the key (each fails
// within seconds).

#[test]
fn the_machines_apt_sources_give_the_default_mirror() {
    // This machine is a Debian 12 with bookworm in its apt sources
    // (tools/deb-cache needs them too).
    let lines = tree::mmdebstrap::machine_sources(Path::new("/etc/apt"), "bookworm").unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("deb ") && l.contains(" bookworm ")),
        "{lines:?}"
    );
}

/// mmdebstrap's mirror hooks with two file:// mirrors whose mount points
/// share a new top directory in the tree (a Debian mirror and a flat one,
/// both under /work): setup mounts both, cleanup unmounts both before it
/// removes what setup created (it removed the top while the second mirror
/// was still mounted there, and failed on its read-only files).
#[test]
fn mirror_hooks_mount_and_remove_nested_file_mirrors() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("m/one/debian"), t.path().join("m/two/flat"));
    for d in [&a, &b] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("Packages"), "").unwrap();
    }
    let root = t.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let hooks = t.path().join("hooks");
    let mirrors = vec![
        format!("deb [trusted=yes] file://{} bookworm main", a.display()),
        format!("deb [trusted=yes] file://{} ./", b.display()),
    ];
    genboot::tree::mmdebstrap::write_hooks(&mirrors, &hooks).unwrap();
    run_ok(Command::new(hooks.join("mirrors-setup")).arg(&root));
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap());
    assert!(inside(&a).join("Packages").exists() && inside(&b).join("Packages").exists());
    run_ok(Command::new(hooks.join("mirrors-cleanup")).arg(&root));
    let left: Vec<_> = fs::read_dir(&root).unwrap().collect();
    assert!(
        left.is_empty(),
        "the tree keeps nothing of the mirrors: {left:?}"
    );
    assert!(a.join("Packages").exists() && b.join("Packages").exists());
}

// ---------------------------------------------------------------------------
// /etc across generations (issue 15).

/// Generation 1's layer holds an admin edit, a deletion and a local user
/// (with a password hash); `switch` to generation 2 (nginx-light + chrony)
/// from generation 1 carries them into generation 2's layer by the 3-way
/// rule, `_chrony` appears, and `genboot etc status|diff` show the changes.
/// Works on a hard-linked copy of the shared root `a` (its objects are
/// read-only; the copy gets its own locks).
#[test]
fn switch_carries_the_admins_etc_into_the_next_generation() {
    let t = trees();
    let root = fresh("etc-merge");
    run_ok(Command::new("cp").arg("-al").arg(t.a.join(".")).arg(&root));
    for lock in [".store.lock", "profiles/.lock"] {
        let _ = fs::remove_file(state_dir(&root).join(lock));
    }
    let (g1, g2) = (generation_name(&root, 1), generation_name(&root, 2));
    let store = store_of(&root);
    let (m1, m2) = (
        tree::read_manifest(&store, &tree_of(&root, 1)).unwrap(),
        tree::read_manifest(&store, &tree_of(&root, 2)).unwrap(),
    );
    let objects = Objects::of(&store);
    let read = |m: &tree::Manifest, p: &str| {
        String::from_utf8(
            tree::packages::read_stored(m, &objects, p.as_bytes())
                .unwrap()
                .unwrap(),
        )
        .unwrap()
    };
    assert!(m1.inode(b"/etc/motd").is_some() && m2.inode(b"/etc/motd").is_some());
    let layers = root.join("var/lib/genboot/etc");
    let upper1 = layers.join(&g1).join("upper");
    fs::create_dir_all(&upper1).unwrap();
    // The admin's edits in generation 1, as the overlay stores them.
    let put = |rel: &str, text: &str| {
        let p = upper1.join(rel);
        fs::write(&p, text).unwrap();
        let (meta, _) = m1.inode(format!("/etc/{rel}").as_bytes()).unwrap();
        std::os::unix::fs::chown(&p, Some(meta.uid), Some(meta.gid)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(meta.mode)).unwrap();
    };
    put("hostname", "edited-by-admin\n");
    put(
        "passwd",
        &format!(
            "{}alice:x:1000:1000:Alice:/home/alice:/bin/bash\n",
            read(&m1, "/etc/passwd")
        ),
    );
    let hash = "$y$j9T$0123456789abcdef$0123456789abcdef0123456789abcdef012345678";
    put(
        "shadow",
        &format!(
            "{}alice:{hash}:20000:0:99999:7:::\n",
            read(&m1, "/etc/shadow")
        ),
    );
    Command::new("mknod")
        .arg(upper1.join("motd"))
        .args(["c", "0", "0"])
        .status()
        .unwrap();
    // Generation 1 current again, then the extras configuration: the
    // existing generation 2 object, whose layer does not exist yet.
    ok(run(&root, &["set-default", "1"]));
    let extras_cfg = work().join("cfg-extras/system.toml");
    let o = run(&root, &["switch", "--config", extras_cfg.to_str().unwrap()]);
    let said = stderr(&o);
    ok(o);
    assert!(
        said.contains(&format!(
            "/etc of {g2}: 4 local change(s) carried from {g1}"
        )),
        "{said}"
    );
    let upper2 = layers.join(&g2).join("upper");
    assert!(layers.join(&g2).join("work").is_dir());
    let mut names: Vec<String> = fs::read_dir(&upper2)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["hostname", "motd", "passwd", "shadow"]);
    assert_eq!(
        fs::read_to_string(upper2.join("hostname")).unwrap(),
        "edited-by-admin\n"
    );
    let motd = fs::symlink_metadata(upper2.join("motd")).unwrap();
    assert!(motd.file_type().is_char_device() && motd.rdev() == 0);
    // passwd: the new image's (with _chrony) plus alice; shadow likewise,
    // alice's hash kept, with shadow's mode and group.
    let passwd = fs::read_to_string(upper2.join("passwd")).unwrap();
    assert_eq!(
        passwd,
        format!(
            "{}alice:x:1000:1000:Alice:/home/alice:/bin/bash\n",
            read(&m2, "/etc/passwd")
        )
    );
    assert!(passwd.contains("\n_chrony:"), "{passwd}");
    let shadow = fs::read_to_string(upper2.join("shadow")).unwrap();
    assert!(
        shadow.contains("\n_chrony:")
            && shadow.ends_with(&format!("alice:{hash}:20000:0:99999:7:::\n")),
        "{shadow}"
    );
    let (sm, _) = m2.inode(b"/etc/shadow").unwrap();
    let st = fs::metadata(upper2.join("shadow")).unwrap();
    assert_eq!((st.mode() & 0o7777, st.gid()), (sm.mode, sm.gid));
    // Generation 1's layer is as it was; a second switch keeps generation
    // 2's layer as it is.
    fs::write(upper1.join("hostname"), "later\n").unwrap();
    ok(run(&root, &["set-default", "1"]));
    ok(run(
        &root,
        &["switch", "--config", extras_cfg.to_str().unwrap()],
    ));
    assert_eq!(
        fs::read_to_string(upper2.join("hostname")).unwrap(),
        "edited-by-admin\n"
    );
    // genboot etc: the current generation (2) by default.
    let status = ok(run(&root, &["etc", "status"]));
    assert_eq!(
        status,
        "M /etc/hostname\nD /etc/motd\nM /etc/passwd\nM /etc/shadow\n"
    );
    let status1 = ok(run(&root, &["etc", "status", "1"]));
    assert!(status1.starts_with("M /etc/hostname\n"), "{status1}");
    let diff = ok(run(&root, &["etc", "diff"]));
    let image_hostname = read(&m2, "/etc/hostname");
    assert!(
        diff.contains(&format!(
            "--- /etc/hostname (image)\n+++ /etc/hostname (local)\n@@ -1,1 +1,1 @@\n-{}+edited-by-admin\n",
            image_hostname
        )),
        "{diff}"
    );
    assert!(
        diff.contains("+alice:x:1000:1000:Alice:/home/alice:/bin/bash\n"),
        "{diff}"
    );
    assert!(
        diff.contains("--- /etc/motd (image)\n+++ /dev/null\n"),
        "{diff}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(run(&root, &["etc", "status", "--json"]))).unwrap();
    // Each switch back made a new generation of generation 2's object: the
    // current one shows that object's layer.
    assert_eq!(json["object"], g2.as_str());
    assert_eq!(json["generation"], 4);
    assert_eq!(json["changes"][1]["change"], "deleted");
    tree::build::remove_staging(&root).unwrap();
}
