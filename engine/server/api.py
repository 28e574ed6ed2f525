"""The seed's four endpoints under ``/api/v1/vram-calculation/``, each a thin shell over the engine.

Order of checks for a POST: authentication (401; 429 after too many bad tokens) → content type (415)
→ size (413; a Content-Length that is not a number is 400) → JSON syntax (400) → the engine's own
validation (422). Route matching answers a wrong method (405) before any of them. Anything
unexpected is logged (never with a token) and answered as JSON. ``Prefer: handling=strict`` makes
the estimate endpoints refuse fields they do not know (default: ignored, with a warning).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import weakref

import anyio

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import hub
from ..errors import RequestError, VramplanError
from ..listing import model_filters_from_query
from ..suggest import add_suggestions, needs_suggestions
from . import auth
from .errors import error_response, request_error_response, unauthorized
from .tokens import TokenStoreBusy

log = logging.getLogger("vramplan.server")

PREFIX = "/api/v1/vram-calculation"
MAX_BODY_BYTES = 64 * 1024
#: failed Bearer tokens per client address per minute before that address gets 429 (brute force)
TOKEN_FAILURES_PER_MINUTE = 20


async def authenticate(request: Request) -> Response | None:
    """None if the caller may use the API, else the 401/403/429/503 response to send.

    Failed Bearer tokens are counted per client address (``app.state.token_fail_limiter``); past the
    limit that address gets 429 with ``Retry-After`` for any token until the window frees up. Valid
    tokens are never counted, so a well-behaved client is never slowed.
    """
    state = request.app.state
    token = auth.bearer_token(request.headers)
    if token is not None:
        # Brute force: an address with too many failed tokens lately is refused before the store is asked
        # (so it learns nothing more, and costs nothing), until its oldest failure leaves the window.
        address = auth.client_key(request)
        failures = state.token_fail_limiter
        wait = failures.wait(address)
        if wait:
            return error_response(429, "too many failed API token attempts from this address; "
                                       f"retry in {int(wait) + 1} s", headers={"Retry-After": str(int(wait) + 1)})
        try:
            info = await _verify(state.store, token)
        except Exception as exc:  # the database is down: say so, without a traceback that could echo input
            log.error("token store unavailable: %s: %s", type(exc).__name__, str(exc).replace(token, "<token>"))
            return error_response(503, "the token store is unavailable; try again shortly",
                                  headers={"Retry-After": "5"})
        if info is None:
            failures.hit(address)
            if failures.wait(address):
                log.warning("%s: %d failed API token attempts within %d s; refusing its tokens for a while",
                            address, failures.limit, failures.window)
            return unauthorized("invalid API token: unknown or revoked", invalid=True)
        request.state.token_name = info.name
        return None
    if state.page_sessions and request.headers.get(auth.PAGE_HEADER) == "1" \
            and auth.PAGE_COOKIE in request.cookies:
        page = state.page_signer.unsign(request.cookies.get(auth.PAGE_COOKIE))
        if page is None:
            return unauthorized("the page session expired; reload the page", invalid=True)
        if not auth.same_origin(request):
            return error_response(403, "page sessions are accepted from this site's own pages only")
        wait = state.page_limiter.hit("sid:" + str(page.get("sid", ""))) or state.page_ip_limiter.hit(auth.client_key(request))
        if wait:
            return error_response(429, "too many requests from this page; slow down",
                                  headers={"Retry-After": str(int(wait) + 1)})
        request.state.token_name = None
        return None
    if request.headers.get("authorization"):
        return unauthorized("the Authorization header must be 'Bearer <token>'", invalid=True)
    return unauthorized("an API token is required: send 'Authorization: Bearer <token>' "
                        "(create one with 'vramplan tokens create --name NAME' or at /settings)",
                        invalid=False)


async def _verify(store, token: str):
    """Check a token without ever blocking the event loop.

    A local SQLite read takes microseconds and is done here, without waiting for any lock (in WAL
    mode readers are not blocked by writers; if the file is locked anyway the check moves to a
    thread). ``last_used_at`` is written by the store's background thread, skipped while the
    database is busy. A network store (PostgreSQL) is asked from a thread.
    """
    if getattr(store, "local_reads", False):
        try:
            return store.verify(token, wait=False)
        except TokenStoreBusy:
            # locked (a background last_used_at write, a WAL checkpoint): read again from a worker thread,
            # waiting for the lock there - a second read that would not wait could fail the same way
            return await run_in_threadpool(lambda: store.verify(token, wait=False, read_wait=True))
    return await run_in_threadpool(lambda: store.verify(token, wait=False))


async def read_json_object(request: Request):
    """The request body as parsed JSON, or the 413/415/400 response explaining why not."""
    ctype = request.headers.get("content-type", "")
    media = ctype.split(";", 1)[0].strip().lower()
    if media != "application/json":
        return error_response(415, f"Content-Type must be application/json, got {ctype or 'none'!r}")
    length = request.headers.get("content-length")
    if length is not None and not (length.isascii() and length.isdigit()):
        return error_response(400, f"Content-Length must be a number of bytes, got {length[:40]!r}",
                              error="BadRequest")
    if length is not None and int(length[:12]) > MAX_BODY_BYTES:
        return error_response(413, f"request body over {MAX_BODY_BYTES} bytes (64 KiB)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return error_response(413, f"request body over {MAX_BODY_BYTES} bytes (64 KiB)")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return error_response(400, f"malformed JSON: {exc}"[:300])


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


#: Engine calls answered on the event loop itself when the request is a cheap one (:func:`_cheap`): a
#: catalog model's estimate takes well under a millisecond of pure CPU, and handing it to a thread
#: costs more than the call (two thread switches; the GIL gives threads no parallelism anyway).
INLINE_CALLS = frozenset({"estimate_inference", "estimate_finetuning", "list_gpus", "list_models"})
#: The estimate calls, by workload: their suggestions (when an estimate does not fit) are a search.
ESTIMATES = {"estimate_inference": "inference", "estimate_finetuning": "finetuning"}
#: Listings change only with the catalog: their JSON is rendered once per (function, catalog).
CACHED_LISTINGS = frozenset({"list_gpus", "list_models"})
_listing_cache: dict[str, tuple] = {}
#: Engine calls running in threads at once, per worker. Everything that could take longer than a
#: catalog estimate — a custom model (a new architecture to count), an offloading search, a trace,
#: plan and report — runs in a thread, this many at a time (the rest wait their turn without holding
#: anything), so the event loop keeps answering /healthz, cheap estimates and authentication however
#: many heavy requests arrive. The work is pure Python under one GIL, so more threads add no
#: throughput, only more contenders the loop must wait behind for the GIL (each holds it up to 5 ms):
#: measured with benchmarks/busy_worker.py, /healthz p50 while busy was ~12-25 ms with 1 thread,
#: ~45-60 ms with 2 and ~45-75 ms with 4, the heavy batch as fast. Scale out with --workers.
ENGINE_THREADS = 1
_engine_limiters: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop -> its limiter


def _cheap(fn_name: str, args: tuple) -> bool:
    """True for calls that take microseconds: listings, and estimates of a catalog model at fixed settings."""
    if fn_name not in INLINE_CALLS:
        return False
    body = args[0] if args else None
    if not isinstance(body, dict):
        return True
    auto_offload = body.get("enable_offloading") and body.get("num_offload_layers") is None \
        and body.get("percentage_offload") is None
    settings = body.get("runtime_settings")
    # a fine-tuning estimate may replay its training run through the allocator model (engine/allocator):
    # milliseconds to a few hundred for a shape not seen before - not for the event loop
    simulates = fn_name == "estimate_finetuning" and not (isinstance(settings, dict)
                                                         and settings.get("train_reserve_simulation") == 0)
    return (body.get("llm_key") != "custom" and "custom_model" not in body and not auto_offload
            and not body.get("trace") and not simulates)


async def run_engine(fn, *args, **kwargs):
    """Run a slow engine call in a worker thread, at most :data:`ENGINE_THREADS` per event loop at once."""
    loop = asyncio.get_running_loop()
    limiter = _engine_limiters.get(loop)
    if limiter is None:
        limiter = _engine_limiters[loop] = anyio.CapacityLimiter(ENGINE_THREADS)
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=limiter)


async def _call_engine(request: Request, fn_name: str, *args, strict: bool = False) -> Response:
    import vramplan  # looked up per call, so the engine (and a test's stand-in) is whatever is loaded now

    fn = getattr(vramplan, fn_name)
    kwargs = {"strict": True} if strict else {}
    try:
        if fn_name in CACHED_LISTINGS and not args:
            return _listing(fn_name, fn)
        if fn_name in CACHED_LISTINGS:  # a filtered listing: keyword filters
            return JSONResponse(fn(**args[0]))
        with hub.using(hub_policy(request)):
            if _names_hub_model(args):  # a Hub lookup waits on the network: the general thread pool
                result = await run_in_threadpool(lambda: fn(*args, **kwargs))
            elif _cheap(fn_name, args) and fn_name in ESTIMATES:
                # The estimate itself is cheap; the search for suggestions (only when it does not fit) is not,
                # so it runs in the engine's own pool, off the event loop.
                result = fn(*args, suggestions=False, **kwargs)
                if needs_suggestions(result):
                    result = await run_engine(add_suggestions, args[0], ESTIMATES[fn_name], result)
            elif _cheap(fn_name, args):
                result = fn(*args, **kwargs)
            else:  # CPU work that may take milliseconds: the engine's own bounded pool
                result = await run_engine(fn, *args, **kwargs)
        return JSONResponse(result, headers=_applied(strict))
    except RequestError as exc:
        response = request_error_response(exc)
        response.headers.update(_applied(strict))
        return response
    except VramplanError as exc:
        incident = secrets.token_hex(6)
        log.error("engine error in %s (incident %s): %s", fn_name, incident, exc)
        return error_response(500, f"the server's data or plugins are broken (incident {incident}): {exc}",
                              error=type(exc).__name__)
    except Exception:
        incident = secrets.token_hex(6)
        log.exception("unexpected error in %s (incident %s)", fn_name, incident)
        return error_response(500, f"internal error (incident {incident}); the server log has the details")


def _applied(strict: bool) -> dict[str, str]:
    """RFC 7240 §3: say which preference was honoured."""
    return {"Preference-Applied": "handling=strict"} if strict else {}


def hub_policy(request: Request) -> hub.Policy:
    """The operator's Hub policy (``VRAMPLAN_HUB_LOOKUPS`` etc., read when the app was made)."""
    policy = getattr(request.app.state, "hub_policy", None)
    return policy if policy is not None else hub.policy_from_env(server=True)


def _names_hub_model(args) -> bool:
    return any(isinstance(a, dict) and hub.is_hub_key(a.get("llm_key")) for a in args)


def _listing(fn_name: str, fn) -> Response:
    from ..catalog import get_catalog

    catalog = get_catalog()
    cached = _listing_cache.get(fn_name)
    if cached is None or cached[0] is not fn or cached[1] is not catalog:
        body = JSONResponse(fn()).body
        cached = _listing_cache[fn_name] = (fn, catalog, body)
    return Response(cached[2], media_type="application/json")


def _estimate(fn_name: str):
    async def endpoint(request: Request) -> Response:
        denied = await authenticate(request)
        if denied is not None:
            return denied
        body = await read_json_object(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body, dict):
            return request_error_response(RequestError([("", "the request body must be a JSON object")]))
        return await _call_engine(request, fn_name, body, strict=auth.prefers_strict(request.headers))

    endpoint.__name__ = fn_name
    return endpoint


def _list_endpoint(fn_name: str):
    async def endpoint(request: Request) -> Response:
        denied = await authenticate(request)
        if denied is not None:
            return denied
        if fn_name == "list_models" and request.query_params:  # GET llms?family=…&capability=…: filtered
            try:
                filters = model_filters_from_query({k: request.query_params.getlist(k) for k in request.query_params})
            except RequestError as exc:
                return request_error_response(exc)
            return await _call_engine(request, fn_name, filters)
        return await _call_engine(request, fn_name)

    endpoint.__name__ = fn_name
    return endpoint


routes = [
    Route(f"{PREFIX}/inference", _estimate("estimate_inference"), methods=["POST"]),
    Route(f"{PREFIX}/finetuning", _estimate("estimate_finetuning"), methods=["POST"]),
    Route(f"{PREFIX}/gpus", _list_endpoint("list_gpus"), methods=["GET"]),
    Route(f"{PREFIX}/llms", _list_endpoint("list_models"), methods=["GET"]),
    Route(f"{PREFIX}/runtimes", _list_endpoint("list_runtimes"), methods=["GET"]),
]
