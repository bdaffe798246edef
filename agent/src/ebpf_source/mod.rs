//! The eBPF source: socket data, socket lifecycle, process lifecycle and
//! OpenSSL plaintext from the `fathom-ebpf` programs, turned into L7 records
//! that name the process (pid, thread, comm) on each side of a call.
//!
//! ```text
//! reader thread --EbpfBatch (by pid)--> EbpfShard (SocketFlowEngine) --Records--> Emitter
//!               --ProcessEvents-------------------------------------------------> Emitter
//! ```
//!
//! One reader thread polls the ring buffer and routes each event by pid to
//! an [`EbpfShard`]: every key of a socket starts with its pid, so a socket
//! and its process's exit always meet in one shard. The shards are actors
//! of their own rather than a new message type of the packet shards: the
//! two tables share nothing, so neither has to know the other's events.
//! Process events also go to the emitter, which owns the process table and
//! writes a process record for each new one.

mod engine;
mod l7;
mod shard;

use std::hash::BuildHasher;
use std::thread;
use std::time::{Duration, Instant};

use actix::prelude::SendError;
use actix::Addr;
use fathom_ebpf::{EbpfCapture, Event, ProcessEvent, ProcessEventKind};

pub use engine::{SocketFlowConfig, SocketFlowEngine, SocketFlowStats, SocketKey};
pub use shard::{EbpfBatch, EbpfShard, MAILBOX_BATCHES};

use crate::pipeline::{Emitter, ProcessEvents, StopFlag, POLL_INTERVAL};
use crate::telemetry::TELEMETRY;

/// Events per batch before it is shipped (a poll's end ships the rest).
const BATCH_EVENTS: usize = 1024;
/// How often the kernel counters are read and new libssl files looked for.
const COUNTERS_EVERY: Duration = Duration::from_secs(1);
const SSL_RESCAN_EVERY: Duration = Duration::from_secs(30);

/// Routes events from the reader thread to the shards and the emitter.
pub struct EbpfRouter {
    shards: Vec<Addr<EbpfShard>>,
    pending: Vec<Vec<Event>>,
    emitter: Addr<Emitter>,
    processes: Vec<ProcessEvent>,
    unix_offset_ns: u64,
    hasher: std::collections::hash_map::RandomState,
    /// The agent's own pid: its traffic (to the server, /metrics) is not
    /// observed, or every batch it sends would make records to send.
    own_pid: u32,
    /// capture.exclude_ports: not observed by either source.
    exclude_ports: Vec<u16>,
    /// Payload buffers the shards are done with.
    spent: Option<std::sync::mpsc::Receiver<Vec<Vec<u8>>>>,
}

impl EbpfRouter {
    pub fn new(shards: Vec<Addr<EbpfShard>>, emitter: Addr<Emitter>, unix_offset_ns: u64) -> Self {
        let pending = shards.iter().map(|_| Vec::with_capacity(BATCH_EVENTS)).collect();
        EbpfRouter {
            shards,
            pending,
            emitter,
            processes: Vec::new(),
            unix_offset_ns,
            hasher: Default::default(),
            own_pid: std::process::id(),
            exclude_ports: Vec::new(),
            spent: None,
        }
    }

    /// Payload buffers come back from the shards on `spent` and later
    /// events are decoded into them: no allocation per data event.
    pub fn reuse_buffers(mut self, spent: std::sync::mpsc::Receiver<Vec<Vec<u8>>>) -> Self {
        self.spent = Some(spent);
        self
    }

    /// Skip data on sockets with one of these ports at either end.
    pub fn exclude_ports(mut self, ports: &[u16]) -> Self {
        self.exclude_ports = ports.to_vec();
        self
    }

    pub fn route(&mut self, event: Event) {
        let pid = match &event {
            Event::Data(d) => {
                if !self.exclude_ports.is_empty()
                    && (self.exclude_ports.contains(&d.src.port())
                        || self.exclude_ports.contains(&d.dst.port()))
                {
                    return;
                }
                d.pid
            }
            Event::Socket(s) => s.pid,
            Event::Process(p) => {
                self.processes.push(p.clone());
                if !matches!(p.kind, ProcessEventKind::Exit { .. }) {
                    return;
                }
                p.pid
            }
        };
        if pid == self.own_pid {
            return;
        }
        let idx = (self.hasher.hash_one(pid) % self.shards.len() as u64) as usize;
        self.pending[idx].push(event);
        if self.pending[idx].len() >= BATCH_EVENTS {
            self.ship(idx);
        }
    }

    /// Send everything pending (the end of a poll: bounds latency).
    pub fn ship_all(&mut self) {
        for i in 0..self.pending.len() {
            if !self.pending[i].is_empty() {
                self.ship(i);
            }
        }
        if !self.processes.is_empty() {
            let events = std::mem::take(&mut self.processes);
            // The emitter's mailbox is unbounded: process events are few.
            self.emitter.do_send(ProcessEvents { events, unix_offset_ns: self.unix_offset_ns });
        }
    }

    fn ship(&mut self, idx: usize) {
        let events = std::mem::replace(&mut self.pending[idx], Vec::with_capacity(BATCH_EVENTS));
        let n = events.len() as u64;
        // A full mailbox means the shard is behind: drop rather than grow
        // without bound, and count it.
        match self.shards[idx].try_send(EbpfBatch { events }) {
            Ok(()) => {}
            Err(SendError::Full(_)) | Err(SendError::Closed(_)) => {
                TELEMETRY.ebpf_batches_dropped.add(1);
                TELEMETRY.ebpf_events_dropped.add(n);
            }
        }
    }
}

/// Start the reader thread: polls `capture` until `stop`, then drops it
/// (which detaches every program).
pub fn spawn_reader(
    mut capture: EbpfCapture,
    mut router: EbpfRouter,
    stop: StopFlag,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new().name("ebpf-reader".into()).spawn(move || {
        let mut last_counters = Instant::now();
        let mut last_rescan = Instant::now();
        let (mut lost, mut delivered, mut malformed) = (0u64, 0u64, 0u64);
        while !stop.stopped() {
            if let Some(rx) = &router.spent {
                for buffers in rx.try_iter() {
                    capture.recycle(buffers);
                }
            }
            match capture.poll(POLL_INTERVAL) {
                Ok(events) => {
                    for event in events {
                        router.route(event);
                    }
                }
                Err(e) => {
                    tracing::error!("eBPF capture failed: {e}");
                    break;
                }
            }
            router.ship_all();
            if last_counters.elapsed() >= COUNTERS_EVERY {
                last_counters = Instant::now();
                if let Ok(c) = capture.counters() {
                    TELEMETRY.ebpf_hooks.set(&c);
                    TELEMETRY.ebpf_events.add(c.delivered.saturating_sub(delivered));
                    TELEMETRY.ebpf_lost.add(c.ring_buffer_drops.saturating_sub(lost));
                    TELEMETRY.ebpf_malformed.add(c.malformed.saturating_sub(malformed));
                    (delivered, lost, malformed) = (c.delivered, c.ring_buffer_drops, c.malformed);
                }
            }
            if last_rescan.elapsed() >= SSL_RESCAN_EVERY {
                last_rescan = Instant::now();
                for lib in capture.attach_new_ssl_libraries() {
                    match &lib.error {
                        None => tracing::info!(path = %lib.path.display(), "libssl probed"),
                        Some(e) => {
                            tracing::debug!(path = %lib.path.display(), "libssl not probed: {e}")
                        }
                    }
                }
            }
        }
        // What came in since the last poll, before the programs detach.
        if let Ok(events) = capture.poll(Duration::ZERO) {
            for event in events {
                router.route(event);
            }
        }
        router.ship_all();
    })
}

/// The process record of a process that is gone before /proc could be read.
pub(crate) fn process_from_event(
    e: &ProcessEvent,
    unix_offset_ns: u64,
) -> crate::process::ProcessInfo {
    crate::process::ProcessInfo {
        pid: e.pid,
        ppid: e.ppid,
        name: e.comm.to_string(),
        cmdline: match &e.kind {
            ProcessEventKind::Exec { filename } => filename.clone(),
            _ => String::new(),
        },
        start_time_us: e.ts_ns.saturating_add(unix_offset_ns) / 1000,
        cgroup: String::new(),
        container_id: None,
        pod_uid: None,
    }
}
