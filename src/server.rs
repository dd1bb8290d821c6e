//! The HTTP endpoints: `/healthz`, `/readyz`, `/metrics` and `/status`.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

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
        "/readyz" => check(health.ready(), "ready\n", "not ready: waiting for the first full pass\n"),
        "/metrics" => respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics.encode()),
        "/status" => respond(StatusCode::OK, "application/json", board.get()),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// Serves until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>, board: Arc<StatusBoard>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "failed to accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, health, board) = (metrics.clone(), health.clone(), board.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = route(&req, &metrics, &health, &board);
                async move { Ok::<_, Infallible>(r) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await
            {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        });
    }
}
