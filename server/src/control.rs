//! The control port (20035): fleet administration for fathomctl today; the agent
//! control service (enrollment, config push, heartbeats) joins it on the same listener.
//!
//! This is the one place where the listener is made: the controller's mTLS server
//! config (admin and agent client certificates) plugs in here, wrapping the same routes.

use std::future::Future;

use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

/// Serve `routes` on `listen` until `shutdown` resolves.
pub async fn serve(
    listen: String,
    routes: Routes,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen} for control (fathomctl): {e}"))?;
    tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
        .map_err(|e| format!("control service on {listen}: {e}"))
}
