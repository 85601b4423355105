"""File locks shared by every cas process on one machine (fcntl.flock).

The store lock is shared for pulls and exports and exclusive for a prune's
sweep. Per-digest ingest locks make a second downloader wait for the first.
flock also makes two threads of one process wait for each other (each opens
the file anew), so the locks this process holds are remembered: a wait on one
of them is this command's own work (images sharing a layer), logged under -v
and never said as another process's.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cas.errors import LockTimeout
from cas.store.fs import storage_errors

_POLL = 0.05
log = logging.getLogger("cas.store.locks")  # `cas -v` shows every wait, not only the first notice
_held_here: dict[str, int] = {}  # lock path -> how many FileLocks of this process hold it
_held_lock = threading.Lock()


class FileLock:
    def __init__(
        self,
        path: Path,
        *,
        shared: bool = False,
        timeout: float | None = None,
        purpose: str = "the cas store",
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.shared = shared
        self.timeout = timeout
        self.purpose = purpose
        self.on_wait = on_wait
        self._fd: int | None = None

    def acquire(self) -> None:
        mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        started = time.monotonic()
        deadline = None if self.timeout is None else started + self.timeout
        announced = False
        while True:
            with storage_errors(f"the lock {self.path}"):
                try:
                    fd = self._open()
                except FileNotFoundError:  # its directory was removed by the previous holder
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    continue
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                ours = _holds(self.path)
                if deadline is not None and time.monotonic() >= deadline:
                    holder = (
                        "another part of this cas command" if ours else "another cas process (a prune, pull or export)"
                    )
                    raise LockTimeout(
                        f"timed out after {self.timeout:g}s waiting for a {_kind(self.shared)} lock on {self.purpose} ({self.path})",
                        hint=f"{holder} holds it; wait for it to finish, or raise --lock-timeout",
                    ) from None
                if not announced:
                    log.debug("waiting to lock %s (%s) at %s", self.purpose, _kind(self.shared), self.path)
                    if ours:  # not stuck: another image of this command is fetching the same blob
                        log.debug("waiting for %s, already under way in this cas command", self.purpose)
                    elif self.on_wait is not None:
                        self.on_wait(f"waiting for another cas process to release {self.purpose}...")
                    announced = True
                time.sleep(_POLL)
                continue
            # The file may have been removed and replaced while we waited for it:
            # a lock on an unlinked inode protects nothing, so start again.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                _count(self.path, 1)
                if announced:
                    log.debug(
                        "locked %s (%s) after %.2f s",
                        self.purpose,
                        _kind(self.shared),
                        time.monotonic() - started,
                    )
                return
            os.close(fd)

    def _open(self) -> int:
        """A shared lock needs no write access, so an export can read a read-only store."""
        if self.shared:
            try:
                return os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                pass
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def release(self) -> None:
        if self._fd is not None:
            _count(self.path, -1)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _count(path: Path, change: int) -> None:
    key = os.path.abspath(path)
    with _held_lock:
        left = _held_here.get(key, 0) + change
        if left:
            _held_here[key] = left
        else:
            _held_here.pop(key, None)


def _holds(path: Path) -> bool:
    """True when a FileLock of this process holds ``path`` (a thread of this command is the holder)."""
    with _held_lock:
        return os.path.abspath(path) in _held_here


def _kind(shared: bool) -> str:
    return "shared" if shared else "exclusive"


def is_locked(path: Path) -> bool:
    """True when some process holds any lock on ``path`` right now."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:  # a symlink, or no permission: not a lock of ours in use
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
