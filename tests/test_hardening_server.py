"""The server under attack: token brute force is rate-limited per client address, token checks are
constant-time, and every response — page, API, error, static file — carries the security headers.

(Concurrent token creation against SQLite is covered by tests/test_tokens.py::test_concurrent_creates_from_threads.)
"""

from __future__ import annotations

import hmac

import pytest
from server_fixtures import (  # noqa: F401
    ADMIN_SECRET,
    PREFIX,
    SEED_INFERENCE_REQUEST,
    api_token,
    app,
    auth_headers,
    client,
    isolated_data_dir,
    sqlite_store,
    test_client,
)
from vramplan.server import auth
from vramplan.server.api import TOKEN_FAILURES_PER_MINUTE

BAD = {"Authorization": "Bearer vp_guessed-token-0000000000000000000000000000000"}


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(app):
    """The app's failed-token limiter on a clock the test moves by hand."""
    fake = FakeClock()
    app.state.token_fail_limiter = auth.RateLimiter(TOKEN_FAILURES_PER_MINUTE, 60, clock=fake)
    return fake


def gpus(c, headers):
    return c.get(f"{PREFIX}/gpus", headers=headers)


def assert_429(resp):
    assert resp.status_code == 429, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["error"] == "TooManyRequests" and "failed API token" in body["message"]
    assert body["errors"] == []
    retry = int(resp.headers["retry-after"])
    assert 1 <= retry <= 61
    return retry


# -- brute force -------------------------------------------------------------------------------

def test_limit_is_twenty_failures_per_minute():
    assert TOKEN_FAILURES_PER_MINUTE == 20


def test_twenty_failed_tokens_then_429_with_retry_after(client, clock):
    statuses = [gpus(client, BAD).status_code for _ in range(TOKEN_FAILURES_PER_MINUTE)]
    assert statuses == [401] * 20
    clock.now += 15  # the first failure was 15 s ago: the window frees up in 45 s
    retry = assert_429(gpus(client, BAD))
    assert retry == 46  # ceil(45 s), never 0


def test_blocked_address_is_refused_before_the_store_is_asked(client, app, clock, auth_headers):
    calls = []
    verify = app.state.store.verify
    app.state.store.verify = lambda token, **kw: calls.append(token) or verify(token, **kw)
    for _ in range(TOKEN_FAILURES_PER_MINUTE):
        gpus(client, BAD)
    assert len(calls) == 20
    # Refused without a lookup, a valid token too: a blocked address learns nothing about any token.
    assert_429(gpus(client, BAD))
    assert_429(gpus(client, auth_headers))
    assert_429(client.post(f"{PREFIX}/inference", json=SEED_INFERENCE_REQUEST, headers=auth_headers))
    assert len(calls) == 20


def test_the_block_lifts_when_the_failures_leave_the_window(client, clock, auth_headers):
    for _ in range(TOKEN_FAILURES_PER_MINUTE):
        gpus(client, BAD)
    assert_429(gpus(client, auth_headers))
    clock.now += 60.01
    assert gpus(client, auth_headers).status_code == 200
    assert gpus(client, BAD).status_code == 401  # counting starts again


def test_sliding_window_counts_only_the_last_minute(client, clock):
    for _ in range(10):
        gpus(client, BAD)
    clock.now += 40
    for _ in range(10):
        gpus(client, BAD)
    assert_429(gpus(client, BAD))
    clock.now += 20.5  # the first ten are now older than 60 s
    assert [gpus(client, BAD).status_code for _ in range(10)] == [401] * 10
    assert_429(gpus(client, BAD))


def test_successful_requests_are_never_counted_or_slowed(client, clock, auth_headers):
    for _ in range(TOKEN_FAILURES_PER_MINUTE - 1):
        assert gpus(client, BAD).status_code == 401
    assert [gpus(client, auth_headers).status_code for _ in range(100)] == [200] * 100
    assert client.post(f"{PREFIX}/inference", json=SEED_INFERENCE_REQUEST, headers=auth_headers).status_code == 200
    assert gpus(client, BAD).status_code == 401  # the 20th failure: still 401
    assert_429(gpus(client, BAD))


def test_requests_without_a_token_are_not_counted(client, clock, auth_headers):
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}):
        for _ in range(30):
            assert gpus(client, headers).status_code == 401
    assert gpus(client, auth_headers).status_code == 200


def test_one_address_being_blocked_does_not_block_another(app, clock, auth_headers):
    with test_client(app) as attacker:
        for _ in range(TOKEN_FAILURES_PER_MINUTE):
            gpus(attacker, BAD)
        assert_429(gpus(attacker, BAD))
    from starlette.testclient import TestClient

    with TestClient(app, client=("198.51.100.7", 40000), raise_server_exceptions=False) as other:
        assert gpus(other, auth_headers).status_code == 200
        assert gpus(other, BAD).status_code == 401


def test_every_authenticated_endpoint_is_limited(client, clock):
    for _ in range(TOKEN_FAILURES_PER_MINUTE):
        gpus(client, BAD)
    for method, path in [("GET", "gpus"), ("GET", "llms"), ("POST", "inference"), ("POST", "finetuning"),
                         ("POST", "plan"), ("POST", "report?workload=inference&format=html")]:
        resp = client.request(method, f"{PREFIX}/{path}", headers=BAD,
                              json=SEED_INFERENCE_REQUEST if method == "POST" else None)
        assert_429(resp)


def test_failed_tokens_are_logged_once_per_block_without_the_token(client, clock, caplog):
    caplog.set_level("WARNING", logger="vramplan.server")
    for _ in range(TOKEN_FAILURES_PER_MINUTE + 5):
        gpus(client, BAD)
    lines = [r.getMessage() for r in caplog.records if "failed API token attempts" in r.getMessage()]
    assert len(lines) == 1 and "ip:testclient" in lines[0]
    assert "guessed-token" not in caplog.text


@pytest.mark.parametrize("host,key", [
    ("203.0.113.9", "ip:203.0.113.9"),
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "net:2001:db8:1:2::/64"),
    ("2001:db8:1:2::1", "net:2001:db8:1:2::/64"),  # same /64 as above: one budget
    ("2001:db8:1:3::1", "net:2001:db8:1:3::/64"),
])
def test_client_key_groups_ipv6_by_64(host, key):
    class Req:
        client = type("C", (), {"host": host})()

    assert auth.client_key(Req()) == key


def test_limiter_memory_is_bounded():
    limiter = auth.RateLimiter(2, 60, max_keys=100)
    for i in range(1000):
        limiter.hit(f"ip:{i}")
    assert len(limiter._events) <= 100


# -- constant-time comparison ------------------------------------------------------------------

def test_token_check_is_a_hash_lookup_finished_with_compare_digest(sqlite_store, monkeypatch, api_token):
    """The store looks the token up by its SHA-256 (never by the token) and confirms with
    hmac.compare_digest, so response time does not depend on how much of a guess is right."""
    from vramplan.server import tokens

    seen, real = [], hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    assert sqlite_store.verify(api_token) is not None
    assert seen == [(tokens.hash_token(api_token), tokens.hash_token(api_token))]
    assert api_token not in str(seen)
    raw = sqlite_store._connect().execute("SELECT token_hash FROM api_tokens").fetchall()
    assert raw == [(tokens.hash_token(api_token),)]


def test_operator_secret_and_cookies_compare_in_constant_time(monkeypatch):
    seen = []
    real = hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: seen.append(1) or real(a, b))
    assert auth.constant_time_equal(ADMIN_SECRET, ADMIN_SECRET)
    assert not auth.constant_time_equal(ADMIN_SECRET, ADMIN_SECRET[:-1])
    signer = auth.Signer(ADMIN_SECRET, "page")
    assert signer.unsign(signer.sign({"sid": "x"}, 60))["sid"] == "x"
    assert len(seen) == 3


# -- security headers on every response --------------------------------------------------------

API_HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "same-origin",
               "cross-origin-opener-policy": "same-origin", "cache-control": "no-store"}


def assert_security_headers(resp, label):
    for name, value in API_HEADERS.items():
        if name == "cache-control" and not resp.request.url.path.startswith(("/api/", "/openapi.json", "/healthz")):
            continue
        assert resp.headers.get(name) == value, (label, name, resp.headers.get(name))
    csp = resp.headers.get("content-security-policy", "")
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, (label, csp)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, (label, csp)
    assert "server" not in resp.headers or "uvicorn" not in resp.headers["server"].lower()


def test_every_kind_of_response_carries_the_security_headers(client, clock, auth_headers):
    big = {"gpu_key": "x" * (70 * 1024)}
    cases = [
        ("page /", "GET", "/", {}, None),
        ("page /docs", "GET", "/docs", {}, None),
        ("page /settings (login)", "GET", "/settings", {}, None),
        ("static js", "GET", "/static/calculator.js", {}, None),
        ("static css", "GET", "/static/style.css", {}, None),
        ("openapi", "GET", "/openapi.json", {}, None),
        ("healthz", "GET", "/healthz", {}, None),
        ("200 gpus", "GET", f"{PREFIX}/gpus", auth_headers, None),
        ("200 llms", "GET", f"{PREFIX}/llms", auth_headers, None),
        ("200 inference", "POST", f"{PREFIX}/inference", auth_headers, SEED_INFERENCE_REQUEST),
        ("200 plan", "POST", f"{PREFIX}/plan", auth_headers, {**SEED_INFERENCE_REQUEST, "workload": "inference",
                                                               "find": ["max_batch_size"]}),
        ("200 report html", "POST", f"{PREFIX}/report?workload=inference&format=html", auth_headers,
         SEED_INFERENCE_REQUEST),
        ("401", "GET", f"{PREFIX}/gpus", {}, None),
        ("404", "GET", "/nope", {}, None),
        ("404 static", "GET", "/static/nope.js", {}, None),
        ("405", "DELETE", f"{PREFIX}/gpus", auth_headers, None),
        ("413", "POST", f"{PREFIX}/inference", auth_headers, big),
        ("422", "POST", f"{PREFIX}/inference", auth_headers, {"gpu_key": "nope"}),
    ]
    for label, method, path, headers, body in cases:
        resp = client.request(method, path, headers=headers, json=body)
        assert_security_headers(resp, label)
    for _ in range(TOKEN_FAILURES_PER_MINUTE):
        client.get(f"{PREFIX}/gpus", headers=BAD)
    resp = client.get(f"{PREFIX}/gpus", headers=BAD)
    assert resp.status_code == 429
    assert_security_headers(resp, "429")


def test_html_report_keeps_its_own_stricter_csp(client, auth_headers):
    resp = client.post(f"{PREFIX}/report?workload=inference&format=html", json=SEED_INFERENCE_REQUEST,
                       headers=auth_headers)
    csp = resp.headers["content-security-policy"]
    assert "script-src" not in csp and "style-src 'sha256-" in csp
    assert resp.headers.get_list("content-security-policy") == [csp]  # not doubled by the middleware


# -- several workers keep TCP_NODELAY ----------------------------------------------------------

def test_multi_worker_listener_is_marked_tcp_so_connections_get_nodelay():
    """uvicorn --workers N binds with proto 0, and asyncio then leaves Nagle on for every connection
    (Kludex/uvicorn#3149): `vramplan serve` re-wraps the listener as IPPROTO_TCP."""
    import socket

    import uvicorn
    from vramplan.server.commands import tcp_nodelay_for_workers

    config = uvicorn.Config("vramplan.server.app:app_from_env", factory=True, host="127.0.0.1", port=0)
    original = uvicorn.Config.bind_socket
    with tcp_nodelay_for_workers():
        sock = config.bind_socket()
    try:
        assert sock.proto == socket.IPPROTO_TCP and sock.get_inheritable()
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()
    assert uvicorn.Config.bind_socket is original  # uvicorn is patched only while serve runs it


def test_two_worker_server_answers_keep_alive_requests_without_the_40_ms_stall(tmp_path):
    """A real `vramplan serve --workers 2`: sequential requests on one keep-alive connection take a
    millisecond or two, not the ~44 ms of Nagle waiting on the client's delayed ACK."""
    import http.client
    import os
    import statistics
    import subprocess
    import sys
    import time

    from server_fixtures import free_port

    port = free_port()
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg"), "VRAMPLAN_ADMIN_SECRET": ADMIN_SECRET,
           "VRAMPLAN_DATABASE_URL": f"sqlite:///{tmp_path / 'live.db'}"}
    proc = subprocess.Popen([sys.executable, "-m", "vramplan.server", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--workers", "2", "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("vramplan serve --workers 2 did not come up")
                time.sleep(0.2)
        times = []
        for _ in range(12):
            t0 = time.perf_counter()
            conn.request("GET", "/healthz")
            assert conn.getresponse().read() == b'{"status":"ok"}'
            times.append((time.perf_counter() - t0) * 1000)
        conn.close()
        assert statistics.median(times) < 25, times
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
