//! The ESP installer through the real CLI, on both backends: a directory
//! (plain, or a tmpfs mount) and the FAT volume inside a disk image. Judged
//! by `bootctl list`, `fsck.fat -n` and mtools.

use crate::support;
use crate::support::esp::*;
use crate::support::judges::*;
use crate::support::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const ANY: (&str, &str) = ("GENBOOT_ESP_ANY_DIR", "1");

/// An ESP under test: a directory or an image.
#[derive(Clone)]
enum Target {
    Dir(PathBuf),
    Image(PathBuf),
}

impl Target {
    fn args(&self) -> Vec<String> {
        match self {
            Target::Dir(d) => vec!["--esp".into(), d.display().to_string()],
            Target::Image(i) => vec!["--image".into(), i.display().to_string()],
        }
    }
    fn tree(&self) -> BTreeMap<String, Vec<u8>> {
        match self {
            Target::Dir(d) => tree(d),
            Target::Image(i) => image_tree(i),
        }
    }
    /// Copy the ESP (directory tree or image file) to `to`.
    fn copy_to(&self, to: &Path) -> Target {
        match self {
            Target::Dir(d) => {
                let _ = std::fs::remove_dir_all(to);
                let st = std::process::Command::new("cp")
                    .arg("-a")
                    .arg(d)
                    .arg(to)
                    .status()
                    .unwrap();
                assert!(st.success());
                Target::Dir(to.to_path_buf())
            }
            Target::Image(i) => {
                let st = std::process::Command::new("cp")
                    .arg("--sparse=always")
                    .arg(i)
                    .arg(to)
                    .status()
                    .unwrap();
                assert!(st.success());
                Target::Image(to.to_path_buf())
            }
        }
    }
    fn judge(&self, scratch: &Path) -> Bootctl {
        if let Target::Image(i) = self {
            fsck_image(i);
        }
        let t = self.tree();
        assert_one_file_per_entry(&t);
        bootctl(&t, scratch)
    }
}

/// `genboot install` on `t`; every image it leaves passes `fsck.fat -n`.
fn install(sys: &SystemTree, t: &Target, extra: &[&str]) -> std::process::Output {
    let mut v = vec!["install"];
    v.extend(extra);
    with(sys, t, &v)
}

/// `genboot <verb>` on `t`; every image a successful run leaves passes
/// `fsck.fat -n`.
fn with(sys: &SystemTree, t: &Target, verb: &[&str]) -> std::process::Output {
    let o = with_unchecked(sys, t, verb);
    if let (true, Target::Image(i)) = (o.status.success(), t) {
        fsck_image(i);
    }
    o
}

fn with_unchecked(sys: &SystemTree, t: &Target, verb: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = t.args();
    args.extend(verb.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    sys.run_env(&[ANY], &a)
}

/// A plain-directory ESP.
fn dir_esp(sys: &SystemTree) -> Target {
    let d = sys.path("esp");
    std::fs::create_dir_all(&d).unwrap();
    Target::Dir(d)
}

/// An image with an ESP filled by `genboot --image install --install-loader`
/// (as `genboot image` fills it; the root partition stays empty).
fn image_esp(sys: &SystemTree, esp_size: &str) -> Target {
    let img = sys.path("disk.img");
    let mib: u64 = esp_size.trim_end_matches('M').parse().unwrap();
    esp_only_image(&img, mib);
    let t = Target::Image(img);
    ok(install(sys, &t, &["--install-loader"]));
    sgdisk_verify(match &t {
        Target::Image(i) => i,
        Target::Dir(_) => unreachable!(),
    });
    t
}

fn both(sys: &SystemTree) -> Vec<Target> {
    vec![dir_esp(sys), image_esp(sys, "64M")]
}

#[test]
fn install_lists_every_generation_in_bootctl_on_both_backends() {
    let mut sys = SystemTree::new();
    let generic = support::kernel(GENERIC);
    let cloud = support::kernel(CLOUD);
    sys.switch(&cloud, "");
    sys.switch(&generic, "");
    let cfg = sys.config(&generic, "[boot]\ntimeout = 3\n");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"console=ttyS0\"", "\"console=ttyS0\", \"quiet\"");
    std::fs::write(&cfg, text).unwrap();
    ok(sys.run(&["switch", "--config", cfg.to_str().unwrap()]));
    for t in both(&sys) {
        ok(install(&sys, &t, &[]));
        let b = t.judge(&sys.path("mnt"));
        for n in 1..=3 {
            assert!(b.ids.contains(&format!("genboot-{n}.conf")), "{}", b.output);
        }
        assert!(b.ids.contains(&"genboot-3-recovery.conf".to_string()));
        assert_eq!(b.default.as_deref(), Some("genboot-3.conf"), "{}", b.output);
        // Generations 2 and 3 share the generic kernel file.
        let t = t.tree();
        let kernels = t.keys().filter(|k| k.contains("-linux-")).count();
        assert_eq!(kernels, 2, "{:?}", names(&t));
        let conf = String::from_utf8(t["loader/loader.conf"].clone()).unwrap();
        assert!(conf.contains("timeout 3\n"), "{conf}");
        assert_eq!(t["loader/entries.srel"], b"type1\n");
    }
}

#[test]
fn noop_reinstall_writes_nothing() {
    let mut sys = SystemTree::new();
    sys.switch(&support::kernel(GENERIC), "[boot]\ntries = 2\n");
    for t in both(&sys) {
        ok(install(&sys, &t, &[]));
        let before = match &t {
            Target::Image(i) => sha(i),
            Target::Dir(_) => Vec::new(),
        };
        let tree_before = t.tree();
        let o = install(&sys, &t, &[]);
        ok(o.clone());
        assert_eq!(written(&o), (0, 0), "{}", stderr(&o));
        assert_eq!(t.tree(), tree_before);
        if let Target::Image(i) = &t {
            assert_eq!(sha(i), before, "a no-op install changed the image");
        }
    }
}

#[test]
fn same_profile_gives_the_same_esp() {
    let mut sys = SystemTree::new();
    sys.switch(&support::kernel(GENERIC), "[boot]\ntries = 2\n");
    sys.switch(&support::kernel(CLOUD), "");
    std::fs::create_dir_all(sys.root.join("etc")).unwrap();
    std::fs::write(
        sys.root.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let a = Target::Dir(sys.path("a"));
    let b = Target::Dir(sys.path("b"));
    for t in [&a, &b] {
        if let Target::Dir(d) = t {
            std::fs::create_dir_all(d).unwrap();
        }
        ok(install(&sys, t, &[]));
    }
    let ta = a.tree();
    assert_eq!(ta, b.tree());
    let e = String::from_utf8(ta["loader/entries/genboot-1+2.conf"].clone()).unwrap();
    assert!(
        e.contains("\nmachine-id 0123456789abcdef0123456789abcdef\n"),
        "{e}"
    );
}

/// The store file an ESP file was copied from (`<hash>-…` → object `<hash>-…`).
fn store_source(sys: &SystemTree, esp_name: &str) -> Vec<u8> {
    let hash = &esp_name[..32];
    for e in std::fs::read_dir(sys.store()).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with(hash) {
            for f in ["bzImage", "initrd"] {
                if p.join(f).is_file() {
                    return std::fs::read(p.join(f)).unwrap();
                }
            }
        }
    }
    panic!("no store object for {esp_name}");
}

/// The ESP boots: loader.conf names a default entry whose kernel and
/// initrd exist with the content of their store objects.
#[track_caller]
fn assert_bootable_default(sys: &SystemTree, t: &BTreeMap<String, Vec<u8>>, what: &str) {
    let entry = default_entry_file(t).unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = String::from_utf8(t[&format!("loader/entries/{entry}")].clone()).unwrap();
    let mut files = 0;
    for l in text.lines() {
        if let Some(p) = l
            .strip_prefix("linux ")
            .or_else(|| l.strip_prefix("initrd "))
        {
            let rel = p.trim_start_matches('/');
            let data = t
                .get(rel)
                .unwrap_or_else(|| panic!("{what}: {entry} names missing {rel}"));
            let name = rel.rsplit('/').next().unwrap();
            assert!(
                *data == store_source(sys, name),
                "{what}: {rel} differs from its store object"
            );
            files += 1;
        }
    }
    assert!(files >= 1, "{what}: entry {entry} has no linux line");
}

/// Rename an entry as systemd-boot does when it counts a boot.
fn rename_entry(t: &Target, from: &str, to: &str) {
    match t {
        Target::Dir(d) => {
            let e = d.join("loader/entries");
            std::fs::rename(e.join(from), e.join(to)).unwrap();
        }
        Target::Image(img) => {
            let (from, to) = (
                format!("::/loader/entries/{from}"),
                format!("::/loader/entries/{to}"),
            );
            mtool("mren", img, &[&from, &to]);
        }
    }
}

fn crash_points(sys: &mut SystemTree, base: Target) -> usize {
    let generic = support::kernel(GENERIC);
    let cloud = support::kernel(CLOUD);
    let variant = third_kernel(sys.tmp.path());
    // Base ESP: generations 1 (cloud) and 2 (generic) counting, 3 (cloud
    // again) not, 2 the default.
    sys.switch(&cloud, "[boot]\ntries = 3\n");
    sys.switch(&generic, "[boot]\ntries = 3\n");
    sys.switch(&cloud, "");
    ok(sys.run(&["set-default", "2"]));
    ok(install(sys, &base, &[]));
    // systemd-boot counted a failed boot of generation 2.
    rename_entry(&base, "genboot-2+3.conf", "genboot-2+2-1.conf");
    // Pending change: generations 1 and 3 deleted, a new generation 3 on
    // a new kernel (its entry starts fresh: renamed, then replaced), and
    // the machine got a machine-id (every entry changes; generation 2
    // keeps its counter).
    ok(sys.run(&["delete", "1", "3"]));
    std::fs::create_dir_all(sys.root.join("etc")).unwrap();
    std::fs::write(
        sys.root.join("etc/machine-id"),
        "00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    sys.switch(&variant, "[boot]\ntries = 3\n");
    let reference = base.copy_to(&sys.path("reference"));
    ok(install(sys, &reference, &[]));
    let want = reference.tree();
    assert!(
        !want.keys().any(|k| k.contains("genboot-1")),
        "{:?}",
        names(&want)
    );
    let mut tried = 0;
    let mut not_reached = Vec::new();
    for fp in genboot::failpoint::ALL
        .iter()
        .filter(|f| f.starts_with("esp::") && **f != "esp::bless-renamed")
    {
        let t = base.copy_to(&sys.path("crashed"));
        let mut args = t.args();
        args.push("install".into());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = sys.run_env(&[ANY, ("GENBOOT_FAILPOINTS", fp)], &a);
        match o.status.code() {
            Some(99) => {}
            Some(0) => {
                not_reached.push(*fp);
                continue;
            }
            c => panic!("{fp}: exit {c:?}: {}", stderr(&o)),
        }
        tried += 1;
        let crashed = t.tree();
        assert_one_file_per_entry(&crashed);
        assert_bootable_default(sys, &crashed, &format!("after a crash at {fp}"));
        // The re-run keeps the dirty bit the crash left (checked below),
        // and says so.
        let o = with_unchecked(sys, &t, &["install"]);
        ok(o.clone());
        if let Target::Image(_) = &t {
            assert!(
                stderr(&o).contains("not cleanly unmounted"),
                "{}",
                stderr(&o)
            );
        }
        let got = t.tree();
        assert_eq!(
            names(&got),
            names(&want),
            "re-run after {fp} did not converge"
        );
        assert!(got == want, "re-run after {fp}: contents differ");
        if let Target::Image(i) = &t {
            fsck_image_after_crash(i);
        }
        assert_one_file_per_entry(&got);
        bootctl(&got, &sys.path("mnt"));
    }
    eprintln!("crash points tried: {tried} (not reached in this scenario: {not_reached:?})");
    tried
}

#[test]
fn crash_at_every_install_step_leaves_a_bootable_default_directory() {
    let mut sys = SystemTree::new();
    let base = dir_esp(&sys);
    let n = crash_points(&mut sys, base);
    println!("directory backend: {n} crash points tried");
    assert!(n >= 9, "only {n} crash points fired");
}

#[test]
fn crash_at_every_install_step_leaves_a_bootable_default_image() {
    let mut sys = SystemTree::new();
    // The image needs a generation to exist; make one and delete it later
    // through the same scenario.
    sys.switch(&support::kernel(CLOUD), "[boot]\ntries = 3\n");
    let base = image_esp(&sys, "64M");
    let n = crash_points(&mut sys, base);
    println!("image backend: {n} crash points tried");
    assert!(n >= 9, "only {n} crash points fired");
}

#[test]
fn full_esp_refuses_before_writing_and_delete_makes_room_directory() {
    let mut sys = SystemTree::new();
    let mnt = Tmpfs::new(&sys.path("esp"), "24M");
    let t = Target::Dir(mnt.dir.clone());
    sys.switch(&support::kernel(CLOUD), ""); // 14 MB
    ok(install(&sys, &t, &[]));
    sys.switch(&support::kernel(GENERIC), ""); // 8 MB
    sys.switch(&third_kernel(sys.tmp.path()), ""); // 8 MB
    let before = t.tree();
    let o = install(&sys, &t, &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("too little free space") && e.contains("more"),
        "{e}"
    );
    assert!(e.contains("genboot delete 1"), "{e}");
    assert!(e.contains("Nothing was written"), "{e}");
    assert_eq!(t.tree(), before, "the refused install changed the ESP");
    // Deleting what the message names makes room, even though the kernel
    // files of generation 1 are only removed after... nothing is written
    // first: removal runs first when it has to.
    let o = with(&sys, &t, &["delete", "1"]);
    ok(o.clone());
    assert!(stderr(&o).contains("short of space"), "{}", stderr(&o));
    let b = t.judge(&sys.path("mnt"));
    assert_eq!(b.default.as_deref(), Some("genboot-3.conf"), "{}", b.output);
    assert!(!b.ids.contains(&"genboot-1.conf".to_string()));
}

#[test]
fn full_esp_refuses_before_writing_image() {
    let mut sys = SystemTree::new();
    sys.switch(&support::kernel(GENERIC), "");
    let t = image_esp(&sys, "40M");
    // Fill the ESP with someone else's 26 MB file, through mtools.
    let Target::Image(img) = &t else {
        unreachable!()
    };
    let junk = sys.path("vendor.bin");
    std::fs::write(&junk, vec![0x5a; 26 << 20]).unwrap();
    mtool("mcopy", img, &[junk.to_str().unwrap(), "::/vendor.bin"]);
    sys.switch(&support::kernel(CLOUD), "");
    let before = sha(img);
    let o = install(&sys, &t, &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("too little free space") && e.contains("Nothing was written"),
        "{e}"
    );
    assert_eq!(sha(img), before, "the refused install changed the image");
    fsck_image(img);
}

#[test]
fn boot_counting_keeps_counters_and_bless_drops_them() {
    let mut sys = SystemTree::new();
    let generic = support::kernel(GENERIC);
    sys.switch(&generic, "[boot]\ntries = 3\n");
    sys.switch(&support::kernel(CLOUD), "[boot]\ntries = 3\n");
    let t = dir_esp(&sys);
    let Target::Dir(d) = &t else { unreachable!() };
    let e = d.join("loader/entries");
    ok(install(&sys, &t, &[]));
    let names0 = entries(&t.tree());
    assert!(names0.contains(&"genboot-1+3.conf".into()), "{names0:?}");
    assert!(names0.contains(&"genboot-2+3.conf".into()), "{names0:?}");
    assert!(
        names0.contains(&"genboot-2-recovery.conf".into()),
        "{names0:?}"
    );
    // systemd-boot counted one failed boot of generation 1.
    std::fs::rename(e.join("genboot-1+3.conf"), e.join("genboot-1+2-1.conf")).unwrap();
    let o = install(&sys, &t, &[]);
    ok(o.clone());
    assert_eq!(written(&o), (0, 0));
    assert!(e.join("genboot-1+2-1.conf").exists());
    // Generation 2 used up its tries: kept, but not the default.
    std::fs::rename(e.join("genboot-2+3.conf"), e.join("genboot-2+0-3.conf")).unwrap();
    ok(install(&sys, &t, &[]));
    let tr = t.tree();
    assert_one_file_per_entry(&tr);
    assert!(tr.contains_key("loader/entries/genboot-2+0-3.conf"));
    let conf = String::from_utf8(tr["loader/loader.conf"].clone()).unwrap();
    assert!(conf.contains("default genboot-1[.+][c1-9]*\n"), "{conf}");
    assert!(tr.contains_key("loader/entries/genboot-1-recovery.conf"));
    // The machine got a machine-id (issue 13): every entry's text changes,
    // but each boots the same generation, so its counter stays (a reset
    // would forget generation 2's three failed boots).
    std::fs::create_dir_all(sys.root.join("etc")).unwrap();
    std::fs::write(
        sys.root.join("etc/machine-id"),
        "00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    ok(install(&sys, &t, &[]));
    let tr = t.tree();
    assert_one_file_per_entry(&tr);
    for kept in ["genboot-1+2-1.conf", "genboot-2+0-3.conf"] {
        let text = tr
            .get(&format!("loader/entries/{kept}"))
            .unwrap_or_else(|| panic!("{kept}: {:?}", names(&tr)));
        assert!(
            String::from_utf8_lossy(text).contains("\nmachine-id 00112233"),
            "{kept}"
        );
    }
    let conf = String::from_utf8(tr["loader/loader.conf"].clone()).unwrap();
    assert!(conf.contains("default genboot-1[.+][c1-9]*\n"), "{conf}");
    // The booted system blesses its entry.
    let gen1 = std::fs::read_link(sys.root.join("var/lib/genboot/profiles/system-1-link")).unwrap();
    let obj = gen1.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::create_dir_all(sys.root.join("run/genboot")).unwrap();
    std::fs::write(
        sys.root.join("run/genboot/booted"),
        format!("/var/lib/genboot/store/{obj}\n"),
    )
    .unwrap();
    let o = with(&sys, &t, &["bless"]);
    ok(o.clone());
    assert!(e.join("genboot-1.conf").exists(), "{}", stderr(&o));
    assert!(!e.join("genboot-1+3.conf").exists());
    // Reinstalling keeps the blessed entry as it is.
    let o = install(&sys, &t, &[]);
    assert!(e.join("genboot-1.conf").exists(), "{}", stderr(&o));
    assert_one_file_per_entry(&t.tree());
    let s = ok(with(&sys, &t, &["status", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(v["booted"], 1, "{s}");
    assert_eq!(v["current"], 2, "{s}");
    t.judge(&sys.path("mnt"));
}

#[test]
fn bless_prefers_loader_boot_count_path() {
    let mut sys = SystemTree::new();
    sys.switch(&support::kernel(GENERIC), "[boot]\ntries = 3\n");
    sys.switch(&support::kernel(CLOUD), "[boot]\ntries = 3\n");
    let t = dir_esp(&sys);
    ok(install(&sys, &t, &[]));
    // Firmware variables say systemd-boot booted generation 1's file.
    let vars = sys.root.join("sys/firmware/efi/efivars");
    std::fs::create_dir_all(&vars).unwrap();
    let mut v = vec![6u8, 0, 0, 0];
    for u in "\\loader\\entries\\genboot-1+3.conf"
        .encode_utf16()
        .chain([0])
    {
        v.extend_from_slice(&u.to_le_bytes());
    }
    std::fs::write(
        vars.join("LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"),
        v,
    )
    .unwrap();
    ok(with(&sys, &t, &["bless"]));
    let names = entries(&t.tree());
    assert!(names.contains(&"genboot-1.conf".into()), "{names:?}");
    assert!(names.contains(&"genboot-2+3.conf".into()), "{names:?}");
}

/// Issue 13 item 6: with Debian's systemd-boot package, systemd-bless-boot
/// blesses the entry first (renaming the file LoaderBootCountPath names);
/// `genboot bless` after it (genboot-bless.service is ordered after it)
/// must succeed, not fail with "no boot entry for genboot-1+2-1.conf".
/// So must a second run, and one after the renamed file got a counter
/// again from nobody (only the plain name is there).
#[test]
fn bless_after_systemd_bless_boot_renamed_the_entry_exits_0() {
    let mut sys = SystemTree::new();
    sys.switch(&support::kernel(GENERIC), "[boot]\ntries = 3\n");
    sys.switch(&support::kernel(CLOUD), "[boot]\ntries = 3\n");
    let t = dir_esp(&sys);
    ok(install(&sys, &t, &[]));
    let Target::Dir(d) = &t else { unreachable!() };
    let e = d.join("loader/entries");
    // systemd-boot counted this boot of generation 2 and said so.
    std::fs::rename(e.join("genboot-2+3.conf"), e.join("genboot-2+2-1.conf")).unwrap();
    let vars = sys.root.join("sys/firmware/efi/efivars");
    std::fs::create_dir_all(&vars).unwrap();
    let mut v = vec![6u8, 0, 0, 0];
    for u in "\\loader\\entries\\genboot-2+2-1.conf"
        .encode_utf16()
        .chain([0])
    {
        v.extend_from_slice(&u.to_le_bytes());
    }
    std::fs::write(
        vars.join("LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"),
        v,
    )
    .unwrap();
    // systemd-bless-boot good: the same rename, by someone else.
    std::fs::rename(e.join("genboot-2+2-1.conf"), e.join("genboot-2.conf")).unwrap();
    let before = t.tree();
    for _ in 0..2 {
        let o = with(&sys, &t, &["bless"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stderr(&o).contains("nothing to do"), "{}", stderr(&o));
        assert_eq!(t.tree(), before, "an idempotent bless changed the ESP");
    }
    // An entry for another generation of that name is not "already blessed".
    std::fs::remove_file(e.join("genboot-2.conf")).unwrap();
    let o = with(&sys, &t, &["bless"]);
    assert!(
        !o.status.success(),
        "bless without the booted entry succeeded"
    );
    assert!(stderr(&o).contains("genboot-2+2-1.conf"), "{}", stderr(&o));
}

/// Issue 13 item 7: in a booted system the ESP is found the way bootctl
/// finds it, from the partition the firmware names
/// (`LoaderDevicePartUUID`); when that partition is not mounted, `status`,
/// a profile change and `install` say which one it is and how to mount it
/// (instead of "none found").
#[test]
fn the_esp_the_firmware_booted_from_is_named_with_how_to_mount_it() {
    let mut sys = SystemTree::new();
    sys.switch(&support::kernel(CLOUD), "");
    sys.switch(&support::kernel(GENERIC), "");
    let vars = sys.root.join("sys/firmware/efi/efivars");
    std::fs::create_dir_all(&vars).unwrap();
    let mut v = vec![6u8, 0, 0, 0];
    for u in "65737000-0000-4000-8000-000000000001"
        .encode_utf16()
        .chain([0])
    {
        v.extend_from_slice(&u.to_le_bytes());
    }
    std::fs::write(
        vars.join("LoaderDevicePartUUID-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"),
        v,
    )
    .unwrap();
    let links = sys.root.join("dev/disk/by-partuuid");
    std::fs::create_dir_all(&links).unwrap();
    std::fs::write(sys.root.join("dev/vda1"), b"").unwrap();
    std::os::unix::fs::symlink(
        "../../vda1",
        links.join("65737000-0000-4000-8000-000000000001"),
    )
    .unwrap();
    let said = ok(sys.run(&["status"]));
    for want in [
        "PARTUUID=65737000-0000-4000-8000-000000000001 (/dev/vda1)",
        "not mounted",
        "mount /dev/vda1 /efi",
    ] {
        assert!(said.contains(want), "status should say {want:?}:\n{said}");
    }
    let o = sys.run(&["rollback"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not mounted") && stderr(&o).contains("mount /dev/vda1 /efi"),
        "{}",
        stderr(&o)
    );
    let o = sys.run(&["install"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not mounted") && stderr(&o).contains("mount /dev/vda1 /efi"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn limit_drops_old_generations_but_keeps_protected_ones() {
    let mut sys = SystemTree::new();
    let generic = support::kernel(GENERIC);
    let t = dir_esp(&sys);
    for i in 1..=5 {
        let cfg = sys.config(&generic, "[boot]\ntries = 3\nlimit = 2\n");
        // Different kernel params make different generations.
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            "\"console=ttyS0\"",
            &format!("\"console=ttyS0\", \"gen={i}\""),
        );
        std::fs::write(&cfg, text).unwrap();
        ok(sys.run(&["switch", "--config", cfg.to_str().unwrap()]));
        if i == 1 {
            ok(install(&sys, &t, &[]));
            let Target::Dir(d) = &t else { unreachable!() };
            let e = d.join("loader/entries");
            std::fs::rename(e.join("genboot-1+3.conf"), e.join("genboot-1.conf")).unwrap();
        }
    }
    // Generation 2 is the one running.
    let g2 = std::fs::read_link(sys.root.join("var/lib/genboot/profiles/system-2-link")).unwrap();
    std::fs::create_dir_all(sys.root.join("run/genboot")).unwrap();
    std::fs::write(
        sys.root.join("run/genboot/booted"),
        format!(
            "/var/lib/genboot/store/{}\n",
            g2.file_name().unwrap().to_string_lossy()
        ),
    )
    .unwrap();
    ok(install(&sys, &t, &[]));
    let mut gens: Vec<String> = entries(&t.tree())
        .into_iter()
        .filter(|n| !n.contains("recovery"))
        .map(|n| n.split(['+', '.']).next().unwrap().to_string())
        .collect();
    gens.sort();
    // limit 2 → 4, 5; booted → 2; last blessed → 1.
    assert_eq!(gens, ["genboot-1", "genboot-2", "genboot-4", "genboot-5"]);
    // Rolling back and deleting: the menu never shows a deleted generation.
    std::fs::remove_file(sys.root.join("run/genboot/booted")).unwrap();
    ok(with(&sys, &t, &["delete", "4"]));
    let names = entries(&t.tree());
    assert!(
        !names.iter().any(|n| n.starts_with("genboot-4")),
        "{names:?}"
    );
    t.judge(&sys.path("mnt"));
}

#[test]
fn esp_that_is_not_fat_or_missing_is_refused() {
    let mut sys = SystemTree::new();
    sys.switch(&support::kernel(GENERIC), "");
    let plain = sys.path("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let o = sys.run(&["--esp", plain.to_str().unwrap(), "install"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("is not an EFI System Partition") && e.contains("not FAT"),
        "{e}"
    );
    assert!(tree(&plain).is_empty());
    let m = Tmpfs::new(&sys.path("tmpfs"), "8M");
    let o = sys.run(&["--esp", m.dir.to_str().unwrap(), "install"]);
    let e = stderr(&o);
    assert!(e.contains("tmpfs file system, not FAT"), "{e}");
    let o = sys.run(&["--esp", sys.path("nowhere").to_str().unwrap(), "install"]);
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    // Nothing given, nothing mounted: install fails, switch notes it.
    let o = sys.run(&["install"]);
    assert!(
        stderr(&o).contains("no EFI System Partition found"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn image_without_an_esp_is_refused() {
    let mut sys = SystemTree::new();
    sys.switch(&support::kernel(GENERIC), "");
    let img = sys.path("noesp.img");
    std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
    let o = sys.run(&["--image", img.to_str().unwrap(), "install"]);
    assert!(stderr(&o).contains("no GPT"), "{}", stderr(&o));
    let st = std::process::Command::new("sgdisk")
        .args(["-n", "1:2048:0", "-t", "1:8300"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(st.status.success());
    let before = sha(&img);
    let o = sys.run(&["--image", img.to_str().unwrap(), "install"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no EFI System Partition"),
        "{}",
        stderr(&o)
    );
    assert_eq!(sha(&img), before);
}

#[test]
fn read_only_image_is_refused_and_unchanged() {
    let mut sys = SystemTree::new();
    sys.switch(&support::kernel(GENERIC), "");
    let t = image_esp(&sys, "40M");
    let Target::Image(img) = &t else {
        unreachable!()
    };
    sys.switch(&support::kernel(CLOUD), "");
    let mut perm = std::fs::metadata(img).unwrap().permissions();
    perm.set_readonly(true);
    std::fs::set_permissions(img, perm).unwrap();
    let before = sha(img);
    let o = install(&sys, &t, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is read-only"), "{}", stderr(&o));
    assert_eq!(sha(img), before);
}

#[test]
fn foreign_entries_are_left_alone_and_lookalikes_reported() {
    for image in [false, true] {
        let mut sys = SystemTree::new();
        sys.switch(&support::kernel(GENERIC), "");
        sys.switch(&support::kernel(CLOUD), "");
        let t = if image {
            image_esp(&sys, "64M")
        } else {
            dir_esp(&sys)
        };
        ok(install(&sys, &t, &[]));
        let tr = t.tree();
        let shared = tr
            .keys()
            .find(|k| k.contains("-linux-6.1.0-50"))
            .unwrap()
            .clone();
        let debian = format!("title Debian\nlinux /{shared}\noptions root=/dev/sda2\n");
        let fake = "title hand-made\nlinux /vmlinuz\n";
        let put = |name: &str, text: &str| match &t {
            Target::Dir(d) => std::fs::write(d.join("loader/entries").join(name), text).unwrap(),
            Target::Image(img) => {
                let f = sys.path(name);
                std::fs::write(&f, text).unwrap();
                let dest = format!("::/loader/entries/{name}");
                mtool("mcopy", img, &["-o", f.to_str().unwrap(), &dest]);
            }
        };
        put("debian.conf", &debian);
        // Overwrites genboot's own entry for generation 1 with a hand-made one.
        let tr = t.tree();
        let g1 = entries(&tr)
            .into_iter()
            .find(|n| n.starts_with("genboot-1"))
            .unwrap();
        put(&g1, fake);
        put("genboot-7.conf", fake);
        // Generation 1 is deleted: its entry is not genboot's, so it stays;
        // its kernel is used by debian.conf, so it stays too.
        let o = with(&sys, &t, &["delete", "1"]);
        ok(o.clone());
        let e = stderr(&o);
        assert!(
            e.contains(&format!(
                "loader/entries/{g1} is named like a genboot entry but genboot did not write it"
            )),
            "{e}"
        );
        assert!(e.contains("genboot-7.conf"), "{e}");
        let tr = t.tree();
        assert_eq!(tr["loader/entries/debian.conf"], debian.as_bytes());
        assert_eq!(tr[&format!("loader/entries/{g1}")], fake.as_bytes());
        assert_eq!(tr["loader/entries/genboot-7.conf"], fake.as_bytes());
        assert!(tr.contains_key(&shared), "{:?}", names(&tr));
        if let Target::Image(i) = &t {
            fsck_image(i);
        }
    }
}

#[test]
fn set_oneshot_needs_efi_and_writes_the_entry_file_with_its_counter() {
    let mut sys = SystemTree::new();
    sys.switch(&support::kernel(GENERIC), "[boot]\ntries = 3\n");
    sys.switch(&support::kernel(CLOUD), "[boot]\ntries = 3\n");
    let o = sys.run(&["set-oneshot", "1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not booted through EFI"),
        "{}",
        stderr(&o)
    );
    let o = sys.run(&["set-oneshot", "9"]);
    assert!(
        stderr(&o).contains("generation 9 does not exist"),
        "{}",
        stderr(&o)
    );
    // An efivarfs stand-in below --root: the exact bytes systemd-boot reads.
    let vars = sys.root.join("sys/firmware/efi/efivars");
    std::fs::create_dir_all(&vars).unwrap();
    let var = vars.join("LoaderEntryOneShot-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f");
    // No ESP: the entry's file name cannot be known; nothing is written.
    let o = sys.run(&["set-oneshot", "1"]);
    assert!(
        !o.status.success() && stderr(&o).contains("no EFI System Partition found"),
        "{}",
        stderr(&o)
    );
    assert!(!var.exists());
    let t = dir_esp(&sys);
    ok(install(&sys, &t, &[]));
    // systemd-boot counted a boot of generation 1: its id is now the
    // counted file name, which is what the variable must hold (systemd-boot
    // 252 compares the whole name, counter included).
    let e = match &t {
        Target::Dir(d) => d.join("loader/entries"),
        Target::Image(_) => unreachable!(),
    };
    std::fs::rename(e.join("genboot-1+3.conf"), e.join("genboot-1+2-1.conf")).unwrap();
    let o = with(&sys, &t, &["set-oneshot", "1"]);
    ok(o.clone());
    assert!(stderr(&o).contains("genboot-1+2-1.conf"), "{}", stderr(&o));
    let data = std::fs::read(&var).unwrap();
    let mut want = vec![7u8, 0, 0, 0];
    for u in "genboot-1+2-1.conf".encode_utf16().chain([0]) {
        want.extend_from_slice(&u.to_le_bytes());
    }
    assert_eq!(data, want);
}

#[test]
fn switch_with_esp_installs_right_away() {
    let mut sys = SystemTree::new();
    let t = dir_esp(&sys);
    let cfg = sys.config(&support::kernel(GENERIC), "");
    let mut args = t.args();
    args.extend([
        "switch".into(),
        "--config".into(),
        cfg.display().to_string(),
    ]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(sys.run_env(&[ANY], &a));
    assert!(entries(&t.tree()).contains(&"genboot-1.conf".into()));
    ok(with(&sys, &t, &["install", "--install-loader"]));
    let tr = t.tree();
    assert!(tr.contains_key("EFI/BOOT/BOOTX64.EFI"));
    assert!(tr.contains_key("EFI/systemd/systemd-bootx64.efi"));
}

#[test]
fn rollback_and_gc_update_the_menu_right_away() {
    let mut sys = SystemTree::new();
    let generic = support::kernel(GENERIC);
    sys.switch(&support::kernel(CLOUD), "");
    sys.switch(&generic, "");
    sys.switch(&third_kernel(sys.tmp.path()), "");
    let t = dir_esp(&sys);
    ok(install(&sys, &t, &[]));
    // Rollback: generation 2 becomes the default and gets the recovery entry.
    ok(with(&sys, &t, &["rollback"]));
    let tr = t.tree();
    let conf = String::from_utf8(tr["loader/loader.conf"].clone()).unwrap();
    assert!(conf.contains("default genboot-2[.+][c1-9]*\n"), "{conf}");
    let names = entries(&tr);
    assert!(
        names.contains(&"genboot-2-recovery.conf".into()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"genboot-3-recovery.conf".into()),
        "{names:?}"
    );
    // gc --keep 1 keeps the newest (3) and the current (2), deletes 1: its
    // entry and the cloud kernel only it used go; the menu never shows a
    // deleted generation.
    let o = with(&sys, &t, &["gc", "--keep", "1"]);
    ok(o);
    let tr = t.tree();
    let names = entries(&tr);
    assert_eq!(
        names,
        [
            "genboot-2-recovery.conf",
            "genboot-2.conf",
            "genboot-3.conf"
        ],
        "{names:?}"
    );
    let kernels: Vec<&String> = tr
        .keys()
        .filter(|k| k.starts_with("EFI/genboot/"))
        .collect();
    assert_eq!(
        kernels.iter().filter(|k| k.contains("-linux-")).count(),
        2,
        "{kernels:?}"
    );
    assert!(!kernels.iter().any(|k| k.contains("cloud")), "{kernels:?}");
    t.judge(&sys.path("mnt"));
}

#[test]
fn configured_esp_is_used_and_no_esp_is_a_note() {
    let mut sys = SystemTree::new();
    let generic = support::kernel(GENERIC);
    // No ESP anywhere: switch succeeds and says the menu was not updated.
    let cfg = sys.config(&generic, "");
    let o = sys.run(&["switch", "--config", cfg.to_str().unwrap()]);
    ok(o.clone());
    assert!(
        stderr(&o).contains("the boot menu was not updated: no EFI System Partition found"),
        "{}",
        stderr(&o)
    );
    // [boot] esp (below --root) is used by switch and remembered by install.
    std::fs::create_dir_all(sys.root.join("boot/efi")).unwrap();
    let cfg = sys.config(&support::kernel(CLOUD), "[boot]\nesp = \"/boot/efi\"\n");
    ok(sys.run_env(&[ANY], &["switch", "--config", cfg.to_str().unwrap()]));
    let esp = sys.root.join("boot/efi");
    assert!(entries(&tree(&esp)).contains(&"genboot-2.conf".into()));
    let o = sys.run_env(&[ANY], &["install"]);
    ok(o.clone());
    assert_eq!(written(&o), (0, 0), "{}", stderr(&o));
}

#[test]
fn one_damaged_generation_does_not_block_installs() {
    let mut sys = SystemTree::new();
    sys.switch(&support::kernel(CLOUD), "");
    sys.switch(&support::kernel(GENERIC), "");
    let t = dir_esp(&sys);
    ok(install(&sys, &t, &[]));
    let before = t.tree();
    // Generation 1's boot.json is damaged.
    let link = std::fs::read_link(sys.root.join("var/lib/genboot/profiles/system-1-link")).unwrap();
    let obj = sys.store().join(link.file_name().unwrap());
    let bj = obj.join("boot.json");
    let mut perm = std::fs::metadata(&obj).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&obj, perm).unwrap();
    let _ = std::fs::remove_file(&bj);
    std::fs::write(&bj, "{ not json").unwrap();
    sys.switch(&third_kernel(sys.tmp.path()), "");
    let o = install(&sys, &t, &[]);
    ok(o.clone());
    let e = stderr(&o);
    assert!(
        e.contains("generation 1 is left out of the boot menu"),
        "{e}"
    );
    let tr = t.tree();
    // Its entry and files stay; the new generation is installed.
    assert_eq!(
        tr["loader/entries/genboot-1.conf"],
        before["loader/entries/genboot-1.conf"]
    );
    assert!(
        tr.contains_key("loader/entries/genboot-3.conf"),
        "{:?}",
        names(&tr)
    );
    t.judge(&sys.path("mnt"));
}

/// Replace every 32-hex-digit store hash with `<hash>`, and the ownership
/// digest line (it covers the hashes) with `<digest>`.
fn normalise_hashes(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("# written by genboot ") {
            out.push_str("# written by genboot <digest>\n");
            continue;
        }
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let run = b[i..]
                .iter()
                .take_while(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
                .count();
            if run == 32 && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
                out.push_str("<hash>");
                i += 32;
            } else {
                out.push(b[i] as char);
                i += 1;
            }
        }
        out.push('\n');
    }
    out
}

#[test]
fn installed_entries_and_loader_conf_match_the_golden_files() {
    let mut sys = SystemTree::new();
    sys.switch(&support::kernel(CLOUD), "");
    sys.switch(&support::kernel(GENERIC), "");
    let cfg = sys.config(
        &support::kernel(GENERIC),
        "[boot]\ntries = 3\ntimeout = 5\n",
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("Test system", "Debian 12");
    std::fs::write(&cfg, text).unwrap();
    ok(sys.run(&["switch", "--config", cfg.to_str().unwrap()]));
    std::fs::create_dir_all(sys.root.join("etc")).unwrap();
    std::fs::write(
        sys.root.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    sys.fix_dates();
    let t = dir_esp(&sys);
    ok(install(&sys, &t, &[]));
    let tr = t.tree();
    let golden = |name: &str| {
        std::fs::read_to_string(support::repo().join("tests/golden").join(name)).unwrap()
    };
    assert_eq!(
        String::from_utf8(tr["loader/loader.conf"].clone()).unwrap(),
        golden("loader.conf")
    );
    for (file, g) in [
        ("genboot-3+3.conf", "genboot-3+3.conf"),
        ("genboot-3-recovery.conf", "genboot-3-recovery.conf"),
    ] {
        let got = String::from_utf8(tr[&format!("loader/entries/{file}")].clone()).unwrap();
        assert_eq!(
            normalise_hashes(&got),
            normalise_hashes(&golden(g)),
            "{file}"
        );
    }
}

#[test]
fn full_esp_delete_makes_room_image() {
    let mut sys = SystemTree::new();
    sys.switch(&support::kernel(CLOUD), ""); // 14 MB kernel
    let t = image_esp(&sys, "40M");
    let Target::Image(img) = &t else {
        unreachable!()
    };
    // Someone else's 10 MB file leaves about 13 MB free.
    let junk = sys.path("vendor.bin");
    std::fs::write(&junk, vec![0x5a; 10 << 20]).unwrap();
    mtool("mcopy", img, &[junk.to_str().unwrap(), "::/vendor.bin"]);
    sys.switch(&support::kernel(GENERIC), ""); // 8 MB
    sys.switch(&third_kernel(sys.tmp.path()), ""); // 8 MB
    let before = sha(img);
    let o = install(&sys, &t, &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("genboot delete 1"), "{e}");
    assert_eq!(sha(img), before);
    // Deleting generation 1 makes room: its files go first, then the rest
    // is written.
    let o = with(&sys, &t, &["delete", "1"]);
    ok(o.clone());
    assert!(stderr(&o).contains("short of space"), "{}", stderr(&o));
    let b = t.judge(&sys.path("mnt"));
    assert_eq!(b.default.as_deref(), Some("genboot-3.conf"), "{}", b.output);
    assert!(!b.ids.contains(&"genboot-1.conf".to_string()));
    assert!(t.tree().contains_key("vendor.bin"));
}
