//! The images on Debian 12's own kernels, booted directly under QEMU (TCG)
//! with a busybox initramfs that loads `crc32c_generic`, `libcrc32c`,
//! `erofs`, `loop` and `overlay`, attaches the images to loop devices (6.1
//! cannot mount an EROFS file directly) and prints a listing — mode, owner,
//! mtime with nanoseconds, nlink, SHA-256, symlink targets, device numbers —
//! of the legacy overlay `lowerdir=meta:objects` (6.1 has no data-only
//! lowers), of `meta::objects` on 6.12, and of a full image. The host runs
//! the same busybox script over the source tree; the listings must be equal.
//!
//! Needs the test kernels unpacked in `$GENBOOT_KERNEL_CACHE` (default
//! `target/kernels`; `tools/fetch-kernels` puts them there), qemu, cpio, xz
//! and a static busybox at /bin/busybox.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use genboot_erofs::{FileData, Image, Meta};

/// Prints the listing of directory $1; the same busybox runs it on the host
/// and in the guest, so the text is comparable byte for byte.
const LIST: &str = r#"B=/bin/busybox
cd "$1"
$B find . | $B sort | $B xargs -r $B stat -c '%n %f %u:%g %y'
$B find . -type f | $B sort | $B xargs -r $B stat -c '%n nlink=%h size=%s'
$B find . -type f | $B sort | $B xargs -r $B sha256sum
$B find . -type l | $B sort | while read -r p; do echo "$p -> $($B readlink "$p")"; done
$B find . -type c -o -type b | $B sort | $B xargs -r $B stat -c '%n dev=%t:%T'
"#;

fn kernel_dir(package: &str) -> (PathBuf, PathBuf) {
    let cache = std::env::var_os("GENBOOT_KERNEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/kernels"));
    let dir = cache.join(package);
    let release = fs::read_dir(dir.join("lib/modules"))
        .ok()
        .and_then(|mut rd| rd.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .unwrap_or_else(|| {
            panic!(
                "test kernel {package} is not unpacked in {}: run `GENBOOT_KERNEL_CACHE={} tools/fetch-kernels {package}` \
                 (or `tools/install-deps`) first",
                cache.display(),
                cache.display()
            )
        });
    (
        dir.join(format!("boot/vmlinuz-{release}")),
        dir.join("lib/modules").join(release),
    )
}

/// Copy module `name` (plain or `.ko.xz`) to `dest` uncompressed: busybox
/// insmod takes plain `.ko` files.
fn copy_module(modules: &Path, name: &str, dest: &Path) {
    let out = run(Command::new("find").arg(modules).args([
        "-name",
        &format!("{name}.ko"),
        "-o",
        "-name",
        &format!("{name}.ko.xz"),
    ]));
    let path = out
        .lines()
        .next()
        .unwrap_or_else(|| panic!("module {name} not found below {}", modules.display()));
    if path.ends_with(".xz") {
        require_tool("xz", "xz-utils");
        let data = Command::new("xz").args(["-dc", path]).output().unwrap();
        assert!(data.status.success(), "xz -dc {path}");
        fs::write(dest, data.stdout).unwrap();
    } else {
        fs::copy(path, dest).unwrap();
    }
}

/// The image whose directory tail is followed by an extended inode (see
/// mount.rs), to look its last name up on this kernel too.
fn dir_tail_image(path: &Path) {
    let mut img = Image::new();
    img.add_dir("/", Meta::new(0o755, 0, 0).mtime(EPOCH, 0))
        .unwrap();
    img.add_dir("/t", Meta::new(0o755, 0, 0).mtime(EPOCH, 0))
        .unwrap();
    img.add_file(
        format!("/t/{}", "z".repeat(25)),
        Meta::new(0o644, 0, 0).mtime(EPOCH + 1, 0),
        FileData::Bytes(vec![]),
    )
    .unwrap();
    write_image(&img, path);
    fsck(path);
}

fn section<'a>(console: &'a str, name: &str) -> Vec<&'a str> {
    let begin = format!("=== BEGIN {name}");
    let end = format!("=== END {name}");
    let Some(start) = console.find(&begin) else {
        return Vec::new();
    };
    let rest = &console[start + begin.len()..];
    let stop = rest.find(&end).unwrap_or(rest.len());
    rest[..stop]
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .collect()
}

fn boot_and_list(package: &str, data_only: bool) {
    require_root();
    for (tool, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("cpio", "cpio"),
        ("busybox", "busybox-static"),
    ] {
        require_tool(tool, pkg);
    }
    assert!(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox (static) is missing: `apt-get install busybox-static`"
    );
    let (vmlinuz, modules) = kernel_dir(package);
    let scratch = Scratch::new(&format!("kernel-{package}"));

    // The source tree and its images.
    let src = scratch.join("src");
    make_odd_tree(&src, 300);
    let root = scratch.join("initramfs");
    let objects = root.join("objects");
    fs::create_dir_all(&objects).unwrap();
    let mut meta = import(&src, &Policy::Metadata { objects: &objects });
    meta.set_object_whiteouts(true);
    write_image(&meta, &root.join("meta.erofs"));
    write_image(&import(&src, &Policy::Full), &root.join("full.erofs"));
    dir_tail_image(&root.join("t.erofs"));
    for image in ["meta.erofs", "full.erofs"] {
        fsck(&root.join(image));
    }

    // The initramfs: busybox, the modules, the images, the objects, /init.
    for d in [
        "bin", "lib", "proc", "sys", "dev", "meta", "root1", "root2", "full", "tmnt", "tmp",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let mods = ["crc32c_generic", "libcrc32c", "erofs", "loop", "overlay"];
    for m in mods {
        copy_module(&modules, m, &root.join(format!("lib/{m}.ko")));
    }
    fs::write(root.join("list.sh"), LIST).unwrap();
    let opts = "ro,metacopy=on,redirect_dir=on";
    let init = format!(
        r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in {mods}; do $B insmod /lib/$m.ko || echo "=== INSMOD FAILED $m"; done
$B losetup /dev/loop0 /meta.erofs && $B losetup /dev/loop1 /full.erofs && $B losetup /dev/loop2 /t.erofs || echo "=== LOSETUP FAILED"
$B mount -t erofs -o ro /dev/loop0 /meta || echo "=== MOUNT FAILED meta"
$B mount -t erofs -o ro /dev/loop1 /full || echo "=== MOUNT FAILED full"
$B mount -t erofs -o ro /dev/loop2 /tmnt || echo "=== MOUNT FAILED t"
$B stat -c '=== T-LOOKUP %n' /tmnt/t/{zname}
$B mount -t overlay overlay -o {opts},lowerdir=/meta:/objects /root1 || echo "=== MOUNT FAILED legacy"
echo "=== BEGIN legacy"; $B sh /list.sh /root1; echo "=== END legacy"
echo "=== BEGIN ls-legacy"; $B ls -A /root1; echo "=== END ls-legacy"
if $B mount -t overlay overlay -o {opts},lowerdir=/meta::/objects /root2; then
  echo "=== DATA-ONLY MOUNTED"
  echo "=== BEGIN data-only"; $B sh /list.sh /root2; echo "=== END data-only"
else
  echo "=== DATA-ONLY REFUSED"
fi
echo "=== BEGIN full"; $B sh /list.sh /full; echo "=== END full"
echo "=== DONE"
$B poweroff -f
"#,
        mods = mods.join(" "),
        zname = "z".repeat(25),
    );
    fs::write(root.join("init"), init).unwrap();
    fs::set_permissions(
        root.join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let initrd = scratch.join("initrd.cpio");
    sh(&format!(
        "cd {} && find . | cpio -o -H newc -R 0:0 --quiet > {}",
        root.display(),
        initrd.display()
    ));

    // The expected listing: the same script over the source tree.
    let expected = run(Command::new("/bin/busybox")
        .env("TZ", "UTC")
        .args(["sh", "-c", LIST, "list"])
        .arg(&src));
    let expected: Vec<&str> = expected.lines().filter(|l| !l.is_empty()).collect();
    assert!(expected.len() > 300, "the source listing is too short");

    // Boot, wait for QEMU to exit (poweroff) or the deadline.
    let log_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kernel-{package}.log"));
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "768",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4 rdinit=/init"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 runs");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let console = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    fs::write(&log_path, &console).unwrap();
    let fail = |what: &str| -> ! {
        panic!(
            "{package}: {what}; console log: {}\n--- last lines ---\n{}",
            log_path.display(),
            console
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    if !console.contains("=== DONE") {
        fail("the guest did not finish (timeout or crash)");
    }
    for bad in ["INSMOD FAILED", "LOSETUP FAILED", "MOUNT FAILED"] {
        if console.contains(&format!("=== {bad}")) {
            fail(bad);
        }
    }
    if !console.contains("=== T-LOOKUP /tmnt/t/") {
        fail("the last name of an inline directory tail was not found");
    }
    let check = |name: &str| {
        let got = section(&console, name);
        if got != expected {
            let missing: Vec<_> = expected
                .iter()
                .filter(|l| !got.contains(l))
                .take(10)
                .collect();
            let extra: Vec<_> = got
                .iter()
                .filter(|l| !expected.contains(l))
                .take(10)
                .collect();
            fail(&format!(
                "listing of {name} differs from the source tree: {} lines vs {}; missing {missing:#?}; extra {extra:#?}",
                got.len(),
                expected.len()
            ));
        }
    };
    check("legacy");
    check("full");
    let ls_src = sh(&format!("/bin/busybox ls -A {}", src.display()));
    let ls_src: Vec<&str> = ls_src.lines().collect();
    if section(&console, "ls-legacy") != ls_src {
        fail("`ls -A /` of the legacy overlay is not the tree's own names");
    }
    if data_only {
        if !console.contains("=== DATA-ONLY MOUNTED") {
            fail("the data-only lower layer (::) did not mount");
        }
        check("data-only");
    } else if !console.contains("=== DATA-ONLY REFUSED") {
        fail("this kernel was expected to refuse a data-only lower layer (::)");
    }
}

#[test]
fn debian_6_1_mounts_the_images_through_loop_and_the_legacy_overlay() {
    boot_and_list("linux-image-6.1.0-50-amd64", false);
}

#[test]
fn debian_6_12_mounts_the_images_with_data_only_and_legacy_overlays() {
    boot_and_list("linux-image-6.12.117+deb12-amd64", true);
}
