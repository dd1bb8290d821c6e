#!/usr/bin/env python3
"""A loopback HTTP proxy that injects AWS-style faults between a client and the launcher.

It forwards every request unchanged (method, path, query, headers including Host and
Authorization, body) to ``--upstream`` and returns the upstream's status, headers and
body, except that, per request and with a seeded random generator (so the decisions are
the same for the same seed and request order), it may:

- answer a throttling error without forwarding (``--throttle P``): JSON protocols get 400
  ``ThrottlingException``, query protocols 400 ``Throttling``, both "Rate exceeded"
  (AWS General Reference, "Throttling" errors / KMS API Reference, common errors);
- answer a server error without forwarding (``--server-error P``): 500
  ``KMSInternalException`` (JSON) or ``InternalFailure`` (query) (KMS API Reference,
  KMSInternalException; AWS common errors, InternalFailure);
- for writes (an action not starting with Get/List/Describe, and not STS), forward it
  and then replace the upstream's answer with that 500 (``--lost-write P``): the write is
  done but its answer is lost, as when a connection drops after AWS acted;
- sleep uniformly between MIN and MAX milliseconds before forwarding (``--latency``);
- enforce undisclosed request quotas (``--quota ACTION=RATE[:BURST]``, a token bucket per
  action, BURST defaulting to RATE; a BURST of 0 throttles every call of the action):
  a request finding its bucket empty gets the
  throttling error above without being forwarded. AWS documents per-API request quotas
  for KMS (KMS Developer Guide, "Request quotas") and throttles beyond them.

Control requests under ``/_proxy/`` are never forwarded:

- ``GET /_proxy/stats``: ``{"requests", "forwarded", "throttled", "server_errors",
  "lost_writes", "quota_throttled", "by_action": {ACTION: {"requests", "faults"}}}``;
- ``POST /_proxy/stats/reset``: zeroes them;
- ``GET /_proxy/config``; ``POST /_proxy/config`` with any of ``{"throttle",
  "server_error", "lost_write", "latency_ms": [min, max]}`` changes them at runtime and
  answers the new configuration.

Usage: ``faultproxy.py --upstream http://127.0.0.1:PORT [--host 127.0.0.1] [--port 0]
[--seed N] [--throttle P] [--server-error P] [--lost-write P] [--latency MIN_MS:MAX_MS]
[--quota ACTION=RATE[:BURST]]... [--exit-with-stdin]``. Once listening it prints
``READY http://HOST:PORT``. It stops on SIGTERM/SIGINT and, with ``--exit-with-stdin``,
when its stdin reaches end of file. It does not import moto.
"""

import argparse
import http.client
import json
import math
import random
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import wire

# Headers that describe one hop, not the message: never copied across the proxy.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}


# --- configuration and decisions -------------------------------------------------------


def probability(text):
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability in [0, 1]")
    return value


def latency_range(text):
    low, _, high = text.partition(":")
    low, high = float(low), float(high or low)
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError(f"{text}: want MIN_MS:MAX_MS with 0 <= MIN <= MAX")
    return low, high


def quota(text):
    action, _, rate = text.partition("=")
    rate, _, burst = rate.partition(":")
    rate = float(rate)
    burst = float(burst) if burst else rate
    if not action or rate <= 0 or burst < 0:
        raise argparse.ArgumentTypeError(f"{text}: want ACTION=RATE[:BURST], RATE > 0, BURST >= 0")
    return action, TokenBucket(rate, burst)


class TokenBucket:
    """RATE tokens a second, holding at most BURST; each request takes one."""

    def __init__(self, rate, burst):
        self.rate, self.burst = rate, burst
        self.tokens, self.last = burst, time.monotonic()

    def take(self):
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class Decision:
    """What happens to one AWS request."""

    fault: str | None  # "quota", "throttle", "server_error", "lost_write" or None
    latency_s: float


def _new_stats():
    return {
        "requests": 0,
        "forwarded": 0,
        "throttled": 0,
        "server_errors": 0,
        "lost_writes": 0,
        "quota_throttled": 0,
        "by_action": {},
    }


# Which stats counter each fault adds to.
FAULT_COUNTER = {
    "quota": "quota_throttled",
    "throttle": "throttled",
    "server_error": "server_errors",
    "lost_write": "lost_writes",
}


class Faults:
    """The seeded decisions, the runtime configuration and the counters."""

    def __init__(self, seed, throttle, server_error, lost_write, latency_ms, quotas):
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.config = {"throttle": throttle, "server_error": server_error, "lost_write": lost_write}
        self.config["latency_ms"] = list(latency_ms) if latency_ms else [0.0, 0.0]
        self.quotas = dict(quotas)
        self.stats = _new_stats()

    def decide(self, service, action):
        """Draws this request's fate. Four draws per request, whatever is decided, so
        that a seed gives the same decisions for the same request order."""
        with self.lock:
            draws = [self.rng.random() for _ in range(4)]
            c = self.config
            low, high = c["latency_ms"]
            latency_s = (low + (high - low) * draws[3]) / 1000.0
            bucket = self.quotas.get(action)
            if bucket is not None and not bucket.take():
                fault = "quota"
            elif draws[0] < c["throttle"]:
                fault = "throttle"
            elif draws[1] < c["server_error"]:
                fault = "server_error"
            elif wire.is_write(service, action) and draws[2] < c["lost_write"]:
                fault = "lost_write"
            else:
                fault = None
            self._count(action, fault)
            return Decision(fault, latency_s)

    def _count(self, action, fault):
        s = self.stats
        s["requests"] += 1
        per_action = s["by_action"].setdefault(action, {"requests": 0, "faults": 0})
        per_action["requests"] += 1
        if fault is None or fault == "lost_write":
            s["forwarded"] += 1
        if fault is not None:
            per_action["faults"] += 1
            s[FAULT_COUNTER[fault]] += 1

    def snapshot(self):
        with self.lock:
            return json.loads(json.dumps(self.stats))

    def reset(self):
        with self.lock:
            self.stats = _new_stats()

    def configure(self, changes):
        """Applies {"throttle", "server_error", "lost_write", "latency_ms"}; all or nothing."""
        if not isinstance(changes, dict):
            raise ValueError("expected a JSON object")
        new = {}
        for name, value in changes.items():
            if name in ("throttle", "server_error", "lost_write"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                    raise ValueError(f"{name} must be a probability in [0, 1]")
                new[name] = float(value)
            elif name == "latency_ms":
                ok = isinstance(value, list) and len(value) == 2
                ok = ok and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
                if not ok or not 0 <= value[0] <= value[1]:
                    raise ValueError("latency_ms must be [min, max] with 0 <= min <= max")
                new[name] = [float(value[0]), float(value[1])]
            else:
                raise ValueError(f"unknown setting {name!r}")
        with self.lock:
            self.config.update(new)
            return dict(self.config)

    def current(self):
        with self.lock:
            return dict(self.config)


# --- HTTP ------------------------------------------------------------------------------


def fault_error(fault, environ):
    """(status line, headers, body) for an injected fault, in the request's protocol."""
    json_protocol = wire.is_json_protocol(environ)
    if fault in ("quota", "throttle"):
        code = "ThrottlingException" if json_protocol else "Throttling"
        return wire.render_error(code, "Rate exceeded", 400, environ)
    code = "KMSInternalException" if json_protocol else "InternalFailure"
    return wire.render_error(code, "We encountered an internal error. Please try again.", 500, environ)


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1: keep the client's connection open between requests (aws-sdk-rust reuses
    # connections); every answer carries Content-Length.
    protocol_version = "HTTP/1.1"

    def do_any(self):
        body = self._read_body()
        if self.path.startswith("/_proxy/"):
            return self._control(body)
        environ = wire.environ_from_headers(self.command, self.path, self.headers.items())
        service, action, _ = wire.identify(environ, body)
        decision = self.server.faults.decide(service, action)
        if decision.fault in ("quota", "throttle", "server_error"):
            return self._answer(*fault_error(decision.fault, environ))
        if decision.latency_s > 0:
            time.sleep(decision.latency_s)
        answer = self._forward(body)
        if decision.fault == "lost_write":
            answer = fault_error("lost_write", environ)  # done upstream; answer lost
        self._answer(*answer)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_any

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self):
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after each chunk

    def _forward(self, body):
        """Sends the request upstream as received; (status line, headers, body)."""
        upstream = self.server.upstream
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=120)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    conn.putheader(name, value)
            if chunked:  # de-chunked above: say how long it is
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
            return f"{resp.status} {resp.reason}", headers, data
        except OSError as e:
            data = f"upstream unreachable: {e}".encode()
            return "502 Bad Gateway", [("Content-Type", "text/plain")], data
        finally:
            conn.close()

    def _answer(self, status, headers, data):
        code, _, reason = status.partition(" ")
        self.send_response_only(int(code), reason)
        for name, value in headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _control(self, body):
        faults, path, method = self.server.faults, self.path.split("?")[0], self.command
        try:
            if path == "/_proxy/stats" and method == "GET":
                return self._json(faults.snapshot())
            if path == "/_proxy/stats/reset" and method == "POST":
                faults.reset()
                return self._json({})
            if path == "/_proxy/config" and method == "GET":
                return self._json(faults.current())
            if path == "/_proxy/config" and method == "POST":
                return self._json(faults.configure(json.loads(body or b"{}")))
        except ValueError as e:
            return self._json({"error": str(e)}, 400)
        return self._json({"error": "not found"}, 404)

    def _json(self, value, status=200):
        data = json.dumps(value).encode()
        self._answer(wire.status_line(status), [("Content-Type", "application/json")], data)

    def log_message(self, format, *args):
        pass  # quiet: tests read stats, not logs


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, upstream, faults):
        super().__init__(address, Handler)
        self.upstream = upstream
        self.faults = faults


# --- main ------------------------------------------------------------------------------


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT of the launcher")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--throttle", type=probability, default=0.0)
    parser.add_argument("--server-error", type=probability, default=0.0)
    parser.add_argument("--lost-write", type=probability, default=0.0)
    parser.add_argument("--latency", type=latency_range, default=None, metavar="MIN_MS:MAX_MS")
    parser.add_argument("--quota", type=quota, action="append", default=[], metavar="ACTION=RATE[:BURST]")
    parser.add_argument("--exit-with-stdin", action="store_true", help="exit when stdin reaches EOF")
    args = parser.parse_args()
    upstream = urlsplit(args.upstream)
    if upstream.scheme != "http" or not upstream.hostname or not upstream.port:
        parser.error("--upstream must be http://HOST:PORT")
    args.upstream = upstream
    return args


def main():
    args = parse_args()
    faults = Faults(args.seed, args.throttle, args.server_error, args.lost_write, args.latency, args.quota)
    server = ProxyServer((args.host, args.port), args.upstream, faults)
    wire.serve_until_stopped(server, args.host, args.exit_with_stdin)

if __name__ == "__main__":
    main()
