use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::Poll;

use super::*;
use crate::core::judge::{Condition, Kind, Reason, Retry, State, Verdict};
use crate::core::model::Wait;

const K1: &str = "arn:aws:kms:us-west-2:111122223333:key/11111111-1111-1111-1111-111111111111";
const K2: &str = "arn:aws:kms:us-west-2:444455556666:key/22222222-2222-2222-2222-222222222222";

fn cfg(extra: &str) -> Desired {
    config_text::parse(
        &format!(
            "version: 1\naccounts:\n  - {{id: \"444455556666\", roleArn: arn:aws:iam::444455556666:role/{extra}}}\nbindings:\n  - {{asg: a, account: \"111122223333\", key: {K1}}}\n  - {{asg: b, account: \"111122223333\", key: {K2}}}\n"
        ),
        "t",
    )
    .unwrap()
}

#[test]
fn only_keys_of_changed_bindings_are_requeued() {
    let old = cfg("r");
    assert!(changed_keys(&old, &old).is_empty());
    let mut new = old.clone();
    new.bindings[0].slr_suffix = Some("CMK".into());
    assert_eq!(changed_keys(&old, &new), BTreeSet::from([KeyArn::parse(K1).unwrap()]));
}

#[test]
fn a_changed_account_role_requeues_the_keys_that_touch_it() {
    assert_eq!(changed_keys(&cfg("r"), &cfg("other")), BTreeSet::from([KeyArn::parse(K2).unwrap()]));
}

#[test]
fn with_pruning_on_a_key_that_lost_a_binding_is_requeued_and_a_new_way_of_pruning_requeues_all() {
    let old = cfg("r");
    let mut new = old.clone();
    new.bindings.remove(1);
    assert!(changed_keys(&old, &new).is_empty(), "pruning off: nothing to do for a removal");
    new.operator.prune = true;
    let mut was = old.clone();
    was.operator.prune = true;
    assert_eq!(changed_keys(&was, &new), BTreeSet::from([KeyArn::parse(K2).unwrap()]));
    // Turned on, confirmed, or a hold lifted: every key of the new config.
    let all = BTreeSet::from([KeyArn::parse(K1).unwrap(), KeyArn::parse(K2).unwrap()]);
    let mut on = old.clone();
    on.operator.prune = true;
    assert_eq!(changed_keys(&old, &on), all);
    let mut held = on.clone();
    held.operator.prune_held = Some("held".into());
    assert_eq!(changed_keys(&held, &on), all);
}

// The loop on a paused clock, with a reconciler whose passes take time and whose
// connection may fail: it must wake only for work it can start.

/// A pass's groups, when it started and when it ended.
type Span = (Vec<String>, Instant, Instant);

/// Passes that take `pass_time`; connections that fail the first `connect_failures`
/// times; every pass judges its bindings `fail` when it is set, else ready.
struct Slow {
    pass_time: Duration,
    connect_failures: AtomicU32,
    connects: Arc<AtomicU32>,
    passes: Arc<AtomicU32>,
    fail: Option<Verdict>,
    /// Fail only full passes.
    fail_full_only: bool,
    /// The groups of each pass, in the order the passes started.
    groups: Arc<std::sync::Mutex<Vec<Vec<String>>>>,
    /// A pass that covers this group takes this long instead.
    slow_group: Option<(&'static str, Duration)>,
    /// Each pass's groups, start and end.
    spans: Arc<std::sync::Mutex<Vec<Span>>>,
    /// Passes in flight now, and the most at once.
    in_flight: Arc<(AtomicU32, AtomicU32)>,
    /// A group whose launches the pass finds failing over KMS although its permissions
    /// are in place: its binding is judged failed, to be looked at again at the resync.
    launches_failing: Option<&'static str>,
    /// Each pass's depth, in the order the passes started.
    depths: Arc<std::sync::Mutex<Vec<Depth>>>,
    /// A quick pass reads no launches, as the real one does: a binding whose launches were
    /// never read waits for a full pass.
    launches_unread_when_quick: bool,
}

impl Slow {
    fn new(pass_time: Duration, connect_failures: u32) -> Self {
        Self {
            pass_time,
            connect_failures: AtomicU32::new(connect_failures),
            connects: Arc::default(),
            passes: Arc::default(),
            fail: None,
            fail_full_only: false,
            groups: Arc::default(),
            slow_group: None,
            spans: Arc::default(),
            in_flight: Arc::default(),
            launches_failing: None,
            depths: Arc::default(),
            launches_unread_when_quick: false,
        }
    }
}

impl Reconciler for Slow {
    type Client = ();

    fn connect(&self, _region: String) -> impl Future<Output = Result<(), String>> + Send + 'static {
        self.connects.fetch_add(1, Ordering::SeqCst);
        let refuse =
            self.connect_failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        async move {
            if refuse {
                Err("connection refused".to_owned())
            } else {
                Ok(())
            }
        }
    }

    fn reconcile(
        &self,
        _client: Arc<()>,
        desired: Desired,
        depth: Depth,
        prior: crate::shell::reconcile::Prior,
    ) -> impl Future<Output = Outcome> + Send + 'static {
        let prior = prior.judged;
        self.passes.fetch_add(1, Ordering::SeqCst);
        let groups: Vec<String> = desired.bindings.iter().map(|b| b.asg.name.clone()).collect();
        self.groups.lock().unwrap().push(groups.clone());
        self.depths.lock().unwrap().push(depth);
        let pass_time = match self.slow_group {
            Some((g, t)) if groups.iter().any(|x| x == g) => t,
            _ => self.pass_time,
        };
        let fail = self.fail.clone().filter(|_| !self.fail_full_only || depth == Depth::Full);
        let (spans, in_flight, failing) = (self.spans.clone(), self.in_flight.clone(), self.launches_failing);
        let unread = self.launches_unread_when_quick && depth == Depth::Quick;
        async move {
            let start = Instant::now();
            let now = in_flight.0.fetch_add(1, Ordering::SeqCst) + 1;
            in_flight.1.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(pass_time).await;
            in_flight.0.fetch_sub(1, Ordering::SeqCst);
            spans.lock().unwrap().push((groups, start, Instant::now()));
            let mut out = Outcome::default();
            for b in desired.bindings {
                let id = b.id();
                // As the judgement says of launches a quick pass did not read: the last
                // ones read, or, never read, owed.
                let read = !unread || prior.get(&id).is_some_and(|p| !p.has(Kind::LaunchesHealthy, Reason::NotRead));
                let verdict = match (&fail, failing == Some(b.asg.name.as_str()), read) {
                    (Some(v), _, _) => v.clone(),
                    (None, true, _) => {
                        Verdict::Failed { failure: Failure::terminal("launch failed"), retry: Retry::Resync }
                    }
                    (None, false, false) => Verdict::Waiting { wait: Wait::Launches, message: "unread".into() },
                    (None, false, true) => Verdict::Ready,
                };
                let launches = match read {
                    true => (State::True, Reason::NoRecentLaunch),
                    false => (State::Unknown, Reason::NotRead),
                };
                out.judged.push(judged(id, verdict, launches));
            }
            out
        }
    }
}

/// A binding judged `verdict`, with its launches as given.
fn judged(binding: BindingId, verdict: Verdict, (status, reason): (State, Reason)) -> Judged {
    let condition = Condition { kind: Kind::LaunchesHealthy, status, reason, message: "".into(), since: 0 };
    Judged { binding, selector: None, conditions: vec![condition], verdict }
}

/// A verdict of failure, of `class`.
fn failed(class: ErrorClass) -> Verdict {
    Verdict::Failed { failure: Failure { class, message: "x".into() }, retry: Retry::Backoff }
}

struct Fixture {
    dir: PathBuf,
    config: PathBuf,
}

impl Fixture {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("acmk-daemon-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.yaml");
        std::fs::write(&config, Self::text(1)).unwrap();
        Fixture { dir, config }
    }

    /// A config with `n` bindings, each on a key of its own.
    fn text(n: usize) -> String {
        let mut s = "version: 1\nbindings:\n".to_owned();
        for i in 0..n {
            s.push_str(&format!(
                "  - {{asg: g{i}, account: \"111122223333\", key: arn:aws:kms:us-west-2:111122223333:key/{i:08}-1111-1111-1111-111111111111}}\n"
            ));
        }
        s
    }

    fn settings(&self, resync: Duration) -> Settings {
        Settings::new(self.config.clone(), "127.0.0.1:0".parse().unwrap(), resync)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `text` to the config at `after` of (virtual) time.
fn write_at(path: &Path, after: Duration, text: impl Into<String>) -> impl Future<Output = ()> {
    let (path, text) = (path.to_owned(), text.into());
    async move {
        tokio::time::sleep(after).await;
        std::fs::write(&path, text).unwrap();
    }
}

/// Resolves after `after` of (virtual) time, or, if the loop spins and time stands still,
/// once it has been polled `max_polls` times. The loop polls it once a turn.
fn stop_after(after: Duration, max_polls: u64) -> (impl Future<Output = ()>, Arc<AtomicU64>) {
    let polls = Arc::new(AtomicU64::new(0));
    let counter = polls.clone();
    let mut sleep = Box::pin(tokio::time::sleep(after));
    let fut = std::future::poll_fn(move |cx| {
        if counter.fetch_add(1, Ordering::SeqCst) + 1 >= max_polls {
            return Poll::Ready(());
        }
        sleep.as_mut().poll(cx)
    });
    (fut, polls)
}

#[tokio::test(start_paused = true)]
async fn a_key_due_while_a_pass_runs_does_not_wake_the_loop() {
    let f = Fixture::new("busy");
    let slow = Slow::new(Duration::from_secs(60), 0);
    let passes = slow.passes.clone();
    let started = Instant::now();
    let (stop, _) = stop_after(Duration::from_secs(90), 100_000);
    // Ten seconds into the first (sixty-second) pass, a new binding falls due.
    let edit = write_at(&f.config, Duration::from_secs(10), Fixture::text(2));
    let (report, ()) = tokio::join!(run_with(f.settings(Duration::from_secs(3600)), slow, Arc::default(), stop), edit);
    let report = report.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(90), "the loop spun: {} turns in {elapsed:?}", report.turns);
    // About one turn a second for the file check, a few for the edit, the end of the
    // first pass and the start of the second.
    assert!(report.turns <= 120, "{} turns in {elapsed:?}", report.turns);
    assert_eq!(passes.load(Ordering::SeqCst), 2, "the edit's key ran in a pass of its own");
}

#[tokio::test(start_paused = true)]
async fn keys_due_while_aws_is_unreachable_do_not_wake_the_loop() {
    let f = Fixture::new("down");
    std::fs::write(&f.config, Fixture::text(50)).unwrap();
    // AWS answers only on the sixth attempt.
    let slow = Slow::new(Duration::from_secs(1), 5);
    let (connects, passes) = (slow.connects.clone(), slow.passes.clone());
    let started = Instant::now();
    let (stop, _) = stop_after(Duration::from_secs(120), 100_000);
    let report = run_with(f.settings(Duration::from_secs(3600)), slow, Arc::default(), stop).await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(120), "the loop spun: {} turns in {elapsed:?}", report.turns);
    assert!(report.turns <= 160, "{} turns in {elapsed:?}", report.turns);
    assert_eq!(connects.load(Ordering::SeqCst), 6, "retried with backoff until it answered");
    assert_eq!(passes.load(Ordering::SeqCst), 1, "one pass for all fifty keys once connected");
}

#[tokio::test(start_paused = true)]
async fn failing_keys_are_retried_by_backoff_not_by_spinning() {
    let f = Fixture::new("failing");
    let mut slow = Slow::new(Duration::from_millis(100), 0);
    slow.fail = Some(failed(ErrorClass::Retryable));
    let passes = slow.passes.clone();
    let started = Instant::now();
    let (stop, _) = stop_after(Duration::from_secs(120), 100_000);
    let report = run_with(f.settings(Duration::from_secs(3600)), slow, Arc::default(), stop).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(120), "the loop spun: {} turns", report.turns);
    // Backoff 2 s doubling (halved at most by jitter): at most about seven retries in two minutes.
    let n = passes.load(Ordering::SeqCst);
    assert!((4..=9).contains(&n), "{n} passes");
    assert!(report.turns <= 160, "{} turns", report.turns);
}

#[tokio::test(start_paused = true)]
async fn keys_awaiting_their_owner_are_checked_on_the_handoff_interval_not_backed_off() {
    let f = Fixture::new("awaiting");
    let mut slow = Slow::new(Duration::from_millis(100), 0);
    slow.fail = Some(Verdict::Waiting { wait: Wait::KeyOwner, message: "x".into() });
    let passes = slow.passes.clone();
    let mut settings = f.settings(Duration::from_secs(3600));
    settings.handoff_recheck = Duration::from_secs(10);
    let metrics = Arc::new(Metrics::new());
    let (stop, _) = stop_after(Duration::from_secs(120), 100_000);
    let report = run_with(settings, slow, metrics.clone(), stop).await.unwrap();
    // One pass at start, then one every 10 s (plus the pass's 100 ms): not a backoff that
    // grows (which would give at most about nine), nor a spin.
    let n = passes.load(Ordering::SeqCst);
    assert!((11..=13).contains(&n), "{n} passes");
    assert!(report.turns <= 200, "{} turns", report.turns);
    let text = metrics.encode();
    assert!(!text.contains("class=\"awaiting_owner\""), "waiting is no error: {text}");
    assert!(text.contains("asg_cmk_operator_reconcile_passes_total{result=\"success\"}"), "{text}");
}

/// A config of groups in one account, each with its keys (by number).
fn bindings_text(groups: &[(&str, &[u32])]) -> String {
    let mut s = "version: 1\nbindings:\n".to_owned();
    for (g, keys) in groups {
        s.push_str(&format!("  - asg: {g}\n    account: \"111122223333\"\n    keys:\n"));
        for k in *keys {
            s.push_str(&format!("      - arn:aws:kms:us-west-2:111122223333:key/{k:08}-1111-1111-1111-111111111111\n"));
        }
    }
    s
}

#[tokio::test(start_paused = true)]
async fn a_pass_over_a_key_covers_every_key_its_groups_use() {
    // web uses keys 1 and 2; api uses key 3. An edit that touches key 1 (api2 joins it)
    // brings key 2 along, for web's switch must see both; key 3 stays out.
    let f = Fixture::new("units");
    std::fs::write(&f.config, bindings_text(&[("web", &[1, 2]), ("api", &[3])])).unwrap();
    let slow = Slow::new(Duration::from_secs(1), 0);
    let groups = slow.groups.clone();
    let (stop, _) = stop_after(Duration::from_secs(20), 100_000);
    let edit =
        write_at(&f.config, Duration::from_secs(5), bindings_text(&[("web", &[1, 2]), ("api", &[3]), ("api2", &[1])]));
    let (report, ()) = tokio::join!(run_with(f.settings(Duration::from_secs(3600)), slow, Arc::default(), stop), edit);
    report.unwrap();
    let groups = groups.lock().unwrap().clone();
    assert_eq!(groups.len(), 2, "{groups:?}");
    let mut edit_pass = groups[1].clone();
    edit_pass.sort();
    assert_eq!(edit_pass, ["api2", "web", "web"], "key 1's unit: both of web's keys, not api's");
}

fn gauge(m: &Metrics, state: &str) -> i64 {
    m.bindings.get_or_create(&metrics::StateLabel { state: state.into() }).get()
}

#[tokio::test(start_paused = true)]
async fn a_pass_speaks_only_for_bindings_unchanged_since_it_began() {
    // The first pass (60 s) starts from the config with g0 on key 0. Ten seconds in, g0's
    // role suffix changes: the first pass's "converged" is about the old binding, and must
    // not mark the new one converged.
    let f = Fixture::new("generation");
    let slow = Slow::new(Duration::from_secs(60), 0);
    let metrics = Arc::new(Metrics::new());
    let (stop, _) = stop_after(Duration::from_secs(100), 100_000);
    let probe = {
        let (path, metrics) = (f.config.clone(), metrics.clone());
        async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            std::fs::write(&path, Fixture::text(1).replace("}\n", ", serviceLinkedRoleSuffix: CMK}\n")).unwrap();
            // The first pass ends at 60 s; the second, for the edit, at 120 s.
            tokio::time::sleep(Duration::from_secs(55)).await;
            (gauge(&metrics, "ready"), gauge(&metrics, "pending"))
        }
    };
    let (report, seen) =
        tokio::join!(run_with(f.settings(Duration::from_secs(3600)), slow, metrics.clone(), stop), probe);
    report.unwrap();
    assert_eq!(seen, (0, 1), "the edited binding stays pending until a pass of its own");
}

#[tokio::test(start_paused = true)]
async fn a_key_removed_during_a_failing_pass_is_not_retried() {
    let f = Fixture::new("removed");
    std::fs::write(&f.config, Fixture::text(2)).unwrap();
    let mut slow = Slow::new(Duration::from_secs(30), 0);
    slow.fail = Some(failed(ErrorClass::Retryable));
    let groups = slow.groups.clone();
    let (stop, _) = stop_after(Duration::from_secs(120), 100_000);
    let edit = write_at(&f.config, Duration::from_secs(10), Fixture::text(1));
    let (report, ()) = tokio::join!(run_with(f.settings(Duration::from_secs(3600)), slow, Arc::default(), stop), edit);
    report.unwrap();
    let groups = groups.lock().unwrap().clone();
    assert!(groups.len() >= 2, "g0 was retried: {groups:?}");
    assert!(groups[1..].iter().all(|g| g == &["g0"]), "g1 left the config mid-pass: {groups:?}");
}

#[tokio::test(start_paused = true)]
async fn the_resync_timestamp_moves_only_for_a_full_pass_without_transient_failures() {
    let f = Fixture::new("resync");
    for (fail, moves) in [(None, true), (Some(ErrorClass::Retryable), false), (Some(ErrorClass::Terminal), true)] {
        let mut slow = Slow::new(Duration::from_millis(100), 0);
        slow.fail = fail.map(failed);
        let metrics = Arc::new(Metrics::new());
        let (stop, _) = stop_after(Duration::from_secs(5), 100_000);
        run_with(f.settings(Duration::from_secs(3600)), slow, metrics.clone(), stop).await.unwrap();
        assert_eq!(metrics.last_resync.get() > 0, moves, "fail={fail:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_unit_holds_up_no_other() {
    // g0's pass takes a minute (a role IAM has not propagated, a throttled account); g1,
    // added five seconds in on another key, converges in its own pass meanwhile.
    let f = Fixture::new("slow-unit");
    let mut slow = Slow::new(Duration::from_millis(300), 0);
    slow.slow_group = Some(("g0", Duration::from_secs(60)));
    let spans = slow.spans.clone();
    let started = Instant::now();
    let (stop, _) = stop_after(Duration::from_secs(70), 100_000);
    let edit = write_at(&f.config, Duration::from_secs(5), Fixture::text(2));
    let (report, ()) = tokio::join!(run_with(f.settings(Duration::from_secs(3600)), slow, Arc::default(), stop), edit);
    report.unwrap();
    let spans = spans.lock().unwrap().clone();
    let g1 = spans.iter().find(|(g, _, _)| g == &["g1"]).expect("a pass for g1 alone");
    assert!(g1.2 - started < Duration::from_secs(7), "g1 converged {:?} in, behind g0's pass", g1.2 - started);
    let g0 = spans.iter().find(|(g, _, _)| g == &["g0"]).expect("g0's pass");
    assert!(g0.2 - started >= Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn a_unit_is_never_in_two_passes_at_once() {
    // g0's binding changes twice while its 30 s pass runs: the next pass over it starts
    // only once the first has ended, and the two edits make one pass, not two.
    let f = Fixture::new("one-at-a-time");
    let slow = Slow::new(Duration::from_secs(30), 0);
    let spans = slow.spans.clone();
    let (stop, _) = stop_after(Duration::from_secs(100), 100_000);
    let edit = {
        let path = f.config.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            std::fs::write(&path, Fixture::text(1).replace("}\n", ", serviceLinkedRoleSuffix: A}\n")).unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            std::fs::write(&path, Fixture::text(1).replace("}\n", ", serviceLinkedRoleSuffix: B}\n")).unwrap();
        }
    };
    let (report, ()) = tokio::join!(run_with(f.settings(Duration::from_secs(3600)), slow, Arc::default(), stop), edit);
    report.unwrap();
    let spans = spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 2, "the start, then one pass for both edits: {spans:?}");
    assert!(spans[1].1 >= spans[0].2, "the second pass began before the first ended: {spans:?}");
}

#[tokio::test(start_paused = true)]
async fn no_more_than_the_bound_of_passes_run_at_once() {
    // Ten keys added one second apart, each pass taking a minute: passes overlap, up to
    // the bound and no further.
    let f = Fixture::new("bound");
    let slow = Slow::new(Duration::from_secs(60), 0);
    let (in_flight, passes) = (slow.in_flight.clone(), slow.passes.clone());
    let (stop, _) = stop_after(Duration::from_secs(200), 100_000);
    let edits = {
        let path = f.config.clone();
        async move {
            for n in 2..=10 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                std::fs::write(&path, Fixture::text(n)).unwrap();
            }
        }
    };
    let (report, ()) = tokio::join!(run_with(f.settings(Duration::from_secs(3600)), slow, Arc::default(), stop), edits);
    report.unwrap();
    assert_eq!(in_flight.1.load(Ordering::SeqCst) as usize, PASS_CONCURRENCY);
    assert!(passes.load(Ordering::SeqCst) >= 5, "every key had its pass");
}

#[tokio::test(start_paused = true)]
async fn a_quick_pass_after_a_troubled_resync_does_not_count_as_a_resync() {
    // The start's full pass fails for a transient reason; the retry (a quick pass)
    // succeeds. The resync timestamp stays unset until a full pass succeeds.
    let f = Fixture::new("quick-after-resync");
    let mut slow = Slow::new(Duration::from_millis(100), 0);
    (slow.fail, slow.fail_full_only) = (Some(failed(ErrorClass::Retryable)), true);
    let passes = slow.passes.clone();
    let metrics = Arc::new(Metrics::new());
    let (stop, _) = stop_after(Duration::from_secs(10), 100_000);
    run_with(f.settings(Duration::from_secs(3600)), slow, metrics.clone(), stop).await.unwrap();
    assert!(passes.load(Ordering::SeqCst) >= 2, "the failed key was retried");
    assert_eq!(metrics.last_resync.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_bindings_gauge_gives_the_same_answer_as_status() {
    // g1's pass finds nothing to change, but its launches fail: it is not ready, and the
    // gauge counts it as /status does, failed.
    let f = Fixture::new("one-answer");
    std::fs::write(&f.config, Fixture::text(2)).unwrap();
    let mut slow = Slow::new(Duration::from_secs(1), 0);
    slow.launches_failing = Some("g1");
    let metrics = Arc::new(Metrics::new());
    let (stop, _) = stop_after(Duration::from_secs(5), 100_000);
    let probe = {
        let metrics = metrics.clone();
        async move {
            // Half-way through the first (one-second) pass: the config is read, nothing is
            // reported yet.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = (gauge(&metrics, "ready"), gauge(&metrics, "pending"), gauge(&metrics, "failed"));
            tokio::time::sleep(Duration::from_millis(2500)).await;
            let after = (gauge(&metrics, "ready"), gauge(&metrics, "pending"), gauge(&metrics, "failed"));
            (before, after)
        }
    };
    let (report, (before, after)) =
        tokio::join!(run_with(f.settings(Duration::from_secs(3600)), slow, metrics.clone(), stop), probe);
    report.unwrap();
    assert_eq!(before, (0, 2, 0), "nothing reported yet: both pending");
    assert_eq!(after, (1, 0, 1), "g0 ready; g1 not ready, as /status says");
}

/// The groups of each pass while two units fail on every pass for 5 s, retried after
/// 0.2 to 0.4 s (jittered), with the given coalescing window.
async fn retry_passes(tag: &str, coalesce: Duration) -> Vec<Vec<String>> {
    let f = Fixture::new(tag);
    std::fs::write(&f.config, Fixture::text(2)).unwrap();
    let mut slow = Slow::new(Duration::from_millis(10), 0);
    slow.fail = Some(failed(ErrorClass::Retryable));
    let groups = slow.groups.clone();
    let mut settings = f.settings(Duration::from_secs(3600));
    settings.backoff = Backoff { base: Duration::from_millis(400), max: Duration::from_millis(400) };
    settings.coalesce = coalesce;
    let (stop, _) = stop_after(Duration::from_secs(5), 100_000);
    run_with(settings, slow, Arc::default(), stop).await.unwrap();
    let groups = groups.lock().unwrap().clone();
    groups
}

#[tokio::test(start_paused = true)]
async fn units_falling_due_close_together_share_one_pass() {
    // Two units that fail together are queued again at most 200 ms apart: each retry pass
    // takes both, within the 250 ms window.
    let groups = retry_passes("coalesce", Duration::from_millis(250)).await;
    assert!(groups.len() >= 5, "retried: {groups:?}");
    assert!(groups.iter().all(|g| g.len() == 2), "every pass took both units: {groups:?}");
    // Without the window, the same retries run apart.
    let groups = retry_passes("apart", Duration::ZERO).await;
    assert!(groups.iter().any(|g| g.len() == 1), "jitter splits them: {groups:?}");
}

#[tokio::test(start_paused = true)]
async fn an_onboarded_group_is_switched_by_a_quick_pass_and_its_launches_read_right_after() {
    // g1 is appended at 10 s. Its pass is quick, so the switch does not wait for launch
    // reads; it leaves g1's launches unread, and one full-depth pass over its key follows
    // at once. That one reads them, and nothing more is owed.
    let f = Fixture::new("launches-owed");
    let mut slow = Slow::new(Duration::from_millis(50), 0);
    slow.launches_unread_when_quick = true;
    let (groups, depths) = (slow.groups.clone(), slow.depths.clone());
    let (stop, _) = stop_after(Duration::from_secs(30), 100_000);
    let edit = write_at(&f.config, Duration::from_secs(10), Fixture::text(2));
    let (report, ()) = tokio::join!(run_with(f.settings(Duration::from_secs(3600)), slow, Arc::default(), stop), edit);
    report.unwrap();
    let passes: Vec<(Vec<String>, Depth)> =
        groups.lock().unwrap().iter().cloned().zip(depths.lock().unwrap().iter().copied()).collect();
    let g = |n: &str| vec![n.to_owned()];
    assert_eq!(
        passes,
        [(g("g0"), Depth::Full), (g("g1"), Depth::Quick), (g("g1"), Depth::Full)],
        "start, the edit's quick pass, its launches"
    );
}
