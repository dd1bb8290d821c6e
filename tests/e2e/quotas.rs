//! KMS's CreateGrant quota (50/s per account and Region) is shared with AWS itself: every
//! launch of a volume encrypted with a customer managed key makes a grant, and dry runs
//! count too (KMS Developer Guide, "Request quotas"). The operator's own CreateGrant
//! calls, dry runs included, keep to `defaults.kmsCreateGrantRate` (10/s unless set), as
//! the emulator counts them on arrival.

use crate::common::*;

/// The most of `arrivals` (seconds, in order) within any one second, and how many.
fn peak_per_second(arrivals: &[f64]) -> (usize, usize) {
    let peak = (0..arrivals.len()).map(|i| arrivals[i..].iter().take_while(|t| **t < arrivals[i] + 1.0).count()).max();
    (peak.unwrap_or(0), arrivals.len())
}

fn handoff_config(rows: &[(String, String)], head: &str) -> String {
    let mut s = format!("version: 1\n{head}bindings:\n");
    for (asg, key) in rows {
        s.push_str(&format!("  - {{asg: {asg}, account: \"{OWN}\", key: {key}, serviceLinkedRoleSuffix: CMK}}\n"));
    }
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cold_apply_of_60_case_2_keys_keeps_create_grant_to_its_pace_dry_runs_included() {
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let mut rows = Vec::new();
    for i in 0..60 {
        rows.push((format!("g{i}"), create_key(&other, None).await));
    }
    let names: Vec<&str> = rows.iter().map(|(g, _)| g.as_str()).collect();
    create_asgs(&own, &names).await;
    create_slr(&own, "CMK").await;
    let dir = TempDir::new();

    // Without `accounts`, every key is handed off: one CreateGrant dry run each, paced.
    let handoff = dir.write("handoff.yaml", &handoff_config(&rows, ""));
    moto.reset_calls();
    let out = moto.operator(&["plan", "--config", &handoff]);
    assert_eq!(out.status.code(), Some(2), "awaiting the key's owner: {}", stdout(&out));
    let (peak, total) = peak_per_second(&moto.arrivals("CreateGrant"));
    assert_eq!(total, 60, "one dry run per key");
    assert!(peak <= 10, "{peak} dry runs within one second");

    // A lower rate from the config is kept too.
    let slow = dir.write("slow.yaml", &handoff_config(&rows[..20], "defaults:\n  kmsCreateGrantRate: 4\n"));
    moto.reset_calls();
    moto.operator(&["plan", "--config", &slow]);
    let (peak, total) = peak_per_second(&moto.arrivals("CreateGrant"));
    assert_eq!(total, 20);
    assert!(peak <= 4, "{peak} dry runs within one second at kmsCreateGrantRate 4");

    // With the owner's account under `accounts`: a grant per key, cold, at the same pace.
    let rows3: Vec<(&str, &str, Option<&str>)> =
        rows.iter().map(|(g, k)| (g.as_str(), k.as_str(), Some("CMK"))).collect();
    let cfg = dir.write("c.yaml", &config(&rows3));
    moto.reset_calls();
    let out = moto.operator(&["apply", "--config", &cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (peak, total) = peak_per_second(&moto.arrivals("CreateGrant"));
    assert_eq!(total, 60, "one grant per key");
    assert!(peak <= 10, "{peak} CreateGrant calls within one second");
}
