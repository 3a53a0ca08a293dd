//! The fuzz targets: every parser genboot-init (PID 1) runs on bytes from
//! the command line, the initrd and the disks, and the builder's parsers of
//! files it does not write (`system.toml`, kernel modules, kernel images).
//!
//! Each target calls the crates' own public functions and returns an
//! outcome feature (see [`crate::engine`]). Besides "must not panic", some
//! check a property that must hold for every input (an oracle), and panic
//! when it does not: a round trip, two code paths that must agree, or
//! agreement with the C library the real tool uses.

use crate::engine::{fnv, Target};
use genboot::config::{ConfigError, SystemConfig};
use genboot::modules::modinfo;
use genboot_format::cmdline::{self, BootArgs, Cmdline, RootSpec};
use genboot_format::manifest::Manifest;
use genboot_format::module_name::{self, ModuleCompression};
use genboot_format::store_name::{self, HASH_LEN};
use genboot_format::storehash::{self, Entry, EntryKind, SELF_MASK};
use genboot_init::json;
use genboot_init::probe;
use std::io::{self, Read};
use std::path::Path;

pub const TARGETS: &[Target] = &[
    Target {
        name: "load-option",
        about: "firmware boot entries (Boot####): boot_entry::parse_load_option, and a parsed genboot entry re-encodes to its bytes (builder)",
        max_len: 4096,
        dict: &[
            b"\x04\x01\x2a\x00", b"\x04\x04", b"\x7f\xff\x04\x00", b"\x02\x02", b"\x01\x00\x00\x00",
            b"\\\x00E\x00F\x00I\x00", b"\x00\x00",
        ],
        run: load_option,
    },
    Target {
        name: "cmdline",
        about: "kernel command line: cmdline::Cmdline::parse, BootArgs::from_cmdline, RootSpec::parse (PID 1)",
        max_len: 4096,
        dict: &[
            b"root=", b"init=", b"rootfstype=", b"rootflags=", b"ro", b"rw", b"--", b"\"",
            b"genboot.timeout=", b"genboot.recovery", b"genboot.verify", b"genboot.debug",
            b"genboot.shell_on_fail=", b"PARTUUID=", b"UUID=", b"LABEL=", b"/dev/", b"=0", b"=off",
        ],
        run: cmdline,
    },
    Target {
        name: "boot-json",
        about: "boot.json: json::parse and the fields genboot-init reads, against serde_json (PID 1)",
        max_len: 16 * 1024,
        dict: &[
            b"{", b"}", b"[", b"]", b"\"", b"\\u", b"\\ud83d\\ude00", b"\\ud800", b":", b",",
            b"null", b"true", b"false", b"-1.5e3", b"\"org.genboot.v1\"", b"\"kernelRelease\"",
            b"\"format\"", b"[[[[[[[[[[[[[[[[",
        ],
        run: boot_json,
    },
    Target {
        name: "manifest",
        about: "initrd manifest: Manifest::parse, and parse(to_text(m)) == m (PID 1)",
        max_len: 16 * 1024,
        dict: &[
            b"genboot-initrd 1\n", b"kernel ", b"module ", b"alias ", b"firmware ", b"\n", b"\r",
            b"#", b" ",
        ],
        run: manifest,
    },
    Target {
        name: "gpt",
        about: "a disk's first sectors: probe::gpt_header, GptHeader::entry_offset, probe::gpt_entry_partuuid (PID 1)",
        max_len: 34 * 512 + 4096,
        dict: &[b"EFI PART", b"\x00\x00\x01\x00", b"\x80\x00\x00\x00"],
        run: gpt,
    },
    Target {
        name: "superblock",
        about: "a file system's first 68 KiB: probe::probe_fs (ext4, xfs, btrfs, vfat) (PID 1)",
        max_len: probe::PROBE_LEN,
        dict: &[
            b"XFSB", b"\x53\xef", b"_BHRfS_M", b"\x55\xaa", b"FAT32   ", b"FAT16   ", b"NO NAME    ",
        ],
        run: superblock,
    },
    Target {
        name: "alias",
        about: "module aliases: module_name::fnmatch against fnmatch(3), alias_matches against kmod's normalise-then-fnmatch, modules_for against alias_matches (PID 1 and builder)",
        max_len: 512,
        dict: &[
            b"*", b"?", b"[", b"]", b"[!", b"[^", b"-", b"\n", b"pci:v", b"virtio:d", b"d*sv*sd*bc*sc*i*",
        ],
        run: alias_glob,
    },
    Target {
        name: "storehash",
        about: "store names and hashes: split_store_name, file_digest against mask_self for many read sizes, object_hash and hash_tree of a small tree (PID 1 and builder)",
        max_len: 4096,
        dict: &[b"genboot-self-hash-placeholder-00", b"00", b"\n", b"/", b"-", b"0123456789abcdef"],
        run: store_hash,
    },
    Target {
        name: "pid1-disk",
        about: "the whole of genboot-init (activate::run) on an in-memory machine whose disk holds the input: GPT, superblock, root wait, mount, generation (PID 1)",
        max_len: crate::pid1::PART_OFFSET + probe::PROBE_LEN,
        dict: &[
            b"EFI PART", b"\x53\xef", b"XFSB", b"_BHRfS_M", b"\x55\xaa", b"FAT32   ",
            b"\x00\x00\x00\x00\x00\x00\x00\x40",
        ],
        run: pid1_disk,
    },
    Target {
        name: "system-toml",
        about: "system.toml: config::SystemConfig::parse (builder)",
        max_len: 8 * 1024,
        dict: &[
            b"[kernel]\n", b"[initrd]\n", b"[root]\n", b"[system]\n", b"[boot]\n", b"[tree]\n",
            b"image = ", b"modules = ", b"params = [", b"device = ", b"tries = ", b"limit = ",
            b"timeout = ", b"esp = ", b"compression = ", b"level = ", b"\"", b"'''", b"\n",
            b"= 18446744073709551616", b"= -1", b"= 1e999",
        ],
        run: system_toml,
    },
    Target {
        name: "modinfo",
        about: "kernel module ELF and .modinfo: modinfo::sections, parse, parse_softdep; modinfo::read of the same bytes as a file must agree (builder)",
        max_len: 64 * 1024,
        dict: &[
            b"\x7fELF", b".modinfo\0", b"__ksymtab_strings\0", b"alias=", b"depends=", b"softdep=",
            b"pre: ", b"post: ", b"firmware=", b"vermagic=", b"name=", b"\0",
        ],
        run: modinfo_elf,
    },
    Target {
        name: "bzimage",
        about: "kernel image header: kernel::release_from_header, kernel::inspect (PE/EFI stub) (builder)",
        max_len: 64 * 1024,
        dict: &[b"HdrS", b"MZ", b"PE\0\0", b"\x0a\x00"],
        run: bzimage,
    },
];

/// A feature from parts (the engine only compares them).
fn feature(parts: &[&[u8]]) -> u64 {
    let mut all = Vec::new();
    for p in parts {
        all.extend_from_slice(p);
        all.push(0xff);
    }
    fnv(&all)
}

/// Rough size classes, so "longer" is new without every length being new.
fn bucket(n: usize) -> u8 {
    (usize::BITS - n.leading_zeros()) as u8
}

/// An error message without its numbers: the kind of error (for messages
/// that do not quote the input).
fn shape(msg: &str) -> Vec<u8> {
    msg.bytes()
        .filter(|b| !b.is_ascii_digit())
        .take(80)
        .collect()
}

/// Which of `phrases` the message holds (their index; `phrases.len()` for
/// none): the kind of error, for messages that quote the input.
fn class(msg: &str, phrases: &[&str]) -> u8 {
    phrases
        .iter()
        .position(|p| msg.contains(p))
        .unwrap_or(phrases.len()) as u8
}

/// A scratch directory for the targets that go through files, on tmpfs
/// when there is one: `/dev/shm/genboot-fuzz-<pid>`, one per process,
/// removed by [`remove_scratch`] when the run ends.
fn scratch() -> std::path::PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("genboot-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&d);
    d
}

/// Remove this process's scratch directory.
pub fn remove_scratch() {
    let d = scratch();
    clear(&d);
    let _ = std::fs::remove_dir(&d);
}

/// Remove `dir` and everything below it (read-only directories included).
fn clear(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755));
                clear(&p);
                let _ = std::fs::remove_dir(&p);
            } else {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

fn cmdline(data: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(data);
    let c = Cmdline::parse(&text);
    let _ = (c.read_only(), c.flag("genboot.debug"), c.values("console"));
    for (_, v) in &c.params {
        if let Some(v) = v {
            if let Ok(r) = RootSpec::parse(v) {
                // What the activator prints must read back as the same spec.
                let again = RootSpec::parse(&r.to_string());
                assert_eq!(again.as_ref(), Ok(&r), "RootSpec round trip of {v:?}");
            }
        }
    }
    let args = BootArgs::from_cmdline(&c);
    if let Ok(a) = &args {
        let s = a.timeout.as_secs();
        assert!(
            (1..=cmdline::MAX_TIMEOUT_SECS).contains(&s),
            "timeout {s} s out of range"
        );
    }
    let outcome = match &args {
        Ok(a) => vec![
            b'o',
            a.recovery as u8,
            a.read_only as u8,
            a.verify as u8,
            a.debug as u8,
            a.shell_on_fail as u8,
            a.init.is_some() as u8,
            a.init_args.is_empty() as u8,
            a.fstypes.is_empty() as u8,
            a.rootflags.is_empty() as u8,
            (a.timeout == cmdline::DEFAULT_TIMEOUT) as u8,
        ],
        Err(e) => vec![
            b'e',
            class(
                e,
                &[
                    "no root=",
                    "is not PARTUUID=",
                    "has an empty",
                    "is more than",
                    "is not a whole number",
                ],
            ),
        ],
    };
    feature(&[
        &outcome,
        &[
            bucket(c.params.len()).min(4),
            bucket(c.init_args.len()).min(3),
        ],
    ])
}

fn boot_json(data: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(data);
    let ours = json::parse(&text);
    let outcome = match &ours {
        Ok(v) => {
            let g = v.get("org.genboot.v1");
            let release = g
                .and_then(|g| g.get("kernelRelease"))
                .and_then(json::Value::as_str);
            let format = match g.and_then(|g| g.get("format")) {
                Some(json::Value::Number(n)) => n.parse::<u64>().ok(),
                _ => None,
            };
            // Where both accept the text, the fields genboot-init uses must
            // decode as serde_json decodes them.
            if let Ok(theirs) = serde_json::from_str::<serde_json::Value>(&text) {
                let tg = theirs.get("org.genboot.v1");
                let t_release = tg
                    .and_then(|g| g.get("kernelRelease"))
                    .and_then(|r| r.as_str());
                assert_eq!(release, t_release, "kernelRelease differs from serde_json");
                if let Some(t_format) = tg.and_then(|g| g.get("format")).and_then(|f| f.as_u64()) {
                    if let Some(f) = format {
                        assert_eq!(f, t_format, "format differs from serde_json");
                    }
                }
            }
            vec![b'o', release.is_some() as u8, format.is_some() as u8]
        }
        Err(e) => shape(e),
    };
    feature(&[&outcome])
}

fn manifest(data: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(data);
    let outcome = match Manifest::parse(&text) {
        Ok(m) => {
            // What genboot-init reads, written again, reads the same.
            let again = Manifest::parse(&m.to_text());
            assert_eq!(again.as_ref(), Ok(&m), "manifest round trip");
            vec![
                b'o',
                bucket(m.modules.len()),
                bucket(m.aliases.len()),
                bucket(m.firmware.len()),
            ]
        }
        Err(e) => vec![
            b'e',
            class(&e, &["first line", "cannot read", "no kernel line"]),
        ],
    };
    feature(&[&outcome])
}

fn load_option(data: &[u8]) -> u64 {
    use genboot::host::boot_entry::{self, Partition};
    let Some(p) = boot_entry::parse_load_option(data) else {
        return 0;
    };
    // An entry genboot would write for what it names is read back the same.
    if let (Some(uuid), Some(path)) = (p.partition, p.path.as_deref()) {
        let part = Partition {
            number: 1,
            start: 2048,
            size: 4096,
            uuid,
        };
        let again = boot_entry::load_option(&p.description, &part, path);
        let q = boot_entry::parse_load_option(&again).expect("genboot's own bytes parse");
        assert_eq!(q.partition, Some(uuid));
        assert_eq!(q.description, p.description);
        return 2 + fnv(p.description.as_bytes()) % 7;
    }
    1
}

fn gpt(data: &[u8]) -> u64 {
    let mut out = Vec::new();
    for ss in [512usize, 4096] {
        let Some(h) = data.get(ss..2 * ss).and_then(probe::gpt_header) else {
            out.push(0);
            continue;
        };
        out.push(1);
        for n in 1..=u64::from(h.entries).min(4) {
            let Some(off) = h.entry_offset(n, ss as u64) else {
                out.push(2);
                continue;
            };
            let entry = usize::try_from(off)
                .ok()
                .and_then(|o| data.get(o..o.saturating_add(128)));
            match entry.map(probe::gpt_entry_partuuid) {
                Some(Some(u)) => {
                    assert_eq!(u.len(), 36, "PARTUUID text {u:?}");
                    out.push(3);
                }
                Some(None) => out.push(4),
                None => out.push(5),
            }
        }
        // Entries of any header, past the end included, never panic.
        let _ = h.entry_offset(u64::from(h.entries), ss as u64);
        let _ = h.entry_offset(u64::MAX, ss as u64);
    }
    feature(&[&out])
}

fn superblock(data: &[u8]) -> u64 {
    let outcome = match probe::probe_fs(data) {
        Some(fs) => {
            assert!(!fs.uuid.is_empty(), "empty UUID");
            let mut v = fs.fstype.as_bytes().to_vec();
            v.push(bucket(fs.label.len()));
            v
        }
        None => vec![0],
    };
    // Every prefix length class of a superblock is its own outcome.
    feature(&[&outcome, &[bucket(data.len())]])
}

/// `fnmatch(pattern, text, 0)`, as kmod matches modaliases.
#[allow(unsafe_code)]
fn fnmatch(pattern: &[u8], text: &[u8]) -> Option<bool> {
    let p = std::ffi::CString::new(pattern).ok()?;
    let t = std::ffi::CString::new(text).ok()?;
    // SAFETY: both are NUL-terminated strings that live for the call;
    // fnmatch only reads them.
    let r = unsafe { libc::fnmatch(p.as_ptr(), t.as_ptr(), 0) };
    Some(r == 0)
}

fn alias_glob(data: &[u8]) -> u64 {
    let (pattern, text) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (
            data,
            &b"pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"[..],
        ),
    };
    let ours = module_name::fnmatch(pattern, text);
    let (p_text, t_text) = (
        String::from_utf8_lossy(pattern).into_owned(),
        String::from_utf8_lossy(text).into_owned(),
    );
    let matches = module_name::alias_matches(&p_text, &t_text);
    // The boot-time table lookup and the build-time matcher agree.
    let table = vec![(p_text.clone(), "m".to_string())];
    assert_eq!(
        module_name::modules_for(&table, &t_text) == ["m"],
        matches,
        "modules_for and alias_matches disagree on {p_text:?} {t_text:?}"
    );
    // Where the C library's rules are the same as genboot's (ASCII, no
    // backslash escapes, no [:class:] names), the answers must be: the
    // glob itself, and the alias match as kmod makes it (both sides
    // normalised, then fnmatch).
    let comparable = |b: &[u8]| b.iter().all(|&c| (0x20..0x7f).contains(&c) && c != b'\\');
    let has_named_class = pattern
        .windows(2)
        .any(|w| w == b"[:" || w == b"[=" || w == b"[.");
    if comparable(pattern) && comparable(text) && !has_named_class {
        if let Some(theirs) = fnmatch(pattern, text) {
            assert_eq!(
                ours, theirs,
                "fnmatch({p_text:?}, {t_text:?}) disagrees with fnmatch(3)"
            );
        }
        let kmod = match (
            module_name::normalize_alias(&p_text),
            module_name::normalize_alias(&t_text),
        ) {
            (Some(p), Some(t)) => fnmatch(p.as_bytes(), t.as_bytes()),
            _ => Some(false),
        };
        if let Some(kmod) = kmod {
            assert_eq!(
                matches, kmod,
                "alias_matches({p_text:?}, {t_text:?}) disagrees with kmod's rule"
            );
        }
    }
    feature(&[&[
        ours as u8,
        matches as u8,
        bucket(pattern.len()),
        bucket(text.len()),
    ]])
}

/// A reader returning `data` in pieces of the given sizes, cycling.
struct Pieces<'a> {
    data: &'a [u8],
    sizes: &'a [usize],
    k: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.sizes[self.k % self.sizes.len()].max(1);
        self.k += 1;
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The store hash of the in-memory tree `files` (relative path, contents,
/// executable), the way the builder and the activator define it.
fn expected_hash(
    name: &str,
    files: &[(String, Vec<u8>, bool)],
    own: &[u8; 32],
) -> store_name::StoreHash {
    let mut entries: Vec<Entry> = Vec::new();
    let mut dirs: Vec<String> = Vec::new();
    for (p, data, x) in files {
        let mut d = String::new();
        for part in p.split('/').take(p.split('/').count() - 1) {
            if !d.is_empty() {
                d.push('/');
            }
            d.push_str(part);
            if !dirs.contains(&d) {
                dirs.push(d.clone());
            }
        }
        let mut masked = data.clone();
        storehash::mask_self(&mut masked, own);
        // SHA-256 of the masked contents (no mask applied twice).
        let digest = storehash::file_digest(&masked[..], None)
            .map(|(_, d)| d)
            .unwrap_or([0; 32]);
        entries.push(Entry {
            path: p.as_bytes().to_vec(),
            kind: EntryKind::File {
                executable: *x,
                size: data.len() as u64,
                digest,
            },
        });
    }
    for d in dirs {
        entries.push(Entry {
            path: d.into_bytes(),
            kind: EntryKind::Dir,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    storehash::object_hash(name, &entries)
}

fn store_hash(data: &[u8]) -> u64 {
    // "<own hash>\n<contents>"; the own hash is made of hex digits.
    let (own_text, contents) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let mut own = [b'0'; HASH_LEN];
    for (o, b) in own.iter_mut().zip(own_text) {
        *o = b"0123456789abcdef"[usize::from(*b) % 16];
    }
    let name_text = String::from_utf8_lossy(data);
    let split = store_name::split_store_name(&name_text);
    if let Some((h, n)) = split {
        assert_eq!(h.as_str().len(), HASH_LEN);
        assert!(!n.is_empty());
        assert_eq!(format!("{h}-{n}"), name_text, "store name round trip");
    }
    // The digest must not depend on how reads split the contents.
    let mut masked = contents.to_vec();
    storehash::mask_self(&mut masked, &own);
    let want = storehash::file_digest(&masked[..], None).expect("in-memory read");
    let sizes: [&[usize]; 5] = [&[1], &[31], &[32, 1], &[33, 7, 64], &[usize::MAX]];
    for s in sizes {
        let r = Pieces {
            data: contents,
            sizes: s,
            k: 0,
        };
        let got = storehash::file_digest(r, Some(&own)).expect("in-memory read");
        assert_eq!(got.1, want.1, "file_digest with reads of {s:?} differs");
        assert_eq!(got.0, contents.len() as u64);
    }
    // A small tree on disk: hash_tree (the activator's walker) must give
    // what the definition gives for the same entries.
    let files: Vec<(String, Vec<u8>, bool)> = contents
        .split(|&b| b == 0)
        .take(6)
        .enumerate()
        .map(|(i, chunk)| {
            let dir = if i % 3 == 2 { "d/" } else { "" };
            (format!("{dir}f{i}"), chunk.to_vec(), i % 2 == 1)
        })
        .collect();
    {
        use std::os::unix::fs::PermissionsExt;
        let tree = scratch().join("tree");
        clear(&tree);
        let _ = std::fs::create_dir_all(&tree);
        let mut ok = true;
        for (p, d, x) in &files {
            let path = tree.join(p);
            ok &= std::fs::create_dir_all(path.parent().unwrap_or(&tree)).is_ok()
                && std::fs::write(&path, d).is_ok()
                && std::fs::set_permissions(
                    &path,
                    std::fs::Permissions::from_mode(if *x { 0o555 } else { 0o444 }),
                )
                .is_ok();
        }
        if ok {
            let got = storehash::hash_tree(&tree, "fuzz-tree", Some(&own));
            let want = expected_hash("fuzz-tree", &files, &own);
            assert_eq!(got.ok(), Some(want), "hash_tree differs from object_hash");
        }
    }
    let self_refs = masked
        .windows(SELF_MASK.len())
        .filter(|w| w == SELF_MASK)
        .count();
    feature(&[&[
        bucket(self_refs),
        split.is_some() as u8,
        bucket(contents.len()),
    ]])
}

fn pid1_disk(data: &[u8]) -> u64 {
    use genboot_init::activate::Outcome;
    let outcomes = crate::pid1::boot(data);
    let mut v = Vec::new();
    for o in &outcomes {
        match o {
            Outcome::Exec(_) => v.push(b'x'),
            Outcome::Rebooted(step) => v.extend(step.name().bytes()),
            Outcome::RebootFailed => panic!("the in-memory reboot cannot fail"),
        }
        v.push(b' ');
    }
    feature(&[&v])
}

fn system_toml(data: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(data);
    let outcome = match SystemConfig::parse(&text, Path::new("/fuzz/system.toml")) {
        Ok(_) => vec![b'o'],
        Err(ConfigError::Syntax { key, what, .. }) => {
            // The first word of the TOML parser's message, and whether it
            // names a key (both quote the input otherwise).
            let mut v = b"syntax ".to_vec();
            v.push(key.is_some() as u8);
            v.extend(
                what.split(|c: char| !c.is_ascii_alphabetic())
                    .find(|w| !w.is_empty())
                    .unwrap_or("")
                    .bytes(),
            );
            v
        }
        Err(ConfigError::Invalid { section, key, .. }) => {
            format!("invalid {section} {key}").into_bytes()
        }
        Err(_) => vec![b'e'],
    };
    feature(&[&outcome])
}

fn modinfo_elf(data: &[u8]) -> u64 {
    // As a raw .modinfo blob (also the format of modules.builtin.modinfo).
    let raw = modinfo::parse(data);
    for s in &raw.softdep_raw {
        let _ = modinfo::parse_softdep(s);
    }
    // As a whole module, read from a file with the streaming reader the
    // builder uses (one reader for plain and compressed modules).
    let ko = scratch().join("fuzz.ko");
    let from_file = match std::fs::write(&ko, data) {
        Ok(()) => modinfo::read(&ko, ModuleCompression::None).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let outcome = match &from_file {
        Ok(m) => vec![
            b'o',
            bucket(m.aliases.len()),
            bucket(m.depends.len()),
            bucket(m.exports.len()),
        ],
        Err(e) => vec![
            b'e',
            class(
                e,
                &[
                    "bad ELF header",
                    "is not a relocatable",
                    "section table",
                    "no section headers",
                    "section headers",
                    "section name table",
                    "section at byte",
                    "past the end",
                    "too large",
                    "no .modinfo",
                ],
            ),
        ],
    };
    feature(&[&outcome])
}

fn bzimage(data: &[u8]) -> u64 {
    let header = genboot::generation::kernel::release_from_header(data);
    if let Ok(r) = &header {
        assert!(!r.is_empty() && r.bytes().all(|b| b.is_ascii_graphic()));
    }
    let mut outcome = match &header {
        Ok(_) => vec![b'o'],
        Err(e) => vec![
            b'e',
            class(
                e,
                &[
                    "too short",
                    "HdrS",
                    "past the end",
                    "not terminated",
                    "not text",
                    "has no release",
                ],
            ),
        ],
    };
    // The whole check the builder runs on [kernel] image: header, release
    // as a store name, PE/EFI stub (goblin).
    {
        let image = scratch().join("vmlinuz");
        if std::fs::write(&image, data).is_ok() {
            use genboot::generation::kernel::KernelError;
            match genboot::generation::kernel::inspect(&image) {
                Ok(k) => {
                    assert_eq!(Ok(&k.release), header.as_ref());
                    outcome.push(b'k');
                }
                Err(KernelError::NoEfiStub { why, .. }) => {
                    // goblin's messages quote offsets and names: its first
                    // three words are the kind.
                    outcome.extend(b"pe ");
                    for w in why.split_whitespace().take(3) {
                        outcome.extend(shape(w));
                    }
                }
                Err(KernelError::BadRelease { .. }) => outcome.extend(b"release"),
                Err(_) => outcome.push(b'e'),
            }
        }
    }
    feature(&[&outcome])
}
