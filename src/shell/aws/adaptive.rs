//! How fast the operator calls AWS: as fast as AWS allows, and no faster.
//!
//! Auto Scaling and IAM publish no request quotas, and theirs are per account and shared
//! with every other tool in it; EC2's and KMS's are documented, but shared the same way
//! (KMS's with AWS's own calls on the account's behalf). So each (service, account,
//! region) gets a [`Pace`]: a
//! token bucket whose rate follows AWS's throttling answers. Every HTTP attempt of that
//! client, SDK retries included, waits for a token and reports whether it was throttled
//! ([`PacedClient`] wraps the client's HTTP connector), so reads and writes share it and
//! no other account or region waits behind it.
//!
//! The rule, close to the SDKs' adaptive retry mode and to TCP CUBIC:
//! - until the first throttling answer there is no limit;
//! - on the first throttling answer the rate becomes 0.7 of what the quota let through in
//!   the last second, on later ones 0.7 of the rate calls were sent at (or of the current
//!   rate, if lower), and the bucket is emptied. Cuts come at most once a second, and
//!   throttling answers to attempts sent before the last cut are ignored: they were sent
//!   at the old rate and say nothing new (TCP reduces its window once a round trip for
//!   the same reason);
//! - without throttling the rate grows back along a cubic curve to where it was
//!   throttled, then beyond it, probing for more.
//!
//! It differs from the SDK's adaptive mode, which was measured first: that mode cuts the
//! rate on every throttling answer and makes a retry cost five tokens, so throttling that
//! does not come from our own rate (other tools' calls against the same quota, simulated
//! by the fault suite at 20% of calls) drove it down to its floor of one call every two
//! seconds, and a 40-binding fleet that converged in 12 s had not in 150 s.
//!
//! KMS's writes also keep fixed ceilings under its documented quotas ([`KmsLimits`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use aws_smithy_types::retry::RetryConfig;
use tokio::time::Instant;

use super::error::THROTTLING;
use crate::core::model::AccountId;
use crate::shell::ratelimit::RateLimiter;

pub use aws_sdk_autoscaling::config::retry::RetryPartition;

/// The rate after a throttling answer, as a share of the rate before.
const BETA: f64 = 0.7;
/// How fast the rate grows back (calls per second per second cubed).
const SCALE: f64 = 0.4;
/// What the quota let through is counted over this long.
const WINDOW: Duration = Duration::from_secs(1);
/// The lowest rate, calls per second.
const FLOOR: f64 = 1.0;

/// Attempts per call, the first included, for the paced services: a throttled attempt is
/// retried after a short backoff and a token.
pub const MAX_ATTEMPTS: u32 = 8;

/// The SDK's standard retries, with backoffs short enough not to stack on the pace, which
/// is what keeps the rate down (the SDK's own start at a second and grow to twenty).
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(5))
}

/// The SDK's retry partition (its retry quota) of `service` in `account` and `region`: by
/// default it is shared by every account's clients of a service and region.
pub fn partition(service: &str, account: &AccountId, region: &str) -> RetryPartition {
    RetryPartition::new(format!("{service}-{account}-{region}"))
}

/// The state of one [`Pace`]; pure, on whatever clock the caller reads.
#[derive(Debug)]
pub struct PaceState {
    /// None until the first throttling answer.
    rate: Option<f64>,
    tokens: f64,
    refilled: Instant,
    /// The rate the last cut was made from, and when it was made.
    cut: Option<(f64, Instant)>,
    /// When the answers of the last second that were not throttled came.
    ok: VecDeque<Instant>,
    /// When the attempts of the last second were let go.
    sent: VecDeque<Instant>,
}

impl PaceState {
    pub fn new(now: Instant) -> Self {
        Self { rate: None, tokens: 0.0, refilled: now, cut: None, ok: VecDeque::new(), sent: VecDeque::new() }
    }

    /// The current rate in calls per second; None while unlimited.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Takes a token for an attempt at `now`, or says how long to wait for one.
    pub fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        forget_before(&mut self.sent, now);
        let Some(rate) = self.rate else {
            self.sent.push_back(now);
            return Ok(());
        };
        self.tokens = (self.tokens + (now - self.refilled).as_secs_f64() * rate).min(rate.max(1.0));
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.sent.push_back(now);
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }

    /// Takes in, at `now`, the answer to an attempt sent at `sent`.
    pub fn observe(&mut self, now: Instant, sent: Instant, throttled: bool) {
        forget_before(&mut self.ok, now);
        forget_before(&mut self.sent, now);
        if throttled {
            // An attempt sent before the last cut was sent at the old rate: its answer
            // says nothing new.
            // And cuts come at most once a second, so that throttling not caused by our own
            // rate (other tools' calls against the same quota) slows us without stalling us.
            if self.cut.is_some_and(|(_, at)| sent < at || now - at < WINDOW) {
                return;
            }
            // The first cut is from what the quota let through in the last second, the
            // best guess of it; later ones from the rate calls were actually sent at.
            let from = match self.rate {
                None => self.ok.len() as f64,
                Some(r) => r.min(self.sent.len() as f64),
            }
            .max(FLOOR);
            self.cut = Some((from, now));
            self.rate = Some((from * BETA).max(FLOOR));
            // The bucket starts empty at the cut: the throttle says the quota is spent.
            self.tokens = 0.0;
            self.refilled = now;
        } else {
            self.ok.push_back(now);
            if let (Some(rate), Some((w_max, at))) = (self.rate, self.cut) {
                // CUBIC: back to w_max k seconds after the cut, then beyond.
                let k = (w_max * (1.0 - BETA) / SCALE).cbrt();
                let t = (now - at).as_secs_f64();
                let grown = (SCALE * (t - k).powi(3) + w_max).max(FLOOR);
                self.rate = Some(grown.max(rate));
            }
        }
    }
}

/// Drops the times more than a [`WINDOW`] before `now`.
fn forget_before(times: &mut VecDeque<Instant>, now: Instant) {
    while times.front().is_some_and(|t| *t + WINDOW <= now) {
        times.pop_front();
    }
}

/// One adaptive rate.
#[derive(Debug)]
pub struct Pace {
    state: Mutex<PaceState>,
}

impl Default for Pace {
    fn default() -> Self {
        Self { state: Mutex::new(PaceState::new(Instant::now())) }
    }
}

impl Pace {
    /// Waits until an attempt may be sent; returns when it was let go.
    pub async fn acquire(&self) -> Instant {
        loop {
            let now = Instant::now();
            let wait = match self.state.lock().expect("pace lock").admit(now) {
                Ok(()) => return now,
                Err(wait) => wait,
            };
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    /// Takes in the answer to the attempt let go at `sent`.
    pub fn observe(&self, sent: Instant, throttled: bool) {
        self.state.lock().expect("pace lock").observe(Instant::now(), sent, throttled);
    }

    pub fn rate(&self) -> Option<f64> {
        self.state.lock().expect("pace lock").rate()
    }
}

/// The two paces of one (service, account, region): AWS throttles each API action
/// against a quota of its own (EC2, which documents them, keeps reads and writes in
/// separate buckets), and a rate learned from cheap reads would overrun the writes'.
#[derive(Debug, Default)]
pub struct Paces {
    pub reads: Pace,
    pub writes: Pace,
}

/// An HTTP client whose every attempt is paced by its [`Paces`] and reports to them.
#[derive(Debug, Clone)]
pub struct PacedClient {
    inner: SharedHttpClient,
    paces: Arc<Paces>,
}

impl PacedClient {
    pub fn new(inner: SharedHttpClient, paces: Arc<Paces>) -> Self {
        Self { inner, paces }
    }
}

impl HttpClient for PacedClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        let inner = self.inner.http_connector(settings, components);
        SharedHttpConnector::new(PacedConnector { inner, paces: self.paces.clone() })
    }
}

#[derive(Debug)]
struct PacedConnector {
    inner: SharedHttpConnector,
    paces: Arc<Paces>,
}

/// Whether a request is a read: its action starts with Describe, Get or List. The query
/// protocols (Auto Scaling, IAM, EC2) name it in the `Action` form field, the JSON one
/// (KMS) in the `X-Amz-Target` header (`TrentService.GetKeyPolicy`).
fn is_read(request: &HttpRequest) -> bool {
    let reads = |a: &[u8]| [&b"Describe"[..], b"Get", b"List"].iter().any(|p| a.starts_with(p));
    if let Some(target) = request.headers().get("x-amz-target") {
        return target.rsplit('.').next().is_some_and(|a| reads(a.as_bytes()));
    }
    let body = request.body().bytes().unwrap_or_default();
    let action = body.split(|b| *b == b'&').find_map(|field| field.strip_prefix(b"Action="));
    action.is_some_and(reads)
}

impl HttpConnector for PacedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let inner = self.inner.clone();
        let paces = self.paces.clone();
        HttpConnectorFuture::new(async move {
            let pace = if is_read(&request) { &paces.reads } else { &paces.writes };
            let sent = pace.acquire().await;
            let mut response = inner.call(request).await?;
            let throttled = if [400, 429, 503].contains(&response.status().as_u16()) {
                // An error answer is small: read it to find its code, and hand it on whole.
                let body = response.take_body();
                let bytes = match body.bytes() {
                    Some(b) => b.to_vec(),
                    None => ByteStream::new(body).collect().await.map(|b| b.to_vec()).unwrap_or_default(),
                };
                let throttled = is_throttling(&response, &bytes);
                *response.body_mut() = SdkBody::from(bytes);
                throttled
            } else {
                false
            };
            pace.observe(sent, throttled);
            Ok(response)
        })
    }
}

/// Whether an error answer is a throttling one: its code, in the XML of the query
/// protocols (`<Code>Throttling</Code>`) or the `x-amzn-ErrorType` header of the JSON
/// ones; or HTTP 429.
fn is_throttling(response: &HttpResponse, body: &[u8]) -> bool {
    if response.status().as_u16() == 429 {
        return true;
    }
    let header = response.headers().get("x-amzn-errortype").map(|h| h.split(':').next().unwrap_or(h));
    if header.is_some_and(|code| THROTTLING.contains(&code)) {
        return true;
    }
    let text = String::from_utf8_lossy(body);
    THROTTLING.iter().any(|code| text.contains(&format!("<Code>{code}</Code>")))
}

/// The SDK's default HTTPS client (rustls with aws-lc, the proxy of the environment), as
/// `aws-smithy-runtime` builds it when a configuration names none: one client, so one
/// connection pool, for every service client made from the configuration.
pub fn default_https_client() -> SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::{tls, Builder, ConnectorBuilder};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

/// KMS write ceilings for one account and region, under the documented quotas (KMS
/// Developer Guide, "Request quotas": PutKeyPolicy 15/s, CreateGrant 50/s and RetireGrant
/// 30/s, each a quota of its own per account and region), with headroom for the other
/// tools that share them.
#[derive(Debug)]
pub struct KmsLimits {
    pub put_key_policy: RateLimiter,
    pub create_grant: RateLimiter,
    pub retire_grant: RateLimiter,
}

impl KmsLimits {
    /// CreateGrant at `create_grant_rate` (`defaults.kmsCreateGrantRate`), well under its
    /// quota, because AWS's own grants share it: every launch of a volume encrypted with a
    /// customer managed key makes one, through the group's role.
    pub fn new(create_grant_rate: u32) -> Self {
        Self {
            put_key_policy: RateLimiter::per_second(12),
            create_grant: RateLimiter::per_second(create_grant_rate),
            retire_grant: RateLimiter::per_second(24),
        }
    }
}

#[cfg(test)]
mod tests;
