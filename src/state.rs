//! Where genboot keeps its state: `<root>/var/lib/genboot/{store,profiles}`.

use std::path::{Path, PathBuf};

/// The state directory as the booted system sees it.
pub const STATE_DIR: &str = "/var/lib/genboot";
/// The store as the booted system sees it; store paths in `boot.json`,
/// entries and symlinks use this form.
pub const STORE_DIR: &str = "/var/lib/genboot/store";

#[derive(Debug, Clone)]
pub struct State {
    /// The system tree genboot works on (`--root`, default `/`).
    pub root: PathBuf,
    /// `<root>/var/lib/genboot`.
    pub dir: PathBuf,
}

impl State {
    pub fn new(root: &Path) -> State {
        State {
            root: root.to_path_buf(),
            dir: root.join(STATE_DIR.trim_start_matches('/')),
        }
    }
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }
    pub fn profiles_dir(&self) -> PathBuf {
        self.dir.join("profiles")
    }
}
