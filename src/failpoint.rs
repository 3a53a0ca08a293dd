//! Named failpoints on the real code path: every write step of the store,
//! the profile and the ESP installer calls [`hit`] with its [`FailPoint`].
//!
//! Two ways to fire one:
//! - **In the process** (unit tests): [`arm`] a point on the current thread
//!   with a [`Mode`]; the returned guard disarms it when dropped. Threads
//!   do not see each other's points, so tests run in parallel.
//! - **From the environment** (the crash tests, which run the real binary):
//!   `GENBOOT_FAILPOINTS=name[,name...]` makes the step with that name stop
//!   as if the machine lost power there: the process exits at once (code
//!   99), nothing after the point runs and nothing is cleaned up.
//!   `name=error` makes the step return an error instead (exercises the
//!   error path and its clean-up). `name=wait:FILE` holds the step until
//!   FILE exists, after writing `FILE.reached` (holding the pid): tests use
//!   it to stop one process at a step while another one runs, without
//!   sleeping.
//!
//! Below the named steps, at the I/O layer of the disk-image backend:
//! `GENBOOT_KILL_AT_WRITE=K` stops the process just before its K-th write
//! to a FAT volume (counted from 1 over the whole process; every write is
//! one `pwrite` of whole sectors), as a `kill -9` would: exit code 99, no
//! clean-up. `GENBOOT_WRITE_TRACE=FILE` appends one line per volume write
//! (`<n> <offset> <length> <what>`), so a test learns how many writes a
//! run makes and what each one is, then kills a copy of the run at each.

use std::cell::RefCell;
use std::io;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Declares [`FailPoint`], its names and the lists of both, from one table.
macro_rules! failpoints {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// A step after which a crash or an error can be injected.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum FailPoint {
            $($(#[$doc])* $variant,)*
        }

        impl FailPoint {
            /// Every failpoint, in the order the steps run.
            pub const ALL: &'static [FailPoint] = &[$(FailPoint::$variant,)*];

            /// The name `GENBOOT_FAILPOINTS` uses (`esp::file-written`).
            pub const fn name(self) -> &'static str {
                match self {
                    $(FailPoint::$variant => $name,)*
                }
            }
        }

        /// Every failpoint's name, for tests that set `GENBOOT_FAILPOINTS`.
        pub const ALL: &[&str] = &[$($name,)*];
    };
}

failpoints! {
    /// A store object's contents are in its staging directory.
    StoreStaged => "store::staged",
    /// The staged object is hashed.
    StoreHashed => "store::hashed",
    /// The staged object is read-only and flushed.
    StoreSynced => "store::synced",
    /// The object is in place under its name.
    StoreRenamed => "store::renamed",
    /// A new profile link exists under its temporary name.
    ProfileLinkWritten => "profile::link-written",
    /// The new profile link is in place.
    ProfileLinkRenamed => "profile::link-renamed",
    /// The new `system` link exists under its temporary name.
    ProfileCurrentWritten => "profile::current-written",
    /// `system` points at the new generation.
    ProfileCurrentRenamed => "profile::current-renamed",
    /// A kernel, initrd or loader is on the ESP under its temporary name.
    EspFileWritten => "esp::file-written",
    /// That file is in place.
    EspFileRenamed => "esp::file-renamed",
    /// An entry is on the ESP under its temporary name.
    EspEntryWritten => "esp::entry-written",
    /// That entry is in place.
    EspEntryRenamed => "esp::entry-renamed",
    /// A changed entry has its fresh name (new counter), still the old content.
    EspEntryCounterReset => "esp::entry-counter-reset",
    /// `loader.conf` is on the ESP under its temporary name.
    EspLoaderConfWritten => "esp::loader-conf-written",
    /// `loader.conf` is in place.
    EspLoaderConfRenamed => "esp::loader-conf-renamed",
    /// An entry (or a leftover) nothing needs was removed.
    EspEntryRemoved => "esp::entry-removed",
    /// A kernel or initrd nothing references was removed.
    EspFileRemoved => "esp::file-removed",
    /// `genboot bless` renamed the booted entry to its plain name.
    EspBlessRenamed => "esp::bless-renamed",
    /// A tree's source is complete (mmdebstrap finished into the store's
    /// staging directory, or a `dir` tree is about to be read).
    TreeSourceReady => "tree::source-ready",
    /// A tree import's new content objects are written under temporary names.
    TreeObjectsWritten => "tree::objects-written",
    /// Those content objects are flushed.
    TreeObjectsSynced => "tree::objects-synced",
    /// The content objects are in place under their digests.
    TreeObjectsPlaced => "tree::objects-placed",
    /// The tree object (manifest, metadata image) is staged.
    TreeStaged => "tree::staged",
    /// The pinned uid/gid map is saved.
    TreeUidMapSaved => "tree::uid-map-saved",
    /// The staged tree object is flushed.
    TreeSynced => "tree::synced",
    /// The tree object is in place under its name.
    TreeRenamed => "tree::renamed",
    /// A generation's new `/etc` layer is written and flushed under its
    /// temporary name (src/tree/etc.rs).
    EtcLayerWritten => "etc::layer-written",
}

impl std::fmt::Display for FailPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What an armed failpoint does when it is hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The step returns an error (nothing after it runs; the caller's
    /// error path runs as it would on a real I/O error).
    Error,
    /// Like [`Mode::Error`], but only at the `n`-th hit (from 1) on this
    /// thread; the hits before it pass.
    ErrorAt(u32),
}

thread_local! {
    /// Points armed on this thread: (point, mode, hits so far).
    static ARMED: RefCell<Vec<(FailPoint, Mode, u32)>> = const { RefCell::new(Vec::new()) };
}

/// Keeps a point armed on this thread; dropping it disarms the point.
#[derive(Debug)]
#[must_use = "the point is disarmed when the guard is dropped"]
pub struct Armed {
    point: FailPoint,
}

impl Armed {
    /// How often the point was hit since it was armed.
    pub fn hits(&self) -> u32 {
        ARMED.with(|a| {
            a.borrow()
                .iter()
                .find(|(p, _, _)| *p == self.point)
                .map_or(0, |(_, _, n)| *n)
        })
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        ARMED.with(|a| a.borrow_mut().retain(|(p, _, _)| *p != self.point));
    }
}

/// Arm `point` on the current thread (in-process tests).
pub fn arm(point: FailPoint, mode: Mode) -> Armed {
    ARMED.with(|a| {
        let mut a = a.borrow_mut();
        a.retain(|(p, _, _)| *p != point);
        a.push((point, mode, 0));
    });
    Armed { point }
}

fn injected(point: FailPoint) -> io::Error {
    io::Error::other(format!("failpoint {point} injected an error"))
}

/// Fail here if this thread armed `point` or the environment asks for it.
pub fn hit(point: FailPoint) -> io::Result<()> {
    let fire = ARMED.with(|a| {
        let mut a = a.borrow_mut();
        let Some((_, mode, hits)) = a.iter_mut().find(|(p, _, _)| *p == point) else {
            return false;
        };
        *hits += 1;
        match *mode {
            Mode::Error => true,
            Mode::ErrorAt(n) => *hits == n,
        }
    });
    if fire {
        return Err(injected(point));
    }
    let Ok(list) = std::env::var("GENBOOT_FAILPOINTS") else {
        return Ok(());
    };
    let name = point.name();
    for item in list.split(',') {
        let (p, action) = item.split_once('=').unwrap_or((item, "exit"));
        if p != name {
            continue;
        }
        if let Some(file) = action.strip_prefix("wait:") {
            wait_for(name, std::path::Path::new(file))?;
            continue;
        }
        if action == "error" {
            return Err(injected(point));
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
pub(crate) fn volume_write(offset: u64, len: usize, what: &str) {
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
            // A trace line that cannot be written only makes the trace
            // shorter; the test reading it notices.
            let _ = writeln!(f, "{n} {offset} {len} {what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_listed_in_step_order() {
        let mut names: Vec<&str> = FailPoint::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names, ALL);
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert_eq!(FailPoint::EspBlessRenamed.name(), "esp::bless-renamed");
    }

    #[test]
    fn an_armed_point_fails_on_this_thread_only_until_disarmed() {
        let armed = arm(FailPoint::StoreStaged, Mode::Error);
        let e = hit(FailPoint::StoreStaged).unwrap_err();
        assert_eq!(e.to_string(), "failpoint store::staged injected an error");
        hit(FailPoint::StoreHashed).unwrap();
        std::thread::spawn(|| hit(FailPoint::StoreStaged).unwrap())
            .join()
            .unwrap();
        assert_eq!(armed.hits(), 1);
        drop(armed);
        hit(FailPoint::StoreStaged).unwrap();
    }

    #[test]
    fn error_at_fires_at_the_nth_hit_only() {
        let armed = arm(FailPoint::EspFileWritten, Mode::ErrorAt(2));
        hit(FailPoint::EspFileWritten).unwrap();
        assert!(hit(FailPoint::EspFileWritten).is_err());
        hit(FailPoint::EspFileWritten).unwrap();
        assert_eq!(armed.hits(), 3);
    }
}
