//! Carry out a [`Plan`] on an ESP, each write step followed by its
//! failpoint:
//! 1. (when the plan says so) remove what nothing needs, to make room;
//! 2. write kernels, initrds and the loader (temporary name, flush, rename);
//! 3. write entries (same way; a changed entry first gets its fresh name,
//!    then its new content, so `x.conf` never sits beside `x+3.conf`);
//! 4. write `loader.conf`;
//! 5. remove entries and files nothing references.
//!
//! A stop at any point leaves the previous default bootable: its entry and
//! files are only removed after `loader.conf` names another. Nothing is
//! cleaned up on an error either; the next run removes the leftovers.

use super::layout::{self, LOADER_CONF};
use super::plan::{EntryAction, Plan};
use super::{Esp, EspError};
use crate::failpoint::{self, FailPoint};
use std::io::Read;

/// What [`apply`] wrote and removed (ESP paths, in order).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub written: Vec<String>,
    pub removed: Vec<String>,
}

/// Apply `plan` to `esp` (see the module documentation).
pub fn apply(plan: &Plan, esp: &mut dyn Esp) -> Result<Applied, EspError> {
    let mut done = Applied::default();
    if plan.clean_first {
        remove_unneeded(plan, esp, &mut done)?;
    }
    for d in &plan.dirs {
        esp.create_dir_all(d)?;
    }
    for w in &plan.file_writes {
        let mut f = std::fs::File::open(&w.source).map_err(|cause| EspError::Input {
            path: w.source.clone(),
            cause,
        })?;
        write_then_rename(esp, &w.path, &mut f, FILE)?;
        done.written.push(w.path.clone());
    }
    for w in &plan.small_writes {
        write_then_rename(esp, &w.path, &mut &w.data[..], FILE)?;
        done.written.push(w.path.clone());
    }
    for w in &plan.entry_writes {
        let path = match &w.action {
            EntryAction::New { file } => layout::entry_path(file),
            EntryAction::Replace { old, new } => {
                // First give the old file its fresh name (new counter, old
                // content), then replace the content under that name: one
                // file for the entry at every moment, and a crash in
                // between leaves a file whose content differs, so the next
                // run replaces it again (the other order would keep the old
                // counter on the new content).
                let (old_path, new_path) = (layout::entry_path(old), layout::entry_path(new));
                if new != old {
                    esp.rename(&old_path, &new_path)?;
                    failpoint::hit(FailPoint::EspEntryCounterReset)
                        .map_err(fp_err(esp, &new_path))?;
                }
                new_path
            }
        };
        write_then_rename(esp, &path, &mut w.content.as_bytes(), ENTRY)?;
        done.written.push(path);
    }
    if let Some(conf) = &plan.loader_conf {
        write_then_rename(esp, LOADER_CONF, &mut conf.as_bytes(), CONF)?;
        done.written.push(LOADER_CONF.into());
    }
    if !plan.clean_first {
        remove_unneeded(plan, esp, &mut done)?;
    }
    Ok(done)
}

fn remove_unneeded(plan: &Plan, esp: &mut dyn Esp, done: &mut Applied) -> Result<(), EspError> {
    for p in &plan.entry_removals {
        esp.remove(p)?;
        failpoint::hit(FailPoint::EspEntryRemoved).map_err(fp_err(esp, p))?;
        done.removed.push(p.clone());
    }
    for p in &plan.file_removals {
        esp.remove(p)?;
        failpoint::hit(FailPoint::EspFileRemoved).map_err(fp_err(esp, p))?;
        done.removed.push(p.clone());
    }
    Ok(())
}

/// The error a failpoint's injected failure becomes.
pub(crate) fn fp_err<'a>(
    esp: &'a dyn Esp,
    path: &'a str,
) -> impl FnOnce(std::io::Error) -> EspError + 'a {
    move |cause| EspError::Io {
        op: "write",
        path: path.to_string(),
        esp: esp.describe(),
        cause,
    }
}

/// The failpoints after the write and after the rename of one kind of file.
type Steps = (FailPoint, FailPoint);
const FILE: Steps = (FailPoint::EspFileWritten, FailPoint::EspFileRenamed);
const ENTRY: Steps = (FailPoint::EspEntryWritten, FailPoint::EspEntryRenamed);
const CONF: Steps = (
    FailPoint::EspLoaderConfWritten,
    FailPoint::EspLoaderConfRenamed,
);

/// Temporary name, durable write, rename over the final name.
fn write_then_rename(
    esp: &mut dyn Esp,
    path: &str,
    data: &mut dyn Read,
    (written, renamed): Steps,
) -> Result<(), EspError> {
    let tmp = layout::tmp_path(path);
    esp.write_file(&tmp, data)?;
    failpoint::hit(written).map_err(fp_err(esp, &tmp))?;
    esp.rename(&tmp, path)?;
    failpoint::hit(renamed).map_err(fp_err(esp, path))?;
    Ok(())
}
