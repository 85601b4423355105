"""The registry client: manifests and streamed blobs over one pooled httpx.Client.

It retries what may succeed later (429, 5xx, refused or dropped connections),
resumes a dropped blob with Range, follows redirects without carrying the
registry's Authorization to another origin, and maps every failure to a
CasError. It never writes to the store: blob bytes go to a ``Sink``.

Scheme: plain http only for loopback hosts or ``insecure=True``, https
otherwise. The TLS context (about 90 ms to build) is made only when an https
URL is actually contacted, once per process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import httpx

from cas import __version__
from cas.digest import Digest, of_bytes, verify_bytes
from cas.errors import BadDigest, ManifestError, RegistryError, Unreachable
from cas.manifest import ACCEPT, media_type_of
from cas.registry import ranged
from cas.registry.auth import RegistryAuth, TokenCache
from cas.registry.credentials import Credentials
from cas.registry.failures import describe_transport_error, status_error
from cas.registry.retry import MAX_RETRY_AFTER, Transient, backoff_delay
from cas.registry.transport import LazyTLSTransport
from cas.registry.wire import is_loopback, parse_content_range

MAX_MANIFEST = 4 << 20
MAX_REDIRECTS = 5
_T = TypeVar("_T")


@dataclass(frozen=True)
class FetchedManifest:
    data: bytes
    media_type: str
    digest: Digest


class Sink(Protocol):
    """Where blob bytes go (``cas.store.blobs.Ingest`` is one)."""

    @property
    def offset(self) -> int: ...  # bytes already held: the resume point (a plain attribute works too)

    def write(self, chunk: bytes) -> None: ...

    def restart(self) -> None: ...  # drop partial data (the server ignored Range)


class RegistryClient:
    def __init__(
        self,
        registry: str,
        *,
        insecure: bool = False,
        credentials: Credentials | None = None,
        token_cache: TokenCache | None = None,
        retries: int = 5,
        backoff: float = 0.5,
        timeout: float = 30.0,
        ranges: ranged.RangePolicy | None = None,
    ) -> None:
        """``ranges``: how large blobs may be split into parallel Range requests
        (``cas.registry.ranged``); None: every blob is one stream."""
        self.registry = registry
        self.scheme = "http" if insecure or is_loopback(registry) else "https"
        self.base = f"{self.scheme}://{registry}"
        self.retries = max(0, retries)
        self.backoff = backoff
        self.timeout = timeout
        self.ranges = ranges
        self._auth = RegistryAuth(registry, credentials=credentials, token_cache=token_cache)
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()
        try:
            self._origin = httpx.URL(self.base)
        except httpx.InvalidURL as exc:
            raise RegistryError(f"invalid registry address {registry!r}: {exc}") from exc

    # lifecycle -----------------------------------------------------------
    @property
    def http(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(
                    transport=LazyTLSTransport(),
                    timeout=httpx.Timeout(self.timeout),
                    follow_redirects=False,
                    trust_env=False,  # no .netrc; proxies are chosen by the transport
                    headers={"User-Agent": f"cas/{__version__}"},
                )
            return self._http

    def close(self) -> None:
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # manifests -----------------------------------------------------------
    def get_manifest(self, repository: str, reference: str | Digest) -> FetchedManifest:
        """Fetch a manifest or index by tag or digest and check it against every digest we were given.

        A Digest reference is verified; a tag is verified against a valid
        Docker-Content-Digest when the registry sends one. The returned digest is
        the verified one, else the sha256 of the bytes.
        """
        by_digest = isinstance(reference, Digest)
        shown = f"{self.registry}/{repository}{'@' if by_digest else ':'}{reference}"
        url = f"{self.base}/v2/{repository}/manifests/{reference}"

        def attempt() -> tuple[bytes, httpx.Headers]:
            response = self._open(url, {"Accept": ACCEPT}, repository, shown, kind="manifest", ok=(200,))
            try:
                return _read_limited(response, MAX_MANIFEST, shown), response.headers
            finally:
                response.close()

        data, headers = self._retrying(attempt)
        if by_digest:
            verify_bytes(data, reference, what="manifest")
            digest = reference
        else:
            promised = _header_digest(headers.get("Docker-Content-Digest"))
            if promised is not None:
                verify_bytes(data, promised, what="manifest")
                digest = promised
            else:
                digest = of_bytes(data)
        return FetchedManifest(data, media_type_of(data, headers.get("Content-Type")), digest)

    def check_login(self) -> None:
        """GET /v2/ with the credentials, as `docker login` checks them; AuthError when they are refused."""

        def attempt() -> None:
            self._open(f"{self.base}/v2/", {}, "", f"registry {self.registry}", kind="registry", ok=(200,)).close()

        self._retrying(attempt)

    # blobs ---------------------------------------------------------------
    def download_blob(
        self,
        repository: str,
        digest: Digest,
        sink: Sink,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Stream a blob into ``sink``, from ``sink.offset`` on (HTTP Range when it is > 0).

        The bytes are not verified here: the sink (the store's Ingest) does that.
        A connection dropped mid-stream resumes from ``sink.offset``, up to
        ``retries`` times in a row without progress. ``on_bytes(n)`` reports the
        ``n`` bytes just written to the sink; ``n`` is negative when the sink
        dropped ``-n`` bytes it held (a server that ignored Range, or answered
        the wrong range, made us ``restart()`` it), so a progress bar that
        started at the sink's offset can roll back.
        """
        report = on_bytes or (lambda n: None)
        shown = f"blob {digest} of {self.registry}/{repository}"
        url = f"{self.base}/v2/{repository}/blobs/{digest}"
        if (
            self.ranges is not None
            and self.ranges.wants(sink)
            and self._fetch_ranges(url, repository, shown, sink, report)
        ):
            return
        failures, furthest = 0, sink.offset
        while True:
            start = sink.offset
            headers = {"Accept-Encoding": "identity"}
            if start > 0:
                headers["Range"] = f"bytes={start}-"
            ok = (200, 206, 416) if start > 0 else (200,)
            response = self._retrying(
                lambda headers=headers, ok=ok: self._open(url, headers, repository, shown, kind="blob", ok=ok)
            )
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
                return
            except (_Resume, httpx.TransportError) as exc:
                if sink.offset > furthest:
                    failures, furthest = 0, sink.offset
                else:
                    failures += 1
                if failures > self.retries:
                    if isinstance(exc, _Resume):
                        raise RegistryError(
                            f"registry {self.registry} keeps answering the wrong range for {shown}"
                        ) from None
                    raise self._dropped(exc, shown, sink) from exc
            finally:
                response.close()
            time.sleep(backoff_delay(failures, self.backoff))

    def _fetch_ranges(self, url: str, repository: str, shown: str, sink: Sink, report: Callable[[int], None]) -> bool:
        """The blob as parallel Range requests (``cas.registry.ranged``); False: one stream from ``sink.offset``."""

        def open_range(start: int, end: int) -> httpx.Response:
            headers = {"Accept-Encoding": "identity", "Range": f"bytes={start}-{end - 1}"}
            ok = (200, 206, 416)  # anything but the 206 asked for ends the split (ranged.check_answer)
            return self._retrying(lambda: self._open(url, headers, repository, shown, kind="blob", ok=ok))

        assert self.ranges is not None
        try:
            return ranged.fetch(open_range, sink, self.ranges, report, retries=self.retries, backoff=self.backoff)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            raise self._dropped(exc, shown, sink) from exc

    def _dropped(self, exc: httpx.TransportError, shown: str, sink: Sink) -> Unreachable:
        reason, _, _ = describe_transport_error(exc)
        return Unreachable(
            f"cannot reach registry {self.registry}: {reason} while downloading {shown} ({sink.offset} bytes held)",
            hint="run the pull again: it resumes where it stopped",
        )

    # plumbing ------------------------------------------------------------
    def _retrying(self, attempt: Callable[[], _T]) -> _T:
        """Run ``attempt`` until it succeeds, retrying Transient answers and transport errors."""
        tries = 0
        while True:
            try:
                return attempt()
            except Transient as exc:
                if tries >= self.retries or (exc.retry_after or 0) > MAX_RETRY_AFTER:
                    raise exc.final from None
                delay = backoff_delay(tries, self.backoff, exc.retry_after)
            except httpx.TransportError as exc:
                reason, hint, retryable = describe_transport_error(exc)
                if not retryable or tries >= self.retries:
                    raise Unreachable(f"cannot reach {self._who(exc)}: {reason}", hint=hint) from exc
                delay = backoff_delay(tries, self.backoff)
            except httpx.HTTPError as exc:  # decoding errors, too many redirects: not worth retrying
                raise RegistryError(f"bad answer from {self._who(exc)}: {exc}") from exc
            except httpx.InvalidURL as exc:
                raise RegistryError(f"invalid registry URL for {self.registry}: {exc}") from exc
            tries += 1
            time.sleep(delay)

    def _who(self, exc: httpx.HTTPError) -> str:
        try:
            netloc = exc.request.url.netloc.decode()
        except RuntimeError:  # no request attached
            netloc = self.registry
        return f"registry {self.registry}" if netloc == self.registry else f"{netloc} (for registry {self.registry})"

    def _open(
        self, url: str, headers: dict[str, str], repository: str, shown: str, *, kind: str, ok: tuple[int, ...]
    ) -> httpx.Response:
        """GET with auth and redirects; a streaming response whose status is in ``ok``, else a mapped error."""
        response = self._send_following(url, headers, repository)
        if response.status_code in ok:
            return response
        try:
            body = response.read()
        except httpx.HTTPError:
            body = b""  # the status says enough
        finally:
            response.close()
        raise status_error(response, body, registry=self.registry, repository=repository, shown=shown, kind=kind)

    def _send_following(self, url: str, headers: dict[str, str], repository: str) -> httpx.Response:
        """Send, following up to MAX_REDIRECTS redirects by hand.

        The registry's credentials go only to the registry's own origin: once a
        redirect leaves it (a CDN), no Authorization is sent on any later hop.
        """
        http = self.http
        auth: httpx.Auth | None = self._auth.scoped(repository)
        target = httpx.URL(url)
        for _ in range(MAX_REDIRECTS + 1):
            request = http.build_request("GET", target, headers=headers)
            response = http.send(request, auth=auth, stream=True, follow_redirects=False)
            location = response.headers.get("Location")
            if not (response.is_redirect and location):
                return response
            response.close()
            target = response.url.join(location)
            if not _same_origin(target, self._origin):
                auth = None
        raise RegistryError(f"registry {self.registry}: more than {MAX_REDIRECTS} redirects for {url}")


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


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def _header_digest(value: str | None) -> Digest | None:
    if not value:
        return None
    try:
        return Digest.parse(value.strip())
    except BadDigest:
        return None


def _read_limited(response: httpx.Response, limit: int, shown: str) -> bytes:
    too_big = ManifestError(f"manifest {shown} is larger than {limit >> 20} MiB", hint="this is not an image manifest")
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        raise too_big
    parts, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise too_big
        parts.append(chunk)
    return b"".join(parts)
