//! Building a generation from a configuration: the kernel object, the
//! kernel-modules and initrd objects, and the generation object holding
//! `boot.json` and links to them.

use crate::bootspec::{BootJson, BootspecV1, GenbootV1, RootSpec};
use crate::config::SystemConfig;
use crate::kernel;
use crate::state::STORE_DIR;
use crate::store::{BuildOptions, Store, StoreError, StorePath};
use genboot_init::storehash::SELF_MASK;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Kernel(#[from] kernel::KernelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {what}\nHint: {hint}")]
    Input {
        path: PathBuf,
        what: String,
        hint: String,
    },
}

/// Format version of generation objects (`org.genboot.v1.format`).
pub const GENERATION_FORMAT: u32 = 1;

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub generation: StorePath,
    pub kernel: StorePath,
    pub initrd: Option<StorePath>,
    pub kernel_modules: Option<StorePath>,
    pub boot: BootJson,
}

/// Build the generation for `cfg` into `store`.
pub fn build(store: &Store, cfg: &SystemConfig) -> Result<Built, BuildError> {
    let info = kernel::inspect(&cfg.kernel.image)?;
    let kver = &info.release;
    let kernel = store.build(&format!("linux-{kver}"), BuildOptions::default(), |dir| {
        std::fs::copy(&cfg.kernel.image, dir.join("bzImage")).map(|_| ())
    })?;
    assemble(store, cfg, kver, kernel, None, None)
}

/// The kernel command line a generation boots with, except `init=`.
pub fn kernel_params(cfg: &SystemConfig) -> Vec<String> {
    let mut p = vec![
        format!("root={}", cfg.root.device),
        format!("rootfstype={}", cfg.root.fstype),
    ];
    let mut flags: Vec<&str> = Vec::new();
    let mut rw = "rw";
    for o in cfg.root.options.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" | "rw" => rw = o,
            other => flags.push(other),
        }
    }
    p.push(rw.to_string());
    if !flags.is_empty() {
        p.push(format!("rootflags={}", flags.join(",")));
    }
    p.extend(cfg.kernel.params.iter().cloned());
    p
}

/// Write the generation object from its parts.
pub fn assemble(
    store: &Store,
    cfg: &SystemConfig,
    kver: &str,
    kernel: StorePath,
    initrd: Option<StorePath>,
    kernel_modules: Option<StorePath>,
) -> Result<Built, BuildError> {
    let name = format!("genboot-system-{kver}");
    let mask = std::str::from_utf8(SELF_MASK).expect("mask is ASCII");
    let toplevel = format!("{STORE_DIR}/{mask}-{name}");
    let boot = BootJson {
        bootspec: BootspecV1 {
            system: "x86_64-linux".into(),
            init: format!("{toplevel}/init"),
            initrd: initrd.as_ref().map(|i| format!("{}/initrd", i.boot_path())),
            kernel: format!("{}/bzImage", kernel.boot_path()),
            kernel_params: kernel_params(cfg),
            label: cfg.system.label.clone(),
            toplevel: toplevel.clone(),
        },
        genboot: GenbootV1 {
            format: GENERATION_FORMAT,
            kernel_release: kver.to_string(),
            initrd_modules: cfg.initrd.modules.clone(),
            kernel_modules: kernel_modules.as_ref().map(StorePath::boot_path),
            root: RootSpec {
                device: cfg.root.device.clone(),
                fstype: cfg.root.fstype.clone(),
                options: cfg.root.options.clone(),
            },
            stage2_init: cfg.system.init.clone(),
            tries: cfg.boot.tries,
        },
    };
    let bytes = boot.to_bytes();
    let opts = BuildOptions {
        self_refs: true,
        external_links: &["init"],
    };
    let generation = store.build(&name, opts, |dir| -> std::io::Result<()> {
        use std::os::unix::fs::symlink;
        std::fs::write(dir.join("boot.json"), &bytes)?;
        symlink(&cfg.system.init, dir.join("init"))?;
        symlink(
            format!("../{}/bzImage", kernel.base_name()),
            dir.join("kernel"),
        )?;
        if let Some(i) = &initrd {
            symlink(format!("../{}/initrd", i.base_name()), dir.join("initrd"))?;
        }
        if let Some(m) = &kernel_modules {
            symlink(format!("../{}", m.base_name()), dir.join("kernel-modules"))?;
        }
        Ok(())
    })?;
    // What landed names itself by its real hash.
    let real = |s: String| s.replace(mask, &generation.hash);
    let mut boot = boot;
    boot.bootspec.init = real(boot.bootspec.init);
    boot.bootspec.toplevel = real(boot.bootspec.toplevel);
    Ok(Built {
        generation,
        kernel,
        initrd,
        kernel_modules,
        boot,
    })
}
