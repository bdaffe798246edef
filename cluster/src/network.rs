//! Raft RPC between nodes: JSON over HTTP/1.1 (reqwest client, axum server).
//!
//! Why HTTP/JSON and not gRPC: openraft's messages already derive serde, so no .proto
//! mirror of them has to be kept in sync, no protoc is needed, and every call is one
//! request/response, which HTTP/1.1 keep-alive carries well at metadata rates. The
//! transport is plain TCP for now; [`Transport`] is the seam where the controller's mTLS
//! (a rustls client identity and an https scheme) plugs in.

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
