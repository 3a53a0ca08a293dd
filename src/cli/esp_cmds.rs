//! Verbs that touch the ESP or the firmware: install, image, bless,
//! set-oneshot, status; and the install that follows every profile change.
//!
//! Which ESP: `--image FILE`, else `--esp PATH`, else `[boot] esp` of the
//! configuration (below `--root`), else a FAT file system mounted at
//! `/efi`, `/boot` or `/boot/efi` below `--root`. Paths below `--root` are
//! resolved inside it ([`crate::state::resolve_in_root`]): a link in the
//! tree never leads to the host's ESP.
//!
//! The `[boot]` settings the installer uses besides the ESP (`limit`,
//! `timeout`) come from the configuration of the last `switch`/`image`;
//! they are kept in `<state>/esp-settings.json` so `rollback`, `delete`,
//! `gc` and `install` use them too.

use super::Ctx;
use crate::config::{BootSection, SystemConfig};
use crate::esp::dir::DirEsp;
use crate::esp::image::ImageEsp;
use crate::esp::{self, Esp, InstallOptions};
use crate::profile::{Generation, Lock, Profile};
use crate::store::{Store, StorePath};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The systemd-boot vendor GUID of `LoaderEntryOneShot` and friends.
const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
const SETTINGS: &str = "esp-settings.json";

/// The `[boot]` settings kept between runs.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Settings {
    esp: Option<PathBuf>,
    limit: Option<u32>,
    timeout: Option<u32>,
}

fn settings_path(ctx: &Ctx) -> PathBuf {
    ctx.state.dir.join(SETTINGS)
}

/// The saved settings; a missing or unreadable file gives the defaults, a
/// symlink in its place is an error (it is never read through).
fn load_settings(ctx: &Ctx) -> anyhow::Result<Settings> {
    let data = crate::fsutil::read_own_file(&settings_path(ctx), "settings file")?;
    Ok(data
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default())
}

fn save_settings(ctx: &Ctx, s: &Settings) -> anyhow::Result<()> {
    let path = settings_path(ctx);
    let mut data = serde_json::to_vec_pretty(s)?;
    data.push(b'\n');
    if crate::fsutil::read_own_file(&path, "settings file")
        .ok()
        .flatten()
        .as_deref()
        == Some(&data[..])
    {
        return Ok(());
    }
    crate::fsutil::replace_file(&path, &data, crate::fsutil::Durability::Durable)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn settings_from(boot: &BootSection) -> Settings {
    Settings {
        esp: boot.esp.clone(),
        limit: boot.limit,
        timeout: boot.timeout,
    }
}

/// Open the ESP the global options, the configuration or the mounts name.
/// `None` when there is none.
fn open_esp(ctx: &Ctx, configured: Option<&Path>) -> anyhow::Result<Option<Box<dyn Esp>>> {
    if let Some(img) = &ctx.image {
        return Ok(Some(Box::new(ImageEsp::open(img, true)?)));
    }
    if let Some(p) = &ctx.esp {
        return Ok(Some(Box::new(DirEsp::open(p)?)));
    }
    if let Some(p) = configured {
        let context = || format!("[boot] esp = {:?} in the configuration", p.display());
        let below = ctx.state.in_root(p).with_context(context)?;
        return Ok(Some(Box::new(DirEsp::open(&below).with_context(context)?)));
    }
    match probe_in_root(&ctx.state, &crate::esp::dir::mounts()) {
        Some(p) => Ok(Some(Box::new(DirEsp::open(&p)?))),
        None => Ok(None),
    }
}

/// A FAT file system mounted at `/efi`, `/boot` or `/boot/efi` below
/// `--root`, each candidate resolved inside it (so `<root>/boot/efi ->
/// /boot/efi` is `<root>/boot/efi`, not the host's ESP).
fn probe_in_root(
    state: &crate::state::State,
    mounts: &[crate::esp::dir::Mount],
) -> Option<PathBuf> {
    ["/efi", "/boot", "/boot/efi"].iter().find_map(|p| {
        let dir = state.in_root(Path::new(p)).ok()?;
        mounts
            .iter()
            .any(|m| m.point == dir && crate::esp::dir::is_fat(&m.fstype))
            .then_some(dir)
    })
}

/// Read a small file of the system below `--root`, resolved inside it.
fn read_in_root(ctx: &Ctx, path: &str) -> Option<String> {
    std::fs::read_to_string(ctx.state.in_root(Path::new(path)).ok()?).ok()
}

fn machine_id(ctx: &Ctx) -> Option<String> {
    let text = read_in_root(ctx, "/etc/machine-id")?;
    let id = text.trim();
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// Reconcile `esp` with the profile.
fn install_into(
    ctx: &Ctx,
    esp: &mut dyn Esp,
    settings: &Settings,
    loader: Option<&Path>,
) -> anyhow::Result<esp::InstallReport> {
    let store = Store::open_read_only(&ctx.state);
    let profile = Profile::new(&ctx.state);
    let gens = profile.generations()?;
    let (inputs, warnings) = crate::app::esp_inputs(&store, &gens)?;
    let unreadable = gens
        .iter()
        .map(|g| g.number)
        .filter(|n| !inputs.iter().any(|i| i.number == *n))
        .collect();
    let opts = InstallOptions {
        unreadable,
        limit: settings.limit,
        timeout: settings.timeout.unwrap_or(0),
        loader: loader.map(crate::app::read_loader).transpose()?,
        machine_id: machine_id(ctx),
        booted: booted_generation(ctx),
    };
    let mut report = esp::install(esp, &inputs, &opts)?;
    report.warnings.splice(0..0, warnings);
    Ok(report)
}

fn print_report(desc: &str, r: &esp::InstallReport) {
    for w in &r.warnings {
        eprintln!("genboot: warning: {w}");
    }
    if r.cleaned_first {
        eprintln!(
            "genboot: the ESP was short of space: removed unused entries and files before writing"
        );
    }
    eprintln!(
        "genboot: ESP {desc}: default generation {}; {} written, {} removed; {} bytes written, {} files touched",
        r.default,
        r.written.len(),
        r.removed.len(),
        r.stats.bytes_written,
        r.stats.files_touched
    );
}

fn run_install(
    ctx: &Ctx,
    mut esp: Box<dyn Esp>,
    settings: &Settings,
    loader: Option<&Path>,
) -> anyhow::Result<esp::InstallReport> {
    let desc = esp.describe();
    for n in esp.notes() {
        eprintln!("genboot: note: {n}");
    }
    let mut report = install_into(ctx, esp.as_mut(), settings, loader)
        .with_context(|| format!("installing the boot menu to {desc}"))?;
    report.stats = esp.close()?;
    print_report(&desc, &report);
    Ok(report)
}

/// Open (read-only) the directory ESP a `switch` to a configuration with
/// `boot` will install to, so a missing or refused ESP fails before
/// anything is built. An image (`--image`) is checked when it is written.
pub(super) fn check_esp(ctx: &Ctx, boot: &BootSection) -> anyhow::Result<()> {
    if ctx.image.is_none() {
        open_esp(ctx, boot.esp.as_deref())?;
    }
    Ok(())
}

/// Called after every profile change (switch, rollback, set-default,
/// delete, gc): install right away when an ESP is configured or given.
/// `boot` is the `[boot]` section of the configuration just switched to;
/// it is saved for later commands once the install worked.
///
/// When the install fails, the profile is put back as `before` (the
/// generations before the change) was, so the command's error changes
/// nothing: NixOS moves the profile first and leaves it moved when the
/// boot loader install fails, which leaves `list` naming a current
/// generation the machine does not boot. The installer's own order (new
/// files, entries, then `loader.conf`, then removals) keeps the ESP booting
/// its previous default when it stops halfway; the next install removes
/// what the failed one wrote.
pub(super) fn follow_profile_change(
    ctx: &Ctx,
    profile: &Profile,
    before: &[Generation],
    lock: &Lock,
    boot: Option<&BootSection>,
) -> anyhow::Result<()> {
    let result = (|| -> anyhow::Result<()> {
        let settings = match boot {
            Some(b) => settings_from(b),
            None => load_settings(ctx)?,
        };
        match open_esp(ctx, settings.esp.as_deref())? {
            Some(esp) => {
                run_install(ctx, esp, &settings, None)?;
            }
            None => eprintln!(
                "genboot: note: no ESP found (no --esp/--image, no [boot] esp, nothing mounted at /efi, /boot, /boot/efi); the boot menu was not updated"
            ),
        }
        Ok(())
    })();
    let Err(e) = result else {
        if let Some(b) = boot {
            if let Err(e) = save_settings(ctx, &settings_from(b)) {
                eprintln!("genboot: warning: the [boot] settings were not saved for later commands: {e:#}");
            }
        }
        return Ok(());
    };
    let was = before
        .iter()
        .find(|g| g.current)
        .map_or("none".to_string(), |g| g.number.to_string());
    let now = profile
        .current_number()
        .ok()
        .flatten()
        .map_or("none".to_string(), |n| n.to_string());
    match profile.restore(before, lock) {
        Ok(()) => Err(e.context(format!(
            "the boot menu could not be updated, so the profile was put back as it was: the current generation is {was} again and the ESP still boots what it booted before (the next install removes anything this attempt wrote there)"
        ))),
        Err(re) => Err(e.context(format!(
            "the boot menu could not be updated, and putting the profile back failed too ({}): the profile says generation {now} is current, but the ESP was not updated\nHint: fix the problem below and run `genboot install`, or run `genboot set-default {was}`",
            crate::hint::Hint::with_hint(&re)
        ))),
    }
}

/// `genboot verify` on the ESP (the one `install` would use, opened
/// read-only): print each problem; how many there were. No ESP found is a
/// note, not a problem.
pub(super) fn verify_esp(ctx: &Ctx) -> anyhow::Result<usize> {
    let settings = load_settings(ctx)?;
    let esp: Option<Box<dyn Esp>> = match &ctx.image {
        Some(img) => Some(Box::new(ImageEsp::open(img, false)?)),
        None => open_esp(ctx, settings.esp.as_deref())?,
    };
    let Some(mut esp) = esp else {
        println!("no ESP found (no --esp/--image, no [boot] esp, nothing mounted at /efi, /boot, /boot/efi); the ESP was not checked");
        return Ok(0);
    };
    let store = Store::open_read_only(&ctx.state);
    let gens = Profile::new(&ctx.state).generations()?;
    let inputs = match crate::app::esp_inputs(&store, &gens) {
        Ok((inputs, _)) => inputs,
        Err(e) => {
            println!(
                "MISMATCH ESP not checked: {}",
                crate::hint::Hint::with_hint(&e)
            );
            return Ok(1);
        }
    };
    let checked = esp::check::check(esp.as_mut(), &inputs)?;
    for p in &checked.problems {
        println!("MISMATCH ESP {}: {}", p.path, p.what);
    }
    println!(
        "{} kernel and initrd file(s) on {} compared with the store, {} problem(s)",
        checked.files,
        esp.describe(),
        checked.problems.len()
    );
    Ok(checked.problems.len())
}

pub(super) fn install(ctx: &Ctx, loader: Option<&Path>) -> anyhow::Result<ExitCode> {
    let settings = load_settings(ctx)?;
    let profile = Profile::new(&ctx.state);
    let _lock = profile.lock(!ctx.no_wait)?;
    let esp = open_esp(ctx, settings.esp.as_deref())?.ok_or_else(|| esp::EspError::NotFound {
        root: ctx.state.root.clone(),
    })?;
    run_install(ctx, esp, &settings, loader)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn image(
    ctx: &Ctx,
    configs: &[PathBuf],
    output: &Path,
    size: &str,
    esp_size_text: &str,
) -> anyhow::Result<ExitCode> {
    let auto = size == "auto";
    let fixed_size = if auto {
        None
    } else {
        Some(crate::units::parse_size(size).context("--size")?)
    };
    let esp_size = crate::units::parse_size(esp_size_text).context("--esp-size")?;
    if let Some(s) = fixed_size {
        crate::disk::layout(s, esp_size)?;
    }
    if esp_size < esp::image::MIN_ESP_BYTES {
        anyhow::bail!(
            "--esp-size {}: an ESP of {} is too small for FAT32\nHint: give --esp-size 40M or more",
            esp_size_text,
            crate::units::human(esp_size)
        );
    }
    if let (Ok(o), Ok(r)) = (
        std::fs::canonicalize(output.parent().unwrap_or(Path::new("."))),
        std::fs::canonicalize(&ctx.state.root),
    ) {
        if o.starts_with(&r) {
            anyhow::bail!(
                "the image {} would be inside the --root tree {} that becomes its root file system\nHint: write the image outside the tree, e.g. -o /tmp/disk.img",
                output.display(),
                r.display()
            );
        }
    }
    // Every configuration is read and checked before anything is built.
    let loaded = configs
        .iter()
        .map(|c| SystemConfig::load(c))
        .collect::<Result<Vec<_>, _>>()?;
    let mut last: Option<SystemConfig> = None;
    {
        let store = Store::open(&ctx.state)?;
        let profile = Profile::new(&ctx.state);
        let lock = profile.lock(!ctx.no_wait)?;
        let store_lock = store.lock(crate::store::LockKind::Shared, !ctx.no_wait)?;
        for (c, cfg) in configs.iter().zip(loaded) {
            let built = crate::build::build(&store, &cfg, &store_lock)
                .with_context(|| format!("building {}", c.display()))?;
            let (n, new) = profile.add(&built.generation, &lock)?;
            eprintln!(
                "genboot: generation {n}{} ({})",
                if new { "" } else { " (already current)" },
                built.generation.base_name()
            );
            last = Some(cfg);
        }
        if profile.current_number()?.is_none() {
            anyhow::bail!("the profile below {} has no generation to put in the image\nHint: pass --config FILE", ctx.state.root.display());
        }
    }
    let settings = match &last {
        Some(cfg) => {
            let s = settings_from(&cfg.boot);
            save_settings(ctx, &s)?;
            s
        }
        None => load_settings(ctx)?,
    };
    // The root file system must hold the whole tree (the store holds every
    // generation's kernel modules): check, or size the image to fit.
    let root_need = crate::disk::root_size_for(&ctx.state.root)?;
    let size = match fixed_size {
        Some(s) => {
            let (_, root) = crate::disk::layout(s, esp_size)?;
            if root.len < root_need {
                anyhow::bail!(
                    "--size {}: the root partition would have {}, but the tree below {} needs about {}\nHint: give --size {}M or more, or leave --size out (auto)",
                    size,
                    crate::units::human(root.len),
                    ctx.state.root.display(),
                    crate::units::human(root_need),
                    (root_need + esp_size + (4 << 20)).div_ceil(1 << 20)
                );
            }
            s
        }
        None => root_need + esp_size + (2 << 20),
    };
    let (esp_part, root_part) = crate::disk::write_gpt(output, size, esp_size)?;
    let file = std::rc::Rc::new(esp::image::open_image(output, true)?);
    esp::image::format(file, esp_part.start, esp_part.len)?;
    let esp = Box::new(ImageEsp::open(output, true)?);
    let loader = Path::new("/usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    if !loader.is_file() {
        anyhow::bail!(
            "systemd-boot is not installed: {} is missing\nHint: apt-get install systemd-boot-efi",
            loader.display()
        );
    }
    run_install(ctx, esp, &settings, Some(loader))?;
    crate::disk::make_root(output, root_part, &ctx.state.root)?;
    eprintln!(
        "genboot: wrote {} ({}): ESP PARTUUID={}, root PARTUUID={} (ext4 UUID={}, LABEL={})",
        output.display(),
        crate::units::human(size),
        crate::disk::ESP_PARTUUID,
        crate::disk::ROOT_PARTUUID,
        crate::disk::ROOT_FS_UUID,
        crate::disk::ROOT_FS_LABEL
    );
    Ok(ExitCode::SUCCESS)
}

fn efivars(ctx: &Ctx) -> anyhow::Result<PathBuf> {
    Ok(ctx.state.in_root(Path::new("/sys/firmware/efi/efivars"))?)
}

/// A UTF-16LE, NUL-terminated EFI string variable's value (after the
/// 4 attribute bytes).
fn read_efi_string(path: &Path) -> Option<String> {
    let data = std::fs::read(path).ok()?;
    let units: Vec<u16> = data
        .get(4..)?
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

pub(super) fn bless(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let settings = load_settings(ctx)?;
    let mut esp =
        open_esp(ctx, settings.esp.as_deref())?.ok_or_else(|| esp::EspError::NotFound {
            root: ctx.state.root.clone(),
        })?;
    // systemd-boot says which file it booted, counter included.
    let var = efivars(ctx)?.join(format!("LoaderBootCountPath-{LOADER_GUID}"));
    let file = read_efi_string(&var)
        .and_then(|p| p.replace('\\', "/").rsplit('/').next().map(str::to_string));
    let generation = booted_generation(ctx);
    if file.is_none() && generation.is_none() {
        anyhow::bail!(
            "cannot tell which generation this machine booted: neither {} nor {} exists\nHint: run `genboot bless` in the booted system (stage 2), after genboot-init has run",
            var.display(),
            ctx.state.root.join("run/genboot/booted").display()
        );
    }
    let result = esp::bless(esp.as_mut(), generation, file.as_deref())?;
    esp.close()?;
    match result {
        esp::bless::Blessed::Renamed(name) => {
            eprintln!("genboot: blessed: boot entry is now {name}")
        }
        esp::bless::Blessed::AlreadyPlain(_) => {
            eprintln!("genboot: the booted entry has no boot counter; nothing to do")
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn set_oneshot(ctx: &Ctx, number: u32) -> anyhow::Result<ExitCode> {
    let profile = Profile::new(&ctx.state);
    if !profile.generations()?.iter().any(|g| g.number == number) {
        return Err(crate::profile::ProfileError::NoSuchGeneration(number).into());
    }
    let dir = efivars(ctx)?;
    if !dir.is_dir() {
        anyhow::bail!(
            "this machine was not booted through EFI ({} does not exist), so there is no boot loader variable to set\nHint: use `genboot set-default {number}` to make it the default, or pick it in the boot menu",
            dir.display()
        );
    }
    let var = dir.join(format!("LoaderEntryOneShot-{LOADER_GUID}"));
    let mut data = vec![0x07, 0, 0, 0]; // non-volatile, boot-service, runtime access
    for u in format!("{}.conf", esp::entry::key(number, false))
        .encode_utf16()
        .chain([0])
    {
        data.extend_from_slice(&u.to_le_bytes());
    }
    if std::fs::symlink_metadata(&var).is_ok_and(|m| m.is_file()) {
        // efivarfs files are immutable; chattr -i lifts it (as systemd does).
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&var)
            .status();
    }
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // One write (efivarfs takes the variable in one go), never through a link.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&var)
            .and_then(|mut f| f.write_all(&data))
            .with_context(|| format!("cannot write {}", var.display()))?;
    }
    eprintln!("genboot: the next boot (only) starts generation {number}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct EntryStatus {
    file: String,
    generation: u32,
    recovery: bool,
    tries_left: Option<u32>,
    tries_done: Option<u32>,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    booted: Option<u32>,
    booted_path: Option<String>,
    current: Option<u32>,
    esp: Option<String>,
    default_entry: Option<String>,
    entries: Vec<EntryStatus>,
}

pub(super) fn status(ctx: &Ctx, json: bool) -> anyhow::Result<ExitCode> {
    let profile = Profile::new(&ctx.state);
    let settings = load_settings(ctx)?;
    let mut st = Status {
        booted: booted_generation(ctx),
        booted_path: read_booted(ctx).map(|(p, _)| p),
        current: profile.current_number()?,
        esp: None,
        default_entry: None,
        entries: Vec::new(),
    };
    let esp_open: Option<Box<dyn Esp>> = if let Some(img) = &ctx.image {
        Some(Box::new(ImageEsp::open(img, false)?))
    } else {
        open_esp(ctx, settings.esp.as_deref()).ok().flatten()
    };
    if let Some(mut e) = esp_open {
        st.esp = Some(e.describe());
        st.default_entry = e.read(esp::layout::LOADER_CONF)?.and_then(|d| {
            esp::entry::field(&String::from_utf8_lossy(&d), "default").map(str::to_string)
        });
        for f in e.list(esp::layout::ENTRIES_DIR)? {
            if let Some(n) = esp::entry::EntryName::parse(&f) {
                st.entries.push(EntryStatus {
                    file: f.clone(),
                    generation: n.generation,
                    recovery: n.recovery,
                    tries_left: n.counter.map(|c| c.left),
                    tries_done: n.counter.and_then(|c| c.done),
                });
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(ExitCode::SUCCESS);
    }
    let show = |n: Option<u32>| n.map_or("unknown".to_string(), |n| n.to_string());
    println!("booted generation:  {}", show(st.booted));
    println!("current generation: {}", show(st.current));
    match &st.esp {
        Some(e) => {
            println!("ESP:                {e}");
            println!(
                "default entry:      {}",
                st.default_entry.as_deref().unwrap_or("(none)")
            );
            for e in &st.entries {
                let tries = match (e.tries_left, e.tries_done) {
                    (Some(0), _) => "  (tries used up)".to_string(),
                    (Some(l), _) => format!("  ({l} tries left)"),
                    _ => String::new(),
                };
                println!("  {}{tries}", e.file);
            }
        }
        None => println!("ESP:                none found"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `/run/genboot/booted` below `--root`: the store path and its object.
pub(super) fn read_booted(ctx: &Ctx) -> Option<(String, StorePath)> {
    let text = read_in_root(ctx, "/run/genboot/booted")?;
    let path = text.lines().next()?.trim().to_string();
    let store = Store::open_read_only(&ctx.state);
    let (sp, _) = store.resolve_boot_path(&path)?;
    Some((path, sp))
}

/// The generation this machine booted, if genboot-init recorded one: the
/// newest generation pointing at the booted object.
pub(super) fn booted_generation(ctx: &Ctx) -> Option<u32> {
    let (_, sp) = read_booted(ctx)?;
    Profile::new(&ctx.state)
        .generations()
        .ok()?
        .iter()
        .rev()
        .find(|g| g.target == sp)
        .map(|g| g.number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esp::dir::Mount;
    use crate::state::State;

    fn vfat(point: &Path) -> Mount {
        Mount {
            point: point.to_path_buf(),
            fstype: "vfat".into(),
        }
    }

    #[test]
    fn the_esp_probe_never_follows_a_link_out_of_the_root() {
        let t = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(t.path()).unwrap();
        let host_esp = base.join("host-esp");
        let root = base.join("root");
        std::fs::create_dir_all(&host_esp).unwrap();
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::os::unix::fs::symlink(&host_esp, root.join("boot/efi")).unwrap();
        let state = State::open(&root).unwrap();
        // The host's ESP is a FAT mount, but the tree's link to it is not
        // the tree's ESP.
        assert_eq!(probe_in_root(&state, &[vfat(&host_esp)]), None);
        // A link that stays inside the tree is followed.
        std::fs::remove_file(root.join("boot/efi")).unwrap();
        std::fs::create_dir_all(root.join("efi")).unwrap();
        std::os::unix::fs::symlink("/efi", root.join("boot/efi")).unwrap();
        let inside = root.join("efi");
        assert_eq!(
            probe_in_root(&state, &[vfat(&inside)]),
            Some(inside.clone())
        );
        // Not FAT: not an ESP.
        let ext4 = Mount {
            point: inside,
            fstype: "ext4".into(),
        };
        assert_eq!(probe_in_root(&state, &[ext4]), None);
    }
}
