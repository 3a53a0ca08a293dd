//! Bad configurations: each gives one error naming the file, the line and
//! column, the key and a hint, for `build` and `switch` alike, and changes
//! nothing below `--root`.

use crate::support::*;
use std::fs;

#[test]
fn bad_input_gives_one_clear_error_and_changes_nothing() {
    let t = SyntheticTree::new(&basic_modules());
    let k = &t.k;
    let root = t.root();
    let good = write_config(&t.dir.path().join("good"), k, &[], "");
    ok(run_with_activator(
        &root,
        &["switch", "--config", good.to_str().unwrap()],
    ));
    let before = snapshot(&root);
    let good_text = fs::read_to_string(&good).unwrap();

    let case = |name: &str, text: Option<String>, expect: &[&str]| {
        let path = t.dir.path().join(format!("{name}.toml"));
        if let Some(text) = text {
            fs::write(&path, text).unwrap();
        }
        for verb in ["build", "switch"] {
            let o = run_with_activator(&root, &[verb, "--config", path.to_str().unwrap()]);
            assert!(!o.status.success(), "{name}: {verb} succeeded");
            let e = stderr(&o);
            for x in expect {
                assert!(e.contains(x), "{name}: {verb}: expected {x:?} in:\n{e}");
            }
            assert!(e.contains("Hint:"), "{name}: no hint in:\n{e}");
            assert_eq!(before, snapshot(&root), "{name}: {verb} changed the state");
        }
    };
    case(
        "missing",
        None,
        &["missing.toml", "cannot read configuration"],
    );
    case(
        "syntax",
        Some(good_text.replace("[system]", "[system")),
        &["syntax.toml:13:8: unclosed table", "fix the TOML syntax"],
    );
    case(
        "syntax2",
        Some(format!("{good_text}\nfoo = \n")),
        &["syntax2.toml:"],
    );
    case(
        "unknown",
        Some(good_text.replace("[system]", "[system]\nlabl = \"x\"")),
        &["unknown.toml:", "unknown field `labl`", "key `system.labl`"],
    );
    case(
        "wrongtype",
        Some(good_text.replace("params = [\"console=ttyS0\"]", "params = \"console=ttyS0\"")),
        &["wrongtype.toml:", "key `kernel.params`", "expected"],
    );
    case(
        "nokernel",
        Some(good_text.replace(&k.image.display().to_string(), "/nonexistent/vmlinuz")),
        &["/nonexistent/vmlinuz", "[kernel] image"],
    );
    let not_bz = t.dir.path().join("not-a-kernel");
    fs::write(&not_bz, vec![0u8; 4096]).unwrap();
    case(
        "notbz",
        Some(good_text.replace(&k.image.display().to_string(), not_bz.to_str().unwrap())),
        &["not a bzImage", "HdrS"],
    );

    // A kernel whose release string would make a store name with '/' or '..'.
    let mut img = fs::read(&k.image).unwrap();
    let off = u16::from_le_bytes([img[0x20E], img[0x20F]]) as usize + 0x200;
    img[off..off + 5].copy_from_slice(b"../..");
    let evil = t.dir.path().join("evil-kernel");
    fs::write(&evil, img).unwrap();
    case(
        "evilname",
        Some(good_text.replace(&k.image.display().to_string(), evil.to_str().unwrap())),
        &["is not allowed", "'..'"],
    );
    let mut img = fs::read(&k.image).unwrap();
    img[off + 1] = b'/';
    let slash = t.dir.path().join("slash-kernel");
    fs::write(&slash, img).unwrap();
    case(
        "slashname",
        Some(good_text.replace(&k.image.display().to_string(), slash.to_str().unwrap())),
        &["is not allowed", "'/'"],
    );
}
