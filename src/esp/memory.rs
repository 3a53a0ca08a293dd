//! An ESP in memory, for unit tests of the installer: FAT's rules that
//! matter to it (names compared without case, free space in whole
//! clusters, a directory takes a cluster), every operation recorded in
//! order, no disk.

use super::{Esp, EspError, Space, WriteStats};
use std::collections::BTreeMap;
use std::io::Read;

/// One thing the installer did to the ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Mkdir(String),
    Write(String),
    Rename(String, String),
    Remove(String),
}

#[derive(Debug, Clone)]
pub struct MemEsp {
    /// Lower-case path → (path as written, bytes).
    files: BTreeMap<String, (String, Vec<u8>)>,
    /// Lower-case paths of the directories (the root is implied).
    dirs: BTreeMap<String, String>,
    pub cluster_size: u64,
    pub total_clusters: u64,
    pub ops: Vec<Op>,
    stats: WriteStats,
}

fn lower(p: &str) -> String {
    p.to_ascii_lowercase()
}

fn parent(p: &str) -> &str {
    p.rsplit_once('/').map_or("", |(d, _)| d)
}

impl MemEsp {
    /// An empty ESP of `total_clusters` clusters of 4 KiB.
    pub fn new(total_clusters: u64) -> MemEsp {
        MemEsp {
            files: BTreeMap::new(),
            dirs: BTreeMap::new(),
            cluster_size: 4096,
            total_clusters,
            ops: Vec::new(),
            stats: WriteStats::default(),
        }
    }

    /// Put a file there as another tool would (its directories too), not
    /// counted as the installer's work.
    pub fn put(&mut self, path: &str, data: &[u8]) {
        let mut dir = parent(path);
        while !dir.is_empty() {
            self.dirs.insert(lower(dir), dir.to_string());
            dir = parent(dir);
        }
        self.files
            .insert(lower(path), (path.to_string(), data.to_vec()));
    }

    /// The content of a file, in any case.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(&lower(path)).map(|(_, d)| d.as_slice())
    }

    /// Every file: path as written → content.
    pub fn tree(&self) -> BTreeMap<String, Vec<u8>> {
        self.files.values().cloned().collect()
    }

    /// Forget the recorded operations and statistics.
    pub fn reset_log(&mut self) {
        self.ops.clear();
        self.stats = WriteStats::default();
    }

    fn used_clusters(&self) -> u64 {
        let files: u64 = self
            .files
            .values()
            .map(|(_, d)| (d.len() as u64).div_ceil(self.cluster_size))
            .sum();
        files + self.dirs.len() as u64
    }

    fn missing(&self, op: &'static str, path: &str) -> EspError {
        EspError::Io {
            op,
            path: path.to_string(),
            esp: self.describe(),
            cause: std::io::Error::from(std::io::ErrorKind::NotFound),
        }
    }

    fn need_dir(&self, op: &'static str, path: &str) -> Result<(), EspError> {
        let dir = parent(path);
        if dir.is_empty() || self.dirs.contains_key(&lower(dir)) {
            Ok(())
        } else {
            Err(self.missing(op, path))
        }
    }
}

impl Esp for MemEsp {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>, EspError> {
        Ok(self.get(path).map(<[u8]>::to_vec))
    }

    fn size(&mut self, path: &str) -> Result<Option<u64>, EspError> {
        Ok(self.get(path).map(|d| d.len() as u64))
    }

    fn list(&mut self, dir: &str) -> Result<Vec<String>, EspError> {
        let dir = lower(dir);
        let mut out: Vec<String> = self
            .files
            .iter()
            .filter(|(l, _)| parent(l) == dir)
            .map(|(_, (p, _))| p.rsplit('/').next().unwrap_or(p).to_string())
            .collect();
        out.sort();
        Ok(out)
    }

    fn is_dir(&mut self, dir: &str) -> Result<bool, EspError> {
        Ok(dir.is_empty() || self.dirs.contains_key(&lower(dir)))
    }

    fn create_dir(&mut self, dir: &str) -> Result<(), EspError> {
        self.need_dir("create directory", dir)?;
        if self.used_clusters() >= self.total_clusters {
            return Err(EspError::Fat {
                esp: self.describe(),
                op: "create directory",
                path: dir.into(),
                what: "the FAT file system is full".into(),
            });
        }
        self.dirs.insert(lower(dir), dir.to_string());
        self.ops.push(Op::Mkdir(dir.to_string()));
        self.stats.files_touched += 1;
        Ok(())
    }

    fn write_file(&mut self, path: &str, data: &mut dyn Read) -> Result<(), EspError> {
        self.need_dir("create", path)?;
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes).map_err(|cause| EspError::Io {
            op: "read source for",
            path: path.to_string(),
            esp: self.describe(),
            cause,
        })?;
        let old = self
            .files
            .get(&lower(path))
            .map_or(0, |(_, d)| (d.len() as u64).div_ceil(self.cluster_size));
        let new = (bytes.len() as u64).div_ceil(self.cluster_size);
        if self.used_clusters() - old + new > self.total_clusters {
            return Err(EspError::Fat {
                esp: self.describe(),
                op: "write",
                path: path.into(),
                what: "the FAT file system is full".into(),
            });
        }
        self.stats.bytes_written += bytes.len() as u64;
        self.stats.files_touched += 1;
        self.files.insert(lower(path), (path.to_string(), bytes));
        self.ops.push(Op::Write(path.to_string()));
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), EspError> {
        self.need_dir("rename", to)?;
        let (_, data) = self
            .files
            .remove(&lower(from))
            .ok_or_else(|| self.missing("rename", from))?;
        self.files.insert(lower(to), (to.to_string(), data));
        self.ops.push(Op::Rename(from.to_string(), to.to_string()));
        self.stats.files_touched += 1;
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<(), EspError> {
        if self.files.remove(&lower(path)).is_some() {
            self.ops.push(Op::Remove(path.to_string()));
            self.stats.files_touched += 1;
        }
        Ok(())
    }

    fn space(&mut self) -> Result<Space, EspError> {
        Ok(Space {
            cluster_size: self.cluster_size,
            free_clusters: self.total_clusters.saturating_sub(self.used_clusters()),
        })
    }

    fn stats(&self) -> WriteStats {
        self.stats
    }

    fn close(self: Box<Self>) -> Result<WriteStats, EspError> {
        Ok(self.stats)
    }
}
