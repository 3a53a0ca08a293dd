//! What the test binaries share. Each tier includes this folder with
//! `#[path = "../support/mod.rs"] mod support;`:
//!
//! - [`fixtures`]: the test kernels (real Debian ones, and a synthetic
//!   bzImage for the fast tier), configurations, system trees with
//!   generations, the activator;
//! - [`judges`]: the tools no one here wrote that judge what genboot
//!   writes (`fsck.fat`, `sgdisk`, `bootctl`, mtools);
//! - [`esp`]: ESP trees and FAT images, read and damaged on purpose;
//! - [`vm`]: the one QEMU harness (direct kernel boot or OVMF +
//!   systemd-boot), with bounded, cursor-based waits;
//! - [`scenario`]: UEFI scenarios (a stage-2 tree, `genboot image`, boots);
//! - [`debian`]: real Debian 12 roots with systemd.
//!
//! This file: running `genboot` and other programs. A missing program,
//! kernel or tool makes a test fail saying how to get it; nothing skips.
#![allow(dead_code)] // every binary uses a part

pub mod debian;
pub mod esp;
pub mod fixtures;
pub mod judges;
pub mod scenario;
pub mod vm;

pub use fixtures::*;

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `genboot` binary built for this test run, told where the activator
/// is when it has been built.
pub fn genboot() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_genboot"));
    if std::env::var_os("GENBOOT_ACTIVATOR").is_none() {
        if let Some(p) = built_activator() {
            c.env("GENBOOT_ACTIVATOR", p);
        }
    }
    c
}

/// Run genboot with `args` below `root`.
pub fn run(root: &Path, args: &[&str]) -> Output {
    let mut c = genboot();
    c.arg("--root").arg(root).args(args);
    c.output().expect("genboot runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert success and return stdout.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "genboot failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
}

/// Fail, saying which Debian package has it, unless `tool` is on PATH.
#[track_caller]
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is missing: install the Debian package {package} (`tools/install-deps` does)"
    );
}

/// Run a command; panic with its output unless it succeeds. Returns stdout.
#[track_caller]
pub fn run_ok(c: &mut Command) -> String {
    run_until(c, Instant::now() + Duration::from_secs(600))
}

/// [`run_ok`], killing the command and failing when `until` passes.
#[track_caller]
pub fn run_until(c: &mut Command, until: Instant) -> String {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    let collect = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = collect(Box::new(child.stdout.take().unwrap()));
    let err = collect(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for a child") {
            break st;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{c:?} did not finish in time; killed it\n{}{}",
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "{c:?} failed ({status}):\n{out}{err}");
    out
}

/// The stderr of a running child, line by line, so a test can wait for
/// what the child says (`waiting for another genboot …`) instead of
/// sleeping and hoping it got there.
pub struct StderrLines {
    rx: Receiver<String>,
    reader: std::thread::JoinHandle<String>,
}

impl StderrLines {
    /// Take `child`'s piped stderr.
    pub fn of(child: &mut Child) -> StderrLines {
        let err = child
            .stderr
            .take()
            .expect("the child's stderr is piped (Stdio::piped())");
        let (tx, rx) = channel();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in std::io::BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
            all
        });
        StderrLines { rx, reader }
    }

    /// Wait, at most `timeout`, for a line containing `needle`; fail with
    /// `what` when it does not come (or the child closed stderr first).
    #[track_caller]
    pub fn wait_for(&self, needle: &str, timeout: Duration, what: &str) {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(e) => panic!("{what}: no line with {needle:?} on stderr ({e})"),
            }
        }
    }

    /// Everything the child wrote to stderr (after it closed it).
    pub fn all(self) -> String {
        self.reader.join().unwrap()
    }
}
