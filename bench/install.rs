//! Benchmark: install 30 generations (3 kernels) into a directory ESP and
//! into the ESP of a disk image, then reinstall with nothing to change.
//!
//! `cargo bench --bench install` (kernels from `tools/fetch-kernels`, or set
//! GENBOOT_KERNEL_CACHE). Prints a table (time, bytes written, files
//! touched, and `pwrite` calls on the image); exits 1 if a no-op reinstall
//! writes a single byte.

use genboot::esp::dir::{DirEsp, MountCheck};
use genboot::esp::fat::ImageEsp;
use genboot::esp::{self, Esp, InstallOptions};
use genboot::notes::{Silent, Wait};
use genboot::profile::Profile;
use genboot::state::State;
use genboot::store::Store;
use std::path::{Path, PathBuf};
use std::time::Instant;

const GENERATIONS: u32 = 30;

fn kernel_cache() -> PathBuf {
    std::env::var_os("GENBOOT_KERNEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/kernels"))
}

/// (image, modules) of an unpacked test kernel.
fn kernel(package: &str) -> (PathBuf, PathBuf) {
    let dir = kernel_cache().join(package);
    let release = std::fs::read_dir(dir.join("lib/modules"))
        .ok()
        .and_then(|mut rd| rd.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .unwrap_or_else(|| {
            eprintln!(
                "test kernel {package} missing in {}; run tools/fetch-kernels",
                kernel_cache().display()
            );
            std::process::exit(2)
        });
    (
        dir.join(format!("boot/vmlinuz-{release}")),
        dir.join(format!("lib/modules/{release}")),
    )
}

struct Row {
    what: String,
    secs: f64,
    bytes: u64,
    touched: u64,
    /// Writes to the image's FAT volume (each one `pwrite`).
    calls: u64,
}

fn run(
    what: &str,
    mut esp: Box<dyn Esp>,
    gens: &[esp::GenInput],
    opts: &InstallOptions,
    default: u32,
) -> Row {
    let calls = genboot::failpoint::volume_writes();
    let t = Instant::now();
    let report = esp::install(esp.as_mut(), gens, opts).expect("install");
    let stats = esp.close().expect("close");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(report.default, default);
    Row {
        what: what.to_string(),
        secs,
        bytes: stats.bytes_written,
        touched: stats.files_touched,
        calls: genboot::failpoint::volume_writes() - calls,
    }
}

fn config(img: &Path, mods: &Path, param: &str) -> genboot::config::SystemConfig {
    let text = format!(
        "[kernel]\nimage = {img:?}\nmodules = {mods:?}\nparams = [\"console=ttyS0\", \"{param}\"]\n\n[root]\ndevice = \"PARTUUID=6e6f6f74-0000-4000-8000-000000000002\"\n\n[system]\nlabel = \"Bench\"\n\n[boot]\ntries = 3\n"
    );
    genboot::config::SystemConfig::parse(&text, Path::new("/bench/system.toml")).unwrap()
}

fn main() {
    // `cargo bench` passes --bench; nothing else is understood.
    if std::env::var_os("GENBOOT_ACTIVATOR").is_none() {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/x86_64-unknown-linux-musl/release-init/genboot-init");
        if !p.exists() {
            eprintln!(
                "genboot-init is not built; run tools/build-activator (or set GENBOOT_ACTIVATOR)"
            );
            std::process::exit(2);
        }
        std::env::set_var("GENBOOT_ACTIVATOR", p);
    }
    let tmp = std::env::temp_dir().join(format!("genboot-bench-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let root = tmp.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let state = State::open(&root).unwrap();
    let store = Store::open(&state).unwrap();
    let profile = Profile::new(&state);
    let lock = profile.lock(Wait::Yes(&Silent)).unwrap();
    let store_lock = store
        .lock(genboot::store::LockKind::Shared, Wait::Yes(&Silent))
        .unwrap();

    // Three kernel objects: generic, cloud, generic with one byte appended.
    let generic = kernel("linux-image-6.1.0-50-amd64");
    let cloud = kernel("linux-image-6.1.0-47-cloud-amd64");
    let variant_img = tmp.join("vmlinuz-variant");
    let mut data = std::fs::read(&generic.0).unwrap();
    data.push(0);
    std::fs::write(&variant_img, data).unwrap();
    let kernels = [generic.clone(), cloud, (variant_img, generic.1.clone())];

    let t = Instant::now();
    for i in 1..=GENERATIONS {
        let (img, mods) = &kernels[(i % 3) as usize];
        let built = genboot::generation::build(
            &store,
            &state.dir,
            &config(img, mods, &format!("gen={i}")),
            &store_lock,
            &Silent,
        )
        .unwrap();
        profile.add(&built.generation, &lock).unwrap();
    }
    let build_secs = t.elapsed().as_secs_f64();
    let plan = || {
        let gens = profile.generations().unwrap();
        let (inputs, warnings) = genboot::app::esp_inputs(&store, &gens).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        inputs
    };
    let inputs = plan();
    let opts = InstallOptions {
        timeout: 0,
        machine_id: Some("0123456789abcdef0123456789abcdef".into()),
        ..InstallOptions::default()
    };

    // Directory backend (a plain directory on this machine's disk) and
    // image backend (1 GiB image, 512 MiB ESP).
    let dir = tmp.join("esp");
    std::fs::create_dir_all(&dir).unwrap();
    let open_dir =
        |p: &Path| -> Box<dyn Esp> { Box::new(DirEsp::open(p, MountCheck::AnyDir).unwrap()) };
    let img = tmp.join("disk.img");
    let (part, _) = genboot::gpt::write_gpt(&img, 1 << 30, 512 << 20).unwrap();
    let f = std::rc::Rc::new(genboot::esp::fat::open_image(&img, true).unwrap());
    genboot::esp::fat::format(f, part.start, part.len).unwrap();
    let open_img = |p: &Path| -> Box<dyn Esp> { Box::new(ImageEsp::open(p, true).unwrap()) };

    let n = GENERATIONS;
    let mut rows = vec![
        run(
            "directory: install 30 generations",
            open_dir(&dir),
            &inputs,
            &opts,
            n,
        ),
        run(
            "directory: no-op reinstall",
            open_dir(&dir),
            &inputs,
            &opts,
            n,
        ),
        run(
            "image: install 30 generations",
            open_img(&img),
            &inputs,
            &opts,
            n,
        ),
        run("image: no-op reinstall", open_img(&img), &inputs, &opts, n),
    ];
    // One more generation (a new kernel parameter on a kernel already
    // there): only its entry, the recovery entry and loader.conf change.
    let built = genboot::generation::build(
        &store,
        &state.dir,
        &config(&generic.0, &generic.1, "gen=new"),
        &store_lock,
        &Silent,
    )
    .unwrap();
    profile.add(&built.generation, &lock).unwrap();
    let inputs2 = plan();
    rows.insert(
        2,
        run(
            "directory: one more generation",
            open_dir(&dir),
            &inputs2,
            &opts,
            n + 1,
        ),
    );
    rows.push(run(
        "image: one more generation",
        open_img(&img),
        &inputs2,
        &opts,
        n + 1,
    ));

    let files: std::collections::BTreeSet<_> = inputs
        .iter()
        .flat_map(|g| std::iter::once(g.kernel.hash).chain(g.initrd.as_ref().map(|i| i.hash)))
        .collect();
    println!(
        "\n{GENERATIONS} generations on 3 kernel objects: {} kernel and initrd files on the ESP (generations built in {build_secs:.2} s)\n",
        files.len()
    );
    println!("| case | time | bytes written | files touched | image writes |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for r in &rows {
        let calls = if r.what.starts_with("image") {
            r.calls.to_string()
        } else {
            "-".into()
        };
        println!(
            "| {} | {:.3} s | {} | {} | {calls} |",
            r.what, r.secs, r.bytes, r.touched
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let noop: u64 = rows
        .iter()
        .filter(|r| r.what.contains("no-op"))
        .map(|r| r.bytes + r.touched)
        .sum();
    if noop != 0 {
        eprintln!("FAIL: a no-op reinstall wrote to the ESP");
        std::process::exit(1);
    }
}
