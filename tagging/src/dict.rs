//! string <-> u32 dictionaries, one per tag type.
//!
//! Lookups of known names take no lock: each dictionary publishes an
//! immutable snapshot through `ArcSwap`. New names are allocated under a
//! mutex, appended to the dictionary's file and fsynced *before* their ids
//! are returned, so an id seen anywhere is durable and is never given to
//! another name, also across restarts. New entries live in a small
//! mutex-held map until it grows past 1/8 of the snapshot (or 1024
//! entries); then a new snapshot is published, which keeps the copying
//! amortised O(1) per entry.
//!
//! File format (`<dir>/<tag_type>.dict`, append-only): records of
//! `id: u32 LE | len: u32 LE | name bytes | crc32(id, len, name): u32 LE`.
//! A torn record at the end (a crash mid-append) is cut off at load.
//!
//! Ids come from an [`IdAllocator`]: locally the next id after the highest
//! one in the file; in a cluster, blocks handed out by the Raft metadata
//! store. New names are then bound through [`IdAllocator::bind`] before they
//! are written: in a cluster the first node to bind a name wins, and every
//! node records the id that won.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

#[derive(Debug, thiserror::Error)]
pub enum TagError {
    #[error("tag dictionary {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("tag dictionary {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("invalid tag type {0:?}: use lowercase letters, digits and '_'")]
    BadTagType(String),
    #[error("id allocation for {tag_type}: {message}")]
    Allocation { tag_type: String, message: String },
}

/// Hands out fresh ids. An id handed out is never handed out again, for
/// the same tag type, by this or any node (locally: the file; in a
/// cluster: the replicated allocator).
pub trait IdAllocator: Send + Sync {
    /// `n` fresh ids for `tag_type`. `highest_persisted` is the largest id
    /// this node's dictionary file holds; a local allocator continues after
    /// it, a cluster allocator ignores it and hands out a reserved block.
    fn allocate(
        &self,
        tag_type: &str,
        highest_persisted: u32,
        n: u32,
    ) -> Result<Range<u32>, TagError>;

    /// Binds new names to the ids offered for them (taken from
    /// [`allocate`](Self::allocate)d ranges), all in one call, and answers
    /// the id each name has, in order. In a cluster a name another node bound
    /// first keeps that node's id and the offered one is retired (never
    /// offered again). Locally nobody else binds: the offered ids stand.
    fn bind(&self, _tag_type: &str, offered: &[(&str, u32)]) -> Result<Vec<u32>, TagError> {
        Ok(offered.iter().map(|&(_, id)| id).collect())
    }
}

/// Single-node allocation: the ids after the highest one in the file.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalIdAllocator;

impl IdAllocator for LocalIdAllocator {
    fn allocate(&self, tag_type: &str, highest: u32, n: u32) -> Result<Range<u32>, TagError> {
        let start = highest.checked_add(1);
        let end = start.and_then(|s| s.checked_add(n));
        match (start, end) {
            (Some(s), Some(e)) => Ok(s..e),
            _ => Err(TagError::Allocation {
                tag_type: tag_type.to_string(),
                message: "the u32 id space is exhausted".into(),
            }),
        }
    }
}

#[derive(Clone, Debug)]
pub struct DictConfig {
    /// Entries per dictionary; names beyond it get id 0 (counted).
    pub max_entries: usize,
    /// Longest name kept, in bytes; longer names are cut (on a character
    /// boundary) before lookup.
    pub max_name_len: usize,
}

impl Default for DictConfig {
    fn default() -> Self {
        DictConfig { max_entries: 1_000_000, max_name_len: 1024 }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DictStats {
    pub entries: u64,
    /// Names refused because the dictionary was full (given id 0).
    pub overflow: u64,
    /// Names cut to `max_name_len`.
    pub truncated: u64,
    /// New names whose cluster-wide id was already taken here by another
    /// name (an entry from before the cluster allocated ids): they keep the
    /// id this node offered, which no other name can ever get.
    pub unbound: u64,
}

struct Snapshot {
    ids: hashbrown::HashMap<Arc<str>, u32>,
}

struct Writer {
    file: File,
    path: PathBuf,
    highest: u32,
    /// Allocated ids not yet used (a cluster allocator hands out blocks).
    spare: Range<u32>,
    /// Entries newer than the snapshot.
    recent: HashMap<Arc<str>, u32>,
    names: Vec<(u32, Arc<str>)>,
    /// Every id in the file (an id bound elsewhere may not be free here).
    used: HashSet<u32>,
}

/// One tag type's dictionary.
pub struct Dictionary {
    tag_type: String,
    snapshot: ArcSwap<Snapshot>,
    writer: Mutex<Writer>,
    allocator: Arc<dyn IdAllocator>,
    cfg: DictConfig,
    overflow: AtomicU64,
    truncated: AtomicU64,
    unbound: AtomicU64,
}

const HEADER: usize = 8;

fn crc(id: u32, name: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&id.to_le_bytes());
    h.update(&(name.len() as u32).to_le_bytes());
    h.update(name);
    h.finalize()
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TagError + '_ {
    move |source| TagError::Io { path: path.to_path_buf(), source }
}

impl Dictionary {
    /// Opens (or creates) `<dir>/<tag_type>.dict` and loads it.
    pub fn open(
        dir: &Path,
        tag_type: &str,
        allocator: Arc<dyn IdAllocator>,
        cfg: DictConfig,
    ) -> Result<Dictionary, TagError> {
        if tag_type.is_empty()
            || !tag_type.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(TagError::BadTagType(tag_type.to_string()));
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(format!("{tag_type}.dict"));
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io_err(&path))?;
        let mut ids = hashbrown::HashMap::new();
        let mut names = Vec::new();
        let mut highest = 0u32;
        let mut at = 0usize;
        while data.len() - at >= HEADER {
            let id = u32::from_le_bytes(data[at..at + 4].try_into().unwrap_or_default());
            let len = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap_or_default());
            let end = at + HEADER + len as usize + 4;
            if end > data.len() {
                break;
            }
            let name = &data[at + HEADER..end - 4];
            let sum = u32::from_le_bytes(data[end - 4..end].try_into().unwrap_or_default());
            if sum != crc(id, name) {
                break;
            }
            let name = std::str::from_utf8(name).map_err(|_| TagError::Corrupt {
                path: path.clone(),
                message: format!("entry {id} is not UTF-8"),
            })?;
            let name: Arc<str> = Arc::from(name);
            if id == 0 || ids.insert(name.clone(), id).is_some() {
                return Err(TagError::Corrupt {
                    path: path.clone(),
                    message: format!("entry {id} ({name:?}) is invalid or repeated"),
                });
            }
            names.push((id, name));
            highest = highest.max(id);
            at = end;
        }
        if at < data.len() {
            // A torn append from a crash: the id was never returned, drop it.
            tracing::warn!(path = %path.display(), bytes = data.len() - at, "tag dictionary: cutting a torn record");
            file.set_len(at as u64).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
        }
        file.seek(SeekFrom::End(0)).map_err(io_err(&path))?;
        let used = names.iter().map(|&(id, _)| id).collect();
        Ok(Dictionary {
            tag_type: tag_type.to_string(),
            snapshot: ArcSwap::from_pointee(Snapshot { ids }),
            writer: Mutex::new(Writer {
                file,
                path,
                highest,
                spare: 0..0,
                recent: HashMap::new(),
                names,
                used,
            }),
            allocator,
            cfg,
            overflow: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            unbound: AtomicU64::new(0),
        })
    }

    pub fn tag_type(&self) -> &str {
        &self.tag_type
    }

    fn clip<'a>(&self, name: &'a str) -> &'a str {
        if name.len() <= self.cfg.max_name_len {
            return name;
        }
        self.truncated.fetch_add(1, Ordering::Relaxed);
        let mut end = self.cfg.max_name_len;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        &name[..end]
    }

    /// The id of a known name, without locking; None for names not (yet)
    /// in the published snapshot. Empty names are 0.
    #[inline]
    pub fn lookup(&self, name: &str) -> Option<u32> {
        if name.is_empty() {
            return Some(0);
        }
        self.snapshot.load().ids.get(self.clip(name)).copied()
    }

    /// A reader over the current snapshot, for many lookups at the cost
    /// of one atomic load (e.g. per batch).
    pub fn reader(&self) -> Reader<'_> {
        Reader { dict: self, snap: self.snapshot.load_full() }
    }

    /// The id of `name`, allocating (and persisting) one if it is new.
    pub fn get_or_insert(&self, name: &str) -> Result<u32, TagError> {
        if let Some(id) = self.lookup(name) {
            return Ok(id);
        }
        let mut out = Vec::new();
        self.insert_many(&[name], &mut out)?;
        Ok(out.first().map_or(0, |&(id, _)| id))
    }

    /// Ids for `names` that [`lookup`](Self::lookup) missed, allocated with
    /// one append and one fsync. `out` gets `(id, name)` for every name in
    /// order, whether it was new or not; the returned Vec holds only the
    /// entries created by this call (to be published to the store).
    pub fn insert_many(
        &self,
        names: &[&str],
        out: &mut Vec<(u32, Arc<str>)>,
    ) -> Result<Vec<(u32, Arc<str>)>, TagError> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let snap = self.snapshot.load();
        let mut created: Vec<(u32, Arc<str>)> = Vec::new();
        let mut buf = Vec::new();
        let mut pending: HashMap<&str, u32> = HashMap::new();
        let mut offered: Vec<(&str, u32)> = Vec::new();
        let start = out.len();
        for &raw in names {
            let name = self.clip(raw);
            if name.is_empty() {
                out.push((0, Arc::from("")));
                continue;
            }
            let known = snap
                .ids
                .get_key_value(name)
                .or_else(|| w.recent.get_key_value(name))
                .map(|(k, &v)| (v, k.clone()));
            if let Some(e) = known {
                out.push(e);
                continue;
            }
            if let Some(&id) = pending.get(name) {
                out.push((id, Arc::from(name)));
                continue;
            }
            let total = snap.ids.len() + w.recent.len() + pending.len();
            if total >= self.cfg.max_entries {
                self.overflow.fetch_add(1, Ordering::Relaxed);
                out.push((0, Arc::from(name)));
                continue;
            }
            if w.spare.is_empty() {
                let want = (names.len() - pending.len()).clamp(1, 4096) as u32;
                let highest = w.highest.max(w.spare.end.saturating_sub(1));
                w.spare = self.allocator.allocate(&self.tag_type, highest, want)?;
                if w.spare.is_empty() || w.spare.start == 0 {
                    return Err(TagError::Allocation {
                        tag_type: self.tag_type.clone(),
                        message: format!("allocator returned {:?}", w.spare),
                    });
                }
            }
            let id = w.spare.start;
            w.spare.start += 1;
            pending.insert(name, id);
            offered.push((name, id));
            out.push((id, Arc::from(name)));
        }
        if pending.is_empty() {
            return Ok(created);
        }
        // One binding for the whole batch; an error leaves the offered ids
        // unused, and they are never offered again.
        let bound = self.allocator.bind(&self.tag_type, &offered)?;
        if bound.len() != offered.len() {
            return Err(TagError::Allocation {
                tag_type: self.tag_type.clone(),
                message: format!("{} ids bound for {} names", bound.len(), offered.len()),
            });
        }
        for (&(name, mine), &won) in offered.iter().zip(&bound) {
            let id = if won == mine || won == 0 || w.used.contains(&won) {
                if won != mine {
                    self.unbound.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(tag_type = %self.tag_type, name, won, kept = mine, "tag dictionary: the cluster's id for this name is taken here by an older entry");
                }
                mine
            } else {
                won
            };
            pending.insert(name, id);
            buf.extend_from_slice(&id.to_le_bytes());
            buf.extend_from_slice(&(name.len() as u32).to_le_bytes());
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(&crc(id, name.as_bytes()).to_le_bytes());
        }
        if bound.iter().zip(&offered).any(|(won, &(_, mine))| *won != mine) {
            for e in &mut out[start..] {
                if let Some(&id) = pending.get(&*e.1) {
                    e.0 = id;
                }
            }
        }
        // Durable before any id leaves this function.
        let path = w.path.clone();
        let res = w.file.write_all(&buf).and_then(|()| w.file.sync_data());
        if let Err(e) = res {
            out.truncate(start);
            // A partial append would be cut at the next load (bad checksum);
            // cut it now so later appends stay readable.
            let _ = w.file.set_len(w.file.metadata().map(|m| m.len()).unwrap_or(0));
            return Err(io_err(&path)(e));
        }
        for (name, id) in pending {
            let name: Arc<str> = Arc::from(name);
            w.highest = w.highest.max(id);
            w.used.insert(id);
            w.recent.insert(name.clone(), id);
            w.names.push((id, name.clone()));
            created.push((id, name));
        }
        created.sort_unstable_by_key(|e| e.0);
        if w.recent.len() >= 1024.max(snap.ids.len() / 8) {
            let mut ids = snap.ids.clone();
            ids.extend(w.recent.drain());
            self.snapshot.store(Arc::new(Snapshot { ids }));
        }
        Ok(created)
    }

    /// Every entry, in allocation order.
    pub fn entries(&self) -> Vec<(u32, Arc<str>)> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).names.clone()
    }

    /// Publishes the entries still in the mutex-held map, so that they
    /// too are found without locking.
    pub fn publish(&self) {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if w.recent.is_empty() {
            return;
        }
        let mut ids = self.snapshot.load().ids.clone();
        ids.extend(w.recent.drain());
        self.snapshot.store(Arc::new(Snapshot { ids }));
    }

    pub fn stats(&self) -> DictStats {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        DictStats {
            entries: w.names.len() as u64,
            overflow: self.overflow.load(Ordering::Relaxed),
            truncated: self.truncated.load(Ordering::Relaxed),
            unbound: self.unbound.load(Ordering::Relaxed),
        }
    }
}

/// Lookups against one snapshot of a dictionary.
pub struct Reader<'a> {
    dict: &'a Dictionary,
    snap: Arc<Snapshot>,
}

impl Reader<'_> {
    /// The id of a known name: from the snapshot without locking, else
    /// (names newer than the snapshot) from the mutex-held entries. None
    /// for names never inserted.
    #[inline]
    pub fn lookup(&self, name: &str) -> Option<u32> {
        if name.is_empty() {
            return Some(0);
        }
        let name = self.dict.clip(name);
        if let Some(&id) = self.snap.ids.get(name) {
            return Some(id);
        }
        let w = self.dict.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.recent.get(name).copied().or_else(|| self.dict.snapshot.load().ids.get(name).copied())
    }
}

/// Every tag type's dictionary under one directory, opened on first use.
pub struct Dictionaries {
    dir: PathBuf,
    cfg: DictConfig,
    allocator: Arc<dyn IdAllocator>,
    dicts: ArcSwap<HashMap<String, Arc<Dictionary>>>,
    open_lock: Mutex<()>,
}

impl Dictionaries {
    /// Dictionaries in `dir` with local id allocation; every `*.dict` file
    /// there is loaded now, so a corrupt one fails the start.
    pub fn open(dir: impl Into<PathBuf>, cfg: DictConfig) -> Result<Dictionaries, TagError> {
        Self::open_with(dir, cfg, Arc::new(LocalIdAllocator))
    }

    pub fn open_with(
        dir: impl Into<PathBuf>,
        cfg: DictConfig,
        allocator: Arc<dyn IdAllocator>,
    ) -> Result<Dictionaries, TagError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let d = Dictionaries {
            dir: dir.clone(),
            cfg,
            allocator,
            dicts: ArcSwap::from_pointee(HashMap::new()),
            open_lock: Mutex::new(()),
        };
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            if let Some(t) = name.to_str().and_then(|n| n.strip_suffix(".dict")) {
                d.get(t)?;
            }
        }
        Ok(d)
    }

    /// The dictionary of `tag_type`, opening it on first use.
    pub fn get(&self, tag_type: &str) -> Result<Arc<Dictionary>, TagError> {
        if let Some(d) = self.dicts.load().get(tag_type) {
            return Ok(d.clone());
        }
        let _g = self.open_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = self.dicts.load().get(tag_type) {
            return Ok(d.clone());
        }
        let d = Arc::new(Dictionary::open(
            &self.dir,
            tag_type,
            self.allocator.clone(),
            self.cfg.clone(),
        )?);
        let mut all = (**self.dicts.load()).clone();
        all.insert(tag_type.to_string(), d.clone());
        self.dicts.store(Arc::new(all));
        Ok(d)
    }

    /// Every opened dictionary.
    pub fn all(&self) -> Vec<Arc<Dictionary>> {
        self.dicts.load().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(dir: &Path, cfg: DictConfig) -> Dictionary {
        Dictionary::open(dir, "host", Arc::new(LocalIdAllocator), cfg).unwrap()
    }

    #[test]
    fn ids_persist_and_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dict(dir.path(), DictConfig::default());
        let a = d.get_or_insert("node-a").unwrap();
        let b = d.get_or_insert("node-b").unwrap();
        assert_eq!((a, b), (1, 2));
        assert_eq!(d.get_or_insert("node-a").unwrap(), a);
        assert_eq!(d.lookup(""), Some(0));
        drop(d);
        let d = dict(dir.path(), DictConfig::default());
        assert_eq!(d.lookup("node-a"), Some(1));
        assert_eq!(d.lookup("node-b"), Some(2));
        assert_eq!(d.get_or_insert("node-c").unwrap(), 3);
        assert_eq!(d.stats().entries, 3);
    }

    #[test]
    fn torn_tail_is_cut_and_the_id_not_reused_for_a_visible_name() {
        let dir = tempfile::tempdir().unwrap();
        let d = dict(dir.path(), DictConfig::default());
        d.get_or_insert("kept").unwrap();
        drop(d);
        // A crash half-way through an append.
        let path = dir.path().join("host.dict");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[2, 0, 0, 0, 9, 0, 0, 0, b'x']).unwrap();
        drop(f);
        let d = dict(dir.path(), DictConfig::default());
        assert_eq!(d.lookup("kept"), Some(1));
        assert_eq!(d.get_or_insert("next").unwrap(), 2);
        drop(d);
        let d = dict(dir.path(), DictConfig::default());
        assert_eq!(d.lookup("next"), Some(2));
    }

    #[test]
    fn corrupt_entries_are_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.dict");
        // Two valid records claiming the same name.
        let mut bytes = Vec::new();
        for id in [1u32, 2] {
            bytes.extend_from_slice(&id.to_le_bytes());
            bytes.extend_from_slice(&1u32.to_le_bytes());
            bytes.push(b'a');
            bytes.extend_from_slice(&crc(id, b"a").to_le_bytes());
        }
        std::fs::write(&path, bytes).unwrap();
        let e =
            Dictionary::open(dir.path(), "host", Arc::new(LocalIdAllocator), DictConfig::default())
                .err()
                .unwrap();
        assert!(e.to_string().contains("repeated"), "{e}");
        assert!(Dictionary::open(
            dir.path(),
            "Host!",
            Arc::new(LocalIdAllocator),
            DictConfig::default()
        )
        .is_err());
    }

    #[test]
    fn bounded_and_names_clipped() {
        let dir = tempfile::tempdir().unwrap();
        let d = dict(dir.path(), DictConfig { max_entries: 3, max_name_len: 4 });
        let mut out = Vec::new();
        let created = d.insert_many(&["a", "b", "a", "c", "d"], &mut out).unwrap();
        let ids: Vec<u32> = out.iter().map(|e| e.0).collect();
        assert_eq!(ids, vec![1, 2, 1, 3, 0]);
        assert_eq!(created.len(), 3);
        assert_eq!(d.stats().overflow, 1);
        // "éééé" is 8 bytes: cut to "éé" (4 bytes), on a char boundary.
        let d2 = Dictionary::open(
            dir.path(),
            "az",
            Arc::new(LocalIdAllocator),
            DictConfig { max_entries: 10, max_name_len: 5 },
        )
        .unwrap();
        let id = d2.get_or_insert("éééé").unwrap();
        assert_eq!(d2.get_or_insert("éé").unwrap(), id);
        assert_eq!(d2.entries()[0].1.as_ref(), "éé");
    }

    #[test]
    fn many_threads_agree_on_ids() {
        let dir = tempfile::tempdir().unwrap();
        let d = Arc::new(dict(dir.path(), DictConfig::default()));
        let names: Vec<String> = (0..3000).map(|i| format!("host-{i:05}")).collect();
        let results: Vec<Vec<u32>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let d = d.clone();
                    let names = &names;
                    s.spawn(move || {
                        let mut v = vec![0; names.len()];
                        for i in 0..names.len() {
                            let j = (i * 7 + t * 13) % names.len();
                            v[j] = d.get_or_insert(&names[j]).unwrap();
                        }
                        v
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in &results[1..] {
            assert_eq!(r, &results[0]);
        }
        let mut ids = results[0].clone();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), names.len(), "distinct names, distinct ids");
        d.publish();
        assert!(names.iter().all(|n| d.lookup(n).is_some()));
    }

    #[test]
    fn readers_see_entries_not_yet_published() {
        let dir = tempfile::tempdir().unwrap();
        let d = dict(dir.path(), DictConfig::default());
        let r = d.reader();
        let id = d.get_or_insert("fresh").unwrap();
        assert_eq!(d.lookup("fresh"), None, "not in the snapshot yet");
        assert_eq!(r.lookup("fresh"), Some(id));
        assert_eq!(d.reader().lookup("fresh"), Some(id));
        assert_eq!(r.lookup("never"), None);
        d.publish();
        assert_eq!(d.lookup("fresh"), Some(id));
    }

    #[test]
    fn cluster_allocator_blocks_are_respected() {
        struct Blocks(Mutex<u32>);
        impl IdAllocator for Blocks {
            fn allocate(&self, _: &str, _: u32, n: u32) -> Result<Range<u32>, TagError> {
                let mut next = self.0.lock().unwrap();
                let r = *next..*next + n.max(100);
                *next += n.max(100) + 1000;
                Ok(r)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let d = Dictionary::open(
            dir.path(),
            "pod",
            Arc::new(Blocks(Mutex::new(5000))),
            DictConfig::default(),
        )
        .unwrap();
        assert_eq!(d.get_or_insert("p1").unwrap(), 5000);
        assert_eq!(d.get_or_insert("p2").unwrap(), 5001);
    }

    /// First binding wins, as the Raft state machine does it (the real one
    /// is tested with the cluster in fathom-server: tagging cannot depend on
    /// the cluster crate).
    #[derive(Default)]
    struct FirstWins {
        next: Mutex<u32>,
        by_name: Mutex<HashMap<String, u32>>,
    }

    impl IdAllocator for FirstWins {
        fn allocate(&self, _: &str, highest: u32, n: u32) -> Result<Range<u32>, TagError> {
            let mut next = self.next.lock().unwrap();
            *next = (*next).max(highest + 1);
            let r = *next..*next + n;
            *next += n;
            Ok(r)
        }

        fn bind(&self, _: &str, offered: &[(&str, u32)]) -> Result<Vec<u32>, TagError> {
            let mut m = self.by_name.lock().unwrap();
            Ok(offered.iter().map(|&(n, id)| *m.entry(n.to_string()).or_insert(id)).collect())
        }
    }

    #[test]
    fn the_id_that_won_the_binding_is_recorded() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let shared = Arc::new(FirstWins::default());
        let a = Dictionary::open(d1.path(), "pod", shared.clone(), DictConfig::default()).unwrap();
        let b = Dictionary::open(d2.path(), "pod", shared.clone(), DictConfig::default()).unwrap();
        let mut out = Vec::new();
        a.insert_many(&["web", "db"], &mut out).unwrap();
        let mut out_b = Vec::new();
        let created = b.insert_many(&["db", "cache", "web", "db"], &mut out_b).unwrap();
        let ids: Vec<u32> = out_b.iter().map(|e| e.0).collect();
        assert_eq!(ids[0], out[1].0, "db as node a bound it");
        assert_eq!(ids[2], out[0].0, "web as node a bound it");
        assert_eq!(ids[3], ids[0]);
        assert!(ids[1] > out[1].0, "cache from b's own block: {ids:?}");
        assert_eq!(created.len(), 3);
        drop(b);
        let b = Dictionary::open(d2.path(), "pod", shared, DictConfig::default()).unwrap();
        assert_eq!(b.lookup("web"), Some(out[0].0));
        assert_eq!(b.lookup("cache"), Some(ids[1]));
    }

    #[test]
    fn an_older_entry_holding_the_won_id_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        // A file from local allocation: "old" has id 1.
        dict(dir.path(), DictConfig::default()).get_or_insert("old").unwrap();
        let shared = Arc::new(FirstWins::default());
        shared.by_name.lock().unwrap().insert("new".into(), 1);
        let d = Dictionary::open(dir.path(), "host", shared, DictConfig::default()).unwrap();
        let id = d.get_or_insert("new").unwrap();
        assert!(id > 1, "{id}");
        assert_eq!(d.get_or_insert("old").unwrap(), 1);
        assert_eq!(d.stats().unbound, 1);
    }

    #[test]
    fn dictionaries_open_every_type_in_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let all = Dictionaries::open(dir.path(), DictConfig::default()).unwrap();
        all.get("host").unwrap().get_or_insert("h").unwrap();
        all.get("process").unwrap().get_or_insert("nginx").unwrap();
        drop(all);
        let all = Dictionaries::open(dir.path(), DictConfig::default()).unwrap();
        assert_eq!(all.all().len(), 2);
        assert_eq!(all.get("process").unwrap().lookup("nginx"), Some(1));
    }
}
