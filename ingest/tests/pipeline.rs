//! Sender and ingest over real gRPC on loopback, with an in-memory store
//! that stands in for the real one (the embedded engine is exercised in
//! tests/embedded.rs): malformed and oversized batches, unknown agents,
//! spool bounds and replay order, back-pressure from a slow store.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use fathom_ingest::{IngestConfig, RunningIngest};
use fathom_proto::agent_data_client::AgentDataClient;
use fathom_proto::{AckStatus, Compression, L7Log, RecordBatch, Records};
use fathom_store::{
    AppMetricRow, Granularity, L4Row, L7Row, NetworkMetricRow, QueryResult, Store, TagRow,
};
use prost::Message;

/// Stands in for the store: keeps L7 request ids in insert order; can be
/// made slow to exercise back-pressure.
#[derive(Default)]
struct MemStore {
    l7: Mutex<Vec<u64>>,
    tags: Mutex<Vec<TagRow>>,
    delay_ms: AtomicU64,
}

#[async_trait]
impl Store for MemStore {
    fn backend(&self) -> &'static str {
        "memory"
    }
    async fn insert_l7(&self, rows: &[L7Row]) -> fathom_store::Result<()> {
        let d = self.delay_ms.load(Ordering::Relaxed);
        if d > 0 {
            tokio::time::sleep(Duration::from_millis(d)).await;
        }
        self.l7.lock().unwrap().extend(rows.iter().map(|r| r.request_id.unwrap_or(0)));
        Ok(())
    }
    async fn insert_l4(&self, _: &[L4Row]) -> fathom_store::Result<()> {
        Ok(())
    }
    async fn insert_app_metrics(
        &self,
        _: Granularity,
        _: &[AppMetricRow],
    ) -> fathom_store::Result<()> {
        Ok(())
    }
    async fn insert_network_metrics(
        &self,
        _: Granularity,
        _: &[NetworkMetricRow],
    ) -> fathom_store::Result<()> {
        Ok(())
    }
    async fn upsert_tags(&self, rows: &[TagRow]) -> fathom_store::Result<()> {
        self.tags.lock().unwrap().extend_from_slice(rows);
        Ok(())
    }
    async fn query(&self, _: &str) -> fathom_store::Result<QueryResult> {
        Ok(QueryResult::default())
    }
}

fn ingest_config(dir: &std::path::Path, listen: &str) -> IngestConfig {
    IngestConfig {
        listen: listen.into(),
        data_dir: dir.to_path_buf(),
        max_batch_bytes: 1 << 20,
        max_decompressed_bytes: 4 << 20,
        region: "r1".into(),
        az: "az1".into(),
        ..IngestConfig::default()
    }
}

fn raw_batch(agent: &str, id: u64, n: usize) -> RecordBatch {
    let recs = Records {
        l7: (0..n)
            .map(|i| L7Log {
                client_ip: vec![10, 0, 0, 1],
                server_ip: vec![127, 0, 0, 1],
                server_port: 80,
                request_id: Some(1_000_000 + id * 1000 + i as u64),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let raw = recs.encode_to_vec();
    RecordBatch {
        agent_id: agent.into(),
        batch_id: id,
        compression: Compression::Zstd as i32,
        payload: zstd::bulk::compress(&raw, 1).unwrap(),
        uncompressed_size: raw.len() as u64,
        counts: Some(recs.counts()),
        host: "h1".into(),
        host_ips: vec![vec![127, 0, 0, 1]],
    }
}

#[test]
fn bad_batches_are_refused_clearly_while_good_ones_flow() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemStore::default());
    let mut cfg = ingest_config(dir.path(), "127.0.0.1:0");
    cfg.known_agents = vec!["test-agent".into(), "raw".into()];
    let server = RunningIngest::start(&cfg, store.clone()).unwrap();
    let addr = server.local_addr().to_string();
    let spool = tempfile::tempdir().unwrap();
    // A well-formed stream runs the whole time.
    let sender = start_sender(&addr, spool.path());
    let h = sender.handle();
    let stream = std::thread::spawn(move || {
        for n in 1..=5000 {
            h.submit(l7(n));
            if n % 500 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = AgentDataClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
            .max_encoding_message_size(usize::MAX);
        // Malformed protobuf inside a valid zstd frame.
        let mut b = raw_batch("raw", 1, 3);
        let garbage = vec![0xffu8; 64];
        b.payload = zstd::bulk::compress(&garbage, 1).unwrap();
        b.uncompressed_size = 64;
        let e = c.push(b).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(e.message().contains("not a Records message"), "{}", e.message());
        // A zstd bomb: 64 MiB of zeros in a few KiB.
        let mut b = raw_batch("raw", 2, 1);
        let zeros = vec![0u8; 64 << 20];
        b.payload = zstd::bulk::compress(&zeros, 3).unwrap();
        b.uncompressed_size = zeros.len() as u64;
        let e = c.push(b).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
        assert!(e.message().contains("limit"), "{}", e.message());
        // Larger than the server takes at all: refused before decoding.
        let mut b = raw_batch("raw", 3, 1);
        b.payload = vec![1u8; 2 << 20];
        let e = c.push(b).await.unwrap_err();
        assert!(
            matches!(e.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted),
            "{e}"
        );
        // An agent the server does not know.
        let e = c.push(raw_batch("stranger", 1, 1)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        assert!(e.message().contains("stranger"));
        // Counts that lie, and a bad address length inside a record.
        let mut b = raw_batch("raw", 4, 2);
        b.counts.as_mut().unwrap().l7 = 3;
        assert_eq!(c.push(b).await.unwrap_err().code(), tonic::Code::InvalidArgument);
        let mut recs = Records {
            l7: vec![L7Log { client_ip: vec![1, 2, 3], ..Default::default() }],
            ..Default::default()
        };
        recs.l7[0].server_port = 80;
        let raw = recs.encode_to_vec();
        let mut b = raw_batch("raw", 5, 0);
        b.compression = Compression::None as i32;
        b.payload = raw;
        b.counts = Some(recs.counts());
        let e = c.push(b).await.unwrap_err();
        assert!(e.message().contains("client_ip of record 0 has 3 bytes"), "{}", e.message());
        // A record whose endpoint (field 18) is not UTF-8.
        let l7 = [18 << 3 | 2, 0x01, 2, 0xc3, 0x28];
        let mut b = raw_batch("raw", 5, 0);
        b.compression = Compression::None as i32;
        b.payload = [&[1 << 3 | 2, l7.len() as u8][..], &l7].concat();
        b.counts = Some(fathom_proto::RecordCounts { l7: 1, ..Default::default() });
        let e = c.push(b).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(e.message().contains("field 18: text is not UTF-8"), "{}", e.message());
        // And the server still takes a good batch, once.
        let ack = c.push(raw_batch("raw", 6, 10)).await.unwrap().into_inner();
        assert_eq!(ack.status, AckStatus::Stored as i32);
        let ack = c.push(raw_batch("raw", 6, 10)).await.unwrap().into_inner();
        assert_eq!(ack.status, AckStatus::Duplicate as i32);
        let ack = c.push(raw_batch("raw", 5, 10)).await.unwrap().into_inner();
        assert_eq!(ack.status, AckStatus::Duplicate as i32, "below the mark");
    });
    stream.join().unwrap();
    let h = sender.handle();
    h.flush();
    assert!(wait_until(Duration::from_secs(30), || h
        .stats()
        .records_acked
        .load(Ordering::Relaxed)
        == 5000));
    sender.shutdown(Duration::from_secs(1));
    let ids = store.l7.lock().unwrap().clone();
    let agent: Vec<u64> = ids.iter().copied().filter(|&i| i < 1_000_000).collect();
    let mut sorted = agent.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 5000, "every record once");
    assert_eq!(agent.len(), 5000, "no duplicates");
    assert_eq!(ids.len(), 5010);
    assert_eq!(server.stats().batches_rejected.load(Ordering::Relaxed), 5);
    // Names reached the store's dictionary table.
    let tags = store.tags.lock().unwrap();
    assert!(tags.iter().any(|t| t.tag_type == "host" && t.name == "h1"));
    assert!(tags.iter().any(|t| t.tag_type == "process" && t.name == "svc-0"));
    server.stop();
}

#[test]
fn spool_is_bounded_and_replayed_in_order_when_the_server_returns() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let spool = tempfile::tempdir().unwrap();
    let mut scfg = sender_config(&addr, spool.path());
    scfg.spool_max_bytes = 64 << 10;
    scfg.batch_max_records = 100;
    let sender = fathom_agent::sender::Sender::start(scfg).unwrap();
    let h = sender.handle();
    for n in 1..=10_000 {
        h.submit(l7(n));
        if n % 100 == 0 {
            h.flush();
        }
    }
    h.flush();
    let sp = h.spool();
    assert!(sp.bytes() <= 64 << 10, "spool within its bound: {}", sp.bytes());
    let dropped = sp.stats.dropped_records.load(Ordering::Relaxed);
    assert!(dropped > 0, "the oldest were dropped");
    let kept = 10_000 - dropped;
    assert_eq!(h.stats().records_acked.load(Ordering::Relaxed), 0);

    let store = Arc::new(MemStore::default());
    let server = RunningIngest::start(&ingest_config(dir.path(), &addr), store.clone()).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || sp.is_empty()),
        "spool drained: {} left",
        sp.len()
    );
    let ids = store.l7.lock().unwrap().clone();
    assert_eq!(ids.len() as u64, kept);
    // In order, and exactly the newest records: the oldest were dropped.
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "replayed in order");
    assert_eq!(ids.first().copied(), Some(dropped + 1));
    assert_eq!(ids.last().copied(), Some(10_000));
    sender.shutdown(Duration::from_secs(1));
    server.stop();
}

#[test]
fn a_slow_store_holds_batches_back_in_the_agent_spool() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemStore::default());
    store.delay_ms.store(300, Ordering::Relaxed);
    let mut cfg = ingest_config(dir.path(), "127.0.0.1:0");
    cfg.queue_depth = 1;
    cfg.writers = 1;
    let server = RunningIngest::start(&cfg, store.clone()).unwrap();
    let spool = tempfile::tempdir().unwrap();
    let sender = start_sender(&server.local_addr().to_string(), spool.path());
    let h = sender.handle();
    for n in 1..=3000 {
        h.submit(l7(n));
    }
    h.flush();
    // Six batches of 500 at 300 ms each: most wait in the spool, not in
    // server memory.
    let max_spooled = h.spool().len();
    assert!(max_spooled >= 3, "batches wait in the spool: {max_spooled}");
    store.delay_ms.store(0, Ordering::Relaxed);
    assert!(wait_until(Duration::from_secs(30), || h
        .stats()
        .records_acked
        .load(Ordering::Relaxed)
        == 3000));
    assert_eq!(store.l7.lock().unwrap().len(), 3000);
    sender.shutdown(Duration::from_secs(1));
    server.stop();
}

/// Writes `calls` HTTP/1.1 exchanges, each on its own connection, as a pcap.
fn http_pcap(path: &std::path::Path, calls: u32) {
    use fathom_agent::packet::build::FrameBuilder;
    use fathom_agent::packet::tcp_flags::{ACK, FIN, PSH, SYN};
    use pcap_file::pcap::{PcapPacket, PcapWriter};
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    let mut t = Duration::from_micros(now_us());
    let req = b"GET /items/1 HTTP/1.1\r\nHost: shop.test\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    for i in 0..calls {
        let c: std::net::SocketAddr = format!("10.9.0.1:{}", 30000 + i).parse().unwrap();
        let s: std::net::SocketAddr = "10.9.0.2:80".parse().unwrap();
        let (cs, ss) = (1000u32, 5000u32);
        let rl = req.len() as u32;
        let rsl = resp.len() as u32;
        let frames = [
            FrameBuilder::tcp(c, s, cs, 0, SYN).build(&[]),
            FrameBuilder::tcp(s, c, ss, cs + 1, SYN | ACK).build(&[]),
            FrameBuilder::tcp(c, s, cs + 1, ss + 1, ACK).build(&[]),
            FrameBuilder::tcp(c, s, cs + 1, ss + 1, PSH | ACK).build(req),
            FrameBuilder::tcp(s, c, ss + 1, cs + 1 + rl, PSH | ACK).build(resp),
            FrameBuilder::tcp(c, s, cs + 1 + rl, ss + 1 + rsl, FIN | ACK).build(&[]),
            FrameBuilder::tcp(s, c, ss + 1 + rsl, cs + 2 + rl, FIN | ACK).build(&[]),
            FrameBuilder::tcp(c, s, cs + 2 + rl, ss + 2 + rsl, ACK).build(&[]),
        ];
        for f in &frames {
            t += Duration::from_micros(100);
            w.write_packet(&PcapPacket::new(t, f.len() as u32, f)).unwrap();
        }
    }
}

#[test]
fn agent_replay_with_server_output_delivers_its_calls() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemStore::default());
    let server =
        RunningIngest::start(&ingest_config(dir.path(), "127.0.0.1:0"), store.clone()).unwrap();
    let pcap = dir.path().join("http.pcap");
    http_pcap(&pcap, 300);
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = fathom_agent::config::AgentConfig::default();
    cfg.output.format = "server".into();
    cfg.sender = sender_config(&server.local_addr().to_string(), spool.path());
    cfg.flow.shards = 1;
    fathom_agent::run::replay(&pcap, cfg).expect("replay");
    // replay() returns once the sender drained its spool (or gave up).
    assert_eq!(store.l7.lock().unwrap().len(), 300, "one L7 row per call");
    assert!(std::fs::read_dir(spool.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".batch")));
    server.stop();
}
