//! The kernels installed in a system tree, as Debian installs them:
//! `/boot/vmlinuz-<release>` with its module tree `/lib/modules/<release>`
//! (`/usr/lib/modules/<release>` on a merged-/usr system), and the newest
//! of them by Debian's version ordering (`dpkg --compare-versions`, which
//! `linux-version sort` follows for kernel releases).

use crate::state::resolve_in_root;
use std::cmp::Ordering;
use std::path::{Path, PathBuf};

/// One installed kernel, its paths resolved inside the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub release: String,
    pub image: PathBuf,
    pub modules: PathBuf,
}

/// Whether `name` can be a kernel release: printable ASCII, no `/`, not
/// `.` or `..`.
fn plausible_release(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// The kernels installed below `root` (canonical), newest first: every
/// `/boot/vmlinuz-<release>` that is a regular file and has a module tree
/// directory (`/lib/modules/<release>`, else `/usr/lib/modules/<release>`).
/// Every path is resolved inside `root`. A missing `/boot` is no kernel.
pub fn installed(root: &Path) -> Result<Vec<Installed>, String> {
    let boot = resolve_in_root(root, Path::new("/boot")).map_err(|e| e.to_string())?;
    let entries = match std::fs::read_dir(&boot) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", boot.display())),
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(release) = name.to_str().and_then(|n| n.strip_prefix("vmlinuz-")) else {
            continue;
        };
        if !plausible_release(release) {
            continue;
        }
        // Links are resolved inside the root; one that leads nowhere is no kernel.
        let Ok(image) = resolve_in_root(root, &Path::new("/boot").join(name.as_os_str())) else {
            continue;
        };
        if !std::fs::symlink_metadata(&image).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let modules = ["/lib/modules", "/usr/lib/modules"].iter().find_map(|d| {
            resolve_in_root(root, &Path::new(d).join(release))
                .ok()
                .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
        });
        let Some(modules) = modules else { continue };
        found.push(Installed {
            release: release.to_string(),
            image,
            modules,
        });
    }
    found.sort_by(|a, b| deb_version_cmp(&b.release, &a.release));
    found.dedup_by(|a, b| a.release == b.release);
    Ok(found)
}

/// Whether `release` matches `[kernel] release`: `newest` matches every
/// release, anything else is a glob (`*`, `?`, `[...]`), so a plain
/// release matches only itself.
pub fn matches(pattern: &str, release: &str) -> bool {
    pattern == super::NEWEST
        || genboot_format::module_name::fnmatch(pattern.as_bytes(), release.as_bytes())
}

/// dpkg's `verrevcmp`: runs of non-digits compare character by character
/// (letters before other characters, `~` before everything, even the end),
/// runs of digits by value.
pub fn deb_version_cmp(a: &str, b: &str) -> Ordering {
    fn order(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(b'~') => -1,
            Some(c) => i32::from(c) + 256,
        }
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0usize, 0usize);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn releases_order_as_dpkg_compares_versions() {
        let mut v = vec![
            "6.12.117+deb12-amd64",
            "6.1.0-57-amd64",
            "6.1.0-9-amd64",
            "6.12.9+deb12-amd64",
            "6.1.0-57-cloud-amd64",
            "6.1.0-57~bpo-amd64",
        ];
        v.sort_by(|a, b| deb_version_cmp(a, b));
        assert_eq!(
            v,
            [
                "6.1.0-9-amd64",
                "6.1.0-57~bpo-amd64",
                "6.1.0-57-amd64",
                "6.1.0-57-cloud-amd64",
                "6.12.9+deb12-amd64",
                "6.12.117+deb12-amd64",
            ]
        );
        assert_eq!(deb_version_cmp("1.0", "1.00"), Ordering::Equal);
        assert_eq!(deb_version_cmp("1.0~rc1", "1.0"), Ordering::Less);
        assert_eq!(deb_version_cmp("1.0a", "1.0+"), Ordering::Less);
    }

    #[test]
    fn newest_and_globs_match() {
        assert!(matches("newest", "6.1.0-57-amd64"));
        assert!(matches("6.1.*", "6.1.0-57-amd64"));
        assert!(!matches("6.1.*", "6.12.117+deb12-amd64"));
        assert!(matches("6.1.0-57-amd64", "6.1.0-57-amd64"));
        assert!(!matches("6.1.0-5-amd64", "6.1.0-57-amd64"));
    }

    #[test]
    fn installed_kernels_need_an_image_and_a_module_tree_and_stay_in_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let w = |p: &str| {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"k").unwrap();
        };
        let d = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();
        // Debian: /lib -> usr/lib.
        d("usr/lib/modules");
        symlink("usr/lib", root.join("lib")).unwrap();
        w("boot/vmlinuz-6.1.0-57-amd64");
        d("usr/lib/modules/6.1.0-57-amd64");
        w("boot/vmlinuz-6.12.117+deb12-amd64");
        d("usr/lib/modules/6.12.117+deb12-amd64");
        // No module tree: not installed (dpkg leftovers, removed kernels).
        w("boot/vmlinuz-6.13.0-1-amd64");
        w("boot/vmlinuz-6.1.0-58-amd64.dpkg-tmp");
        // Not a kernel file name.
        w("boot/vmlinuz");
        w("boot/config-6.1.0-57-amd64");
        // An absolute link resolves inside the root, never on this machine.
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("vmlinuz"), b"host").unwrap();
        symlink(
            outside.join("vmlinuz"),
            root.join("boot/vmlinuz-7.0.0-1-amd64"),
        )
        .unwrap();
        d("usr/lib/modules/7.0.0-1-amd64");
        let root = std::fs::canonicalize(&root).unwrap();
        let found = installed(&root).unwrap();
        let releases: Vec<&str> = found.iter().map(|k| k.release.as_str()).collect();
        assert_eq!(releases, ["6.12.117+deb12-amd64", "6.1.0-57-amd64"]);
        assert_eq!(
            found[1].image,
            root.join("boot/vmlinuz-6.1.0-57-amd64"),
            "{found:?}"
        );
        assert_eq!(
            found[1].modules,
            root.join("usr/lib/modules/6.1.0-57-amd64")
        );
        let empty = t.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert!(installed(&empty).unwrap().is_empty());
    }
}
