"""The request handler of ``FaultProxy`` (tests/support/proxy.py): forward, relay, and act on the knobs.

Split from the proxy so each file holds one job: proxy.py has the knobs and counters a test
sets and reads; this file has the HTTP plumbing that obeys them.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, BinaryIO

from .registry import classify_path

if TYPE_CHECKING:
    from .proxy import FaultProxy, _Failure


CHUNK = 64 * 1024
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
    "proxy-connection",
}
ERROR_CODES = {429: "TOOMANYREQUESTS", 500: "UNKNOWN", 502: "UNKNOWN", 503: "UNAVAILABLE", 504: "UNKNOWN"}


@dataclass
class ProxiedRequest:
    """What the proxy saw and did for one request."""

    method: str
    path: str  # path plus query
    kind: str
    headers: dict[str, str]  # request headers as received (lower-case names)
    status: int = 0  # status sent to the client
    bytes_sent: int = 0  # response body bytes sent to the client
    fault: str | None = None  # "status", "drop", "redirect", "corrupt"... when a knob acted
    foreign: bool = False  # arrived under the foreign_uploads host name
    client_port: int = 0  # the client's end of the connection it came on


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _proxy(self) -> None:
        proxy: FaultProxy = self.server.owner  # type: ignore[attr-defined]
        kind = classify_path(self.path)[0]
        rec = ProxiedRequest(self.command, self.path, kind, {k.lower(): v for k, v in self.headers.items()})
        foreign = proxy._knobs.foreign_host
        rec.foreign = foreign is not None and self.headers.get("Host", "").partition(":")[0] == foreign
        rec.client_port = self.client_address[1]
        proxy._record(rec)
        try:
            failure = proxy._take_failure(self.command, self.path)
            if failure is not None:
                self._drain_body()
                rec.fault = "status"
                self._send_error(rec, failure)
                return
            if self.command == "GET" and kind == "tags" and proxy._knobs.tag_page:
                self._tag_page(proxy, rec, proxy._knobs.tag_page)
                return
            if self.command == "GET" and kind == "blob" and proxy._take("redirect_left"):
                if self._redirect(proxy, rec):
                    return
            self._forward(proxy, rec)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # --- pieces --------------------------------------------------------------------------
    def _send_error(self, rec: ProxiedRequest, failure: _Failure) -> None:
        body = json.dumps(
            {
                "errors": [
                    {
                        "code": ERROR_CODES.get(failure.status, "UNKNOWN"),
                        "message": f"injected {failure.status} by the fault proxy",
                    }
                ]
            }
        ).encode()
        self.send_response_only(failure.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if failure.retry_after is not None:
            self.send_header("Retry-After", failure.retry_after)
        rec.status = failure.status  # recorded before the client can see the answer
        if self.command != "HEAD":
            rec.bytes_sent = len(body)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _redirect(self, proxy: FaultProxy, rec: ProxiedRequest) -> bool:
        """Ask upstream with HEAD (auth is checked there); on 200 answer 307 to the origin."""
        conn = self._upstream(proxy)
        try:
            headers = {k: v for k, v in self._forward_headers(proxy).items() if k.lower() != "range"}
            conn.request("HEAD", self.path, headers=headers)  # without Range: a 206 is as good as a 200
            resp = conn.getresponse()
            resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            return False  # let the real GET produce the real error
        digest = classify_path(self.path)[2]
        location = f"{proxy.origin.url}/blobs/{digest}?expires={int(time.time()) + 600}&sig={secrets.token_hex(8)}"
        self.send_response_only(307)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()
        rec.status, rec.fault = 307, "redirect"
        return True

    def _tag_page(self, proxy: FaultProxy, rec: ProxiedRequest, size: int) -> None:
        """One page of the upstream's whole tag list: ``size`` tags after ``last``, and a Link to the next."""
        path, _, query = self.path.partition("?")
        params = dict(pair.partition("=")[::2] for pair in query.split("&") if pair)
        conn = self._upstream(proxy)
        try:
            conn.request("GET", path, headers=self._forward_headers(proxy))
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        headers = {"Content-Type": "application/json"}
        if resp.status == 200:
            body = json.loads(data)
            tags = sorted(body.get("tags") or [])
            tags = [t for t in tags if t > params.get("last", "")]
            n = min(size, int(params.get("n") or size))
            body["tags"], rest = tags[:n], tags[n:]
            if rest:
                headers["Link"] = f'<{path}?n={n}&last={body["tags"][-1]}>; rel="next"'
            data = json.dumps(body).encode()
        else:
            headers.update({k: v for k, v in resp.getheaders() if k.lower() == "www-authenticate"})
        self.send_response_only(resp.status)
        for name, value in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(name, value)
        rec.status, rec.bytes_sent = resp.status, len(data)
        self.end_headers()
        self.wfile.write(data)

    def _forward(self, proxy: FaultProxy, rec: ProxiedRequest) -> None:
        conn = self._upstream(proxy)
        try:
            headers = self._forward_headers(proxy)
            if (
                self.command == "GET"
                and rec.kind == "blob"
                and "range" in rec.headers
                and proxy._take("strip_range_left")
            ):
                headers = {k: v for k, v in headers.items() if k.lower() != "range"}
                rec.fault = "strip-range"
            elif self.command == "GET" and rec.kind == "blob" and "range" in rec.headers:
                late = proxy._take_late_start()
                if late:
                    headers = {k: _later(v, late) if k.lower() == "range" else v for k, v in headers.items()}
                    rec.fault = "late-start"
            body = self._request_body()
            if rec.kind == "upload" and isinstance(body, _Limited):
                body.rate = proxy._knobs.upload_rate
            conn.request(self.command, self.path, body=body, headers=headers, encode_chunked=self._is_chunked())
            resp = conn.getresponse()
            self._relay(proxy, rec, resp)
        finally:
            conn.close()

    def _relay(self, proxy: FaultProxy, rec: ProxiedRequest, resp: http.client.HTTPResponse) -> None:
        rec.status = resp.status
        self.send_response_only(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        shift = rec.kind == "blob" and resp.status == 206 and proxy._take_wrong_range()
        for name, value in resp.getheaders():
            lname = name.lower()
            if lname in HOP_BY_HOP:
                continue
            if lname == "location" and value.startswith(proxy.upstream.url):
                value = self._proxied_location(proxy, rec) + value[len(proxy.upstream.url) :]
            if lname == "content-range" and shift:
                value = _shifted(value)
                rec.fault = "wrong-range"
            self.send_header(name, value)
        if rec.kind == "upload":
            for name, value in proxy._knobs.upload_headers.items():
                self.send_header(name, value)
        has_body = self.command != "HEAD" and resp.status not in (204, 304) and resp.status >= 200
        chunked = has_body and length is None
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if not has_body:
            return
        is_blob_body = rec.kind == "blob" and self.command == "GET" and resp.status in (200, 206)
        drop = proxy._take_drop() if is_blob_body else None
        is_content = rec.kind in ("blob", "manifest") and self.command == "GET" and resp.status in (200, 206)
        corrupt = is_content and proxy._take_corrupt(self.path)
        rate = proxy._knobs.rate if rec.kind == "blob" else None
        chunk = CHUNK if not rate else max(1024, min(CHUNK, rate // 20))
        slow = proxy._take_slow_range() if is_blob_body and resp.status == 206 else None
        if slow is not None:
            rate, chunk, rec.fault = slow, max(1, slow // 20), "slow-range"
        started = time.monotonic()
        while True:
            data = resp.read1(chunk) if hasattr(resp, "read1") else resp.read(chunk)
            if not data:
                break
            if corrupt:
                data, corrupt = bytes([data[0] ^ 0xFF]) + data[1:], False
                rec.fault = "corrupt"
            # Counted before they are written: a client may finish reading before this thread
            # runs again, and a test reads the counters as soon as its client is done.
            if drop is not None and rec.bytes_sent + len(data) >= drop:
                data = data[: drop - rec.bytes_sent]
                rec.bytes_sent += len(data)
                rec.fault = "drop"
                self._write(data, chunked)
                self._cut()
                return
            rec.bytes_sent += len(data)
            self._write(data, chunked)
            if rate:
                ahead = rec.bytes_sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _write(self, data: bytes, chunked: bool) -> None:
        if chunked:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.wfile.write(data)

    def _cut(self) -> None:
        """End the connection mid-body, as a network failure would."""
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _upstream(self, proxy: FaultProxy) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", proxy.upstream.port, timeout=120)

    def _proxied_location(self, proxy: FaultProxy, rec: ProxiedRequest) -> str:
        foreign = proxy._knobs.foreign_host
        if rec.kind == "upload" and foreign is not None:
            return f"http://{foreign}:{proxy.host.rpartition(':')[2]}"
        return proxy.url

    def _forward_headers(self, proxy: FaultProxy) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():  # repeated headers (skopeo sends Accept several times) joined
            if name.lower() not in HOP_BY_HOP and name.lower() != "host":
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        headers["Host"] = proxy.upstream.host
        foreign = proxy._knobs.foreign_host
        if foreign is not None and self.headers.get("Host", "").partition(":")[0] == foreign:
            headers.update(proxy.upstream.basic_auth_header())  # the signed upload URL's stand-in
        return headers

    def _is_chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def _request_body(self) -> BinaryIO | Iterator[bytes] | None:
        if self._is_chunked():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return _Limited(self.rfile, length) if length else None

    def _read_chunked(self) -> Iterator[bytes]:
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            remaining = size
            while remaining:
                data = self.rfile.read(min(CHUNK, remaining))
                if not data:
                    return
                remaining -= len(data)
                yield data
            self.rfile.readline()

    def _drain_body(self) -> None:
        body = self._request_body()
        if body is None:
            return
        if isinstance(body, _Limited):
            while body.read(CHUNK):
                pass
        else:
            for _ in body:
                pass


def _shifted(content_range: str) -> str:
    """``bytes 0-99/1000`` -> ``bytes 1-100/1000``: a range one byte off what was sent."""
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range.strip())
    if not match:
        return "bytes 1-1/1"
    start, end, total = match.groups()
    return f"bytes {int(start) + 1}-{int(end) + 1}/{total}"


def _later(range_header: str, by: int) -> str:
    """``bytes=100-199`` -> ``bytes=101-199`` (``by`` = 1): the same end, a later start."""
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
    if not match:
        return range_header
    start, end = match.groups()
    return f"bytes={int(start) + by}-{end}"


class _Limited:
    """A file-like view of exactly ``length`` bytes of the request body (streamed upstream)."""

    def __init__(self, f: BinaryIO, length: int) -> None:
        self.f, self.left = f, length
        self.rate: int | None = None  # bytes/s, for throttle_uploads
        self._started, self._read = time.monotonic(), 0

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        if self.rate:
            n = min(n, max(1024, self.rate // 20))
            ahead = self._read / self.rate - (time.monotonic() - self._started)
            if ahead > 0:
                time.sleep(ahead)
        data = self.f.read(n)
        self.left -= len(data)
        self._read += len(data)
        return data
