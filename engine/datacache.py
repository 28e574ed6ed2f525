"""A cache of validated data files, keyed by their contents, so a warm start skips YAML and schemas.

Loading the catalog reads some fifty YAML files and checks each against its JSON Schema; that was
most of the time ``vramplan inference …`` took from start to answer. A file that passes is stored
as JSON in the user cache dir (``VRAMPLAN_CACHE_DIR``, default ``<user cache dir>/vramplan``),
named by a hash of everything its validated data depends on:

* the file's bytes and the name and bytes of the schema it was checked against;
* the code that parses and checks it (the source of :mod:`vramplan.datafiles` and
  :mod:`vramplan.formulaset`), and the versions of vramplan, PyYAML and this cache's format.

A later start that finds the same bytes reads the stored data instead. A changed file (or schema,
or checker) hashes differently and is parsed and checked again; a file that fails its checks is
never stored, so it fails again, naming the problem; a damaged cache entry is ignored and
replaced. Plugins need no key of their own: whatever plugin supplies a file, the same bytes give
the same data. ``VRAMPLAN_CACHE_DIR=off`` turns the cache off; nothing here is needed for a
correct answer, only for a fast one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

FORMAT = "vramplan-validated-data-1"
_OFF = ("off", "0", "false", "no")


def cache_dir() -> Path | None:
    """Where validated data is kept, or None when the cache is off."""
    chosen = os.environ.get("VRAMPLAN_CACHE_DIR", "")
    if chosen.strip().lower() in _OFF:
        return None
    if chosen.strip():
        return Path(chosen) / "validated"
    import platformdirs

    return Path(platformdirs.user_cache_dir("vramplan")) / "validated"


@lru_cache(maxsize=None)
def _code_fingerprint() -> bytes:
    """The versions and checker source a validated file's data depends on."""
    from .version import __version__

    parts = [FORMAT, __version__]
    try:
        from importlib.metadata import version

        parts.append(version("PyYAML"))
    except Exception:  # pragma: no cover - PyYAML is a dependency; an unknown version just keys on "?"
        parts.append("?")
    digest = hashlib.sha256("\0".join(parts).encode())
    here = Path(__file__).parent
    for name in ("datafiles.py", "formulaset.py"):
        try:
            digest.update((here / name).read_bytes())
        except OSError:  # pragma: no cover - a zipped install: the versions still key it
            pass
    return digest.digest()


@lru_cache(maxsize=None)
def _schema_fingerprint(schema_name: str) -> bytes:
    """The schema file's bytes, as :func:`vramplan.datafiles.load_schema` reads them (read here, not
    through datafiles, which imports this module)."""
    from importlib import resources

    return hashlib.sha256(resources.files("vramplan.schemas").joinpath(f"{schema_name}.schema.json").read_bytes()).digest()


def key(raw: bytes, schema_name: str) -> str:
    """The name a file's validated data is stored under."""
    digest = hashlib.sha256(_code_fingerprint())
    digest.update(schema_name.encode() + b"\0" + _schema_fingerprint(schema_name))
    digest.update(raw)
    return digest.hexdigest()


def get(raw: bytes, schema_name: str) -> Any | None:
    """The validated data stored for these bytes, or None."""
    folder = cache_dir()
    if folder is None:
        return None
    try:
        text = (folder / f"{key(raw, schema_name)}.json").read_text("utf-8")
        return json.loads(text)["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not stored yet, or damaged: parse and check the file


def put(raw: bytes, schema_name: str, data: Any) -> None:
    """Store validated data (atomically; a read-only or full cache dir is not an error)."""
    folder = cache_dir()
    if folder is None:
        return
    try:
        text = json.dumps({"format": FORMAT, "schema": schema_name, "data": data}, separators=(",", ":"))
        if json.loads(text)["data"] != data:
            return  # not plain JSON data (e.g. a YAML date): parse it each time instead
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, folder / f"{key(raw, schema_name)}.json")
    except (OSError, TypeError, ValueError):
        return
