//! `cargo bench --bench build`: `genboot build` on the generic 6.1 test
//! kernel — cold (empty store), warm (unchanged inputs), warm with one
//! kernel parameter changed, another initrd module set — then where a cold
//! build's time goes, and the initrd per compression. Prints tables (medians of the runs).
//!
//! Needs the test kernels (`tools/fetch-kernels`, or GENBOOT_KERNEL_CACHE)
//! and the activator (`tools/build-activator`, or GENBOOT_ACTIVATOR).

#[path = "../tests/support/mod.rs"]
mod support;

use genboot::config::Compression;
use genboot::modules::{self, index, ModuleIndex};
use genboot::{generation, initrd, store};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const WANTED: [&str; 4] = ["virtio_blk", "virtio_pci", "ext4", "vfat"];
const RUNS: usize = 3;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn genboot_build(root: &Path, cfg: &Path, activator: &Path) -> (Duration, String) {
    let t = Instant::now();
    let o = support::genboot()
        .env("GENBOOT_ACTIVATOR", activator)
        .arg("--root")
        .arg(root)
        .args(["build", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    let d = t.elapsed();
    assert!(o.status.success(), "{}", support::stderr(&o));
    (d, support::stdout(&o).trim().to_string())
}

fn main() {
    let k = support::kernel(support::GENERIC);
    let activator = support::activator();
    let work = tempfile::tempdir().unwrap();
    let cfg = support::write_config(&work.path().join("cfg"), &k, &WANTED, "");

    // genboot build, end to end.
    let mut cold = Vec::new();
    let mut generation = String::new();
    for i in 0..RUNS {
        let root = work.path().join(format!("cold-{i}"));
        Command::new("sync").status().unwrap();
        let (d, g) = genboot_build(&root, &cfg, &activator);
        cold.push(d);
        generation = g;
    }
    let root = work.path().join("cold-0");
    let warm: Vec<Duration> = (0..RUNS * 2)
        .map(|_| genboot_build(&root, &cfg, &activator).0)
        .collect();
    let param: Vec<Duration> = (0..RUNS)
        .map(|i| {
            let c = support::write_config(&work.path().join(format!("cfg-p{i}")), &k, &WANTED, "");
            let text = std::fs::read_to_string(&c).unwrap().replace(
                "params = [\"console=ttyS0\"]",
                &format!("params = [\"console=ttyS0\", \"loglevel={i}\"]"),
            );
            std::fs::write(&c, text).unwrap();
            genboot_build(&root, &c, &activator).0
        })
        .collect();
    let sets: [&[&str]; 3] = [
        &["virtio_blk"],
        &["virtio_blk", "ext4"],
        &["virtio_blk", "vfat"],
    ];
    let other_set: Vec<Duration> = sets
        .iter()
        .enumerate()
        .map(|(i, set)| {
            let c = support::write_config(&work.path().join(format!("cfg-m{i}")), &k, set, "");
            genboot_build(&root, &c, &activator).0
        })
        .collect();
    let gen = Path::new(&generation);
    let initrd_size = std::fs::metadata(gen.join("initrd")).unwrap().len();
    let files = index::walk(&k.modules).unwrap();
    let idx = ModuleIndex::read(&k.modules, &k.release, &files).unwrap();
    let wanted: Vec<String> = WANTED.iter().map(|s| s.to_string()).collect();
    let closure = modules::closure(&idx, &wanted).unwrap();
    let tree_bytes: u64 = files.iter().map(|f| f.stamp.size).sum();

    println!(
        "genboot build, kernel {} ({} modules, {} MB), initrd modules {:?}, {} runs, median",
        k.release,
        idx.modules.len(),
        tree_bytes / 1_000_000,
        WANTED,
        RUNS
    );
    println!();
    println!("| build | time | initrd (zstd) | initrd modules |");
    println!("| --- | ---: | ---: | ---: |");
    for (what, d) in [
        ("cold (empty store)", median(cold)),
        ("warm (unchanged)", median(warm)),
        ("warm, one kernel parameter changed", median(param)),
        ("another initrd module set (same kernel)", median(other_set)),
    ] {
        println!(
            "| {what} | {} | {} KB | {} |",
            ms(d),
            initrd_size / 1000,
            closure.modules.len()
        );
    }

    // Where a cold build's time goes (in-process, same steps).
    let mut steps: Vec<(&str, Vec<Duration>)> = vec![
        ("walk and stat the tree", vec![]),
        ("parse .modinfo of every module (parallel)", vec![]),
        ("closure", vec![]),
        ("copy the tree + write kmod indexes (parallel)", vec![]),
        ("hash the copy (parallel)", vec![]),
        ("syncfs", vec![]),
        ("initrd: read + cpio", vec![]),
        ("initrd: compress (zstd default level)", vec![]),
    ];
    for i in 0..RUNS {
        let mut t = Instant::now();
        let mut lap = |n: usize, steps: &mut Vec<(&str, Vec<Duration>)>| {
            steps[n].1.push(t.elapsed());
            t = Instant::now();
        };
        let files = index::walk(&k.modules).unwrap();
        lap(0, &mut steps);
        let idx = ModuleIndex::read(&k.modules, &k.release, &files).unwrap();
        lap(1, &mut steps);
        let closure = modules::closure(&idx, &wanted).unwrap();
        lap(2, &mut steps);
        let dir = work.path().join(format!("copy-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        generation::fill_kernel_modules(&dir, &idx, &files, false).unwrap();
        lap(3, &mut steps);
        store::hash_tree(&dir, "kernel-modules").unwrap();
        lap(4, &mut steps);
        genboot::fsutil::syncfs(&dir).unwrap();
        lap(5, &mut steps);
        let members = initrd::members(&initrd::Contents {
            index: &idx,
            closure: &closure,
            firmware: &[],
            activator: &activator,
        })
        .unwrap();
        let archive = initrd::cpio(&members);
        lap(6, &mut steps);
        initrd::compress(&archive, Compression::Zstd, None).unwrap();
        lap(7, &mut steps);
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!();
    println!("| cold build step | time |");
    println!("| --- | ---: |");
    for (what, v) in steps {
        println!("| {what} | {} |", ms(median(v)));
    }

    // The initrd per compression.
    let members = initrd::members(&initrd::Contents {
        index: &idx,
        closure: &closure,
        firmware: &[],
        activator: &activator,
    })
    .unwrap();
    let archive = initrd::cpio(&members);
    println!();
    println!("| initrd compression | level | time | size |");
    println!("| --- | ---: | ---: | ---: |");
    for (c, level) in [
        (Compression::None, 0),
        (Compression::Zstd, 3),
        (Compression::Zstd, initrd::default_level(Compression::Zstd)),
        (Compression::Zstd, 15),
        (Compression::Zstd, 19),
        (Compression::Gzip, initrd::default_level(Compression::Gzip)),
        (Compression::Xz, initrd::default_level(Compression::Xz)),
    ] {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..RUNS {
            let t = Instant::now();
            size = initrd::compress(&archive, c, Some(level)).unwrap().len();
            times.push(t.elapsed());
        }
        println!(
            "| {c} | {level} | {} | {} KB |",
            ms(median(times)),
            size / 1000
        );
    }
}
