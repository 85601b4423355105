"""The registry's routes: thin handlers that map a request to a name, ask ``content``, and send the answer.

Nothing here reads the store on the event loop: index and file reads run in worker threads,
and blobs go out through aiohttp's FileResponse (sendfile, Range, 206 and 416 in one place).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import hdrs, web

from cas.serve import content, negotiate
from cas.serve.errcode import ServeError
from cas.serve.follow import follow
from cas.serve.leases import LeaseBook
from cas.serve.names import Name, map_name
from cas.serve.observe import CACHE, METRICS
from cas.serve.through import PullThrough
from cas.store import Store

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HOSTILE = ("%2f", "%2e", "%5c", "%00")  # encoded '/', '.', '\' and NUL: a name never needs them


@dataclass
class Service:
    """What every handler shares: the store, the upstream aliases and this server's leases."""

    store: Store
    aliases: dict[str, str] = field(default_factory=dict)
    offline: bool = False  # serve only what the store holds: no pull-through
    through: PullThrough | None = None  # None: --offline
    leases: LeaseBook | None = None

    def __post_init__(self) -> None:
        if self.leases is None:
            self.leases = LeaseBook(self.store)

    def name(self, request: web.Request) -> Name:
        return map_name(request.match_info["name"], request.query.get("ns"), self.aliases)


SERVICE = web.AppKey("service", Service)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def spec_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error is the spec's JSON; writes are UNSUPPORTED."""
    try:
        raw = request.raw_path.partition("?")[0]
        if any(bad in raw.lower() for bad in HOSTILE) or {".", ".."} & set(raw.split("/")):
            raise ServeError(
                "NAME_INVALID", "dot segments and encoded slashes, dots and NULs are not allowed in a path"
            )
        if request.method in WRITES:
            raise ServeError("UNSUPPORTED", f"{request.method} is not supported: cas serve is read-only")
        response = await handler(request)
    except ServeError as exc:
        response = web.Response(
            status=exc.status, body=exc.body(), content_type="application/json", headers=exc.headers
        )
    except web.HTTPMethodNotAllowed as exc:
        error = ServeError(
            "UNSUPPORTED", f"{request.method} is not supported here", {"allowed": sorted(exc.allowed_methods)}
        )
        response = web.Response(status=405, body=error.body(), content_type="application/json")
    return response


async def api_version(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer names the API version, blobs sent by the handler itself too."""
    response.headers.update(API_VERSION)


async def base(request: web.Request) -> web.Response:
    return web.json_response({})


async def manifest(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    name, reference = service.name(request), request.match_info["reference"]
    accept = negotiate.accepted(request.headers.getall(hdrs.ACCEPT, []))
    platform = negotiate.client_platform(request.headers.get(hdrs.USER_AGENT))
    found = await _find(request, service, name, reference, accept, platform)
    request.setdefault(CACHE, "hit")
    missing = await asyncio.to_thread(service.leases.hold, found.digest, found.holds)
    if missing:
        raise ServeError(
            "MANIFEST_UNKNOWN", f"{name.ref(reference)} lost blobs to a prune", {"missing": [str(d) for d in missing]}
        )
    await asyncio.to_thread(service.store.metadata.touch_refs, found.records)  # a use, for prune's LRU
    headers = {"Docker-Content-Digest": str(found.digest), hdrs.ETAG: f'"{found.digest}"'}
    return web.Response(body=found.data, content_type=found.media_type, headers=headers)


async def _find(
    request: web.Request, service: Service, name: Name, reference: str, accept: frozenset[str], platform
) -> content.Found:
    """The store's manifest; with pull-through, a tag re-resolved upstream and a missing digest fetched."""
    store, through, by_tag = service.store, service.through, ":" not in reference
    resolved = None
    if through is not None and by_tag:
        cached = await asyncio.to_thread(content.cached, store, name, reference)
        resolved = await asyncio.to_thread(through.resolve, name, reference, cached)
    if resolved is not None:
        request[CACHE] = "miss"
    try:
        return await asyncio.to_thread(content.manifest, store, name, reference, accept, platform, resolved)
    except ServeError as exc:
        if through is None or by_tag or exc.code not in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN"):
            raise
        digest = content.parse_digest(reference)
        if store.blobs.has(digest):
            raise  # held, but not what the client accepts
        request[CACHE] = "miss"
        await asyncio.to_thread(through.manifest, name, digest)
        return await asyncio.to_thread(content.manifest, store, name, reference, accept, platform)


async def blob(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    name = service.name(request)
    digest = content.parse_digest(request.match_info["digest"])
    path = service.store.blobs.path(digest)
    service.leases.renew(digest)
    headers = {hdrs.CONTENT_TYPE: "application/octet-stream", "Docker-Content-Digest": str(digest)}
    if path.is_file():
        request[CACHE] = "hit"
        return CountedFile(path, headers=headers)
    through = service.through
    known = through.known.get(digest) if through is not None else None
    if through is None or (request.method == "HEAD" and known is None):
        raise ServeError("BLOB_UNKNOWN", f"blob {digest} is not in the store", {"digest": str(digest)})
    task = through.blob(name, digest)
    request[CACHE] = "miss"
    if request.method == "HEAD":
        return web.Response(headers={**headers, hdrs.CONTENT_LENGTH: str(known.size)})
    ingest = service.store.ingests.dir / f"{digest.algorithm}-{digest.hex}"  # as cas.store.writer.Ingest names it
    return await follow(request, digest, known.size if known else None, ingest, path, task)


class CountedFile(web.FileResponse):
    """A blob sent by aiohttp after the handler returned, counted as a transfer in flight until its last byte."""

    async def prepare(self, request: web.BaseRequest) -> object:
        metrics = request.app[METRICS]
        metrics.flight(+1)
        try:
            return await super().prepare(request)
        finally:
            metrics.flight(-1)


async def tags(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    name = service.name(request)
    found = await asyncio.to_thread(content.tags, service.store, name)
    shown, more = content.page(found, _count(request), request.query.get("last"))
    return _paged(request, {"name": request.match_info["name"], "tags": shown}, shown, more)


async def catalog(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    found = await asyncio.to_thread(content.catalog, service.store)
    shown, more = content.page(found, _count(request), request.query.get("last"))
    return _paged(request, {"repositories": shown}, shown, more)


async def unknown(request: web.Request) -> web.Response:
    raise ServeError("NAME_UNKNOWN", f"no such route: {request.path[:200]}")


def _count(request: web.Request) -> int | None:
    text = request.query.get("n")
    if text is None:
        return None
    if not text.isdigit() or int(text) > 100_000:
        raise ServeError("PAGINATION_NUMBER_INVALID", f"n must be a number from 0 to 100000, not {text[:20]!r}")
    return int(text)


def _paged(request: web.Request, body: dict, shown: list[str], more: bool) -> web.Response:
    """The page, with distribution's ``Link: <...?last=X&n=N>; rel="next"`` when more follow."""
    headers = {}
    if more:
        following = request.rel_url.update_query(last=shown[-1])
        headers["Link"] = f'<{following.path_qs}>; rel="next"'
    return web.json_response(body, headers=headers)


def routes() -> list[web.AbstractRouteDef]:
    """The distribution API's read routes (``unknown`` answers every other path)."""
    return [
        web.get("/v2/", base),
        web.get("/v2/_catalog", catalog),
        web.get("/v2/{name:.+}/tags/list", tags),
        web.get("/v2/{name:.+}/manifests/{reference}", manifest),
        web.get("/v2/{name:.+}/blobs/{digest}", blob),
    ]
