//! Kernel module trees as distributions ship them (`.ko`, `.ko.xz`,
//! `.ko.zst`, `.ko.gz`, often without `modules.dep`): the index read from
//! each module's ELF `.modinfo` section ([`modinfo`], [`index`]), the initrd
//! closure in load order ([`closure`]), and the kmod index files that stock
//! `modprobe` reads in stage 2 ([`kmod`]).
//!
//! Module names treat `-` and `_` as the same; genboot keeps them with `_`
//! ([`genboot_format::module_name`] has the rules, shared with genboot-init).

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
    #[error("cannot read the module tree {path}: {source}\nHint: [kernel] modules must name the kernel's module directory, e.g. /lib/modules/6.1.0-50-amd64")]
    Tree {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read kernel module {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kernel module {path} cannot be decompressed ({format}): {why}\nHint: the file is corrupt or truncated; reinstall the kernel package")]
    Decompress {
        path: PathBuf,
        format: &'static str,
        why: String,
    },
    #[error("kernel module {path} cannot be used: {why}\nHint: module files are regular files of at most 128 MiB; remove this one from the module tree")]
    NotAModule { path: PathBuf, why: String },
    #[error("kernel module {path} is not a valid ELF module: {why}\nHint: the file is corrupt or truncated; reinstall the kernel package")]
    BadElf { path: PathBuf, why: String },
    #[error("kernel module {path}: {field} {value:?} is not allowed: {why}\nHint: the module is broken or hostile; remove it from the module tree (or rebuild it with a proper name and aliases)")]
    BadModinfo {
        path: PathBuf,
        field: &'static str,
        value: String,
        why: String,
    },
    #[error("kernel module {path} has vermagic {found:?}, but the kernel is {release}\nHint: the module tree and [kernel] image belong to different kernels; point [kernel] modules at /lib/modules/{release}")]
    Vermagic {
        path: PathBuf,
        found: String,
        release: String,
    },
    #[error("cannot read {path}: {source}")]
    Builtin {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("[initrd] modules: there is no module {name:?} in {tree} (not a module file, not built in, not an alias){closest}\nHint: fix the name in [initrd] modules", closest = closest_text(.closest))]
    Unknown {
        name: String,
        tree: PathBuf,
        closest: Vec<String>,
    },
    #[error("kernel module {path} depends on {dep:?}, which is neither a module in the tree nor built in\nHint: the module tree is incomplete; reinstall the kernel package")]
    MissingDependency { path: PathBuf, dep: String },
    #[error("kernel modules depend on each other in a cycle: {}\nHint: the module tree is broken; reinstall the kernel package", .cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },
    #[error("firmware {file} named by module {module} is not in {dir}\nHint: install the firmware package that ships it, or set [initrd] strict_firmware = false to build without it")]
    MissingFirmware {
        module: String,
        file: String,
        dir: PathBuf,
    },
    #[error("{}\nHint: firmware names are relative to {dir} and must stay inside it; the module is broken or hostile: remove it from the module tree (or fix the firmware files), or set [initrd] strict_firmware = false to build without this firmware", unsafe_firmware_text(.module, .path, .file, .why))]
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

impl ModulesError {
    /// The first line of the message, without the hint.
    pub fn summary(&self) -> String {
        match self {
            ModulesError::UnsafeFirmware {
                module,
                path,
                file,
                why,
                ..
            } => unsafe_firmware_text(module, path, file, why),
            other => other.to_string().lines().next().unwrap_or("").to_string(),
        }
    }
}

fn unsafe_firmware_text(module: &str, path: &std::path::Path, file: &str, why: &str) -> String {
    format!(
        "kernel module {module} ({}) names firmware={file:?} in .modinfo, which genboot refuses: {why}",
        path.display()
    )
}

fn closest_text(closest: &[String]) -> String {
    if closest.is_empty() {
        String::new()
    } else {
        format!("; closest names: {}", closest.join(", "))
    }
}
