//! The VM harness of the end-to-end scenarios (`tests/e2e_*.rs`): a
//! [`Scenario`] builds a stage-2 root tree and a disk image with the real
//! `genboot image`, boots it under QEMU (TCG) + OVMF + systemd-boot as a
//! [`Vm`], reads the serial console with timeouts, sends keys to the boot
//! menu, and inspects the ESP inside the image with mtools and `bootctl`.
//!
//! Every wait is bounded twice: by its own timeout and by the scenario's
//! overall budget. On any failure the whole console log is kept under
//! `target/test-logs/<vm>.log` and the panic message says where.
//!
//! The stage-2 system (`qemu/make-stage2`) prints machine-readable lines
//! starting with [`MARK`]; a scenario adds its own commands through
//! `/etc/genboot-e2e/stage2.sh` ([`Scenario::stage2`]).
#![allow(dead_code)]

use crate::common;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Prefix of every line the stage-2 init prints for the tests.
pub const MARK: &str = "GENBOOT-E2E ";
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The ESP's PARTUUID in every image `genboot image` writes.
pub const ESP_PARTUUID: &str = "65737000-0000-4000-8000-000000000001";
/// Modules every test configuration puts into the initrd.
pub const INITRD_MODULES: &[&str] = &["virtio_blk", "virtio_pci", "ext4"];
/// Time for one boot (firmware, menu, kernel, initrd, stage 2) under TCG on
/// a loaded 2-core machine; about 6-10 s when idle.
pub const BOOT: Duration = Duration::from_secs(120);

/// The static `genboot` for stage 2, built once per test binary by
/// `qemu/build-static-genboot` (its own target directory, so it does not
/// wait for the lock `cargo test` holds).
pub fn static_genboot() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("GENBOOT_STATIC") {
                return PathBuf::from(p);
            }
            let out = Command::new(common::repo().join("qemu/build-static-genboot"))
                .stderr(Stdio::inherit())
                .output()
                .expect("qemu/build-static-genboot runs");
            assert!(
                out.status.success(),
                "qemu/build-static-genboot failed (see its output above); it needs the \
                 x86_64-unknown-linux-musl target (`qemu/install-deps`)"
            );
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        })
        .clone()
}

/// Fail, with how to get it, when a tool the scenarios need is missing.
fn require_tools() {
    let tools = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("mdir", "mtools"),
        ("mcopy", "mtools"),
        ("mtype", "mtools"),
        ("bootctl", "systemd-boot"),
        ("busybox", "busybox-static"),
        ("kmod", "kmod"),
    ];
    for (tool, pkg) in tools {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false);
        assert!(
            found,
            "{tool} is missing: install the Debian package {pkg} (`qemu/install-deps` does)"
        );
    }
    for f in [OVMF_CODE, OVMF_VARS] {
        assert!(
            Path::new(f).exists(),
            "{f} is missing: install the Debian package ovmf (`qemu/install-deps` does)"
        );
    }
}

/// One scenario's working directory `target/e2e/<name>/`: the stage-2 root
/// tree (`root/`, which is also genboot's `--root`), its configurations and
/// the disk image, plus the overall deadline every wait respects.
pub struct Scenario {
    pub name: String,
    pub dir: PathBuf,
    pub tree: PathBuf,
    pub image: PathBuf,
    deadline: Instant,
    budget: Duration,
}

impl Scenario {
    /// A fresh scenario named `name` that must finish within `budget`.
    pub fn new(name: &str, budget: Duration) -> Scenario {
        Scenario::with_tree(name, budget, |tree| {
            let genboot = static_genboot();
            run_ok(
                Command::new(common::repo().join("qemu/make-stage2"))
                    .arg(tree)
                    .arg(&genboot),
            );
        })
    }

    /// Like [`Scenario::new`] with another stage-2 system: `fill` makes the
    /// root tree at the path it is given (which does not exist yet), e.g. a
    /// copy of a real Debian root (`tests/debian`).
    pub fn with_tree(name: &str, budget: Duration, fill: impl FnOnce(&Path)) -> Scenario {
        require_tools();
        // Fail with how to build it when genboot-init is missing.
        let activator = common::activator();
        assert!(
            activator.exists(),
            "genboot-init {} does not exist; run `qemu/build-activator` (it prints the path for GENBOOT_ACTIVATOR)",
            activator.display()
        );
        let dir = common::repo().join("target/e2e").join(name);
        if dir.exists() {
            // A killed run may have left its ESP copy mounted.
            let _ = Command::new("umount")
                .arg(dir.join("esp"))
                .stderr(Stdio::null())
                .status();
            std::fs::remove_dir_all(&dir).expect("remove the previous run's directory");
        }
        std::fs::create_dir_all(&dir).unwrap();
        let tree = dir.join("root");
        fill(&tree);
        Scenario {
            name: name.to_string(),
            image: dir.join("disk.img"),
            dir,
            tree,
            deadline: Instant::now() + budget,
            budget,
        }
    }

    /// Commands stage 2 runs after its boot line (`/etc/genboot-e2e/stage2.sh`,
    /// sourced by `/sbin/init`; set `action=reboot` to reboot instead of
    /// powering off). Must be called before [`Scenario::image`].
    pub fn stage2(&self, script: &str) {
        std::fs::write(self.tree.join("etc/genboot-e2e/stage2.sh"), script).unwrap();
    }

    /// Write an executable file into the stage-2 tree.
    pub fn tree_file(&self, path: &str, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.tree.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A system.toml for `kernel` whose menu title starts with `label`
    /// (`extra` is appended TOML, inside `[system]` until it opens a table).
    pub fn config(&self, label: &str, kernel: &common::Kernel, extra: &str) -> PathBuf {
        self.config_with(label, kernel, INITRD_MODULES, extra)
    }

    /// Like [`Scenario::config`] with these initrd modules.
    pub fn config_with(
        &self,
        label: &str,
        kernel: &common::Kernel,
        modules: &[&str],
        extra: &str,
    ) -> PathBuf {
        let slug: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let path =
            common::write_config(&self.dir.join("configs").join(slug), kernel, modules, extra);
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("label = \"Test system\"", &format!("label = {label:?}"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `genboot --root <tree> image --config ... -o disk.img`: one switch per
    /// configuration, in order (generation 1, 2, ...).
    pub fn image(&self, configs: &[&Path]) {
        self.image_sized(configs, "1G");
    }

    /// [`Scenario::image`] with `--size size` (`auto` fits the tree).
    pub fn image_sized(&self, configs: &[&Path], size: &str) {
        let mut c = common::genboot();
        c.arg("--root").arg(&self.tree).arg("image");
        for cfg in configs {
            c.arg("--config").arg(cfg);
        }
        c.arg("-o").arg(&self.image).args(["--size", size]);
        run_until(&mut c, self.deadline);
    }

    /// `genboot --root <tree> --image disk.img ARGS`; returns stdout.
    pub fn genboot(&self, args: &[&str]) -> String {
        let mut c = common::genboot();
        c.arg("--root")
            .arg(&self.tree)
            .arg("--image")
            .arg(&self.image)
            .args(args);
        run_until(&mut c, self.deadline)
    }

    /// The store object name (`<hash>-<name>`) of generation `n` in the
    /// host-side profile.
    pub fn generation(&self, n: u32) -> String {
        let link = self
            .tree
            .join(format!("var/lib/genboot/profiles/system-{n}-link"));
        let target = std::fs::read_link(&link)
            .unwrap_or_else(|e| panic!("generation {n}: {}: {e}", link.display()));
        base_name(&target.to_string_lossy())
    }

    /// Boot the image in a new VM (fresh OVMF variables). `reboots`: let
    /// the guest reboot inside the same VM (boot counting) instead of
    /// QEMU exiting at the first reset.
    pub fn boot(&self, vm_name: &str, reboots: bool) -> Vm {
        Vm::start(self, vm_name, reboots)
    }

    /// Byte offset of the ESP (the first GPT partition) in the image.
    pub fn esp_offset(&self) -> u64 {
        esp_offset(&self.image)
    }

    fn mtools_target(&self) -> String {
        format!("{}@@{}", self.image.display(), self.esp_offset())
    }

    /// File names in an ESP directory of the image, sorted.
    pub fn esp_ls(&self, dir: &str) -> Vec<String> {
        let out = run_ok(
            Command::new("mdir")
                .args(["-b", "-i"])
                .arg(self.mtools_target())
                .arg(format!("::{dir}")),
        );
        let mut names: Vec<String> = out
            .lines()
            .map(|l| l.trim().trim_end_matches('/'))
            .filter(|l| !l.is_empty())
            .map(|l| l.rsplit('/').next().unwrap().to_string())
            .filter(|n| n != "." && n != "..")
            .collect();
        names.sort();
        names
    }

    /// An ESP file's text.
    pub fn esp_read(&self, path: &str) -> String {
        run_ok(
            Command::new("mtype")
                .arg("-i")
                .arg(self.mtools_target())
                .arg(format!("::{path}")),
        )
    }

    /// Copy the whole ESP out of the image into a tmpfs mounted at
    /// `<dir>/esp` (a mount root, as `bootctl` wants); returns the mount
    /// point. Unmounted when the returned guard drops.
    pub fn esp_copy(&self) -> EspCopy {
        let mnt = self.dir.join("esp");
        std::fs::create_dir_all(&mnt).unwrap();
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs"])
                .arg(&mnt),
        );
        let guard = EspCopy { path: mnt.clone() };
        run_ok(
            Command::new("mcopy")
                .args(["-s", "-n", "-i"])
                .arg(self.mtools_target())
                .arg("::*")
                .arg(&mnt),
        );
        guard
    }

    /// Fail the scenario with `msg`.
    #[track_caller]
    pub fn fail(&self, msg: &str) -> ! {
        panic!("scenario {}: {msg}", self.name)
    }
}

/// A copy of the ESP in a tmpfs; unmounted on drop.
pub struct EspCopy {
    pub path: PathBuf,
}

impl EspCopy {
    /// `bootctl list` on the copy (the judge of the entry set).
    pub fn bootctl_list(&self) -> String {
        let out = Command::new("bootctl")
            .env("SYSTEMD_RELAX_ESP_CHECKS", "1")
            .arg(format!("--esp-path={}", self.path.display()))
            .args(["--no-variables", "--no-pager", "list"])
            .output()
            .expect("bootctl runs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Every file below the copy, as ESP paths (`/EFI/...`), sorted.
    pub fn files(&self) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                let p = e.path();
                if e.file_type().unwrap().is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(format!("/{}", p.strip_prefix(base).unwrap().display()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.path, &self.path, &mut out);
        out.sort();
        out
    }
}

impl Drop for EspCopy {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// The first GPT partition's byte offset in `image`.
pub fn esp_offset(image: &Path) -> u64 {
    let mut f = std::fs::File::open(image)
        .unwrap_or_else(|e| panic!("cannot open the image {}: {e}", image.display()));
    let mut header = [0u8; 512];
    use std::io::{Seek, SeekFrom};
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
    let first_lba = u64::from_le_bytes(entry[32..40].try_into().unwrap());
    assert!(first_lba > 0, "{}: partition 1 is empty", image.display());
    first_lba * 512
}

/// `<hash>-<name>` of a store path (or of a link target into the store).
pub fn base_name(path: &str) -> String {
    path.trim()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_string()
}

/// Run a command; panic with its output unless it succeeds. Returns stdout.
#[track_caller]
pub fn run_ok(c: &mut Command) -> String {
    run_until(c, Instant::now() + Duration::from_secs(600))
}

/// [`run_ok`], killing the command and failing when `until` passes.
#[track_caller]
pub fn run_until(c: &mut Command, until: Instant) -> String {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    let collect = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = collect(Box::new(child.stdout.take().unwrap()));
    let err = collect(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for a child") {
            break st;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{c:?} did not finish within the scenario's time; killed it\n{}{}",
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "{c:?} failed ({status}):\n{out}{err}");
    out
}

/// What the stage-2 init reported about the boot it is running in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booted {
    /// `<hash>-<name>` of the booted generation (from `/run/genboot/booted`).
    pub generation: String,
    /// `uname -r`.
    pub kernel: String,
    /// `ok` when `modprobe loop` loaded a module that is not in the initrd.
    pub modprobe: String,
}

/// Remove terminal escape sequences and carriage returns, keeping the text;
/// a cursor move or screen clear becomes a line break (systemd-boot places
/// each menu line by cursor position). Byte by byte, so that the text of a
/// prefix of the console is a prefix of the text of the whole (a wait's
/// cursor stays valid as output arrives): every non-ASCII byte becomes `?`.
pub fn strip_ansi(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut it = raw.iter().copied().peekable();
    while let Some(b) = it.next() {
        match b {
            0x1b => match it.peek() {
                Some(b'[') => {
                    it.next();
                    // CSI: parameters, then one final byte in @..~.
                    for c in it.by_ref() {
                        if (b'@'..=b'~').contains(&c) {
                            if c == b'H' || c == b'J' {
                                out.push('\n');
                            }
                            break;
                        }
                    }
                }
                Some(_) => {
                    it.next();
                }
                None => {}
            },
            b'\r' => {}
            b if b.is_ascii() => out.push(b as char),
            _ => out.push('?'),
        }
    }
    out
}

/// One QEMU process with the image as its virtio disk and its serial
/// console on a pipe.
pub struct Vm {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<Vec<u8>>,
    raw: Vec<u8>,
    /// Offset in the stripped console text up to which output is consumed.
    cursor: usize,
    deadline: Instant,
    budget: Duration,
    log: PathBuf,
    exited: Option<std::process::ExitStatus>,
}

/// Serialises log writes of parallel tests (each writes its own file).
static LOGS: Mutex<()> = Mutex::new(());

impl Vm {
    fn start(s: &Scenario, vm_name: &str, reboots: bool) -> Vm {
        let name = format!("{}-{vm_name}", s.name);
        let vars = s.dir.join(format!("{vm_name}-OVMF_VARS.fd"));
        std::fs::copy(OVMF_VARS, &vars).expect("copy the OVMF variable store");
        let mut c = Command::new("qemu-system-x86_64");
        c.args([
            "-accel", "tcg", "-machine", "q35", "-m", "1024", "-smp", "1",
        ])
        .args(["-nodefaults", "-display", "none", "-serial", "stdio"])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ))
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw", s.image.display()));
        if !reboots {
            c.arg("-no-reboot");
        }
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .expect("qemu-system-x86_64 starts (install qemu-system-x86)");
        let (tx, rx) = channel();
        for mut pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.send(buf[..n].to_vec()).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
        let log_dir = common::repo().join("target/test-logs");
        std::fs::create_dir_all(&log_dir).unwrap();
        let stdin = child.stdin.take();
        let vm = Vm {
            log: log_dir.join(format!("{name}.log")),
            name,
            child,
            stdin,
            rx,
            raw: Vec::new(),
            cursor: 0,
            deadline: s.deadline,
            budget: s.budget,
            exited: None,
        };
        vm.save_log();
        vm
    }

    /// The whole console so far, escape sequences removed.
    pub fn console(&self) -> String {
        strip_ansi(&self.raw)
    }

    fn save_log(&self) {
        let _g = LOGS.lock().unwrap_or_else(|e| e.into_inner());
        let _ = std::fs::write(&self.log, &self.raw);
    }

    /// Fail: keep the console log and say where it is.
    #[track_caller]
    pub fn fail(&mut self, msg: &str) -> ! {
        self.drain(Duration::from_millis(200));
        self.save_log();
        let text = self.console();
        let tail: String = {
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            lines[lines.len().saturating_sub(25)..].join("\n")
        };
        panic!(
            "VM {}: {msg}\n--- last console lines ---\n{tail}\n--- whole console log: {} ---",
            self.name,
            self.log.display()
        )
    }

    /// Read what arrives within `d` into the buffer. False once QEMU has
    /// closed its output (exited).
    fn drain(&mut self, d: Duration) -> bool {
        match self.rx.recv_timeout(d) {
            Ok(b) => {
                self.raw.extend_from_slice(&b);
                // Take what is already there without waiting.
                while let Ok(b) = self.rx.try_recv() {
                    self.raw.extend_from_slice(&b);
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        }
    }

    /// Wait until `pattern` appears in the console after the cursor; move
    /// the cursor past the end of its line and return the text from the old
    /// cursor to there.
    #[track_caller]
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> String {
        self.wait_for_any(&[pattern], timeout).1
    }

    /// Like [`Vm::wait_for`] for the first of several patterns; returns its
    /// index and the text.
    #[track_caller]
    pub fn wait_for_any(&mut self, patterns: &[&str], timeout: Duration) -> (usize, String) {
        match self.poll_for(patterns, timeout) {
            Ok(hit) => hit,
            Err(why) => self.fail(&why),
        }
    }

    /// Like [`Vm::wait_for`], but `None` when `timeout` passes (QEMU exiting
    /// and the scenario's overall timeout still fail).
    #[track_caller]
    pub fn try_wait_for(&mut self, pattern: &str, timeout: Duration) -> Option<String> {
        let overall = self.deadline <= Instant::now() + timeout;
        match self.poll_for(&[pattern], timeout) {
            Ok((_, seen)) => Some(seen),
            Err(why) if overall || self.exited.is_some() => self.fail(&why),
            Err(_) => None,
        }
    }

    fn poll_for(
        &mut self,
        patterns: &[&str],
        timeout: Duration,
    ) -> Result<(usize, String), String> {
        let start = Instant::now();
        let until = (start + timeout).min(self.deadline);
        let mut open = true;
        loop {
            let text = self.console();
            let tail = text.get(self.cursor..).unwrap_or("");
            let hit = patterns
                .iter()
                .enumerate()
                .filter_map(|(i, p)| tail.find(p).map(|at| (at, i, p.len())))
                .min();
            if let Some((at, i, len)) = hit {
                // Only a complete line counts (markers are parsed whole).
                if let Some(nl) = tail[at + len..].find('\n') {
                    let end = at + len + nl + 1;
                    let seen = tail[..end].to_string();
                    self.cursor += end;
                    self.save_log();
                    return Ok((i, seen));
                }
            }
            if !open {
                let status = self.child.wait().ok();
                self.exited = status;
                return Err(format!(
                    "QEMU exited ({}) before the console showed {patterns:?}",
                    status.map(|s| s.to_string()).unwrap_or_default()
                ));
            }
            let now = Instant::now();
            if now >= until {
                let why = if until == self.deadline {
                    format!(
                        "the scenario's overall timeout ({} s) ran out",
                        self.budget.as_secs()
                    )
                } else {
                    format!("{} s passed", timeout.as_secs())
                };
                return Err(format!("{why} waiting for {patterns:?} on the console"));
            }
            open = self.drain((until - now).min(Duration::from_millis(250)));
        }
    }

    /// Wait for the stage-2 init's boot line and parse it.
    #[track_caller]
    pub fn expect_boot(&mut self) -> Booted {
        self.expect_boot_within(BOOT)
    }

    /// [`Vm::expect_boot`] with another timeout (systemd boots slower than
    /// the busybox stage 2).
    #[track_caller]
    pub fn expect_boot_within(&mut self, timeout: Duration) -> Booted {
        let seen = self.wait_for(&format!("{MARK}booted="), timeout);
        let line = seen
            .lines()
            .rev()
            .find(|l| l.contains(MARK))
            .unwrap()
            .to_string();
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")).map(str::to_string))
                .unwrap_or_default()
        };
        Booted {
            generation: base_name(&field("booted")),
            kernel: field("kernel"),
            modprobe: field("modprobe"),
        }
    }

    /// The lines stage 2 printed with `MARK <prefix>` up to its end line.
    #[track_caller]
    pub fn stage2_lines(&mut self, prefix: &str) -> Vec<String> {
        let seen = self.wait_for(&format!("{MARK}end action="), BOOT);
        let want = format!("{MARK}{prefix}");
        seen.lines()
            .filter_map(|l| l.find(&want).map(|at| l[at + want.len()..].to_string()))
            .collect()
    }

    /// Wait for the systemd-boot menu (`[boot] timeout` > 0) and return its
    /// genboot entry titles, top to bottom, as first drawn.
    #[track_caller]
    pub fn menu(&mut self) -> Vec<String> {
        // systemd-boot draws every title, then the countdown line.
        let seen = self.wait_for("Boot in ", BOOT);
        let titles = menu_titles(&seen);
        if titles.is_empty() {
            self.fail("the boot menu shows no genboot entry");
        }
        titles
    }

    /// In the menu just shown (see [`Vm::menu`]), move down `downs` entries
    /// and press Enter.
    pub fn choose(&mut self, downs: usize) {
        for _ in 0..downs {
            self.send(b"\x1b[B");
            std::thread::sleep(Duration::from_millis(300));
        }
        self.send(b"\r");
    }

    /// Write bytes to the serial console.
    pub fn send(&mut self, bytes: &[u8]) {
        let ok = self
            .stdin
            .as_mut()
            .map(|s| s.write_all(bytes).and_then(|_| s.flush()).is_ok())
            .unwrap_or(false);
        if !ok {
            self.fail("cannot write to the serial console (QEMU gone?)");
        }
    }

    /// Wait for QEMU to exit (guest power-off, or a reset with
    /// `-no-reboot`).
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) {
        let until = (Instant::now() + timeout).min(self.deadline);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = Some(st);
                self.drain(Duration::from_millis(200));
                self.save_log();
                return;
            }
            if Instant::now() >= until {
                self.fail(&format!(
                    "QEMU did not exit within {} s (the guest should power off)",
                    timeout.as_secs()
                ));
            }
            self.drain(Duration::from_millis(250));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        while let Ok(b) = self.rx.try_recv() {
            self.raw.extend_from_slice(&b);
        }
        self.save_log();
        if std::thread::panicking() {
            eprintln!("console log of VM {}: {}", self.name, self.log.display());
        }
    }
}

/// Entry titles as systemd-boot first draws its menu: every line holding
/// `(generation ` in the text before the first countdown, in order, without
/// repeats.
pub fn menu_titles(seen: &str) -> Vec<String> {
    let mut titles: Vec<String> = Vec::new();
    for l in seen.lines() {
        let t = l.trim();
        if t.contains("(generation ") && !titles.iter().any(|x| x == t) {
            titles.push(t.to_string());
        }
    }
    titles
}
