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


class Guided(Below):
    """A probe whose boundary is ``boundary``, guided by a cheaper one whose boundary is ``near`` (counted apart)."""

    def __init__(self, boundary: int, near: int, kind: type = Below):
        self.boundary, self.calls, self.guide = boundary, 0, kind(near)
        self.kind = kind

    def fits(self, value: int) -> bool:
        return self.kind.fits(self, value)


@pytest.mark.parametrize("near", [0, 1, 9, 50, 100, 103, 150, 200, 250])
def test_a_guided_search_max_finds_the_probes_own_boundary(near):
    # the guide only says where to start looking: the answer is the probe's own, whatever the guide says
    for boundary in range(0, 202):
        probe = Guided(boundary, near)
        expected = min(boundary, 200) if boundary >= 1 else None
        assert search_max(probe, 64, 1, 200) == expected, (near, boundary)


@pytest.mark.parametrize("near", [0, 1, 9, 50, 100, 103, 128, 250])
def test_a_guided_search_min_finds_the_probes_own_boundary(near):
    for boundary in range(0, 202):
        probe = Guided(boundary, near, Above)
        expected = max(boundary, 1) if boundary <= 128 else None
        assert search_min(probe, 1, 128) == expected, (near, boundary)


def test_a_close_guide_leaves_a_handful_of_costly_estimates():
    # boundary 1,000 in [1, 100000]: unguided, galloping from 64 and bisecting takes ~14 probes; with a guide at
    # 1,010 the probe's own estimates step down by 1010 // 32 = 31 (1010 fails, 979 fits) and bisect 979..1010
    # (994 fits, 1002 fails, 998, 1000 fit, 1001 fails): 7 in all
    unguided = Below(1000)
    assert search_max(unguided, 64, 1, 100000) == 1000 and unguided.calls >= 14
    guided = Guided(1000, 1010)
    assert search_max(guided, 64, 1, 100000) == 1000
    assert guided.calls == 7
