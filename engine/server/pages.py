"""The pages people read: the calculator (``/``), the API docs (``/docs``), plus ``/openapi.json`` and ``/healthz``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..catalog import get_catalog
from . import auth
from .api import PREFIX
from .openapi import SCHEMA_FILES, load_schema, openapi_document, schema_rows
from .render import render

# Used when the request schema does not list the choices as an enum (the engine accepts more,
# e.g. plugin-provided formats; these are the ones the page offers).
FALLBACK_CHOICES = {
    "quantization": ["fp16", "bf16", "fp32", "fp8", "int8", "int4", "q8", "q8_0", "q6_k", "q5_k_m",
                     "q4_k_m", "q4_0", "q3_k_m", "q2_k", "iq4_xs", "awq", "gptq", "nf4", "mxfp4"],
    "kv_cache_quantization": ["fp16", "fp8", "int8", "int4"],
    "inference_parallelism": ["pipeline", "tensor"],
    "runtime": ["transformers", "vllm", "llama.cpp"],
    "offload_target": ["cpu_ram", "nvme"],
    "finetuning_method": ["lora", "qlora", "full"],
    "fine_tuning_quantization": ["fp16", "bf16", "fp32", "fp8"],
}


def _choices(schema: dict | None, field: str) -> dict:
    """The options a select offers for ``field`` and the one preselected: the schema's default."""
    prop = ((schema or {}).get("properties") or {}).get(field) or {}
    enum = prop.get("enum")
    options = list(enum) if enum and all(isinstance(v, str) for v in enum) else FALLBACK_CHOICES.get(field, [])
    default = prop.get("default", options[0] if options else "")
    return {"options": options, "default": default}


def _schema_or_none(name: str) -> dict | None:
    try:
        return load_schema(SCHEMA_FILES[name])
    except (FileNotFoundError, ValueError):
        return None


def calculator_choices() -> dict:
    inference, finetuning = _schema_or_none("InferenceRequest"), _schema_or_none("FinetuningRequest")
    out = {f: _choices(inference, f) for f in ("quantization", "kv_cache_quantization",
                                                "inference_parallelism", "runtime", "offload_target")}
    out.update({f"ft_{f}": _choices(finetuning, f) for f in ("finetuning_method", "fine_tuning_quantization",
                                                             "runtime", "offload_target")})
    # Optimizers are catalog data (plugins and the user's folder add more): offer every registered one.
    default = ((finetuning or {}).get("properties", {}).get("optimizer") or {}).get("default", "adamw")
    out["ft_optimizer"] = {"options": get_catalog().optimizers.keys(), "default": default}
    return out


async def index(request: Request) -> Response:
    """The calculator. With page sessions on, it carries a fresh page token: a browser-session cookie
    (no Max-Age), HttpOnly, SameSite=Strict, sent only to the API paths, valid one hour."""
    page_sessions = request.app.state.page_sessions
    response = render("index.html", {"api_prefix": PREFIX, "choices": calculator_choices(),
                                     "page_sessions": page_sessions}, headers={"Cache-Control": "no-store"})
    if page_sessions:
        page = request.app.state.page_signer.sign({"sid": auth.new_session_id()}, ttl=auth.PAGE_TOKEN_TTL)
        response.set_cookie(auth.PAGE_COOKIE, page, path=PREFIX + "/", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
    return response


async def docs(request: Request) -> Response:
    doc = openapi_document()
    components = doc["components"]["schemas"]
    operations = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ok = op["responses"].get("200", {}).get("content", {}).get("application/json", {})
            operations.append({
                "method": method.upper(), "path": path, "op": op,
                "request_rows": schema_rows(_component(components, body.get("schema"))),
                "response_rows": schema_rows(_list_item(_component(components, ok.get("schema")))),
                "example": body.get("example"),
            })
    return render("docs.html", {"doc": doc, "operations": operations,
                                "error_rows": schema_rows(components["Error"])})


def _component(components: dict, schema: dict | None) -> dict:
    if not schema:
        return {}
    ref = schema.get("$ref", "")
    return components.get(ref.rsplit("/", 1)[-1], {}) if ref else schema


def _list_item(schema: dict) -> dict:
    """For a list response, document its items (resolving a local $ref against the schema itself)."""
    if schema.get("type") != "array":
        return schema
    item, defs = schema.get("items", {}), schema.get("$defs", {})
    if item.get("$ref", "").startswith("#/$defs/"):
        item = defs.get(item["$ref"].rsplit("/", 1)[-1], {})
    return {**item, "$defs": defs}


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_document())


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


routes = [
    Route("/", index, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
]
