//! genboot-init: the initrd's PID 1. The library holds everything the
//! activator does, behind the [`sys`] seam so the boot sequence is tested
//! without root; `main.rs` only wires the real syscalls in.
//!
//! What the builder writes and this reads (store hashes and names, the
//! initrd manifest, the command line, module names and aliases) is defined
//! once, in the `genboot-format` crate, which both sides use. `inroot`,
//! `json` and `probe` are public for the fuzz harness (`fuzz/`), which feeds
//! them hostile bytes; nothing else uses them.

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo
    )
)]

pub mod activate;
pub mod inroot;
pub mod json;
pub mod probe;
pub mod sys;
