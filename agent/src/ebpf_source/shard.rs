//! The eBPF shard actor: owns one [`SocketFlowEngine`], fed batches of
//! events by the reader thread, its records sent to the same emitter as the
//! packet shards' (so RED metrics cover both).

use std::time::Duration;

use actix::prelude::*;
use fathom_ebpf::Event;

use super::engine::{SocketFlowConfig, SocketFlowEngine, SocketFlowStats};
use crate::flow::VecSink;
use crate::pipeline::{wall_now_us, Emitter, Flush, Records};
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
}

impl EbpfShard {
    pub fn new(config: SocketFlowConfig, emitter: Addr<Emitter>) -> EbpfShard {
        EbpfShard {
            engine: SocketFlowEngine::new(config),
            emitter,
            sink: VecSink::default(),
            seen: SocketFlowStats::default(),
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
