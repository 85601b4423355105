"""Sizes and durations: parse what users type (``10GB``, ``500MiB``, ``4096``; ``7d``, ``12h``, ``1h30m``)
and print sizes the one way every command prints them (IEC: ``1.5 MiB``). Pure.

Sizes follow the SI/IEC split: ``KB``/``MB``/``GB``/``TB`` (and ``K``/``M``/``G``/``T``)
are powers of 1000, ``KiB``/``MiB``/``GiB``/``TiB`` powers of 1024. A plain number is bytes.
Durations are one or more ``<number><unit>`` parts with units ``s``, ``m``, ``h``, ``d``, ``w``;
a plain number is seconds. Both raise ``ValueError`` with a message fit for a user.
"""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_size(text: str) -> int:
    """Bytes in ``text``: ``10GB`` -> 10_000_000_000, ``500MiB`` -> 524_288_000, ``4096`` -> 4096."""
    match = _SIZE.fullmatch(text or "")
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(
            f"invalid size {text!r}: expected a number of bytes, optionally with a unit "
            "(KB, MB, GB, TB in powers of 1000; KiB, MiB, GiB, TiB in powers of 1024), e.g. 10GB or 500MiB"
        )
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``7d`` -> 604800, ``12h`` -> 43200, ``1h30m`` -> 5400, ``90`` -> 90."""
    cleaned = (text or "").strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", cleaned):
        return float(cleaned)
    parts = _DURATION_PART.findall(cleaned)
    if not cleaned or not parts or "".join(n + u for n, u in parts) != cleaned:
        raise ValueError(
            f"invalid duration {text!r}: expected a number with a unit (s, m, h, d, w), e.g. 7d, 12h, 30m or 1h30m"
        )
    return float(sum(float(n) * _DURATION_UNITS[u] for n, u in parts))


_IEC_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def format_size(n: float) -> str:
    """A byte count for humans, in IEC units as every cas command and progress bar shows it.

    ``512`` -> ``512 B``, ``1536`` -> ``1.5 KiB``, ``10 * 2**30`` -> ``10.0 GiB``.
    """
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in _IEC_UNITS:
        n /= 1024
        if abs(n) < 1024 or unit == _IEC_UNITS[-1]:
            break
    return f"{n:.1f} {unit}"


def format_duration(seconds: float) -> str:
    """A duration the way users type one: ``604800`` -> ``1w``, ``5400`` -> ``1h30m``, ``2.5`` -> ``2.5s``."""
    parts, rest = [], seconds
    for unit in ("w", "d", "h", "m"):
        count, rest = divmod(rest, _DURATION_UNITS[unit])
        if count:
            parts.append(f"{count:.0f}{unit}")
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return "".join(parts)


def format_rate(bytes_per_second: float) -> str:
    """A transfer speed in the same units: ``12.3 MiB/s``."""
    return f"{format_size(bytes_per_second)}/s"
