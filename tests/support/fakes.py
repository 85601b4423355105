"""In-memory stand-ins for what ``RegistryClient`` writes to and reads from.

Why: the client tests check the bytes a download delivered, its restarts and the tokens it
cached without a store or an index on disk. Both classes match cas's protocols by shape
(``cas.registry.download.Sink``, ``cas.registry.auth.TokenCache``); nothing here imports cas.
"""

from __future__ import annotations

import hashlib


class MemorySink:
    """A Sink that keeps the bytes (test blobs are small) and logs restarts."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = bytearray(data)
        self.restarts = 0

    @property
    def offset(self) -> int:
        return len(self.data)

    def write(self, chunk: bytes) -> None:
        self.data += chunk

    def restart(self) -> None:
        self.data.clear()
        self.restarts += 1

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()


class DictTokenCache:
    """A TokenCache in a dict; ``puts`` logs every ``(key, token, expires_in)`` stored."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.puts: list[tuple[str, str, float]] = []

    def get_token(self, key: str) -> str | None:
        return self.tokens.get(key)

    def put_token(self, key: str, token: str, expires_in: float) -> None:
        self.puts.append((key, token, expires_in))
        self.tokens[key] = token
