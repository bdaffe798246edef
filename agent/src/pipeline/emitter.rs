//! The emitter: receives records from every shard, folds them into RED and
//! network metrics, and writes everything to the outputs: NDJSON, the
//! server (through the sender), or both.

use std::time::Duration;

use actix::prelude::*;

use super::{wall_now_us, Clock};
use crate::metrics::{NetworkAggregator, RedAggregator};
use crate::output::{OutputRecord, OutputWriter};
use crate::process::ProcessTable;
use crate::records::{L4Flow, L7Log};
use crate::sender::SenderHandle;
use crate::telemetry::TELEMETRY;

/// Records from one shard's batch.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Records {
    pub l7: Vec<L7Log>,
    pub l4: Vec<L4Flow>,
}

/// Process lifecycle from eBPF: keeps the process table current and writes
/// a process record for each new process.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ProcessEvents {
    pub events: Vec<fathom_ebpf::ProcessEvent>,
    /// Added to the events' monotonic timestamps to get Unix time.
    pub unix_offset_ns: u64,
}

/// Flush every metric window and the output, then reply.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

pub struct Emitter {
    out: Option<OutputWriter>,
    sender: Option<SenderHandle>,
    red: RedAggregator,
    net: NetworkAggregator,
    processes: Option<ProcessTable>,
    clock: Clock,
    last_record_us: u64,
}

impl Emitter {
    pub fn new(out: OutputWriter, clock: Clock, processes: Option<ProcessTable>) -> Emitter {
        Self::with_outputs(Some(out), None, clock, processes)
    }

    /// An emitter writing to the NDJSON output, the sender, or both.
    pub fn with_outputs(
        out: Option<OutputWriter>,
        sender: Option<SenderHandle>,
        clock: Clock,
        processes: Option<ProcessTable>,
    ) -> Emitter {
        Emitter {
            out,
            sender,
            red: RedAggregator::new(),
            net: NetworkAggregator::new(),
            processes,
            clock,
            last_record_us: 0,
        }
    }

    fn write(&mut self, rec: OutputRecord) {
        if let Some(out) = self.out.as_mut() {
            if out.write(&rec).is_err() {
                TELEMETRY.output_errors.add(1);
            }
        }
        if let Some(sender) = &self.sender {
            sender.submit(rec);
        }
    }

    fn write_metrics(
        &mut self,
        red: Vec<crate::metrics::RedMetric>,
        net: Vec<crate::metrics::NetworkMetric>,
    ) {
        TELEMETRY.metric_rows.add((red.len() + net.len()) as u64);
        for m in red {
            self.write(OutputRecord::RedMetric(m));
        }
        for m in net {
            self.write(OutputRecord::NetworkMetric(m));
        }
    }

    fn tick(&mut self) {
        let now = match self.clock {
            Clock::Wall => wall_now_us(),
            Clock::Packets => self.last_record_us,
        };
        let red = self.red.flush(now);
        let net = self.net.flush(now);
        self.write_metrics(red, net);
        if self.out.as_mut().is_some_and(|o| o.tick().is_err()) {
            TELEMETRY.output_errors.add(1);
        }
    }

    /// Write the process table once at start, so records can be joined to it.
    fn write_processes(&mut self) {
        let Some(table) = self.processes.as_mut() else { return };
        if table.scan().is_err() {
            return;
        }
        let all: Vec<_> = table.iter().cloned().collect();
        for p in all {
            self.write(OutputRecord::Process(p));
        }
    }
}

impl Actor for Emitter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.write_processes();
        ctx.run_interval(Duration::from_secs(1), |act, _| act.tick());
    }
}

impl Handler<Records> for Emitter {
    type Result = ();

    fn handle(&mut self, r: Records, _: &mut Self::Context) {
        for log in r.l7 {
            self.last_record_us = self.last_record_us.max(log.end_time_us);
            self.red.observe(&log);
            self.write(OutputRecord::L7Log(log));
        }
        for flow in r.l4 {
            self.last_record_us = self.last_record_us.max(flow.end_time_us);
            self.net.observe(&flow);
            self.write(OutputRecord::L4Flow(flow));
        }
    }
}

impl Handler<ProcessEvents> for Emitter {
    type Result = ();

    fn handle(&mut self, p: ProcessEvents, _: &mut Self::Context) {
        use fathom_ebpf::ProcessEventKind;
        let Some(table) = self.processes.as_mut() else { return };
        let mut new = Vec::new();
        for e in &p.events {
            match e.kind {
                ProcessEventKind::Exit { .. } => {
                    table.on_exit(e.pid);
                }
                // A fork runs its parent's image: recorded once, then again
                // if it execs.
                ProcessEventKind::Fork if table.get(e.pid).is_some() => {}
                ProcessEventKind::Fork | ProcessEventKind::Exec { .. } => {
                    // Short-lived processes may be gone before /proc is read.
                    let info = table.on_exec(e.pid).cloned().unwrap_or_else(|| {
                        crate::ebpf_source::process_from_event(e, p.unix_offset_ns)
                    });
                    new.push(info);
                }
            }
        }
        for info in new {
            self.write(OutputRecord::Process(info));
        }
    }
}

impl Handler<Shutdown> for Emitter {
    type Result = ();

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) {
        let red = self.red.flush_all();
        let net = self.net.flush_all();
        self.write_metrics(red, net);
        if self.out.as_mut().is_some_and(|o| o.flush().is_err()) {
            TELEMETRY.output_errors.add(1);
        }
        if let Some(sender) = &self.sender {
            sender.flush();
        }
    }
}
