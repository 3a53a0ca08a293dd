//! Garbage collection: delete profile generations by policy, then every
//! store object that no remaining generation reaches.

use crate::profile::{closure, Lock, Profile, ProfileError};
use crate::store::{Store, StoreError, StorePath};
use std::time::{Duration, SystemTime};

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
    pub generations: Vec<u32>,
    pub objects: Vec<StorePath>,
    pub bytes: u64,
}

pub fn parse_age(s: &str) -> Result<Duration, GcError> {
    let bad = || GcError::BadAge(s.to_string());
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(n * secs))
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

/// Delete the selected generations, then unreachable objects and leftovers
/// of interrupted builds.
pub fn collect(
    store: &Store,
    profile: &Profile,
    delete: &[u32],
    lock: &Lock,
) -> Result<Report, GcError> {
    if !delete.is_empty() {
        profile.delete(delete, lock)?;
    }
    let live = closure(store, &profile.roots()?)?;
    let mut report = Report {
        generations: delete.to_vec(),
        ..Report::default()
    };
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
        assert!(parse_age("30").is_err());
        assert!(parse_age("d").is_err());
        assert!(parse_age("3y").is_err());
    }
}
