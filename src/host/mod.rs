//! Effects on, and facts about, the running machine (or the system below
//! `--root`): EFI variables, what genboot-init recorded about this boot,
//! the machine id, the mount table, where the ESP is. Paths below `--root` are resolved
//! inside it ([`crate::state::resolve_in_root`]): a link in the tree never
//! leads here to the host's files.

pub mod boot_entry;
pub mod booted;
pub mod efivars;
pub mod esp;
pub mod machine_id;
pub mod mounts;

use crate::state::State;
use std::path::Path;

/// Read a small file of the system below `--root`, resolved inside it;
/// `None` when it is missing or unreadable (these files are facts the
/// system may not have).
fn read_in_root(state: &State, path: &str) -> Option<String> {
    std::fs::read_to_string(state.in_root(Path::new(path)).ok()?).ok()
}
