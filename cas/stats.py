"""What the cache saved, as ``ccache -s`` shows it: cumulative counters kept in the index.

Each command adds its counts in one index write when it ends (per reference for a pull), never one
per blob, so counting costs a pull nothing it would notice. ``reused`` is what the store already held
and the registry did not send again: the cache's hits.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from cas.errors import StoreError
from cas.metadata import Metadata

log = logging.getLogger("cas.stats")

FIELDS = (
    "downloaded_bytes",
    "downloaded_blobs",
    "reused_bytes",
    "reused_blobs",
    "served_bytes",  # by `cas serve`, once it exists
    "exports",
    "exported_bytes",
    "evicted_images",
    "evicted_bytes",
)


def count(index: Metadata, **counts: int) -> None:
    """Add to the counters (names from FIELDS) in one write; nothing to add writes nothing.

    Best effort: an export may read a store it cannot write (read-only, or a full disk), and a
    count it cannot keep must not fail it."""
    added = {name: n for name, n in counts.items() if n}
    if not added or index.read_only:
        return
    try:
        index.add_counters(added, start={"since": time.time()})
    except StoreError as exc:
        log.info("statistics not updated: %s", exc.message)


@dataclass(frozen=True)
class Stats:
    counters: dict[str, int]
    since: float | None  # when counting started (the first count, or the last reset)

    @property
    def hit_ratio(self) -> float | None:
        """Reused bytes over all the bytes pulls needed; None before any pull."""
        needed = self.counters["reused_bytes"] + self.counters["downloaded_bytes"]
        return self.counters["reused_bytes"] / needed if needed else None

    def to_json(self) -> dict:
        from cas.jsonout import timestamp

        ratio = self.hit_ratio
        return {
            **self.counters,
            "hit_ratio": None if ratio is None else round(ratio, 4),
            "since_at": timestamp(self.since),
        }


def read(index: Metadata) -> Stats:
    stored = index.counters()
    counters = {name: int(stored.get(name, 0)) for name in FIELDS}
    since = stored.get("since")
    return Stats(counters, since if isinstance(since, int | float) else None)


def reset(index: Metadata) -> Stats:
    """Start counting again from zero, now; returns what the counters held."""
    before = read(index)
    index.set_counters({"since": time.time()})
    return before
