"""Validate a request body against its JSON Schema and apply the documented defaults.

Every problem is collected and reported at once, each naming its field
(``batch_size: 0 is less than the minimum of 1; custom_vram: required when gpu_key is custom_discrete``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from .datafiles import is_valid, schema_problems
from .errors import RequestError

SCHEMAS = {"inference": "inference-request", "finetuning": "finetuning-request"}

#: Optimization flags the fine-tuning response lists under ``active_optimizations`` when set.
OPTIMIZATION_FLAGS = ("flash_attention", "gradient_checkpointing", "use_8bit_optimizer", "use_paged_optimizer",
                      "use_fused_kernels", "activation_offloading", "sequence_packing")


def _field(path: str) -> str:
    return path[2:] if path.startswith("$.") else ("body" if path == "$" else path)


@lru_cache(maxsize=None)
def _defaults(schema_name: str) -> dict[str, Any]:
    from .datafiles import load_schema

    props = load_schema(schema_name)["properties"]
    return {k: v["default"] for k, v in props.items() if "default" in v}


def validate(body: Any, workload: str, *, schema_checked: bool = False) -> dict[str, Any]:
    """Return the request with defaults applied, or raise :class:`RequestError` naming every bad field.

    ``schema_checked``: the caller has already checked every field against the schema (a sweep
    checks each value of an axis once, then passes the axis in as an array of values)."""
    if workload not in SCHEMAS:
        raise ValueError(f"unknown workload {workload!r}")
    if not isinstance(body, dict):
        raise RequestError([("body", "must be a JSON object")])
    schema_name = SCHEMAS[workload]
    problems = [] if schema_checked or is_valid(body, schema_name) else \
        [(_field(where), msg) for where, msg in schema_problems(body, schema_name)]
    req = {**_defaults(schema_name), **body}
    opt_defaults = _opt_defaults(schema_name)
    req["optimization_config"] = {**opt_defaults, **(body.get("optimization_config") or {})} \
        if isinstance(body.get("optimization_config", {}), dict) else dict(opt_defaults)
    if problems:
        raise RequestError(problems)

    # Contradictions the schema cannot express.
    if req["llm_key"] == "custom" and "custom_model" not in req:
        problems.append(("custom_model", "required when llm_key is custom (a config.json object)"))
    if "custom_model" in req and req["llm_key"] != "custom":
        problems.append(("custom_model", "only used with llm_key custom"))
    if workload == "inference":
        if req.get("num_offload_layers") is not None and req.get("percentage_offload") is not None:
            problems.append(("percentage_offload", "give num_offload_layers or percentage_offload, not both"))
        if req["shared_prefix_ratio"] > 0 and not req["enable_prefix_caching"]:
            pass  # the ratio only matters with caching on; allowed, noted in assumptions later
    else:
        req.setdefault("tokens_per_sample", req["seq_length"])
        opt = req["optimization_config"]
        if opt.get("use_8bit_optimizer") and req["optimizer"] == "adamw":
            req["optimizer"] = "paged_adamw_8bit" if opt.get("use_paged_optimizer") else "adamw_8bit"
        elif opt.get("use_paged_optimizer") and req["optimizer"] == "adamw":
            req["optimizer"] = "paged_adamw"
        if req["optimizer"] in ("adamw_8bit", "paged_adamw_8bit"):
            opt["use_8bit_optimizer"] = True
        if req["optimizer"].startswith("paged"):
            opt["use_paged_optimizer"] = True
        if opt.get("zero_stage", 0) > 0 and req["num_gpus"] == 1:
            pass  # ZeRO on one GPU shards nothing; a warning is added later
        mb = req.get("micro_batch_size")
        if mb is not None and mb > req["batch_size"]:
            problems.append(("micro_batch_size", f"{mb} is larger than batch_size {req['batch_size']}"))
    if problems:
        raise RequestError(problems)
    return req


def optimization_defaults(workload: str) -> dict[str, Any]:
    """The documented defaults of ``optimization_config`` for a workload."""
    return dict(_opt_defaults(SCHEMAS[workload]))


@lru_cache(maxsize=None)
def _opt_defaults(schema_name: str) -> dict[str, Any]:
    from .datafiles import load_schema

    props = load_schema(schema_name)["properties"]["optimization_config"].get("properties", {})
    return {k: v["default"] for k, v in props.items() if "default" in v}
