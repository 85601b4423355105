"""Members of an archive into the store, as they arrive. Knows no image layouts.

A member's name proves nothing: ``blobs/<alg>/<hex>`` is ingested under that digest
and committed only if its bytes hash to it; a legacy layer (``<id>/layer.tar``,
``<diffid>.tar``, ``<digest>.tar.gz``) is staged and committed under the digest its bytes turn out to
have. Small metadata (``manifest.json``, ``index.json``, ``repositories``, top-level
``*.json`` or ``sha256:<hex>`` configs) is kept in memory, with a size limit. A legacy ``docker save``
writes ``manifest.json`` last, so nothing here waits for it: what the members mean
is decided by ``cas.importer.layouts`` once the stream has ended.

A delta's ``cas-delta.json`` must be the first member; ``on_delta`` checks it before
any blob is read, and then only the blobs it lists are accepted.
"""

from __future__ import annotations

import contextlib
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cas import delta_format
from cas.blobtypes import UNKNOWN  # until the image recorded from it says what a blob is
from cas.digest import Digest, of_bytes
from cas.errors import ArchiveError, BadDigest, IntegrityError
from cas.importer.tarstream import DIR, FILE, Member, UnsafeArchive
from cas.record_image import record_blob
from cas.store import BlobInfo, Ingest, Store

if TYPE_CHECKING:
    from cas.metadata import Lease
    from cas.store.writer import Staging

METADATA = ("manifest.json", "index.json", "oci-layout", "repositories")
METADATA_LIMIT = 64 << 20  # a manifest.json of 64 MiB would list about half a million images
CONFIG_LIMIT = 16 << 20
HELD_LIMIT = 256 << 20  # all legacy configs held in memory until the archive ends
_BLOB = re.compile(r"blobs/([a-z0-9]+)/([0-9a-f]+)")
_CONFIG_FILE = re.compile(r".*\.json|sha256:[0-9a-f]{64}")  # docker's <id>.json, go-containerregistry's digest
_LAYER_FILE = re.compile(r".*\.(?:tar|tar\.gz|tgz|tar\.zst)")
_CLAIMED = re.compile(r"(?:sha256:)?([0-9a-f]{64})\.(?:tar|tar\.gz|tar\.zst)")  # skopeo's <diffid>.tar, ggcr's
_MAX_HOPS = 40


@dataclass
class Received:
    """What the members were: the input of ``cas.importer.layouts``."""

    files: dict[str, Digest] = field(default_factory=dict)  # member name -> digest of its bytes
    links: dict[str, str] = field(default_factory=dict)  # link member -> the member it points to
    metadata: dict[str, bytes] = field(default_factory=dict)
    configs: dict[Digest, bytes] = field(default_factory=dict)  # top-level *.json, committed only if named
    heads: dict[Digest, bytes] = field(default_factory=dict)  # first bytes of blobs read here (compression)
    stored: dict[Digest, BlobInfo] = field(default_factory=dict)  # blobs this import committed
    reused: dict[Digest, int] = field(default_factory=dict)  # blobs the store already held
    delta: delta_format.DeltaDescription | None = None

    def resolve(self, name: str) -> str:
        """Follow links (symlinks in a legacy archive) to the member holding the bytes."""
        for _ in range(_MAX_HOPS):
            if name not in self.links:
                return name
            name = self.links[name]
        raise UnsafeArchive(f"a loop of links at {name!r}")

    def digest_of(self, name: str) -> Digest | None:
        return self.files.get(self.resolve(name))


class Receiver:
    def __init__(
        self,
        store: Store,
        lease: Lease,
        *,
        on_delta: Callable[[delta_format.DeltaDescription], None],
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.lease = lease
        self.on_delta = on_delta
        self.on_bytes = on_bytes or (lambda n: None)
        self.received = Received()
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cas-import-commit")
        self._pending: deque[tuple[Future, contextlib.ExitStack]] = deque()
        self._files = 0
        self._held = 0  # bytes of configs held in memory

    def take(self, member: Member, chunks: Callable[[], Iterator[bytes]]) -> None:
        """One member; ``chunks()`` streams its data (whatever is not read, the reader skips)."""
        got = self.received
        if member.kind == DIR:
            return
        if member.kind != FILE:
            got.links[member.name] = member.target or ""
            return
        first, self._files = self._files == 0, self._files + 1
        name = member.name
        if name == delta_format.NAME:
            if not first:
                raise UnsafeArchive(f"{delta_format.NAME} is not the first member: not a delta cas wrote")
            got.delta = delta_format.DeltaDescription.parse(_read(member, chunks, delta_format.MAX_SIZE))
            self.on_delta(got.delta)
            return
        blob = _BLOB.fullmatch(name)
        if got.delta is not None:
            self._take_delta_blob(member, blob, chunks)
        elif name in METADATA:
            got.metadata[name] = _read(member, chunks, METADATA_LIMIT)
        elif blob is not None:
            self._ingest(member, _blob_digest(name, blob), chunks)
        elif "/" not in name and _CONFIG_FILE.fullmatch(name) and member.size <= CONFIG_LIMIT:
            self._held += member.size
            if self._held > HELD_LIMIT:
                raise UnsafeArchive(f"more than {HELD_LIMIT >> 20} MiB of top-level .json members")
            data = _read(member, chunks, CONFIG_LIMIT)
            digest = of_bytes(data)
            got.files[name] = digest
            got.configs[digest] = data
        elif _LAYER_FILE.fullmatch(name):
            self._stage(member, chunks)

    def _take_delta_blob(self, member: Member, blob: re.Match | None, chunks: Callable[[], Iterator[bytes]]) -> None:
        assert self.received.delta is not None
        digest = _blob_digest(member.name, blob) if blob is not None else None
        if digest is None or self.received.delta.blobs.get(digest) != member.size:
            raise UnsafeArchive(f"member {member.name!r} ({member.size} bytes) is not a blob {delta_format.NAME} lists")
        self._ingest(member, digest, chunks)

    def _ingest(self, member: Member, digest: Digest, chunks: Callable[[], Iterator[bytes]]) -> None:
        got = self.received
        got.files[member.name] = digest
        self.lease.add([digest])
        if self.store.blobs.has(digest, member.size):
            got.reused[digest] = member.size
            return  # verified when it was committed; the archive's copy is skipped unread
        held = contextlib.ExitStack()
        ing = held.enter_context(self.store.ingests.open(digest, member.size))
        try:
            if ing.committed:  # another process committed it while we waited
                got.reused[digest] = member.size
                held.close()
                return
            ing.discard()  # an archive cannot resume: never leave a partial entry behind
            ing.restart()
            head = self._copy(chunks, ing)
        except BaseException:
            held.close()
            raise
        got.heads[digest] = head
        self._wait(1)  # at most one commit waits behind the running one
        self._pending.append((self._committer.submit(self._commit, member.name, ing, held), held))

    def _commit(self, name: str, ing: Ingest, held: contextlib.ExitStack) -> None:
        """Verify, fsync and rename one blob on the commit thread, while the next one streams in."""
        with held:
            try:
                info = ing.commit()
            except IntegrityError as exc:
                raise ArchiveError(
                    f"member {name}: its bytes do not match the digest its name claims ({exc.message})",
                    hint="the archive is damaged or forged; no image was recorded",
                ) from None
            record_blob(self.store, info, UNKNOWN)
        self.received.stored[info.digest] = info

    def _wait(self, keep: int = 0) -> None:
        while len(self._pending) > keep:
            self._pending.popleft()[0].result()  # a commit's error is raised here

    def finish(self) -> None:
        """Wait for every commit; the first error among them is raised."""
        try:
            self._wait()
        finally:
            self._committer.shutdown(wait=True)

    def abandon(self) -> None:
        """Unwinding from an error: a queued commit never starts (its entry is removed here), a running
        one ends (and removes its own); their errors are ignored."""
        for future, held in self._pending:
            if future.cancel():
                held.close()
        self._pending.clear()
        self._committer.shutdown(wait=True)

    def _copy(self, chunks: Callable[[], Iterator[bytes]], sink: Ingest | Staging) -> bytes:
        """Write a member's bytes to ``sink``, reporting each chunk; its first 4 bytes (a layer's compression)."""
        head = b""
        for chunk in chunks():
            if len(head) < 4:
                head += chunk[:4]
            sink.write(chunk)
            self.on_bytes(len(chunk))
        return head[:4]

    def _stage(self, member: Member, chunks: Callable[[], Iterator[bytes]]) -> None:
        got = self.received
        with self.store.ingests.staging() as staged:
            head = self._copy(chunks, staged)
            digest = staged.digest
            claimed = _CLAIMED.fullmatch(member.name)
            if claimed is not None and claimed.group(1) != digest.hex:
                raise ArchiveError(
                    f"member {member.name}: its bytes have digest {digest}, not the one its name claims",
                    hint="the archive is damaged or forged; no image was recorded",
                )
            self.lease.add([digest])
            info = staged.commit(on_commit=lambda info: record_blob(self.store, info, UNKNOWN))
        got.files[member.name] = digest
        got.heads[digest] = head
        if info is None:
            got.reused[digest] = member.size
        else:
            got.stored[digest] = info


def _read(member: Member, chunks: Callable[[], Iterator[bytes]], limit: int) -> bytes:
    if member.size > limit:
        raise UnsafeArchive(
            f"{member.name} is {member.size} bytes; refusing to read more than {limit >> 20} MiB of metadata"
        )
    return b"".join(chunks())


def _blob_digest(name: str, blob: re.Match) -> Digest:
    try:
        return Digest(blob.group(1), blob.group(2))
    except BadDigest as exc:
        raise UnsafeArchive(f"member {name!r} is not named by a valid digest ({exc.message})") from None
