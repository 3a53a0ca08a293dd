//! `system.toml`: the declarative configuration of one system.
//!
//! Relative paths in the file are relative to the directory that holds it.
//! Unknown keys and wrong types are errors naming the file, line, column,
//! key and what was expected.

use genboot_format::cmdline::{param_problem, RootSpec};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {what}{key}", key = key_suffix(.key))]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        key: Option<String>,
        what: String,
        hint: String,
    },
    #[error("{path}{at}: [{section}] {key}: {what}", at = at_suffix(.at))]
    Invalid {
        path: PathBuf,
        /// Line and column of the value, when it can be found in the file.
        at: Option<(u32, u32)>,
        section: &'static str,
        key: &'static str,
        what: String,
        hint: String,
    },
}

impl crate::hint::Hint for ConfigError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            ConfigError::Read { .. } => {
                "pass an existing file with --config FILE (see the example in README.md)".into()
            }
            ConfigError::Syntax { hint, .. } | ConfigError::Invalid { hint, .. } => hint.clone(),
        })
    }
}

fn at_suffix(at: &Option<(u32, u32)>) -> String {
    match at {
        Some((line, column)) => format!(":{line}:{column}"),
        None => String::new(),
    }
}

/// Line and column (from 1) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// Where `[section] key` (element `index` of an array value) is written.
fn locate(text: &str, section: &str, key: &str, index: Option<usize>) -> Option<(u32, u32)> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let (_, sec) = doc.get_ref().iter().find(|(k, _)| k.get_ref() == section)?;
    let DeValue::Table(table) = sec.get_ref() else {
        return None;
    };
    let (_, value) = table.iter().find(|(k, _)| k.get_ref() == key)?;
    let span = match (index, value.get_ref()) {
        (Some(i), DeValue::Array(items)) => items.get(i)?.span(),
        _ => value.span(),
    };
    let (line, column) = line_column(text, span.start);
    Some((u32::try_from(line).ok()?, u32::try_from(column).ok()?))
}

fn key_suffix(key: &Option<String>) -> String {
    match key {
        Some(k) => format!(" (key `{k}`)"),
        None => String::new(),
    }
}

/// Initrd compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
    Xz,
    None,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::None => "none",
        })
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KernelSection {
    /// The kernel image (bzImage with EFI stub), e.g. `/boot/vmlinuz-6.1.0-50-amd64`.
    /// With a `[tree]` and without `image`/`modules`, the tree's kernel.
    pub image: Option<PathBuf>,
    /// The module tree, e.g. `/lib/modules/6.1.0-50-amd64`.
    pub modules: Option<PathBuf>,
    /// Which of the tree's kernels (`/boot/vmlinuz-<release>`), when it has
    /// several; only with a `[tree]` and without `image`/`modules`.
    pub release: Option<String>,
    /// Extra kernel command-line parameters.
    #[serde(default)]
    pub params: Vec<String>,
}

/// Where a `[tree]` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TreeSourceKind {
    /// Built by mmdebstrap from a package list.
    Mmdebstrap,
    /// An existing directory (debootstrap, mkosi, a container export).
    Dir,
}

/// `[tree]`: the operating-system tree of the generation (issue 14).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeSection {
    pub source: TreeSourceKind,
    /// mmdebstrap: the Debian suite, e.g. `bookworm`.
    pub suite: Option<String>,
    /// mmdebstrap: `minbase` (default), `required`, `important`, `standard`.
    pub variant: Option<String>,
    /// mmdebstrap: a mirror URL or one-line apt source, or a list of them;
    /// absent: this machine's apt sources for the suite.
    #[serde(default, deserialize_with = "one_or_many")]
    pub mirror: Vec<String>,
    /// mmdebstrap: packages to install (with their dependencies).
    #[serde(default)]
    pub packages: Vec<String>,
    /// mmdebstrap: executables run as customize hooks with the tree as `$1`.
    #[serde(default)]
    pub customize: Vec<PathBuf>,
    /// mmdebstrap: extra `--dpkgopt`s and `--aptopt`s, e.g.
    /// `"path-exclude=/usr/share/doc/*"`.
    #[serde(default)]
    pub dpkgopts: Vec<String>,
    #[serde(default)]
    pub aptopts: Vec<String>,
    /// dir: the tree to import (only read).
    pub path: Option<PathBuf>,
    /// Files' mtimes are clamped to it, and mmdebstrap builds with it as
    /// `SOURCE_DATE_EPOCH`. mmdebstrap: [`DEFAULT_EPOCH`] when absent; dir:
    /// absent keeps the tree's mtimes.
    pub source_date_epoch: Option<i64>,
    /// `/etc/hostname` of the image (default `localhost`).
    pub hostname: Option<String>,
}

/// `SOURCE_DATE_EPOCH` of an mmdebstrap tree without `source_date_epoch`:
/// 2025-01-01 00:00:00 UTC. A fixed value, so the same file gives the same
/// tree; not 0 or 1, which tools read as "no date" (shadow's last password
/// change of day 0 means "change it at the next login").
pub const DEFAULT_EPOCH: i64 = 1_735_689_600;

/// A string or a list of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = a.next_element::<String>()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitrdSection {
    /// Modules the initrd loads (with their dependencies).
    #[serde(default)]
    pub modules: Vec<String>,
    #[serde(default)]
    pub compression: Compression,
    /// Compression level (zstd 1–19, gzip 1–9, xz 0–9); a per-format default when absent.
    pub level: Option<i32>,
    /// A firmware file named by a module but missing is an error instead of a warning.
    #[serde(default)]
    pub strict_firmware: bool,
    /// The activator binary to put at `/init`; found next to `genboot` when absent.
    pub activator: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootSection {
    /// `PARTUUID=…`, `UUID=…`, `LABEL=…` or a `/dev/…` path.
    pub device: String,
    #[serde(default = "default_fstype")]
    pub fstype: String,
    /// Mount options, e.g. `rw` or `ro,noatime`.
    #[serde(default = "default_root_options")]
    pub options: String,
}

fn default_fstype() -> String {
    "ext4".into()
}
fn default_root_options() -> String {
    "rw".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemSection {
    /// The menu title of the generations built from this file.
    pub label: String,
    /// The stage-2 init on the booted root file system.
    #[serde(default = "default_init")]
    pub init: String,
}

fn default_init() -> String {
    "/sbin/init".into()
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BootSection {
    /// Boot counting: tries before systemd-boot falls back. Off when absent.
    pub tries: Option<u32>,
    /// Keep at most this many newest generations on the ESP.
    pub limit: Option<u32>,
    /// systemd-boot menu timeout in seconds.
    pub timeout: Option<u32>,
    /// The mounted ESP to install to (else found like bootctl does).
    pub esp: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    #[serde(default)]
    pub kernel: KernelSection,
    #[serde(default = "default_initrd")]
    pub initrd: InitrdSection,
    pub root: RootSection,
    pub system: SystemSection,
    #[serde(default)]
    pub boot: BootSection,
    pub tree: Option<TreeSection>,
    /// The file this was read from (not part of the TOML).
    #[serde(skip)]
    pub source: PathBuf,
}

fn default_initrd() -> InitrdSection {
    InitrdSection {
        modules: Vec::new(),
        compression: Compression::default(),
        level: None,
        strict_firmware: false,
        activator: None,
    }
}

impl SystemConfig {
    /// Read and check `path`. Relative paths inside become relative to the
    /// file's directory.
    pub fn load(path: &Path) -> Result<SystemConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<SystemConfig, ConfigError> {
        let mut cfg: SystemConfig =
            toml::from_str(text).map_err(|e| syntax_error(text, path, &e))?;
        cfg.source = path.to_path_buf();
        let base = path.parent().unwrap_or(Path::new("."));
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        cfg.kernel.image = cfg.kernel.image.as_deref().map(abs);
        cfg.kernel.modules = cfg.kernel.modules.as_deref().map(abs);
        if let Some(t) = &mut cfg.tree {
            t.customize = t.customize.iter().map(|p| abs(p)).collect();
            t.path = t.path.as_deref().map(abs);
        }
        if let Some(a) = &cfg.initrd.activator {
            cfg.initrd.activator = Some(abs(a));
        }
        cfg.check(text)?;
        Ok(cfg)
    }

    /// Values that are well-typed but unusable; each error names the file,
    /// the line and column of the value, and the key. Everything that ends
    /// up on the kernel command line is checked here, before anything is
    /// built or written.
    fn check(&self, text: &str) -> Result<(), ConfigError> {
        let invalid_at = |section, key, index, what: String, hint: &str| ConfigError::Invalid {
            path: self.source.clone(),
            at: locate(text, section, key, index),
            section,
            key,
            what,
            hint: hint.to_string(),
        };
        let invalid =
            |section, key, what: String, hint: &str| invalid_at(section, key, None, what, hint);
        if self.system.label.trim().is_empty() || self.system.label.chars().any(char::is_control) {
            return Err(invalid(
                "system",
                "label",
                format!("{:?} is not a usable menu title", self.system.label),
                "give a non-empty label without control characters, e.g. label = \"Debian 12\"",
            ));
        }
        if !self.system.init.starts_with('/')
            || self.system.init.contains(char::is_whitespace)
            || self.system.init.contains(char::is_control)
        {
            return Err(invalid(
                "system",
                "init",
                format!("{:?} is not an absolute path", self.system.init),
                "name the stage-2 init as it is on the booted root, e.g. init = \"/sbin/init\"",
            ));
        }
        let dev = self.root.device.as_str();
        // What genboot-init will read from `root=`, as one parameter.
        let ok_dev = RootSpec::parse(dev).is_ok() && !dev.contains(char::is_whitespace);
        if let Some(why) = param_problem(dev) {
            return Err(invalid(
                "root",
                "device",
                format!("{dev:?} {why}"),
                "use PARTUUID=…, UUID=…, LABEL=… or a /dev/… path, without quotes",
            ));
        }
        if !ok_dev {
            return Err(invalid(
                "root",
                "device",
                format!("{dev:?} is not a device the activator can find"),
                "use PARTUUID=…, UUID=…, LABEL=… or a /dev/… path",
            ));
        }
        if self.root.fstype.is_empty()
            || !self.root.fstype.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(invalid(
                "root",
                "fstype",
                format!("{:?} is not a file system type", self.root.fstype),
                "e.g. fstype = \"ext4\"",
            ));
        }
        let options = &self.root.options;
        if let Some(why) = param_problem(options) {
            return Err(invalid(
                "root",
                "options",
                format!("{options:?} {why}"),
                "list plain mount options separated by commas, e.g. options = \"rw,noatime\"",
            ));
        }
        if options.contains(char::is_whitespace) {
            return Err(invalid(
                "root",
                "options",
                format!("{options:?} contains spaces"),
                "separate mount options with commas, e.g. options = \"rw,noatime\"",
            ));
        }
        if options.split(',').any(|o| o.starts_with('-')) {
            return Err(invalid(
                "root",
                "options",
                format!("{options:?} has an option starting with '-'"),
                "list plain mount options separated by commas, e.g. options = \"rw,noatime\"",
            ));
        }
        for (i, p) in self.kernel.params.iter().enumerate() {
            if p.trim().is_empty() {
                return Err(invalid_at(
                    "kernel",
                    "params",
                    Some(i),
                    format!("{p:?} is not a kernel parameter"),
                    "one parameter per string, e.g. params = [\"console=ttyS0\", \"quiet\"]",
                ));
            }
            if let Some(why) = param_problem(p) {
                return Err(invalid_at(
                    "kernel",
                    "params",
                    Some(i),
                    format!("{p:?} {why}"),
                    "remove it; one parameter per string, without quotes or `--` (genboot writes the command line itself)",
                ));
            }
        }
        for m in &self.initrd.modules {
            if m.is_empty()
                || !m
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(invalid(
                    "initrd",
                    "modules",
                    format!("{m:?} is not a module name"),
                    "list module names like \"virtio_blk\"",
                ));
            }
        }
        if let Some(level) = self.initrd.level {
            let (lo, hi) = match self.initrd.compression {
                Compression::Zstd => (1, 19),
                Compression::Gzip => (1, 9),
                Compression::Xz => (0, 9),
                Compression::None => (0, 0),
            };
            if level < lo || level > hi {
                return Err(invalid(
                    "initrd",
                    "level",
                    format!("{level} is out of range for {}", self.initrd.compression),
                    &format!("use a level from {lo} to {hi}, or leave it out"),
                ));
            }
        }
        if self.boot.tries == Some(0) {
            return Err(invalid(
                "boot",
                "tries",
                "0 tries would never boot".into(),
                "use tries = 1 or more, or leave it out to turn boot counting off",
            ));
        }
        self.check_kernel(text)?;
        if let Some(t) = &self.tree {
            self.check_tree(t, text)?;
        }
        if self.boot.limit == Some(0) {
            return Err(invalid(
                "boot",
                "limit",
                "a limit of 0 leaves no generation on the ESP".into(),
                "use limit = 1 or more, or leave it out",
            ));
        }
        Ok(())
    }
}

impl SystemConfig {
    /// An error about `[section] key` (element `index` of a list).
    fn invalid(
        &self,
        text: &str,
        (section, key, index): (&'static str, &'static str, Option<usize>),
        what: String,
        hint: &str,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.clone(),
            at: locate(text, section, key, index),
            section,
            key,
            what,
            hint: hint.to_string(),
        }
    }

    /// `[kernel]`: `image` and `modules` both, or (with a `[tree]`) neither.
    fn check_kernel(&self, text: &str) -> Result<(), ConfigError> {
        let k = &self.kernel;
        match (&k.image, &k.modules, &self.tree) {
            (Some(_), Some(_), _) | (None, None, Some(_)) => {}
            (None, _, None) => {
                return Err(self.invalid(
                    text,
                    ("kernel", "image", None),
                    "is missing".into(),
                    "name the kernel image, e.g. image = \"/boot/vmlinuz-6.1.0-50-amd64\" (or add a [tree] and take its kernel)",
                ))
            }
            (Some(_), None, _) | (None, Some(_), Some(_)) => {
                let missing = if k.image.is_none() { "image" } else { "modules" };
                return Err(self.invalid(
                    text,
                    ("kernel", missing, None),
                    "is missing".into(),
                    if self.tree.is_some() {
                        "give both image and modules, or neither to take the kernel from the [tree]"
                    } else {
                        "give both, e.g. image = \"/boot/vmlinuz-6.1.0-50-amd64\" and modules = \"/lib/modules/6.1.0-50-amd64\""
                    },
                ));
            }
        }
        if let Some(r) = &k.release {
            if self.tree.is_none() || k.image.is_some() {
                return Err(self.invalid(
                    text,
                    ("kernel", "release", None),
                    "picks one of a [tree]'s kernels, but the kernel is given by image and modules".into(),
                    "remove release, or remove image and modules to take the kernel from the [tree]",
                ));
            }
            if r.is_empty()
                || r.contains('/')
                || r.contains(char::is_whitespace)
                || r.starts_with('.')
            {
                return Err(self.invalid(
                    text,
                    ("kernel", "release", None),
                    format!("{r:?} is not a kernel release"),
                    "write the release as in /boot/vmlinuz-<release>, e.g. release = \"6.1.0-50-amd64\"",
                ));
            }
        }
        Ok(())
    }

    /// `[tree]`: the keys its source needs, and only those.
    fn check_tree(&self, t: &TreeSection, text: &str) -> Result<(), ConfigError> {
        let mm = t.source == TreeSourceKind::Mmdebstrap;
        let only_mm: [(&'static str, bool); 7] = [
            ("suite", t.suite.is_some()),
            ("variant", t.variant.is_some()),
            ("mirror", !t.mirror.is_empty()),
            ("packages", !t.packages.is_empty()),
            ("customize", !t.customize.is_empty()),
            ("dpkgopts", !t.dpkgopts.is_empty()),
            ("aptopts", !t.aptopts.is_empty()),
        ];
        if mm {
            if t.path.is_some() {
                return Err(self.invalid(
                    text,
                    ("tree", "path", None),
                    "is for source = \"dir\"; an mmdebstrap tree is built from packages".into(),
                    "remove path, or set source = \"dir\" to import that directory",
                ));
            }
            let suite = t.suite.as_deref().unwrap_or("");
            if suite.is_empty()
                || !suite
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
            {
                return Err(self.invalid(
                    text,
                    (
                        "tree",
                        if t.suite.is_some() { "suite" } else { "source" },
                        None,
                    ),
                    if t.suite.is_some() {
                        format!("{suite:?} is not a suite name")
                    } else {
                        "source = \"mmdebstrap\" needs a suite".into()
                    },
                    "name the Debian suite, e.g. suite = \"bookworm\"",
                ));
            }
        } else {
            if let Some((key, _)) = only_mm.iter().find(|(_, set)| *set) {
                return Err(self.invalid(
                    text,
                    ("tree", key, None),
                    "is for source = \"mmdebstrap\"; a dir tree is imported as it is".into(),
                    "remove it, or set source = \"mmdebstrap\"",
                ));
            }
            if t.path.is_none() {
                return Err(self.invalid(
                    text,
                    ("tree", "source", None),
                    "source = \"dir\" needs a path".into(),
                    "name the tree's root directory, e.g. path = \"/srv/rootfs\"",
                ));
            }
        }
        for (i, p) in t.packages.iter().enumerate() {
            let ok = !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.:=_~".contains(&b));
            if !ok {
                return Err(self.invalid(
                    text,
                    ("tree", "packages", Some(i)),
                    format!("{p:?} is not a package name"),
                    "one Debian package per string, e.g. packages = [\"nginx-light\", \"chrony\"]",
                ));
            }
        }
        for (i, m) in t.mirror.iter().enumerate() {
            if m.trim().is_empty() || m.contains(char::is_control) {
                return Err(self.invalid(
                    text,
                    ("tree", "mirror", Some(i)),
                    format!("{m:?} is not a mirror"),
                    "give a URL (\"http://deb.debian.org/debian\", \"file:///srv/mirror\") or a one-line apt source",
                ));
            }
        }
        if let Some(e) = t.source_date_epoch {
            if e < 86_400 {
                return Err(self.invalid(
                    text,
                    ("tree", "source_date_epoch", None),
                    format!("{e} is not a usable build date (seconds since 1970)"),
                    "give a date after 1970-01-02, e.g. source_date_epoch = 1735689600 (2025-01-01), or leave it out",
                ));
            }
        }
        if let Some(h) = &t.hostname {
            let ok = !h.is_empty()
                && h.len() <= 64
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                return Err(self.invalid(
                    text,
                    ("tree", "hostname", None),
                    format!("{h:?} is not a host name"),
                    "letters, digits, '-' and '.', at most 64, e.g. hostname = \"web1\"",
                ));
            }
        }
        Ok(())
    }
}

/// Turn a toml error into one naming file, line, column and key.
fn syntax_error(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
    let offset = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("");
    // The key is what stands before `=` on the line, inside the last [table].
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim().to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').to_string());
    let key = match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        _ => None,
    };
    let what = e.message().trim().to_string();
    let hint = if what.contains("unknown field") {
        "remove the key or fix its spelling; the README lists every key"
    } else if what.contains("invalid type") || what.contains("invalid value") {
        "give the value the type the README shows for this key"
    } else if what.contains("missing field") {
        "add the key; the README's example shows every required one"
    } else {
        "fix the TOML syntax at this position"
    };
    ConfigError::Syntax {
        path: path.to_path_buf(),
        line,
        column,
        key,
        what,
        hint: hint.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hint::Hint;

    const MINIMAL: &str = r#"
[kernel]
image = "vmlinuz"
modules = "/lib/modules/6.1.0-50-amd64"

[root]
device = "PARTUUID=8d5f3a6e-0000-4000-8000-000000000002"

[system]
label = "Test"
"#;

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let c = SystemConfig::parse(MINIMAL, Path::new("/etc/genboot/system.toml")).unwrap();
        assert_eq!(
            c.kernel.image.as_deref(),
            Some(Path::new("/etc/genboot/vmlinuz"))
        );
        assert_eq!(
            c.kernel.modules.as_deref(),
            Some(Path::new("/lib/modules/6.1.0-50-amd64"))
        );
        assert_eq!(c.initrd.compression, Compression::Zstd);
        assert_eq!(c.system.init, "/sbin/init");
        assert_eq!(c.root.options, "rw");
    }

    #[test]
    fn unknown_key_names_file_line_column_and_key() {
        let text = MINIMAL.replace("label = \"Test\"", "label = \"Test\"\nlabell = \"x\"");
        let e = SystemConfig::parse(&text, Path::new("s.toml"))
            .unwrap_err()
            .with_hint();
        assert!(e.starts_with("s.toml:11:1: unknown field `labell`"), "{e}");
        assert!(e.contains("key `system.labell`"), "{e}");
    }

    #[test]
    fn wrong_type_names_key_and_expectation() {
        let text = format!("{MINIMAL}\n[boot]\ntries = \"three\"\n");
        let e = SystemConfig::parse(&text, Path::new("s.toml"))
            .unwrap_err()
            .with_hint();
        assert!(e.contains("key `boot.tries`"), "{e}");
        assert!(e.contains("expected"), "{e}");
        assert!(e.contains(":13:9:"), "{e}");
    }

    #[test]
    fn quotes_dashes_and_control_characters_are_refused_with_line_and_key() {
        let params = |p: &str| {
            MINIMAL.replace(
                "modules = \"/lib/modules/6.1.0-50-amd64\"",
                &format!(
                    "modules = \"/lib/modules/6.1.0-50-amd64\"\nparams = [\n  \"quiet\",\n  {p},\n]"
                ),
            )
        };
        for (p, why) in [
            (r#""foo=\"a""#, "double quote"),
            (r#""--""#, "`--`"),
            (r#""quiet -- x""#, "`--`"),
            (r#""a\u0001b""#, "control character"),
            (r#""a\nb""#, "control character"),
            (r#"" ""#, "not a kernel parameter"),
        ] {
            let e = SystemConfig::parse(&params(p), Path::new("s.toml"))
                .unwrap_err()
                .with_hint();
            assert!(e.starts_with("s.toml:7:3: [kernel] params: "), "{p}: {e}");
            assert!(e.contains(why), "{p}: {e}");
            assert!(e.contains("Hint:"), "{p}: {e}");
        }
        for (o, why) in [
            (r#""rw,x=\"y""#, "double quote"),
            (r#""rw,--""#, "starting with '-'"),
            (r#""rw\u007f""#, "control character"),
        ] {
            let text = MINIMAL.replace(
                "device = \"PARTUUID=8d5f3a6e-0000-4000-8000-000000000002\"",
                &format!(
                    "device = \"PARTUUID=8d5f3a6e-0000-4000-8000-000000000002\"\noptions = {o}"
                ),
            );
            let e = SystemConfig::parse(&text, Path::new("s.toml"))
                .unwrap_err()
                .with_hint();
            assert!(e.starts_with("s.toml:8:11: [root] options: "), "{o}: {e}");
            assert!(e.contains(why), "{o}: {e}");
        }
        let text = MINIMAL.replace("PARTUUID=8d5f3a6e", "PARTUUID=\\\"8d5f3a6e");
        let e = SystemConfig::parse(&text, Path::new("s.toml"))
            .unwrap_err()
            .with_hint();
        assert!(
            e.starts_with("s.toml:7:10: [root] device") && e.contains("double quote"),
            "{e}"
        );
    }

    #[test]
    fn a_tree_takes_the_kernel_and_paths_relative_to_the_file() {
        let text = format!(
            "{}\n[tree]\nsource = \"mmdebstrap\"\nsuite = \"bookworm\"\nmirror = \"http://deb.debian.org/debian\"\npackages = [\"nginx-light\"]\ncustomize = [\"./site.sh\"]\n",
            MINIMAL
                .replace("image = \"vmlinuz\"\n", "")
                .replace("modules = \"/lib/modules/6.1.0-50-amd64\"\n", "")
        );
        let c = SystemConfig::parse(&text, Path::new("/etc/genboot/system.toml")).unwrap();
        assert_eq!(c.kernel.image, None);
        let t = c.tree.unwrap();
        assert_eq!(t.source, TreeSourceKind::Mmdebstrap);
        assert_eq!(t.mirror, ["http://deb.debian.org/debian"]);
        assert_eq!(t.customize, [PathBuf::from("/etc/genboot/./site.sh")]);
        let list = text.replace(
            "mirror = \"http://deb.debian.org/debian\"",
            "mirror = [\"http://a/debian\", \"deb http://b/debian bookworm main\"]",
        );
        let c = SystemConfig::parse(&list, Path::new("s.toml")).unwrap();
        assert_eq!(c.tree.unwrap().mirror.len(), 2);
        // Without a [tree], the kernel must be named.
        let e = SystemConfig::parse(
            &MINIMAL.replace("image = \"vmlinuz\"\n", ""),
            Path::new("s.toml"),
        )
        .unwrap_err()
        .with_hint();
        assert!(e.contains("[kernel] image: is missing"), "{e}");
    }

    #[test]
    fn bad_root_device_is_refused() {
        let text = MINIMAL.replace("PARTUUID=8d5f3a6e-0000-4000-8000-000000000002", "sda1");
        let e = SystemConfig::parse(&text, Path::new("s.toml"))
            .unwrap_err()
            .with_hint();
        assert!(e.contains("[root] device"), "{e}");
    }
}
