"""The bisections every search shares (:mod:`vramplan.search`), against brute force over a monotone predicate."""

from __future__ import annotations

import pytest

from vramplan.search import search_max, search_min


class Below:
    """Fits at or below ``boundary`` (memory grows with the value: context, batch, users); counts calls."""

    def __init__(self, boundary: int):
        self.boundary, self.calls = boundary, 0

    def fits(self, value: int) -> bool:
        self.calls += 1
        return value <= self.boundary


class Above(Below):
    """Fits at or above ``boundary`` (memory shrinks with the value: GPUs, offloaded layers)."""

    def fits(self, value: int) -> bool:
        self.calls += 1
        return value >= self.boundary


@pytest.mark.parametrize("start", [1, 7, 64, 200])
def test_search_max_finds_the_largest_fitting_value(start):
    for boundary in range(0, 202):
        probe = Below(boundary)
        found = search_max(probe, start, 1, 200)
        # brute force: the largest v in [1, 200] with v <= boundary, None when even 1 does not fit
        expected = min(boundary, 200) if boundary >= 1 else None
        assert found == expected, (start, boundary)
        # galloping then bisecting: about 2 log2(200) ~ 16 probes, never a scan
        assert probe.calls <= 20


def test_search_min_finds_the_smallest_fitting_value():
    for boundary in range(0, 202):
        probe = Above(boundary)
        found = search_min(probe, 1, 128)
        expected = max(boundary, 1) if boundary <= 128 else None
        assert found == expected, boundary
        assert probe.calls <= 16

