"""What the store holds, per reference: listing and inspection, read from the store only."""

from __future__ import annotations

import json
from collections.abc import Iterable

from cas import manifest as mf
from cas.digest import Digest
from cas.errors import CasError, NotCached, StoreError
from cas.jsonout import timestamp
from cas.manifest import Platform
from cas.records import RefRecord, choose, matching, ref_of_key
from cas.reference import Reference, parse
from cas.store import Store


def record_of(store: Store, ref: Reference, platform: Platform | None = None) -> RefRecord:
    """The record of ``ref`` for ``platform``; without one, the only cached platform, else the host's."""
    records = store.metadata.ref_records(str(ref))
    if not records:
        siblings = sorted({r.ref for r in store.metadata.refs([]) if _repository(r.ref) == ref.name})
        hint = f"cached of {ref.name}: {', '.join(siblings)}; or " if siblings else ""
        raise NotCached.references([str(ref)], hint=f"{hint}run `cas pull {ref}` first")
    return choose(str(ref), records, platform)


def _repository(text: str) -> str | None:
    """A recorded reference's registry/repository (None if it no longer parses)."""
    try:
        return parse(text).name
    except CasError:
        return None


def list_images(store: Store, skipped: list[str] | None = None) -> list[dict]:
    """One row per cached (ref, platform); a malformed record is left out (its key's ref added to ``skipped``)."""
    malformed: list[str] = []
    rows = [_row(record) for record in store.metadata.refs(malformed=malformed)]
    if skipped is not None:
        skipped += [ref_of_key(key) for key in malformed]
    return sorted(rows, key=lambda row: (row["ref"], row["platform"] or ""))


def _row(record: RefRecord) -> dict:
    return {
        "ref": record.ref,
        "digest": str(record.digest),
        "manifest": str(record.manifest),
        "platform": record.platform,
        "size": record.size,
        "pulled": record.pulled,
        "used": record.used,
        "needs_pull": record.needs_pull,  # set by `cas verify --repair`
    }


def inspect(store: Store, ref: Reference, platform: Platform | None = None) -> dict:
    """The ref record plus a summary of its manifest and config."""
    record = record_of(store, ref, platform)
    media_type = record.entry(record.manifest).media_type  # listed: checked when the record was read
    image = mf.parse(_read(store, record, ref, record.manifest, "manifest"), media_type)
    if not isinstance(image, mf.ImageManifest):
        raise StoreError(f"the manifest {record.manifest} of {ref} is not an image manifest", hint="run `cas verify`")
    try:
        config = json.loads(_read(store, record, ref, image.config.digest, "config"))
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        config = None
    if not isinstance(config, dict):
        raise StoreError(f"the config {image.config.digest} of {ref} is not a JSON object", hint="run `cas verify`")
    return {
        "ref": record.ref,
        "digest": str(record.digest),
        "manifest": str(record.manifest),
        "media_type": media_type,
        "platform": record.platform,
        "size": record.size,
        "pulled_at": timestamp(record.pulled),
        "used_at": timestamp(record.used),
        **describe(image, config),
    }


def describe(image: mf.ImageManifest, config: dict) -> dict:
    """An image's config and layers as inspect shows them, local (the store) or remote (cas.remote)."""
    runtime = config.get("config") or {}
    return {
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


def raw(store: Store, ref: Reference, what: str, platform: Platform | None = None) -> bytes:
    """The stored bytes of a cached ref's ``"manifest"`` (its own: the index for a multi-platform tag) or ``"config"``.

    Exactly as the registry served them, so they hash to their digest (`crane manifest`, `skopeo inspect --raw`).
    """
    record = record_of(store, ref, platform)
    if what == "config":
        return _read(store, record, ref, Digest.parse(inspect(store, ref, platform)["config"]["digest"]), what)
    return _read(store, record, ref, record.digest, what)


def _read(store: Store, record: RefRecord, ref: Reference, digest: Digest, what: str) -> bytes:
    """A manifest or config the ref needs; NotCached when `cas verify --repair` (or anything else) removed it."""
    if not store.blobs.has(digest):
        raise _gone(record, ref, digest, what)
    try:
        return store.blobs.read(digest)
    except FileNotFoundError:  # removed between the check and the read (a prune)
        raise _gone(record, ref, digest, what) from None
    except OSError as exc:
        raise StoreError(f"cannot read the {what} {digest} of {ref}: {exc.strerror}", hint="run `cas verify`") from None


def _gone(record: RefRecord, ref: Reference, digest: Digest, what: str) -> NotCached:
    why = "was removed by `cas verify --repair`" if record.needs_pull else "is missing from the store"
    return NotCached(f"{ref} needs a pull: its {what} {digest} {why}", hint=f"run `cas pull {ref}`")


def remove_images(store: Store, texts: Iterable[str], platform: Platform | None = None) -> list[dict]:
    """``cas rm``: forget refs, every cached platform of each or only ``platform`` (all or none);
    their blobs go at the next prune."""
    wanted: dict[str, str] = {}
    for text in texts:
        wanted.setdefault(str(parse(text)), text)
    with store.ballast.released():  # room for the index transaction on a full disk
        return _remove_refs(store, wanted, platform)


def _remove_refs(store: Store, wanted: dict[str, str], platform: Platform | None) -> list[dict]:
    index = store.metadata
    removed = []
    with index.transact():
        malformed: list[str] = []
        cached = [r for r in index.refs(malformed) if r.ref in wanted]
        records = cached if platform is None else matching(cached, platform)
        damaged = [key for key in malformed if ref_of_key(key) in wanted and platform is None]  # those go too
        found = {r.ref for r in records} | {ref_of_key(key) for key in damaged}
        unknown = [text for ref, text in wanted.items() if ref not in found]
        if unknown:
            listed = ", ".join(f"{r.ref} ({r.platform})" for r in cached if r.ref not in found)
            raise NotCached.references(
                unknown,
                hint=(f"cached: {listed}; " if listed else "`cas images` lists what is cached; ")
                + "nothing was removed",
                platform=platform,
            )
        for record in records:
            index.remove_ref(record)
            removed.append(
                {"ref": record.ref, "platform": record.platform, "digest": str(record.digest), "size": record.size}
            )
        for key in damaged:
            index.discard(key)
            removed.append({"ref": ref_of_key(key), "platform": None, "digest": None, "size": None})
    store.write_layout_index()
    return sorted(removed, key=lambda row: (row["ref"], row["platform"] or ""))
