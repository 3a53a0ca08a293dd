//! The fast tier: what `cargo test` runs as a normal user in seconds — no
//! root, no kernel package, no QEMU, no tool beyond a shell. The real
//! `genboot` CLI on synthetic inputs (a bzImage header with an EFI stub,
//! `.ko` files holding only a `.modinfo`, [`support::SyntheticTree`]), and
//! the checks that keep the docs true. The full tiers are `tests/it` and
//! `tests/e2e` (`tools/test`).

#[path = "../support/mod.rs"]
mod support;

// CLI arguments genboot refuses before it reads or writes anything.
mod cli_args;
// Bad system.toml files: one clear error each, nothing changed.
mod config;
// The README and docs/: the tested example, every verb, no stale paths.
mod docs;
// The one-way layers of src/ and no import circles.
mod layers;
// Module trees, good and bad, built by `genboot build`.
mod modules;
// /etc/genboot/system.toml below --root, its paths inside the root, the
// newest installed kernel.
mod system_config;
