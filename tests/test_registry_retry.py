"""Retry-After parsing and backoff: pure."""

from __future__ import annotations

import pytest

from cas.registry.retry import MAX_RETRY_AFTER, backoff_delay, is_retryable_status, parse_retry_after

NOW = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("3", 3.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("-5", 0.0),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),
        ("Tue, 14 Nov 2023 22:13:00 GMT", 0.0),  # in the past: retry now
        ("Tuesday, 14-Nov-23 22:14:20 GMT", 60.0),  # RFC 850 form
        ("Tue, 14 Nov 2023 22:13:50", None),  # no zone: not a valid HTTP date
    ],
)
def test_parse_retry_after(value, expected):
    got = parse_retry_after(value, now=NOW)
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (599, True),
        (400, False),
        (401, False),
        (404, False),
        (416, False),
    ],
)
def test_retryable_statuses(status, retry):
    assert is_retryable_status(status) is retry


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [(0, 0.0, 0.25), (0, 1.0, 0.5), (1, 1.0, 1.0), (3, 1.0, 4.0), (3, 0.0, 2.0), (10, 1.0, 30.0), (100, 1.0, 30.0)],
)
def test_backoff_is_exponential_with_jitter_and_capped(attempt, rand, expected):
    assert backoff_delay(attempt, 0.5, rand=rand) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(0.0, 0.5), (2.0, 2.0), (45.0, 45.0), (MAX_RETRY_AFTER + 100, MAX_RETRY_AFTER)],
)
def test_backoff_honours_retry_after_up_to_the_cap(retry_after, expected):
    assert backoff_delay(0, 0.5, retry_after, rand=1.0) == pytest.approx(expected)


def test_backoff_jitter_stays_in_range():
    delays = {backoff_delay(2, 1.0) for _ in range(200)}
    assert all(2.0 <= d <= 4.0 for d in delays)
    assert len(delays) > 1
