//! `genboot verify` on the ESP: the kernel and initrd files of the
//! profile's generations that are on the ESP must hold the bytes of their
//! store files (the name carries the store hash; the content is hashed and
//! compared), and every file an entry genboot wrote names must be there.
//! Read-only: repairing is `genboot install`'s job.

use super::entry::{self, EntryName};
use super::layout::{self, ENTRIES_DIR, FILES_DIR, TMP_SUFFIX};
use super::{host_digest, Esp, EspError, GenInput, Small, StoreFile, MAX_SMALL_FILE};
use std::collections::BTreeMap;

/// One thing wrong on the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// ESP path, e.g. `EFI/genboot/<hash>-linux-6.1.0-50-amd64.efi`.
    pub path: String,
    pub what: String,
}

/// What [`check`] found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Kernel and initrd files compared with the store.
    pub files: usize,
    pub problems: Vec<Problem>,
}

/// Compare the ESP with the store for `gens` (see the module documentation).
pub fn check(esp: &mut dyn Esp, gens: &[GenInput]) -> Result<Checked, EspError> {
    let mut out = Checked::default();
    // FAT compares names case-insensitively: so does this.
    let mut present: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for file in esp.list(FILES_DIR)? {
        if file.ends_with(TMP_SUFFIX) {
            continue;
        }
        let path = layout::file_path(&file);
        if let Some(size) = esp.size(&path)? {
            present.insert(path.to_ascii_lowercase(), (path, size));
        }
    }
    let wanted: BTreeMap<String, &StoreFile> = gens
        .iter()
        .flat_map(GenInput::files)
        .map(|(path, file)| (path.to_ascii_lowercase(), file))
        .collect();
    for (lower, file) in &wanted {
        let Some((path, size)) = present.get(lower) else {
            continue;
        };
        out.files += 1;
        let (host, len) = (&file.host, file.len);
        let what = if *size != len {
            format!(
                "is {size} bytes, but its store file {} is {len} bytes",
                host.display()
            )
        } else if esp.digest(path)? != Some(host_digest(host)?) {
            format!(
                "has the size of its store file {} but other bytes",
                host.display()
            )
        } else {
            continue;
        };
        out.problems.push(Problem {
            path: path.clone(),
            what,
        });
    }
    // Files named by genboot's own entries must be there.
    for file in esp.list(ENTRIES_DIR)? {
        if EntryName::parse(&file).is_none() {
            continue;
        }
        let entry_path = layout::entry_path(&file);
        let Some(Small::Data(data)) = esp.read_small(&entry_path, MAX_SMALL_FILE)? else {
            continue;
        };
        if !entry::is_ours(&data) {
            continue;
        }
        for r in entry::referenced_files(&String::from_utf8_lossy(&data)) {
            if !present.contains_key(&r.to_ascii_lowercase()) && esp.size(&r)?.is_none() {
                out.problems.push(Problem {
                    path: r,
                    what: format!("is missing, and {entry_path} names it"),
                });
            }
        }
    }
    Ok(out)
}
