//! End to end on a real Debian 12 root with systemd (issue 13): a stock
//! minbase + systemd + `linux-image-amd64` root (`tools/debian-root`, built
//! from the local package repository) with Debian's `systemd-boot` package,
//! genboot installed into it from its own `.deb` by apt, the system
//! declared in its own `/etc/genboot/system.toml`, imaged from outside by
//! `genboot --root ROOT image`, booted under QEMU + OVMF + the
//! distribution's systemd-boot. One sequence of boots checks the issue's
//! list; the local package repository's tooling is tested below it.

use crate::support::{self, debian, scenario::*};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Time for a boot's stage-2 commands: apt installing a kernel package and
/// genboot building its generation (copying and hashing its module tree),
/// under TCG on a loaded 2-core machine.
const APT: Duration = Duration::from_secs(1800);

/// The root's own configuration: the newest installed kernel, systemd,
/// the root read-only at first (Debian's `ro`, so systemd-fsck-root checks
/// it), boot counting.
const SYSTEM_TOML: &str = r#"[kernel]
release = "newest"
params = ["console=ttyS0"]

[initrd]
modules = ["virtio_blk", "virtio_pci", "ext4"]

[root]
device = "PARTUUID=6e6f6f74-0000-4000-8000-000000000002"
fstype = "ext4"
options = "ro"

[system]
label = "Debian 12"
init = "/sbin/init"

[boot]
tries = 3
timeout = 4
"#;

/// What each boot's stage 2 does after the agent's report, by boot number
/// (kept in /var/lib/genboot-e2e/boot on the root).
const STAGE2: &str = r#"n=$(( $(cat /var/lib/genboot-e2e/boot 2>/dev/null || echo 0) + 1 ))
echo $n > /var/lib/genboot-e2e/boot
say() { sed "s/^/GENBOOT-E2E $1: /"; }
echo "GENBOOT-E2E boot=$n"
export DEBIAN_FRONTEND=noninteractive
genboot status 2>&1 | say status
grep -E ' /usr/lib/modules[^ ]* ' /proc/self/mountinfo | say modmount
ls /boot/efi/loader/entries 2>&1 | say entry
case $n in
1)
  for u in systemd-bless-boot genboot-bless; do
    echo "GENBOOT-E2E unit: $u $(systemctl is-active $u.service) $(systemctl show -P Result $u.service) $(systemctl show -P ExecMainExitTimestampMonotonic $u.service)"
  done
  systemd-analyze verify /usr/lib/systemd/system/genboot-bless.service 2>&1 | say verify
  genboot bless 2>&1 | say bless
  echo "GENBOOT-E2E bless-exit=$(genboot bless >/dev/null 2>&1; echo $?)"
  apt-get update -q >/dev/null 2>&1
  apt-get install -y -q linux-image-6.12-amd64 > /tmp/apt.log 2>&1; echo "GENBOOT-E2E apt-exit=$?"
  grep -E 'genboot|systemd-boot|kernel-install|rror' /tmp/apt.log | say apt
  genboot list 2>&1 | say list
  echo "GENBOOT-E2E gen2=$(readlink /var/lib/genboot/profiles/system-2-link)"
  ls /boot/efi/loader/entries 2>&1 | say entry-after
  ;;
2)
  apt-get remove -y -q linux-image-amd64 linux-image-6.1.0-57-amd64 > /tmp/apt.log 2>&1; echo "GENBOOT-E2E apt-exit=$?"
  grep -E 'genboot|rror' /tmp/apt.log | say apt
  ls /usr/lib/modules/6.1.0-57-amd64 2>&1 | say leftover
  genboot rollback 2>&1 | say rollback
  genboot list 2>&1 | say list
  ;;
esac
"#;

/// The menu's entry file names, from the stage-2 lines `prefix`.
fn entries(r: &debian::Report, prefix: &str) -> Vec<String> {
    r.lines(prefix)
}

#[test]
fn debian_with_genboot_from_its_deb_upgrades_kernels_rolls_back_checks_and_recovers() {
    let started = Instant::now();
    let s = Scenario::with_tree("e2e_debian", Duration::from_secs(7200), |tree| {
        debian::copy_root(&["systemd-boot"], tree)
    });
    let root = &s.tree;
    assert_eq!(
        debian::kernels(root),
        ["6.1.0-57-amd64"],
        "the base root's kernel (linux-image-amd64's) changed: update this test"
    );
    // genboot as a Debian user installs it: apt, from its .deb.
    debian::install_genboot_repo(root);
    let out = debian::chroot_script(
        root,
        "c apt-get update -qq\nc apt-get install -y -q genboot genboot-initramfs-tool\n",
    );
    assert!(out.contains("Setting up genboot "), "{out}");
    std::fs::write(root.join("etc/genboot/system.toml"), SYSTEM_TOML).unwrap();
    // Debian's way: the root (checked, passno 1) and the ESP in fstab.
    std::fs::write(
        root.join("etc/fstab"),
        "PARTUUID=6e6f6f74-0000-4000-8000-000000000002 / ext4 errors=remount-ro 0 1\n\
         PARTUUID=65737000-0000-4000-8000-000000000001 /boot/efi vfat umask=0077 0 0\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("boot/efi")).unwrap();
    // An installed system has its machine-id (a first boot that creates
    // one would change every entry: issue 13 item 8, not this test's).
    std::fs::write(
        root.join("etc/machine-id"),
        "67656e626f6f74653265000000000001\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("var/lib/genboot-e2e")).unwrap();
    debian::install_mirror(root);
    s.stage2(STAGE2);

    // From outside, without --config: ROOT/etc/genboot/system.toml, its
    // paths read in ROOT. Room for a second kernel in the running system.
    let mut c = support::genboot();
    c.arg("--root")
        .arg(root)
        .args(["image", "-o"])
        .arg(&s.image)
        .args(["--size", "4G"]);
    let out = support::run_ok(&mut c);
    drop(out);
    let gen1 = s.generation(1);
    // A dirty root (not cleanly unmounted): systemd-fsck-root must check it.
    let offset = debian::root_offset(&s.image);
    let dirty = Command::new("debugfs")
        .args(["-w", "-R", "ssv state 0"])
        .arg(format!("{}?offset={offset}", s.image.display()))
        .output()
        .unwrap();
    assert!(dirty.status.success(), "{}", support::stderr(&dirty));
    let sb = superblock(&s.image, offset);
    assert!(sb.contains("Filesystem state:         not clean"), "{sb}");

    // Boot 0: the root is mounted read-only (`ro`), systemd-fsck-root
    // checks it, finds it was not cleanly unmounted, repairs it and, as
    // it changed the mounted root, reboots (QEMU exits at the reset).
    let mut vm = s.boot("boot0-fsck", false);
    vm.wait_for("File System Check on Root Device", debian::BOOT);
    vm.wait_for("reboot: Restarting system", debian::BOOT);
    vm.wait_exit(debian::SETTLE);
    drop(vm);
    let sb = superblock(&s.image, offset);
    assert!(
        sb.contains("Filesystem state:         clean")
            && !sb.contains("Last checked:             Thu Jan  1 00:00:01 1970"),
        "systemd-fsck-root should have checked and repaired the root (e2fsck sets it clean and its check time):\n{sb}"
    );

    // Boot 1: generation 1, the root's kernel, nothing to check now; apt
    // installs a second kernel, which makes generation 2 by itself.
    let mut vm = s.boot("boot1", false);
    let b = vm.expect_boot_within(debian::BOOT);
    let r = check_boot(
        &mut vm,
        &b,
        &gen1,
        "6.1.0-57-amd64",
        "boot 1 (the first generation)",
    );
    if !r.lines("modmount: ").is_empty() {
        vm.fail(&format!(
            "the root has the kernel's own modules: nothing should be bound over /lib/modules: {:?}",
            r.lines("modmount: ")
        ));
    }
    // The ESP is mounted twice: at /boot/efi by fstab (Debian's way) and
    // at /efi by systemd's gpt-auto generator (the image's root partition
    // has the Discoverable Partitions type). genboot takes the first of
    // /efi, /boot, /boot/efi that is the partition the firmware booted
    // from (LoaderDevicePartUUID), as bootctl does.
    let status = r.lines("status: ");
    let esp = status
        .iter()
        .find_map(|l| l.strip_prefix("ESP:"))
        .map(str::trim);
    if esp != Some("/efi") {
        vm.fail(&format!(
            "`genboot status` should find the ESP at /efi (gpt-auto's mount, first in bootctl's order):\n{}",
            status.join("\n")
        ));
    }
    // Both bless units ran (Debian's systemd-boot package brings
    // systemd-bless-boot.service; the .deb enabled genboot-bless.service)
    // and succeeded, systemd's first; `genboot bless` again exits 0.
    let unit = |name: &str| -> Vec<String> {
        r.lines("unit: ")
            .into_iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let (sys, gb) = (unit("systemd-bless-boot"), unit("genboot-bless"));
    let good = ["active".to_string(), "success".to_string()];
    let exited = |u: &[String]| u.get(3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    if sys.get(1..3) != Some(&good[..]) || gb.get(1..3) != Some(&good[..]) {
        vm.fail(&format!(
            "systemd-bless-boot.service and genboot-bless.service should both have run and succeeded: {:?}",
            r.lines("unit: ")
        ));
    }
    if exited(&sys) == 0 || exited(&sys) > exited(&gb) {
        vm.fail(&format!(
            "systemd-bless-boot should finish before genboot-bless: {:?}",
            r.lines("unit: ")
        ));
    }
    if r.lines("bless-exit=") != ["0"] {
        vm.fail(&format!(
            "`genboot bless` again after the entry was blessed should exit 0: bless said {:?}",
            r.lines("bless: ")
        ));
    }
    let verify: Vec<String> = r
        .lines("verify: ")
        .into_iter()
        .filter(|l| l.contains("genboot-bless"))
        .collect();
    if !verify.is_empty() {
        vm.fail(&format!(
            "systemd-analyze verify finds fault with genboot-bless.service:\n{}",
            verify.join("\n")
        ));
    }
    let apt = r.lines("apt: ").join("\n");
    if r.lines("apt-exit=") != ["0"]
        || !apt.contains("genboot: kernel 6.12.117+deb12-amd64 installed: genboot switch")
    {
        vm.fail(&format!(
            "apt install of the 6.12 kernel should run genboot switch:\n{apt}"
        ));
    }
    let after = entries(&r, "entry-after: ");
    if after.iter().any(|e| !e.starts_with("genboot-"))
        || !after.iter().any(|e| e.starts_with("genboot-2"))
    {
        vm.fail(&format!(
            "after the kernel install the ESP should hold genboot's entries only, generation 2's among them (Debian's systemd-boot hook ran kernel-install): {after:?}"
        ));
    }
    let gen2_path = r.lines("gen2=").concat();
    vm.wait_exit(debian::SETTLE);
    no_failed_unmount(&mut vm);
    drop(vm);
    // Made in the running system: its name from there.
    let gen2 = base_name(&gen2_path);

    // Boot 2: no key press, generation 2 with the new kernel. apt removes
    // the first kernel; `genboot rollback` makes generation 1 current.
    let mut vm = s.boot("boot2", false);
    let b = vm.expect_boot_within(debian::BOOT);
    let r = check_boot(
        &mut vm,
        &b,
        &gen2,
        "6.12.117+deb12-amd64",
        "boot 2 (the new kernel's generation)",
    );
    if r.lines("apt-exit=") != ["0"]
        || !r
            .lines("apt: ")
            .join("\n")
            .contains("genboot: kernel 6.1.0-57-amd64 removed: genboot switch")
    {
        vm.fail(&format!(
            "apt remove of the first kernel should run genboot switch: {:?}",
            r.lines("apt: ")
        ));
    }
    if !r
        .lines("rollback: ")
        .join("\n")
        .contains("rolled back to generation 1")
    {
        vm.fail(&format!("genboot rollback: {:?}", r.lines("rollback: ")));
    }
    vm.wait_exit(debian::SETTLE);
    no_failed_unmount(&mut vm);
    drop(vm);

    // Boot 3: no key press, the rolled-back-to generation 1, whose kernel
    // package is gone: its modules come from the store (bound read-only on
    // /lib/modules/6.1.0-57-amd64 alone) and still load.
    let mut vm = s.boot("boot3", false);
    let b = vm.expect_boot_within(debian::BOOT);
    let r = check_boot(
        &mut vm,
        &b,
        &gen1,
        "6.1.0-57-amd64",
        "boot 3 (after genboot rollback)",
    );
    let mounts = r.lines("modmount: ");
    if mounts.len() != 1
        || !mounts[0].contains(" /usr/lib/modules/6.1.0-57-amd64 ")
        || !mounts[0].contains(" ro")
    {
        vm.fail(&format!(
            "the removed kernel's modules should be bound read-only on /usr/lib/modules/6.1.0-57-amd64 alone: {mounts:?}"
        ));
    }
    vm.wait_exit(debian::SETTLE);
    no_failed_unmount(&mut vm);
    drop(vm);

    // Boot 4: the recovery entry asks for root's password (sulogin), gives
    // a shell with the root read-only, and exiting it boots on.
    let mut vm = s.boot("boot4-recovery", false);
    let titles = vm.menu();
    let Some(at) = titles.iter().position(|t| t.contains("Recovery")) else {
        vm.fail(&format!("the menu has no recovery entry: {titles:?}"));
    };
    // The menu starts on the default entry (generation 1 since the
    // rollback), not at the top.
    let Some(default) = titles.iter().position(|t| t == "Debian 12 (generation 1)") else {
        vm.fail(&format!(
            "the menu has no entry for generation 1: {titles:?}"
        ));
    };
    vm.choose(at.saturating_sub(default));
    vm.wait_for("*** genboot recovery ***", debian::BOOT);
    vm.sulogin(
        "(or press Control-D to continue): ",
        debian::ROOT_PASSWORD,
        debian::BOOT,
    );
    let mode = vm.shell_root_mode(Duration::from_secs(120));
    if mode != "ro" {
        vm.fail(&format!(
            "the root is mounted {mode:?} in the recovery shell; expected ro"
        ));
    }
    if vm.console().contains(&format!("{MARK}booted=")) {
        vm.fail("the stage-2 init ran before the recovery shell ended");
    }
    vm.send(b"exit\n");
    let b = vm.expect_boot_within(debian::BOOT);
    check_boot(
        &mut vm,
        &b,
        &gen1,
        "6.1.0-57-amd64",
        "boot 4 (after the recovery shell)",
    );
    vm.wait_exit(debian::SETTLE);
    drop(vm);

    eprintln!(
        "e2e_debian: four boots, {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
    // The tree copy and the image are several GB: keep them only when the
    // test failed (the next run removes them then).
    std::fs::remove_dir_all(&s.dir).expect("remove the scenario's directory");
}

/// `dumpe2fs -h` of the file system at byte `offset` of `image`.
fn superblock(image: &Path, offset: u64) -> String {
    let o = Command::new("dumpe2fs")
        .arg("-h")
        .arg(format!("{}?offset={offset}", image.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "dumpe2fs: {}", support::stderr(&o));
    support::stdout(&o)
}

/// The boot reported by the agent: generation `gen` with `kernel`, a
/// module outside the initrd loaded, systemd running with no failed unit.
#[track_caller]
fn check_boot(
    vm: &mut support::vm::Vm,
    b: &Booted,
    gen: &str,
    kernel: &str,
    what: &str,
) -> debian::Report {
    if b.generation != gen || b.kernel != kernel {
        vm.fail(&format!(
            "{what}: generation {gen} with kernel {kernel} should boot; {} with {} came up",
            b.generation, b.kernel
        ));
    }
    if b.modprobe != "ok" {
        vm.fail(&format!(
            "{what}: modprobe of a module outside the initrd: {:?}",
            b.modprobe
        ));
    }
    // apt installs a kernel and genboot builds its generation under TCG.
    let r = debian::read_report_within(vm, APT);
    debian::expect_running(vm, &r, what);
    r
}

/// The shutdown unmounted everything (the binds included).
#[track_caller]
fn no_failed_unmount(vm: &mut support::vm::Vm) {
    if vm.console().contains("Failed unmounting") {
        vm.fail("the shutdown printed `Failed unmounting`");
    }
}

/// `tools/deb-cache` resolves from this machine's apt lists: a kernel
/// package that left the mirror becomes the newest of its series and
/// flavour that the list does not already use (never base's kernel), a
/// pinned version that left becomes the current one, both said on stderr;
/// an unknown package is an error naming the list line and `apt-get
/// update`. (`--dry-run`: nothing is downloaded, the repository untouched.)
#[test]
fn deb_cache_substitutes_vanished_kernels_and_pins_and_names_missing_packages() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |list: &str| {
        let path = tmp.path().join("packages");
        std::fs::write(&path, list).unwrap();
        std::process::Command::new(support::repo().join("tools/deb-cache"))
            .arg("--dry-run")
            .env("GENBOOT_DEBIAN_DIR", tmp.path().join("top"))
            .env("GENBOOT_DEBIAN_PACKAGES", &path)
            .output()
            .expect("tools/deb-cache runs")
    };
    let out =
        run("base less=0.0-vanished\nbase linux-image-amd64\nextra linux-image-6.1.0-1-amd64\n");
    let (stdout, stderr) = (support::stdout(&out), support::stderr(&out));
    assert!(
        out.status.success(),
        "deb-cache --dry-run failed:\n{stderr}"
    );
    let resolved: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(resolved.len(), 3, "one resolved line per entry:\n{stdout}");
    assert_eq!(resolved[0][..2], ["base", "less"]);
    assert_ne!(resolved[0][2], "0.0-vanished");
    assert!(
        stderr.contains("less=0.0-vanished") && stderr.contains("using the current version"),
        "the vanished pin should be reported:\n{stderr}"
    );
    let kernel = resolved[2][1];
    assert!(
        kernel.starts_with("linux-image-6.1.0-")
            && kernel.ends_with("-amd64")
            && kernel != "linux-image-6.1.0-1-amd64",
        "the vanished kernel should become another 6.1 amd64 kernel; got {kernel}"
    );
    assert!(
        stderr.contains(&format!(
            "linux-image-6.1.0-1-amd64 ({}:3) is gone from the mirror; using {kernel} instead",
            tmp.path().join("packages").display()
        )),
        "the substitution should be reported with the list line:\n{stderr}"
    );
    // Not the kernel linux-image-amd64 (base) installs.
    let base = std::process::Command::new("apt-cache")
        .args(["depends", "linux-image-amd64"])
        .output()
        .expect("apt-cache runs");
    let base = support::stdout(&base);
    assert!(
        !base.contains(kernel),
        "the substitute {kernel} must not be base's kernel:\n{base}"
    );

    let out = run("base less\nextra genboot-no-such-package\n");
    let stderr = support::stderr(&out);
    assert!(!out.status.success(), "an unknown package must fail");
    assert!(
        stderr.contains("genboot-no-such-package")
            && stderr.contains(":2)")
            && stderr.contains("apt-get update"),
        "the error should name the package, its line and `apt-get update`:\n{stderr}"
    );
    assert!(
        !tmp.path().join("top/mirror").exists()
            && std::fs::read_dir(tmp.path().join("top/debs"))
                .map(|d| d
                    .filter(|e| e.as_ref().unwrap().file_name() != "partial")
                    .count())
                .unwrap_or(0)
                == 0,
        "a dry run downloads nothing and writes no repository"
    );
}

/// Every "extra" package of `tools/debian-packages` installs in the base
/// root from the local repository alone, through the root's own apt
/// configuration (what a scenario does in the running system after
/// `support::debian::install_mirror`). In a private mount namespace: the repository
/// is bound where the root's sources.list points, apt's state is on tmpfs,
/// so the cached root stays as it is.
#[test]
fn extras_install_offline_in_the_root_from_the_local_repository() {
    let root = support::debian::debian_root(&[]);
    let mirror = support::debian::mirror();
    let resolved = std::fs::read_to_string(mirror.join("resolved")).unwrap();
    let extras: Vec<&str> = resolved
        .lines()
        .filter_map(|l| l.strip_prefix("extra "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        !extras.is_empty(),
        "tools/debian-packages lists no extra package"
    );
    // print-uris gives URL-encoded file: URIs; each file must be there.
    let script = format!(
        r#"set -e
r='{root}'
mount --bind -o ro '{mirror}' "$r/{guest}"
mount -t tmpfs tmpfs "$r/var/lib/apt/lists"
mount -t tmpfs tmpfs "$r/var/cache/apt"
chroot "$r" apt-get update
chroot "$r" apt-get install --simulate {extras}
chroot "$r" apt-get install --print-uris -qq {extras} > "$r/var/cache/apt/uris"
while read -r uri file _; do
  path=${{uri#\'file:}}; path=${{path%\'}}; path=${{path//%/\\x}}
  if [ -f "$r$(printf '%b' "$path")" ]; then echo "present: $file"; else echo "missing: $uri"; fi
done < "$r/var/cache/apt/uris"
"#,
        root = root.display(),
        mirror = mirror.display(),
        guest = support::debian::GUEST_MIRROR,
        extras = extras.join(" ")
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "bash", "-c", &script])
        .output()
        .expect("unshare runs");
    let (stdout, stderr) = (support::stdout(&out), support::stderr(&out));
    assert!(
        out.status.success(),
        "apt in the root failed:\n{stdout}\n{stderr}"
    );
    // Only the local repository was asked.
    for l in stdout
        .lines()
        .filter(|l| l.starts_with("Get:") || l.starts_with("Hit:") || l.starts_with("Ign:"))
    {
        assert!(
            l.contains("file:/var/lib/genboot-test/mirror"),
            "apt in the root reached another source: {l}"
        );
    }
    for p in &extras {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("Inst {p} "))),
            "apt in the root should install {p}:\n{stdout}"
        );
        let deb = format!("present: {p}_");
        assert!(
            stdout.lines().any(|l| l.starts_with(&deb)),
            "apt in the root should fetch {p} from the local repository:\n{stdout}"
        );
    }
    let missing: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("missing: "))
        .collect();
    assert!(
        missing.is_empty(),
        "files apt in the root would fetch are not in the repository:\n{}",
        missing.join("\n")
    );
    assert!(
        !root.join("var/lib/apt/lists").read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("genboot-test")),
        "the cached root must stay as it was"
    );
}

/// `debian::kernels` orders releases as `sort -V` does.
#[test]
fn kernel_releases_sort_like_sort_v() {
    let mut v = vec![
        "6.12.117+deb12-amd64",
        "6.1.0-57-amd64",
        "6.1.0-9-amd64",
        "6.12.9+deb12-amd64",
    ];
    v.sort_by(|a, b| support::debian::version_cmp(a, b));
    assert_eq!(
        v,
        [
            "6.1.0-9-amd64",
            "6.1.0-57-amd64",
            "6.12.9+deb12-amd64",
            "6.12.117+deb12-amd64"
        ]
    );
}
