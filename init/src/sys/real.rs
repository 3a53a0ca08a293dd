//! The real machine: syscalls through `std` where it has them, `libc`
//! where it does not, one `unsafe` function at a time.

use super::{parallel, Kind, Loaded, Meta, ModuleLoad, Sys};
use genboot_format::store_name::StoreHash;
use genboot_format::storehash;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::time::Duration;

/// `MODULE_INIT_COMPRESSED_FILE` from `<linux/module.h>` (Linux 6.4+).
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

#[derive(Default)]
pub struct RealSys {
    kmsg: Option<fs::File>,
}

impl RealSys {
    pub fn new() -> RealSys {
        RealSys::default()
    }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn kind(ft: fs::FileType) -> Kind {
    if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_file() {
        Kind::File
    } else {
        Kind::Other
    }
}

fn meta(m: &fs::Metadata) -> Meta {
    Meta {
        kind: kind(m.file_type()),
        dev: m.dev(),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
    }
}

#[allow(unsafe_code)]
fn clock_boottime_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

#[allow(unsafe_code)]
fn sys_mount(source: &str, target: &str, fstype: &str, flags: u64, data: &str) -> io::Result<()> {
    let (s, t, f, d) = (cstr(source)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    let opt = |c: &CString, empty: bool| if empty { std::ptr::null() } else { c.as_ptr() };
    // SAFETY: every pointer is a NUL-terminated string owned by this frame,
    // or null where the kernel accepts null (no source/type/data).
    let rc = unsafe {
        libc::mount(
            opt(&s, source.is_empty()),
            t.as_ptr(),
            opt(&f, fstype.is_empty()),
            flags as libc::c_ulong,
            opt(&d, data.is_empty()) as *const libc::c_void,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[allow(unsafe_code)]
fn sys_finit_module(file: &fs::File, flags: libc::c_uint) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let params = c"";
    // SAFETY: the fd is open for the whole call and `params` is a static
    // NUL-terminated string; finit_module reads only those.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The CPUs this process may run on (`sched_getaffinity`); 1 when the
/// kernel does not say. (std's `available_parallelism` would also read
/// cgroup files, which cost binary size and mean nothing in an initrd.)
#[allow(unsafe_code)]
fn sched_cpus() -> usize {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed;
    // CPU_COUNT only reads it.
    let n = unsafe {
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return 1;
        }
        libc::CPU_COUNT(&set)
    };
    usize::try_from(n).unwrap_or(1).max(1)
}

#[allow(unsafe_code)]
fn sys_reboot() -> io::Error {
    // SAFETY: sync and reboot take no pointers; reboot only returns on error.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    io::Error::last_os_error()
}

#[allow(unsafe_code)]
fn shell_command(root: &str, shell: &str) -> io::Result<std::process::Command> {
    let root_c = cstr(root)?;
    let mut cmd = std::process::Command::new(shell);
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe syscalls (chroot, chdir) on memory prepared before
    // the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::chroot(root_c.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

fn load_module_file(path: &str, compressed: bool) -> io::Result<()> {
    let f = fs::File::open(path)?;
    sys_finit_module(
        &f,
        if compressed {
            MODULE_INIT_COMPRESSED_FILE
        } else {
            0
        },
    )
}

impl Sys for RealSys {
    fn now_us(&mut self) -> u64 {
        clock_boottime_us()
    }

    fn console(&mut self, line: &str) {
        let mut e = io::stderr().lock();
        let _ = e.write_all(line.as_bytes());
        let _ = e.write_all(b"\n");
    }

    fn kmsg(&mut self, level: u8, line: &str) {
        if self.kmsg.is_none() {
            self.kmsg = fs::OpenOptions::new().write(true).open("/dev/kmsg").ok();
        }
        if let Some(k) = &mut self.kmsg {
            // One write is one record.
            let _ = k.write_all(format!("<{level}>{line}\n").as_bytes());
        }
    }

    fn kernel_release(&mut self) -> io::Result<String> {
        Ok(fs::read_to_string("/proc/sys/kernel/osrelease")?
            .trim()
            .to_string())
    }

    fn mount(
        &mut self,
        source: &str,
        target: &str,
        fstype: &str,
        flags: u64,
        data: &str,
    ) -> io::Result<()> {
        sys_mount(source, target, fstype, flags, data)
    }

    fn mkdir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        fs::DirBuilder::new().mode(mode).create(path)
    }

    fn load_module(&mut self, path: &str, compressed: bool) -> io::Result<()> {
        load_module_file(path, compressed)
    }

    fn load_modules(&mut self, jobs: &[ModuleLoad<'_>], threads: usize) -> Vec<Loaded> {
        let after = |i: usize| jobs.get(i).map(|j| j.after.clone()).unwrap_or_default();
        parallel::run_ordered(jobs.len(), after, threads, |i| {
            let start_us = clock_boottime_us();
            let result = match jobs.get(i) {
                Some(j) => load_module_file(j.path, j.compressed),
                None => Err(io::Error::from_raw_os_error(libc::EINVAL)),
            };
            Loaded {
                result,
                start_us,
                end_us: clock_boottime_us(),
            }
        })
    }

    fn cpus(&mut self) -> usize {
        sched_cpus()
    }

    fn read_file(&mut self, path: &str) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn read_at(&mut self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut f = fs::File::open(path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(len);
        f.take(len as u64).read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn read_dir(&mut self, path: &str) -> io::Result<Vec<(String, Kind)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(path)? {
            let e = e?;
            out.push((
                e.file_name().to_string_lossy().into_owned(),
                kind(e.file_type()?),
            ));
        }
        Ok(out)
    }

    fn read_link(&mut self, path: &str) -> io::Result<String> {
        Ok(fs::read_link(path)?.to_string_lossy().into_owned())
    }

    fn lstat(&mut self, path: &str) -> io::Result<Meta> {
        Ok(meta(&fs::symlink_metadata(path)?))
    }

    fn stat(&mut self, path: &str) -> io::Result<Meta> {
        Ok(meta(&fs::metadata(path)?))
    }

    fn write_file(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        fs::write(path, data)
    }

    fn unlink(&mut self, path: &str) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rmdir(&mut self, path: &str) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn hash_tree(&mut self, dir: &str, name: &str, own: &StoreHash) -> io::Result<StoreHash> {
        storehash::hash_tree(std::path::Path::new(dir), name, Some(own.as_bytes()))
    }

    fn chdir(&mut self, path: &str) -> io::Result<()> {
        std::env::set_current_dir(path)
    }

    fn chroot(&mut self, path: &str) -> io::Result<()> {
        std::os::unix::fs::chroot(path)
    }

    fn exec(&mut self, path: &str, argv: &[String]) -> io::Result<()> {
        let mut cmd = std::process::Command::new(path);
        if let Some((arg0, rest)) = argv.split_first() {
            cmd.arg0(arg0).args(rest);
        }
        Err(cmd.exec())
    }

    fn run_shell(&mut self, root: &str, shell: &str) -> io::Result<()> {
        shell_command(root, shell)?.status().map(|_| ())
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d)
    }

    fn reboot(&mut self) -> io::Result<()> {
        Err(sys_reboot())
    }
}
