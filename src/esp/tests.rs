//! The installer's rules, on the in-memory ESP: milliseconds each, no
//! kernels, no root. The real-FAT, directory and crash tests in `tests/`
//! run the same code on real backends.

use super::entry::{self, EntryName};
use super::layout::{self, ENTRIES_DIR, LOADER_CONF};
use super::memory::{MemEsp, Op};
use super::*;
use crate::failpoint::{self, FailPoint, Mode};
use crate::store::StoreHash;
use std::collections::BTreeMap;

/// Store files in a temporary directory, as the profile's objects hold them.
struct Store {
    dir: tempfile::TempDir,
    n: u32,
}

impl Store {
    fn new() -> Store {
        Store {
            dir: tempfile::tempdir().unwrap(),
            n: 0,
        }
    }

    /// A file of `len` bytes with content unique to it.
    fn file(&mut self, len: usize) -> StoreFile {
        self.n += 1;
        let path = self.dir.path().join(format!("f{}", self.n));
        let data: Vec<u8> = (0..len).map(|i| (i as u32 * 7 + self.n) as u8).collect();
        std::fs::write(&path, data).unwrap();
        StoreFile::at(StoreHash::parse(&format!("{:032x}", self.n)).unwrap(), path).unwrap()
    }
}

/// Generation `n` booting `kernel` and `initrd`.
fn gen(n: u32, kernel: &StoreFile, initrd: &StoreFile, tries: Option<u32>) -> GenInput {
    GenInput {
        number: n,
        current: false,
        date: "2026-11-24".into(),
        label: "Test".into(),
        kernel_release: "6.1.0-50-amd64".into(),
        kernel: kernel.clone(),
        initrd: Some(initrd.clone()),
        options: format!("root=LABEL=root rw init=/x/{n}/init"),
        tries,
    }
}

/// Generations `numbers`, each with its own kernel (40 KiB) and initrd
/// (20 KiB); the last is current.
fn gens(store: &mut Store, numbers: &[u32], tries: Option<u32>) -> Vec<GenInput> {
    let mut out: Vec<GenInput> = numbers
        .iter()
        .map(|n| {
            let (k, i) = (store.file(40 << 10), store.file(20 << 10));
            gen(*n, &k, &i, tries)
        })
        .collect();
    if let Some(last) = out.last_mut() {
        last.current = true;
    }
    out
}

fn current(gens: &mut [GenInput], n: u32) {
    for g in gens {
        g.current = g.number == n;
    }
}

fn entries(esp: &MemEsp) -> Vec<String> {
    esp.tree()
        .keys()
        .filter_map(|p| p.strip_prefix("loader/entries/"))
        .map(str::to_string)
        .collect()
}

/// The entry file `loader.conf`'s default pattern picks, as systemd-boot
/// 252 would (exactly one must match).
fn default_file(esp: &MemEsp) -> String {
    let conf = String::from_utf8(esp.get(LOADER_CONF).expect("loader.conf").to_vec()).unwrap();
    let pattern = entry::field(&conf, "default").unwrap();
    // systemd-boot reads only `*.conf` (not a `.genboot-tmp` leftover).
    let matched: Vec<String> = entries(esp)
        .into_iter()
        .filter(|f| f.ends_with(".conf") && entry::default_matches(pattern, f))
        .collect();
    assert_eq!(matched.len(), 1, "{pattern} matches {matched:?}");
    matched[0].clone()
}

/// The generation `loader.conf` makes the default.
fn default_generation(esp: &MemEsp) -> u32 {
    EntryName::parse(&default_file(esp)).unwrap().generation
}

/// The default entry is genboot's, and every file it names is on the ESP
/// with its store bytes: the machine boots.
#[track_caller]
fn assert_bootable(esp: &MemEsp, gens: &[GenInput]) {
    let file = default_file(esp);
    let text = esp.get(&layout::entry_path(&file)).unwrap();
    assert!(entry::is_ours(text), "{file} is not genboot's");
    let sources: BTreeMap<String, Vec<u8>> = gens
        .iter()
        .flat_map(GenInput::files)
        .map(|(p, f)| (p.to_ascii_lowercase(), std::fs::read(&f.host).unwrap()))
        .collect();
    for r in entry::referenced_files(&String::from_utf8_lossy(text)) {
        let on_esp = esp
            .get(&r)
            .unwrap_or_else(|| panic!("{file} names {r}, missing"));
        if let Some(want) = sources.get(&r.to_ascii_lowercase()) {
            assert_eq!(on_esp, &want[..], "{r} differs from its store file");
        }
    }
}

fn install_ok(esp: &mut MemEsp, gens: &[GenInput], opts: &InstallOptions) -> InstallReport {
    install(esp, gens, opts).unwrap()
}

/// What a fresh survey of `esp` would plan now.
fn replan(esp: &mut MemEsp, gens: &[GenInput], opts: &InstallOptions) -> Plan {
    let snapshot = survey(esp, gens, opts).unwrap();
    let mut gens = gens.to_vec();
    fill_digests(&mut gens, &snapshot).unwrap();
    plan(&snapshot, &gens, opts).unwrap()
}

const BIG: u64 = 100_000;

#[test]
fn install_writes_the_menu_and_a_reinstall_writes_nothing() {
    let mut store = Store::new();
    let g = gens(&mut store, &[1, 2, 3], None);
    let opts = InstallOptions::default();
    let mut esp = MemEsp::new(BIG);
    let r = install_ok(&mut esp, &g, &opts);
    assert_eq!(r.default, 3);
    assert_eq!(
        entries(&esp),
        [
            "genboot-1.conf",
            "genboot-2.conf",
            "genboot-3-recovery.conf",
            "genboot-3.conf"
        ]
    );
    assert_eq!(default_generation(&esp), 3);
    assert_eq!(esp.get("loader/entries.srel"), Some(&b"type1\n"[..]));
    assert_bootable(&esp, &g);
    // No temporary names are left.
    assert!(!esp.tree().keys().any(|k| k.ends_with(layout::TMP_SUFFIX)));
    esp.reset_log();
    let r = install_ok(&mut esp, &g, &opts);
    assert!(r.written.is_empty() && r.removed.is_empty(), "{r:?}");
    assert_eq!(esp.ops, []);
    assert_eq!(esp.stats(), WriteStats::default());
}

#[test]
fn apply_then_a_fresh_survey_plans_nothing() {
    // bootupd's filetree model: after applying a plan, the ESP is what the
    // plan wanted, so the next plan is empty — for every kind of change.
    let mut store = Store::new();
    let mut g = gens(&mut store, &[1, 2, 3, 4], Some(3));
    let mut esp = MemEsp::new(BIG);
    let loader = InstallOptions {
        loader: Some(b"systemd-boot".to_vec()),
        machine_id: Some("0123456789abcdef0123456789abcdef".into()),
        timeout: 5,
        ..InstallOptions::default()
    };
    let steps: Vec<(Vec<GenInput>, InstallOptions)> = vec![
        (g.clone(), InstallOptions::default()),
        (g[1..].to_vec(), InstallOptions::default()),
        (g.clone(), loader.clone()),
        (
            g.clone(),
            InstallOptions {
                limit: Some(1),
                ..loader.clone()
            },
        ),
        {
            current(&mut g, 2);
            (g.clone(), InstallOptions::default())
        },
    ];
    for (i, (gens, opts)) in steps.iter().enumerate() {
        let p = replan(&mut esp, gens, opts);
        assert!(!p.is_empty(), "step {i} changes something");
        apply(&p, &mut esp).unwrap();
        let again = replan(&mut esp, gens, opts);
        assert!(again.is_empty(), "step {i}: {again:?}");
        assert_bootable(&esp, gens);
    }
    // The loader went to both of its paths.
    for p in layout::LOADER_PATHS {
        assert_eq!(esp.get(p), Some(&b"systemd-boot"[..]));
    }
}

#[test]
fn limit_keeps_the_newest_and_the_current_booted_and_last_blessed_entries() {
    let mut store = Store::new();
    let mut g = gens(&mut store, &[1, 2, 3, 4, 5, 6], Some(3));
    let mut esp = MemEsp::new(BIG);
    install_ok(&mut esp, &g, &InstallOptions::default());
    // Generation 1 booted well once: its entry was blessed.
    assert!(matches!(
        bless(&mut esp, Some(1), None).unwrap(),
        bless::Blessed::Renamed(_)
    ));
    current(&mut g, 4);
    let opts = InstallOptions {
        limit: Some(2),
        booted: Some(2),
        ..InstallOptions::default()
    };
    let r = install_ok(&mut esp, &g, &opts);
    assert_eq!(r.default, 4);
    assert_eq!(
        entries(&esp),
        [
            "genboot-1.conf",
            "genboot-2+3.conf",
            "genboot-4+3.conf",
            "genboot-4-recovery.conf",
            "genboot-5+3.conf",
            "genboot-6+3.conf",
        ]
    );
    // Generation 3's files went with its entry; the others' stayed.
    let g3 = g.iter().find(|g| g.number == 3).unwrap();
    assert!(esp.get(&g3.kernel_path()).is_none());
    for n in [1, 2, 4, 5, 6] {
        let gn = g.iter().find(|g| g.number == n).unwrap();
        assert!(esp.get(&gn.kernel_path()).is_some(), "{n}");
    }
    assert!(replan(&mut esp, &g, &opts).is_empty());
}

#[test]
fn a_default_whose_tries_ran_out_falls_back_to_the_newest_with_tries() {
    let mut store = Store::new();
    let g = gens(&mut store, &[1, 2, 3], Some(3));
    let opts = InstallOptions::default();
    let mut esp = MemEsp::new(BIG);
    install_ok(&mut esp, &g, &opts);
    // systemd-boot counted generation 3 down to zero.
    esp.rename(
        "loader/entries/genboot-3+3.conf",
        "loader/entries/genboot-3+0-3.conf",
    )
    .unwrap();
    let r = install_ok(&mut esp, &g, &opts);
    assert_eq!(r.default, 2);
    assert_eq!(default_generation(&esp), 2);
    // The exhausted entry keeps its counter; the recovery entry follows
    // the default.
    let e = entries(&esp);
    assert!(e.contains(&"genboot-3+0-3.conf".to_string()), "{e:?}");
    assert!(e.contains(&"genboot-2-recovery.conf".to_string()), "{e:?}");
    assert!(!e.contains(&"genboot-3-recovery.conf".to_string()), "{e:?}");
    assert_bootable(&esp, &g);
}

#[test]
fn with_boot_counting_the_default_follows_a_rollback_whatever_the_counters() {
    // Issue 13: systemd-boot 252's entry id is the file name with its
    // counter, so `default genboot-2.conf` matched nothing once entries
    // were counted, and a rollback booted the newest generation again.
    let mut store = Store::new();
    let mut g = gens(&mut store, &[1, 2, 3], Some(3));
    let opts = InstallOptions::default();
    let mut esp = MemEsp::new(BIG);
    install_ok(&mut esp, &g, &opts);
    assert_eq!(default_file(&esp), "genboot-3+3.conf");
    // Generation 3 booted twice, generation 2 once, generation 1 was blessed.
    for (from, to) in [
        ("genboot-3+3.conf", "genboot-3+1-2.conf"),
        ("genboot-2+3.conf", "genboot-2+2-1.conf"),
        ("genboot-1+3.conf", "genboot-1.conf"),
    ] {
        esp.rename(&layout::entry_path(from), &layout::entry_path(to))
            .unwrap();
    }
    // rollback: generation 2 becomes current.
    current(&mut g, 2);
    install_ok(&mut esp, &g, &opts);
    assert_eq!(default_file(&esp), "genboot-2+2-1.conf");
    // set-default 1: the blessed entry.
    current(&mut g, 1);
    install_ok(&mut esp, &g, &opts);
    assert_eq!(default_file(&esp), "genboot-1.conf");
    // set-default 3 with one try left.
    current(&mut g, 3);
    install_ok(&mut esp, &g, &opts);
    assert_eq!(default_file(&esp), "genboot-3+1-2.conf");
    // The recovery entry follows, and the pattern never picks it.
    assert!(entries(&esp).contains(&"genboot-3-recovery.conf".to_string()));
    assert_bootable(&esp, &g);
}

#[test]
fn the_default_pattern_never_picks_an_entry_whose_tries_ran_out() {
    // When the default entry's tries run out at boot, systemd-boot must not
    // match it any more: it falls back to its first entry (the newest with
    // tries left), which is how boot counting rolls back by itself.
    let mut store = Store::new();
    let mut g = gens(&mut store, &[1, 2], Some(3));
    current(&mut g, 1);
    let mut esp = MemEsp::new(BIG);
    install_ok(&mut esp, &g, &InstallOptions::default());
    assert_eq!(default_file(&esp), "genboot-1+3.conf");
    esp.rename(
        "loader/entries/genboot-1+3.conf",
        "loader/entries/genboot-1+0-3.conf",
    )
    .unwrap();
    let conf = String::from_utf8(esp.get(LOADER_CONF).unwrap().to_vec()).unwrap();
    let pattern = entry::field(&conf, "default").unwrap();
    assert!(
        !entries(&esp)
            .iter()
            .any(|f| entry::default_matches(pattern, f)),
        "{pattern} matches an entry of {:?}",
        entries(&esp)
    );
}

#[test]
fn the_recovery_entry_follows_the_generation_the_firmware_boots_by_default() {
    let mut store = Store::new();
    let g = gens(&mut store, &[1, 2, 3], Some(3));
    let mut esp = MemEsp::new(BIG);
    install_ok(&mut esp, &g, &InstallOptions::default());
    assert!(entries(&esp).contains(&"genboot-3-recovery.conf".to_string()));
    // Someone pressed `d` on generation 1 in the menu: systemd-boot stored
    // its id, counter included, and prefers it to loader.conf.
    let pinned = InstallOptions {
        efi_default: Some("genboot-1+3.conf".into()),
        ..InstallOptions::default()
    };
    let r = install_ok(&mut esp, &g, &pinned);
    let e = entries(&esp);
    assert!(e.contains(&"genboot-1-recovery.conf".to_string()), "{e:?}");
    assert!(!e.contains(&"genboot-3-recovery.conf".to_string()), "{e:?}");
    // loader.conf still names the current generation, and genboot says
    // why the machine will not boot it.
    assert_eq!(r.default, 3);
    assert!(
        r.warnings.iter().any(|w| w.contains("LoaderEntryDefault")
            && w.contains("boots generation 1 by default, not generation 3")),
        "{:?}",
        r.warnings
    );
    // Generation 1's entry is kept whatever the limit: the machine boots it.
    let limited = InstallOptions {
        limit: Some(1),
        ..pinned.clone()
    };
    install_ok(&mut esp, &g, &limited);
    assert!(entries(&esp).contains(&"genboot-1+3.conf".to_string()));
    assert_bootable(&esp, &g);
    // A variable that matches nothing (its counter moved on): loader.conf
    // decides, as in systemd-boot.
    let stale = InstallOptions {
        efi_default: Some("genboot-1+2-1.conf".into()),
        ..InstallOptions::default()
    };
    let r = install_ok(&mut esp, &g, &stale);
    assert!(entries(&esp).contains(&"genboot-3-recovery.conf".to_string()));
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    // One that names another tool's entry: reported, recovery unchanged.
    esp.put(
        "loader/entries/debian.conf",
        b"title Debian\nlinux /vmlinuz\n",
    );
    let other = InstallOptions {
        efi_default: Some("debian*".into()),
        ..InstallOptions::default()
    };
    let r = install_ok(&mut esp, &g, &other);
    assert!(entries(&esp).contains(&"genboot-3-recovery.conf".to_string()));
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("an entry genboot did not write")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn entries_named_like_genboots_that_genboot_did_not_write_are_left_alone() {
    let mut store = Store::new();
    let g = gens(&mut store, &[1, 2, 3], None);
    let mut esp = MemEsp::new(BIG);
    let hand = b"title hand-made\nlinux /vmlinuz\n";
    esp.put("loader/entries/genboot-2.conf", hand);
    // A name that differs only in case is the same file on FAT.
    esp.put("loader/entries/GENBOOT-1.CONF", hand);
    let r = install_ok(&mut esp, &g, &InstallOptions::default());
    assert_eq!(esp.get("loader/entries/genboot-2.conf"), Some(&hand[..]));
    assert_eq!(esp.get("loader/entries/genboot-1.conf"), Some(&hand[..]));
    for n in [1, 2] {
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("named like a genboot entry")
                    && w.ends_with(&format!("generation {n}"))),
            "{:?}",
            r.warnings
        );
    }
    assert!(!esp.ops.contains(&Op::Write(
        "loader/entries/genboot-2.conf.genboot-tmp".into()
    )));
    assert_bootable(&esp, &g);
}

#[test]
fn a_foreign_entry_under_the_defaults_name_is_refused_before_any_write() {
    let mut store = Store::new();
    let g = gens(&mut store, &[1, 2], None);
    let mut esp = MemEsp::new(BIG);
    esp.put("loader/entries/genboot-2.conf", b"title mine\n");
    let before = esp.tree();
    let e = install(&mut esp, &g, &InstallOptions::default()).unwrap_err();
    assert!(
        matches!(e, EspError::ForeignDefault { generation: 2, .. }),
        "{e}"
    );
    assert!(e.with_hint().contains("Nothing on the ESP was changed"));
    assert_eq!(esp.ops, []);
    assert_eq!(esp.tree(), before);
}

#[test]
fn a_torn_entry_is_replaced_not_left_as_foreign() {
    let mut store = Store::new();
    let g = gens(&mut store, &[1, 2], None);
    let opts = InstallOptions::default();
    let mut esp = MemEsp::new(BIG);
    install_ok(&mut esp, &g, &opts);
    let path = "loader/entries/genboot-2.conf";
    let good = esp.get(path).unwrap().to_vec();
    for torn in [good[..good.len() / 2].to_vec(), vec![0; 300], Vec::new()] {
        esp.put(path, &torn);
        let r = install_ok(&mut esp, &g, &opts);
        assert_eq!(esp.get(path), Some(&good[..]), "{r:?}");
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }
}

#[test]
fn a_full_esp_is_refused_before_any_write_and_the_error_names_what_to_delete() {
    let mut store = Store::new();
    let mut g = gens(&mut store, &[1, 2, 3], None);
    // Room for three generations' files (15 clusters each) and a bit.
    let mut esp = MemEsp::new(3 * 15 + 20);
    install_ok(&mut esp, &g, &InstallOptions::default());
    g.extend(gens(&mut store, &[4], None));
    current(&mut g, 4);
    let before = esp.tree();
    esp.reset_log();
    let e = install(&mut esp, &g, &InstallOptions::default()).unwrap_err();
    let EspError::Full(full) = &e else {
        panic!("{e}")
    };
    assert_eq!(full.delete, [1]);
    let text = e.with_hint();
    assert!(text.contains("genboot delete 1"), "{text}");
    assert!(text.ends_with("Nothing was written."), "{text}");
    assert_eq!(esp.ops, []);
    assert_eq!(esp.tree(), before);
    // Deleting what it says makes room.
    let r = install_ok(&mut esp, &g[1..], &InstallOptions::default());
    assert_eq!(r.default, 4);
    assert_bootable(&esp, &g);
}

#[test]
fn when_the_writes_fit_only_after_the_removals_the_removals_go_first() {
    let mut store = Store::new();
    let g = gens(&mut store, &[1, 2, 3], None);
    let mut esp = MemEsp::new(3 * 15 + 20);
    install_ok(&mut esp, &g, &InstallOptions::default());
    // A new generation with limit 3: generation 1 goes, and only after it
    // has gone do the new files fit.
    let mut g2 = g.clone();
    g2.extend(gens(&mut store, &[4], None));
    current(&mut g2, 4);
    let opts = InstallOptions {
        limit: Some(3),
        ..InstallOptions::default()
    };
    esp.reset_log();
    let r = install_ok(&mut esp, &g2, &opts);
    assert!(r.cleaned_first);
    let first_write = esp
        .ops
        .iter()
        .position(|o| matches!(o, Op::Write(_)))
        .unwrap();
    let last_remove = esp
        .ops
        .iter()
        .rposition(|o| matches!(o, Op::Remove(_)))
        .unwrap();
    assert!(last_remove < first_write, "{:?}", esp.ops);
    // What the removals took was not the default's.
    assert_bootable(&esp, &g2);
    // Without the room problem, removals come last.
    let mut roomy = MemEsp::new(BIG);
    install_ok(&mut roomy, &g, &InstallOptions::default());
    roomy.reset_log();
    let r = install_ok(&mut roomy, &g2, &opts);
    assert!(!r.cleaned_first);
    assert!(matches!(roomy.ops.last(), Some(Op::Remove(_))));
    assert!(matches!(roomy.ops.first(), Some(Op::Write(_))));
}

#[test]
fn counters_survive_a_text_change_and_another_generation_under_the_number_starts_fresh() {
    let mut store = Store::new();
    let g = gens(&mut store, &[1, 2, 3], Some(3));
    let mut esp = MemEsp::new(BIG);
    install_ok(&mut esp, &g, &InstallOptions::default());
    // systemd-boot counted generation 3 once and 2 twice.
    esp.rename(
        "loader/entries/genboot-3+3.conf",
        "loader/entries/genboot-3+2-1.conf",
    )
    .unwrap();
    esp.rename(
        "loader/entries/genboot-2+3.conf",
        "loader/entries/genboot-2+1-2.conf",
    )
    .unwrap();
    esp.reset_log();
    install_ok(&mut esp, &g, &InstallOptions::default());
    assert_eq!(esp.ops, []);
    // The machine gets a machine-id (issue 13): every entry's text
    // changes, but each still boots its generation, so every counter
    // stays — the blessed, the counted and the fresh one.
    bless(&mut esp, Some(1), None).unwrap();
    let mid = InstallOptions {
        machine_id: Some("0123456789abcdef0123456789abcdef".into()),
        ..InstallOptions::default()
    };
    esp.reset_log();
    install_ok(&mut esp, &g, &mid);
    assert!(
        !esp.ops.iter().any(|o| matches!(o, Op::Rename(from, to)
        if !from.ends_with(layout::TMP_SUFFIX) && from != to)),
        "{:?}",
        esp.ops
    );
    let e = entries(&esp);
    for f in ["genboot-1.conf", "genboot-2+1-2.conf", "genboot-3+2-1.conf"] {
        assert!(e.contains(&f.to_string()), "{f}: {e:?}");
        let text = esp.get(&layout::entry_path(f)).unwrap();
        assert!(
            String::from_utf8_lossy(text).contains("\nmachine-id 0123"),
            "{f}"
        );
    }
    // Generation 3 deleted and a new generation 3 made (another generation
    // object under the number): its entry gets its fresh name first, then
    // its new content; never two files for one entry.
    let mut changed = g.clone();
    changed[2].options = "root=LABEL=root rw init=/x/other-3/init".into();
    esp.reset_log();
    install_ok(&mut esp, &changed, &mid);
    assert_eq!(
        esp.ops[..3],
        [
            Op::Rename(
                "loader/entries/genboot-3+2-1.conf".into(),
                "loader/entries/genboot-3+3.conf".into()
            ),
            Op::Write("loader/entries/genboot-3+3.conf.genboot-tmp".into()),
            Op::Rename(
                "loader/entries/genboot-3+3.conf.genboot-tmp".into(),
                "loader/entries/genboot-3+3.conf".into()
            ),
        ]
    );
    let e = entries(&esp);
    assert!(e.contains(&"genboot-2+1-2.conf".to_string()), "{e:?}");
    assert!(!e.iter().any(|f| f.starts_with("genboot-3+2")), "{e:?}");
}

#[test]
fn an_exhausted_entry_stays_exhausted_when_its_text_changes() {
    let mut store = Store::new();
    let g = gens(&mut store, &[1, 2], Some(3));
    let mut esp = MemEsp::new(BIG);
    install_ok(&mut esp, &g, &InstallOptions::default());
    esp.rename(
        "loader/entries/genboot-2+3.conf",
        "loader/entries/genboot-2+0-3.conf",
    )
    .unwrap();
    let mid = InstallOptions {
        machine_id: Some("0123456789abcdef0123456789abcdef".into()),
        ..InstallOptions::default()
    };
    let r = install_ok(&mut esp, &g, &mid);
    // Three failed boots are not forgotten because a machine-id appeared.
    assert!(entries(&esp).contains(&"genboot-2+0-3.conf".to_string()));
    assert_eq!(r.default, 1);
    assert_eq!(default_file(&esp), "genboot-1+3.conf");
}

#[test]
fn files_a_foreign_entry_names_in_any_case_are_kept() {
    let mut store = Store::new();
    let g = gens(&mut store, &[1, 2], None);
    let mut esp = MemEsp::new(BIG);
    install_ok(&mut esp, &g, &InstallOptions::default());
    // Another tool's entry boots generation 1's kernel, naming it in
    // upper case and with backslashes.
    let k1 = g[0].kernel_path();
    let foreign = format!(
        "title other\nlinux \\{}\n",
        k1.to_ascii_uppercase().replace('/', "\\")
    );
    esp.put("loader/entries/other.conf", foreign.as_bytes());
    let r = install_ok(&mut esp, &g[1..], &InstallOptions::default());
    assert!(esp.get(&k1).is_some(), "{r:?}");
    assert!(esp.get(&g[0].initrd_path().unwrap()).is_none(), "{r:?}");
    // And genboot's own file listed in another case is the same file:
    // not written again.
    let k2 = g[1].kernel_path();
    let data = esp.get(&k2).unwrap().to_vec();
    esp.remove(&k2).unwrap();
    esp.put(
        &k2.to_ascii_uppercase()
            .replace("EFI/GENBOOT", "EFI/genboot"),
        &data,
    );
    esp.reset_log();
    install_ok(&mut esp, &g[1..], &InstallOptions::default());
    assert_eq!(esp.ops, []);
}

#[test]
fn a_file_of_the_right_size_with_other_bytes_is_written_again() {
    let mut store = Store::new();
    let g = gens(&mut store, &[1], None);
    let mut esp = MemEsp::new(BIG);
    install_ok(&mut esp, &g, &InstallOptions::default());
    let k = g[0].kernel_path();
    let mut data = esp.get(&k).unwrap().to_vec();
    data[1000] ^= 0xff;
    esp.put(&k, &data);
    let r = install_ok(&mut esp, &g, &InstallOptions::default());
    assert_eq!(r.written, vec![k.clone()]);
    assert!(r.warnings[0].contains("other bytes"), "{:?}", r.warnings);
    assert_bootable(&esp, &g);
}

#[test]
fn duplicates_and_leftovers_of_interrupted_writes_are_removed() {
    let mut store = Store::new();
    let g = gens(&mut store, &[1, 2], Some(3));
    let mut esp = MemEsp::new(BIG);
    install_ok(&mut esp, &g, &InstallOptions::default());
    let counted = esp.get("loader/entries/genboot-2+3.conf").unwrap().to_vec();
    esp.put("loader/entries/genboot-2+1-2.conf", &counted);
    esp.put("loader/entries/genboot-9.conf.genboot-tmp", b"half");
    esp.put("EFI/genboot/x.efi.genboot-tmp", b"half");
    let r = install_ok(&mut esp, &g, &InstallOptions::default());
    let mut removed = r.removed.clone();
    removed.sort();
    assert_eq!(
        removed,
        [
            "EFI/genboot/x.efi.genboot-tmp",
            "loader/entries/genboot-2+3.conf",
            "loader/entries/genboot-9.conf.genboot-tmp",
        ]
    );
    // The file with the counter systemd-boot touched last is kept.
    assert!(esp.get("loader/entries/genboot-2+1-2.conf").is_some());
}

#[test]
fn entries_of_unreadable_generations_are_kept() {
    let mut store = Store::new();
    let g = gens(&mut store, &[1, 2, 3], None);
    let mut esp = MemEsp::new(BIG);
    install_ok(&mut esp, &g, &InstallOptions::default());
    let readable: Vec<GenInput> = g.iter().filter(|g| g.number != 2).cloned().collect();
    let opts = InstallOptions {
        unreadable: vec![2],
        ..InstallOptions::default()
    };
    let r = install_ok(&mut esp, &readable, &opts);
    assert!(r.removed.is_empty(), "{r:?}");
    assert!(esp.get(&g[1].kernel_path()).is_some());
}

/// An ESP before an install that reaches every step: a new generation
/// (new files, a new entry), one deleted (its entry and files go), a
/// changed counted entry (renamed first), a new default.
struct EveryStep {
    _store: Store,
    esp: MemEsp,
    /// The generations installed before, and the ones to install.
    before: Vec<GenInput>,
    after: Vec<GenInput>,
    opts: InstallOptions,
}

fn every_step() -> EveryStep {
    let mut store = Store::new();
    let before = gens(&mut store, &[1, 2, 3], Some(3));
    let mut esp = MemEsp::new(BIG);
    install_ok(&mut esp, &before, &InstallOptions::default());
    esp.rename(
        "loader/entries/genboot-3+3.conf",
        "loader/entries/genboot-3+2-1.conf",
    )
    .unwrap();
    esp.rename(
        "loader/entries/genboot-2+3.conf",
        "loader/entries/genboot-2+1-2.conf",
    )
    .unwrap();
    let mut after = before[1..].to_vec();
    // Generation 2 is another generation now (deleted, the number made
    // again): its entry starts with fresh tries (renamed first).
    after[0].options = "root=LABEL=root rw init=/x/other-2/init".into();
    after.extend(gens(&mut store, &[4], Some(3)));
    current(&mut after, 4);
    // The machine id is new: every entry's content changes (generation 3
    // keeps its counter).
    let opts = InstallOptions {
        machine_id: Some("0123456789abcdef0123456789abcdef".into()),
        ..InstallOptions::default()
    };
    EveryStep {
        _store: store,
        esp,
        before,
        after,
        opts,
    }
}

#[test]
fn a_failure_at_every_hit_of_every_esp_failpoint_leaves_a_bootable_default_and_one_rerun_converges()
{
    let s = every_step();
    let (g, opts) = (&s.after, &s.opts);
    let mut reference = s.esp.clone();
    install_ok(&mut reference, g, opts);
    let all: Vec<GenInput> = s.before.iter().chain(g).cloned().collect();
    let points: Vec<FailPoint> = FailPoint::ALL
        .iter()
        .copied()
        .filter(|p| p.name().starts_with("esp::") && *p != FailPoint::EspBlessRenamed)
        .collect();
    let mut fired = 0;
    for point in points {
        // Count the hits of a clean run, then fail at each one.
        let hits = {
            let counting = failpoint::arm(point, Mode::ErrorAt(u32::MAX));
            install_ok(&mut s.esp.clone(), g, opts);
            counting.hits()
        };
        assert!(hits > 0, "{point} is not reached by the scenario");
        for n in 1..=hits {
            let mut esp = s.esp.clone();
            {
                let _armed = failpoint::arm(point, Mode::ErrorAt(n));
                let e = install(&mut esp, g, opts).unwrap_err();
                assert!(e.to_string().contains(point.name()), "{point}#{n}: {e}");
            }
            fired += 1;
            // The old or the new default boots, with intact files.
            assert_bootable(&esp, &all);
            install_ok(&mut esp, g, opts);
            assert_eq!(esp.tree(), reference.tree(), "{point}#{n}");
            assert!(replan(&mut esp, g, opts).is_empty(), "{point}#{n}");
        }
    }
    assert!(fired >= 10, "{fired}");
}

#[test]
fn bless_drops_the_counter_and_blessing_twice_is_success() {
    let mut store = Store::new();
    let g = gens(&mut store, &[1, 2], Some(3));
    let mut esp = MemEsp::new(BIG);
    install_ok(&mut esp, &g, &InstallOptions::default());
    esp.rename(
        "loader/entries/genboot-2+3.conf",
        "loader/entries/genboot-2+2-1.conf",
    )
    .unwrap();
    // systemd-boot names the booted file, counter included.
    let booted = Some("genboot-2+2-1.conf");
    assert_eq!(
        bless(&mut esp, None, booted).unwrap(),
        bless::Blessed::Renamed("genboot-2.conf".into())
    );
    // Again (the variable still names the old file): nothing to do.
    assert_eq!(
        bless(&mut esp, None, booted).unwrap(),
        bless::Blessed::AlreadyPlain("genboot-2.conf".into())
    );
    assert_eq!(
        bless(&mut esp, Some(2), None).unwrap(),
        bless::Blessed::AlreadyPlain("genboot-2.conf".into())
    );
    let e = bless(&mut esp, Some(7), None).unwrap_err();
    assert!(matches!(e, EspError::NoEntry { .. }), "{e}");
    // The next install keeps the blessed entry as it is.
    esp.reset_log();
    install_ok(&mut esp, &g, &InstallOptions::default());
    assert_eq!(esp.ops, []);
}

#[test]
fn a_failure_after_the_bless_rename_leaves_it_blessed_and_a_rerun_succeeds() {
    let mut store = Store::new();
    let g = gens(&mut store, &[1], Some(3));
    let mut esp = MemEsp::new(BIG);
    install_ok(&mut esp, &g, &InstallOptions::default());
    {
        let _armed = failpoint::arm(FailPoint::EspBlessRenamed, Mode::Error);
        let e = bless(&mut esp, Some(1), None).unwrap_err();
        assert!(e.to_string().contains("esp::bless-renamed"), "{e}");
    }
    assert_eq!(entries(&esp)[0], "genboot-1-recovery.conf");
    assert_eq!(entries(&esp)[1], "genboot-1.conf");
    assert_eq!(
        bless(&mut esp, Some(1), None).unwrap(),
        bless::Blessed::AlreadyPlain("genboot-1.conf".into())
    );
}

#[test]
fn the_plan_is_a_pure_function_of_the_snapshot() {
    let mut store = Store::new();
    let g = gens(&mut store, &[1, 2], None);
    let mut esp = MemEsp::new(BIG);
    let opts = InstallOptions::default();
    let snapshot = survey(&mut esp, &g, &opts).unwrap();
    assert_eq!(esp.ops, []);
    let a = plan(&snapshot, &g, &opts).unwrap();
    let b = plan(&snapshot, &g, &opts).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.entry_writes.len(), 3);
    assert_eq!(a.dirs, [layout::FILES_DIR, ENTRIES_DIR]);
}
