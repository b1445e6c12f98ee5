//! The HTTP endpoints both components serve: /metrics for Prometheus, /healthz for liveness, and
//! /readyz, which fails until the component says it is ready.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// A component's metrics, as the endpoints need them.
pub trait Exposition: Send + Sync + 'static {
    /// The current metrics in the OpenMetrics text format.
    fn encode(&self) -> String;
    /// What /readyz says while the component is not ready.
    const NOT_READY: &'static str;
}

/// What the endpoints report.
pub struct Health<M> {
    pub metrics: M,
    /// Whether /readyz answers 200; the component sets and clears it.
    pub ready: AtomicBool,
}

impl<M> Health<M> {
    pub fn new(metrics: M) -> Self {
        Self {
            metrics,
            ready: AtomicBool::new(false),
        }
    }
}

pub fn router<M: Exposition>(health: Arc<Health<M>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::<M>))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<M>))
        .with_state(health)
}

async fn metrics<M: Exposition>(State(health): State<Arc<Health<M>>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics.encode(),
    )
}

async fn readyz<M: Exposition>(State(health): State<Arc<Health<M>>>) -> impl IntoResponse {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, M::NOT_READY)
    }
}

/// Binds before anything else starts, so a taken port stops the component at startup with an
/// error that names the address.
pub async fn bind(address: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot serve metrics and health on {address}: {error}"),
            )
        })
}

/// Serves until the process ends.
pub async fn serve<M: Exposition>(listener: tokio::net::TcpListener, health: Arc<Health<M>>) {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "serving /metrics, /healthz and /readyz");
    }
    if let Err(error) = axum::serve(listener, router(health)).await {
        tracing::error!(%error, "the metrics and health server stopped");
    }
}

/// An HTTP/1.1 GET for tests of the components' endpoints: the status code and the body.
#[cfg(test)]
async fn get_for_test(address: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (code, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl Exposition for Fixed {
        fn encode(&self) -> String {
            "# TYPE example_total counter\nexample_total 7\n# EOF\n".to_owned()
        }
        const NOT_READY: &'static str = "example not synced";
    }

    #[tokio::test]
    async fn endpoints_answer_and_readiness_follows_the_flag() {
        let health = Arc::new(Health::new(Fixed));
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, health.clone()));
        assert_eq!(get_for_test(address, "/healthz").await, (200, "ok".into()));
        assert_eq!(
            get_for_test(address, "/readyz").await,
            (503, "example not synced".into())
        );
        health.ready.store(true, Ordering::Relaxed);
        assert_eq!(get_for_test(address, "/readyz").await, (200, "ok".into()));
        let (code, body) = get_for_test(address, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("example_total 7"), "{body}");
        assert_eq!(get_for_test(address, "/nothing").await.0, 404);
    }

    #[tokio::test]
    async fn a_taken_port_is_named_in_the_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let error = bind(address).await.unwrap_err();
        assert!(error.to_string().contains(&address.to_string()), "{error}");
    }
}
