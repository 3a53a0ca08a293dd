//! genboot: NixOS-style boot generations for any Linux machine.
//!
//! Modules by concern. Only `store`, `profile`, `esp` and `disk` write to
//! disk outside a temporary directory, and each of those writes through named
//! [`failpoint`]s.

pub mod bootspec;
pub mod build;
pub mod cli;
pub mod config;
pub mod disk;
pub mod esp;
pub mod failpoint;
pub mod gc;
pub mod initrd;
pub mod kernel;
pub mod modules;
pub mod profile;
pub mod state;
pub mod store;
pub mod tree;
