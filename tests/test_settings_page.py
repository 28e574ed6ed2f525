"""/settings: operator login, CSRF, and token create/list/revoke through the forms."""

from __future__ import annotations

import re

import pytest
from server_fixtures import (  # noqa: F401
    ADMIN_SECRET,
    ORIGIN,
    PREFIX,
    app,
    client,
    csrf_of,
    isolated_data_dir,
    sqlite_store,
    test_client,
)
from vramplan.server import auth, create_app

FORM = {"Origin": ORIGIN}


def login(client) -> str:
    """Log in as the operator; returns the CSRF token of the logged-in session."""
    csrf = csrf_of(client.get("/settings").text)
    resp = client.post("/settings/login", data={"csrf": csrf, "secret": ADMIN_SECRET}, headers=FORM,
                       follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/settings"
    page = client.get("/settings")
    assert 'id="create-form"' in page.text
    return csrf_of(page.text)


def create(client, csrf, name):
    return client.post("/settings/tokens", data={"csrf": csrf, "name": name}, headers=FORM)


def test_settings_requires_login(client, sqlite_store):
    page = client.get("/settings")
    assert page.status_code == 200
    assert 'id="login-form"' in page.text and 'id="create-form"' not in page.text
    cookie = page.headers["set-cookie"]
    assert "vramplan_session=" in cookie and "HttpOnly" in cookie and "Path=/settings" in cookie
    assert "samesite=strict" in cookie.lower()
    # a logged-out session cannot create tokens, even with a valid CSRF token
    resp = create(client, csrf_of(page.text), "sneaky")
    assert resp.status_code == 401
    assert sqlite_store.list() == []


def test_wrong_secret_is_refused(client):
    csrf = csrf_of(client.get("/settings").text)
    resp = client.post("/settings/login", data={"csrf": csrf, "secret": "guess"}, headers=FORM)
    assert resp.status_code == 401 and "Wrong operator secret" in resp.text
    assert 'id="create-form"' not in client.get("/settings").text


def test_login_is_rate_limited(client):
    csrf = csrf_of(client.get("/settings").text)
    codes = [client.post("/settings/login", data={"csrf": csrf, "secret": "guess"}, headers=FORM).status_code
             for _ in range(11)]
    assert codes == [401] * 10 + [429]


def test_login_without_csrf_is_rejected(client):
    client.get("/settings")
    resp = client.post("/settings/login", data={"secret": ADMIN_SECRET}, headers=FORM, follow_redirects=False)
    assert resp.status_code == 403 and "CSRF" in resp.text


def test_create_list_revoke_through_the_forms(client, sqlite_store):
    csrf = login(client)
    resp = create(client, csrf, "ci-pipeline")
    assert resp.status_code == 201
    token = re.search(r'id="new-token-value">([^<]+)<', resp.text).group(1)
    assert sqlite_store.verify(token).name == "ci-pipeline"
    assert resp.headers["cache-control"] == "no-store"
    # the new token works against the API at once
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(f"{PREFIX}/llms", headers=headers).status_code == 200

    # listed by name, never shown again
    listing = client.get("/settings").text
    assert "ci-pipeline" in listing and token not in listing
    assert re.search(r'<td class="token-name">ci-pipeline</td>', listing)

    # revoke through the form: fails at once
    resp = client.post("/settings/tokens/revoke", data={"csrf": csrf, "name": "ci-pipeline"}, headers=FORM)
    assert resp.status_code == 200 and "Revoked" in resp.text
    assert sqlite_store.verify(token) is None
    assert client.get(f"{PREFIX}/llms", headers=headers).status_code == 401
    assert re.search(r'<tr class="revoked">\s*<td class="token-name">ci-pipeline</td>', client.get("/settings").text)


def test_duplicate_name_is_a_clear_error(client, sqlite_store):
    csrf = login(client)
    assert create(client, csrf, "dup").status_code == 201
    resp = create(client, csrf, "dup")
    assert resp.status_code == 409 and "already exists" in resp.text
    assert len(sqlite_store.list()) == 1


@pytest.mark.parametrize("csrf_value", [None, "", "forged-token"])
def test_forms_without_the_session_csrf_token_are_rejected(client, sqlite_store, csrf_value):
    login(client)
    data = {"name": "forged"}
    if csrf_value is not None:
        data["csrf"] = csrf_value
    resp = client.post("/settings/tokens", data=data, headers=FORM)
    assert resp.status_code == 403 and "CSRF" in resp.text
    assert sqlite_store.list() == []


def test_cross_origin_post_is_rejected_even_with_the_csrf_token(client, sqlite_store):
    csrf = login(client)
    resp = client.post("/settings/tokens", data={"csrf": csrf, "name": "x"},
                       headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert resp.status_code == 403
    assert sqlite_store.list() == []


def test_csrf_token_of_another_session_is_rejected(app, client, sqlite_store):
    with test_client(app) as other:
        other_csrf = login(other)
    login(client)
    assert create(client, other_csrf, "x").status_code == 403
    assert sqlite_store.list() == []


def test_json_or_multipart_posts_are_not_forms(client, sqlite_store):
    csrf = login(client)
    resp = client.post("/settings/tokens", json={"csrf": csrf, "name": "x"}, headers=FORM)
    assert resp.status_code == 403
    assert sqlite_store.list() == []


def test_logout(client, sqlite_store):
    csrf = login(client)
    resp = client.post("/settings/logout", data={"csrf": csrf}, headers=FORM, follow_redirects=False)
    assert resp.status_code == 303
    page = client.get("/settings")
    assert 'id="login-form"' in page.text
    assert create(client, csrf_of(page.text), "after-logout").status_code == 401
    assert sqlite_store.list() == []


def test_tampered_or_foreign_session_cookie_is_not_logged_in(client, sqlite_store):
    login(client)
    value = client.cookies.get(auth.SESSION_COOKIE)
    forged = auth.Signer("another-secret", "settings-session").sign(
        {"sid": "x", "csrf": "c", "operator": True}, ttl=3600)
    for bad in (value[:-3] + "abc", forged):
        client.cookies.clear()
        client.cookies.set(auth.SESSION_COOKIE, bad, path="/settings")
        assert 'id="login-form"' in client.get("/settings").text


def test_expired_session_is_not_logged_in(client, monkeypatch):
    login(client)
    import time

    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + auth.SESSION_TTL + 10)
    assert 'id="login-form"' in client.get("/settings").text


def test_settings_pages_have_security_headers(client):
    resp = client.get("/settings")
    assert resp.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
    assert "form-action 'self'" in resp.headers["content-security-policy"]


def test_operator_secret_generated_at_first_start(isolated_data_dir, sqlite_store, capsys):
    first = create_app(store=sqlite_store)
    secret_file = auth.admin_secret_path()
    assert str(secret_file).startswith(str(isolated_data_dir))
    secret = secret_file.read_text().strip()
    assert len(secret) >= 43 and first.state.admin_secret == secret
    assert secret_file.stat().st_mode & 0o077 == 0
    err = capsys.readouterr().err
    assert str(secret_file) in err and secret not in err  # says where, never what
    # the next start reuses it, silently
    assert create_app(store=sqlite_store).state.admin_secret == secret
    assert capsys.readouterr().err == ""


def test_operator_secret_from_environment(monkeypatch, sqlite_store):
    monkeypatch.setenv("VRAMPLAN_ADMIN_SECRET", "from-env-secret")
    assert create_app(store=sqlite_store).state.admin_secret == "from-env-secret"
    assert not auth.admin_secret_path().exists()
