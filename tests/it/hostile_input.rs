//! Hostile and careless input (issue #10): module trees (not trusted: DKMS
//! and third parties write there), kernel images and ESPs planted with
//! traps. One test per finding, named after the bug; each checks the clear
//! error or warning (file, field, fix) AND that nothing leaked or changed.
//!
//! Hostile module trees are made from real modules of the generic test
//! kernel, with their `.modinfo` rewritten by `objcopy --update-section`.

use crate::support;
use crate::support::{dir_names, kernel, only_object, stderr, Kernel, GENERIC};
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
        support::genboot()
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
    support::stdout(&o).lines().map(str::to_string).collect()
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
    assert!(o.status.success(), "failed:\n{e}\n{}", support::stdout(o));
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
        dir_names(&t.store()).is_empty(),
        "{:?}",
        dir_names(&t.store())
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

/// The address space genboot may use in the tests of unbounded reads:
/// 1 GiB. Code that reads a device, a bomb or a huge file whole fails under
/// it at once (instead of exhausting the shared machine), so it is the
/// memory bound these tests check.
const AS_LIMIT: u64 = 1 << 30;

/// Run genboot with `args` below `t`'s root under [`AS_LIMIT`].
fn run_bounded(t: &HostileTree, args: &[&str]) -> Output {
    let act = t.path("genboot-init");
    if !act.exists() {
        std::fs::write(&act, b"\x7fELF stand-in activator: only its bytes matter\n").unwrap();
    }
    std::fs::create_dir_all(t.root()).unwrap();
    run_bounded_in(&t.root(), &[("GENBOOT_ACTIVATOR", act.as_path())], args)
}

/// [`run_bounded`] for the system below `root`.
fn run_bounded_in(root: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut c = Command::new("prlimit");
    c.arg(format!("--as={AS_LIMIT}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_genboot"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env("GENBOOT_ESP_ANY_DIR", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("prlimit runs (util-linux)")
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
    let e = assert_failed(&r);
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
        dir_names(&t.store()).is_empty(),
        "{:?}",
        dir_names(&t.store())
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
    let e = assert_failed(&r);
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
        dir_names(&t.store()).is_empty(),
        "{:?}",
        dir_names(&t.store())
    );

    // Without the bomb the same tree builds (the refusal was the bomb's).
    std::fs::remove_file(&bomb).unwrap();
    let r = run_bounded(&t, &["build", "--config", cfg.to_str().unwrap()]);
    assert_ok(&r);
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
            dir_names(&t.store()).is_empty(),
            "{what}: {:?}",
            dir_names(&t.store())
        );
    }
}

// ------------------------------------------------------------- the ESP ----

use crate::support::esp::EspTarget;
use crate::support::SystemTree;

/// `genboot <esp args> <args>` on `sys` (plain directories accepted).
fn on(sys: &SystemTree, t: &EspTarget, args: &[&str]) -> Output {
    let mut a = t.args();
    a.extend(args.iter().map(|s| s.to_string()));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    sys.run_env(&[("GENBOOT_ESP_ANY_DIR", "1")], &a)
}

fn dir_target(sys: &SystemTree) -> EspTarget {
    let d = sys.path("esp");
    std::fs::create_dir_all(&d).unwrap();
    EspTarget::Dir(d)
}

fn image_target(sys: &SystemTree) -> EspTarget {
    let img = sys.path("disk.img");
    crate::support::esp::esp_only_image(&img, 64);
    EspTarget::Image(img)
}

/// Both backends, each on a fresh system with generation 1 (generic kernel).
fn both_with_one_generation() -> Vec<(SystemTree, EspTarget)> {
    [false, true]
        .into_iter()
        .map(|image| {
            let mut sys = SystemTree::new();
            sys.switch(&kernel(GENERIC), "");
            let t = if image {
                image_target(&sys)
            } else {
                dir_target(&sys)
            };
            (sys, t)
        })
        .collect()
}

/// The ESP path of the current generation's kernel, as the installer
/// names it (`EFI/genboot/<hash>-linux-<release>.efi`, after the object
/// the generation's `kernel` link points into).
fn current_kernel_on_esp(sys: &SystemTree) -> String {
    let gen = sys.root.join("var/lib/genboot/profiles/system");
    let target = std::fs::read_link(std::fs::canonicalize(&gen).unwrap().join("kernel")).unwrap();
    let obj = target
        .parent()
        .and_then(Path::file_name)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    format!("EFI/genboot/{obj}.efi")
}

/// The store file an ESP file was copied from.
fn store_file(sys: &SystemTree, esp_path: &str) -> PathBuf {
    let name = esp_path.trim_start_matches("EFI/genboot/");
    let obj = name.rsplit_once('.').unwrap().0;
    let dir = sys.store().join(obj);
    ["bzImage", "initrd"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no store file for {esp_path}"))
}

/// #10.6: the installer compared ESP files by size only: a kernel or
/// initrd with the right size and wrong bytes (torn FAT write, firmware,
/// bit rot) was never repaired, and `verify` did not look at the ESP.
#[test]
fn esp_file_with_the_right_size_and_wrong_bytes_is_reported_and_repaired() {
    for (sys, t) in both_with_one_generation() {
        assert_ok(&on(&sys, &t, &["install"]));
        let kernel_file = current_kernel_on_esp(&sys);
        let store_copy = store_file(&sys, &kernel_file);
        let good = std::fs::read(&store_copy).unwrap();
        let mut bad = good.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        t.put(&kernel_file, &bad);
        let store_before = files(&sys.store());

        // verify: exit 1, names the file, says what is wrong; the store
        // still verifies and nothing is changed.
        let tree_before = t.tree();
        let sha_before = t.image_sha();
        let o = on(&sys, &t, &["verify"]);
        let out = support::stdout(&o);
        assert_eq!(o.status.code(), Some(1), "{t:?}: {out}{}", stderr(&o));
        assert_contains(
            &out,
            &[
                &format!("MISMATCH ESP {kernel_file}"),
                "has the size of its store file",
                "other bytes",
                "all match their hashes",
            ],
        );
        assert_eq!(t.tree(), tree_before, "{t:?}: verify changed the ESP");
        assert_eq!(t.image_sha(), sha_before, "{t:?}: verify changed the image");

        // install repairs it, saying so.
        let e = assert_ok(&on(&sys, &t, &["install"]));
        assert_contains(&e, &[&kernel_file, "other bytes", "written again"]);
        assert_eq!(t.tree()[&kernel_file], good, "{t:?}: not repaired");
        let o = on(&sys, &t, &["verify"]);
        assert_eq!(o.status.code(), Some(0), "{t:?}: {}", support::stdout(&o));
        assert_contains(&support::stdout(&o), &["0 problem(s)"]);
        assert_eq!(files(&sys.store()), store_before, "the store changed");
    }
}

/// #10.10 (ESP side): entries and `loader.conf` were read whole: an 8 GiB
/// (sparse) file in `loader/entries` or as `loader.conf` ate memory. A file
/// over the cap is not read and counts as foreign; while an unreadable
/// foreign entry is there, no kernel or initrd is removed (it may name any).
#[test]
fn huge_esp_entry_or_loader_conf_is_not_read_and_counts_as_foreign() {
    for (mut sys, t) in both_with_one_generation() {
        assert_ok(&on(&sys, &t, &["install"]));
        let old_kernel = current_kernel_on_esp(&sys);
        sys.switch(&kernel(support::CLOUD), "");
        // Too big to be an entry: 8 GiB sparse on a directory, 100 KiB on FAT.
        let big = "loader/entries/huge.conf";
        match &t {
            EspTarget::Dir(d) => {
                for rel in [big, "loader/loader.conf"] {
                    let f = std::fs::File::create(d.join(rel)).unwrap();
                    f.set_len(8 << 30).unwrap();
                }
            }
            EspTarget::Image(_) => {
                let mut text = format!("title huge\nlinux /{old_kernel}\n").into_bytes();
                text.resize(100 << 10, b'#');
                t.put(big, &text);
            }
        }
        let mut args = t.args();
        args.extend(["delete".to_string(), "1".to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = run_bounded_in(&sys.root, &[], &args);
        let e = assert_ok(&r);
        assert_contains(
            &e,
            &[
                big,
                "more than the 64.0 KiB",
                "treats it as foreign",
                "no file in EFI/genboot is removed",
            ],
        );
        // Generation 1's entry is gone, its kernel is kept; the big file is
        // untouched. (Not `t.tree()` on the directory: it would read 16 GiB.)
        let (names, conf, big_len) = match &t {
            EspTarget::Dir(d) => {
                let mut names: Vec<String> = std::fs::read_dir(d.join("loader/entries"))
                    .unwrap()
                    .chain(std::fs::read_dir(d.join("EFI/genboot")).unwrap())
                    .flatten()
                    .map(|e| e.path().strip_prefix(d).unwrap().display().to_string())
                    .collect();
                names.sort();
                let conf = std::fs::read(d.join("loader/loader.conf")).unwrap();
                (names, conf, std::fs::metadata(d.join(big)).unwrap().len())
            }
            EspTarget::Image(_) => {
                let tree = t.tree();
                let len = tree[big].len() as u64;
                (
                    tree.keys().cloned().collect(),
                    tree["loader/loader.conf"].clone(),
                    len,
                )
            }
        };
        assert!(
            !names
                .iter()
                .any(|k| k.starts_with("loader/entries/genboot-1")),
            "{names:?}"
        );
        assert!(names.contains(&old_kernel), "{t:?}: {names:?}");
        let conf = String::from_utf8_lossy(&conf).into_owned();
        assert!(conf.contains("default genboot-2[.+][c1-9]*"), "{conf}");
        let want: u64 = if matches!(t, EspTarget::Dir(_)) {
            8 << 30
        } else {
            100 << 10
        };
        assert_eq!(big_len, want);
    }
}

/// #10.12: the installer's temporary files on a directory ESP have
/// predictable names (`<file>.genboot-tmp`) and were opened following
/// symlinks: a link planted there sent the write to any file.
#[test]
fn planted_symlink_at_a_temporary_name_on_a_directory_esp_is_not_followed() {
    let mut sys = SystemTree::new();
    sys.switch(&kernel(GENERIC), "");
    let t = dir_target(&sys);
    let EspTarget::Dir(d) = &t else {
        unreachable!()
    };
    for dir in ["loader/entries", "EFI/genboot"] {
        std::fs::create_dir_all(d.join(dir)).unwrap();
    }
    let kernel_file = current_kernel_on_esp(&sys);
    let mut victims = Vec::new();
    for (i, tmp) in [
        "loader/loader.conf.genboot-tmp".to_string(),
        "loader/entries/genboot-1.conf.genboot-tmp".to_string(),
        format!("{kernel_file}.genboot-tmp"),
    ]
    .iter()
    .enumerate()
    {
        let victim = sys.path(&format!("victim-{i}"));
        std::fs::write(&victim, b"VICTIM: must not change").unwrap();
        std::os::unix::fs::symlink(&victim, d.join(tmp)).unwrap();
        victims.push(victim);
    }
    assert_ok(&on(&sys, &t, &["install"]));
    for v in &victims {
        assert_eq!(
            std::fs::read(v).unwrap(),
            b"VICTIM: must not change",
            "{} was written through a planted symlink",
            v.display()
        );
    }
    // The ESP is complete and holds no symlink.
    let tree = t.tree();
    assert_eq!(
        tree[&kernel_file],
        std::fs::read(store_file(&sys, &kernel_file)).unwrap()
    );
    assert!(tree
        .keys()
        .any(|k| k.starts_with("loader/entries/genboot-1")));
    for (rel, _) in files(d) {
        assert!(
            !rel.to_string_lossy().ends_with(".genboot-tmp"),
            "{}",
            rel.display()
        );
    }
    let mut links = Vec::new();
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                out.push(e.path());
            } else if ft.is_dir() {
                walk(&e.path(), out);
            }
        }
    }
    walk(d, &mut links);
    assert!(links.is_empty(), "{links:?}");

    // A directory of the ESP that is a symlink out of it: refused, nothing
    // written there.
    let outside = sys.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::remove_dir_all(d.join("loader/entries")).unwrap();
    std::os::unix::fs::symlink(&outside, d.join("loader/entries")).unwrap();
    let e = assert_failed(&on(&sys, &t, &["install"]));
    assert_contains(
        &e,
        &["loader/entries", "symbolic link", "follows no symlink"],
    );
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "written through the symlinked directory"
    );
}

/// #10.14: FAT is case-insensitive, the installer's reference check was
/// not: a foreign entry naming `/EFI/GENBOOT/…` in upper case lost its
/// kernel when genboot removed "unreferenced" files.
#[test]
fn foreign_entry_naming_a_genboot_file_in_upper_case_keeps_it() {
    for (mut sys, t) in both_with_one_generation() {
        assert_ok(&on(&sys, &t, &["install"]));
        let old_kernel = current_kernel_on_esp(&sys);
        sys.switch(&kernel(support::CLOUD), "");
        assert_ok(&on(&sys, &t, &["install"]));
        let upper = format!("/{}", old_kernel.to_ascii_uppercase()).replace('/', "\\");
        let foreign = format!("title Debian (fallback)\nlinux {upper}\noptions root=/dev/sda2\n");
        t.put("loader/entries/debian.conf", foreign.as_bytes());
        assert_ok(&on(&sys, &t, &["delete", "1"]));
        let tree = t.tree();
        assert!(
            !tree
                .keys()
                .any(|k| k.starts_with("loader/entries/genboot-1")),
            "{:?}",
            tree.keys()
        );
        assert!(
            tree.contains_key(&old_kernel),
            "{t:?}: the kernel {upper} names was removed: {:?}",
            tree.keys()
        );
        assert_eq!(tree["loader/entries/debian.conf"], foreign.as_bytes());
        if let EspTarget::Image(i) = &t {
            crate::support::judges::fsck_image(i);
        }
    }
}

/// #10.15: a foreign `genboot-<current>.conf` (hand-made, no ownership
/// line) became the loader default and the command exited 0.
#[test]
fn foreign_entry_for_the_current_generation_is_never_made_the_default() {
    // The only generation's entry is hand-made: it was made the default.
    for (sys, t) in both_with_one_generation() {
        if let EspTarget::Dir(d) = &t {
            std::fs::create_dir_all(d.join("loader/entries")).unwrap();
        }
        let hand_made = "title my own entry\nlinux /vmlinuz\noptions root=/dev/sda2\n";
        t.put("loader/entries/genboot-1.conf", hand_made.as_bytes());
        let (tree, sha) = (t.tree(), t.image_sha());
        let e = assert_failed(&on(&sys, &t, &["install"]));
        assert_contains(
            &e,
            &[
                "loader/entries/genboot-1.conf",
                "not genboot's",
                "will not make it the default",
            ],
        );
        assert_eq!(t.tree(), tree, "{t:?}: the ESP changed");
        assert_eq!(t.image_sha(), sha, "{t:?}: the image changed");
        assert!(!tree.contains_key("loader/loader.conf"), "{t:?}");
    }
    // A newer current generation whose entry is hand-made.
    for (mut sys, t) in both_with_one_generation() {
        assert_ok(&on(&sys, &t, &["install"]));
        sys.switch(&kernel(support::CLOUD), "");
        let hand_made = "title my own entry\nlinux /vmlinuz\noptions root=/dev/sda2\n";
        for name in ["genboot-2.conf", "GENBOOT-2.CONF"] {
            let t = match &t {
                EspTarget::Dir(_) if name != "genboot-2.conf" => continue,
                other => other.clone(),
            };
            let rel = format!("loader/entries/{name}");
            t.put(&rel, hand_made.as_bytes());
            let (tree, sha) = (t.tree(), t.image_sha());
            let o = on(&sys, &t, &["install"]);
            let e = assert_failed(&o);
            assert_contains(
                &e,
                &[
                    &rel,
                    "not genboot's",
                    "will not make it the default",
                    "generation 2",
                    "remove or rename it",
                    "Nothing on the ESP was changed",
                ],
            );
            assert_eq!(t.tree(), tree, "{t:?}: the ESP changed");
            assert_eq!(t.image_sha(), sha, "{t:?}: the image changed");
            let conf = String::from_utf8_lossy(&tree["loader/loader.conf"]).into_owned();
            assert!(conf.contains("default genboot-1[.+][c1-9]*"), "{conf}");
            // Once it is gone, genboot writes its own and makes it the default.
            match &t {
                EspTarget::Dir(d) => std::fs::remove_file(d.join(&rel)).unwrap(),
                EspTarget::Image(i) => {
                    crate::support::judges::mtool("mdel", i, &[&format!("::/{rel}")])
                }
            }
        }
        assert_ok(&on(&sys, &t, &["install"]));
        let conf = String::from_utf8_lossy(&t.tree()["loader/loader.conf"]).into_owned();
        assert!(conf.contains("default genboot-2[.+][c1-9]*"), "{conf}");
    }
}
