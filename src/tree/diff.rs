//! `genboot diff` for trees: what changed between two tree objects, read
//! from the store only (manifests, `packages`, and `/etc/passwd` and
//! `/etc/group` through the manifests) — no mounting.
//!
//! The shape users know from `nix store diff-closures` and `rpm-ostree db
//! diff`: packages added, removed, upgraded or downgraded with their
//! versions; users and groups added, removed or renumbered; files added,
//! removed and changed (content, mode, owner, group, xattrs, link target —
//! never mtime) with counts and the net byte change per top directory
//! (`/etc`, `/usr/share`, `/var/lib`: two levels below `/usr` and `/var`,
//! one elsewhere) and the bytes of content the second tree adds to the
//! store; and every change under `/etc` (the image's defaults). [`diff`]
//! is pure; the CLI prints it (`src/cli/output.rs`), as text or JSON.

use super::manifest::{show, Entry, Kind, Manifest, Sha256Digest};
use super::objects::Objects;
use super::packages::{self, version_cmp, Package};
use super::{read_manifest, TreeError, PACKAGES_FILE};
use crate::store::{Store, StorePath};
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What one tree object holds that the diff needs.
#[derive(Debug, Clone)]
pub struct TreeData {
    pub name: String,
    pub manifest: Manifest,
    pub packages: Vec<Package>,
    /// (name, id) from the tree's `/etc/passwd` and `/etc/group`.
    pub users: Vec<(String, u32)>,
    pub groups: Vec<(String, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Upgraded,
    Downgraded,
    Changed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageChange {
    pub name: String,
    pub arch: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountChange {
    pub name: String,
    pub from: Option<u32>,
    pub to: Option<u32>,
    pub change: Change,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DirSummary {
    pub dir: String,
    pub added: u64,
    pub removed: u64,
    pub changed: u64,
    /// Sum of file sizes in the second tree minus in the first, over the
    /// entries that differ.
    pub bytes: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileSummary {
    pub added: u64,
    pub removed: u64,
    pub changed: u64,
    pub bytes: i64,
    /// Bytes of contents the second tree has and the first does not (what
    /// it adds to the object store, inline files included).
    pub new_content_bytes: u64,
    pub by_dir: Vec<DirSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcChange {
    pub path: String,
    pub change: Change,
    /// For a change: what differs (`content`, `mode`, `owner`, `group`,
    /// `xattrs`, `kind`, `target`, `link`).
    pub what: Vec<&'static str>,
}

/// The difference between two trees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeDiff {
    pub from: String,
    pub to: String,
    pub packages: Vec<PackageChange>,
    pub users: Vec<AccountChange>,
    pub groups: Vec<AccountChange>,
    pub files: FileSummary,
    pub etc: Vec<EtcChange>,
}

fn accounts(text: Option<Vec<u8>>) -> Vec<(String, u32)> {
    let Some(t) = text else { return Vec::new() };
    String::from_utf8_lossy(&t)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?))
        })
        .collect()
}

/// Read what [`diff`] needs from a tree object.
pub fn load(store: &Store, object: &StorePath) -> Result<TreeData, TreeError> {
    let manifest = read_manifest(store, object)?;
    let objects = Objects::of(store);
    let pk = store.path(object).join(PACKAGES_FILE);
    let packages = packages::parse_text(&std::fs::read(&pk).map_err(super::io_err("read", &pk))?);
    let read = |p: &[u8]| {
        packages::read_stored(&manifest, &objects, p).map_err(|e| TreeError::Io {
            op: "read",
            path: Path::new(&object.base_name()).join(show(p).trim_start_matches('/')),
            cause: e,
        })
    };
    let users = accounts(read(b"/etc/passwd")?);
    let groups = accounts(read(b"/etc/group")?);
    Ok(TreeData {
        name: object.base_name(),
        manifest,
        packages,
        users,
        groups,
    })
}

/// Diff two tree objects of the store.
pub fn diff_trees(store: &Store, a: &StorePath, b: &StorePath) -> Result<TreeDiff, TreeError> {
    Ok(diff(&load(store, a)?, &load(store, b)?))
}

/// Top directory of a path for the summary.
pub fn top_dir(path: &[u8]) -> String {
    let s = show(path);
    let comps: Vec<&str> = s.trim_start_matches('/').split('/').collect();
    let n = if matches!(comps[0], "usr" | "var") {
        2
    } else {
        1
    };
    format!("/{}", comps[..n.min(comps.len())].join("/"))
}

fn file_size(m: &Manifest, p: &[u8]) -> u64 {
    match m.inode(p) {
        Some((_, Kind::File { size, .. })) => *size,
        _ => 0,
    }
}

/// What differs between two entries at the same path (mtimes never).
fn differences(a: &Manifest, b: &Manifest, p: &[u8]) -> Vec<&'static str> {
    let (ea, eb) = (&a.entries[p], &b.entries[p]);
    match (ea, eb) {
        (Entry::Hardlink { target: x }, Entry::Hardlink { target: y }) if x != y => {
            return vec!["link"]
        }
        (Entry::Hardlink { .. }, Entry::Hardlink { .. }) => {}
        (Entry::Hardlink { .. }, _) | (_, Entry::Hardlink { .. }) => return vec!["link"],
        _ => {}
    }
    let (Some((ma, ka)), Some((mb, kb))) = (a.inode(p), b.inode(p)) else {
        return vec!["link"];
    };
    let mut w = Vec::new();
    match (ka, kb) {
        (Kind::File { sha256: x, .. }, Kind::File { sha256: y, .. }) => {
            if x != y {
                w.push("content")
            }
        }
        (Kind::Symlink { target: x }, Kind::Symlink { target: y }) => {
            if x != y {
                w.push("target")
            }
        }
        (x, y) => {
            if x != y {
                w.push("kind")
            }
        }
    }
    if ma.mode != mb.mode {
        w.push("mode");
    }
    if ma.uid != mb.uid {
        w.push("owner");
    }
    if ma.gid != mb.gid {
        w.push("group");
    }
    if ma.xattrs != mb.xattrs {
        w.push("xattrs");
    }
    w
}

fn contents(m: &Manifest) -> BTreeMap<Sha256Digest, u64> {
    let mut out = BTreeMap::new();
    for e in m.entries.values() {
        if let Entry::Inode {
            kind: Kind::File { size, sha256, .. },
            ..
        } = e
        {
            out.insert(*sha256, *size);
        }
    }
    out
}

fn account_changes(a: &[(String, u32)], b: &[(String, u32)]) -> Vec<AccountChange> {
    let ma: BTreeMap<&str, u32> = a.iter().map(|(n, i)| (n.as_str(), *i)).collect();
    let mb: BTreeMap<&str, u32> = b.iter().map(|(n, i)| (n.as_str(), *i)).collect();
    let names: BTreeSet<&str> = ma.keys().chain(mb.keys()).copied().collect();
    names
        .into_iter()
        .filter_map(|n| {
            let (x, y) = (ma.get(n).copied(), mb.get(n).copied());
            let change = match (x, y) {
                (None, Some(_)) => Change::Added,
                (Some(_), None) => Change::Removed,
                (Some(p), Some(q)) if p != q => Change::Changed,
                _ => return None,
            };
            Some(AccountChange {
                name: n.to_string(),
                from: x,
                to: y,
                change,
            })
        })
        .collect()
}

/// Compare two trees (pure).
pub fn diff(a: &TreeData, b: &TreeData) -> TreeDiff {
    // Packages by (name, arch).
    let pa: BTreeMap<(&str, &str), &str> = a
        .packages
        .iter()
        .map(|p| ((p.name.as_str(), p.arch.as_str()), p.version.as_str()))
        .collect();
    let pb: BTreeMap<(&str, &str), &str> = b
        .packages
        .iter()
        .map(|p| ((p.name.as_str(), p.arch.as_str()), p.version.as_str()))
        .collect();
    let keys: BTreeSet<(&str, &str)> = pa.keys().chain(pb.keys()).copied().collect();
    let packages = keys
        .into_iter()
        .filter_map(|k| {
            let (x, y) = (pa.get(&k).copied(), pb.get(&k).copied());
            let change = match (x, y) {
                (None, Some(_)) => Change::Added,
                (Some(_), None) => Change::Removed,
                (Some(p), Some(q)) => match version_cmp(p, q) {
                    Ordering::Less => Change::Upgraded,
                    Ordering::Greater => Change::Downgraded,
                    Ordering::Equal if p != q => Change::Changed,
                    Ordering::Equal => return None,
                },
                (None, None) => return None,
            };
            Some(PackageChange {
                name: k.0.to_string(),
                arch: k.1.to_string(),
                from: x.map(str::to_string),
                to: y.map(str::to_string),
                change,
            })
        })
        .collect();

    // Files.
    let (ma, mb) = (&a.manifest, &b.manifest);
    let mut files = FileSummary::default();
    let mut dirs: BTreeMap<String, DirSummary> = BTreeMap::new();
    let mut etc = Vec::new();
    let paths: BTreeSet<&Vec<u8>> = ma.entries.keys().chain(mb.entries.keys()).collect();
    for p in paths {
        let (change, what) = match (ma.entries.contains_key(p), mb.entries.contains_key(p)) {
            (false, true) => (Change::Added, Vec::new()),
            (true, false) => (Change::Removed, Vec::new()),
            _ => {
                let w = differences(ma, mb, p);
                if w.is_empty() {
                    continue;
                }
                (Change::Changed, w)
            }
        };
        let delta = file_size(mb, p) as i64 - file_size(ma, p) as i64;
        let d = dirs.entry(top_dir(p)).or_default();
        match change {
            Change::Added => {
                files.added += 1;
                d.added += 1;
            }
            Change::Removed => {
                files.removed += 1;
                d.removed += 1;
            }
            _ => {
                files.changed += 1;
                d.changed += 1;
            }
        }
        d.bytes += delta;
        files.bytes += delta;
        if p.starts_with(b"/etc/") {
            etc.push(EtcChange {
                path: show(p),
                change,
                what,
            });
        }
    }
    files.by_dir = dirs
        .into_iter()
        .map(|(dir, mut d)| {
            d.dir = dir;
            d
        })
        .collect();
    let ca = contents(ma);
    files.new_content_bytes = contents(mb)
        .iter()
        .filter(|(k, _)| !ca.contains_key(*k))
        .map(|(_, s)| *s)
        .sum();
    TreeDiff {
        from: a.name.clone(),
        to: b.name.clone(),
        packages,
        users: account_changes(&a.users, &b.users),
        groups: account_changes(&a.groups, &b.groups),
        files,
        etc,
    }
}

impl TreeDiff {
    /// Whether the trees are the same (up to mtimes).
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
            && self.users.is_empty()
            && self.groups.is_empty()
            && self.files.added + self.files.removed + self.files.changed == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::manifest::{Meta, Mtime};

    fn data(name: &str, pkgs: &[(&str, &str)], files: &[(&str, &[u8], u32)]) -> TreeData {
        let mut m = Manifest::new(None);
        for d in ["/", "/etc", "/usr", "/usr/share"] {
            m.entries.insert(
                d.as_bytes().to_vec(),
                Entry::Inode {
                    meta: Meta::new(0o755, 0, 0, Mtime::new(0, 0)),
                    kind: Kind::Dir,
                },
            );
        }
        for (p, d, mode) in files {
            m.entries.insert(
                p.as_bytes().to_vec(),
                Entry::Inode {
                    meta: Meta::new(*mode, 0, 0, Mtime::new(name.len() as i64, 0)),
                    kind: Kind::file_with(d),
                },
            );
        }
        TreeData {
            name: name.into(),
            manifest: m,
            packages: pkgs
                .iter()
                .map(|(n, v)| Package {
                    name: n.to_string(),
                    version: v.to_string(),
                    arch: "amd64".into(),
                })
                .collect(),
            users: vec![("root".into(), 0)],
            groups: vec![("root".into(), 0)],
        }
    }

    #[test]
    fn packages_files_users_and_etc() {
        let a = data(
            "a",
            &[("libc6", "2.36-9+deb12u9"), ("old", "1"), ("same", "1")],
            &[
                ("/etc/x.conf", b"a=1\n", 0o644),
                ("/usr/share/doc", b"12345", 0o644),
            ],
        );
        let mut b = data(
            "bb",
            &[
                ("libc6", "2.36-9+deb12u10"),
                ("nginx-light", "1.22.1-9"),
                ("same", "1"),
            ],
            &[
                ("/etc/x.conf", b"a=1\n", 0o600),
                ("/etc/new.conf", b"new\n", 0o644),
                ("/usr/share/doc", b"1234567", 0o644),
            ],
        );
        b.users.push(("_chrony".into(), 999));
        let d = diff(&a, &b);
        assert_eq!(
            d.packages
                .iter()
                .map(|p| (p.name.as_str(), p.change))
                .collect::<Vec<_>>(),
            vec![
                ("libc6", Change::Upgraded),
                ("nginx-light", Change::Added),
                ("old", Change::Removed)
            ]
        );
        assert_eq!(d.users.len(), 1);
        assert_eq!(d.users[0].name, "_chrony");
        assert!(d.groups.is_empty());
        assert_eq!((d.files.added, d.files.removed, d.files.changed), (1, 0, 2));
        assert_eq!(d.files.bytes, 4 + 2);
        assert_eq!(d.files.new_content_bytes, 4 + 7);
        assert_eq!(
            d.etc,
            vec![
                EtcChange {
                    path: "/etc/new.conf".into(),
                    change: Change::Added,
                    what: vec![]
                },
                EtcChange {
                    path: "/etc/x.conf".into(),
                    change: Change::Changed,
                    what: vec!["mode"]
                }
            ]
        );
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["packages"][1]["to"], "1.22.1-9");
        assert_eq!(json["files"]["byDir"][0]["dir"], "/etc");
        assert_eq!(json["files"]["newContentBytes"], 11);
        // mtimes alone are no difference.
        assert!(diff(&a, &a).is_empty());
        let mut a2 = a.clone();
        a2.name = "a-with-other-times".into();
        assert!(diff(
            &a,
            &data(
                "zzz",
                &[("libc6", "2.36-9+deb12u9"), ("old", "1"), ("same", "1")],
                &[
                    ("/etc/x.conf", b"a=1\n", 0o644),
                    ("/usr/share/doc", b"12345", 0o644)
                ]
            )
        )
        .is_empty());
    }

    #[test]
    fn top_dirs_go_two_deep_in_usr_and_var() {
        assert_eq!(top_dir(b"/usr/share/doc/x"), "/usr/share");
        assert_eq!(top_dir(b"/var/lib/dpkg/status"), "/var/lib");
        assert_eq!(top_dir(b"/etc/nginx/nginx.conf"), "/etc");
        assert_eq!(top_dir(b"/usr"), "/usr");
        assert_eq!(top_dir(b"/"), "/");
    }
}
