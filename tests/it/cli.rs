//! The foundation through the real CLI on temporary trees: builds, the
//! profile verbs, gc, verify, failpoints and bad input. Real Debian kernels.

use crate::support::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn gen_path(out: &str) -> PathBuf {
    PathBuf::from(out.trim())
}

fn current_number(root: &Path) -> u64 {
    list_json(root)
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["current"] == true)
        .map(|g| g["number"].as_u64().unwrap())
        .expect("a current generation")
}

#[test]
fn same_config_under_two_roots_at_different_times_gives_the_same_generation() {
    let k = kernel(CLOUD);
    let t = tempfile::tempdir().unwrap();
    let cfg = write_config(&t.path().join("cfg"), &k, &["virtio_blk"], "");
    // The second build reads a configuration with another time (an
    // explicit mtime instead of waiting for the clock to move on).
    set_mtime(&cfg, 1_000_000_000);
    let a = gen_path(&ok(run(
        &t.path().join("a"),
        &["build", "--config", cfg.to_str().unwrap()],
    )));
    set_mtime(&cfg, 1_700_000_000);
    let b = gen_path(&ok(run(
        &t.path().join("b"),
        &["build", "--config", cfg.to_str().unwrap()],
    )));
    assert_eq!(a.file_name(), b.file_name());
    assert_eq!(
        store_objects(&t.path().join("a")),
        store_objects(&t.path().join("b"))
    );

    // One byte of the kernel changes the generation.
    let mut image = fs::read(&k.image).unwrap();
    let last = image.len() - 1;
    image[last] ^= 0xff;
    let flipped = t.path().join("vmlinuz-flipped");
    fs::write(&flipped, image).unwrap();
    let text = fs::read_to_string(&cfg).unwrap().replace(
        &k.image.display().to_string(),
        &flipped.display().to_string(),
    );
    let cfg2 = t.path().join("cfg2.toml");
    fs::write(&cfg2, text).unwrap();
    let c = gen_path(&ok(run(
        &t.path().join("a"),
        &["build", "--config", cfg2.to_str().unwrap()],
    )));
    assert_ne!(a.file_name(), c.file_name());
}

#[test]
fn boot_json_names_its_own_store_path_and_verifies() {
    let k = kernel(CLOUD);
    let t = tempfile::tempdir().unwrap();
    let cfg = write_config(&t.path().join("cfg"), &k, &[], "");
    let root = t.path().join("r");
    let g = gen_path(&ok(run(
        &root,
        &["build", "--config", cfg.to_str().unwrap()],
    )));
    let boot: serde_json::Value =
        serde_json::from_slice(&fs::read(g.join("boot.json")).unwrap()).unwrap();
    let v1 = &boot["org.nixos.bootspec.v1"];
    let name = g.file_name().unwrap().to_str().unwrap();
    assert_eq!(v1["toplevel"], format!("/var/lib/genboot/store/{name}"));
    assert_eq!(v1["init"], format!("/var/lib/genboot/store/{name}/init"));
    assert_eq!(boot["org.genboot.v1"]["kernelRelease"], k.release);
    assert_eq!(
        fs::read_link(g.join("init")).unwrap(),
        Path::new("/sbin/init")
    );
    let out = ok(run(&root, &["verify"]));
    assert!(out.contains("all match"), "{out}");
}

#[test]
fn profile_verbs_behave_like_nixos() {
    let (a, b) = (kernel(CLOUD), kernel(GENERIC));
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("r");
    let cfg_a = write_config(&t.path().join("a"), &a, &[], "");
    let cfg_b = write_config(&t.path().join("b"), &b, &["virtio_blk"], "");
    let sw = |cfg: &Path| ok(run(&root, &["switch", "--config", cfg.to_str().unwrap()]));

    let empty = ok(run(&root, &["list"]));
    assert!(empty.contains("no generations"), "{empty}");
    sw(&cfg_a);
    sw(&cfg_b);
    // Switching to what is already current makes no new generation.
    sw(&cfg_b);
    let l = list_json(&root);
    assert_eq!(l.as_array().unwrap().len(), 2);
    assert_eq!(l[0]["kernelRelease"], a.release);
    assert_eq!(l[1]["kernelRelease"], b.release);
    assert_eq!(l[0]["label"], "Test system");
    assert_eq!(current_number(&root), 2);
    let text = ok(run(&root, &["list"]));
    assert!(
        text.lines()
            .any(|l| l.starts_with('*') && l.contains(" 2 ") && l.contains("(current)")),
        "{text}"
    );

    ok(run(&root, &["rollback"]));
    assert_eq!(current_number(&root), 1);
    let e = run(&root, &["rollback"]);
    assert!(!e.status.success());
    assert!(
        stderr(&e).contains("no generation before 1"),
        "{}",
        stderr(&e)
    );

    sw(&cfg_a); // same as gen 1 which is current: nothing new
    assert_eq!(list_json(&root).as_array().unwrap().len(), 2);
    sw(&cfg_b); // differs from current (1): generation 3
    assert_eq!(current_number(&root), 3);
    ok(run(&root, &["set-default", "1"]));
    assert_eq!(current_number(&root), 1);
    let e = run(&root, &["set-default", "9"]);
    assert!(
        stderr(&e).contains("generation 9 does not exist"),
        "{}",
        stderr(&e)
    );

    // delete refuses the current generation and changes nothing.
    let before = snapshot(&root.join("var/lib/genboot/profiles"));
    let e = run(&root, &["delete", "1", "2"]);
    assert!(
        stderr(&e).contains("generation 1 is the current one"),
        "{}",
        stderr(&e)
    );
    assert_eq!(before, snapshot(&root.join("var/lib/genboot/profiles")));
    ok(run(&root, &["delete", "2"]));
    let nums: Vec<u64> = list_json(&root)
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["number"].as_u64().unwrap())
        .collect();
    assert_eq!(nums, vec![1, 3]);
}

#[test]
fn gc_keeps_the_current_generation_and_everything_it_reaches() {
    let (a, b) = (kernel(CLOUD), kernel(CLOUD));
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("r");
    let cfg_a = write_config(&t.path().join("a"), &a, &[], "");
    let cfg_b = second_system(&t.path().join("b"), &b);
    ok(run(&root, &["switch", "--config", cfg_a.to_str().unwrap()]));
    ok(run(&root, &["switch", "--config", cfg_b.to_str().unwrap()]));
    // The current one is the OLDER one.
    ok(run(&root, &["set-default", "1"]));
    // A built but never switched-to generation is garbage.
    let stray = write_config(&t.path().join("c"), &a, &[], "[boot]\ntries = 2\n");
    ok(run(&root, &["build", "--config", stray.to_str().unwrap()]));
    let before = store_objects(&root);

    // No policy: only unreachable objects go.
    let out = ok(run(&root, &["gc"]));
    assert!(out.contains("0 generation(s)"), "{out}");
    assert!(out.contains("MiB freed"), "{out}");
    assert_eq!(store_objects(&root).len(), before.len() - 1);

    // --keep 1 keeps the newest AND the current (which is older).
    let out = ok(run(&root, &["gc", "--keep", "1"]));
    let nums: Vec<u64> = list_json(&root)
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["number"].as_u64().unwrap())
        .collect();
    assert_eq!(nums, vec![1, 2], "{out}");
    ok(run(&root, &["set-default", "2"]));
    let out = ok(run(&root, &["gc", "--keep", "1"]));
    assert!(out.contains("deleted generation 1"), "{out}");
    let nums: Vec<u64> = list_json(&root)
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["number"].as_u64().unwrap())
        .collect();
    assert_eq!(nums, vec![2]);
    // Everything the current generation reaches is still there and verifies.
    let out = ok(run(&root, &["verify"]));
    assert!(out.contains("all match"), "{out}");
    let g = list_json(&root)[0]["path"].as_str().unwrap().to_string();
    let host = root.join(g.trim_start_matches('/'));
    for link in ["kernel", "initrd", "kernel-modules"] {
        let p = host.join(link);
        if fs::symlink_metadata(&p).is_ok() {
            assert!(p.exists(), "{} must survive gc", p.display());
        }
    }
    assert!(host.join("kernel").exists());

    // --older-than spares young generations.
    let out = ok(run(&root, &["gc", "--older-than", "30d"]));
    assert!(out.contains("0 generation(s)"), "{out}");
    let e = run(&root, &["gc", "--older-than", "30"]);
    assert!(stderr(&e).contains("is not an age"), "{}", stderr(&e));
}

#[test]
fn verify_finds_a_flipped_byte_in_any_store_file() {
    let k = kernel(CLOUD);
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("r");
    let cfg = write_config(&t.path().join("a"), &k, &[], "");
    ok(run(&root, &["switch", "--config", cfg.to_str().unwrap()]));
    let store = root.join("var/lib/genboot/store");
    let mut files = Vec::new();
    for obj in fs::read_dir(&store).unwrap().flatten() {
        let mut stack = vec![obj.path()];
        while let Some(p) = stack.pop() {
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.extend(fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
            } else if m.is_file() {
                files.push((obj.file_name().to_string_lossy().into_owned(), p));
            }
        }
    }
    assert!(files.len() >= 2, "{files:?}");
    // Every object, and in each its first, middle and last file: re-running
    // verify once per file of a module tree would take minutes.
    files.sort();
    let mut sample = Vec::new();
    for obj in files.chunk_by(|a, b| a.0 == b.0) {
        for i in [0, obj.len() / 2, obj.len() - 1] {
            if !sample.contains(&obj[i]) {
                sample.push(obj[i].clone());
            }
        }
    }
    for (object, file) in sample {
        let orig = fs::read(&file).unwrap();
        let mode = fs::metadata(&file).unwrap().permissions();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let mut bad = orig.clone();
        let i = bad.len() / 2;
        bad[i] ^= 1;
        fs::write(&file, &bad).unwrap();
        let o = run(&root, &["verify"]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "flipped byte in {} not found",
            file.display()
        );
        assert!(
            stdout(&o).contains(&format!("MISMATCH {object}")),
            "{}",
            stdout(&o)
        );
        fs::write(&file, &orig).unwrap();
        fs::set_permissions(&file, mode).unwrap();
    }
    ok(run(&root, &["verify"]));
}

#[test]
fn a_failure_at_every_store_and_profile_step_leaves_the_previous_state() {
    let (a, b) = (kernel(CLOUD), kernel(CLOUD));
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("r");
    let cfg_a = write_config(&t.path().join("a"), &a, &[], "");
    let cfg_b = second_system(&t.path().join("b"), &b);
    ok(run(&root, &["switch", "--config", cfg_a.to_str().unwrap()]));
    let points: Vec<&str> = genboot::failpoint::ALL
        .iter()
        .copied()
        .filter(|p| p.starts_with("store::") || p.starts_with("profile::"))
        .collect();
    let mut tried = 0;
    for point in &points {
        for action in ["exit", "error"] {
            let work = t.path().join(format!("w-{tried}"));
            copy_dir(&root, &work);
            let profile_before = snapshot(&work.join("var/lib/genboot/profiles"));
            let mut c = genboot();
            c.env("GENBOOT_FAILPOINTS", format!("{point}={action}"));
            c.arg("--root")
                .arg(&work)
                .args(["switch", "--config", cfg_b.to_str().unwrap()]);
            let o = c.output().unwrap();
            assert!(
                !o.status.success(),
                "failpoint {point}={action} did not fire"
            );
            tried += 1;
            // The current generation is still generation 1, or (if the crash
            // came after the switch itself) the new one, complete.
            let cur = current_number(&work);
            if point.starts_with("store::")
                || *point == "profile::link-written"
                || *point == "profile::link-renamed"
                || *point == "profile::current-written"
            {
                assert_eq!(cur, 1, "{point}={action}");
                if point.starts_with("store::") || *point == "profile::link-written" {
                    assert_eq!(
                        profile_before,
                        snapshot(&work.join("var/lib/genboot/profiles")),
                        "{point}={action}"
                    );
                }
            }
            let out = ok(run(&work, &["verify"]));
            assert!(out.contains("all match"), "{point}={action}: {out}");
            // A re-run succeeds and converges.
            // (A crash after the new link landed but before `system` moved
            // leaves that link as a complete, bootable generation; the re-run
            // adds the next one, as nix-env would.)
            ok(run(&work, &["switch", "--config", cfg_b.to_str().unwrap()]));
            let l = list_json(&work);
            let cur = l
                .as_array()
                .unwrap()
                .iter()
                .find(|g| g["current"] == true)
                .unwrap();
            assert_eq!(cur["label"], "Second system", "{point}={action}: {l}");
            assert!(l.as_array().unwrap().len() <= 3, "{point}={action}: {l}");
            ok(run(&work, &["gc"]));
            let out = ok(run(&work, &["verify"]));
            assert!(out.contains("all match"), "{point}={action}: {out}");
        }
    }
    eprintln!("tried {tried} crash points");
    assert_eq!(tried, points.len() * 2);
}

/// A configuration that differs from `write_config`'s only in its label.
fn second_system(dir: &Path, k: &Kernel) -> PathBuf {
    let cfg = write_config(dir, k, &[], "");
    let text = fs::read_to_string(&cfg)
        .unwrap()
        .replace("Test system", "Second system");
    fs::write(&cfg, text).unwrap();
    cfg
}

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn an_unwritable_state_directory_is_a_clear_error() {
    let k = kernel(CLOUD);
    let t = tempfile::tempdir().unwrap();
    let cfg = write_config(&t.path().join("c"), &k, &[], "");
    let ro = t.path().join("ro");
    fs::create_dir_all(&ro).unwrap();
    // Root ignores permission bits, so use a read-only mount when we can.
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro", "tmpfs"])
        .arg(&ro)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    }
    let o = run(&ro, &["switch", "--config", cfg.to_str().unwrap()]);
    if mounted {
        std::process::Command::new("umount")
            .arg(&ro)
            .status()
            .unwrap();
    }
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("is not writable") && e.contains("--root"), "{e}");
}

#[test]
fn two_concurrent_switches_wait_or_fail_clearly() {
    let k = kernel(CLOUD);
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("r");
    let cfg = write_config(&t.path().join("c"), &k, &[], "");
    let profiles = root.join("var/lib/genboot/profiles");
    fs::create_dir_all(&profiles).unwrap();
    // This test plays the other genboot: it holds the profile lock.
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(profiles.join(".lock"))
        .unwrap();
    lock.lock().unwrap();
    fs::write(profiles.join(".lock"), "4242").unwrap();

    let o = run(
        &root,
        &["--no-wait", "switch", "--config", cfg.to_str().unwrap()],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("another genboot (pid 4242)") && e.contains("wait"),
        "{e}"
    );
    assert!(list_json(&root).as_array().unwrap().is_empty());

    let mut c = genboot();
    c.arg("--root")
        .arg(&root)
        .args(["switch", "--config", cfg.to_str().unwrap()]);
    c.stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let err = StderrLines::of(&mut child);
    err.wait_for(
        "waiting for another genboot (pid 4242)",
        std::time::Duration::from_secs(120),
        "switch should say it waits for the lock",
    );
    drop(lock); // the other genboot finishes
    let o = child.wait_with_output().unwrap();
    let err = err.all();
    assert!(o.status.success(), "{err}");
    assert_eq!(list_json(&root).as_array().unwrap().len(), 1);
}
