//! The HTTP endpoints: `/healthz`, `/readyz`, `/metrics` and `/status`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::core::status::board::StatusBoard;
use crate::shell::health::Health;
use crate::shell::metrics::{Format, Metrics};

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
        "/metrics" => {
            let accept = req.headers().get(hyper::header::ACCEPT).and_then(|v| v.to_str().ok());
            let format = negotiate(accept);
            let mut r = respond(StatusCode::OK, format.content_type(), metrics.encode_as(format));
            r.headers_mut().insert(hyper::header::VARY, hyper::header::HeaderValue::from_static("accept"));
            r
        }
        "/status" => respond(StatusCode::OK, "application/json", board.get()),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// The format to answer `/metrics` in: OpenMetrics 1.0.0 when `accept` gives it a higher
/// q-value than the classic text format 0.0.4, as Prometheus's scrape requests do; the
/// classic format otherwise, including when the header is absent, unreadable, or accepts
/// neither (a scraper that asked for something else gets the format every scraper reads).
///
/// Each format takes the q-value of the most specific media range that matches it
/// (RFC 9110, 12.5.1): the type with a `version` parameter equal to the format's, then the
/// type without one, then `type/*`, then `*/*`. A range naming another version matches
/// nothing. Parameters other than `version` and `q` (`charset`, `escaping`) are ignored.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else { return Format::Classic };
    let openmetrics = quality(accept, "application", "openmetrics-text", "1.0.0");
    let classic = quality(accept, "text", "plain", "0.0.4");
    match (openmetrics, classic) {
        (Some(om), c) if om > 0.0 && om > c.unwrap_or(0.0) => Format::OpenMetrics,
        _ => Format::Classic,
    }
}

/// The q-value `accept` gives `kind/subtype; version=VERSION`, from its most specific
/// matching range; None when no range matches.
fn quality(accept: &str, kind: &str, subtype: &str, version: &str) -> Option<f32> {
    // (specificity, q) of the best match so far.
    let mut best: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let Some((t, st)) = media.split_once('/') else { continue };
        let (mut q, mut range_version) = (1.0_f32, None);
        let mut valid = true;
        for param in parts {
            let Some((name, value)) = param.split_once('=') else { continue };
            let value = value.trim().trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "q" => match value.parse::<f32>() {
                    Ok(v) if (0.0..=1.0).contains(&v) => q = v,
                    _ => valid = false,
                },
                "version" => range_version = Some(value.to_owned()),
                _ => {}
            }
        }
        if !valid {
            continue;
        }
        let specificity = match (t.trim(), st.trim()) {
            ("*", "*") => 0,
            (t, "*") if t == kind => 1,
            (t, st) if t == kind && st == subtype => match range_version.as_deref() {
                None => 2,
                Some(v) if v == version => 3,
                Some(_) => continue,
            },
            _ => continue,
        };
        match best {
            Some((s, bq)) if s > specificity || (s == specificity && bq >= q) => {}
            _ => best = Some((specificity, q)),
        }
    }
    best.map(|(_, q)| q)
}

/// What clients may hold of the server: connections at once, and time to send a
/// request's headers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once. The listener never stops accepting: a connection past
    /// the cap closes the oldest one, so peers that hold connections open and send nothing
    /// cannot keep a probe from being answered. (A request, once whole, is answered in
    /// microseconds: the oldest connection is, in practice, one that sent nothing.)
    pub max_connections: usize,
    /// A connection that has not sent a whole request head within this long, the first
    /// or the next on a kept-alive connection, is closed.
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // Prometheus, the kubelet's probes and a person with curl: a handful at a time.
        // The cap is for peers that misbehave, and file descriptors are cheap.
        Self { max_connections: 256, header_read_timeout: Duration::from_secs(3) }
    }
}

/// Serves until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>, board: Arc<StatusBoard>) {
    serve_with(listener, Limits::default(), metrics, health, board).await
}

/// The connections being served, oldest first, each with how to close it.
#[derive(Default)]
struct Open {
    next: u64,
    conns: std::collections::BTreeMap<u64, tokio::task::AbortHandle>,
}

/// Serves within `limits` until the task is dropped or aborted.
pub async fn serve_with(
    listener: TcpListener,
    limits: Limits,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    board: Arc<StatusBoard>,
) {
    let open = Arc::new(std::sync::Mutex::new(Open::default()));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors, say: the next accept may succeed.
                tracing::warn!(error = %e, "failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let mut all = open.lock().expect("connections lock");
        while all.conns.len() >= limits.max_connections.max(1) {
            let Some((_, oldest)) = all.conns.pop_first() else { break };
            oldest.abort();
        }
        let id = all.next;
        all.next += 1;
        let (metrics, health, board, registry) = (metrics.clone(), health.clone(), board.clone(), open.clone());
        let task = tokio::spawn(async move {
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
            registry.lock().expect("connections lock").conns.remove(&id);
        });
        all.conns.insert(id, task.abort_handle());
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

    /// Prometheus 2's scrape `Accept` header (scrape/scrape.go, 2.42).
    const PROMETHEUS_2: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    /// Prometheus 3's, with its default scrape protocols.
    const PROMETHEUS_3: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1";

    #[test]
    fn metrics_format_follows_the_accept_header() {
        let cases: &[(&str, Option<&str>, Format)] = &[
            ("Prometheus 2 prefers OpenMetrics", Some(PROMETHEUS_2), Format::OpenMetrics),
            ("Prometheus 3 prefers OpenMetrics", Some(PROMETHEUS_3), Format::OpenMetrics),
            (
                "Prometheus with scrape_protocols [PrometheusText0.0.4]",
                Some("text/plain;version=0.0.4;q=0.5,*/*;q=0.4"),
                Format::Classic,
            ),
            ("no header: classic", None, Format::Classic),
            ("anything: classic", Some("*/*"), Format::Classic),
            ("curl's default: classic", Some("*/*;q=1"), Format::Classic),
            ("OpenMetrics alone", Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                "names and parameters are case-insensitive",
                Some("Application/OpenMetrics-Text; Version=1.0.0; charset=utf-8"),
                Format::OpenMetrics,
            ),
            (
                "a version we do not write matches nothing",
                Some("application/openmetrics-text;version=0.0.1"),
                Format::Classic,
            ),
            ("q=0 refuses", Some("application/openmetrics-text;q=0,*/*;q=0.1"), Format::Classic),
            ("higher q wins", Some("text/plain;q=0.2, application/openmetrics-text;q=0.9"), Format::OpenMetrics),
            (
                "higher q wins the other way",
                Some("text/plain;q=0.9, application/openmetrics-text;q=0.2"),
                Format::Classic,
            ),
            ("a tie is classic", Some("application/openmetrics-text, text/plain"), Format::Classic),
            ("a subtype wildcard counts", Some("application/*;q=0.9, text/plain;q=0.5"), Format::OpenMetrics),
            (
                "the most specific range decides, not the highest q",
                Some("application/openmetrics-text;version=1.0.0;q=0.1, application/*;q=1, text/plain;q=0.5"),
                Format::Classic,
            ),
            (
                "an unreadable q is ignored",
                Some("application/openmetrics-text;q=high, text/plain;q=0.1"),
                Format::Classic,
            ),
            ("garbage", Some("not a media type"), Format::Classic),
            (
                "text/plain version 1.0.0 is not 0.0.4",
                Some("text/plain;version=1.0.0, application/openmetrics-text;q=0.5"),
                Format::OpenMetrics,
            ),
        ];
        for (reason, accept, want) in cases {
            assert_eq!(negotiate(*accept), *want, "{reason}: {accept:?}");
        }
    }

    async fn get(addr: std::net::SocketAddr, path: &str, accept: Option<&str>) -> String {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{accept}Connection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        closed_within(&mut conn, Duration::from_secs(5)).await.expect("never answered")
    }

    #[tokio::test]
    async fn metrics_answer_in_the_negotiated_format_and_say_so() {
        let addr = start(Limits::default()).await;
        let om = get(addr, "/metrics", Some(PROMETHEUS_2)).await;
        assert!(om.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"), "{om}");
        assert!(om.contains("vary: accept\r\n"), "{om}");
        assert!(om.contains("# TYPE asg_cmk_operator_reconcile_passes counter\n"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let classic = get(addr, "/metrics", None).await;
        assert!(classic.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"), "{classic}");
        assert!(classic.contains("# TYPE asg_cmk_operator_reconcile_passes_total counter\n"), "{classic}");
        assert!(!classic.contains("# EOF"), "{classic}");
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
    async fn a_connection_past_the_cap_closes_the_oldest_and_is_answered_at_once() {
        let addr = start(Limits { max_connections: 4, header_read_timeout: Duration::from_secs(30) }).await;
        let mut idle = Vec::new();
        for _ in 0..4 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
            idle.push(c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let answer = get(addr, "/healthz", None).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(1), "waited {:?}", started.elapsed());
        // The oldest connection was closed to make room.
        assert!(closed_within(&mut idle[0], Duration::from_secs(1)).await.is_some(), "the oldest is still open");
    }

    #[tokio::test]
    async fn a_thousand_connections_that_never_finish_a_request_leave_the_probes_answered() {
        let addr = start(Limits::default()).await;
        let mut slow = Vec::new();
        for _ in 0..1000 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
            slow.push(c);
        }
        for path in ["/healthz", "/readyz"] {
            let started = Instant::now();
            let answer = tokio::time::timeout(Duration::from_secs(1), get(addr, path, None)).await;
            let answer = answer.unwrap_or_else(|_| panic!("{path} not answered within 1 s"));
            assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
            assert!(started.elapsed() < Duration::from_secs(1), "{path}: {:?}", started.elapsed());
        }
    }
}
