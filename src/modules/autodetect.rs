//! `[initrd] autodetect`: the modules this machine's root device needs, the
//! way mkinitcpio's autodetect and booster's host mode find them. The
//! device behind `/` comes from `/proc/self/mountinfo` (its `major:minor`,
//! or for a file system with an anonymous device such as btrfs, the
//! `/dev` node it was mounted from); `/sys/dev/block/<major:minor>` leads
//! into `/sys/devices`, and every level up from there (the partition, the
//! disk, the controller, the bus) may have a driver and a `modalias`. A
//! device-mapper or md device is followed through its `slaves/`.
//!
//! What is read ([`Facts`]) is this machine's, seen by the kernel running
//! now; what it means ([`resolve`]) is looked up in the module tree being
//! built: each `modalias` is matched against that tree's aliases, so a
//! driver the running kernel has built in (no module) is still found when
//! the target kernel has it as a module. A device whose driver matches
//! nothing in the target tree is reported, not guessed.

use super::closure::Resolved;
use super::ModuleIndex;
use std::path::{Path, PathBuf};

/// One level of the root device's chain in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    /// Below `/sys/devices`, e.g. `pci0000:00/0000:00:02.0/virtio1`.
    pub path: String,
    /// The bound driver's name (`driver` link), if any.
    pub driver: Option<String>,
    /// The driver's module (`driver/module` link): none when built in.
    pub module: Option<String>,
    pub modalias: Option<String>,
}

/// What this machine says about its root device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The mount source of `/`, e.g. `/dev/vda2`.
    pub source: String,
    pub fstype: String,
    /// Every level with a driver or a modalias, from the block device up.
    pub levels: Vec<Level>,
}

impl Facts {
    /// A stable text of the facts (the input cache keys on it).
    pub fn fingerprint(&self) -> String {
        let mut s = format!("autodetect {} {}\n", self.source, self.fstype);
        for l in &self.levels {
            s.push_str(&format!(
                "autodetect {} {:?} {:?} {:?}\n",
                l.path, l.driver, l.module, l.modalias
            ));
        }
        s
    }
}

/// Links and slaves followed at most (a loop in sysfs is a bug, not a reason to hang).
const MAX_DEPTH: usize = 16;

fn link_name(p: &Path) -> Option<String> {
    std::fs::read_link(p)
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// `major:minor` of a device number (glibc's `major()` and `minor()`).
fn split_dev(rdev: u64) -> (u64, u64) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major, minor)
}

/// The root device's facts: `sysfs` is normally `/sys`, `mountinfo` the
/// text of `/proc/self/mountinfo`, `root_dev` the device number `stat("/")`
/// gives (in a chroot, that of the file system holding the chroot, which
/// mountinfo may not list; its type is then unknown and said so).
pub fn detect(sysfs: &Path, mountinfo: &str, root_dev: u64) -> Result<Facts, String> {
    let (major, minor) = split_dev(root_dev);
    let mut devnum = format!("{major}:{minor}");
    // The mount of that device, preferring the one on / (the last wins).
    let lines: Vec<Vec<&str>> = mountinfo
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .filter(|f| f.get(2) == Some(&devnum.as_str()))
        .collect();
    let line = lines
        .iter()
        .rev()
        .find(|f| f.get(4) == Some(&"/"))
        .or(lines.last());
    let (fstype, source) = line
        .and_then(|f| {
            let dash = f.iter().position(|x| *x == "-")?;
            Some((f.get(dash + 1)?.to_string(), f.get(dash + 2)?.to_string()))
        })
        .unwrap_or_default();
    if major == 0 {
        // An anonymous device (btrfs, overlay): the node it came from.
        use std::os::unix::fs::MetadataExt;
        if source.is_empty() {
            return Err(format!(
                "/ is on device {devnum}, which has no block device of its own, and /proc/self/mountinfo does not say where it comes from"
            ));
        }
        let rdev = std::fs::metadata(&source)
            .map_err(|e| {
                format!("/ ({fstype}) has no block device of its own and its source {source} cannot be read: {e}")
            })?
            .rdev();
        let (ma, mi) = split_dev(rdev);
        devnum = format!("{ma}:{mi}");
    }
    let dev = sysfs.join("dev/block").join(&devnum);
    let start = std::fs::canonicalize(&dev).map_err(|e| {
        format!(
            "/ is on block device {devnum}, which {} does not show: {e}",
            dev.display()
        )
    })?;
    let devices = sysfs.join("devices");
    let devices = std::fs::canonicalize(&devices).unwrap_or(devices);
    let mut levels = Vec::new();
    walk(sysfs, &devices, &start, 0, &mut levels);
    Ok(Facts {
        source: if source.is_empty() {
            format!("device {devnum}")
        } else {
            source
        },
        fstype,
        levels,
    })
}

/// `dev` and its parents up to `/sys/devices`, then the same for each of
/// its `slaves/` (dm, md).
fn walk(sysfs: &Path, devices: &Path, dev: &Path, depth: usize, out: &mut Vec<Level>) {
    if depth > MAX_DEPTH {
        return;
    }
    let mut at = dev.to_path_buf();
    while at.starts_with(devices) && at != devices {
        let rel = at
            .strip_prefix(devices)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let driver = link_name(&at.join("driver"));
        let module = link_name(&at.join("driver/module"));
        let modalias = std::fs::read_to_string(at.join("modalias"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        if (driver.is_some() || modalias.is_some()) && !out.iter().any(|l| l.path == rel) {
            out.push(Level {
                path: rel,
                driver,
                module,
                modalias,
            });
        }
        if !at.pop() {
            break;
        }
    }
    if let Ok(rd) = std::fs::read_dir(dev.join("slaves")) {
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            if let Ok(p) = std::fs::canonicalize(sysfs.join("class/block").join(&n)) {
                walk(sysfs, devices, &p, depth + 1, out);
            }
        }
    }
}

/// What the facts mean for one kernel's module tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detected {
    /// Modules to add to the initrd, in chain order (block device first).
    pub modules: Vec<String>,
    /// Why each was added: `module (device or reason)`.
    pub why: Vec<String>,
    /// Levels with a driver that nothing in the tree matches.
    pub unmatched: Vec<String>,
}

/// Look the facts up in `index`: each level's driver module by name, its
/// modalias by the tree's aliases; then the root's file system type.
pub fn resolve(facts: &Facts, index: &ModuleIndex) -> Detected {
    let mut d = Detected::default();
    let add = |d: &mut Detected, names: Vec<String>, why: &str| {
        for n in names {
            if !d.modules.contains(&n) {
                d.why.push(format!("{n} ({why})"));
                d.modules.push(n);
            }
        }
    };
    for l in &facts.levels {
        let mut found = false;
        for key in [&l.module, &l.modalias].into_iter().flatten() {
            match index.resolve(key) {
                Resolved::Modules(names) => {
                    add(&mut d, names, &l.path);
                    found = true;
                }
                Resolved::Builtin => found = true,
                Resolved::Unknown => {}
            }
        }
        if !found {
            if let Some(drv) = &l.driver {
                d.unmatched.push(format!(
                    "{} (driver {drv}{})",
                    l.path,
                    l.modalias
                        .as_ref()
                        .map(|m| format!(", modalias {m}"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    if facts.fstype.is_empty() {
        d.unmatched.push(
            "the root's file system, whose type /proc/self/mountinfo does not show (a chroot?)"
                .into(),
        );
        return d;
    }
    match index.resolve(&facts.fstype) {
        Resolved::Modules(names) => add(&mut d, names, "the root's file system"),
        Resolved::Builtin => {}
        Resolved::Unknown => d.unmatched.push(format!(
            "the root's file system {} (no module of that name)",
            facts.fstype
        )),
    }
    d
}

/// [`detect`] on this machine: `/sys`, `/proc/self/mountinfo`, `stat("/")`.
pub fn this_machine() -> Result<Facts, String> {
    use std::os::unix::fs::MetadataExt;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo (is /proc mounted?): {e}"))?;
    let dev = std::fs::metadata("/")
        .map_err(|e| format!("cannot stat /: {e}"))?
        .dev();
    detect(&PathBuf::from("/sys"), &mountinfo, dev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::modinfo::ModInfo;
    use crate::modules::ModuleInfo;
    use std::os::unix::fs::symlink;

    /// A sysfs like a virtio disk's: vda2 on vda on virtio1 on a PCI
    /// function; virtio_blk built in (no module link), virtio-pci a module.
    fn sysfs() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let s = t.path().join("sys");
        let pci = s.join("devices/pci0000:00/0000:00:02.0");
        let vda = pci.join("virtio1/block/vda");
        std::fs::create_dir_all(vda.join("vda2")).unwrap();
        std::fs::create_dir_all(s.join("bus/virtio/drivers/virtio_blk")).unwrap();
        std::fs::create_dir_all(s.join("bus/pci/drivers/virtio-pci")).unwrap();
        std::fs::create_dir_all(s.join("module/virtio_pci")).unwrap();
        symlink(
            "../../../../module/virtio_pci",
            s.join("bus/pci/drivers/virtio-pci/module"),
        )
        .unwrap();
        symlink("../../../bus/pci/drivers/virtio-pci", pci.join("driver")).unwrap();
        std::fs::write(
            pci.join("modalias"),
            "pci:v00001AF4d00001042sv00001AF4sd00001042bc01sc80i00\n",
        )
        .unwrap();
        symlink(
            "../../../../bus/virtio/drivers/virtio_blk",
            pci.join("virtio1/driver"),
        )
        .unwrap();
        std::fs::write(pci.join("virtio1/modalias"), "virtio:d00000002v00001AF4\n").unwrap();
        std::fs::create_dir_all(s.join("dev/block")).unwrap();
        symlink(
            "../../devices/pci0000:00/0000:00:02.0/virtio1/block/vda/vda2",
            s.join("dev/block/254:2"),
        )
        .unwrap();
        (t, s)
    }

    /// 254:2 as `st_dev`.
    const VDA2: u64 = (254 << 8) | 2;

    const MOUNTINFO: &str = "22 1 0:21 / /proc rw - proc proc rw\n\
        27 1 254:2 / / rw,relatime - ext4 /dev/vda2 rw\n";

    fn module(name: &str, aliases: &[&str]) -> (String, ModuleInfo) {
        (
            name.to_string(),
            ModuleInfo {
                name: name.to_string(),
                path: format!("kernel/{name}.ko"),
                order: 0,
                info: ModInfo {
                    aliases: aliases.iter().map(|a| a.to_string()).collect(),
                    ..ModInfo::default()
                },
            },
        )
    }

    #[test]
    fn the_chain_from_the_partition_up_has_each_driver_and_modalias() {
        let (_t, s) = sysfs();
        let f = detect(&s, MOUNTINFO, VDA2).unwrap();
        assert_eq!(
            (f.source.as_str(), f.fstype.as_str()),
            ("/dev/vda2", "ext4")
        );
        assert_eq!(
            f.levels,
            [
                Level {
                    path: "pci0000:00/0000:00:02.0/virtio1".into(),
                    driver: Some("virtio_blk".into()),
                    module: None,
                    modalias: Some("virtio:d00000002v00001AF4".into()),
                },
                Level {
                    path: "pci0000:00/0000:00:02.0".into(),
                    driver: Some("virtio-pci".into()),
                    module: Some("virtio_pci".into()),
                    modalias: Some("pci:v00001AF4d00001042sv00001AF4sd00001042bc01sc80i00".into()),
                },
            ]
        );
        let e = detect(&s, "27 1 254:9 / / rw - ext4 /dev/vdz rw\n", (254 << 8) | 9).unwrap_err();
        assert!(e.contains("254:9") && e.contains("does not show"), "{e}");
        // A chroot: mountinfo does not list the file system holding /.
        let f = detect(&s, "22 1 0:21 / /proc rw - proc proc rw\n", VDA2).unwrap();
        assert_eq!((f.source.as_str(), f.fstype.as_str()), ("device 254:2", ""));
        assert_eq!(f.levels.len(), 2);
    }

    #[test]
    fn aliases_of_the_target_tree_find_drivers_the_running_kernel_has_built_in() {
        let (_t, s) = sysfs();
        let f = detect(&s, MOUNTINFO, VDA2).unwrap();
        let index = ModuleIndex {
            dir: PathBuf::from("/lib/modules/6.1.0-50-amd64"),
            release: "6.1.0-50-amd64".into(),
            modules: [
                module("virtio_blk", &["virtio:d00000002v*"]),
                module("virtio_pci", &["pci:v00001AF4d*sv*sd*bc*sc*i*"]),
                module("ext4", &["fs-ext4"]),
            ]
            .into_iter()
            .collect(),
            builtin: Default::default(),
            builtin_paths: Vec::new(),
            builtin_aliases: Vec::new(),
        };
        let d = resolve(&f, &index);
        assert_eq!(d.modules, ["virtio_blk", "virtio_pci", "ext4"]);
        assert!(d.unmatched.is_empty(), "{:?}", d.unmatched);
        assert_eq!(d.why[0], "virtio_blk (pci0000:00/0000:00:02.0/virtio1)");
        // A tree without the disk's driver: said, not guessed.
        let mut index = index;
        index.modules.remove("virtio_blk");
        let d = resolve(&f, &index);
        assert_eq!(d.modules, ["virtio_pci", "ext4"]);
        assert_eq!(
            d.unmatched,
            ["pci0000:00/0000:00:02.0/virtio1 (driver virtio_blk, modalias virtio:d00000002v00001AF4)"]
        );
    }
}
