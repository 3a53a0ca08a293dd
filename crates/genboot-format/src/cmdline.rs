//! The kernel command line, split the way the kernel splits it
//! (`lib/cmdline.c: next_arg`), and the switches genboot-init reads from it.
//!
//! Splitting rules: parameters are separated by whitespace; a double quote
//! toggles quoting, so `a="b c"` is one parameter; a value's enclosing quotes
//! are dropped (`a="b c"` gives `b c`), as are a whole quoted parameter's;
//! `--` ends the kernel's parameters and what follows goes to init, up to
//! a second `--`.
//! A key given more than once: the last value wins ([`Cmdline::value`]),
//! all are kept ([`Cmdline::values`]).

use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    /// Every parameter before `--`, in order: (key, value if `=` was given).
    pub params: Vec<(String, Option<String>)>,
    /// Everything after `--`: the arguments of the stage-2 init.
    pub init_args: Vec<String>,
}

impl Cmdline {
    pub fn parse(text: &str) -> Cmdline {
        let b = text.as_bytes();
        let mut i = 0;
        let mut out = Cmdline::default();
        let mut after_dashes = false;
        loop {
            while b.get(i).copied().is_some_and(is_space) {
                i += 1;
            }
            if i >= b.len() {
                break;
            }
            let (key, val, next) = next_arg(b, i);
            i = next;
            if after_dashes {
                // The kernel parses init's part with the same loop, which
                // stops at a second `--`: the rest reaches no one.
                if key == "--" && val.is_none() {
                    break;
                }
                // The kernel hands these to init as they are split, `=` and all.
                let mut arg = key;
                if let Some(v) = val {
                    arg.push('=');
                    arg.push_str(&v);
                }
                out.init_args.push(arg);
            } else if key == "--" && val.is_none() {
                after_dashes = true;
            } else {
                out.params.push((key, val));
            }
        }
        out
    }

    /// The last value given for `key` (`Some("")` for `key=`).
    pub fn value(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, v)| k == key && v.is_some())
            .and_then(|(_, v)| v.as_deref())
    }

    /// Every value given for `key`, in order.
    pub fn values(&self, key: &str) -> Vec<&str> {
        self.params
            .iter()
            .filter(|(k, _)| k == key)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }

    /// A switch: present as `key`, or `key=` with a value other than
    /// `0`, `n`, `no`, `off`, `false`; the last occurrence decides.
    pub fn flag(&self, key: &str) -> bool {
        match self.params.iter().rev().find(|(k, _)| k == key) {
            None => false,
            Some((_, None)) => true,
            Some((_, Some(v))) => !matches!(v.as_str(), "0" | "n" | "no" | "off" | "false"),
        }
    }

    /// Whether the root is mounted read-only: the last of `ro`/`rw` wins,
    /// and like the kernel the default is read-only.
    pub fn read_only(&self) -> bool {
        !matches!(
            self.params
                .iter()
                .rev()
                .find(|(k, v)| v.is_none() && (k == "ro" || k == "rw")),
            Some((k, _)) if k == "rw"
        )
    }
}

/// The kernel's `isspace` (`lib/ctype.c`): space, `\t` to `\r` (with `\v`),
/// and Latin-1's no-break space 0xA0, a byte the kernel splits on even
/// inside a UTF-8 character.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t'..=b'\r' | 0xA0)
}

/// One argument starting at `start` (not whitespace): key, value, and the
/// index after it. Mirrors the kernel's `next_arg`, including that an `=`
/// right at the start does not count (its "no `=` yet" is index 0).
fn next_arg(b: &[u8], start: usize) -> (String, Option<String>, usize) {
    let at = |k: usize| b.get(k).copied();
    let mut s = start;
    let mut in_quote = false;
    let mut quoted = false;
    if at(s) == Some(b'"') {
        s += 1;
        in_quote = true;
        quoted = true;
    }
    let mut i = s;
    let mut equals = None;
    while let Some(c) = at(i) {
        if is_space(c) && !in_quote {
            break;
        }
        if equals.is_none() && c == b'=' && i > s {
            equals = Some(i);
        }
        if c == b'"' {
            in_quote = !in_quote;
        }
        i += 1;
    }
    let end = i;
    let last_is_quote = end > 0 && at(end - 1) == Some(b'"');
    // The kernel cuts a closing quote at end-1 when the value or the whole
    // parameter was quoted.
    let mut cut_end = end;
    let (key_end, val) = match equals {
        None => (None, None),
        Some(eq) => {
            let mut vs = eq + 1;
            if vs < end && at(vs) == Some(b'"') {
                vs += 1;
                if last_is_quote && end > vs {
                    cut_end = end - 1;
                }
            }
            (Some(eq), Some(vs))
        }
    };
    if quoted && end > s && last_is_quote {
        cut_end = cut_end.min(end - 1);
    }
    let text = |a: usize, z: usize| {
        String::from_utf8_lossy(b.get(a..z.max(a)).unwrap_or_default()).into_owned()
    };
    match (key_end, val) {
        (Some(k), Some(v)) => (text(s, k), Some(text(v, cut_end)), end),
        _ => (text(s, cut_end), None, end),
    }
}

/// Why `value` cannot go on the kernel command line as one parameter of a
/// line genboot writes, if it cannot: a control character ends or garbles
/// the line, a `"` starts a quoted value that swallows the rest of the line
/// (the `init=` genboot appends included), and a `--` word hands everything
/// after it to the stage-2 init instead of the kernel and genboot-init.
/// The builder checks every configured parameter (and `root=`, the mount
/// options) with this before it writes a command line.
pub fn param_problem(value: &str) -> Option<&'static str> {
    if value.chars().any(char::is_control) {
        Some("contains a control character")
    } else if value.contains('"') {
        Some("contains a double quote, which would make the kernel read the rest of the command line (the init= genboot appends included) as one quoted value")
    } else if value.split_whitespace().any(|w| w == "--") {
        Some("contains `--`, after which the kernel hands every parameter (the init= genboot appends included) to the stage-2 init")
    } else {
        None
    }
}

/// How `root=` names the root device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    /// GPT partition GUID, lower case.
    PartUuid(String),
    /// File-system UUID (lower case; vfat's `XXXX-XXXX` upper case).
    Uuid(String),
    Label(String),
    /// A `/dev` path.
    Path(String),
}

impl RootSpec {
    pub fn parse(s: &str) -> Result<RootSpec, String> {
        let nonempty = |v: &str, what: &str| {
            if v.is_empty() {
                Err(format!("root={s} has an empty {what}"))
            } else {
                Ok(v.to_string())
            }
        };
        if let Some(v) = s.strip_prefix("PARTUUID=") {
            Ok(RootSpec::PartUuid(
                nonempty(v, "PARTUUID")?.to_ascii_lowercase(),
            ))
        } else if let Some(v) = s.strip_prefix("UUID=") {
            Ok(RootSpec::Uuid(nonempty(v, "UUID")?))
        } else if let Some(v) = s.strip_prefix("LABEL=") {
            Ok(RootSpec::Label(nonempty(v, "LABEL")?))
        } else if s.starts_with("/dev/") {
            Ok(RootSpec::Path(s.to_string()))
        } else {
            Err(format!(
                "root={s} is not PARTUUID=, UUID=, LABEL= or a /dev path"
            ))
        }
    }
}

impl std::fmt::Display for RootSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootSpec::PartUuid(v) => write!(f, "PARTUUID={v}"),
            RootSpec::Uuid(v) => write!(f, "UUID={v}"),
            RootSpec::Label(v) => write!(f, "LABEL={v}"),
            RootSpec::Path(v) => f.write_str(v),
        }
    }
}

/// The default of `genboot.timeout=`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most `genboot.timeout=` accepts: one day. More is a typo, and would
/// overflow the microsecond clock arithmetic of the wait.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;

/// What genboot-init takes from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    pub root: RootSpec,
    /// `rootfstype=`, split at commas (the kernel tries each).
    pub fstypes: Vec<String>,
    pub rootflags: String,
    pub read_only: bool,
    /// `init=`: `<store>/<hash>-<name>/init`.
    pub init: Option<String>,
    pub init_args: Vec<String>,
    pub recovery: bool,
    pub shell_on_fail: bool,
    pub debug: bool,
    pub verify: bool,
    pub timeout: Duration,
}

fn too_long(t: &str) -> String {
    format!(
        "genboot.timeout={t} is more than {MAX_TIMEOUT_SECS} seconds (one day); give the seconds to wait for the root device, 1 to {MAX_TIMEOUT_SECS}"
    )
}

impl BootArgs {
    pub fn from_cmdline(c: &Cmdline) -> Result<BootArgs, String> {
        let root = match c.value("root") {
            None => return Err("no root= on the kernel command line".into()),
            Some(r) => RootSpec::parse(r)?,
        };
        let timeout = match c.value("genboot.timeout") {
            None => DEFAULT_TIMEOUT,
            Some(t) => match t.parse::<u64>() {
                Ok(s) if (1..=MAX_TIMEOUT_SECS).contains(&s) => Duration::from_secs(s),
                // Above the maximum, or above what 64 bits hold.
                Ok(s) if s > MAX_TIMEOUT_SECS => {
                    return Err(too_long(t));
                }
                Err(_) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
                    return Err(too_long(t));
                }
                _ => {
                    return Err(format!(
                        "genboot.timeout={t} is not a whole number of seconds from 1 to {MAX_TIMEOUT_SECS}"
                    ))
                }
            },
        };
        let recovery = c.flag("genboot.recovery");
        Ok(BootArgs {
            root,
            fstypes: c
                .value("rootfstype")
                .unwrap_or("")
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            rootflags: c.value("rootflags").unwrap_or("").to_string(),
            read_only: recovery || c.read_only(),
            init: c.value("init").map(str::to_string),
            init_args: c.init_args.clone(),
            recovery,
            shell_on_fail: c.flag("genboot.shell_on_fail"),
            debug: c.flag("genboot.debug"),
            verify: c.flag("genboot.verify"),
            timeout,
        })
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn kv(k: &str, v: Option<&str>) -> (String, Option<String>) {
        (k.to_string(), v.map(str::to_string))
    }

    #[test]
    fn splits_on_whitespace_and_equals() {
        let c = Cmdline::parse("  root=/dev/vda1\tro  console=ttyS0,115200 quiet\n");
        assert_eq!(
            c.params,
            vec![
                kv("root", Some("/dev/vda1")),
                kv("ro", None),
                kv("console", Some("ttyS0,115200")),
                kv("quiet", None)
            ]
        );
        assert!(c.init_args.is_empty());
    }

    #[test]
    fn double_quotes_group_and_are_dropped_from_values() {
        let c = Cmdline::parse(r#"a="b c" "d e=f" g=h"i j"k x="" y= z"#);
        assert_eq!(
            c.params,
            vec![
                kv("a", Some("b c")),
                kv("d e", Some("f")),
                kv("g", Some(r#"h"i j"k"#)),
                kv("x", Some("")),
                kv("y", Some("")),
                kv("z", None),
            ]
        );
    }

    #[test]
    fn splits_where_the_kernel_does() {
        // \v and the byte 0xA0 are spaces to the kernel's isspace; an `=`
        // at the very start of a parameter is not its key/value separator.
        let c = Cmdline::parse("a\u{b}b =x=y");
        assert_eq!(
            c.params,
            vec![kv("a", None), kv("b", None), kv("=x", Some("y"))]
        );
        // "\u{a0}" is C2 A0 in UTF-8: the kernel splits after C2.
        let c = Cmdline::parse("x\u{a0}y");
        assert_eq!(c.params, vec![kv("x\u{fffd}", None), kv("y", None)]);
    }

    #[test]
    fn unterminated_quote_runs_to_the_end() {
        let c = Cmdline::parse(r#"a="b c d"#);
        assert_eq!(c.params, vec![kv("a", Some("b c d"))]);
    }

    #[test]
    fn double_dash_hands_the_rest_to_init() {
        let c = Cmdline::parse(r#"root=LABEL=r -- single "two words" x="y z" -- lost"#);
        assert_eq!(c.params, vec![kv("root", Some("LABEL=r"))]);
        assert_eq!(c.init_args, vec!["single", "two words", "x=y z"]);
    }

    #[test]
    fn repeated_keys_last_value_wins_all_are_listed() {
        let c = Cmdline::parse("console=tty0 console=ttyS0 root=/dev/a root=/dev/b");
        assert_eq!(c.value("console"), Some("ttyS0"));
        assert_eq!(c.values("console"), vec!["tty0", "ttyS0"]);
        assert_eq!(c.value("root"), Some("/dev/b"));
        assert_eq!(c.value("nothing"), None);
    }

    #[test]
    fn ro_rw_last_wins_and_default_is_ro() {
        assert!(Cmdline::parse("quiet").read_only());
        assert!(!Cmdline::parse("ro rw").read_only());
        assert!(Cmdline::parse("rw ro").read_only());
    }

    #[test]
    fn flags_accept_bare_and_valued_forms() {
        let c = Cmdline::parse("genboot.debug genboot.verify=0 genboot.recovery=1");
        assert!(c.flag("genboot.debug"));
        assert!(!c.flag("genboot.verify"));
        assert!(c.flag("genboot.recovery"));
        assert!(!c.flag("genboot.shell_on_fail"));
    }

    #[test]
    fn root_specs() {
        assert_eq!(
            RootSpec::parse("PARTUUID=6E6F6F74-0000-4000-8000-000000000002").unwrap(),
            RootSpec::PartUuid("6e6f6f74-0000-4000-8000-000000000002".into())
        );
        assert_eq!(
            RootSpec::parse("UUID=abcd").unwrap(),
            RootSpec::Uuid("abcd".into())
        );
        assert_eq!(
            RootSpec::parse("LABEL=my root").unwrap(),
            RootSpec::Label("my root".into())
        );
        assert_eq!(
            RootSpec::parse("/dev/vda2").unwrap(),
            RootSpec::Path("/dev/vda2".into())
        );
        assert!(RootSpec::parse("vda2")
            .unwrap_err()
            .contains("not PARTUUID="));
        assert!(RootSpec::parse("UUID=").unwrap_err().contains("empty UUID"));
    }

    #[test]
    fn configured_parameters_that_would_change_the_line_are_refused() {
        for ok in ["quiet", "console=ttyS0,115200", "a b", "x=--", "--x"] {
            assert_eq!(param_problem(ok), None, "{ok:?}");
        }
        for (bad, why) in [
            ("a\nb", "control character"),
            ("a\u{1}", "control character"),
            ("x=\"y", "double quote"),
            ("--", "`--`"),
            ("a -- b", "`--`"),
        ] {
            assert!(
                param_problem(bad).is_some_and(|w| w.contains(why)),
                "{bad:?}"
            );
        }
        // What the rules let through reaches the kernel as it was written,
        // and nothing of it leaks to init.
        for p in ["quiet", "console=ttyS0,115200", "x=--"] {
            let c = Cmdline::parse(&format!("{p} init=/x"));
            assert_eq!(c.value("init"), Some("/x"), "{p:?}");
            assert!(c.init_args.is_empty());
        }
    }

    #[test]
    fn boot_args_from_a_full_line() {
        let c = Cmdline::parse(
            "root=PARTUUID=AA rootfstype=ext4,xfs rootflags=noatime rw \
             init=/var/lib/genboot/store/x/init genboot.timeout=5 genboot.verify -- -s",
        );
        let a = BootArgs::from_cmdline(&c).unwrap();
        assert_eq!(a.root, RootSpec::PartUuid("aa".into()));
        assert_eq!(a.fstypes, vec!["ext4", "xfs"]);
        assert_eq!(a.rootflags, "noatime");
        assert!(!a.read_only);
        assert_eq!(a.init.as_deref(), Some("/var/lib/genboot/store/x/init"));
        assert_eq!(a.init_args, vec!["-s"]);
        assert_eq!(a.timeout, Duration::from_secs(5));
        assert!(a.verify && !a.recovery && !a.debug && !a.shell_on_fail);
    }

    #[test]
    fn recovery_forces_read_only() {
        let c = Cmdline::parse("root=/dev/vda1 rw genboot.recovery");
        assert!(BootArgs::from_cmdline(&c).unwrap().read_only);
    }

    #[test]
    fn boot_args_errors_name_the_parameter() {
        let e = BootArgs::from_cmdline(&Cmdline::parse("quiet")).unwrap_err();
        assert!(e.contains("no root="), "{e}");
        let e =
            BootArgs::from_cmdline(&Cmdline::parse("root=/dev/a genboot.timeout=x")).unwrap_err();
        assert!(e.contains("genboot.timeout=x"), "{e}");
        let c = Cmdline::parse("root=/dev/a");
        assert_eq!(BootArgs::from_cmdline(&c).unwrap().timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn absurd_timeouts_are_refused_not_truncated() {
        // Issue 10, item 17: 18446744073709552 s is 2^64 us and a bit; it
        // truncated to a few seconds when turned into microseconds.
        for t in [
            "18446744073709552",
            "18446744073709551615",
            "99999999999999999999999",
            "86401",
        ] {
            let c = Cmdline::parse(&format!("root=/dev/a genboot.timeout={t}"));
            let e = BootArgs::from_cmdline(&c).unwrap_err();
            assert!(
                e.contains(&format!("genboot.timeout={t} is more than 86400 seconds")),
                "{e}"
            );
        }
        for t in ["0", "-1", "1e3", "", "000"] {
            let c = Cmdline::parse(&format!("root=/dev/a genboot.timeout={t}"));
            let e = BootArgs::from_cmdline(&c).unwrap_err();
            assert!(
                e.contains("is not a whole number of seconds from 1 to 86400"),
                "{t}: {e}"
            );
        }
        let c = Cmdline::parse("root=/dev/a genboot.timeout=86400");
        assert_eq!(
            BootArgs::from_cmdline(&c).unwrap().timeout,
            Duration::from_secs(86_400)
        );
    }
}
