"""Click commands for the server: ``serve`` and the ``tokens`` group.

Standalone click objects: the main CLI (``vramplan.cli:main``) attaches them with
``main.add_command(serve)`` and ``main.add_command(tokens)``; ``python -m vramplan.server`` runs
them on their own.
"""

from __future__ import annotations

import contextlib
import json
import sys

import click

from .tokens import TokenStoreError, open_store


def _fail(message: str) -> None:
    """Bad input: one line on stderr, exit status 2 (as every vramplan command does)."""
    click.echo(f"vramplan: error: {message}", err=True)
    sys.exit(2)


def _store():
    try:
        return open_store()
    except TokenStoreError as exc:
        _fail(str(exc))


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Worker processes (they share the token store and the operator secret).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--forwarded-allow-ips", envvar="VRAMPLAN_FORWARDED_ALLOW_IPS", default="", metavar="IPS",
              help="Comma-separated addresses or networks of the reverse proxies in front of the server; requests "
                   "from them are counted against the client their X-Forwarded-For names (rate limits). "
                   "Default: none (the header is ignored).")
def serve(host: str, port: int, workers: int, log_level: str, forwarded_allow_ips: str) -> None:
    """Run the HTTP API, the calculator page (/), the API docs (/docs) and token settings (/settings).

    Tokens live in $VRAMPLAN_DATABASE_URL (default: a SQLite file in the user data directory).
    The /settings page asks for the operator secret: $VRAMPLAN_ADMIN_SECRET, or a secret generated
    at first start and stored in the user data directory (its path is printed then).
    The calculator page calls the API with a short-lived page session; VRAMPLAN_PAGE_SESSIONS=0
    makes it ask for a token instead.
    """
    import os

    import uvicorn

    from ..catalog import get_catalog
    from ..errors import VramplanError
    from .app import FORWARDED_ALLOW_IPS_ENV
    from .auth import ADMIN_SECRET_ENV, admin_secret_path, load_admin_secret
    from .protocol import json_errors_protocol

    _store().close()  # fail early on a bad database URL, and create the schema once, before workers fork
    try:  # fail loudly on broken data (a formula folder in VRAMPLAN_FORMULA_PATH, a catalog), naming the file
        get_catalog()
    except VramplanError as exc:
        _fail(f"the catalog does not load: {exc}")
    load_admin_secret()  # generated (and its path announced) here, before workers start
    if forwarded_allow_ips.strip():
        os.environ[FORWARDED_ALLOW_IPS_ENV] = forwarded_allow_ips.strip()  # every worker's app reads it

    where = f"${ADMIN_SECRET_ENV}" if os.environ.get(ADMIN_SECRET_ENV, "").strip() else str(admin_secret_path())
    click.echo(f"vramplan: serving on http://{host}:{port}/ (API docs /docs, tokens /settings; "
               f"operator secret from {where})", err=True)
    with tcp_nodelay_for_workers():
        uvicorn.run("vramplan.server.app:app_from_env", factory=True, host=host, port=port,
                    workers=workers, log_level=log_level, server_header=False, proxy_headers=False,
                    http=json_errors_protocol())


@contextlib.contextmanager
def tcp_nodelay_for_workers():
    """Make ``uvicorn --workers N`` listen with ``IPPROTO_TCP``, so connections get TCP_NODELAY.

    With several workers uvicorn binds the listening socket itself with ``proto`` 0; accepted
    sockets inherit it and asyncio (and uvloop) then skip TCP_NODELAY, so on Linux every
    keep-alive response waits ~40 ms for the client's delayed ACK (Kludex/uvicorn#3149): a 2-worker
    server answered each request in 44 ms instead of 1-2 ms. The listener is re-wrapped (same
    file descriptor) as IPPROTO_TCP; a no-op where uvicorn already does that.
    """
    import socket

    from uvicorn.config import Config

    original = Config.bind_socket

    def bind_socket(self):
        sock = original(self)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto != socket.IPPROTO_TCP:
            sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
            sock.set_inheritable(True)
        return sock

    Config.bind_socket = bind_socket
    try:
        yield
    finally:
        Config.bind_socket = original


@click.group()
def tokens() -> None:
    """Create, list and revoke API tokens (stored as hashes in $VRAMPLAN_DATABASE_URL)."""


@tokens.command("create")
@click.option("--name", required=True, help="A unique name for the token (who or what uses it).")
def tokens_create(name: str) -> None:
    """Create a token and print it, alone on stdout. It is shown only this once."""
    store = _store()
    try:
        token = store.create(name)
    except TokenStoreError as exc:
        _fail(str(exc))
    finally:
        store.close()
    click.echo(token)
    click.echo(f"vramplan: created token {name.strip()!r}; store it now, it cannot be shown again", err=True)


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def tokens_list(as_json: bool) -> None:
    """List tokens: name, created, last used, status (never the tokens themselves)."""
    store = _store()
    try:
        rows = store.list()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([row.as_dict() for row in rows], indent=2))
        return
    if not rows:
        click.echo("no tokens; create one with: vramplan tokens create --name NAME", err=True)
        return
    table = [("NAME", "CREATED", "LAST USED", "STATUS")] + [
        (r.name, r.created_at, r.last_used_at or "never", f"revoked {r.revoked_at}" if r.revoked else "active")
        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@tokens.command("revoke")
@click.option("--name", required=True, help="Name of the active token to revoke.")
def tokens_revoke(name: str) -> None:
    """Revoke a token; requests with it fail from now on."""
    store = _store()
    try:
        store.revoke(name)
    except TokenStoreError as exc:
        _fail(str(exc))
    finally:
        store.close()
    click.echo(f"revoked {name.strip()!r}", err=True)


@click.group()
def server_cli() -> None:
    """vramplan's server commands."""


server_cli.add_command(serve)
server_cli.add_command(tokens)
