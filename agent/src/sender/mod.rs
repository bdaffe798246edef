//! The sender: batches records, zstd-compresses them, spools every batch
//! on disk and pushes the spool to the server's data service
//! (`fathom.agent.v1.AgentData/Push`) in batch-id order, deleting a batch
//! only once the server acknowledged it as stored.
//!
//! Threads: [`SenderHandle::submit`] never blocks (a bounded queue; records
//! beyond it are dropped and counted); a batcher thread cuts batches by
//! record count, encoded bytes or age and writes them to the [`Spool`]; a
//! sending thread (its own tokio runtime) replays the spool one batch at a
//! time. One batch in flight keeps each agent's batches in order at the
//! server, which is what its duplicate detection relies on.

pub mod convert;
pub mod enroll;
pub mod spool;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fathom_proto::agent_data_client::AgentDataClient;
use fathom_proto::{AckStatus, Compression, RecordBatch, Records};
use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

pub use spool::Spool;

use crate::output::OutputRecord;

/// `[sender]` of the agent configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SenderConfig {
    /// The server's data service, `host:port`.
    pub server: String,
    /// This agent's identity at the server; empty = the host name.
    pub agent_id: String,
    /// Where unacknowledged batches are kept.
    pub spool_dir: String,
    /// Bound on the spool; the oldest batches are dropped beyond it.
    pub spool_max_bytes: u64,
    /// fsync each spooled batch (see [`spool`]).
    pub spool_fsync: bool,
    /// A batch is cut at this many records ...
    pub batch_max_records: usize,
    /// ... or this many encoded (uncompressed) bytes ...
    pub batch_max_bytes: usize,
    /// ... or this long after its first record.
    pub batch_linger_ms: u64,
    /// zstd level (1 fast .. 19 small).
    pub zstd_level: i32,
    /// Records queued between the emitter and the batcher.
    pub queue_capacity: usize,
    /// Per-request deadline, connection attempts included.
    pub request_timeout_ms: u64,
    /// Longest wait between retries.
    pub max_backoff_ms: u64,
    /// The server's control service (enrollment, heartbeats), `host:port`; empty = no
    /// enrollment (plain data channel).
    pub control_addr: String,
    /// One-time enrollment token, used only while `cert_dir` holds no certificate.
    pub enroll_token: String,
    /// The cluster CA certificate (PEM) trusted on first contact.
    pub ca_file: String,
    /// The agent's certificate, key and CA after enrollment (files 0600).
    pub cert_dir: String,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            server: String::new(),
            agent_id: String::new(),
            spool_dir: "/var/lib/fathom-agent/spool".into(),
            spool_max_bytes: 1 << 30,
            spool_fsync: true,
            batch_max_records: 8192,
            batch_max_bytes: 4 << 20,
            batch_linger_ms: 1000,
            zstd_level: 3,
            queue_capacity: 65_536,
            request_timeout_ms: 30_000,
            max_backoff_ms: 5_000,
            control_addr: String::new(),
            enroll_token: String::new(),
            ca_file: String::new(),
            cert_dir: "/var/lib/fathom-agent/certs".into(),
        }
    }
}

/// Counters of the sender, updated lock-free.
#[derive(Debug, Default)]
pub struct SenderStats {
    pub records_submitted: AtomicU64,
    /// Records dropped because the queue to the batcher was full.
    pub records_dropped_queue: AtomicU64,
    pub batches_spooled: AtomicU64,
    /// Push attempts (first sends and retries).
    pub batches_sent: AtomicU64,
    /// Pushes of a batch that failed before or that an earlier run of the
    /// agent left in the spool.
    pub batches_replayed: AtomicU64,
    /// Batches the server acknowledged as stored (or as already stored).
    pub batches_acked: AtomicU64,
    pub records_acked: AtomicU64,
    pub batches_duplicate: AtomicU64,
    /// Batches the server refused as malformed or too large: moved to the
    /// spool's quarantine, not retried.
    pub batches_rejected: AtomicU64,
    pub records_rejected: AtomicU64,
    /// Failed pushes that will be retried.
    pub send_errors: AtomicU64,
    /// Batches that could not be written to the spool (records lost).
    pub spool_errors: AtomicU64,
}

// Unboxed like the emitter's records: an allocation per record would cost
// more than the move.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Record(OutputRecord),
    Flush(mpsc::Sender<()>),
}

/// The one place the data channel is configured: mTLS with the agent's certificate
/// once enrolled, plain otherwise. Connect it inside a tokio runtime.
pub fn endpoint(
    server: &str,
    timeout: Duration,
    creds: Option<&enroll::Credentials>,
) -> Result<Endpoint, String> {
    let bad =
        |e: tonic::transport::Error| format!("sender: invalid server address {server:?}: {e}");
    let ep = match creds {
        Some(c) => Endpoint::from_shared(enroll::https_uri(server))
            .and_then(|e| e.tls_config(c.tls()))
            .map_err(bad)?,
        None => {
            let uri = if server.contains("://") {
                server.to_string()
            } else {
                format!("http://{server}")
            };
            Endpoint::from_shared(uri).map_err(bad)?
        }
    };
    let ep = ep
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    Ok(ep)
}

/// What the emitter holds: cheap to clone, `submit` never blocks.
#[derive(Clone)]
pub struct SenderHandle {
    tx: SyncSender<Msg>,
    stats: Arc<SenderStats>,
    spool: Arc<Spool>,
    /// The version of the pool config the agent runs with (0 = none).
    config_version: u64,
}

/// The running sender; [`shutdown`](Sender::shutdown) to stop it.
pub struct Sender {
    handle: SenderHandle,
    stop: Arc<AtomicBool>,
    batcher: Option<JoinHandle<()>>,
    pusher: Option<JoinHandle<()>>,
    wake: Arc<tokio::sync::Notify>,
    restart: Arc<tokio::sync::Notify>,
}

impl SenderHandle {
    /// Queues a record; drops it (counted) if the queue is full.
    pub fn submit(&self, rec: OutputRecord) {
        self.stats.records_submitted.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Msg::Record(rec)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.records_dropped_queue.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Cuts the current batch into the spool and waits until it is there.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    pub fn stats(&self) -> &SenderStats {
        &self.stats
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// The sender's and the spool's counters in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let st = &self.stats;
        let sp = &self.spool.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, kind, help, v) in [
            ("records_submitted_total", "counter", "Records handed to the sender.", get(&st.records_submitted)),
            ("records_dropped_queue_total", "counter", "Records dropped because the queue to the batcher was full.", get(&st.records_dropped_queue)),
            ("batches_spooled_total", "counter", "Batches written to the spool.", get(&st.batches_spooled)),
            ("batches_sent_total", "counter", "Pushes to the server (first sends and retries).", get(&st.batches_sent)),
            ("batches_replayed_total", "counter", "Pushes of batches that failed before or were left spooled by an earlier run.", get(&st.batches_replayed)),
            ("batches_acked_total", "counter", "Batches the server acknowledged (stored or duplicate).", get(&st.batches_acked)),
            ("records_acked_total", "counter", "Records in acknowledged batches.", get(&st.records_acked)),
            ("batches_duplicate_total", "counter", "Batches the server already had.", get(&st.batches_duplicate)),
            ("batches_quarantined_total", "counter", "Batches moved to the spool's quarantine (refused by the server as invalid, or unreadable).", get(&sp.quarantined)),
            ("batches_rejected_total", "counter", "Batches the server refused as invalid.", get(&st.batches_rejected)),
            ("records_rejected_total", "counter", "Records in batches the server refused.", get(&st.records_rejected)),
            ("send_errors_total", "counter", "Failed pushes that are retried.", get(&st.send_errors)),
            ("spool_errors_total", "counter", "Batches that could not be spooled (records lost).", get(&st.spool_errors)),
            ("spool_corrupt_total", "counter", "Spool segments found unreadable.", get(&sp.corrupt)),
            ("spool_dropped_batches_total", "counter", "Oldest batches deleted unsent because the spool was full.", get(&sp.dropped_batches)),
            ("spool_batches", "gauge", "Batches waiting in the spool.", get(&sp.batches)),
            ("spool_bytes", "gauge", "Bytes of the batches waiting in the spool.", get(&sp.bytes)),
            ("pool_config_version", "gauge", "Version of the pool config pushed by the controller that the agent runs with (0 = none).", self.config_version),
        ] {
            let _ = writeln!(
                out,
                "# HELP fathom_agent_sender_{name} {help}\n# TYPE fathom_agent_sender_{name} {kind}\nfathom_agent_sender_{name} {v}"
            );
        }
    }
}

/// The sender whose counters the agent's `/metrics` shows (the last started).
static METRICS: std::sync::Mutex<Option<SenderHandle>> = std::sync::Mutex::new(None);

/// Appends the running sender's counters, if there is one.
pub fn render_metrics(out: &mut String) {
    let h = METRICS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(h) = h {
        h.render_metrics(out);
    }
}

impl Sender {
    /// Opens the spool and starts the batcher and sending threads.
    pub fn start(cfg: SenderConfig) -> Result<Sender, String> {
        Self::start_with_pool_config(cfg, 0)
    }

    /// [`start`](Sender::start) for an agent running with the pool config of
    /// `config_version` (0 = none), the version its heartbeats report.
    pub fn start_with_pool_config(
        mut cfg: SenderConfig,
        config_version: u64,
    ) -> Result<Sender, String> {
        let host = crate::host::host_name();
        let agent_id = if cfg.agent_id.is_empty() { host.clone() } else { cfg.agent_id.clone() };
        if agent_id.is_empty() {
            return Err("sender: no agent_id set and the host name is unknown".into());
        }
        let creds = enroll::ensure(&cfg, &agent_id, &host)?;
        // With no fixed server the data channel follows placement (heartbeats).
        let follow_placement = cfg.server.is_empty() && creds.is_some();
        if cfg.server.is_empty() {
            // The ingest node enrollment assigned.
            cfg.server =
                creds.as_ref().map(|c| c.enrollment.ingest_addr.clone()).unwrap_or_default();
        }
        if cfg.server.is_empty() {
            return Err("sender: [sender] server is not set (host:port of the server)".into());
        }
        let creds = creds.map(|c| {
            Arc::new(enroll::SharedCredentials {
                current: Mutex::new(c),
                generation: AtomicU64::new(0),
            })
        });
        let spool = Arc::new(
            Spool::open(&cfg.spool_dir, cfg.spool_max_bytes, cfg.spool_fsync)
                .map_err(|e| format!("sender: cannot open spool {}: {e}", cfg.spool_dir))?,
        );
        let timeout = Duration::from_millis(cfg.request_timeout_ms.max(1));
        let endpoint = endpoint(&cfg.server, timeout, creds.as_ref().map(|c| c.get()).as_ref())?;
        let (tx, rx) = mpsc::sync_channel(cfg.queue_capacity.max(1));
        let stats = Arc::new(SenderStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(tokio::sync::Notify::new());
        let restart = Arc::new(tokio::sync::Notify::new());
        let batcher = {
            let b = Batcher {
                cfg: cfg.clone(),
                spool: spool.clone(),
                stats: stats.clone(),
                wake: wake.clone(),
                agent_id: agent_id.clone(),
                host,
            };
            std::thread::Builder::new()
                .name("sender-batch".into())
                .spawn(move || b.run(rx))
                .map_err(|e| format!("sender: cannot start thread: {e}"))?
        };
        let pusher = {
            let p = Pusher {
                replay_upto: spool.newest().unwrap_or(0),
                spool: spool.clone(),
                stats: stats.clone(),
                stop: stop.clone(),
                wake: wake.clone(),
                max_backoff: Duration::from_millis(cfg.max_backoff_ms.max(10)),
                server: cfg.server.clone(),
                follow_placement,
                timeout,
                creds: creds.clone(),
            };
            let control = creds.clone().filter(|_| !cfg.control_addr.is_empty()).map(|creds| {
                enroll::ControlLoop {
                    control_addr: cfg.control_addr.clone(),
                    cert_dir: cfg.cert_dir.clone().into(),
                    creds,
                    stats: stats.clone(),
                    spool: spool.clone(),
                    stop: stop.clone(),
                    timeout,
                    running_version: config_version,
                    restart: restart.clone(),
                    pending_version: None,
                    refused_version: None,
                }
            });
            std::thread::Builder::new()
                .name("sender-push".into())
                .spawn(move || {
                    let rt =
                        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                            Ok(rt) => rt,
                            Err(e) => {
                                tracing::error!("sender: cannot start runtime: {e}");
                                return;
                            }
                        };
                    // Connects on first use and reconnects after failures.
                    let channel = {
                        let _rt = rt.enter();
                        endpoint.connect_lazy()
                    };
                    // Heartbeats and renewal share the runtime: block_on drives both.
                    if let Some(c) = control {
                        rt.spawn(c.run());
                    }
                    rt.block_on(p.run(channel));
                })
                .map_err(|e| format!("sender: cannot start thread: {e}"))?
        };
        tracing::info!(server = %cfg.server, agent_id, spool = %cfg.spool_dir, spooled = spool.len(), pool_config = config_version, "sender started");
        let handle = SenderHandle { tx, stats, spool, config_version };
        *METRICS.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle.clone());
        Ok(Sender { handle, stop, batcher: Some(batcher), pusher: Some(pusher), wake, restart })
    }

    pub fn handle(&self) -> SenderHandle {
        self.handle.clone()
    }

    /// Notified when the controller pushed a valid pool config, kept in `cert_dir`
    /// for the restart that applies it.
    pub fn pool_config_pushed(&self) -> Arc<tokio::sync::Notify> {
        self.restart.clone()
    }

    /// Spools what is batched, then waits up to `drain` for the spool to be
    /// acknowledged; what is left stays spooled for the next start.
    pub fn shutdown(mut self, drain: Duration) {
        self.handle.flush();
        let deadline = Instant::now() + drain;
        while !self.handle.spool.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::Release);
        self.wake.notify_one();
        if let Some(p) = self.pusher.take() {
            let _ = p.join();
        }
        // The batcher exits once every handle is dropped; handles the
        // emitter may still hold are not waited for.
        drop(self.batcher.take());
    }
}

struct Batcher {
    cfg: SenderConfig,
    spool: Arc<Spool>,
    stats: Arc<SenderStats>,
    wake: Arc<tokio::sync::Notify>,
    agent_id: String,
    host: String,
}

impl Batcher {
    fn run(self, rx: mpsc::Receiver<Msg>) {
        let linger = Duration::from_millis(self.cfg.batch_linger_ms.max(1));
        let mut recs = Records::default();
        let mut bytes = 0usize;
        let mut first: Option<Instant> = None;
        loop {
            let wait = first.map_or(linger, |t| linger.saturating_sub(t.elapsed()));
            let msg = rx.recv_timeout(wait);
            let mut flush_reply = None;
            let mut closed = false;
            match msg {
                Ok(Msg::Record(r)) => {
                    bytes += convert::push(&mut recs, r);
                    first.get_or_insert_with(Instant::now);
                }
                Ok(Msg::Flush(reply)) => flush_reply = Some(reply),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => closed = true,
            }
            let n = recs.counts().total() as usize;
            let due = first.is_some_and(|t| t.elapsed() >= linger);
            if n > 0
                && (n >= self.cfg.batch_max_records
                    || bytes >= self.cfg.batch_max_bytes
                    || due
                    || flush_reply.is_some()
                    || closed)
            {
                self.cut(std::mem::take(&mut recs));
                bytes = 0;
                first = None;
            }
            if let Some(r) = flush_reply {
                let _ = r.send(());
            }
            if closed {
                return;
            }
        }
    }

    fn cut(&self, recs: Records) {
        let counts = recs.counts();
        let raw = recs.encode_to_vec();
        let payload = match zstd::bulk::compress(&raw, self.cfg.zstd_level) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("sender: zstd failed, batch lost: {e}");
                self.stats.spool_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let res = self.spool.next_batch_id().and_then(|batch_id| {
            self.spool.push(&RecordBatch {
                agent_id: self.agent_id.clone(),
                batch_id,
                compression: Compression::Zstd as i32,
                payload,
                uncompressed_size: raw.len() as u64,
                counts: Some(counts),
                host: self.host.clone(),
                // Re-read for each batch so address changes follow; loopback
                // addresses are implied at the server.
                host_ips: crate::host::local_addresses()
                    .into_iter()
                    .map(|ip| match ip {
                        std::net::IpAddr::V4(a) => a.octets().to_vec(),
                        std::net::IpAddr::V6(a) => a.octets().to_vec(),
                    })
                    .collect(),
            })
        });
        match res {
            Ok(()) => {
                self.stats.batches_spooled.fetch_add(1, Ordering::Relaxed);
                self.wake.notify_one();
            }
            Err(e) => {
                tracing::error!(
                    records = counts.total(),
                    "sender: cannot spool batch, records lost: {e}"
                );
                self.stats.spool_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

struct Pusher {
    /// The newest batch an earlier run left in the spool.
    replay_upto: u64,
    spool: Arc<Spool>,
    stats: Arc<SenderStats>,
    stop: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
    max_backoff: Duration,
    server: String,
    /// `server` is the assigned ingest node's and changes with the credentials'
    /// `ingest_addr` (placement moved the agent).
    follow_placement: bool,
    timeout: Duration,
    /// Renewed credentials make the data channel reconnect with the new certificate.
    creds: Option<Arc<enroll::SharedCredentials>>,
}

/// What to do with a batch after a failed push.
fn permanent(code: Code) -> bool {
    // Malformed or too large: the same bytes will never be accepted.
    matches!(code, Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange)
}

impl Pusher {
    async fn run(mut self, channel: Channel) {
        let client_of = |channel: Channel| {
            AgentDataClient::new(channel)
                .max_decoding_message_size(1 << 20)
                .max_encoding_message_size(usize::MAX)
        };
        let mut client = client_of(channel);
        let mut generation = self.creds.as_ref().map(|c| c.generation.load(Ordering::Acquire));
        let mut backoff = Duration::from_millis(100);
        let mut failed: Option<u64> = None;
        while !self.stop.load(Ordering::Acquire) {
            if let Some(creds) = &self.creds {
                let g = creds.generation.load(Ordering::Acquire);
                if Some(g) != generation {
                    let current = creds.get();
                    let assigned = &current.enrollment.ingest_addr;
                    if self.follow_placement && !assigned.is_empty() && *assigned != self.server {
                        tracing::info!(from = %self.server, to = %assigned, "sender: moving the data channel");
                        self.server = assigned.clone();
                    }
                    match endpoint(&self.server, self.timeout, Some(&current)) {
                        Ok(ep) => {
                            client = client_of(ep.connect_lazy());
                            generation = Some(g);
                            tracing::info!(server = %self.server, "sender: reconnecting with the current certificate and ingest node");
                        }
                        Err(e) => tracing::error!("{e}"),
                    }
                }
            }
            let Some(batch) = self.spool.next_after(None) else {
                // Wait for the batcher, but look again now and then.
                let _ =
                    tokio::time::timeout(Duration::from_millis(500), self.wake.notified()).await;
                continue;
            };
            let id = batch.batch_id;
            let records = batch.counts.map_or(0, |c| c.total());
            self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
            if id <= self.replay_upto || failed == Some(id) {
                self.stats.batches_replayed.fetch_add(1, Ordering::Relaxed);
            }
            failed = Some(id);
            match client.push(batch).await {
                Ok(resp) => {
                    let ack = resp.into_inner();
                    if ack.batch_id != id {
                        tracing::warn!(
                            sent = id,
                            acked = ack.batch_id,
                            "sender: ack for another batch; retrying"
                        );
                        self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if ack.status == AckStatus::Duplicate as i32 {
                        self.stats.batches_duplicate.fetch_add(1, Ordering::Relaxed);
                    }
                    self.spool.remove(id);
                    self.stats.batches_acked.fetch_add(1, Ordering::Relaxed);
                    self.stats.records_acked.fetch_add(records, Ordering::Relaxed);
                    backoff = Duration::from_millis(100);
                }
                Err(st) if permanent(st.code()) => {
                    tracing::error!(
                        batch_id = id,
                        records,
                        "sender: server refused batch as invalid ({:?}): {}",
                        st.code(),
                        st.message()
                    );
                    self.spool.quarantine(id, &format!("refused by the server: {}", st.message()));
                    self.stats.batches_rejected.fetch_add(1, Ordering::Relaxed);
                    self.stats.records_rejected.fetch_add(records, Ordering::Relaxed);
                }
                Err(st) => {
                    tracing::debug!(
                        batch_id = id,
                        "sender: push failed, retrying in {backoff:?}: {st}"
                    );
                    self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                    let _ = tokio::time::timeout(backoff, async {
                        while !self.stop.load(Ordering::Acquire) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    })
                    .await;
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }
}
