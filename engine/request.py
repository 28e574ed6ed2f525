"""Validate a request body against its JSON Schema and apply the documented defaults.

Every problem is collected and reported at once, each naming its field
(``batch_size: 0 is less than the minimum of 1; custom_vram: required when gpu_key is custom_discrete``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from .datafiles import field_name, is_valid, load_schema, schema_problems
from .elementwise import at_least, at_most, holds
from .errors import RequestError

SCHEMAS = {"inference": "inference-request", "finetuning": "finetuning-request"}

#: Optimization flags the fine-tuning response lists under ``active_optimizations`` when set.
OPTIMIZATION_FLAGS = ("flash_attention", "gradient_checkpointing", "use_8bit_optimizer", "use_paged_optimizer",
                      "use_fused_kernels", "activation_offloading", "sequence_packing")


@lru_cache(maxsize=None)
def _defaults(schema_name: str) -> dict[str, Any]:
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
        [(field_name(where, msg), msg) for where, msg in schema_problems(body, schema_name)]
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
        if req.get("request_rate") is not None and req["concurrent_users"] != 1:
            problems.append(("concurrent_users", "request_rate (an open loop) defines the load; leave concurrent_users "
                             f"at 1 (got {req['concurrent_users']})"))
        problems.extend(split_context(req, "seq_length" in body))
        req["continuous_batching_given"] = body.get("enable_continuous_batching")
    else:
        req.setdefault("tokens_per_sample", req["seq_length"])
        mb = req.get("micro_batch_size")
        if mb is not None and mb > req["batch_size"]:
            problems.append(("micro_batch_size", f"{mb} is larger than batch_size {req['batch_size']}"))
    if problems:
        raise RequestError(problems)
    return req


#: Without input_tokens / output_tokens, the context is split as a prompt and an answer of this share
#: (chat and retrieval workloads answer in a fraction of their context), at most ANSWER_CAP tokens.
ANSWER_SHARE = 8
ANSWER_CAP = 1024
#: The schema's ceiling for seq_length.
MAX_CONTEXT = 16777216


def split_context(req: dict[str, Any], seq_given: bool) -> list[tuple[str, str]]:
    """Fill ``input_tokens``, ``output_tokens`` and ``seq_length`` from whichever were given.

    Both halves given: ``seq_length`` is their sum (a different ``seq_length`` is an error naming all
    three). One half and ``seq_length``: the other half is the rest. One half alone: the other keeps
    the 7:1 proportion of prompt to answer. ``seq_length`` alone (or nothing): 1/8 of it is the answer,
    at most 1024 tokens. ``req["context_split"]`` records which rule applied, for the assumptions.
    """
    i, o, seq = req.get("input_tokens"), req.get("output_tokens"), req["seq_length"]
    if i is not None and o is not None:
        if seq_given and holds(seq != i + o):
            return [("seq_length", f"{seq} disagrees with input_tokens {i} + output_tokens {o} = {i + o}; "
                                   "give seq_length = their sum, or leave it out")]
        req["seq_length"], req["context_split"] = i + o, "given"
    elif i is not None or o is not None:
        given, other = ("input_tokens", "output_tokens") if i is not None else ("output_tokens", "input_tokens")
        value = i if i is not None else o
        if seq_given:
            if holds(seq - value < 1):
                return [(given, f"{value} leaves no room for {other} in seq_length {seq}")]
            rest = seq - value
            req["context_split"] = f"{other} = seq_length - {given}"
        else:
            rest = (ANSWER_SHARE - 1) * value if i is None else max(1, value // (ANSWER_SHARE - 1))
            req["context_split"] = f"{other} from the 7:1 proportion of prompt to answer"
        req[other] = rest
        req["seq_length"] = req["input_tokens"] + req["output_tokens"]
    else:
        o = at_most(at_least(seq // ANSWER_SHARE, 1), ANSWER_CAP)
        req["input_tokens"], req["output_tokens"] = at_least(seq - o, 1), o
        req["context_split"] = "seq_length split as 7/8 prompt, 1/8 answer (at most 1024 tokens)"
        return []
    if holds(req["seq_length"] > MAX_CONTEXT):
        return [("seq_length", f"input_tokens + output_tokens = {req['seq_length']} is more than {MAX_CONTEXT}")]
    return []


def optimization_defaults(workload: str) -> dict[str, Any]:
    """The documented defaults of ``optimization_config`` for a workload."""
    return dict(_opt_defaults(SCHEMAS[workload]))


@lru_cache(maxsize=None)
def _opt_defaults(schema_name: str) -> dict[str, Any]:
    props = load_schema(schema_name)["properties"]["optimization_config"].get("properties", {})
    return {k: v["default"] for k, v in props.items() if "default" in v}
