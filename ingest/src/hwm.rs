//! Per-agent high-water marks of stored batch ids, persisted so that
//! replays after a server restart are recognised.
//!
//! File `<dir>/agents.hwm`, append-only: records of
//! `len: u16 LE | agent id | batch_id: u64 LE | crc32: u32 LE`; the last
//! record of an agent wins. Each update is appended and fsynced before the
//! batch is acked; a torn record at the end is cut at load. The file is
//! rewritten compactly at open and when it grows past 64 records per agent.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

struct Inner {
    marks: HashMap<Arc<str>, u64>,
    file: File,
    records: usize,
}

pub struct HighWaterMarks {
    path: PathBuf,
    inner: Mutex<Inner>,
}

fn record(agent: &str, id: u64, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&(agent.len() as u16).to_le_bytes());
    out.extend_from_slice(agent.as_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    let sum = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&sum.to_le_bytes());
}

/// The marks in a file's bytes (the highest id of each agent) and how many
/// bytes of whole, intact records precede the first torn or corrupt one.
pub fn parse(data: &[u8]) -> (HashMap<Arc<str>, u64>, usize) {
    let mut marks: HashMap<Arc<str>, u64> = HashMap::new();
    let mut at = 0;
    while data.len() - at >= 2 {
        let len = u16::from_le_bytes([data[at], data[at + 1]]) as usize;
        let end = at + 2 + len + 12;
        if end > data.len() {
            break;
        }
        let sum = u32::from_le_bytes(data[end - 4..end].try_into().unwrap_or_default());
        if crc32fast::hash(&data[at..end - 4]) != sum {
            break;
        }
        let Ok(agent) = std::str::from_utf8(&data[at + 2..at + 2 + len]) else { break };
        let id = u64::from_le_bytes(data[end - 12..end - 4].try_into().unwrap_or_default());
        let e = marks.entry(Arc::from(agent)).or_insert(0);
        *e = (*e).max(id);
        at = end;
    }
    (marks, at)
}

/// Longest agent id stored.
pub const MAX_AGENT_ID: usize = 256;

impl HighWaterMarks {
    pub fn open(dir: &Path) -> io::Result<HighWaterMarks> {
        fs::create_dir_all(dir)?;
        let path = dir.join("agents.hwm");
        let mut data = Vec::new();
        if let Ok(mut f) = File::open(&path) {
            f.read_to_end(&mut data)?;
        }
        let (marks, at) = parse(&data);
        if at < data.len() {
            tracing::warn!(path = %path.display(), "ingest: cutting a torn high-water mark record");
        }
        let file = Self::rewrite(&path, &marks)?;
        let records = marks.len();
        Ok(HighWaterMarks { path, inner: Mutex::new(Inner { marks, file, records }) })
    }

    /// Writes all marks to a new file and swaps it in.
    fn rewrite(path: &Path, marks: &HashMap<Arc<str>, u64>) -> io::Result<File> {
        let tmp = path.with_extension("tmp");
        let mut buf = Vec::new();
        for (a, &id) in marks {
            record(a, id, &mut buf);
        }
        let mut f = File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        OpenOptions::new().append(true).open(path)
    }

    /// The highest stored batch id of `agent` (0 = none).
    pub fn get(&self, agent: &str) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.marks.get(agent).copied().unwrap_or(0)
    }

    /// Records that `agent`'s batch `id` is stored; durable on return.
    pub fn set(&self, agent: &str, id: u64) -> io::Result<()> {
        self.set_many(std::iter::once((agent, id)))
    }

    /// [`set`](Self::set) for several agents, with one fsync.
    pub fn set_many<'a>(&self, marks: impl Iterator<Item = (&'a str, u64)>) -> io::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = Vec::new();
        let mut new = Vec::new();
        for (agent, id) in marks {
            if inner.marks.get(agent).is_some_and(|&m| m >= id) {
                continue;
            }
            record(agent, id, &mut buf);
            new.push((agent, id));
        }
        if new.is_empty() {
            return Ok(());
        }
        let len = inner.file.metadata()?.len();
        if let Err(e) = inner.file.write_all(&buf).and_then(|()| inner.file.sync_data()) {
            // A part of a record left behind would hide every record after
            // it at the next open (reading stops at the first bad one).
            if let Err(cut) = inner.file.set_len(len) {
                tracing::error!(path = %self.path.display(), "ingest: cannot cut back a failed high-water mark write ({cut}); marks after it are lost at the next start");
            }
            return Err(e);
        }
        for (agent, id) in new {
            let e = inner.marks.entry(Arc::from(agent)).or_insert(0);
            *e = (*e).max(id);
            inner.records += 1;
        }
        if inner.records > 64 * inner.marks.len().max(16) {
            let file = Self::rewrite(&self.path, &inner.marks)?;
            inner.file = file;
            inner.records = inner.marks.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_survive_reopen_torn_tail_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let h = HighWaterMarks::open(dir.path()).unwrap();
        for id in 1..=2000 {
            h.set("agent-a", id).unwrap();
        }
        h.set("agent-b", 5).unwrap();
        h.set("agent-b", 3).unwrap(); // never goes back
        assert_eq!(h.get("agent-b"), 5);
        drop(h);
        let size = fs::metadata(dir.path().join("agents.hwm")).unwrap().len();
        // 2001 appends, but compaction keeps the file within 64 x 16 records.
        assert!(size <= (64 * 16 + 2) * 21, "compacted: {size}");
        let mut f = OpenOptions::new().append(true).open(dir.path().join("agents.hwm")).unwrap();
        f.write_all(&[7, 0, b'a']).unwrap();
        drop(f);
        let h = HighWaterMarks::open(dir.path()).unwrap();
        assert_eq!(h.get("agent-a"), 2000);
        assert_eq!(h.get("agent-b"), 5);
        assert_eq!(h.get("nobody"), 0);
    }
}
