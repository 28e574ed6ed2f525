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
from . import resolve as resolve_mod
from . import scenario as scenario_mod
from .catalog import Catalog, get_catalog
from .errors import VramplanError
from .estimate import needs_offload_search
from .pipeline import Outcome
from .search import Probe, capacity_gib, search_min


def outcome(body: dict[str, Any], workload: str, catalog: Catalog | None = None, *, strict: bool = False) -> Outcome:
    """One pass for ``body`` and, where it asks for auto-offloading and does not fit, the pass with the
    fewest offloaded layers that fits. ``catalog``: the loaded one when None."""
    cat = catalog or get_catalog()
    first = pipeline.run(body, workload, cat, strict=strict)
    done = _fewest_offloaded_layers(first, cat) \
        if needs_offload_search(first.request, workload, first.response["memory_status"]) else first
    if workload == "inference":
        _start_check(done, cat)
    return done


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


def start_limit(done: Outcome, cat: Catalog) -> tuple[int, int, bool] | None:
    """Where the runtime refuses to start unless its preallocated KV pool holds one request of its longest length
    (``start_needs_one_request``: vLLM's check_enough_kv_cache_memory against --max-model-len, the model's context
    unless set) and the pool holds the request's own length but not that one: ``(that length, the longest
    max_model_len that starts, whether max_model_len was set)``, the second found as vLLM's estimate_max_model_len finds
    it, by bisection over estimates of one request of each length. None where it starts as launched or is not judged."""
    res, req, out = done.resolved, done.request, done.response
    value = resolve_mod.runtime_value
    if not value(res.runtime, req, "start_needs_one_request") or "kv_pool" not in out \
            or out["memory_status"] in ("error", "insufficient"):
        return None
    given = float(value(res.runtime, req, "max_model_len") or 0)
    longest = int(scenario_mod.launched_context(given, float(res.arch.max_position_embeddings or 0)))
    seq = int(req["seq_length"])
    if longest <= seq:
        return None  # the request is the longest: the estimate's own pool check covers it
    ranks = int(req["num_gpus"]) if req.get("inference_parallelism") == "expert" else 1
    if out["kv_pool"]["tokens"] / ranks >= longest + float(value(res.runtime, req, "kv_block_tokens") or 0):
        # The pool holds that many tokens at the request's own length, where a token costs at least what it costs in a
        # longer request (whole blocks, windows and fixed states spread over more tokens): it holds one request of that
        # length too, and no estimate at that length is needed (the common case, kept off every estimate's path).
        return None
    probe = {k: v for k, v in done.body.items()
             if k not in ("input_tokens", "output_tokens", "request_rate", "trace", "enable_offloading",
                          "percentage_offload", "num_offload_layers")}
    probe.update({"batch_size": 1, "concurrent_users": 1})
    if out.get("offload"):
        probe.update({"enable_offloading": True, "num_offload_layers": out["offload"]["layers"]})

    def holds(n: int) -> bool | None:
        try:
            kv = pipeline.run({**probe, "seq_length": n}, "inference", cat).response.get("kv_pool") or {}
        except VramplanError:
            return None  # a length the request cannot state (past the validation bounds): not judged
        return kv.get("sequences_at_seq_length", 0) >= ranks

    if holds(longest) is not False:
        return None
    lo, hi = seq, longest  # the request's length fits (its estimate is not insufficient); the longest does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if holds(mid) else (lo, mid)
    return longest, lo, longest == given


def _start_check(done: Outcome, cat: Catalog) -> None:
    """The start-up check's warning (:func:`start_limit`); the estimate itself stays the request's."""
    limit = start_limit(done, cat)
    if limit is None:
        return
    longest, lo, given = limit
    res, req, out = done.resolved, done.request, done.response
    what = "its max_model_len" if given else "the model's context, the max_model_len it takes unless launched with one"
    below = " (and max_input_tokens below it)" if resolve_mod.runtime_value(res.runtime, req, "max_input_tokens") else ""
    out["warnings"].append(
        f"{res.runtime.key} refuses to start as launched: one request of {longest:,} tokens ({what}) needs more KV cache "
        f"than the {out['kv_pool']['size_gb']:.2f} GiB pool on each GPU holds (start_needs_one_request; see `vramplan "
        f"runtimes {res.runtime.key}`); launched with max_model_len {lo:,} or less{below} it starts and takes these "
        f"{int(req['seq_length']):,}-token requests - runtime_settings max_model_len says so")
