//! `fathom.control.v1`: the agent <-> server control service (port 20035).
//!
//! `Enroll` is the only call made without a client certificate: the agent presents a
//! one-time token and a CSR and gets back a certificate bound to its agent id. Every
//! other call is made over mTLS with that certificate; the server takes the agent id
//! from the certificate, never from the message.
//!
//! | status | meaning |
//! |---|---|
//! | UNAUTHENTICATED | no client certificate (calls other than Enroll) |
//! | PERMISSION_DENIED | token unknown, expired, used or revoked; agent or certificate revoked |
//! | INVALID_ARGUMENT | malformed CSR or agent id, or a CSR for another identity |
//! | ALREADY_EXISTS | another agent is enrolled under this id |
//! | UNAVAILABLE | no metadata leader right now: retry |

use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct EnrollRequest {
    /// The one-time enrollment secret (`fathom-enroll-...`).
    #[prost(string, tag = "1")]
    pub token: String,
    /// PEM certificate signing request for `spiffe://fathom/agent/<agent_id>`.
    #[prost(string, tag = "2")]
    pub csr_pem: String,
    /// The id the agent asks for (its configured id or host name).
    #[prost(string, tag = "3")]
    pub agent_id: String,
    #[prost(string, tag = "4")]
    pub hostname: String,
    /// The agent's version, kernel and architecture, for the registry.
    #[prost(string, tag = "5")]
    pub agent_version: String,
    #[prost(string, tag = "6")]
    pub kernel: String,
    #[prost(string, tag = "7")]
    pub arch: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct EnrollResponse {
    #[prost(string, tag = "1")]
    pub agent_id: String,
    /// The agent's certificate (PEM).
    #[prost(string, tag = "2")]
    pub cert_pem: String,
    /// The cluster CA (PEM): the only root the agent trusts from now on.
    #[prost(string, tag = "3")]
    pub ca_pem: String,
    /// Unix ms after which the certificate is no longer valid.
    #[prost(uint64, tag = "4")]
    pub expires_at_ms: u64,
    /// Where to send data (host:port of an ingest node).
    #[prost(string, tag = "5")]
    pub ingest_addr: String,
    #[prost(string, tag = "6")]
    pub region: String,
    #[prost(string, tag = "7")]
    pub az: String,
    #[prost(string, tag = "8")]
    pub pool: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct HeartbeatRequest {
    /// The config version the agent runs (0 = none pushed yet).
    #[prost(uint64, tag = "1")]
    pub config_version: u64,
    #[prost(uint64, tag = "2")]
    pub records_sent: u64,
    #[prost(uint64, tag = "3")]
    pub records_dropped: u64,
    #[prost(uint64, tag = "4")]
    pub spooled_batches: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct HeartbeatResponse {
    /// The config the agent's pool should run; `config_body` is set only when the
    /// version differs from the one the agent reported.
    #[prost(uint64, tag = "1")]
    pub config_version: u64,
    #[prost(string, tag = "2")]
    pub config_body: String,
    /// Where to send data, when the assignment changed (empty = keep the current one).
    #[prost(string, tag = "3")]
    pub ingest_addr: String,
    /// Seconds until the next heartbeat is expected.
    #[prost(uint32, tag = "4")]
    pub interval_secs: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct RenewRequest {
    /// A CSR for a new key, same identity as the current certificate.
    #[prost(string, tag = "1")]
    pub csr_pem: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct RenewResponse {
    #[prost(string, tag = "1")]
    pub cert_pem: String,
    #[prost(string, tag = "2")]
    pub ca_pem: String,
    #[prost(uint64, tag = "3")]
    pub expires_at_ms: u64,
}

/// The generated client (`agent_control_client::AgentControlClient`) and server
/// (`agent_control_server::{AgentControl, AgentControlServer}`).
#[allow(clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/fathom.control.v1.AgentControl.rs"));
}
pub use generated::{agent_control_client, agent_control_server};
