"""Push: copy a cached image from the store to a registry. The sibling of pull, with its shape.

Plan what the destination lacks (one HEAD per blob) -> move the missing blobs in
parallel (a cross-repository mount when the store knows another repository of the
same registry that holds the blob, else an upload streamed from the store file) ->
record (the manifests, last: an index's children by digest, then the top manifest
under the destination's tag). Nothing is tagged before every blob is in place, so a
push that fails midway leaves no manifest naming a missing blob at the destination.

Manifests go out byte for byte as stored, so the destination's digest is the source's.
A multi-platform reference pushes its index only when every child manifest and all of
their blobs are in the store; otherwise ``platform`` picks the one manifest to push.
Every byte is read from the store and checked against its digest before the request
that commits it at the registry completes (see ``cas.registry.upload``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cas import DEFAULT_LOCK_TIMEOUT
from cas import manifest as mf
from cas.digest import Digest
from cas.errors import (
    BadReference,
    Cancelled,
    CasError,
    ChangedBlobs,
    IntegrityError,
    MissingBlobs,
    NotCached,
    PlatformNotFound,
    StoreError,
    UnsupportedManifest,
)
from cas.manifest import Descriptor, ImageIndex, ImageManifest, Platform
from cas.record_image import unique
from cas.records import RefRecord, matching
from cas.reference import Reference
from cas.reference import parse as parse_reference
from cas.settings import DEFAULT_JOBS
from cas.store import Store, trust
from cas.stored_manifest import StoredManifest, read_manifest
from cas.transfer import TransferObserver, run_parallel

if TYPE_CHECKING:
    from cas.registry import Credentials
    from cas.registry.upload import Uploader

log = logging.getLogger("cas.push")


@dataclass
class PushOptions:
    platform: Platform | None = None  # push this platform's manifest of an index, not the index
    jobs: int = DEFAULT_JOBS  # blobs at once
    insecure: bool = False
    credentials: Credentials | None = None  # for DEST's registry
    observer: TransferObserver = field(default_factory=TransferObserver)
    lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT


@dataclass
class PushPlan:
    """What a push sends, read and verified from the store before any request."""

    source: str
    manifests: list[StoredManifest]  # an index's children first; the top one (tagged) last
    blobs: list[Descriptor]  # configs and layers, each digest once
    platforms: list[str]

    @property
    def top(self) -> StoredManifest:
        return self.manifests[-1]


@dataclass
class PushResult:
    ref: str
    destination: str
    plan: PushPlan
    uploaded_blobs: int = 0
    uploaded_bytes: int = 0
    mounted_blobs: int = 0
    mounted_bytes: int = 0
    skipped_blobs: int = 0
    skipped_bytes: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, kind: str, desc: Descriptor) -> None:
        with self._lock:
            setattr(self, f"{kind}_blobs", getattr(self, f"{kind}_blobs") + 1)
            setattr(self, f"{kind}_bytes", getattr(self, f"{kind}_bytes") + desc.size)

    def to_json(self) -> dict:
        return {
            "ref": self.ref,
            "destination": self.destination,
            "digest": str(self.plan.top.digest),
            "media_type": self.plan.top.media_type,
            "platforms": self.plan.platforms,
            "manifest_count": len(self.plan.manifests),
            "uploaded_blobs": self.uploaded_blobs,
            "uploaded_bytes": self.uploaded_bytes,
            "mounted_blobs": self.mounted_blobs,
            "mounted_bytes": self.mounted_bytes,
            "skipped_blobs": self.skipped_blobs,
            "skipped_bytes": self.skipped_bytes,
            "seconds": round(self.seconds, 3),
        }


def push(store: Store, source: Reference, dest: Reference, options: PushOptions | None = None) -> PushResult:
    options = options or PushOptions()
    started = time.monotonic()
    with store.lock(shared=True, timeout=options.lock_timeout, on_wait=options.observer.waiting):
        with store.metadata.lease() as lease:
            planned = plan(store, source, options.platform)
            lease.add([m.digest for m in planned.manifests] + [d.digest for d in planned.blobs])
            _check_destination(dest, planned)
            result = PushResult(str(source), str(dest), planned)
            with _Session(store, dest, options, result, _mount_sources(store, source, dest)) as session:
                session.run()
            _remember(store, dest, planned)
    store.metadata.touch_refs(store.metadata.ref_records(str(source)))  # every platform the push read
    result.seconds = time.monotonic() - started
    return result


def plan(store: Store, source: Reference, platform: Platform | None) -> PushPlan:
    """The manifests and blobs to push, every one present in the store (else an error naming them).

    With ``platform``, every record of ``source`` is asked: a platform imported or pulled alone is
    a record of its own, whose top may be its manifest while another record's is the index.
    """
    records = store.metadata.ref_records(str(source))
    fits = matching(records, platform) if platform is not None else []
    if fits:
        return _recorded_platform(store, source, max(fits, key=lambda r: r.pulled))
    top, record_platform = _top_manifest(store, source, records)
    parsed = mf.parse(top.data, top.media_type)
    if isinstance(parsed, ImageManifest):
        if platform is not None and record_platform and not platform.matches(Platform.parse(record_platform)):
            raise PlatformNotFound(str(platform), [r.platform for r in records if r.platform] or [record_platform])
        _check_blobs(store, source, [(top, parsed)])
        return PushPlan(str(source), [top], unique(list(parsed.blobs)), [p for p in [record_platform] if p])
    if platform is not None:
        chosen = parsed.select(platform)
        child = _child(store, chosen)
        if child is None:
            raise NotCached(
                f"{source} for {chosen.platform} is not in the store",
                hint=f"run `cas pull --platform {platform} {source}` first",
            )
        _check_blobs(store, source, [child])
        return PushPlan(str(source), [child[0]], unique(list(child[1].blobs)), [str(chosen.platform)])
    return _whole_index(store, source, top, parsed)


def _whole_index(store: Store, source: Reference, top: StoredManifest, index: ImageIndex) -> PushPlan:
    children, lacking = [], []
    for desc in index.manifests:
        child = _child(store, desc)
        if child is None or any(not store.blobs.has(b.digest, b.size) for b in child[1].blobs):
            lacking.append(str(desc.platform or desc.digest))
        else:
            children.append(child)
    if lacking:
        cached = [str(d.platform) for d in index.manifests if str(d.platform or d.digest) not in lacking]
        raise NotCached(
            f"{source} is a multi-platform image and not all of it is cached: missing {', '.join(lacking)}",
            hint=f"push one platform with --platform ({', '.join(cached) or 'none is cached'}), "
            f"or `cas pull --platform P {source}` for each missing one",
        )
    blobs = unique([b for _, image in children for b in image.blobs])
    platforms = [str(d.platform) for d in index.manifests if d.platform is not None]
    return PushPlan(str(source), [m for m, _ in children] + [top], blobs, platforms)


def _recorded_platform(store: Store, source: Reference, record: RefRecord) -> PushPlan:
    """One platform's manifest, as its record names it."""
    entry = record.entry(record.manifest)
    assert entry is not None  # RefRecord.from_json checked that it lists its manifest
    child = _child(store, Descriptor(entry.media_type, entry.digest, entry.size))
    if child is None:
        raise MissingBlobs([f"{record.manifest} (manifest of {record.name})"], [str(source)], action="push")
    _check_blobs(store, source, [child])
    return PushPlan(str(source), [child[0]], unique(list(child[1].blobs)), [p for p in [record.platform] if p])


def _top_manifest(store: Store, source: Reference, records: list[RefRecord]) -> tuple[StoredManifest, str | None]:
    """The manifest or index ``source`` names in the store, and the platform its record gives."""
    # every platform pulled of one tag names the same top (its index); the latest pull wins if it moved
    record = max(records, key=lambda r: r.pulled) if records else None
    if record is not None:
        digest, media_type = record.digest, record.media_type
    elif source.digest is not None and store.blobs.has(source.digest):
        digest, media_type = source.digest, None
    else:
        raise NotCached.references([str(source)], hint=f"run `cas pull {source}` first")
    manifest = _read_manifest(store, digest, media_type)
    if manifest is None:
        raise MissingBlobs([f"{digest} (manifest of {source})"], [str(source)], action="push")
    return manifest, record.platform if record is not None else None


def _child(store: Store, desc: Descriptor) -> tuple[StoredManifest, ImageManifest] | None:
    manifest = _read_manifest(store, desc.digest, desc.media_type or None)
    if manifest is None:
        return None
    image = mf.parse(manifest.data, manifest.media_type)
    if not isinstance(image, ImageManifest):
        raise UnsupportedManifest(f"nested index {desc.digest} is not supported")
    return manifest, image


def _read_manifest(store: Store, digest: Digest, media_type: str | None) -> StoredManifest | None:
    """The stored bytes, checked against their digest; None when the store lacks them."""
    manifest = read_manifest(store, digest, media_type)
    if manifest is not None and not manifest.intact:
        raise IntegrityError(
            f"manifest {digest} in the store does not match its digest; nothing was pushed",
            hint="run `cas verify --repair`, then pull the image again",
        )
    return manifest


def _check_blobs(store: Store, source: Reference, images: list[tuple[StoredManifest, ImageManifest]]) -> None:
    """Every config and layer present with its size, and still the bytes committed (the stat
    fingerprint, ``cas.store.trust``), before the first request: else each one is named."""
    missing, changed = [], []
    for manifest, image in images:
        for position, desc in enumerate(image.blobs):
            where = mf.blob_place(position, len(image.layers), str(source))
            named = f"{desc.digest} ({where}, manifest {manifest.digest.short})"
            if not store.blobs.has(desc.digest, desc.size):
                missing.append(named)
            elif (problem := trust.confirm(store, desc.digest, desc.size, desc.media_type)) is not None:
                changed.append(f"{named}: {problem}")
    if missing:
        raise MissingBlobs(missing, [str(source)], action="push")
    if changed:
        raise ChangedBlobs(changed, [str(source)], "nothing was pushed", action="push")


def _check_destination(dest: Reference, planned: PushPlan) -> None:
    if dest.digest is not None and dest.digest != planned.top.digest:
        raise BadReference(
            f"destination {dest} names digest {dest.digest}, but {planned.source} is {planned.top.digest}",
            hint="push by tag, or name the digest being pushed",
        )


def _mount_sources(store: Store, source: Reference, dest: Reference) -> dict[Digest, str]:
    """For each blob the store knows to be in another repository of the destination's registry: one such
    repository (the source's own first, then pulled references, then earlier pushes). A mount that turns
    out wrong costs one request: the registry opens a normal upload instead."""
    found: dict[Digest, str] = {}
    own = source.registry == dest.registry
    located = sorted(_locations(store, dest.registry), key=lambda item: not (own and item[0] == source.repository))
    for repository, digests in located:
        if repository == dest.repository:
            continue
        for text in digests:
            try:
                found.setdefault(Digest.parse(text), repository)
            except CasError:
                continue
    return found


def _locations(store: Store, registry: str) -> Iterator[tuple[str, list[object]]]:
    """``(repository, blob digests)`` the store knows to be in ``registry``: pulled references, then pushes."""
    for record in store.metadata.refs(malformed=[]):
        if record.registry != registry:
            continue
        try:
            repository = parse_reference(record.ref).repository
        except BadReference:
            continue
        yield repository, [str(digest) for digest in record.unique_blobs]
    yield from store.metadata.pushed(registry)


def _remember(store: Store, dest: Reference, planned: PushPlan) -> None:
    """The destination holds every blob now: the next push to its registry may mount them from there."""
    try:
        store.metadata.put_pushed(dest.registry, dest.repository, [d.digest for d in planned.blobs])
    except StoreError as exc:  # the push itself succeeded; only the shortcut for the next one is lost
        log.warning("could not remember the blobs pushed to %s: %s", dest.name, exc.message)


class _Session:
    """One push to one destination repository over one registry client."""

    def __init__(
        self, store: Store, dest: Reference, options: PushOptions, result: PushResult, mounts: dict[Digest, str]
    ) -> None:
        from cas.registry import RegistryClient  # httpx only when something is pushed
        from cas.registry.endpoints import Sources
        from cas.registry.upload import Uploader

        self.store = store
        self.dest = dest
        self.options = options
        self.result = result
        wanted = {d.digest for d in result.plan.blobs}
        self.mounts = {digest: repo for digest, repo in mounts.items() if digest in wanted}
        self.client = RegistryClient(
            dest.api_host,
            endpoints=Sources.from_env().own_endpoints(dest, insecure=options.insecure),
            insecure=options.insecure,
            credentials=options.credentials,
            token_cache=store.metadata,
            on_retry=options.observer.retrying,
        )
        self.uploader: Uploader = Uploader(self.client, dest.repository, mount_from=tuple(self.mounts.values()))

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def run(self) -> None:
        planned, observer = self.result.plan, self.options.observer
        reference = self.dest.tag or str(planned.top.digest)
        # Alone first (its 401 gets the token the parallel requests then share), and a shortcut: a
        # tag that already names this digest was accepted with every blob, so nothing is left to do.
        if self.uploader.manifest_digest(reference) == planned.top.digest:
            observer.resolved(str(self.dest), planned.blobs, [])
            for desc in planned.blobs:
                self.result.count("skipped", desc)
            return
        present: set[Digest] = set()
        run_parallel([functools.partial(self._probe, d, present) for d in planned.blobs], self.options.jobs, "cas-head")
        missing = [d for d in planned.blobs if d.digest not in present]
        observer.resolved(str(self.dest), planned.blobs, missing)
        for desc in planned.blobs:
            if desc.digest in present:
                self.result.count("skipped", desc)
        run_parallel([functools.partial(self._move, d) for d in missing], self.options.jobs, "cas-push")
        for child in planned.manifests[:-1]:
            self.uploader.put_manifest(str(child.digest), child.data, child.media_type, child.digest)
        top = planned.top
        self.uploader.put_manifest(reference, top.data, top.media_type, top.digest)

    def _probe(self, desc: Descriptor, present: set[Digest], cancelled: threading.Event) -> None:
        if not cancelled.is_set() and self.uploader.has_blob(desc.digest):
            present.add(desc.digest)  # set.add is atomic

    def _move(self, desc: Descriptor, cancelled: threading.Event) -> None:
        observer = self.options.observer
        session = None
        source = self.mounts.get(desc.digest)
        if source is not None:
            session = self.uploader.mount(desc.digest, source)
            if session is None:
                observer.blob_bytes(desc.digest, desc.size)
                self.result.count("mounted", desc)
                observer.blob_done(desc.digest, False)
                return

        def on_bytes(n: int) -> None:
            if cancelled.is_set():
                raise Cancelled("push cancelled after another blob failed")
            observer.blob_bytes(desc.digest, n)

        opener = functools.partial(self.store.blobs.open, desc.digest)
        self.uploader.upload(desc.digest, desc.size, opener, on_bytes, session)
        self.result.count("uploaded", desc)
        observer.blob_done(desc.digest, True)
