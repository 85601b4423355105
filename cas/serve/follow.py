"""Send a blob while it is ingested: read what is written, wait for more, stop at its end.

The bytes a follower may send are the contiguous prefix of the ingest entry's data: its
size while the download is one stream, or the prefix its ``ranges.json`` records once a
split download writes ranges at offsets (the store writes that record before any byte
lands beyond the prefix, so the size is read first and the record looked for second).
The data file is opened once; the commit renames that same file into ``blobs/``, so the
follower reads on to the end. Everything sent is hashed, and the last chunk goes out only
when the hash is the digest: a download that went wrong cuts the connection instead, so no
client ever takes wrong bytes for a whole blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from aiohttp import hdrs, web

from cas.digest import Digest, StreamVerifier
from cas.errors import CasError
from cas.serve.through import Task
from cas.store import ranges

CHUNK = 1 << 20
POLL = 0.02  # seconds between looks at a growing file


async def follow(
    request: web.Request, digest: Digest, size: int | None, ingest: Path, blob: Path, task: Task
) -> web.StreamResponse:
    fd = await _open(ingest / "data", blob, task)
    headers = {hdrs.CONTENT_TYPE: "application/octet-stream", "Docker-Content-Digest": str(digest)}
    response = web.StreamResponse(headers=headers)
    if size is not None:
        response.content_length = size
    await response.prepare(request)
    verifier, sent = StreamVerifier(digest), 0
    try:
        while True:
            end = await asyncio.to_thread(_available, fd, ingest, size)
            if end > sent:
                chunk = os.pread(fd, min(end - sent, CHUNK), sent)
                last = size is not None and sent + len(chunk) == size
                verifier.update(chunk)
                if last:
                    verifier.check()  # raises: the final chunk is withheld
                await response.write(chunk)
                sent += len(chunk)
                if last:
                    break
            elif task.done.is_set():
                if task.error is not None or size is not None or not blob.exists():
                    raise CasError(f"the download of {digest} failed")
                if sent == os.fstat(fd).st_size:  # size unknown: the committed file is the end
                    verifier.check()
                    break
            else:
                await asyncio.sleep(POLL)
    except CasError:
        if request.transport is not None:
            request.transport.close()  # the client sees a cut transfer, never a wrong blob
        raise
    except ConnectionError:  # the client went away; the download goes on for the store
        return response
    finally:
        os.close(fd)
    await response.write_eof()
    return response


async def _open(data: Path, blob: Path, task: Task) -> int:
    """The ingest data file (or the committed blob, when the download ended first)."""
    while True:
        for path in (data, blob):
            with contextlib.suppress(FileNotFoundError):
                return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        if task.done.is_set() and not blob.exists():
            raise web.HTTPBadGateway(text="the upstream download failed")
        await asyncio.sleep(POLL)


def _available(fd: int, ingest: Path, size: int | None) -> int:
    """How many bytes from the start are real data: the size, unless a split download holds holes."""
    written = os.fstat(fd).st_size
    held = ranges.load(ingest, size)
    if held is not None:
        return min(written, ranges.prefix_end(held))
    return written
