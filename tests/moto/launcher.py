#!/usr/bin/env python3
"""Starts moto's server for asg-cmk-operator's tests, demo and benchmarks.

moto 5.2.5 falls short of AWS in two ways this project depends on; the launcher closes
both with small patches applied at import time (site-packages is never edited):

1. Auto Scaling ignores ``ServiceLinkedRoleARN`` on CreateAutoScalingGroup and
   UpdateAutoScalingGroup, so DescribeAutoScalingGroups always shows the default role.
   After the patch the given ARN is stored per group and described back.
2. KMS resolves a key ARN only in the caller's own account. Real KMS lets another account
   address a key by its full ARN for grant and cryptographic operations. After the patch
   those operations run against the key owner's backend.

``gaps.py`` closes more (AWS managed keys, the EBS default key, encrypted snapshots and
images, launch template source versions, launch sources kept on group updates), and
``launches.py`` models launches and scaling activities; each module's docstring lists them.

It also serves test hooks under ``/_launcher/`` (a path no AWS API uses):

- ``GET /_launcher/calls``: every AWS request received, as ``{"calls": [{"service",
  "action", "account", "t", "key", "params"}]}`` in arrival order, where ``account`` is the
  account the credentials act in, ``t`` the arrival time in seconds (monotonic clock),
  ``key`` a KMS request's ``KeyId`` (else null) and ``params`` an EC2 request's query
  parameters (else null). ``POST /_launcher/calls/reset`` clears the log.
- ``POST /_launcher/faults`` with ``{"service", "action", "count", "status", "code",
  "message", "apply"}``: the next ``count`` matching requests fail with that error, in the
  wire format of the request's protocol (JSON or query XML). With ``"apply": true`` the
  request is carried out first and only its answer is replaced: what a caller sees when
  someone else made the same change at the same moment, or when an answer is lost.
  Failed requests are still logged. ``DELETE /_launcher/faults`` clears them.
- ``GET /_launcher/strict``: the strict settings below, as JSON. ``POST /_launcher/strict``
  with a JSON object holding any subset of them changes them and answers the new settings
  (400 and nothing changed for an unknown key or a bad value).
- ``POST /_launcher/edits`` with ``{"key": "<key ARN>", "statement": {...}}`` queues a
  one-shot concurrent edit: the next successful GetKeyPolicy of that key (by anyone),
  once its answer is produced, appends the statement to the stored policy (no
  validation). ``GET /_launcher/edits`` answers ``{"pending": n, "applied": n}``.
- ``POST /_launcher/activities`` with ``{"asg", "account", "region", "status_code",
  "status_message", "description", "cause", "seconds_ago"}`` (all but ``asg`` optional;
  defaults: 123456789012, us-west-2, ``Failed``, "Client.InternalError: Client error on
  launch" when Failed, "Launching a new EC2 instance: i-<random>", a capacity-change cause,
  0) appends one scaling activity, started that many seconds ago, to the group's store
  (the group need not exist); answers the activity (``ActivityId``, ``StartTime``, ...).
  400 for a bad body or an unknown status code.
- ``GET /_launcher/can-launch?asg=NAME&account=A&region=R`` (account and region as above by
  default): whether a launch of the group would succeed now, without launching:
  ``{"can_launch": bool, "role": ARN, "keys": [{"key": ARN (as written if it names no
  key), "source": "...", "ok": bool, "why": "..."}], "problems": ["..."]}`` (one entry per
  key and place it is used; ``problems`` lists launch templates or versions that do not
  exist). 404 for an unknown group.

- ``POST /_launcher/identity-policies`` with ``{"caller": ARN, "policy": {...} | null}``
  gives the caller (its ARN as GetCallerIdentity shows it: an IAM user, or an assumed-role
  session) an identity-based policy, or takes it away; from then on every request of that
  caller is authorized against it as AWS would, and refused with AccessDenied
  (AccessDeniedException for KMS, UnauthorizedOperation for EC2) when it does not allow
  it (``identity.py``). Callers without one are not checked. ``GET`` lists the callers.
  ``GET /_launcher/authorizations`` answers every decision made, ``{"decisions":
  [{"caller", "service", "operation", "action", "resource", "context", "allowed",
  "statements"}]}`` (``statements``: the indices of the Allow statements that matched);
  ``POST /_launcher/authorizations/reset`` clears them. ``GET /_launcher/sessions`` answers
  every assumed-role session handed out, with its secret key and session token (for
  tests that check that no log carries them).

Strict mode (``strict.py``) makes moto as strict as AWS where this project depends on it.
Rejected requests are answered in the protocol's wire format and logged like any other.
Settings and defaults:

- ``principals`` (true): CreateKey/PutKeyPolicy reject a policy with an invalid ``AWS``
  principal (not ``*``, an account, an existing role/user/assumed-role, or the unique id
  of an existing role/user) with MalformedPolicyDocumentException; CreateGrant rejects an
  invalid GranteePrincipal/RetiringPrincipal with InvalidArnException. Role and user
  principals are remembered by unique id: GetKeyPolicy and ListGrants show a deleted (or
  recreated) one as its old id.
- ``propagation_seconds`` (0.0): roles and users younger than this are invisible to KMS and
  Auto Scaling (IAM sees them at once). Takes effect through ``principals``,
  ``asg_roles`` and ``launches``.
- ``grant_names`` (true): CreateGrant with the Name and parameters of an existing grant on
  the key returns that grant's id and creates nothing.
- ``key_state`` (true): CreateGrant and cryptographic operations on a Disabled key fail with
  DisabledException, on a key pending deletion with KMSInvalidStateException.
- ``grant_paging`` (true): ListGrants honours Limit (1-100, default 50) and Marker, answers
  Truncated/NextMarker, rejects bad limits (ValidationException) and unknown markers
  (InvalidMarkerException), and shows each grant's IssuingAccount.
- ``asg_roles`` (true): Create/UpdateAutoScalingGroup with a ServiceLinkedRoleARN whose role
  does not exist (or has not propagated) fail with ValidationError; the group is unchanged.
- ``launches`` (true): each instance moto starts for a group (its desired capacity rose) is
  a launch, recorded as a scaling activity: ``Successful`` if the group's service-linked
  role may use every customer managed key the launch uses, else ``Failed`` with
  "Client.InternalError: Client error on launch" and the instance terminated (launches.py,
  kms_access.py). Roles younger than ``propagation_seconds`` may use no such key. Off: no
  activities are recorded and every instance stays (moto's behaviour).
- ``ec2_reads`` (true): DescribeLaunchTemplateVersions given both LaunchTemplateId and
  LaunchTemplateName fails with InvalidParameterCombination; DescribeImages fails whole
  with InvalidAMIID.NotFound when one id in it names no image the caller may see (a
  recently deregistered one is left out instead). Off: moto takes both (using the name)
  and answers the images it knows.
- ``policy_size`` (true): CreatePolicy and CreatePolicyVersion refuse a document over 6,144
  characters, and PutRolePolicy a role's inline policies over 10,240 together, white space
  not counted, with LimitExceeded (409). Off: moto takes any size.

Usage: ``launcher.py [--host 127.0.0.1] [--port 0] [--exit-with-stdin] [--lenient]
[--propagation-seconds S]``, or ``launcher.py --zygote SOCKET --exit-with-stdin``. Port 0 picks a free port. ``--lenient`` starts with every
strict switch off (moto's own behaviour); ``--propagation-seconds`` sets the window.
Once listening it prints ``READY http://HOST:PORT`` on stdout. It stops on SIGTERM/SIGINT
and, with ``--exit-with-stdin``, when its stdin reaches end of file (so a test harness that
holds the pipe open leaves no orphan behind when it dies).

``--zygote SOCKET`` pays Python's and moto's start-up once for a whole test run: it
imports everything, listens on a Unix socket, prints ``READY unix:SOCKET``, and for each
connection that sends one line of launcher arguments (a JSON list) forks a fresh launcher,
with nothing of any other's state, that answers ``READY http://HOST:PORT`` on that
connection and stops when the connection closes. The zygote stays single-threaded, so
that forking is safe, and exits when its stdin reaches end of file.
"""

import argparse
import io
import json
import os
import random
import re
import select
import signal
import socket
import sys
import threading
import time

from moto.autoscaling.responses import AutoScalingResponse
from moto.iam.models import get_account_id_from
from moto.kms.models import kms_backends
from moto.kms.responses import KmsResponse
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

import gaps
import identity
import launches
import strict
import wire

# --- gap 1: Auto Scaling keeps ServiceLinkedRoleARN ------------------------------------
# The group model already has ``service_linked_role_arn`` (set to the default role and
# serialized by DescribeAutoScalingGroups); the response handlers just never pass the
# parameter on. Wrap both handlers and set it once moto has created/updated the group.


def _keep_service_linked_role(handler):
    def wrapper(self):
        result = handler(self)
        arn = self._get_param("ServiceLinkedRoleARN")
        if arn:  # absent on update: leave the stored role as it is
            name = self._get_param("AutoScalingGroupName")
            self.autoscaling_backend.autoscaling_groups[name].service_linked_role_arn = arn
        return result

    return wrapper


AutoScalingResponse.create_auto_scaling_group = _keep_service_linked_role(
    AutoScalingResponse.create_auto_scaling_group
)
AutoScalingResponse.update_auto_scaling_group = _keep_service_linked_role(
    AutoScalingResponse.update_auto_scaling_group
)

# --- gap 2: KMS keys addressed by ARN from another account -----------------------------
# Every KMS handler reaches its data through the ``KmsResponse.kms_backend`` property
# (the caller's account, request region). Replace the property: for the operations real
# KMS allows across accounts, a key ARN naming another account selects that account's
# backend in the ARN's region. Everything else (GetKeyPolicy, PutKeyPolicy, calls by the
# owner, key IDs and aliases) still resolves in the caller's own account.

# Operation -> the parameter naming the key moto resolves for it.
CROSS_ACCOUNT_KMS = {
    "CreateGrant": "KeyId",
    "ListGrants": "KeyId",
    "RevokeGrant": "KeyId",
    "RetireGrant": "KeyId",
    "DescribeKey": "KeyId",
    "Encrypt": "KeyId",
    "Decrypt": "KeyId",
    "ReEncrypt": "DestinationKeyId",  # moto decrypts and re-encrypts in one backend
    "GenerateDataKey": "KeyId",
    "GenerateDataKeyWithoutPlaintext": "KeyId",
    "GenerateDataKeyPair": "KeyId",
    "GenerateDataKeyPairWithoutPlaintext": "KeyId",
}
KEY_ARN = re.compile(r"^arn:[\w-]+:kms:([\w-]+):(\d{12}):key/.+$")


def kms_backend_for(action, params, account, region):
    """The KMS backend a request works in: the key owner's for a cross-account key ARN."""
    param = CROSS_ACCOUNT_KMS.get(action)
    key_id = params.get(param) if param else None
    m = KEY_ARN.match(key_id) if isinstance(key_id, str) else None
    if m and m.group(2) != account:
        return kms_backends[m.group(2)][m.group(1)]
    return kms_backends[account][region]


def _kms_backend(self):
    action = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
    params = {}
    if action in CROSS_ACCOUNT_KMS:  # only these read the body
        try:
            params = json.loads(self.body or "{}")
        except ValueError:
            pass
    if not isinstance(params, dict):
        params = {}
    return kms_backend_for(action, params, self.current_account, self.region)


KmsResponse.kms_backend = property(_kms_backend)

# --- test hooks: call log, fault injection, strict mode ---------------------------------
# Wire helpers (request identification, protocol-matched errors) live in wire.py; the
# strict checks and their hooks in strict.py.



def _key_id(service, body):
    """A KMS request's KeyId (KMS speaks JSON), or None."""
    if service != "kms":
        return None
    try:
        return json.loads(body or b"{}").get("KeyId")
    except (ValueError, AttributeError):
        return None

class Hooks:
    """WSGI middleware in front of moto's app: test hooks, then strict checks, then moto;
    then the launches moto started while answering are judged (launches.py)."""

    def __init__(self, app, strict_layer, launch_store, identity_layer):
        self.app = app
        self.strict = strict_layer
        self.identity = identity_layer
        self.launches = launch_store
        self.lock = threading.Lock()
        self.calls = []  # [{"service", "action", "account", "t", "key", "params"}], arrival order
        self.faults = []  # [{"service", "action", "count", "status", "code", "message"}]

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/_launcher/"):
            return self.control(environ, start_response)
        # Buffer the body to read the action, then hand moto an unread copy.
        body = wire.read_body(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        service, action, account = wire.identify(environ, body, get_account_id_from)
        with self.lock:
            self.calls.append(
                {
                    "service": service,
                    "action": action,
                    "account": account,
                    "t": time.monotonic(),
                    "key": _key_id(service, body),
                    "params": wire.query_params(environ, body) if service == "ec2" else None,
                }
            )
            fault = self._take_fault(service, action)
        request = strict.Request(environ, body, service, action, account)
        try:
            refused = self.identity.check(request, wire.credential_scope(environ)[0], start_response)
            if refused is not None:
                return refused
            if fault:
                if fault["apply"]:
                    answer = self.strict.serve(request, self.app, lambda *_: None)
                    b"".join(answer)  # the request runs to its end; its answer is dropped
                    if hasattr(answer, "close"):
                        answer.close()
                return wire.error(fault, environ, start_response)
            return self.strict.serve(request, self.app, start_response)
        finally:
            self.launches.settle()  # moto has answered: its answer is buffered by now

    def _take_fault(self, service, action):
        for f in self.faults:
            if f["service"] == service and f["action"] == action and f["count"] > 0:
                f["count"] -= 1
                return dict(f)
        return None

    def control(self, environ, start_response):
        path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        body = wire.read_body(environ)
        answer = self.strict.control(path, method, body, start_response)
        if answer is None:
            answer = self.identity.control(path, method, body, start_response)
        if answer is None:
            query = wire.query_params({"QUERY_STRING": environ.get("QUERY_STRING", "")}, b"")
            answer = self.launches.control(path, method, body, query, start_response)
        if answer is not None:
            return answer
        with self.lock:
            if path == "/_launcher/calls" and method == "GET":
                return wire.json_response(start_response, {"calls": list(self.calls)})
            if path == "/_launcher/calls/reset" and method == "POST":
                self.calls.clear()
                return wire.json_response(start_response, {})
            if path == "/_launcher/faults" and method == "POST":
                try:
                    fault = json.loads(body)
                    fault = {
                        "service": str(fault["service"]),
                        "action": str(fault["action"]),
                        "count": int(fault.get("count", 1)),
                        "status": int(fault.get("status", 400)),
                        "code": str(fault["code"]),
                        "message": str(fault.get("message", "")),
                        "apply": bool(fault.get("apply", False)),
                    }
                except (ValueError, KeyError, TypeError) as e:
                    return wire.json_response(start_response, {"error": f"bad fault: {e!r}"}, 400)
                self.faults.append(fault)
                return wire.json_response(start_response, {})
            if path == "/_launcher/faults" and method == "DELETE":
                self.faults.clear()
                return wire.json_response(start_response, {})
        return wire.json_response(start_response, {"error": "not found"}, 404)


# --- server ----------------------------------------------------------------------------


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--exit-with-stdin", action="store_true", help="exit when stdin reaches EOF")
    p.add_argument("--lenient", action="store_true", help="start with every strict switch off")
    p.add_argument(
        "--propagation-seconds", type=float, default=0.0, help="IAM propagation window seen by KMS/Auto Scaling"
    )
    p.add_argument("--zygote", metavar="SOCKET", help="fork a launcher for each connection to this Unix socket")
    return p


def serve(args, settings, watch_fd=None, out=None):
    """Installs the patches and serves, with the hooks in front, until stopped."""
    # The same app and server moto's ThreadedMotoServer builds, with the hooks in front.
    gaps.install()
    strict_layer = strict.install(settings, kms_backend_for)
    launch_store = launches.install(settings, strict_layer)
    identity_layer = identity.install(kms_backend_for)
    app = Hooks(DomainDispatcherApplication(create_backend_app), strict_layer, launch_store, identity_layer)
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    wire.serve_until_stopped(server, args.host, args.exit_with_stdin, watch_fd, out)


# The backends the tests reach, imported once in the zygote rather than in each launcher.
PRELOAD = ("autoscaling", "ec2", "iam", "kms", "sqs", "ssm", "sts")


def zygote(path):
    for name in PRELOAD:
        create_backend_app(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forked launchers are reaped at once
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    print(f"READY unix:{path}", flush=True)
    stdin = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([listener, stdin], [], [])
        if stdin in ready and not os.read(stdin, 4096):
            break
        if listener in ready:
            conn, _ = listener.accept()
            if os.fork() == 0:
                listener.close()
                launch_forked(conn)
            conn.close()
    listener.close()
    os.unlink(path)


def launch_forked(conn):
    """In a forked child: reads the launcher's arguments and serves until the connection
    closes; never returns."""
    code = 0
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        random.seed()  # not the zygote's sequence, shared by every fork
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        out = conn.makefile("rw", buffering=1)
        argv = json.loads(out.readline())
        args = parser().parse_args([str(a) for a in argv])
        settings = strict.Settings(lenient=args.lenient, propagation_seconds=args.propagation_seconds)
        serve(args, settings, watch_fd=conn.fileno(), out=out)
    except BaseException as e:  # noqa: BLE001 - a forked child must not return into the zygote's loop
        print(f"launcher failed: {e!r}", file=sys.stderr, flush=True)
        code = 1
    finally:
        os._exit(code)


def main():
    p = parser()
    args = p.parse_args()
    if args.zygote:
        zygote(args.zygote)
        return
    try:
        settings = strict.Settings(lenient=args.lenient, propagation_seconds=args.propagation_seconds)
    except ValueError as e:
        p.error(str(e))
    serve(args, settings)


if __name__ == "__main__":
    main()
