"""Pull: the one place where the registry, the store and the index meet.

The same shape as push and import: plan what is missing -> move blobs in parallel -> record.
  1. plan (``_Planner``): resolve the reference to the image manifest of each platform asked
     for, check each image, lease every digest, and list the blobs the store lacks, whatever
     image or registry they first came from. Manifests addressed by digest are read from the
     store when it holds them intact, so a pull by digest whose blobs are all present makes no
     network request at all;
  2. move (``_Mover``): download the missing blobs in parallel; the store commits each one only
     once its bytes hash to its digest;
  3. record (``_record``): the ref record of each platform, written only after every blob it
     lists is committed.
The result counts each blob of the image once, as downloaded or reused.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cas import DEFAULT_LOCK_TIMEOUT, stats
from cas import manifest as mf
from cas.digest import Digest, verify_bytes
from cas.errors import Cancelled, DigestMismatch, IntegrityError, PlatformMismatch, SizeMismatch, UnsupportedManifest
from cas.manifest import Descriptor, ImageIndex, ImageManifest, Platform, platform_of_config
from cas.record_image import clear_marks, commit_bytes, record_blob, record_image, unique
from cas.records import RefRecord
from cas.reference import Reference
from cas.settings import DEFAULT_CONNECTIONS, DEFAULT_JOBS, DEFAULT_MIN_RATE, DEFAULT_TIMEOUT
from cas.store import Store, trust
from cas.stored_manifest import read_manifest
from cas.transfer import TransferObserver, run_parallel

if TYPE_CHECKING:
    import httpx

    from cas.metadata import Lease
    from cas.registry import Credentials, FetchedManifest, RegistryClient
    from cas.registry.endpoints import Sources
    from cas.registry.shared import KeyedPool


MAX_NESTING = 4  # indexes naming indexes
log = logging.getLogger("cas.pull")

PullObserver = TransferObserver  # blob_done(digest, moved): moved is "downloaded" here


@dataclass
class PullOptions:
    platforms: tuple[Platform, ...] = ()  # which platforms of a multi-platform tag; none given: the host's
    all_platforms: bool = False  # every platform the index names (attestation entries aside)
    jobs: int = DEFAULT_JOBS  # blobs at once
    connections: int = DEFAULT_CONNECTIONS  # in all, range requests included
    insecure: bool = False
    credentials: Credentials | None = None
    observer: PullObserver = field(default_factory=PullObserver)
    lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT
    sources: Sources | None = None  # mirror configuration; None: the machine's (cas.registry.endpoints)
    timeout: float = DEFAULT_TIMEOUT  # connect, answer, and the stall window (cas.registry.stall)
    min_rate: int = DEFAULT_MIN_RATE  # bytes/s below which a transfer is stalled
    # The tag's manifest as the caller just fetched it from this registry (`cas serve` resolves a
    # tag itself): used instead of asking again, so a pull costs one manifest request per manifest.
    fetched_top: FetchedManifest | None = None
    shared: KeyedPool[httpx.Client] | None = None  # httpx clients reused across the pulls of one command (a set)


@dataclass
class PullResult:
    ref: str
    records: list[RefRecord] = field(default_factory=list)  # one per platform pulled
    # Blobs of the image, each digest once: index, manifests, config, layers (not cas's own OCI view).
    downloaded_blobs: int = 0
    downloaded_bytes: int = 0  # that the stored blobs needed: bytes thrown away are counted apart
    discarded_bytes: int = 0  # received, then dropped (wrong bytes from a mirror, a Range ignored, a split given up)
    retries: int = 0  # requests, streams and ranges tried again
    reused_blobs: int = 0
    reused_bytes: int = 0
    manifest_requests: int = 0
    seconds: float = 0.0
    manifest_endpoint: str | None = None  # the endpoint that answered the first manifest request
    endpoint_bytes: dict[str, int] = field(default_factory=dict)  # endpoint URL -> bytes it served
    fallbacks: list = field(default_factory=list)  # cas.registry.walk.Fallback, in order
    mirrored: bool = False  # mirrors are configured for this reference
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, *, size: int, downloaded: bool, received: int = 0, discarded: int = 0) -> None:
        """One blob of the image: downloaded (``received`` bytes crossed the network for it, ``discarded``
        more were thrown away) or reused (``size``)."""
        with self._lock:
            if downloaded:
                self.downloaded_blobs += 1
                self.downloaded_bytes += received
                self.discarded_bytes += discarded
            else:
                self.reused_blobs += 1
                self.reused_bytes += size

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
            "discarded_bytes": self.discarded_bytes,  # received and thrown away: not in downloaded_bytes
            "retry_count": self.retries,
            "reused_blobs": self.reused_blobs,
            "reused_bytes": self.reused_bytes,
            "manifest_requests": self.manifest_requests,
            "manifest_endpoint": self.manifest_endpoint,
            "endpoints": [{"url": url, "served_bytes": n} for url, n in self.endpoint_bytes.items()],  # manifests too
            "fallbacks": [f.to_json() for f in self.fallbacks],
            "seconds": round(self.seconds, 3),
        }


@dataclass
class _Target:
    """One platform of the reference: ``[(index,) manifest]`` digests and types, the image, its platform."""

    chain: list[tuple[Digest, str]]
    image: ImageManifest
    platform: str | None


@dataclass
class PullPlan:
    """What a pull moves and records, known before its first blob is downloaded."""

    ref: Reference
    targets: list[_Target]
    blobs: list[Descriptor]  # every config and layer of every platform, in order
    missing: list[Descriptor]  # what the store lacks (or holds changed), each digest once

    def place(self, digest: Digest) -> str:
        """Where a blob sits, for messages: ``layer 2/3 of REF`` (in the first platform that lists it)."""
        target, position = next(
            (t, p) for t in self.targets for p, desc in enumerate(t.image.blobs) if desc.digest == digest
        )
        name = f"{self.ref} ({target.platform})" if len(self.targets) > 1 else str(self.ref)
        return mf.blob_place(position, len(target.image.layers), name)


def pull(store: Store, reference: Reference, options: PullOptions | None = None) -> PullResult:
    options = options or PullOptions()
    started = time.monotonic()
    result = PullResult(str(reference))
    store.ballast.restore()  # a new store gets its ballast; a prune that could not put it back is made good
    with store.lock(shared=True, timeout=options.lock_timeout, on_wait=options.observer.waiting):
        with store.metadata.lease() as lease, _Remote(store, reference, options) as remote:
            planned = _Planner(store, lease, remote, options, result).plan()
            _Mover(store, planned, remote, options, result).run()
            _record(store, lease, planned, result)
            remote.report(result)
    stats.count(
        store.metadata,
        downloaded_bytes=result.downloaded_bytes,
        downloaded_blobs=result.downloaded_blobs,
        reused_bytes=result.reused_bytes,
        reused_blobs=result.reused_blobs,
    )
    result.seconds = time.monotonic() - started
    return result


class _Remote:
    """The registry side of one pull: its endpoints, and a client opened only if the network is needed."""

    def __init__(self, store: Store, reference: Reference, options: PullOptions) -> None:
        self.store = store
        self.ref = reference
        self.options = options
        self._client: RegistryClient | None = None
        # Read before anything else, so a blocked registry is refused even when nothing needs the network.
        sources = options.sources if options.sources is not None else _machine_sources()
        self.endpoints = sources.endpoints(reference, insecure=options.insecure)

    def __enter__(self) -> _Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()

    @property
    def client(self) -> RegistryClient:
        if self._client is None:
            from cas.registry import RegistryClient  # httpx is imported only when the network is needed
            from cas.registry.ranged import ConnectionBudget, RangePolicy

            self._client = RegistryClient(
                self.ref.api_host,
                endpoints=self.endpoints,
                credentials=self.options.credentials,
                token_cache=self.store.metadata,
                timeout=self.options.timeout,
                min_rate=self.options.min_rate,
                ranges=RangePolicy(ConnectionBudget(self.options.connections)),
                on_retry=self.options.observer.retrying,
                shared=self.options.shared,
            )
        return self._client

    def report(self, result: PullResult) -> None:
        """Which endpoints served what, into the result."""
        if self._client is not None:
            served = self._client.served
            result.manifest_endpoint = served.manifest_endpoint
            result.endpoint_bytes = dict(served.bytes)
            result.fallbacks = list(served.fallbacks)
            result.retries = served.retries
        result.mirrored = any(ep.mirror for ep in self.endpoints)

    def wrong_bytes(self, exc: IntegrityError, place: str) -> IntegrityError:
        """Wrong bytes, named by who served them, the image and the blob's place in it (as a mirror's are)."""
        if isinstance(exc, SizeMismatch):
            return exc  # it names the digest; the manifest's size may be what is wrong, not the bytes
        message = exc.message
        if isinstance(exc, DigestMismatch):  # not from a mirror: those come named (cas.registry.walk)
            host = next((ep.host for ep in reversed(self.endpoints) if not ep.mirror), self.ref.registry)
            message = f"registry {host} served wrong bytes: {message}"
        return IntegrityError(f"{place}: {message}", hint=exc.hint)


class _Planner:
    """Step 1: the image manifest of each platform, checked, leased, and the blobs the store lacks."""

    def __init__(self, store: Store, lease: Lease, remote: _Remote, options: PullOptions, result: PullResult) -> None:
        self.store = store
        self.lease = lease
        self.remote = remote
        self.ref = remote.ref
        self.options = options
        self.result = result
        self._counted_manifests: set[Digest] = set()  # an index shared by several platforms counts once

    def plan(self) -> PullPlan:
        top_digest, top_type, top, fetched = self._resolve_top()
        targets = self._targets(top_digest, top_type, top)  # every check before anything is recorded
        if fetched is not None:  # resolved by tag: the top manifest is kept now that it resolved
            new = commit_bytes(self.store, self.lease, top_digest, fetched, top_type)
            self._count_manifest(top_digest, len(fetched), new=new)
        for target in targets:
            _check_image(target.image, self.ref)
        blobs = [blob for target in targets for blob in target.image.blobs]
        self.lease.add([d for target in targets for d, _ in target.chain] + [d.digest for d in blobs])
        missing = unique([d for d in blobs if not self._present(d)])
        return PullPlan(self.ref, targets, blobs, missing)

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
                data, media_type = self._manifest_by_digest(step.digest, f"manifest of {self.ref} ({desc.platform})")
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
        platform = platform_of_config(self._config_bytes(image))
        wrong = [str(p) for p in self.options.platforms if platform is None or not p.matches(Platform.parse(platform))]
        if wrong:
            raise PlatformMismatch(str(self.ref), platform, wrong)
        return platform

    def _config_bytes(self, image: ImageManifest) -> bytes:
        """The config of a plain manifest, from the store or into memory (nothing is stored before the check)."""
        config = image.config
        if self._present(config):
            return self.store.blobs.read(config.digest)
        sink = MemorySink()

        def check() -> None:  # wrong bytes from a mirror fall back to the next endpoint, as a blob's do
            data = bytes(sink.data)
            try:
                if len(data) != config.size:
                    raise SizeMismatch(config.digest, config.size, len(data))
                verify_bytes(data, config.digest, what="config")
            except IntegrityError:
                sink.restart()
                raise

        try:
            self.remote.client.download_blob(self.ref.repository, config.digest, sink, commit=check)
        except IntegrityError as exc:
            raise self.remote.wrong_bytes(exc, mf.blob_place(0, len(image.layers), str(self.ref))) from exc
        return bytes(sink.data)

    def _present(self, desc: Descriptor) -> bool:
        """In the store and still what was committed (its stat fingerprint, else a re-hash): a file
        changed since is downloaded again, and the commit replaces it."""
        return self.store.blobs.has(desc.digest, desc.size) and (
            trust.confirm(self.store, desc.digest, desc.size, desc.media_type) is None
        )

    def _resolve_top(self) -> tuple[Digest, str, ImageIndex | ImageManifest, bytes | None]:
        """What the reference names; by tag also its bytes, which the caller commits once they resolved."""
        if self.ref.digest is not None:
            data, media_type = self._manifest_by_digest(self.ref.digest, f"manifest of {self.ref}")
            return self.ref.digest, media_type, mf.parse(data, media_type), None
        fetched = self.options.fetched_top or self._fetch_manifest(self.ref.tag, f"manifest of {self.ref}")
        parsed = mf.parse(fetched.data, fetched.media_type)
        return fetched.digest, fetched.media_type, parsed, fetched.data

    def _manifest_by_digest(self, digest: Digest, place: str) -> tuple[bytes, str]:
        """Immutable content: the store's copy when it is intact, else the registry's."""
        stored = read_manifest(self.store, digest)
        if stored is not None and stored.intact:
            self._count_manifest(digest, len(stored.data), new=False)
            return stored.data, stored.media_type
        if stored is not None:
            log.info("the stored manifest %s changed after commit: fetching it again", digest)
        fetched = self._fetch_manifest(digest, place)
        new = commit_bytes(self.store, self.lease, digest, fetched.data, fetched.media_type)
        self._count_manifest(digest, len(fetched.data), new=new)
        return fetched.data, fetched.media_type

    def _fetch_manifest(self, reference: str | Digest, place: str) -> FetchedManifest:
        """One manifest from the registry; wrong bytes are named as a blob's are."""
        try:
            fetched = self.remote.client.get_manifest(self.ref.repository, reference)
        except IntegrityError as exc:
            raise self.remote.wrong_bytes(exc, place) from exc
        self.result.manifest_requests += 1
        return fetched

    def _count_manifest(self, digest: Digest, size: int, *, new: bool) -> None:
        """Manifests are blobs of the image too: downloaded when the store lacked them, else reused."""
        if digest not in self._counted_manifests:
            self._counted_manifests.add(digest)
            self.result.count(size=size, downloaded=new, received=size if new else 0)


class _Mover:
    """Step 2: the missing blobs, downloaded in parallel into the store; the rest counted as reused."""

    def __init__(
        self, store: Store, planned: PullPlan, remote: _Remote, options: PullOptions, result: PullResult
    ) -> None:
        self.store = store
        self.planned = planned
        self.remote = remote
        self.observer = options.observer
        self.jobs = options.jobs
        self.result = result

    def run(self) -> None:
        planned = self.planned
        self.observer.resolved(str(planned.ref), planned.blobs, planned.missing)
        tasks = [functools.partial(self._fetch_blob, desc) for desc in planned.missing]
        run_parallel(tasks, self.jobs, "cas-pull")
        fetched = {d.digest for d in planned.missing}
        for desc in unique(planned.blobs):
            if desc.digest not in fetched:
                self.result.count(size=desc.size, downloaded=False)

    def _fetch_blob(self, desc: Descriptor, cancelled: threading.Event) -> None:
        observer = self.observer

        received = 0  # bytes that crossed the network for this blob (not a resumed prefix)
        kept_from = 0  # the resumed prefix that survived: the stored blob needed the rest from the network

        def on_bytes(n: int) -> None:
            nonlocal received, kept_from
            if cancelled.is_set():
                raise Cancelled("pull cancelled after another blob failed")
            received += max(n, 0)
            if n < 0:  # the sink dropped bytes (it did so before telling)
                kept_from = min(kept_from, ing.offset)
            observer.blob_bytes(desc.digest, n)

        present = functools.partial(trust.unchanged, self.store, desc.digest)  # a changed file is replaced
        with self.store.ingests.open(desc.digest, desc.size, on_wait=observer.waiting, present=present) as ing:
            if ing.committed:  # another process stored it while we waited
                self.result.count(size=desc.size, downloaded=False)
                observer.blob_done(desc.digest, False)
                return
            kept_from = ing.offset
            if kept_from:
                observer.blob_bytes(desc.digest, kept_from)
            client = self.remote.client
            assert client.ranges is not None
            with client.ranges.budget.slot():  # this blob's own connection, out of the pull's total
                try:
                    client.download_blob(self.planned.ref.repository, desc.digest, ing, on_bytes, commit=ing.commit)
                except IntegrityError as exc:
                    raise self.remote.wrong_bytes(exc, self.planned.place(desc.digest)) from exc
            assert ing.info is not None
            record_blob(self.store, ing.info, desc.media_type)
        needed = desc.size - kept_from
        self.result.count(size=desc.size, downloaded=True, received=needed, discarded=max(0, received - needed))
        observer.blob_done(desc.digest, True)


def _record(store: Store, lease: Lease, planned: PullPlan, result: PullResult) -> None:
    """Step 3: one ref record per platform, now that every blob it lists is committed; records the
    downloads made whole lose their "needs pull" mark."""
    for target in planned.targets:
        result.records.append(
            record_image(
                store,
                lease,
                ref=str(planned.ref),
                registry=planned.ref.registry,
                chain=target.chain,
                image=target.image,
                platform=target.platform,
            )
        )
    clear_marks(store, {d.digest for d in planned.missing})


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
            place = mf.blob_place(position, len(image.layers), str(ref))
            raise UnsupportedManifest(f"{place} has unsupported media type {layer.media_type!r}")


class MemorySink:
    """A blob small enough to check in memory before anything is stored (a plain manifest's config;
    `cas inspect --remote`'s config)."""

    def __init__(self) -> None:
        self.data = bytearray()

    @property
    def offset(self) -> int:
        return len(self.data)

    def write(self, chunk: bytes) -> None:
        self.data += chunk

    def restart(self) -> None:
        self.data.clear()
