"""Helpers for the lifecycle tests (gc, du, verify): stores built directly through the store API.

Named ``test_*`` only to sit inside the lifecycle tests' file pattern; it holds no tests.
Images come from ``support.images`` (real tar layers, configs and manifests), and their blobs
are committed and indexed exactly as ``cas.pull`` does: ``BlobStore.put`` then
``Metadata.put_blob``, then the ref record of CONTRIBUTING.md, then ``write_layout_index``.
The empty store itself is the ``store`` fixture of conftest.py.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from support.images import Image, random_layer

from cas.digest import Digest
from cas.records import BlobEntry, RefRecord
from cas.reference import parse
from cas.store import Store

BASE = "127.0.0.1:5000/base:1.0"
APP = "127.0.0.1:5000/app:1.0"
OTHER = "127.0.0.1:5000/other:2"


def commit(store: Store, data: bytes, media_type: str) -> Digest:
    digest = Digest.parse(_sha256(data))
    info = store.ingests.put(digest, data)
    if info is not None:
        store.metadata.put_blob(digest, size=info.size, media_type=media_type, fingerprint=info.fingerprint)
    return digest


def _sha256(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def store_image(
    store: Store, ref_text: str, image: Image, *, used: float = 1_700_000_000.0, layout: bool = True
) -> RefRecord:
    """Commit ``image`` and write the ref record a pull would write; return the record."""
    ref = str(parse(ref_text))
    blobs = [image.manifest_blob, image.config_blob] + [lay.blob(image.media) for lay in image.layers]
    for blob in blobs:
        commit(store, blob.data, blob.media_type)
    record = RefRecord(
        ref=ref,
        registry=parse(ref_text).registry,
        digest=Digest.parse(image.digest),
        media_type=image.media_type,
        manifest=Digest.parse(image.digest),
        config=Digest.parse(image.config_blob.digest),
        platform=image.platform,
        blobs=tuple(BlobEntry(Digest.parse(b.digest), b.size, b.media_type) for b in blobs),
        pulled=used,
        used=used,
    )
    store.metadata.put_ref(record)
    if layout:
        store.write_layout_index()
    return record


def images(sizes: dict[str, list[int]]) -> dict[str, Image]:
    """Images from layer specs: each int is a seed for a random layer of ~2 KiB * (1 + seed % 5).

    Equal seeds give equal (shared) layers; the config carries the name so configs differ.
    """
    return {
        name: Image([random_layer(2048 * (1 + seed % 5), seed) for seed in seeds], labels={"name": name})
        for name, seeds in sizes.items()
    }


def store_three(store: Store) -> dict[str, dict]:
    """base (layers 1, 2), app (layers 1, 2, 3: shares base's), other (layer 4); used in that order.

    Returns ref -> the ref record ``store_image`` wrote.
    """
    imgs = images({"base": [1, 2], "app": [1, 2, 3], "other": [4]})
    return {
        BASE: store_image(store, BASE, imgs["base"], used=1000.0),
        APP: store_image(store, APP, imgs["app"], used=2000.0),
        OTHER: store_image(store, OTHER, imgs["other"], used=3000.0),
    }


def files_on_disk(store: Store) -> set[str]:
    return {str(d) for d, _ in store.blobs.iter_files() if d is not None}


def indexed(store: Store) -> set[str]:
    return {str(d) for d, _ in store.metadata.blobs()}


def flip_byte(path: Path, offset: int = 100) -> None:
    """Blobs are 0444: make the file writable, flip one byte, and put the mode back."""
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.chmod(path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


def only_record(store: Store, ref: str) -> RefRecord | None:
    """The record of a reference cached for one platform (None when it is not cached)."""
    records = store.metadata.ref_records(ref)
    assert len(records) <= 1, [r.name for r in records]
    return records[0] if records else None


def write_raw(store: Store, key: str, value: object) -> None:
    """Write an index entry as an older cas, or damage in place, could: bypassing RefRecord.

    A ``ref:REF|PLATFORM`` entry stays listed in its reference's ``platforms:`` entry, as ``put_ref``
    lists it (damage changes the value, not the list); a legacy ``ref:REF`` entry was never listed.
    """
    from cas.records import is_legacy, platforms_key, split_key

    with store.metadata.transact():
        store.metadata._db.set(key, value)
        if key.startswith("ref:") and not is_legacy(key):
            ref, platform = split_key(key)
            listed = store.metadata._db.get(platforms_key(ref), [])
            store.metadata._db.set(platforms_key(ref), sorted({*listed, platform}))


def tiny_record(ref: str, *, pad: int = 0, platform: str = "linux/amd64") -> RefRecord:
    """A valid record naming one made-up manifest (for index tests; ``pad`` bytes make its JSON bigger)."""
    manifest = Digest.parse(_sha256(ref.encode()))
    return RefRecord(
        ref=ref,
        registry=ref.split("/")[0],
        digest=manifest,
        media_type="application/vnd.oci.image.manifest.v1+json" + " " * pad,
        manifest=manifest,
        config=manifest,
        platform=platform,
        blobs=(BlobEntry(manifest, 1, "application/vnd.oci.image.manifest.v1+json"),),
        pulled=1000.0,
        used=1000.0,
    )


def abandon(store: Store, digest: Digest) -> None:
    """Age a partial download past RESUMABLE_FOR: no pull resumes it, so verify and prune call it stale."""
    from cas.store.ingest import RESUMABLE_FOR

    old = time.time() - RESUMABLE_FOR - 3600
    os.utime(store.ingests.dir / f"{digest.algorithm}-{digest.hex}" / "data", (old, old))
