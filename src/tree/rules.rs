//! The build rules genboot applies to every tree so that it is a system
//! image, not one machine — applied to the scanned manifest (pure, plus
//! reading a few small contents), before anything is written:
//!
//! 1. **Stable uids and gids** ([`UidMap`], `<state>/uid-map`): every user
//!    and group named in the map keeps its pinned id; a user or group the
//!    map does not know keeps the id the build gave it unless another name
//!    holds it, else gets the highest free system id (100…999, as
//!    systemd-sysusers allocates) or the lowest free regular one (≥ 1000).
//!    The tree's `/etc/passwd` and `/etc/group`, the owner and group of
//!    every inode and the ids inside POSIX ACL xattrs are rewritten
//!    accordingly, and new names are added to the map (names are never
//!    removed: a package dropped and added again gets its old id back, as
//!    NixOS's uid-map does).
//! 2. **No machine identity**: `/etc/ssh/ssh_host_*` removed, `/etc/machine-id`
//!    empty (created 0444 when missing, so it can be bound over),
//!    `/var/lib/dbus/machine-id` removed (dbus then reads `/etc/machine-id`),
//!    `/etc/hostname` fixed ([`Rules::hostname`]), `/etc/resolv.conf` an
//!    empty file (mmdebstrap copies the build host's; a symlink a package
//!    put there stays).
//! 3. **Package state with the image**: [`RELOCATED`] (the dpkg database with
//!    alternatives, diversions and statoverrides, apt's auto-installed marks,
//!    debconf's templates, ucf's hashes and registry, deb-systemd-helper's
//!    state) moves to `/usr/lib/genboot/var/…`; an empty directory or file
//!    with the original metadata stays at the old path as the mount point
//!    genboot-init binds the image's copy onto, read-only (issue 15).
//! 4. **First-boot SSH host keys**: when the tree has `/usr/sbin/sshd`,
//!    `genboot-ssh-keygen.service` (`ssh-keygen -A` when a key is missing,
//!    before `ssh.service`/`ssh.socket`, then the keys copied to
//!    `/var/lib/genboot/identity/ssh/`, which genboot-init binds over every
//!    generation's `/etc/ssh`), enabled in
//!    `/usr/lib/systemd/system/multi-user.target.wants/` (Debian 12 has no
//!    such unit; its postinst made the keys we remove).
//! 5. **The image's `/var` seeds the machine's**: the machine's `/var` is
//!    the root partition's (never rolled back), so what packages put in
//!    `/var` (`/var/www/html`, `/var/lib/nginx`, …) is made there by
//!    `systemd-tmpfiles` at every boot when missing ([`VAR_TMPFILES`]):
//!    `d` for each directory (its mode and owner), `L` for each symlink,
//!    `C` for each regular file (copied from [`VAR_FACTORY`], where the
//!    image keeps it; files below `/var/log` and `/var/cache` are the
//!    build's own and are left out). Paths other tmpfiles.d files of the
//!    tree declare, the package state of rule 3 and `/var/lib/genboot` are
//!    left to their owners. Existing files are never overwritten, so the
//!    machine's data wins; a new package's directories appear at the first
//!    boot of the generation that has it.
//!
//! Why on the manifest and not as mmdebstrap hooks on the staging tree: the
//! same code then covers `source = "dir"` trees, which genboot must not
//! change (they are the user's), costs no copy, and is a pure function the
//! unit tests drive without a build. Pinning ids by rewriting after the
//! build (instead of seeding `passwd` in a setup hook) is exact whatever
//! allocates the ids (adduser, systemd-sysusers, a postinst's useradd) and
//! leaves no users of packages that are not installed.

use super::manifest::{parent, show, Entry, Kind, Manifest, Meta, Mtime, INLINE_MAX};
use super::objects::Contents;
use super::{io_err, TreeError};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Package-manager state that describes `/usr`, moved into the image
/// (the list is the contract with genboot-init, which binds it back).
pub use genboot_format::PACKAGE_STATE as RELOCATED;

/// Where [`RELOCATED`] paths go: `/var/X` → `PACKAGE_STATE_DIR/X`.
pub use genboot_format::PACKAGE_STATE_DIR;

/// The first-boot SSH host key unit.
pub const SSH_KEYGEN_UNIT: &str = "/usr/lib/systemd/system/genboot-ssh-keygen.service";
const SSH_KEYGEN_WANTS: &str =
    "/usr/lib/systemd/system/multi-user.target.wants/genboot-ssh-keygen.service";
const SSH_KEYGEN_TEXT: &str = "\
# Added by genboot: a genboot image carries no SSH host keys. Make the
# missing ones on the machine's first boot (Debian 12 has no unit for it).
[Unit]
Description=Generate SSH host keys (genboot)
Before=ssh.service ssh.socket
ConditionPathExists=|!/etc/ssh/ssh_host_ed25519_key
ConditionPathExists=|!/etc/ssh/ssh_host_ecdsa_key
ConditionPathExists=|!/etc/ssh/ssh_host_rsa_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
# The machine's keys, the same in every generation: genboot-init binds
# these over /etc/ssh at every later boot.
ExecStartPost=/bin/sh -c 'd=/var/lib/genboot/identity/ssh; [ -d /var/lib/genboot ] || exit 0; mkdir -p \"$$d\" && for k in /etc/ssh/ssh_host_*; do [ -e \"$$d/$${k##*/}\" ] || cp -p \"$$k\" \"$$d/\"; done'
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
";

/// The tmpfiles.d file that makes the image's `/var` on the machine's
/// (rule 5).
pub const VAR_TMPFILES: &str = "/usr/lib/tmpfiles.d/genboot-var.conf";
/// Where the image keeps its `/var` files for [`VAR_TMPFILES`] to copy
/// (systemd's factory directory).
pub const VAR_FACTORY: &str = "/usr/share/factory/var";

/// Which rules apply. [`Rules::default`] is what genboot always does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Content of `/etc/hostname` (without the newline).
    pub hostname: String,
    pub pin_ids: bool,
    pub strip_identity: bool,
    pub relocate_package_state: bool,
    pub ssh_keygen_unit: bool,
    pub seed_var: bool,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            hostname: "localhost".into(),
            pin_ids: true,
            strip_identity: true,
            relocate_package_state: true,
            ssh_keygen_unit: true,
            seed_var: true,
        }
    }
}

/// One id that moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdChange {
    pub name: String,
    pub from: u32,
    pub to: u32,
}

/// What the rules changed, path by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesReport {
    pub removed: Vec<Vec<u8>>,
    /// Paths whose content or metadata a rule set (passwd, hostname, …).
    pub rewritten: Vec<Vec<u8>>,
    pub added: Vec<Vec<u8>>,
    /// (from, to) for every path moved (the relocated subtrees, entry by entry).
    pub moved: Vec<(Vec<u8>, Vec<u8>)>,
    /// Placeholders left where relocated state was.
    pub placeholders: Vec<Vec<u8>>,
    pub users: Vec<IdChange>,
    pub groups: Vec<IdChange>,
    /// Users and groups the map did not know (now pinned).
    pub new_users: Vec<(String, u32)>,
    pub new_groups: Vec<(String, u32)>,
}

impl RulesReport {
    /// uid → new uid for inodes.
    pub fn uid_remap(&self) -> HashMap<u32, u32> {
        self.users.iter().map(|c| (c.from, c.to)).collect()
    }
    pub fn gid_remap(&self) -> HashMap<u32, u32> {
        self.groups.iter().map(|c| (c.from, c.to)).collect()
    }
}

/// Pinned user and group ids: `<state>/uid-map`.
///
/// ```text
/// # genboot uid/gid map v1
/// user _apt 42
/// group systemd-journal 999
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UidMap {
    pub users: BTreeMap<String, u32>,
    pub groups: BTreeMap<String, u32>,
}

const UID_MAP_HEADER: &str = "# genboot uid/gid map v1";

impl UidMap {
    /// Read the map; a missing file is an empty map.
    pub fn load(path: &Path) -> Result<UidMap, TreeError> {
        match fs::read(path) {
            Ok(b) => UidMap::parse(&b).map_err(|(line, why)| TreeError::UidMap {
                path: path.to_path_buf(),
                line,
                why,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UidMap::default()),
            Err(e) => Err(io_err("read", path)(e)),
        }
    }

    pub fn parse(text: &[u8]) -> Result<UidMap, (usize, String)> {
        let text = std::str::from_utf8(text).map_err(|_| (0, "not UTF-8".to_string()))?;
        let mut m = UidMap::default();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            let [kind, name, id] = f[..] else {
                return Err((
                    n,
                    format!("expected \"user|group NAME ID\", found {line:?}"),
                ));
            };
            let id: u32 = id
                .parse()
                .map_err(|_| (n, format!("{id:?} is not a numeric id")))?;
            let table = match kind {
                "user" => &mut m.users,
                "group" => &mut m.groups,
                _ => return Err((n, format!("{kind:?} is neither user nor group"))),
            };
            if table.insert(name.to_string(), id).is_some() {
                return Err((n, format!("{kind} {name} is listed twice")));
            }
        }
        Ok(m)
    }

    pub fn to_text(&self) -> String {
        let mut s = format!("{UID_MAP_HEADER}\n");
        for (n, id) in &self.users {
            s.push_str(&format!("user {n} {id}\n"));
        }
        for (n, id) in &self.groups {
            s.push_str(&format!("group {n} {id}\n"));
        }
        s
    }

    /// Write atomically (temporary file, fsync, rename, fsync the directory).
    pub fn save(&self, path: &Path) -> Result<(), TreeError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let mut f = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(self.to_text().as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(io_err("write", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
        Ok(crate::fsutil::fsync_dir(dir)?)
    }
}

/// The uid map's place below a state directory.
pub fn uid_map_path(state_dir: &Path) -> PathBuf {
    state_dir.join("uid-map")
}

/// Apply `rules` to a scanned tree; `ids` gains the tree's new users and
/// groups.
pub fn apply(
    m: &mut Manifest,
    contents: &mut Contents,
    rules: &Rules,
    ids: &mut UidMap,
) -> Result<RulesReport, TreeError> {
    let mut r = RulesReport::default();
    if rules.pin_ids {
        pin_ids(m, contents, ids, &mut r)?;
    }
    if rules.strip_identity {
        let keys: Vec<Vec<u8>> = m
            .entries
            .range(b"/etc/ssh/ssh_host_".to_vec()..)
            .take_while(|(k, _)| k.starts_with(b"/etc/ssh/ssh_host_"))
            .map(|(k, _)| k.clone())
            .filter(|k| !k[b"/etc/ssh/".len()..].contains(&b'/'))
            .collect();
        for k in keys {
            m.remove(&k);
            r.removed.push(k);
        }
        if m.get(b"/var/lib/dbus/machine-id").is_some() {
            m.remove(b"/var/lib/dbus/machine-id");
            r.removed.push(b"/var/lib/dbus/machine-id".to_vec());
        }
        let epoch = m.epoch;
        set_file(
            m,
            contents,
            b"/etc/machine-id",
            b"",
            None,
            0o444,
            epoch,
            &mut r,
        );
        let host = format!("{}\n", rules.hostname);
        set_file(
            m,
            contents,
            b"/etc/hostname",
            host.as_bytes(),
            Some(0o644),
            0o644,
            epoch,
            &mut r,
        );
        if !matches!(
            m.inode(b"/etc/resolv.conf"),
            Some((_, Kind::Symlink { .. }))
        ) {
            set_file(
                m,
                contents,
                b"/etc/resolv.conf",
                b"",
                Some(0o644),
                0o644,
                epoch,
                &mut r,
            );
        }
    }
    if rules.relocate_package_state {
        relocate(m, &mut r);
    }
    if rules.ssh_keygen_unit && m.get(b"/usr/sbin/sshd").is_some() {
        let t = Mtime::new(m.epoch.unwrap_or(0), 0);
        ensure_dirs(m, parent(SSH_KEYGEN_WANTS.as_bytes()).unwrap(), t, &mut r);
        let data = SSH_KEYGEN_TEXT.as_bytes();
        let kind = Kind::file_with(data);
        if data.len() as u64 > INLINE_MAX {
            contents.add_bytes(data.to_vec());
        }
        for (p, e) in [
            (
                SSH_KEYGEN_UNIT,
                Entry::Inode {
                    meta: Meta::new(0o644, 0, 0, t),
                    kind,
                },
            ),
            (
                SSH_KEYGEN_WANTS,
                Entry::Inode {
                    meta: Meta::new(0o777, 0, 0, t),
                    kind: Kind::Symlink {
                        target: b"../genboot-ssh-keygen.service".to_vec(),
                    },
                },
            ),
        ] {
            if m.entries.insert(p.as_bytes().to_vec(), e).is_some() {
                r.rewritten.push(p.as_bytes().to_vec());
            } else {
                r.added.push(p.as_bytes().to_vec());
            }
        }
    }
    if rules.seed_var {
        seed_var(m, contents, &mut r);
    }
    m.canonicalize_hardlinks();
    m.validate().map_err(|cause| TreeError::Manifest {
        path: PathBuf::from("(after the build rules)"),
        cause,
    })?;
    Ok(r)
}

fn m_epoch(old: Mtime, epoch: Option<i64>) -> Mtime {
    match epoch {
        Some(e) => Mtime::new(e, 0),
        None => old,
    }
}

/// Create missing directories down to `dir` (0755 root, time `t`).
/// Rule 5: [`VAR_TMPFILES`] and the image's `/var` files in
/// [`VAR_FACTORY`] (see the module documentation).
fn seed_var(m: &mut Manifest, contents: &mut Contents, r: &mut RulesReport) {
    let declared = tmpfiles_paths(m, contents);
    let below =
        |k: &[u8], dir: &[u8]| k == dir || (k.starts_with(dir) && k.get(dir.len()) == Some(&b'/'));
    let keys: Vec<Vec<u8>> = m
        .entries
        .range(b"/var/".to_vec()..)
        .take_while(|(k, _)| k.starts_with(b"/var/"))
        .map(|(k, _)| k.clone())
        .collect();
    let mut lines = String::from(
        "# Added by genboot (tree rule 5): the image's /var, made on the machine's\n\
         # /var (the root partition's, kept across generations) when missing.\n",
    );
    let mut factory: Vec<(Vec<u8>, Entry)> = Vec::new();
    for k in keys {
        if below(&k, b"/var/lib/genboot")
            || RELOCATED.iter().any(|p| below(&k, p.as_bytes()))
            || declared.contains(&k)
        {
            continue;
        }
        let entry = match m.get(&k) {
            Some(Entry::Hardlink { target }) => m.get(target).cloned(),
            e => e.cloned(),
        };
        let Some(Entry::Inode { meta, kind }) = entry else {
            continue;
        };
        let path = tmpfiles_escape(&k);
        match &kind {
            Kind::Dir => lines.push_str(&format!(
                "d {path} {:04o} {} {} -\n",
                meta.mode & 0o7777,
                meta.uid,
                meta.gid
            )),
            Kind::Symlink { target } => {
                lines.push_str(&format!("L {path} - - - - {}\n", tmpfiles_escape(target)))
            }
            Kind::File { .. } if !below(&k, b"/var/log") && !below(&k, b"/var/cache") => {
                let mut to = VAR_FACTORY.as_bytes().to_vec();
                to.extend_from_slice(&k[b"/var".len()..]);
                lines.push_str(&format!("C {path} - - - - {}\n", tmpfiles_escape(&to)));
                factory.push((to, Entry::Inode { meta, kind }));
            }
            _ => {}
        }
    }
    if factory.is_empty() && !lines.lines().any(|l| !l.starts_with('#')) {
        // Nothing below /var (not a system tree): no rule applies.
        return;
    }
    let t = Mtime::new(m.epoch.unwrap_or(0), 0);
    for (to, e) in factory {
        if let Some(p) = parent(&to) {
            ensure_dirs(m, p, t, r);
        }
        if m.entries.insert(to.clone(), e).is_none() {
            r.added.push(to);
        }
    }
    ensure_dirs(
        m,
        parent(VAR_TMPFILES.as_bytes()).expect("has a parent"),
        t,
        r,
    );
    let epoch = m.epoch;
    set_file(
        m,
        contents,
        VAR_TMPFILES.as_bytes(),
        lines.as_bytes(),
        Some(0o644),
        0o644,
        epoch,
        r,
    );
}

/// The `/var` paths the tree's own tmpfiles.d files declare (field 2 of
/// each line, as written).
fn tmpfiles_paths(m: &Manifest, contents: &Contents) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    for dir in [&b"/usr/lib/tmpfiles.d/"[..], b"/etc/tmpfiles.d/"] {
        let files: Vec<Vec<u8>> = m
            .entries
            .range(dir.to_vec()..)
            .take_while(|(k, _)| k.starts_with(dir))
            .filter(|(k, _)| k.ends_with(b".conf") && k.as_slice() != VAR_TMPFILES.as_bytes())
            .map(|(k, _)| k.clone())
            .collect();
        for f in files {
            let data = match m.inode(&f) {
                Some((
                    _,
                    Kind::File {
                        inline: Some(d), ..
                    },
                )) => d.clone(),
                Some((_, Kind::File { sha256, .. })) => contents.read(sha256).unwrap_or_default(),
                _ => continue,
            };
            for line in data.split(|&b| b == b'\n') {
                let mut fields = line
                    .split(|b| b.is_ascii_whitespace())
                    .filter(|f| !f.is_empty());
                match (fields.next(), fields.next()) {
                    (Some(t), Some(p)) if !t.starts_with(b"#") && p.starts_with(b"/var/") => {
                        out.insert(p.to_vec());
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// A path or symlink target as a tmpfiles.d field: `%` doubled (a
/// specifier otherwise), whitespace, `\\` and bytes outside printable ASCII
/// as `\\xNN` (tmpfiles.d unescapes C escapes).
fn tmpfiles_escape(p: &[u8]) -> String {
    let mut s = String::with_capacity(p.len());
    for &b in p {
        match b {
            b'%' => s.push_str("%%"),
            b'\\' => s.push_str("\\x5c"),
            b'!'..=b'~' => s.push(char::from(b)),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

fn ensure_dirs(m: &mut Manifest, dir: &[u8], t: Mtime, r: &mut RulesReport) {
    if dir == b"/" || m.get(dir).is_some() {
        return;
    }
    if let Some(p) = parent(dir) {
        ensure_dirs(m, p, t, r);
    }
    m.entries.insert(
        dir.to_vec(),
        Entry::Inode {
            meta: Meta::new(0o755, 0, 0, t),
            kind: Kind::Dir,
        },
    );
    r.added.push(dir.to_vec());
}

/// Give regular file `path` the content `data`: an existing file keeps its
/// owner (and mode unless `mode` is given) and gets the epoch as mtime; a
/// missing one is created root-owned with `new_mode` (when its directory
/// exists). Anything else at `path` (directory, symlink) is left alone.
#[allow(clippy::too_many_arguments)]
fn set_file(
    m: &mut Manifest,
    contents: &mut Contents,
    path: &[u8],
    data: &[u8],
    mode: Option<u32>,
    new_mode: u32,
    epoch: Option<i64>,
    r: &mut RulesReport,
) {
    let target = match m.get(path) {
        Some(Entry::Hardlink { target }) => target.clone(),
        _ => path.to_vec(),
    };
    let kind = Kind::file_with(data);
    if data.len() as u64 > INLINE_MAX {
        contents.add_bytes(data.to_vec());
    }
    match m.entries.get_mut(&target) {
        Some(Entry::Inode {
            meta,
            kind: k @ Kind::File { .. },
        }) => {
            let new_meta = Meta {
                mode: mode.unwrap_or(meta.mode),
                mtime: m_epoch(meta.mtime, epoch),
                ..meta.clone()
            };
            if *k != kind || *meta != new_meta {
                *k = kind;
                *meta = new_meta;
                r.rewritten.push(path.to_vec());
            }
        }
        Some(_) => {}
        None => {
            let dir_ok = parent(path).is_some_and(|p| {
                matches!(
                    m.get(p),
                    Some(Entry::Inode {
                        kind: Kind::Dir,
                        ..
                    })
                )
            });
            if dir_ok {
                m.entries.insert(
                    path.to_vec(),
                    Entry::Inode {
                        meta: Meta::new(new_mode, 0, 0, Mtime::new(epoch.unwrap_or(0), 0)),
                        kind,
                    },
                );
                r.added.push(path.to_vec());
            }
        }
    }
}

fn relocate(m: &mut Manifest, r: &mut RulesReport) {
    for from in RELOCATED {
        let from = from.as_bytes();
        let (meta, is_dir) = match m.get(from) {
            Some(Entry::Inode {
                meta,
                kind: Kind::Dir,
            }) => (meta.clone(), true),
            Some(Entry::Inode {
                meta,
                kind: Kind::File { .. },
            }) => (meta.clone(), false),
            _ => continue, // absent, a symlink, a hard link: leave it
        };
        let to = relocated_path(from);
        if m.get(&to).is_some() {
            continue; // already relocated (a tree genboot made before)
        }
        // Parents of the destination, with the metadata of the /var
        // directories they mirror.
        let mut chain = Vec::new();
        let mut p = parent(&to).expect("has a parent");
        while m.get(p).is_none() {
            chain.push(p.to_vec());
            p = parent(p).expect("/ exists");
        }
        for d in chain.into_iter().rev() {
            let mirrored = var_path_of(&d).and_then(|v| m.get(&v).and_then(Entry::meta).cloned());
            let meta = mirrored
                .unwrap_or_else(|| Meta::new(0o755, 0, 0, Mtime::new(m.epoch.unwrap_or(0), 0)));
            m.entries.insert(
                d.clone(),
                Entry::Inode {
                    meta: Meta {
                        xattrs: BTreeMap::new(),
                        ..meta
                    },
                    kind: Kind::Dir,
                },
            );
            r.added.push(d);
        }
        // Move the entry and everything below it.
        let mut below = from.to_vec();
        below.push(b'/');
        let keys: Vec<Vec<u8>> = std::iter::once(from.to_vec())
            .chain(
                m.entries
                    .range(below.clone()..)
                    .take_while(|(k, _)| k.starts_with(&below))
                    .map(|(k, _)| k.clone()),
            )
            .collect();
        let rename = |k: &[u8]| -> Vec<u8> {
            let mut n = to.clone();
            n.extend_from_slice(&k[from.len()..]);
            n
        };
        for k in &keys {
            let e = m.entries.remove(k).expect("listed");
            let nk = rename(k);
            m.entries.insert(nk.clone(), e);
            r.moved.push((k.clone(), nk));
        }
        // Hard links anywhere that point into the moved subtree.
        let moved: BTreeSet<Vec<u8>> = keys.iter().cloned().collect();
        for e in m.entries.values_mut() {
            if let Entry::Hardlink { target } = e {
                if moved.contains(target) {
                    *target = rename(target);
                }
            }
        }
        // The mount point stays, empty, with the original metadata.
        m.entries.insert(
            from.to_vec(),
            Entry::Inode {
                meta,
                kind: if is_dir {
                    Kind::Dir
                } else {
                    Kind::file_with(b"")
                },
            },
        );
        r.placeholders.push(from.to_vec());
    }
}

/// `/var/X` → `/usr/lib/genboot/var/X`.
pub fn relocated_path(var_path: &[u8]) -> Vec<u8> {
    let mut to = PACKAGE_STATE_DIR.as_bytes().to_vec();
    to.extend_from_slice(&var_path[b"/var".len()..]);
    to
}

/// `/usr/lib/genboot/var/X` → `/var/X`.
fn var_path_of(p: &[u8]) -> Option<Vec<u8>> {
    let rest = p.strip_prefix(PACKAGE_STATE_DIR.as_bytes())?;
    let mut v = b"/var".to_vec();
    v.extend_from_slice(rest);
    Some(v)
}

/// A `passwd` or `group` line's name and id (fields 0 and 2).
fn parse_db(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?))
        })
        .collect()
}

/// Final ids for the names of one database (see the module docs).
fn assign(built: &[(String, u32)], pinned: &BTreeMap<String, u32>) -> BTreeMap<String, u32> {
    let reserved: HashMap<u32, &str> = pinned.iter().map(|(n, id)| (*id, n.as_str())).collect();
    let mut out = BTreeMap::new();
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    for (name, _) in built {
        if let Some(&id) = pinned.get(name) {
            out.insert(name.clone(), id);
            taken.insert(id);
        }
    }
    let mut pending = Vec::new();
    for (name, id) in built {
        if pinned.contains_key(name) || out.contains_key(name) {
            continue;
        }
        let free = reserved.get(id).is_none_or(|n| *n == name) && !taken.contains(id);
        if free {
            out.insert(name.clone(), *id);
            taken.insert(*id);
        } else {
            pending.push((name.clone(), *id));
        }
    }
    for (name, id) in pending {
        let used = |c: &u32| taken.contains(c) || reserved.contains_key(c);
        let fresh = if id < 1000 {
            (100..=999u32).rev().find(|c| !used(c))
        } else {
            (1000..60000u32).find(|c| !used(c))
        };
        let fresh = fresh.unwrap_or(id);
        out.insert(name, fresh);
        taken.insert(fresh);
    }
    out
}

fn pin_ids(
    m: &mut Manifest,
    contents: &mut Contents,
    ids: &mut UidMap,
    r: &mut RulesReport,
) -> Result<(), TreeError> {
    let read = |m: &Manifest, contents: &Contents, p: &[u8]| -> Result<Option<String>, TreeError> {
        match m.inode(p) {
            Some((
                _,
                Kind::File {
                    inline: Some(d), ..
                },
            )) => Ok(Some(String::from_utf8_lossy(d).into_owned())),
            Some((_, Kind::File { sha256, .. })) => {
                let b = contents.read(sha256).map_err(|e| TreeError::Io {
                    op: "read",
                    path: PathBuf::from(show(p)),
                    cause: e,
                })?;
                Ok(Some(String::from_utf8_lossy(&b).into_owned()))
            }
            _ => Ok(None),
        }
    };
    let (Some(passwd), Some(group)) = (
        read(m, contents, b"/etc/passwd")?,
        read(m, contents, b"/etc/group")?,
    ) else {
        return Ok(()); // not a tree with accounts
    };
    let users = parse_db(&passwd);
    let groups = parse_db(&group);
    let fu = assign(&users, &ids.users);
    let fg = assign(&groups, &ids.groups);
    for (name, id) in &users {
        let to = fu[name];
        if to != *id {
            r.users.push(IdChange {
                name: name.clone(),
                from: *id,
                to,
            });
        }
        if !ids.users.contains_key(name) {
            r.new_users.push((name.clone(), to));
            ids.users.insert(name.clone(), to);
        }
    }
    for (name, id) in &groups {
        let to = fg[name];
        if to != *id {
            r.groups.push(IdChange {
                name: name.clone(),
                from: *id,
                to,
            });
        }
        if !ids.groups.contains_key(name) {
            r.new_groups.push((name.clone(), to));
            ids.groups.insert(name.clone(), to);
        }
    }
    if r.users.is_empty() && r.groups.is_empty() {
        return Ok(());
    }
    let ur = r.uid_remap();
    let gr = r.gid_remap();
    // The databases, and shadow's backups of them (`passwd-`, `group-`).
    let fix_passwd = |text: &str| {
        rewrite_db(text, |f| {
            if let Some(to) = f.first().and_then(|n| fu.get(n)) {
                f[2] = to.to_string();
            }
            if let Some(g) = f.get(3).and_then(|g| g.parse::<u32>().ok()) {
                if let Some(to) = gr.get(&g) {
                    f[3] = to.to_string();
                }
            }
        })
    };
    let fix_group = |text: &str| {
        rewrite_db(text, |f| {
            if let Some(to) = f.first().and_then(|n| fg.get(n)) {
                f[2] = to.to_string();
            }
        })
    };
    let mut rewrites = Vec::new();
    for (path, is_passwd) in [
        (&b"/etc/passwd"[..], true),
        (b"/etc/passwd-", true),
        (b"/etc/group", false),
        (b"/etc/group-", false),
    ] {
        if let Some(text) = read(m, contents, path)? {
            let new = if is_passwd {
                fix_passwd(&text)
            } else {
                fix_group(&text)
            };
            if new != text {
                rewrites.push((path, new));
            }
        }
    }
    // Inodes and ACLs.
    for e in m.entries.values_mut() {
        if let Entry::Inode { meta, .. } = e {
            if let Some(to) = ur.get(&meta.uid) {
                meta.uid = *to;
            }
            if let Some(to) = gr.get(&meta.gid) {
                meta.gid = *to;
            }
            for name in [&b"system.posix_acl_access"[..], b"system.posix_acl_default"] {
                if let Some(v) = meta.xattrs.get_mut(name) {
                    remap_acl(v, &ur, &gr);
                }
            }
        }
    }
    let epoch = m.epoch;
    for (path, new) in rewrites {
        set_file(m, contents, path, new.as_bytes(), None, 0o644, epoch, r);
    }
    Ok(())
}

fn rewrite_db(text: &str, mut f: impl FnMut(&mut Vec<String>)) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let mut fields: Vec<String> = body.split(':').map(str::to_string).collect();
        if fields.len() >= 3 && fields[2].parse::<u32>().is_ok() {
            f(&mut fields);
        }
        out.push_str(&fields.join(":"));
        out.push_str(nl);
    }
    out
}

/// Rewrite the ids of `ACL_USER`/`ACL_GROUP` entries of a POSIX ACL xattr
/// (`posix_acl_xattr_header` + 8-byte `{tag, perm, id}` entries).
fn remap_acl(v: &mut [u8], ur: &HashMap<u32, u32>, gr: &HashMap<u32, u32>) {
    if v.len() < 4 || !(v.len() - 4).is_multiple_of(8) {
        return;
    }
    for e in v[4..].chunks_exact_mut(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let table = match tag {
            0x02 => ur,
            0x08 => gr,
            _ => continue,
        };
        if let Some(to) = table.get(&id) {
            e[4..8].copy_from_slice(&to.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Mtime {
        Mtime::new(100, 0)
    }

    fn dir(m: &mut Manifest, p: &str) {
        m.entries.insert(
            p.as_bytes().to_vec(),
            Entry::Inode {
                meta: Meta::new(0o755, 0, 0, t()),
                kind: Kind::Dir,
            },
        );
    }

    fn file(m: &mut Manifest, c: &mut Contents, p: &str, data: &[u8], uid: u32, gid: u32) {
        if data.len() as u64 > INLINE_MAX {
            c.add_bytes(data.to_vec());
        }
        m.entries.insert(
            p.as_bytes().to_vec(),
            Entry::Inode {
                meta: Meta::new(0o644, uid, gid, t()),
                kind: Kind::file_with(data),
            },
        );
    }

    fn text(m: &Manifest, c: &Contents, p: &str) -> String {
        match m.inode(p.as_bytes()).unwrap().1 {
            Kind::File {
                inline: Some(d), ..
            } => String::from_utf8(d.clone()).unwrap(),
            Kind::File { sha256, .. } => String::from_utf8(c.read(sha256).unwrap()).unwrap(),
            k => panic!("{k:?}"),
        }
    }

    /// A tiny Debian-shaped tree: accounts, identity files, dpkg state.
    fn tree(passwd: &str, group: &str) -> (Manifest, Contents) {
        let mut m = Manifest::new(Some(1000));
        let mut c = Contents::default();
        for d in [
            "/",
            "/etc",
            "/etc/ssh",
            "/usr",
            "/usr/lib",
            "/usr/sbin",
            "/var",
            "/var/lib",
            "/var/lib/dpkg",
            "/var/lib/dpkg/info",
            "/var/lib/dbus",
            "/var/lib/apt",
            "/var/cache",
            "/var/cache/debconf",
            "/var/lib/chrony",
        ] {
            dir(&mut m, d);
        }
        file(&mut m, &mut c, "/etc/passwd", passwd.as_bytes(), 0, 0);
        file(&mut m, &mut c, "/etc/group", group.as_bytes(), 0, 0);
        file(&mut m, &mut c, "/etc/hostname", b"buildhost\n", 0, 0);
        file(
            &mut m,
            &mut c,
            "/etc/machine-id",
            b"0123456789abcdef0123456789abcdef\n",
            0,
            0,
        );
        file(
            &mut m,
            &mut c,
            "/etc/resolv.conf",
            b"nameserver 10.0.0.1\n",
            0,
            0,
        );
        file(
            &mut m,
            &mut c,
            "/etc/ssh/ssh_host_ed25519_key",
            b"secret",
            0,
            0,
        );
        file(
            &mut m,
            &mut c,
            "/etc/ssh/ssh_host_ed25519_key.pub",
            b"public",
            0,
            0,
        );
        file(&mut m, &mut c, "/etc/ssh/sshd_config", b"Port 22\n", 0, 0);
        file(&mut m, &mut c, "/var/lib/dbus/machine-id", b"x\n", 0, 0);
        file(
            &mut m,
            &mut c,
            "/var/lib/dpkg/status",
            b"Package: a\n",
            0,
            0,
        );
        file(&mut m, &mut c, "/var/lib/dpkg/info/a.list", b"/usr\n", 0, 0);
        file(&mut m, &mut c, "/var/lib/apt/extended_states", b"", 0, 0);
        file(
            &mut m,
            &mut c,
            "/var/cache/debconf/templates.dat",
            b"Name: x\n",
            0,
            0,
        );
        file(
            &mut m,
            &mut c,
            "/var/cache/debconf/config.dat",
            b"Name: x\n",
            0,
            0,
        );
        file(&mut m, &mut c, "/usr/sbin/sshd", b"ELF", 0, 0);
        m.entries.insert(
            b"/usr/sbin/sshd-link".to_vec(),
            Entry::Hardlink {
                target: b"/usr/sbin/sshd".to_vec(),
            },
        );
        file(&mut m, &mut c, "/var/lib/dpkg/info/b.list", b"hard", 0, 0);
        m.entries.insert(
            b"/var/lib/dpkg/info/c.list".to_vec(),
            Entry::Hardlink {
                target: b"/var/lib/dpkg/info/b.list".to_vec(),
            },
        );
        m.validate().unwrap();
        (m, c)
    }

    const PASSWD1: &str = "root:x:0:0:root:/root:/bin/bash\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\nmessagebus:x:100:101::/nonexistent:/usr/sbin/nologin\n";
    const GROUP1: &str = "root:x:0:\nnogroup:x:65534:\ninput:x:101:\nmessagebus:x:102:\n";

    #[test]
    fn the_images_var_is_made_on_the_machines_by_tmpfiles_when_missing() {
        let (mut m, mut c) = tree(PASSWD1, GROUP1);
        for d in [
            "/var/www",
            "/var/www/html",
            "/var/log",
            "/var/log/apt",
            "/usr/lib/tmpfiles.d",
        ] {
            dir(&mut m, d);
        }
        m.entries.insert(
            b"/var/lib/nginx".to_vec(),
            Entry::Inode {
                meta: Meta::new(0o1770, 33, 33, t()),
                kind: Kind::Dir,
            },
        );
        file(
            &mut m,
            &mut c,
            "/var/www/html/index nginx.html",
            b"<html>hello, a page longer than the inline limit of sixty-four bytes</html>\n",
            0,
            0,
        );
        file(
            &mut m,
            &mut c,
            "/var/log/apt/history.log",
            b"the build's\n",
            0,
            0,
        );
        m.entries.insert(
            b"/var/run".to_vec(),
            Entry::Inode {
                meta: Meta::new(0o777, 0, 0, t()),
                kind: Kind::Symlink {
                    target: b"/run".to_vec(),
                },
            },
        );
        m.entries.insert(
            b"/var/mail%x".to_vec(),
            Entry::Inode {
                meta: Meta::new(0o777, 0, 0, t()),
                kind: Kind::Symlink {
                    target: b"spool/mail".to_vec(),
                },
            },
        );
        // systemd's own line for /var/run: left to it.
        file(
            &mut m,
            &mut c,
            "/usr/lib/tmpfiles.d/legacy.conf",
            b"# x\nL /var/run - - - - ../run\n",
            0,
            0,
        );
        m.validate().unwrap();
        let mut ids = UidMap::default();
        let r = apply(&mut m, &mut c, &Rules::default(), &mut ids).unwrap();
        let conf = text(&m, &c, VAR_TMPFILES);
        let lines: Vec<&str> = conf.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(lines.contains(&"d /var/lib/nginx 1770 33 33 -"), "{conf}");
        assert!(lines.contains(&"d /var/www/html 0755 0 0 -"), "{conf}");
        assert!(lines.contains(&"d /var/log/apt 0755 0 0 -"), "{conf}");
        assert!(
            lines.contains(&"C /var/www/html/index\\x20nginx.html - - - - /usr/share/factory/var/www/html/index\\x20nginx.html"),
            "{conf}"
        );
        assert!(
            lines.contains(&"L /var/mail%%x - - - - spool/mail"),
            "{conf}"
        );
        // Left out: the build's logs, what another tmpfiles.d file
        // declares, the package state moved into the image (rule 3).
        for not in [
            "history.log",
            "/var/run ",
            "/var/lib/dpkg",
            "/var/lib/apt/extended_states",
            "debconf/templates.dat",
        ] {
            assert!(!conf.contains(not), "{not}: {conf}");
        }
        // The copy's source, the same content and owner.
        let (meta, kind) = m
            .inode(b"/usr/share/factory/var/www/html/index nginx.html")
            .unwrap();
        assert_eq!(kind, m.inode(b"/var/www/html/index nginx.html").unwrap().1);
        assert_eq!((meta.mode, meta.uid), (0o644, 0));
        assert!(r.added.contains(&VAR_TMPFILES.as_bytes().to_vec()));
        // Applying the rules again changes nothing.
        let before = m.clone();
        apply(&mut m, &mut c, &Rules::default(), &mut ids).unwrap();
        assert_eq!(m, before);
    }

    #[test]
    fn identity_goes_and_package_state_moves_into_the_image() {
        let (mut m, mut c) = tree(PASSWD1, GROUP1);
        let mut ids = UidMap::default();
        let r = apply(&mut m, &mut c, &Rules::default(), &mut ids).unwrap();
        assert!(m.get(b"/etc/ssh/ssh_host_ed25519_key").is_none());
        assert!(m.get(b"/etc/ssh/ssh_host_ed25519_key.pub").is_none());
        assert!(m.get(b"/etc/ssh/sshd_config").is_some());
        assert!(m.get(b"/var/lib/dbus/machine-id").is_none());
        assert_eq!(text(&m, &c, "/etc/machine-id"), "");
        assert_eq!(text(&m, &c, "/etc/hostname"), "localhost\n");
        assert_eq!(text(&m, &c, "/etc/resolv.conf"), "");
        // Relocated, with placeholders left behind.
        assert_eq!(
            text(&m, &c, "/usr/lib/genboot/var/lib/dpkg/status"),
            "Package: a\n"
        );
        assert!(m.get(b"/var/lib/dpkg/status").is_none());
        assert!(matches!(
            m.get(b"/var/lib/dpkg"),
            Some(Entry::Inode {
                kind: Kind::Dir,
                ..
            })
        ));
        assert!(m
            .get(b"/usr/lib/genboot/var/lib/apt/extended_states")
            .is_some());
        assert_eq!(text(&m, &c, "/var/lib/apt/extended_states"), "");
        assert!(m
            .get(b"/usr/lib/genboot/var/cache/debconf/templates.dat")
            .is_some());
        assert!(
            m.get(b"/var/cache/debconf/config.dat").is_some(),
            "answers stay state"
        );
        // The moved hard link group stays one inode.
        assert_eq!(
            m.get(b"/usr/lib/genboot/var/lib/dpkg/info/c.list"),
            Some(&Entry::Hardlink {
                target: b"/usr/lib/genboot/var/lib/dpkg/info/b.list".to_vec()
            })
        );
        // The keygen unit, enabled.
        assert!(text(&m, &c, SSH_KEYGEN_UNIT).contains("ssh-keygen -A"));
        assert!(m.get(SSH_KEYGEN_WANTS.as_bytes()).is_some());
        assert!(r.placeholders.contains(&b"/var/lib/dpkg".to_vec()));
        assert!(r.users.is_empty() && r.groups.is_empty());
        assert_eq!(ids.users["messagebus"], 100);
        // Idempotent: applying again changes nothing more.
        let before = m.clone();
        apply(&mut m, &mut c, &Rules::default(), &mut ids).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&m.to_text()),
            String::from_utf8_lossy(&before.to_text())
        );
    }

    #[test]
    fn pinned_ids_survive_a_new_system_user_taking_their_number() {
        // Build 1 pins messagebus=100, input=101, messagebus group=102.
        let (mut m1, mut c1) = tree(PASSWD1, GROUP1);
        let mut ids = UidMap::default();
        apply(&mut m1, &mut c1, &Rules::default(), &mut ids).unwrap();
        // Build 2: chrony was installed first and took 100/101.
        let passwd2 = "root:x:0:0:root:/root:/bin/bash\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n_chrony:x:100:101:Chrony:/var/lib/chrony:/usr/sbin/nologin\nmessagebus:x:101:103::/nonexistent:/usr/sbin/nologin\n";
        let group2 =
            "root:x:0:\nnogroup:x:65534:\n_chrony:x:101:\ninput:x:102:\nmessagebus:x:103:\n";
        let (mut m2, mut c2) = tree(passwd2, group2);
        file(&mut m2, &mut c2, "/etc/passwd-", passwd2.as_bytes(), 0, 0);
        // Files owned by the build's ids.
        if let Some(Entry::Inode { meta, .. }) = m2.entries.get_mut(&b"/var/lib/chrony"[..]) {
            meta.uid = 100;
            meta.gid = 101;
            meta.xattrs.insert(
                b"system.posix_acl_access".to_vec(),
                [
                    &2u32.to_le_bytes()[..],
                    &[1, 0, 7, 0],
                    &u32::MAX.to_le_bytes(),
                    &[8, 0, 5, 0],
                    &103u32.to_le_bytes(),
                    &[0x20, 0, 5, 0],
                    &u32::MAX.to_le_bytes(),
                ]
                .concat(),
            );
        }
        let r = apply(&mut m2, &mut c2, &Rules::default(), &mut ids).unwrap();
        let p = text(&m2, &c2, "/etc/passwd");
        assert_eq!(text(&m2, &c2, "/etc/passwd-"), p, "shadow's backup too");
        assert!(p.contains("messagebus:x:100:102:"), "{p}");
        assert!(p.contains("_chrony:x:999:999:Chrony:"), "{p}");
        let g = text(&m2, &c2, "/etc/group");
        assert_eq!(
            g,
            "root:x:0:\nnogroup:x:65534:\n_chrony:x:999:\ninput:x:101:\nmessagebus:x:102:\n"
        );
        let (meta, _) = m2.inode(b"/var/lib/chrony").unwrap();
        assert_eq!((meta.uid, meta.gid), (999, 999));
        let acl = &meta.xattrs[&b"system.posix_acl_access"[..]];
        assert_eq!(
            &acl[4 + 8 + 4..4 + 8 + 8],
            &102u32.to_le_bytes(),
            "ACL group id remapped"
        );
        assert_eq!(r.new_users, vec![("_chrony".to_string(), 999)]);
        assert_eq!(ids.users["_chrony"], 999);
        assert_eq!(ids.groups["_chrony"], 999);
        // A third build with the same map is stable.
        let mut ids3 = ids.clone();
        let (mut m3, mut c3) = tree(passwd2, group2);
        apply(&mut m3, &mut c3, &Rules::default(), &mut ids3).unwrap();
        assert_eq!(ids3, ids);
        assert_eq!(text(&m3, &c3, "/etc/passwd"), p);
    }

    #[test]
    fn uid_map_round_trips_and_names_bad_lines() {
        let mut m = UidMap::default();
        m.users.insert("_apt".into(), 42);
        m.groups.insert("kvm".into(), 104);
        assert_eq!(UidMap::parse(m.to_text().as_bytes()).unwrap(), m);
        let e = UidMap::parse(b"# x\nuser a 1\nuser a 2\n").unwrap_err();
        assert_eq!(e.0, 3);
        let e = UidMap::parse(b"person a 1\n").unwrap_err();
        assert!(e.1.contains("neither user nor group"));
    }
}
