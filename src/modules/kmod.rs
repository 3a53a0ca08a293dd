//! The index files stock kmod (`modprobe`, `modinfo`) reads, written from a
//! [`ModuleIndex`] so stage 2 can load modules from a generation's
//! kernel-modules object without running `depmod`.
//!
//! Binary indexes (`*.bin`) use kmod's format: a big-endian header (magic
//! `0xB007F457`, version `0x00020001`, offset of the root node) and a
//! radix trie written children first. A node offset carries flags in its
//! top bits: a NUL-terminated prefix follows (`0x80000000`), a child table
//! follows (`0x20000000`: first and last byte, then one offset per byte in
//! between, 0 for none), values follow (`0x40000000`: a count, then per value
//! a priority and a NUL-terminated string). Lookups walk prefix, then the
//! child for the next key byte; the values of the node where the key ends
//! are the answer. Key bytes are below 128.

use super::index::ModuleIndex;
use genboot_format::module_name::normalize_alias;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

const MAGIC: u32 = 0xB007_F457;
const VERSION: u32 = 0x0002_0001;
const NODE_PREFIX: u32 = 0x8000_0000;
const NODE_VALUES: u32 = 0x4000_0000;
const NODE_CHILDS: u32 = 0x2000_0000;

/// Keys and their values (priority, value), collected before writing.
#[derive(Debug, Default)]
pub struct Trie {
    entries: BTreeMap<Vec<u8>, Vec<(u32, String)>>,
}

/// A key (relative to a node) and its values.
type Item<'a> = (&'a [u8], &'a Vec<(u32, String)>);

#[derive(Debug, Default)]
struct Node {
    prefix: Vec<u8>,
    children: BTreeMap<u8, Node>,
    values: Vec<(u32, String)>,
}

impl Trie {
    /// Add a value; keys with bytes ≥ 128 cannot be indexed and are skipped
    /// (false). The same (key, value) twice is kept once.
    pub fn insert(&mut self, key: &str, value: &str, priority: u32) -> bool {
        if !key.is_ascii() || value.contains('\0') || key.contains('\0') {
            return false;
        }
        let values = self.entries.entry(key.as_bytes().to_vec()).or_default();
        if !values.iter().any(|(_, v)| v == value) {
            values.push((priority, value.to_string()));
        }
        true
    }

    /// The index file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let items: Vec<Item<'_>> = self
            .entries
            .iter()
            .map(|(k, v)| (k.as_slice(), v))
            .collect();
        let root = build(&items, true);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        let root_off = write(&root, &mut out);
        out[8..12].copy_from_slice(&root_off.to_be_bytes());
        out
    }
}

/// The radix trie of sorted `items` (keys relative to this node). The root
/// keeps an empty prefix, as depmod writes it.
fn build(items: &[Item<'_>], root: bool) -> Node {
    let mut node = Node::default();
    if items.is_empty() {
        return node;
    }
    if !root {
        let first = items[0].0;
        let mut len = first.len();
        for (k, _) in &items[1..] {
            len = len.min(k.iter().zip(first).take_while(|(a, b)| a == b).count());
        }
        node.prefix = first[..len].to_vec();
    }
    let plen = node.prefix.len();
    let mut i = 0;
    while i < items.len() {
        let key = items[i].0;
        if key.len() == plen {
            let mut v = items[i].1.clone();
            v.sort_by_key(|(p, _)| *p);
            node.values = v;
            i += 1;
            continue;
        }
        let c = key[plen];
        let mut j = i;
        let mut sub = Vec::new();
        while j < items.len() && items[j].0.len() > plen && items[j].0[plen] == c {
            sub.push((&items[j].0[plen + 1..], items[j].1));
            j += 1;
        }
        node.children.insert(c, build(&sub, false));
        i = j;
    }
    node
}

fn write(node: &Node, out: &mut Vec<u8>) -> u32 {
    let mut table = Vec::new();
    if let (Some((&first, _)), Some((&last, _))) = (
        node.children.first_key_value(),
        node.children.last_key_value(),
    ) {
        for c in first..=last {
            table.push(node.children.get(&c).map_or(0, |child| write(child, out)));
        }
    }
    let mut offset = u32::try_from(out.len()).expect("index below 256 MiB");
    if !node.prefix.is_empty() {
        out.extend_from_slice(&node.prefix);
        out.push(0);
        offset |= NODE_PREFIX;
    }
    if let (Some((&first, _)), Some((&last, _))) = (
        node.children.first_key_value(),
        node.children.last_key_value(),
    ) {
        out.push(first);
        out.push(last);
        for off in table {
            out.extend_from_slice(&off.to_be_bytes());
        }
        offset |= NODE_CHILDS;
    }
    if !node.values.is_empty() {
        out.extend_from_slice(&(node.values.len() as u32).to_be_bytes());
        for (prio, v) in &node.values {
            out.extend_from_slice(&prio.to_be_bytes());
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        offset |= NODE_VALUES;
    }
    offset
}

/// Look `key` up in an index file's bytes (exact match, no wildcards); the
/// values in order. Used by tests and `genboot verify`-style checks.
pub fn lookup(index: &[u8], key: &str) -> Option<Vec<String>> {
    let be = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(index.get(at..at + 4)?.try_into().ok()?))
    };
    if be(0)? != MAGIC || be(4)? != VERSION {
        return None;
    }
    let mut off = be(8)?;
    let key = key.as_bytes();
    let mut ki = 0;
    loop {
        let mut at = (off & 0x0FFF_FFFF) as usize;
        if off & NODE_PREFIX != 0 {
            let end = at + index.get(at..)?.iter().position(|&b| b == 0)?;
            let prefix = &index[at..end];
            if key.get(ki..ki + prefix.len())? != prefix {
                return None;
            }
            ki += prefix.len();
            at = end + 1;
        }
        let (mut first, mut last) = (1u8, 0u8);
        let childs_at = at;
        if off & NODE_CHILDS != 0 {
            first = index[at];
            last = index[at + 1];
            at += 2 + 4 * (usize::from(last) - usize::from(first) + 1);
        }
        if ki == key.len() {
            if off & NODE_VALUES == 0 {
                return None;
            }
            let count = be(at)? as usize;
            at += 4;
            let mut out = Vec::with_capacity(count);
            for _ in 0..count {
                at += 4;
                let end = at + index.get(at..)?.iter().position(|&b| b == 0)?;
                out.push(String::from_utf8_lossy(&index[at..end]).into_owned());
                at = end + 1;
            }
            return Some(out);
        }
        let c = key[ki];
        if off & NODE_CHILDS == 0 || c < first || c > last {
            return None;
        }
        off = be(childs_at + 2 + 4 * usize::from(c - first))?;
        if off == 0 {
            return None;
        }
        ki += 1;
    }
}

/// The module that provides each exported symbol, as depmod decides: it
/// adds the modules' exports in `modules.order` order to a table that
/// keeps the last one added, so the last exporter wins.
pub fn symbol_owners(index: &ModuleIndex) -> HashMap<&str, &str> {
    let mut owners = HashMap::new();
    for m in index.in_order() {
        for sym in &m.info.exports {
            owners.insert(sym.as_str(), m.name.as_str());
        }
    }
    owners
}

/// Each module's place in a topological order of the whole tree, modules
/// without users first (Kahn's algorithm over `modules.order`, as depmod
/// does). A module's dependencies are visited in depmod's order: by the
/// first undefined symbol (in its symbol table) each one provides, then
/// any `depends=` module no symbol points at. Modules in a dependency
/// cycle get no place.
pub fn sort_positions(index: &ModuleIndex) -> HashMap<&str, usize> {
    let mods = index.in_order();
    let at: HashMap<&str, usize> = mods
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.as_str(), i))
        .collect();
    let owners = symbol_owners(index);
    let deps: Vec<Vec<usize>> = mods
        .iter()
        .map(|m| {
            let declared: Vec<usize> = m
                .info
                .depends
                .iter()
                .filter_map(|d| at.get(d.as_str()).copied())
                .collect();
            let mut v: Vec<usize> = Vec::new();
            let by_symbol = m
                .info
                .needs
                .iter()
                .filter_map(|sym| owners.get(sym.as_str()))
                .filter_map(|owner| at.get(owner).copied());
            for j in by_symbol.chain(declared.iter().copied()) {
                if declared.contains(&j) && !v.contains(&j) {
                    v.push(j);
                }
            }
            v
        })
        .collect();
    let mut users = vec![0usize; mods.len()];
    for d in deps.iter().flatten() {
        users[*d] += 1;
    }
    let mut roots: Vec<usize> = (0..mods.len()).filter(|&i| users[i] == 0).collect();
    let mut out = HashMap::with_capacity(mods.len());
    while let Some(src) = roots.pop() {
        out.insert(mods[src].name.as_str(), out.len());
        for &d in &deps[src] {
            users[d] -= 1;
            if users[d] == 0 {
                roots.push(d);
            }
        }
    }
    out
}

/// A module's full dependency list as `modules.dep` holds it: every module
/// it needs (transitively), dependents before their dependencies; libkmod
/// loads the list from its end.
pub fn dep_line_modules<'a>(
    index: &'a ModuleIndex,
    positions: &HashMap<&str, usize>,
    name: &str,
) -> Vec<&'a str> {
    let mut seen: BTreeSet<&'a str> = BTreeSet::new();
    let mut todo: Vec<&'a str> = index
        .modules
        .get(name)
        .map(|m| m.info.depends.iter().map(String::as_str).collect())
        .unwrap_or_default();
    while let Some(d) = todo.pop() {
        let Some(m) = index.modules.get(d) else {
            continue;
        };
        if m.name != name && seen.insert(m.name.as_str()) {
            todo.extend(m.info.depends.iter().map(String::as_str));
        }
    }
    let mut out: Vec<&'a str> = seen.into_iter().collect();
    out.sort_by_key(|n| (positions.get(n).copied().unwrap_or(usize::MAX), *n));
    out
}

/// The index files, as (file name, bytes), sorted by name.
pub fn index_files(index: &ModuleIndex) -> Vec<(&'static str, Vec<u8>)> {
    let ordered = index.in_order();
    let positions = sort_positions(index);
    let mut dep = String::new();
    let mut dep_bin = Trie::default();
    let mut alias = String::from("# Aliases extracted from modules themselves.\n");
    let mut alias_bin = Trie::default();
    let mut softdep = String::from("# Soft dependencies extracted from modules themselves.\n");
    let mut devname = String::from("# Device nodes to trigger on-demand module loading.\n");
    for m in &ordered {
        let deps: Vec<&str> = dep_line_modules(index, &positions, &m.name)
            .into_iter()
            .map(|d| index.modules[d].path.as_str())
            .collect();
        let line = if deps.is_empty() {
            format!("{}:", m.path)
        } else {
            format!("{}: {}", m.path, deps.join(" "))
        };
        dep.push_str(&line);
        dep.push('\n');
        dep_bin.insert(&m.name, &line, m.order);
        for a in &m.info.aliases {
            alias.push_str(&format!("alias {a} {}\n", m.name));
            // An alias kmod cannot normalise is left out, as depmod does.
            if let Some(a) = normalize_alias(a) {
                alias_bin.insert(&a, &m.name, m.order);
            }
        }
        // One line per `softdep=` value, as depmod writes them.
        for raw in &m.info.softdep_raw {
            softdep.push_str(&format!("softdep {} {raw}\n", m.name));
        }
        if let Some(line) = devname_line(&m.name, &m.info.aliases) {
            devname.push_str(&line);
        }
    }
    let mut builtin_bin = Trie::default();
    for name in &index.builtin {
        builtin_bin.insert(name, "", 0);
    }
    let mut builtin_alias_bin = Trie::default();
    for (a, name) in &index.builtin_aliases {
        if let Some(a) = normalize_alias(a) {
            builtin_alias_bin.insert(&a, name, 0);
        }
    }
    let mut symbols = String::from("# Aliases for symbols, used by symbol_request().\n");
    let mut symbols_bin = Trie::default();
    let owners: BTreeMap<&str, &str> = symbol_owners(index).into_iter().collect();
    for (sym, name) in &owners {
        symbols.push_str(&format!("alias symbol:{sym} {name}\n"));
        symbols_bin.insert(&format!("symbol:{sym}"), name, index.modules[*name].order);
    }
    vec![
        ("modules.alias", alias.into_bytes()),
        ("modules.alias.bin", alias_bin.to_bytes()),
        ("modules.builtin.alias.bin", builtin_alias_bin.to_bytes()),
        ("modules.builtin.bin", builtin_bin.to_bytes()),
        ("modules.dep", dep.into_bytes()),
        ("modules.dep.bin", dep_bin.to_bytes()),
        ("modules.devname", devname.into_bytes()),
        ("modules.softdep", softdep.into_bytes()),
        ("modules.symbols", symbols.into_bytes()),
        ("modules.symbols.bin", symbols_bin.to_bytes()),
    ]
}

/// `name devname type major:minor` for a module with a `devname:` alias and a
/// `char-major-M-N` / `block-major-M-N` alias.
fn devname_line(name: &str, aliases: &[String]) -> Option<String> {
    let dev = aliases.iter().find_map(|a| a.strip_prefix("devname:"))?;
    aliases.iter().find_map(|a| {
        let (kind, rest) = if let Some(r) = a.strip_prefix("char-major-") {
            ('c', r)
        } else {
            ('b', a.strip_prefix("block-major-")?)
        };
        let (maj, min) = rest.split_once('-')?;
        let (maj, min): (u32, u32) = (maj.parse().ok()?, min.parse().ok()?);
        Some(format!("{name} {dev} {kind}{maj}:{min}\n"))
    })
}

/// Write the index files into `dir` (the object's `lib/modules/<release>`).
pub fn write_index_files(index: &ModuleIndex, dir: &Path) -> std::io::Result<()> {
    for (name, bytes) in index_files(index) {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trie_lookup_finds_every_key_and_nothing_else() {
        let mut t = Trie::default();
        let keys = [
            "ext4",
            "ext2",
            "e",
            "virtio_blk",
            "virtio_pci",
            "virtio",
            "x",
        ];
        for (i, k) in keys.iter().enumerate() {
            t.insert(k, &format!("v{i}"), i as u32);
        }
        t.insert("ext4", "second", 0);
        let bytes = t.to_bytes();
        assert_eq!(&bytes[..8], &[0xB0, 0x07, 0xF4, 0x57, 0, 2, 0, 1]);
        for (i, k) in keys.iter().enumerate() {
            let v = lookup(&bytes, k).unwrap();
            assert!(v.contains(&format!("v{i}")), "{k}: {v:?}");
        }
        assert_eq!(lookup(&bytes, "ext4").unwrap(), ["v0", "second"]);
        for k in ["ex", "ext", "virtio_", "virtio_blkk", "y", ""] {
            assert_eq!(lookup(&bytes, k), None, "{k}");
        }
    }

    #[test]
    fn empty_trie_is_a_valid_index() {
        let bytes = Trie::default().to_bytes();
        assert_eq!(bytes.len(), 12);
        assert_eq!(lookup(&bytes, "a"), None);
    }

    #[test]
    fn devname_needs_both_aliases() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            devname_line("fuse", &a(&["devname:fuse", "char-major-10-229"])).as_deref(),
            Some("fuse fuse c10:229\n")
        );
        assert_eq!(devname_line("x", &a(&["devname:x"])), None);
    }
}
