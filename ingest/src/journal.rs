//! The write-ahead journal of a writer's insert group.
//!
//! A writer stores the batches waiting for it as one group: one insert per
//! table for all of them, each insert under a deduplication token named
//! after the group. Before the first insert, the group's token and its
//! batches (as the agents sent them) are written here and fsynced; the
//! record is cleared once the batches' high-water marks are durable. After a
//! crash in between, the group is inserted again from here, with the same
//! tokens (the engine drops the inserts it already has), before any new
//! batch, and its marks are recorded: the agents' replays of its batches are
//! then acknowledged as duplicates, whatever they would be grouped with now.
//!
//! File `<dir>/group-<writer>.journal`: empty, or one record
//! `"FJG1" | body length: u32 LE | crc32(body): u32 LE | body`, the body
//! `token length: u16 LE | token | count: u32 LE | (length: u32 LE | RecordBatch)*`.
//! A record cut short or failing its checksum was never acted on (inserts
//! start only after it is durable) and is dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fathom_proto::RecordBatch;
use prost::Message;

const MAGIC: &[u8; 4] = b"FJG1";
const HEADER: usize = 12;

/// A group read back from a journal: what must be inserted again.
#[derive(Debug)]
pub struct JournaledGroup {
    pub token: String,
    pub batches: Vec<RecordBatch>,
    /// The journal file it was read from.
    pub path: PathBuf,
}

/// One writer's journal.
pub struct Journal {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
}

/// The journal file of writer `n` under `dir`.
pub fn path_of(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("group-{n}.journal"))
}

/// Every journal file under `dir` (of any writer count), in name order.
pub fn existing(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("group-") && name.ends_with(".journal") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Reads the group recorded in `path`, if any.
pub fn read(path: &Path) -> io::Result<Option<JournaledGroup>> {
    let mut data = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut data)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if data.is_empty() {
        return Ok(None);
    }
    match parse(&data) {
        Some((token, batches)) => Ok(Some(JournaledGroup { token, batches, path: path.into() })),
        None => {
            tracing::warn!(path = %path.display(), bytes = data.len(), "ingest: dropping a torn insert-group record (its inserts never started)");
            Ok(None)
        }
    }
}

/// The token and batches of a journal file's bytes; `None` for a record
/// that is torn, corrupt or not one.
pub fn parse(data: &[u8]) -> Option<(String, Vec<RecordBatch>)> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
    };
    if data.get(..4)? != MAGIC {
        return None;
    }
    let len = u32_at(4)? as usize;
    let body = data.get(HEADER..HEADER.checked_add(len)?)?;
    if crc32fast::hash(body) != u32_at(8)? {
        return None;
    }
    let tlen = u16::from_le_bytes(body.get(..2)?.try_into().ok()?) as usize;
    let token = std::str::from_utf8(body.get(2..2 + tlen)?).ok()?.to_string();
    let mut at = 2 + tlen;
    let count = u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?);
    at += 4;
    let mut batches = Vec::new();
    for _ in 0..count {
        let blen = u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?) as usize;
        at += 4;
        batches.push(RecordBatch::decode(body.get(at..at.checked_add(blen)?)?).ok()?);
        at += blen;
    }
    (at == body.len()).then_some((token, batches))
}

impl Journal {
    /// Opens (creating) the journal at `path`; what it holds is read with
    /// [`read`] before.
    pub fn open(path: PathBuf) -> io::Result<Journal> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        Ok(Journal { file, path, buf: Vec::new() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a group, durably on return.
    pub fn record<'a>(
        &mut self,
        token: &str,
        batches: impl ExactSizeIterator<Item = &'a RecordBatch>,
    ) -> io::Result<()> {
        let too_long = |what: &str| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{what} too long for the journal"))
        };
        let buf = &mut self.buf;
        buf.clear();
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&[0; 8]);
        let tlen = u16::try_from(token.len()).map_err(|_| too_long("token"))?;
        buf.extend_from_slice(&tlen.to_le_bytes());
        buf.extend_from_slice(token.as_bytes());
        buf.extend_from_slice(&(batches.len() as u32).to_le_bytes());
        for b in batches {
            let len = u32::try_from(b.encoded_len()).map_err(|_| too_long("batch"))?;
            buf.extend_from_slice(&len.to_le_bytes());
            b.encode(buf).map_err(|e| io::Error::other(e.to_string()))?;
        }
        let body_len = u32::try_from(buf.len() - HEADER).map_err(|_| too_long("group"))?;
        let sum = crc32fast::hash(&buf[HEADER..]);
        buf[4..8].copy_from_slice(&body_len.to_le_bytes());
        buf[8..12].copy_from_slice(&sum.to_le_bytes());
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(buf)?;
        self.file.set_len(buf.len() as u64)?;
        self.file.sync_data()?;
        // A huge group's buffer is not worth keeping.
        if buf.capacity() > 64 << 20 {
            *buf = Vec::new();
        }
        Ok(())
    }

    /// Forgets the recorded group. Not synced: a record that comes back
    /// after a crash is inserted again under its tokens, which the engine
    /// drops, and its marks are already recorded.
    pub fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(agent: &str, id: u64, payload: usize) -> RecordBatch {
        RecordBatch {
            agent_id: agent.into(),
            batch_id: id,
            payload: vec![id as u8; payload],
            ..Default::default()
        }
    }

    #[test]
    fn a_group_survives_reopen_and_a_torn_one_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_of(dir.path(), 0);
        let mut j = Journal::open(path.clone()).unwrap();
        assert!(read(&path).unwrap().is_none(), "new journal is empty");
        let group = [batch("a", 5, 1000), batch("b", 7, 10)];
        j.record("t-1", group.iter()).unwrap();
        // A smaller group overwrites a larger one completely.
        let small = [batch("c", 1, 3)];
        j.record("t-2", [batch("x", 1, 5000)].iter()).unwrap();
        j.record("t-2", small.iter()).unwrap();
        drop(j);
        let g = read(&path).unwrap().unwrap();
        assert_eq!(g.token, "t-2");
        assert_eq!(g.batches, small);
        let mut j = Journal::open(path.clone()).unwrap();
        j.record("t-3", group.iter()).unwrap();
        let g = read(&path).unwrap().unwrap();
        assert_eq!((g.token.as_str(), g.batches.as_slice()), ("t-3", &group[..]));
        j.clear().unwrap();
        assert!(read(&path).unwrap().is_none(), "cleared");
        // Every cut of a record, and a flipped byte anywhere, reads as no group.
        j.record("t-4", group.iter()).unwrap();
        let full = fs::read(&path).unwrap();
        for cut in [1, 4, 11, 12, 20, full.len() - 1] {
            fs::write(&path, &full[..cut]).unwrap();
            assert!(read(&path).unwrap().is_none(), "cut at {cut}");
        }
        for at in [0, 5, 9, 13, full.len() / 2, full.len() - 1] {
            let mut bad = full.clone();
            bad[at] ^= 0x40;
            fs::write(&path, &bad).unwrap();
            assert!(read(&path).unwrap().is_none(), "flipped byte {at}");
        }
        fs::write(&path, &full).unwrap();
        assert!(read(&path).unwrap().is_some());
        assert_eq!(existing(dir.path()).unwrap(), vec![path]);
    }
}
