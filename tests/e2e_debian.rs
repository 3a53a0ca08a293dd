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
