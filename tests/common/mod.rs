//! Shared helpers of the integration tests: the real test kernels, the real
//! `genboot` binary, temporary system trees.
#![allow(dead_code)]

pub mod qemu;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const CLOUD: &str = "linux-image-6.1.0-47-cloud-amd64";
pub const GENERIC: &str = "linux-image-6.1.0-50-amd64";

/// A Debian kernel package unpacked by `tools/fetch-kernels`.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub package: String,
    pub release: String,
    pub image: PathBuf,
    pub modules: PathBuf,
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

/// The `genboot` binary built for this test run, told where the activator
/// is when it has been built.
pub fn genboot() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_genboot"));
    if std::env::var_os("GENBOOT_ACTIVATOR").is_none() {
        if let Some(p) = built_activator() {
            c.env("GENBOOT_ACTIVATOR", p);
        }
    }
    c
}

/// Run genboot with `args` below `root`.
pub fn run(root: &Path, args: &[&str]) -> Output {
    let mut c = genboot();
    c.arg("--root").arg(root).args(args);
    c.output().expect("genboot runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert success and return stdout.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "genboot failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
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

fn built_activator() -> Option<PathBuf> {
    ["x86_64-unknown-linux-musl", "x86_64-unknown-linux-gnu"]
        .iter()
        .map(|t| repo().join(format!("target/{t}/release-init/genboot-init")))
        .find(|p| p.exists())
}
