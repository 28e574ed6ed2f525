"""``vramplan sweep``: a grid of estimates streamed as CSV, JSON lines or JSON.

The grid is a base request (``--request FILE``) and axes: the friendly flags below, and
``--axis FIELD=VALUES`` for any request field (``optimization_config.x`` and ``runtime_settings.x``
for nested ones). Values are comma lists; whole numbers take binary suffixes ``k`` (x1024) and ``m``
(x1024^2), and a range ``a..b`` is a, 2a, 4a, … up to b (b included), so ``2k..128k`` = 2048, 4096,
…, 131072; ``true``/``false`` are flags; anything else is text. The friendly number flags sort and
deduplicate their values; ``--axis`` keeps the order given.

Rows are written as they are estimated (:mod:`vramplan.sweep`), so a million-row grid needs no
more memory than a chunk; progress goes to stderr on a terminal (``--progress`` forces it).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

import click
import numpy as np

from ..sweep import Rows
from .common import read_request, require_keys
from .plan import parse_int_grid, parse_number, parse_text_grid

#: Friendly grid flags: option name → (request field, parser kind, catalog registry used to check keys).
AXES = {
    "gpu": ("gpu_key", "text", "gpus"),
    "model": ("llm_key", "text", "models"),
    "quantization": ("quantization", "text", "quantization"),
    "kv_cache_quantization": ("kv_cache_quantization", "text", "quantization"),
    "runtime": ("runtime", "text", "runtimes"),
    "method": ("finetuning_method", "text", None),
    "seq_length": ("seq_length", "int", None),
    "batch_size": ("batch_size", "int", None),
    "concurrent_users": ("concurrent_users", "int", None),
    "num_gpus": ("num_gpus", "int", None),
    "lora_rank": ("lora_rank", "int", None),
}
#: Request fields whose values are catalog keys, and the registry that holds them.
KEY_FIELDS = {"gpu_key": "gpus", "llm_key": "models", "quantization": "quantization",
              "kv_cache_quantization": "quantization", "runtime": "runtimes", "interconnect_type": "interconnects"}
#: A grid this long shows progress on a terminal.
PROGRESS_MIN = 20
FORMATS = ("csv", "jsonl", "json")


def parse_axis(text: str, workload: str) -> tuple[str, list[Any]]:
    """``FIELD=V1,V2`` → the field and its typed values, typed by the request schema where it says."""
    from ..datafiles import load_schema
    from ..request import SCHEMAS

    field, sep, values = text.partition("=")
    field = field.strip()
    if not sep or not field:
        raise click.UsageError(f"--axis: {text!r} is not FIELD=VALUES (e.g. seq_length=2k..32k)")
    props = load_schema(SCHEMAS[workload])["properties"]
    head, _, rest = field.partition(".")
    if head not in props:
        raise click.UsageError(f"--axis {field}: not a field of a {workload} request")
    spec = props[head]
    if rest:
        if spec.get("type") != "object":
            raise click.UsageError(f"--axis {field}: {head} is not an object")
        spec = spec.get("properties", {}).get(rest) or spec.get("additionalProperties") or {}
        if not spec:
            raise click.UsageError(f"--axis {field}: {head} has no field {rest!r}")
    flag = f"--axis {field}"
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "integer":
        return field, _int_items(values, flag)
    if kind == "number":
        return field, _number_items(values, flag)
    if kind == "boolean":
        return field, [_flag_item(v, flag) for v in parse_text_grid(values, flag)]
    return field, [_literal(v) for v in parse_text_grid(values, flag)]


def _int_items(text: str, flag: str) -> list[int]:
    """Whole numbers in grid syntax, zero allowed (the schema decides what is valid), in the order given."""
    out: list[int] = []
    for item in parse_text_grid(text, flag):
        if item in ("0", "-0"):
            out.append(0)
        elif ".." in item:
            out.extend(v for v in parse_int_grid(item, flag) if v not in out)
        else:
            out.append(parse_number(item, flag))
    return list(dict.fromkeys(out))


def _number_items(text: str, flag: str) -> list[float]:
    out = []
    for item in parse_text_grid(text, flag):
        try:
            out.append(float(item))
        except ValueError:
            out.append(float(parse_number(item, flag)))
    return out


def _as_flag(item: str) -> bool | None:
    """``true`` / ``false`` (any case) as a bool; None for anything else."""
    return {"true": True, "false": False}.get(item.lower())


def _flag_item(item: str, flag: str) -> bool:
    value = _as_flag(item)
    if value is None:
        raise click.UsageError(f"{flag}: {item!r} is not true or false")
    return value


def _literal(item: str) -> Any:
    """An item of an axis the schema gives no type for: a flag, a number, else text."""
    value = _as_flag(item)
    if value is not None:
        return value
    for kind in (int, float):
        try:
            return kind(item)
        except ValueError:
            pass
    return item


def check_keys(axes: dict[str, list], flags: dict[str, str]) -> None:
    """Unknown catalog keys are usage errors naming the flag (before any estimate runs)."""
    from ..catalog import get_catalog

    cat = get_catalog()
    for field, values in axes.items():
        kind = KEY_FIELDS.get(field)
        if kind is None:
            continue
        reg = cat.registry(kind)
        for v in values:
            if not isinstance(v, str) or (v not in reg and not (field == "llm_key" and v == "custom")):
                raise click.UsageError(f"{flags[field]}: unknown {reg.kind} {v!r} (closest: {', '.join(reg.closest(str(v)))})")


class Progress:
    """Rows done so far on stderr: one rewritten line on a terminal, else a line every few seconds."""

    def __init__(self, total: int, stream: TextIO, every: float):
        self.total, self.stream, self.every = total, stream, every
        self.tty = stream.isatty()
        self.start = self.last = time.perf_counter()

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last < self.every and done < self.total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        left = (self.total - done) / rate if rate else 0.0
        line = f"sweep: {done:,} / {self.total:,} rows ({done / self.total:.0%}), {rate:,.0f} rows/s, {left:,.0f} s left"
        self.stream.write(("\r" + line + " " * 4) if self.tty else line + "\n")
        if self.tty and done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


class Writer:
    """Rows out in one of :data:`FORMATS`: CSV with a header; JSON lines; a JSON array, one row a line.

    Each column is formatted as a whole (numbers by numpy, repeated text once), then the rows are
    joined: writing costs about what estimating does, not several times more. Numbers read back
    exactly (the shortest text that round-trips); an empty result is an empty CSV cell or null."""

    def __init__(self, fmt: str, out: TextIO, names: list[str]):
        self.fmt, self.out, self.names, self.rows = fmt, out, names, 0
        # one row of JSON: the keys written once, each value's text in its %s
        self.template = "{" + ", ".join(json.dumps(name).replace("%", "%%") + ": %s" for name in names) + "}"
        if fmt == "csv":
            out.write(",".join(_csv_text(name) for name in names) + "\n")
        elif fmt == "json":
            out.write("[")

    def write(self, rows: Rows) -> None:
        if not rows.n:
            return
        if self.fmt == "csv":
            cells = [_cells(rows, name, _csv_text, "") for name in self.names]
            self.out.write("\n".join(map(",".join, zip(*cells))) + "\n")
        else:
            cells = [_cells(rows, name, json.dumps, "null") for name in self.names]
            template = self.template
            lines = [template % row for row in zip(*cells)]
            if self.fmt == "jsonl":
                self.out.write("\n".join(lines) + "\n")
            else:
                self.out.write(("\n" if self.rows == 0 else ",\n") + ",\n".join(lines))
        self.rows += rows.n

    def close(self) -> None:
        if self.fmt == "json":
            self.out.write("\n]\n" if self.rows else "]\n")


def _csv_text(value: Any) -> str:
    """One CSV cell as the csv module writes it (quoted when it holds a comma, quote or line break)."""
    text = str(value)
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _cells(rows: Rows, name: str, text, empty: str) -> list[str]:
    """One column as text cells."""
    values = rows.columns[name]
    missing = rows.missing if name in rows.results else None
    if isinstance(values, np.ndarray) and values.dtype.kind in "fi":
        # Each distinct value once (rounded figures repeat a lot), as repr() and json write it:
        # the shortest text that reads back as the same number; NaN (no value) as an empty cell.
        distinct, where = np.unique(values, return_inverse=True)
        words = np.array([repr(v) for v in distinct.tolist()], dtype=object)
        if values.dtype.kind == "f":
            words[~np.isfinite(distinct)] = empty
        out = words[where.reshape(-1)]
    elif isinstance(values, np.ndarray) and values.dtype == bool:
        out = np.where(values, "True" if text is _csv_text else "true", "False" if text is _csv_text else "false")
    else:
        seen: dict[Any, str] = {}
        out = [seen[v] if v in seen else seen.setdefault(v, empty if v is None else text(v)) for v in
               (values.tolist() if isinstance(values, np.ndarray) else values)]
        out = np.array(out, dtype=object) if missing is not None else out
    if missing is not None and missing.any():
        out = np.asarray(out, dtype=object)
        out[missing] = empty
    return out.tolist() if isinstance(out, np.ndarray) else out


@click.command()
@click.option("--request", "request_file", metavar="FILE", help="Base request JSON; grid flags override its fields.")
@click.option("--workload", type=click.Choice(["inference", "finetuning"]), default="inference", show_default=True)
@click.option("--gpu", metavar="KEYS", help="GPU keys, comma-separated.")
@click.option("--model", metavar="KEYS", help="Model keys, comma-separated.")
@click.option("--quantization", metavar="FORMATS", help="e.g. fp16,q4_k_m.")
@click.option("--kv-cache-quantization", metavar="FORMATS")
@click.option("--runtime", metavar="RUNTIMES")
@click.option("--method", metavar="METHODS", help="Fine-tuning methods: full,lora,qlora.")
@click.option("--seq-length", metavar="GRID", help="e.g. 2k..128k (powers of two between) or 2048,8192.")
@click.option("--batch-size", metavar="GRID", help="e.g. 1,8,32.")
@click.option("--concurrent-users", metavar="GRID")
@click.option("--num-gpus", metavar="GRID")
@click.option("--lora-rank", metavar="GRID")
@click.option("--axis", "extra", metavar="FIELD=VALUES", multiple=True,
              help="Any request field, e.g. shared_prefix_ratio=0,0.5 or optimization_config.flash_attention=true,false "
                   "(repeatable).")
@click.option("--columns", metavar="NAMES", help="Write only these columns, comma-separated, in this order "
              "(default: all; writing fewer is faster).")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Default: json for an --output ending .json, jsonl for .jsonl, else csv.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="File to write (default stdout).")
@click.option("--progress/--no-progress", default=None, help="Progress on stderr (default: on a terminal, for 20+ rows).")
def sweep(request_file, workload, extra, columns, fmt, output, progress, **grid) -> None:
    """Estimate every combination of the grid and write one row each (CSV, JSON lines or JSON)."""
    from ..sweep import Axis, Sweep

    base = read_request(request_file)
    axes: dict[str, list] = {}
    flags: dict[str, str] = {}
    for name, (field, kind, _) in AXES.items():  # a fixed column order, whatever the order of the flags
        text = grid.get(name)
        if text is None:
            continue
        flag = "--" + name.replace("_", "-")
        axes[field] = parse_int_grid(text, flag) if kind == "int" else parse_text_grid(text, flag)
        flags[field] = flag
    for text in extra:
        field, values = parse_axis(text, workload)
        if field in axes:
            raise click.UsageError(f"--axis {field}: given twice ({flags[field]} and --axis {field})")
        axes[field], flags[field] = values, f"--axis {field}"
    if "finetuning_method" in axes and workload != "finetuning":
        raise click.UsageError(f"{flags['finetuning_method']}: only with --workload finetuning")
    require_keys(axes, base)
    check_keys(axes, flags)
    grid_ = Sweep(base, workload, [Axis(field, tuple(values)) for field, values in axes.items()])
    names = grid_.names
    if columns:
        names = parse_text_grid(columns, "--columns")
        unknown = [n for n in names if n not in grid_.names]
        if unknown:
            raise click.UsageError(f"--columns: no column {', '.join(map(repr, unknown))} (columns: {', '.join(grid_.names)})")
    fmt = fmt or ("json" if output and output.endswith(".json") else "jsonl" if output and output.endswith((".jsonl", ".ndjson")) else "csv")
    show = progress if progress is not None else (grid_.total >= PROGRESS_MIN and sys.stderr.isatty())
    meter = Progress(grid_.total, sys.stderr, 0.2 if sys.stderr.isatty() else 2.0) if show else None
    stream = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout
    try:
        writer = Writer(fmt, stream, names)
        for chunk in grid_.chunks():
            writer.write(chunk)
            if meter:
                meter.update(writer.rows)
        writer.close()
    finally:
        if output:
            stream.close()
    if output:
        click.echo(f"wrote {writer.rows} rows to {output}", err=True)
