//! genboot-fuzz: mutation fuzzing of the parsers genboot runs on untrusted
//! bytes, on stable Rust (see `engine.rs` for how, `targets.rs` for what).
//!
//! ```text
//! genboot-fuzz list
//! genboot-fuzz TARGET [--seconds N] [--seed N] [--seeds DIR] [--crashes DIR] [--hang N]
//! genboot-fuzz TARGET --replay FILE...
//! ```
//!
//! Exit status: 0 nothing found, 1 a panic (inputs saved under
//! `<crashes>/<target>/crash-*`, with a `.txt` saying what panicked),
//! 2 usage, 3 a hang (saved as `hang-*`).

mod engine;
mod pid1;
mod targets;

use engine::{Options, Target};
use std::path::PathBuf;
use std::time::Duration;
use targets::TARGETS;

fn usage() -> ! {
    eprintln!(
        "usage: genboot-fuzz list\n       genboot-fuzz TARGET [--seconds N] [--seed N] [--seeds DIR] [--crashes DIR] [--hang SECONDS]\n       genboot-fuzz TARGET --replay FILE...\ntargets: {}",
        TARGETS.iter().map(|t| t.name).collect::<Vec<_>>().join(" ")
    );
    std::process::exit(2)
}

fn target(name: &str) -> &'static Target {
    TARGETS.iter().find(|t| t.name == name).unwrap_or_else(|| {
        eprintln!("genboot-fuzz: no target {name:?}");
        usage()
    })
}

fn here() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn number<T: std::str::FromStr>(flag: &str, v: Option<String>) -> T {
    v.and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        eprintln!("genboot-fuzz: {flag} needs a number");
        usage()
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else { usage() };
    if name == "list" {
        for t in TARGETS {
            println!("{:<12} {}", t.name, t.about);
        }
        return;
    }
    if name == "-h" || name == "--help" {
        usage();
    }
    let t = target(&name);
    let mut o = Options {
        seconds: 20.0,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id()),
        seeds_dir: here().join("seeds"),
        crashes_dir: here().join("crashes"),
        hang: Duration::from_secs(10),
        cleanup: targets::remove_scratch,
    };
    let mut replay: Option<Vec<PathBuf>> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => o.seconds = number("--seconds", args.next()),
            "--seed" => o.seed = number("--seed", args.next()),
            "--hang" => o.hang = Duration::from_secs(number("--hang", args.next())),
            "--seeds" => o.seeds_dir = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            "--crashes" => {
                o.crashes_dir = args.next().map(PathBuf::from).unwrap_or_else(|| usage())
            }
            "--replay" => replay = Some(args.by_ref().map(PathBuf::from).collect()),
            _ => usage(),
        }
    }
    if let Some(files) = replay {
        let mut bad = 0;
        for f in &files {
            let data = std::fs::read(f).unwrap_or_else(|e| {
                eprintln!("genboot-fuzz: cannot read {}: {e}", f.display());
                std::process::exit(2)
            });
            match engine::run_one(t, &data) {
                Ok(_) => println!("{}: ok", f.display()),
                Err(why) => {
                    println!("{}: {why}", f.display());
                    bad += 1;
                }
            }
        }
        targets::remove_scratch();
        std::process::exit(if bad > 0 { 1 } else { 0 });
    }
    eprintln!(
        "genboot-fuzz: {} for {} s, seed {} (repeat with --seed {})",
        t.name, o.seconds, o.seed, o.seed
    );
    let r = engine::fuzz(t, &o);
    targets::remove_scratch();
    let secs = r.elapsed.as_secs_f64();
    // One line for people and scripts.
    println!(
        "GENBOOT-FUZZ target={} iterations={} seconds={:.1} rate={:.0}/s seeds={} corpus={} features={} findings={}",
        t.name,
        r.iterations,
        secs,
        r.iterations as f64 / secs.max(1e-9),
        r.seeds,
        r.corpus,
        r.features,
        r.findings.len()
    );
    for f in &r.findings {
        println!("GENBOOT-FUZZ finding={}", f.display());
    }
    if !r.findings.is_empty() {
        std::process::exit(1);
    }
}
