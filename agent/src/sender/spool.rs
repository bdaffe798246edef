//! The on-disk spool: every batch is written here before it is sent and
//! deleted only after the server acknowledged it, so batches survive a
//! server outage and an agent restart, and are replayed in batch-id order.
//!
//! Layout of the spool directory:
//! - `<batch_id, 20 digits>.batch`: one segment per batch,
//!   `b"FSB1" | crc32(body): u32 LE | body` where body is the encoded
//!   `RecordBatch` (payload already zstd-compressed);
//! - `batch_id`: the highest batch id reserved, so ids keep increasing
//!   across restarts even when the spool is empty. Ids are reserved in
//!   blocks of [`ID_BLOCK`] (one fsync per block); a restart skips the rest
//!   of a block, which the server accepts (ids only need to increase).
//!
//! Fsync policy (`fsync = true`, the default): a segment is written to a
//! temporary file, fsynced, renamed into place, and the directory fsynced,
//! before the batch counts as spooled; with `fsync = false` the kernel
//! writes it back when it likes (a power loss may lose the last seconds,
//! a process crash loses nothing).
//!
//! Quarantine: a segment that cannot be read back (bad checksum, not a
//! batch) or that the server refuses as invalid is moved to
//! `quarantine/` for inspection rather than retried forever; the newest
//! [`QUARANTINE_KEEP`] are kept there.
//!
//! Bound: when adding a segment would exceed `max_bytes`, the oldest
//! segments are deleted (counted in `dropped_batches` / `dropped_records`):
//! the newest data is kept, as operators usually want during long outages.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use prost::Message;

use fathom_proto::RecordBatch;

const MAGIC: &[u8; 4] = b"FSB1";
/// Batch ids reserved per write of the `batch_id` file.
pub const ID_BLOCK: u64 = 1024;
/// Segments kept in `quarantine/`; older ones are deleted.
pub const QUARANTINE_KEEP: usize = 64;
const QUARANTINE_DIR: &str = "quarantine";

#[derive(Debug, Default)]
pub struct SpoolStats {
    pub batches: AtomicU64,
    pub bytes: AtomicU64,
    /// Oldest batches deleted unsent because the spool was full.
    pub dropped_batches: AtomicU64,
    pub dropped_records: AtomicU64,
    /// Segments found unreadable (bad checksum, not a batch), quarantined.
    pub corrupt: AtomicU64,
    /// Segments moved to `quarantine/` (unreadable or refused by the server).
    pub quarantined: AtomicU64,
}

struct Entry {
    bytes: u64,
    records: u64,
}

struct Inner {
    segments: BTreeMap<u64, Entry>,
    bytes: u64,
    next_id: u64,
    reserved: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    fsync: bool,
    inner: Mutex<Inner>,
    pub stats: SpoolStats,
}

fn segment_name(id: u64) -> String {
    format!("{id:020}.batch")
}

impl Spool {
    /// Opens (creating) the spool in `dir`, indexing the segments there.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64, fsync: bool) -> io::Result<Spool> {
        let dir = dir.into();
        fs::create_dir_all(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("spool {}: {e}", dir.display())))?;
        let mut segments = BTreeMap::new();
        let mut bytes = 0;
        let stats = SpoolStats::default();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                // A segment whose write did not finish: never spooled.
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some(id) = name.strip_suffix(".batch").and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            match read_segment(&entry.path()) {
                Ok(b) if b.batch_id == id => {
                    let len = entry.metadata()?.len();
                    let records = b.counts.map_or(0, |c| c.total());
                    segments.insert(id, Entry { bytes: len, records });
                    bytes += len;
                }
                Ok(_) | Err(_) => {
                    stats.corrupt.fetch_add(1, Ordering::Relaxed);
                    move_to_quarantine(&dir, &entry.path(), &stats, "unreadable");
                }
            }
        }
        let reserved = fs::read_to_string(dir.join("batch_id"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let highest = segments.keys().next_back().copied().unwrap_or(0).max(reserved);
        stats.batches.store(segments.len() as u64, Ordering::Relaxed);
        stats.bytes.store(bytes, Ordering::Relaxed);
        Ok(Spool {
            dir,
            max_bytes,
            fsync,
            inner: Mutex::new(Inner { segments, bytes, next_id: highest + 1, reserved: highest }),
            stats,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next batch id, reserving a new block on disk when needed.
    pub fn next_batch_id(&self) -> io::Result<u64> {
        let mut inner = self.lock();
        let id = inner.next_id;
        if id > inner.reserved {
            let upto = id + ID_BLOCK - 1;
            let path = self.dir.join("batch_id");
            let tmp = self.dir.join("batch_id.tmp");
            let mut f = File::create(&tmp)?;
            f.write_all(upto.to_string().as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            self.sync_dir();
            inner.reserved = upto;
        }
        inner.next_id = id + 1;
        Ok(id)
    }

    fn sync_dir(&self) {
        if self.fsync {
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
        }
    }

    /// Writes `batch` as a segment, dropping the oldest segments if the
    /// spool would exceed its bound. A batch larger than the whole bound is
    /// refused (the error says so).
    pub fn push(&self, batch: &RecordBatch) -> io::Result<()> {
        let body = batch.encode_to_vec();
        let len = (body.len() + 8) as u64;
        if len > self.max_bytes {
            return Err(io::Error::other(format!(
                "batch {} is {len} bytes, more than the whole spool ({} bytes)",
                batch.batch_id, self.max_bytes
            )));
        }
        let path = self.dir.join(segment_name(batch.batch_id));
        let tmp = path.with_extension("tmp");
        {
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&crc32fast::hash(&body).to_le_bytes())?;
            f.write_all(&body)?;
            if self.fsync {
                f.sync_data()?;
            }
        }
        let mut inner = self.lock();
        while inner.bytes + len > self.max_bytes {
            let Some((&old, _)) = inner.segments.iter().next() else { break };
            if let Some(e) = inner.segments.remove(&old) {
                inner.bytes -= e.bytes;
                self.stats.dropped_batches.fetch_add(1, Ordering::Relaxed);
                self.stats.dropped_records.fetch_add(e.records, Ordering::Relaxed);
                tracing::warn!(
                    batch_id = old,
                    records = e.records,
                    "spool full: dropping the oldest batch"
                );
                let _ = fs::remove_file(self.dir.join(segment_name(old)));
            }
        }
        fs::rename(&tmp, &path)?;
        self.sync_dir();
        let records = batch.counts.map_or(0, |c| c.total());
        inner.segments.insert(batch.batch_id, Entry { bytes: len, records });
        inner.bytes += len;
        self.publish(&inner);
        Ok(())
    }

    fn publish(&self, inner: &Inner) {
        self.stats.batches.store(inner.segments.len() as u64, Ordering::Relaxed);
        self.stats.bytes.store(inner.bytes, Ordering::Relaxed);
    }

    /// The newest batch id spooled.
    pub fn newest(&self) -> Option<u64> {
        self.lock().segments.keys().next_back().copied()
    }

    /// The oldest batch id still spooled.
    pub fn oldest(&self) -> Option<u64> {
        self.lock().segments.keys().next().copied()
    }

    /// The oldest spooled batch with an id above `after`, read from disk.
    /// An unreadable segment is removed and skipped.
    pub fn next_after(&self, after: Option<u64>) -> Option<RecordBatch> {
        loop {
            let id = {
                let inner = self.lock();
                let mut range = match after {
                    Some(a) => inner.segments.range(a + 1..),
                    None => inner.segments.range(..),
                };
                *range.next()?.0
            };
            match read_segment(&self.dir.join(segment_name(id))) {
                Ok(b) => return Some(b),
                // Deleted by the bound meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.remove(id),
                // Damaged on disk.
                Err(e) => {
                    self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                    self.quarantine(id, &format!("unreadable: {e}"));
                }
            }
        }
    }

    /// Deletes a segment (after its ack).
    pub fn remove(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(e) = inner.segments.remove(&id) {
            inner.bytes -= e.bytes;
            let _ = fs::remove_file(self.dir.join(segment_name(id)));
            self.publish(&inner);
        }
    }

    /// Moves a segment to `quarantine/` (logged with `reason`, counted):
    /// it will not be sent again.
    pub fn quarantine(&self, id: u64, reason: &str) {
        let mut inner = self.lock();
        if let Some(e) = inner.segments.remove(&id) {
            inner.bytes -= e.bytes;
            move_to_quarantine(&self.dir, &self.dir.join(segment_name(id)), &self.stats, reason);
            self.publish(&inner);
        }
    }

    /// Where quarantined segments are.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.dir.join(QUARANTINE_DIR)
    }

    pub fn len(&self) -> usize {
        self.lock().segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Moves `path` into `<dir>/quarantine/` (deleting it if that fails) and
/// keeps only the newest [`QUARANTINE_KEEP`] there.
fn move_to_quarantine(dir: &Path, path: &Path, stats: &SpoolStats, reason: &str) {
    stats.quarantined.fetch_add(1, Ordering::Relaxed);
    let qdir = dir.join(QUARANTINE_DIR);
    let name = path.file_name().unwrap_or_default();
    let target = qdir.join(name);
    let moved = fs::create_dir_all(&qdir).and_then(|_| fs::rename(path, &target));
    match moved {
        Ok(()) => tracing::error!(
            segment = %target.display(),
            "spool: batch quarantined, it will not be sent: {reason}"
        ),
        Err(e) => {
            tracing::error!(
                segment = %path.display(),
                "spool: batch dropped ({reason}); cannot quarantine it: {e}"
            );
            let _ = fs::remove_file(path);
            return;
        }
    }
    let Ok(entries) = fs::read_dir(&qdir) else { return };
    let mut names: Vec<_> = entries.filter_map(Result::ok).map(|e| e.file_name()).collect();
    if names.len() > QUARANTINE_KEEP {
        // Zero-padded ids: names sort oldest first.
        names.sort();
        for old in &names[..names.len() - QUARANTINE_KEEP] {
            let _ = fs::remove_file(qdir.join(old));
        }
    }
}

fn read_segment(path: &Path) -> io::Result<RecordBatch> {
    let data = fs::read(path)?;
    if data.len() < 8 || &data[..4] != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a spool segment"));
    }
    let sum = u32::from_le_bytes([data[4], data[5], data[6], data[7]]);
    if crc32fast::hash(&data[8..]) != sum {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "checksum mismatch"));
    }
    RecordBatch::decode(&data[8..]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fathom_proto::RecordCounts;

    fn batch(id: u64, n: usize) -> RecordBatch {
        RecordBatch {
            agent_id: "a".into(),
            batch_id: id,
            payload: vec![7; n],
            counts: Some(RecordCounts { l7: 1, ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn ids_increase_across_reopen_even_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 1 << 20, true).unwrap();
        assert_eq!(s.next_batch_id().unwrap(), 1);
        assert_eq!(s.next_batch_id().unwrap(), 2);
        drop(s);
        let s = Spool::open(dir.path(), 1 << 20, true).unwrap();
        let id = s.next_batch_id().unwrap();
        assert!(id > 2, "{id}");
    }

    #[test]
    fn replays_in_order_and_drops_oldest_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 3500, false).unwrap();
        for id in 1..=5 {
            s.push(&batch(id, 1000)).unwrap();
        }
        // 5 x ~1020 bytes > 3500: the two oldest went.
        assert_eq!(s.len(), 3);
        assert!(s.bytes() <= 3500);
        assert_eq!(s.stats.dropped_batches.load(Ordering::Relaxed), 2);
        assert_eq!(s.stats.dropped_records.load(Ordering::Relaxed), 2);
        drop(s);
        let s = Spool::open(dir.path(), 3500, false).unwrap();
        let mut seen = Vec::new();
        let mut after = None;
        while let Some(b) = s.next_after(after) {
            seen.push(b.batch_id);
            after = Some(b.batch_id);
        }
        assert_eq!(seen, vec![3, 4, 5]);
        s.remove(3);
        assert_eq!(s.oldest(), Some(4));
        assert!(s
            .push(&batch(9, 10_000))
            .unwrap_err()
            .to_string()
            .contains("more than the whole spool"));
    }

    #[test]
    fn damaged_segments_are_removed_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 1 << 20, true).unwrap();
        s.push(&batch(1, 100)).unwrap();
        s.push(&batch(2, 100)).unwrap();
        drop(s);
        let p = dir.path().join(segment_name(1));
        let mut data = fs::read(&p).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        fs::write(&p, data).unwrap();
        fs::write(dir.path().join("00000000000000000003.tmp"), b"half").unwrap();
        let s = Spool::open(dir.path(), 1 << 20, true).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s.stats.corrupt.load(Ordering::Relaxed), 1);
        assert_eq!(s.stats.quarantined.load(Ordering::Relaxed), 1);
        assert!(s.quarantine_dir().join(segment_name(1)).exists(), "moved aside, not deleted");
        assert_eq!(s.next_after(None).unwrap().batch_id, 2);
        assert!(!dir.path().join("00000000000000000003.tmp").exists());
        // Damaged while the spool is open: quarantined when read.
        s.push(&batch(3, 100)).unwrap();
        fs::write(dir.path().join(segment_name(2)), b"FSB1 and then garbage").unwrap();
        assert_eq!(s.next_after(None).unwrap().batch_id, 3);
        assert_eq!(s.stats.quarantined.load(Ordering::Relaxed), 2);
        // Refused by the server: quarantined, and the quarantine is bounded.
        for id in 10..10 + QUARANTINE_KEEP as u64 {
            s.push(&batch(id, 10)).unwrap();
            s.quarantine(id, "refused");
        }
        assert_eq!(s.len(), 1);
        let kept = fs::read_dir(s.quarantine_dir()).unwrap().count();
        assert_eq!(kept, QUARANTINE_KEEP);
        assert!(!s.quarantine_dir().join(segment_name(1)).exists(), "the oldest went");
        assert!(s.quarantine_dir().join(segment_name(9 + QUARANTINE_KEEP as u64)).exists());
    }
}
