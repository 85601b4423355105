"""What the store holds, as a registry names it: manifests by tag or digest, tags and the catalog.

Reads only, through the index's and the blob store's public functions; called from worker
threads (sqlite and file reads never run on the event loop). The records of a repository are
the ref records whose reference names it: a tag is ``cas pull``'s tag, a digest is any manifest
or index a record of that repository lists.
"""

from __future__ import annotations

from dataclasses import dataclass

from cas.digest import Digest, verify_bytes
from cas.errors import BadDigest, CasError
from cas.manifest import INDEX_TYPES, MANIFEST_TYPES, ImageIndex, Platform, parse
from cas.records import RefRecord
from cas.reference import parse as parse_reference
from cas.serve import negotiate
from cas.serve.errcode import ServeError
from cas.serve.names import Name
from cas.store import Store


@dataclass(frozen=True)
class Found:
    """A manifest to send: its exact stored bytes, and the blobs a client will fetch next (to lease)."""

    digest: Digest
    media_type: str
    data: bytes
    records: tuple[RefRecord, ...]

    @property
    def holds(self) -> set[Digest]:
        return {blob.digest for record in self.records for blob in record.blobs}


def parse_digest(text: str) -> Digest:
    try:
        return Digest.parse(text)
    except BadDigest as exc:
        raise ServeError("DIGEST_INVALID", exc.message, {"digest": text[:100]}) from None


def records_of(store: Store, name: Name) -> list[RefRecord]:
    """Every ref record of one repository."""
    return [r for r in store.metadata.refs(malformed=[]) if _name_of(r.ref) == str(name)]


def manifest(
    store: Store, name: Name, reference: str, accept: frozenset[str], platform: Platform, resolved: Digest | None = None
) -> Found:
    """The manifest ``reference`` (tag or digest) names, negotiated against ``accept``.

    ``resolved``: the digest an upstream gave the tag (pull-through), served even before a record names it.
    """
    by_tag = ":" not in reference
    if by_tag and resolved is None:
        records = _tagged(store, name, reference)
        digest, media_type = records[0].digest, records[0].media_type
        records = [r for r in records if r.digest == digest]
    else:
        digest = resolved or parse_digest(reference)
        records = [r for r in records_of(store, name) if _is_manifest(r, digest)]
        media_type = records[0].entry(digest).media_type if records else _stored_type(store, name, digest, reference)
    data = _read(store, digest, reference)
    if negotiate.decide(media_type, accept, by_tag=by_tag) == negotiate.SERVE:
        if media_type not in INDEX_TYPES:
            records = [r for r in records if r.manifest == digest or r.layout_manifest == digest]
        return Found(digest, media_type, data, tuple(records))
    return _child(store, name, data, media_type, accept, platform)


def cached(store: Store, name: Name, tag: str) -> Digest | None:
    """What the store's newest record of ``name:tag`` resolved to; None when it has none."""
    try:
        return _tagged(store, name, tag)[0].digest
    except ServeError:
        return None


def _child(store: Store, name: Name, data: bytes, media_type: str, accept: frozenset[str], wanted: Platform) -> Found:
    """The child of an index for the client's platform, for a client that does not read indexes."""
    index = parse(data, media_type)
    assert isinstance(index, ImageIndex)
    try:
        child = index.select(wanted)
    except CasError:
        raise ServeError(
            "MANIFEST_UNKNOWN",
            f"index found, the client does not accept one, and it has no {wanted} manifest",
            {"platforms": index.platforms()},
        ) from None
    return manifest(store, name, str(child.digest), accept, wanted)


def tags(store: Store, name: Name) -> list[str]:
    """The repository's tags, sorted; NAME_UNKNOWN when the store holds nothing of it."""
    records = records_of(store, name)
    if not records:
        raise ServeError("NAME_UNKNOWN", f"repository {name} is not in the store", {"name": str(name)})
    return sorted({t for t in (parse_reference(r.ref).tag for r in records) if t is not None})


def catalog(store: Store) -> list[str]:
    """Every repository the store holds, as a client names it here (``registry/repository``)."""
    return sorted({_name_of(r.ref) for r in store.metadata.refs(malformed=[])})


def page(items: list[str], n: int | None, last: str | None) -> tuple[list[str], bool]:
    """Distribution's paging: the items after ``last``, at most ``n``; and whether more follow."""
    after = [item for item in items if last is None or item > last]
    if n is None:
        return after, False
    return after[:n], len(after) > n


def _tagged(store: Store, name: Name, tag: str) -> list[RefRecord]:
    try:
        records = store.metadata.ref_records(name.ref(tag))
    except CasError:
        records = []
    if not records:
        raise _unknown(store, name, tag)
    return sorted(records, key=lambda r: r.pulled, reverse=True)


def _stored_type(store: Store, name: Name, digest: Digest, reference: str) -> str:
    """The media type of a manifest committed by a pull still running (no record names it yet)."""
    blob = store.metadata.get_blob(digest)
    media_type = blob.get("media_type") if isinstance(blob, dict) else None
    if media_type not in (*INDEX_TYPES, *MANIFEST_TYPES) or not store.blobs.has(digest):
        raise _unknown(store, name, reference)
    return media_type


def _unknown(store: Store, name: Name, reference: str) -> ServeError:
    if not records_of(store, name):
        return ServeError("NAME_UNKNOWN", f"repository {name} is not in the store", {"name": str(name)})
    return ServeError("MANIFEST_UNKNOWN", f"{name.ref(reference)} is not in the store", {"reference": reference})


def _read(store: Store, digest: Digest, reference: str) -> bytes:
    try:
        data = store.blobs.read(digest)
        verify_bytes(data, digest, what="manifest")
    except (OSError, CasError):
        raise ServeError(
            "MANIFEST_UNKNOWN",
            f"manifest {digest} is recorded but its file is missing or damaged",
            {"reference": reference},
        ) from None
    return data


def _is_manifest(record: RefRecord, digest: Digest) -> bool:
    entry = record.entry(digest)
    return entry is not None and entry.media_type in (*INDEX_TYPES, *MANIFEST_TYPES)


def _name_of(ref: str) -> str:
    return parse_reference(ref).name
