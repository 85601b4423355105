"""The one checked read of a stored manifest (pull, push and export share it): intact or not, its
media type, and an oversized file read only one byte past the limit."""

from __future__ import annotations

import json
import os

from cas import manifest as mf
from cas.digest import of_bytes
from cas.record_image import record_blob
from cas.stored_manifest import read_manifest

DOCKER = json.dumps({"schemaVersion": 2, "mediaType": mf.DOCKER_MANIFEST, "config": {}, "layers": []}).encode()
BARE = json.dumps({"schemaVersion": 2, "config": {}, "layers": []}).encode()  # OCI, no mediaType (umoci)


def _put(store, data: bytes, media_type: str):
    digest = of_bytes(data)
    store.ingests.put(digest, data, on_commit=lambda info: record_blob(store, info, media_type))
    return digest


def _overwrite(store, digest, data: bytes) -> None:
    path = store.blobs.path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(data)


def test_absent_is_none_and_intact_bytes_are_read_whole(store):
    assert read_manifest(store, of_bytes(b"never stored")) is None
    digest = _put(store, DOCKER, mf.DOCKER_MANIFEST)
    stored = read_manifest(store, digest)
    assert stored.intact and stored.data == DOCKER and stored.actual == digest


def test_the_media_type_is_the_bytes_own_then_the_descriptor_then_the_record(store):
    docker = _put(store, DOCKER, "application/octet-stream")  # a guess recorded before anything knew better
    assert read_manifest(store, docker).media_type == mf.DOCKER_MANIFEST
    bare = _put(store, BARE, mf.OCI_MANIFEST)
    assert read_manifest(store, bare).media_type == mf.OCI_MANIFEST  # from its record
    assert read_manifest(store, bare, "application/vnd.example+json").media_type == "application/vnd.example+json"


def test_a_changed_file_is_not_intact_and_an_oversized_one_costs_one_byte_past_the_limit(store):
    digest = _put(store, DOCKER, mf.DOCKER_MANIFEST)
    _overwrite(store, digest, DOCKER.replace(b"2", b"3"))
    changed = read_manifest(store, digest)
    assert not changed.intact and changed.actual == of_bytes(DOCKER.replace(b"2", b"3"))
    _overwrite(store, digest, b"x" * (mf.MAX_MANIFEST + 4096))
    oversized = read_manifest(store, digest)
    assert not oversized.intact and len(oversized.data) == mf.MAX_MANIFEST + 1


def test_an_inventory_base_whose_stored_manifest_changed_is_left_out_with_a_warning(store, tmp_path):
    from cas.export.delta import inventory_bases

    layer = {"mediaType": mf.OCI_LAYER_GZIP, "digest": str(of_bytes(b"layer")), "size": 5}
    config = {"mediaType": mf.OCI_CONFIG, "digest": str(of_bytes(b"{}")), "size": 2}
    data = json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "config": config, "layers": [layer]}).encode()
    digest = _put(store, data, mf.OCI_MANIFEST)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"images": [{"ref": "base:1", "manifest": str(digest)}]}))
    warnings: list[str] = []

    (base,) = inventory_bases(store, inventory, warnings.append)
    assert of_bytes(b"layer") in base.blobs and warnings == []

    _overwrite(store, digest, data.replace(b'"size": 5', b'"size": 6'))
    assert inventory_bases(store, inventory, warnings.append) == []
    assert warnings == [
        f"inventory: base:1 ({digest.short}) changed in this store after its commit; its layers are carried if needed"
    ]
