//! Packets travel from a capture thread to a shard in batches: one copy of
//! the captured bytes into a batch arena, no allocation per packet.

use std::sync::Arc;

use actix::Message;

use crate::packet::{DecodeError, Decoded, LinkType};

/// Where one packet lies in a batch's arena, and its headers as the router
/// decoded them (the shard does not decode again).
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    pub offset: u32,
    pub len: u32,
    pub wire_len: u32,
    pub ts_us: u64,
    pub decoded: Result<Decoded, DecodeError>,
}

/// Packets of one interface for one shard.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PacketBatch {
    pub interface: Arc<str>,
    pub link: LinkType,
    pub data: Vec<u8>,
    pub slots: Vec<Slot>,
    /// Where the shard hands the emptied batch back, so its buffers are
    /// reused instead of allocated (and mapped) again for every batch.
    pub recycle: Option<std::sync::mpsc::Sender<PacketBatch>>,
}

impl PacketBatch {
    pub fn new(interface: Arc<str>, link: LinkType, bytes: usize, packets: usize) -> Self {
        PacketBatch {
            interface,
            link,
            data: Vec::with_capacity(bytes),
            slots: Vec::with_capacity(packets),
            recycle: None,
        }
    }

    /// Empty the batch and return it to its router, if it has one.
    pub fn give_back(mut self) {
        if let Some(to) = self.recycle.take() {
            self.data.clear();
            self.slots.clear();
            self.recycle = Some(to.clone());
            // The router may be gone (capture stopped): then just drop it.
            let _ = to.send(self);
        }
    }

    pub fn push(
        &mut self,
        frame: &[u8],
        wire_len: u32,
        ts_us: u64,
        decoded: Result<Decoded, DecodeError>,
    ) {
        let offset = self.data.len() as u32;
        self.data.extend_from_slice(frame);
        self.slots.push(Slot { offset, len: frame.len() as u32, wire_len, ts_us, decoded });
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn frames(&self) -> impl Iterator<Item = (&[u8], &Slot)> {
        self.slots.iter().map(|s| {
            let start = s.offset as usize;
            (&self.data[start..start + s.len as usize], s)
        })
    }
}
