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

A long-running `cas serve` also keeps it every ``serve.budget-interval`` (``watch``): images age
past ``max-age`` while nothing writes, and pull-through adds blobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cas import stats
from cas.errors import CasError, LockTimeout, StoreError
from cas.settings import Value, current
from cas.sizes import format_duration, format_size
from cas.store import Store

if TYPE_CHECKING:  # what eviction needs is imported when a budget is exceeded, not by every pull
    from cas.snapshot import Image

LOW_WATER = 0.9  # evict down to this share of max-size
LOCK_WAIT = 10.0  # seconds an eviction waits for the store lock before leaving it to the next write


@dataclass(frozen=True)
class Budget:
    max_size: int | None = None  # bytes of blobs
    max_age: float | None = None  # seconds since an image was last pulled or exported
    size_from: str = ""  # where max-size came from: "--max-size", "$CAS_MAX_SIZE", "FILE:LINE"
    age_from: str = ""  # where max-age came from: "--max-age", "$CAS_MAX_AGE", "FILE:LINE"

    @property
    def set(self) -> bool:
        return self.max_size is not None or self.max_age is not None

    def __str__(self) -> str:
        """``max-size 20.0 GiB (from FILE:LINE) and max-age 1w (from $CAS_MAX_AGE)``: what is set."""
        limits = [f"max-size {format_size(self.max_size)} (from {self.size_from})"] if self.max_size is not None else []
        if self.max_age is not None:
            limits.append(f"max-age {format_duration(self.max_age)} (from {self.age_from})")
        return " and ".join(limits) or "no budget"

    @classmethod
    def resolve(cls, max_size: int | None = None, max_age: float | None = None) -> Budget:
        """Each limit from its flag (given here), else its variable, else config.toml (cas.settings)."""
        settings = current()
        size, age = settings.resolve("max-size", max_size), settings.resolve("max-age", max_age)
        return cls(size.value, age.value, _origin(size), _origin(age))


def _origin(value: Value) -> str:
    return {"flag": f"--{value.key}", "env": f"${value.source}", "file": value.source}.get(value.origin, "")


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
            "max_size_from": self.budget.size_from or None,
            "max_age_seconds": self.budget.max_age,
            "max_age_from": self.budget.age_from or None,
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

    def lines(self) -> list[str]:
        """What it evicted and why, a warning per spared image bigger than the budget, or why the store
        is still over it."""
        budget, size = self.budget, format_size
        limit = f"{size(budget.max_size)} (max-size from {budget.size_from})" if budget.max_size is not None else ""
        said = []
        if self.images:
            why = [f"to stay under {limit}"] if budget.max_size is not None else []
            if budget.max_age is not None:
                age = format_duration(budget.max_age)
                why.append(f"as unused for longer than {age} (max-age from {budget.age_from})")
            count = len(self.images)
            names = ", ".join(image.ref for image, _ in self.images)
            said.append(
                f"evicted {count} image{'s' if count != 1 else ''} ({names}), {size(self.freed_bytes)}, {' and '.join(why)}"
            )
        for image in self.too_big:
            said.append(
                f"warning: {image.ref} ({image.platform or 'unknown platform'}) alone is {size(image.size)}, "
                f"more than the budget of {limit}: it is kept"
            )
        if self.over and not self.too_big:
            why = self.skipped or "what this command used, and what running commands hold, is kept"
            said.append(f"warning: the store holds {size(self.store_bytes)}, over its budget of {limit}: {why}")
        return said


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
    from cas import gc

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
        from cas.snapshot import Image

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


async def watch(store: Store, say: Callable[[str], None]) -> None:
    """Keep the budget every ``serve.budget-interval`` seconds, for a process that runs for days (`cas serve`).

    Nothing may be written for hours while images age past ``max-age``; a pull-through adds blobs
    between checks. Each check is ``keep`` with nothing of its own to spare: what a client is being
    served is leased, so it stays. Returns at once when no budget is set; never raises a store error.
    """
    import asyncio  # ~25 ms to import; only the server's loop needs it, not every pull

    budget = Budget.resolve()
    if not budget.set:
        return
    every = current().value("serve.budget-interval")
    say(f"keeping the store's budget, {budget}, every {format_duration(every)}")
    while True:
        await asyncio.sleep(every)
        try:
            eviction = await asyncio.to_thread(keep, store, budget, ())
        except (CasError, OSError) as exc:  # busy or damaged metadata: said, and the next check tries again
            say(f"warning: keeping the store's budget: {exc}")
            continue
        for line in eviction.lines() if eviction is not None else ():
            say(line)
