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

use crate::hex;
use crate::store_name::{StoreHash, HASH_LEN};
use sha2::{Digest, Sha256};
use std::io::{self, Read};

/// What a self-reference reads as while hashing. 32 bytes, not hex.
pub const SELF_MASK: &[u8; 32] = b"genboot-self-hash-placeholder-00";

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

/// Where the next self-reference starts in `data`, at `from` or after.
fn next_self_ref(data: &[u8], own: &[u8; HASH_LEN], from: usize) -> Option<usize> {
    let [first, ..] = *own;
    let mut i = from;
    loop {
        // Candidate starts are those with HASH_LEN bytes after them.
        let last_start = data.len().checked_sub(HASH_LEN)?;
        let k = data.get(i..=last_start)?.iter().position(|&b| b == first)?;
        i += k;
        if data.get(i..i + HASH_LEN) == Some(own.as_slice()) {
            return Some(i);
        }
        i += 1;
    }
}

/// Replace every occurrence of `own` in `data` by [`SELF_MASK`]: scanning
/// from the start, each occurrence found is replaced and the scan goes on
/// after it (the leftmost, non-overlapping occurrences of `own` in the
/// original bytes). [`file_digest`] masks a stream the same way, whatever
/// its read sizes.
pub fn mask_self(data: &mut [u8], own: &[u8; 32]) {
    let mut from = 0;
    while let Some(i) = next_self_ref(data, own, from) {
        if let Some(hit) = data.get_mut(i..i + HASH_LEN) {
            hit.copy_from_slice(SELF_MASK);
        }
        from = i + HASH_LEN;
    }
}

/// SHA-256 of a file's contents, read in chunks (never the whole file at
/// once), with self-references masked when `own` is given: the digest of
/// [`mask_self`] applied to the whole contents, independent of how the
/// reads split them.
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
                hasher.update(buf.get(..n).unwrap_or_default());
            }
        }
        Some(own) => {
            // `buf[..keep]` holds the last bytes read that are not decided
            // yet: fewer than HASH_LEN, in their original form (never
            // masked), so a self-reference straddling two reads is found
            // exactly where a scan of the whole contents would find it.
            let mut buf = vec![0u8; CHUNK + HASH_LEN];
            let mut keep = 0usize;
            loop {
                let n = match r.read(buf.get_mut(keep..).unwrap_or_default()) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                size += n as u64;
                let len = keep + n;
                let data = buf.get(..len).unwrap_or_default();
                // Hash up to each self-reference, then the mask instead.
                let mut done = 0;
                while let Some(i) = next_self_ref(data, own, done) {
                    hasher.update(data.get(done..i).unwrap_or_default());
                    hasher.update(SELF_MASK);
                    done = i + HASH_LEN;
                }
                if n == 0 {
                    hasher.update(data.get(done..).unwrap_or_default());
                    break;
                }
                // Bytes from `undecided` on could start a self-reference
                // that the next read completes.
                let undecided = done.max(len.saturating_sub(HASH_LEN - 1));
                hasher.update(data.get(done..undecided).unwrap_or_default());
                buf.copy_within(undecided..len, 0);
                keep = len - undecided;
            }
        }
    }
    Ok((size, hasher.finalize().into()))
}

/// The object hash of `name` with `entries`, which must be sorted by path.
/// Symlink targets must already be masked.
pub fn object_hash(name: &str, entries: &[Entry]) -> StoreHash {
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
    StoreHash::from_digest(&h.finalize().into())
}

/// Walk `dir` and hash it sequentially: the activator's verifier. The
/// builder has a parallel walker producing the same value.
pub fn hash_tree(
    dir: &std::path::Path,
    name: &str,
    own: Option<&[u8; 32]>,
) -> io::Result<StoreHash> {
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
#[allow(clippy::indexing_slicing)]
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

    /// A reader that returns the contents in pieces of the given sizes
    /// (cycling), as a file system or a pipe might.
    struct Pieces<'a> {
        data: &'a [u8],
        sizes: &'a [usize],
        k: usize,
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let want = self.sizes[self.k % self.sizes.len()].max(1);
            self.k += 1;
            let n = want.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn reference(data: &[u8], own: &[u8; 32]) -> (u64, [u8; 32]) {
        let mut masked = data.to_vec();
        mask_self(&mut masked, own);
        (data.len() as u64, Sha256::digest(&masked).into())
    }

    #[test]
    fn self_masking_does_not_depend_on_read_sizes() {
        // Issue 10, item 19. Hashes chosen to overlap the mask and
        // themselves: one that starts with the mask's last digits "00", one
        // that is one digit repeated, one with a long border ("abab...").
        let owns: [&[u8; 32]; 4] = [
            b"00e1a9c3b5d7f2468ace13579bdf0246",
            b"00000000000000000000000000000000",
            b"abababababababababababababababab",
            b"0123456789abcdef0123456789abcdef",
        ];
        for own in owns {
            let mut pieces: Vec<Vec<u8>> = vec![
                own.to_vec(),
                SELF_MASK.to_vec(),
                own[..31].to_vec(),
                own[1..].to_vec(),
                own[..16].to_vec(),
                own[16..].to_vec(),
                own[..2].to_vec(),
                b"00".to_vec(),
                b"x".to_vec(),
                b"-placeholder-".to_vec(),
            ];
            // Contents that hit a straddled mask followed by the hash's
            // own start ("...-00" + own[2..]), and runs of overlaps.
            let mut tricky = SELF_MASK.to_vec();
            tricky.extend_from_slice(&own[2..]);
            pieces.push(tricky);
            let mut contents: Vec<Vec<u8>> = Vec::new();
            for p in &pieces {
                let mut c = p.clone();
                c.extend_from_slice(own);
                c.extend_from_slice(&own[30..]);
                c.extend_from_slice(own);
                contents.push(c);
            }
            // Pseudo-random concatenations of the pieces (fixed seed).
            let mut seed = 0x9e3779b97f4a7c15u64;
            for _ in 0..60 {
                let mut c = Vec::new();
                for _ in 0..(seed % 40) {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    c.extend_from_slice(&pieces[(seed % pieces.len() as u64) as usize]);
                }
                contents.push(c);
            }
            // One that crosses the 256 KiB chunk with a mask then the hash.
            let mut big = vec![b'a'; 256 * 1024 - 20];
            big.extend_from_slice(SELF_MASK);
            big.extend_from_slice(own);
            big.extend_from_slice(&own[..7]);
            contents.push(big);
            let sizes: [&[usize]; 9] = [
                &[1],
                &[2],
                &[3, 5, 7],
                &[31],
                &[32],
                &[33],
                &[30, 1, 64, 2],
                &[4096],
                &[usize::MAX],
            ];
            for c in &contents {
                let want = reference(c, own);
                for s in sizes {
                    let r = Pieces {
                        data: c,
                        sizes: s,
                        k: 0,
                    };
                    assert_eq!(
                        file_digest(r, Some(own)).unwrap(),
                        want,
                        "own {:?}, reads {s:?}, contents {:?}",
                        String::from_utf8_lossy(own),
                        String::from_utf8_lossy(&c[..c.len().min(200)])
                    );
                }
            }
        }
    }

    #[test]
    fn masking_keeps_the_leftmost_non_overlapping_occurrences() {
        let own = *b"00000000000000000000000000000000";
        let mut d = vec![b'0'; 70];
        mask_self(&mut d, &own);
        let mut want = SELF_MASK.to_vec();
        want.extend_from_slice(SELF_MASK);
        want.extend_from_slice(b"000000");
        assert_eq!(d, want);
        let mut short = own[..31].to_vec();
        mask_self(&mut short, &own);
        assert_eq!(short, &own[..31]);
    }

    /// The format is a contract: a change here changes every store path.
    /// The value was computed outside Rust (Python's hashlib) from the
    /// format in this file's documentation.
    #[test]
    fn the_serialisation_is_pinned() {
        let entries = [
            Entry {
                path: b"a".to_vec(),
                kind: EntryKind::Dir,
            },
            Entry {
                path: b"a/f".to_vec(),
                kind: EntryKind::File {
                    executable: true,
                    size: 6,
                    digest: Sha256::digest(b"hello\n").into(),
                },
            },
            Entry {
                path: b"l".to_vec(),
                kind: EntryKind::Symlink {
                    target: b"a/f".to_vec(),
                },
            },
        ];
        assert_eq!(
            object_hash("linux-6.1", &entries).as_str(),
            "89307596b0d3d40897725eead0c0c3c8"
        );
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
        assert_eq!(object_hash("n", &[f(true)]).as_str().len(), 32);
    }
}
