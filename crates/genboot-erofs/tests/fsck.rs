//! `fsck.erofs` (erofs-utils) judges every image, and `fsck.erofs --extract`
//! — erofs-utils' own reader, not ours — must give back the source tree:
//! modes, owners, mtimes, sizes, symlink targets, device numbers and the data
//! kept in the image. erofs-utils 1.5 extracts neither xattrs nor hard links,
//! clears setuid/setgid (chmod before chown; `mkfs.erofs`'s own images come
//! out the same) and leaves data-less files empty (it skips unmapped
//! extents); the mount tests check all of those through the kernel.

mod common;

use std::fs;
use std::process::Command;

use common::*;

fn extract_and_compare(name: &str, full: bool) {
    require_root();
    require_tool("fsck.erofs", "erofs-utils");
    let scratch = Scratch::new(name);
    let src = scratch.join("src");
    let objects = scratch.join("objects");
    make_odd_tree(&src, 3000);
    fs::create_dir_all(&objects).unwrap();
    let img = if full {
        import(&src, &Policy::Full)
    } else {
        import(&src, &Policy::Metadata { objects: &objects })
    };
    let image = scratch.join("root.erofs");
    write_image(&img, &image);
    // The directory shapes the tree is built to have: one exactly full
    // block (plain), one block plus an inline tail, the 3000 entries.
    let layout = |p: &str| -> (u64, u64) {
        let out = run(Command::new("dump.erofs")
            .arg(format!("--path={p}"))
            .arg(&image));
        let field = |f: &str| -> u64 {
            out.split(f)
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        (field("Size: "), field("Layout: "))
    };
    assert_eq!(layout("/exact-block"), (4096, 0));
    assert_eq!(layout("/block-and-a-byte"), (4096 + 12 + 53, 2));
    let (many, _) = layout("/many");
    assert!(many > 20 * 4096, "/many: {many} bytes");
    let out = scratch.join("extracted");
    run(Command::new("fsck.erofs")
        .arg(format!("--extract={}", out.display()))
        .arg(&image));
    assert_same(
        &src,
        &out,
        &Compare {
            content: true,
            external: if full {
                External::Content
            } else {
                External::ZerosOrEmpty
            },
            nlink: false,
            xattrs: false,
            setid: false,
            ignore_xattr: &|_| false,
            merged_root: false,
            dir_sizes: false,
        },
    );
}

#[test]
fn fsck_extracts_a_full_image_as_the_source_tree() {
    extract_and_compare("fsck-full", true);
}

#[test]
fn fsck_extracts_a_metadata_image_with_the_source_metadata_and_inline_data() {
    extract_and_compare("fsck-meta", false);
}

#[test]
fn fsck_rejects_a_corrupted_image() {
    // The judge must be able to say no: flip the superblock magic, then an
    // inode's format bits.
    require_tool("fsck.erofs", "erofs-utils");
    let scratch = Scratch::new("fsck-corrupt");
    let mut img = genboot_erofs::Image::new();
    img.add_file(
        "/f",
        genboot_erofs::Meta::new(0o644, 0, 0),
        genboot_erofs::FileData::Bytes(b"x".to_vec()),
    )
    .unwrap();
    let image = scratch.join("bad.erofs");
    write_image(&img, &image);
    fsck(&image);
    let good = fs::read(&image).unwrap();
    for (offset, value) in [(1024usize, 0u8), (1152 + 32, 0xff)] {
        let mut bad = good.clone();
        bad[offset] = value;
        fs::write(&image, &bad).unwrap();
        let st = Command::new("fsck.erofs").arg(&image).output().unwrap();
        assert!(
            !st.status.success(),
            "fsck.erofs accepted a byte {value:#x} at {offset}"
        );
    }
}
