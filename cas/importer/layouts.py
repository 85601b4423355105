"""What the members of an archive mean: the images it holds, their names, and what is missing.

Runs once the whole archive has been received (a legacy ``docker save`` writes its
``manifest.json`` last). Three layouts:

- OCI (``index.json``): an oci-archive, an OCI layout directory, the docker-archive of
  Docker 25+ and of ``cas export``. The manifests are the archive's own, so their
  digests are the registry's. Names come from ``io.containerd.image.name``, a
  ``org.opencontainers.image.ref.name`` that is a full name, and the ``RepoTags`` of
  the ``manifest.json`` entry with the same config.
- legacy docker-archive (``manifest.json`` only: dockerd before 25, skopeo): layers are
  uncompressed tars whose digests were computed while reading. cas builds an OCI
  manifest for them (``built``): a valid image, but not the registry's manifest digest.
- delta (``cas-delta.json``): the images it describes.

Every blob an image needs must now be in the store with the right size: what the
archive carried was committed as it arrived, the rest must have been there before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from cas import manifest as mf
from cas.delta_format import DeltaImage
from cas.digest import Digest, of_bytes
from cas.errors import ArchiveError, BadReference, CasError
from cas.importer.receive import Received
from cas.manifest import Descriptor, ImageIndex, ImageManifest, Platform
from cas.reference import Reference
from cas.reference import parse as parse_reference
from cas.store import REF_NAME, Store

_LAYER_TYPES = {  # a legacy layer's media type, by its first bytes
    b"\x1f\x8b": mf.OCI_LAYER_GZIP,
    b"\x28\xb5\x2f\xfd": mf.OCI_LAYER_ZSTD,
}


@dataclass
class ImageSource:
    """One image found in the archive."""

    manifest: Descriptor
    image: ImageManifest
    names: list[Reference] = field(default_factory=list)
    platform: str | None = None
    built: bytes | None = None  # the manifest cas built for a legacy image (not yet committed)
    config: bytes | None = None  # a legacy config held in memory (not yet committed)
    top: tuple[Digest, str] | None = None  # the index it was found under (its names resolve to that)

    @property
    def label(self) -> str:
        return self.names[0].familiar if self.names else str(self.manifest.digest)


def find_images(received: Received, store: Store, fmt: str | None) -> tuple[str, list[ImageSource], list[str]]:
    """(the layout, its images, one line per missing blob); ArchiveError when it is no image archive."""
    if received.delta is not None:
        layout, images, missing = "delta", _delta_images(received, store), []
    else:
        layout, images, missing = _image_archive(received, store, fmt)
    for image in images:
        built = image.config is not None  # a built manifest's config is in memory, stored with it
        missing += store.blobs.lacking(None if built else image.image.config, image.image.layers, image.label)
    return layout, images, missing


def _image_archive(received: Received, store: Store, fmt: str | None) -> tuple[str, list[ImageSource], list[str]]:
    meta = received.metadata
    if fmt == "docker-archive" and "manifest.json" not in meta:
        raise ArchiveError("not a docker-archive: it has no manifest.json", hint="try --format oci-archive")
    if fmt in ("oci-archive", "oci-dir") and "index.json" not in meta:
        raise ArchiveError(f"not an {fmt}: it has no index.json", hint="try --format docker-archive")
    legacy = _legacy_entries(meta["manifest.json"]) if "manifest.json" in meta else None
    if "index.json" in meta:
        layout = "docker-archive" if legacy is not None else (fmt or "oci-archive")
        images, missing = _oci_images(received, store, legacy or [])
    elif legacy is not None:
        layout = "docker-archive (legacy)"
        images, missing = _legacy_images(received, store, legacy)
    else:
        raise ArchiveError(
            "not an image archive: no index.json, manifest.json or cas-delta.json",
            hint="cas imports docker-archive (docker save), oci-archive and OCI layout directories",
        )
    return layout, images, missing


# --- OCI layouts -----------------------------------------------------------------------------
def _oci_images(received: Received, store: Store, legacy: list[dict]) -> tuple[list[ImageSource], list[str]]:
    index = _json(received.metadata["index.json"], "index.json")
    entries = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(entries, list):
        raise ArchiveError("index.json is malformed: 'manifests' is not a list")
    tags_by_config = {entry["Config"]: entry["RepoTags"] for entry in legacy}
    images: dict[Digest, ImageSource] = {}
    missing: list[str] = []
    for position, entry in enumerate(entries, 1):
        desc = _descriptor(entry, f"index.json manifests[{position - 1}]")
        names = _names_of(desc.annotations)
        for source in _resolve(store, desc, names, missing, f"entry {position} of index.json"):
            kept = images.setdefault(source.manifest.digest, source)
            config_member = f"blobs/{source.image.config.digest.algorithm}/{source.image.config.digest.hex}"
            for name in [*source.names, *_parse_names(tags_by_config.get(config_member, []))]:
                if name not in kept.names:
                    kept.names.append(name)
    return list(images.values()), missing


def _resolve(
    store: Store, desc: Descriptor, names: list[Reference], missing: list[str], where: str
) -> list[ImageSource]:
    """The image manifests an index.json entry leads to: itself, or each platform of an index that
    came along (an archive may carry only some of an index's platforms, as a pull caches one)."""
    if not store.blobs.has(desc.digest, desc.size):
        label = names[0].familiar if names else where
        missing.append(f"{desc.digest} (manifest of {label})")
        return []
    data = store.blobs.read(desc.digest)
    media_type = mf.media_type_of(data, desc.media_type or None)
    parsed = _parse_manifest(data, media_type, desc.digest)
    if isinstance(parsed, ImageManifest):
        platform = str(desc.platform) if desc.platform is not None else None
        return [ImageSource(Descriptor(media_type, desc.digest, desc.size), parsed, list(names), platform)]
    present = [child for child in parsed.manifests if store.blobs.has(child.digest, child.size)]
    if not present:  # none of its platforms came along: name the host's, or the first
        host = next((c for c in parsed.manifests if c.platform and Platform.host().matches(c.platform)), None)
        child = host or (parsed.manifests[0] if parsed.manifests else None)
        if child is not None:
            missing.append(f"{child.digest} (manifest for {child.platform} of {names[0].familiar if names else where})")
        return []
    sources = []
    host_last = sorted(present, key=lambda c: c.platform is not None and Platform.host().matches(c.platform))
    for child in host_last:
        for source in _resolve(store, child, names, missing, where):
            source.top = source.top or (desc.digest, media_type)
            sources.append(source)
    return sources


def _names_of(annotations: dict[str, str]) -> list[Reference]:
    """A full name from io.containerd.image.name, else a ref.name that is one (not a bare tag)."""
    for key in (mf.CONTAINERD_NAME, REF_NAME):
        value = annotations.get(key)
        if isinstance(value, str) and ("/" in value or ":" in value):
            names = _parse_names([value])
            if names:
                return names
    return []


# --- legacy docker-archive -------------------------------------------------------------------
def _legacy_entries(data: bytes) -> list[dict]:
    doc = _json(data, "manifest.json")
    if not isinstance(doc, list):
        raise ArchiveError("manifest.json is malformed: not a list")
    entries = []
    for position, entry in enumerate(doc):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("Config"), str)
            and isinstance(entry.get("Layers"), list)
            and all(isinstance(layer, str) for layer in entry["Layers"])
        ):
            raise ArchiveError(f"manifest.json is malformed: entry {position} has no Config and Layers")
        tags = entry.get("RepoTags")
        entries.append({"Config": entry["Config"], "Layers": entry["Layers"], "RepoTags": _strings(tags)})
    return entries


def _legacy_images(received: Received, store: Store, entries: list[dict]) -> tuple[list[ImageSource], list[str]]:
    images, missing = [], []
    for position, entry in enumerate(entries, 1):
        names = _parse_names(entry["RepoTags"])
        label = names[0].familiar if names else f"image {position} of manifest.json"
        config_digest = received.digest_of(entry["Config"])
        config = received.configs.get(config_digest) if config_digest else None
        if config is None and config_digest is not None and store.blobs.has(config_digest):
            config = store.blobs.read(config_digest)
        if config is None or config_digest is None:
            missing.append(f"config {entry['Config']} of {label} (not in the archive)")
            continue
        diff_ids = _diff_ids(config, label)
        if len(diff_ids) != len(entry["Layers"]):
            raise ArchiveError(
                f"{label}: manifest.json lists {len(entry['Layers'])} layers but its config {len(diff_ids)} diff_ids"
            )
        layers = []
        for number, (path, diff_id) in enumerate(zip(entry["Layers"], diff_ids, strict=True), 1):
            where = mf.blob_place(number, len(diff_ids), label)
            layer = _legacy_layer(received, store, path, diff_id, where, missing)
            if layer is not None:
                layers.append(layer)
        if len(layers) != len(diff_ids):
            continue
        config_desc = Descriptor(mf.OCI_CONFIG, config_digest, len(config))
        built = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mf.OCI_MANIFEST,
                "config": config_desc.to_json(),
                "layers": [layer.to_json() for layer in layers],
            },
            separators=(",", ":"),
        ).encode()
        manifest = Descriptor(mf.OCI_MANIFEST, of_bytes(built), len(built))
        image = ImageManifest(mf.OCI_MANIFEST, config_desc, tuple(layers))
        images.append(ImageSource(manifest, image, names, built=built, config=config))
    return images, missing


def _legacy_layer(
    received: Received, store: Store, path: str, diff_id: Digest, where: str, missing: list[str]
) -> Descriptor | None:
    digest = received.digest_of(path)
    if digest is None:  # not in the archive: the store may hold the uncompressed layer already
        if store.blobs.has(diff_id):
            return Descriptor(mf.OCI_LAYER, diff_id, store.blobs.size(diff_id) or 0)
        missing.append(f"{diff_id} ({where}; {path} is not in the archive)")
        return None
    size = store.blobs.size(digest) or 0
    head = received.heads.get(digest)
    if head is None:  # the store held it already: its bytes were not read here
        with store.blobs.open(digest) as fh:
            head = fh.read(4)
    media_type = next((t for magic, t in _LAYER_TYPES.items() if head.startswith(magic)), None)
    if media_type is None:
        if digest != diff_id:
            raise ArchiveError(
                f"{where}: {path} has digest {digest}, but the image config says its layer is {diff_id}",
                hint="the archive is damaged or forged; no image was recorded",
            )
        media_type = mf.OCI_LAYER
    return Descriptor(media_type, digest, size)


def _diff_ids(config: bytes, label: str) -> list[Digest]:
    doc = _json(config, f"the config of {label}")
    try:
        return [Digest.parse(d) for d in doc["rootfs"]["diff_ids"]]
    except (KeyError, TypeError, CasError) as exc:
        raise ArchiveError(f"the config of {label} has no valid rootfs.diff_ids") from exc


# --- delta -----------------------------------------------------------------------------------
def _delta_images(received: Received, store: Store) -> list[ImageSource]:
    assert received.delta is not None
    missing_blobs = [d for d in received.delta.blobs if d not in received.files.values()]
    if missing_blobs:
        raise ArchiveError(
            f"the delta ends before {len(missing_blobs)} blob(s) it lists: {', '.join(map(str, missing_blobs))}",
            hint="the archive was truncated in transfer; copy it again",
        )
    images = []
    for entry in received.delta.images:
        if not store.blobs.has(entry.manifest):
            raise ArchiveError(f"the delta carries no manifest {entry.manifest} for {entry.ref or 'its image'}")
        data = store.blobs.read(entry.manifest)
        parsed = _parse_manifest(data, entry.media_type, entry.manifest)
        if not isinstance(parsed, ImageManifest):
            raise ArchiveError(f"the delta's manifest {entry.manifest} is not an image manifest")
        names = _parse_names([entry.ref] if entry.ref else [])
        names = [Reference(n.registry, n.repository, n.tag) for n in names if n.tag is not None]
        source = ImageSource(Descriptor(entry.media_type, entry.manifest, len(data)), parsed, names, entry.platform)
        source.top = _delta_index(store, entry)
        images.append(source)
    return images


def _delta_index(store: Store, entry: DeltaImage) -> tuple[Digest, str] | None:
    """The index the sender's reference resolved to, when the delta carries it: the image is then
    recorded under the same digest as on the sender. A delta from a cas that did not carry it,
    or an index that names the manifest only through another index, keeps the manifest's digest."""
    if entry.digest == entry.manifest or not store.blobs.has(entry.digest):
        return None
    data = store.blobs.read(entry.digest)
    try:
        media_type = mf.media_type_of(data, None)
        index = mf.parse(data, media_type)
    except CasError:
        index = None
    if not isinstance(index, ImageIndex):
        raise ArchiveError(
            f"the delta names {entry.digest} as the index of {entry.ref or entry.manifest}, but it is not an index"
        )
    return (entry.digest, media_type) if any(d.digest == entry.manifest for d in index.manifests) else None


# --- shared ----------------------------------------------------------------------------------
def _parse_manifest(data: bytes, media_type: str, digest: Digest) -> ImageManifest | ImageIndex:
    try:
        return mf.parse(data, media_type)
    except CasError as exc:
        raise ArchiveError(f"manifest {digest}: {exc.message}") from None


def _descriptor(entry: object, what: str) -> Descriptor:
    try:
        return Descriptor.from_json(entry, what)
    except CasError as exc:
        raise ArchiveError(exc.message) from None


def _parse_names(texts: list[str]) -> list[Reference]:
    names = []
    for text in texts:
        try:
            name = parse_reference(text)
        except BadReference as exc:
            raise ArchiveError(
                f"the archive names an image {text!r}, which is not a valid reference: {exc.message}"
            ) from None
        if name.tag is not None:
            names.append(Reference(name.registry, name.repository, name.tag))
    return names


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _json(data: bytes, what: str) -> object:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{what} is not valid JSON ({exc})") from None
