"""The token store, against SQLite and against a real PostgreSQL server, and the `tokens` CLI."""

from __future__ import annotations

import sqlite3
import sys
import threading

import pytest
from click.testing import CliRunner
from server_fixtures import isolated_data_dir, postgres_store, postgres_url, sqlite_store  # noqa: F401
from vramplan.server.commands import tokens
from vramplan.server.tokens import (
    SQLiteTokenStore,
    TokenStoreError,
    default_database_path,
    hash_token,
    open_store,
)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request):
    return request.getfixturevalue(f"{request.param}_store")


def all_rows(store) -> list[tuple]:
    def select(cur):
        cur.execute("SELECT * FROM api_tokens")
        return cur.fetchall()

    return store._run(select)


def test_token_is_random_with_at_least_32_bytes_of_entropy(store):
    a, b = store.create("a"), store.create("b")
    assert a != b
    # "vp_" + token_urlsafe(32): 32 random bytes = 43 base64url characters.
    assert a.startswith("vp_") and len(a) - 3 >= 43
    assert set(a[3:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_only_the_hash_is_stored(store):
    token = store.create("ci")
    dump = repr(all_rows(store))
    assert token not in dump
    assert token[3:] not in dump
    assert hash_token(token) in dump


def test_verify_accepts_the_token_and_records_last_use(store):
    token = store.create("ci")
    assert store.list()[0].last_used_at is None
    info = store.verify(token)
    assert info is not None and info.name == "ci" and not info.revoked
    [listed] = store.list()
    assert listed.last_used_at is not None and listed.created_at is not None


@pytest.mark.parametrize("bad", ["", "vp_", "wrong", "vp_" + "A" * 43, "x" * 5000])
def test_verify_rejects_unknown_tokens(store, bad):
    store.create("ci")
    assert store.verify(bad) is None


def test_a_revoked_token_fails_at_once(store):
    token = store.create("ci")
    assert store.verify(token) is not None
    info = store.revoke("ci")
    assert info.revoked and info.revoked_at
    assert store.verify(token) is None
    [listed] = store.list()
    assert listed.revoked and listed.name == "ci"


def test_duplicate_active_name_is_a_clear_error_and_a_revoked_name_can_be_reused(store):
    first = store.create("ci")
    with pytest.raises(TokenStoreError, match="'ci' already exists"):
        store.create("ci")
    store.revoke("ci")
    second = store.create("ci")
    assert store.verify(first) is None
    assert store.verify(second).name == "ci"
    assert [(t.name, t.revoked) for t in store.list()] == [("ci", True), ("ci", False)]


def test_revoking_an_unknown_or_already_revoked_name_fails(store):
    with pytest.raises(TokenStoreError, match="no active token named 'nobody'"):
        store.revoke("nobody")
    store.create("ci")
    store.revoke("ci")
    with pytest.raises(TokenStoreError):
        store.revoke("ci")


@pytest.mark.parametrize("name", ["", "   ", "a" * 101, "tab\tname"])
def test_bad_names_are_refused(store, name):
    with pytest.raises(TokenStoreError):
        store.create(name)


def test_two_store_instances_share_tokens(store):
    """Several server instances (or workers) pointed at one database see each other's changes."""
    other = open_store(store.url) if hasattr(store, "url") else SQLiteTokenStore(store.path)
    try:
        token = store.create("shared")
        assert other.verify(token).name == "shared"
        other.revoke("shared")
        assert store.verify(token) is None
    finally:
        other.close()


def test_concurrent_creates_from_threads(store):
    errors, tokens_made = [], []

    def make(i):
        try:
            tokens_made.append(store.create(f"t{i}"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=make, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(t.name for t in store.list()) == sorted(f"t{i}" for i in range(8))
    assert all(store.verify(t) is not None for t in tokens_made)


# -- SQLite specifics and URL handling ----------------------------------------------------------

def test_sqlite_uses_wal_and_a_private_file(sqlite_store):
    conn = sqlite3.connect(sqlite_store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert sqlite_store.path.stat().st_mode & 0o077 == 0


def test_default_store_is_a_sqlite_file_in_the_user_data_dir(isolated_data_dir):
    store = open_store()
    assert isinstance(store, SQLiteTokenStore)
    assert store.path == default_database_path()
    assert str(store.path).startswith(str(isolated_data_dir))
    assert store.path.exists()


def test_database_url_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("VRAMPLAN_DATABASE_URL", f"sqlite:///{tmp_path}/env.db")
    assert open_store().path == tmp_path / "env.db"
    assert open_store(str(tmp_path / "plain.db")).path == tmp_path / "plain.db"


def test_unsupported_url_scheme():
    with pytest.raises(TokenStoreError, match="unsupported scheme 'mysql'"):
        open_store("mysql://localhost/x")


def test_postgres_url_without_psycopg_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(TokenStoreError, match=r"pip install 'vramplan\[postgres\]'"):
        open_store("postgresql://localhost/vramplan")


def test_postgres_store_repr_hides_the_url(postgres_store, postgres_url):
    assert postgres_url not in repr(postgres_store)


# -- the CLI ------------------------------------------------------------------------------------

@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    monkeypatch.setenv("VRAMPLAN_DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    return CliRunner()


def test_cli_create_prints_the_token_alone_on_stdout(cli_env):
    result = cli_env.invoke(tokens, ["create", "--name", "laptop"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    assert token.startswith("vp_")
    assert open_store().verify(token).name == "laptop"
    assert "cannot be shown again" in result.stderr


def test_cli_list_shows_names_never_tokens(cli_env):
    token = cli_env.invoke(tokens, ["create", "--name", "laptop"]).stdout.strip()
    listed = cli_env.invoke(tokens, ["list"])
    assert listed.exit_code == 0
    assert "laptop" in listed.stdout and "active" in listed.stdout and token not in listed.output
    as_json = cli_env.invoke(tokens, ["list", "--json"])
    assert '"name": "laptop"' in as_json.stdout and token not in as_json.stdout


def test_cli_revoke_and_errors_exit_2(cli_env):
    token = cli_env.invoke(tokens, ["create", "--name", "laptop"]).stdout.strip()
    duplicate = cli_env.invoke(tokens, ["create", "--name", "laptop"])
    assert duplicate.exit_code == 2 and "already exists" in duplicate.stderr and duplicate.stdout == ""
    assert cli_env.invoke(tokens, ["revoke", "--name", "laptop"]).exit_code == 0
    assert open_store().verify(token) is None
    assert "revoked" in cli_env.invoke(tokens, ["list"]).stdout
    again = cli_env.invoke(tokens, ["revoke", "--name", "laptop"])
    assert again.exit_code == 2 and "no active token named 'laptop'" in again.stderr


def test_cli_bad_database_url_exits_2(monkeypatch):
    monkeypatch.setenv("VRAMPLAN_DATABASE_URL", "mysql://x/y")
    result = CliRunner().invoke(tokens, ["list"])
    assert result.exit_code == 2 and "unsupported scheme" in result.stderr


def test_operator_sessions_in_postgres(postgres_store):
    """Logout ends a session for every instance sharing the database (issue 12, item 8)."""
    sid = postgres_store.create_session(60)
    assert postgres_store.session_active(sid) and not postgres_store.session_active(sid + "x")
    postgres_store.end_session(sid)
    assert not postgres_store.session_active(sid)


def test_a_busy_local_read_is_retried_from_a_thread_that_waits_for_the_lock():
    # The server reads a SQLite token without waiting (the event loop must not block). When that read finds the
    # file locked, the retry runs on a worker thread and waits for the lock there: a second no-wait read could
    # fail the same way and turn a valid token into a 503 (tests/test_hub.py met one, behind a last_used_at write).
    import asyncio

    from vramplan.server import api
    from vramplan.server.tokens import TokenStoreBusy

    calls = []

    class LockedOnce:
        local_reads = True

        def verify(self, token, *, wait=True, read_wait=None):
            calls.append((wait, read_wait, threading.current_thread() is threading.main_thread()))
            if not read_wait:
                raise TokenStoreBusy("database is locked")
            return "the token's record"

    assert asyncio.run(api._verify(LockedOnce(), "vp_token")) == "the token's record"
    # first on the loop without waiting, then on a worker thread waiting for the read (the write stays in the background)
    assert calls == [(False, None, True), (False, True, False)]
