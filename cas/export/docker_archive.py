"""The docker-archive we write: the `docker save` layout of Docker 25+, plus manifest.json and repositories.

``oci-layout``, ``index.json`` and ``blobs/<alg>/<hex>`` for every manifest,
config and layer serve new docker, containerd and skopeo; ``manifest.json``
(Config, RepoTags, Layers: paths into blobs/) and ``repositories`` serve Docker
before 25 and podman. Layers stay as the registry served them: docker load
decompresses them and checks them against rootfs.diff_ids.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from cas.export import oci
from cas.export.plan import ExportPlan, member
from cas.export.tarwriter import TarWriter
from cas.manifest import Descriptor
from cas.store import OCI_LAYOUT, Store


def manifest_json(plan: ExportPlan) -> bytes:
    entries = [
        {
            "Config": member(image.config.digest),
            "RepoTags": [name.familiar for name in image.names],
            "Layers": [member(layer.digest) for layer in image.layers],
        }
        for image in plan.images
    ]
    return json.dumps(entries, separators=(",", ":")).encode()


def repositories(plan: ExportPlan) -> bytes:
    """The pre-1.10 file: familiar name -> tag -> the top layer's id (here: its blob hex)."""
    repos: dict[str, dict[str, str]] = {}
    for image in plan.images:
        top = (image.layers[-1] if image.layers else image.config).digest.hex
        for name in image.names:
            familiar, _, tag = name.familiar.rpartition(":")
            repos.setdefault(familiar, {})[tag] = top
    return json.dumps(repos, separators=(",", ":")).encode()


def write_archive(
    writer: TarWriter, store: Store, plan: ExportPlan, on_blob: Callable[[Descriptor], None] | None = None
) -> None:
    oci.write_blobs(writer, store, plan.blobs, on_blob)
    # Docker 25's own save: the full name for containerd, the bare tag as ref.name.
    writer.add_bytes("index.json", oci.index_json(plan, lambda full: full.rsplit(":", 1)[1]))
    writer.add_bytes("manifest.json", manifest_json(plan))
    writer.add_bytes("oci-layout", OCI_LAYOUT)
    writer.add_bytes("repositories", repositories(plan))
    writer.close()
