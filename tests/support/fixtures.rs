//! Inputs of the tests: the real Debian test kernels, configurations,
//! system trees with generations in their store, the activator; and for
//! the fast tier, synthetic ones (a bzImage header with an EFI stub,
//! `.ko` files that hold only a `.modinfo`) that need no kernel package.

use super::{genboot, ok, repo, run, stderr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const CLOUD: &str = "linux-image-6.1.0-47-cloud-amd64";
pub const GENERIC: &str = "linux-image-6.1.0-50-amd64";
/// Debian 12's 6.12 kernel from bookworm-security: `.ko.xz` modules, and
/// symbol namespaces that are not upper-case (`xhci`, `SPI_PXA2xx`).
pub const DEB612: &str = "linux-image-6.12.117+deb12-amd64";

/// A Debian kernel package unpacked by `tools/fetch-kernels` (or a
/// synthetic kernel, [`SyntheticTree`]).
#[derive(Debug, Clone)]
pub struct Kernel {
    pub package: String,
    pub release: String,
    pub image: PathBuf,
    pub modules: PathBuf,
}

/// The unpacked test kernel `package`; panics with how to get it if missing.
pub fn kernel(package: &str) -> Kernel {
    let cache = std::env::var_os("GENBOOT_KERNEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/kernels"));
    let dir = cache.join(package);
    let modules_root = dir.join("lib/modules");
    let release = std::fs::read_dir(&modules_root)
        .ok()
        .and_then(|mut rd| rd.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .unwrap_or_else(|| {
            panic!(
                "test kernel {package} is not unpacked in {}; run `tools/fetch-kernels` (or `tools/install-deps`) first",
                cache.display()
            )
        });
    Kernel {
        package: package.to_string(),
        image: dir.join(format!("boot/vmlinuz-{release}")),
        modules: modules_root.join(&release),
        release,
    }
}

/// A system.toml for `k`, written into `dir`; `extra` is appended.
pub fn write_config(dir: &Path, k: &Kernel, modules: &[&str], extra: &str) -> PathBuf {
    let mods: Vec<String> = modules.iter().map(|m| format!("{m:?}")).collect();
    let text = format!(
        r#"[kernel]
image = "{}"
modules = "{}"
params = ["console=ttyS0"]

[initrd]
modules = [{}]

[root]
device = "PARTUUID=6e6f6f74-0000-4000-8000-000000000002"
fstype = "ext4"

[system]
label = "Test system"
init = "/sbin/init"
{extra}"#,
        k.image.display(),
        k.modules.display(),
        mods.join(", ")
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("system.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The static genboot-init binary (`$GENBOOT_ACTIVATOR`, else the default
/// output of `tools/build-activator`); panics with how to build it if missing.
pub fn activator() -> PathBuf {
    if let Some(p) = std::env::var_os("GENBOOT_ACTIVATOR") {
        return PathBuf::from(p);
    }
    built_activator().unwrap_or_else(|| panic!("genboot-init is not built; run `tools/build-activator` (it prints the path; or set GENBOOT_ACTIVATOR)"))
}

pub(super) fn built_activator() -> Option<PathBuf> {
    ["x86_64-unknown-linux-musl", "x86_64-unknown-linux-gnu"]
        .iter()
        .map(|t| repo().join(format!("target/{t}/release-init/genboot-init")))
        .find(|p| p.exists())
}

/// Fixed bytes standing in for the activator where nothing boots: only
/// its bytes go into the initrd.
pub fn fake_activator(dir: &Path) -> PathBuf {
    let p = dir.join("genboot-init");
    std::fs::write(&p, b"\x7fELF fixed stand-in activator\n").unwrap();
    p
}

/// `genboot --root root ARGS` with the stand-in activator of
/// [`fake_activator`] (written beside `root`).
pub fn run_with_activator(root: &Path, args: &[&str]) -> Output {
    std::fs::create_dir_all(root).unwrap();
    let act = fake_activator(root.parent().unwrap_or(root));
    let mut c = genboot();
    c.env("GENBOOT_ACTIVATOR", act)
        .arg("--root")
        .arg(root)
        .args(args);
    c.output().unwrap()
}

/// The one store object of `store` whose name (after `<hash>-`) starts
/// with `prefix`.
#[track_caller]
pub fn only_object(store: &Path, prefix: &str) -> PathBuf {
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

/// The names in a directory (the store's objects and staging
/// directories), sorted; none when it does not exist.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The names in the store below `root`.
pub fn store_objects(root: &Path) -> Vec<String> {
    dir_names(&root.join("var/lib/genboot/store"))
}

/// `genboot --root root list --json`.
pub fn list_json(root: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(run(root, &["list", "--json"]))).unwrap()
}

#[track_caller]
pub fn assert_store_empty(root: &Path) {
    let left = store_objects(root);
    assert!(left.is_empty(), "store is not empty: {left:?}");
}

/// Every file below `dir` (names, link targets and contents), for "changes nothing" checks.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(base: &Path, p: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue; // lock and temporary names: not state
            }
            let path = e.path();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                out.push((rel + "/", Vec::new()));
                walk(base, &path, out);
            } else if meta.file_type().is_symlink() {
                out.push((
                    rel,
                    std::fs::read_link(&path)
                        .unwrap()
                        .display()
                        .to_string()
                        .into_bytes(),
                ));
            } else {
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

// ------------------------------------------------------------ synthetic ----

/// The release of the synthetic kernel.
pub const SYNTHETIC_RELEASE: &str = "6.1.0-0-synthetic";

/// A bzImage that genboot accepts as a kernel and nothing can boot: an
/// x86 boot header (`HdrS` at 0x202, the version string at 0x200 plus the
/// offset stored at 0x20E) inside a PE image with the EFI-application
/// subsystem, as a real EFI-stub kernel has both.
pub fn synthetic_bzimage(release: &str) -> Vec<u8> {
    let mut f = vec![0u8; 0x1000];
    let put =
        |f: &mut Vec<u8>, at: usize, bytes: &[u8]| f[at..at + bytes.len()].copy_from_slice(bytes);
    // DOS header: "MZ", e_lfanew = 0x40.
    put(&mut f, 0, b"MZ");
    put(&mut f, 0x3C, &0x40u32.to_le_bytes());
    // PE signature and COFF header: x86-64, no sections, a PE32+ optional
    // header with 16 data directories (240 bytes), executable image.
    put(&mut f, 0x40, b"PE\0\0");
    put(&mut f, 0x44, &0x8664u16.to_le_bytes());
    put(&mut f, 0x54, &240u16.to_le_bytes());
    put(&mut f, 0x56, &0x0206u16.to_le_bytes());
    // Optional header (PE32+) at 0x58.
    let opt = 0x58;
    put(&mut f, opt, &0x20Bu16.to_le_bytes());
    put(&mut f, opt + 32, &0x1000u32.to_le_bytes()); // section alignment
    put(&mut f, opt + 36, &0x200u32.to_le_bytes()); // file alignment
    put(&mut f, opt + 56, &0x1000u32.to_le_bytes()); // size of image
    put(&mut f, opt + 60, &0x200u32.to_le_bytes()); // size of headers
    put(&mut f, opt + 68, &10u16.to_le_bytes()); // IMAGE_SUBSYSTEM_EFI_APPLICATION
    put(&mut f, opt + 108, &16u32.to_le_bytes()); // data directories
                                                  // The x86 boot protocol's setup header.
    put(&mut f, 0x1F1, &[1]); // setup sectors
    put(&mut f, 0x1FE, &0xAA55u16.to_le_bytes());
    put(&mut f, 0x202, b"HdrS");
    put(&mut f, 0x206, &0x020Fu16.to_le_bytes()); // protocol 2.15
    put(&mut f, 0x20E, &(0x400u16 - 0x200).to_le_bytes());
    let version = format!("{release} (genboot test) #1 SMP synthetic\0");
    put(&mut f, 0x400, version.as_bytes());
    f
}

/// A minimal ELF64 relocatable object whose `.modinfo` holds `info`.
pub fn fake_ko(info: &[&str]) -> Vec<u8> {
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

/// A synthetic module: (path below `kernel/`, name, depends, extra
/// `.modinfo` keys).
pub type FakeModule = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

/// virtio, virtio_ring and virtio_blk (with its alias), as in a real tree.
pub fn basic_modules() -> Vec<FakeModule> {
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

/// A synthetic kernel ([`synthetic_bzimage`]) and module tree below
/// `<tmp>/sys/lib/modules/<release>`, next to a system.toml and a root
/// `<tmp>/root` to build into. No kernel package, no root, no tool.
pub struct SyntheticTree {
    pub dir: tempfile::TempDir,
    pub k: Kernel,
}

impl SyntheticTree {
    pub fn new(mods: &[FakeModule]) -> SyntheticTree {
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("sys/lib/modules").join(SYNTHETIC_RELEASE);
        std::fs::create_dir_all(&modules).unwrap();
        std::fs::write(modules.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        let image = dir.path().join("sys/boot/vmlinuz");
        std::fs::create_dir_all(image.parent().unwrap()).unwrap();
        std::fs::write(&image, synthetic_bzimage(SYNTHETIC_RELEASE)).unwrap();
        let t = SyntheticTree {
            k: Kernel {
                package: "synthetic".into(),
                release: SYNTHETIC_RELEASE.into(),
                image,
                modules,
            },
            dir,
        };
        for (path, name, deps, extra) in mods {
            t.module(path, name, deps, extra);
        }
        t
    }

    /// Write a module `kernel/<path>` with a matching vermagic.
    pub fn module(&self, path: &str, name: &str, deps: &str, extra: &[&str]) {
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

    pub fn write(&self, path: &str, bytes: &[u8]) {
        let p = self.k.modules.join("kernel").join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn config(&self, modules: &[&str], initrd_extra: &str) -> PathBuf {
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

    pub fn build(&self, modules: &[&str], initrd_extra: &str) -> Output {
        let cfg = self.config(modules, initrd_extra);
        run_with_activator(&self.root(), &["build", "--config", cfg.to_str().unwrap()])
    }

    /// Assert the build failed with `needles` in its error and the store
    /// holds nothing.
    #[track_caller]
    pub fn refused(&self, out: Output, needles: &[&str]) -> String {
        let err = stderr(&out);
        assert!(!out.status.success(), "build should fail: {err}");
        for n in needles {
            assert!(err.contains(n), "error lacks {n:?}:\n{err}");
        }
        assert_store_empty(&self.root());
        err
    }
}

// ---------------------------------------------------------- system trees ----

/// A system tree below a temporary directory, whose store starts with the
/// objects of the three test kernels ([`template`]).
pub struct SystemTree {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    configs: u32,
}

/// A store with the objects of the three test kernels (built once per test
/// binary): building a generation copies and hashes a whole module tree
/// (~400 MB), so every `SystemTree` starts from hard links to these objects
/// and the build cache finds them.
fn template() -> &'static Path {
    static T: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        if let Ok(rd) = std::fs::read_dir(&base) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("esp-template-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = base.join(format!("esp-template-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let mut variant = kernel(GENERIC);
        let img = dir.join("vmlinuz-variant");
        let mut data = std::fs::read(&variant.image).unwrap();
        data.push(0);
        std::fs::write(&img, data).unwrap();
        variant.image = img;
        for (i, k) in [kernel(GENERIC), kernel(CLOUD), variant].iter().enumerate() {
            let cfg = write_config(&dir.join(format!("cfg{i}")), k, &["virtio_blk"], "");
            ok(run(&root, &["build", "--config", cfg.to_str().unwrap()]));
        }
        dir
    })
}

impl SystemTree {
    pub fn new() -> SystemTree {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let state = root.join("var/lib/genboot");
        std::fs::create_dir_all(&state).unwrap();
        let t = template().join("root/var/lib/genboot");
        for (what, link) in [("store", true), ("cache", false)] {
            let st = Command::new("cp")
                .arg(if link { "-al" } else { "-a" })
                .arg(t.join(what))
                .arg(&state)
                .status()
                .unwrap();
            assert!(st.success(), "cp {what} from the template");
        }
        SystemTree {
            tmp,
            root,
            configs: 0,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// A configuration for kernel `k` with `extra` TOML appended.
    pub fn config(&mut self, k: &Kernel, extra: &str) -> PathBuf {
        self.configs += 1;
        let dir = self.tmp.path().join(format!("cfg{}", self.configs));
        write_config(&dir, k, &["virtio_blk"], extra)
    }

    /// `genboot --root R <esp args> args`, no ESP given unless in `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        run(&self.root, args)
    }

    /// Like `run`, with env vars.
    pub fn run_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut c = genboot();
        c.arg("--root").arg(&self.root).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// A new generation (no ESP involved).
    pub fn switch(&mut self, k: &Kernel, extra: &str) {
        let cfg = self.config(k, extra);
        ok(self.run(&["switch", "--config", cfg.to_str().unwrap()]));
    }

    /// Set every profile link's date, so entries are the same in every run.
    pub fn fix_dates(&self) {
        let dir = self.root.join("var/lib/genboot/profiles");
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let st = Command::new("touch")
                .args(["-h", "-d", "@1795555200"])
                .arg(&p)
                .status()
                .unwrap();
            assert!(st.success());
        }
    }

    /// The store directory.
    pub fn store(&self) -> PathBuf {
        self.root.join("var/lib/genboot/store")
    }
}

/// A third kernel object: the generic kernel with one byte appended
/// (the boot header and EFI stub stay valid). Shared by every test.
pub fn third_kernel(_dir: &Path) -> Kernel {
    let mut k = kernel(GENERIC);
    k.image = template().join("vmlinuz-variant");
    k
}

/// Set `path`'s modification time to `secs` after the epoch (instead of
/// waiting for the clock to move on).
pub fn set_mtime(path: &Path, secs: u64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}
