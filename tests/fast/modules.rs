//! Module trees through `genboot build`, on synthetic inputs: a good tree
//! builds with its closure in load order; every kind of bad tree is
//! refused naming the file, with nothing added to the store; the input
//! cache notices what changed.

use crate::support::*;
use std::path::Path;

/// Remove a read-only store object as `gc` would, without genboot.
fn make_writable_and_remove(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fn walk(p: &Path) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        for e in std::fs::read_dir(p).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path());
            }
        }
    }
    walk(dir);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn synthetic_tree_builds_with_closure_in_load_order() {
    let t = SyntheticTree::new(&basic_modules());
    // Debian's links to the headers leave the tree; they stay out of the store.
    std::os::unix::fs::symlink("/usr/src/linux-headers-x", t.k.modules.join("build")).unwrap();
    std::os::unix::fs::symlink("/usr/src/linux-headers-x", t.k.modules.join("source")).unwrap();
    let out = t.build(&["virtio-blk", "ext4"], "compression = \"none\"");
    assert!(out.status.success(), "{}", stderr(&out));
    let store = t.root().join("var/lib/genboot/store");
    let initrd = std::fs::read(only_object(&store, "initrd-").join("initrd")).unwrap();
    let text = String::from_utf8_lossy(&initrd);
    let m = |p: &str| {
        text.find(&format!("module {p} "))
            .unwrap_or_else(|| panic!("{p} not in manifest"))
    };
    assert!(m("virtio") < m("virtio_ring") && m("virtio_ring") < m("virtio_blk"));
    assert!(text.contains("alias virtio:d00000002v* virtio_blk\n"));
}

#[test]
fn mismatched_vermagic_is_refused_naming_the_file() {
    let t = SyntheticTree::new(&basic_modules());
    t.write(
        "fs/other.ko",
        &fake_ko(&[
            "name=other",
            "depends=",
            "vermagic=6.1.0-99-amd64 SMP mod_unload ",
        ]),
    );
    t.refused(
        t.build(&["virtio_blk"], ""),
        &["kernel/fs/other.ko", "6.1.0-99-amd64", "vermagic"],
    );
}

#[test]
fn unknown_module_is_refused_listing_the_closest_names() {
    let t = SyntheticTree::new(&basic_modules());
    t.refused(
        t.build(&["virtio_blkk"], ""),
        &[
            "virtio_blkk",
            "closest names: virtio_blk",
            "[initrd] modules",
        ],
    );
}

#[test]
fn dependency_cycle_is_refused_naming_the_cycle() {
    let t = SyntheticTree::new(&[
        ("a/one.ko", "one", "two", &[]),
        ("a/two.ko", "two", "three", &[]),
        ("a/three.ko", "three", "one", &[]),
    ]);
    t.refused(
        t.build(&["one"], ""),
        &["cycle", "one -> two -> three -> one"],
    );
}

#[test]
fn missing_dependency_is_refused() {
    let t = SyntheticTree::new(&[("a/one.ko", "one", "nothere", &[])]);
    t.refused(t.build(&["one"], ""), &["kernel/a/one.ko", "\"nothere\""]);
}

#[test]
fn missing_firmware_warns_and_strict_refuses() {
    let mut mods = basic_modules();
    mods.push(("net/nic.ko", "nic", "", &["firmware=vendor/nic.bin"]));
    let t = SyntheticTree::new(&mods);
    let out = t.build(&["nic"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: firmware vendor/nic.bin named by module nic"),
        "{err}"
    );

    let t = SyntheticTree::new(&mods);
    t.refused(
        t.build(&["nic"], "strict_firmware = true"),
        &["vendor/nic.bin", "nic", "strict_firmware"],
    );
}

#[test]
fn present_firmware_goes_into_the_initrd() {
    let mut mods = basic_modules();
    mods.push(("net/nic.ko", "nic", "", &["firmware=vendor/nic.bin"]));
    let t = SyntheticTree::new(&mods);
    let fw = t.dir.path().join("sys/lib/firmware/vendor");
    std::fs::create_dir_all(&fw).unwrap();
    std::fs::write(fw.join("nic.bin"), b"FIRMWARE-BYTES").unwrap();
    let out = t.build(&["nic"], "compression = \"none\"\nstrict_firmware = true");
    assert!(out.status.success(), "{}", stderr(&out));
    let store = t.root().join("var/lib/genboot/store");
    let initrd = std::fs::read(only_object(&store, "initrd-").join("initrd")).unwrap();
    let text = String::from_utf8_lossy(&initrd);
    assert!(
        text.contains("lib/firmware/vendor/nic.bin\0"),
        "no firmware member"
    );
    assert!(text.contains("FIRMWARE-BYTES"));
    assert!(text.contains("firmware /lib/firmware/vendor/nic.bin\n"));
}

/// The members of the uncompressed newc archive at the start of `data`
/// (name -> bytes) and where it ends (after the trailer's padding).
fn first_cpio(data: &[u8]) -> (std::collections::BTreeMap<String, Vec<u8>>, usize) {
    let mut out = std::collections::BTreeMap::new();
    let mut at = 0usize;
    let hex = |b: &[u8]| usize::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
    loop {
        assert_eq!(&data[at..at + 6], b"070701", "a newc header at {at}");
        let size = hex(&data[at + 54..at + 62]);
        let namesize = hex(&data[at + 94..at + 102]);
        let name = String::from_utf8(data[at + 110..at + 110 + namesize - 1].to_vec()).unwrap();
        let start = (at + 110 + namesize).next_multiple_of(4);
        at = (start + size).next_multiple_of(4);
        if name == "TRAILER!!!" {
            return (out, at);
        }
        out.insert(name, data[start..start + size].to_vec());
    }
}

/// Issue 13: CPU microcode, when Debian's intel-microcode or
/// amd64-microcode put it beside the module tree's firmware, goes in front
/// of the compressed initrd as the uncompressed archive the kernel's early
/// loader reads; each vendor's files concatenated in name order.
#[test]
fn cpu_microcode_goes_in_front_as_an_uncompressed_archive() {
    let t = SyntheticTree::new(&basic_modules());
    let fw = t.dir.path().join("sys/lib/firmware");
    let w = |p: &str, d: &[u8]| {
        let p = fw.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, d).unwrap();
    };
    w("intel-ucode/06-8f-08", b"INTEL-B;");
    w("intel-ucode/06-55-04", b"INTEL-A;");
    w("amd-ucode/microcode_amd_fam17h.bin", b"AMD-17;");
    w("amd-ucode/microcode_amd.bin", b"AMD-0;");
    w("amd-ucode/README", b"not microcode");
    let store = t.root().join("var/lib/genboot/store");
    let out = t.build(&["virtio_blk"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let initrd = std::fs::read(only_object(&store, "initrd-").join("initrd")).unwrap();
    let (early, end) = first_cpio(&initrd);
    assert_eq!(
        early.keys().collect::<Vec<_>>(),
        [
            "kernel",
            "kernel/x86",
            "kernel/x86/microcode",
            "kernel/x86/microcode/AuthenticAMD.bin",
            "kernel/x86/microcode/GenuineIntel.bin"
        ]
    );
    assert_eq!(
        early["kernel/x86/microcode/GenuineIntel.bin"],
        b"INTEL-A;INTEL-B;"
    );
    assert_eq!(
        early["kernel/x86/microcode/AuthenticAMD.bin"],
        b"AMD-0;AMD-17;"
    );
    // Then the compressed archive (zstd's magic), the activator in it.
    assert_eq!(&initrd[end..end + 4], b"\x28\xb5\x2f\xfd");
    let rest = zstd::decode_all(&initrd[end..]).unwrap();
    let (main, _) = first_cpio(&rest);
    assert!(main.contains_key("init") && main.contains_key("dev/console"));

    // A new microcode file is a new initrd (the input cache notices it).
    w("intel-ucode/06-9a-04", b"INTEL-C;");
    let out = t.build(&["virtio_blk"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let initrds: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("-initrd-"))
        .map(|e| std::fs::read(e.path().join("initrd")).unwrap())
        .collect();
    assert_eq!(initrds.len(), 2, "a second initrd object");
    assert!(initrds
        .iter()
        .any(|i| first_cpio(i).0["kernel/x86/microcode/GenuineIntel.bin"]
            == b"INTEL-A;INTEL-B;INTEL-C;"));

    // `microcode = false`: the compressed archive alone.
    let out = t.build(&["virtio_blk"], "microcode = false");
    assert!(out.status.success(), "{}", stderr(&out));
    let plain = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("-initrd-"))
        .map(|e| std::fs::read(e.path().join("initrd")).unwrap())
        .find(|i| i.starts_with(b"\x28\xb5\x2f\xfd"));
    assert!(plain.is_some(), "an initrd without microcode");
}

#[test]
fn kernel_image_that_is_not_a_bzimage_is_refused() {
    let t = SyntheticTree::new(&basic_modules());
    let bogus = t.dir.path().join("vmlinuz-bogus");
    std::fs::write(&bogus, vec![0x42u8; 4096]).unwrap();
    let cfg = t.config(&["virtio_blk"], "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&format!("{:?}", t.k.image), &format!("{bogus:?}"));
    std::fs::write(&cfg, text).unwrap();
    let out = run_with_activator(&t.root(), &["build", "--config", cfg.to_str().unwrap()]);
    t.refused(out, &["vmlinuz-bogus", "not a bzImage", "HdrS"]);
}

#[test]
fn missing_activator_is_refused_saying_how_to_build_it() {
    let t = SyntheticTree::new(&basic_modules());
    let cfg = t.config(&["virtio_blk"], "activator = \"/nonexistent/genboot-init\"");
    let out = run(&t.root(), &["build", "--config", cfg.to_str().unwrap()]);
    t.refused(out, &["/nonexistent/genboot-init", "build-activator"]);
}

#[test]
fn warm_build_reuses_objects_and_notices_a_changed_module() {
    let t = SyntheticTree::new(&basic_modules());
    let first = t.build(&["virtio_blk"], "");
    assert!(first.status.success(), "{}", stderr(&first));
    let second = t.build(&["virtio_blk"], "");
    assert_eq!(stdout(&first), stdout(&second));
    // Change a module's contents (and so its size): a new object.
    t.module("drivers/virtio/virtio.ko", "virtio", "", &["alias=changed"]);
    let third = t.build(&["virtio_blk"], "");
    assert!(third.status.success());
    assert_ne!(stdout(&first), stdout(&third));
}

#[test]
fn cached_build_rebuilds_an_object_that_was_deleted_from_the_store() {
    let t = SyntheticTree::new(&basic_modules());
    let first = t.build(&["virtio_blk"], "");
    assert!(first.status.success(), "{}", stderr(&first));
    let store = t.root().join("var/lib/genboot/store");
    let initrd = only_object(&store, "initrd-");
    make_writable_and_remove(&initrd);
    let second = t.build(&["virtio_blk"], "");
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(stdout(&first), stdout(&second));
    assert!(initrd.join("initrd").is_file(), "the initrd object is back");
}
