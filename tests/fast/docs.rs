//! The README and `docs/` stay true: the configuration they show is the
//! tested example, the CLI tour shows every verb, and every repository
//! path they name (tools, docs, tests, benches, examples) exists.

use crate::support::repo;
use std::fs;
use std::path::Path;

#[test]
fn readme_example_is_the_tested_example_and_parses() {
    let example = fs::read_to_string(repo().join("examples/system.toml")).unwrap();
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains(&example),
        "README.md must show examples/system.toml verbatim"
    );
    // Its kernel is the newest installed one: a root with a kernel to find.
    let t = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(t.path()).unwrap();
    let release = "6.1.0-50-amd64";
    fs::create_dir_all(root.join("boot")).unwrap();
    fs::create_dir_all(root.join("lib/modules").join(release)).unwrap();
    fs::write(root.join("boot/vmlinuz-6.1.0-50-amd64"), b"k").unwrap();
    let place = genboot::config::Place {
        root: &root,
        in_root: false,
    };
    let cfg =
        genboot::config::SystemConfig::parse_in(&example, Path::new("examples/system.toml"), place)
            .unwrap();
    let modules = &cfg.kernel.files().unwrap().modules;
    assert_eq!(modules, &root.join("lib/modules").join(release));
}

#[test]
fn readme_cli_tour_shows_every_verb() {
    use clap::CommandFactory;
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let tour = readme
        .split("## CLI tour")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README.md has a CLI tour section");
    for verb in genboot::cli::Cli::command().get_subcommands() {
        let name = verb.get_name();
        assert!(
            tour.contains(&format!("genboot {name}")),
            "README's CLI tour does not show `genboot {name}`"
        );
    }
}
/// The README and every page of `docs/`, with their paths.
fn pages() -> Vec<(String, String)> {
    let mut pages = vec![("README.md".to_string(), repo().join("README.md"))];
    for e in fs::read_dir(repo().join("docs")).expect("docs/ exists") {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            let name = format!("docs/{}", p.file_name().unwrap().to_string_lossy());
            pages.push((name, p));
        }
    }
    pages
        .into_iter()
        .map(|(name, p)| (name, fs::read_to_string(p).unwrap()))
        .collect()
}

/// Repository paths a page names: words starting with one of these
/// folders, cut at the first character no path here holds. Placeholders
/// (`<target>`), globs and what the tools make (`fuzz/crashes/`) are left
/// out; `src/` and `init/` are described as they are becoming.
fn named_paths(text: &str) -> Vec<String> {
    const ROOTS: [&str; 7] = [
        "tools/",
        "docs/",
        "tests/",
        "bench/",
        "fuzz/",
        "examples/",
        ".ci/",
    ];
    let mut out = Vec::new();
    for (i, _) in text.char_indices() {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || "_-./".contains(c)) {
            continue;
        }
        let Some(root) = ROOTS.iter().find(|r| text[i..].starts_with(*r)) else {
            continue;
        };
        let len = text[i..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || "_-./+".contains(c)))
            .unwrap_or(text.len() - i);
        let path = text[i..i + len].trim_end_matches(['.', ',']);
        let rest = &text[i + len..];
        if rest.starts_with(['<', '*', '…']) || path.starts_with("fuzz/crashes") || path == *root
        {
            continue;
        }
        out.push(path.to_string());
    }
    out
}

#[test]
fn every_path_the_docs_name_exists_and_none_names_qemu_folder() {
    let mut missing = Vec::new();
    for (page, text) in pages() {
        for path in named_paths(&text) {
            if !repo().join(&path).exists() {
                missing.push(format!("{page}: {path}"));
            }
        }
        // The tooling folder was `qemu/`; it is `tools/` now.
        for (i, _) in text.match_indices("qemu/") {
            let before = text[..i].chars().next_back();
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_') {
                missing.push(format!("{page}: names the old folder qemu/ (now tools/)"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the docs name paths that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn named_paths_are_cut_where_prose_goes_on() {
    assert_eq!(
        named_paths(
            "run `tools/fetch-kernels`, then tools/test. See docs/formats.md#store; fuzz/crashes/x"
        ),
        ["tools/fetch-kernels", "tools/test", "docs/formats.md"]
    );
    assert!(named_paths("target/tools/x and fuzz/seeds/<target>/").is_empty());
}
