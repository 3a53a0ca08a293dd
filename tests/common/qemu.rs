//! Direct kernel boots under QEMU (TCG, `-kernel -initrd`, serial console on
//! stdio), shared by the initrd and activator tests. The UEFI harness for
//! the end-to-end scenarios is `tests/vm`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running VM and everything it printed. Dropping it kills QEMU and keeps
/// the console log in `target/test-logs/<name>.log`.
pub struct Vm {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Vec<u8>>>,
    pub started: Instant,
    pub timeout: Duration,
}

impl Vm {
    /// Boot `kernel` with `initrd` and `append` (after `console=ttyS0
    /// panic=-1`, so it may end with `-- <init args>`), with `disk` as a
    /// virtio disk. The guest's reboot makes QEMU exit (`-no-reboot`).
    pub fn boot(
        name: &str,
        kernel: &Path,
        initrd: &Path,
        append: &str,
        disk: Option<&Path>,
        timeout: Duration,
    ) -> Vm {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .arg("-append")
            .arg(format!("console=ttyS0 panic=-1 {append}"));
        if let Some(disk) = disk {
            cmd.arg("-drive")
                .arg(format!("file={},if=virtio,format=raw", disk.display()));
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu-system-x86_64 runs (tools/install-deps installs qemu-system-x86)");
        let out = Arc::new(Mutex::new(Vec::new()));
        for mut pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        Vm {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            out,
            started: Instant::now(),
            timeout,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    pub fn log_path(&self) -> PathBuf {
        super::repo().join(format!("target/test-logs/{}.log", self.name))
    }

    /// Wait until the console shows `needle`; panic (with the log kept) after
    /// the timeout or if QEMU exits first.
    #[track_caller]
    pub fn expect(&mut self, needle: &str) {
        loop {
            if self.text().contains(needle) {
                return;
            }
            let exited = self.child.try_wait().ok().flatten().is_some();
            if exited {
                std::thread::sleep(Duration::from_millis(200));
                if self.text().contains(needle) {
                    return;
                }
            }
            if exited || self.started.elapsed() > self.timeout {
                self.save();
                panic!(
                    "{}: {needle:?} did not appear ({}); console log: {}\n--- last lines ---\n{}",
                    self.name,
                    if exited { "QEMU exited" } else { "timeout" },
                    self.log_path().display(),
                    tail(&self.text(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Wait for QEMU to exit (the guest rebooted or powered off).
    #[track_caller]
    pub fn expect_exit(&mut self) {
        loop {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            if self.started.elapsed() > self.timeout {
                self.save();
                panic!(
                    "{}: QEMU did not exit (no reboot); console log: {}",
                    self.name,
                    self.log_path().display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Keep the console log.
    pub fn save(&self) {
        let p = self.log_path();
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, self.text()).unwrap();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.save();
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
