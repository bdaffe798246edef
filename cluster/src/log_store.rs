//! The Raft log on local disk: one append-only file of checksummed records plus small
//! files for the vote, the committed id and the purge point, each replaced atomically
//! (write, fsync, rename, fsync dir).
//!
//! Why a file and not sled/redb: the metadata log is small (it is compacted into
//! snapshots), written by one thread, and read mostly from memory; a file with explicit
//! fsync keeps the durability rules visible and adds no dependency. Entries stay in memory
//! after a purge's compaction too, so reads never touch the disk.
//!
//! Record format: `u32 len (LE) | u32 crc32 (LE) | len bytes of JSON entry`. A torn or
//! corrupt tail (a crash mid-append) is cut off at open; anything before it was fsynced.
//!
//! Group commit: an append writes its records and returns; a flusher thread fsyncs and
//! only then reports them durable to openraft (which commits nothing before that).
//! Appends that arrive during an fsync share the next one, so concurrent writes cost one
//! fsync per batch instead of one each, and no Raft or tokio thread waits on the disk.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError,
    StorageIOError, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{NodeId, TypeConfig};

const LOG_FILE: &str = "raft.log";
const VOTE_FILE: &str = "vote.json";
const COMMITTED_FILE: &str = "committed.json";
const PURGED_FILE: &str = "purged.json";

pub(crate) fn crc32(data: &[u8]) -> u32 {
    // Table-less CRC-32 (IEEE): the log is small and this keeps the format dependency-free.
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// Write `bytes` to `dir/name` so that a crash leaves either the old or the new content.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{path:?}: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_json<T: Serialize>(dir: &Path, name: &str, v: &T) -> io::Result<()> {
    let b = serde_json::to_vec(v).map_err(io::Error::other)?;
    write_atomic(dir, name, &b)
}

fn encode(entry: &Entry<TypeConfig>) -> io::Result<Vec<u8>> {
    let body = serde_json::to_vec(entry).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("log entry over 4 GiB"))?;
    let mut rec = Vec::with_capacity(body.len() + 8);
    rec.extend_from_slice(&len.to_le_bytes());
    rec.extend_from_slice(&crc32(&body).to_le_bytes());
    rec.extend_from_slice(&body);
    Ok(rec)
}

/// Appended records waiting for their fsync: the file they went to and openraft's
/// completion callback.
type Flush = (Arc<File>, LogFlushed<TypeConfig>);

/// Fsyncs everything appended so far, then reports each append durable, in order.
fn flusher(rx: mpsc::Receiver<Flush>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        // A purge swaps the file: sync each distinct one (almost always just one).
        let mut result: io::Result<()> = Ok(());
        for (i, (file, _)) in batch.iter().enumerate() {
            if result.is_ok() && !batch[..i].iter().any(|(f, _)| Arc::ptr_eq(f, file)) {
                result = file.sync_data();
            }
        }
        for (_, callback) in batch {
            callback.log_io_completed(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

struct Inner {
    dir: PathBuf,
    file: Arc<File>,
    flush: mpsc::Sender<Flush>,
    /// Entry index -> (entry, byte offset of its record in the file).
    entries: BTreeMap<u64, (Entry<TypeConfig>, u64)>,
    file_len: u64,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
}

impl Inner {
    fn open(dir: &Path) -> io::Result<Inner> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path)?;
        let mut raw = Vec::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut raw)?;
        let purged: Option<LogId<NodeId>> = read_json(&dir.join(PURGED_FILE))?;
        let mut entries = BTreeMap::new();
        let mut pos = 0usize;
        while raw.len() - pos >= 8 {
            let len = u32::from_le_bytes(raw[pos..pos + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(raw[pos + 4..pos + 8].try_into().unwrap());
            let Some(body) = raw.get(pos + 8..pos + 8 + len) else { break };
            if crc32(body) != crc {
                break;
            }
            let Ok(entry) = serde_json::from_slice::<Entry<TypeConfig>>(body) else { break };
            let idx = entry.log_id.index;
            // A truncate rewrites the tail, so a later record for an index replaces the
            // earlier one along with everything after it.
            let _ = entries.split_off(&idx);
            entries.insert(idx, (entry, pos as u64));
            pos += 8 + len;
        }
        if pos < raw.len() {
            tracing::warn!(
                path = %path.display(),
                kept = pos,
                dropped = raw.len() - pos,
                "raft log has a torn or corrupt tail; cutting it off"
            );
            file.set_len(pos as u64)?;
            file.sync_all()?;
        }
        if let Some(p) = purged {
            entries = entries.split_off(&(p.index + 1));
        }
        let (flush, rx) = mpsc::channel();
        std::thread::Builder::new().name("raft-log-fsync".into()).spawn(move || flusher(rx))?;
        Ok(Inner {
            dir: dir.to_path_buf(),
            file: Arc::new(file),
            flush,
            entries,
            file_len: pos as u64,
            vote: read_json(&dir.join(VOTE_FILE))?,
            committed: read_json(&dir.join(COMMITTED_FILE))?,
            purged,
        })
    }

    /// Writes the records (not yet fsynced: see [`flusher`]).
    fn append(&mut self, batch: Vec<Entry<TypeConfig>>) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(batch.len());
        for e in &batch {
            offsets.push(self.file_len + buf.len() as u64);
            buf.extend_from_slice(&encode(e)?);
        }
        (&*self.file).write_all(&buf)?;
        self.file_len += buf.len() as u64;
        for (e, off) in batch.into_iter().zip(offsets) {
            self.entries.insert(e.log_id.index, (e, off));
        }
        Ok(())
    }

    fn truncate(&mut self, from: u64) -> io::Result<()> {
        let removed = self.entries.split_off(&from);
        if let Some((_, off)) = removed.values().next() {
            self.file.set_len(*off)?;
            self.file.sync_all()?;
            self.file_len = *off;
        }
        Ok(())
    }

    /// Drop entries up to `log_id` and rewrite the file without them, so the file stays as
    /// small as the live log.
    fn purge(&mut self, log_id: LogId<NodeId>) -> io::Result<()> {
        write_json(&self.dir, PURGED_FILE, &log_id)?;
        self.purged = Some(log_id);
        self.entries = self.entries.split_off(&(log_id.index + 1));
        let mut buf = Vec::new();
        for (e, off) in self.entries.values_mut() {
            *off = buf.len() as u64;
            buf.extend_from_slice(&encode(e)?);
        }
        write_atomic(&self.dir, LOG_FILE, &buf)?;
        let file = OpenOptions::new().read(true).append(true).open(self.dir.join(LOG_FILE))?;
        self.file = Arc::new(file);
        self.file_len = buf.len() as u64;
        Ok(())
    }
}

/// The log store. Clones share the same log (one is the reader openraft asks for).
#[derive(Clone)]
pub struct FileLogStore {
    inner: Arc<Mutex<Inner>>,
}

fn io_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: io::Error) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, &e).into()
}

impl FileLogStore {
    pub fn open(dir: &Path) -> io::Result<FileLogStore> {
        Ok(FileLogStore { inner: Arc::new(Mutex::new(Inner::open(dir)?)) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves no partial in-memory state that matters
        // more than the file, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftLogReader<TypeConfig> for FileLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let g = self.lock();
        Ok(g.entries.range(range).map(|(_, (e, _))| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for FileLogStore {
    type LogReader = FileLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let g = self.lock();
        let last = g.entries.values().next_back().map(|(e, _)| e.log_id).or(g.purged);
        Ok(LogState { last_purged_log_id: g.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut g = self.lock();
        write_json(&g.dir, VOTE_FILE, vote)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        g.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut g = self.lock();
        write_json(&g.dir, COMMITTED_FILE, &committed)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        g.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let batch: Vec<_> = entries.into_iter().collect();
        let mut g = self.lock();
        match g.append(batch) {
            Ok(()) => {
                // Durable (and reported so) once the flusher's next fsync is done.
                let file = g.file.clone();
                if let Err(mpsc::SendError((_, callback))) = g.flush.send((file, callback)) {
                    callback.log_io_completed(Err(io::Error::other("log flusher stopped")));
                }
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.lock()
            .truncate(log_id.index)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.lock().purge(log_id).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn torn_tail_is_cut_and_earlier_records_survive() {
        let dir = tempfile::tempdir().unwrap();
        let mut inner = Inner::open(dir.path()).unwrap();
        let e = |i| Entry::<TypeConfig> {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), i),
            payload: openraft::EntryPayload::Blank,
        };
        inner.append(vec![e(1), e(2), e(3)]).unwrap();
        inner.truncate(3).unwrap();
        inner.append(vec![e(3), e(4)]).unwrap();
        drop(inner);
        // Simulate a crash in the middle of the next append.
        let mut f = OpenOptions::new().append(true).open(dir.path().join(LOG_FILE)).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{']).unwrap();
        drop(f);
        let mut inner = Inner::open(dir.path()).unwrap();
        assert_eq!(inner.entries.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        inner.purge(LogId::new(openraft::CommittedLeaderId::new(1, 1), 2)).unwrap();
        inner.append(vec![e(5)]).unwrap();
        drop(inner);
        let inner = Inner::open(dir.path()).unwrap();
        assert_eq!(inner.entries.keys().copied().collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(inner.purged.map(|p| p.index), Some(2));
    }
}
