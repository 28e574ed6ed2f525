"""The ASGI application: API, pages, settings, static files, security headers, JSON errors.

``create_app()`` wires explicit dependencies (tests pass a store and a secret);
``app_from_env()`` is the uvicorn factory ``vramplan serve`` uses, reading ``$VRAMPLAN_DATABASE_URL``
and the operator secret so that every worker process builds the same app.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from .. import hub
from . import api, auth, pages, report_routes, settings
from .errors import error_response
from .tokens import TokenStore, open_store

log = logging.getLogger("vramplan.server")

STATIC_DIR = Path(__file__).parent / "static"

PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
API_CSP = "default-src 'none'; frame-ancestors 'none'"

#: page-session calls allowed per page session per minute (the page makes 3 on load, 1 per calculation)
PAGE_RATE_PER_MINUTE = 120
#: page-session calls allowed per client address per minute, over all its page sessions
PAGE_RATE_PER_ADDRESS_PER_MINUTE = 600
#: operator login attempts per client address per 5 minutes
LOGIN_ATTEMPTS_PER_5_MINUTES = 10


class SecurityHeaders:
    """Adds the security headers to every response (pure ASGI, so streaming is untouched)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        is_api = scope["path"].startswith(("/api/", "/openapi.json", "/healthz"))

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = {
                    b"x-content-type-options": b"nosniff",
                    b"x-frame-options": b"DENY",
                    b"referrer-policy": b"same-origin",
                    b"cross-origin-opener-policy": b"same-origin",
                    b"content-security-policy": (API_CSP if is_api else PAGE_CSP).encode(),
                }
                if is_api:
                    extra[b"cache-control"] = b"no-store"
                headers += [(k, v) for k, v in extra.items() if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _http_exception(request: Request, exc: HTTPException):
    message = {404: f"no such resource: {request.url.path}",
               405: f"{request.method} is not allowed here"}.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, message, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception):
    # The log line names the path and the exception, never headers (which carry tokens).
    log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return error_response(500, "internal error; the server log has the details")


def page_sessions_from_env() -> bool:
    """``VRAMPLAN_PAGE_SESSIONS=0`` turns the page's token-free session off (the page then asks for a token)."""
    return os.environ.get("VRAMPLAN_PAGE_SESSIONS", "1").strip().lower() not in ("0", "false", "no", "off")


#: The reverse proxies whose ``X-Forwarded-For`` names the client (``vramplan serve --forwarded-allow-ips``).
FORWARDED_ALLOW_IPS_ENV = "VRAMPLAN_FORWARDED_ALLOW_IPS"


def create_app(store: TokenStore | None = None, admin_secret: str | None = None, *,
               page_sessions: bool | None = None, forwarded_allow_ips: str | None = None) -> Starlette:
    """The app. ``page_sessions``: may the calculator page call the API without a token (default: yes,
    unless ``$VRAMPLAN_PAGE_SESSIONS`` is 0). ``forwarded_allow_ips``: comma-separated addresses or
    networks of the reverse proxies in front of the server (default ``$VRAMPLAN_FORWARDED_ALLOW_IPS``,
    else none): a request from one of them is taken to come from the client its ``X-Forwarded-For``
    names, so rate limits count each client, not the proxy; from anywhere else the header is ignored."""
    store = store if store is not None else open_store()
    admin_secret = admin_secret if admin_secret is not None else auth.load_admin_secret()
    app = Starlette(
        routes=[*api.routes, *report_routes.authenticated_routes(), *pages.routes, *settings.routes,
                Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static")],
        exception_handlers={HTTPException: _http_exception, Exception: _unexpected},
    )
    app.state.store = store
    app.state.admin_secret = admin_secret
    app.state.page_signer = auth.Signer(admin_secret, "page")
    app.state.session_signer = auth.Signer(admin_secret, "settings-session")
    app.state.page_sessions = page_sessions_from_env() if page_sessions is None else page_sessions
    app.state.page_limiter = auth.RateLimiter(PAGE_RATE_PER_MINUTE, 60)
    app.state.page_ip_limiter = auth.RateLimiter(PAGE_RATE_PER_ADDRESS_PER_MINUTE, 60)
    app.state.login_limiter = auth.RateLimiter(LOGIN_ATTEMPTS_PER_5_MINUTES, 300)
    app.state.token_fail_limiter = auth.RateLimiter(api.TOKEN_FAILURES_PER_MINUTE, 60)
    app.state.hub_policy = hub.policy_from_env(server=True)  # Hub ids off unless VRAMPLAN_HUB_LOOKUPS=1
    app.add_middleware(SecurityHeaders)
    proxies = forwarded_allow_ips if forwarded_allow_ips is not None else os.environ.get(FORWARDED_ALLOW_IPS_ENV, "")
    if proxies.strip():
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=proxies.strip())  # outermost: every limit sees it
    return app


def app_from_env() -> Starlette:
    """uvicorn factory: ``uvicorn --factory vramplan.server.app:app_from_env``."""
    logger = logging.getLogger("vramplan")
    if not logger.handlers:  # each worker process logs vramplan's own lines beside uvicorn's
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    app = create_app()
    try:  # load the catalog now, not during the first request (estimates run on the event loop)
        from ..catalog import get_catalog

        get_catalog()
    except Exception as exc:  # each request will answer the error as JSON; the log says it now
        log.error("the catalog does not load: %s: %s", type(exc).__name__, exc)
    return app
