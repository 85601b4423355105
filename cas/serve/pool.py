"""A bounded pool of connections: past ``limit`` open ones, a new connection gets a 503 and is closed.

aiohttp holds any number of connections, each a file descriptor; hundreds of idle or
half-sent ones would end in "too many open files" for the store's own reads. So the
listener's protocol factory counts the connections it handed to aiohttp, and past the cap
answers with the spec's JSON error (``Retry-After: 1``) instead of a request handler.
"""

from __future__ import annotations

import asyncio
import resource
import time

from aiohttp import web

from cas.errors import UsageError
from cas.serve.errcode import ServeError

SPARE_FDS = 128  # descriptors kept for the store, the upstreams and the log beside the connections
HANDSHAKE_TIMEOUT = 60.0  # asyncio's default for a TLS handshake
LINGER = 5.0  # seconds a connection past the cap has to send its request and read the 503


class Bounded:
    """The listener's protocol factory: aiohttp's handler while fewer than ``limit`` connections are open.

    Open means registered with aiohttp (``Server.connections``), or handed out and not yet
    registered: asyncio accepts a burst of connections before any of them registers, and a
    TLS connection registers only after its handshake. One that has not registered within
    asyncio's handshake timeout never will (its handshake failed), and leaves the count.
    """

    def __init__(self, handlers: web.Server, limit: int) -> None:
        self.handlers = handlers
        self.limit = limit
        self._new: dict[asyncio.BaseProtocol, float] = {}  # handed out, not yet registered -> until when

    def __call__(self) -> asyncio.BaseProtocol:
        registered, now = set(self.handlers.connections), time.monotonic()
        self._new = {h: until for h, until in self._new.items() if h not in registered and until > now}
        if len(registered) + len(self._new) >= self.limit:
            return _Busy(self.limit)
        handler = self.handlers()
        self._new[handler] = now + HANDSHAKE_TIMEOUT
        return handler


def reserve_descriptors(limit: int) -> None:
    """Raise the soft RLIMIT_NOFILE so ``limit`` connections fit beside the store's files; else a UsageError."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = limit + SPARE_FDS
    if soft >= needed or soft == resource.RLIM_INFINITY:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise UsageError(
            f"--max-connections {limit} needs {needed} open files, and this process may open only {hard}",
            hint=f"lower --max-connections to at most {max(hard - SPARE_FDS, 1)}, or raise `ulimit -Hn`",
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class _Busy(asyncio.Protocol):
    """A connection past the cap: its request answered 503 and the connection closed, or closed
    after LINGER seconds when no request comes. Answering before the request arrived would lose
    the answer to a reset when the request lands on a closed socket."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.transport: asyncio.Transport | None = None
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        asyncio.get_running_loop().call_later(LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        """The request (or its first bytes): answered once; the rest is read and dropped."""
        if self.answered or self.transport is None:
            return
        self.answered = True
        error = ServeError("UNAVAILABLE", f"cas serve holds its maximum of {self.limit} connections: try again")
        body = error.body()
        head = (
            f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Retry-After: 1\r\nConnection: close\r\nDocker-Distribution-API-Version: registry/2.0\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the answer is whole; the client closes, or LINGER does

    def eof_received(self) -> bool:
        assert self.transport is not None
        self.transport.close()
        return False
