//! ESP trees and FAT images as the ESP tests see them: entry names, the
//! default that must boot after a crash, genboot's install summary, ESPs as
//! a directory or an image to plant things on, and the FAT structures of an
//! image for damaging it on purpose.

use super::judges::{self, bootctl, esp_partition, image_tree, mtool, tree};
use super::{ok, stderr, SystemTree};
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn names(t: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    t.keys().cloned().collect()
}

/// Entry file names in an ESP tree.
pub fn entries(t: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    t.keys()
        .filter_map(|k| k.strip_prefix("loader/entries/").map(str::to_string))
        .collect()
}

/// Never two files for one entry (`x.conf` beside `x+3.conf`).
#[track_caller]
pub fn assert_one_file_per_entry(t: &BTreeMap<String, Vec<u8>>) {
    let mut seen = BTreeMap::new();
    // systemd-boot reads `*.conf` only; temporary files do not count.
    for e in entries(t).into_iter().filter(|e| e.ends_with(".conf")) {
        let key = e
            .split('+')
            .next()
            .unwrap()
            .trim_end_matches(".conf")
            .to_string();
        if let Some(prev) = seen.insert(key.clone(), e.clone()) {
            panic!("two files for entry {key}: {prev} and {e}");
        }
    }
}

/// A GPT image with an empty, genboot-formatted ESP of `esp_mib` MiB and
/// an empty root partition (what `genboot image` writes, without the
/// root file system, which the ESP tests do not need).
pub fn esp_only_image(path: &Path, esp_mib: u64) {
    let (esp, _) = genboot::gpt::write_gpt(path, (esp_mib + 20) << 20, esp_mib << 20).unwrap();
    let f = std::rc::Rc::new(genboot::esp::fat::open_image(path, true).unwrap());
    genboot::esp::fat::format(f, esp.start, esp.len).unwrap();
}

/// Parse "N bytes written, M files touched" from genboot's install line.
pub fn written(o: &Output) -> (u64, u64) {
    let e = stderr(o);
    let line = e
        .lines()
        .rfind(|l| l.contains("bytes written"))
        .unwrap_or_else(|| panic!("no install summary in:\n{e}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let n = nums.len();
    (nums[n - 2], nums[n - 1])
}

pub fn sha(path: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

/// Copy an image file, keeping it sparse.
pub fn copy_image(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp {} {}", from.display(), to.display());
}

/// The store file an ESP file (`<hash>-linux-…`, `<hash>-initrd-…`) was
/// copied from.
pub fn store_file(sys: &SystemTree, esp_name: &str) -> Option<Vec<u8>> {
    let hash = esp_name.get(..32)?;
    for e in std::fs::read_dir(sys.store()).ok()? {
        let p = e.ok()?.path();
        if p.file_name()?.to_string_lossy().starts_with(hash) {
            for f in ["bzImage", "initrd"] {
                if p.join(f).is_file() {
                    return std::fs::read(p.join(f)).ok();
                }
            }
        }
    }
    None
}

/// genboot's ownership line is intact (`# written by genboot <digest>`,
/// the first 16 hex digits of SHA-256 over the rest).
pub fn signed_by_genboot(data: &[u8]) -> bool {
    use sha2::Digest;
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Some((first, rest)) = text.split_once('\n') else {
        return false;
    };
    let d = sha2::Sha256::digest(rest.as_bytes());
    let hex: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
    first == format!("# written by genboot {hex}")
}

/// Whether `loader.conf`'s `default` glob picks the entry id `id`, as
/// systemd-boot 252 matches it (against the file name, counter included,
/// lower-cased; bootctl matches the name without the counter).
pub fn default_matches(pattern: &str, id: &str) -> bool {
    genboot_format::module_name::fnmatch(
        pattern.to_ascii_lowercase().as_bytes(),
        id.to_ascii_lowercase().as_bytes(),
    )
}

/// The entry file (`loader/entries/<file>`, a `*.conf`) that `loader.conf`'s
/// default picks in the ESP tree `t`: exactly one must match.
pub fn default_entry_file(t: &BTreeMap<String, Vec<u8>>) -> Result<String, String> {
    let conf = t
        .get("loader/loader.conf")
        .ok_or_else(|| format!("no loader/loader.conf: {:?}", names(t)))?;
    let conf = String::from_utf8_lossy(conf);
    let default = conf
        .lines()
        .find_map(|l| l.strip_prefix("default "))
        .ok_or_else(|| format!("loader.conf names no default:\n{conf}"))?
        .trim();
    let matched: Vec<String> = entries(t)
        .into_iter()
        .filter(|e| e.ends_with(".conf") && default_matches(default, e))
        .collect();
    match &matched[..] {
        [one] => Ok(one.clone()),
        _ => Err(format!(
            "the default {default} should match one entry file; it matches {matched:?} of {:?}",
            names(t)
        )),
    }
}

/// The ESP tree `t` boots its default: `loader.conf` names a default,
/// `bootctl list` (on a tmpfs copy below `scratch`) shows that entry as the
/// default and finds every file every entry names, the entry is complete
/// (genboot's digest line matches) and its kernel and initrd hold the
/// bytes of their store objects. Returns loader.conf's default (the glob).
pub fn check_default_boots(
    sys: &SystemTree,
    t: &BTreeMap<String, Vec<u8>>,
    scratch: &Path,
) -> Result<String, String> {
    let conf = t
        .get("loader/loader.conf")
        .ok_or_else(|| format!("no loader/loader.conf: {:?}", names(t)))?;
    let conf = String::from_utf8_lossy(conf);
    let default = conf
        .lines()
        .find_map(|l| l.strip_prefix("default "))
        .ok_or_else(|| format!("loader.conf names no default:\n{conf}"))?
        .trim()
        .to_string();
    let b = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bootctl(t, scratch)))
        .map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "bootctl list failed".into())
        })?;
    let matches = |id: &str| default_matches(&default, id);
    if !b.default.as_deref().is_some_and(matches) {
        return Err(format!(
            "loader.conf's default {default} does not match bootctl's default ({:?}):\n{}",
            b.default, b.output
        ));
    }
    let entry = default_entry_file(t)?;
    let text = &t[&format!("loader/entries/{entry}")];
    if !signed_by_genboot(text) {
        return Err(format!(
            "the default entry {entry} is not complete:\n{}",
            String::from_utf8_lossy(text)
        ));
    }
    let mut files = 0;
    for l in String::from_utf8_lossy(text).lines() {
        if let Some(p) = l
            .strip_prefix("linux ")
            .or_else(|| l.strip_prefix("initrd "))
        {
            let rel = p.trim().trim_start_matches('/');
            let data = t
                .get(rel)
                .ok_or_else(|| format!("{entry} names missing {rel}"))?;
            let name = rel.rsplit('/').next().unwrap();
            if store_file(sys, name).as_deref() != Some(&data[..]) {
                return Err(format!("{rel} differs from its store object"));
            }
            files += 1;
        }
    }
    if files == 0 {
        return Err(format!("the default entry {entry} has no linux line"));
    }
    Ok(default)
}

/// Where the FAT structures of an image's ESP are (from its boot sector).
#[derive(Debug, Clone, Copy)]
pub struct FatGeometry {
    /// Byte offset of the partition in the image.
    pub part: u64,
    pub bytes_per_sector: u64,
    pub cluster_bytes: u64,
    /// Byte offsets (in the image) of FAT copy 1 and the data area.
    pub fat: u64,
    pub fat_bytes: u64,
    pub fats: u64,
    pub data: u64,
    pub fsinfo: u64,
    pub len: u64,
}

pub fn fat_geometry(image: &Path) -> FatGeometry {
    let f = std::fs::File::open(image).unwrap();
    let part = esp_partition(image);
    let mut b = [0u8; 512];
    f.read_exact_at(&mut b, part.start).unwrap();
    let u16_at = |i: usize| u64::from(u16::from_le_bytes([b[i], b[i + 1]]));
    let u32_at = |i: usize| u64::from(u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]));
    let bps = u16_at(0x0B);
    let reserved = u16_at(0x0E);
    let fats = u64::from(b[0x10]);
    let fat_sectors = u32_at(0x24);
    assert!(fat_sectors > 0, "a FAT32 volume");
    FatGeometry {
        part: part.start,
        bytes_per_sector: bps,
        cluster_bytes: bps * u64::from(b[0x0D]),
        fat: part.start + reserved * bps,
        fat_bytes: fat_sectors * bps,
        fats,
        data: part.start + (reserved + fats * fat_sectors) * bps,
        fsinfo: part.start + u16_at(0x30) * bps,
        len: part.len,
    }
}

impl FatGeometry {
    /// Set the FAT entry of `cluster` in every FAT copy.
    pub fn set_fat(&self, image: &Path, cluster: u32, value: u32) {
        let f = std::fs::OpenOptions::new().write(true).open(image).unwrap();
        for c in 0..self.fats {
            f.write_all_at(
                &value.to_le_bytes(),
                self.fat + c * self.fat_bytes + u64::from(cluster) * 4,
            )
            .unwrap();
        }
    }

    pub fn get_fat(&self, image: &Path, cluster: u32) -> u32 {
        let f = std::fs::File::open(image).unwrap();
        let mut b = [0u8; 4];
        f.read_exact_at(&mut b, self.fat + u64::from(cluster) * 4)
            .unwrap();
        u32::from_le_bytes(b)
    }

    /// Image offset of the 32-byte short entry named `sfn` (11 bytes,
    /// space-padded: `b"VENDOR  CON"`), searched in the data area.
    pub fn find_short_entry(&self, image: &Path, sfn: &[u8; 11]) -> u64 {
        let f = std::fs::File::open(image).unwrap();
        let len = self.part + self.len - self.data;
        let mut data = vec![0u8; len as usize];
        f.read_exact_at(&mut data, self.data).unwrap();
        let at = data
            .chunks_exact(32)
            .position(|s| &s[..11] == sfn && s[11] != 0x0F)
            .unwrap_or_else(|| panic!("no short entry {:?}", String::from_utf8_lossy(sfn)));
        self.data + at as u64 * 32
    }
}

/// Write `bytes` at `offset` of `image` (to damage it on purpose).
pub fn poke(image: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// An ESP-only image with genboot's generations installed (and the
/// loader), `esp_mib` MiB.
pub fn installed_image(sys: &SystemTree, path: &Path, esp_mib: u64) {
    esp_only_image(path, esp_mib);
    ok(sys.run(&[
        "--image",
        path.to_str().unwrap(),
        "install",
        "--install-loader",
    ]));
}

impl FatGeometry {
    /// Free clusters, counted in FAT copy 1.
    pub fn free_clusters(&self, image: &Path) -> u64 {
        let f = std::fs::File::open(image).unwrap();
        let mut fat = vec![0u8; self.fat_bytes as usize];
        f.read_exact_at(&mut fat, self.fat).unwrap();
        let clusters = (self.part + self.len - self.data) / self.cluster_bytes;
        (2..clusters + 2)
            .filter(|c| {
                let i = *c as usize * 4;
                u32::from_le_bytes([fat[i], fat[i + 1], fat[i + 2], fat[i + 3]]) & 0x0FFF_FFFF == 0
            })
            .count() as u64
    }
}

/// An ESP as the hostile-input tests plant things on it: a directory or
/// the FAT volume of an image.
#[derive(Clone, Debug)]
pub enum EspTarget {
    Dir(PathBuf),
    Image(PathBuf),
}

impl EspTarget {
    /// `--esp DIR` or `--image FILE`.
    pub fn args(&self) -> Vec<String> {
        match self {
            EspTarget::Dir(d) => vec!["--esp".into(), d.display().to_string()],
            EspTarget::Image(i) => vec!["--image".into(), i.display().to_string()],
        }
    }

    /// Every file, read without genboot (mtools for an image).
    pub fn tree(&self) -> BTreeMap<String, Vec<u8>> {
        match self {
            EspTarget::Dir(d) => tree(d),
            EspTarget::Image(i) => image_tree(i),
        }
    }

    /// Write `data` to ESP path `rel` as another tool would (`mcopy -o` for
    /// an image), creating its directories.
    pub fn put(&self, rel: &str, data: &[u8]) {
        match self {
            EspTarget::Dir(d) => {
                let p = d.join(rel);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, data).unwrap()
            }
            EspTarget::Image(img) => {
                let mut dir = String::new();
                for c in rel
                    .split('/')
                    .rev()
                    .skip(1)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                {
                    dir.push('/');
                    dir.push_str(c);
                    // Fails when it exists; that is fine.
                    let _ = Command::new("mmd")
                        .env("MTOOLS_SKIP_CHECK", "1")
                        .arg("-i")
                        .arg(judges::mtools_target(img))
                        .arg(format!("::{dir}"))
                        .output();
                }
                let tmp = tempfile::NamedTempFile::new().unwrap();
                std::fs::write(tmp.path(), data).unwrap();
                let dest = format!("::/{rel}");
                mtool("mcopy", img, &["-o", tmp.path().to_str().unwrap(), &dest]);
            }
        }
    }

    /// Bytes of the whole image, or nothing for a directory.
    pub fn image_sha(&self) -> Vec<u8> {
        match self {
            EspTarget::Image(i) => sha(i),
            EspTarget::Dir(_) => Vec::new(),
        }
    }
}
