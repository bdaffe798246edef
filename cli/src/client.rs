//! The one place fathomctl connects to a server's admin service.
//!
//! The control port speaks only TLS: the server is checked against the target's `ca`
//! (the cluster CA) and fathomctl presents `cert` + `key` (an admin client certificate
//! from the cluster CA, e.g. the bundle a server writes to `<data_dir>/admin/`).

use std::time::Duration;

use fathom_proto::admin::admin_client::AdminClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

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

fn read(what: &str, path: &std::path::Path, where_: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("{where_}: cannot read the {what} {}: {e}", path.display()))
}

/// The TLS settings of `t`: the CA to check the server, the admin identity to present.
fn tls_config(t: &Target, where_: &str) -> Result<ClientTlsConfig, String> {
    let Some(ca) = &t.ca else {
        return Err(format!(
            "{where_}: no cluster CA to check the server with; give the admin bundle a server \
             wrote (<data_dir>/admin/): `fathomctl context set NAME --server ADDR --ca ca.pem \
             --cert admin.pem --key admin.key`, or set FATHOMCTL_ADMIN_DIR"
        ));
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(
        "CA certificate",
        ca,
        where_,
    )?));
    match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(
                read("admin certificate", cert, where_)?,
                read("admin key", key, where_)?,
            ));
        }
        (None, None) => {}
        _ => return Err(format!("{where_}: give both --cert and --key (the admin identity)")),
    }
    Ok(tls)
}

pub async fn connect(t: &Target) -> Result<Client, String> {
    let where_ = format!("{} ({})", t.server, t.origin());
    if t.server.starts_with("http://") {
        return Err(format!(
            "{where_}: the control port speaks only TLS; use https://HOST:PORT or HOST:PORT"
        ));
    }
    let endpoint = Endpoint::from_shared(t.server.clone())
        .map_err(|e| format!("bad server address {where_}: {e}"))?
        .tls_config(tls_config(t, &where_)?)
        .map_err(|e| format!("{where_}: TLS settings: {e}"))?
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
        Code::Unauthenticated | Code::PermissionDenied => format!(
            "{} ({}) refused this admin identity: {msg}; use the admin bundle of this cluster (--cert/--key)",
            t.server,
            t.origin()
        ),
        Code::NotFound => format!("not found: {msg}"),
        Code::InvalidArgument => format!("invalid: {msg}"),
        Code::FailedPrecondition => format!("refused: {msg}"),
        code => format!("{msg} ({code:?})"),
    }
}
