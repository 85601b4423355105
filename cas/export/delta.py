"""Delta archives: an image's blobs minus those its bases (or the receiver's inventory) hold.

A delta is not an image archive and must not look like one: no ``manifest.json``, no
``index.json``, no ``oci-layout``, so ``docker load``, podman and skopeo refuse it at once
instead of half-loading it (an archive missing a layer that docker loads anyway). Its first member is
``cas-delta.json`` (``cas.delta_format``); then ``blobs/<alg>/<hex>`` for every carried blob,
written by the same functions as every other export. Manifests and configs are always
carried, and so is the index a multi-platform reference resolved to, so the receiver records
the same digest; a layer only when no base holds it. Every layer left out is listed in
``requires`` with its size and base, and ``cas import`` checks them all before it
writes anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cas import manifest as mf
from cas.delta_format import NAME, DeltaDescription, DeltaImage, Required
from cas.digest import Digest
from cas.errors import BadDigest, CasError, ChangedBlobs, NotCached, UsageError
from cas.export import oci
from cas.export.plan import ExportPlan, lookup, read_checked
from cas.export.tarwriter import TarWriter
from cas.manifest import Descriptor
from cas.records import RefRecord
from cas.reference import Reference
from cas.store import Store
from cas.stored_manifest import read_manifest


@dataclass(frozen=True)
class Base:
    """What the receiver is known to hold: every blob of one image."""

    name: str
    blobs: dict[Digest, int]


def bases_of(store: Store, references: Sequence[Reference]) -> list[Base]:
    """The blobs of each ``--since`` image, from its ref record in this store."""
    hits = {str(reference): lookup(store, reference) for reference in references}
    not_cached = [text for text, hit in hits.items() if not hit]
    if not_cached:
        raise NotCached(
            f"--since: not in the cache: {', '.join(not_cached)}",
            hint="a delta is computed against images this store holds: pull them, or use --since-inventory",
        )
    bases = []
    for records in hits.values():
        # Only what every cached platform of the base shares: the receiver holds the base for at
        # least one of them, so the delta is at worst larger, never missing a blob.
        blobs = {digest: blob.size for digest, blob in records[0].unique_blobs.items()}
        for record in records[1:]:
            blobs = {digest: size for digest, size in blobs.items() if record.entry(digest) is not None}
        bases.append(Base(records[0].ref, blobs))
    return bases


def inventory_bases(store: Store, path: Path, warn: Callable[[str], None]) -> list[Base]:
    """The receiver's ``cas images --json``: each image's blobs, from its manifest in this store.

    An entry whose manifest this store does not hold, or holds changed, says nothing about its
    layers: it is left out, with a warning (the delta is then only larger, never wrong).
    """
    try:
        rows = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot read the inventory {path}: {exc}", hint="give the output of `cas images --json`"
        ) from None
    if isinstance(rows, dict):
        rows = rows.get("images")
    if not isinstance(rows, list):
        raise UsageError(f"{path} is not an inventory", hint="give the output of `cas images --json`")
    bases = []
    for row in rows:
        ref = row.get("ref") if isinstance(row, dict) else None
        try:
            digest = Digest.parse(row.get("manifest") if isinstance(row, dict) else None)
        except BadDigest:
            raise UsageError(f"{path}: an entry without a valid manifest digest ({ref or row!r})") from None
        try:
            stored = read_manifest(store, digest)
            image = mf.parse(stored.data, stored.media_type) if stored is not None and stored.intact else None
        except CasError:
            continue
        if stored is None or image is None:
            where = "is not in this store" if stored is None else "changed in this store after its commit"
            warn(f"inventory: {ref} ({digest.short}) {where}; its layers are carried if needed")
            continue
        if isinstance(image, mf.ImageManifest):
            blobs = {digest: len(stored.data), **{d.digest: d.size for d in image.blobs}}
            bases.append(Base(f"{ref} (inventory)", blobs))
    return bases


def describe(store: Store, plan: ExportPlan, bases: list[Base]) -> tuple[DeltaDescription, list[Descriptor]]:
    """The description and the blobs to carry: manifests, configs, and layers no base holds."""
    description = DeltaDescription()
    carried: list[Descriptor] = []
    required: dict[Digest, Required] = {}
    for image in plan.images:
        top = image.record.digest
        index = _index_of(store, image.record)
        if index is not None and index.digest not in description.blobs:
            description.blobs[index.digest] = index.size
            carried.append(index)
        for name in image.names or [None]:
            description.images.append(
                DeltaImage(
                    str(name) if name is not None else None,
                    top,
                    image.manifest.digest,
                    image.manifest.media_type,
                    image.platform or None,
                )
            )
        layers = {layer.digest for layer in image.layers}
        for blob in image.blobs:
            if blob.digest in description.blobs or blob.digest in required:
                continue
            base = next((b for b in bases if b.blobs.get(blob.digest) == blob.size), None)
            if blob.digest in layers and base is not None:
                required[blob.digest] = Required(blob.digest, blob.size, base.name)
            else:
                description.blobs[blob.digest] = blob.size
                carried.append(blob)
    description.requires = list(required.values())
    return description, carried


def _index_of(store: Store, record: RefRecord) -> Descriptor | None:
    """The index a multi-platform reference resolved to, carried so the receiver records the same
    digest (a few hundred bytes). Checked byte for byte here: it is not among the plan's blobs."""
    entry = record.entry(record.digest) if record.digest != record.manifest else None
    if entry is None or entry.media_type not in mf.INDEX_TYPES or not store.blobs.has(entry.digest, entry.size):
        return None
    _, changed = read_checked(store, entry.digest, f"index of {record.ref}")
    if changed:
        raise ChangedBlobs(changed, [record.ref])
    return Descriptor(entry.media_type, entry.digest, entry.size)


def write_delta(
    writer: TarWriter,
    store: Store,
    description: DeltaDescription,
    carried: list[Descriptor],
    on_blob: Callable[[Descriptor], None] | None = None,
) -> None:
    writer.add_bytes(NAME, description.to_json())  # first: the receiver checks it before any blob
    oci.write_blobs(writer, store, carried, on_blob)
    writer.close()
