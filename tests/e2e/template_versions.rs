//! Launch template versions against the emulator, over two passes on one `Aws`: each
//! (template, version) is read at most once a pass, a numbered one not again in later
//! passes, `$Latest` every pass, and an image a Systems Manager parameter names is
//! resolved anew every pass.

use std::sync::Arc;

use crate::common::*;
use asg_cmk_operator::core::launch::GroupLaunch;
use asg_cmk_operator::shell::aws::{self, discover, Account, Aws, CallStats};
use aws_sdk_autoscaling::types::{LaunchTemplate as AsgLaunchTemplate, LaunchTemplateOverrides, MixedInstancesPolicy};
use serde_json::Value;

/// The operator's AWS access, pointed at `moto`, and its own account.
async fn connect(moto: &Moto) -> (Aws, Arc<Account>) {
    let aws = Aws::with_config(moto.own().await, Arc::new(CallStats::default())).await.expect("connect");
    let own = aws.account(aws.caller()).unwrap();
    (aws, own)
}

/// One pass of launch reads over every group of the region, as the daemon's observe makes
/// them: what each group uses, by group name.
async fn pass(own: &Arc<Account>) -> Vec<(String, GroupLaunch)> {
    let groups = discover::describe_groups(own, REGION, &[]).await.unwrap();
    let sources: Vec<_> = groups.iter().map(|(a, g)| (a.clone(), g.sources.clone())).collect();
    let launches = discover::group_launches(own, REGION, &sources, aws::READ_CONCURRENCY).await;
    launches.into_iter().map(|(a, r)| (a.name.clone(), r.unwrap_or_else(|f| panic!("{}: {f}", a.name)))).collect()
}

fn launch<'a>(launches: &'a [(String, GroupLaunch)], group: &str) -> &'a GroupLaunch {
    &launches.iter().find(|(g, _)| g == group).unwrap_or_else(|| panic!("no group {group}")).1
}

/// The keys a group uses, with where each was found.
fn keys(launches: &[(String, GroupLaunch)], group: &str) -> Vec<(String, String)> {
    launch(launches, group).keys.iter().map(|k| (k.key_ref.clone(), k.source.clone())).collect()
}

/// The DescribeLaunchTemplateVersions the emulator received since the last reset, as
/// (template id or name, version, ResolveAlias), sorted; the log is reset.
fn version_reads(moto: &Moto) -> Vec<(String, String, String)> {
    let calls = moto.hook("GET", "/_launcher/calls", Value::Null);
    moto.reset_calls();
    let mut reads: Vec<_> = calls["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "DescribeLaunchTemplateVersions")
        .map(|c| {
            let p = |k: &str| c["params"][k].as_str().unwrap_or_default().to_owned();
            let template =
                if p("LaunchTemplateId").is_empty() { p("LaunchTemplateName") } else { p("LaunchTemplateId") };
            (template, p("LaunchTemplateVersion.1"), p("ResolveAlias"))
        })
        .collect();
    reads.sort();
    reads
}

fn read(template: &str, version: &str, resolve: bool) -> (String, String, String) {
    (template.to_owned(), version.to_owned(), resolve.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_numbered_version_is_read_once_in_a_pass_and_not_again_while_latest_is_read_each_pass() {
    let moto = Moto::start();
    let own = moto.own().await;
    let (shared_key, old_key, new_key) =
        (create_key(&own, None).await, create_key(&own, None).await, create_key(&own, None).await);
    let shared = launch_template(&own, "shared", None, Some(&shared_key)).await;
    let moving = launch_template(&own, "moving", None, Some(&old_key)).await;
    let asc = aws_sdk_autoscaling::Client::new(&own);
    let group = |name: &str| {
        asc.create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .availability_zones("us-west-2a")
            .min_size(0)
            .max_size(1)
    };
    // Three groups reach version 1 of "shared": two as their own template, one through an
    // override of its mixed instances policy, whose own template is "moving" at $Latest.
    for name in ["web-a", "web-b"] {
        group(name).launch_template(template_spec(&shared, Some("1"))).send().await.unwrap();
    }
    let over = LaunchTemplateOverrides::builder()
        .instance_type("t3.large")
        .launch_template_specification(template_spec(&shared, Some("1")))
        .build();
    let policy = MixedInstancesPolicy::builder()
        .launch_template(
            AsgLaunchTemplate::builder()
                .launch_template_specification(template_spec(&moving, Some("$Latest")))
                .overrides(over)
                .build(),
        )
        .build();
    group("mixed").mixed_instances_policy(policy).send().await.unwrap();
    group("tip").launch_template(template_spec(&moving, Some("$Latest"))).send().await.unwrap();

    let (aws, account) = connect(&moto).await;
    moto.reset_calls();
    let first = pass(&account).await;
    let mut both = vec![read(&moving, "$Latest", false), read(&shared, "1", false)];
    both.sort();
    assert_eq!(version_reads(&moto), both);
    let shared_here =
        |via: &str| (shared_key.clone(), format!("launch template {shared} (shared) version 1, {via}: /dev/sdb"));
    assert_eq!(keys(&first, "web-a"), [shared_here("the group's launch template")]);
    assert_eq!(keys(&first, "web-b"), [shared_here("the group's launch template")]);
    assert!(keys(&first, "mixed").contains(&shared_here("an override of its mixed instances policy")), "{first:?}");
    assert_eq!(keys(&first, "tip")[0].0, old_key);

    // $Latest moves; version 1 does not.
    let ec2 = aws_sdk_ec2::Client::new(&own);
    let data = template_data(None, Some(&new_key));
    ec2.create_launch_template_version().launch_template_id(&moving).launch_template_data(data).send().await.unwrap();
    let second = pass(&account).await;
    assert_eq!(version_reads(&moto), [read(&moving, "$Latest", false)]);
    assert_eq!(keys(&second, "web-a"), keys(&first, "web-a"), "version 1 answered as it was read");
    assert_eq!(keys(&second, "mixed")[0].0, new_key);
    assert_eq!(
        keys(&second, "tip"),
        [(
            new_key.clone(),
            format!("launch template {moving} (moving) version 2 ($Latest), the group's launch template: /dev/sdb")
        )]
    );
    // The operator's own count agrees: three reads over the two passes.
    let stats = aws.stats().snapshot();
    assert_eq!(stats.get(&("ec2", "DescribeLaunchTemplateVersions", "success")), Some(&3), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_a_parameter_names_is_resolved_every_pass_though_its_version_is_kept() {
    let moto = Moto::start();
    let own = moto.own().await;
    let (old_key, new_key) = (create_key(&own, None).await, create_key(&own, None).await);
    let old_image = image_from_snapshot(&own, "golden-1", &encrypted_snapshot(&own, &old_key).await).await;
    let new_image = image_from_snapshot(&own, "golden-2", &encrypted_snapshot(&own, &new_key).await).await;
    put_parameter(&moto, "/golden/ami", &old_image);
    let lt = launch_template(&own, "golden", Some("resolve:ssm:/golden/ami"), None).await;
    aws_sdk_autoscaling::Client::new(&own)
        .create_auto_scaling_group()
        .auto_scaling_group_name("web")
        .launch_template(template_spec(&lt, Some("1")))
        .availability_zones("us-west-2a")
        .min_size(0)
        .max_size(1)
        .send()
        .await
        .unwrap();

    let (_aws, account) = connect(&moto).await;
    moto.reset_calls();
    let first = pass(&account).await;
    let reads = version_reads(&moto);
    let used: Vec<String> = keys(&first, "web").into_iter().map(|(k, _)| k).collect();
    assert_eq!(used, [old_key], "{first:?}");
    // The version as stored (kept), then the AMI its parameter holds now (not kept).
    assert_eq!(reads, [read(&lt, "1", false), read(&lt, "1", true)]);

    // The parameter now names another AMI, under the same version.
    put_parameter(&moto, "/golden/ami", &new_image);
    let second = pass(&account).await;
    let reads = version_reads(&moto);
    assert_eq!(
        keys(&second, "web"),
        [(new_key.clone(), format!("AMI {new_image}: /dev/xvda, snapshot {}", snapshot_of(&own, &new_image).await))]
    );
    assert_eq!(reads, [read(&lt, "1", true)]);
}

/// The snapshot behind an image's root volume.
async fn snapshot_of(conf: &aws_config::SdkConfig, image: &str) -> String {
    let out = aws_sdk_ec2::Client::new(conf).describe_images().image_ids(image).send().await.unwrap();
    let root = &out.images()[0].block_device_mappings()[0];
    root.ebs().unwrap().snapshot_id().unwrap().to_owned()
}
