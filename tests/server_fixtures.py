"""Fixtures shared by the server tests: isolated data dir, token stores (SQLite and a throwaway
PostgreSQL), the app under TestClient, and a real ``vramplan serve`` process for the browser test.

Import what a test module needs: ``from server_fixtures import app_client, api_token, ...``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from vramplan.server import create_app
from vramplan.server.tokens import SQLiteTokenStore

ADMIN_SECRET = "operator-secret-for-tests-0123456789"
PREFIX = "/api/v1/vram-calculation"
ORIGIN = "http://testserver"

# The seed's example bodies, verbatim.
SEED_INFERENCE_REQUEST = {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m",
                          "batch_size": 1, "seq_length": 2048}
SEED_FINETUNING_REQUEST = {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "finetuning_method": "lora",
                           "lora_rank": 16, "batch_size": 4, "seq_length": 2048}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field in the page"
    return match.group(1)


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path, monkeypatch):
    """Never touch the real user data dir; no operator secret or database URL from the environment."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.delenv("VRAMPLAN_DATABASE_URL", raising=False)
    monkeypatch.delenv("VRAMPLAN_ADMIN_SECRET", raising=False)
    return tmp_path / "xdg-data"


@pytest.fixture
def sqlite_store(tmp_path):
    return SQLiteTokenStore(tmp_path / "tokens.db")


@pytest.fixture
def app(sqlite_store):
    return create_app(store=sqlite_store, admin_secret=ADMIN_SECRET)


def test_client(app):
    """Starlette's TestClient (its 'use httpx2' deprecation notice is not ours to act on)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx2.*")
        from starlette.testclient import TestClient

    return TestClient(app, raise_server_exceptions=False)


test_client.__test__ = False  # a helper, not a test


@pytest.fixture
def client(app):
    with test_client(app) as c:
        yield c


@pytest.fixture
def api_token(sqlite_store):
    return sqlite_store.create("test-client")


@pytest.fixture
def auth_headers(api_token):
    return {"Authorization": f"Bearer {api_token}"}


# -- a throwaway PostgreSQL server --------------------------------------------------------------

def _pg_bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(re.search(r"/(\d+)/bin", p).group(1)))
    if found:
        return str(Path(found[-1]).parent)
    initdb = shutil.which("initdb")
    return str(Path(initdb).parent) if initdb else None


def _as_postgres_user(argv: list[str]) -> list[str]:
    """initdb refuses to run as root (CI runs as root): run the server binaries as `postgres`."""
    if os.geteuid() != 0:
        return argv
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *argv]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in argv)]


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server on 127.0.0.1:<free port> in a temp dir, for this test session only."""
    pytest.importorskip("psycopg", reason="psycopg not installed (pip install 'vramplan[postgres]')")
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (Debian: apt-get install postgresql); "
                    "CI installs them")
    if os.geteuid() == 0:
        import pwd

        try:
            pg_user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run initdb as")
    base = tempfile.mkdtemp(prefix="vramplan-pg-")
    if os.geteuid() == 0:
        os.chown(base, pg_user.pw_uid, pg_user.pw_gid)
    data, port = os.path.join(base, "data"), free_port()
    log = os.path.join(base, "server.log")
    subprocess.run(_as_postgres_user([f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres",
                                      "--no-sync", "-E", "UTF8"]),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    subprocess.run(_as_postgres_user([f"{bindir}/pg_ctl", "-D", data, "-l", log, "-o", options,
                                      "-w", "-t", "60", "start"]),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=90)
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        yield url
    finally:
        subprocess.run(_as_postgres_user([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_store(postgres_url):
    """A PostgresTokenStore on an emptied table."""
    import psycopg
    from vramplan.server.tokens import PostgresTokenStore

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS api_tokens")
    store = PostgresTokenStore(postgres_url)
    yield store
    store.close()


# -- a real server process ----------------------------------------------------------------------

@contextlib.contextmanager
def running_server(tmp_path, **extra_env):
    """`python -m vramplan.server serve` on a free loopback port; yields (base_url, env)."""
    import httpx

    port = free_port()
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg"), "VRAMPLAN_ADMIN_SECRET": ADMIN_SECRET,
           "VRAMPLAN_DATABASE_URL": f"sqlite:///{tmp_path / 'live.db'}", **extra_env}
    proc = subprocess.Popen([sys.executable, "-m", "vramplan.server", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.stdout.read().decode(errors="replace")
            pytest.fail(f"vramplan serve did not come up:\n{out}")
        time.sleep(0.1)
    try:
        yield base, env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def live_server(tmp_path):
    with running_server(tmp_path) as server:
        yield server
