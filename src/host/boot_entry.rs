//! The firmware's boot manager entries (UEFI `Boot####` and `BootOrder`),
//! for `genboot install --install-loader` on a machine whose firmware starts
//! another loader first (GRUB): register systemd-boot as `bootctl install`
//! does — an entry "Linux Boot Manager" whose device path is the ESP's
//! partition (GPT, by its PARTUUID) and `\EFI\systemd\systemd-bootx64.efi`,
//! in the entry that already names that partition and file or the first
//! free `Boot####`, and put first in `BootOrder`.
//!
//! The encoding is the UEFI specification's `EFI_LOAD_OPTION`: attributes
//! (u32, `LOAD_OPTION_ACTIVE`), the device path list's length (u16), the
//! description (UTF-16, NUL), then the device path: a hard drive node
//! (partition number, start and size in 512-byte sectors, the GPT
//! partition GUID), a file path node (UTF-16, NUL, backslashes), the end
//! node. Existing entries are read as untrusted bytes (every length
//! checked).

use super::efivars;
use crate::fsutil::IoError;
use std::collections::BTreeMap;
use std::path::Path;
use uuid::Uuid;

/// The UEFI global variable GUID (`Boot####`, `BootOrder`, `BootCurrent`).
pub const GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// The description `bootctl install` gives systemd-boot's entry.
pub const DESCRIPTION: &str = "Linux Boot Manager";
/// Non-volatile, boot-service and runtime access.
const ATTRIBUTES: [u8; 4] = [0x07, 0, 0, 0];
const LOAD_OPTION_ACTIVE: u32 = 1;

/// The ESP's partition, as a hard drive device path node names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// GPT entry number (1-based).
    pub number: u32,
    /// First sector and size, in 512-byte sectors.
    pub start: u64,
    pub size: u64,
    /// The partition's unique GUID (its PARTUUID).
    pub uuid: Uuid,
}

/// An `EFI_LOAD_OPTION` for `loader` (an ESP path, `/` or `\` separated)
/// on `part`.
pub fn load_option(description: &str, part: &Partition, loader: &str) -> Vec<u8> {
    let utf16 = |s: &str| -> Vec<u8> {
        s.encode_utf16()
            .chain([0])
            .flat_map(|u| u.to_le_bytes())
            .collect()
    };
    let mut hd = vec![0x04, 0x01, 42, 0];
    hd.extend_from_slice(&part.number.to_le_bytes());
    hd.extend_from_slice(&part.start.to_le_bytes());
    hd.extend_from_slice(&part.size.to_le_bytes());
    hd.extend_from_slice(&part.uuid.to_bytes_le());
    hd.extend_from_slice(&[0x02, 0x02]); // GPT, GUID signature
    let path = utf16(&efi_path(loader));
    let mut file = vec![0x04, 0x04];
    file.extend_from_slice(&((4 + path.len()) as u16).to_le_bytes());
    file.extend_from_slice(&path);
    let end = [0x7f, 0xff, 4, 0];
    let list_len = hd.len() + file.len() + end.len();
    let mut out = LOAD_OPTION_ACTIVE.to_le_bytes().to_vec();
    out.extend_from_slice(&(list_len as u16).to_le_bytes());
    out.extend_from_slice(&utf16(description));
    out.extend_from_slice(&hd);
    out.extend_from_slice(&file);
    out.extend_from_slice(&end);
    out
}

/// `\EFI\systemd\systemd-bootx64.efi` for `EFI/systemd/systemd-bootx64.efi`.
fn efi_path(p: &str) -> String {
    format!("\\{}", p.trim_start_matches(['/', '\\']).replace('/', "\\"))
}

/// What an existing load option names: its description, the GPT partition
/// GUID of its hard drive node and its file path (both if present).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    pub description: String,
    pub partition: Option<Uuid>,
    pub path: Option<String>,
}

/// Read a load option's bytes (no attribute prefix); `None` when they are
/// not one. Never reads past the end.
pub fn parse_load_option(data: &[u8]) -> Option<Parsed> {
    let list_len = u16::from_le_bytes([*data.get(4)?, *data.get(5)?]) as usize;
    let mut at = 6;
    let mut units = Vec::new();
    loop {
        let u = u16::from_le_bytes([*data.get(at)?, *data.get(at + 1)?]);
        at += 2;
        if u == 0 {
            break;
        }
        units.push(u);
    }
    let description = String::from_utf16_lossy(&units);
    let list = data.get(at..at.checked_add(list_len)?)?;
    let mut out = Parsed {
        description,
        ..Parsed::default()
    };
    let mut i = 0;
    while i + 4 <= list.len() {
        let (kind, sub) = (list[i], list[i + 1]);
        let len = u16::from_le_bytes([list[i + 2], list[i + 3]]) as usize;
        if len < 4 || i + len > list.len() {
            return None;
        }
        let node = &list[i + 4..i + len];
        match (kind, sub) {
            (0x7f, 0xff) => break,
            (0x04, 0x01) if node.len() >= 38 && node[36] == 0x02 && node[37] == 0x02 => {
                let guid: [u8; 16] = node[20..36].try_into().ok()?;
                out.partition = Some(Uuid::from_bytes_le(guid));
            }
            (0x04, 0x04) => {
                let units: Vec<u16> = node
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .take_while(|u| *u != 0)
                    .collect();
                out.path = Some(String::from_utf16_lossy(&units));
            }
            _ => {}
        }
        i += len;
    }
    Some(out)
}

/// Which `Boot####` to use: the one that names `part` and `loader` already
/// (`true`), else the first free number (`false`), as `bootctl` chooses.
pub fn choose_slot(
    existing: &BTreeMap<u16, Vec<u8>>,
    part: &Partition,
    loader: &str,
) -> (u16, bool) {
    let want = efi_path(loader).to_ascii_lowercase();
    for (n, data) in existing {
        if let Some(p) = parse_load_option(data) {
            let same_file = p
                .path
                .as_deref()
                .is_some_and(|f| efi_path(f).to_ascii_lowercase() == want);
            if p.partition == Some(part.uuid) && same_file {
                return (*n, true);
            }
        }
    }
    let free = (0..=u16::MAX)
        .find(|n| !existing.contains_key(n))
        .unwrap_or(u16::MAX);
    (free, false)
}

/// `order` with `slot` first (moved there, or added).
pub fn first_in_order(order: &[u16], slot: u16) -> Vec<u16> {
    std::iter::once(slot)
        .chain(order.iter().copied().filter(|n| *n != slot))
        .collect()
}

/// What [`register`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// `Boot####` number.
    pub slot: u16,
    /// The entry was written (new, or its bytes differed).
    pub written: bool,
    pub order_before: Vec<u16>,
    pub order_after: Vec<u16>,
}

fn global(dir: &Path, name: &str) -> std::path::PathBuf {
    dir.join(format!("{name}-{GLOBAL_GUID}"))
}

/// Read a global variable's value (after its attributes).
fn read_global(dir: &Path, name: &str) -> Option<Vec<u8>> {
    std::fs::read(global(dir, name))
        .ok()
        .and_then(|d| d.get(4..).map(<[u8]>::to_vec))
}

/// The `Boot####` variables in efivarfs `dir`.
fn boot_options(dir: &Path) -> Result<BTreeMap<u16, Vec<u8>>, IoError> {
    let mut out = BTreeMap::new();
    let suffix = format!("-{GLOBAL_GUID}");
    for e in std::fs::read_dir(dir).map_err(IoError::at("read", dir))? {
        let Ok(e) = e else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(hex) = name
            .strip_prefix("Boot")
            .and_then(|r| r.strip_suffix(&suffix))
        else {
            continue;
        };
        if hex.len() != 4
            || !hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
        {
            continue;
        }
        let Ok(n) = u16::from_str_radix(hex, 16) else {
            continue;
        };
        if let Some(data) = read_global(dir, &format!("Boot{hex}")) {
            out.insert(n, data);
        }
    }
    Ok(out)
}

/// `BootOrder`, as u16 numbers.
pub fn boot_order(dir: &Path) -> Vec<u16> {
    read_global(dir, "BootOrder")
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// `BootCurrent`: the entry the firmware started this boot from.
pub fn boot_current(dir: &Path) -> Option<u16> {
    let d = read_global(dir, "BootCurrent")?;
    Some(u16::from_le_bytes([*d.first()?, *d.get(1)?]))
}

/// Register `loader` on `part` in efivarfs `dir` and put it first in
/// `BootOrder` (see the module documentation). Writes only what differs.
pub fn register(dir: &Path, part: &Partition, loader: &str) -> Result<Registered, IoError> {
    let existing = boot_options(dir)?;
    let (slot, _) = choose_slot(&existing, part, loader);
    let option = load_option(DESCRIPTION, part, loader);
    let written = existing.get(&slot) != Some(&option);
    if written {
        let mut data = ATTRIBUTES.to_vec();
        data.extend_from_slice(&option);
        efivars::write_raw(&global(dir, &format!("Boot{slot:04X}")), &data)?;
    }
    let order_before = boot_order(dir);
    let order_after = first_in_order(&order_before, slot);
    if order_after != order_before {
        let mut data = ATTRIBUTES.to_vec();
        for n in &order_after {
            data.extend_from_slice(&n.to_le_bytes());
        }
        efivars::write_raw(&global(dir, "BootOrder"), &data)?;
    }
    Ok(Registered {
        slot,
        written,
        order_before,
        order_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esp() -> Partition {
        Partition {
            number: 1,
            start: 2048,
            size: 524288,
            uuid: Uuid::parse_str("65737000-0000-4000-8000-000000000001").unwrap(),
        }
    }

    const LOADER: &str = "EFI/systemd/systemd-bootx64.efi";

    /// The bytes `bootctl install` (systemd 252's `efi_add_boot_option`)
    /// writes for this partition, spelled out.
    #[test]
    fn the_load_option_is_the_one_bootctl_writes() {
        let got = load_option(DESCRIPTION, &esp(), LOADER);
        let mut want: Vec<u8> = vec![1, 0, 0, 0];
        let path: Vec<u8> = "\\EFI\\systemd\\systemd-bootx64.efi"
            .encode_utf16()
            .chain([0])
            .flat_map(|u| u.to_le_bytes())
            .collect();
        want.extend_from_slice(&((42 + 4 + path.len() + 4) as u16).to_le_bytes());
        want.extend(
            DESCRIPTION
                .encode_utf16()
                .chain([0])
                .flat_map(|u| u.to_le_bytes()),
        );
        want.extend_from_slice(&[4, 1, 42, 0, 1, 0, 0, 0]);
        want.extend_from_slice(&2048u64.to_le_bytes());
        want.extend_from_slice(&524288u64.to_le_bytes());
        // The GUID in the firmware's mixed-endian order.
        want.extend_from_slice(&[
            0x00, 0x70, 0x73, 0x65, 0x00, 0x00, 0x00, 0x40, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x01,
        ]);
        want.extend_from_slice(&[2, 2, 4, 4]);
        want.extend_from_slice(&((4 + path.len()) as u16).to_le_bytes());
        want.extend_from_slice(&path);
        want.extend_from_slice(&[0x7f, 0xff, 4, 0]);
        assert_eq!(got, want);
        let p = parse_load_option(&got).unwrap();
        assert_eq!(p.description, DESCRIPTION);
        assert_eq!(p.partition, Some(esp().uuid));
        assert_eq!(
            p.path.as_deref(),
            Some("\\EFI\\systemd\\systemd-bootx64.efi")
        );
    }

    #[test]
    fn a_broken_load_option_is_not_read_past_its_end() {
        let good = load_option(DESCRIPTION, &esp(), LOADER);
        for cut in 0..good.len() {
            // Any prefix: parsed or refused, never a panic.
            let _ = parse_load_option(&good[..cut]);
        }
        let mut bad = good.clone();
        bad[4] = 0xff; // a device path list longer than the data
        assert_eq!(parse_load_option(&bad), None);
        // A node claiming a length of 2.
        let mut bad = good.clone();
        let node = 6 + (DESCRIPTION.len() + 1) * 2;
        bad[node + 2] = 2;
        assert_eq!(parse_load_option(&bad), None);
    }

    #[test]
    fn the_slot_is_the_existing_entry_or_the_first_free_one() {
        let grub = load_option("debian", &esp(), "EFI/debian/shimx64.efi");
        let mut existing = BTreeMap::from([(0u16, grub.clone()), (2, grub.clone())]);
        assert_eq!(choose_slot(&existing, &esp(), LOADER), (1, false));
        // Ours is there (in any case of the path): reused.
        existing.insert(
            5,
            load_option(DESCRIPTION, &esp(), "/efi/SYSTEMD/systemd-bootx64.EFI"),
        );
        assert_eq!(choose_slot(&existing, &esp(), LOADER), (5, true));
        // The same file on another partition is not ours.
        let other = Partition {
            uuid: Uuid::nil(),
            ..esp()
        };
        assert_eq!(choose_slot(&existing, &other, LOADER), (1, false));
    }

    #[test]
    fn the_entry_goes_first_in_the_boot_order() {
        assert_eq!(first_in_order(&[0, 1, 2], 3), [3, 0, 1, 2]);
        assert_eq!(first_in_order(&[0, 3, 2], 3), [3, 0, 2]);
        assert_eq!(first_in_order(&[], 1), [1]);
    }

    #[test]
    fn register_writes_the_entry_and_the_order_once() {
        let t = tempfile::tempdir().unwrap();
        let grub = load_option("debian", &esp(), "EFI/debian/grubx64.efi");
        let mut v = ATTRIBUTES.to_vec();
        v.extend_from_slice(&grub);
        std::fs::write(global(t.path(), "Boot0000"), v).unwrap();
        std::fs::write(global(t.path(), "BootOrder"), [7, 0, 0, 0, 0, 0]).unwrap();
        let r = register(t.path(), &esp(), LOADER).unwrap();
        assert_eq!(
            r,
            Registered {
                slot: 1,
                written: true,
                order_before: vec![0],
                order_after: vec![1, 0],
            }
        );
        assert_eq!(boot_order(t.path()), [1, 0]);
        let data = std::fs::read(global(t.path(), "Boot0001")).unwrap();
        assert_eq!(data[..4], ATTRIBUTES);
        assert_eq!(data[4..], load_option(DESCRIPTION, &esp(), LOADER)[..]);
        // Again: nothing to write.
        let r = register(t.path(), &esp(), LOADER).unwrap();
        assert!(!r.written && r.order_before == r.order_after, "{r:?}");
    }
}
