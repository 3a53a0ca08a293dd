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
}

/// Read `path` and parse its `.modinfo`.
pub fn read(path: &Path, compression: ModuleCompression) -> Result<ModInfo, ModulesError> {
    let raw = std::fs::read(path).map_err(|source| ModulesError::Read {
        path: path.to_path_buf(),
        source,
    })?;
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
    let section = modinfo_section(&elf).map_err(|why| ModulesError::BadElf {
        path: path.to_path_buf(),
        why,
    })?;
    Ok(parse(section))
}

/// The bytes of the `.modinfo` section of an ELF relocatable file. Only the
/// header and section headers are parsed (not symbols or relocations).
pub fn modinfo_section(elf: &[u8]) -> Result<&[u8], String> {
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
    for sh in &shdrs {
        let name_at = sh.sh_name;
        let name = names
            .get(name_at..)
            .and_then(|n| n.split(|&b| b == 0).next())
            .unwrap_or(b"");
        if name == b".modinfo" {
            return section_bytes(elf, sh);
        }
    }
    Err("no .modinfo section".into())
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
        assert!(modinfo_section(b"not an elf file at all, no").is_err());
    }
}
