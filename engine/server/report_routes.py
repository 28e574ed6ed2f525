"""``POST plan``, ``POST report``, ``POST fit-map`` and ``POST context-curve`` under ``/api/v1/vram-calculation/``:
the planner, the reports and the maps of many estimates over HTTP.

- ``POST /api/v1/vram-calculation/plan``: body = a plan request (schema ``plan-request``), answer =
  the plan (schema ``plan-response``), JSON.
- ``POST /api/v1/vram-calculation/report?workload=inference|finetuning&format=html|markdown``:
  body = an inference or fine-tuning request, or a deployment (``{"request": ..., "replicas": n,
  "slo": {...}}``: a row of a ``cheapest_deployment`` answer) whose report adds its cost and binding
  constraint; answer = the rendered report (``text/html`` or ``text/markdown``). Without ``format`` the ``Accept`` header chooses (``text/markdown`` →
  Markdown, else HTML); ``workload`` defaults to ``inference``.
- ``POST /api/v1/vram-calculation/fit-map``: body = a request plus ``workload``, ``gpu_keys``,
  ``quantizations`` (schema ``fit-map-request``); answer = GPUs x formats (schema ``fit-map-response``).
- ``POST /api/v1/vram-calculation/context-curve``: body = a request plus ``workload``; answer = memory
  against context length (schema ``context-curve-response``).

The handlers are plain async functions and do **not** authenticate: :data:`ROUTES` is mounted by
``app.py`` behind its authentication, or use :func:`authenticated_routes` to get the same routes
with :func:`vramplan.server.api.authenticate` applied to each. Errors have the API's one JSON shape.

The HTML report styles itself with one inline ``<style>`` element; the response carries its own
``Content-Security-Policy`` allowing exactly that element (by hash) and nothing else — no script,
no network.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..contract import WORKLOADS
from ..errors import RequestError, VramplanError
from .. import hub
from . import auth
from .api import PREFIX, _applied, _call_engine, _names_hub_model, hub_policy, read_json_object, run_engine
from .errors import error_response, request_error_response

log = logging.getLogger("vramplan.server")

REPORT_FORMATS = {"html": "text/html; charset=utf-8", "markdown": "text/markdown; charset=utf-8"}
_STYLE = re.compile(r"<style>(.*?)</style>", re.S)


async def _json_body(request: Request):
    body = await read_json_object(request)
    if isinstance(body, Response):
        return body
    if not isinstance(body, dict):
        return request_error_response(RequestError([("", "the request body must be a JSON object")]))
    return body


async def plan_endpoint(request: Request) -> Response:
    """POST plan: answer "what fits?" (see :mod:`vramplan.planner`)."""
    body = await _json_body(request)
    if isinstance(body, Response):
        return body
    return await _call_engine(request, "plan", body, strict=auth.prefers_strict(request.headers))


async def fit_map_endpoint(request: Request) -> Response:
    """POST fit-map: every GPU x every weight format (or fine-tuning method), each cell one estimate."""
    body = await _json_body(request)
    if isinstance(body, Response):
        return body
    return await _call_engine(request, "fit_map", body)


async def context_curve_endpoint(request: Request) -> Response:
    """POST context-curve: memory against context length for one request."""
    body = await _json_body(request)
    if isinstance(body, Response):
        return body
    return await _call_engine(request, "context_curve", body)


def report_format(request: Request) -> str | None:
    fmt = request.query_params.get("format")
    if fmt is not None:
        return fmt if fmt in REPORT_FORMATS else None
    accept = request.headers.get("accept", "").lower()
    return "markdown" if "text/markdown" in accept and "text/html" not in accept else "html"


def report_csp(html: str) -> str:
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(m.encode()).digest()).decode()}'"
                      for m in _STYLE.findall(html))
    return f"default-src 'none'; style-src {hashes or chr(39) + 'none' + chr(39)}; img-src data:; frame-ancestors 'none'; base-uri 'none'"


def _render(body: dict, workload: str, fmt: str, strict: bool = False) -> str:
    from ..report import render_report

    deployment = None
    if workload == "inference" and "replicas" in body and "request" in body:  # a cheapest_deployment answer
        deployment, body = _deployment(body)
    return render_report(body, workload, fmt, strict=strict, deployment=deployment)


def _deployment(body: dict) -> tuple[dict, dict]:
    """A deployment to report: {"request": one replica's inference request, "replicas": n, "slo": {...},
    "headroom": h} - one row of a cheapest_deployment answer, with the slo asked."""
    problems = []
    if not isinstance(body["request"], dict):
        problems.append(("request", "must be an inference request (a JSON object)"))
    if body.get("slo") is not None and not (isinstance(body["slo"], dict) and all(
            k in ("ttft_ms", "itl_ms", "e2e_latency_ms") and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
            for k, v in body["slo"].items())):
        problems.append(("slo", "must map ttft_ms, itl_ms or e2e_latency_ms to a number above 0"))
    headroom = body.get("headroom", 0.0)
    if not isinstance(headroom, (int, float)) or isinstance(headroom, bool) or not 0 <= headroom < 1:
        problems.append(("headroom", "must be a number from 0 up to (not including) 1"))
    if problems:
        raise RequestError(problems)
    return {"replicas": body["replicas"], "slo": body.get("slo"), "headroom": headroom}, body["request"]


async def report_endpoint(request: Request) -> Response:
    """POST report: the Markdown or HTML report of one estimate."""
    workload = request.query_params.get("workload", "inference")
    fmt = report_format(request)
    problems = []
    if workload not in WORKLOADS:
        problems.append(("workload", f"{workload!r} is not one of {', '.join(WORKLOADS)} (query parameter)"))
    if fmt is None:
        problems.append(("format", f"{request.query_params.get('format')!r} is not one of html, markdown (query parameter)"))
    if problems:
        return request_error_response(RequestError(problems))
    body = await _json_body(request)
    if isinstance(body, Response):
        return body
    strict = auth.prefers_strict(request.headers)
    try:
        with hub.using(hub_policy(request)):
            if _names_hub_model((body,)):  # a Hub lookup waits on the network: the general thread pool
                text = await run_in_threadpool(_render, body, workload, fmt, strict)
            else:
                text = await run_engine(_render, body, workload, fmt, strict)
    except RequestError as exc:
        response = request_error_response(exc)
        response.headers.update(_applied(strict))
        return response
    except VramplanError as exc:
        incident = secrets.token_hex(6)
        log.error("engine error in report (incident %s): %s", incident, exc)
        return error_response(500, f"the server's data or plugins are broken (incident {incident}): {exc}",
                              error=type(exc).__name__)
    except Exception:
        incident = secrets.token_hex(6)
        log.exception("unexpected error in report (incident %s)", incident)
        return error_response(500, f"internal error (incident {incident}); the server log has the details")
    headers = {"Content-Security-Policy": report_csp(text)} if fmt == "html" else {}
    headers.update(_applied(strict))
    return Response(text, media_type=REPORT_FORMATS[fmt], headers=headers)


ROUTES = [
    Route(f"{PREFIX}/plan", plan_endpoint, methods=["POST"]),
    Route(f"{PREFIX}/report", report_endpoint, methods=["POST"]),
    Route(f"{PREFIX}/fit-map", fit_map_endpoint, methods=["POST"]),
    Route(f"{PREFIX}/context-curve", context_curve_endpoint, methods=["POST"]),
]


def authenticated_routes(authenticate=None) -> list[Route]:
    """:data:`ROUTES` with ``authenticate(request) -> Response | None`` run first (default: the API's bearer check)."""
    if authenticate is None:
        from .api import authenticate

    def guard(endpoint):
        async def guarded(request: Request) -> Response:
            denied = await authenticate(request)
            return denied if denied is not None else await endpoint(request)

        guarded.__name__ = endpoint.__name__
        return guarded

    return [Route(r.path, guard(r.endpoint), methods=sorted(r.methods - {"HEAD"})) for r in ROUTES]
