//! Every path genboot writes on an ESP, in one place (Boot Loader
//! Specification Type #1):
//!
//! ```text
//! EFI/genboot/<hash>-linux-<kver>.efi      content-addressed, shared
//! EFI/genboot/<hash>-initrd-<kver>.img
//! loader/entries/genboot-<N>[+<left>[-<done>]].conf, genboot-<N>-recovery.conf
//! loader/loader.conf, loader/entries.srel
//! EFI/systemd/systemd-bootx64.efi, EFI/BOOT/BOOTX64.EFI   (--install-loader)
//! ```
//!
//! Paths are ESP-relative, `/`-separated, without a leading slash. Names
//! stay in `[A-Za-z0-9+_.-]`, lower case where genboot chooses them.

/// The boot menu entries.
pub const ENTRIES_DIR: &str = "loader/entries";
/// Kernels and initrds, named by the store hash of their object.
pub const FILES_DIR: &str = "EFI/genboot";
/// systemd-boot's configuration: default entry, timeout, editor.
pub const LOADER_CONF: &str = "loader/loader.conf";
/// Says the entries directory holds Type #1 entries.
pub const ENTRIES_SREL: &str = "loader/entries.srel";
/// What [`ENTRIES_SREL`] holds.
pub const ENTRIES_SREL_CONTENT: &[u8] = b"type1\n";
/// Where systemd-boot goes when genboot installs it (its own path, and the
/// removable-media fallback the firmware starts without a boot entry).
pub const LOADER_PATHS: [&str; 2] = ["EFI/systemd/systemd-bootx64.efi", "EFI/BOOT/BOOTX64.EFI"];
/// Suffix of files being written; leftovers of a crash are removed.
pub const TMP_SUFFIX: &str = ".genboot-tmp";
/// Every directory genboot writes to (the root included), for the FAT
/// volume's repair of what an interrupted run left.
pub const DIRS: [&str; 7] = [
    "",
    "EFI",
    FILES_DIR,
    "EFI/BOOT",
    "EFI/systemd",
    "loader",
    ENTRIES_DIR,
];
/// The directories an install creates before its first write.
pub const INSTALL_DIRS: [&str; 2] = [FILES_DIR, ENTRIES_DIR];

/// `loader/entries/<file>`.
pub fn entry_path(file: &str) -> String {
    format!("{ENTRIES_DIR}/{file}")
}

/// `EFI/genboot/<file>`.
pub fn file_path(file: &str) -> String {
    format!("{FILES_DIR}/{file}")
}

/// The temporary name `path` is written under before it is renamed.
pub fn tmp_path(path: &str) -> String {
    format!("{path}{TMP_SUFFIX}")
}

/// The ESP copy of a kernel: `EFI/genboot/<hash>-linux-<release>.efi`.
pub fn kernel_path(hash: &str, release: &str) -> String {
    file_path(&format!("{hash}-linux-{}.efi", file_safe(release)))
}

/// The ESP copy of an initrd: `EFI/genboot/<hash>-initrd-<release>.img`.
pub fn initrd_path(hash: &str, release: &str) -> String {
    file_path(&format!("{hash}-initrd-{}.img", file_safe(release)))
}

/// The directory of an ESP path (`""` for the root).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

/// ESP file names stay in `[A-Za-z0-9+_.-]` whatever a kernel release
/// string holds (FAT, firmware and the BLS all cope with these).
fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_in_the_safe_set() {
        assert_eq!(file_safe("6.1.0-50-amd64"), "6.1.0-50-amd64");
        assert_eq!(file_safe("6.9.0+ (custom)/x"), "6.9.0+__custom__x");
        assert_eq!(kernel_path("ab", "6.9 x"), "EFI/genboot/ab-linux-6.9_x.efi");
        assert_eq!(parent(LOADER_PATHS[1]), "EFI/BOOT");
        assert_eq!(parent("x"), "");
    }
}
