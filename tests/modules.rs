//! Module index, closure and kmod index files, judged by kmod itself on the
//! real Debian kernels; and every kind of bad module tree, on small
//! synthetic trees, each refused with nothing added to the store.

mod common;

use common::{kernel, Kernel, CLOUD, GENERIC};
use genboot::modules::{self, index, ModuleIndex};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WANTED: [&str; 4] = ["virtio_blk", "virtio_pci", "ext4", "vfat"];

/// Debian 12's 6.12 kernel from bookworm-security: `.ko.xz` modules, and
/// symbol namespaces that are not upper-case (`xhci`, `SPI_PXA2xx`).
const DEB612: &str = "linux-image-6.12.117+deb12-amd64";

// ---------------------------------------------------------------- kmod ----

/// A copy of `k`'s tree (hard links where possible) with depmod's index
/// files, below `scratch/lib/modules/<release>`.
fn depmod_copy(k: &Kernel, scratch: &Path) -> PathBuf {
    let dst = scratch.join("lib/modules").join(&k.release);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    let linked = Command::new("cp")
        .arg("-al")
        .arg(&k.modules)
        .arg(&dst)
        .status()
        .unwrap()
        .success();
    if !linked {
        let _ = std::fs::remove_dir_all(&dst);
        assert!(Command::new("cp")
            .arg("-r")
            .arg(&k.modules)
            .arg(&dst)
            .status()
            .unwrap()
            .success());
    }
    let st = Command::new("depmod")
        .arg("-b")
        .arg(scratch)
        .arg(&k.release)
        .status()
        .expect("depmod runs (apt-get install kmod)");
    assert!(st.success());
    dst
}

/// `modprobe --show-depends NAME` on the tree below `base`
/// (`base/lib/modules/<release>`), as lines with `base` cut out.
fn show_depends(base: &Path, release: &str, name: &str) -> Vec<String> {
    show_depends_result(base, release, name)
        .unwrap_or_else(|e| panic!("modprobe --show-depends {name} in {}: {e}", base.display()))
}

/// Like [`show_depends`]; `Err` holds modprobe's complaint, with `base`
/// cut out too.
fn show_depends_result(base: &Path, release: &str, name: &str) -> Result<Vec<String>, String> {
    let o = Command::new("modprobe")
        .arg("-d")
        .arg(base)
        .arg("-S")
        .arg(release)
        .arg("--show-depends")
        .arg(name)
        .output()
        .expect("modprobe runs (apt-get install kmod)");
    let prefix = format!("{}/lib/modules/{release}/", base.display());
    let cut = |b: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(b)
            .lines()
            .map(|l| {
                l.trim_end()
                    .replace(&prefix, "")
                    .replace(&prefix[..prefix.len() - 1], "")
            })
            .collect()
    };
    if o.status.success() {
        Ok(cut(&o.stdout))
    } else {
        Err(cut(&o.stderr).join("\n"))
    }
}

fn closure_matches_kmod(k: &Kernel) {
    let scratch = tempfile::tempdir().unwrap();
    depmod_copy(k, scratch.path());

    // kmod's answer: the module files `insmod` would load.
    let mut kmod_files = BTreeSet::new();
    for name in WANTED {
        for line in show_depends(scratch.path(), &k.release, name) {
            if let Some(path) = line.strip_prefix("insmod ") {
                kmod_files.insert(path.to_string());
            }
        }
    }

    // genboot's answer.
    let files = index::walk(&k.modules).unwrap();
    let idx = ModuleIndex::read(&k.modules, &k.release, &files).unwrap();
    let wanted: Vec<String> = WANTED.iter().map(|s| s.to_string()).collect();
    let closure = modules::closure(&idx, &wanted).unwrap();
    let ours: BTreeSet<String> = closure
        .modules
        .iter()
        .map(|n| idx.modules[n].path.clone())
        .collect();
    assert_eq!(
        ours, kmod_files,
        "closure differs from kmod's on {}",
        k.package
    );
    assert_eq!(
        ours.len(),
        closure.modules.len(),
        "a module is listed twice"
    );

    // Load order: every dependency before its dependents.
    for (i, n) in closure.modules.iter().enumerate() {
        for d in &idx.modules[n].info.depends {
            if let Some(j) = closure.modules.iter().position(|m| m == d) {
                assert!(j < i, "{d} must load before {n}: {:?}", closure.modules);
            }
        }
    }

    // genboot's own index files, read by stock modprobe, give the same
    // answers as depmod's — by name, by alias, for builtins.
    let root = tempfile::tempdir().unwrap();
    let cfg = common::write_config(root.path(), k, &WANTED, "");
    let out = run_with_activator(root.path(), &["build", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let store = root.path().join("var/lib/genboot/store");
    let object = only_object(&store, "kernel-modules-");
    let mut probes: Vec<&str> = WANTED.to_vec();
    probes.extend([
        "fs-vfat",
        "pci:v00001AF4d00001000sv00001AF4sd00000002bc01sc00i00",
        "virtio:d00000002v00001AF4",
        "crc32c",
        "symbol:virtqueue_add_sgs",
    ]);
    // Exported symbols: the same set as depmod's.
    let lines = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_to_string(
            dir.join("lib/modules")
                .join(&k.release)
                .join("modules.symbols"),
        )
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
    };
    // modules.dep byte for byte: the same dependency order as depmod's
    // (by the first undefined symbol each dependency provides).
    let dep = |dir: &Path| {
        std::fs::read(dir.join("lib/modules").join(&k.release).join("modules.dep")).unwrap()
    };
    assert!(
        dep(&object) == dep(scratch.path()),
        "modules.dep differs from depmod's ({})",
        k.package
    );
    let (ours, depmods) = (lines(&object), lines(scratch.path()));
    assert!(
        ours == depmods,
        "modules.symbols ({}): only genboot's: {:?}; only depmod's: {:?}",
        k.package,
        ours.difference(&depmods).collect::<Vec<_>>(),
        depmods.difference(&ours).collect::<Vec<_>>()
    );
    // Each kernel builds in other things (virtio_pci and virtio_ring are
    // built into 6.12): a probe may fail, but then the same way on both.
    for name in probes {
        let (ours, depmods) = (
            show_depends_result(&object, &k.release, name),
            show_depends_result(scratch.path(), &k.release, name),
        );
        if WANTED.contains(&name) {
            assert!(depmods.is_ok(), "{name} on {}: {depmods:?}", k.package);
        }
        assert_eq!(
            ours, depmods,
            "modprobe --show-depends {name}: genboot's index vs depmod's ({})",
            k.package
        );
    }
}

#[test]
fn closure_and_index_match_kmod_on_the_generic_kernel() {
    closure_matches_kmod(&kernel(GENERIC));
}

#[test]
fn closure_and_index_match_kmod_on_the_cloud_kernel() {
    let k = kernel(CLOUD);
    closure_matches_kmod(&k);
    // ext4 is built into the cloud kernel.
    let scratch = tempfile::tempdir().unwrap();
    let files = index::walk(&k.modules).unwrap();
    let idx = ModuleIndex::read(&k.modules, &k.release, &files).unwrap();
    assert!(idx.builtin.contains("ext4"));
    assert!(!idx.modules.contains_key("ext4"));
    drop(scratch);
}

/// #10.21: genboot's `modules.symbols` had `symbol:xhci` and
/// `symbol:SPI_PXA2xx` (symbol namespaces) that depmod does not list.
#[test]
fn closure_and_index_match_kmod_on_the_debian_6_12_kernel() {
    let k = kernel(DEB612);
    closure_matches_kmod(&k);
    let files = index::walk(&k.modules).unwrap();
    assert!(
        files.iter().any(|f| f.rel.ends_with("/virtio_blk.ko.xz")),
        "the 6.12 kernel's modules are .ko.xz"
    );
}

// ---------------------------------------------------- synthetic trees ----

/// A minimal ELF64 relocatable object whose `.modinfo` holds `info`.
fn fake_ko(info: &[&str]) -> Vec<u8> {
    let mut modinfo = Vec::new();
    for kv in info {
        modinfo.extend_from_slice(kv.as_bytes());
        modinfo.push(0);
    }
    let shstrtab = b"\0.modinfo\0.shstrtab\0";
    let modinfo_off = 64usize;
    let shstr_off = modinfo_off + modinfo.len();
    let shoff = (shstr_off + shstrtab.len()).next_multiple_of(8);
    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    f.extend_from_slice(&1u16.to_le_bytes()); // ET_REL
    f.extend_from_slice(&62u16.to_le_bytes()); // x86-64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&0u64.to_le_bytes()); // entry
    f.extend_from_slice(&0u64.to_le_bytes()); // phoff
    f.extend_from_slice(&(shoff as u64).to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [64u16, 0, 0, 64, 3, 2] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(&modinfo);
    f.extend_from_slice(shstrtab);
    f.resize(shoff, 0);
    let sh = |f: &mut Vec<u8>, name: u32, ty: u32, flags: u64, off: usize, size: usize| {
        f.extend_from_slice(&name.to_le_bytes());
        f.extend_from_slice(&ty.to_le_bytes());
        f.extend_from_slice(&flags.to_le_bytes());
        f.extend_from_slice(&0u64.to_le_bytes());
        f.extend_from_slice(&(off as u64).to_le_bytes());
        f.extend_from_slice(&(size as u64).to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&1u64.to_le_bytes());
        f.extend_from_slice(&0u64.to_le_bytes());
    };
    f.extend_from_slice(&[0u8; 64]);
    sh(&mut f, 1, 1, 2, modinfo_off, modinfo.len());
    sh(&mut f, 10, 3, 0, shstr_off, shstrtab.len());
    f
}

/// A synthetic module tree for the generic test kernel's release, next to
/// a system.toml. `mods`: (path below kernel/, name, depends, extra keys).
struct Tree {
    dir: tempfile::TempDir,
    k: Kernel,
}

impl Tree {
    fn new(mods: &[(&str, &str, &str, &[&str])]) -> Tree {
        let real = kernel(GENERIC);
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("sys/lib/modules").join(&real.release);
        std::fs::create_dir_all(&modules).unwrap();
        std::fs::write(modules.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        let t = Tree {
            k: Kernel { modules, ..real },
            dir,
        };
        for (path, name, deps, extra) in mods {
            t.module(path, name, deps, extra);
        }
        t
    }

    fn module(&self, path: &str, name: &str, deps: &str, extra: &[&str]) {
        let vermagic = format!(
            "vermagic={} SMP preempt mod_unload modversions ",
            self.k.release
        );
        let name_kv = format!("name={name}");
        let deps_kv = format!("depends={deps}");
        let mut info = vec![deps_kv.as_str(), name_kv.as_str(), vermagic.as_str()];
        info.extend_from_slice(extra);
        self.write(path, &fake_ko(&info));
    }

    fn write(&self, path: &str, bytes: &[u8]) {
        let p = self.k.modules.join("kernel").join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn config(&self, modules: &[&str], initrd_extra: &str) -> PathBuf {
        let mods: Vec<String> = modules.iter().map(|m| format!("{m:?}")).collect();
        let text = format!(
            "[kernel]\nimage = {:?}\nmodules = {:?}\n\n[initrd]\nmodules = [{}]\n{initrd_extra}\n\n[root]\ndevice = \"/dev/vda1\"\n\n[system]\nlabel = \"Synthetic\"\n",
            self.k.image,
            self.k.modules,
            mods.join(", ")
        );
        let p = self.dir.path().join("system.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn build(&self, modules: &[&str], initrd_extra: &str) -> Output {
        let cfg = self.config(modules, initrd_extra);
        run_with_activator(&self.root(), &["build", "--config", cfg.to_str().unwrap()])
    }

    /// Assert the build failed with `needles` in its error and the store
    /// holds nothing.
    #[track_caller]
    fn refused(&self, out: Output, needles: &[&str]) -> String {
        let err = common::stderr(&out);
        assert!(!out.status.success(), "build should fail: {err}");
        for n in needles {
            assert!(err.contains(n), "error lacks {n:?}:\n{err}");
        }
        assert_store_empty(&self.root());
        err
    }
}

/// A stand-in activator: only its bytes go into the initrd.
fn fake_activator(dir: &Path) -> PathBuf {
    let p = dir.join("genboot-init");
    std::fs::write(&p, b"\x7fELF fake activator for tests that do not boot\n").unwrap();
    p
}

fn run_with_activator(root: &Path, args: &[&str]) -> Output {
    std::fs::create_dir_all(root).unwrap();
    let act = fake_activator(root.parent().unwrap_or(root));
    let mut c = common::genboot();
    c.env("GENBOOT_ACTIVATOR", act)
        .arg("--root")
        .arg(root)
        .args(args);
    c.output().unwrap()
}

fn assert_store_empty(root: &Path) {
    let store = root.join("var/lib/genboot/store");
    let left: Vec<_> = std::fs::read_dir(&store)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "store is not empty: {left:?}");
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

fn basic() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
)> {
    vec![
        ("drivers/virtio/virtio.ko", "virtio", "", &[]),
        (
            "drivers/virtio/virtio_ring.ko",
            "virtio_ring",
            "virtio",
            &[],
        ),
        (
            "drivers/block/virtio_blk.ko",
            "virtio_blk",
            "virtio,virtio_ring",
            &["alias=virtio:d00000002v*"],
        ),
    ]
}

#[test]
fn synthetic_tree_builds_with_closure_in_load_order() {
    let t = Tree::new(&basic());
    // Debian's links to the headers leave the tree; they stay out of the store.
    std::os::unix::fs::symlink("/usr/src/linux-headers-x", t.k.modules.join("build")).unwrap();
    std::os::unix::fs::symlink("/usr/src/linux-headers-x", t.k.modules.join("source")).unwrap();
    let out = t.build(&["virtio-blk", "ext4"], "compression = \"none\"");
    assert!(out.status.success(), "{}", common::stderr(&out));
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
fn compressed_modules_are_read() {
    let t = Tree::new(&basic());
    for (tool, ext) in [("xz", "xz"), ("zstd", "zst"), ("gzip", "gz")] {
        let p = t.k.modules.join("kernel/drivers/virtio/virtio.ko");
        let mut c = Command::new(tool);
        if tool == "xz" {
            c.arg("--check=crc32");
        }
        assert!(c
            .arg("-q")
            .arg("-k")
            .arg("-f")
            .arg(&p)
            .status()
            .unwrap()
            .success());
        std::fs::remove_file(&p).unwrap();
        let files = index::walk(&t.k.modules).unwrap();
        let idx = ModuleIndex::read(&t.k.modules, &t.k.release, &files).unwrap();
        assert_eq!(
            idx.modules["virtio"].path,
            format!("kernel/drivers/virtio/virtio.ko.{ext}")
        );
        // Back to plain for the next format.
        let packed = p.with_extension(format!("ko.{ext}"));
        let d = Command::new(tool)
            .arg("-d")
            .arg("-q")
            .arg("-f")
            .arg(&packed)
            .status()
            .unwrap();
        assert!(d.success());
    }
}

#[test]
fn mismatched_vermagic_is_refused_naming_the_file() {
    let t = Tree::new(&basic());
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
fn truncated_module_is_refused_naming_the_file() {
    let t = Tree::new(&basic());
    let real = std::fs::read(
        kernel(GENERIC)
            .modules
            .join("kernel/drivers/block/virtio_blk.ko"),
    )
    .unwrap();
    t.write("drivers/block/virtio_blk.ko", &real[..real.len() / 2]);
    t.refused(
        t.build(&["virtio_blk"], ""),
        &["kernel/drivers/block/virtio_blk.ko", "truncated"],
    );
}

#[test]
fn corrupt_xz_module_is_refused_naming_the_file() {
    let t = Tree::new(&basic());
    let p = t.k.modules.join("kernel/drivers/virtio/virtio_ring.ko");
    assert!(Command::new("xz")
        .arg("--check=crc32")
        .arg("-q")
        .arg(&p)
        .status()
        .unwrap()
        .success());
    let xz = p.with_extension("ko.xz");
    let mut bytes = std::fs::read(&xz).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 8] {
        *b ^= 0x5a;
    }
    std::fs::write(&xz, bytes).unwrap();
    t.refused(t.build(&["virtio_blk"], ""), &["virtio_ring.ko.xz", "xz"]);
}

#[test]
fn unknown_module_is_refused_listing_the_closest_names() {
    let t = Tree::new(&basic());
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
    let t = Tree::new(&[
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
    let t = Tree::new(&[("a/one.ko", "one", "nothere", &[])]);
    t.refused(t.build(&["one"], ""), &["kernel/a/one.ko", "\"nothere\""]);
}

#[test]
fn missing_firmware_warns_and_strict_refuses() {
    let mut mods = basic();
    mods.push(("net/nic.ko", "nic", "", &["firmware=vendor/nic.bin"]));
    let t = Tree::new(&mods);
    let out = t.build(&["nic"], "");
    assert!(out.status.success(), "{}", common::stderr(&out));
    let err = common::stderr(&out);
    assert!(
        err.contains("warning: firmware vendor/nic.bin named by module nic"),
        "{err}"
    );

    let t = Tree::new(&mods);
    t.refused(
        t.build(&["nic"], "strict_firmware = true"),
        &["vendor/nic.bin", "nic", "strict_firmware"],
    );
}

#[test]
fn present_firmware_goes_into_the_initrd() {
    let mut mods = basic();
    mods.push(("net/nic.ko", "nic", "", &["firmware=vendor/nic.bin"]));
    let t = Tree::new(&mods);
    let fw = t.dir.path().join("sys/lib/firmware/vendor");
    std::fs::create_dir_all(&fw).unwrap();
    std::fs::write(fw.join("nic.bin"), b"FIRMWARE-BYTES").unwrap();
    let out = t.build(&["nic"], "compression = \"none\"\nstrict_firmware = true");
    assert!(out.status.success(), "{}", common::stderr(&out));
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

#[test]
fn kernel_image_that_is_not_a_bzimage_is_refused() {
    let t = Tree::new(&basic());
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
    let t = Tree::new(&basic());
    let cfg = t.config(&["virtio_blk"], "activator = \"/nonexistent/genboot-init\"");
    let out = common::run(&t.root(), &["build", "--config", cfg.to_str().unwrap()]);
    t.refused(out, &["/nonexistent/genboot-init", "qemu/build-activator"]);
}

#[test]
fn warm_build_reuses_objects_and_notices_a_changed_module() {
    let t = Tree::new(&basic());
    let first = t.build(&["virtio_blk"], "");
    assert!(first.status.success(), "{}", common::stderr(&first));
    let second = t.build(&["virtio_blk"], "");
    assert_eq!(common::stdout(&first), common::stdout(&second));
    // Change a module's contents (and so its size): a new object.
    t.module("drivers/virtio/virtio.ko", "virtio", "", &["alias=changed"]);
    let third = t.build(&["virtio_blk"], "");
    assert!(third.status.success());
    assert_ne!(common::stdout(&first), common::stdout(&third));
}

#[test]
fn cached_build_rebuilds_an_object_that_was_deleted_from_the_store() {
    let t = Tree::new(&basic());
    let first = t.build(&["virtio_blk"], "");
    assert!(first.status.success(), "{}", common::stderr(&first));
    let store = t.root().join("var/lib/genboot/store");
    let initrd = only_object(&store, "initrd-");
    genboot::fsutil::remove_tree(&initrd).unwrap();
    let second = t.build(&["virtio_blk"], "");
    assert!(second.status.success(), "{}", common::stderr(&second));
    assert_eq!(common::stdout(&first), common::stdout(&second));
    assert!(initrd.join("initrd").is_file(), "the initrd object is back");
}
