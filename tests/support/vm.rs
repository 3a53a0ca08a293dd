//! The one QEMU harness: a [`Vm`] boots either directly (`-kernel -initrd
//! -append`, the initrd and activator tests) or through OVMF and the disk
//! image's ESP (systemd-boot, the end-to-end scenarios), always under TCG,
//! with the serial console on a pipe. [`Opts`] says which (booster's
//! `buildVmInstance(t, Opts)`).
//!
//! Reading the console: every wait starts at a cursor, moves it past the
//! line that matched and returns the text it passed, so a later wait never
//! matches old output. Every wait is bounded twice, by its own timeout and
//! by the VM's overall deadline. Input that a program may not be reading
//! yet (a shell that is still starting) is sent with [`Vm::send_until`],
//! which sends it again until the answer appears — never a sleep.
//!
//! The console log is kept in `target/test-logs/<name>.log` (written as
//! the VM runs and when it ends); a failing wait prints the last lines and
//! the log's path.

use super::{repo, require_tool};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// How a VM starts.
#[derive(Debug, Clone)]
pub enum Boot {
    /// OVMF (fresh variables) → systemd-boot on the disk's ESP.
    Uefi,
    /// QEMU loads `kernel` and `initrd` itself; the kernel command line is
    /// `console=ttyS0 panic=-1 <append>` (so `append` may end with
    /// `-- <stage-2 args>`).
    Direct {
        kernel: PathBuf,
        initrd: PathBuf,
        append: String,
    },
}

/// What to boot and for how long.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Names the console log, `target/test-logs/<name>.log`.
    pub name: String,
    pub boot: Boot,
    /// A raw disk image as the virtio disk.
    pub disk: Option<PathBuf>,
    /// Let a guest reset reboot inside the same QEMU (boot counting across
    /// reboots); otherwise a reset makes QEMU exit (`-no-reboot`).
    pub reboots: bool,
    pub memory_mib: u32,
    /// Every wait ends by then.
    pub deadline: Instant,
    /// A UEFI boot's OVMF variable store, used in place (it keeps what the
    /// firmware and the guest write, for the next VM); otherwise a fresh
    /// copy of OVMF's.
    pub vars: Option<PathBuf>,
}

impl Opts {
    /// A direct kernel boot, `budget` for the whole VM.
    pub fn direct(
        name: &str,
        kernel: &Path,
        initrd: &Path,
        append: &str,
        budget: Duration,
    ) -> Opts {
        Opts {
            name: name.to_string(),
            boot: Boot::Direct {
                kernel: kernel.to_path_buf(),
                initrd: initrd.to_path_buf(),
                append: append.to_string(),
            },
            disk: None,
            reboots: false,
            memory_mib: 512,
            deadline: Instant::now() + budget,
            vars: None,
        }
    }

    /// A UEFI boot of the disk image `disk`, every wait done by `deadline`.
    pub fn uefi(name: &str, disk: &Path, deadline: Instant) -> Opts {
        Opts {
            name: name.to_string(),
            boot: Boot::Uefi,
            disk: Some(disk.to_path_buf()),
            reboots: false,
            memory_mib: 1024,
            deadline,
            vars: None,
        }
    }

    pub fn disk(mut self, disk: &Path) -> Opts {
        self.disk = Some(disk.to_path_buf());
        self
    }

    /// Use (and keep) this OVMF variable store.
    pub fn vars(mut self, vars: &Path) -> Opts {
        self.vars = Some(vars.to_path_buf());
        self
    }

    pub fn reboots(mut self, reboots: bool) -> Opts {
        self.reboots = reboots;
        self
    }

    /// The QEMU command line.
    fn command(&self, vars: Option<&Path>) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        c.args([
            "-accel",
            "tcg",
            "-m",
            &self.memory_mib.to_string(),
            "-smp",
            "1",
        ])
        .args(["-nodefaults", "-display", "none", "-serial", "stdio"]);
        match &self.boot {
            Boot::Uefi => {
                c.args(["-machine", "q35", "-drive"])
                    .arg(format!(
                        "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
                    ))
                    .arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=1,file={}",
                        vars.expect("OVMF variables").display()
                    ));
            }
            Boot::Direct {
                kernel,
                initrd,
                append,
            } => {
                c.arg("-kernel")
                    .arg(kernel)
                    .arg("-initrd")
                    .arg(initrd)
                    .arg("-append")
                    .arg(format!("console=ttyS0 panic=-1 {append}"));
            }
        }
        if let Some(disk) = &self.disk {
            c.arg("-drive")
                .arg(format!("file={},if=virtio,format=raw", disk.display()));
        }
        if !self.reboots {
            c.arg("-no-reboot");
        }
        c
    }
}

/// One QEMU process and what it printed.
pub struct Vm {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<Vec<u8>>,
    raw: Vec<u8>,
    /// Offset in the stripped console text up to which output is consumed.
    cursor: usize,
    deadline: Instant,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

/// Resend interval of [`Vm::send_until`].
const RESEND: Duration = Duration::from_secs(5);

/// How long sulogin gets to answer a typed password (a shell prompt or
/// `Login incorrect`) before it is typed again ([`Vm::sulogin`]).
const SULOGIN_ANSWER: Duration = Duration::from_secs(30);

impl Vm {
    /// Start QEMU; fails saying how to get QEMU or OVMF when missing.
    pub fn start(opts: Opts) -> Vm {
        require_tool("qemu-system-x86_64", "qemu-system-x86");
        let log_dir = repo().join("target/test-logs");
        std::fs::create_dir_all(&log_dir).unwrap();
        let vars = match opts.boot {
            Boot::Uefi => {
                for f in [OVMF_CODE, OVMF_VARS] {
                    assert!(
                        Path::new(f).exists(),
                        "{f} is missing: install the Debian package ovmf (`tools/install-deps` does)"
                    );
                }
                if let Some(v) = &opts.vars {
                    Some(v.clone())
                } else {
                    let vars = log_dir.join(format!("{}-OVMF_VARS.fd", opts.name));
                    std::fs::copy(OVMF_VARS, &vars).expect("copy the OVMF variable store");
                    Some(vars)
                }
            }
            Boot::Direct { .. } => None,
        };
        let mut child = opts
            .command(vars.as_deref())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu-system-x86_64 starts (install qemu-system-x86)");
        let (tx, rx) = channel();
        for mut pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.send(buf[..n].to_vec()).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
        let vm = Vm {
            log: log_dir.join(format!("{}.log", opts.name)),
            name: opts.name,
            stdin: child.stdin.take(),
            child,
            rx,
            raw: Vec::new(),
            cursor: 0,
            deadline: opts.deadline,
            exited: None,
        };
        vm.save_log();
        vm
    }

    /// The whole console so far, escape sequences removed.
    pub fn console(&self) -> String {
        strip_ansi(&self.raw)
    }

    /// Where the console log is kept.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    fn save_log(&self) {
        let _ = std::fs::write(&self.log, &self.raw);
    }

    /// Fail: keep the console log and say where it is.
    #[track_caller]
    pub fn fail(&mut self, msg: &str) -> ! {
        self.drain(Duration::from_millis(200));
        self.save_log();
        let text = self.console();
        let tail: String = {
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            lines[lines.len().saturating_sub(25)..].join("\n")
        };
        panic!(
            "VM {}: {msg}\n--- last console lines ---\n{tail}\n--- whole console log: {} ---",
            self.name,
            self.log.display()
        )
    }

    /// Read what arrives within `d` into the buffer. False once QEMU has
    /// closed its output (exited).
    fn drain(&mut self, d: Duration) -> bool {
        match self.rx.recv_timeout(d) {
            Ok(b) => {
                self.raw.extend_from_slice(&b);
                // Take what is already there without waiting.
                while let Ok(b) = self.rx.try_recv() {
                    self.raw.extend_from_slice(&b);
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        }
    }

    /// Wait until `pattern` appears in the console after the cursor; move
    /// the cursor past the end of its line and return the text from the old
    /// cursor to there.
    #[track_caller]
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> String {
        self.wait_for_any(&[pattern], timeout).1
    }

    /// Like [`Vm::wait_for`] for the first of several patterns; returns its
    /// index and the text.
    #[track_caller]
    pub fn wait_for_any(&mut self, patterns: &[&str], timeout: Duration) -> (usize, String) {
        match self.poll_for(patterns, timeout, true) {
            Ok(hit) => hit,
            Err(why) => self.fail(&why),
        }
    }

    /// Answer util-linux sulogin: after its whole `prompt`, type `password`;
    /// return once root's shell prompt (`:~# `) shows. sulogin prints the
    /// prompt, then turns echo off with `tcsetattr(TCSAFLUSH)`, which
    /// discards what was typed in between: under load a password sent right
    /// after the prompt is lost (seen in two fresh-clone runs) and sulogin
    /// waits on, silent. So when neither the shell nor `Login incorrect`
    /// shows within [`SULOGIN_ANSWER`], the password is typed again (up to
    /// eight times in all; three refusals fail).
    #[track_caller]
    pub fn sulogin(&mut self, prompt: &str, password: &str, timeout: Duration) {
        self.wait_for_prompt(&[prompt], timeout);
        let (mut refused, mut typed) = (0, 0);
        while refused < 3 && typed < 8 {
            self.send(format!("{password}\n").as_bytes());
            typed += 1;
            let overall = self.deadline <= Instant::now() + SULOGIN_ANSWER;
            match self.poll_for(&["Login incorrect", ":~# "], SULOGIN_ANSWER, false) {
                Ok((1, _)) => return,
                Ok(_) => {
                    refused += 1;
                    self.wait_for_prompt(&[prompt], timeout);
                }
                Err(why) if overall || self.exited.is_some() => self.fail(&why),
                // Typed while sulogin set up the terminal: lost.
                Err(_) => {}
            }
        }
        self.fail(&format!(
            "sulogin gave no shell for root's password ({refused} refused, {typed} typed after its whole prompt)"
        ));
    }

    /// In a root shell on the console: ask until it answers (it may start
    /// a little after the kernel; `$((6*7))` is evaluated by the shell, so
    /// the echo of the typed line never matches), then the root file
    /// system's mount mode (`ro`, `rw`), printed so the typed line cannot
    /// match either.
    #[track_caller]
    pub fn shell_root_mode(&mut self, timeout: Duration) -> String {
        self.send_until("echo RECOVERY-$((6*7))\n", "RECOVERY-42", timeout);
        self.send(b"set -- $(grep ' / ' /proc/mounts | tail -n 1); echo ROOT\"\"MODE=${4%%,*}\n");
        let seen = self.wait_for("ROOTMODE=", Duration::from_secs(60));
        seen.lines()
            .rev()
            .find_map(|l| l.split("ROOTMODE=").nth(1))
            .unwrap_or("")
            .trim()
            .to_string()
    }

    /// Wait for the first of `patterns` after the cursor, the line complete
    /// or not (a prompt gets its newline only when it is answered); its
    /// index. The test fails when `timeout` passes or QEMU exits first.
    #[track_caller]
    pub fn wait_for_prompt(&mut self, patterns: &[&str], timeout: Duration) -> usize {
        match self.poll_for(patterns, timeout, false) {
            Ok((i, _)) => i,
            Err(why) => self.fail(&why),
        }
    }

    /// Like [`Vm::wait_for`], but `None` when `timeout` passes (QEMU exiting
    /// and the overall deadline still fail).
    #[track_caller]
    pub fn try_wait_for(&mut self, pattern: &str, timeout: Duration) -> Option<String> {
        let overall = self.deadline <= Instant::now() + timeout;
        match self.poll_for(&[pattern], timeout, true) {
            Ok((_, seen)) => Some(seen),
            Err(why) if overall || self.exited.is_some() => self.fail(&why),
            Err(_) => None,
        }
    }

    /// The first of `patterns` after the cursor: with `whole_line`, only
    /// once its line is complete (markers are parsed whole); else as soon
    /// as it shows (a prompt).
    fn poll_for(
        &mut self,
        patterns: &[&str],
        timeout: Duration,
        whole_line: bool,
    ) -> Result<(usize, String), String> {
        let until = (Instant::now() + timeout).min(self.deadline);
        let mut open = true;
        loop {
            let text = self.console();
            let tail = text.get(self.cursor..).unwrap_or("");
            let hit = patterns
                .iter()
                .enumerate()
                .filter_map(|(i, p)| tail.find(p).map(|at| (at, i, p.len())))
                .min();
            if let Some((at, i, len)) = hit {
                // Only a complete line counts (markers are parsed whole),
                // unless QEMU is gone and the last line is all there is.
                let end = match tail[at + len..].find('\n') {
                    _ if !whole_line => Some(at + len),
                    Some(nl) => Some(at + len + nl + 1),
                    None if !open => Some(tail.len()),
                    None => None,
                };
                if let Some(end) = end {
                    let seen = tail[..end].to_string();
                    self.cursor += end;
                    self.save_log();
                    return Ok((i, seen));
                }
            }
            if !open {
                let status = self.child.wait().ok();
                self.exited = status;
                return Err(format!(
                    "QEMU exited ({}) before the console showed {patterns:?}",
                    status.map(|s| s.to_string()).unwrap_or_default()
                ));
            }
            let now = Instant::now();
            if now >= until {
                let why = if until == self.deadline {
                    "the VM's overall deadline passed".to_string()
                } else {
                    format!("{} s passed", timeout.as_secs())
                };
                return Err(format!("{why} waiting for {patterns:?} on the console"));
            }
            open = self.drain((until - now).min(Duration::from_millis(250)));
        }
    }

    /// Write bytes to the serial console.
    pub fn send(&mut self, bytes: &[u8]) {
        let ok = self
            .stdin
            .as_mut()
            .map(|s| s.write_all(bytes).and_then(|_| s.flush()).is_ok())
            .unwrap_or(false);
        if !ok {
            self.fail("cannot write to the serial console (QEMU gone?)");
        }
    }

    /// Send `input` and wait for `answer`; send it again every few seconds
    /// until the answer appears (a shell that is still starting does not
    /// read yet), failing after `timeout`. Returns the text up to and
    /// including the answer's line. Make the answer something the echo of
    /// the typed line cannot contain (`echo X-$((6*7))` answers `X-42`).
    #[track_caller]
    pub fn send_until(&mut self, input: &str, answer: &str, timeout: Duration) -> String {
        let until = Instant::now() + timeout;
        loop {
            self.send(input.as_bytes());
            let wait = RESEND.min(until.saturating_duration_since(Instant::now()));
            if let Some(seen) = self.try_wait_for(answer, wait) {
                return seen;
            }
            if Instant::now() >= until {
                self.fail(&format!(
                    "no {answer:?} on the console within {} s of sending {input:?} (sent every {} s)",
                    timeout.as_secs(),
                    RESEND.as_secs()
                ));
            }
        }
    }

    /// Wait for QEMU to exit (guest power-off, or a reset with
    /// `-no-reboot`).
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) {
        let until = (Instant::now() + timeout).min(self.deadline);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = Some(st);
                self.drain(Duration::from_millis(200));
                self.save_log();
                return;
            }
            if Instant::now() >= until {
                self.fail(&format!(
                    "QEMU did not exit within {} s (the guest should power off or reboot)",
                    timeout.as_secs()
                ));
            }
            self.drain(Duration::from_millis(250));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        while let Ok(b) = self.rx.try_recv() {
            self.raw.extend_from_slice(&b);
        }
        self.save_log();
        if std::thread::panicking() {
            eprintln!("console log of VM {}: {}", self.name, self.log.display());
        }
    }
}

/// Remove terminal escape sequences and carriage returns, keeping the text;
/// a cursor move or screen clear becomes a line break (systemd-boot places
/// each menu line by cursor position). Byte by byte, so that the text of a
/// prefix of the console is a prefix of the text of the whole (a wait's
/// cursor stays valid as output arrives): every non-ASCII byte becomes `?`.
pub fn strip_ansi(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut it = raw.iter().copied().peekable();
    while let Some(b) = it.next() {
        match b {
            0x1b => match it.peek() {
                Some(b'[') => {
                    it.next();
                    // CSI: parameters, then one final byte in @..~.
                    for c in it.by_ref() {
                        if (b'@'..=b'~').contains(&c) {
                            if c == b'H' || c == b'J' {
                                out.push('\n');
                            }
                            break;
                        }
                    }
                }
                Some(_) => {
                    it.next();
                }
                None => {}
            },
            b'\r' => {}
            b if b.is_ascii() => out.push(b as char),
            _ => out.push('?'),
        }
    }
    out
}
