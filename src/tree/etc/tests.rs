//! The merge and the status on real temporary directories: images are
//! real directories scanned into manifests (as an import does), layers
//! real directories with real whiteouts, modes, symlinks and xattrs.

use super::*;
use crate::failpoint::Mode;
use crate::tree::scan::{scan_tree, Scanned};
use std::os::unix::fs::symlink;

/// Write `files` (path → content; a content starting with `->` is a
/// symlink) below `root`.
fn write(root: &Path, files: &[(&str, &str)]) {
    for (p, c) in files {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        match c.strip_prefix("->") {
            Some(t) => symlink(t, &path).unwrap(),
            None => fs::write(&path, c).unwrap(),
        }
    }
}

fn whiteout(upper: &Path, p: &str) {
    let path = upper.join(p);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    sys::mknod_whiteout(&path).unwrap();
}

/// An image: a tree with `/etc` holding `files`, scanned.
fn image(dir: &Path, files: &[(&str, &str)]) -> Scanned {
    let etc = dir.join("etc");
    fs::create_dir_all(&etc).unwrap();
    write(&etc, files);
    scan_tree(dir, None).unwrap()
}

fn reader(s: &Scanned) -> impl Fn(&Sha256Digest) -> io::Result<Vec<u8>> + '_ {
    move |d| s.contents.read(d)
}

/// Every entry below `dir`: path → kind, mode, content or target, xattrs.
fn listing(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let st = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let mut x: Vec<String> = sys::list_xattrs(&p)
                .unwrap()
                .into_iter()
                .map(|n| {
                    let v = sys::get_xattr(&p, &n).unwrap();
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(&n),
                        String::from_utf8_lossy(&v)
                    )
                })
                .collect();
            x.sort();
            let what = if st.is_dir() {
                "dir".to_string()
            } else if st.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if is_whiteout(&st) {
                "whiteout".to_string()
            } else {
                format!("file {:?}", fs::read_to_string(&p).unwrap())
            };
            let mode = if st.file_type().is_symlink() {
                0
            } else {
                st.mode() & 0o7777
            };
            out.insert(rel, format!("{what} {mode:o} {}", x.join(",")));
            if st.is_dir() {
                go(root, &p, out);
            }
        }
    }
    go(dir, dir, &mut out);
    out
}

struct World {
    t: tempfile::TempDir,
    old: Scanned,
    new: Scanned,
}

impl World {
    fn new(old: &[(&str, &str)], new: &[(&str, &str)]) -> World {
        let t = tempfile::tempdir().unwrap();
        let o = image(&t.path().join("old"), old);
        let n = image(&t.path().join("new"), new);
        fs::create_dir_all(t.path().join("layers/gen1/upper")).unwrap();
        World { t, old: o, new: n }
    }
    fn upper(&self) -> PathBuf {
        self.t.path().join("layers/gen1/upper")
    }
    fn layers(&self) -> PathBuf {
        self.t.path().join("layers")
    }
    fn prepare(&self) -> Result<Prepared, TreeError> {
        let (ro, rn) = (reader(&self.old), reader(&self.new));
        let upper = self.upper();
        let old = Old {
            upper: &upper,
            image: Image {
                manifest: &self.old.manifest,
                read: &ro,
            },
        };
        let new = Image {
            manifest: &self.new.manifest,
            read: &rn,
        };
        prepare_layer(&self.layers(), "gen2", Some(&old), &new)
    }
    fn merged(&self) -> Merged {
        match self.prepare().unwrap() {
            Prepared::Written(m) => m,
            e => panic!("{e:?}"),
        }
    }
    fn new_upper(&self) -> PathBuf {
        self.layers().join("gen2/upper")
    }
    fn status(&self) -> Vec<String> {
        let ro = reader(&self.old);
        let img = Image {
            manifest: &self.old.manifest,
            read: &ro,
        };
        local_changes(&self.upper(), &img)
            .unwrap()
            .iter()
            .map(|c| format!("{} {}", c.change.letter(), c.path))
            .collect()
    }
}

const OLD: &[(&str, &str)] = &[
    ("hostname", "debian\n"),
    ("motd", "old motd\n"),
    ("a.conf", "a\n"),
    ("dropped.conf", "dropped\n"),
    ("ssh/sshd_config", "Port 22\n"),
    ("localtime", "->/usr/share/zoneinfo/Etc/UTC"),
];
const NEW: &[(&str, &str)] = &[
    ("hostname", "debian\n"),
    ("motd", "new motd\n"),
    ("a.conf", "a\n"),
    ("added.conf", "added\n"),
    ("ssh/sshd_config", "Port 22\n"),
    ("localtime", "->/usr/share/zoneinfo/Etc/UTC"),
];

#[test]
fn admin_changes_are_kept_untouched_files_follow_the_new_image() {
    let w = World::new(OLD, NEW);
    let up = w.upper();
    // The admin's edit, a new file, a copy-up that changed nothing, a new
    // symlink target.
    write(
        &up,
        &[
            ("hostname", "myhost\n"),
            ("local.conf", "mine\n"),
            ("a.conf", "a\n"),
            ("localtime", "->/usr/share/zoneinfo/Europe/Berlin"),
        ],
    );
    fs::set_permissions(up.join("local.conf"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        w.status(),
        ["M /etc/hostname", "A /etc/local.conf", "M /etc/localtime"]
    );
    let m = w.merged();
    let got = listing(&w.new_upper());
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["hostname", "local.conf", "localtime"],
        "{got:#?}"
    );
    assert!(
        got["hostname"].starts_with("file \"myhost\\n\" 644"),
        "{got:#?}"
    );
    assert!(
        got["local.conf"].starts_with("file \"mine\\n\" 600"),
        "{got:#?}"
    );
    assert!(got["localtime"].starts_with("-> /usr/share/zoneinfo/Europe/Berlin"));
    assert_eq!(
        m.kept,
        ["/etc/hostname", "/etc/local.conf", "/etc/localtime"]
    );
    assert!(m.conflicts.is_empty(), "{m:?}");
    assert!(w.layers().join("gen2/work").is_dir());
    // mtimes are the admin's.
    assert_eq!(
        fs::metadata(up.join("hostname"))
            .unwrap()
            .modified()
            .unwrap(),
        fs::metadata(w.new_upper().join("hostname"))
            .unwrap()
            .modified()
            .unwrap()
    );
}

#[test]
fn an_admin_change_the_new_image_also_made_is_kept_and_told() {
    let w = World::new(OLD, NEW);
    write(&w.upper(), &[("motd", "admin motd\n")]);
    let m = w.merged();
    assert_eq!(m.kept, ["/etc/motd"]);
    assert_eq!(m.conflicts, ["/etc/motd"]);
    assert_eq!(
        fs::read_to_string(w.new_upper().join("motd")).unwrap(),
        "admin motd\n"
    );
}

#[test]
fn deletions_are_kept_where_the_new_image_has_the_path() {
    let w = World::new(OLD, NEW);
    whiteout(&w.upper(), "a.conf");
    whiteout(&w.upper(), "dropped.conf");
    assert_eq!(w.status(), ["D /etc/a.conf", "D /etc/dropped.conf"]);
    let m = w.merged();
    let got = listing(&w.new_upper());
    assert_eq!(got.keys().collect::<Vec<_>>(), ["a.conf"]);
    assert!(got["a.conf"].starts_with("whiteout"), "{got:?}");
    assert_eq!(m.deleted, ["/etc/a.conf"]);
    assert_eq!(m.dropped.len(), 1, "{m:?}");
    assert!(m.dropped[0].starts_with("/etc/dropped.conf"), "{m:?}");
}

#[test]
fn directories_modes_and_xattrs_are_carried() {
    let w = World::new(OLD, NEW);
    let up = w.upper();
    // A new file in a directory the image has (a copy-up of the directory,
    // metadata unchanged): the directory follows the new image's metadata.
    write(
        &up,
        &[("ssh/sshd_config.d/local.conf", "PermitRootLogin no\n")],
    );
    fs::set_permissions(up.join("ssh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(
        up.join("ssh/sshd_config.d"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    sys::set_xattr(
        &up.join("ssh/sshd_config.d/local.conf"),
        b"user.note",
        b"kept",
    )
    .unwrap();
    fs::set_permissions(
        up.join("ssh/sshd_config.d/local.conf"),
        fs::Permissions::from_mode(0o4640),
    )
    .unwrap();
    // An empty directory of the admin's.
    fs::create_dir(up.join("empty.d")).unwrap();
    let m = w.merged();
    let got = listing(&w.new_upper());
    assert_eq!(got["ssh"], "dir 755 ", "{got:#?}");
    assert_eq!(got["ssh/sshd_config.d"], "dir 750 ", "{got:#?}");
    assert_eq!(
        got["ssh/sshd_config.d/local.conf"],
        "file \"PermitRootLogin no\\n\" 4640 user.note=kept"
    );
    assert!(got.contains_key("empty.d"), "{got:#?}");
    assert!(!got.contains_key("ssh/sshd_config"), "{got:#?}");
    assert!(
        m.kept.contains(&"/etc/ssh/sshd_config.d".to_string()),
        "{m:?}"
    );
    assert!(!m.kept.contains(&"/etc/ssh".to_string()), "{m:?}");
    let root = fs::metadata(w.new_upper()).unwrap();
    assert_eq!(root.mode() & 0o7777, 0o755);
}

#[test]
fn accounts_are_merged_by_name() {
    let old_passwd = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        sysold:x:120:120::/nonexistent:/usr/sbin/nologin\n\
        sysclash:x:121:121::/nonexistent:/usr/sbin/nologin\n\
        gone:x:122:122::/nonexistent:/usr/sbin/nologin\n";
    let new_passwd = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/nonexistent:/usr/sbin/nologin\n\
        gone:x:122:122::/nonexistent:/usr/sbin/nologin\n\
        _chrony:x:121:121:Chrony daemon,,,:/var/lib/chrony:/usr/sbin/nologin\n";
    let effective = "root:x:0:0:root:/root:/bin/zsh\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        sysold:x:120:120::/nonexistent:/usr/sbin/nologin\n\
        sysclash:x:121:121::/nonexistent:/usr/sbin/nologin\n\
        alice:x:1000:1000:Alice:/home/alice:/bin/bash\n";
    let old_shadow = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nsysold:*:19000::::::\nsysclash:*:19000::::::\ngone:*:19000::::::\n";
    let new_shadow = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\ngone:*:19000::::::\n_chrony:!:19500::::::\n";
    let eff_shadow = "root:$y$j9T$salt$hash:19800:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nsysold:*:19000::::::\nsysclash:*:19000::::::\nalice:$y$j9T$a$b:19800:0:99999:7:::\n";
    let group = "root:x:0:\n";
    let w = World::new(
        &[
            ("passwd", old_passwd),
            ("shadow", old_shadow),
            ("group", group),
        ],
        &[
            ("passwd", new_passwd),
            ("shadow", new_shadow),
            ("group", "root:x:0:\n_chrony:x:121:\n"),
        ],
    );
    write(
        &w.upper(),
        &[
            ("passwd", effective),
            ("shadow", eff_shadow),
            // A copy-up that changed nothing: follows the new image.
            ("group", group),
        ],
    );
    fs::set_permissions(w.upper().join("shadow"), fs::Permissions::from_mode(0o640)).unwrap();
    let m = w.merged();
    assert_eq!(m.accounts, ["/etc/passwd", "/etc/shadow"]);
    let passwd = fs::read_to_string(w.new_upper().join("passwd")).unwrap();
    assert_eq!(
        passwd,
        "root:x:0:0:root:/root:/bin/zsh\n\
         daemon:x:1:1:daemon:/nonexistent:/usr/sbin/nologin\n\
         _chrony:x:121:121:Chrony daemon,,,:/var/lib/chrony:/usr/sbin/nologin\n\
         sysold:x:120:120::/nonexistent:/usr/sbin/nologin\n\
         alice:x:1000:1000:Alice:/home/alice:/bin/bash\n",
        "admin's root, the image's daemon, the new _chrony, the dropped sysold kept, sysclash (its id now _chrony's) left out, the local alice; gone stays deleted"
    );
    let shadow = fs::read_to_string(w.new_upper().join("shadow")).unwrap();
    assert_eq!(
        shadow,
        "root:$y$j9T$salt$hash:19800:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n_chrony:!:19500::::::\nsysold:*:19000::::::\nalice:$y$j9T$a$b:19800:0:99999:7:::\n"
    );
    let st = fs::metadata(w.new_upper().join("shadow")).unwrap();
    assert_eq!(st.mode() & 0o7777, 0o640);
    assert!(!w.new_upper().join("group").exists());
    assert!(
        m.dropped
            .iter()
            .any(|d| d.starts_with("/etc/passwd: sysclash: ") && d.contains("121 to _chrony")),
        "{m:?}"
    );
    assert!(
        m.dropped
            .iter()
            .any(|d| d.starts_with("/etc/shadow: sysclash")),
        "{m:?}"
    );
}

#[test]
fn merge_accounts_rules() {
    let names = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();
    // A local user whose id the new image gives to a new system user: kept, warned.
    let r = merge_accounts(
        Some(b"root:x:0:0\n"),
        b"root:x:0:0\nbob:x:130:130\n",
        Some(b"root:x:0:0\n_new:x:130:130\n"),
        true,
        None,
    );
    assert_eq!(r.text, b"root:x:0:0\n_new:x:130:130\nbob:x:130:130\n");
    assert!(r.dropped.is_empty());
    assert_eq!(r.warnings.len(), 1, "{r:?}");
    assert!(r.warnings[0].contains("bob") && r.warnings[0].contains("_new"));
    // The admin and the image changed the same name: the admin's line.
    let r = merge_accounts(
        Some(b"a:x:1:1:old\n"),
        b"a:x:1:1:admin\n",
        Some(b"a:x:1:1:image\n"),
        true,
        None,
    );
    assert_eq!(r.text, b"a:x:1:1:admin\n");
    // shadow keeps only names the new passwd has.
    let r = merge_accounts(
        Some(b"a:*\n"),
        b"a:*\nb:hash\n",
        Some(b"a:*\n"),
        false,
        Some(&names(&["a"])),
    );
    assert_eq!(r.text, b"a:*\n");
    assert_eq!(r.dropped.len(), 1);
    // The same inputs, the same bytes.
    let once = merge_accounts(Some(b"a:1\n"), b"b:2\n", Some(b"c:3\n"), false, None);
    assert_eq!(
        once,
        merge_accounts(Some(b"a:1\n"), b"b:2\n", Some(b"c:3\n"), false, None)
    );
}

#[test]
fn an_existing_layer_of_the_new_generation_is_never_touched() {
    let w = World::new(OLD, NEW);
    write(&w.upper(), &[("hostname", "myhost\n")]);
    let own = w.layers().join("gen2/upper");
    write(&own, &[("hostname", "gen2's own\n")]);
    let before = listing(&w.layers().join("gen2"));
    assert_eq!(
        w.prepare().unwrap(),
        Prepared::Existing(w.layers().join("gen2"))
    );
    assert_eq!(listing(&w.layers().join("gen2")), before);
    // A re-run after a merge keeps the merged layer too.
    fs::remove_dir_all(w.layers().join("gen2")).unwrap();
    w.merged();
    let merged = listing(&w.layers().join("gen2"));
    write(&w.upper(), &[("motd", "later edit\n")]);
    assert!(matches!(w.prepare().unwrap(), Prepared::Existing(_)));
    assert_eq!(listing(&w.layers().join("gen2")), merged);
}

#[test]
fn a_failure_at_the_failpoint_leaves_no_layer_and_a_rerun_converges() {
    let w = World::new(OLD, NEW);
    write(&w.upper(), &[("hostname", "myhost\n"), ("motd", "mine\n")]);
    whiteout(&w.upper(), "a.conf");
    let reference = {
        let r = World::new(OLD, NEW);
        write(&r.upper(), &[("hostname", "myhost\n"), ("motd", "mine\n")]);
        whiteout(&r.upper(), "a.conf");
        r.merged();
        listing(&r.layers().join("gen2"))
    };
    {
        let armed = failpoint::arm(FailPoint::EtcLayerWritten, Mode::Error);
        let e = w.prepare().unwrap_err();
        assert!(e.to_string().contains("etc::layer-written"), "{e}");
        assert_eq!(armed.hits(), 1);
    }
    assert_eq!(
        list_dir(&w.layers()).unwrap(),
        [b"gen1".to_vec()],
        "no layer, no temporary directory"
    );
    // A crash (power loss) there leaves the temporary directory: the next
    // run removes it and writes the layer whole.
    let left = w.layers().join(format!(".tmp-gen2-{}", u32::MAX));
    write(&left, &[("upper/hostname", "half\n")]);
    w.merged();
    assert_eq!(listing(&w.layers().join("gen2")), reference);
    assert_eq!(
        list_dir(&w.layers()).unwrap(),
        [b"gen1".to_vec(), b"gen2".to_vec()]
    );
}

#[test]
#[cfg_attr(
    not(feature = "full-tests"),
    ignore = "trusted.* xattrs need root: run with --features full-tests as root"
)]
fn an_opaque_directory_is_carried_whole_and_its_hidden_files_show_as_deleted() {
    let w = World::new(
        &[
            ("apt/sources.list.d/a.list", "a\n"),
            ("apt/sources.list.d/b.list", "b\n"),
        ],
        &[
            ("apt/sources.list.d/a.list", "a2\n"),
            ("apt/sources.list.d/c.list", "c\n"),
        ],
    );
    let up = w.upper();
    // `rm -r sources.list.d; mkdir sources.list.d; echo a > a.list` in the overlay.
    write(&up, &[("apt/sources.list.d/a.list", "a\n")]);
    sys::set_xattr(&up.join("apt/sources.list.d"), OPAQUE_XATTR, b"y").unwrap();
    assert_eq!(
        w.status(),
        [
            "M /etc/apt/sources.list.d",
            "D /etc/apt/sources.list.d/b.list"
        ]
    );
    w.merged();
    let got = listing(&w.new_upper());
    assert_eq!(
        got["apt/sources.list.d"], "dir 755 trusted.overlay.opaque=y",
        "{got:#?}"
    );
    // Below an opaque directory a file equal to the old image's is still
    // carried: the new image's a.list and c.list stay hidden.
    assert!(got["apt/sources.list.d/a.list"].starts_with("file \"a\\n\""));
    assert_eq!(got.len(), 3, "{got:#?}");
}

#[test]
fn the_line_diff_is_unified() {
    let a: String = (1..=20).map(|i| format!("{i}\n")).collect();
    let b = a.replacen("4\n", "four\n", 1) + "21\n";
    let h = line_diff(&a, &b, 3);
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!((h[0].a, h[0].b), ((1, 7), (1, 7)));
    assert_eq!(
        h[0].lines.iter().filter(|l| l.0 != ' ').collect::<Vec<_>>(),
        [&('-', "4".to_string()), &('+', "four".to_string())]
    );
    assert_eq!((h[1].a, h[1].b), ((18, 3), (18, 4)), "{h:?}");
    assert_eq!(h[1].lines.last().unwrap(), &('+', "21".to_string()));
    // Changes up to 2 * context lines apart share a hunk (as diff -u does).
    let near = b.replacen("11\n", "eleven\n", 1);
    assert_eq!(line_diff(&a, &near, 3).len(), 2);
    let far = b.replacen("12\n", "twelve\n", 1);
    assert_eq!(line_diff(&a, &far, 3).len(), 3);
    // Against nothing: one hunk from line 0.
    let h = line_diff("", "x\ny\n", 3);
    assert_eq!((h[0].a, h[0].b), ((0, 0), (1, 2)));
    assert!(line_diff(&a, &a, 3).is_empty());
}
