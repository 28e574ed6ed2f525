"""The GET /gpus and GET /llms listings, built once per loaded catalog."""

from __future__ import annotations

from typing import Any

from .catalog import get_catalog

_GPU_FIELDS = ("vendor", "category", "architecture", "memory_type", "memory_bandwidth_gb_s", "fp32_tflops", "fp16_tflops",
               "bf16_tflops", "fp8_tflops", "int8_tops", "fp4_tflops", "tdp_w", "flash_attention",
               "default_interconnect", "unified_memory_gib", "compute_capability", "source")


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


def models() -> list[dict[str, Any]]:
    cat = get_catalog()
    out = []
    for e in cat.models:
        d = e.data
        a = cat.architectures[e.key]
        out.append({
            "key": e.key, "name": d["name"], "params_b": d["params_b"],
            "active_params_b": d.get("active_params_b", d["params_b"]), "family": d["family"],
            "context_length": d["context_length"], "instruct": d.get("instruct", False),
            "moe": a.is_moe, "num_layers": a.num_layers, "hidden_size": a.hidden_size,
            "num_attention_heads": a.num_heads, "num_key_value_heads": a.num_kv_heads,
            "source": d["source"], "provided_by": e.provenance.plugin,
        })
    return out


#: Runtime constants a listing summarises (the serving knobs people set on the command line).
SERVING_KNOBS = ("max_num_seqs", "max_prefill_tokens", "gpu_memory_utilization", "kv_block_tokens")


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
            "assumptions": list(d.get("assumptions", [])),
            "constants": {name: {k: c[k] for k in ("value", "unit", "source", "tiers") if k in c} for name, c in consts.items()},
            "provided_by": e.provenance.plugin,
        })
    return out
