"""Who may call what: Bearer tokens, the web page's short-lived page token, the operator's session.

- **API clients** send ``Authorization: Bearer <token>``; the token store checks it by hash.
- **The calculator page** (``GET /``) gets an HttpOnly, SameSite=Strict cookie holding a signed page
  token (session id + expiry, one hour). The API accepts it instead of a Bearer token only together
  with the ``X-Vramplan-Page: 1`` header and a same-origin ``Origin``/``Sec-Fetch-Site``, and only at
  a limited rate per page session and per client address. A custom header cannot be sent
  cross-origin without a CORS preflight, which this server never grants, so other sites cannot spend
  a visitor's cookie. Whoever can load the page can use what the page does: that is the point of a
  public calculator. ``VRAMPLAN_PAGE_SESSIONS=0`` closes it; the page then asks for a token.
- **The operator** logs in to ``/settings`` with the operator secret and gets a signed session
  cookie; every form there carries a per-session CSRF token.

Cookies are signed with HMAC-SHA256 under a key derived from the operator secret, so every worker
and every instance sharing the secret accepts the same cookies, and changing the secret logs
everybody out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import sys
import threading
import time
from collections import deque
from pathlib import Path

ADMIN_SECRET_ENV = "VRAMPLAN_ADMIN_SECRET"
ADMIN_SECRET_FILE = "admin-secret"
PAGE_COOKIE = "vramplan_page"
SESSION_COOKIE = "vramplan_session"
PAGE_HEADER = "x-vramplan-page"
PAGE_TOKEN_TTL = 3600
SESSION_TTL = 8 * 3600


# -- the operator secret ------------------------------------------------------------------------

def admin_secret_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("vramplan")) / ADMIN_SECRET_FILE


def load_admin_secret(*, create: bool = True, announce=None) -> str:
    """``$VRAMPLAN_ADMIN_SECRET``, else the secret file in the data dir, generated on first use.

    On generation ``announce(path)`` is called (the CLI prints where to read the secret; the secret
    itself is never printed or logged).
    """
    env = os.environ.get(ADMIN_SECRET_ENV, "").strip()
    if env:
        return env
    path = admin_secret_path()
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        if not create:
            raise
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker won the race
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secret + "\n")
    (announce or _default_announce)(path)
    return secret


def _default_announce(path: Path) -> None:
    print(f"vramplan: generated the operator secret for /settings; read it from {path} "
          f"(or set {ADMIN_SECRET_ENV})", file=sys.stderr)


# -- signed values ------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """HMAC-SHA256-signed, expiring JSON payloads for cookies (``payload.signature``)."""

    def __init__(self, secret: str, purpose: str):
        self._key = hmac.new(secret.encode("utf-8"), b"vramplan-cookie:" + purpose.encode("utf-8"),
                             hashlib.sha256).digest()

    def sign(self, payload: dict, ttl: int) -> str:
        body = _b64(json.dumps({**payload, "exp": int(time.time()) + ttl},
                               separators=(",", ":")).encode("utf-8"))
        return f"{body}.{_b64(hmac.new(self._key, body.encode('ascii'), hashlib.sha256).digest())}"

    def unsign(self, value: str | None) -> dict | None:
        """The payload of a cookie this signer made and that has not expired, else None (never raises:
        the value comes from the client, ``a.é`` included)."""
        if not value or not value.isascii() or value.count(".") != 1 or len(value) > 4096:
            return None
        body, sig = value.split(".")
        expected = _b64(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())
        if not hmac.compare_digest(sig.encode("ascii"), expected.encode("ascii")):
            return None
        try:
            payload = json.loads(_unb64(body))
        except ValueError:
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
            return None
        if payload["exp"] < time.time():
            return None
        return payload


# -- rate limiting ------------------------------------------------------------------------------

class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key (sliding window, in this process)."""

    def __init__(self, limit: int, window: float, max_keys: int = 10000, clock=time.monotonic):
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._clock = clock
        self._events: dict[str, deque] = {}
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """0 if ``key`` may have another event now, else the seconds to wait; records nothing."""
        now = self._clock()
        with self._lock:
            events = self._events.get(key)
            if not events:
                return 0.0
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return max(0.0, events[0] + self.window - now)
            return 0.0

    def hit(self, key: str) -> float:
        """Record one event; 0 if allowed, else the seconds to wait."""
        now = self._clock()
        with self._lock:
            events = self._events.get(key)
            if events is None:
                if len(self._events) >= self.max_keys:
                    self._prune(now)
                events = self._events[key] = deque()
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return max(0.0, events[0] + self.window - now)
            events.append(now)
            return 0.0

    def _prune(self, now: float) -> None:
        for key in [k for k, ev in self._events.items() if not ev or ev[-1] <= now - self.window]:
            del self._events[key]
        if len(self._events) >= self.max_keys:  # still full: forget the oldest half
            for key in list(self._events)[: self.max_keys // 2]:
                del self._events[key]


# -- request checks -----------------------------------------------------------------------------

def bearer_token(headers) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def same_origin(request) -> bool:
    """True if the browser says this request comes from a page of this very origin.

    ``Sec-Fetch-Site`` is set by the browser and cannot be set by a page, so where present it decides;
    otherwise ``Origin`` must name this host. A request with neither is not from a modern browser's
    page and is accepted only for GET/HEAD.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin" or (site == "none" and request.method in ("GET", "HEAD"))
    origin = request.headers.get("origin")
    if origin is None:
        return request.method in ("GET", "HEAD")
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host and origin.split("://", 1)[0] in ("http", "https")


def prefers_strict(headers) -> bool:
    """True if the request says ``Prefer: handling=strict`` (RFC 7240 §4.4; several ``Prefer`` headers
    and comma-separated preferences allowed, names case-insensitive, the value optionally quoted)."""
    for value in headers.getlist("prefer") if hasattr(headers, "getlist") else [headers.get("prefer", "")]:
        for pref in value.split(","):
            name, _, token = pref.split(";", 1)[0].partition("=")
            if name.strip().lower() == "handling" and token.strip().strip('"').lower() == "strict":
                return True
    return False


def client_key(request) -> str:
    """The rate-limit key of the caller: its IPv4 address, or the /64 network of its IPv6 address
    (one host usually holds a whole /64, so per-address limits on IPv6 would be per-guess).

    The address is the connection's peer, or — only when the operator named the reverse proxies in
    front of the server (``vramplan serve --forwarded-allow-ips``) and the request came through one
    of them — the client that proxy names in ``X-Forwarded-For`` (uvicorn's ProxyHeadersMiddleware
    rewrites the peer before any handler runs). A client cannot choose its own key by sending the
    header to a server that does not trust it."""
    host = request.client.host if request.client else "unknown"
    if ":" in host:
        try:
            return "net:" + str(ipaddress.ip_network(host + "/64", strict=False))
        except ValueError:
            pass
    return "ip:" + host


def new_session_id() -> str:
    return secrets.token_urlsafe(16)


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(hashlib.sha256(a.encode()).digest(), hashlib.sha256(b.encode()).digest())
