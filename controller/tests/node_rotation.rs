//! Node certificates on the cluster port: renewed while the nodes run (a 3-node group
//! keeps committing through several renewals, past the life of the first certificates)
//! and checked against the replicated revocations (a node certificate revoked by serial
//! is refused at the handshake by the other nodes).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_addr, status_with};
use fathom_cluster::network::Transport;
use fathom_cluster::state::Command;
use fathom_cluster::{MetaConfig, MetaNode};
use fathom_controller::ca::cert_info;
use fathom_controller::tls::{client_config, TlsIdentity};
use fathom_controller::{ControlConfig, ControlPlane, NodeTls, Renewal};
use rustls::pki_types::ServerName;

fn node_tls(id: u64, addr: SocketAddr, ca_dir: &Path, ttl: Duration) -> NodeTls {
    let ca_ttl = Duration::from_secs(86_400);
    NodeTls::load_or_create(ca_dir, id, &[addr.ip().to_string()], ca_ttl, ttl).unwrap()
}

/// Starts the Raft member with `tls` and attaches it (as the server does).
async fn start(id: u64, addr: SocketAddr, tls: &NodeTls, data: &Path) -> MetaNode {
    let transport = Transport::with_tls(tls.raft_client().unwrap()).unwrap();
    let cfg = MetaConfig::new(id, addr, data.join(format!("n{id}")));
    let meta =
        MetaNode::start_with_tls(cfg, transport, Some(tls.raft_server().unwrap())).await.unwrap();
    tls.attach(&meta);
    meta
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until_async<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The serial of the certificate the Raft port at `addr` serves, from a TLS handshake
/// presenting `me`.
async fn served_serial(addr: SocketAddr, ca_pem: &str, me: &TlsIdentity) -> String {
    let cfg = client_config(ca_pem, Some(me), &[b"http/1.1"]).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = connector.connect(name, tcp).await.unwrap();
    let leaf = &tls.get_ref().1.peer_certificates().unwrap()[0];
    cert_info(leaf).unwrap().serial
}

async fn form_group(nodes: &[(MetaNode, SocketAddr)]) {
    let (n1, a1) = &nodes[0];
    n1.initialize(BTreeMap::from([(1, a1.to_string())])).await.unwrap();
    until("node 1 leading", || n1.is_leader()).await;
    for (n, a) in &nodes[1..] {
        n1.add_learner(n.id(), a.to_string()).await.unwrap();
        n1.promote(n.id()).await.unwrap();
    }
}

/// Starts nodes 1-3 at `addrs` with `tls` and forms their group.
async fn three_node_group(addrs: &[SocketAddr], tls: &[NodeTls], data: &Path) -> Vec<MetaNode> {
    let mut metas = Vec::new();
    for i in 0..3 {
        metas.push(start(i as u64 + 1, addrs[i], &tls[i], data).await);
    }
    let nodes: Vec<_> = metas.iter().cloned().zip(addrs.iter().copied()).collect();
    form_group(&nodes).await;
    metas
}

/// Writes `key` through `via` and waits until every node applied it.
async fn commit(via: &MetaNode, all: &[&MetaNode], key: &str) {
    via.write(Command::Put { key: key.into(), value: "v".into() }).await.unwrap();
    until(&format!("{key} everywhere"), || all.iter().all(|n| n.read(|s| s.kv.contains_key(key))))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_keeps_committing_while_node_certificates_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let ttl = Duration::from_secs(4);
    let addrs = [free_addr(), free_addr(), free_addr()];
    let tls: Vec<NodeTls> =
        (0..3).map(|i| node_tls(i as u64 + 1, addrs[i], &ca_dir, ttl)).collect();
    let ca_pem = tls[0].ca.cert_pem().to_string();
    let first: Vec<TlsIdentity> = tls.iter().map(|t| t.node.identity()).collect();
    let _renewals: Vec<Renewal> = tls.iter().map(|t| t.spawn_renewal()).collect();
    let mut metas = three_node_group(&addrs, &tls, dir.path()).await;
    let plane =
        ControlPlane::bootstrap_with_node(metas[0].clone(), ControlConfig::default(), &tls[0])
            .await
            .unwrap();
    assert_eq!(plane.ca_pem(), ca_pem);

    // Writes through every node in turn until each node served four certificates
    // (three renewals), the serial read from a handshake with its Raft port.
    let mut served: Vec<BTreeSet<String>> = vec![BTreeSet::new(); 3];
    let mut written = 0;
    while served.iter().any(|s| s.len() < 4) {
        let all: Vec<&MetaNode> = metas.iter().collect();
        commit(&metas[written % 3], &all, &format!("k{written}")).await;
        written += 1;
        for i in 0..3 {
            let me = tls[(i + 1) % 3].node.identity();
            let serial = served_serial(addrs[i], &ca_pem, &me).await;
            served[i].insert(serial);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The certificates the nodes started with have expired by now: a new connection
    // presenting one is refused, one presenting the current certificate is let in.
    until_async("the first certificates expire", || {
        let (addr, old, ca) = (addrs[0], first[1].clone(), ca_pem.clone());
        async move { !status_with(addr, &ca, Some(&old)).await }
    })
    .await;
    assert!(status_with(addrs[0], &ca_pem, Some(&tls[1].node.identity())).await);

    // Node 3 restarts: every connection to and from it is a new handshake with the
    // renewed certificates, and it catches up.
    metas.pop().unwrap().shutdown().await.unwrap();
    let (n1, n2) = (metas[0].clone(), metas[1].clone());
    commit(&n1, &[&n1, &n2], "while-3-is-down").await;
    let n3 = start(3, addrs[2], &tls[2], dir.path()).await;
    commit(&n2, &[&n1, &n2, &n3], "after-restart").await;
    assert!(n3.read(|s| s.kv.contains_key("while-3-is-down")));

    // Renewed certificates are recorded (they can be revoked by serial).
    let current = tls[0].node.serial();
    until("the current certificate recorded", || n1.read(|s| s.certs.contains_key(&current))).await;

    drop(plane);
    n3.shutdown().await.unwrap();
    n2.shutdown().await.unwrap();
    n1.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_certificate_is_refused_by_the_other_raft_ports() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let day = Duration::from_secs(86_400);
    let addrs = [free_addr(), free_addr(), free_addr()];
    let tls: Vec<NodeTls> =
        (0..3).map(|i| node_tls(i as u64 + 1, addrs[i], &ca_dir, day)).collect();
    let ca_pem = tls[0].ca.cert_pem().to_string();
    let metas = three_node_group(&addrs, &tls, dir.path()).await;
    let plane =
        ControlPlane::bootstrap_with_node(metas[0].clone(), ControlConfig::default(), &tls[0])
            .await
            .unwrap();
    // Each node records its certificate when its control plane comes up.
    let plane3 =
        ControlPlane::bootstrap_with_node(metas[2].clone(), ControlConfig::default(), &tls[2])
            .await
            .unwrap();
    let node3 = tls[2].node.identity();
    assert!(status_with(addrs[0], &ca_pem, Some(&node3)).await);
    assert!(status_with(addrs[1], &ca_pem, Some(&node3)).await);

    plane.revoke_cert(&tls[2].node.serial()).await.unwrap();
    let serial = tls[2].node.serial();
    until("the revoke applied on nodes 1 and 2", || {
        metas[..2].iter().all(|m| m.read(|s| s.cert_revoked(&serial)))
    })
    .await;
    assert!(!status_with(addrs[0], &ca_pem, Some(&node3)).await);
    assert!(!status_with(addrs[1], &ca_pem, Some(&node3)).await);
    // Other nodes' certificates are still let in, and a renewed certificate of node 3
    // (a new serial) is too.
    assert!(status_with(addrs[0], &ca_pem, Some(&tls[1].node.identity())).await);
    tls[2].renew().unwrap();
    assert!(status_with(addrs[0], &ca_pem, Some(&tls[2].node.identity())).await);

    drop((plane, plane3));
    for m in metas.into_iter().rev() {
        m.shutdown().await.unwrap();
    }
}
