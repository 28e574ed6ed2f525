"""An estimate as the API answers it: one pass of the pipeline, and the auto-offload search above it.

``enable_offloading`` without ``num_offload_layers`` or ``percentage_offload`` asks for the fewest
offloaded layers with which the workload fits. That is a search (VRAM falls monotonically with
offloaded layers, so :func:`vramplan.search.search_min` over 1..layers finds the smallest count),
and searches sit above the pipeline: :mod:`vramplan.pipeline` makes one pass and says nothing of
searching; this module runs it, and runs it again per probe when the request does not fit.

Everything that wants "the estimate of this body" — the Python face, the planner, suggestions,
maps, reports — calls :func:`estimate` (the response) or :func:`outcome` (the response with the
resolved request, for a report).
"""

from __future__ import annotations

from typing import Any

from . import pipeline
from .catalog import Catalog, get_catalog
from .estimate import needs_offload_search
from .pipeline import Outcome
from .search import Probe, capacity_gib, search_min


def outcome(body: dict[str, Any], workload: str, catalog: Catalog | None = None, *, strict: bool = False) -> Outcome:
    """One pass for ``body`` and, where it asks for auto-offloading and does not fit, the pass with the
    fewest offloaded layers that fits. ``catalog``: the loaded one when None."""
    cat = catalog or get_catalog()
    first = pipeline.run(body, workload, cat, strict=strict)
    if needs_offload_search(first.request, workload, first.response["memory_status"]):
        return _fewest_offloaded_layers(first, cat)
    return first


def estimate(body: dict[str, Any], workload: str, catalog: Catalog | None = None, *, strict: bool = False) -> dict[str, Any]:
    """The response body for one request (``strict``: refuse fields the schema does not know)."""
    return outcome(body, workload, catalog, strict=strict).response


def _fewest_offloaded_layers(first: Outcome, cat: Catalog) -> Outcome:
    """The response with the fewest offloaded layers that make the workload fit (all of them, with a
    warning, when even that does not), its assumptions saying so; the request and its resolution stay
    the body's own (the layer count is the engine's choice, not the client's)."""
    body, n_layers = first.body, int(first.resolved.arch.num_layers)
    passes: dict[int, Outcome] = {}

    def at(probe_body: dict[str, Any]) -> dict[str, Any]:
        done = pipeline.run(probe_body, "inference", cat)
        passes[probe_body["num_offload_layers"]] = done
        return done.response

    probe = Probe(at, body, "num_offload_layers", capacity_gib(body, cat), 0.0)
    n = search_min(probe, 1, n_layers)
    if n is None:
        probe.estimate(n_layers)
        done = passes[n_layers]
        done.response["warnings"].append(f"offloading all {n_layers} layers still does not fit")
    else:
        done = passes[n]
        done.response["assumptions"].insert(0, f"offloading: {n} of {n_layers} layers offloaded, the fewest with which "
                                               f"the workload fits (enable_offloading without num_offload_layers or "
                                               f"percentage_offload)")
    return Outcome(body, first.request, first.resolved, done.response)
