//! The on-disk structures this writer emits, with the field names of the
//! kernel's `fs/erofs/erofs_fs.h` (all little-endian). Only what the writer
//! uses is here: uncompressed layouts, no extra devices, no long xattr
//! prefixes, no superblock checksum.

/// Block size (`erofs_super_block.blkszbits` = 12). Debian's 6.1 kernel
/// accepts only `PAGE_SIZE` blocks.
pub(crate) const BLOCK_SIZE: u64 = 4096;
pub(crate) const BLOCK_BITS: u8 = 12;

/// `EROFS_SUPER_OFFSET`: the superblock starts 1 KiB into block 0.
pub(crate) const SUPER_OFFSET: u64 = 1024;
/// `sizeof(struct erofs_super_block)` with `sb_extslots` = 0.
pub(crate) const SUPER_SIZE: u64 = 128;
/// `EROFS_SUPER_MAGIC_V1`.
pub(crate) const SUPER_MAGIC: u32 = 0xE0F5_E1E2;

/// `EROFS_FEATURE_COMPAT_MTIME`: inode times are modification times
/// (erofs-utils and composefs set it; kernels ignore compat bits).
pub(crate) const FEATURE_COMPAT_MTIME: u32 = 0x2;
/// `EROFS_FEATURE_INCOMPAT_CHUNKED_FILE`: some inode is `EROFS_INODE_CHUNK_BASED`
/// (kernel ≥ 5.15).
pub(crate) const FEATURE_INCOMPAT_CHUNKED_FILE: u32 = 0x4;

/// Inode slot size: `nid` = byte offset / 32 (`EROFS_ISLOTBITS` = 5).
pub(crate) const SLOT_SIZE: u64 = 32;
/// `sizeof(struct erofs_inode_compact)`.
pub(crate) const COMPACT_INODE_SIZE: u64 = 32;
/// `sizeof(struct erofs_inode_extended)`.
pub(crate) const EXTENDED_INODE_SIZE: u64 = 64;

/// `i_format` data layouts (`EROFS_INODE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataLayout {
    /// `EROFS_INODE_FLAT_PLAIN`: data in whole blocks from `i_u.raw_blkaddr`.
    FlatPlain = 0,
    /// `EROFS_INODE_FLAT_INLINE`: whole blocks from `raw_blkaddr`, the tail
    /// right after the inode's xattrs, in the same block.
    FlatInline = 2,
    /// `EROFS_INODE_CHUNK_BASED`: a block map after the xattrs; we only write
    /// `EROFS_NULL_ADDR` entries (holes).
    ChunkBased = 4,
}

/// `sizeof(struct erofs_xattr_ibody_header)`.
pub(crate) const XATTR_IBODY_HEADER_SIZE: u64 = 12;
/// `sizeof(struct erofs_xattr_entry)`; entries are padded to this alignment.
pub(crate) const XATTR_ENTRY_HEADER_SIZE: u64 = 4;

/// `sizeof(struct erofs_dirent)`.
pub(crate) const DIRENT_SIZE: u64 = 12;
/// `EROFS_NAME_LEN`.
pub(crate) const NAME_MAX: usize = 255;

/// `EROFS_NULL_ADDR` as a 4-byte block map entry: a hole.
pub(crate) const NULL_ADDR: u32 = 0xFFFF_FFFF;
/// `EROFS_CHUNK_FORMAT_BLKBITS_MASK`: chunk size = block size << (format & mask).
pub(crate) const CHUNK_BLKBITS_MASK: u32 = 0x1F;

/// `EROFS_FT_*` directory entry file types.
pub(crate) mod ft {
    pub const REG_FILE: u8 = 1;
    pub const DIR: u8 = 2;
    pub const CHRDEV: u8 = 3;
    pub const BLKDEV: u8 = 4;
    pub const FIFO: u8 = 5;
    pub const SOCK: u8 = 6;
    pub const SYMLINK: u8 = 7;
}

/// `S_IF*` file type bits of `i_mode`.
pub(crate) mod ifmt {
    pub const SOCK: u16 = 0o140000;
    pub const LNK: u16 = 0o120000;
    pub const REG: u16 = 0o100000;
    pub const BLK: u16 = 0o060000;
    pub const DIR: u16 = 0o040000;
    pub const CHR: u16 = 0o020000;
    pub const FIFO: u16 = 0o010000;
}

/// Xattr name prefixes (`EROFS_XATTR_INDEX_*`): the entry stores the index and
/// the rest of the name. An ACL entry's name is the whole prefix (empty rest).
pub(crate) const XATTR_PREFIXES: [(&[u8], u8, bool); 6] = [
    (b"user.", 1, false),
    (b"system.posix_acl_access", 2, true),
    (b"system.posix_acl_default", 3, true),
    (b"trusted.", 4, false),
    (b"lustre.", 5, false),
    (b"security.", 6, false),
];

/// `new_encode_dev()` of the kernel: how `i_u.rdev` stores a device number.
pub(crate) fn encode_rdev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// The chunk size (as `log2`) that covers a data-less file of `size` bytes with
/// as few block-map entries as possible: at least one block, at most
/// `block << 31` (8 TiB); larger files get several chunks.
pub(crate) fn chunk_bits(size: u64) -> u32 {
    let need = if size <= 1 {
        0
    } else {
        64 - (size - 1).leading_zeros()
    };
    need.clamp(
        u32::from(BLOCK_BITS),
        u32::from(BLOCK_BITS) + CHUNK_BLKBITS_MASK,
    )
}

/// How many block-map entries a data-less file of `size` bytes needs.
pub(crate) fn chunk_count(size: u64) -> u64 {
    size.div_ceil(1u64 << chunk_bits(size))
}

pub(crate) fn put_u16(buf: &mut [u8], off: usize, v: u16) {
    buf[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// `struct erofs_super_block` fields this writer sets.
pub(crate) struct Superblock {
    pub feature_compat: u32,
    pub root_nid: u16,
    pub inos: u64,
    pub build_time: u64,
    pub build_time_nsec: u32,
    pub blocks: u32,
    pub meta_blkaddr: u32,
    pub xattr_blkaddr: u32,
    pub uuid: [u8; 16],
    pub feature_incompat: u32,
}

impl Superblock {
    /// Write the 128 bytes at `buf[0..128]` (the caller places them at
    /// `EROFS_SUPER_OFFSET`). `checksum` stays 0 (no `SB_CHKSUM`),
    /// `volume_name` empty, `sb_extslots`/`extra_devices`/`dirblkbits` 0.
    pub fn encode(&self, buf: &mut [u8]) {
        put_u32(buf, 0, SUPER_MAGIC); // magic
        put_u32(buf, 4, 0); // checksum
        put_u32(buf, 8, self.feature_compat);
        buf[12] = BLOCK_BITS; // blkszbits
        buf[13] = 0; // sb_extslots
        put_u16(buf, 14, self.root_nid);
        put_u64(buf, 16, self.inos);
        put_u64(buf, 24, self.build_time);
        put_u32(buf, 32, self.build_time_nsec);
        put_u32(buf, 36, self.blocks);
        put_u32(buf, 40, self.meta_blkaddr);
        put_u32(buf, 44, self.xattr_blkaddr);
        buf[48..64].copy_from_slice(&self.uuid);
        // volume_name[16] at 64: left zero
        put_u32(buf, 80, self.feature_incompat);
        // u1, extra_devices, devt_slotoff, dirblkbits, xattr_prefix_count,
        // xattr_prefix_start, packed_nid, reserved: zero
    }
}

/// The fields shared by `struct erofs_inode_compact` and `erofs_inode_extended`.
pub(crate) struct InodeHeader {
    pub layout: DataLayout,
    pub xattr_icount: u16,
    pub mode: u16,
    pub nlink: u32,
    pub size: u64,
    /// `i_u`: `raw_blkaddr`, `rdev` or the chunk format.
    pub i_u: u32,
    pub ino: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub mtime_nsec: u32,
}

impl InodeHeader {
    /// 32 bytes, `i_format` bit 0 = 0 (`EROFS_INODE_LAYOUT_COMPACT`); the
    /// caller checked that uid, gid, nlink fit 16 bits, size 32 bits and that
    /// the mtime is the superblock's `build_time`.
    pub fn encode_compact(&self, buf: &mut [u8]) {
        put_u16(buf, 0, (self.layout as u16) << 1); // i_format
        put_u16(buf, 2, self.xattr_icount);
        put_u16(buf, 4, self.mode);
        put_u16(buf, 6, self.nlink as u16);
        put_u32(buf, 8, self.size as u32);
        put_u32(buf, 12, 0); // i_reserved
        put_u32(buf, 16, self.i_u);
        put_u32(buf, 20, self.ino);
        put_u16(buf, 24, self.uid as u16);
        put_u16(buf, 26, self.gid as u16);
        put_u32(buf, 28, 0); // i_reserved2
    }

    /// 64 bytes, `i_format` bit 0 = 1 (`EROFS_INODE_LAYOUT_EXTENDED`).
    pub fn encode_extended(&self, buf: &mut [u8]) {
        put_u16(buf, 0, ((self.layout as u16) << 1) | 1);
        put_u16(buf, 2, self.xattr_icount);
        put_u16(buf, 4, self.mode);
        put_u16(buf, 6, 0); // i_reserved
        put_u64(buf, 8, self.size);
        put_u32(buf, 16, self.i_u);
        put_u32(buf, 20, self.ino);
        put_u32(buf, 24, self.uid);
        put_u32(buf, 28, self.gid);
        put_u64(buf, 32, self.mtime);
        put_u32(buf, 40, self.mtime_nsec);
        put_u32(buf, 44, self.nlink);
        // i_reserved2[16]: zero
    }
}

/// Bytes of one `struct erofs_xattr_entry` with its name and value, padded to
/// 4 (`EROFS_XATTR_ALIGN`).
pub(crate) fn xattr_entry_size(suffix_len: usize, value_len: usize) -> u64 {
    (XATTR_ENTRY_HEADER_SIZE + suffix_len as u64 + value_len as u64).next_multiple_of(4)
}

/// Append one xattr entry (header, name suffix, value, zero padding).
pub(crate) fn encode_xattr_entry(out: &mut Vec<u8>, index: u8, suffix: &[u8], value: &[u8]) {
    let start = out.len();
    out.push(suffix.len() as u8); // e_name_len
    out.push(index); // e_name_index
    out.extend_from_slice(&(value.len() as u16).to_le_bytes()); // e_value_size
    out.extend_from_slice(suffix);
    out.extend_from_slice(value);
    let size = xattr_entry_size(suffix.len(), value.len()) as usize;
    out.resize(start + size, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_bits_cover_the_file_with_one_chunk_up_to_8_tib() {
        assert_eq!(chunk_bits(1), 12);
        assert_eq!(chunk_bits(4096), 12);
        assert_eq!(chunk_bits(4097), 13);
        assert_eq!(chunk_bits(1 << 20), 20);
        assert_eq!(chunk_bits((1 << 20) + 1), 21);
        assert_eq!(chunk_count(1 << 20), 1);
        assert_eq!(chunk_bits(1 << 43), 43);
        assert_eq!(chunk_count(1 << 43), 1);
        assert_eq!(chunk_bits((1 << 43) + 1), 43);
        assert_eq!(chunk_count((1 << 43) + 1), 2);
    }

    #[test]
    fn rdev_encoding_is_the_kernels_new_encode_dev() {
        // makedev(1, 3) = 0x103; makedev(259, 70000): minor above 8 bits.
        assert_eq!(encode_rdev(1, 3), 0x103);
        assert_eq!(encode_rdev(0, 0), 0);
        assert_eq!(
            encode_rdev(259, 70000),
            (70000 & 0xff) | (259 << 8) | ((70000 & !0xff) << 12)
        );
    }

    #[test]
    fn xattr_entries_are_padded_to_four_bytes() {
        let mut v = Vec::new();
        encode_xattr_entry(&mut v, 4, b"overlay.metacopy", b"");
        assert_eq!(v.len(), 20);
        assert_eq!(&v[..4], &[16, 4, 0, 0]);
        let mut v = Vec::new();
        encode_xattr_entry(&mut v, 1, b"a", b"bc");
        assert_eq!(v, [1, 1, 2, 0, b'a', b'b', b'c', 0]);
    }
}
