//! The TLS side of a tonic server: accepts TCP connections, runs each rustls handshake
//! on its own task (a slow or silent client never holds up the others) and yields the
//! established streams to `Server::serve_with_incoming*`. Handlers then find the peer's
//! certificates with `Request::peer_certs()`.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

/// The rustls these streams use, for crates that only configure it.
pub use tokio_rustls::rustls;

/// A handshake that takes longer than this is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Established TLS connections from `listener`. Handshake failures (an unknown CA, a
/// revoked certificate, plain text) are logged at debug level and never reach tonic.
/// Must be called inside a tokio runtime; the accept task ends when the stream is
/// dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<tokio_rustls::rustls::ServerConfig>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!("tls: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "tls: handshake refused: {e}"),
                    Err(_) => tracing::debug!(%peer, "tls: handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
