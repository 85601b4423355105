"""The size budget, kept after every write: over ``max-size``, evict least-recently-used images.

A command that committed blobs (pull, import, export --pull) calls ``keep`` when it is done. Knowing
the store's size is one index read (the running total, cas.metadata), never a walk. Over the budget,
or with images unused for ``max-age``, it runs prune's eviction (its LRU, its safety and its lock)
down to a low-water mark, LOW_WATER of the budget, so that the next pull does not evict again.

What it never evicts: the images the running command pulled or used, an image a lease holds a blob
of (a running pull or export), and what prune never removes. It waits for the store lock only
LOCK_WAIT seconds: a long pull beside it keeps its shared lock, and then this command leaves the
eviction to the next write rather than hold anyone up. A budget never fails a command: an image
bigger than the budget alone is kept, with a warning.

Checking ``max-age`` while nothing writes is for a long-running `cas serve`, once it exists.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from cas import gc, stats
from cas.errors import LockTimeout, StoreError
from cas.snapshot import Image
from cas.store import Store

LOW_WATER = 0.9  # evict down to this share of max-size
LOCK_WAIT = 10.0  # seconds an eviction waits for the store lock before leaving it to the next write


@dataclass(frozen=True)
class Budget:
    max_size: int | None = None  # bytes of blobs
    max_age: float | None = None  # seconds since an image was last pulled or exported
    origin: str = ""  # where max-size came from: "--max-size", "$CAS_MAX_SIZE", "FILE:LINE"

    @property
    def set(self) -> bool:
        return self.max_size is not None or self.max_age is not None


@dataclass
class Eviction:
    """What keeping the budget did after one command."""

    budget: Budget
    store_bytes: int  # blob bytes after it (the running total)
    images: list[tuple[Image, int]] = field(default_factory=list)  # evicted, LRU first, with the bytes each freed
    freed_bytes: int = 0  # everything the eviction removed (unreferenced blobs and stale downloads too)
    too_big: list[Image] = field(default_factory=list)  # spared images each bigger than the budget alone
    skipped: str | None = None  # why nothing was evicted although the budget asked for it
    seconds: float = 0.0  # the eviction, its wait for the store lock included

    @property
    def over(self) -> bool:
        return self.budget.max_size is not None and self.store_bytes > self.budget.max_size

    def to_json(self) -> dict:
        return {
            "max_size": self.budget.max_size,
            "max_size_from": self.budget.origin or None,
            "max_age_seconds": self.budget.max_age,
            "low_water_bytes": _low_water(self.budget.max_size),
            "store_bytes": self.store_bytes,
            "over_budget": self.over,
            "evicted_images": len(self.images),
            "evicted_bytes": self.freed_bytes,
            "images": [
                {"ref": i.ref, "platform": i.platform, "size": i.size, "freed_bytes": freed} for i, freed in self.images
            ],
            "kept_too_big": [{"ref": i.ref, "platform": i.platform, "size": i.size} for i in self.too_big],
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
        }


def keep(
    store: Store,
    budget: Budget,
    spare: Iterable[tuple[str, str | None]],
    *,
    lock_timeout: float | None = LOCK_WAIT,
    now: float | None = None,
) -> Eviction | None:
    """Bring the store back under ``budget``; None when no budget is set or nothing needed doing."""
    if not budget.set:
        return None
    spare = frozenset(spare)
    total = store.metadata.blob_bytes()
    over = budget.max_size is not None and total > budget.max_size
    if not over and not _any_expired(store, budget, spare, now):
        return None
    policy = gc.Policy(
        keep_storage=_low_water(budget.max_size) if over else None,
        older_than=budget.max_age,
        spare=spare,
        spare_in_use=True,
    )
    wait = LOCK_WAIT if lock_timeout is None else min(lock_timeout, LOCK_WAIT)
    started = time.monotonic()
    try:
        result = gc.prune(store, policy, lock_timeout=wait, now=now, walk=False)
    except LockTimeout:
        skipped = f"another cas command held the store for {wait:g}s; the next write evicts"
        eviction = Eviction(budget, total, skipped=skipped)
    except StoreError as exc:  # a damaged index or a full disk: said, and left to `cas verify`, never fatal
        eviction = Eviction(budget, total, skipped=exc.message)
    else:
        per_image, _ = result.freed_by_image()
        eviction = Eviction(budget, store.metadata.blob_bytes(), per_image, result.freed_bytes)
        stats.count(store.metadata, evicted_images=len(per_image), evicted_bytes=result.freed_bytes)
    eviction.seconds = time.monotonic() - started
    return _finish(store, budget, spare, eviction)


def _finish(store: Store, budget: Budget, spare: frozenset, eviction: Eviction) -> Eviction:
    """Name the spared images that alone exceed the budget, when the store is still over it."""
    if eviction.over:
        mine = [Image.of(r) for r in store.metadata.refs(malformed=[]) if (r.ref, r.platform) in spare]
        eviction.too_big = [i for i in mine if i.size > (budget.max_size or 0)]
    return eviction


def _any_expired(store: Store, budget: Budget, spare: frozenset, now: float | None) -> bool:
    """Whether an image not spared was last used before ``max-age`` ago (one scan of the ref records)."""
    if budget.max_age is None:
        return False
    cutoff = (time.time() if now is None else now) - budget.max_age
    return any(r.used < cutoff and (r.ref, r.platform) not in spare for r in store.metadata.refs(malformed=[]))


def _low_water(max_size: int | None) -> int | None:
    return None if max_size is None else int(max_size * LOW_WATER)
