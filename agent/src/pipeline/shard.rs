//! A flow shard: one actix actor per core, owning one flow engine per
//! interface (the same connection seen on two interfaces is two flows, as
//! each capture point has its own view of loss and latency). With eBPF on,
//! it also merges the connections eBPF observes ([`super::merge`]).

use std::time::Duration;

use actix::prelude::*;

use super::batch::PacketBatch;
use super::emitter::{Emitter, Records};
use super::merge::{LocalSockets, Merger};
use super::{wall_now_us, Clock};
use crate::flow::{FlowConfig, FlowEngine, FlowStats, VecSink};
use crate::telemetry::TELEMETRY;

/// Batches waiting in a shard's mailbox before capture threads start dropping.
pub const MAILBOX_BATCHES: usize = 64;

pub struct FlowShard {
    template: FlowConfig,
    engines: Vec<(std::sync::Arc<str>, FlowEngine, FlowStats)>,
    emitter: Addr<Emitter>,
    clock: Clock,
    last_packet_us: u64,
    sink: VecSink,
    merger: Option<Merger>,
    /// Records that passed the merger, reused.
    passed: Vec<crate::records::L7Log>,
}

impl FlowShard {
    pub fn new(template: FlowConfig, emitter: Addr<Emitter>, clock: Clock) -> FlowShard {
        FlowShard {
            template,
            engines: Vec::new(),
            emitter,
            clock,
            last_packet_us: 0,
            sink: VecSink::default(),
            merger: None,
            passed: Vec::new(),
        }
    }

    /// Merge with what eBPF observes (see [`super::merge`]).
    pub fn with_merger(mut self, merger: Merger) -> FlowShard {
        self.merger = Some(merger);
        self
    }

    fn now_us(&self) -> u64 {
        match self.clock {
            Clock::Wall => wall_now_us(),
            Clock::Packets => self.last_packet_us,
        }
    }

    fn engine(&mut self, interface: &std::sync::Arc<str>) -> usize {
        if let Some(i) = self.engines.iter().position(|(n, _, _)| n == interface) {
            return i;
        }
        let mut cfg = self.template.clone();
        cfg.interface = Some(interface.to_string());
        self.engines.push((interface.clone(), FlowEngine::new(cfg), FlowStats::default()));
        self.engines.len() - 1
    }

    /// Send collected records on and publish counter deltas. With a
    /// merger, L7 records pass it first (`all`: release every held one).
    fn ship(&mut self, all: bool) {
        if let Some(m) = self.merger.as_mut() {
            let now = wall_now_us();
            m.l7(&mut self.sink.l7, &mut self.passed, now);
            m.release(now, all, &mut self.passed);
            std::mem::swap(&mut self.sink.l7, &mut self.passed);
            for f in &mut self.sink.l4 {
                m.l4(f, now);
            }
            m.publish();
        }
        if !self.sink.l7.is_empty() || !self.sink.l4.is_empty() {
            TELEMETRY.l7_records.add(self.sink.l7.len() as u64);
            TELEMETRY.l4_records.add(self.sink.l4.len() as u64);
            let records = Records {
                l7: std::mem::take(&mut self.sink.l7),
                l4: std::mem::take(&mut self.sink.l4),
            };
            self.emitter.do_send(records);
        }
        for (_, engine, seen) in &mut self.engines {
            let now = engine.stats();
            publish_delta(seen, &now);
            *seen = now;
        }
    }

    fn tick(&mut self) {
        let now = self.now_us();
        if now == 0 {
            return;
        }
        for i in 0..self.engines.len() {
            self.engines[i].1.tick(now, &mut self.sink);
        }
        self.ship(false);
    }
}

fn publish_delta(old: &FlowStats, new: &FlowStats) {
    let d = |a: u64, b: u64| b.saturating_sub(a);
    TELEMETRY.decode_errors.add(d(old.decode_errors, new.decode_errors));
    TELEMETRY.flows_created.add(d(old.flows_created, new.flows_created));
    TELEMETRY.flows_evicted.add(d(old.flows_evicted, new.flows_evicted));
    TELEMETRY.reassembly_drops.add(
        d(old.reassembly_gaps, new.reassembly_gaps)
            + d(old.reassembly_overflows, new.reassembly_overflows),
    );
    TELEMETRY.l7_parse_errors.add(d(old.l7_parse_errors, new.l7_parse_errors));
    TELEMETRY.flows_active.add_signed(new.flows_active as i64 - old.flows_active as i64);
}

impl Actor for FlowShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_BATCHES);
        ctx.run_interval(Duration::from_secs(1), |act, _| act.tick());
    }
}

impl Handler<PacketBatch> for FlowShard {
    type Result = ();

    fn handle(&mut self, batch: PacketBatch, _: &mut Self::Context) {
        let i = self.engine(&batch.interface);
        let (_, engine, _) = &mut self.engines[i];
        for (frame, slot) in batch.frames() {
            match &slot.decoded {
                Ok(d) => engine.process_packet(&d.view(frame), &mut self.sink),
                Err(e) => engine.decode_error(*e, slot.wire_len.max(frame.len() as u32)),
            }
            self.last_packet_us = self.last_packet_us.max(slot.ts_us);
        }
        if self.clock == Clock::Packets {
            // Replays have no wall-clock ticks worth following: advance
            // timeouts with the capture's own time.
            let now = self.last_packet_us;
            self.engines[i].1.tick(now, &mut self.sink);
        }
        batch.give_back();
        self.ship(false);
    }
}

/// Close every flow (shutdown) and send the last records.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for FlowShard {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Self::Context) {
        for i in 0..self.engines.len() {
            self.engines[i].1.flush(&mut self.sink);
        }
        self.ship(true);
    }
}

impl Handler<LocalSockets> for FlowShard {
    type Result = ();

    fn handle(&mut self, s: LocalSockets, _: &mut Self::Context) {
        if let Some(m) = self.merger.as_mut() {
            m.on_sockets(s.0, wall_now_us());
        }
    }
}
