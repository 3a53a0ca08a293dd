//! Where genboot keeps its state: `<root>/var/lib/genboot/{store,profiles,cache}`,
//! and how paths below `--root` are found without leaving it.
//!
//! The tree below `--root` is not trusted (a staging root, a container
//! export): a symlink in it must never send a read, write or delete outside
//! it. Every path genboot uses below `--root` is resolved by
//! [`resolve_in_root`], which follows symlinks the way the kernel would if
//! `--root` were `/` (chroot semantics, as `openat2(RESOLVE_IN_ROOT)` does):
//! an absolute target starts again at `--root`, `..` never climbs above it.
//! A symlink whose target is missing below `--root` is an error, so nothing
//! is ever created through one. The files genboot creates or rewrites in its
//! state (lock files, temporary files) are opened with `O_NOFOLLOW`, temporary
//! files with `O_EXCL` as well.
//!
//! Resolution happens in user space, one component at a time, and the
//! resulting path (free of symlinks) is then used by ordinary path calls. That
//! confines genboot against whatever links the tree holds when a command
//! starts; a process that swaps directories for symlinks *while* genboot runs
//! is not covered (that would need file-descriptor-relative calls throughout).
//! `openat2(RESOLVE_IN_ROOT)` gives the same answer, but as a file
//! descriptor: the store, profile and ESP code works on paths, so the
//! descriptor would have to be turned back into a path through `/proc`, which
//! buys nothing over this walk and adds an `unsafe` call and a `/proc`
//! dependency (genboot also runs in stage 2 and in minimal containers).
//! Refusing every symlink instead would break trees where `/var/lib/genboot`
//! is a link to another disk, which are legitimate.

use crate::fsutil::IoError;
use crate::hint::Hint;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

pub use genboot_format::{STATE_DIR, STORE_DIR};

/// How many symlinks one resolution may follow (the kernel's limit).
const MAX_LINKS: u32 = 40;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{link} is a symlink to {target}, which does not exist below {root} (genboot resolves links below --root as if {root} were /, so it never follows a link out of the tree)")]
    Dangling {
        link: PathBuf,
        target: PathBuf,
        root: PathBuf,
    },
    #[error("too many levels of symlinks (more than {MAX_LINKS}) resolving {path} below {root}")]
    Loop { path: PathBuf, root: PathBuf },
    #[error("{path} is not a directory, so {rest} cannot be below it")]
    NotDir { path: PathBuf, rest: String },
    #[error(transparent)]
    Io(#[from] IoError),
}

impl Hint for StateError {
    fn hint(&self) -> Option<String> {
        match self {
            StateError::Dangling { root, .. } => Some(format!(
                "remove the link, or create its target below {}",
                root.display()
            )),
            StateError::Loop { .. } => {
                Some("look for a symlink loop in the tree below --root".into())
            }
            StateError::NotDir { path, .. } => Some(format!("remove or rename {}", path.display())),
            StateError::Io(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct State {
    /// The system tree genboot works on (`--root`, default `/`), canonical.
    pub root: PathBuf,
    /// `<root>/var/lib/genboot`, resolved inside `root`.
    pub dir: PathBuf,
    store: PathBuf,
    profiles: PathBuf,
    cache: PathBuf,
}

impl State {
    /// The state below `root`, every path resolved inside it.
    pub fn open(root: &Path) -> Result<State, StateError> {
        let root = match fs::canonicalize(root) {
            Ok(r) => r,
            // A root that does not exist yet is created by the first write.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::path::absolute(root).map_err(IoError::at("find the absolute path of", root))?
            }
            Err(e) => return Err(IoError::at("open", root)(e).into()),
        };
        let state = Path::new(STATE_DIR);
        Ok(State {
            dir: resolve_in_root(&root, state)?,
            store: resolve_in_root(&root, &state.join("store"))?,
            profiles: resolve_in_root(&root, &state.join("profiles"))?,
            cache: resolve_in_root(&root, &state.join("cache"))?,
            root,
        })
    }
    pub fn store_dir(&self) -> PathBuf {
        self.store.clone()
    }
    pub fn profiles_dir(&self) -> PathBuf {
        self.profiles.clone()
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.cache.clone()
    }
    /// A path of the system below `--root` (`/run/genboot/booted`,
    /// `/etc/machine-id`, the ESP), resolved inside it.
    pub fn in_root(&self, path: &Path) -> Result<PathBuf, StateError> {
        resolve_in_root(&self.root, path)
    }
}

/// One pending component of a resolution; `via` is the symlink whose
/// target it came from.
struct Pending {
    name: OsString,
    via: Option<(PathBuf, PathBuf)>,
}

fn push_front(todo: &mut Vec<Pending>, path: &Path, via: Option<(PathBuf, PathBuf)>) {
    // `todo` is a stack: the next component is at the end.
    let parts: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    for name in parts.into_iter().rev() {
        todo.push(Pending {
            name,
            via: via.clone(),
        });
    }
}

/// Resolve `path` (as the system below `root` sees it; absolute or not, it
/// is taken relative to `root`) to a host path inside `root`. `root` must be
/// canonical. Symlinks are followed as if `root` were `/`; `..` stops at
/// `root`. Components that do not exist are appended as they are, unless a
/// symlink led to them (then it is [`StateError::Dangling`]): creating
/// through a dangling link would create its target, which is refused.
pub fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf, StateError> {
    let mut todo: Vec<Pending> = Vec::new();
    push_front(&mut todo, path, None);
    // Components below `root`, each a real directory (or the last, anything
    // but a symlink).
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0u32;
    let here = |done: &[OsString]| -> PathBuf {
        let mut p = root.to_path_buf();
        p.extend(done);
        p
    };
    while let Some(Pending { name, via }) = todo.pop() {
        if name == ".." {
            done.pop();
            continue;
        }
        let candidate = here(&done).join(&name);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(StateError::Loop {
                        path: path.to_path_buf(),
                        root: root.to_path_buf(),
                    });
                }
                let target =
                    fs::read_link(&candidate).map_err(IoError::at("read link", &candidate))?;
                if target.is_absolute() {
                    done.clear();
                }
                push_front(&mut todo, &target, Some((candidate, target.clone())));
            }
            Ok(m) => {
                if !m.is_dir() && !todo.is_empty() {
                    let rest: Vec<&OsStr> = todo.iter().rev().map(|p| p.name.as_os_str()).collect();
                    return Err(StateError::NotDir {
                        path: candidate,
                        rest: Path::new(&name)
                            .join(rest.iter().collect::<PathBuf>())
                            .display()
                            .to_string(),
                    });
                }
                done.push(name);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some((link, target)) = via {
                    return Err(StateError::Dangling {
                        link,
                        target,
                        root: root.to_path_buf(),
                    });
                }
                // Plain missing components: nothing below them exists, so
                // they hold no links; `..` among them is resolved lexically.
                done.push(name);
                while let Some(p) = todo.pop() {
                    if p.name == ".." {
                        done.pop();
                    } else {
                        done.push(p.name);
                    }
                }
                if done.is_empty() {
                    return Ok(root.to_path_buf());
                }
            }
            Err(e) => return Err(IoError::at("look up", &candidate)(e).into()),
        }
    }
    Ok(here(&done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(t.path()).unwrap().join("root");
        fs::create_dir_all(root.join("var/lib")).unwrap();
        (t, root)
    }

    #[test]
    fn absolute_links_resolve_inside_the_root() {
        let (_t, root) = tree();
        fs::create_dir_all(root.join("data/genboot")).unwrap();
        symlink("/data/genboot", root.join("var/lib/genboot")).unwrap();
        assert_eq!(
            resolve_in_root(&root, Path::new("/var/lib/genboot/store")).unwrap(),
            root.join("data/genboot/store")
        );
    }

    #[test]
    fn dotdot_never_climbs_above_the_root() {
        let (_t, root) = tree();
        assert_eq!(
            resolve_in_root(&root, Path::new("/../../boot/efi")).unwrap(),
            root.join("boot/efi")
        );
        symlink("../../../../../../../..", root.join("var/up")).unwrap();
        assert_eq!(
            resolve_in_root(&root, Path::new("var/up/etc")).unwrap(),
            root.join("etc")
        );
    }

    #[test]
    fn a_link_out_of_the_tree_is_refused_not_followed() {
        let (t, root) = tree();
        let outside = t.path().join("outside-store");
        fs::create_dir_all(&outside).unwrap();
        symlink(&outside, root.join("var/lib/genboot")).unwrap();
        let e = resolve_in_root(&root, Path::new("/var/lib/genboot/store")).unwrap_err();
        assert!(matches!(e, StateError::Dangling { .. }), "{e}");
        assert!(e.to_string().contains("does not exist below"), "{e}");
    }

    #[test]
    fn missing_components_are_appended() {
        let (_t, root) = tree();
        assert_eq!(
            resolve_in_root(&root, Path::new("/var/lib/genboot/store")).unwrap(),
            root.join("var/lib/genboot/store")
        );
    }

    #[test]
    fn loops_and_files_in_the_way_are_errors() {
        let (_t, root) = tree();
        symlink("/var/lib/genboot", root.join("var/lib/genboot")).unwrap();
        let e = resolve_in_root(&root, Path::new("/var/lib/genboot/store")).unwrap_err();
        assert!(matches!(e, StateError::Loop { .. }), "{e}");
        fs::write(root.join("var/file"), b"x").unwrap();
        let e = resolve_in_root(&root, Path::new("/var/file/x")).unwrap_err();
        assert!(matches!(e, StateError::NotDir { .. }), "{e}");
    }
}
