//! The judges: tools no one here wrote that read what genboot wrote —
//! `fsck.fat -n` for every FAT volume, `sgdisk -v` for every GPT, mtools to
//! read an image's ESP without genboot's code, `bootctl list` (on a tmpfs
//! copy, with `SYSTEMD_RELAX_ESP_CHECKS=1`) for every entry set. The GPT
//! is read here too, by this file's own few lines, not by genboot's.

use super::{stderr, stdout};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the ESP (the first GPT partition) of an image is.
#[derive(Debug, Clone, Copy)]
pub struct Partition {
    /// Byte offset in the image.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The first GPT partition of `image` (genboot's images put the ESP
/// there), read from the primary header and entry array.
#[track_caller]
pub fn esp_partition(image: &Path) -> Partition {
    let mut f = std::fs::File::open(image)
        .unwrap_or_else(|e| panic!("cannot open the image {}: {e}", image.display()));
    let mut header = [0u8; 512];
    f.seek(SeekFrom::Start(512)).unwrap();
    f.read_exact(&mut header).unwrap();
    assert_eq!(
        &header[..8],
        b"EFI PART",
        "{} has no GPT header",
        image.display()
    );
    let entries_lba = u64::from_le_bytes(header[72..80].try_into().unwrap());
    let mut entry = [0u8; 128];
    f.seek(SeekFrom::Start(entries_lba * 512)).unwrap();
    f.read_exact(&mut entry).unwrap();
    let first = u64::from_le_bytes(entry[32..40].try_into().unwrap());
    let last = u64::from_le_bytes(entry[40..48].try_into().unwrap());
    assert!(first > 0, "{}: partition 1 is empty", image.display());
    Partition {
        start: first * 512,
        len: (last + 1 - first) * 512,
    }
}

/// `IMG@@OFFSET`: how mtools names the ESP inside an image.
pub fn mtools_target(image: &Path) -> String {
    format!("{}@@{}", image.display(), esp_partition(image).start)
}

/// The ESP partition of an image, copied out as a file.
pub fn extract_esp(image: &Path, out: &Path) -> PathBuf {
    use std::os::unix::fs::FileExt;
    let part = esp_partition(image);
    let f = std::fs::File::open(image).unwrap();
    let mut data = vec![0u8; part.len as usize];
    f.read_exact_at(&mut data, part.start).unwrap();
    std::fs::write(out, data).unwrap();
    out.to_path_buf()
}

/// `fsck.fat -n` on the image's ESP: clean, and what it printed.
pub fn fsck_output(image: &Path) -> (bool, String) {
    let fat = image.with_extension("esp-fsck");
    extract_esp(image, &fat);
    let o = Command::new("fsck.fat")
        .arg("-n")
        .arg(&fat)
        .output()
        .expect("fsck.fat runs (apt-get install dosfstools, or run tools/install-deps)");
    let _ = std::fs::remove_file(&fat);
    (o.status.success(), format!("{}{}", stdout(&o), stderr(&o)))
}

/// `fsck.fat -n` on the image's ESP must exit 0.
#[track_caller]
pub fn fsck_image(image: &Path) {
    let (clean, out) = fsck_output(image);
    assert!(
        clean,
        "fsck.fat -n failed on the ESP of {}:\n{out}",
        image.display()
    );
}

/// After a simulated power loss (and a re-run, which checks the volume and
/// clears the bit itself) `fsck.fat -n` may report the dirty bit and
/// nothing else: no lost clusters, no bad chains, no bogus entries. After
/// `fsck.fat -a` clears the bit, `fsck.fat -n` must exit 0.
#[track_caller]
pub fn fsck_image_after_crash(image: &Path) {
    let fat = image.with_extension("esp-fsck");
    extract_esp(image, &fat);
    let o = Command::new("fsck.fat")
        .arg("-n")
        .arg(&fat)
        .output()
        .unwrap();
    let out = format!("{}{}", stdout(&o), stderr(&o));
    let allowed = [
        "fsck.fat ",
        "There are differences between boot sector and its backup.",
        "This is mostly harmless. Differences: (offset:original/backup)",
        "65:01/00",
        "Not automatically fixing this.",
        "Dirty bit is set. Fs was not properly unmounted and some data may be corrupt.",
        "Automatically removing dirty bit.",
        "Leaving filesystem unchanged.",
    ];
    for l in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let ok = allowed.iter().any(|a| l.starts_with(a)) || l.contains(" files, ");
        assert!(
            ok,
            "fsck.fat -n after a crash reports more than the dirty bit:\n{out}"
        );
    }
    let o = Command::new("fsck.fat")
        .arg("-a")
        .arg(&fat)
        .output()
        .unwrap();
    assert!(
        o.status.code().unwrap_or(9) <= 1,
        "fsck.fat -a: {}",
        stdout(&o)
    );
    let o = Command::new("fsck.fat")
        .arg("-n")
        .arg(&fat)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&fat);
    assert!(o.status.success(), "fsck.fat -n after -a:\n{}", stdout(&o));
}

/// `sgdisk -v` must find no problems.
#[track_caller]
pub fn sgdisk_verify(image: &Path) {
    let o = Command::new("sgdisk")
        .arg("-v")
        .arg(image)
        .output()
        .expect("sgdisk runs (apt-get install gdisk)");
    let out = stdout(&o);
    assert!(
        o.status.success() && out.contains("No problems found"),
        "sgdisk -v {}:\n{out}{}",
        image.display(),
        stderr(&o)
    );
}

/// Every file of a directory: relative path → bytes.
pub fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

/// Copy every file of the image's ESP into `out` with mtools (not with
/// genboot), in place (`IMG@@OFFSET`). An empty volume is fine.
pub fn mcopy_out(image: &Path, out: &Path) {
    let o = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-s", "-n", "-i"])
        .arg(mtools_target(image))
        .arg("::*")
        .arg(out)
        .output()
        .expect("mcopy runs (apt-get install mtools)");
    // An empty volume makes mcopy complain; anything else is a failure.
    if !o.status.success() && !stderr(&o).contains("matched") {
        panic!("mcopy from {} failed: {}", image.display(), stderr(&o));
    }
}

/// Every file of the image's ESP, read by mtools: relative path → bytes.
pub fn image_tree(image: &Path) -> BTreeMap<String, Vec<u8>> {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    mcopy_out(image, &out);
    tree(&out)
}

/// `TOOL -i IMG@@OFFSET ARGS` (an mtools command on the image's ESP):
/// its stdout; fails with its stderr.
#[track_caller]
fn mtools_stdout(tool: &str, image: &Path, args: &[&str]) -> String {
    let o = Command::new(tool)
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(mtools_target(image))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} runs (apt-get install mtools): {e}"));
    assert!(o.status.success(), "{tool} {args:?}: {}", stderr(&o));
    stdout(&o)
}

/// File names in an ESP directory of the image (`mdir -b`), sorted.
pub fn mdir(image: &Path, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = mtools_stdout("mdir", image, &["-b", &format!("::{dir}")])
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .filter(|l| !l.is_empty())
        .map(|l| l.rsplit('/').next().unwrap().to_string())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    names
}

/// An ESP file's text (`mtype`).
pub fn mtype(image: &Path, path: &str) -> String {
    mtools_stdout("mtype", image, &[&format!("::{path}")])
}

/// Run an mtools command on the ESP inside `img`, as a tool other than
/// genboot would change it.
pub fn mtool(tool: &str, img: &Path, args: &[&str]) {
    mtools_stdout(tool, img, args);
}

/// Copy a host file onto the image's ESP with mtools (overwriting).
pub fn mcopy_to(image: &Path, file: &Path, dest: &str) {
    mtool("mcopy", image, &["-o", file.to_str().unwrap(), dest]);
}

/// A file of `len` bytes of foreign data copied onto the image's ESP at
/// `dest` (`::/vendor.bin`) by mtools.
pub fn mcopy_junk(image: &Path, scratch: &Path, len: u64, dest: &str) {
    let junk = scratch.join("junk.bin");
    std::fs::write(&junk, vec![0x5Au8; len as usize]).unwrap();
    mcopy_to(image, &junk, dest);
    let _ = std::fs::remove_file(&junk);
}

/// The 11-byte short name mtools shows for the long name `long` in `dir`
/// of the image's ESP (`GENBOO~2CON`).
pub fn short_name(image: &Path, dir: &str, long: &str) -> [u8; 11] {
    let out = mtools_stdout("mdir", image, &[&format!("::{dir}")]);
    for line in out
        .lines()
        .filter(|l| l.len() > 12 && l.is_char_boundary(12))
    {
        let (base, ext) = (line[..8].trim_end(), line[9..12].trim_end());
        let display = if ext.is_empty() {
            base.to_string()
        } else {
            format!("{base}.{ext}")
        };
        if line.split_whitespace().last() == Some(long) || display.eq_ignore_ascii_case(long) {
            let mut sfn = [b' '; 11];
            sfn[..8].copy_from_slice(line[..8].to_ascii_uppercase().as_bytes());
            sfn[8..].copy_from_slice(line[9..12].to_ascii_uppercase().as_bytes());
            return sfn;
        }
    }
    panic!("mdir ::{dir} shows no {long}:\n{out}")
}

/// A tmpfs mount (a mount root, as `bootctl` wants its ESP), unmounted on
/// drop.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn new(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mount -t tmpfs {} failed (the full test tiers run as root)",
            dir.display()
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// A copy of the image's whole ESP (mtools) in a tmpfs at `dir`.
    pub fn with_esp_of(image: &Path, dir: &Path) -> Tmpfs {
        let m = Tmpfs::new(dir, "1G");
        mcopy_out(image, &m.dir);
        m
    }

    /// Every file below the mount as ESP paths (`/EFI/...`), sorted.
    pub fn files(&self) -> Vec<String> {
        tree(&self.dir)
            .into_keys()
            .map(|k| format!("/{k}"))
            .collect()
    }

    /// What `bootctl list` says about the ESP at the mount, stdout and
    /// stderr together.
    pub fn bootctl_list(&self) -> String {
        let o = Command::new("bootctl")
            .env("SYSTEMD_RELAX_ESP_CHECKS", "1")
            .arg(format!("--esp-path={}", self.dir.display()))
            .args(["--no-variables", "--no-pager", "list"])
            .output()
            .expect("bootctl runs (apt-get install systemd-boot)");
        let out = format!("{}{}", stdout(&o), stderr(&o));
        assert!(o.status.success(), "bootctl list failed:\n{out}");
        out
    }
}

impl Drop for Tmpfs {
    /// Unmount; a mount that is busy for a moment (seen once in a full
    /// test run) is tried again for up to 5 s, then detached lazily, so no
    /// test leaves a tmpfs behind.
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            let st = Command::new("umount").arg(&self.dir).output();
            if st.is_ok_and(|o| o.status.success()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// What `bootctl list` says about an ESP tree: entry ids, the default,
/// and problems (missing files).
#[derive(Debug)]
pub struct Bootctl {
    pub ids: Vec<String>,
    pub default: Option<String>,
    pub output: String,
}

/// Copy `t` onto a tmpfs mount and let `bootctl list` judge it: every
/// `linux`/`initrd` file must exist.
#[track_caller]
pub fn bootctl(t: &BTreeMap<String, Vec<u8>>, scratch: &Path) -> Bootctl {
    let m = Tmpfs::new(scratch, "256M");
    for (rel, data) in t {
        let p = m.dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let output = m.bootctl_list();
    assert!(
        !output.contains("No such file"),
        "bootctl list reports missing files:\n{output}"
    );
    let mut ids = Vec::new();
    let mut default = None;
    let mut title_default = false;
    for l in output.lines() {
        let l = l.trim();
        if let Some(t) = l.strip_prefix("title:") {
            title_default = t.contains("(default)");
        }
        if let Some(id) = l.strip_prefix("id:") {
            let id = id.trim().to_string();
            if title_default {
                default = Some(id.clone());
            }
            ids.push(id);
        }
    }
    Bootctl {
        ids,
        default,
        output,
    }
}
