//! The in-memory tree: entries added by path, validated on the way in, so
//! that [`Image::write`] can only fail on I/O or on EROFS's size limits.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::format;

/// Metadata of one inode: everything `stat` shows except type, size, nlink
/// and rdev (which follow from the entry), plus xattrs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, seconds since the epoch (may be negative).
    pub mtime: i64,
    /// Nanoseconds, `< 1_000_000_000`.
    pub mtime_nsec: u32,
    /// Full xattr names (`user.x`, `security.capability`, `trusted.overlay.opaque`,
    /// `system.posix_acl_access`) to raw values.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Meta {
    /// `mode` (permission bits), owner and group; mtime 0, no xattrs.
    pub fn new(mode: u32, uid: u32, gid: u32) -> Meta {
        Meta {
            mode,
            uid,
            gid,
            mtime: 0,
            mtime_nsec: 0,
            xattrs: BTreeMap::new(),
        }
    }

    /// With this modification time.
    pub fn mtime(mut self, sec: i64, nsec: u32) -> Meta {
        self.mtime = sec;
        self.mtime_nsec = nsec;
        self
    }

    /// With this xattr (replacing one of the same name).
    pub fn xattr(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Meta {
        self.xattrs
            .insert(name.as_ref().to_vec(), value.as_ref().to_vec());
        self
    }
}

/// Where a regular file's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileData {
    /// The data is in the image: whole blocks in the data area, the tail
    /// (size % 4096) packed after the inode when that is cheaper than a
    /// block of its own, so a small file costs only its bytes. Use it for small files of a metadata
    /// image (≤ [`INLINE_MAX`]) and for every file of a self-contained image.
    Bytes(Vec<u8>),
    /// Like `Bytes`, read from `path` while the image is written (for
    /// self-contained images of real trees); `size` is checked then.
    File { path: PathBuf, size: u64 },
    /// Metadata only: a data-less file of `size` bytes (one null chunk,
    /// `EROFS_INODE_CHUNK_BASED`) with `trusted.overlay.metacopy` and
    /// `trusted.overlay.redirect = redirect`, so an overlay with the object
    /// store as a lower layer serves the content from `<objects><redirect>`.
    /// `verity`: the object's fs-verity SHA-256 digest, stored in the metacopy
    /// xattr for `verity=require` (kernel ≥ 6.6); `None` writes an empty
    /// metacopy value. A zero `size` makes an ordinary empty file.
    External {
        size: u64,
        redirect: String,
        verity: Option<[u8; 32]>,
    },
}

/// The inline threshold genboot uses: files of at most this many bytes are
/// kept in a metadata image ([`FileData::Bytes`]) instead of the object store.
/// 64 bytes, as composefs: it covers the many tiny files of a Debian root
/// (empty-ish conffiles, `.keep`s, one-line configs) without growing every
/// generation's image by duplicated content.
pub const INLINE_MAX: u64 = 64;

impl FileData {
    /// An object of the content store: `redirect = "/ab/cdef…"` from the
    /// content's SHA-256 (no fs-verity digest).
    pub fn object(size: u64, sha256: &[u8; 32]) -> FileData {
        FileData::External {
            size,
            redirect: object_redirect(sha256),
            verity: None,
        }
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            FileData::Bytes(b) => b.len() as u64,
            FileData::File { size, .. } | FileData::External { size, .. } => *size,
        }
    }
}

/// `/ab/cdef…` for a SHA-256: the path of the object below the store's
/// `objects/` directory, as overlayfs follows it.
pub fn object_redirect(sha256: &[u8; 32]) -> String {
    let hex: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
    format!("/{}/{}", &hex[..2], &hex[2..])
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Dir(BTreeMap<Vec<u8>, usize>),
    File(FileData),
    Symlink(Vec<u8>),
    Device { block: bool, major: u32, minor: u32 },
    Fifo,
    Socket,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub meta: Meta,
    pub kind: Kind,
}

impl Node {
    pub fn is_whiteout(&self) -> bool {
        matches!(
            self.kind,
            Kind::Device {
                block: false,
                major: 0,
                minor: 0
            }
        )
    }
}

/// A tree to be written as one EROFS image. Node 0 is the root directory
/// (mode 0755, root:root, mtime 0 until [`Image::add_dir`] sets it with `/`).
#[derive(Debug, Clone)]
pub struct Image {
    pub(crate) nodes: Vec<Node>,
    pub(crate) uuid: Option<[u8; 16]>,
    pub(crate) object_whiteouts: bool,
}

impl Default for Image {
    fn default() -> Self {
        Image::new()
    }
}

impl Image {
    pub fn new() -> Image {
        Image {
            nodes: vec![Node {
                meta: Meta::new(0o755, 0, 0),
                kind: Kind::Dir(BTreeMap::new()),
            }],
            uuid: None,
            object_whiteouts: false,
        }
    }

    /// A directory; `/` (or an empty path) sets the root's metadata.
    pub fn add_dir(&mut self, path: impl AsRef<Path>, meta: Meta) -> Result<()> {
        let path = path.as_ref();
        let comps = components(path)?;
        check_meta(path, &meta)?;
        if comps.is_empty() {
            self.nodes[0].meta = meta;
            return Ok(());
        }
        self.insert(path, &comps, meta, Kind::Dir(BTreeMap::new()))
    }

    /// A regular file with its data in the image or in the object store.
    pub fn add_file(&mut self, path: impl AsRef<Path>, meta: Meta, data: FileData) -> Result<()> {
        let path = path.as_ref();
        let comps = non_root(path)?;
        check_meta(path, &meta)?;
        if let FileData::External { size, redirect, .. } = &data {
            if *size > 0 {
                check_redirect(path, redirect)?;
                for name in [
                    &b"trusted.overlay.metacopy"[..],
                    b"trusted.overlay.redirect",
                ] {
                    if meta.xattrs.contains_key(name) {
                        return Err(Error::InvalidXattr {
                            path: path.to_path_buf(),
                            name: String::from_utf8_lossy(name).into_owned(),
                            reason: "is written by the image writer for FileData::External; remove it from the metadata".into(),
                        });
                    }
                }
            }
        }
        self.insert(path, &comps, meta, Kind::File(data))
    }

    /// A symbolic link to `target` (1…4095 bytes, no NUL).
    pub fn add_symlink(
        &mut self,
        path: impl AsRef<Path>,
        meta: Meta,
        target: impl AsRef<OsStr>,
    ) -> Result<()> {
        let path = path.as_ref();
        let comps = non_root(path)?;
        check_meta(path, &meta)?;
        let target = target.as_ref().as_bytes();
        let bad = if target.is_empty() {
            Some("is empty")
        } else if target.len() > 4095 {
            Some("is longer than 4095 bytes (PATH_MAX)")
        } else if target.contains(&0) {
            Some("contains a NUL byte")
        } else {
            None
        };
        if let Some(reason) = bad {
            return Err(Error::InvalidSymlink {
                path: path.to_path_buf(),
                reason,
            });
        }
        self.insert(path, &comps, meta, Kind::Symlink(target.to_vec()))
    }

    /// A character device `major:minor` (major < 4096, minor < 2^20).
    pub fn add_char_device(
        &mut self,
        path: impl AsRef<Path>,
        meta: Meta,
        major: u32,
        minor: u32,
    ) -> Result<()> {
        self.add_device(path.as_ref(), meta, false, major, minor)
    }

    /// A block device `major:minor` (major < 4096, minor < 2^20).
    pub fn add_block_device(
        &mut self,
        path: impl AsRef<Path>,
        meta: Meta,
        major: u32,
        minor: u32,
    ) -> Result<()> {
        self.add_device(path.as_ref(), meta, true, major, minor)
    }

    /// An overlayfs whiteout: a character device 0:0. In an overlay whose
    /// lower layer is this image it hides the same name in the layers below
    /// (and is itself invisible).
    pub fn add_whiteout(&mut self, path: impl AsRef<Path>, meta: Meta) -> Result<()> {
        self.add_device(path.as_ref(), meta, false, 0, 0)
    }

    /// A named pipe.
    pub fn add_fifo(&mut self, path: impl AsRef<Path>, meta: Meta) -> Result<()> {
        let path = path.as_ref();
        let comps = non_root(path)?;
        check_meta(path, &meta)?;
        self.insert(path, &comps, meta, Kind::Fifo)
    }

    /// A socket inode.
    pub fn add_socket(&mut self, path: impl AsRef<Path>, meta: Meta) -> Result<()> {
        let path = path.as_ref();
        let comps = non_root(path)?;
        check_meta(path, &meta)?;
        self.insert(path, &comps, meta, Kind::Socket)
    }

    /// A second name for the inode at `target` (any kind except directories
    /// and whiteouts); both names share metadata, and nlink counts them.
    pub fn add_hardlink(&mut self, path: impl AsRef<Path>, target: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let target = target.as_ref();
        let comps = non_root(path)?;
        let tcomps = components(target)?;
        let Some(node) = self.lookup(&tcomps) else {
            return Err(Error::LinkTargetMissing {
                path: path.to_path_buf(),
                target: target.to_path_buf(),
            });
        };
        let reason = match &self.nodes[node].kind {
            Kind::Dir(_) => Some("it is a directory"),
            _ if self.nodes[node].is_whiteout() => Some("it is a whiteout"),
            _ => None,
        };
        if let Some(reason) = reason {
            return Err(Error::LinkTargetInvalid {
                path: path.to_path_buf(),
                target: target.to_path_buf(),
                reason,
            });
        }
        let (parent, name) = self.parent_of(path, &comps)?;
        let Kind::Dir(children) = &mut self.nodes[parent].kind else {
            unreachable!("parent_of returns directories")
        };
        if children.contains_key(name) {
            return Err(Error::AlreadyExists {
                path: path.to_path_buf(),
            });
        }
        children.insert(name.to_vec(), node);
        Ok(())
    }

    /// For the legacy overlay form `lowerdir=<image>:<objects>` (kernels
    /// without data-only lower layers, Debian's 6.1): give the image root
    /// `trusted.overlay.opaque=y` and a whiteout for each object fan-out name
    /// `00`…`ff` the tree does not use itself, so the object store's
    /// directories do not show up in `/`. A root *directory* with such a name
    /// is made opaque instead, so it does not merge with the fan-out directory.
    /// Applied when the image is written; harmless with `::`.
    pub fn set_object_whiteouts(&mut self, on: bool) {
        self.object_whiteouts = on;
    }

    /// Use this volume UUID instead of one derived from the image's metadata
    /// (e.g. from a tree hash that also covers the content of
    /// [`FileData::File`] data).
    pub fn set_uuid(&mut self, uuid: [u8; 16]) {
        self.uuid = Some(uuid);
    }

    /// Number of paths in the image (hard links counted per name, root included).
    pub fn path_count(&self) -> usize {
        1 + self
            .nodes
            .iter()
            .map(|n| match &n.kind {
                Kind::Dir(c) => c.len(),
                _ => 0,
            })
            .sum::<usize>()
    }

    fn add_device(
        &mut self,
        path: &Path,
        meta: Meta,
        block: bool,
        major: u32,
        minor: u32,
    ) -> Result<()> {
        let comps = non_root(path)?;
        check_meta(path, &meta)?;
        if major >= 1 << 12 || minor >= 1 << 20 {
            return Err(Error::InvalidPath {
                path: path.to_path_buf(),
                reason:
                    "device number does not fit EROFS's 32-bit rdev (major < 4096, minor < 2^20)",
            });
        }
        self.insert(
            path,
            &comps,
            meta,
            Kind::Device {
                block,
                major,
                minor,
            },
        )
    }

    fn lookup(&self, comps: &[&[u8]]) -> Option<usize> {
        let mut cur = 0;
        for c in comps {
            let Kind::Dir(children) = &self.nodes[cur].kind else {
                return None;
            };
            cur = *children.get(*c)?;
        }
        Some(cur)
    }

    fn parent_of<'p>(&self, path: &Path, comps: &[&'p [u8]]) -> Result<(usize, &'p [u8])> {
        let (name, dirs) = comps.split_last().expect("non-root path");
        let mut cur = 0;
        for (i, c) in dirs.iter().enumerate() {
            let Kind::Dir(children) = &self.nodes[cur].kind else {
                unreachable!("checked below")
            };
            cur = *children.get(*c).ok_or_else(|| Error::ParentMissing {
                path: path.to_path_buf(),
            })?;
            if !matches!(self.nodes[cur].kind, Kind::Dir(_)) {
                let parent: PathBuf = dirs[..=i].iter().map(|c| OsStr::from_bytes(c)).collect();
                return Err(Error::ParentNotDir {
                    path: path.to_path_buf(),
                    parent: Path::new("/").join(parent),
                });
            }
        }
        Ok((cur, name))
    }

    fn insert(&mut self, path: &Path, comps: &[&[u8]], meta: Meta, kind: Kind) -> Result<()> {
        let (parent, name) = self.parent_of(path, comps)?;
        let id = self.nodes.len();
        let Kind::Dir(children) = &mut self.nodes[parent].kind else {
            unreachable!("parent_of returns directories")
        };
        if children.contains_key(name) {
            return Err(Error::AlreadyExists {
                path: path.to_path_buf(),
            });
        }
        children.insert(name.to_vec(), id);
        self.nodes.push(Node { meta, kind });
        Ok(())
    }
}

/// The names of `path` below the root (`/a/b`, `a/b` and `./a/b` are the same).
fn components(path: &Path) -> Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => {
                let n = n.as_bytes();
                if n.len() > format::NAME_MAX {
                    return Err(Error::InvalidPath {
                        path: path.to_path_buf(),
                        reason: "a name is longer than 255 bytes",
                    });
                }
                out.push(n);
            }
            Component::ParentDir => {
                return Err(Error::InvalidPath {
                    path: path.to_path_buf(),
                    reason: "`..` is not allowed; give the path from the image root",
                })
            }
            Component::Prefix(_) => unreachable!("no prefixes on unix"),
        }
    }
    Ok(out)
}

fn non_root(path: &Path) -> Result<Vec<&[u8]>> {
    let comps = components(path)?;
    if comps.is_empty() {
        return Err(Error::InvalidPath {
            path: path.to_path_buf(),
            reason: "the root is a directory; set its metadata with add_dir(\"/\", meta)",
        });
    }
    Ok(comps)
}

fn check_meta(path: &Path, meta: &Meta) -> Result<()> {
    if meta.mode & !0o7777 != 0 {
        return Err(Error::InvalidMode {
            path: path.to_path_buf(),
            mode: meta.mode,
        });
    }
    if meta.mtime_nsec >= 1_000_000_000 {
        return Err(Error::InvalidPath {
            path: path.to_path_buf(),
            reason: "mtime_nsec must be below 1_000_000_000",
        });
    }
    for (name, value) in &meta.xattrs {
        check_xattr(path, name, value)?;
    }
    Ok(())
}

/// Split a full xattr name into EROFS's `e_name_index` and the stored rest.
pub(crate) fn split_xattr_name(name: &[u8]) -> Option<(u8, &[u8])> {
    format::XATTR_PREFIXES
        .iter()
        .find_map(|(prefix, index, exact)| {
            let rest = name.strip_prefix(*prefix)?;
            if *exact != rest.is_empty() {
                return None;
            }
            Some((*index, rest))
        })
}

fn check_xattr(path: &Path, name: &[u8], value: &[u8]) -> Result<()> {
    let err = |reason: String| Error::InvalidXattr {
        path: path.to_path_buf(),
        name: String::from_utf8_lossy(name).into_owned(),
        reason,
    };
    if name.contains(&0) {
        return Err(err("the name contains a NUL byte".into()));
    }
    let Some((_, rest)) = split_xattr_name(name) else {
        return Err(err(
            "EROFS stores only user.*, trusted.*, security.*, lustre.* and system.posix_acl_{access,default} \
             (and not an empty name after the prefix); drop it from the tree or convert it"
                .into(),
        ));
    };
    if rest.len() > 255 {
        return Err(err(
            "the name after its prefix is longer than 255 bytes".into()
        ));
    }
    if value.len() > usize::from(u16::MAX) {
        return Err(err(format!(
            "the value has {} bytes; EROFS stores at most 65535",
            value.len()
        )));
    }
    Ok(())
}

fn check_redirect(path: &Path, redirect: &str) -> Result<()> {
    let reason = if !redirect.starts_with('/') {
        Some("must be absolute (`/ab/cdef…`, relative to the objects directory)")
    } else if redirect.len() < 2 {
        Some("names no object")
    } else if redirect.contains('\0') {
        Some("contains a NUL byte")
    } else if redirect.len() > 4095 {
        Some("is longer than 4095 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidRedirect {
            path: path.to_path_buf(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Meta {
        Meta::new(0o644, 0, 0)
    }

    #[test]
    fn paths_are_normalised_from_the_root() {
        let mut img = Image::new();
        img.add_dir("/usr", Meta::new(0o755, 0, 0)).unwrap();
        img.add_dir("usr/bin", Meta::new(0o755, 0, 0)).unwrap();
        img.add_file("./usr/bin/x", m(), FileData::Bytes(vec![1]))
            .unwrap();
        assert!(matches!(
            img.add_file("/usr//bin/x", m(), FileData::Bytes(vec![])),
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(img.path_count(), 4);
    }

    #[test]
    fn a_missing_parent_is_an_error_naming_the_fix() {
        let mut img = Image::new();
        let e = img
            .add_file("/etc/passwd", m(), FileData::Bytes(vec![]))
            .unwrap_err();
        assert!(matches!(e, Error::ParentMissing { .. }));
        assert!(e.to_string().contains("add the directory first"), "{e}");
        img.add_file("/f", m(), FileData::Bytes(vec![])).unwrap();
        let e = img
            .add_file("/f/g", m(), FileData::Bytes(vec![]))
            .unwrap_err();
        assert!(matches!(e, Error::ParentNotDir { .. }), "{e}");
    }

    #[test]
    fn bad_names_modes_and_parent_components_are_refused() {
        let mut img = Image::new();
        let long = "x".repeat(256);
        assert!(img.add_dir(&long, m()).is_err());
        assert!(img.add_dir("x".repeat(255), m()).is_ok());
        assert!(img.add_dir("/a/../b", m()).is_err());
        let e = img.add_dir("/m", Meta::new(0o40755, 0, 0)).unwrap_err();
        assert!(e.to_string().contains("st_mode & 0o7777"), "{e}");
        assert!(img.add_file("/", m(), FileData::Bytes(vec![])).is_err());
        assert!(img.add_dir("/n", m().mtime(0, 1_000_000_000)).is_err());
    }

    #[test]
    fn xattrs_outside_the_erofs_namespaces_are_refused() {
        let mut img = Image::new();
        for ok in [
            &b"user.a"[..],
            b"trusted.overlay.opaque",
            b"security.capability",
            b"system.posix_acl_access",
            b"system.posix_acl_default",
        ] {
            let name = String::from_utf8_lossy(ok).into_owned();
            img.add_file(&name, m().xattr(ok, b"v"), FileData::Bytes(vec![]))
                .unwrap();
        }
        for bad in [
            &b"system.nfs4_acl"[..],
            b"user.",
            b"foo.bar",
            b"system.posix_acl_accessx",
        ] {
            let e = img
                .add_file("/bad", m().xattr(bad, b"v"), FileData::Bytes(vec![]))
                .unwrap_err();
            assert!(matches!(e, Error::InvalidXattr { .. }), "{e}");
        }
        let e = img
            .add_file(
                "/big",
                m().xattr("user.big", vec![0; 65536]),
                FileData::Bytes(vec![]),
            )
            .unwrap_err();
        assert!(e.to_string().contains("65535"), "{e}");
    }

    #[test]
    fn external_files_need_an_absolute_redirect_and_no_own_overlay_xattrs() {
        let mut img = Image::new();
        let ext = |r: &str| FileData::External {
            size: 10,
            redirect: r.into(),
            verity: None,
        };
        assert!(img.add_file("/a", m(), ext("ab/cd")).is_err());
        assert!(img.add_file("/a", m(), ext("/")).is_err());
        let e = img
            .add_file(
                "/a",
                m().xattr("trusted.overlay.redirect", "/x"),
                ext("/ab/cd"),
            )
            .unwrap_err();
        assert!(e.to_string().contains("written by the image writer"), "{e}");
        img.add_file("/a", m(), ext("/ab/cd")).unwrap();
    }

    #[test]
    fn hard_links_share_the_node_and_refuse_dirs_and_whiteouts() {
        let mut img = Image::new();
        img.add_dir("/d", m()).unwrap();
        img.add_file("/d/f", m(), FileData::Bytes(b"x".to_vec()))
            .unwrap();
        img.add_whiteout("/w", m()).unwrap();
        img.add_hardlink("/g", "/d/f").unwrap();
        assert!(matches!(
            img.add_hardlink("/h", "/d"),
            Err(Error::LinkTargetInvalid { .. })
        ));
        assert!(matches!(
            img.add_hardlink("/h", "/w"),
            Err(Error::LinkTargetInvalid { .. })
        ));
        assert!(matches!(
            img.add_hardlink("/h", "/nope"),
            Err(Error::LinkTargetMissing { .. })
        ));
        assert!(matches!(
            img.add_hardlink("/g", "/d/f"),
            Err(Error::AlreadyExists { .. })
        ));
    }

    #[test]
    fn symlink_targets_and_device_numbers_are_checked() {
        let mut img = Image::new();
        assert!(img.add_symlink("/l", m(), "").is_err());
        assert!(img.add_symlink("/l", m(), "x".repeat(4096)).is_err());
        img.add_symlink("/l", m(), "x".repeat(4095)).unwrap();
        assert!(img.add_char_device("/c", m(), 4096, 0).is_err());
        assert!(img.add_block_device("/b", m(), 8, 1 << 20).is_err());
        img.add_block_device("/b", m(), 4095, (1 << 20) - 1)
            .unwrap();
    }

    #[test]
    fn object_redirects_fan_out_by_the_first_byte() {
        let mut h = [0u8; 32];
        h[0] = 0xab;
        h[1] = 0xcd;
        let r = object_redirect(&h);
        assert_eq!(r.len(), 1 + 2 + 1 + 62);
        assert!(r.starts_with("/ab/cd00"), "{r}");
    }
}
