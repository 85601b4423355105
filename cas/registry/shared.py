"""A pool of closeable things made once per key and closed together.

One shape for three users: a set of images from one registry reuses one httpx client (one
pooled connection and, over https, one TLS handshake) instead of one per image, keyed by TLS
settings and timeout (each requester keeps its own auth state and ``served`` figures, so an
image's summary stays its own); a transport keeps one connection pool per https host, whose
certificates may differ (``cas.registry.transport``); and `cas serve` keeps one registry client
per upstream repository (``cas.serve.through``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar


class _Closeable(Protocol):
    def close(self) -> None: ...


T = TypeVar("T", bound=_Closeable)


class KeyedPool(Generic[T]):
    def __init__(self) -> None:
        self._items: dict[Hashable, T] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        """The item for ``key``, made by ``make`` on first use."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                item = self._items[key] = make()
            return item

    def close(self) -> None:
        with self._lock:
            items, self._items = list(self._items.values()), {}
        for item in items:
            item.close()

    def __enter__(self) -> KeyedPool[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
