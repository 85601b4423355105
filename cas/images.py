"""What the store holds, per reference: listing and inspection, read from the store only."""

from __future__ import annotations

import json

from cas import manifest as mf
from cas.digest import Digest
from cas.errors import NotCached
from cas.reference import Reference
from cas.store import Store


def record_of(store: Store, ref: Reference) -> dict:
    record = store.index.get_ref(str(ref))
    if record is None:
        raise NotCached(f"{ref} is not in the cache", hint=f"run `cas pull {ref}` first")
    return record


def list_images(store: Store) -> list[dict]:
    rows = []
    for ref, record in store.index.refs():
        rows.append(
            {
                "ref": ref,
                "digest": record["digest"],
                "manifest": record["manifest"],
                "platform": record.get("platform"),
                "size": record["size"],
                "pulled": record["pulled"],
                "used": record["used"],
                "needs_pull": bool(record.get("needs_pull")),  # set by `cas verify --repair`
            }
        )
    return sorted(rows, key=lambda row: row["ref"])


def inspect(store: Store, ref: Reference) -> dict:
    """The ref record plus a summary of its manifest and config."""
    record = record_of(store, ref)
    manifest_digest = Digest.parse(record["manifest"])
    media_type = next(b["media_type"] for b in record["blobs"] if b["digest"] == record["manifest"])
    image = mf.parse(store.blobs.read(manifest_digest), media_type)
    assert isinstance(image, mf.ImageManifest)
    config = json.loads(store.blobs.read(image.config.digest))
    runtime = config.get("config") or {}
    return {
        "ref": record["ref"],
        "digest": record["digest"],
        "manifest": record["manifest"],
        "media_type": media_type,
        "platform": record.get("platform"),
        "size": record["size"],
        "pulled": record["pulled"],
        "used": record["used"],
        "config": {
            "digest": str(image.config.digest),
            "created": config.get("created"),
            "os": config.get("os"),
            "architecture": config.get("architecture"),
            "entrypoint": runtime.get("Entrypoint"),
            "cmd": runtime.get("Cmd"),
            "env": runtime.get("Env") or [],
            "working_dir": runtime.get("WorkingDir") or "",
            "labels": runtime.get("Labels") or {},
        },
        "layers": [{"digest": str(l.digest), "size": l.size, "media_type": l.media_type} for l in image.layers],
    }
