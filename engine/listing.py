"""The GET /gpus and GET /llms listings, and the filters GET /llms and ``vramplan models list`` share."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from . import runtimetext
from .catalog import get_catalog
from .errors import RequestError

_GPU_FIELDS = ("vendor", "category", "architecture", "memory_type", "memory_bandwidth_gb_s", "fp32_tflops", "fp16_tflops",
               "bf16_tflops", "fp8_tflops", "int8_tops", "fp4_tflops", "tdp_w", "flash_attention",
               "default_interconnect", "unified_memory_gib", "compute_capability", "source", "reference_price")

#: What a model can be filtered by. The first five are read off its config.json (architecture) and
#: catalog flags; the rest a catalog entry declares in ``capabilities`` from its model card.
CAPABILITIES = {
    "instruct": "chat / instruction tuned (catalog flag)",
    "moe": "mixture of experts",
    "vision": "takes images (a vision encoder in the config)",
    "sliding_window": "some layers attend within a window",
    "mla": "multi-head latent attention (DeepSeek-style compressed KV cache)",
    "reasoning": "trained to think before answering (model card)",
    "code": "trained for programming (model card)",
    "tools": "tool / function calling (model card)",
}

#: Query parameters of GET /llms (and keyword arguments of vramplan.list_models).
MODEL_FILTERS = ("family", "min_params", "max_params", "capability", "search")


def gpus() -> list[dict[str, Any]]:
    cat = get_catalog()
    out = []
    for e in cat.gpus:
        d = e.data
        item = {"key": e.key, "label": d["label"], "memory": d["memory_gib"]}
        item.update({k: d.get(k) for k in _GPU_FIELDS if k in d or k in ("fp8_tflops", "int8_tops", "fp4_tflops")})
        if d.get("custom"):
            item["custom"] = True
        item["provided_by"] = e.provenance.plugin
        out.append(item)
    return out


def models(**filters: Any) -> list[dict[str, Any]]:
    """Every catalog model, or those matching ``filters`` (see :func:`filter_models`)."""
    cat = get_catalog()
    out = []
    for e in cat.models:
        d = e.data
        a = cat.architectures[e.key]
        caps = {"instruct": bool(d.get("instruct")), "moe": a.is_moe, "vision": a.vision_params > 0,
                "sliding_window": a.num_sliding_layers > 0, "mla": a.is_mla}
        out.append({
            "key": e.key, "name": d["name"], "params_b": d["params_b"],
            "active_params_b": d.get("active_params_b", d["params_b"]), "family": d["family"],
            "context_length": d["context_length"], "instruct": d.get("instruct", False),
            "moe": a.is_moe, "num_layers": a.num_layers, "hidden_size": a.hidden_size,
            "num_attention_heads": a.num_heads, "num_key_value_heads": a.num_kv_heads,
            "capabilities": sorted({c for c, on in caps.items() if on} | set(d.get("capabilities", ()))),
            "source": d["source"], "provided_by": e.provenance.plugin,
        })
    return filter_models(out, **filters) if filters else out


def filter_models(items: Iterable[dict[str, Any]], *, family: str | None = None, min_params: float | None = None,
                  max_params: float | None = None, capability: str | Iterable[str] | None = None,
                  search: str | None = None) -> list[dict[str, Any]]:
    """Models that pass every given filter; a :class:`RequestError` names a bad one.

    ``family``: the family or a prefix of it, any case (``qwen`` matches qwen2.5 and qwen3).
    ``min_params`` / ``max_params``: total parameters, billions, inclusive. ``capability``: one or
    several of :data:`CAPABILITIES`, all required. ``search``: words that must all appear in the key,
    name, family or Hub repository, any case.
    """
    problems: list[tuple[str, str]] = []
    lo = _number(min_params, "min_params", problems)
    hi = _number(max_params, "max_params", problems)
    if lo is not None and hi is not None and lo > hi:
        problems.append(("min_params", f"{lo:g} is above max_params {hi:g}"))
    wanted = [capability] if isinstance(capability, str) else list(capability or ())
    for c in wanted:
        if c not in CAPABILITIES:
            problems.append(("capability", f"unknown capability {c!r} (known: {', '.join(CAPABILITIES)})"))
    for name, value in (("family", family), ("search", search)):
        if value is not None and not isinstance(value, str):
            problems.append((name, f"must be a string, got {value!r}"))
    if problems:
        raise RequestError(problems)
    words = (search or "").lower().split()
    fam = (family or "").lower()
    out = []
    for m in items:
        if fam and not str(m.get("family", "")).lower().startswith(fam):
            continue
        size = m.get("params_b")
        if lo is not None and (size is None or size < lo):
            continue
        if hi is not None and (size is None or size > hi):
            continue
        if any(c not in m.get("capabilities", ()) for c in wanted):
            continue
        text = " ".join(str(m.get(k, "")) for k in ("key", "name", "family", "source")).lower()
        if any(w not in text for w in words):
            continue
        out.append(m)
    return out


def _number(value, name: str, problems: list[tuple[str, str]]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        problems.append((name, f"must be a number >= 0 (billions of parameters), got {value!r}"))
        return None
    return float(value)


def model_filters_from_query(query: Mapping[str, list[str]]) -> dict[str, Any]:
    """GET /llms query parameters → :func:`filter_models` keywords; unknown or malformed ones are a
    :class:`RequestError` naming them. ``capability`` may repeat (or list several, comma-separated)."""
    problems: list[tuple[str, str]] = []
    out: dict[str, Any] = {}
    for name, values in query.items():
        if name not in MODEL_FILTERS:
            problems.append((name, f"unknown query parameter (GET llms takes: {', '.join(MODEL_FILTERS)})"))
            continue
        if name == "capability":
            out[name] = [c.strip() for v in values for c in v.split(",") if c.strip()]
            continue
        if len(values) > 1:
            problems.append((name, "given more than once"))
            continue
        value = values[0]
        if name in ("min_params", "max_params"):
            try:
                out[name] = float(value)
            except ValueError:
                problems.append((name, f"must be a number (billions of parameters), got {value!r}"))
        else:
            out[name] = value
    try:  # the values themselves, checked as filter_models checks them, so every problem is named at once
        filter_models((), **out)
    except RequestError as exc:
        problems += exc.problems
    if problems:
        raise RequestError(problems)
    return out


def runtimes() -> list[dict[str, Any]]:
    """GET /runtimes: every runtime profile with its constants, each with its unit and source."""
    cat = get_catalog()
    out = []
    for e in cat.runtimes:
        d = e.data
        consts = d["constants"]
        out.append({
            "key": e.key, "label": d["label"], "description": d["description"],
            "version": d.get("version"), "extends": d.get("extends"), "default": bool(d.get("default")),
            "continuous_batching": bool(consts["continuous_batching_always"]["value"]),
            "assumptions": [runtimetext.fill(line, lambda name: (consts.get(name) or {}).get("value"))
                            for line in d.get("assumptions", [])],
            "constants": {name: {k: c[k] for k in ("value", "unit", "source", "tiers", "accepts", "follows") if k in c} for name, c in consts.items()},
            "deployment": d.get("deployment"),
            "provided_by": e.provenance.plugin,
        })
    return out
