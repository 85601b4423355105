"""The ballast: a few MiB the store holds back so that `cas rm`, `cas prune` and `cas verify --repair`
work on a full disk.

Without it a full disk locks the user out of the very commands that free it: sqlite
needs room for its ``-shm`` and ``-wal`` files before it can change the index. ``rm``,
``prune`` and ``verify --repair`` delete the ballast first (``released``), act, then put
it back when the disk has room for it twice over (so putting it back never fills the disk
again). A pull puts it back too, which is how a new store gets one. Missing ballast is never an error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

SIZE = 4 << 20
NAME = "ballast"
log = logging.getLogger("cas.store.ballast")


class Ballast:
    def __init__(self, root: Path) -> None:
        self.path = root / NAME

    def present(self) -> bool:
        return self.path.exists()

    def release(self) -> bool:
        """Delete the ballast; True when there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.info("cannot release the ballast %s: %s", self.path, exc.strerror)  # the command will say why
            return False
        log.info("released %d bytes of ballast", SIZE)
        return True

    def _roomy(self) -> bool:
        """Whether the disk has room for the ballast twice over (then nothing needs it released)."""
        try:
            stats = os.statvfs(self.path.parent)
        except OSError:
            return False
        return stats.f_bavail * stats.f_frsize >= 2 * SIZE

    def restore(self) -> bool:
        """Put the ballast back if the disk has room for it twice over; True when it is in place."""
        if self.present():
            return True
        if not self._roomy():
            return False
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{NAME}.", suffix=".tmp", dir=self.path.parent)
            try:
                os.posix_fallocate(fd, 0, SIZE)  # real blocks, not a sparse file
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:  # the disk filled up meanwhile: try again next time
            log.info("cannot put the ballast back: %s", exc.strerror)
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            return False
        return True

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Room for an index transaction on a (nearly) full disk; the ballast goes back afterwards if it
        fits. A disk with room to spare keeps it where it is: no churn for every rm and prune."""
        if not self._roomy():
            self.release()
        try:
            yield
        finally:
            self.restore()
