"""The registry client: manifests and streamed blobs over one pooled httpx.Client.

It walks the reference's endpoints (mirrors first, the upstream last; see
``cas.registry.walk``), retries what may succeed later (429, 5xx, dropped
connections) on the last one, resumes a dropped blob with Range, aborts a
stalled one (``cas.registry.stall``), follows redirects without carrying an
endpoint's Authorization to another origin, and maps every failure to a
CasError. It never writes to the store: blob bytes go to a ``Sink``.

Each endpoint has its own auth state: credentials are looked up for its own
host, and ``credentials`` passed in (``-u``) go to the upstream only.

Scheme: the endpoint's; for the registry named in the reference, https, or plain
http for loopback hosts. An insecure endpoint (``insecure=True``, or marked so in
the configuration) is HTTPS without verification that falls back to plain HTTP
(``cas.registry.insecure``). The TLS context is made only when an https URL is
actually contacted, once per host and process (the system's CAs are looked up lazily:
``transport._trust_system_store``).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import httpx

from cas import __version__
from cas.digest import Digest, of_bytes, verify_bytes
from cas.errors import BadDigest, ManifestError, RegistryError, Unreachable
from cas.manifest import ACCEPT, MAX_MANIFEST, media_type_of
from cas.registry import insecure, ranged, wire
from cas.registry.auth import RegistryAuth, TokenCache
from cas.registry.credentials import Credentials
from cas.registry.download import BlobDownloads
from cas.registry.endpoints import PULL, RESOLVE, TLS, Endpoint, upstream
from cas.registry.endpoints.model import with_query
from cas.registry.failures import describe_transport_error, status_error
from cas.registry.retry import MAX_RETRY_AFTER, Transient, backoff_delay
from cas.registry.transport import LazyTLSTransport
from cas.registry.walk import Served, walk
from cas.settings import DEFAULT_MIN_RATE, DEFAULT_TIMEOUT

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


class RegistryClient(BlobDownloads):
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
            httpx.URL(own.url)  # a registry name no URL can hold fails here, in one line
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
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()

    def _auth_for(self, endpoint: Endpoint) -> RegistryAuth:
        """One auth state per endpoint host; explicit credentials are the upstream's, never a mirror's."""
        key = f"{endpoint.mirror}|{endpoint.host}"
        auth = self._auths.get(key)
        if auth is None:
            credentials = None if endpoint.mirror else self._credentials
            auth = self._auths[key] = RegistryAuth(
                endpoint.host,
                credentials=credentials,
                token_cache=self._token_cache,
                plain_http=endpoint.insecure or endpoint.scheme == "http",
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
        url = ep.resource(repository, "manifests", reference)

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
        return FetchedManifest(
            data, media_type_of(data, headers.get("Content-Type")), digest, insecure.url_for(ep, ep.url)
        )

    def list_tags(self, repository: str, page_size: int | None = None) -> list[str]:
        """Every tag of ``repository`` (``GET /v2/NAME/tags/list``), following the ``Link`` of each page,
        from the first ``resolve`` endpoint that answers; ``page_size`` asks for pages of ``n``."""
        return walk(
            self.endpoints,
            RESOLVE,
            f"tags of {self.registry}/{repository}",
            self.served,
            lambda ep, has_next: self._tags_from(ep, has_next, repository, page_size),
        )

    def _tags_from(self, ep: Endpoint, has_next: bool, repository: str, page_size: int | None) -> list[str]:
        repository = ep.repository or repository
        shown = f"{ep.host}/{repository}"
        url: str | None = ep.resource(repository, "tags", "list")
        if page_size:
            url = with_query(url, "n", str(page_size))
        tags: list[str] = []
        while url is not None:
            data, response = self._retrying(ep, functools.partial(self._tag_page, ep, url, repository, shown), has_next)
            self.served.add(ep, len(data))
            tags += wire.tag_page(data, shown)
            url = wire.next_link(response.headers.get("Link"), str(response.url))
        return tags

    def _tag_page(self, ep: Endpoint, url: str, repository: str, shown: str) -> tuple[bytes, httpx.Response]:
        response = self._open(ep, url, {}, repository, shown, kind="tags", ok=(200,))
        try:
            return _read_limited(response, MAX_MANIFEST, shown), response
        finally:
            response.close()

    def check_login(self) -> None:
        """GET /v2/ with the credentials, as `docker login` checks them; AuthError when they are refused."""

        own = self._upstream
        url = f"{own.api}/"  # the /v2/ base, never a mirror

        def attempt() -> None:
            self._open(own, url, {}, "", f"registry {self.registry}", kind="registry", ok=(200,)).close()

        self._retrying(own, attempt)

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
                raise RegistryError(f"invalid URL for {ep.named(self.registry)}: {exc}") from exc
            tries += 1
            time.sleep(delay)

    def _who(self, ep: Endpoint, exc: httpx.HTTPError) -> str:
        try:
            netloc = exc.request.url.netloc.decode()
        except RuntimeError:  # no request attached
            netloc = ep.host
        name = ep.named(self.registry)
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
        origin = httpx.URL(insecure.url_for(ep, ep.url))
        sent: list[tuple[str, str]] = [*ep.headers, *headers.items()]
        target = httpx.URL(insecure.url_for(ep, url))
        if not _same_origin(target, origin):
            auth, sent = None, list(headers.items())

        def send(target: httpx.URL) -> httpx.Response:
            request = http.build_request(method, target, headers=sent, content=content)
            return http.send(request, auth=auth, stream=True, follow_redirects=False)

        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = send(target)
            except httpx.ConnectError as exc:  # an insecure endpoint may speak plain HTTP: switch once
                plain = insecure.fall_back(ep, str(target), exc)
                if plain is None:
                    raise
                target, origin = httpx.URL(plain), httpx.URL(insecure.url_for(ep, ep.url))
                response = send(target)
            location = response.headers.get("Location")
            if not (response.is_redirect and location and method in ("GET", "HEAD")):
                return response
            response.close()
            target = response.url.join(location)
            if not _same_origin(target, origin):
                auth, sent = None, list(headers.items())
        raise RegistryError(f"{ep.named(self.registry)}: more than {MAX_REDIRECTS} redirects for {url}")


_RETRY_LIMITS = {"refused": REFUSED_RETRIES, "connect-timeout": 1}


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
