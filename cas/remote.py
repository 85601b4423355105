"""What a registry holds, asked without the store: `cas ls` (tags) and `cas inspect --remote`.

The same endpoints (mirrors, hosts.toml TLS), credentials and timeouts as a pull, but no
store is opened: bearer tokens stay in memory and nothing under $CAS_HOME is read or written.
Every manifest and config is checked against its digest before it is shown.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cas import manifest as mf
from cas.digest import Digest, verify_bytes
from cas.errors import ManifestError, UsageError
from cas.manifest import ImageIndex, ImageManifest, Platform, platform_of_config
from cas.reference import Reference
from cas.settings import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from cas.registry import Credentials, RegistryClient
    from cas.registry.endpoints import Sources


@dataclass
class RemoteOptions:
    insecure: bool = False
    credentials: Credentials | None = None
    sources: Sources | None = None  # None: the machine's configuration
    timeout: float = DEFAULT_TIMEOUT


@contextmanager
def client_for(ref: Reference, options: RemoteOptions) -> Iterator[RegistryClient]:
    """A registry client for ``ref``'s endpoints, with no token cache (tokens live in this process only)."""
    from cas.registry import RegistryClient
    from cas.registry.endpoints import Sources

    sources = options.sources if options.sources is not None else Sources.from_env()
    endpoints = sources.endpoints(ref, insecure=options.insecure)
    with RegistryClient(
        ref.api_host, endpoints=endpoints, credentials=options.credentials, timeout=options.timeout
    ) as client:
        yield client


def repository_of(text: str) -> Reference:
    """`cas ls REPO`: a repository, not an image; a tag or digest there is a usage mistake."""
    from cas.reference import parse

    name = text.rsplit("/", 1)[-1]
    if "@" in text or ":" in name:
        bare = text.split("@", 1)[0].rsplit(":", 1)[0] if ":" in name or "@" in text else text
        raise UsageError(f"{text} names an image, not a repository", hint=f"list its tags with `cas ls {bare}`")
    return parse(text)


def list_tags(repository: Reference, options: RemoteOptions, page_size: int | None = None) -> list[str]:
    """Every tag, sorted: registries answer in their own order (distribution 2.8 in none at all)."""
    from cas.errors import NotFound

    with client_for(repository, options) as client:
        try:
            return sorted(set(client.list_tags(repository.repository, page_size)))
        except NotFound as exc:  # the registry's 404 speaks of an image; here it is the repository
            said = exc.message.partition(" not found")[2]
            raise NotFound(
                f"repository {repository.name} not found{said}", hint="check the repository name (no tag)"
            ) from None


def resolve(ref: Reference, options: RemoteOptions) -> Digest:
    """The digest ``ref`` names at its registry today (one manifest request), as `crane digest`."""
    with client_for(ref, options) as client:
        return client.get_manifest(ref.repository, ref.digest if ref.digest is not None else ref.tag).digest


@dataclass
class RemoteImage:
    """What a reference names at its registry: the top object, and the picked platform's image."""

    ref: Reference
    digest: Digest  # the reference's own: the index's for a multi-platform tag
    media_type: str
    data: bytes  # the top object's bytes, as served
    index: ImageIndex | None
    manifest: Digest | None = None  # the picked platform's image manifest (None: none picked)
    manifest_data: bytes = b""
    image: ImageManifest | None = None
    config: bytes = b""

    def to_json(self) -> dict:
        """inspect's fields (cas.images.describe) for the picked image, plus the index's platforms."""
        from cas.images import describe

        body: dict = {"ref": str(self.ref), "digest": str(self.digest), "media_type": self.media_type}
        if self.index is not None:
            body["platforms"] = [
                {"platform": str(d.platform) if d.platform else None, "manifest": str(d.digest), "size": d.size}
                for d in self.index.manifests
            ]
        if self.image is None:
            return body
        platform = platform_of_config(self.config)  # a config that is not JSON is a ManifestError here
        config = json.loads(self.config)
        size = len(self.manifest_data) + sum(d.size for d in self.image.blobs)
        manifest = {"manifest": str(self.manifest), "manifest_media_type": self.image.media_type}
        return {**body, **manifest, "platform": platform, "size": size, **describe(self.image, config)}


def inspect(ref: Reference, options: RemoteOptions, platform: Platform | None, *, config: bool = True) -> RemoteImage:
    """Resolve ``ref`` and, for an index, pick ``platform`` (default: this host's, if the index has it);
    the picked image's config too unless ``config`` is False (a digest is all that is wanted)."""
    with client_for(ref, options) as client:
        top = client.get_manifest(ref.repository, ref.digest if ref.digest is not None else ref.tag)
        parsed = mf.parse(top.data, top.media_type)
        found = RemoteImage(
            ref, top.digest, top.media_type, top.data, parsed if isinstance(parsed, ImageIndex) else None
        )
        if isinstance(parsed, ImageManifest):
            found.manifest, found.manifest_data, found.image = top.digest, top.data, parsed
        else:
            desc = _pick(parsed, platform, needed=config)
            if desc is None:
                return found
            child = client.get_manifest(ref.repository, desc.digest)
            image = mf.parse(child.data, child.media_type)
            if not isinstance(image, ImageManifest):
                raise ManifestError(f"{ref}: the manifest of {desc.platform} is an index, not an image")
            found.manifest, found.manifest_data, found.image = desc.digest, child.data, image
        if config:
            found.config = _blob(client, ref, found.image.config)
            if platform is not None and isinstance(parsed, ImageManifest):
                _check_platform(ref, found.config, platform)
        return found


def _pick(index: ImageIndex, platform: Platform | None, *, needed: bool):
    """The index entry of ``platform``, else of this host; None when not ``needed`` and the host has none."""
    if platform is not None or needed:
        return index.select(platform or Platform.host())  # PlatformNotFound names the platforms there are
    try:
        return index.select(Platform.host())
    except ManifestError:  # not for this host: the index alone is shown
        return None


def _check_platform(ref: Reference, config: bytes, wanted: Platform) -> None:
    from cas.errors import PlatformMismatch

    platform = platform_of_config(config)
    if platform is None or not wanted.matches(Platform.parse(platform)):
        raise PlatformMismatch(str(ref), platform, [str(wanted)])


def _blob(client: RegistryClient, ref: Reference, desc) -> bytes:
    """A small blob (a config) into memory, checked against its digest; nothing is stored."""
    if desc.size > mf.MAX_MANIFEST:
        raise ManifestError(f"the config of {ref} is larger than {mf.MAX_MANIFEST >> 20} MiB")
    from cas.pull import MemorySink

    sink = MemorySink()
    client.download_blob(ref.repository, desc.digest, sink)
    data = bytes(sink.data)
    verify_bytes(data, desc.digest, what=f"config of {ref}")
    return data
