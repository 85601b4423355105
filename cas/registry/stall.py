"""The stalled-transfer rule, as curl's ``--speed-limit`` / ``--speed-time``. Pure (the clock is injectable).

A transfer that moved fewer than ``min_rate`` bytes per second over the last ``window``
seconds is stalled: it is aborted (the partial data stays, so the next pull resumes it)
instead of holding a build for hours. A slow transfer that keeps moving above the rate
is left alone. Total silence is caught sooner by the HTTP read timeout, which is the
same ``window``.

The window slides: a split download whose fast ranges finished early, leaving one range
trickling, is stalled ``window`` seconds after the fast bytes stopped, not after a second
whole window (fixed windows caught it at twice ``--timeout``).

``--timeout`` sets the window and ``$CAS_MIN_RATE`` the rate (cas.settings resolves both, and holds their defaults).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

_SLICES = 50  # bytes are counted in slices of window/50 s: a bounded memory, a verdict at most 2 % lenient


class StallWatch:
    class Stalled(Exception):
        """Below the minimum rate over a whole window."""

    def __init__(self, min_rate: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_rate = min_rate
        self.window = window
        self._clock = clock
        self._start = clock()
        self._slices: deque[list[float]] = deque()  # [when the slice began, when its last bytes came, bytes]
        self._bytes = 0  # in the slices kept
        self._lock = threading.Lock()  # ranges of one blob report from several threads
        self.rate = 0.0  # over the last window that was checked

    def update(self, n: int) -> None:
        """Count ``n`` bytes just received; raise Stalled when the last full window was too slow."""
        with self._lock:
            now = self._clock()
            if n:
                if self._slices and now - self._slices[-1][0] < self.window / _SLICES:
                    self._slices[-1][1] = now
                    self._slices[-1][2] += n
                else:
                    self._slices.append([now, now, n])
                self._bytes += n
            if now - self._start < self.window:
                return
            while self._slices and self._slices[0][1] <= now - self.window:
                self._bytes -= int(self._slices.popleft()[2])
            self.rate = self._bytes / self.window
            if self.rate < self.min_rate:
                raise StallWatch.Stalled()

    def describe(self) -> str:
        """Why it stalled, for the error: the rule and, after a full window, the rate seen."""
        rule = f"less than {self.min_rate} bytes/s for {self.window:g} s"
        return f"{rule} ({self.rate:.0f} bytes/s)" if self.rate else f"no data for {self.window:g} s"
