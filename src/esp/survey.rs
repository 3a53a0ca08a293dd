//! Read an ESP into an [`EspSnapshot`]: genboot's entries, foreign ones
//! (and the files they name), torn entries, leftovers of interrupted
//! writes, the kernels and initrds with their sizes (and digests where the
//! plan compares contents), the small files genboot keeps, free space.
//! Reading only: nothing here writes.
//!
//! FAT compares names case-insensitively, so every comparison of ESP paths
//! in the snapshot does too (keys are lower case; on a case-sensitive
//! directory that at worst keeps a file a foreign entry names in another
//! case).

use super::entry::{self, EntryName};
use super::layout::{self, ENTRIES_DIR, ENTRIES_SREL, FILES_DIR, LOADER_CONF, TMP_SUFFIX};
use super::{Esp, EspError, GenInput, InstallOptions, Small, Space, MAX_SMALL_FILE};
use std::collections::{BTreeMap, BTreeSet};

/// An entry genboot wrote (or a torn one it will replace), as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub name: EntryName,
    /// The file name as listed.
    pub file: String,
    pub content: Vec<u8>,
}

/// A file in `EFI/genboot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspFile {
    /// The path as listed (the key is its lower-case form).
    pub path: String,
    pub size: u64,
    /// SHA-256 of its bytes, read when a generation wants a file of this
    /// name and size (the plan compares contents then).
    pub digest: Option<[u8; 32]>,
}

/// What an ESP holds, as the installer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspSnapshot {
    /// `describe()` of the ESP, for messages.
    pub esp: String,
    pub space: Space,
    /// genboot's entries by key (`genboot-3`, `genboot-3-recovery`).
    pub(crate) ours: BTreeMap<String, Found>,
    /// Second files for one key (never written so, but healed): file names.
    pub duplicates: Vec<String>,
    /// Lower-case paths that entries genboot did not write name.
    pub foreign_refs: BTreeSet<String>,
    /// Entries named like genboot's that genboot did not write (or that
    /// were edited, or are too big to read): key → path.
    pub lookalikes: BTreeMap<String, String>,
    /// File names of the entries genboot did not write (`*.conf`), for
    /// what `LoaderEntryDefault` may match.
    pub foreign_names: Vec<String>,
    /// Foreign entries too big (or too odd) to read: they may name any
    /// file, so no kernel or initrd is removed while one is there.
    pub unread_foreign: Vec<String>,
    /// Temporary files of an interrupted write.
    pub leftovers: Vec<String>,
    /// Sizes of the entries read, by path.
    pub entry_sizes: BTreeMap<String, u64>,
    /// The files in `EFI/genboot`, by lower-case path.
    pub files: BTreeMap<String, EspFile>,
    /// Each loader path whose file has the size of the loader to install,
    /// with its content.
    pub loaders: BTreeMap<String, Vec<u8>>,
    pub loader_conf: Option<Small>,
    pub entries_srel: Option<Small>,
    pub warnings: Vec<String>,
}

impl EspSnapshot {
    /// The file at `path` in `EFI/genboot`, in any case.
    pub fn file(&self, path: &str) -> Option<&EspFile> {
        self.files.get(&path.to_ascii_lowercase())
    }

    /// The size of an entry or leftover read at `path` (0 if unknown).
    pub(crate) fn entry_size(&self, path: &str) -> u64 {
        self.entry_sizes.get(path).copied().unwrap_or(0)
    }
}

/// Read `esp` (see the module documentation). `gens` and `opts` say which
/// files are worth a content digest or read (those the plan may keep).
pub fn survey(
    esp: &mut dyn Esp,
    gens: &[GenInput],
    opts: &InstallOptions,
) -> Result<EspSnapshot, EspError> {
    let mut s = EspSnapshot {
        esp: esp.describe(),
        space: esp.space()?,
        ours: BTreeMap::new(),
        duplicates: Vec::new(),
        foreign_refs: BTreeSet::new(),
        lookalikes: BTreeMap::new(),
        foreign_names: Vec::new(),
        unread_foreign: Vec::new(),
        leftovers: Vec::new(),
        entry_sizes: BTreeMap::new(),
        files: BTreeMap::new(),
        loaders: BTreeMap::new(),
        loader_conf: esp.read_small(LOADER_CONF, MAX_SMALL_FILE)?,
        entries_srel: esp.read_small(ENTRIES_SREL, MAX_SMALL_FILE)?,
        warnings: Vec::new(),
    };
    for file in esp.list(ENTRIES_DIR)? {
        survey_entry(esp, &mut s, file)?;
    }
    let wanted_sizes: BTreeMap<String, u64> = gens
        .iter()
        .flat_map(|g| g.files())
        .map(|(path, f)| (path.to_ascii_lowercase(), f.len))
        .collect();
    for file in esp.list(FILES_DIR)? {
        let path = layout::file_path(&file);
        if file.ends_with(TMP_SUFFIX) {
            s.leftovers.push(path);
            continue;
        }
        let Some(size) = esp.size(&path)? else {
            continue;
        };
        let lower = path.to_ascii_lowercase();
        let digest = match wanted_sizes.get(&lower) {
            Some(len) if *len == size => esp.digest(&path)?,
            _ => None,
        };
        s.files.insert(lower, EspFile { path, size, digest });
    }
    if let Some(data) = &opts.loader {
        for p in layout::LOADER_PATHS {
            // Compare only a file of the same size (never read a huge one).
            if esp.size(p)? == Some(data.len() as u64) {
                if let Some(Small::Data(d)) = esp.read_small(p, data.len() as u64)? {
                    s.loaders.insert(p.to_string(), d);
                }
            }
        }
    }
    Ok(s)
}

/// Sort one file of `loader/entries` into the snapshot.
fn survey_entry(esp: &mut dyn Esp, s: &mut EspSnapshot, file: String) -> Result<(), EspError> {
    let path = layout::entry_path(&file);
    if file.ends_with(TMP_SUFFIX) {
        s.leftovers.push(path);
        return Ok(());
    }
    // A name genboot would write, in any case: on FAT it is the same file.
    let lower = file.to_ascii_lowercase();
    let lookalike = EntryName::parse(&lower);
    let data = match esp.read_small(&path, MAX_SMALL_FILE)? {
        None => return Ok(()),
        Some(Small::Data(d)) => d,
        Some(Small::Skipped(why)) => {
            s.warnings.push(format!(
                "{path} {why}; genboot treats it as foreign: it is left alone, and no file in {FILES_DIR} is removed while it is there"
            ));
            if let Some(n) = &lookalike {
                s.lookalikes.insert(n.key(), path.clone());
            }
            if lower.ends_with(entry::SUFFIX) {
                s.foreign_names.push(file);
                s.unread_foreign.push(path);
            }
            return Ok(());
        }
    };
    s.entry_sizes.insert(path.clone(), data.len() as u64);
    match EntryName::parse(&file) {
        Some(name) if entry::is_ours(&data) || entry::is_torn(&data) => {
            let key = name.key();
            let found = Found {
                name,
                file,
                content: data,
            };
            match s.ours.get(&key) {
                // Two files for one entry (never written so, but heal it):
                // keep the one with the counter state systemd-boot last touched.
                Some(prev) if prev.name.counter.is_some() => s.duplicates.push(found.file),
                Some(prev) => {
                    s.duplicates.push(prev.file.clone());
                    s.ours.insert(key, found);
                }
                None => {
                    s.ours.insert(key, found);
                }
            }
        }
        _ => {
            if lower.ends_with(entry::SUFFIX) {
                s.foreign_names.push(file.clone());
                s.foreign_refs.extend(
                    entry::referenced_files(&String::from_utf8_lossy(&data))
                        .iter()
                        .map(|r| r.to_ascii_lowercase()),
                );
            }
            if let Some(n) = lookalike {
                s.warnings.push(format!(
                    "{path} is named like a genboot entry but genboot did not write it (or it was edited); it is left alone — remove or rename it to let genboot manage generation {}",
                    n.generation
                ));
                s.lookalikes.insert(n.key(), path);
            }
        }
    }
    Ok(())
}
