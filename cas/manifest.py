"""Manifests and indexes (Docker schema2 and OCI), and platform matching. Pure.

Every digest inside a manifest is parsed with ``Digest.parse`` here, so code
further on only ever sees validated digests.
"""

from __future__ import annotations

import json
import platform as _host
from dataclasses import dataclass, field

from cas.digest import Digest
from cas.errors import BadDigest, ManifestError, PlatformNotFound, UnsupportedManifest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)
# Every layer kind cas caches and exports: OCI and Docker, plain, gzip and zstd, and non-distributable.
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
LAYER_TYPES = (
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
# Sent on every manifest request: without it the registry downgrades to schema1.
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
MAX_MANIFEST = 4 << 20  # the most cas reads as one manifest, from a registry or from the store


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ManifestError(
                f"invalid platform {text!r}", hint="use OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm/v7"
            )
        return cls(*_normalize(parts[0], parts[1], parts[2] if len(parts) == 3 else None))

    @classmethod
    def from_json(cls, obj: object) -> Platform | None:
        """The platform of an index entry or an image config; None when it names none."""
        if not isinstance(obj, dict):
            return None
        os_, arch, variant = obj.get("os"), obj.get("architecture"), obj.get("variant")
        if not (isinstance(os_, str) and os_ and isinstance(arch, str) and arch):
            return None
        return cls(*_normalize(os_, arch, variant if isinstance(variant, str) and variant else None))

    @classmethod
    def host(cls) -> Platform:
        machine = _host.machine().lower()
        arch, variant = _HOST_ARCH.get(machine, (machine, None))
        return cls("linux", arch, variant)

    def matches(self, other: Platform) -> bool:
        """``self`` is what the user asked for; a missing variant accepts any."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return self.variant is None or self.variant == other.variant


_HOST_ARCH = {
    "x86_64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i686": ("386", None),
    "i386": ("386", None),
}


def _normalize(os_: str, arch: str, variant: str | None) -> tuple[str, str, str | None]:
    arch = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm"}.get(arch, arch)
    if arch == "arm64" and variant is None:
        variant = "v8"
    if arch == "arm" and variant is None:
        variant = "v7"
    return os_, arch, variant


def platform_of_config(data: bytes) -> str | None:
    """The platform an image config names (``linux/arm64/v8``); None when it names none."""
    try:
        config = json.loads(data)
    except ValueError as exc:
        raise ManifestError(f"broken image config: not valid JSON ({exc})") from exc
    platform = Platform.from_json(config)
    return str(platform) if platform is not None else None


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, obj: object, what: str) -> Descriptor:
        if not isinstance(obj, dict):
            raise ManifestError(f"broken manifest: {what} is not an object")
        size = obj.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"broken manifest: {what} has no valid size")
        try:
            digest = Digest.parse(obj.get("digest"))
        except BadDigest as exc:
            raise ManifestError(f"broken manifest: {what}: {exc.message}") from exc
        parsed_platform = Platform.from_json(obj.get("platform"))
        annotations = obj.get("annotations") if isinstance(obj.get("annotations"), dict) else {}
        return cls(str(obj.get("mediaType", "")), digest, size, parsed_platform, annotations)

    def to_json(self) -> dict:
        out: dict = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.platform is not None:
            plat = {"architecture": self.platform.architecture, "os": self.platform.os}
            if self.platform.variant:
                plat["variant"] = self.platform.variant
            out["platform"] = plat
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class ImageManifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        return (self.config, *self.layers)


@dataclass(frozen=True)
class ImageIndex:
    media_type: str
    manifests: tuple[Descriptor, ...]

    def platforms(self) -> list[str]:
        return [str(d.platform) for d in self.manifests if d.platform and d.platform.os != "unknown"]

    def select(self, wanted: Platform) -> Descriptor:
        for desc in self.manifests:
            if desc.platform is not None and wanted.matches(desc.platform):
                return desc
        raise PlatformNotFound(str(wanted), self.platforms())


def blob_place(position: int, layers: int, image: str) -> str:
    """Where a blob sits in ``image``, in the words every message uses: position 0 of
    ``ImageManifest.blobs`` is ``config of IMAGE``, then ``layer 1/3 of IMAGE``..."""
    return f"config of {image}" if position == 0 else f"layer {position}/{layers} of {image}"


_OCI_LAYER_OF_DOCKER = {
    "application/vnd.docker.image.rootfs.diff.tar": OCI_LAYER,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": OCI_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar.zstd": OCI_LAYER_ZSTD,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}
CONVERTED_FROM = "dev.cas.converted-from"
CONTAINERD_NAME = "io.containerd.image.name"  # the annotation containerd and `docker save` name an image by


def oci_view(image: ImageManifest, source: Digest) -> bytes | None:
    """An OCI manifest naming the same config and layer blobs as a Docker schema2 one.

    OCI-layout readers (skopeo's ``oci:`` transport) skip index entries with Docker
    media types, so the store lists this view instead; the blobs are shared, only
    the small manifest differs. None when the image already is OCI.
    """
    if image.media_type != DOCKER_MANIFEST:
        return None

    def oci(desc: Descriptor, media_type: str) -> dict:
        return {"mediaType": media_type, "digest": str(desc.digest), "size": desc.size}

    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": oci(image.config, OCI_CONFIG),
        "layers": [oci(layer, _OCI_LAYER_OF_DOCKER.get(layer.media_type, layer.media_type)) for layer in image.layers],
        "annotations": {CONVERTED_FROM: str(source)},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def check_rootfs(config: bytes, layers: int, ref: str) -> None:
    """Refuse an image whose config lists another number of ``rootfs.diff_ids`` than its
    manifest has layers: docker load rejects it, so pull must not cache it and export must not write it."""
    try:
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ManifestError(
            f"the image config of {ref} has no rootfs.diff_ids", hint="the image is broken; push it again"
        ) from exc
    if not isinstance(diff_ids, list):
        raise ManifestError(
            f"the image config of {ref} has no rootfs.diff_ids list", hint="the image is broken; push it again"
        )
    if len(diff_ids) != layers:
        raise ManifestError(
            f"the image {ref} is inconsistent: its manifest has {layers} layers "
            f"but its config lists {len(diff_ids)} diff_ids",
            hint="docker load would reject it; rebuild and push the image again",
        )


def media_type_of(data: bytes, content_type: str | None) -> str:
    """The manifest's media type: its own ``mediaType`` field, else Content-Type, else its shape."""
    doc = _load(data)
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    ctype = (content_type or "").split(";")[0].strip()
    if ctype and ctype not in ("application/json", "application/octet-stream"):
        return ctype
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1[0]
    raise UnsupportedManifest("cannot tell what kind of manifest this is: no mediaType and no Content-Type")


def parse(data: bytes, media_type: str) -> ImageManifest | ImageIndex:
    if media_type in DOCKER_SCHEMA1:
        raise UnsupportedManifest(
            "schema1 manifests are not supported",
            hint="push the image again with a current docker, podman or skopeo (schema2 or OCI)",
        )
    doc = _load(data)
    if media_type in INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise ManifestError("broken index: 'manifests' is not a list")
        return ImageIndex(media_type, tuple(Descriptor.from_json(e, f"manifests[{i}]") for i, e in enumerate(entries)))
    if media_type in MANIFEST_TYPES:
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise ManifestError("broken manifest: 'layers' is not a list")
        return ImageManifest(
            media_type,
            Descriptor.from_json(doc.get("config"), "config"),
            tuple(Descriptor.from_json(e, f"layers[{i}]") for i, e in enumerate(layers)),
        )
    raise UnsupportedManifest(f"unsupported manifest media type {media_type!r}")


def _load(data: bytes) -> dict:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"broken manifest: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ManifestError("broken manifest: not a JSON object")
    return doc


def layout_index(manifests: list[dict]) -> bytes:
    """The ``index.json`` of an OCI image layout naming these descriptors: the store's and every export's."""
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, indent=2).encode()


def image_index(manifests: list[Descriptor]) -> tuple[bytes, str]:
    """A multi-platform index naming ``manifests`` (with their platforms), and its media type.

    A Docker manifest list when every child is a Docker manifest (as registries pair them),
    else an OCI index. Exports make one for a reference cached for several platforms: the
    registry's own index may name platforms (and attestations) the archive does not hold.
    """
    media_type = DOCKER_LIST if all(m.media_type == DOCKER_MANIFEST for m in manifests) else OCI_INDEX
    body = {"schemaVersion": 2, "mediaType": media_type, "manifests": [m.to_json() for m in manifests]}
    return json.dumps(body, separators=(",", ":")).encode(), media_type
