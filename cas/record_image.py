"""Recording an image: the last step of every path that brings one into the store.

Pull and import both end here, once every blob the image lists is committed: the
small manifests they hold in memory are committed (with their index records), a
Docker manifest gets its OCI view (see ``cas.manifest.oci_view``), blob records that
do not know their type yet get the one the image's descriptors give (``cas.blobtypes``),
and the ref record is written, then index.json if it does not list the image yet. One place,
so a pulled and an imported image are recorded the same way.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from cas import blobtypes
from cas import manifest as mf
from cas.digest import Digest, of_bytes
from cas.manifest import Descriptor, ImageManifest, platform_of_config
from cas.records import BlobEntry, RefRecord
from cas.store import BlobInfo, Store

if TYPE_CHECKING:
    from cas.metadata import Lease


def commit_bytes(store: Store, lease: Lease, digest: Digest, data: bytes, media_type: str) -> bool:
    """Verify and commit a small blob held in memory (a manifest), with its index record.

    True when the store did not hold it yet (pull counts it as downloaded, else reused)."""
    lease.add([digest])
    return store.ingests.put(digest, data, on_commit=lambda info: record_blob(store, info, media_type)) is not None


def record_blob(store: Store, info: BlobInfo, media_type: str) -> None:
    """Step 5 of the commit protocol: call it while the digest is still locked."""
    store.metadata.put_blob(
        info.digest, size=info.size, media_type=media_type, fingerprint=info.fingerprint, stat=info.stat
    )


def record_image(
    store: Store,
    lease: Lease,
    *,
    ref: str,
    registry: str,
    chain: list[tuple[Digest, str]],
    image: ImageManifest,
    platform: str | None,
) -> RefRecord:
    """Write the ref record of ``ref`` for its platform; every blob of ``image`` and of ``chain`` must be committed.

    ``chain`` is ``[(index digest, type),] (manifest digest, type)``: what the name resolved to,
    down to the image manifest. ``platform`` None: read it from the config.
    """
    config = store.blobs.read(image.config.digest)
    mf.check_rootfs(config, len(image.layers), ref)  # docker load would reject it: record nothing
    view = _commit_oci_view(store, lease, image, chain[-1][0])
    listed = [*chain[:-1], view, chain[-1]] if view is not None else chain
    manifests = [Descriptor(media_type, digest, store.blobs.size(digest) or 0) for digest, media_type in listed]
    blobs = list(image.blobs)
    if platform is None:
        platform = platform_of_config(config)
    now = time.time()
    record = RefRecord(
        ref=ref,
        registry=registry,
        digest=chain[0][0],
        media_type=chain[0][1],
        manifest=chain[-1][0],
        config=image.config.digest,
        platform=platform,
        blobs=tuple(BlobEntry(d.digest, d.size, d.media_type) for d in manifests + blobs),
        pulled=now,
        used=now,
        layout_manifest=view[0] if view is not None else None,
    )
    blobtypes.correct(store.metadata, ((blob.digest, blob.media_type) for blob in record.blobs))
    store.metadata.put_ref(record)
    if not store.layout_lists(record):  # a new manifest, or index.json left stale by a crash
        store.write_layout_index()
    return record


def clear_marks(store: Store, restored: set[Digest]) -> list[RefRecord]:
    """Clear "needs pull" (set by `cas verify --repair`) on every record that ``restored`` made whole.

    A blob a repair removed may be needed by several references; whichever of them is pulled
    (or imported) next brings it back for all. Records with a blob still missing keep the mark.
    Returns the records cleared. Does nothing (no index scan) when nothing was downloaded.
    """
    if not restored:
        return []
    cleared = []
    with store.metadata.transact():
        for record in list(store.metadata.refs(malformed=[])):
            blobs = record.unique_blobs
            if (
                record.needs_pull
                and not restored.isdisjoint(blobs)
                and all(store.blobs.has(digest, blob.size) for digest, blob in blobs.items())
            ):
                store.metadata.put_ref(record.replace(needs_pull=False))
                cleared.append(record)
    return cleared


def _commit_oci_view(store: Store, lease: Lease, image: ImageManifest, manifest: Digest) -> tuple[Digest, str] | None:
    """For a Docker manifest, the OCI view that index.json lists."""
    view = mf.oci_view(image, manifest)
    if view is None:
        return None
    digest = of_bytes(view)
    commit_bytes(store, lease, digest, view, mf.OCI_MANIFEST)
    return digest, mf.OCI_MANIFEST


def unique(descs: list[Descriptor]) -> list[Descriptor]:
    seen: set[Digest] = set()
    out = []
    for desc in descs:
        if desc.digest not in seen:
            seen.add(desc.digest)
            out.append(desc)
    return out
