//! genboot's Debian packages (`tools/make-deb`) and its kernel hooks, in a
//! real Debian 12 root (issue 13, items 4 and 5): the packages' contents
//! judged by `dpkg-deb`; installed by apt from a local repository in a
//! chroot of a stock root with Debian's `systemd-boot` package; a kernel
//! package installed and removed by apt makes a generation by itself;
//! `kernel-install` writes no boot entry of its own on genboot's ESP.

use crate::support::debian::{self, GUEST_MIRROR};
use crate::support::*;
use std::path::Path;
use std::process::Command;

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    run_ok(Command::new("dpkg-deb").args(args).arg(deb))
}

#[test]
fn make_deb_builds_both_packages_reproducibly_with_hooks_and_conffiles() {
    let debs = debian::genboot_debs();
    let (main, tool) = (&debs[0], &debs[1]);
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let version = format!("{}-1", env!("CARGO_PKG_VERSION"));
    assert_eq!(name(main), format!("genboot_{version}_amd64.deb"));
    assert_eq!(
        name(tool),
        format!("genboot-initramfs-tool_{version}_all.deb")
    );

    let info = dpkg_deb(&["-I"], main);
    for want in [
        "Package: genboot\n",
        "Architecture: amd64\n",
        "Recommends: systemd-boot-efi\n",
        " conffiles",
    ] {
        assert!(info.contains(want), "dpkg-deb -I lacks {want:?}:\n{info}");
    }
    assert!(
        !info.contains("Provides:"),
        "the main package provides nothing: it can sit beside initramfs-tools:\n{info}"
    );
    let files = dpkg_deb(&["-c"], main);
    for (mode, path) in [
        ("-rwxr-xr-x root/root", "./usr/bin/genboot"),
        ("-rwxr-xr-x root/root", "./usr/lib/genboot/genboot-init"),
        ("-rwxr-xr-x root/root", "./etc/kernel/postinst.d/zz-genboot"),
        ("-rwxr-xr-x root/root", "./etc/kernel/postrm.d/zz-genboot"),
        (
            "-rwxr-xr-x root/root",
            "./usr/lib/kernel/install.d/90-genboot.install",
        ),
        ("-rw-r--r-- root/root", "./etc/kernel/install.conf"),
        ("-rw-r--r-- root/root", "./etc/genboot/system.toml"),
        ("-rw-r--r-- root/root", "./usr/share/doc/genboot/copyright"),
        (
            "-rw-r--r-- root/root",
            "./usr/lib/systemd/system/genboot-bless.service",
        ),
    ] {
        assert!(
            files
                .lines()
                .any(|l| l.starts_with(mode) && l.ends_with(path)),
            "dpkg-deb -c lacks {mode} {path}:\n{files}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(main)
            .arg(tmp.path().join("ctl")),
    );
    let conffiles = std::fs::read_to_string(tmp.path().join("ctl/conffiles")).unwrap();
    assert_eq!(
        conffiles,
        "/etc/genboot/system.toml\n/etc/kernel/install.conf\n/etc/kernel/postinst.d/zz-genboot\n/etc/kernel/postrm.d/zz-genboot\n"
    );
    // The static genboot needs no library.
    run_ok(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(main)
            .arg(tmp.path().join("x")),
    );
    let ldd = Command::new("ldd")
        .arg(tmp.path().join("x/usr/bin/genboot"))
        .output()
        .unwrap();
    let said = format!("{}{}", stdout(&ldd), stderr(&ldd));
    assert!(
        said.contains("not a dynamic executable") || said.contains("statically linked"),
        "{said}"
    );

    let info = dpkg_deb(&["-I"], tool);
    for want in [
        "Package: genboot-initramfs-tool\n",
        "Architecture: all\n",
        &format!("Depends: genboot (= {version})\n"),
        "Provides: linux-initramfs-tool\n",
        "Conflicts: initramfs-tools, linux-initramfs-tool\n",
    ] {
        assert!(info.contains(want), "dpkg-deb -I lacks {want:?}:\n{info}");
    }

    // Same inputs, same bytes.
    let again = tmp.path().join("again");
    let out = Command::new(repo().join("tools/make-deb"))
        .arg(&again)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for deb in &debs {
        assert_eq!(
            std::fs::read(deb).unwrap(),
            std::fs::read(again.join(deb.file_name().unwrap())).unwrap(),
            "{} is not reproducible",
            deb.display()
        );
    }
}

fn in_root(root: &Path, script: &str) -> String {
    debian::chroot_script(root, script)
}

#[test]
fn apt_installs_genboot_and_kernel_packages_make_generations_by_themselves() {
    let t = tempfile::tempdir_in(repo().join("target")).unwrap();
    let root = t.path().join("root");
    // Debian's systemd-boot package beside genboot: its kernel hook calls
    // kernel-install, which must not write an entry of its own.
    debian::copy_root(&["systemd-boot"], &root);
    std::fs::create_dir_all(root.join(GUEST_MIRROR)).unwrap();
    debian::install_genboot_repo(&root);

    let out = in_root(
        &root,
        "c apt-get update -qq\nc apt-get install -y -q genboot genboot-initramfs-tool\n\
         c dpkg-query -W -f '${Package} ${Status}\\n' genboot genboot-initramfs-tool genboot-test-no-initramfs || true\n\
         c dpkg -L genboot\n",
    );
    for l in [
        "genboot install ok installed",
        "genboot-initramfs-tool install ok installed",
        "/etc/kernel/postinst.d/zz-genboot",
        "/usr/lib/kernel/install.d/90-genboot.install",
        "/usr/lib/genboot/genboot-init",
    ] {
        assert!(out.contains(l), "{l:?} missing:\n{out}");
    }
    assert!(
        !out.contains("genboot-test-no-initramfs install ok installed"),
        "the other provider of linux-initramfs-tool is replaced:\n{out}"
    );
    // The postinst enabled the bless unit, as deb-systemd-helper does.
    let wants = root.join("etc/systemd/system/basic.target.wants/genboot-bless.service");
    assert!(
        wants.symlink_metadata().is_ok(),
        "apt install genboot should enable genboot-bless.service ({} missing)",
        wants.display()
    );
    let conf = std::fs::read_to_string(root.join("etc/genboot/system.toml")).unwrap();
    assert!(
        conf.lines().all(|l| l.is_empty() || l.starts_with('#')),
        "{conf}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/kernel/install.conf")).unwrap(),
        std::fs::read_to_string(repo().join("dist/kernel-install/install.conf")).unwrap()
    );

    // With the commented configuration, a kernel install makes nothing and
    // does not fail.
    let out = in_root(
        &root,
        "c apt-get install -y -q linux-image-6.1.0-50-amd64\n",
    );
    assert!(
        out.contains("declares no system yet; no generation for kernel 6.1.0-50-amd64"),
        "{out}"
    );
    assert!(!root.join("var/lib/genboot/profiles/system").exists());

    // Declared: the next kernel package makes generation 1 with it (the
    // newest installed), without anyone running genboot.
    // The root device's modules autodetected (a chroot is --root /): this
    // machine's disk, whose driver chain sysfs shows.
    std::fs::write(
        root.join("etc/genboot/system.toml"),
        "[kernel]\nrelease = \"newest\"\nparams = [\"console=ttyS0\"]\n\n\
         [initrd]\nmodules = [\"ext4\"]\nautodetect = true\n\n\
         [root]\ndevice = \"PARTUUID=6e6f6f74-0000-4000-8000-000000000002\"\noptions = \"ro\"\n\n\
         [system]\nlabel = \"Debian 12\"\n",
    )
    .unwrap();
    let out = in_root(
        &root,
        "c apt-get install -y -q linux-image-6.12-amd64\nc genboot list\n",
    );
    assert!(
        out.contains("genboot: kernel 6.12.117+deb12-amd64 installed: genboot switch")
            && out.contains("kernel 6.12.117+deb12-amd64: the newest installed kernel"),
        "{out}"
    );
    let list = list_json(&root);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!(rows[0]["kernelRelease"], "6.12.117+deb12-amd64");
    check_autodetect(&root, &out);

    // kernel-install (what Debian's systemd-boot hook runs when bootctl
    // finds an ESP) on an ESP that genboot wrote: with layout=genboot no
    // entry of its own, and genboot's plugin finds the generation current.
    // Without the layout it would write one (the bug this prevents).
    let esp = root.join("efi");
    std::fs::create_dir_all(esp.join("loader/entries")).unwrap();
    std::fs::write(esp.join("loader/entries.srel"), "type1\n").unwrap();
    std::fs::write(esp.join("loader/entries/genboot-1.conf"), "title genboot\n").unwrap();
    let out = in_root(
        &root,
        "c env BOOT_ROOT=/efi kernel-install -v add 6.12.117+deb12-amd64 /boot/vmlinuz-6.12.117+deb12-amd64\n\
         echo ENTRIES: $(ls \"$r/efi/loader/entries\")\n\
         mv \"$r/etc/kernel/install.conf\" \"$r/etc/kernel/install.conf.off\"\n\
         c env BOOT_ROOT=/efi kernel-install add 6.12.117+deb12-amd64 /boot/vmlinuz-6.12.117+deb12-amd64\n\
         echo WITHOUT: $(ls \"$r/efi/loader/entries\")\n\
         mv \"$r/etc/kernel/install.conf.off\" \"$r/etc/kernel/install.conf\"\n",
    );
    assert!(
        out.contains("ENTRIES: genboot-1.conf\n"),
        "kernel-install wrote an entry on genboot's ESP:\n{out}"
    );
    assert!(
        out.contains("configures layout=genboot") && out.contains("already current"),
        "genboot's plugin ran genboot switch:\n{out}"
    );
    let without = out.lines().find(|l| l.starts_with("WITHOUT:")).unwrap();
    assert!(
        without.split_whitespace().count() > 2,
        "without install.conf kernel-install adds its own entry (the check above can see one): {without}"
    );

    // Removing the kernel: the next newest (6.1.0-57, base's) becomes
    // current. Generation 1 still boots 6.12: its module directory stays
    // without a tree of its own (no kernel/, no modules.order; depmod's
    // files), which genboot-init binds the generation's tree over.
    let out = in_root(
        &root,
        "c apt-get remove -y -q linux-image-6.12-amd64 linux-image-6.12.117+deb12-amd64\n",
    );
    assert!(
        out.contains("genboot: kernel 6.12.117+deb12-amd64 removed: genboot switch"),
        "{out}"
    );
    let list = list_json(&root);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{list}");
    assert_eq!(rows[1]["kernelRelease"], "6.1.0-57-amd64");
    assert_eq!(rows[1]["current"], true);
    let kept = root.join("usr/lib/modules/6.12.117+deb12-amd64");
    assert!(kept.is_dir(), "{} should stay", kept.display());
    for gone in ["kernel", "modules.order", "modules.builtin"] {
        assert!(
            !kept.join(gone).exists(),
            "{gone} should be gone from {}",
            kept.display()
        );
    }
}

/// What `[initrd] autodetect` said and put into the initrd, judged by
/// kmod: each modalias on this machine's root device chain (read from
/// sysfs by the shell) resolved by `modprobe -R` in the module tree genboot
/// wrote (its kmod index files).
fn check_autodetect(root: &Path, out: &str) {
    let note = out
        .lines()
        .find(|l| l.contains("autodetect: the root ("))
        .unwrap_or_else(|| panic!("no autodetect note:\n{out}"));
    eprintln!("deb: {note}");
    let release = "6.12.117+deb12-amd64";
    let store = root.join("var/lib/genboot/store");
    let km = only_object(&store, &format!("kernel-modules-{release}"));
    let chain = run_ok(Command::new("sh").arg("-c").arg(
        "d=$(readlink -f /sys/dev/block/$(stat -c '%Hd:%Ld' /)); \
         while [ \"$d\" != /sys/devices ] && [ \"$d\" != / ]; do \
           [ -f \"$d/modalias\" ] && cat \"$d/modalias\"; d=$(dirname \"$d\"); done",
    ));
    let mut want: Vec<String> = Vec::new();
    for alias in chain.lines().filter(|l| !l.is_empty()) {
        let o = Command::new("modprobe")
            .arg("-d")
            .arg(&km)
            .args(["-S", release, "-R", alias])
            .output()
            .expect("modprobe runs (apt-get install kmod)");
        for m in stdout(&o).lines() {
            if !want.iter().any(|w| w == m) {
                want.push(m.to_string());
            }
        }
    }
    assert!(!want.is_empty(), "kmod resolves none of {chain:?}");
    for m in &want {
        assert!(
            note.contains(&format!(" {m} (")),
            "autodetect should add {m} (kmod resolves this machine's root device chain to {want:?}):\n{note}"
        );
    }
    // The root's file system: from the mount of its device (in the chroot,
    // the bind of the local repository, on the same file system).
    assert!(
        note.contains(" ext4 (the root's file system)"),
        "the root's ext4 should be added:\n{note}"
    );
    let initrd = only_object(&store, &format!("initrd-{release}"));
    let manifest = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg("zstdcat \"$1\" | cpio -i --to-stdout etc/genboot/initrd.manifest 2>/dev/null")
            .arg("sh")
            .arg(initrd.join("initrd")),
    );
    for m in &want {
        assert!(
            manifest.contains(&format!("module {m} ")),
            "{m} should be in the initrd:\n{manifest}"
        );
    }
}

/// Issue 13: genboot beside initramfs-tools (the `genboot` package alone,
/// without genboot-initramfs-tool) and Debian's systemd-boot package, on an
/// ESP where `bootctl is-installed` is true. A kernel install then runs
/// every hook Debian has: initramfs-tools builds its initrd, its
/// post-update hook and systemd-boot's `zz-systemd-boot` run
/// `kernel-install add`, genboot's `zz-genboot` makes a generation. The
/// menu stays genboot's: no entry, kernel or initrd of kernel-install's on
/// the ESP. Then the same without /etc/kernel/install.conf: kernel-install
/// writes its own entry, so the hooks above really ran.
#[test]
fn beside_initramfs_tools_and_systemd_boot_a_kernel_install_leaves_the_menu_genboots() {
    let t = tempfile::tempdir_in(repo().join("target")).unwrap();
    let root = t.path().join("root");
    debian::copy_root(&["systemd-boot", "initramfs-tools"], &root);
    debian::install_genboot_repo(&root);
    let out = in_root(
        &root,
        "c apt-get update -qq\nc apt-get install -y -q genboot\n\
         c dpkg-query -W -f '${Package} ${Status}\\n' genboot initramfs-tools systemd-boot\n",
    );
    for l in [
        "genboot install ok installed",
        "initramfs-tools install ok installed",
        "systemd-boot install ok installed",
    ] {
        assert!(out.contains(l), "{l:?} missing:\n{out}");
    }
    std::fs::write(
        root.join("etc/genboot/system.toml"),
        "[kernel]\nrelease = \"newest\"\nparams = [\"console=ttyS0\"]\n\n\
         [initrd]\nmodules = [\"virtio_blk\", \"virtio_pci\", \"ext4\"]\n\n\
         [root]\ndevice = \"PARTUUID=6e6f6f74-0000-4000-8000-000000000002\"\noptions = \"ro\"\n\n\
         [system]\nlabel = \"Debian 12\"\n\n[boot]\nesp = \"/efi\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("efi")).unwrap();
    // One script, one mount namespace: the ESP is a tmpfs at /efi (a file
    // system of its own, as bootctl wants; genboot and bootctl are told to
    // accept one that is not FAT). genboot writes the menu, systemd-boot is
    // copied there as `bootctl install` does, then the kernel installs.
    let out = in_root(
        &root,
        "mount -t tmpfs -o size=512m esp \"$r/efi\"\n\
         e() { c env GENBOOT_ESP_ANY_DIR=1 SYSTEMD_RELAX_ESP_CHECKS=1 \"$@\"; }\n\
         files() { (cd \"$r/efi\" && find . -type f -printf \"$1 %P\\n\" | sort); }\n\
         e genboot switch\n\
         mkdir -p \"$r/efi/EFI/systemd\"\n\
         cp \"$r/usr/lib/systemd/boot/efi/systemd-bootx64.efi\" \"$r/efi/EFI/systemd/\"\n\
         e bootctl is-installed && echo IS-INSTALLED\n\
         files BEFORE\n\
         e apt-get install -y -q linux-image-6.12-amd64\n\
         files AFTER\n\
         mv \"$r/etc/kernel/install.conf\" \"$r/etc/kernel/install.conf.off\"\n\
         e apt-get install -y -q --reinstall linux-image-6.12.117+deb12-amd64\n\
         mv \"$r/etc/kernel/install.conf.off\" \"$r/etc/kernel/install.conf\"\n\
         files CONTROL\n",
    );
    assert!(
        out.contains("IS-INSTALLED"),
        "bootctl should see systemd-boot on genboot's ESP (else Debian's hooks stay idle and this test shows nothing):\n{out}"
    );
    let files = |tag: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.strip_prefix(&format!("{tag} ")))
            .map(str::to_string)
            .collect()
    };
    let (before, after, control) = (files("BEFORE"), files("AFTER"), files("CONTROL"));
    assert!(
        before.iter().any(|f| f == "loader/entries/genboot-1.conf"),
        "{before:?}"
    );
    for said in [
        "update-initramfs: Generating /boot/initrd.img-6.12.117+deb12-amd64",
        "genboot: kernel 6.12.117+deb12-amd64 installed: genboot switch",
    ] {
        assert!(out.contains(said), "{said:?} missing:\n{out}");
    }
    let foreign: Vec<&String> = after
        .iter()
        .filter(|f| {
            !before.contains(f)
                && !f.starts_with("loader/entries/genboot-")
                && !f.starts_with("EFI/genboot/")
        })
        .collect();
    assert!(
        foreign.is_empty(),
        "the kernel install put files of its own on genboot's ESP: {foreign:?}\n{out}"
    );
    assert!(
        after
            .iter()
            .any(|f| f.starts_with("loader/entries/genboot-2")),
        "generation 2 should be in the menu: {after:?}"
    );
    assert_eq!(list_json(&root).as_array().unwrap().len(), 2);
    // The control: without install.conf the same hooks make kernel-install
    // write its own entry beside genboot's.
    assert!(
        control
            .iter()
            .any(|f| f.starts_with("loader/entries/") && !f.starts_with("loader/entries/genboot-")),
        "without layout=genboot kernel-install should have added its own entry (the hooks ran): {control:?}\n{out}"
    );
}
