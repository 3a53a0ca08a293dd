//! The initrd manifest: what `genboot build` tells the activator about the
//! initrd it is in. Written by the initrd writer, read by `genboot-init`.
//! Plain text, one record a line, fields separated by one space:
//!
//! ```text
//! genboot-initrd 1
//! kernel <release>
//! module <name> <path inside the initrd>      (in load order)
//! alias <pattern> <module name>               (only modules in this initrd)
//! firmware <path inside the initrd>
//! ```
//!
//! Paths and patterns contain no spaces (kernel module paths and alias
//! patterns never do). Lines starting with `#` and empty lines are ignored.

/// Where the manifest lives inside the initrd.
pub const PATH: &str = "/etc/genboot/initrd.manifest";

const MAGIC: &str = "genboot-initrd 1";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub kernel_release: String,
    /// Modules in load order: (name, path inside the initrd).
    pub modules: Vec<(String, String)>,
    /// Alias patterns (with `*`, `?`, `[...]` wildcards) → module name.
    pub aliases: Vec<(String, String)>,
    pub firmware: Vec<String>,
}

impl Manifest {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        s.push_str(MAGIC);
        s.push('\n');
        s.push_str("kernel ");
        s.push_str(&self.kernel_release);
        s.push('\n');
        for (name, path) in &self.modules {
            s.push_str(&format!("module {name} {path}\n"));
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
            match (f.next(), f.next(), f.next(), f.next()) {
                (Some("kernel"), Some(r), None, None) => m.kernel_release = r.to_string(),
                (Some("module"), Some(n), Some(p), None) => m.modules.push((n.into(), p.into())),
                (Some("alias"), Some(a), Some(n), None) => m.aliases.push((a.into(), n.into())),
                (Some("firmware"), Some(p), None, None) => m.firmware.push(p.into()),
                _ => return Err(bad()),
            }
        }
        if m.kernel_release.is_empty() {
            return Err("no kernel line".into());
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = Manifest {
            kernel_release: "6.1.0-50-amd64".into(),
            modules: vec![(
                "virtio_blk".into(),
                "/lib/modules/6.1.0-50-amd64/kernel/drivers/block/virtio_blk.ko".into(),
            )],
            aliases: vec![("virtio:d00000002v*".into(), "virtio_blk".into())],
            firmware: vec!["/lib/firmware/a.bin".into()],
        };
        assert_eq!(Manifest::parse(&m.to_text()).unwrap(), m);
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
