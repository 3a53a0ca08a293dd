//! The initrd's manifest and its modules: the listed ones in order, then
//! those whose aliases match a device's `modalias`.

use super::{errno_text, fail, Boot, Failure, Step};
use crate::sys::{Kind, Sys};
use genboot_format::manifest::{self, Manifest};
use genboot_format::module_name::{self, ModName, ModuleCompression};
use std::io;

impl<S: Sys> Boot<'_, S> {
    pub(super) fn manifest(&mut self) -> Result<Manifest, Failure> {
        let text = match self.sys.read_file(manifest::PATH) {
            Ok(t) => String::from_utf8_lossy(&t).into_owned(),
            Err(e) => {
                return fail(
                    Step::Manifest,
                    format!("cannot read {}: {}", manifest::PATH, errno_text(&e)),
                    "this initrd was not written by genboot; rebuild it with `genboot build`",
                )
            }
        };
        let m = match Manifest::parse(&text) {
            Ok(m) => m,
            Err(e) => {
                return fail(
                    Step::Manifest,
                    format!("{}: {e}", manifest::PATH),
                    "the initrd is damaged or from another genboot version; rebuild it with `genboot build`",
                )
            }
        };
        let running = self.sys.kernel_release().unwrap_or_default();
        if m.kernel_release != running {
            return fail(
                Step::Manifest,
                format!(
                    "the initrd is for kernel {} but kernel {running} is running",
                    m.kernel_release
                ),
                "the boot entry pairs the wrong kernel and initrd; pick another entry or run `genboot install`",
            );
        }
        let detail = format!(
            "kernel {}, {} modules, {} aliases",
            m.kernel_release,
            m.modules.len(),
            m.aliases.len()
        );
        self.done(Step::Manifest, &detail);
        Ok(m)
    }

    /// Load one module; `Ok` when it is in the kernel now (an `EEXIST`:
    /// built in, or loaded already).
    pub(super) fn load(&mut self, path: &str) -> Result<(), io::Error> {
        match self
            .sys
            .load_module(path, ModuleCompression::is_compressed(path))
        {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) fn modules(
        &mut self,
        m: &Manifest,
        loaded: &mut Vec<ModName>,
        failed: &mut Vec<String>,
    ) {
        for (name, path) in &m.modules {
            match self.load(path) {
                Ok(()) => loaded.push(ModName::new(name)),
                Err(e) => {
                    let msg = format!(
                        "warning: module {name} ({path}) did not load: {}{}",
                        errno_text(&e),
                        load_hint(path, &e)
                    );
                    self.say(&msg);
                    failed.push(name.clone());
                }
            }
        }
        let detail = format!("{} of {} loaded", loaded.len(), m.modules.len());
        self.done(Step::Modules, &detail);
    }

    /// One pass over `/sys/devices/**/modalias`; returns the modules loaded.
    pub(super) fn modalias_pass(
        &mut self,
        m: &Manifest,
        loaded: &mut Vec<ModName>,
    ) -> Vec<ModName> {
        // Walking sysfs costs time (a quarter second under emulation): skip
        // it when every module the alias table could pick is loaded.
        let pending = m.aliases.iter().any(|(_, module)| {
            let module = ModName::new(module);
            !loaded.contains(&module) && m.modules.iter().any(|(n, _)| ModName::new(n) == module)
        });
        if !pending {
            return Vec::new();
        }
        let mut aliases = Vec::new();
        walk_modalias(self.sys, "/sys/devices", 0, &mut aliases);
        let mut new = Vec::new();
        for a in &aliases {
            for module in module_name::modules_for(&m.aliases, a) {
                let module = ModName::new(module);
                if loaded.contains(&module) {
                    continue;
                }
                let Some((_, path)) = m.modules.iter().find(|(n, _)| ModName::new(n) == module)
                else {
                    continue;
                };
                let path = path.clone();
                loaded.push(module.clone());
                match self.load(&path) {
                    Ok(()) => new.push(module),
                    Err(e) => {
                        let msg = format!(
                            "warning: module {module} for {a} did not load: {}",
                            errno_text(&e)
                        );
                        self.say(&msg);
                    }
                }
            }
        }
        new
    }

    pub(super) fn modalias(&mut self, m: &Manifest, loaded: &mut Vec<ModName>) {
        let mut all = Vec::new();
        // Loading a bus driver makes new devices appear: repeat a few times.
        for _ in 0..4 {
            let new = self.modalias_pass(m, loaded);
            if new.is_empty() {
                break;
            }
            all.extend(new);
        }
        let detail = if all.is_empty() {
            "nothing new".to_string()
        } else {
            let names: Vec<&str> = all.iter().map(ModName::as_str).collect();
            format!("loaded {}", names.join(" "))
        };
        self.done(Step::Modalias, &detail);
    }
}

/// What a failed module load most likely means.
fn load_hint(path: &str, e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOEXEC) if ModuleCompression::is_compressed(path) => {
            " (this kernel cannot load compressed modules, CONFIG_MODULE_DECOMPRESS is off: the initrd must hold them uncompressed)"
        }
        Some(libc::ENOEXEC) => " (not a module for this kernel: vermagic or format mismatch)",
        Some(libc::ENODEV) => " (no such hardware or CPU feature here; harmless if it is optional)",
        Some(libc::EKEYREJECTED) | Some(libc::EBADMSG) => " (signature rejected: module signing enforcement)",
        _ => "",
    }
}

fn walk_modalias<S: Sys>(sys: &mut S, dir: &str, depth: u32, out: &mut Vec<String>) {
    if depth > 32 {
        return;
    }
    let Ok(entries) = sys.read_dir(dir) else {
        return;
    };
    for (name, kind) in entries {
        let path = format!("{dir}/{name}");
        match kind {
            Kind::Dir => walk_modalias(sys, &path, depth + 1, out),
            Kind::File if name == "modalias" => {
                if let Ok(b) = sys.read_file(&path) {
                    let a = String::from_utf8_lossy(&b).trim().to_string();
                    if !a.is_empty() && !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
            _ => {}
        }
    }
}
