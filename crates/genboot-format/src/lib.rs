//! The contract between genboot's builder (`genboot`) and the initrd's
//! PID 1 (`genboot-init`): everything one side writes and the other reads,
//! defined once so the two cannot drift apart.
//!
//! - [`storehash`]: the store's canonical serialisation and hash;
//! - [`store_name`]: store object names, `<hash>-<name>`, and [`StoreHash`];
//! - [`manifest`]: the initrd manifest the builder writes for the activator;
//! - [`cmdline`]: the kernel command line as the kernel splits it, the
//!   `genboot.*` switches, `root=` ([`cmdline::RootSpec`]) and the rules a
//!   configured kernel parameter must follow;
//! - [`module_name`]: module names ([`module_name::ModName`]), the module
//!   file suffixes, and the one alias matcher (kmod's rules);
//! - the paths, the generation format version and [`hex`] below.
//!
//! Only `std` and `sha2`: PID 1 links this crate and stays small. It parses
//! bytes from disks and the command line, so outside tests it may not index,
//! unwrap or panic.
//!
//! [`StoreHash`]: store_name::StoreHash

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

pub mod cmdline;
pub mod manifest;
pub mod module_name;
pub mod store_name;
pub mod storehash;

/// genboot's state directory as the booted system sees it (the builder
/// works below `--root`).
pub const STATE_DIR: &str = "/var/lib/genboot";
/// The store as the booted system sees it: store paths in `boot.json`, in
/// boot entries (`init=`) and in store symlinks use this form.
pub const STORE_DIR: &str = "/var/lib/genboot/store";
/// Where genboot-init leaves what it tells the booted system (a tmpfs).
pub const RUN_DIR: &str = "/run/genboot";
/// Where genboot-init records the booted generation's store path, one line
/// (in [`RUN_DIR`]); the builder reads it to protect the running generation.
pub const BOOTED: &str = "/run/genboot/booted";
/// Where genboot-init writes the times of its steps, JSON (in [`RUN_DIR`]).
pub const TIMINGS: &str = "/run/genboot/timings.json";
/// The generation format (`org.genboot.v1.format` in `boot.json`) the
/// builder writes and the activator reads.
pub const GENERATION_FORMAT: u32 = 1;
/// A generation's store object is named this followed by the kernel
/// release: `<hash>-genboot-system-<release>`.
pub const GENERATION_NAME_PREFIX: &str = "genboot-system-";

/// Hex of a digest, lower case.
pub fn hex(bytes: &[u8]) -> String {
    let digit = |n: u8| char::from_digit(u32::from(n), 16).unwrap_or('0');
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(digit(b >> 4));
        s.push(digit(b & 15));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_nest_as_documented() {
        assert_eq!(STORE_DIR, format!("{STATE_DIR}/store"));
        assert_eq!(BOOTED, format!("{RUN_DIR}/booted"));
        assert_eq!(TIMINGS, format!("{RUN_DIR}/timings.json"));
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0x9f, 0xa0, 0xff]), "009fa0ff");
        assert_eq!(hex(&[]), "");
    }
}
