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

// ---- whole-system generations (a `[tree]`, docs/trees.md) ----

/// The content objects of trees (the overlay's data layer).
pub const OBJECTS_DIR: &str = "/var/lib/genboot/store/objects";
/// A tree object's metadata image (EROFS), in the object.
pub const TREE_IMAGE: &str = "root.erofs";
/// The modules the initrd of a generation with a tree carries besides
/// `[initrd] modules` (with their closure): genboot-init mounts the tree
/// with them.
pub const TREE_INITRD_MODULES: &[&str] = &["overlay", "erofs", "loop"];
/// Package-manager state that describes `/usr`: the build rules move each
/// path `/var/X` into the image at [`PACKAGE_STATE_DIR`]`/X` and leave an
/// empty mount point; genboot-init binds the image's copy there, read-only.
pub const PACKAGE_STATE: &[&str] = &[
    "/var/lib/dpkg",
    "/var/lib/apt/extended_states",
    "/var/cache/debconf/templates.dat",
    "/var/lib/ucf",
    "/var/lib/systemd/deb-systemd-helper-enabled",
    "/var/lib/systemd/deb-systemd-helper-masked",
    "/var/lib/systemd/deb-systemd-user-helper-enabled",
];
/// Where [`PACKAGE_STATE`] lives in the image.
pub const PACKAGE_STATE_DIR: &str = "/usr/lib/genboot/var";
/// Each generation's `/etc` layer on the root partition:
/// `<ETC_LAYERS_DIR>/<generation's store name>/{upper,work}`.
pub const ETC_LAYERS_DIR: &str = "/var/lib/genboot/etc";
/// The machine's identity, the same in every generation: `machine-id`,
/// `ssh/ssh_host_*`.
pub const IDENTITY_DIR: &str = "/var/lib/genboot/identity";
/// The paths kept on the root partition across generations when
/// `boot.json` names none (`org.genboot.v1.tree.persist`).
pub const DEFAULT_PERSIST: &[&str] = &["/home", "/root", "/srv"];
/// Why `p` cannot be a persistent path (`[tree] persist`, boot.json's
/// `tree.persist`), if it cannot: it must be absolute and plain (no empty,
/// `.` or `..` component), and not a place genboot-init mounts otherwise
/// (`/`, `/etc`, `/usr`, `/var`, the API file systems, `/tmp`) or one below
/// them. The builder refuses such a path and genboot-init refuses a
/// boot.json that holds one.
pub fn persist_problem(p: &str) -> Option<&'static str> {
    let Some(rest) = p.strip_prefix('/') else {
        return Some("it is not absolute");
    };
    if rest.is_empty() {
        return Some("it is the root itself");
    }
    if rest
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Some("it has an empty, . or .. component");
    }
    let top = rest.split('/').next().unwrap_or_default();
    if matches!(
        top,
        "etc" | "usr" | "var" | "proc" | "sys" | "dev" | "run" | "tmp"
    ) {
        return Some("genboot-init mounts it (or what holds it) otherwise");
    }
    None
}

/// Where genboot-init leaves the root partition when it boots a tree: in
/// [`RUN_DIR`], so stage 2 sees it there (read-only).
pub const ROOT_PARTITION: &str = "/run/genboot/sysroot";

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
        assert_eq!(OBJECTS_DIR, format!("{STORE_DIR}/objects"));
        assert_eq!(ETC_LAYERS_DIR, format!("{STATE_DIR}/etc"));
        assert_eq!(IDENTITY_DIR, format!("{STATE_DIR}/identity"));
        assert!(ROOT_PARTITION.starts_with(&format!("{RUN_DIR}/")));
        assert!(PACKAGE_STATE.iter().all(|p| p.starts_with("/var/")));
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0x9f, 0xa0, 0xff]), "009fa0ff");
        assert_eq!(hex(&[]), "");
    }
}
