//! `build` and `switch`: a configuration becomes a generation in the store,
//! and (`switch`) the profile's new current generation, installed.

use super::{AppError, Event, Locked, Session};
use crate::config::{KernelChoice, Place, SystemConfig};
use crate::generation::{self, Built};
use crate::notes::Note;
use crate::store::{LockKind, Store, StoreLock};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// The system's configuration, below `--root`, used when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/genboot/system.toml";

/// The configuration file `--config` names, else [`DEFAULT_CONFIG`] below
/// `--root`, which must exist.
pub fn config_path(s: &Session, config: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(c) = config {
        return Ok(c.to_path_buf());
    }
    let path = s.state.in_root(Path::new(DEFAULT_CONFIG))?;
    if !path.exists() {
        return Err(AppError::NoConfig(path).into());
    }
    Ok(path)
}

/// Read and check the configuration at `path`. One inside the tree below
/// `--root` describes that system: its paths are read inside the tree
/// ([`Place::in_root`]); one outside it names paths on this machine.
/// Installed kernels are looked for below `--root` either way; the one
/// chosen is told.
pub fn load_config(s: &Session, path: &Path) -> anyhow::Result<SystemConfig> {
    let in_root = std::fs::canonicalize(path).is_ok_and(|p| p.starts_with(&s.state.root));
    let place = Place {
        root: &s.state.root,
        in_root,
    };
    let cfg = SystemConfig::load_in(path, place)?;
    if cfg.initrd.autodetect && s.state.root != Path::new("/") {
        return Err(AppError::AutodetectElsewhere {
            config: path.to_path_buf(),
            root: s.state.root.clone(),
        }
        .into());
    }
    if let KernelChoice::Installed {
        files,
        pattern,
        release,
        matching,
    } = &cfg.kernel.chosen
    {
        let which = if pattern == crate::config::NEWEST {
            "the newest installed kernel".to_string()
        } else {
            format!("the newest installed kernel matching {pattern:?}")
        };
        s.notes().note(Note::Info(&format!(
            "kernel {release}: {which} (of {}; {}, {})",
            matching.join(", "),
            files.image.display(),
            files.modules.display()
        )));
    }
    Ok(cfg)
}

/// `genboot build`: build the generation for `config`; its store path.
pub fn build(s: &Session, config: &Path) -> anyhow::Result<PathBuf> {
    let cfg = load_config(s, config)?;
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

/// Build `cfg`, prepare its `/etc` layer from the running (else current)
/// generation's ([`super::etc::prepare`]), and make it the current
/// generation (unless it is already): the part `switch` and `image` share.
/// Tells [`Event::Added`].
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
    // A generation with a tree gets its /etc layer before it becomes
    // current (an existing one is kept): docs/trees.md.
    super::etc::prepare(locked, store, &built.generation, built.tree.as_ref())
        .context("preparing the new generation's /etc")?;
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
    let cfg = load_config(s, config)?;
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
