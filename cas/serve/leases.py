"""Served manifests hold their blobs: one index lease per manifest, renewed while its blobs are fetched.

A client reads a manifest, then its blobs over seconds or minutes. A prune in between must
not turn that pull into a 404, so serving a manifest writes a lease (a GC root, as a running
pull's) naming every blob of its records. Each blob request renews the leases that name it;
a lease nobody renewed for ``ttl`` seconds is dropped. The lease is written under the store
lock held shared, and the blobs checked after it: a prune either ran before (the check sees
what it removed) or runs after and keeps them. Leases live in the index under this process's
pid, so a killed server's leases are dropped by the next prune (``Metadata.leased_digests``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable

from cas.digest import Digest
from cas.store import Store

LEASE_TTL = 300.0  # seconds a served manifest holds its blobs after the last request for one of them
LOCK_TIMEOUT = 30.0


class LeaseBook:
    """This server's leases: manifest digest -> (lease id, digests, deadline). Thread-safe."""

    def __init__(self, store: Store, ttl: float = LEASE_TTL) -> None:
        self.store = store
        self.ttl = ttl
        self._lock = threading.Lock()
        self._held: dict[Digest, tuple[str, frozenset[Digest], float]] = {}

    def hold(self, manifest: Digest, digests: Iterable[Digest]) -> list[Digest]:
        """Lease ``digests`` for a served ``manifest``; returns those not in the store (nothing held then)."""
        wanted = frozenset(digests)
        with self.store.lock(shared=True, timeout=LOCK_TIMEOUT):
            with self._lock:
                held = self._held.get(manifest)
                lease_id = held[0] if held else uuid.uuid4().hex
                self._held[manifest] = (lease_id, wanted, time.monotonic() + self.ttl)
            self.store.metadata.put_lease(lease_id, map(str, wanted))
            missing = sorted((d for d in wanted if not self.store.blobs.has(d)), key=str)
        if missing:
            self._drop(manifest)
        return missing

    def renew(self, digest: Digest) -> None:
        """A blob was asked for: every lease naming it lives another ``ttl``."""
        deadline = time.monotonic() + self.ttl
        with self._lock:
            for manifest, (lease_id, digests, _) in list(self._held.items()):
                if digest in digests:
                    self._held[manifest] = (lease_id, digests, deadline)

    def expire(self) -> int:
        """Drop leases nobody renewed in time; returns how many are left."""
        now = time.monotonic()
        with self._lock:
            stale = [m for m, (_, _, deadline) in self._held.items() if deadline < now]
        for manifest in stale:
            self._drop(manifest)
        return len(self._held)

    def release_all(self) -> None:
        for manifest in list(self._held):
            self._drop(manifest)

    def _drop(self, manifest: Digest) -> None:
        with self._lock:
            held = self._held.pop(manifest, None)
        if held is not None:
            self.store.metadata.discard(f"lease:{held[0]}")
