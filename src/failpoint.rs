//! Named failpoints on the real code path. A test sets
//! `GENBOOT_FAILPOINTS=name[,name...]` and the step with that name fails as
//! if the machine lost power there: the process exits at once, nothing after
//! the point runs and nothing is cleaned up. `name=error` makes the step
//! return an error instead (exercises the error path and its clean-up).
//!
//! Every write step of the store, the profile and the ESP installer calls
//! [`hit`] with its name; `genboot failpoints` lists them.

use std::io;

/// Every failpoint, so tests can iterate them and the CLI can list them.
pub const ALL: &[&str] = &[
    "store::staged",
    "store::hashed",
    "store::synced",
    "store::renamed",
    "profile::link-written",
    "profile::link-renamed",
    "profile::current-written",
    "profile::current-renamed",
    "esp::file-written",
    "esp::file-renamed",
    "esp::entry-written",
    "esp::entry-renamed",
    "esp::entry-counter-reset",
    "esp::loader-conf-written",
    "esp::loader-conf-renamed",
    "esp::entry-removed",
    "esp::file-removed",
    "esp::bless-renamed",
    "tree::objects-written",
    "tree::objects-synced",
    "tree::objects-placed",
    "tree::staged",
    "tree::uid-map-saved",
    "tree::synced",
    "tree::renamed",
];

/// Fail here if the environment asks for it.
pub fn hit(name: &str) -> io::Result<()> {
    let Ok(list) = std::env::var("GENBOOT_FAILPOINTS") else {
        return Ok(());
    };
    for item in list.split(',') {
        let (point, action) = item.split_once('=').unwrap_or((item, "exit"));
        if point != name {
            continue;
        }
        if action == "error" {
            return Err(io::Error::other(format!(
                "failpoint {name} injected an error"
            )));
        }
        eprintln!("genboot: failpoint {name}: stopping as if power was lost");
        std::process::exit(99);
    }
    Ok(())
}
