//! The listener: HTTP/1.1 through hyper with a header-read timeout (slowloris), a cap on header bytes and on
//! open connections, and a graceful stop that closes the listener first. Only loopback is served without tokens
//! unless the operator says `--insecure`.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connection-level limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Time allowed for a request's headers to arrive.
    pub header_timeout: Duration,
    /// Open connections at most; more are closed at once.
    pub max_connections: usize,
    /// Largest request head, in bytes (431 above).
    pub max_header_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(10), max_connections: 4096, max_header_bytes: 64 * 1024 }
    }
}

/// Whether `addr` may be served without tokens.
pub fn refuses_without_tokens(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// Serve `app` on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, app: Router, config: ServerConfig, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(config.max_header_bytes.max(8192))
        .max_header_size(config.max_header_bytes)
        .keep_alive(true);
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, "too many connections; closing one");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let http = Arc::clone(&http);
        tokio::spawn(async move {
            if let Err(e) = http.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
}
