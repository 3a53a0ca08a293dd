//! Kernel module trees as distributions ship them (`.ko`, `.ko.xz`,
//! `.ko.zst`, `.ko.gz`, often without `modules.dep`): the index read from
//! each module's ELF `.modinfo` section ([`modinfo`], [`index`]), the initrd
//! closure in load order ([`closure`]), and the kmod index files that stock
//! `modprobe` reads in stage 2 ([`kmod`]).
//!
//! Module names treat `-` and `_` as the same; genboot keeps them with `_`
//! ([`genboot_format::module_name`] has the rules, shared with genboot-init).

pub mod autodetect;
pub mod closure;
pub mod firmware;
pub mod index;
pub mod input;
pub mod kmod;
pub mod modinfo;

pub use closure::{closure, Closure};
pub use index::{ModuleIndex, ModuleInfo};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error("cannot read the module tree {path}: {cause}")]
    Tree {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot read kernel module {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("kernel module {path} cannot be decompressed ({format}): {why}")]
    Decompress {
        path: PathBuf,
        format: &'static str,
        why: String,
    },
    #[error("kernel module {path} cannot be used: {why}")]
    NotAModule { path: PathBuf, why: String },
    #[error("kernel module {path} is not a valid ELF module: {why}")]
    BadElf { path: PathBuf, why: String },
    #[error("kernel module {path}: {field} {value:?} is not allowed: {why}")]
    BadModinfo {
        path: PathBuf,
        field: &'static str,
        value: String,
        why: String,
    },
    #[error("kernel module {path} has vermagic {found:?}, but the kernel is {release}")]
    Vermagic {
        path: PathBuf,
        found: String,
        release: String,
    },
    #[error("cannot read {path}: {cause}")]
    Builtin {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("[initrd] modules: there is no module {name:?} in {tree} (not a module file, not built in, not an alias){closest}", closest = closest_text(.closest))]
    Unknown {
        name: String,
        tree: PathBuf,
        closest: Vec<String>,
    },
    #[error("kernel module {path} depends on {dep:?}, which is neither a module in the tree nor built in")]
    MissingDependency { path: PathBuf, dep: String },
    #[error("[initrd] autodetect: {what}")]
    Autodetect { what: String },
    #[error("kernel modules depend on each other in a cycle: {}", .cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },
    #[error("firmware {file} named by module {module} is not in {dir}")]
    MissingFirmware {
        module: String,
        file: String,
        dir: PathBuf,
    },
    #[error("kernel module {module} ({}) names firmware={file:?} in .modinfo, which genboot refuses: {why}", .path.display())]
    UnsafeFirmware {
        module: String,
        /// The module file.
        path: PathBuf,
        /// The `firmware=` value.
        file: String,
        dir: PathBuf,
        why: String,
    },
}

impl crate::hint::Hint for ModulesError {
    fn hint(&self) -> Option<String> {
        const REINSTALL: &str = "the file is corrupt or truncated; reinstall the kernel package";
        Some(match self {
            ModulesError::Tree { .. } => "[kernel] modules must name the kernel's module directory, e.g. /lib/modules/6.1.0-50-amd64".into(),
            ModulesError::Read { .. } | ModulesError::Builtin { .. } => return None,
            ModulesError::Decompress { .. } | ModulesError::BadElf { .. } => REINSTALL.into(),
            ModulesError::NotAModule { .. } => "module files are regular files of at most 128 MiB; remove this one from the module tree".into(),
            ModulesError::BadModinfo { .. } => "the module is broken or hostile; remove it from the module tree (or rebuild it with a proper name and aliases)".into(),
            ModulesError::Vermagic { release, .. } => format!("the module tree and [kernel] image belong to different kernels; point [kernel] modules at /lib/modules/{release}"),
            ModulesError::Unknown { .. } => "fix the name in [initrd] modules".into(),
            ModulesError::Autodetect { .. } => "list the root device's driver and file system in [initrd] modules, and leave autodetect out".into(),
            ModulesError::MissingDependency { .. } => {
                "the module tree is incomplete; reinstall the kernel package".into()
            }
            ModulesError::Cycle { .. } => {
                "the module tree is broken; reinstall the kernel package".into()
            }
            ModulesError::MissingFirmware { .. } => "install the firmware package that ships it, or set [initrd] strict_firmware = false to build without it".into(),
            ModulesError::UnsafeFirmware { dir, .. } => format!("firmware names are relative to {} and must stay inside it; the module is broken or hostile: remove it from the module tree (or fix the firmware files), or set [initrd] strict_firmware = false to build without this firmware", dir.display()),
        })
    }
}

fn closest_text(closest: &[String]) -> String {
    if closest.is_empty() {
        String::new()
    } else {
        format!("; closest names: {}", closest.join(", "))
    }
}
