//! Plan, then emit: [`plan`] turns the tree into inodes with sizes, layouts
//! and byte offsets (pure, no I/O except reading inline tails of
//! [`FileData::File`]s later); [`Image::write`] serialises the metadata
//! region in memory and streams file data after it.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::format::{self, ft, ifmt, DataLayout, InodeHeader, Superblock, BLOCK_SIZE};
use crate::image::{split_xattr_name, FileData, Image, Kind, Meta, Node};

/// What [`Image::write`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Size of the image file (a multiple of 4096).
    pub image_bytes: u64,
    /// Inodes (hard links counted once, the shared object whiteout once).
    pub inodes: u64,
    /// Inodes stored as 32-byte `erofs_inode_compact`.
    pub compact_inodes: u64,
    /// Inodes stored as 64-byte `erofs_inode_extended`.
    pub extended_inodes: u64,
    /// Distinct (name, value) pairs stored once in the shared xattr area.
    pub shared_xattrs: u64,
    /// Bytes before the file data: superblock, inodes, xattrs, inline tails,
    /// directory blocks.
    pub metadata_bytes: u64,
    /// Bytes of file data blocks ([`FileData::Bytes`]/[`FileData::File`]
    /// larger than what fits inline).
    pub data_bytes: u64,
}

/// One xattr as stored: name index, name after the prefix, value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Xattr<'a> {
    index: u8,
    suffix: Cow<'a, [u8]>,
    value: Cow<'a, [u8]>,
}

#[derive(Debug)]
struct DirEnt<'a> {
    name: &'a [u8],
    inode: usize,
    ftype: u8,
}

#[derive(Debug)]
enum Body<'a> {
    /// Entries sorted by name (`.` and `..` included); `groups` are the
    /// entry index ranges of each directory block.
    Dir {
        entries: Vec<DirEnt<'a>>,
        groups: Vec<std::ops::Range<usize>>,
    },
    Data(&'a FileData),
    External {
        size: u64,
    },
    Symlink(&'a [u8]),
    Rdev(u32),
    Empty,
}

#[derive(Debug)]
struct PInode<'a> {
    mode: u16,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nsec: u32,
    nlink: u32,
    xattrs: Vec<Xattr<'a>>,
    body: Body<'a>,
    // Filled by share_xattrs(), size_inode() and place():
    shared: Vec<u32>,
    inline_xattrs: Vec<usize>,
    compact: bool,
    layout: DataLayout,
    size: u64,
    i_u: u32,
    /// Inode + xattrs.
    base: u64,
    /// What could go inline: (whole blocks before it, tail bytes).
    tail: Option<(u64, u64)>,
    /// Bytes of inline data after the xattrs (tail, symlink, block map).
    inline: u64,
    /// inode + xattrs + inline.
    record: u64,
    /// Blocks in the data area, and where they start.
    nblocks: u64,
    blkaddr: u64,
    /// Byte offset of the inode (nid = offset / 32).
    offset: u64,
}

impl<'a> PInode<'a> {
    fn new(meta: &'a Meta, type_bits: u16, body: Body<'a>) -> PInode<'a> {
        let xattrs = meta
            .xattrs
            .iter()
            .map(|(name, value)| {
                let (index, suffix) = split_xattr_name(name).expect("validated by Image::add_*");
                Xattr {
                    index,
                    suffix: Cow::Borrowed(suffix),
                    value: Cow::Borrowed(value.as_slice()),
                }
            })
            .collect();
        PInode {
            mode: type_bits | meta.mode as u16,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
            mtime_nsec: meta.mtime_nsec,
            nlink: 0,
            xattrs,
            body,
            shared: Vec::new(),
            inline_xattrs: Vec::new(),
            compact: false,
            layout: DataLayout::FlatPlain,
            size: 0,
            i_u: 0,
            base: 0,
            tail: None,
            inline: 0,
            record: 0,
            nblocks: 0,
            blkaddr: 0,
            offset: 0,
        }
    }

    fn nid(&self) -> u64 {
        self.offset / format::SLOT_SIZE
    }

    fn ftype(&self) -> u8 {
        match self.mode & 0o170000 {
            ifmt::DIR => ft::DIR,
            ifmt::REG => ft::REG_FILE,
            ifmt::LNK => ft::SYMLINK,
            ifmt::CHR => ft::CHRDEV,
            ifmt::BLK => ft::BLKDEV,
            ifmt::FIFO => ft::FIFO,
            _ => ft::SOCK,
        }
    }

    fn set_xattr(&mut self, index: u8, suffix: &'static [u8], value: &'static [u8]) {
        if !self
            .xattrs
            .iter()
            .any(|x| x.index == index && *x.suffix == *suffix)
        {
            self.xattrs.push(Xattr {
                index,
                suffix: Cow::Borrowed(suffix),
                value: Cow::Borrowed(value),
            });
        }
    }

    fn xattr_size(&self) -> u64 {
        if self.xattrs.is_empty() {
            return 0;
        }
        format::XATTR_IBODY_HEADER_SIZE
            + 4 * self.shared.len() as u64
            + self
                .inline_xattrs
                .iter()
                .map(|&i| {
                    format::xattr_entry_size(
                        self.xattrs[i].suffix.len(),
                        self.xattrs[i].value.len(),
                    )
                })
                .sum::<u64>()
    }
}

/// The object fan-out names `00`…`ff`.
const HEX_NAMES: [[u8; 2]; 256] = {
    let hex = *b"0123456789abcdef";
    let mut out = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        out[i] = [hex[i >> 4], hex[i & 15]];
        i += 1;
    }
    out
};

/// The laid-out image: inodes with offsets, shared xattrs, region sizes.
struct Plan<'a> {
    inodes: Vec<PInode<'a>>,
    shared: Vec<Xattr<'a>>,
    build_time: (i64, u32),
    xattr_blkaddr: u64,
    /// Byte offset of each shared xattr entry.
    shared_offsets: Vec<u64>,
    /// Where file data starts (after directory and symlink blocks).
    file_data_start: u64,
    blocks: u64,
}

fn plan(img: &Image) -> Result<Plan<'_>> {
    let mut inodes = collect(img);
    let shared = share_xattrs(&mut inodes);
    let build_time = most_common_mtime(&inodes);
    for inode in &mut inodes {
        size_inode(inode, build_time);
    }
    let pos = place(&mut inodes);
    if inodes[0].nid() > u64::from(u16::MAX) {
        return Err(Error::TooLarge {
            what: "the root inode is beyond nid 65535".into(),
        });
    }
    // Shared xattrs right after the inodes; ids count 4-byte words from the
    // start of the block they begin in (`xattr_blkaddr`).
    let xattr_start = pos.next_multiple_of(4);
    let xattr_blkaddr = xattr_start / BLOCK_SIZE;
    let mut shared_offsets = Vec::with_capacity(shared.len());
    let mut pos = xattr_start;
    for x in &shared {
        shared_offsets.push(pos);
        pos += format::xattr_entry_size(x.suffix.len(), x.value.len());
    }
    if let Some(&last) = shared_offsets.last() {
        if (last - xattr_blkaddr * BLOCK_SIZE) / 4 > u64::from(u32::MAX) {
            return Err(Error::TooLarge {
                what: "the shared xattr area is larger than 16 GiB".into(),
            });
        }
    }
    // Data area: directory and symlink blocks first (all metadata stays
    // together), then file data, each in inode order.
    let data_start = pos.next_multiple_of(BLOCK_SIZE);
    let mut block = data_start / BLOCK_SIZE;
    for inode in inodes
        .iter_mut()
        .filter(|i| !matches!(i.body, Body::Data(_)))
    {
        inode.blkaddr = block;
        block += inode.nblocks;
    }
    let file_data_start = block * BLOCK_SIZE;
    for inode in inodes
        .iter_mut()
        .filter(|i| matches!(i.body, Body::Data(_)))
    {
        inode.blkaddr = block;
        block += inode.nblocks;
    }
    if block > u64::from(u32::MAX) {
        return Err(Error::TooLarge {
            what: format!("{block} blocks of 4 KiB (EROFS addresses at most 2^32)"),
        });
    }
    for inode in &mut inodes {
        if inode.nblocks > 0 {
            inode.i_u = inode.blkaddr as u32; // raw_blkaddr
        }
    }
    Ok(Plan {
        inodes,
        shared,
        build_time,
        xattr_blkaddr,
        shared_offsets,
        file_data_start,
        blocks: block,
    })
}

/// Breadth-first from the root: a directory's children get consecutive
/// inodes, so listing a directory reads neighbouring slots. A hard-linked
/// node becomes one inode at its first name in this order.
fn collect(img: &Image) -> Vec<PInode<'_>> {
    let root_meta = &img.nodes[0].meta;
    let mut inodes = vec![PInode::new(root_meta, ifmt::DIR, Body::Empty)];
    let mut by_node: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([(0usize, 0usize, 0usize)]); // (inode, parent inode, node)
    let mut whiteout: Option<usize> = None;
    while let Some((me, parent, node)) = queue.pop_front() {
        let Kind::Dir(children) = &img.nodes[node].kind else {
            unreachable!("only directories are queued")
        };
        let mut entries = vec![
            DirEnt {
                name: b".",
                inode: me,
                ftype: ft::DIR,
            },
            DirEnt {
                name: b"..",
                inode: parent,
                ftype: ft::DIR,
            },
        ];
        let mut subdirs = 0;
        for (name, &child) in children {
            let idx = match by_node.get(&child) {
                Some(&idx) => idx,
                None => {
                    let idx = inodes.len();
                    inodes.push(node_inode(&img.nodes[child]));
                    by_node.insert(child, idx);
                    if matches!(img.nodes[child].kind, Kind::Dir(_)) {
                        queue.push_back((idx, me, child));
                    }
                    idx
                }
            };
            if matches!(img.nodes[child].kind, Kind::Dir(_)) {
                subdirs += 1;
                if me == 0
                    && img.object_whiteouts
                    && name.len() == 2
                    && HEX_NAMES.iter().any(|h| h == &name[..])
                {
                    inodes[idx].set_xattr(4, b"overlay.opaque", b"y");
                }
            } else {
                inodes[idx].nlink += 1;
            }
            entries.push(DirEnt {
                name,
                inode: idx,
                ftype: inodes[idx].ftype(),
            });
        }
        if me == 0 && img.object_whiteouts {
            inodes[0].set_xattr(4, b"overlay.opaque", b"y");
            for name in &HEX_NAMES {
                if children.contains_key(&name[..]) {
                    continue;
                }
                let idx = *whiteout.get_or_insert_with(|| {
                    inodes.push(whiteout_inode(root_meta));
                    inodes.len() - 1
                });
                inodes[idx].nlink += 1;
                entries.push(DirEnt {
                    name,
                    inode: idx,
                    ftype: ft::CHRDEV,
                });
            }
        }
        entries.sort_unstable_by(|a, b| a.name.cmp(b.name));
        inodes[me].nlink = 2 + subdirs;
        inodes[me].body = Body::Dir {
            entries,
            groups: Vec::new(),
        };
    }
    inodes
}

/// The whiteout inode the object fan-out names share in the legacy form
/// (overlayfs itself hard-links its whiteouts): char 0:0, mode 0644, owner
/// and mtime of the root.
fn whiteout_inode(root: &Meta) -> PInode<'_> {
    let mut w = PInode::new(root, ifmt::CHR, Body::Rdev(0));
    w.mode = ifmt::CHR | 0o644;
    w.xattrs.clear();
    w
}

fn node_inode(node: &Node) -> PInode<'_> {
    let meta = &node.meta;
    match &node.kind {
        Kind::Dir(_) => PInode::new(meta, ifmt::DIR, Body::Empty),
        Kind::File(data) => match data {
            FileData::External {
                size,
                redirect,
                verity,
            } if *size > 0 => {
                let mut inode = PInode::new(meta, ifmt::REG, Body::External { size: *size });
                let metacopy: Cow<[u8]> = match verity {
                    // struct ovl_metacopy: version 0, len 36, flags 0,
                    // digest_algo FS_VERITY_HASH_ALG_SHA256 (1), digest.
                    Some(d) => {
                        let mut v = vec![0u8, 36, 0, 1];
                        v.extend_from_slice(d);
                        Cow::Owned(v)
                    }
                    None => Cow::Borrowed(b""),
                };
                inode.xattrs.push(Xattr {
                    index: 4,
                    suffix: Cow::Borrowed(b"overlay.metacopy"),
                    value: metacopy,
                });
                inode.xattrs.push(Xattr {
                    index: 4,
                    suffix: Cow::Borrowed(b"overlay.redirect"),
                    value: Cow::Borrowed(redirect.as_bytes()),
                });
                inode
            }
            FileData::External { .. } => PInode::new(meta, ifmt::REG, Body::Empty),
            FileData::Bytes(_) | FileData::File { .. } if data.size() == 0 => {
                PInode::new(meta, ifmt::REG, Body::Empty)
            }
            _ => PInode::new(meta, ifmt::REG, Body::Data(data)),
        },
        Kind::Symlink(target) => PInode::new(meta, ifmt::LNK, Body::Symlink(target)),
        Kind::Device {
            block,
            major,
            minor,
        } => PInode::new(
            meta,
            if *block { ifmt::BLK } else { ifmt::CHR },
            Body::Rdev(format::encode_rdev(*major, *minor)),
        ),
        Kind::Fifo => PInode::new(meta, ifmt::FIFO, Body::Empty),
        Kind::Socket => PInode::new(meta, ifmt::SOCK, Body::Empty),
    }
}

/// Store each (name, value) pair used by two or more inodes once in the
/// shared area (e.g. the empty `trusted.overlay.metacopy` of every external
/// file, a common `security.capability`); the rest stays inline, sorted by
/// (index, name).
fn share_xattrs<'a>(inodes: &mut [PInode<'a>]) -> Vec<Xattr<'a>> {
    let mut count: HashMap<&Xattr<'a>, u32> = HashMap::new();
    for inode in inodes.iter() {
        for x in &inode.xattrs {
            *count.entry(x).or_default() += 1;
        }
    }
    let mut shared: Vec<Xattr<'a>> = count
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(x, _)| x.clone())
        .collect();
    shared.sort();
    let ids: HashMap<&Xattr<'a>, u32> = shared
        .iter()
        .enumerate()
        .map(|(i, x)| (x, i as u32))
        .collect();
    for inode in inodes.iter_mut() {
        inode.xattrs.sort();
        inode
            .xattrs
            .dedup_by(|a, b| a.index == b.index && a.suffix == b.suffix);
        for (i, x) in inode.xattrs.iter().enumerate() {
            match ids.get(x) {
                // h_shared_count is a u8.
                Some(&id) if inode.shared.len() < 255 => inode.shared.push(id),
                _ => inode.inline_xattrs.push(i),
            }
        }
        inode.shared.sort_unstable();
    }
    shared
}

/// The superblock's `build_time`: the mtime most inodes have (ties: the
/// earliest), since compact inodes can only carry that one.
fn most_common_mtime(inodes: &[PInode]) -> (i64, u32) {
    let mut count: BTreeMap<(i64, u32), usize> = BTreeMap::new();
    for i in inodes {
        *count.entry((i.mtime, i.mtime_nsec)).or_default() += 1;
    }
    let mut best = ((0, 0), 0);
    for (t, n) in count {
        if n > best.1 {
            best = (t, n);
        }
    }
    best.0
}

/// Decide the inode format and everything about the data that does not
/// depend on where the inode lands; [`choose_inline`] settles the rest.
fn size_inode(inode: &mut PInode, build_time: (i64, u32)) {
    // The size that decides compact vs extended does not depend on the
    // inline choice, except for directories, which stay below 4 GiB.
    let size_for_format = match &inode.body {
        Body::Data(d) => d.size(),
        Body::External { size } => *size,
        Body::Symlink(t) => t.len() as u64,
        _ => 0,
    };
    inode.compact = (inode.mtime, inode.mtime_nsec) == build_time
        && inode.uid <= 0xffff
        && inode.gid <= 0xffff
        && inode.nlink <= 0xffff
        && size_for_format <= u64::from(u32::MAX);
    inode.base = if inode.compact {
        format::COMPACT_INODE_SIZE
    } else {
        format::EXTENDED_INODE_SIZE
    } + inode.xattr_size();
    match &mut inode.body {
        Body::Dir { entries, groups } => {
            let mut start = 0;
            let mut bytes = 0;
            for (i, e) in entries.iter().enumerate() {
                let len = format::DIRENT_SIZE + e.name.len() as u64;
                if bytes + len > BLOCK_SIZE {
                    groups.push(start..i);
                    start = i;
                    bytes = 0;
                }
                bytes += len;
            }
            groups.push(start..entries.len());
            let full = groups.len() as u64 - 1;
            if bytes < BLOCK_SIZE {
                // The last name of an inline tail needs no terminator: the
                // kernel reads directories through their page cache, where
                // the tail is followed by zeros.
                inode.tail = Some((full, bytes));
            }
            inode.nblocks = full + 1;
            inode.size = (full + 1) * BLOCK_SIZE;
        }
        Body::Data(d) => {
            let size = d.size();
            inode.size = size;
            inode.nblocks = size.div_ceil(BLOCK_SIZE);
            if size % BLOCK_SIZE > 0 {
                inode.tail = Some((size / BLOCK_SIZE, size % BLOCK_SIZE));
            }
        }
        Body::External { size } => {
            inode.layout = DataLayout::ChunkBased;
            inode.size = *size;
            inode.i_u = format::chunk_bits(*size) - u32::from(format::BLOCK_BITS);
            inode.inline = 4 * format::chunk_count(*size);
        }
        Body::Symlink(t) => {
            inode.size = t.len() as u64;
            inode.nblocks = 1;
            inode.tail = Some((0, t.len() as u64));
        }
        Body::Rdev(rdev) => inode.i_u = *rdev,
        Body::Empty => {}
    }
    inode.record = inode.base + inode.inline;
}

/// Inline a tail (`EROFS_INODE_FLAT_INLINE`) whenever inode, xattrs and
/// tail fit one block; else the tail gets a block of its own
/// (`EROFS_INODE_FLAT_PLAIN`).
fn choose_inline(inode: &mut PInode) {
    let Some((full, tail)) = inode.tail else {
        return;
    };
    let record = inode.base + tail;
    if record <= BLOCK_SIZE {
        inode.layout = DataLayout::FlatInline;
        inode.nblocks = full;
        inode.inline = tail;
        inode.record = record;
        if matches!(inode.body, Body::Dir { .. }) {
            inode.size = full * BLOCK_SIZE + tail;
        }
    } else {
        inode.layout = DataLayout::FlatPlain;
        inode.record = inode.base;
    }
}

/// How many of the last metadata blocks a record may go back to: bounds the
/// search (and keeps inodes near their breadth-first neighbours).
const BACKFILL_WINDOW: usize = 128;

/// Give every inode its byte offset: inodes follow the superblock in block 0
/// (`meta_blkaddr` = 0), at 32-byte slots, in order, each in the first of
/// the last [`BACKFILL_WINDOW`] metadata blocks that has room for the whole
/// record (inode, xattrs, inline data), so no record that fits a block straddles two and the gaps a big
/// record leaves are filled by the next small ones. A record larger than a
/// block (only with huge xattrs) starts a fresh block and spans several.
/// Returns the end of the inode area.
fn place(inodes: &mut [PInode]) -> u64 {
    // Bytes used in each metadata block (a multiple of 32).
    let mut fill: Vec<u64> = vec![format::SUPER_OFFSET + format::SUPER_SIZE];
    let mut first_open = 0;
    for inode in inodes.iter_mut() {
        choose_inline(inode);
        let record = inode.record.next_multiple_of(format::SLOT_SIZE);
        if record > BLOCK_SIZE {
            inode.offset = fill.len() as u64 * BLOCK_SIZE;
            let blocks = record.div_ceil(BLOCK_SIZE);
            fill.extend((1..blocks).map(|_| BLOCK_SIZE));
            fill.push(record - (blocks - 1) * BLOCK_SIZE);
        } else {
            let from = first_open.max(fill.len().saturating_sub(BACKFILL_WINDOW));
            let b = (from..fill.len())
                .find(|&b| fill[b] + record <= BLOCK_SIZE)
                .unwrap_or_else(|| {
                    fill.push(0);
                    fill.len() - 1
                });
            inode.offset = b as u64 * BLOCK_SIZE + fill[b];
            fill[b] += record;
        }
        while first_open < fill.len() && fill[first_open] + format::SLOT_SIZE > BLOCK_SIZE {
            first_open += 1;
        }
    }
    let last = fill.len() - 1;
    last as u64 * BLOCK_SIZE + fill[last]
}

impl Image {
    /// Write the image to `out`: the same tree gives the same bytes. Returns
    /// what was written. On error `out` holds a partial image: write to a
    /// temporary file and rename it into place.
    pub fn write(&self, out: &mut impl Write) -> Result<Stats> {
        let plan = plan(self)?;
        let mut meta = vec![0u8; plan.file_data_start as usize];
        let mut compact = 0;
        for (i, inode) in plan.inodes.iter().enumerate() {
            compact += u64::from(inode.compact);
            encode_inode(&plan, i, inode, &mut meta)?;
        }
        for (x, &off) in plan.shared.iter().zip(&plan.shared_offsets) {
            let mut v = Vec::new();
            format::encode_xattr_entry(&mut v, x.index, &x.suffix, &x.value);
            meta[off as usize..off as usize + v.len()].copy_from_slice(&v);
        }
        let uses_chunks = plan
            .inodes
            .iter()
            .any(|i| i.layout == DataLayout::ChunkBased);
        let mut sb = Superblock {
            feature_compat: format::FEATURE_COMPAT_MTIME,
            root_nid: plan.inodes[0].nid() as u16,
            inos: plan.inodes.len() as u64,
            build_time: plan.build_time.0 as u64,
            build_time_nsec: plan.build_time.1,
            blocks: plan.blocks as u32,
            meta_blkaddr: 0,
            xattr_blkaddr: plan.xattr_blkaddr as u32,
            uuid: [0; 16],
            feature_incompat: if uses_chunks {
                format::FEATURE_INCOMPAT_CHUNKED_FILE
            } else {
                0
            },
        };
        let so = format::SUPER_OFFSET as usize;
        sb.encode(&mut meta[so..so + format::SUPER_SIZE as usize]);
        sb.uuid = self.uuid.unwrap_or_else(|| derived_uuid(&meta));
        sb.encode(&mut meta[so..so + format::SUPER_SIZE as usize]);

        let io = |op, source| Error::Io {
            op,
            path: None,
            source,
        };
        out.write_all(&meta).map_err(|e| io("write the image", e))?;
        let mut written = meta.len() as u64;
        for inode in plan.inodes.iter() {
            let Body::Data(data) = inode.body else {
                continue;
            };
            if inode.nblocks == 0 {
                continue;
            }
            debug_assert_eq!(written, inode.blkaddr * BLOCK_SIZE);
            let len = (inode.nblocks * BLOCK_SIZE).min(data.size());
            match data {
                FileData::Bytes(b) => out
                    .write_all(&b[..len as usize])
                    .map_err(|e| io("write the image", e))?,
                FileData::File { path, size } => copy_file(path, *size, len, out)?,
                FileData::External { .. } => unreachable!("external files have no blocks"),
            }
            let pad = inode.nblocks * BLOCK_SIZE - len;
            write_zeros(out, pad).map_err(|e| io("write the image", e))?;
            written += inode.nblocks * BLOCK_SIZE;
        }
        debug_assert_eq!(written, plan.blocks * BLOCK_SIZE);
        out.flush().map_err(|e| io("flush the image", e))?;
        Ok(Stats {
            image_bytes: written,
            inodes: plan.inodes.len() as u64,
            compact_inodes: compact,
            extended_inodes: plan.inodes.len() as u64 - compact,
            shared_xattrs: plan.shared.len() as u64,
            metadata_bytes: plan.file_data_start,
            data_bytes: written - plan.file_data_start,
        })
    }
}

/// 16 bytes of SHA-256 over the metadata region (superblock with a zero
/// UUID, inodes, xattrs, directories), marked as an RFC 9562 version-8 UUID.
fn derived_uuid(meta: &[u8]) -> [u8; 16] {
    let digest = Sha256::digest(meta);
    let mut u = [0u8; 16];
    u.copy_from_slice(&digest[..16]);
    u[6] = (u[6] & 0x0f) | 0x80;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

fn write_zeros(out: &mut impl Write, mut n: u64) -> std::io::Result<()> {
    const Z: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(Z.len() as u64) as usize;
        out.write_all(&Z[..k])?;
        n -= k as u64;
    }
    Ok(())
}

fn open_data(path: &Path, size: u64) -> Result<File> {
    let f = File::open(path).map_err(|e| Error::Io {
        op: "open data file",
        path: Some(path.to_path_buf()),
        source: e,
    })?;
    let found = f
        .metadata()
        .map_err(|e| Error::Io {
            op: "stat data file",
            path: Some(path.to_path_buf()),
            source: e,
        })?
        .len();
    if found != size {
        return Err(Error::DataChanged {
            path: path.to_path_buf(),
            expected: size,
            found,
        });
    }
    Ok(f)
}

/// Copy the first `len` bytes of `path` (which must still be `size` long).
fn copy_file(path: &Path, size: u64, len: u64, out: &mut impl Write) -> Result<()> {
    let f = open_data(path, size)?;
    let copied = std::io::copy(&mut f.take(len), out).map_err(|e| Error::Io {
        op: "copy data file into the image",
        path: Some(path.to_path_buf()),
        source: e,
    })?;
    if copied != len {
        return Err(Error::DataChanged {
            path: path.to_path_buf(),
            expected: size,
            found: copied,
        });
    }
    Ok(())
}

/// The last `len` bytes of a data file (its inline tail).
fn read_tail(data: &FileData, len: u64) -> Result<Cow<'_, [u8]>> {
    let size = data.size();
    match data {
        FileData::Bytes(b) => Ok(Cow::Borrowed(&b[(size - len) as usize..])),
        FileData::File { path, size } => {
            let mut f = open_data(path, *size)?;
            let mut buf = vec![0u8; len as usize];
            f.seek(SeekFrom::Start(size - len))
                .and_then(|_| f.read_exact(&mut buf))
                .map_err(|e| Error::Io {
                    op: "read data file",
                    path: Some(path.clone()),
                    source: e,
                })?;
            Ok(Cow::Owned(buf))
        }
        FileData::External { .. } => unreachable!("external files have no inline data"),
    }
}

/// Encode one directory block (entries, then names) into `out`.
fn encode_dir_block(plan: &Plan, entries: &[DirEnt], out: &mut [u8]) {
    let mut nameoff = format::DIRENT_SIZE as usize * entries.len();
    for (k, e) in entries.iter().enumerate() {
        let d = k * format::DIRENT_SIZE as usize;
        format::put_u64(out, d, plan.inodes[e.inode].nid()); // nid
        format::put_u16(out, d + 8, nameoff as u16); // nameoff
        out[d + 10] = e.ftype; // file_type
        out[d + 11] = 0; // reserved
        out[nameoff..nameoff + e.name.len()].copy_from_slice(e.name);
        nameoff += e.name.len();
    }
}

fn encode_inode(plan: &Plan, i: usize, inode: &PInode, meta: &mut [u8]) -> Result<()> {
    let xsize = inode.xattr_size();
    let header = InodeHeader {
        layout: inode.layout,
        xattr_icount: if xsize == 0 {
            0
        } else {
            u16::try_from((xsize - format::XATTR_IBODY_HEADER_SIZE) / 4 + 1).map_err(|_| {
                Error::TooLarge {
                    what: format!("inode {i} has more than 256 KiB of xattrs"),
                }
            })?
        },
        mode: inode.mode,
        nlink: inode.nlink,
        size: inode.size,
        i_u: inode.i_u,
        ino: i as u32 + 1,
        uid: inode.uid,
        gid: inode.gid,
        mtime: inode.mtime as u64,
        mtime_nsec: inode.mtime_nsec,
    };
    let mut pos = inode.offset as usize;
    if inode.compact {
        header.encode_compact(&mut meta[pos..pos + 32]);
        pos += 32;
    } else {
        header.encode_extended(&mut meta[pos..pos + 64]);
        pos += 64;
    }
    if xsize > 0 {
        // struct erofs_xattr_ibody_header: h_name_filter 0 (no
        // XATTR_FILTER feature), h_shared_count, reserved, shared ids.
        meta[pos + 4] = inode.shared.len() as u8;
        pos += format::XATTR_IBODY_HEADER_SIZE as usize;
        for &id in &inode.shared {
            let off = plan.shared_offsets[id as usize] - plan.xattr_blkaddr * BLOCK_SIZE;
            format::put_u32(meta, pos, (off / 4) as u32);
            pos += 4;
        }
        let mut v = Vec::new();
        for &k in &inode.inline_xattrs {
            let x = &inode.xattrs[k];
            format::encode_xattr_entry(&mut v, x.index, &x.suffix, &x.value);
        }
        meta[pos..pos + v.len()].copy_from_slice(&v);
        pos += v.len();
    }
    let isize = if inode.compact { 32 } else { 64 };
    debug_assert_eq!(pos as u64, inode.offset + isize + xsize);
    let inline = inode.inline as usize;
    match &inode.body {
        Body::Dir { entries, groups } => {
            for (g, range) in groups.iter().enumerate() {
                let es = &entries[range.clone()];
                if g + 1 == groups.len() && inode.layout == DataLayout::FlatInline {
                    encode_dir_block(plan, es, &mut meta[pos..pos + inline]);
                } else {
                    let b = ((inode.blkaddr + g as u64) * BLOCK_SIZE) as usize;
                    encode_dir_block(plan, es, &mut meta[b..b + BLOCK_SIZE as usize]);
                }
            }
        }
        Body::Data(data) if inline > 0 => {
            let tail = read_tail(data, inode.inline)?;
            meta[pos..pos + inline].copy_from_slice(&tail);
        }
        Body::External { .. } => {
            for k in 0..inline / 4 {
                format::put_u32(meta, pos + 4 * k, format::NULL_ADDR);
            }
        }
        Body::Symlink(target) => {
            if inline > 0 {
                meta[pos..pos + inline].copy_from_slice(target);
            } else {
                let b = (inode.blkaddr * BLOCK_SIZE) as usize;
                meta[b..b + target.len()].copy_from_slice(target);
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Meta;

    fn m() -> Meta {
        Meta::new(0o644, 0, 0)
    }

    fn sample(order_reversed: bool) -> Image {
        let mut img = Image::new();
        img.add_dir("/", Meta::new(0o755, 0, 0).mtime(100, 0))
            .unwrap();
        let mut names: Vec<String> = (0..300).map(|i| format!("f{i:04}")).collect();
        if order_reversed {
            names.reverse();
        }
        img.add_dir("/d", m().mtime(100, 0)).unwrap();
        for n in &names {
            img.add_file(
                format!("/d/{n}"),
                m().mtime(100, 0).xattr("user.k", "v"),
                FileData::Bytes(n.as_bytes().to_vec()),
            )
            .unwrap();
        }
        img
    }

    fn bytes(img: &Image) -> Vec<u8> {
        let mut v = Vec::new();
        img.write(&mut v).unwrap();
        v
    }

    #[test]
    fn same_tree_same_bytes_whatever_the_insertion_order() {
        let a = bytes(&sample(false));
        let b = bytes(&sample(true));
        assert_eq!(a.len() % 4096, 0);
        assert!(a == b, "images differ");
        let mut c = sample(false);
        c.add_file("/x", m(), FileData::Bytes(vec![])).unwrap();
        assert_ne!(
            bytes(&c)[1024 + 48..1024 + 64],
            a[1024 + 48..1024 + 64],
            "UUID follows content"
        );
    }

    #[test]
    fn no_inline_record_straddles_a_block_and_entries_are_sorted() {
        let mut img = sample(false);
        img.add_dir("/-early", m()).unwrap(); // sorts before "."
        img.add_symlink("/l", m(), "t".repeat(3000)).unwrap();
        img.add_symlink("/l2", m(), "t".repeat(4090)).unwrap();
        img.add_file("/big", m(), FileData::Bytes(vec![7; 10_000]))
            .unwrap();
        let plan = plan(&img).unwrap();
        for inode in &plan.inodes {
            assert_eq!(inode.offset % 32, 0);
            if inode.record <= BLOCK_SIZE {
                assert_eq!(
                    inode.offset / BLOCK_SIZE,
                    (inode.offset + inode.record - 1) / BLOCK_SIZE
                );
            }
            if let Body::Dir { entries, .. } = &inode.body {
                assert!(entries.windows(2).all(|w| w[0].name < w[1].name));
            }
        }
        let root = &plan.inodes[0];
        let Body::Dir { entries, .. } = &root.body else {
            panic!()
        };
        assert_eq!(entries[0].name, b"-early");
        // The 4090-byte symlink does not fit next to its inode: own block.
        let l2 = plan.inodes.iter().find(|i| i.size == 4090).unwrap();
        assert_eq!((l2.layout, l2.nblocks), (DataLayout::FlatPlain, 1));
        // 10_000 bytes: 2 blocks + an inline tail of 1808, or 3 blocks.
        let big = plan.inodes.iter().find(|i| i.size == 10_000).unwrap();
        assert!(matches!(
            (big.layout, big.nblocks, big.inline),
            (DataLayout::FlatInline, 2, 1808) | (DataLayout::FlatPlain, 3, 0)
        ));
    }

    #[test]
    fn the_common_xattr_is_shared_and_build_time_is_the_common_mtime() {
        let img = sample(false);
        let plan = plan(&img).unwrap();
        assert_eq!(plan.shared.len(), 1);
        assert_eq!(plan.build_time, (100, 0));
        assert!(plan.inodes.iter().all(|i| i.compact));
        let f = &plan.inodes[3];
        assert_eq!(f.shared.len(), 1);
        assert!(f.inline_xattrs.is_empty());
    }

    #[test]
    fn object_whiteouts_share_one_inode_and_skip_names_the_tree_uses() {
        let mut img = Image::new();
        img.add_dir("/ab", m()).unwrap();
        img.add_file("/cd", m(), FileData::Bytes(vec![1])).unwrap();
        img.set_object_whiteouts(true);
        let plan = plan(&img).unwrap();
        let Body::Dir { entries, .. } = &plan.inodes[0].body else {
            panic!()
        };
        assert_eq!(entries.len(), 2 + 256);
        let w: Vec<_> = entries.iter().filter(|e| e.ftype == ft::CHRDEV).collect();
        assert_eq!(w.len(), 254);
        assert!(w.iter().all(|e| e.inode == w[0].inode));
        assert_eq!(plan.inodes[w[0].inode].nlink, 254);
        let ab = entries.iter().find(|e| e.name == b"ab").unwrap();
        assert!(plan.inodes[ab.inode]
            .xattrs
            .iter()
            .any(|x| &*x.suffix == b"overlay.opaque"));
        assert!(plan.inodes[0]
            .xattrs
            .iter()
            .any(|x| &*x.suffix == b"overlay.opaque"));
    }

    #[test]
    fn external_files_are_one_null_chunk_with_overlay_xattrs() {
        let mut img = Image::new();
        img.add_file("/e", m(), FileData::object(1 << 20, &[0xab; 32]))
            .unwrap();
        img.add_file("/z", m(), FileData::object(0, &[0xab; 32]))
            .unwrap();
        let plan = plan(&img).unwrap();
        let e = &plan.inodes[1];
        assert_eq!(
            (e.layout, e.i_u, e.inline, e.nblocks),
            (DataLayout::ChunkBased, 8, 4, 0)
        );
        assert_eq!(e.xattrs.len(), 2);
        let mut vimg = Image::new();
        vimg.add_file(
            "/v",
            m(),
            FileData::External {
                size: 5,
                redirect: "/ab/cd".into(),
                verity: Some([7; 32]),
            },
        )
        .unwrap();
        let vplan = super::plan(&vimg).unwrap();
        let mc = &vplan.inodes[1].xattrs[0];
        assert_eq!(&*mc.suffix, b"overlay.metacopy");
        assert_eq!(&mc.value[..4], [0, 36, 0, 1]);
        assert_eq!(&mc.value[4..], [7; 32]);
        let z = &plan.inodes[2];
        assert_eq!(
            (z.layout, z.size, z.xattrs.len()),
            (DataLayout::FlatPlain, 0, 0)
        );
    }

    #[test]
    fn a_refused_entry_leaves_the_image_unchanged() {
        let mut img = sample(false);
        let before = bytes(&img);
        let bad: Vec<crate::Result<()>> = vec![
            img.add_file("/nope/x", m(), FileData::Bytes(vec![1])),
            img.add_file("/d/f0001", m(), FileData::Bytes(vec![1])),
            img.add_file(
                "/d/new",
                m().xattr("system.nfs4_acl", "x"),
                FileData::Bytes(vec![]),
            ),
            img.add_dir("/", Meta::new(0o40755, 0, 0)),
            img.add_hardlink("/d/new", "/d"),
            img.add_symlink("/d/new", m(), ""),
            img.add_char_device("/d/new", m(), 5000, 0),
        ];
        assert!(bad.iter().all(|r| r.is_err()));
        assert!(bytes(&img) == before, "a refused add changed the image");
    }

    #[test]
    fn a_data_file_that_changed_size_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("genboot-erofs-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("data");
        std::fs::write(&p, b"hello").unwrap();
        let mut img = Image::new();
        img.add_file(
            "/f",
            m(),
            FileData::File {
                path: p.clone(),
                size: 4,
            },
        )
        .unwrap();
        let e = img.write(&mut Vec::new()).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            matches!(
                e,
                Error::DataChanged {
                    expected: 4,
                    found: 5,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("data"), "{e}");
    }
}
