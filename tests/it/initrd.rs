//! The initrd and the generation: reproducible bytes, the kernel itself as
//! the judge of every compression (a direct QEMU boot that reaches
//! `/init`), `cpio` as the judge of the archive, and the exact `boot.json`.

use crate::support::vm::{Opts, Vm};
use crate::support::{self, fake_activator, kernel, set_mtime, Kernel, CLOUD, GENERIC};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const WANTED: [&str; 4] = ["virtio_blk", "virtio_pci", "ext4", "vfat"];

/// A system.toml for `k` in `dir`, with `initrd_extra` in `[initrd]`.
fn config(
    dir: &Path,
    k: &Kernel,
    modules: &[&str],
    initrd_extra: &str,
    params: &[&str],
) -> PathBuf {
    let list = |v: &[&str]| {
        v.iter()
            .map(|m| format!("{m:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "[kernel]\nimage = {:?}\nmodules = {:?}\nparams = [{}]\n\n[initrd]\nmodules = [{}]\n{initrd_extra}\n\n[root]\ndevice = \"PARTUUID=6e6f6f74-0000-4000-8000-000000000002\"\nfstype = \"ext4\"\n\n[system]\nlabel = \"Test system\"\ninit = \"/sbin/init\"\n\n[boot]\ntries = 3\n",
        k.image,
        k.modules,
        list(params),
        list(modules),
    );
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("system.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn build(root: &Path, cfg: &Path, activator: &Path) -> Output {
    let mut c = support::genboot();
    c.env("GENBOOT_ACTIVATOR", activator)
        .arg("--root")
        .arg(root)
        .args(["build", "--config"])
        .arg(cfg);
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "genboot build failed: {}",
        support::stderr(&o)
    );
    o
}

/// The generation directory a build printed, and its links resolved.
struct Gen {
    dir: PathBuf,
}

impl Gen {
    fn of(o: &Output) -> Gen {
        Gen {
            dir: PathBuf::from(support::stdout(o).trim()),
        }
    }
    fn link(&self, name: &str) -> String {
        std::fs::read_link(self.dir.join(name))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
    fn initrd(&self) -> PathBuf {
        self.dir.join("initrd")
    }
    fn kernel(&self) -> PathBuf {
        self.dir.join("kernel")
    }
}

#[test]
fn same_inputs_give_byte_identical_initrds_in_different_roots_and_times() {
    let k = kernel(CLOUD);
    let t = tempfile::tempdir().unwrap();
    let act = fake_activator(t.path());
    let cfg = config(&t.path().join("cfg"), &k, &WANTED, "", &["console=ttyS0"]);
    // The inputs this test writes carry other times for the second build
    // (explicit mtimes instead of waiting for the clock to move on).
    set_mtime(&act, 1_000_000_000);
    set_mtime(&cfg, 1_000_000_000);
    let a = Gen::of(&build(&t.path().join("a"), &cfg, &act));
    set_mtime(&act, 1_700_000_000);
    set_mtime(&cfg, 1_700_000_000);
    let b = Gen::of(&build(&t.path().join("b"), &cfg, &act));
    assert_eq!(
        std::fs::read(a.initrd()).unwrap(),
        std::fs::read(b.initrd()).unwrap()
    );
    for link in ["initrd", "kernel", "kernel-modules"] {
        assert_eq!(a.link(link), b.link(link), "{link}");
    }
    assert_eq!(
        a.dir.file_name(),
        b.dir.file_name(),
        "the same generation hash in both roots"
    );

    // Another kernel parameter: a new generation sharing the initrd.
    let cfg2 = config(
        &t.path().join("cfg2"),
        &k,
        &WANTED,
        "",
        &["console=ttyS0", "quiet"],
    );
    let c = Gen::of(&build(&t.path().join("a"), &cfg2, &act));
    assert_ne!(a.dir, c.dir);
    assert_eq!(a.link("initrd"), c.link("initrd"));
    assert_eq!(a.link("kernel-modules"), c.link("kernel-modules"));

    // Another module set: another initrd.
    let cfg3 = config(
        &t.path().join("cfg3"),
        &k,
        &["virtio_blk"],
        "",
        &["console=ttyS0"],
    );
    let d = Gen::of(&build(&t.path().join("a"), &cfg3, &act));
    assert_ne!(a.link("initrd"), d.link("initrd"));
    assert_eq!(a.link("kernel-modules"), d.link("kernel-modules"));
}

#[test]
fn cpio_reads_the_archive_sorted_with_owner_root_and_console() {
    let k = kernel(CLOUD);
    let t = tempfile::tempdir().unwrap();
    let act = fake_activator(t.path());
    let cfg = config(
        &t.path().join("cfg"),
        &k,
        &WANTED,
        "compression = \"none\"",
        &[],
    );
    let g = Gen::of(&build(&t.path().join("root"), &cfg, &act));
    let list = |flags: &str| {
        let o = Command::new("cpio")
            .arg(flags)
            .stdin(std::fs::File::open(g.initrd()).unwrap())
            .output()
            .expect("cpio runs (apt-get install cpio)");
        assert!(
            o.status.success(),
            "cpio {flags}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let names: Vec<String> = list("-it").lines().map(str::to_string).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are sorted");
    let kmods = format!(
        "lib/modules/{}/kernel/drivers/block/virtio_blk.ko",
        k.release
    );
    for want in [
        "init",
        "dev",
        "dev/console",
        "etc/genboot/initrd.manifest",
        kmods.as_str(),
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let long = list("-itvn");
    for line in long.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((f[2], f[3]), ("0", "0"), "owner of {line}");
    }
    let console = long.lines().find(|l| l.ends_with(" dev/console")).unwrap();
    assert!(console.starts_with("crw-------"), "{console}");
    assert!(console.contains("5,"), "{console}");
    let init = long.lines().find(|l| l.ends_with(" init")).unwrap();
    assert!(init.starts_with("-rwxr-xr-x"), "{init}");

    // The manifest lists the modules in a load order with their paths: each
    // after the modules it waits for, which are its dependencies.
    let data = std::fs::read(g.initrd()).unwrap();
    let text = String::from_utf8_lossy(&data);
    let at = text.find("genboot-initrd 1\n").unwrap();
    let end = at + text[at..].find('\0').unwrap();
    let m = genboot_format::manifest::Manifest::parse(&text[at..end]).unwrap();
    assert_eq!(m.kernel_release, k.release);
    let names: Vec<&str> = m.modules.iter().map(|x| x.name.as_str()).collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("virtio") < pos("virtio_blk"));
    assert!(pos("virtio_ring") < pos("virtio_blk"));
    assert!(pos("fat") < pos("vfat"));
    for x in &m.modules {
        assert!(x.after.iter().all(|a| pos(a) < pos(&x.name)), "{x:?}");
    }
    let vfat = m.modules.iter().find(|x| x.name == "vfat").unwrap();
    assert_eq!(vfat.after, ["fat"]);
    assert!(
        !names.contains(&"ext4"),
        "ext4 is built into the cloud kernel"
    );
    assert!(m
        .aliases
        .iter()
        .any(|(a, n)| n == "virtio_blk" && a.starts_with("virtio:d00000002")));
}

#[test]
fn boot_json_matches_the_golden_file() {
    let k = kernel(CLOUD);
    let t = tempfile::tempdir().unwrap();
    let act = fake_activator(t.path());
    let cfg = config(&t.path().join("cfg"), &k, &WANTED, "", &["console=ttyS0"]);
    let g = Gen::of(&build(&t.path().join("root"), &cfg, &act));
    let got = std::fs::read_to_string(g.dir.join("boot.json")).unwrap();
    let golden = support::repo().join("tests/golden/boot.json");
    if std::env::var_os("GENBOOT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden)
        .expect("tests/golden/boot.json exists (GENBOOT_UPDATE_GOLDEN=1 writes it)");
    assert_eq!(got, want, "boot.json differs from {}", golden.display());
}

// ------------------------------------------------------------ QEMU ----

/// Boot `kernel` + `initrd` directly under TCG and wait for the activator's
/// first line; the console log of a failed boot is kept in
/// `target/test-logs/<name>.log`.
fn boot_reaches_init(name: &str, kernel: &Path, initrd: &Path) {
    let budget = Duration::from_secs(180);
    let mut vm = Vm::start(Opts::direct(name, kernel, initrd, "", budget));
    let seen = vm.wait_for("genboot-init", budget);
    if seen.contains("Initramfs unpacking failed") || seen.contains("junk in compressed archive") {
        vm.fail("the kernel did not unpack the initrd cleanly");
    }
}

fn boot_test(package: &str, compression: &str) {
    let k = kernel(package);
    let t = tempfile::tempdir().unwrap();
    let cfg = config(
        &t.path().join("cfg"),
        &k,
        &WANTED,
        &format!("compression = {compression:?}"),
        &[],
    );
    let g = Gen::of(&build(&t.path().join("root"), &cfg, &support::activator()));
    let flavour = if package == CLOUD { "cloud" } else { "generic" };
    boot_reaches_init(
        &format!("boot-{flavour}-{compression}"),
        &g.kernel(),
        &g.initrd(),
    );
}

macro_rules! boots {
    ($($name:ident: $package:expr, $compression:expr;)*) => {$(
        #[test]
        fn $name() {
            boot_test($package, $compression);
        }
    )*};
}

boots! {
    generic_kernel_boots_a_zstd_initrd_to_init: GENERIC, "zstd";
    generic_kernel_boots_a_gzip_initrd_to_init: GENERIC, "gzip";
    generic_kernel_boots_an_xz_initrd_to_init: GENERIC, "xz";
    generic_kernel_boots_an_uncompressed_initrd_to_init: GENERIC, "none";
    cloud_kernel_boots_a_zstd_initrd_to_init: CLOUD, "zstd";
    cloud_kernel_boots_a_gzip_initrd_to_init: CLOUD, "gzip";
    cloud_kernel_boots_an_xz_initrd_to_init: CLOUD, "xz";
    cloud_kernel_boots_an_uncompressed_initrd_to_init: CLOUD, "none";
}

/// CPU microcode goes in front of the compressed archive as an
/// uncompressed one (issue 13): the kernel reads it early and then still
/// unpacks the rest. Judged by the kernel itself: the activator starts.
#[test]
fn an_initrd_behind_early_microcode_boots_to_init() {
    let mut k = kernel(CLOUD);
    let t = tempfile::tempdir().unwrap();
    // The kernel's module tree through a link, firmware beside it.
    let sys = t.path().join("sys/lib");
    std::fs::create_dir_all(sys.join("modules")).unwrap();
    std::os::unix::fs::symlink(&k.modules, sys.join("modules").join(&k.release)).unwrap();
    k.modules = sys.join("modules").join(&k.release);
    for (p, d) in [
        (
            "firmware/intel-ucode/06-55-04",
            &b"not really microcode"[..],
        ),
        ("firmware/amd-ucode/microcode_amd_fam17h.bin", b"nor this"),
    ] {
        let p = sys.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, d).unwrap();
    }
    let cfg = config(&t.path().join("cfg"), &k, &WANTED, "", &[]);
    let g = Gen::of(&build(&t.path().join("root"), &cfg, &support::activator()));
    let initrd = std::fs::read(g.initrd()).unwrap();
    assert!(
        initrd.starts_with(b"070701"),
        "the early archive comes first"
    );
    let name: &[u8] = b"kernel/x86/microcode/GenuineIntel.bin";
    assert!(
        initrd.windows(name.len()).any(|w| w == name),
        "GenuineIntel.bin is in the early archive"
    );
    boot_reaches_init("boot-cloud-microcode", &g.kernel(), &g.initrd());
}
