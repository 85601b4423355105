"""Parallel ranged downloads of one large blob, decided per blob from what the server does.

Why: one TCP connection is often capped far below the link (latency, a CDN's per-connection
limit), so containerd 2.1 fetches a layer as several Range requests at once. Bottlerocket
turned that off again after registries with odd Range behaviour and races in the chunk
logic. So here the split is earned, blob by blob:

- The first request asks for the first missing chunk. Only a 206 whose ``Content-Range``
  names exactly that chunk and the blob's full size lets the blob be split; anything else
  (a 200: the server ignores Range; another size; no header) means one stream, as before.
- That chunk's first PROBE bytes measure the link: when one connection already brings
  FAST_ENOUGH bytes/s, it is not capped, and more connections would only cost CPU (measured:
  a loopback registry on 2 cores is slower split), so the rest is one stream. When it is
  slower, the other ranges start at once, while the first chunk finishes: a capped link is
  not left on one connection for the whole first chunk.
- Every later range's answer is checked the same way. One odd answer stops the split: the
  ranges stop, the data beyond the hashed prefix is dropped, and the blob continues as one
  stream from the prefix (the caller's ordinary path).
- A connection reset inside a range is retried from where that range stopped, under the same
  ``Patience`` as every other retry (``--timeout`` since the range last moved bounds it).
- Bytes land at their offsets in the store's ingest entry (``cas.store.ranges``), which
  hashes the contiguous prefix as it grows and records completed ranges, so a kill at any
  moment resumes. The digest is checked at commit as for any download.

Connections are bounded per pull, not per blob: each blob being downloaded holds one slot
of the pull's ``ConnectionBudget``; range workers borrow more only while slots are free, and
a slot given back goes at once to a blob with ranges still queued.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from cas.registry.retry import Patience
from cas.registry.wire import parse_content_range
from cas.settings import DEFAULT_CONNECTIONS, DEFAULT_TIMEOUT

CHUNK = 16 << 20  # bytes per range request: ~0.8 s at a 20 MB/s per-connection cap
MIN_SIZE = 2 * CHUNK  # smaller blobs are one stream: a split would not pay for its requests
FAST_ENOUGH = 100_000_000  # bytes/s: a connection this fast is not capped; more would only add CPU
PROBE = 4 << 20  # bytes of the first range that judge the link (~0.2 s at 20 MB/s); all of it when shorter

Interval = tuple[int, int]
Opener = Callable[[int, int], httpx.Response]  # (start, end) half-open -> an open response (200 or 206)


class RangeWriter(Protocol):
    """The store's side (``cas.store.ranges.RangeWriter``)."""

    @property
    def offset(self) -> int: ...
    def missing(self) -> list[Interval]: ...
    def write_at(self, offset: int, data: bytes) -> None: ...
    def range_done(self) -> None: ...
    def finish(self) -> None: ...
    def abandon(self) -> int: ...
    def close(self) -> None: ...


class RangedSink(Protocol):
    """A sink that can also take ranges (``cas.store.blobs.Ingest``)."""

    size: int | None

    def ranged(self) -> RangeWriter: ...


class ConnectionBudget:
    """At most ``total`` connections for one pull: ``slot()`` for each blob's own stream
    (waits), ``borrow()`` for an extra range connection (never waits). A split with ranges
    queued is told when a connection comes back (``hungry``), so that connection does not
    sit idle until one of its workers ends a range."""

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self._free = self.total
        self._cond = threading.Condition()
        self._hungry: list[Callable[[], None]] = []

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._free > 0)
            self._free -= 1
        try:
            yield
        finally:
            self.give_back()

    def borrow(self) -> bool:
        with self._cond:
            if self._free <= 0:
                return False
            self._free -= 1
            return True

    def give_back(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify()
            hungry = list(self._hungry)
        for grow in hungry:  # each borrows what is free and never waits
            grow()

    @contextlib.contextmanager
    def hungry(self, grow: Callable[[], None]) -> Iterator[None]:
        """Call ``grow()`` whenever a connection is given back, while inside."""
        with self._cond:
            self._hungry.append(grow)
        try:
            yield
        finally:
            with self._cond:
                self._hungry.remove(grow)


@dataclass
class RangePolicy:
    """When and how a pull splits blobs (one per pull: it holds the pull's budget)."""

    budget: ConnectionBudget = field(default_factory=lambda: ConnectionBudget(DEFAULT_CONNECTIONS))
    chunk: int = CHUNK
    min_size: int = MIN_SIZE
    fast_enough: float | None = FAST_ENOUGH  # None: split at once, without measuring the first range
    probe: int = PROBE

    def wants(self, sink: object) -> bool:
        size = getattr(sink, "size", None)
        return (
            self.budget.total > 1
            and hasattr(sink, "ranged")
            and size is not None
            and size - getattr(sink, "offset", 0) >= self.min_size
        )


class Unusual(Exception):
    """A range answer that does not fit the request: stop splitting this blob."""


def split(missing: list[Interval], chunk: int) -> list[Interval]:
    """The missing intervals cut into requests of at most ``chunk`` bytes, in order."""
    out = []
    for start, end in missing:
        out.extend((at, min(at + chunk, end)) for at in range(start, end, chunk))
    return out


def check_answer(response: httpx.Response, start: int, end: int, size: int) -> None:
    """Raise Unusual unless ``response`` is a 206 for exactly ``[start, end)`` of ``size`` bytes."""
    if response.status_code != 206:
        raise Unusual(f"answered {response.status_code} to a Range request")
    value = response.headers.get("Content-Range")
    if parse_content_range(value) != (start, end - 1, size):
        raise Unusual(f"answered Content-Range {value!r} for bytes {start}-{end - 1}/{size}")


def fetch(
    open_range: Opener,
    sink: RangedSink,
    policy: RangePolicy,
    report: Callable[[int], None],
    *,
    retries: int,
    backoff: float,
    timeout: float = DEFAULT_TIMEOUT,
    on_retry: Callable[[float, str], None] | None = None,
) -> bool:
    """Fetch the rest of the blob in ranges; False when it must be one stream from ``sink.offset``.

    ``report(n)`` gets every chunk written (from several threads, serialized here) and a
    negative ``n`` for bytes of this call dropped when the split is abandoned. Raises what
    ``open_range`` raises (CasError), and the last ``httpx.TransportError`` of a range that
    failed ``retries`` times in a row without progress, or stopped moving for ``timeout``
    seconds; the ingest entry keeps every completed range for the next attempt.
    ``on_retry(delay, why)`` hears of each range tried again.
    """
    assert sink.size is not None
    patience = functools.partial(Patience, retries, backoff, timeout)
    split_ = _Split(open_range, sink.ranged(), sink.size, policy, report, patience, on_retry)
    with policy.budget.hungry(split_.grow):
        return split_.run()


class _Split:
    def __init__(
        self,
        open_range: Opener,
        writer: RangeWriter,
        size: int,
        policy: RangePolicy,
        report: Callable[[int], None],
        patience: Callable[..., Patience],
        on_retry: Callable[[float, str], None] | None,
    ) -> None:
        self.open_range = open_range
        self.writer = writer
        self.size = size
        self.policy = policy
        self.patience = patience  # a fresh one per range: patience(mark=start)
        self.on_retry = on_retry or (lambda delay, why: None)
        self.todo: deque[Interval] = deque(split(writer.missing(), policy.chunk))
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.unusual: Unusual | None = None
        self.error: BaseException | None = None
        self.workers: list[threading.Thread] = []
        self.written = 0  # bytes written by this call (what report() was told)
        self._report = report
        self.splitting = policy.fast_enough is None  # else decided by _judge, during the first range
        self._probing: tuple[int, float] | None = None  # (start, time) of the first range while it is judged

    def run(self) -> bool:
        try:
            if self.todo:
                first = self.todo.popleft()
                response = self.open_range(*first)
                try:
                    check_answer(response, *first, self.size)
                except Unusual:
                    response.close()
                    self._drop()
                    return False
                if self.splitting:
                    self._work(first, response)  # split at once; this thread is the first worker
                else:
                    self._probing = (first[0], time.monotonic())
                    self._work(first, response, only=True)  # how fast is one connection? (_judge)
                    if self.error is None and self.unusual is None:
                        if self._probing is not None:
                            self._judge(first[1], whole=True)  # a first range shorter than the probe
                        if not self.splitting:
                            self._drop()  # drops nothing: the first range is the hashed prefix
                            return False
                        self._work(None)  # this thread stays a worker; others join while slots are free
            self._join()
        except BaseException:
            self.stop.set()
            self._join()
            self.writer.close()
            raise
        if self.error is not None:
            self.writer.close()
            raise self.error
        if self.unusual is not None or self.writer.missing():
            self._drop()
            return False
        self.writer.finish()
        return True

    # workers -------------------------------------------------------------------
    def _judge(self, at: int, *, whole: bool = False) -> None:
        """Once the first range brought ``policy.probe`` bytes (or all of it), decide: a connection
        fast enough, with nothing beyond the prefix held, keeps one stream; otherwise the other
        ranges start now, while this one goes on."""
        assert self._probing is not None and self.policy.fast_enough is not None
        start, started = self._probing
        if at - start < self.policy.probe and not whole:
            return
        self._probing = None
        rate = (at - start) / max(time.monotonic() - started, 1e-6)
        if rate < self.policy.fast_enough or self.writer.missing() != [(at, self.size)]:
            self.splitting = True
            self.grow()

    def _work(self, interval: Interval | None, response: httpx.Response | None = None, *, only: bool = False) -> None:
        """Fetch ranges until none is left or the split stops (``only``: just ``interval``, with its answer)."""
        try:
            while not self.stop.is_set():
                if interval is None:
                    interval = self._take()
                    if interval is None:
                        return
                if not only:
                    self.grow()
                self._fetch_range(*interval, response)
                if only:
                    return
                interval, response = None, None
        except Unusual as exc:
            with self.lock:
                self.unusual = self.unusual or exc
            self.stop.set()
        except BaseException as exc:
            with self.lock:
                self.error = self.error or exc
            self.stop.set()

    def _fetch_range(self, start: int, end: int, response: httpx.Response | None) -> None:
        at, patience = start, self.patience(mark=start)
        while at < end:
            if self.stop.is_set():
                if response is not None:
                    response.close()
                return
            try:
                if response is None:
                    response = self.open_range(at, end)
                    check_answer(response, at, end, self.size)
                for chunk in response.iter_raw():
                    if at + len(chunk) > end:
                        raise Unusual(f"sent more than the {end - start} bytes asked for")
                    self.writer.write_at(at, chunk)
                    at += len(chunk)
                    self.report(len(chunk))
                    if self._probing is not None:
                        self._judge(at)
                    if self.stop.is_set():
                        break
                else:
                    if at < end:
                        raise httpx.RemoteProtocolError(f"range {start}-{end - 1} ended after {at - start} bytes")
            except httpx.TransportError as exc:
                delay = patience.failed(at)
                if delay is None:
                    raise
                self.on_retry(delay, f"range {start}-{end - 1} stopped at byte {at} ({exc}); resuming it")
                time.sleep(delay)
            finally:
                if response is not None:
                    response.close()
                response = None
        self.writer.range_done()

    def _take(self) -> Interval | None:
        with self.lock:
            return self.todo.popleft() if self.todo else None

    def grow(self) -> None:
        """Start another worker for each free slot of the pull's budget while work is queued (also
        called by the budget, from any thread, when a connection comes back)."""
        while True:
            with self.lock:
                if not self.splitting or not self.todo or self.stop.is_set() or not self.policy.budget.borrow():
                    return
                thread = threading.Thread(target=self._borrowed, name="cas-range", daemon=True)
                self.workers.append(thread)
            thread.start()

    def _borrowed(self) -> None:
        try:
            self._work(None)
        finally:
            self.policy.budget.give_back()

    def _join(self) -> None:
        while True:
            with self.lock:
                pending = [t for t in self.workers if t.is_alive()]
            if not pending:
                return
            for thread in pending:
                thread.join()

    def report(self, n: int) -> None:
        with self.lock:
            self.written += n
            self._report(n)

    def _drop(self) -> None:
        """Abandon the split: keep the hashed prefix, roll progress back for what this call wrote beyond it."""
        dropped = self.writer.abandon()
        self.report(-min(dropped, self.written))
