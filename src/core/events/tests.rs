use super::*;

const ACCT: &str = "111122223333";
const KEY: &str = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// An EventBridge event around a CloudTrail record, as EventBridge delivers it.
fn api_call(source: &str, event_source: &str, name: &str, params: Value) -> String {
    serde_json::json!({
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "AWS API Call via CloudTrail",
        "source": source,
        "account": ACCT,
        "time": "2026-12-07T10:00:00Z",
        "region": "us-west-2",
        "resources": [],
        "detail": {
            "eventVersion": "1.08",
            "eventTime": "2026-12-07T10:00:00Z",
            "eventSource": event_source,
            "eventName": name,
            "awsRegion": "us-west-2",
            "requestParameters": params,
            "responseElements": null,
            "eventType": "AwsApiCall",
            "recipientAccountId": ACCT
        }
    })
    .to_string()
}

fn desired() -> Desired {
    let text = format!(
        "version: 1\nbindings:\n  - {{asg: web, account: \"{ACCT}\", key: {KEY}, serviceLinkedRoleSuffix: CMK}}\n  - {{asg: api, account: \"{ACCT}\", key: \"arn:aws:kms:us-west-2:{ACCT}:key/22222222-2222-2222-2222-222222222222\"}}\n"
    );
    crate::core::config::parse(&text, "t").unwrap()
}

fn touched(body: &str) -> Result<Touch, Dropped> {
    let e = parse(body).map_err(|(d, _)| d)?;
    let mut templates = Templates::new();
    templates.entry("id:lt-0abc".into()).or_default().insert(desired().bindings[1].asg.clone());
    touches(&e, &desired(), &templates)
}

fn keys(t: &Touch) -> Vec<&str> {
    t.keys.iter().map(|k| k.as_str()).collect()
}

#[test]
fn a_key_event_touches_the_units_of_that_key_by_arn_or_id() {
    let by_id = api_call(
        "aws.kms",
        "kms.amazonaws.com",
        "PutKeyPolicy",
        serde_json::json!({"keyId": "1234abcd-12ab-34cd-56ef-1234567890ab", "policyName": "default"}),
    );
    assert_eq!(keys(&touched(&by_id).unwrap()), [KEY]);
    let by_arn =
        api_call("aws.kms", "kms.amazonaws.com", "RevokeGrant", serde_json::json!({"keyId": KEY, "grantId": "g"}));
    assert_eq!(keys(&touched(&by_arn).unwrap()), [KEY]);
    let other = api_call(
        "aws.kms",
        "kms.amazonaws.com",
        "DisableKey",
        serde_json::json!({"keyId": "99999999-1111-1111-1111-111111111111"}),
    );
    assert_eq!(touched(&other), Err(Dropped::NotCovered));
}

#[test]
fn a_group_template_or_role_event_touches_its_groups_keys() {
    let group = api_call(
        "aws.autoscaling",
        "autoscaling.amazonaws.com",
        "UpdateAutoScalingGroup",
        serde_json::json!({"autoScalingGroupName": "web", "serviceLinkedRoleARN": "x"}),
    );
    assert_eq!(keys(&touched(&group).unwrap()), [KEY]);
    let template = api_call(
        "aws.ec2",
        "ec2.amazonaws.com",
        "CreateLaunchTemplateVersion",
        serde_json::json!({"CreateLaunchTemplateVersionRequest": {"LaunchTemplateId": "lt-0abc", "LaunchTemplateData": {}}}),
    );
    assert_eq!(
        keys(&touched(&template).unwrap()),
        ["arn:aws:kms:us-west-2:111122223333:key/22222222-2222-2222-2222-222222222222"]
    );
    let role = api_call(
        "aws.iam",
        "iam.amazonaws.com",
        "DeleteServiceLinkedRole",
        serde_json::json!({"roleName": "AWSServiceRoleForAutoScaling_CMK"}),
    );
    assert_eq!(keys(&touched(&role).unwrap()), [KEY]);
    let tags = api_call(
        "aws.autoscaling",
        "autoscaling.amazonaws.com",
        "CreateOrUpdateTags",
        serde_json::json!({"tags": [{"resourceId": "nobody", "resourceType": "auto-scaling-group", "key": "k", "value": "v"}]}),
    );
    assert_eq!(touched(&tags), Err(Dropped::NotCovered), "no selector, no bound group");
}

#[test]
fn a_launch_failure_event_reports_the_launch_of_a_bound_group() {
    let body = serde_json::json!({
        "version": "0", "id": "e1", "detail-type": "EC2 Instance Launch Unsuccessful", "source": "aws.autoscaling",
        "account": ACCT, "time": "2026-12-07T10:00:00Z", "region": "us-west-2",
        "resources": [format!("arn:aws:autoscaling:us-west-2:{ACCT}:autoScalingGroup:x:autoScalingGroupName/web")],
        "detail": {"StatusCode": "Failed", "AutoScalingGroupName": "web", "ActivityId": "a",
                   "StatusMessage": "Client.InternalError: Client error on launch", "StartTime": "2026-12-07T09:59:58.000Z",
                   "EndTime": "2026-12-07T10:00:00.000Z", "Cause": "At 2026-12-07T09:59:58Z an instance was started"}
    })
    .to_string();
    let t = touched(&body).unwrap();
    assert_eq!(keys(&t), [KEY]);
    let (asg, a) = t.launch.unwrap();
    assert_eq!((asg.name.as_str(), a.status_code.as_str()), ("web", "Failed"));
    assert_eq!(a.status_message.as_deref(), Some("Client.InternalError: Client error on launch"));
}

#[test]
fn what_cannot_be_read_is_dropped_with_its_reason() {
    assert_eq!(parse("not json").unwrap_err().0, Dropped::NotJson);
    assert_eq!(parse("[]").unwrap_err().0, Dropped::NotJson);
    let unknown = api_call("aws.s3", "s3.amazonaws.com", "PutObject", serde_json::json!({}));
    assert_eq!(
        parse(&unknown).unwrap_err(),
        (Dropped::UnknownEvent, "6a7e8feb-b491-4cf7-a9f1-bf3703467718".to_owned())
    );
    let no_key = api_call("aws.kms", "kms.amazonaws.com", "PutKeyPolicy", serde_json::json!({}));
    assert_eq!(parse(&no_key).unwrap_err().0, Dropped::MissingField);
    let no_account =
        serde_json::json!({"id": "x", "detail-type": "AWS API Call via CloudTrail", "source": "aws.kms", "detail": {}})
            .to_string();
    assert_eq!(parse(&no_account).unwrap_err().0, Dropped::MissingField);
}

#[test]
fn a_policy_write_names_its_writer_and_the_operators_own_sessions_are_known() {
    let mut body: Value = serde_json::from_str(&api_call(
        "aws.kms",
        "kms.amazonaws.com",
        "PutKeyPolicy",
        serde_json::json!({"keyId": KEY, "policyName": "default"}),
    ))
    .unwrap();
    let writer = "arn:aws:sts::111122223333:assumed-role/terraform/ci-42";
    body["detail"]["userIdentity"] = serde_json::json!({"type": "AssumedRole", "arn": writer});
    assert_eq!(parse(&body.to_string()).unwrap().policy_writer.as_deref(), Some(writer));
    let grant = api_call("aws.kms", "kms.amazonaws.com", "CreateGrant", serde_json::json!({"keyId": KEY}));
    assert_eq!(parse(&grant).unwrap().policy_writer, None, "only a policy write names a writer");

    let role = "arn:aws:iam::111122223333:role/ops/asg-cmk-operator";
    let session = "arn:aws:sts::111122223333:assumed-role/asg-cmk-operator/pod-1";
    assert!(same_identity(role, session), "a session of the operator's role");
    assert!(same_identity(session, "arn:aws:sts::111122223333:assumed-role/asg-cmk-operator/pod-2"));
    assert!(!same_identity(role, writer));
    assert!(!same_identity(role, "arn:aws:sts::444455556666:assumed-role/asg-cmk-operator/pod-1"), "another account");
    assert!(same_identity("arn:aws:iam::111122223333:user/ops", "arn:aws:iam::111122223333:user/ops"));
    assert!(!same_identity("arn:aws:iam::111122223333:user/ops", "arn:aws:iam::111122223333:user/dev"));
}
