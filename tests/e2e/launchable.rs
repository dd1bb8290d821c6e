//! "Converged" means the group can launch: key health, aliases, several keys per group.

use crate::common::*;

const CMK: Option<&str> = Some("CMK");

fn key_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_key_fails_its_binding_by_state_and_nothing_is_written() {
    let OneAsg { moto, own, key, dir: _dir, cfg } = one_asg_on_own_key(CMK).await;
    aws_sdk_kms::Client::new(&own).disable_key().key_id(key_id(&key)).send().await.unwrap();
    moto.reset_calls();

    let out = moto.operator(&["apply", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("cannot encrypt EBS volumes: it is disabled: enable it (EnableKey)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(writes(&moto.calls()), Vec::<String>::new(), "no write for a key EBS cannot use");

    // Enabled again, the next apply converges.
    aws_sdk_kms::Client::new(&own).enable_key().key_id(key_id(&key)).send().await.unwrap();
    assert!(moto.operator(&["apply", "--config", &cfg]).status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_pending_deletion_or_asymmetric_fails_its_binding() {
    let moto = Moto::start();
    let own = moto.own().await;
    let kms = aws_sdk_kms::Client::new(&own);
    let doomed = create_key(&own, None).await;
    kms.schedule_key_deletion().key_id(key_id(&doomed)).pending_window_in_days(7).send().await.unwrap();
    let rsa = kms
        .create_key()
        .key_spec(aws_sdk_kms::types::KeySpec::Rsa2048)
        .key_usage(aws_sdk_kms::types::KeyUsageType::EncryptDecrypt)
        .send()
        .await
        .unwrap();
    let rsa = rsa.key_metadata().unwrap().arn().unwrap().to_owned();
    create_asgs(&own, &["web", "api"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("web", &doomed, CMK), ("api", &rsa, CMK)]));

    let out = moto.operator(&["apply", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("it is pending deletion: cancel the deletion (CancelKeyDeletion)"), "{text}");
    assert!(text.contains("its key spec is RSA_2048; EBS supports only symmetric keys"), "{text}");
    assert!(text.contains("0 of 2 bindings converged"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alias_is_followed_to_its_key_and_again_when_it_is_repointed() {
    let moto = Moto::start();
    let own = moto.own().await;
    let kms = aws_sdk_kms::Client::new(&own);
    let (first, second) = (create_key(&own, None).await, create_key(&own, None).await);
    kms.create_alias().alias_name("alias/ebs-data").target_key_id(key_id(&first)).send().await.unwrap();
    let alias = format!("arn:aws:kms:{REGION}:{OWN}:alias/ebs-data");
    create_asgs(&own, &["web"]).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("web", &alias, CMK)]));

    assert!(moto.operator(&["apply", "--config", &cfg]).status.success());
    let slr = slr_arn(OWN, CMK);
    assert_eq!(owned_principals(&key_policy(&own, &first).await, "AsgCmkOperatorUse"), [slr.as_str()]);

    // Repointed: the next apply follows it, and only the new key's policy is written.
    kms.update_alias().alias_name("alias/ebs-data").target_key_id(key_id(&second)).send().await.unwrap();
    moto.reset_calls();
    assert!(moto.operator(&["apply", "--config", &cfg]).status.success());
    assert_eq!(writes(&moto.calls()), ["PutKeyPolicy"]);
    assert_eq!(owned_principals(&key_policy(&own, &second).await, "AsgCmkOperatorUse"), [slr.as_str()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_that_needs_two_keys_gets_both_and_one_role_update() {
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let (data, image) = (create_key(&own, None).await, create_key(&other, None).await);
    create_asgs(&own, &["web"]).await;
    let dir = TempDir::new();
    let cfg = dir.write(
        "c.yaml",
        &format!(
            "version: 1\naccounts:\n  - {{id: \"{OTHER}\", roleArn: {OTHER_ROLE}}}\nbindings:\n  - asg: web\n    account: \"{OWN}\"\n    serviceLinkedRoleSuffix: CMK\n    keys:\n      - {data}   # the data volume's\n      - {image}  # the AMI's snapshots'\n"
        ),
    );
    moto.reset_calls();

    let out = moto.operator(&["apply", "--config", &cfg]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("2 of 2 bindings converged"), "{}", stdout(&out));
    let mut w = writes(&moto.calls());
    w.sort();
    assert_eq!(w, ["CreateGrant", "CreateServiceLinkedRole", "PutKeyPolicy", "PutKeyPolicy", "UpdateAutoScalingGroup"]);
    assert_eq!(asg_role(&own, "web").await, Some(slr_arn(OWN, CMK)));
    assert_eq!(grants(&other, &image).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_says_what_keeps_a_group_from_launching_and_then_that_it_can() {
    let CrossAccount { moto, own: _, other: _, key, dir: _dir, cfg } = one_asg_on_other_key(CMK).await;
    moto.reset_calls();
    let before = moto.operator(&["status", "--config", &cfg, "--output", "json"]);
    assert_eq!(before.status.code(), Some(2));
    assert!(writes(&moto.calls()).is_empty(), "status only reads");
    let doc: serde_json::Value = serde_json::from_str(&stdout(&before)).unwrap();
    assert_eq!(doc["ready"], false);
    let b = &doc["bindings"][0];
    assert_eq!(
        (b["asg"].as_str(), b["account"].as_str(), b["key"].as_str()),
        (Some("api"), Some(OWN), Some(key.as_str()))
    );
    let status = |kind: &str| {
        let c = b["conditions"].as_array().unwrap().iter().find(|c| c["type"] == kind).unwrap().clone();
        (c["status"].as_str().unwrap().to_owned(), c["reason"].as_str().unwrap().to_owned())
    };
    assert_eq!(status("KeyUsable"), ("True".into(), "Enabled".into()));
    assert_eq!(status("RoleReady"), ("False".into(), "NotFound".into()));
    assert_eq!(status("KeyPolicyReady"), ("False".into(), "Missing".into()));
    assert_eq!(status("GrantReady"), ("False".into(), "Missing".into()));
    assert_eq!(status("AsgUsesRole"), ("False".into(), "OtherRole".into()));
    assert_eq!(status("LaunchesHealthy"), ("True".into(), "NoRecentLaunch".into()));

    assert!(moto.operator(&["apply", "--config", &cfg]).status.success());
    let after = moto.operator(&["status", "--config", &cfg]);
    assert_eq!(after.status.code(), Some(0), "{}", stdout(&after));
    assert!(stdout(&after).contains("1 of 1 binding ready."), "{}", stdout(&after));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_serves_every_bindings_status() {
    let OneAsg { moto, own: _, key: _, dir: _dir, cfg } = one_asg_on_own_key(CMK).await;
    let d = Daemon::start(&moto, &cfg, "5m");
    d.wait_ready(std::time::Duration::from_secs(20));
    let (code, body) = d.get("/status");
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["ready"], true, "{doc}");
    let conditions = doc["bindings"][0]["conditions"].as_array().unwrap();
    let kinds: Vec<&str> = conditions.iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["KeyUsable", "RoleReady", "KeyPolicyReady", "AsgUsesRole", "LaunchesHealthy"]);
    assert!(conditions.iter().all(|c| c["status"] == "True"), "{doc}");
}

/// A launch configuration that requests Spot instances, and a group on it.
async fn spot_group(conf: &aws_config::SdkConfig, name: &str) {
    let asc = aws_sdk_autoscaling::Client::new(conf);
    asc.create_launch_configuration()
        .launch_configuration_name(name)
        .image_id(AMI)
        .instance_type("t3.micro")
        .spot_price("0.05")
        .send()
        .await
        .unwrap();
    asc.create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_configuration_name(name)
        .availability_zones("us-west-2a")
        .min_size(0)
        .max_size(1)
        .send()
        .await
        .unwrap();
}

/// A group "web" whose launch template's data volume uses `data` (named by the alias
/// alias/data) and whose AMI's root snapshot is encrypted with `image`.
async fn web_on_two_keys(own: &aws_config::SdkConfig, data: &str, image: &str, desired: i32) {
    let kms = aws_sdk_kms::Client::new(own);
    kms.create_alias().alias_name("alias/data").target_key_id(key_id(data)).send().await.unwrap();
    let snapshot = encrypted_snapshot(own, image).await;
    let ami = image_from_snapshot(own, "encrypted-root", &snapshot).await;
    let lt = launch_template(own, "web", Some(&ami), Some("alias/data")).await;
    group_on_template(own, "web", &lt, desired, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn discover_prints_a_valid_config_of_the_keys_groups_launch_with_and_where_they_are_from() {
    let moto = Moto::start();
    let own = moto.own().await;
    let (data, image) = (create_key(&own, None).await, create_key(&own, None).await);
    web_on_two_keys(&own, &data, &image, 0).await;
    spot_group(&own, "spot").await;
    let plain = launch_template(&own, "plain", None, Some("")).await; // encrypted, no key named
    group_on_template(&own, "plain", &plain, 0, None).await;
    moto.reset_calls();

    let out = moto.operator(&["discover", "--region", REGION]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(writes(&moto.calls()), Vec::<String>::new(), "discover only reads");
    let text = stdout(&out);
    assert!(text.contains(&format!("      - {data}  # launch template ")), "{text}");
    assert!(text.contains(": /dev/sdb\n"), "{text}");
    assert!(text.contains(&format!("      - {image}  # AMI ami-")), "{text}");
    assert!(text.contains("# plain: launches with no customer managed key"), "{text}");
    assert!(text.contains("alias/aws/ebs is AWS managed and needs nothing"), "{text}");
    assert!(text.contains("AWSServiceRoleForEC2Spot"), "{text}");
    let dir = TempDir::new();
    let cfg = dir.write("discovered.yaml", &text);
    let valid = moto.operator(&["validate", "--config", &cfg]);
    assert!(stdout(&valid).contains("valid, 2 bindings"), "{}", stdout(&valid));

    let one = moto.operator(&["discover", "--region", REGION, "--asg", "spot"]);
    assert!(one.status.success());
    assert!(!stdout(&one).contains("web") && stdout(&one).contains("bindings: []"), "{}", stdout(&one));
    let ghost = moto.operator(&["discover", "--region", REGION, "--asg", "ghost"]);
    assert_eq!(ghost.status.code(), Some(1));
    assert!(stderr(&ghost).contains("no Auto Scaling group ghost in us-west-2"), "{}", stderr(&ghost));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_that_cannot_launch_is_reported_bound_fully_and_then_launches() {
    let moto = Moto::start();
    let own = moto.own().await;
    let (data, image) = (create_key(&own, None).await, create_key(&own, None).await);
    // It tries to launch at once, under the default role, which may use neither key.
    web_on_two_keys(&own, &data, &image, 1).await;
    assert_eq!(activities(&own, "web").await, [failed()]);
    let dir = TempDir::new();
    // Only the data volume's key is bound: the AMI's is forgotten.
    let cfg = dir.write("c.yaml", &config(&[("web", &data, CMK)]));

    let plan = moto.operator(&["plan", "--config", &cfg]);
    assert_eq!(plan.status.code(), Some(2));
    let text = stdout(&plan);
    assert!(
        text.contains("the group's most recent launch failed: Client.InternalError: Client error on launch"),
        "{text}"
    );
    assert!(text.contains(&format!("launches with customer managed key {image} (AMI ami-")), "{text}");
    assert!(text.contains("which no binding covers"), "{text}");
    let status = moto.operator(&["status", "--config", &cfg]);
    assert_eq!(status.status.code(), Some(2));
    assert!(stdout(&status).contains("LaunchesHealthy False (LaunchFailedKms)"), "{}", stdout(&status));

    let apply = moto.operator(&["apply", "--config", &cfg]);
    assert!(apply.status.success());
    assert!(stderr(&apply).contains("which no binding covers"), "warned once: {}", stderr(&apply));
    // The launch failed before the apply, but one key is still not bound: no fix is
    // claimed, and status says what is missing.
    let short = moto.operator(&["status", "--config", &cfg]);
    assert_eq!(short.status.code(), Some(2), "{}", stdout(&short));
    assert!(!stdout(&short).contains("FixedSinceLastLaunch"), "{}", stdout(&short));
    assert!(stdout(&short).contains("LaunchesHealthy False (LaunchFailedKms)"), "{}", stdout(&short));
    assert!(stdout(&short).contains(&format!("customer managed key {image}")), "{}", stdout(&short));
    set_desired(&own, "web", 1).await;
    assert_eq!(activities(&own, "web").await[0], failed(), "still one key short");

    // Both keys bound: the emulator's own check of the key policies lets it launch.
    let both = format!(
        "version: 1\nbindings:\n  - asg: web\n    account: \"{OWN}\"\n    serviceLinkedRoleSuffix: CMK\n    keys: [{data}, {image}]\n"
    );
    let cfg = dir.write("both.yaml", &both);
    assert!(moto.operator(&["apply", "--config", &cfg]).status.success());
    assert!(moto.operator(&["plan", "--config", &cfg]).status.code() == Some(0));
    set_desired(&own, "web", 2).await;
    assert_eq!(activities(&own, "web").await[0], successful());
    let status = moto.operator(&["status", "--config", &cfg]);
    assert_eq!(status.status.code(), Some(0), "{}", stdout(&status));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_case_2_group_launches_once_the_operator_has_converged() {
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let key = create_key(&other, None).await;
    let lt = launch_template(&own, "api", None, Some(&key)).await;
    group_on_template(&own, "api", &lt, 1, None).await;
    assert_eq!(activities(&own, "api").await, [failed()]);
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("api", &key, CMK)]));

    assert!(moto.operator(&["apply", "--config", &cfg]).status.success());
    // Converged, and the last launch failed before the fix: the permissions are in place,
    // and the next launch tells.
    let fixed = moto.operator(&["status", "--config", &cfg]);
    assert_eq!(fixed.status.code(), Some(0), "{}", stdout(&fixed));
    assert!(stdout(&fixed).contains("LaunchesHealthy Unknown (FixedSinceLastLaunch)"), "{}", stdout(&fixed));
    assert!(stdout(&fixed).contains("1 of 1 binding ready"), "{}", stdout(&fixed));
    set_desired(&own, "api", 1).await;
    assert_eq!(activities(&own, "api").await[0], successful(), "{:?}", can_launch(&moto, "api"));
    let launched = moto.operator(&["status", "--config", &cfg, "--output", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&launched)).unwrap();
    let launches = doc["bindings"][0]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "LaunchesHealthy");
    assert_eq!(launches.unwrap()["reason"], "LastLaunch", "{doc:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_counts_and_quotes_a_failed_launch() {
    // web launches with two keys, and its binding covers one: the daemon puts that one in
    // place, and web's launch fails for the other. api's launch failed before the daemon
    // put its key in place: the next launch tells, and nothing is counted against it yet.
    let moto = Moto::start();
    let own = moto.own().await;
    let (data, image) = (create_key(&own, None).await, create_key(&own, None).await);
    web_on_two_keys(&own, &data, &image, 1).await;
    let lt = launch_template(&own, "api", None, Some(&data)).await;
    group_on_template(&own, "api", &lt, 1, None).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("web", &data, CMK), ("api", &data, CMK)]));

    let d = Daemon::start(&moto, &cfg, "5m");
    d.wait_ready(std::time::Duration::from_secs(20));
    let warned =
        d.wait_log(|v| v["message"] == "the group's most recent launch failed", std::time::Duration::from_secs(5));
    assert_eq!(warned["status_message"], "Client.InternalError: Client error on launch");
    assert_eq!(warned["class"], "kms");
    assert_eq!(warned["asg"], format!("{OWN}/{REGION}/web"));
    let fixed = d.wait_log(
        |v| v["message"].as_str().is_some_and(|m| m.contains("failed before its permissions were in place")),
        std::time::Duration::from_secs(5),
    );
    assert_eq!(fixed["asg"], format!("{OWN}/{REGION}/api"));
    let metrics = d.get("/metrics").1;
    let series = |asg: &str, class: &str, value: u8| {
        format!("asg_cmk_operator_launch_failures{{asg=\"{asg}\",account=\"{OWN}\",region=\"{REGION}\",class=\"{class}\"}} {value}")
    };
    assert!(metrics.contains(&series("web", "kms", 1)), "{metrics}");
    assert!(metrics.contains(&series("web", "other", 0)), "{metrics}");
    assert!(metrics.contains(&series("api", "kms", 0)), "{metrics}");
    let status: serde_json::Value = serde_json::from_str(&d.get("/status").1).unwrap();
    let launches = |asg: &str| {
        let b = status["bindings"].as_array().unwrap().iter().find(|b| b["asg"] == asg).unwrap();
        b["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "LaunchesHealthy").unwrap().clone()
    };
    let web = launches("web");
    assert_eq!((web["status"].as_str(), web["reason"].as_str()), (Some("False"), Some("LaunchFailedKms")));
    assert!(web["message"].as_str().unwrap().contains("Client error on launch"), "{web}");
    assert!(web["message"].as_str().unwrap().contains(&format!("customer managed key {image}")), "{web}");
    let api = launches("api");
    assert_eq!((api["status"].as_str(), api["reason"].as_str()), (Some("Unknown"), Some("FixedSinceLastLaunch")));

    // The group leaves the config: its series go with it.
    rename_replace(&cfg, &config(&[("api", &data, CMK)]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let metrics = d.get("/metrics").1;
        if !metrics.contains("asg=\"web\"") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "web's series outlived its binding: {metrics}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_on_the_aws_managed_ebs_key_needs_nothing() {
    let moto = Moto::start();
    let own = moto.own().await;
    create_asgs(&own, &["web"]).await;
    let aws_ebs = format!("arn:aws:kms:{REGION}:{OWN}:alias/aws/ebs");
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("web", &aws_ebs, CMK)]));
    moto.reset_calls();

    let plan = moto.operator(&["plan", "--config", &cfg]);
    assert_eq!(plan.status.code(), Some(0), "{}", stdout(&plan));
    assert!(
        stdout(&plan).contains("is an AWS managed key: Auto Scaling may use it with no key policy statement or grant"),
        "{}",
        stdout(&plan)
    );
    let apply = moto.operator(&["apply", "--config", &cfg]);
    assert!(apply.status.success());
    assert_eq!(writes(&moto.calls()), Vec::<String>::new(), "nothing to write for an AWS managed key");
    assert_eq!(moto.operator(&["status", "--config", &cfg]).status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_sweep_of_a_regions_activities_reads_every_groups_newest_launch() {
    // Three groups in one region, two of which launched (and failed: their role cannot
    // use the key yet). A full pass reads their launches with one DescribeScalingActivities,
    // not one per group; the daemon's later sweeps stop where the last one did, and still
    // see a launch made since.
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    let lt = launch_template(&own, "web", None, Some(&key)).await;
    group_on_template(&own, "web", &lt, 1, None).await;
    group_on_template(&own, "api", &lt, 1, None).await;
    group_on_template(&own, "idle", &lt, 0, None).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("web", &key, CMK), ("api", &key, CMK), ("idle", &key, CMK)]));
    moto.reset_calls();
    let out = moto.operator(&["status", "--config", &cfg, "--output", "json"]);
    assert_eq!(count(&moto.calls(), "DescribeScalingActivities"), 1, "one sweep for three groups");
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let launches = |doc: &serde_json::Value, asg: &str| -> String {
        let b = doc["bindings"].as_array().unwrap().iter().find(|b| b["asg"] == asg).unwrap().clone();
        let c = b["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "LaunchesHealthy").unwrap().clone();
        c["reason"].as_str().unwrap().to_owned()
    };
    assert_eq!(launches(&doc, "web"), "LaunchFailedKms");
    assert_eq!(launches(&doc, "api"), "LaunchFailedKms");
    assert_eq!(launches(&doc, "idle"), "NoRecentLaunch");

    let d = Daemon::start(&moto, &cfg, "1s");
    d.wait_ready(std::time::Duration::from_secs(20));
    // Converged: web launches again, and succeeds; a later sweep sees it.
    set_desired(&own, "web", 2).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let status: serde_json::Value = serde_json::from_str(&d.get("/status").1).unwrap();
        if launches(&status, "web") == "LastLaunch" {
            // api's launch is kept from the sweep before; it failed before the fix.
            assert_eq!(launches(&status, "api"), "FixedSinceLastLaunch");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "web's new launch not seen: {status}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Steady state: one page per full pass.
    let full_passes = |d: &Daemon| {
        d.logs()
            .iter()
            .filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with("pass finished")) && v["full"] == true)
            .count()
    };
    moto.reset_calls();
    let before = full_passes(&d);
    std::thread::sleep(std::time::Duration::from_secs(4));
    let sweeps = count(&moto.calls(), "DescribeScalingActivities");
    let passes = full_passes(&d) - before;
    assert!(passes >= 2, "{passes} full passes");
    assert!(sweeps <= passes + 1, "{sweeps} sweeps over {passes} full passes");
}

// --- launch sources read as EC2 answers them ----------------------------------------------

/// An unencrypted volume of `conf`'s account and a snapshot of it; the snapshot id.
async fn plain_snapshot(conf: &aws_config::SdkConfig) -> String {
    let ec2 = aws_sdk_ec2::Client::new(conf);
    let volume = ec2.create_volume().availability_zone("us-west-2a").size(8).send().await.unwrap();
    let snapshot = ec2.create_snapshot().volume_id(volume.volume_id().unwrap()).send().await.unwrap();
    snapshot.snapshot_id().unwrap().to_owned()
}

/// The comment lines discover wrote about volumes whose key could not be known.
fn unknown_notes(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.contains("a volume's key could not be known")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn discover_reads_a_template_by_its_id_or_its_name_never_both() {
    let moto = Moto::start();
    let own = moto.own().await;
    let (by_id, by_name) = (create_key(&own, None).await, create_key(&own, None).await);
    // DescribeAutoScalingGroups answers the template's id and name; EC2 refuses both.
    let web = launch_template(&own, "web", None, Some(&by_id)).await;
    group_on_template(&own, "web", &web, 0, None).await;
    launch_template(&own, "api", None, Some(&by_name)).await;
    let spec = aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder().launch_template_name("api").build();
    let policy = aws_sdk_autoscaling::types::MixedInstancesPolicy::builder()
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplate::builder().launch_template_specification(spec).build(),
        )
        .build();
    let asc = aws_sdk_autoscaling::Client::new(&own);
    let api = asc.create_auto_scaling_group().auto_scaling_group_name("api").mixed_instances_policy(policy);
    api.availability_zones("us-west-2a").min_size(0).max_size(1).send().await.unwrap();

    let out = moto.operator(&["discover", "--region", REGION]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("not read"), "{text}");
    assert!(text.contains(&format!("      - {by_id}  # launch template {web} (web) version 1 ($Default), the group's launch template: /dev/sdb\n")), "{text}");
    assert!(text.contains(&format!("      - {by_name}  # launch template ")), "{text}");
    assert!(text.contains("its mixed instances policy: /dev/sdb\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn discover_counts_the_snapshot_key_of_an_image_a_parameter_names() {
    let moto = Moto::start();
    let own = moto.own().await;
    let key = create_key(&own, None).await;
    let snapshot = encrypted_snapshot(&own, &key).await;
    let image = image_from_snapshot(&own, "golden", &snapshot).await;
    put_parameter(&moto, "/golden/ami", &image);
    let lt = launch_template(&own, "web", Some("resolve:ssm:/golden/ami"), None).await;
    group_on_template(&own, "web", &lt, 0, None).await;

    let out = moto.operator(&["discover", "--region", REGION]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("      - {key}  # AMI {image}: /dev/xvda, snapshot {snapshot}\n")), "{text}");
    assert_eq!(unknown_notes(&text), Vec::<&str>::new(), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_that_cannot_be_read_fails_only_the_image_part_of_its_own_group() {
    let moto = Moto::start();
    let own = moto.own().await;
    let (image_key, data_key) = (create_key(&own, None).await, create_key(&own, None).await);
    let snapshot = encrypted_snapshot(&own, &image_key).await;
    let image = image_from_snapshot(&own, "golden", &snapshot).await;
    let good = launch_template(&own, "good", Some(&image), None).await;
    group_on_template(&own, "good", &good, 0, None).await;
    // An image that does not exist (deregistered long ago, or never shared), and an id
    // that is no image id at all: DescribeImages refuses any list holding either.
    let unknown = "ami-0123456789abcdef0";
    let gone = launch_template(&own, "gone", Some(unknown), Some(&data_key)).await;
    group_on_template(&own, "gone", &gone, 0, None).await;
    let odd = launch_template(&own, "odd", Some("img-1"), None).await;
    group_on_template(&own, "odd", &odd, 0, None).await;
    // A template deleted under its group fails that group alone.
    let orphan = launch_template(&own, "orphan", None, Some(&data_key)).await;
    group_on_template(&own, "orphan", &orphan, 0, None).await;
    aws_sdk_ec2::Client::new(&own).delete_launch_template().launch_template_id(&orphan).send().await.unwrap();

    let out = moto.operator(&["discover", "--region", REGION]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let not_read: Vec<&str> = text.lines().filter(|l| l.contains("not read:")).collect();
    assert_eq!(not_read.len(), 1, "{text}");
    assert!(
        not_read[0]
            .starts_with("  # orphan: not read: DescribeLaunchTemplateVersions: InvalidLaunchTemplateId.NotFound"),
        "{text}"
    );
    assert!(text.contains(&format!("      - {image_key}  # AMI {image}: /dev/xvda, snapshot {snapshot}\n")), "{text}");
    assert!(text.contains(&format!("      - {data_key}  # launch template {gone} (gone)")), "{text}");
    assert_eq!(
        unknown_notes(&text),
        [
            format!("    # a volume's key could not be known: AMI {unknown}: could not be read: not found: deregistered, or not shared with this account (InvalidAMIID.NotFound); its snapshots' keys are unknown").as_str(),
            "  #   a volume's key could not be known: AMI img-1: could not be read: not an image id (InvalidAMIID.Malformed); its snapshots' keys are unknown",
        ],
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unencrypted_mapping_needs_no_key_from_a_snapshot_that_cannot_be_read() {
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    // Another account's image on an unencrypted snapshot, shared with this one: its
    // snapshot is not readable here, and not needed.
    let snapshot = plain_snapshot(&other).await;
    let image = image_from_snapshot(&other, "public-base", &snapshot).await;
    share_image(&other, &image, OWN).await;
    let data = create_key(&own, None).await;
    let lt = launch_template(&own, "web", Some(&image), Some(&data)).await;
    group_on_template(&own, "web", &lt, 0, None).await;

    let out = moto.operator(&["discover", "--region", REGION]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("      - {data}  # launch template {lt} (web)")), "{text}");
    assert_eq!(unknown_notes(&text), Vec::<&str>::new(), "{text}");
    // The snapshot was not even asked for.
    assert_eq!(count(&moto.calls(), "DescribeSnapshots"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_amis_encrypted_snapshot_is_counted_under_the_accounts_default_key() {
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let owners = create_key(&other, None).await;
    let snapshot = encrypted_snapshot(&other, &owners).await;
    let image = image_from_snapshot(&other, "shared-golden", &snapshot).await;
    share_image(&other, &image, OWN).await;
    let default = create_key(&own, None).await;
    let ec2 = aws_sdk_ec2::Client::new(&own);
    ec2.modify_ebs_default_kms_key_id().kms_key_id(&default).send().await.unwrap();
    let lt = launch_template(&own, "web", Some(&image), None).await;
    group_on_template(&own, "web", &lt, 0, None).await;

    let out = moto.operator(&["discover", "--region", REGION]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("      - {default}  # AMI {image} (owned by {OTHER}): /dev/xvda, an encrypted snapshot of another account, re-encrypted, with the account's default EBS key ({default})\n")),
        "{text}"
    );
    // The owner's key, which reads the snapshot, cannot be known from here: said.
    assert_eq!(
        unknown_notes(&text),
        [format!("    # a volume's key could not be known: AMI {image} (owned by {OTHER}): /dev/xvda, snapshot {snapshot}: not found, or not shared with this account").as_str()],
        "{text}"
    );
    // The emulator's launch judge agrees: the default key is one the launch uses.
    let verdict = can_launch(&moto, "web");
    let used: Vec<&str> = verdict["keys"].as_array().unwrap().iter().map(|k| k["key"].as_str().unwrap()).collect();
    assert!(used.contains(&default.as_str()) && used.contains(&owners.as_str()), "{verdict}");
}

#[tokio::test(flavor = "multi_thread")]
async fn launch_sources_are_read_concurrently() {
    let moto = Moto::start();
    let own = moto.own().await;
    const GROUPS: usize = 8;
    for i in 0..GROUPS {
        let name = format!("web-{i}");
        let lt = launch_template(&own, &name, None, Some("")).await;
        group_on_template(&own, &name, &lt, 0, None).await;
    }
    // Every call takes 300 ms: one after another, the eight template reads would arrive
    // at least 2.1 s apart from first to last.
    let proxy = FaultProxy::start(&moto, &["--latency", "300:300"]);
    moto.reset_calls();
    let out = run_logged(operator_command(&proxy.url, &["discover", "--region", REGION]), &["discover"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = moto.hook("GET", "/_launcher/calls", serde_json::Value::Null);
    let times: Vec<f64> = calls["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "DescribeLaunchTemplateVersions")
        .map(|c| c["t"].as_f64().unwrap())
        .collect();
    assert_eq!(times.len(), GROUPS);
    let span = times.iter().cloned().fold(f64::MIN, f64::max) - times.iter().cloned().fold(f64::MAX, f64::min);
    assert!(span < 0.9, "the template reads arrived over {span:.2} s");
}

#[tokio::test(flavor = "multi_thread")]
async fn compact_statements_another_writer_keeps_are_credited_and_the_groups_launch() {
    // Case 1: the key's policy allows every suffixed Auto Scaling role of OWN by
    // aws:PrincipalArn, with Principal "*"; case 2: OTHER's key allows OWN by
    // aws:PrincipalAccount. Both grant what the procedure asks: nothing is written to
    // either policy, and the emulator's own reading of them lets both groups launch.
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let roles =
        format!("arn:aws:iam::{OWN}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_*");
    let use_actions =
        serde_json::json!(["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]);
    let owner = |account: &str| {
        serde_json::json!({"Sid": "Owner", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
            "Action": "kms:*", "Resource": "*"})
    };
    let by_arn = serde_json::json!({"Version": "2012-10-17", "Statement": [owner(OWN),
        {"Sid": "AutoScalingRoles", "Effect": "Allow", "Principal": "*", "Action": use_actions, "Resource": "*",
         "Condition": {"ArnLike": {"aws:PrincipalArn": roles}}},
        {"Sid": "AutoScalingGrants", "Effect": "Allow", "Principal": "*", "Action": "kms:CreateGrant", "Resource": "*",
         "Condition": {"ArnLike": {"aws:PrincipalArn": roles}, "Bool": {"kms:GrantIsForAWSResource": "true"}}}]});
    let mut shared = use_actions.as_array().unwrap().clone();
    shared.push("kms:CreateGrant".into());
    let by_account = serde_json::json!({"Version": "2012-10-17", "Statement": [owner(OTHER),
        {"Sid": "Workloads", "Effect": "Allow", "Principal": "*", "Action": shared, "Resource": "*",
         "Condition": {"StringEquals": {"aws:PrincipalAccount": [OWN]}}}]});
    let own_key = create_key(&own, Some(&by_arn.to_string())).await;
    let other_key = create_key(&other, Some(&by_account.to_string())).await;
    let web = launch_template(&own, "web", None, Some(&own_key)).await;
    group_on_template(&own, "web", &web, 0, None).await;
    let api = launch_template(&own, "api", None, Some(&other_key)).await;
    group_on_template(&own, "api", &api, 0, None).await;
    let dir = TempDir::new();
    let cfg = dir.write("c.yaml", &config(&[("web", &own_key, CMK), ("api", &other_key, CMK)]));

    let out = moto.operator(&["apply", "--config", &cfg]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let calls = moto.calls();
    assert_eq!(count(&calls, "PutKeyPolicy"), 0, "the compact statements already allow it: {:?}", writes(&calls));
    assert_eq!(count(&calls, "CreateGrant"), 1, "the role's grant on OTHER's key: {:?}", writes(&calls));
    for group in ["web", "api"] {
        set_desired(&own, group, 1).await;
        assert_eq!(activities(&own, group).await[0], successful(), "{group}: {:?}", can_launch(&moto, group));
    }
    moto.reset_calls();
    let again = moto.operator(&["apply", "--config", &cfg]);
    assert!(again.status.success() && writes(&moto.calls()).is_empty(), "{:?}", writes(&moto.calls()));
}
