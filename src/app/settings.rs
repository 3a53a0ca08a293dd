//! `<state>/esp-settings.json`: the `[boot]` settings the installer uses
//! besides the ESP (`limit`, `timeout`, `esp`), from the configuration of
//! the last `switch`/`image`, so `rollback`, `delete`, `gc` and `install`
//! use them too. Written only under the profile lock (the [`Lock`] token),
//! durably, never through a link.

use crate::config::BootSection;
use crate::fsutil::{self, Durability, OwnFileError};
use crate::profile::Lock;
use crate::state::State;
use std::path::PathBuf;

const FILE: &str = "esp-settings.json";

/// The `[boot]` settings kept between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    pub esp: Option<PathBuf>,
    pub limit: Option<u32>,
    pub timeout: Option<u32>,
}

impl Settings {
    /// The settings a configuration's `[boot]` section gives.
    pub fn from_boot(boot: &BootSection) -> Settings {
        Settings {
            esp: boot.esp.clone(),
            limit: boot.limit,
            timeout: boot.timeout,
        }
    }

    /// The saved settings; a missing or unreadable file gives the defaults,
    /// a symlink in its place is an error (it is never read through).
    pub fn load(state: &State) -> Result<Settings, OwnFileError> {
        let data = fsutil::read_own_file(&state.dir.join(FILE), "settings file")?;
        Ok(data
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_default())
    }

    /// Save them, unless the file already says so; only with the profile
    /// lock held.
    pub fn save(&self, state: &State, _lock: &Lock) -> Result<(), OwnFileError> {
        let path = state.dir.join(FILE);
        let mut data = serde_json::to_vec_pretty(self)
            .map_err(|e| fsutil::IoError::at("encode", &path)(std::io::Error::other(e)))?;
        data.push(b'\n');
        if fsutil::read_own_file(&path, "settings file")
            .ok()
            .flatten()
            .as_deref()
            == Some(&data[..])
        {
            return Ok(());
        }
        Ok(fsutil::replace_file(&path, &data, Durability::Durable)?)
    }
}
