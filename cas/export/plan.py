"""What an export will write, and the completeness check that runs before its first byte.

``plan()`` reads the ref records and the stored manifests and configs, and
returns every blob the archive needs, or raises NotCached / MissingBlobs naming
every image that was never pulled and every blob that is not in the store with
the right size. It reads the store and the index only; it writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cas import manifest as mf
from cas.digest import Digest, of_bytes
from cas.errors import BadDigest, ChangedBlobs, ManifestError, MissingBlobs, NotCached, UsageError
from cas.manifest import Descriptor, Platform
from cas.reference import Reference
from cas.reference import parse as parse_reference
from cas.store import Store


def member(digest: Digest) -> str:
    """A blob's name inside an OCI layout: ``blobs/sha256/<hex>`` (never a colon)."""
    return f"blobs/{digest.algorithm}/{digest.hex}"


@dataclass
class ImagePlan:
    """One image in the archive: one manifest, possibly under several names."""

    ref: str  # the canonical ref its record is stored under
    names: list[Reference]  # the names it gets in the archive (none for a digest-only ref)
    platform: str
    manifest: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]
    aliases: list[str] = field(default_factory=list)  # other ref records exported as this same image

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        return (self.manifest, self.config, *self.layers)


@dataclass
class ExportPlan:
    images: list[ImagePlan] = field(default_factory=list)

    @property
    def blobs(self) -> list[Descriptor]:
        """Every blob once, in first-use order."""
        seen: dict[Digest, Descriptor] = {}
        for image in self.images:
            for blob in image.blobs:
                seen.setdefault(blob.digest, blob)
        return list(seen.values())

    @property
    def refs(self) -> list[str]:
        """Every ref record exported (each image's own and its aliases): all of them were used."""
        return list(dict.fromkeys(ref for image in self.images for ref in (image.ref, *image.aliases)))


def plan(
    store: Store,
    references: Sequence[Reference],
    *,
    tag: Reference | None = None,
    platform: Platform | None = None,
) -> ExportPlan:
    """Check that every blob of every reference is in the store, and say what to write."""
    if not references:
        raise UsageError("nothing to export", hint="name at least one image: cas export REF... -o FILE")
    if tag is not None and len({str(r) for r in references}) > 1:  # before any lookup (or --pull)
        raise UsageError(
            f"--tag renames one image, but {len(references)} references were given",
            hint="export the images one by one, or drop --tag",
        )
    if tag is not None and tag.tag is None:
        raise UsageError(f"--tag {tag} has no tag", hint="give a NAME:TAG, e.g. --tag myapp:1.0")

    found: list[tuple[Reference, str, dict]] = []
    not_cached: list[str] = []
    for reference in references:
        hit = lookup(store, reference)
        if hit is None:
            not_cached.append(str(reference))
            continue
        ref, record = hit
        if platform is not None and not _is_for(platform, record.get("platform")):
            raise NotCached(
                f"{ref} is cached for {record.get('platform')}, not {platform}",
                hint=f"run `cas pull --platform {platform} {ref}` or export with --pull",
            )
        found.append((reference, ref, record))
    if not_cached:
        listed = " ".join(not_cached)
        raise NotCached(
            f"not in the cache: {', '.join(not_cached)}",
            hint=f"run `cas pull {listed}` first, or export with --pull",
        )

    by_manifest: dict[Digest, ImagePlan] = {}
    by_ref: dict[str, ImagePlan | None] = {}
    missing: list[str] = []
    for reference, ref, record in found:
        if ref not in by_ref:
            image, image_missing = _plan_image(store, ref, record)
            missing += image_missing
            if image is not None:
                kept = by_manifest.setdefault(image.manifest.digest, image)
                if kept is not image:  # another record of the same manifest (app:1 and app:latest)
                    kept.aliases.append(ref)
                image = kept
            by_ref[ref] = image
        image = by_ref[ref]
        name = tag if tag is not None else (reference if reference.tag is not None else None)
        if image is not None and name is not None:
            name = Reference(name.registry, name.repository, name.tag)  # a name in an archive has no digest
            if name not in image.names:
                image.names.append(name)
    if missing:
        raise MissingBlobs(missing, [ref for ref, image in by_ref.items() if image is None])

    return ExportPlan(list(by_manifest.values()))


def lookup(store: Store, reference: Reference) -> tuple[str, dict] | None:
    """The ref record for a reference: by its canonical name, else (name@digest) by digest."""
    ref = str(reference)
    record = store.index.get_ref(ref)
    if record is not None:
        return ref, record
    if reference.digest is None:
        return None
    wanted = str(reference.digest)
    for other, candidate in store.index.refs():
        if (
            wanted in (candidate.get("digest"), candidate.get("manifest"))
            and parse_reference(other).name == reference.name
        ):
            return other, candidate
    return None


def _plan_image(store: Store, ref: str, record: dict) -> tuple[ImagePlan | None, list[str]]:
    """The image a ref record describes, or the list of its missing blobs."""
    entries = list(_record_blobs(ref, record))
    manifest_digest = _digest(record.get("manifest"), ref, "manifest")
    position = next((i for i, entry in enumerate(entries) if entry.digest == manifest_digest), None)
    if position is None:
        raise ManifestError(
            f"the cache record of {ref} does not list its manifest {manifest_digest}",
            hint=f"pull it again: cas pull {ref}",
        )
    manifest_blob = entries[position]
    if not store.blobs.has(manifest_digest, manifest_blob.size):
        # Without the manifest the record's list ([index,] manifest, config, layers...) is all we know.
        config, *layers = entries[position + 1 :] or [None]
        missing = [f"{manifest_digest} (manifest of {ref})"]
        if config is not None and not store.blobs.has(config.digest, config.size):
            missing.append(f"{config.digest} (config of {ref})")
        for number, layer in enumerate(layers, 1):
            if not store.blobs.has(layer.digest, layer.size):
                missing.append(f"{layer.digest} (layer {number}/{len(layers)} of {ref})")
        return None, missing

    data = _read_checked(store, manifest_digest, f"manifest of {ref}", ref)
    media_type = mf.media_type_of(data, manifest_blob.media_type or None)
    manifest_blob = Descriptor(media_type, manifest_digest, manifest_blob.size)
    parsed = mf.parse(data, media_type)
    if not isinstance(parsed, mf.ImageManifest):
        raise ManifestError(
            f"the cached manifest {manifest_digest} of {ref} is an index, not an image manifest",
            hint=f"pull it again: cas pull {ref}",
        )
    config, layers = parsed.config, parsed.layers
    missing = []
    if not store.blobs.has(config.digest, config.size):
        missing.append(f"{config.digest} (config of {ref})")
    for position, layer in enumerate(layers, 1):
        if not store.blobs.has(layer.digest, layer.size):
            missing.append(f"{layer.digest} (layer {position}/{len(layers)} of {ref})")
    if missing:
        return None, missing

    mf.check_rootfs(_read_checked(store, config.digest, f"config of {ref}", ref), len(layers), ref)
    return ImagePlan(ref, [], str(record.get("platform") or ""), manifest_blob, config, layers), []


def _read_checked(store: Store, digest: Digest, role: str, ref: str) -> bytes:
    """A manifest or config the plan reads: small, so its bytes are checked against its digest
    (a changed one would otherwise be parsed, and name blobs that never existed)."""
    data = store.blobs.read(digest)
    actual = of_bytes(data, digest.algorithm)
    if actual != digest:
        raise ChangedBlobs([f"{digest} ({role}): content hashes to {actual}"], [ref])
    return data


def _is_for(wanted: Platform, cached: object) -> bool:
    try:
        return isinstance(cached, str) and wanted.matches(Platform.parse(cached))
    except ManifestError:
        return False


def _record_blobs(ref: str, record: dict) -> Iterable[Descriptor]:
    entries = record.get("blobs")
    if not isinstance(entries, list):
        raise ManifestError(f"the cache record of {ref} is broken: no blob list", hint=f"pull it again: cas pull {ref}")
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("size"), int):
            raise ManifestError(
                f"the cache record of {ref} is broken: bad blob entry", hint=f"pull it again: cas pull {ref}"
            )
        yield Descriptor(str(entry.get("media_type") or ""), _digest(entry.get("digest"), ref, "blob"), entry["size"])


def _digest(text: object, ref: str, what: str) -> Digest:
    try:
        return Digest.parse(text)
    except BadDigest as exc:
        raise ManifestError(
            f"the cache record of {ref} has a bad {what} digest: {exc.message}", hint=f"pull it again: cas pull {ref}"
        ) from exc
