//! The initrd closure of the configured modules, in load order:
//! dependencies before dependents, `softdep` `pre:` modules before and
//! `post:` modules after, builtins satisfied without a file. Names resolve
//! as kmod resolves them: a module name, else module aliases, else a builtin
//! name, else builtin aliases.

use super::index::ModuleIndex;
use super::ModulesError;
use genboot_format::module_name::{alias_matches, ModName};
use std::collections::BTreeSet;

/// What a name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Modules(Vec<String>),
    Builtin,
    Unknown,
}

impl ModuleIndex {
    /// Resolve a module name or alias.
    pub fn resolve(&self, name: &str) -> Resolved {
        let name = ModName::new(name).into_string();
        if self.modules.contains_key(&name) {
            return Resolved::Modules(vec![name]);
        }
        let mut hits: Vec<String> = Vec::new();
        for m in self.in_order() {
            if m.info.aliases.iter().any(|a| alias_matches(a, &name)) {
                hits.push(m.name.clone());
            }
        }
        if !hits.is_empty() {
            return Resolved::Modules(hits);
        }
        if self.builtin.contains(&name)
            || self
                .builtin_aliases
                .iter()
                .any(|(a, _)| alias_matches(a, &name))
        {
            return Resolved::Builtin;
        }
        Resolved::Unknown
    }

    /// Up to five known names closest to `name` (Levenshtein distance).
    pub fn closest(&self, name: &str) -> Vec<String> {
        let name = ModName::new(name).into_string();
        let limit = (name.len() / 2).max(3);
        let mut scored: Vec<(usize, &String)> = self
            .modules
            .keys()
            .chain(self.builtin.iter())
            .map(|k| (edit_distance(&name, k), k))
            .filter(|(d, _)| *d <= limit)
            .collect();
        scored.sort();
        scored.dedup_by(|a, b| a.1 == b.1);
        scored.into_iter().take(5).map(|(_, k)| k.clone()).collect()
    }
}

/// Modules to load, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// Module names in load order (builtins are not listed).
    pub modules: Vec<String>,
}

/// The closure of `wanted` in `index`.
pub fn closure(index: &ModuleIndex, wanted: &[String]) -> Result<Closure, ModulesError> {
    let mut walk = Walk {
        index,
        done: BTreeSet::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for w in wanted {
        match index.resolve(w) {
            Resolved::Modules(names) => {
                for n in names {
                    walk.visit(&n)?;
                }
            }
            Resolved::Builtin => {}
            Resolved::Unknown => {
                return Err(ModulesError::Unknown {
                    name: w.clone(),
                    tree: index.dir.clone(),
                    closest: index.closest(w),
                })
            }
        }
    }
    Ok(Closure { modules: walk.out })
}

struct Walk<'a> {
    index: &'a ModuleIndex,
    done: BTreeSet<String>,
    stack: Vec<String>,
    out: Vec<String>,
}

impl Walk<'_> {
    fn visit(&mut self, name: &str) -> Result<(), ModulesError> {
        if self.done.contains(name) {
            return Ok(());
        }
        if let Some(at) = self.stack.iter().position(|s| s == name) {
            let mut cycle = self.stack[at..].to_vec();
            cycle.push(name.to_string());
            return Err(ModulesError::Cycle { cycle });
        }
        let m = &self.index.modules[name];
        self.stack.push(name.to_string());
        for soft in &m.info.softdep_pre {
            self.visit_soft(soft)?;
        }
        for dep in &m.info.depends {
            if self.index.modules.contains_key(dep) {
                self.visit(dep)?;
            } else if !self.index.builtin.contains(dep) {
                return Err(ModulesError::MissingDependency {
                    path: self.index.dir.join(&m.path),
                    dep: dep.clone(),
                });
            }
        }
        self.stack.pop();
        self.done.insert(name.to_string());
        self.out.push(name.to_string());
        for soft in &m.info.softdep_post {
            self.visit_soft(soft)?;
        }
        Ok(())
    }

    /// A softdep that is missing is skipped, and one that would close a
    /// cycle is already being loaded: both as modprobe does.
    fn visit_soft(&mut self, name: &str) -> Result<(), ModulesError> {
        if let Resolved::Modules(names) = self.index.resolve(name) {
            for n in names {
                if !self.stack.contains(&n) {
                    self.visit(&n)?;
                }
            }
        }
        Ok(())
    }
}

/// Levenshtein distance.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::ModuleInfo;
    use std::collections::BTreeMap;

    fn module(name: &str, deps: &[&str], pre: &[&str], post: &[&str]) -> ModuleInfo {
        ModuleInfo {
            name: name.into(),
            path: format!("kernel/{name}.ko"),
            order: 0,
            info: crate::modules::modinfo::ModInfo {
                depends: deps.iter().map(|s| s.to_string()).collect(),
                softdep_pre: pre.iter().map(|s| s.to_string()).collect(),
                softdep_post: post.iter().map(|s| s.to_string()).collect(),
                aliases: vec![format!("alias-of-{name}")],
                ..Default::default()
            },
        }
    }

    fn index(mods: Vec<ModuleInfo>, builtin: &[&str]) -> ModuleIndex {
        ModuleIndex {
            dir: std::path::PathBuf::from("/t"),
            release: "r".into(),
            modules: mods
                .into_iter()
                .map(|m| (m.name.clone(), m))
                .collect::<BTreeMap<_, _>>(),
            builtin: builtin.iter().map(|s| s.to_string()).collect(),
            builtin_paths: vec![],
            builtin_aliases: vec![("fs-builtin*".into(), "bi".into())],
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dependencies_load_before_dependents_and_softdeps_around() {
        let idx = index(
            vec![
                module("a", &["b", "c"], &["p"], &["q"]),
                module("b", &["c", "bi"], &[], &[]),
                module("c", &[], &[], &[]),
                module("p", &[], &[], &[]),
                module("q", &["a"], &[], &[]),
            ],
            &["bi"],
        );
        let c = closure(&idx, &names(&["a"])).unwrap();
        assert_eq!(c.modules, names(&["p", "c", "b", "a", "q"]));
    }

    #[test]
    fn dependency_cycle_is_named() {
        let idx = index(
            vec![module("a", &["b"], &[], &[]), module("b", &["a"], &[], &[])],
            &[],
        );
        let e = closure(&idx, &names(&["a"])).unwrap_err();
        assert!(
            matches!(&e, ModulesError::Cycle { cycle } if cycle == &names(&["a", "b", "a"])),
            "{e}"
        );
    }

    #[test]
    fn builtins_and_aliases_resolve() {
        let idx = index(vec![module("x_y", &[], &[], &[])], &["bi"]);
        assert_eq!(
            closure(&idx, &names(&["bi"])).unwrap().modules,
            Vec::<String>::new()
        );
        assert_eq!(
            closure(&idx, &names(&["x-y"])).unwrap().modules,
            names(&["x_y"])
        );
        assert_eq!(
            closure(&idx, &names(&["alias_of_x_y"])).unwrap().modules,
            names(&["x_y"])
        );
        assert_eq!(idx.resolve("fs-builtin-thing"), Resolved::Builtin);
    }

    #[test]
    fn unknown_module_lists_closest_names() {
        let idx = index(
            vec![
                module("virtio_blk", &[], &[], &[]),
                module("virtio_pci", &[], &[], &[]),
            ],
            &[],
        );
        let e = closure(&idx, &names(&["virtio_blkk"])).unwrap_err();
        match e {
            ModulesError::Unknown { closest, .. } => assert_eq!(closest[0], "virtio_blk"),
            e => panic!("{e}"),
        }
    }

    /// Issue 12: the builder resolved `[initrd] modules` names against
    /// aliases with `-` and `_` alike, genboot-init matched devices'
    /// modaliases without that rule, so one string could pick a module at
    /// build time and none at boot. Both now use kmod's rule
    /// (`genboot_format::module_name`): for every string, the modules the
    /// builder resolves it to are those genboot-init's alias table (built as
    /// the initrd writer builds it) picks for it.
    #[test]
    fn build_time_and_boot_time_alias_resolution_agree() {
        let with_aliases = |name: &str, aliases: &[&str]| {
            let mut m = module(name, &[], &[], &[]);
            m.info.aliases = aliases.iter().map(|a| a.to_string()).collect();
            m
        };
        let idx = index(
            vec![
                with_aliases("foo_drv", &["platform:foo_bar", "acpi:FOO-0001:*"]),
                with_aliases("acme_x", &["of:N*T*Cacme,x-y", "of:N*T*Cacme,x-y-v[0-9]"]),
                with_aliases("usb_thing", &["usb:v1234p[0-9a-f]*", "usb:v12-34p*"]),
                with_aliases("dashes", &["dev:a-[_-]-b", "dev:odd]"]),
                with_aliases("virtio_blk", &["virtio:d00000002v*"]),
            ],
            &[],
        );
        // The initrd manifest's alias table (src/initrd.rs): every alias of
        // every module as written, sorted.
        let mut table: Vec<(String, String)> = idx
            .modules
            .values()
            .flat_map(|m| m.info.aliases.iter().map(|a| (a.clone(), m.name.clone())))
            .collect();
        table.sort();
        for text in [
            "platform:foo-bar",
            "platform:foo_bar",
            "acpi:FOO_0001:",
            "acpi:FOO-0001:x-y",
            "of:NdevT<NULL>Cacme,x_y",
            "of:NdevT<NULL>Cacme,x-y-v7",
            "of:NdevT<NULL>Cacme,x_y_v7",
            "usb:v1234pa",
            "usb:v1234p-",
            "usb:v12_34p1",
            "dev:a-_-b",
            "dev:a---b",
            "dev:a_-_b",
            "dev:odd]",
            "virtio:d00000002v00001AF4",
            "virtio:d00000003v00001AF4",
            "nothing",
        ] {
            let mut build = match idx.resolve(text) {
                Resolved::Modules(m) => m,
                _ => vec![],
            };
            build.sort();
            let mut boot = genboot_format::module_name::modules_for(&table, text);
            boot.sort();
            assert_eq!(build, boot, "{text:?}");
        }
        // What the rule decides, spelled out (kmod: `-` is `_` outside a
        // bracket, on both sides; a bracket keeps its `-`).
        let r = |t: &str| match idx.resolve(t) {
            Resolved::Modules(m) => m,
            _ => vec![],
        };
        assert_eq!(r("platform:foo-bar"), names(&["foo_drv"]));
        assert_eq!(r("of:NdevT<NULL>Cacme,x_y"), names(&["acme_x"]));
        assert_eq!(r("usb:v12_34p1"), names(&["usb_thing"]));
        assert_eq!(r("dev:a_-_b"), names(&["dashes"]));
        assert_eq!(r("dev:a___b"), names(&["dashes"]));
        assert!(
            r("dev:odd]").is_empty(),
            "an unbalanced alias matches nothing"
        );
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
