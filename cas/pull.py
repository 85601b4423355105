"""Pull: the one place where the registry, the store and the index meet.

A pull resolves a reference to one image manifest, downloads only the blobs the
store lacks (whatever image or registry they first came from), and records the
ref only after every blob it lists is committed. Content addressed by digest is
read from the store first: a pull by digest whose blobs are all present makes no
network request at all.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cas import DEFAULT_LOCK_TIMEOUT
from cas import manifest as mf
from cas.digest import Digest, of_bytes, verify_bytes
from cas.errors import Cancelled, PlatformMismatch, SizeMismatch, UnsupportedManifest
from cas.manifest import Descriptor, ImageIndex, ImageManifest, Platform
from cas.recording import clear_marks, commit_bytes, platform_of_config, record_blob, record_image, unique
from cas.records import RefRecord
from cas.reference import Reference
from cas.registry.stall import DEFAULT_MIN_RATE, DEFAULT_TIMEOUT
from cas.store import Store, trust
from cas.transfer import TransferObserver, run_parallel

if TYPE_CHECKING:
    from cas.index import Lease
    from cas.registry import Credentials, RegistryClient
    from cas.registry.endpoints import Sources


MAX_NESTING = 4  # indexes naming indexes
log = logging.getLogger("cas.pull")

PullObserver = TransferObserver  # blob_done(digest, moved): moved is "downloaded" here


@dataclass
class PullOptions:
    platforms: tuple[Platform, ...] = ()  # which platforms of a multi-platform tag; none given: the host's
    all_platforms: bool = False  # every platform the index names (attestation entries aside)
    jobs: int = 4  # blobs at once
    connections: int = 8  # in all, range requests included (cas.registry.ranged.DEFAULT_CONNECTIONS)
    insecure: bool = False
    credentials: Credentials | None = None
    observer: PullObserver = field(default_factory=PullObserver)
    lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT
    sources: Sources | None = None  # mirror configuration; None: the machine's (cas.registry.endpoints)
    timeout: float = DEFAULT_TIMEOUT  # connect, answer, and the stall window (cas.registry.stall)
    min_rate: int = DEFAULT_MIN_RATE  # bytes/s below which a transfer is stalled


@dataclass
class PullResult:
    ref: str
    records: list[RefRecord] = field(default_factory=list)  # one per platform pulled
    # Blobs of the image, each digest once: index, manifests, config, layers (not cas's own OCI view).
    downloaded_blobs: int = 0
    downloaded_bytes: int = 0
    reused_blobs: int = 0
    reused_bytes: int = 0
    manifest_requests: int = 0
    seconds: float = 0.0
    manifest_endpoint: str | None = None  # the endpoint that answered the first manifest request
    endpoint_bytes: dict[str, int] = field(default_factory=dict)  # endpoint URL -> bytes it served
    fallbacks: list = field(default_factory=list)  # cas.registry.walk.Fallback, in order
    mirrored: bool = False  # mirrors are configured for this reference

    def to_json(self) -> dict:
        first = self.records[0]
        return {
            "ref": self.ref,
            "digest": str(first.digest),
            "manifest": str(first.manifest),  # the first platform's; every one is in "platforms"
            "platform": first.platform,
            "platforms": [{"platform": r.platform, "manifest": str(r.manifest)} for r in self.records],
            "downloaded_blobs": self.downloaded_blobs,
            "downloaded_bytes": self.downloaded_bytes,
            "reused_blobs": self.reused_blobs,
            "reused_bytes": self.reused_bytes,
            "manifest_requests": self.manifest_requests,
            "manifest_endpoint": self.manifest_endpoint,
            "endpoints": [{"url": url, "served_bytes": n} for url, n in self.endpoint_bytes.items()],  # manifests too
            "fallbacks": [f.to_json() for f in self.fallbacks],
            "seconds": round(self.seconds, 3),
        }


def pull(store: Store, reference: Reference, options: PullOptions | None = None) -> PullResult:
    options = options or PullOptions()
    started = time.monotonic()
    store.ballast.restore()  # a new store gets its ballast; a prune that could not put it back is made good
    with store.lock(shared=True, timeout=options.lock_timeout, on_wait=options.observer.waiting):
        with store.index.lease() as lease, _Session(store, reference, options, lease) as session:
            result = session.run()
    result.seconds = time.monotonic() - started
    return result


class _Session:
    """One reference being pulled: lazily opens the registry client only if the network is needed."""

    def __init__(self, store: Store, reference: Reference, options: PullOptions, lease: Lease) -> None:
        self.store = store
        self.ref = reference
        self.options = options
        self.lease = lease
        self._client: RegistryClient | None = None
        self.result = PullResult(str(reference))
        self._counted_manifests: set[Digest] = set()  # an index shared by several platforms counts once
        # Read before anything else, so a blocked registry is refused even when nothing needs the network.
        sources = options.sources if options.sources is not None else _machine_sources()
        self.endpoints = sources.endpoints(reference, insecure=options.insecure)

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            served = self._client.served
            self.result.manifest_endpoint = served.manifest_endpoint
            self.result.endpoint_bytes = dict(served.bytes)
            self.result.fallbacks = list(served.fallbacks)
            self._client.close()
        self.result.mirrored = any(ep.mirror for ep in self.endpoints)

    @property
    def client(self) -> RegistryClient:
        if self._client is None:
            from cas.registry import RegistryClient  # httpx is imported only when the network is needed
            from cas.registry.ranged import ConnectionBudget, RangePolicy

            self._client = RegistryClient(
                self.ref.api_host,
                endpoints=self.endpoints,
                credentials=self.options.credentials,
                token_cache=self.store.index,
                timeout=self.options.timeout,
                min_rate=self.options.min_rate,
                ranges=RangePolicy(ConnectionBudget(self.options.connections)),
            )
        return self._client

    def run(self) -> PullResult:
        top_digest, top_type, top, fetched = self._resolve_top()
        targets = self._targets(top_digest, top_type, top)  # every check before anything is recorded
        if fetched is not None:  # resolved by tag: the top manifest is kept now that it resolved
            new = commit_bytes(self.store, self.lease, top_digest, fetched, top_type)
            self._count_manifest(top_digest, len(fetched), new=new)
        for target in targets:
            _check_image(target.image, self.ref)
        blobs = [blob for target in targets for blob in target.image.blobs]
        self.lease.add([d for target in targets for d, _ in target.chain] + [d.digest for d in blobs])
        restored = self._fetch_missing(blobs)
        for target in targets:
            self.result.records.append(
                record_image(
                    self.store,
                    self.lease,
                    ref=str(self.ref),
                    registry=self.ref.registry,
                    chain=target.chain,
                    image=target.image,
                    platform=target.platform,
                )
            )
        clear_marks(self.store, restored)
        return self.result

    def _targets(self, top_digest: Digest, top_type: str, top: ImageIndex | ImageManifest) -> list[_Target]:
        """The image manifest of each platform asked for: ``[(index,)... manifest]`` chain, image, platform.

        An index may name another index for a platform (containerd walks them too); the walk
        stops after MAX_NESTING levels, so a registry cannot lead it round in circles.
        """
        if isinstance(top, ImageManifest):
            return [_Target([(top_digest, top_type)], top, self._single_platform(top))]
        if self.options.all_platforms:
            chosen = [d for d in top.manifests if d.platform is not None and d.platform.os != "unknown"]
        else:
            chosen = [top.select(wanted) for wanted in self.options.platforms or (Platform.host(),)]
        targets = []
        for desc in {d.digest: d for d in chosen}.values():  # two spellings of one platform: pulled once
            chain: list[tuple[Digest, str]] = [(top_digest, top_type)]
            step = desc
            while True:
                data, media_type = self._manifest_by_digest(step.digest)
                chain.append((step.digest, media_type))
                node = mf.parse(data, media_type)
                if isinstance(node, ImageManifest):
                    break
                if len(chain) > MAX_NESTING:
                    raise UnsupportedManifest(f"{self.ref}: indexes nested more than {MAX_NESTING} deep")
                step = node.select(desc.platform or Platform.host())
            targets.append(_Target(chain, node, str(desc.platform)))
        return targets

    def _single_platform(self, image: ImageManifest) -> str | None:
        """A plain manifest is for one platform; when the user named others, that is an error, not a pull."""
        if not self.options.platforms:
            return None  # read from the config when the image is recorded
        platform = platform_of_config(self._config_bytes(image.config))
        wrong = [str(p) for p in self.options.platforms if platform is None or not p.matches(Platform.parse(platform))]
        if wrong:
            raise PlatformMismatch(str(self.ref), platform, wrong)
        return platform

    def _config_bytes(self, config: Descriptor) -> bytes:
        """The config of a plain manifest, from the store or into memory (nothing is stored before the check)."""
        if self._present(config):
            return self.store.blobs.read(config.digest)
        sink = _MemorySink()
        self.client.download_blob(self.ref.repository, config.digest, sink)
        data = bytes(sink.data)
        if len(data) != config.size:
            raise SizeMismatch(config.digest, config.size, len(data))
        verify_bytes(data, config.digest, what="config")
        return data

    def _fetch_missing(self, blobs: list[Descriptor]) -> set[Digest]:
        """Download what the store lacks; the digests that were missing (now committed)."""
        missing = unique([d for d in blobs if not self._present(d)])
        self.options.observer.resolved(str(self.ref), blobs, missing)
        self._download(missing)
        fetched = {d.digest for d in missing}
        for desc in unique(blobs):
            if desc.digest not in fetched:
                self._count(size=desc.size, downloaded=False)
        return fetched

    def _present(self, desc: Descriptor) -> bool:
        """In the store and still what was committed (its stat fingerprint, else a re-hash): a file
        changed since is downloaded again, and the commit replaces it."""
        return self.store.blobs.has(desc.digest, desc.size) and (
            trust.confirm(self.store, desc.digest, desc.size, desc.media_type) is None
        )

    def _resolve_top(self) -> tuple[Digest, str, ImageIndex | ImageManifest, bytes | None]:
        """What the reference names; by tag also its bytes, which the caller commits once they resolved."""
        if self.ref.digest is not None:
            data, media_type = self._manifest_by_digest(self.ref.digest)
            return self.ref.digest, media_type, mf.parse(data, media_type), None
        fetched = self.client.get_manifest(self.ref.repository, self.ref.tag)
        self.result.manifest_requests += 1
        parsed = mf.parse(fetched.data, fetched.media_type)
        return fetched.digest, fetched.media_type, parsed, fetched.data

    def _manifest_by_digest(self, digest: Digest) -> tuple[bytes, str]:
        """Immutable content: the store's copy when there is one, else the registry's."""
        if self.store.blobs.has(digest):
            data = self.store.blobs.read(digest)
            if of_bytes(data, digest.algorithm) == digest:  # small: check the bytes, not a fingerprint
                record = self.store.index.get_blob(digest)
                media_type = record["media_type"] if record else mf.media_type_of(data, None)
                self._count_manifest(digest, len(data), new=False)
                return data, media_type
            log.info("the stored manifest %s changed after commit: fetching it again", digest)
        fetched = self.client.get_manifest(self.ref.repository, digest)
        self.result.manifest_requests += 1
        new = commit_bytes(self.store, self.lease, digest, fetched.data, fetched.media_type)
        self._count_manifest(digest, len(fetched.data), new=new)
        return fetched.data, fetched.media_type

    def _count_manifest(self, digest: Digest, size: int, *, new: bool) -> None:
        """Manifests are blobs of the image too: downloaded when the store lacked them, else reused."""
        if digest not in self._counted_manifests:
            self._counted_manifests.add(digest)
            self._count(size=size, downloaded=new, received=size if new else 0)

    def _download(self, missing: list[Descriptor]) -> None:
        tasks = [functools.partial(self._fetch_blob, desc) for desc in missing]
        run_parallel(tasks, self.options.jobs, "cas-pull")

    def _fetch_blob(self, desc: Descriptor, cancelled: threading.Event) -> None:
        observer = self.options.observer

        received = 0  # bytes that crossed the network for this blob (not a resumed prefix)

        def on_bytes(n: int) -> None:
            nonlocal received
            if cancelled.is_set():
                raise Cancelled("pull cancelled after another blob failed")
            received += max(n, 0)
            observer.blob_bytes(desc.digest, n)

        present = functools.partial(trust.unchanged, self.store, desc.digest)  # a changed file is replaced
        with self.store.blobs.ingest(desc.digest, desc.size, on_wait=observer.waiting, present=present) as ing:
            if ing.committed:  # another process stored it while we waited
                self._count(size=desc.size, downloaded=False)
                observer.blob_done(desc.digest, False)
                return
            if ing.offset:
                observer.blob_bytes(desc.digest, ing.offset)
            client = self.client
            assert client.ranges is not None
            with client.ranges.budget.slot():  # this blob's own connection, out of the pull's total
                client.download_blob(self.ref.repository, desc.digest, ing, on_bytes, commit=ing.commit)
            assert ing.info is not None
            record_blob(self.store, ing.info, desc.media_type)
        self._count(size=desc.size, downloaded=True, received=received)
        observer.blob_done(desc.digest, True)

    _count_lock = threading.Lock()

    def _count(self, *, size: int, downloaded: bool, received: int = 0) -> None:
        """One blob of the image: downloaded (``received`` bytes crossed the network) or reused (``size``)."""
        with self._count_lock:
            if downloaded:
                self.result.downloaded_blobs += 1
                self.result.downloaded_bytes += received
            else:
                self.result.reused_blobs += 1
                self.result.reused_bytes += size


def _machine_sources() -> Sources:
    from cas.registry.endpoints import Sources

    return Sources.from_env()


def _check_image(image: ImageManifest, ref: Reference) -> None:
    if image.config.media_type and image.config.media_type not in mf.CONFIG_TYPES:
        raise UnsupportedManifest(
            f"{ref} is not a container image: config media type {image.config.media_type!r}",
            hint="cas caches container images; artifacts such as charts or signatures are not supported",
        )
    for position, layer in enumerate(image.layers, 1):
        if layer.media_type not in mf.LAYER_TYPES:
            raise UnsupportedManifest(f"{ref}: layer {position} has unsupported media type {layer.media_type!r}")


@dataclass
class _Target:
    """One platform of the reference: ``[(index,) manifest]`` digests and types, the image, its platform."""

    chain: list[tuple[Digest, str]]
    image: ImageManifest
    platform: str | None


class _MemorySink:
    """A blob small enough to check in memory before anything is stored (a plain manifest's config)."""

    def __init__(self) -> None:
        self.data = bytearray()

    @property
    def offset(self) -> int:
        return len(self.data)

    def write(self, chunk: bytes) -> None:
        self.data += chunk

    def restart(self) -> None:
        self.data.clear()
