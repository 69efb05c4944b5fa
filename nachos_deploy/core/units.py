"""Sizes and durations as people write them in a deploy file.

NATS reads ``10MB`` as 10 MiB but ``10M`` as 10 million bytes (measured on nats-server 2.15), so sizes
are parsed with the server's own rules and written back in a canonical form the server reads the same
way. Durations use Compose's notation (``500ms``, ``1s``, ``1m30s``) because they go to Compose as is.
"""

from __future__ import annotations

import math
import re

from nachos_deploy.core.shown import shortened

_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1024,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1024**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1024**3,
    "gi": 1024**3,
    "gib": 1024**3,
}
SIZE_HINT = "use a whole number of bytes or a NATS size such as 512KB, 1MB or 10MB (MB = 1024*1024 bytes)"

_NUMBER = re.compile(r"^\s*\d+(?:\.\d+)?\s*$")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:h|m|s|ms|us))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)")
_DURATION_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
DURATION_HINT = "use a Compose duration such as 500ms, 1s, 10s or 1m30s"
MIN_SECONDS = 0.001  # the engine refuses a healthcheck interval below 1ms
MAX_SECONDS = 100_000 * 3600.0  # about 11 years; Go's durations end near 292 years
MAX_SIZE = 2**63 - 1  # sizes are int64 in nats-server and the engine


def parse_size(value: object) -> int:
    """Bytes from an int or a NATS size string; ValueError with the fix when it is neither."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size; {SIZE_HINT}")
    size: int | None = None
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative; {SIZE_HINT}")
        size = value
    elif isinstance(value, str):
        match = _SIZE.match(value)
        if match and match.group(2).lower() in _SIZE_UNITS and len(match.group(1)) <= 20:
            size = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if size is None:
        raise ValueError(f"{shortened(value)!r} is not a size; {SIZE_HINT}")
    if size > MAX_SIZE:
        raise ValueError(f"{shortened(value)} is too large (at most {MAX_SIZE} bytes); {SIZE_HINT}")
    return size


def format_size(size: int) -> str:
    """The shortest spelling nats-server reads back as exactly ``size`` bytes."""
    for suffix, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def parse_duration(value: object) -> str:
    """A Compose duration string, checked; bare numbers (also "5" from --set or the environment)
    are read as seconds, as they are in the deploy file."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; {DURATION_HINT}")
    shown = shortened(value)
    if isinstance(value, str) and _NUMBER.match(value):
        value = float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        if value <= 0:
            raise ValueError(f"{shown} is not a positive duration; {DURATION_HINT}")
        seconds = float(value)
        text = f"{value}s" if isinstance(value, int) else f"{value:.6f}".rstrip("0").rstrip(".") + "s"
    elif isinstance(value, str) and len(value) <= 64 and _DURATION.match(value.strip()):
        text = value.strip()
        seconds = duration_seconds(text)
    else:
        raise ValueError(f"{shown!r} is not a duration; {DURATION_HINT}")
    if seconds < MIN_SECONDS:
        raise ValueError(f"{shown!r} is below 1ms, the engine's shortest; {DURATION_HINT}")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{shown!r} is longer than 100000h; {DURATION_HINT}")
    return text


def duration_seconds(text: str) -> float:
    """Seconds in a duration string already checked by :func:`parse_duration`."""
    return sum(float(n) * _DURATION_SECONDS[u] for n, u in _DURATION_PART.findall(text))
