//! The profile's generations: list, rollback, set-default, delete, gc,
//! verify. Every change is followed by an install (see
//! [`Locked::reconcile`](super::Locked::reconcile)).

use super::settings::Settings;
use super::{Change, Event, Session};
use crate::esp::check::Checked;
use crate::gc::{self, Policy};
use crate::generation::bootjson::BootJson;
use crate::hint::Hint;
use crate::profile::{Generation, Profile};
use crate::store::{LockKind, Mismatch, Store, StorePath};
use crate::tree::{self, Objects};
use anyhow::Context;
use std::time::SystemTime;

/// What `list` shows about one generation.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListRow {
    pub number: u32,
    /// `YYYY-MM-DD HH:MM:SS` (UTC).
    pub date: String,
    pub timestamp: u64,
    pub label: String,
    pub kernel_release: String,
    pub current: bool,
    pub path: String,
}

fn row(store: &Store, g: &Generation) -> ListRow {
    let boot = BootJson::read(&store.path(&g.target).join("boot.json")).ok();
    let ts = crate::units::unix_secs(g.date);
    ListRow {
        number: g.number,
        date: crate::units::format_date(ts),
        timestamp: ts,
        label: boot.as_ref().map_or("(unreadable boot.json)".into(), |b| {
            b.bootspec.label.clone()
        }),
        kernel_release: boot
            .as_ref()
            .map_or("?".into(), |b| b.genboot.kernel_release.clone()),
        current: g.current,
        path: g.target.boot_path(),
    }
}

/// `genboot list`: the generations, oldest first.
pub fn list(s: &Session) -> anyhow::Result<Vec<ListRow>> {
    let store = Store::open_read_only(&s.state);
    let gens = Profile::new(&s.state).generations()?;
    Ok(gens.iter().map(|g| row(&store, g)).collect())
}

/// `genboot rollback`: the generation before the current one becomes
/// current; its number.
pub fn rollback(s: &Session) -> anyhow::Result<u32> {
    let locked = s.lock()?;
    let before = locked.profile.generations()?;
    let n = locked.profile.rollback(&locked.lock)?;
    s.observer.event(Event::Changed(Change::RolledBack(n)));
    locked.reconcile(&before, None)?;
    Ok(n)
}

/// `genboot set-default N`.
pub fn set_default(s: &Session, n: u32) -> anyhow::Result<()> {
    let locked = s.lock()?;
    let before = locked.profile.generations()?;
    locked.profile.set_current(n, &locked.lock)?;
    s.observer.event(Event::Changed(Change::SetCurrent(n)));
    locked.reconcile(&before, None)
}

/// `genboot delete N…` (never the current one, nor the booted one).
pub fn delete(s: &Session, numbers: &[u32]) -> anyhow::Result<()> {
    let locked = s.lock()?;
    let before = locked.profile.generations()?;
    let booted = s.booted().generation;
    locked.profile.delete(numbers, booted, &locked.lock)?;
    s.observer.event(Event::Changed(Change::Deleted(numbers)));
    locked.reconcile(&before, None)
}

/// What `gc` deleted.
#[derive(Debug)]
pub struct Collected {
    pub generations: Vec<u32>,
    pub objects: Vec<StorePath>,
    pub bytes: u64,
    /// Content objects of trees (`store/objects/`), and their bytes.
    pub contents: u64,
    pub content_bytes: u64,
}

/// `genboot gc`: delete generations by `policy` (never the current or the
/// booted one), update the boot menu, then delete every store object no
/// generation (nor the running system) reaches.
pub fn gc(s: &Session, policy: Policy) -> anyhow::Result<Collected> {
    let store = Store::open(&s.state)?;
    let locked = s.lock()?;
    // Alone in the store: no build's staging directory or fresh object goes.
    let store_lock = store.lock(LockKind::Exclusive, s.wait())?;
    // The running system: its generation stays in the profile and its
    // object (with everything it reaches) in the store, whatever the policy.
    let booted = s.booted();
    let protect: Vec<u32> = booted.generation.into_iter().collect();
    let victims = gc::select(&locked.profile, policy, &protect, SystemTime::now())?;
    let before = locked.profile.generations()?;
    if !victims.is_empty() {
        locked
            .profile
            .delete(&victims, booted.generation, &locked.lock)?;
    }
    // The boot menu drops the deleted generations before their files go;
    // if it cannot, the profile is put back and nothing is deleted.
    locked
        .reconcile(&before, None)
        .context("gc deleted nothing")?;
    let report = gc::collect(
        &store,
        &locked.profile,
        booted.object.as_ref(),
        &locked.lock,
        &store_lock,
    )?;
    Ok(Collected {
        generations: victims,
        objects: report.objects,
        bytes: report.bytes,
        contents: report.contents,
        content_bytes: report.content_bytes,
    })
}

/// How the ESP compared with the store.
#[derive(Debug)]
pub enum EspVerified {
    /// No ESP given, configured or mounted.
    NotFound,
    /// The profile could not be read into installer input: why.
    NotChecked(String),
    Checked {
        esp: String,
        checked: Checked,
    },
}

/// What `verify` found.
#[derive(Debug)]
pub struct Verified {
    pub objects: usize,
    /// Content objects of trees checked.
    pub contents: usize,
    pub store: Vec<Mismatch>,
    /// The ESP's part, or why it could not be checked at all (after the
    /// store's part, which stands).
    pub esp: anyhow::Result<EspVerified>,
}

impl EspVerified {
    /// Nothing is wrong.
    pub fn ok(&self) -> bool {
        match self {
            EspVerified::NotFound => true,
            EspVerified::NotChecked(_) => false,
            EspVerified::Checked { checked, .. } => checked.problems.is_empty(),
        }
    }
}

/// `genboot verify`: re-hash every store object (a tree object against its
/// manifest, [`tree::verify_tree`]) and every content object once, check
/// modes and owners, and compare the ESP's kernels and initrds with the
/// store (read-only).
pub fn verify(s: &Session) -> anyhow::Result<Verified> {
    let store = Store::open_read_only(&s.state);
    // Shared with builds; `gc` does not delete objects under it.
    let _store_lock = store.lock_for_reading(s.wait())?;
    let objects = store.objects()?;
    let mut bad = Vec::new();
    for sp in &objects {
        let found = if tree::is_tree(&store, sp) {
            tree::verify_tree(&store, sp).map_err(|e| e.with_hint())
        } else {
            store
                .verify_object(sp)
                .map(|p| p.into_iter().map(|problem| mismatch(sp, problem)).collect())
                .map_err(|e| e.with_hint())
        };
        match found {
            Ok(list) => bad.extend(list),
            Err(problem) => bad.push(mismatch(sp, problem)),
        }
    }
    let contents = Objects::of(&store);
    bad.extend(contents.verify_all()?);
    Ok(Verified {
        objects: objects.len(),
        contents: contents.list()?.len(),
        store: bad,
        esp: verify_esp(s, &store),
    })
}

fn mismatch(sp: &StorePath, problem: String) -> Mismatch {
    Mismatch {
        object: sp.base_name(),
        problem,
    }
}

fn verify_esp(s: &Session, store: &Store) -> anyhow::Result<EspVerified> {
    let settings = Settings::load(&s.state)?;
    let Some(mut esp) = s.open_esp(settings.esp.as_deref(), false)? else {
        return Ok(EspVerified::NotFound);
    };
    let gens = Profile::new(&s.state).generations()?;
    Ok(match super::esp_inputs(store, &gens) {
        Err(e) => EspVerified::NotChecked(e.with_hint()),
        Ok((inputs, _)) => EspVerified::Checked {
            checked: crate::esp::check::check(esp.as_mut(), &inputs)?,
            esp: esp.describe(),
        },
    })
}
