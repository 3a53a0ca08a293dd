//! Images mounted by this machine's kernel (EROFS from the image file) and
//! overlayfs over an object store, compared path by path with the tree they
//! were made from: `lstat` fields, content, symlink targets, xattrs,
//! `getcap`. Needs root (mount, mknod, trusted xattrs).

mod common;

use std::fs;
use std::path::Path;

use common::*;

fn no_overlay_private(name: &str) -> bool {
    // overlayfs keeps trusted.overlay.* of its layers to itself.
    name.starts_with("trusted.overlay.")
}

fn only_generated(name: &str) -> bool {
    name == "trusted.overlay.metacopy" || name == "trusted.overlay.redirect"
}

/// Build the odd tree, a metadata image over an object store, fsck it, and
/// check the raw EROFS mount (metadata exact, external files data-less with
/// the right redirects).
fn metadata_image(
    scratch: &Scratch,
    whiteouts: bool,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let src = scratch.join("src");
    let objects = scratch.join("objects");
    make_odd_tree(&src, 3000);
    fs::create_dir_all(&objects).unwrap();
    let mut img = import(&src, &Policy::Metadata { objects: &objects });
    img.set_object_whiteouts(whiteouts);
    let image = scratch.join("root.erofs");
    let stats = write_image(&img, &image);
    assert_eq!(
        stats.data_bytes, 0,
        "a metadata image holds no file data blocks"
    );
    fsck(&image);
    (src, objects, image)
}

fn check_raw_metadata_mount(
    src: &Path,
    image: &Path,
    objects: &Path,
    scratch: &Scratch,
    whiteouts: bool,
) {
    let raw = mount_erofs(image, &scratch.join("raw"));
    if whiteouts {
        // The raw image shows the whiteouts (one shared char 0:0 inode) and
        // an opaque root; the overlay hides them.
        let names: Vec<String> = (0..256).map(|i| format!("{i:02x}")).collect();
        for name in &names {
            let w = fs::symlink_metadata(raw.dir.join(name)).unwrap();
            assert!(
                std::os::unix::fs::FileTypeExt::is_char_device(&w.file_type()),
                "/{name}"
            );
            assert_eq!(std::os::unix::fs::MetadataExt::rdev(&w), 0, "/{name}");
            assert_eq!(std::os::unix::fs::MetadataExt::nlink(&w), 256, "/{name}");
        }
        let root_x = read_xattrs(&raw.dir);
        assert_eq!(root_x[Path::new("")]["trusted.overlay.opaque"], b"y");
    } else {
        assert_same(
            src,
            &raw.dir,
            &Compare {
                content: true,
                external: External::Zeros,
                nlink: true,
                xattrs: true,
                setid: true,
                ignore_xattr: &only_generated,
                merged_root: false,
                dir_sizes: false,
            },
        );
    }
    // Every file over the threshold redirects to its object, which holds
    // its content; smaller ones carry no overlay xattrs.
    let x = read_xattrs(&raw.dir);
    let mut all = Vec::new();
    walk(src, Path::new(""), &mut all);
    let mut external = 0;
    for rel in all {
        let md = fs::symlink_metadata(src.join(&rel)).unwrap();
        if !md.is_file() {
            continue;
        }
        let xs = x.get(&rel).cloned().unwrap_or_default();
        if md.len() > genboot_erofs::INLINE_MAX {
            external += 1;
            let content = fs::read(src.join(&rel)).unwrap();
            let h = hex(&sha256(&content));
            let want = format!("/{}/{}", &h[..2], &h[2..]);
            let got = String::from_utf8(xs["trusted.overlay.redirect"].clone()).unwrap();
            assert_eq!(got, want, "/{}", rel.display());
            assert_eq!(xs["trusted.overlay.metacopy"], b"", "/{}", rel.display());
            assert_eq!(fs::read(objects.join(&want[1..])).unwrap(), content);
        } else {
            assert!(
                !xs.contains_key("trusted.overlay.redirect"),
                "/{}",
                rel.display()
            );
        }
    }
    assert!(external > 10, "the tree has external files ({external})");
}

fn check_overlay(src: &Path, view: &Path, legacy: bool) {
    assert_same(
        src,
        view,
        &Compare {
            content: true,
            external: External::Content,
            nlink: true,
            xattrs: true,
            setid: true,
            ignore_xattr: &no_overlay_private,
            merged_root: legacy,
            dir_sizes: false,
        },
    );
    assert_eq!(
        getcap(&view.join("usr/bin/ping")),
        getcap(&src.join("usr/bin/ping"))
    );
    assert_eq!(getcap(&view.join("usr/bin/ping")), "cap_net_raw=ep");
    // `ls /` shows exactly the tree's own names: no object fan-out
    // directories, no whiteouts.
    let ls = |d: &Path| sh(&format!("ls -A {}", d.display()));
    assert_eq!(ls(view), ls(src));
    // And they cannot be looked up either.
    for name in ["00", "ab", "ff"] {
        if !src.join(name).exists() {
            assert!(
                fs::symlink_metadata(view.join(name)).is_err(),
                "/{name} is visible in the overlay"
            );
        }
    }
}

#[test]
fn metadata_image_over_objects_equals_the_source_tree_with_a_data_only_lower() {
    require_root();
    let scratch = Scratch::new("data-only");
    let (src, objects, image) = metadata_image(&scratch, false);
    check_raw_metadata_mount(&src, &image, &objects, &scratch, false);
    let meta = mount_erofs(&image, &scratch.join("meta"));
    let root = mount_overlay(
        &format!("{}::{}", meta.dir.display(), objects.display()),
        &scratch.join("root"),
    );
    check_overlay(&src, &root.dir, false);
}

#[test]
fn metadata_image_over_objects_equals_the_source_tree_with_the_legacy_lowerdir_and_root_whiteouts()
{
    require_root();
    let scratch = Scratch::new("legacy");
    let (src, objects, image) = metadata_image(&scratch, true);
    check_raw_metadata_mount(&src, &image, &objects, &scratch, true);
    let meta = mount_erofs(&image, &scratch.join("meta"));
    let root = mount_overlay(
        &format!("{}:{}", meta.dir.display(), objects.display()),
        &scratch.join("root"),
    );
    check_overlay(&src, &root.dir, true);
}

#[test]
fn without_root_whiteouts_the_legacy_lowerdir_shows_the_object_directories() {
    // The reason set_object_whiteouts exists: the test above would catch a
    // writer that forgot them, this one shows what they hide.
    require_root();
    let scratch = Scratch::new("legacy-bare");
    let src = scratch.join("src");
    let objects = scratch.join("objects");
    make_odd_tree(&src, 10);
    fs::create_dir_all(&objects).unwrap();
    let img = import(&src, &Policy::Metadata { objects: &objects });
    let image = scratch.join("root.erofs");
    write_image(&img, &image);
    let meta = mount_erofs(&image, &scratch.join("meta"));
    let root = mount_overlay(
        &format!("{}:{}", meta.dir.display(), objects.display()),
        &scratch.join("root"),
    );
    let fanout = fs::read_dir(&objects)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    assert!(
        root.dir.join(&fanout).is_dir(),
        "objects/{fanout:?} shows through"
    );
}

#[test]
fn full_image_equals_the_source_tree() {
    require_root();
    let scratch = Scratch::new("full");
    let src = scratch.join("src");
    make_odd_tree(&src, 3000);
    let img = import(&src, &Policy::Full);
    let image = scratch.join("full.erofs");
    let stats = write_image(&img, &image);
    assert!(stats.data_bytes > 1 << 20);
    fsck(&image);
    let m = mount_erofs(&image, &scratch.join("mnt"));
    assert_same(
        &src,
        &m.dir,
        &Compare {
            content: true,
            external: External::Content,
            nlink: true,
            xattrs: true,
            setid: true,
            ignore_xattr: &|_| false,
            merged_root: false,
            dir_sizes: false,
        },
    );
    assert_eq!(getcap(&m.dir.join("usr/bin/ping")), "cap_net_raw=ep");
}

#[test]
fn the_same_tree_gives_byte_identical_images() {
    require_root();
    let scratch = Scratch::new("repro");
    let src = scratch.join("src");
    let objects = scratch.join("objects");
    make_odd_tree(&src, 300);
    fs::create_dir_all(&objects).unwrap();
    let mut out = Vec::new();
    for _ in 0..2 {
        let mut img = import(&src, &Policy::Metadata { objects: &objects });
        img.set_object_whiteouts(true);
        let mut bytes = Vec::new();
        img.write(&mut bytes).unwrap();
        out.push(bytes);
    }
    assert!(out[0] == out[1], "two writes of the same tree differ");
    // One more file changes the image (and its UUID).
    let mut img = import(&src, &Policy::Metadata { objects: &objects });
    img.set_object_whiteouts(true);
    img.add_file(
        "/new",
        genboot_erofs::Meta::new(0o644, 0, 0),
        genboot_erofs::FileData::Bytes(vec![]),
    )
    .unwrap();
    let mut changed = Vec::new();
    img.write(&mut changed).unwrap();
    assert_ne!(changed[1024 + 48..1024 + 64], out[0][1024 + 48..1024 + 64]);
}

#[test]
fn the_last_name_of_an_inline_directory_is_found_when_an_extended_inode_follows_it() {
    // /t's inline tail (".", "..", a 25-byte name: 64 bytes) ends on a slot
    // boundary and the next inode (/t's child, extended because of its
    // mtime) starts with a non-zero byte. The kernel's lookup compares a
    // block's last name up to the block end or a NUL; the writer relies on
    // the kernel reading the tail through the directory's page cache (zeros
    // after i_size), not in place. This pins that assumption (the QEMU test
    // checks it on 6.1 too).
    require_root();
    use genboot_erofs::{FileData, Image, Meta};
    let scratch = Scratch::new("dir-tail-nul");
    let mut img = Image::new();
    img.add_dir("/", Meta::new(0o755, 0, 0).mtime(EPOCH, 0))
        .unwrap();
    img.add_dir("/t", Meta::new(0o755, 0, 0).mtime(EPOCH, 0))
        .unwrap();
    let name = "z".repeat(25);
    img.add_file(
        format!("/t/{name}"),
        Meta::new(0o644, 0, 0).mtime(EPOCH + 1, 0),
        FileData::Bytes(vec![]),
    )
    .unwrap();
    let image = scratch.join("t.erofs");
    write_image(&img, &image);
    fsck(&image);
    // The layout this test is about: the child's inode right after /t's
    // 32-byte inode and 64-byte tail, starting with i_format = 1 (extended).
    let nid = |p: &str| -> u64 {
        let out = run(std::process::Command::new("dump.erofs")
            .arg(format!("--path={p}"))
            .arg(&image));
        let rest = out.split("NID: ").nth(1).unwrap();
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    let (t, child) = (nid("/t"), nid(&format!("/t/{name}")));
    assert_eq!(
        child * 32,
        t * 32 + 32 + 64,
        "layout changed: /t at nid {t}, child at {child}"
    );
    let bytes = fs::read(&image).unwrap();
    assert_eq!(bytes[(child * 32) as usize], 1);
    let m = mount_erofs(&image, &scratch.join("mnt"));
    let md = fs::symlink_metadata(m.dir.join("t").join(&name));
    assert!(md.is_ok(), "lookup of /t/{name}: {md:?}");
    assert_eq!(
        sh(&format!("ls {}", m.dir.join("t").display())).trim(),
        name
    );
}

#[test]
fn xattrs_larger_than_a_block_are_read_back() {
    // ext4 cannot hold these (one block of xattrs per inode), so the tree is
    // built in memory: three 2000-byte values on a directory, an external
    // file, a symlink and an inline file; their inodes span two blocks.
    require_root();
    use genboot_erofs::{FileData, Image, Meta};
    let scratch = Scratch::new("big-xattrs");
    let objects = scratch.join("objects");
    fs::create_dir_all(&objects).unwrap();
    // Values differ per inode (`seed`), so none is shared: all inline.
    let value = |seed: u8, i: u8| -> Vec<u8> {
        let mut v = vec![b'a' + i; 2000];
        v[0] = seed;
        v
    };
    let big = |m: Meta, seed: u8| {
        (0..3).fold(m, |m, i| m.xattr(format!("trusted.big{i}"), value(seed, i)))
    };
    let content = vec![7u8; 5000];
    let h = put_object(&objects, &content);
    let mut img = Image::new();
    img.add_dir("/d", big(Meta::new(0o755, 0, 0), 1)).unwrap();
    img.add_file(
        "/d/ext",
        big(Meta::new(0o644, 0, 0), 2),
        FileData::object(5000, &h),
    )
    .unwrap();
    img.add_file(
        "/d/inline",
        big(Meta::new(0o644, 0, 0), 3),
        FileData::Bytes(b"x".to_vec()),
    )
    .unwrap();
    img.add_symlink("/d/link", big(Meta::new(0o777, 0, 0), 4), "inline")
        .unwrap();
    for i in 0..20 {
        img.add_file(
            format!("/d/small-{i}"),
            Meta::new(0o644, 0, 0),
            FileData::Bytes(vec![i]),
        )
        .unwrap();
    }
    let image = scratch.join("big.erofs");
    let stats = write_image(&img, &image);
    assert_eq!(stats.shared_xattrs, 0);
    fsck(&image);
    for p in ["/d", "/d/ext", "/d/inline", "/d/link"] {
        let out = run(std::process::Command::new("dump.erofs")
            .arg(format!("--path={p}"))
            .arg(&image));
        let xsize: u64 = out
            .split("Xattr size: ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(xsize > 4096, "{p}: {xsize} bytes of xattrs");
    }
    let meta = mount_erofs(&image, &scratch.join("meta"));
    let root = mount_overlay(
        &format!("{}::{}", meta.dir.display(), objects.display()),
        &scratch.join("root"),
    );
    let x = read_xattrs(&root.dir);
    for (seed, p) in [(1, "d"), (2, "d/ext"), (3, "d/inline"), (4, "d/link")] {
        let xs = &x[Path::new(p)];
        for i in 0..3u8 {
            assert_eq!(xs[&format!("trusted.big{i}")], value(seed, i), "/{p}");
        }
    }
    assert_eq!(fs::read(root.dir.join("d/ext")).unwrap(), content);
    assert_eq!(fs::read(root.dir.join("d/inline")).unwrap(), b"x");
    assert_eq!(
        fs::read_link(root.dir.join("d/link")).unwrap(),
        Path::new("inline")
    );
    for i in 0..20u8 {
        assert_eq!(
            fs::read(root.dir.join(format!("d/small-{i}"))).unwrap(),
            [i]
        );
    }
}
