//! Damaged and hostile disk images (#10 items 9, 10, 16, and torn genboot
//! entries): each is refused with an error that names the problem and the
//! fix and leaves the image byte for byte as it was — or, when the damage
//! is genboot's own leftover, repaired so that one run converges to an
//! image `fsck.fat -n` calls clean.

use crate::support;
use crate::support::esp::*;
use crate::support::judges::*;
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Output;

/// An image whose ESP (`esp_mib` MiB) holds generation 1 (generic kernel).
fn one_generation(esp_mib: u64) -> (SystemTree, PathBuf) {
    let mut sys = SystemTree::new();
    sys.switch(&support::kernel(GENERIC), "");
    let img = sys.path("disk.img");
    installed_image(&sys, &img, esp_mib);
    (sys, img)
}

fn install(sys: &SystemTree, img: &Path) -> Output {
    sys.run(&["--image", img.to_str().unwrap(), "install"])
}

/// `genboot` with its address space limited to `mib` MiB: reading a 4 GiB
/// file into memory fails instead of swapping the machine to death.
fn limited(sys: &SystemTree, mib: u64, args: &[&str]) -> Output {
    let mut c = std::process::Command::new("sh");
    c.arg("-c")
        .arg(format!("ulimit -v {}; exec \"$@\"", mib * 1024))
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_genboot"))
        .arg("--root")
        .arg(&sys.root)
        .args(args);
    if std::env::var_os("GENBOOT_ACTIVATOR").is_none() {
        if let Some(p) = ["x86_64-unknown-linux-musl", "x86_64-unknown-linux-gnu"]
            .iter()
            .map(|t| support::repo().join(format!("target/{t}/release-init/genboot-init")))
            .find(|p| p.exists())
        {
            c.env("GENBOOT_ACTIVATOR", p);
        }
    }
    c.output().unwrap()
}

#[track_caller]
fn refused_unchanged(o: &Output, img: &Path, before: &[u8], wants: &[&str]) {
    let e = stderr(o);
    assert!(!o.status.success(), "should have been refused:\n{e}");
    assert_eq!(
        o.status.code(),
        Some(1),
        "a clean error exit, not a crash:\n{e}"
    );
    for w in wants {
        assert!(e.contains(w), "the error should say {w:?}:\n{e}");
    }
    assert!(
        e.contains("Hint:"),
        "the error should say how to fix it:\n{e}"
    );
    assert_eq!(sha(img), before, "the refused image changed");
}

// ----- #10 item 9: free space from the FAT, leftovers first -----

#[test]
fn a_too_high_free_count_in_fsinfo_does_not_let_a_full_esp_start_writing() {
    let (mut sys, img) = one_generation(40);
    // Fill the ESP (a vendor's file) so that the cloud kernel (14 MB)
    // no longer fits, then claim in FSInfo that everything is free.
    let g = fat_geometry(&img);
    let free = g.free_clusters(&img);
    mcopy_junk(
        &img,
        sys.tmp.path(),
        (free - 4096) * g.cluster_bytes,
        "::/vendor.bin",
    );
    let clusters = ((g.part + g.len - g.data) / g.cluster_bytes) as u32;
    poke(&img, g.fsinfo + 488, &clusters.to_le_bytes());
    sys.switch(&support::kernel(CLOUD), "");
    let before = sha(&img);
    let o = install(&sys, &img);
    refused_unchanged(
        &o,
        &img,
        &before,
        &["too little free space", "Nothing was written"],
    );
}

#[test]
fn leftovers_of_a_failed_write_are_removed_first_and_the_install_fits() {
    let (mut sys, img) = one_generation(40);
    // What an older genboot left after "the FAT file system is full": a
    // big temporary file, and FSInfo claiming more free space than there
    // is. The install fits only once the leftover is gone.
    let g = fat_geometry(&img);
    let free = g.free_clusters(&img);
    let tmp_len = 12 << 20;
    mcopy_junk(
        &img,
        sys.tmp.path(),
        (free * g.cluster_bytes).saturating_sub(tmp_len + (10 << 20)),
        "::/vendor.bin",
    );
    mcopy_junk(
        &img,
        sys.tmp.path(),
        tmp_len,
        "::/EFI/genboot/0123456789abcdef0123456789abcdef-linux-6.1.0-47-cloud-amd64.efi.genboot-tmp",
    );
    poke(&img, g.fsinfo + 488, &(free as u32).to_le_bytes());
    sys.switch(&support::kernel(CLOUD), "");
    let o = install(&sys, &img);
    ok(o.clone());
    let t = image_tree(&img);
    assert!(
        !t.keys().any(|k| k.ends_with(".genboot-tmp")),
        "{:?}",
        names(&t)
    );
    assert!(
        t.keys().any(|k| k.contains("-linux-6.1.0-47-cloud")),
        "{:?}",
        names(&t)
    );
    fsck_image(&img);
}

// ----- #10 item 16: damaged partition tables -----

fn gpt_image() -> (SystemTree, PathBuf, Vec<u8>) {
    let (sys, img) = one_generation(40);
    let before = sha(&img);
    (sys, img, before)
}

#[test]
fn a_bad_primary_gpt_header_crc_is_refused_unchanged() {
    let (sys, img, _) = gpt_image();
    // One byte of the disk GUID in the primary header: its CRC fails; the
    // backup at the end of the image is intact.
    let f = std::fs::read(&img).unwrap();
    poke(&img, 512 + 56, &[f[512 + 56] ^ 0x01]);
    let before = sha(&img);
    let o = install(&sys, &img);
    refused_unchanged(
        &o,
        &img,
        &before,
        &[
            "primary GPT is damaged",
            "header CRC",
            "backup GPT",
            "gdisk",
        ],
    );
}

#[test]
fn a_bad_partition_entry_array_crc_is_refused_unchanged() {
    let (sys, img, _) = gpt_image();
    // The name of partition 1 in the primary entry array.
    let f = std::fs::read(&img).unwrap();
    poke(&img, 1024 + 60, &[f[1024 + 60] ^ 0x20]);
    let before = sha(&img);
    let o = install(&sys, &img);
    refused_unchanged(
        &o,
        &img,
        &before,
        &["primary GPT is damaged", "entry array CRC"],
    );
}

#[test]
fn an_image_truncated_inside_its_esp_is_refused_unchanged() {
    let (sys, img, _) = gpt_image();
    let part = esp_partition(&img);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(part.start + part.len / 2).unwrap();
    drop(f);
    let before = sha(&img);
    let o = install(&sys, &img);
    refused_unchanged(&o, &img, &before, &["ends inside its ESP", "truncated"]);
}

#[test]
fn an_esp_past_the_end_of_the_file_is_refused_unchanged() {
    let (sys, img, _) = gpt_image();
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(512 << 10).unwrap();
    drop(f);
    let before = sha(&img);
    let o = install(&sys, &img);
    refused_unchanged(&o, &img, &before, &["past the end of the file"]);
}

#[test]
fn overlapping_partitions_are_refused_unchanged() {
    let (sys, img, _) = gpt_image();
    // Move the root partition's start into the ESP and fix both CRCs, as
    // a careless partitioning tool would leave it.
    let mut f = std::fs::read(&img).unwrap();
    let header = 512;
    let entries = 1024;
    let entry2 = entries + 128;
    let esp_first = u64::from_le_bytes(f[entries + 32..entries + 40].try_into().unwrap());
    f[entry2 + 32..entry2 + 40].copy_from_slice(&(esp_first + 100).to_le_bytes());
    let count = u32::from_le_bytes(f[header + 80..header + 84].try_into().unwrap()) as usize;
    let size = u32::from_le_bytes(f[header + 84..header + 88].try_into().unwrap()) as usize;
    let crc = |d: &[u8]| {
        let mut c = flate2::Crc::new();
        c.update(d);
        c.sum()
    };
    let ecrc = crc(&f[entries..entries + count * size]);
    f[header + 88..header + 92].copy_from_slice(&ecrc.to_le_bytes());
    f[header + 16..header + 20].fill(0);
    let hcrc = crc(&f[header..header + 92]);
    f[header + 16..header + 20].copy_from_slice(&hcrc.to_le_bytes());
    poke(&img, 0, &f[..entries + count * size]);
    let before = sha(&img);
    let o = install(&sys, &img);
    refused_unchanged(&o, &img, &before, &["partitions 1", "overlap"]);
}

// ----- #10 item 10 (FAT part): a 4 GiB file with a looping chain -----

/// Make the file whose short entry is `sfn` claim 4 GiB - 1 bytes and loop
/// on its first cluster.
fn loop_file(img: &Path, sfn: &[u8; 11]) {
    let g = fat_geometry(img);
    let at = g.find_short_entry(img, sfn);
    let f = std::fs::read(img).unwrap();
    let e = &f[at as usize..at as usize + 32];
    let cluster = (u32::from(u16::from_le_bytes([e[20], e[21]])) << 16)
        | u32::from(u16::from_le_bytes([e[26], e[27]]));
    assert!(cluster >= 2);
    poke(img, at + 28, &u32::MAX.to_le_bytes());
    g.set_fat(img, cluster, cluster);
}

#[test]
fn a_foreign_file_with_a_4_gib_size_and_a_looping_chain_is_refused_unchanged() {
    let (sys, img) = one_generation(40);
    let text = sys.path("vendor.conf");
    std::fs::write(&text, "title Vendor\nlinux /vendor.efi\n").unwrap();
    mcopy_to(&img, &text, "::/loader/entries/vendor.conf");
    loop_file(&img, &short_name(&img, "/loader/entries", "vendor.conf"));
    let before = sha(&img);
    let t = std::time::Instant::now();
    // 1 GiB of address space: reading the file whole would fail.
    let o = limited(&sys, 1024, &["--image", img.to_str().unwrap(), "install"]);
    refused_unchanged(
        &o,
        &img,
        &before,
        &["loader/entries/vendor.conf", "damaged", "fsck.fat -a"],
    );
    assert!(t.elapsed().as_secs() < 60, "took {:?}", t.elapsed());
    // Read-only commands read it bounded too.
    let o = limited(&sys, 1024, &["--image", img.to_str().unwrap(), "status"]);
    assert!(
        o.status.success() || o.status.code() == Some(1),
        "{}",
        stderr(&o)
    );
    assert_eq!(sha(&img), before);
}

#[test]
fn a_looping_loader_conf_is_read_bounded_by_status_and_repaired_by_install() {
    let (sys, img) = one_generation(40);
    let want = image_tree(&img);
    loop_file(&img, &short_name(&img, "/loader", "loader.conf"));
    let o = limited(&sys, 1024, &["--image", img.to_str().unwrap(), "status"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("loader/loader.conf") && stderr(&o).contains("bytes"),
        "{}",
        stderr(&o)
    );
    // loader.conf is genboot's: install removes the damaged one and
    // writes it again.
    let o = limited(&sys, 1024, &["--image", img.to_str().unwrap(), "install"]);
    ok(o.clone());
    assert!(
        stderr(&o).contains("removed damaged /loader/loader.conf"),
        "{}",
        stderr(&o)
    );
    fsck_image(&img);
    assert_eq!(image_tree(&img), want);
}

// ----- torn genboot entries are genboot's, never "foreign" -----

#[test]
fn a_torn_genboot_entry_is_replaced_not_left_as_foreign() {
    let (mut sys, img) = one_generation(40);
    sys.switch(&support::kernel(CLOUD), "");
    ok(install(&sys, &img));
    let want = image_tree(&img);
    let entry = "loader/entries/genboot-2.conf";
    let good = want[entry].clone();
    // Content torn three ways, each a valid FAT file: cut short, padded
    // with NUL bytes, empty.
    let mut padded = good.clone();
    padded.extend_from_slice(&[0u8; 300]);
    for torn in [good[..good.len() / 2].to_vec(), padded, Vec::new()] {
        let f = sys.path("torn.conf");
        std::fs::write(&f, &torn).unwrap();
        mcopy_to(&img, &f, &format!("::/{entry}"));
        let o = install(&sys, &img);
        ok(o.clone());
        assert!(
            !stderr(&o).contains("did not write it"),
            "a torn entry was taken for a foreign one:\n{}",
            stderr(&o)
        );
        fsck_image(&img);
        assert_eq!(image_tree(&img), want);
    }
}

#[test]
fn a_genboot_entry_with_a_garbage_size_is_repaired() {
    let (mut sys, img) = one_generation(40);
    sys.switch(&support::kernel(CLOUD), "");
    ok(install(&sys, &img));
    let want = image_tree(&img);
    // What a kill inside fatfs's rename left: the short entry's size
    // field holding bytes of an old long-name slot (".\0c\0").
    let g = fat_geometry(&img);
    let at = g.find_short_entry(&img, &short_name(&img, "/loader/entries", "genboot-2.conf"));
    poke(&img, at + 28, &6_488_110u32.to_le_bytes());
    let (clean, _) = fsck_output(&img);
    assert!(!clean);
    let o = install(&sys, &img);
    ok(o.clone());
    assert!(stderr(&o).contains("removed damaged"), "{}", stderr(&o));
    fsck_image(&img);
    assert_eq!(image_tree(&img), want);
}

#[test]
fn foreign_damage_is_refused_and_foreign_files_stay_untouched() {
    let (sys, img) = one_generation(40);
    // A vendor's file whose chain runs into a free cluster: not genboot's
    // to repair.
    let f = sys.path("vendor.efi");
    std::fs::write(&f, vec![7u8; 20_000]).unwrap();
    mcopy_to(&img, &f, "::/vendor.efi");
    let g = fat_geometry(&img);
    let at = g.find_short_entry(&img, &short_name(&img, "/", "vendor.efi"));
    let data = std::fs::read(&img).unwrap();
    let e = &data[at as usize..at as usize + 32];
    let first = (u32::from(u16::from_le_bytes([e[20], e[21]])) << 16)
        | u32::from(u16::from_le_bytes([e[26], e[27]]));
    let second = g.get_fat(&img, first) & 0x0FFF_FFFF;
    g.set_fat(&img, second, 0);
    let before = sha(&img);
    let o = install(&sys, &img);
    refused_unchanged(
        &o,
        &img,
        &before,
        &["/vendor.efi", "marked free", "fsck.fat -a"],
    );
}
