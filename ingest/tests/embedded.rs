//! Sender -> ingest -> the embedded ClickHouse engine (chDB, in-process),
//! over real gRPC on loopback, with the server torn down and restarted on
//! the same port mid-stream. Needs libchdb.so (`bash scripts/fetch-chdb.sh`).

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fathom_ingest::{IngestConfig, RunningIngest};
use fathom_store::{EmbeddedConfig, EmbeddedStore, Store};

const N: u64 = 20_000;

#[test]
fn every_record_arrives_once_across_a_server_restart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        rt.block_on(EmbeddedStore::open(EmbeddedConfig::new(data.path().join("store"))))
            .unwrap_or_else(|e| panic!("embedded store: {e}")),
    );
    let cfg = IngestConfig {
        listen: "127.0.0.1:0".into(),
        data_dir: data.path().join("server"),
        region: "region-1".into(),
        az: "az-1".into(),
        ..IngestConfig::default()
    };
    let server = RunningIngest::start(&cfg, store.clone()).unwrap();
    let addr = server.local_addr().to_string();
    let spool = tempfile::tempdir().unwrap();
    let sender = start_sender(&addr, spool.path());
    let h = sender.handle();
    for n in 1..=N / 2 {
        h.submit(l7(n));
    }
    // Let part of it land, then kill the server with batches in flight.
    assert!(wait_until(Duration::from_secs(30), || h
        .stats()
        .records_acked
        .load(Ordering::Relaxed)
        > 2000));
    server.kill();
    for n in N / 2 + 1..=N {
        h.submit(l7(n));
    }
    h.flush();
    assert!(!h.spool().is_empty(), "batches wait in the spool while the server is down");
    std::thread::sleep(Duration::from_millis(300));
    let cfg = IngestConfig { listen: addr.clone(), ..cfg };
    let server = RunningIngest::start(&cfg, store.clone()).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || h.stats().records_acked.load(Ordering::Relaxed)
            >= N
            && h.spool().is_empty()),
        "acked {} of {N}, {} batches spooled",
        h.stats().records_acked.load(Ordering::Relaxed),
        h.spool().len()
    );
    let st = h.stats();
    eprintln!(
        "sender: spooled {} acked {} duplicate {} rejected {} errors {}; server: stored {} duplicate {} store errors {}",
        st.batches_spooled.load(Ordering::Relaxed),
        st.batches_acked.load(Ordering::Relaxed),
        st.batches_duplicate.load(Ordering::Relaxed),
        st.batches_rejected.load(Ordering::Relaxed),
        st.send_errors.load(Ordering::Relaxed),
        server.stats().batches_stored.load(Ordering::Relaxed),
        server.stats().batches_duplicate.load(Ordering::Relaxed),
        server.stats().store_errors.load(Ordering::Relaxed),
    );
    let r = rt
        .block_on(store.query(
            "SELECT count(), uniqExact(request_id), min(request_id), max(request_id) \
             FROM flow_log.l7_flow_log WHERE agent_id > 0",
        ))
        .unwrap();
    let row: Vec<u64> =
        r.rows[0].iter().map(|v| fathom_store::json_u64(v).unwrap_or(u64::MAX)).collect();
    assert_eq!(row, vec![N, N, 1, N], "count, distinct, min, max");
    // Tags are ids, and their names are in the dictionary table.
    let r = rt
        .block_on(store.query(
            "SELECT t.name, count() FROM flow_log.l7_flow_log AS l \
             JOIN (SELECT id, name FROM flow_tag.tag_dict FINAL WHERE tag_type = 'process') AS t \
             ON l.process_id_1 = t.id GROUP BY t.name ORDER BY t.name",
        ))
        .unwrap();
    assert_eq!(r.rows.len(), 7, "{:?}", r.rows);
    let with_process: u64 = r.rows.iter().map(|row| fathom_store::json_u64(&row[1]).unwrap()).sum();
    assert_eq!(with_process, (1..=N).filter(|n| n.is_multiple_of(3)).count() as u64);
    let r = rt
        .block_on(store.query(
            "SELECT count() FROM flow_log.l7_flow_log WHERE host_id_1 = 0 OR region_id_1 = 0",
        ))
        .unwrap();
    assert_eq!(fathom_store::json_u64(&r.rows[0][0]), Some(0), "server side is this host");
    sender.shutdown(Duration::from_secs(1));
    server.stop();
}
