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
        .expect("fsck.fat runs (apt-get install dosfstools, or run qemu/install-deps)");
    let _ = std::fs::remove_file(&fat);
    assert!(
        o.status.success(),
        "fsck.fat -n failed on the ESP of {}:\n{}{}",
        image.display(),
        common::stdout(&o),
        common::stderr(&o)
    );
}

/// After a simulated power loss the volume keeps its dirty bit (FAT
/// drivers, fatfs included, never clear a dirty bit they found at mount;
/// that is fsck's job). `fsck.fat -n` may report exactly that and nothing
/// else: no lost clusters, no bad chains, no bogus entries. After
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

/// Every file of the image's ESP, read by mtools (not by genboot).
pub fn image_tree(image: &Path) -> BTreeMap<String, Vec<u8>> {
    let work = tempfile::tempdir().unwrap();
    let fat = extract_esp(image, &work.path().join("esp.fat"));
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-s")
        .arg("-n")
        .arg("-i")
        .arg(&fat)
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
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
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
