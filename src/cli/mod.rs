//! The `genboot` command line: argument parsing and one function per verb.
//! Errors are typed inside the library; here they get context and are
//! printed once.

mod esp_cmds;
mod profile_cmds;

use crate::state::State;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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
        /// The system configuration (system.toml).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Build, make it the new current generation, and install the boot menu.
    Switch {
        /// The system configuration (system.toml).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
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
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
    },
    /// Re-hash every store object, check modes and owners, compare the ESP's kernels and initrds with the store; report each mismatch (exit code 1 if any).
    Verify,
    /// Write the boot menu for the profile's generations to the ESP.
    Install {
        /// Also install systemd-boot as the boot loader.
        #[arg(long)]
        install_loader: bool,
        /// The systemd-boot EFI binary to install.
        #[arg(
            long,
            value_name = "FILE",
            default_value = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
        )]
        loader: PathBuf,
    },
    /// Write a bootable GPT disk image: an ESP and a root file system holding the store.
    #[command(name = "image")]
    Image {
        /// Switch to each of these configurations first, in order (repeatable).
        #[arg(long, short, value_name = "FILE")]
        config: Vec<PathBuf>,
        /// The disk image to write.
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
        /// Image size, e.g. 512M or 2G; `auto` fits the ESP and the tree below --root.
        #[arg(long, default_value = "auto")]
        size: String,
        /// Size of the ESP inside the image (FAT32: 40M or more).
        #[arg(long, default_value = "256M")]
        esp_size: String,
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
}

/// Everything a verb needs from the global options.
pub struct Ctx {
    pub state: State,
    pub no_wait: bool,
    pub esp: Option<PathBuf>,
    pub image: Option<PathBuf>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let state = match State::open(&cli.root) {
        Ok(s) => s,
        Err(e) => {
            print_error(&e.into());
            return ExitCode::from(1);
        }
    };
    let ctx = Ctx {
        state,
        no_wait: cli.no_wait,
        esp: cli.esp,
        image: cli.image,
    };
    match run(&ctx, cli.command) {
        Ok(code) => code,
        Err(e) => {
            print_error(&e);
            ExitCode::from(1)
        }
    }
}

fn run(ctx: &Ctx, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Build { config } => profile_cmds::build(ctx, &config),
        Command::Switch { config } => profile_cmds::switch(ctx, &config),
        Command::List { json } => profile_cmds::list(ctx, json),
        Command::Rollback => profile_cmds::rollback(ctx),
        Command::SetDefault { number } => profile_cmds::set_default(ctx, number),
        Command::Delete { numbers } => profile_cmds::delete(ctx, &numbers),
        Command::Gc { keep, older_than } => profile_cmds::gc(ctx, keep, older_than.as_deref()),
        Command::Verify => profile_cmds::verify(ctx),
        Command::Install {
            install_loader,
            loader,
        } => esp_cmds::install(ctx, install_loader.then_some(loader.as_path())),
        Command::Image {
            config,
            output,
            size,
            esp_size,
        } => esp_cmds::image(ctx, &config, &output, &size, &esp_size),
        Command::Bless => esp_cmds::bless(ctx),
        Command::SetOneshot { number } => esp_cmds::set_oneshot(ctx, number),
        Command::Status { json } => esp_cmds::status(ctx, json),
    }
}

/// Print an error, its causes and the hint of each (library errors carry
/// their cause in their own text and return none as `source()`, so nothing
/// repeats).
fn print_error(e: &anyhow::Error) {
    for (i, cause) in e.chain().enumerate() {
        if i == 0 {
            eprintln!("genboot: error: {cause}");
        } else {
            eprintln!("  because: {cause}");
        }
        if let Some(h) = hint_of(cause) {
            eprintln!("Hint: {h}");
        }
    }
}

/// The hint of a library error, whichever it is.
fn hint_of(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    use crate::hint::Hint;
    macro_rules! try_types {
        ($($t:ty),* $(,)?) => {
            $(if let Some(e) = e.downcast_ref::<$t>() {
                return e.hint();
            })*
        };
    }
    try_types!(
        crate::build::BuildError,
        crate::bootspec::BootspecError,
        crate::config::ConfigError,
        crate::disk::DiskError,
        crate::esp::EspError,
        crate::esp::Full,
        crate::fsutil::OwnFileError,
        crate::gc::GcError,
        crate::initrd::InitrdError,
        crate::kernel::KernelError,
        crate::modules::ModulesError,
        crate::profile::ProfileError,
        crate::state::StateError,
        crate::store::StoreError,
        crate::units::UnitError,
    );
    None
}
