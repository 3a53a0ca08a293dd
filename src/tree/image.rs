//! `root.erofs` from a manifest (pure): the composefs-style metadata image
//! genboot-init and [`crate::tree::mount`] mount over the object store.
//!
//! Every manifest entry becomes an inode with the manifest's metadata (all
//! 12 mode bits, owner, group, clamped mtime, xattrs); files of at most
//! [`INLINE_MAX`](super::manifest::INLINE_MAX) bytes carry their data, larger
//! ones are data-less and redirect to `/ab/cdef…` in `store/objects`; hard
//! links share an inode. The object whiteouts are always on (opaque root,
//! whiteouts `00`…`ff`), so the same image works as
//! `lowerdir=IMAGE::OBJECTS` (≥ 6.5) and as the legacy
//! `lowerdir=IMAGE:OBJECTS` on Debian 12's 6.1. The image depends only on
//! the manifest (the writer derives its UUID from the content), so
//! `verify_tree` regenerates it byte for byte.

use super::manifest::{Entry, Kind, Manifest};
use genboot_erofs::{FileData, Image, Meta as EMeta};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Write the metadata image of `m` into memory.
pub fn build_image(m: &Manifest) -> Result<Vec<u8>, genboot_erofs::Error> {
    let mut img = Image::new();
    for (path, e) in &m.entries {
        let p = Path::new(OsStr::from_bytes(path));
        match e {
            Entry::Hardlink { target } => {
                img.add_hardlink(p, Path::new(OsStr::from_bytes(target)))?;
            }
            Entry::Inode { meta, kind } => {
                let mut em = EMeta::new(meta.mode, meta.uid, meta.gid)
                    .mtime(meta.mtime.sec, meta.mtime.nsec);
                for (k, v) in &meta.xattrs {
                    em = em.xattr(k, v);
                }
                match kind {
                    Kind::Dir => img.add_dir(p, em)?,
                    Kind::File {
                        size,
                        sha256,
                        inline,
                    } => {
                        let data = match inline {
                            Some(d) => FileData::Bytes(d.clone()),
                            None => FileData::object(*size, sha256),
                        };
                        img.add_file(p, em, data)?
                    }
                    Kind::Symlink { target } => {
                        img.add_symlink(p, em, OsStr::from_bytes(target))?
                    }
                    Kind::CharDevice { major, minor } => {
                        img.add_char_device(p, em, *major, *minor)?
                    }
                    Kind::BlockDevice { major, minor } => {
                        img.add_block_device(p, em, *major, *minor)?
                    }
                    Kind::Fifo => img.add_fifo(p, em)?,
                    Kind::Socket => img.add_socket(p, em)?,
                }
            }
        }
    }
    img.set_object_whiteouts(true);
    let mut out = Vec::new();
    img.write(&mut out)?;
    Ok(out)
}
