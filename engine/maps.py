"""Maps of many estimates: the fit map (GPUs x weight formats) and memory against context length.

A layer above the pipeline, like the planner: each point is one estimate of the pipeline (the fit map
evaluates its cells together with :func:`vramplan.many.estimate_many`, which gives what one
:func:`vramplan.answer.estimate` each gives), so every cell and every point is what an estimate of that
request says. The page draws both; the HTML report draws the curve.

- :func:`fit_map` — for one model and workload, every catalog GPU (or ``gpu_keys``) against the weight
  formats (inference: every format with its default runtime, or those the request's ``runtime``
  loads; fine-tuning: full, LoRA, QLoRA), each cell with ``vram_usage``, ``memory_status``, whether
  it fits (the planner's definition) and the speed (``per_user_tps`` or ``training_tps``).
- :func:`context_curve` — ``vram_usage`` at about 12 context lengths from 512 tokens to the model's
  context, and the longest context that fits (the planner's ``max_seq_length`` search).
"""

from __future__ import annotations

import math
from typing import Any

from .answer import estimate as run
from .answer import outcome
from .catalog import Catalog, get_catalog
from .contract import WORKLOADS
from .datafiles import field_name, schema_problems
from .errors import RequestError, VramplanError
from .many import estimate_many
from .pipeline import Outcome
from .planner import catalog_gpus, estimator, loaded_formats
from .search import Probe, capacity_gib, search_max
from .verdict import fits

CURVE_POINTS = 12
CURVE_START = 512
#: Fine-tuning columns of the fit map: the methods, cheapest in memory last.
FINETUNING_COLUMNS = ({"key": "full", "label": "Full", "field": "finetuning_method"},
                      {"key": "lora", "label": "LoRA", "field": "finetuning_method"},
                      {"key": "qlora", "label": "QLoRA", "field": "finetuning_method"})
MAP_FIELDS = ("workload", "gpu_keys", "quantizations")


def _workload(request: dict[str, Any]) -> str:
    workload = request.get("workload", "inference")
    if workload not in WORKLOADS:
        raise RequestError([("workload", f"{workload!r} is not one of inference, finetuning")])
    return workload


def _check_list(request: dict[str, Any], field: str, registry) -> list[str] | None:
    keys = request.get(field)
    if keys is None:
        return None
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise RequestError([(field, "must be a non-empty list of keys")])
    problems, suggestions = [], {}
    for i, key in enumerate(keys):
        if key not in registry:
            problems.append((f"{field}[{i}]", f"unknown key {key!r}"))
            suggestions[f"{field}[{i}]"] = registry.closest(key)
    if problems:
        raise RequestError(problems, suggestions=suggestions)
    return list(dict.fromkeys(keys))


def fit_map(request: dict[str, Any], catalog: Catalog | None = None) -> dict[str, Any]:
    """GPUs x formats (or methods), each cell one estimate; see the module docstring."""
    if not isinstance(request, dict):
        raise RequestError([("body", "must be a JSON object")])
    problems = [(field_name(w, m), m) for w, m in schema_problems(request, "fit-map-request")]
    if problems:
        raise RequestError(problems)
    cat = catalog or get_catalog()
    workload = _workload(request)
    gpu_keys = _check_list(request, "gpu_keys", cat.gpus)
    formats = _check_list(request, "quantizations", cat.quantization)
    body = {k: v for k, v in request.items() if k not in MAP_FIELDS + ("trace", "custom_vram")}
    if gpu_keys is None:
        gpu_keys = catalog_gpus(cat)
    probe_gpu = body.get("gpu_key") or gpu_keys[0]
    run({**body, "gpu_key": probe_gpu}, workload, cat)  # every bad field of the request named once, up front
    if workload == "inference":
        columns = _format_columns(body, formats, cat)
        speed = "per_user_tps"
    else:
        columns = [dict(c) for c in FINETUNING_COLUMNS]
        speed = "training_tps"
    # batch evaluation (vramplan.many): the same responses as one run() each, faster
    bodies = [{**body, "gpu_key": key, col["field"]: col["key"]} for key in gpu_keys for col in columns]
    results = iter(zip(bodies, estimate_many(bodies, workload, cat)))
    rows = []
    for key in gpu_keys:
        gpu = cat.gpus.get(key).data
        cells = []
        for _col in columns:
            b, out = next(results)
            if isinstance(out, VramplanError):
                cells.append({"fits": False, "memory_status": "error", "error": str(out)})
                continue
            cells.append({"vram_usage": out["vram_usage"], "actual_vram_percentage": out["actual_vram_percentage"],
                          "memory_status": out["memory_status"], "fits": fits(out, capacity_gib(b, cat)),
                          speed: out[speed], "runtime": out["runtime"]})
        rows.append({"gpu_key": key, "label": gpu["label"], "memory_gib": gpu["memory_gib"],
                     "vendor": gpu.get("vendor"), "category": gpu.get("category"), "cells": cells})
    return {"workload": workload, "speed_field": speed, "columns": columns, "rows": rows}


def _format_columns(body: dict[str, Any], formats: list[str] | None, cat: Catalog) -> list[dict[str, Any]]:
    """Weight formats, best quality first: those asked for, else those the runtime loads (all without one)."""
    runtime = body.get("runtime")
    if formats:
        entries = sorted((cat.quantization.get(k) for k in formats), key=lambda e: -e.data["quality_rank"])
    else:
        entries = loaded_formats(cat, runtime)
    return [{"key": e.key, "label": str(e.data.get("label", e.key)).split(" (")[0], "field": "quantization",
             "quality_rank": e.data["quality_rank"]} for e in entries]


# -- memory against context length ------------------------------------------------------------

def context_lengths(max_len: int, request_len: int, n: int = CURVE_POINTS, start: int = CURVE_START) -> list[int]:
    """About ``n`` context lengths spaced evenly on a log scale from ``start`` to ``max_len``, plus the request's own."""
    max_len = max(max_len, start * 2)
    ratio = (max_len / start) ** (1 / (n - 1))
    xs = {start, max_len, request_len}
    for i in range(1, n - 1):
        x = start * ratio ** i
        step = 2 ** max(0, int(math.log2(x)) - 4)  # 4 significant bits: 640, 768, 1536, 12288, ...
        xs.add(int(round(x / step) * step))
    return sorted(x for x in xs if x >= 1)


def context_curve(request: dict[str, Any], catalog: Catalog | None = None) -> dict[str, Any]:
    """``vram_usage`` against ``seq_length`` for one request (plus ``workload``, default inference)."""
    if not isinstance(request, dict):
        raise RequestError([("body", "must be a JSON object")])
    problems = [(field_name(w, m), m) for w, m in schema_problems(request, "context-curve-request")]
    if problems:
        raise RequestError(problems)
    cat = catalog or get_catalog()
    workload = _workload(request)
    body = {k: v for k, v in request.items() if k not in ("workload", "trace")}
    done = outcome(body, workload, cat)  # every bad field named once
    return {"workload": workload, **curve(done, cat)}


def _why_longer(n: int, why: str | None, capacity: float) -> str:
    """What stops a context of ``n`` tokens, for the curve's note: the memory, or - where the runtime sizes its pool at
    start-up and the memory stays put - the sequences in flight its admission no longer takes at once."""
    tokens = f"{n:,} token{'' if n == 1 else 's'}"
    if why == "memory" or why is None:
        return f"{tokens} need more than {capacity:g} GiB"
    if why == "configuration":
        return f"{tokens} cannot run (memory_status error; see the warnings)"
    if why == "capacity":
        return f"at {tokens} requests arrive faster than the deployment serves them"
    if why == "request":
        return f"{tokens} are not a valid request"
    return f"at {tokens} the runtime admits fewer sequences than the load sends ({why}) and the rest queue"


def curve(done: Outcome, catalog: Catalog) -> dict[str, Any]:
    """The curve around one estimate of a request (a report's, or the context-curve endpoint's)."""
    res, workload, capacity = done.resolved, done.workload, float(done.resolved.gpu_memory_gib)
    model_max = res.arch.max_position_embeddings or max(res.request["seq_length"], 32768)
    base = {k: v for k, v in done.body.items() if k != "trace"}
    probe = Probe(estimator(workload, catalog), base, "seq_length", capacity, 0.0)
    points = []
    for x in context_lengths(int(model_max), int(res.request["seq_length"])):
        out = probe.estimate(x)
        if isinstance(out, dict):
            points.append({"seq_length": x, "vram_usage": out["vram_usage"], "memory_status": out["memory_status"]})
    top = max(int(model_max), int(res.request["seq_length"]))
    crossing = search_max(probe, int(res.request["seq_length"]), 1, top)
    at_one = probe.estimate(1)
    if crossing is None and isinstance(at_one, dict) and at_one["memory_status"] == "error":
        note = "the configuration cannot run at any context length (memory_status error; see the warnings)"
    elif crossing is None and (why := probe.binding(1)) not in ("memory", "request", None):
        note = f"does not fit at any context length: even {_why_longer(1, why, capacity)}"
    elif crossing is None:
        note = f"does not fit at any context length (not even 1 token) on {capacity:g} GiB"
    elif crossing >= top:
        crossing, note = None, f"fits at every context length up to {top:,} tokens"
    else:
        note = f"fits up to {crossing:,} tokens; {_why_longer(crossing + 1, probe.binding(crossing + 1), capacity)}"
    return {"points": points, "capacity": capacity, "crossing": crossing, "note": note, "model_max": int(model_max),
            "request": {"seq_length": int(res.request["seq_length"])}}
