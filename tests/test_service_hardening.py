"""The service under attack, round 2 (issue 12, items 7, 8, 10-12 and the compatibility header):
cookies with any bytes, logout that ends the session everywhere, token checks that never wait on a
lock, rate limits per client behind named proxies, JSON for requests uvicorn cannot parse, and
``Prefer: handling=strict``.
"""

from __future__ import annotations

import socket
import sqlite3
import time

import pytest
from server_fixtures import (  # noqa: F401
    ADMIN_SECRET,
    ORIGIN,
    PREFIX,
    SEED_INFERENCE_REQUEST,
    api_token,
    app,
    auth_headers,
    client,
    csrf_of,
    isolated_data_dir,
    running_server,
    sqlite_store,
    test_client,
)
from vramplan.server import auth, create_app
from vramplan.server.app import LOGIN_ATTEMPTS_PER_5_MINUTES
from vramplan.server.tokens import TokenStoreBusy

FORM = {"Origin": ORIGIN}
PAGE = {"X-Vramplan-Page": "1", "Origin": ORIGIN}


def login(client) -> str:
    csrf = csrf_of(client.get("/settings").text)
    resp = client.post("/settings/login", data={"csrf": csrf, "secret": ADMIN_SECRET}, headers=FORM,
                       follow_redirects=False)
    assert resp.status_code == 303
    return csrf_of(client.get("/settings").text)


# -- 7. cookies are client input: any bytes, never a 500 ---------------------------------------------

@pytest.mark.parametrize("value", ["a.é", "é.é", "a.\u2603", "a." + "é" * 3000, "..", "a.b.c"])
def test_a_cookie_with_a_non_ascii_signature_is_just_not_a_session(client, value):
    # raw UTF-8 bytes on the wire, as an attacker's client sends them
    page = client.get("/settings", headers={"Cookie": f"{auth.SESSION_COOKIE}={value}".encode()})
    assert page.status_code == 200 and 'id="login-form"' in page.text  # was 500 with a traceback
    resp = client.get(f"{PREFIX}/gpus", headers={**PAGE, "Cookie": f"{auth.PAGE_COOKIE}={value}".encode()})
    assert resp.status_code == 401 and resp.json()["error"] == "Unauthorized"


def test_signer_refuses_non_ascii_without_raising():
    signer = auth.Signer("secret", "page")
    good = signer.sign({"sid": "x"}, ttl=60)
    assert signer.unsign(good)["sid"] == "x"
    for bad in ("a.é", good[:-1] + "é", "é" + good):
        assert signer.unsign(bad) is None


# -- 8. logout ends the session for every worker and instance -----------------------------------------

def test_a_cookie_saved_before_logout_creates_nothing_after_it(client, sqlite_store):
    csrf = login(client)
    saved = client.cookies.get(auth.SESSION_COOKIE)
    assert client.post("/settings/logout", data={"csrf": csrf}, headers=FORM, follow_redirects=False).status_code == 303
    client.cookies.clear()
    client.cookies.set(auth.SESSION_COOKIE, saved, path="/settings")  # the attacker replays the old cookie
    resp = client.post("/settings/tokens", data={"csrf": csrf, "name": "replayed"}, headers=FORM)
    assert resp.status_code in (401, 403)  # was 201 for up to 8 h
    assert sqlite_store.list() == []
    assert 'id="login-form"' in client.get("/settings").text


def test_logout_on_one_instance_ends_the_session_on_another(sqlite_store):
    """Two apps over one store stand for two workers (or two instances behind a balancer)."""
    one = create_app(store=sqlite_store, admin_secret=ADMIN_SECRET)
    two = create_app(store=sqlite_store, admin_secret=ADMIN_SECRET)
    with test_client(one) as a, test_client(two) as b:
        csrf = login(a)
        b.cookies.set(auth.SESSION_COOKIE, a.cookies.get(auth.SESSION_COOKIE), path="/settings")
        assert 'id="create-form"' in b.get("/settings").text  # the session holds on the other instance
        a.post("/settings/logout", data={"csrf": csrf}, headers=FORM, follow_redirects=False)
        assert b.post("/settings/tokens", data={"csrf": csrf, "name": "x"}, headers=FORM).status_code in (401, 403)
        assert 'id="login-form"' in b.get("/settings").text
    assert sqlite_store.list() == []


def test_sessions_live_in_the_store_as_hashes(sqlite_store):
    sid = sqlite_store.create_session(60)
    assert sqlite_store.session_active(sid)
    with sqlite3.connect(sqlite_store.path) as conn:
        rows = conn.execute("SELECT sid_hash FROM operator_sessions").fetchall()
    assert sid not in repr(rows) and len(rows) == 1
    sqlite_store.end_session(sid)
    assert not sqlite_store.session_active(sid)
    expired = sqlite_store.create_session(-1)
    assert not sqlite_store.session_active(expired)


# -- 10. a locked store never stalls a request or the event loop --------------------------------------

def test_a_write_lock_held_elsewhere_does_not_delay_requests(client, sqlite_store, auth_headers):
    """Another process holds the write lock (here: another connection, BEGIN IMMEDIATE). The token's
    last_used_at is stale, so the check wants to write it: that write waits in the background, and the
    request and /healthz answer at once (they waited the 10 s busy timeout, /healthz 5 s)."""
    from vramplan.catalog import get_catalog

    get_catalog()  # loaded before the clock starts
    blocker = sqlite3.connect(sqlite_store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.perf_counter()
        assert client.get(f"{PREFIX}/gpus", headers=auth_headers).status_code == 200
        assert client.get("/healthz").status_code == 200
        assert time.perf_counter() - t0 < 2
        assert blocker.execute("SELECT last_used_at FROM api_tokens").fetchall() == [(None,)]  # not written while locked
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    sqlite_store.flush()
    client.get(f"{PREFIX}/gpus", headers=auth_headers)
    sqlite_store.flush()
    assert sqlite_store.list()[0].last_used_at is not None  # written once the lock is gone


def test_a_read_that_would_wait_says_busy_at_once(sqlite_store, api_token):
    """A connection in exclusive locking mode blocks even WAL readers: the no-wait read raises at once
    (the server then asks again from a thread); the ordinary read would wait."""
    holder = sqlite3.connect(sqlite_store.path, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE api_tokens SET name = name")
    try:
        t0 = time.perf_counter()
        with pytest.raises(TokenStoreBusy):
            sqlite_store.verify(api_token, wait=False)
        assert time.perf_counter() - t0 < 1
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert sqlite_store.verify(api_token, wait=False).name == "test-client"


# -- 11. rate limits: Retry-After, per client, X-Forwarded-For only from named proxies ------------------

def test_login_429_carries_retry_after(client):
    csrf = csrf_of(client.get("/settings").text)
    for _ in range(LOGIN_ATTEMPTS_PER_5_MINUTES):
        client.post("/settings/login", data={"csrf": csrf, "secret": "guess"}, headers=FORM)
    resp = client.post("/settings/login", data={"csrf": csrf, "secret": "guess"}, headers=FORM)
    assert resp.status_code == 429
    assert 1 <= int(resp.headers["retry-after"]) <= 301


BAD = {"Authorization": "Bearer vp_wrong-token-000000000000000000000000000000000"}


def test_x_forwarded_for_is_ignored_unless_the_proxy_is_named(client):
    """A client cannot dodge the limit by inventing a new address per request."""
    statuses = [client.get(f"{PREFIX}/gpus", headers={**BAD, "X-Forwarded-For": f"203.0.113.{i}"}).status_code
                for i in range(25)]
    assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}


def test_behind_a_named_proxy_each_client_has_its_own_limit(sqlite_store, auth_headers):
    """Through the proxy (TestClient's peer is "testclient"), one client's failures lock out that
    client only; the proxy's other clients go on."""
    app = create_app(store=sqlite_store, admin_secret=ADMIN_SECRET, forwarded_allow_ips="testclient")
    with test_client(app) as c:
        bad = [c.get(f"{PREFIX}/gpus", headers={**BAD, "X-Forwarded-For": "198.51.100.7"}).status_code for _ in range(21)]
        assert bad[-1] == 429
        other = c.get(f"{PREFIX}/gpus", headers={**auth_headers, "X-Forwarded-For": "198.51.100.8"})
        assert other.status_code == 200
        # the proxy appends the peer it saw: the client's own claim to the left is not believed
        spoof = c.get(f"{PREFIX}/gpus", headers={**auth_headers, "X-Forwarded-For": "198.51.100.8, 198.51.100.7"})
        assert spoof.status_code == 429


def test_serve_takes_the_proxies_from_the_operator():
    from click.testing import CliRunner
    from vramplan.server.commands import serve

    help_text = CliRunner().invoke(serve, ["--help"]).output
    assert "--forwarded-allow-ips" in help_text and "X-Forwarded-For" in help_text


# -- 12 and the compatibility header: JSON errors, Prefer: handling=strict ---------------------------

def test_strict_preference_refuses_unknown_fields(client, auth_headers):
    body = {**SEED_INFERENCE_REQUEST, "batchsize": 4}
    lenient = client.post(f"{PREFIX}/inference", json=body, headers=auth_headers)
    assert lenient.status_code == 200
    assert "ignored unknown field batchsize (closest known field: batch_size)" in lenient.json()["warnings"]
    assert "preference-applied" not in lenient.headers
    for prefer in ("handling=strict", "respond-async, handling=strict", 'HANDLING="strict"; x=1'):
        strict = client.post(f"{PREFIX}/inference", json=body, headers={**auth_headers, "Prefer": prefer})
        assert strict.status_code == 422, prefer
        assert strict.json()["errors"] == [{"field": "batchsize", "message": "unknown field", "closest": ["batch_size"]}]
        assert strict.headers["preference-applied"] == "handling=strict"
    report = client.post(f"{PREFIX}/report?workload=inference&format=markdown", json=body,
                         headers={**auth_headers, "Prefer": "handling=strict"})
    assert report.status_code == 422


def test_strict_preference_applies_to_plan(client, auth_headers):
    body = {**SEED_INFERENCE_REQUEST, "find": ["max_seq_length"], "batchsize": 4}
    lenient = client.post(f"{PREFIX}/plan", json=body, headers=auth_headers)
    assert lenient.status_code == 200
    assert "ignored unknown field batchsize (closest known field: batch_size)" in \
        lenient.json()["max_seq_length"]["estimate"]["warnings"]
    strict = client.post(f"{PREFIX}/plan", json=body, headers={**auth_headers, "Prefer": "handling=strict"})
    assert strict.status_code == 422
    assert strict.json()["errors"] == [{"field": "batchsize", "message": "unknown field", "closest": ["batch_size"]}]
    assert strict.headers["preference-applied"] == "handling=strict"
    gpu_search = {k: v for k, v in body.items() if k != "gpu_key"} | {"find": ["gpus"]}  # the no-GPU branch
    assert client.post(f"{PREFIX}/plan", json=gpu_search,
                       headers={**auth_headers, "Prefer": "handling=strict"}).status_code == 422


def test_null_fields_are_absent_over_http(client, auth_headers):
    body = {**SEED_INFERENCE_REQUEST, "num_offload_layers": None, "custom_vram": None}
    resp = client.post(f"{PREFIX}/inference", json=body, headers=auth_headers)
    assert resp.status_code == 200  # was 422 "None is not of type 'integer'"


def test_a_missing_required_field_is_named_over_http(client, auth_headers):
    resp = client.post(f"{PREFIX}/inference", json={"llm_key": "llama-3-8b-instruct"}, headers=auth_headers)
    assert resp.status_code == 422 and resp.json()["errors"] == [{"field": "gpu_key", "message": "is required"}]


def test_a_content_length_that_is_not_a_number_is_json():
    """At the app (another server might pass it through): 400 JSON, not 413."""
    import json as _json

    from starlette.requests import Request
    from vramplan.server.api import read_json_object

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-type", b"application/json"),
                                                                        (b"content-length", b"-1")]}
    import asyncio

    resp = asyncio.run(read_json_object(Request(scope, receive)))
    assert resp.status_code == 400 and _json.loads(resp.body)["error"] == "BadRequest"


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


def test_requests_uvicorn_cannot_parse_get_the_json_error(tmp_path):
    """Content-Length: -1 was uvicorn's plain-text 400; the README promises JSON errors."""
    import json as _json

    with running_server(tmp_path) as (base, _env):
        port = int(base.rsplit(":", 1)[1])
        for head in (b"Content-Length: -1\r\n", b"Content-Length: abc\r\n", b"Bad Header\r\n"):
            raw = _raw(port, b"POST " + PREFIX.encode() + b"/inference HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Type: application/json\r\n" + head + b"\r\n")
            status, _, rest = raw.partition(b"\r\n")
            headers, _, body = rest.partition(b"\r\n\r\n")
            assert status.startswith(b"HTTP/1.1 400"), raw
            assert b"content-type: application/json" in headers.lower()
            assert _json.loads(body)["error"] == "BadRequest"


# -- CPU-heavy work off the event loop -----------------------------------------------------------------

def test_healthz_answers_while_the_worker_is_busy_with_the_largest_custom_models(tmp_path):
    """Thirty-two requests for the largest custom model the schema allows, with an offloading search
    each (tens of milliseconds of CPU apiece, seconds together on this 2-core machine), arrive at once;
    /healthz is asked meanwhile. With the estimates on the event loop it waited behind all of them;
    in the bounded thread pool it answers between two 5 ms GIL slices. benchmarks/busy_worker.py
    reports the latencies."""
    import asyncio

    import httpx
    from vramplan.configkeys import largest_config

    with running_server(tmp_path) as (base, env):
        from vramplan.server.tokens import open_store

        token = open_store(env["VRAMPLAN_DATABASE_URL"]).create("busy")
        body = {"gpu_key": "h100_80", "llm_key": "custom", "custom_model": largest_config(),
                "enable_offloading": True}
        headers = {"Authorization": f"Bearer {token}"}

        async def scenario():
            async with httpx.AsyncClient(base_url=base, timeout=120) as c:
                assert (await c.post(f"{PREFIX}/inference", json=body, headers=headers)).status_code == 200  # warm
                heavy = [asyncio.create_task(c.post(f"{PREFIX}/inference", json=body, headers=headers))
                         for _ in range(32)]
                await asyncio.sleep(0.3)
                latencies = []
                while not all(t.done() for t in heavy) or not latencies:
                    t0 = time.perf_counter()
                    assert (await c.get("/healthz")).status_code == 200
                    latencies.append((time.perf_counter() - t0, sum(not t.done() for t in heavy)))
                    await asyncio.sleep(0.05)
                statuses = [t.result().status_code for t in heavy]
                return latencies, statuses

        latencies, statuses = asyncio.run(scenario())
    assert statuses == [200] * 32
    busy = [lat for lat, pending in latencies if pending]
    assert busy, "no /healthz was answered while the heavy requests were in flight"
    assert max(busy) < 1.0, latencies


def test_cheap_estimates_stay_inline_and_heavy_ones_go_to_the_pool():
    from vramplan.server.api import _cheap

    assert _cheap("estimate_inference", (SEED_INFERENCE_REQUEST,))
    assert _cheap("list_gpus", ())
    assert not _cheap("estimate_inference", ({**SEED_INFERENCE_REQUEST, "llm_key": "custom", "custom_model": {}},))
    assert not _cheap("estimate_inference", ({**SEED_INFERENCE_REQUEST, "enable_offloading": True},))
    assert _cheap("estimate_inference", ({**SEED_INFERENCE_REQUEST, "enable_offloading": True, "num_offload_layers": 4},))
    # a fine-tuning estimate may replay its training run through the allocator model: off the event loop,
    # unless the request takes the fitted reserve
    tuning = {"gpu_key": "h100_80", "llm_key": "llama-3-8b", "finetuning_method": "lora", "batch_size": 4}
    assert not _cheap("estimate_finetuning", (tuning,))
    assert _cheap("estimate_finetuning", ({**tuning, "runtime_settings": {"train_reserve_simulation": 0}},))
    assert not _cheap("plan", ({},))
