//! The kernel a tree carries, and parts of a stored tree as plain files:
//! a generation whose `[kernel]` names no image takes the tree's
//! `/boot/vmlinuz-<release>` and `/usr/lib/modules/<release>`, and the
//! module reader and the kernel-modules object want a directory.
//!
//! [`extract`] writes that directory: directories and symlinks as the
//! manifest says, files as hard links to their content objects (no copy;
//! the objects stay read-only and root-owned) or, for the small files the
//! manifest holds inline, written 0444. It is a reading aid in a
//! temporary directory of the store, not a tree: modes and owners are not
//! the manifest's.

use super::manifest::{show, Entry, Kind, Manifest};
use super::objects::Objects;
use super::{io_err, TreeError};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One kernel of a tree.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TreeKernel {
    pub release: String,
    /// `/boot/vmlinuz-<release>` in the tree.
    pub image: Vec<u8>,
    /// `/usr/lib/modules/<release>` (or `/lib/modules/<release>` in a tree
    /// without the merged `/usr`).
    pub modules: Vec<u8>,
}

impl TreeKernel {
    /// The firmware directory beside the module tree (`/usr/lib/firmware`).
    pub fn firmware(&self) -> Vec<u8> {
        let lib = self
            .modules
            .rsplitn(3, |b| *b == b'/')
            .nth(2)
            .unwrap_or(b"/usr/lib");
        [lib, b"/firmware"].concat()
    }
}

/// The kernels of a tree: every `/boot/vmlinuz-<release>` that is a
/// regular file and has a module directory, sorted by release.
pub fn kernels(m: &Manifest) -> Vec<TreeKernel> {
    let mut out = Vec::new();
    for (path, _) in m.entries.range(b"/boot/vmlinuz-".to_vec()..) {
        let Some(release) = path.strip_prefix(b"/boot/vmlinuz-") else {
            break;
        };
        if release.is_empty() || release.contains(&b'/') {
            continue;
        }
        if !matches!(m.inode(path), Some((_, Kind::File { .. }))) {
            continue;
        }
        let Ok(release) = std::str::from_utf8(release) else {
            continue;
        };
        let modules = ["/usr/lib/modules/", "/lib/modules/"]
            .iter()
            .map(|d| format!("{d}{release}").into_bytes())
            .find(|p| matches!(m.inode(p), Some((_, Kind::Dir))));
        if let Some(modules) = modules {
            out.push(TreeKernel {
                release: release.to_string(),
                image: path.clone(),
                modules,
            });
        }
    }
    out
}

/// The kernels of a tree on disk (a staged build or a `dir` tree, before
/// it is imported), as [`kernels`] finds them in a manifest. Nothing is
/// followed out of `root`: `/lib/modules` counts only where `/lib` is a
/// real directory (with the merged `/usr`, `/usr/lib/modules` is the one).
pub fn kernels_in_dir(root: &Path) -> Vec<TreeKernel> {
    let is = |p: &Path, dir: bool| {
        fs::symlink_metadata(p).is_ok_and(|m| if dir { m.is_dir() } else { m.is_file() })
    };
    let mut names: Vec<String> = fs::read_dir(root.join("boot"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut out = Vec::new();
    if !is(&root.join("boot"), true) {
        return out;
    }
    for n in names {
        let Some(release) = n.strip_prefix("vmlinuz-").filter(|r| !r.is_empty()) else {
            continue;
        };
        if !is(&root.join("boot").join(&n), false) {
            continue;
        }
        let modules = [("usr/lib/modules", "usr/lib"), ("lib/modules", "lib")]
            .iter()
            .find(|(m, lib)| {
                is(&root.join(lib), true)
                    && is(&root.join(m), true)
                    && is(&root.join(m).join(release), true)
            })
            .map(|(m, _)| format!("/{m}/{release}").into_bytes());
        if let Some(modules) = modules {
            out.push(TreeKernel {
                release: release.to_string(),
                image: format!("/boot/{n}").into_bytes(),
                modules,
            });
        }
    }
    out
}

/// The newest kernel of `found` (the kernels of tree `tree`) whose release
/// matches `pattern`: `newest` (any), a release or a glob, ordered by
/// Debian's version order, as for the kernels installed below a root
/// ([`crate::config::installed`]). The errors name `config`'s `[kernel]`
/// keys.
pub fn pick(
    mut found: Vec<TreeKernel>,
    pattern: &str,
    config: &Path,
    tree: &str,
) -> Result<TreeKernel, TreeError> {
    use crate::config::{installed, NEWEST};
    let file = config.display();
    // Newest first, as the installed kernels are listed.
    found.sort_by(|a, b| installed::deb_version_cmp(&b.release, &a.release));
    let all = if found.is_empty() {
        "none".to_string()
    } else {
        found
            .iter()
            .map(|k| k.release.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match found
        .into_iter()
        .find(|k| installed::matches(pattern, &k.release))
    {
        Some(k) => Ok(k),
        None if pattern == NEWEST => Err(TreeError::Kernel {
            what: format!(
                "{file}: [kernel] names no image, and the tree {tree} has no kernel (/boot/vmlinuz-<release> with /usr/lib/modules/<release>)"
            ),
            hint: "add a kernel package to [tree] packages (e.g. \"linux-image-amd64\"), or set [kernel] image and modules".into(),
        }),
        None => Err(TreeError::Kernel {
            what: format!(
                "{file}: [kernel] release = {pattern:?}, but no kernel of the tree {tree} matches it (/boot/vmlinuz-<release> with its modules; it has, newest first: {all})"
            ),
            hint: "set release to one of the tree's kernels or a pattern such as \"6.1.*\", or remove it to take the newest".into(),
        }),
    }
}

/// What identifies a tree's kernel for the input cache: a digest of every
/// entry of its image, module tree and firmware (paths, kinds, modes,
/// contents, link targets). Two trees with the same kernel package share
/// it, so a new tree does not rebuild an unchanged kernel's objects.
pub fn identity(m: &Manifest, k: &TreeKernel) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for want in [k.image.clone(), k.modules.clone(), k.firmware()] {
        let below = [want.as_slice(), b"/"].concat();
        for (path, e) in m
            .entries
            .range(want.clone()..)
            .take_while(|(p, _)| **p == want || p.starts_with(&below))
        {
            h.update(path);
            h.update([0]);
            match e {
                Entry::Hardlink { target } => {
                    h.update(b"h");
                    h.update(target);
                }
                Entry::Inode { meta, kind } => {
                    h.update(format!("{} {:o}", kind.letter(), meta.mode));
                    match kind {
                        Kind::File { sha256, .. } => h.update(sha256),
                        Kind::Symlink { target } => h.update(target),
                        _ => {}
                    }
                }
            }
            h.update([0]);
        }
    }
    format!("{} {}", k.release, super::manifest::hex(&h.finalize()))
}

/// Write the entries of `m` at and below each of `paths` (and the
/// directories above them) into `dest`, which must exist and be empty, as
/// described in the module docs. A path the manifest lacks is skipped.
pub fn extract(
    m: &Manifest,
    objects: &Objects,
    paths: &[&[u8]],
    dest: &Path,
) -> Result<(), TreeError> {
    let host =
        |p: &[u8]| -> PathBuf { dest.join(OsStr::from_bytes(p.strip_prefix(b"/").unwrap_or(p))) };
    // Hard links inside the tree: the first name's file, by its path.
    let mut placed: HashMap<&[u8], PathBuf> = HashMap::new();
    for want in paths {
        for parent in ancestors(want) {
            let h = host(parent);
            if !h.exists() {
                fs::create_dir(&h).map_err(io_err("create", &h))?;
            }
        }
        let below = [*want, b"/"].concat();
        let selected = m
            .entries
            .range(want.to_vec()..)
            .take_while(|(p, _)| p.as_slice() == *want || p.starts_with(&below));
        for (path, entry) in selected {
            let h = host(path);
            let kind = match entry {
                Entry::Hardlink { target } => {
                    let Some(first) = placed.get(target.as_slice()) else {
                        return Err(TreeError::Internal(format!(
                            "{} links to {}, which was not extracted",
                            show(path),
                            show(target)
                        )));
                    };
                    fs::hard_link(first, &h).map_err(io_err("link", &h))?;
                    continue;
                }
                Entry::Inode { kind, .. } => kind,
            };
            match kind {
                Kind::Dir => fs::create_dir(&h).map_err(io_err("create", &h))?,
                Kind::Symlink { target } => {
                    std::os::unix::fs::symlink(OsStr::from_bytes(target), &h)
                        .map_err(io_err("create link", &h))?
                }
                Kind::File {
                    inline: Some(data), ..
                } => {
                    fs::write(&h, data).map_err(io_err("write", &h))?;
                    fs::set_permissions(&h, fs::Permissions::from_mode(0o444))
                        .map_err(io_err("chmod", &h))?;
                    placed.insert(path, h);
                }
                Kind::File { sha256, .. } => {
                    let from = objects.path(sha256);
                    fs::hard_link(&from, &h).map_err(io_err("link the content object to", &h))?;
                    placed.insert(path, h);
                }
                // Devices, FIFOs and sockets are nothing to read.
                Kind::CharDevice { .. } | Kind::BlockDevice { .. } | Kind::Fifo | Kind::Socket => {}
            }
        }
    }
    Ok(())
}

/// `/a`, `/a/b` for `/a/b/c` (not the path itself, not `/`).
fn ancestors(path: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = path
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, b)| **b == b'/')
        .map(|(i, _)| &path[..i])
        .collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::manifest::{Meta, Mtime};

    fn put(m: &mut Manifest, p: &str, kind: Kind) {
        m.entries.insert(
            p.as_bytes().to_vec(),
            Entry::Inode {
                meta: Meta::new(0o755, 0, 0, Mtime::new(0, 0)),
                kind,
            },
        );
    }

    fn tree() -> Manifest {
        let mut m = Manifest::new(None);
        for d in ["/", "/boot", "/usr", "/usr/lib", "/usr/lib/modules"] {
            put(&mut m, d, Kind::Dir);
        }
        for r in ["6.1.0-50-amd64", "6.1.0-49-amd64"] {
            put(&mut m, &format!("/usr/lib/modules/{r}"), Kind::Dir);
            put(
                &mut m,
                &format!("/boot/vmlinuz-{r}"),
                Kind::file_with(r.as_bytes()),
            );
        }
        // A kernel without modules and a link are no kernels.
        put(&mut m, "/boot/vmlinuz-7.0-nomods", Kind::file_with(b"x"));
        put(
            &mut m,
            "/boot/vmlinuz-link",
            Kind::Symlink {
                target: b"vmlinuz-6.1.0-50-amd64".to_vec(),
            },
        );
        m
    }

    #[test]
    fn kernels_need_an_image_file_and_a_module_directory() {
        let k = kernels(&tree());
        let releases: Vec<&str> = k.iter().map(|k| k.release.as_str()).collect();
        assert_eq!(releases, ["6.1.0-49-amd64", "6.1.0-50-amd64"]);
        assert_eq!(k[1].modules, b"/usr/lib/modules/6.1.0-50-amd64");
        assert_eq!(k[1].firmware(), b"/usr/lib/firmware");
        assert_eq!(ancestors(b"/usr/lib/modules"), [&b"/usr"[..], b"/usr/lib"]);
        // The same kernel in another tree is the same kernel; another
        // module is another.
        let mut other = tree();
        put(&mut other, "/etc", Kind::Dir);
        assert_eq!(identity(&tree(), &k[1]), identity(&other, &k[1]));
        put(
            &mut other,
            "/usr/lib/modules/6.1.0-50-amd64/extra.ko",
            Kind::file_with(b"ko"),
        );
        assert_ne!(identity(&tree(), &k[1]), identity(&other, &k[1]));
        assert_eq!(identity(&tree(), &k[0]), identity(&other, &k[0]));
    }

    #[test]
    fn a_kernel_is_picked_as_the_newest_matching_release() {
        let cfg = Path::new("/etc/genboot/system.toml");
        let two = kernels(&tree());
        // Sorted by name, 6.1.0-49 comes first; by version, 6.1.0-50 is newer.
        let k = pick(two.clone(), "newest", cfg, "t").unwrap();
        assert_eq!(k.image, b"/boot/vmlinuz-6.1.0-50-amd64");
        let k = pick(two.clone(), "6.1.0-49-amd64", cfg, "t").unwrap();
        assert_eq!(k.image, b"/boot/vmlinuz-6.1.0-49-amd64");
        let k = pick(two.clone(), "6.1.0-4?-*", cfg, "t").unwrap();
        assert_eq!(k.release, "6.1.0-49-amd64");
        let k = pick(two.clone(), "6.1.*", cfg, "t").unwrap();
        assert_eq!(k.release, "6.1.0-50-amd64");
        let e = crate::hint::Hint::with_hint(&pick(two.clone(), "5.10*", cfg, "t").unwrap_err());
        assert!(
            e.starts_with("/etc/genboot/system.toml: [kernel] release = \"5.10*\"")
                && e.contains("it has, newest first: 6.1.0-50-amd64, 6.1.0-49-amd64")
                && e.contains("Hint: set release to one of the tree's kernels"),
            "{e}"
        );
        let e = crate::hint::Hint::with_hint(&pick(Vec::new(), "newest", cfg, "t").unwrap_err());
        assert!(
            e.contains("has no kernel") && e.contains("linux-image-amd64"),
            "{e}"
        );
        assert_eq!(pick(two[..1].to_vec(), "newest", cfg, "t").unwrap(), two[0]);
    }

    #[test]
    fn kernels_on_disk_are_those_of_the_manifest() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in [
            "boot",
            "usr/lib/modules/6.1.0-50-amd64",
            "usr/lib/modules/6.1.0-49-amd64",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(r.join("boot/vmlinuz-6.1.0-50-amd64"), b"k").unwrap();
        fs::write(r.join("boot/vmlinuz-7.0-nomods"), b"k").unwrap();
        std::os::unix::fs::symlink("vmlinuz-6.1.0-50-amd64", r.join("boot/vmlinuz-link")).unwrap();
        std::os::unix::fs::symlink("usr/lib", r.join("lib")).unwrap();
        let k = kernels_in_dir(r);
        assert_eq!(k.len(), 1, "{k:?}");
        assert_eq!(k[0].modules, b"/usr/lib/modules/6.1.0-50-amd64");
        // A /lib that leaves the tree is not followed.
        let t2 = tempfile::tempdir().unwrap();
        fs::create_dir_all(t2.path().join("boot")).unwrap();
        fs::write(t2.path().join("boot/vmlinuz-6.1.0-50-amd64"), b"k").unwrap();
        std::os::unix::fs::symlink(r.join("usr/lib"), t2.path().join("lib")).unwrap();
        assert!(kernels_in_dir(t2.path()).is_empty());
    }

    #[test]
    fn extract_writes_inline_files_dirs_and_links() {
        let mut m = tree();
        put(&mut m, "/usr/lib/modules/6.1.0-50-amd64/kernel", Kind::Dir);
        put(
            &mut m,
            "/usr/lib/modules/6.1.0-50-amd64/modules.order",
            Kind::file_with(b"kernel/a.ko\n"),
        );
        m.entries.insert(
            b"/usr/lib/modules/6.1.0-50-amd64/order2".to_vec(),
            Entry::Hardlink {
                target: b"/usr/lib/modules/6.1.0-50-amd64/modules.order".to_vec(),
            },
        );
        put(
            &mut m,
            "/usr/lib/modules/6.1.0-50-amd64/build",
            Kind::Symlink {
                target: b"/usr/src/linux-headers".to_vec(),
            },
        );
        let t = tempfile::tempdir().unwrap();
        let objects = Objects {
            dir: t.path().join("objects"),
        };
        let dest = t.path().join("x");
        fs::create_dir(&dest).unwrap();
        extract(
            &m,
            &objects,
            &[b"/usr/lib/modules/6.1.0-50-amd64", b"/usr/lib/firmware"],
            &dest,
        )
        .unwrap();
        let r = dest.join("usr/lib/modules/6.1.0-50-amd64");
        assert_eq!(fs::read(r.join("modules.order")).unwrap(), b"kernel/a.ko\n");
        assert_eq!(fs::read(r.join("order2")).unwrap(), b"kernel/a.ko\n");
        assert!(r.join("kernel").is_dir());
        assert_eq!(
            fs::read_link(r.join("build")).unwrap(),
            Path::new("/usr/src/linux-headers")
        );
        assert!(!dest.join("usr/lib/modules/6.1.0-49-amd64").exists());
        assert!(dest.join("usr/lib").is_dir() && !dest.join("usr/lib/firmware").exists());
    }
}
