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
