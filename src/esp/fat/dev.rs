//! The ESP partition of an image file as a device of bytes: bounded reads,
//! writes of whole sectors (one `pwrite` each, counted, traced and killable
//! through [`crate::failpoint::volume_write`]) and `fdatasync` barriers.
//!
//! Writes can also be *staged*: kept in memory, visible to every read, and
//! written later in the order they were staged ([`Dev::write_staged`]).
//! The volume stages the repairs it plans when it is opened, so a run that
//! then refuses (a full ESP, say) leaves the image byte for byte as it was.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::rc::Rc;

pub(super) struct Dev {
    file: Rc<File>,
    start: u64,
    len: u64,
    writable: bool,
    /// Staged writes, in order: (offset, bytes).
    staged: Vec<(u64, Vec<u8>, String)>,
    /// Bytes and `pwrite` calls that reached the file.
    pub bytes: u64,
    pub calls: u64,
    unsynced: bool,
}

impl Dev {
    pub fn new(file: Rc<File>, start: u64, len: u64, writable: bool) -> Dev {
        Dev {
            file,
            start,
            len,
            writable,
            staged: Vec::new(),
            bytes: 0,
            calls: 0,
            unsynced: false,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    fn bounds(&self, off: u64, n: usize) -> io::Result<()> {
        if off.checked_add(n as u64).is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "bytes {off}..{} are outside the partition ({} bytes)",
                    off.saturating_add(n as u64),
                    self.len
                ),
            ));
        }
        Ok(())
    }

    /// Read `buf.len()` bytes at `off` (partition offset), staged writes
    /// included.
    pub fn read(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        self.bounds(off, buf.len())?;
        self.file
            .read_exact_at(buf, self.start + off)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the image file ends inside its ESP partition",
                    )
                } else {
                    e
                }
            })?;
        let end = off + buf.len() as u64;
        for (s_off, data, _) in &self.staged {
            let s_end = s_off + data.len() as u64;
            if *s_off < end && s_end > off {
                let from = off.max(*s_off);
                let to = end.min(s_end);
                buf[(from - off) as usize..(to - off) as usize]
                    .copy_from_slice(&data[(from - s_off) as usize..(to - s_off) as usize]);
            }
        }
        Ok(())
    }

    /// Write `data` at `off` now: one `pwrite`.
    pub fn write(&mut self, off: u64, data: &[u8], what: &str) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the image is open read-only",
            ));
        }
        self.bounds(off, data.len())?;
        crate::failpoint::volume_write(off, data.len(), what);
        self.file.write_all_at(data, self.start + off)?;
        self.bytes += data.len() as u64;
        self.calls += 1;
        self.unsynced = true;
        Ok(())
    }

    /// Keep `data` for offset `off` in memory until [`Dev::write_staged`].
    pub fn stage(&mut self, off: u64, data: Vec<u8>, what: String) -> io::Result<()> {
        self.bounds(off, data.len())?;
        self.staged.push((off, data, what));
        Ok(())
    }

    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Write every staged write, in the order staged.
    pub fn write_staged(&mut self) -> io::Result<()> {
        let staged = std::mem::take(&mut self.staged);
        for (off, data, what) in &staged {
            self.write(*off, data, what)?;
        }
        Ok(())
    }

    /// `fdatasync` the image file if anything was written since the last.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }
}
