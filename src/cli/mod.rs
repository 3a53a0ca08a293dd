//! The `genboot` command line: parse (clap, with typed sizes and ages),
//! call the use case in [`crate::app`], print what it returns
//! ([`output`]). Nothing here decides anything about generations or ESPs.

mod output;

use crate::app::image::{ImageRequest, ImageSize, SYSTEMD_BOOT};
use crate::app::{self, Session, Target};
use crate::gc::Policy;
use crate::state::State;
use crate::units::{self, UnitError};
use clap::{Parser, Subcommand};
use output::Printer;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Set to `1` to accept any directory as the ESP (tests and tools; a real
/// ESP is a FAT mount point).
pub const ANY_DIR_ENV: &str = "GENBOOT_ESP_ANY_DIR";

#[derive(Debug, Parser)]
#[command(
    name = "genboot",
    version,
    about = "NixOS-style boot generations for any Linux machine"
)]
pub struct Cli {
    /// Work on the system tree below DIR instead of /.
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Fail at once instead of waiting when another genboot holds the lock.
    #[arg(long, global = true)]
    pub no_wait: bool,
    /// The mounted ESP to install to (default: [boot] esp, else /efi, /boot, /boot/efi when an ESP is mounted there).
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "image")]
    pub esp: Option<PathBuf>,
    /// Install to the ESP inside this disk image instead of a mounted ESP.
    #[arg(long, global = true, value_name = "FILE")]
    pub image: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the generation for a configuration and print its store path.
    Build {
        /// The system configuration (default: /etc/genboot/system.toml below --root).
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Build, make it the new current generation, and install the boot menu.
    Switch {
        /// The system configuration (default: /etc/genboot/system.toml below --root).
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// List the generations.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Make the generation before the current one current.
    Rollback,
    /// Make generation N current (the default boot entry).
    SetDefault { number: u32 },
    /// Delete generations (never the current one, nor the one running).
    Delete {
        #[arg(required = true)]
        numbers: Vec<u32>,
    },
    /// Delete old generations, then every store object no generation reaches.
    Gc {
        /// Keep the newest N generations (the current one is always kept).
        #[arg(long, value_name = "N")]
        keep: Option<u32>,
        /// Delete generations older than this (e.g. 30d, 12h, 2w).
        #[arg(long, value_name = "AGE", value_parser = units::parse_age)]
        older_than: Option<Duration>,
    },
    /// Re-hash every store object, check modes and owners, compare the ESP's kernels and initrds with the store; report each mismatch (exit code 1 if any).
    Verify,
    /// Write the boot menu for the profile's generations to the ESP.
    Install {
        /// Also install systemd-boot as the boot loader.
        #[arg(long)]
        install_loader: bool,
        /// The systemd-boot EFI binary to install.
        #[arg(long, value_name = "FILE", default_value = SYSTEMD_BOOT)]
        loader: PathBuf,
    },
    /// Write a bootable GPT disk image: an ESP and a root file system holding the store.
    #[command(name = "image")]
    Image {
        /// Switch to each of these configurations first, in order (repeatable; default: /etc/genboot/system.toml below --root when it exists, else the profile as it is).
        #[arg(long, short, value_name = "FILE")]
        config: Vec<PathBuf>,
        /// The disk image to write.
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
        /// Image size, e.g. 512M or 2G; `auto` fits the ESP and the tree below --root.
        #[arg(long, default_value = "auto", value_parser = image_size)]
        size: ImageSize,
        /// Size of the ESP inside the image (FAT32: 40M or more).
        #[arg(long, default_value = "256M", value_parser = esp_size)]
        esp_size: SizeArg,
    },
    /// Mark the booted generation good: drop its boot-counting suffix.
    Bless,
    /// Boot generation N once, at the next boot only.
    SetOneshot { number: u32 },
    /// Show the booted and current generation.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// What changed from generation A to B: kernel, parameters, initrd modules and, with trees, packages, users, files and /etc (read from the store only).
    Diff {
        #[arg(value_name = "A")]
        from: u32,
        #[arg(value_name = "B")]
        to: u32,
        #[arg(long)]
        json: bool,
    },
    /// Mount generation N's tree read-only at DIR (an existing directory).
    Mount {
        #[arg(value_name = "N")]
        number: u32,
        dir: PathBuf,
    },
    /// Unmount a tree `genboot mount` mounted at DIR.
    Umount { dir: PathBuf },
    /// Local changes to /etc against the generation's image (like `ostree admin config-diff`).
    Etc {
        #[command(subcommand)]
        command: EtcCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum EtcCommand {
    /// One line per changed path: M (modified), A (added), D (deleted).
    Status {
        /// The generation (default: the booted one, else the current one).
        #[arg(value_name = "GENERATION")]
        generation: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// A unified diff of each changed text file against the image's.
    Diff {
        /// The generation (default: the booted one, else the current one).
        #[arg(value_name = "GENERATION")]
        generation: Option<u32>,
    },
}

/// A size as given and as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeArg {
    pub bytes: u64,
    pub text: String,
}

/// A value the option `flag` cannot take; the cause says why.
#[derive(Debug, thiserror::Error)]
#[error("{flag}")]
pub struct ArgError {
    flag: &'static str,
    #[source]
    cause: UnitError,
}

fn image_size(s: &str) -> Result<ImageSize, ArgError> {
    if s == "auto" {
        return Ok(ImageSize::Auto);
    }
    let bytes = units::parse_size(s).map_err(|cause| ArgError {
        flag: "--size",
        cause,
    })?;
    Ok(ImageSize::Fixed(bytes, s.to_string()))
}

fn esp_size(s: &str) -> Result<SizeArg, ArgError> {
    let bytes = units::parse_size(s).map_err(|cause| ArgError {
        flag: "--esp-size",
        cause,
    })?;
    Ok(SizeArg {
        bytes,
        text: s.to_string(),
    })
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // A value our parsers refused: genboot's own error, with its hint.
            // Anything else (a number that is not one, an unknown verb)
            // is clap's error, which names the argument.
            if e.kind() == clap::error::ErrorKind::ValueValidation {
                if let Some(cause) = std::error::Error::source(&e)
                    .filter(|c| c.is::<ArgError>() || c.is::<units::UnitError>())
                {
                    output::print_error(cause);
                    return ExitCode::from(1);
                }
            }
            e.exit()
        }
    };
    let state = match State::open(&cli.root) {
        Ok(s) => s,
        Err(e) => {
            output::print_error(&e);
            return ExitCode::from(1);
        }
    };
    let target = Target {
        image: cli.image,
        esp: cli.esp,
        any_dir: std::env::var(ANY_DIR_ENV).as_deref() == Ok("1"),
    };
    let printer = Printer::new(&cli.command);
    let session = Session::new(state, !cli.no_wait, target, &printer);
    match run(&session, &printer, cli.command) {
        Ok(code) => code,
        Err(e) => {
            output::print_error(e.as_ref());
            ExitCode::from(1)
        }
    }
}

fn run(s: &Session, out: &Printer, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Build { config } => {
            let config = app::switch::config_path(s, config.as_deref())?;
            println!("{}", app::switch::build(s, &config)?.display())
        }
        Command::Switch { config } => {
            let config = app::switch::config_path(s, config.as_deref())?;
            println!("{}", app::switch::switch(s, &config)?.path.display())
        }
        Command::List { json } => out.list(&app::generations::list(s)?, json)?,
        Command::Rollback => {
            app::generations::rollback(s)?;
        }
        Command::SetDefault { number } => app::generations::set_default(s, number)?,
        Command::Delete { numbers } => app::generations::delete(s, &numbers)?,
        Command::Gc { keep, older_than } => {
            let policy = Policy { keep, older_than };
            out.collected(&app::generations::gc(s, policy)?);
        }
        Command::Verify => return out.verified(app::generations::verify(s)?),
        Command::Install {
            install_loader,
            loader,
        } => {
            app::esp::install(s, install_loader.then_some(loader.as_path()))?;
        }
        Command::Image {
            config,
            output,
            size,
            esp_size,
        } => {
            let req = ImageRequest {
                configs: config,
                output,
                size,
                esp_size: esp_size.bytes,
                esp_size_text: esp_size.text,
            };
            out.image_made(&app::image::image(s, &req)?);
        }
        Command::Bless => out.blessed(&app::esp::bless(s)?),
        Command::SetOneshot { number } => {
            let file = app::esp::set_oneshot(s, number)?;
            eprintln!("genboot: the next boot (only) starts generation {number} ({file})");
        }
        Command::Status { json } => out.status(&app::esp::status(s)?, json)?,
        Command::Diff { from, to, json } => out.diff(&app::tree::diff(s, from, to)?, json)?,
        Command::Mount { number, dir } => out.mounted(number, &app::tree::mount(s, number, &dir)?),
        Command::Etc {
            command: EtcCommand::Status { generation, json },
        } => out.etc_status(&app::etc::status(s, generation)?, json)?,
        Command::Etc {
            command: EtcCommand::Diff { generation },
        } => out.etc_diff(&app::etc::diff(s, generation)?)?,
        Command::Umount { dir } => {
            app::tree::umount(&dir)?;
            eprintln!("genboot: unmounted {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
