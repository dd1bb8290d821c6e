"""Whether an Auto Scaling service-linked role may use a customer managed KMS key for the
encrypted EBS volumes of a launch: an independent reading of the rules, kept small.

It is the emulator's check of the operator (which has its own evaluator), so it follows
only the rules below and nothing more:

- EC2 Auto Scaling User Guide, "Required AWS KMS key policy for use with encrypted
  volumes": the role needs kms:Encrypt, kms:Decrypt, kms:ReEncrypt*, kms:GenerateDataKey*,
  kms:DescribeKey and kms:CreateGrant (the latter may carry the condition
  ``Bool kms:GrantIsForAWSResource: true``).
  - Case 1, the key is in the group's account: the key policy allows the role (by ARN, or
    ``*``) those actions. An Allow for the account root does not count (KMS Developer
    Guide, "Key policies": a root principal delegates to IAM, and the service-linked
    role's IAM policy grants no use of customer managed keys).
  - Case 2, the key is in another account: the owner's key policy allows the group's
    account (root ARN or bare id, or ``*``; or the role itself) those actions, and a grant
    on the key gives the role the operations of ``GRANT_OPERATIONS`` without constraints
    (same page, example 2; KMS Developer Guide, "Grants in AWS KMS").
- In both cases an unconditional Deny naming the role, its account (root ARN or bare id) or
  ``*`` for any of those actions wins (IAM User Guide, "Policy evaluation logic").
- Action patterns use ``*`` and ``?`` and are case-insensitive; Action, Resource and
  Principal.AWS may be a string or a list (IAM User Guide, "IAM JSON policy elements").

- An Allow's Condition counts when every key in it holds (IAM User Guide, "IAM JSON policy
  elements: Condition operators"; "AWS global condition context keys"): the grant
  condition above; ``aws:PrincipalAccount`` (StringEquals, StringLike), the caller's
  account; ``aws:PrincipalArn`` (ArnEquals, ArnLike, StringEquals, StringLike), the
  caller's ARN; ``aws:PrincipalOrgID`` (StringEquals, StringLike), the caller's
  organization. Values are compared case-sensitively; a list matches on any value.

Any other condition makes an Allow not count and a Deny not apply; so do NotAction,
NotResource and NotPrincipal.
"""

import json
import re

USE_ACTIONS = (
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:DescribeKey",
)
GRANT_ACTION = "kms:CreateGrant"
REQUIRED_ACTIONS = USE_ACTIONS + (GRANT_ACTION,)

# KMS API Reference, CreateGrant, Operations: what the case 2 grant must give the role.
GRANT_OPERATIONS = frozenset(a.split(":")[1] for a in REQUIRED_ACTIONS)

ROOT_ARN = re.compile(r"^arn:([\w-]+):iam::(\d{12}):root$")


def as_list(value):
    """A policy element that may be one value or a list of them, as a list."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def pattern_matches(pattern, value, ignore_case=True):
    """IAM wildcard match: ``*`` any run of characters, ``?`` one; case-insensitive (actions
    and resources) unless ``ignore_case`` is false (condition values)."""
    if not isinstance(pattern, str) or not isinstance(value, str):
        return False
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def statements(doc):
    found = doc.get("Statement", []) if isinstance(doc, dict) else []
    return [s for s in as_list(found) if isinstance(s, dict)]


def aws_principals(statement):
    """The AWS principals a statement names; empty for NotPrincipal or no principal."""
    if "NotPrincipal" in statement:
        return []
    principal = statement.get("Principal")
    if principal == "*":
        return ["*"]
    if isinstance(principal, dict):
        return [p for p in as_list(principal.get("AWS")) if isinstance(p, str)]
    return []


# Condition key -> (operators read, the context field it is compared with).
PRINCIPAL_KEYS = {
    "aws:principalaccount": ({"stringequals", "stringlike"}, "account"),
    "aws:principalarn": ({"arnequals", "arnlike", "stringequals", "stringlike"}, "arn"),
    "aws:principalorgid": ({"stringequals", "stringlike"}, "org"),
}


def condition_holds(statement, context, for_aws_resource):
    """Whether an Allow's Condition holds for a caller with ``context`` (account, arn,
    org; a missing field holds for nothing), for a call that is (``for_aws_resource``) or
    is not a grant an AWS service makes."""
    condition = statement.get("Condition")
    if not condition:
        return True
    if not isinstance(condition, dict):
        return False
    for op, tests in condition.items():
        if not isinstance(tests, dict) or not tests:
            return False
        op = op.lower()
        for key, value in tests.items():
            values = [str(v) for v in as_list(value)]
            key = key.lower()
            if not values:
                return False
            if key == "kms:grantisforawsresource":
                if op != "bool" or not for_aws_resource or any(v.lower() != "true" for v in values):
                    return False
                continue
            ops, field_name = PRINCIPAL_KEYS.get(key, (set(), None))
            actual = (context or {}).get(field_name) if field_name else None
            if op not in ops or actual is None:
                return False
            wildcards = op != "stringequals"
            if not any(pattern_matches(v, actual, False) if wildcards else v == actual for v in values):
                return False
    return True


def covers(statement, action, key_arn):
    """Whether the statement's Action and Resource take in ``action`` on ``key_arn``."""
    if "NotAction" in statement or "NotResource" in statement:
        return False
    actions = as_list(statement.get("Action"))
    resources = as_list(statement.get("Resource", "*"))
    return any(pattern_matches(a, action) for a in actions) and any(pattern_matches(r, key_arn) for r in resources)


def allowed(doc, key_arn, names, context=None):
    """The required actions some Allow grants to any principal in ``names``, called with
    ``context`` (see ``condition_holds``). CreateGrant is asked for as the grants AWS
    services make for the role are: a statement conditioned on
    ``kms:GrantIsForAWSResource`` counts for it."""
    granted = set()
    for st in statements(doc):
        if st.get("Effect") != "Allow" or not names.intersection(aws_principals(st)):
            continue
        for action in REQUIRED_ACTIONS:
            if condition_holds(st, context, action == GRANT_ACTION) and covers(st, action, key_arn):
                granted.add(action)
    return granted


def context_of(account, arn):
    """The request context of a caller: its account and ARN."""
    return {"account": account, "arn": arn}


def denial(doc, key_arn, names):
    """(statement label, action) of the first unconditional Deny on ``names``; else None."""
    for i, st in enumerate(statements(doc)):
        if st.get("Effect") != "Deny" or st.get("Condition") or not names.intersection(aws_principals(st)):
            continue
        for action in REQUIRED_ACTIONS:
            if covers(st, action, key_arn):
                return st.get("Sid") or f"#{i}", action
    return None


def account_names(role_arn):
    """How a key policy may name the role's account: root ARN, bare id, or "*"."""
    partition, account = role_arn.split(":")[1], role_arn.split(":")[4]
    return {f"arn:{partition}:iam::{account}:root", account, "*"}


def parse(policy_text):
    try:
        doc = json.loads(policy_text)
    except (TypeError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def missing_text(granted):
    return ", ".join(a for a in REQUIRED_ACTIONS if a not in granted)


def same_account_use(doc, key_arn, role_arn):
    """Case 1: (ok, why)."""
    denied = denial(doc, key_arn, {role_arn} | account_names(role_arn))
    if denied:
        return False, f"key policy statement {denied[0]} denies {denied[1]}"
    granted = allowed(doc, key_arn, {role_arn, "*"}, context_of(role_arn.split(":")[4], role_arn))
    if len(granted) < len(REQUIRED_ACTIONS):
        return False, f"key policy does not allow the role {missing_text(granted)}"
    return True, "key policy allows the role"


def cross_account_use(doc, key_arn, role_arn, grants):
    """Case 2: (ok, why). ``grants``: [(grant id, grantee, operations, constraints)] of
    the key, grantees as KMS shows them."""
    names = account_names(role_arn)
    denied = denial(doc, key_arn, {role_arn} | names)
    if denied:
        return False, f"key policy statement {denied[0]} denies {denied[1]}"
    granted = allowed(doc, key_arn, names | {role_arn}, context_of(role_arn.split(":")[4], role_arn))
    if len(granted) < len(REQUIRED_ACTIONS):
        return False, f"owner's key policy does not allow account {role_arn.split(':')[4]} {missing_text(granted)}"
    for grant_id, grantee, operations, constraints in grants:
        if grantee == role_arn and GRANT_OPERATIONS <= set(operations or ()) and not constraints:
            return True, f"owner's key policy allows the account and grant {grant_id} gives the role its operations"
    return False, "no grant on the key gives the role " + ", ".join(sorted(GRANT_OPERATIONS)) + " without constraints"


def role_may_use(policy_text, key_arn, role_arn, grants):
    """(ok, why): whether the role may use the enabled customer managed key ``key_arn``."""
    doc = parse(policy_text)
    if key_arn.split(":")[4] == role_arn.split(":")[4]:
        return same_account_use(doc, key_arn, role_arn)
    return cross_account_use(doc, key_arn, role_arn, grants)


# --- one caller's KMS call, for DryRun (strict.py) ---------------------------------------


def caller_allowed(doc, key_arn, names, action, context=None):
    """Whether an Allow gives any principal in ``names`` ``action`` on the key, for a call
    an AWS service does not make for the principal (``kms:GrantIsForAWSResource`` false:
    a statement conditioned on it being true does not count), by a caller with
    ``context``."""
    for st in statements(doc):
        if st.get("Effect") == "Allow" and names.intersection(aws_principals(st)):
            if condition_holds(st, context, False) and covers(st, action, key_arn):
                return True
    return False


def caller_denied(doc, key_arn, names, action):
    """The label of the first unconditional Deny of ``action`` on ``names``, or None."""
    for i, st in enumerate(statements(doc)):
        if st.get("Effect") == "Deny" and not st.get("Condition") and names.intersection(aws_principals(st)):
            if covers(st, action, key_arn):
                return st.get("Sid") or f"#{i}"
    return None
