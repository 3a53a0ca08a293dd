//! The store's canonical serialisation and hash, shared by the builder
//! (`genboot`, which hashes in parallel) and the activator (`genboot.verify`).
//!
//! Format, version 1. The hash of an object named `<hash>-<name>` is the
//! SHA-256 of:
//!
//! ```text
//! "genboot-store-v1\0" <name> "\0"
//! then for every entry below the object's directory, sorted bytewise by
//! relative path (the object's own directory is not an entry):
//!   directory:  "d\0" <path> "\0"
//!   file:       "f\0" <path> "\0" ("x" | "-") "\0" <size, decimal> "\0" <sha256 hex of contents> "\0"
//!   symlink:    "l\0" <path> "\0" <target> "\0"
//! ```
//!
//! `x` means the owner-execute bit is set. `<hash>` is the first 32 hex digits
//! of that SHA-256. An object may name itself (a generation's `boot.json`
//! holds its own store path): while hashing, every occurrence of the object's
//! own 32-digit hash in file contents and symlink targets counts as
//! [`SELF_MASK`], which is also what the builder writes before the hash is
//! known.

use sha2::{Digest, Sha256};
use std::io::{self, Read};

/// What a self-reference reads as while hashing. 32 bytes, not hex.
pub const SELF_MASK: &[u8; 32] = b"genboot-self-hash-placeholder-00";

/// Length of the hash part of a store path.
pub const HASH_LEN: usize = 32;

/// One entry of an object, as it enters the serialisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File {
        executable: bool,
        size: u64,
        digest: [u8; 32],
    },
    Symlink {
        target: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the object's directory, `/`-separated.
    pub path: Vec<u8>,
    pub kind: EntryKind,
}

/// Hex of a digest, lower case.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Replace every occurrence of `own` in `data` by [`SELF_MASK`].
pub fn mask_self(data: &mut [u8], own: &[u8; 32]) {
    let mut i = 0;
    while i + HASH_LEN <= data.len() {
        if &data[i..i + HASH_LEN] == own {
            data[i..i + HASH_LEN].copy_from_slice(SELF_MASK);
            i += HASH_LEN;
        } else {
            i += 1;
        }
    }
}

/// SHA-256 of a file's contents, read in chunks (never the whole file at
/// once), with self-references masked when `own` is given.
pub fn file_digest(mut r: impl Read, own: Option<&[u8; 32]>) -> io::Result<(u64, [u8; 32])> {
    const CHUNK: usize = 256 * 1024;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    match own {
        None => {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                size += n as u64;
                hasher.update(&buf[..n]);
            }
        }
        Some(own) => {
            // `buf[..keep]` holds bytes not hashed yet (fewer than HASH_LEN),
            // so a self-reference that straddles two reads is still masked.
            let mut buf = vec![0u8; CHUNK + HASH_LEN];
            let mut keep = 0usize;
            loop {
                let n = match r.read(&mut buf[keep..]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                size += n as u64;
                let len = keep + n;
                mask_self(&mut buf[..len], own);
                if n == 0 {
                    hasher.update(&buf[..len]);
                    break;
                }
                let done = len.saturating_sub(HASH_LEN - 1);
                hasher.update(&buf[..done]);
                buf.copy_within(done..len, 0);
                keep = len - done;
            }
        }
    }
    Ok((size, hasher.finalize().into()))
}

/// The object hash (32 hex digits) of `name` with `entries`, which must be
/// sorted by path. Symlink targets must already be masked.
pub fn object_hash(name: &str, entries: &[Entry]) -> String {
    let mut h = Sha256::new();
    h.update(b"genboot-store-v1\0");
    h.update(name.as_bytes());
    h.update(b"\0");
    for e in entries {
        match &e.kind {
            EntryKind::Dir => {
                h.update(b"d\0");
                h.update(&e.path);
                h.update(b"\0");
            }
            EntryKind::File {
                executable,
                size,
                digest,
            } => {
                h.update(b"f\0");
                h.update(&e.path);
                h.update(b"\0");
                h.update(if *executable { b"x" } else { b"-" });
                h.update(b"\0");
                h.update(size.to_string().as_bytes());
                h.update(b"\0");
                h.update(hex(digest).as_bytes());
                h.update(b"\0");
            }
            EntryKind::Symlink { target } => {
                h.update(b"l\0");
                h.update(&e.path);
                h.update(b"\0");
                h.update(target);
                h.update(b"\0");
            }
        }
    }
    let digest: [u8; 32] = h.finalize().into();
    hex(&digest)[..HASH_LEN].to_string()
}

/// Split a store directory name `<hash>-<name>` into its parts.
pub fn split_store_name(dir_name: &str) -> Option<(&str, &str)> {
    if dir_name.len() < HASH_LEN + 2 || dir_name.as_bytes()[HASH_LEN] != b'-' {
        return None;
    }
    let (hash, rest) = dir_name.split_at(HASH_LEN);
    if !hash
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    Some((hash, &rest[1..]))
}

/// Walk `dir` and hash it sequentially: the activator's verifier. The
/// builder has a parallel walker producing the same value.
pub fn hash_tree(dir: &std::path::Path, name: &str, own: Option<&[u8; 32]>) -> io::Result<String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    fn walk(
        base: &std::path::Path,
        rel: &[u8],
        own: Option<&[u8; 32]>,
        out: &mut Vec<Entry>,
    ) -> io::Result<()> {
        let dir = if rel.is_empty() {
            base.to_path_buf()
        } else {
            base.join(std::ffi::OsStr::from_bytes(rel))
        };
        for item in std::fs::read_dir(&dir)? {
            let item = item?;
            let meta = std::fs::symlink_metadata(item.path())?;
            let mut path = rel.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(item.file_name().as_bytes());
            let ft = meta.file_type();
            if ft.is_dir() {
                out.push(Entry {
                    path: path.clone(),
                    kind: EntryKind::Dir,
                });
                walk(base, &path, own, out)?;
            } else if ft.is_symlink() {
                let mut target = std::fs::read_link(item.path())?
                    .as_os_str()
                    .as_bytes()
                    .to_vec();
                if let Some(own) = own {
                    mask_self(&mut target, own);
                }
                out.push(Entry {
                    path,
                    kind: EntryKind::Symlink { target },
                });
            } else if ft.is_file() {
                let (size, digest) = file_digest(std::fs::File::open(item.path())?, own)?;
                out.push(Entry {
                    path,
                    kind: EntryKind::File {
                        executable: meta.permissions().mode() & 0o100 != 0,
                        size,
                        digest,
                    },
                });
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: not a file, directory or symlink",
                        item.path().display()
                    ),
                ));
            }
        }
        Ok(())
    }
    let mut entries = Vec::new();
    walk(dir, &[], own, &mut entries)?;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(object_hash(name, &entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_reference_straddling_chunks_is_masked() {
        let own = *b"0123456789abcdef0123456789abcdef";
        let mut data = vec![b'a'; 256 * 1024 - 10];
        data.extend_from_slice(&own);
        data.extend_from_slice(b"tail");
        let mut masked = vec![b'a'; 256 * 1024 - 10];
        masked.extend_from_slice(SELF_MASK);
        masked.extend_from_slice(b"tail");
        let a = file_digest(&data[..], Some(&own)).unwrap();
        let b = file_digest(&masked[..], None).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.0, data.len() as u64);
    }

    #[test]
    fn name_and_exec_bit_change_the_hash() {
        let f = |x| Entry {
            path: b"a".to_vec(),
            kind: EntryKind::File {
                executable: x,
                size: 1,
                digest: [0; 32],
            },
        };
        assert_ne!(object_hash("n", &[f(true)]), object_hash("n", &[f(false)]));
        assert_ne!(object_hash("n", &[f(true)]), object_hash("m", &[f(true)]));
        assert_eq!(object_hash("n", &[f(true)]).len(), 32);
    }

    #[test]
    fn split_store_name_checks_hash() {
        let n = "0123456789abcdef0123456789abcdef-linux-6.1";
        assert_eq!(
            split_store_name(n),
            Some(("0123456789abcdef0123456789abcdef", "linux-6.1"))
        );
        assert_eq!(split_store_name("xyz-linux"), None);
        assert_eq!(split_store_name("0123456789abcdef0123456789abcdeg-x"), None);
    }
}
