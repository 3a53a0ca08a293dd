//! Content objects: `store/objects/ab/<62 more hex digits>`, one plain file
//! per distinct file content (SHA-256), shared by every tree.
//!
//! An object is a regular file, mode 0444, owned by the owner of the
//! `objects` directory (root on a real system), without xattrs: all real
//! metadata lives in each tree's manifest and metadata image. Objects are
//! written only by [`crate::tree::import()`]: a new object is complete and
//! flushed to disk before it gets its name (content moved from a staging
//! tree on the same file system, or copied into `objects/.tmp-*` first), and
//! a tree object is renamed into place only after every object it names is.
//! The overlay that shows a tree uses this directory as its data layer;
//! `trusted.overlay.redirect=/ab/cdef…` in the image points here.

use super::manifest::{hex, parse_sha256, Sha256Digest};
use super::{io_err, sys, TreeError};
use crate::store::{Mismatch, Store};
use rayon::prelude::*;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the objects directory inside the store.
pub const OBJECTS_DIR: &str = "objects";

/// The object store below a [`Store`].
#[derive(Debug, Clone)]
pub struct Objects {
    pub dir: PathBuf,
}

/// Where the content of a file comes from while importing.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file of the tree being imported.
    Path(PathBuf),
    /// Content made by genboot (a rule's rewrite, a unit file).
    Bytes(Arc<Vec<u8>>),
}

/// The contents of a tree being imported: each digest once.
#[derive(Debug, Clone, Default)]
pub struct Contents {
    pub map: HashMap<Sha256Digest, Source>,
}

impl Contents {
    /// Read a content (small files only: rules read `passwd`, `status`, …).
    pub fn read(&self, sha: &Sha256Digest) -> io::Result<Vec<u8>> {
        match self.map.get(sha) {
            Some(Source::Path(p)) => fs::read(p),
            Some(Source::Bytes(b)) => Ok(b.to_vec()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no content {} in this import", hex(sha)),
            )),
        }
    }

    /// Add content made by genboot; returns its digest.
    pub fn add_bytes(&mut self, data: Vec<u8>) -> Sha256Digest {
        use sha2::{Digest, Sha256};
        let sha: Sha256Digest = Sha256::digest(&data).into();
        self.map.insert(sha, Source::Bytes(Arc::new(data)));
        sha
    }
}

/// SHA-256 and size of a file, streamed.
pub fn hash_file(path: &Path) -> io::Result<(u64, Sha256Digest)> {
    let f = fs::File::open(path)?;
    genboot_format::storehash::file_digest(f, None)
}

impl Objects {
    pub fn of(store: &Store) -> Objects {
        Objects {
            dir: store.dir.join(OBJECTS_DIR),
        }
    }

    /// `objects/ab/cdef…`.
    pub fn path(&self, sha: &Sha256Digest) -> PathBuf {
        let h = hex(sha);
        self.dir.join(&h[..2]).join(&h[2..])
    }

    pub fn contains(&self, sha: &Sha256Digest) -> bool {
        fs::symlink_metadata(self.path(sha)).is_ok_and(|m| m.is_file())
    }

    /// Every object: digest and size (in no particular order).
    pub fn list(&self) -> Result<Vec<(Sha256Digest, u64)>, TreeError> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err("list", &self.dir)(e)),
        };
        for fan in rd {
            let fan = fan.map_err(io_err("list", &self.dir))?;
            let name = fan.file_name();
            let Some(prefix) = name.to_str().filter(|n| n.len() == 2) else {
                continue;
            };
            let fan_path = fan.path();
            for item in fs::read_dir(&fan_path).map_err(io_err("list", &fan_path))? {
                let item = item.map_err(io_err("list", &fan_path))?;
                let Some(rest) = item.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let Some(sha) = parse_sha256(&format!("{prefix}{rest}")) else {
                    continue;
                };
                let meta = item.metadata().map_err(io_err("stat", &item.path()))?;
                out.push((sha, meta.len()));
            }
        }
        Ok(out)
    }

    /// Temporary directories of interrupted imports (`objects/.tmp-*`).
    pub fn leftovers(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for item in rd.flatten() {
                if item.file_name().to_string_lossy().starts_with(".tmp-") {
                    out.push(item.path());
                }
            }
        }
        out.sort();
        out
    }

    /// Owner the objects must have: the owner of the objects directory
    /// (root on a real system).
    pub fn owner(&self) -> Result<(u32, u32), TreeError> {
        let m = fs::metadata(&self.dir).map_err(io_err("stat", &self.dir))?;
        Ok((m.uid(), m.gid()))
    }

    /// Check one object: a regular file of `size` (when given), mode 0444,
    /// owned by `owner`, no xattrs but an SELinux label and, with `read`,
    /// content hashing to its name. `None` when it is right.
    pub fn check(
        &self,
        sha: &Sha256Digest,
        size: Option<u64>,
        owner: (u32, u32),
        read: bool,
    ) -> Option<String> {
        let path = self.path(sha);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Some("missing".into()),
            Err(e) => return Some(format!("cannot stat: {e}")),
        };
        if !meta.is_file() {
            return Some("not a regular file".into());
        }
        if meta.permissions().mode() & 0o7777 != 0o444 {
            return Some(format!(
                "mode {:04o}, should be 0444",
                meta.permissions().mode() & 0o7777
            ));
        }
        if (meta.uid(), meta.gid()) != owner {
            return Some(format!(
                "owned by {}:{}, should be {}:{}",
                meta.uid(),
                meta.gid(),
                owner.0,
                owner.1
            ));
        }
        if let Some(s) = size {
            if meta.len() != s {
                return Some(format!("{} bytes, the manifest says {s}", meta.len()));
            }
        }
        match sys::list_xattrs(&path) {
            Ok(names) => {
                if let Some(n) = names.iter().find(|n| n.as_slice() != b"security.selinux") {
                    return Some(format!(
                        "carries xattr {}; objects are plain files",
                        String::from_utf8_lossy(n)
                    ));
                }
            }
            Err(e) => return Some(format!("cannot list xattrs: {e}")),
        }
        if !read {
            return None;
        }
        match hash_file(&path) {
            Ok((_, d)) if d == *sha => None,
            Ok((_, d)) => Some(format!("content hashes to {}", hex(&d))),
            Err(e) => Some(format!("cannot read: {e}")),
        }
    }

    /// Check every object in the directory (parallel), e.g. for `genboot
    /// verify`; also reports leftovers of interrupted imports.
    pub fn verify_all(&self) -> Result<Vec<Mismatch>, TreeError> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        let owner = self.owner()?;
        let list = self.list()?;
        let mut out: Vec<Mismatch> = list
            .par_iter()
            .filter_map(|(sha, _)| {
                self.check(sha, None, owner, true).map(|problem| Mismatch {
                    object: format!("{OBJECTS_DIR}/{}", rel(sha)),
                    problem,
                })
            })
            .collect();
        out.sort_by(|a, b| a.object.cmp(&b.object));
        Ok(out)
    }

    /// Delete one object.
    pub fn delete(&self, sha: &Sha256Digest) -> Result<(), TreeError> {
        let p = self.path(sha);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("delete", &p)(e)),
        }
    }

    /// Create `objects/` (its owner is the owner every object gets).
    pub(crate) fn create(&self) -> Result<(), TreeError> {
        fs::create_dir_all(&self.dir).map_err(io_err("create", &self.dir))
    }

    /// Make a file a plain object in place: owner, mode 0444, no xattrs.
    pub(crate) fn make_plain(path: &Path, owner: (u32, u32)) -> Result<(), TreeError> {
        std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1))
            .map_err(io_err("chown", path))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o444))
            .map_err(io_err("chmod", path))?;
        for name in sys::list_xattrs(path).map_err(io_err("list xattrs of", path))? {
            if name == b"security.selinux" {
                continue;
            }
            sys::remove_xattr(path, &name).map_err(io_err("remove xattrs of", path))?;
        }
        Ok(())
    }

    /// Write a content into `tmp/<hex>` as a plain object (not synced).
    pub(crate) fn write_staged(
        tmp: &Path,
        sha: &Sha256Digest,
        source: &Source,
        owner: (u32, u32),
    ) -> Result<PathBuf, TreeError> {
        let dest = tmp.join(hex(sha));
        match source {
            Source::Path(p) => {
                let mut from = fs::File::open(p).map_err(io_err("read", p))?;
                let mut to = fs::File::create(&dest).map_err(io_err("create", &dest))?;
                io::copy(&mut from, &mut to).map_err(io_err("copy", p))?;
            }
            Source::Bytes(b) => fs::write(&dest, b.as_slice()).map_err(io_err("write", &dest))?,
        }
        Self::make_plain(&dest, owner)?;
        Ok(dest)
    }

    /// Rename a prepared file (plain, flushed) to its object name.
    pub(crate) fn place(&self, from: &Path, sha: &Sha256Digest) -> Result<(), TreeError> {
        let dest = self.path(sha);
        let fan = dest.parent().expect("objects/ab");
        match fs::create_dir(fan) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create", fan)(e)),
        }
        fs::rename(from, &dest).map_err(io_err("rename into place", &dest))
    }
}

/// `ab/cdef…` of a digest.
pub fn rel(sha: &Sha256Digest) -> String {
    let h = hex(sha);
    format!("{}/{}", &h[..2], &h[2..])
}
