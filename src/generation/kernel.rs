//! Kernel images: the release string from the bzImage header, and the check
//! that the image is an EFI-stub PE the firmware can start.

use crate::hint::Hint;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot read kernel image {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("[kernel] image {path} cannot be used: {why}")]
    NotAFile { path: PathBuf, why: String },
    #[error("{path} is not a bzImage kernel: {why}")]
    NotBzImage { path: PathBuf, why: String },
    #[error("{path}: the kernel release {release:?} cannot name a store object: {cause}")]
    BadRelease {
        path: PathBuf,
        release: String,
        cause: crate::store::StoreError,
    },
    #[error("{path} has no EFI stub: {why}")]
    NoEfiStub { path: PathBuf, why: String },
}

impl Hint for KernelError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            KernelError::Read { .. } => {
                "[kernel] image must name a bzImage, e.g. /boot/vmlinuz-6.1.0-50-amd64".into()
            }
            KernelError::NotAFile { .. } => "[kernel] image must name a bzImage file (a regular file of at most 256 MiB), e.g. /boot/vmlinuz-6.1.0-50-amd64".into(),
            KernelError::NotBzImage { .. } => "[kernel] image must name a bzImage such as /boot/vmlinuz-<release> (not a vmlinux ELF, not a compressed archive)".into(),
            KernelError::BadRelease { cause, .. } => return cause.hint(),
            KernelError::NoEfiStub { .. } => "systemd-boot starts kernels as EFI programs; use a kernel built with CONFIG_EFI_STUB (every Debian kernel is)".into(),
        })
    }
}

/// What genboot needs to know about a kernel image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    /// `uname -r` of the kernel, e.g. `6.1.0-50-amd64`.
    pub release: String,
}

/// The largest kernel image genboot reads: 256 MiB. Debian's bzImages are
/// 8 to 10 MB, and the firmware loads the whole image into memory; the cap
/// keeps `[kernel] image = "/dev/zero"` or a runaway file from exhausting
/// memory.
pub const MAX_KERNEL_BYTES: u64 = 256 << 20;

/// Read `path`: a regular file (symlinks followed) of at most
/// [`MAX_KERNEL_BYTES`].
fn read_image(path: &Path) -> Result<Vec<u8>, KernelError> {
    use crate::modules::input::{read_regular, InputError};
    read_regular(path, true, MAX_KERNEL_BYTES).map_err(|e| match e {
        InputError::Io(cause) => KernelError::Read {
            path: path.to_path_buf(),
            cause,
        },
        other => KernelError::NotAFile {
            path: path.to_path_buf(),
            why: other.to_string(),
        },
    })
}

/// Copy the kernel image `from` to `to` with the checks of [`inspect`]
/// (regular file, at most [`MAX_KERNEL_BYTES`]).
pub fn copy_image(from: &Path, to: &Path) -> std::io::Result<()> {
    let data = read_image(from).map_err(|e| std::io::Error::other(e.with_hint()))?;
    std::fs::write(to, data)
}

/// Read the release from the bzImage header and check the EFI stub.
pub fn inspect(path: &Path) -> Result<KernelInfo, KernelError> {
    let data = read_image(path)?;
    let release = release_from_header(&data).map_err(|why| KernelError::NotBzImage {
        path: path.to_path_buf(),
        why,
    })?;
    // The release names store objects and ESP files: refuse '/', '..' and
    // the like here, before anything else reads the module tree.
    crate::store::check_name(&format!("linux-{release}")).map_err(|cause| {
        KernelError::BadRelease {
            path: path.to_path_buf(),
            release: release.clone(),
            cause,
        }
    })?;
    check_efi_stub(&data).map_err(|why| KernelError::NoEfiStub {
        path: path.to_path_buf(),
        why,
    })?;
    Ok(KernelInfo { release })
}

/// The x86 boot protocol: "HdrS" at 0x202, the offset of the version string
/// (minus 0x200) as u16 at 0x20E; the release is its first word.
pub fn release_from_header(data: &[u8]) -> Result<String, String> {
    if data.len() < 0x210 {
        return Err(format!(
            "only {} bytes, too short for a boot header",
            data.len()
        ));
    }
    if &data[0x202..0x206] != b"HdrS" {
        return Err("no \"HdrS\" boot header signature at offset 0x202".into());
    }
    let off = u16::from_le_bytes([data[0x20E], data[0x20F]]) as usize + 0x200;
    if off >= data.len() {
        return Err(format!(
            "version string offset {off:#x} lies past the end of the file (truncated?)"
        ));
    }
    let end = data[off..]
        .iter()
        .take(256)
        .position(|&b| b == 0)
        .ok_or("version string is not terminated (truncated?)")?;
    let text =
        std::str::from_utf8(&data[off..off + end]).map_err(|_| "version string is not text")?;
    let release = text.split_whitespace().next().unwrap_or("");
    if release.is_empty() || !release.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("version string {text:?} has no release"));
    }
    Ok(release.to_string())
}

fn check_efi_stub(data: &[u8]) -> Result<(), String> {
    let pe = goblin::pe::PE::parse(data).map_err(|e| format!("not a PE image ({e})"))?;
    let subsystem = pe
        .header
        .optional_header
        .map(|h| h.windows_fields.subsystem)
        .ok_or("PE image has no optional header")?;
    // IMAGE_SUBSYSTEM_EFI_APPLICATION
    if subsystem != 10 {
        return Err(format!(
            "PE subsystem is {subsystem}, not an EFI application (10)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_without_signature_is_refused() {
        let data = vec![0u8; 0x400];
        assert!(release_from_header(&data).unwrap_err().contains("HdrS"));
    }

    #[test]
    fn truncated_header_is_refused() {
        assert!(release_from_header(b"MZ")
            .unwrap_err()
            .contains("too short"));
    }

    #[test]
    fn release_is_first_word_of_version_string() {
        let mut data = vec![0u8; 0x600];
        data[0x202..0x206].copy_from_slice(b"HdrS");
        data[0x20E..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        let s = b"6.1.0-50-amd64 (debian-kernel@lists.debian.org) #1 SMP";
        data[0x500..0x500 + s.len()].copy_from_slice(s);
        assert_eq!(release_from_header(&data).unwrap(), "6.1.0-50-amd64");
    }
}
