//! The boot sequence against the recording fake: exact mounts, flags and
//! order; every failure step ending in the failure policy.

use super::*;
use crate::json;
use crate::probe::tests::{ext4_image, gpt_disk, ROOT_PARTUUID_ON_DISK};
use crate::sys::fake::FakeSys;
use genboot_format::manifest::{self, Manifest, Module};
use genboot_format::module_name::ModName;
use genboot_format::store_name::StoreHash;
use genboot_format::{BOOTED, STORE_DIR, TIMINGS};

const KVER: &str = "6.1.0-50-amd64";
const H: &str = "0123456789abcdef0123456789abcdef";
const K: &str = "fedcba9876543210fedcba9876543210";
const ROOT_UUID: [u8; 16] = [0x11; 16];
const PARTUUID: &str = "6e6f6f74-0000-4000-8000-000000000002";

// Devices of the fake's file systems.
const INITRAMFS: u64 = 1;
const ROOT: u64 = 2;
const SYSFS: u64 = 3;
const DEVTMPFS: u64 = 4;
const PROCFS: u64 = 5;
const RUNFS: u64 = 6;

fn gen() -> String {
    format!("{STORE_DIR}/{H}-genboot-system-{KVER}")
}
fn kmods() -> String {
    format!("{STORE_DIR}/{K}-linux-modules-{KVER}")
}
fn module_path(name: &str) -> String {
    format!("/lib/modules/{KVER}/kernel/{name}.ko")
}

fn boot_json(release: &str) -> String {
    format!(
        r#"{{
  "org.nixos.bootspec.v1": {{"init": "{g}/init", "toplevel": "{g}", "kernelParams": ["root=PARTUUID={PARTUUID}"]}},
  "org.genboot.v1": {{"format": 1, "kernelRelease": "{release}", "kernelModules": "{k}", "tries": null}}
}}
"#,
        g = gen(),
        k = kmods()
    )
}

/// A machine with a virtio disk `vda` holding a GPT and an ext4 root
/// `vda1`, and a genboot initrd; the command line is `cmdline`.
fn world(cmdline: &str) -> FakeSys {
    let mut f = FakeSys::new();
    // The initramfs.
    f.file("/init", b"\x7fELF", INITRAMFS);
    f.dir("/dev", DEVTMPFS);
    f.dir("/proc", PROCFS);
    f.dir("/sys", SYSFS);
    f.dir("/run", RUNFS);
    let manifest = Manifest {
        kernel_release: KVER.into(),
        modules: ["virtio_pci", "virtio_blk", "ext4"]
            .iter()
            .map(|m| Module::new(m, &module_path(m)))
            .collect(),
        aliases: vec![
            ("pci:v00001AF4d*sv*sd*bc*sc*i*".into(), "virtio_pci".into()),
            ("virtio:d00000002v*".into(), "virtio_blk".into()),
        ],
        firmware: vec![],
    };
    f.file(manifest::PATH, manifest.to_text().as_bytes(), INITRAMFS);
    for m in &manifest.modules {
        f.file(&m.path, b"module", INITRAMFS);
    }
    // /proc, /sys, /dev.
    f.file("/proc/cmdline", format!("{cmdline}\n").as_bytes(), PROCFS);
    f.file(
        "/proc/self/mountinfo",
        b"1 0 0:2 / / rw - rootfs rootfs rw\n",
        PROCFS,
    );
    let pci = "/sys/devices/pci0000:00/0000:00:04.0";
    f.file(
        &format!("{pci}/modalias"),
        b"pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00\n",
        SYSFS,
    );
    f.file(
        &format!("{pci}/virtio1/modalias"),
        b"virtio:d00000002v00001AF4\n",
        SYSFS,
    );
    f.link(
        &format!("{pci}/virtio1/subsystem"),
        "../../../../bus/virtio",
        SYSFS,
    );
    let disk = format!("{pci}/virtio1/block/vda");
    f.file(&format!("{disk}/queue/logical_block_size"), b"512\n", SYSFS);
    f.file(&format!("{disk}/vda1/partition"), b"1\n", SYSFS);
    f.link(
        "/sys/class/block/vda",
        "../../devices/pci0000:00/0000:00:04.0/virtio1/block/vda",
        SYSFS,
    );
    f.link(
        "/sys/class/block/vda1",
        "../../devices/pci0000:00/0000:00:04.0/virtio1/block/vda/vda1",
        SYSFS,
    );
    f.file("/dev/console", b"", DEVTMPFS);
    f.file("/dev/vda", &gpt_disk(1, ROOT_PARTUUID_ON_DISK), DEVTMPFS);
    f.file("/dev/vda1", &ext4_image(ROOT_UUID, "genroot"), DEVTMPFS);
    // The root file system, as it will be seen at /sysroot once mounted.
    let r = |p: &str| format!("{SYSROOT}{p}");
    f.dir(SYSROOT, ROOT);
    for d in ["/dev", "/proc", "/sys", "/run", "/lib/modules"] {
        f.dir(&r(d), ROOT);
    }
    f.exe(&r("/sbin/init"), b"#!/bin/sh", ROOT);
    f.exe(&r("/bin/sh"), b"\x7fELF", ROOT);
    f.file(
        &r(&format!("{}/boot.json", gen())),
        boot_json(KVER).as_bytes(),
        ROOT,
    );
    f.link(&r(&format!("{}/init", gen())), "/sbin/init", ROOT);
    f.link(
        &r(&format!("{}/kernel-modules", gen())),
        &format!("../{K}-linux-modules-{KVER}"),
        ROOT,
    );
    f.dir(&r(&format!("{}/lib/modules/{KVER}", kmods())), ROOT);
    f.dir(&r(&format!("{}/lib/firmware", kmods())), ROOT);
    // Store objects are read-only.
    f.make_read_only(&r(&gen()));
    f.make_read_only(&r(&kmods()));
    f
}

fn cmdline(extra: &str) -> String {
    format!(
        "console=ttyS0 root=PARTUUID={PARTUUID} rootfstype=ext4 rw init={}/init {extra}",
        gen()
    )
}

/// The last `n` calls the machine saw, oldest first.
fn last_calls(f: &FakeSys, n: usize) -> Vec<&str> {
    let from = f.calls.len().saturating_sub(n);
    f.calls[from..].iter().map(String::as_str).collect()
}

fn console_has(f: &FakeSys, needle: &str) -> bool {
    f.console.iter().any(|l| l.contains(needle))
}

#[test]
fn whole_sequence_mounts_binds_moves_switches_and_execs() {
    let mut f = world(&cmdline("-- single x=y"));
    let outcome = run(&mut f);
    let (g, k) = (gen(), kmods());
    assert_eq!(outcome, Outcome::Exec(format!("{g}/init")));
    let expected = vec![
        "mkdir /proc 755".to_string(),
        "mount proc /proc proc MS_NOSUID|MS_NODEV|MS_NOEXEC \"\"".into(),
        "mkdir /sys 755".into(),
        "mount sysfs /sys sysfs MS_NOSUID|MS_NODEV|MS_NOEXEC \"\"".into(),
        "mkdir /dev 755".into(),
        "mount devtmpfs /dev devtmpfs MS_NOSUID \"mode=0755\"".into(),
        "mkdir /run 755".into(),
        "mount tmpfs /run tmpfs MS_NOSUID|MS_NODEV \"mode=0755\"".into(),
        format!("load_module {}", module_path("virtio_pci")),
        format!("load_module {}", module_path("virtio_blk")),
        format!("load_module {}", module_path("ext4")),
        "mkdir /sysroot 755".into(),
        "mount /dev/vda1 /sysroot ext4 0 \"\"".into(),
        // From the kernel-modules object itself (the one genboot.verify
        // hashes), not through the generation's link; only the running
        // kernel's tree, which the root does not have.
        format!("mkdir /sysroot/lib/modules/{KVER} 755"),
        format!("mount /sysroot{k}/lib/modules/{KVER} /sysroot/lib/modules/{KVER} - MS_BIND \"\""),
        format!("mount - /sysroot/lib/modules/{KVER} - MS_RDONLY|MS_REMOUNT|MS_BIND \"\""),
        "mkdir /sysroot/lib/firmware 755".into(),
        format!("mount /sysroot{k}/lib/firmware /sysroot/lib/firmware - MS_BIND \"\""),
        "mount - /sysroot/lib/firmware - MS_RDONLY|MS_REMOUNT|MS_BIND \"\"".into(),
        "mkdir /run/genboot 755".into(),
        "write /run/genboot/booted".into(),
        // systemd leaves the binds to systemd-shutdown (see below).
        "mkdir /run/systemd 755".into(),
        "mkdir /run/systemd/system 755".into(),
        format!("write /run/systemd/system/lib-modules-6.1.0\\x2d50\\x2damd64.mount"),
        "write /run/systemd/system/lib-firmware.mount".into(),
        "write /run/genboot/timings.json".into(),
        "mount /dev /sysroot/dev - MS_MOVE \"\"".into(),
        "mount /proc /sysroot/proc - MS_MOVE \"\"".into(),
        "mount /sys /sysroot/sys - MS_MOVE \"\"".into(),
        "mount /run /sysroot/run - MS_MOVE \"\"".into(),
        // The initramfs, emptied in directory order, mounts left alone.
        "unlink /etc/genboot/initrd.manifest".into(),
        "rmdir /etc/genboot".into(),
        "rmdir /etc".into(),
        "unlink /init".into(),
        format!("unlink /lib/modules/{KVER}/kernel/ext4.ko"),
        format!("unlink /lib/modules/{KVER}/kernel/virtio_blk.ko"),
        format!("unlink /lib/modules/{KVER}/kernel/virtio_pci.ko"),
        format!("rmdir /lib/modules/{KVER}/kernel"),
        format!("rmdir /lib/modules/{KVER}"),
        "rmdir /lib/modules".into(),
        "rmdir /lib".into(),
        "chdir /sysroot".into(),
        "mount /sysroot / - MS_MOVE \"\"".into(),
        "chroot .".into(),
        "chdir /".into(),
        "write /run/genboot/timings.json".into(),
        format!("exec {g}/init [\"{g}/init\", \"single\", \"x=y\"]"),
    ];
    assert_eq!(f.calls, expected);
    assert_eq!(f.read_file(BOOTED).unwrap(), format!("{g}\n").into_bytes());
    assert!(
        f.tree.contains_key("/sysroot/sbin/init"),
        "the root is not touched"
    );
    assert!(!f.tree.contains_key("/init"));
    assert!(console_has(&f, "kernel start to stage 2: "));
}

#[test]
fn banner_comes_first_on_console_and_kmsg() {
    let mut f = world(&cmdline(""));
    run(&mut f);
    assert!(
        f.console[0].starts_with("genboot-init "),
        "{:?}",
        f.console[0]
    );
    assert!(f.kmsg[0].starts_with("<6>genboot-init "), "{:?}", f.kmsg[0]);
}

#[test]
fn every_step_is_timed_in_order_and_recorded_as_json() {
    let mut f = world(&cmdline(""));
    run(&mut f);
    let text = String::from_utf8(f.read_file(TIMINGS).unwrap()).unwrap();
    let v = json::parse(&text).unwrap();
    let json::Value::Array(steps) = v.get("steps").unwrap() else {
        panic!("{text}")
    };
    let names: Vec<&str> = steps
        .iter()
        .map(|s| s.get("step").unwrap().as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "mount-api",
            "cmdline",
            "manifest",
            "modules",
            "modalias",
            "wait-root",
            "mount-root",
            "generation",
            "bind-modules",
            "record",
            "move-api",
            "free-initramfs",
            "switch-root",
            "exec"
        ]
    );
    let us: Vec<u64> = steps
        .iter()
        .map(|s| match s.get("us") {
            Some(json::Value::Number(n)) => n.parse().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(us.windows(2).all(|w| w[0] < w[1]), "{us:?}");
}

#[test]
fn root_by_uuid_label_and_path_is_the_same_partition() {
    for spec in [
        "UUID=11111111-1111-1111-1111-111111111111".to_string(),
        "LABEL=genroot".into(),
        "/dev/vda1".into(),
        format!("PARTUUID={}", PARTUUID.to_uppercase()),
    ] {
        // No rootfstype=: the superblock says ext4.
        let mut f = world(&format!("root={spec} rw init={}/init", gen()));
        assert!(
            matches!(run(&mut f), Outcome::Exec(_)),
            "{spec}: {:?}",
            f.console
        );
        assert!(
            f.calls
                .contains(&"mount /dev/vda1 /sysroot ext4 0 \"\"".to_string()),
            "{spec}: {:#?}",
            f.calls
        );
    }
}

#[test]
fn rootflags_and_ro_reach_the_mount() {
    let mut f = world(&format!(
        "root=LABEL=genroot rootfstype=xfs,ext4 rootflags=noatime,errors=remount-ro ro init={}/init",
        gen()
    ));
    f.fail
        .push(("mount /dev/vda1 /sysroot xfs".into(), libc::EINVAL));
    run(&mut f);
    let mounts: Vec<&String> = f
        .calls
        .iter()
        .filter(|c| c.starts_with("mount /dev/vda1"))
        .collect();
    assert_eq!(
        mounts,
        vec![
            "mount /dev/vda1 /sysroot xfs MS_RDONLY \"noatime,errors=remount-ro\"",
            "mount /dev/vda1 /sysroot ext4 MS_RDONLY \"noatime,errors=remount-ro\"",
        ]
    );
}

#[test]
fn read_only_root_without_firmware_dir_warns_and_goes_on() {
    let mut f = world(&cmdline("ro"));
    assert!(matches!(run(&mut f), Outcome::Exec(_)));
    assert!(!f.calls.iter().any(|c| c.starts_with("mkdir /sysroot/lib")));
    assert!(!f.calls.iter().any(|c| c.contains("/sysroot/lib/firmware")));
    assert!(console_has(
        &f,
        "/lib/firmware is missing on the read-only root"
    ));
}

#[test]
fn recovery_runs_the_roots_sulogin_after_the_switch_then_continues_the_boot() {
    // Issue 13, item 10: the recovery entry was a root shell for anyone at
    // the console. Now the root's sulogin asks for root's password (as
    // Debian's rescue mode does) and gives the shell; when it exits, the
    // boot goes on.
    let mut f = world(&cmdline("genboot.recovery"));
    f.exe("/sysroot/sbin/sulogin", b"\x7fELF", ROOT);
    let g = gen();
    assert_eq!(run(&mut f), Outcome::Exec(format!("{g}/init")));
    assert!(f
        .calls
        .contains(&"mount /dev/vda1 /sysroot ext4 MS_RDONLY \"\"".to_string()));
    assert_eq!(
        last_calls(&f, 7),
        [
            "chdir /sysroot",
            "mount /sysroot / - MS_MOVE \"\"",
            "chroot .",
            "chdir /",
            "run_shell / /sbin/sulogin",
            "write /run/genboot/timings.json",
            &format!("exec {g}/init [\"{g}/init\"]"),
        ]
    );
    for says in [
        "*** genboot recovery ***",
        "the root is mounted read-only",
        "sulogin asks for root's password (Control-D there continues the boot)",
        "mount -o remount,rw /",
        "mount -t efivarfs efivarfs /sys/firmware/efi/efivars",
        "mount PARTUUID=$(tr -cd 0-9A-Fa-f- < /sys/firmware/efi/efivars/LoaderDevicePartUUID-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f | tr A-F a-f) /mnt",
        "continue booting:   exit the shell",
        "reboot -f",
        "recovery: /sbin/sulogin exited; continuing the boot",
    ] {
        assert!(console_has(&f, says), "{says:?} not on the console: {:#?}", f.console);
    }
}

#[test]
fn recovery_without_sulogin_gives_no_shell_and_boots() {
    let mut f = world(&cmdline("genboot.recovery"));
    let g = gen();
    assert_eq!(run(&mut f), Outcome::Exec(format!("{g}/init")));
    assert!(!f.calls.iter().any(|c| c.starts_with("run_shell")));
    assert!(!f.calls.iter().any(|c| c.starts_with("exec /bin/sh")));
    assert!(console_has(
        &f,
        "the root has no sulogin (util-linux) to ask for root's password, so there is no shell"
    ));
}

#[test]
fn debug_prints_the_mount_table_and_stops_before_the_switch() {
    let mut f = world(&cmdline("genboot.debug"));
    assert_eq!(run(&mut f), Outcome::Rebooted(Step::Debug));
    assert!(console_has(&f, "rootfs rootfs rw"));
    assert!(!f.calls.iter().any(|c| c.contains("MS_MOVE")));
    assert_eq!(
        last_calls(&f, 3),
        ["run_shell /sysroot /bin/sh", "sleep 5000ms", "reboot"]
    );
}

#[test]
fn modalias_loads_matching_modules_not_yet_loaded_once() {
    let mut f = world(&cmdline(""));
    let m =
        Manifest::parse(&String::from_utf8(f.read_file(manifest::PATH).unwrap()).unwrap()).unwrap();
    let mut boot = Boot::new(&mut f);
    let mut loaded = vec![ModName::new("virtio_pci")];
    boot.modalias(&m, &mut loaded, &[]);
    assert_eq!(loaded, vec!["virtio_pci", "virtio_blk"]);
    assert_eq!(
        f.calls,
        vec![format!("load_module {}", module_path("virtio_blk"))]
    );
    assert!(console_has(&f, "modalias: loaded virtio_blk"));
}

#[test]
fn builtin_modules_saying_eexist_count_as_loaded() {
    let mut f = world(&cmdline(""));
    f.builtin_paths.push(module_path("ext4"));
    assert!(matches!(run(&mut f), Outcome::Exec(_)));
    assert!(console_has(&f, "modules: 3 of 3 loaded"));
}

#[test]
fn verify_hashes_the_generation_and_its_kernel_modules() {
    let mut f = world(&cmdline("genboot.verify"));
    assert!(matches!(run(&mut f), Outcome::Exec(_)));
    let hashes: Vec<&String> = f
        .calls
        .iter()
        .filter(|c| c.starts_with("hash_tree"))
        .collect();
    assert_eq!(
        hashes,
        vec![
            &format!("hash_tree /sysroot{} genboot-system-{KVER} {H}", gen()),
            &format!("hash_tree /sysroot{} linux-modules-{KVER} {K}", kmods()),
        ]
    );
}

// ---- each failure step ends in the policy ----

/// Run, and check the failure was reported at `step` and the machine rebooted.
fn fails_at(mut f: FakeSys, step: Step, says: &str) -> FakeSys {
    let outcome = run(&mut f);
    assert_eq!(
        outcome,
        Outcome::Rebooted(step),
        "console: {:#?}",
        f.console
    );
    let failed = format!("FAILED at step {}: ", step.name());
    let at = f
        .console
        .iter()
        .position(|l| l.contains(&failed))
        .unwrap_or_else(|| panic!("{:#?}", f.console));
    assert!(
        f.console[at].contains(says),
        "{:?} lacks {says:?}",
        f.console[at]
    );
    assert!(
        f.console[at + 1].starts_with("genboot-init: hint: "),
        "{:?}",
        f.console[at + 1]
    );
    assert!(
        f.kmsg.iter().any(|l| l.contains(&failed)),
        "the failure is in the kernel log too"
    );
    assert_eq!(last_calls(&f, 2), ["sleep 5000ms", "reboot"]);
    if step != Step::Exec {
        assert!(
            !f.calls.iter().any(|c| c.starts_with("exec")),
            "no exec after a failure"
        );
    }
    f
}

#[test]
fn failing_api_mount_reboots() {
    let mut f = world(&cmdline(""));
    f.fail.push(("mount sysfs".into(), libc::EPERM));
    fails_at(f, Step::MountApi, "cannot mount sysfs on /sys");
}

#[test]
fn bad_cmdline_reboots() {
    fails_at(world("console=ttyS0"), Step::Cmdline, "no root=");
    fails_at(
        world(&cmdline("genboot.timeout=soon")),
        Step::Cmdline,
        "genboot.timeout=soon",
    );
}

#[test]
fn missing_or_foreign_manifest_reboots() {
    let mut f = world(&cmdline(""));
    f.tree.remove(manifest::PATH);
    fails_at(f, Step::Manifest, manifest::PATH);
    let mut f = world(&cmdline(""));
    f.release = "6.1.0-47-cloud-amd64".into();
    fails_at(
        f,
        Step::Manifest,
        "initrd is for kernel 6.1.0-50-amd64 but kernel 6.1.0-47-cloud-amd64",
    );
}

#[test]
fn missing_root_device_times_out_then_reboots() {
    let f = world(&format!(
        "root=PARTUUID=00000000-0000-4000-8000-00000000dead genboot.timeout=2 init={}/init",
        gen()
    ));
    let f = fails_at(f, Step::WaitRoot, "did not appear within 2 s");
    let polls = f.calls.iter().filter(|c| *c == "sleep 50ms").count();
    assert!((39..=41).contains(&polls), "{polls} polls of 50 ms in 2 s");
    assert!(console_has(&f, "block devices seen: vda vda1"));
}

#[test]
fn failing_root_mount_reboots_or_gives_the_roots_shell() {
    let mut f = world(&cmdline(""));
    f.fail.push(("mount /dev/vda1".into(), libc::EINVAL));
    fails_at(
        f,
        Step::MountRoot,
        "cannot mount /dev/vda1 on /sysroot: ext4: Invalid argument",
    );
    // shell_on_fail before the root is mounted: no shell is reachable.
    let mut f = world(&cmdline("genboot.shell_on_fail"));
    f.fail.push(("mount /dev/vda1".into(), libc::EINVAL));
    let f = fails_at(f, Step::MountRoot, "cannot mount");
    assert!(console_has(&f, "no shell is reachable"));
    assert!(!f.calls.iter().any(|c| c.starts_with("run_shell")));
}

#[test]
fn wrong_init_says_so() {
    fails_at(
        world("root=/dev/vda1 rw"),
        Step::Generation,
        "no init= on the kernel command line",
    );
    fails_at(
        world("root=/dev/vda1 init=/sbin/init"),
        Step::Generation,
        "init=/sbin/init is not a generation's init",
    );
    fails_at(
        world(&format!(
            "root=/dev/vda1 init={STORE_DIR}/nothash-genboot-system-x/init"
        )),
        Step::Generation,
        "not named <32 hex digits>-<name>",
    );
    fails_at(
        world(&format!(
            "root=/dev/vda1 init={STORE_DIR}/{H}-linux-6.1/init"
        )),
        Step::Generation,
        "not a genboot-system generation",
    );
    let other = format!("{STORE_DIR}/{K}-genboot-system-{KVER}");
    fails_at(
        world(&format!("root=/dev/vda1 init={other}/init")),
        Step::Generation,
        &format!("generation {other} is not on the root file system"),
    );
}

#[test]
fn init_paths_are_read_without_the_machine() {
    use super::generation::parse_init_path;
    let g = gen();
    let init = format!("{g}/init");
    let p = parse_init_path(&init).unwrap();
    assert_eq!(p.generation, g);
    assert_eq!(p.object.hash, H);
    assert_eq!(p.object.name, format!("genboot-system-{KVER}"));
    for (init, why) in [
        (format!("{g}/init/"), "does not end in /init"),
        (
            "/sbin/init".to_string(),
            "it is not in /var/lib/genboot/store",
        ),
        (
            format!("/var/lib/genboot/storex/{H}-genboot-system-x/init"),
            "it is not in",
        ),
        (
            format!("{STORE_DIR}/{H}-/init"),
            "not named <32 hex digits>",
        ),
        (
            format!("{STORE_DIR}/{}-genboot-system-x/init", H.to_uppercase()),
            "not named <32 hex digits>",
        ),
        (
            format!("{STORE_DIR}/{H}-linux-6.1/init"),
            "not a genboot-system",
        ),
        (
            format!("{STORE_DIR}/{H}-genboot-system-x/sub/init"),
            "not a genboot-system",
        ),
    ] {
        let e = parse_init_path(&init).unwrap_err();
        assert!(e.contains(why), "{init}: {e}");
    }
}

#[test]
fn generation_for_another_kernel_is_refused() {
    let mut f = world(&cmdline(""));
    let bj = format!("{SYSROOT}{}/boot.json", gen());
    f.file(&bj, boot_json("6.1.0-47-cloud-amd64").as_bytes(), ROOT);
    fails_at(
        f,
        Step::Generation,
        "is for kernel 6.1.0-47-cloud-amd64, but kernel 6.1.0-50-amd64",
    );
    let mut f = world(&cmdline(""));
    f.file(&bj, b"{ not json", ROOT);
    fails_at(f, Step::Generation, "boot.json is not JSON");
}

#[test]
fn generation_whose_init_is_missing_gives_the_shell_when_asked() {
    let mut f = world(&cmdline("genboot.shell_on_fail"));
    f.tree.remove("/sysroot/sbin/init");
    let f = fails_at(
        f,
        Step::Generation,
        "init points to /sbin/init, which is not a file on the root",
    );
    assert_eq!(
        last_calls(&f, 3),
        ["run_shell /sysroot /bin/sh", "sleep 5000ms", "reboot"]
    );
}

#[test]
fn tampered_generation_is_refused_with_verify() {
    let mut f = world(&cmdline("genboot.verify"));
    f.hashes.insert(
        format!("{SYSROOT}{}", gen()),
        StoreHash::parse("00000000000000000000000000000000").unwrap(),
    );
    fails_at(
        f,
        Step::Verify,
        "was changed: its contents hash to 00000000000000000000000000000000",
    );
    let mut f = world(&cmdline("genboot.verify"));
    f.hashes.insert(
        format!("{SYSROOT}{}", kmods()),
        StoreHash::parse("11111111111111111111111111111111").unwrap(),
    );
    fails_at(f, Step::Verify, &kmods());
}

#[test]
fn failing_bind_record_move_switch_and_exec_reboot() {
    let mut f = world(&cmdline(""));
    f.fail
        .push(("mount - /sysroot/lib/modules".into(), libc::EPERM));
    fails_at(f, Step::BindModules, "cannot bind");
    let mut f = world(&cmdline(""));
    f.fail
        .push(("write /run/genboot/booted".into(), libc::ENOSPC));
    fails_at(f, Step::Record, "cannot write /run/genboot/booted");
    let mut f = world(&cmdline(""));
    f.fail
        .push(("mount /sys /sysroot/sys".into(), libc::EINVAL));
    fails_at(f, Step::MoveApi, "cannot move /sys to /sysroot/sys");
    let mut f = world(&cmdline(""));
    f.fail.push(("chroot".into(), libc::EPERM));
    fails_at(f, Step::SwitchRoot, "chroot .");
    let mut f = world(&cmdline("genboot.shell_on_fail"));
    f.fail.push(("exec".into(), libc::ENOEXEC));
    // The fake does not move mounts: put the root's shell where / will be.
    f.file("/bin/sh", b"\x7fELF", ROOT);
    let f = fails_at(f, Step::Exec, "cannot execute");
    // After the switch the root's shell is at /.
    assert!(f.calls.contains(&"run_shell / /bin/sh".to_string()));
}

#[test]
fn failing_reboot_is_reported_not_silent() {
    let mut f = world("console=ttyS0");
    f.fail.push(("reboot".into(), libc::EPERM));
    assert_eq!(run(&mut f), Outcome::RebootFailed);
    assert!(console_has(&f, "reboot failed"));
}

#[test]
fn compressed_modules_use_the_kernels_decompression_and_say_when_it_is_missing() {
    let mut f = world(&cmdline(""));
    let mut m =
        Manifest::parse(&String::from_utf8(f.read_file(manifest::PATH).unwrap()).unwrap()).unwrap();
    m.modules.push(Module::new("dummy", "/lib/dummy.ko.zst"));
    f.file("/lib/dummy.ko.zst", b"zstd", INITRAMFS);
    f.fail
        .push(("load_module /lib/dummy.ko.zst".into(), libc::EINVAL));
    let mut boot = Boot::new(&mut f);
    let (mut loaded, mut failed) = (vec![], vec![]);
    boot.modules(&m, &mut loaded, &mut failed);
    assert_eq!(failed, vec!["dummy"]);
    assert!(f
        .calls
        .contains(&"load_module /lib/dummy.ko.zst compressed".to_string()));
    assert!(console_has(&f, "CONFIG_MODULE_DECOMPRESS is off"));
    assert!(console_has(&f, "modules: 3 of 4 loaded"));
}

#[test]
fn modalias_skips_the_sysfs_walk_when_every_aliased_module_is_loaded() {
    let mut f = world(&cmdline(""));
    let m =
        Manifest::parse(&String::from_utf8(f.read_file(manifest::PATH).unwrap()).unwrap()).unwrap();
    // A device whose alias would match: the walk would find it.
    f.tree
        .remove("/sys/devices/pci0000:00/0000:00:04.0/modalias");
    let mut boot = Boot::new(&mut f);
    let mut loaded = vec![ModName::new("virtio_pci"), ModName::new("virtio_blk")];
    assert!(boot.modalias_pass(&m, &mut loaded).is_empty());
    assert!(f.calls.is_empty());
    assert!(f.listed.is_empty(), "sysfs was walked: {:?}", f.listed);
    // With virtio_blk missing, the walk runs and loads it.
    let mut boot = Boot::new(&mut f);
    let mut loaded = vec![ModName::new("virtio_pci")];
    assert_eq!(boot.modalias_pass(&m, &mut loaded), vec!["virtio_blk"]);
    assert!(f.listed.contains(&"/sys/devices".to_string()));
}

#[test]
fn generation_of_a_newer_format_or_with_a_missing_kernel_modules_object_is_refused() {
    let mut f = world(&cmdline(""));
    let bj = format!("{SYSROOT}{}/boot.json", gen());
    let newer = boot_json(KVER).replace("\"format\": 1", "\"format\": 2");
    f.file(&bj, newer.as_bytes(), ROOT);
    fails_at(
        f,
        Step::Generation,
        "has generation format 2; this genboot-init reads format 1",
    );
    let mut f = world(&cmdline(""));
    let km = format!("{SYSROOT}{}", kmods());
    f.tree.retain(|k, _| !k.starts_with(&km));
    fails_at(
        f,
        Step::Generation,
        &format!("kernel-modules object {} is not on the root", kmods()),
    );
}

#[test]
fn waiting_for_the_root_says_so_every_five_seconds() {
    let f = world(&format!(
        "root=LABEL=elsewhere genboot.timeout=12 init={}/init",
        gen()
    ));
    let f = fails_at(f, Step::WaitRoot, "did not appear within 12 s");
    let notes = f
        .console
        .iter()
        .filter(|l| l.contains("waiting for root device LABEL=elsewhere"))
        .count();
    assert_eq!(notes, 2, "at 5 s and 10 s");
}

// ---- the root's links are resolved inside the root ----

/// `world`, with the root shaped like stock Debian 12: merged /usr through
/// relative links, and the init reached through an ABSOLUTE link
/// (`/usr/sbin/init -> /lib/systemd/systemd`). The initramfs has a /lib of
/// its own, so anything resolved against it finds the wrong tree.
fn debian_world(cmdline: &str) -> FakeSys {
    let mut f = world(cmdline);
    for d in ["/sysroot/sbin", "/sysroot/lib", "/sysroot/bin"] {
        let inside = format!("{d}/");
        f.tree.retain(|k, _| k != d && !k.starts_with(&inside));
    }
    f.link("/sysroot/bin", "usr/bin", ROOT);
    f.link("/sysroot/sbin", "usr/sbin", ROOT);
    f.link("/sysroot/lib", "usr/lib", ROOT);
    f.exe("/sysroot/usr/lib/systemd/systemd", b"\x7fELF", ROOT);
    f.link("/sysroot/usr/sbin/init", "/lib/systemd/systemd", ROOT);
    f.exe("/sysroot/usr/bin/dash", b"\x7fELF", ROOT);
    f.link("/sysroot/usr/bin/sh", "dash", ROOT);
    f.dir("/sysroot/usr/lib/modules", ROOT);
    f
}

fn binds(f: &FakeSys) -> Vec<&str> {
    f.calls
        .iter()
        .filter(|c| c.contains("MS_BIND") || c.starts_with("mkdir /sysroot/"))
        .map(String::as_str)
        .collect()
}

#[test]
fn stock_debian_init_through_an_absolute_link_boots() {
    // Issue 10, item 1: `stat("/sysroot/sbin/init")` resolved
    // /lib/systemd/systemd in the initramfs and failed every boot.
    let mut f = debian_world(&cmdline(""));
    let g = gen();
    assert_eq!(
        run(&mut f),
        Outcome::Exec(format!("{g}/init")),
        "{:#?}",
        f.console
    );
    assert!(console_has(
        &f,
        "(kernel 6.1.0-50-amd64, init /usr/lib/systemd/systemd)"
    ));
    // /lib -> usr/lib: the binds land on the root's /usr/lib.
    let k = kmods();
    assert_eq!(
        binds(&f),
        vec![
            format!("mkdir /sysroot/usr/lib/modules/{KVER} 755"),
            format!("mount /sysroot{k}/lib/modules/{KVER} /sysroot/usr/lib/modules/{KVER} - MS_BIND \"\""),
            format!("mount - /sysroot/usr/lib/modules/{KVER} - MS_RDONLY|MS_REMOUNT|MS_BIND \"\""),
            "mkdir /sysroot/usr/lib/firmware 755".into(),
            format!("mount /sysroot{k}/lib/firmware /sysroot/usr/lib/firmware - MS_BIND \"\""),
            "mount - /sysroot/usr/lib/firmware - MS_RDONLY|MS_REMOUNT|MS_BIND \"\"".into(),
        ]
    );
    assert!(console_has(
        &f,
        &format!("bind-modules: /lib/modules/{KVER} (at /usr/lib/modules/{KVER}): the generation's (read-only); /lib/firmware (at /usr/lib/firmware): the generation's (read-only)")
    ));
}

// ---- the root's module trees stay the root's (issue 13, item 3) ----

/// The calls of the bind step: between mounting the root and recording
/// the boot.
fn bind_step(f: &FakeSys) -> Vec<&str> {
    let from = f
        .calls
        .iter()
        .position(|c| c.starts_with("mount /dev/vda1 /sysroot "))
        .expect("the root was mounted")
        + 1;
    let to = f
        .calls
        .iter()
        .position(|c| c == "mkdir /run/genboot 755")
        .expect("the boot was recorded");
    f.calls[from..to].iter().map(String::as_str).collect()
}

#[test]
fn each_bind_gets_a_mount_unit_that_keeps_systemds_shutdown_off_it() {
    // Issue 13, item 3: "Failed unmounting usr-lib-modules.mount" at every
    // shutdown: umount.target unmounted the bind while udevd still mapped
    // kmod's index files from it. A unit without default dependencies
    // leaves it to systemd-shutdown, which unmounts it last.
    let mut f = debian_world(&cmdline(""));
    f.dir("/sysroot/usr/lib/firmware", ROOT);
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    let unit = "/run/systemd/system/usr-lib-modules-6.1.0\\x2d50\\x2damd64.mount";
    let text = String::from_utf8(f.read_file(unit).unwrap()).unwrap();
    assert_eq!(
        text,
        format!(
            "# Written by genboot-init: the booted generation's kernel modules.\n\
             # No default dependencies: systemd-shutdown unmounts it last, once\n\
             # udevd no longer maps kmod's index files from it.\n\
             [Unit]\n\
             Description=Kernel modules of the booted genboot generation\n\
             DefaultDependencies=no\n\
             \n\
             [Mount]\n\
             What={}/lib/modules/{KVER}\n\
             Where=/usr/lib/modules/{KVER}\n\
             Options=bind,ro\n",
            kmods()
        )
    );
    // The root's own firmware is not bound, so it has no unit.
    assert!(!f.calls.iter().any(|c| c.contains("firmware.mount")));
    assert!(console_has(
        &f,
        &format!("record: /run/genboot/booted {unit}")
    ));
    // Nothing bound, nothing written.
    let mut f = world(&cmdline(""));
    f.dir(&format!("/sysroot/lib/modules/{KVER}/kernel"), ROOT);
    f.dir("/sysroot/lib/firmware", ROOT);
    assert!(matches!(run(&mut f), Outcome::Exec(_)));
    assert!(!f.calls.iter().any(|c| c.contains("/run/systemd")));
}

#[test]
fn unit_names_escape_like_systemd_escape() {
    use super::switch::unit_name;
    assert_eq!(
        unit_name("/usr/lib/modules/6.12.117+deb12-amd64"),
        "usr-lib-modules-6.12.117\\x2bdeb12\\x2damd64.mount"
    );
    assert_eq!(unit_name("/lib/firmware"), "lib-firmware.mount");
    assert_eq!(unit_name("/a/.hidden/x y"), "a-\\x2ehidden-x\\x20y.mount");
}

#[test]
fn a_root_with_the_running_kernels_own_tree_keeps_it_and_nothing_is_bound() {
    // Issue 13, item 3: the whole of /lib/modules was bound read-only, so
    // dpkg's `mkdir /lib/modules/<next kernel>` failed, and DKMS and depmod
    // with it. A root whose kernel package is installed keeps its tree.
    let mut f = world(&cmdline(""));
    f.dir(&format!("/sysroot/lib/modules/{KVER}/kernel"), ROOT);
    f.file(
        &format!("/sysroot/lib/modules/{KVER}/modules.order"),
        b"",
        ROOT,
    );
    f.dir("/sysroot/lib/firmware", ROOT);
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    assert_eq!(bind_step(&f), Vec::<&str>::new());
    assert!(console_has(
        &f,
        &format!(
            "bind-modules: /lib/modules/{KVER}: the root's own; /lib/firmware: the root's own"
        )
    ));
}

#[test]
fn only_the_running_kernels_tree_is_bound_never_all_of_lib_modules() {
    // After `apt remove` of the running kernel, depmod's files stay
    // behind (no kernel/, no modules.order): the generation's tree is
    // bound on that directory alone; the other kernel's tree and
    // /lib/modules itself stay the root's, writable.
    let mut f = world(&cmdline(""));
    f.dir("/sysroot/lib/modules/6.12.117+deb12-amd64/kernel", ROOT);
    f.file(
        &format!("/sysroot/lib/modules/{KVER}/modules.dep"),
        b"",
        ROOT,
    );
    f.dir("/sysroot/lib/firmware", ROOT);
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    let k = kmods();
    assert_eq!(
        bind_step(&f),
        [
            format!(
                "mount /sysroot{k}/lib/modules/{KVER} /sysroot/lib/modules/{KVER} - MS_BIND \"\""
            ),
            format!("mount - /sysroot/lib/modules/{KVER} - MS_RDONLY|MS_REMOUNT|MS_BIND \"\""),
        ]
    );
    assert!(!f.calls.iter().any(|c| c.starts_with("mount")
        && (c.contains(" /sysroot/lib/modules ") || c.contains("6.12.117"))));
}

#[test]
fn a_read_only_root_gets_the_bind_on_an_empty_directory_and_a_warning_without_one() {
    // Debian's `ro`: the mount point kept by `genboot switch` (an empty
    // directory) takes the bind without a write to the root.
    let mut f = world(&cmdline("ro"));
    f.dir(&format!("/sysroot/lib/modules/{KVER}"), ROOT);
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    let k = kmods();
    assert_eq!(
        bind_step(&f),
        [
            format!(
                "mount /sysroot{k}/lib/modules/{KVER} /sysroot/lib/modules/{KVER} - MS_BIND \"\""
            ),
            format!("mount - /sysroot/lib/modules/{KVER} - MS_RDONLY|MS_REMOUNT|MS_BIND \"\""),
        ]
    );
    // Without it: nothing is created on the read-only root, the boot goes on.
    let mut f = world(&cmdline("ro"));
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    assert_eq!(bind_step(&f), Vec::<&str>::new());
    assert!(console_has(
        &f,
        &format!("warning: /lib/modules/{KVER} is missing on the read-only root")
    ));
}

#[test]
fn debian_recovery_entry_finds_sulogin_through_the_merged_usr_links() {
    // Debian: /sbin -> usr/sbin; util-linux's sulogin is /usr/sbin/sulogin.
    let mut f = debian_world(&cmdline("genboot.recovery"));
    // busybox's: a link to the multi-call binary, run by its own name.
    f.exe("/sysroot/usr/bin/busybox", b"\x7fELF", ROOT);
    f.link("/sysroot/usr/sbin/sulogin", "/usr/bin/busybox", ROOT);
    assert_eq!(run(&mut f), Outcome::Exec(format!("{}/init", gen())));
    assert!(f
        .calls
        .contains(&"run_shell / /usr/sbin/sulogin".to_string()));
}

#[test]
fn an_absolute_lib_link_never_puts_the_bind_into_the_initramfs() {
    let mut f = debian_world(&cmdline(""));
    f.tree.remove("/sysroot/lib");
    f.link("/sysroot/lib", "/usr/lib", ROOT);
    // The initramfs has a /usr/lib/modules the kernel would pick.
    f.dir("/usr/lib/modules", INITRAMFS);
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    let k = kmods();
    assert_eq!(
        binds(&f)[..3],
        [
            format!("mkdir /sysroot/usr/lib/modules/{KVER} 755"),
            format!("mount /sysroot{k}/lib/modules/{KVER} /sysroot/usr/lib/modules/{KVER} - MS_BIND \"\""),
            format!("mount - /sysroot/usr/lib/modules/{KVER} - MS_RDONLY|MS_REMOUNT|MS_BIND \"\""),
        ]
    );
    assert!(!f
        .calls
        .iter()
        .any(|c| c.starts_with("mount") && c.contains(" /usr/lib")));
}

#[test]
fn an_init_link_climbing_out_of_the_root_stays_in_it() {
    // /sbin/init -> ../../../../etc/x: the kernel stops `..` at the root.
    let mut f = debian_world(&cmdline(""));
    f.tree.remove("/sysroot/usr/sbin/init");
    f.link("/sysroot/usr/sbin/init", "../../../../etc/x", ROOT);
    f.exe("/etc/x", b"initramfs file", INITRAMFS);
    fails_at(
        f,
        Step::Generation,
        "init points to /sbin/init, which is not a file on the root: /etc/x: No such file or directory",
    );
    // With /etc/x on the root, that is the init (as stage 2 would see it).
    let mut f = debian_world(&cmdline(""));
    f.tree.remove("/sysroot/usr/sbin/init");
    f.link("/sysroot/usr/sbin/init", "../../../../etc/x", ROOT);
    f.exe("/sysroot/etc/x", b"#!/bin/sh", ROOT);
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    assert!(console_has(&f, "init /etc/x)"));
}

#[test]
fn a_looping_or_unusable_init_is_refused_with_why() {
    let mut f = debian_world(&cmdline(""));
    f.tree.remove("/sysroot/usr/sbin/init");
    f.link("/sysroot/usr/sbin/init", "/sbin/init", ROOT);
    fails_at(
        f,
        Step::Generation,
        "more than 40 symbolic links on the way (a loop?)",
    );
    let mut f = debian_world(&cmdline(""));
    f.chmod("/sysroot/usr/lib/systemd/systemd", 0o644);
    fails_at(
        f,
        Step::Generation,
        "/usr/lib/systemd/systemd is not executable (mode 0644)",
    );
    let mut f = debian_world(&cmdline(""));
    f.tree.remove("/sysroot/usr/lib/systemd/systemd");
    f.dir("/sysroot/usr/lib/systemd/systemd", ROOT);
    fails_at(
        f,
        Step::Generation,
        "/usr/lib/systemd/systemd is not a regular file",
    );
}

#[test]
fn the_roots_shell_is_found_through_an_absolute_link() {
    let mut f = debian_world(&cmdline("genboot.shell_on_fail"));
    f.tree.remove("/sysroot/usr/bin/sh");
    f.link("/sysroot/usr/bin/sh", "/bin/dash", ROOT);
    f.fail
        .push(("write /run/genboot/booted".into(), libc::ENOSPC));
    let f = fails_at(f, Step::Record, "cannot write");
    assert!(f.calls.contains(&"run_shell /sysroot /bin/sh".to_string()));
}

#[test]
fn api_file_systems_move_onto_the_roots_own_directories() {
    let mut f = debian_world(&cmdline(""));
    f.tree.remove("/sysroot/run");
    f.link("/sysroot/run", "/var/run-here", ROOT);
    f.dir("/sysroot/var/run-here", ROOT);
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    assert!(f
        .calls
        .contains(&"mount /run /sysroot/var/run-here - MS_MOVE \"\"".to_string()));
}

#[test]
fn a_kernel_modules_link_out_of_the_store_is_refused() {
    let mut f = world(&cmdline(""));
    let link = format!("{SYSROOT}{}/kernel-modules", gen());
    f.tree.remove(&link);
    f.link(&link, &format!("/tmp/{K}-linux-modules-{KVER}"), ROOT);
    fails_at(
        f,
        Step::Generation,
        &format!("kernel-modules points to /tmp/{K}-linux-modules-{KVER}, not a store object"),
    );
}

#[test]
fn a_modules_dir_leading_out_of_its_object_is_not_bound() {
    let mut f = world(&cmdline(""));
    let m = format!("{SYSROOT}{}/lib/modules", kmods());
    f.tree.retain(|k, _| !k.starts_with(&m));
    f.link(&m, "/lib/modules", ROOT);
    assert!(matches!(run(&mut f), Outcome::Exec(_)), "{:#?}", f.console);
    assert!(console_has(
        &f,
        &format!("lib/modules/{KVER} in the kernel-modules object leads out of it (to /lib/modules/{KVER}); not bound")
    ));
    assert!(!f.calls.iter().any(|c| c.contains("/sysroot/lib/modules")));
}

// ---- genboot.verify checks modes and owners ----

#[test]
fn verify_refuses_setuid_writable_or_foreign_owned_store_entries() {
    let bj = format!("{SYSROOT}{}/boot.json", gen());
    let km = format!("{SYSROOT}{}/lib/modules", kmods());
    // (entry, mode, owner, what the failure says)
    let cases = [
        (&bj, 0o4555, 0, "boot.json has mode 4555"),
        (&bj, 0o666, 0, "boot.json has mode 0666"),
        (&bj, 0o644, 0, "boot.json has mode 0644"),
        (&bj, 0o444, 1000, "boot.json is owned by uid 1000"),
        (&km, 0o1777, 0, "lib/modules/ has mode 1777"),
    ];
    for (path, mode, uid, says) in cases {
        let mut f = world(&cmdline("genboot.verify"));
        f.chmod(path, mode);
        f.chown(path, uid, 0);
        let f = fails_at(f, Step::Verify, says);
        assert!(console_has(&f, "has entries a store object must not have"));
    }
}

#[test]
fn verify_names_the_first_bad_entries_and_counts_the_rest() {
    let mut f = world(&cmdline("genboot.verify"));
    let d = format!("{SYSROOT}{}/lib/modules/{KVER}", kmods());
    for i in 0..5 {
        f.file(&format!("{d}/m{i}.ko"), b"x", ROOT);
    }
    fails_at(
        f,
        Step::Verify,
        &format!("lib/modules/{KVER}/m0.ko has mode 0644; lib/modules/{KVER}/m1.ko has mode 0644; lib/modules/{KVER}/m2.ko has mode 0644 and 2 more"),
    );
}

// ---- numbers read from disks and the command line ----

#[test]
fn a_gpt_entries_lba_that_overflows_is_a_damaged_disk_not_a_match() {
    // Issue 10, item 17: entries_lba * 512 overflowed (a panic with
    // overflow checks, else a wrap). 2^55 + 2 wraps to 1024, where the real
    // entries are: unchecked, this damaged GPT would still "match".
    let mut f = world(&format!(
        "root=PARTUUID={PARTUUID} genboot.timeout=1 init={}/init",
        gen()
    ));
    let mut disk = gpt_disk(1, ROOT_PARTUUID_ON_DISK);
    disk[512 + 72..512 + 80].copy_from_slice(&((1u64 << 55) + 2).to_le_bytes());
    f.file("/dev/vda", &disk, DEVTMPFS);
    let f = fails_at(f, Step::WaitRoot, "did not appear within 1 s");
    let note = "vda: the GPT header puts partition entry 1 past any disk (entries at LBA 36028797018963970, 128 bytes each); the GPT is damaged";
    let warning = format!("genboot-init: warning: {note}");
    let warned = f.console.iter().filter(|l| **l == warning).count();
    assert_eq!(warned, 1, "said once: {:#?}", f.console);
    assert!(console_has(&f, &format!("skipped: {note}")));
}

#[test]
fn an_absurd_logical_block_size_is_not_used_as_a_read_length() {
    let mut f = world(&format!(
        "root=PARTUUID={PARTUUID} genboot.timeout=1 init={}/init",
        gen()
    ));
    let lbs = "/sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda/queue/logical_block_size";
    f.file(lbs, b"1099511627776\n", SYSFS);
    let f = fails_at(f, Step::WaitRoot, "did not appear");
    assert!(console_has(
        &f,
        "vda: logical block size \"1099511627776\" is not a power of two from 512 to 65536"
    ));
}

#[test]
fn an_absurd_timeout_is_refused_at_the_cmdline_step() {
    fails_at(
        world(&cmdline("genboot.timeout=18446744073709552")),
        Step::Cmdline,
        "genboot.timeout=18446744073709552 is more than 86400 seconds",
    );
}

// ---- module loading: the sysfs walk only when a device can help ----

const CPU_MODALIAS: &str = "/sys/devices/system/cpu/modalias";
const CRC32C_INTEL_ALIAS: &str = "cpu:type:x86,ven*fam*mod*:feature:*0094*";
/// QEMU's TCG CPU: no SSE4.2 (feature 0094).
const CPU_WITHOUT_SSE42: &[u8] = b"cpu:type:x86,ven0000fam0006mod0006:feature:,0000,0001,0002\n";
const CPU_WITH_SSE42: &[u8] = b"cpu:type:x86,ven0000fam0006mod0006:feature:,0000,0001,0094\n";

/// `world`, its manifest changed by `edit` (written back to the initrd,
/// every module file present), and a CPU whose modalias lists features.
fn world_with(cmdline: &str, edit: impl FnOnce(&mut Manifest)) -> (FakeSys, Manifest) {
    let mut f = world(cmdline);
    let mut m =
        Manifest::parse(&String::from_utf8(f.read_file(manifest::PATH).unwrap()).unwrap()).unwrap();
    edit(&mut m);
    f.file(manifest::PATH, m.to_text().as_bytes(), INITRAMFS);
    for x in &m.modules {
        f.file(&x.path, b"module", INITRAMFS);
    }
    f.file(CPU_MODALIAS, CPU_WITHOUT_SSE42, SYSFS);
    (f, m)
}

/// crc32c_intel as the generic kernel's initrd has it: first in the
/// manifest, with its CPU-feature alias; ext4 after it.
fn with_crc32c_intel(m: &mut Manifest) {
    m.modules
        .insert(0, Module::new("crc32c_intel", &module_path("crc32c_intel")));
    m.modules[3].after = vec!["crc32c_intel".into()];
    m.aliases
        .push((CRC32C_INTEL_ALIAS.into(), "crc32c_intel".into()));
}

/// The modules and modalias steps alone, on `f`.
fn load_steps(f: &mut FakeSys, m: &Manifest) -> (Vec<ModName>, Vec<String>) {
    let mut boot = Boot::new(f);
    let (mut settled, mut failed) = (Vec::new(), Vec::new());
    boot.modules(m, &mut settled, &mut failed);
    boot.modalias(m, &mut settled, &failed);
    (settled, failed)
}

#[test]
fn a_module_only_for_cpu_features_this_cpu_lacks_is_not_loaded() {
    // crc32c_intel on QEMU's TCG CPU (no SSE4.2): its only device is the
    // CPU, which does not have the feature; its init would say ENODEV.
    let (mut f, m) = world_with(&cmdline(""), with_crc32c_intel);
    let (settled, failed) = load_steps(&mut f, &m);
    assert_eq!(
        f.calls,
        ["virtio_pci", "virtio_blk", "ext4"].map(|n| format!("load_module {}", module_path(n)))
    );
    // ext4 waited for nothing: crc32c_intel is not a job.
    assert_eq!(f.batches, [(1, vec![vec![], vec![], vec![]])]);
    assert!(f.listed.is_empty(), "sysfs was walked: {:?}", f.listed);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(settled.len(), 4, "{settled:?}");
    assert!(console_has(
        &f,
        &format!("module crc32c_intel: not loaded, this CPU has none of the features it is for ({CRC32C_INTEL_ALIAS})")
    ));
    assert!(console_has(
        &f,
        "modules: 3 of 4 loaded, 1 not for this CPU, 1 thread"
    ));
    assert!(console_has(&f, "modalias: skipped: every module is loaded"));
}

#[test]
fn a_cpu_with_the_feature_gets_the_module() {
    let (mut f, m) = world_with(&cmdline(""), with_crc32c_intel);
    f.file(CPU_MODALIAS, CPU_WITH_SSE42, SYSFS);
    load_steps(&mut f, &m);
    assert_eq!(
        f.calls[0],
        format!("load_module {}", module_path("crc32c_intel"))
    );
    assert!(console_has(&f, "modules: 4 of 4 loaded, 1 thread"));
}

#[test]
fn a_cpu_module_that_fails_is_tried_once_and_sysfs_is_not_walked() {
    // Without the CPU's modalias (or with the feature, failing anyway) the
    // module is loaded and says ENODEV. The CPU does not change: no walk,
    // no second try.
    for cpu in [None, Some(CPU_WITH_SSE42)] {
        let (mut f, m) = world_with(&cmdline(""), with_crc32c_intel);
        match cpu {
            None => drop(f.tree.remove(CPU_MODALIAS)),
            Some(c) => f.file(CPU_MODALIAS, c, SYSFS),
        }
        f.fail.push((
            format!("load_module {}", module_path("crc32c_intel")),
            libc::ENODEV,
        ));
        let (settled, failed) = load_steps(&mut f, &m);
        assert_eq!(
            f.calls,
            ["crc32c_intel", "virtio_pci", "virtio_blk", "ext4"]
                .map(|n| format!("load_module {}", module_path(n)))
        );
        assert!(f.listed.is_empty(), "sysfs was walked: {:?}", f.listed);
        assert_eq!(failed, ["crc32c_intel"]);
        assert_eq!(settled.len(), 4, "{settled:?}");
        assert!(console_has(&f, "did not load: No such device"));
        assert!(console_has(
            &f,
            "modalias: skipped: every module is loaded or failed in a way no device can change (crc32c_intel)"
        ));
    }
}

#[test]
fn no_walk_while_waiting_for_the_root_when_no_device_can_help() {
    // The regression: the modalias step and every 0.5 s of the root wait
    // walked sysfs because crc32c_intel stayed unloaded.
    let (mut f, _) = world_with(
        &format!(
            "root=PARTUUID=00000000-0000-4000-8000-00000000dead genboot.timeout=2 init={}/init",
            gen()
        ),
        with_crc32c_intel,
    );
    f.tree.remove(CPU_MODALIAS);
    f.fail.push((
        format!("load_module {}", module_path("crc32c_intel")),
        libc::ENODEV,
    ));
    let f = fails_at(f, Step::WaitRoot, "did not appear within 2 s");
    let walks = f.listed.iter().filter(|d| *d == "/sys/devices").count();
    assert_eq!(walks, 0, "sysfs walked {walks} times");
    let loads = f
        .calls
        .iter()
        .filter(|c| c.contains("crc32c_intel"))
        .count();
    assert_eq!(loads, 1);
}

#[test]
fn a_driver_without_its_device_yet_is_retried_once_by_the_walk() {
    // A PCI driver whose init said ENODEV: its device may show up (here it
    // is there at the walk), so the walk runs once and loads it again; the
    // next passes (the root wait's) neither walk nor load.
    let (mut f, m) = world_with(&cmdline(""), |m| {
        m.modules
            .push(Module::new("late_pci", &module_path("late_pci")));
        m.aliases.push((
            "pci:v00001AF4d00001001sv*sd*bc*sc*i*".into(),
            "late_pci".into(),
        ));
    });
    let late = format!("load_module {}", module_path("late_pci"));
    f.fail.push((late.clone(), libc::ENODEV));
    load_steps(&mut f, &m);
    let mut expected: Vec<String> = ["virtio_pci", "virtio_blk", "ext4", "late_pci"]
        .map(|n| format!("load_module {}", module_path(n)))
        .to_vec();
    expected.push(late.clone());
    assert_eq!(f.calls, expected);
    assert_eq!(
        f.listed.first().map(String::as_str),
        Some("/sys/devices"),
        "{:?}",
        f.listed
    );
    // One walk: /sys/devices listed once.
    assert_eq!(f.listed.iter().filter(|d| *d == "/sys/devices").count(), 1);
    assert!(console_has(
        &f,
        "warning: module late_pci for pci:v00001AF4d00001001"
    ));
    assert!(console_has(&f, "modalias: nothing new"));
    // Later passes: nothing to look for.
    let mut boot = Boot::new(&mut f);
    let mut settled: Vec<ModName> = ["virtio_pci", "virtio_blk", "ext4", "late_pci"]
        .map(ModName::new)
        .to_vec();
    let (calls, listed) = (boot.sys.calls.len(), boot.sys.listed.len());
    assert!(boot.modalias_pass(&m, &mut settled).is_empty());
    assert_eq!((f.calls.len(), f.listed.len()), (calls, listed));
}

#[test]
fn a_module_failing_for_another_reason_is_not_retried() {
    // A bad format or a rejected signature comes back the same: no walk,
    // although virtio_blk's device is there.
    let (mut f, m) = world_with(&cmdline(""), |_| {});
    f.fail.push((
        format!("load_module {}", module_path("virtio_blk")),
        libc::ENOEXEC,
    ));
    let (_, failed) = load_steps(&mut f, &m);
    assert_eq!(failed, ["virtio_blk"]);
    assert_eq!(f.calls.len(), 3, "{:#?}", f.calls);
    assert!(f.listed.is_empty(), "{:?}", f.listed);
    assert!(console_has(&f, "modalias: skipped"));
}

#[test]
fn modules_load_on_one_thread_per_cpu_up_to_four_in_the_manifests_order() {
    for (cpus, threads, says) in [
        (1, 1, "1 thread"),
        (2, 2, "2 threads"),
        (64, 4, "4 threads"),
    ] {
        let (mut f, m) = world_with(&cmdline(""), with_crc32c_intel);
        f.file(CPU_MODALIAS, CPU_WITH_SSE42, SYSFS);
        f.cpus = cpus;
        load_steps(&mut f, &m);
        // crc32c_intel, virtio_pci, virtio_blk, ext4 (after crc32c_intel).
        assert_eq!(
            f.batches,
            [(threads, vec![vec![], vec![], vec![], vec![0]])]
        );
        assert!(
            console_has(&f, &format!("modules: 4 of 4 loaded, {says}")),
            "{:#?}",
            f.console
        );
    }
}

#[test]
fn failures_are_said_in_manifest_order_and_each_load_is_timed() {
    let (mut f, _) = world_with(&cmdline(""), with_crc32c_intel);
    f.file(CPU_MODALIAS, CPU_WITH_SSE42, SYSFS);
    f.cpus = 2;
    for n in ["ext4", "crc32c_intel"] {
        f.fail
            .push((format!("load_module {}", module_path(n)), libc::ENODEV));
    }
    assert!(matches!(run(&mut f), Outcome::Exec(_)));
    let warnings: Vec<&String> = f
        .console
        .iter()
        .filter(|l| l.contains("did not load"))
        .collect();
    assert_eq!(warnings.len(), 2);
    assert!(warnings[0].contains("module crc32c_intel "), "{warnings:?}");
    assert!(warnings[1].contains("module ext4 "), "{warnings:?}");
    let text = String::from_utf8(f.read_file(TIMINGS).unwrap()).unwrap();
    let v = json::parse(&text).unwrap();
    let json::Value::Array(mods) = v.get("modules").unwrap() else {
        panic!("{text}")
    };
    let names: Vec<(&str, bool)> = mods
        .iter()
        .map(|x| {
            let loaded = matches!(x.get("loaded"), Some(json::Value::Bool(true)));
            (x.get("module").unwrap().as_str().unwrap(), loaded)
        })
        .collect();
    assert_eq!(
        names,
        [
            ("crc32c_intel", false),
            ("virtio_pci", true),
            ("virtio_blk", true),
            ("ext4", false)
        ]
    );
}

#[test]
fn a_module_with_devices_beyond_the_cpu_is_loaded_whatever_the_cpu() {
    let (mut f, m) = world_with(&cmdline(""), |m| {
        with_crc32c_intel(m);
        m.aliases.push((
            "pci:v00008086d*sv*sd*bc*sc*i*".into(),
            "crc32c_intel".into(),
        ));
    });
    load_steps(&mut f, &m);
    assert_eq!(
        f.calls[0],
        format!("load_module {}", module_path("crc32c_intel"))
    );
    assert!(!console_has(&f, "not for this CPU"));
}

/// A generation with a whole-system tree.
mod whole_system;
