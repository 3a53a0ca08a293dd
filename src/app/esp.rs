//! The boot menu and the firmware: install, bless, set-oneshot, status.

use super::settings::Settings;
use super::{AppError, Session};
use super::{BootEntry, Event};
use crate::esp::bless::Blessed;
use crate::esp::entry::{self, EntryName};
use crate::esp::layout::{ENTRIES_DIR, LOADER_CONF};
use crate::esp::InstallReport;
use crate::hint::Hint;
use crate::host::{boot_entry, booted, efivars};
use crate::profile::{Profile, ProfileError};
use std::path::Path;

/// `genboot install`: write the boot menu for the profile's generations
/// (and systemd-boot from `loader`, when given: then, on a machine booted
/// through EFI whose ESP is mounted, also a firmware boot entry for it,
/// first in `BootOrder`, as `bootctl install` does).
pub fn install(s: &Session, loader: Option<&Path>) -> anyhow::Result<InstallReport> {
    let settings = Settings::load(&s.state)?;
    let locked = s.lock()?;
    let esp = s.require_esp(settings.esp.as_deref())?;
    let mounted = esp.mount_point().map(Path::to_path_buf);
    let report = locked.install_to(esp, &settings, loader)?;
    if loader.is_some() {
        match mounted {
            Some(dir) => register_loader(s, &dir)?,
            None => s.observer.event(Event::BootEntry(BootEntry::Skipped(
                "the ESP is inside a disk image: the firmware that boots it has its own variables",
            ))),
        }
    }
    Ok(report)
}

/// A firmware boot entry for systemd-boot on the ESP mounted at `dir`,
/// first in `BootOrder` (when this machine was booted through EFI).
fn register_loader(s: &Session, dir: &Path) -> anyhow::Result<()> {
    let vars = efivars::dir(&s.state)?;
    let efi = vars.is_dir()
        && std::fs::read_dir(&vars).is_ok_and(|mut d| {
            d.any(|e| {
                e.is_ok_and(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .ends_with(boot_entry::GLOBAL_GUID)
                })
            })
        });
    if !efi {
        s.observer.event(Event::BootEntry(BootEntry::Skipped(
            "this machine was not booted through EFI (no boot variables in efivarfs)",
        )));
        return Ok(());
    }
    let mounts = crate::host::mounts::mounts();
    let part = crate::host::esp::partition_at(&s.state, &mounts, dir).map_err(|why| {
        AppError::EspPartition {
            esp: dir.to_path_buf(),
            why,
        }
    })?;
    let uuid = match &part.partuuid {
        Some(u) => uuid::Uuid::parse_str(u).map_err(|e| AppError::EspPartition {
            esp: dir.to_path_buf(),
            why: format!("PARTUUID {u}: {e}"),
        })?,
        None => {
            // No udev link: the disk's own GPT says.
            let bad = |why: String| AppError::EspPartition {
                esp: dir.to_path_buf(),
                why,
            };
            let f = std::fs::File::open(&part.disk)
                .map_err(|e| bad(format!("{}: {e}", part.disk.display())))?;
            let (uuid, first) = crate::gpt::partition_guid(&f, part.number)
                .map_err(|e| bad(format!("{}: {e}", part.disk.display())))?;
            if first != part.start {
                return Err(bad(format!(
                    "the GPT of {} puts partition {} at sector {first}, the kernel at {}",
                    part.disk.display(),
                    part.number,
                    part.start
                ))
                .into());
            }
            uuid
        }
    };
    let p = boot_entry::Partition {
        number: part.number,
        start: part.start,
        size: part.size,
        uuid,
    };
    let r = boot_entry::register(&vars, &p, crate::esp::layout::LOADER_PATHS[0])?;
    s.observer
        .event(Event::BootEntry(BootEntry::Registered(&r)));
    Ok(())
}

/// `genboot bless`: the booted entry loses its boot counter. Under the
/// profile lock (it changes the ESP); blessing an entry that has no
/// counter (any more) is success.
pub fn bless(s: &Session) -> anyhow::Result<Blessed> {
    let settings = Settings::load(&s.state)?;
    let _locked = s.lock()?;
    let mut esp = s.require_esp(settings.esp.as_deref())?;
    // systemd-boot says which file it booted, counter included.
    let vars = efivars::dir(&s.state)?;
    let file = efivars::booted_entry_file(&vars);
    let generation = s.booted().generation;
    if file.is_none() && generation.is_none() {
        return Err(AppError::UnknownBooted {
            var: efivars::var(&vars, "LoaderBootCountPath"),
            booted: s.state.root.join(booted::BOOTED.trim_start_matches('/')),
        }
        .into());
    }
    let result = crate::esp::bless(esp.as_mut(), generation, file.as_deref())?;
    esp.close()?;
    Ok(result)
}

/// `genboot set-oneshot N`: boot generation `n` once, at the next boot.
/// systemd-boot compares `LoaderEntryOneShot` with the entry's whole file
/// name, counter included, so the variable gets the file as it is on the
/// ESP now (`genboot-3+2-1.conf`); returns that name.
pub fn set_oneshot(s: &Session, n: u32) -> anyhow::Result<String> {
    let profile = Profile::new(&s.state);
    if !profile.generations()?.iter().any(|g| g.number == n) {
        return Err(ProfileError::NoSuchGeneration(n).into());
    }
    let dir = efivars::dir(&s.state)?;
    if !dir.is_dir() {
        return Err(AppError::NotEfi { dir, number: n }.into());
    }
    let settings = Settings::load(&s.state)?;
    let mut esp = match s.open_esp(settings.esp.as_deref(), false)? {
        Some(esp) => esp,
        None => return Err(s.no_esp().into()),
    };
    let file = crate::esp::entry_file(esp.as_mut(), n)?;
    efivars::write_string(&dir, "LoaderEntryOneShot", &file)?;
    Ok(file)
}

/// One entry on the ESP, for `status`.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryStatus {
    pub file: String,
    pub generation: u32,
    pub recovery: bool,
    pub tries_left: Option<u32>,
    pub tries_done: Option<u32>,
}

/// What `status` shows.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub booted: Option<u32>,
    pub booted_path: Option<String>,
    pub current: Option<u32>,
    pub esp: Option<String>,
    /// Why no ESP was found, and what to do (when `esp` is `None`).
    pub esp_missing: Option<String>,
    pub default_entry: Option<String>,
    /// The entry file `default_entry` picks (as systemd-boot matches it).
    pub default_file: Option<String>,
    pub entries: Vec<EntryStatus>,
}

/// `genboot status`: the booted and current generation, and the ESP's
/// entries. An ESP that is given or configured but cannot be read is an
/// error (not "none found").
pub fn status(s: &Session) -> anyhow::Result<Status> {
    let profile = Profile::new(&s.state);
    let settings = Settings::load(&s.state)?;
    let booted = s.booted();
    let mut st = Status {
        booted: booted.generation,
        booted_path: booted.path,
        current: profile.current_number()?,
        esp: None,
        esp_missing: None,
        default_entry: None,
        default_file: None,
        entries: Vec::new(),
    };
    let Some(mut e) = s.open_esp(settings.esp.as_deref(), false)? else {
        st.esp_missing = Some(s.no_esp().with_hint());
        return Ok(st);
    };
    st.esp = Some(e.describe());
    st.default_entry = e
        .read(LOADER_CONF)?
        .and_then(|d| entry::field(&String::from_utf8_lossy(&d), "default").map(str::to_string));
    let files = e.list(ENTRIES_DIR)?;
    st.default_file = st
        .default_entry
        .as_deref()
        .and_then(|p| files.iter().find(|f| entry::default_matches(p, f)).cloned());
    for f in files {
        if let Some(n) = EntryName::parse(&f) {
            st.entries.push(EntryStatus {
                file: f.clone(),
                generation: n.generation,
                recovery: n.recovery,
                tries_left: n.counter.map(|c| c.left),
                tries_done: n.counter.and_then(|c| c.done),
            });
        }
    }
    Ok(st)
}
