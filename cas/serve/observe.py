"""The access log (one line per request, text or JSON) and the counters ``/metrics`` shows.

A line names the method, the path (never a header, so never a credential; the query only
for ``ns``), the status, the bytes sent, the seconds taken and whether the store had it
(``hit``) or the upstream was asked (``miss``). The counters are Prometheus' text format.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from cas import stats
from cas.metadata import Metadata

FORMATS = ("text", "json")
CACHE = "cas.cache"  # request key: "hit" or "miss", set by the handlers that know


class Metrics:
    """Counters since start; updated from the event loop and worker threads."""

    def __init__(self, fetched: Callable[[], Mapping[str, int]] = dict) -> None:
        self.requests: Counter[int] = Counter()
        self.cache: Counter[str] = Counter()
        self.bytes_served = 0
        self._counted = 0  # of bytes_served, what `cas stats` already holds
        self.in_flight = 0
        self.fetched = fetched  # bytes fetched per upstream (the pull-through's own count)
        self._lock = threading.Lock()

    def flight(self, change: int) -> None:
        with self._lock:
            self.in_flight += change

    def answered(self, status: int, sent: int, cache: str | None) -> None:
        with self._lock:
            self.requests[status] += 1
            self.bytes_served += sent
            if cache:
                self.cache[cache] += 1

    def flush(self, index: Metadata) -> None:
        """Add the bytes served since the last flush to `cas stats` (one index write, not one per request)."""
        with self._lock:
            new, self._counted = self.bytes_served - self._counted, self.bytes_served
        stats.count(index, served_bytes=new)

    def text(self) -> str:
        """The Prometheus text exposition of every counter."""
        with self._lock:
            lines = _family("cas_serve_requests_total", "counter", "Requests answered, by status.")
            lines += [f'cas_serve_requests_total{{status="{s}"}} {n}' for s, n in sorted(self.requests.items())]
            lines += _family("cas_serve_bytes_served_total", "counter", "Body bytes sent to clients.")
            lines.append(f"cas_serve_bytes_served_total {self.bytes_served}")
            lines += _family(
                "cas_serve_cache_total", "counter", "Manifests and blobs the store had (hit) or fetched (miss)."
            )
            lines += [f'cas_serve_cache_total{{result="{r}"}} {self.cache[r]}' for r in ("hit", "miss")]
            lines += _family("cas_serve_transfers_in_flight", "gauge", "Requests being answered now.")
            lines.append(f"cas_serve_transfers_in_flight {max(self.in_flight - 1, 0)}")  # not this scrape
        lines += _family("cas_serve_upstream_bytes_total", "counter", "Blob bytes fetched from each upstream.")
        lines += [f'cas_serve_upstream_bytes_total{{upstream="{u}"}} {n}' for u, n in sorted(self.fetched().items())]
        return "\n".join(lines) + "\n"


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


METRICS = web.AppKey("metrics", Metrics)


@web.middleware
async def counted(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Requests in flight while their handler runs (streams are sent inside it; whole blobs: ``CountedFile``)."""
    metrics = request.app[METRICS]
    metrics.flight(+1)
    try:
        return await handler(request)
    finally:
        metrics.flight(-1)


class AccessLog(AbstractAccessLogger):
    """aiohttp's access-log hook: counts every answered request, and writes its line unless quiet."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_taken: float) -> None:
        cache = request.get(CACHE)
        sent = _body_bytes(request, response)
        request.app[METRICS].answered(response.status, sent, cache)
        if self.log_format == "none":
            return
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "method": request.method,
            "path": request.path,
            "ns": request.query.get("ns"),
            "status": response.status,
            "bytes": sent,
            "seconds": round(time_taken, 3),
            "cache": cache,
        }
        self.logger.info(json.dumps(entry) if self.log_format == "json" else _text(entry))


def _body_bytes(request: web.BaseRequest, response: web.StreamResponse) -> int:
    """The body's bytes: its length when the response declared one (a streamed one: all it wrote, framing too)."""
    if request.method == "HEAD":
        return 0
    return response.content_length if response.content_length is not None else response.body_length


def _text(entry: dict) -> str:
    ns = f" ns={entry['ns']}" if entry["ns"] else ""
    return (
        f"{entry['time']} {entry['method']} {entry['path']}{ns} {entry['status']} {entry['bytes']}B"
        f" {entry['seconds']}s {entry['cache'] or '-'}"
    )


def access_logger() -> logging.Logger:
    """Lines to stderr, as the server's other messages."""
    logger = logging.getLogger("cas.serve.access")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[METRICS].text(), content_type="text/plain", charset="utf-8")
