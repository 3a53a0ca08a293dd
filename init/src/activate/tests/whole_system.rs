//! A generation with a whole-system tree, against the recording fake:
//! `mount-tree`, `mount-etc`, `bind-var` and the tree's part of `record`,
//! call by call; each failure ending in the policy.
//!
//! The fake does not model mounts. The world holds the root partition's
//! files twice: at `/sysroot`, where it is mounted first (the generation
//! step reads it there, and bind-var's `/var` bind makes the store appear
//! there again through the tree), and at `/run/genboot/sysroot`, where
//! `mount-tree` moves it. The tree's files are added at `/sysroot`, where
//! its overlay is mounted.

use super::*;
use crate::activate::tree::{
    etc_overlay_options, etc_read_only_options, major_minor, random_machine_id,
    root_overlay_options, valid_machine_id, META, VOLATILE_ROOT,
};
use genboot_format::storehash::file_digest;
use genboot_format::ROOT_PARTITION;

/// The tree object's hash.
const T: &str = "abcdef0123456789abcdef0123456789";
/// The root partition's device once moved: 254:1 (`virtio_blk`'s `vda1`).
const PART: u64 = 0xfe01;
/// The tree's overlay.
const TREE: u64 = 7;
const IMAGE: &[u8] = b"\xe2\xe1\xf5\xe0 an EROFS image";

fn tree_object() -> String {
    format!("{STORE_DIR}/{T}-rootfs-debian-12")
}

fn image_sha256() -> String {
    genboot_format::hex(&file_digest(IMAGE, None).unwrap().1)
}

/// The generation's store name, the key of its `/etc` layer.
fn gen_name() -> String {
    format!("{H}-genboot-system-{KVER}")
}

/// `boot.json` naming the tree; `extra` is added to the tree object (e.g.
/// `, "persist": [...]`).
fn tree_boot_json(extra: &str) -> String {
    let t = tree_object();
    format!(
        r#"{{
  "org.nixos.bootspec.v1": {{"init": "{g}/init", "toplevel": "{g}", "kernelParams": ["root=PARTUUID={PARTUUID}"]}},
  "org.genboot.v1": {{"format": 1, "kernelRelease": "{KVER}", "kernelModules": "{k}", "tries": null,
    "tree": {{"object": "{t}", "image": "{t}/root.erofs", "imageSha256": "{s}", "objects": "{STORE_DIR}/objects"{extra}}}}}
}}
"#,
        g = gen(),
        k = kmods(),
        s = image_sha256(),
    )
}

fn set_boot_json(f: &mut FakeSys, text: &str) {
    let bj = format!("{SYSROOT}{}/boot.json", gen());
    f.file(&bj, text.as_bytes(), ROOT);
    f.make_read_only(&format!("{SYSROOT}{}", gen()));
}

/// `world`, with a generation whose `boot.json` names a tree, the tree
/// object and content objects in the store, the root partition mirrored
/// where `mount-tree` moves it, and the tree itself: Debian-like, with
/// `/etc/machine-id` (empty), `/etc/ssh`, the image's package state
/// (`/usr/lib/genboot/var/lib/dpkg`, `…/apt/extended_states`), `/home`,
/// `/root` (0700), `/srv` as a link, `/tmp`, and its own kernel's modules.
/// The root partition has `/var/lib/dpkg` (a machine that was a classic
/// Debian) and `/root`.
fn tree_world(cmdline: &str) -> FakeSys {
    let mut f = world(cmdline);
    set_boot_json(&mut f, &tree_boot_json(""));
    let t = format!("{SYSROOT}{}", tree_object());
    f.file(&format!("{t}/root.erofs"), IMAGE, ROOT);
    f.file(&format!("{t}/manifest"), b"genboot-tree-v2\n", ROOT);
    f.make_read_only(&t);
    f.file(
        &format!("{SYSROOT}{STORE_DIR}/objects/ab/cdef"),
        b"content",
        ROOT,
    );
    f.dir("/sysroot/var/lib/dpkg", ROOT);
    f.dir("/sysroot/root", ROOT);
    f.chmod("/sysroot/root", 0o700);
    // The root partition, where it is once moved.
    f.dir("/run/genboot", RUNFS);
    let part: Vec<(String, crate::sys::fake::Entry)> = f
        .tree
        .iter()
        .filter(|(k, _)| k.as_str() == SYSROOT || k.starts_with("/sysroot/"))
        .map(|(k, e)| {
            let mut e = e.clone();
            e.dev = PART;
            (format!("{ROOT_PARTITION}{}", &k[SYSROOT.len()..]), e)
        })
        .collect();
    f.tree.extend(part);
    // The tree, at /sysroot once its overlay is mounted.
    f.file("/sysroot/etc/machine-id", b"", TREE);
    f.chmod("/sysroot/etc/machine-id", 0o444);
    f.dir("/sysroot/etc/ssh", TREE);
    f.dir("/sysroot/usr/lib/genboot/var/lib/dpkg/info", TREE);
    f.file(
        "/sysroot/usr/lib/genboot/var/lib/apt/extended_states",
        b"",
        TREE,
    );
    f.dir("/sysroot/home", TREE);
    f.link("/sysroot/srv", "var/srv", TREE);
    f.dir("/sysroot/tmp", TREE);
    // What a first boot makes the machine-id from.
    f.file("/dev/urandom", &[0xa5; 16], RUNFS);
    f.dir(&format!("/sysroot/lib/modules/{KVER}/kernel"), TREE);
    f.dir("/sysroot/lib/firmware", TREE);
    f
}

/// The calls from the root's mount to the switch, exclusive.
fn tree_steps(f: &FakeSys) -> Vec<&str> {
    let from = f
        .calls
        .iter()
        .position(|c| c.starts_with("mount /dev/vda1 /sysroot "))
        .expect("the root was mounted")
        + 1;
    let to = f
        .calls
        .iter()
        .position(|c| c == "mount /dev /sysroot/dev - MS_MOVE \"\"")
        .unwrap_or(f.calls.len());
    f.calls[from..to].iter().map(String::as_str).collect()
}

fn step_names(f: &mut FakeSys) -> Vec<String> {
    let text = String::from_utf8(f.read_file(TIMINGS).unwrap()).unwrap();
    let v = json::parse(&text).unwrap();
    let json::Value::Array(steps) = v.get("steps").unwrap() else {
        panic!("{text}")
    };
    steps
        .iter()
        .map(|s| s.get("step").unwrap().as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_tree_generation_boots_its_tree_with_etc_var_and_home_from_the_root_partition() {
    let mut f = tree_world(&cmdline("-- single"));
    let g = gen();
    assert_eq!(
        run(&mut f),
        Outcome::Exec(format!("{g}/init")),
        "{:#?}",
        f.console
    );
    let p = ROOT_PARTITION;
    let layer = format!("{p}/var/lib/genboot/etc/{}", gen_name());
    let expected: Vec<String> = vec![
        // mount-tree: the root partition moves out of /sysroot, the image
        // is mounted from its file, the overlay takes /sysroot.
        "mkdir /run/genboot 755".into(),
        format!("mkdir {p} 755"),
        format!("mkdir {META} 755"),
        format!("mount /sysroot {p} - MS_MOVE \"\""),
        format!(
            "mount {p}{}/root.erofs {META} erofs MS_RDONLY \"\"",
            tree_object()
        ),
        format!("mount overlay /sysroot overlay MS_RDONLY \"metacopy=on,redirect_dir=on,lowerdir={META}::{p}{STORE_DIR}/objects\""),
        format!("umount {META} MNT_DETACH"),
        format!("rmdir {META}"),
        // mount-etc: this generation's layer, made on first boot.
        format!("mkdir {p}/var/lib/genboot/etc 755"),
        format!("mkdir {layer} 755"),
        format!("mkdir {layer}/upper 755"),
        format!("mkdir {layer}/work 755"),
        format!("mount overlay /sysroot/etc overlay 0 \"lowerdir=/sysroot/etc,upperdir={layer}/upper,workdir={layer}/work,index=off\""),
        // The machine's first boot: a new machine-id, bound over /etc's.
        format!("mkdir {p}/var/lib/genboot/identity 755"),
        format!("write {p}/var/lib/genboot/identity/machine-id"),
        // Into this generation's layer (a bind would trip
        // systemd-machine-id-commit on a writable /etc).
        "write /sysroot/etc/machine-id".into(),
        // bind-var: /var, the image's package state read-only (its mount
        // point made where missing), /home made and bound, /root bound,
        // /srv (a link in the tree) not; /tmp; the partition read-only.
        format!("mount {p}/var /sysroot/var - MS_BIND \"\""),
        "mount /sysroot/usr/lib/genboot/var/lib/dpkg /sysroot/var/lib/dpkg - MS_BIND \"\"".into(),
        "mount - /sysroot/var/lib/dpkg - MS_RDONLY|MS_REMOUNT|MS_BIND \"\"".into(),
        "mkdir /sysroot/var/lib/apt 755".into(),
        "write /sysroot/var/lib/apt/extended_states".into(),
        "mount /sysroot/usr/lib/genboot/var/lib/apt/extended_states /sysroot/var/lib/apt/extended_states - MS_BIND \"\"".into(),
        "mount - /sysroot/var/lib/apt/extended_states - MS_RDONLY|MS_REMOUNT|MS_BIND \"\"".into(),
        format!("mkdir {p}/home 755"),
        format!("mount {p}/home /sysroot/home - MS_BIND \"\""),
        format!("mount {p}/root /sysroot/root - MS_BIND \"\""),
        "mount tmpfs /sysroot/tmp tmpfs MS_NOSUID|MS_NODEV \"mode=1777\"".into(),
        format!("mount - {p} - MS_RDONLY|MS_REMOUNT|MS_BIND \"\""),
        // bind-modules: the tree has its kernel's modules; record.
        "mkdir /run/genboot 755".into(),
        "write /run/genboot/booted".into(),
        "mkdir /run/systemd 755".into(),
        format!("symlink /dev/block/254:1 {VOLATILE_ROOT}"),
        "write /run/genboot/timings.json".into(),
    ];
    assert_eq!(tree_steps(&f), expected);
    assert_eq!(
        last_calls(&f, 6),
        [
            "chdir /sysroot",
            "mount /sysroot / - MS_MOVE \"\"",
            "chroot .",
            "chdir /",
            "write /run/genboot/timings.json",
            &format!("exec {g}/init [\"{g}/init\", \"single\"]"),
        ]
    );
    assert_eq!(f.read_link(VOLATILE_ROOT).unwrap(), "/dev/block/254:1");
    assert_eq!(
        step_names(&mut f),
        [
            "mount-api",
            "cmdline",
            "manifest",
            "modules",
            "modalias",
            "wait-root",
            "mount-root",
            "generation",
            "mount-tree",
            "mount-etc",
            "bind-var",
            "bind-modules",
            "record",
            "move-api",
            "free-initramfs",
            "switch-root",
            "exec"
        ]
    );
    for says in [
        &format!("generation: {g} (kernel {KVER}, tree {})", tree_object()),
        &format!(
            "mount-tree: {} read-only on /sysroot (image from the file, overlay lowerdir=META::OBJECTS); the root partition at {p}",
            tree_object()
        ),
        &format!(
            "mount-etc: /etc: the image's with the layer /var/lib/genboot/etc/{}; /etc/machine-id from /var/lib/genboot/identity",
            gen_name()
        ),
        "identity: machine-id a5a5a5a5a5a545a5a5a5a5a5a5a5a5a5 (new) written to /var/lib/genboot/identity",
        "bind-var: /var: the root partition's; /var/lib/dpkg /var/lib/apt/extended_states: the image's (read-only); /home /root: the root partition's; /tmp: tmpfs; init /sbin/init",
        &format!("bind-modules: /lib/modules/{KVER}: the root's own; /lib/firmware: the root's own"),
        &format!("record: /run/genboot/booted {VOLATILE_ROOT} -> /dev/block/254:1"),
    ] {
        assert!(console_has(&f, says), "{says:?} not said: {:#?}", f.console);
    }
    assert!(
        !f.console.iter().any(|l| l.contains("warning")),
        "{:#?}",
        f.console
    );
}

#[test]
fn without_a_tree_or_with_a_null_one_no_tree_step_runs() {
    for text in [
        None,
        Some(boot_json(KVER).replace("\"tries\": null", "\"tries\": null, \"tree\": null")),
    ] {
        let mut f = world(&cmdline(""));
        if let Some(t) = &text {
            assert!(t.contains("\"tree\": null"), "{t}");
            set_boot_json(&mut f, t);
        }
        assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
        assert!(
            !f.calls.iter().any(|c| c.contains("/run/genboot/sysroot")
                || c.contains("overlay")
                || c.contains("volatile-root")),
            "{:#?}",
            f.calls
        );
        let names = step_names(&mut f);
        assert!(
            !names
                .iter()
                .any(|n| matches!(n.as_str(), "mount-tree" | "mount-etc" | "bind-var")),
            "{names:?}"
        );
    }
}

#[test]
fn on_6_1_the_image_goes_through_a_loop_device_and_the_overlay_takes_the_legacy_form() {
    // Debian 12's 6.1: EROFS reads only block devices (ENOTBLK for a file)
    // and overlayfs has no data-only layers (EINVAL for `::`).
    let mut f = tree_world(&cmdline(""));
    let p = ROOT_PARTITION;
    let image = format!("{p}{}/root.erofs", tree_object());
    f.fail
        .push((format!("mount {image} {META} erofs"), libc::ENOTBLK));
    f.fail.push((
        format!("mount overlay /sysroot overlay MS_RDONLY \"metacopy=on,redirect_dir=on,lowerdir={META}::"),
        libc::EINVAL,
    ));
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    let steps = tree_steps(&f);
    let from = steps
        .iter()
        .position(|c| c.starts_with(&format!("mount {image}")))
        .unwrap();
    assert_eq!(
        steps[from..from + 6],
        [
            format!("mount {image} {META} erofs MS_RDONLY \"\""),
            format!("mount_loop {image} {META} erofs MS_RDONLY \"\""),
            format!("mount overlay /sysroot overlay MS_RDONLY \"metacopy=on,redirect_dir=on,lowerdir={META}::{p}{STORE_DIR}/objects\""),
            format!("mount overlay /sysroot overlay MS_RDONLY \"metacopy=on,redirect_dir=on,lowerdir={META}:{p}{STORE_DIR}/objects\""),
            format!("umount {META} MNT_DETACH"),
            format!("rmdir {META}"),
        ]
    );
    assert!(console_has(
        &f,
        "(image through /dev/loop0, overlay legacy lowerdir=META:OBJECTS)"
    ));
}

#[test]
fn the_overlay_options_are_the_ones_part_1_measured_and_escape_separators() {
    assert_eq!(
        root_overlay_options("/run/genboot/meta", "/run/genboot/sysroot/var/lib/genboot/store/objects", false),
        "metacopy=on,redirect_dir=on,lowerdir=/run/genboot/meta::/run/genboot/sysroot/var/lib/genboot/store/objects"
    );
    assert_eq!(
        root_overlay_options("/m", "/o", true),
        "metacopy=on,redirect_dir=on,lowerdir=/m:/o"
    );
    assert_eq!(
        etc_overlay_options("/sysroot/etc", "/u:1", "/w,2"),
        "lowerdir=/sysroot/etc,upperdir=/u\\:1,workdir=/w\\,2,index=off"
    );
    assert_eq!(
        etc_read_only_options("/sysroot/etc", "/a\\b"),
        "lowerdir=/a\\\\b:/sysroot/etc"
    );
}

#[test]
fn volatile_root_names_the_device_by_major_and_minor() {
    assert_eq!(major_minor(0xfe01), (254, 1));
    assert_eq!(major_minor(0x10300), (259, 0), "nvme0n1");
    assert_eq!(major_minor(0x0803), (8, 3), "sda3");
    // Large numbers use dev_t's high bits; libc's makedev agrees.
    for (ma, mi) in [(259u32, 0x1234u32), (4095, 255), (4096, 1 << 19), (0, 0)] {
        assert_eq!(
            major_minor(libc::makedev(ma, mi)),
            (u64::from(ma), u64::from(mi))
        );
    }
}

// ---- the machine's identity ----

#[test]
fn the_machines_identity_is_bound_over_every_generations_etc() {
    let mut f = tree_world(&cmdline(""));
    let id = format!("{ROOT_PARTITION}/var/lib/genboot/identity");
    f.file(
        &format!("{id}/machine-id"),
        b"0123456789abcdef0123456789abcdef\n",
        PART,
    );
    f.file(&format!("{id}/ssh/ssh_host_ed25519_key"), b"key", PART);
    f.file(&format!("{id}/ssh/ssh_host_ed25519_key.pub"), b"pub", PART);
    f.file(&format!("{id}/ssh/moduli"), b"not a key", PART);
    // One key's mount point is in the generation's /etc already.
    f.file("/sysroot/etc/ssh/ssh_host_ed25519_key.pub", b"", TREE);
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    let steps = tree_steps(&f);
    let from = steps
        .iter()
        .position(|c| c.starts_with("mount overlay /sysroot/etc"))
        .unwrap()
        + 1;
    assert_eq!(
        steps[from..from + 4],
        [
            "write /sysroot/etc/machine-id".to_string(),
            // A missing mount point is made in this generation's layer.
            "write /sysroot/etc/ssh/ssh_host_ed25519_key".to_string(),
            format!("mount {id}/ssh/ssh_host_ed25519_key /sysroot/etc/ssh/ssh_host_ed25519_key - MS_BIND \"\""),
            format!("mount {id}/ssh/ssh_host_ed25519_key.pub /sysroot/etc/ssh/ssh_host_ed25519_key.pub - MS_BIND \"\""),
        ]
    );
    assert!(console_has(
        &f,
        "/etc/machine-id /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub from /var/lib/genboot/identity"
    ));
    assert!(!f.calls.iter().any(|c| c.contains("moduli")));
}

#[test]
fn a_tree_without_an_ssh_server_gets_no_keys_and_no_warning() {
    let mut f = tree_world(&cmdline(""));
    f.tree.remove("/sysroot/etc/ssh");
    let id = format!("{ROOT_PARTITION}/var/lib/genboot/identity");
    f.file(&format!("{id}/ssh/ssh_host_rsa_key"), b"key", PART);
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    assert!(
        !f.calls.iter().any(|c| c.contains("ssh_host")),
        "{:#?}",
        f.calls
    );
    assert!(!f.console.iter().any(|l| l.contains("warning")));
}

#[test]
fn the_first_boot_keeps_a_machine_id_systemd_made_earlier_and_a_torn_one_is_replaced() {
    let id = format!("{ROOT_PARTITION}/var/lib/genboot/identity/machine-id");
    let upper = format!(
        "{ROOT_PARTITION}/var/lib/genboot/etc/{}/upper/machine-id",
        gen_name()
    );
    // systemd made one in this generation's layer at an earlier boot.
    let mut f = tree_world(&cmdline(""));
    f.file(&upper, b"00112233445566778899aabbccddeeff\n", PART);
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    assert_eq!(
        f.read_file(&id).unwrap(),
        b"00112233445566778899aabbccddeeff\n"
    );
    assert!(console_has(
        &f,
        "identity: machine-id 00112233445566778899aabbccddeeff (this generation's /etc's) written"
    ));
    // A torn identity file (empty) is replaced; a valid one is kept as is.
    for (old, new) in [
        (&b""[..], &b"a5a5a5a5a5a545a5a5a5a5a5a5a5a5a5\n"[..]),
        (
            b"0123456789abcdef0123456789abcdef",
            b"0123456789abcdef0123456789abcdef",
        ),
    ] {
        let mut f = tree_world(&cmdline(""));
        f.file(&id, old, PART);
        assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
        assert_eq!(f.read_file(&id).unwrap(), new);
        assert_eq!(
            f.calls.iter().any(|c| c == &format!("write {id}")),
            old.is_empty()
        );
    }
    // A read-only root partition writes nothing.
    let mut f = tree_world(&cmdline("ro"));
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    assert!(f.read_file(&id).is_err());
}

#[test]
fn machine_ids_are_checked_and_made_as_systemd_does() {
    assert!(valid_machine_id(b"0123456789abcdef0123456789abcdef\n"));
    assert!(valid_machine_id(b"0123456789abcdef0123456789abcdef"));
    for bad in [
        &b""[..],
        b"uninitialized\n",
        b"00000000000000000000000000000000\n",
        b"0123456789ABCDEF0123456789abcdef\n",
        b"0123456789abcdef0123456789abcdef\n\n",
        b"0123456789abcdef0123456789abcde\n",
    ] {
        assert!(!valid_machine_id(bad), "{bad:?}");
    }
    let id = random_machine_id(&[0xff; 16]);
    assert_eq!(id, "ffffffffffff4fffbfffffffffffffff");
    assert!(valid_machine_id(id.as_bytes()));
}

// ---- a read-only root partition (ro, genboot.recovery) ----

#[test]
fn a_read_only_root_partition_gets_nothing_created_and_a_read_only_etc() {
    // No /etc layer yet: the image's /etc, read-only; the package state
    // whose mount point is missing and /home are left out with warnings.
    let mut f = tree_world(&cmdline("ro"));
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    let steps = tree_steps(&f);
    assert!(
        !steps
            .iter()
            .any(|c| c.starts_with("mkdir /run/genboot/sysroot/")
                || c.starts_with("mkdir /sysroot/")
                || c.starts_with("write /sysroot")
                || c.starts_with("mount overlay /sysroot/etc")),
        "{steps:#?}"
    );
    for says in [
        &format!(
            "mount-etc: /etc: the image's, read-only (the root partition is, and has no /var/lib/genboot/etc/{} yet)",
            gen_name()
        ),
        "warning: /var/lib/apt/extended_states is missing on the read-only root partition",
        "warning: /home is missing on the read-only root partition; the tree's /home is used",
        "bind-var: /var: the root partition's; /var/lib/dpkg: the image's (read-only); /root: the root partition's; /tmp: tmpfs",
    ] {
        assert!(console_has(&f, says), "{says:?} not said: {:#?}", f.console);
    }
    // With a layer from an earlier boot: it shows, read-only.
    let mut f = tree_world(&cmdline("ro"));
    let layer = format!("{ROOT_PARTITION}/var/lib/genboot/etc/{}", gen_name());
    f.dir(&format!("{layer}/upper"), PART);
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    assert!(f.calls.contains(&format!(
        "mount overlay /sysroot/etc overlay MS_RDONLY \"lowerdir={layer}/upper:/sysroot/etc\""
    )));
}

#[test]
fn recovery_of_a_tree_generation_says_how_to_make_var_writable() {
    let mut f = tree_world(&cmdline("genboot.recovery"));
    f.exe("/sysroot/sbin/sulogin", b"\x7fELF", TREE);
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    assert!(console_has(
        &f,
        "make /var writable: mount -o remount,rw /var  (the root partition; /usr and /etc stay read-only)"
    ));
    assert!(f.calls.contains(&"run_shell / /sbin/sulogin".to_string()));
}

// ---- persistent paths ----

#[test]
fn boot_json_names_the_persistent_paths_and_bad_ones_are_refused() {
    let mut f = tree_world(&cmdline(""));
    set_boot_json(
        &mut f,
        &tree_boot_json(r#", "persist": ["/srv", "/opt/data", "/home"]"#),
    );
    f.dir("/sysroot/opt/data", TREE);
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    let p = ROOT_PARTITION;
    let binds: Vec<&str> = tree_steps(&f)
        .into_iter()
        .filter(|c| {
            c.starts_with(&format!("mount {p}/"))
                && c.contains("MS_BIND")
                && !c.contains("/var ")
                && !c.contains("/identity/")
        })
        .collect();
    assert_eq!(
        binds,
        [
            format!("mount {p}/opt/data /sysroot/opt/data - MS_BIND \"\""),
            format!("mount {p}/home /sysroot/home - MS_BIND \"\""),
        ]
    );
    assert!(f.calls.contains(&format!("mkdir {p}/opt 755")));
    for (persist, why) in [
        (r#""home""#, "it is not absolute"),
        (r#""/""#, "it is the root itself"),
        (r#""/home/../etc""#, "an empty, . or .. component"),
        (r#""/var/lib/x""#, "genboot-init mounts it"),
        (r#""/etc""#, "genboot-init mounts it"),
        ("1", "not a string"),
    ] {
        let mut f = tree_world(&cmdline(""));
        set_boot_json(
            &mut f,
            &tree_boot_json(&format!(r#", "persist": [{persist}]"#)),
        );
        fails_at(f, Step::Generation, why);
    }
}

// ---- genboot.verify ----

#[test]
fn verify_checks_the_trees_image_against_boot_json() {
    let mut f = tree_world(&cmdline("genboot.verify"));
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    let image = format!("/sysroot{}/root.erofs", tree_object());
    assert!(f.calls.contains(&format!("sha256 {image}")));
    assert!(console_has(&f, "root.erofs matches boot.json's SHA-256"));
    // Before anything is mounted.
    let at = |f: &FakeSys, c: &str| f.calls.iter().position(|x| x.starts_with(c)).unwrap();
    assert!(at(&f, "sha256") < at(&f, "mount /sysroot /run/genboot/sysroot"));

    let mut f = tree_world(&cmdline("genboot.verify"));
    f.file(&image, b"changed", ROOT);
    let f = fails_at(f, Step::Verify, "root.erofs was changed: its SHA-256 is ");
    assert!(!f.calls.iter().any(|c| c.contains("MS_MOVE")));
}

// ---- each failure ends in the policy ----

#[test]
fn a_bad_tree_reference_in_boot_json_is_refused_at_the_generation_step() {
    let t = tree_object();
    for (from, to, why) in [
        (
            format!("{t}/root.erofs"),
            format!("{t}/other.erofs"),
            "is not /var/lib/genboot/store/",
        ),
        (
            format!("\"object\": \"{t}\""),
            "\"object\": \"/srv/rootfs\"".to_string(),
            "object \"/srv/rootfs\" is not a store object",
        ),
        (
            format!("\"objects\": \"{STORE_DIR}/objects\""),
            "\"objects\": \"/tmp\"".to_string(),
            "objects \"/tmp\" is not /var/lib/genboot/store/objects",
        ),
        (
            image_sha256(),
            "ABC".to_string(),
            "imageSha256 \"ABC\" is not a SHA-256",
        ),
        (
            "\"imageSha256\"".to_string(),
            "\"sha\"".to_string(),
            "lacks one of object, image, imageSha256, objects",
        ),
    ] {
        let mut f = tree_world(&cmdline(""));
        set_boot_json(&mut f, &tree_boot_json("").replacen(&from, &to, 1));
        fails_at(f, Step::Generation, why);
    }
}

#[test]
fn mount_tree_failures_reboot_before_or_after_moving_the_root_partition() {
    // A missing image: nothing moved yet.
    let mut f = tree_world(&cmdline(""));
    f.tree
        .remove(&format!("/sysroot{}/root.erofs", tree_object()));
    let f = fails_at(f, Step::MountTree, "the tree's metadata image");
    assert!(!f.calls.iter().any(|c| c.contains("MS_MOVE")));
    // EROFS refuses the image (not ENOTBLK): no loop device is tried.
    let mut f = tree_world(&cmdline(""));
    f.fail.push((
        format!("mount {ROOT_PARTITION}{}/root.erofs", tree_object()),
        libc::EINVAL,
    ));
    let f = fails_at(f, Step::MountTree, "(erofs): Invalid argument");
    assert!(!f.calls.iter().any(|c| c.starts_with("mount_loop")));
    assert!(console_has(&f, "carries overlay, erofs, loop"));
    // No loop device.
    let mut f = tree_world(&cmdline(""));
    f.fail.push((
        format!("mount {ROOT_PARTITION}{}/root.erofs", tree_object()),
        libc::ENOTBLK,
    ));
    f.fail.push(("mount_loop".into(), libc::ENOENT));
    fails_at(f, Step::MountTree, "through a loop device: No such file");
    // Neither overlay form: with shell_on_fail the root partition's shell
    // (it has one here; the tree is not mounted).
    let mut f = tree_world(&cmdline("genboot.shell_on_fail"));
    f.fail
        .push(("mount overlay /sysroot ".into(), libc::EINVAL));
    let f = fails_at(
        f,
        Step::MountTree,
        "cannot mount the tree's overlay on /sysroot",
    );
    assert_eq!(
        last_calls(&f, 3),
        [
            &format!("run_shell {ROOT_PARTITION} /bin/sh"),
            "sleep 5000ms",
            "reboot"
        ]
    );
    assert!(console_has(&f, "metacopy and redirect_dir"));
}

#[test]
fn mount_etc_failures_reboot_or_give_the_trees_shell() {
    let mut f = tree_world(&cmdline(""));
    f.fail.push((
        "mkdir /run/genboot/sysroot/var/lib/genboot/etc".into(),
        libc::ENOSPC,
    ));
    fails_at(
        f,
        Step::MountEtc,
        &format!(
            "cannot create /var/lib/genboot/etc/{}/upper on the root partition: No space left",
            gen_name()
        ),
    );
    let mut f = tree_world(&cmdline("genboot.shell_on_fail"));
    f.fail
        .push(("mount overlay /sysroot/etc".into(), libc::EINVAL));
    let f = fails_at(
        f,
        Step::MountEtc,
        "cannot mount /etc's overlay (lowerdir=/sysroot/etc,upperdir=",
    );
    assert!(f.calls.contains(&"run_shell /sysroot /bin/sh".to_string()));
    let mut f = tree_world(&cmdline(""));
    let id = format!("{ROOT_PARTITION}/var/lib/genboot/identity");
    f.file(&format!("{id}/ssh/ssh_host_rsa_key"), b"key", PART);
    f.fail
        .push((format!("mount {id}/ssh/ssh_host_rsa_key"), libc::EPERM));
    fails_at(
        f,
        Step::MountEtc,
        "cannot bind /var/lib/genboot/identity/ssh/ssh_host_rsa_key on /etc/ssh/ssh_host_rsa_key",
    );
    let mut f = tree_world(&cmdline(""));
    f.fail
        .push(("write /sysroot/etc/machine-id".into(), libc::ENOSPC));
    fails_at(
        f,
        Step::MountEtc,
        "cannot write the machine's machine-id to /etc/machine-id: No space left",
    );
    let mut f = tree_world(&cmdline(""));
    f.tree.retain(|k, _| !k.starts_with("/sysroot/etc"));
    fails_at(f, Step::MountEtc, "the tree has no /etc directory");
}

#[test]
fn bind_var_failures_reboot() {
    let mut f = tree_world(&cmdline(""));
    f.fail.push((
        format!("mount {ROOT_PARTITION}/var /sysroot/var"),
        libc::EPERM,
    ));
    fails_at(
        f,
        Step::BindVar,
        "cannot bind the root partition's /var on the tree's",
    );
    let mut f = tree_world(&cmdline(""));
    f.fail
        .push(("mount - /sysroot/var/lib/dpkg".into(), libc::EPERM));
    fails_at(
        f,
        Step::BindVar,
        "cannot bind /usr/lib/genboot/var/lib/dpkg on /var/lib/dpkg",
    );
    let mut f = tree_world(&cmdline(""));
    f.fail
        .push(("mount tmpfs /sysroot/tmp".into(), libc::ENODEV));
    fails_at(f, Step::BindVar, "cannot mount a tmpfs on /tmp");
}

#[test]
fn a_tree_without_its_init_fails_once_mounted_and_names_the_tree() {
    let mut f = tree_world(&cmdline(""));
    f.tree.remove("/sysroot/sbin/init");
    let f = fails_at(
        f,
        Step::BindVar,
        "init points to /sbin/init, which is not a file in the generation's tree",
    );
    assert!(console_has(&f, "systemd-sysv"));
    // The generation step did not look for it on the root partition.
    assert!(console_has(
        &f,
        &format!(
            "generation: {} (kernel {KVER}, tree {})",
            gen(),
            tree_object()
        )
    ));
}

#[test]
fn a_failing_physical_read_only_remount_or_volatile_root_only_warns() {
    let mut f = tree_world(&cmdline(""));
    f.fail.push((
        format!("mount - {ROOT_PARTITION} - MS_RDONLY|MS_REMOUNT|MS_BIND"),
        libc::EPERM,
    ));
    f.fail.push(("symlink".into(), libc::EROFS));
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    assert!(console_has(
        &f,
        "warning: cannot make /run/genboot/sysroot read-only"
    ));
    assert!(console_has(
        &f,
        "warning: cannot write /run/systemd/volatile-root"
    ));
}
