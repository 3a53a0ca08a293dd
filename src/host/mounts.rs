//! The mount table (`/proc/self/mountinfo`) and the ESP probe: a FAT file
//! system mounted at `/efi`, `/boot` or `/boot/efi` below `--root`.

use crate::state::State;
use std::path::{Path, PathBuf};

/// A line of /proc/self/mountinfo: mount point and file system type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub point: PathBuf,
    pub fstype: String,
}

/// The mounts of this process (empty when /proc is not there).
pub fn mounts() -> Vec<Mount> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_mountinfo(&text)
}

pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let point = unescape(fields.get(4)?);
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(sep + 1)?.to_string();
            Some(Mount {
                point: PathBuf::from(point),
                fstype,
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(u8::is_ascii_digit));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount holding `path` (the longest mount point that is a prefix).
pub fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.point))
        .max_by_key(|m| m.point.as_os_str().len())
}

pub fn is_fat(fstype: &str) -> bool {
    matches!(fstype, "vfat" | "msdos" | "fat")
}

/// Where systemd's tools look for an ESP, in their order.
pub const ESP_MOUNT_POINTS: [&str; 3] = ["/efi", "/boot", "/boot/efi"];

/// A FAT file system mounted at `/efi`, `/boot` or `/boot/efi` below
/// `--root`, each candidate resolved inside it (so `<root>/boot/efi ->
/// /boot/efi` is `<root>/boot/efi`, not the host's ESP).
pub fn probe_esp(state: &State, mounts: &[Mount]) -> Option<PathBuf> {
    ESP_MOUNT_POINTS.iter().find_map(|p| {
        let dir = state.in_root(Path::new(p)).ok()?;
        mounts
            .iter()
            .any(|m| m.point == dir && is_fat(&m.fstype))
            .then_some(dir)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_names_mount_point_and_type() {
        let text = "36 35 98:0 / /boot/efi rw,noatime master:1 - vfat /dev/sda1 rw\n\
                    37 35 98:0 / /mnt/with\\040space rw - ext4 /dev/sda2 rw\n\
                    1 0 8:1 / / rw - ext4 /dev/vda rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m[0].point, Path::new("/boot/efi"));
        assert_eq!(m[0].fstype, "vfat");
        assert_eq!(m[1].point, Path::new("/mnt/with space"));
        let of = mount_of(&m, Path::new("/boot/efi/EFI")).unwrap();
        assert_eq!(of.fstype, "vfat");
        assert_eq!(
            mount_of(&m, Path::new("/boot")).unwrap().point,
            Path::new("/")
        );
        // A backslash without three digits after it stays as it is.
        assert_eq!(unescape("a\\04"), "a\\04");
    }

    fn vfat(point: &Path) -> Mount {
        Mount {
            point: point.to_path_buf(),
            fstype: "vfat".into(),
        }
    }

    #[test]
    fn the_esp_probe_never_follows_a_link_out_of_the_root() {
        let t = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(t.path()).unwrap();
        let host_esp = base.join("host-esp");
        let root = base.join("root");
        std::fs::create_dir_all(&host_esp).unwrap();
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::os::unix::fs::symlink(&host_esp, root.join("boot/efi")).unwrap();
        let state = State::open(&root).unwrap();
        // The host's ESP is a FAT mount, but the tree's link to it is not
        // the tree's ESP.
        assert_eq!(probe_esp(&state, &[vfat(&host_esp)]), None);
        // A link that stays inside the tree is followed.
        std::fs::remove_file(root.join("boot/efi")).unwrap();
        std::fs::create_dir_all(root.join("efi")).unwrap();
        std::os::unix::fs::symlink("/efi", root.join("boot/efi")).unwrap();
        let inside = root.join("efi");
        assert_eq!(probe_esp(&state, &[vfat(&inside)]), Some(inside.clone()));
        // Not FAT: not an ESP.
        let ext4 = Mount {
            point: inside,
            fstype: "ext4".into(),
        };
        assert_eq!(probe_esp(&state, &[ext4]), None);
    }
}
