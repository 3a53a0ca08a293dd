//! `system.toml`: the declarative configuration of one system.
//!
//! Relative paths in the file are relative to the directory that holds it.
//! Unknown keys and wrong types are errors naming the file, line, column,
//! key and what was expected.

pub mod installed;

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

/// `[kernel]` as written: a kernel named by `image` and `modules`, or
/// (neither given) the newest kernel whose release matches `release`:
/// installed below the root, or with a `[tree]`, one of the tree's.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KernelToml {
    image: Option<PathBuf>,
    modules: Option<PathBuf>,
    release: Option<String>,
    #[serde(default)]
    params: Vec<String>,
}

/// The kernel a configuration boots.
#[derive(Debug, Clone)]
pub struct KernelSection {
    /// Extra kernel command-line parameters.
    pub params: Vec<String>,
    /// Which kernel, and how it was chosen.
    pub chosen: KernelChoice,
}

impl KernelSection {
    /// The kernel image and module tree on this machine; `None` for the
    /// `[tree]`'s kernel, which is picked when the tree is built.
    pub fn files(&self) -> Option<&KernelFiles> {
        match &self.chosen {
            KernelChoice::Named(files) | KernelChoice::Installed { files, .. } => Some(files),
            KernelChoice::FromTree { .. } => None,
        }
    }
}

/// A kernel image and its module tree, as paths on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFiles {
    /// The kernel image (bzImage with EFI stub), e.g. `/boot/vmlinuz-6.1.0-50-amd64`.
    pub image: PathBuf,
    /// The module tree, e.g. `/lib/modules/6.1.0-50-amd64`.
    pub modules: PathBuf,
}

/// How `[kernel]` chose its kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelChoice {
    /// `image` and `modules` name it (with or without a `[tree]`).
    Named(KernelFiles),
    /// No `[tree]`: the newest installed kernel below the root whose
    /// release matches `pattern` (`newest`: any release).
    Installed {
        files: KernelFiles,
        pattern: String,
        release: String,
        /// Every installed kernel that matched, newest first.
        matching: Vec<String>,
    },
    /// A `[tree]`: the newest of the tree's kernels whose release matches
    /// `pattern` (the same language as for installed kernels), picked when
    /// the tree is built.
    FromTree { pattern: String },
}

/// `[kernel] release` when neither `image` nor `modules` is given.
pub const NEWEST: &str = "newest";

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
    /// The paths kept on the root partition across generations besides
    /// `/var` (default `/home`, `/root`, `/srv`): never rolled back.
    pub persist: Option<Vec<String>>,
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
    /// CPU microcode (`intel-ucode/`, `amd-ucode/` beside the module tree's
    /// firmware) as the early archive, when installed.
    #[serde(default = "yes")]
    pub microcode: bool,
    /// Add the modules this machine's root device needs (its driver chain
    /// in sysfs, its file system), for a build on this machine (`--root /`).
    #[serde(default)]
    pub autodetect: bool,
}

fn yes() -> bool {
    true
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

/// `system.toml` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigToml {
    #[serde(default)]
    kernel: KernelToml,
    #[serde(default = "default_initrd")]
    initrd: InitrdSection,
    root: RootSection,
    system: SystemSection,
    #[serde(default)]
    boot: BootSection,
    tree: Option<TreeSection>,
}

/// A checked configuration, every path it names resolved.
#[derive(Debug, Clone)]
pub struct SystemConfig {
    pub kernel: KernelSection,
    pub initrd: InitrdSection,
    pub root: RootSection,
    pub system: SystemSection,
    pub boot: BootSection,
    pub tree: Option<TreeSection>,
    /// The file this was read from.
    pub source: PathBuf,
}

/// How a configuration's paths are read: on this machine, or as paths of
/// the system tree below `--root`.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// The system tree (`--root`, canonical): installed kernels are looked
    /// for below it.
    pub root: &'a Path,
    /// The configuration's paths are paths of that system (it lies inside
    /// the tree): absolute ones start at `root`, relative ones at the
    /// file's directory inside it, and every link is resolved inside
    /// `root` ([`crate::state::resolve_in_root`]), never on this machine.
    pub in_root: bool,
}

impl Place<'_> {
    /// Paths of this machine; installed kernels below `/`.
    pub fn host() -> Place<'static> {
        Place {
            root: Path::new("/"),
            in_root: false,
        }
    }
}

fn default_initrd() -> InitrdSection {
    InitrdSection {
        modules: Vec::new(),
        compression: Compression::default(),
        level: None,
        strict_firmware: false,
        activator: None,
        microcode: true,
        autodetect: false,
    }
}

impl SystemConfig {
    /// Read and check `path`; its paths are this machine's ([`Place::host`]).
    pub fn load(path: &Path) -> Result<SystemConfig, ConfigError> {
        Self::load_in(path, Place::host())
    }

    /// Read and check `path`, its paths read as `place` says.
    pub fn load_in(path: &Path, place: Place) -> Result<SystemConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::parse_in(&text, path, place)
    }

    /// Check `text`, read from `path`; its paths are this machine's.
    pub fn parse(text: &str, path: &Path) -> Result<SystemConfig, ConfigError> {
        Self::parse_in(text, path, Place::host())
    }

    /// Check `text`, read from `path` (a path on this machine; with
    /// `place.in_root`, inside `place.root`). Relative paths inside are
    /// relative to the file's directory.
    pub fn parse_in(text: &str, path: &Path, place: Place) -> Result<SystemConfig, ConfigError> {
        let raw: ConfigToml = toml::from_str(text).map_err(|e| syntax_error(text, path, &e))?;
        let ConfigToml {
            kernel,
            mut initrd,
            root,
            system,
            boot,
            mut tree,
        } = raw;
        let paths = Paths::new(path, place, text);
        if let Some(a) = &initrd.activator {
            initrd.activator = Some(paths.resolve("initrd", "activator", a)?);
        }
        if let Some(t) = &mut tree {
            for c in &mut t.customize {
                *c = paths.resolve("tree", "customize", c)?;
            }
            if let Some(p) = &t.path {
                t.path = Some(paths.resolve("tree", "path", p)?);
            }
        }
        let kernel = kernel_section(kernel, tree.is_some(), &paths)?;
        let cfg = SystemConfig {
            kernel,
            initrd,
            root,
            system,
            boot,
            tree,
            source: path.to_path_buf(),
        };
        cfg.check(text)?;
        if let Some(t) = &cfg.tree {
            cfg.check_tree(t, text)?;
        }
        Ok(cfg)
    }

    /// Values that are well-typed but unusable; each error names the file,
    /// the line and column of the value, and the key. Everything that ends
    /// up on the kernel command line is checked here, before anything is
    /// built or written.
    fn check(&self, text: &str) -> Result<(), ConfigError> {
        let invalid_at = |section, key, index, what: String, hint: &str| {
            self.invalid(text, (section, key, index), what, hint)
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

/// Where a configuration's paths lead ([`Place`]), and what its errors name.
struct Paths<'a> {
    file: &'a Path,
    text: &'a str,
    place: Place<'a>,
    /// The file's directory: on this machine, or (`place.in_root`) as the
    /// system below the root sees it.
    base: PathBuf,
}

impl<'a> Paths<'a> {
    fn new(file: &'a Path, place: Place<'a>, text: &'a str) -> Paths<'a> {
        let dir = file.parent().unwrap_or(Path::new("."));
        let base = if place.in_root {
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            Path::new("/").join(dir.strip_prefix(place.root).unwrap_or(Path::new("")))
        } else {
            dir.to_path_buf()
        };
        Paths {
            file,
            text,
            place,
            base,
        }
    }

    fn invalid(
        &self,
        section: &'static str,
        key: &'static str,
        what: String,
        hint: String,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.file.to_path_buf(),
            at: locate(self.text, section, key, None),
            section,
            key,
            what,
            hint,
        }
    }

    /// `[section] key = value` as a path on this machine.
    fn resolve(
        &self,
        section: &'static str,
        key: &'static str,
        value: &Path,
    ) -> Result<PathBuf, ConfigError> {
        let joined = self.base.join(value);
        if !self.place.in_root {
            return Ok(joined);
        }
        crate::state::resolve_in_root(self.place.root, &joined).map_err(|e| {
            self.invalid(
                section,
                key,
                format!(
                    "{} is read below {} (the configuration is inside that tree, so its paths are that system's): {e}",
                    value.display(),
                    self.place.root.display()
                ),
                "name the path as the system below --root sees it: absolute paths start at --root, relative ones at this file's directory in it".into(),
            )
        })
    }
}

/// `[kernel]`: the named kernel, or the newest one matching `release`:
/// installed below the root, or (`tree`: with a `[tree]`) one of the tree's.
fn kernel_section(k: KernelToml, tree: bool, paths: &Paths) -> Result<KernelSection, ConfigError> {
    let KernelToml {
        image,
        modules,
        release,
        params,
    } = k;
    // Where a kernel comes from without image and modules, for the hints.
    let elsewhere = if tree {
        "take the [tree]'s kernel"
    } else {
        "boot the newest installed kernel"
    };
    let chosen = match (image, modules, release) {
        (Some(i), Some(m), None) => KernelChoice::Named(KernelFiles {
            image: paths.resolve("kernel", "image", &i)?,
            modules: paths.resolve("kernel", "modules", &m)?,
        }),
        (None, None, release) => {
            let pattern = release.unwrap_or_else(|| NEWEST.to_string());
            check_pattern(&pattern, paths)?;
            if tree {
                KernelChoice::FromTree { pattern }
            } else {
                newest_installed(&pattern, paths)?
            }
        }
        (Some(_), Some(_), Some(_)) => {
            let picks = if tree {
                "one of the [tree]'s kernels"
            } else {
                "an installed kernel"
            };
            return Err(paths.invalid(
                "kernel",
                "release",
                format!("release picks {picks}, but image and modules name one"),
                format!("leave out release, or leave out image and modules to {elsewhere} matching release"),
            ));
        }
        (Some(_), None, _) => {
            return Err(paths.invalid(
                "kernel",
                "image",
                "image is given without modules".into(),
                format!(
                    "add modules = \"/lib/modules/<release>\", or leave out image to {elsewhere}"
                ),
            ))
        }
        (None, Some(_), _) => {
            return Err(paths.invalid(
                "kernel",
                "modules",
                "modules is given without image".into(),
                format!(
                    "add image = \"/boot/vmlinuz-<release>\", or leave out modules to {elsewhere}"
                ),
            ))
        }
    };
    Ok(KernelSection { params, chosen })
}

/// `[kernel] release`: `newest`, a release or a glob, as a file name part.
fn check_pattern(pattern: &str, paths: &Paths) -> Result<(), ConfigError> {
    if pattern.is_empty() || !pattern.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        return Err(paths.invalid(
            "kernel",
            "release",
            format!("{pattern:?} is not a kernel release or pattern"),
            "use release = \"newest\", a release such as \"6.1.0-57-amd64\" or a pattern such as \"6.1.*\"".into(),
        ));
    }
    Ok(())
}

/// The newest kernel installed below the root whose release matches `pattern`.
fn newest_installed(pattern: &str, paths: &Paths) -> Result<KernelChoice, ConfigError> {
    let root = paths.place.root;
    let all = installed::installed(root).map_err(|e| {
        paths.invalid(
            "kernel",
            "release",
            format!(
                "cannot list the installed kernels below {}: {e}",
                root.display()
            ),
            "name the kernel with image and modules".into(),
        )
    })?;
    let matching: Vec<installed::Installed> = all
        .iter()
        .filter(|k| installed::matches(pattern, &k.release))
        .cloned()
        .collect();
    let Some(newest) = matching.first().cloned() else {
        let seen = if all.is_empty() {
            "none".to_string()
        } else {
            all.iter()
                .map(|k| k.release.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let what = if pattern == NEWEST {
            format!("no kernel is installed below {}", root.display())
        } else {
            format!(
                "no kernel installed below {} matches {pattern:?}",
                root.display()
            )
        };
        return Err(paths.invalid(
            "kernel",
            "release",
            format!("{what} (a kernel is /boot/vmlinuz-<release> with /lib/modules/<release>; installed: {seen})"),
            "install a kernel package (apt-get install linux-image-amd64), change release, or name the kernel with image and modules".into(),
        ));
    };
    Ok(KernelChoice::Installed {
        files: KernelFiles {
            image: newest.image,
            modules: newest.modules,
        },
        pattern: pattern.to_string(),
        release: newest.release,
        matching: matching.into_iter().map(|k| k.release).collect(),
    })
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

    /// `[tree]`: the keys its source needs, and only those.
    fn check_tree(&self, t: &TreeSection, text: &str) -> Result<(), ConfigError> {
        if self.root.options.split(',').any(|o| o.trim() == "ro") {
            return Err(self.invalid(
                text,
                ("root", "options", None),
                format!(
                    "{:?} mounts the root partition read-only, but a generation with a [tree] keeps /var, /home and its /etc layer there",
                    self.root.options
                ),
                "leave out ro: the tree itself is always mounted read-only (the recovery entry mounts the partition ro by itself)",
            ));
        }
        for (i, p) in t.persist.iter().flatten().enumerate() {
            if let Some(why) = genboot_format::persist_problem(p) {
                return Err(self.invalid(
                    text,
                    ("tree", "persist", Some(i)),
                    format!("{p:?} cannot be kept on the root partition: {why}"),
                    "name absolute, plain paths such as \"/home\" or \"/opt/data\" (/var is always kept; /etc has its own layer per generation)",
                ));
            }
        }
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
            c.kernel.chosen,
            KernelChoice::Named(KernelFiles {
                image: "/etc/genboot/vmlinuz".into(),
                modules: "/lib/modules/6.1.0-50-amd64".into(),
            })
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
    fn tree_persist_takes_plain_paths_and_refuses_what_genboot_init_mounts() {
        let base = format!(
            "{}\n[tree]\nsource = \"mmdebstrap\"\nsuite = \"bookworm\"\npackages = [\"systemd-sysv\"]\n",
            MINIMAL
                .replace("image = \"vmlinuz\"\n", "")
                .replace("modules = \"/lib/modules/6.1.0-50-amd64\"\n", "")
        );
        let c = SystemConfig::parse(&base, Path::new("s.toml")).unwrap();
        assert_eq!(c.tree.unwrap().persist, None);
        let ok = format!("{base}persist = [\"/home\", \"/opt/data\"]\n");
        let c = SystemConfig::parse(&ok, Path::new("s.toml")).unwrap();
        assert_eq!(
            c.tree.unwrap().persist.unwrap(),
            ["/home".to_string(), "/opt/data".to_string()]
        );
        // The root partition holds /var and the /etc layers: never ro.
        let ro = base.replace("[root]\n", "[root]\noptions = \"noatime,ro\"\n");
        assert_ne!(ro, base);
        let e = SystemConfig::parse(&ro, Path::new("s.toml"))
            .unwrap_err()
            .with_hint();
        assert!(
            e.contains("[root] options") && e.contains("leave out ro"),
            "{e}"
        );
        for bad in ["/etc/ssh", "home", "/", "/opt/../etc", "/var/lib/x"] {
            let text = format!("{base}persist = [\"/home\", {bad:?}]\n");
            let e = SystemConfig::parse(&text, Path::new("s.toml"))
                .unwrap_err()
                .with_hint();
            assert!(
                e.contains("[tree] persist") && e.contains(bad) && e.contains("absolute, plain"),
                "{bad}: {e}"
            );
        }
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
        assert_eq!(
            c.kernel.chosen,
            KernelChoice::FromTree {
                pattern: NEWEST.into()
            }
        );
        assert!(c.kernel.files().is_none());
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
        // A release pattern picks among the tree's kernels, later.
        let glob = text.replace("[kernel]\n", "[kernel]\nrelease = \"6.1.*\"\n");
        let c = SystemConfig::parse(&glob, Path::new("s.toml")).unwrap();
        assert_eq!(
            c.kernel.chosen,
            KernelChoice::FromTree {
                pattern: "6.1.*".into()
            }
        );
        // Half a kernel is refused, with the tree's way out in the hint.
        let e = SystemConfig::parse(
            &text.replace("[kernel]\n", "[kernel]\nimage = \"vmlinuz\"\n"),
            Path::new("s.toml"),
        )
        .unwrap_err()
        .with_hint();
        assert!(
            e.contains("[kernel] image: image is given without modules")
                && e.contains("leave out image to take the [tree]'s kernel"),
            "{e}"
        );
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
