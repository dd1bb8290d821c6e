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

It also serves two test hooks under ``/_launcher/`` (a path no AWS API uses):

- ``GET /_launcher/calls``: every AWS request received, as ``{"calls": [{"service",
  "action", "account", "t"}]}`` in arrival order, where ``account`` is the account the
  credentials act in and ``t`` the arrival time in seconds (monotonic clock). ``POST /_launcher/calls/reset`` clears the log.
- ``POST /_launcher/faults`` with ``{"service", "action", "count", "status", "code",
  "message"}``: the next ``count`` matching requests fail with that error, in the wire
  format of the request's protocol (JSON or query XML). Failed requests are still
  logged. ``DELETE /_launcher/faults`` clears them.

Usage: ``launcher.py [--host 127.0.0.1] [--port 0] [--exit-with-stdin]``. Port 0 picks a
free port. Once listening it prints ``READY http://HOST:PORT`` on stdout. It stops on
SIGTERM/SIGINT and, with ``--exit-with-stdin``, when its stdin reaches end of file (so a
test harness that holds the pipe open leaves no orphan behind when it dies).
"""

import argparse
import io
import json
import os
import re
import signal
import sys
import threading
import time
import uuid
from http import HTTPStatus
from urllib.parse import parse_qs

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
_own_kms_backend = KmsResponse.kms_backend.fget


def _kms_backend(self):
    param = CROSS_ACCOUNT_KMS.get(self.headers.get("X-Amz-Target", "").rpartition(".")[2])
    if param:
        try:
            key_id = json.loads(self.body or "{}").get(param) or ""
        except (ValueError, AttributeError):
            key_id = ""
        m = KEY_ARN.match(key_id) if isinstance(key_id, str) else None
        if m and m.group(2) != self.current_account:
            return kms_backends[m.group(2)][m.group(1)]
    return _own_kms_backend(self)


KmsResponse.kms_backend = property(_kms_backend)

# --- test hooks: call log and fault injection ------------------------------------------

# SigV4: "Credential=AKID/20240101/us-west-2/kms/aws4_request" -> access key, service.
CREDENTIAL_SCOPE = re.compile(r"Credential=([^/\s]+)/\d{8}/[^/]+/([^/]+)/aws4_request")


class Hooks:
    """WSGI middleware in front of moto's app."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.calls = []  # [{"service", "action", "account"}], arrival order
        self.faults = []  # [{"service", "action", "count", "status", "code", "message"}]

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/_launcher/"):
            return self.control(environ, start_response)
        # Buffer the body to read the action, then hand moto an unread copy.
        body = _read_body(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        service, action, account = _identify(environ, body)
        with self.lock:
            self.calls.append({"service": service, "action": action, "account": account, "t": time.monotonic()})
            fault = self._take_fault(service, action)
        if fault:
            return _error(fault, environ, start_response)
        return self.app(environ, start_response)

    def _take_fault(self, service, action):
        for f in self.faults:
            if f["service"] == service and f["action"] == action and f["count"] > 0:
                f["count"] -= 1
                return dict(f)
        return None

    def control(self, environ, start_response):
        path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        body = _read_body(environ)
        with self.lock:
            if path == "/_launcher/calls" and method == "GET":
                return _json(start_response, {"calls": list(self.calls)})
            if path == "/_launcher/calls/reset" and method == "POST":
                self.calls.clear()
                return _json(start_response, {})
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
                    }
                except (ValueError, KeyError, TypeError) as e:
                    return _json(start_response, {"error": f"bad fault: {e!r}"}, 400)
                self.faults.append(fault)
                return _json(start_response, {})
            if path == "/_launcher/faults" and method == "DELETE":
                self.faults.clear()
                return _json(start_response, {})
        return _json(start_response, {"error": "not found"}, 404)


def _read_body(environ):
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):  # chunked: werkzeug ends the stream itself
        return stream.read()
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return stream.read(length) if length > 0 else b""


def _identify(environ, body):
    """(service, action, account) of an AWS request; "unknown"/None where not given."""
    m = CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    access_key, service = (m.group(1), m.group(2)) if m else (None, "unknown")
    # Same precedence as moto's BaseResponse.get_current_account.
    account = (
        os.environ.get("MOTO_ACCOUNT_ID")
        or environ.get("HTTP_X_MOTO_ACCOUNT_ID")
        or (get_account_id_from(access_key) if access_key else None)
    )
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:  # JSON protocols: "TrentService.CreateGrant"
        return service, target.rpartition(".")[2], account
    # Query protocol: Action= in the form body (or, for GETs, the query string).
    params = parse_qs(environ.get("QUERY_STRING", ""))
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        params.update(parse_qs(body.decode("utf-8", "replace")))
    return service, (params.get("Action") or ["unknown"])[0], account


def _status_line(status):
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


def _json(start_response, value, status=200):
    data = json.dumps(value).encode()
    start_response(
        _status_line(status),
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]


def _error(fault, environ, start_response):
    """The fault as the service would send it: JSON for JSON protocols, else query XML."""
    code, message, status = fault["code"], fault["message"], fault["status"]
    request_id = str(uuid.uuid4())
    content_type = environ.get("CONTENT_TYPE", "")
    if environ.get("HTTP_X_AMZ_TARGET") or content_type.startswith("application/x-amz-json"):
        # awsJson1_0 / awsJson1_1 (KMS is 1.1): answer in the version the client used.
        version = "1.0" if content_type.startswith("application/x-amz-json-1.0") else "1.1"
        data = json.dumps({"__type": code, "message": message}).encode()
        headers = [
            ("Content-Type", f"application/x-amz-json-{version}"),
            ("x-amzn-ErrorType", code),
            ("x-amzn-RequestId", request_id),
        ]
    else:
        kind = "Receiver" if status >= 500 else "Sender"
        data = (
            "<ErrorResponse><Error>"
            f"<Type>{kind}</Type><Code>{_xml(code)}</Code><Message>{_xml(message)}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]
    start_response(_status_line(status), headers + [("Content-Length", str(len(data)))])
    return [data]


def _xml(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- server ----------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--exit-with-stdin", action="store_true", help="exit when stdin reaches EOF")
    args = parser.parse_args()

    # The same app and server moto's ThreadedMotoServer builds, with the hooks in front.
    app = Hooks(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)

    def stop(*_):
        # shutdown() waits for serve_forever() to return, so it can't run on the thread
        # serving (signal handlers run on the main thread, which is the serving one).
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.exit_with_stdin:

        def watch_stdin():
            # os.read, not sys.stdin: a daemon thread blocked inside sys.stdin's buffer
            # lock can abort interpreter shutdown.
            fd = sys.stdin.fileno()
            while os.read(fd, 4096):
                pass
            stop()

        threading.Thread(target=watch_stdin, daemon=True).start()

    print(f"READY http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
