//! The one seam between the activator and the machine. Every effect the
//! boot sequence has — mounts, module loading, chroot, exec, reboot, sleeping,
//! reading devices and writing files — is a method here. [`real::RealSys`]
//! does it with syscalls; the recording fake in the unit tests (`fake.rs`)
//! keeps an in-memory file tree and a log of calls, so the whole sequence is
//! checked without root.
//!
//! Contract: methods do exactly one thing, with the arguments given (no
//! retries, no fallbacks: those are the caller's policy), and report the
//! operating system's error unchanged.

use genboot_format::store_name::StoreHash;
use std::io;
use std::time::Duration;

pub mod parallel;
pub mod real;

#[cfg(test)]
pub(crate) mod fake;

/// Mount flags the activator uses (values of `<sys/mount.h>`).
pub mod flags {
    pub const MS_RDONLY: u64 = 1;
    pub const MS_NOSUID: u64 = 2;
    pub const MS_NODEV: u64 = 4;
    pub const MS_NOEXEC: u64 = 8;
    pub const MS_REMOUNT: u64 = 32;
    pub const MS_BIND: u64 = 4096;
    pub const MS_MOVE: u64 = 8192;
    /// `umount2`'s lazy unmount (`<sys/mount.h>`).
    pub const MNT_DETACH: i32 = 2;

    /// The flags as text, `|`-separated, for logs and tests.
    pub fn names(f: u64) -> String {
        let all = [
            (MS_RDONLY, "MS_RDONLY"),
            (MS_NOSUID, "MS_NOSUID"),
            (MS_NODEV, "MS_NODEV"),
            (MS_NOEXEC, "MS_NOEXEC"),
            (MS_REMOUNT, "MS_REMOUNT"),
            (MS_BIND, "MS_BIND"),
            (MS_MOVE, "MS_MOVE"),
        ];
        let mut out: Vec<String> = all
            .iter()
            .filter(|(bit, _)| f & bit != 0)
            .map(|(_, n)| n.to_string())
            .collect();
        let rest = all.iter().fold(f, |acc, (bit, _)| acc & !bit);
        if rest != 0 {
            out.push(format!("{rest:#x}"));
        }
        if out.is_empty() {
            "0".into()
        } else {
            out.join("|")
        }
    }
}

/// What an entry is, without following symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    /// Device nodes, fifos, sockets.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// The device of the file system holding the entry (`st_dev`).
    pub dev: u64,
    /// Permission bits with set-user-ID, set-group-ID and sticky
    /// (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner (`st_uid`).
    pub uid: u32,
    /// Group (`st_gid`).
    pub gid: u32,
}

/// One module for [`Sys::load_modules`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleLoad<'a> {
    pub path: &'a str,
    /// Pass the kernel's decompression flag.
    pub compressed: bool,
    /// The jobs (positions in the list, all before this one) that must
    /// have ended, loaded or not, before this one starts.
    pub after: Vec<usize>,
}

/// How one load of [`Sys::load_modules`] went.
#[derive(Debug)]
pub struct Loaded {
    pub result: io::Result<()>,
    /// When it started and ended, in microseconds since kernel start.
    pub start_us: u64,
    pub end_us: u64,
}

/// The machine, as far as the activator touches it.
pub trait Sys {
    /// Microseconds since the kernel started (`CLOCK_BOOTTIME`).
    fn now_us(&mut self) -> u64;
    /// Write a line to the console (PID 1's stdout/stderr is `/dev/console`).
    fn console(&mut self, line: &str);
    /// Write a line to the kernel log (`/dev/kmsg`) at syslog `level`
    /// (3 error, 6 info, 7 debug), once `/dev` is mounted; nothing before.
    fn kmsg(&mut self, level: u8, line: &str);
    /// The running kernel's release (`uname -r`).
    fn kernel_release(&mut self) -> io::Result<String>;

    fn mount(
        &mut self,
        source: &str,
        target: &str,
        fstype: &str,
        flags: u64,
        data: &str,
    ) -> io::Result<()>;
    /// `umount2(target, flags)`.
    fn umount(&mut self, target: &str, flags: i32) -> io::Result<()>;
    /// Mount the file `file` through a loop device: a free one
    /// (`LOOP_CTL_GET_FREE`) attached read-only with autoclear
    /// (`LOOP_CONFIGURE`, `LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR`), then
    /// `mount(device, target, …)`. One call, because the device must stay
    /// open until the mount holds it: the kernel detaches an autoclear
    /// device at its last close (`lo_release`). Returns the device's path.
    fn mount_loop(
        &mut self,
        file: &str,
        target: &str,
        fstype: &str,
        flags: u64,
        data: &str,
    ) -> io::Result<String>;
    fn mkdir(&mut self, path: &str, mode: u32) -> io::Result<()>;
    /// Create the symlink `path` pointing to `target`.
    fn symlink(&mut self, target: &str, path: &str) -> io::Result<()>;
    /// Load a kernel module from a file (`finit_module`), passing the
    /// kernel's decompression flag when `compressed`.
    fn load_module(&mut self, path: &str, compressed: bool) -> io::Result<()>;
    /// [`Sys::load_module`] of every job, at most `threads` at a time, each
    /// once the jobs in its `after` have ended (whatever their result), the
    /// lowest position first among those that may start
    /// ([`parallel::run_ordered`]). The results are in job order.
    fn load_modules(&mut self, jobs: &[ModuleLoad<'_>], threads: usize) -> Vec<Loaded>;
    /// How many CPUs this process may run on.
    fn cpus(&mut self) -> usize;

    fn read_file(&mut self, path: &str) -> io::Result<Vec<u8>>;
    /// Read up to `len` bytes at `offset` (block devices: short at the end).
    fn read_at(&mut self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Entries of a directory (names only, unsorted), without `.` and `..`.
    fn read_dir(&mut self, path: &str) -> io::Result<Vec<(String, Kind)>>;
    fn read_link(&mut self, path: &str) -> io::Result<String>;
    /// `lstat`.
    fn lstat(&mut self, path: &str) -> io::Result<Meta>;
    /// `stat`: follows symlinks, the kernel's way: an absolute link restarts
    /// at the process root (the initramfs before the switch). Paths on the
    /// mounted root go through [`crate::inroot::resolve_in_root`] first.
    fn stat(&mut self, path: &str) -> io::Result<Meta>;
    /// Create or replace a file with `data`.
    fn write_file(&mut self, path: &str, data: &[u8]) -> io::Result<()>;
    fn unlink(&mut self, path: &str) -> io::Result<()>;
    fn rmdir(&mut self, path: &str) -> io::Result<()>;

    /// The SHA-256 of a file's contents (read in pieces).
    fn sha256_file(&mut self, path: &str) -> io::Result<[u8; 32]>;
    /// The store hash of the object directory `dir` named `name`
    /// ([`genboot_format::storehash::hash_tree`]), its own hash `own` masked.
    fn hash_tree(&mut self, dir: &str, name: &str, own: &StoreHash) -> io::Result<StoreHash>;

    fn chdir(&mut self, path: &str) -> io::Result<()>;
    fn chroot(&mut self, path: &str) -> io::Result<()>;
    /// Replace this process with `path`. Returns only on failure (the fake
    /// returns `Ok` to say "the image was replaced here").
    fn exec(&mut self, path: &str, argv: &[String]) -> io::Result<()>;
    /// Run `shell` in a child process chrooted into `root`, on the console,
    /// and wait for it to exit.
    fn run_shell(&mut self, root: &str, shell: &str) -> io::Result<()>;
    fn sleep(&mut self, d: Duration);
    /// Flush file systems and restart the machine (`reboot(RB_AUTOBOOT)`).
    /// Returns only on failure (the fake returns `Ok`).
    fn reboot(&mut self) -> io::Result<()>;
}
