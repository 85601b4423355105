"""``cas du``: what the store holds, per image, and what a prune would reclaim. Read-only.

Sizes come from the ref records (every blob digest and size) and one walk of
``blobs/``; no manifest is opened. An image's *unique* bytes are those of blobs no
other image lists (what ``cas rm`` plus ``cas prune`` would free); its *shared*
bytes are the rest.
"""

from __future__ import annotations

from cas import gc, snapshot
from cas.errors import StoreError
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
                "unique": unique,
                "shared": image.size - unique,
                "blobs": len(image.blobs),
                "missing_blobs": len(missing),
                "used": image.used or None,
                "pulled": image.pulled or None,
                "needs_pull": image.needs_pull,
            }
        )
    active = [i for i in snap.ingests if i.path in snap.active]
    try:
        reclaim = gc.plan(snap, gc.Policy(), dry_run=True)
        reclaimable = {
            "blobs": len(reclaim.blobs),
            "stray_files": len(reclaim.strays),
            "ingests": len(reclaim.ingests),
            "bytes": reclaim.freed_bytes,
        }
    except StoreError as exc:  # a malformed ref: prune refuses, du still reports
        reclaimable = {"error": exc.message}
    return {
        "root": str(store.root),
        "total": {
            "blobs": len(snap.files),
            "bytes": sum(snap.files.values()),
            "indexed_blobs": len(snap.indexed),
            "stray_files": len(snap.strays),
            "stray_bytes": sum(s.size for s in snap.strays),
        },
        "images": images,
        "referenced": {
            "blobs": sum(1 for d in counts if d in snap.files),
            "bytes": referenced,
            "shared_bytes": shared_total,
        },
        "leased": {"blobs": len(snap.leased), "bytes": sum(snap.files.get(d, 0) for d in snap.leased)},
        "ingest": {
            "entries": len(snap.ingests),
            "active": len(active),
            "bytes": sum(i.partial for i in snap.ingests),
        },
        "reclaimable": reclaimable,
    }
