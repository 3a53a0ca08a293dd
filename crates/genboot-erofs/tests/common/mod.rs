//! Shared by the image tests: scratch directories, mounts that clean up, a
//! source tree with every odd kind of metadata a Debian root has, an importer
//! (source tree → [`Image`], with an object store), and a comparison of two
//! trees by `lstat`, content, symlink targets and xattrs.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use genboot_erofs::{FileData, Image, Meta, INLINE_MAX};
use sha2::{Digest, Sha256};

/// Tests that mount need root; say so instead of skipping.
pub fn require_root() {
    let uid = fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    assert_eq!(
        uid, 0,
        "this test mounts EROFS images and overlays and creates device nodes: run it as root \
         (e.g. `sudo -E cargo test --release -p genboot-erofs`)"
    );
}

/// A tool the test runs; panics with the Debian package to install.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: `apt-get install {package}` (tools/install-deps installs it)"
    );
}

/// Run a command, panic with its output when it fails.
#[track_caller]
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sh(script: &str) -> String {
    run(Command::new("sh").args(["-ec", script]))
}

/// A directory below cargo's per-target scratch dir (on the repo's disk:
/// EROFS file mounts fail on tmpfs), removed on drop.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("erofs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Scratch { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A mount point, unmounted on drop.
pub struct Mounted {
    pub dir: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

pub fn mount_erofs(image: &Path, dir: &Path) -> Mounted {
    fs::create_dir_all(dir).unwrap();
    run(Command::new("mount")
        .args(["-t", "erofs", "-o", "ro"])
        .arg(image)
        .arg(dir));
    Mounted {
        dir: dir.to_path_buf(),
    }
}

/// `mount -t overlay` read-only with metacopy and redirects; `lowerdir` is
/// `meta::objects` (data-only lower) or `meta:objects` (legacy).
pub fn mount_overlay(lowerdir: &str, dir: &Path) -> Mounted {
    fs::create_dir_all(dir).unwrap();
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "ro,metacopy=on,redirect_dir=on,lowerdir={lowerdir}"
        ))
        .arg(dir));
    Mounted {
        dir: dir.to_path_buf(),
    }
}

pub fn write_image(img: &Image, path: &Path) -> genboot_erofs::Stats {
    let mut f = fs::File::create(path).unwrap();
    let stats = img.write(&mut f).unwrap();
    f.sync_all().unwrap();
    assert_eq!(fs::metadata(path).unwrap().len(), stats.image_bytes);
    stats
}

/// `fsck.erofs IMAGE` must pass (erofs-utils' checker, not our own reader).
pub fn fsck(image: &Path) {
    require_tool("fsck.erofs", "erofs-utils");
    run(Command::new("fsck.erofs").arg(image));
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------
// The odd source tree

/// The mtime most entries get (like a clamped SOURCE_DATE_EPOCH).
pub const EPOCH: i64 = 1_700_000_000;

/// Names of the 3000-entry directory: lengths 1…255.
pub fn many_name(i: usize) -> String {
    let base = format!("{i:04}");
    let len = 1 + (i * 7) % 255;
    if len <= 4 {
        return base;
    }
    format!("{base}{}", "n".repeat(len - 4))
}

/// Build the tree the tests compare: setuid/setgid/sticky modes, odd owners,
/// file capabilities, an ACL, user/trusted xattrs (one shared by many files,
/// one 3000 bytes long), hard links, symlinks, devices, a fifo, a socket,
/// sizes around the inline threshold and block boundaries, a 1 MB file, a
/// directory of 3000 entries with names of 1…255 bytes, directories of
/// exactly one block and one block + 1 byte of entries, 40 levels of
/// nesting, names sorting before `.`, varied and pre-1970 mtimes.
/// `many` = entries in the big directory (3000 for the full test).
pub fn make_odd_tree(root: &Path, many: usize) {
    fs::create_dir_all(root).unwrap();
    let w = |p: &str, data: &[u8]| {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    };
    let d = |p: &str| fs::create_dir_all(root.join(p)).unwrap();
    let pattern = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 31 % 251) as u8).collect() };

    d("usr/bin");
    d("usr/lib");
    d("etc");
    d("tmp");
    d("srv/shared");
    d("empty-dir");
    d("opaque-dir");
    w("usr/bin/su", &pattern(70_000)); // setuid 4755
    w("usr/bin/wall", &pattern(20_000)); // setgid 2755, group tty
    w("usr/bin/ping", &pattern(90_568)); // cap_net_raw+ep
    w("etc/shadow", b"root:*:19000:0:99999:7:::\n"); // 0640 root:42
    w("etc/acl-file", b"acl\n");
    w("etc/empty", b"");
    w("etc/one", b"x");
    w("etc/at-threshold", &pattern(INLINE_MAX as usize));
    w("etc/over-threshold", &pattern(INLINE_MAX as usize + 1));
    w("etc/block-4096", &pattern(4096));
    w("etc/block-4097", &pattern(4097));
    w("etc/tail-2048", &pattern(6144));
    w("etc/tail-2049", &pattern(6145));
    w("etc/big-xattr", b"small data next to a big xattr\n");
    w("usr/lib/one-mb", &pattern(1 << 20));
    w(
        "usr/lib/same-content-a",
        b"identical content, stored once in the object store\n",
    );
    w(
        "usr/lib/same-content-b",
        b"identical content, stored once in the object store\n",
    );
    w("usr/lib/hardlink-big", &pattern(12_345));
    w("usr/lib/hardlink-small", b"hi\n");
    w("usr/lib/high-uid", b"owned by 100000:100000\n");
    w("usr/lib/old", b"mtime before 1970\n");
    w("-sorts-before-dot", b"-\n");
    w("#hash", b"#\n");
    w("srv/shared/bin-data", &pattern(300));
    fs::hard_link(
        root.join("usr/lib/hardlink-big"),
        root.join("srv/hardlink-big-2"),
    )
    .unwrap();
    fs::hard_link(
        root.join("usr/lib/hardlink-small"),
        root.join("etc/hardlink-small-2"),
    )
    .unwrap();
    fs::hard_link(
        root.join("usr/lib/hardlink-small"),
        root.join("usr/lib/hardlink-small-3"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../usr/lib/one-mb", root.join("etc/link-rel")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", root.join("usr/link-abs")).unwrap();
    std::os::unix::fs::symlink("t".repeat(3000), root.join("usr/link-long")).unwrap();
    // Too long to sit next to its inode: a block of its own.
    std::os::unix::fs::symlink("m".repeat(4095), root.join("usr/link-4095")).unwrap();
    // Directory entries filling exactly one block ("." 13 + ".." 14 + 15 ×
    // (12 + 255) + (12 + 52) = 4096 bytes), and one byte more (2 blocks).
    for (dir, last) in [("exact-block", 52), ("block-and-a-byte", 53)] {
        d(dir);
        for i in 0..15 {
            w(&format!("{dir}/a{i:02}{}", "x".repeat(252)), b"");
        }
        w(&format!("{dir}/b{}", "y".repeat(last - 1)), b"");
    }
    d("dev");
    run(Command::new("mknod")
        .arg(root.join("dev/null"))
        .args(["c", "1", "3"]));
    run(Command::new("mknod")
        .arg(root.join("dev/sda1"))
        .args(["b", "8", "1"]));
    run(Command::new("mknod")
        .arg(root.join("dev/big-minor"))
        .args(["c", "259", "70000"]));
    run(Command::new("mkfifo").arg(root.join("dev/fifo")));
    drop(std::os::unix::net::UnixListener::bind(root.join("dev/socket")).unwrap());

    // 40 levels, a 255-byte name at the bottom.
    let mut deep = PathBuf::from("deep");
    for i in 0..40 {
        deep.push(format!("level-{i:02}"));
    }
    d(deep.to_str().unwrap());
    w(deep.join("x".repeat(255)).to_str().unwrap(), b"deep\n");
    d(&"y".repeat(255));

    d("many");
    for i in 0..many {
        let p = root.join("many").join(many_name(i));
        fs::write(
            &p,
            if i % 3 == 0 {
                format!("{i}\n").into_bytes()
            } else {
                Vec::new()
            },
        )
        .unwrap();
    }

    // Owners, then modes (chown clears setuid/setgid), then capabilities and
    // ACLs (chown clears capabilities), then xattrs.
    let own = |p: &str, uid: u32, gid: u32| {
        std::os::unix::fs::lchown(root.join(p), Some(uid), Some(gid)).unwrap()
    };
    let mode =
        |p: &str, m: u32| fs::set_permissions(root.join(p), fs::Permissions::from_mode(m)).unwrap();
    own("usr/bin/wall", 0, 5);
    own("etc/shadow", 0, 42);
    own("usr/lib/high-uid", 100_000, 100_000);
    own("srv/shared", 1000, 1000);
    own("etc/link-rel", 7, 8);
    own("dev/fifo", 33, 33);
    mode("usr/bin/su", 0o4755);
    mode("usr/bin/wall", 0o2755);
    mode("etc/shadow", 0o640);
    mode("tmp", 0o1777);
    mode("srv/shared", 0o2775);
    mode("usr/lib/old", 0o600);
    mode("dev/fifo", 0o620);
    mode("empty-dir", 0o700);
    run(Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(root.join("usr/bin/ping")));
    let setx = |p: &str, name: &str, value: &str| {
        run(Command::new("setfattr")
            .args(["-h", "-n", name, "-v", value])
            .arg(root.join(p)));
    };
    setx(
        "etc/acl-file",
        "system.posix_acl_access",
        "0x0200000001000600ffffffff02000400e803000004000400ffffffff10000400ffffffff20000400ffffffff",
    );
    setx(
        "etc/big-xattr",
        "user.big",
        &format!("0x{}", hex(&pattern(3000))),
    );
    setx("opaque-dir", "trusted.overlay.opaque", "y");
    setx("etc/link-rel", "trusted.genboot.on-a-symlink", "yes");
    setx("usr/lib/one-mb", "user.origin", "test");
    for p in [
        "usr/bin/su",
        "usr/bin/wall",
        "etc/one",
        "usr/lib/one-mb",
        "srv/shared",
    ] {
        setx(p, "user.shared", "the same value on several inodes");
    }
    for i in (0..many).step_by(97) {
        setx(
            &format!("many/{}", many_name(i)),
            "user.index",
            &i.to_string(),
        );
    }

    // mtimes last, deepest first (creating an entry changes its directory's).
    let mut all = Vec::new();
    walk(root, Path::new(""), &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let special: HashMap<&str, (i64, u32)> = HashMap::from([
        ("usr/lib/old", (-86_400 * 365, 0)),
        ("etc/shadow", (1_650_000_000, 123_456_789)),
        ("usr/bin/ping", (1_600_000_000, 1)),
        ("srv/shared", (1_690_000_000, 999_999_999)),
        ("etc/link-rel", (1_234_567_890, 500)),
        ("dev/fifo", (1_111_111_111, 0)),
        ("deep", (1_699_999_999, 42)),
    ]);
    for rel in all.iter().chain(std::iter::once(&PathBuf::new())) {
        let (sec, nsec) = special
            .get(rel.to_str().unwrap())
            .copied()
            .unwrap_or((EPOCH, 0));
        let p = root.join(rel);
        let ft = fs::symlink_metadata(&p).unwrap().file_type();
        let t =
            std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(sec.max(0) as u64, nsec));
        if (ft.is_file() || ft.is_dir()) && sec >= 0 {
            let f = fs::File::open(&p).unwrap();
            f.set_times(
                fs::FileTimes::new()
                    .set_modified(t.unwrap())
                    .set_accessed(t.unwrap()),
            )
            .unwrap();
        } else {
            run(Command::new("touch")
                .args(["-h", "-d", &format!("@{sec}.{nsec:09}")])
                .arg(&p));
        }
    }
}

/// All paths below `root`, relative, sorted, depth-first.
pub fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        let r = rel.join(n);
        let is_dir = fs::symlink_metadata(root.join(&r)).unwrap().is_dir();
        out.push(r.clone());
        if is_dir {
            walk(root, &r, out);
        }
    }
}

/// Every xattr below `root` (and of `root`, as ""), by relative path, from one
/// `getfattr -R` run.
pub fn read_xattrs(root: &Path) -> BTreeMap<PathBuf, BTreeMap<String, Vec<u8>>> {
    require_tool("getfattr", "attr");
    let out = run(Command::new("getfattr")
        .args([
            "-R",
            "-P",
            "-h",
            "-d",
            "-m",
            "-",
            "-e",
            "hex",
            "--absolute-names",
        ])
        .arg(root));
    let mut map: BTreeMap<PathBuf, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    let mut cur: Option<PathBuf> = None;
    for line in out.lines() {
        if let Some(p) = line.strip_prefix("# file: ") {
            let rel = Path::new(p).strip_prefix(root).unwrap().to_path_buf();
            cur = Some(rel);
        } else if let Some((name, value)) = line.split_once('=') {
            let value = value
                .strip_prefix("0x")
                .unwrap_or_else(|| panic!("getfattr -e hex gave {line}"));
            let bytes = (0..value.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&value[i..i + 2], 16).unwrap())
                .collect();
            map.entry(cur.clone().unwrap())
                .or_default()
                .insert(name.to_string(), bytes);
        } else if line.is_empty() {
            cur = None;
        }
    }
    map
}

// ---------------------------------------------------------------------------
// Import

pub enum Policy<'a> {
    /// Files ≤ INLINE_MAX in the image, larger ones in `objects/ab/cdef…`.
    Metadata { objects: &'a Path },
    /// Like `Metadata`, but only hash the content (benchmarks).
    HashOnly,
    /// Every file's data in the image (read from the source at write time).
    Full,
}

fn major_minor(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as u32, minor as u32)
}

pub fn meta_of(md: &fs::Metadata, xattrs: Option<&BTreeMap<String, Vec<u8>>>) -> Meta {
    let mut m =
        Meta::new(md.mode() & 0o7777, md.uid(), md.gid()).mtime(md.mtime(), md.mtime_nsec() as u32);
    for (k, v) in xattrs.into_iter().flatten() {
        m = m.xattr(k, v);
    }
    m
}

/// Store `data` in the object store; return its SHA-256.
pub fn put_object(objects: &Path, data: &[u8]) -> [u8; 32] {
    let h = sha256(data);
    let hx = hex(&h);
    let dir = objects.join(&hx[..2]);
    let path = dir.join(&hx[2..]);
    if !path.exists() {
        fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!(".tmp-{}", &hx[2..]));
        let mut f = fs::File::create(&tmp).unwrap();
        f.write_all(data).unwrap();
        f.set_permissions(fs::Permissions::from_mode(0o444))
            .unwrap();
        fs::rename(tmp, path).unwrap();
    }
    h
}

/// Read the tree at `src` into an [`Image`].
pub fn import(src: &Path, policy: &Policy) -> Image {
    let xattrs = read_xattrs(src);
    let mut img = Image::new();
    let root_md = fs::symlink_metadata(src).unwrap();
    img.add_dir("/", meta_of(&root_md, xattrs.get(Path::new(""))))
        .unwrap();
    let mut all = Vec::new();
    walk(src, Path::new(""), &mut all);
    let mut seen: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for rel in all {
        let path = src.join(&rel);
        let md = fs::symlink_metadata(&path).unwrap();
        let meta = meta_of(&md, xattrs.get(&rel));
        let ft = md.file_type();
        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(first) = seen.get(&(md.dev(), md.ino())) {
                img.add_hardlink(&rel, first).unwrap();
                continue;
            }
            seen.insert((md.dev(), md.ino()), rel.clone());
        }
        if ft.is_dir() {
            img.add_dir(&rel, meta).unwrap();
        } else if ft.is_file() {
            let data = match policy {
                Policy::Full => FileData::File {
                    path: path.clone(),
                    size: md.len(),
                },
                Policy::Metadata { .. } | Policy::HashOnly if md.len() <= INLINE_MAX => {
                    FileData::Bytes(fs::read(&path).unwrap())
                }
                Policy::HashOnly => FileData::object(md.len(), &sha256(&fs::read(&path).unwrap())),
                Policy::Metadata { objects } => {
                    let data = fs::read(&path).unwrap();
                    FileData::object(md.len(), &put_object(objects, &data))
                }
            };
            img.add_file(&rel, meta, data).unwrap();
        } else if ft.is_symlink() {
            img.add_symlink(&rel, meta, fs::read_link(&path).unwrap())
                .unwrap();
        } else if ft.is_char_device() || ft.is_block_device() {
            let (major, minor) = major_minor(md.rdev());
            if ft.is_char_device() {
                img.add_char_device(&rel, meta, major, minor).unwrap();
            } else {
                img.add_block_device(&rel, meta, major, minor).unwrap();
            }
        } else if ft.is_fifo() {
            img.add_fifo(&rel, meta).unwrap();
        } else if ft.is_socket() {
            img.add_socket(&rel, meta).unwrap();
        }
    }
    img
}

// ---------------------------------------------------------------------------
// Comparison

/// What the view holds for a file stored in the object store.
#[derive(PartialEq, Eq)]
pub enum External {
    /// Its content (overlay, full image).
    Content,
    /// Zeros of the file's size (the metadata image alone).
    Zeros,
    /// Zeros, or nothing: `fsck.erofs` 1.5 `--extract` skips unmapped
    /// extents and leaves a data-less file empty.
    ZerosOrEmpty,
}

pub struct Compare<'a> {
    /// Compare regular files' bytes.
    pub content: bool,
    pub external: External,
    /// Compare nlink (`fsck.erofs --extract` does not recreate hard links).
    pub nlink: bool,
    /// Compare xattrs (`fsck.erofs` 1.5 `--extract` does not write them).
    pub xattrs: bool,
    /// Compare setuid/setgid of regular files (`fsck.erofs` 1.5 `--extract`
    /// chmods before it chowns, which clears them — on `mkfs.erofs`'s own
    /// images too).
    pub setid: bool,
    /// Drop these xattr names from both sides before comparing.
    pub ignore_xattr: &'a dyn Fn(&str) -> bool,
    /// The root is an overlay merge (nlink 1).
    pub merged_root: bool,
    /// Compare directory sizes too (not across file systems).
    pub dir_sizes: bool,
}

/// Compare `view` with `src`; return every difference.
pub fn compare(src: &Path, view: &Path, opt: &Compare) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut a = Vec::new();
    walk(src, Path::new(""), &mut a);
    let mut b = Vec::new();
    walk(view, Path::new(""), &mut b);
    let (sa, sb): (BTreeSet<_>, BTreeSet<_>) = (a.iter().collect(), b.iter().collect());
    for p in sa.difference(&sb) {
        diffs.push(format!("{}: missing from the view", p.display()));
    }
    for p in sb.difference(&sa) {
        diffs.push(format!("{}: extra in the view", p.display()));
    }
    let (xa, xb) = if opt.xattrs {
        (read_xattrs(src), read_xattrs(view))
    } else {
        Default::default()
    };
    let empty = BTreeMap::new();
    for rel in std::iter::once(PathBuf::new()).chain(a.into_iter().filter(|p| sb.contains(p))) {
        let ma = fs::symlink_metadata(src.join(&rel)).unwrap();
        let mb = fs::symlink_metadata(view.join(&rel)).unwrap();
        let mut d = |what: &str, x: String, y: String| {
            if x != y {
                diffs.push(format!("/{}: {what}: source {x}, view {y}", rel.display()));
            }
        };
        let mask = if opt.setid || !ma.is_file() {
            !0
        } else {
            !0o6000
        };
        d(
            "mode",
            format!("{:o}", ma.mode() & mask),
            format!("{:o}", mb.mode() & mask),
        );
        d("uid", ma.uid().to_string(), mb.uid().to_string());
        d("gid", ma.gid().to_string(), mb.gid().to_string());
        d(
            "mtime",
            format!("{}.{:09}", ma.mtime(), ma.mtime_nsec()),
            format!("{}.{:09}", mb.mtime(), mb.mtime_nsec()),
        );
        let is_root = rel.as_os_str().is_empty();
        if opt.nlink && !(ma.is_dir() && is_root && opt.merged_root) {
            d("nlink", ma.nlink().to_string(), mb.nlink().to_string());
        }
        let external = ma.is_file() && ma.len() > INLINE_MAX;
        let empty_ok = external && opt.external == External::ZerosOrEmpty && mb.len() == 0;
        if (!ma.is_dir() || opt.dir_sizes) && !empty_ok {
            d("size", ma.len().to_string(), mb.len().to_string());
        }
        let ft = ma.file_type();
        if ft.is_char_device() || ft.is_block_device() {
            d("rdev", ma.rdev().to_string(), mb.rdev().to_string());
        }
        if ft.is_symlink() {
            d(
                "target",
                format!("{:?}", fs::read_link(src.join(&rel)).unwrap()),
                format!("{:?}", fs::read_link(view.join(&rel)).unwrap()),
            );
        }
        if ft.is_file() && opt.content {
            let ca = fs::read(src.join(&rel)).unwrap();
            let cb = fs::read(view.join(&rel)).unwrap();
            if external && opt.external != External::Content {
                if !empty_ok && (cb.len() != ca.len() || cb.iter().any(|&x| x != 0)) {
                    d("content", "zeros".into(), "not zeros".into());
                }
            } else if ca != cb {
                d("content", hex(&sha256(&ca)), hex(&sha256(&cb)));
            }
        }
        let filt = |m: &BTreeMap<String, Vec<u8>>| -> BTreeMap<String, String> {
            m.iter()
                .filter(|(k, _)| !(opt.ignore_xattr)(k))
                .map(|(k, v)| (k.clone(), hex(v)))
                .collect()
        };
        if opt.xattrs {
            d(
                "xattrs",
                format!("{:?}", filt(xa.get(&rel).unwrap_or(&empty))),
                format!("{:?}", filt(xb.get(&rel).unwrap_or(&empty))),
            );
        }
    }
    diffs
}

#[track_caller]
pub fn assert_same(src: &Path, view: &Path, opt: &Compare) {
    let diffs = compare(src, view, opt);
    assert!(
        diffs.is_empty(),
        "{} differences between {} and {}:\n{}",
        diffs.len(),
        src.display(),
        view.display(),
        diffs
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `getcap` of one file, without the path.
pub fn getcap(path: &Path) -> String {
    require_tool("getcap", "libcap2-bin");
    let out = run(Command::new("getcap").arg(path));
    out.trim()
        .strip_prefix(path.to_str().unwrap())
        .unwrap_or(&out)
        .trim()
        .to_string()
}
