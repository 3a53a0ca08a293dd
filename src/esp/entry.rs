//! Boot Loader Specification Type #1 entries as genboot writes them: file
//! names with boot-counting suffixes, the entry text, `loader.conf`, and how
//! genboot recognises the files it wrote.
//!
//! Ownership: every file genboot writes starts with the line
//! `# written by genboot <digest>`, where `<digest>` is the first 16 hex
//! digits of SHA-256 over the rest of the file. A `genboot-*.conf` without
//! that line, or whose digest does not match (edited by hand), is not
//! genboot's: the installer reports it and never overwrites or removes it.

use sha2::{Digest, Sha256};

/// The prefix of genboot's entry file names.
pub(crate) const PREFIX: &str = "genboot-";
/// What an entry file name ends with.
pub(crate) const SUFFIX: &str = ".conf";
const MARK: &str = "# written by genboot ";

/// A boot-counting suffix: `+<left>` or `+<left>-<done>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counter {
    pub left: u32,
    pub done: Option<u32>,
}

/// A parsed genboot entry file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryName {
    pub generation: u32,
    pub recovery: bool,
    pub counter: Option<Counter>,
}

impl EntryName {
    /// `genboot-<N>` or `genboot-<N>-recovery`: the name without counter
    /// and `.conf`. systemd-boot's entry id is this plus `.conf`.
    pub(crate) fn key(&self) -> String {
        key(self.generation, self.recovery)
    }

    pub fn file_name(&self) -> String {
        let mut s = self.key();
        if let Some(c) = self.counter {
            s.push_str(&format!("+{}", c.left));
            if let Some(d) = c.done {
                s.push_str(&format!("-{d}"));
            }
        }
        s.push_str(SUFFIX);
        s
    }

    /// Tries ran out: systemd-boot will not pick it, neither will genboot.
    pub fn exhausted(&self) -> bool {
        self.counter.is_some_and(|c| c.left == 0)
    }

    /// `genboot-<N>[+<left>[-<done>]].conf` or `genboot-<N>-recovery.conf`.
    pub fn parse(file: &str) -> Option<EntryName> {
        let stem = file.strip_suffix(SUFFIX)?.strip_prefix(PREFIX)?;
        let (base, counter) = match stem.split_once('+') {
            Some((b, c)) => (b, Some(parse_counter(c)?)),
            None => (stem, None),
        };
        let (num, recovery) = match base.strip_suffix("-recovery") {
            Some(n) => (n, true),
            None => (base, false),
        };
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) || num.starts_with('0') {
            return None;
        }
        if recovery && counter.is_some() {
            return None;
        }
        Some(EntryName {
            generation: num.parse().ok()?,
            recovery,
            counter,
        })
    }
}

fn parse_counter(s: &str) -> Option<Counter> {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let (l, d) = match s.split_once('-') {
        Some((l, d)) => (l, Some(d)),
        None => (s, None),
    };
    if !digits(l) || d.is_some_and(|d| !digits(d)) {
        return None;
    }
    Some(Counter {
        left: l.parse().ok()?,
        done: match d {
            Some(d) => Some(d.parse().ok()?),
            None => None,
        },
    })
}

pub(crate) fn key(generation: u32, recovery: bool) -> String {
    if recovery {
        format!("{PREFIX}{generation}-recovery")
    } else {
        format!("{PREFIX}{generation}")
    }
}

/// Everything one entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntrySpec {
    pub generation: u32,
    pub recovery: bool,
    pub label: String,
    pub kernel_release: String,
    /// `YYYY-MM-DD` of the generation.
    pub date: String,
    pub machine_id: Option<String>,
    /// ESP paths, `/EFI/genboot/...`.
    pub linux: String,
    pub initrd: Option<String>,
    pub options: String,
}

impl EntrySpec {
    /// The exact bytes of the entry file.
    pub fn render(&self) -> String {
        let title = if self.recovery {
            format!("{} (generation {}, Recovery)", self.label, self.generation)
        } else {
            format!("{} (generation {})", self.label, self.generation)
        };
        let mut body = String::new();
        body.push_str(&format!("title {title}\n"));
        // systemd-boot sorts by sort-key, then by version, newest first: the
        // zero-padded generation number decides. Recovery entries have their
        // own sort-key, so they sit below every normal entry: when a counted
        // entry runs out of tries, systemd-boot falls back to the next entry
        // in this order, which must be the previous generation, not a
        // recovery shell.
        let rec = if self.recovery { "-recovery" } else { "" };
        body.push_str(&format!(
            "version {:06}{rec} {} {}\n",
            self.generation, self.kernel_release, self.date
        ));
        body.push_str(&format!("sort-key genboot{rec}\n"));
        if let Some(m) = &self.machine_id {
            body.push_str(&format!("machine-id {m}\n"));
        }
        body.push_str(&format!("linux {}\n", self.linux));
        if let Some(i) = &self.initrd {
            body.push_str(&format!("initrd {i}\n"));
        }
        let mut options = self.options.clone();
        if self.recovery {
            options.push_str(" genboot.recovery");
        }
        body.push_str(&format!("options {options}\n"));
        body.push_str("architecture x64\n");
        sign(&body)
    }
}

/// The `default` of `loader.conf` for `generation`: a glob that matches
/// its entry whatever boot counter systemd-boot gave the file, and nothing
/// else genboot writes.
///
/// systemd-boot 252 (Debian 12) takes the whole file name, counter
/// included and lower-cased, as the entry id (`genboot-2+3.conf`), and
/// matches `default` against it as a glob (`efi_fnmatch`: `*`, `?`,
/// `[...]` with ranges, no negation); the first match in its menu order
/// wins. (bootctl strips the counter from the id, `genboot-2.conf`; the
/// pattern matches that too.) So for generation 2:
///
/// - `genboot-2` then `[.+]`: the plain `genboot-2.conf` or a counter
///   `genboot-2+…`, never `genboot-21.conf` nor `genboot-2-recovery.conf`;
/// - then `[c1-9]`: the `c` of `.conf`, or a first counter digit 1-9, so
///   an entry whose tries ran out (`genboot-2+0-3.conf`) does not match.
///   systemd-boot then boots its first entry instead — the newest
///   generation with tries left, as boot counting means it to (it sorts
///   exhausted entries last); a default that matched `+0` would boot the
///   failing generation forever. genboot never makes such an entry its
///   default either (see the planner).
pub(crate) fn default_pattern(generation: u32) -> String {
    format!("{}[.+][c1-9]*", key(generation, false))
}

/// Whether systemd-boot's `default` (or `LoaderEntryDefault`) `pattern`
/// picks the entry file `file` (lower-cased, as systemd-boot compares).
pub(crate) fn default_matches(pattern: &str, file: &str) -> bool {
    genboot_format::module_name::fnmatch(
        pattern.to_ascii_lowercase().as_bytes(),
        file.to_ascii_lowercase().as_bytes(),
    )
}

/// `loader.conf`: the default entry (see [`default_pattern`]), the menu
/// timeout, no editor.
pub(crate) fn loader_conf(default_generation: u32, timeout: u32) -> String {
    sign(&format!(
        "default {}\ntimeout {timeout}\neditor no\n",
        default_pattern(default_generation)
    ))
}

/// Prefix `body` with the ownership line.
pub(crate) fn sign(body: &str) -> String {
    format!("{MARK}{}\n{body}", digest(body.as_bytes()))
}

fn digest(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Did genboot write these bytes (unchanged since)?
pub(crate) fn is_ours(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Some((first, rest)) = text.split_once('\n') else {
        return false;
    };
    first
        .strip_prefix(MARK)
        .is_some_and(|d| d == digest(rest.as_bytes()))
}

/// Whether the entry genboot wrote as `old` boots what `new` would boot:
/// the same `linux`, `initrd` and `options` (which name the generation's
/// store path with `init=`), whatever else changed (a `machine-id` line
/// the machine got since, a title). Its boot counter then belongs to the
/// new text too: it counts tries of the same generation. A different
/// generation under a reused number (after `genboot delete`) boots other
/// things and starts with fresh tries; so does a torn or edited file.
pub(crate) fn boots_the_same(old: &[u8], new: &str) -> bool {
    if !is_ours(old) {
        return false;
    }
    let boots = |text: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| {
                matches!(
                    l.split_whitespace().next(),
                    Some("linux" | "initrd" | "options")
                )
            })
            .map(str::to_string)
            .collect()
    };
    boots(&String::from_utf8_lossy(old)) == boots(new)
}

/// Bytes of a torn write, not of a person: empty, holding a NUL byte, not
/// UTF-8, or genboot's ownership line over a body cut short (no final
/// newline; genboot's files always end with one). A `genboot-*.conf`
/// holding them is genboot's to replace: treating it as foreign would block
/// its generation forever. A hand-made or hand-edited entry is text and is
/// still left alone.
pub(crate) fn is_torn(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return true;
    };
    text.is_empty() || text.contains('\0') || (text.starts_with(MARK) && !text.ends_with('\n'))
}

/// The value of `key` in an entry or loader.conf (`key value`).
pub(crate) fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.trim().split_once(char::is_whitespace)?;
        (k == key).then(|| v.trim())
    })
}

/// Every ESP path an entry (any entry, genboot's or foreign) names.
pub(crate) fn referenced_files(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(char::is_whitespace)?;
            matches!(k, "linux" | "initrd" | "efi" | "devicetree").then(|| normalise(v.trim()))
        })
        .collect()
}

/// `/EFI/x` or `\EFI\x` → `EFI/x` (ESP-relative, no leading slash).
pub(crate) fn normalise(p: &str) -> String {
    p.replace('\\', "/").trim_start_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(generation: u32, recovery: bool) -> EntrySpec {
        EntrySpec {
            generation,
            recovery,
            label: "Debian 12".into(),
            kernel_release: "6.1.0-50-amd64".into(),
            date: "2026-11-24".into(),
            machine_id: Some("0123456789abcdef0123456789abcdef".into()),
            linux: "/EFI/genboot/0a1b2c3d4e5f60718293a4b5c6d7e8f9-linux-6.1.0-50-amd64.efi".into(),
            initrd: Some(
                "/EFI/genboot/9f8e7d6c5b4a39281706f5e4d3c2b1a0-initrd-6.1.0-50-amd64.img".into(),
            ),
            options: "root=PARTUUID=6e6f6f74-0000-4000-8000-000000000002 rootfstype=ext4 rw console=ttyS0 init=/var/lib/genboot/store/00112233445566778899aabbccddeeff-genboot-system-6.1.0-50-amd64/init".into(),
        }
    }

    /// `GENBOOT_UPDATE_GOLDEN=1 cargo test --lib esp::entry` rewrites the
    /// golden files from the code (review the diff before committing).
    fn golden(name: &str, got: &str, want: &str) {
        if std::env::var_os("GENBOOT_UPDATE_GOLDEN").is_some() {
            let p = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/");
            std::fs::write(format!("{p}{name}"), got).unwrap();
            return;
        }
        assert_eq!(
            got, want,
            "tests/golden/{name} differs from what genboot writes"
        );
    }

    #[test]
    fn entry_matches_golden_file() {
        golden(
            "genboot-3+3.conf",
            &spec(3, false).render(),
            include_str!("../../tests/golden/genboot-3+3.conf"),
        );
    }

    #[test]
    fn recovery_entry_matches_golden_file() {
        golden(
            "genboot-3-recovery.conf",
            &spec(3, true).render(),
            include_str!("../../tests/golden/genboot-3-recovery.conf"),
        );
    }

    #[test]
    fn loader_conf_matches_golden_file() {
        golden(
            "loader.conf",
            &loader_conf(3, 5),
            include_str!("../../tests/golden/loader.conf"),
        );
    }

    #[test]
    fn the_default_pattern_matches_its_generation_whatever_the_counter() {
        let p = default_pattern(2);
        for file in [
            "genboot-2.conf",
            "genboot-2+3.conf",
            "genboot-2+2-1.conf",
            "genboot-2+1-2.conf",
            "genboot-2+10-0.conf",
            "GENBOOT-2+3.CONF",
        ] {
            assert!(default_matches(&p, file), "{p} should match {file}");
        }
        for file in [
            // Tries ran out: systemd-boot falls back to its first entry.
            "genboot-2+0-3.conf",
            "genboot-2+0.conf",
            // Other generations and the recovery entry.
            "genboot-21.conf",
            "genboot-20+3.conf",
            "genboot-12.conf",
            "genboot-2-recovery.conf",
            "genboot-1.conf",
            "other.conf",
        ] {
            assert!(!default_matches(&p, file), "{p} should not match {file}");
        }
        // Every name genboot writes for another generation is left alone.
        for n in [1, 3, 12, 20, 21, 22, 200] {
            for counter in [None, Some((3, None)), Some((2, Some(1)))] {
                let name = EntryName {
                    generation: n,
                    recovery: false,
                    counter: counter.map(|(left, done)| Counter { left, done }),
                };
                assert!(!default_matches(&p, &name.file_name()), "{name:?}");
            }
        }
    }

    #[test]
    fn entry_without_initrd_has_no_initrd_line() {
        let mut s = spec(1, false);
        s.initrd = None;
        assert!(!s.render().contains("\ninitrd "));
    }

    #[test]
    fn names_with_counters_parse_and_print_back() {
        for name in [
            "genboot-3.conf",
            "genboot-3+3.conf",
            "genboot-12+0-3.conf",
            "genboot-7-recovery.conf",
        ] {
            let n = EntryName::parse(name).unwrap();
            assert_eq!(n.file_name(), name);
        }
        let n = EntryName::parse("genboot-12+0-3.conf").unwrap();
        assert_eq!(n.generation, 12);
        assert!(n.exhausted());
        assert_eq!(n.key(), "genboot-12");
    }

    #[test]
    fn foreign_names_do_not_parse() {
        for name in [
            "debian.conf",
            "genboot-.conf",
            "genboot-03.conf",
            "genboot-3+x.conf",
            "genboot-3-recovery+2.conf",
            "genboot-3.conf.genboot-tmp",
        ] {
            assert_eq!(EntryName::parse(name), None, "{name}");
        }
    }

    #[test]
    fn edited_entry_is_not_ours() {
        let text = spec(3, false).render();
        assert!(is_ours(text.as_bytes()));
        let edited = text.replace("console=ttyS0", "console=tty0");
        assert!(!is_ours(edited.as_bytes()));
        assert!(!is_ours(b"title hand-written\nlinux /vmlinuz\n"));
    }

    #[test]
    fn a_machine_id_or_title_change_boots_the_same_another_generation_does_not() {
        let old = spec(3, false).render();
        let mut s = spec(3, false);
        s.machine_id = None;
        s.label = "Renamed".into();
        assert!(boots_the_same(old.as_bytes(), &s.render()));
        // Generation 3 deleted, and a new generation 3 made: another
        // generation object (init=), another kernel.
        let mut other = spec(3, false);
        other.options = other.options.replace("00112233", "99887766");
        assert!(!boots_the_same(old.as_bytes(), &other.render()));
        let mut other = spec(3, false);
        other.linux = other.linux.replace("0a1b", "ffff");
        assert!(!boots_the_same(old.as_bytes(), &other.render()));
        let mut other = spec(3, false);
        other.initrd = None;
        assert!(!boots_the_same(old.as_bytes(), &other.render()));
        // A torn or edited file is not trusted.
        assert!(!boots_the_same(&old.as_bytes()[..old.len() / 2], &old));
        let edited = old.replace("Debian 12", "Debian 13");
        assert!(!boots_the_same(edited.as_bytes(), &old));
    }

    #[test]
    fn torn_entry_is_not_foreign() {
        let text = spec(3, false).render();
        assert!(!is_torn(text.as_bytes()));
        assert!(is_torn(b""));
        assert!(is_torn(&text.as_bytes()[..text.len() / 2]));
        let mut padded = text.clone().into_bytes();
        padded.extend_from_slice(&[0; 100]);
        assert!(is_torn(&padded));
        assert!(is_torn(&[0xff, 0xfe, b'x']));
        // Edited by hand, or written by hand: a person's text, left alone.
        let edited = text.replace("console=ttyS0", "console=tty0");
        assert!(!is_torn(edited.as_bytes()));
        assert!(!is_torn(b"title hand-written\nlinux /vmlinuz"));
    }

    #[test]
    fn newer_generation_has_greater_version() {
        // systemd-boot compares versions segment by segment; zero padding
        // makes the plain string order agree with it.
        let v = |n| {
            field(&spec(n, false).render(), "version")
                .unwrap()
                .to_string()
        };
        assert!(v(10) > v(9));
        assert!(v(100) > v(99));
    }

    #[test]
    fn referenced_files_are_esp_relative() {
        let t = "title x\nlinux /EFI/a.efi\ninitrd \\EFI\\b.img\noptions x\n";
        assert_eq!(referenced_files(t), vec!["EFI/a.efi", "EFI/b.img"]);
    }
}
