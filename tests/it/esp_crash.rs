//! Kills inside the image backend's writes. The named failpoints of
//! `tests/it/esp.rs` stop genboot between whole steps; here a run is stopped
//! before *every one* of its writes to the FAT volume
//! (`GENBOOT_KILL_AT_WRITE=K`, at the I/O layer), and by a real `kill -9`
//! at 20 moments of a real `genboot install` process. At every point the
//! leftover image boots its default entry (judged by `bootctl list` on a
//! copy of the ESP, and by the bytes of the files the entry names), and ONE
//! re-run leaves an ESP that `fsck.fat -n` calls clean and that equals the
//! ESP of the uninterrupted run, file for file, byte for byte.
//!
//! Cost: every point copies the base image and runs genboot twice, mtools,
//! `bootctl` and `fsck.fat` once or twice; the points run on two threads.

use crate::support;
use crate::support::esp::*;
use crate::support::judges::*;
use crate::support::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Tree = BTreeMap<String, Vec<u8>>;

/// `genboot --image IMG VERB...` with extra environment.
fn genboot_on(
    sys: &SystemTree,
    img: &Path,
    verb: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut args = vec!["--image", img.to_str().unwrap()];
    args.extend_from_slice(verb);
    sys.run_env(env, &args)
}

/// Run `verb` on a copy of `base` uninterrupted, with the write trace:
/// the reference ESP and the trace (`n offset length what`, one per write).
fn reference(sys: &SystemTree, base: &Path, verb: &[&str]) -> (Tree, Vec<String>) {
    let img = sys.path("reference.img");
    let trace = sys.path("reference.trace");
    let _ = std::fs::remove_file(&trace);
    copy_image(base, &img);
    let o = genboot_on(
        sys,
        &img,
        verb,
        &[("GENBOOT_WRITE_TRACE", trace.to_str().unwrap())],
    );
    ok(o);
    let (clean, out) = fsck_output(&img);
    assert!(clean, "fsck.fat -n after the uninterrupted run:\n{out}");
    let tree = image_tree(&img);
    let lines = std::fs::read_to_string(&trace)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let _ = std::fs::remove_file(&img);
    (tree, lines)
}

/// Judge a leftover image `img` (after a stop), then re-run `verb` once and
/// judge the result against `want`. `Err` says what is wrong.
fn judge(
    sys: &SystemTree,
    img: &Path,
    verb: &[&str],
    want: &Tree,
    scratch: &Path,
) -> Result<String, String> {
    let left = image_tree(img);
    assert_one_file_per_entry(&left);
    let default = check_default_boots(sys, &left, scratch).map_err(|e| format!("leftover: {e}"))?;
    let o = genboot_on(sys, img, verb, &[]);
    if !o.status.success() {
        return Err(format!("the re-run failed: {}", stderr(&o)));
    }
    let (clean, out) = fsck_output(img);
    if !clean {
        return Err(format!(
            "fsck.fat -n after one re-run:\n{out}\nre-run said:\n{}",
            stderr(&o)
        ));
    }
    let got = image_tree(img);
    if names(&got) != names(want) {
        return Err(format!(
            "after one re-run the ESP holds {:?}, the uninterrupted run {:?}",
            names(&got),
            names(want)
        ));
    }
    if let Some(k) = got.keys().find(|k| got[*k] != want[*k]) {
        return Err(format!(
            "after one re-run {k} differs from the uninterrupted run's"
        ));
    }
    Ok(default)
}

/// Stop `verb` on a copy of `base` before each write `k` in `points`, on
/// two threads; every point judged by [`judge`]. Returns the defaults the
/// leftovers booted, per point.
fn sweep(
    sys: &SystemTree,
    base: &Path,
    verb: &[&str],
    want: &Tree,
    points: &[usize],
) -> Vec<(usize, String)> {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let booted = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for worker in 0..2 {
            let (next, failures, booted) = (&next, &failures, &booted);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&k) = points.get(i) else { break };
                let img = sys.path(&format!("point-{worker}.img"));
                copy_image(base, &img);
                let o = genboot_on(
                    sys,
                    &img,
                    verb,
                    &[("GENBOOT_KILL_AT_WRITE", &k.to_string())],
                );
                let result = if o.status.code() != Some(99) {
                    Err(format!(
                        "expected the stop (exit 99), got {:?}: {}",
                        o.status,
                        stderr(&o)
                    ))
                } else {
                    let scratch = sys.path(&format!("mnt-{worker}"));
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        judge(sys, &img, verb, want, &scratch)
                    }))
                    .unwrap_or_else(|e| {
                        Err(e
                            .downcast_ref::<String>()
                            .cloned()
                            .unwrap_or_else(|| "panic".into()))
                    })
                };
                let _ = std::fs::remove_file(&img);
                match result {
                    Ok(d) => booted.lock().unwrap().push((k, d)),
                    Err(e) => failures
                        .lock()
                        .unwrap()
                        .push(format!("stopped before write {k}: {e}")),
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} stop points failed:\n{}",
        failures.len(),
        points.len(),
        failures.join("\n\n")
    );
    let mut b = booted.into_inner().unwrap();
    b.sort();
    b
}

/// Which kinds of write a trace holds (`data`, `FAT copy 1`, `directory`, …).
fn phases(trace: &[String]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for l in trace {
        let what = l.splitn(4, ' ').nth(3).unwrap_or("");
        let kind = if what.starts_with("data") {
            "data"
        } else if what.starts_with("FAT copy 1") {
            "FAT copy 1"
        } else if what.starts_with("FAT copy 2") {
            "FAT copy 2"
        } else if what.starts_with("directory") {
            "directory"
        } else if what.starts_with("boot sector") {
            "boot sector"
        } else if what.starts_with("FS information") {
            "FS information sector"
        } else {
            "other"
        };
        *out.entry(kind.to_string()).or_insert(0) += 1;
    }
    out
}

/// The base image of the install sweep and the profile change it installs:
/// generations 1 (cloud) and 2 (generic, the default) with boot counting
/// and 3 (cloud, without) on the image, systemd-boot counted a failed boot
/// of 2; then generations 1 and 3 deleted, a machine-id appears (every
/// entry changes; 2 keeps its counter) and a new generation 3 (a third
/// kernel, counted) is added. The install writes a kernel, renames and replaces a
/// counted entry (3: another generation under the number), replaces
/// another in place (2), writes the recovery entry and `loader.conf`,
/// removes an entry and a kernel and initrd.
fn install_scenario(sys: &mut SystemTree) -> PathBuf {
    let generic = support::kernel(GENERIC);
    let cloud = support::kernel(CLOUD);
    let variant = third_kernel(sys.tmp.path());
    sys.switch(&cloud, "[boot]\ntries = 3\n");
    sys.switch(&generic, "[boot]\ntries = 3\n");
    // Without counting: the new generation 3's fresh counter renames its
    // entry (in place: genboot wrote it in one sector; mtools' renames can
    // leave an entry across two, whose rename has a documented window with
    // two names, see src/esp/fat/fs.rs).
    sys.switch(&cloud, "");
    ok(sys.run(&["set-default", "2"]));
    sys.fix_dates();
    let base = sys.path("base.img");
    installed_image(sys, &base, 48);
    mtool(
        "mren",
        &base,
        &[
            "::/loader/entries/genboot-2+3.conf",
            "::/loader/entries/genboot-2+2-1.conf",
        ],
    );
    ok(sys.run(&["delete", "1", "3"]));
    std::fs::create_dir_all(sys.root.join("etc")).unwrap();
    std::fs::write(
        sys.root.join("etc/machine-id"),
        "00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    sys.switch(&variant, "[boot]\ntries = 3\n");
    sys.fix_dates();
    base
}

#[test]
fn a_stop_before_any_write_of_an_install_leaves_a_bootable_esp_and_one_rerun_converges() {
    let t0 = Instant::now();
    let mut sys = SystemTree::new();
    let base = install_scenario(&mut sys);
    let before = image_tree(&base);
    let old_default = check_default_boots(&sys, &before, &sys.path("mnt")).unwrap();
    let verb = ["install"];
    let (want, trace) = reference(&sys, &base, &verb);
    let new_default = check_default_boots(&sys, &want, &sys.path("mnt")).unwrap();
    assert_ne!(old_default, new_default);
    let kinds = phases(&trace);
    for k in [
        "data",
        "FAT copy 1",
        "FAT copy 2",
        "directory",
        "boot sector",
    ] {
        assert!(
            kinds.contains_key(k),
            "the install makes no {k} write: {trace:#?}"
        );
    }
    // Every write, and one past the last (the run completes).
    let points: Vec<usize> = (1..=trace.len()).collect();
    let booted = sweep(&sys, &base, &verb, &want, &points);
    let olds = booted.iter().filter(|(_, d)| *d == old_default).count();
    let news = booted.iter().filter(|(_, d)| *d == new_default).count();
    assert_eq!(olds + news, points.len(), "{booted:?}");
    assert!(olds > 0 && news > 0, "{booted:?}");
    println!(
        "install: stopped before each of its {} writes ({kinds:?}); the leftover booted {old_default} {olds} times, {new_default} {news} times; one re-run converged every time ({:.0} s)",
        trace.len(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn a_stop_before_any_write_of_gc_leaves_a_bootable_esp_and_one_rerun_converges() {
    let t0 = Instant::now();
    let mut sys = SystemTree::new();
    let variant = third_kernel(sys.tmp.path());
    sys.switch(&support::kernel(CLOUD), "");
    sys.switch(&support::kernel(GENERIC), "");
    sys.switch(&variant, "");
    sys.fix_dates();
    let base = sys.path("base.img");
    installed_image(&sys, &base, 48);
    // The profile side of gc once (no ESP given): every run below then
    // performs only gc's ESP work, the same each time.
    ok(sys.run(&["gc", "--keep", "1"]));
    let verb = ["gc", "--keep", "1"];
    let (want, trace) = reference(&sys, &base, &verb);
    assert!(
        !want
            .keys()
            .any(|k| k.contains("genboot-1") || k.contains("genboot-2")),
        "{:?}",
        names(&want)
    );
    assert!(trace.len() >= 10, "{trace:#?}");
    let points: Vec<usize> = (1..=trace.len()).collect();
    let booted = sweep(&sys, &base, &verb, &want, &points);
    assert!(
        booted.iter().all(|(_, d)| d == "genboot-3[.+][c1-9]*"),
        "{booted:?}"
    );
    println!(
        "gc: stopped before each of its {} writes ({:?}); every leftover booted genboot-3.conf; one re-run converged every time ({:.0} s)",
        trace.len(),
        phases(&trace),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn kill_9_at_20_moments_of_a_real_install_leaves_a_bootable_esp_and_one_rerun_converges() {
    let t0 = Instant::now();
    let mut sys = SystemTree::new();
    let base = install_scenario(&mut sys);
    let verb = ["install"];
    let (want, trace) = reference(&sys, &base, &verb);
    let img = sys.path("kill9.img");
    let run_trace = sys.path("kill9.trace");
    let spawn = |img: &Path| {
        let _ = std::fs::remove_file(&run_trace);
        let mut c = support::genboot();
        c.arg("--root")
            .arg(&sys.root)
            .arg("--image")
            .arg(img)
            .args(verb)
            .env("GENBOOT_WRITE_TRACE", &run_trace)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c.spawn().expect("genboot runs")
    };
    // How long the whole process takes, uninterrupted (median of 3).
    let mut times = Vec::new();
    for _ in 0..3 {
        copy_image(&base, &img);
        let t = Instant::now();
        let st = spawn(&img).wait().unwrap();
        times.push(t.elapsed());
        assert!(st.success());
    }
    times.sort();
    let run = times[1];
    let mut killed = Vec::new();
    let mut failures = Vec::new();
    let mut retries = 0u32;
    for i in 0..20u32 {
        // The i-th of 20 moments spread over the run; when the process
        // was faster this time and ended first (a loaded machine), the
        // same point again on a fresh copy, earlier (up to 6 tries).
        let mut at = run * (2 * i + 1) / 40;
        let (landed, writes) = loop {
            copy_image(&base, &img);
            let mut child = spawn(&img);
            let start = Instant::now();
            // Wait for the moment (or the end of the process), then SIGKILL.
            let ended = loop {
                if child.try_wait().unwrap().is_some() {
                    break true;
                }
                if start.elapsed() >= at {
                    break false;
                }
                std::thread::sleep(Duration::from_micros(200));
            };
            let landed = !ended && {
                child.kill().unwrap();
                use std::os::unix::process::ExitStatusExt;
                child.wait().unwrap().signal() == Some(9)
            };
            let writes = std::fs::read_to_string(&run_trace)
                .map(|t| t.lines().count())
                .unwrap_or(0);
            retries += u32::from(!landed);
            if landed || at < Duration::from_millis(1) || retries > 60 {
                break (landed, writes);
            }
            at = at * 2 / 3;
        };
        killed.push((at, landed, writes));
        if let Err(e) = judge(&sys, &img, &verb, &want, &sys.path("mnt")) {
            failures.push(format!("kill -9 at {at:?} (after {writes} writes): {e}"));
        }
    }
    let _ = std::fs::remove_file(&img);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let landed = killed.iter().filter(|k| k.1).count();
    let inside = killed
        .iter()
        .filter(|k| k.1 && k.2 > 0 && k.2 < trace.len())
        .count();
    println!(
        "kill -9: an uninterrupted install takes {run:?} ({} writes); of 20 kills {landed} landed while it ran ({retries} earlier tries came too late), {inside} of them between its first and last write (writes done before each kill: {:?}); every leftover booted, one re-run converged every time ({:.0} s)",
        trace.len(),
        killed.iter().map(|k| k.2).collect::<Vec<_>>(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        landed >= 18,
        "only {landed} of 20 kills landed while genboot ran: {killed:?}"
    );
}
