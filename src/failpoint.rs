//! Named failpoints on the real code path. A test sets
//! `GENBOOT_FAILPOINTS=name[,name...]` and the step with that name fails as
//! if the machine lost power there: the process exits at once, nothing after
//! the point runs and nothing is cleaned up. `name=error` makes the step
//! return an error instead (exercises the error path and its clean-up).
//! `name=wait:FILE` holds the step until FILE exists, after writing
//! `FILE.reached` (holding the pid): tests use it to stop one process at a
//! step while another one runs, without sleeping.
//!
//! Every write step of the store, the profile and the ESP installer calls
//! [`hit`] with its name; `genboot failpoints` lists them.
//!
//! Below the named steps, at the I/O layer of the disk-image backend:
//! `GENBOOT_KILL_AT_WRITE=K` stops the process just before its K-th write
//! to a FAT volume (counted from 1 over the whole process; every write is
//! one `pwrite` of whole sectors), as a `kill -9` would: exit code 99, no
//! clean-up. `GENBOOT_WRITE_TRACE=FILE` appends one line per volume write
//! (`<n> <offset> <length> <what>`), so a test learns how many writes a
//! run makes and what each one is, then kills a copy of the run at each.

use std::io;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Every failpoint, so tests can iterate them and the CLI can list them.
pub const ALL: &[&str] = &[
    "store::staged",
    "store::hashed",
    "store::synced",
    "store::renamed",
    "profile::link-written",
    "profile::link-renamed",
    "profile::current-written",
    "profile::current-renamed",
    "esp::file-written",
    "esp::file-renamed",
    "esp::entry-written",
    "esp::entry-renamed",
    "esp::entry-counter-reset",
    "esp::loader-conf-written",
    "esp::loader-conf-renamed",
    "esp::entry-removed",
    "esp::file-removed",
    "esp::bless-renamed",
];

/// Fail here if the environment asks for it.
pub fn hit(name: &str) -> io::Result<()> {
    let Ok(list) = std::env::var("GENBOOT_FAILPOINTS") else {
        return Ok(());
    };
    for item in list.split(',') {
        let (point, action) = item.split_once('=').unwrap_or((item, "exit"));
        if point != name {
            continue;
        }
        if let Some(file) = action.strip_prefix("wait:") {
            wait_for(name, std::path::Path::new(file))?;
            continue;
        }
        if action == "error" {
            return Err(io::Error::other(format!(
                "failpoint {name} injected an error"
            )));
        }
        eprintln!("genboot: failpoint {name}: stopping as if power was lost");
        std::process::exit(99);
    }
    Ok(())
}

/// Announce that `name` was reached, then wait (bounded) until `file` exists.
fn wait_for(name: &str, file: &std::path::Path) -> io::Result<()> {
    let mut reached = file.as_os_str().to_owned();
    reached.push(".reached");
    std::fs::write(&reached, std::process::id().to_string())?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !file.exists() {
        if std::time::Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "failpoint {name}: {} did not appear within 300 s",
                file.display()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}

/// Writes to FAT volumes so far in this process.
static VOLUME_WRITES: AtomicU64 = AtomicU64::new(0);

/// Writes to FAT volumes this process made so far (for benchmarks).
pub fn volume_writes() -> u64 {
    VOLUME_WRITES.load(Ordering::Relaxed)
}

/// Called by the image backend just before each write to a FAT volume:
/// counts it, traces it (`GENBOOT_WRITE_TRACE`) and stops the process
/// when it is the one `GENBOOT_KILL_AT_WRITE` names. `offset` is the
/// byte offset in the partition.
pub fn volume_write(offset: u64, len: usize, what: &str) {
    static KILL_AT: OnceLock<Option<u64>> = OnceLock::new();
    static TRACE: OnceLock<Option<std::sync::Mutex<std::fs::File>>> = OnceLock::new();
    let n = VOLUME_WRITES.fetch_add(1, Ordering::Relaxed) + 1;
    let kill_at = KILL_AT.get_or_init(|| {
        std::env::var("GENBOOT_KILL_AT_WRITE")
            .ok()
            .and_then(|v| v.trim().parse().ok())
    });
    let trace = TRACE.get_or_init(|| {
        let path = std::env::var_os("GENBOOT_WRITE_TRACE")?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
            .map(std::sync::Mutex::new)
    });
    if *kill_at == Some(n) {
        eprintln!("genboot: GENBOOT_KILL_AT_WRITE={n}: stopping before volume write {n} ({what}) as if killed");
        std::process::exit(99);
    }
    if let Some(t) = trace {
        if let Ok(mut f) = t.lock() {
            let _ = writeln!(f, "{n} {offset} {len} {what}");
        }
    }
}
