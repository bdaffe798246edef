//! Raft RPC between nodes: JSON over HTTP/1.1 (reqwest client, axum server).
//!
//! Why HTTP/JSON and not gRPC: openraft's messages already derive serde, so no .proto
//! mirror of them has to be kept in sync, no protoc is needed, and every call is one
//! request/response, which HTTP/1.1 keep-alive carries well at metadata rates.
//!
//! mTLS: [`Transport::with_tls`] makes the client side https with the node's certificate
//! (the controller builds the rustls config); [`TlsListener`] is the listener side,
//! given to [`MetaNode::start_with_tls`](crate::MetaNode::start_with_tls).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{NodeId, TypeConfig};

pub const PATH_APPEND: &str = "/raft/append";
pub const PATH_VOTE: &str = "/raft/vote";
pub const PATH_SNAPSHOT: &str = "/raft/snapshot";

/// How nodes reach each other. Cloning shares the connection pool.
#[derive(Clone)]
pub struct Transport {
    pub client: reqwest::Client,
    /// "http" now; "https" once the client carries the node certificate.
    pub scheme: &'static str,
}

impl Transport {
    /// Plain TCP: for tests and until the controller hands out node certificates.
    pub fn plain() -> Transport {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Transport { client, scheme: "http" }
    }

    /// https with this rustls client config (trust the cluster CA, present the node
    /// certificate). Peers are dialled by their Raft address, which their certificate
    /// must name.
    pub fn with_tls(tls: rustls::ClientConfig) -> Result<Transport, reqwest::Error> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Transport { client, scheme: "https" })
    }

    pub fn url(&self, addr: &str, path: &str) -> String {
        format!("{}://{}{}", self.scheme, addr, path)
    }

    /// POST `body` as JSON and decode a JSON answer of type `R`.
    pub async fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, reqwest::Error> {
        self.client
            .post(self.url(addr, path))
            .timeout(timeout)
            .json(body)
            .send()
            .await?
            .error_for_status()?
            .json::<R>()
            .await
    }
}

pub struct NetworkFactory {
    pub transport: Transport,
}

pub struct Peer {
    target: NodeId,
    addr: String,
    transport: Transport,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer { target, addr: node.addr.clone(), transport: self.transport.clone() }
    }
}

impl Peer {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let res: Result<Result<Resp, RaftError<NodeId, E>>, reqwest::Error> =
            self.transport.post(&self.addr, path, req, option.hard_ttl()).await;
        match res {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            // Unreachable makes openraft back off instead of hammering a dead peer.
            Err(e) if e.is_connect() => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(PATH_APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(PATH_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(PATH_VOTE, &rpc, &option).await
    }
}

/// The TLS side of the cluster endpoint: the accept loop of `fathom_proto::tls` (each
/// handshake on its own task, so a slow client never holds up the others); only
/// completed handshakes reach axum.
pub struct TlsListener {
    local: SocketAddr,
    incoming: tokio_stream::wrappers::ReceiverStream<
        std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
    >,
}

impl TlsListener {
    /// Must be called inside a tokio runtime.
    pub fn new(
        listener: tokio::net::TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        Ok(TlsListener { local, incoming: fathom_proto::tls::incoming(listener, config) })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use tokio_stream::StreamExt;
        loop {
            match self.incoming.next().await {
                Some(Ok(tls)) => match tls.get_ref().0.peer_addr() {
                    Ok(peer) => return (tls, peer),
                    // Gone between the handshake and here.
                    Err(_) => continue,
                },
                Some(Err(_)) => continue,
                // The accept task only ends once this stream is gone.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
