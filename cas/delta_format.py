"""The description at the head of a delta archive (``cas-delta.json``, format 1). Pure.

A delta carries an image's manifests and configs, and only the layers none of its
bases holds; it names every blob it carries and every blob it ``requires`` the
receiving store to hold already, with the base each came from. The sender
(``cas.export.delta``) writes it as the first member, so the receiver
(``cas.importer``) can refuse the whole archive before writing anything.

    {"format": 1,
     "images": [{"ref", "digest", "manifest", "media_type", "platform"}],
     "blobs": [{"digest", "size"}],
     "requires": [{"digest", "size", "from"}]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from cas.digest import Digest
from cas.errors import ArchiveError, BadDigest
from cas.manifest import MANIFEST_TYPES

NAME = "cas-delta.json"
FORMAT = 1
MAX_SIZE = 64 << 20


@dataclass(frozen=True)
class DeltaImage:
    ref: str | None  # the canonical name the receiver records it under (None: digest only)
    digest: Digest  # what the sender's ref resolved to
    manifest: Digest
    media_type: str
    platform: str | None


@dataclass(frozen=True)
class Required:
    digest: Digest
    size: int
    base: str  # the base image (or inventory entry) that holds it


@dataclass
class DeltaDescription:
    images: list[DeltaImage] = field(default_factory=list)
    blobs: dict[Digest, int] = field(default_factory=dict)  # carried: digest -> size
    requires: list[Required] = field(default_factory=list)

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "images": [
                {
                    "ref": image.ref,
                    "digest": str(image.digest),
                    "manifest": str(image.manifest),
                    "media_type": image.media_type,
                    "platform": image.platform,
                }
                for image in self.images
            ],
            "blobs": [{"digest": str(d), "size": size} for d, size in self.blobs.items()],
            "requires": [{"digest": str(r.digest), "size": r.size, "from": r.base} for r in self.requires],
        }
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def parse(cls, data: bytes) -> DeltaDescription:
        """Validate every field (each digest through ``Digest.parse``); ArchiveError on anything else."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad(f"not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else None
            raise ArchiveError(
                f"{NAME}: unsupported delta format {got!r} (this cas reads format {FORMAT})",
                hint="update cas on this side, or ask the sender for a full archive",
            )
        out = cls()
        for entry in _list(doc, "images"):
            media_type = entry.get("media_type")
            if media_type not in MANIFEST_TYPES:
                raise _bad(f"image media type {media_type!r} is not an image manifest")
            ref, platform = entry.get("ref"), entry.get("platform")
            out.images.append(
                DeltaImage(
                    ref if isinstance(ref, str) else None,
                    _digest(entry.get("digest")),
                    _digest(entry.get("manifest")),
                    media_type,
                    platform if isinstance(platform, str) else None,
                )
            )
        for entry in _list(doc, "blobs"):
            out.blobs[_digest(entry.get("digest"))] = _size(entry.get("size"))
        for entry in _list(doc, "requires"):
            base = entry.get("from")
            out.requires.append(
                Required(_digest(entry.get("digest")), _size(entry.get("size")), base if isinstance(base, str) else "?")
            )
        if not out.images:
            raise _bad("it names no image")
        return out


def _list(doc: dict, key: str) -> list[dict]:
    value = doc.get(key)
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise _bad(f"{key!r} is not a list of objects")
    return value


def _digest(text: object) -> Digest:
    try:
        return Digest.parse(text)
    except BadDigest as exc:
        raise _bad(exc.message) from None


def _size(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad(f"bad size {value!r}")
    return value


def _bad(why: str) -> ArchiveError:
    return ArchiveError(f"{NAME} is malformed: {why}")
