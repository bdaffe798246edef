//! Insert groups over real gRPC into the embedded ClickHouse engine
//! (chDB, in-process): batches of several agents queued at a writer are
//! stored together, and a group cut off between its inserts and its marks
//! is stored once at the next start. Needs libchdb.so
//! (`bash scripts/fetch-chdb.sh`). A store wrapper delays, holds and cuts
//! off inserts: a crash at that exact point cannot be timed otherwise.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fathom_ingest::{IngestConfig, RunningIngest};
use fathom_store::{EmbeddedConfig, EmbeddedStore, Store};

/// The embedded store behind switches: each insert is delayed (so batches
/// queue up at the writers and are grouped), inserts wait while `closed`,
/// and in `crash` mode an insert of rows from several agents is carried out
/// and then reported failed, as if the server died between the engine's
/// confirmation and recording the marks.
struct CutOffStore {
    inner: Arc<dyn Store>,
    delay: Duration,
    closed: std::sync::atomic::AtomicBool,
    crash: std::sync::atomic::AtomicBool,
    crashed_inserts: std::sync::atomic::AtomicU64,
    /// An insert holding this request id is refused as bad data (0: none).
    poison: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl Store for CutOffStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn max_rows_per_insert(&self) -> usize {
        self.inner.max_rows_per_insert()
    }
    async fn insert_l7(&self, rows: &[fathom_store::L7Row]) -> fathom_store::Result<()> {
        self.inner.insert_l7(rows).await
    }
    async fn insert_l4(&self, rows: &[fathom_store::L4Row]) -> fathom_store::Result<()> {
        self.inner.insert_l4(rows).await
    }
    async fn insert_app_metrics(
        &self,
        g: fathom_store::Granularity,
        rows: &[fathom_store::AppMetricRow],
    ) -> fathom_store::Result<()> {
        self.inner.insert_app_metrics(g, rows).await
    }
    async fn insert_network_metrics(
        &self,
        g: fathom_store::Granularity,
        rows: &[fathom_store::NetworkMetricRow],
    ) -> fathom_store::Result<()> {
        self.inner.insert_network_metrics(g, rows).await
    }
    async fn insert_deduplicated(
        &self,
        rows: fathom_store::TableRows<'_>,
        token: &str,
    ) -> fathom_store::Result<()> {
        tokio::time::sleep(self.delay).await;
        while self.closed.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let poison = self.poison.load(Ordering::SeqCst);
        if let fathom_store::TableRows::L7(r) = rows {
            if poison != 0 && r.iter().any(|r| r.request_id == Some(poison)) {
                return Err(fathom_store::StoreError::Query {
                    code: Some(53),
                    message: "Code: 53. DB::Exception: refused (TYPE_MISMATCH)".into(),
                });
            }
        }
        self.inner.insert_deduplicated(rows, token).await?;
        let agents = match rows {
            fathom_store::TableRows::L7(r) => {
                r.iter().map(|r| r.agent_id).collect::<std::collections::HashSet<_>>().len()
            }
            _ => 1,
        };
        if self.crash.load(Ordering::SeqCst) && agents > 1 {
            self.crashed_inserts.fetch_add(1, Ordering::SeqCst);
            return Err(fathom_store::StoreError::Connection("cut off after the insert".into()));
        }
        Ok(())
    }
    async fn upsert_tags(&self, rows: &[fathom_store::TagRow]) -> fathom_store::Result<()> {
        self.inner.upsert_tags(rows).await
    }
    async fn query(&self, sql: &str) -> fathom_store::Result<fathom_store::QueryResult> {
        self.inner.query(sql).await
    }
}

#[test]
fn queued_batches_of_many_agents_are_stored_as_groups_once_even_when_cut_off_before_their_marks() {
    const AGENTS: u64 = 6;
    const PER_AGENT: u64 = 3_000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let engine: Arc<dyn Store> = Arc::new(
        rt.block_on(EmbeddedStore::open(EmbeddedConfig::new(data.path().join("store"))))
            .unwrap_or_else(|e| panic!("embedded store: {e}")),
    );
    let store = Arc::new(CutOffStore {
        inner: engine.clone(),
        delay: Duration::from_millis(40),
        closed: false.into(),
        crash: false.into(),
        crashed_inserts: 0.into(),
        poison: 0.into(),
    });
    let cfg = IngestConfig {
        listen: "127.0.0.1:0".into(),
        data_dir: data.path().join("server"),
        writers: 1,
        ..IngestConfig::default()
    };
    let server = RunningIngest::start(&cfg, store.clone()).unwrap();
    let addr = server.local_addr().to_string();
    let spools: Vec<_> = (0..AGENTS).map(|_| tempfile::tempdir().unwrap()).collect();
    let senders: Vec<_> = spools
        .iter()
        .enumerate()
        .map(|(k, spool)| {
            let cfg = fathom_agent::sender::SenderConfig {
                agent_id: format!("agent-{k}"),
                ..sender_config(&addr, spool.path())
            };
            fathom_agent::sender::Sender::start(cfg).expect("sender starts")
        })
        .collect();
    let acked = |senders: &[fathom_agent::sender::Sender]| -> u64 {
        senders.iter().map(|s| s.handle().stats().records_acked.load(Ordering::Relaxed)).sum()
    };
    let submit = |agents: std::ops::Range<usize>, from: u64, to: u64| {
        for k in agents {
            let h = senders[k].handle();
            for n in from..to {
                h.submit(l7(k as u64 * PER_AGENT + n + 1));
            }
            h.flush();
        }
    };
    // Phase 1: six agents push at once into a slow store; the writer stores
    // what queued up while an insert ran as one group.
    submit(0..AGENTS as usize, 0, PER_AGENT / 3);
    assert!(
        wait_until(Duration::from_secs(60), || acked(&senders) >= AGENTS * PER_AGENT / 3),
        "phase 1 acked {}",
        acked(&senders)
    );
    let stats = server.stats();
    let (batches, groups) =
        (stats.batches_stored.load(Ordering::Relaxed), stats.store_groups.load(Ordering::Relaxed));
    eprintln!("phase 1: {batches} batches stored in {groups} groups");
    assert!(groups > 0 && groups < batches, "{batches} batches in {groups} groups");
    assert_eq!(
        stats.store_inserts.load(Ordering::Relaxed),
        groups,
        "one insert per group (L7 only)"
    );

    // Phase 2: with the store held, the first batch to arrive is being
    // inserted while the others queue; the group they form is inserted,
    // and then the server is cut off before recording its marks; the
    // agents keep retrying meanwhile.
    store.closed.store(true, Ordering::SeqCst);
    let received = stats.batches_received.load(Ordering::Relaxed);
    submit(0..AGENTS as usize, PER_AGENT / 3, 2 * PER_AGENT / 3);
    assert!(wait_until(Duration::from_secs(30), || stats.batches_received.load(Ordering::Relaxed)
        >= received + AGENTS));
    store.crash.store(true, Ordering::SeqCst);
    store.closed.store(false, Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(30), || store.crashed_inserts.load(Ordering::SeqCst) >= 1)
    );
    server.stop();
    let journals = fathom_ingest::journal::existing(&cfg.data_dir.join("ingest")).unwrap();
    let left: Vec<_> =
        journals.iter().filter_map(|p| fathom_ingest::journal::read(p).unwrap()).collect();
    assert_eq!(left.len(), 1, "the cut-off group is in the journal");
    let cut_off = &left[0];
    let agents: std::collections::HashSet<_> =
        cut_off.batches.iter().map(|b| b.agent_id.clone()).collect();
    eprintln!(
        "cut off: group {} of {} batches from {} agents",
        cut_off.token,
        cut_off.batches.len(),
        agents.len()
    );
    assert!(agents.len() > 1, "the cut-off group mixes agents");
    let in_engine = |rt: &tokio::runtime::Runtime| -> Vec<u64> {
        let r = rt
            .block_on(
                engine.query("SELECT count(), uniqExact(request_id) FROM flow_log.l7_flow_log"),
            )
            .unwrap();
        r.rows[0].iter().map(|v| fathom_store::json_u64(v).unwrap()).collect()
    };
    let before = in_engine(&rt);
    assert_eq!(before[0], before[1], "no row twice so far");
    assert!(
        before[0] > acked(&senders),
        "the cut-off group's rows are in the engine ({}) though not acked ({})",
        before[0],
        acked(&senders)
    );

    // Phase 3: the next start, with three writers now (the agents of the
    // journaled group go to other writers than the one recovering it),
    // stores the group again under the same tokens (the engine drops it)
    // and records its marks before any writer forms a group; the agents'
    // replays of its batches are duplicates, whatever they are grouped with.
    // The store is held until the agents' replays have reached the other
    // writers, which must wait for the recovery.
    store.crash.store(false, Ordering::SeqCst);
    store.closed.store(true, Ordering::SeqCst);
    let server = RunningIngest::start(
        &IngestConfig { listen: addr.clone(), writers: 3, ..cfg.clone() },
        store.clone(),
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(30), || server
        .stats()
        .batches_received
        .load(Ordering::Relaxed)
        >= AGENTS));
    store.closed.store(false, Ordering::SeqCst);
    submit(0..AGENTS as usize, 2 * PER_AGENT / 3, 5 * PER_AGENT / 6);
    assert!(
        wait_until(Duration::from_secs(90), || acked(&senders) >= AGENTS * 5 * PER_AGENT / 6
            && senders.iter().all(|s| s.handle().spool().is_empty())),
        "phase 3 acked {} of {}",
        acked(&senders),
        AGENTS * 5 * PER_AGENT / 6
    );
    assert!(
        server.stats().batches_duplicate.load(Ordering::Relaxed) >= 1,
        "the replays of the cut-off group were acked as duplicates"
    );
    assert_eq!(
        in_engine(&rt),
        vec![AGENTS * 5 * PER_AGENT / 6; 2],
        "count, distinct request ids after the restart"
    );
    assert!(fathom_ingest::journal::read(&journals[0]).unwrap().is_none(), "journal cleared");

    // Phase 4 (one writer again): a batch the store refuses as bad data.
    // Agent 5's batch is held in the store while the others queue behind
    // it, so they form one group with agent 0's refused batch: that group
    // is given up and its batches are stored alone from then on, so only
    // agent 0 waits; the others keep storing.
    server.stop();
    let server =
        RunningIngest::start(&IngestConfig { listen: addr.clone(), ..cfg.clone() }, store.clone())
            .unwrap();
    let agent0_acked = senders[0].handle().stats().records_acked.load(Ordering::Relaxed);
    let errors = |k: usize| senders[k].handle().stats().send_errors.load(Ordering::Relaxed);
    let errors_before: Vec<u64> = (1..5).map(errors).collect();
    store.poison.store(5 * PER_AGENT / 6 + 1, Ordering::SeqCst); // agent-0's next record
    store.closed.store(true, Ordering::SeqCst);
    let received = server.stats().batches_received.load(Ordering::Relaxed);
    submit(5..6, 5 * PER_AGENT / 6, PER_AGENT);
    assert!(wait_until(Duration::from_secs(30), || server
        .stats()
        .batches_received
        .load(Ordering::Relaxed)
        > received));
    submit(0..5, 5 * PER_AGENT / 6, PER_AGENT);
    assert!(wait_until(Duration::from_secs(30), || server
        .stats()
        .batches_received
        .load(Ordering::Relaxed)
        >= received + AGENTS));
    store.closed.store(false, Ordering::SeqCst);
    let others_done = || {
        senders[1..].iter().all(|s| {
            s.handle().stats().records_acked.load(Ordering::Relaxed) >= PER_AGENT
                && s.handle().spool().is_empty()
        })
    };
    assert!(wait_until(Duration::from_secs(60), others_done), "the other agents stored everything");
    assert_eq!(
        senders[0].handle().stats().records_acked.load(Ordering::Relaxed),
        agent0_acked,
        "the refused batch is not acked"
    );
    assert!(server.stats().groups_given_up.load(Ordering::Relaxed) >= 1, "a group was given up");
    // Agents 1-4 were in the given-up group once, then stored alone.
    let errors_after: Vec<u64> = (1..5).map(errors).collect();
    for (k, (b, a)) in errors_before.iter().zip(&errors_after).enumerate() {
        assert_eq!(a - b, 1, "agent-{}: pushes refused in phase 4", k + 1);
    }
    // Accepted again: the agent's retries go through.
    store.poison.store(0, Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(60), || acked(&senders) >= AGENTS * PER_AGENT
            && senders.iter().all(|s| s.handle().spool().is_empty())),
        "acked {} of {}",
        acked(&senders),
        AGENTS * PER_AGENT
    );
    let after = in_engine(&rt);
    assert_eq!(after, vec![AGENTS * PER_AGENT, AGENTS * PER_AGENT], "count, distinct request ids");
    let r = rt
        .block_on(engine.query("SELECT min(request_id), max(request_id) FROM flow_log.l7_flow_log"))
        .unwrap();
    let r: Vec<u64> = r.rows[0].iter().map(|v| fathom_store::json_u64(v).unwrap()).collect();
    assert_eq!(r, vec![1, AGENTS * PER_AGENT]);
    for s in senders {
        s.shutdown(Duration::from_secs(1));
    }
    server.stop();
}
