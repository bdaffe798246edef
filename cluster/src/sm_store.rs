//! The state machine store: the [`MetaState`] in memory, snapshots as files.
//!
//! The state is rebuilt at start from the newest snapshot file; openraft then re-applies
//! the committed log entries after it (the committed id is persisted by the log store).
//! A snapshot file holds the snapshot meta and the [`Applied`] state as JSON, written
//! atomically.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::log_store::write_atomic;
use crate::state::{MetaState, Response};
use crate::types::{NodeId, TypeConfig};

const SNAPSHOT_FILE: &str = "snapshot.json";

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BasicNode>,
    pub state: MetaState,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Applied,
}

/// Shared so that reads go straight to the applied state without a Raft round trip.
pub type SharedState = Arc<RwLock<Applied>>;

#[derive(Clone)]
pub struct FileStateMachine {
    dir: PathBuf,
    pub(crate) shared: SharedState,
    /// Counts snapshots built, for unique ids.
    seq: Arc<std::sync::atomic::AtomicU64>,
}

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::new(ErrorSubject::StateMachine, verb, &io::Error::other(e.to_string())).into()
}

impl FileStateMachine {
    pub fn open(dir: &Path) -> io::Result<FileStateMachine> {
        std::fs::create_dir_all(dir)?;
        let applied = match std::fs::read(dir.join(SNAPSHOT_FILE)) {
            Ok(b) => {
                let f: SnapshotFile = serde_json::from_slice(&b).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("snapshot file: {e}"))
                })?;
                f.data
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Applied::default(),
            Err(e) => return Err(e),
        };
        Ok(FileStateMachine {
            dir: dir.to_path_buf(),
            shared: Arc::new(RwLock::new(applied)),
            seq: Arc::default(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Applied> {
        self.shared.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.shared.write().unwrap_or_else(|p| p.into_inner())
    }

    fn load_snapshot_file(&self) -> io::Result<Option<SnapshotFile>> {
        match std::fs::read(self.dir.join(SNAPSHOT_FILE)) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for FileStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data = self.read().clone();
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot_id = match data.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, seq),
            None => format!("empty-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.membership.clone(),
            snapshot_id,
        };
        let file = SnapshotFile { meta: meta.clone(), data };
        let bytes = serde_json::to_vec(&file).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        write_atomic(&self.dir, SNAPSHOT_FILE, &bytes).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftStateMachine<TypeConfig> for FileStateMachine {
    type SnapshotBuilder = FileStateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let g = self.read();
        Ok((g.last_applied, g.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut g = self.write();
        let mut out = Vec::new();
        for e in entries {
            g.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Response::Ok),
                EntryPayload::Normal(cmd) => out.push(g.state.apply(cmd)),
                EntryPayload::Membership(m) => {
                    g.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(Response::Ok);
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        // The bytes come from the network: parse before touching anything.
        let file: SnapshotFile =
            serde_json::from_slice(&bytes).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        if file.data.last_applied != meta.last_log_id {
            return Err(sm_err(
                ErrorVerb::Read,
                format!(
                    "snapshot data is at {:?} but its meta says {:?}",
                    file.data.last_applied, meta.last_log_id
                ),
            ));
        }
        let f = SnapshotFile { meta: meta.clone(), data: file.data };
        let bytes = serde_json::to_vec(&f).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        write_atomic(&self.dir, SNAPSHOT_FILE, &bytes).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        *self.write() = f.data;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let f = self.load_snapshot_file().map_err(|e| sm_err(ErrorVerb::Read, e))?;
        Ok(match f {
            Some(f) => {
                let meta = f.meta.clone();
                let bytes = serde_json::to_vec(&f).map_err(|e| sm_err(ErrorVerb::Read, e))?;
                Some(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
            }
            None => None,
        })
    }
}
