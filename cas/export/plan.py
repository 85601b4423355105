"""What an export will write, and the completeness check that runs before its first byte.

``plan()`` reads the ref records and the stored manifests and configs, and
returns every blob the archive needs, or raises NotCached / MissingBlobs naming
every image that was never pulled and every blob that is not in the store with
the right size. It reads the store and the index only; it writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cas import manifest as mf
from cas.digest import Digest, of_bytes
from cas.errors import ChangedBlobs, ManifestError, MissingBlobs, NotCached, UsageError
from cas.manifest import Descriptor, Platform
from cas.records import RefRecord, choose
from cas.reference import Reference
from cas.reference import parse as parse_reference
from cas.store import Store


def member(digest: Digest) -> str:
    """A blob's name inside an OCI layout: ``blobs/sha256/<hex>`` (never a colon)."""
    return f"blobs/{digest.algorithm}/{digest.hex}"


@dataclass
class ImagePlan:
    """One image in the archive: one manifest, possibly under several names."""

    record: RefRecord  # the ref record it comes from
    names: list[Reference]  # the names it gets in the archive (none for a digest-only ref)
    platform: str
    manifest: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]
    aliases: list[RefRecord] = field(default_factory=list)  # other ref records exported as this same image

    @property
    def ref(self) -> str:
        return self.record.ref

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
    def records(self) -> list[RefRecord]:
        """Every ref record exported (each image's own and its aliases): all of them were used."""
        found = {r.key: r for image in self.images for r in (image.record, *image.aliases)}
        return list(found.values())


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

    found: list[tuple[Reference, RefRecord]] = []
    not_cached: list[str] = []
    for reference in references:
        records = lookup(store, reference)
        if not records:
            not_cached.append(str(reference))
            continue
        found.append((reference, choose(records[0].ref, records, platform, also=", or export with --pull")))
    if not_cached:
        listed = " ".join(not_cached)
        raise NotCached(
            f"not in the cache: {', '.join(not_cached)}",
            hint=f"run `cas pull {listed}` first, or export with --pull",
        )

    by_manifest: dict[Digest, ImagePlan] = {}
    by_key: dict[str, ImagePlan | None] = {}
    missing: list[str] = []
    for reference, record in found:
        if record.key not in by_key:
            image, image_missing = _plan_image(store, record)
            missing += image_missing
            if image is not None:
                kept = by_manifest.setdefault(image.manifest.digest, image)
                if kept is not image:  # another record of the same manifest (app:1 and app:latest)
                    kept.aliases.append(record)
                image = kept
            by_key[record.key] = image
        image = by_key[record.key]
        name = tag if tag is not None else (reference if reference.tag is not None else None)
        if image is not None and name is not None:
            name = Reference(name.registry, name.repository, name.tag)  # a name in an archive has no digest
            if name not in image.names:
                image.names.append(name)
    if missing:
        raise MissingBlobs(missing, list(dict.fromkeys(r.ref for _, r in found if by_key[r.key] is None)))

    return ExportPlan(list(by_manifest.values()))


def lookup(store: Store, reference: Reference) -> list[RefRecord]:
    """The cached platforms of a reference: by its canonical name, else (name@digest) by digest."""
    records = store.index.ref_records(str(reference))
    if records or reference.digest is None:
        return records
    wanted = reference.digest
    by_digest = [
        r
        for r in store.index.refs(malformed=[])
        if wanted in (r.digest, r.manifest) and parse_reference(r.ref).name == reference.name
    ]
    return [r for r in by_digest if r.ref == by_digest[0].ref] if by_digest else []


def _plan_image(store: Store, record: RefRecord) -> tuple[ImagePlan | None, list[str]]:
    """The image a ref record describes, or the list of its missing blobs."""
    ref = record.ref
    entries = list(record.blobs)
    position = next(i for i, entry in enumerate(entries) if entry.digest == record.manifest)  # checked on read
    manifest_blob = entries[position]
    manifest_digest = record.manifest
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
    manifest = Descriptor(media_type, manifest_digest, manifest_blob.size)
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
    for number, layer in enumerate(layers, 1):
        if not store.blobs.has(layer.digest, layer.size):
            missing.append(f"{layer.digest} (layer {number}/{len(layers)} of {ref})")
    if missing:
        return None, missing

    mf.check_rootfs(_read_checked(store, config.digest, f"config of {ref}", ref), len(layers), ref)
    return ImagePlan(record, [], record.platform or "", manifest, config, layers), []


def _read_checked(store: Store, digest: Digest, role: str, ref: str) -> bytes:
    """A manifest or config the plan reads: small, so its bytes are checked against its digest
    (a changed one would otherwise be parsed, and name blobs that never existed)."""
    data = store.blobs.read(digest)
    actual = of_bytes(data, digest.algorithm)
    if actual != digest:
        raise ChangedBlobs([f"{digest} ({role}): content hashes to {actual}"], [ref])
    return data
