//! The mount table (`/proc/self/mountinfo`): mount points, file system
//! types, devices and sources (the ESP probe in [`super::esp`] reads it).

use std::path::{Path, PathBuf};

/// A line of /proc/self/mountinfo: mount point, file system type, the
/// device (`major:minor`) and the mount source (`/dev/vda1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mount {
    pub point: PathBuf,
    pub fstype: String,
    pub dev: (u32, u32),
    pub source: String,
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
            let (major, minor) = fields.get(2)?.split_once(':')?;
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(sep + 1)?.to_string();
            let source = fields.get(sep + 2).map(|s| unescape(s)).unwrap_or_default();
            Some(Mount {
                point: PathBuf::from(point),
                fstype,
                dev: (major.parse().ok()?, minor.parse().ok()?),
                source,
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
        assert_eq!(m[0].dev, (98, 0));
        assert_eq!(m[0].source, "/dev/sda1");
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
}
