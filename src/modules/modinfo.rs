//! One module file: decompress it when needed and read the key=value strings
//! of its ELF `.modinfo` section.

use super::ModulesError;
use std::io::Read;
use std::path::Path;

/// How a module file is compressed, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleCompression {
    None,
    Xz,
    Zstd,
    Gzip,
}

impl ModuleCompression {
    /// `Some` for a kernel module file name (`x.ko`, `x.ko.xz`, ...), with
    /// the stem (`x`).
    pub fn of_file_name(name: &str) -> Option<(&str, ModuleCompression)> {
        for (suffix, c) in [
            (".ko", ModuleCompression::None),
            (".ko.xz", ModuleCompression::Xz),
            (".ko.zst", ModuleCompression::Zstd),
            (".ko.gz", ModuleCompression::Gzip),
        ] {
            if let Some(stem) = name.strip_suffix(suffix) {
                if !stem.is_empty() {
                    return Some((stem, c));
                }
            }
        }
        None
    }
}

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
    /// Exported symbols (`__ksymtab_strings`), for `modules.symbols`.
    pub exports: Vec<String>,
}

/// Read `path` and parse its `.modinfo`. A plain `.ko` is read in pieces
/// (header, section table, section names, `.modinfo`): a few KiB instead of
/// the whole file; a compressed one is decompressed whole.
pub fn read(path: &Path, compression: ModuleCompression) -> Result<ModInfo, ModulesError> {
    let read_err = |source| ModulesError::Read {
        path: path.to_path_buf(),
        source,
    };
    if compression == ModuleCompression::None {
        let file = std::fs::File::open(path).map_err(read_err)?;
        let len = file.metadata().map_err(read_err)?.len();
        let (section, strings) = sections_of_file(&file, len).map_err(|e| match e {
            Piece::Io(source) => read_err(source),
            Piece::Bad(why) => ModulesError::BadElf {
                path: path.to_path_buf(),
                why,
            },
        })?;
        return Ok(with_exports(parse(&section), strings.as_deref()));
    }
    let raw = std::fs::read(path).map_err(read_err)?;
    let decompress_err = |format: &'static str| {
        move |e: std::io::Error| ModulesError::Decompress {
            path: path.to_path_buf(),
            format,
            why: e.to_string(),
        }
    };
    let elf = match compression {
        ModuleCompression::None => raw,
        ModuleCompression::Xz => {
            let mut out = Vec::with_capacity(raw.len() * 4);
            liblzma::read::XzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .map_err(decompress_err("xz"))?;
            out
        }
        ModuleCompression::Zstd => zstd::decode_all(&raw[..]).map_err(decompress_err("zstd"))?,
        ModuleCompression::Gzip => {
            let mut out = Vec::with_capacity(raw.len() * 4);
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .map_err(decompress_err("gzip"))?;
            out
        }
    };
    let (section, strings) = sections(&elf).map_err(|why| ModulesError::BadElf {
        path: path.to_path_buf(),
        why,
    })?;
    Ok(with_exports(parse(section), strings))
}

/// `__ksymtab_strings` holds the exported names and the symbol namespaces
/// (`EXPORT_SYMBOL_NS`). Namespaces are upper-case by kernel convention and
/// exported C functions and variables are not, so upper-case-only strings
/// are taken for namespaces (on both test kernels this gives exactly
/// depmod's `modules.symbols`; depmod tells them apart through `.symtab`,
/// which would mean reading far more of every file).
fn with_exports(mut m: ModInfo, strings: Option<&[u8]>) -> ModInfo {
    if let Some(s) = strings {
        m.exports = s
            .split(|&b| b == 0)
            .filter(|w| !w.is_empty())
            .filter(|w| {
                !w.iter()
                    .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            })
            .filter_map(|w| std::str::from_utf8(w).ok())
            .map(str::to_string)
            .collect();
    }
    m
}

enum Piece {
    Io(std::io::Error),
    Bad(String),
}

/// The `.modinfo` and `__ksymtab_strings` bytes of an uncompressed module
/// file of `len` bytes, read with positioned reads.
#[allow(clippy::type_complexity)]
fn sections_of_file(file: &std::fs::File, len: u64) -> Result<(Vec<u8>, Option<Vec<u8>>), Piece> {
    use std::os::unix::fs::FileExt;
    let read_at = |off: u64, n: usize| -> Result<Vec<u8>, Piece> {
        if off.saturating_add(n as u64) > len {
            return Err(Piece::Bad(format!(
                "{n} bytes at offset {off} lie past the end of the {len}-byte file (truncated?)"
            )));
        }
        let mut buf = vec![0u8; n];
        file.read_exact_at(&mut buf, off).map_err(Piece::Io)?;
        Ok(buf)
    };
    let head = read_at(0, 64.min(len as usize))?;
    let header = goblin::elf::Elf::parse_header(&head)
        .map_err(|e| Piece::Bad(format!("bad ELF header ({e})")))?;
    let shentsize = usize::from(header.e_shentsize);
    let table_len = usize::from(header.e_shnum).saturating_mul(shentsize);
    // Parse the section table as if it sat right after the header.
    let mut image = head.clone();
    image.resize(64, 0);
    let table = read_at(header.e_shoff, table_len)?;
    image.extend_from_slice(&table);
    let mut patched = image;
    set_shoff(&mut patched, &header, 64);
    let (names_sh, modinfo_sh) =
        section_ranges(&patched, |sh| (sh.sh_offset, sh.sh_size)).map_err(Piece::Bad)?;
    let names = read_at(names_sh.0, names_sh.1 as usize)?;
    let (mut modinfo, mut strings) = (None, None);
    for (name_at, off, size) in modinfo_sh {
        let name = names
            .get(name_at..)
            .and_then(|n| n.split(|&b| b == 0).next())
            .unwrap_or(b"");
        if name == b".modinfo" {
            modinfo = Some(read_at(off, size as usize)?);
        } else if name == b"__ksymtab_strings" {
            strings = Some(read_at(off, size as usize)?);
        }
    }
    let modinfo = modinfo.ok_or_else(|| Piece::Bad("no .modinfo section".into()))?;
    Ok((modinfo, strings))
}

/// Point `e_shoff` of a header copy at `to`.
fn set_shoff(image: &mut [u8], header: &goblin::elf::Header, to: u64) {
    let little = header.e_ident[goblin::elf::header::EI_DATA] == goblin::elf::header::ELFDATA2LSB;
    if header.e_ident[goblin::elf::header::EI_CLASS] == goblin::elf::header::ELFCLASS64 {
        let b = if little {
            to.to_le_bytes()
        } else {
            to.to_be_bytes()
        };
        image[0x28..0x30].copy_from_slice(&b);
    } else {
        let to = to as u32;
        let b = if little {
            to.to_le_bytes()
        } else {
            to.to_be_bytes()
        };
        image[0x20..0x24].copy_from_slice(&b);
    }
}

/// From an image holding the header and the section table: the (offset,
/// size) of the section-name table, and (name offset, offset, size) of every
/// section.
#[allow(clippy::type_complexity)]
fn section_ranges(
    image: &[u8],
    range: impl Fn(&goblin::elf::SectionHeader) -> (u64, u64),
) -> Result<((u64, u64), Vec<(usize, u64, u64)>), String> {
    use goblin::container::Ctx;
    use goblin::elf::{Elf, SectionHeader};
    let header = Elf::parse_header(image).map_err(|e| format!("bad ELF header ({e})"))?;
    if header.e_type != goblin::elf::header::ET_REL {
        return Err(format!(
            "ELF type {} is not a relocatable object (a module is ET_REL)",
            header.e_type
        ));
    }
    let ctx = Ctx::new(
        header.container().map_err(|e| e.to_string())?,
        header.endianness().map_err(|e| e.to_string())?,
    );
    let shnum = usize::from(header.e_shnum);
    if shnum == 0 {
        return Err("no section headers".into());
    }
    let shdrs = SectionHeader::parse(image, 64, shnum, ctx)
        .map_err(|e| format!("bad section headers ({e})"))?;
    let names = shdrs
        .get(usize::from(header.e_shstrndx))
        .ok_or("section name table index out of range")?;
    Ok((
        range(names),
        shdrs
            .iter()
            .map(|sh| {
                let (o, s) = range(sh);
                (sh.sh_name, o, s)
            })
            .collect(),
    ))
}

/// The `.modinfo` and (when present) `__ksymtab_strings` sections of an ELF
/// relocatable file. Only the header and section headers are parsed (not
/// symbols or relocations).
pub fn sections(elf: &[u8]) -> Result<(&[u8], Option<&[u8]>), String> {
    use goblin::container::Ctx;
    use goblin::elf::{Elf, SectionHeader};
    let header = Elf::parse_header(elf).map_err(|e| format!("bad ELF header ({e})"))?;
    let ctx = Ctx::new(
        header.container().map_err(|e| e.to_string())?,
        header.endianness().map_err(|e| e.to_string())?,
    );
    if header.e_type != goblin::elf::header::ET_REL {
        return Err(format!(
            "ELF type {} is not a relocatable object (a module is ET_REL)",
            header.e_type
        ));
    }
    let shoff = usize::try_from(header.e_shoff).map_err(|_| "section table offset too large")?;
    let shnum = usize::from(header.e_shnum);
    if shoff == 0 || shnum == 0 {
        return Err("no section headers".into());
    }
    let need = shoff.saturating_add(shnum.saturating_mul(usize::from(header.e_shentsize)));
    if need > elf.len() {
        return Err(format!(
            "section headers end at byte {need}, past the end of the {}-byte file (truncated?)",
            elf.len()
        ));
    }
    let shdrs = SectionHeader::parse(elf, shoff, shnum, ctx)
        .map_err(|e| format!("bad section headers ({e})"))?;
    let strtab = shdrs
        .get(usize::from(header.e_shstrndx))
        .ok_or("section name table index out of range")?;
    let names = section_bytes(elf, strtab)?;
    let (mut modinfo, mut strings) = (None, None);
    for sh in &shdrs {
        let name_at = sh.sh_name;
        let name = names
            .get(name_at..)
            .and_then(|n| n.split(|&b| b == 0).next())
            .unwrap_or(b"");
        if name == b".modinfo" {
            modinfo = Some(section_bytes(elf, sh)?);
        } else if name == b"__ksymtab_strings" {
            strings = Some(section_bytes(elf, sh)?);
        }
    }
    Ok((modinfo.ok_or("no .modinfo section")?, strings))
}

fn section_bytes<'a>(elf: &'a [u8], sh: &goblin::elf::SectionHeader) -> Result<&'a [u8], String> {
    let start = usize::try_from(sh.sh_offset).map_err(|_| "section offset too large")?;
    let len = usize::try_from(sh.sh_size).map_err(|_| "section size too large")?;
    elf.get(start..start.saturating_add(len)).ok_or_else(|| {
        format!(
            "section at byte {start} (+{len}) lies past the end of the {}-byte file (truncated?)",
            elf.len()
        )
    })
}

/// Parse the NUL-separated `key=value` strings of a `.modinfo` section (also
/// the format of `modules.builtin.modinfo`, whose keys carry a `module.`
/// prefix).
pub fn parse(section: &[u8]) -> ModInfo {
    let mut m = ModInfo::default();
    for (key, value) in pairs(section) {
        match key {
            "name" => m.name = Some(super::normalize_name(value)),
            "depends" => m.depends.extend(
                value
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(super::normalize_name),
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

    #[test]
    fn module_file_names_are_recognised() {
        assert_eq!(
            ModuleCompression::of_file_name("ext4.ko.xz"),
            Some(("ext4", ModuleCompression::Xz))
        );
        assert_eq!(ModuleCompression::of_file_name("ext4.ko.bak"), None);
        assert_eq!(ModuleCompression::of_file_name(".ko"), None);
    }

    #[test]
    fn non_elf_is_refused() {
        assert!(sections(b"not an elf file at all, no").is_err());
    }
}
