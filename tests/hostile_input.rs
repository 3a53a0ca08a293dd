//! Hostile and careless input (issue #10): module trees (not trusted: DKMS
//! and third parties write there), kernel images and ESPs planted with
//! traps. One test per finding, named after the bug; each checks the clear
//! error or warning (file, field, fix) AND that nothing leaked or changed.
//!
//! Hostile module trees are made from real modules of the generic test
//! kernel, with their `.modinfo` rewritten by `objcopy --update-section`.

mod common;
mod esp_support;

use common::{kernel, stderr, Kernel, GENERIC};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// ------------------------------------------------------------- helpers ----

/// A module tree holding copies of real modules (`virtio`, `virtio_ring`,
/// `virtio_blk` of the generic kernel) below `<tmp>/sys/lib/modules/<release>`,
/// a firmware directory `<tmp>/sys/lib/firmware`, and a system root
/// `<tmp>/root` to build into.
struct HostileTree {
    dir: tempfile::TempDir,
    k: Kernel,
}

const REAL_MODULES: [&str; 3] = [
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/block/virtio_blk.ko",
];
const BLK: &str = "kernel/drivers/block/virtio_blk.ko";

impl HostileTree {
    fn new() -> HostileTree {
        let real = kernel(GENERIC);
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("sys/lib/modules").join(&real.release);
        for m in REAL_MODULES {
            let to = modules.join(m);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(real.modules.join(m), &to).unwrap();
        }
        std::fs::copy(
            real.modules.join("modules.builtin"),
            modules.join("modules.builtin"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("sys/lib/firmware")).unwrap();
        HostileTree {
            k: Kernel { modules, ..real },
            dir,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn firmware_dir(&self) -> PathBuf {
        self.path("sys/lib/firmware")
    }

    fn root(&self) -> PathBuf {
        self.path("root")
    }

    fn store(&self) -> PathBuf {
        self.root().join("var/lib/genboot/store")
    }

    /// Rewrite the `.modinfo` of module file `rel` (below the tree):
    /// `edit` gets the `key=value` strings and returns the new ones.
    fn edit_modinfo(&self, rel: &str, edit: impl FnOnce(Vec<String>) -> Vec<String>) {
        let ko = self.k.modules.join(rel);
        let bin = self.path("modinfo.bin");
        objcopy(&[
            "-O",
            "binary",
            "--only-section=.modinfo",
            ko.to_str().unwrap(),
            bin.to_str().unwrap(),
        ]);
        let raw = std::fs::read(&bin).unwrap();
        let kv: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect();
        let mut out = Vec::new();
        for s in edit(kv) {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        std::fs::write(&bin, out).unwrap();
        objcopy(&[
            "--update-section",
            &format!(".modinfo={}", bin.display()),
            ko.to_str().unwrap(),
        ]);
        std::fs::remove_file(&bin).unwrap();
    }

    /// Add `key=value` strings to a module's `.modinfo`.
    fn add_modinfo(&self, rel: &str, add: &[&str]) {
        self.edit_modinfo(rel, |mut kv| {
            kv.extend(add.iter().map(|s| s.to_string()));
            kv
        });
    }

    fn config(&self, modules: &[&str], initrd_extra: &str) -> PathBuf {
        self.config_with_image(&self.k.image, modules, initrd_extra)
    }

    fn config_with_image(&self, image: &Path, modules: &[&str], initrd_extra: &str) -> PathBuf {
        let mods: Vec<String> = modules.iter().map(|m| format!("{m:?}")).collect();
        let text = format!(
            "[kernel]\nimage = {image:?}\nmodules = {:?}\n\n[initrd]\nmodules = [{}]\ncompression = \"none\"\n{initrd_extra}\n\n[root]\ndevice = \"/dev/vda1\"\n\n[system]\nlabel = \"Hostile\"\n",
            self.k.modules,
            mods.join(", ")
        );
        let p = self.path("system.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn genboot(&self, args: &[&str]) -> Output {
        std::fs::create_dir_all(self.root()).unwrap();
        let act = self.path("genboot-init");
        if !act.exists() {
            std::fs::write(&act, b"\x7fELF stand-in activator: only its bytes matter\n").unwrap();
        }
        common::genboot()
            .env("GENBOOT_ACTIVATOR", act)
            .env("GENBOOT_ESP_ANY_DIR", "1")
            .arg("--root")
            .arg(self.root())
            .args(args)
            .output()
            .unwrap()
    }

    fn build(&self, modules: &[&str], initrd_extra: &str) -> Output {
        let cfg = self.config(modules, initrd_extra);
        self.genboot(&["build", "--config", cfg.to_str().unwrap()])
    }

    /// The one initrd object's archive (built with `compression = "none"`).
    fn initrd(&self) -> PathBuf {
        only_object(&self.store(), "initrd-").join("initrd")
    }
}

fn objcopy(args: &[&str]) {
    let o = Command::new("objcopy")
        .args(args)
        .output()
        .expect("objcopy runs (apt-get install binutils)");
    assert!(o.status.success(), "objcopy {args:?}: {}", stderr(&o));
}

/// `cpio -t` of an uncompressed newc archive: the member paths.
fn cpio_list(archive: &Path) -> Vec<String> {
    let o = Command::new("cpio")
        .args(["-t", "--quiet", "-F"])
        .arg(archive)
        .output()
        .expect("cpio runs (apt-get install cpio)");
    assert!(o.status.success(), "cpio -t: {}", stderr(&o));
    common::stdout(&o).lines().map(str::to_string).collect()
}

fn only_object(store: &Path, prefix: &str) -> PathBuf {
    let hits: Vec<PathBuf> = std::fs::read_dir(store)
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.get(33..).is_some_and(|rest| rest.starts_with(prefix))
        })
        .map(|e| e.path())
        .collect();
    assert_eq!(hits.len(), 1, "objects {prefix}*: {hits:?}");
    hits[0].clone()
}

/// Every regular file below `dir` (symlinks not followed): path → bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(d) else {
            return;
        };
        for e in rd.flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                walk(&e.path(), out);
            } else if ft.is_file() {
                out.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// Names of the entries of the store directory (objects, temp dirs).
fn store_entries(store: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(store)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[track_caller]
fn assert_contains(text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "lacks {n:?}:\n{text}");
    }
}

#[track_caller]
fn assert_failed(o: &Output) -> String {
    let e = stderr(o);
    assert!(!o.status.success(), "should have failed:\n{e}");
    e
}

#[track_caller]
fn assert_ok(o: &Output) -> String {
    let e = stderr(o);
    assert!(o.status.success(), "failed:\n{e}\n{}", common::stdout(o));
    e
}

// ------------------------------------------------ 3: firmware escapes ----

/// #10.3: `.modinfo` `firmware=/etc/shadow` (or `../../..`, or a symlink
/// in the firmware tree pointing out of it) was joined onto the firmware
/// directory unchecked, read as root and copied into the world-readable
/// initrd (and from there onto the ESP).
#[test]
fn module_firmware_names_cannot_pull_host_files_into_the_initrd() {
    let t = HostileTree::new();
    let marker = "GENBOOT-TEST-SECRET-7f3a9c";
    let secret = t.path("secret.txt");
    std::fs::write(&secret, marker).unwrap();
    let fw = t.firmware_dir();
    std::fs::create_dir_all(fw.join("vendor")).unwrap();
    std::fs::write(fw.join("vendor/good.bin"), b"GOOD-FIRMWARE").unwrap();
    std::os::unix::fs::symlink(&secret, fw.join("vendor/evil.bin")).unwrap();
    std::os::unix::fs::symlink("../../../../secret.txt", fw.join("vendor/up.bin")).unwrap();
    let absolute = format!("firmware={}", secret.display());
    t.add_modinfo(
        BLK,
        &[
            "firmware=/etc/shadow",
            "firmware=../../../../../../../../../../etc/shadow",
            &absolute,
            "firmware=vendor/evil.bin",
            "firmware=vendor/up.bin",
            "firmware=vendor/good.bin",
        ],
    );

    // strict_firmware = true: refused, naming the module file, the
    // firmware= value and the fix; nothing written.
    let o = t.build(&["virtio_blk"], "strict_firmware = true");
    let e = assert_failed(&o);
    assert_contains(
        &e,
        &[
            "virtio_blk.ko",
            "firmware=\"/etc/shadow\"",
            "absolute",
            "strict_firmware = false",
        ],
    );
    assert!(
        store_entries(&t.store()).is_empty(),
        "{:?}",
        store_entries(&t.store())
    );

    // Default: each hostile name is skipped with a warning; the good
    // firmware is in, no host file is.
    let o = t.build(&["virtio_blk"], "");
    let e = assert_ok(&o);
    for needle in [
        "firmware=\"/etc/shadow\"",
        "firmware=\"../../../../../../../../../../etc/shadow\"",
        &format!("firmware={:?}", secret.display().to_string()),
        "firmware=\"vendor/evil.bin\"",
        "firmware=\"vendor/up.bin\"",
    ] {
        let line = e
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no warning for {needle}:\n{e}"));
        assert_contains(
            line,
            &[
                "warning",
                "virtio_blk.ko",
                "built without it",
                "remove or fix the module",
            ],
        );
    }
    assert_contains(&e, &["outside the firmware directory", "\"..\""]);
    let list = cpio_list(&t.initrd());
    assert!(
        list.contains(&"lib/firmware/vendor/good.bin".to_string()),
        "{list:?}"
    );
    for m in &list {
        assert!(
            !m.contains("shadow")
                && !m.contains("secret")
                && !m.contains("evil")
                && !m.contains("up.bin"),
            "host file in the initrd: {m} ({list:?})"
        );
    }
    // No byte of the secret anywhere in the store, nor on an ESP.
    let esp = t.path("esp");
    std::fs::create_dir_all(&esp).unwrap();
    let cfg = t.config(&["virtio_blk"], "");
    assert_ok(&t.genboot(&[
        "--esp",
        esp.to_str().unwrap(),
        "switch",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    let shadow_head = std::fs::read("/etc/shadow")
        .ok()
        .and_then(|s| s.split(|&b| b == b'\n').next().map(<[u8]>::to_vec))
        .filter(|l| l.len() > 8);
    for (p, data) in files(&t.store()).into_iter().chain(files(&esp)) {
        assert!(
            memchr::memmem::find(&data, marker.as_bytes()).is_none(),
            "{} holds the secret",
            p.display()
        );
        if let Some(l) = &shadow_head {
            assert!(
                memchr::memmem::find(&data, l).is_none(),
                "{} holds /etc/shadow",
                p.display()
            );
        }
    }
}

// ------------------------------------------- 10: unbounded reads (build) ----

/// What a bounded run reports.
struct Bounded {
    out: Output,
    /// Peak resident set of the process, in KiB.
    max_rss_kib: u64,
}

/// Run genboot with `args` below `t`'s root under a 2 GiB address-space
/// limit (so code that reads without bound fails at once instead of
/// exhausting the shared machine) and report its peak RSS (from wait4).
// The child is reaped by wait4, which clippy does not know.
#[allow(clippy::zombie_processes)]
fn run_bounded(t: &HostileTree, args: &[&str]) -> Bounded {
    use std::os::unix::process::ExitStatusExt;
    let act = t.path("genboot-init");
    if !act.exists() {
        std::fs::write(&act, b"\x7fELF stand-in activator: only its bytes matter\n").unwrap();
    }
    std::fs::create_dir_all(t.root()).unwrap();
    let (so, se) = (t.path("bounded.out"), t.path("bounded.err"));
    let child = Command::new("prlimit")
        .arg(format!("--as={}", 2u64 << 30))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_genboot"))
        .arg("--root")
        .arg(t.root())
        .args(args)
        .env("GENBOOT_ACTIVATOR", &act)
        .env("GENBOOT_ESP_ANY_DIR", "1")
        .stdout(std::fs::File::create(&so).unwrap())
        .stderr(std::fs::File::create(&se).unwrap())
        .spawn()
        .expect("prlimit runs (util-linux)");
    let (status, max_rss_kib) = wait4(child.id());
    Bounded {
        out: Output {
            status: std::process::ExitStatus::from_raw(status),
            stdout: std::fs::read(&so).unwrap(),
            stderr: std::fs::read(&se).unwrap(),
        },
        max_rss_kib,
    }
}

/// Wait for child `pid`: (wait status, peak RSS in KiB). prlimit execs
/// genboot, so the pid is genboot's.
#[allow(unsafe_code)]
fn wait4(pid: u32) -> (i32, u64) {
    let mut status = 0;
    // SAFETY: all-zero is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet reaped; status and ru point to
    // writable memory of the right types.
    let rc = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
    assert_eq!(
        rc,
        pid as libc::pid_t,
        "wait4: {}",
        std::io::Error::last_os_error()
    );
    (status, ru.ru_maxrss as u64)
}

/// #10.10: `[kernel] image = "/dev/zero"` read until the machine ran out
/// of memory; a 72 KB `.ko.zst` that inflates to 2 GB took 2.1 GB RSS
/// (every compressed module was inflated whole, in parallel, even outside
/// the closure).
#[test]
fn unbounded_reads_of_kernel_image_and_compressed_modules_are_refused() {
    let t = HostileTree::new();

    // The kernel image is a character device.
    let cfg = t.config_with_image(Path::new("/dev/zero"), &["virtio_blk"], "");
    let r = run_bounded(&t, &["build", "--config", cfg.to_str().unwrap()]);
    let e = assert_failed(&r.out);
    assert_contains(
        &e,
        &[
            "[kernel] image",
            "/dev/zero",
            "character device, not a regular file",
            "Hint:",
        ],
    );
    assert!(
        store_entries(&t.store()).is_empty(),
        "{:?}",
        store_entries(&t.store())
    );

    // A module outside the closure that is a decompression bomb: a real
    // module followed by 2 GiB of zeros, compressed to a few hundred KB.
    let real = std::fs::read(t.k.modules.join("kernel/drivers/virtio/virtio.ko")).unwrap();
    let bomb = t.k.modules.join("kernel/drivers/misc/bomb.ko.zst");
    std::fs::create_dir_all(bomb.parent().unwrap()).unwrap();
    {
        use std::io::Write;
        let mut enc = zstd::stream::Encoder::new(std::fs::File::create(&bomb).unwrap(), 1).unwrap();
        enc.write_all(&real).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..2048 {
            enc.write_all(&zeros).unwrap();
        }
        enc.finish().unwrap();
    }
    let packed = std::fs::metadata(&bomb).unwrap().len();
    assert!(packed < 1 << 20, "the bomb is small: {packed} bytes");
    let cfg = t.config(&["virtio_blk"], "");
    let r = run_bounded(&t, &["build", "--config", cfg.to_str().unwrap()]);
    let e = assert_failed(&r.out);
    assert_contains(
        &e,
        &[
            "bomb.ko.zst",
            "zstd",
            "decompresses to more than 134217728 bytes",
            "Hint:",
        ],
    );
    assert!(
        store_entries(&t.store()).is_empty(),
        "{:?}",
        store_entries(&t.store())
    );
    eprintln!("peak RSS of the refused build: {} KiB", r.max_rss_kib);
    assert!(
        r.max_rss_kib < 256 * 1024,
        "the build took {} MiB of memory",
        r.max_rss_kib / 1024
    );

    // Without the bomb the same tree builds (the refusal was the bomb's).
    std::fs::remove_file(&bomb).unwrap();
    let r = run_bounded(&t, &["build", "--config", cfg.to_str().unwrap()]);
    assert_ok(&r.out);
}

// ------------------------------------------ 11: manifest-breaking values ----

/// #10.11: `.modinfo` `alias=`/`name=` with whitespace or a newline went
/// into the initrd manifest (one record a line, fields separated by
/// spaces): genboot-init rejected it at boot, or it injected records; the
/// build succeeded.
#[test]
fn modinfo_alias_or_name_with_whitespace_is_refused_at_build() {
    let cases: [(&str, &str, &[&str]); 4] = [
        (
            "alias with a newline",
            "alias=virtio:d00000099v*\nfirmware /etc/shadow",
            &[
                ".modinfo alias",
                "\"virtio:d00000099v*\\nfirmware /etc/shadow\"",
            ],
        ),
        (
            "alias with a space",
            "alias=pci:v* evil",
            &[".modinfo alias", "\"pci:v* evil\""],
        ),
        (
            "softdep with a newline",
            "softdep=pre: crc32c\ninstall virtio_blk /bin/sh",
            &[".modinfo softdep", "modules.softdep"],
        ),
        (
            "name with a newline",
            "name=virtio_blk\nmodule x",
            &[".modinfo name"],
        ),
    ];
    for (what, kv, needles) in cases {
        let t = HostileTree::new();
        t.edit_modinfo(BLK, |kv0| {
            let key = kv.split('=').next().unwrap();
            let mut out: Vec<String> = kv0
                .into_iter()
                .filter(|s| key != "name" || !s.starts_with("name="))
                .collect();
            out.push(kv.to_string());
            out
        });
        let o = t.build(&["virtio_blk"], "");
        let e = assert_failed(&o);
        assert_contains(
            &e,
            &["virtio_blk.ko", "is not allowed", "Hint:", "remove it"],
        );
        assert_contains(&e, needles);
        assert!(
            store_entries(&t.store()).is_empty(),
            "{what}: {:?}",
            store_entries(&t.store())
        );
    }
}
