"""What pull and push share: the progress hooks, and moving blobs in parallel with a clean stop.

Both have the same shape (plan what is missing -> move blobs in parallel -> record), so
the part that runs the moves lives here once: the first failure stops the rest (queued
blobs never start, running ones stop at their next chunk) and is raised.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from cas.digest import Digest
from cas.manifest import Descriptor


class TransferObserver:
    """Progress hooks; the default does nothing. Called from worker threads."""

    def resolved(self, ref: str, blobs: list[Descriptor], missing: list[Descriptor]) -> None: ...
    def blob_bytes(self, digest: Digest, n: int) -> None: ...
    def blob_done(self, digest: Digest, moved: bool) -> None: ...
    def waiting(self, message: str) -> None: ...
    def retrying(self, message: str) -> None: ...  # "retrying in 2.0 s: ...", as it happens


def run_parallel(tasks: list[Callable[[threading.Event], None]], jobs: int, name: str) -> None:
    """Run each ``task(cancelled)`` on up to ``jobs`` threads; the first exception stops the others.

    A task should check ``cancelled`` between chunks (raise ``cas.errors.Cancelled``). Ctrl-C and
    SIGTERM stop the queue the same way and propagate.
    """
    if not tasks:
        return
    cancelled = threading.Event()
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(tasks))), thread_name_prefix=name) as pool:
        futures = [pool.submit(task, cancelled) for task in tasks]

        def stop() -> None:
            cancelled.set()
            for future in futures:
                future.cancel()

        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # Ctrl-C or SIGTERM
            stop()
            raise
        failed = next((f for f in done if f.exception() is not None), None)
        if failed is not None:
            stop()
            raise failed.exception()  # type: ignore[misc]
