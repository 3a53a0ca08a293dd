//! The initrd writer: a reproducible newc cpio archive, compressed.
//!
//! Reproducible means the bytes depend only on the contents: entries sorted
//! by path (so parents come before children), mtime 0, uid/gid 0, inode
//! numbers by sorted position, device numbers 0, no host-dependent bytes in
//! the compressed stream either. Contents: `/init` (the activator),
//! `/dev/console`, the module closure at `/lib/modules/<release>/<path>`,
//! firmware at `/lib/firmware/<path>`, and the manifest at
//! [`genboot_format::manifest::PATH`]. CPU microcode, when the system has
//! it, goes in front as an uncompressed archive of its own
//! ([`early_microcode`]).

use crate::config::Compression;
use crate::modules::closure::Resolved;
use crate::modules::firmware::Firmware;
use crate::modules::input::{self, InputError, MAX_MODULE_BYTES};
use crate::modules::{Closure, ModuleIndex};
use genboot_format::manifest::{self, Manifest};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    #[error("no activator (genboot-init) found; tried {}", .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NoActivator { tried: Vec<PathBuf> },
    #[error("the activator {path} ({from}) does not exist")]
    ActivatorMissing { path: PathBuf, from: &'static str },
    #[error("the activator {path} is not an ELF executable")]
    ActivatorNotElf { path: PathBuf },
    #[error("cannot read {path} for the initrd: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} cannot go into the initrd: {why}")]
    NotAFile { path: PathBuf, why: String },
    #[error("{format} compression failed: {cause}")]
    Compress {
        format: Compression,
        cause: std::io::Error,
    },
}

impl crate::hint::Hint for InitrdError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            InitrdError::NoActivator { .. } => "run `tools/build-activator` and set [initrd] activator = \"<path it prints>\" in system.toml (or GENBOOT_ACTIVATOR=<path>), or install genboot-init next to genboot".into(),
            InitrdError::ActivatorMissing { from, .. } => {
                format!("run `tools/build-activator` and point {from} at the path it prints")
            }
            InitrdError::ActivatorNotElf { .. } => "/init must be the static genboot-init binary built by `tools/build-activator`".into(),
            InitrdError::NotAFile { .. } => "the activator and module files must be regular files (the activator at most 64 MiB, a module at most 128 MiB)".into(),
            InitrdError::Read { .. } | InitrdError::Compress { .. } => return None,
        })
    }
}

/// The largest activator genboot puts into an initrd: 64 MiB (the static
/// genboot-init is about 1 MB).
pub const MAX_ACTIVATOR_BYTES: u64 = 64 << 20;

/// Default compression level per format. zstd 9: on the 6.1 generic
/// kernel's `virtio_blk virtio_pci ext4 vfat` initrd it compresses in
/// 0.08 s to within 11 % of level 19, which takes 1.05 s.
pub fn default_level(c: Compression) -> i32 {
    match c {
        Compression::Zstd => 9,
        Compression::Gzip => 6,
        Compression::Xz => 6,
        Compression::None => 0,
    }
}

/// Find the activator: `[initrd] activator`, else `$GENBOOT_ACTIVATOR`, else
/// `genboot-init` next to the running `genboot`, else
/// `/usr/lib/genboot/genboot-init`.
pub fn find_activator(configured: Option<&Path>) -> Result<PathBuf, InitrdError> {
    let checked = |path: PathBuf, from: &'static str| -> Result<PathBuf, InitrdError> {
        if !path.is_file() {
            return Err(InitrdError::ActivatorMissing { path, from });
        }
        let mut magic = [0u8; 4];
        let ok = std::fs::File::open(&path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok();
        if !ok || &magic != b"\x7fELF" {
            return Err(InitrdError::ActivatorNotElf { path });
        }
        Ok(path)
    };
    if let Some(p) = configured {
        return checked(p.to_path_buf(), "[initrd] activator");
    }
    if let Some(p) = std::env::var_os("GENBOOT_ACTIVATOR").filter(|p| !p.is_empty()) {
        return checked(PathBuf::from(p), "GENBOOT_ACTIVATOR");
    }
    let mut tried = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        tried.push(dir.join("genboot-init"));
    }
    tried.push(PathBuf::from("/usr/lib/genboot/genboot-init"));
    for p in &tried {
        if p.is_file() {
            return checked(p.clone(), "the default location");
        }
    }
    Err(InitrdError::NoActivator { tried })
}

/// What goes into one initrd.
pub struct Contents<'a> {
    pub index: &'a ModuleIndex,
    pub closure: &'a Closure,
    pub firmware: &'a [Firmware],
    pub activator: &'a Path,
}

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    Dir,
    File { data: Vec<u8>, executable: bool },
    CharDev { major: u32, minor: u32, mode: u32 },
}

/// The members of the initrd, by path without the leading `/`.
pub fn members(c: &Contents<'_>) -> Result<BTreeMap<String, Member>, InitrdError> {
    // The activator is followed through symlinks; module files are not
    // (the tree walk took only regular files). Both are bounded.
    let read = |p: &Path, follow: bool, cap: u64| {
        input::read_regular(p, follow, cap).map_err(|e| match e {
            InputError::Io(cause) => InitrdError::Read {
                path: p.to_path_buf(),
                cause,
            },
            other => InitrdError::NotAFile {
                path: p.to_path_buf(),
                why: other.to_string(),
            },
        })
    };
    let release = &c.index.release;
    let mut m = BTreeMap::new();
    m.insert(
        "dev/console".to_string(),
        Member::CharDev {
            major: 5,
            minor: 1,
            mode: 0o600,
        },
    );
    m.insert(
        "init".to_string(),
        Member::File {
            data: read(c.activator, true, MAX_ACTIVATOR_BYTES)?,
            executable: true,
        },
    );
    let mut manifest = Manifest {
        kernel_release: release.clone(),
        ..Manifest::default()
    };
    let after = load_after(c.index, c.closure);
    let mut data = Vec::with_capacity(c.closure.modules.len());
    for name in &c.closure.modules {
        let info = &c.index.modules[name];
        data.push(read(
            &c.index.dir.join(&info.path),
            false,
            MAX_MODULE_BYTES,
        )?);
    }
    let sizes: Vec<u64> = data.iter().map(|d| d.len() as u64).collect();
    let mut data: Vec<Option<Vec<u8>>> = data.into_iter().map(Some).collect();
    for (i, after) in heaviest_chain_first(&after, &sizes) {
        let name = &c.closure.modules[i];
        let info = &c.index.modules[name];
        let inside = format!("lib/modules/{release}/{}", info.path);
        m.insert(
            inside.clone(),
            Member::File {
                data: data[i].take().unwrap_or_default(),
                executable: false,
            },
        );
        manifest.modules.push(manifest::Module {
            name: name.clone(),
            path: format!("/{inside}"),
            after: after
                .iter()
                .map(|&j| c.closure.modules[j].clone())
                .collect(),
        });
        // Device aliases as the module declares them; the activator
        // matches the kernel's modalias strings against them. Names
        // (`crypto-crc32c`, `fs-ext4`) match no device and stay out.
        for a in &info.info.aliases {
            if manifest::alias_bus(a).is_some() {
                manifest.aliases.push((a.clone(), name.clone()));
            }
        }
    }
    manifest.aliases.sort();
    manifest.aliases.dedup();
    for f in c.firmware {
        let inside = format!("lib/firmware/{}", f.rel);
        m.insert(
            inside.clone(),
            Member::File {
                data: f.data.clone(),
                executable: false,
            },
        );
        manifest.firmware.push(format!("/{inside}"));
    }
    m.insert(
        manifest::PATH.trim_start_matches('/').to_string(),
        Member::File {
            data: manifest.to_text().into_bytes(),
            executable: false,
        },
    );
    // Every parent directory.
    let dirs: Vec<String> = m
        .keys()
        .flat_map(|p| {
            p.match_indices('/')
                .map(|(i, _)| p[..i].to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for d in dirs {
        m.insert(d, Member::Dir);
    }
    Ok(m)
}

/// For each module of the closure, by position, the positions of the
/// modules before it in the closure that must be in the kernel first: its
/// `depends=`, its `softdep` `pre:` modules, and a module whose `softdep`
/// `post:` names it (modprobe loads that one first). Only modules before it
/// count (a softdep cycle is loaded in closure order, as modprobe breaks
/// it); the rest may load at the same time.
pub fn load_after(index: &ModuleIndex, closure: &Closure) -> Vec<BTreeSet<usize>> {
    let pos: BTreeMap<&str, usize> = closure
        .modules
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let resolved = |name: &str| match index.resolve(name) {
        Resolved::Modules(names) => names,
        Resolved::Builtin | Resolved::Unknown => Vec::new(),
    };
    let mut after: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); closure.modules.len()];
    for (i, name) in closure.modules.iter().enumerate() {
        let info = &index.modules[name].info;
        let before = info
            .depends
            .iter()
            .cloned()
            .chain(info.softdep_pre.iter().flat_map(|s| resolved(s)));
        for b in before {
            if let Some(&j) = pos.get(b.as_str()).filter(|&&j| j < i) {
                after[i].insert(j);
            }
        }
        for p in info.softdep_post.iter().flat_map(|s| resolved(s)) {
            if let Some(&j) = pos.get(p.as_str()).filter(|&&j| j > i) {
                after[j].insert(i);
            }
        }
    }
    after
}

/// The order the manifest lists the modules in, with what each waits for:
/// a dependency order (every module after those in its `after`) that puts
/// first, of the modules whose turn it may be, the one heading the
/// heaviest chain — its bytes plus those of the heaviest chain of modules
/// waiting for it (ext4's dependencies before the small virtio modules).
/// genboot-init starts the modules in this order, as many at a time as it
/// has CPUs, so the longest chain of loads starts first. Ties keep the
/// closure order. `after` and the result use closure positions.
pub fn heaviest_chain_first(after: &[BTreeSet<usize>], sizes: &[u64]) -> Vec<(usize, Vec<usize>)> {
    let n = after.len();
    // Every edge points back in closure order, so one backward pass has
    // each module's waiters done before it.
    let mut chain = vec![0u64; n];
    for i in (0..n).rev() {
        let heaviest_waiter = (i + 1..n)
            .filter(|&j| after[j].contains(&i))
            .map(|j| chain[j])
            .max()
            .unwrap_or(0);
        chain[i] = sizes.get(i).copied().unwrap_or(0) + heaviest_waiter;
    }
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let next = (0..n)
            .filter(|&i| !placed[i] && after[i].iter().all(|&j| placed[j]))
            .max_by_key(|&i| (chain[i], std::cmp::Reverse(i)));
        let Some(i) = next else { break };
        placed[i] = true;
        order.push(i);
    }
    let rank: BTreeMap<usize, usize> = order.iter().enumerate().map(|(r, &i)| (i, r)).collect();
    order
        .iter()
        .map(|&i| {
            let mut a: Vec<usize> = after[i].iter().copied().collect();
            a.sort_by_key(|j| rank[j]);
            (i, a)
        })
        .collect()
}

/// CPU microcode below a firmware directory, as Debian's `intel-microcode`
/// and `amd64-microcode` install it, and the file the kernel's early
/// loader reads for each vendor (`kernel/x86/microcode/<name>` in an
/// uncompressed cpio at the start of the initrd).
const MICROCODE: [(&str, &str, &str); 2] = [
    ("intel-ucode", "", "GenuineIntel.bin"),
    ("amd-ucode", ".bin", "AuthenticAMD.bin"),
];

/// At most this much microcode per file (Debian's largest is about 300 KB).
const MAX_MICROCODE_BYTES: u64 = 16 << 20;

/// The microcode files below `fw_dir`, per vendor, sorted by name: every
/// regular file in `intel-ucode/`, every `*.bin` in `amd-ucode/`. Missing
/// directories give none.
pub fn microcode_files(fw_dir: &Path) -> Vec<(&'static str, Vec<PathBuf>)> {
    let mut out = Vec::new();
    for (dir, suffix, name) in MICROCODE {
        let Ok(rd) = std::fs::read_dir(fw_dir.join(dir)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
            .map(|e| e.path())
            .collect();
        files.sort();
        if !files.is_empty() {
            out.push((name, files));
        }
    }
    out
}

/// The early microcode archive: an uncompressed newc cpio holding
/// `kernel/x86/microcode/GenuineIntel.bin` and `AuthenticAMD.bin`, each the
/// vendor's files concatenated (as Debian's initramfs-tools hooks do), for
/// the kernel to read before it unpacks the compressed archive that
/// follows it. `None` without microcode.
pub fn early_microcode(
    files: &[(&'static str, Vec<PathBuf>)],
) -> Result<Option<Vec<u8>>, InitrdError> {
    if files.is_empty() {
        return Ok(None);
    }
    let mut m = BTreeMap::new();
    for d in ["kernel", "kernel/x86", "kernel/x86/microcode"] {
        m.insert(d.to_string(), Member::Dir);
    }
    for (name, paths) in files {
        let mut data = Vec::new();
        for p in paths {
            let bytes =
                input::read_regular(p, false, MAX_MICROCODE_BYTES).map_err(|e| match e {
                    InputError::Io(cause) => InitrdError::Read {
                        path: p.clone(),
                        cause,
                    },
                    other => InitrdError::NotAFile {
                        path: p.clone(),
                        why: other.to_string(),
                    },
                })?;
            data.extend_from_slice(&bytes);
        }
        m.insert(
            format!("kernel/x86/microcode/{name}"),
            Member::File {
                data,
                executable: false,
            },
        );
    }
    Ok(Some(cpio(&m)))
}

/// The newc archive of `members` (sorted by path, so parents come first).
pub fn cpio(members: &BTreeMap<String, Member>) -> Vec<u8> {
    let total: usize = members
        .values()
        .map(|m| match m {
            Member::File { data, .. } => data.len() + 256,
            _ => 256,
        })
        .sum();
    let mut out = Vec::with_capacity(total + 512);
    // A directory's link count: 2 plus one per subdirectory.
    let mut subdirs: BTreeMap<&str, u32> = BTreeMap::new();
    for (p, m) in members {
        if *m == Member::Dir {
            if let Some((parent, _)) = p.rsplit_once('/') {
                *subdirs.entry(parent).or_default() += 1;
            }
        }
    }
    for (i, (path, m)) in members.iter().enumerate() {
        let ino = i as u32 + 1;
        let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match m {
            Member::Dir => (
                0o040_755,
                2 + subdirs.get(path.as_str()).copied().unwrap_or(0),
                &[],
                (0, 0),
            ),
            Member::File { data, executable } => (
                if *executable { 0o100_755 } else { 0o100_644 },
                1,
                data,
                (0, 0),
            ),
            Member::CharDev { major, minor, mode } => (0o020_000 | mode, 1, &[], (*major, *minor)),
        };
        entry(&mut out, path, ino, mode, nlink, data, rdev);
    }
    entry(&mut out, "TRAILER!!!", 0, 0, 1, &[], (0, 0));
    out
}

fn entry(
    out: &mut Vec<u8>,
    name: &str,
    ino: u32,
    mode: u32,
    nlink: u32,
    data: &[u8],
    rdev: (u32, u32),
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        u32::try_from(data.len()).expect("initrd members are below 4 GiB"),
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Compress `data`; `level` None means [`default_level`].
pub fn compress(data: &[u8], c: Compression, level: Option<i32>) -> Result<Vec<u8>, InitrdError> {
    let level = level.unwrap_or_else(|| default_level(c));
    let err = |cause| InitrdError::Compress { format: c, cause };
    match c {
        Compression::None => Ok(data.to_vec()),
        Compression::Zstd => zstd::bulk::compress(data, level).map_err(err),
        Compression::Gzip => {
            // flate2 writes mtime 0 and no file name: no host bytes.
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 2),
                flate2::Compression::new(level as u32),
            );
            e.write_all(data).map_err(err)?;
            e.finish().map_err(err)
        }
        Compression::Xz => {
            // The kernel's xz decoder knows CRC32 but rejects CRC64 (xz's default).
            let stream = liblzma::stream::Stream::new_easy_encoder(
                level as u32,
                liblzma::stream::Check::Crc32,
            )
            .map_err(|e| err(e.into()))?;
            let mut e =
                liblzma::write::XzEncoder::new_stream(Vec::with_capacity(data.len() / 2), stream);
            e.write_all(data).map_err(err)?;
            e.finish().map_err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BTreeMap<String, Member> {
        let mut m = BTreeMap::new();
        m.insert("dev".into(), Member::Dir);
        m.insert(
            "dev/console".into(),
            Member::CharDev {
                major: 5,
                minor: 1,
                mode: 0o600,
            },
        );
        m.insert(
            "init".into(),
            Member::File {
                data: b"hello".to_vec(),
                executable: true,
            },
        );
        m
    }

    #[test]
    fn cpio_is_padded_newc_with_trailer() {
        let a = cpio(&sample());
        assert_eq!(a.len() % 4, 0);
        assert!(a.starts_with(b"070701"));
        let trailer = memchr::memmem::rfind(&a, b"TRAILER!!!").unwrap();
        assert!(trailer > 0);
        // dev/console: mode 020600, rdev 5:1.
        let at = memchr::memmem::find(&a, b"dev/console").unwrap() - 110;
        let hdr = std::str::from_utf8(&a[at..at + 110]).unwrap();
        assert_eq!(&hdr[14..22], "00002180");
        assert_eq!(&hdr[78..86], "00000005");
        assert_eq!(&hdr[86..94], "00000001");
    }

    /// (name, ino, mode, nlink) of every header, in archive order.
    fn headers(a: &[u8]) -> Vec<(String, u32, u32, u32)> {
        let mut out = Vec::new();
        let mut at = 0;
        let field = |h: &[u8], i: usize| {
            u32::from_str_radix(std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                .unwrap()
        };
        while at < a.len() {
            let h = &a[at..at + 110];
            assert_eq!(&h[..6], b"070701");
            let namesize = field(h, 11) as usize;
            let filesize = field(h, 6) as usize;
            let name = String::from_utf8(a[at + 110..at + 110 + namesize - 1].to_vec()).unwrap();
            out.push((name.clone(), field(h, 0), field(h, 1), field(h, 4)));
            at = (at + 110 + namesize).next_multiple_of(4);
            at = (at + filesize).next_multiple_of(4);
            if name == "TRAILER!!!" {
                break;
            }
        }
        assert_eq!(at, a.len());
        out
    }

    #[test]
    fn inodes_follow_sorted_position_and_dirs_count_their_links() {
        let mut m = sample();
        m.insert("lib".into(), Member::Dir);
        m.insert("lib/modules".into(), Member::Dir);
        m.insert("lib/firmware".into(), Member::Dir);
        let h = headers(&cpio(&m));
        let names: Vec<&str> = h.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/firmware",
                "lib/modules",
                "TRAILER!!!"
            ]
        );
        for (i, (name, ino, _, _)) in h.iter().enumerate().take(6) {
            assert_eq!(*ino, i as u32 + 1, "{name}");
        }
        let get = |n: &str| h.iter().find(|x| x.0 == n).unwrap().clone();
        assert_eq!(get("lib").3, 4, "lib has two subdirectories");
        assert_eq!(get("dev").3, 2);
        assert_eq!(get("init").2, 0o100_755);
        assert_eq!(get("dev").2, 0o040_755);
    }

    #[test]
    fn same_members_same_bytes() {
        assert_eq!(cpio(&sample()), cpio(&sample()));
        for c in [Compression::Zstd, Compression::Gzip, Compression::Xz] {
            let data = cpio(&sample());
            assert_eq!(
                compress(&data, c, None).unwrap(),
                compress(&data, c, None).unwrap()
            );
        }
    }

    /// A test module: name, depends, softdep pre, softdep post, aliases.
    type TestModule<'a> = (
        &'a str,
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
    );

    fn index(mods: &[TestModule<'_>]) -> ModuleIndex {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ModuleIndex {
            dir: PathBuf::from("/t"),
            release: "r".into(),
            modules: mods
                .iter()
                .map(|(name, deps, pre, post, aliases)| {
                    let info = crate::modules::ModuleInfo {
                        name: name.to_string(),
                        path: format!("kernel/{name}.ko"),
                        order: 0,
                        info: crate::modules::modinfo::ModInfo {
                            depends: v(deps),
                            softdep_pre: v(pre),
                            softdep_post: v(post),
                            aliases: v(aliases),
                            ..Default::default()
                        },
                    };
                    (name.to_string(), info)
                })
                .collect(),
            builtin: ["bi".to_string()].into(),
            builtin_paths: vec![],
            builtin_aliases: vec![],
        }
    }

    #[test]
    fn modules_load_after_their_dependencies_and_pre_softdeps_only() {
        // ext4 as Debian's 6.1 has it: depends on jbd2, mbcache, crc16 and a
        // builtin; softdep pre: crc32c, which two modules provide. A post
        // softdep loads after the module naming it. virtio_blk is unrelated.
        let idx = index(&[
            ("virtio_blk", &[], &[], &[], &["virtio:d00000002v*"]),
            (
                "crc32c_intel",
                &[],
                &[],
                &[],
                &["crc32c", "cpu:type:x86,ven*fam*mod*:feature:*0094*"],
            ),
            (
                "crc32c_generic",
                &[],
                &[],
                &[],
                &["crc32c", "crypto-crc32c"],
            ),
            ("jbd2", &[], &[], &[], &[]),
            ("mbcache", &[], &[], &[], &[]),
            ("crc16", &[], &[], &[], &[]),
            (
                "ext4",
                &["jbd2", "mbcache", "crc16", "bi"],
                &["crc32c"],
                &["post"],
                &["fs-ext4"],
            ),
            ("post", &[], &[], &[], &[]),
        ]);
        let closure = crate::modules::closure(&idx, &["virtio_blk".into(), "ext4".into()]).unwrap();
        let after = load_after(&idx, &closure);
        let name = |i: &usize| closure.modules[*i].as_str();
        let by_name: BTreeMap<&str, Vec<&str>> = closure
            .modules
            .iter()
            .zip(&after)
            .map(|(n, a)| (n.as_str(), a.iter().map(name).collect()))
            .collect();
        let mut ext4 = by_name["ext4"].clone();
        ext4.sort();
        assert_eq!(
            ext4,
            ["crc16", "crc32c_generic", "crc32c_intel", "jbd2", "mbcache"]
        );
        assert_eq!(by_name["post"], ["ext4"]);
        for free in [
            "virtio_blk",
            "crc32c_intel",
            "crc32c_generic",
            "jbd2",
            "mbcache",
            "crc16",
        ] {
            assert!(by_name[free].is_empty(), "{free}: {:?}", by_name[free]);
        }
        // Every module waits only for modules before it.
        for (i, a) in after.iter().enumerate() {
            assert!(a.iter().all(|&j| j < i), "{}: {a:?}", closure.modules[i]);
        }
    }

    #[test]
    fn the_heaviest_chain_goes_first_and_every_module_after_what_it_waits_for() {
        // The generic 6.1 kernel's twelve modules in closure order, with
        // their sizes: ext4 (2 MB) and what it waits for come first, the
        // small virtio modules after, each still after its dependencies.
        let names = [
            "virtio",
            "virtio_ring",
            "virtio_blk",
            "virtio_pci_modern_dev",
            "virtio_pci_legacy_dev",
            "virtio_pci",
            "crc32c_intel",
            "crc32c_generic",
            "jbd2",
            "mbcache",
            "crc16",
            "ext4",
        ];
        let sizes = [
            32241, 70321, 58305, 31609, 16329, 61945, 29217, 9985, 365841, 25721, 6025, 2069185,
        ];
        let set = |v: &[usize]| v.iter().copied().collect::<BTreeSet<usize>>();
        let after = vec![
            set(&[]),
            set(&[]),
            set(&[0, 1]),
            set(&[]),
            set(&[]),
            set(&[0, 1, 3, 4]),
            set(&[]),
            set(&[]),
            set(&[6, 7]),
            set(&[]),
            set(&[]),
            set(&[6, 7, 8, 9, 10]),
        ];
        let order = heaviest_chain_first(&after, &sizes);
        let listed: Vec<&str> = order.iter().map(|(i, _)| names[*i]).collect();
        assert_eq!(
            listed,
            [
                "crc32c_intel",
                "crc32c_generic",
                "jbd2",
                "mbcache",
                "crc16",
                "ext4",
                "virtio_ring",
                "virtio",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_pci",
                "virtio_blk",
            ]
        );
        for (r, (i, a)) in order.iter().enumerate() {
            assert_eq!(set(a), after[*i], "{}", names[*i]);
            for j in a {
                let rj = order.iter().position(|(x, _)| x == j).unwrap();
                assert!(rj < r, "{} listed before {}", names[*i], names[*j]);
            }
        }
        // Equal weights: the closure order stays.
        let flat = heaviest_chain_first(&vec![BTreeSet::new(); 4], &[1, 1, 1, 1]);
        assert_eq!(flat.iter().map(|x| x.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
    }

    #[test]
    fn the_manifest_lists_device_aliases_and_load_order_constraints() {
        let t = tempfile::tempdir().unwrap();
        let mut idx = index(&[
            ("jbd2", &[], &[], &[], &[]),
            (
                "crc32c_intel",
                &[],
                &[],
                &[],
                &["crypto-crc32c", "cpu:type:x86,ven*fam*mod*:feature:*0094*"],
            ),
            ("ext4", &["jbd2"], &["crc32c"], &[], &["fs-ext4", "ext3"]),
        ]);
        idx.modules
            .get_mut("crc32c_intel")
            .unwrap()
            .info
            .aliases
            .push("crc32c".into());
        idx.dir = t.path().to_path_buf();
        std::fs::create_dir(t.path().join("kernel")).unwrap();
        for n in ["jbd2", "crc32c_intel", "ext4"] {
            std::fs::write(t.path().join(format!("kernel/{n}.ko")), n).unwrap();
        }
        let act = t.path().join("init");
        std::fs::write(&act, b"\x7fELF").unwrap();
        let closure = crate::modules::closure(&idx, &["ext4".into()]).unwrap();
        let members = members(&Contents {
            index: &idx,
            closure: &closure,
            firmware: &[],
            activator: &act,
        })
        .unwrap();
        let Member::File { data, .. } = &members["etc/genboot/initrd.manifest"] else {
            panic!("no manifest")
        };
        let text = String::from_utf8(data.clone()).unwrap();
        // jbd2's chain (jbd2, ext4: 8 bytes) is lighter than crc32c_intel's
        // (16): crc32c_intel goes first.
        assert_eq!(
            text,
            "genboot-initrd 1\n\
             kernel r\n\
             module crc32c_intel /lib/modules/r/kernel/crc32c_intel.ko\n\
             module jbd2 /lib/modules/r/kernel/jbd2.ko\n\
             module ext4 /lib/modules/r/kernel/ext4.ko crc32c_intel,jbd2\n\
             alias cpu:type:x86,ven*fam*mod*:feature:*0094* crc32c_intel\n"
        );
        assert_eq!(Manifest::parse(&text).unwrap().to_text(), text);
    }

    #[test]
    fn xz_uses_the_crc32_check() {
        let out = compress(b"abc", Compression::Xz, Some(1)).unwrap();
        // Stream flags: byte 7 is the check type; 0x01 = CRC32.
        assert_eq!(out[7], 0x01);
    }
}
