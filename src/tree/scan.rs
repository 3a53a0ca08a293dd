//! Scan a real root into a [`Manifest`]: `lstat` and xattrs of every path
//! (never following symlinks), hard links found by (device, inode), file
//! contents hashed in parallel and streamed (files of at most
//! [`INLINE_MAX`] bytes are read whole and kept in the manifest).
//!
//! A tree genboot cannot represent exactly is refused with an error naming
//! the path and what to do, never imported approximately: a mount point of
//! another file system inside the tree, overlayfs's own `trusted.overlay.*`
//! xattrs (they would act on the overlay that mounts the image), xattr
//! namespaces EROFS cannot store, symlink targets over 4095 bytes, device
//! numbers over EROFS's limits (major ≥ 4096, minor ≥ 2^20), a file that
//! changes size while it is hashed. Names with newlines, spaces or any other
//! byte, sockets, fifos and device nodes are fine.

use super::manifest::{join, Entry, Kind, Manifest, Meta, Mtime, Sha256Digest, INLINE_MAX};
use super::objects::{Contents, Source};
use super::{io_err, sys, TreeError};
use rayon::prelude::*;
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A scanned tree: its manifest and where each content is.
#[derive(Debug, Clone)]
pub struct Scanned {
    pub manifest: Manifest,
    pub contents: Contents,
    /// The directory that was scanned.
    pub root: PathBuf,
    /// Its device (`st_dev`): objects can be moved from it when the store is
    /// on the same one.
    pub dev: u64,
}

struct Pending {
    path: Vec<u8>,
    host: PathBuf,
    meta: Meta,
    kind: PendingKind,
    link_key: Option<(u64, u64)>,
}

enum PendingKind {
    Ready(Kind),
    File { size: u64 },
}

/// Scan `root`; mtimes later than `epoch` become `epoch`.
pub fn scan_tree(root: &Path, epoch: Option<i64>) -> Result<Scanned, TreeError> {
    let rmeta = fs::symlink_metadata(root).map_err(io_err("read", root))?;
    if !rmeta.is_dir() {
        return Err(TreeError::Hostile {
            path: root.to_path_buf(),
            why: "is not a directory".into(),
            hint: "pass the root directory of the tree to import",
        });
    }
    let dev = rmeta.dev();
    let mut pending = Vec::new();
    let mut stack = vec![(b"/".to_vec(), root.to_path_buf())];
    while let Some((path, host)) = stack.pop() {
        let meta = fs::symlink_metadata(&host).map_err(io_err("stat", &host))?;
        let p = pend(&path, &host, &meta, dev, epoch)?;
        if meta.is_dir() {
            for item in fs::read_dir(&host).map_err(io_err("list", &host))? {
                let item = item.map_err(io_err("list", &host))?;
                let name = item.file_name();
                stack.push((join(&path, name.as_bytes()), item.path()));
            }
        }
        pending.push(p);
    }
    pending.sort_by(|a, b| a.path.cmp(&b.path));

    // Hard links: the first path (in manifest order) of an inode holds it.
    let mut first: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut links = Vec::new();
    for (i, p) in pending.iter().enumerate() {
        if let Some(k) = p.link_key {
            match first.get(&k) {
                Some(t) => links.push((i, t.clone())),
                None => {
                    first.insert(k, p.path.clone());
                }
            }
        }
    }
    let link_of: HashMap<usize, Vec<u8>> = links.into_iter().collect();

    // Hash the inodes' contents in parallel.
    let hashed: Vec<(Entry, Option<(Sha256Digest, PathBuf)>)> = pending
        .par_iter()
        .enumerate()
        .map(|(i, p)| -> Result<_, TreeError> {
            if let Some(t) = link_of.get(&i) {
                return Ok((Entry::Hardlink { target: t.clone() }, None));
            }
            match &p.kind {
                PendingKind::Ready(k) => Ok((
                    Entry::Inode {
                        meta: p.meta.clone(),
                        kind: k.clone(),
                    },
                    None,
                )),
                PendingKind::File { size } => {
                    let (kind, src) = hash_one(&p.host, *size)?;
                    Ok((
                        Entry::Inode {
                            meta: p.meta.clone(),
                            kind,
                        },
                        src,
                    ))
                }
            }
        })
        .collect::<Result<_, _>>()?;

    let mut manifest = Manifest::new(epoch);
    let mut contents = Contents::default();
    for (p, (entry, src)) in pending.into_iter().zip(hashed) {
        if let Some((sha, host)) = src {
            contents.map.entry(sha).or_insert(Source::Path(host));
        }
        manifest.entries.insert(p.path, entry);
    }
    manifest.validate().map_err(|cause| TreeError::Manifest {
        path: root.to_path_buf(),
        cause,
    })?;
    Ok(Scanned {
        manifest,
        contents,
        root: root.to_path_buf(),
        dev,
    })
}

fn hostile(host: &Path, why: String, hint: &'static str) -> TreeError {
    TreeError::Hostile {
        path: host.to_path_buf(),
        why,
        hint,
    }
}

fn pend(
    path: &[u8],
    host: &Path,
    st: &fs::Metadata,
    dev: u64,
    epoch: Option<i64>,
) -> Result<Pending, TreeError> {
    if st.dev() != dev {
        return Err(hostile(
            host,
            "is a mount point of another file system inside the tree".into(),
            "unmount it (or import a copy of the tree without it): genboot imports one file system",
        ));
    }
    let mut meta = Meta::new(
        st.mode() & 0o7777,
        st.uid(),
        st.gid(),
        Mtime::new(st.mtime(), st.mtime_nsec() as u32).clamp(epoch),
    );
    meta.xattrs = read_xattrs(host)?;
    let ft = st.file_type();
    let kind = if ft.is_dir() {
        PendingKind::Ready(Kind::Dir)
    } else if ft.is_file() {
        PendingKind::File { size: st.len() }
    } else if ft.is_symlink() {
        let target = fs::read_link(host).map_err(io_err("read link", host))?;
        let t = target.as_os_str().as_bytes().to_vec();
        if t.is_empty() || t.len() > 4095 {
            return Err(hostile(
                host,
                format!("is a symlink with a {}-byte target", t.len()),
                "symlink targets must be 1…4095 bytes (PATH_MAX); fix or remove the link",
            ));
        }
        PendingKind::Ready(Kind::Symlink { target: t })
    } else if ft.is_char_device() || ft.is_block_device() {
        let (major, minor) = split_dev(st.rdev());
        if major >= 4096 || minor >= 1 << 20 {
            return Err(hostile(
                host,
                format!("is device {major}:{minor}, beyond what EROFS stores (major < 4096, minor < 1048576)"),
                "remove the node from the tree; udev creates device nodes at boot",
            ));
        }
        PendingKind::Ready(if ft.is_char_device() {
            Kind::CharDevice { major, minor }
        } else {
            Kind::BlockDevice { major, minor }
        })
    } else if ft.is_fifo() {
        PendingKind::Ready(Kind::Fifo)
    } else if ft.is_socket() {
        PendingKind::Ready(Kind::Socket)
    } else {
        return Err(hostile(
            host,
            "has an unknown file type".into(),
            "remove it from the tree",
        ));
    };
    let link_key = (!ft.is_dir() && st.nlink() > 1).then(|| (st.dev(), st.ino()));
    Ok(Pending {
        path: path.to_vec(),
        host: host.to_path_buf(),
        meta,
        kind,
        link_key,
    })
}

/// `st_rdev` → (major, minor), glibc's encoding.
pub fn split_dev(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// The xattrs of `host` that a tree may carry, checked.
pub(crate) fn read_xattrs(
    host: &Path,
) -> Result<std::collections::BTreeMap<Vec<u8>, Vec<u8>>, TreeError> {
    let mut out = std::collections::BTreeMap::new();
    for name in sys::list_xattrs(host).map_err(io_err("list xattrs of", host))? {
        if name.starts_with(b"trusted.overlay.") {
            return Err(hostile(
                host,
                format!(
                    "carries the overlayfs xattr {}, which would act on the overlay that mounts the tree",
                    String::from_utf8_lossy(&name)
                ),
                "import a plain tree, not an overlay layer (copy it out of the overlay first), or remove the xattr (setfattr -x)",
            ));
        }
        let ok = [&b"user."[..], b"trusted.", b"security."]
            .iter()
            .any(|p| name.starts_with(p))
            || name == b"system.posix_acl_access"
            || name == b"system.posix_acl_default";
        if !ok {
            return Err(hostile(
                host,
                format!(
                    "carries xattr {}, a namespace EROFS cannot store",
                    String::from_utf8_lossy(&name)
                ),
                "only user.*, trusted.*, security.* and POSIX ACLs are kept; remove it (setfattr -x)",
            ));
        }
        let value = match sys::get_xattr(host, &name) {
            Ok(v) => v,
            // Removed between list and get: not there.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(e) => return Err(io_err("read xattrs of", host)(e)),
        };
        out.insert(name, value);
    }
    Ok(out)
}

type Hashed = (Kind, Option<(Sha256Digest, PathBuf)>);

fn hash_one(host: &Path, size: u64) -> Result<Hashed, TreeError> {
    let changed = |now: u64| {
        hostile(
            host,
            format!("changed while it was read ({size} bytes at lstat, {now} when hashed)"),
            "do not change the tree while genboot imports it",
        )
    };
    if size <= INLINE_MAX {
        let mut f = fs::File::open(host).map_err(io_err("read", host))?;
        let mut data = Vec::with_capacity(size as usize);
        f.by_ref()
            .take(INLINE_MAX + 1)
            .read_to_end(&mut data)
            .map_err(io_err("read", host))?;
        if data.len() as u64 != size {
            return Err(changed(data.len() as u64));
        }
        return Ok((Kind::file_with(&data), None));
    }
    let (n, sha) = super::objects::hash_file(host).map_err(io_err("read", host))?;
    if n != size {
        return Err(changed(n));
    }
    Ok((
        Kind::File {
            size,
            sha256: sha,
            inline: None,
        },
        Some((sha, host.to_path_buf())),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn devices_split_like_glibc() {
        // makedev(1, 3) = 0x103; makedev(259, 70000)
        assert_eq!(split_dev(0x103), (1, 3));
        let (ma, mi) = (259u64, 70_000u64);
        let dev = ((ma & 0xfff) << 8) | ((ma & !0xfff) << 32) | (mi & 0xff) | ((mi & !0xff) << 12);
        assert_eq!(split_dev(dev), (259, 70_000));
    }

    #[test]
    fn scans_odd_names_links_and_modes() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir(r.join("d")).unwrap();
        fs::write(r.join("d/new\nline name"), b"small").unwrap();
        fs::write(r.join("d/big"), vec![7u8; 5000]).unwrap();
        fs::write(r.join("d/big-copy"), vec![7u8; 5000]).unwrap();
        fs::hard_link(r.join("d/big"), r.join("a-link")).unwrap();
        fs::set_permissions(r.join("d/big"), fs::Permissions::from_mode(0o4750)).unwrap();
        symlink("d/big", r.join("sym")).unwrap();
        let s = scan_tree(r, Some(1)).unwrap();
        let m = &s.manifest;
        // "/a-link" sorts before "/d/big": it holds the inode.
        let Some(Entry::Inode {
            meta,
            kind: Kind::File { size: 5000, .. },
        }) = m.get(b"/a-link")
        else {
            panic!("{m:?}")
        };
        assert_eq!(meta.mode, 0o4750);
        assert_eq!(
            m.get(b"/d/big"),
            Some(&Entry::Hardlink {
                target: b"/a-link".to_vec()
            })
        );
        assert!(matches!(
            m.get(b"/d/new\nline name"),
            Some(Entry::Inode { kind: Kind::File { inline: Some(d), .. }, .. }) if d == b"small"
        ));
        assert!(
            matches!(m.get(b"/sym"), Some(Entry::Inode { kind: Kind::Symlink { target }, .. }) if target == b"d/big")
        );
        assert_eq!(m.objects().len(), 1, "same content, one object");
        assert_eq!(s.contents.map.len(), 1);
        // mtimes clamped to the epoch (1 s after 1970).
        assert!(m
            .entries
            .values()
            .filter_map(|e| e.meta())
            .all(|x| x.mtime == Mtime::new(1, 0)));
        assert_eq!(Manifest::parse(&m.to_text()).unwrap(), *m);
    }

    #[test]
    fn overlay_xattrs_are_refused_naming_the_path() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("f"), b"x").unwrap();
        let f = t.path().join("f");
        if sys::get_xattr(&f, b"trusted.overlay.opaque").is_err() {
            let c = std::ffi::CString::new(f.as_os_str().as_bytes()).unwrap();
            #[allow(unsafe_code)]
            // SAFETY: valid NUL-terminated strings and a 1-byte value.
            let rc = unsafe {
                libc::lsetxattr(
                    c.as_ptr(),
                    c"trusted.overlay.opaque".as_ptr(),
                    b"y".as_ptr().cast(),
                    1,
                    0,
                )
            };
            assert_eq!(
                rc, 0,
                "setting a trusted xattr needs root (tests run as root)"
            );
        }
        let e = scan_tree(t.path(), None).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&f.display().to_string()), "{msg}");
        assert!(msg.contains("trusted.overlay.opaque"), "{msg}");
    }
}
