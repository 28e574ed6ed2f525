"""Searches over one request field: the bisections the planner, the auto-offload search, the context
curve and suggestions share.

Memory grows with context, batch and users and shrinks with more GPUs or offloaded layers, so "does
it fit at this value?" is a monotone predicate; :func:`search_max` and :func:`search_min` gallop
from a start value (doubling or halving, about log2 steps) to bracket the boundary, then bisect.

A :class:`Probe` is given the estimator it calls — the bare pipeline for the auto-offload search
(:mod:`vramplan.answer`), an estimate as the API answers it for the planner — so this module sits
above nothing it could call back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .catalog import Catalog
from .errors import RequestError
from .request import context_change
from .verdict import binding, fits


def capacity_gib(body: dict[str, Any], cat: Catalog) -> float:
    """The GPU memory the request runs against: ``custom_vram`` if given, else the catalog's."""
    if body.get("custom_vram") is not None:
        return float(body["custom_vram"])
    return float(cat.gpus.get(body["gpu_key"]).data.get("memory_gib") or 0.0)


class Probe:
    """Estimates one request at different values of one field, remembering each (no estimate twice).

    ``run`` maps a request body to its response; a value whose request is invalid (a
    :class:`RequestError`, e.g. micro_batch_size > batch_size) is remembered as the error."""

    def __init__(self, run: Callable[[dict[str, Any]], dict[str, Any]], body: dict[str, Any], field: str,
                 capacity: float, headroom: float, slo: dict[str, float] | None = None):
        self.body, self.field, self.capacity, self.headroom, self.slo = body, field, capacity, headroom, slo
        self.run = run
        self.seen: dict[int, dict[str, Any] | RequestError] = {}

    def body_at(self, value: int) -> dict[str, Any]:
        """The request at ``value`` - at another context length, with the halves it gives kept in step
        (:func:`~vramplan.request.context_change`)."""
        if self.field == "seq_length":
            return {**self.body, **context_change(self.body, value)}
        return {**self.body, self.field: value}

    def estimate(self, value: int) -> dict[str, Any] | RequestError:
        if value not in self.seen:
            try:
                self.seen[value] = self.run(self.body_at(value))
            except RequestError as exc:  # this value cannot run
                self.seen[value] = exc
        return self.seen[value]

    def fits(self, value: int) -> bool:
        out = self.estimate(value)
        return not isinstance(out, RequestError) and fits(out, self.capacity, self.headroom, self.slo)

    def binding(self, value: int) -> str | None:
        out = self.estimate(value)
        return "request" if isinstance(out, RequestError) else binding(out, self.capacity, self.headroom, self.slo)


def search_max(probe: Probe, start: int, lo_bound: int, cap: int) -> int | None:
    """Largest value in [lo_bound, cap] that fits, for a predicate true below a boundary; None if none."""
    start = min(max(start, lo_bound), cap)
    if probe.fits(start):
        lo, hi = start, None
        while hi is None:
            if lo == cap:
                return cap
            nxt = min(lo * 2, cap)
            if probe.fits(nxt):
                lo = nxt
            else:
                hi = nxt
    else:
        hi, lo = start, None
        while lo is None:
            if hi == lo_bound:
                return None
            nxt = max(hi // 2, lo_bound)
            if probe.fits(nxt):
                lo = nxt
            else:
                hi = nxt
    return _bisect(probe, lo, hi)


def search_min(probe: Probe, lo_bound: int, cap: int) -> int | None:
    """Smallest value in [lo_bound, cap] that fits, for a predicate true above a boundary; None if none."""
    if probe.fits(lo_bound):
        return lo_bound
    lo, hi = lo_bound, None  # lo does not fit
    while hi is None:
        if lo >= cap:
            return None
        nxt = min(lo * 2, cap)
        if probe.fits(nxt):
            hi = nxt
        else:
            lo = nxt
    return _bisect(probe, hi, lo)


def _bisect(probe: Probe, good: int, bad: int) -> int:
    """The fitting end of the boundary between ``good`` (fits) and ``bad`` (does not), on either side of it."""
    while abs(bad - good) > 1:
        mid = (good + bad) // 2
        if probe.fits(mid):
            good = mid
        else:
            bad = mid
    return good
