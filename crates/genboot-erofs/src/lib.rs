//! A composefs-style EROFS image writer, std-only (plus `sha2` for the UUID).
//!
//! A whole-system generation stores each file content once in
//! `store/objects/ab/cdef…` and gets one small EROFS image that holds only the
//! tree's metadata: directories, inodes (mode incl. setuid/setgid/sticky,
//! uid, gid, mtime with nanoseconds), xattrs (file capabilities, ACLs…),
//! symlinks, device nodes, hard links and small files inline. A regular file
//! whose content is in the store is a data-less EROFS file of the right size
//! carrying overlayfs's `trusted.overlay.metacopy` and
//! `trusted.overlay.redirect=/ab/cdef…`; an overlay with the store as a
//! lower layer then shows the file with the image's metadata and the object's
//! data. The same writer makes self-contained images (data in the image), per
//! file.
//!
//! ```no_run
//! use genboot_erofs::{FileData, Image, Meta};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut img = Image::new();
//! img.add_dir("/", Meta::new(0o755, 0, 0).mtime(1_700_000_000, 0))?;
//! img.add_dir("/usr", Meta::new(0o755, 0, 0))?;
//! img.add_dir("/usr/bin", Meta::new(0o755, 0, 0))?;
//! let sha256 = [0xab; 32]; // of the content, stored at objects/ab/abab…
//! img.add_file(
//!     "/usr/bin/ping",
//!     Meta::new(0o755, 0, 0).xattr("security.capability", [1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
//!     FileData::object(90_568, &sha256),
//! )?;
//! img.add_file("/etc-hostname", Meta::new(0o644, 0, 0), FileData::Bytes(b"debian\n".to_vec()))?;
//! img.add_hardlink("/usr/bin/ping6", "/usr/bin/ping")?;
//! img.set_object_whiteouts(true); // for lowerdir=<image>:<objects> on 6.1
//! let mut out = std::fs::File::create("root.erofs.tmp")?;
//! let stats = img.write(&mut out)?;
//! # let _ = stats; Ok(()) }
//! ```
//!
//! Mounting (what genboot-init does; the tests do the same):
//!
//! ```text
//! mount -t erofs -o ro root.erofs /run/meta              # ≥ 6.12 from a file on ext4; 6.1: a loop device
//! mount -t overlay overlay -o ro,metacopy=on,redirect_dir=on,lowerdir=/run/meta::/store/objects /newroot   # ≥ 6.5
//! mount -t overlay overlay -o ro,metacopy=on,redirect_dir=on,lowerdir=/run/meta:/store/objects /newroot    # 6.1: legacy, needs set_object_whiteouts(true)
//! ```
//!
//! # On-disk format
//!
//! Field names are those of the kernel's `fs/erofs/erofs_fs.h`; everything is
//! little-endian. Only features Debian 12's 6.1 kernel reads are used
//! (uncompressed layouts, chunk-based files from 5.15, no long xattr
//! prefixes, no xattr name filter, no 48-bit addressing).
//!
//! **Layout of the file.** Block size 4096 (`blkszbits` = 12, what 6.1
//! requires). Bytes 0…1023 are zero; `struct erofs_super_block` sits at
//! `EROFS_SUPER_OFFSET` (1024); the inodes follow it directly in block 0
//! (`meta_blkaddr` = 0, so an inode's `nid` is its byte offset / 32 and the
//! root, placed first, has nid 36 — `root_nid` is only 16 bits); then the
//! shared xattrs; then, from the next block boundary, the directory blocks and
//! the blocks of long symlinks; then file data blocks (only files whose data
//! is in the image). The metadata is everything before the file data.
//!
//! **Superblock.** `magic` = `EROFS_SUPER_MAGIC_V1`; `checksum` 0 and no
//! `EROFS_FEATURE_COMPAT_SB_CHKSUM`; `feature_compat` =
//! `EROFS_FEATURE_COMPAT_MTIME` (times are mtimes, as erofs-utils and
//! composefs write); `feature_incompat` = `EROFS_FEATURE_INCOMPAT_CHUNKED_FILE`
//! when any file is external, else 0; `inos` = number of inodes;
//! `build_time`/`build_time_nsec` = the most common mtime of the tree (ties:
//! the earliest), which every compact inode inherits; `blocks` = image size /
//! 4096; `xattr_blkaddr` = the block where the shared xattrs begin;
//! `volume_name` empty; `uuid` = [`Image::set_uuid`] or the first 16 bytes of
//! SHA-256 over the metadata region with the UUID zeroed (marked version 8):
//! no machine, time or randomness goes in, so the same tree gives the same
//! bytes.
//!
//! **Inodes.** Inodes are numbered breadth-first from the root, each
//! directory's children in name order, and placed in that order, so a
//! directory's entries have neighbouring slots. `struct erofs_inode_compact` (32 B) when the mtime
//! equals `build_time` and uid, gid, nlink fit 16 bits and `i_size` 32 bits;
//! `struct erofs_inode_extended` (64 B, own `i_mtime`/`i_mtime_nsec`)
//! otherwise. `i_mode` carries the type and all 12 permission bits; `i_nlink`
//! counts names (2 + subdirectories for a directory); `i_ino` is the inode's
//! position (1-based, kernels use the nid for `st_ino`); `i_u` is
//! `raw_blkaddr`, `rdev` (`new_encode_dev(major, minor)`) or the chunk
//! format. An inode with its xattrs and inline data never straddles a block
//! boundary (6.1 rejects inline data that crosses one).
//!
//! **Data layouts (`i_format` bits 1–3).**
//! - Directories: `erofs_dirent { nid, nameoff, file_type }` arrays followed
//!   by the names, all entries (`.` and `..` too) sorted bytewise across the
//!   whole directory (the kernel binary-searches blocks, then entries),
//!   packed greedily into 4096-byte blocks. A partial last block is either
//!   inline after the inode (`EROFS_INODE_FLAT_INLINE`, `i_size` = full
//!   blocks plus the tail; the kernel reads it through the directory's page
//!   cache, zero-filled after the tail, so the last name needs no NUL), or a
//!   zero-padded block (`EROFS_INODE_FLAT_PLAIN`, `i_size` a multiple of
//!   4096).
//! - Files with data in the image ([`FileData::Bytes`], [`FileData::File`]):
//!   whole blocks at `raw_blkaddr`, and the tail (size % 4096) either inline
//!   after the inode (`FLAT_INLINE`) or in a last zero-padded block
//!   (`FLAT_PLAIN`). A file of ≤ [`INLINE_MAX`] bytes costs only its bytes.
//!   Empty files are `FLAT_PLAIN` with no block.
//! - Inline or not (directories, files, symlinks): the tail is inline
//!   whenever inode + xattrs + tail fit one block, else it gets a block of
//!   its own. An inode and its inline data never straddle a block boundary:
//!   inodes are placed in order, each in the first of the last 128 metadata
//!   blocks with room for its whole record, so the gap a big record leaves
//!   at the end of a block is filled by the next small inodes (erofs-utils
//!   back-fills the same way).
//! - External files ([`FileData::External`]): `EROFS_INODE_CHUNK_BASED` with
//!   a 4-byte block map (`EROFS_CHUNK_FORMAT_INDEXES` clear), chunk size
//!   `4096 << (i_u & EROFS_CHUNK_FORMAT_BLKBITS_MASK)` chosen so one chunk
//!   covers the file (up to 8 TiB), and that one entry `EROFS_NULL_ADDR`: a
//!   hole of the right size, 4 bytes per file, which the kernel reads as
//!   zeros and `fsck.erofs` accepts. Plus the xattrs `trusted.overlay.metacopy`
//!   (empty, or `struct ovl_metacopy` {0, 36, 0, `FS_VERITY_HASH_ALG_SHA256`,
//!   digest} for `verity=require`) and `trusted.overlay.redirect` (the
//!   object's path below the objects directory, `/ab/cdef…`).
//! - Symlinks: the target inline (`FLAT_INLINE`) when it fits next to the
//!   inode, else one block (`FLAT_PLAIN`). Devices, fifos, sockets and
//!   whiteouts (char 0:0): `FLAT_PLAIN`, size 0.
//!
//! **Xattrs.** After the inode: `struct erofs_xattr_ibody_header`
//! (`h_name_filter` 0, `h_shared_count`, the shared ids), then inline
//! `struct erofs_xattr_entry { e_name_len, e_name_index, e_value_size }` +
//! name + value, each padded to 4 bytes, sorted by (index, name);
//! `i_xattr_icount` = 1 + (size − 12) / 4, or 0 without xattrs (never an
//! empty header: 6.1 rejects it). Names are stored as `EROFS_XATTR_INDEX_*`
//! (user 1, posix ACL access 2 / default 3, trusted 4, lustre 5, security 6)
//! plus the rest of the name; other namespaces are refused when added. A
//! (name, value) pair used by two or more inodes is stored once in the shared
//! area (id = 4-byte words from `xattr_blkaddr`) — notably the empty
//! `trusted.overlay.metacopy` of every external file (4 bytes per file
//! instead of 20). `trusted.overlay.*` xattrs of the tree are stored as given,
//! so they act on the overlay (e.g. `trusted.overlay.opaque`); to make one
//! visible *through* the overlay on kernels ≥ 6.7, add it escaped
//! (`trusted.overlay.overlay.X`).
//!
//! **Legacy overlay form** ([`Image::set_object_whiteouts`]): the root gets
//! `trusted.overlay.opaque=y`, and every fan-out name `00`…`ff` the tree does
//! not use becomes a whiteout (char 0:0, 0644, root's owner and mtime). All
//! these names share one inode (overlayfs itself hard-links its whiteouts),
//! which saves 8 KiB per image. A root directory that is itself named like a
//! fan-out directory is made opaque instead, so it does not merge with the
//! store's directory of that name.
//!
//! # Why our own writer, and what was taken from composefs
//!
//! The `composefs` crate (composefs-rs 0.9.4) has a writer byte-compatible
//! with C `mkcomposefs`, but pulls in openssl, tokio, rustix and zstd 0.14,
//! and genboot writes its formats itself (cpio, kmod indexes, FAT). Reading
//! composefs-rs `crates/composefs/src/erofs/writer.rs` and libcomposefs
//! `lcfs-writer-erofs.c` (read, not copied) settled these choices:
//! - inodes right after the superblock with `meta_blkaddr` = 0 and shared
//!   xattrs right after the inodes (both do this; it keeps a small image in
//!   few blocks);
//! - external files as chunk-based inodes with one null block-map entry and
//!   the chunk size picked from the file size (`erofs_compute_chunking()`);
//! - compact inodes when the mtime equals `build_time` — but composefs uses
//!   the *minimum* mtime, and a Debian root's mtimes are package build times
//!   that are mostly older than the clamped `SOURCE_DATE_EPOCH` ones, so we
//!   use the *most common* mtime, which maximises compact inodes;
//! - breadth-first inode order (`lcfs_compute_tree()`), sorted names;
//! - sharing xattrs used more than once (composefs shares the same way);
//! - keeping a symlink's inode and target in one block (composefs notes
//!   kernels before 6.12 fail with EFSCORRUPTED otherwise — we do it for
//!   every record with inline data). composefs then inlines tails only up to
//!   half a block and pads to the next block (`compute_erofs_dir_size()`,
//!   `compute_erofs_inode_padding_for_tail()`); we inline every tail that fits
//!   a block and back-fill the gaps, which made the full image of the
//!   benchmark's 236 MB root 3 MB smaller (as small as `mkfs.erofs`'s);
//! - the legacy form's opaque root and `00`…`ff` whiteouts
//!   (`rewrite_tree_for_erofs()`, `add_overlay_whiteouts()`), which the
//!   research measured as what 6.1 needs.
//!
//! Deliberately different: no composefs header in bytes 0…1023 (nothing reads
//! it here), no escaping of the tree's own whiteouts and `trusted.overlay.*`
//! xattrs (a Debian root has neither; a char 0:0 from [`Image::add_whiteout`]
//! is a real whiteout, hidden by the overlay, and the API documents the
//! xattrs' effect instead),
//! no `EROFS_FEATURE_COMPAT_XATTR_FILTER` bloom filter (6.1 does not read it),
//! one shared inode for the 256 legacy whiteouts, and a content-derived UUID
//! instead of a zero one.
//!
//! # Limits
//!
//! Names ≤ 255 bytes, symlink targets ≤ 4095, xattr names ≤ 255 bytes after
//! the prefix and values ≤ 65535, devices with major < 4096 and minor < 2^20:
//! breaking one is an [`Error`] naming the path and the fix, returned by the
//! `add_*` call, which then leaves the image unchanged. At most 2^32 blocks
//! (16 TiB) per image: an error from [`Image::write`].
//!
//! # Tests and benchmark
//!
//! Every image the tests make is judged by `fsck.erofs` (erofs-utils) and
//! mounted by a real kernel, never by a reader of ours:
//! - `tests/mount.rs` (root): a tree with every odd kind of metadata
//!   (setuid/setgid/sticky, 0640 root:42, a uid of 100000, file capabilities,
//!   an ACL, a 3000-byte xattr, hard links, devices, a fifo, a socket, sizes
//!   around the inline threshold and block boundaries, a 1 MB file, 3000
//!   entries with names of 1…255 bytes, 40 levels, pre-1970 and nanosecond
//!   mtimes) → metadata image + object store → mounted EROFS (from the file)
//!   and overlay in both forms, compared path by path (`lstat`, content,
//!   targets, `getfattr`, `getcap`, `ls /`); the same for a full image;
//!   byte-identical rebuilds.
//! - `tests/fsck.rs`: `fsck.erofs --extract` gives the tree back; a corrupted
//!   image is rejected.
//! - `tests/kernel.rs` (root, `GENBOOT_KERNEL_CACHE`): Debian's 6.1 and 6.12
//!   kernels under QEMU mount the images through loop devices, the legacy
//!   overlay (and `::` on 6.12; 6.1 must refuse it), and list them.
//! - `cargo bench -p genboot-erofs --bench write`: size and write time at
//!   the scale of a Debian root, metadata-only vs full vs `mkfs.erofs`.
//!
//! Measured with that command (2 shared cores at load 6–10, so times are
//! upper bounds; writes to the page cache, median of 5):
//!
//! | tree | inodes | image | size | write |
//! |---|---:|---|---:|---:|
//! | synthetic Debian-shaped root (242 MB of files) | 11,032 | metadata-only | 2.07 MB | 43 ms |
//! | | | full | 243.56 MB | 807 ms |
//! | | | `mkfs.erofs` 1.5, uncompressed | 243.62 MB | 2,044 ms |
//! | `/usr/include` (113 MB) | 8,989 | metadata-only | 1.64 MB | 41 ms |
//! | | | full | 116.57 MB | 750 ms |
//! | | | `mkfs.erofs` 1.5, uncompressed | 116.20 MB | 1,386 ms |
//!
//! `fsck.erofs` passes on all of them. A metadata image costs ~190 bytes per
//! inode, most of it the 88-byte `trusted.overlay.redirect` entry of each
//! external file.

#![forbid(unsafe_code)]

mod error;
mod format;
mod image;
mod write;

pub use error::{Error, Result};
pub use image::{object_redirect, FileData, Image, Meta, INLINE_MAX};
pub use write::Stats;
