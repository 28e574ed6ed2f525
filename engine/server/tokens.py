"""API tokens: random secrets shown once, stored only as a SHA-256 hash.

One small interface (:class:`TokenStore`) with two implementations: SQLite (the default, a file in
the user's data directory, WAL mode) and PostgreSQL (``postgresql://`` URLs, via psycopg 3, for
several server instances behind a load balancer sharing one store). The SQL is the same for both;
only the connection and the placeholder style differ.

Tokens carry >= 256 bits of entropy, so a plain SHA-256 is the right hash (a slow password hash
buys nothing against a 2^256 search and would cost every request). Lookup is by hash, never by
the token itself, so no comparison ever touches the secret; the final equality check on the hash
uses :func:`hmac.compare_digest` anyway.

The store also holds the operator's ``/settings`` sessions (``operator_sessions``: the hash of a
random session id and its expiry), so logging out ends a session for every worker and every
instance that shares the store, however long the signed cookie would still be valid.

The server checks tokens with ``verify(token, wait=False)``: a read that never waits on a lock
(:class:`TokenStoreBusy` if it would; the server then retries in a thread) and a ``last_used_at``
write done by a background thread, skipped when the database stays busy. A write lock held by
another process therefore never stalls a request or the event loop.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

log = logging.getLogger("vramplan.server")

TOKEN_PREFIX = "vp_"
#: last_used_at is written at most this often per token, so a busy client is not a write per request.
LAST_USED_RESOLUTION = timedelta(seconds=60)
MAX_NAME_LENGTH = 100


class TokenStoreError(Exception):
    """A token operation that cannot be done as asked (duplicate name, unknown name, bad URL)."""


class TokenStoreBusy(Exception):
    """A read asked not to wait found the database locked (try again in a thread)."""


@dataclass(frozen=True)
class TokenInfo:
    """What the store knows about a token; never the token itself."""

    id: int
    name: str
    created_at: str
    last_used_at: str | None
    revoked: bool
    revoked_at: str | None

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "revoked": self.revoked,
            "revoked_at": self.revoked_at,
        }


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _iso(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return str(value)


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise TokenStoreError("a token needs a name")
    if len(name) > MAX_NAME_LENGTH or any(ord(c) < 32 for c in name):
        raise TokenStoreError(f"token name must be 1-{MAX_NAME_LENGTH} printable characters")
    return name


_COLUMNS = "id, name, created_at, last_used_at, revoked, revoked_at"


class TokenStore:
    """Create, list, revoke and verify API tokens. Subclasses supply a connection and a placeholder."""

    placeholder = "?"
    _schema: tuple[str, ...] = ()
    #: True if :meth:`verify` is a local read of microseconds (the server then calls it without a thread hop)
    local_reads = False
    _touch_lock = threading.Lock()  # replaced per instance by _init_background

    def _init_background(self) -> None:
        self._touch_lock = threading.Lock()
        self._pending: set = set()
        self._toucher: ThreadPoolExecutor | None = None

    # -- subclass hooks -------------------------------------------------------------------------
    def _connect(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _now(self):
        """The current time as the driver wants it."""
        return datetime.now(timezone.utc)

    def _is_unique_violation(self, exc: Exception) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def _run(self, fn):
        """Run ``fn(cursor)`` in one transaction and return its result."""
        raise NotImplementedError  # pragma: no cover

    def _read(self, fn):
        """Run the read-only ``fn(cursor)`` (one statement sees the latest commit). Default: as :meth:`_run`."""
        return self._run(fn)

    def _read_nowait(self, fn):
        """As :meth:`_read`, but raise :class:`TokenStoreBusy` instead of waiting for a lock."""
        return self._read(fn)

    def _touch_later(self, fn) -> None:
        """Run the write ``fn(cursor)`` on the store's background thread, once per pending key; a
        failure (the database stays locked) only skips this ``last_used_at`` update."""
        key = getattr(fn, "key", None)
        with self._touch_lock:
            if key in self._pending:
                return
            self._pending.add(key)
            if self._toucher is None:
                self._toucher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vramplan-last-used")
            toucher = self._toucher

        def run():
            try:
                self._run(fn, wait_s=2.0)
            except Exception as exc:  # busy or down: last_used_at is a convenience, the request went on
                log.debug("last_used_at update skipped: %s", type(exc).__name__)
            finally:
                with self._touch_lock:
                    self._pending.discard(key)

        toucher.submit(run)

    def flush(self) -> None:
        """Wait for background ``last_used_at`` writes (tests, shutdown)."""
        with self._touch_lock:
            toucher, self._toucher = self._toucher, None
        if toucher is not None:
            toucher.shutdown(wait=True)

    def close(self) -> None:
        self.flush()

    # -- the interface --------------------------------------------------------------------------
    def _sql(self, text: str) -> str:
        return text.replace("?", self.placeholder)

    def create(self, name: str) -> str:
        """Store a new token under ``name`` and return it; this is the only time it is seen."""
        name = _check_name(name)
        token = new_token()
        now = self._now()

        def insert(cur):
            cur.execute(self._sql("INSERT INTO api_tokens (name, token_hash, created_at, revoked) "
                                  "VALUES (?, ?, ?, FALSE)"), (name, hash_token(token), now))

        try:
            self._run(insert)
        except Exception as exc:
            if self._is_unique_violation(exc):
                raise TokenStoreError(f"a token named {name!r} already exists; revoke it first "
                                      "or choose another name") from None
            raise
        return token

    def list(self) -> list[TokenInfo]:
        def select(cur):
            cur.execute(f"SELECT {_COLUMNS} FROM api_tokens ORDER BY created_at, id")
            return cur.fetchall()

        return [self._info(row) for row in self._run(select)]

    def revoke(self, name: str) -> TokenInfo:
        """Revoke the active token called ``name``; it fails from the next request on."""
        name = _check_name(name)
        now = self._now()

        def update(cur):
            cur.execute(self._sql("UPDATE api_tokens SET revoked = TRUE, revoked_at = ? "
                                  "WHERE name = ? AND revoked = FALSE"), (now, name))
            if cur.rowcount != 1:
                return None
            cur.execute(self._sql(f"SELECT {_COLUMNS} FROM api_tokens WHERE name = ? "
                                  "ORDER BY id DESC"), (name,))
            return cur.fetchone()

        row = self._run(update)
        if row is None:
            raise TokenStoreError(f"no active token named {name!r}")
        return self._info(row)

    def verify(self, token: str, *, wait: bool = True, read_wait: bool | None = None) -> TokenInfo | None:
        """The token's record if ``token`` is a live token, else None. Updates last_used_at.

        Every request calls this, so the common case is one indexed read and no write: last_used_at
        is written (in its own transaction) only when it is older than :data:`LAST_USED_RESOLUTION`.
        A revocation committed by any process is seen by the next read. With ``wait=False`` (the
        server) the read raises :class:`TokenStoreBusy` rather than wait for a lock, and the write is
        left to a background thread (skipped if the database stays busy); ``read_wait`` overrides the
        read's waiting alone (the server's retry from a worker thread waits for the lock).
        """
        if not token or len(token) > 200:
            return None
        digest = hash_token(token)

        def lookup(cur):
            cur.execute(self._sql(f"SELECT {_COLUMNS}, token_hash FROM api_tokens WHERE token_hash = ?"),
                        (digest,))
            return cur.fetchone()

        row = self._read(lookup) if (wait if read_wait is None else read_wait) else self._read_nowait(lookup)
        if row is None or not hmac.compare_digest(str(row[6]), digest) or row[4]:
            return None
        now = self._now()
        stale = now - LAST_USED_RESOLUTION if isinstance(now, datetime) else _iso_minus(now)
        if row[3] is None or row[3] < stale:
            def touch(cur):
                cur.execute(self._sql("UPDATE api_tokens SET last_used_at = ? WHERE id = ? "
                                      "AND (last_used_at IS NULL OR last_used_at < ?)"), (now, row[0], stale))

            touch.key = ("last_used", row[0])
            if wait:
                self._run(touch)
            else:
                self._touch_later(touch)
            row = (*row[:3], now, *row[4:])
        return self._info(row[:6])

    # -- operator sessions ----------------------------------------------------------------------
    def create_session(self, ttl_s: int) -> str:
        """Start an operator session valid ``ttl_s`` seconds; returns its id (stored only as a hash)."""
        sid = secrets.token_urlsafe(32)
        now = self._now()
        expires = _later(now, ttl_s)

        def insert(cur):
            cur.execute(self._sql("DELETE FROM operator_sessions WHERE expires_at < ?"), (now,))
            cur.execute(self._sql("INSERT INTO operator_sessions (sid_hash, created_at, expires_at) VALUES (?, ?, ?)"),
                        (hash_token(sid), now, expires))

        self._run(insert)
        return sid

    def session_active(self, sid: str) -> bool:
        """True if ``sid`` is a session that was started, has not ended and has not expired."""
        if not isinstance(sid, str) or not sid or len(sid) > 200:
            return False
        digest, now = hash_token(sid), self._now()

        def lookup(cur):
            cur.execute(self._sql("SELECT sid_hash FROM operator_sessions WHERE sid_hash = ? AND expires_at >= ?"),
                        (digest, now))
            return cur.fetchone()

        row = self._read(lookup)
        return row is not None and hmac.compare_digest(str(row[0]), digest)

    def end_session(self, sid: str) -> None:
        """End a session (logout): no worker or instance accepts its cookie afterwards."""
        if not isinstance(sid, str) or not sid:
            return

        def delete(cur):
            cur.execute(self._sql("DELETE FROM operator_sessions WHERE sid_hash = ?"), (hash_token(sid),))

        self._run(delete)

    @staticmethod
    def _info(row) -> TokenInfo:
        return TokenInfo(id=int(row[0]), name=row[1], created_at=_iso(row[2]),
                         last_used_at=_iso(row[3]), revoked=bool(row[4]), revoked_at=_iso(row[5]))


def _iso_minus(now: str) -> str:
    when = datetime.fromisoformat(now.replace("Z", "+00:00")) - LAST_USED_RESOLUTION
    return _iso(when)


def _later(now, seconds: int):
    """``now`` plus ``seconds``, in the driver's representation of ``now``."""
    if isinstance(now, datetime):
        return now + timedelta(seconds=seconds)
    return _iso(datetime.fromisoformat(now.replace("Z", "+00:00")) + timedelta(seconds=seconds))


class SQLiteTokenStore(TokenStore):
    """Tokens in one SQLite file (WAL mode: readers never block the writer; several processes share it)."""

    local_reads = True

    _schema = (
        """CREATE TABLE IF NOT EXISTS api_tokens (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            last_used_at TEXT,
            revoked BOOLEAN NOT NULL DEFAULT FALSE,
            revoked_at TEXT)""",
        "CREATE UNIQUE INDEX IF NOT EXISTS api_tokens_active_name ON api_tokens (name) WHERE revoked = FALSE",
        """CREATE TABLE IF NOT EXISTS operator_sessions (
            sid_hash TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL)""",
    )

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._readers = threading.local()
        self._init_background()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            with conn:
                for statement in self._schema:
                    conn.execute(statement)
        finally:
            conn.close()
        try:
            os.chmod(self.path, 0o600)
        except OSError:
            pass

    def _connect(self, wait_s: float = 10.0):
        # A connection per write: cheap for SQLite, and safe across threads and worker processes.
        conn = sqlite3.connect(self.path, timeout=wait_s, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(wait_s * 1000)}")
        return conn

    def _read(self, fn, *, wait: bool = True):
        # Reads (every request's token check) reuse one autocommit connection per thread: no
        # connect, no write lock, and in WAL mode not blocked by a writer. Each SELECT is its own
        # implicit transaction, so it sees every commit made before it, from any process. The
        # no-wait connection answers SQLITE_BUSY at once where the other would wait 10 s.
        name = "conn" if wait else "conn_nowait"
        conn = getattr(self._readers, name, None)
        if conn is None:
            conn = self._connect(10.0 if wait else 0.0)
            setattr(self._readers, name, conn)
        if wait:
            return fn(conn.cursor())
        try:
            return fn(conn.cursor())
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise TokenStoreBusy(str(exc)) from None
            raise

    def _read_nowait(self, fn):
        return self._read(fn, wait=False)

    def _now(self) -> str:
        return _iso(datetime.now(timezone.utc))

    def _is_unique_violation(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    def _run(self, fn, wait_s: float = 10.0):
        conn = self._connect(wait_s)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.cursor()
                result = fn(cur)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result
        finally:
            conn.close()

    def __repr__(self) -> str:
        return f"SQLiteTokenStore({str(self.path)!r})"


class PostgresTokenStore(TokenStore):
    """Tokens in PostgreSQL, shared by every server instance pointed at the same database."""

    placeholder = "%s"
    _schema = (
        """CREATE TABLE IF NOT EXISTS api_tokens (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            name TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created_at TIMESTAMPTZ NOT NULL,
            last_used_at TIMESTAMPTZ,
            revoked BOOLEAN NOT NULL DEFAULT FALSE,
            revoked_at TIMESTAMPTZ)""",
        "CREATE UNIQUE INDEX IF NOT EXISTS api_tokens_active_name ON api_tokens (name) WHERE revoked = FALSE",
        """CREATE TABLE IF NOT EXISTS operator_sessions (
            sid_hash TEXT PRIMARY KEY,
            created_at TIMESTAMPTZ NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL)""",
    )
    #: pg_advisory_xact_lock key so that instances starting together do not race on CREATE TABLE.
    _LOCK_KEY = 0x7672616D  # "vram"

    def __init__(self, url: str):
        try:
            import psycopg
        except ImportError:
            raise TokenStoreError(
                "VRAMPLAN_DATABASE_URL is a PostgreSQL URL but psycopg is not installed; "
                "install it with: pip install 'vramplan[postgres]'") from None
        self._psycopg = psycopg
        self.url = url
        self._init_background()
        self._lock = threading.Lock()
        self._conn = None
        self._run(self._create_schema)

    def _create_schema(self, cur):
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._LOCK_KEY,))
        for statement in self._schema:
            cur.execute(statement)

    def _connect(self):
        return self._psycopg.connect(self.url, connect_timeout=10)

    def _is_unique_violation(self, exc: Exception) -> bool:
        return isinstance(exc, self._psycopg.errors.UniqueViolation)

    def _run(self, fn, wait_s: float | None = None):
        # One connection per store, serialized by a lock; reconnect once if the server dropped it.
        with self._lock:
            for attempt in (1, 2):
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                try:
                    with self._conn.transaction():
                        with self._conn.cursor() as cur:
                            return fn(cur)
                except self._psycopg.OperationalError:
                    if attempt == 2 or not self._conn.closed:
                        raise
                    self._conn = None

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return "PostgresTokenStore(<url hidden>)"


def default_database_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("vramplan")) / "vramplan.db"


def open_store(url: str | None = None) -> TokenStore:
    """The store named by ``url``, ``$VRAMPLAN_DATABASE_URL``, or a SQLite file in the data dir.

    Accepted: ``postgresql://…`` / ``postgres://…``, ``sqlite:///relative.db``,
    ``sqlite:////absolute.db``, or a plain file path.
    """
    url = url if url is not None else os.environ.get("VRAMPLAN_DATABASE_URL", "").strip()
    if not url:
        return SQLiteTokenStore(default_database_path())
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresTokenStore(url)
    if url.startswith("sqlite:///"):
        return SQLiteTokenStore(url[len("sqlite:///"):])
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise TokenStoreError(f"VRAMPLAN_DATABASE_URL: unsupported scheme {scheme!r} "
                              "(use sqlite:///PATH or postgresql://…)")
    return SQLiteTokenStore(url)
