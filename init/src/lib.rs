//! genboot-init: the initrd's PID 1. The library holds everything the
//! activator does, behind the [`sys`] seam so the boot sequence is tested
//! without root; `main.rs` only wires the real syscalls in.
//!
//! `manifest` and `storehash` are also used by the builder (`genboot`), so
//! the two sides cannot drift apart.

pub mod activate;
pub mod alias;
pub mod cmdline;
pub mod json;
pub mod manifest;
pub mod probe;
pub mod storehash;
pub mod sys;
