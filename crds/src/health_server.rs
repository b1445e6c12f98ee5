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
///
/// `[::]` (the components' default, so kubelet and Prometheus reach them on IPv4-only,
/// IPv6-only and dual-stack nodes alike) is bound dual-stack whatever `net.ipv6.bindv6only` says; on a node whose kernel has
/// IPv6 disabled it falls back to `0.0.0.0` with a warning.
pub async fn bind(address: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let named = |error: io::Error, address: SocketAddr| {
        io::Error::new(
            error.kind(),
            format!("cannot serve metrics and health on {address}: {error}"),
        )
    };
    if address.ip() != std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) {
        return tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| named(e, address));
    }
    match bind_dual_stack(address) {
        Ok(listener) => Ok(listener),
        Err(error) if ipv6_unavailable(&error) => {
            let fallback = SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, address.port()));
            tracing::warn!(%error, %fallback, "IPv6 is not available on this node; serving on IPv4 only");
            tokio::net::TcpListener::bind(fallback)
                .await
                .map_err(|e| named(e, fallback))
        }
        Err(error) => Err(named(error, address)),
    }
}

fn bind_dual_stack(address: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(false)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}

/// The errors a kernel without IPv6 (`ipv6.disable=1`) or with it turned off gives.
fn ipv6_unavailable(error: &io::Error) -> bool {
    const EAFNOSUPPORT: i32 = 97;
    const EADDRNOTAVAIL: i32 = 99;
    matches!(error.raw_os_error(), Some(EAFNOSUPPORT | EADDRNOTAVAIL))
        || error.kind() == io::ErrorKind::AddrNotAvailable
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
    async fn the_default_address_answers_on_both_families() {
        let listener = bind("[::]:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Arc::new(Health::new(Fixed))));
        let v4 = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, address.port()));
        assert_eq!(get_for_test(v4, "/healthz").await, (200, "ok".into()));
        if address.is_ipv6() {
            let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, address.port()));
            assert_eq!(get_for_test(v6, "/healthz").await, (200, "ok".into()));
        } else {
            println!("SKIPPED the IPv6 half: this machine has no IPv6 ({address})");
        }
    }

    #[tokio::test]
    async fn a_taken_port_is_named_in_the_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let error = bind(address).await.unwrap_err();
        assert!(error.to_string().contains(&address.to_string()), "{error}");
    }
}
