//! The recording fake: an in-memory file tree, a clock, and a log of every
//! effect as one line of text, so tests assert the exact sequence.
//! Failures are injected by call prefix.

use super::{flags, Kind, Loaded, Meta, ModuleLoad, Sys};
use genboot_format::store_name::StoreHash;
use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// One entry of the fake's file tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) node: Node,
    /// The device id of the file system holding it.
    pub(crate) dev: u64,
    /// `st_mode & 0o7777`.
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl Entry {
    fn new(node: Node, dev: u64) -> Entry {
        let mode = match node {
            Node::Dir => 0o755,
            Node::File(_) => 0o644,
            Node::Symlink(_) => 0o777,
        };
        Entry {
            node,
            dev,
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

/// The fake's file tree is the process's whole view: one namespace whose
/// `/` is the initramfs, with the root file system below `/sysroot` like
/// any other directory. Its path walk is the kernel's: an absolute symlink
/// restarts at `/` (the initramfs, not `/sysroot`), `..` stops at `/`, at
/// most 40 links. `chroot` and `MS_MOVE` are recorded, not modelled.
#[derive(Debug, Default)]
pub(crate) struct FakeSys {
    /// Absolute path → entry.
    pub(crate) tree: BTreeMap<String, Entry>,
    /// Effects, in order, e.g. `mount proc /proc proc MS_NOSUID|MS_NODEV|MS_NOEXEC ""`.
    pub(crate) calls: Vec<String>,
    pub(crate) console: Vec<String>,
    pub(crate) kmsg: Vec<String>,
    /// A call whose log line starts with the prefix fails with the errno.
    pub(crate) fail: Vec<(String, i32)>,
    /// `hash_tree` results by directory; unset: the hash in the name.
    pub(crate) hashes: BTreeMap<String, StoreHash>,
    pub(crate) release: String,
    pub(crate) clock_us: u64,
    /// Directories listed, in order (reads are not effects, but their cost is).
    pub(crate) listed: Vec<String>,
    /// Modules whose `load_module` says EEXIST.
    pub(crate) builtin_paths: Vec<String>,
    /// What `cpus` says (1 unless a test sets it).
    pub(crate) cpus: usize,
    /// Each `load_modules` call: the threads asked for and every job's
    /// `after`.
    pub(crate) batches: Vec<(usize, Vec<Vec<usize>>)>,
}

fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) => "/",
        Some(i) => &p[..i],
        None => ".",
    }
}

fn join(base: &str, rel: &str) -> String {
    if rel.starts_with('/') {
        return rel.to_string();
    }
    let mut parts: Vec<&str> = base.split('/').filter(|s| !s.is_empty()).collect();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

impl FakeSys {
    pub(crate) fn new() -> FakeSys {
        let mut f = FakeSys {
            release: "6.1.0-50-amd64".into(),
            clock_us: 1_000_000,
            cpus: 1,
            ..FakeSys::default()
        };
        f.tree.insert("/".into(), Entry::new(Node::Dir, 1));
        f
    }

    /// Add a directory (and its parents) on device `dev`.
    pub(crate) fn dir(&mut self, path: &str, dev: u64) {
        if path != "/" && !self.tree.contains_key(parent(path)) {
            self.dir(parent(path), dev);
        }
        self.tree
            .entry(path.into())
            .or_insert(Entry::new(Node::Dir, dev));
    }
    /// Add a file (mode 0644).
    pub(crate) fn file(&mut self, path: &str, data: &[u8], dev: u64) {
        self.dir(parent(path), dev);
        self.tree
            .insert(path.into(), Entry::new(Node::File(data.to_vec()), dev));
    }
    /// Add an executable file (mode 0755).
    pub(crate) fn exe(&mut self, path: &str, data: &[u8], dev: u64) {
        self.file(path, data, dev);
        self.chmod(path, 0o755);
    }
    pub(crate) fn link(&mut self, path: &str, target: &str, dev: u64) {
        self.dir(parent(path), dev);
        self.tree
            .insert(path.into(), Entry::new(Node::Symlink(target.into()), dev));
    }
    /// Set the mode of an existing entry (no link followed).
    pub(crate) fn chmod(&mut self, path: &str, mode: u32) {
        self.tree.get_mut(path).expect("chmod of a fake entry").mode = mode;
    }
    pub(crate) fn chown(&mut self, path: &str, uid: u32, gid: u32) {
        let e = self.tree.get_mut(path).expect("chown of a fake entry");
        e.uid = uid;
        e.gid = gid;
    }
    /// Make everything below `prefix` read-only as the store does: files
    /// 0444 (0555 when executable), directories 0555.
    pub(crate) fn make_read_only(&mut self, prefix: &str) {
        let inside = format!("{prefix}/");
        for (k, e) in self.tree.iter_mut() {
            if k != prefix && !k.starts_with(&inside) {
                continue;
            }
            e.mode = match e.node {
                Node::Dir => 0o555,
                Node::File(_) if e.mode & 0o100 != 0 => 0o555,
                Node::File(_) => 0o444,
                Node::Symlink(_) => 0o777,
            };
        }
    }

    fn record(&mut self, line: String) -> io::Result<()> {
        let failing = self
            .fail
            .iter()
            .find(|(p, _)| line.starts_with(p.as_str()))
            .map(|(_, e)| *e);
        self.calls.push(line);
        match failing {
            Some(e) => Err(err(e)),
            None => Ok(()),
        }
    }

    /// Resolve symlinks in every component (`follow_last`: also the last).
    fn resolve(&self, path: &str, follow_last: bool) -> io::Result<String> {
        let mut todo: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .rev()
            .map(String::from)
            .collect();
        let mut cur = String::from("/");
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            let next = join(&cur, &c);
            if c == ".." || c == "." {
                cur = next;
                continue;
            }
            match self.tree.get(&next).map(|e| &e.node) {
                Some(Node::Symlink(t)) if follow_last || !todo.is_empty() => {
                    hops += 1;
                    if hops > 40 {
                        return Err(err(libc::ELOOP));
                    }
                    if t.starts_with('/') {
                        cur = "/".into();
                    }
                    for p in t.split('/').filter(|s| !s.is_empty()).rev() {
                        todo.push(p.to_string());
                    }
                }
                Some(Node::File(_)) if !todo.is_empty() => return Err(err(libc::ENOTDIR)),
                Some(_) => cur = next,
                None if todo.is_empty() => return Ok(next),
                None => return Err(err(libc::ENOENT)),
            }
        }
        Ok(cur)
    }

    fn get(&self, path: &str, follow: bool) -> io::Result<(String, &Entry)> {
        let p = self.resolve(path, follow)?;
        let n = self.tree.get(&p).ok_or_else(|| err(libc::ENOENT))?;
        Ok((p, n))
    }

    fn meta(n: &Entry) -> Meta {
        Meta {
            kind: match n.node {
                Node::Dir => Kind::Dir,
                Node::File(_) => Kind::File,
                Node::Symlink(_) => Kind::Symlink,
            },
            dev: n.dev,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
        }
    }
}

fn q(s: &str) -> String {
    format!("{s:?}")
}

impl Sys for FakeSys {
    fn now_us(&mut self) -> u64 {
        self.clock_us += 10;
        self.clock_us
    }
    fn console(&mut self, line: &str) {
        self.console.push(line.to_string());
    }
    fn kmsg(&mut self, level: u8, line: &str) {
        self.kmsg.push(format!("<{level}>{line}"));
    }
    fn kernel_release(&mut self) -> io::Result<String> {
        Ok(self.release.clone())
    }
    fn mount(
        &mut self,
        source: &str,
        target: &str,
        fstype: &str,
        fl: u64,
        data: &str,
    ) -> io::Result<()> {
        self.record(format!(
            "mount {} {target} {} {} {}",
            if source.is_empty() { "-" } else { source },
            if fstype.is_empty() { "-" } else { fstype },
            flags::names(fl),
            q(data)
        ))
    }
    fn umount(&mut self, target: &str, fl: i32) -> io::Result<()> {
        let f = if fl == flags::MNT_DETACH {
            "MNT_DETACH".to_string()
        } else {
            fl.to_string()
        };
        self.record(format!("umount {target} {f}"))
    }
    fn mount_loop(
        &mut self,
        file: &str,
        target: &str,
        fstype: &str,
        fl: u64,
        data: &str,
    ) -> io::Result<String> {
        self.record(format!(
            "mount_loop {file} {target} {fstype} {} {}",
            flags::names(fl),
            q(data)
        ))?;
        self.get(file, true)?;
        Ok("/dev/loop0".into())
    }
    fn symlink(&mut self, target: &str, path: &str) -> io::Result<()> {
        self.record(format!("symlink {target} {path}"))?;
        let p = self.resolve(path, false)?;
        if self.tree.contains_key(&p) {
            return Err(err(libc::EEXIST));
        }
        let dev = match self.tree.get(parent(&p)) {
            Some(Entry {
                node: Node::Dir,
                dev,
                ..
            }) => *dev,
            _ => return Err(err(libc::ENOENT)),
        };
        self.tree
            .insert(p, Entry::new(Node::Symlink(target.into()), dev));
        Ok(())
    }
    fn mkdir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        self.record(format!("mkdir {path} {mode:o}"))?;
        let p = self.resolve(path, false)?;
        if self.tree.contains_key(&p) {
            return Err(err(libc::EEXIST));
        }
        let dev = match self.tree.get(parent(&p)) {
            Some(Entry {
                node: Node::Dir,
                dev,
                ..
            }) => *dev,
            _ => return Err(err(libc::ENOENT)),
        };
        let mut e = Entry::new(Node::Dir, dev);
        e.mode = mode;
        self.tree.insert(p, e);
        Ok(())
    }
    fn load_module(&mut self, path: &str, compressed: bool) -> io::Result<()> {
        self.record(format!(
            "load_module {path}{}",
            if compressed { " compressed" } else { "" }
        ))?;
        if self.builtin_paths.iter().any(|p| p == path) {
            return Err(err(libc::EEXIST));
        }
        self.get(path, true).map(|_| ())
    }
    fn load_modules(&mut self, jobs: &[ModuleLoad<'_>], threads: usize) -> Vec<Loaded> {
        self.batches
            .push((threads, jobs.iter().map(|j| j.after.clone()).collect()));
        // In job order, which respects every `after`: the real machine
        // may interleave them, the log of effects is the same.
        jobs.iter()
            .map(|j| {
                let start_us = self.now_us();
                let result = self.load_module(j.path, j.compressed);
                Loaded {
                    result,
                    start_us,
                    end_us: self.now_us(),
                }
            })
            .collect()
    }
    fn cpus(&mut self) -> usize {
        self.cpus
    }
    fn read_file(&mut self, path: &str) -> io::Result<Vec<u8>> {
        match &self.get(path, true)?.1.node {
            Node::File(d) => Ok(d.clone()),
            _ => Err(err(libc::EISDIR)),
        }
    }
    fn read_at(&mut self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let d = self.read_file(path)?;
        let s = usize::try_from(offset).unwrap_or(usize::MAX).min(d.len());
        Ok(d[s..s.saturating_add(len).min(d.len())].to_vec())
    }
    fn read_dir(&mut self, path: &str) -> io::Result<Vec<(String, Kind)>> {
        self.listed.push(path.to_string());
        let (p, n) = self.get(path, true)?;
        if n.node != Node::Dir {
            return Err(err(libc::ENOTDIR));
        }
        let prefix = if p == "/" {
            "/".to_string()
        } else {
            format!("{p}/")
        };
        Ok(self
            .tree
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| k.len() > prefix.len() && !k[prefix.len()..].contains('/'))
            .map(|(k, n)| (k[prefix.len()..].to_string(), FakeSys::meta(n).kind))
            .collect())
    }
    fn read_link(&mut self, path: &str) -> io::Result<String> {
        match &self.get(path, false)?.1.node {
            Node::Symlink(t) => Ok(t.clone()),
            _ => Err(err(libc::EINVAL)),
        }
    }
    fn lstat(&mut self, path: &str) -> io::Result<Meta> {
        Ok(FakeSys::meta(self.get(path, false)?.1))
    }
    fn stat(&mut self, path: &str) -> io::Result<Meta> {
        Ok(FakeSys::meta(self.get(path, true)?.1))
    }
    fn write_file(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        self.record(format!("write {path}"))?;
        let p = self.resolve(path, true)?;
        let dev = match self.tree.get(parent(&p)) {
            Some(Entry {
                node: Node::Dir,
                dev,
                ..
            }) => *dev,
            _ => return Err(err(libc::ENOENT)),
        };
        self.tree
            .insert(p, Entry::new(Node::File(data.to_vec()), dev));
        Ok(())
    }
    fn unlink(&mut self, path: &str) -> io::Result<()> {
        self.record(format!("unlink {path}"))?;
        self.tree
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| err(libc::ENOENT))
    }
    fn rmdir(&mut self, path: &str) -> io::Result<()> {
        self.record(format!("rmdir {path}"))?;
        if self.read_dir(path)?.is_empty() {
            self.tree.remove(path);
            Ok(())
        } else {
            Err(err(libc::ENOTEMPTY))
        }
    }
    fn sha256_file(&mut self, path: &str) -> io::Result<[u8; 32]> {
        self.record(format!("sha256 {path}"))?;
        let data = self.read_file(path)?;
        genboot_format::storehash::file_digest(&data[..], None).map(|(_, d)| d)
    }
    fn hash_tree(&mut self, dir: &str, name: &str, own: &StoreHash) -> io::Result<StoreHash> {
        self.record(format!("hash_tree {dir} {name} {own}"))?;
        Ok(self.hashes.get(dir).copied().unwrap_or(*own))
    }
    fn chdir(&mut self, path: &str) -> io::Result<()> {
        self.record(format!("chdir {path}"))
    }
    fn chroot(&mut self, path: &str) -> io::Result<()> {
        self.record(format!("chroot {path}"))
    }
    fn exec(&mut self, path: &str, argv: &[String]) -> io::Result<()> {
        self.record(format!("exec {path} {argv:?}"))
    }
    fn run_shell(&mut self, root: &str, shell: &str) -> io::Result<()> {
        self.record(format!("run_shell {root} {shell}"))
    }
    fn sleep(&mut self, d: Duration) {
        self.clock_us += d.as_micros() as u64;
        let _ = self.record(format!("sleep {}ms", d.as_millis()));
    }
    fn reboot(&mut self) -> io::Result<()> {
        self.record("reboot".into())
    }
}
