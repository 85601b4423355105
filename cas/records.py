"""The index's records: a reference cached for one platform (``RefRecord``) and a blob (``BlobRecord``).

One class reads, validates and writes a ref record; nothing else touches the JSON. A record
read from the index is validated once, in ``RefRecord.from_json``: a damaged one
raises ``StoreError`` there (callers that list many records report it as
malformed instead), so every other module can trust the fields' types.

Keys: a reference can be cached for several platforms, so each (canonical
reference, platform) pair has its own key, ``ref:<canonical ref>|<platform>``
(``|`` appears in neither a reference nor a platform). Stores written before
platforms held one record per reference under ``ref:<canonical ref>``; the index
moves those to their platform's key once, when it opens such a store
(``cas.metadata``); ``legacy_key`` and ``is_legacy`` serve that move alone. Beside its
records, a reference has ``platforms:<canonical ref>``, the list of the platforms it is cached
for: the secondary key that finds one reference's records without scanning the index.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Required, TypedDict, cast

from cas.digest import Digest
from cas.errors import BadDigest, ManifestError, NotCached, StoreError
from cas.manifest import Platform

PREFIX = "ref:"
SEPARATOR = "|"
PLATFORMS = "platforms:"


def key_of(ref: str, platform: str | None) -> str:
    """The index key of one reference's record for one platform."""
    return f"{PREFIX}{ref}{SEPARATOR}{platform or ''}"


def platforms_key(ref: str) -> str:
    """The key of the list of platforms ``ref`` is cached for (``""`` for a record with none)."""
    return f"{PLATFORMS}{ref}"


def split_key(key: str) -> tuple[str, str]:
    """``(reference, platform)`` of a ``ref:`` key; the platform is ``""`` for a legacy key."""
    ref, _, platform = key[len(PREFIX) :].partition(SEPARATOR)
    return ref, platform


def legacy_key(ref: str) -> str:
    """The key written before platforms (one record per reference)."""
    return f"{PREFIX}{ref}"


def is_legacy(key: str) -> bool:
    return key.startswith(PREFIX) and SEPARATOR not in key


def ref_of_key(key: str) -> str:
    """The reference part of a ``ref:`` key, new or legacy."""
    return split_key(key)[0]


@dataclass(frozen=True)
class BlobEntry:
    """One blob a record needs: the descriptor fields the store and the exporters use."""

    digest: Digest
    size: int
    media_type: str

    def to_json(self) -> dict:
        return {"digest": str(self.digest), "size": self.size, "media_type": self.media_type}

    @classmethod
    def from_json(cls, obj: object) -> BlobEntry:
        if not isinstance(obj, dict) or not _is_int(obj.get("size")) or obj["size"] < 0:
            raise ValueError("bad blob entry")
        media_type = obj.get("media_type")
        return cls(Digest.parse(obj.get("digest")), obj["size"], media_type if isinstance(media_type, str) else "")


class BlobRecord(TypedDict, total=False):
    """What the index knows about one committed blob (``blob:<alg>:<hex>``): read through
    ``blob_record``, which validates it once, so readers can trust these types."""

    size: Required[int]
    media_type: Required[str]  # "" until an image names it (see cas.blobtypes)
    blake3: str  # the file's blake3 at commit: the fingerprint verify checks
    added: float
    used: float
    stat: dict[str, int]  # the file's stat fingerprint at commit (see cas.store.trust)


def blob_record(value: object) -> BlobRecord | None:
    """A stored blob record, validated; None when it is damaged (``cas verify`` reports those)."""
    if not isinstance(value, dict) or not _is_int(value.get("size")) or value["size"] < 0:
        return None
    if not isinstance(value.get("media_type"), str):
        return None
    if any(name in value and not isinstance(value[name], kind) for name, kind in (("blake3", str), ("stat", dict))):
        return None
    return cast(BlobRecord, value)


@dataclass(frozen=True)
class RefRecord:
    """One reference cached for one platform; written by ``cas.pull`` once every blob is committed."""

    ref: str  # canonical: str(cas.reference.parse(text))
    registry: str
    digest: Digest  # what the reference resolved to: an index (multi-platform tag) or a manifest
    media_type: str  # media type of that top-level object
    manifest: Digest  # the image manifest for this platform (== digest when not an index)
    config: Digest
    platform: str | None  # "linux/arm64/v8": from the index entry, else from the config
    blobs: tuple[BlobEntry, ...]  # [index,] [OCI view,] manifest, config, layers...
    pulled: float  # unix time of the last pull
    used: float  # unix time of the last pull or export (LRU for prune)
    layout_manifest: Digest | None = None  # a Docker manifest's OCI view, listed in index.json
    needs_pull: bool = False  # set by `cas verify --repair` when a blob it lists was removed

    @property
    def key(self) -> str:
        return key_of(self.ref, self.platform)

    @property
    def name(self) -> str:
        """The reference and its platform, as messages show them: ``app:1.0 (linux/amd64)``."""
        return f"{self.ref} ({self.platform or 'unknown platform'})"

    @property
    def listed(self) -> Digest:
        """What the store's index.json lists for this record: the manifest, or its OCI view."""
        return self.layout_manifest or self.manifest

    @property
    def unique_blobs(self) -> dict[Digest, BlobEntry]:
        """Every blob once (a layer may repeat), in record order."""
        seen: dict[Digest, BlobEntry] = {}
        for blob in self.blobs:
            seen.setdefault(blob.digest, blob)
        return seen

    @property
    def size(self) -> int:
        """Bytes of every blob this record needs, each counted once."""
        return sum(blob.size for blob in self.unique_blobs.values())

    def entry(self, digest: Digest) -> BlobEntry | None:
        return next((blob for blob in self.blobs if blob.digest == digest), None)

    def replace(self, **changes: object) -> RefRecord:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        out: dict = {
            "ref": self.ref,
            "registry": self.registry,
            "digest": str(self.digest),
            "media_type": self.media_type,
            "manifest": str(self.manifest),
            "config": str(self.config),
            "platform": self.platform,
            "layout_manifest": str(self.layout_manifest) if self.layout_manifest else None,
            "blobs": [blob.to_json() for blob in self.blobs],
            "size": self.size,
            "pulled": self.pulled,
            "used": self.used,
        }
        if self.needs_pull:
            out["needs_pull"] = True
        return out

    @classmethod
    def from_json(cls, obj: object, key: str | None = None) -> RefRecord:
        """Validate a stored record; ``StoreError`` naming the key when it is damaged."""
        where = f"of {ref_of_key(key)}" if key else "of a reference"
        try:
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            ref, registry, media_type = obj.get("ref"), obj.get("registry"), obj.get("media_type")
            platform, pulled = obj.get("platform"), obj.get("pulled")
            if not (isinstance(ref, str) and ref and isinstance(registry, str) and isinstance(media_type, str)):
                raise ValueError("no ref, registry or media type")
            if platform is not None and (not isinstance(platform, str) or SEPARATOR in platform):
                raise ValueError("bad platform")
            if not _is_number(pulled):
                raise ValueError("no pull time")
            used = obj.get("used", pulled)
            blobs = obj.get("blobs")
            if not isinstance(blobs, list):
                raise ValueError("no blob list")
            layout = obj.get("layout_manifest")
            record = cls(
                ref=ref,
                registry=registry,
                digest=Digest.parse(obj.get("digest")),
                media_type=media_type,
                manifest=Digest.parse(obj.get("manifest")),
                config=Digest.parse(obj.get("config")),
                platform=platform,
                blobs=tuple(BlobEntry.from_json(blob) for blob in blobs),
                pulled=float(pulled),
                used=float(used) if _is_number(used) else float(pulled),
                layout_manifest=Digest.parse(layout) if layout is not None else None,
                needs_pull=obj.get("needs_pull") is True,
            )
        except (ValueError, BadDigest) as exc:
            detail = exc.message if isinstance(exc, BadDigest) else str(exc)
            raise StoreError(f"the index record {where} is malformed: {detail}", hint=_hint(key)) from None
        if record.entry(record.manifest) is None:
            raise StoreError(f"the index record {where} is malformed: it does not list its manifest", hint=_hint(key))
        if key is not None and key != record.key and not (is_legacy(key) and key == legacy_key(record.ref)):
            raise StoreError(f"the index record {where} is malformed: it names {record.name}", hint=_hint(key))
        return record


def choose(ref: str, records: list[RefRecord], platform: Platform | None) -> RefRecord:
    """One platform of a reference; NotCached naming what is cached when none (or no single one) fits."""
    if not records:
        raise NotCached.references([ref], hint=f"run `cas pull {ref}` first")
    cached = ", ".join(r.platform or "unknown" for r in records)
    if platform is not None:
        fits = matching(records, platform)
        if not fits:
            raise NotCached(
                f"{ref} is cached for {cached}, not {platform}", hint=f"run `cas pull --platform {platform} {ref}`"
            )
        return fits[0]
    default = default_platform(records)
    if default is None:
        raise NotCached(
            f"{ref} is cached for several platforms ({cached}), none of them this host's ({Platform.host()})",
            hint=f"pick one with --platform, e.g. --platform {records[0].platform}",
        )
    return default


def matching(records: list[RefRecord], platform: Platform) -> list[RefRecord]:
    """The records for ``platform`` (a missing variant accepts any)."""
    return [r for r in records if platform_matches(platform, r.platform)]


def default_platform(records: list[RefRecord]) -> RefRecord | None:
    """Without --platform: the only platform cached, else the host's; None when neither exists."""
    if len(records) == 1:
        return records[0]
    return next(iter(matching(records, Platform.host())), None)


def platform_matches(wanted: Platform, cached: str | None) -> bool:
    """Whether a record's platform is what the user asked for (a missing variant accepts any)."""
    try:
        return cached is not None and wanted.matches(Platform.parse(cached))
    except ManifestError:
        return False


def read_all(entries: Iterable[tuple[str, object]], malformed: list[str] | None = None) -> Iterator[RefRecord]:
    """Records from ``(key, value)`` index entries; a damaged one raises StoreError, or goes to ``malformed``
    (as does a key that names no platform: a pre-platform record the index could not move)."""
    for key, value in entries:
        try:
            record = RefRecord.from_json(value, key)
            if is_legacy(key):
                where = ref_of_key(key)
                raise StoreError(
                    f"the index record of {where} is malformed: its key names no platform", hint=_hint(key)
                )
            yield record
        except StoreError:
            if malformed is None:
                raise
            malformed.append(key)


def _hint(key: str | None) -> str:
    ref = ref_of_key(key) if key else "REF"
    return f"run `cas rm {ref}`, then `cas pull {ref}`"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
