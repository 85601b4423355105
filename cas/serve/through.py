"""Pull-through: what the store lacks is fetched from the upstream through cas's own pull path.

- A tag is re-resolved at the upstream at most every ``tag_ttl`` seconds. When it names
  something the store has no record of, ``cas.pull.pull`` runs in the background (every
  platform, recorded as an image as `cas pull` records it); the client's manifest is
  served as soon as that pull has committed the manifests, before its blobs arrive. When
  the upstream cannot be reached, the cached tag is served and the log says so.
- A blob the store lacks is downloaded once (the store's per-digest ingest lock makes a
  background pull and every client share one download) into an ingest entry, and each
  client follows that entry as it grows (``cas.serve.follow``).
Every byte still enters through ``Ingest.commit()``; the store lock is held shared and the
digests leased while anything is fetched, as a pull does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cas import budget
from cas.digest import Digest
from cas.errors import CasError, NotFound, RegistryError
from cas.manifest import Descriptor
from cas.pull import PullOptions, pull
from cas.record_image import record_blob
from cas.reference import Reference
from cas.reference import parse as parse_reference
from cas.registry import FetchedManifest, RegistryClient
from cas.registry.endpoints import Sources
from cas.registry.shared import KeyedPool
from cas.serve.errcode import ServeError
from cas.serve.names import Name
from cas.store import Store
from cas.transfer import TransferObserver

DEFAULT_TAG_TTL = 60.0
WAIT = 300.0  # seconds a request waits for a background pull to reach its manifests


@dataclass
class Task:
    """One background transfer: ``ready`` once the client may be answered, ``done`` at its end."""

    ready: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def wait_ready(self) -> None:
        self.ready.wait(WAIT)
        if self.error is not None:
            raise _mapped(self.error)


class _Resolved(TransferObserver):
    def __init__(self, task: Task, known: dict[Digest, Descriptor]) -> None:
        self.task = task
        self.known = known

    def resolved(self, ref: str, blobs: list[Descriptor], missing: list[Descriptor]) -> None:
        self.known.update({d.digest: d for d in blobs})
        self.task.ready.set()  # the manifests are committed; the blobs follow


class PullThrough:
    def __init__(
        self,
        store: Store,
        tag_ttl: float = DEFAULT_TAG_TTL,
        say: Callable[[str], None] = print,
        limits: budget.Budget | None = None,
    ) -> None:
        self.store = store
        self.tag_ttl = tag_ttl
        self.say = say
        self.limits = limits  # the size budget, kept after each image pulled through
        self.known: dict[Digest, Descriptor] = {}  # blobs of manifests fetched through: size and media type
        self._sizes: dict[Digest, int] = {}  # blobs asked for before any manifest listing them: the upstream's size
        self.fetched: dict[str, int] = {}  # bytes fetched per upstream registry
        self._checked: dict[str, tuple[float, Digest]] = {}  # tag reference -> when the upstream resolved it, to what
        self._pulls: dict[str, Task] = {}
        self._fetches: dict[Digest, Task] = {}
        self._clients: KeyedPool[RegistryClient] = KeyedPool()  # by repository
        self._lock = threading.Lock()

    def resolve(self, name: Name, tag: str, cached: Digest | None) -> Digest | None:
        """The digest to serve for ``name:tag`` when it is not ``cached`` (the store's), else None.

        Within ``tag_ttl`` of asking the upstream, the answer it gave stands, also while its pull
        has not yet recorded the tag: a client asking twice costs one upstream request.
        """
        ref = name.ref(tag)
        checked = self._checked.get(ref)
        pulling = self._pulls.get(str(parse_reference(ref)))
        if checked is not None and time.monotonic() - checked[0] < self.tag_ttl and not _failed(pulling):
            if pulling is not None and checked[1] != cached:
                pulling.wait_ready()
            return None if checked[1] == cached else checked[1]
        try:
            fetched = self._client(name).get_manifest(name.repository, tag)
        except RegistryError as exc:
            if cached is None or isinstance(exc, NotFound):
                raise _mapped(exc) from None
            self.say(f"{name.registry} unreachable ({exc.message}): serving the cached {ref}")
            return None
        self._checked[ref] = (time.monotonic(), fetched.digest)
        if fetched.digest == cached:
            return None
        self._pull(parse_reference(ref), fetched).wait_ready()  # the pull takes these bytes: one request
        return fetched.digest

    def manifest(self, name: Name, digest: Digest) -> None:
        """Bring a manifest named by digest into the store (its image pulled in the background)."""
        self._pull(parse_reference(name.ref(str(digest)))).wait_ready()

    def size(self, name: Name, digest: Digest) -> int | None:
        """A missing blob's size, so the client gets a Content-Length: from a manifest fetched through
        here, else from a HEAD at the upstream; None when the upstream does not say."""
        desc = self.known.get(digest)
        if desc is not None:
            return desc.size
        if digest in self._sizes:
            return self._sizes[digest]
        try:
            size = self._client(name).blob_size(name.repository, digest)
        except NotFound:
            raise ServeError(
                "BLOB_UNKNOWN", f"blob {digest} is not at {name.registry}", {"digest": str(digest)}
            ) from None
        except RegistryError as exc:
            raise _mapped(exc) from None
        if size is not None:
            self._sizes[digest] = size
        return size

    def blob(self, name: Name, digest: Digest) -> Task:
        """The one download of ``digest`` (started now unless one runs); ``ready`` once its ingest entry exists."""
        with self._lock:
            task = self._fetches.get(digest)
            if task is None or task.done.is_set():
                task = self._fetches[digest] = Task()
                threading.Thread(target=self._fetch, args=(name, digest, task), daemon=True).start()
        return task

    def _pull(self, reference: Reference, fetched: FetchedManifest | None = None) -> Task:
        with self._lock:
            task = self._pulls.get(str(reference))
            if task is None or task.done.is_set():
                task = self._pulls[str(reference)] = Task()
                threading.Thread(target=self._run_pull, args=(reference, fetched, task), daemon=True).start()
        return task

    def _run_pull(self, reference: Reference, fetched: FetchedManifest | None, task: Task) -> None:
        options = PullOptions(all_platforms=True, observer=_Resolved(task, self.known), fetched_top=fetched)
        result = None
        try:
            result = pull(self.store, reference, options)
            self._count(reference.registry, result.downloaded_bytes)
            self.say(f"pulled through {result.ref}: {result.downloaded_blobs} blob(s), {result.downloaded_bytes} bytes")
        except BaseException as exc:  # handed to the waiting request; a thread has no one else to tell
            task.error = exc
            self.say(f"pull-through of {reference} failed: {getattr(exc, 'message', exc)}")
        finally:
            task.ready.set()
            task.done.set()
        if result is not None and result.downloaded_blobs and self.limits is not None:
            self._keep_budget([(record.ref, record.platform) for record in result.records])

    def _keep_budget(self, pulled: list[tuple[str, str | None]]) -> None:
        """New blobs were committed: back under the budget now, as after `cas pull` (what was just
        pulled, and what any client is being served, is spared); never fails the pull."""
        eviction = budget.keep(self.store, self.limits, pulled)
        for line in eviction.lines() if eviction is not None else ():
            self.say(line)

    def _fetch(self, name: Name, digest: Digest, task: Task) -> None:
        """One blob into the store by the commit protocol (the ingest lock makes it the only download)."""
        try:
            with self.store.lock(shared=True), self.store.metadata.lease([digest]):
                desc = self.known.get(digest)
                with self.store.ingests.open(digest, desc.size if desc else self._sizes.get(digest)) as ingest:
                    task.ready.set()
                    if not ingest.committed:
                        self._client(name).download_blob(name.repository, digest, ingest, commit=ingest.commit)
                        assert ingest.info is not None
                        if desc is not None:  # else the pull that lists it records it, with its media type
                            record_blob(self.store, ingest.info, desc.media_type)
                        self._count(name.registry, ingest.info.size)
        except BaseException as exc:  # the followers see it and cut their connections
            task.error = exc
            self.say(f"pull-through of {digest} from {name.registry} failed: {getattr(exc, 'message', exc)}")
        finally:
            task.ready.set()
            task.done.set()

    def _client(self, name: Name) -> RegistryClient:
        """One client per repository: its endpoints name the repository (a mirror may map it)."""
        return self._clients.get(str(name), lambda: self._make_client(name))

    def _make_client(self, name: Name) -> RegistryClient:
        reference = parse_reference(f"{name}:latest")
        endpoints = Sources.from_env().endpoints(reference)
        return RegistryClient(reference.api_host, endpoints=endpoints, token_cache=self.store.metadata)

    def _count(self, registry: str, n: int) -> None:
        with self._lock:
            self.fetched[registry] = self.fetched.get(registry, 0) + n

    def close(self) -> None:
        self._clients.close()


def _failed(task: Task | None) -> bool:
    return task is not None and task.done.is_set() and task.error is not None


def _mapped(exc: BaseException) -> ServeError:
    if isinstance(exc, NotFound):
        return ServeError("MANIFEST_UNKNOWN", f"not at the upstream: {exc.message}")
    if isinstance(exc, CasError):
        return ServeError(
            "UNAVAILABLE", f"pull-through failed: {exc.message}", {"hint": exc.hint} if exc.hint else None
        )
    return ServeError("UNAVAILABLE", f"pull-through failed: {exc}")
