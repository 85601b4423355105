"""Ranged writes into one ingest entry: each range lands at its offset, the digest follows
the contiguous prefix as it grows. Knows nothing about HTTP.

Why: a blob fetched as several HTTP Range requests at once arrives out of order. The
bytes go straight to their place in ``data`` (``pwrite``), and whichever writer finds the
hasher free feeds it what became contiguous from the start, read back from the page cache:
there is no second pass over the file when the last range lands.

Resume: ``ranges.json`` beside ``data`` lists the byte intervals known to be on disk,
``{"size": N, "held": [[start, end], ...]}`` (half-open, merged). It is created before the
first byte is written at an offset, and rewritten atomically only after bytes are written,
so at any moment (a kill included) it names a subset of what ``data`` holds. With the
record present, nothing in ``data`` beyond the prefix is trusted unless it is listed. A
record lost in a power cut at worst names bytes that did not reach the disk: the digest
check at commit catches that and the download starts again.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

from cas.digest import StreamVerifier

RECORD = "ranges.json"
SAVE_EVERY = 8 << 20  # bytes written between two rewrites of the record (and at every range's end)
_READ = 1 << 20

Interval = tuple[int, int]


def merge(intervals: list[Interval]) -> list[Interval]:
    """Sorted, non-overlapping, non-empty intervals covering the same bytes."""
    out: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def prefix_end(intervals: list[Interval]) -> int:
    """Where the run of held bytes that starts at 0 ends."""
    merged = merge(intervals)
    return merged[0][1] if merged and merged[0][0] == 0 else 0


def gaps(intervals: list[Interval], size: int) -> list[Interval]:
    """The parts of ``[0, size)`` that ``intervals`` do not cover."""
    out, at = [], 0
    for start, end in merge(intervals):
        if start > at:
            out.append((at, min(start, size)))
        at = max(at, end)
    if at < size:
        out.append((at, size))
    return [g for g in out if g[1] > g[0]]


def load(directory: Path, size: int | None) -> list[Interval] | None:
    """The held intervals of an ingest entry; None when it has no record.

    A record for another size, or one that is not well formed, holds nothing: ``[]``.
    """
    doc = _read(directory)
    return None if doc is None else _held(doc, size)


def held_bytes(directory: Path, have: int) -> int | None:
    """How many bytes a resume would keep of an entry whose data is ``have`` bytes long: what its
    record names (as far as the data reaches); None when it has no record (then all ``have``).

    Ranged writes land beyond the record's last save, so the file is larger than what is held.
    """
    doc = _read(directory)
    if doc is None:
        return None
    size = doc.get("size") if isinstance(doc, dict) else None
    return sum(max(0, min(end, have) - start) for start, end in _held(doc, size if type(size) is int else None))


def _read(directory: Path) -> object:
    """The record's JSON; None when there is none, ``{}`` when it cannot be read."""
    try:
        return json.loads((directory / RECORD).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _held(doc: object, size: int | None) -> list[Interval]:
    held = doc.get("held") if isinstance(doc, dict) else None
    if size is None or not isinstance(doc, dict) or doc.get("size") != size or not isinstance(held, list):
        return []
    intervals = []
    for item in held:
        if not (isinstance(item, list) and len(item) == 2 and all(type(v) is int for v in item)):
            return []
        start, end = item
        if not 0 <= start <= end <= size:
            return []
        intervals.append((start, end))
    return merge(intervals)


def save(directory: Path, size: int, intervals: list[Interval]) -> None:
    """Replace the record atomically (rename; no fsync: see the module docstring)."""
    tmp = directory / f".{RECORD}.tmp"
    tmp.write_text(json.dumps({"size": size, "held": [list(i) for i in merge(intervals)]}))
    os.replace(tmp, directory / RECORD)


def forget(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (directory / RECORD).unlink()


class RangeWriter:
    """Writes ranges of one ingest entry's ``data`` at their offsets, from several threads.

    ``verifier`` (the Ingest's own) already holds the prefix ``[0, verifier.size)``;
    ``held`` lists what else ``data`` holds. Call ``finish()`` once every range is written
    (then the verifier has seen the whole blob), or ``close()`` to stop and keep the record.
    """

    def __init__(self, directory: Path, size: int, verifier: StreamVerifier, held: list[Interval]) -> None:
        self.directory = directory
        self.size = size
        self._verifier = verifier
        self._held = merge([*held, (0, verifier.size)])
        self._lock = threading.Lock()  # guards _held and the record
        self._hashing = threading.Lock()  # one thread feeds the verifier at a time
        self._unsaved = 0
        save(directory, size, self._held)  # before any byte lands beyond the prefix
        path = directory / "data"
        self._out = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        self._in = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    @property
    def offset(self) -> int:
        """Bytes hashed so far: the verified-to-be prefix."""
        return self._verifier.size

    def missing(self) -> list[Interval]:
        with self._lock:
            return gaps(self._held, self.size)

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        """Write ``data`` at ``offset``, then hash whatever became contiguous (if no one else is)."""
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError(f"range {offset}+{len(data)} is outside the blob's {self.size} bytes")
        view, at = memoryview(data), offset
        while view:
            n = os.pwrite(self._out, view, at)
            view, at = view[n:], at + n
        with self._lock:
            self._held = merge([*self._held, (offset, offset + len(data))])
            self._unsaved += len(data)
            if self._unsaved >= SAVE_EVERY:
                self._save_locked()
        self._advance(block=False)

    def range_done(self) -> None:
        """A range ended: record it now, so a kill loses no completed range."""
        with self._lock:
            self._save_locked()

    def finish(self) -> None:
        """Hash what is left of the prefix; the verifier then holds the whole blob when nothing is missing."""
        self._advance(block=True)
        self.close()

    def abandon(self) -> int:
        """Give up on ranges: keep only the hashed prefix in ``data`` and drop the record.

        Returns how many held bytes beyond the prefix were dropped.
        """
        self._advance(block=True)
        with self._lock:
            kept = self._verifier.size
            dropped = sum(e - s for s, e in self._held) - kept
            os.ftruncate(self._out, kept)
            self._held = [(0, kept)]
            forget(self.directory)
        self.close(save=False)
        return dropped

    def close(self, *, save: bool = True) -> None:
        if self._out < 0:
            return
        if save:
            with self._lock:
                self._save_locked()
        os.close(self._out)
        os.close(self._in)
        self._out = self._in = -1

    def _save_locked(self) -> None:
        save(self.directory, self.size, self._held)
        self._unsaved = 0

    def _advance(self, *, block: bool) -> None:
        if not self._hashing.acquire(blocking=block):
            return  # another writer is hashing; it (or finish) picks up these bytes
        try:
            while True:
                with self._lock:
                    frontier = prefix_end(self._held)
                at = self._verifier.size
                if at >= frontier:
                    return
                chunk = os.pread(self._in, min(_READ, frontier - at), at)
                if not chunk:
                    raise OSError(f"{self.directory / 'data'} ended at {at}, before its recorded {frontier}")
                self._verifier.update(chunk)
        finally:
            self._hashing.release()
