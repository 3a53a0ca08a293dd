//! Arguments genboot refuses before it touches anything: each is an error
//! that names the argument, and `--root` stays empty.

use crate::support::*;

#[test]
fn bad_arguments_are_refused_naming_them_and_write_nothing() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let img = t.path().join("x.img");
    let cases: [(&[&str], &str); 6] = [
        (&["frobnicate"], "frobnicate"),
        (&["set-default", "three"], "three"),
        (&["delete"], "<NUMBERS>"),
        (&["build"], "--config"),
        (&["image", "--config", "system.toml"], "--output"),
        (
            &[
                "--esp",
                "/boot/efi",
                "--image",
                img.to_str().unwrap(),
                "install",
            ],
            "--image",
        ),
    ];
    for (args, named) in cases {
        let o = run(&root, args);
        let e = stderr(&o);
        assert!(!o.status.success(), "genboot {args:?} succeeded:\n{e}");
        assert!(
            e.contains(named),
            "genboot {args:?}: the error should name {named}:\n{e}"
        );
        let left: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().collect();
        assert!(
            left.is_empty(),
            "genboot {args:?} wrote below --root: {left:?}"
        );
        assert!(!img.exists(), "genboot {args:?} wrote {}", img.display());
    }
}
