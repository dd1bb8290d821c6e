//! `reencryptParameter`: the Systems Manager parameters the operator publishes its copies
//! to, read and written with the group's account's credentials.

use aws_sdk_ssm::types::ParameterType;

use super::error::{classify, code};
use super::{Account, Done};
use crate::core::model::Failure;

/// The AMI id parameter `name` holds; None when there is no such parameter
/// (`ParameterNotFound`: SSM API Reference, GetParameter).
pub async fn get(account: &Account, region: &str, name: &str) -> Result<Option<String>, Failure> {
    const ABSENT: [&str; 1] = ["ParameterNotFound"];
    let request = account.ssm(region).get_parameter().name(name).send();
    match account.call(None, "ssm", "GetParameter", &ABSENT, request).await {
        Ok(out) => Ok(out.parameter().and_then(|p| p.value()).map(str::to_owned)),
        Err(e) if code(&e).is_some_and(|c| ABSENT.contains(&c)) => Ok(None),
        Err(e) => Err(classify("GetParameter", &e)),
    }
}

/// Publishes `image_id` to parameter `name`, as an AMI id (`DataType` `aws:ec2:image`,
/// which Systems Manager checks is an image the account can use: SSM User Guide, "Native
/// parameter support for Amazon Machine Image IDs"), overwriting what it held.
pub async fn put(account: &Account, region: &str, name: &str, image_id: &str) -> Result<Done, Failure> {
    let request = account
        .ssm(region)
        .put_parameter()
        .name(name)
        .value(image_id)
        .r#type(ParameterType::String)
        .data_type("aws:ec2:image")
        .overwrite(true)
        .description("asg-cmk-operator: the re-encrypted copy of the image the group's pipeline publishes")
        .send();
    account.send("ssm", "PutParameter", request).await?;
    Ok(Done::Applied)
}
