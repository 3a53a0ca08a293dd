//! Helpers of the ESP and image tests: system trees with generations, ESPs
//! (a plain directory, a tmpfs mount, a FAT volume in an image) and the real
//! judges (`fsck.fat -n`, `sgdisk -v`, `bootctl list`, mtools).
#![allow(dead_code)]

use crate::common;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A system tree below a temporary directory.
pub struct Sys {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    configs: u32,
}

/// A store with the objects of the three test kernels (built once per test
/// binary): building a generation copies and hashes a whole module tree
/// (~400 MB), so every `Sys` starts from hard links to these objects and
/// the build cache finds them.
fn template() -> &'static Path {
    static T: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        if let Ok(rd) = std::fs::read_dir(&base) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("esp-template-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = base.join(format!("esp-template-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let mut variant = common::kernel(common::GENERIC);
        let img = dir.join("vmlinuz-variant");
        let mut data = std::fs::read(&variant.image).unwrap();
        data.push(0);
        std::fs::write(&img, data).unwrap();
        variant.image = img;
        for (i, k) in [
            common::kernel(common::GENERIC),
            common::kernel(common::CLOUD),
            variant,
        ]
        .iter()
        .enumerate()
        {
            let cfg = common::write_config(&dir.join(format!("cfg{i}")), k, &["virtio_blk"], "");
            common::ok(common::run(
                &root,
                &["build", "--config", cfg.to_str().unwrap()],
            ));
        }
        dir
    })
}

impl Sys {
    pub fn new() -> Sys {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let state = root.join("var/lib/genboot");
        std::fs::create_dir_all(&state).unwrap();
        let t = template().join("root/var/lib/genboot");
        for (what, link) in [("store", true), ("cache", false)] {
            let st = Command::new("cp")
                .arg(if link { "-al" } else { "-a" })
                .arg(t.join(what))
                .arg(&state)
                .status()
                .unwrap();
            assert!(st.success(), "cp {what} from the template");
        }
        Sys {
            tmp,
            root,
            configs: 0,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// A configuration for kernel `k` with `extra` TOML appended.
    pub fn config(&mut self, k: &common::Kernel, extra: &str) -> PathBuf {
        self.configs += 1;
        let dir = self.tmp.path().join(format!("cfg{}", self.configs));
        common::write_config(&dir, k, &["virtio_blk"], extra)
    }

    /// `genboot --root R <esp args> args`, no ESP given unless in `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        common::run(&self.root, args)
    }

    /// Like `run`, with env vars.
    pub fn run_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut c = common::genboot();
        c.arg("--root").arg(&self.root).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// A new generation (no ESP involved).
    pub fn switch(&mut self, k: &common::Kernel, extra: &str) {
        let cfg = self.config(k, extra);
        common::ok(self.run(&["switch", "--config", cfg.to_str().unwrap()]));
    }

    /// Set every profile link's date, so entries are the same in every run.
    pub fn fix_dates(&self) {
        let dir = self.root.join("var/lib/genboot/profiles");
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let st = Command::new("touch")
                .args(["-h", "-d", "@1795555200"])
                .arg(&p)
                .status()
                .unwrap();
            assert!(st.success());
        }
    }

    /// Host path of a generation's `boot.json` field, resolved.
    pub fn store(&self) -> PathBuf {
        self.root.join("var/lib/genboot/store")
    }
}

/// A third kernel object: the generic kernel with one byte appended
/// (the boot header and EFI stub stay valid). Shared by every test.
pub fn third_kernel(_dir: &Path) -> common::Kernel {
    let mut k = common::kernel(common::GENERIC);
    k.image = template().join("vmlinuz-variant");
    k
}

/// Every file of an ESP directory: relative path → bytes.
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

/// The ESP partition of an image, copied out as a file.
pub fn extract_esp(image: &Path, out: &Path) -> PathBuf {
    let f = std::fs::File::open(image).unwrap();
    let part = genboot::disk::find_esp(&f).unwrap();
    let mut data = vec![0u8; part.len as usize];
    f.read_exact_at(&mut data, part.start).unwrap();
    std::fs::write(out, data).unwrap();
    out.to_path_buf()
}

/// `fsck.fat -n` on the image's ESP must exit 0.
#[track_caller]
pub fn fsck_image(image: &Path) {
    let fat = image.with_extension("esp-fsck");
    extract_esp(image, &fat);
    let o = Command::new("fsck.fat")
        .arg("-n")
        .arg(&fat)
        .output()
        .expect("fsck.fat runs (apt-get install dosfstools, or run tools/install-deps)");
    let _ = std::fs::remove_file(&fat);
    assert!(
        o.status.success(),
        "fsck.fat -n failed on the ESP of {}:\n{}{}",
        image.display(),
        common::stdout(&o),
        common::stderr(&o)
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
    let out = format!("{}{}", common::stdout(&o), common::stderr(&o));
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
        common::stdout(&o)
    );
    let o = Command::new("fsck.fat")
        .arg("-n")
        .arg(&fat)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&fat);
    assert!(
        o.status.success(),
        "fsck.fat -n after -a:\n{}",
        common::stdout(&o)
    );
}

/// `sgdisk -v` must find no problems.
#[track_caller]
pub fn sgdisk_verify(image: &Path) {
    let o = Command::new("sgdisk")
        .arg("-v")
        .arg(image)
        .output()
        .expect("sgdisk runs (apt-get install gdisk)");
    let out = common::stdout(&o);
    assert!(
        o.status.success() && out.contains("No problems found"),
        "sgdisk -v {}:\n{out}{}",
        image.display(),
        common::stderr(&o)
    );
}

/// Every file of the image's ESP, read by mtools (not by genboot), in
/// place (`IMG@@OFFSET`).
pub fn image_tree(image: &Path) -> BTreeMap<String, Vec<u8>> {
    let work = tempfile::tempdir().unwrap();
    let part = genboot::disk::find_esp(&std::fs::File::open(image).unwrap()).unwrap();
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-s")
        .arg("-n")
        .arg("-i")
        .arg(format!("{}@@{}", image.display(), part.start))
        .arg("::*")
        .arg(&out)
        .output()
        .expect("mcopy runs (apt-get install mtools)");
    // An empty volume makes mcopy complain; anything else is a failure.
    if !o.status.success() && !common::stderr(&o).contains("matched") {
        panic!("mcopy failed: {}", common::stderr(&o));
    }
    tree(&out)
}

/// A GPT image with an empty, genboot-formatted ESP of `esp_mib` MiB and
/// an empty root partition (what `genboot image` writes, without the
/// root file system, which the ESP tests do not need).
pub fn esp_only_image(path: &Path, esp_mib: u64) {
    let (esp, _) = genboot::disk::write_gpt(path, (esp_mib + 20) << 20, esp_mib << 20).unwrap();
    let f = std::rc::Rc::new(genboot::esp::image::open_image(path, true).unwrap());
    genboot::esp::image::format(f, esp.start, esp.len).unwrap();
}

/// A tmpfs mount, unmounted on drop.
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
            "mount -t tmpfs {} failed (tests run as root)",
            dir.display()
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
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
    let o = Command::new("bootctl")
        .env("SYSTEMD_RELAX_ESP_CHECKS", "1")
        .arg(format!("--esp-path={}", m.dir.display()))
        .args(["--no-variables", "--no-pager", "list"])
        .output()
        .expect("bootctl runs (apt-get install systemd-boot)");
    let output = format!("{}{}", common::stdout(&o), common::stderr(&o));
    assert!(o.status.success(), "bootctl list failed:\n{output}");
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

/// Parse "N bytes written, M files touched" from genboot's install line.
pub fn written(o: &Output) -> (u64, u64) {
    let e = common::stderr(o);
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
    (
        o.status.success(),
        format!("{}{}", common::stdout(&o), common::stderr(&o)),
    )
}

/// The store file an ESP file (`<hash>-linux-…`, `<hash>-initrd-…`) was
/// copied from.
pub fn store_file(sys: &Sys, esp_name: &str) -> Option<Vec<u8>> {
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

/// The ESP tree `t` boots its default: `loader.conf` names a default,
/// `bootctl list` (on a tmpfs copy below `scratch`) shows that entry as the
/// default and finds every file every entry names, the entry is complete
/// (genboot's digest line matches) and its kernel and initrd hold the
/// bytes of their store objects. Returns the default's id.
pub fn check_default_boots(
    sys: &Sys,
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
    if b.default.as_deref() != Some(default.as_str()) {
        return Err(format!(
            "loader.conf's default {default} is not bootctl's default ({:?}):\n{}",
            b.default, b.output
        ));
    }
    let key = default.trim_end_matches(".conf");
    let entry = entries(t)
        .into_iter()
        .find(|e| e.split('+').next().unwrap().trim_end_matches(".conf") == key)
        .ok_or_else(|| format!("no entry file for the default {default}"))?;
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
    let part = genboot::disk::find_esp(&f).unwrap();
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
pub fn installed_image(sys: &Sys, path: &Path, esp_mib: u64) {
    esp_only_image(path, esp_mib);
    common::ok(sys.run(&[
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

/// A file of `len` bytes of foreign data copied onto the image's ESP at
/// `dest` (`::/vendor.bin`) by mtools.
pub fn mcopy_junk(image: &Path, scratch: &Path, len: u64, dest: &str) {
    let junk = scratch.join("junk.bin");
    std::fs::write(&junk, vec![0x5Au8; len as usize]).unwrap();
    mcopy_to(image, &junk, dest);
    let _ = std::fs::remove_file(&junk);
}

/// Copy a host file onto the image's ESP with mtools (overwriting).
pub fn mcopy_to(image: &Path, file: &Path, dest: &str) {
    let part = genboot::disk::find_esp(&std::fs::File::open(image).unwrap()).unwrap();
    let st = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-o")
        .arg("-i")
        .arg(format!("{}@@{}", image.display(), part.start))
        .arg(file)
        .arg(dest)
        .status()
        .expect("mcopy runs (apt-get install mtools)");
    assert!(st.success(), "mcopy {} {dest}", file.display());
}

/// The 11-byte short name mtools shows for the long name `long` in `dir`
/// of the image's ESP (`GENBOO~2CON`).
pub fn short_name(image: &Path, dir: &str, long: &str) -> [u8; 11] {
    let part = genboot::disk::find_esp(&std::fs::File::open(image).unwrap()).unwrap();
    let o = Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{}", image.display(), part.start))
        .arg(format!("::{dir}"))
        .output()
        .expect("mdir runs (apt-get install mtools)");
    let out = common::stdout(&o);
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
                let part = genboot::disk::find_esp(&std::fs::File::open(img).unwrap()).unwrap();
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
                        .arg(format!("{}@@{}", img.display(), part.start))
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

/// Run an mtools command on the ESP inside `img`, as a tool other than
/// genboot would change it.
pub fn mtool(tool: &str, img: &Path, args: &[&str]) {
    let part = genboot::disk::find_esp(&std::fs::File::open(img).unwrap()).unwrap();
    let st = Command::new(tool)
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{}", img.display(), part.start))
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{tool} runs (apt-get install mtools): {e}"));
    assert!(st.success(), "{tool} {args:?} failed on {}", img.display());
}
