//! Everything `genboot` prints: the events of a use case while it runs
//! (stderr), its results (stdout: tables, JSON), and errors with their
//! causes and hints.

use super::Command;
use crate::app::esp::Status;
use crate::app::etc::{Body as EtcBody, EtcDiff, EtcStatus};
use crate::app::generations::{Collected, EspVerified, ListRow, Verified};
use crate::app::image::ImageMade;
use crate::app::tree::GenerationDiff;
use crate::app::BootEntry;
use crate::app::{Change, Event, Observer};
use crate::esp::bless::Blessed;
use crate::esp::InstallReport;
use crate::gpt;
use crate::hint::Hint;
use crate::notes::Note;
use crate::tree::diff::{self, TreeDiff};
use crate::tree::etc::Local;
use crate::tree::Mounted;
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
        if c.contents > 0 {
            println!(
                "deleted {} content object(s) no tree names ({} bytes)",
                c.contents, c.content_bytes
            );
        }
        println!(
            "{} generation(s), {} store object(s), {} content object(s), {:.1} MiB freed",
            c.generations.len(),
            c.objects.len(),
            c.contents,
            (c.bytes + c.content_bytes) as f64 / (1024.0 * 1024.0)
        );
    }

    pub fn diff(&self, d: &GenerationDiff, json: bool) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if json {
            serde_json::to_writer_pretty(&mut out, d)?;
            writeln!(out)?;
        } else {
            out.write_all(diff_text(d).as_bytes())?;
        }
        Ok(())
    }

    pub fn etc_status(&self, st: &EtcStatus, json: bool) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if json {
            serde_json::to_writer_pretty(&mut out, st)?;
            writeln!(out)?;
            return Ok(());
        }
        out.write_all(etc_status_text(st).as_bytes())?;
        Ok(())
    }

    pub fn etc_diff(&self, d: &EtcDiff) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(etc_diff_text(d).as_bytes())?;
        Ok(())
    }

    pub fn mounted(&self, n: u32, m: &Mounted) {
        eprintln!(
            "genboot: generation {n}'s tree is mounted read-only at {}{}; `genboot umount {}` unmounts it",
            m.dir.display(),
            if m.legacy {
                " (the kernel's overlayfs has no data-only layers: the legacy form)"
            } else {
                ""
            },
            m.dir.display()
        );
    }

    /// The store's part, then the ESP's; exit code 1 when anything is wrong.
    pub fn verified(&self, v: Verified) -> anyhow::Result<ExitCode> {
        for m in &v.store {
            println!("MISMATCH {}: {}", m.object, m.problem);
        }
        if v.store.is_empty() {
            println!(
                "{} store object(s) and {} content object(s) verified, all match their hashes, modes and owners",
                v.objects, v.contents
            );
        } else {
            println!(
                "{} problem(s) in {} store object(s) and {} content object(s) (contents, modes or owners)",
                v.store.len(),
                v.objects,
                v.contents
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

/// `genboot diff` for people: the boot parts, then the trees' difference.
fn diff_text(d: &GenerationDiff) -> String {
    let mut s = format!(
        "generation {} → {} ({} → {})
",
        d.from, d.to, d.from_object, d.to_object
    );
    if let Some((a, b)) = &d.kernel {
        s.push_str(&format!(
            "kernel: {a} → {b}
"
        ));
    }
    for (what, removed, added) in [
        ("kernel parameters", &d.params_removed, &d.params_added),
        (
            "initrd modules",
            &d.initrd_modules_removed,
            &d.initrd_modules_added,
        ),
    ] {
        for r in removed {
            s.push_str(&format!(
                "{what}: - {r}
"
            ));
        }
        for a in added {
            s.push_str(&format!(
                "{what}: + {a}
"
            ));
        }
    }
    for n in &d.without_tree {
        s.push_str(&format!(
            "generation {n} has no tree
"
        ));
    }
    if let Some(t) = &d.tree {
        s.push_str(&tree_diff_text(t));
    }
    s
}

fn etc_status_text(st: &EtcStatus) -> String {
    let mut s = String::new();
    if !st.exists {
        eprintln!(
            "genboot: generation {} has no /etc layer yet ({}): its /etc is the image's",
            st.generation,
            st.layer.display()
        );
    }
    for c in &st.changes {
        s.push_str(&format!("{} {}\n", c.change.letter(), c.path));
    }
    s
}

fn etc_diff_text(d: &EtcDiff) -> String {
    let mut s = etc_status_text(&d.status);
    for (c, body) in &d.files {
        let Some(body) = body else { continue };
        s.push('\n');
        match body {
            EtcBody::Binary => s.push_str(&format!("Binary files {} differ\n", c.path)),
            EtcBody::Other { image, local } => s.push_str(&format!(
                "{}: the image has {image}, the layer {local}\n",
                c.path
            )),
            EtcBody::Text(hunks) => {
                let what: Vec<&str> = c.what.iter().copied().filter(|w| *w != "content").collect();
                if !what.is_empty() && c.change == Local::Modified {
                    s.push_str(&format!("{}: {} differ\n", c.path, what.join(", ")));
                }
                if hunks.is_empty() {
                    continue;
                }
                let (a, b) = match c.change {
                    Local::Added => ("/dev/null".to_string(), format!("{} (local)", c.path)),
                    Local::Deleted => (format!("{} (image)", c.path), "/dev/null".to_string()),
                    Local::Modified => {
                        (format!("{} (image)", c.path), format!("{} (local)", c.path))
                    }
                };
                s.push_str(&format!("--- {a}\n+++ {b}\n"));
                for h in hunks {
                    s.push_str(&format!(
                        "@@ -{},{} +{},{} @@\n",
                        h.a.0, h.a.1, h.b.0, h.b.1
                    ));
                    for (op, line) in &h.lines {
                        s.push_str(&format!("{op}{line}\n"));
                    }
                }
            }
        }
    }
    s
}

fn signed(n: i64) -> String {
    if n < 0 {
        format!("-{}", human(n.unsigned_abs()))
    } else {
        format!("+{}", human(n as u64))
    }
}

/// The trees' part of `genboot diff`.
fn tree_diff_text(d: &TreeDiff) -> String {
    let mut s = format!(
        "tree: {} → {}
",
        d.from, d.to
    );
    if d.is_empty() {
        s.push_str(
            "  no differences (mtimes aside)
",
        );
        return s;
    }
    let count = |c: diff::Change| d.packages.iter().filter(|p| p.change == c).count();
    if !d.packages.is_empty() {
        s.push_str(&format!(
            "packages: {} added, {} removed, {} upgraded, {} downgraded
",
            count(diff::Change::Added),
            count(diff::Change::Removed),
            count(diff::Change::Upgraded),
            count(diff::Change::Downgraded)
        ));
        let w = d.packages.iter().map(|p| p.name.len()).max().unwrap_or(0);
        for p in &d.packages {
            s.push_str(&format!(
                "  {:w$}  {} → {}\n",
                p.name,
                p.from.as_deref().unwrap_or("∅"),
                p.to.as_deref().unwrap_or("∅"),
            ));
        }
    }
    let id = |x: Option<u32>| x.map_or_else(|| "∅".to_string(), |i| i.to_string());
    for (what, list) in [("users", &d.users), ("groups", &d.groups)] {
        for c in list {
            let verb = match c.change {
                diff::Change::Added => "added",
                diff::Change::Removed => "removed",
                _ => "renumbered",
            };
            s.push_str(&format!(
                "{what}: {verb} {} ({} → {})\n",
                c.name,
                id(c.from),
                id(c.to)
            ));
        }
    }
    let f = &d.files;
    s.push_str(&format!(
        "files: {} added, {} removed, {} changed, {} in size; {} of new content\n",
        f.added,
        f.removed,
        f.changed,
        signed(f.bytes),
        human(f.new_content_bytes)
    ));
    let w = f.by_dir.iter().map(|d| d.dir.len()).max().unwrap_or(0);
    for d in &f.by_dir {
        s.push_str(&format!(
            "  {:w$}  +{:<6} -{:<6} ~{:<6} {}\n",
            d.dir,
            d.added,
            d.removed,
            d.changed,
            signed(d.bytes)
        ));
    }
    if !d.etc.is_empty() {
        s.push_str("/etc defaults:\n");
        for e in &d.etc {
            match e.change {
                diff::Change::Added => s.push_str(&format!("  added    {}\n", e.path)),
                diff::Change::Removed => s.push_str(&format!("  removed  {}\n", e.path)),
                _ => s.push_str(&format!("  changed  {} ({})\n", e.path, e.what.join(", "))),
            }
        }
    }
    s
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
        crate::tree::TreeError,
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::diff::{AccountChange, FileSummary, PackageChange};

    #[test]
    fn a_diff_reads_like_rpm_ostree_db_diff() {
        let tree = TreeDiff {
            from: "a-rootfs-x".into(),
            to: "b-rootfs-x".into(),
            packages: vec![PackageChange {
                name: "nginx-light".into(),
                arch: "amd64".into(),
                from: None,
                to: Some("1.22.1-9".into()),
                change: diff::Change::Added,
            }],
            users: vec![AccountChange {
                name: "_chrony".into(),
                from: None,
                to: Some(999),
                change: diff::Change::Added,
            }],
            groups: Vec::new(),
            files: FileSummary {
                added: 3,
                bytes: 2048,
                new_content_bytes: 2048,
                ..FileSummary::default()
            },
            etc: vec![diff::EtcChange {
                path: "/etc/x.conf".into(),
                change: diff::Change::Changed,
                what: vec!["mode"],
            }],
        };
        let d = GenerationDiff {
            from: 1,
            to: 2,
            from_object: "g1".into(),
            to_object: "g2".into(),
            kernel: Some(("6.1.0-49-amd64".into(), "6.1.0-50-amd64".into())),
            params_removed: vec!["quiet".into()],
            params_added: Vec::new(),
            initrd_modules_removed: Vec::new(),
            initrd_modules_added: vec!["nvme".into()],
            tree: Some(tree),
            without_tree: Vec::new(),
        };
        let text = diff_text(&d);
        for want in [
            "generation 1 → 2 (g1 → g2)\n",
            "kernel: 6.1.0-49-amd64 → 6.1.0-50-amd64\n",
            "kernel parameters: - quiet\n",
            "initrd modules: + nvme\n",
            "packages: 1 added, 0 removed, 0 upgraded, 0 downgraded\n",
            "  nginx-light  ∅ → 1.22.1-9\n",
            "users: added _chrony (∅ → 999)\n",
            "files: 3 added, 0 removed, 0 changed, +2.0 KiB in size; 2.0 KiB of new content\n",
            "  changed  /etc/x.conf (mode)\n",
        ] {
            assert!(text.contains(want), "{want:?} in:\n{text}");
        }
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["tree"]["users"][0]["name"], "_chrony");
        assert_eq!(json["initrdModulesAdded"][0], "nvme");
    }
}
