//! The README stays true: the configuration it shows is the tested
//! example, and the CLI tour shows every verb.

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
    genboot::config::SystemConfig::parse(&example, Path::new("examples/system.toml")).unwrap();
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
