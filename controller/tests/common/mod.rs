//! Helpers shared by the cluster-port tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use fathom_cluster::network::Transport;
use fathom_controller::tls::{client_config, TlsIdentity};

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// GET the cluster status endpoint with this client identity (or none) on a
/// new connection; whether it answered.
pub async fn status_with(addr: SocketAddr, ca_pem: &str, me: Option<&TlsIdentity>) -> bool {
    let cfg = client_config(ca_pem, me, &[b"http/1.1"]).unwrap();
    let t = Transport::with_tls(cfg).unwrap();
    let r = t
        .client
        .get(t.url(&addr.to_string(), "/cluster/status"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    r.is_ok_and(|r| r.status().is_success())
}
