//! `/run/genboot/booted`: genboot-init writes the store path of the
//! generation it activated there (first line), so stage 2 knows which
//! generation it runs.

use crate::state::State;

/// Where genboot-init records the booted generation.
pub const BOOTED: &str = "/run/genboot/booted";

/// The store path genboot-init recorded, if any (`/var/lib/genboot/store/…`).
pub fn booted_path(state: &State) -> Option<String> {
    let text = super::read_in_root(state, BOOTED)?;
    let path = text.lines().next()?.trim();
    (!path.is_empty()).then(|| path.to_string())
}
