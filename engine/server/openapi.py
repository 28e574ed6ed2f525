"""The OpenAPI 3.1 document, assembled from the JSON Schemas in ``schemas/`` (one source of truth).

The request and response schemas are embedded unchanged under ``components.schemas``; OpenAPI 3.1
*is* JSON Schema 2020-12, so the same files validate requests in the engine and document them here.
This module adds only what JSON Schema cannot say: paths, authentication, status codes, and the
meanings and units of the numbers.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache

from .. import datafiles
from ..listing import CAPABILITIES
from ..version import __version__
from .api import MAX_BODY_BYTES, PREFIX, TOKEN_FAILURES_PER_MINUTE

#: component name -> schema file in the ``vramplan.schemas`` package
SCHEMA_FILES = {
    "InferenceRequest": "inference-request.schema.json",
    "InferenceResponse": "inference-response.schema.json",
    "FinetuningRequest": "finetuning-request.schema.json",
    "FinetuningResponse": "finetuning-response.schema.json",
    "GpuList": "gpu-list.schema.json",
    "LlmList": "llm-list.schema.json",
    "RuntimeList": "runtime-list.schema.json",
    "PlanRequest": "plan-request.schema.json",
    "PlanResponse": "plan-response.schema.json",
    "FitMapRequest": "fit-map-request.schema.json",
    "FitMapResponse": "fit-map-response.schema.json",
    "ContextCurveRequest": "context-curve-request.schema.json",
    "ContextCurveResponse": "context-curve-response.schema.json",
}

UNITS = (
    "**Units.** Every memory figure is GiB (2^30 bytes), including the fields whose names say \"GB\" "
    "(`size_gb`, `memory`, `custom_vram`, `vram_usage`, `static_shared_memory`, `per_user_memory`, "
    "`memory_details`, `estimated_system_ram_required`, `offloaded_memory`): a maker's \"24 GB\" card "
    "is 24 GiB. Percentages are 0-100. Speeds are tokens per second; `ms_per_token` and `tftt` "
    "(time to first token) are milliseconds; power is watts; training time is hours."
)

MEANINGS = (
    "**`vram_usage`** is the predicted peak device memory as `nvidia-smi` shows it on the busiest GPU: "
    "runtime context, allocator pools and fragmentation, weights, KV cache, activations / compute buffers, "
    "logits, and for training gradients and optimizer states. `memory_details` itemizes it and sums to it; "
    "`memory_breakdown` gives each item's share in percent (`value`) and size (`size_gb`, GiB).\n\n"
    "**`memory_status`** follows `actual_vram_percentage`: `okay` ≤ 50 %, `moderate` ≤ 75 %, `high` ≤ 90 %, "
    "`very_high` > 90 % but fits, `insufficient` does not fit, `error` the GPU configuration cannot be sized.\n\n"
    "**Inference.** `seq_length` is the whole context per sequence (prompt + generated); sequences in flight = "
    "`batch_size × concurrent_users`; the peak covers prefill of the full prompt. `static_shared_memory` is "
    "what all users share (weights, runtime), `per_user_memory` what each user adds.\n\n"
    "**Fine-tuning.** `batch_size` is the global batch; micro-batch per GPU = batch / (accumulation × "
    "data-parallel GPUs). `full` + `fp32` is mixed precision as trainers run it by default."
)

AUTH = (
    "**Authentication.** Send `Authorization: Bearer <token>`. Tokens are created by the operator with "
    "`vramplan tokens create --name NAME` or on the `/settings` page, shown once, and stored only as a hash. "
    "A missing, unknown or revoked token gets 401 with `WWW-Authenticate: Bearer`; after "
    f"{TOKEN_FAILURES_PER_MINUTE} failed tokens "
    "in a minute from one client address (IPv6: one /64), that address gets 429 with `Retry-After` for any "
    "token until the minute has passed (valid tokens never count). The client address is the connection's "
    "peer, or the client named in `X-Forwarded-For` by a reverse proxy the operator listed with "
    "`vramplan serve --forwarded-allow-ips` (from anyone else the header is ignored). The calculator page at `/` "
    "calls the API with a short-lived page session instead (an HttpOnly cookie plus the `X-Vramplan-Page: 1` "
    "header, same-origin only, rate-limited); every other client needs a token. An operator who wants the "
    "page closed too sets `VRAMPLAN_PAGE_SESSIONS=0`; the page then asks for a token."
)

COMPATIBILITY = (
    "**Fields this server does not know** are ignored, and the response's `warnings` names each one with the "
    "closest known field (clients written for the apxml API may send more than vramplan models). Send "
    "`Prefer: handling=strict` (RFC 7240) to have them refused with 422 instead; the response then carries "
    "`Preference-Applied: handling=strict`. **`null`** for an optional field means the field is absent (its "
    "default applies)."
)

ERRORS = (
    "**Errors** are always JSON (`Error`): 400 malformed JSON or HTTP request (e.g. a Content-Length that is "
    "not a number), 401 missing/wrong token, 405 wrong method, "
    f"413 body over {MAX_BODY_BYTES // 1024} KiB, 415 Content-Type not `application/json`, 429 too many "
    "failed tokens or page calls (`Retry-After`), 422 a request "
    "the engine refuses — every bad field with its path and reason, and for an unknown gpu/llm/quantization "
    "key the closest valid keys in `closest`."
)

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message", "errors"],
    "properties": {
        "error": {"type": "string", "description": "Error kind, e.g. RequestError, Unauthorized, MalformedJSON."},
        "message": {"type": "string", "description": "One line a person can read."},
        "errors": {
            "type": "array",
            "description": "Every problem found, one per bad field.",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {
                    "field": {"type": "string",
                              "description": "Path of the field in the request, e.g. `gpu_key` or "
                                             "`optimization_config.zero_stage`; empty for the whole body."},
                    "message": {"type": "string", "description": "What is wrong with it."},
                    "closest": {"type": "array", "items": {"type": "string"},
                                "description": "For an unknown key: the closest valid keys."},
                },
            },
        },
    },
}


def load_schema(filename: str) -> dict:
    """A private copy of a packaged schema by file name (the document below edits its copies)."""
    return copy.deepcopy(datafiles.load_schema(filename.removesuffix(".schema.json")))


#: Request schemas as the wire accepts them by default (see :func:`as_accepted`).
REQUEST_COMPONENTS = ("InferenceRequest", "FinetuningRequest")


def as_accepted(schema: dict) -> dict:
    """A request schema as the API accepts it without ``Prefer: handling=strict``.

    The schema files list the fields the engine knows (``additionalProperties: false``), which is what
    strict mode enforces. By default the server also takes unknown fields (ignored, with a warning)
    and ``null`` for any optional field (= absent); the published document says so, so that a client
    generated from it, or a fuzzer, sees the real contract.
    """
    out = dict(schema)
    if out.get("additionalProperties") is False:
        del out["additionalProperties"]
    required = set(out.get("required", []))
    props = {}
    for name, prop in (out.get("properties") or {}).items():
        if name == "custom_model":  # document the config.json keys read, with their types and bounds
            from ..configkeys import json_schema

            prop = {**json_schema(), "description": prop.get("description", "")}
        elif prop.get("type") == "object" and prop.get("properties"):
            prop = as_accepted(prop)
        elif prop.get("type") == "object" and isinstance(prop.get("additionalProperties"), dict):
            prop = {**prop, "additionalProperties": _nullable(prop["additionalProperties"])}
        props[name] = prop if name in required else _nullable(prop)
    if props:
        out["properties"] = props
    return out


def _nullable(prop: dict) -> dict:
    """``prop`` that also accepts ``null``."""
    if isinstance(prop.get("type"), str):
        out = {**prop, "type": [prop["type"], "null"]}
        if "enum" in prop:
            out["enum"] = [*prop["enum"], None]
        return out
    if "enum" in prop and "type" not in prop:
        return {**prop, "enum": [*prop["enum"], None]}
    keep = {k: prop[k] for k in ("description", "default") if k in prop}
    inner = {k: v for k, v in prop.items() if k not in keep}
    return {"anyOf": [inner, {"type": "null"}], **keep}


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _common_errors(post: bool) -> dict:
    out = {"401": _error("Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)."),
           "405": _error("Wrong HTTP method."),
           "429": _error("Too many failed token attempts from this client address, or too many page-session "
                         "calls (`Retry-After` says when to try again)."),
           "500": _error("Unexpected server error; the message carries an incident id for the server log."),
           "503": _error("The token store is unavailable (`Retry-After` says when to try again).")}
    if post:
        out.update({
            "400": _error("Malformed JSON, or an HTTP request that cannot be parsed (e.g. Content-Length: -1)."),
            "413": _error(f"Body over {MAX_BODY_BYTES // 1024} KiB."),
            "415": _error("Content-Type is not application/json."),
            "422": _error("Schema violation (every bad field with its path and reason), unknown "
                          "gpu/llm/quantization key (with the closest valid keys), a custom_model key of the "
                          "wrong type or beyond what any real model has, a number the formulas cannot size, "
                          "or (with `Prefer: handling=strict`) a field this server does not know."),
        })
    return dict(sorted(out.items()))


def _estimate_op(kind: str, summary: str, description: str, example: dict) -> dict:
    name = kind.capitalize()
    return {"post": {
        "operationId": f"estimate_{kind}",
        "summary": summary,
        "description": description + "\n\n" + UNITS,
        "tags": ["estimates"],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": _ref(f"{name}Request"), "example": example}}},
        "responses": {"200": {"description": f"The {kind} estimate. Memory in GiB.",
                              "content": {"application/json": {"schema": _ref(f"{name}Response")}}},
                      **_common_errors(post=True)},
    }}


#: POST report's body for a deployment: a row of a cheapest_deployment answer (its request and replicas).
DEPLOYMENT_REPORT = {
    "type": "object", "required": ["request", "replicas"], "additionalProperties": True,
    "description": "A deployment: one replica's inference request and the number of replicas (a cheapest_deployment "
                   "row; its other fields are recomputed, not trusted), with the slo and headroom it was asked with.",
    "properties": {
        "request": _ref("InferenceRequest"),
        "replicas": {"type": "integer", "minimum": 1, "maximum": 1024},
        "slo": {"type": "object", "additionalProperties": False, "properties": {
            k: {"type": "number", "exclusiveMinimum": 0} for k in ("ttft_ms", "itl_ms", "e2e_latency_ms")}},
        "headroom": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
    },
}


def _list_op(op_id: str, summary: str, component: str, parameters: list | None = None) -> dict:
    errors = _common_errors(post=False)
    if parameters:
        errors["422"] = _error("An unknown query parameter, or a malformed filter (each named, with the valid ones).")
        errors = dict(sorted(errors.items()))
    return {"get": {
        "operationId": op_id, "summary": summary, "tags": ["catalogs"],
        "description": summary + " Memory in GiB.",
        **({"parameters": parameters} if parameters else {}),
        "responses": {"200": {"description": summary,
                              "content": {"application/json": {"schema": _ref(component)}}},
                      **errors},
    }}


def _llm_filters() -> list[dict]:
    """GET llms query parameters (vramplan.listing.filter_models)."""
    def param(name, schema, description, **extra):
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description, **extra}

    return [
        param("family", {"type": "string"}, "The family or a prefix of it, any case (`qwen` matches qwen2.5 and qwen3)."),
        param("min_params", {"type": "number", "minimum": 0}, "At least this many parameters in total, billions."),
        param("max_params", {"type": "number", "minimum": 0}, "At most this many parameters in total, billions."),
        param("capability", {"type": "array", "items": {"enum": list(CAPABILITIES)}},
              "Required capabilities, repeated or comma-separated; all must hold. "
              + "; ".join(f"`{k}`: {v}" for k, v in CAPABILITIES.items()) + ".", style="form", explode=True),
        param("search", {"type": "string"}, "Words that must all appear in the key, name, family or Hub repository, any case."),
    ]


SEED_INFERENCE = {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m",
                  "batch_size": 1, "seq_length": 2048}
SEED_FINETUNING = {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "finetuning_method": "lora",
                   "lora_rank": 16, "batch_size": 4, "seq_length": 2048}


@lru_cache(maxsize=1)
def _document() -> str:
    schemas = {name: load_schema(filename) for name, filename in SCHEMA_FILES.items()}
    for name in REQUEST_COMPONENTS:
        schemas[name] = as_accepted(schemas[name])
    schemas["Error"] = ERROR_SCHEMA
    doc = {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "vramplan API",
            "version": __version__,
            "summary": "Will this LLM workload fit on that GPU, and how fast will it run?",
            "description": "\n\n".join([
                "GPU memory and speed estimates for LLM inference and fine-tuning, wire-compatible with "
                "the public apxml VRAM-calculator API: a client written for it works by changing only "
                "the base URL.", UNITS, MEANINGS, AUTH, COMPATIBILITY, ERRORS]),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/", "description": "this server"}],
        "security": [{"bearerAuth": []}],
        "tags": [{"name": "estimates", "description": "Memory and performance estimates."},
                 {"name": "catalogs", "description": "Valid gpu_key, llm_key and runtime values."},
                 {"name": "service", "description": "Health."}],
        "paths": {
            f"{PREFIX}/inference": _estimate_op(
                "inference", "Estimate GPU memory and speed for LLM inference",
                "Computes the GPU memory breakdown (weights, KV cache, activations, runtime overhead) and the "
                "performance figures (decode tokens/s, time to first token, power) for serving a model.",
                SEED_INFERENCE),
            f"{PREFIX}/finetuning": _estimate_op(
                "finetuning", "Estimate GPU memory and training speed for fine-tuning",
                "Computes the GPU memory breakdown (weights, gradients, optimizer states, activations) and the "
                "training throughput and time for full fine-tuning, LoRA or QLoRA.",
                SEED_FINETUNING),
            f"{PREFIX}/gpus": _list_op("list_gpus", "List the valid gpu_key values with their memory.", "GpuList"),
            f"{PREFIX}/llms": _list_op("list_models", "List the valid llm_key values, optionally filtered by family, "
                                       "size, capability and search words.", "LlmList", _llm_filters()),
            f"{PREFIX}/runtimes": _list_op("list_runtimes", "List the valid runtime values with their cited constants.",
                                           "RuntimeList"),
            f"{PREFIX}/plan": {"post": {
                "operationId": "plan", "summary": "Answer \"what fits?\"", "tags": ["estimates"],
                "description": "An inference or fine-tuning request plus `workload` and `find` (max_seq_length, "
                               "max_batch_size, max_concurrent_users, max_request_rate, min_num_gpus, "
                               "best_quantization, gpus, cheapest_deployment); each answer carries the full estimate "
                               "at that value, or `value: null` with a `reason`. The value fits and the next step "
                               "does not. cheapest_deployment needs no gpu_key: it searches every catalog GPU (or "
                               "gpu_keys), GPUs per replica, their split, runtimes, weights and KV formats and the "
                               "number of replicas, and lists the cheapest deployment per GPU type that meets the "
                               "slo, best first.\n\n" + UNITS,
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("PlanRequest")}}},
                "responses": {"200": {"description": "One member per question.",
                                      "content": {"application/json": {"schema": _ref("PlanResponse")}}},
                              **_common_errors(post=True)},
            }},
            f"{PREFIX}/report": {"post": {
                "operationId": "report", "summary": "An auditable report of an estimate", "tags": ["estimates"],
                "description": "The estimate with every formula, its inputs and result, the catalog sources, "
                               "charts and assumptions. `format=html` (self-contained) or `markdown`; without "
                               "it, `Accept: text/markdown` gives Markdown, else HTML. A deployment (a row of a "
                               "cheapest_deployment answer: its `request` and `replicas`, with the `slo` asked) "
                               "gets the report of one replica plus the deployment's cost and binding constraint.",
                "parameters": [
                    {"name": "workload", "in": "query", "required": True,
                     "schema": {"enum": ["inference", "finetuning"]}},
                    {"name": "format", "in": "query", "required": False, "schema": {"enum": ["html", "markdown"]}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"anyOf": [
                    _ref("InferenceRequest"), _ref("FinetuningRequest"), DEPLOYMENT_REPORT]}}}},
                "responses": {"200": {"description": "The rendered report.", "content": {
                    "text/html": {"schema": {"type": "string"}}, "text/markdown": {"schema": {"type": "string"}}}},
                              **_common_errors(post=True)},
            }},
            f"{PREFIX}/fit-map": {"post": {
                "operationId": "fit_map", "summary": "One model on every GPU x every weight format",
                "tags": ["estimates"],
                "description": "An inference or fine-tuning request (gpu_key optional) plus `workload`, `gpu_keys` and "
                               "`quantizations`: each cell is the estimate on that GPU with that weight format "
                               "(fine-tuning: method), with its memory, status, whether it fits and its speed.\n\n" + UNITS,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _ref("FitMapRequest"),
                    "example": {"llm_key": "llama-3-8b-instruct", "seq_length": 8192,
                                "gpu_keys": ["rtx_4090", "h100_80"], "quantizations": ["fp16", "q4_k_m"]}}}},
                "responses": {"200": {"description": "GPUs (rows) x formats (columns).",
                                      "content": {"application/json": {"schema": _ref("FitMapResponse")}}},
                              **_common_errors(post=True)},
            }},
            f"{PREFIX}/context-curve": {"post": {
                "operationId": "context_curve", "summary": "Memory against context length", "tags": ["estimates"],
                "description": "An inference or fine-tuning request plus `workload` (default inference): `vram_usage` "
                               "at about 12 context lengths from 512 tokens to the model's context, and the longest "
                               "context that fits.\n\n" + UNITS,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _ref("ContextCurveRequest"), "example": SEED_INFERENCE}}},
                "responses": {"200": {"description": "The curve.",
                                      "content": {"application/json": {"schema": _ref("ContextCurveResponse")}}},
                              **_common_errors(post=True)},
            }},
            "/healthz": {"get": {
                "operationId": "healthz", "summary": "Liveness check; no authentication.",
                "tags": ["service"], "security": [],
                "responses": {"200": {"description": "The server is up.", "content": {"application/json": {
                    "schema": {"type": "object", "properties": {"status": {"const": "ok"}}}}}}},
            }},
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "An API token from `vramplan tokens create` or /settings."}},
        },
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))  # as starlette's JSONResponse writes JSON


def openapi_text() -> str:
    """The OpenAPI document as JSON text, built once per process: what ``/openapi.json`` sends."""
    return _document()


def openapi_document() -> dict:
    """A fresh copy of the OpenAPI document (built once per process)."""
    return json.loads(_document())


# -- helpers for the HTML docs page -------------------------------------------------------------

def _resolve(node: dict, root: dict) -> dict:
    seen = 0
    while isinstance(node, dict) and "$ref" in node and seen < 20:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            return node
        target = root
        for part in ref[2:].split("/"):
            target = target.get(part.replace("~1", "/").replace("~0", "~"), {})
        node, seen = {**target, **{k: v for k, v in node.items() if k != "$ref"}}, seen + 1
    return node


def _type_of(node: dict, root: dict) -> str:
    node = _resolve(node, root)
    if "enum" in node:
        return "enum"
    if "const" in node:
        return "const"
    kind = node.get("type")
    if isinstance(kind, list):
        return " | ".join(kind)
    if kind == "array":
        return f"array of {_type_of(node.get('items', {}), root)}"
    if kind:
        return kind
    for key in ("oneOf", "anyOf"):
        if key in node:
            return " | ".join(_type_of(option, root) for option in node[key])
    return "any"


def schema_rows(schema: dict, prefix: str = "", depth: int = 0) -> list[dict]:
    """Flatten an object schema into table rows: field path, type, required, default, choices, description."""
    root = schema
    node = _resolve(schema, root)
    rows = []
    required = set(node.get("required", []))
    for name, prop in (node.get("properties") or {}).items():
        prop_r = _resolve(prop, root)
        choices = prop_r.get("enum") or ([prop_r["const"]] if "const" in prop_r else [])
        rows.append({
            "field": prefix + name, "type": _type_of(prop, root), "required": name in required,
            "default": json.dumps(prop_r["default"]) if "default" in prop_r else "",
            "choices": ", ".join(str(c) for c in choices), "description": prop_r.get("description", ""),
        })
        if prop_r.get("type") == "object" and prop_r.get("properties") and depth < 2:
            sub = {**prop_r, "$defs": root.get("$defs", {})}
            rows.extend(schema_rows(sub, prefix + name + ".", depth + 1))
    return rows
