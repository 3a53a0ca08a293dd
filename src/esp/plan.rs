//! The installer's decisions, without any I/O: from what the ESP holds
//! ([`EspSnapshot`]) and the profile's generations, what to write, what to
//! remove, and in which order — or why not to start at all.
//!
//! The rules:
//! - The newest `limit` generations get entries, and always the current
//!   one, the booted one and the last blessed one (the newest plain entry of
//!   a generation that boots with counting).
//! - The default is the current generation unless its tries ran out, then
//!   the newest one that still has tries; it gets a recovery entry too.
//! - The current generation's entry must be genboot's: genboot never makes
//!   a file it does not own the default. An entry named like genboot's that
//!   genboot did not write is left alone (and its generation gets none).
//! - An unchanged entry is not written (its boot counter is kept); a
//!   changed one gets its fresh name first, then its content.
//! - A kernel or initrd of the right size is compared by content too (its
//!   name carries the store hash, but a torn write, bit rot or firmware may
//!   have changed its bytes); a differing one is written again.
//! - Entries nothing wants are removed, except those of the booted, the
//!   default and the last blessed generation and of unreadable ones; files
//!   no entry names (genboot's or a foreign one, in any case) are removed,
//!   unless a foreign entry could not be read.
//! - Space is counted in clusters before anything is written. When the
//!   writes fit only after the removals, the removals go first (they
//!   remove nothing the default needs); when they do not fit even then,
//!   nothing is written and the error says which generations to delete.

use super::entry::{self, Counter, EntryName, EntrySpec};
use super::layout::{self, ENTRIES_SREL, ENTRIES_SREL_CONTENT, LOADER_PATHS};
use super::survey::EspSnapshot;
use super::{EspError, Full, GenInput, InstallOptions, Small, StoreFile};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// A kernel or initrd to copy from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    pub path: String,
    pub source: PathBuf,
    pub len: u64,
}

/// A small file written from memory (a boot loader, `entries.srel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmallWrite {
    pub path: String,
    pub data: Vec<u8>,
}

/// How an entry gets its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryAction {
    /// A new file, `loader/entries/<file>`.
    New { file: String },
    /// `old` is renamed to `new` first (when they differ: a fresh counter
    /// for another generation under the same number), then written; the
    /// same generation keeps its name and counter (`new == old`).
    Replace { old: String, new: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryWrite {
    pub action: EntryAction,
    pub content: String,
}

/// What an install does, in the order [`apply`](super::apply) does it:
/// (removals, when `clean_first`), directories, files, small files,
/// entries, `loader.conf`, (removals).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The generation `loader.conf` makes the default.
    pub default: u32,
    /// Directories to create before the first write.
    pub dirs: Vec<String>,
    pub file_writes: Vec<FileWrite>,
    pub small_writes: Vec<SmallWrite>,
    pub entry_writes: Vec<EntryWrite>,
    /// The new `loader.conf`, when it changes.
    pub loader_conf: Option<String>,
    /// Entries nothing needs, duplicates and leftovers of interrupted writes.
    pub entry_removals: Vec<String>,
    /// Kernels and initrds nothing references.
    pub file_removals: Vec<String>,
    /// The writes fit only after the removals: remove first.
    pub clean_first: bool,
    /// Clusters the writes need, and what the removals free.
    pub need: u64,
    pub reclaim: u64,
    pub warnings: Vec<String>,
}

impl Plan {
    /// Nothing to write and nothing to remove.
    pub fn is_empty(&self) -> bool {
        !self.writes_anything() && self.entry_removals.is_empty() && self.file_removals.is_empty()
    }

    /// Anything to write (files, entries, `loader.conf`).
    pub fn writes_anything(&self) -> bool {
        !self.file_writes.is_empty()
            || !self.small_writes.is_empty()
            || !self.entry_writes.is_empty()
            || self.loader_conf.is_some()
    }
}

/// What the ESP should hold for one entry.
#[derive(Debug, Clone)]
struct Want {
    name: EntryName,
    content: String,
}

/// Entries and files of the selected generations.
#[derive(Default)]
struct Wanted<'g> {
    entries: BTreeMap<String, Want>,
    files: BTreeMap<String, &'g StoreFile>,
    /// Which selected generations use each file.
    users: BTreeMap<String, BTreeSet<u32>>,
}

/// Decide (see the module documentation).
pub fn plan(
    snapshot: &EspSnapshot,
    gens: &[GenInput],
    opts: &InstallOptions,
) -> Result<Plan, EspError> {
    let current = gens.iter().find(|g| g.current).ok_or(EspError::NoCurrent)?;
    if let Some(path) = snapshot.lookalikes.get(&entry::key(current.number, false)) {
        return Err(EspError::ForeignDefault {
            esp: snapshot.esp.clone(),
            path: path.clone(),
            generation: current.number,
        });
    }
    let mut by_number: Vec<&GenInput> = gens.iter().collect();
    by_number.sort_by_key(|g| std::cmp::Reverse(g.number));
    let last_blessed = last_blessed(snapshot, gens);
    let selected = select(&by_number, opts, last_blessed);
    let mut wanted = wanted(snapshot, &by_number, &selected, opts);
    let default = pick_default(snapshot, &wanted, &by_number, current.number);
    let mut warnings = snapshot.warnings.clone();
    // The recovery entry is for the generation the machine boots by
    // default, which the firmware's LoaderEntryDefault can make another.
    let boots = match efi_default_choice(snapshot, &wanted, opts) {
        EfiDefault::Unset => default,
        EfiDefault::Generation(n) => {
            if n != default {
                warnings.push(efi_default_warning(
                    opts,
                    &format!("generation {n}"),
                    default,
                ));
            }
            n
        }
        EfiDefault::Other => {
            warnings.push(efi_default_warning(
                opts,
                "an entry genboot did not write",
                default,
            ));
            default
        }
    };
    if let Some(g) = gens.iter().find(|g| g.number == boots) {
        let key = entry::key(boots, true);
        if !snapshot.lookalikes.contains_key(&key) {
            let want = Want {
                name: EntryName {
                    generation: boots,
                    recovery: true,
                    counter: None,
                },
                content: spec(g, true, opts).render(),
            };
            wanted.entries.insert(key, want);
        }
    }
    let mut plan = Plan {
        default,
        warnings,
        ..Plan::default()
    };
    diff(snapshot, &wanted, opts, &mut plan);
    let protected: BTreeSet<u32> = [opts.booted, Some(default), Some(boots), last_blessed]
        .into_iter()
        .flatten()
        .chain(opts.unreadable.iter().copied())
        .collect();
    removals(snapshot, &wanted, &protected, &mut plan);
    let keep: Vec<u32> = [current.number, default, boots]
        .into_iter()
        .chain(opts.booted)
        .collect();
    check_space(snapshot, gens, &selected, &keep, &wanted, &mut plan)?;
    if plan.writes_anything() {
        plan.dirs = layout::INSTALL_DIRS.iter().map(|d| d.to_string()).collect();
        if opts.loader.is_some() {
            plan.dirs
                .extend(LOADER_PATHS.iter().map(|p| layout::parent(p).to_string()));
        }
    }
    Ok(plan)
}

/// Which entry the firmware's `LoaderEntryDefault` makes the default.
enum EfiDefault {
    /// Not set, or it matches no entry: `loader.conf` decides.
    Unset,
    /// An entry of this generation (its recovery entry included).
    Generation(u32),
    /// An entry genboot did not write.
    Other,
}

/// What `LoaderEntryDefault` picks, as systemd-boot would: the first entry
/// in its menu order whose file name (counter included) the pattern
/// matches — genboot's entries before foreign ones (theirs have other
/// sort keys, which sort either way: a foreign match is reported), with
/// tries left before those without, newest first.
fn efi_default_choice(
    snapshot: &EspSnapshot,
    wanted: &Wanted<'_>,
    opts: &InstallOptions,
) -> EfiDefault {
    let Some(pattern) = opts.efi_default.as_deref().filter(|p| !p.is_empty()) else {
        return EfiDefault::Unset;
    };
    // The names genboot's entries will have after this install.
    let mut names: Vec<EntryName> = wanted
        .entries
        .iter()
        .map(|(key, w)| match snapshot.ours.get(key) {
            Some(f) if entry::boots_the_same(&f.content, &w.content) => f.name.clone(),
            _ => w.name.clone(),
        })
        .collect();
    names.extend(
        snapshot
            .ours
            .iter()
            .filter(|(key, _)| !wanted.entries.contains_key(*key))
            .map(|(_, f)| f.name.clone()),
    );
    names.sort_by_key(|n| (n.exhausted(), n.recovery, std::cmp::Reverse(n.generation)));
    if let Some(n) = names
        .iter()
        .find(|n| entry::default_matches(pattern, &n.file_name()))
    {
        return EfiDefault::Generation(n.generation);
    }
    if snapshot
        .foreign_names
        .iter()
        .any(|f| entry::default_matches(pattern, f))
    {
        return EfiDefault::Other;
    }
    EfiDefault::Unset
}

fn efi_default_warning(opts: &InstallOptions, picks: &str, default: u32) -> String {
    format!(
        "the firmware variable LoaderEntryDefault ({:?}, set in the boot menu with `d` or by `bootctl set-default`) overrides loader.conf: this machine boots {picks} by default, not generation {default}; `bootctl set-default \"\"` removes it",
        opts.efi_default.as_deref().unwrap_or_default()
    )
}

/// The last blessed generation: the newest plain entry of a generation that
/// boots with counting (without counting every entry is plain).
fn last_blessed(snapshot: &EspSnapshot, gens: &[GenInput]) -> Option<u32> {
    let counted: BTreeSet<u32> = gens
        .iter()
        .filter(|g| g.tries.is_some())
        .map(|g| g.number)
        .collect();
    snapshot
        .ours
        .values()
        .filter(|f| !f.name.recovery && f.name.counter.is_none() && entry::is_ours(&f.content))
        .map(|f| f.name.generation)
        .filter(|n| counted.contains(n))
        .max()
}

/// The generations that get entries: the newest `limit`, and the current,
/// booted and last blessed ones.
fn select(by_number: &[&GenInput], opts: &InstallOptions, blessed: Option<u32>) -> BTreeSet<u32> {
    by_number
        .iter()
        .enumerate()
        .filter(|(i, g)| {
            opts.limit.is_none_or(|l| (*i as u32) < l)
                || g.current
                || Some(g.number) == opts.booted
                || Some(g.number) == blessed
        })
        .map(|(_, g)| g.number)
        .collect()
}

fn spec(g: &GenInput, recovery: bool, opts: &InstallOptions) -> EntrySpec {
    EntrySpec {
        generation: g.number,
        recovery,
        label: g.label.clone(),
        kernel_release: g.kernel_release.clone(),
        date: g.date.clone(),
        machine_id: opts.machine_id.clone(),
        linux: format!("/{}", g.kernel_path()),
        initrd: g.initrd_path().map(|p| format!("/{p}")),
        options: g.options.clone(),
    }
}

/// The entries and files of the selected generations (not of those whose
/// entry name a foreign file holds).
fn wanted<'g>(
    snapshot: &EspSnapshot,
    by_number: &[&'g GenInput],
    selected: &BTreeSet<u32>,
    opts: &InstallOptions,
) -> Wanted<'g> {
    let mut w = Wanted::default();
    for g in by_number.iter().filter(|g| selected.contains(&g.number)) {
        let key = entry::key(g.number, false);
        if snapshot.lookalikes.contains_key(&key) {
            continue;
        }
        let name = EntryName {
            generation: g.number,
            recovery: false,
            counter: g.tries.map(|t| Counter {
                left: t,
                done: None,
            }),
        };
        let content = spec(g, false, opts).render();
        w.entries.insert(key, Want { name, content });
        for (path, file) in g.files() {
            w.users.entry(path.clone()).or_default().insert(g.number);
            w.files.insert(path, file);
        }
    }
    w
}

/// The current generation unless its tries ran out (its entry keeps its
/// counter: it boots the same generation), then the newest one that still
/// has tries; only an entry
/// genboot writes can be the default.
fn pick_default(
    snapshot: &EspSnapshot,
    wanted: &Wanted<'_>,
    by_number: &[&GenInput],
    current: u32,
) -> u32 {
    let kept_exhausted = |n: u32| {
        let key = entry::key(n, false);
        match (snapshot.ours.get(&key), wanted.entries.get(&key)) {
            (Some(f), Some(w)) => {
                f.name.exhausted() && entry::boots_the_same(&f.content, &w.content)
            }
            _ => false,
        }
    };
    std::iter::once(current)
        .chain(by_number.iter().map(|g| g.number))
        .filter(|n| wanted.entries.contains_key(&entry::key(*n, false)))
        .find(|n| !kept_exhausted(*n))
        .unwrap_or(current)
}

/// What to write: files that are missing or differ, the loader and
/// `entries.srel` when they differ, changed or new entries, `loader.conf`.
fn diff(snapshot: &EspSnapshot, wanted: &Wanted<'_>, opts: &InstallOptions, plan: &mut Plan) {
    for (path, file) in &wanted.files {
        let write = FileWrite {
            path: path.clone(),
            source: file.host.clone(),
            len: file.len,
        };
        match snapshot.file(path) {
            Some(found) if found.size == file.len => {
                if found.digest.is_none() || found.digest != file.digest {
                    plan.warnings.push(format!(
                        "{} on {} has the size of {} but other bytes (a torn write or a damaged ESP); it is written again",
                        found.path,
                        snapshot.esp,
                        file.host.display()
                    ));
                    plan.file_writes.push(write);
                }
            }
            _ => plan.file_writes.push(write),
        }
    }
    if let Some(data) = &opts.loader {
        for p in LOADER_PATHS {
            if snapshot.loaders.get(p) != Some(data) {
                plan.small_writes.push(SmallWrite {
                    path: p.to_string(),
                    data: data.clone(),
                });
            }
        }
    }
    if snapshot.entries_srel != Some(Small::Data(ENTRIES_SREL_CONTENT.to_vec())) {
        plan.small_writes.push(SmallWrite {
            path: ENTRIES_SREL.to_string(),
            data: ENTRIES_SREL_CONTENT.to_vec(),
        });
    }
    for (key, want) in &wanted.entries {
        let action = match snapshot.ours.get(key) {
            Some(f) if f.content == want.content.as_bytes() => continue,
            // The same generation (e.g. the machine got a machine-id):
            // its counter stays, blessed or counted down.
            Some(f) if entry::boots_the_same(&f.content, &want.content) => EntryAction::Replace {
                old: f.file.clone(),
                new: f.file.clone(),
            },
            // Another generation under this number, or a torn file: fresh tries.
            Some(f) => EntryAction::Replace {
                old: f.file.clone(),
                new: want.name.file_name(),
            },
            None => EntryAction::New {
                file: want.name.file_name(),
            },
        };
        plan.entry_writes.push(EntryWrite {
            action,
            content: want.content.clone(),
        });
    }
    let conf = entry::loader_conf(plan.default, opts.timeout);
    if snapshot.loader_conf != Some(Small::Data(conf.as_bytes().to_vec())) {
        plan.loader_conf = Some(conf);
    }
}

/// What to remove: duplicates, genboot's entries nothing wants (except
/// protected ones), leftovers; files no remaining entry names.
fn removals(
    snapshot: &EspSnapshot,
    wanted: &Wanted<'_>,
    protected: &BTreeSet<u32>,
    plan: &mut Plan,
) {
    let protected: BTreeSet<String> = protected.iter().map(|n| entry::key(*n, false)).collect();
    plan.entry_removals = snapshot
        .duplicates
        .iter()
        .map(|f| layout::entry_path(f))
        .collect();
    let mut refs = snapshot.foreign_refs.clone();
    let add_refs = |text: &str, refs: &mut BTreeSet<String>| {
        refs.extend(
            entry::referenced_files(text)
                .iter()
                .map(|r| r.to_ascii_lowercase()),
        );
    };
    for (key, f) in &snapshot.ours {
        if wanted.entries.contains_key(key) {
            continue;
        }
        if protected.contains(key) {
            add_refs(&String::from_utf8_lossy(&f.content), &mut refs);
            continue;
        }
        plan.entry_removals.push(layout::entry_path(&f.file));
    }
    for w in wanted.entries.values() {
        add_refs(&w.content, &mut refs);
    }
    plan.entry_removals
        .extend(snapshot.leftovers.iter().cloned());
    if snapshot.unread_foreign.is_empty() {
        plan.file_removals = snapshot
            .files
            .iter()
            .filter(|(lower, _)| !refs.contains(*lower))
            .map(|(_, f)| f.path.clone())
            .collect();
    }
}

/// Count clusters; refuse when the writes do not fit even after the
/// removals, remove first when they fit only after them.
fn check_space(
    snapshot: &EspSnapshot,
    gens: &[GenInput],
    selected: &BTreeSet<u32>,
    keep: &[u32],
    wanted: &Wanted<'_>,
    plan: &mut Plan,
) -> Result<(), EspError> {
    let space = snapshot.space;
    let mut need: u64 = plan
        .file_writes
        .iter()
        .map(|w| w.len)
        .chain(plan.small_writes.iter().map(|w| w.data.len() as u64))
        .chain(plan.entry_writes.iter().map(|w| w.content.len() as u64))
        .chain(plan.loader_conf.iter().map(|c| c.len() as u64))
        .map(|len| space.clusters(len))
        .sum();
    if plan.writes_anything() {
        // New directories and directory growth: one cluster each.
        need += 6;
    }
    let reclaim: u64 = plan
        .entry_removals
        .iter()
        .map(|p| space.clusters(snapshot.entry_size(p)))
        .chain(
            plan.file_removals
                .iter()
                .map(|p| space.clusters(snapshot.file(p).map_or(0, |f| f.size))),
        )
        .sum();
    plan.need = need;
    plan.reclaim = reclaim;
    plan.clean_first = need > space.free_clusters;
    if need <= space.free_clusters + reclaim {
        return Ok(());
    }
    let missing = need - space.free_clusters - reclaim;
    // Which generations, oldest first, free enough when deleted: each frees
    // its entry and the files no other selected generation uses.
    let mut freed = 0u64;
    let mut victims: Vec<u32> = Vec::new();
    for g in gens
        .iter()
        .filter(|g| selected.contains(&g.number) && !keep.contains(&g.number))
    {
        let own: u64 = wanted
            .users
            .iter()
            .filter(|(_, users)| users.len() == 1 && users.contains(&g.number))
            .map(|(path, _)| space.clusters(wanted.files.get(path).map_or(0, |f| f.len)))
            .sum();
        freed += 1 + own;
        victims.push(g.number);
        if freed >= missing {
            break;
        }
    }
    Err(EspError::Full(Box::new(Full {
        esp: snapshot.esp.clone(),
        need,
        missing_clusters: missing,
        cluster_size: space.cluster_size,
        free_clusters: space.free_clusters,
        delete: if freed >= missing {
            victims
        } else {
            Vec::new()
        },
        freed_clusters: freed,
    })))
}
