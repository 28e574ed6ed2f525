"""``/settings``: the operator creates, lists and revokes API tokens.

Protected by the operator secret (``$VRAMPLAN_ADMIN_SECRET`` or the file generated at first start).
A signed, HttpOnly, SameSite=Strict session cookie scoped to ``/settings`` carries
``{sid, csrf, operator}``; every POST must echo the session's CSRF token in a hidden field and come
from this origin. Failed logins are rate-limited per client address (429 with ``Retry-After``).

An operator session also lives in the token store (``create_session`` at login, ``end_session`` at
logout), and an operator cookie counts only while its session is there: logging out ends it for
every worker and instance at once, where a signed cookie alone would stay valid until it expires.
"""

from __future__ import annotations

import logging
import secrets
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from . import auth
from .render import render
from .tokens import TokenStoreError

log = logging.getLogger("vramplan.server")

MAX_FORM_BYTES = 16 * 1024
NO_STORE = {"Cache-Control": "no-store"}


def _new_session(operator: bool, sid: str | None = None) -> dict:
    return {"sid": sid or auth.new_session_id(), "csrf": secrets.token_urlsafe(32), "operator": operator}


async def _session(request: Request) -> dict | None:
    """The signed session of the cookie; an operator session only while the store still holds it."""
    session = request.app.state.session_signer.unsign(request.cookies.get(auth.SESSION_COOKIE))
    if session is not None and session.get("operator"):
        try:
            active = await run_in_threadpool(request.app.state.store.session_active, session.get("sid"))
        except Exception as exc:  # the store is down: nobody is an operator until it is back
            log.error("token store unavailable checking an operator session: %s", type(exc).__name__)
            active = False
        if not active:
            session = {**session, "operator": False}
    return session


def _with_session(request: Request, response: Response, session: dict) -> Response:
    value = request.app.state.session_signer.sign(session, ttl=auth.SESSION_TTL)
    response.set_cookie(auth.SESSION_COOKIE, value, max_age=auth.SESSION_TTL, path="/settings",
                        httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


async def _form(request: Request) -> dict[str, str] | None:
    """The urlencoded form fields (first value each), or None if this is not a small urlencoded form."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: v[0] for k, v in fields.items()}


async def _checked_post(request: Request) -> tuple[dict, dict] | Response:
    """(session, form) for a POST that passes the origin and CSRF checks, else a 403 page."""
    session = await _session(request)
    form = await _form(request)
    if session is None or form is None or not auth.same_origin(request) \
            or not auth.constant_time_equal(form.get("csrf", ""), session.get("csrf", "")):
        return render("settings_error.html", {"message": "The form expired or did not come from this page "
                                              "(CSRF check failed). Reload the settings page and try again."},
                      status=403, headers=NO_STORE)
    return session, form


async def _page(request: Request, session: dict, *, status: int = 200, new_token: str | None = None,
                new_name: str | None = None, error: str | None = None, notice: str | None = None,
                headers: dict | None = None) -> Response:
    if not session.get("operator"):
        return render("login.html", {"csrf": session["csrf"], "error": error}, status=status,
                      headers={**NO_STORE, **(headers or {})})
    tokens = await run_in_threadpool(request.app.state.store.list)
    return render("settings.html", {"csrf": session["csrf"], "tokens": tokens, "new_token": new_token,
                                    "new_name": new_name, "error": error, "notice": notice},
                  status=status, headers=NO_STORE)


async def settings_page(request: Request) -> Response:
    session = await _session(request) or _new_session(operator=False)
    return _with_session(request, await _page(request, session), session)


async def login(request: Request) -> Response:
    checked = await _checked_post(request)
    if isinstance(checked, Response):
        return checked
    session, form = checked
    client = auth.client_key(request)
    wait = request.app.state.login_limiter.hit(client)
    if wait:
        return await _page(request, session, status=429, error=f"Too many login attempts; wait {int(wait) + 1} s.",
                           headers={"Retry-After": str(int(wait) + 1)})
    if not auth.constant_time_equal(form.get("secret", ""), request.app.state.admin_secret):
        log.warning("failed operator login from %s", client)
        return await _page(request, session, status=401, error="Wrong operator secret.")
    # A fresh session id (started in the store) and CSRF token on login (no session fixation).
    try:
        sid = await run_in_threadpool(request.app.state.store.create_session, auth.SESSION_TTL)
    except Exception as exc:
        log.error("token store unavailable starting an operator session: %s", type(exc).__name__)
        return await _page(request, session, status=503, error="The token store is unavailable; try again shortly.")
    return _with_session(request, RedirectResponse("/settings", status_code=303), _new_session(operator=True, sid=sid))


async def logout(request: Request) -> Response:
    checked = await _checked_post(request)
    if isinstance(checked, Response):
        return checked
    session, _form = checked
    if session.get("operator"):
        await run_in_threadpool(request.app.state.store.end_session, session.get("sid"))
    return _with_session(request, RedirectResponse("/settings", status_code=303), _new_session(operator=False))


async def create_token(request: Request) -> Response:
    checked = await _checked_post(request)
    if isinstance(checked, Response):
        return checked
    session, form = checked
    if not session.get("operator"):
        return await _page(request, session, status=401, error="Log in first.")
    name = form.get("name", "")
    try:
        token = await run_in_threadpool(request.app.state.store.create, name)
    except TokenStoreError as exc:
        return await _page(request, session, status=409 if "already exists" in str(exc) else 400,
                           error=str(exc))
    log.info("operator created API token %r", name.strip())
    return await _page(request, session, status=201, new_token=token, new_name=name.strip())


async def revoke_token(request: Request) -> Response:
    checked = await _checked_post(request)
    if isinstance(checked, Response):
        return checked
    session, form = checked
    if not session.get("operator"):
        return await _page(request, session, status=401, error="Log in first.")
    try:
        info = await run_in_threadpool(request.app.state.store.revoke, form.get("name", ""))
    except TokenStoreError as exc:
        return await _page(request, session, status=404, error=str(exc))
    log.info("operator revoked API token %r", info.name)
    return await _page(request, session, notice=f"Revoked {info.name!r}; it fails from now on.")


routes = [
    Route("/settings", settings_page, methods=["GET"]),
    Route("/settings/login", login, methods=["POST"]),
    Route("/settings/logout", logout, methods=["POST"]),
    Route("/settings/tokens", create_token, methods=["POST"]),
    Route("/settings/tokens/revoke", revoke_token, methods=["POST"]),
]
