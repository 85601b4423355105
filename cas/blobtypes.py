"""The media type recorded for a blob: the word of a descriptor that names it, never a guess.

A blob's media type belongs to the descriptor that points to it, not to its bytes. An
import commits each blob as it arrives, before the archive's end says what it is, so it
records ``UNKNOWN``; the image recorded from it (``cas.record_image.record_image``, where a
pull, an import and a delta all end) then writes the type its descriptors give over every
unknown (``correct``). An import cut short leaves its blobs unknown, never wrong: the next
pull or import that records them knows better. Stores written before this rule hold
``application/octet-stream`` in that place, which counts as unknown too.

A stored manifest's type is read from its own bytes first (``cas.stored_manifest``), so an
unknown never stops a pull or a push. ``cas verify`` reports a recorded type that the blob's content
(a manifest) or its image's descriptor (anything else) contradicts, and ``--repair`` writes
the right one (``contradictions``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from cas import manifest as mf
from cas.digest import Digest
from cas.errors import CasError
from cas.metadata import Metadata
from cas.records import BlobRecord, RefRecord

UNKNOWN = ""  # recorded for a blob committed before anything said what it is
_GUESSES = (UNKNOWN, "application/octet-stream")  # the second: what imports wrote before this rule
_MANIFESTS = (*mf.MANIFEST_TYPES, *mf.INDEX_TYPES)
_MAX_MANIFEST = 4 << 20  # a larger blob is no manifest any registry serves


def known(media_type: str | None) -> bool:
    """Whether a type says something: not missing, not a placeholder for "not known yet"."""
    return bool(media_type) and media_type not in _GUESSES


def correct(index: Metadata, typed: Iterable[tuple[Digest, str]]) -> None:
    """Write each descriptor's type where its blob's record holds only a guess, in one transaction."""
    wanted = {digest: media_type for digest, media_type in typed if known(media_type)}
    with index.transact():
        fixes = {
            digest: media_type
            for digest, media_type in wanted.items()
            if (record := index.get_blob(digest)) is not None and not known(record["media_type"])
        }
        if fixes:
            index.set_blob_types(fixes)


def contradictions(
    records: Iterable[RefRecord], indexed: dict[str, BlobRecord], read: Callable[[str], bytes]
) -> dict[str, tuple[str, str]]:
    """``digest -> (recorded, right)`` for every blob record whose type is wrong (an unknown is not).

    ``indexed``: digest -> blob record; ``read(digest)``: the blob's bytes (at most a manifest's).
    A manifest's content decides its type; any other blob takes the type an image's descriptor
    gives it, where its record holds only a guess (two images may name one layer with two types).
    """
    described: dict[str, str] = {}
    for record in records:
        for entry in record.blobs:
            if known(entry.media_type):
                described.setdefault(str(entry.digest), entry.media_type)
    wrong = {}
    for digest, record in indexed.items():
        recorded = record["media_type"]
        if recorded == UNKNOWN:
            continue  # claims nothing, so nothing contradicts it: the image recorded from it will say
        suspect = not known(recorded) or recorded in _MANIFESTS or described.get(digest) in _MANIFESTS
        content = _content_type(read, digest) if suspect and record["size"] <= _MAX_MANIFEST else None
        right = content or (described.get(digest) if not known(recorded) else None)
        if right is not None and right != recorded:
            wrong[digest] = (recorded, right)
    return wrong


def _content_type(read: Callable[[str], bytes], digest: str) -> str | None:
    """The manifest type the bytes declare (or have the shape of); None for anything else."""
    try:
        data = read(digest)
        if not data.lstrip().startswith(b"{"):
            return None
        media_type = mf.media_type_of(data, None)
    except (CasError, OSError):
        return None
    return media_type if media_type in _MANIFESTS else None
