//! The whole of genboot-init on a hostile disk: `activate::run` against an
//! in-memory machine whose disk `vda` holds the fuzz input (a GPT in its
//! first 34 sectors, partition 1's bytes after them). This reaches the glue
//! the unit targets do not: the GPT offset arithmetic with the disk's block
//! size, the superblock probe of the partition, the root wait with its
//! clock, the mount, the generation checks and the switch.

use genboot_format::store_name::StoreHash;
use genboot_init::activate::{self, Outcome};
use genboot_init::inroot::{resolve_in_root, Follow};
use genboot_init::sys::{Kind, Loaded, Meta, ModuleLoad, Sys};
use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

/// Where partition 1 starts in the input (after the GPT's 34 sectors).
pub const PART_OFFSET: usize = 34 * 512;
const KVER: &str = "6.1.0-47-cloud-amd64";
const GEN: &str =
    "/var/lib/genboot/store/0123456789abcdef0123456789abcdef-genboot-system-6.1.0-47-cloud-amd64";

enum Node {
    Dir,
    File(Vec<u8>, u32),
    Link(String),
    /// The whole disk: the input.
    Disk,
    /// Partition 1: the input from [`PART_OFFSET`].
    Part,
}

struct Machine<'a> {
    disk: &'a [u8],
    tree: BTreeMap<String, Node>,
    clock_us: u64,
}

fn err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

impl<'a> Machine<'a> {
    fn new(disk: &'a [u8], cmdline: &str) -> Machine<'a> {
        let mut m = Machine {
            disk,
            tree: BTreeMap::new(),
            clock_us: 1_000_000,
        };
        m.file("/proc/cmdline", cmdline.as_bytes(), 0o444);
        m.file(
            genboot_format::manifest::PATH,
            format!("genboot-initrd 1\nkernel {KVER}\n").as_bytes(),
            0o644,
        );
        let sysdisk = "/sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda";
        m.file(
            &format!("{sysdisk}/queue/logical_block_size"),
            b"512\n",
            0o444,
        );
        m.file(&format!("{sysdisk}/vda1/partition"), b"1\n", 0o444);
        m.link(
            "/sys/class/block/vda",
            "../../devices/pci0000:00/0000:00:04.0/virtio1/block/vda",
        );
        m.link(
            "/sys/class/block/vda1",
            "../../devices/pci0000:00/0000:00:04.0/virtio1/block/vda/vda1",
        );
        m.tree.insert("/dev/vda".into(), Node::Disk);
        m.tree.insert("/dev/vda1".into(), Node::Part);
        // The root as it is seen at /sysroot: Debian-shaped, one generation.
        m.link("/sysroot/sbin", "usr/sbin");
        m.link("/sysroot/usr/sbin/init", "/lib/systemd/systemd");
        m.link("/sysroot/lib", "usr/lib");
        m.file("/sysroot/usr/lib/systemd/systemd", b"\x7fELF", 0o755);
        let bj =
            format!("{{\"org.genboot.v1\": {{\"format\": 1, \"kernelRelease\": \"{KVER}\"}}}}\n");
        m.file(&format!("/sysroot{GEN}/boot.json"), bj.as_bytes(), 0o444);
        m.link(&format!("/sysroot{GEN}/init"), "/sbin/init");
        m
    }

    fn parents(&mut self, path: &str) {
        let mut p = String::new();
        for c in path.split('/').filter(|c| !c.is_empty()) {
            p.push('/');
            p.push_str(c);
            if p.len() < path.len() {
                self.tree.entry(p.clone()).or_insert(Node::Dir);
            }
        }
        self.tree.entry("/".into()).or_insert(Node::Dir);
    }
    fn file(&mut self, path: &str, data: &[u8], mode: u32) {
        self.parents(path);
        self.tree
            .insert(path.into(), Node::File(data.to_vec(), mode));
    }
    fn link(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.tree.insert(path.into(), Node::Link(target.into()));
    }

    /// The node at `path`, symlinks followed the kernel's way.
    fn follow(&mut self, path: &str) -> io::Result<&Node> {
        let p = resolve_in_root(self, "/", path, Follow::All)?;
        self.tree.get(&p).ok_or_else(|| err(libc::ENOENT))
    }

    fn bytes<'n>(&'n self, n: &'n Node) -> io::Result<&'n [u8]> {
        match n {
            Node::File(d, _) => Ok(d),
            Node::Disk => Ok(self.disk),
            Node::Part => Ok(self.disk.get(PART_OFFSET..).unwrap_or_default()),
            _ => Err(err(libc::EISDIR)),
        }
    }

    fn meta(n: &Node) -> Meta {
        let (kind, mode) = match n {
            Node::Dir => (Kind::Dir, 0o755),
            Node::File(_, m) => (Kind::File, *m),
            Node::Link(_) => (Kind::Symlink, 0o777),
            Node::Disk | Node::Part => (Kind::Other, 0o660),
        };
        Meta {
            kind,
            dev: 1,
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

impl Sys for Machine<'_> {
    fn now_us(&mut self) -> u64 {
        self.clock_us += 10;
        self.clock_us
    }
    fn console(&mut self, _line: &str) {}
    fn kmsg(&mut self, _level: u8, _line: &str) {}
    fn kernel_release(&mut self) -> io::Result<String> {
        Ok(KVER.into())
    }
    fn mount(&mut self, _: &str, _: &str, _: &str, _: u64, _: &str) -> io::Result<()> {
        Ok(())
    }
    fn umount(&mut self, _: &str, _: i32) -> io::Result<()> {
        Ok(())
    }
    fn mount_loop(&mut self, _: &str, _: &str, _: &str, _: u64, _: &str) -> io::Result<String> {
        Ok("/dev/loop0".into())
    }
    fn symlink(&mut self, target: &str, path: &str) -> io::Result<()> {
        self.tree.insert(path.into(), Node::Link(target.into()));
        Ok(())
    }
    fn mkdir(&mut self, path: &str, _mode: u32) -> io::Result<()> {
        if self.tree.contains_key(path) {
            return Err(err(libc::EEXIST));
        }
        self.tree.insert(path.into(), Node::Dir);
        Ok(())
    }
    fn load_module(&mut self, _: &str, _: bool) -> io::Result<()> {
        Ok(())
    }
    fn load_modules(&mut self, jobs: &[ModuleLoad<'_>], _threads: usize) -> Vec<Loaded> {
        jobs.iter()
            .map(|_| Loaded {
                result: Ok(()),
                start_us: self.now_us(),
                end_us: self.now_us(),
            })
            .collect()
    }
    fn cpus(&mut self) -> usize {
        1
    }
    fn read_file(&mut self, path: &str) -> io::Result<Vec<u8>> {
        let p = resolve_in_root(self, "/", path, Follow::All)?;
        let node = self.tree.get(&p).ok_or_else(|| err(libc::ENOENT))?;
        self.bytes(node).map(<[u8]>::to_vec)
    }
    fn read_at(&mut self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let p = resolve_in_root(self, "/", path, Follow::All)?;
        let node = self.tree.get(&p).ok_or_else(|| err(libc::ENOENT))?;
        let all = self.bytes(node)?;
        let s = usize::try_from(offset).unwrap_or(usize::MAX).min(all.len());
        Ok(all
            .get(s..s.saturating_add(len).min(all.len()))
            .unwrap_or_default()
            .to_vec())
    }
    fn read_dir(&mut self, path: &str) -> io::Result<Vec<(String, Kind)>> {
        let prefix = if path == "/" {
            "/".to_string()
        } else {
            format!("{}/", path.trim_end_matches('/'))
        };
        Ok(self
            .tree
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| k.len() > prefix.len() && !k[prefix.len()..].contains('/'))
            .map(|(k, n)| (k[prefix.len()..].to_string(), Machine::meta(n).kind))
            .collect())
    }
    fn read_link(&mut self, path: &str) -> io::Result<String> {
        match self.tree.get(path) {
            Some(Node::Link(t)) => Ok(t.clone()),
            Some(_) => Err(err(libc::EINVAL)),
            None => Err(err(libc::ENOENT)),
        }
    }
    fn lstat(&mut self, path: &str) -> io::Result<Meta> {
        self.tree
            .get(path)
            .map(Machine::meta)
            .ok_or_else(|| err(libc::ENOENT))
    }
    fn stat(&mut self, path: &str) -> io::Result<Meta> {
        self.follow(path).map(Machine::meta)
    }
    fn write_file(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        self.tree
            .insert(path.into(), Node::File(data.to_vec(), 0o644));
        Ok(())
    }
    fn unlink(&mut self, _: &str) -> io::Result<()> {
        Ok(())
    }
    fn rmdir(&mut self, _: &str) -> io::Result<()> {
        Ok(())
    }
    fn sha256_file(&mut self, path: &str) -> io::Result<[u8; 32]> {
        let data = self.read_file(path)?;
        genboot_format::storehash::file_digest(&data[..], None).map(|(_, d)| d)
    }
    fn hash_tree(&mut self, _: &str, _: &str, own: &StoreHash) -> io::Result<StoreHash> {
        Ok(*own)
    }
    fn chdir(&mut self, _: &str) -> io::Result<()> {
        Ok(())
    }
    fn chroot(&mut self, _: &str) -> io::Result<()> {
        Ok(())
    }
    fn exec(&mut self, _: &str, _: &[String]) -> io::Result<()> {
        Ok(())
    }
    fn run_shell(&mut self, _: &str, _: &str) -> io::Result<()> {
        Ok(())
    }
    fn sleep(&mut self, d: Duration) {
        self.clock_us = self
            .clock_us
            .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }
    fn reboot(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Boot from `disk` three times: the root by PARTUUID (the GPT's entry 1),
/// by UUID and by LABEL (partition 1's superblock). Returns the outcomes.
pub fn boot(disk: &[u8]) -> Vec<Outcome> {
    let specs = [
        "PARTUUID=65737000-0000-4000-8000-000000000001",
        "UUID=6e6f6f74-f5f5-4e4e-8a8a-000000000001",
        "LABEL=genboot-root",
    ];
    specs
        .iter()
        .map(|spec| {
            let cmdline =
                format!("root={spec} rw genboot.timeout=1 genboot.verify init={GEN}/init");
            let mut m = Machine::new(disk, &cmdline);
            activate::run(&mut m)
        })
        .collect()
}
