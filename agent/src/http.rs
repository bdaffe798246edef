//! The agent's local HTTP endpoint: its own Prometheus `/metrics`.

use axum::routing::get;
use axum::Router;

use crate::telemetry::TELEMETRY;

/// Bind and serve in the background; binding errors are returned at once.
pub async fn serve(listen: &str) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen} for /metrics: {e}"))?;
    let app = Router::new().route(
        "/metrics",
        get(|| async {
            TELEMETRY.set_rss();
            TELEMETRY.render()
        }),
    );
    actix_rt::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics endpoint stopped: {e}");
        }
    });
    Ok(())
}
