//! `genboot bless`: the booted generation is good, so its entry loses its
//! boot-counting suffix (`genboot-3+1-2.conf` → `genboot-3.conf`) and
//! systemd-boot stops counting tries.

use super::apply::fp_err;
use super::entry::EntryName;
use super::layout::{self, ENTRIES_DIR};
use super::{Esp, EspError};
use crate::failpoint::{self, FailPoint};

/// What [`bless`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blessed {
    /// The entry was renamed to this plain file name.
    Renamed(String),
    /// The entry has no boot counter (any more): nothing to do.
    AlreadyPlain(String),
}

/// Drop the boot-counting suffix of the entry for `generation`, or of the
/// exact file `file` (as systemd-boot reports the booted one, counter
/// included). Blessing twice is fine: when `file` is gone because it was
/// blessed already, its plain name is found instead.
pub fn bless(
    esp: &mut dyn Esp,
    generation: Option<u32>,
    file: Option<&str>,
) -> Result<Blessed, EspError> {
    // The generation `file` names, when the file itself is not there.
    let named = file.and_then(EntryName::parse);
    let listed = esp.list(ENTRIES_DIR)?;
    let exact = file.filter(|f| listed.iter().any(|l| l == f));
    for f in &listed {
        let Some(name) = EntryName::parse(f) else {
            continue;
        };
        let matches = match (file, exact, &named) {
            (None, _, _) => generation == Some(name.generation) && !name.recovery,
            (Some(_), Some(want), _) => want == f,
            (Some(_), None, Some(n)) => {
                n.generation == name.generation && n.recovery == name.recovery
            }
            (Some(_), None, None) => false,
        };
        if !matches {
            continue;
        }
        let plain = EntryName {
            counter: None,
            ..name.clone()
        }
        .file_name();
        if name.counter.is_none() {
            return Ok(Blessed::AlreadyPlain(plain));
        }
        let (from, to) = (layout::entry_path(f), layout::entry_path(&plain));
        esp.rename(&from, &to)?;
        failpoint::hit(FailPoint::EspBlessRenamed).map_err(fp_err(esp, &to))?;
        return Ok(Blessed::Renamed(plain));
    }
    Err(EspError::NoEntry {
        what: match (file, generation) {
            (Some(f), _) => f.to_string(),
            (None, Some(n)) => format!("generation {n}"),
            _ => "the booted generation".into(),
        },
        esp: esp.describe(),
    })
}
