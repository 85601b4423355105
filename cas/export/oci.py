"""OCI image layouts: the oci-archive tar, the oci-dir directory, and the pieces the docker-archive shares.

Our index.json lists exactly the image manifests in the plan, never a pulled
multi-platform index: that index names platforms the store does not hold.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

from cas.export.plan import ExportPlan, member
from cas.export.tarwriter import TarWriter
from cas.manifest import OCI_INDEX, Descriptor
from cas.store import OCI_LAYOUT, REF_NAME, Store
from cas.store.fs import Linker

CONTAINERD_NAME = "io.containerd.image.name"


def index_json(plan: ExportPlan, ref_name: Callable[[str], str]) -> bytes:
    """One entry per (image, name); ``ref_name`` maps a canonical name to its ref.name annotation."""
    entries = []
    for image in plan.images:
        if not image.names:
            entries.append(image.manifest.to_json())
        for name in image.names:
            full = str(name)
            entries.append(replace(image.manifest, annotations={CONTAINERD_NAME: full, REF_NAME: ref_name(full)}).to_json())
    return _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})


def write_blobs(writer: TarWriter, store: Store, blobs: list[Descriptor], on_blob: Callable[[Descriptor], None] | None = None) -> None:
    """``blobs/`` and ``blobs/<alg>/`` directories, then every blob streamed from the store."""
    writer.add_dir("blobs")
    for algorithm in dict.fromkeys(b.digest.algorithm for b in blobs):
        writer.add_dir(f"blobs/{algorithm}")
    for blob in blobs:
        writer.add_file(member(blob.digest), store.blobs.path(blob.digest), blob.size)
        if on_blob is not None:
            on_blob(blob)


def write_archive(writer: TarWriter, store: Store, plan: ExportPlan, on_blob: Callable[[Descriptor], None] | None = None) -> None:
    """An OCI image layout as a tar (skopeo/podman ``oci-archive:``); ref.name is the full name."""
    writer.add_bytes("oci-layout", OCI_LAYOUT)
    write_blobs(writer, store, plan.blobs, on_blob)
    writer.add_bytes("index.json", index_json(plan, lambda full: full))
    writer.close()


def write_dir(
    target: Path, store: Store, plan: ExportPlan, linker: Linker, on_blob: Callable[[Descriptor], None] | None = None
) -> None:
    """An OCI image layout directory in ``target`` (which exists and is empty); blobs hard-linked from the store."""
    for algorithm in dict.fromkeys(b.digest.algorithm for b in plan.blobs):
        (target / "blobs" / algorithm).mkdir(parents=True)
    for blob in plan.blobs:
        linker.link(store.blobs.path(blob.digest), target / member(blob.digest))
        if on_blob is not None:
            on_blob(blob)
    (target / "oci-layout").write_bytes(OCI_LAYOUT)
    (target / "index.json").write_bytes(index_json(plan, lambda full: full))


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
