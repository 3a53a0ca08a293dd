//! The initrd manifest: what `genboot build` tells the activator about the
//! initrd it is in. Written by the initrd writer, read by `genboot-init`.
//! Plain text, one record a line, fields separated by one space:
//!
//! ```text
//! genboot-initrd 1
//! kernel <release>
//! module <name> <path inside the initrd> [<after>,<after>...]   (in load order)
//! alias <pattern> <module name>               (device aliases of modules in this initrd)
//! firmware <path inside the initrd>
//! ```
//!
//! A module's `<after>` names the modules listed before it that must be in
//! the kernel before it is loaded (its `depends=`, its `softdep` `pre:`
//! modules, and the module whose `softdep` `post:` names it); modules that
//! name none of each other may load at the same time. `alias` records hold
//! only device aliases ([`alias_bus`]): the patterns a device's `modalias`
//! can match, which are all the activator matches against. Paths and
//! patterns contain no spaces (kernel module paths and alias patterns never
//! do) and module names no commas. Lines starting with `#` and empty lines
//! are ignored.

/// Where the manifest lives inside the initrd.
pub const PATH: &str = "/etc/genboot/initrd.manifest";

const MAGIC: &str = "genboot-initrd 1";

/// One module of the initrd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    /// Its path inside the initrd.
    pub path: String,
    /// Modules listed before this one that must be loaded first.
    pub after: Vec<String>,
}

impl Module {
    /// A module with nothing it must wait for.
    pub fn new(name: &str, path: &str) -> Module {
        Module {
            name: name.to_string(),
            path: path.to_string(),
            after: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub kernel_release: String,
    /// Modules in load order.
    pub modules: Vec<Module>,
    /// Alias patterns (with `*`, `?`, `[...]` wildcards) → module name.
    pub aliases: Vec<(String, String)>,
    pub firmware: Vec<String>,
}

/// The bus of a device alias pattern: the word before the colon of a
/// device's `modalias` (`pci:v00001AF4d…` is on `pci`), as the kernel
/// writes the patterns (`scripts/mod/file2alias.c`): `<bus>:…`, or
/// `<bus>*:…` (`acpi*:PNP0A03:*`, `dmi*:bvn*`); `"*"` for any other pattern
/// with a colon (it might match any bus's). `None` for the aliases no device
/// has: names (`crypto-crc32c`, `fs-ext4`, `char-major-…`: a device's
/// `modalias` is `<bus>:…`, and no module writes a wildcard for `<bus>:`)
/// and the `devname:` and `symbol:` namespaces.
pub fn alias_bus(pattern: &str) -> Option<&str> {
    let word_len = pattern
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(pattern.len());
    let (word, rest) = pattern.split_at(word_len);
    if !word.is_empty() && (rest.starts_with(':') || rest.starts_with("*:")) {
        return match word {
            "devname" | "symbol" => None,
            _ => Some(word),
        };
    }
    // Another shape with a colon: it may match any bus's modalias.
    pattern.contains(':').then_some("*")
}

impl Manifest {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        s.push_str(MAGIC);
        s.push('\n');
        s.push_str("kernel ");
        s.push_str(&self.kernel_release);
        s.push('\n');
        for m in &self.modules {
            s.push_str(&format!("module {} {}", m.name, m.path));
            if !m.after.is_empty() {
                s.push(' ');
                s.push_str(&m.after.join(","));
            }
            s.push('\n');
        }
        for (pattern, module) in &self.aliases {
            s.push_str(&format!("alias {pattern} {module}\n"));
        }
        for path in &self.firmware {
            s.push_str(&format!("firmware {path}\n"));
        }
        s
    }

    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, l)) if l == MAGIC => {}
            _ => return Err(format!("first line is not {MAGIC:?}")),
        }
        let mut m = Manifest::default();
        for (i, line) in lines {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || format!("line {}: cannot read {line:?}", i + 1);
            // Fields are non-empty and printable: nothing the writer could
            // not write back the same (a stray `\r`, a tab, a second space).
            if line
                .split(' ')
                .any(|f| f.is_empty() || f.chars().any(char::is_control))
            {
                return Err(bad());
            }
            let mut f = line.split(' ');
            match (f.next(), f.next(), f.next(), f.next(), f.next()) {
                (Some("kernel"), Some(r), None, None, None) => m.kernel_release = r.to_string(),
                (Some("module"), Some(n), Some(p), after, None) => {
                    let mut module = Module::new(n, p);
                    for a in after.map(|a| a.split(',')).into_iter().flatten() {
                        // Only modules listed earlier: the load order is a
                        // valid order, and no module waits for itself.
                        if !m.modules.iter().any(|e| e.name == a) {
                            return Err(format!(
                                "line {}: module {n} is to load after {a:?}, which is not a module listed before it",
                                i + 1
                            ));
                        }
                        module.after.push(a.to_string());
                    }
                    m.modules.push(module);
                }
                (Some("alias"), Some(a), Some(n), None, None) => {
                    m.aliases.push((a.into(), n.into()))
                }
                (Some("firmware"), Some(p), None, None, None) => m.firmware.push(p.into()),
                _ => return Err(bad()),
            }
        }
        if m.kernel_release.is_empty() {
            return Err("no kernel line".into());
        }
        Ok(m)
    }

    /// For each module, the positions of the modules it must wait for (all
    /// before it, as [`Manifest::parse`] checks).
    pub fn after_positions(&self) -> Vec<Vec<usize>> {
        self.modules
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let earlier = self.modules.get(..i).unwrap_or_default();
                // In position order, each once.
                earlier
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| m.after.contains(&e.name))
                    .map(|(j, _)| j)
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let dir = "/lib/modules/6.1.0-50-amd64/kernel";
        Manifest {
            kernel_release: "6.1.0-50-amd64".into(),
            modules: vec![
                Module::new("virtio", &format!("{dir}/drivers/virtio/virtio.ko")),
                Module::new(
                    "virtio_ring",
                    &format!("{dir}/drivers/virtio/virtio_ring.ko"),
                ),
                Module {
                    name: "virtio_blk".into(),
                    path: format!("{dir}/drivers/block/virtio_blk.ko"),
                    after: vec!["virtio".into(), "virtio_ring".into()],
                },
            ],
            aliases: vec![("virtio:d00000002v*".into(), "virtio_blk".into())],
            firmware: vec!["/lib/firmware/a.bin".into()],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let text = m.to_text();
        assert!(
            text.contains("\nmodule virtio_blk /lib/modules/6.1.0-50-amd64/kernel/drivers/block/virtio_blk.ko virtio,virtio_ring\n"),
            "{text}"
        );
        assert!(text.contains(
            "\nmodule virtio /lib/modules/6.1.0-50-amd64/kernel/drivers/virtio/virtio.ko\n"
        ));
        assert_eq!(Manifest::parse(&text).unwrap(), m);
    }

    #[test]
    fn after_names_earlier_modules_only() {
        let head = "genboot-initrd 1\nkernel x\nmodule a /a.ko\n";
        for (bad, says) in [
            ("module b /b.ko c", "module b is to load after \"c\""),
            ("module b /b.ko b", "module b is to load after \"b\""),
            (
                "module b /b.ko a,",
                "line 4: module b is to load after \"\"",
            ),
            ("module b /b.ko ,a", "is to load after \"\""),
            ("module b /b.ko a c", "line 4: cannot read"),
        ] {
            let e = Manifest::parse(&format!("{head}{bad}\n")).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        // A later module may wait for an earlier one, twice said or not.
        let m =
            Manifest::parse(&format!("{head}module b /b.ko a\nmodule c /c.ko b,a,a\n")).unwrap();
        assert_eq!(m.after_positions(), vec![vec![], vec![0], vec![0, 1]]);
        assert_eq!(Manifest::parse(&m.to_text()).unwrap(), m);
    }

    #[test]
    fn after_positions_ignore_names_not_listed_before() {
        // Built by hand (not parsed): a name that is not earlier counts for
        // nothing, so no module can wait for itself or a later one.
        let mut m = sample();
        m.modules[0].after = vec!["virtio_blk".into(), "virtio".into(), "nope".into()];
        assert_eq!(m.after_positions(), vec![vec![], vec![], vec![0, 1]]);
    }

    #[test]
    fn device_aliases_have_a_bus_names_do_not() {
        for (pattern, bus) in [
            ("pci:v00001AF4d*sv*sd*bc*sc*i*", Some("pci")),
            ("virtio:d00000002v*", Some("virtio")),
            ("cpu:type:x86,ven*fam*mod*:feature:*0094*", Some("cpu")),
            ("acpi*:PNP0A03:*", Some("acpi")),
            ("dmi*:bvn*:bvr*:svnLENOVO:*", Some("dmi")),
            ("of:N*T*Cacme,x", Some("of")),
            ("serial-base:x", Some("serial-base")),
            ("*:foo", Some("*")),
            ("[ab]*:foo", Some("*")),
            ("crypto-crc32c", None),
            ("crc32c", None),
            ("fs-ext4", None),
            ("char-major-10-*", None),
            ("devname:fuse", None),
            ("symbol:foo", None),
            ("platform", None),
            ("*", None),
            ("", None),
            ("pci*x:y", Some("*")),
            ("a b:c", Some("*")),
        ] {
            assert_eq!(alias_bus(pattern), bus, "{pattern}");
        }
    }

    #[test]
    fn rejects_control_characters_and_empty_fields() {
        // Found by the fuzz harness (fuzz/, target manifest): a last line
        // ending in a bare `\r` kept it in the value, and the value written
        // back read differently.
        for bad in [
            "alias v* io_pci\r",
            "module a\tb /x.ko",
            "module  a /x.ko",
            "module a /x.ko ",
            "firmware /a\u{7f}",
            "kernel ",
        ] {
            let text = format!("genboot-initrd 1\nkernel x\n{bad}");
            let e = Manifest::parse(&text).unwrap_err();
            assert!(e.contains("line 3: cannot read"), "{bad:?}: {e}");
        }
        // CRLF line ends are still line ends.
        let m = Manifest::parse("genboot-initrd 1\r\nkernel x\r\n").unwrap();
        assert_eq!(m.kernel_release, "x");
    }

    #[test]
    fn rejects_unknown_record() {
        let e = Manifest::parse("genboot-initrd 1\nkernel x\nbogus y\n").unwrap_err();
        assert!(e.contains("line 3"), "{e}");
    }
}
