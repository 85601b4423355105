"""Blob downloads from a reference's endpoints: one stream, or parallel ranges, into a ``Sink``.

``BlobDownloads`` is the blob half of ``RegistryClient`` (cas.registry.client), kept apart so
each file holds one idea: this one owns streaming, Range resume, the stall rule and the
endpoint walk for content; the client owns requests, auth, retries and manifests. It uses the
client's ``endpoints``, ``served``, ``ranges``, ``retries``, ``backoff``, ``timeout``,
``min_rate``, ``registry``, ``_retrying`` and ``_open``.
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
from cas.registry.retry import backoff_delay
from cas.registry.stall import StallWatch
from cas.registry.walk import walk
from cas.registry.wire import parse_content_range


class Sink(Protocol):
    """Where blob bytes go (``cas.store.blobs.Ingest`` is one)."""

    @property
    def offset(self) -> int: ...  # bytes already held: the resume point (a plain attribute works too)

    def write(self, chunk: bytes) -> None: ...

    def restart(self) -> None: ...  # drop partial data (the server ignored Range)


class BlobDownloads:
    def download_blob(
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
        endpoint. ``on_bytes(n)``: see ``_blob_from``; a rejected stream is rolled
        back with a negative ``n``.
        """
        report = on_bytes or (lambda n: None)

        def from_endpoint(ep: Endpoint, has_next: bool) -> None:
            def counted(n: int) -> None:
                self.served.add(ep, n)
                report(n)

            self._blob_from(ep, has_next, repository, digest, sink, counted)
            if commit is not None:
                held = sink.offset
                try:
                    commit()
                except IntegrityError:
                    report(-held)
                    raise

        walk(self.endpoints, PULL, f"blob {digest}", self.served, from_endpoint)

    def _blob_from(
        self, ep: Endpoint, has_next: bool, repository: str, digest: Digest, sink: Sink, report: Callable[[int], None]
    ) -> None:
        """Stream a blob from one endpoint into ``sink``, from ``sink.offset`` on (HTTP Range when it is > 0).

        The bytes are not verified here: the sink (the store's Ingest) does that.
        A connection dropped mid-stream resumes from ``sink.offset``, up to
        ``retries`` times in a row without progress (once when another endpoint
        is left). A stream slower than ``min_rate`` for ``timeout`` seconds is
        Stalled, not retried: the partial data stays for the next attempt.
        ``report(n)`` gives the ``n`` bytes just written to the sink; ``n`` is
        negative when the sink dropped ``-n`` bytes it held (a server that
        ignored Range, or answered the wrong range, made us ``restart()`` it), so
        a progress bar that started at the sink's offset can roll back.
        """
        repository = ep.repository or repository
        shown = f"blob {digest} of {ep.host}/{repository}"
        url = ep.resource(repository, "blobs", digest)
        if self.ranges is not None and self.ranges.wants(sink):
            watch = StallWatch(self.min_rate, self.timeout)  # over all ranges together

            def watched(n: int) -> None:
                report(n)
                watch.update(max(n, 0))

            try:
                if self._fetch_ranges(ep, has_next, url, repository, shown, sink, watched):
                    return
            except StallWatch.Stalled as exc:
                raise _stalled(shown, watch, sink) from exc
        failures, furthest = 0, sink.offset
        budget = min(1, self.retries) if has_next else self.retries
        while True:
            start = sink.offset
            headers = {"Accept-Encoding": "identity"}
            if start > 0:
                headers["Range"] = f"bytes={start}-"
            ok = (200, 206, 416) if start > 0 else (200,)
            response = self._retrying(
                ep,
                lambda headers=headers, ok=ok: self._open(ep, url, headers, repository, shown, kind="blob", ok=ok),
                has_next,
            )
            watch = StallWatch(self.min_rate, self.timeout)
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
                raise _stalled(shown, watch, sink) from exc
            except (_Resume, httpx.TransportError) as exc:
                if sink.offset > furthest:
                    failures, furthest = 0, sink.offset
                else:
                    failures += 1
                if failures > budget:
                    if isinstance(exc, _Resume):
                        raise RegistryError(
                            f"{ep.named(self.registry)} keeps answering the wrong range for {shown}"
                        ) from None
                    raise self._dropped(ep, exc, shown, sink) from exc
            finally:
                response.close()
            time.sleep(backoff_delay(failures, self.backoff))

    def _fetch_ranges(
        self,
        ep: Endpoint,
        has_next: bool,
        url: str,
        repository: str,
        shown: str,
        sink: Sink,
        report: Callable[[int], None],
    ) -> bool:
        """The blob as parallel Range requests (``cas.registry.ranged``); False: one stream from ``sink.offset``."""

        def open_range(start: int, end: int) -> httpx.Response:
            headers = {"Accept-Encoding": "identity", "Range": f"bytes={start}-{end - 1}"}
            ok = (200, 206, 416)  # anything but the 206 asked for ends the split (ranged.check_answer)
            return self._retrying(
                ep, lambda: self._open(ep, url, headers, repository, shown, kind="blob", ok=ok), has_next
            )

        assert self.ranges is not None
        try:
            return ranged.fetch(open_range, sink, self.ranges, report, retries=self.retries, backoff=self.backoff)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            raise self._dropped(ep, exc, shown, sink) from exc

    def _dropped(self, ep: Endpoint, exc: httpx.TransportError, shown: str, sink: Sink) -> Unreachable:
        reason = describe_transport_error(exc, ep.url, ep.source).reason
        return Unreachable(
            f"cannot reach {ep.named(self.registry)}: {reason} while downloading {shown} ({sink.offset} bytes held)",
            hint="run the pull again: it resumes where it stopped",
        )


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
