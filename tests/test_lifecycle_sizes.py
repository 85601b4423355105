"""Sizes and durations as users type them."""

import pytest

from cas.sizes import parse_duration, parse_size


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0", 0),
        ("4096", 4096),
        ("10B", 10),
        ("10GB", 10_000_000_000),
        ("10gb", 10_000_000_000),
        ("10G", 10_000_000_000),
        ("500MiB", 500 * 1024**2),
        ("1.5GiB", int(1.5 * 1024**3)),
        ("2 KB", 2000),
        ("3KiB", 3072),
        ("1TB", 10**12),
        ("1TiB", 1024**4),
    ],
)
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "-1GB", "10XB", "1e3", "ten", "10 G B", "1.2.3MB"])
def test_bad_sizes_say_what_is_expected(text):
    with pytest.raises(ValueError, match="10GB or 500MiB"):
        parse_size(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("7d", 7 * 86400),
        ("12h", 43200),
        ("30m", 1800),
        ("45s", 45),
        ("2w", 14 * 86400),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("90", 90),
        (" 7D ", 7 * 86400),
    ],
)
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "d", "7x", "7d3", "-7d", "7 d", "h1"])
def test_bad_durations_say_what_is_expected(text):
    with pytest.raises(ValueError, match="7d, 12h"):
        parse_duration(text)
