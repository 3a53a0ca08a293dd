//! `boot.json`: the generation's description, readable by any bootspec
//! consumer (`org.nixos.bootspec.v1`) plus genboot's own namespace.
//!
//! The generation number is not in here: a generation object is immutable
//! and content-addressed, and the same object may be profile generation 3
//! and 7. The number lives in the profile link and in the ESP entry.

use serde::{Deserialize, Serialize};
use std::path::Path;

pub const BOOTSPEC_KEY: &str = "org.nixos.bootspec.v1";
pub const GENBOOT_KEY: &str = "org.genboot.v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootJson {
    #[serde(rename = "org.nixos.bootspec.v1")]
    pub bootspec: BootspecV1,
    #[serde(rename = "org.genboot.v1")]
    pub genboot: GenbootV1,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootspecV1 {
    pub system: String,
    /// `<toplevel>/init`.
    pub init: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    pub kernel: String,
    /// Everything on the command line except `init=`.
    pub kernel_params: Vec<String>,
    pub label: String,
    pub toplevel: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenbootV1 {
    /// Format version of the generation object.
    pub format: u32,
    pub kernel_release: String,
    /// The configured initrd modules (the closure is in the initrd manifest).
    pub initrd_modules: Vec<String>,
    /// The kernel-modules object (`lib/modules/<release>`, `lib/firmware`).
    pub kernel_modules: Option<String>,
    pub root: RootSpec,
    /// The stage-2 init on the root file system that `<toplevel>/init` names.
    pub stage2_init: String,
    /// Boot counting tries, when on.
    pub tries: Option<u32>,
    /// The generation's whole-system tree, when it has one (absent, not
    /// null, otherwise: generations without a tree keep their bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<TreeRef>,
}

/// The tree object of a generation, as the booted system sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TreeRef {
    /// `/var/lib/genboot/store/<hash>-rootfs-<label>`.
    pub object: String,
    /// Its metadata image, `<object>/root.erofs`.
    pub image: String,
    /// SHA-256 of the image, for a check at boot.
    pub image_sha256: String,
    /// The content objects the image's files redirect to.
    pub objects: String,
    /// `[tree] persist`, when set (genboot-init's default otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootSpec {
    pub device: String,
    pub fstype: String,
    pub options: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BootspecError {
    #[error("cannot read {path}: {cause}")]
    Read {
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} is not a genboot boot.json: {cause}")]
    Parse {
        path: std::path::PathBuf,
        cause: serde_json::Error,
    },
}

impl crate::hint::Hint for BootspecError {
    fn hint(&self) -> Option<String> {
        match self {
            BootspecError::Read { .. } => None,
            BootspecError::Parse { .. } => {
                Some("the generation may be damaged; run `genboot verify`".into())
            }
        }
    }
}

impl BootJson {
    /// The exact bytes genboot writes: pretty JSON, keys in declaration
    /// order, trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("boot.json serialises");
        v.push(b'\n');
        v
    }

    pub fn read(path: &Path) -> Result<BootJson, BootspecError> {
        let data = std::fs::read(path).map_err(|cause| BootspecError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        serde_json::from_slice(&data).map_err(|cause| BootspecError::Parse {
            path: path.to_path_buf(),
            cause,
        })
    }
}
