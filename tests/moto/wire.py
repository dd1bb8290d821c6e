"""AWS wire-format helpers shared by the moto launcher and the fault proxy.

Everything here works on a WSGI-style environ (``HTTP_AUTHORIZATION``, ``CONTENT_TYPE``,
``QUERY_STRING``, ...) and the raw request body. This module must not import moto: the
fault proxy uses it and has to start fast.
"""

import json
import os
import re
import signal
import sys
import threading
import uuid
from http import HTTPStatus
from urllib.parse import parse_qs

# SigV4: "Credential=AKID/20240101/us-west-2/kms/aws4_request" -> access key, region, service.
CREDENTIAL_SCOPE = re.compile(r"Credential=([^/\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")

# The first words of read-only actions; anything else changes something.
READ_PREFIXES = ("Get", "List", "Describe")


def read_body(environ):
    """The whole request body; leaves the stream consumed."""
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):  # chunked: the server ends the stream itself
        return stream.read()
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return stream.read(length) if length > 0 else b""


def credential_scope(environ):
    """(access key, region, service) from the SigV4 Authorization header, or Nones."""
    m = CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    return (m.group(1), m.group(2), m.group(3)) if m else (None, None, None)


def identify(environ, body, account_of=None):
    """(service, action, account) of an AWS request; "unknown"/None where not given.

    ``account_of`` maps an access key to its account (the launcher passes moto's lookup);
    without it the account is known only from ``MOTO_ACCOUNT_ID`` or the
    ``X-Moto-Account-Id`` header.
    """
    access_key, _, service = credential_scope(environ)
    service = service or "unknown"
    # Same precedence as moto's BaseResponse.get_current_account.
    account = (
        os.environ.get("MOTO_ACCOUNT_ID")
        or environ.get("HTTP_X_MOTO_ACCOUNT_ID")
        or (account_of(access_key) if access_key and account_of else None)
    )
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:  # JSON protocols: "TrentService.CreateGrant"
        return service, target.rpartition(".")[2], account
    return service, query_params(environ, body).get("Action", "unknown"), account


def query_params(environ, body):
    """Query-protocol parameters (first value of each), from the query string and form body."""
    params = parse_qs(environ.get("QUERY_STRING", ""))
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        params.update(parse_qs(body.decode("utf-8", "replace")))
    return {k: v[0] for k, v in params.items()}


def json_params(body):
    """The JSON object of an awsJson request body; {} when it is not one."""
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def is_json_protocol(environ):
    """awsJson1_0 / awsJson1_1 (KMS) rather than the query protocol (IAM, STS, Auto Scaling)."""
    content_type = environ.get("CONTENT_TYPE", "")
    return bool(environ.get("HTTP_X_AMZ_TARGET")) or content_type.startswith("application/x-amz-json")


def is_write(service, action):
    """Whether a request changes something: not Get/List/Describe, and not STS."""
    return service != "sts" and not action.startswith(READ_PREFIXES)


def status_line(status):
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


def render_error(code, message, status, environ):
    """(status line, headers, body) of an AWS error in the wire format of the request.

    awsJson protocols carry the code in ``__type`` (and ``x-amzn-ErrorType``); query
    protocols use ``<ErrorResponse><Error><Code>``. Both are what the AWS SDKs parse.
    """
    request_id = str(uuid.uuid4())
    if is_json_protocol(environ):
        # Answer in the JSON version the client used (KMS is 1.1).
        content_type = environ.get("CONTENT_TYPE", "")
        version = "1.0" if content_type.startswith("application/x-amz-json-1.0") else "1.1"
        data = json.dumps({"__type": code, "message": message}).encode()
        headers = [
            ("Content-Type", f"application/x-amz-json-{version}"),
            ("x-amzn-ErrorType", code),
            ("x-amzn-RequestId", request_id),
        ]
    elif credential_scope(environ)[2] == "ec2":
        # ec2Query: <Response><Errors><Error> (EC2 API Reference, "Error codes").
        data = (
            "<Response><Errors><Error>"
            f"<Code>{xml_escape(code)}</Code><Message>{xml_escape(message)}</Message>"
            f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
        ).encode()
        headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]
    else:
        kind = "Receiver" if status >= 500 else "Sender"
        data = (
            "<ErrorResponse><Error>"
            f"<Type>{kind}</Type><Code>{xml_escape(code)}</Code><Message>{xml_escape(message)}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]
    return status_line(status), headers + [("Content-Length", str(len(data)))], data


def error(fault, environ, start_response):
    """WSGI: answers ``fault`` ({"code", "message", "status"}) as the service would."""
    status, headers, data = render_error(fault["code"], fault["message"], fault["status"], environ)
    start_response(status, headers)
    return [data]


def json_response(start_response, value, status=200):
    """WSGI: a plain JSON answer (for the test hooks)."""
    data = json.dumps(value).encode()
    start_response(
        status_line(status),
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]


def environ_from_headers(method, target, headers):
    """A minimal WSGI-style environ from an HTTP request line and its headers.

    Lets non-WSGI code (the fault proxy) use ``identify`` and ``render_error``.
    """
    path, _, query = target.partition("?")
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query}
    for name, value in headers:
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ["HTTP_" + key] = value
    return environ


def xml_escape(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def serve_until_stopped(server, host, exit_with_stdin, watch_fd=None, out=None):
    """Prints ``READY http://HOST:PORT`` and serves until SIGTERM/SIGINT, or, with
    ``exit_with_stdin``, until stdin reaches end of file (so a harness that holds the pipe
    open leaves no orphan behind when it dies). A server forked by the launcher's zygote
    watches its connection instead (``watch_fd``) and says READY on it (``out``)."""

    def stop(*_):
        # shutdown() waits for serve_forever() to return, so it can't run on the thread
        # serving (signal handlers run on the main thread, which is the serving one).
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if exit_with_stdin and watch_fd is None:
        watch_fd = sys.stdin.fileno()
    if watch_fd is not None:

        def watch():
            # os.read, not sys.stdin: a daemon thread blocked inside sys.stdin's buffer
            # lock can abort interpreter shutdown.
            while os.read(watch_fd, 4096):
                pass
            stop()

        threading.Thread(target=watch, daemon=True).start()

    print(f"READY http://{host}:{server.server_port}", file=out or sys.stdout, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
