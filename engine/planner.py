"""The planner: "what fits?" answered by searching the estimator itself.

``plan(request)`` takes an inference or fine-tuning request plus ``workload`` (default inference), ``find`` (the
questions), ``headroom`` and ``gpu_keys`` (schema ``plan-request``) and answers each question with
``{"value": ..., "estimate": {...}}`` or ``{"value": null, "reason": "..."}`` (schema
``plan-response``).

A configuration **fits** when its ``memory_status`` is neither ``insufficient`` nor ``error``,
``vram_usage <= (1 - headroom) x capacity``, and (inference) the runtime runs every sequence at once
rather than queueing some for its KV pool or batch cap. Every answer is read off the estimator, never from a
formula of its own, so it is consistent by construction: for a "max" question the value fits and
value + 1 does not (unless a cap ended the search: ``limited_by`` says which); for ``min_num_gpus``
the value fits and value - 1 does not.

Search: memory grows with context, batch and users, and shrinks with more GPUs, so each question is
a monotone predicate. It gallops from the request's own value (doubling or halving, about log2
steps) to bracket the boundary, then bisects: ~2·log2(range) estimates of ~1 ms each.

``best_quantization`` tries weight formats from the highest ``quality_rank`` down (catalog
``quantization/formats.yaml``; ties keep catalog order) and answers the first that fits. Only
formats the runtime loads are tried: the request's ``runtime`` if it names one, else each format
with the runtime it defaults to (GGUF types → llama.cpp, others → the default runtime); aliases
(``q8``) are skipped for the format they name. Fine-tuning tries ``fine_tuning_quantization`` for
``full`` (fp32 mixed precision, bf16, fp16, fp8); LoRA and QLoRA fix their base format.

``gpus`` estimates the request on every catalog GPU (or ``gpu_keys``) in one batch
(:func:`vramplan.many.estimate_many`), skips the ``custom_*`` placeholders, and lists those that fit,
fastest first (``per_user_tps`` or ``training_tps``).

Serving: an ``slo`` (``ttft_ms``, ``itl_ms``, ``e2e_latency_ms``, any subset; inference only) makes
"fits" also mean the serving model's latencies at that load are within it, and an open loop
(``request_rate``) must be below the deployment's capacity. ``max_concurrent_users`` then answers how
many clients the deployment serves within the SLO, ``min_num_gpus`` the fewest GPUs that carry the
request's ``request_rate`` within it, and ``max_request_rate`` the highest arrival rate (requests/s,
three significant figures, bisected between an idle rate and the capacity) that meets it. Each such
answer names the ``binding`` constraint: what fails one step further (``memory``, ``capacity`` or an
SLO field).

``cheapest_deployment`` needs no ``gpu_key``: it searches every catalog GPU (or ``gpu_keys``), GPUs
per replica and their split, runtimes (``runtimes``), weights and KV formats (``min_quality_rank``)
and the number of replicas for the cheapest deployments that carry ``request_rate`` or
``concurrent_users`` within the ``slo``, priced by ``gpu_hour_costs`` or the catalog's reference
prices (:mod:`vramplan.deploy`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from . import formatrules
from . import request as request_mod
from .catalog import Catalog, get_catalog
from .datafiles import field_name, schema_problems
from .answer import estimate
from .deploy import cheapest_deployment
from .errors import RequestError, VramplanError
from .estimate import trace_values
from .many import estimate_many
from .registry import Entry
from .search import Probe, capacity_gib, search_max, search_min  # noqa: F401 - capacity_gib re-exported
from .verdict import NOT_FITTING, SLO_FIELDS, binding, fits  # noqa: F401 - the planner's definition, re-exported

PLAN_FIELDS = ("workload", "find", "headroom", "gpu_keys", "slo", "runtimes", "min_quality_rank", "gpu_hour_costs",
               "max_deployments")
#: Questions that search over GPUs themselves (no gpu_key needed).
GPU_SEARCHES = ("gpus", "cheapest_deployment")
#: The bisection for max_request_rate stops at this relative width (answers carry 3 significant figures).
RATE_PRECISION = 1e-3
#: Request field each numeric question varies, and the schema's ceiling for it.
FIELDS = {"max_seq_length": ("seq_length", 16777216), "max_batch_size": ("batch_size", 1048576),
          "max_concurrent_users": ("concurrent_users", 1048576), "min_num_gpus": ("num_gpus", 1024)}
FINETUNE_PRECISIONS = ("fp32", "bf16", "fp16", "fp8")


def estimator(workload: str, catalog: Catalog) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The estimate of a request body against ``catalog``, as the API answers it (auto-offload included)."""
    return lambda body: estimate(body, workload, catalog)


def _probe(body: dict[str, Any], workload: str, field: str, capacity: float, headroom: float,
           slo: dict[str, float] | None, catalog: Catalog) -> Probe:
    """A :class:`~vramplan.search.Probe` of ``field`` that estimates as the API answers."""
    return Probe(estimator(workload, catalog), body, field, capacity, headroom, slo)


def _why_not(out: dict[str, Any] | RequestError, field: str, value: float, capacity: float, headroom: float,
             slo: dict[str, float] | None = None) -> str:
    if isinstance(out, RequestError):
        return f"{field}={value} is not a valid request: {out}"
    why = binding(out, capacity, headroom, slo)
    if why == "capacity":
        return f"at {field}={value} requests arrive faster than the deployment serves them"
    if why in SLO_FIELDS:
        got = out["serving"][why]
        return f"at {field}={value} {why} is {'unbounded' if got is None else f'{got:g}'}, over the SLO's {slo[why]:g}"
    limit = (1.0 - headroom) * capacity
    text = (f"even at {field}={value} it needs {out['vram_usage']:.2f} GiB, over the {limit:.2f} GiB allowed"
            + (f" ({capacity:g} GiB less {headroom:.0%} headroom)" if headroom else f" ({capacity:g} GiB)")
            if out["vram_usage"] > limit else f"at {field}={value} memory_status is {out['memory_status']}")
    errors = [w for w in out.get("warnings", []) if w.startswith("configuration error")]
    return text + ("; " + "; ".join(errors) if errors else "")


def model_context(body: dict[str, Any], cat: Catalog) -> int | None:
    """The model's context length in tokens (catalog, or the custom config's max_position_embeddings)."""
    if body.get("llm_key") == "custom":
        cfg = body.get("custom_model") or {}
        cfg = cfg.get("text_config", cfg) if isinstance(cfg, dict) else {}
        n = cfg.get("max_position_embeddings")
        return int(n) if isinstance(n, int) and n > 0 else None
    arch = cat.architectures.get(body.get("llm_key"))
    n = getattr(arch, "max_position_embeddings", None) if arch else None
    if not n and body.get("llm_key") in cat.models:
        n = cat.models.get(body["llm_key"]).data.get("context_length")
    return int(n) if n else None


def _numeric(question: str, body: dict[str, Any], workload: str, ctx: dict[str, Any]) -> dict[str, Any]:
    field, cap = FIELDS[question]
    cat, capacity, headroom, slo = ctx["catalog"], ctx["capacity"], ctx["headroom"], ctx["slo"]
    if question == "max_concurrent_users" and workload != "inference":
        return {"value": None, "reason": "concurrent_users applies to inference only"}
    if question == "max_concurrent_users" and body.get("request_rate") is not None:
        return {"value": None, "reason": "request_rate sets an open loop; max_concurrent_users asks about a closed loop "
                                         "(leave request_rate out, or ask max_request_rate)"}
    limited_by = f"the schema's maximum {field} ({cap})"
    if question == "max_seq_length":
        n = model_context(body, cat)
        if n:
            cap, limited_by = min(cap, n), f"the model's context length ({n} tokens)"
    probe = _probe(body, workload, field, capacity, headroom, slo, cat)
    if question == "min_num_gpus":
        value = search_min(probe, 1, cap)
        if value is None:
            return {"value": None, "reason": f"no GPU count up to {cap} fits: "
                    + _why_not(probe.estimate(cap), field, cap, capacity, headroom, slo), "evaluations": len(probe.seen)}
    else:
        value = search_max(probe, int(ctx["base"].get(field, 1)), 1, cap)
        if value is None:
            return {"value": None, "reason": "nothing fits: " + _why_not(probe.estimate(1), field, 1, capacity, headroom, slo),
                    "evaluations": len(probe.seen)}
    answer: dict[str, Any] = {"value": value, "estimate": _final(probe, value, body, workload, field),
                              "evaluations": len(probe.seen)}
    if question != "min_num_gpus" and value == cap:
        answer["limited_by"] = limited_by
    elif slo or body.get("request_rate") is not None:
        answer["binding"] = probe.binding(value - 1 if question == "min_num_gpus" else value + 1)
    return answer


def _max_request_rate(question: str, body: dict[str, Any], workload: str, ctx: dict[str, Any]) -> dict[str, Any]:
    """The highest open-loop arrival rate that fits, meets the SLO and stays below capacity.

    Latencies grow with the rate and memory does not change with it, so the predicate is monotone: the
    capacity (the serving model's requests/s when arrivals outrun it) bounds the search from above, an
    almost idle rate from below, and bisection narrows the gap to RATE_PRECISION."""
    if workload != "inference":
        return {"value": None, "reason": "request_rate applies to inference only"}
    capacity, headroom, slo = ctx["capacity"], ctx["headroom"], ctx["slo"]
    run = estimator(workload, ctx["catalog"])
    base = {k: v for k, v in body.items() if k not in ("trace", "concurrent_users", "request_rate")}
    seen: dict[float, dict[str, Any]] = {}

    def at(rate: float) -> dict[str, Any]:
        if rate not in seen:
            seen[rate] = run({**base, "request_rate": rate})
        return seen[rate]

    flood = at(1e6)["serving"]  # far past capacity: served = capacity
    top = flood["requests_per_second"]
    if top <= 0:
        return {"value": None, "reason": _why_not(at(1e6), "request_rate", 1e6, capacity, headroom, slo),
                "evaluations": len(seen)}
    lo = top * 1e-4
    why = binding(at(lo), capacity, headroom, slo)
    if why is not None:
        return {"value": None, "reason": "even almost idle: " + _why_not(at(lo), "request_rate", float(f"{lo:.3g}"), capacity, headroom, slo),
                "evaluations": len(seen)}
    hi = top
    while hi - lo > RATE_PRECISION * hi:
        mid = (lo + hi) / 2
        if fits(at(mid), capacity, headroom, slo):
            lo = mid
        else:
            hi = mid
    value = float(f"{lo:.3g}")
    if value > lo:  # rounding must not step past the boundary
        value = float(f"{lo - 10 ** (math.floor(math.log10(lo)) - 2):.3g}")
    out = run({**base, "request_rate": value, **({"trace": True} if body.get("trace") else {})})
    return {"value": value, "estimate": out, "capacity_requests_per_second": round(top, 4),
            "binding": binding(at(hi), capacity, headroom, slo) or "capacity", "evaluations": len(seen) + 1}


def _final(probe: Probe, value: int, body: dict[str, Any], workload: str, field: str) -> dict[str, Any]:
    if body.get("trace"):
        return probe.run({**probe.body_at(value), "trace": True})
    return probe.seen[value]  # type: ignore[return-value]


def catalog_gpus(cat: Catalog) -> list[str]:
    """The GPU keys a search tries when the request names none: every catalog GPU but ``custom``."""
    return [e.key for e in cat.gpus if not e.data.get("custom")]


def loaded_formats(cat: Catalog, runtime: str | None) -> list[Entry]:
    """Weights formats (aliases aside) the runtime loads, every one without a runtime, best quality
    first (stable: ties keep catalog order)."""
    entries = ([e for e in cat.quantization if e.data["kind"] != "alias"] if runtime is None
               else formatrules.runtime_formats(cat, runtime))
    return sorted(entries, key=lambda e: -e.data["quality_rank"])


def _quant_candidates(body: dict[str, Any], workload: str, cat: Catalog, validated: dict[str, Any] | None = None,
                      ceiling: formatrules.Ceiling | None = None) -> tuple[str, list[str], str]:
    """(request field, formats best first, note on what was tried). ``ceiling``: the model's (model_ceiling), where
    the caller has it already.

    A fine-tuning method whose format rule holds whatever ``fine_tuning_quantization`` says (LoRA,
    QLoRA: catalogs/format_rules) leaves nothing to choose."""
    if workload == "finetuning":
        validated = validated or request_mod.validate(body, workload)
        method = validated["finetuning_method"]
        fixed, rule = formatrules.finetuning_weights(cat.format_rules, validated)
        if rule is not None and "fine_tuning_quantization" not in rule.data["when"]:
            return "fine_tuning_quantization", [], f"{method} fixes the base weights' format ({fixed})"
        ranked = sorted(FINETUNE_PRECISIONS, key=lambda k: -cat.quantization.get(k).data["quality_rank"])
        return "fine_tuning_quantization", ranked, "full fine-tuning precisions"
    runtime = body.get("runtime")
    ceiling = ceiling or model_ceiling(cat, body, validated)
    # best quality kept of this model first (formatrules.Ceiling: fp32 keeps no more of a bf16 checkpoint than bf16),
    # the checkpoint's own format first among equals, then catalog order (sorted() is stable)
    ranked = [e.key for e in sorted(loaded_formats(cat, runtime),
                                    key=lambda e: (-ceiling.weights_rank(e), e.key != ceiling.native))]
    return "quantization", ranked, f"formats {runtime} loads" if runtime else "every format, each with its default runtime"


def model_ceiling(cat: Catalog, body: dict[str, Any], validated: dict[str, Any] | None = None) -> formatrules.Ceiling:
    """The quality an inference format can keep of the request's model (its checkpoint's, formatrules.Ceiling); none
    where the request does not resolve (each candidate's own estimate then says why)."""
    from .resolve import resolve

    try:
        res = resolve(cat, validated or request_mod.validate(body, "inference"), "inference")
    except VramplanError:
        return formatrules.NO_CEILING
    return formatrules.checkpoint_ceiling(cat, res.model_config)


def _best_quantization(question: str, body: dict[str, Any], workload: str, ctx: dict[str, Any]) -> dict[str, Any]:
    cat, capacity, headroom = ctx["catalog"], ctx["capacity"], ctx["headroom"]
    # what a format keeps of this model: the candidates' order and the rank reported
    ceiling = model_ceiling(cat, body, ctx.get("base")) if workload == "inference" else formatrules.NO_CEILING
    field, ranked, note = _quant_candidates(body, workload, cat, ctx.get("base"), ceiling)
    if not ranked:
        return {"value": None, "reason": f"nothing to choose: {note}"}
    run = estimator(workload, cat)
    tried = []
    for key in ranked:
        try:
            out = run({**body, field: key})
        except RequestError:
            continue
        tried.append(key)
        if fits(out, capacity, headroom):
            if body.get("trace"):
                out = run({**body, field: key, "trace": True})
            return {"value": key, "quality_rank": ceiling.weights_rank(cat.quantization.get(key)), "estimate": out,
                    "evaluations": len(tried)}
    return {"value": None, "reason": f"none of the {len(tried)} {note} fits (smallest tried: {tried[-1] if tried else 'none'})",
            "evaluations": len(tried)}


def _gpus(question: str, body: dict[str, Any], workload: str, ctx: dict[str, Any]) -> dict[str, Any]:
    cat, headroom = ctx["catalog"], ctx["headroom"]
    keys = ctx["gpu_keys"]
    if keys is None:
        keys = catalog_gpus(cat)
    speed = "per_user_tps" if workload == "inference" else "training_tps"
    body = {k: v for k, v in body.items() if k not in ("trace", "custom_vram")}
    bodies = [{**body, "gpu_key": key} for key in keys]
    found = []
    # one batch (vramplan.many): the responses single estimates give, a fraction of the time
    for key, b, out in zip(keys, bodies, estimate_many(bodies, workload, cat)):
        if isinstance(out, VramplanError):
            continue
        if fits(out, capacity_gib(b, cat), headroom):
            found.append({"gpu_key": key, "vram_usage": out["vram_usage"], "memory_status": out["memory_status"],
                          speed: out[speed]})
    found.sort(key=lambda r: (-r[speed], r["vram_usage"], r["gpu_key"]))
    if not found:
        return {"value": None, "reason": f"none of the {len(keys)} GPUs considered fits", "considered": len(keys)}
    return {"value": found, "considered": len(keys)}


def _cheapest_deployment(question: str, body: dict[str, Any], workload: str, ctx: dict[str, Any]) -> dict[str, Any]:
    if workload != "inference":
        return {"value": None, "reason": "cheapest_deployment is a serving question (workload inference)"}
    return cheapest_deployment(ctx["catalog"], body, ctx)


#: Questions that search another deployment (GPU, GPU count, weight format): a pool the request pins to its log
#: (runtime_settings.kv_pool_tokens) belongs to the deployment asked about, and gives way to what it measured.
DEPLOYMENT_QUESTIONS = ("min_num_gpus", "best_quantization", "gpus", "cheapest_deployment")


def unpinned_settings(body: dict[str, Any], workload: str, catalog: Catalog) -> dict[str, Any]:
    """``runtime_settings`` for another deployment than the one whose KV pool ``body`` pins to what its log states
    (``kv_pool_tokens``): the pin at 0 (sized from memory), and the memory the pin says the estimate does not count - the
    estimate's own pool less the logged one, on each GPU - kept as non-torch memory (``non_torch_mib``; over the
    pool's share where the runtime pools a share of the free memory or of what is free at start-up), so that another deployment's pool is what its
    memory leaves less the same unexplained part, and this deployment's is the logged one again. Two estimates."""
    settings = body.get("runtime_settings") or {}
    rest = {**settings, "kv_pool_tokens": 0}  # 0: the pool is what the memory leaves (said, so a merge drops the pin)
    plain = {k: v for k, v in body.items() if k not in ("runtime_settings", "trace")}
    try:
        pinned = trace_values(estimate({**plain, "runtime_settings": settings, "trace": True}, workload, catalog))
        free = trace_values(estimate({**plain, "runtime_settings": rest, "trace": True}, workload, catalog))
    except VramplanError:
        return rest
    if pinned.get("rt_kv_preallocate") and free.get("kv_pool_bytes") is not None:
        # the pools that scale non-torch memory by their share: a share of the free memory (TensorRT-LLM, TGI 2.x) or of
        # the memory free at start-up (SGLang); vLLM's budget takes it whole
        share = pinned["kv_memory_share"] if pinned["rt_kv_pool_of_free"] or pinned.get("rt_kv_pool_share_of_start") else 1.0
        unexplained = (free["kv_pool_bytes"] - pinned["kv_pool_bytes"]) / share / 2**20
        rest = {**rest, "non_torch_mib": round(max(pinned["rt_non_torch_mib"] + unexplained, 0.0), 3)}
    return rest


HANDLERS = {"max_seq_length": _numeric, "max_batch_size": _numeric, "max_concurrent_users": _numeric,
            "max_request_rate": _max_request_rate, "min_num_gpus": _numeric, "best_quantization": _best_quantization,
            "gpus": _gpus, "cheapest_deployment": _cheapest_deployment}


def validate_plan(request: Any) -> dict[str, Any]:
    if not isinstance(request, dict):
        raise RequestError([("body", "must be a JSON object")])
    problems = [(field_name(w, m), m) for w, m in schema_problems(request, "plan-request")]
    if problems:
        raise RequestError(problems)
    return request


def _check_keys(request: dict[str, Any], cat: Catalog) -> None:
    """Runtimes and priced GPUs named in the plan fields exist (every unknown one named, with the closest)."""
    problems, suggestions = [], {}
    for i, key in enumerate(request.get("runtimes") or []):
        if key not in cat.runtimes:
            problems.append((f"runtimes[{i}]", f"unknown runtime {key!r}"))
            suggestions[f"runtimes[{i}]"] = cat.runtimes.closest(key)
    for key in request.get("gpu_hour_costs") or {}:
        if key not in cat.gpus:
            problems.append((f"gpu_hour_costs.{key}", f"unknown GPU {key!r}"))
            suggestions[f"gpu_hour_costs.{key}"] = cat.gpus.closest(key)
    if problems:
        raise RequestError(problems, suggestions=suggestions)


def plan(request: dict[str, Any], catalog: Catalog | None = None, *, strict: bool = False) -> dict[str, Any]:
    """Answer each question in ``request["find"]``; see the module docstring.

    ``strict``: refuse request fields the estimate schema does not know (``Prefer: handling=strict``), as the
    estimate endpoints do; by default they are ignored, and each answer's estimate lists them in ``warnings``.
    """
    validate_plan(request)
    cat = catalog or get_catalog()
    workload = request.get("workload", "inference")  # the default the CLI and POST report use too
    body = {k: v for k, v in request.items() if k not in PLAN_FIELDS}
    headroom = float(request.get("headroom", 0.0))
    gpu_keys = request.get("gpu_keys")
    if gpu_keys is not None:
        problems, suggestions = [], {}
        for i, key in enumerate(gpu_keys):
            if key not in cat.gpus:
                problems.append((f"gpu_keys[{i}]", f"unknown GPU {key!r}"))
                suggestions[f"gpu_keys[{i}]"] = cat.gpus.closest(key)
        if problems:
            raise RequestError(problems, suggestions=suggestions)
    _check_keys(request, cat)
    find = list(dict.fromkeys(request["find"]))
    slo = request.get("slo") or None
    if slo and workload != "inference":
        raise RequestError([("slo", "latency objectives apply to inference (serving) only")])
    ctx: dict[str, Any] = {"catalog": cat, "headroom": headroom, "gpu_keys": gpu_keys, "slo": slo,
                           "runtimes": request.get("runtimes"), "min_quality_rank": request.get("min_quality_rank"),
                           "gpu_hour_costs": request.get("gpu_hour_costs"), "max_deployments": request.get("max_deployments")}
    answers: dict[str, Any] = {}
    needs_gpu = [q for q in find if q not in GPU_SEARCHES]
    if needs_gpu:
        # Validates the whole request once (every bad field named) and gives the defaults searches start from.
        estimate({k: v for k, v in body.items() if k != "trace"}, workload, cat, strict=strict)
        ctx["base"] = request_mod.validate(body, workload)
        ctx["capacity"] = capacity_gib(body, cat)
    elif "llm_key" in body:
        plain = [k for k in gpu_keys or [] if not cat.gpus.get(k).data.get("custom")]
        probe_gpu = (plain or [None])[0] or body.get("gpu_key") or catalog_gpus(cat)[0]
        estimate({**{k: v for k, v in body.items() if k != "trace"}, "gpu_key": probe_gpu}, workload, cat, strict=strict)
    moved = None  # the body for questions about another deployment, where the request pins its pool
    for q in find:
        if q in DEPLOYMENT_QUESTIONS and "kv_pool_tokens" in (body.get("runtime_settings") or {}):
            if moved is None:
                moved = {**body, "runtime_settings": unpinned_settings(body, workload, cat)}
            answers[q] = HANDLERS[q](q, moved, workload, ctx)
        else:
            answers[q] = HANDLERS[q](q, body, workload, ctx)
    return answers
