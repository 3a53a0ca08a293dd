//! Issue #10, the store / profile / gc / config / CLI findings: hostile and
//! careless state, one test per finding, named after the bug. Each checks
//! the clear error (file, field, fix) and that nothing changed (store,
//! profile, ESP, the outside file the attack aimed at). Real Debian kernels,
//! the real CLI, real concurrent processes.

use crate::support::*;
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const STATE: &str = "var/lib/genboot";
const BOOT_ESP: &str = "[boot]\nesp = \"/boot/efi\"\n";

/// genboot with a plain directory accepted as the ESP (tests only).
fn genboot_dir_esp() -> Command {
    let mut c = genboot();
    c.env("GENBOOT_ESP_ANY_DIR", "1");
    c
}

fn run_esp(root: &Path, args: &[&str]) -> Output {
    genboot_dir_esp()
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("genboot runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every entry below `dir`: path, type, mode, owner and the SHA-256 of the
/// contents (or the link target). The lock files are left out: taking a
/// lock writes the holder's pid, which is not state.
fn snapshot(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, p: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == ".lock" || name == ".store.lock" {
                continue;
            }
            let path = e.path();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            let m = fs::symlink_metadata(&path).unwrap();
            let who = format!("{:o} {}:{}", m.mode(), m.uid(), m.gid());
            if m.is_dir() {
                out.push(format!("{rel}/ {who}"));
                walk(base, &path, out);
            } else if m.file_type().is_symlink() {
                out.push(format!(
                    "{rel} -> {}",
                    fs::read_link(&path).unwrap().display()
                ));
            } else {
                let digest: String = Sha256::digest(fs::read(&path).unwrap())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                out.push(format!("{rel} {who} {digest}"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Assert two snapshots are equal, showing only the lines that differ.
#[track_caller]
fn assert_same(before: &[String], after: &[String], what: &str) {
    if before == after {
        return;
    }
    let gone: Vec<&String> = before
        .iter()
        .filter(|l| !after.contains(l))
        .take(10)
        .collect();
    let new: Vec<&String> = after
        .iter()
        .filter(|l| !before.contains(l))
        .take(10)
        .collect();
    panic!("{what}\nbefore only: {gone:#?}\nafter only: {new:#?}");
}

fn numbers(root: &Path) -> Vec<u64> {
    list_json(root)
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["number"].as_u64().unwrap())
        .collect()
}

fn current(root: &Path) -> Option<u64> {
    list_json(root)
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["current"] == true)
        .map(|g| g["number"].as_u64().unwrap())
}

#[track_caller]
fn fails_with(o: &Output, expect: &[&str]) -> String {
    let e = stderr(o);
    assert!(!o.status.success(), "expected a failure, got success:\n{e}");
    for x in expect {
        assert!(e.contains(x), "expected {x:?} in:\n{e}");
    }
    assert!(e.contains("Hint:"), "no hint in:\n{e}");
    e
}

/// A copy of the cloud kernel's module tree below `dir`, as a kernel whose
/// `modules` point at the copy.
fn module_tree_copy(dir: &Path) -> Kernel {
    let k = kernel(CLOUD);
    let to = dir.join("lib/modules");
    fs::create_dir_all(&to).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(&k.modules)
        .arg(&to)
        .status()
        .unwrap();
    assert!(st.success());
    Kernel {
        modules: to.join(&k.release),
        ..k
    }
}

/// `write_config` with another label.
fn labelled(dir: &Path, k: &Kernel, extra: &str, label: &str) -> PathBuf {
    let cfg = write_config(dir, k, &[], extra);
    let text = fs::read_to_string(&cfg)
        .unwrap()
        .replace("Test system", label);
    fs::write(&cfg, text).unwrap();
    cfg
}

/// Wait, bounded, until `path` exists.
#[track_caller]
fn wait_for_file(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{what}: {} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Start `genboot --root root args` held at failpoint `point` until the
/// returned file is created; returns once it stands there.
fn spawn_held(root: &Path, args: &[&str], point: &str, go: &Path) -> Child {
    let child = genboot()
        .env(
            "GENBOOT_FAILPOINTS",
            format!("{point}=wait:{}", go.display()),
        )
        .arg("--root")
        .arg(root)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reached = go.as_os_str().to_owned();
    reached.push(".reached");
    wait_for_file(Path::new(&reached), point);
    child
}

fn leftovers(root: &Path) -> Vec<String> {
    store_objects(root)
        .into_iter()
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

/// Finding 2: `delete <booted>` then `gc` removed the running system's
/// generation and its kernel-modules object (the live /lib/modules).
#[test]
fn gc_and_delete_never_remove_the_booted_generation() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("r");
    fs::create_dir_all(root.join("boot/efi")).unwrap();
    // Generation 1 has a kernel-modules object of its own.
    let ka = module_tree_copy(&t.path().join("ka"));
    fs::write(ka.modules.join("genboot-test-extra"), b"1").unwrap();
    let cfg_a = labelled(&t.path().join("a"), &ka, BOOT_ESP, "First");
    let cfg_b = labelled(&t.path().join("b"), &kernel(CLOUD), BOOT_ESP, "Second");
    ok(run_esp(&root, &["switch", "--config", s(&cfg_a)]));
    ok(run_esp(&root, &["switch", "--config", s(&cfg_b)]));
    let gen1 = list_json(&root)[0]["path"].as_str().unwrap().to_string();
    // genboot-init's record of the boot: the machine runs generation 1.
    fs::create_dir_all(root.join("run/genboot")).unwrap();
    fs::write(root.join("run/genboot/booted"), format!("{gen1}\n")).unwrap();
    let status = ok(run_esp(&root, &["status"]));
    assert!(status.contains("booted generation:  1"), "{status}");
    let modules_of_gen1 = fs::read_link(
        root.join(gen1.trim_start_matches('/'))
            .join("kernel-modules"),
    )
    .unwrap();
    let before = snapshot(&root);
    assert!(before
        .iter()
        .any(|l| l.starts_with("boot/efi/loader/entries/genboot-1.conf")));

    let e = fails_with(
        &run_esp(&root, &["delete", "1"]),
        &[
            "generation 1 is the running system",
            "boot another generation first",
        ],
    );
    assert!(e.contains("/run/genboot/booted"), "{e}");
    assert_same(
        &before,
        &snapshot(&root),
        "a refused delete changed something",
    );

    // --keep 1 keeps the current and the booted generation, their objects
    // and the booted generation's ESP entry.
    let out = ok(run_esp(&root, &["gc", "--keep", "1"]));
    assert!(out.contains("0 generation(s), 0 store object(s)"), "{out}");
    assert_eq!(numbers(&root), vec![1, 2]);
    assert_same(&before, &snapshot(&root), "gc --keep 1 changed something");

    // The link gone behind genboot's back (an older genboot deleted it):
    // the booted object and its closure are still a GC root.
    fs::remove_file(root.join(STATE).join("profiles/system-1-link")).unwrap();
    let objects = store_objects(&root);
    let out = ok(run_esp(&root, &["gc"]));
    assert!(out.contains("0 store object(s)"), "{out}");
    assert_eq!(objects, store_objects(&root));
    let store = root.join(STATE).join("store");
    assert!(store.join(modules_of_gen1.file_name().unwrap()).is_dir());
    assert!(ok(run_esp(&root, &["verify"])).contains("all match"));
}

/// Finding 4: symlinks inside --root sent writes outside it: the profile
/// lock truncated any file, `gc` wiped another store, `switch` rewrote the
/// host's ESP.
#[test]
fn symlinks_below_root_never_lead_outside_it() {
    let t = tempfile::tempdir().unwrap();
    let k = kernel(CLOUD);
    let cfg = write_config(&t.path().join("cfg"), &k, &[], "");
    let victim = t.path().join("victim");
    fs::write(&victim, b"precious bytes\n").unwrap();

    // The profile lock and the store lock: symlinks and hard links to a file
    // outside are refused, the file keeps its bytes.
    for (i, (lock, verb)) in [("profiles/.lock", "switch"), (".store.lock", "build")]
        .iter()
        .enumerate()
    {
        for hard in [false, true] {
            let root = t.path().join(format!("lock-{i}-{hard}"));
            let path = root.join(STATE).join(lock);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            if hard {
                fs::hard_link(&victim, &path).unwrap();
            } else {
                symlink(&victim, &path).unwrap();
            }
            let why = if hard { "hard links" } else { "is a symlink" };
            fails_with(
                &run(&root, &[verb, "--config", s(&cfg)]),
                &[&path.display().to_string(), why, "Hint: remove"],
            );
            assert_eq!(fs::read(&victim).unwrap(), b"precious bytes\n");
            assert!(list_json(&root).as_array().unwrap().is_empty());
            assert!(
                store_objects(&root).is_empty(),
                "{:?}",
                store_objects(&root)
            );
        }
    }

    // The store: a link to another root's store (absolute, or relative and
    // climbing out) resolves below --root, where it names nothing.
    let other = t.path().join("other");
    ok(run(&other, &["switch", "--config", s(&cfg)]));
    let other_store = other.join(STATE).join("store");
    let other_before = snapshot(&other);
    for (i, target) in [
        other_store.clone(),
        PathBuf::from("../../../../../../..").join(other_store.strip_prefix("/").unwrap()),
    ]
    .iter()
    .enumerate()
    {
        let root = t.path().join(format!("store-{i}"));
        fs::create_dir_all(root.join(STATE)).unwrap();
        symlink(target, root.join(STATE).join("store")).unwrap();
        for args in [&["gc"][..], &["build", "--config", s(&cfg)], &["verify"]] {
            fails_with(
                &run(&root, args),
                &[
                    "store is a symlink to",
                    "does not exist below",
                    "never follows a link out of the tree",
                ],
            );
        }
        assert_same(
            &other_before,
            &snapshot(&other),
            &format!("{target:?}: the other store changed"),
        );
    }

    // The ESP: `<root>/boot/efi -> the host's ESP`, or `[boot] esp` climbing
    // out with `..`: switch refuses before building anything.
    let host_esp = t.path().join("host-esp");
    fs::create_dir_all(host_esp.join("loader/entries")).unwrap();
    fs::write(host_esp.join("loader/loader.conf"), b"default host.conf\n").unwrap();
    fs::write(host_esp.join("loader/entries/host.conf"), b"title host\n").unwrap();
    let host_before = snapshot(&host_esp);
    let root = t.path().join("esp-link");
    fs::create_dir_all(root.join("boot")).unwrap();
    symlink(&host_esp, root.join("boot/efi")).unwrap();
    let linked = write_config(&t.path().join("linked"), &k, &[], BOOT_ESP);
    fails_with(
        &run_esp(&root, &["switch", "--config", s(&linked)]),
        &[
            "[boot] esp = \"/boot/efi\"",
            "efi is a symlink to",
            "does not exist below",
        ],
    );
    // efivars: `set-oneshot` writes a variable below `<root>/sys`; a link
    // from there to another directory is not followed.
    let fake_vars = t.path().join("fake-sys");
    fs::create_dir_all(fake_vars.join("firmware/efi/efivars")).unwrap();
    let vars_before = snapshot(&fake_vars);
    let root3 = t.path().join("efivars");
    ok(run(&root3, &["switch", "--config", s(&cfg)]));
    symlink(&fake_vars, root3.join("sys")).unwrap();
    fails_with(
        &run(&root3, &["set-oneshot", "1"]),
        &["sys is a symlink to", "does not exist below"],
    );
    assert_same(
        &vars_before,
        &snapshot(&fake_vars),
        "efivars outside the tree changed",
    );
    let root2 = t.path().join("esp-dotdot");
    fs::create_dir_all(&root2).unwrap();
    let dotdot = write_config(
        &t.path().join("dotdot"),
        &k,
        &[],
        "[boot]\nesp = \"/../host-esp\"\n",
    );
    fails_with(
        &run_esp(&root2, &["switch", "--config", s(&dotdot)]),
        &[
            "[boot] esp = \"/../host-esp\"",
            "esp-dotdot/host-esp does not exist",
        ],
    );
    assert_same(&host_before, &snapshot(&host_esp), "the host's ESP changed");
    for r in [&root, &root2] {
        assert!(list_json(r).as_array().unwrap().is_empty());
        assert!(store_objects(r).is_empty(), "{:?}", store_objects(r));
    }
}

/// Finding 5: a `"` or `--` in `[kernel] params` or `[root] options`
/// swallowed `init=`, yet build and switch reported success.
#[test]
fn quotes_and_dashes_that_would_swallow_init_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let k = kernel(CLOUD);
    let root = t.path().join("r");
    let good = write_config(&t.path().join("good"), &k, &[], "");
    ok(run(&root, &["switch", "--config", s(&good)]));
    let before = snapshot(&root);
    let text = fs::read_to_string(&good).unwrap();
    let params = "params = [\"console=ttyS0\"]";
    for (name, from, to, expect) in [
        (
            "quote",
            params,
            "params = [\"console=ttyS0\", \"dyndbg=\\\"x\"]",
            "4:28: [kernel] params",
        ),
        (
            "dashes",
            params,
            "params = [\"console=ttyS0\", \"--\"]",
            "4:28: [kernel] params",
        ),
        (
            "dashes2",
            params,
            "params = [\"console=ttyS0\", \"quiet -- single\"]",
            "4:28: [kernel] params",
        ),
        (
            "control",
            params,
            "params = [\"console=ttyS0\", \"a\\tb\"]",
            "4:28: [kernel] params",
        ),
        (
            "optquote",
            "fstype = \"ext4\"",
            "fstype = \"ext4\"\noptions = \"rw,x=\\\"\"",
            "[root] options",
        ),
        (
            "devquote",
            "PARTUUID=6e6f",
            "PARTUUID=\\\"6e6f",
            "[root] device",
        ),
    ] {
        let path = t.path().join(format!("{name}.toml"));
        assert!(text.contains(from));
        fs::write(&path, text.replace(from, to)).unwrap();
        for verb in ["build", "switch"] {
            let e = fails_with(
                &run(&root, &[verb, "--config", s(&path)]),
                &[&format!("{name}.toml:"), expect],
            );
            assert!(
                e.contains("double quote") || e.contains("`--`") || e.contains("control character"),
                "{name}: {e}"
            );
            assert_same(
                &before,
                &snapshot(&root),
                &format!("{name}: {verb} changed the state"),
            );
        }
    }
}

/// Finding 7: `Store::build` (and the input cache) reused a damaged object,
/// and a symlink under an object's name, forever.
#[test]
fn a_damaged_store_object_is_replaced_not_reused() {
    let t = tempfile::tempdir().unwrap();
    let k = kernel(CLOUD);
    let root = t.path().join("r");
    let cfg = write_config(&t.path().join("c"), &k, &[], "");
    ok(run(&root, &["switch", "--config", s(&cfg)]));
    let store = root.join(STATE).join("store");
    let clean = snapshot(&store);
    let object = |prefix: &str| {
        store_objects(&root)
            .into_iter()
            .find(|n| n.split_once('-').unwrap().1.starts_with(prefix))
            .unwrap()
    };
    let flip = |file: &Path| {
        let mode = fs::metadata(file).unwrap().permissions();
        fs::set_permissions(file, fs::Permissions::from_mode(0o644)).unwrap();
        let mut data = fs::read(file).unwrap();
        let i = data.len() / 2;
        data[i] ^= 1;
        fs::write(file, data).unwrap();
        fs::set_permissions(file, mode).unwrap();
    };
    let kernel_obj = object("linux-");
    let initrd_obj = object("initrd-");

    let rounds: [(&str, &dyn Fn()); 3] = [
        // A flipped byte, found through the input cache's doubt.
        ("kernel via the cache", &|| {
            flip(&store.join(&kernel_obj).join("bzImage"))
        }),
        // A symlink to a damaged copy elsewhere, under the initrd's name.
        ("initrd symlink", &|| {
            let aside = t.path().join("aside");
            fs::create_dir_all(&aside).unwrap();
            fs::rename(store.join(&initrd_obj), aside.join(&initrd_obj)).unwrap();
            flip(&aside.join(&initrd_obj).join("initrd"));
            symlink(aside.join(&initrd_obj), store.join(&initrd_obj)).unwrap();
        }),
        // Without the cache: Store::build itself meets the damaged object.
        ("kernel without the cache", &|| {
            fs::remove_dir_all(root.join(STATE).join("cache")).unwrap();
            flip(&store.join(&kernel_obj).join("bzImage"));
        }),
    ];
    for (what, damage) in rounds {
        damage();
        let v = run(&root, &["verify"]);
        assert_eq!(v.status.code(), Some(1), "{what}: {}", stdout(&v));
        let o = run(&root, &["build", "--config", s(&cfg)]);
        let e = stderr(&o);
        assert!(o.status.success(), "{what}: {e}");
        assert!(
            e.contains("was damaged") && e.contains("replaced it with a fresh copy"),
            "{what}: {e}"
        );
        assert_same(
            &clean,
            &snapshot(&store),
            &format!("{what}: the store is not as built"),
        );
        assert!(ok(run(&root, &["verify"])).contains("all match"), "{what}");
    }
    // The damaged copy the symlink pointed at was not touched (only the link went).
    assert!(t
        .path()
        .join("aside")
        .join(&initrd_obj)
        .join("initrd")
        .is_file());
    // A fresh ESP gets the kernel's real bytes.
    let esp = t.path().join("esp");
    fs::create_dir_all(&esp).unwrap();
    ok(run_esp(&root, &["--esp", s(&esp), "install"]));
    let hash = kernel_obj.split_once('-').unwrap().0;
    let on_esp = esp.join(format!("EFI/genboot/{hash}-linux-{}.efi", k.release));
    assert_eq!(fs::read(on_esp).unwrap(), fs::read(&k.image).unwrap());
}

/// Finding 8a: two concurrent builds of one configuration failed with
/// `rename … Directory not empty`.
#[test]
fn two_concurrent_builds_of_one_config_both_succeed() {
    let t = tempfile::tempdir().unwrap();
    let k = kernel(CLOUD);
    let root = t.path().join("r");
    let cfg = write_config(&t.path().join("c"), &k, &[], "");
    let go = t.path().join("go");
    // A stops right before renaming its first object into place; B builds
    // everything meanwhile; then A renames onto B's object.
    let a = spawn_held(&root, &["build", "--config", s(&cfg)], "store::synced", &go);
    let b = ok(run(&root, &["build", "--config", s(&cfg)]));
    fs::write(&go, b"").unwrap();
    let a = a.wait_with_output().unwrap();
    let a = ok(a);
    assert_eq!(a.trim(), b.trim());
    assert_eq!(store_objects(&root).len(), 4, "{:?}", store_objects(&root));
    assert!(leftovers(&root).is_empty());
    assert!(ok(run(&root, &["verify"])).contains("all match"));
}

/// Finding 8b: `gc` during a build deleted its staging directories and
/// fresh objects.
#[test]
fn gc_waits_for_a_running_build() {
    let t = tempfile::tempdir().unwrap();
    let k = kernel(CLOUD);
    let root = t.path().join("r");
    // Another configuration is current, so gc has work of its own.
    let other = labelled(&t.path().join("o"), &k, "", "Other");
    ok(run(&root, &["switch", "--config", s(&other)]));
    let go = t.path().join("go");
    let initrd_only = write_config(&t.path().join("i"), &k, &["virtio_blk"], "");
    let build = spawn_held(
        &root,
        &["build", "--config", s(&initrd_only)],
        "store::synced",
        &go,
    );
    let staged = leftovers(&root);
    assert_eq!(staged.len(), 1, "{:?}", store_objects(&root));
    let before = snapshot(&root.join(STATE));

    fails_with(
        &run(&root, &["--no-wait", "gc"]),
        &["is in use: a build is adding objects", "without --no-wait"],
    );
    assert_same(
        &before,
        &snapshot(&root.join(STATE)),
        "gc --no-wait changed the state",
    );

    // Without --no-wait gc says it waits, and does, until the build is done.
    let mut gc = genboot()
        .arg("--root")
        .arg(&root)
        .arg("gc")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = StderrLines::of(&mut gc);
    err.wait_for(
        "waiting: a build is adding objects",
        Duration::from_secs(120),
        "gc should say it waits",
    );
    assert_same(&before, &snapshot(&root.join(STATE)), "gc did not wait");
    fs::write(&go, b"").unwrap();
    let built = ok(build.wait_with_output().unwrap());
    assert!(Path::new(built.trim()).join("boot.json").is_file());
    let gc = gc.wait_with_output().unwrap();
    let gc_err = err.all();
    assert!(gc.status.success(), "{gc_err}");
    assert!(leftovers(&root).is_empty());
    assert!(ok(run(&root, &["verify"])).contains("all match"));
}

/// Finding 13: `verify` passed a setuid or world-writable store file and
/// foreign owners.
#[test]
fn verify_flags_modes_and_owners_the_store_never_gives() {
    let t = tempfile::tempdir().unwrap();
    let k = kernel(CLOUD);
    let root = t.path().join("r");
    let cfg = write_config(&t.path().join("c"), &k, &[], "");
    ok(run(&root, &["switch", "--config", s(&cfg)]));
    let store = root.join(STATE).join("store");
    let obj = store_objects(&root)
        .into_iter()
        .find(|n| n.contains("-linux-"))
        .unwrap();
    let file = store.join(&obj).join("bzImage");
    let dir = store.join(&obj);
    enum Change {
        Mode(u32),
        Owner(u32, u32),
    }
    let cases = [
        (
            &file,
            Change::Mode(0o4555),
            "bzImage has mode 4555, expected 0444 or 0555",
        ),
        (&file, Change::Mode(0o2444), "bzImage has mode 2444"),
        (&file, Change::Mode(0o666), "bzImage has mode 0666"),
        (&dir, Change::Mode(0o755), ". has mode 0755, expected 0555"),
        (
            &file,
            Change::Owner(1000, 1000),
            "bzImage is owned by 1000:1000, expected 0:0",
        ),
    ];
    for (path, change, expect) in cases {
        let m = fs::symlink_metadata(path).unwrap();
        match change {
            Change::Mode(mode) => {
                fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap()
            }
            Change::Owner(u, g) => std::os::unix::fs::chown(path, Some(u), Some(g)).unwrap(),
        }
        let before = snapshot(&root);
        let o = run(&root, &["verify"]);
        assert_eq!(o.status.code(), Some(1), "{expect}: {}", stdout(&o));
        let out = stdout(&o);
        assert!(
            out.contains(&format!("MISMATCH {obj}: ")) && out.contains(expect),
            "{out}"
        );
        assert_same(&before, &snapshot(&root), "verify changed something");
        std::os::unix::fs::chown(path, Some(m.uid()), Some(m.gid())).unwrap();
        fs::set_permissions(path, m.permissions()).unwrap();
        assert!(ok(run(&root, &["verify"])).contains("all match"));
    }
}

/// Finding 17: `gc --older-than 30500568904944w` wrapped around and
/// deleted a 10-day-old generation.
#[test]
fn gc_older_than_an_absurd_age_is_refused_not_wrapped() {
    let t = tempfile::tempdir().unwrap();
    let k = kernel(CLOUD);
    let root = t.path().join("r");
    ok(run(
        &root,
        &[
            "switch",
            "--config",
            s(&write_config(&t.path().join("a"), &k, &[], "")),
        ],
    ));
    let b = labelled(&t.path().join("b"), &k, "", "Second");
    ok(run(&root, &["switch", "--config", s(&b)]));
    let link = root.join(STATE).join("profiles/system-1-link");
    let st = Command::new("touch")
        .args(["-h", "-d", "10 days ago"])
        .arg(&link)
        .status()
        .unwrap();
    assert!(st.success());
    let before = snapshot(&root);
    for age in ["30500568904944w", "18446744073709551616s", "36501d"] {
        fails_with(
            &run(&root, &["gc", "--older-than", age]),
            &[
                &format!("--older-than \"{age}\" is too large"),
                "up to 100 years",
            ],
        );
        assert_same(
            &before,
            &snapshot(&root),
            &format!("gc --older-than {age} changed the state"),
        );
    }
    assert_eq!(numbers(&root), vec![1, 2]);
    // A sensible age still works.
    let out = ok(run(&root, &["gc", "--older-than", "30d"]));
    assert!(out.contains("0 generation(s)"), "{out}");
    let out = ok(run(&root, &["gc", "--older-than", "9d"]));
    assert!(out.contains("deleted generation 1"), "{out}");
}

/// Finding 18: `switch` moved the profile, the install failed, the command
/// exited 1, and the new generation stayed current.
#[test]
fn a_failed_install_leaves_the_profile_as_it_was() {
    let t = tempfile::tempdir().unwrap();
    let k = kernel(CLOUD);
    let root = t.path().join("r");
    fs::create_dir_all(root.join("boot/efi")).unwrap();
    let a = labelled(&t.path().join("a"), &k, BOOT_ESP, "First");
    ok(run_esp(&root, &["switch", "--config", s(&a)]));
    let before = snapshot(&root);

    // The configured ESP is missing: refused before anything is built.
    let missing = labelled(
        &t.path().join("m"),
        &k,
        "[boot]\nesp = \"/efi\"\n",
        "Second",
    );
    fails_with(
        &run_esp(&root, &["switch", "--config", s(&missing)]),
        &["[boot] esp = \"/efi\"", "does not exist"],
    );
    assert_same(
        &before,
        &snapshot(&root),
        "a switch to a missing ESP changed something",
    );

    // The install fails halfway (writing the new entry): the profile is put
    // back, the ESP still boots generation 1 by default, and the next
    // install leaves it exactly as it was.
    let b = labelled(&t.path().join("b"), &k, BOOT_ESP, "Second");
    let profiles = root.join(STATE).join("profiles");
    let esp = root.join("boot/efi");
    let (profile_before, esp_before) = (snapshot(&profiles), snapshot(&esp));
    let conf_before = fs::read(esp.join("loader/loader.conf")).unwrap();
    assert!(String::from_utf8_lossy(&conf_before).contains("default genboot-1[.+][c1-9]*"));
    let o = genboot_dir_esp()
        .env("GENBOOT_FAILPOINTS", "esp::entry-written=error")
        .arg("--root")
        .arg(&root)
        .args(["switch", "--config", s(&b)])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("the profile was put back as it was: the current generation is 1 again"),
        "{e}"
    );
    assert_same(&profile_before, &snapshot(&profiles), "the profile moved");
    assert_eq!(current(&root), Some(1));
    assert_eq!(
        fs::read(esp.join("loader/loader.conf")).unwrap(),
        conf_before,
        "loader.conf changed"
    );
    for l in &esp_before {
        assert!(snapshot(&esp).contains(l), "{l} changed on the ESP");
    }
    ok(run_esp(&root, &["install"]));
    assert_same(
        &esp_before,
        &snapshot(&esp),
        "the next install did not restore the ESP",
    );
    // What the failed switch built is garbage now.
    ok(run_esp(&root, &["gc"]));
    assert_same(
        &before,
        &snapshot(&root),
        "gc did not return to the state before the switch",
    );
}

/// Finding 20: the input cache trusted size, mtime and inode, so a
/// same-size edit of a module with its mtime put back reused the old build.
#[test]
fn a_same_size_module_edit_with_mtime_restored_is_rebuilt() {
    let t = tempfile::tempdir().unwrap();
    let k = module_tree_copy(&t.path().join("k"));
    let root = t.path().join("r");
    let cfg = write_config(&t.path().join("c"), &k, &[], "");
    // The input cache records no build of inputs changed just before it
    // (their ctime cannot tell a later edit apart): build until it records.
    let cache = root.join(STATE).join("cache");
    let deadline = Instant::now() + Duration::from_secs(120);
    let first = loop {
        let out = ok(run(&root, &["build", "--config", s(&cfg)]));
        let recorded = fs::read_dir(&cache).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("build-"))
        });
        if recorded {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "the input cache never recorded the build"
        );
    };
    let module = k.modules.join("kernel/fs/isofs/isofs.ko");
    let meta = fs::metadata(&module).unwrap();
    let mut data = fs::read(&module).unwrap();
    let i = data.len() / 2;
    data[i] ^= 0x55;
    fs::write(&module, &data).unwrap();
    fs::File::options()
        .write(true)
        .open(&module)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    let after = fs::metadata(&module).unwrap();
    assert_eq!(
        (after.len(), after.mtime(), after.mtime_nsec(), after.ino()),
        (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ino())
    );

    let second = ok(run(&root, &["build", "--config", s(&cfg)]));
    assert_ne!(
        first.trim(),
        second.trim(),
        "the edited module tree gave the old generation"
    );
    let gen = PathBuf::from(second.trim());
    let copied = gen
        .join("kernel-modules/lib/modules")
        .join(&k.release)
        .join("kernel/fs/isofs/isofs.ko");
    assert_eq!(
        fs::read(copied).unwrap(),
        data,
        "the generation holds the old module"
    );
    assert!(ok(run(&root, &["verify"])).contains("all match"));
}
