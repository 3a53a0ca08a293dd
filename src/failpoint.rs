//! Named failpoints on the real code path. A test sets
//! `GENBOOT_FAILPOINTS=name[,name...]` and the step with that name fails as
//! if the machine lost power there: the process exits at once, nothing after
//! the point runs and nothing is cleaned up. `name=error` makes the step
//! return an error instead (exercises the error path and its clean-up).
//! `name=wait:FILE` holds the step until FILE exists, after writing
//! `FILE.reached` (holding the pid): tests use it to stop one process at a
//! step while another one runs, without sleeping.
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
        if let Some(file) = action.strip_prefix("wait:") {
            wait_for(name, std::path::Path::new(file))?;
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

/// Announce that `name` was reached, then wait (bounded) until `file` exists.
fn wait_for(name: &str, file: &std::path::Path) -> io::Result<()> {
    let mut reached = file.as_os_str().to_owned();
    reached.push(".reached");
    std::fs::write(&reached, std::process::id().to_string())?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !file.exists() {
        if std::time::Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "failpoint {name}: {} did not appear within 300 s",
                file.display()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}
