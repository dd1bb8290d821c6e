//! Pure-core benchmarks: `plan()` at fleet scale, and key-policy merge.
//!
//! `cargo bench --bench core`. Sizes: 1k, 10k and 50k bindings over 10 to 1,000 keys;
//! policies of 1 to 200 statements. Time should grow about linearly with size.

use std::hint::black_box;

use asg_cmk_operator::core::model::desired::{Binding, Desired};
use asg_cmk_operator::core::model::observed::Observed;
use asg_cmk_operator::core::model::{AccountId, Asg, AsgRef, KeyArn, KeyInfo, KeyManager};
use asg_cmk_operator::core::plan::{plan, Context};
use asg_cmk_operator::core::policy::{ensure, Need, NeedKind, PolicyDocument, PrincipalIds};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const OWN: &str = "111122223333";
const OTHER: &str = "444455556666";

fn key(i: usize) -> KeyArn {
    // A third of the keys belong to the other account.
    let acct = if i.is_multiple_of(3) { OTHER } else { OWN };
    KeyArn::parse(&format!("arn:aws:kms:us-west-2:{acct}:key/{:08x}-0000-0000-0000-000000000000", i)).unwrap()
}

/// `n` bindings over `k` keys, observed fresh: every role, policy and ASG needs work.
fn fleet(n: usize, k: usize) -> (Desired, Observed, AccountId) {
    let own = AccountId::parse(OWN).unwrap();
    let mut d = Desired::default();
    d.accounts.insert(AccountId::parse(OTHER).unwrap(), "arn:aws:iam::444455556666:role/key-admin".into());
    let mut o = Observed::default();
    for i in 0..n {
        let b = Binding {
            asg: AsgRef::new(own, "us-west-2", format!("asg-{i:06}")),
            key: key(i % k),
            slr_suffix: Some(format!("S{}", i % 4).into()),
            reencrypt_from: None,
            reencrypt_parameter: None,
            origin: Default::default(),
        };
        o.roles.insert((own, b.slr().name()), Ok(None));
        o.key_policies.entry(b.key.clone()).or_insert_with(|| {
            Ok(format!(
                r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{}:root"}},"Action":"kms:*","Resource":"*"}}]}}"#,
                b.key.account()
            ))
        });
        if b.is_cross_account() {
            o.grants.insert(b.key.clone(), Ok(vec![]));
        }
        o.keys.entry(b.key.clone()).or_insert_with(|| {
            Ok(KeyInfo {
                arn: b.key.clone(),
                state: "Enabled".into(),
                spec: "SYMMETRIC_DEFAULT".into(),
                manager: KeyManager::Customer,
            })
        });
        o.asgs.insert(b.asg.clone(), Ok(Some(Asg { service_linked_role_arn: None, sources: vec![] })));
        d.bindings.push(b);
    }
    (d, o, own)
}

fn bench_plan(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan");
    g.sample_size(10);
    for (n, k) in [(1_000, 10), (1_000, 100), (10_000, 100), (10_000, 1_000), (50_000, 100), (50_000, 1_000)] {
        let (d, o, own) = fleet(n, k);
        let ctx = Context::at(0);
        let p = plan(&d, &o, &own, &ctx);
        assert!(p.stopped().next().is_none() && p.changes.len() > n, "the fixture must plan work for every binding");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new(format!("{k}_keys"), n), &n, |b, _| {
            b.iter(|| black_box(plan(black_box(&d), black_box(&o), &own, &ctx)))
        });
    }
    g.finish();
}

/// A policy of `statements` small statements (200 of them stay under KMS's 32 KB), every
/// fourth with a condition, none granting what the needs ask.
fn policy_with(statements: usize) -> PolicyDocument {
    let st: Vec<String> = (0..statements)
        .map(|i| {
            let cond = if i % 4 == 0 { r#","Condition":{"Bool":{"aws:SecureTransport":true}}"# } else { "" };
            format!(
                r#"{{"Sid":"S{i}","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{OWN}:role/app-{i}"}},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"{cond}}}"#
            )
        })
        .collect();
    PolicyDocument::parse(&format!(r#"{{"Version":"2012-10-17","Statement":[{}]}}"#, st.join(","))).unwrap()
}

fn bench_policy(c: &mut Criterion) {
    let slr = "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling";
    let needs = [
        Need { who: PrincipalIds::role(slr, Some("AROAEXAMPLE")), kind: NeedKind::ServiceLinkedRole },
        Need { who: PrincipalIds::account_root(&AccountId::parse(OTHER).unwrap(), "aws"), kind: NeedKind::AccountRoot },
    ];
    let key = key(1);
    let mut merge = c.benchmark_group("policy_merge");
    for n in [1, 10, 50, 200] {
        let doc = policy_with(n);
        merge.throughput(Throughput::Elements(n as u64));
        merge.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| black_box(ensure(black_box(&doc), key.as_str(), &needs, &Default::default()).unwrap()))
        });
    }
    merge.finish();
}

criterion_group!(benches, bench_plan, bench_policy);
criterion_main!(benches);
