//! A data directory from before the metadata was sharded (one global group holding
//! agents, tokens, pool config and tag dictionaries) keeps working once the node also
//! runs its region's group: the first region takes the region data over, known names
//! keep their ids and new ids come after them, inside the region's range.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fathom_cluster::state::{AgentRecord, AgentStatus, EnrollmentToken};
use fathom_cluster::{
    Cluster, ClusterConfig, Command, Load, MembershipConfig, MetaConfig, NodeInfo,
    RegionGroupConfig, Response, Role,
};

fn free_tcp() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn free_udp() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

async fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..300 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A one-node cluster on `dir`, with a region group when `region` is set.
async fn start(dir: &Path, region: bool) -> Cluster {
    let (raft, region_raft, gossip) = (free_tcp(), free_tcp(), free_udp());
    let meta = MetaConfig::new(1, raft, dir.join("cluster"));
    let info = NodeInfo {
        id: 1,
        region: "eu".into(),
        az: "eu-1".into(),
        roles: vec![Role::Controller, Role::Ingest],
        raft_addr: raft.to_string(),
        region_raft_addr: if region { region_raft.to_string() } else { String::new() },
        api_addr: String::new(),
        ingest_addr: String::new(),
        gossip_addr: gossip,
        version: "test".into(),
        load: Load::default(),
    };
    let region = region.then(|| RegionGroupConfig {
        meta: MetaConfig::new(1, region_raft, dir.join("cluster/region-eu")),
        bootstrap_expect: 1,
    });
    let membership = MembershipConfig::new(info, vec![]);
    Cluster::start(ClusterConfig { meta, membership, bootstrap_expect: 1, region }).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_from_before_sharding_carries_on_in_the_first_region() {
    let dir = tempfile::tempdir().unwrap();
    // Before: everything in the one group.
    let old = start(dir.path(), false).await;
    poll("a leader", || old.meta.is_leader().then_some(())).await;
    let agent = AgentRecord {
        id: "a1".into(),
        host: "h1".into(),
        pool: "p".into(),
        region: "eu".into(),
        az: "eu-1".into(),
        cert_serial: String::new(),
        status: AgentStatus::Active,
        ingest_node: None,
        last_heartbeat_ms: 7,
        config_version: 0,
    };
    let token = EnrollmentToken {
        id: "t1".into(),
        region: "eu".into(),
        az: "eu-1".into(),
        pool: "p".into(),
        expires_at_ms: u64::MAX,
        used_by: None,
        revoked: false,
    };
    for cmd in [
        Command::UpsertAgent(agent.clone()),
        Command::CreateToken(token),
        Command::SetAgentConfig { pool: "p".into(), body: "x = 1".into() },
    ] {
        let r = old.meta.write(cmd).await.unwrap();
        assert!(!matches!(r, Response::Rejected { .. }), "{r:?}");
    }
    let names: Vec<String> = ["web", "db"].map(String::from).to_vec();
    let before = old.router().allocate_tag_ids("pod", &names).await.unwrap();
    assert_eq!(before, [2, 1], "ids from 1 in name order");
    old.shutdown().await.unwrap();

    // After: the same directory, now with the region group.
    let new = start(dir.path(), true).await;
    let region = new.region.clone().unwrap();
    poll("the region group named", || region.read(|s| s.region_group.clone())).await;
    assert_eq!(region.read(|s| s.region_group.as_ref().map(|g| g.number)), Some(0));
    assert_eq!(region.read(|s| s.agents.get("a1").cloned()), Some(agent));
    assert!(region.read(|s| s.tokens.contains_key("t1")));
    assert_eq!(region.read(|s| s.agent_configs["p"].version), 1);
    // Known names keep their ids; a new one comes after them (this node's old block
    // was lost with its restart, so the next block starts after it).
    let router = new.router();
    let mut again = names.clone();
    again.push("cache".into());
    let ids = router.allocate_tag_ids("pod", &again).await.unwrap();
    assert_eq!(ids[..2], before[..]);
    assert!(ids[2] > 2 && ids[2] < 1 << 24, "{ids:?}");
    assert!(region.read(|s| s.tags["pod"].by_name.len()) == 3);
    // Region writes now go to the region group.
    let r = router.write(Command::ConsumeToken { id: "t1".into(), agent: "a2".into(), now_ms: 1 });
    assert_eq!(r.await.unwrap(), Response::Ok);
    assert_eq!(region.read(|s| s.tokens["t1"].used_by.clone()), Some("a2".into()));
    assert_eq!(new.meta.read(|s| s.tokens["t1"].used_by.clone()), None);
    new.shutdown().await.unwrap();
}
