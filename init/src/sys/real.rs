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
fn sys_umount(target: &str, flags: i32) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: `t` is a NUL-terminated string that outlives the call.
    let rc = unsafe { libc::umount2(t.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// <linux/loop.h>
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` (232 bytes).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (304 bytes).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A free loop device's number (`LOOP_CTL_GET_FREE`).
#[allow(unsafe_code)]
fn loop_get_free() -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let ctl = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number;
    // the fd is open for the call.
    let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
    u32::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Attach `backing` to the open loop device `dev`, read-only, autoclear.
#[allow(unsafe_code)]
fn loop_configure(dev: &fs::File, backing: &fs::File, name: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut file_name = [0u8; 64];
    for (d, s) in file_name.iter_mut().zip(name.bytes().take(63)) {
        *d = s;
    }
    let cfg = LoopConfig {
        fd: u32::try_from(backing.as_raw_fd()).map_err(|_| io::Error::other("bad fd"))?,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
            lo_file_name: file_name,
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: `cfg` is a fully initialised `struct loop_config` that lives
    // across the call; the kernel only reads it. Both fds are open.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &cfg) };
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

    fn umount(&mut self, target: &str, flags: i32) -> io::Result<()> {
        sys_umount(target, flags)
    }

    fn mount_loop(
        &mut self,
        file: &str,
        target: &str,
        fstype: &str,
        flags: u64,
        data: &str,
    ) -> io::Result<String> {
        let backing = fs::File::open(file)?;
        let dev = format!("/dev/loop{}", loop_get_free()?);
        // Held open until the mount has the device (autoclear).
        let loopf = fs::OpenOptions::new().read(true).open(&dev)?;
        loop_configure(&loopf, &backing, file)?;
        sys_mount(&dev, target, fstype, flags, data)?;
        drop(loopf);
        Ok(dev)
    }

    fn mkdir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        fs::DirBuilder::new().mode(mode).create(path)
    }

    fn symlink(&mut self, target: &str, path: &str) -> io::Result<()> {
        std::os::unix::fs::symlink(target, path)
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

    fn sha256_file(&mut self, path: &str) -> io::Result<[u8; 32]> {
        storehash::file_digest(fs::File::open(path)?, None).map(|(_, d)| d)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_config_has_the_kernels_size() {
        // sizeof(struct loop_info64) = 232, sizeof(struct loop_config) = 304.
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
