"""What an export will write, and what it lacks, checked before its first byte.

``plan()`` reads the ref records and the stored manifests and configs, and
returns every blob the archive needs together with every reference it cannot
export as asked: never pulled, not cached for the platform wanted, missing
blobs, or a manifest or config whose bytes changed. ``confirm()`` then adds the
references whose other blobs changed after commit (the stat fingerprint check of
``cas.store.trust``), for the blobs the output will hold. The caller raises for
all of those (``ExportPlan.check``) or pulls exactly them (``export --pull``: a
pull downloads a changed blob again) and plans once more. Neither writes
anything, except ``confirm`` recording the new fingerprint of a re-hashed good file.

Platforms: a docker-archive holds one platform per reference (``--platform``,
else the only one cached, else the host's); an OCI layout holds every cached
platform of a reference under one generated index that names only what the
archive holds (or the one ``--platform`` picks).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cas import manifest as mf
from cas.digest import Digest, of_bytes
from cas.errors import ChangedBlobs, ManifestError, MissingBlobs, NotCached, UsageError
from cas.export.tarwriter import open_regular
from cas.manifest import Descriptor, Platform
from cas.records import RefRecord, default_platform, matching
from cas.reference import Reference
from cas.reference import parse as parse_reference
from cas.store import Store, trust
from cas.stored_manifest import changed_line, read_hashed, read_manifest


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
    asked: list[Reference] = field(default_factory=list)  # the references given that chose it (what a pull fetches)

    @property
    def ref(self) -> str:
        return self.record.ref

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        return (self.manifest, self.config, *self.layers)


@dataclass
class IndexPlan:
    """One reference exported with several platforms: an index, made for the archive, naming each."""

    names: list[Reference]
    images: list[ImagePlan]
    descriptor: Descriptor
    data: bytes


@dataclass
class Missing:
    """A reference the store cannot export as asked; ``--pull`` fetches exactly these."""

    reference: Reference
    platforms: tuple[Platform, ...]  # what a pull should fetch (none: the host's)
    cached: list[str] = field(default_factory=list)  # platforms it is cached for (none: never pulled)
    blobs: list[str] = field(default_factory=list)  # missing blobs, one line each
    changed: list[str] = field(default_factory=list)  # blobs changed after commit, one line each
    # neither blobs nor changed: the platform wanted is not cached


@dataclass
class ExportPlan:
    images: list[ImagePlan] = field(default_factory=list)
    indexes: list[IndexPlan] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    platform: Platform | None = None  # what was asked for (for messages)

    @property
    def blobs(self) -> list[Descriptor]:
        """Every blob from the store once, in first-use order (the generated indexes are not among them)."""
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

    def check(self, *, pulled: bool = False) -> None:
        """Raise for what is missing; after a ``--pull`` the hints no longer offer ``--pull``."""
        never = [str(m.reference) for m in self.missing if not m.cached]
        if never:
            also = "" if pulled else ", or export with --pull"
            raise NotCached.references(never, hint=f"run `cas pull {' '.join(never)}` first{also}")
        for m in self.missing:
            if not m.blobs and not m.changed:
                raise self._wrong_platform(m, pulled)
        absent = [m for m in self.missing if m.blobs]
        if absent:
            raise MissingBlobs(_lines(m.blobs for m in absent), _refs(absent), offer_pull=not pulled)
        changed = [m for m in self.missing if m.changed]
        if changed:
            raise ChangedBlobs(_lines(m.changed for m in changed), _refs(changed), pulled=pulled)

    def _wrong_platform(self, m: Missing, pulled: bool) -> NotCached:
        cached = ", ".join(m.cached)
        if self.platform is not None:
            what = f"{m.reference} is cached for {cached}, not {self.platform}"
            want = self.platform
        else:
            what = f"{m.reference} is cached for several platforms ({cached}), none of them this host's"
            want = Platform.host()
        also = f", or pick a cached one with --platform {m.cached[0]}" if pulled else ", or export with --pull"
        return NotCached(what, hint=f"run `cas pull --platform {want} {m.reference}`{also}")


def _lines(groups: Iterable[list[str]]) -> list[str]:
    """Each blob's line once (a reference named twice, or two references of one image)."""
    return list(dict.fromkeys(line for lines in groups for line in lines))


def _refs(missing: list[Missing]) -> list[str]:
    return list(dict.fromkeys(str(m.reference) for m in missing))


def plan(
    store: Store,
    references: Sequence[Reference],
    *,
    tag: Reference | None = None,
    platform: Platform | None = None,
    every_platform: bool = False,
) -> ExportPlan:
    """What to write for ``references``, and what is missing. ``every_platform``: OCI layouts."""
    if not references:
        raise UsageError("nothing to export", hint="name at least one image: cas export REF... -o FILE")
    if tag is not None and len({str(r) for r in references}) > 1:  # before any lookup (or --pull)
        raise UsageError(
            f"--tag renames one image, but {len(references)} references were given",
            hint="export the images one by one, or drop --tag",
        )
    if tag is not None and tag.tag is None:
        raise UsageError(f"--tag {tag} has no tag", hint="give a NAME:TAG, e.g. --tag myapp:1.0")

    result = ExportPlan(platform=platform)
    asked = (platform,) if platform is not None else ()
    by_manifest: dict[Digest, ImagePlan] = {}
    by_key: dict[str, tuple[ImagePlan | None, list[str]]] = {}  # record key -> its image, or its missing blobs
    by_set: dict[tuple[Digest, ...], IndexPlan] = {}
    for reference in references:
        records = lookup(store, reference)
        chosen = _choose(records, platform, every_platform)
        if not chosen:
            result.missing.append(Missing(reference, asked, [r.platform or "unknown" for r in records]))
            continue
        images, lines, changed = [], [], []
        for record in chosen:
            if record.key not in by_key:
                image, image_missing, image_changed = _plan_image(store, record)
                if image is not None:
                    kept = by_manifest.setdefault(image.manifest.digest, image)
                    if kept is not image:  # another record of the same manifest (app:1 and app:latest)
                        kept.aliases.append(record)
                    image = kept
                by_key[record.key] = image, image_missing, image_changed
            image, image_missing, image_changed = by_key[record.key]
            images.append(image)
            lines += image_missing
            changed += image_changed
        if lines or changed:
            again = tuple(Platform.parse(r.platform) for r in chosen if r.platform) if not asked else asked
            cached = [r.platform or "unknown" for r in records]
            result.missing.append(Missing(reference, again, cached, lines, changed))
            continue
        for image in images:
            image.asked.append(reference)
        name = tag if tag is not None else (reference if reference.tag is not None else None)
        name = Reference(name.registry, name.repository, name.tag) if name is not None else None  # no digest
        named = images[0] if len(images) == 1 else _index(by_set, images)
        if name is not None and name not in named.names:
            named.names.append(name)
    result.images = list(by_manifest.values())
    result.indexes = list(by_set.values())
    return result


def _choose(records: list[RefRecord], platform: Platform | None, every_platform: bool) -> list[RefRecord]:
    """The records to export: the platform asked for, or every one (OCI), or the default one (docker)."""
    if platform is not None:
        return matching(records, platform)[:1]
    if every_platform:
        return records
    default = default_platform(records)
    return [default] if default is not None else []


def _index(by_set: dict[tuple[Digest, ...], IndexPlan], images: list[ImagePlan]) -> IndexPlan:
    """The archive's index of these platforms (one per set: app:1 and app:latest share it)."""
    key = tuple(sorted({image.manifest.digest for image in images}))
    if key not in by_set:
        children = [
            Descriptor(i.manifest.media_type, i.manifest.digest, i.manifest.size, Platform.parse(i.platform))
            if i.platform
            else i.manifest
            for i in images
        ]
        data, media_type = mf.image_index(children)
        by_set[key] = IndexPlan([], images, Descriptor(media_type, of_bytes(data), len(data)), data)
    return by_set[key]


def lookup(store: Store, reference: Reference) -> list[RefRecord]:
    """The cached platforms of a reference: by its canonical name, else (name@digest) by digest."""
    records = store.metadata.ref_records(str(reference))
    if records or reference.digest is None:
        return records
    wanted = reference.digest
    by_digest = [
        r
        for r in store.metadata.refs(malformed=[])
        if wanted in (r.digest, r.manifest) and parse_reference(r.ref).name == reference.name
    ]
    return [r for r in by_digest if r.ref == by_digest[0].ref] if by_digest else []


def _plan_image(store: Store, record: RefRecord) -> tuple[ImagePlan | None, list[str], list[str]]:
    """The image a ref record describes, or its missing blobs and its changed manifest or config."""
    ref = record.ref
    entries = list(record.blobs)
    position = next(i for i, entry in enumerate(entries) if entry.digest == record.manifest)  # checked on read
    manifest_blob = entries[position]
    manifest_digest = record.manifest
    if not store.blobs.has(manifest_digest, manifest_blob.size):
        # Without the manifest the record's list ([index,] manifest, config, layers...) is all we know.
        config, *layers = entries[position + 1 :] or [None]
        return None, [f"{manifest_digest} (manifest of {ref})", *store.blobs.lacking(config, layers, ref)], []

    stored = read_manifest(store, manifest_digest, manifest_blob.media_type or None)
    assert stored is not None  # held at its size, just above
    if not stored.intact:
        return None, [], [changed_line(manifest_digest, f"manifest of {ref}", stored.actual)]
    manifest = Descriptor(stored.media_type, manifest_digest, manifest_blob.size)
    parsed = mf.parse(stored.data, stored.media_type)
    if not isinstance(parsed, mf.ImageManifest):
        raise ManifestError(
            f"the cached manifest {manifest_digest} of {ref} is an index, not an image manifest",
            hint=f"pull it again: cas pull {ref}",
        )
    config, layers = parsed.config, parsed.layers
    missing = store.blobs.lacking(config, layers, ref)
    if missing:
        return None, missing, []

    data, changed = read_checked(store, config.digest, mf.blob_place(0, len(layers), ref))
    if changed:
        return None, [], changed
    mf.check_rootfs(data, len(layers), ref)
    return ImagePlan(record, [], record.platform or "", manifest, config, layers), [], []


def read_checked(store: Store, digest: Digest, role: str) -> tuple[bytes, list[str]]:
    """A small blob an export reads (a config, a delta's index), and its line when its bytes no
    longer hash to its digest (see cas.stored_manifest)."""
    data, actual = read_hashed(store, digest)
    return data, [changed_line(digest, role, actual)] if actual != digest else []


def confirm(store: Store, checked: ExportPlan, written: set[Digest] | None = None) -> None:
    """The fingerprint check (see cas.store.trust), before the first byte: each planned image with a
    blob whose file changed after commit becomes ``Missing`` (its ``changed`` lines name digest,
    image and position), for the references that chose it. ``written``: only these blobs go into
    the output (a delta); None: all of the plan's. A symlink raises ``UnsafeSource``."""
    seen: set = set() if written is None else {b.digest for b in checked.blobs} - written
    for image in checked.images:
        layers = len(image.layers)
        places = [f"manifest of {image.ref}", *(mf.blob_place(n, layers, image.ref) for n in range(layers + 1))]
        changed = []
        for place, blob in zip(places, image.blobs, strict=True):
            if blob.digest in seen:
                continue
            seen.add(blob.digest)
            try:
                os.close(open_regular(store.blobs.path(blob.digest)))  # a symlink is UnsafeSource, never followed
                problem = trust.confirm(store, blob.digest, blob.size, blob.media_type)
            except OSError as exc:
                problem = f"cannot open: {exc.strerror}"
            if problem is not None:
                changed.append(f"{blob.digest} ({place}): {problem}")
        if changed and image.asked:  # not asked: its reference is missing already, and its pull fetches this too
            platforms = (Platform.parse(image.platform),) if image.platform else ()
            checked.missing.append(Missing(image.asked[0], platforms, [image.platform or "unknown"], changed=changed))
