//! Matching a device's `modalias` against the manifest's alias table, with
//! the wildcards kmod uses (fnmatch without flags): `*`, `?`, `[...]`
//! (ranges `a-z`, negation `[!...]` or `[^...]`).

/// Whether `text` matches the glob `pattern`.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
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
/// `None` when the bracket is not closed; else (matched, index after `]`).
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

/// The modules whose alias patterns match `modalias`, in table order,
/// without repeats.
pub fn modules_for<'a>(table: &'a [(String, String)], modalias: &str) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for (pattern, module) in table {
        if glob_match(pattern.as_bytes(), modalias.as_bytes()) && !out.contains(&module.as_str()) {
            out.push(module);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        glob_match(p.as_bytes(), t.as_bytes())
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
    }

    #[test]
    fn bracket_classes() {
        assert!(m("v[0-9]x", "v7x"));
        assert!(!m("v[0-9]x", "vax"));
        assert!(m("v[!0-9]x", "vax"));
        assert!(m("v[^0-9]x", "vax"));
        assert!(m("[]a]", "]"));
        assert!(m("[a-]", "-"));
        assert!(m("a[", "a["));
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
    fn modules_for_lists_each_module_once_in_table_order() {
        let t = vec![
            ("virtio:d00000002v*".to_string(), "virtio_blk".to_string()),
            ("virtio:d*v*".to_string(), "virtio_any".to_string()),
            ("virtio:d0000000?v*".to_string(), "virtio_blk".to_string()),
        ];
        assert_eq!(
            modules_for(&t, "virtio:d00000002v00001AF4"),
            vec!["virtio_blk", "virtio_any"]
        );
        assert!(modules_for(&t, "pci:v1").is_empty());
    }
}
