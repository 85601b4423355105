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
    """No bars, but a process waiting on a lock still says why it is stuck, and a retry is
    said as it happens unless ``quiet`` (-q; under -v the log says it)."""

    def __init__(self, quiet: bool = False) -> None:
        import logging

        self.quiet = quiet or logging.getLogger("cas").isEnabledFor(logging.DEBUG)

    def __enter__(self) -> QuietObserver:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def waiting(self, message: str) -> None:
        output.notice(message)

    def retrying(self, message: str) -> None:
        if not self.quiet:
            self.waiting(message)


class BarsObserver(QuietObserver):
    def __init__(self) -> None:
        super().__init__()
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            *size_columns(),
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


def size_columns() -> tuple:
    """Done/total and speed in cas's own units (``951 B``, ``1.5 MiB``), as every summary prints them.

    rich's DownloadColumn says ``bytes`` where cas says ``B``, and its speed column counts in MB/s.
    """
    from rich.progress import ProgressColumn
    from rich.text import Text

    from cas.sizes import format_rate, format_size

    class Size(ProgressColumn):
        def render(self, task) -> Text:
            if task.total is None:
                return Text(format_size(task.completed), style="progress.download")
            scale = 1
            while task.total >= scale * 1024 and scale < 1024**4:
                scale *= 1024
            unit, digits = format_size(scale).split(" ")[1], 0 if scale == 1 else 1  # both sides in the total's unit
            shown = f"{task.completed / scale:.{digits}f}/{task.total / scale:.{digits}f} {unit}"
            return Text(shown, style="progress.download")

    class Speed(ProgressColumn):
        def render(self, task) -> Text:
            return Text("?" if task.speed is None else format_rate(task.speed), style="progress.data.speed")

    return Size(), Speed()
