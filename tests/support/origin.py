"""``BlobOrigin``: the stand-in for the CDN a registry redirects blob downloads to.

Why: Docker Hub and others answer blob GETs with a 307 to another host; a client must follow
it WITHOUT sending its registry credentials there. This server (own 127.0.0.1 port) serves
the same bytes straight from the registry's storage, supports Range, and records every
request's Authorization header so a test can assert nothing leaked.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from .registry import Registry
from .tools import LocalServer

CHUNK = 64 * 1024


@dataclass(frozen=True)
class OriginRequest:
    method: str
    path: str
    authorization: str | None
    range: str | None
    status: int


class BlobOrigin:
    """A CDN stand-in on its own port: serves blobs straight from the registry's storage
    (Range supported) and records each request's Authorization header."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        self._log: list[OriginRequest] = []
        self._server: LocalServer | None = None

    def start(self) -> BlobOrigin:
        self._server = LocalServer(_OriginHandler, self, "blob-origin")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "origin not started"
        return self._server.url

    @property
    def requests(self) -> list[OriginRequest]:
        with self._lock:
            return list(self._log)

    @property
    def authorizations(self) -> list[str | None]:
        """The Authorization header of every request received (None where absent)."""
        return [r.authorization for r in self.requests]

    def reset(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, entry: OriginRequest) -> None:
        with self._lock:
            self._log.append(entry)


_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _OriginHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        origin: BlobOrigin = self.server.owner  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        digest = path.rsplit("/", 1)[-1]
        range_header = self.headers.get("Range")
        try:
            blob = origin.registry.blob_path(digest)
            size = blob.stat().st_size
        except (ValueError, OSError):
            status, start, end = 404, 0, -1
        else:
            status, start, end = 200, 0, size - 1
            m = _RANGE.match(range_header or "")
            if m:
                start = int(m[1])
                end = min(int(m[2]), size - 1) if m[2] else size - 1
                status = 206 if start < size else 416
        origin._record(OriginRequest(self.command, self.path, self.headers.get("Authorization"), range_header, status))
        self.send_response_only(status)
        if status in (404, 416):
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            with open(blob, "rb") as f:
                f.seek(start)
                left = end - start + 1
                while left:
                    data = f.read(min(CHUNK, left))
                    if not data:
                        break
                    self.wfile.write(data)
                    left -= len(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_HEAD = do_GET
