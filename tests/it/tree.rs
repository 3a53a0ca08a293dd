//! Whole-system trees in the store, with real parts: Debian 12 trees built by
//! mmdebstrap from the local package repository (`tools/deb-cache`, no
//! network), imported by `genboot::tree`, judged by `fsck.erofs`, mounted by
//! this machine's kernel (EROFS from a file + overlayfs) and compared with
//! the mmdebstrap output by `ls`, `getcap`, `getfattr`, `lstat` and
//! SHA-256, and by `dpkg-query` for the package lists.
//!
//! mmdebstrap runs three times per test binary, shared through [`trees`]:
//! the base set of `tools/debian-packages` twice under two state
//! directories (reproducibility), and base + `nginx-light` + `chrony` (a
//! new system user) once. Everything is under `target/tree-tests/<pid>`,
//! removed when the binary exits.
//!
//! Crash tests run the import in a child process: this test binary itself
//! (`it`), running the ignored test `tree::crash_child` with
//! `GENBOOT_FAILPOINTS` set.

use crate::support::{debian, repo, require_tool, run_ok};

use genboot::state::State;
use genboot::store::{Store, StorePath};
use genboot::tree::mmdebstrap::MmdebstrapSpec;
use genboot::tree::mount::{mount_tree_with, MountSys, RealSys};
use genboot::tree::{
    self, build_tree_with, import_root, Built, ImportMode, Objects, Rules, RulesReport, TreeError,
    TreeSource, TreeSpec,
};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `SOURCE_DATE_EPOCH` of every tree here (2025-01-01).
const EPOCH: i64 = 1_735_689_600;

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

/// A state directory (`<root>/var/lib/genboot`) and its store.
fn state(name: &str) -> (State, Store) {
    prepare_work();
    let s = State::open(&work().join(name)).unwrap();
    let store = Store::open(&s).unwrap();
    (s, store)
}

/// One tree built for the tests.
struct Tree {
    state: State,
    store: Store,
    built: Built,
    /// `dpkg-query` on the mmdebstrap output: (name, version, arch).
    dpkg: BTreeSet<(String, String, String)>,
    /// A `cp -a` of the mmdebstrap output, when kept.
    pristine: Option<PathBuf>,
}

impl Tree {
    fn object(&self) -> &StorePath {
        &self.built.imported.object
    }
    fn path(&self) -> PathBuf {
        self.store.path(self.object())
    }
}

struct Trees {
    base: Tree,
    base_again: Tree,
    extras: Tree,
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
        Command::new("chmod").arg("0755").arg(&p).status().unwrap();
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

fn spec(label: &str, extra: &[&str]) -> TreeSpec {
    let mut mm = MmdebstrapSpec::new("bookworm");
    mm.mirrors = vec![format!(
        "deb [trusted=yes] file://{} bookworm main",
        debian::mirror().display()
    )];
    mm.packages = base_packages();
    mm.packages.extend(extra.iter().map(|s| s.to_string()));
    mm.customize = vec![cap_hook()];
    mm.dpkgopts = [
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
    TreeSpec {
        label: label.into(),
        source: TreeSource::Mmdebstrap(mm),
        epoch: Some(EPOCH),
        rules: Rules::default(),
    }
}

fn dpkg_query(root: &Path) -> BTreeSet<(String, String, String)> {
    let out = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args([
            "-W",
            "-f",
            "${db:Status-Status} ${Package} ${Version} ${Architecture}\n",
        ])
        .output()
        .expect("dpkg-query runs");
    assert!(
        out.status.success(),
        "dpkg-query: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() == 4 && f[0] == "installed")
                .then(|| (f[1].to_string(), f[2].to_string(), f[3].to_string()))
        })
        .collect()
}

fn build(state_name: &str, label: &str, extra: &[&str], keep: bool) -> Tree {
    let (st, store) = state(state_name);
    let mut dpkg = BTreeSet::new();
    let pristine = work().join(format!("pristine-{label}"));
    let built = build_tree_with(&store, &st.dir, &spec(label, extra), &mut |root| {
        dpkg = dpkg_query(root);
        if keep {
            let ok = Command::new("cp")
                .arg("-a")
                .arg(root)
                .arg(&pristine)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cp -a of the mmdebstrap output failed");
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("building tree {label} failed: {e}"));
    eprintln!(
        "tree {label}: rules renumbered users {:?} groups {:?}; new users {:?} groups {:?}",
        built.rules.users, built.rules.groups, built.rules.new_users, built.rules.new_groups
    );
    eprintln!(
        "tree {label}: {} objects ({} new, {:.1} MB), image {} bytes; {:?}",
        built.imported.objects,
        built.imported.new_objects,
        built.imported.new_object_bytes as f64 / 1e6,
        built.imported.image_bytes,
        built.timings
    );
    Tree {
        state: st,
        store,
        built,
        dpkg,
        pristine: keep.then_some(pristine),
    }
}

/// The three mmdebstrap trees, built once per test binary.
fn trees() -> &'static Trees {
    static TREES: OnceLock<Result<Trees, String>> = OnceLock::new();
    let r = TREES.get_or_init(|| {
        prepare_work();
        require_tool("mmdebstrap", "mmdebstrap");
        require_tool("setcap", "libcap2-bin");
        require_tool("dpkg-query", "dpkg");
        std::panic::catch_unwind(|| {
            let base = build("a", "base", &[], true);
            let extras = build("a", "extras", &["nginx-light", "chrony"], true);
            let base_again = build("b", "base", &[], false);
            Trees {
                base,
                base_again,
                extras,
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

// ---------------------------------------------------------------------------
// The mmdebstrap trees.

#[test]
fn diff_shows_exactly_the_package_changes_and_the_new_user() {
    let t = trees();
    let store = &t.extras.store;
    let d = tree::diff_trees(store, t.base.object(), t.extras.object()).unwrap();
    eprintln!("{}", d.to_text());
    // What dpkg itself says changed between the two mmdebstrap outputs.
    let before: BTreeMap<(String, String), String> = t
        .base
        .dpkg
        .iter()
        .map(|(n, v, a)| ((n.clone(), a.clone()), v.clone()))
        .collect();
    let after: BTreeMap<(String, String), String> = t
        .extras
        .dpkg
        .iter()
        .map(|(n, v, a)| ((n.clone(), a.clone()), v.clone()))
        .collect();
    let mut expected = Vec::new();
    for k in before.keys().chain(after.keys()).collect::<BTreeSet<_>>() {
        let (x, y) = (before.get(k), after.get(k));
        if x != y {
            expected.push((k.0.clone(), x.cloned(), y.cloned()));
        }
    }
    let got: Vec<(String, Option<String>, Option<String>)> = d
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.from.clone(), p.to.clone()))
        .collect();
    assert_eq!(got, expected, "the diff's packages must be dpkg's");
    let names: Vec<&str> = got.iter().map(|p| p.0.as_str()).collect();
    assert!(
        names.contains(&"nginx-light") && names.contains(&"chrony"),
        "{names:?}"
    );
    assert!(d
        .packages
        .iter()
        .all(|p| p.change == tree::diff::Change::Added));
    // Exactly one new user and group; every other id pinned.
    let users: Vec<(&str, tree::diff::Change)> = d
        .users
        .iter()
        .map(|u| (u.name.as_str(), u.change))
        .collect();
    assert_eq!(
        users,
        vec![("_chrony", tree::diff::Change::Added)],
        "{:?}",
        d.users
    );
    let groups: Vec<(&str, tree::diff::Change)> = d
        .groups
        .iter()
        .map(|u| (u.name.as_str(), u.change))
        .collect();
    assert_eq!(
        groups,
        vec![("_chrony", tree::diff::Change::Added)],
        "{:?}",
        d.groups
    );
    // /etc defaults: the new packages' configuration appears.
    let etc: BTreeMap<&str, tree::diff::Change> =
        d.etc.iter().map(|e| (e.path.as_str(), e.change)).collect();
    assert_eq!(
        etc.get("/etc/chrony/chrony.conf"),
        Some(&tree::diff::Change::Added),
        "{etc:?}"
    );
    assert_eq!(
        etc.get("/etc/nginx/nginx.conf"),
        Some(&tree::diff::Change::Added)
    );
    assert!(d.files.added > 0 && d.files.new_content_bytes > 0);
    let json: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
    assert_eq!(json["users"][0]["name"], "_chrony");
    // The tree's own packages file agrees with dpkg too.
    let listed: BTreeSet<(String, String, String)> =
        tree::packages::parse_text(&fs::read(t.extras.path().join(tree::PACKAGES_FILE)).unwrap())
            .into_iter()
            .map(|p| (p.name, p.version, p.arch))
            .collect();
    assert_eq!(listed, t.extras.dpkg);
}

#[test]
fn fsck_erofs_passes_on_every_image() {
    require_tool("fsck.erofs", "erofs-utils");
    let t = trees();
    for tr in [&t.base, &t.base_again, &t.extras] {
        let img = tr.path().join(tree::IMAGE_FILE);
        run_ok(Command::new("fsck.erofs").arg(&img));
        let size = fs::metadata(&img).unwrap().len();
        assert!(
            size < 8 << 20,
            "a metadata image should be small; {} is {size} bytes",
            img.display()
        );
    }
}

#[test]
fn the_mounted_tree_equals_the_mmdebstrap_output() {
    require_tool("getcap", "libcap2-bin");
    let t = trees();
    let pristine = t.extras.pristine.as_ref().unwrap();
    let m = mount(&t.extras.store, t.extras.object(), "extras");
    let diffs = compare(pristine, &m.0, &t.extras.built.rules, Some(EPOCH));
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
            let (x, y) = (ls(pristine, dir), ls(&m.0, dir));
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
    let c = caps(&m.0);
    assert!(
        c.contains("./usr/local/bin/genboot-cap-test cap_net_raw=ep"),
        "getcap: {c}"
    );
    assert_eq!(caps(pristine), c);
    let suid = |root: &Path| {
        run_ok(
            Command::new("find")
                .args([".", "-perm", "/6000", "-type", "f"])
                .current_dir(root),
        )
    };
    let mut s1: Vec<String> = suid(pristine).lines().map(str::to_string).collect();
    let mut s2: Vec<String> = suid(&m.0).lines().map(str::to_string).collect();
    s1.sort();
    s2.sort();
    assert!(s1.iter().any(|l| l == "./usr/bin/passwd"), "{s1:?}");
    assert_eq!(s1, s2, "setuid/setgid files");
    // The rules' results, seen through the mount.
    assert_eq!(fs::read(m.0.join("etc/machine-id")).unwrap(), b"");
    assert_eq!(
        fs::read_to_string(m.0.join("etc/hostname")).unwrap(),
        "localhost\n"
    );
    assert!(m.0.join("usr/lib/genboot/var/lib/dpkg/status").is_file());
    assert_eq!(fs::read_dir(m.0.join("var/lib/dpkg")).unwrap().count(), 0);
    // Unmounting removes the private mount.
    let dir = m.0.clone();
    drop(m);
    assert!(!is_mount_point(&dir), "{} is still mounted", dir.display());
    let left: Vec<_> = fs::read_dir(tree::mount::RUN_DIR)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(t.extras.object().hash.as_str())
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "private mounts left: {left:?}");
}

/// Real mounts, but `::` refused as Debian 12's 6.1 refuses it.
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
        RealSys.mount(source, target, fstype, flags, data)
    }
    fn umount(&self, target: &Path) -> std::io::Result<()> {
        RealSys.umount(target)
    }
    fn loop_attach(&self, file: &Path) -> std::io::Result<PathBuf> {
        RealSys.loop_attach(file)
    }
}

#[test]
fn the_legacy_overlay_form_hides_the_objects_and_shows_the_same_tree() {
    let t = trees();
    let dir = work().join("mnt-legacy");
    fs::create_dir_all(&dir).unwrap();
    let m = mount_tree_with(
        &Legacy,
        Path::new(tree::mount::RUN_DIR),
        &t.base.store,
        t.base.object(),
        &dir,
    )
    .unwrap();
    let g = MountGuard(dir.clone());
    assert!(m.legacy);
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
    let g2 = mount(&t.base.store, t.base.object(), "modern");
    assert_eq!(
        ls(&g2.0, "usr/bin"),
        a,
        "both overlay forms show the same tree"
    );
}

#[test]
fn gc_after_dropping_a_tree_frees_exactly_its_unique_objects() {
    let t = trees();
    // Work on a hard-linked copy of state a: the other tests keep theirs.
    let copy = work().join("gc");
    run_ok(
        Command::new("cp")
            .arg("-al")
            .arg(&t.extras.state.root)
            .arg(&copy),
    );
    let st = State::open(&copy).unwrap();
    let store = Store::open(&st).unwrap();
    let (base, extras) = (t.base.object(), t.extras.object());
    let mb = tree::read_manifest(&store, base).unwrap().objects();
    let me = tree::read_manifest(&store, extras).unwrap().objects();
    let unique: BTreeSet<[u8; 32]> = mb
        .keys()
        .filter(|k| !me.contains_key(*k))
        .copied()
        .collect();
    assert!(
        !unique.is_empty(),
        "the base tree should have objects of its own (dpkg status, passwd, …)"
    );
    let all: BTreeSet<[u8; 32]> = Objects::of(&store)
        .list()
        .unwrap()
        .into_iter()
        .map(|o| o.0)
        .collect();
    assert_eq!(
        all,
        mb.keys().chain(me.keys()).copied().collect(),
        "objects are exactly the trees' contents"
    );
    // Nothing goes while both trees live.
    let r = tree::collect_objects(&store, &[base.clone(), extras.clone()]).unwrap();
    assert!(r.deleted.is_empty() && r.leftovers == 0, "{r:?}");
    // Drop base.
    genboot::fsutil::remove_tree(&store.path(base)).unwrap();
    let live = tree::trees(&store).unwrap();
    assert_eq!(live, vec![extras.clone()]);
    let r = tree::collect_objects(&store, &live).unwrap();
    let deleted: BTreeSet<[u8; 32]> = r.deleted.iter().copied().collect();
    assert_eq!(
        deleted, unique,
        "gc must free exactly the dropped tree's unique objects"
    );
    assert_eq!(r.bytes, unique.iter().map(|k| mb[k]).sum::<u64>());
    eprintln!("gc freed {} objects, {} bytes", r.deleted.len(), r.bytes);
    assert_eq!(tree::verify_tree(&store, extras).unwrap(), vec![]);
}

#[test]
fn the_same_spec_twice_gives_the_same_tree_hash_and_image() {
    let t = trees();
    assert_eq!(
        t.base.object(),
        t.base_again.object(),
        "same spec, same tree hash"
    );
    for f in [tree::IMAGE_FILE, tree::PACKAGES_FILE, tree::MANIFEST_FILE] {
        assert!(
            fs::read(t.base.path().join(f)).unwrap()
                == fs::read(t.base_again.path().join(f)).unwrap(),
            "{f} differs between two builds of the same spec"
        );
    }
    assert_ne!(
        t.base.object().hash,
        t.extras.object().hash,
        "other packages, other tree"
    );
    for tr in [&t.base, &t.base_again, &t.extras] {
        assert_eq!(tree::verify_tree(&tr.store, tr.object()).unwrap(), vec![]);
    }
    assert_eq!(Objects::of(&t.base.store).verify_all().unwrap(), vec![]);
    // The uid maps agree, and the extras build only added.
    let a = tree::UidMap::load(&t.base.state.dir.join("uid-map")).unwrap();
    let b = tree::UidMap::load(&t.base_again.state.dir.join("uid-map")).unwrap();
    for (n, id) in &b.users {
        assert_eq!(a.users.get(n), Some(id), "user {n}");
    }
    assert!(a.users.contains_key("_chrony") && !b.users.contains_key("_chrony"));
}

// ---------------------------------------------------------------------------
// A smaller real tree for the crash and space tests: part of the extras
// tree (its /etc, /usr/sbin, /usr/local, /var, /dev and the usrmerge links;
// about 20 MB in 1,100 files, setuid programs and a file capability).

fn subset() -> &'static PathBuf {
    static SUB: OnceLock<PathBuf> = OnceLock::new();
    SUB.get_or_init(|| {
        let t = trees();
        let src = t.extras.pristine.as_ref().unwrap();
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
#[ignore = "child process of crash_at_each_failpoint_*; run those instead"]
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
    let points: Vec<&str> = genboot::failpoint::ALL
        .iter()
        .copied()
        .filter(|p| p.starts_with("tree::"))
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
fn crash_at_each_failpoint_of_a_copying_import() {
    crash_mode("copy");
}

#[test]
fn crash_at_each_failpoint_of_a_moving_import() {
    crash_mode("move");
}

#[test]
fn a_full_disk_is_refused_before_any_write() {
    let src = subset().clone();
    let top = work().join("full");
    fs::create_dir_all(&top).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(&top),
    );
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Umount(top.clone());
    let st = State::open(&top).unwrap();
    let store = Store::open(&st).unwrap();
    let e = import_root(
        &store,
        &st.dir,
        &src,
        &dir_spec("full"),
        ImportMode::Copy,
        Vec::new(),
        None,
    )
    .expect_err("an 8 MB file system cannot hold the tree");
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(matches!(e, TreeError::NoSpace { .. }), "{msg}");
    assert!(
        msg.contains("MB") && msg.contains("free") && msg.contains("Nothing was written"),
        "{msg}"
    );
    let TreeError::NoSpace { need, free, .. } = e else {
        unreachable!()
    };
    assert!(need > free && free > 0);
    let left: Vec<_> = fs::read_dir(&store.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "nothing may be written: {left:?}");
    assert!(!st.dir.join("uid-map").exists(), "not even the uid map");
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
    .to_string();
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

#[test]
fn an_unknown_package_names_the_key_and_changes_nothing() {
    prepare_work();
    let (st, store) = state("unknown-package");
    let mut s = spec("bad", &["no-such-package-genboot"]);
    if let TreeSource::Mmdebstrap(mm) = &mut s.source {
        mm.config = Some(PathBuf::from("/etc/genboot/system.toml"));
    }
    let e = tree::build_tree(&store, &st.dir, &s)
        .expect_err("must fail")
        .to_string();
    assert!(
        e.contains("Unable to locate package no-such-package-genboot"),
        "{e}"
    );
    assert!(
        e.contains("/etc/genboot/system.toml: [tree] packages lists \"no-such-package-genboot\""),
        "{e}"
    );
    assert_eq!(
        fs::read_dir(&store.dir).unwrap().count(),
        0,
        "nothing left in the store"
    );
    assert!(
        tree::mount::mounts_below(&st.root).unwrap().is_empty(),
        "no mount left behind"
    );
}

#[test]
fn an_unreachable_mirror_says_so() {
    prepare_work();
    let (st, store) = state("no-mirror");
    let mut s = spec("bad", &[]);
    if let TreeSource::Mmdebstrap(mm) = &mut s.source {
        mm.mirrors = vec!["http://127.0.0.1:9/debian".into()];
    }
    let e = tree::build_tree(&store, &st.dir, &s)
        .expect_err("must fail")
        .to_string();
    assert!(
        e.contains("could not reach the mirror") && e.contains("127.0.0.1:9"),
        "{e}"
    );
    assert!(e.contains("[tree] mirror"), "{e}");
    assert_eq!(fs::read_dir(&store.dir).unwrap().count(), 0);
}
