//! The paced clients, as the operator configures them, against a quota they are not
//! told, on tokio's paused clock: a stand-in HTTP client answers Auto Scaling's
//! `Throttling` when its token bucket is empty (or at random), and the SDK's time source
//! and sleeps both follow the paused clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_autoscaling::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_async::rt::sleep::{SharedAsyncSleep, TokioSleep};
use aws_smithy_async::time::TimeSource;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use tokio::time::Instant;

use super::*;

/// Wall-clock time that moves with tokio's (paused) clock.
#[derive(Debug)]
struct TokioTime {
    wall: SystemTime,
    start: Instant,
}

impl TimeSource for TokioTime {
    fn now(&self) -> SystemTime {
        self.wall + self.start.elapsed()
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    ok: u32,
    throttled: u32,
    /// A linear congruential generator's state, for the random throttling.
    draws: u64,
}

/// An Auto Scaling endpoint with a token-bucket quota of `rate` a second (burst `rate`),
/// answering after `latency`.
#[derive(Debug, Clone)]
struct Quota {
    rate: f64,
    /// Also throttle this share of calls, whatever the rate (other tools' calls against
    /// the same quota), drawn from a fixed sequence.
    random: f64,
    latency: Duration,
    bucket: Arc<Mutex<Bucket>>,
}

impl Quota {
    fn new(rate: f64) -> Self {
        let bucket = Bucket { tokens: rate, last: Instant::now(), ok: 0, throttled: 0, draws: 7 };
        Self { rate, random: 0.0, latency: Duration::from_millis(20), bucket: Arc::new(Mutex::new(bucket)) }
    }

    fn counts(&self) -> (u32, u32) {
        let b = self.bucket.lock().unwrap();
        (b.ok, b.throttled)
    }
}

impl HttpConnector for Quota {
    fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
        let this = self.clone();
        HttpConnectorFuture::new(async move {
            tokio::time::sleep(this.latency / 2).await; // the request travels
            let allowed = {
                let mut b = this.bucket.lock().unwrap();
                let now = Instant::now();
                b.tokens = (b.tokens + (now - b.last).as_secs_f64() * this.rate).min(this.rate);
                b.last = now;
                b.draws = b.draws.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let unlucky = ((b.draws >> 11) as f64 / (1u64 << 53) as f64) < this.random;
                let allowed = b.tokens >= 1.0 && !unlucky;
                if allowed {
                    b.tokens -= 1.0;
                    b.ok += 1;
                } else {
                    b.throttled += 1;
                }
                allowed
            };
            tokio::time::sleep(this.latency / 2).await; // the answer travels
            let (status, body) = if allowed {
                (200, "<UpdateAutoScalingGroupResponse xmlns=\"http://autoscaling.amazonaws.com/doc/2011-01-01/\"><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></UpdateAutoScalingGroupResponse>")
            } else {
                (400, "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>r</RequestId></ErrorResponse>")
            };
            Ok(HttpResponse::new(status.try_into().unwrap(), SdkBody::from(body)))
        })
    }
}

impl HttpClient for Quota {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

/// An Auto Scaling client configured as [`crate::shell::aws::Account::autoscaling`] configures
/// it (standard retries, its own partition, every attempt paced), talking to `quota`.
fn client(quota: &Quota, account: &str, region: &str) -> (aws_sdk_autoscaling::Client, Arc<Paces>) {
    let account = AccountId::parse(account).unwrap();
    let paces = Arc::new(Paces::default());
    let conf = aws_sdk_autoscaling::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "test"))
        .http_client(PacedClient::new(SharedHttpClient::new(quota.clone()), paces.clone()))
        .time_source(TokioTime { wall: SystemTime::now(), start: Instant::now() })
        .sleep_impl(SharedAsyncSleep::new(TokioSleep::new()))
        .retry_config(retry_config())
        .retry_partition(partition("autoscaling", &account, region))
        .build();
    (aws_sdk_autoscaling::Client::from_conf(conf), paces)
}

/// `n` group updates, eight in flight (the operator's write concurrency): how long they
/// took, and how many failed for good.
async fn updates(client: aws_sdk_autoscaling::Client, n: usize) -> (Duration, usize) {
    let start = Instant::now();
    let failed = Arc::new(Mutex::new(0));
    let f = failed.clone();
    crate::shell::bounded::for_each(
        0..n,
        8,
        |i| {
            let c = client.clone();
            async move { c.update_auto_scaling_group().auto_scaling_group_name(format!("asg-{i}")).send().await.is_ok() }
        },
        |r| {
            if !matches!(r, Ok(true)) {
                *f.lock().unwrap() += 1;
            }
        },
    )
    .await;
    let failed = *failed.lock().unwrap();
    (start.elapsed(), failed)
}

#[tokio::test(start_paused = true)]
async fn paced_calls_run_close_to_an_undisclosed_quota_and_waste_little() {
    for rate in [15.0, 150.0] {
        let quota = Quota::new(rate);
        let n = 300;
        let (c, pace) = client(&quota, "100000000001", "us-west-2");
        let (took, failed) = updates(c, n).await;
        let (ok, throttled) = quota.counts();
        let floor = n as f64 / rate;
        let ratio = took.as_secs_f64() / floor;
        let share = f64::from(throttled) / f64::from(ok + throttled);
        assert_eq!((failed, ok), (0, n as u32), "every update succeeds, once");
        assert!(ratio <= 1.3, "{rate}/s: {took:?} is {ratio:.2} x the floor of {floor:.1} s");
        assert!(share <= 0.10, "{rate}/s: {throttled} of {} throttled", ok + throttled);
        assert!(pace.writes.rate().is_some(), "the quota was found");
        assert_eq!(pace.reads.rate(), None, "reads were never throttled");
    }
}

#[tokio::test(start_paused = true)]
async fn throttling_that_is_not_ours_slows_the_calls_without_stalling_them() {
    // A fifth of all calls throttled whatever the rate, and no quota of ours to find.
    let mut quota = Quota::new(1_000_000.0);
    quota.random = 0.2;
    let (c, pace) = client(&quota, "100000000002", "us-west-2");
    let (took, failed) = updates(c, 100).await;
    assert_eq!(failed, 0);
    // At the floor of the SDK's adaptive mode (a call every two seconds, and five tokens
    // a retry) these 100 calls took minutes; here they keep going at several a second.
    assert!(took < Duration::from_secs(40), "100 updates took {took:?} at rate {:?}", pace.writes.rate());
}

#[tokio::test(start_paused = true)]
async fn a_throttled_account_or_region_does_not_slow_another() {
    let slow = Quota::new(5.0);
    let fast = Quota::new(1000.0);
    let other_region = Quota::new(1000.0);
    let account = "200000000001";
    let throttled = tokio::spawn(updates(client(&slow, account, "us-west-2").0, 100));
    // Let the slow partition be throttled and its pace set first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(slow.counts().1 > 0, "the slow account was throttled");
    let (took, failed) = updates(client(&fast, "200000000002", "us-west-2").0, 200).await;
    assert_eq!(failed, 0);
    assert!(took < Duration::from_secs(1), "another account: 200 updates took {took:?}");
    let (took, failed) = updates(client(&other_region, account, "eu-west-1").0, 200).await;
    assert_eq!(failed, 0);
    assert!(took < Duration::from_secs(1), "the same account in another region: 200 updates took {took:?}");
    assert!(!throttled.is_finished(), "the throttled partition is still at 5/s");
    let (took, failed) = throttled.await.unwrap();
    assert_eq!(failed, 0, "throttled calls are retried until they succeed");
    assert!(took >= Duration::from_secs(15), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn the_rate_is_unlimited_until_throttled_cut_once_a_round_and_grown_back() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut p = PaceState::new(t0);
    for _ in 0..100 {
        assert_eq!(p.admit(t0), Ok(()), "no limit before the first throttle");
    }
    // 50 answers let through in the last second, then a throttle: 0.7 of 50.
    for i in 0..50 {
        p.observe(ms(500 + i), t0, false);
    }
    p.observe(ms(600), t0, true);
    assert_eq!(p.rate(), Some(35.0));
    // The throttles of attempts sent before the cut change nothing.
    for n in [610, 700, 1500] {
        p.observe(ms(n), ms(599), true);
    }
    assert_eq!(p.rate(), Some(35.0));
    // Tokens: none right after the cut, then 35 a second.
    assert_eq!(p.admit(ms(600)).unwrap_err(), Duration::from_secs_f64(1.0 / 35.0));
    assert!(p.admit(ms(700)).is_ok() && p.admit(ms(700)).is_ok() && p.admit(ms(700)).is_ok());
    assert!(p.admit(ms(700)).is_err(), "3.5 tokens in 100 ms");
    // Successes grow it back to 50 k = cbrt(50 * 0.3 / 0.4) s after the cut, then beyond.
    let k = (50.0f64 * 0.3 / 0.4).cbrt();
    let after = |s: f64| ms(600) + Duration::from_secs_f64(s);
    p.observe(after(k / 2.0), ms(650), false);
    let halfway = p.rate().unwrap();
    assert!(halfway > 35.0 && halfway < 50.0, "{halfway}");
    p.observe(after(k), ms(650), false);
    assert!((p.rate().unwrap() - 50.0).abs() < 1e-9);
    p.observe(after(k + 2.0), ms(650), false);
    let probing = p.rate().unwrap();
    assert!(probing > 53.0, "probing above: {probing}");
    // An attempt sent after the cut is throttled, a second or more after it: cut again,
    // from the rate calls were sent at in the last second (none: the floor of 1).
    let t = after(k + 2.5);
    p.observe(t, after(k + 2.4), true);
    assert_eq!(p.rate(), Some(FLOOR));
    // Within a second of that cut, even an attempt sent after it changes nothing.
    p.observe(t + Duration::from_millis(500), t + Duration::from_millis(100), true);
    assert_eq!(p.rate(), Some(FLOOR));
}

#[test]
fn the_pacer_and_the_classifier_agree_on_what_is_throttling() {
    use crate::core::model::ErrorClass;
    // Every code either list has named: each is throttling to both, or to neither.
    let codes = [
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "LimitExceededException",
    ];
    for code in codes {
        let body = format!("<ErrorResponse><Error><Code>{code}</Code></Error></ErrorResponse>");
        let paced_query = is_throttling(&HttpResponse::new(400.try_into().unwrap(), SdkBody::empty()), body.as_bytes());
        let mut json = HttpResponse::new(400.try_into().unwrap(), SdkBody::from("{}"));
        json.headers_mut().insert("x-amzn-ErrorType", format!("{code}:http://internal.amazon.com/"));
        let paced_json = is_throttling(&json, b"{}");
        let classified = super::super::classify_message(Some(code), Some(400)) == ErrorClass::Throttled;
        assert_eq!(paced_query, classified, "{code}: pacer (query) {paced_query}, classifier {classified}");
        assert_eq!(paced_json, classified, "{code}: pacer (JSON) {paced_json}, classifier {classified}");
    }
    // A resource quota is not throttling: waiting does not cure it.
    assert_eq!(super::super::classify_message(Some("LimitExceededException"), Some(400)), ErrorClass::Terminal);
}

#[tokio::test(start_paused = true)]
async fn retire_grant_has_a_ceiling_of_its_own_under_its_own_quota() {
    let limits = KmsLimits::new(crate::core::model::desired::DEFAULT_CREATE_GRANT_RATE);
    // CreateGrant's ceiling is spent: a RetireGrant still goes at once.
    let mut creates = Vec::new();
    for _ in 0..crate::core::model::desired::DEFAULT_CREATE_GRANT_RATE {
        creates.push(limits.create_grant.acquire().await);
    }
    let start = Instant::now();
    let mut retires = Vec::new();
    for _ in 0..24 {
        retires.push(limits.retire_grant.acquire().await);
    }
    assert_eq!(Instant::now(), start, "24 RetireGrant calls go at once whatever CreateGrant does");
    // And RetireGrant's own 30/s quota keeps the 25th waiting while the 24 are in flight.
    let more = tokio::time::timeout(Duration::from_secs(2), limits.retire_grant.acquire()).await;
    assert!(more.is_err(), "a 25th RetireGrant went out within the window");
    drop(creates);
}

#[test]
fn reads_and_writes_are_told_apart_in_both_protocols() {
    let query = |body: &str| HttpRequest::new(SdkBody::from(body.to_owned()));
    assert!(is_read(&query("Action=DescribeImages&Version=2016-11-15")), "EC2 (query)");
    assert!(is_read(&query("Action=ListRoles&Version=2010-05-08")), "IAM (query)");
    assert!(!is_read(&query("Action=CopyImage&Version=2016-11-15")));
    let json = |target: &str| {
        let mut r = HttpRequest::new(SdkBody::from("{}"));
        r.headers_mut().insert("X-Amz-Target", target.to_owned());
        r
    };
    assert!(is_read(&json("TrentService.GetKeyPolicy")), "KMS (JSON)");
    assert!(is_read(&json("TrentService.ListGrants")));
    assert!(!is_read(&json("TrentService.PutKeyPolicy")));
    assert!(!is_read(&json("TrentService.CreateGrant")));
}
