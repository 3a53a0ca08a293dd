//! Verbs on the store and the profile: build, switch, list, rollback,
//! set-default, delete, gc, verify.

use super::{esp_cmds, Ctx};
use crate::bootspec::BootJson;
use crate::config::SystemConfig;
use crate::profile::{Generation, Profile};
use crate::store::{LockKind, Store};
use crate::{build, gc};
use anyhow::Context;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

fn load(config: &Path) -> anyhow::Result<SystemConfig> {
    Ok(SystemConfig::load(config)?)
}

pub(super) fn build(ctx: &Ctx, config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = load(config)?;
    let store = Store::open(&ctx.state)?;
    let store_lock = store.lock(LockKind::Shared, !ctx.no_wait)?;
    let built = build::build(&store, &cfg, &store_lock)
        .with_context(|| format!("building {}", config.display()))?;
    println!("{}", store.path(&built.generation).display());
    Ok(ExitCode::SUCCESS)
}

pub(super) fn switch(ctx: &Ctx, config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = load(config)?;
    esp_cmds::check_esp(ctx, &cfg.boot)?;
    let store = Store::open(&ctx.state)?;
    let profile = Profile::new(&ctx.state);
    let lock = profile.lock(!ctx.no_wait)?;
    let store_lock = store.lock(LockKind::Shared, !ctx.no_wait)?;
    let built = build::build(&store, &cfg, &store_lock)
        .with_context(|| format!("building {}", config.display()))?;
    let before = profile.generations()?;
    let (n, new) = profile.add(&built.generation, &lock)?;
    if new {
        eprintln!(
            "genboot: generation {n} is now current ({})",
            built.generation.base_name()
        );
    } else {
        eprintln!("genboot: generation {n} is already current with this configuration");
    }
    esp_cmds::follow_profile_change(ctx, &profile, &before, &lock, Some(&cfg.boot))?;
    println!("{}", store.path(&built.generation).display());
    Ok(ExitCode::SUCCESS)
}

/// What `list` shows about one generation.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ListRow {
    number: u32,
    date: String,
    timestamp: u64,
    label: String,
    kernel_release: String,
    current: bool,
    path: String,
}

fn row(store: &Store, g: &Generation) -> ListRow {
    let boot = BootJson::read(&store.path(&g.target).join("boot.json")).ok();
    let ts = g
        .date
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    ListRow {
        number: g.number,
        date: format_date(ts),
        timestamp: ts,
        label: boot.as_ref().map_or("(unreadable boot.json)".into(), |b| {
            b.bootspec.label.clone()
        }),
        kernel_release: boot
            .as_ref()
            .map_or("?".into(), |b| b.genboot.kernel_release.clone()),
        current: g.current,
        path: g.target.boot_path(),
    }
}

pub(super) fn list(ctx: &Ctx, json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open_read_only(&ctx.state);
    let profile = Profile::new(&ctx.state);
    let rows: Vec<ListRow> = profile
        .generations()?
        .iter()
        .map(|g| row(&store, g))
        .collect();
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        writeln!(
            out,
            "no generations yet; run `genboot switch --config FILE`"
        )?;
        return Ok(ExitCode::SUCCESS);
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
    for r in &rows {
        let mark = if r.current { "*" } else { " " };
        let cur = if r.current { "  (current)" } else { "" };
        writeln!(
            out,
            "{mark} {:>4}  {:<19}  {:<kw$}  {}{cur}",
            r.number, r.date, r.kernel_release, r.label
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn rollback(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let profile = Profile::new(&ctx.state);
    let lock = profile.lock(!ctx.no_wait)?;
    let before = profile.generations()?;
    let n = profile.rollback(&lock)?;
    eprintln!("genboot: rolled back to generation {n}");
    esp_cmds::follow_profile_change(ctx, &profile, &before, &lock, None)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn set_default(ctx: &Ctx, n: u32) -> anyhow::Result<ExitCode> {
    let profile = Profile::new(&ctx.state);
    let lock = profile.lock(!ctx.no_wait)?;
    let before = profile.generations()?;
    profile.set_current(n, &lock)?;
    eprintln!("genboot: generation {n} is now current");
    esp_cmds::follow_profile_change(ctx, &profile, &before, &lock, None)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn delete(ctx: &Ctx, numbers: &[u32]) -> anyhow::Result<ExitCode> {
    let profile = Profile::new(&ctx.state);
    let lock = profile.lock(!ctx.no_wait)?;
    let before = profile.generations()?;
    profile.delete(numbers, esp_cmds::booted_generation(ctx), &lock)?;
    let list: Vec<String> = numbers.iter().map(u32::to_string).collect();
    eprintln!(
        "genboot: deleted generation(s) {}; `genboot gc` frees their store objects",
        list.join(", ")
    );
    esp_cmds::follow_profile_change(ctx, &profile, &before, &lock, None)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn gc(
    ctx: &Ctx,
    keep: Option<u32>,
    older_than: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let policy = gc::Policy {
        keep,
        older_than: older_than.map(crate::units::parse_age).transpose()?,
    };
    let store = Store::open(&ctx.state)?;
    let profile = Profile::new(&ctx.state);
    let lock = profile.lock(!ctx.no_wait)?;
    // Alone in the store: no build's staging directory or fresh object goes.
    let store_lock = store.lock(LockKind::Exclusive, !ctx.no_wait)?;
    // The running system: its generation stays in the profile and its
    // object (with everything it reaches) in the store, whatever the policy.
    let booted_object = esp_cmds::read_booted(ctx).map(|(_, sp)| sp);
    let booted = esp_cmds::booted_generation(ctx);
    let protect = booted.into_iter().collect::<Vec<_>>();
    let victims = gc::select(&profile, policy, &protect, SystemTime::now())?;
    let before = profile.generations()?;
    if !victims.is_empty() {
        profile.delete(&victims, booted, &lock)?;
    }
    // The boot menu drops the deleted generations before their files go;
    // if it cannot, the profile is put back and nothing is deleted.
    esp_cmds::follow_profile_change(ctx, &profile, &before, &lock, None)
        .context("gc deleted nothing")?;
    let report = gc::collect(&store, &profile, booted_object.as_ref(), &lock, &store_lock)?;
    for n in &victims {
        println!("deleted generation {n}");
    }
    for sp in &report.objects {
        println!("deleted {}", sp.boot_path());
    }
    println!(
        "{} generation(s), {} store object(s), {:.1} MiB freed",
        victims.len(),
        report.objects.len(),
        report.bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn verify(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let store = Store::open_read_only(&ctx.state);
    // Shared with builds; `gc` does not delete objects under it.
    let _store_lock = store.lock_for_reading(!ctx.no_wait)?;
    let objects = store.objects()?;
    let bad = store.verify()?;
    for m in &bad {
        println!("MISMATCH {}: {}", m.object, m.problem);
    }
    if bad.is_empty() {
        println!(
            "{} store object(s) verified, all match their hashes, modes and owners",
            objects.len()
        );
    } else {
        println!(
            "{} of {} store object(s) failed verification (contents, modes or owners)",
            bad.len(),
            objects.len()
        );
    }
    // The ESP's copies of the kernels and initrds, against the store.
    let esp_problems = super::esp_cmds::verify_esp(ctx)?;
    Ok(if bad.is_empty() && esp_problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) from Unix seconds.
pub(crate) fn format_date(ts: u64) -> String {
    let days = (ts / 86400) as i64;
    let secs = ts % 86400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_format_in_utc() {
        assert_eq!(super::format_date(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_date(1_795_555_200), "2026-11-24 21:20:00");
    }
}
