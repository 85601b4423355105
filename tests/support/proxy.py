"""``FaultProxy``: a streaming reverse proxy on 127.0.0.1 in front of a Registry, with knobs
for the faults real registries and networks produce.

Why: retries, Range resume, Retry-After, slow links and CDN redirects cannot be tested against
a well-behaved local registry. The proxy forwards every header (Range, Authorization, ...)
and body as a stream (blobs are never held whole), and rewrites ``Location`` headers that
point at the upstream so uploads and redirects still go through it.

Knobs (settable while a test runs; ``reset()`` clears them and the counters):
- ``throttle(bytes_per_second)``: slow every blob response body to that rate. The cap is per
  response, so per connection: N parallel Range requests get N times the rate, as behind a
  CDN or a long fat link that caps each connection.
- ``strip_range(times=None)``: blob GETs go upstream without their ``Range`` header, so the
  registry answers 200 with the whole blob (a server that ignores Range).
- ``wrong_content_range(times=1, after=0)``: after ``after`` good ones, the next ``times`` 206
  blob answers carry a ``Content-Range`` shifted by one byte (the body is what was asked for).
- ``corrupt_answers(pattern=..., times=None)``: blob and manifest GET answers (200/206) whose
  path matches the regex ``pattern`` have the first byte of their body flipped: a registry
  serving wrong bytes with the right headers.
- ``later_range_start(times=1, after=0, by=1)``: after ``after`` ranged blob GETs left alone,
  the next ``times`` go upstream asking ``by`` bytes later in the blob, so the answer (passed
  on as the registry sent it) is a 206 whose ``Content-Range`` and body start late and end
  where the client asked: right end, right size, wrong start.
- ``throttle_range(bytes_per_second, after=0)``: slow only the body of the 206 blob answer
  after ``after`` others, as a trickle (a twentieth of the rate every 50 ms): one slow range
  in a split download whose other ranges arrive at full speed.
- ``drop_after(nbytes, times=1)``: the next ``times`` blob GET responses (200/206) send their
  headers and ``nbytes`` of body, then the connection is cut (``times=None``: until reset).
- ``fail_next(status, count=1, pattern=..., retry_after=...)``: answer the next ``count``
  requests whose path matches the regex ``pattern`` with ``status`` (429 + Retry-After, 5xx).
- ``throttle_uploads(bytes_per_second)``: read the body of every upload request (a push's PUT
  or PATCH) no faster than that, so a client's upload progress can be watched.
- ``upload_headers({name: value})``: add headers to every answer to an upload request, e.g.
  ``{"OCI-Chunk-Min-Length": "65536"}`` to make a client upload in chunks (distribution 2.8
  never asks for them; it accepts them all the same).
- ``foreign_uploads(host="localhost")``: upload ``Location`` headers name ``http://HOST:PORT``
  of this same proxy, which is another origin for a client that came in as 127.0.0.1 (like an
  upload URL on a storage host). Requests that arrive under that name are recorded with
  ``ProxiedRequest.foreign`` set, and are forwarded with the upstream's own credentials (the
  signed URL's stand-in), so a client must send none there.
- ``page_tags(size)``: tag list GETs are answered ``size`` tags a page, sorted, each page with a
  ``Link: <...?n=SIZE&last=TAG>; rel="next"`` to the next, as distribution 3 and Docker Hub page
  them (distribution 2.8 ignores ``n`` and answers every tag at once).
- ``redirect_blobs(times=None)``: blob GETs that the upstream would answer 200 get a 307 to
  ``self.origin``, a second server on another port that serves the same bytes (from the
  registry's storage) and records the Authorization header it received (``origin.requests``),
  so a test can assert credentials were NOT forwarded to it. The registry then logs a HEAD
  (0 bytes) for that blob, and the bytes show up in ``origin.requests`` instead.

Measure what reached the client with the proxy's own counters: when the proxy cuts a
response, the registry's log still counts what it had pushed into the proxy's socket.

Counts: ``requests`` (one ``ProxiedRequest`` per request), ``count(kind)``, ``bytes_sent(kind)``
where kind is that of ``registry.classify_path`` (blob, manifest, upload, base, ...).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from .origin import BlobOrigin
from .proxy_handler import ProxiedRequest, ProxyHandler
from .registry import Registry
from .tools import LocalServer


@dataclass
class _Failure:
    status: int
    count: int
    pattern: re.Pattern
    method: str | None
    retry_after: str | None


@dataclass
class _Knobs:
    rate: int | None = None
    drop_bytes: int | None = None
    drop_left: int | None = 0  # None = every response
    failures: list[_Failure] = field(default_factory=list)
    redirect_left: int | None = 0  # None = every blob GET
    upload_headers: dict[str, str] = field(default_factory=dict)
    upload_rate: int | None = None
    foreign_host: str | None = None
    strip_range_left: int | None = 0  # None = every blob GET
    wrong_range_left: int | None = 0  # None = every 206 blob answer
    wrong_range_after: int = 0  # 206 blob answers left alone before those
    corrupt_pattern: re.Pattern | None = None
    corrupt_left: int | None = 0  # None = every matching answer
    tag_page: int | None = None  # tags per page of a tag list
    late_start_left: int = 0  # ranged blob GETs forwarded asking a later start
    late_start_after: int = 0  # ranged blob GETs left alone before those
    late_start_by: int = 1
    slow_range_rate: int | None = None  # one 206 blob answer trickles at this rate
    slow_range_after: int = 0  # 206 blob answers at full speed before it


class FaultProxy:
    """Reverse proxy to ``upstream`` (a Registry); exposes its credentials for convenience."""

    def __init__(self, upstream: Registry) -> None:
        self.upstream = upstream
        self.origin = BlobOrigin(upstream)
        self._lock = threading.Lock()
        self._knobs = _Knobs()
        self._log: list[ProxiedRequest] = []
        self._server: LocalServer | None = None

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._server = LocalServer(ProxyHandler, self, "fault-proxy")
        self.origin.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self.origin.stop()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        assert self._server is not None, "proxy not started"
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def username(self) -> str | None:
        return self.upstream.username

    @property
    def password(self) -> str | None:
        return self.upstream.password

    # --- knobs -------------------------------------------------------------------------
    def throttle(self, bytes_per_second: int | None) -> None:
        with self._lock:
            self._knobs.rate = bytes_per_second

    def drop_after(self, nbytes: int, times: int | None = 1) -> None:
        with self._lock:
            self._knobs.drop_bytes, self._knobs.drop_left = nbytes, times

    def fail_next(
        self,
        status: int,
        count: int = 1,
        pattern: str = r"/blobs/sha256:",
        *,
        method: str | None = None,
        retry_after: int | str | None = None,
    ) -> None:
        """Answer the next ``count`` requests matching ``pattern`` (regex on path+query) with ``status``."""
        if status == 429 and retry_after is None:
            retry_after = 1
        with self._lock:
            self._knobs.failures.append(
                _Failure(status, count, re.compile(pattern), method, None if retry_after is None else str(retry_after))
            )

    def throttle_uploads(self, bytes_per_second: int | None) -> None:
        with self._lock:
            self._knobs.upload_rate = bytes_per_second

    def upload_headers(self, headers: dict[str, str]) -> None:
        with self._lock:
            self._knobs.upload_headers = dict(headers)

    def foreign_uploads(self, host: str | None = "localhost") -> None:
        with self._lock:
            self._knobs.foreign_host = host

    def redirect_blobs(self, times: int | None = None) -> None:
        """307 blob GETs to ``self.origin`` (``times=None``: every one until reset)."""
        with self._lock:
            self._knobs.redirect_left = times

    def strip_range(self, times: int | None = None) -> None:
        """Forward blob GETs without ``Range`` (``times=None``: every one until reset)."""
        with self._lock:
            self._knobs.strip_range_left = times

    def wrong_content_range(self, times: int | None = 1, after: int = 0) -> None:
        """Shift the ``Content-Range`` of ``times`` 206 blob answers by one byte, after ``after`` good ones."""
        with self._lock:
            self._knobs.wrong_range_left, self._knobs.wrong_range_after = times, after

    def corrupt_answers(self, pattern: str = r"/blobs/sha256:", times: int | None = None) -> None:
        """Flip the first body byte of ``times`` blob or manifest answers whose path matches ``pattern``
        (None: every one)."""
        with self._lock:
            self._knobs.corrupt_pattern, self._knobs.corrupt_left = re.compile(pattern), times

    def page_tags(self, size: int | None) -> None:
        with self._lock:
            self._knobs.tag_page = size

    def later_range_start(self, times: int = 1, after: int = 0, by: int = 1) -> None:
        """Ask upstream ``by`` bytes later for ``times`` ranged blob GETs, after ``after`` good ones."""
        with self._lock:
            self._knobs.late_start_left, self._knobs.late_start_after, self._knobs.late_start_by = times, after, by

    def throttle_range(self, bytes_per_second: int, after: int = 0) -> None:
        """Trickle the body of one 206 blob answer, the one after ``after`` others, at ``bytes_per_second``."""
        with self._lock:
            self._knobs.slow_range_rate, self._knobs.slow_range_after = bytes_per_second, after

    def reset(self) -> None:
        """Clear every knob and every counter (the origin's too)."""
        with self._lock:
            self._knobs = _Knobs()
            self._log.clear()
        self.origin.reset()

    # --- counters --------------------------------------------------------------------
    @property
    def requests(self) -> list[ProxiedRequest]:
        with self._lock:
            return list(self._log)

    def count(self, kind: str | None = None, method: str | None = None) -> int:
        return sum(
            1 for r in self.requests if (kind is None or r.kind == kind) and (method is None or r.method == method)
        )

    def bytes_sent(self, kind: str | None = None) -> int:
        return sum(r.bytes_sent for r in self.requests if kind is None or r.kind == kind)

    # --- used by the handler -------------------------------------------------------------
    def _record(self, rec: ProxiedRequest) -> None:
        with self._lock:
            self._log.append(rec)

    def _take_failure(self, method: str, path: str) -> _Failure | None:
        with self._lock:
            for f in self._knobs.failures:
                if f.count > 0 and f.pattern.search(path) and (f.method is None or f.method == method):
                    f.count -= 1
                    return f
        return None

    def _take(self, attr: str) -> bool:
        """Use one of the knob's remaining turns (``None`` left = unlimited)."""
        with self._lock:
            left = getattr(self._knobs, attr)
            if left is not None and left <= 0:
                return False
            if left is not None:
                setattr(self._knobs, attr, left - 1)
            return True

    def _take_wrong_range(self) -> bool:
        with self._lock:
            if self._knobs.wrong_range_left != 0 and self._knobs.wrong_range_after > 0:
                self._knobs.wrong_range_after -= 1
                return False
        return self._take("wrong_range_left")

    def _take_corrupt(self, path: str) -> bool:
        pattern = self._knobs.corrupt_pattern
        return pattern is not None and pattern.search(path) is not None and self._take("corrupt_left")

    def _take_late_start(self) -> int:
        """Bytes to move this ranged blob GET's start by (0: leave it)."""
        with self._lock:
            knobs = self._knobs
            if knobs.late_start_left <= 0:
                return 0
            if knobs.late_start_after > 0:
                knobs.late_start_after -= 1
                return 0
            knobs.late_start_left -= 1
            return knobs.late_start_by

    def _take_slow_range(self) -> int | None:
        """The trickle rate for this 206 blob answer, or None."""
        with self._lock:
            knobs = self._knobs
            if knobs.slow_range_rate is None:
                return None
            if knobs.slow_range_after > 0:
                knobs.slow_range_after -= 1
                return None
            rate, knobs.slow_range_rate = knobs.slow_range_rate, None
            return rate

    def _take_drop(self) -> int | None:
        """Bytes after which to cut this blob response, or None."""
        nbytes = self._knobs.drop_bytes
        return nbytes if nbytes is not None and self._take("drop_left") else None
