//! Runs on a capture thread: decides each packet's shard from its flow key
//! (both directions of a flow land on the same shard, and the eBPF shards
//! announce its sockets to that shard: [`super::merge::shard_of`]) and
//! ships batches.

use std::sync::Arc;

use actix::prelude::SendError;
use actix::Addr;

use super::batch::PacketBatch;
use super::shard::FlowShard;
use crate::flow::FlowKey;
use crate::packet::{self, Decoded, LinkType, L4};
use crate::records::L4Protocol;
use crate::telemetry::TELEMETRY;

const BATCH_PACKETS: usize = 512;
const BATCH_BYTES: usize = 512 * 1024;

pub struct Router {
    shards: Vec<Addr<FlowShard>>,
    pending: Vec<PacketBatch>,
    interface: Arc<str>,
    link: LinkType,
    /// Wait for room in a shard's mailbox instead of dropping (replays).
    reliable: bool,
    /// Batches the shards have emptied, ready for reuse.
    returned: std::sync::mpsc::Receiver<PacketBatch>,
    return_to: std::sync::mpsc::Sender<PacketBatch>,
}

impl Router {
    pub fn new(shards: Vec<Addr<FlowShard>>, interface: &str, link: LinkType) -> Router {
        let interface: Arc<str> = Arc::from(interface);
        let (return_to, returned) = std::sync::mpsc::channel();
        let mut r = Router {
            shards,
            pending: Vec::new(),
            interface,
            link,
            reliable: false,
            returned,
            return_to,
        };
        r.pending = (0..r.shards.len()).map(|_| r.fresh()).collect();
        r
    }

    /// An empty batch: a returned one when there is one, else a new one.
    fn fresh(&mut self) -> PacketBatch {
        let mut b = self.returned.try_recv().unwrap_or_else(|_| {
            PacketBatch::new(self.interface.clone(), self.link, BATCH_BYTES, BATCH_PACKETS)
        });
        b.link = self.link;
        b.recycle = Some(self.return_to.clone());
        b
    }

    /// Never drop a batch: block the calling (capture) thread until the
    /// shard has room. For replays, where the reader can simply wait.
    pub fn reliable(mut self) -> Router {
        self.reliable = true;
        self
    }

    /// Route one frame, decoded here once. Frames that do not decode go to
    /// shard 0, which counts them.
    pub fn route(&mut self, link: LinkType, frame: &[u8], wire_len: u32, ts_us: u64) {
        if link != self.link {
            // pcapng files may mix link types: batches carry one each.
            self.ship_all();
            self.link = link;
            for b in &mut self.pending {
                b.link = link;
            }
        }
        TELEMETRY.packets.add(1);
        TELEMETRY.packet_bytes.add(u64::from(wire_len));
        let decoded = packet::decode(self.link, frame, wire_len, ts_us);
        let idx = match &decoded {
            Ok(p) => {
                let proto = match p.l4 {
                    L4::Tcp(_) => Some(L4Protocol::Tcp),
                    L4::Udp => Some(L4Protocol::Udp),
                    _ => None,
                };
                match proto {
                    Some(proto) => {
                        let (key, _) =
                            FlowKey::of(p.src_ip, p.src_port, p.dst_ip, p.dst_port, proto);
                        super::merge::shard_of(&key, self.shards.len())
                    }
                    None => 0,
                }
            }
            Err(_) => 0,
        };
        let decoded = decoded.map(|p| Decoded::new(&p, frame));
        let b = &mut self.pending[idx];
        b.push(frame, wire_len, ts_us, decoded);
        if b.slots.len() >= BATCH_PACKETS || b.data.len() >= BATCH_BYTES - 65536 {
            self.ship(idx);
        }
    }

    /// Send every non-empty batch (end of a ring block: bounds latency).
    pub fn ship_all(&mut self) {
        for i in 0..self.pending.len() {
            if !self.pending[i].is_empty() {
                self.ship(i);
            }
        }
    }

    fn ship(&mut self, idx: usize) {
        let fresh = self.fresh();
        let batch = std::mem::replace(&mut self.pending[idx], fresh);
        // A full mailbox means the shard is behind: live capture drops
        // rather than grow without bound, and counts it.
        let mut batch = batch;
        loop {
            match self.shards[idx].try_send(batch) {
                Ok(()) => return,
                Err(SendError::Full(b)) if self.reliable => {
                    batch = b;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(SendError::Full(b) | SendError::Closed(b)) => {
                    TELEMETRY.batches_dropped.add(1);
                    b.give_back();
                    return;
                }
            }
        }
    }
}
