"""``GET /archive/<name>[:tag|@digest]``: a complete docker-archive or oci-archive, streamed.

The archive is cas export's own (the same writers, plan, completeness check, lease and
"used" time). The export runs in a worker thread writing into a pipe; the handler waits for
the export's checked plan before it sends the status line, so a refusal is an HTTP error
whose JSON names every missing digest and not one byte of tar goes out. Without
``--offline`` the export pulls what is missing first, through cas pull. An export that fails
after the plan cuts the connection: the client sees a truncated transfer, never a short tar
that looks whole. A client that goes away closes the pipe, and the export stops on its next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Callable

from aiohttp import web

from cas.errors import BadReference, CasError, ManifestError, MissingBlobs, NotCached, NotFound, RegistryError
from cas.export import ExportOptions, export
from cas.manifest import Platform
from cas.reference import Reference
from cas.reference import parse as parse_reference
from cas.serve.errcode import ServeError
from cas.serve.handlers import SERVICE, Service
from cas.serve.names import map_name

FORMATS = ("docker-archive", "oci-archive")
CHUNK = 1 << 20


async def archive(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    reference = _reference(request, service)
    options = _options(request, service)
    loop = asyncio.get_running_loop()
    planned = loop.create_future()
    read_fd, write_fd = os.pipe()
    exporting = asyncio.ensure_future(
        asyncio.to_thread(_export, service, reference, write_fd, options, lambda: _settle(loop, planned))
    )
    try:
        await asyncio.wait([planned, exporting], return_when=asyncio.FIRST_COMPLETED)
        if not planned.done():
            try:
                await exporting
            except CasError as exc:  # refused before the first byte
                raise _refusal(exc) from None
        return await _stream(request, reference, read_fd, exporting)
    finally:
        os.close(read_fd)  # an export still writing gets EPIPE and stops
        with contextlib.suppress(CasError, OSError):
            await exporting


async def _stream(
    request: web.Request, reference: Reference, read_fd: int, exporting: asyncio.Future
) -> web.StreamResponse:
    filename = reference.familiar.replace("/", "_").replace(":", "_").replace("@", "_")
    response = web.StreamResponse(
        headers={"Content-Type": "application/x-tar", "Content-Disposition": f'attachment; filename="{filename}.tar"'}
    )
    await response.prepare(request)
    try:
        while chunk := await asyncio.to_thread(os.read, read_fd, CHUNK):
            await response.write(chunk)
        await exporting
    except ConnectionError:  # the client went away; the caller's closing of the pipe stops the export
        return response
    except CasError:
        if request.transport is not None:
            request.transport.close()  # cut: the client must not take what it got for a whole archive
        return response
    await response.write_eof()
    return response


def _export(service: Service, reference: Reference, fd: int, options: ExportOptions, on_plan: Callable) -> None:
    try:
        export(service.store, [reference], fd, dataclasses.replace(options, on_plan=lambda plan: on_plan()))
    finally:
        os.close(fd)


def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future) -> None:
    loop.call_soon_threadsafe(lambda: future.done() or future.set_result(None))


def _reference(request: web.Request, service: Service) -> Reference:
    """``lab/app:1``, ``lab/app@sha256:...`` or ``lab/app`` (latest), mapped as /v2/ names are."""
    text = request.match_info["name"]
    path, at, digest = text.partition("@")
    name, colon, tag = path.rpartition(":") if ":" in path.rpartition("/")[2] else (path, "", "")
    mapped = map_name(name, request.query.get("ns"), service.aliases)
    try:
        return parse_reference(mapped.ref(digest) if at else mapped.ref(tag or "latest"))
    except BadReference as exc:
        raise ServeError("NAME_INVALID", exc.message, {"reference": text[:200]}) from None


def _options(request: web.Request, service: Service) -> ExportOptions:
    format = request.query.get("format", FORMATS[0])
    if format not in FORMATS:
        raise ServeError("PARAMETER_INVALID", f"format must be one of {', '.join(FORMATS)}", {"format": format[:40]})
    platform = None
    if "platform" in request.query:
        try:
            platform = Platform.parse(request.query["platform"])
        except ManifestError as exc:
            raise ServeError("PARAMETER_INVALID", exc.message, {"platform": request.query["platform"][:40]}) from None
    return ExportOptions(format=format, platform=platform, pull=not service.offline)


def _refusal(exc: CasError) -> ServeError:
    """An export's refusal as the spec's JSON: missing blobs are named one by one."""
    detail = {"hint": exc.hint} if exc.hint else {}
    if isinstance(exc, MissingBlobs):
        detail["missing"] = [line.split()[0] for line in exc.missing]
        return ServeError("BLOB_UNKNOWN", exc.message.splitlines()[0], detail)
    if isinstance(exc, (NotCached, NotFound)):
        return ServeError("MANIFEST_UNKNOWN", exc.message, detail)
    if isinstance(exc, RegistryError):
        return ServeError("UNAVAILABLE", f"pull-through failed: {exc.message}", detail)
    return ServeError("INTERNAL", exc.message, detail)
