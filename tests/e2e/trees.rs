//! Whole-system generations booted for real (issue 15): Debian 12 trees
//! with systemd as PID 1, built by `[tree] source = "mmdebstrap"` from the
//! local package repository (genboot itself installed in them from its
//! `.deb`), booted under QEMU + OVMF + systemd-boot on Debian's 6.1 and
//! 6.12 kernels. One sequence of boots per kernel:
//!
//! Every boot has `genboot.verify`: genboot-init checks the tree's image
//! against boot.json before it mounts it.
//!
//! 1. generation 1 reaches `multi-user.target` with no failed unit; `/usr`
//!    is read-only, `/etc` and `/var` writable; `genboot status` names the
//!    booted generation and the ESP. The admin edits a conffile
//!    (`/etc/issue`), adds a user and writes to `/var`.
//! 2. From outside, on the image's root partition: `genboot switch` to
//!    generation 2 (adds nginx-light and chrony, whose postinst makes the
//!    system user `_chrony`). It boots by itself: nginx answers, the edit
//!    and the user survived, `_chrony` exists, dpkg's database is the
//!    image's.
//! 3. Generation 1 picked in the menu: nginx and its package are gone, the
//!    machine-id and SSH host key are the same, generation 2's file in
//!    `/var` is there. `genboot rollback` in it; the next boot, with no key
//!    pressed, is generation 1 again.
//! 4. The recovery entry (the current generation's, 1) asks for root's
//!    password and gives a shell in that generation's tree.
//! 5. Generation 3, whose tree has no systemd, fails in genboot-init at
//!    every try; systemd-boot's boot counting falls back to generation 2 by
//!    itself. Bless is from stage 2: `genboot-bless.service` from genboot's
//!    `.deb` in the tree, after `boot-complete.target` (checked at boot 1).

use crate::support::{self, debian, run_ok, scenario::*, vm::Vm};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What a scenario's trees are built from: the kernel package instead of
/// the base list's `linux-image-amd64`, and the `uname -r` prefix it boots.
struct Kernel {
    package: &'static str,
    release_prefix: &'static str,
}

const K61: Kernel = Kernel {
    package: "linux-image-amd64",
    release_prefix: "6.1.",
};
const K612: Kernel = Kernel {
    package: "linux-image-6.12-amd64",
    release_prefix: "6.12.",
};

/// Every boot's stage-2 commands (sourced by the test agent of
/// `tools/debian-root` after its report), by boot number, which it keeps
/// in `/var` (the root partition's, so it counts across generations).
const STAGE2: &str = r#"mkdir -p /var/lib/genboot-e2e
n=$(( $(cat /var/lib/genboot-e2e/boot 2>/dev/null || echo 0) + 1 ))
echo $n > /var/lib/genboot-e2e/boot
say() { sed "s/^/GENBOOT-E2E $1: /"; }
mode() { if touch "$1/.genboot-e2e" 2>/dev/null; then rm -f "$1/.genboot-e2e"; echo rw; else echo ro; fi; }
echo "GENBOOT-E2E boot=$n"
echo "GENBOOT-E2E mode=/usr:$(mode /usr) /etc:$(mode /etc) /var:$(mode /var) /home:$(mode /home)"
genboot status 2>&1 | say status
echo "GENBOOT-E2E machine-id=$(cat /etc/machine-id)"
echo "GENBOOT-E2E hostkey=$(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub 2>&1)"
echo "GENBOOT-E2E nginx=$(dpkg-query -W -f '${db:Status-Abbrev}' nginx-light 2>/dev/null | tr -d ' ')/$(test -e /usr/sbin/nginx && echo file || echo nofile)/$(systemctl is-active nginx 2>&1)"
if [ -e /usr/sbin/nginx ]; then
  bash -c 'exec 3<>/dev/tcp/127.0.0.1/80 && printf "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 && head -n 1 <&3' 2>&1 | tr -d '\r' | say http
fi
# Files dpkg's path-exclude left out (man pages, docs) are "missing" by design.
for p in nginx-light chrony systemd openssh-server; do
  [ "$(dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null)" = "ii " ] && dpkg --verify "$p" 2>&1
done | grep -vE ' c /etc/| /usr/share/(man|doc|info|locale)/' | say verify
echo "GENBOOT-E2E issue=$(grep -c 'edited in generation 1' /etc/issue)"
getent passwd alice _chrony | cut -d: -f1,3 | say user
ls /var/lib/genboot-e2e | say var
for u in genboot-bless genboot-ssh-keygen ssh; do
  echo "GENBOOT-E2E unit: $u $(systemctl is-active $u.service) $(systemctl show -P Result $u.service)"
done
case $n in
1)
  echo 'edited in generation 1' >> /etc/issue
  useradd -m -u 1500 alice
  echo gen1 > /var/lib/genboot-e2e/written-in-1
  ;;
2)
  echo gen2 > /var/lib/genboot-e2e/written-in-2
  ;;
3)
  genboot rollback 2>&1 | say rollback
  ;;
esac
ls /efi/loader/entries 2>&1 | say entry
"#;

/// The customize hook of every tree: the test root's additions
/// (`tools/debian-root --customize`: root's password, the agent, the
/// serial console) and this file's stage-2 commands.
fn hook(dir: &Path, extra: &str) -> PathBuf {
    let stage2 = dir.join("stage2.sh");
    std::fs::write(&stage2, STAGE2).unwrap();
    let name = if extra.is_empty() {
        "hook"
    } else {
        "hook-broken"
    };
    let hook = dir.join(name);
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -e\n{} --customize \"$1\"\ninstall -m 0644 {} \"$1/etc/genboot-e2e/stage2.sh\"\n{extra}",
            support::repo().join("tools/debian-root").display(),
            stage2.display()
        ),
    )
    .unwrap();
    run_ok(Command::new("chmod").arg("0755").arg(&hook));
    hook
}

/// A system.toml of a tree of the base packages with `kernel`, openssh
/// and genboot, plus `extra`; `hook` customizes it.
fn config(dir: &Path, name: &str, kernel: &Kernel, extra: &[&str], hook: &Path) -> PathBuf {
    let mirror = debian::mirror();
    let resolved = std::fs::read_to_string(mirror.join("resolved")).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run tools/deb-cache (tools/install-deps does)",
            mirror.display()
        )
    });
    let mut packages: Vec<String> = resolved
        .lines()
        .filter_map(|l| l.strip_prefix("base "))
        .filter_map(|l| l.split(' ').next())
        .filter(|p| *p != "linux-image-amd64")
        .map(str::to_string)
        .collect();
    for p in [
        kernel.package,
        "genboot-test-no-initramfs",
        "openssh-server",
        "genboot",
    ]
    .iter()
    .chain(extra)
    {
        packages.push(p.to_string());
    }
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        r#"[kernel]
params = ["console=ttyS0", "genboot.verify"]

[initrd]
modules = ["virtio_blk", "virtio_pci", "ext4"]

[root]
device = "PARTUUID=6e6f6f74-0000-4000-8000-000000000002"

[system]
label = "Debian tree"
init = "/sbin/init"

[boot]
tries = 3
timeout = 4

[tree]
source = "mmdebstrap"
suite = "bookworm"
mirror = ["deb [trusted=yes] file://{mirror} bookworm main", "deb [trusted=yes] file://{repo} ./"]
packages = [{packages}]
customize = [{hook:?}]
dpkgopts = ["force-unsafe-io", "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/info/*", "path-exclude=/usr/share/locale/*", "path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright"]
source_date_epoch = 1735689600
"#,
        mirror = mirror.display(),
        repo = dir.join("genboot-repo").display(),
        packages = list(&packages),
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// `genboot ARGS` with the image's root partition mounted as `--root` and
/// its ESP written through `--image`: how a machine's disk is changed from
/// outside (the switch the running system would make).
fn on_the_image(s: &Scenario, args: &[&str]) -> String {
    let mnt = s.dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let offset = debian::root_offset(&s.image);
    run_ok(
        Command::new("mount")
            .arg("-o")
            .arg(format!("loop,offset={offset}"))
            .arg(&s.image)
            .arg(&mnt),
    );
    let out = support::genboot()
        .arg("--root")
        .arg(&mnt)
        .arg("--image")
        .arg(&s.image)
        .args(args)
        .output()
        .expect("genboot runs");
    run_ok(Command::new("umount").arg(&mnt));
    assert!(
        out.status.success(),
        "genboot {args:?} on the image's root partition failed:\n{}{}",
        support::stdout(&out),
        support::stderr(&out)
    );
    format!("{}{}", support::stdout(&out), support::stderr(&out))
}

/// The generation the store path in `/run/genboot/booted` names, and the
/// agent's report; fails unless it is `want` on `kernel`, systemd running
/// with no failed unit.
fn booted(vm: &mut Vm, want: &str, kernel: &Kernel, what: &str) -> debian::Report {
    let b = vm.expect_boot_within(debian::BOOT);
    if b.generation != want || !b.kernel.starts_with(kernel.release_prefix) {
        vm.fail(&format!(
            "{what}: {want} on a {}* kernel should boot; {} on {} came up",
            kernel.release_prefix, b.generation, b.kernel
        ));
    }
    if b.modprobe != "ok" {
        vm.fail(&format!(
            "{what}: modprobe outside the initrd: {}",
            b.modprobe
        ));
    }
    let r = debian::read_report(vm);
    debian::expect_running(vm, &r, what);
    r
}

/// `name=value` of the report's stage-2 lines (one expected).
fn value(r: &debian::Report, name: &str) -> String {
    r.lines(&format!("{name}=")).concat()
}

fn expect(vm: &mut Vm, r: &debian::Report, name: &str, want: &str, what: &str) {
    let got = value(r, name);
    if got != want {
        vm.fail(&format!(
            "{what}: {name} should be {want:?}, is {got:?}; stage 2 said:\n{}",
            r.stage2.join("\n")
        ));
    }
}

fn expect_lines(vm: &mut Vm, r: &debian::Report, prefix: &str, want: &[&str], what: &str) {
    let got = r.lines(prefix);
    if got != want {
        vm.fail(&format!(
            "{what}: `{prefix}` lines should be {want:?}, are {got:?}; stage 2 said:\n{}",
            r.stage2.join("\n")
        ));
    }
}

fn unit(r: &debian::Report, name: &str) -> String {
    r.lines("unit: ")
        .into_iter()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string))
        .unwrap_or_default()
}

fn whole_system(name: &str, kernel: Kernel) {
    let started = Instant::now();
    // The root partition holds genboot's state only: every generation
    // brings its own system.
    let s = Scenario::with_tree(name, Duration::from_secs(3600), |tree| {
        std::fs::create_dir_all(tree).unwrap();
    });
    require_tools();
    debian::genboot_flat_repo(&s.dir.join("genboot-repo"));
    let good = hook(&s.dir, "");
    let broken = hook(&s.dir, "rm -f \"$1/usr/lib/systemd/systemd\"\n");
    let g1 = config(&s.dir, "gen1", &kernel, &[], &good);
    let g2 = config(&s.dir, "gen2", &kernel, &["nginx-light", "chrony"], &good);
    let g3 = config(&s.dir, "gen3", &kernel, &[], &broken);
    let t = Instant::now();
    run_ok(
        support::genboot()
            .arg("--root")
            .arg(&s.tree)
            .args(["image", "-o"])
            .arg(&s.image)
            .args(["--size", "4G", "--config"])
            .arg(&g1),
    );
    eprintln!(
        "e2e trees {name}: generation 1 built and imaged in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let gen1 = s.generation(1);

    // Boot 1: generation 1, its first boot.
    let mut vm = s.boot("boot1", false);
    let r = booted(&mut vm, &gen1, &kernel, "boot 1 (generation 1)");
    expect(
        &mut vm,
        &r,
        "mode",
        "/usr:ro /etc:rw /var:rw /home:rw",
        "boot 1",
    );
    // genboot.verify: the tree's metadata image checked against boot.json
    // before it is mounted, at every boot.
    if !vm
        .console()
        .contains("/root.erofs matches boot.json's SHA-256")
    {
        vm.fail("boot 1: genboot.verify should have checked the tree's root.erofs");
    }
    let status = r.lines("status: ").join("\n");
    if !status.contains("booted generation:  1") || !status.contains("ESP:") {
        vm.fail(&format!(
            "boot 1: genboot status should name generation 1 as booted and the ESP:\n{status}"
        ));
    }
    let id = value(&r, "machine-id");
    let key = value(&r, "hostkey");
    if id.len() != 32 || !key.contains("ED25519") {
        vm.fail(&format!(
            "boot 1: a machine-id and an SSH host key should have been made: {id:?} {key:?}"
        ));
    }
    expect(&mut vm, &r, "nginx", "/nofile/inactive", "boot 1");
    expect_lines(&mut vm, &r, "verify: ", &[], "boot 1");
    if unit(&r, "genboot-bless") != "active success" {
        vm.fail(&format!(
            "boot 1: genboot-bless.service should have run: {:?}",
            r.lines("unit: ")
        ));
    }
    vm.wait_exit(debian::SETTLE);
    drop(vm);

    // From outside: generation 2 (nginx-light, chrony and its user).
    let t = Instant::now();
    on_the_image(&s, &["switch", "--config", g2.to_str().unwrap()]);
    eprintln!(
        "e2e trees {name}: generation 2 switched to in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let gen2 = on_the_image_generation(&s, 2);

    // Boot 2: generation 2 by itself.
    let mut vm = s.boot("boot2", false);
    let r = booted(&mut vm, &gen2, &kernel, "boot 2 (generation 2)");
    expect(&mut vm, &r, "nginx", "ii/file/active", "boot 2");
    expect_lines(&mut vm, &r, "http: ", &["HTTP/1.1 200 OK"], "boot 2");
    expect_lines(&mut vm, &r, "verify: ", &[], "boot 2");
    expect(
        &mut vm,
        &r,
        "issue",
        "1",
        "boot 2: the admin's edit of generation 1",
    );
    let users = r.lines("user: ");
    if users.first().map(String::as_str) != Some("alice:1500")
        || !users.get(1).is_some_and(|u| u.starts_with("_chrony:"))
    {
        vm.fail(&format!(
            "boot 2: the local user alice (generation 1) and the new system user _chrony should exist: {users:?}"
        ));
    }
    expect(&mut vm, &r, "machine-id", &id, "boot 2");
    expect(&mut vm, &r, "hostkey", &key, "boot 2");
    vm.wait_exit(debian::SETTLE);
    drop(vm);

    // Boot 3: generation 1 picked in the menu; `genboot rollback` in it.
    let mut vm = s.boot("boot3-menu", false);
    let titles = vm.menu();
    let Some(at) = titles
        .iter()
        .position(|t| t.contains("(generation 1)") && !t.contains("Recovery"))
    else {
        vm.fail(&format!("the menu has no generation 1: {titles:?}"));
    };
    pick(&mut vm, &titles, at, 2);
    let r = booted(
        &mut vm,
        &gen1,
        &kernel,
        "boot 3 (generation 1 from the menu)",
    );
    expect(&mut vm, &r, "nginx", "/nofile/inactive", "boot 3");
    expect_lines(&mut vm, &r, "verify: ", &[], "boot 3");
    expect(&mut vm, &r, "machine-id", &id, "boot 3");
    expect(&mut vm, &r, "hostkey", &key, "boot 3");
    expect(&mut vm, &r, "issue", "1", "boot 3");
    expect_lines(
        &mut vm,
        &r,
        "var: ",
        &["boot", "written-in-1", "written-in-2"],
        "boot 3: /var is not rolled back",
    );
    let rollback = r.lines("rollback: ").join("\n");
    if !rollback.contains("generation 1") {
        vm.fail(&format!("boot 3: genboot rollback: {rollback}"));
    }
    vm.wait_exit(debian::SETTLE);
    drop(vm);

    // Boot 4: no key pressed: generation 1, the default after the rollback.
    let mut vm = s.boot("boot4", false);
    booted(&mut vm, &gen1, &kernel, "boot 4 (after genboot rollback)");
    vm.wait_exit(debian::SETTLE);
    drop(vm);

    // The recovery entry of the current generation (1) gives a shell.
    let mut vm = s.boot("boot5-recovery", false);
    let titles = vm.menu();
    let Some(at) = titles
        .iter()
        .position(|t| t.contains("(generation 1, Recovery)"))
    else {
        vm.fail(&format!(
            "the menu has no recovery entry of generation 1: {titles:?}"
        ));
    };
    pick(&mut vm, &titles, at, 1);
    vm.wait_for("*** genboot recovery ***", debian::BOOT);
    // The whole prompt: sulogin discards what is typed while it sets up
    // the terminal.
    vm.sulogin(
        "(or press Control-D to continue): ",
        debian::ROOT_PASSWORD,
        debian::BOOT,
    );
    let seen = vm.send_until(
        "echo BOOTED=$(cat /run/genboot/booted) PART=$(findmnt -no OPTIONS /run/genboot/sysroot | cut -d, -f1)-$((6*7))\n",
        "-42",
        debian::BOOT,
    );
    let said = seen
        .lines()
        .rev()
        .find(|l| l.contains("BOOTED=/"))
        .unwrap_or("")
        .to_string();
    if !said.contains(&gen1) || !said.contains("PART=ro-42") {
        vm.fail(&format!(
            "recovery: the shell should run in generation 1's tree with the root partition read-only: {said:?}"
        ));
    }
    vm.send(b"poweroff -f\n");
    vm.wait_exit(Duration::from_secs(120));
    drop(vm);
    // Generation 3 cannot boot (no systemd): three tries, then systemd-boot
    // falls back by itself; the generation it falls back to is blessed.
    on_the_image(&s, &["switch", "--config", g3.to_str().unwrap()]);
    let mut vm = s.boot("boot6-fallback", true);
    for _ in 0..3 {
        vm.wait_for("FAILED at step", debian::BOOT);
        vm.wait_for("reboot: Restarting system", debian::BOOT);
    }
    let r = booted(
        &mut vm,
        &gen2,
        &kernel,
        "boot 6 (fallback from generation 3)",
    );
    let entries = r.lines("entry: ");
    if !entries.iter().any(|e| e == "genboot-3+0-3.conf") {
        vm.fail(&format!(
            "boot 6: generation 3's entry should be out of tries: {entries:?}"
        ));
    }
    vm.wait_exit(debian::SETTLE);
    drop(vm);

    eprintln!(
        "e2e trees {name}: passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(&s.dir).expect("remove the scenario's directory");
}

/// In the menu `titles` just shown, choose entry `at`: systemd-boot
/// highlights the default entry, generation `default` (the current one),
/// and the arrow keys move from there.
fn pick(vm: &mut Vm, titles: &[String], at: usize, default: u32) {
    let want = format!("(generation {default})");
    let Some(from) = titles.iter().position(|t| t.contains(&want)) else {
        vm.fail(&format!("the menu has no generation {default}: {titles:?}"));
    };
    let Some(downs) = at.checked_sub(from) else {
        vm.fail(&format!(
            "entry {at} is above the default {from}: {titles:?}"
        ));
    };
    vm.choose(downs);
}

/// `<hash>-<name>` of generation `n` of the profile on the image's root
/// partition (made from outside by [`on_the_image`]).
fn on_the_image_generation(s: &Scenario, n: u32) -> String {
    let mnt = s.dir.join("mnt");
    let offset = debian::root_offset(&s.image);
    run_ok(
        Command::new("mount")
            .arg("-o")
            .arg(format!("ro,loop,offset={offset}"))
            .arg(&s.image)
            .arg(&mnt),
    );
    let link = std::fs::read_link(mnt.join(format!("var/lib/genboot/profiles/system-{n}-link")));
    run_ok(Command::new("umount").arg(&mnt));
    base_name(
        &link
            .expect("the generation's profile link")
            .to_string_lossy(),
    )
}

fn require_tools() {
    for (tool, pkg) in [
        ("mmdebstrap", "mmdebstrap"),
        ("apt-ftparchive", "apt-utils"),
        ("sgdisk", "gdisk"),
    ] {
        support::require_tool(tool, pkg);
    }
}

#[test]
fn whole_system_generations_on_6_1_boot_upgrade_roll_back_fall_back_and_recover() {
    whole_system("e2e_trees_6_1", K61);
}

#[test]
fn whole_system_generations_on_6_12_boot_upgrade_roll_back_fall_back_and_recover() {
    whole_system("e2e_trees_6_12", K612);
}
