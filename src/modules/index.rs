//! The module index of a tree, from the files alone: every module file's
//! `.modinfo` (read in parallel), plus the builtins from `modules.builtin`
//! and `modules.builtin.modinfo`.

use super::input::{self, InputError, MAX_INDEX_BYTES};
use super::modinfo::{self, ModuleCompression};
use super::ModulesError;
use crate::fsutil::Stamp;
use genboot_format::module_name::ModName;
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

/// Index files genboot writes itself; a tree's own copies are not taken over.
pub const GENERATED: &[&str] = &[
    "modules.dep",
    "modules.dep.bin",
    "modules.alias",
    "modules.alias.bin",
    "modules.softdep",
    "modules.symbols",
    "modules.symbols.bin",
    "modules.builtin.bin",
    "modules.builtin.alias.bin",
    "modules.devname",
];

/// A regular file of the module tree, with what the input cache compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Relative to the tree, e.g. `kernel/fs/ext4/ext4.ko`.
    pub rel: String,
    pub stamp: Stamp,
}

/// Every regular file below `dir` (sorted by path), skipping symlinks, the
/// top-level `build` and `source` (Debian's links to the headers) and the
/// index files genboot generates. Directories are listed by their entries' types;
/// the files are then stat'ed in parallel.
pub fn walk(dir: &Path) -> Result<Vec<TreeFile>, ModulesError> {
    fn go(base: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), ModulesError> {
        let here = if rel.is_empty() {
            base.to_path_buf()
        } else {
            base.join(rel)
        };
        let err = |source| ModulesError::Tree {
            path: here.clone(),
            cause: source,
        };
        for item in fs::read_dir(&here).map_err(err)? {
            let item = item.map_err(err)?;
            let Some(name) = item.file_name().to_str().map(str::to_string) else {
                continue;
            };
            // Debian's `build` and `source` point at headers outside the
            // tree; depmod skips them too, whatever their type.
            if rel.is_empty() && (name == "build" || name == "source") {
                continue;
            }
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let ft = item.file_type().map_err(|source| ModulesError::Tree {
                path: item.path(),
                cause: source,
            })?;
            if ft.is_dir() {
                go(base, &child, out)?;
            } else if ft.is_file() && !(rel.is_empty() && GENERATED.contains(&name.as_str())) {
                out.push(child);
            }
        }
        Ok(())
    }
    let mut names = Vec::new();
    go(dir, "", &mut names)?;
    names.sort();
    names
        .into_par_iter()
        .map(|rel| {
            let path = dir.join(&rel);
            let meta = fs::symlink_metadata(&path).map_err(|source| ModulesError::Tree {
                path,
                cause: source,
            })?;
            Ok(TreeFile {
                rel,
                stamp: Stamp::of(&meta),
            })
        })
        .collect()
}

/// One loadable module: where it is, its load order, and what its
/// `.modinfo` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Canonical name (`_`, not `-`).
    pub name: String,
    /// Path relative to the tree, e.g. `kernel/fs/ext4/ext4.ko`.
    pub path: String,
    /// Position in `modules.order` (modules not listed come after, by path).
    pub order: u32,
    pub info: modinfo::ModInfo,
}

/// All modules of one kernel's tree.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    pub dir: PathBuf,
    pub release: String,
    pub modules: BTreeMap<String, ModuleInfo>,
    /// Names of modules built into the kernel.
    pub builtin: BTreeSet<String>,
    /// `modules.builtin` as shipped (paths), for kmod's index.
    pub builtin_paths: Vec<String>,
    /// (alias pattern, module) of builtin modules.
    pub builtin_aliases: Vec<(String, String)>,
}

impl ModuleIndex {
    /// Read the tree `dir` of kernel `release`; `files` is [`walk`]`(dir)`.
    pub fn read(dir: &Path, release: &str, files: &[TreeFile]) -> Result<Self, ModulesError> {
        let order = read_order(dir);
        let candidates: Vec<(&TreeFile, &str, ModuleCompression)> = files
            .iter()
            .filter_map(|f| {
                let file_name = f.rel.rsplit('/').next().unwrap_or(&f.rel);
                ModuleCompression::of_file_name(file_name).map(|(stem, c)| (f, stem, c))
            })
            .collect();
        let parsed: Vec<Result<ModuleInfo, ModulesError>> = candidates
            .par_iter()
            .map(|(f, stem, c)| {
                let path = dir.join(&f.rel);
                let info = modinfo::read(&path, *c)?;
                let vermagic = info.vermagic.clone().unwrap_or_default();
                if vermagic.split_whitespace().next() != Some(release) {
                    return Err(ModulesError::Vermagic {
                        path,
                        found: vermagic,
                        release: release.to_string(),
                    });
                }
                let key = ko_path(&f.rel);
                let name = info
                    .name
                    .clone()
                    .unwrap_or_else(|| ModName::new(stem).into_string());
                check_values(&path, &f.rel, &name, &info)?;
                Ok(ModuleInfo {
                    name,
                    path: f.rel.clone(),
                    order: order.get(key).copied().unwrap_or(u32::MAX),
                    info,
                })
            })
            .collect();
        let mut modules: BTreeMap<String, ModuleInfo> = BTreeMap::new();
        for m in parsed {
            let m = m?;
            // Two files with one name: the one outside kernel/ (updates/,
            // extra/) wins, as with depmod's default search order.
            let replace = match modules.get(&m.name) {
                None => true,
                Some(old) => old.path.starts_with("kernel/") && !m.path.starts_with("kernel/"),
            };
            if !replace {
                continue;
            }
            modules.insert(m.name.clone(), m);
        }
        // Unlisted modules get order numbers after the listed ones, by path.
        let mut unlisted: Vec<&mut ModuleInfo> = modules
            .values_mut()
            .filter(|m| m.order == u32::MAX)
            .collect();
        unlisted.sort_by(|a, b| a.path.cmp(&b.path));
        for (next, m) in (order.len() as u32..).zip(unlisted) {
            m.order = next;
        }

        let builtin_file = dir.join("modules.builtin");
        let builtin_paths: Vec<String> = match read_index_file(&builtin_file) {
            Ok(t) => String::from_utf8_lossy(&t)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(ModulesError::Builtin {
                    path: builtin_file,
                    cause: source,
                })
            }
        };
        let builtin: BTreeSet<String> = builtin_paths.iter().map(|p| name_of_path(p)).collect();
        let modinfo_file = dir.join("modules.builtin.modinfo");
        let builtin_aliases = match read_index_file(&modinfo_file) {
            Ok(blob) => modinfo::pairs(&blob)
                .filter_map(|(k, v)| {
                    let (module, key) = k.split_once('.')?;
                    (key == "alias").then(|| (v.to_string(), ModName::new(module).into_string()))
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(ModulesError::Builtin {
                    path: modinfo_file,
                    cause: source,
                })
            }
        };
        Ok(ModuleIndex {
            dir: dir.to_path_buf(),
            release: release.to_string(),
            modules,
            builtin,
            builtin_paths,
            builtin_aliases,
        })
    }

    /// Modules sorted by `modules.order` position.
    pub fn in_order(&self) -> Vec<&ModuleInfo> {
        let mut v: Vec<&ModuleInfo> = self.modules.values().collect();
        v.sort_by_key(|m| (m.order, m.path.as_str()));
        v
    }
}

/// The values of a module that end up in the initrd manifest (one record
/// a line, fields separated by spaces) and in kmod's text index files are
/// checked here, at the builder: a name or alias with a space or a newline
/// would give genboot-init a manifest it rejects, or inject records.
/// Module names are letters, digits and `_`/`-` (C identifiers, as the
/// kernel's build makes them); aliases, softdeps and paths hold no control
/// characters, and aliases and paths no spaces either.
fn check_values(
    path: &Path,
    rel: &str,
    name: &str,
    info: &modinfo::ModInfo,
) -> Result<(), ModulesError> {
    let bad = |field: &'static str, value: &str, why: &str| ModulesError::BadModinfo {
        path: path.to_path_buf(),
        field,
        value: value.to_string(),
        why: why.to_string(),
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        let field = if info.name.is_some() {
            ".modinfo name"
        } else {
            "file name"
        };
        return Err(bad(
            field,
            name,
            "a module name is made of letters, digits, '_' and '-'",
        ));
    }
    if !rel.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "file name",
            rel,
            "a module's path holds no spaces, control characters or non-ASCII bytes",
        ));
    }
    for a in &info.aliases {
        if a.is_empty() || !a.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                ".modinfo alias",
                a,
                "an alias is printable ASCII without spaces (it is one field of the initrd manifest and of modules.alias)",
            ));
        }
    }
    for sd in &info.softdep_raw {
        if !sd.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
            return Err(bad(
                ".modinfo softdep",
                sd,
                "a softdep is printable ASCII on one line (it is a line of modules.softdep, which modprobe reads as configuration)",
            ));
        }
    }
    Ok(())
}

/// `kernel/a/b.ko.xz` → `kernel/a/b.ko` (how `modules.order` names it).
fn ko_path(rel: &str) -> &str {
    ModuleCompression::split(rel).0
}

/// `kernel/fs/ext4/ext4.ko` → `ext4`.
pub fn name_of_path(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    let stem = ModuleCompression::of_file_name(file)
        .map(|(s, _)| s)
        .unwrap_or(file);
    ModName::new(stem).into_string()
}

/// An index file of the tree (`modules.builtin`, ...): a regular file
/// (not a symlink) of at most [`MAX_INDEX_BYTES`].
fn read_index_file(path: &Path) -> std::io::Result<Vec<u8>> {
    input::read_regular(path, false, MAX_INDEX_BYTES).map_err(|e| match e {
        InputError::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    })
}

fn read_order(dir: &Path) -> HashMap<String, u32> {
    let text = read_index_file(&dir.join("modules.order")).unwrap_or_default();
    String::from_utf8_lossy(&text)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| (ko_path(l).to_string(), i as u32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_of_path_strips_dirs_suffix_and_dashes() {
        assert_eq!(
            name_of_path("kernel/drivers/hid/hid-generic.ko.xz"),
            "hid_generic"
        );
        assert_eq!(ko_path("kernel/a.ko.zst"), "kernel/a.ko");
    }
}
