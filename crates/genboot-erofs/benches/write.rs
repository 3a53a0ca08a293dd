//! Image size and write time at the scale of a Debian root (~11,000 inodes),
//! metadata-only vs full, next to `mkfs.erofs` (erofs-utils, uncompressed)
//! on the same directory. Prints a Markdown table.
//!
//! ```sh
//! cargo bench -p genboot-erofs --bench write            # synthetic Debian-shaped root + /usr/include
//! GENBOOT_EROFS_BENCH_TREE=/srv/rootfs cargo bench -p genboot-erofs --bench write   # + a real root
//! ```
//!
//! The synthetic tree follows the shape measured on a 141-package mmdebstrap
//! root (research `system-trees.md` §3): 8,631 files, 236 MB, plus
//! directories and symlinks to ~11,000 inodes; sizes log-uniform from 8 B to
//! 256 KB plus a few 4 MB files, mtimes from 150 "package build" times plus the epoch, a few setuid
//! files and non-root owners. Write times are the median of 5 writes to a
//! file in the page cache (no fsync); run as root so `getfattr` sees
//! `trusted.*`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{import, Policy};
use genboot_erofs::Image;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn synthetic_root(root: &Path) {
    const FILES: usize = 8_631;
    const DIRS: usize = 1_050;
    const LINKS: usize = 1_350;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    fs::create_dir_all(root).unwrap();
    let mut dirs = vec![PathBuf::new()];
    for i in 0..DIRS {
        let parent = dirs[rng.below(dirs.len() as u64) as usize].clone();
        let d = parent.join(format!("dir-{i}-{}", "d".repeat(rng.below(12) as usize)));
        fs::create_dir(root.join(&d)).unwrap();
        dirs.push(d);
    }
    let mut files = Vec::new();
    let mut total = 0u64;
    let mut buf = Vec::new();
    for i in 0..FILES {
        // log-uniform 8 B … 256 KB (mean ≈ 25 KB) and a few 4 MB libraries:
        // ≈ 236 MB in all.
        let size = if i % 1_700 == 0 {
            4 << 20
        } else {
            (8f64 * (2f64).powf(rng.below(1_500) as f64 / 100.0)) as u64
        };
        let d = &dirs[rng.below(dirs.len() as u64) as usize];
        let p = d.join(format!(
            "file-{i}.{}",
            ["so", "txt", "gz", "conf", "py", "h"][i % 6]
        ));
        buf.clear();
        buf.extend((0..size).map(|k| (k.wrapping_mul(2_654_435_761) ^ i as u64) as u8));
        fs::write(root.join(&p), &buf).unwrap();
        total += size;
        files.push(p);
    }
    for i in 0..LINKS {
        let target = &files[rng.below(files.len() as u64) as usize];
        let d = &dirs[rng.below(dirs.len() as u64) as usize];
        std::os::unix::fs::symlink(
            Path::new("/").join(target),
            root.join(d.join(format!("link-{i}"))),
        )
        .unwrap();
    }
    for (i, f) in files.iter().enumerate().step_by(400) {
        fs::set_permissions(
            root.join(f),
            fs::Permissions::from_mode(if i % 800 == 0 { 0o4755 } else { 0o640 }),
        )
        .unwrap();
        let _ = std::os::unix::fs::lchown(root.join(f), Some(0), Some(42));
    }
    let mut all = Vec::new();
    common::walk(root, Path::new(""), &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in all.iter().chain(std::iter::once(&PathBuf::new())) {
        let path = root.join(p);
        let md = fs::symlink_metadata(&path).unwrap();
        if md.is_symlink() {
            continue;
        }
        let sec = if rng.below(100) < 15 {
            common::EPOCH
        } else {
            1_600_000_000 + 86_400 * rng.below(150) as i64
        };
        let t = std::time::UNIX_EPOCH + Duration::from_secs(sec as u64);
        fs::File::open(&path)
            .unwrap()
            .set_times(fs::FileTimes::new().set_modified(t))
            .unwrap();
    }
    eprintln!(
        "synthetic root: {} paths, {:.1} MB of file data",
        all.len() + 1,
        total as f64 / 1e6
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_write(img: &Image, out: &Path) -> (genboot_erofs::Stats, Duration) {
    let mut times = Vec::new();
    let mut stats = None;
    for _ in 0..5 {
        let t = Instant::now();
        let mut f = fs::File::create(out).unwrap();
        stats = Some(img.write(&mut f).unwrap());
        drop(f);
        times.push(t.elapsed());
    }
    (stats.unwrap(), median(times))
}

fn fsck(image: &Path) -> &'static str {
    let ok = Command::new("fsck.erofs")
        .arg(image)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        "ok"
    } else {
        "FAIL"
    }
}

fn mb(b: u64) -> String {
    format!("{:.2} MB", b as f64 / 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn bench(name: &str, src: &Path, scratch: &Path, rows: &mut Vec<String>) {
    let t = Instant::now();
    let meta_img = import(src, &Policy::HashOnly);
    let import_meta = t.elapsed();
    let t = Instant::now();
    let full_img = import(src, &Policy::Full);
    let import_full = t.elapsed();
    let meta_path = scratch.join("meta.erofs");
    let full_path = scratch.join("full.erofs");
    let (ms_, mt) = time_write(&meta_img, &meta_path);
    let (fs_, ft) = time_write(&full_img, &full_path);
    let mkfs_path = scratch.join("mkfs.erofs");
    let t = Instant::now();
    let mkfs_ok = Command::new("mkfs.erofs")
        .arg(&mkfs_path)
        .arg(src)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let mkfs_t = t.elapsed();
    let mkfs_size = if mkfs_ok {
        fs::metadata(&mkfs_path).map(|m| m.len()).unwrap_or(0)
    } else {
        0
    };
    rows.push(format!(
        "| {name} | {} | {} ({} compact) | metadata-only | {} | {} | {} (walk + SHA-256) | {} |",
        meta_img.path_count(),
        ms_.inodes,
        ms_.compact_inodes,
        mb(ms_.image_bytes),
        ms(mt),
        ms(import_meta),
        fsck(&meta_path)
    ));
    rows.push(format!(
        "| {name} | {} | {} ({} compact) | full | {} | {} | {} (walk) | {} |",
        full_img.path_count(),
        fs_.inodes,
        fs_.compact_inodes,
        mb(fs_.image_bytes),
        ms(ft),
        ms(import_full),
        fsck(&full_path)
    ));
    rows.push(format!(
        "| {name} | | | mkfs.erofs 1.5 (uncompressed) | {} | {} | – | {} |",
        if mkfs_ok {
            mb(mkfs_size)
        } else {
            "failed".into()
        },
        ms(mkfs_t),
        if mkfs_ok { fsck(&mkfs_path) } else { "–" }
    ));
    for p in [meta_path, full_path, mkfs_path] {
        let _ = fs::remove_file(p);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches; nothing to list.
    }
    let scratch = common::Scratch::new("bench");
    let mut rows = Vec::new();
    let synth = scratch.join("synthetic-root");
    synthetic_root(&synth);
    bench(
        "synthetic Debian-shaped root",
        &synth,
        &scratch.path,
        &mut rows,
    );
    fs::remove_dir_all(&synth).unwrap();
    if Path::new("/usr/include").is_dir() {
        bench(
            "/usr/include of this machine",
            Path::new("/usr/include"),
            &scratch.path,
            &mut rows,
        );
    }
    if let Some(tree) = std::env::var_os("GENBOOT_EROFS_BENCH_TREE") {
        let tree = PathBuf::from(tree);
        bench(&tree.display().to_string(), &tree, &scratch.path, &mut rows);
    }
    println!("| tree | paths | inodes | image | size | write (median of 5) | import (not the writer) | fsck.erofs |");
    println!("|---|---:|---:|---|---:|---:|---:|---|");
    for r in rows {
        println!("{r}");
    }
}
