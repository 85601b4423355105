"""The registry client: manifests and streamed blobs for one reference's endpoints.

It composes one ``Requester`` (``cas.registry.requester``: the pooled httpx.Client, auth,
redirects, retries within ``--timeout``, the endpoint walk with its dead endpoints) into the
manifest code here, the blob downloads (``cas.registry.download``, which splits large blobs
with ``cas.registry.ranged``) and, through ``requester``, the uploads of a push
(``cas.registry.upload``). It never writes to the store: blob bytes go to a ``Sink``.

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

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from cas.digest import Digest, of_bytes, verify_bytes
from cas.errors import BadDigest, ManifestError, RegistryError
from cas.manifest import ACCEPT, MAX_MANIFEST, media_type_of
from cas.registry import insecure, ranged, wire
from cas.registry.auth import TokenCache
from cas.registry.credentials import Credentials
from cas.registry.download import BlobDownloader
from cas.registry.endpoints import PULL, RESOLVE, Endpoint, upstream
from cas.registry.endpoints.model import with_query
from cas.registry.requester import Requester
from cas.registry.shared import KeyedPool
from cas.registry.walk import Served
from cas.settings import DEFAULT_MIN_RATE, DEFAULT_TIMEOUT


@dataclass(frozen=True)
class FetchedManifest:
    data: bytes
    media_type: str
    digest: Digest
    endpoint: str = ""  # the URL of the endpoint that served it


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
        on_retry: Callable[[str], None] | None = None,
        shared: KeyedPool[httpx.Client] | None = None,
    ) -> None:
        """``endpoints``: where to fetch from, in order (``cas.registry.endpoints``);
        default: ``registry`` alone. ``timeout`` bounds the wait without progress (connecting,
        an answer, retries included) and a transfer's stall: fewer than ``min_rate`` bytes/s
        over ``timeout`` seconds aborts it (resumable). ``ranges``: how large blobs may
        be split into parallel Range requests (``cas.registry.ranged``); None: every blob is
        one stream. ``on_retry(line)``: each retry, as it happens. ``shared``: httpx clients the
        command's other clients may reuse (``cas.registry.shared``)."""
        self.registry = registry
        try:
            self.endpoints = list(endpoints) if endpoints else [upstream(registry, "", insecure=insecure)]
            own = self.endpoints[-1]
            httpx.URL(own.url)  # a registry name no URL can hold fails here, in one line
        except (ValueError, httpx.InvalidURL) as exc:
            raise RegistryError(f"invalid registry address {registry!r}: {exc}") from exc
        self.scheme = own.scheme
        self.base = own.url  # the upstream: where pushes go
        self.ranges = ranges
        self.requester = Requester(
            registry,
            self.endpoints,
            credentials=credentials,
            token_cache=token_cache,
            retries=retries,
            backoff=backoff,
            timeout=timeout,
            on_retry=on_retry,
            shared=shared,
        )
        # blobs: streamed into a Sink from the first ``pull`` endpoint that serves them (BlobDownloader.download)
        self.download_blob = BlobDownloader(self.requester, ranges=ranges, min_rate=min_rate).download

    @property
    def served(self) -> Served:
        return self.requester.served

    def close(self) -> None:
        self.requester.close()

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
        return self.requester.walk(
            PULL if by_digest else RESOLVE,
            what,
            lambda ep, has_next: self._manifest_from(ep, has_next, repository, reference),
        )

    def _manifest_from(self, ep: Endpoint, has_next: bool, repository: str, reference: str | Digest) -> FetchedManifest:
        by_digest = isinstance(reference, Digest)
        repository = ep.repository or repository
        shown = f"{ep.host}/{repository}{'@' if by_digest else ':'}{reference}"
        url = ep.resource(repository, "manifests", reference)

        def attempt() -> tuple[bytes, httpx.Headers]:
            response = self.requester.open(ep, url, {"Accept": ACCEPT}, repository, shown, kind="manifest", ok=(200,))
            try:
                return _read_limited(response, MAX_MANIFEST, shown), response.headers
            finally:
                response.close()

        data, headers = self.requester.retrying(ep, attempt, has_next)
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
        return self.requester.walk(
            RESOLVE,
            f"tags of {self.registry}/{repository}",
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
            data, response = self.requester.retrying(
                ep, lambda page=url: self._tag_page(ep, page, repository, shown), has_next
            )
            self.served.add(ep, len(data))
            tags += wire.tag_page(data, shown)
            url = wire.next_link(response.headers.get("Link"), str(response.url))
        return tags

    def _tag_page(self, ep: Endpoint, url: str, repository: str, shown: str) -> tuple[bytes, httpx.Response]:
        response = self.requester.open(ep, url, {}, repository, shown, kind="tags", ok=(200,))
        try:
            return _read_limited(response, MAX_MANIFEST, shown), response
        finally:
            response.close()

    def check_login(self) -> None:
        """GET /v2/ with the credentials, as `docker login` checks them; AuthError when they are refused."""

        own = self.requester.upstream
        url = f"{own.api}/"  # the /v2/ base, never a mirror

        def attempt() -> None:
            self.requester.open(own, url, {}, "", f"registry {self.registry}", kind="registry", ok=(200,)).close()

        self.requester.retrying(own, attempt)

    def blob_size(self, repository: str, digest: Digest) -> int | None:
        """The blob's size as a HEAD at the first ``pull`` endpoint that has it says; None when it does not say."""

        def from_endpoint(ep: Endpoint, has_next: bool) -> int | None:
            path = ep.repository or repository
            url, shown = ep.resource(path, "blobs", digest), f"blob {ep.host}/{path}@{digest}"

            def attempt() -> int | None:
                response = self.requester.open(ep, url, {}, path, shown, kind="blob", ok=(200,), method="HEAD")
                response.close()
                length = response.headers.get("Content-Length", "")
                return int(length) if length.isdigit() else None

            return self.requester.retrying(ep, attempt, has_next)

        return self.requester.walk(PULL, f"blob {digest}", from_endpoint)


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
