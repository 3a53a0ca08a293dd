//! The manifest of a tree object and tree hash v2 (pure: no I/O).
//!
//! A manifest lists every path of a tree once, sorted bytewise by path, with
//! everything a system needs and the v1 store hash drops: kind, all 12
//! permission bits, uid, gid, size and SHA-256 of file contents, symlink
//! targets, device numbers, xattrs, hard links inside the tree, and the
//! (clamped) mtime.
//!
//! # Text format (`manifest` in a tree object)
//!
//! ```text
//! genboot-tree-manifest v2
//! epoch 1735689600                      (or "epoch none": mtimes were not clamped)
//! <path> d <mode> <uid> <gid> <mtime>[ <xattr>...]
//! <path> f <mode> <uid> <gid> <mtime> <size> <sha256>[ data:<bytes>][ <xattr>...]
//! <path> l <mode> <uid> <gid> <mtime> <target>[ <xattr>...]
//! <path> c <mode> <uid> <gid> <mtime> <major>:<minor>[ <xattr>...]     (b: block device)
//! <path> p <mode> <uid> <gid> <mtime>[ <xattr>...]                      (s: socket)
//! <path> h <target path>                                                (hard link)
//! ```
//!
//! One line per entry, `\n`-terminated, fields separated by one space,
//! entries sorted bytewise by their raw path. `<path>` is absolute (`/` is
//! the tree's root, which is always the first entry). `<mode>` is four octal
//! digits (`4755`); `<mtime>` is seconds since the epoch, with `.` and nine
//! digits of nanoseconds when those are not zero (may be negative);
//! `<sha256>` is 64 lower-case hex digits. A file of at most
//! [`INLINE_MAX`] bytes carries its content in `data:` (it is stored in the
//! metadata image, not as an object); a larger one is the object
//! `objects/<sha256[..2]>/<sha256[2..]>`. An xattr is `x:<name>=<value>`,
//! sorted by name. A hard link names the first path (in manifest order) of
//! the same inode, which carries the inode's metadata; hard links are never
//! directories.
//!
//! Paths, targets, inline data and xattr names/values are byte strings,
//! escaped so that any byte round-trips: bytes `0x21`…`0x7e` stand for
//! themselves, except `\` (written `\\`) and, in xattr names, `=`; every
//! other byte (space, newline, controls, non-ASCII) is `\xHH`.
//!
//! # Tree hash v2
//!
//! The tree object `<hash>-<name>` has `<hash>` = the first 32 hex digits of
//! SHA-256 over:
//!
//! ```text
//! "genboot-tree-v2\0" F(name)
//! for each entry in manifest order:
//!   F(path) F(kind letter)
//!   inode:     F(mode, 4 octal digits) F(uid) F(gid)
//!              f: F(size) F(sha256 hex) | l: F(target) | c, b: F(major) F(minor) | d, p, s: nothing
//!              F(number of xattrs) then F(name) F(value) for each, sorted by name
//!   hard link: F(target path)
//! ```
//!
//! where `F(x)` is the length of `x` as 8 bytes little-endian followed by
//! `x`, and numbers are decimal ASCII. It covers content, full mode, owner,
//! group, xattrs (file capabilities, ACLs), symlink targets, device numbers,
//! hard links and the object's name; it does **not** cover mtimes or the
//! epoch (two builds of the same system that differ only in when files were
//! written are the same tree; the first one imported keeps its mtimes), nor
//! the `root.erofs`/`packages` files, which are derived from the manifest
//! (so the hash does not depend on the image writer's version). v1 objects
//! (`genboot_format::storehash`, directory objects) are untouched by this.

use genboot_format::store_name::StoreHash;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// Files of at most this many bytes are kept in the manifest and inline in
/// the metadata image instead of the object store.
pub const INLINE_MAX: u64 = genboot_erofs::INLINE_MAX;

/// First line of every v2 manifest.
pub const HEADER: &str = "genboot-tree-manifest v2";

/// A content digest.
pub type Sha256Digest = [u8; 32];

/// Modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mtime {
    pub sec: i64,
    pub nsec: u32,
}

impl Mtime {
    pub fn new(sec: i64, nsec: u32) -> Mtime {
        Mtime { sec, nsec }
    }
    /// No later than `epoch` (a later time becomes `epoch`, nanoseconds 0).
    pub fn clamp(self, epoch: Option<i64>) -> Mtime {
        match epoch {
            Some(e) if self.sec >= e && (self.sec > e || self.nsec > 0) => Mtime::new(e, 0),
            _ => self,
        }
    }
}

/// Inode metadata kept per entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Mtime,
    /// Full xattr names to values, sorted by name.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Meta {
    pub fn new(mode: u32, uid: u32, gid: u32, mtime: Mtime) -> Meta {
        Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs: BTreeMap::new(),
        }
    }
}

/// What an inode is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// A regular file. `inline` holds the content when `size <= INLINE_MAX`
    /// (and only then).
    File {
        size: u64,
        sha256: Sha256Digest,
        inline: Option<Vec<u8>>,
    },
    Symlink {
        target: Vec<u8>,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
}

impl Kind {
    pub fn letter(&self) -> char {
        match self {
            Kind::Dir => 'd',
            Kind::File { .. } => 'f',
            Kind::Symlink { .. } => 'l',
            Kind::CharDevice { .. } => 'c',
            Kind::BlockDevice { .. } => 'b',
            Kind::Fifo => 'p',
            Kind::Socket => 's',
        }
    }

    /// A regular file with `data` as its content (inline when small).
    pub fn file_with(data: &[u8]) -> Kind {
        let size = data.len() as u64;
        Kind::File {
            size,
            sha256: Sha256::digest(data).into(),
            inline: (size <= INLINE_MAX).then(|| data.to_vec()),
        }
    }
}

/// One manifest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Inode {
        meta: Meta,
        kind: Kind,
    },
    /// Another name of the inode at `target` (an earlier path).
    Hardlink {
        target: Vec<u8>,
    },
}

impl Entry {
    pub fn meta(&self) -> Option<&Meta> {
        match self {
            Entry::Inode { meta, .. } => Some(meta),
            Entry::Hardlink { .. } => None,
        }
    }
    pub fn kind(&self) -> Option<&Kind> {
        match self {
            Entry::Inode { kind, .. } => Some(kind),
            Entry::Hardlink { .. } => None,
        }
    }
}

/// A manifest: entries by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The time mtimes were clamped to (`SOURCE_DATE_EPOCH`), if any.
    pub epoch: Option<i64>,
    pub entries: BTreeMap<Vec<u8>, Entry>,
}

/// Why a manifest (text or built) is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct ManifestError {
    /// 1-based line of the text, when parsing.
    pub line: Option<usize>,
    pub reason: String,
}

fn bad<T>(line: Option<usize>, reason: impl Into<String>) -> Result<T, ManifestError> {
    Err(ManifestError {
        line,
        reason: reason.into(),
    })
}

/// Check that `path` is an absolute, normalised path: `/` or `/a/b`, no
/// empty, `.` or `..` component, no NUL, no trailing `/`.
pub fn check_path(path: &[u8]) -> Result<(), String> {
    if path == b"/" {
        return Ok(());
    }
    if path.first() != Some(&b'/') {
        return Err(format!("path {} is not absolute", show(path)));
    }
    if path.contains(&0) {
        return Err(format!("path {} contains a NUL byte", show(path)));
    }
    for comp in path[1..].split(|&b| b == b'/') {
        if comp.is_empty() || comp == b"." || comp == b".." {
            return Err(format!(
                "path {} has an empty, '.' or '..' component",
                show(path)
            ));
        }
        if comp.len() > 255 {
            return Err(format!(
                "path {} has a component longer than 255 bytes",
                show(path)
            ));
        }
    }
    Ok(())
}

/// The parent of an absolute path (`/` for `/x`); `None` for `/`.
pub fn parent(path: &[u8]) -> Option<&[u8]> {
    if path == b"/" {
        return None;
    }
    let i = path.iter().rposition(|&b| b == b'/')?;
    Some(if i == 0 { b"/" } else { &path[..i] })
}

/// `base` + `/` + `name` for absolute paths.
pub fn join(base: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = base.to_vec();
    if p != b"/" {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A path for messages: escaped like the manifest does.
pub fn show(path: &[u8]) -> String {
    escape(path, false)
}

/// Escape bytes for the manifest (see the module docs).
pub fn escape(bytes: &[u8], xattr_name: bool) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b == b'\\' {
            s.push_str("\\\\");
        } else if (0x21..=0x7e).contains(&b) && !(xattr_name && b == b'=') {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

/// Undo [`escape`].
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            match b.get(i + 1) {
                Some(b'\\') => {
                    out.push(b'\\');
                    i += 2;
                }
                Some(b'x') => {
                    let hex = b
                        .get(i + 2..i + 4)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| format!("bad escape in {s:?}"))?;
                    out.push(hex);
                    i += 4;
                }
                _ => return Err(format!("bad escape in {s:?}")),
            }
        } else if (0x21..=0x7e).contains(&c) {
            out.push(c);
            i += 1;
        } else {
            return Err(format!("unescaped byte {c:#04x} in {s:?}"));
        }
    }
    Ok(out)
}

pub fn hex(bytes: &[u8]) -> String {
    genboot_format::hex(bytes)
}

fn parse_hex32(s: &str) -> Option<Sha256Digest> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Parse a 64-digit lower-case hex SHA-256.
pub fn parse_sha256(s: &str) -> Option<Sha256Digest> {
    parse_hex32(s)
}

fn fmt_mtime(m: Mtime) -> String {
    if m.nsec == 0 {
        m.sec.to_string()
    } else {
        format!("{}.{:09}", m.sec, m.nsec)
    }
}

fn parse_mtime(s: &str) -> Option<Mtime> {
    let (sec, nsec) = match s.split_once('.') {
        Some((a, b)) => {
            if b.len() != 9 || !b.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let n: u32 = b.parse().ok()?;
            if n == 0 {
                return None; // canonical form has no ".000000000"
            }
            (a, n)
        }
        None => (s, 0),
    };
    Some(Mtime::new(sec.parse().ok()?, nsec))
}

fn parse_num<T: std::str::FromStr>(s: &str) -> Option<T> {
    // Canonical decimal only: no sign, no leading zeros.
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

impl Manifest {
    /// An empty manifest (add `/` before anything else).
    pub fn new(epoch: Option<i64>) -> Manifest {
        Manifest {
            epoch,
            entries: BTreeMap::new(),
        }
    }

    pub fn get(&self, path: &[u8]) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// The inode behind `path`, following a hard link.
    pub fn inode(&self, path: &[u8]) -> Option<(&Meta, &Kind)> {
        match self.entries.get(path)? {
            Entry::Inode { meta, kind } => Some((meta, kind)),
            Entry::Hardlink { target } => match self.entries.get(target)? {
                Entry::Inode { meta, kind } => Some((meta, kind)),
                Entry::Hardlink { .. } => None,
            },
        }
    }

    /// Objects the tree references (files larger than [`INLINE_MAX`]):
    /// digest → size, each once.
    pub fn objects(&self) -> BTreeMap<Sha256Digest, u64> {
        let mut out = BTreeMap::new();
        for e in self.entries.values() {
            if let Entry::Inode {
                kind: Kind::File { size, sha256, .. },
                ..
            } = e
            {
                if *size > INLINE_MAX {
                    out.insert(*sha256, *size);
                }
            }
        }
        out
    }

    /// Check every invariant the text format and the image need: `/` is a
    /// directory, every parent exists and is a directory, paths are
    /// normalised, files carry inline data exactly when small (and it
    /// matches size and digest), hard links point to an earlier,
    /// non-directory inode, modes fit 12 bits, symlink targets are 1…4095
    /// bytes without NUL, device numbers fit EROFS (major < 4096, minor <
    /// 2^20), mtime nanoseconds are below 10^9.
    pub fn validate(&self) -> Result<(), ManifestError> {
        match self.entries.get(&b"/"[..]) {
            Some(Entry::Inode {
                kind: Kind::Dir, ..
            }) => {}
            _ => return bad(None, "the root / is missing or not a directory"),
        }
        for (path, e) in &self.entries {
            check_path(path).or_else(|r| bad(None, r))?;
            if let Some(p) = parent(path) {
                match self.entries.get(p) {
                    Some(Entry::Inode {
                        kind: Kind::Dir, ..
                    }) => {}
                    Some(_) => {
                        return bad(
                            None,
                            format!("{}: its parent is not a directory", show(path)),
                        )
                    }
                    None => {
                        return bad(
                            None,
                            format!("{}: its parent directory is missing", show(path)),
                        )
                    }
                }
            }
            match e {
                Entry::Hardlink { target } => {
                    if target >= path {
                        return bad(
                            None,
                            format!(
                                "{}: hard link to {}, which does not come first in path order",
                                show(path),
                                show(target)
                            ),
                        );
                    }
                    match self.entries.get(target) {
                        Some(Entry::Inode { kind, .. }) if *kind != Kind::Dir => {}
                        _ => {
                            return bad(
                                None,
                                format!(
                                    "{}: hard link target {} is not a non-directory inode",
                                    show(path),
                                    show(target)
                                ),
                            )
                        }
                    }
                }
                Entry::Inode { meta, kind } => {
                    check_inode(path, meta, kind).or_else(|r| bad(None, r))?;
                }
            }
        }
        Ok(())
    }

    /// Make hard-link groups canonical after paths were renamed or removed:
    /// the first path of each group (in path order) holds the inode.
    pub fn canonicalize_hardlinks(&mut self) {
        // group: inode path -> all link paths
        let mut groups: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
        for (p, e) in &self.entries {
            if let Entry::Hardlink { target } = e {
                groups.entry(target.clone()).or_default().push(p.clone());
            }
        }
        for (inode_path, links) in groups {
            let first = links.iter().min().expect("group has links").clone();
            if !self.entries.contains_key(&inode_path) {
                // The inode was removed: the first link takes it over only if
                // the caller kept the inode elsewhere; drop dangling links.
                for l in links {
                    self.entries.remove(&l);
                }
                continue;
            }
            if first < inode_path {
                let inode = self.entries.remove(&inode_path).expect("present");
                self.entries.insert(first.clone(), inode);
                self.entries.insert(
                    inode_path.clone(),
                    Entry::Hardlink {
                        target: first.clone(),
                    },
                );
                for l in links.iter().filter(|l| **l != first) {
                    self.entries.insert(
                        l.clone(),
                        Entry::Hardlink {
                            target: first.clone(),
                        },
                    );
                }
            }
        }
    }

    /// Remove `path` (not a directory with children). When it holds the
    /// inode of a hard-link group, the next name of the group takes it over.
    pub fn remove(&mut self, path: &[u8]) -> Option<Entry> {
        let e = self.entries.remove(path)?;
        if let Entry::Inode { .. } = &e {
            let links: Vec<Vec<u8>> = self
                .entries
                .iter()
                .filter(|(_, v)| matches!(v, Entry::Hardlink { target } if target == path))
                .map(|(k, _)| k.clone())
                .collect();
            if let Some(first) = links.first() {
                self.entries.insert(first.clone(), e.clone());
                for l in &links[1..] {
                    self.entries.insert(
                        l.clone(),
                        Entry::Hardlink {
                            target: first.clone(),
                        },
                    );
                }
            }
        }
        Some(e)
    }

    /// The canonical text.
    pub fn to_text(&self) -> Vec<u8> {
        let mut s = String::with_capacity(self.entries.len() * 120);
        s.push_str(HEADER);
        s.push('\n');
        match self.epoch {
            Some(e) => {
                let _ = writeln!(s, "epoch {e}");
            }
            None => s.push_str("epoch none\n"),
        }
        for (path, e) in &self.entries {
            s.push_str(&escape(path, false));
            match e {
                Entry::Hardlink { target } => {
                    s.push_str(" h ");
                    s.push_str(&escape(target, false));
                }
                Entry::Inode { meta, kind } => {
                    let _ = write!(
                        s,
                        " {} {:04o} {} {} {}",
                        kind.letter(),
                        meta.mode,
                        meta.uid,
                        meta.gid,
                        fmt_mtime(meta.mtime)
                    );
                    match kind {
                        Kind::File {
                            size,
                            sha256,
                            inline,
                        } => {
                            let _ = write!(s, " {size} {}", hex(sha256));
                            if let Some(d) = inline {
                                s.push_str(" data:");
                                s.push_str(&escape(d, false));
                            }
                        }
                        Kind::Symlink { target } => {
                            s.push(' ');
                            s.push_str(&escape(target, false));
                        }
                        Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                            let _ = write!(s, " {major}:{minor}");
                        }
                        Kind::Dir | Kind::Fifo | Kind::Socket => {}
                    }
                    for (n, v) in &meta.xattrs {
                        s.push_str(" x:");
                        s.push_str(&escape(n, true));
                        s.push('=');
                        s.push_str(&escape(v, false));
                    }
                }
            }
            s.push('\n');
        }
        s.into_bytes()
    }

    /// Parse the canonical text; anything else (unsorted, duplicate,
    /// non-canonical numbers, broken invariants) is an error naming the line.
    pub fn parse(text: &[u8]) -> Result<Manifest, ManifestError> {
        let text = std::str::from_utf8(text).or_else(|_| bad(None, "not ASCII text"))?;
        let mut lines = text
            .split_terminator('\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l));
        if !text.ends_with('\n') {
            return bad(None, "the last line is not terminated by a newline");
        }
        match lines.next() {
            Some((_, l)) if l == HEADER => {}
            Some((n, l)) => {
                return bad(
                    Some(n),
                    format!("expected {HEADER:?}, found {l:?} (not a v2 tree manifest)"),
                )
            }
            None => return bad(None, "empty manifest"),
        }
        let epoch = match lines.next() {
            Some((_, "epoch none")) => None,
            Some((n, l)) => match l
                .strip_prefix("epoch ")
                .and_then(|e| match e.strip_prefix('-') {
                    Some(neg) => parse_num::<i64>(neg).map(|v| -v),
                    None => parse_num::<i64>(e),
                }) {
                Some(e) => Some(e),
                None => return bad(Some(n), format!("expected \"epoch N\", found {l:?}")),
            },
            None => return bad(None, "the epoch line is missing"),
        };
        let mut m = Manifest::new(epoch);
        let mut prev: Option<Vec<u8>> = None;
        for (n, line) in lines {
            let (path, entry) = parse_line(line).or_else(|r| bad(Some(n), r))?;
            if let Some(p) = &prev {
                if *p >= path {
                    return bad(
                        Some(n),
                        format!(
                            "{} is not after {} (unsorted or duplicate)",
                            show(&path),
                            show(p)
                        ),
                    );
                }
            }
            prev = Some(path.clone());
            m.entries.insert(path, entry);
        }
        m.validate()?;
        Ok(m)
    }

    /// Tree hash v2 of this manifest as object `name` (see the module docs):
    /// 32 hex digits.
    pub fn tree_hash(&self, name: &str) -> StoreHash {
        let mut h = Sha256::new();
        h.update(b"genboot-tree-v2\0");
        field(&mut h, name.as_bytes());
        for (path, e) in &self.entries {
            field(&mut h, path);
            match e {
                Entry::Hardlink { target } => {
                    field(&mut h, b"h");
                    field(&mut h, target);
                }
                Entry::Inode { meta, kind } => {
                    field(&mut h, kind.letter().to_string().as_bytes());
                    field(&mut h, format!("{:04o}", meta.mode).as_bytes());
                    field(&mut h, meta.uid.to_string().as_bytes());
                    field(&mut h, meta.gid.to_string().as_bytes());
                    match kind {
                        Kind::File { size, sha256, .. } => {
                            field(&mut h, size.to_string().as_bytes());
                            field(&mut h, hex(sha256).as_bytes());
                        }
                        Kind::Symlink { target } => field(&mut h, target),
                        Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                            field(&mut h, major.to_string().as_bytes());
                            field(&mut h, minor.to_string().as_bytes());
                        }
                        Kind::Dir | Kind::Fifo | Kind::Socket => {}
                    }
                    field(&mut h, meta.xattrs.len().to_string().as_bytes());
                    for (k, v) in &meta.xattrs {
                        field(&mut h, k);
                        field(&mut h, v);
                    }
                }
            }
        }
        StoreHash::from_digest(&h.finalize().into())
    }

    /// Number of paths by kind letter (hard links as `h`).
    pub fn counts(&self) -> HashMap<char, u64> {
        let mut c = HashMap::new();
        for e in self.entries.values() {
            let k = match e {
                Entry::Hardlink { .. } => 'h',
                Entry::Inode { kind, .. } => kind.letter(),
            };
            *c.entry(k).or_insert(0) += 1;
        }
        c
    }
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn check_inode(path: &[u8], meta: &Meta, kind: &Kind) -> Result<(), String> {
    if meta.mode > 0o7777 {
        return Err(format!(
            "{}: mode {:o} exceeds 12 bits",
            show(path),
            meta.mode
        ));
    }
    if meta.mtime.nsec >= 1_000_000_000 {
        return Err(format!("{}: mtime nanoseconds out of range", show(path)));
    }
    if path == b"/" && *kind != Kind::Dir {
        return Err("the root / is not a directory".into());
    }
    for name in meta.xattrs.keys() {
        if name.is_empty() || name.contains(&0) {
            return Err(format!("{}: empty xattr name or NUL in it", show(path)));
        }
    }
    match kind {
        Kind::File {
            size,
            sha256,
            inline,
        } => match inline {
            Some(d) => {
                if d.len() as u64 != *size {
                    return Err(format!("{}: inline data is not {size} bytes", show(path)));
                }
                if *size > INLINE_MAX {
                    return Err(format!(
                        "{}: {size} bytes is above the inline limit {INLINE_MAX}",
                        show(path)
                    ));
                }
                let d: Sha256Digest = Sha256::digest(d).into();
                if d != *sha256 {
                    return Err(format!(
                        "{}: inline data does not match its SHA-256",
                        show(path)
                    ));
                }
            }
            None if *size <= INLINE_MAX => {
                return Err(format!(
                    "{}: a file of {size} bytes must carry its data inline",
                    show(path)
                ))
            }
            None => {}
        },
        Kind::Symlink { target } => {
            if target.is_empty() || target.len() > 4095 || target.contains(&0) {
                return Err(format!(
                    "{}: symlink target must be 1…4095 bytes without NUL",
                    show(path)
                ));
            }
        }
        Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
            if *major >= 4096 || *minor >= 1 << 20 {
                return Err(format!(
                    "{}: device {major}:{minor} does not fit (major < 4096, minor < 1048576)",
                    show(path)
                ));
            }
        }
        Kind::Dir | Kind::Fifo | Kind::Socket => {}
    }
    Ok(())
}

fn parse_line(line: &str) -> Result<(Vec<u8>, Entry), String> {
    let mut f = line.split(' ');
    let path = unescape(f.next().unwrap_or(""))?;
    let kind = f.next().ok_or("missing kind")?;
    if kind == "h" {
        let target = unescape(f.next().ok_or("hard link without a target")?)?;
        if f.next().is_some() {
            return Err("extra fields after a hard link".into());
        }
        return Ok((path, Entry::Hardlink { target }));
    }
    let num = |s: Option<&str>, what: &str| -> Result<u32, String> {
        s.and_then(parse_num::<u32>)
            .ok_or_else(|| format!("bad or missing {what}"))
    };
    let mode_s = f.next().ok_or("missing mode")?;
    if mode_s.len() != 4 {
        return Err(format!("mode {mode_s:?} is not 4 octal digits"));
    }
    let mode = u32::from_str_radix(mode_s, 8).map_err(|_| format!("bad mode {mode_s:?}"))?;
    let uid = num(f.next(), "uid")?;
    let gid = num(f.next(), "gid")?;
    let mt = f.next().ok_or("missing mtime")?;
    let mtime = parse_mtime(mt).ok_or_else(|| format!("bad mtime {mt:?}"))?;
    let mut rest: Vec<&str> = f.collect();
    let kind = match kind {
        "d" => Kind::Dir,
        "p" => Kind::Fifo,
        "s" => Kind::Socket,
        "f" => {
            if rest.len() < 2 {
                return Err("file without size and sha256".into());
            }
            let size: u64 = parse_num(rest[0]).ok_or("bad size")?;
            let sha256 = parse_hex32(rest[1]).ok_or("bad sha256")?;
            rest.drain(..2);
            let inline = match rest.first().and_then(|r| r.strip_prefix("data:")) {
                Some(d) => {
                    let d = unescape(d)?;
                    rest.remove(0);
                    Some(d)
                }
                None => None,
            };
            Kind::File {
                size,
                sha256,
                inline,
            }
        }
        "l" => {
            if rest.is_empty() {
                return Err("symlink without a target".into());
            }
            let target = unescape(rest.remove(0))?;
            Kind::Symlink { target }
        }
        "c" | "b" => {
            if rest.is_empty() {
                return Err("device without major:minor".into());
            }
            let (a, b) = rest
                .remove(0)
                .split_once(':')
                .ok_or("device numbers are not major:minor")?;
            let major = parse_num(a).ok_or("bad major")?;
            let minor = parse_num(b).ok_or("bad minor")?;
            if kind == "c" {
                Kind::CharDevice { major, minor }
            } else {
                Kind::BlockDevice { major, minor }
            }
        }
        other => return Err(format!("unknown kind {other:?}")),
    };
    let mut meta = Meta::new(mode, uid, gid, mtime);
    let mut last: Option<Vec<u8>> = None;
    for x in rest {
        let body = x
            .strip_prefix("x:")
            .ok_or_else(|| format!("unexpected field {x:?}"))?;
        let (n, v) = body.split_once('=').ok_or("xattr without '='")?;
        let (n, v) = (unescape(n)?, unescape(v)?);
        if last.as_ref().is_some_and(|l| *l >= n) {
            return Err("xattrs are not sorted by name (or repeated)".into());
        }
        last = Some(n.clone());
        meta.xattrs.insert(n, v);
    }
    Ok((path, Entry::Inode { meta, kind }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Manifest {
        let t = Mtime::new(1_700_000_000, 0);
        let mut m = Manifest::new(Some(1_735_689_600));
        let dir = |mode| Entry::Inode {
            meta: Meta::new(mode, 0, 0, t),
            kind: Kind::Dir,
        };
        m.entries.insert(b"/".to_vec(), dir(0o755));
        m.entries.insert(b"/usr".to_vec(), dir(0o755));
        m.entries.insert(b"/usr/bin".to_vec(), dir(0o755));
        m.entries.insert(b"/tmp".to_vec(), dir(0o1777));
        let mut ping = Meta::new(0o4755, 0, 0, Mtime::new(1_600_000_000, 5));
        ping.xattrs.insert(
            b"security.capability".to_vec(),
            vec![1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        m.entries.insert(
            b"/usr/bin/ping".to_vec(),
            Entry::Inode {
                meta: ping,
                kind: Kind::File {
                    size: 90_000,
                    sha256: [0xab; 32],
                    inline: None,
                },
            },
        );
        m.entries.insert(
            b"/usr/bin/ping6".to_vec(),
            Entry::Hardlink {
                target: b"/usr/bin/ping".to_vec(),
            },
        );
        m.entries.insert(
            b"/usr/bin/we ird\nname\\=".to_vec(),
            Entry::Inode {
                meta: Meta::new(0o640, 0, 42, t),
                kind: Kind::file_with(b"a b\n\xff"),
            },
        );
        m.entries.insert(
            b"/usr/bin/sh".to_vec(),
            Entry::Inode {
                meta: Meta::new(0o777, 0, 0, t),
                kind: Kind::Symlink {
                    target: b"../../bin/da sh".to_vec(),
                },
            },
        );
        m.entries.insert(
            b"/usr/null".to_vec(),
            Entry::Inode {
                meta: Meta::new(0o666, 0, 0, Mtime::new(-5, 0)),
                kind: Kind::CharDevice { major: 1, minor: 3 },
            },
        );
        m.entries.insert(
            b"/usr/fifo".to_vec(),
            Entry::Inode {
                meta: Meta::new(0o600, 100_000, 100_000, t),
                kind: Kind::Fifo,
            },
        );
        m
    }

    #[test]
    fn text_round_trips_arbitrary_bytes() {
        let m = m();
        m.validate().unwrap();
        let text = m.to_text();
        let back = Manifest::parse(&text).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.to_text(), text);
        let s = String::from_utf8(text).unwrap();
        assert!(
            s.contains("/usr/bin/we\\x20ird\\x0aname\\\\= f 0640 0 42 "),
            "{s}"
        );
        assert!(
            s.contains("/usr/bin/ping f 4755 0 0 1600000000.000000005 90000 abab"),
            "{s}"
        );
        assert!(s.contains(" x:security.capability=\\x01\\x00"), "{s}");
        assert!(s.contains("/usr/bin/ping6 h /usr/bin/ping\n"), "{s}");
        assert!(s.contains("/usr/null c 0666 0 0 -5 1:3\n"), "{s}");
        assert!(s.lines().count() == m.entries.len() + 2);
    }

    #[test]
    fn every_byte_escapes_and_round_trips() {
        let all: Vec<u8> = (0u8..=255).collect();
        for name in [false, true] {
            let e = escape(&all, name);
            assert!(e.bytes().all(|b| (0x21..=0x7e).contains(&b)));
            assert_eq!(unescape(&e).unwrap(), all);
        }
        assert!(!escape(b"a=b", true).contains('='));
    }

    #[test]
    fn hash_ignores_mtimes_and_epoch_but_not_metadata() {
        let a = m();
        let h = a.tree_hash("rootfs-x");
        assert_eq!(h.as_str().len(), 32);
        let mut b = a.clone();
        b.epoch = None;
        for e in b.entries.values_mut() {
            if let Entry::Inode { meta, .. } = e {
                meta.mtime = Mtime::new(1, 2);
            }
        }
        assert_eq!(
            b.tree_hash("rootfs-x"),
            h,
            "mtimes are not part of the hash"
        );
        assert_ne!(a.tree_hash("rootfs-y"), h, "the name is");
        type Change = Box<dyn Fn(&mut Manifest)>;
        let changes: Vec<Change> = vec![
            Box::new(|m| set_meta(m, b"/usr/bin/ping", |x| x.mode = 0o755)),
            Box::new(|m| set_meta(m, b"/usr/bin/ping", |x| x.uid = 1)),
            Box::new(|m| set_meta(m, b"/usr/bin/ping", |x| x.gid = 1)),
            Box::new(|m| {
                set_meta(m, b"/usr/bin/ping", |x| {
                    x.xattrs.clear();
                })
            }),
            Box::new(|m| {
                m.entries.remove(&b"/usr/bin/ping6"[..]);
            }),
            Box::new(|m| {
                m.entries.insert(
                    b"/usr/null".to_vec(),
                    Entry::Inode {
                        meta: Meta::new(0o666, 0, 0, Mtime::new(-5, 0)),
                        kind: Kind::CharDevice { major: 1, minor: 5 },
                    },
                );
            }),
            Box::new(|m| {
                if let Some(Entry::Inode {
                    kind: Kind::File { sha256, .. },
                    ..
                }) = m.entries.get_mut(&b"/usr/bin/ping"[..])
                {
                    sha256[0] = 0;
                }
            }),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut c = a.clone();
            change(&mut c);
            assert_ne!(
                c.tree_hash("rootfs-x"),
                h,
                "change {i} must change the hash"
            );
        }
    }

    fn set_meta(m: &mut Manifest, p: &[u8], f: impl Fn(&mut Meta)) {
        if let Some(Entry::Inode { meta, .. }) = m.entries.get_mut(p) {
            f(meta);
        }
    }

    #[test]
    fn parse_refuses_what_is_not_canonical() {
        let good = String::from_utf8(m().to_text()).unwrap();
        let cases = [
            (
                good.replacen("genboot-tree-manifest v2", "genboot-tree-manifest v3", 1),
                "line 1",
            ),
            (good.replacen("epoch 1735689600", "epoch 01", 1), "line 2"),
            (
                good.replacen("/tmp d 1777", "/tmp d 777", 1),
                "4 octal digits",
            ),
            (
                good.replacen(
                    "/usr/bin/ping6 h",
                    "/usr/bin/ping6 h /nope\n/usr/bin/ping6 h",
                    1,
                ),
                "",
            ),
            (good.replacen(" 90000 ", " 090000 ", 1), "bad size"),
            (good.trim_end().to_string(), "newline"),
            (good.replacen("/usr/fifo", "/usr/zz/fifo", 1), ""),
        ];
        for (text, want) in cases {
            let e = Manifest::parse(text.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(want), "{e} should mention {want:?}");
        }
    }

    #[test]
    fn validate_catches_broken_invariants() {
        let mut a = m();
        a.entries.remove(&b"/usr/bin"[..]);
        assert!(a
            .validate()
            .unwrap_err()
            .reason
            .contains("parent directory is missing"));
        let mut b = m();
        b.entries.insert(
            b"/usr/bin/big".to_vec(),
            Entry::Inode {
                meta: Meta::new(0o644, 0, 0, Mtime::new(0, 0)),
                kind: Kind::File {
                    size: 10,
                    sha256: [0; 32],
                    inline: None,
                },
            },
        );
        assert!(b.validate().unwrap_err().reason.contains("inline"));
        let mut c = m();
        c.entries.insert(
            b"/usr/bin/a".to_vec(),
            Entry::Hardlink {
                target: b"/usr/bin/ping".to_vec(),
            },
        );
        assert!(c
            .validate()
            .unwrap_err()
            .reason
            .contains("first in path order"));
    }

    #[test]
    fn removing_a_linked_inode_hands_it_to_the_next_name() {
        let mut a = m();
        a.entries.insert(
            b"/usr/bin/ping7".to_vec(),
            Entry::Hardlink {
                target: b"/usr/bin/ping".to_vec(),
            },
        );
        a.remove(b"/usr/bin/ping");
        assert!(matches!(
            a.get(b"/usr/bin/ping6"),
            Some(Entry::Inode { .. })
        ));
        assert_eq!(
            a.get(b"/usr/bin/ping7"),
            Some(&Entry::Hardlink {
                target: b"/usr/bin/ping6".to_vec()
            })
        );
        a.validate().unwrap();
    }

    #[test]
    fn renamed_groups_become_canonical() {
        let mut a = m();
        // Rename the inode path so it sorts after its link.
        let inode = a.entries.remove(&b"/usr/bin/ping"[..]).unwrap();
        a.entries.insert(b"/usr/bin/pingz".to_vec(), inode);
        a.entries.insert(
            b"/usr/bin/ping6".to_vec(),
            Entry::Hardlink {
                target: b"/usr/bin/pingz".to_vec(),
            },
        );
        a.canonicalize_hardlinks();
        a.validate().unwrap();
        assert!(matches!(
            a.get(b"/usr/bin/ping6"),
            Some(Entry::Inode { .. })
        ));
    }

    #[test]
    fn clamp_moves_only_later_times() {
        assert_eq!(Mtime::new(5, 3).clamp(Some(10)), Mtime::new(5, 3));
        assert_eq!(Mtime::new(10, 3).clamp(Some(10)), Mtime::new(10, 0));
        assert_eq!(Mtime::new(11, 0).clamp(Some(10)), Mtime::new(10, 0));
        assert_eq!(Mtime::new(11, 7).clamp(None), Mtime::new(11, 7));
    }

    #[test]
    fn objects_are_the_large_files_once() {
        let mut a = m();
        a.entries.insert(
            b"/usr/bin/copy".to_vec(),
            Entry::Inode {
                meta: Meta::new(0o755, 0, 0, Mtime::new(0, 0)),
                kind: Kind::File {
                    size: 90_000,
                    sha256: [0xab; 32],
                    inline: None,
                },
            },
        );
        let o = a.objects();
        assert_eq!(o.len(), 1);
        assert_eq!(o[&[0xab; 32]], 90_000);
    }
}
