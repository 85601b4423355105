"""The registry client: manifests and streamed blobs over one pooled httpx.Client.

It walks the reference's endpoints (mirrors first, the upstream last; see
``cas.registry.walk``), retries what may succeed later (429, 5xx, dropped
connections) on the last one, resumes a dropped blob with Range, aborts a
stalled one (``cas.registry.stall``), follows redirects without carrying an
endpoint's Authorization to another origin, and maps every failure to a
CasError. It never writes to the store: blob bytes go to a ``Sink``.

Each endpoint has its own auth state: credentials are looked up for its own
host, and ``credentials`` passed in (``-u``) go to the upstream only.

Scheme: the endpoint's; for the registry named in the reference, plain http only
for loopback hosts or ``insecure=True``, https otherwise. The TLS context (about 90 ms to build) is made only when an https
URL is actually contacted, once per process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import httpx

from cas import __version__
from cas.digest import Digest, of_bytes, verify_bytes
from cas.errors import BadDigest, IntegrityError, ManifestError, RegistryError, Stalled, Unreachable
from cas.manifest import ACCEPT, media_type_of
from cas.registry import ranged
from cas.registry.auth import RegistryAuth, TokenCache
from cas.registry.credentials import Credentials
from cas.registry.endpoints import PULL, RESOLVE, TLS, Endpoint, upstream
from cas.registry.failures import describe_transport_error, status_error
from cas.registry.retry import MAX_RETRY_AFTER, Transient, backoff_delay
from cas.registry.stall import DEFAULT_MIN_RATE, DEFAULT_TIMEOUT, StallWatch
from cas.registry.transport import LazyTLSTransport
from cas.registry.walk import Served, walk
from cas.registry.wire import parse_content_range

MAX_MANIFEST = 4 << 20
MAX_REDIRECTS = 5
REFUSED_RETRIES = 2  # a refused connection with no endpoint left: retried briefly (a registry restarting)
REFUSED_BACKOFF = 0.1  # so it fails within about 0.3 s, not after the full backoff
_T = TypeVar("_T")


@dataclass(frozen=True)
class FetchedManifest:
    data: bytes
    media_type: str
    digest: Digest
    endpoint: str = ""  # the URL of the endpoint that served it


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
        endpoints: list[Endpoint] | None = None,
        insecure: bool = False,
        credentials: Credentials | None = None,
        token_cache: TokenCache | None = None,
        retries: int = 5,
        backoff: float = 0.5,
        timeout: float = DEFAULT_TIMEOUT,
        min_rate: int = DEFAULT_MIN_RATE,
        ranges: ranged.RangePolicy | None = None,
    ) -> None:
        """``endpoints``: where to fetch from, in order (``cas.registry.endpoints``);
        default: ``registry`` alone. ``timeout`` bounds connecting, waiting for an
        answer, and a transfer's stall: fewer than ``min_rate`` bytes/s over
        ``timeout`` seconds aborts it (resumable). ``ranges``: how large blobs may
        be split into parallel Range requests (``cas.registry.ranged``); None:
        every blob is one stream."""
        self.registry = registry
        try:
            self.endpoints = list(endpoints) if endpoints else [upstream(registry, "", insecure=insecure)]
            own = self.endpoints[-1]
            self._origin = httpx.URL(own.url)
        except (ValueError, httpx.InvalidURL) as exc:
            raise RegistryError(f"invalid registry address {registry!r}: {exc}") from exc
        self.scheme = own.scheme
        self.base = own.url  # the upstream: where pushes go
        self._upstream = own
        self.retries = max(0, retries)
        self.backoff = backoff
        self.timeout = timeout
        self.min_rate = min_rate
        self.ranges = ranges
        self.served = Served()
        self._credentials = credentials
        self._token_cache = token_cache
        self._auths: dict[str, RegistryAuth] = {}
        self._auth = self._auth_for(own)
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()

    def _auth_for(self, endpoint: Endpoint) -> RegistryAuth:
        """One auth state per endpoint host; explicit credentials are the upstream's, never a mirror's."""
        key = f"{endpoint.mirror}|{endpoint.host}"
        auth = self._auths.get(key)
        if auth is None:
            credentials = None if endpoint.mirror else self._credentials
            auth = self._auths[key] = RegistryAuth(
                endpoint.host, credentials=credentials, token_cache=self._token_cache
            )
        return auth

    # lifecycle -----------------------------------------------------------
    @property
    def http(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                tls = {
                    ep.host.removesuffix(":443"): ep.tls
                    for ep in self.endpoints
                    if ep.scheme == "https" and ep.tls != TLS()
                }
                self._http = httpx.Client(
                    transport=LazyTLSTransport(tls),
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
        the verified one, else the sha256 of the bytes. Tags are asked of
        ``resolve`` endpoints, digests of ``pull`` endpoints.
        """
        by_digest = isinstance(reference, Digest)
        what = f"manifest {self.registry}/{repository}{'@' if by_digest else ':'}{reference}"
        return walk(
            self.endpoints,
            PULL if by_digest else RESOLVE,
            what,
            self.served,
            lambda ep, has_next: self._manifest_from(ep, has_next, repository, reference),
        )

    def _manifest_from(self, ep: Endpoint, has_next: bool, repository: str, reference: str | Digest) -> FetchedManifest:
        by_digest = isinstance(reference, Digest)
        repository = ep.repository or repository
        shown = f"{ep.host}/{repository}{'@' if by_digest else ':'}{reference}"
        url = f"{ep.api}/{repository}/manifests/{reference}"

        def attempt() -> tuple[bytes, httpx.Headers]:
            response = self._open(ep, url, {"Accept": ACCEPT}, repository, shown, kind="manifest", ok=(200,))
            try:
                return _read_limited(response, MAX_MANIFEST, shown), response.headers
            finally:
                response.close()

        data, headers = self._retrying(ep, attempt, has_next)
        self.served.add(ep, len(data))
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
        self.served.manifest_from(ep)
        return FetchedManifest(data, media_type_of(data, headers.get("Content-Type")), digest, ep.url)

    def check_login(self) -> None:
        """GET /v2/ with the credentials, as `docker login` checks them; AuthError when they are refused."""

        own = self._upstream
        url = f"{own.api}/"  # the /v2/ base, never a mirror

        def attempt() -> None:
            self._open(own, url, {}, "", f"registry {self.registry}", kind="registry", ok=(200,)).close()

        self._retrying(own, attempt)

    # blobs ---------------------------------------------------------------
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
        url = f"{ep.api}/{repository}/blobs/{digest}"
        if (
            self.ranges is not None
            and self.ranges.wants(sink)
            and self._fetch_ranges(ep, has_next, url, repository, shown, sink, report)
        ):
            return
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
                raise Stalled(
                    f"download of {shown} stalled: {watch.describe()} ({sink.offset} bytes held)",
                    hint="run the pull again: it resumes where it stopped; "
                    "--timeout (or $CAS_TIMEOUT) sets how long a transfer may stall",
                ) from exc
            except (_Resume, httpx.TransportError) as exc:
                if sink.offset > furthest:
                    failures, furthest = 0, sink.offset
                else:
                    failures += 1
                if failures > budget:
                    if isinstance(exc, _Resume):
                        raise RegistryError(
                            f"{_name(ep, self.registry)} keeps answering the wrong range for {shown}"
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
            f"cannot reach {_name(ep, self.registry)}: {reason} while downloading {shown} ({sink.offset} bytes held)",
            hint="run the pull again: it resumes where it stopped",
        )

    # pushes (cas.registry.upload): the upstream only, never a mirror -------
    def push_request(
        self,
        url: str | httpx.URL,
        headers: dict[str, str],
        repository: str,
        shown: str,
        *,
        ok: tuple[int, ...],
        method: str,
        content: bytes | Iterator[bytes] | None = None,
        scopes: tuple[str, ...] | None = None,
    ) -> httpx.Response:
        """One push request to the upstream: a streaming response whose status is in ``ok``, else a mapped error."""
        ep = self._upstream
        return self._open(
            ep,
            str(url),
            headers,
            repository,
            shown,
            kind="upload",
            ok=ok,
            method=method,
            content=content,
            scopes=scopes,
        )

    def push_retrying(self, attempt: Callable[[], _T]) -> _T:
        """``attempt`` (requests whose body can be sent again) retried like a pull's requests."""
        return self._retrying(self._upstream, attempt)

    # plumbing ------------------------------------------------------------
    def _retrying(self, ep: Endpoint, attempt: Callable[[], _T], has_next: bool = False) -> _T:
        """Run ``attempt`` until it succeeds, retrying Transient answers and transport errors.

        With another endpoint left nothing is retried: falling back is quicker. A
        refused connection is retried only briefly, a connection timeout once.
        """
        tries = 0
        while True:
            try:
                return attempt()
            except Transient as exc:
                if has_next or tries >= self.retries or (exc.retry_after or 0) > MAX_RETRY_AFTER:
                    raise exc.final from None
                delay = backoff_delay(tries, self.backoff, exc.retry_after)
            except httpx.TransportError as exc:
                failure = describe_transport_error(exc, ep.url, ep.source)
                limit = 0 if has_next else _RETRY_LIMITS.get(failure.kind, self.retries)
                if not failure.retryable or tries >= min(limit, self.retries):
                    raise Unreachable(
                        f"cannot reach {self._who(ep, exc)}: {failure.reason}", hint=failure.hint
                    ) from exc
                base = min(REFUSED_BACKOFF, self.backoff) if failure.kind == "refused" else self.backoff
                delay = backoff_delay(tries, base)
            except httpx.HTTPError as exc:  # decoding errors, too many redirects: not worth retrying
                raise RegistryError(f"bad answer from {self._who(ep, exc)}: {exc}") from exc
            except httpx.InvalidURL as exc:
                raise RegistryError(f"invalid URL for {_name(ep, self.registry)}: {exc}") from exc
            tries += 1
            time.sleep(delay)

    def _who(self, ep: Endpoint, exc: httpx.HTTPError) -> str:
        try:
            netloc = exc.request.url.netloc.decode()
        except RuntimeError:  # no request attached
            netloc = ep.host
        name = _name(ep, self.registry)
        return name if netloc == ep.host else f"{netloc} (for {name})"

    def _open(
        self,
        ep: Endpoint,
        url: str,
        headers: dict[str, str],
        repository: str,
        shown: str,
        *,
        kind: str,
        ok: tuple[int, ...],
        method: str = "GET",
        content: bytes | Iterator[bytes] | None = None,
        scopes: tuple[str, ...] | None = None,
    ) -> httpx.Response:
        """One request with auth (redirects followed for GET and HEAD); a streaming response whose
        status is in ``ok``, else a mapped error."""
        response = self._send_following(ep, url, headers, repository, method=method, content=content, scopes=scopes)
        if response.status_code in ok:
            return response
        try:
            body = response.read()
        except httpx.HTTPError:
            body = b""  # the status says enough
        finally:
            response.close()
        raise status_error(response, body, registry=ep.host, repository=repository, shown=shown, kind=kind)

    def _send_following(
        self,
        ep: Endpoint,
        url: str,
        headers: dict[str, str],
        repository: str,
        *,
        method: str = "GET",
        content: bytes | Iterator[bytes] | None = None,
        scopes: tuple[str, ...] | None = None,
    ) -> httpx.Response:
        """Send, following up to MAX_REDIRECTS redirects by hand (GET and HEAD only).

        The endpoint's credentials and configured headers go only to its own
        origin: a URL on another origin (a CDN redirect, an upload Location
        elsewhere) gets neither, and no later hop does.
        """
        http = self.http
        auth: httpx.Auth | None = self._auth_for(ep).scoped(repository, scopes)
        origin = httpx.URL(ep.url)
        sent: list[tuple[str, str]] = [*ep.headers, *headers.items()]
        target = httpx.URL(url)
        if not _same_origin(target, origin):
            auth, sent = None, list(headers.items())
        for _ in range(MAX_REDIRECTS + 1):
            request = http.build_request(method, target, headers=sent, content=content)
            response = http.send(request, auth=auth, stream=True, follow_redirects=False)
            location = response.headers.get("Location")
            if not (response.is_redirect and location and method in ("GET", "HEAD")):
                return response
            response.close()
            target = response.url.join(location)
            if not _same_origin(target, origin):
                auth, sent = None, list(headers.items())
        raise RegistryError(f"{_name(ep, self.registry)}: more than {MAX_REDIRECTS} redirects for {url}")


_RETRY_LIMITS = {"refused": REFUSED_RETRIES, "connect-timeout": 1}


def _name(ep: Endpoint, registry: str) -> str:
    """How an endpoint is named in messages: ``registry HOST``, or ``mirror URL`` for a mirror."""
    return f"mirror {ep.url}" if ep.mirror else f"registry {ep.host if ep.source else registry}"


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
