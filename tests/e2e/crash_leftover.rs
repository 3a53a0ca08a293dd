//! End to end under UEFI: an install into the image killed at its worst
//! moment still boots. The install adds a generation; it is stopped right
//! after the write that points `loader.conf` at the new default entry —
//! the volume is left dirty, with the old `loader.conf` chain unfreed and
//! the removals not done (`fsck.fat -n` complains). OVMF + systemd-boot boot
//! the new default from that leftover (and count the try by renaming its
//! entry, a write of the firmware's own on the leftover); then one genboot
//! run on the host leaves a volume `fsck.fat -n` calls clean that keeps the
//! counted entry.

use crate::support::{self, judges, scenario::*};

#[test]
fn install_killed_after_loader_conf_moved_boots_the_new_default_and_one_rerun_cleans_up() {
    let s = Scenario::new("e2e_crash_leftover", std::time::Duration::from_secs(1200));
    let k = support::kernel(support::CLOUD);
    let counting = "[boot]\ntries = 3\n";
    let first = s.config("E2E first", &k, counting);
    let second = s.config("E2E second", &k, counting);
    let third = s.config("E2E third", &k, counting);
    // The image's root file system holds all three generations; the ESP
    // is then brought back to generations 1 and 2 (default 2), so that
    // installing the third one again is "an install that adds a
    // generation" whose store objects are on the image.
    s.image(&[&first, &second, &third]);
    let g3 = s.generation(3);
    s.genboot(&["rollback"]);
    s.genboot(&["delete", "3"]);
    let host = |args: &[&str]| {
        let mut c = support::genboot();
        c.arg("--root").arg(&s.tree).args(args);
        support::ok(c.output().unwrap())
    };
    // Generation 3 again (numbers continue after the newest left): the
    // same store object.
    host(&["switch", "--config", third.to_str().unwrap()]);
    assert_eq!(
        s.generation(3),
        g3,
        "the third configuration builds the same generation again"
    );

    // Where to stop: find the write that points loader.conf at the new
    // default in a traced, uninterrupted run on a copy.
    let copy = s.dir.join("trace.img");
    let trace = s.dir.join("install.trace");
    support::esp::copy_image(&s.image, &copy);
    let mut c = support::genboot();
    c.arg("--root")
        .arg(&s.tree)
        .arg("--image")
        .arg(&copy)
        .arg("install")
        .env("GENBOOT_WRITE_TRACE", &trace);
    support::ok(c.output().unwrap());
    let _ = std::fs::remove_file(&copy);
    let lines: Vec<String> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let at = lines
        .iter()
        .rposition(|l| l.contains("directory /loader (") && l.contains("loader.conf"))
        .unwrap_or_else(|| {
            panic!(
                "no write of loader.conf's entry in the trace:\n{}",
                lines.join("\n")
            )
        });
    assert!(
        at + 1 < lines.len(),
        "the loader.conf write is the last one"
    );
    let stop = at + 2; // stop before the write after it (1-based)
    eprintln!(
        "stopping before write {stop} of {}: {}",
        lines.len(),
        lines[stop - 1]
    );

    let mut c = support::genboot();
    c.arg("--root")
        .arg(&s.tree)
        .arg("--image")
        .arg(&s.image)
        .arg("install")
        .env("GENBOOT_KILL_AT_WRITE", stop.to_string());
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(99), "{}", support::stderr(&o));
    let (clean, fsck) = judges::fsck_output(&s.image);
    assert!(
        !clean,
        "the leftover should be an unfinished volume, but fsck.fat -n is content:\n{fsck}"
    );
    let conf = s.esp_read("/loader/loader.conf");
    assert!(conf.contains("default genboot-3[.+][c1-9]*"), "{conf}");

    let why = format!("the leftover's default (fsck.fat -n said:\n{fsck})");
    let (mut vm, _) = s.boot_expecting("leftover", 3, &why);
    vm.wait_exit(BOOT);
    let entries = s.esp_ls("/loader/entries");
    assert!(
        entries.iter().any(|e| e == "genboot-3+2-1.conf"),
        "systemd-boot should have counted the try on the leftover: {entries:?}"
    );

    // One run on the host finishes the job and cleans the volume up.
    let o = {
        let mut c = support::genboot();
        c.arg("--root")
            .arg(&s.tree)
            .arg("--image")
            .arg(&s.image)
            .arg("install");
        c.output().unwrap()
    };
    assert!(o.status.success(), "{}", support::stderr(&o));
    assert!(
        support::stderr(&o).contains("not cleanly unmounted"),
        "{}",
        support::stderr(&o)
    );
    let (clean, after) = judges::fsck_output(&s.image);
    assert!(clean, "fsck.fat -n after the re-run:\n{after}");
    let entries = s.esp_ls("/loader/entries");
    assert!(
        entries.iter().any(|e| e == "genboot-3+2-1.conf"),
        "the re-run must keep the counted entry: {entries:?}"
    );
    let copy = s.esp_copy();
    let list = copy.bootctl_list();
    assert!(!list.contains("No such file"), "{list}");
}
