//! Finding the root device (`root=`) and mounting it at [`SYSROOT`].

use super::{errno_text, fail, Boot, Failure, Step, SYSROOT};
use crate::probe::{self, FsInfo};
use crate::sys::flags::*;
use crate::sys::Sys;
use genboot_format::cmdline::{BootArgs, RootSpec};
use genboot_format::manifest::Manifest;
use genboot_format::module_name::ModName;
use std::time::Duration;

/// How often the root device is looked for.
const POLL: Duration = Duration::from_millis(50);

impl<S: Sys> Boot<'_, S> {
    pub(super) fn wait_root(
        &mut self,
        args: &BootArgs,
        m: &Manifest,
        loaded: &mut Vec<ModName>,
        failed: &[String],
    ) -> Result<(String, Option<FsInfo>), Failure> {
        let spec = args.root.clone();
        let timeout = args.timeout;
        let start = self.sys.now_us();
        let timeout_us = u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX);
        let mut next_note = start.saturating_add(5_000_000);
        let mut round = 0u32;
        let mut notes: Vec<String> = Vec::new();
        let mut said = 0usize;
        loop {
            let found = find_root(self.sys, &spec, &mut notes);
            // Each odd thing a disk says is said once.
            while let Some(note) = notes.get(said).cloned() {
                self.say(&format!("warning: {note}"));
                said += 1;
            }
            if let Some(found) = found {
                let detail = format!("{spec} is {}", found.0);
                self.done(Step::WaitRoot, &detail);
                return Ok(found);
            }
            let now = self.sys.now_us();
            if now.saturating_sub(start) >= timeout_us {
                break;
            }
            if now >= next_note {
                let msg = format!("waiting for root device {spec} ...");
                self.say(&msg);
                next_note = now.saturating_add(5_000_000);
            }
            round = round.wrapping_add(1);
            if round.is_multiple_of(10) {
                self.modalias_pass(m, loaded);
            }
            self.sys.sleep(POLL);
        }
        let seen = block_devices(self.sys);
        let mut hint = format!(
            "block devices seen: {}. Check root= in the boot entry (`blkid` on the running system shows PARTUUID/UUID/LABEL), and that the disk's driver is in the initrd (initrd.modules in system.toml)",
            if seen.is_empty() { "none".to_string() } else { seen.join(" ") }
        );
        if !failed.is_empty() {
            hint.push_str(&format!(
                "; modules that failed to load: {}",
                failed.join(" ")
            ));
        }
        if !notes.is_empty() {
            hint.push_str(&format!("; skipped: {}", notes.join("; ")));
        }
        fail(
            Step::WaitRoot,
            format!(
                "root device {spec} did not appear within {} s (genboot.timeout)",
                timeout.as_secs()
            ),
            hint,
        )
    }

    pub(super) fn mount_root(
        &mut self,
        args: &BootArgs,
        dev: &str,
        fs: Option<&FsInfo>,
    ) -> Result<(), Failure> {
        let mut types = args.fstypes.clone();
        if types.is_empty() {
            match fs {
                Some(f) => types.push(f.fstype.to_string()),
                None => {
                    return fail(
                        Step::MountRoot,
                        format!("no file system recognised on {dev} and no rootfstype= given"),
                        "add rootfstype=<type> to the kernel command line",
                    )
                }
            }
        }
        match self.sys.mkdir(SYSROOT, 0o755) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => {
                return fail(
                    Step::MountRoot,
                    format!("cannot create {SYSROOT}: {}", errno_text(&e)),
                    "the initramfs must be writable",
                )
            }
        }
        let flags = if args.read_only { MS_RDONLY } else { 0 };
        let mut errors = Vec::new();
        for t in &types {
            match self.sys.mount(dev, SYSROOT, t, flags, &args.rootflags) {
                Ok(()) => {
                    self.root_at = Some(SYSROOT);
                    let detail = format!(
                        "{dev} ({t}, {}{}) on {SYSROOT}",
                        if args.read_only { "ro" } else { "rw" },
                        if args.rootflags.is_empty() {
                            String::new()
                        } else {
                            format!(",{}", args.rootflags)
                        }
                    );
                    self.done(Step::MountRoot, &detail);
                    return Ok(());
                }
                Err(e) => errors.push(format!("{t}: {}", errno_text(&e))),
            }
        }
        fail(
            Step::MountRoot,
            format!("cannot mount {dev} on {SYSROOT}: {}", errors.join("; ")),
            "check rootfstype= and rootflags=; the file-system driver must be built in or in the initrd (initrd.modules), and the file system may need fsck",
        )
    }
}

fn read_trim<S: Sys>(sys: &mut S, path: &str) -> Option<String> {
    sys.read_file(path)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
}

/// Names in `/sys/class/block`, sorted.
fn block_devices<S: Sys>(sys: &mut S) -> Vec<String> {
    let mut names: Vec<String> = sys
        .read_dir("/sys/class/block")
        .map(|v| v.into_iter().map(|(n, _)| n).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Logical block sizes a disk may report (`queue/logical_block_size`).
const SECTOR_SIZES: [u64; 8] = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];

/// The partition's PARTUUID, read from its disk's GPT. `Ok(None)`: not a
/// partition, no GPT, an unused entry; `Err`: the disk says something
/// impossible (a note for the console, naming the disk).
fn partuuid_of<S: Sys>(sys: &mut S, name: &str) -> Result<Option<String>, String> {
    let Some(n) = read_trim(sys, &format!("/sys/class/block/{name}/partition"))
        .and_then(|t| t.parse::<u64>().ok())
    else {
        return Ok(None);
    };
    let Ok(link) = sys.read_link(&format!("/sys/class/block/{name}")) else {
        return Ok(None);
    };
    let mut parts = link.trim_end_matches('/').rsplit('/');
    parts.next();
    let Some(disk) = parts.next().map(str::to_string) else {
        return Ok(None);
    };
    let ss = match read_trim(
        sys,
        &format!("/sys/class/block/{disk}/queue/logical_block_size"),
    ) {
        None => 512,
        Some(t) => match t.parse::<u64>() {
            Ok(v) if SECTOR_SIZES.contains(&v) => v,
            _ => {
                return Err(format!(
                    "{disk}: logical block size {t:?} is not a power of two from 512 to 65536; its GPT is not read"
                ))
            }
        },
    };
    let dev = format!("/dev/{}", disk.replace('!', "/"));
    let Some(h) = sys
        .read_at(&dev, ss, ss as usize)
        .ok()
        .and_then(|b| probe::gpt_header(&b))
    else {
        return Ok(None);
    };
    if n == 0 || n > u64::from(h.entries) {
        return Ok(None);
    }
    let Some(off) = h.entry_offset(n, ss) else {
        return Err(format!(
            "{disk}: the GPT header puts partition entry {n} past any disk (entries at LBA {}, {} bytes each); the GPT is damaged",
            h.entries_lba, h.entry_size
        ));
    };
    Ok(sys
        .read_at(&dev, off, 128)
        .ok()
        .and_then(|e| probe::gpt_entry_partuuid(&e)))
}

/// Look once for the root device: its `/dev` path and what its superblock
/// says. Disks that say something impossible are skipped with a note.
fn find_root<S: Sys>(
    sys: &mut S,
    spec: &RootSpec,
    notes: &mut Vec<String>,
) -> Option<(String, Option<FsInfo>)> {
    let probe_dev = |sys: &mut S, dev: &str| {
        sys.read_at(dev, 0, probe::PROBE_LEN)
            .ok()
            .and_then(|b| probe::probe_fs(&b))
    };
    if let RootSpec::Path(p) = spec {
        sys.stat(p).ok()?;
        let fs = probe_dev(sys, p);
        return Some((p.clone(), fs));
    }
    for name in block_devices(sys) {
        let dev = format!("/dev/{}", name.replace('!', "/"));
        if sys.stat(&dev).is_err() {
            continue;
        }
        let hit = match spec {
            RootSpec::PartUuid(u) => match partuuid_of(sys, &name) {
                Ok(p) => p.is_some_and(|p| p.eq_ignore_ascii_case(u)),
                Err(note) => {
                    if !notes.contains(&note) {
                        notes.push(note);
                    }
                    false
                }
            },
            RootSpec::Uuid(u) => {
                probe_dev(sys, &dev).is_some_and(|f| f.uuid.eq_ignore_ascii_case(u))
            }
            RootSpec::Label(l) => probe_dev(sys, &dev).is_some_and(|f| &f.label == l),
            RootSpec::Path(_) => false,
        };
        if hit {
            let fs = probe_dev(sys, &dev);
            return Some((dev, fs));
        }
    }
    None
}
