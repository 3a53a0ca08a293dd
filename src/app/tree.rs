//! The verbs of whole-system generations: `diff` (what changed between
//! two generations, read from the store only), `mount` (a read-only view
//! of a generation's tree) and `umount`.

use super::{AppError, Session};
use crate::generation::bootjson::BootJson;
use crate::profile::{Profile, ProfileError};
use crate::store::{LockKind, Store, StorePath};
use crate::tree::{self, TreeDiff};
use anyhow::Context;
use std::path::Path;

/// A generation of the profile: its object and `boot.json`.
pub(super) struct Gen {
    pub(super) number: u32,
    pub(super) object: StorePath,
    pub(super) boot: BootJson,
}

pub(super) fn generation(s: &Session, store: &Store, n: u32) -> anyhow::Result<Gen> {
    let gens = Profile::new(&s.state).generations()?;
    let g = gens
        .iter()
        .find(|g| g.number == n)
        .ok_or(ProfileError::NoSuchGeneration(n))?;
    let path = store.path(&g.target).join("boot.json");
    let boot = BootJson::read(&path)?;
    Ok(Gen {
        number: n,
        object: g.target.clone(),
        boot,
    })
}

/// The tree object a generation names, when it has one.
pub(super) fn tree_of(store: &Store, g: &Gen) -> anyhow::Result<Option<StorePath>> {
    let Some(t) = &g.boot.genboot.tree else {
        return Ok(None);
    };
    let (object, _) = store.resolve_boot_path(&t.object).with_context(|| {
        format!(
            "generation {}: boot.json names the tree {:?}, which is not a store path",
            g.number, t.object
        )
    })?;
    Ok(Some(object))
}

/// Lists' difference: (removed, added), each in the order given.
fn list_diff(a: &[String], b: &[String]) -> (Vec<String>, Vec<String>) {
    let removed = a.iter().filter(|x| !b.contains(x)).cloned().collect();
    let added = b.iter().filter(|x| !a.contains(x)).cloned().collect();
    (removed, added)
}

/// What `genboot diff A B` found.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationDiff {
    pub from: u32,
    pub to: u32,
    pub from_object: String,
    pub to_object: String,
    /// Kernel releases, when they differ.
    pub kernel: Option<(String, String)>,
    pub params_removed: Vec<String>,
    pub params_added: Vec<String>,
    pub initrd_modules_removed: Vec<String>,
    pub initrd_modules_added: Vec<String>,
    /// The trees' difference, when both generations have one.
    pub tree: Option<TreeDiff>,
    /// Generations among the two without a tree.
    pub without_tree: Vec<u32>,
}

/// `genboot diff A B`: kernel, parameters, initrd modules and (for
/// generations with trees) packages, users, files and `/etc`.
pub fn diff(s: &Session, a: u32, b: u32) -> anyhow::Result<GenerationDiff> {
    let store = Store::open_read_only(&s.state);
    let _store_lock = store.lock_for_reading(s.wait())?;
    let (ga, gb) = (generation(s, &store, a)?, generation(s, &store, b)?);
    let (ka, kb) = (
        &ga.boot.genboot.kernel_release,
        &gb.boot.genboot.kernel_release,
    );
    let (params_removed, params_added) = list_diff(
        &ga.boot.bootspec.kernel_params,
        &gb.boot.bootspec.kernel_params,
    );
    let (initrd_modules_removed, initrd_modules_added) = list_diff(
        &ga.boot.genboot.initrd_modules,
        &gb.boot.genboot.initrd_modules,
    );
    let (ta, tb) = (tree_of(&store, &ga)?, tree_of(&store, &gb)?);
    let without_tree = [(a, &ta), (b, &tb)]
        .iter()
        .filter(|(_, t)| t.is_none())
        .map(|(n, _)| *n)
        .collect();
    let tree = match (&ta, &tb) {
        (Some(x), Some(y)) => Some(tree::diff_trees(&store, x, y)?),
        _ => None,
    };
    Ok(GenerationDiff {
        from: a,
        to: b,
        from_object: ga.object.base_name(),
        to_object: gb.object.base_name(),
        kernel: (ka != kb).then(|| (ka.clone(), kb.clone())),
        params_removed,
        params_added,
        initrd_modules_removed,
        initrd_modules_added,
        tree,
        without_tree,
    })
}

/// `genboot mount N DIR`: generation N's tree, read-only, at `dir`.
pub fn mount(s: &Session, n: u32, dir: &Path) -> anyhow::Result<tree::Mounted> {
    let store = Store::open_read_only(&s.state);
    // gc waits: the tree stays until the mount is recorded (then gc keeps it).
    let _store_lock = store.lock(LockKind::Shared, s.wait())?;
    let g = generation(s, &store, n)?;
    let object = tree_of(&store, &g)?.ok_or(AppError::NoTree { number: n })?;
    Ok(tree::mount_tree(&store, &object, dir)?)
}

/// `genboot umount DIR`: what `mount` mounted there.
pub fn umount(dir: &Path) -> anyhow::Result<()> {
    Ok(tree::umount_tree(dir)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_diff_keeps_order() {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            list_diff(&v(&["a", "b", "c"]), &v(&["c", "d", "a"])),
            (v(&["b"]), v(&["d"]))
        );
    }
}
