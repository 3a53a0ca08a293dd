//! `genboot-bench-initrd-step SYSTEM.TOML OUT`: what `genboot build` does
//! to make an initrd, and nothing else: read the kernel's release, walk the
//! module tree, parse every module's `.modinfo`, compute the closure of
//! `[initrd] modules` (and its firmware), lay out the members, write the
//! newc cpio, compress it, and write it to OUT (like `mkinitramfs -o OUT`:
//! no store object, no fsync).
//!
//! bench/peers runs it under GNU time, as it runs mkinitramfs and dracut.
//! It prints where its time went on stdout, one line a phase:
//! `phase <name> <seconds>`.

use genboot::config::SystemConfig;
use genboot::modules::{self, index, ModuleIndex};
use genboot::generation::{self, kernel};
use genboot::initrd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [config, out] = args.as_slice() else {
        eprintln!("usage: genboot-bench-initrd-step SYSTEM.TOML OUT");
        return ExitCode::from(2);
    };
    match run(config, out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("genboot-bench-initrd-step: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &Path, out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut t = Instant::now();
    let mut lap = |name: &str| {
        println!("phase {name} {:.6}", t.elapsed().as_secs_f64());
        t = Instant::now();
    };
    let cfg = SystemConfig::load(config)?;
    let k = cfg
        .kernel
        .files()
        .ok_or("the initrd step bench needs a kernel on this machine, not a [tree]'s")?;
    let activator = initrd::find_activator(cfg.initrd.activator.as_deref())?;
    let release = kernel::inspect(&k.image)?.release;
    lap("config+kernel-release");
    let files = index::walk(&k.modules)?;
    lap("walk-module-tree");
    let idx = ModuleIndex::read(&k.modules, &release, &files)?;
    lap("parse-modinfo");
    let closure = modules::closure(&idx, &cfg.initrd.modules)?;
    let firmware = modules::firmware::firmware(
        &idx,
        &closure,
        &generation::firmware_dir(&k.modules),
        cfg.initrd.strict_firmware,
    )?
    .files;
    lap("closure+firmware");
    let members = initrd::members(&initrd::Contents {
        index: &idx,
        closure: &closure,
        firmware: &firmware,
        activator: &activator,
    })?;
    let archive = initrd::cpio(&members);
    lap("read-members+cpio");
    let compressed = initrd::compress(&archive, cfg.initrd.compression, cfg.initrd.level)?;
    lap("compress");
    std::fs::write(out, compressed)?;
    lap("write");
    Ok(())
}
