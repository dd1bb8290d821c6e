//! The HTTP endpoints: `/healthz`, `/readyz`, `/metrics` and `/status`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::metrics::{Health, Metrics, StatusBoard};

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

fn route(req: &Request<Incoming>, metrics: &Metrics, health: &Health, board: &StatusBoard) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n");
    }
    let check = |ok: bool, yes: &'static str, no: &'static str| {
        if ok {
            respond(StatusCode::OK, "text/plain", yes)
        } else {
            respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", no)
        }
    };
    match req.uri().path() {
        "/healthz" => check(health.alive(), "ok\n", "reconcile loop is stuck\n"),
        "/readyz" if !health.ready() => {
            respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready: {}\n", health.not_ready_cause()))
        }
        "/readyz" => respond(StatusCode::OK, "text/plain", "ready\n"),
        "/metrics" => respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics.encode()),
        "/status" => respond(StatusCode::OK, "application/json", board.get()),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// What one client may hold of the server: connections at once, and time to send a
/// request's headers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more wait to be accepted (in the listen backlog).
    pub max_connections: usize,
    /// A connection that has not sent a whole request head within this long, the first
    /// or the next on a kept-alive connection, is closed.
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // Prometheus, the kubelet's probes and a person with curl: a handful at a time.
        Self { max_connections: 64, header_read_timeout: Duration::from_secs(10) }
    }
}

/// Serves until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>, board: Arc<StatusBoard>) {
    serve_with(listener, Limits::default(), metrics, health, board).await
}

/// Serves within `limits` until the task is dropped or aborted.
pub async fn serve_with(
    listener: TcpListener,
    limits: Limits,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    board: Arc<StatusBoard>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, health, board) = (metrics.clone(), health.clone(), board.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = route(&req, &metrics, &health, &board);
                async move { Ok::<_, Infallible>(r) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    async fn start(limits: Limits) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Arc::new(Health::default());
        health.beat();
        tokio::spawn(serve_with(listener, limits, Arc::default(), health, Arc::default()));
        addr
    }

    /// Reads until the server closes the connection, or `within` passes.
    async fn closed_within(conn: &mut TcpStream, within: Duration) -> Option<String> {
        let mut got = Vec::new();
        tokio::time::timeout(within, conn.read_to_end(&mut got)).await.ok()?.ok()?;
        Some(String::from_utf8_lossy(&got).into_owned())
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_cut_off() {
        let addr = start(Limits { max_connections: 8, header_read_timeout: Duration::from_millis(500) }).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let started = Instant::now();
        assert!(closed_within(&mut slow, Duration::from_secs(5)).await.is_some(), "still open after 5 s");
        assert!(started.elapsed() >= Duration::from_millis(400), "closed before its time: {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_for_a_slot() {
        let addr = start(Limits { max_connections: 1, header_read_timeout: Duration::from_secs(1) }).await;
        // One idle connection holds the only slot until its header time runs out.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let mut next = TcpStream::connect(addr).await.unwrap();
        next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let answer = closed_within(&mut next, Duration::from_secs(5)).await.expect("never answered");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(started.elapsed() >= Duration::from_millis(700), "served beside the idle one: {:?}", started.elapsed());
        assert!(closed_within(&mut idle, Duration::from_secs(1)).await.is_some());
    }
}
