//! `/etc` across generations: `switch` prepares a new generation's `/etc`
//! layer from the booted generation's (or, when this machine does not run
//! one of the profile's, the current generation's) by the 3-way rule of
//! [`crate::tree::etc`]; `genboot etc status|diff` shows a layer's local
//! changes against its image.

use super::tree::{generation, tree_of, Gen};
use super::{AppError, Locked, Session};
use crate::generation::bootjson::BootJson;
use crate::notes::Note;
use crate::store::{Store, StorePath};
use crate::tree::etc::{self, Hunk, Image, LocalChange, Old, Prepared};
use crate::tree::manifest::{Kind, Manifest};
use crate::tree::{read_manifest, Objects};
use genboot_format::ETC_LAYERS_DIR;
use std::path::{Path, PathBuf};

/// Where generation layers live below `--root`.
fn layers_dir(s: &Session) -> anyhow::Result<PathBuf> {
    Ok(s.state.in_root(Path::new(ETC_LAYERS_DIR))?)
}

/// A tree's manifest and a reader of its content objects.
struct TreeImage {
    manifest: Manifest,
    objects: Objects,
}

impl TreeImage {
    fn load(store: &Store, tree: &StorePath) -> anyhow::Result<TreeImage> {
        Ok(TreeImage {
            manifest: read_manifest(store, tree)?,
            objects: Objects::of(store),
        })
    }
}

/// The tree a generation object's `boot.json` names.
fn tree_of_object(store: &Store, object: &StorePath) -> anyhow::Result<Option<StorePath>> {
    let boot = BootJson::read(&store.path(object).join("boot.json"))?;
    let g = Gen {
        number: 0,
        object: object.clone(),
        boot,
    };
    tree_of(store, &g)
}

/// `switch`: the new generation's layer, before it becomes current. Only
/// for a generation with a tree whose layer does not exist yet, from a
/// source generation with a tree and a layer (otherwise there is nothing to
/// carry: genboot-init makes an empty layer at the first boot). Tells what
/// it carried.
pub(super) fn prepare(
    locked: &Locked,
    store: &Store,
    new: &StorePath,
    new_tree: Option<&StorePath>,
) -> anyhow::Result<Option<Prepared>> {
    let s = locked.session;
    let Some(new_tree) = new_tree else {
        return Ok(None);
    };
    let layers = layers_dir(s)?;
    let name = new.base_name();
    if std::fs::symlink_metadata(layers.join(&name)).is_ok() {
        return Ok(Some(Prepared::Existing(layers.join(&name))));
    }
    let source = match s.booted().object {
        Some(o) => Some(o),
        None => match locked.profile.current_number()? {
            Some(_) => Some(locked.profile.current()?.target),
            None => None,
        },
    };
    let Some(source) = source.filter(|o| o != new) else {
        return Ok(None);
    };
    let Some(old_tree) = tree_of_object(store, &source)? else {
        return Ok(None);
    };
    let old_upper = layers.join(source.base_name()).join(etc::UPPER);
    if !old_upper.is_dir() {
        return Ok(None);
    }
    let (oi, ni) = (
        TreeImage::load(store, &old_tree)?,
        TreeImage::load(store, new_tree)?,
    );
    let ro = |d: &_| std::fs::read(oi.objects.path(d));
    let rn = |d: &_| std::fs::read(ni.objects.path(d));
    let old = Old {
        upper: &old_upper,
        image: Image {
            manifest: &oi.manifest,
            read: &ro,
        },
    };
    let image = Image {
        manifest: &ni.manifest,
        read: &rn,
    };
    let prepared = etc::prepare_layer(&layers, &name, Some(&old), &image)?;
    if let Prepared::Written(m) = &prepared {
        let notes = s.notes();
        let mut carried: Vec<String> = m.kept.clone();
        carried.extend(m.deleted.iter().map(|d| format!("{d} (deleted)")));
        carried.extend(m.accounts.iter().map(|a| format!("{a} (merged)")));
        notes.note(Note::Info(&format!(
            "/etc of {name}: {} carried from {}{}",
            if carried.is_empty() {
                "no local change".to_string()
            } else {
                format!("{} local change(s)", carried.len())
            },
            source.base_name(),
            if carried.is_empty() {
                String::new()
            } else {
                format!(": {}", carried.join(", "))
            }
        )));
        for c in &m.conflicts {
            notes.note(Note::Warning(&format!(
                "{c}: changed locally and in the new image; the local version is kept (`genboot etc diff` shows it against the new image)"
            )));
        }
        for d in m.dropped.iter().chain(&m.warnings) {
            notes.note(Note::Warning(d));
        }
    }
    Ok(Some(prepared))
}

/// A generation's layer, read against its image.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcStatus {
    pub generation: u32,
    pub object: String,
    pub layer: PathBuf,
    /// The layer exists (else `/etc` is the image's: no change).
    pub exists: bool,
    pub changes: Vec<LocalChange>,
}

/// How one changed path differs.
#[derive(Debug)]
pub enum Body {
    /// Text files (a missing side is empty): the hunks.
    Text(Vec<Hunk>),
    Binary,
    /// Not a regular file on either side: what each side is.
    Other {
        image: String,
        local: String,
    },
}

/// `genboot etc diff`.
#[derive(Debug)]
pub struct EtcDiff {
    pub status: EtcStatus,
    pub files: Vec<(LocalChange, Option<Body>)>,
}

/// The generation `n`, else the booted one, else the current one.
fn which(s: &Session, store: &Store, n: Option<u32>) -> anyhow::Result<Gen> {
    let n = match n.or(s.booted().generation) {
        Some(n) => n,
        None => crate::profile::Profile::new(&s.state)
            .current_number()?
            .ok_or(crate::profile::ProfileError::NoCurrent)?,
    };
    generation(s, store, n)
}

fn load(s: &Session, n: Option<u32>) -> anyhow::Result<(EtcStatus, Store, TreeImage)> {
    let store = Store::open_read_only(&s.state);
    let g = which(s, &store, n)?;
    let tree = tree_of(&store, &g)?.ok_or(AppError::NoTree { number: g.number })?;
    let image = TreeImage::load(&store, &tree)?;
    let layer = layers_dir(s)?.join(g.object.base_name());
    let upper = layer.join(etc::UPPER);
    let exists = upper.is_dir();
    let changes = if exists {
        let read = |d: &_| std::fs::read(image.objects.path(d));
        let img = Image {
            manifest: &image.manifest,
            read: &read,
        };
        etc::local_changes(&upper, &img)?
    } else {
        Vec::new()
    };
    Ok((
        EtcStatus {
            generation: g.number,
            object: g.object.base_name(),
            layer,
            exists,
            changes,
        },
        store,
        image,
    ))
}

/// `genboot etc status [N]`.
pub fn status(s: &Session, n: Option<u32>) -> anyhow::Result<EtcStatus> {
    let store = Store::open_read_only(&s.state);
    let _lock = store.lock_for_reading(s.wait())?;
    Ok(load(s, n)?.0)
}

fn describe(kind: Option<&Kind>) -> String {
    match kind {
        None => "nothing".into(),
        Some(Kind::Symlink { target }) => format!("-> {}", String::from_utf8_lossy(target)),
        Some(Kind::Dir) => "directory".into(),
        Some(k) => format!("{:?}", k.letter()),
    }
}

/// `genboot etc diff [N]`.
pub fn diff(s: &Session, n: Option<u32>) -> anyhow::Result<EtcDiff> {
    let store = Store::open_read_only(&s.state);
    let _lock = store.lock_for_reading(s.wait())?;
    let (status, _store, image) = load(s, n)?;
    let read = |d: &_| std::fs::read(image.objects.path(d));
    let img = Image {
        manifest: &image.manifest,
        read: &read,
    };
    let mut files = Vec::new();
    for c in &status.changes {
        if c.dir {
            files.push((c.clone(), None));
            continue;
        }
        let ours = match &c.upper {
            Some(p) => {
                let st = std::fs::symlink_metadata(p)?;
                if st.is_file() {
                    Some(Ok(std::fs::read(p)?))
                } else if st.file_type().is_symlink() {
                    Some(Err(format!("-> {}", std::fs::read_link(p)?.display())))
                } else {
                    Some(Err("a special file".into()))
                }
            }
            None => None,
        };
        let theirs = match img.entry(&c.rel) {
            Some((_, Kind::File { .. })) => Some(Ok(img.read_file(&c.rel)?.unwrap_or_default())),
            Some((_, k)) => Some(Err(describe(Some(k)))),
            None => None,
        };
        let text = |b: &Vec<u8>| {
            (!b.contains(&0))
                .then(|| std::str::from_utf8(b).ok().map(str::to_string))
                .flatten()
        };
        let body = match (&theirs, &ours) {
            (Some(Err(_)), _) | (_, Some(Err(_))) => Body::Other {
                image: match &theirs {
                    Some(Err(d)) => d.clone(),
                    Some(Ok(_)) => "a file".into(),
                    None => "nothing".into(),
                },
                local: match &ours {
                    Some(Err(d)) => d.clone(),
                    Some(Ok(_)) => "a file".into(),
                    None => "nothing (deleted)".into(),
                },
            },
            _ => {
                let empty = Vec::new();
                let a = match &theirs {
                    Some(Ok(b)) => b,
                    _ => &empty,
                };
                let b = match &ours {
                    Some(Ok(b)) => b,
                    _ => &empty,
                };
                match (text(a), text(b)) {
                    (Some(x), Some(y)) => Body::Text(etc::line_diff(&x, &y, 3)),
                    _ => Body::Binary,
                }
            }
        };
        files.push((c.clone(), Some(body)));
    }
    Ok(EtcDiff { status, files })
}
