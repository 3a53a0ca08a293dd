//! Module index, closure and kmod index files, judged by kmod itself on the
//! real Debian kernels; and the bad module trees that need real tools or a
//! real module (compressed, truncated). The other bad trees, on synthetic
//! inputs alone, are in the fast tier (`tests/fast/modules.rs`).

use crate::support;
use crate::support::{
    basic_modules, kernel, only_object, run_with_activator, Kernel, SyntheticTree, CLOUD, DEB612,
    GENERIC,
};
use genboot::modules::{self, index, ModuleIndex};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const WANTED: [&str; 4] = ["virtio_blk", "virtio_pci", "ext4", "vfat"];

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
    // The configuration lies outside the root: one inside it would read its
    // paths (the host's kernel) inside the root.
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = support::write_config(cfg_dir.path(), k, &WANTED, "");
    let out = run_with_activator(root.path(), &["build", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", support::stderr(&out));
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

#[test]
fn compressed_modules_are_read() {
    let t = SyntheticTree::new(&basic_modules());
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
fn truncated_module_is_refused_naming_the_file() {
    let t = SyntheticTree::new(&basic_modules());
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
    let t = SyntheticTree::new(&basic_modules());
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
