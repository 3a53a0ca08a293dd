//! The `packages` file of a tree object: one `name version arch` line per
//! installed package, sorted by name then architecture, from the tree's
//! dpkg status (`/usr/lib/genboot/var/lib/dpkg/status` once the build rules
//! moved it, else `/var/lib/dpkg/status`; no status → an empty file).
//! Derived from the manifest and the objects only, so `verify_tree`
//! regenerates it byte for byte. Also Debian version ordering, for `diff`.

use super::manifest::{Kind, Manifest, Sha256Digest};
use super::objects::Objects;
use std::cmp::Ordering;
use std::io;

/// Where dpkg's status is, in the order looked at.
pub const STATUS_PATHS: &[&[u8]] = &[
    b"/usr/lib/genboot/var/lib/dpkg/status",
    b"/var/lib/dpkg/status",
];

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// Installed packages of a dpkg status file (stanzas whose `Status` ends in
/// `installed`), sorted.
pub fn parse_status(text: &[u8]) -> Vec<Package> {
    let text = String::from_utf8_lossy(text);
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let (mut name, mut version, mut arch, mut installed) = (None, None, None, false);
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package:") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Version:") {
                version = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Architecture:") {
                arch = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Status:") {
                installed = v.split_whitespace().nth(2) == Some("installed");
            }
        }
        if let (Some(name), Some(version), true) = (name, version, installed) {
            out.push(Package {
                name,
                version,
                arch: arch.unwrap_or_else(|| "all".into()),
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The `packages` text.
pub fn to_text(pkgs: &[Package]) -> Vec<u8> {
    let mut s = String::new();
    for p in pkgs {
        s.push_str(&format!("{} {} {}\n", p.name, p.version, p.arch));
    }
    s.into_bytes()
}

/// Parse a `packages` file.
pub fn parse_text(text: &[u8]) -> Vec<Package> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            Some(Package {
                name: f.next()?.to_string(),
                version: f.next()?.to_string(),
                arch: f.next()?.to_string(),
            })
        })
        .collect()
}

/// Read the content of a regular file of the tree (following a hard link):
/// its inline data, or `object(sha256)` for a larger one. `None` when the
/// path is not a regular file.
pub fn read_file(
    m: &Manifest,
    path: &[u8],
    object: impl Fn(&Sha256Digest) -> io::Result<Vec<u8>>,
) -> io::Result<Option<Vec<u8>>> {
    match m.inode(path) {
        Some((
            _,
            Kind::File {
                inline: Some(d), ..
            },
        )) => Ok(Some(d.clone())),
        Some((_, Kind::File { sha256, .. })) => object(sha256).map(Some),
        _ => Ok(None),
    }
}

/// Read a file of a stored tree (inline data or the object).
pub fn read_stored(m: &Manifest, objects: &Objects, path: &[u8]) -> io::Result<Option<Vec<u8>>> {
    read_file(m, path, |sha| std::fs::read(objects.path(sha)))
}

/// The packages of a tree; `object` reads a content by digest.
pub fn packages_of(
    m: &Manifest,
    object: impl Fn(&Sha256Digest) -> io::Result<Vec<u8>>,
) -> io::Result<Vec<Package>> {
    for p in STATUS_PATHS {
        if let Some(text) = read_file(m, p, &object)? {
            return Ok(parse_status(&text));
        }
    }
    Ok(Vec::new())
}

/// Compare Debian versions as dpkg does (`epoch:upstream-revision`, `~`
/// sorts before everything, letters before other characters).
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if e.bytes().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((u, r)) => (epoch, u, r),
            None => (epoch, rest, ""),
        }
    }
    fn order(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(b'~') => -1,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => c as i32,
            Some(c) => c as i32 + 256,
        }
    }
    fn part(a: &str, b: &str) -> Ordering {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            // Non-digit prefix.
            while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit())
            {
                let ca = (i < a.len() && !a[i].is_ascii_digit()).then(|| a[i]);
                let cb = (j < b.len() && !b[j].is_ascii_digit()).then(|| b[j]);
                let (oa, ob) = (order(ca), order(cb));
                if oa != ob {
                    return oa.cmp(&ob);
                }
                if ca.is_some() {
                    i += 1;
                }
                if cb.is_some() {
                    j += 1;
                }
            }
            // Digit run.
            let si = i;
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let na = std::str::from_utf8(&a[si..i])
                .unwrap_or("0")
                .trim_start_matches('0');
            let nb = std::str::from_utf8(&b[sj..j])
                .unwrap_or("0")
                .trim_start_matches('0');
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| part(ua, ub))
        .then_with(|| part(ra, rb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_gives_installed_packages_sorted() {
        let s = b"Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13\nArchitecture: amd64\n\n\
Package: gone\nStatus: deinstall ok config-files\nVersion: 1\nArchitecture: amd64\n\n\
Package: adduser\nStatus: install ok installed\nArchitecture: all\nVersion: 3.134\nDescription: x\n y\n";
        let p = parse_status(s);
        assert_eq!(
            String::from_utf8(to_text(&p)).unwrap(),
            "adduser 3.134 all\nzlib1g 1:1.2.13 amd64\n"
        );
        assert_eq!(parse_text(&to_text(&p)), p);
    }

    #[test]
    fn versions_order_like_dpkg() {
        let lt = [
            ("1.0", "1.1"),
            ("1.0~rc1", "1.0"),
            ("1.0", "1:0.9"),
            ("1.22.1-9", "1.22.1-9+deb12u11"),
            ("2.36-9+deb12u9", "2.36-9+deb12u10"),
            ("1.0a", "1.0b"),
            ("1.0", "1.0a"),
            ("1.0-1", "1.0-1.1"),
            ("1.0~~", "1.0~"),
        ];
        for (a, b) in lt {
            assert_eq!(version_cmp(a, b), Ordering::Less, "{a} < {b}");
            assert_eq!(version_cmp(b, a), Ordering::Greater, "{b} > {a}");
        }
        assert_eq!(version_cmp("1.01", "1.1"), Ordering::Equal);
    }
}
