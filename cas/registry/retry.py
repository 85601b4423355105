"""When to try again and how long to wait: Retry-After parsing, backoff with jitter, and
``Patience``, the one rule every retry loop keeps. Pure (the clock is injectable).

``Transient`` is what the client raises inside its retry loop for an answer that
may succeed later (429, 5xx, a token server hiccup); the loop turns it into
``final`` once every retry is spent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

from cas.errors import CasError

MAX_DELAY = 30.0  # no single backoff sleeps longer than this
MAX_RETRY_AFTER = 60.0  # a Retry-After beyond this is not waited for: fail now and say so
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class Transient(Exception):
    """An answer worth retrying. Never escapes the client: ``final`` does."""

    def __init__(self, final: CasError, retry_after: float | None = None) -> None:
        super().__init__(final.message)
        self.final = final
        self.retry_after = retry_after


def is_retryable_status(status: int) -> bool:
    return status in RETRY_STATUSES or 500 <= status < 600


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or garbage."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)


def backoff_delay(
    attempt: int,
    base: float,
    retry_after: float | None = None,
    *,
    cap: float = MAX_DELAY,
    rand: float | None = None,
) -> float:
    """Delay before retry number ``attempt`` (0 for the first retry).

    Exponential (``base * 2**attempt``) with jitter in [50 %, 100 %], never
    shorter than the server's Retry-After, never longer than ``cap`` unless the
    server asked for more (up to MAX_RETRY_AFTER, checked by the caller).
    """
    jitter = 0.5 + 0.5 * (random.random() if rand is None else rand)
    delay = min(cap, base * (2 ** min(attempt, 30))) * jitter
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


class Patience:
    """How long one operation (a request, a blob stream, one range) goes on retrying.

    At most ``retries`` failures in a row without progress, and never past ``timeout``
    seconds since it started or last made progress: ``--timeout`` bounds the whole wait,
    retries and backoff included, not each attempt. Progress (``mark``, e.g. the bytes
    held, growing) resets both. This is the one place that rule is written.
    """

    def __init__(
        self,
        retries: int,
        backoff: float,
        timeout: float,
        *,
        mark: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retries = max(0, retries)
        self.backoff = backoff
        self.timeout = timeout
        self.failures = 0  # in a row, since the last progress
        self.out_of_time = False  # the last refusal was the clock's: a longer --timeout could have helped
        self._clock = clock
        self._since = clock()
        self._mark = mark

    def remaining(self) -> float:
        """Seconds the next attempt may still wait (connect, answer, each read)."""
        return max(0.0, self._since + self.timeout - self._clock())

    def failed(
        self, mark: int = 0, *, limit: int | None = None, base: float | None = None, retry_after: float | None = None
    ) -> float | None:
        """One more failure, with progress up to ``mark``: the wait before the next try, or None to give up.

        ``limit`` lowers the count for this kind of failure (a refused connection); ``base`` its backoff.
        """
        if mark > self._mark:
            self._mark, self.failures, self._since = mark, 0, self._clock()
        if self.failures >= (self.retries if limit is None else min(limit, self.retries)):
            return None
        delay = backoff_delay(self.failures, self.backoff if base is None else base, retry_after)
        if delay >= self.remaining():
            self.out_of_time = True
            return None
        self.failures += 1
        return delay
