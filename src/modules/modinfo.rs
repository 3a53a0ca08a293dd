//! One module file: decompress it when needed and read the key=value strings
//! of its ELF `.modinfo` section.

use super::input::{self, InputError, MAX_MODULE_BYTES};
use super::ModulesError;
use genboot_format::module_name::ModName;
use std::io::Read;
use std::path::Path;

pub use genboot_format::module_name::ModuleCompression;

/// What `.modinfo` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    pub name: Option<String>,
    pub depends: Vec<String>,
    pub softdep_pre: Vec<String>,
    pub softdep_post: Vec<String>,
    /// Each `softdep=` value as written, for `modules.softdep`.
    pub softdep_raw: Vec<String>,
    pub aliases: Vec<String>,
    pub firmware: Vec<String>,
    pub vermagic: Option<String>,
    /// Exported symbols, for `modules.symbols` (see [`read`]).
    pub exports: Vec<String>,
    /// Undefined symbols, in symbol-table order: depmod orders a module's
    /// dependencies by the first symbol each one provides.
    pub needs: Vec<String>,
}

/// Read `path` and parse its `.modinfo`, and the names it exports.
///
/// Only what is needed is read: the ELF header, the section table, the
/// section names, `.modinfo`, `__ksymtab_strings`, `.symtab` and
/// `.strtab`. A plain `.ko` is read in those pieces with positioned reads.
/// A compressed one is decompressed as a stream: its section table sits at
/// the end of the ELF, so the ELF is kept in memory up to the end of the
/// table (and of any needed section after it), and what follows (the
/// module signature) is decompressed only to let the format's checksum be
/// verified, without keeping it. Both are capped at [`MAX_MODULE_BYTES`]:
/// a file, or a decompressed stream, bigger than that is refused, so a
/// decompression bomb costs at most that much memory and work.
pub fn read(path: &Path, compression: ModuleCompression) -> Result<ModInfo, ModulesError> {
    let (file, size) = input::open_regular(path, false, MAX_MODULE_BYTES).map_err(|e| match e {
        InputError::Io(source) => ModulesError::Read {
            path: path.to_path_buf(),
            cause: source,
        },
        other => ModulesError::NotAModule {
            path: path.to_path_buf(),
            why: other.to_string(),
        },
    })?;
    let piece_err = |format: &'static str| {
        move |e: Piece| match e {
            Piece::Io(source) => ModulesError::Read {
                path: path.to_path_buf(),
                cause: source,
            },
            Piece::Decompress(why) => ModulesError::Decompress {
                path: path.to_path_buf(),
                format,
                why,
            },
            Piece::Bad(why) => ModulesError::BadElf {
                path: path.to_path_buf(),
                why,
            },
        }
    };
    let secs = match compression {
        ModuleCompression::None => {
            Sections::read(&mut Positioned { file, len: size }).map_err(piece_err("none"))?
        }
        ModuleCompression::Xz => {
            let mut s = Streamed::new(liblzma::read::XzDecoder::new_multi_decoder(file), size);
            let secs = Sections::read(&mut s).map_err(piece_err("xz"))?;
            s.drain().map_err(piece_err("xz"))?;
            secs
        }
        ModuleCompression::Zstd => {
            let dec =
                zstd::stream::read::Decoder::new(file).map_err(|source| ModulesError::Read {
                    path: path.to_path_buf(),
                    cause: source,
                })?;
            let mut s = Streamed::new(dec, size);
            let secs = Sections::read(&mut s).map_err(piece_err("zstd"))?;
            s.drain().map_err(piece_err("zstd"))?;
            secs
        }
        ModuleCompression::Gzip => {
            let mut s = Streamed::new(flate2::read::MultiGzDecoder::new(file), size);
            let secs = Sections::read(&mut s).map_err(piece_err("gzip"))?;
            s.drain().map_err(piece_err("gzip"))?;
            secs
        }
    };
    let mut m = parse(&secs.modinfo);
    m.exports = secs.exports();
    m.needs = secs.undefined();
    Ok(m)
}

#[derive(Debug)]
enum Piece {
    Io(std::io::Error),
    Decompress(String),
    Bad(String),
}

/// Where the bytes of a module's ELF come from.
trait Source {
    /// `n` bytes at `off`; an error if they lie past the end.
    fn read_at(&mut self, off: u64, n: u64) -> Result<Vec<u8>, Piece>;
}

fn past_end(off: u64, n: u64, len: u64) -> Piece {
    Piece::Bad(format!(
        "{n} bytes at offset {off} lie past the end of the {len}-byte file (truncated?)"
    ))
}

/// An uncompressed module file: positioned reads.
struct Positioned {
    file: std::fs::File,
    len: u64,
}

impl Source for Positioned {
    fn read_at(&mut self, off: u64, n: u64) -> Result<Vec<u8>, Piece> {
        use std::os::unix::fs::FileExt;
        if off.saturating_add(n) > self.len {
            return Err(past_end(off, n, self.len));
        }
        let mut buf = vec![0u8; n as usize];
        self.file.read_exact_at(&mut buf, off).map_err(Piece::Io)?;
        Ok(buf)
    }
}

/// A decompressing stream, kept in memory from its start up to the
/// furthest byte asked for (never beyond [`MAX_MODULE_BYTES`]).
struct Streamed<R: Read> {
    dec: R,
    buf: Vec<u8>,
    eof: bool,
    /// How much to reserve at most at once (four times the compressed
    /// size: a typical module ratio), so the buffer is not regrown a dozen
    /// times, nor reserved beyond what a hostile header claims.
    hint: usize,
}

impl<R: Read> Streamed<R> {
    fn new(dec: R, compressed: u64) -> Self {
        Streamed {
            dec,
            buf: Vec::new(),
            eof: false,
            hint: compressed.saturating_mul(4).min(MAX_MODULE_BYTES) as usize,
        }
    }

    fn fill(&mut self, end: u64) -> Result<(), Piece> {
        if end > MAX_MODULE_BYTES {
            return Err(Piece::Bad(format!(
                "its ELF headers place data at byte {end}, beyond the {MAX_MODULE_BYTES} bytes genboot reads from a module"
            )));
        }
        let want = end as usize;
        if self.buf.len() >= want || self.eof {
            return Ok(());
        }
        self.buf
            .reserve((want - self.buf.len()).min(self.hint.saturating_sub(self.buf.len())));
        let missing = (want - self.buf.len()) as u64;
        let got = (&mut self.dec)
            .take(missing)
            .read_to_end(&mut self.buf)
            .map_err(|e| Piece::Decompress(e.to_string()))?;
        if (got as u64) < missing {
            self.eof = true;
        }
        Ok(())
    }

    /// Decompress the rest without keeping it, so the format's checksum is
    /// verified; at most [`MAX_MODULE_BYTES`] in all.
    fn drain(mut self) -> Result<(), Piece> {
        if self.eof {
            return Ok(());
        }
        let room = MAX_MODULE_BYTES - self.buf.len() as u64;
        let rest = std::io::copy(&mut (&mut self.dec).take(room + 1), &mut std::io::sink())
            .map_err(|e| Piece::Decompress(e.to_string()))?;
        if rest > room {
            return Err(Piece::Decompress(format!(
                "it decompresses to more than {MAX_MODULE_BYTES} bytes, more than any kernel module (a decompression bomb?)"
            )));
        }
        Ok(())
    }
}

impl<R: Read> Source for Streamed<R> {
    fn read_at(&mut self, off: u64, n: u64) -> Result<Vec<u8>, Piece> {
        let end = off.saturating_add(n);
        self.fill(end)?;
        if end > self.buf.len() as u64 {
            return Err(past_end(off, n, self.buf.len() as u64));
        }
        Ok(self.buf[off as usize..end as usize].to_vec())
    }
}

/// The sections of a module genboot reads.
#[derive(Debug, Default)]
struct Sections {
    modinfo: Vec<u8>,
    ksymtab_strings: Option<Vec<u8>>,
    symtab: Option<Vec<u8>>,
    strtab: Option<Vec<u8>>,
    /// ELF64 (else ELF32), little-endian (else big).
    is64: bool,
    little: bool,
}

impl Sections {
    fn read(src: &mut dyn Source) -> Result<Sections, Piece> {
        use goblin::container::Ctx;
        use goblin::elf::{header, Elf, SectionHeader};
        let mut head = src.read_at(0, 64).or_else(|e| match e {
            // An ELF32 header is 52 bytes; pad a short file for the parser.
            Piece::Bad(_) => src.read_at(0, 52).map(|mut h| {
                h.resize(64, 0);
                h
            }),
            other => Err(other),
        })?;
        head.resize(64, 0);
        let hdr =
            Elf::parse_header(&head).map_err(|e| Piece::Bad(format!("bad ELF header ({e})")))?;
        if hdr.e_type != header::ET_REL {
            return Err(Piece::Bad(format!(
                "ELF type {} is not a relocatable object (a module is ET_REL)",
                hdr.e_type
            )));
        }
        let container = hdr.container().map_err(|e| Piece::Bad(e.to_string()))?;
        let endian = hdr.endianness().map_err(|e| Piece::Bad(e.to_string()))?;
        let ctx = Ctx::new(container, endian);
        let is64 = container.is_big();
        let entsize = if is64 { 64 } else { 40 };
        let shnum = usize::from(hdr.e_shnum);
        if hdr.e_shoff == 0 || shnum == 0 {
            return Err(Piece::Bad("no section headers".into()));
        }
        if usize::from(hdr.e_shentsize) != entsize {
            return Err(Piece::Bad(format!(
                "section header size {} is not {entsize}",
                hdr.e_shentsize
            )));
        }
        let table = src.read_at(hdr.e_shoff, (shnum * entsize) as u64)?;
        let shdrs = SectionHeader::parse_from(&table, 0, shnum, ctx)
            .map_err(|e| Piece::Bad(format!("bad section headers ({e})")))?;
        let names_sh = shdrs
            .get(usize::from(hdr.e_shstrndx))
            .ok_or_else(|| Piece::Bad("section name table index out of range".into()))?;
        let names = src.read_at(names_sh.sh_offset, names_sh.sh_size)?;
        // The first section of each name, from index 1 (as kmod finds them).
        let find = |want: &[u8]| {
            shdrs.iter().skip(1).find(|sh| {
                names
                    .get(sh.sh_name..)
                    .and_then(|n| n.split(|&b| b == 0).next())
                    .is_some_and(|n| n == want)
            })
        };
        let mut get = |want: &[u8]| -> Result<Option<Vec<u8>>, Piece> {
            match find(want) {
                Some(sh) => src.read_at(sh.sh_offset, sh.sh_size).map(Some),
                None => Ok(None),
            }
        };
        let modinfo = get(b".modinfo")?.ok_or_else(|| Piece::Bad("no .modinfo section".into()))?;
        let ksymtab_strings = get(b"__ksymtab_strings")?;
        // The symbol table is what most of the reading costs; it is needed
        // for the exports (only a module with __ksymtab_strings exports
        // anything) and for the order of a module's dependencies (only
        // with two or more of them is there an order).
        let deps = pairs(&modinfo)
            .filter(|(k, _)| *k == "depends")
            .flat_map(|(_, v)| v.split(',').filter(|d| !d.is_empty()))
            .count();
        let (symtab, strtab) = if ksymtab_strings.is_some() || deps >= 2 {
            (get(b".symtab")?, get(b".strtab")?)
        } else {
            (None, None)
        };
        Ok(Sections {
            ksymtab_strings,
            symtab,
            strtab,
            modinfo,
            is64,
            little: endian.is_little(),
        })
    }

    /// The symbols the module exports, as depmod (kmod 30 and later)
    /// decides them: the names of the `.symtab` symbols called
    /// `__crc_<name>` (the symbol-version CRCs that `CONFIG_MODVERSIONS`
    /// emits for every export), in symbol-table order. Without `.symtab`
    /// or `.strtab`, with a malformed table, or with no `__crc_` symbol,
    /// every string of `__ksymtab_strings` counts (which then also holds
    /// the symbol namespaces, as depmod's list does).
    fn exports(&self) -> Vec<String> {
        self.crc_symbols()
            .unwrap_or_else(|| ksymtab_strings(self.ksymtab_strings.as_deref().unwrap_or(b"")))
    }

    fn crc_symbols(&self) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for (name, _) in self.symbols()? {
            if let Some(sym) = name?.strip_prefix(b"__crc_") {
                out.push(String::from_utf8_lossy(sym).into_owned());
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// The undefined symbols (section index `SHN_UNDEF`), in table order,
    /// as kmod lists a module's dependency symbols; none when the tables
    /// are missing or malformed (kmod then gives the module no dependencies).
    fn undefined(&self) -> Vec<String> {
        let Some(syms) = self.symbols() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, shndx) in syms {
            if shndx != 0 {
                continue;
            }
            let Some(name) = name else {
                return Vec::new();
            };
            if !name.is_empty() {
                out.push(String::from_utf8_lossy(name).into_owned());
            }
        }
        out
    }

    /// (name, section index) of each `.symtab` entry after the null one;
    /// the name is `None` when it lies outside `.strtab`. `None` without
    /// the tables or with a table that is not a whole number of entries.
    fn symbols(&self) -> Option<impl Iterator<Item = (Option<&[u8]>, u16)>> {
        let (symtab, strtab) = (self.symtab.as_deref()?, self.strtab.as_deref()?);
        let symlen = if self.is64 { 24 } else { 16 };
        if symtab.len() % symlen != 0 {
            return None;
        }
        // Elf64_Sym: st_name u32, st_info, st_other, st_shndx u16 at 6.
        // Elf32_Sym: st_name u32, st_value, st_size, st_info, st_other, st_shndx u16 at 14.
        let shndx_at = if self.is64 { 6 } else { 14 };
        let little = self.little;
        Some(symtab.chunks_exact(symlen).skip(1).map(move |sym| {
            let n = [sym[0], sym[1], sym[2], sym[3]];
            let x = [sym[shndx_at], sym[shndx_at + 1]];
            let (name_off, shndx) = if little {
                (u32::from_le_bytes(n), u16::from_le_bytes(x))
            } else {
                (u32::from_be_bytes(n), u16::from_be_bytes(x))
            };
            let name = strtab
                .get(name_off as usize..)
                .filter(|r| !r.is_empty())
                .map(|r| r.split(|&c| c == 0).next().unwrap_or(b""));
            (name, shndx)
        }))
    }
}

/// Every non-empty string of a `__ksymtab_strings` section.
fn ksymtab_strings(s: &[u8]) -> Vec<String> {
    s.split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect()
}

/// Parse the NUL-separated `key=value` strings of a `.modinfo` section (also
/// the format of `modules.builtin.modinfo`, whose keys carry a `module.`
/// prefix).
pub fn parse(section: &[u8]) -> ModInfo {
    let mut m = ModInfo::default();
    for (key, value) in pairs(section) {
        match key {
            "name" => m.name = Some(ModName::new(value).into_string()),
            "depends" => m.depends.extend(
                value
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(|d| ModName::new(d).into_string()),
            ),
            "softdep" => {
                let (pre, post) = parse_softdep(value);
                m.softdep_pre.extend(pre);
                m.softdep_post.extend(post);
                m.softdep_raw.push(value.to_string());
            }
            "alias" => m.aliases.push(value.to_string()),
            "firmware" => m.firmware.push(value.to_string()),
            "vermagic" => m.vermagic = Some(value.to_string()),
            _ => {}
        }
    }
    m
}

/// The `key=value` strings of a `.modinfo`-style blob.
pub fn pairs(blob: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    blob.split(|&b| b == 0)
        .filter_map(|s| std::str::from_utf8(s).ok())
        .filter_map(|s| s.split_once('='))
}

/// `pre: a b post: c` → (`[a, b]`, `[c]`).
pub fn parse_softdep(value: &str) -> (Vec<String>, Vec<String>) {
    let (mut pre, mut post) = (Vec::new(), Vec::new());
    let mut into: Option<&mut Vec<String>> = None;
    for word in value.split_whitespace() {
        match word {
            "pre:" => into = Some(&mut pre),
            "post:" => into = Some(&mut post),
            w => {
                if let Some(v) = into.as_deref_mut() {
                    v.push(w.to_string());
                }
            }
        }
    }
    (pre, post)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_depends_gives_no_dependency() {
        let m = parse(b"depends=\0name=virtio_blk\0vermagic=6.1.0-50-amd64 SMP mod_unload \0");
        assert!(m.depends.is_empty());
        assert_eq!(m.name.as_deref(), Some("virtio_blk"));
        assert_eq!(
            m.vermagic.as_deref(),
            Some("6.1.0-50-amd64 SMP mod_unload ")
        );
    }

    #[test]
    fn depends_and_names_are_normalised() {
        let m = parse(b"depends=jbd2,mbcache,crc16\0\0\0name=ext-4\0");
        assert_eq!(m.depends, ["jbd2", "mbcache", "crc16"]);
        assert_eq!(m.name.as_deref(), Some("ext_4"));
    }

    #[test]
    fn softdep_splits_pre_and_post() {
        assert_eq!(
            parse_softdep("pre: crc32c foo post: bar"),
            (vec!["crc32c".into(), "foo".into()], vec!["bar".into()])
        );
        assert_eq!(parse_softdep("post: x"), (vec![], vec!["x".into()]));
    }

    struct Mem(Vec<u8>);
    impl Source for Mem {
        fn read_at(&mut self, off: u64, n: u64) -> Result<Vec<u8>, Piece> {
            self.0
                .get(off as usize..off.saturating_add(n) as usize)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| past_end(off, n, self.0.len() as u64))
        }
    }

    /// An ELF64 relocatable header whose section table claims to sit at `shoff`.
    fn header(shoff: u64) -> Vec<u8> {
        let mut h = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
        h.extend_from_slice(&1u16.to_le_bytes()); // ET_REL
        h.extend_from_slice(&62u16.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&[0; 16]); // entry, phoff
        h.extend_from_slice(&shoff.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        for v in [64u16, 0, 0, 64, 3, 2] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h
    }

    #[test]
    fn a_stream_claiming_more_than_the_cap_is_refused_before_inflating_it() {
        // Header says: section table at 2^40. Nothing past the header is read.
        struct Endless(u64);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.0 += buf.len() as u64;
                buf.fill(0);
                Ok(buf.len())
            }
        }
        let data = header(1 << 40);
        let mut s = Streamed::new(std::io::Read::chain(&data[..], Endless(0)), 64);
        let e = Sections::read(&mut s).unwrap_err();
        assert!(
            matches!(&e, Piece::Bad(w) if w.contains("beyond the 134217728 bytes")),
            "{e:?}"
        );
        assert!(s.buf.len() <= 64, "read {} bytes", s.buf.len());
        // An endless stream after a plausible header: drained up to the cap only.
        let mut s = Streamed::new(Endless(0), 64);
        s.fill(64).unwrap();
        let e = s.drain().unwrap_err();
        assert!(
            matches!(&e, Piece::Decompress(w) if w.contains("decompression bomb")),
            "{e:?}"
        );
    }

    #[test]
    fn non_elf_is_refused() {
        assert!(Sections::read(&mut Mem(b"not an elf file at all, no".to_vec())).is_err());
        assert!(Sections::read(&mut Mem(vec![0; 100])).is_err());
    }
}
