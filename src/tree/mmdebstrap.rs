//! `source = "mmdebstrap"`: build a Debian tree with mmdebstrap (Debian's
//! own builder), reproducibly (`SOURCE_DATE_EPOCH`), into a staging
//! directory inside the store that [`super::build`] then imports by moving
//! its files.
//!
//! The command: `mmdebstrap --mode=root --format=directory
//! --variant=VARIANT --architectures=ARCH --include=PACKAGES [--aptopt=…]
//! [--dpkgopt=…] [hooks] SUITE TARGET MIRROR…` with `SOURCE_DATE_EPOCH` set.
//! `MIRROR`s are the `[tree] mirror` entries (a URL, or a whole one-line
//! apt source such as `deb [trusted=yes] file:///srv/mirror bookworm main`),
//! or, when there is none, this machine's own apt sources for the suite
//! ([`machine_sources`]: `/etc/apt/sources.list`, `sources.list.d/*.list`
//! and deb822 `*.sources`).
//!
//! `file://` mirrors work offline: apt hands dpkg the `.deb` paths in the
//! mirror as they are, so genboot bind-mounts each such mirror read-only
//! into the tree at the same path during the build (a setup hook) and
//! removes the mount and the directories it had to create at the end (the
//! last customize hook) — what mmdebstrap's `file-mirror-automount` hook
//! dir does, except that it leaves the mount point directories in the tree.
//!
//! The user's `[tree] customize` hooks run as `--customize-hook`s, in order,
//! with the tree as `$1`. The fixed build rules are *not* hooks: they are
//! applied to the scanned manifest ([`super::rules`]), so `source = "dir"`
//! trees get them too.
//!
//! Errors say what failed and which key to change: an unknown package names
//! mmdebstrap's message and `[tree] packages`; an unreachable mirror says so
//! plainly and names `[tree] mirror`; a failing hook names `[tree]
//! customize`; anything else quotes the last lines and the full log's path.

use super::TreeError;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The `[tree]` keys of an mmdebstrap build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MmdebstrapSpec {
    /// `[tree] suite`, e.g. `bookworm`.
    pub suite: String,
    /// `[tree] variant`: `minbase` (default), `required`, `important`, …
    pub variant: String,
    /// `[tree] mirror`: URLs or one-line apt sources; empty = this
    /// machine's apt sources for the suite.
    pub mirrors: Vec<String>,
    /// `[tree] packages`.
    pub packages: Vec<String>,
    /// `[tree] customize`: executables run as customize hooks.
    pub customize: Vec<PathBuf>,
    /// `--architectures` (default `amd64`).
    pub architecture: String,
    /// Extra `--aptopt`s and `--dpkgopt`s.
    pub aptopts: Vec<String>,
    pub dpkgopts: Vec<String>,
    /// Where the user wrote this (for messages), e.g. `/etc/genboot/system.toml`.
    pub config: Option<PathBuf>,
}

impl MmdebstrapSpec {
    pub fn new(suite: &str) -> MmdebstrapSpec {
        MmdebstrapSpec {
            suite: suite.to_string(),
            variant: "minbase".into(),
            mirrors: Vec::new(),
            packages: Vec::new(),
            customize: Vec::new(),
            architecture: "amd64".into(),
            aptopts: vec!["Acquire::Languages \"none\"".into()],
            dpkgopts: Vec::new(),
            config: None,
        }
    }

    fn key(&self, key: &str) -> String {
        match &self.config {
            Some(c) => format!("{}: [tree] {key}", c.display()),
            None => format!("[tree] {key}"),
        }
    }
}

/// One apt source entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
    /// `[...]` options of the one-line form, e.g. `signed-by=/usr/share/keyrings/x.gpg`.
    pub options: Vec<String>,
}

impl AptSource {
    /// The one-line form mmdebstrap takes as a MIRROR argument.
    pub fn line(&self) -> String {
        let opts = if self.options.is_empty() {
            String::new()
        } else {
            format!("[{}] ", self.options.join(" "))
        };
        format!(
            "deb {opts}{} {} {}",
            self.uri,
            self.suite,
            self.components.join(" ")
        )
    }
}

/// `deb` entries of a one-line `sources.list`.
pub fn parse_sources_list(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let rest = rest.trim();
        let (options, rest) = match rest.strip_prefix('[') {
            Some(r) => match r.split_once(']') {
                Some((o, r)) => (o.split_whitespace().map(str::to_string).collect(), r.trim()),
                None => continue,
            },
            None => (Vec::new(), rest),
        };
        let mut f = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (f.next(), f.next()) else {
            continue;
        };
        out.push(AptSource {
            uri: uri.to_string(),
            suite: suite.to_string(),
            components: f.map(str::to_string).collect(),
            options,
        });
    }
    out
}

/// `deb` entries of a deb822 `.sources` file (every URI × suite).
pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(last) = fields.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |k: &str| {
            fields
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        if !get("types").split_whitespace().any(|t| t == "deb") {
            continue;
        }
        if matches!(get("enabled").to_ascii_lowercase().as_str(), "no" | "false") {
            continue;
        }
        let mut options = Vec::new();
        if !get("signed-by").is_empty() && !get("signed-by").contains("BEGIN PGP") {
            options.push(format!("signed-by={}", get("signed-by")));
        }
        if matches!(get("trusted").to_ascii_lowercase().as_str(), "yes" | "true") {
            options.push("trusted=yes".into());
        }
        let comps: Vec<String> = get("components")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        for uri in get("uris").split_whitespace() {
            for suite in get("suites").split_whitespace() {
                out.push(AptSource {
                    uri: uri.to_string(),
                    suite: suite.to_string(),
                    components: comps.clone(),
                    options: options.clone(),
                });
            }
        }
    }
    out
}

/// This machine's apt sources for `suite` (and its `-updates`,
/// `-security`, `/updates` companions), read from `etc_apt`
/// (`/etc/apt`), as one-line sources.
pub fn machine_sources(etc_apt: &Path, suite: &str) -> Result<Vec<String>, TreeError> {
    let mut all = Vec::new();
    if let Ok(t) = fs::read_to_string(etc_apt.join("sources.list")) {
        all.extend(parse_sources_list(&t));
    }
    let dir = etc_apt.join("sources.list.d");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let Ok(t) = fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("list") => all.extend(parse_sources_list(&t)),
            Some("sources") => all.extend(parse_deb822(&t)),
            _ => {}
        }
    }
    let ours = |s: &str| {
        s == suite
            || s.strip_prefix(suite)
                .is_some_and(|r| r.starts_with('-') || r.starts_with('/'))
    };
    let mut lines: Vec<String> = all
        .into_iter()
        .filter(|s| ours(&s.suite))
        .map(|s| s.line())
        .collect();
    lines.dedup();
    if lines.is_empty() {
        return Err(TreeError::Source {
            what: format!(
                "this machine's apt sources ({}/sources.list, sources.list.d) have no `deb` entry for suite {suite:?}",
                etc_apt.display()
            ),
            hint: "set [tree] mirror to a Debian mirror URL (e.g. \"http://deb.debian.org/debian\" or a file:// mirror), or add the suite to the apt sources".into(),
        });
    }
    Ok(lines)
}

/// The local directories of `file://` (and `file:`) mirrors.
pub fn file_mirror_dirs(mirrors: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for m in mirrors {
        let uri = if m.trim_start().starts_with("deb") {
            parse_sources_list(m).into_iter().next().map(|s| s.uri)
        } else {
            m.split_whitespace().next().map(str::to_string)
        };
        if let Some(uri) = uri {
            if let Some(p) = uri.strip_prefix("file:") {
                let p = format!("/{}", p.trim_start_matches('/'));
                let p = p.trim_end_matches('/');
                out.push(PathBuf::from(if p.is_empty() { "/" } else { p }));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether `dir` is an apt repository: one with `dists/`, or a flat one
/// (`deb file:DIR ./`) with its index at the top.
fn is_apt_repository(dir: &Path) -> bool {
    dir.join("dists").is_dir()
        || [
            "Packages",
            "Packages.gz",
            "Packages.xz",
            "Release",
            "InRelease",
        ]
        .iter()
        .any(|f| dir.join(f).is_file())
}

/// Quote for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The mmdebstrap command line (without running it). `hooks` is a
/// directory outside `target` for genboot's mirror hooks.
pub fn command(
    spec: &MmdebstrapSpec,
    mirrors: &[String],
    epoch: i64,
    target: &Path,
    hooks: &Path,
) -> Command {
    let mut c = Command::new("mmdebstrap");
    c.env("SOURCE_DATE_EPOCH", epoch.to_string())
        .arg("--mode=root")
        .arg("--format=directory")
        .arg(format!("--variant={}", spec.variant))
        .arg(format!("--architectures={}", spec.architecture));
    if !spec.packages.is_empty() {
        c.arg(format!("--include={}", spec.packages.join(",")));
    }
    for o in &spec.aptopts {
        c.arg(format!("--aptopt={o}"));
    }
    for o in &spec.dpkgopts {
        c.arg(format!("--dpkgopt={o}"));
    }
    let file_mirrors = !file_mirror_dirs(mirrors).is_empty();
    if file_mirrors {
        c.arg(format!(
            "--setup-hook={} \"$1\"",
            sh_quote(&hooks.join("mirrors-setup").to_string_lossy())
        ));
    }
    for h in &spec.customize {
        c.arg(format!(
            "--customize-hook={} \"$1\"",
            sh_quote(&h.to_string_lossy())
        ));
    }
    if file_mirrors {
        c.arg(format!(
            "--customize-hook={} \"$1\"",
            sh_quote(&hooks.join("mirrors-cleanup").to_string_lossy())
        ));
    }
    c.arg(&spec.suite).arg(target).args(mirrors);
    c
}

/// Write `mirrors-setup` and `mirrors-cleanup` into `hooks`: mmdebstrap's
/// setup and customize hooks that bind-mount every file:// mirror into the
/// tree at its own path (read-only), then unmount them and remove only the
/// directories setup made. Nothing when no mirror is a file:// one.
pub fn write_hooks(mirrors: &[String], hooks: &Path) -> Result<(), TreeError> {
    let dirs = file_mirror_dirs(mirrors);
    if dirs.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(hooks).map_err(super::io_err("create", hooks))?;
    let record = hooks.join("mirror-mounts");
    let list: Vec<String> = dirs
        .iter()
        .map(|d| sh_quote(&d.to_string_lossy()))
        .collect();
    let setup = format!(
        "#!/bin/sh\n# genboot: bind-mount file:// mirrors into the tree at their own path.\nset -eu\nroot=\"$1\"\nrecord={rec}\n: > \"$record\"\nfor p in {list}; do\n  if [ ! -d \"$p\" ]; then echo \"genboot: the file:// mirror $p is not a directory\" >&2; exit 1; fi\n  first=\n  d=\"$p\"\n  while [ ! -e \"$root$d\" ]; do first=\"$d\"; d=$(dirname \"$d\"); done\n  mkdir -p \"$root$p\"\n  mount -o ro,bind \"$p\" \"$root$p\"\n  printf '%s\\n%s\\n' \"$p\" \"$first\" >> \"$record\"\ndone\n",
        rec = sh_quote(&record.to_string_lossy()),
        list = list.join(" ")
    );
    // Every mirror is unmounted (the last mounted first) before any
    // directory goes: a directory one mirror's setup created can hold
    // another mirror's mount point (two mirrors below one new top).
    let cleanup = format!(
        "#!/bin/sh\n# genboot: undo mirrors-setup; remove only the directories it created.\nset -eu\nroot=\"$1\"\nawk 'NR % 2 == 1' {rec} | tac | while IFS= read -r p; do\n  umount \"$root$p\"\ndone\nawk 'NR % 2 == 0' {rec} | while IFS= read -r first; do\n  if [ -n \"$first\" ] && [ -e \"$root$first\" ]; then rm -r -- \"$root$first\"; fi\ndone\n",
        rec = sh_quote(&record.to_string_lossy())
    );
    for (name, text) in [("mirrors-setup", setup), ("mirrors-cleanup", cleanup)] {
        let p = hooks.join(name);
        fs::write(&p, text).map_err(super::io_err("write", &p))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
            .map_err(super::io_err("chmod", &p))?;
    }
    Ok(())
}

/// Check the spec before running anything: hooks exist and are
/// executable, names are sane.
pub fn check(spec: &MmdebstrapSpec) -> Result<(), TreeError> {
    let bad = |key: &str, what: String, hint: &str| TreeError::Source {
        what: format!("{}: {what}", spec.key(key)),
        hint: hint.to_string(),
    };
    if spec.suite.is_empty() || spec.suite.contains(char::is_whitespace) {
        return Err(bad(
            "suite",
            format!("{:?} is not a suite name", spec.suite),
            "write a Debian suite such as \"bookworm\"",
        ));
    }
    for p in &spec.packages {
        if p.is_empty() || p.contains(',') || p.contains(char::is_whitespace) {
            return Err(bad(
                "packages",
                format!("{p:?} is not a package name"),
                "list one package per string, e.g. [\"nginx-light\", \"chrony\"]",
            ));
        }
    }
    for h in &spec.customize {
        let ok = fs::metadata(h).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !ok {
            return Err(bad(
                "customize",
                format!("{} is not an executable file", h.display()),
                "give the path of an executable script (chmod +x); it runs with the tree as $1",
            ));
        }
    }
    Ok(())
}

/// Run mmdebstrap into `target` (which must not exist), logging to `log`.
/// `hooks` is a scratch directory outside `target`.
pub fn run(
    spec: &MmdebstrapSpec,
    epoch: i64,
    target: &Path,
    hooks: &Path,
    log: &Path,
) -> Result<(), TreeError> {
    check(spec)?;
    let mirrors = if spec.mirrors.is_empty() {
        machine_sources(Path::new("/etc/apt"), &spec.suite)?
    } else {
        spec.mirrors.clone()
    };
    for d in file_mirror_dirs(&mirrors) {
        if !is_apt_repository(&d) {
            return Err(TreeError::Source {
                what: format!(
                    "{}: the file:// mirror {} has no dists/ directory nor a flat repository's Packages or Release file, so it is not an apt repository",
                    spec.key("mirror"),
                    d.display()
                ),
                hint: "point [tree] mirror at the repository's top directory (the one holding dists/ and pool/, or for a flat repository `deb file:DIR ./`, the one holding Packages)".into(),
            });
        }
    }
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(TreeError::Source {
            what: "building a tree with mmdebstrap needs root (it runs in --mode=root)".into(),
            hint: "run genboot as root".into(),
        });
    }
    write_hooks(&mirrors, hooks)?;
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).map_err(super::io_err("create", dir))?;
    }
    let logf = fs::File::create(log).map_err(super::io_err("create", log))?;
    let logf2 = logf.try_clone().map_err(super::io_err("open", log))?;
    let status = command(spec, &mirrors, epoch, target, hooks)
        .stdin(Stdio::null())
        .stdout(logf)
        .stderr(logf2)
        .status();
    let status = match status {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TreeError::Source {
                what: "mmdebstrap is not installed".into(),
                hint: "install it: apt-get install mmdebstrap (tools/install-deps does)".into(),
            })
        }
        Err(e) => return Err(super::io_err("run mmdebstrap for", target)(e)),
    };
    if status.success() {
        return Ok(());
    }
    let text = fs::read_to_string(log).unwrap_or_default();
    let (what, hint) = explain_failure(spec, &mirrors, &text, log);
    let mut f = fs::OpenOptions::new().append(true).open(log).ok();
    if let Some(f) = f.as_mut() {
        let _ = writeln!(f, "genboot: {what}");
    }
    Err(TreeError::Source { what, hint })
}

/// Turn mmdebstrap's output into what failed and which key to change.
pub fn explain_failure(
    spec: &MmdebstrapSpec,
    mirrors: &[String],
    log_text: &str,
    log: &Path,
) -> (String, String) {
    let lines: Vec<&str> = log_text.lines().collect();
    let find = |pats: &[&str]| {
        lines
            .iter()
            .find(|l| pats.iter().any(|p| l.contains(p)))
            .map(|l| l.trim().to_string())
    };
    // Unknown packages: "E: Unable to locate package foo",
    // "E: Package 'foo' has no installation candidate".
    if let Some(l) = find(&[
        "Unable to locate package",
        "has no installation candidate",
        "Couldn't find any package",
    ]) {
        let pkg = spec
            .packages
            .iter()
            .find(|p| {
                l.contains(&format!("package {p}"))
                    || l.contains(&format!("'{p}'"))
                    || l.ends_with(&format!(" {p}"))
            })
            .cloned()
            .unwrap_or_else(|| "?".into());
        return (
            format!("mmdebstrap: {l}"),
            format!(
                "{} lists {pkg:?}, which suite {} of the mirror does not have; check the name (apt-cache policy {pkg}) or remove it",
                spec.key("packages"),
                spec.suite
            ),
        );
    }
    if let Some(l) = find(&[
        "Could not resolve",
        "Temporary failure resolving",
        "Failed to fetch",
        "Could not connect",
        "Connection failed",
        "Network is unreachable",
        "Unable to connect",
        "Connection timed out",
        "does not have a Release file",
        "404  Not Found",
        "File not found",
    ]) {
        return (
            format!(
                "mmdebstrap could not reach the mirror ({}): {l}",
                mirrors.join(" | ")
            ),
            format!(
                "check the network and {} (a file:// mirror works offline; without the key genboot uses this machine's apt sources); full log: {}",
                spec.key("mirror"),
                log.display()
            ),
        );
    }
    if let Some(h) = spec.customize.iter().find(|h| {
        let s = h.to_string_lossy();
        lines
            .iter()
            .any(|l| l.contains(s.as_ref()) && (l.contains("E:") || l.contains("failed")))
    }) {
        return (
            format!("the customize hook {} failed", h.display()),
            format!(
                "fix the script ({} runs each with the tree as $1); its output is in {}",
                spec.key("customize"),
                log.display()
            ),
        );
    }
    let tail: Vec<&str> = lines.iter().rev().take(15).rev().copied().collect();
    (
        format!("mmdebstrap failed; its last lines:\n{}", tail.join("\n")),
        format!("the full log is {}", log.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb-src\nURIs: http://x\nSuites: bookworm\nComponents: main\n\nTypes: deb\nEnabled: no\nURIs: http://off\nSuites: bookworm\nComponents: main\n";

    #[test]
    fn deb822_and_one_line_sources_give_mirror_lines() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("sources.list.d")).unwrap();
        fs::write(t.path().join("sources.list.d/debian.sources"), DEB822).unwrap();
        fs::write(
            t.path().join("sources.list"),
            "# comment\ndeb [arch=amd64] http://ftp.de.debian.org/debian trixie main\ndeb-src http://a bookworm main\n",
        )
        .unwrap();
        let l = machine_sources(t.path(), "bookworm").unwrap();
        let sig = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]";
        assert_eq!(
            l,
            vec![
                format!("deb {sig} http://deb.debian.org/debian bookworm main"),
                format!("deb {sig} http://deb.debian.org/debian bookworm-updates main"),
                format!("deb {sig} http://deb.debian.org/debian-security bookworm-security main"),
            ]
        );
        assert_eq!(
            machine_sources(t.path(), "trixie").unwrap(),
            vec!["deb [arch=amd64] http://ftp.de.debian.org/debian trixie main".to_string()]
        );
        let e = crate::hint::Hint::with_hint(&machine_sources(t.path(), "sid").unwrap_err());
        assert!(e.contains("\"sid\"") && e.contains("[tree] mirror"), "{e}");
    }

    #[test]
    fn file_mirrors_are_found_in_urls_and_lines() {
        let m = vec![
            "deb [trusted=yes] file:///srv/mirror/ bookworm main".to_string(),
            "file:/other".to_string(),
            "http://deb.debian.org/debian".to_string(),
        ];
        assert_eq!(
            file_mirror_dirs(&m),
            vec![PathBuf::from("/other"), PathBuf::from("/srv/mirror")]
        );
    }

    #[test]
    fn a_file_mirror_is_a_repository_with_dists_or_a_flat_index() {
        let t = tempfile::tempdir().unwrap();
        let (full, flat, none) = (
            t.path().join("full"),
            t.path().join("flat"),
            t.path().join("none"),
        );
        std::fs::create_dir_all(full.join("dists/bookworm")).unwrap();
        std::fs::create_dir_all(&flat).unwrap();
        std::fs::write(flat.join("Packages"), "").unwrap();
        std::fs::create_dir_all(none.join("pool")).unwrap();
        assert!(is_apt_repository(&full));
        assert!(is_apt_repository(&flat));
        assert!(!is_apt_repository(&none));
        let m = vec![format!("deb [trusted=yes] file://{} ./", flat.display())];
        assert_eq!(file_mirror_dirs(&m), vec![flat]);
    }

    #[test]
    fn the_command_line_is_reproducible_and_hooks_are_ordered() {
        let mut s = MmdebstrapSpec::new("bookworm");
        s.packages = vec!["systemd-sysv".into(), "nginx-light".into()];
        s.customize = vec![PathBuf::from("/x/site hook.sh")];
        let mirrors = vec!["deb [trusted=yes] file:///m bookworm main".to_string()];
        let c = command(
            &s,
            &mirrors,
            1735689600,
            Path::new("/t/root"),
            Path::new("/t/hooks"),
        );
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--mode=root",
                "--format=directory",
                "--variant=minbase",
                "--architectures=amd64",
                "--include=systemd-sysv,nginx-light",
                "--aptopt=Acquire::Languages \"none\"",
                "--setup-hook='/t/hooks/mirrors-setup' \"$1\"",
                "--customize-hook='/x/site hook.sh' \"$1\"",
                "--customize-hook='/t/hooks/mirrors-cleanup' \"$1\"",
                "bookworm",
                "/t/root",
                "deb [trusted=yes] file:///m bookworm main",
            ]
        );
        let env: Vec<_> = c.get_envs().collect();
        assert_eq!(
            env,
            vec![(
                std::ffi::OsStr::new("SOURCE_DATE_EPOCH"),
                Some(std::ffi::OsStr::new("1735689600"))
            )]
        );
    }

    #[test]
    fn failures_name_the_key() {
        let mut s = MmdebstrapSpec::new("bookworm");
        s.packages = vec!["nginx-light".into(), "no-such-pkg".into()];
        s.config = Some(PathBuf::from("/etc/genboot/system.toml"));
        let m = vec!["http://deb.debian.org/debian".to_string()];
        let (what, hint) = explain_failure(
            &s,
            &m,
            "I: x\nE: Unable to locate package no-such-pkg\nE: apt-get install failed\n",
            Path::new("/l"),
        );
        assert!(
            what.contains("Unable to locate package no-such-pkg"),
            "{what}"
        );
        assert!(
            hint.contains("/etc/genboot/system.toml: [tree] packages lists \"no-such-pkg\""),
            "{hint}"
        );
        let (what, hint) = explain_failure(
            &s,
            &m,
            "W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Temporary failure resolving 'deb.debian.org'\n",
            Path::new("/l"),
        );
        assert!(what.contains("could not reach the mirror"), "{what}");
        assert!(hint.contains("[tree] mirror"), "{hint}");
    }

    #[test]
    fn a_missing_hook_is_refused_before_running() {
        let mut s = MmdebstrapSpec::new("bookworm");
        s.customize = vec![PathBuf::from("/nonexistent/hook")];
        let e = check(&s).unwrap_err().to_string();
        assert!(
            e.contains("[tree] customize") && e.contains("/nonexistent/hook"),
            "{e}"
        );
    }
}
