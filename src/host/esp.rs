//! Where the running machine's ESP is, found the way `bootctl` finds it:
//! the `LoaderDevicePartUUID` EFI variable (systemd-boot sets it to the
//! partition it was started from) names the partition, udev's
//! `/dev/disk/by-partuuid/<uuid>` link its device, and the mount table
//! where it is mounted (`/efi`, `/boot`, `/boot/efi` first, then anywhere
//! below `--root`). Without the variable (another boot loader, no EFI),
//! a FAT file system mounted at `/efi`, `/boot` or `/boot/efi` is taken, as
//! before. An automount point at one of those (systemd's gpt-auto
//! generator makes one at `/efi`) is looked into first, which mounts it.
//!
//! Everything is read below `--root`, each path resolved inside it: a link
//! in the tree never leads to the host's ESP.

use super::efivars;
use super::mounts::{is_fat, Mount, ESP_MOUNT_POINTS};
use crate::state::State;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EspProbe {
    /// A FAT file system mounted at `dir` (a path on this machine, below
    /// `--root`); `booted`: it is the partition the firmware booted from.
    Mounted { dir: PathBuf, booted: bool },
    /// The firmware booted from this partition, but it is not mounted
    /// below `--root`. `device` as the system names it (`/dev/vda1`),
    /// when udev made its link.
    NotMounted {
        partuuid: String,
        device: Option<PathBuf>,
    },
    /// No `LoaderDevicePartUUID`, and no FAT file system at the usual
    /// places.
    NotFound,
}

/// Find the ESP (see the module documentation). `read_mounts` reads the
/// mount table (it is read again after looking into an automount point).
pub fn probe(state: &State, read_mounts: &dyn Fn() -> Vec<Mount>) -> EspProbe {
    let mut mounts = read_mounts();
    if trigger_automounts(state, &mounts) {
        mounts = read_mounts();
    }
    let partuuid = efivars::dir(state)
        .ok()
        .and_then(|d| efivars::loader_device_part_uuid(&d));
    let Some(partuuid) = partuuid else {
        return match pick(state, &mounts, &|m: &Mount| is_fat(&m.fstype), false) {
            Some(dir) => EspProbe::Mounted { dir, booted: false },
            None => EspProbe::NotFound,
        };
    };
    let link = format!("/dev/disk/by-partuuid/{partuuid}");
    let node = state.in_root(Path::new(&link)).ok().filter(|p| p.exists());
    // The device number, when it is a block device (on a real system).
    let dev = node
        .as_ref()
        .and_then(|n| std::fs::metadata(n).ok())
        .filter(|m| m.file_type().is_block_device())
        .map(|m| (libc::major(m.rdev()), libc::minor(m.rdev())));
    // Its name as the system below --root calls it (`/dev/vda1`).
    let device = node
        .as_ref()
        .and_then(|n| n.strip_prefix(&state.root).ok())
        .map(|rel| Path::new("/").join(rel));
    let of_device = |m: &Mount| {
        is_fat(&m.fstype)
            && (Some(m.dev) == dev
                || device.as_deref().is_some_and(|d| Path::new(&m.source) == d)
                || Path::new(&m.source) == Path::new(&link))
    };
    match pick(state, &mounts, &of_device, true) {
        Some(dir) => EspProbe::Mounted { dir, booted: true },
        None => EspProbe::NotMounted { partuuid, device },
    }
}

/// The mount point of a mount `wanted` accepts: at `/efi`, `/boot`,
/// `/boot/efi` below `--root` (in that order, each resolved inside it),
/// else (when `anywhere`) the first such mount below `--root`.
fn pick(
    state: &State,
    mounts: &[Mount],
    wanted: &dyn Fn(&Mount) -> bool,
    anywhere: bool,
) -> Option<PathBuf> {
    let usual = ESP_MOUNT_POINTS.iter().find_map(|p| {
        let dir = state.in_root(Path::new(p)).ok()?;
        // The last mount at a point is the one that is seen.
        let top = mounts.iter().rev().find(|m| m.point == dir)?;
        wanted(top).then_some(dir)
    });
    if usual.is_some() || !anywhere {
        return usual;
    }
    mounts
        .iter()
        .find(|m| m.point.starts_with(&state.root) && wanted(m))
        .map(|m| m.point.clone())
}

/// Look into each automount point at `/efi`, `/boot`, `/boot/efi` below
/// `--root`, which makes the kernel ask systemd to mount it; `true` when
/// there was one.
fn trigger_automounts(state: &State, mounts: &[Mount]) -> bool {
    let mut any = false;
    for p in ESP_MOUNT_POINTS {
        let Ok(dir) = state.in_root(Path::new(p)) else {
            continue;
        };
        if mounts
            .iter()
            .rev()
            .find(|m| m.point == dir)
            .is_some_and(|m| m.fstype == "autofs")
        {
            // Best effort: the mount table read afterwards says whether it
            // worked; an error here (a mount that failed) shows there.
            let _ = std::fs::read_dir(&dir).map(|mut d| d.next());
            any = true;
        }
    }
    any
}

/// The partition mounted at `dir` (a mount point below `--root`), as far
/// as sysfs and udev tell: its number, start and size in 512-byte sectors
/// (`/sys/dev/block/<major>:<minor>/{partition,start,size}`), its PARTUUID
/// from udev's `/dev/disk/by-partuuid` links when one leads to it, and the
/// whole disk's device node (to read the GPT when no link does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedPartition {
    pub number: u32,
    pub start: u64,
    pub size: u64,
    pub partuuid: Option<String>,
    /// `/dev/vda` below `--root`.
    pub disk: PathBuf,
}

/// See [`MountedPartition`]; `Err` says what is missing.
pub fn partition_at(
    state: &State,
    mounts: &[Mount],
    dir: &Path,
) -> Result<MountedPartition, String> {
    let m = mounts
        .iter()
        .rev()
        .find(|m| m.point == dir)
        .ok_or_else(|| format!("{} is not a mount point", dir.display()))?;
    let (major, minor) = m.dev;
    let sys = state
        .in_root(Path::new(&format!("/sys/dev/block/{major}:{minor}")))
        .map_err(|e| e.to_string())?;
    let read = |name: &str| -> Result<u64, String> {
        let p = sys.join(name);
        std::fs::read_to_string(&p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .trim()
            .parse()
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let number = u32::try_from(read("partition")?).map_err(|e| e.to_string())?;
    let (start, size) = (read("start")?, read("size")?);
    let disk_name = sys
        .parent()
        .and_then(Path::file_name)
        .ok_or_else(|| format!("{} has no parent disk", sys.display()))?;
    let disk = state
        .in_root(&Path::new("/dev").join(disk_name))
        .map_err(|e| e.to_string())?;
    Ok(MountedPartition {
        number,
        start,
        size,
        partuuid: partuuid_of(state, (major, minor), &m.source),
        disk,
    })
}

/// The name of the `/dev/disk/by-partuuid` link below `--root` that leads
/// to the block device `dev` (or to `source`, its name), lower-cased.
fn partuuid_of(state: &State, dev: (u32, u32), source: &str) -> Option<String> {
    let links = state.in_root(Path::new("/dev/disk/by-partuuid")).ok()?;
    std::fs::read_dir(links).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().to_ascii_lowercase();
        let target = state
            .in_root(&Path::new("/dev/disk/by-partuuid").join(e.file_name()))
            .ok()?;
        let meta = std::fs::metadata(&target).ok()?;
        let same_dev = meta.file_type().is_block_device()
            && (libc::major(meta.rdev()), libc::minor(meta.rdev())) == dev;
        let named = target
            .strip_prefix(&state.root)
            .is_ok_and(|rel| Path::new("/").join(rel) == Path::new(source));
        (same_dev || named).then_some(name)
    })
}

/// How to mount the ESP the firmware booted from, for messages.
pub fn how_to_mount(partuuid: &str, device: Option<&Path>) -> String {
    let dev = device.map_or(format!("/dev/disk/by-partuuid/{partuuid}"), |d| {
        d.display().to_string()
    });
    format!(
        "mount it: `mkdir -p /efi && mount {dev} /efi` (to keep it mounted, add `PARTUUID={partuuid} /efi vfat umask=0077 0 1` to /etc/fstab; on a disk `genboot image` made, systemd mounts it at /efi by itself), or pass --esp PATH"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A system tree with efivarfs, udev's link and a mount table.
    struct Tree {
        _t: tempfile::TempDir,
        root: PathBuf,
        state: State,
    }

    fn tree() -> Tree {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap().join("root");
        for d in [
            "efi",
            "boot/efi",
            "sys/firmware/efi/efivars",
            "dev/disk/by-partuuid",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("dev/vda1"), b"").unwrap();
        let state = State::open(&root).unwrap();
        Tree { _t: t, root, state }
    }

    const UUID: &str = "65737000-0000-4000-8000-000000000001";

    impl Tree {
        fn booted_from(&self, uuid: &str) {
            let vars = self.root.join("sys/firmware/efi/efivars");
            efivars::write_string(&vars, "LoaderDevicePartUUID", uuid).unwrap();
        }
        fn udev_link(&self, uuid: &str, target: &str) {
            std::os::unix::fs::symlink(target, self.root.join("dev/disk/by-partuuid").join(uuid))
                .unwrap();
        }
        fn mount(&self, at: &str, fstype: &str, source: &str) -> Mount {
            Mount {
                point: self.root.join(at.trim_start_matches('/')),
                fstype: fstype.into(),
                dev: (254, 1),
                source: source.into(),
            }
        }
    }

    #[test]
    fn the_partition_the_firmware_booted_from_is_found_where_it_is_mounted() {
        let t = tree();
        // systemd-boot writes the PARTUUID in upper case.
        t.booted_from(&UUID.to_ascii_uppercase());
        t.udev_link(UUID, "../../vda1");
        // Another FAT mount at /efi (a USB stick), the booted ESP at /boot/efi.
        let mounts = vec![
            t.mount("/", "ext4", "/dev/vda2"),
            t.mount("/efi", "vfat", "/dev/sdb1"),
            t.mount("/boot/efi", "vfat", "/dev/vda1"),
        ];
        assert_eq!(
            probe(&t.state, &|| mounts.clone()),
            EspProbe::Mounted {
                dir: t.root.join("boot/efi"),
                booted: true
            }
        );
        // Mounted somewhere unusual: found too.
        let mounts = vec![t.mount("/mnt/esp", "vfat", "/dev/vda1")];
        assert_eq!(
            probe(&t.state, &|| mounts.clone()),
            EspProbe::Mounted {
                dir: t.root.join("mnt/esp"),
                booted: true
            }
        );
    }

    #[test]
    fn an_esp_that_is_not_mounted_is_named_with_how_to_mount_it() {
        let t = tree();
        t.booted_from(UUID);
        t.udev_link(UUID, "../../vda1");
        // Only another FAT file system is mounted: not the ESP.
        let mounts = vec![t.mount("/efi", "vfat", "/dev/sdb1")];
        let found = probe(&t.state, &|| mounts.clone());
        assert_eq!(
            found,
            EspProbe::NotMounted {
                partuuid: UUID.into(),
                device: Some(PathBuf::from("/dev/vda1"))
            }
        );
        let how = how_to_mount(UUID, Some(Path::new("/dev/vda1")));
        assert!(how.contains("mount /dev/vda1 /efi"), "{how}");
        assert!(how.contains(&format!("PARTUUID={UUID} /efi vfat")), "{how}");
        // Without udev's link, the link's path is the device to mount.
        let t = tree();
        t.booted_from(UUID);
        assert_eq!(
            probe(&t.state, &Vec::new),
            EspProbe::NotMounted {
                partuuid: UUID.into(),
                device: None
            }
        );
        assert!(how_to_mount(UUID, None).contains(&format!("/dev/disk/by-partuuid/{UUID} /efi")));
    }

    #[test]
    fn without_the_variable_a_fat_mount_at_the_usual_places_is_taken() {
        let t = tree();
        let mounts = vec![
            t.mount("/mnt/esp", "vfat", "/dev/vda1"),
            t.mount("/boot/efi", "vfat", "/dev/vda1"),
        ];
        assert_eq!(
            probe(&t.state, &|| mounts.clone()),
            EspProbe::Mounted {
                dir: t.root.join("boot/efi"),
                booted: false
            }
        );
        // Not FAT, or somewhere else: nothing.
        let mounts = vec![
            t.mount("/efi", "ext4", "/dev/vda2"),
            t.mount("/mnt/esp", "vfat", "/dev/vda1"),
        ];
        assert_eq!(probe(&t.state, &|| mounts.clone()), EspProbe::NotFound);
    }

    #[test]
    fn an_automount_point_is_looked_into_and_the_table_read_again() {
        let t = tree();
        t.booted_from(UUID);
        t.udev_link(UUID, "../../vda1");
        let before = vec![t.mount("/efi", "autofs", "systemd-1")];
        let after = vec![
            t.mount("/efi", "autofs", "systemd-1"),
            t.mount("/efi", "vfat", "/dev/vda1"),
        ];
        let reads = std::cell::Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            if reads.get() == 1 {
                before.clone()
            } else {
                after.clone()
            }
        };
        assert_eq!(
            probe(&t.state, &read),
            EspProbe::Mounted {
                dir: t.root.join("efi"),
                booted: true
            }
        );
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn the_mounted_partition_is_read_from_sysfs_and_udev() {
        let t = tree();
        let part = t.root.join("sys/devices/pci0000:00/virtio1/block/vda/vda1");
        std::fs::create_dir_all(&part).unwrap();
        for (f, v) in [
            ("partition", "1\n"),
            ("start", "2048\n"),
            ("size", "524288\n"),
        ] {
            std::fs::write(part.join(f), v).unwrap();
        }
        std::fs::create_dir_all(t.root.join("sys/dev/block")).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/pci0000:00/virtio1/block/vda/vda1",
            t.root.join("sys/dev/block/254:1"),
        )
        .unwrap();
        let mounts = vec![t.mount("/boot/efi", "vfat", "/dev/vda1")];
        let dir = t.root.join("boot/efi");
        let want = MountedPartition {
            number: 1,
            start: 2048,
            size: 524288,
            partuuid: None,
            disk: t.root.join("dev/vda"),
        };
        assert_eq!(partition_at(&t.state, &mounts, &dir), Ok(want.clone()));
        t.udev_link(&UUID.to_ascii_uppercase(), "../../vda1");
        assert_eq!(
            partition_at(&t.state, &mounts, &dir),
            Ok(MountedPartition {
                partuuid: Some(UUID.into()),
                ..want
            })
        );
        let e = partition_at(&t.state, &mounts, &t.root.join("efi")).unwrap_err();
        assert!(e.contains("not a mount point"), "{e}");
    }

    #[test]
    fn the_probe_never_follows_a_link_out_of_the_root() {
        let t = tree();
        let base = t.root.parent().unwrap().to_path_buf();
        let host_esp = base.join("host-esp");
        std::fs::create_dir_all(&host_esp).unwrap();
        std::fs::remove_dir(t.root.join("boot/efi")).unwrap();
        std::os::unix::fs::symlink(&host_esp, t.root.join("boot/efi")).unwrap();
        let host = Mount {
            point: host_esp.clone(),
            fstype: "vfat".into(),
            dev: (8, 1),
            source: "/dev/sda1".into(),
        };
        // The host's ESP is a FAT mount, but the tree's link to it is not
        // the tree's ESP.
        assert_eq!(probe(&t.state, &|| vec![host.clone()]), EspProbe::NotFound);
        // Nor when the variable below --root names it and udev's link in
        // the tree leads out of it (an absolute link starts at the root).
        t.booted_from(UUID);
        t.udev_link(UUID, "/../../../../dev/sda1");
        let found = probe(&t.state, &|| vec![host.clone()]);
        assert!(matches!(found, EspProbe::NotMounted { .. }), "{found:?}");
    }
}
