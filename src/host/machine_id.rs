//! `/etc/machine-id`, which boot entries carry so systemd-boot and
//! `bootctl` can tell which installation an entry belongs to.

use crate::state::State;

/// The machine id below `--root` (32 lower-case hex digits), if it has one.
pub fn machine_id(state: &State) -> Option<String> {
    let text = super::read_in_root(state, "/etc/machine-id")?;
    let id = text.trim();
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}
