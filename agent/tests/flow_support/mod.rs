//! Hand-built TCP/UDP conversations fed to a flow engine.
#![allow(dead_code)]

use std::net::SocketAddr;

use fathom_agent::flow::{FlowConfig, FlowEngine, VecSink};
use fathom_agent::packet::build::FrameBuilder;
use fathom_agent::packet::tcp_flags::*;
use fathom_agent::packet::LinkType;
use fathom_agent::records::DirectionCounters;

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub struct Harness {
    pub engine: FlowEngine,
    pub sink: VecSink,
}

impl Harness {
    pub fn new(cfg: FlowConfig) -> Harness {
        Harness { engine: FlowEngine::new(cfg), sink: VecSink::default() }
    }

    pub fn frame(&mut self, frame: &[u8], ts_us: u64) {
        let _ = self.engine.process_frame(
            LinkType::Ethernet,
            frame,
            frame.len() as u32,
            ts_us,
            &mut self.sink,
        );
    }

    pub fn tick(&mut self, now_us: u64) {
        self.engine.tick(now_us, &mut self.sink);
    }
}

/// One TCP connection: tracks both sides' next sequence numbers and what
/// each side sent, as the engine should count it.
pub struct Conn {
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// Next sequence number of the client and of the server.
    pub cseq: u32,
    pub sseq: u32,
    pub c_isn: u32,
    pub s_isn: u32,
    /// Expected counters: client -> server, server -> client.
    pub tx: DirectionCounters,
    pub rx: DirectionCounters,
}

impl Conn {
    pub fn new(client: &str, server: &str, c_isn: u32, s_isn: u32) -> Conn {
        Conn {
            client: sa(client),
            server: sa(server),
            cseq: c_isn,
            sseq: s_isn,
            c_isn,
            s_isn,
            tx: DirectionCounters::default(),
            rx: DirectionCounters::default(),
        }
    }

    /// A frame from one side at an explicit sequence number; counted.
    pub fn raw(&mut self, from_client: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let (src, dst, ack) = if from_client {
            (self.client, self.server, self.sseq)
        } else {
            (self.server, self.client, self.cseq)
        };
        let ack = if flags & ACK != 0 { ack } else { 0 };
        let f = FrameBuilder::tcp(src, dst, seq, ack, flags).build(payload);
        let c = if from_client { &mut self.tx } else { &mut self.rx };
        c.packets += 1;
        c.bytes += f.len() as u64;
        c.payload_bytes += payload.len() as u64;
        if flags & SYN != 0 && flags & ACK == 0 {
            c.syn += 1;
        }
        if flags & FIN != 0 {
            c.fin += 1;
        }
        if flags & RST != 0 {
            c.rst += 1;
        }
        f
    }

    /// The next in-order segment from one side; advances its sequence.
    pub fn next(&mut self, from_client: bool, flags: u8, payload: &[u8]) -> Vec<u8> {
        let seq = if from_client { self.cseq } else { self.sseq };
        let f = self.raw(from_client, seq, flags, payload);
        let adv = payload.len() as u32 + u32::from(flags & (SYN | FIN) != 0);
        if from_client {
            self.cseq = self.cseq.wrapping_add(adv);
        } else {
            self.sseq = self.sseq.wrapping_add(adv);
        }
        f
    }

    pub fn handshake(&mut self, h: &mut Harness, t_syn: u64, t_synack: u64, t_ack: u64) {
        let f = self.next(true, SYN, b"");
        h.frame(&f, t_syn);
        let f = self.next(false, SYN | ACK, b"");
        h.frame(&f, t_synack);
        let f = self.next(true, ACK, b"");
        h.frame(&f, t_ack);
    }

    /// Data from one side, then the other side's ACK.
    pub fn send(&mut self, h: &mut Harness, from_client: bool, data: &[u8], ts: u64) {
        let f = self.next(from_client, PSH | ACK, data);
        h.frame(&f, ts);
        let f = self.next(!from_client, ACK, b"");
        h.frame(&f, ts + 10);
    }

    /// Client FIN, server FIN-ACK, client ACK.
    pub fn close(&mut self, h: &mut Harness, ts: u64) {
        let f = self.next(true, FIN | ACK, b"");
        h.frame(&f, ts);
        let f = self.next(false, FIN | ACK, b"");
        h.frame(&f, ts + 100);
        let f = self.next(true, ACK, b"");
        h.frame(&f, ts + 200);
    }
}

pub const GET: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n";
pub const OK: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";

pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: example.com\r\n\r\n").into_bytes()
}
