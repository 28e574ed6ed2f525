"""Reads YAML data files safely and validates each against its JSON Schema.

Every problem in a file is reported at once, each naming the file and the key path::

    catalogs/gpus/nvidia.yaml: $.gpus.h100_80.memory_gib: 'eighty' is not of type 'number'
"""

from __future__ import annotations

import json
import stat
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import CatalogError

#: Data files larger than this are refused before parsing (a catalog is text, not a data dump).
MAX_DATA_FILE_BYTES = 4 * 1024 * 1024


#: Nodes one YAML document may hold once its aliases are expanded (the built-in catalogs hold a
#: few thousand each; a 4 MiB file of plain text holds at most about a million).
MAX_YAML_NODES = 200_000


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, counting every node as its aliases expand it.

    An alias (``*name``) repeats a node without repeating its text: nine levels of nine aliases in
    652 bytes stand for 9^9 nodes, and whatever walks the document afterwards (schema validation,
    the catalog) never finishes — the "billion laughs". Each node's expanded size is counted as the
    document is composed, and a document over :data:`MAX_YAML_NODES` (or an alias to a node that
    contains itself) is refused. Every YAML file vramplan reads goes through here: built-in,
    plugin and user catalogs, formula folders, imported models.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):  # the node it names is counted already, unless it is still open
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self._sizes:
                raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} refers to a node that "
                                                  "contains it", event.start_mark)
            return super().compose_node(parent, index)
        node = super().compose_node(parent, index)
        if isinstance(node, yaml.ScalarNode):
            size = 1
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for pair in node.value for n in pair]
            size = 1 + sum(self._sizes[id(child)] for child in children)
        if size > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(None, None, f"expands to more than {MAX_YAML_NODES:,} nodes "
                                              "(aliases repeating aliases)", node.start_mark)
        self._sizes[id(node)] = size
        return node


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    """A schema from the package's ``schemas/`` folder, by file stem."""
    text = resources.files("vramplan.schemas").joinpath(f"{name}.schema.json").read_text("utf-8")
    return json.loads(text)


@lru_cache(maxsize=None)
def validator(name: str) -> jsonschema.protocols.Validator:
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


def _short(err: jsonschema.ValidationError) -> str:
    if err.validator == "additionalProperties":
        return err.message.replace("Additional properties are not allowed", "unknown key")
    if err.validator == "enum":
        return f"{err.instance!r} is not one of {', '.join(map(repr, err.validator_value))}"
    return err.message


def read_yaml(path: Path, display: str | None = None) -> Any:
    """Parse one YAML file with the safe loader (aliases refused), refusing oversized files and
    anything that is not a regular file (a link to ``/dev/zero`` or a FIFO would never end)."""
    shown = display or str(path)
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
    try:
        return yaml.load(raw.decode("utf-8"), Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{shown}:{mark.line + 1}" if mark else shown
        raise CatalogError([(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    except UnicodeDecodeError:
        raise CatalogError([(shown, "not UTF-8 text")]) from None
    except RecursionError:
        raise CatalogError([(shown, "not valid YAML: nested too deeply")]) from None


def load_validated(path: Path, schema_name: str, display: str | None = None) -> dict[str, Any]:
    """Read a YAML file and validate it; a :class:`CatalogError` lists every problem with its path."""
    shown = display or str(path)
    data = read_yaml(path, shown)
    problems = schema_problems(data, schema_name)
    if problems:
        raise CatalogError([(f"{shown}: {where}", msg) for where, msg in problems])
    return data
