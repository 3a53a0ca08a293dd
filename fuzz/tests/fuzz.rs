//! Every fuzz target for a bounded time, two at a time: a panic or a hang in
//! any of them fails this test, naming the saved input and how to replay it.
//!
//! `GENBOOT_FUZZ_SECONDS` (default 20) sets the time per target,
//! `GENBOOT_FUZZ_JOBS` (default 2) how many run at once, `GENBOOT_FUZZ_SEED`
//! (default 1) the random seed: a fixed one, so that the test suite explores
//! the same inputs on every run and fails only when the code changed (a
//! faster machine goes further along the same sequence); `random` for a new
//! seed each run. `fuzz/run` runs them longer, with random seeds, and prints
//! the same table.

use std::process::{Command, Output};

fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// `key=value` from the harness's `GENBOOT-FUZZ` result line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|w| w.strip_prefix('=')))
        .unwrap_or("?")
}

#[test]
fn every_target_finds_nothing_in_its_time() {
    let exe = env!("CARGO_BIN_EXE_genboot-fuzz");
    let seconds = env_or("GENBOOT_FUZZ_SECONDS", 20);
    let jobs = env_or("GENBOOT_FUZZ_JOBS", 2).max(1) as usize;
    let seed = std::env::var("GENBOOT_FUZZ_SEED").unwrap_or_else(|_| "1".into());
    let list = Command::new(exe)
        .arg("list")
        .output()
        .expect("genboot-fuzz runs");
    let targets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(targets.len() >= 11, "too few targets: {targets:?}");
    let mut results: Vec<(String, Output)> = Vec::new();
    for chunk in targets.chunks(jobs) {
        let children: Vec<_> = chunk
            .iter()
            .map(|t| {
                let mut c = Command::new(exe);
                c.args([t.as_str(), "--seconds", &seconds.to_string()]);
                if seed != "random" {
                    c.args(["--seed", &seed]);
                }
                let child = c
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("genboot-fuzz starts");
                (t.clone(), child)
            })
            .collect();
        for (t, c) in children {
            results.push((t, c.wait_with_output().expect("genboot-fuzz ends")));
        }
    }
    println!(
        "{:<12} {:>12} {:>8} {:>10} {:>7} {:>8}",
        "target", "iterations", "seconds", "per second", "corpus", "findings"
    );
    let mut failed = Vec::new();
    for (t, out) in &results {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| l.starts_with("GENBOOT-FUZZ target="))
            .unwrap_or("");
        println!(
            "{:<12} {:>12} {:>8} {:>10} {:>7} {:>8}",
            t,
            field(line, "iterations"),
            field(line, "seconds"),
            field(line, "rate"),
            field(line, "corpus"),
            field(line, "findings")
        );
        if !out.status.success() {
            failed.push(format!(
                "{t} (exit {:?}):\n{}{}replay: target/release/genboot-fuzz {t} --replay <file>",
                out.status.code(),
                stdout,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failed.is_empty(), "findings:\n{}", failed.join("\n"));
}
