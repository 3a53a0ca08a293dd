//! UEFI scenarios (`tests/e2e`): a [`Scenario`] builds a stage-2 root tree
//! and a disk image with the real `genboot image`, boots it under QEMU +
//! OVMF + systemd-boot (a [`Vm`] with [`Opts::uefi`]), sends keys to the
//! boot menu, and inspects the ESP inside the image with mtools and
//! `bootctl`. Everything a scenario does — genboot runs and every wait of
//! every boot — ends by its overall deadline.
//!
//! The stage-2 system (`tools/make-stage2`) prints machine-readable lines
//! starting with [`MARK`]; a scenario adds its own commands through
//! `/etc/genboot-e2e/stage2.sh` ([`Scenario::stage2`]). The real Debian
//! root's agent (`tools/debian-root`) speaks the same protocol.

use super::judges::{self, Tmpfs};
use super::vm::{Opts, Vm};
use super::{activator, genboot, repo, require_tool, run_ok, run_until, write_config, Kernel};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Prefix of every line the stage-2 init prints for the tests.
pub const MARK: &str = "GENBOOT-E2E ";
/// The ESP's PARTUUID in every image `genboot image` writes.
pub const ESP_PARTUUID: &str = "65737000-0000-4000-8000-000000000001";
/// Modules every test configuration puts into the initrd.
pub const INITRD_MODULES: &[&str] = &["virtio_blk", "virtio_pci", "ext4"];
/// Time for one boot (firmware, menu, kernel, initrd, stage 2) under TCG on
/// a loaded 2-core machine; about 6-10 s when idle.
pub const BOOT: Duration = Duration::from_secs(120);
/// The overall time of a scenario with a few boots.
pub const BUDGET: Duration = Duration::from_secs(900);

/// The static `genboot` for stage 2, built once per test binary by
/// `tools/build-static-genboot` (its own target directory, so it does not
/// wait for the lock `cargo test` holds).
pub fn static_genboot() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("GENBOOT_STATIC") {
                return PathBuf::from(p);
            }
            let out = Command::new(repo().join("tools/build-static-genboot"))
                .stderr(Stdio::inherit())
                .output()
                .expect("tools/build-static-genboot runs");
            assert!(
                out.status.success(),
                "tools/build-static-genboot failed (see its output above); it needs the \
                 x86_64-unknown-linux-musl target (`tools/install-deps`)"
            );
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        })
        .clone()
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
}

impl Scenario {
    /// A fresh scenario named `name` that must finish within `budget`.
    pub fn new(name: &str, budget: Duration) -> Scenario {
        Scenario::with_tree(name, budget, |tree| {
            let genboot = static_genboot();
            run_ok(
                Command::new(repo().join("tools/make-stage2"))
                    .arg(tree)
                    .arg(&genboot),
            );
        })
    }

    /// Like [`Scenario::new`] with another stage-2 system: `fill` makes the
    /// root tree at the path it is given (which does not exist yet), e.g. a
    /// copy of a real Debian root ([`super::debian`]).
    pub fn with_tree(name: &str, budget: Duration, fill: impl FnOnce(&Path)) -> Scenario {
        for (tool, pkg) in [
            ("qemu-system-x86_64", "qemu-system-x86"),
            ("mdir", "mtools"),
            ("mcopy", "mtools"),
            ("mtype", "mtools"),
            ("bootctl", "systemd-boot"),
            ("busybox", "busybox-static"),
            ("kmod", "kmod"),
        ] {
            require_tool(tool, pkg);
        }
        // Fail with how to build it when genboot-init is missing.
        let activator = activator();
        assert!(
            activator.exists(),
            "genboot-init {} does not exist; run `tools/build-activator` (it prints the path for GENBOOT_ACTIVATOR)",
            activator.display()
        );
        let dir = repo().join("target/e2e").join(name);
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
    pub fn config(&self, label: &str, kernel: &Kernel, extra: &str) -> PathBuf {
        self.config_with(label, kernel, INITRD_MODULES, extra)
    }

    /// Like [`Scenario::config`] with these initrd modules.
    pub fn config_with(
        &self,
        label: &str,
        kernel: &Kernel,
        modules: &[&str],
        extra: &str,
    ) -> PathBuf {
        let slug: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let path = write_config(&self.dir.join("configs").join(slug), kernel, modules, extra);
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
        let mut c = genboot();
        c.arg("--root").arg(&self.tree).arg("image");
        for cfg in configs {
            c.arg("--config").arg(cfg);
        }
        c.arg("-o").arg(&self.image).args(["--size", size]);
        run_until(&mut c, self.deadline);
    }

    /// `genboot --root <tree> --image disk.img ARGS`; returns stdout.
    pub fn genboot(&self, args: &[&str]) -> String {
        let mut c = genboot();
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

    /// Boot the image in a new VM (fresh OVMF variables), console log
    /// `target/test-logs/<scenario>-<vm_name>.log`. `reboots`: let the
    /// guest reboot inside the same VM (boot counting) instead of QEMU
    /// exiting at the first reset.
    pub fn boot(&self, vm_name: &str, reboots: bool) -> Vm {
        let name = format!("{}-{vm_name}", self.name);
        Vm::start(Opts::uefi(&name, &self.image, self.deadline).reboots(reboots))
    }

    /// [`Scenario::boot`] with the OVMF variable store `vars`, kept
    /// across VMs (what the firmware and the guest wrote stays).
    pub fn boot_with_vars(&self, vm_name: &str, vars: &Path) -> Vm {
        let name = format!("{}-{vm_name}", self.name);
        Vm::start(Opts::uefi(&name, &self.image, self.deadline).vars(vars))
    }

    /// Boot the image (QEMU exits at the guest's reset) and expect
    /// generation `n` of the host-side profile to come up: `why` says why
    /// that one. Returns the VM and what stage 2 reported.
    pub fn boot_expecting(&self, vm_name: &str, n: u32, why: &str) -> (Vm, Booted) {
        let mut vm = self.boot(vm_name, false);
        let b = self.expect_generation(&mut vm, n, why);
        (vm, b)
    }

    /// Wait for stage 2's boot line in `vm` and fail unless generation `n`
    /// of the host-side profile came up (`why` says why that one).
    #[track_caller]
    pub fn expect_generation(&self, vm: &mut Vm, n: u32, why: &str) -> Booted {
        let want = self.generation(n);
        let b = vm.expect_boot();
        if b.generation != want {
            vm.fail(&format!(
                "{why}: generation {n} ({want}) should boot; {} came up",
                b.generation
            ));
        }
        b
    }

    /// File names in an ESP directory of the image, sorted.
    pub fn esp_ls(&self, dir: &str) -> Vec<String> {
        judges::mdir(&self.image, dir)
    }

    /// An ESP file's text.
    pub fn esp_read(&self, path: &str) -> String {
        judges::mtype(&self.image, path)
    }

    /// Copy the whole ESP out of the image into a tmpfs mounted at
    /// `<dir>/esp` (a mount root, as `bootctl` wants); unmounted when the
    /// returned guard drops.
    pub fn esp_copy(&self) -> Tmpfs {
        Tmpfs::with_esp_of(&self.image, &self.dir.join("esp"))
    }
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

/// The stage-2 protocol and the systemd-boot menu, read from a UEFI VM.
impl Vm {
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
    /// and press Enter: one write, which the firmware's terminal driver
    /// queues and systemd-boot reads key by key.
    pub fn choose(&mut self, downs: usize) {
        let mut keys = b"\x1b[B".repeat(downs);
        keys.push(b'\r');
        self.send(&keys);
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
