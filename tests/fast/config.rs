//! Bad configurations: each gives one error naming the file, the line and
//! column, the key and a hint, for `build` and `switch` alike, and changes
//! nothing below `--root`.

use crate::support::*;
use std::fs;

#[test]
fn bad_input_gives_one_clear_error_and_changes_nothing() {
    let t = SyntheticTree::new(&basic_modules());
    let k = &t.k;
    let root = t.root();
    let good = write_config(&t.dir.path().join("good"), k, &[], "");
    ok(run_with_activator(
        &root,
        &["switch", "--config", good.to_str().unwrap()],
    ));
    let before = snapshot(&root);
    let good_text = fs::read_to_string(&good).unwrap();

    let case = |name: &str, text: Option<String>, expect: &[&str]| {
        let path = t.dir.path().join(format!("{name}.toml"));
        if let Some(text) = text {
            fs::write(&path, text).unwrap();
        }
        for verb in ["build", "switch"] {
            let o = run_with_activator(&root, &[verb, "--config", path.to_str().unwrap()]);
            assert!(!o.status.success(), "{name}: {verb} succeeded");
            let e = stderr(&o);
            for x in expect {
                assert!(e.contains(x), "{name}: {verb}: expected {x:?} in:\n{e}");
            }
            assert!(e.contains("Hint:"), "{name}: no hint in:\n{e}");
            assert_eq!(before, snapshot(&root), "{name}: {verb} changed the state");
        }
    };
    case(
        "missing",
        None,
        &["missing.toml", "cannot read configuration"],
    );
    case(
        "syntax",
        Some(good_text.replace("[system]", "[system")),
        &["syntax.toml:13:8: unclosed table", "fix the TOML syntax"],
    );
    case(
        "syntax2",
        Some(format!("{good_text}\nfoo = \n")),
        &["syntax2.toml:"],
    );
    case(
        "unknown",
        Some(good_text.replace("[system]", "[system]\nlabl = \"x\"")),
        &["unknown.toml:", "unknown field `labl`", "key `system.labl`"],
    );
    case(
        "wrongtype",
        Some(good_text.replace("params = [\"console=ttyS0\"]", "params = \"console=ttyS0\"")),
        &["wrongtype.toml:", "key `kernel.params`", "expected"],
    );
    case(
        "nokernel",
        Some(good_text.replace(&k.image.display().to_string(), "/nonexistent/vmlinuz")),
        &["/nonexistent/vmlinuz", "[kernel] image"],
    );
    let not_bz = t.dir.path().join("not-a-kernel");
    fs::write(&not_bz, vec![0u8; 4096]).unwrap();
    case(
        "notbz",
        Some(good_text.replace(&k.image.display().to_string(), not_bz.to_str().unwrap())),
        &["not a bzImage", "HdrS"],
    );

    // A kernel whose release string would make a store name with '/' or '..'.
    let mut img = fs::read(&k.image).unwrap();
    let off = u16::from_le_bytes([img[0x20E], img[0x20F]]) as usize + 0x200;
    img[off..off + 5].copy_from_slice(b"../..");
    let evil = t.dir.path().join("evil-kernel");
    fs::write(&evil, img).unwrap();
    case(
        "evilname",
        Some(good_text.replace(&k.image.display().to_string(), evil.to_str().unwrap())),
        &["is not allowed", "'..'"],
    );
    let mut img = fs::read(&k.image).unwrap();
    img[off + 1] = b'/';
    let slash = t.dir.path().join("slash-kernel");
    fs::write(&slash, img).unwrap();
    case(
        "slashname",
        Some(good_text.replace(&k.image.display().to_string(), slash.to_str().unwrap())),
        &["is not allowed", "'/'"],
    );
}

#[test]
fn a_bad_tree_section_names_its_key_and_changes_nothing() {
    let t = SyntheticTree::new(&basic_modules());
    let root = t.root();
    let good = write_config(&t.dir.path().join("good"), &t.k, &[], "");
    ok(run_with_activator(
        &root,
        &["switch", "--config", good.to_str().unwrap()],
    ));
    let before = snapshot(&root);
    // Without [kernel] image and modules: the tree's kernel.
    let no_kernel = fs::read_to_string(&good)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("image =") && !l.starts_with("modules = \"/"))
        .collect::<Vec<_>>()
        .join("\n");
    let cases: &[(&str, String, &[&str])] = &[
        // Without a [tree]: the newest kernel installed below --root, and
        // there is none.
        (
            "nokernel",
            no_kernel.clone(),
            &[
                "[kernel] release: no kernel is installed below",
                "installed: none",
                "name the kernel with image and modules",
            ],
        ),
        (
            "source",
            format!("{no_kernel}\n[tree]\nsource = \"docker\"\n"),
            &["unknown variant `docker`", "key `tree.source`"],
        ),
        (
            "nosuite",
            format!("{no_kernel}\n[tree]\nsource = \"mmdebstrap\"\n"),
            &["[tree] source: source = \"mmdebstrap\" needs a suite", "suite = \"bookworm\""],
        ),
        (
            "nopath",
            format!("{no_kernel}\n[tree]\nsource = \"dir\"\n"),
            &["[tree] source: source = \"dir\" needs a path"],
        ),
        (
            "mixed",
            format!("{no_kernel}\n[tree]\nsource = \"dir\"\npath = \"/srv/x\"\npackages = [\"a\"]\n"),
            &["[tree] packages: is for source = \"mmdebstrap\""],
        ),
        (
            "package",
            format!(
                "{no_kernel}\n[tree]\nsource = \"mmdebstrap\"\nsuite = \"bookworm\"\npackages = [\"ok\", \"no good\"]\n"
            ),
            &[":17:19: [tree] packages: \"no good\" is not a package name"],
        ),
        (
            "mirror",
            format!("{no_kernel}\n[tree]\nsource = \"mmdebstrap\"\nsuite = \"bookworm\"\nmirror = 3\n"),
            &["key `tree.mirror`", "a string or a list of strings"],
        ),
        (
            "halfkernel",
            format!(
                "{}\n[tree]\nsource = \"dir\"\npath = \"/srv/x\"\n",
                fs::read_to_string(&good)
                    .unwrap()
                    .lines()
                    .filter(|l| !l.starts_with("modules = \"/"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            &[
                "[kernel] image: image is given without modules",
                "leave out image to take the [tree]'s kernel",
            ],
        ),
        (
            "release",
            fs::read_to_string(&good)
                .unwrap()
                .replace("[kernel]\n", "[kernel]\nrelease = \"6.1.0-50-amd64\"\n"),
            &["[kernel] release: release picks an installed kernel, but image and modules name one"],
        ),
        (
            "treerelease",
            format!(
                "{}\n[tree]\nsource = \"dir\"\npath = \"/srv/x\"\n",
                fs::read_to_string(&good)
                    .unwrap()
                    .replace("[kernel]\n", "[kernel]\nrelease = \"6.1.*\"\n")
            ),
            &[
                "[kernel] release: release picks one of the [tree]'s kernels, but image and modules name one",
                "leave out image and modules to take the [tree]'s kernel matching release",
            ],
        ),
        (
            "treepattern",
            format!(
                "{}\n[tree]\nsource = \"dir\"\npath = \"/srv/x\"\n",
                no_kernel.replace("[kernel]\n", "[kernel]\nrelease = \"../6.1\"\n")
            ),
            &["[kernel] release: \"../6.1\" is not a kernel release or pattern", "\"6.1.*\""],
        ),
        (
            "epoch",
            format!("{no_kernel}\n[tree]\nsource = \"dir\"\npath = \"/srv/x\"\nsource_date_epoch = 0\n"),
            &["[tree] source_date_epoch: 0 is not a usable build date"],
        ),
    ];
    for (name, text, expect) in cases {
        let path = t.dir.path().join(format!("{name}.toml"));
        fs::write(&path, text).unwrap();
        for verb in ["build", "switch"] {
            let o = run_with_activator(&root, &[verb, "--config", path.to_str().unwrap()]);
            assert!(!o.status.success(), "{name}: {verb} succeeded");
            let e = stderr(&o);
            assert!(
                e.contains(&format!("{name}.toml:")),
                "{name}: {verb}: no file in:\n{e}"
            );
            for x in *expect {
                assert!(e.contains(x), "{name}: {verb}: expected {x:?} in:\n{e}");
            }
            assert!(e.contains("Hint:"), "{name}: no hint in:\n{e}");
            assert_eq!(before, snapshot(&root), "{name}: {verb} changed the state");
        }
    }
}

/// A synthetic OS tree at `dir` with the kernels `releases`
/// (`/boot/vmlinuz-R` with `/usr/lib/modules/R`, `/lib -> usr/lib`).
fn os_with_kernels(dir: &std::path::Path, releases: &[&str]) {
    fs::create_dir_all(dir.join("boot")).unwrap();
    std::os::unix::fs::symlink("usr/lib", dir.join("lib")).unwrap();
    for r in releases {
        fs::write(dir.join(format!("boot/vmlinuz-{r}")), synthetic_bzimage(r)).unwrap();
        fs::create_dir_all(dir.join(format!("usr/lib/modules/{r}"))).unwrap();
    }
}

/// `[kernel]` without `image` and `modules` and with a `[tree]`: the
/// newest of the tree's kernels that `release` matches, in the language
/// and order of the installed kernels below --root (`newest`, a release,
/// a glob; Debian's version order). The tree's paths, like the others,
/// are read inside --root when the file is. (Building the tree needs
/// root: `tests/it/tree.rs` takes the kernel through the CLI.)
#[test]
fn a_tree_takes_its_newest_kernel_matching_release() {
    use genboot::config::{KernelChoice, Place, SystemConfig};
    use genboot::hint::Hint;
    use genboot::tree::extract::{kernels_in_dir, pick};
    let t = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(t.path()).unwrap();
    let os = root.join("srv/os");
    // By string order 6.1.0-9 is newer than 6.1.0-10; by Debian's, not.
    os_with_kernels(&os, &["6.1.0-9-amd64", "6.1.0-10-amd64", "6.12.9-amd64"]);
    let file = root.join("etc/genboot/system.toml");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    let place = Place {
        root: &root,
        in_root: true,
    };
    let text = |release: &str| {
        format!(
            "[kernel]\n{release}\n[root]\ndevice = \"/dev/vda1\"\n[system]\nlabel = \"T\"\n\
             [tree]\nsource = \"dir\"\npath = \"/srv/os\"\n"
        )
    };
    for (release, pattern, chosen) in [
        ("", "newest", "6.12.9-amd64"),
        ("release = \"newest\"", "newest", "6.12.9-amd64"),
        ("release = \"6.1.*\"", "6.1.*", "6.1.0-10-amd64"),
        (
            "release = \"6.1.0-9-amd64\"",
            "6.1.0-9-amd64",
            "6.1.0-9-amd64",
        ),
    ] {
        let cfg = SystemConfig::parse_in(&text(release), &file, place).unwrap();
        assert_eq!(
            cfg.kernel.chosen,
            KernelChoice::FromTree {
                pattern: pattern.into()
            },
            "{release}"
        );
        assert!(cfg.kernel.files().is_none());
        // The configuration is inside --root: /srv/os is the root's.
        let path = cfg.tree.as_ref().unwrap().path.clone().unwrap();
        assert_eq!(path, os, "{release}");
        let k = pick(kernels_in_dir(&path), pattern, &file, "os").unwrap();
        assert_eq!(k.release, chosen, "{release}");
    }
    // None matches: the error names the file, the key, the tree's
    // kernels and the fix.
    let e = pick(kernels_in_dir(&os), "7.*", &file, "os")
        .unwrap_err()
        .with_hint();
    assert!(
        e.contains(&format!(
            "{}: [kernel] release = \"7.*\", but no kernel of the tree os matches it",
            file.display()
        )) && e.contains("it has, newest first: 6.12.9-amd64, 6.1.0-10-amd64, 6.1.0-9-amd64")
            && e.contains("Hint: set release to one of the tree's kernels"),
        "{e}"
    );
    // A [tree] path through a link that leads nowhere inside --root is
    // refused naming the key, not followed on this machine.
    std::os::unix::fs::symlink("/nonexistent", root.join("srv/gone")).unwrap();
    let e = SystemConfig::parse_in(&text("").replace("/srv/os", "/srv/gone/os"), &file, place)
        .unwrap_err()
        .with_hint();
    assert!(
        e.contains(&format!(
            "{}:9:8: [tree] path: /srv/gone/os is read below",
            file.display()
        )) && e.contains("Hint: name the path as the system below --root sees it"),
        "{e}"
    );
    // Without a [tree], the same file picks among the kernels installed
    // below --root: there are none.
    let no_tree =
        text("release = \"6.1.*\"").replace("[tree]\nsource = \"dir\"\npath = \"/srv/os\"\n", "");
    let e = SystemConfig::parse_in(&no_tree, &file, place)
        .unwrap_err()
        .with_hint();
    assert!(
        e.contains(&format!("{}:2:11: [kernel] release:", file.display()))
            && e.contains("no kernel installed below")
            && e.contains("Hint: install a kernel package"),
        "{e}"
    );
}
