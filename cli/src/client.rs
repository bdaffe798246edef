//! The one place fathomctl connects to a server's admin service.
//!
//! mTLS plugs in here: with tonic's TLS feature enabled, `channel` builds a
//! `ClientTlsConfig` from the target's `ca` (the cluster CA) and `cert` + `key` (the
//! admin client identity) and sets it on the endpoint. Until then a context that names
//! certificates, or an https:// server, is refused with a clear message rather than
//! silently sent in plain text.

use std::time::Duration;

use fathom_proto::admin::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint};

use crate::context::Target;

pub type Client = AdminClient<Channel>;

/// The innermost cause of an error: "Connection refused (os error 111)" rather than
/// "transport error".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

pub async fn connect(t: &Target) -> Result<Client, String> {
    let where_ = format!("{} ({})", t.server, t.origin());
    if t.server.starts_with("https://") || t.cert.is_some() || t.ca.is_some() {
        return Err(format!(
            "{where_} asks for TLS (an https:// address or certificates in the context), \
             which this fathomctl build does not speak yet; use the plain http:// control address"
        ));
    }
    let endpoint = Endpoint::from_shared(t.server.clone())
        .map_err(|e| format!("bad server address {where_}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {where_}: {}", root_cause(&e)))?;
    Ok(AdminClient::new(channel))
}

/// A gRPC error as the operator should read it.
pub fn status_text(t: &Target, s: tonic::Status) -> String {
    use tonic::Code;
    let msg = s.message();
    match s.code() {
        Code::Unavailable if msg.contains("transport") || msg.is_empty() => {
            format!("{} ({}) is unavailable: {msg}", t.server, t.origin())
        }
        Code::Unimplemented => format!(
            "{} ({}) does not serve fleet administration; is it the control port (20035) of a fathom-server?",
            t.server,
            t.origin()
        ),
        Code::NotFound => format!("not found: {msg}"),
        Code::InvalidArgument => format!("invalid: {msg}"),
        Code::FailedPrecondition => format!("refused: {msg}"),
        code => format!("{msg} ({code:?})"),
    }
}
