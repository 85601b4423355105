"""``cas du``: what the store holds, per image, and what a prune would reclaim. Read-only.

Sizes come from the ref records (every blob digest and size) and one walk of
``blobs/``; no manifest is opened. An image's *unique* bytes are those of blobs no
other image lists (what ``cas rm`` plus ``cas prune`` would free); its *shared*
bytes are the rest. An image's ``blob_count`` counts its blobs as pull and export do (index,
manifest, config, layers, each once); its sizes also hold the few hundred bytes of the OCI
view cas derives for a Docker manifest, a file the image keeps alive.

The returned dict is the ``cas du --json`` body (field conventions in cas.jsonout).
"""

from __future__ import annotations

from cas import gc, snapshot
from cas.errors import StoreError
from cas.jsonout import timestamp
from cas.store import Store


def usage(store: Store) -> dict:
    snap = snapshot.snapshot(store)
    counts = snap.refcounts()
    images = []
    referenced = 0
    shared_total = 0
    for digest, count in counts.items():
        size = snap.files.get(digest, 0)
        referenced += size
        if count > 1:
            shared_total += size
    for image in sorted(snap.images.values(), key=lambda i: (i.ref, i.platform or "")):
        unique = sum(size for digest, size in image.blobs if counts[digest] == 1)
        missing = [d for d, _ in image.blobs if d not in snap.files]
        images.append(
            {
                "ref": image.ref,
                "platform": image.platform,
                "size": image.size,
                "unique_bytes": unique,
                "shared_bytes": image.size - unique,
                "blob_count": image.blob_count,
                "missing_blobs": len(missing),
                "pulled_at": timestamp(image.pulled or None),
                "used_at": timestamp(image.used or None),
                "needs_pull": image.needs_pull,
            }
        )
    active = [i for i in snap.ingests if i.path in snap.active]
    try:
        reclaim = gc.plan(snap, gc.Policy(), dry_run=True)
        reclaimable = {
            "size": reclaim.freed_bytes,
            "blob_count": len(reclaim.blobs),
            "stray_file_count": len(reclaim.strays),
            "stale_download_count": len(reclaim.ingests),
        }
    except StoreError as exc:  # a malformed ref: prune refuses, du still reports
        reclaimable = {"error": exc.message}
    return {
        "root": str(store.root),
        "stored_blobs": len(snap.files),
        "stored_bytes": sum(snap.files.values()),
        "indexed_blobs": len(snap.indexed),
        "stray_file_count": len(snap.strays),
        "stray_bytes": sum(s.size for s in snap.strays),
        "images": images,
        "referenced_blobs": sum(1 for d in counts if d in snap.files),
        "referenced_bytes": referenced,
        "shared_bytes": shared_total,
        "leased_blobs": len(snap.leased),
        "leased_bytes": sum(snap.files.get(d, 0) for d in snap.leased),
        "download_count": len(snap.ingests),
        "active_downloads": len(active),
        "download_bytes": sum(i.partial for i in snap.ingests),
        "reclaimable": reclaimable,
    }
