//! genboot-init booted for real: Debian kernels under QEMU (TCG, direct
//! `-kernel/-initrd`), a GPT disk whose ext4 root holds a store made by the
//! real `genboot build`, and a busybox stage 2. Each boot has a timeout; the
//! console log of every boot is kept in `target/test-logs/activator-*.log`.
//!
//! Needs: `tools/fetch-kernels` (or GENBOOT_KERNEL_CACHE), `tools/build-activator`
//! (or GENBOOT_ACTIVATOR), and qemu-system-x86, busybox-static, gdisk,
//! e2fsprogs, kmod, cpio, zstd (`tools/install-deps`).

use crate::support::vm::{self, Opts};
use crate::support::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

const PARTUUID: &str = "6e6f6f74-0000-4000-8000-000000000002";
const FS_UUID: &str = "6e6f6f74-f5f5-4e4e-8a8a-000000000001";
const LABEL: &str = "genboot-root";
/// A module that is not in any initrd here: stage 2 loads it with `modprobe`.
/// It depends on `fat`, so stage 2's modules.dep is used.
const STAGE2_MODULE: &str = "vfat";
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// Time for a shell on the console to answer a typed command.
const SHELL_TIMEOUT: Duration = Duration::from_secs(60);

/// One QEMU at a time: the machine has 2 cores shared by everyone.
static QEMU_LOCK: Mutex<()> = Mutex::new(());

/// A bootable test system for one kernel.
struct System {
    kernel: Kernel,
    /// GPT disk image with the ext4 root.
    disk: PathBuf,
    /// The ext4 root alone (for tampering).
    root_fs: PathBuf,
    initrd: PathBuf,
    /// The generation as the booted system sees it.
    generation: String,
    work: PathBuf,
}

/// The modules the initrd must load for a virtio disk with ext4.
fn initrd_modules(k: &Kernel) -> Vec<&'static str> {
    if k.package == GENERIC {
        vec!["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"]
    } else {
        vec!["virtio_pci", "virtio_blk"]
    }
}

/// The stage-2 tree: busybox, an init script that prints markers and loads
/// a module the initrd does not have. Shaped like stock Debian where links
/// matter: `/sbin -> usr/sbin` (relative) and `/usr/sbin/init ->
/// /lib/genboot-test/init` (absolute, as Debian's `/usr/sbin/init ->
/// /lib/systemd/systemd`); and harsher than Debian, `/lib -> /usr/lib`
/// (absolute), so the generation's modules are bound onto `/usr/lib/modules`
/// only if genboot-init resolves the root's links inside the root.
/// `openssl passwd -6 -salt genboote2e genboot`, as tools/debian-root.
const ROOT_HASH: &str = "$6$genboote2e$uXvS76hDMbDRUrdWZ.V7laT1eKXzhMlfZWHDzJYe9voTXyQCumGSyWSv33PaMZImm5BlgQ9GOswhM5ugaNiy8/";

fn write_stage2(root: &Path) {
    use std::os::unix::fs::symlink;
    for d in [
        "bin",
        "usr/sbin",
        "usr/lib/modules",
        "usr/lib/genboot-test",
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "etc",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    symlink("usr/sbin", root.join("sbin")).unwrap();
    symlink("/usr/lib", root.join("lib")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("/bin/busybox (apt: busybox-static)");
    for applet in [
        "sh", "cat", "echo", "grep", "ls", "mount", "uname", "sleep", "sync", "head", "cut",
    ] {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    for applet in ["modprobe", "lsmod", "reboot", "poweroff", "sulogin"] {
        symlink("../../bin/busybox", root.join("usr/sbin").join(applet)).unwrap();
    }
    // root's password is "genboot" (the recovery entry's sulogin asks for it).
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(
        root.join("etc/shadow"),
        format!("root:{ROOT_HASH}:19000:0:99999:7:::\n"),
    )
    .unwrap();
    let init = format!(
        r#"#!/bin/sh
export PATH=/bin:/sbin
echo "STAGE2-MARKER pid=$$ booted=$(cat /run/genboot/booted) args=$*"
if modprobe {m} && grep -q '^{m} ' /proc/modules && grep -q '^fat ' /proc/modules; then
  echo "STAGE2-MODPROBE-OK {m}"
else
  echo "STAGE2-MODPROBE-FAILED {m}"; ls -l /lib/modules /lib/modules/*
fi
echo "STAGE2-MODULES-MOUNT $(grep " /usr/lib/modules/$(uname -r) " /proc/mounts | cut -d' ' -f4 | cut -d, -f1)"
cat /run/genboot/timings.json
echo STAGE2-DONE
sync
reboot -f
"#,
        m = STAGE2_MODULE
    );
    let script = root.join("usr/lib/genboot-test/init");
    std::fs::write(&script, init).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    symlink("/lib/genboot-test/init", root.join("usr/sbin/init")).unwrap();
}

fn make_system(k: &Kernel) -> System {
    for (tool, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("sgdisk", "gdisk"),
        ("mke2fs", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("busybox", "busybox-static"),
    ] {
        require_tool(tool, package);
    }
    let work = repo().join("target/activator-work").join(&k.release);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let staging = work.join("root");
    write_stage2(&staging);
    let cfg = write_config(&work.join("cfg"), k, &initrd_modules(k), "");
    let built = genboot()
        .env("GENBOOT_ACTIVATOR", activator())
        .arg("--root")
        .arg(&staging)
        .args(["build", "--config"])
        .arg(&cfg)
        .output()
        .expect("genboot runs");
    let gen_host = PathBuf::from(ok(built).trim());
    // `genboot build` writes the whole generation: initrd (with this
    // activator as /init) and kernel-modules objects included.
    for part in ["initrd", "kernel-modules", "kernel", "init", "boot.json"] {
        assert!(
            gen_host.join(part).symlink_metadata().is_ok(),
            "genboot build made no {part} in {}",
            gen_host.display()
        );
    }
    let base = gen_host.file_name().unwrap().to_string_lossy().into_owned();
    let generation = format!("/var/lib/genboot/store/{base}");
    let initrd = gen_host.join("initrd");
    // The root file system and the GPT disk around it.
    // Sized to what the tree needs: the kernel-modules object may be a whole
    // distribution module tree (hundreds of MiB).
    let used_kib: u64 = run_ok(Command::new("du").arg("-sk").arg(&staging))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let fs_mib = used_kib * 5 / 4 / 1024 + 48;
    let root_fs = work.join("root.ext4");
    run_ok(
        Command::new("mke2fs")
            .args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-U",
                FS_UUID,
                "-L",
                LABEL,
                "-E",
                "root_owner=0:0",
                "-d",
            ])
            .arg(&staging)
            .arg(&root_fs)
            .arg(format!("{fs_mib}M")),
    );
    let disk = work.join("disk.img");
    let f = std::fs::File::create(&disk).unwrap();
    f.set_len((fs_mib + 2) * 1024 * 1024).unwrap();
    drop(f);
    run_ok(
        Command::new("sgdisk")
            .arg("-n")
            .arg(format!("1:2048:+{fs_mib}M"))
            .args(["-t", "1:8304", "-u"])
            .arg(format!("1:{PARTUUID}"))
            .args(["-c", "1:root"])
            .arg(&disk),
    );
    splice(&root_fs, &disk);
    run_ok(Command::new("sgdisk").arg("-v").arg(&disk));
    System {
        kernel: k.clone(),
        disk,
        root_fs,
        initrd,
        generation,
        work,
    }
}

/// Write an ext4 image into partition 1 (sector 2048).
fn splice(fs: &Path, disk: &Path) {
    run_ok(
        Command::new("dd")
            .arg(format!("if={}", fs.display()))
            .arg(format!("of={}", disk.display()))
            .args(["bs=1M", "seek=1", "conv=notrunc", "status=none"]),
    );
}

fn system(package: &str) -> &'static System {
    static GENERIC_SYS: OnceLock<System> = OnceLock::new();
    static CLOUD_SYS: OnceLock<System> = OnceLock::new();
    let cell = if package == GENERIC {
        &GENERIC_SYS
    } else {
        &CLOUD_SYS
    };
    cell.get_or_init(|| {
        // Not while a VM runs: building competes with it for the CPU and
        // would inflate the boot times it measures.
        let _lock = QEMU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        make_system(&kernel(package))
    })
}

/// A direct boot of a test system; one at a time, since the boot times are
/// measured.
struct Vm {
    inner: vm::Vm,
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl std::ops::Deref for Vm {
    type Target = vm::Vm;
    fn deref(&self) -> &vm::Vm {
        &self.inner
    }
}

impl std::ops::DerefMut for Vm {
    fn deref_mut(&mut self) -> &mut vm::Vm {
        &mut self.inner
    }
}

impl Vm {
    fn boot(name: &str, s: &System, disk: &Path, append: &str) -> Vm {
        let lock = QEMU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let name = format!("activator-{name}");
        let opts = Opts::direct(&name, &s.kernel.image, &s.initrd, append, BOOT_TIMEOUT);
        Vm {
            inner: vm::Vm::start(opts.disk(disk)),
            _lock: lock,
        }
    }

    /// Wait for `needle` on the console (after what earlier waits read).
    #[track_caller]
    fn expect(&mut self, needle: &str) -> String {
        self.inner.wait_for(needle, BOOT_TIMEOUT)
    }

    /// Type a shell command until the shell answers with `answer`.
    #[track_caller]
    fn ask(&mut self, command: &str, answer: &str) -> String {
        self.inner
            .send_until(&format!("{command}\n"), answer, SHELL_TIMEOUT)
    }

    /// The time of genboot-init's first step (mount-api), in seconds.
    fn first_step_seconds(&self) -> f64 {
        let t = self.console();
        let key = "genboot-init: [";
        let at = t.find(key).expect("genboot-init logs its steps") + key.len();
        t[at..].split(']').next().unwrap().trim().parse().unwrap()
    }

    /// genboot-init's "kernel start to stage 2" figure, in seconds.
    fn stage2_seconds(&self) -> String {
        let t = self.console();
        let key = "kernel start to stage 2: ";
        let at = t
            .find(key)
            .expect("genboot-init prints its time to stage 2")
            + key.len();
        t[at..].split_whitespace().next().unwrap().to_string()
    }
}

/// A private copy of the system's disk for one boot.
fn disk_copy(s: &System, name: &str) -> PathBuf {
    let p = s.work.join(format!("disk-{name}.img"));
    std::fs::copy(&s.disk, &p).unwrap();
    p
}

/// Record the boot's figures, one tab-separated line in
/// target/test-logs/activator-timings.tsv (read by `tools/bench-activator`),
/// and print them.
fn report(name: &str, s: &System, vm: &Vm) {
    let initrd = std::fs::metadata(&s.initrd).unwrap().len();
    let init = std::fs::metadata(activator()).unwrap().len();
    let stage2 = vm.stage2_seconds();
    let in_init = vm.stage2_seconds().parse::<f64>().unwrap() - vm.first_step_seconds();
    let source = "genboot build";
    println!(
        "{name}: kernel {}: kernel start to stage-2 exec {stage2} s, of which genboot-init {in_init:.3} s; initrd {initrd} bytes ({source}); genboot-init {init} bytes",
        s.kernel.release
    );
    let line = format!(
        "{name}\t{}\t{stage2}\t{in_init:.6}\t{initrd}\t{init}\t{source}\n",
        s.kernel.release
    );
    let p = repo().join("target/test-logs/activator-timings.tsv");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .unwrap();
    f.write_all(line.as_bytes()).unwrap();
}

/// Boot to stage 2 with `root`, check the marker and stage 2's modprobe.
fn boots_to_stage2(name: &str, package: &str, root: &str, extra: &str) {
    let s = system(package);
    let disk = disk_copy(s, name);
    let append = format!(
        "root={root} rw init={}/init {extra} -- stage2-arg",
        s.generation
    );
    let mut vm = Vm::boot(name, s, &disk, &append);
    vm.expect("genboot-init");
    // Every initrd module is loaded or not for this CPU (crc32c_intel on
    // TCG's, which lacks SSE4.2): sysfs is not walked.
    vm.expect("modalias: skipped: every module is loaded");
    vm.expect(&format!(
        "STAGE2-MARKER pid=1 booted={} args=stage2-arg",
        s.generation
    ));
    vm.expect(&format!("STAGE2-MODPROBE-OK {STAGE2_MODULE}"));
    // The generation's modules are bound read-only; the timings are recorded.
    vm.expect("STAGE2-MODULES-MOUNT ro");
    vm.expect("{\"step\": \"exec\", \"us\": ");
    vm.expect("STAGE2-DONE");
    vm.wait_exit(BOOT_TIMEOUT);
    report(name, s, &vm);
}

#[test]
fn generic_kernel_finds_root_by_partuuid() {
    boots_to_stage2(
        "generic-partuuid",
        GENERIC,
        &format!("PARTUUID={PARTUUID}"),
        "",
    );
}

#[test]
fn generic_kernel_finds_root_by_uuid() {
    boots_to_stage2(
        "generic-uuid",
        GENERIC,
        &format!("UUID={FS_UUID}"),
        "rootfstype=ext4",
    );
}

#[test]
fn generic_kernel_finds_root_by_label() {
    boots_to_stage2("generic-label", GENERIC, &format!("LABEL={LABEL}"), "");
}

#[test]
fn cloud_kernel_finds_root_by_partuuid() {
    boots_to_stage2("cloud-partuuid", CLOUD, &format!("PARTUUID={PARTUUID}"), "");
}

#[test]
fn cloud_kernel_finds_root_by_uuid() {
    boots_to_stage2("cloud-uuid", CLOUD, &format!("UUID={FS_UUID}"), "");
}

#[test]
/// Also re-hashes the generation and its kernel-modules object (the whole
/// module tree: about 11 s for the cloud kernel's 91 MiB,
/// 80 s for the generic kernel's 390 MiB under TCG).
fn cloud_kernel_finds_root_by_label_and_verifies() {
    boots_to_stage2(
        "cloud-label-verify",
        CLOUD,
        &format!("LABEL={LABEL}"),
        "genboot.verify",
    );
}

#[test]
fn recovery_asks_for_roots_password_then_gives_a_shell_then_boots() {
    let s = system(CLOUD);
    let disk = disk_copy(s, "recovery");
    let append = format!(
        "root=PARTUUID={PARTUUID} rw init={}/init genboot.recovery",
        s.generation
    );
    let mut vm = Vm::boot("recovery", s, &disk, &append);
    vm.expect("*** genboot recovery ***");
    vm.expect("mount the ESP:");
    // The root's sulogin (busybox's here) asks for root's password; a
    // wrong one gives no shell.
    vm.expect("Give root password");
    vm.inner.send(b"wrong\n");
    vm.expect("Login incorrect");
    vm.expect("Give root password");
    vm.inner.send(b"genboot\n");
    let seen = vm.ask(
        "echo RECOVERY-$((6*7)) $(grep ' / ' /proc/mounts | grep -c ' ro,')",
        "RECOVERY-42 ",
    );
    // 42, and the root is mounted read-only.
    assert!(
        seen.contains("RECOVERY-42 1\n"),
        "the root should be mounted read-only:\n{seen}"
    );
    // Leaving the shell continues the boot: stage 2's init as PID 1.
    vm.inner.send(b"exit\n");
    vm.expect("recovery: /usr/sbin/sulogin exited; continuing the boot");
    vm.expect("STAGE2-MARKER pid=1");
    vm.wait_exit(BOOT_TIMEOUT);
    report("recovery", s, &vm);
}

#[test]
fn missing_root_device_times_out_says_so_and_reboots() {
    let s = system(CLOUD);
    let disk = disk_copy(s, "missing-root");
    let append = format!(
        "root=PARTUUID=00000000-0000-4000-8000-0000000dead0 genboot.timeout=3 init={}/init",
        s.generation
    );
    let mut vm = Vm::boot("missing-root", s, &disk, &append);
    vm.expect("FAILED at step wait-root: root device PARTUUID=00000000-0000-4000-8000-0000000dead0 did not appear within 3 s");
    vm.expect("hint: block devices seen: vda vda1");
    vm.expect("rebooting in 5 s");
    vm.wait_exit(BOOT_TIMEOUT);
    assert!(!vm.console().contains("STAGE2-MARKER"));
}

#[test]
fn wrong_init_says_so_and_reboots() {
    let s = system(CLOUD);
    let disk = disk_copy(s, "wrong-init");
    let append = format!("root=LABEL={LABEL} init=/sbin/init");
    let mut vm = Vm::boot("wrong-init", s, &disk, &append);
    vm.expect("FAILED at step generation: init=/sbin/init is not a generation's init");
    vm.expect("rebooting in 5 s");
    vm.wait_exit(BOOT_TIMEOUT);
    assert!(!vm.console().contains("STAGE2-MARKER"));
}

#[test]
fn tampered_generation_is_refused_with_verify() {
    let s = system(CLOUD);
    // Change one byte of the generation's boot.json (still valid JSON, same
    // kernel): only re-hashing can notice.
    let base = s.generation.rsplit('/').next().unwrap();
    let rel = format!("var/lib/genboot/store/{base}/boot.json");
    let staged = s.work.join("root").join(&rel);
    let text = std::fs::read_to_string(&staged).unwrap();
    let tampered = text.replacen("Test system", "Test systen", 1);
    assert_ne!(text, tampered);
    let file = s.work.join("tampered-boot.json");
    std::fs::write(&file, tampered).unwrap();
    let fs = s.work.join("tampered.ext4");
    std::fs::copy(&s.root_fs, &fs).unwrap();
    let cmds = s.work.join("tamper.debugfs");
    std::fs::write(
        &cmds,
        format!("rm /{rel}\nwrite {} /{rel}\n", file.display()),
    )
    .unwrap();
    run_ok(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&cmds)
            .arg(&fs),
    );
    let disk = disk_copy(s, "tampered");
    splice(&fs, &disk);
    let append = format!(
        "root=LABEL={LABEL} init={}/init genboot.verify",
        s.generation
    );
    let mut vm = Vm::boot("tampered", s, &disk, &append);
    vm.expect(&format!(
        "FAILED at step verify: {} was changed",
        s.generation
    ));
    vm.expect("rebooting in 5 s");
    vm.wait_exit(BOOT_TIMEOUT);
    assert!(!vm.console().contains("STAGE2-MARKER"));
}

#[test]
fn debug_prints_the_mount_table_and_gives_the_roots_shell() {
    let s = system(CLOUD);
    let disk = disk_copy(s, "debug");
    let append = format!(
        "root=LABEL={LABEL} rw init={}/init genboot.debug",
        s.generation
    );
    let mut vm = Vm::boot("debug", s, &disk, &append);
    vm.expect("genboot.debug: stopped before switching root. Mount table:");
    vm.expect(" /sysroot rw,");
    vm.expect("starting the root's /bin/sh");
    vm.ask("echo DEBUG-$((40+2))", "DEBUG-42");
    vm.send(b"exit\n");
    vm.expect("rebooting in 5 s");
    vm.wait_exit(BOOT_TIMEOUT);
    assert!(!vm.console().contains("STAGE2-MARKER"));
}

#[test]
fn shell_on_fail_gives_the_roots_shell_then_reboots() {
    let s = system(CLOUD);
    let disk = disk_copy(s, "shell-on-fail");
    let missing = format!(
        "/var/lib/genboot/store/{}-genboot-system-{}",
        "0".repeat(32),
        s.kernel.release
    );
    let append = format!("root=LABEL={LABEL} init={missing}/init genboot.shell_on_fail");
    let mut vm = Vm::boot("shell-on-fail", s, &disk, &append);
    vm.expect(&format!(
        "FAILED at step generation: generation {missing} is not on the root file system"
    ));
    vm.expect("genboot.shell_on_fail: starting /bin/sh (root /sysroot)");
    vm.ask(
        "ls /var/lib/genboot/store | grep -c genboot-system; echo SHELL-$((3*3))",
        "SHELL-9",
    );
    vm.send(b"exit\n");
    vm.expect("rebooting in 5 s");
    vm.wait_exit(BOOT_TIMEOUT);
}
