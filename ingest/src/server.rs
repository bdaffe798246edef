//! The tonic service and its write pipeline.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use fathom_proto::agent_data_server::{AgentData, AgentDataServer};
use fathom_proto::{Ack, AckStatus, RecordBatch};
use fathom_store::{Granularity, Store, StoreError, TableRows, TagRow};
use fathom_tagging::{Dictionaries, IdAllocator, LocalIdAllocator};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use crate::config::IngestConfig;
use crate::convert::{ConvertError, Rows, Tagger};
use crate::decode::{decode_records, decompress, DecodeError, Limits};
use crate::hwm::{HighWaterMarks, MAX_AGENT_ID};
use crate::journal::{self, Journal};

/// Counters of one ingest node.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Pushes received (every outcome).
    pub batches_received: AtomicU64,
    pub batches_stored: AtomicU64,
    pub batches_duplicate: AtomicU64,
    pub batches_rejected: AtomicU64,
    pub records_stored: AtomicU64,
    pub store_errors: AtomicU64,
    /// Store inserts (one per table of a group) and their summed latency.
    pub store_inserts: AtomicU64,
    pub store_insert_micros: AtomicU64,
    /// Insert groups stored (batches stored together).
    pub store_groups: AtomicU64,
    /// Insert groups the store refused in a way retrying cannot fix.
    pub groups_given_up: AtomicU64,
}

impl IngestStats {
    /// The counters in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, kind, help, v) in [
            (
                "batches_received_total",
                "counter",
                "Agent batches received.",
                get(&self.batches_received).to_string(),
            ),
            (
                "batches_stored_total",
                "counter",
                "Agent batches stored and acknowledged.",
                get(&self.batches_stored).to_string(),
            ),
            (
                "batches_duplicate_total",
                "counter",
                "Agent batches already stored (acknowledged as duplicates).",
                get(&self.batches_duplicate).to_string(),
            ),
            (
                "batches_rejected_total",
                "counter",
                "Agent batches refused as malformed or too large.",
                get(&self.batches_rejected).to_string(),
            ),
            (
                "rows_stored_total",
                "counter",
                "Rows stored from agent batches.",
                get(&self.records_stored).to_string(),
            ),
            (
                "store_errors_total",
                "counter",
                "Batches whose store insert failed (the agent retries them).",
                get(&self.store_errors).to_string(),
            ),
            (
                "store_groups_total",
                "counter",
                "Insert groups stored (the batches queued at a writer, stored with one insert per table).",
                get(&self.store_groups).to_string(),
            ),
            (
                "groups_given_up_total",
                "counter",
                "Insert groups the store refused for good (their batches are then stored one by one).",
                get(&self.groups_given_up).to_string(),
            ),
            (
                "store_insert_seconds_sum",
                "counter",
                "Time spent in store inserts.",
                format!("{:.6}", get(&self.store_insert_micros) as f64 / 1e6),
            ),
            (
                "store_insert_seconds_count",
                "counter",
                "Store inserts (one per table of an insert group).",
                get(&self.store_inserts).to_string(),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP fathom_ingest_{name} {help}\n# TYPE fathom_ingest_{name} {kind}\nfathom_ingest_{name} {v}"
            );
        }
    }
}

struct Job {
    agent: Arc<str>,
    /// The batch as the agent sent it, for the group's journal.
    batch: RecordBatch,
    rows: Rows,
    reply: oneshot::Sender<Result<AckStatus, Status>>,
}

/// Batches stored together: one insert per table for all of them, each
/// under the token `<token>:<table>`, recorded in the writer's journal
/// before the first insert (see [`crate::journal`]).
struct Group {
    token: String,
    /// (agent, batch id) of each batch.
    members: Vec<(Arc<str>, u64)>,
    rows: Rows,
    /// Batches read back from a journal, converted by the writer before the
    /// inserts (tagging may need the cluster, which may not be up at start).
    unconverted: Vec<RecordBatch>,
    /// Tables already inserted, so a retry does not insert them again on a
    /// backend that ignores tokens.
    done: u8,
    /// Who waits for the outcome (a batch pushed twice waits twice).
    replies: Vec<oneshot::Sender<Result<AckStatus, Status>>>,
    /// The journal the group was recovered from, when not the writer's own.
    foreign_journal: Option<PathBuf>,
    /// Read back from a journal: what the last run inserted is unknown.
    recovered: bool,
}

impl Group {
    fn new(token: String) -> Group {
        Group {
            token,
            members: Vec::new(),
            rows: Rows::default(),
            unconverted: Vec::new(),
            done: 0,
            replies: Vec::new(),
            foreign_journal: None,
            recovered: false,
        }
    }
}

/// Why a group is not stored yet.
enum Failure {
    /// Retrying may store it (the store or the dictionaries are away).
    Retry(Status),
    /// Retrying cannot, and the store refused its first statement before
    /// storing anything: it is given up (its agents keep their batches and
    /// send them again).
    GiveUp(Status),
}

/// Most batches in one group, whatever their rows.
const MAX_GROUP_BATCHES: usize = 1024;

struct Writer {
    n: usize,
    store: Arc<dyn Store>,
    hwm: Arc<HighWaterMarks>,
    tagger: Arc<Tagger>,
    pending_tags: Arc<Mutex<Vec<TagRow>>>,
    stats: Arc<IngestStats>,
    journal: Journal,
    /// Tokens of this writer's groups of several batches:
    /// `<run>-<writer>-<seq>`, `run` unique to this run of the process, so
    /// no token comes back (a batch alone: `<agent>:<batch id>`).
    run: String,
    seq: u64,
    max_group_rows: usize,
    /// Batches of a group given up on: each is stored alone from then on,
    /// so a batch the store refuses holds back only its own agent.
    alone: HashSet<(Arc<str>, u64)>,
    /// Jobs taken from the queue but left for the next group.
    held: VecDeque<Job>,
}

impl Writer {
    /// Gathers the next job and whatever else is already queued (up to
    /// `max_group_rows`) into a group and records it in the journal.
    /// Batches already stored are answered at once; `None` when nothing is
    /// left to store.
    fn form_group(&mut self, first: Job, rx: &mut mpsc::Receiver<Job>) -> Option<Group> {
        let mut group = Group::new(String::new());
        let mut batches = Vec::new();
        let mut next = Some(first);
        let mut alone = false;
        while let Some(job) = next.take() {
            let id = job.batch.batch_id;
            let key = (job.agent.clone(), id);
            if id <= self.hwm.get(&job.agent) {
                self.stats.batches_duplicate.fetch_add(1, Ordering::Relaxed);
                let _ = job.reply.send(Ok(AckStatus::Duplicate));
            } else if job.reply.is_closed() {
                // The agent stopped waiting (timed out) and sends it again,
                // maybe to another node: not stored here now.
            } else if group.members.contains(&key) {
                group.replies.push(job.reply); // pushed again while queued: stored once
            } else if self.alone.contains(&key) && !group.members.is_empty() {
                self.held.push_back(job); // the next group is its own
                break;
            } else {
                alone |= self.alone.contains(&key);
                group.members.push(key);
                group.replies.push(job.reply);
                group.rows.append(job.rows);
                batches.push(job.batch);
            }
            if alone
                || group.rows.len() >= self.max_group_rows
                || group.replies.len() >= MAX_GROUP_BATCHES
            {
                break;
            }
            // Held jobs were queued before anything still in the queue.
            next = self.held.pop_front().or_else(|| rx.try_recv().ok());
        }
        if group.members.is_empty() {
            return None;
        }
        self.seq += 1;
        group.token = match &group.members[..] {
            // A batch alone keeps the token named after it, the same on
            // every ingest node and run: a batch stored by one node and
            // replayed to another (the agent moved on a timeout) is then
            // dropped by a shared ClickHouse too.
            [(agent, id)] => format!("{agent}:{id}"),
            _ => format!("{}-{}-{}", self.run, self.n, self.seq),
        };
        if let Err(e) = self.journal.record(&group.token, batches.iter()) {
            let st = Status::unavailable(format!(
                "ingest: cannot record the insert group in {}: {e}",
                self.journal.path().display()
            ));
            self.stats.store_errors.fetch_add(group.members.len() as u64, Ordering::Relaxed);
            for r in group.replies.drain(..) {
                let _ = r.send(Err(st.clone()));
            }
            return None;
        }
        Some(group)
    }

    /// Converts the batches of a group read back from a journal.
    #[allow(clippy::result_large_err)] // Status, as every handler returns
    fn convert(&self, g: &mut Group) -> Result<(), Failure> {
        // They were accepted once: today's limits do not apply.
        let unlimited = Limits { max_batch_bytes: usize::MAX, max_decompressed_bytes: usize::MAX };
        let mut rows = Rows::default();
        let mut created = Vec::new();
        let mut members = Vec::new();
        for b in &g.unconverted {
            match convert_batch(&self.tagger, unlimited, b, &mut created) {
                Ok(r) => {
                    rows.append(r);
                    members.push((Arc::from(b.agent_id.as_str()), b.batch_id));
                }
                Err(ConvertError::Tags(e)) => {
                    self.pending_tags.lock().unwrap_or_else(|p| p.into_inner()).extend(created);
                    return Err(Failure::Retry(Status::unavailable(format!(
                        "ingest: tag dictionaries: {e}"
                    ))));
                }
                Err(ConvertError::Bad(e)) => tracing::error!(
                    agent = %b.agent_id,
                    batch_id = b.batch_id,
                    "ingest: a journaled batch does not decode, left out of its group: {e}"
                ),
            }
        }
        self.pending_tags.lock().unwrap_or_else(|p| p.into_inner()).extend(created);
        g.rows = rows;
        g.members = members;
        g.unconverted.clear();
        Ok(())
    }

    /// Inserts the group's tables not yet inserted, records its marks and
    /// clears its journal.
    #[allow(clippy::result_large_err)] // Status, as every handler returns
    async fn store_group(&mut self, g: &mut Group) -> Result<(), Failure> {
        if !g.unconverted.is_empty() {
            self.convert(g)?;
        }
        let tags =
            std::mem::take(&mut *self.pending_tags.lock().unwrap_or_else(|p| p.into_inner()));
        if !tags.is_empty() {
            if let Err(e) = self.store.upsert_tags(&tags).await {
                self.pending_tags.lock().unwrap_or_else(|p| p.into_inner()).extend(tags);
                return Err(Failure::Retry(store_status(e)));
            }
        }
        let r = &g.rows;
        let steps: [(u8, bool); 6] = [
            (1, !r.l7.is_empty()),
            (2, !r.l4.is_empty()),
            (4, !r.app_1s.is_empty()),
            (8, !r.app_1m.is_empty()),
            (16, !r.net_1s.is_empty()),
            (32, !r.net_1m.is_empty()),
        ];
        for (bit, any) in steps {
            if !any || g.done & bit != 0 {
                continue;
            }
            let (rows, table) = match bit {
                1 => (TableRows::L7(&r.l7), "l7"),
                2 => (TableRows::L4(&r.l4), "l4"),
                4 => (TableRows::App(Granularity::Second, &r.app_1s), "app_1s"),
                8 => (TableRows::App(Granularity::Minute, &r.app_1m), "app_1m"),
                16 => (TableRows::Network(Granularity::Second, &r.net_1s), "net_1s"),
                _ => (TableRows::Network(Granularity::Minute, &r.net_1m), "net_1m"),
            };
            // The engine drops a second insert under this token (the
            // group inserted again after a crash or a failed table).
            let token = format!("{}:{table}", g.token);
            let started = std::time::Instant::now();
            let res = self.store.insert_deduplicated(rows, &token).await;
            self.stats.store_inserts.fetch_add(1, Ordering::Relaxed);
            self.stats
                .store_insert_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            if let Err(e) = res {
                // Once anything is in, the rest must follow under the same
                // tokens: only a group surely untouched may be given up, a
                // refusal of its first and only statement (an insert split
                // into several may have stored some; a recovered group may
                // have been inserted by the last run).
                let refused = matches!(e, StoreError::Encode(_))
                    || matches!(e, StoreError::Query { code: Some(_), .. }) && !e.is_retryable();
                let untouched =
                    g.done == 0 && !g.recovered && rows.len() <= self.store.max_rows_per_insert();
                let st = store_status(e);
                return Err(if refused && untouched {
                    Failure::GiveUp(st)
                } else {
                    Failure::Retry(st)
                });
            }
            g.done |= bit;
        }
        // No await between the inserts above and this: a server torn down
        // in-process finishes both.
        self.hwm.set_many(g.members.iter().map(|(a, id)| (&**a, *id))).map_err(|e| {
            Failure::Retry(Status::unavailable(format!(
                "ingest: cannot record batch progress: {e}"
            )))
        })?;
        self.clear_journal(g);
        self.stats.batches_stored.fetch_add(g.members.len() as u64, Ordering::Relaxed);
        self.stats.records_stored.fetch_add(g.rows.len() as u64, Ordering::Relaxed);
        self.stats.store_groups.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn clear_journal(&mut self, g: &Group) {
        let cleared = match &g.foreign_journal {
            None => self.journal.clear(),
            Some(path) => std::fs::remove_file(path),
        };
        if let Err(e) = cleared {
            // Harmless: stored again after a restart, under the same tokens.
            tracing::warn!("ingest: cannot clear an insert-group journal: {e}");
        }
    }

    /// The writer's loop: groups recovered from journals first, then, once
    /// every writer has stored its recovered groups (an agent's batch in a
    /// recovered group may now be routed to another writer), groups of
    /// queued batches. A group that fails stays the next to store; until it
    /// is stored, batches that arrive are answered with its error (their
    /// agents retry). The loop ends when the queue closes; a group not
    /// stored by then stays in the journal for the next start.
    async fn run(mut self, mut rx: mpsc::Receiver<Job>, recovered: Vec<Group>, done: RecoveryDone) {
        let mut pending: VecDeque<Group> = recovered.into();
        let mut waiting = Some(done);
        let mut backoff = std::time::Duration::from_millis(100);
        loop {
            if let Some(g) = pending.front_mut() {
                let res = self.store_group(g).await;
                match res {
                    Ok(()) => {
                        backoff = std::time::Duration::from_millis(100);
                        for r in g.replies.drain(..) {
                            let _ = r.send(Ok(AckStatus::Stored));
                        }
                        pending.pop_front();
                    }
                    Err(Failure::GiveUp(st)) => {
                        tracing::warn!(group = %g.token, batches = g.members.len(), "ingest: given up: {}", st.message());
                        self.stats.groups_given_up.fetch_add(1, Ordering::Relaxed);
                        self.stats
                            .store_errors
                            .fetch_add(g.replies.len() as u64, Ordering::Relaxed);
                        for r in g.replies.drain(..) {
                            let _ = r.send(Err(st.clone()));
                        }
                        if self.alone.len() > 10_000 {
                            self.alone.clear();
                        }
                        self.alone.extend(g.members.iter().cloned());
                        let g = pending.pop_front().expect("the front group");
                        self.clear_journal(&g);
                    }
                    Err(Failure::Retry(st)) => {
                        tracing::warn!(group = %g.token, batches = g.members.len(), "ingest: {}", st.message());
                        self.stats
                            .store_errors
                            .fetch_add(g.replies.len() as u64, Ordering::Relaxed);
                        for r in g.replies.drain(..) {
                            let _ = r.send(Err(st.clone()));
                        }
                        let mut refused = std::mem::take(&mut self.held);
                        loop {
                            match rx.try_recv() {
                                Ok(job) => refused.push_back(job),
                                Err(mpsc::error::TryRecvError::Empty) => break,
                                Err(mpsc::error::TryRecvError::Disconnected) => return,
                            }
                        }
                        self.stats.store_errors.fetch_add(refused.len() as u64, Ordering::Relaxed);
                        for job in refused {
                            let _ = job.reply.send(Err(st.clone()));
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                    }
                }
                continue;
            }
            if let Some(mut done) = waiting.take() {
                let mut others = done.recovery.subscribe();
                done.stored = true;
                drop(done);
                loop {
                    let all = tokio::time::timeout(
                        std::time::Duration::from_millis(500),
                        others.wait_for(|r| r.left == 0 || r.failed),
                    )
                    .await;
                    match all {
                        Ok(Ok(r)) if !r.failed => break,
                        // A writer stopped with its recovered groups not
                        // stored: storing now could store their batches twice.
                        Ok(_) => return,
                        Err(_) if rx.is_closed() => return,
                        Err(_) => {}
                    }
                }
            }
            let first = match self.held.pop_front() {
                Some(job) => job,
                None => match rx.recv().await {
                    Some(job) => job,
                    None => return,
                },
            };
            if let Some(g) = self.form_group(first, &mut rx) {
                pending.push_back(g);
            }
        }
    }
}

/// Writers still storing the groups recovered from journals, and whether
/// one stopped before it had.
#[derive(Clone, Copy, Debug)]
struct Recovery {
    left: usize,
    failed: bool,
}

/// A writer's part in [`Recovery`]: counted out when dropped, as failed
/// unless `stored` (a writer stopping first releases the others, which
/// then stop too).
struct RecoveryDone {
    recovery: Arc<tokio::sync::watch::Sender<Recovery>>,
    stored: bool,
}

impl Drop for RecoveryDone {
    fn drop(&mut self) {
        let stored = self.stored;
        self.recovery.send_modify(|r| {
            r.left = r.left.saturating_sub(1);
            r.failed |= !stored;
        });
    }
}

fn store_status(e: StoreError) -> Status {
    Status::unavailable(format!("store: {e}"))
}

/// A peer certificate (DER) -> the agent id it may push as, or why it is refused.
pub type AgentAuthorizer = Arc<dyn Fn(&[u8]) -> Result<String, String> + Send + Sync>;

/// Agent data over mTLS: the rustls server config (client certificates required) and
/// the check that maps a peer certificate to the one agent id it may push as. The check
/// runs on every push, so a revoked agent is refused on connections opened before the
/// revoke too.
#[derive(Clone)]
pub struct IngestTls {
    pub config: Arc<fathom_proto::tls::rustls::ServerConfig>,
    /// Leaf certificate (DER) -> agent id, or why it is refused.
    pub authorize: AgentAuthorizer,
}

/// The `AgentData` service.
pub struct IngestService {
    /// With mTLS: who may push as which agent.
    authorize: Option<AgentAuthorizer>,
    limits: Limits,
    known: Vec<String>,
    tagger: Arc<Tagger>,
    hwm: Arc<HighWaterMarks>,
    pending_tags: Arc<Mutex<Vec<TagRow>>>,
    writers: Vec<mpsc::Sender<Job>>,
    stats: Arc<IngestStats>,
}

impl IngestService {
    // tonic's Status is what the handler returns anyway.
    #[allow(clippy::result_large_err)]
    fn check_agent(&self, b: &RecordBatch) -> Result<(), Status> {
        if b.agent_id.is_empty() || b.agent_id.len() > MAX_AGENT_ID {
            return Err(Status::invalid_argument(format!(
                "agent_id must be 1..={MAX_AGENT_ID} bytes, got {}",
                b.agent_id.len()
            )));
        }
        if !self.known.is_empty() && !self.known.iter().any(|a| a == &b.agent_id) {
            return Err(Status::permission_denied(format!("unknown agent {:?}", b.agent_id)));
        }
        if b.batch_id == 0 {
            return Err(Status::invalid_argument("batch_id must be at least 1"));
        }
        Ok(())
    }

    fn reject(&self, e: DecodeError) -> Status {
        self.stats.batches_rejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("ingest: rejected: {e}");
        match e {
            DecodeError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
            DecodeError::Malformed { .. } => Status::invalid_argument(e.to_string()),
        }
    }
}

#[tonic::async_trait]
impl AgentData for IngestService {
    async fn push(&self, req: Request<RecordBatch>) -> Result<Response<Ack>, Status> {
        self.stats.batches_received.fetch_add(1, Ordering::Relaxed);
        if let Some(authorize) = &self.authorize {
            let leaf = req.peer_certs().and_then(|c| c.first().cloned());
            let leaf =
                leaf.ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
            let agent = authorize(&leaf).map_err(Status::permission_denied)?;
            if agent != req.get_ref().agent_id {
                return Err(Status::permission_denied(format!(
                    "certificate of agent {agent:?} cannot push as {:?}",
                    req.get_ref().agent_id
                )));
            }
        }
        let batch = req.into_inner();
        self.check_agent(&batch)?;
        let batch_id = batch.batch_id;
        if batch_id <= self.hwm.get(&batch.agent_id) {
            self.stats.batches_duplicate.fetch_add(1, Ordering::Relaxed);
            return Ok(Response::new(Ack { batch_id, status: AckStatus::Duplicate as i32 }));
        }
        let limits = self.limits;
        let tagger = self.tagger.clone();
        // Decompression, decoding and dictionary fsyncs are blocking work.
        let (batch, res, created) = tokio::task::spawn_blocking(move || {
            let mut created = Vec::new();
            let res = convert_batch(&tagger, limits, &batch, &mut created);
            (batch, res, created)
        })
        .await
        .map_err(|e| Status::internal(format!("ingest: decoder failed: {e}")))?;
        // Entries created for a batch that then failed are still new to the store.
        if !created.is_empty() {
            self.pending_tags.lock().unwrap_or_else(|p| p.into_inner()).extend(created);
        }
        let rows = match res {
            Ok(v) => v,
            Err(ConvertError::Bad(e)) => return Err(self.reject(e)),
            Err(ConvertError::Tags(e)) => {
                return Err(Status::unavailable(format!("ingest: tag dictionaries: {e}")))
            }
        };
        let agent: Arc<str> = Arc::from(batch.agent_id.as_str());
        let shard = shard_of(&agent, self.writers.len());
        let (reply, rx) = oneshot::channel();
        // Waits for room: the back-pressure on agents when the store is slow.
        self.writers[shard]
            .send(Job { agent, batch, rows, reply })
            .await
            .map_err(|_| Status::unavailable("ingest: shutting down"))?;
        let status = rx.await.map_err(|_| Status::unavailable("ingest: writer stopped"))??;
        Ok(Response::new(Ack { batch_id, status: status as i32 }))
    }
}

/// Decompresses, decodes and tags one batch (`created`: dictionary entries
/// it added).
fn convert_batch(
    tagger: &Tagger,
    limits: Limits,
    batch: &RecordBatch,
    created: &mut Vec<TagRow>,
) -> Result<Rows, ConvertError> {
    let payload = decompress(batch, limits)?;
    let recs = decode_records(batch, &payload)?;
    tagger.convert(batch, recs, created)
}

/// The groups left in journals under `dir` by an earlier run, unconverted,
/// for the writer each goes to (the one whose journal it is, or one of
/// today's writers for journals of writers no longer configured). A group
/// whose batches are all marked stored was stored before its journal was
/// cleared, and is cleared now.
fn recover_groups(
    dir: &Path,
    writers: usize,
    hwm: &HighWaterMarks,
) -> Result<Vec<Vec<Group>>, String> {
    let mut out: Vec<Vec<Group>> = (0..writers).map(|_| Vec::new()).collect();
    let files = journal::existing(dir).map_err(|e| format!("ingest: {}: {e}", dir.display()))?;
    for path in files {
        let Some(jg) =
            journal::read(&path).map_err(|e| format!("ingest: {}: {e}", path.display()))?
        else {
            continue;
        };
        let own = (0..writers).find(|&n| journal::path_of(dir, n) == path);
        if jg.batches.iter().all(|b| b.batch_id <= hwm.get(&b.agent_id)) {
            let cleared = match own {
                Some(_) => Journal::open(path.clone()).and_then(|mut j| j.clear()),
                None => std::fs::remove_file(&path),
            };
            cleared.map_err(|e| format!("ingest: {}: {e}", path.display()))?;
            continue;
        }
        let mut g = Group::new(jg.token);
        g.members =
            jg.batches.iter().map(|b| (Arc::from(b.agent_id.as_str()), b.batch_id)).collect();
        g.unconverted = jg.batches;
        g.recovered = true;
        if own.is_none() {
            g.foreign_journal = Some(path.clone());
        }
        tracing::info!(group = %g.token, batches = g.members.len(), journal = %path.display(), "ingest: storing an insert group left by the last run");
        let n = own.unwrap_or_else(|| {
            crc32fast::hash(path.as_os_str().as_encoded_bytes()) as usize % writers
        });
        out[n].push(g);
    }
    Ok(out)
}

fn shard_of(agent: &str, n: usize) -> usize {
    (crc32fast::hash(agent.as_bytes()) as usize) % n.max(1)
}

/// A running ingest node: its own tokio runtime serving the gRPC service,
/// and writer threads. [`stop`](Self::stop) shuts it down gracefully;
/// [`kill`](Self::kill) drops every connection at once (in-flight writes
/// still finish and record their marks).
pub struct RunningIngest {
    addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
    shutdown: Option<oneshot::Sender<()>>,
    writers: Vec<JoinHandle<()>>,
    stats: Arc<IngestStats>,
    tagger: Arc<Tagger>,
}

impl RunningIngest {
    /// Opens the dictionaries and marks under `cfg.data_dir`, publishes the
    /// dictionaries to the store, and starts serving on `cfg.listen`.
    pub fn start(cfg: &IngestConfig, store: Arc<dyn Store>) -> Result<RunningIngest, String> {
        Self::start_with(cfg, store, None)
    }

    /// [`start`](Self::start), serving over mTLS when `tls` is given.
    pub fn start_with(
        cfg: &IngestConfig,
        store: Arc<dyn Store>,
        tls: Option<IngestTls>,
    ) -> Result<RunningIngest, String> {
        Self::start_with_ids(cfg, store, tls, Arc::new(LocalIdAllocator))
    }

    /// [`start_with`](Self::start_with), taking new SmartEncoding ids from
    /// `ids` (in a cluster: the Raft metadata, so that every ingest node
    /// gives a name the same id).
    pub fn start_with_ids(
        cfg: &IngestConfig,
        store: Arc<dyn Store>,
        tls: Option<IngestTls>,
        ids: Arc<dyn IdAllocator>,
    ) -> Result<RunningIngest, String> {
        let dicts = Arc::new(
            Dictionaries::open_with(cfg.data_dir.join("tags"), Default::default(), ids)
                .map_err(|e| format!("ingest: {e}"))?,
        );
        let tagger =
            Arc::new(Tagger::new(dicts, &cfg.region, &cfg.az).map_err(|e| format!("ingest: {e}"))?);
        let hwm =
            Arc::new(HighWaterMarks::open(&cfg.data_dir.join("ingest")).map_err(|e| {
                format!("ingest: high-water marks in {}: {e}", cfg.data_dir.display())
            })?);
        let stats = Arc::new(IngestStats::default());
        // The store may have missed entries a crash kept from it.
        let pending_tags = Arc::new(Mutex::new(tagger.all_tag_rows()));
        let limits = Limits {
            max_batch_bytes: cfg.max_batch_bytes,
            max_decompressed_bytes: cfg.max_decompressed_bytes,
        };
        let journal_dir = cfg.data_dir.join("ingest");
        let n_writers = cfg.writers.max(1);
        let mut recovered = recover_groups(&journal_dir, n_writers, &hwm)?.into_iter();
        let recovering =
            Arc::new(tokio::sync::watch::Sender::new(Recovery { left: n_writers, failed: false }));
        // Every journal opened before any writer starts: a failure here
        // leaves no writer behind.
        let mut journals = Vec::with_capacity(n_writers);
        for n in 0..n_writers {
            let path = journal::path_of(&journal_dir, n);
            journals.push(
                Journal::open(path.clone())
                    .map_err(|e| format!("ingest: journal {}: {e}", path.display()))?,
            );
        }
        let mut journals = journals.into_iter();
        // Unique to this run whatever the clock says: the time and a
        // random number (std's hash keys are seeded from the OS).
        let run = {
            use std::hash::{BuildHasher, Hasher};
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            format!("{nanos:x}{:016x}", h.finish())
        };
        let mut senders = Vec::new();
        let mut writers = Vec::new();
        for n in 0..n_writers {
            let (tx, rx) = mpsc::channel::<Job>(cfg.queue_depth.max(1));
            senders.push(tx);
            let journal = journals.next().expect("one journal per writer");
            let w = Writer {
                n,
                store: store.clone(),
                hwm: hwm.clone(),
                tagger: tagger.clone(),
                pending_tags: pending_tags.clone(),
                stats: stats.clone(),
                journal,
                run: run.clone(),
                seq: 0,
                max_group_rows: cfg.group_max_rows.max(1),
                alone: HashSet::new(),
                held: VecDeque::new(),
            };
            let recovered = recovered.next().unwrap_or_default();
            let done = RecoveryDone { recovery: recovering.clone(), stored: false };
            let t = std::thread::Builder::new()
                .name(format!("ingest-write-{n}"))
                .spawn(move || {
                    let rt =
                        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                            Ok(rt) => rt,
                            Err(e) => return tracing::error!("ingest: writer runtime: {e}"),
                        };
                    rt.block_on(w.run(rx, recovered, done));
                })
                .map_err(|e| format!("ingest: cannot start writer: {e}"))?;
            writers.push(t);
        }
        let svc = IngestService {
            authorize: tls.as_ref().map(|t| t.authorize.clone()),
            limits,
            known: cfg.known_agents.clone(),
            tagger: tagger.clone(),
            hwm,
            pending_tags,
            writers: senders,
            stats: stats.clone(),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ingest-grpc")
            .enable_all()
            .build()
            .map_err(|e| format!("ingest: runtime: {e}"))?;
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(&cfg.listen))
            .map_err(|e| format!("ingest: cannot listen on {}: {e}", cfg.listen))?;
        let addr = listener.local_addr().map_err(|e| format!("ingest: {e}"))?;
        let (shutdown, stop_rx) = oneshot::channel::<()>();
        // The whole batch plus protobuf framing; beyond it tonic refuses the
        // message before decoding it.
        let max_msg = cfg.max_batch_bytes + (64 << 10);
        let server = AgentDataServer::new(svc).max_decoding_message_size(max_msg);
        let stopped = async move {
            let _ = stop_rx.await;
        };
        match tls {
            None => rt.spawn(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let res = tonic::transport::Server::builder()
                    .add_service(server)
                    .serve_with_incoming_shutdown(incoming, stopped)
                    .await;
                if let Err(e) = res {
                    tracing::error!("ingest: server failed: {e}");
                }
            }),
            Some(tls) => rt.spawn(async move {
                let incoming = fathom_proto::tls::incoming(listener, tls.config);
                let res = tonic::transport::Server::builder()
                    .add_service(server)
                    .serve_with_incoming_shutdown(incoming, stopped)
                    .await;
                if let Err(e) = res {
                    tracing::error!("ingest: server failed: {e}");
                }
            }),
        };
        tracing::info!(%addr, "ingest: serving agent data");
        Ok(RunningIngest { addr, rt: Some(rt), shutdown: Some(shutdown), writers, stats, tagger })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// The counters, shared (for a `/metrics` endpoint).
    pub fn shared_stats(&self) -> Arc<IngestStats> {
        self.stats.clone()
    }

    pub fn tagger(&self) -> &Arc<Tagger> {
        &self.tagger
    }

    /// Stops accepting, lets in-flight pushes finish, then stops the writers.
    pub fn stop(mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(10));
        }
        for w in self.writers.drain(..) {
            let _ = w.join();
        }
    }

    /// Drops the listener and every connection at once, as a crash would
    /// for the agents; the group a writer is storing completes, batches
    /// still queued are dropped (their agents send them again).
    pub fn kill(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        for w in self.writers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for RunningIngest {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
