"""Reads YAML data files safely and validates each against its JSON Schema.

Every problem in a file is reported at once, each naming the file and the key path::

    catalogs/gpus/nvidia.yaml: $.gpus.h100_80.memory_gib: 'eighty' is not of type 'number'

A file that passed is remembered by its contents (:mod:`vramplan.datacache`), so a warm start
reads neither YAML nor schemas. PyYAML and the pure-Python jsonschema are imported only when a file
must be parsed or a problem explained: a warm ``vramplan inference`` needs neither.
"""

from __future__ import annotations

import json
import re
import stat
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from . import datacache
from .errors import CatalogError

#: Data files larger than this are refused before parsing (a catalog is text, not a data dump).
MAX_DATA_FILE_BYTES = 4 * 1024 * 1024


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    """A schema from the package's ``schemas/`` folder, by file stem."""
    text = resources.files("vramplan.schemas").joinpath(f"{name}.schema.json").read_text("utf-8")
    return json.loads(text)


@lru_cache(maxsize=None)
def validator(name: str) -> Any:
    """The pure-Python validator, which explains each problem (jsonschema.protocols.Validator)."""
    import jsonschema

    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@lru_cache(maxsize=None)
def _fast_validator(name: str):
    """jsonschema-rs (compiled) for the common case of a valid document; None if it is not installed."""
    try:
        import jsonschema_rs
    except ImportError:  # pragma: no cover - a dependency, but the slow path still works without it
        return None
    return jsonschema_rs.validator_for(load_schema(name))


def is_valid(instance: Any, schema_name: str) -> bool:
    """Fast check; :func:`schema_problems` explains a failure field by field."""
    fast = _fast_validator(schema_name)
    if fast is None:
        return validator(schema_name).is_valid(instance)
    return fast.is_valid(instance)


def json_path(path) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def field_name(where: str, message: str = "") -> str:
    """The request field a schema problem is about: ``$.batch_size`` → ``batch_size``; a missing
    required property at the top names the property itself; the whole document is ``body``."""
    if where == "$":
        m = re.match(r"'([^']+)' is a required property", message)
        return m.group(1) if m else "body"
    return where[2:] if where.startswith("$.") else where


def schema_problems(instance: Any, schema_name: str, prefix: str = "") -> list[tuple[str, str]]:
    """Every schema violation as ``(json path, message)``, in document order."""
    errors = sorted(validator(schema_name).iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    out = []
    for err in errors:
        where = json_path(err.absolute_path)
        if prefix:
            where = prefix + where[1:]
        out.append((where, _short(err)))
    return out


def _short(err: Any) -> str:
    if err.validator == "additionalProperties":
        return err.message.replace("Additional properties are not allowed", "unknown key")
    if err.validator == "enum":
        return f"{err.instance!r} is not one of {', '.join(map(repr, err.validator_value))}"
    return err.message


#: Nodes one YAML document may hold once its aliases are expanded (the built-in catalogs hold a
#: few thousand each; a 4 MiB file of plain text holds at most about a million).
MAX_YAML_NODES = 200_000
#: An alias (``*name``) where YAML allows one: after a space, a flow indicator or a line start. A
#: file with none is loaded at once; the others are scanned first (formula expressions like
#: ``2 * x`` trigger nothing: the star is followed by a space).
_ALIAS = re.compile(rb"(?:^|[\s\[{,:?-])\*[^\s,\[\]{}]")


def _loader() -> Any:
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed: the same data, faster


def _read_bytes(path: Path, shown: str) -> bytes:
    """The file's bytes: a regular file (a link to ``/dev/zero`` or a FIFO would never end), at most
    :data:`MAX_DATA_FILE_BYTES`, read no further than that whatever its size claims."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise CatalogError([(shown, "is not a regular file")])
        if info.st_size > MAX_DATA_FILE_BYTES:
            raise CatalogError([(shown, f"is {info.st_size} bytes; data files are limited to {MAX_DATA_FILE_BYTES}")])
        with path.open("rb") as fh:
            raw = fh.read(MAX_DATA_FILE_BYTES + 1)
    except OSError as exc:
        raise CatalogError([(shown, f"cannot read: {exc.strerror}")]) from None
    if len(raw) > MAX_DATA_FILE_BYTES:
        raise CatalogError([(shown, f"is over {MAX_DATA_FILE_BYTES} bytes; data files are limited to that")])
    return raw


def _check_aliases(text: str) -> None:
    """Refuse a document whose aliases expand it beyond :data:`MAX_YAML_NODES` nodes, or that refers
    to a node from inside it.

    An alias repeats a node without repeating its text: nine levels of nine aliases in 652 bytes
    stand for 9^9 nodes, and whatever walks the document afterwards (schema validation, the
    catalog) never finishes — the "billion laughs". The parser's events are walked once, each
    node's expanded size summed as its collection closes. Every YAML file vramplan reads goes
    through here: built-in, plugin and user catalogs, formula folders.
    """
    import yaml

    sizes: dict[str, int] = {}
    stack: list[list] = []  # [expanded size so far, anchor] per open collection

    def close(size: int, anchor: str | None, event) -> None:
        if size > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(None, None, f"expands to more than {MAX_YAML_NODES:,} nodes "
                                              "(aliases repeating aliases)", event.start_mark)
        if anchor:
            sizes[anchor] = size
        if stack:
            stack[-1][0] += size

    for event in yaml.parse(text, Loader=_loader()):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            stack.append([1, event.anchor])
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            size, anchor = stack.pop()
            close(size, anchor, event)
        elif isinstance(event, yaml.ScalarEvent):
            close(1, event.anchor, event)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes and any(a == event.anchor for _, a in stack):
                raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} refers to a node that "
                                                  "contains it", event.start_mark)
            close(sizes.get(event.anchor, 1), None, event)  # an undefined one: the loader names it


def _parse_yaml(raw: bytes, shown: str) -> Any:
    import yaml

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CatalogError([(shown, "not UTF-8 text")]) from None
    try:
        if _ALIAS.search(raw):
            _check_aliases(text)
        return yaml.load(text, Loader=_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{shown}:{mark.line + 1}" if mark else shown
        raise CatalogError([(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    except RecursionError:
        raise CatalogError([(shown, "not valid YAML: nested too deeply")]) from None


def read_yaml(path: Path, display: str | None = None) -> Any:
    """Parse one YAML file with the safe loader, refusing oversized and non-regular files and alias bombs."""
    shown = display or str(path)
    return _parse_yaml(_read_bytes(path, shown), shown)


def load_validated(path: Path, schema_name: str, display: str | None = None) -> dict[str, Any]:
    """Read a YAML file and validate it; a :class:`CatalogError` lists every problem with its path.

    Data that passed before with the same bytes comes from the cache (:mod:`vramplan.datacache`)."""
    shown = display or str(path)
    raw = _read_bytes(path, shown)
    data = datacache.get(raw, schema_name)
    if data is not None:
        return data
    data = _parse_yaml(raw, shown)
    if not is_valid(data, schema_name):
        problems = schema_problems(data, schema_name)
        if problems:
            raise CatalogError([(f"{shown}: {where}", msg) for where, msg in problems])
    datacache.put(raw, schema_name, data)
    return data
