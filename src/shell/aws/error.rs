//! One place that decides what an AWS error means for the operator: change the config
//! (terminal), try again later (retryable), or slow down (throttled).

use aws_sdk_iam::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

use crate::core::model::{ErrorClass, Failure};

/// The error codes AWS answers when it throttles a request: the one list both the
/// classifier here and the pacer ([`super::adaptive`]) read. Not `LimitExceededException`:
/// KMS answers it when a resource quota is reached (too many grants on a key, say), which
/// waiting does not cure (KMS API Reference, CreateGrant, "Errors"; KMS Developer Guide,
/// "Resource quotas"); KMS throttles with `ThrottlingException` ("Throttling AWS KMS
/// requests").
pub(crate) const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "PriorRequestNotComplete",
];

const RETRYABLE: &[&str] = &[
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    "ServiceFailure",
    "KMSInternalException",
    "DependencyTimeoutException",
    "ConcurrentModificationException",
    "ResourceContention",
    "ScalingActivityInProgress",
    "RequestTimeout",
    "RequestTimeoutException",
    "IDPCommunicationError",
];

/// Classifies an error code (and HTTP status when known).
pub fn classify_message(code: Option<&str>, status: Option<u16>) -> ErrorClass {
    match code {
        Some(c) if THROTTLING.contains(&c) => ErrorClass::Throttled,
        Some(c) if RETRYABLE.contains(&c) => ErrorClass::Retryable,
        _ if status.is_some_and(|s| s == 429) => ErrorClass::Throttled,
        _ if status.is_some_and(|s| s >= 500) => ErrorClass::Retryable,
        Some(_) => ErrorClass::Terminal,
        None => ErrorClass::Retryable,
    }
}

/// Turns an SDK error into a [`Failure`] named after the operation.
pub fn classify<E>(operation: &str, err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let code = e.code();
            let status = Some(se.raw().status().as_u16());
            let class = classify_message(code, status);
            let message = match (code, e.message()) {
                (Some(c), Some(m)) => format!("{operation}: {c}: {m}"),
                (Some(c), None) => format!("{operation}: {c}"),
                _ => format!("{operation}: {e}"),
            };
            Failure { class, message }
        }
        SdkError::ConstructionFailure(_) => {
            Failure { class: ErrorClass::Terminal, message: format!("{operation}: {}", chain(err)) }
        }
        // Timeouts, connection failures, unreadable responses: transient.
        _ => Failure { class: ErrorClass::Retryable, message: format!("{operation}: {}", chain(err)) },
    }
}

/// The error code of a service error, if it is one.
pub(crate) fn code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    match err {
        SdkError::ServiceError(se) => se.err().code(),
        _ => None,
    }
}

/// The message of a service error, if it is one.
pub(crate) fn message<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    match err {
        SdkError::ServiceError(se) => se.err().message(),
        _ => None,
    }
}

/// An error and its sources, joined with ": ".
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// Whether an access-denied message says the caller's own IAM policy refused the call,
/// not the resource's (a key policy): "because no identity-based policy allows the ACTION
/// action", or "with an explicit deny in an identity-based policy" (IAM User Guide,
/// "Troubleshooting access denied error messages"). A message in neither form (older
/// services, or a resource-based refusal) is not.
pub fn refused_by_identity(message: &str) -> bool {
    message.contains("no identity-based policy allows") || message.contains("explicit deny in an identity-based policy")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_by_the_callers_own_policy_is_told_from_the_resources() {
        let user = "User: arn:aws:sts::111122223333:assumed-role/op/s is not authorized to perform: kms:CreateGrant on resource: arn:aws:kms:us-west-2:444455556666:key/k";
        assert!(refused_by_identity(&format!(
            "{user} because no identity-based policy allows the kms:CreateGrant action"
        )));
        assert!(refused_by_identity(&format!("{user} with an explicit deny in an identity-based policy")));
        assert!(!refused_by_identity(&format!(
            "{user} because no resource-based policy allows the kms:CreateGrant action"
        )));
        assert!(!refused_by_identity(&format!("{user} with an explicit deny in a resource-based policy")));
        assert!(!refused_by_identity("AccessDeniedException"));
    }

    #[test]
    fn codes_are_classified_once() {
        assert_eq!(classify_message(Some("ThrottlingException"), Some(400)), ErrorClass::Throttled);
        assert_eq!(classify_message(Some("Throttling"), Some(400)), ErrorClass::Throttled);
        assert_eq!(classify_message(Some("AccessDeniedException"), Some(400)), ErrorClass::Terminal);
        assert_eq!(classify_message(Some("InvalidInput"), Some(400)), ErrorClass::Terminal);
        assert_eq!(classify_message(Some("KMSInternalException"), Some(500)), ErrorClass::Retryable);
        assert_eq!(classify_message(Some("Whatever"), Some(503)), ErrorClass::Retryable);
        assert_eq!(classify_message(None, Some(429)), ErrorClass::Throttled);
        assert_eq!(classify_message(None, None), ErrorClass::Retryable);
    }
}
