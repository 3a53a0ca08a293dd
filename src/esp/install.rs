//! The installer: reconcile an ESP with the profile, written once against
//! the [`Esp`] trait.
//!
//! Order of work (each write step has a failpoint after it):
//! 1. read what is on the ESP and compute the wanted state;
//! 2. count the clusters the writes need and refuse before writing anything
//!    if they cannot fit (even after removing what nothing needs any more);
//! 3. write kernels, initrds and the loader (temporary name, flush, rename);
//! 4. write entries (same way; a changed entry first gets its fresh name,
//!    then its new content, so `x.conf` never sits beside `x+3.conf`);
//! 5. write `loader.conf`;
//! 6. remove entries and files nothing references.
//!
//! When the writes only fit after step 6, step 6 runs first (it removes
//! nothing the current default needs), so a full ESP never blocks a switch
//! or a rollback. The entries of the booted, the default and the last
//! blessed generation are never removed.

use super::entry::{self, Counter, EntryName, EntrySpec};
use super::{human, Esp, EspError, Small, WriteStats, MAX_SMALL_FILE};
use crate::failpoint::{self, FailPoint};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

pub(crate) const ENTRIES_DIR: &str = "loader/entries";
pub(crate) const FILES_DIR: &str = "EFI/genboot";
pub(crate) const LOADER_CONF: &str = "loader/loader.conf";
pub(crate) const ENTRIES_SREL: &str = "loader/entries.srel";
pub(crate) const LOADER_PATHS: [&str; 2] =
    ["EFI/systemd/systemd-bootx64.efi", "EFI/BOOT/BOOTX64.EFI"];
/// Suffix of files being written; leftovers of a crash are removed.
pub(crate) const TMP_SUFFIX: &str = ".genboot-tmp";

/// One profile generation, as the installer needs it.
#[derive(Debug, Clone)]
pub struct GenInput {
    pub number: u32,
    pub current: bool,
    /// `YYYY-MM-DD`.
    pub date: String,
    pub label: String,
    pub kernel_release: String,
    /// Store hash of the object holding the kernel, and the host path.
    pub kernel: (String, PathBuf),
    pub initrd: Option<(String, PathBuf)>,
    /// Kernel parameters and `init=`.
    pub options: String,
    pub tries: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// Keep at most this many newest generations.
    pub limit: Option<u32>,
    pub timeout: u32,
    /// systemd-boot to install, if asked.
    pub loader: Option<PathBuf>,
    pub machine_id: Option<String>,
    /// The generation this machine booted.
    pub booted: Option<u32>,
    /// Profile generations left out because they cannot be read: their
    /// entries already on the ESP are kept, not removed.
    pub unreadable: Vec<u32>,
}

#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallReport {
    pub default: u32,
    pub written: Vec<String>,
    pub removed: Vec<String>,
    pub warnings: Vec<String>,
    /// Removal ran before the writes to make room.
    pub cleaned_first: bool,
    pub stats: WriteStats,
}

/// Build the installer's input from the profile. A generation whose
/// `boot.json` cannot be read is skipped with a warning (one bad generation
/// must not block all installs) — unless it is the current one.
pub fn plan_generations(
    store: &crate::store::Store,
    gens: &[crate::profile::Generation],
    date: impl Fn(&crate::profile::Generation) -> String,
) -> Result<(Vec<GenInput>, Vec<String>), EspError> {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for g in gens {
        match gen_input(store, g, date(g)) {
            Ok(i) => out.push(i),
            Err(e) if !g.current => warnings.push(format!(
                "generation {} is left out of the boot menu: {e}",
                g.number
            )),
            Err(e) => return Err(e),
        }
    }
    Ok((out, warnings))
}

fn gen_input(
    store: &crate::store::Store,
    g: &crate::profile::Generation,
    date: String,
) -> Result<GenInput, EspError> {
    let bad = |what: String| EspError::Generation {
        generation: g.number,
        what,
    };
    let boot = crate::bootspec::BootJson::read(&store.path(&g.target).join("boot.json"))
        .map_err(|e| bad(e.to_string()))?;
    let resolve = |p: &str| -> Result<(String, PathBuf), EspError> {
        let (sp, host) = store
            .resolve_boot_path(p)
            .ok_or_else(|| bad(format!("{p} is not a path in the store")))?;
        if !host.is_file() {
            return Err(bad(format!("{} is missing", host.display())));
        }
        Ok((sp.hash, host))
    };
    let kernel = resolve(&boot.bootspec.kernel)?;
    let initrd = boot.bootspec.initrd.as_deref().map(resolve).transpose()?;
    let mut options = boot.bootspec.kernel_params.join(" ");
    if !options.is_empty() {
        options.push(' ');
    }
    options.push_str(&format!("init={}", boot.bootspec.init));
    Ok(GenInput {
        number: g.number,
        current: g.current,
        date,
        label: boot.bootspec.label,
        kernel_release: boot.genboot.kernel_release,
        kernel,
        initrd,
        options,
        tries: boot.genboot.tries,
    })
}

/// An entry genboot wrote, as found on the ESP.
#[derive(Debug, Clone)]
struct Found {
    name: EntryName,
    file: String,
    content: Vec<u8>,
}

/// What the ESP should hold for one entry.
#[derive(Debug, Clone)]
struct Want {
    name: EntryName,
    content: String,
}

enum EntryAction {
    New { file: String },
    Replace { old: String, new: String },
}

/// Reconcile `esp` with `gens`. See the module documentation.
pub fn install(
    esp: &mut dyn Esp,
    gens: &[GenInput],
    opts: &InstallOptions,
) -> Result<InstallReport, EspError> {
    let mut report = InstallReport::default();
    let current = gens.iter().find(|g| g.current).ok_or_else(|| {
        EspError::Other(
            "the profile has no current generation\nHint: run `genboot switch --config FILE` first"
                .into(),
        )
    })?;

    // 1. What is there. FAT compares names case-insensitively, so every
    // comparison of ESP paths here does too (on a case-sensitive directory
    // that at worst keeps a file a foreign entry names in another case).
    let mut ours: BTreeMap<String, Found> = BTreeMap::new();
    let mut duplicates: Vec<String> = Vec::new();
    let mut foreign_refs: BTreeSet<String> = BTreeSet::new();
    let mut foreign_genboot: BTreeMap<String, String> = BTreeMap::new();
    // A foreign entry too big (or too odd) to read may name any file.
    let mut unread_foreign: Vec<String> = Vec::new();
    let mut leftovers: Vec<String> = Vec::new();
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for file in esp.list(ENTRIES_DIR)? {
        let path = format!("{ENTRIES_DIR}/{file}");
        if file.ends_with(TMP_SUFFIX) {
            leftovers.push(path);
            continue;
        }
        // A name genboot would write, in any case: on FAT it is the same file.
        let lookalike = EntryName::parse(&file.to_ascii_lowercase());
        let data = match esp.read_small(&path, MAX_SMALL_FILE)? {
            None => continue,
            Some(Small::Data(d)) => d,
            Some(Small::Skipped(why)) => {
                report.warnings.push(format!(
                    "{path} {why}; genboot treats it as foreign: it is left alone, and no file in {FILES_DIR} is removed while it is there"
                ));
                if let Some(n) = &lookalike {
                    foreign_genboot.insert(n.key(), path.clone());
                }
                if file.to_ascii_lowercase().ends_with(entry::SUFFIX) {
                    unread_foreign.push(path);
                }
                continue;
            }
        };
        sizes.insert(path.clone(), data.len() as u64);
        let parsed = EntryName::parse(&file);
        match parsed {
            Some(name) if entry::is_ours(&data) || entry::is_torn(&data) => {
                let key = name.key();
                let found = Found {
                    name,
                    file: file.clone(),
                    content: data,
                };
                match ours.get(&key) {
                    // Two files for one entry (never written so, but heal it):
                    // keep the one with the counter state systemd-boot last touched.
                    Some(prev) if prev.name.counter.is_some() => duplicates.push(file),
                    Some(prev) => {
                        duplicates.push(prev.file.clone());
                        ours.insert(key, found);
                    }
                    None => {
                        ours.insert(key, found);
                    }
                }
            }
            _ => {
                if file.to_ascii_lowercase().ends_with(entry::SUFFIX) {
                    foreign_refs.extend(
                        entry::referenced_files(&String::from_utf8_lossy(&data))
                            .iter()
                            .map(|r| r.to_ascii_lowercase()),
                    );
                }
                if let Some(n) = lookalike {
                    report.warnings.push(format!(
                        "{path} is named like a genboot entry but genboot did not write it (or it was edited); it is left alone — remove or rename it to let genboot manage generation {}",
                        n.generation
                    ));
                    foreign_genboot.insert(n.key(), path.clone());
                }
            }
        }
    }
    // The files in EFI/genboot: lower-cased path → (path as listed, size).
    let mut present: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for file in esp.list(FILES_DIR)? {
        let path = format!("{FILES_DIR}/{file}");
        if file.ends_with(TMP_SUFFIX) {
            leftovers.push(path);
            continue;
        }
        if let Some(s) = esp.size(&path)? {
            present.insert(path.to_ascii_lowercase(), (path, s));
        }
    }

    // 2. What should be there.
    // The current generation's entry must be genboot's: genboot never
    // makes a file it does not own the default.
    if let Some(path) = foreign_genboot.get(&entry::key(current.number, false)) {
        return Err(EspError::ForeignDefault {
            esp: esp.describe(),
            path: path.clone(),
            generation: current.number,
        });
    }
    let mut by_number: Vec<&GenInput> = gens.iter().collect();
    by_number.sort_by_key(|g| std::cmp::Reverse(g.number));
    // The last blessed generation: the newest plain entry of a generation
    // that boots with counting (without counting every entry is plain).
    let counted: BTreeSet<u32> = gens
        .iter()
        .filter(|g| g.tries.is_some())
        .map(|g| g.number)
        .collect();
    let last_blessed = ours
        .values()
        .filter(|f| !f.name.recovery && f.name.counter.is_none() && entry::is_ours(&f.content))
        .map(|f| f.name.generation)
        .filter(|n| counted.contains(n))
        .max();
    let mut selected: BTreeSet<u32> = BTreeSet::new();
    for (i, g) in by_number.iter().enumerate() {
        let within_limit = opts.limit.is_none_or(|l| (i as u32) < l);
        if within_limit
            || g.current
            || Some(g.number) == opts.booted
            || Some(g.number) == last_blessed
        {
            selected.insert(g.number);
        }
    }
    let spec_of = |g: &GenInput, recovery: bool| EntrySpec {
        generation: g.number,
        recovery,
        label: g.label.clone(),
        kernel_release: g.kernel_release.clone(),
        date: g.date.clone(),
        machine_id: opts.machine_id.clone(),
        linux: format!("/{}", kernel_path(g)),
        initrd: initrd_path(g).map(|p| format!("/{p}")),
        options: g.options.clone(),
    };
    let mut wanted: BTreeMap<String, Want> = BTreeMap::new();
    let mut wanted_files: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut file_users: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for g in by_number.iter().filter(|g| selected.contains(&g.number)) {
        let key = entry::key(g.number, false);
        if foreign_genboot.contains_key(&key) {
            continue;
        }
        let content = spec_of(g, false).render();
        wanted.insert(
            key,
            Want {
                name: EntryName {
                    generation: g.number,
                    recovery: false,
                    counter: g.tries.map(|t| Counter {
                        left: t,
                        done: None,
                    }),
                },
                content,
            },
        );
        let mut files = vec![(kernel_path(g), g.kernel.1.clone())];
        if let (Some(p), Some((_, host))) = (initrd_path(g), &g.initrd) {
            files.push((p, host.clone()));
        }
        for (p, host) in files {
            file_users.entry(p.clone()).or_default().insert(g.number);
            wanted_files.insert(p, host);
        }
    }
    // The default: the current generation unless its tries ran out, then
    // the newest one that still has tries.
    let kept_exhausted = |n: u32| {
        let key = entry::key(n, false);
        match (ours.get(&key), wanted.get(&key)) {
            (Some(f), Some(w)) => f.content == w.content.as_bytes() && f.name.exhausted(),
            _ => false,
        }
    };
    // Only an entry genboot writes (a key of `wanted`) can be the default.
    let default = std::iter::once(current.number)
        .chain(by_number.iter().map(|g| g.number))
        .filter(|n| wanted.contains_key(&entry::key(*n, false)))
        .find(|n| !kept_exhausted(*n))
        .unwrap_or(current.number);
    report.default = default;
    if let Some(g) = gens.iter().find(|g| g.number == default) {
        let key = entry::key(default, true);
        if !foreign_genboot.contains_key(&key) {
            wanted.insert(
                key,
                Want {
                    name: EntryName {
                        generation: default,
                        recovery: true,
                        counter: None,
                    },
                    content: spec_of(g, true).render(),
                },
            );
        }
    }

    // 3. The difference. A file of the right size is compared by content
    // too (its name carries the store hash, but a torn write, bit rot or
    // firmware may have changed its bytes): a differing one is rewritten.
    let mut file_writes: Vec<(String, PathBuf, u64)> = Vec::new();
    for (path, host) in &wanted_files {
        let len = std::fs::metadata(host)
            .map_err(|source| EspError::Input {
                path: host.clone(),
                source,
            })?
            .len();
        match present.get(&path.to_ascii_lowercase()) {
            Some((actual, size)) if *size == len => {
                if esp.digest(actual)? != Some(super::host_digest(host)?) {
                    report.warnings.push(format!(
                        "{actual} on {} has the size of {} but other bytes (a torn write or a damaged ESP); it is written again",
                        esp.describe(),
                        host.display()
                    ));
                    file_writes.push((path.clone(), host.clone(), len));
                }
            }
            _ => file_writes.push((path.clone(), host.clone(), len)),
        }
    }
    let mut small_writes: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    if let Some(loader) = &opts.loader {
        let data = read_loader(loader)?;
        for p in LOADER_PATHS {
            // Compare only a file of the same size (never read a huge one).
            let same = esp.size(p)? == Some(data.len() as u64)
                && esp.read_small(p, data.len() as u64)? == Some(Small::Data(data.clone()));
            if !same {
                small_writes.push((p, data.clone(), "file"));
            }
        }
    }
    let srel = b"type1\n".to_vec();
    if esp.read_small(ENTRIES_SREL, MAX_SMALL_FILE)? != Some(Small::Data(srel.clone())) {
        small_writes.push((ENTRIES_SREL, srel, "file"));
    }
    let mut entry_writes: Vec<(EntryAction, String)> = Vec::new();
    for (key, want) in &wanted {
        match ours.get(key) {
            Some(f) if f.content == want.content.as_bytes() => {}
            Some(f) => entry_writes.push((
                EntryAction::Replace {
                    old: f.file.clone(),
                    new: want.name.file_name(),
                },
                want.content.clone(),
            )),
            None => entry_writes.push((
                EntryAction::New {
                    file: want.name.file_name(),
                },
                want.content.clone(),
            )),
        }
    }
    let conf = entry::loader_conf(&entry::key(default, false), opts.timeout);
    let conf_changed =
        esp.read_small(LOADER_CONF, MAX_SMALL_FILE)? != Some(Small::Data(conf.as_bytes().to_vec()));

    // Removals: our entries nothing wants, except protected ones.
    let protected: BTreeSet<String> = [opts.booted, Some(default), last_blessed]
        .into_iter()
        .flatten()
        .chain(opts.unreadable.iter().copied())
        .map(|n| entry::key(n, false))
        .collect();
    let mut entry_removals: Vec<String> = duplicates
        .iter()
        .map(|f| format!("{ENTRIES_DIR}/{f}"))
        .collect();
    let mut remaining_refs = foreign_refs.clone();
    let add_refs = |text: &str, refs: &mut BTreeSet<String>| {
        refs.extend(
            entry::referenced_files(text)
                .iter()
                .map(|r| r.to_ascii_lowercase()),
        );
    };
    for (key, f) in &ours {
        if wanted.contains_key(key) {
            continue;
        }
        if protected.contains(key) {
            add_refs(&String::from_utf8_lossy(&f.content), &mut remaining_refs);
            continue;
        }
        entry_removals.push(format!("{ENTRIES_DIR}/{}", f.file));
    }
    for w in wanted.values() {
        add_refs(&w.content, &mut remaining_refs);
    }
    let file_removals: Vec<String> = if unread_foreign.is_empty() {
        present
            .iter()
            .filter(|(lower, _)| !remaining_refs.contains(*lower))
            .map(|(_, (actual, _))| actual.clone())
            .collect()
    } else {
        Vec::new()
    };

    // 4. Space, in clusters, before any write.
    let space = esp.space()?;
    let mut need = 0u64;
    for (_, _, len) in &file_writes {
        need += space.clusters(*len);
    }
    for (_, data, _) in &small_writes {
        need += space.clusters(data.len() as u64);
    }
    for (_, content) in &entry_writes {
        need += space.clusters(content.len() as u64);
    }
    if conf_changed {
        need += space.clusters(conf.len() as u64);
    }
    let writes_any = !file_writes.is_empty()
        || !small_writes.is_empty()
        || !entry_writes.is_empty()
        || conf_changed;
    if writes_any {
        // New directories and directory growth: one cluster each.
        need += 6;
    }
    let reclaim: u64 = entry_removals
        .iter()
        .chain(&leftovers)
        .map(|p| space.clusters(sizes.get(p).copied().unwrap_or(0)))
        .chain(file_removals.iter().map(|p| {
            space.clusters(
                present
                    .get(&p.to_ascii_lowercase())
                    .map_or(0, |(_, size)| *size),
            )
        }))
        .sum();
    let cleaned_first = need > space.free_clusters;
    if need > space.free_clusters + reclaim {
        let missing = need - space.free_clusters - reclaim;
        return Err(full_error(
            esp,
            space,
            need,
            missing,
            gens,
            &selected,
            &[current.number, default]
                .into_iter()
                .chain(opts.booted)
                .collect::<Vec<_>>(),
            &file_users,
            &wanted_files,
        ));
    }
    report.cleaned_first = cleaned_first;

    // 5. Write.
    let removal = |esp: &mut dyn Esp, report: &mut InstallReport| -> Result<(), EspError> {
        for p in entry_removals.iter().chain(&leftovers) {
            esp.remove(p)?;
            failpoint::hit(FailPoint::EspEntryRemoved).map_err(fp_err(esp, p))?;
            report.removed.push(p.clone());
        }
        for p in &file_removals {
            esp.remove(p)?;
            failpoint::hit(FailPoint::EspFileRemoved).map_err(fp_err(esp, p))?;
            report.removed.push(p.clone());
        }
        Ok(())
    };
    if cleaned_first {
        removal(esp, &mut report)?;
    }
    if writes_any {
        for d in [FILES_DIR, ENTRIES_DIR] {
            esp.create_dir_all(d)?;
        }
        if opts.loader.is_some() {
            for p in LOADER_PATHS {
                esp.create_dir_all(parent(p))?;
            }
        }
    }
    for (path, host, _) in &file_writes {
        let mut f = std::fs::File::open(host).map_err(|source| EspError::Input {
            path: host.clone(),
            source,
        })?;
        write_then_rename(
            esp,
            path,
            &mut f,
            FailPoint::EspFileWritten,
            FailPoint::EspFileRenamed,
        )?;
        report.written.push(path.clone());
    }
    for (path, data, _) in &small_writes {
        write_then_rename(
            esp,
            path,
            &mut &data[..],
            FailPoint::EspFileWritten,
            FailPoint::EspFileRenamed,
        )?;
        report.written.push(path.to_string());
    }
    for (action, content) in &entry_writes {
        match action {
            EntryAction::New { file } => {
                let path = format!("{ENTRIES_DIR}/{file}");
                write_then_rename(
                    esp,
                    &path,
                    &mut content.as_bytes(),
                    FailPoint::EspEntryWritten,
                    FailPoint::EspEntryRenamed,
                )?;
                report.written.push(path);
            }
            EntryAction::Replace { old, new } => {
                // First give the old file its fresh name (new counter, old
                // content), then replace the content under that name: one
                // file for the entry at every moment, and a crash in
                // between leaves a file whose content differs, so the next
                // run replaces it again (the other order would keep the old
                // counter on the new content).
                let old_path = format!("{ENTRIES_DIR}/{old}");
                let new_path = format!("{ENTRIES_DIR}/{new}");
                if new != old {
                    esp.rename(&old_path, &new_path)?;
                    failpoint::hit(FailPoint::EspEntryCounterReset)
                        .map_err(fp_err(esp, &new_path))?;
                }
                write_then_rename(
                    esp,
                    &new_path,
                    &mut content.as_bytes(),
                    FailPoint::EspEntryWritten,
                    FailPoint::EspEntryRenamed,
                )?;
                report.written.push(new_path);
            }
        }
    }
    if conf_changed {
        write_then_rename(
            esp,
            LOADER_CONF,
            &mut conf.as_bytes(),
            FailPoint::EspLoaderConfWritten,
            FailPoint::EspLoaderConfRenamed,
        )?;
        report.written.push(LOADER_CONF.into());
    }
    if !cleaned_first {
        removal(esp, &mut report)?;
    }
    Ok(report)
}

/// The systemd-boot binary to install: a regular file of at most 64 MiB
/// (systemd-boot is about 100 KB).
fn read_loader(path: &std::path::Path) -> Result<Vec<u8>, EspError> {
    use crate::modules::input::{read_regular, InputError};
    read_regular(path, true, 64 << 20).map_err(|e| EspError::Input {
        path: path.to_path_buf(),
        source: match e {
            InputError::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        },
    })
}

pub(crate) fn kernel_path(g: &GenInput) -> String {
    format!(
        "{FILES_DIR}/{}-linux-{}.efi",
        g.kernel.0,
        file_safe(&g.kernel_release)
    )
}

pub(crate) fn initrd_path(g: &GenInput) -> Option<String> {
    g.initrd.as_ref().map(|(h, _)| {
        format!(
            "{FILES_DIR}/{h}-initrd-{}.img",
            file_safe(&g.kernel_release)
        )
    })
}

/// ESP file names stay in `[A-Za-z0-9+_.-]` whatever a kernel release
/// string holds (FAT, firmware and the BLS all cope with these).
fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn parent(p: &str) -> &str {
    p.rsplit_once('/').map_or("", |(d, _)| d)
}

fn fp_err<'a>(esp: &'a dyn Esp, path: &'a str) -> impl FnOnce(std::io::Error) -> EspError + 'a {
    move |source| EspError::Io {
        op: "write",
        path: path.to_string(),
        esp: esp.describe(),
        source,
    }
}

/// Temporary name, durable write, rename over the final name.
fn write_then_rename(
    esp: &mut dyn Esp,
    path: &str,
    data: &mut dyn std::io::Read,
    written: FailPoint,
    renamed: FailPoint,
) -> Result<(), EspError> {
    let tmp = format!("{path}{TMP_SUFFIX}");
    esp.write_file(&tmp, data)?;
    failpoint::hit(written).map_err(fp_err(esp, &tmp))?;
    esp.rename(&tmp, path)?;
    failpoint::hit(renamed).map_err(fp_err(esp, path))?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn full_error(
    esp: &dyn Esp,
    space: super::Space,
    need: u64,
    missing: u64,
    gens: &[GenInput],
    selected: &BTreeSet<u32>,
    keep: &[u32],
    file_users: &BTreeMap<String, BTreeSet<u32>>,
    wanted_files: &BTreeMap<String, PathBuf>,
) -> EspError {
    // Which generations, oldest first, free enough when deleted: each frees
    // its entry and the files no other selected generation uses.
    let mut freed = 0u64;
    let mut victims: Vec<u32> = Vec::new();
    for g in gens
        .iter()
        .filter(|g| selected.contains(&g.number) && !keep.contains(&g.number))
    {
        let mut f = 1;
        for (path, users) in file_users {
            if users.len() == 1 && users.contains(&g.number) {
                let len = wanted_files
                    .get(path)
                    .and_then(|h| std::fs::metadata(h).ok())
                    .map_or(0, |m| m.len());
                f += space.clusters(len);
            }
        }
        freed += f;
        victims.push(g.number);
        if freed >= missing {
            break;
        }
    }
    let hint = if freed >= missing && !victims.is_empty() {
        let list: Vec<String> = victims.iter().map(u32::to_string).collect();
        format!(
            "delete old generations to make room: `genboot delete {}` frees about {} on the ESP (or set [boot] limit); then run `genboot install` again",
            list.join(" "),
            human(freed * space.cluster_size)
        )
    } else {
        "even the default generation alone does not fit: use a larger ESP, or remove files genboot did not write from it".into()
    };
    EspError::Full(Box::new(super::Full {
        esp: esp.describe(),
        need: human(missing * space.cluster_size),
        missing_clusters: missing,
        cluster_size: space.cluster_size,
        free: human(space.free_clusters * space.cluster_size),
        total_needed: human(need * space.cluster_size),
        hint,
        delete: if freed >= missing {
            victims
        } else {
            Vec::new()
        },
    }))
}

/// Drop the boot-counting suffix of the entry for `generation`
/// (or of the exact file `file`, as systemd-boot reports it). Returns the
/// new file name, or `None` when there was nothing to do.
pub fn bless(
    esp: &mut dyn Esp,
    generation: Option<u32>,
    file: Option<&str>,
) -> Result<Option<String>, EspError> {
    for f in esp.list(ENTRIES_DIR)? {
        let Some(name) = EntryName::parse(&f) else {
            continue;
        };
        let matches = match file {
            Some(want) => want == f,
            None => generation == Some(name.generation) && !name.recovery,
        };
        if !matches {
            continue;
        }
        if name.counter.is_none() {
            return Ok(None);
        }
        let plain = EntryName {
            counter: None,
            ..name
        }
        .file_name();
        let from = format!("{ENTRIES_DIR}/{f}");
        let to = format!("{ENTRIES_DIR}/{plain}");
        esp.rename(&from, &to)?;
        failpoint::hit(FailPoint::EspBlessRenamed).map_err(fp_err(esp, &to))?;
        return Ok(Some(plain));
    }
    Err(EspError::Other(format!(
        "no boot entry for {} on {}\nHint: run `genboot install` to write the boot menu",
        match (file, generation) {
            (Some(f), _) => f.to_string(),
            (None, Some(n)) => format!("generation {n}"),
            _ => "the booted generation".into(),
        },
        esp.describe()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_in_the_safe_set() {
        assert_eq!(file_safe("6.1.0-50-amd64"), "6.1.0-50-amd64");
        assert_eq!(file_safe("6.9.0+ (custom)/x"), "6.9.0+__custom__x");
    }
}
