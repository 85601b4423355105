"""Reading a manifest (or a config) back from the store, checked against its digest.

Pull, push and export read stored manifests before they trust what those name: a
file changed after its commit would otherwise be parsed, and name blobs that never
existed. Small files, so the bytes are hashed rather than fingerprinted. The read
and the check live here once; each caller decides what a changed file means (pull
fetches it again, push refuses, an export plan reports it beside missing blobs).
"""

from __future__ import annotations

from dataclasses import dataclass

from cas import manifest as mf
from cas.digest import Digest, of_bytes
from cas.store import Store


@dataclass(frozen=True)
class StoredManifest:
    digest: Digest
    media_type: str
    data: bytes
    actual: Digest  # what the bytes hash to now

    @property
    def intact(self) -> bool:
        return self.actual == self.digest


def read_hashed(store: Store, digest: Digest, limit: int | None = None) -> tuple[bytes, Digest]:
    """A stored blob's bytes and what they hash to. ``limit``: a larger file is read only one byte
    past it, so it costs no memory and fails the check."""
    size = store.blobs.size(digest) or 0
    if limit is not None and size > limit:
        with store.blobs.open(digest) as fh:
            data = fh.read(limit + 1)
    else:
        data = store.blobs.read(digest)
    return data, of_bytes(data, digest.algorithm)


def read_manifest(store: Store, digest: Digest, declared: str | None = None) -> StoredManifest | None:
    """The stored manifest ``digest``, None when the store lacks it. Its media type: the bytes'
    own ``mediaType``, else ``declared`` (the descriptor that led here), else the blob's record."""
    if not store.blobs.has(digest):
        return None
    data, actual = read_hashed(store, digest, mf.MAX_MANIFEST)
    if declared is None:
        record = store.metadata.get_blob(digest)
        declared = record["media_type"] if record else None
    media_type = mf.media_type_of(data, declared) if actual == digest else declared or ""
    return StoredManifest(digest, media_type, data, actual)


def changed_line(digest: Digest, role: str, actual: Digest) -> str:
    """How a plan names a stored file whose bytes no longer hash to its digest."""
    return f"{digest} ({role}): content hashes to {actual}"
