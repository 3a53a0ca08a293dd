//! Kernel module names, module file names, and module aliases, the way the
//! kernel and kmod treat them: the builder resolves the configured names and
//! writes kmod's index with these rules, and genboot-init matches devices'
//! `modalias` strings against the initrd's alias table with the same ones.
//!
//! Aliases follow kmod (`shared/util.c: alias_normalize`, used by depmod for
//! the patterns it indexes and by `kmod_module_new_from_lookup` for the
//! string looked up): outside `[...]`, `-` becomes `_`; an unbalanced
//! bracket makes the alias invalid (depmod skips such a pattern, a lookup of
//! such a string finds nothing). The normalised pattern is then matched
//! against the normalised string with `fnmatch(3)` without flags: `*`, `?`,
//! `[...]` with ranges and `!`/`^` negation. Unlike glibc, a backslash is an
//! ordinary character here (no module alias uses one).

use std::fmt;

/// A module name in canonical form: `-` is written `_`, as the kernel and
/// kmod compare names (`hid-generic` and `hid_generic` are one module).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModName(String);

impl ModName {
    /// `name` in canonical form.
    pub fn new(name: &str) -> ModName {
        ModName(name.replace('-', "_"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ModName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ModName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for ModName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ModName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// How a kernel module file is compressed, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleCompression {
    None,
    Xz,
    Zstd,
    Gzip,
}

/// The suffix of every kernel module file, before any compression suffix.
pub const MODULE_SUFFIX: &str = ".ko";

/// The compressed-module suffixes the kernel (`CONFIG_MODULE_DECOMPRESS`)
/// and kmod know, after [`MODULE_SUFFIX`]: the one list.
const COMPRESSION_SUFFIXES: [(&str, ModuleCompression); 3] = [
    (".xz", ModuleCompression::Xz),
    (".zst", ModuleCompression::Zstd),
    (".gz", ModuleCompression::Gzip),
];

impl ModuleCompression {
    /// A module path without its compression suffix, and the compression:
    /// `kernel/a/b.ko.xz` → (`kernel/a/b.ko`, `Xz`); a path without one is
    /// returned whole with `None`.
    pub fn split(path: &str) -> (&str, ModuleCompression) {
        for (suffix, c) in COMPRESSION_SUFFIXES {
            if let Some(rest) = path.strip_suffix(suffix) {
                return (rest, c);
            }
        }
        (path, ModuleCompression::None)
    }

    /// `Some` for a kernel module file name (`x.ko`, `x.ko.xz`, ...), with
    /// the stem (`x`).
    pub fn of_file_name(name: &str) -> Option<(&str, ModuleCompression)> {
        let (ko, c) = ModuleCompression::split(name);
        let stem = ko.strip_suffix(MODULE_SUFFIX)?;
        (!stem.is_empty()).then_some((stem, c))
    }

    /// Whether the module file at `path` is compressed (the kernel must
    /// decompress it: `MODULE_INIT_COMPRESSED_FILE`).
    pub fn is_compressed(path: &str) -> bool {
        ModuleCompression::split(path).1 != ModuleCompression::None
    }
}

/// kmod's alias normalisation: `-` becomes `_` outside `[...]`; `None` for
/// an unbalanced bracket (a `]` outside a bracket, or a `[` never closed),
/// which kmod refuses.
pub fn normalize_alias(alias: &str) -> Option<String> {
    let mut out = String::with_capacity(alias.len());
    normalize_alias_into(alias, &mut out).then_some(out)
}

/// [`normalize_alias`] into `out` (cleared first); `false` when invalid.
fn normalize_alias_into(alias: &str, out: &mut String) -> bool {
    out.clear();
    let mut in_bracket = false;
    for c in alias.chars() {
        match c {
            '[' if !in_bracket => in_bracket = true,
            ']' if in_bracket => in_bracket = false,
            ']' => return false,
            _ => {}
        }
        out.push(if c == '-' && !in_bracket { '_' } else { c });
    }
    !in_bracket
}

/// Whether the module alias `pattern` matches `text` (a device's
/// `modalias`, or a name given to modprobe), as kmod decides: both
/// normalised with [`normalize_alias`], then [`fnmatch`].
pub fn alias_matches(pattern: &str, text: &str) -> bool {
    match (normalize_alias(pattern), normalize_alias(text)) {
        (Some(p), Some(t)) => fnmatch(p.as_bytes(), t.as_bytes()),
        _ => false,
    }
}

/// The modules whose alias patterns in `table` (pattern, module) match
/// `modalias` ([`alias_matches`]), in table order, each once.
pub fn modules_for<'a>(table: &'a [(String, String)], modalias: &str) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    let Some(text) = normalize_alias(modalias) else {
        return out;
    };
    let mut pattern = String::new();
    for (p, module) in table {
        if normalize_alias_into(p, &mut pattern)
            && fnmatch(pattern.as_bytes(), text.as_bytes())
            && !out.contains(&module.as_str())
        {
            out.push(module);
        }
    }
    out
}

/// Whether `text` matches the glob `pattern`, as `fnmatch(pattern, text, 0)`
/// does for these bytes: `*`, `?`, `[...]` (ranges `a-z`, negation `[!...]`
/// or `[^...]`, a `]` first in the class is literal, an unclosed `[` is a
/// literal `[`). No escapes: `\` is an ordinary character.
pub fn fnmatch(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // Where to resume after the last `*`: (pattern index after it, text index).
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = text.get(t) {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(b'?') => {
                p += 1;
                t += 1;
                continue;
            }
            Some(b'[') => match class(pattern, p, c) {
                Some((true, next)) => {
                    p = next;
                    t += 1;
                    continue;
                }
                Some((false, _)) => {}
                // An unclosed `[` is a literal.
                None if c == b'[' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                None => {}
            },
            Some(&lit) if lit == c => {
                p += 1;
                t += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern
        .get(p..)
        .unwrap_or_default()
        .iter()
        .all(|&c| c == b'*')
}

/// Match `c` against the bracket expression at `pattern[start]` (`[`).
/// `None` when the bracket is not closed (a literal `[`); else (matched,
/// index after `]`). As glibc's `fnmatch`, an unclosed bracket that ends in
/// a range without its end (`[a-`), reached before any element matched `c`,
/// matches nothing here (glibc returns `FNM_NOMATCH` there) rather than
/// being a literal `[`.
fn class(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(pattern.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *pattern.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        match (pattern.get(i + 1), pattern.get(i + 2)) {
            (Some(b'-'), None) if !matched && lo != c => return Some((false, i + 2)),
            (Some(b'-'), Some(&hi)) if hi != b']' => {
                if lo <= c && c <= hi {
                    matched = true;
                }
                i += 3;
            }
            _ => {
                if lo == c {
                    matched = true;
                }
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        fnmatch(p.as_bytes(), t.as_bytes())
    }

    #[test]
    fn literal_star_and_question_mark() {
        assert!(m("abc", "abc"));
        assert!(!m("abc", "abd"));
        assert!(!m("abc", "abcd"));
        assert!(m("a*", "a"));
        assert!(m("a*c", "abbbc"));
        assert!(!m("a*c", "abbbd"));
        assert!(m("*", ""));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("*b*b*", "abxxbx"));
        assert!(m("a?c*", "abc"));
    }

    #[test]
    fn bracket_classes() {
        assert!(m("v[0-9]x", "v7x"));
        assert!(!m("v[0-9]x", "vax"));
        assert!(m("v[!0-9]x", "vax"));
        assert!(m("v[^0-9]x", "vax"));
        assert!(!m("a[!b]c", "abc"));
        assert!(m("[]a]", "]"));
        assert!(m("[a-]", "-"));
        assert!(m("a[", "a["));
        assert!(m(
            "pci:v*d*sv*sd*bc01sc[0-9a]i*",
            "pci:v1d2sv3sd4bc01sc8i00"
        ));
    }

    /// An unclosed bracket ending in a range without its end: glibc's
    /// fnmatch(3) answers (checked with it; the fuzz target `alias` found
    /// `fnmatch("******[***-", "[-")` true here, false in glibc).
    #[test]
    fn an_unclosed_bracket_ending_in_a_range_matches_as_glibc_does() {
        for (p, t, glibc) in [
            ("******[***-", "[-", false),
            ("[a-", "[", false),
            ("[a-", "a", false),
            ("x[a-", "x[", false),
            ("*[a-", "z[", false),
            ("[!a-", "b", false),
            ("[ab-", "a", false),
            ("[ab-", "[", false),
            ("[]-", "]", false),
            ("[]-", "[", false),
            ("[a", "[", false),
            ("[a-]", "-", true),
        ] {
            assert_eq!(m(p, t), glibc, "fnmatch({p:?}, {t:?})");
        }
    }

    #[test]
    fn real_virtio_and_pci_aliases() {
        assert!(m("virtio:d00000002v*", "virtio:d00000002v00001AF4"));
        assert!(!m("virtio:d00000002v*", "virtio:d00000001v00001AF4"));
        let pci = "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00";
        assert!(m("pci:v00001AF4d*sv*sd*bc*sc*i*", pci));
        assert!(!m("pci:v00008086d*sv*sd*bc*sc*i*", pci));
    }

    #[test]
    fn aliases_normalise_dashes_outside_brackets_as_kmod_does() {
        assert_eq!(
            normalize_alias("fs-ext4[a-z]").as_deref(),
            Some("fs_ext4[a-z]")
        );
        assert_eq!(normalize_alias("a-b[-]c-").as_deref(), Some("a_b[-]c_"));
        // kmod refuses unbalanced brackets.
        assert_eq!(normalize_alias("a]b"), None);
        assert_eq!(normalize_alias("a[b-c"), None);
        assert_eq!(normalize_alias("a[b]]"), None);
        // `-` and `_` are one character to an alias match, on either side,
        // but not inside a class.
        assert!(alias_matches("platform:foo_bar", "platform:foo-bar"));
        assert!(alias_matches("platform:foo-bar", "platform:foo_bar"));
        assert!(alias_matches("of:N*T*Cacme,x-y", "of:NdevT<NULL>Cacme,x_y"));
        assert!(alias_matches("usb:v[0-9]-*", "usb:v7_1"));
        assert!(!alias_matches("usb:v[-]", "usb:v-"));
        assert!(alias_matches("usb:v[_]", "usb:v-"));
        assert!(!alias_matches("a]*", "a]b"));
        assert!(!alias_matches("a*", "a]b"));
    }

    #[test]
    fn modules_for_lists_each_module_once_in_table_order() {
        let t = vec![
            ("virtio:d00000002v*".to_string(), "virtio_blk".to_string()),
            ("virtio:d*v*".to_string(), "virtio_any".to_string()),
            ("virtio:d0000000?v*".to_string(), "virtio_blk".to_string()),
            ("platform:x_y".to_string(), "xy".to_string()),
            ("broken]".to_string(), "broken".to_string()),
        ];
        assert_eq!(
            modules_for(&t, "virtio:d00000002v00001AF4"),
            vec!["virtio_blk", "virtio_any"]
        );
        assert!(modules_for(&t, "pci:v1").is_empty());
        assert_eq!(modules_for(&t, "platform:x-y"), vec!["xy"]);
        assert!(modules_for(&t, "broken]").is_empty());
    }

    #[test]
    fn module_names_are_canonical_with_underscores() {
        assert_eq!(ModName::new("hid-generic"), ModName::new("hid_generic"));
        assert_eq!(ModName::new("hid-generic").as_str(), "hid_generic");
        assert_eq!(ModName::new("a-b").to_string(), "a_b");
    }

    #[test]
    fn module_file_names_and_compression() {
        use ModuleCompression::*;
        assert_eq!(
            ModuleCompression::of_file_name("ext4.ko"),
            Some(("ext4", None))
        );
        assert_eq!(
            ModuleCompression::of_file_name("ext4.ko.xz"),
            Some(("ext4", Xz))
        );
        assert_eq!(
            ModuleCompression::of_file_name("a.ko.zst"),
            Some(("a", Zstd))
        );
        assert_eq!(
            ModuleCompression::of_file_name("a.ko.gz"),
            Some(("a", Gzip))
        );
        assert_eq!(ModuleCompression::of_file_name(".ko.xz"), Option::None);
        assert_eq!(ModuleCompression::of_file_name("a.ko.gz.xz"), Option::None);
        assert_eq!(ModuleCompression::of_file_name("a.o"), Option::None);
        assert_eq!(ModuleCompression::of_file_name("ext4.ko.bak"), Option::None);
        assert_eq!(ModuleCompression::of_file_name(".ko"), Option::None);
        assert_eq!(
            ModuleCompression::split("kernel/a.ko.zst"),
            ("kernel/a.ko", Zstd)
        );
        assert_eq!(
            ModuleCompression::split("kernel/a.ko"),
            ("kernel/a.ko", None)
        );
        assert!(ModuleCompression::is_compressed("/lib/dummy.ko.zst"));
        assert!(!ModuleCompression::is_compressed("/lib/dummy.ko"));
    }
}
