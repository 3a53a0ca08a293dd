//! Real Debian 12 roots with systemd for the end-to-end scenarios: a stock
//! minbase + systemd + `linux-image-amd64` root built by `tools/debian-root`
//! with mmdebstrap from the local repository `tools/deb-cache` made
//! (`target/debian/mirror`), so no test reaches the network.
//!
//! Building: [`debian_root`] builds a root inside the test when the cache
//! has none for that package set, from the local repository only; the
//! script caches it under `target/debian/roots/<key>` (and serialises
//! builders with a lock), so a test run builds each distinct root once and
//! every scenario copies it ([`copy_root`]). A missing repository fails the
//! test with how to make it (`tools/deb-cache`, run by `tools/install-deps`);
//! a test never downloads.
//!
//! The root's test agent (`genboot-e2e.service`, see `tools/debian-root`)
//! speaks the busybox stage 2's protocol: a `GENBOOT-E2E booted=…` line
//! ([`Vm::expect_boot_within`]), the scenario's
//! `/etc/genboot-e2e/stage2.sh` ([`super::scenario::Scenario::stage2`]), an
//! `end action=…` line, then power-off. Before the scenario's commands it
//! reports the systemd boot ([`Report`]).

use super::scenario::{static_genboot, INITRD_MODULES, MARK};
use super::vm::Vm;
use super::{repo, run_ok};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// root's password in every test root (for recovery tests).
pub const ROOT_PASSWORD: &str = "genboot";
/// Time for one boot to the agent's first line: firmware, menu, kernel,
/// genboot-init and systemd (about 35 s of userspace under TCG when the
/// machine is idle; much more on a loaded 2-core machine).
pub const BOOT: Duration = Duration::from_secs(480);
/// Time from the agent's first line to its report (systemd finishing the
/// boot) and from its end line to QEMU's exit (a systemd shutdown).
pub const SETTLE: Duration = Duration::from_secs(300);

/// The cached root with the base packages plus `extra` (each must be in
/// `tools/debian-packages`). Read-only: copy it ([`copy_root`]) before
/// changing anything, or use it only as a source. `GENBOOT_DEBIAN_DIR`
/// moves `target/debian`, as for the scripts.
pub fn debian_root(extra: &[&str]) -> PathBuf {
    static ROOTS: Mutex<Vec<(Vec<String>, PathBuf)>> = Mutex::new(Vec::new());
    let mut key: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    key.sort();
    key.dedup();
    // One test binary asks the script once per package set.
    let mut roots = ROOTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = roots.iter().find(|(k, _)| *k == key) {
        return p.clone();
    }
    let release = mirror().join("dists/bookworm/Release");
    assert!(
        release.is_file(),
        "the local Debian package repository {} is missing: run `tools/deb-cache` \
         (`tools/install-deps` does; it downloads the packages once, tests never do)",
        release.display()
    );
    let mut c = Command::new(repo().join("tools/debian-root"));
    c.arg("--print");
    if !key.is_empty() {
        c.arg("--extra").args(&key);
    }
    let out = c
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("tools/debian-root runs");
    assert!(
        out.status.success(),
        "tools/debian-root --print {key:?} failed (its output is above); it builds the \
         root with mmdebstrap from target/debian/mirror and needs root"
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        path.join("usr/lib/systemd/systemd").exists(),
        "{} is not a Debian root with systemd",
        path.display()
    );
    roots.push((key, path.clone()));
    path
}

/// Copy the cached root with `extra` to `dest` (which must not exist):
/// `cp -a --reflink=auto`, so owners, modes and file capabilities stay.
pub fn copy_root(extra: &[&str], dest: &Path) {
    let src = debian_root(extra);
    run_ok(
        Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(&src)
            .arg(dest),
    );
}

/// Kernel releases installed in `root` (`usr/lib/modules/*` that have a
/// `boot/vmlinuz-*`), oldest first.
pub fn kernels(root: &Path) -> Vec<String> {
    let dir = root.join("usr/lib/modules");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|r| root.join(format!("boot/vmlinuz-{r}")).is_file())
        .collect();
    found.sort_by(|a, b| version_cmp(a, b));
    found
}

/// Compare kernel releases as `sort -V` does for them: digit runs by
/// value, everything else bytewise.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let d = c.is_ascii_digit();
            match out.last_mut() {
                Some((ld, t)) if *ld == d => t.push(c),
                _ => out.push((d, c.to_string())),
            }
        }
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        let o = match (x, y) {
            ((true, n), (true, m)) => n
                .trim_start_matches('0')
                .len()
                .cmp(&m.trim_start_matches('0').len())
                .then_with(|| n.trim_start_matches('0').cmp(m.trim_start_matches('0'))),
            _ => x.1.cmp(&y.1),
        };
        if o.is_ne() {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// What a `system.toml` for a Debian root says.
#[derive(Debug, Clone)]
pub struct SystemToml {
    /// Kernel release: `/boot/vmlinuz-<release>` and
    /// `/usr/lib/modules/<release>` of the root.
    pub release: String,
    pub label: String,
    /// `[system] init`.
    pub init: String,
    pub initrd_modules: Vec<String>,
    /// Kernel parameters (`console=ttyS0` is always first).
    pub params: Vec<String>,
    /// TOML appended at the end (e.g. a `[boot]` table).
    pub extra: String,
}

impl SystemToml {
    /// The configuration of the scenarios: the root's kernel `release`,
    /// systemd as init, the test initrd modules, the serial console.
    pub fn new(release: &str, label: &str) -> SystemToml {
        SystemToml {
            release: release.to_string(),
            label: label.to_string(),
            // Debian's own: /sbin -> usr/sbin, then /usr/sbin/init ->
            // /lib/systemd/systemd, an absolute link genboot-init resolves
            // inside the root.
            init: "/sbin/init".to_string(),
            initrd_modules: INITRD_MODULES.iter().map(|m| m.to_string()).collect(),
            params: Vec::new(),
            extra: String::new(),
        }
    }

    /// The file's text for the root at `root`, for a file written outside
    /// the root: its kernel paths are absolute paths on this machine into
    /// `root` (a configuration inside the root would name the root's own
    /// paths, `/boot/vmlinuz-<release>`).
    pub fn text(&self, root: &Path) -> String {
        let q = |s: &str| format!("{s:?}");
        let list = |v: &[String]| v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
        let mut params = vec!["console=ttyS0".to_string()];
        params.extend(self.params.iter().cloned());
        format!(
            "[kernel]\nimage = {}\nmodules = {}\nparams = [{}]\n\n\
             [initrd]\nmodules = [{}]\n\n\
             [root]\ndevice = \"PARTUUID=6e6f6f74-0000-4000-8000-000000000002\"\nfstype = \"ext4\"\n\n\
             [system]\nlabel = {}\ninit = {}\n{}",
            q(&root
                .join(format!("boot/vmlinuz-{}", self.release))
                .to_string_lossy()),
            q(&root
                .join(format!("usr/lib/modules/{}", self.release))
                .to_string_lossy()),
            list(&params),
            list(&self.initrd_modules),
            q(&self.label),
            q(&self.init),
            self.extra
        )
    }

    /// Write `dir/system.toml` for `root`; returns its path.
    pub fn write(&self, dir: &Path, root: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("system.toml");
        std::fs::write(&path, self.text(root)).unwrap();
        path
    }
}

/// Put the static `genboot` (`tools/build-static-genboot`) into the root as
/// `/usr/local/bin/genboot`, for stage-2 commands.
pub fn install_static_genboot(root: &Path) {
    let dest = root.join("usr/local/bin/genboot");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(static_genboot(), &dest).expect("copy the static genboot into the root");
}

/// Where a root's apt finds the local repository (its `sources.list`:
/// `deb [trusted=yes] file:/var/lib/genboot-test/mirror bookworm main`).
pub const GUEST_MIRROR: &str = "var/lib/genboot-test/mirror";

/// The local repository `tools/deb-cache` made (`target/debian/mirror`).
pub fn mirror() -> PathBuf {
    let top = std::env::var_os("GENBOOT_DEBIAN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/debian"));
    top.join("mirror")
}

/// Put the local repository into a root copy where its apt looks
/// ([`GUEST_MIRROR`]), so that `apt-get update && apt-get install` work in
/// the running test system without a network: hard links when the root is
/// on the same file system (no extra space), else a copy.
pub fn install_mirror(root: &Path) {
    let dest = root.join(GUEST_MIRROR);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).unwrap();
    }
    let linked = Command::new("cp")
        .arg("-al")
        .arg(mirror())
        .arg(&dest)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !linked {
        let _ = std::fs::remove_dir_all(&dest);
        run_ok(Command::new("cp").arg("-a").arg(mirror()).arg(&dest));
    }
}

/// The agent's report on the systemd boot, read from the console.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `systemctl is-system-running --wait`: `running`, `degraded`, ...
    pub system: String,
    /// `systemctl list-units --failed`, one line per unit.
    pub failed: Vec<String>,
    /// `systemd-analyze time`, line by line.
    pub analyze: Vec<String>,
    /// Seconds from kernel start to `multi-user.target`.
    pub multi_user: Option<f64>,
    /// Lines the scenario's `stage2.sh` printed (`GENBOOT-E2E ` removed), up
    /// to the end line.
    pub stage2: Vec<String>,
    /// The `end action=` value.
    pub action: String,
}

impl Report {
    /// The scenario's lines starting with `prefix`, prefix removed.
    pub fn lines(&self, prefix: &str) -> Vec<String> {
        self.stage2
            .iter()
            .filter_map(|l| l.strip_prefix(prefix).map(str::to_string))
            .collect()
    }
}

/// Read the agent's report after its `booted=` line
/// ([`Vm::expect_boot_within`]), up to and including its end line.
#[track_caller]
pub fn read_report(vm: &mut Vm) -> Report {
    read_report_within(vm, SETTLE)
}

/// [`read_report`] for a scenario whose stage-2 commands take longer than
/// [`SETTLE`] (apt installing a kernel under TCG).
#[track_caller]
pub fn read_report_within(vm: &mut Vm, timeout: Duration) -> Report {
    let seen = vm.wait_for(&format!("{MARK}end action="), timeout);
    let mut r = Report::default();
    for line in seen.lines() {
        let Some(at) = line.find(MARK) else { continue };
        let rest = &line[at + MARK.len()..];
        if let Some(v) = rest.strip_prefix("system=") {
            r.system = v.trim().to_string();
        } else if let Some(v) = rest.strip_prefix("failed: ") {
            r.failed.push(v.trim().to_string());
        } else if let Some(v) = rest.strip_prefix("analyze: ") {
            r.analyze.push(v.trim().to_string());
        } else if let Some(v) = rest.strip_prefix("reached: multi-user.target ") {
            r.multi_user = v.trim().trim_end_matches(" s").parse().ok();
        } else if let Some(v) = rest.strip_prefix("end action=") {
            r.action = v.trim().to_string();
        } else if !rest.starts_with("booted=") && !rest.starts_with("modprobe: ") {
            r.stage2.push(rest.to_string());
        }
    }
    r
}

/// Fail unless the agent's report says systemd is `running` with no
/// failed unit; print its `systemd-analyze time` lines (`what`: which boot).
#[track_caller]
pub fn expect_running(vm: &mut Vm, r: &Report, what: &str) {
    if r.system != "running" || !r.failed.is_empty() {
        vm.fail(&format!(
            "{what}: systemd should be running with no failed unit; is-system-running: {:?}, failed:\n{}",
            r.system,
            r.failed.join("\n")
        ));
    }
    for l in &r.analyze {
        eprintln!("{}: {what}: systemd-analyze: {l}", vm.log_path().display());
    }
}

/// The per-root map from package name to installed version, as
/// `tools/debian-root` recorded it beside the cached root.
pub fn packages(cached_root: &Path) -> HashMap<String, String> {
    let list = cached_root.with_file_name("packages");
    std::fs::read_to_string(&list)
        .unwrap_or_else(|e| panic!("{}: {e}", list.display()))
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(p, v)| (p.to_string(), v.to_string()))
        .collect()
}

/// genboot's Debian packages (`tools/make-deb`, built once per test
/// binary): `genboot_<version>_amd64.deb` and
/// `genboot-initramfs-tool_<version>_all.deb`, in that order.
pub fn genboot_debs() -> Vec<PathBuf> {
    static BUILT: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Command::new(repo().join("tools/make-deb"))
                .arg(repo().join("target/deb"))
                .stderr(Stdio::inherit())
                .output()
                .expect("tools/make-deb runs");
            assert!(
                out.status.success(),
                "tools/make-deb failed (its output is above); it needs dpkg-deb and the \
                 musl target (`tools/install-deps`)"
            );
            let debs: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(PathBuf::from)
                .collect();
            assert_eq!(
                debs.len(),
                2,
                "tools/make-deb prints two packages: {debs:?}"
            );
            debs
        })
        .clone()
}

/// Where a root's apt finds genboot's own packages after
/// [`install_genboot_repo`]: a flat repository.
pub const GUEST_GENBOOT_REPO: &str = "var/lib/genboot-test/genboot";

/// Put genboot's packages ([`genboot_debs`]) into `root` as a flat apt
/// repository beside the local Debian one, with its source line, so that
/// `apt-get install genboot genboot-initramfs-tool` works in the root (or
/// the running system) without a network.
pub fn install_genboot_repo(root: &Path) {
    genboot_flat_repo(&root.join(GUEST_GENBOOT_REPO));
    std::fs::write(
        root.join("etc/apt/sources.list.d/genboot.list"),
        format!("deb [trusted=yes] file:/{GUEST_GENBOOT_REPO} ./\n"),
    )
    .unwrap();
}

/// genboot's packages ([`genboot_debs`]) as a flat apt repository in
/// `dir` (made anew): `deb [trusted=yes] file:DIR ./`.
pub fn genboot_flat_repo(dir: &Path) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::create_dir_all(dir).unwrap();
    for deb in genboot_debs() {
        std::fs::copy(&deb, dir.join(deb.file_name().unwrap())).unwrap();
    }
    let packages = run_ok(
        Command::new("apt-ftparchive")
            .arg("packages")
            .arg(".")
            .current_dir(dir),
    );
    std::fs::write(dir.join("Packages"), packages).unwrap();
}

/// The byte offset of partition 2 (the root file system) in a disk image
/// `genboot image` wrote.
pub fn root_offset(image: &Path) -> u64 {
    let o = Command::new("sgdisk")
        .arg("-i")
        .arg("2")
        .arg(image)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let first: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("First sector: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("sgdisk -i 2 {}: {text}", image.display()));
    first * 512
}

/// Run `script` with bash as root in a private mount namespace, `$r` the
/// Debian root, with /proc, /sys and the local repository ([`mirror`], at
/// [`GUEST_MIRROR`]) mounted in it and `c CMD...` running CMD chrooted
/// into it (a clean environment, `DEBIAN_FRONTEND=noninteractive`).
/// Returns its output (stdout and stderr); fails the test when it fails.
#[track_caller]
pub fn chroot_script(root: &Path, script: &str) -> String {
    std::fs::create_dir_all(root.join(GUEST_MIRROR)).unwrap();
    let full = format!(
        "set -euo pipefail\nr=$1\nmount -t proc proc \"$r/proc\"\nmount -t sysfs sysfs \"$r/sys\"\n\
         mount --bind -o ro '{mirror}' \"$r/{GUEST_MIRROR}\"\n\
         c() {{ chroot \"$r\" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \"$@\"; }}\n{script}",
        mirror = mirror().display()
    );
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            &full,
            "bash",
        ])
        .arg(root)
        .output()
        .expect("unshare runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the script in {} failed:\n{text}",
        root.display()
    );
    text
}
