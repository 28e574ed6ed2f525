"""Validate a request body against its JSON Schema and apply the documented defaults.

Every problem is collected and reported at once, each naming its field
(``batch_size: 0 is less than the minimum of 1; custom_vram: required when gpu_key is custom_discrete``).

Before the schema sees the body, three things are settled here, generically for every property the
schema declares (so fields added to a schema later get the same treatment):

- ``null`` means "absent" (a client that serializes an unset optional as ``null`` gets the default);
- a field the schema does not know is, by default, ignored with a warning that names it and the
  closest known field (apxml clients may send flags this server does not model); ``strict=True``
  (HTTP: ``Prefer: handling=strict``) rejects it instead;
- a number that is not finite (``NaN``, ``Infinity``, which Python callers can pass) is refused,
  wherever it sits, ``custom_model`` included.

Inputs that change nothing (``zero_stage`` on one GPU, ``shared_prefix_ratio`` without prefix
caching, …) are said so in the warnings :func:`check` returns.
"""

from __future__ import annotations

import difflib
import math
from functools import lru_cache
from typing import Any

from .configkeys import show
from .datafiles import is_valid, load_schema, validator
from .elementwise import at_least, at_most, holds
from .errors import RequestError

SCHEMAS = {"inference": "inference-request", "finetuning": "finetuning-request"}

#: Optimization flags the fine-tuning response lists under ``active_optimizations`` when set.
OPTIMIZATION_FLAGS = ("flash_attention", "gradient_checkpointing", "use_8bit_optimizer", "use_paged_optimizer",
                      "use_fused_kernels", "activation_offloading", "sequence_packing")

#: How deep :func:`_non_finite` looks into nested objects (a 64 KiB body nests at most this much usefully).
MAX_NESTING = 64


def _field(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@lru_cache(maxsize=None)
def _defaults(schema_name: str) -> dict[str, Any]:
    props = load_schema(schema_name)["properties"]
    return {k: v["default"] for k, v in props.items() if "default" in v}


def validate(body: Any, workload: str, *, schema_checked: bool = False, strict: bool = False) -> dict[str, Any]:
    """Return the request with defaults applied, or raise :class:`RequestError` naming every bad field.

    ``schema_checked``: the caller has already checked every field against the schema (a sweep
    checks each value of an axis once, then passes the axis in as an array of values)."""
    return check(body, workload, schema_checked=schema_checked, strict=strict)[0]


def check(body: Any, workload: str, *, schema_checked: bool = False,
          strict: bool = False) -> tuple[dict[str, Any], list[str]]:
    """``(request with defaults, warnings)``; the warnings say which inputs were ignored and why."""
    if workload not in SCHEMAS:
        raise ValueError(f"unknown workload {workload!r}")
    if not isinstance(body, dict):
        raise RequestError([("body", "must be a JSON object")])
    schema_name = SCHEMAS[workload]
    schema = load_schema(schema_name)
    problems: list[tuple[str, str]] = []
    suggestions: dict[str, list[str]] = {}
    notes: list[str] = []
    _non_finite(body, (), problems, 0)
    body = _without_nulls(body, schema)
    body = _known_fields(body, schema, (), strict, problems, suggestions, notes)
    if not schema_checked and not is_valid(body, schema_name):
        named = {where for where, _ in problems}
        problems += [p for p in _schema_problems(body, schema_name) if p[0] not in named]
    if problems:
        raise RequestError(problems, suggestions=suggestions)
    req = {**_defaults(schema_name), **body}
    req["optimization_config"] = {**_opt_defaults(schema_name), **(body.get("optimization_config") or {})}

    # Contradictions the schema cannot express, and inputs that change nothing (said in warnings).
    if req["llm_key"] == "custom" and "custom_model" not in req:
        problems.append(("custom_model", "required when llm_key is custom (a config.json object)"))
    if "custom_model" in req and req["llm_key"] != "custom":
        problems.append(("custom_model", "only used with llm_key custom"))
    if "offload_target" in body and not holds(req["enable_offloading"]):
        notes.append(f"offload_target {body['offload_target']} is ignored because enable_offloading is false")
    if body.get("interconnect_type") is not None and holds(req["num_gpus"] == 1):
        notes.append(f"interconnect_type {body['interconnect_type']} is ignored on one GPU: nothing crosses a link between "
                     "GPUs (the host link the catalog names for the GPU carries offloading)")
    if workload == "inference":
        if req.get("num_offload_layers") is not None and req.get("percentage_offload") is not None:
            problems.append(("percentage_offload", "give num_offload_layers or percentage_offload, not both"))
        if req.get("request_rate") is not None and holds(req["concurrent_users"] != 1):
            problems.append(("concurrent_users", "request_rate (an open loop) defines the load; leave concurrent_users "
                             f"at 1 (got {req['concurrent_users']})"))
        problems.extend(split_context(req, "seq_length" in body))
        req["continuous_batching_given"] = body.get("enable_continuous_batching")
        req["kv_cache_quantization_given"] = "kv_cache_quantization" in body
        req["inference_parallelism_given"] = "inference_parallelism" in body
        if holds(req["enable_prefix_caching"]) and holds(req["shared_prefix_ratio"] == 0):
            notes.append("enable_prefix_caching changes nothing with shared_prefix_ratio 0: no prompt shares a prefix "
                         "to reuse (give the share of each prompt that all requests have in common)")
        if holds(req["shared_prefix_ratio"] > 0) and not holds(req["enable_prefix_caching"]):
            notes.append(f"shared_prefix_ratio {req['shared_prefix_ratio']:g} is ignored because enable_prefix_caching "
                         "is false (without prefix caching every sequence stores its own copy of the prefix)")
    else:
        _finetuning(req, body, notes, problems)
    if problems:
        raise RequestError(problems)
    return req, notes


def _finetuning(req: dict[str, Any], body: dict[str, Any], notes: list[str], problems: list) -> None:
    req.setdefault("tokens_per_sample", req["seq_length"])
    opt = req["optimization_config"]
    method = req["finetuning_method"]
    if opt.get("zero_stage", 0) > 0 and holds(req["num_gpus"] == 1):
        notes.append(f"zero_stage {opt['zero_stage']} is ignored on one GPU: ZeRO shards training state across "
                     "data-parallel GPUs, so with num_gpus 1 it saves nothing (ZeRO-Offload to the host is "
                     "enable_offloading)")
    if "fine_tuning_quantization" in body and method != "full":
        base = "bf16" if method == "lora" else "nf4"
        notes.append(f"fine_tuning_quantization {body['fine_tuning_quantization']} is ignored for {method}: "
                     f"{method} trains adapters on a frozen {base} base")
    if "lora_rank" in body and method == "full":
        notes.append(f"lora_rank {body['lora_rank']} is ignored for full fine-tuning (no adapters)")
    if "lora_target_modules" in body and method == "full":
        notes.append("lora_target_modules is ignored for full fine-tuning (no adapters)")
    if holds(req["tokens_per_sample"] > req["seq_length"]):
        notes.append(f"tokens_per_sample {req['tokens_per_sample']} is larger than seq_length {req['seq_length']}: "
                     "trainers cut each sample to seq_length, so memory is sized for seq_length while training time "
                     "counts the tokens_per_sample given; raise seq_length if the samples are really that long")
    mb = req.get("micro_batch_size")
    if mb is not None and holds(mb > req["batch_size"]):
        problems.append(("micro_batch_size", f"{mb} is larger than batch_size {req['batch_size']}"))


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
    at most 1024 tokens. ``req["context_split"]`` records which rule applied, for the assumptions;
    ``req["prompt_stated"]`` whether the prompt's length is the request's (given, or the rest of ``seq_length`` after a
    given answer) rather than a guess - where it is, a runtime that prefills just the prompt is sized by it.
    """
    i, o, seq = req.get("input_tokens"), req.get("output_tokens"), req["seq_length"]
    if i is not None and o is not None:
        if seq_given and holds(seq != i + o):
            return [("seq_length", f"{seq} disagrees with input_tokens {i} + output_tokens {o} = {i + o}; "
                                   "give seq_length = their sum, or leave it out")]
        req["seq_length"], req["context_split"], req["prompt_stated"] = i + o, "given", True
    elif i is not None or o is not None:
        given, other = ("input_tokens", "output_tokens") if i is not None else ("output_tokens", "input_tokens")
        value = i if i is not None else o
        if seq_given:
            if holds(seq - value < 1):
                return [(given, f"{value} leaves no room for {other} in seq_length {seq}")]
            rest = seq - value
            req["context_split"] = f"{other} = seq_length - {given}"
            req["prompt_stated"] = True
        else:
            rest = (ANSWER_SHARE - 1) * value if i is None else max(1, value // (ANSWER_SHARE - 1))
            req["context_split"] = f"{other} from the 7:1 proportion of prompt to answer"
            req["prompt_stated"] = i is not None  # an answer alone leaves the prompt a guess
        req[other] = rest
        req["seq_length"] = req["input_tokens"] + req["output_tokens"]
    else:
        o = at_most(at_least(seq // ANSWER_SHARE, 1), ANSWER_CAP)
        req["input_tokens"], req["output_tokens"] = at_least(seq - o, 1), o
        req["context_split"] = "seq_length split as 7/8 prompt, 1/8 answer (at most 1024 tokens)"
        req["prompt_stated"] = False
        return []
    if holds(req["seq_length"] > MAX_CONTEXT):
        return [("seq_length", f"input_tokens + output_tokens = {req['seq_length']} is more than {MAX_CONTEXT}")]
    return []


def context_change(body: dict[str, Any], seq_length: int) -> dict[str, Any]:
    """The fields that put a request at another context length (the planner's ``max_seq_length``, the report's
    memory-against-context curve, a shorter-context suggestion).

    A request that sets an answer length - ``output_tokens``, or ``input_tokens`` alone, whose answer is the 7:1
    proportion's - keeps that answer and grows or shrinks its prompt, and says all three fields so that they agree
    (``seq_length`` alone would contradict the halves the request gives). A context no longer than that answer
    takes the split ``seq_length`` alone gets (1/8 answer, at most 1024 tokens). Without either half: ``seq_length``
    alone. Fields of the wrong type are left for validation to name."""
    i, o = body.get("input_tokens"), body.get("output_tokens")
    if i is None and o is None:
        return {"seq_length": seq_length}
    answer = o if o is not None else (i // (ANSWER_SHARE - 1) if _count(i) else None)
    if not _count(answer):
        return {"seq_length": seq_length}
    answer = max(answer, 1)
    if seq_length <= answer:
        answer = min(max(seq_length // ANSWER_SHARE, 1), ANSWER_CAP)
    prompt = max(seq_length - answer, 1)
    return {"seq_length": prompt + answer, "input_tokens": prompt, "output_tokens": answer}


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def optimization_defaults(workload: str) -> dict[str, Any]:
    """The documented defaults of ``optimization_config`` for a workload."""
    return dict(_opt_defaults(SCHEMAS[workload]))


@lru_cache(maxsize=None)
def _opt_defaults(schema_name: str) -> dict[str, Any]:
    props = load_schema(schema_name)["properties"]["optimization_config"].get("properties", {})
    return {k: v["default"] for k, v in props.items() if "default" in v}


# -- before the schema ---------------------------------------------------------------------------

def _non_finite(value: Any, path: tuple, problems: list, depth: int) -> None:
    """Name every NaN / infinity in the body (JSON cannot carry them; Python callers can)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            problems.append((_field(path) or "body", f"must be a finite number, got {value!r}"))
    elif depth < MAX_NESTING:
        if isinstance(value, dict):
            for k, v in value.items():
                _non_finite(v, (*path, str(k)), problems, depth + 1)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                _non_finite(v, (*path, i), problems, depth + 1)


def _object_schemas(schema: dict) -> tuple[dict, Any]:
    """(declared properties, schema of other properties) of an object schema."""
    return schema.get("properties") or {}, schema.get("additionalProperties", True)


def _without_nulls(obj: dict, schema: dict) -> dict:
    """Drop ``null`` members of the body and of the objects its schema describes (``custom_model`` is a
    config.json, whose nulls its own reader handles)."""
    props, extra = _object_schemas(schema)
    out = {}
    for key, value in obj.items():
        if value is None:
            continue
        sub = props.get(key, extra if isinstance(extra, dict) else {})
        if isinstance(value, dict) and (sub.get("properties") or isinstance(sub.get("additionalProperties"), dict)):
            value = _without_nulls(value, sub)
        out[key] = value
    return out


def _known_fields(obj: dict, schema: dict, path: tuple, strict: bool, problems: list,
                  suggestions: dict, notes: list) -> dict:
    """Drop (with a warning) or, when strict, refuse members an ``additionalProperties: false`` schema
    does not declare; recurse into declared object members."""
    props, extra = _object_schemas(schema)
    out = {}
    for key, value in obj.items():
        if key in props:
            sub = props[key]
            if isinstance(value, dict) and sub.get("properties"):
                value = _known_fields(value, sub, (*path, key), strict, problems, suggestions, notes)
            out[key] = value
            continue
        if extra is not False:
            out[key] = value
            continue
        where = _field((*path, key))
        close = difflib.get_close_matches(str(key), list(props), n=3, cutoff=0.75)  # batchsize, flash_attn: yes
        if strict:
            problems.append((where, "unknown field"))
            if close:
                suggestions[where] = close
        else:
            hint = f" (closest known field: {_field((*path, close[0]))})" if close else ""
            notes.append(f"ignored unknown field {where}{hint}")
    return out


_BOUNDS = {"maximum": "greater than the maximum of", "minimum": "less than the minimum of",
           "exclusiveMaximum": "not less than", "exclusiveMinimum": "not greater than"}


def _schema_problems(body: dict, schema_name: str) -> list[tuple[str, str]]:
    """Every schema violation, each under the field it concerns (a missing required field by its own name)."""
    errors = sorted(validator(schema_name).iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path])
    out = []
    for err in errors:
        path = list(err.absolute_path)
        if err.validator == "required":
            missing = [name for name in err.validator_value if name not in (err.instance or {})]
            out += [p for p in ((_field((*path, name)), "is required") for name in missing) if p not in out]
            continue
        if err.validator == "enum":
            message = f"{show(err.instance)} is not one of {', '.join(map(repr, err.validator_value))}"
        elif err.validator in _BOUNDS:
            limit = err.validator_value
            message = f"{show(err.instance)} is {_BOUNDS[err.validator]} {limit:,}" if isinstance(limit, int) \
                else f"{show(err.instance)} is {_BOUNDS[err.validator]} {limit:g}"
        elif err.validator == "type":
            message = f"{show(err.instance)} is not of type {err.validator_value!r}"
        elif err.validator == "additionalProperties":
            message = err.message.replace("Additional properties are not allowed", "unknown key")
        else:
            message = err.message
        out.append((_field(path) or "body", message))
    return out
