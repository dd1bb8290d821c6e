//! `strategy: reencrypt` end to end: a group whose AMI's snapshots use another account's
//! key is moved onto a copy of the AMI encrypted with a key of its own account.

use std::time::Duration;

use crate::common::*;

/// The key policy of a key of `OTHER` that lets account `OWN` use it (the statements the
/// hand-off prints for the group's account), so a copy of its snapshots may be made.
fn foreign_policy() -> String {
    owners_policy_and(serde_json::json!([
        {"Sid": "GroupAccount", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{OWN}:root")},
         "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey", "kms:CreateGrant"],
         "Resource": "*"}
    ]))
}

/// A key policy of `OTHER`'s: its own account's statement, and `for_own`.
fn owners_policy_and(for_own: serde_json::Value) -> String {
    let owner = serde_json::json!({"Sid": "Owner", "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{OTHER}:root")}, "Action": "kms:*", "Resource": "*"});
    let mut statements = vec![owner];
    statements.extend(for_own.as_array().cloned().unwrap_or_default());
    serde_json::json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

/// Two applies: the first starts the copy, which the emulator shows pending once; the
/// second finishes. The second succeeds.
fn converge(moto: &Moto, config: &str) {
    moto.operator(&["apply", "--config", config]);
    let out = moto.operator(&["apply", "--config", config]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
}

/// A converged group costs reads only: one more apply writes nothing.
fn applies_with_no_write(moto: &Moto, config: &str) {
    moto.reset_calls();
    let again = moto.operator(&["apply", "--config", config]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(writes(&moto.calls()).is_empty(), "{:?}", writes(&moto.calls()));
}

struct Fleet {
    foreign: String,
    own_key: String,
    image: String,
    template: String,
    snapshot: String,
}

/// A key of `OTHER`, an image of `OTHER` whose root snapshot it encrypts, shared with `OWN`
/// (the image and its snapshot); a key of `OWN`, and launch template `web` (version 1) of
/// `OWN` on that image.
async fn fleet(moto: &Moto, policy: Option<&str>) -> Fleet {
    let f = fleet_unshared(moto, policy).await;
    share_snapshot(&moto.other().await, &f.snapshot, OWN).await;
    f
}

/// [`fleet`], with the image's snapshot not shared with `OWN`.
async fn fleet_unshared(moto: &Moto, policy: Option<&str>) -> Fleet {
    let (own, other) = (moto.own().await, moto.other().await);
    let foreign = create_key(&other, policy).await;
    let snapshot = encrypted_snapshot(&other, &foreign).await;
    let image = image_from_snapshot(&other, "golden", &snapshot).await;
    share_image(&other, &image, OWN).await;
    let own_key = create_key(&own, None).await;
    let template = launch_template(&own, "web", Some(&image), None).await;
    Fleet { foreign, own_key, image, template, snapshot }
}

/// A [`fleet`] whose key owner lets the group's account copy, group `web` on its
/// template, and a config binding it: (emulator, fleet, own account, config's folder, config).
async fn web_on_its_template() -> (Moto, Fleet, aws_config::SdkConfig, TempDir, String) {
    let moto = Moto::start();
    let f = fleet(&moto, Some(&foreign_policy())).await;
    let (own, dir, config) = web_on(&moto, &f).await;
    (moto, f, own, dir, config)
}

/// Group `web` on `f`'s template, and a config binding it: (own account, config's folder,
/// config).
async fn web_on(moto: &Moto, f: &Fleet) -> (aws_config::SdkConfig, TempDir, String) {
    let own = moto.own().await;
    group_on_template(&own, "web", &f.template, 0, None).await;
    let dir = TempDir::new();
    let config = dir.write("config.yaml", &format!("version: 1\nbindings:\n{}", binding("web", f)));
    (own, dir, config)
}

fn binding(asg: &str, f: &Fleet) -> String {
    format!(
        "  - asg: {asg}\n    account: \"{OWN}\"\n    key: {}\n    strategy: reencrypt\n    reencryptWith: {}\n    serviceLinkedRoleSuffix: web\n",
        f.foreign, f.own_key
    )
}

/// The version of its launch template a group names, and the template's default version.
async fn versions(moto: &Moto, group: &str, template: &str) -> (Option<String>, i64) {
    let own = moto.own().await;
    let asc = aws_sdk_autoscaling::Client::new(&own);
    let out = asc.describe_auto_scaling_groups().auto_scaling_group_names(group).send().await.unwrap();
    let named = out.auto_scaling_groups()[0].launch_template().and_then(|t| t.version()).map(str::to_owned);
    let ec2 = aws_sdk_ec2::Client::new(&own);
    let t = ec2.describe_launch_templates().launch_template_ids(template).send().await.unwrap();
    (named, t.launch_templates()[0].default_version_number().unwrap())
}

/// The image of version `version` of `template`.
async fn version_image(moto: &Moto, template: &str, version: &str) -> String {
    let ec2 = aws_sdk_ec2::Client::new(&moto.own().await);
    let out = ec2.describe_launch_template_versions().launch_template_id(template).versions(version).send();
    let out = out.await.unwrap();
    out.launch_template_versions()[0].launch_template_data().unwrap().image_id().unwrap().to_owned()
}

/// The keys of the snapshots of image `image`, as its account (`conf`'s) sees them.
async fn image_keys(conf: &aws_config::SdkConfig, image: &str) -> Vec<String> {
    let ec2 = aws_sdk_ec2::Client::new(conf);
    let out = ec2.describe_images().image_ids(image).send().await.unwrap();
    let mut keys = Vec::new();
    for m in out.images()[0].block_device_mappings() {
        let Some(snap) = m.ebs().and_then(|e| e.snapshot_id()) else { continue };
        let s = ec2.describe_snapshots().snapshot_ids(snap).send().await.unwrap();
        keys.push(s.snapshots()[0].kms_key_id().unwrap_or("unencrypted").to_owned());
    }
    keys
}

/// The image of the version group `web` names on `f`'s template, whose snapshots use
/// `f`'s own key only: a copy. Returns it.
async fn web_launches_a_copy_under_its_own_key(moto: &Moto, own: &aws_config::SdkConfig, f: &Fleet) -> String {
    let (named, _) = versions(moto, "web", &f.template).await;
    let copy = version_image(moto, &f.template, named.as_deref().unwrap()).await;
    assert_eq!(image_keys(own, &copy).await, vec![f.own_key.clone()]);
    copy
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_on_another_accounts_key_moves_to_a_copy_under_its_own_key() {
    let (moto, f, own, _dir, config) = web_on_its_template().await;

    // The copy is pending when first looked at: the apply says so and ends; it never waits.
    let first = moto.operator(&["apply", "--config", &config]);
    let text = stdout(&first);
    assert!(!first.status.success(), "{text}");
    assert!(text.contains("in progress") && text.contains("pending, snapshots at 45%"), "{text}");
    assert_eq!(count(&moto.calls(), "CopyImage"), 1, "{text}");

    let second = moto.operator(&["apply", "--config", &config]);
    assert!(second.status.success(), "{}\n{}", stdout(&second), stderr(&second));
    let calls = moto.calls();
    assert_eq!(count(&calls, "CopyImage"), 1, "the copy is found, not made again");
    for (conf, key) in [(moto.other().await, &f.foreign), (own.clone(), &f.own_key)] {
        let kms = aws_sdk_kms::Client::new(&conf);
        let grants = kms.list_grants().key_id(key).send().await.unwrap();
        assert!(grants.grants().is_empty(), "no grant on {key}: {grants:?}");
    }

    // The group is pointed at a new version whose image is the copy, with its snapshots
    // under the own key; the template's default version stays (other launchers use it).
    let (named, default) = versions(&moto, "web", &f.template).await;
    assert_eq!((named.as_deref(), default), (Some("2"), 1), "the group on version 2, the default still 1");
    let ec2 = aws_sdk_ec2::Client::new(&own);
    let v = ec2.describe_launch_template_versions().launch_template_id(&f.template).versions("2").send();
    let v = v.await.unwrap();
    let description = v.launch_template_versions()[0].version_description().unwrap().to_owned();
    assert!(description.starts_with("asg-cmk-operator: version 1 ($Default) with image"), "{description}");
    let copy = version_image(&moto, &f.template, "2").await;
    assert_ne!(copy, f.image);
    assert_eq!(image_keys(&own, &copy).await, vec![f.own_key.clone()]);
    // The copy's snapshots, which are what it costs, say what they copy.
    let ec2 = aws_sdk_ec2::Client::new(&own);
    let image = ec2.describe_images().image_ids(&copy).send().await.unwrap();
    let snap = image.images()[0].block_device_mappings()[0].ebs().unwrap().snapshot_id().unwrap().to_owned();
    let snaps = ec2.describe_snapshots().snapshot_ids(&snap).send().await.unwrap();
    let tags: Vec<(&str, &str)> =
        snaps.snapshots()[0].tags().iter().map(|t| (t.key().unwrap(), t.value().unwrap())).collect();
    assert!(tags.contains(&("asg-cmk-operator:source-image", f.image.as_str())), "{tags:?}");
    // The old version and the source image are untouched.
    assert_eq!(version_image(&moto, &f.template, "1").await, f.image);
    assert_eq!(image_keys(&moto.other().await, &f.image).await, vec![f.foreign.clone()]);
    // The own key's policy lets the group's role use it (case 1), and the group uses it.
    assert_eq!(asg_role(&own, "web").await, Some(slr_arn(OWN, Some("web"))));
    let verdict = can_launch(&moto, "web");
    assert_eq!(verdict["can_launch"], true, "{verdict}");

    applies_with_no_write(&moto, &config);

    let status = moto.operator(&["status", "--config", &config, "--output", "json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    let cond = status["bindings"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ImagesReencrypted")
        .cloned();
    assert_eq!(cond.as_ref().map(|c| c["status"].clone()), Some("True".into()), "{status}");

    let discovered = moto.operator(&["discover", "--region", REGION]);
    let text = stdout(&discovered);
    assert!(text.contains(&f.own_key) && !text.contains(&f.foreign), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_shared_with_another_group_gets_a_version_only_this_group_launches() {
    let moto = Moto::start();
    let f = fleet(&moto, Some(&foreign_policy())).await;
    let own = moto.own().await;
    group_on_template(&own, "web", &f.template, 0, None).await;
    group_on_template(&own, "api", &f.template, 0, None).await;
    let dir = TempDir::new();
    let config = dir.write("config.yaml", &format!("version: 1\nbindings:\n{}", binding("web", &f)));
    converge(&moto, &config);

    // web is pinned to the new version; api still launches the default, version 1.
    assert_eq!(versions(&moto, "web", &f.template).await, (Some("2".to_owned()), 1));
    assert_eq!(versions(&moto, "api", &f.template).await, (None, 1));
    assert_eq!(version_image(&moto, &f.template, "1").await, f.image);
    let copy = version_image(&moto, &f.template, "2").await;
    assert_eq!(image_keys(&own, &copy).await, vec![f.own_key.clone()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_waits_for_the_key_owner_who_is_told_what_to_add() {
    let moto = Moto::start();
    let f = fleet(&moto, None).await;
    let (_own, _dir, config) = web_on(&moto, &f).await;
    let out = moto.operator(&["apply", "--config", &config]);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("awaiting key owner") && text.contains(&format!("arn:aws:iam::{OWN}:root")), "{text}");
    assert!(text.contains("kms:CreateGrant") && text.contains("kms:Decrypt"), "{text}");
    assert_eq!(count(&moto.calls(), "CopyImage"), 0, "no copy is tried before the owner allows it");
    assert_eq!(versions(&moto, "web", &f.template).await, (None, 1), "the group is not moved");

    // The owner adds what it was told; the copy is made, and the group moves.
    let kms = aws_sdk_kms::Client::new(&moto.other().await);
    kms.put_key_policy().key_id(&f.foreign).policy_name("default").policy(foreign_policy()).send().await.unwrap();
    converge(&moto, &config);
    assert_eq!(versions(&moto, "web", &f.template).await, (Some("2".into()), 1));
}

/// Groups `web` and `batch` on launch configuration `web-lc` of a [`fleet`]'s image, and a
/// config binding `web`.
async fn groups_on_a_launch_configuration(
) -> (Moto, Fleet, aws_config::SdkConfig, aws_sdk_autoscaling::Client, TempDir, String) {
    let moto = Moto::start();
    let f = fleet(&moto, Some(&foreign_policy())).await;
    let own = moto.own().await;
    let asc = aws_sdk_autoscaling::Client::new(&own);
    let create = asc.create_launch_configuration().launch_configuration_name("web-lc").image_id(&f.image);
    create.instance_type("t3.micro").key_name("ops").send().await.unwrap();
    for group in ["web", "batch"] {
        let create = asc.create_auto_scaling_group().auto_scaling_group_name(group).launch_configuration_name("web-lc");
        create.availability_zones("us-west-2a").min_size(0).max_size(1).send().await.unwrap();
    }
    let dir = TempDir::new();
    let config = dir.write("config.yaml", &format!("version: 1\nbindings:\n{}", binding("web", &f)));
    (moto, f, own, asc, dir, config)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_that_cannot_create_launch_configurations_is_told_to_move_to_a_template() {
    let (moto, _f, _own, _asc, _dir, config) = groups_on_a_launch_configuration().await;
    let refusal = "The Launch Configuration creation operation is not available in your account. Use launch templates to create configuration templates for your Auto Scaling groups.";
    moto.fault("autoscaling", "CreateLaunchConfiguration", 5, 400, "UnsupportedOperation", refusal);
    moto.operator(&["apply", "--config", &config]);
    let out = moto.operator(&["apply", "--config", &config]);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("this account cannot create launch configurations")
            && text.contains("Move the group to a launch template"),
        "{text}"
    );
    assert_eq!(
        count(&moto.calls(), "CreateLaunchConfiguration"),
        2,
        "once an apply: a terminal failure is not retried within it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_on_a_launch_configuration_moves_to_a_copy_of_it_and_the_original_stays() {
    let (moto, f, own, asc, _dir, config) = groups_on_a_launch_configuration().await;
    converge(&moto, &config);

    let groups = asc.describe_auto_scaling_groups().auto_scaling_group_names("web").auto_scaling_group_names("batch");
    let groups = groups.send().await.unwrap();
    let lc_of = |name: &str| {
        let g = groups.auto_scaling_groups().iter().find(|g| g.auto_scaling_group_name() == Some(name)).unwrap();
        g.launch_configuration_name().unwrap().to_owned()
    };
    assert_eq!(lc_of("batch"), "web-lc", "the other group keeps its configuration");
    let copy_lc = lc_of("web");
    assert_ne!(copy_lc, "web-lc");
    let lcs =
        asc.describe_launch_configurations().launch_configuration_names(&copy_lc).launch_configuration_names("web-lc");
    let lcs = lcs.send().await.unwrap();
    let lc =
        |name: &str| lcs.launch_configurations().iter().find(|l| l.launch_configuration_name() == Some(name)).unwrap();
    assert_eq!(lc("web-lc").image_id(), Some(f.image.as_str()), "the original is untouched");
    assert_eq!(lc(&copy_lc).key_name(), Some("ops"), "the copy keeps the original's settings");
    let copy = lc(&copy_lc).image_id().unwrap().to_owned();
    assert_eq!(image_keys(&own, &copy).await, vec![f.own_key.clone()]);

    applies_with_no_write(&moto, &config);
}

#[tokio::test(flavor = "multi_thread")]
async fn clean_up_deletes_an_unused_launch_configuration_copy_then_its_image() {
    let (moto, f, own, asc, dir, _) = groups_on_a_launch_configuration().await;
    let text = format!("version: 1\ndefaults:\n  reencryptCleanup: true\nbindings:\n{}", binding("web", &f));
    let config = dir.write("cleanup.yaml", &text);
    converge(&moto, &config);
    let out = asc.describe_auto_scaling_groups().auto_scaling_group_names("web").send().await.unwrap();
    let copy_lc = out.auto_scaling_groups()[0].launch_configuration_name().unwrap().to_owned();
    let copy = copy_lc.rsplit_once('-').map(|(_, id)| format!("ami-{id}")).unwrap();
    assert!(copy_lc.starts_with("web-lc-ami-"), "{copy_lc}");
    applies_with_no_write(&moto, &config);

    // web moves to a launch template of its own account's image: its configuration copy,
    // and then the image copy, are used by nothing. batch keeps the original.
    let snapshot = encrypted_snapshot(&own, &f.own_key).await;
    let own_image = image_from_snapshot(&own, "own", &snapshot).await;
    let template = launch_template(&own, "web-own", Some(&own_image), None).await;
    let spec = aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder().launch_template_id(template).build();
    asc.update_auto_scaling_group().auto_scaling_group_name("web").launch_template(spec).send().await.unwrap();
    moto.reset_calls();
    let out = moto.operator(&["apply", "--config", &config]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let calls = moto.calls();
    let counted = ["DeleteLaunchConfiguration", "DeregisterImage", "DeleteSnapshot"].map(|a| count(&calls, a));
    assert_eq!(counted, [1, 1, 1], "{:?}", writes(&calls));
    let names: Vec<String> = asc
        .describe_launch_configurations()
        .send()
        .await
        .unwrap()
        .launch_configurations()
        .iter()
        .filter_map(|c| c.launch_configuration_name().map(str::to_owned))
        .collect();
    assert_eq!(names, ["web-lc"], "the copy goes, the original stays");
    let ec2 = aws_sdk_ec2::Client::new(&own);
    let images = ec2.describe_images().owners("self").send().await.unwrap();
    assert!(!images.images().iter().any(|i| i.image_id() == Some(copy.as_str())), "{copy} is deregistered");
    applies_with_no_write(&moto, &config);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_instances_policy_is_pointed_at_the_new_version_and_keeps_its_overrides() {
    use aws_sdk_autoscaling::types::{LaunchTemplate, LaunchTemplateOverrides, MixedInstancesPolicy};
    let moto = Moto::start();
    let f = fleet(&moto, Some(&foreign_policy())).await;
    let own = moto.own().await;
    let asc = aws_sdk_autoscaling::Client::new(&own);
    let over = |t: &str| LaunchTemplateOverrides::builder().instance_type(t).build();
    let lt = LaunchTemplate::builder()
        .launch_template_specification(template_spec(&f.template, Some("1")))
        .overrides(over("t3.large"))
        .overrides(over("m5.large"))
        .build();
    let policy = MixedInstancesPolicy::builder().launch_template(lt).build();
    let create = asc.create_auto_scaling_group().auto_scaling_group_name("web").mixed_instances_policy(policy);
    create.availability_zones("us-west-2a").min_size(0).max_size(1).send().await.unwrap();
    let dir = TempDir::new();
    let config = dir.write("config.yaml", &format!("version: 1\nbindings:\n{}", binding("web", &f)));
    converge(&moto, &config);

    let groups = asc.describe_auto_scaling_groups().auto_scaling_group_names("web").send().await.unwrap();
    let lt = groups.auto_scaling_groups()[0].mixed_instances_policy().unwrap().launch_template().unwrap();
    let spec = lt.launch_template_specification().unwrap();
    assert_eq!((spec.launch_template_id(), spec.version()), (Some(f.template.as_str()), Some("2")));
    let types: Vec<&str> = lt.overrides().iter().filter_map(|o| o.instance_type()).collect();
    assert_eq!(types, ["t3.large", "m5.large"], "the overrides are kept");
    let copy = version_image(&moto, &f.template, "2").await;
    assert_eq!(image_keys(&own, &copy).await, vec![f.own_key.clone()]);

    applies_with_no_write(&moto, &config);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_follows_a_copy_without_holding_other_groups_and_reports_it() {
    let moto = Moto::start();
    let f = fleet(&moto, Some(&foreign_policy())).await;
    let own = moto.own().await;
    group_on_template(&own, "web", &f.template, 0, None).await;
    // Another group, on a key of its own, in the same config.
    let plain = create_key(&own, None).await;
    create_asgs(&own, &["api"]).await;
    let dir = TempDir::new();
    let text = format!(
        "version: 1\nbindings:\n{}  - {{asg: api, account: \"{OWN}\", key: {plain}, serviceLinkedRoleSuffix: api}}\n",
        binding("web", &f)
    );
    let config = dir.write("config.yaml", &text);
    let cmd = moto.operator_command(&[]);
    let mut d = Daemon::start_with_args(cmd, &config, "10m", &["--copy-recheck-interval", "2s"]);

    // The copy is seen pending and said so; the other group is ready meanwhile.
    let progress = d.wait_log(
        |v| v["message"] == "AWS is still at work for this binding; looking again soon",
        Duration::from_secs(30),
    );
    assert!(progress["detail"].as_str().unwrap().contains("pending"), "{progress}");
    d.wait_log(|v| v["message"] == "pass finished" && v["ready_total"] == 2, Duration::from_secs(30));
    let (code, body) = d.get("/status");
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let web = status["bindings"].as_array().unwrap().iter().find(|b| b["asg"] == "web").unwrap().clone();
    let cond = web["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "ImagesReencrypted").unwrap().clone();
    assert_eq!((cond["status"].as_str(), cond["reason"].as_str()), (Some("True"), Some("OwnKeyOnly")), "{web}");
    assert_eq!(versions(&moto, "web", &f.template).await, (Some("2".into()), 1));
    // While the copy was pending, api was ready: the copy held up nothing else.
    let finished: Vec<serde_json::Value> = d.logs().into_iter().filter(|v| v["message"] == "pass finished").collect();
    assert!(finished.iter().any(|v| v["ready_total"] == 1), "{finished:#?}");
    d.terminate(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_named_by_a_parameter_is_not_frozen_into_a_copy() {
    let moto = Moto::start();
    let f = fleet(&moto, Some(&foreign_policy())).await;
    let own = moto.own().await;
    put_parameter(&moto, "/golden/ami", &f.image);
    let template = launch_template(&own, "golden", Some("resolve:ssm:/golden/ami"), None).await;
    group_on_template(&own, "web", &template, 0, None).await;
    let dir = TempDir::new();
    let config = dir.write("config.yaml", &format!("version: 1\nbindings:\n{}", binding("web", &f)));

    let out = moto.operator(&["apply", "--config", &config]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let calls = moto.calls();
    for write in ["CopyImage", "CreateLaunchTemplateVersion", "ModifyLaunchTemplate"] {
        assert_eq!(count(&calls, write), 0, "{write}: {:?}", writes(&calls));
    }
    let status = moto.operator(&["status", "--config", &config, "--output", "json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    let b = &status["bindings"][0];
    let cond = b["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "ImagesReencrypted").unwrap();
    assert_eq!((&cond["status"], &cond["reason"]), (&"False".into(), &"ImageFromParameter".into()), "{status}");
    assert!(cond["message"].as_str().unwrap().contains("/golden/ami"), "{cond}");
    assert_eq!(b["verdict"]["type"], "Failed", "{status}");
    let (named, default) = versions(&moto, "web", &template).await;
    assert_eq!((named.as_deref(), default), (None, 1), "the template and the group are left as they were");
}

/// The value of parameter `name` of `conf`'s account.
async fn parameter(conf: &aws_config::SdkConfig, name: &str) -> String {
    let ssm = aws_sdk_ssm::Client::new(conf);
    let out = ssm.get_parameter().name(name).send().await.unwrap();
    out.parameter().unwrap().value().unwrap().to_owned()
}

/// The image version `version` of `template` names, as written (a parameter unresolved).
async fn version_image_as_written(moto: &Moto, template: &str, version: &str) -> String {
    let ec2 = aws_sdk_ec2::Client::new(&moto.own().await);
    let out =
        ec2.describe_launch_template_versions().launch_template_id(template).versions(version).resolve_alias(false);
    let out = out.send().await.unwrap();
    out.launch_template_versions()[0].launch_template_data().unwrap().image_id().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parameter_image_is_published_to_the_operators_parameter_and_followed_through_it() {
    use crate::least_privilege::{decisions, operator_user, policy_of, run_as};
    let moto = Moto::start();
    let f = fleet(&moto, Some(&foreign_policy())).await;
    let (own, other) = (moto.own().await, moto.other().await);
    put_parameter(&moto, "/golden/ami", &f.image);
    let template = launch_template(&own, "golden", Some("resolve:ssm:/golden/ami"), None).await;
    group_on_template(&own, "web", &template, 0, None).await;
    let dir = TempDir::new();
    let text = format!("version: 1\nbindings:\n{}    reencryptParameter: /asg-cmk-operator/web\n", binding("web", &f));
    let config = dir.write("config.yaml", &text);
    let policy = policy_of(&moto, &config, OWN);
    let operator = operator_user(&own).await;
    moto.hook("POST", "/_launcher/identity-policies", serde_json::json!({"caller": operator.0, "policy": policy}));
    let apply = || run_as(&moto, &operator, &["apply", "--config", &config]);

    // Copied, published to the operator's parameter, and a version that resolves it.
    apply();
    let out = apply();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let copy = parameter(&own, "/asg-cmk-operator/web").await;
    assert_ne!(copy, f.image);
    assert_eq!(image_keys(&own, &copy).await, vec![f.own_key.clone()]);
    assert_eq!(versions(&moto, "web", &template).await, (Some("2".into()), 1));
    assert_eq!(version_image_as_written(&moto, &template, "2").await, "resolve:ssm:/asg-cmk-operator/web");
    applies_with_no_write(&moto, &config);

    // The pipeline publishes another image of OTHER's: copied and published, and the group
    // follows it through the same version.
    let snapshot = encrypted_snapshot(&other, &f.foreign).await;
    let next_image = image_from_snapshot(&other, "golden-2", &snapshot).await;
    share_image(&other, &next_image, OWN).await;
    share_snapshot(&other, &snapshot, OWN).await;
    put_parameter(&moto, "/golden/ami", &next_image);
    moto.reset_calls();
    apply();
    let out = apply();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let calls = moto.calls();
    let counted = ["CopyImage", "PutParameter", "CreateLaunchTemplateVersion", "UpdateAutoScalingGroup"];
    assert_eq!(counted.map(|a| count(&calls, a)), [1, 1, 0, 0], "{:?}", writes(&calls));
    let next_copy = parameter(&own, "/asg-cmk-operator/web").await;
    assert!(next_copy != copy && next_copy != next_image, "{next_copy}");
    assert_eq!(image_keys(&own, &next_copy).await, vec![f.own_key.clone()]);
    assert_eq!(versions(&moto, "web", &template).await, (Some("2".into()), 1));
    applies_with_no_write(&moto, &config);
    // Following the pipeline's parameter costs, a converged pass: the operator's parameter
    // read once, and the source version's image resolved once.
    let calls = moto.calls();
    assert_eq!(count(&calls, "GetParameter"), 1, "{calls:?}");
    checked_within_the_policy(&decisions(&moto), &["ssm:GetParameter", "ssm:PutParameter", "ssm:GetParameters"]);
}

/// No call was refused, and each of `actions` was checked and allowed.
fn checked_within_the_policy(decisions: &[serde_json::Value], actions: &[&str]) {
    let refused: Vec<&serde_json::Value> = decisions.iter().filter(|d| d["allowed"] != true).collect();
    assert!(refused.is_empty(), "{refused:#?}");
    for action in actions {
        assert!(decisions.iter().any(|d| d["action"] == *action), "{action} was never checked");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipelines_versions_neither_confuse_the_operator_nor_move_the_default() {
    let (moto, f, own, _dir, config) = web_on_its_template().await;
    let ec2 = aws_sdk_ec2::Client::new(&own);
    let pipeline = |image: &str| {
        let data = aws_sdk_ec2::types::RequestLaunchTemplateData::builder().image_id(image).build();
        let v = ec2.create_launch_template_version().launch_template_id(&f.template).source_version("1");
        v.version_description("pipeline build").launch_template_data(data).send()
    };

    // The copy is under way when a pipeline adds version 2, with the same source image.
    let first = moto.operator(&["apply", "--config", &config]);
    assert!(!first.status.success(), "the copy is pending: {}", stdout(&first));
    pipeline(&f.image).await.unwrap();
    moto.reset_calls();
    let second = moto.operator(&["apply", "--config", &config]);
    assert!(second.status.success(), "{}\n{}", stdout(&second), stderr(&second));
    assert_eq!(count(&moto.calls(), "CreateLaunchTemplateVersion"), 1, "{:?}", writes(&moto.calls()));
    assert_eq!(count(&moto.calls(), "ModifyLaunchTemplate"), 0);
    // The operator's version (3, from the version the group launched) is found by its image
    // among the pipeline's, and the group is pointed at it; the default stays.
    assert_eq!(versions(&moto, "web", &f.template).await, (Some("3".into()), 1));
    assert_eq!(image_keys(&own, &version_image(&moto, &f.template, "3").await).await, vec![f.own_key.clone()]);
    applies_with_no_write(&moto, &config);

    // A later pipeline version changes nothing for the group, pinned to the operator's.
    pipeline(&f.image).await.unwrap();
    applies_with_no_write(&moto, &config);
    assert_eq!(versions(&moto, "web", &f.template).await, (Some("3".into()), 1));
}

/// What version `version` of `template` launches: its image and instance type.
async fn version_data(moto: &Moto, template: &str, version: &str) -> (String, Option<String>) {
    let ec2 = aws_sdk_ec2::Client::new(&moto.own().await);
    let out = ec2.describe_launch_template_versions().launch_template_id(template).versions(version).send();
    let out = out.await.unwrap();
    let data = out.launch_template_versions()[0].launch_template_data().unwrap();
    (data.image_id().unwrap().to_owned(), data.instance_type().map(|t| t.as_str().to_owned()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipelines_new_default_is_followed_with_its_change_kept_and_one_copy_in_all() {
    use aws_sdk_ec2::types::{InstanceType, RequestLaunchTemplateData};
    let (moto, f, own, _dir, config) = web_on_its_template().await;
    converge(&moto, &config);
    assert_eq!(versions(&moto, "web", &f.template).await, (Some("2".into()), 1));
    let ec2 = aws_sdk_ec2::Client::new(&own);
    let release = |image: String, version: &'static str| {
        let ec2 = ec2.clone();
        let template = f.template.clone();
        async move {
            let data = RequestLaunchTemplateData::builder().image_id(image).instance_type(InstanceType::M5Large);
            let v = ec2.create_launch_template_version().launch_template_id(&template).source_version("1");
            v.version_description("pipeline").launch_template_data(data.build()).send().await.unwrap();
            ec2.modify_launch_template().launch_template_id(&template).default_version(version).send().await.unwrap();
        }
    };

    // The pipeline's version 3 changes the instance type, keeps the image, and is made the
    // default: the group follows it onto a version of the operator's made from it, with the
    // copy made before. The default stays the pipeline's.
    release(f.image.clone(), "3").await;
    moto.reset_calls();
    let out = moto.operator(&["apply", "--config", &config]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let calls = moto.calls();
    assert_eq!(count(&calls, "CopyImage"), 0, "{:?}", writes(&calls));
    assert_eq!(count(&calls, "CreateLaunchTemplateVersion"), 1, "{:?}", writes(&calls));
    assert_eq!(count(&calls, "ModifyLaunchTemplate"), 0);
    assert_eq!(versions(&moto, "web", &f.template).await, (Some("4".into()), 3));
    let (image, instance_type) = version_data(&moto, &f.template, "4").await;
    assert_eq!(image, version_image(&moto, &f.template, "2").await, "the same copy");
    assert_eq!(instance_type.as_deref(), Some("m5.large"), "the pipeline's change is kept");
    applies_with_no_write(&moto, &config);

    // The pipeline then publishes an image of the group's own account, encrypted with its
    // own key: the group follows $Default again, and nothing more is made.
    let snapshot = encrypted_snapshot(&own, &f.own_key).await;
    let own_image = image_from_snapshot(&own, "golden-own", &snapshot).await;
    release(own_image, "5").await;
    moto.reset_calls();
    let out = moto.operator(&["apply", "--config", &config]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let calls = moto.calls();
    assert_eq!(count(&calls, "UpdateAutoScalingGroup"), 1, "{:?}", writes(&calls));
    assert_eq!(count(&calls, "CreateLaunchTemplateVersion") + count(&calls, "CopyImage"), 0);
    assert_eq!(versions(&moto, "web", &f.template).await, (Some("$Default".into()), 5));
    applies_with_no_write(&moto, &config);
}

/// Whether image `image` of `conf`'s account is still registered, and snapshot `snapshot`
/// still there.
async fn image_and_snapshot_exist(conf: &aws_config::SdkConfig, image: &str, snapshot: &str) -> (bool, bool) {
    let ec2 = aws_sdk_ec2::Client::new(conf);
    let images = ec2.describe_images().owners("self").send().await.unwrap();
    let image = images.images().iter().any(|i| i.image_id() == Some(image));
    let snapshots = ec2.describe_snapshots().owner_ids("self").send().await.unwrap();
    (image, snapshots.snapshots().iter().any(|s| s.snapshot_id() == Some(snapshot)))
}

/// The image of version `version` of `template` and its root snapshot.
async fn copy_of(moto: &Moto, template: &str, version: &str) -> (String, String) {
    let image = version_image(moto, template, version).await;
    let ec2 = aws_sdk_ec2::Client::new(&moto.own().await);
    let out = ec2.describe_images().image_ids(&image).send().await.unwrap();
    let snapshot = out.images()[0].block_device_mappings()[0].ebs().unwrap().snapshot_id().unwrap().to_owned();
    (image, snapshot)
}

#[tokio::test(flavor = "multi_thread")]
async fn clean_up_removes_only_the_copy_nothing_launches_within_the_generated_policy() {
    use crate::least_privilege::{decisions, operator_user, policy_of, run_as};
    // web and api, each on a template of its own with an image OTHER shared, both
    // re-encrypted, with clean-up on; the operator runs under its generated policy.
    let moto = Moto::start();
    let f = fleet(&moto, Some(&foreign_policy())).await;
    let (own, other) = (moto.own().await, moto.other().await);
    let snapshot = encrypted_snapshot(&other, &f.foreign).await;
    let image = image_from_snapshot(&other, "golden-api", &snapshot).await;
    share_image(&other, &image, OWN).await;
    share_snapshot(&other, &snapshot, OWN).await;
    let api = launch_template(&own, "api", Some(&image), None).await;
    group_on_template(&own, "web", &f.template, 0, None).await;
    group_on_template(&own, "api", &api, 0, None).await;
    let dir = TempDir::new();
    let text = format!(
        "version: 1\ndefaults:\n  reencryptCleanup: true\nbindings:\n{}{}",
        binding("web", &f),
        binding("api", &f)
    );
    let config = dir.write("config.yaml", &text);
    let policy = policy_of(&moto, &config, OWN);
    let sids: Vec<&str> = policy["Statement"].as_array().unwrap().iter().filter_map(|s| s["Sid"].as_str()).collect();
    assert!(sids.contains(&"CleanUpImageCopies"), "{sids:?}");
    let operator = operator_user(&own).await;
    moto.hook("POST", "/_launcher/identity-policies", serde_json::json!({"caller": operator.0, "policy": policy}));
    let apply = || run_as(&moto, &operator, &["apply", "--config", &config]);
    apply();
    let out = apply();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let (web_copy, web_snapshot) = copy_of(&moto, &f.template, "2").await;
    let (api_copy, api_snapshot) = copy_of(&moto, &api, "2").await;
    moto.reset_calls();
    let out = apply();
    assert!(
        out.status.success() && writes(&moto.calls()).is_empty(),
        "every copy is in use: {:?}",
        writes(&moto.calls())
    );

    // web's pipeline publishes an image of OWN's own key as the default: web follows
    // $Default again, and then its copy, which nothing launches or names any more, goes
    // with its snapshot, in the same apply. api's copy stays.
    let own_snapshot = encrypted_snapshot(&own, &f.own_key).await;
    let own_image = image_from_snapshot(&own, "golden-own", &own_snapshot).await;
    let ec2 = aws_sdk_ec2::Client::new(&own);
    let data = aws_sdk_ec2::types::RequestLaunchTemplateData::builder().image_id(own_image).build();
    ec2.create_launch_template_version()
        .launch_template_id(&f.template)
        .launch_template_data(data)
        .send()
        .await
        .unwrap();
    ec2.modify_launch_template().launch_template_id(&f.template).default_version("3").send().await.unwrap();
    moto.reset_calls();
    let out = apply();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains(&web_copy), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(versions(&moto, "web", &f.template).await, (Some("$Default".into()), 3));
    let calls = moto.calls();
    let counted = ["UpdateAutoScalingGroup", "DeregisterImage", "DeleteSnapshot"].map(|a| count(&calls, a));
    assert_eq!(counted, [1, 1, 1], "{:?}\n{}", writes(&calls), stderr(&out));
    assert_eq!(image_and_snapshot_exist(&own, &web_copy, &web_snapshot).await, (false, false));
    assert_eq!(image_and_snapshot_exist(&own, &api_copy, &api_snapshot).await, (true, true));
    checked_within_the_policy(&decisions(&moto), &["ec2:DeregisterImage", "ec2:DeleteSnapshot"]);
    moto.reset_calls();
    let out = apply();
    assert!(out.status.success() && writes(&moto.calls()).is_empty(), "{:?}", writes(&moto.calls()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_image_with_a_billing_code_is_not_copied_and_the_binding_says_why() {
    // OTHER's Windows image (billing product bp-6ba54002), its snapshot on OTHER's key,
    // shared with OWN whole: EC2 would refuse the copy, so none is asked for.
    let moto = Moto::start();
    let (own, other) = (moto.own().await, moto.other().await);
    let foreign = create_key(&other, Some(&foreign_policy())).await;
    let snapshot = encrypted_snapshot(&other, &foreign).await;
    let root = aws_sdk_ec2::types::BlockDeviceMapping::builder()
        .device_name("/dev/sda1")
        .ebs(aws_sdk_ec2::types::EbsBlockDevice::builder().snapshot_id(&snapshot).build())
        .build();
    let ec2 = aws_sdk_ec2::Client::new(&other);
    let registered = ec2.register_image().name("windows").root_device_name("/dev/sda1").block_device_mappings(root);
    let image = registered.billing_products("bp-6ba54002").send().await.unwrap().image_id().unwrap().to_owned();
    share_image(&other, &image, OWN).await;
    share_snapshot(&other, &snapshot, OWN).await;
    let own_key = create_key(&own, None).await;
    let template = launch_template(&own, "web", Some(&image), None).await;
    let f = Fleet { foreign, own_key, image, template, snapshot };
    let (_own, _dir, config) = web_on(&moto, &f).await;

    moto.reset_calls();
    let out = moto.operator(&["apply", "--config", &config]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("billing code RunInstances:0002 (Windows)"), "{}", stdout(&out));
    assert_eq!(count(&moto.calls(), "CopyImage"), 0, "{:?}", writes(&moto.calls()));
    let status = moto.operator(&["status", "--config", &config, "--output", "json"]);
    assert!(stdout(&status).contains("EC2 does not copy such an image"), "{}", stdout(&status));
    // The emulator refuses such a copy as EC2 does.
    let own_ec2 = aws_sdk_ec2::Client::new(&own);
    let e = own_ec2.copy_image().source_image_id(&f.image).source_region("us-west-2").name("try").send().await;
    let e = e.unwrap_err();
    assert_eq!(aws_sdk_ec2::error::ProvideErrorMetadata::code(&e), Some("InvalidRequest"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_copy_deregistered_is_copied_again_not_answered_by_its_old_token() {
    // The owner lets OWN create grants (the dry run passes) but not decrypt: the copy fails.
    let moto = Moto::start();
    let short = owners_policy_and(serde_json::json!([
        {"Sid": "GroupAccount", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{OWN}:root")},
         "Action": ["kms:DescribeKey", "kms:CreateGrant"], "Resource": "*"}]));
    let f = fleet(&moto, Some(&short)).await;
    let (own, _dir, config) = web_on(&moto, &f).await;
    let failed = moto.operator(&["apply", "--config", &config]);
    assert!(!failed.status.success());
    let again = moto.operator(&["apply", "--config", &config]);
    assert!(stdout(&again).contains("is failed"), "{}", stdout(&again));
    let ec2 = aws_sdk_ec2::Client::new(&own);
    let copies = ec2.describe_images().owners("self").send().await.unwrap();
    let failed_id = copies.images().iter().find(|i| i.name().is_some_and(|n| n.starts_with("asg-cmk-operator/")));
    let failed_id = failed_id.unwrap().image_id().unwrap().to_owned();

    // The owner allows the rest, and the failed copy is deregistered, as the status says.
    let kms = aws_sdk_kms::Client::new(&moto.other().await);
    kms.put_key_policy().key_id(&f.foreign).policy_name("default").policy(foreign_policy()).send().await.unwrap();
    ec2.deregister_image().image_id(&failed_id).send().await.unwrap();
    moto.reset_calls();
    moto.operator(&["apply", "--config", &config]);
    assert_eq!(count(&moto.calls(), "CopyImage"), 2, "the old token's answer, then a token of this attempt");
    converge(&moto, &config);
    let copy = web_launches_a_copy_under_its_own_key(&moto, &own, &f).await;
    assert_ne!(copy, failed_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_copies_in_progress_is_waited_out_not_given_up() {
    let (moto, f, own, _dir, config) = web_on_its_template().await;
    moto.fault("ec2", "CopyImage", 1, 400, "ResourceLimitExceeded", "You have too many snapshot copies in progress");
    let first = moto.operator(&["apply", "--config", &config]);
    let text = stdout(&first);
    assert!(!text.contains("ResourceLimitExceeded") || text.contains("tried again"), "{text}");
    converge(&moto, &config);
    assert_eq!(count(&moto.calls(), "CopyImage"), 2, "refused once, then made");
    web_launches_a_copy_under_its_own_key(&moto, &own, &f).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_whose_snapshots_are_not_shared_waits_for_its_owner_and_is_not_copied() {
    let moto = Moto::start();
    let f = fleet_unshared(&moto, Some(&foreign_policy())).await;
    let (_own, _dir, config) = web_on(&moto, &f).await;

    let out = moto.operator(&["apply", "--config", &config]);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    assert_eq!(count(&moto.calls(), "CopyImage"), 0, "a copy EC2 would refuse is not tried");
    let ask = format!(
        "aws ec2 modify-snapshot-attribute --snapshot-id {} --attribute createVolumePermission --operation-type add --user-ids {OWN}",
        f.snapshot
    );
    assert!(text.contains("awaiting image owner") && text.contains(&ask), "{text}");
    let status = moto.operator(&["status", "--config", &config, "--output", "json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    let b = &status["bindings"][0];
    let cond = b["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "ImagesReencrypted").unwrap();
    assert_eq!(cond["reason"], "SnapshotNotShared", "{status}");
    assert_eq!(b["verdict"]["type"], "Waiting", "{status}");

    // The owner shares the snapshot: the copy is made, and the group moves.
    share_snapshot(&moto.other().await, &f.snapshot, OWN).await;
    converge(&moto, &config);
    assert_eq!(versions(&moto, "web", &f.template).await, (Some("2".into()), 1));
}

/// The key policy of a key `OTHER` shares with `OWN` the way the KMS console shares a key:
/// use, and grants for AWS resources only.
fn console_policy() -> String {
    owners_policy_and(serde_json::json!([
        {"Sid": "Use", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{OWN}:root")},
         "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"], "Resource": "*"},
        {"Sid": "Attachment", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{OWN}:root")},
         "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"], "Resource": "*",
         "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}}]))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_shared_the_consoles_way_is_judged_on_its_policy_and_copied() {
    // A dry run of a plain grant would be refused, yet the copy works. The owner is under
    // `accounts`, so its policy is read and judged.
    let moto = Moto::start();
    let f = fleet(&moto, Some(&console_policy())).await;
    let (own, dir, _) = web_on(&moto, &f).await;
    let text = format!(
        "version: 1\naccounts:\n  - id: \"{OTHER}\"\n    roleArn: {OTHER_ROLE}\nbindings:\n{}",
        binding("web", &f)
    );
    let config = dir.write("accounts.yaml", &text);
    converge(&moto, &config);
    let calls = moto.calls_by_account();
    assert!(
        !calls.iter().any(|(account, _, action)| account == OWN && action == "CreateGrant"),
        "no dry run of a plain grant: {calls:?}"
    );
    assert!(calls.iter().any(|(account, _, action)| account == OTHER && action == "GetKeyPolicy"), "{calls:?}");
    web_launches_a_copy_under_its_own_key(&moto, &own, &f).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handoff_key_shared_the_consoles_way_is_copied_though_a_plain_grant_is_refused() {
    // The owner is not under `accounts`: its policy cannot be read, and the dry run of a
    // plain grant is refused. OWN could describe the key, so it is shared with OWN; the copy
    // is tried, and works.
    let moto = Moto::start();
    let f = fleet(&moto, Some(&console_policy())).await;
    let (own, _dir, config) = web_on(&moto, &f).await;
    converge(&moto, &config);
    let calls = moto.calls_by_account();
    assert!(
        calls.iter().any(|(account, _, action)| account == OWN && action == "CreateGrant"),
        "the dry run: {calls:?}"
    );
    web_launches_a_copy_under_its_own_key(&moto, &own, &f).await;
    applies_with_no_write(&moto, &config);
}
