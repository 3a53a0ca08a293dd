//! genboot-init: the initrd's PID 1. The library holds everything the
//! activator does, behind the [`sys`] seam so the boot sequence is tested
//! without root; `main.rs` only wires the real syscalls in.
//!
//! `manifest` and `storehash` are also used by the builder (`genboot`), so
//! the two sides cannot drift apart; `cmdline` is public so the builder and
//! the installer can check `root=` and the `genboot.*` switches the way the
//! activator reads them. `alias`, `json` and `probe` are public for the fuzz
//! harness (`fuzz/`), which feeds them hostile bytes; nothing else uses them.

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
pub mod alias;
pub mod cmdline;
pub mod inroot;
pub mod json;
pub mod manifest;
pub mod probe;
pub mod storehash;
pub mod sys;
