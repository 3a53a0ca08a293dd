//! The initrd's manifest and its modules: the listed ones, several at a
//! time where the manifest's order allows, then those whose aliases match a
//! device's `modalias` — walking sysfs only when a device could still want
//! a module that is not loaded and not given up.

use super::{errno_text, fail, Boot, Failure, Step};
use crate::sys::{Kind, ModuleLoad, Sys};
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
        in_kernel(
            self.sys
                .load_module(path, ModuleCompression::is_compressed(path)),
        )
    }

    /// Load every manifest module, as many at a time as there are CPUs (up
    /// to [`MAX_LOAD_THREADS`]) where the manifest's order allows; say what
    /// failed in manifest order, whatever order the loads ended in. A
    /// module that failed joins `settled` too unless a device showing up
    /// later could make it load ([`retry_on_device`]). A module only for
    /// CPU features this CPU lacks is not loaded ([`Boot::not_for_this_cpu`]).
    pub(super) fn modules(
        &mut self,
        m: &Manifest,
        settled: &mut Vec<ModName>,
        failed: &mut Vec<String>,
    ) {
        let skip = self.not_for_this_cpu(m);
        // Positions in the manifest → positions among the modules loaded.
        let mut job_of = vec![None; m.modules.len()];
        let mut jobs: Vec<ModuleLoad<'_>> = Vec::new();
        for (i, (module, after)) in m.modules.iter().zip(m.after_positions()).enumerate() {
            if skip.contains(&i) {
                continue;
            }
            if let Some(j) = job_of.get_mut(i) {
                *j = Some(jobs.len());
            }
            jobs.push(ModuleLoad {
                path: &module.path,
                compressed: ModuleCompression::is_compressed(&module.path),
                after: after
                    .iter()
                    .filter_map(|&a| job_of.get(a).copied().flatten())
                    .collect(),
            });
        }
        let threads = self.sys.cpus().clamp(1, MAX_LOAD_THREADS);
        let mut results = self.sys.load_modules(&jobs, threads).into_iter();
        let mut loaded = 0;
        for (i, module) in m.modules.iter().enumerate() {
            if skip.contains(&i) {
                let msg = format!(
                    "module {}: not loaded, this CPU has none of the features it is for ({})",
                    module.name,
                    cpu_aliases(m, &module.name).join(" ")
                );
                self.say(&msg);
                settled.push(ModName::new(&module.name));
                continue;
            }
            let Some(r) = results.next() else { break };
            let ok = match in_kernel(r.result) {
                Ok(()) => {
                    loaded += 1;
                    settled.push(ModName::new(&module.name));
                    true
                }
                Err(e) => {
                    let msg = format!(
                        "warning: module {} ({}) did not load: {}{}",
                        module.name,
                        module.path,
                        errno_text(&e),
                        load_hint(&module.path, &e)
                    );
                    self.say(&msg);
                    failed.push(module.name.clone());
                    if !retry_on_device(m, &module.name, &e) {
                        settled.push(ModName::new(&module.name));
                    }
                    false
                }
            };
            self.module_times
                .push((module.name.clone(), r.start_us, r.end_us, ok));
        }
        let detail = format!(
            "{loaded} of {} loaded{}, {threads} thread{}",
            m.modules.len(),
            if skip.is_empty() {
                String::new()
            } else {
                format!(", {} not for this CPU", skip.len())
            },
            if threads == 1 { "" } else { "s" }
        );
        self.done(Step::Modules, &detail);
    }

    /// The manifest positions of the modules that are only for CPU
    /// features this CPU lacks: every device alias they have is on the
    /// `cpu` bus, and none matches the CPU's modalias. Their init checks the
    /// same table and says ENODEV (`crc32c_intel` on a CPU without SSE4.2);
    /// the CPU does not change, so the load is skipped. Nothing is skipped
    /// when the kernel does not publish the CPU's modalias.
    fn not_for_this_cpu(&mut self, m: &Manifest) -> Vec<usize> {
        let cpu_only: Vec<usize> = m
            .modules
            .iter()
            .enumerate()
            .filter(|(_, x)| {
                let mut buses = m
                    .aliases
                    .iter()
                    .filter(|(_, n)| *n == x.name)
                    .filter_map(|(p, _)| manifest::alias_bus(p))
                    .peekable();
                buses.peek().is_some() && buses.all(|b| b == "cpu")
            })
            .map(|(i, _)| i)
            .collect();
        if cpu_only.is_empty() {
            return cpu_only;
        }
        let Ok(cpu) = self.sys.read_file(CPU_MODALIAS) else {
            return Vec::new();
        };
        let cpu = String::from_utf8_lossy(&cpu).trim().to_string();
        if cpu.is_empty() {
            return Vec::new();
        }
        cpu_only
            .into_iter()
            .filter(|&i| {
                m.modules.get(i).is_some_and(|x| {
                    !cpu_aliases(m, &x.name)
                        .iter()
                        .any(|p| module_name::alias_matches(p, &cpu))
                })
            })
            .collect()
    }

    /// One pass over `/sys/devices/**/modalias`, if a device could still
    /// want a module that is not `settled`; loads what the devices ask for
    /// and returns the modules it loaded. Each module is tried once: it
    /// joins `settled` whether it loads or not.
    pub(super) fn modalias_pass(
        &mut self,
        m: &Manifest,
        settled: &mut Vec<ModName>,
    ) -> Vec<ModName> {
        // Walking sysfs costs time (a quarter second under emulation): only
        // when a device alias names a module that is neither loaded nor
        // given up.
        if wanted_by_a_device(m, settled).is_empty() {
            return Vec::new();
        }
        let mut aliases = Vec::new();
        walk_modalias(self.sys, "/sys/devices", 0, &mut aliases);
        let mut new = Vec::new();
        for a in &aliases {
            for module in module_name::modules_for(&m.aliases, a) {
                let module = ModName::new(module);
                if settled.contains(&module) {
                    continue;
                }
                let Some(path) = m
                    .modules
                    .iter()
                    .find(|x| ModName::new(&x.name) == module)
                    .map(|x| x.path.clone())
                else {
                    continue;
                };
                settled.push(module.clone());
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

    pub(super) fn modalias(&mut self, m: &Manifest, settled: &mut Vec<ModName>, failed: &[String]) {
        if wanted_by_a_device(m, settled).is_empty() {
            let detail = if failed.is_empty() {
                "skipped: every module is loaded".to_string()
            } else {
                format!(
                    "skipped: every module is loaded or failed in a way no device can change ({})",
                    failed.join(" ")
                )
            };
            self.done(Step::Modalias, &detail);
            return;
        }
        let mut all = Vec::new();
        // Loading a bus driver makes new devices appear: repeat a few times.
        for _ in 0..4 {
            let new = self.modalias_pass(m, settled);
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

/// The CPU's vendor, family, model and features as a modalias
/// (`cpu:type:x86,ven…fam…mod…:feature:,…`).
const CPU_MODALIAS: &str = "/sys/devices/system/cpu/modalias";

/// A module's alias patterns on the `cpu` bus.
fn cpu_aliases<'m>(m: &'m Manifest, module: &str) -> Vec<&'m str> {
    m.aliases
        .iter()
        .filter(|(p, n)| n == module && manifest::alias_bus(p) == Some("cpu"))
        .map(|(p, _)| p.as_str())
        .collect()
}

/// At most this many modules load at once.
pub const MAX_LOAD_THREADS: usize = 4;

/// Buses whose devices are all there before PID 1 starts and stay as they
/// are: the CPU (its features) and the firmware's DMI strings. A module
/// that failed on them fails again.
const FIXED_BUSES: [&str; 2] = ["cpu", "dmi"];

/// A load's result with `EEXIST` (built in, or loaded already) as success.
fn in_kernel(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

/// Whether `module`, which failed with `e`, may load once a device shows
/// up: only when the kernel said "no such device" and the module has a
/// device alias on a bus where devices can still appear. Any other error
/// comes back the same from the same file (a bad format, a rejected
/// signature, a missing symbol), and the CPU does not gain a feature
/// (`crc32c_intel` without SSE4.2).
fn retry_on_device(m: &Manifest, module: &str, e: &io::Error) -> bool {
    let no_device = matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::ENXIO));
    no_device
        && m.aliases.iter().any(|(pattern, name)| {
            name == module
                && manifest::alias_bus(pattern).is_some_and(|bus| !FIXED_BUSES.contains(&bus))
        })
}

/// The manifest modules not `settled` that a device alias names (each
/// once, in alias-table order).
fn wanted_by_a_device<'m>(m: &'m Manifest, settled: &[ModName]) -> Vec<&'m str> {
    let mut out: Vec<&str> = Vec::new();
    for (pattern, module) in &m.aliases {
        let name = ModName::new(module);
        if manifest::alias_bus(pattern).is_some()
            && !settled.contains(&name)
            && m.modules.iter().any(|x| ModName::new(&x.name) == name)
            && !out.contains(&module.as_str())
        {
            out.push(module);
        }
    }
    out
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
