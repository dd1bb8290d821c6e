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
  "action", "account"}]}`` in arrival order (the account the credentials act in); ``POST /_launcher/calls/reset`` clears the log.
- ``POST /_launcher/faults`` with ``{"service", "action", "count", "status", "code",
  "message"}``: the next ``count`` matching requests fail with that error, in the wire
  format of the service's protocol. ``DELETE /_launcher/faults`` clears them.

Usage: ``launcher.py [--host 127.0.0.1] [--port 0] [--exit-with-stdin]``. Port 0 picks a
free port. Once listening it prints ``READY http://HOST:PORT`` on stdout.
"""

import argparse
import io
import json
import re
import signal
import sys
import threading
import uuid
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


def _keep_service_linked_role(original):
    def handler(self):
        result = original(self)
        arn = self._get_param("ServiceLinkedRoleARN")
        if arn:
            name = self._get_param("AutoScalingGroupName")
            self.autoscaling_backend.autoscaling_groups[name].service_linked_role_arn = arn
        return result

    return handler


AutoScalingResponse.create_auto_scaling_group = _keep_service_linked_role(
    AutoScalingResponse.create_auto_scaling_group
)
AutoScalingResponse.update_auto_scaling_group = _keep_service_linked_role(
    AutoScalingResponse.update_auto_scaling_group
)

# --- gap 2: KMS keys addressed by ARN from another account -----------------------------

# Operations real KMS allows across accounts when the key is named by its ARN.
CROSS_ACCOUNT_KMS = {
    "CreateGrant",
    "ListGrants",
    "RevokeGrant",
    "RetireGrant",
    "DescribeKey",
    "Encrypt",
    "Decrypt",
    "ReEncrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
}
KEY_ARN = re.compile(r"^arn:[\w-]+:kms:([\w-]+):(\d{12}):key/.+$")
_own_kms_backend = KmsResponse.kms_backend


def _kms_backend(self):
    action = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
    if action in CROSS_ACCOUNT_KMS:
        try:
            key_id = json.loads(self.body or "{}").get("KeyId") or ""
        except ValueError:
            key_id = ""
        m = KEY_ARN.match(key_id)
        if m and m.group(2) != self.current_account:
            return kms_backends[m.group(2)][m.group(1)]
    return _own_kms_backend.fget(self)


KmsResponse.kms_backend = property(_kms_backend)

# --- test hooks: call log and fault injection ------------------------------------------

CREDENTIAL_SCOPE = re.compile(r"Credential=([^/]+)/\d{8}/[^/]+/([^/]+)/aws4_request")
JSON_PROTOCOL = {"kms"}


class Hooks:
    """WSGI middleware in front of moto."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.calls = []
        self.faults = []

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/_launcher/"):
            return self.control(environ, start_response)
        body = _read_body(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        service, action, access_key = _identify(environ, body)
        account = get_account_id_from(access_key) if access_key else None
        with self.lock:
            self.calls.append({"service": service, "action": action, "account": account})
            fault = self._take_fault(service, action)
        if fault:
            return _error(fault, service, start_response)
        return self.app(environ, start_response)

    def _take_fault(self, service, action):
        for f in self.faults:
            if f["service"] == service and f["action"] == action and f["count"] > 0:
                f["count"] -= 1
                return f
        return None

    def control(self, environ, start_response):
        path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        with self.lock:
            if path == "/_launcher/calls" and method == "GET":
                return _json(start_response, {"calls": list(self.calls)})
            if path == "/_launcher/calls/reset" and method == "POST":
                self.calls.clear()
                return _json(start_response, {})
            if path == "/_launcher/faults" and method == "POST":
                fault = json.loads(_read_body(environ) or b"{}")
                fault.setdefault("count", 1)
                fault.setdefault("status", 400)
                self.faults.append(fault)
                return _json(start_response, {})
            if path == "/_launcher/faults" and method == "DELETE":
                self.faults.clear()
                return _json(start_response, {})
        return _json(start_response, {"error": "not found"}, "404 Not Found")


def _read_body(environ):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return environ["wsgi.input"].read(length) if length else b""


def _identify(environ, body):
    """(service, action, access key) of an AWS request."""
    m = CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    access_key, service = (m.group(1), m.group(2)) if m else (None, "unknown")
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return service, target.rpartition(".")[2], access_key
    params = parse_qs(environ.get("QUERY_STRING", ""))
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        params.update(parse_qs(body.decode("utf-8", "replace")))
    return service, (params.get("Action") or ["unknown"])[0], access_key


def _json(start_response, value, status="200 OK"):
    data = json.dumps(value).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def _error(fault, service, start_response):
    status = f"{fault['status']} Injected"
    code, message = fault["code"], fault.get("message", "")
    if service in JSON_PROTOCOL:
        data = json.dumps({"__type": code, "message": message}).encode()
        headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", code)]
    else:
        kind = "Receiver" if fault["status"] >= 500 else "Sender"
        data = (
            "<ErrorResponse><Error>"
            f"<Type>{kind}</Type><Code>{_xml(code)}</Code><Message>{_xml(message)}</Message>"
            f"</Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
        ).encode()
        headers = [("Content-Type", "text/xml")]
    start_response(status, headers + [("Content-Length", str(len(data)))])
    return [data]


def _xml(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- server ----------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--exit-with-stdin", action="store_true", help="exit when stdin reaches EOF")
    args = parser.parse_args()

    app = Hooks(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.exit_with_stdin:

        def watch_stdin():
            while sys.stdin.buffer.read(4096):
                pass
            stop()

        threading.Thread(target=watch_stdin, daemon=True).start()

    print(f"READY http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
