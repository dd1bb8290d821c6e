//! "Converged" means the group can launch: key health, aliases, several keys per group.

mod common;

use common::*;

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
