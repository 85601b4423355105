"""Digests: the one type every path in the store is built from.

A digest string from the network is untrusted. ``Digest.parse`` accepts only a
registered algorithm followed by exactly the right number of lowercase hex
characters, so a parsed digest is always safe to use as a file name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import blake3 as _blake3

from cas.errors import BadDigest, DigestMismatch


class Hasher(Protocol):
    def update(self, data: bytes, /) -> object: ...
    def hexdigest(self) -> str: ...


# algorithm -> (hex length, hasher factory)
ALGORITHMS: dict[str, tuple[int, Callable[[], Hasher]]] = {
    "sha256": (64, hashlib.sha256),
    "sha512": (128, hashlib.sha512),
    "blake3": (64, _blake3.blake3),
}

_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True, order=True)
class Digest:
    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        spec = ALGORITHMS.get(self.algorithm)
        if spec is None:
            raise BadDigest(
                f"unsupported digest algorithm {self.algorithm!r}",
                hint=f"supported: {', '.join(ALGORITHMS)}",
            )
        if len(self.hex) != spec[0] or not _HEX.fullmatch(self.hex):
            raise BadDigest(
                f"invalid {self.algorithm} digest {self.hex[:80]!r}: expected {spec[0]} lowercase hex characters"
            )

    @classmethod
    def parse(cls, text: object) -> Digest:
        if not isinstance(text, str) or ":" not in text:
            raise BadDigest(f"invalid digest {str(text)[:80]!r}: expected ALGORITHM:HEX")
        algorithm, _, hexpart = text.partition(":")
        return cls(algorithm, hexpart)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def short(self) -> str:
        return f"{self.algorithm}:{self.hex[:12]}"

    def hasher(self) -> Hasher:
        return ALGORITHMS[self.algorithm][1]()


def of_bytes(data: bytes, algorithm: str = "sha256") -> Digest:
    hasher = ALGORITHMS[algorithm][1]()
    hasher.update(data)
    return Digest(algorithm, hasher.hexdigest())


def verify_bytes(data: bytes, expected: Digest, *, what: str = "blob") -> None:
    actual = of_bytes(data, expected.algorithm)
    if actual != expected:
        raise DigestMismatch(expected, actual, what=what)


class StreamVerifier:
    """Hashes a stream with the digest's own algorithm plus blake3 as a local fingerprint.

    When the digest's algorithm is blake3 the one hasher serves both. ``expected`` may be
    None for bytes whose digest is learned only at their end (a legacy archive's layer):
    ``digest`` then names them, and whoever commits them sets ``expected`` to it.
    """

    def __init__(self, expected: Digest | None, algorithm: str | None = None) -> None:
        self.expected = expected
        self.algorithm = expected.algorithm if expected is not None else (algorithm or "sha256")
        self.size = 0
        self._hasher = ALGORITHMS[self.algorithm][1]()
        self._fingerprint = self._hasher if self.algorithm == "blake3" else _blake3.blake3()

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._hasher.update(chunk)
        if self._fingerprint is not self._hasher:
            self._fingerprint.update(chunk)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint.hexdigest()

    @property
    def digest(self) -> Digest:
        """The digest of the bytes seen so far."""
        return Digest(self.algorithm, self._hasher.hexdigest())

    def check(self) -> None:
        actual = self.digest
        if actual != self.expected:
            raise DigestMismatch(self.expected, actual)
