//! Store hashing throughput on a real module tree, beside `sha256sum` over
//! the same files in the same run.
//!
//!     cargo bench --bench hash            (tree: the 6.1.0-50 generic modules)
//!     GENBOOT_BENCH_TREE=/lib/modules/X cargo bench --bench hash

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            files(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let tree = std::env::var_os("GENBOOT_BENCH_TREE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let base = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/kernels/linux-image-6.1.0-50-amd64/lib/modules");
            let rel = std::fs::read_dir(&base)
                .unwrap_or_else(|_| {
                    panic!(
                        "{} is missing: run tools/fetch-kernels first",
                        base.display()
                    )
                })
                .next()
                .unwrap()
                .unwrap()
                .file_name();
            base.join(rel)
        });
    let mut list = Vec::new();
    files(&tree, &mut list);
    list.sort();
    let bytes: u64 = list
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let mb = bytes as f64 / 1e6;
    let runs = 5;

    // Warm the page cache so both sides read from memory.
    genboot::store::hash_tree(&tree, "bench").unwrap();

    let mut ours = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        genboot::store::hash_tree(&tree, "bench").unwrap();
        ours.push(t.elapsed().as_secs_f64());
    }
    let mut theirs = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let mut child = Command::new("xargs")
            .args(["-0", "sha256sum"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("xargs and sha256sum (coreutils)");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            for p in &list {
                stdin.write_all(p.as_os_str().as_encoded_bytes()).unwrap();
                stdin.write_all(b"\0").unwrap();
            }
        }
        assert!(child.wait().unwrap().success());
        theirs.push(t.elapsed().as_secs_f64());
    }
    let (o, s) = (median(ours), median(theirs));
    println!(
        "tree: {} ({} files, {:.0} MB), {} threads, median of {runs}",
        tree.display(),
        list.len(),
        mb,
        rayon::current_num_threads()
    );
    println!("| hasher | time | MB/s |");
    println!("|---|---|---|");
    println!(
        "| genboot store hash (parallel, streaming) | {:.3} s | {:.0} |",
        o,
        mb / o
    );
    println!("| sha256sum (coreutils) | {:.3} s | {:.0} |", s, mb / s);
    println!("ratio: {:.2}x sha256sum", s / o);
}
