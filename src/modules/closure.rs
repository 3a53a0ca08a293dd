//! The initrd closure of the configured modules, in load order:
//! dependencies before dependents, `softdep` `pre:` modules before and
//! `post:` modules after, builtins satisfied without a file. Names resolve
//! as kmod resolves them: a module name, else module aliases, else a builtin
//! name, else builtin aliases.

use super::index::ModuleIndex;
use super::{normalize_name, ModulesError};
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
        let name = normalize_name(name);
        if self.modules.contains_key(&name) {
            return Resolved::Modules(vec![name]);
        }
        let mut hits: Vec<String> = Vec::new();
        for m in self.in_order() {
            if m.info
                .aliases
                .iter()
                .any(|a| fnmatch(&normalize_alias(a), &name))
            {
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
                .any(|(a, _)| fnmatch(&normalize_alias(a), &name))
        {
            return Resolved::Builtin;
        }
        Resolved::Unknown
    }

    /// Up to five known names closest to `name` (Levenshtein distance).
    pub fn closest(&self, name: &str) -> Vec<String> {
        let name = normalize_name(name);
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

/// kmod's alias normalisation: `-` becomes `_` outside `[...]`.
pub fn normalize_alias(alias: &str) -> String {
    let mut out = String::with_capacity(alias.len());
    let mut in_bracket = false;
    for c in alias.chars() {
        match c {
            '[' => in_bracket = true,
            ']' => in_bracket = false,
            _ => {}
        }
        out.push(if c == '-' && !in_bracket { '_' } else { c });
    }
    out
}

/// Shell-style matching (`*`, `?`, `[...]` with ranges and `!`/`^`), as
/// fnmatch(3) without flags.
pub fn fnmatch(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        let (mut pi, mut ti) = (0, 0);
        let (mut star_p, mut star_t) = (None, 0);
        while ti < t.len() {
            let step = if pi < p.len() {
                match p[pi] {
                    b'*' => {
                        star_p = Some(pi);
                        star_t = ti;
                        pi += 1;
                        continue;
                    }
                    b'?' => Some(pi + 1),
                    b'[' => class(p, pi, t[ti]),
                    c if c == t[ti] => Some(pi + 1),
                    _ => None,
                }
            } else {
                None
            };
            match step {
                Some(next) => {
                    pi = next;
                    ti += 1;
                }
                None => match star_p {
                    Some(sp) => {
                        pi = sp + 1;
                        star_t += 1;
                        ti = star_t;
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
    /// Match `c` against the class starting at `p[at] == '['`; the index
    /// after the class on a match.
    fn class(p: &[u8], at: usize, c: u8) -> Option<usize> {
        let mut i = at + 1;
        let negate = matches!(p.get(i), Some(b'!' | b'^'));
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() && (first || p[i] != b']') {
            first = false;
            if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
                if p[i] <= c && c <= p[i + 2] {
                    matched = true;
                }
                i += 3;
            } else {
                if p[i] == c {
                    matched = true;
                }
                i += 1;
            }
        }
        if i >= p.len() {
            // No closing bracket: '[' is literal.
            return (c == b'[').then_some(at + 1);
        }
        (matched != negate).then_some(i + 1)
    }
    go(pattern.as_bytes(), text.as_bytes())
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

    #[test]
    fn fnmatch_handles_stars_classes_and_questions() {
        assert!(fnmatch("virtio:d00000002v*", "virtio:d00000002v00001AF4"));
        assert!(!fnmatch("virtio:d00000002v*", "virtio:d00000003v00001AF4"));
        assert!(fnmatch(
            "pci:v*d*sv*sd*bc01sc[0-9a]i*",
            "pci:v1d2sv3sd4bc01sc8i00"
        ));
        assert!(!fnmatch("a[!b]c", "abc"));
        assert!(fnmatch("a?c*", "abc"));
        assert!(fnmatch("*", ""));
    }

    #[test]
    fn alias_normalisation_keeps_brackets() {
        assert_eq!(normalize_alias("fs-ext4[a-z]"), "fs_ext4[a-z]");
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
