"""The stalled-transfer rule, as curl's ``--speed-limit`` / ``--speed-time``. Pure (the clock is injectable).

A transfer that moves fewer than ``min_rate`` bytes per second, measured over
each window of ``window`` seconds, is stalled: it is aborted (the partial data
stays, so the next pull resumes it) instead of holding a build for hours. A
slow transfer that keeps moving above the rate is left alone. Total silence is
caught sooner by the HTTP read timeout, which is the same ``window``.

``--timeout`` sets the window and ``$CAS_MIN_RATE`` the rate (cas.settings resolves both, and holds their defaults).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class StallWatch:
    class Stalled(Exception):
        """Below the minimum rate for a whole window."""

    def __init__(self, min_rate: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_rate = min_rate
        self.window = window
        self._clock = clock
        self._start = clock()
        self._bytes = 0
        self.rate = 0.0  # of the last full window that was checked

    def update(self, n: int) -> None:
        """Count ``n`` bytes just received; raise Stalled when a full window was too slow."""
        self._bytes += n
        now = self._clock()
        elapsed = now - self._start
        if elapsed < self.window:
            return
        self.rate = self._bytes / elapsed
        if self.rate < self.min_rate:
            raise StallWatch.Stalled()
        self._start, self._bytes = now, 0

    def describe(self) -> str:
        """Why it stalled, for the error: the rule and, after a full window, the rate seen."""
        rule = f"less than {self.min_rate} bytes/s for {self.window:g} s"
        return f"{rule} ({self.rate:.0f} bytes/s)" if self.rate else f"no data for {self.window:g} s"
