"""The pages people read: the calculator (``/``), the API docs (``/docs``), plus ``/openapi.json`` and ``/healthz``."""

from __future__ import annotations

from functools import lru_cache

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..catalog import get_catalog
from . import auth
from .api import PREFIX
from .openapi import SCHEMA_FILES, load_schema, openapi_document, openapi_text, schema_rows
from .render import render

#: The fit map's "common" columns: one format per precision class a user chooses between (16-bit, 8-bit float
#: and integer, the GGUF K-quants from 8 down to 2 bits, 4-bit group formats). "all" asks for every format.
MAP_FORMATS = ("fp16", "fp8", "int8", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "awq", "iq4_xs", "q3_k_m", "q2_k")


def _schema_or_none(name: str) -> dict | None:
    try:
        return load_schema(SCHEMA_FILES[name])
    except (FileNotFoundError, ValueError):
        return None


#: The calculator's catalog-derived parts - the form, generated from the request schemas (defaults,
#: bounds, choices) and the catalog, the fit map's formats, the catalog's counts - for the catalog
#: they were built from (``catalog.reset`` installs another object, which rebuilds them): the form
#: deep-copies and walks both request schemas, too much to redo on every GET /.
_built: tuple[object, dict] | None = None


def _calculator(cat) -> dict:
    global _built
    if _built is None or _built[0] is not cat:
        from .form import build

        schemas = {"inference": _schema_or_none("InferenceRequest") or {},
                   "finetuning": _schema_or_none("FinetuningRequest") or {}}
        facts = {"gpus": sum(1 for e in cat.gpus if not e.data.get("custom")), "models": len(cat.models),
                 "formats": sum(1 for e in cat.quantization if e.data["kind"] != "alias"),
                 "runtimes": len(cat.runtimes)}
        _built = (cat, {"form": build(schemas, cat), "map_formats": [k for k in MAP_FORMATS if k in cat.quantization],
                        "facts": facts})
    return _built[1]


async def index(request: Request) -> Response:
    """The calculator. With page sessions on, it carries a fresh page token: a browser-session cookie
    (no Max-Age), HttpOnly, SameSite=Strict, sent only to the API paths, valid one hour."""
    page_sessions = request.app.state.page_sessions
    response = render("index.html", {"api_prefix": PREFIX, **_calculator(get_catalog()), "page_sessions": page_sessions},
                      headers={"Cache-Control": "no-store"})
    if page_sessions:
        page = request.app.state.page_signer.sign({"sid": auth.new_session_id()}, ttl=auth.PAGE_TOKEN_TTL)
        response.set_cookie(auth.PAGE_COOKIE, page, path=PREFIX + "/", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
    return response


async def docs(request: Request) -> Response:
    return render("docs.html", _docs_context())


@lru_cache(maxsize=1)
def _docs_context() -> dict:
    """What the docs page shows, from the OpenAPI document (built once per process, so this is too)."""
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
    return {"doc": doc, "operations": operations, "error_rows": schema_rows(components["Error"])}


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
    return Response(openapi_text(), media_type="application/json")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


routes = [
    Route("/", index, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
]
