//! Newline-delimited JSON output: one tagged record per line,
//! `{"type":"l7_log"|"l4_flow"|"red_metric"|"network_metric"|"process", ...fields}`,
//! to stdout or a file.
//!
//! Lines are buffered whole and written out when the buffer fills, on
//! [`OutputWriter::tick`] once a second has passed since the last write-out
//! (call it from a 1 s timer so a quiet agent's output still appears), on
//! [`OutputWriter::flush`] and on drop. A write error (a full disk, a closed
//! pipe) is returned and counted, never a panic; unwritten lines stay
//! buffered up to [`MAX_BUFFER`] and are retried, and records beyond that
//! are dropped and counted.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::metrics::{NetworkMetric, RedMetric};
use crate::process::ProcessInfo;
use crate::records::{L4Flow, L7Log};

/// Bytes buffered before a write-out.
const FLUSH_AT: usize = 256 * 1024;
/// Bytes held while the target refuses writes; records beyond are dropped.
pub const MAX_BUFFER: usize = 8 * 1024 * 1024;
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Any record the agent outputs.
// Unboxed: the variants are records on their way to serialization, where
// an allocation each would cost more than moving a few hundred bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputRecord {
    L7Log(L7Log),
    L4Flow(L4Flow),
    RedMetric(RedMetric),
    NetworkMetric(NetworkMetric),
    Process(ProcessInfo),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutputStats {
    /// Records accepted into the buffer.
    pub records: u64,
    /// Bytes written out to the target.
    pub bytes_written: u64,
    /// Write-outs that failed (each is retried later).
    pub write_errors: u64,
    /// Records dropped: buffer full while the target failed, or not serializable.
    pub records_dropped: u64,
}

#[derive(Debug)]
pub enum OutputError {
    /// The target failed; the record is kept (still buffered) unless `dropped`.
    Io {
        error: io::Error,
        dropped: bool,
    },
    Serialize(serde_json::Error),
}

impl std::fmt::Display for OutputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutputError::Io { error, dropped: true } => {
                write!(f, "output: {error} (record dropped)")
            }
            OutputError::Io { error, dropped: false } => write!(f, "output: {error}"),
            OutputError::Serialize(e) => write!(f, "output: serialize: {e}"),
        }
    }
}

impl std::error::Error for OutputError {}

/// Buffered NDJSON writer.
pub struct OutputWriter {
    out: Box<dyn Write + Send>,
    buf: Vec<u8>,
    last_flush: Instant,
    stats: OutputStats,
}

impl OutputWriter {
    pub fn stdout() -> Self {
        Self::from_writer(io::stdout())
    }

    /// Append to `path`, creating it.
    pub fn create(path: impl AsRef<Path>) -> io::Result<Self> {
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self::from_writer(f))
    }

    pub fn from_writer(w: impl Write + Send + 'static) -> Self {
        OutputWriter {
            out: Box::new(w),
            buf: Vec::with_capacity(FLUSH_AT),
            last_flush: Instant::now(),
            stats: OutputStats::default(),
        }
    }

    /// Buffer one record as a line; write out if the buffer is full or a
    /// second has passed.
    pub fn write(&mut self, rec: &OutputRecord) -> Result<(), OutputError> {
        if self.buf.len() >= MAX_BUFFER {
            // The target has been failing: try once more before dropping.
            if let Err(error) = self.flush() {
                self.stats.records_dropped += 1;
                return Err(OutputError::Io { error, dropped: true });
            }
        }
        let mark = self.buf.len();
        if let Err(e) = serde_json::to_writer(&mut self.buf, rec) {
            self.buf.truncate(mark);
            self.stats.records_dropped += 1;
            return Err(OutputError::Serialize(e));
        }
        self.buf.push(b'\n');
        self.stats.records += 1;
        if self.buf.len() >= FLUSH_AT || self.last_flush.elapsed() >= FLUSH_INTERVAL {
            self.flush().map_err(|error| OutputError::Io { error, dropped: false })?;
        }
        Ok(())
    }

    /// Write out if a second has passed since the last write-out.
    pub fn tick(&mut self) -> io::Result<()> {
        if self.last_flush.elapsed() >= FLUSH_INTERVAL {
            self.flush()?;
        }
        Ok(())
    }

    /// Write out everything buffered. On error, what was not written stays
    /// buffered (whole lines and partial writes alike) for the next try.
    pub fn flush(&mut self) -> io::Result<()> {
        self.last_flush = Instant::now();
        let mut done = 0;
        let res = loop {
            if done == self.buf.len() {
                break self.out.flush();
            }
            match self.out.write(&self.buf[done..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.stats.bytes_written += done as u64;
        self.buf.drain(..done);
        if res.is_err() {
            self.stats.write_errors += 1;
        }
        res
    }

    pub fn stats(&self) -> OutputStats {
        self.stats
    }

    /// Bytes waiting to be written.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

impl Drop for OutputWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn flow() -> L4Flow {
        L4Flow {
            flow: FlowTuple {
                client_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                client_port: 40000,
                server_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                server_port: 80,
                protocol: L4Protocol::Tcp,
            },
            source: CaptureSource::Packet,
            interface: Some("veth0".into()),
            start_time_us: 1,
            end_time_us: 2,
            duration_us: 1,
            tx: DirectionCounters { bytes: 100, packets: 2, ..Default::default() },
            rx: DirectionCounters::default(),
            syn_ack: 1,
            rtt_server_us: Some(10),
            rtt_client_us: None,
            close_type: CloseType::Fin,
            l7_protocol: Some("HTTP".into()),
            client_process: None,
            server_process: None,
        }
    }

    #[test]
    fn lines_are_tagged_json() {
        let sink = Shared::default();
        let mut w = OutputWriter::from_writer(sink.clone());
        w.write(&OutputRecord::L4Flow(flow())).unwrap();
        let mut red = crate::metrics::RedAggregator::new();
        let log = L7Log {
            flow: flow().flow,
            source: CaptureSource::Packet,
            observation_point: Default::default(),
            interface: None,
            process: None,
            start_time_us: 5_000_000,
            end_time_us: 5_000_100,
            latency_us: 100,
            call: L7Fields {
                l7_protocol: "HTTP".into(),
                msg_type: "session".into(),
                endpoint: "/a".into(),
                response_status: "ok".into(),
                ..Default::default()
            },
            syscall_trace_id_request: None,
            syscall_trace_id_response: None,
            req_tcp_seq: None,
            resp_tcp_seq: None,
        };
        red.observe(&log);
        for r in red.flush_all() {
            w.write(&OutputRecord::RedMetric(r)).unwrap();
        }
        w.write(&OutputRecord::L7Log(log)).unwrap();
        let mut net = crate::metrics::NetworkAggregator::new();
        net.observe(&flow());
        let n = net.flush_all().remove(0);
        w.write(&OutputRecord::NetworkMetric(n)).unwrap();
        let me = crate::process::ProcessTable::new().read(std::process::id()).unwrap();
        w.write(&OutputRecord::Process(me)).unwrap();
        assert!(sink.0.lock().unwrap().is_empty(), "buffered until a flush");
        w.flush().unwrap();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[0]["type"], "l4_flow");
        assert_eq!(lines[0]["flow"]["server_port"], 80);
        assert_eq!(lines[0]["tx"]["bytes"], 100);
        assert_eq!(lines[1]["type"], "red_metric");
        assert_eq!(lines[1]["granularity"], "1s");
        assert_eq!(lines[1]["requests"], 1);
        assert_eq!(lines[1]["latency_sum_us"], 100);
        assert_eq!(lines[1]["server_ip"], "10.0.0.2");
        assert_eq!(lines[2]["granularity"], "1m");
        assert_eq!(lines[2]["time_s"], 0);
        assert_eq!(lines[3]["type"], "l7_log");
        assert_eq!(lines[3]["endpoint"], "/a");
        assert_eq!(lines[3]["latency_us"], 100);
        assert_eq!(lines[4]["type"], "network_metric");
        assert_eq!(lines[4]["bytes_tx"], 100);
        assert_eq!(lines[5]["type"], "process");
        assert_eq!(lines[5]["pid"], std::process::id());
        assert_eq!(w.stats().records, 6);
        assert_eq!(w.stats().bytes_written as usize, text.len());
    }

    #[test]
    fn full_disk_is_reported_not_fatal() {
        // /dev/full fails every write with ENOSPC.
        let mut w = OutputWriter::create("/dev/full").expect("open /dev/full");
        w.write(&OutputRecord::L4Flow(flow())).unwrap();
        let err = w.flush().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert!(w.buffered() > 0, "the line is kept for a retry");
        assert!(w.flush().is_err());
        assert_eq!(w.stats().write_errors, 2);
        assert_eq!(w.stats().bytes_written, 0);
        // Fill past the bound: later records are dropped and counted.
        let mut dropped = 0;
        for _ in 0..(MAX_BUFFER / 300 + 10_000) {
            match w.write(&OutputRecord::L4Flow(flow())) {
                Err(OutputError::Io { dropped: true, .. }) => dropped += 1,
                Err(OutputError::Io { dropped: false, .. }) | Ok(()) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(dropped > 0);
        assert_eq!(w.stats().records_dropped, dropped);
        assert!(w.buffered() <= MAX_BUFFER + 4096);
    }
}
