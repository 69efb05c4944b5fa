from __future__ import annotations

import pytest

from nachos_deploy.core.units import duration_seconds, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10MB", 10 * 1024 * 1024),
        ("10M", 10_000_000),  # nats-server reads M as a million: measured
        ("512KB", 512 * 1024),
        ("1k", 1000),
        (" 64mb ", 64 * 1024 * 1024),
        ("1GiB", 1024**3),
        (2048, 2048),
        ("2048", 2048),
    ],
)
def test_parse_size_follows_nats_rules(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["ten", "10 XB", "1.5MB", "", -1, True, None, [1]])
def test_parse_size_rejects_with_a_hint(bad: object) -> None:
    with pytest.raises(ValueError, match="NATS size such as"):
        parse_size(bad)


@pytest.mark.parametrize("size", [1, 1000, 1024, 10 * 1024 * 1024, 1024**3, 3 * 1024 + 1])
def test_format_size_round_trips(size: int) -> None:
    assert parse_size(format_size(size)) == size


def test_format_size_prefers_units() -> None:
    assert format_size(10 * 1024 * 1024) == "10MB"
    assert format_size(1000) == "1000"


@pytest.mark.parametrize(
    ("text", "seconds"), [("1s", 1.0), ("500ms", 0.5), ("1m30s", 90.0), (2, 2.0), ("10", 10.0), (0.25, 0.25)]
)
def test_durations(text: object, seconds: float) -> None:
    assert duration_seconds(parse_duration(text)) == seconds


@pytest.mark.parametrize("bad", ["soon", "1 s", "0s", 0, -3, "0", "-3", "1e-7", True, "100ns", 1e400])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)
