//! genboot's use cases, one function each: what the CLI (and tests and
//! benchmarks) call. They return values and print nothing; what the user
//! should see while they run goes to an [`Observer`] as [`Event`]s.
//!
//! A [`Session`] holds what every use case needs (the state below
//! `--root`, which ESP to use, whether to wait for locks). A use case that
//! changes the profile, the settings or an ESP takes the profile lock
//! ([`Session::lock`]) and holds it until it returns: the profile, the
//! settings file ([`settings`]) and the ESP are changed only through the
//! [`Locked`] it gets.

pub mod esp;
pub mod etc;
pub mod generations;
pub mod image;
pub mod settings;
pub mod switch;
#[cfg(test)]
mod tests;
pub mod tree;

use crate::config::BootSection;
use crate::esp::dir::{DirEsp, MountCheck};
use crate::esp::fat::ImageEsp;
use crate::esp::{Esp, EspError, GenInput, InstallOptions, InstallReport, StoreFile};
use crate::hint::Hint;
use crate::host::esp::EspProbe;
use crate::notes::{Note, Notes, Wait};
use crate::profile::{Generation, Lock, Profile};
use crate::state::State;
use crate::store::{Store, StorePath};
use anyhow::Context;
use settings::Settings;
use std::path::{Path, PathBuf};

/// Something a use case tells while it runs.
#[derive(Debug)]
pub enum Event<'a> {
    /// From the layers below: waiting for a lock, a build step, a warning.
    Note(Note<'a>),
    /// `switch` or `image` made a generation current (`new`), or found it
    /// current already.
    Added {
        number: u32,
        new: bool,
        generation: &'a StorePath,
    },
    /// The profile changed (before the boot menu follows).
    Changed(Change<'a>),
    /// The boot menu was written to `esp`.
    Installed {
        esp: &'a str,
        report: &'a InstallReport,
    },
    /// A profile change found no ESP to update: why (with what to do).
    NoEsp(&'a str),
    /// `install --install-loader` and the firmware's boot entries.
    BootEntry(BootEntry<'a>),
}

/// What `install --install-loader` did with the firmware's boot entries.
#[derive(Debug)]
pub enum BootEntry<'a> {
    /// Registered (or found) and put first in `BootOrder`.
    Registered(&'a crate::host::boot_entry::Registered),
    /// Not done, and why.
    Skipped(&'a str),
}

/// A change of the profile.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    RolledBack(u32),
    SetCurrent(u32),
    Deleted(&'a [u32]),
}

/// Where a use case's events go (the CLI prints them).
pub trait Observer {
    fn event(&self, event: Event<'_>);
}

/// Which ESP to install to, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// `--image FILE`: the ESP inside this disk image.
    pub image: Option<PathBuf>,
    /// `--esp PATH`: a mounted ESP.
    pub esp: Option<PathBuf>,
    /// Accept a directory that is not a FAT mount point (tests, tools).
    pub any_dir: bool,
}

/// Errors of the use cases themselves (the layers below have theirs).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("systemd-boot is not installed: {} is missing", .0.display())]
    NoLoader(PathBuf),
    #[error("cannot tell which generation this machine booted: neither {} nor {} exists", .var.display(), .booted.display())]
    UnknownBooted { var: PathBuf, booted: PathBuf },
    #[error("this machine was not booted through EFI ({} does not exist), so there is no boot loader variable to set", .dir.display())]
    NotEfi { dir: PathBuf, number: u32 },
    #[error("the image {} would be inside the --root tree {} that becomes its root file system", .output.display(), .root.display())]
    ImageInsideRoot { output: PathBuf, root: PathBuf },
    #[error("--esp-size {text}: an ESP of {} is too small for FAT32", crate::units::human(*.size))]
    EspTooSmall { text: String, size: u64 },
    #[error("--size {text}: the root partition would have {}, but the tree below {} needs about {}", crate::units::human(*.root), .tree.display(), crate::units::human(*.need))]
    RootTooSmall {
        text: String,
        root: u64,
        tree: PathBuf,
        need: u64,
        esp_size: u64,
    },
    #[error("the profile below {} has no generation to put in the image", .0.display())]
    NothingToImage(PathBuf),
    #[error("no --config given, and the system's configuration {} does not exist", .0.display())]
    NoConfig(PathBuf),
    #[error("cannot tell which partition the ESP at {} is, for its firmware boot entry: {why}", .esp.display())]
    EspPartition { esp: PathBuf, why: String },
    #[error("{}: [initrd] autodetect finds the modules of this machine's root device, but the build is for the system below --root {}, whose disks this machine cannot see", .config.display(), .root.display())]
    AutodetectElsewhere { config: PathBuf, root: PathBuf },
    #[error("generation {number} has no tree: its configuration has no [tree]")]
    NoTree { number: u32 },
}

impl Hint for AppError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            AppError::NoLoader(_) => "apt-get install systemd-boot-efi".into(),
            AppError::UnknownBooted { .. } => "run `genboot bless` in the booted system (stage 2), after genboot-init has run".into(),
            AppError::NotEfi { number, .. } => format!("use `genboot set-default {number}` to make it the default, or pick it in the boot menu"),
            AppError::ImageInsideRoot { .. } => {
                "write the image outside the tree, e.g. -o /tmp/disk.img".into()
            }
            AppError::EspTooSmall { .. } => "give --esp-size 40M or more".into(),
            AppError::RootTooSmall { need, esp_size, .. } => format!(
                "give --size {}M or more, or leave --size out (auto)",
                (need + esp_size + (4 << 20)).div_ceil(1 << 20)
            ),
            AppError::NothingToImage(_) => {
                "pass --config FILE, or write the system's configuration /etc/genboot/system.toml below --root".into()
            }
            AppError::AutodetectElsewhere { .. } => "list that system's root device driver and file system in [initrd] modules and leave autodetect out (or run genboot on that system)".into(),
            AppError::NoConfig(_) => "write it (README.md's system.toml section shows every key), or pass --config FILE".into(),
            AppError::EspPartition { .. } => "the boot menu and systemd-boot were installed; add the boot entry with `bootctl install` or `efibootmgr`, or check that sysfs and /dev are mounted".into(),
            AppError::NoTree { .. } => "`genboot list` shows the generations; one built from a system.toml with a [tree] has one".into(),
        })
    }
}

/// What every use case works with.
pub struct Session<'o> {
    pub state: State,
    wait: bool,
    target: Target,
    observer: &'o dyn Observer,
}

/// The profile lock, held for a whole use case: the only way to change the
/// profile, the settings and an ESP.
pub struct Locked<'s> {
    pub session: &'s Session<'s>,
    pub profile: Profile,
    pub lock: Lock,
}

impl<'o> Session<'o> {
    pub fn new(state: State, wait: bool, target: Target, observer: &'o dyn Observer) -> Self {
        Session {
            state,
            wait,
            target,
            observer,
        }
    }

    /// How to wait for a lock (and say so).
    fn wait(&self) -> Wait<'_> {
        if self.wait {
            Wait::Yes(self)
        } else {
            Wait::No
        }
    }

    fn notes(&self) -> &dyn Notes {
        self
    }

    /// Take the profile lock for the rest of a use case.
    pub fn lock(&self) -> anyhow::Result<Locked<'_>> {
        let profile = Profile::new(&self.state);
        let lock = profile.lock(self.wait())?;
        Ok(Locked {
            session: self,
            profile,
            lock,
        })
    }

    /// The ESP the options, the settings or the mounts name, opened for
    /// writing (`writable`) or reading; `None` when there is none.
    fn open_esp(
        &self,
        configured: Option<&Path>,
        writable: bool,
    ) -> anyhow::Result<Option<Box<dyn Esp>>> {
        let check = if self.target.any_dir {
            MountCheck::AnyDir
        } else {
            MountCheck::FatMountPoint
        };
        if let Some(img) = &self.target.image {
            return Ok(Some(Box::new(ImageEsp::open(img, writable)?)));
        }
        if let Some(p) = &self.target.esp {
            return Ok(Some(Box::new(DirEsp::open(p, check)?)));
        }
        if let Some(p) = configured {
            let context = || format!("[boot] esp = {:?} in the configuration", p.display());
            let below = self.state.in_root(p).with_context(context)?;
            let esp = DirEsp::open(&below, check).with_context(context)?;
            return Ok(Some(Box::new(esp)));
        }
        match self.probe_esp() {
            EspProbe::Mounted { dir, .. } => Ok(Some(Box::new(DirEsp::open(&dir, check)?))),
            EspProbe::NotMounted { .. } | EspProbe::NotFound => Ok(None),
        }
    }

    /// Where the running machine's ESP is ([`crate::host::esp`]).
    fn probe_esp(&self) -> EspProbe {
        crate::host::esp::probe(&self.state, &crate::host::mounts::mounts)
    }

    /// Why no ESP was found (when [`Session::open_esp`] found none): not
    /// mounted, with how to mount it, or not found.
    fn no_esp(&self) -> EspError {
        match self.probe_esp() {
            EspProbe::NotMounted { partuuid, device } => EspError::NotMounted {
                partuuid,
                device,
                root: self.state.root.clone(),
            },
            EspProbe::Mounted { .. } | EspProbe::NotFound => EspError::NotFound {
                root: self.state.root.clone(),
            },
        }
    }

    /// [`Session::open_esp`], or an error saying why none was found.
    fn require_esp(&self, configured: Option<&Path>) -> anyhow::Result<Box<dyn Esp>> {
        match self.open_esp(configured, true)? {
            Some(esp) => Ok(esp),
            None => Err(self.no_esp().into()),
        }
    }

    /// The firmware's `LoaderEntryDefault`, when `esp` is mounted at the
    /// partition the machine booted from (another ESP, or an image, has
    /// nothing to do with this machine's firmware variables).
    fn efi_default_for(&self, esp: &dyn Esp) -> Option<String> {
        let at = esp.mount_point()?;
        match self.probe_esp() {
            EspProbe::Mounted { dir, booted: true } if dir == at => {
                let vars = crate::host::efivars::dir(&self.state).ok()?;
                crate::host::efivars::read_string(&crate::host::efivars::var(
                    &vars,
                    "LoaderEntryDefault",
                ))
            }
            _ => None,
        }
    }

    /// What genboot-init recorded about this boot.
    pub fn booted(&self) -> Booted {
        let Some(path) = crate::host::booted::booted_path(&self.state) else {
            return Booted::default();
        };
        let store = Store::open_read_only(&self.state);
        let Some((object, _)) = store.resolve_boot_path(&path) else {
            return Booted::default();
        };
        // The newest generation pointing at the booted object.
        let generation = Profile::new(&self.state)
            .generations()
            .ok()
            .and_then(|gens| {
                gens.iter()
                    .rev()
                    .find(|g| g.target == object)
                    .map(|g| g.number)
            });
        Booted {
            path: Some(path),
            object: Some(object),
            generation,
        }
    }
}

impl Notes for Session<'_> {
    fn note(&self, note: Note<'_>) {
        self.observer.event(Event::Note(note));
    }
}

/// This boot, as genboot-init recorded it in `/run/genboot/booted`.
#[derive(Debug, Clone, Default)]
pub struct Booted {
    /// The store path it recorded.
    pub path: Option<String>,
    /// The generation object.
    pub object: Option<StorePath>,
    /// The newest profile generation pointing at it.
    pub generation: Option<u32>,
}

impl Locked<'_> {
    fn observer(&self) -> &dyn Observer {
        self.session.observer
    }

    /// Write the boot menu for the profile to `esp`, with `settings` and
    /// (when given) the systemd-boot binary at `loader`.
    fn install_to(
        &self,
        mut esp: Box<dyn Esp>,
        settings: &Settings,
        loader: Option<&Path>,
    ) -> anyhow::Result<InstallReport> {
        let desc = esp.describe();
        for n in esp.notes() {
            self.observer().event(Event::Note(Note::Info(&n)));
        }
        let mut report = self
            .install_into(esp.as_mut(), settings, loader)
            .with_context(|| format!("installing the boot menu to {desc}"))?;
        report.stats = esp.close()?;
        self.observer().event(Event::Installed {
            esp: &desc,
            report: &report,
        });
        Ok(report)
    }

    fn install_into(
        &self,
        esp: &mut dyn Esp,
        settings: &Settings,
        loader: Option<&Path>,
    ) -> anyhow::Result<InstallReport> {
        let state = &self.session.state;
        let store = Store::open_read_only(state);
        let gens = self.profile.generations()?;
        let (inputs, warnings) = esp_inputs(&store, &gens)?;
        let unreadable = gens
            .iter()
            .map(|g| g.number)
            .filter(|n| !inputs.iter().any(|i| i.number == *n))
            .collect();
        let opts = InstallOptions {
            unreadable,
            limit: settings.limit,
            timeout: settings.timeout.unwrap_or(0),
            loader: loader.map(read_loader).transpose()?,
            machine_id: crate::host::machine_id::machine_id(state),
            booted: self.session.booted().generation,
            efi_default: self.session.efi_default_for(esp),
        };
        let mut report = crate::esp::install(esp, &inputs, &opts)?;
        report.warnings.splice(0..0, warnings);
        Ok(report)
    }

    /// After a profile change (switch, rollback, set-default, delete, gc):
    /// install right away when an ESP is configured or given. `boot` is
    /// the `[boot]` section of the configuration just switched to; it is
    /// saved for later commands once the install worked.
    ///
    /// When the install fails, the profile is put back as `before` (the
    /// generations before the change) was, so the command's error changes
    /// nothing: NixOS moves the profile first and leaves it moved when the
    /// boot loader install fails, which leaves `list` naming a current
    /// generation the machine does not boot. The installer's own order (new
    /// files, entries, then `loader.conf`, then removals) keeps the ESP
    /// booting its previous default when it stops halfway; the next install
    /// removes what the failed one wrote.
    pub fn reconcile(
        &self,
        before: &[Generation],
        boot: Option<&BootSection>,
    ) -> anyhow::Result<()> {
        let state = &self.session.state;
        let result = (|| -> anyhow::Result<()> {
            let settings = match boot {
                Some(b) => Settings::from_boot(b),
                None => Settings::load(state)?,
            };
            match self.session.open_esp(settings.esp.as_deref(), true)? {
                Some(esp) => {
                    self.install_to(esp, &settings, None)?;
                }
                None => {
                    let why = self.session.no_esp().with_hint();
                    self.observer().event(Event::NoEsp(&why));
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                if let Some(b) = boot {
                    if let Err(e) = Settings::from_boot(b).save(state, &self.lock) {
                        self.session.note(Note::Warning(&format!(
                            "the [boot] settings were not saved for later commands: {}",
                            e.with_hint()
                        )));
                    }
                }
                Ok(())
            }
            Err(e) => Err(self.put_back(before, e)),
        }
    }

    /// Put the profile back as `before` was, after `e`; the error says
    /// what state things are in.
    fn put_back(&self, before: &[Generation], e: anyhow::Error) -> anyhow::Error {
        let was = before
            .iter()
            .find(|g| g.current)
            .map_or("none".to_string(), |g| g.number.to_string());
        let now = self
            .profile
            .current_number()
            .ok()
            .flatten()
            .map_or("none".to_string(), |n| n.to_string());
        match self.profile.restore(before, &self.lock) {
            Ok(()) => e.context(format!(
                "the boot menu could not be updated, so the profile was put back as it was: the current generation is {was} again and the ESP still boots what it booted before (the next install removes anything this attempt wrote there)"
            )),
            Err(re) => e.context(format!(
                "the boot menu could not be updated, and putting the profile back failed too ({}): the profile says generation {now} is current, but the ESP was not updated\nHint: fix the problem below and run `genboot install`, or run `genboot set-default {was}`",
                re.with_hint()
            )),
        }
    }
}

/// The systemd-boot binary to install: a regular file of at most 64 MiB
/// (systemd-boot is about 100 KB).
pub fn read_loader(path: &Path) -> Result<Vec<u8>, EspError> {
    use crate::modules::input::{read_regular, InputError};
    read_regular(path, true, 64 << 20).map_err(|e| EspError::Input {
        path: path.to_path_buf(),
        cause: match e {
            InputError::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        },
    })
}

/// `YYYY-MM-DD` of a generation, for its entry.
fn gen_date(g: &Generation) -> String {
    let date = crate::units::format_date(crate::units::unix_secs(g.date));
    date.get(..10).unwrap_or(&date).to_string()
}

/// The installer's input from the profile. A generation whose `boot.json`
/// cannot be read is left out with a warning (one bad generation must not
/// block all installs) — unless it is the current one.
pub fn esp_inputs(
    store: &Store,
    gens: &[Generation],
) -> Result<(Vec<GenInput>, Vec<String>), EspError> {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for g in gens {
        match gen_input(store, g) {
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

fn gen_input(store: &Store, g: &Generation) -> Result<GenInput, EspError> {
    let bad = |what: String| EspError::Generation {
        generation: g.number,
        what,
    };
    let boot =
        crate::generation::bootjson::BootJson::read(&store.path(&g.target).join("boot.json"))
            .map_err(|e| bad(e.with_hint()))?;
    let resolve = |p: &str| -> Result<StoreFile, EspError> {
        let (sp, host) = store
            .resolve_boot_path(p)
            .ok_or_else(|| bad(format!("{p} is not a path in the store")))?;
        if !host.is_file() {
            return Err(bad(format!("{} is missing", host.display())));
        }
        StoreFile::at(sp.hash, host)
    };
    let kernel = resolve(&boot.bootspec.kernel)?;
    let initrd = boot.bootspec.initrd.as_deref().map(resolve).transpose()?;
    let mut options = boot.bootspec.kernel_params.join(" ");
    if !options.is_empty() {
        options.push(' ');
    }
    options.push_str(&format!("init={}", boot.bootspec.init));
    Ok(GenInput {
        number: g.number,
        current: g.current,
        date: gen_date(g),
        label: boot.bootspec.label,
        kernel_release: boot.genboot.kernel_release,
        kernel,
        initrd,
        options,
        tries: boot.genboot.tries,
    })
}
