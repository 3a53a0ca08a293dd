//! `genboot image`: a GPT disk image with an ESP and an ext4 root, judged by
//! `sgdisk -v`, `fsck.fat -n`, `bootctl list`, `e2fsck` and `blkid`.

use crate::support;
use crate::support::esp::*;
use crate::support::judges::*;
use crate::support::vm::{Opts, Vm};
use crate::support::*;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn image(sys: &SystemTree, cfgs: &[&Path], out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = vec!["image".into()];
    for c in cfgs {
        args.push("--config".into());
        args.push(c.display().to_string());
    }
    args.extend(["-o".into(), out.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    sys.run(&a)
}

/// The root partition copied out as a file.
fn extract_root(img: &Path, out: &Path) {
    let o = Command::new("sgdisk")
        .arg("-i")
        .arg("2")
        .arg(img)
        .output()
        .unwrap();
    let s = support::stdout(&o);
    let num = |key: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let first = num("First sector: ");
    let last = num("Last sector: ");
    let f = std::fs::File::open(img).unwrap();
    let mut data = vec![0u8; ((last + 1 - first) * 512) as usize];
    f.read_exact_at(&mut data, first * 512).unwrap();
    std::fs::write(out, data).unwrap();
}

#[test]
fn image_passes_sgdisk_fsck_bootctl_and_e2fsck() {
    let mut sys = SystemTree::new();
    let c1 = sys.config(&support::kernel(CLOUD), "");
    let c2 = sys.config(
        &support::kernel(GENERIC),
        "[boot]\ntimeout = 4\ntries = 2\n",
    );
    // Something of the user's own in the tree goes into the root file system.
    std::fs::create_dir_all(sys.root.join("etc")).unwrap();
    std::fs::write(sys.root.join("etc/hostname"), "genboot-test\n").unwrap();
    let img = sys.path("disk.img");
    let o = image(&sys, &[&c1, &c2], &img, &["--esp-size", "80M"]);
    ok(o);
    sgdisk_verify(&img);
    fsck_image(&img);
    // Fixed GUIDs.
    let info = |n: &str| {
        support::stdout(
            &Command::new("sgdisk")
                .args(["-i", n])
                .arg(&img)
                .output()
                .unwrap(),
        )
    };
    assert!(info("1").contains("Partition unique GUID: 65737000-0000-4000-8000-000000000001"));
    assert!(info("1").contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"));
    assert!(info("2").contains("Partition unique GUID: 6E6F6F74-0000-4000-8000-000000000002"));
    // The Discoverable Partitions root type for x86-64 (issue 13): systemd's
    // gpt-auto generator mounts the ESP of such a disk at /efi.
    assert!(
        info("2").contains("Partition GUID code: 4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
        "{}",
        info("2")
    );
    let p = support::stdout(&Command::new("sgdisk").arg("-p").arg(&img).output().unwrap());
    assert!(
        p.contains("Disk identifier (GUID): 67656E62-6F6F-4000-8000-000000000000"),
        "{p}"
    );
    // The ESP: every generation, systemd-boot, the configured timeout.
    let t = image_tree(&img);
    let b = bootctl(&t, &sys.path("mnt"));
    assert!(
        b.ids.contains(&"genboot-1.conf".to_string()),
        "{}",
        b.output
    );
    assert!(
        b.ids.contains(&"genboot-2.conf".to_string()),
        "{}",
        b.output
    );
    assert_eq!(b.default.as_deref(), Some("genboot-2.conf"));
    assert!(t.contains_key("EFI/BOOT/BOOTX64.EFI"));
    assert_eq!(
        t["EFI/systemd/systemd-bootx64.efi"],
        std::fs::read("/usr/lib/systemd/boot/efi/systemd-bootx64.efi").unwrap()
    );
    let conf = String::from_utf8(t["loader/loader.conf"].clone()).unwrap();
    assert!(conf.contains("timeout 4\n"), "{conf}");
    assert!(entries(&t).contains(&"genboot-2+2.conf".to_string()));
    // The root: a clean ext4 with the fixed UUID and label, holding the
    // store, the profile and the user's files.
    let root = sys.path("root.ext4");
    extract_root(&img, &root);
    let o = Command::new("e2fsck")
        .arg("-fn")
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "e2fsck: {}{}",
        support::stdout(&o),
        stderr(&o)
    );
    let blk = support::stdout(&Command::new("blkid").arg(&root).output().unwrap());
    assert!(
        blk.contains("UUID=\"6e6f6f74-6673-4000-8000-000000000003\""),
        "{blk}"
    );
    assert!(blk.contains("LABEL=\"genboot-root\""), "{blk}");
    let ls = |dir: &str| {
        support::stdout(
            &Command::new("debugfs")
                .arg("-R")
                .arg(format!("ls -p {dir}"))
                .arg(&root)
                .output()
                .unwrap(),
        )
    };
    let profiles = ls("/var/lib/genboot/profiles");
    assert!(
        profiles.contains("system-1-link") && profiles.contains("system-2-link"),
        "{profiles}"
    );
    assert!(ls("/etc").contains("hostname"));
    // An empty /efi for that mount.
    // `ls -p` prints `/inode/mode/uid/gid/name/size/` per entry.
    let names = |dir: &str| -> Vec<String> {
        ls(dir)
            .lines()
            .filter_map(|l| l.split('/').nth(5).map(str::to_string))
            .filter(|n| !n.is_empty())
            .collect()
    };
    assert!(names("/").contains(&"efi".to_string()), "{}", ls("/"));
    assert_eq!(names("/efi"), [".", ".."], "{}", ls("/efi"));
    let store = ls("/var/lib/genboot/store");
    assert!(store.contains("-genboot-system-"), "{store}");
}

#[test]
fn image_esp_and_gpt_are_reproducible() {
    let mut sys = SystemTree::new();
    let c = sys.config(&support::kernel(GENERIC), "");
    let a = sys.path("a.img");
    let b = sys.path("b.img");
    ok(image(&sys, &[&c], &a, &["--esp-size", "48M"]));
    ok(image(&sys, &[&c], &b, &["--esp-size", "48M"]));
    let f = |p: &Path| std::fs::File::open(p).unwrap();
    let part = esp_partition(&a);
    let read = |p: &Path, off: u64, len: u64| {
        let mut v = vec![0u8; len as usize];
        f(p).read_exact_at(&mut v, off).unwrap();
        v
    };
    // Protective MBR + primary GPT, the whole ESP, the backup GPT.
    assert!(read(&a, 0, 1 << 20) == read(&b, 0, 1 << 20), "GPT differs");
    assert!(
        read(&a, part.start, part.len) == read(&b, part.start, part.len),
        "ESP differs"
    );
    let end = std::fs::metadata(&a).unwrap().len();
    assert!(read(&a, end - (1 << 20), 1 << 20) == read(&b, end - (1 << 20), 1 << 20));
}

#[test]
fn switch_into_an_image_updates_its_esp_only() {
    let mut sys = SystemTree::new();
    let c1 = sys.config(&support::kernel(GENERIC), "");
    let img = sys.path("disk.img");
    ok(image(&sys, &[&c1], &img, &["--esp-size", "48M"]));
    let part = esp_partition(&img);
    let root_bytes = |img: &Path| {
        let f = std::fs::File::open(img).unwrap();
        let start = part.start + part.len;
        let len = std::fs::metadata(img).unwrap().len() - start;
        let mut v = vec![0u8; len as usize];
        f.read_exact_at(&mut v, start).unwrap();
        v
    };
    let before = root_bytes(&img);
    let c2 = sys.config(&support::kernel(CLOUD), "");
    ok(sys.run(&[
        "--image",
        img.to_str().unwrap(),
        "switch",
        "--config",
        c2.to_str().unwrap(),
    ]));
    let t = image_tree(&img);
    let b = bootctl(&t, &sys.path("mnt"));
    assert_eq!(b.default.as_deref(), Some("genboot-2.conf"), "{}", b.output);
    fsck_image(&img);
    sgdisk_verify(&img);
    assert!(
        root_bytes(&img) == before,
        "the root partition was rewritten"
    );
}

#[test]
fn image_refuses_bad_sizes_and_output_inside_root() {
    let mut sys = SystemTree::new();
    let c = sys.config(&support::kernel(GENERIC), "");
    let o = image(&sys, &[&c], &sys.path("x.img"), &["--size", "lots"]);
    assert!(stderr(&o).contains("is not a size"), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not a size"), "{}", stderr(&o));
    let o = image(
        &sys,
        &[&c],
        &sys.path("x.img"),
        &["--size", "64M", "--esp-size", "64M"],
    );
    assert!(stderr(&o).contains("no room for an ESP"), "{}", stderr(&o));
    let o = image(
        &sys,
        &[&c],
        &sys.path("x.img"),
        &["--size", "128M", "--esp-size", "20M"],
    );
    assert!(stderr(&o).contains("too small for FAT32"), "{}", stderr(&o));
    // Refused before anything was built or written.
    assert!(!sys
        .root
        .join("var/lib/genboot/profiles/system-1-link")
        .exists());
    assert!(!sys.path("x.img").exists());
    // The tree (the store holds the kernel modules) does not fit.
    let o = image(
        &sys,
        &[&c],
        &sys.path("x.img"),
        &["--size", "100M", "--esp-size", "48M"],
    );
    let e = stderr(&o);
    assert!(
        e.contains("needs about") && e.contains("leave --size out"),
        "{e}"
    );
    assert!(!sys.path("x.img").exists());
    let inside = sys.root.join("disk.img");
    let o = image(&sys, &[&c], &inside, &[]);
    assert!(
        stderr(&o).contains("inside the --root tree"),
        "{}",
        stderr(&o)
    );
    assert!(!inside.exists());
}

/// Regression: fatfs's NullTimeProvider wrote date 0 (month 0, day 0) into
/// every directory entry; OVMF's FAT driver then refused systemd-boot's
/// boot-counting rename ("Failed to rename … Invalid Parameter"), so tries
/// were never counted on images genboot wrote.
#[test]
fn systemd_boot_counts_tries_on_genboot_fat_regression_invalid_dates() {
    let mut sys = SystemTree::new();
    let c = sys.config(
        &support::kernel(GENERIC),
        "[boot]\ntries = 3\ntimeout = 1\n",
    );
    let img = sys.path("disk.img");
    ok(image(&sys, &[&c], &img, &["--esp-size", "48M"]));
    let budget = Duration::from_secs(120);
    let mut vm = Vm::start(Opts::uefi(
        "image-counts-tries",
        &img,
        Instant::now() + budget,
    ));
    let console = vm.wait_for("Linux version", budget);
    drop(vm);
    assert!(
        console.contains("Test system (generation 1)"),
        "no menu:\n{console}"
    );
    assert!(
        !console.contains("Failed to rename"),
        "systemd-boot could not count:\n{console}"
    );
    let names = entries(&image_tree(&img));
    assert!(
        names.contains(&"genboot-1+2-1.conf".to_string()),
        "{names:?}"
    );
    fsck_image(&img);
    // genboot keeps the counter systemd-boot wrote.
    let o = sys.run(&["--image", img.to_str().unwrap(), "install"]);
    ok(o.clone());
    assert_eq!(written(&o), (0, 0), "{}", stderr(&o));
}

/// A synthetic kernel `release` (a bzImage header, `.ko` files holding only
/// a `.modinfo`) installed in `root` as Debian installs kernels.
fn install_synthetic_kernel(root: &Path, release: &str) {
    let boot = root.join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    std::fs::write(
        boot.join(format!("vmlinuz-{release}")),
        synthetic_bzimage(release),
    )
    .unwrap();
    let dir = root.join(format!("usr/lib/modules/{release}"));
    for (path, name, deps, extra) in basic_modules() {
        let vermagic = format!("vermagic={release} SMP preempt mod_unload modversions ");
        let (name_kv, deps_kv) = (format!("name={name}"), format!("depends={deps}"));
        let mut info = vec![deps_kv.as_str(), name_kv.as_str(), vermagic.as_str()];
        info.extend_from_slice(extra);
        let p = dir.join("kernel").join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, fake_ko(&info)).unwrap();
    }
}

/// The system's own configuration, `/etc/genboot/system.toml` of `root`,
/// booting the newest installed kernel matching `release`.
fn system_toml(root: &Path, release: &str) {
    let p = root.join("etc/genboot/system.toml");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(
        &p,
        format!(
            "[kernel]\nrelease = {release:?}\n\n[initrd]\nmodules = [\"virtio_blk\"]\n\n\
             [root]\ndevice = \"PARTUUID=6e6f6f74-0000-4000-8000-000000000002\"\n\n\
             [system]\nlabel = \"Own config\"\n"
        ),
    )
    .unwrap();
}

/// `debugfs -R CMD` on the root partition of `img` (copied out to `scratch`).
fn debugfs(img: &Path, scratch: &Path, cmd: &str) -> String {
    if !scratch.exists() {
        extract_root(img, scratch);
    }
    let o = Command::new("debugfs")
        .args(["-R", cmd])
        .arg(scratch)
        .output()
        .expect("debugfs runs (apt-get install e2fsprogs)");
    assert!(o.status.success(), "debugfs -R {cmd}: {}", stderr(&o));
    stdout(&o)
}

/// Issue 13, item 5: `genboot --root ROOT image` without `--config` uses
/// `ROOT/etc/genboot/system.toml`, whose paths are the root's.
#[test]
fn image_from_outside_uses_the_roots_own_configuration() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::os::unix::fs::symlink("/usr/lib", root.join("lib")).unwrap();
    install_synthetic_kernel(&root, "6.1.0-7-synthetic");
    system_toml(&root, "newest");
    let img = t.path().join("disk.img");
    let o = run(
        &root,
        &["image", "-o", img.to_str().unwrap(), "--esp-size", "48M"],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("kernel 6.1.0-7-synthetic: the newest installed kernel"),
        "{err}"
    );
    fsck_image(&img);
    let entries = mdir(&img, "/loader/entries");
    assert!(
        entries.iter().any(|e| e.starts_with("genboot-1")),
        "{entries:?}"
    );
    let entry = mtype(&img, &format!("/loader/entries/{}", entries[0]));
    assert!(entry.contains("6.1.0-7-synthetic"), "{entry}");
}

/// Issue 13, item 5: inside a chroot (`--root /`), `genboot image` writes
/// to a path in the root; the root partition holds the root file system
/// alone (not /proc, not a tmpfs /run, not the image itself), and a second
/// run replaces the first image without copying it.
#[test]
fn image_inside_a_chroot_holds_the_root_file_system_alone() {
    let t = tempfile::tempdir_in(repo().join("target")).unwrap();
    let root = t.path().join("root");
    support::debian::copy_root(&[], &root);
    support::debian::install_static_genboot(&root);
    let act = root.join("usr/lib/genboot/genboot-init");
    std::fs::create_dir_all(act.parent().unwrap()).unwrap();
    std::fs::copy(activator(), &act).unwrap();
    let sdboot = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";
    std::fs::create_dir_all(root.join(sdboot).parent().unwrap()).unwrap();
    std::fs::copy(Path::new("/").join(sdboot), root.join(sdboot)).unwrap();
    install_synthetic_kernel(&root, "6.1.0-7-synthetic");
    system_toml(&root, "*-synthetic");
    std::fs::write(root.join("etc/genboot/marker"), "on the root fs\n").unwrap();
    let script = r#"set -e
r=$1
mount -t proc proc "$r/proc"
mount -t tmpfs tmpfs "$r/run"
echo mounted > "$r/run/marker"
for i in 1 2; do
  chroot "$r" env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    genboot image -o /root/disk.img --esp-size 48M
done
"#;
    let o = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&root)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(
        o.status.success(),
        "genboot image in the chroot failed:\n{err}"
    );
    assert!(
        err.contains("kernel 6.1.0-7-synthetic: the newest installed kernel matching"),
        "{err}"
    );
    assert!(
        err.contains("removed the old /root/disk.img first"),
        "the second run replaces the first image:\n{err}"
    );
    let img = root.join("root/disk.img");
    fsck_image(&img);
    let part = t.path().join("root.ext4");
    let fsck = Command::new("e2fsck")
        .args(["-fn"])
        .arg({
            extract_root(&img, &part);
            &part
        })
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck: {}{}",
        stdout(&fsck),
        stderr(&fsck)
    );
    assert!(
        debugfs(&img, &part, "cat /etc/genboot/marker").contains("on the root fs"),
        "the root file system is in the image"
    );
    assert!(
        debugfs(&img, &part, "ls -p /var/lib/genboot/profiles").contains("system-1-link"),
        "the profile is in the image"
    );
    for (dir, absent) in [
        ("/proc", "cmdline"),
        ("/run", "marker"),
        ("/root", "disk.img"),
    ] {
        let ls = debugfs(&img, &part, &format!("ls -p {dir}"));
        assert!(
            !ls.contains(&format!("/{absent}/")),
            "{dir}/{absent} must not be in the image (mounted on the root, or the image itself):\n{ls}"
        );
    }
}

/// Issue 13: `--size auto` left 245 MB free on a Debian root, too little
/// for one more kernel (its package's module tree and the generation's
/// copy in the store). auto leaves that room, judged by ext4 itself
/// (`dumpe2fs`) and mtools; a fixed size that fits the tree but not one
/// more kernel is made, with a warning that says how to grow.
#[test]
fn auto_size_leaves_room_for_one_more_kernel_and_a_tight_size_says_how_to_grow() {
    let mut sys = SystemTree::new();
    let k = support::kernel(GENERIC);
    let c = sys.config(&k, "");
    let img = sys.path("disk.img");
    let o = image(&sys, &[&c], &img, &["--esp-size", "64M"]);
    let said = stderr(&o);
    ok(o);
    assert!(said.contains("room left: root partition about"), "{said}");
    let kernel = std::fs::metadata(&k.image).unwrap().len();
    let modules = du_bytes(&k.modules);
    let initrd = store_file_len(&sys, "-initrd-", "initrd");
    let root_need = 2 * (kernel + modules) + initrd;
    let root_free = ext4_free(&img);
    assert!(
        root_free >= root_need,
        "the root has {root_free} bytes free; one more kernel needs {root_need} ({kernel} kernel, {modules} modules, {initrd} initrd)"
    );
    let esp_free = fat_free(&img);
    assert!(
        esp_free >= kernel + initrd,
        "the ESP has {esp_free} bytes free; one more kernel and initrd need {}",
        kernel + initrd
    );
    assert!(!said.contains("warning"), "{said}");
    // A size that holds the tree but not one more kernel: made, with the
    // way to grow it.
    let size = std::fs::metadata(&img).unwrap().len();
    let tight = format!("{}M", (size - root_need / 2) >> 20);
    std::fs::remove_file(&img).unwrap();
    let o = image(&sys, &[], &img, &["--size", &tight, "--esp-size", "64M"]);
    let said = stderr(&o);
    ok(o);
    assert!(
        said.contains("less than one more kernel")
            && said.contains("--size")
            && said.contains("resize2fs"),
        "{said}"
    );
    let _ = std::fs::remove_file(&img);
}

/// Bytes the files below `dir` take (`du -sb`, links not followed).
fn du_bytes(dir: &Path) -> u64 {
    let o = Command::new("du").arg("-sb").arg(dir).output().unwrap();
    support::stdout(&o)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The size of `file` in the store object whose name contains `part`.
fn store_file_len(sys: &SystemTree, part: &str, file: &str) -> u64 {
    for e in std::fs::read_dir(sys.store()).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().contains(part) {
            return std::fs::metadata(p.join(file)).unwrap().len();
        }
    }
    panic!("no store object with {part}");
}

/// Free bytes of the ext4 root partition (partition 2), as `dumpe2fs`
/// reads them from the image.
fn ext4_free(img: &Path) -> u64 {
    let o = Command::new("sgdisk")
        .args(["-i", "2"])
        .arg(img)
        .output()
        .unwrap();
    let first: u64 = support::stdout(&o)
        .lines()
        .find_map(|l| l.strip_prefix("First sector: "))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let o = Command::new("dumpe2fs")
        .arg("-h")
        .arg(format!("{}?offset={}", img.display(), first * 512))
        .output()
        .unwrap();
    let out = support::stdout(&o);
    let field = |k: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("dumpe2fs has no {k}:\n{out}{}", stderr(&o)))
            .trim()
            .parse()
            .unwrap()
    };
    field("Free blocks:") * field("Block size:")
}

/// Free bytes of the image's ESP, as mtools counts them.
fn fat_free(img: &Path) -> u64 {
    let o = Command::new("mdir")
        .arg("-i")
        .arg(mtools_target(img))
        .arg("::/")
        .output()
        .unwrap();
    let out = support::stdout(&o);
    let line = out
        .lines()
        .find(|l| l.contains("bytes free"))
        .unwrap_or_else(|| panic!("mdir: {out}"));
    // mtools groups the digits: "63 827 968 bytes free".
    line.split("bytes free")
        .next()
        .unwrap()
        .replace([' ', ','], "")
        .parse()
        .unwrap_or_else(|e| panic!("{line}: {e}"))
}
