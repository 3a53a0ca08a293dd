//! The check genboot runs whenever it opens an image's ESP for writing,
//! and the repairs of what an interrupted genboot (this one, or an older
//! one that wrote FAT structures out of order) can leave.
//!
//! The check walks every directory of the volume from the root and follows
//! every chain: each cluster in range and in use, no loops, sizes that match
//! their chains, no cluster used twice. Then:
//!
//! - **genboot's own files** with damage, temporary files
//!   (`*.genboot-tmp`), and short-name-only leftovers of genboot's names
//!   whose long name was torn are removed (genboot writes them again);
//!   genboot's own files are everything in `/EFI/genboot`, the
//!   `genboot-*.conf` entries in `/loader/entries`, `/loader/loader.conf`
//!   and `/loader/entries.srel`;
//! - long-name slots that belong to no entry are cleared (they are not
//!   files; the firmware ignores them, `fsck.fat` reports them);
//! - clusters marked used that no entry references are freed, FAT copy 2
//!   is rewritten from copy 1, the free count is recounted from the FAT,
//!   and the dirty bit is cleared once the run ends.
//!
//! Damage anywhere else — a foreign file whose chain is broken, two
//! foreign files sharing clusters — is not genboot's to fix: the volume is
//! refused before anything is written, with the list and `fsck.fat -a` as
//! the fix. Foreign files are never changed.
//!
//! Repairs are staged, not written: they are written (directory sectors,
//! barrier, then the FAT) just before the first write of the run, or when
//! it ends. A run that refuses — a full ESP, a bad configuration — leaves
//! the image byte for byte as it was.

use super::fs::{eq_name, Entry, FatError, Volume};
use crate::esp::entry::EntryName;
use crate::esp::layout;

pub(super) struct Findings {
    /// What genboot repairs, one line each.
    pub repairs: Vec<String>,
    /// Damage genboot leaves alone (and so refuses to write).
    pub damage: Vec<String>,
    /// The volume was marked dirty when opened.
    pub was_dirty: bool,
}

/// Why a file is genboot's to repair.
enum Own {
    Temp,
    Torn,
    File,
}

fn owned(dir: &str, e: &Entry) -> Option<Own> {
    let lower = e.name.to_ascii_lowercase();
    if lower.ends_with(layout::TMP_SUFFIX) {
        return Some(Own::Temp);
    }
    let ours = layout::DIRS.iter().any(|d| eq_name(d, dir));
    if ours && !e.long && e.torn_lfn {
        // A short entry whose long name was torn: `GENBOO~1.CON` is an
        // entry, `*~1.GEN` a temporary file.
        let base = &e.sfn[..8];
        if base.starts_with(b"GENBOO") || &e.sfn[8..] == b"GEN" {
            return Some(Own::Torn);
        }
    }
    if eq_name(dir, layout::FILES_DIR) {
        return Some(Own::File);
    }
    if eq_name(dir, layout::ENTRIES_DIR) && EntryName::parse(&lower).is_some() {
        return Some(Own::File);
    }
    let full = format!("{dir}/{lower}");
    if eq_name(&full, layout::LOADER_CONF) || eq_name(&full, layout::ENTRIES_SREL) {
        return Some(Own::File);
    }
    None
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

impl Volume {
    /// Why the file entry `e` is damaged, if it is.
    fn file_problem(&self, e: &Entry, claimed: &[bool]) -> Option<String> {
        if e.size == 0 {
            return (e.cluster != 0)
                .then(|| format!("it is empty but starts at cluster {}", e.cluster));
        }
        if e.cluster == 0 {
            return Some(format!("it has {} bytes but no clusters", e.size));
        }
        match self.chain(e.cluster, Some(self.clusters_for(u64::from(e.size)))) {
            Err(w) => Some(w),
            Ok(chain) => chain
                .iter()
                .any(|c| claimed[*c as usize])
                .then(|| "it shares clusters with another file".to_string()),
        }
    }

    /// Free the clusters marked used that no file claims, and note the
    /// FAT copy and FS information sector that will be rewritten.
    fn free_lost_clusters(&mut self, claimed: &[bool], f: &mut Findings) {
        let mut lost = 0u64;
        for c in 2..self.clusters + 2 {
            let v = self.fat_get(c);
            if !claimed[c as usize] && v != 0 && !self.is_bad(v) {
                self.fat_set(c, 0);
                lost += 1;
            }
        }
        if lost > 0 {
            f.repairs.push(format!(
                "freed {lost} cluster(s) marked used that no file uses ({} bytes)",
                lost * u64::from(self.cluster_bytes)
            ));
        }
        if self.copies_differed {
            f.repairs
                .push("FAT copy 2 differed from copy 1; it is rewritten from copy 1".into());
        }
        if self.fsinfo_stale() {
            f.repairs.push(
                "the free-cluster count in the FS information sector is wrong; it is recounted from the FAT".into(),
            );
        }
    }

    /// Check the whole volume and stage the repairs (see the module
    /// documentation).
    pub fn check(&mut self) -> Result<Findings, FatError> {
        let mut f = Findings {
            repairs: Vec::new(),
            damage: Vec::new(),
            was_dirty: self.marked_dirty(),
        };
        let mut claimed = vec![false; self.clusters as usize + 2];
        let mut todo = vec![(self.root(), String::new(), 0u32)];
        while let Some((r, path, depth)) = todo.pop() {
            if depth > 32 {
                f.damage.push(format!(
                    "/{path}: directories nested more than 32 deep (a loop?)"
                ));
                continue;
            }
            let mut dir = match self.load_dir(r, &path) {
                Ok(d) => d,
                Err(FatError::Damaged(w)) => {
                    f.damage.push(w);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if dir.clusters.iter().any(|c| claimed[*c as usize]) {
                f.damage.push(format!(
                    "directory /{path} shares clusters with another file"
                ));
                continue;
            }
            for c in &dir.clusters {
                claimed[*c as usize] = true;
            }
            let listing = self.parse(&dir);
            if listing.junk_after_end {
                f.damage.push(format!(
                    "directory /{path} has entries after its end-of-directory mark"
                ));
            }
            // Entries to remove: (first slot, short entry slot).
            let mut remove: Vec<(usize, usize)> = Vec::new();
            let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
            for e in &listing.entries {
                let full = join(&path, &e.name);
                let own = owned(&path, e);
                let upper: String = e.name.chars().flat_map(char::to_uppercase).collect();
                if !seen.insert(upper) {
                    if own.is_some() {
                        remove.push((e.first, e.sfn_slot));
                        f.repairs
                            .push(format!("removed a second entry named /{full}"));
                    } else {
                        f.damage
                            .push(format!("/{full}: two entries have this name"));
                    }
                    continue;
                }
                if e.is_dir() {
                    if e.size != 0 {
                        f.damage
                            .push(format!("directory /{full} has a size ({} bytes)", e.size));
                    }
                    if self.in_range(e.cluster) {
                        todo.push((
                            super::fs::DirRef::Chain {
                                first: e.cluster,
                                root: false,
                            },
                            full,
                            depth + 1,
                        ));
                    } else {
                        f.damage.push(format!(
                            "directory /{full} starts at cluster {}, outside the volume",
                            e.cluster
                        ));
                    }
                    continue;
                }
                match (self.file_problem(e, &claimed), own) {
                    (None, Some(Own::Temp)) => {
                        remove.push((e.first, e.sfn_slot));
                        f.repairs
                            .push(format!("removed /{full}, left by an interrupted run"));
                    }
                    (None, Some(Own::Torn)) => {
                        remove.push((e.first, e.sfn_slot));
                        f.repairs.push(format!(
                            "removed /{full}, a genboot file whose long name was torn"
                        ));
                    }
                    (None, _) => {
                        if e.cluster != 0 {
                            let n = self.clusters_for(u64::from(e.size));
                            if let Ok(chain) = self.chain(e.cluster, Some(n)) {
                                for c in chain {
                                    claimed[c as usize] = true;
                                }
                            }
                        }
                    }
                    (Some(p), Some(_)) => {
                        remove.push((e.first, e.sfn_slot));
                        f.repairs.push(format!("removed damaged /{full} ({p})"));
                    }
                    (Some(p), None) => f.damage.push(format!("/{full}: {p}")),
                }
            }
            if listing.orphans.is_empty() && remove.is_empty() {
                continue;
            }
            if !listing.orphans.is_empty() {
                f.repairs.push(format!(
                    "cleared {} long-name slot(s) that belong to no file in /{path}",
                    listing.orphans.len()
                ));
            }
            // Stage the changed sectors: each removed entry's short-entry
            // sector before its other sectors, then the orphaned slots.
            let mut order: Vec<usize> = Vec::new();
            for (first, sfn) in &remove {
                for k in (*first..=*sfn).rev() {
                    dir.bytes[k * 32] = 0xE5;
                    order.push(k);
                }
            }
            for k in &listing.orphans {
                dir.bytes[*k * 32] = 0xE5;
                order.push(*k);
            }
            let mut staged: Vec<u64> = Vec::new();
            for k in order {
                let sector = (k * 32) as u64 / u64::from(self.bps);
                if staged.contains(&sector) {
                    continue;
                }
                staged.push(sector);
                self.stage_dir_sector(&dir, k, format!("directory /{path} (repair)"))?;
            }
        }
        if !f.damage.is_empty() {
            return Ok(f);
        }
        self.free_lost_clusters(&claimed, &mut f);
        Ok(f)
    }
}
