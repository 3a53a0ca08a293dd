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
#[derive(Debug, Clone, PartialEq, Eq)]
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
