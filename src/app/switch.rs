//! `build` and `switch`: a configuration becomes a generation in the store,
//! and (`switch`) the profile's new current generation, installed.

use super::{Event, Locked, Session};
use crate::config::SystemConfig;
use crate::generation::{self, Built};
use crate::store::{LockKind, Store, StoreLock};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// `genboot build`: build the generation for `config`; its store path.
pub fn build(s: &Session, config: &Path) -> anyhow::Result<PathBuf> {
    let cfg = SystemConfig::load(config)?;
    let store = Store::open(&s.state)?;
    let store_lock = store.lock(LockKind::Shared, s.wait())?;
    let built = generation::build(&store, &s.state.dir, &cfg, &store_lock, s.notes())
        .with_context(|| format!("building {}", config.display()))?;
    Ok(store.path(&built.generation))
}

/// What `switch` did.
#[derive(Debug)]
pub struct Switched {
    pub number: u32,
    /// A new generation (else it was current already).
    pub new: bool,
    /// The generation's store path.
    pub path: PathBuf,
}

/// Build `cfg` and make it the current generation (unless it is already):
/// the part `switch` and `image` share. Tells [`Event::Added`].
pub(super) fn build_and_add(
    locked: &Locked,
    store: &Store,
    store_lock: &StoreLock,
    config: &Path,
    cfg: &SystemConfig,
) -> anyhow::Result<(u32, bool, Built)> {
    let s = locked.session;
    let built = generation::build(store, &s.state.dir, cfg, store_lock, s.notes())
        .with_context(|| format!("building {}", config.display()))?;
    let (number, new) = locked.profile.add(&built.generation, &locked.lock)?;
    s.observer.event(Event::Added {
        number,
        new,
        generation: &built.generation,
    });
    Ok((number, new, built))
}

/// `genboot switch`: build, make it current, install the boot menu (when
/// the install fails, the profile is put back).
pub fn switch(s: &Session, config: &Path) -> anyhow::Result<Switched> {
    let cfg = SystemConfig::load(config)?;
    // A missing or refused ESP fails before anything is built (an image
    // is checked when it is written).
    if s.target.image.is_none() {
        s.open_esp(cfg.boot.esp.as_deref(), false)?;
    }
    let store = Store::open(&s.state)?;
    let locked = s.lock()?;
    let store_lock = store.lock(LockKind::Shared, s.wait())?;
    let before = locked.profile.generations()?;
    let (number, new, built) = build_and_add(&locked, &store, &store_lock, config, &cfg)?;
    locked.reconcile(&before, Some(&cfg.boot))?;
    Ok(Switched {
        number,
        new,
        path: store.path(&built.generation),
    })
}
