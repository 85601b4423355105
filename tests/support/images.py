"""Test images built in memory, with no internet, and pushed over plain HTTP.

Why: cas must be tested on images whose every byte we know (layers, diff_ids, media types,
platforms) and on corner cases public images rarely show: Docker vs OCI media types,
uncompressed and zstd layers, manifests without ``mediaType``, indexes of several platforms.

- ``layer(files)`` makes a real tar layer (deterministic: fixed mtimes, uid 0, sorted names,
  gzip mtime 0), returns a ``Layer`` with its compressed blob and ``diff_id``.
- ``Image(layers, media="oci"|"docker", ...)`` adds a config (rootfs.diff_ids, history) and a
  manifest; ``Index(images)`` makes an OCI index or a Docker manifest list.
- ``push(target, repository, tag, obj)`` uploads blobs (HEAD, POST, PUT ?digest=) and
  manifests with the right Content-Type, answering Basic or Bearer challenges itself. Not
  skopeo: it cannot push Docker media types from an OCI layout.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import auth
from .tools import MissingTool, require, run

EPOCH = 1700000000  # every tar member's mtime
CREATED = "2023-11-14T22:13:20Z"  # the same instant, for configs and history

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

MEDIA = {
    "oci": {
        "index": OCI_INDEX,
        "manifest": OCI_MANIFEST,
        "config": OCI_CONFIG,
        "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
        "none": "application/vnd.oci.image.layer.v1.tar",
        "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    },
    "docker": {
        "index": DOCKER_LIST,
        "manifest": DOCKER_MANIFEST,
        "config": DOCKER_CONFIG,
        "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "none": "application/vnd.docker.image.rootfs.diff.tar",
        "zstd": "application/vnd.docker.image.rootfs.diff.tar.zstd",
    },
}
COMPRESSIONS = ("gzip", "none", "zstd")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: object) -> bytes:
    """Compact, deterministic JSON: the exact bytes we push are the bytes the digest covers."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


@dataclass(frozen=True)
class Blob:
    """Bytes plus the media type a descriptor gives them."""

    data: bytes = field(repr=False)
    media_type: str

    @functools.cached_property
    def digest(self) -> str:
        return sha256(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra: object) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


# --- layers ----------------------------------------------------------------------------
@dataclass(frozen=True)
class File:
    data: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class Dir:
    mode: int = 0o755


Entry = bytes | str | File | Symlink | Dir


@dataclass(frozen=True)
class Layer:
    """A layer blob (compressed as asked) and the sha256 of its uncompressed tar (diff_id)."""

    data: bytes = field(repr=False)
    diff_id: str
    compression: str
    paths: tuple[str, ...]  # tar member names, in order
    comment: str = ""

    @functools.cached_property
    def digest(self) -> str:
        return sha256(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def blob(self, media: str) -> Blob:
        return Blob(self.data, MEDIA[media][self.compression])


def layer(files: dict[str, Entry], *, compression: str = "gzip", comment: str = "", gzip_level: int = 6) -> Layer:
    """A tar layer of ``files`` (path -> bytes/str/File/Symlink/Dir); parent dirs are added."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}")
    entries: dict[str, Entry] = {}
    for raw_path, entry in files.items():
        path = raw_path.strip("/")
        parts = path.split("/")
        for i in range(1, len(parts)):
            entries.setdefault("/".join(parts[:i]), Dir())
        entries[path] = entry
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(entries):
            entry = entries[path]
            info = tarfile.TarInfo(path)
            info.mtime, info.uid, info.gid, info.uname, info.gname = EPOCH, 0, 0, "", ""
            content = None
            if isinstance(entry, Dir):
                info.type, info.mode = tarfile.DIRTYPE, entry.mode
            elif isinstance(entry, Symlink):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
            else:
                if isinstance(entry, str):
                    entry = entry.encode()
                if isinstance(entry, bytes):
                    entry = File(entry)
                info.mode, info.size, content = entry.mode, len(entry.data), io.BytesIO(entry.data)
            tar.addfile(info, content)
    tar_bytes = buf.getvalue()
    return Layer(
        _compress(tar_bytes, compression, gzip_level), sha256(tar_bytes), compression, tuple(sorted(entries)), comment
    )


def _compress(data: bytes, compression: str, level: int) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, compresslevel=level, mtime=0)
    if compression == "zstd":
        return run([require("zstd", "zstd"), "-q", "-c", "-3"], input=data, text=False).stdout
    return data


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Incompressible, reproducible bytes."""
    return random.Random(seed).randbytes(size)


def random_layer(size: int, seed: int = 0, *, compression: str = "gzip", path: str = "random.bin") -> Layer:
    """A layer holding one file of ``size`` random bytes: its blob is about ``size`` bytes too."""
    return layer(
        {path: random_bytes(size, seed)},
        compression=compression,
        gzip_level=1,
        comment=f"random {size} bytes, seed {seed}",
    )


BUSYBOX = "/bin/busybox"
BUSYBOX_APPLETS = ("sh", "cat", "ls", "echo", "true", "sha256sum")


@functools.cache
def busybox_layer(compression: str = "gzip") -> Layer:
    """/bin/busybox (from Debian's busybox-static) plus applet symlinks, so that
    ``docker run IMAGE cat /hello.txt`` works on an image built here."""
    if not Path(BUSYBOX).exists():
        raise MissingTool(f"{BUSYBOX} is missing: run `bash .ci/run` or `apt-get install -y busybox-static`")
    files: dict[str, Entry] = {"bin/busybox": File(Path(BUSYBOX).read_bytes(), 0o755)}
    files.update({f"bin/{applet}": Symlink("busybox") for applet in BUSYBOX_APPLETS})
    files["tmp"] = Dir(0o1777)
    return layer(files, compression=compression, comment="busybox")


# --- images and indexes -------------------------------------------------------------------
class Image:
    """A single-platform image: layers, config (rootfs.diff_ids, history) and manifest."""

    def __init__(
        self,
        layers: list[Layer],
        *,
        media: str = "oci",
        os: str = "linux",
        architecture: str = "amd64",
        variant: str | None = None,
        cmd: tuple[str, ...] = ("/bin/sh",),
        labels: dict[str, str] | None = None,
        omit_media_type: bool = False,
        annotations: dict[str, str] | None = None,
    ) -> None:
        if media not in MEDIA:
            raise ValueError(f"media must be 'oci' or 'docker', not {media!r}")
        self.layers = list(layers)
        self.media = media
        self.os, self.architecture, self.variant = os, architecture, variant
        config: dict = {"created": CREATED, "architecture": architecture, "os": os}
        if variant:
            config["variant"] = variant
        config["config"] = {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": list(cmd),
            "WorkingDir": "/",
            "Labels": dict(labels or {}),
        }
        config["rootfs"] = {"type": "layers", "diff_ids": [lay.diff_id for lay in self.layers]}
        config["history"] = [
            {"created": CREATED, "created_by": lay.comment or f"layer {i}"} for i, lay in enumerate(self.layers)
        ]
        self.config = config
        self.config_blob = Blob(canonical_json(config), MEDIA[media]["config"])
        manifest: dict = {"schemaVersion": 2}
        if not omit_media_type:
            manifest["mediaType"] = MEDIA[media]["manifest"]
        manifest["config"] = self.config_blob.descriptor()
        manifest["layers"] = [lay.blob(media).descriptor() for lay in self.layers]
        if annotations:
            manifest["annotations"] = dict(annotations)
        self.manifest = manifest
        self.manifest_blob = Blob(canonical_json(manifest), MEDIA[media]["manifest"])

    @property
    def digest(self) -> str:
        return self.manifest_blob.digest

    @property
    def media_type(self) -> str:
        return self.manifest_blob.media_type

    @property
    def platform(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @property
    def diff_ids(self) -> list[str]:
        return [lay.diff_id for lay in self.layers]

    @property
    def blobs(self) -> list[Blob]:
        """Config and layers: what must be uploaded before the manifest."""
        return [self.config_blob] + [lay.blob(self.media) for lay in self.layers]

    @property
    def digests(self) -> list[str]:
        """manifest, config, layers: the order of a cas ref record's ``blobs``."""
        return [self.digest, self.config_blob.digest] + [lay.digest for lay in self.layers]

    @property
    def size(self) -> int:
        """Sum of manifest, config and layer sizes."""
        return self.manifest_blob.size + sum(b.size for b in self.blobs)

    def index_entry(self) -> dict:
        platform = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            platform["variant"] = self.variant
        return self.manifest_blob.descriptor(platform=platform)


class Index:
    """An OCI image index (media="oci") or a Docker manifest list (media="docker")."""

    def __init__(
        self, images: list[Image], *, media: str | None = None, annotations: dict[str, str] | None = None
    ) -> None:
        self.images = list(images)
        self.media = media or self.images[0].media
        manifest: dict = {
            "schemaVersion": 2,
            "mediaType": MEDIA[self.media]["index"],
            "manifests": [img.index_entry() for img in self.images],
        }
        if annotations:
            manifest["annotations"] = dict(annotations)
        self.manifest = manifest
        self.manifest_blob = Blob(canonical_json(manifest), MEDIA[self.media]["index"])

    @property
    def digest(self) -> str:
        return self.manifest_blob.digest

    @property
    def media_type(self) -> str:
        return self.manifest_blob.media_type

    def for_platform(self, platform: str) -> Image:
        for img in self.images:
            if img.platform == platform:
                return img
        raise KeyError(f"no {platform} in this index: {[i.platform for i in self.images]}")


# --- pushing -----------------------------------------------------------------------------
class PushError(RuntimeError):
    pass


def push(
    target: auth.Target,
    repository: str,
    tag: str | None,
    obj: Image | Index,
    *,
    credentials: bool = True,
    **client: Any,
) -> str:
    """Upload ``obj`` (children first for an index) and tag it; returns its digest.

    ``target`` is a Registry or a FaultProxy; ``tag=None`` pushes by digest only; ``client``
    goes to the httpx client (e.g. ``verify=`` an SSL context for a TLS registry).
    """
    with auth.client(target, credentials=credentials, push=True, **client) as c:
        images = obj.images if isinstance(obj, Index) else [obj]
        for img in images:
            for blob in img.blobs:
                push_blob(c, repository, blob)
            if isinstance(obj, Index):
                put_manifest(c, repository, img.digest, img.manifest_blob)
        put_manifest(c, repository, tag or obj.digest, obj.manifest_blob)
    return obj.digest


def push_blob(c, repository: str, blob: Blob) -> bool:
    """Upload one blob unless the registry has it; True if it was uploaded."""
    head = c.head(f"/v2/{repository}/blobs/{blob.digest}")
    if head.status_code == 200:
        return False
    start = c.post(f"/v2/{repository}/blobs/uploads/")
    _expect(start, 202, f"start upload of {blob.digest} to {repository}")
    location = start.headers["Location"]  # keeps its _state query: add digest, do not replace
    location += ("&" if "?" in location else "?") + "digest=" + blob.digest
    put = c.put(location, content=blob.data, headers={"Content-Type": "application/octet-stream"})
    _expect(put, 201, f"upload {blob.digest} to {repository}")
    return True


def put_manifest(c, repository: str, reference: str, blob: Blob) -> None:
    resp = c.put(
        f"/v2/{repository}/manifests/{reference}", content=blob.data, headers={"Content-Type": blob.media_type}
    )
    _expect(resp, 201, f"put manifest {repository}:{reference}")
    served = resp.headers.get("Docker-Content-Digest")
    if served and served != blob.digest:
        raise PushError(f"registry computed {served} for manifest {blob.digest}")


def _expect(resp, status: int, what: str) -> None:
    if resp.status_code != status:
        raise PushError(f"{what}: HTTP {resp.status_code} {resp.text[:500]}")
