//! End to end on a real Debian 12 root with systemd: a stock minbase +
//! systemd + `linux-image-amd64` root (`qemu/debian-root`, built from the
//! local package repository), made into a disk image by `genboot image`
//! with the root's own kernel and modules, booted under QEMU + OVMF +
//! systemd-boot. systemd must reach `multi-user.target` with nothing
//! failed.

mod common;
mod debian;
mod vm;

use std::time::{Duration, Instant};
use vm::{Scenario, MARK};

#[test]
fn debian_root_boots_to_multi_user_with_systemd() {
    let started = Instant::now();
    let s = Scenario::with_tree("e2e_debian", Duration::from_secs(1800), |tree| {
        debian::copy_root(&[], tree)
    });
    let kernels = debian::kernels(&s.tree);
    assert_eq!(
        kernels.len(),
        1,
        "the base root should have exactly one kernel (linux-image-amd64's); it has {kernels:?}"
    );
    let release = &kernels[0];
    debian::install_static_genboot(&s.tree);
    s.stage2(&format!(
        "genboot status 2>&1 | sed 's/^/{MARK}status: /'\n\
         systemd-analyze blame --no-pager 2>&1 | head -n 12 | sed 's/^/{MARK}blame: /'\n\
         systemd-analyze critical-chain --no-pager multi-user.target 2>&1 | sed 's/^/{MARK}chain: /'\n"
    ));
    let cfg =
        debian::SystemToml::new(release, "Debian 12 e2e").write(&s.dir.join("configs"), &s.tree);
    s.image_sized(&[&cfg], "auto");
    let image_bytes = std::fs::metadata(&s.image).unwrap().len();
    let generation = s.generation(1);

    let boot_started = Instant::now();
    let mut vm = s.boot("boot", false);
    let booted = vm.expect_boot_within(debian::BOOT);
    if booted.generation != generation {
        vm.fail(&format!(
            "generation 1 ({generation}) should have booted; {} came up",
            booted.generation
        ));
    }
    assert_eq!(booted.kernel, *release, "the root's own kernel should run");
    if booted.modprobe != "ok" {
        vm.fail(&format!(
            "modprobe of a module outside the initrd (isofs) through the generation's \
             module tree should work under systemd; it was {:?}",
            booted.modprobe
        ));
    }
    let report = debian::read_report(&mut vm);
    if report.system != "running" || !report.failed.is_empty() {
        vm.fail(&format!(
            "systemd should reach a running system with no failed unit; \
             `systemctl is-system-running` said {:?}, failed units:\n{}",
            report.system,
            report.failed.join("\n")
        ));
    }
    let status = report.lines("status: ");
    let booted_number = status
        .iter()
        .find_map(|l| l.strip_prefix("booted generation:"))
        .map(str::trim);
    if booted_number != Some("1") {
        vm.fail(&format!(
            "`genboot status` under systemd should name generation 1 as booted; it said:\n{}",
            status.join("\n")
        ));
    }
    assert_eq!(report.action, "poweroff");
    vm.wait_exit(debian::SETTLE);
    let boot_secs = boot_started.elapsed().as_secs_f64();

    // Figures for the report (benchmarks measure; this test only shows them).
    eprintln!("e2e_debian: kernel {release}, image {image_bytes} bytes");
    for l in &report.analyze {
        eprintln!("e2e_debian: systemd-analyze: {l}");
    }
    eprintln!(
        "e2e_debian: kernel start -> multi-user.target: {} s",
        report
            .multi_user
            .map(|s| format!("{s:.3}"))
            .unwrap_or_else(|| "?".into())
    );
    for l in report.lines("blame: ") {
        eprintln!("e2e_debian: blame: {l}");
    }
    for l in report.lines("chain: ") {
        eprintln!("e2e_debian: chain: {l}");
    }
    eprintln!(
        "e2e_debian: QEMU start -> power-off {boot_secs:.1} s; whole test {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(vm);
    // The tree copy and the image are about 2.5 GB: keep them only when the
    // test failed (the next run removes them then).
    std::fs::remove_dir_all(&s.dir).expect("remove the scenario's directory");
}

/// `qemu/deb-cache` resolves from this machine's apt lists: a kernel
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
        std::process::Command::new(common::repo().join("qemu/deb-cache"))
            .arg("--dry-run")
            .env("GENBOOT_DEBIAN_DIR", tmp.path().join("top"))
            .env("GENBOOT_DEBIAN_PACKAGES", &path)
            .output()
            .expect("qemu/deb-cache runs")
    };
    let out =
        run("base less=0.0-vanished\nbase linux-image-amd64\nextra linux-image-6.1.0-1-amd64\n");
    let (stdout, stderr) = (common::stdout(&out), common::stderr(&out));
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
    let base = common::stdout(&base);
    assert!(
        !base.contains(kernel),
        "the substitute {kernel} must not be base's kernel:\n{base}"
    );

    let out = run("base less\nextra genboot-no-such-package\n");
    let stderr = common::stderr(&out);
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

/// Every "extra" package of `qemu/debian-packages` installs in the base
/// root from the local repository alone, through the root's own apt
/// configuration (what a scenario does in the running system after
/// `debian::install_mirror`). In a private mount namespace: the repository
/// is bound where the root's sources.list points, apt's state is on tmpfs,
/// so the cached root stays as it is.
#[test]
fn extras_install_offline_in_the_root_from_the_local_repository() {
    let root = debian::debian_root(&[]);
    let mirror = debian::mirror();
    let resolved = std::fs::read_to_string(mirror.join("resolved")).unwrap();
    let extras: Vec<&str> = resolved
        .lines()
        .filter_map(|l| l.strip_prefix("extra "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        !extras.is_empty(),
        "qemu/debian-packages lists no extra package"
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
        guest = debian::GUEST_MIRROR,
        extras = extras.join(" ")
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "bash", "-c", &script])
        .output()
        .expect("unshare runs");
    let (stdout, stderr) = (common::stdout(&out), common::stderr(&out));
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
