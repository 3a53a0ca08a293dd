//! Garbage collection: delete profile generations by policy, then every
//! store object that no remaining generation reaches. The booted
//! generation's object (`/run/genboot/booted`) is always a root, as NixOS's
//! `/run/booted-system` is: the running system's kernel modules are bind
//! mounted from it.

use crate::profile::{closure, Lock, Profile, ProfileError};
use crate::store::{LockKind, Store, StoreError, StoreLock, StorePath};
use std::time::{Duration, SystemTime};

/// The largest `--older-than` taken: 100 years.
pub const MAX_AGE_SECS: u64 = 100 * 365 * 86400;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "--older-than {0:?} is not an age\nHint: write a number and a unit: 90s, 30m, 12h, 30d, 2w"
    )]
    BadAge(String),
    #[error("--older-than {0:?} is too large: genboot takes ages up to 100 years (36500d)\nHint: give an age such as 30d or 12w; leave --older-than out to delete no generation by age")]
    AgeTooLarge(String),
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Policy {
    /// Keep the newest N generations.
    pub keep: Option<u32>,
    /// Delete generations older than this.
    pub older_than: Option<Duration>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub objects: Vec<StorePath>,
    pub bytes: u64,
}

/// `90s`, `30m`, `12h`, `30d`, `2w`; at most [`MAX_AGE_SECS`] (a number
/// that does not fit is refused, never wrapped).
pub fn parse_age(s: &str) -> Result<Duration, GcError> {
    let bad = || GcError::BadAge(s.to_string());
    let too_large = || GcError::AgeTooLarge(s.to_string());
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    if n.is_empty() {
        return Err(bad());
    }
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(bad()),
    };
    // Only digits are left, so a parse error is an overflow.
    let n: u64 = n.parse().map_err(|_| too_large())?;
    let secs = n.checked_mul(unit_secs).ok_or_else(too_large)?;
    if secs > MAX_AGE_SECS {
        return Err(too_large());
    }
    Ok(Duration::from_secs(secs))
}

/// Which generations the policy deletes: never the current one, nor any in
/// `protect` (the booted generation).
pub fn select(
    profile: &Profile,
    policy: Policy,
    protect: &[u32],
    now: SystemTime,
) -> Result<Vec<u32>, GcError> {
    let gens = profile.generations()?;
    let mut out = Vec::new();
    let n = gens.len();
    for (i, g) in gens.iter().enumerate() {
        if g.current || protect.contains(&g.number) {
            continue;
        }
        let newest_rank = n - i; // 1 = newest
        let beyond_keep = policy.keep.is_some_and(|k| newest_rank > k as usize);
        let too_old = policy
            .older_than
            .is_some_and(|age| now.duration_since(g.date).unwrap_or_default() > age);
        if beyond_keep || too_old {
            out.push(g.number);
        }
    }
    Ok(out)
}

/// Delete every object that neither a profile generation nor `booted` (the
/// running system's generation object) reaches, and the leftovers of
/// interrupted builds. Needs the profile lock and the store's exclusive lock
/// (no build is running, so every staging directory is a leftover).
pub fn collect(
    store: &Store,
    profile: &Profile,
    booted: Option<&StorePath>,
    _lock: &Lock,
    store_lock: &StoreLock,
) -> Result<Report, GcError> {
    assert_eq!(
        store_lock.kind,
        LockKind::Exclusive,
        "gc needs the store to itself"
    );
    let mut roots = profile.roots()?;
    roots.extend(booted.cloned());
    let live = closure(store, &roots)?;
    let mut report = Report::default();
    for sp in store.objects()? {
        if live.contains(&sp) {
            continue;
        }
        report.bytes += du(&store.path(&sp));
        store.delete(&sp)?;
        report.objects.push(sp);
    }
    for tmp in store.leftovers()? {
        report.bytes += du(&tmp);
        crate::store::remove_tree(&tmp)?;
    }
    Ok(report)
}

fn du(path: &std::path::Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
            .unwrap_or(0)
    } else {
        meta.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("30d").unwrap(), Duration::from_secs(30 * 86400));
        assert_eq!(parse_age("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_age("36500d").unwrap(),
            Duration::from_secs(MAX_AGE_SECS)
        );
        assert!(parse_age("30").is_err());
        assert!(parse_age("d").is_err());
        assert!(parse_age("3y").is_err());
        assert!(parse_age("-3d").is_err());
    }

    #[test]
    fn ages_that_overflow_are_refused_not_wrapped() {
        // 30500568904944 weeks in seconds wraps u64 to about 10 days.
        for s in [
            "30500568904944w",
            "18446744073709551616s",
            "99999999999999999999999d",
            "36501d",
        ] {
            let e = parse_age(s).unwrap_err();
            assert!(matches!(e, GcError::AgeTooLarge(_)), "{s}: {e}");
            assert!(e.to_string().contains("too large"), "{e}");
        }
    }
}
