//! The system's own configuration (issue 13, items 4, 5 and 9):
//! `/etc/genboot/system.toml` below `--root` when `--config` is not given,
//! its paths read inside that root (never on this machine), and a
//! `[kernel]` without `image` and `modules` that boots the newest installed
//! kernel by Debian's version ordering. Synthetic kernels and module trees.

use crate::support::*;
use std::fs;
use std::path::PathBuf;

/// A system tree like Debian's: `/lib -> /usr/lib` (absolute, so only a
/// resolution inside the root finds the modules), kernels installed as
/// `/boot/vmlinuz-<release>` with `/usr/lib/modules/<release>`.
struct Root {
    _t: tempfile::TempDir,
    root: PathBuf,
}

impl Root {
    fn new() -> Root {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(root.join("usr/lib/modules")).unwrap();
        fs::create_dir_all(root.join("boot")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", root.join("lib")).unwrap();
        Root { _t: t, root }
    }

    /// Install a synthetic kernel `release` with virtio_blk and its dependencies.
    fn kernel(&self, release: &str) {
        fs::write(
            self.root.join(format!("boot/vmlinuz-{release}")),
            synthetic_bzimage(release),
        )
        .unwrap();
        let dir = self.root.join(format!("usr/lib/modules/{release}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        for (path, name, deps, extra) in basic_modules() {
            let vermagic = format!("vermagic={release} SMP preempt mod_unload modversions ");
            let (name_kv, deps_kv) = (format!("name={name}"), format!("depends={deps}"));
            let mut info = vec![deps_kv.as_str(), name_kv.as_str(), vermagic.as_str()];
            info.extend_from_slice(extra);
            let p = dir.join("kernel").join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, fake_ko(&info)).unwrap();
        }
    }

    fn remove_kernel(&self, release: &str) {
        fs::remove_file(self.root.join(format!("boot/vmlinuz-{release}"))).unwrap();
        fs::remove_dir_all(self.root.join(format!("usr/lib/modules/{release}"))).unwrap();
    }

    /// Write `/etc/genboot/system.toml` with this `[kernel]` table.
    fn config(&self, kernel: &str) -> PathBuf {
        let p = self.root.join("etc/genboot/system.toml");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, config_text(kernel)).unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        run_with_activator(&self.root, args)
    }

    /// The kernel release of the current generation.
    fn current_release(&self) -> String {
        let v = list_json(&self.root);
        let rows = v.as_array().unwrap();
        let cur = rows.iter().find(|r| r["current"] == true).unwrap();
        cur["kernelRelease"].as_str().unwrap().to_string()
    }
}

fn config_text(kernel: &str) -> String {
    format!(
        "[kernel]\n{kernel}\n\n[initrd]\nmodules = [\"virtio_blk\"]\ncompression = \"none\"\n\n\
         [root]\ndevice = \"/dev/vda1\"\n\n[system]\nlabel = \"Synthetic\"\n"
    )
}

#[test]
fn the_configuration_below_root_is_used_without_config_and_its_paths_stay_in_the_root() {
    let r = Root::new();
    let rel = "6.1.0-3-synthetic";
    r.kernel(rel);
    let kernel = format!("image = \"/boot/vmlinuz-{rel}\"\nmodules = \"/lib/modules/{rel}\"");
    r.config(&kernel);
    // No --config: /etc/genboot/system.toml below --root. Its /lib is a
    // link to /usr/lib: read on this machine it would not lead to the
    // root's modules (and /boot/vmlinuz-<rel> is not this machine's).
    let path = PathBuf::from(ok(r.run(&["build"])).trim());
    assert!(
        path.starts_with(r.root.join("var/lib/genboot/store")),
        "{path:?}"
    );
    let out = r.run(&["switch"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("generation 1 is now current"), "{err}");
    assert_eq!(r.current_release(), rel);
    let store = r.root.join("var/lib/genboot/store");
    let km = only_object(&store, &format!("kernel-modules-{rel}"));
    assert!(km
        .join(format!(
            "lib/modules/{rel}/kernel/drivers/block/virtio_blk.ko"
        ))
        .is_file());

    // The same file outside the root names this machine's paths, which
    // do not exist: the error names them.
    let outside = r.root.parent().unwrap().join("outside.toml");
    fs::write(&outside, config_text(&kernel)).unwrap();
    let before = snapshot(&r.root);
    let out = r.run(&["build", "--config", outside.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("the module tree /lib/modules/{rel}: No such file")),
        "{err}"
    );
    assert_eq!(before, snapshot(&r.root), "a failed build changed the root");

    // A path inside the root whose link leads nowhere in it is refused
    // naming the key, not followed on this machine.
    fs::remove_file(r.root.join("lib")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", r.root.join("lib")).unwrap();
    let before = snapshot(&r.root);
    let out = r.run(&["build"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("[kernel] modules") && err.contains("read below"),
        "{err}"
    );
    assert_eq!(before, snapshot(&r.root));
}

#[test]
fn without_a_configuration_build_switch_and_image_say_which_file_is_missing() {
    let r = Root::new();
    let before = snapshot(&r.root);
    for args in [&["build"][..], &["switch"]] {
        let out = r.run(args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "{}/etc/genboot/system.toml does not exist",
                fs::canonicalize(&r.root).unwrap().display()
            )) && err.contains("--config"),
            "{args:?}: {err}"
        );
        assert_eq!(before, snapshot(&r.root), "{args:?} changed the root");
    }
    let img = r.root.parent().unwrap().join("disk.img");
    let out = r.run(&["image", "-o", img.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("no generation") && err.contains("/etc/genboot/system.toml"),
        "{err}"
    );
    assert_eq!(before, snapshot(&r.root));
}

#[test]
fn the_newest_installed_kernel_by_debian_version_order_is_chosen_and_shown() {
    let r = Root::new();
    // By string order 6.1.0-9 is newer; by Debian's, 6.1.0-10 is.
    r.kernel("6.1.0-9-synthetic");
    r.kernel("6.1.0-10-synthetic");
    // Not installed: no module tree.
    fs::write(
        r.root.join("boot/vmlinuz-6.1.0-11-synthetic"),
        synthetic_bzimage("6.1.0-11-synthetic"),
    )
    .unwrap();
    r.config("params = [\"console=ttyS0\"]");
    let out = r.run(&["switch"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("kernel 6.1.0-10-synthetic: the newest installed kernel (of 6.1.0-10-synthetic, 6.1.0-9-synthetic;"),
        "the choice is shown:\n{err}"
    );
    assert_eq!(r.current_release(), "6.1.0-10-synthetic");

    // A kernel update: the next switch boots it; the old generation stays.
    r.kernel("6.1.0-12-synthetic");
    ok(r.run(&["switch"]));
    assert_eq!(r.current_release(), "6.1.0-12-synthetic");
    let out = r.run(&["switch"]);
    assert!(stderr(&out).contains("already current"), "{}", stderr(&out));
    // Its removal: the next switch goes back to the newest one left.
    r.remove_kernel("6.1.0-12-synthetic");
    ok(r.run(&["switch"]));
    assert_eq!(r.current_release(), "6.1.0-10-synthetic");
    assert_eq!(list_json(&r.root).as_array().unwrap().len(), 3);

    // A pattern: the newest release it matches.
    r.config("release = \"6.1.0-9-*\"");
    let err = stderr(&r.run(&["switch"]));
    assert!(
        err.contains(
            "kernel 6.1.0-9-synthetic: the newest installed kernel matching \"6.1.0-9-*\""
        ),
        "{err}"
    );
    assert_eq!(r.current_release(), "6.1.0-9-synthetic");
}

#[test]
fn kernel_choices_that_cannot_work_are_refused_naming_the_key_and_change_nothing() {
    let r = Root::new();
    r.kernel("6.1.0-9-synthetic");
    let cases: &[(&str, &[&str])] = &[
        (
            "release = \"7.*\"",
            &[
                "system.toml:2:11: [kernel] release:",
                "no kernel installed below",
                "matches \"7.*\"",
                "installed: 6.1.0-9-synthetic",
                "Hint:",
            ],
        ),
        (
            "image = \"/boot/vmlinuz-6.1.0-9-synthetic\"",
            &["[kernel] image: image is given without modules", "Hint:"],
        ),
        (
            "modules = \"/lib/modules/6.1.0-9-synthetic\"",
            &["[kernel] modules: modules is given without image"],
        ),
        (
            "image = \"/boot/vmlinuz-6.1.0-9-synthetic\"\nmodules = \"/lib/modules/6.1.0-9-synthetic\"\nrelease = \"newest\"",
            &["[kernel] release: release picks an installed kernel, but image and modules name one"],
        ),
        ("release = \"\"", &["[kernel] release:", "is not a kernel release or pattern"]),
        ("release = \"../x\"", &["is not a kernel release or pattern"]),
    ];
    let before = snapshot(&r.root);
    for (kernel, needles) in cases {
        r.config(kernel);
        let out = r.run(&["switch"]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{kernel}: {err}");
        for n in *needles {
            assert!(err.contains(n), "{kernel}: expected {n:?} in:\n{err}");
        }
        let mut now = snapshot(&r.root);
        now.retain(|(p, _)| !p.starts_with("etc/"));
        let mut was = before.clone();
        was.retain(|(p, _)| !p.starts_with("etc/"));
        assert_eq!(was, now, "{kernel}: changed the root");
    }
    // No kernel at all.
    r.remove_kernel("6.1.0-9-synthetic");
    r.config("");
    let err = stderr(&r.run(&["build"]));
    assert!(
        err.contains("no kernel is installed below") && err.contains("installed: none"),
        "{err}"
    );
}

#[test]
fn autodetect_is_refused_for_another_system_below_root() {
    // [initrd] autodetect reads this machine's root device: a build for
    // the system below --root DIR cannot be checked against it, and says
    // so instead of building an initrd for the wrong disk.
    let r = Root::new();
    r.kernel("6.1.0-9-synthetic");
    let p = r.config("");
    let text = fs::read_to_string(&p)
        .unwrap()
        .replace("[initrd]\n", "[initrd]\nautodetect = true\n");
    fs::write(&p, text).unwrap();
    let before = snapshot(&r.root);
    for verb in ["build", "switch"] {
        let out = r.run(&[verb]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{verb}: {err}");
        assert!(
            err.contains("[initrd] autodetect finds the modules of this machine's root device, but the build is for the system below --root")
                && err.contains("Hint: list that system's root device driver"),
            "{verb}: {err}"
        );
        assert_eq!(before, snapshot(&r.root), "{verb} changed the root");
    }
}
