"""``cheapest_deployment``: the cheapest way to serve a traffic within an SLO, over the whole catalog.

Given a model, a traffic (``input_tokens``, ``output_tokens``, and ``request_rate`` or
``concurrent_users``), an ``slo`` and optionally ``gpu_keys``, ``runtimes``, ``min_quality_rank``,
``gpu_hour_costs`` and ``max_deployments``, :func:`cheapest_deployment` searches the configurations
of :mod:`vramplan.deployspace` (GPU type x GPUs per replica x split x runtime x weights format x KV
precision) and, for each, the fewest **replicas** that carry the traffic within the SLO. The load is
split evenly: an open loop sends ``request_rate / replicas`` to each replica; a closed loop gives each
``ceil(concurrent_users / replicas)`` clients (the busiest replica). A replica **meets** the SLO when
:func:`vramplan.verdict.binding` finds nothing binding at its share of the load: it fits in memory
(with ``headroom``), runs every sequence at once, is below capacity and its mean latencies are
within the SLO.

The answer's ``value`` lists, best first, the cheapest deployment on each of the ``max_deployments``
best GPU types (the first is the cheapest of all): the inference request that estimates one replica
(``request``: ``gpu_key``, ``num_gpus``, ``inference_parallelism``, ``quantization``,
``kv_cache_quantization``, ``runtime``, its share of the load, the price), the number of replicas,
the replica's latencies and utilisation, the deployment's cost per hour and per million output
tokens, and its **binding** constraint: what fails one step cheaper (:func:`cheaper_step`: one
replica fewer, or half the GPUs when there is one replica; none for one GPU). Priced deployments come
first, by cost per hour; GPU types without a price (neither ``gpu_hour_costs`` nor a catalog
reference price) follow, by GPU count. Ties go to the better weights and KV quality - the quality a format
keeps of this model, never more than its checkpoint holds (:class:`vramplan.formatrules.Ceiling`: Llama 3.1 in
fp32 keeps what its bf16 checkpoint has, no more) - then to the checkpoint's own weights format, then the lower
end-to-end latency.

The search itself is :mod:`vramplan.deploysearch`; the chosen deployments are estimated again one by
one through :func:`vramplan.many.estimate_many`, so every figure shown is a single estimate's.
:func:`describe_deployment` gives the same figures for a deployment written as one replica's request
and a replica count (what a report of it shows).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import pipeline
from . import scenario as scenario_mod
from .answer import start_limit
from .catalog import Catalog
from .deploysearch import (DECIDED, DEFAULT_SHOWN, DROPPED, MAX_REPLICAS, Outcome, keys, max_replicas, price_per_config,
                           search)
from .deployspace import Price, Space, build_space, price_of
from .errors import RequestError, VramplanError
from .many import estimate_many
from .resolve import runtime_value
from .search import capacity_gib
from .verdict import binding


def cheapest_deployment(cat: Catalog, body: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """The planner's ``cheapest_deployment`` answer (see the module docstring)."""
    for name, why in (("custom_vram", "it would replace every GPU's memory"),
                      ("gpu_hour_cost", "it prices one GPU; give gpu_hour_costs (GPU key -> price per GPU-hour)"),
                      ("enable_offloading", "offloading is not searched")):
        if body.get(name) not in (None, False):
            return {"value": None, "reason": f"cheapest_deployment searches whole deployments: leave out {name} ({why})"}
    slo = ctx["slo"] or {}
    shown = int(ctx.get("max_deployments") or DEFAULT_SHOWN)
    space = build_space(cat, body, ctx["gpu_keys"], ctx.get("runtimes"), ctx.get("min_quality_rank"),
                        ctx.get("gpu_hour_costs") or {})
    if space.size == 0:
        return {"value": None, "reason": _empty_reason(space, ctx), "considered": 0}
    out = search(space, slo, ctx["headroom"], shown)
    rows, estimated = _answer_rows(space, out, slo, ctx["headroom"], shown)
    answer: dict[str, Any] = {"considered": space.size, "evaluations": out.evaluations + estimated}
    if not rows:
        return {"value": None, "reason": _nothing_meets(space, out, slo), **answer}
    started = _launched_to_start(cat, rows)
    answer.update({"value": rows, "binding": rows[0]["binding"],
                   "search": {"gpu_types": len(space.gpus), "runtime_format_pairs": len(space.pairs), "passes": out.passes,
                              "pruned": dict(out.pruned), "max_replicas": max_replicas(space)}})
    if space.notes or started:
        answer["notes"] = space.notes + started
    return answer


def _launched_to_start(cat: Catalog, rows: list[dict[str, Any]]) -> list[str]:
    """Rows whose runtime would refuse to start as its defaults launch it (:func:`vramplan.answer.start_limit`: vLLM
    where its pool cannot hold one request of the model's context) are launched with ``max_model_len`` the request's
    length - their ``runtime_settings`` and ``request`` say so - and a note each says why; a request that sets
    ``max_model_len`` itself is left as it is."""
    notes = []
    for r in rows:
        body = r["request"]
        if "max_model_len" in (body.get("runtime_settings") or {}):
            continue
        try:
            done = pipeline.run(body, "inference", cat)
        except VramplanError:
            continue
        limit = start_limit(done, cat)
        if limit is None:
            continue
        longest, lo, given = limit
        req, res = done.request, done.resolved
        seq = int(req["seq_length"])
        before = r.get("runtime_settings") or {}
        settings = {**before, "max_model_len": float(seq)}
        if float(runtime_value(res.runtime, req, "max_input_tokens") or 0) >= seq:
            settings["max_input_tokens"] = float(req["input_tokens"])  # below the request limit, or TGI refuses to start
        # The defaults the row was estimated with stay: one that follows these limits (TGI's prefill budget, vLLM V0's
        # token budget and chunking by max_model_len) is set to what it was, so the row's figures are its request's.
        was = scenario_mod.runtime_constants(res.runtime.data, res.gpu, res.gpu_memory_gib, before or None, res.arch)
        now = scenario_mod.runtime_constants(res.runtime.data, res.gpu, res.gpu_memory_gib, settings, res.arch)
        settings.update({key[3:]: v for key, v in was.items() if key[3:] not in settings and now.get(key) != v})
        r["runtime_settings"], r["request"] = settings, {**body, "runtime_settings": settings}
        launched = ", ".join(f"{k} {v:,.0f}" for k, v in settings.items() if k not in before)
        what = "its max_model_len" if given else "the model's context"
        notes.append(f"{r['runtime']} on {r['gpu_key']}: launched with {launched} - one request of {longest:,} tokens ({what}) "
                     f"needs more KV cache than its pool holds (up to {lo:,} tokens starts) and {r['runtime']} refuses to "
                     "start without it")
    return notes


# -- the answer -----------------------------------------------------------------------------------

def _best_per_gpu(space: Space, out: Outcome) -> list[int]:
    decided = np.flatnonzero(out.state == DECIDED)
    if not len(decided):
        return []
    gpus = space.gpu[decided]
    total = space.n[decided] * out.hi[decided]
    order = np.lexsort((decided, out.e2e[decided], ~space.native[decided], -space.quality[decided, 1],
                        -space.quality[decided, 0], total, gpus))
    first = np.ones(len(order), dtype=bool)
    first[1:] = gpus[order][1:] != gpus[order][:-1]
    return decided[order[first]].tolist()


def _answer_rows(space: Space, out: Outcome, slo: dict[str, float], headroom: float,
                 shown: int) -> tuple[list[dict[str, Any]], int]:
    """The best deployment of the ``shown`` best GPU types, estimated again one by one, with cost and
    binding constraint; and how many single estimates that took."""
    price = price_per_config(space)
    best = np.array(_best_per_gpu(space, out), dtype=np.int64)
    if not len(best):
        return [], 0
    group, value = keys(price, best, space.n[best] * out.hi[best])
    order = np.lexsort((out.e2e[best], ~space.native[best], -space.quality[best, 1], -space.quality[best, 0], value, group))
    best = best[order][: shown + 2].tolist()  # a little over: the final ranking may break ties differently
    bodies, cheaper = [], []
    for row in best:
        replicas, n = int(out.hi[row]), int(space.n[row])
        bodies.append(space.replica_body(row, replicas))
        if replicas > 1:
            cheaper.append(space.replica_body(row, replicas - 1))
        elif n > 1:
            cheaper.append({**space.replica_body(row, 1), "num_gpus": n // 2})
        else:
            cheaper.append(None)
    extra = [b for b in cheaper if b is not None]
    estimates = estimate_many(bodies + extra, "inference", space.cat)
    replica_out, cheaper_out = estimates[:len(bodies)], iter(estimates[len(bodies):])
    rows = []
    for row, body, est, alt in zip(best, bodies, replica_out, cheaper):
        alt_est = next(cheaper_out) if alt is not None else None
        if isinstance(est, VramplanError):
            space.notes.append(f"{body['gpu_key']}: the chosen replica could not be estimated alone: {est}")
            continue
        capacity = float(space.gpus[int(space.gpu[row])].data["memory_gib"])
        why = binding(est, capacity, headroom, slo)
        if why is not None:  # the batch and the single estimate disagree: never expected (tests check)
            space.notes.append(f"{body['gpu_key']}: the chosen replica fails on {why} when estimated alone; left out")
            continue
        p = space.pairs[int(space.pair[row])]
        head = {k: body[k] for k in ("gpu_key", "num_gpus", "inference_parallelism", "quantization", "kv_cache_quantization",
                                     "runtime")}
        if p.settings:
            head["runtime_settings"] = dict(p.settings)
        figures = deployment_figures(body, est, int(out.hi[row]), capacity, slo, headroom, alt, alt_est,
                                     space.prices[int(space.gpu[row])])
        rows.append(({**head, **figures, "quality_rank": float(space.quality[row, 0]),
                      "kv_quality_rank": float(space.quality[row, 1]), "request": body}, bool(space.native[row])))
    rows.sort(key=_rank)
    return [r for r, _ in rows[:shown]], len(bodies) + len(extra)


def cheaper_step(body: dict[str, Any], replicas: int) -> tuple[dict[str, Any] | None, str | None]:
    """The same deployment one step cheaper, as one replica's request: one replica fewer (each of the
    others takes a bigger share of the load), or, with one replica, half its GPUs; None for one GPU."""
    n = int(body.get("num_gpus") or 1)
    if replicas > 1:
        out = dict(body)
        if body.get("request_rate") is not None:
            out["request_rate"] = body["request_rate"] * replicas / (replicas - 1)
        else:
            out["concurrent_users"] = -(-int(body.get("concurrent_users") or 1) * replicas // (replicas - 1))
        return out, f"{replicas - 1} replica{'s' if replicas != 2 else ''}"
    if n > 1:
        return {**body, "num_gpus": n // 2}, f"{n // 2} GPU{'s' if n // 2 != 1 else ''} per replica"
    return None, None


def deployment_figures(body: dict[str, Any], est: dict[str, Any], replicas: int, capacity: float, slo: dict[str, float],
                       headroom: float, cheaper: dict[str, Any] | None, cheaper_est: Any, price: Price) -> dict[str, Any]:
    """What a deployment of ``replicas`` replicas of ``body`` (estimated as ``est``) costs and what binds it:
    the replica's share of the load and latencies, the deployment's throughput (every replica at that
    load) and price, and the binding constraint read one step cheaper (``cheaper``, estimated as
    ``cheaper_est``: :func:`cheaper_step`)."""
    srv = est["serving"]
    n = int(body.get("num_gpus") or 1)
    output_tps = srv["output_throughput_tps"] * replicas
    cost = price.usd * n * replicas if price.usd is not None else None
    per_million = cost / (output_tps * 3600) * 1e6 if cost is not None and output_tps > 0 else None
    why, detail = None, None
    if cheaper is not None:
        step = cheaper_step(body, replicas)[1]
        if isinstance(cheaper_est, VramplanError):
            why, detail = "request", f"with {step} the request is not valid: {cheaper_est}"
        else:
            why = binding(cheaper_est, capacity, headroom, slo) or "none"
            detail = _binding_words(why, step, cheaper_est, capacity, headroom, slo)
    load = {"request_rate": body["request_rate"]} if body.get("request_rate") is not None \
        else {"concurrent_users": int(body.get("concurrent_users") or 1)}
    return {"replicas": replicas, "total_gpus": n * replicas, **load,
            "ttft_ms": srv["ttft_ms"], "itl_ms": srv["itl_ms"], "e2e_latency_ms": srv["e2e_latency_ms"],
            "utilisation": srv["utilisation"], "limited_by": srv["limited_by"], "vram_usage": est["vram_usage"],
            "memory_status": est["memory_status"], "output_throughput_tps": round(output_tps, 1),
            "gpu_hour_cost": price.usd, "price": price.describe(),
            "cost_per_hour": None if cost is None else round(cost, 4),
            "cost_per_million_output_tokens": None if per_million is None else round(per_million, 4),
            "binding": why, "binding_step": None if cheaper is None else cheaper_step(body, replicas)[1],
            "binding_detail": detail}


def describe_deployment(cat: Catalog, body: dict[str, Any], replicas: int, slo: dict[str, float] | None = None,
                        headroom: float = 0.0) -> dict[str, Any]:
    """:func:`deployment_figures` for a deployment given as one replica's inference request and the
    number of replicas (what a report of a cheapest_deployment answer shows): both estimates are run
    here, and the price is the request's ``gpu_hour_cost`` (marked as the GPU's catalog reference price
    when it is that)."""
    if not isinstance(replicas, int) or isinstance(replicas, bool) or not 1 <= replicas <= MAX_REPLICAS:
        raise RequestError([("replicas", f"must be a whole number from 1 to {MAX_REPLICAS}")])
    cheaper, _ = cheaper_step(body, replicas)
    est, *rest = estimate_many([body] + ([cheaper] if cheaper else []), "inference", cat)
    if isinstance(est, VramplanError):
        raise est
    gpu = cat.gpus.get(body["gpu_key"])
    capacity = capacity_gib(body, cat)
    price = Price(None, None)
    if body.get("gpu_hour_cost") is not None:
        ref = price_of(gpu, {})
        price = ref if ref.usd == body["gpu_hour_cost"] else Price(float(body["gpu_hour_cost"]), "request")
    return deployment_figures(body, est, replicas, capacity, slo or {}, headroom, cheaper, rest[0] if rest else None, price)


def _binding_words(why: str, step: str, out: dict[str, Any], capacity: float, headroom: float, slo: dict[str, float]) -> str:
    if why == "none":
        return f"with {step} it would still meet the SLO"
    if why == "memory":
        limit = (1.0 - headroom) * capacity
        return f"with {step} it needs {out['vram_usage']:.2f} GiB per GPU, over the {limit:.2f} GiB allowed"
    if why == "configuration":
        return f"with {step} the model cannot be split that way"
    if why == "capacity":
        return f"with {step} requests arrive faster than a replica serves them"
    if why in slo:
        got = out["serving"][why]
        return f"with {step} {why} would be {'unbounded' if got is None else f'{got:g}'}, over the SLO's {slo[why]:g}"
    return f"with {step} requests would wait for admission ({why})"


def _rank(item: tuple[dict[str, Any], bool]) -> tuple:
    row, native = item
    if row["cost_per_hour"] is not None:
        head = (0, row["cost_per_hour"], row["cost_per_million_output_tokens"] or math.inf)
    else:
        head = (1, row["total_gpus"], 0.0)
    return head + (-row["quality_rank"], -row["kv_quality_rank"], not native, row["e2e_latency_ms"] or math.inf,
                   row["gpu_key"])


# -- when nothing qualifies ---------------------------------------------------------------------------

def _empty_reason(space: Space, ctx: dict[str, Any]) -> str:
    if not space.gpus:
        return "no GPU to search: gpu_keys names only custom placeholders"
    if not space.pairs:
        floor = ctx.get("min_quality_rank")
        return ("no runtime searched loads a weights format"
                + (f" at min_quality_rank {floor:g} or above" if floor is not None else "")
                + (f" ({'; '.join(space.notes)})" if space.notes else ""))
    return "none of the runtimes searched runs on the GPUs given (each runtime's deployment.vendors: GET runtimes)"


def _nothing_meets(space: Space, out: Outcome, slo: dict[str, float]) -> str:
    counts: dict[str, int] = {}
    for w in out.why[out.state == DROPPED].tolist():
        counts[str(w)] = counts.get(str(w), 0) + 1
    parts = [f"{k} ({v:,})" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    text = (f"none of the {space.size:,} configurations meets it with up to {max_replicas(space):,} replicas "
            f"(what each failed on: {', '.join(parts) or 'nothing evaluated'})")
    close = []
    for key, limit in slo.items():
        seen = out.seen[key]
        if np.isfinite(seen).any():
            close.append(f"the lowest {key} any reaches is {np.nanmin(seen):g} (the SLO asks {limit:g})")
    return text + (f"; {'; '.join(close)}" if close else "")
