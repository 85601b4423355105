"""What the store holds, per reference: listing and inspection, read from the store only."""

from __future__ import annotations

import json
from collections.abc import Iterable

from cas import manifest as mf
from cas.digest import Digest
from cas.errors import BadDigest, NotCached, StoreError
from cas.jsonout import timestamp
from cas.reference import Reference
from cas.store import Store


def record_of(store: Store, ref: Reference) -> dict:
    record = store.index.get_ref(str(ref))
    if record is None:
        raise NotCached(f"{ref} is not in the cache", hint=f"run `cas pull {ref}` first")
    return record


def list_images(store: Store, skipped: list[str] | None = None) -> list[dict]:
    """One row per cached ref; a record that lacks a field the row needs is left out (its ref added to ``skipped``)."""
    rows = []
    for ref, record in store.index.refs():
        row = _row(ref, record)
        if row is not None:
            rows.append(row)
        elif skipped is not None:
            skipped.append(ref)
    return sorted(rows, key=lambda row: row["ref"])


def _row(ref: str, record: object) -> dict | None:
    if not isinstance(record, dict):
        return None
    digest, manifest, size = record.get("digest"), record.get("manifest"), record.get("size")
    pulled, used = record.get("pulled"), record.get("used", record.get("pulled"))
    if not (
        isinstance(digest, str)
        and isinstance(manifest, str)
        and _is_int(size)
        and _is_number(pulled)
        and _is_number(used)
    ):
        return None
    return {
        "ref": ref,
        "digest": digest,
        "manifest": manifest,
        "platform": record.get("platform"),
        "size": size,
        "pulled": pulled,
        "used": used,
        "needs_pull": bool(record.get("needs_pull")),  # set by `cas verify --repair`
    }


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def inspect(store: Store, ref: Reference) -> dict:
    """The ref record plus a summary of its manifest and config."""
    record = record_of(store, ref)
    row = _row(str(ref), record)
    media_type = _listed_media_type(record, row["manifest"]) if row is not None else None
    try:
        manifest_digest = Digest.parse(row["manifest"]) if row is not None else None
    except BadDigest:
        manifest_digest = None
    if row is None or media_type is None or manifest_digest is None:
        raise StoreError(f"the index record of {ref} is malformed", hint=f"run `cas rm {ref}`, then `cas pull {ref}`")
    image = mf.parse(_read(store, record, ref, manifest_digest, "manifest"), media_type)
    assert isinstance(image, mf.ImageManifest)
    try:
        config = json.loads(_read(store, record, ref, image.config.digest, "config"))
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        config = None
    if not isinstance(config, dict):
        raise StoreError(f"the config {image.config.digest} of {ref} is not a JSON object", hint="run `cas verify`")
    runtime = config.get("config") or {}
    return {
        "ref": record.get("ref", row["ref"]),
        "digest": row["digest"],
        "manifest": row["manifest"],
        "media_type": media_type,
        "platform": row["platform"],
        "size": row["size"],
        "pulled_at": timestamp(row["pulled"]),
        "used_at": timestamp(row["used"]),
        "config": {
            "digest": str(image.config.digest),
            "created_at": config.get("created"),  # as the image states it (RFC 3339 by the OCI spec)
            "os": config.get("os"),
            "architecture": config.get("architecture"),
            "entrypoint": runtime.get("Entrypoint"),
            "cmd": runtime.get("Cmd"),
            "env": runtime.get("Env") or [],
            "working_dir": runtime.get("WorkingDir") or "",
            "labels": runtime.get("Labels") or {},
        },
        "layers": [
            {"digest": str(layer.digest), "size": layer.size, "media_type": layer.media_type} for layer in image.layers
        ],
    }


def raw(store: Store, ref: Reference, what: str) -> bytes:
    """The stored bytes of a cached ref's ``"manifest"`` (its own: the index for a multi-platform tag) or ``"config"``.

    Exactly as the registry served them, so they hash to their digest (`crane manifest`, `skopeo inspect --raw`).
    """
    record = record_of(store, ref)
    if what == "config":
        digest = inspect(store, ref)["config"]["digest"]
    else:
        digest = record.get("digest") if isinstance(record, dict) else None
    try:
        parsed = Digest.parse(digest) if isinstance(digest, str) else None
    except BadDigest:
        parsed = None
    if parsed is None:
        raise StoreError(f"the index record of {ref} is malformed", hint=f"run `cas rm {ref}`, then `cas pull {ref}`")
    return _read(store, record, ref, parsed, what)


def _listed_media_type(record: dict, digest: str) -> str | None:
    blobs = record.get("blobs")
    for blob in blobs if isinstance(blobs, list) else ():
        if isinstance(blob, dict) and blob.get("digest") == digest and isinstance(blob.get("media_type"), str):
            return blob["media_type"]
    return None


def _read(store: Store, record: dict, ref: Reference, digest: Digest, what: str) -> bytes:
    """A manifest or config the ref needs; NotCached when `cas verify --repair` (or anything else) removed it."""
    if not store.blobs.has(digest):
        raise _gone(record, ref, digest, what)
    try:
        return store.blobs.read(digest)
    except FileNotFoundError:  # removed between the check and the read (a prune)
        raise _gone(record, ref, digest, what) from None
    except OSError as exc:
        raise StoreError(f"cannot read the {what} {digest} of {ref}: {exc.strerror}", hint="run `cas verify`") from None


def _gone(record: dict, ref: Reference, digest: Digest, what: str) -> NotCached:
    why = "was removed by `cas verify --repair`" if record.get("needs_pull") else "is missing from the store"
    return NotCached(f"{ref} needs a pull: its {what} {digest} {why}", hint=f"run `cas pull {ref}`")


def remove_images(store: Store, texts: Iterable[str]) -> list[dict]:
    """``cas rm``: forget refs (all or none); their blobs go at the next prune."""
    from cas.reference import parse

    wanted: dict[str, str] = {}
    for text in texts:
        wanted.setdefault(str(parse(text)), text)
    with store.ballast.released():  # room for the index transaction on a full disk
        return _remove_refs(store, wanted)


def _remove_refs(store: Store, wanted: dict[str, str]) -> list[dict]:
    index = store.index
    removed = []
    with index.transact():
        records = {ref: index.get_ref(ref) for ref in wanted}
        unknown = [wanted[ref] for ref, record in records.items() if record is None]
        if unknown:
            raise NotCached(
                f"not in the cache: {', '.join(unknown)}",
                hint="`cas images` lists what is cached; nothing was removed",
            )
        for ref, record in records.items():
            index.remove_ref(ref)
            known = record if isinstance(record, dict) else {}  # a malformed record goes too
            removed.append({"ref": ref, "digest": known.get("digest"), "size": known.get("size")})
    store.write_layout_index()
    return removed
