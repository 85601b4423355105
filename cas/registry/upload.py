"""Pushing to a registry (OCI distribution spec): blob HEAD, cross-repository mount,
monolithic or chunked blob upload, manifest PUT. It never opens the store: blob bytes
come from a file object the caller opens.

Every request goes through the client's ``Requester`` to the upstream (never a mirror), so auth,
redirects, retries and status mapping are the pull's: credentials go only to the registry's own origin (an upload
``Location`` on another origin gets none), and a bearer token is asked for
``repository:NAME:pull,push`` plus ``pull`` on every repository a blob may be mounted
from, in one token. Requests without a body are retried one by one (429, 5xx, dropped
connections); a request carrying blob bytes is not, because a failed PUT or PATCH leaves
the upload session in an unknown state: the blob starts again from a fresh session,
up to ``client.retries`` times.

Verification: the bytes are hashed as they are read from the file, and the request that
commits the blob completes only once the hash matched: a monolithic PUT holds back its
last chunk until then, a chunked upload sends its closing PUT only then. A store file
that changed after it was committed never becomes a blob at the destination.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import httpx

from cas.digest import Digest, Hasher
from cas.errors import AuthError, BadDigest, CasError, IntegrityError, RegistryError, Unreachable
from cas.manifest import ACCEPT
from cas.registry.auth import scope_for
from cas.registry.client import RegistryClient
from cas.registry.failures import describe_transport_error
from cas.registry.retry import Transient, backoff_delay

READ_SIZE = 1 << 20
MIN_CHUNK = 64 << 10  # a registry asking for smaller chunks gets these
CHUNK_HEADER = "OCI-Chunk-Min-Length"
OCTETS = "application/octet-stream"

log = logging.getLogger("cas.registry.upload")


@dataclass(frozen=True)
class UploadSession:
    """An upload the registry opened: where to send the bytes, and how."""

    location: httpx.URL
    chunk: int | None  # the registry asked for chunks of at least this size; None: one PUT


class Uploader:
    """Pushes blobs and manifests to one repository of one registry."""

    def __init__(self, client: RegistryClient, repository: str, *, mount_from: tuple[str, ...] = ()) -> None:
        self.requester = client.requester
        self.registry = client.registry
        self.repository = repository
        sources = sorted({r for r in mount_from if r != repository})
        self.scopes = (scope_for(repository, "pull,push"), *(scope_for(r) for r in sources))
        self.base = f"{client.base}/v2/{repository}"
        self.where = f"{client.registry}/{repository}"

    # blobs ---------------------------------------------------------------
    def has_blob(self, digest: Digest) -> bool:
        response = self._call("HEAD", f"{self.base}/blobs/{digest}", ok=(200, 404), shown=self._shown(digest))
        return response.status_code == 200

    def mount(self, digest: Digest, source: str) -> UploadSession | None:
        """Mount ``digest`` from repository ``source`` of the same registry.

        None when the registry mounted it (201); otherwise the upload session it opened
        instead (202: it does not have the blob there, or does not mount), for ``upload``.
        A registry that refuses the mount's scope gets a plain upload.
        """
        url = httpx.URL(f"{self.base}/blobs/uploads/", params={"mount": str(digest), "from": source})
        try:
            response = self._call("POST", url, ok=(201, 202), shown=f"the mount of {digest} from {source}")
        except AuthError as exc:
            log.info("mount of %s from %s refused (%s); uploading instead", digest, source, exc.message)
            return self.start()
        if response.status_code == 201:
            return None
        return self._session(response)

    def start(self) -> UploadSession:
        response = self._call("POST", f"{self.base}/blobs/uploads/", ok=(202,), shown=f"a blob upload to {self.where}")
        return self._session(response)

    def upload(
        self,
        digest: Digest,
        size: int,
        open_file: Callable[[], BinaryIO],
        on_bytes: Callable[[int], None],
        session: UploadSession | None = None,
    ) -> None:
        """Upload the blob read from ``open_file()``; ``on_bytes(n)`` reports bytes sent (negative: a retry
        starts over). Uses ``session`` when a refused mount opened one, else starts its own."""
        failures = 0
        while True:
            sent = _Counter(on_bytes)
            current = session or self.start()
            session = None
            try:
                with open_file() as fh:
                    if current.chunk is None:
                        self._put_whole(current, fh, digest, size, sent)
                    else:
                        self._put_chunks(current, fh, digest, size, sent)
                return
            except CasError:  # wrong bytes, a refusal, another blob's failure: this upload will not finish
                self._abandon(current)
                raise
            except (Transient, httpx.TransportError, httpx.StreamError) as exc:
                if isinstance(exc, Transient):  # the registry answers: let it drop the half-done upload now
                    self._abandon(current)
                sent.rewind()
                failures += 1
                retry_after = exc.retry_after if isinstance(exc, Transient) else None
                if failures > self.requester.retries:
                    raise _final(exc, self.registry, self._shown(digest)) from None
                delay = backoff_delay(failures - 1, self.requester.backoff, retry_after)
                self.requester.retried(delay, f"upload of {digest} failed ({exc}); starting it again")
                time.sleep(delay)

    def _put_whole(self, session: UploadSession, fh: BinaryIO, digest: Digest, size: int, sent: _Counter) -> None:
        url = session.location.copy_merge_params({"digest": str(digest)})
        headers = {"Content-Type": OCTETS, "Content-Length": str(size)}
        body = _held_back(fh, digest, size, sent)
        self._send("PUT", url, headers, body, ok=(201,), shown=self._shown(digest)).close()

    def _put_chunks(self, session: UploadSession, fh: BinaryIO, digest: Digest, size: int, sent: _Counter) -> None:
        """PATCH chunks of the registry's minimum length in order, then the closing PUT once the hash matched."""
        assert session.chunk is not None
        check = _Check(digest, size)
        location, offset = session.location, 0
        while chunk := fh.read(session.chunk):
            check.update(chunk)
            end = offset + len(chunk) - 1
            headers = {"Content-Type": OCTETS, "Content-Range": f"{offset}-{end}", "Content-Length": str(len(chunk))}
            response = self._send("PATCH", location, headers, chunk, ok=(202,), shown=self._shown(digest))
            response.close()
            location = _location(response, self.registry)
            stored = response.headers.get("Range", "")
            if stored and stored.rpartition("-")[2].strip() != str(end):
                raise RegistryError(
                    f"registry {self.registry} holds {stored} of {digest} after receiving bytes 0-{end}"
                )
            sent.add(len(chunk))
            offset = end + 1
        check.done()
        url = location.copy_merge_params({"digest": str(digest)})
        self._send("PUT", url, {"Content-Length": "0"}, b"", ok=(201,), shown=self._shown(digest)).close()

    def _abandon(self, session: UploadSession) -> None:
        """Best effort: DELETE an upload that will not be finished (a registry purges stale ones anyway)."""
        try:
            self._send("DELETE", session.location, {}, None, ok=(202, 204, 404), shown="an abandoned upload").close()
        except (CasError, Transient, httpx.HTTPError) as exc:
            log.info("could not cancel the upload at %s: %s", session.location, exc)

    # manifests -------------------------------------------------------------
    def manifest_digest(self, reference: str) -> Digest | None:
        """What ``reference`` (a tag or digest) names in the repository now; None when nothing (404)."""
        shown = f"manifest {self.where}{'@' if ':' in reference else ':'}{reference}"
        url = f"{self.base}/manifests/{reference}"
        response = self._call("HEAD", url, ok=(200, 404), shown=shown, headers={"Accept": ACCEPT})
        said = response.headers.get("Docker-Content-Digest", "").strip()
        if response.status_code != 200 or not said:
            return None
        try:
            return Digest.parse(said)
        except BadDigest:
            return None

    def put_manifest(self, reference: str, data: bytes, media_type: str, digest: Digest) -> None:
        """PUT the manifest bytes as they are, so the registry's digest is ours (checked when it says)."""
        shown = f"manifest {self.where}{'@' if ':' in reference else ':'}{reference}"
        url = f"{self.base}/manifests/{reference}"
        response = self._call("PUT", url, ok=(201,), shown=shown, headers={"Content-Type": media_type}, content=data)
        said = response.headers.get("Docker-Content-Digest", "").strip()
        if said and said != str(digest):
            raise RegistryError(f"registry {self.registry} stored {shown} as {said}, not {digest}")

    # plumbing --------------------------------------------------------------
    def _shown(self, digest: Digest) -> str:
        return f"blob {digest} of {self.where}"

    def _call(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        ok: tuple[int, ...],
        shown: str,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """A request whose body (if any) can be sent again: retried as a whole; the answer read and closed."""

        def attempt() -> httpx.Response:
            response = self._send(method, url, headers or {}, content, ok=ok, shown=shown)
            try:
                response.read()
            finally:
                response.close()
            return response

        return self.requester.retrying(self.requester.upstream, attempt)

    def _send(
        self,
        method: str,
        url: str | httpx.URL,
        headers: dict[str, str],
        content: bytes | Iterator[bytes] | None,
        *,
        ok: tuple[int, ...],
        shown: str,
    ) -> httpx.Response:
        return self.requester.open(
            self.requester.upstream,
            str(url),
            headers,
            self.repository,
            shown,
            kind="upload",
            ok=ok,
            method=method,
            content=content,
            scopes=self.scopes,
        )

    def _session(self, response: httpx.Response) -> UploadSession:
        chunk = response.headers.get(CHUNK_HEADER, "").strip()
        wanted = int(chunk) if chunk.isdigit() and int(chunk) > 0 else None
        return UploadSession(_location(response, self.registry), max(wanted, MIN_CHUNK) if wanted else None)


class _Counter:
    """Bytes of one attempt reported to the caller, so a retry can take them back."""

    def __init__(self, report: Callable[[int], None]) -> None:
        self.report = report
        self.total = 0

    def add(self, n: int) -> None:
        self.total += n
        self.report(n)

    def rewind(self) -> None:
        if self.total:
            self.report(-self.total)
            self.total = 0


class _Check:
    """Size and digest of the bytes read, checked before the request that commits them."""

    def __init__(self, digest: Digest, size: int) -> None:
        self.digest, self.size, self.seen = digest, size, 0
        self._hasher: Hasher = digest.hasher()

    def update(self, chunk: bytes) -> None:
        self.seen += len(chunk)
        if self.seen > self.size:
            self.done()
        self._hasher.update(chunk)

    def done(self) -> None:
        actual = f"{self.digest.algorithm}:{self._hasher.hexdigest()}" if self.seen == self.size else None
        if actual == str(self.digest):
            return
        got = f"{self.seen} bytes" if actual is None else actual
        raise IntegrityError(
            f"blob {self.digest} in the store is not what it was committed as (read {got}); nothing of it was pushed",
            hint="run `cas verify --repair`, then pull the image again",
        )


def _held_back(fh: BinaryIO, digest: Digest, size: int, sent: _Counter) -> Iterator[bytes]:
    """The file's chunks, the last one only after the whole file matched its digest."""
    check = _Check(digest, size)
    pending = b""
    while chunk := fh.read(READ_SIZE):
        check.update(chunk)
        if pending:
            yield pending
            sent.add(len(pending))
        pending = chunk
    check.done()
    if pending:
        yield pending
        sent.add(len(pending))


def _location(response: httpx.Response, registry: str) -> httpx.URL:
    location = response.headers.get("Location")
    if not location:
        raise RegistryError(f"registry {registry} answered {response.status_code} to an upload without a Location")
    return response.url.join(location)


def _final(exc: Exception, registry: str, shown: str) -> Exception:
    if isinstance(exc, Transient):
        return exc.final
    failure = describe_transport_error(exc)
    return Unreachable(f"cannot reach registry {registry}: {failure.reason} while uploading {shown}", hint=failure.hint)
