//! The eBPF shard actor: owns one [`SocketFlowEngine`], fed batches of
//! events by the reader thread, its records sent to the same emitter as the
//! packet shards' (so RED metrics cover both). With AF_PACKET on too, it
//! announces its sockets to the packet shard of each connection
//! ([`crate::pipeline::merge`]).

use std::time::Duration;

use actix::prelude::*;
use fathom_ebpf::Event;

use super::engine::{SocketFlowConfig, SocketFlowEngine, SocketFlowStats};
use crate::flow::VecSink;
use crate::pipeline::merge::{shard_of, LocalSocket, LocalSockets};
use crate::pipeline::{wall_now_us, Emitter, FlowShard, Flush, Records};
use crate::telemetry::TELEMETRY;

/// Batches waiting in a shard's mailbox before the reader starts dropping.
pub const MAILBOX_BATCHES: usize = 64;

/// Events of the sockets (and process exits) one shard owns, in ring order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EbpfBatch {
    pub events: Vec<Event>,
}

pub struct EbpfShard {
    engine: SocketFlowEngine,
    emitter: Addr<Emitter>,
    sink: VecSink,
    seen: SocketFlowStats,
    packet_shards: Vec<Addr<FlowShard>>,
    announced: Vec<LocalSocket>,
    /// Where payload buffers go back to the reader for reuse.
    spent_to: Option<std::sync::mpsc::Sender<Vec<Vec<u8>>>>,
}

impl EbpfShard {
    pub fn new(config: SocketFlowConfig, emitter: Addr<Emitter>) -> EbpfShard {
        EbpfShard {
            engine: SocketFlowEngine::new(config),
            emitter,
            sink: VecSink::default(),
            seen: SocketFlowStats::default(),
            packet_shards: Vec::new(),
            announced: Vec::new(),
            spent_to: None,
        }
    }

    /// Hand the payload buffers of processed events back to the reader
    /// (see [`super::EbpfRouter::reuse_buffers`]).
    pub fn give_buffers_to(mut self, to: std::sync::mpsc::Sender<Vec<Vec<u8>>>) -> EbpfShard {
        self.spent_to = Some(to);
        self
    }

    /// Tell these packet shards which connections this shard's sockets are.
    pub fn announce_to(mut self, packet_shards: Vec<Addr<FlowShard>>) -> EbpfShard {
        self.engine.set_announcing(!packet_shards.is_empty());
        self.packet_shards = packet_shards;
        self
    }

    /// Send announcements, one message per packet shard. Unbounded
    /// (`do_send`): at most two per socket, far fewer than its events.
    fn announce(&mut self) {
        self.engine.take_announcements(&mut self.announced);
        if self.announced.is_empty() {
            return;
        }
        let n = self.packet_shards.len();
        let mut per: Vec<Vec<LocalSocket>> = (0..n).map(|_| Vec::new()).collect();
        for s in self.announced.drain(..) {
            per[shard_of(&s.key, n)].push(s);
        }
        for (addr, list) in self.packet_shards.iter().zip(per) {
            if !list.is_empty() {
                addr.do_send(LocalSockets(list));
            }
        }
    }

    fn ship(&mut self) {
        if !self.sink.l7.is_empty() || !self.sink.l4.is_empty() {
            TELEMETRY.l7_records.add(self.sink.l7.len() as u64);
            TELEMETRY.l4_records.add(self.sink.l4.len() as u64);
            self.emitter.do_send(Records {
                l7: std::mem::take(&mut self.sink.l7),
                l4: std::mem::take(&mut self.sink.l4),
            });
        }
        let now = self.engine.stats();
        let old = self.seen;
        let d = |a: u64, b: u64| b.saturating_sub(a);
        TELEMETRY.l7_parse_errors.add(d(old.l7_parse_errors, now.l7_parse_errors));
        TELEMETRY.ebpf_sockets_undetected.add(
            d(old.l7_undetected, now.l7_undetected) + d(old.tls_ciphertext, now.tls_ciphertext),
        );
        TELEMETRY.ebpf_sockets_evicted.add(d(old.sockets_evicted, now.sockets_evicted));
        TELEMETRY
            .ebpf_sockets_active
            .add_signed(now.sockets_active as i64 - old.sockets_active as i64);
        self.seen = now;
    }
}

impl Actor for EbpfShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_BATCHES);
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            act.engine.tick(wall_now_us(), &mut act.sink);
            act.ship();
        });
    }
}

impl Handler<EbpfBatch> for EbpfShard {
    type Result = ();

    fn handle(&mut self, batch: EbpfBatch, _: &mut Self::Context) {
        for event in batch.events {
            self.engine.process(event, &mut self.sink);
        }
        let spent = self.engine.take_spent();
        if let (Some(to), false) = (&self.spent_to, spent.is_empty()) {
            // The reader may be gone (stopping): the buffers are then freed.
            let _ = to.send(spent);
        }
        self.announce();
        self.ship();
    }
}

impl Handler<Flush> for EbpfShard {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Self::Context) {
        self.engine.flush(&mut self.sink);
        self.ship();
    }
}
