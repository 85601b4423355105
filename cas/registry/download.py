"""Blob downloads from a reference's endpoints: one stream, or parallel ranges, into a ``Sink``.

``BlobDownloader`` owns streaming, Range resume, the stall rule and the endpoint walk for
content. Everything about requests (auth, redirects, retries within ``--timeout``, dead
endpoints) is the ``Requester``'s it is given, used through its public methods only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import httpx

from cas.digest import Digest
from cas.errors import IntegrityError, RegistryError, Stalled, Unreachable
from cas.registry import ranged
from cas.registry.endpoints import PULL, Endpoint
from cas.registry.failures import describe_transport_error
from cas.registry.requester import Requester
from cas.registry.retry import Patience
from cas.registry.stall import StallWatch
from cas.registry.wire import parse_content_range


class Sink(Protocol):
    """Where blob bytes go (``cas.store.blobs.Ingest`` is one)."""

    @property
    def offset(self) -> int: ...  # bytes already held: the resume point (a plain attribute works too)

    def write(self, chunk: bytes) -> None: ...

    def restart(self) -> None: ...  # drop partial data (the server ignored Range)


class BlobDownloader:
    def __init__(self, requester: Requester, *, ranges: ranged.RangePolicy | None, min_rate: int) -> None:
        """``ranges``: how large blobs may be split (None: one stream each); ``min_rate``: the stall rule's rate."""
        self.requester = requester
        self.ranges = ranges
        self.min_rate = min_rate

    def download(
        self,
        repository: str,
        digest: Digest,
        sink: Sink,
        on_bytes: Callable[[int], None] | None = None,
        commit: Callable[[], object] | None = None,
    ) -> None:
        """Stream a blob into ``sink`` from the first ``pull`` endpoint that serves it.

        ``commit`` (the store's ``Ingest.commit``, which verifies) runs once an
        endpoint's stream has ended; wrong bytes from a mirror (an IntegrityError:
        the sink has dropped them) are reported and fetched again from the next
        endpoint. ``on_bytes(n)`` gives the ``n`` bytes just written to the sink;
        ``n`` is negative when the sink dropped ``-n`` bytes it held (a server that
        ignored Range or answered the wrong range, wrong bytes from a mirror), so a
        progress bar that started at the sink's offset can roll back.
        """
        report = on_bytes or (lambda n: None)
        served = self.requester.served

        def from_endpoint(ep: Endpoint, has_next: bool) -> None:
            def counted(n: int) -> None:
                served.add(ep, n)
                report(n)

            self._blob_from(_Blob(ep, has_next, repository, digest), sink, counted)
            if commit is not None:
                held = sink.offset
                try:
                    commit()
                except IntegrityError:
                    report(-held)
                    raise

        self.requester.walk(PULL, f"blob {digest}", from_endpoint)

    def _blob_from(self, blob: _Blob, sink: Sink, report: Callable[[int], None]) -> None:
        """The blob from one endpoint, from ``sink.offset`` on: split into ranges when the
        policy and the server allow it, else one stream. Not verified here: the sink does that."""
        if self.ranges is not None and self.ranges.wants(sink):
            watch = StallWatch(self.min_rate, self.requester.timeout)  # over all ranges together

            def watched(n: int) -> None:
                report(n)
                watch.update(max(n, 0))

            try:
                if self._fetch_ranges(blob, sink, watched):
                    return
            except (StallWatch.Stalled, httpx.ReadTimeout) as exc:
                raise _stalled(blob.shown, watch, sink) from exc
        self._stream(blob, sink, report)

    def _stream(self, blob: _Blob, sink: Sink, report: Callable[[int], None]) -> None:
        """One stream; a connection dropped mid-stream resumes with Range from ``sink.offset``.

        Opening and resuming share one Patience: ``retries`` failures in a row without
        progress (once when another endpoint is left), within ``timeout`` since the last
        progress. A stream slower than ``min_rate`` for ``timeout`` seconds is Stalled, not
        retried: the partial data stays for the next attempt.
        """
        requester = self.requester
        patience = requester.patience(mark=sink.offset, has_next=blob.has_next)
        while True:
            start = sink.offset
            response = requester.retrying(blob.ep, lambda start=start: self._open(blob, start), blob.has_next, patience)
            watch = StallWatch(self.min_rate, requester.timeout)
            try:
                if _restart_needed(response, start):
                    sink.restart()
                    report(-start)
                    if response.status_code != 200:
                        raise _Resume()
                elif response.status_code == 416:
                    return  # the sink already holds the whole blob; the store verifies it
                for chunk in response.iter_raw():  # up to transport.READ_SIZE, no copy
                    sink.write(chunk)
                    report(len(chunk))
                    watch.update(len(chunk))
                return
            except (StallWatch.Stalled, httpx.ReadTimeout) as exc:
                raise _stalled(blob.shown, watch, sink) from exc
            except (_Resume, httpx.TransportError) as exc:
                delay = patience.failed(sink.offset)
                if delay is None:
                    raise self._gave_up(blob, exc, sink, patience) from exc
                reason = self._reason(blob, exc, sink)
            finally:
                response.close()
            requester.retried(delay, reason)
            time.sleep(delay)

    def _open(self, blob: _Blob, start: int, end: int | None = None) -> httpx.Response:
        """One GET of the blob from ``start`` (to ``end``, exclusive, for a range)."""
        headers = {"Accept-Encoding": "identity"}
        if end is not None:
            headers["Range"] = f"bytes={start}-{end - 1}"
        elif start > 0:
            headers["Range"] = f"bytes={start}-"
        ok = (200, 206, 416) if "Range" in headers else (200,)  # a range's odd answer ends the split
        return self.requester.open(blob.ep, blob.url, headers, blob.repository, blob.shown, kind="blob", ok=ok)

    def _fetch_ranges(self, blob: _Blob, sink: Sink, report: Callable[[int], None]) -> bool:
        """The blob as parallel Range requests (``cas.registry.ranged``); False: one stream from ``sink.offset``."""

        def open_range(start: int, end: int) -> httpx.Response:
            return self.requester.retrying(blob.ep, lambda: self._open(blob, start, end), blob.has_next)

        def retried(delay: float, why: str) -> None:
            self.requester.retried(delay, f"{blob.shown}: {why}")

        assert self.ranges is not None
        requester = self.requester
        try:
            return ranged.fetch(
                open_range,
                sink,  # type: ignore[arg-type]
                self.ranges,
                report,
                retries=requester.retries,
                backoff=requester.backoff,
                timeout=requester.timeout,
                on_retry=retried,
            )
        except httpx.TransportError as exc:
            if isinstance(exc, httpx.ReadTimeout):
                raise
            raise self._gave_up(blob, exc, sink, None) from exc

    def _reason(self, blob: _Blob, exc: Exception, sink: Sink) -> str:
        if isinstance(exc, _Resume):
            return f"{blob.ep.named(self.requester.registry)} answered the wrong range for {blob.shown}"
        reason = describe_transport_error(exc, blob.ep.url, blob.ep.source).reason
        return f"{reason} while downloading {blob.shown} ({sink.offset} bytes held)"

    def _gave_up(self, blob: _Blob, exc: Exception, sink: Sink, patience: Patience | None) -> RegistryError:
        if isinstance(exc, _Resume):
            return RegistryError(
                f"{blob.ep.named(self.requester.registry)} keeps answering the wrong range for {blob.shown}"
            )
        hint = "run the pull again: it resumes where it stopped"
        if patience is not None and patience.out_of_time:
            hint += ", or allow more time with --timeout (or $CAS_TIMEOUT)"
        return Unreachable(
            f"cannot reach {blob.ep.named(self.requester.registry)}: {self._reason(blob, exc, sink)}", hint=hint
        )


class _Blob:
    """One blob as one endpoint serves it: where to ask, and how errors name it."""

    def __init__(self, ep: Endpoint, has_next: bool, repository: str, digest: Digest) -> None:
        self.ep = ep
        self.has_next = has_next
        self.repository = ep.repository or repository
        self.shown = f"blob {digest} of {ep.host}/{self.repository}"
        self.url = ep.resource(self.repository, "blobs", digest)


def _stalled(shown: str, watch: StallWatch, sink: Sink) -> Stalled:
    return Stalled(
        f"download of {shown} stalled: {watch.describe()} ({sink.offset} bytes held)",
        hint="run the pull again: it resumes where it stopped; "
        "--timeout (or $CAS_TIMEOUT) sets how long a transfer may stall",
    )


class _Resume(Exception):
    """The server answered a Range request with the wrong range: start again from 0."""


def _restart_needed(response: httpx.Response, start: int) -> bool:
    """True when the sink's partial data must go: 200 to a Range, a wrong 206, or a 416 that is not 'complete'."""
    if start == 0:
        return False
    status = response.status_code
    if status == 200:
        return True
    parsed = parse_content_range(response.headers.get("Content-Range"))
    if status == 206:
        return parsed is None or parsed[0] != start
    return parsed is None or parsed[2] != start  # 416 "bytes */TOTAL": complete only when TOTAL == start
