//! The use cases of genboot, one function each: what the CLI (and tests)
//! call. They return values and print nothing.

use crate::esp;
use crate::profile::Generation;
use crate::store::Store;
use std::path::Path;

/// `YYYY-MM-DD` of a generation, for its entry.
fn gen_date(g: &Generation) -> String {
    crate::units::format_date(crate::units::unix_secs(g.date))[..10].to_string()
}

/// The systemd-boot binary to install: a regular file of at most 64 MiB
/// (systemd-boot is about 100 KB).
pub fn read_loader(path: &Path) -> Result<Vec<u8>, esp::EspError> {
    use crate::modules::input::{read_regular, InputError};
    read_regular(path, true, 64 << 20).map_err(|e| esp::EspError::Input {
        path: path.to_path_buf(),
        cause: match e {
            InputError::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        },
    })
}

/// Build the installer's input from the profile. A generation whose
/// `boot.json` cannot be read is skipped with a warning (one bad generation
/// must not block all installs) — unless it is the current one.
pub fn esp_inputs(
    store: &Store,
    gens: &[Generation],
) -> Result<(Vec<esp::GenInput>, Vec<String>), esp::EspError> {
    use crate::hint::Hint;
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for g in gens {
        match gen_input(store, g, gen_date(g)) {
            Ok(i) => out.push(i),
            Err(e) if !g.current => warnings.push(format!(
                "generation {} is left out of the boot menu: {}",
                g.number,
                e.with_hint()
            )),
            Err(e) => return Err(e),
        }
    }
    Ok((out, warnings))
}

fn gen_input(store: &Store, g: &Generation, date: String) -> Result<esp::GenInput, esp::EspError> {
    use crate::hint::Hint;
    let bad = |what: String| esp::EspError::Generation {
        generation: g.number,
        what,
    };
    let boot = crate::bootspec::BootJson::read(&store.path(&g.target).join("boot.json"))
        .map_err(|e| bad(e.with_hint()))?;
    let resolve = |p: &str| -> Result<esp::StoreFile, esp::EspError> {
        let (sp, host) = store
            .resolve_boot_path(p)
            .ok_or_else(|| bad(format!("{p} is not a path in the store")))?;
        if !host.is_file() {
            return Err(bad(format!("{} is missing", host.display())));
        }
        esp::StoreFile::at(sp.hash, host)
    };
    let kernel = resolve(&boot.bootspec.kernel)?;
    let initrd = boot.bootspec.initrd.as_deref().map(resolve).transpose()?;
    let mut options = boot.bootspec.kernel_params.join(" ");
    if !options.is_empty() {
        options.push(' ');
    }
    options.push_str(&format!("init={}", boot.bootspec.init));
    Ok(esp::GenInput {
        number: g.number,
        current: g.current,
        date,
        label: boot.bootspec.label,
        kernel_release: boot.genboot.kernel_release,
        kernel,
        initrd,
        options,
        tries: boot.genboot.tries,
    })
}
