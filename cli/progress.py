"""Rich progress bars for pulls and pushes: one bar per blob being moved, one for the total.

Sizes and speeds are in IEC units (MiB, MiB/s), as in every other line cas prints.
"""

from __future__ import annotations

import threading

from cas.digest import Digest
from cas.manifest import Descriptor
from cas.transfer import TransferObserver
from cli import output


class QuietObserver(TransferObserver):
    """No bars, but a process waiting on a lock still says why it is stuck."""

    def __enter__(self) -> QuietObserver:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def waiting(self, message: str) -> None:
        output.notice(message)


class BarsObserver(QuietObserver):
    def __init__(self) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            _speed_column(),
            TimeRemainingColumn(),
            transient=True,
        )
        self._tasks: dict[Digest, int] = {}
        self._total: int | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> BarsObserver:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def resolved(self, ref: str, blobs: list[Descriptor], missing: list[Descriptor]) -> None:
        with self._lock:
            if self._total is not None:
                self._progress.remove_task(self._total)
            self._total = self._progress.add_task(ref, total=sum(d.size for d in missing) or 1)
            for desc in missing:
                self._tasks[desc.digest] = self._progress.add_task(f"  {desc.digest.short}", total=desc.size)

    def blob_bytes(self, digest: Digest, n: int) -> None:
        task = self._tasks.get(digest)
        if task is not None:
            self._progress.advance(task, n)
        if self._total is not None:
            self._progress.advance(self._total, n)

    def blob_done(self, digest: Digest, downloaded: bool) -> None:
        task = self._tasks.pop(digest, None)
        if task is not None:
            self._progress.remove_task(task)

    def waiting(self, message: str) -> None:
        self._progress.console.print(message)


def _speed_column():
    """rich's TransferSpeedColumn prints MB/s; this one prints cas's MiB/s."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    from cas.sizes import format_rate

    class Speed(ProgressColumn):
        def render(self, task) -> Text:
            return Text("?" if task.speed is None else format_rate(task.speed), style="progress.data.speed")

    return Speed()
