"""httpx clients shared by the requesters of one command: a set of images from one registry
reuses one pooled connection (and, over https, one TLS handshake) instead of one per image.

Requesters with the same TLS settings and timeout share a client; each keeps its own auth
state and ``served`` figures, so an image's summary stays its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # httpx is imported by the first requester that needs the network
    import httpx


class SharedClients:
    def __init__(self) -> None:
        self._clients: dict[Hashable, httpx.Client] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], httpx.Client]) -> httpx.Client:
        """The client for ``key``, made by ``make`` on first use."""
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = make()
            return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> SharedClients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
