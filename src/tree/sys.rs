//! The system calls the tree code needs and std does not wrap: xattrs,
//! free space, mounts and loop devices. One `unsafe` block per function,
//! each with its SAFETY argument; everything else stays safe.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn cbytes(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

/// Names of the xattrs of `path` itself (not following a symlink).
#[allow(unsafe_code)]
pub(crate) fn list_xattrs(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let c = cpath(path)?;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // SAFETY: `c` is a valid NUL-terminated string; with size 0 the
        // kernel only returns the needed size and writes nothing.
        let need = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
        if need < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOTSUP) {
                return Ok(Vec::new());
            }
            return Err(e);
        }
        if need == 0 {
            return Ok(Vec::new());
        }
        buf.resize(need as usize, 0);
        // SAFETY: `buf` is writable for `buf.len()` bytes, which is the size
        // passed; the kernel writes at most that many.
        let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew meanwhile
            }
            return Err(e);
        }
        buf.truncate(n as usize);
        return Ok(buf
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect());
    }
}

/// The value of xattr `name` of `path` itself.
#[allow(unsafe_code)]
pub(crate) fn get_xattr(path: &Path, name: &[u8]) -> io::Result<Vec<u8>> {
    let c = cpath(path)?;
    let n = cbytes(name)?;
    loop {
        // SAFETY: both strings are NUL-terminated; size 0 writes nothing.
        let need = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
        if need < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; need as usize];
        if buf.is_empty() {
            return Ok(buf);
        }
        // SAFETY: `buf` is writable for `buf.len()` bytes, the size passed.
        let got =
            unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(buf);
    }
}

/// Set xattr `name` of `path` itself (not following a symlink) to `value`.
#[allow(unsafe_code)]
pub(crate) fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cpath(path)?;
    let n = cbytes(name)?;
    // SAFETY: both strings are NUL-terminated and live across the call;
    // `value` is readable for `value.len()` bytes, the size passed.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Create an overlayfs whiteout at `path`: a character device 0:0 (no
/// privilege needed since Linux 5.8).
#[allow(unsafe_code)]
pub(crate) fn mknod_whiteout(path: &Path) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Remove xattr `name` from `path` itself.
#[allow(unsafe_code)]
pub(crate) fn remove_xattr(path: &Path, name: &[u8]) -> io::Result<()> {
    let c = cpath(path)?;
    let n = cbytes(name)?;
    // SAFETY: both strings are NUL-terminated and live across the call.
    let rc = unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Free space of the file system holding `path`, for an unprivileged
/// writer: (`f_frsize`, `f_bavail`).
#[allow(unsafe_code)]
pub(crate) fn free_space(path: &Path) -> io::Result<(u64, u64)> {
    let c = cpath(path)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is NUL-terminated and `st` points to writable memory of
    // the right size, which statvfs fills on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    let frsize = if st.f_frsize > 0 {
        st.f_frsize
    } else {
        st.f_bsize
    };
    Ok((frsize, st.f_bavail))
}

/// mount(2).
#[allow(unsafe_code)]
pub(crate) fn mount(
    source: &Path,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let s = cpath(source)?;
    let t = cpath(target)?;
    let f = cbytes(fstype.as_bytes())?;
    let d = data.map(|d| cbytes(d.as_bytes())).transpose()?;
    let dptr = d
        .as_ref()
        .map(|d| d.as_ptr().cast::<libc::c_void>())
        .unwrap_or(std::ptr::null());
    // SAFETY: all strings are NUL-terminated and outlive the call; `data`
    // is either NULL or a NUL-terminated option string, as mount(2) wants.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, dptr) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// umount2(2).
#[allow(unsafe_code)]
pub(crate) fn umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let t = cpath(target)?;
    // SAFETY: `t` is NUL-terminated and lives across the call.
    let rc = unsafe { libc::umount2(t.as_ptr(), flags) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// <linux/loop.h>
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64`.
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

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Attach `file` read-only to a free loop device with autoclear (the device
/// goes away when the last mount of it does), as libcomposefs and
/// genboot-init do: `LOOP_CTL_GET_FREE`, then `LOOP_CONFIGURE`. Returns the
/// device path and the open device: with autoclear the kernel detaches the
/// device at its last close, so keep it open until a mount holds it.
#[allow(unsafe_code)]
pub(crate) fn loop_attach(file: &Path) -> io::Result<(PathBuf, std::fs::File)> {
    use std::os::fd::AsRawFd;
    let backing = std::fs::File::open(file)?;
    let ctl = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let loopf = std::fs::OpenOptions::new().read(true).open(&dev)?;
        let mut name = [0u8; 64];
        let fb = file.as_os_str().as_bytes();
        let len = fb.len().min(63);
        name[..len].copy_from_slice(&fb[..len]);
        let cfg = LoopConfig {
            fd: backing.as_raw_fd() as u32,
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
                lo_file_name: name,
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: `cfg` is a fully initialised `struct loop_config` that
        // lives across the call; the kernel only reads it.
        let rc = unsafe { libc::ioctl(loopf.as_raw_fd(), LOOP_CONFIGURE as _, &cfg) };
        if rc == 0 {
            return Ok((dev, loopf));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(e);
        }
        // Someone took the device between GET_FREE and CONFIGURE: retry.
    }
    Err(io::Error::other("no free loop device after 16 tries"))
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
