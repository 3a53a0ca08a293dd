//! genboot: NixOS-style boot generations for any Linux machine.
//!
//! Modules by concern. Only `store`, `profile`, `esp` and `disk` write to
//! disk outside a temporary directory, and each of those writes through named
//! [`failpoint`]s.

pub mod app;
pub mod cli;
pub mod config;
pub mod esp;
pub mod failpoint;
pub mod fsutil;
pub mod gc;
pub mod generation;
pub mod gpt;
pub mod hint;
pub mod host;
pub mod image;
pub mod initrd;
pub mod modules;
pub mod notes;
pub mod profile;
pub mod state;
pub mod store;
pub mod tree;
pub mod units;
