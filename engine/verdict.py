"""The planner's one definition of "fits": what keeps an estimate from serving as asked.

Used by every search - the planner's questions (:mod:`vramplan.planner`), the sweep's ``fits`` and
``binding`` columns (:mod:`vramplan.sweep`) and ``cheapest_deployment`` (:mod:`vramplan.deploy`) -
so they agree by construction. It reads only the response's own figures.
"""

from __future__ import annotations

from typing import Any

#: Serving-model latencies an SLO may bound (the serving object's fields).
SLO_FIELDS = ("ttft_ms", "itl_ms", "e2e_latency_ms")
#: memory_status values that do not fit.
NOT_FITTING = ("insufficient", "error")


def fits(out: dict[str, Any], capacity: float, headroom: float = 0.0, slo: dict[str, float] | None = None) -> bool:
    """The planner's one definition of "fits" (its meaning is in :mod:`vramplan.planner`'s docstring)."""
    return binding(out, capacity, headroom, slo) is None


def binding(out: dict[str, Any], capacity: float, headroom: float = 0.0, slo: dict[str, float] | None = None) -> str | None:
    """What keeps an estimate from fitting: ``configuration`` (memory_status error), ``memory``, ``capacity`` (an
    open loop past it), the admission cap that makes sequences wait (``kv_cache``, ``max_num_seqs``...) or
    an SLO field; None if it fits."""
    if out["memory_status"] == "error":
        return "configuration"
    if out["memory_status"] in NOT_FITTING or out["vram_usage"] > (1.0 - headroom) * capacity + 1e-9:
        return "memory"
    srv = out.get("serving")
    if srv is None:
        return None
    if srv["load"] == "open_loop" and srv["ttft_ms"] is None:
        return "capacity"
    if srv["load"] != "open_loop" and srv["queued_requests"]:
        return srv["limited_by"]  # the runtime admits fewer than asked (its KV pool, max_num_seqs...): the rest wait
    for key, limit in (slo or {}).items():
        if srv[key] is None or srv[key] > limit:
            return key
    return None
