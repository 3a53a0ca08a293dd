//! Everything `genboot` prints: the events of a use case while it runs
//! (stderr), its results (stdout: tables, JSON), and errors with their
//! causes and hints.

use super::Command;
use crate::app::esp::Status;
use crate::app::generations::{Collected, EspVerified, ListRow, Verified};
use crate::app::image::ImageMade;
use crate::app::BootEntry;
use crate::app::{Change, Event, Observer};
use crate::esp::bless::Blessed;
use crate::esp::InstallReport;
use crate::gpt;
use crate::hint::Hint;
use crate::notes::Note;
use crate::units::human;
use std::error::Error;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

/// Prints events as they come, and results.
pub struct Printer {
    /// The command is `image` (its generations read differently).
    image: bool,
    /// Progress lines only on a terminal; silent in a pipe.
    progress: bool,
    start: Instant,
}

impl Printer {
    pub fn new(command: &Command) -> Printer {
        Printer {
            image: matches!(command, Command::Image { .. }),
            progress: std::io::stderr().is_terminal(),
            start: Instant::now(),
        }
    }

    fn note(&self, note: Note<'_>) {
        match note {
            Note::Waiting(t) => eprintln!("genboot: {t}"),
            Note::Progress(t) if self.progress => {
                eprintln!("genboot: [{:5.2}s] {t}", self.start.elapsed().as_secs_f64())
            }
            Note::Progress(_) => {}
            Note::Warning(t) => eprintln!("genboot: warning: {t}"),
            Note::Info(t) => eprintln!("genboot: note: {t}"),
        }
    }

    pub fn list(&self, rows: &[ListRow], json: bool) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if json {
            serde_json::to_writer_pretty(&mut out, rows)?;
            writeln!(out)?;
            return Ok(());
        }
        if rows.is_empty() {
            writeln!(
                out,
                "no generations yet; run `genboot switch --config FILE`"
            )?;
            return Ok(());
        }
        let kw = rows
            .iter()
            .map(|r| r.kernel_release.len())
            .max()
            .unwrap_or(6)
            .max(6);
        writeln!(
            out,
            "  {:>4}  {:<19}  {:<kw$}  LABEL",
            "GEN", "DATE (UTC)", "KERNEL"
        )?;
        for r in rows {
            let mark = if r.current { "*" } else { " " };
            let cur = if r.current { "  (current)" } else { "" };
            writeln!(
                out,
                "{mark} {:>4}  {:<19}  {:<kw$}  {}{cur}",
                r.number, r.date, r.kernel_release, r.label
            )?;
        }
        Ok(())
    }

    pub fn collected(&self, c: &Collected) {
        for n in &c.generations {
            println!("deleted generation {n}");
        }
        for sp in &c.objects {
            println!("deleted {}", sp.boot_path());
        }
        println!(
            "{} generation(s), {} store object(s), {:.1} MiB freed",
            c.generations.len(),
            c.objects.len(),
            c.bytes as f64 / (1024.0 * 1024.0)
        );
    }

    /// The store's part, then the ESP's; exit code 1 when anything is wrong.
    pub fn verified(&self, v: Verified) -> anyhow::Result<ExitCode> {
        for m in &v.store {
            println!("MISMATCH {}: {}", m.object, m.problem);
        }
        if v.store.is_empty() {
            println!(
                "{} store object(s) verified, all match their hashes, modes and owners",
                v.objects
            );
        } else {
            println!(
                "{} of {} store object(s) failed verification (contents, modes or owners)",
                v.store.len(),
                v.objects
            );
        }
        let esp = v.esp?;
        match &esp {
            EspVerified::NotFound => println!("no ESP found (no --esp/--image, no [boot] esp, nothing mounted at /efi, /boot, /boot/efi); the ESP was not checked"),
            EspVerified::NotChecked(why) => println!("MISMATCH ESP not checked: {why}"),
            EspVerified::Checked { esp, checked } => {
                for p in &checked.problems {
                    println!("MISMATCH ESP {}: {}", p.path, p.what);
                }
                println!(
                    "{} kernel and initrd file(s) on {esp} compared with the store, {} problem(s)",
                    checked.files,
                    checked.problems.len()
                );
            }
        }
        Ok(if v.store.is_empty() && esp.ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }

    pub fn image_made(&self, m: &ImageMade) {
        eprintln!(
            "genboot: wrote {} ({}): ESP PARTUUID={}, root PARTUUID={} (ext4 UUID={}, LABEL={})",
            m.output.display(),
            human(m.size),
            gpt::ESP_PARTUUID,
            gpt::ROOT_PARTUUID,
            gpt::ROOT_FS_UUID,
            gpt::ROOT_FS_LABEL
        );
        eprintln!(
            "genboot: room left: root partition about {} of {} (one more kernel with its modules needs about {}), ESP {} (one more kernel and initrd: {})",
            human(m.root_len.saturating_sub(m.root_used)),
            human(m.root_len),
            human(m.next_kernel.root),
            human(m.esp_free),
            human(m.next_kernel.esp)
        );
    }

    pub fn blessed(&self, b: &Blessed) {
        match b {
            Blessed::Renamed(name) => eprintln!("genboot: blessed: boot entry is now {name}"),
            Blessed::AlreadyPlain(name) => eprintln!(
                "genboot: the booted entry {name} has no boot counter (blessed already, or never counted); nothing to do"
            ),
        }
    }

    pub fn status(&self, st: &Status, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(st)?);
            return Ok(());
        }
        let show = |n: Option<u32>| n.map_or("unknown".to_string(), |n| n.to_string());
        println!("booted generation:  {}", show(st.booted));
        println!("current generation: {}", show(st.current));
        let Some(e) = &st.esp else {
            match &st.esp_missing {
                Some(why) => println!("ESP:                {why}"),
                None => println!("ESP:                none found"),
            }
            return Ok(());
        };
        println!("ESP:                {e}");
        let default = match (&st.default_entry, &st.default_file) {
            (Some(p), Some(f)) => format!("{p} ({f})"),
            (Some(p), None) => format!("{p} (matches no entry: systemd-boot boots its first)"),
            (None, _) => "(none)".to_string(),
        };
        println!("default entry:      {default}");
        for e in &st.entries {
            let tries = match (e.tries_left, e.tries_done) {
                (Some(0), _) => "  (tries used up)".to_string(),
                (Some(l), _) => format!("  ({l} tries left)"),
                _ => String::new(),
            };
            println!("  {}{tries}", e.file);
        }
        Ok(())
    }

    fn installed(&self, esp: &str, r: &InstallReport) {
        for w in &r.warnings {
            eprintln!("genboot: warning: {w}");
        }
        if r.cleaned_first {
            eprintln!(
                "genboot: the ESP was short of space: removed unused entries and files before writing"
            );
        }
        eprintln!(
            "genboot: ESP {esp}: default generation {}; {} written, {} removed; {} bytes written, {} files touched",
            r.default,
            r.written.len(),
            r.removed.len(),
            r.stats.bytes_written,
            r.stats.files_touched
        );
    }

    fn changed(&self, c: Change<'_>) {
        match c {
            Change::RolledBack(n) => eprintln!("genboot: rolled back to generation {n}"),
            Change::SetCurrent(n) => eprintln!("genboot: generation {n} is now current"),
            Change::Deleted(numbers) => {
                let list: Vec<String> = numbers.iter().map(u32::to_string).collect();
                eprintln!(
                    "genboot: deleted generation(s) {}; `genboot gc` frees their store objects",
                    list.join(", ")
                );
            }
        }
    }
}

impl Observer for Printer {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Note(n) => self.note(n),
            Event::Added {
                number,
                new,
                generation,
            } => {
                if self.image {
                    eprintln!(
                        "genboot: generation {number}{} ({})",
                        if new { "" } else { " (already current)" },
                        generation.base_name()
                    );
                } else if new {
                    eprintln!(
                        "genboot: generation {number} is now current ({})",
                        generation.base_name()
                    );
                } else {
                    eprintln!(
                        "genboot: generation {number} is already current with this configuration"
                    );
                }
            }
            Event::Changed(c) => self.changed(c),
            Event::Installed { esp, report } => self.installed(esp, report),
            Event::BootEntry(BootEntry::Registered(r)) => {
                let list = |o: &[u16]| {
                    o.iter()
                        .map(|n| format!("{n:04X}"))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                eprintln!(
                    "genboot: firmware boot entry Boot{:04X} \"{}\" ({}); BootOrder {}{}",
                    r.slot,
                    crate::host::boot_entry::DESCRIPTION,
                    if r.written { "written" } else { "unchanged" },
                    list(&r.order_after),
                    if r.order_after == r.order_before {
                        String::new()
                    } else {
                        format!(" (was {})", list(&r.order_before))
                    }
                );
            }
            Event::BootEntry(BootEntry::Skipped(why)) => {
                eprintln!("genboot: note: no firmware boot entry written: {why}")
            }
            Event::NoEsp(why) => {
                eprintln!("genboot: note: the boot menu was not updated: {why}")
            }
        }
    }
}

/// Print an error, each of its causes, and the hint of each (library
/// errors carry their cause in their own text and return no `source()`,
/// so nothing repeats).
pub fn print_error(e: &(dyn Error + 'static)) {
    for (i, cause) in std::iter::successors(Some(e), |e| (*e).source()).enumerate() {
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
fn hint_of(e: &(dyn Error + 'static)) -> Option<String> {
    macro_rules! hint_of_any {
        ($($t:ty),* $(,)?) => {
            $(if let Some(e) = e.downcast_ref::<$t>() {
                return e.hint();
            })*
        };
    }
    hint_of_any!(
        crate::app::AppError,
        crate::generation::BuildError,
        crate::generation::bootjson::BootspecError,
        crate::config::ConfigError,
        crate::gpt::DiskError,
        crate::esp::EspError,
        crate::esp::Full,
        crate::fsutil::OwnFileError,
        crate::gc::GcError,
        crate::initrd::InitrdError,
        crate::generation::kernel::KernelError,
        crate::modules::ModulesError,
        crate::profile::ProfileError,
        crate::state::StateError,
        crate::store::StoreError,
        crate::units::UnitError,
    );
    None
}
