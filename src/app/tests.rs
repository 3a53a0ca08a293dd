//! Use cases on synthetic generations (a few bytes of "kernel", no kernel
//! tree) and a directory ESP: the lock scope, the errors `status` used to
//! swallow.

use super::settings::Settings;
use super::*;
use crate::config::SystemConfig;
use crate::generation::{assemble, Parts};
use crate::notes::Silent;
use crate::profile::ProfileError;
use crate::store::BuildOptions;
use std::cell::RefCell;
use std::fs;

/// Records events; on [`Event::Installed`], checks whether the profile
/// lock is free (it must not be: the use case holds it).
struct Recorder {
    state: State,
    events: RefCell<Vec<String>>,
    lock_free_while_installing: RefCell<Vec<bool>>,
}

impl Recorder {
    fn new(state: &State) -> Recorder {
        Recorder {
            state: state.clone(),
            events: RefCell::new(Vec::new()),
            lock_free_while_installing: RefCell::new(Vec::new()),
        }
    }
}

impl Observer for Recorder {
    fn event(&self, event: Event<'_>) {
        if let Event::Installed { .. } = event {
            let free = Profile::new(&self.state).lock(Wait::No).is_ok();
            self.lock_free_while_installing.borrow_mut().push(free);
        }
        self.events.borrow_mut().push(format!("{event:?}"));
    }
}

/// A state below a temporary root, with a plain directory as its ESP.
fn world() -> (tempfile::TempDir, State, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let state = State::open(&t.path().join("root")).unwrap();
    let esp = t.path().join("esp");
    fs::create_dir_all(&esp).unwrap();
    (t, state, esp)
}

fn target(esp: &Path) -> Target {
    Target {
        image: None,
        esp: Some(esp.to_path_buf()),
        any_dir: true,
    }
}

/// A generation whose kernel and initrd are a few bytes: enough for the
/// installer, which copies them without looking inside.
fn add_generation(state: &State, label: &str) -> u32 {
    let store = Store::open(state).unwrap();
    let file = |name: &str, file: &str, data: String| {
        store
            .build(name, BuildOptions::default(), |d| {
                fs::write(d.join(file), data)
            })
            .unwrap()
    };
    let kernel = file("linux-6.1.0-test", "bzImage", format!("kernel {label}"));
    let initrd = file("initrd-6.1.0-test", "initrd", format!("initrd {label}"));
    let cfg = SystemConfig::parse(
        &format!("[kernel]\nimage = \"/k\"\nmodules = \"/m\"\n[root]\ndevice = \"LABEL=root\"\n[system]\nlabel = \"{label}\"\n[boot]\ntries = 3\n"),
        Path::new("/etc/genboot/system.toml"),
    )
    .unwrap();
    let parts = Parts {
        kernel,
        initrd: Some(initrd),
        kernel_modules: None,
        tree: None,
    };
    let built = assemble(&store, &cfg, "6.1.0-test", parts, &Silent).unwrap();
    let profile = Profile::new(state);
    let lock = profile.lock(Wait::No).unwrap();
    profile.add(&built.generation, &lock).unwrap().0
}

#[test]
fn install_holds_the_profile_lock_while_it_writes_the_esp() {
    let (_t, state, esp) = world();
    add_generation(&state, "One");
    let rec = Recorder::new(&state);
    let s = Session::new(state.clone(), false, target(&esp), &rec);
    let report = esp::install(&s, None).unwrap();
    assert_eq!(report.default, 1);
    assert_eq!(*rec.lock_free_while_installing.borrow(), [false]);
    // Released when the use case returns.
    assert!(Profile::new(&state).lock(Wait::No).is_ok());
}

#[test]
fn bless_changes_the_esp_only_under_the_profile_lock() {
    let (_t, state, esp) = world();
    add_generation(&state, "One");
    let rec = Recorder::new(&state);
    let s = Session::new(state.clone(), false, target(&esp), &rec);
    esp::install(&s, None).unwrap();
    let booted =
        Store::open_read_only(&state).path(&Profile::new(&state).current().unwrap().target);
    let run = state.root.join("run/genboot");
    fs::create_dir_all(&run).unwrap();
    fs::write(
        run.join("booted"),
        format!(
            "/var/lib/genboot/store/{}\n",
            booted.file_name().unwrap().to_str().unwrap()
        ),
    )
    .unwrap();
    let entries = || {
        let mut v: Vec<String> = fs::read_dir(esp.join("loader/entries"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    // Another genboot holds the lock: bless waits (here: fails at once)
    // and changes nothing.
    let held = Profile::new(&state).lock(Wait::No).unwrap();
    let e = esp::bless(&s).unwrap_err();
    assert!(
        matches!(e.downcast_ref(), Some(ProfileError::Locked { .. })),
        "{e:#}"
    );
    assert_eq!(entries(), ["genboot-1+3.conf", "genboot-1-recovery.conf"]);
    drop(held);
    assert!(matches!(
        esp::bless(&s).unwrap(),
        crate::esp::bless::Blessed::Renamed(_)
    ));
    assert_eq!(entries(), ["genboot-1-recovery.conf", "genboot-1.conf"]);
    // Blessing again is success: nothing to do.
    assert!(matches!(
        esp::bless(&s).unwrap(),
        crate::esp::bless::Blessed::AlreadyPlain(_)
    ));
}

#[test]
fn status_reports_an_esp_it_cannot_open_instead_of_none_found() {
    let (_t, state, esp) = world();
    add_generation(&state, "One");
    let rec = Recorder::new(&state);
    // The saved settings name an ESP that is not there.
    let s = Session::new(state.clone(), false, Target::default(), &rec);
    {
        let locked = s.lock().unwrap();
        Settings {
            esp: Some(PathBuf::from("/no/such/esp")),
            ..Settings::default()
        }
        .save(&state, &locked.lock)
        .unwrap();
    }
    let e = esp::status(&s).unwrap_err();
    assert!(format!("{e:#}").contains("does not exist"), "{e:#}");
    // With an ESP that opens, the entries are there.
    let s = Session::new(state.clone(), false, target(&esp), &rec);
    esp::install(&s, None).unwrap();
    let st = esp::status(&s).unwrap();
    assert_eq!(st.current, Some(1));
    assert_eq!(st.default_entry.as_deref(), Some("genboot-1[.+][c1-9]*"));
    assert_eq!(st.default_file.as_deref(), Some("genboot-1+3.conf"));
    assert_eq!(st.entries.len(), 2);
}

#[test]
fn a_profile_change_whose_install_fails_puts_the_profile_back() {
    let (_t, state, esp) = world();
    add_generation(&state, "One");
    add_generation(&state, "Two");
    let rec = Recorder::new(&state);
    let s = Session::new(state.clone(), false, target(&esp), &rec);
    // The ESP is a file where loader/ should be: every install fails.
    fs::write(esp.join("loader"), b"in the way").unwrap();
    let e = generations::rollback(&s).unwrap_err();
    assert!(
        format!("{e:#}").contains("the profile was put back as it was"),
        "{e:#}"
    );
    assert_eq!(Profile::new(&state).current_number().unwrap(), Some(2));
}

/// Every store and profile failpoint, fired in-process as an error at each
/// of its hits while a generation is added: the error names the point, the
/// profile is as it was (no half-made generation), the store holds only
/// whole objects, and adding the generation again converges.
#[test]
fn a_failure_at_every_store_and_profile_failpoint_changes_no_generation_and_a_rerun_converges() {
    use crate::failpoint::{self, FailPoint, Mode};
    let points: Vec<FailPoint> = FailPoint::ALL
        .iter()
        .copied()
        .filter(|p| p.name().starts_with("store::") || p.name().starts_with("profile::"))
        .collect();
    assert!(points.len() >= 8, "{points:?}");
    for point in points {
        let (_t, state, _esp) = world();
        add_generation(&state, "One");
        let hits = {
            let counting = failpoint::arm(point, Mode::ErrorAt(u32::MAX));
            add_generation(&state, "Two");
            counting.hits()
        };
        assert!(hits > 0, "{point} is not reached by adding a generation");
        for n in 1..=hits {
            let (_t, state, _esp) = world();
            add_generation(&state, "One");
            let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _armed = failpoint::arm(point, Mode::ErrorAt(n));
                add_generation(&state, "Two");
            }));
            assert!(failed.is_err(), "{point}#{n} did not fail");
            let profile = Profile::new(&state);
            let numbers: Vec<u32> = profile
                .generations()
                .unwrap()
                .iter()
                .map(|g| g.number)
                .collect();
            // A crash after the new link is renamed leaves a complete
            // generation 2 that is not current yet; before that, nothing.
            assert!(
                numbers == [1] || numbers == [1, 2],
                "{point}#{n}: {numbers:?}"
            );
            let store = Store::open(&state).unwrap();
            assert!(store.verify().unwrap().is_empty(), "{point}#{n}");
            add_generation(&state, "Two");
            let current = profile.current().unwrap();
            let boot = crate::generation::bootjson::BootJson::read(
                &store.path(&current.target).join("boot.json"),
            )
            .unwrap();
            assert_eq!(boot.bootspec.label, "Two", "{point}#{n}");
        }
    }
}
