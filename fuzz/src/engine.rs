//! The mutation engine: a corpus grown from real seed files, byte-level
//! mutations, a run loop with a time budget, and the handling of findings.
//!
//! No compiler instrumentation (stable Rust has none for fuzzing): a
//! target returns a small "outcome feature" (which error, which branch,
//! roughly which sizes) and an input that yields a feature not seen before
//! joins the corpus, so mutation keeps building on inputs that reached
//! somewhere new. A panic is a finding; so is an input that runs longer
//! than the hang limit.

use std::collections::HashSet;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A fuzz target: a parser genboot runs on bytes it does not trust.
pub struct Target {
    pub name: &'static str,
    /// What it feeds, and to which functions.
    pub about: &'static str,
    /// Inputs are cut to this length.
    pub max_len: usize,
    /// Tokens worth inserting (keywords, magic numbers, separators).
    pub dict: &'static [&'static [u8]],
    /// Run the input; panics on a finding; returns the outcome feature.
    pub run: fn(&[u8]) -> u64,
}

/// xorshift64*: small, fast, reproducible from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    /// True one time in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

/// FNV-1a, for naming saved inputs and hashing features.
pub fn fnv(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

const INTERESTING_BYTES: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'\n', b'\r', b' ', b'\t', b'=', b'"', b'\\', b'/', b'-', b'*', b'?',
    b'[', b']', b'!', b'^', b'.', b'0', b'9', b'a', b'{', b'}', b',', b':',
];

const INTERESTING_INTS: &[u64] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    128,
    512,
    4096,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    1 << 55,
    (1 << 55) + 2,
    1 << 62,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 1,
];

const INTERESTING_DECIMALS: &[&[u8]] = &[
    b"0",
    b"-1",
    b"1",
    b"86400",
    b"86401",
    b"4294967295",
    b"4294967296",
    b"18446744073709551615",
    b"18446744073709551616",
    b"18446744073709552",
    b"99999999999999999999999999",
    b"1e400",
    b"-0",
    b"+1",
];

/// Change `data` in place by one to six stacked mutations.
pub fn mutate(data: &mut Vec<u8>, rng: &mut Rng, corpus: &[Vec<u8>], t: &Target) {
    let rounds = 1 + rng.below(6);
    for _ in 0..rounds {
        let len = data.len();
        match rng.below(15) {
            // Flip a bit.
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            // A random byte.
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            // An interesting byte.
            2 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())];
            }
            // An interesting integer, 1/2/4/8 bytes, either endianness.
            3 => {
                let v = INTERESTING_INTS[rng.below(INTERESTING_INTS.len())];
                let w = [1usize, 2, 4, 8][rng.below(4)];
                let bytes = if rng.one_in(2) {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                let bytes = if rng.one_in(2) {
                    &bytes[..w]
                } else {
                    &bytes[8 - w..]
                };
                overwrite(data, rng, bytes);
            }
            // A decimal number as text.
            4 => {
                let d = INTERESTING_DECIMALS[rng.below(INTERESTING_DECIMALS.len())];
                if rng.one_in(2) {
                    insert(data, rng, d);
                } else {
                    overwrite(data, rng, d);
                }
            }
            // A dictionary token.
            5 | 6 if !t.dict.is_empty() => {
                let d = t.dict[rng.below(t.dict.len())];
                if rng.one_in(2) {
                    insert(data, rng, d);
                } else {
                    overwrite(data, rng, d);
                }
            }
            // Splice in a piece of another input.
            7 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = a + 1 + rng.below((other.len() - a).min(256));
                    let piece = other[a..b].to_vec();
                    if rng.one_in(2) {
                        insert(data, rng, &piece);
                    } else {
                        overwrite(data, rng, &piece);
                    }
                }
            }
            // Truncate.
            8 if len > 0 => data.truncate(rng.below(len)),
            // Repeat a chunk.
            9 if len > 0 => {
                let a = rng.below(len);
                let b = a + 1 + rng.below((len - a).min(64));
                let piece = data[a..b].to_vec();
                let most = if rng.one_in(8) { 256 } else { 8 };
                let times = 1 + rng.below(most);
                let mut rep = Vec::with_capacity(piece.len() * times);
                for _ in 0..times {
                    rep.extend_from_slice(&piece);
                }
                let at = rng.below(len + 1);
                data.splice(at..at, rep);
            }
            // Delete a range.
            10 if len > 0 => {
                let a = rng.below(len);
                let b = a + 1 + rng.below((len - a).min(64));
                data.drain(a..b);
            }
            // Insert random bytes.
            11 => {
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                insert(data, rng, &bytes);
            }
            // Copy a range within.
            12 if len > 1 => {
                let a = rng.below(len);
                let b = a + 1 + rng.below((len - a).min(64));
                let piece = data[a..b].to_vec();
                overwrite(data, rng, &piece);
            }
            // Add or subtract a little, byte or little-endian word.
            13 if len > 0 => {
                let i = rng.below(len);
                let delta = 1 + rng.below(16) as u8;
                data[i] = if rng.one_in(2) {
                    data[i].wrapping_add(delta)
                } else {
                    data[i].wrapping_sub(delta)
                };
            }
            // Swap two bytes.
            14 if len > 1 => {
                let (a, b) = (rng.below(len), rng.below(len));
                data.swap(a, b);
            }
            _ => {}
        }
    }
    data.truncate(t.max_len);
}

fn insert(data: &mut Vec<u8>, rng: &mut Rng, bytes: &[u8]) {
    let at = rng.below(data.len() + 1);
    data.splice(at..at, bytes.iter().copied());
}

fn overwrite(data: &mut Vec<u8>, rng: &mut Rng, bytes: &[u8]) {
    let at = rng.below(data.len() + 1);
    let end = (at + bytes.len()).min(data.len());
    data.splice(at..end, bytes.iter().copied());
}

/// The panic of the last input, caught quietly.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Keep panics off the terminal and remember the last one.
fn quiet_panics() {
    panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-text panic)".into());
        let at = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        if let Ok(mut p) = LAST_PANIC.lock() {
            *p = Some(format!("panicked at {at}: {msg}"));
        }
    }));
}

/// Run one input; `Err(panic message)` on a panic.
pub fn run_one(t: &Target, data: &[u8]) -> Result<u64, String> {
    match panic::catch_unwind(AssertUnwindSafe(|| (t.run)(data))) {
        Ok(f) => Ok(f),
        Err(_) => Err(LAST_PANIC
            .lock()
            .ok()
            .and_then(|mut p| p.take())
            .unwrap_or_else(|| "panicked".into())),
    }
}

/// Every file below `dir`, sorted by path (missing dir: none).
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(ft) if ft.is_dir() => todo.push(p),
                Ok(ft) if ft.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Settings of one run.
pub struct Options {
    pub seconds: f64,
    pub seed: u64,
    pub seeds_dir: PathBuf,
    pub crashes_dir: PathBuf,
    /// An input running longer than this is a hang (a finding).
    pub hang: Duration,
    /// Called before the process exits on a hang.
    pub cleanup: fn(),
}

/// What a run found.
pub struct Report {
    pub iterations: u64,
    pub elapsed: Duration,
    pub seeds: usize,
    pub corpus: usize,
    pub features: usize,
    /// Saved findings (files), one per distinct panic location.
    pub findings: Vec<PathBuf>,
}

/// Save `data` as a finding of `t` with `why`; returns the file.
fn save_finding(dir: &Path, kind: &str, data: &[u8], why: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{kind}-{:016x}", fnv(data)));
    std::fs::write(&path, data)?;
    std::fs::write(path.with_extension("txt"), format!("{why}\n"))?;
    Ok(path)
}

/// Fuzz `t` for `o.seconds`. Seeds run first, unmutated; then mutations of
/// the corpus. Findings are saved under `o.crashes_dir/<target>/`.
pub fn fuzz(t: &Target, o: &Options) -> Report {
    quiet_panics();
    let crash_dir = o.crashes_dir.join(t.name);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(o.seconds);
    // The watchdog: the current input and when it started (ms since start,
    // 0 = idle). An input past the hang limit is saved and the process
    // exits: a hang in PID 1 is a boot that never ends.
    let current: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
    let started_ms = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    {
        let (current, started_ms, done) = (current.clone(), started_ms.clone(), done.clone());
        let (dir, name, hang, cleanup) = (crash_dir.clone(), t.name, o.hang, o.cleanup);
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let s = started_ms.load(Ordering::Relaxed);
                let now = start.elapsed().as_millis() as u64;
                if s != 0 && now.saturating_sub(s) > hang.as_millis() as u64 {
                    let data = current.lock().map(|d| d.clone()).unwrap_or_default();
                    let why = format!("{name}: input ran longer than {} s (hang)", hang.as_secs());
                    let saved = save_finding(&dir, "hang", &data, &why);
                    let _ = writeln!(
                        std::io::stderr(),
                        "genboot-fuzz: FINDING {why}; input saved as {:?}",
                        saved.map(|p| p.display().to_string())
                    );
                    cleanup();
                    std::process::exit(3);
                }
            }
        });
    }
    let run = |data: &[u8]| -> Result<u64, String> {
        if let Ok(mut c) = current.lock() {
            c.clear();
            c.extend_from_slice(data);
        }
        started_ms.store(start.elapsed().as_millis() as u64 | 1, Ordering::Relaxed);
        let r = run_one(t, data);
        started_ms.store(0, Ordering::Relaxed);
        r
    };

    let mut rng = Rng::new(o.seed);
    let mut features: HashSet<u64> = HashSet::new();
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let mut findings = Vec::new();
    let mut seen_panics: HashSet<String> = HashSet::new();
    let mut iterations = 0u64;
    let mut handle = |data: &[u8],
                      r: Result<u64, String>,
                      corpus: &mut Vec<Vec<u8>>,
                      findings: &mut Vec<PathBuf>| {
        match r {
            Ok(f) => {
                if features.insert(f) && corpus.len() < 20_000 {
                    corpus.push(data.to_vec());
                }
            }
            Err(why) => {
                // One saved input per panic location.
                let at = why.split(": ").next().unwrap_or("").to_string();
                if seen_panics.insert(at) && findings.len() < 32 {
                    let why = format!("{}: {why}", t.name);
                    match save_finding(&crash_dir, "crash", data, &why) {
                        Ok(p) => {
                            eprintln!(
                                "genboot-fuzz: FINDING {why}\n  input saved as {}",
                                p.display()
                            );
                            findings.push(p);
                        }
                        Err(e) => eprintln!("genboot-fuzz: FINDING {why} (cannot save: {e})"),
                    }
                }
            }
        }
    };
    let seed_files = files_below(&o.seeds_dir.join(t.name));
    for f in &seed_files {
        let mut data = std::fs::read(f).unwrap_or_default();
        data.truncate(t.max_len);
        let r = run(&data);
        iterations += 1;
        // Seeds always join the corpus (a seed that panics is a finding too).
        corpus.push(data.clone());
        handle(&data, r, &mut corpus, &mut findings);
    }
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut input = Vec::new();
    while Instant::now() < deadline {
        for _ in 0..64 {
            // Newer corpus entries (new features) are picked more often.
            let n = corpus.len();
            let pick = if rng.one_in(2) {
                n - 1 - rng.below(n.min(64))
            } else {
                rng.below(n)
            };
            input.clear();
            input.extend_from_slice(&corpus[pick]);
            mutate(&mut input, &mut rng, &corpus, t);
            let r = run(&input);
            iterations += 1;
            handle(&input, r, &mut corpus, &mut findings);
        }
    }
    done.store(true, Ordering::Relaxed);
    Report {
        iterations,
        elapsed: start.elapsed(),
        seeds: seed_files.len(),
        corpus: corpus.len(),
        features: features.len(),
        findings,
    }
}
