"""Prune: mark from refs and live leases, sweep every other blob and stale ingest entry.

Stale means no pull can resume it (``IngestEntry.resumable``, the rule verify uses too);
a resumable partial download is kept, except by ``--all``, which empties the store.

The order is diskcache's: change the index first (one ``BEGIN IMMEDIATE``
transaction that re-reads the roots, then forgets the evicted refs and the
swept blob records), delete files second. A crash in between leaves only files
that nothing in the index names; the next prune removes them. The walk of
``blobs/`` and ``ingest/`` happens before that transaction: under the exclusive
store lock no file changes, so index writers (``cas rm``, lease clean-up) are
blocked only while the index itself is re-read and changed.

Roots are the blobs listed by every kept ref record plus every digest held by
a live lease (a running pull or export). The sweep runs under the store lock
held exclusively, so no pull or export (they hold it shared) is mid-way.

Files are removed through directory descriptors opened with ``O_NOFOLLOW``
below ``blobs/``: a symlink is unlinked as a link and never followed, so a
prune cannot delete anything outside the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cas import DEFAULT_LOCK_TIMEOUT
from cas.digest import Digest
from cas.errors import StoreError
from cas.records import PREFIX, ref_of_key
from cas.snapshot import Image, Snapshot, Stray, read_disk, read_index, snapshot
from cas.store import IngestEntry, Store
from cas.store.remover import Remover

SWEEPERS = 8  # blob files unlinked at once


@dataclass(frozen=True)
class Policy:
    """What a prune may evict besides unreferenced blobs."""

    keep_storage: int | None = None  # evict LRU images until blob bytes fit
    older_than: float | None = None  # evict images unused for this many seconds
    everything: bool = False  # evict every image (`--all`)
    # The size budget's sparing (cas.budget): these (ref, platform) are never evicted (what the running
    # command pulled or used), nor, with ``spare_in_use``, an image a lease holds a blob of (a running command).
    spare: frozenset[tuple[str, str | None]] = frozenset()
    spare_in_use: bool = False

    def spares(self, image: Image, leased: set[str]) -> bool:
        if (image.ref, image.platform) in self.spare:
            return True
        return self.spare_in_use and any(digest in leased for digest, _ in image.blobs)


# planning ----------------------------------------------------------------


@dataclass
class Plan:
    """What a prune removes (or removed), and what it keeps."""

    dry_run: bool
    images: list[Image]  # evicted by the policy, least recently used first
    blobs: list[tuple[str, int, bool]]  # (digest, bytes on disk, has an index record)
    strays: list[Stray]
    ingests: list[IngestEntry]  # stale: no process holds their lock
    kept_images: int
    kept_blobs: int
    kept_bytes: int  # blob bytes left after the prune
    leased_blobs: int  # digests held only by running pulls/exports that the policy would otherwise free
    target: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return (
            sum(b for _, b, _ in self.blobs) + sum(s.size for s in self.strays) + sum(i.partial for i in self.ingests)
        )

    @property
    def over_target(self) -> bool:
        return self.target is not None and self.kept_bytes > self.target

    def freed_by_image(self) -> tuple[list[tuple[Image, int]], int]:
        """What each evicted image freed, and the bytes of removed blobs no evicted image listed.

        A blob two evicted images shared is counted once, for the one evicted first.
        """
        removed = {digest: size for digest, size, _ in self.blobs}
        claimed: set[str] = set()
        per_image = []
        for image in self.images:
            mine = {digest for digest, _ in image.blobs if digest in removed} - claimed
            claimed |= mine
            per_image.append((image, sum(removed[digest] for digest in mine)))
        return per_image, sum(size for digest, size in removed.items() if digest not in claimed)

    def to_json(self) -> dict:
        """The `cas prune --json` fields (conventions in cas.jsonout); a dry run reports what would go."""
        from cas.jsonout import timestamp

        per_image, unreferenced = self.freed_by_image()
        return {
            "dry_run": self.dry_run,
            "freed_bytes": self.freed_bytes,
            "freed_images": len(self.images),
            "freed_blobs": len(self.blobs),
            "freed_stray_files": len(self.strays),
            "freed_stale_downloads": len(self.ingests),
            "images": [
                {
                    "ref": i.ref,
                    "platform": i.platform,
                    "size": i.size,
                    "freed_bytes": freed,
                    "used_at": timestamp(i.used or None),
                }
                for i, freed in per_image
            ],
            "unreferenced_bytes": unreferenced,
            "blobs": [{"digest": d, "size": b, "indexed": x} for d, b, x in self.blobs],
            "stray_files": [{"path": str(s.path), "size": s.size, "kind": s.kind} for s in self.strays],
            "stale_downloads": [
                {"digest": i.label, "partial_bytes": i.partial, "started_at": timestamp(i.started)}
                for i in self.ingests
            ],
            "kept_images": self.kept_images,
            "kept_blobs": self.kept_blobs,
            "kept_bytes": self.kept_bytes,
            "leased_blobs": self.leased_blobs,
            "keep_storage_bytes": self.target,
            "over_target": self.over_target,
            "errors": self.errors,
        }


def plan(snap: Snapshot, policy: Policy, *, now: float | None = None, dry_run: bool = True) -> Plan:
    if any(k.startswith(PREFIX) for k in snap.bad_keys):
        bad = ", ".join(ref_of_key(k) for k in snap.bad_keys if k.startswith(PREFIX))
        raise StoreError(
            f"cannot prune: malformed ref record(s) in the index: {bad}",
            hint="run `cas verify --repair` (it drops them), then prune again",
        )
    now = time.time() if now is None else now
    counts = snap.refcounts()
    files = snap.files
    leased = snap.leased

    def release(image: Image) -> int:
        """Drop one image's claims; the bytes that became free."""
        freed = 0
        for digest, _ in image.blobs:
            counts[digest] -= 1
            if counts[digest] == 0 and digest not in leased:
                freed += files.get(digest, 0)
        return freed

    lru = sorted(
        (i for i in snap.images.values() if not policy.spares(i, leased)),
        key=lambda i: (i.used, i.ref, i.platform or ""),
    )
    evicted: list[Image] = []
    if policy.everything:
        evicted, lru = lru, []
    elif policy.older_than is not None:
        cutoff = now - policy.older_than
        evicted = [i for i in lru if i.used < cutoff]
        lru = [i for i in lru if i.used >= cutoff]
    for image in evicted:
        release(image)

    live = {d for d, c in counts.items() if c > 0} | leased
    live_bytes = sum(files.get(d, 0) for d in live)
    if policy.keep_storage is not None:
        while lru and live_bytes > policy.keep_storage:
            image = lru.pop(0)
            evicted.append(image)
            live_bytes -= release(image)
        live = {d for d, c in counts.items() if c > 0} | leased

    referenced = {d for d, c in counts.items() if c > 0}
    candidates = files.keys() | snap.indexed.keys()
    blobs = sorted((d, files.get(d, 0), d in snap.indexed) for d in candidates if d not in live)
    held = sum(1 for d in leased if d not in referenced and d in candidates)
    kept = [d for d in candidates if d in live]
    return Plan(
        dry_run=dry_run,
        images=evicted,
        blobs=blobs,
        strays=list(snap.strays),
        # stale downloads only; --all empties the store, resumable downloads included
        ingests=snap.stale_ingests(now) + (snap.resumable_ingests(now) if policy.everything else []),
        kept_images=len(snap.images) - len(evicted),
        kept_blobs=len(kept),
        kept_bytes=sum(files.get(d, 0) for d in kept),
        leased_blobs=held,
        target=policy.keep_storage,
    )


# prune -------------------------------------------------------------------


def prune(
    store: Store,
    policy: Policy = Policy(),
    *,
    dry_run: bool = False,
    lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
    on_wait: Callable[[str], None] | None = None,
    now: float | None = None,
    walk: bool = True,
) -> Plan:
    """Remove what no kept image and no running pull or export needs; return what went.

    A dry run reads a snapshot and changes nothing. A real prune releases the store's
    ballast (room for its index transaction on a full disk), takes the store lock
    exclusively, then marks, forgets and sweeps while holding it.

    ``walk=False`` (the size budget, cas.budget) trusts the index for what blobs/ holds and
    leaves stray files and stale downloads to the next `cas prune`: an eviction after every
    pull must not walk the store.
    """
    if dry_run:
        return plan(snapshot(store), policy, now=now, dry_run=True)
    with store.ballast.released(), store.lock(shared=False, timeout=lock_timeout, on_wait=on_wait):
        index = store.metadata
        snap = Snapshot()
        if walk:
            read_disk(store, snap)  # outside the transaction: no file changes under the exclusive lock
        with index.transact():  # roots re-read and index changed in one BEGIN IMMEDIATE
            read_index(store, snap)
            if not walk:
                snap.files = {digest: record["size"] for digest, record in snap.indexed.items()}
            result = plan(snap, policy, now=now, dry_run=False)
            index.remove_refs(image.record for image in result.images)
            index.remove_blobs(
                {Digest.parse(digest): snap.indexed[digest]["size"] for digest, _, indexed in result.blobs if indexed}
            )
        if result.images:
            store.write_layout_index()
        remover = Remover(store.blobs.blobs_dir)
        try:  # report only what went: a file that could not be removed is in errors, not in freed
            result.blobs = _sweep_blobs(remover, result.blobs, snap.files, result.errors)
            result.strays = [s for s in result.strays if remover.remove_path(s.path, result.errors)]
        finally:
            remover.close()
        result.ingests = [i for i in result.ingests if store.ingests.remove(i)]
    return result


def _sweep_blobs(remover: Remover, blobs: list, files: dict[str, int], errors: list[str]) -> list:
    """Delete the swept blobs' files, SWEEPERS threads each taking an equal share; the blobs that went, in order.

    Freeing a file's blocks is most of an unlink's cost and runs in parallel (on ext4, 4 threads
    unlink about 4x faster), which is what keeps an eviction of a thousand images short. A share per
    thread, not a task per file: the thread pool's own cost per task was a third of the sweep's. The
    first blob of each algorithm goes alone, so the remover opens that directory once.
    """
    firsts = list({Digest.parse(b[0]).algorithm: b for b in reversed(blobs)}.values())

    def sweep(share: list[tuple[str, int, bool]]) -> list[int]:
        return [id(b) for b in share if _sweep_blob(remover, b[0], b[0] in files, errors)]

    went = set(sweep(firsts))
    rest = [b for b in blobs if not any(b is f for f in firsts)]
    with ThreadPoolExecutor(max_workers=SWEEPERS, thread_name_prefix="cas-sweep") as pool:
        for swept in pool.map(sweep, [rest[i::SWEEPERS] for i in range(SWEEPERS)]):
            went.update(swept)
    return [b for b in blobs if id(b) in went]


def _sweep_blob(remover: Remover, digest: str, on_disk: bool, errors: list[str]) -> bool:
    """Delete a swept blob's file; True when it went (or it had none and dropping its record was all)."""
    failures = len(errors)
    removed = remover.remove_blob(Digest.parse(digest), errors)
    return removed or (not on_disk and len(errors) == failures)
