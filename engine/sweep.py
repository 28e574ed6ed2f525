"""Grids of estimates as flat, typed columns: what ``vramplan sweep`` streams.

A sweep is a base request and axes (a request field and its values, ``optimization_config.x`` or
``runtime_settings.x`` for nested ones); :func:`sweep` estimates every combination and yields the
rows in chunks of columns, in grid order: the product of the axes with the last varying fastest,
axes that change what is resolved (keys, flags, text) before axes of numbers.

The rows carry what a single estimate answers, to its rounding (``tests/test_many.py`` checks
row after row against :func:`vramplan.answer.estimate` on random grids), at a small fraction of its cost:

* each combination of the non-number axes is checked and resolved once; each value of a number
  axis is checked against the schema once (the request schema constrains each field on its own,
  :func:`schema_is_per_field`), and a combination with a bad value gets the single estimate's
  error message;
* the number axes go through validate → resolve → scenario together as arrays
  (:mod:`vramplan.many`), the formula graph is evaluated once per chunk
  (:mod:`vramplan.batch`), and the headline figures are computed over the arrays with the
  response's own rules (:func:`headline`);
* a row a single estimate treats specially (``enable_offloading`` without an amount where the
  request does not fit: the search for the fewest offloaded layers) is estimated on its own.

Columns (:func:`column_names`): ``workload``, ``gpu_key``, ``llm_key``, one per axis, the results
of :data:`RESULTS` (the response's figures, the ``serving`` object flattened as ``serving.*``, and
the planner's ``fits`` and ``binding``), and ``error`` (empty when the row has an estimate): a
refused request or formula, or why the configuration cannot run (``memory_status`` ``error``).
Every column has one type (text, integer, number or boolean); an empty cell has no value.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import request as request_mod
from .answer import estimate as run
from .batch import BatchResult
from .catalog import Catalog, get_catalog
from .datafiles import is_valid, load_schema
from .errors import RequestError, VramplanError
from .estimate import (ALWAYS_SHOWN, GIB, LIMITED_BY, STATUS, component_bytes, configuration_checks, needs_offload_search,
                       status_overrides)
from .many import EXACT_INT, Group, NeedsRows, Row, Swept, as_lists, evaluate_groups, group_scenario, is_number
from .verdict import NOT_FITTING, binding, fits
from .resolve import resolve
from .scenario import build

#: The response's ``serving`` object, flattened (``serving.ttft_ms``, …).
SERVING = ("input_tokens", "output_tokens", "load", "running_sequences", "queued_requests", "output_throughput_tps",
           "total_throughput_tps", "requests_per_second", "ttft_ms", "itl_ms", "e2e_latency_ms", "utilisation",
           "limited_by", "cost_per_hour", "cost_per_million_output_tokens")
#: Result columns per workload: the response field each copies (a dotted path into a nested object),
#: or a figure derived like the planner's (``capacity_gib``, ``fits``).
RESULTS = {
    "inference": ("vram_usage", "capacity_gib", "actual_vram_percentage", "memory_status", "fits", "binding", "per_user_tps",
                  "estimated_throughput_tps", "ms_per_token", "tftt", "runtime") + tuple(f"serving.{n}" for n in SERVING),
    "finetuning": ("vram_usage", "capacity_gib", "actual_vram_percentage", "memory_status", "fits", "binding", "training_tps",
                   "samples_per_second", "total_training_time_hours", "runtime"),
}
#: Response figure → (formula id, decimals), as :func:`vramplan.estimate.assemble` rounds them.
FIGURES = {
    "per_user_tps": ("per_user_tps", 1), "estimated_throughput_tps": ("throughput_tps", 1),
    "ms_per_token": ("ms_per_token", 2), "tftt": ("tftt_ms", 1),
    "training_tps": ("training_tps", 1), "samples_per_second": ("samples_per_second", 3),
    "total_training_time_hours": ("training_hours", 2),
}
#: Rows estimated together (the sweep streams chunk by chunk).
CHUNK = 16384
_SCHEMA_KEYWORDS = {"$schema", "$id", "title", "description", "type", "additionalProperties", "required",
                    "properties", "$defs", "definitions", "examples", "$comment"}


@dataclass(frozen=True)
class Axis:
    """A request field (a dotted path for a nested one) and the values the sweep gives it."""

    field: str
    values: tuple

    @property
    def numeric(self) -> bool:
        """Top-level numbers travel through the pipeline as arrays; everything else is resolved per value."""
        return "." not in self.field and all(is_number(v) for v in self.values)


def schema_is_per_field(workload: str) -> bool:
    """True when the request schema constrains each top-level field on its own (no if/then,
    dependencies or combinators at the top), so checking each value of an axis once is enough."""
    return set(load_schema(request_mod.SCHEMAS[workload])) <= _SCHEMA_KEYWORDS


def set_field(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``body`` with ``path`` (``a`` or ``a.b``) set; nested objects are copied, not shared."""
    head, _, rest = path.partition(".")
    out = dict(body)
    if rest:
        inner = out.get(head)
        out[head] = set_field(inner if isinstance(inner, dict) else {}, rest, value)
    else:
        out[head] = value
    return out


def keep_answer(base: dict[str, Any], axes: Sequence[Axis]) -> dict[str, Any]:
    """The base a ``seq_length`` axis changes: over a request that gives both ``input_tokens`` and
    ``output_tokens`` (and no axis of either), each context keeps the answer and its prompt is the rest, as the
    planner's context searches do - with both halves a different ``seq_length`` would refuse every row. A context
    too short for the answer is that row's error ("output_tokens: 200 leaves no room for input_tokens in
    seq_length 128")."""
    fields = {a.field for a in axes}
    if "seq_length" not in fields or fields & {"input_tokens", "output_tokens"}:
        return base
    if base.get("input_tokens") is None or base.get("output_tokens") is None:
        return base
    return {k: v for k, v in base.items() if k != "input_tokens"}


def ordered(axes: Sequence[Axis]) -> list[Axis]:
    """Grid order: non-number axes, then number axes, each in the order given."""
    return [a for a in axes if not a.numeric] + [a for a in axes if a.numeric]


def grid_columns(axes: Sequence[Axis]) -> list[str]:
    """Who and what each row is: the workload, the GPU and model, then the axes."""
    names = ["workload", "gpu_key", "llm_key"]
    return names + [a.field for a in ordered(axes) if a.field not in names]


def column_names(workload: str, axes: Sequence[Axis]) -> list[str]:
    """The row's columns: :func:`grid_columns`, the results (an axis of the same name, such as
    ``runtime``, stands for its result column), then ``error``."""
    names = grid_columns(axes)
    return names + [r for r in RESULTS[workload] if r not in names] + ["error"]


def size(axes: Sequence[Axis]) -> int:
    return math.prod(len(a.values) for a in axes)


def _times_exactly(x: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """``x * factor`` and its rounding error (Dekker's exact product), so ``product + error`` is
    the exact value for every element below ~1e300."""
    product = x * factor
    split = 134217729.0  # 2**27 + 1: halves a binary64 significand
    t = split * x
    x_hi = t - (t - x)
    x_lo = x - x_hi
    t = split * factor
    f_hi = t - (t - factor)
    f_lo = factor - f_hi
    error = ((x_hi * f_hi - product) + x_hi * f_lo + x_lo * f_hi) + x_lo * f_lo
    return product, error


def round_like_python(x: Any, digits: int) -> np.ndarray:
    """Python's ``round(value, digits)`` for every element: the exact binary value rounded half to
    even at that decimal, then the nearest binary64.

    Scaling by 10**digits can land a value exactly on a half that it is not (0.285 is a little
    less than 0.285): the exact product says which way such a tie goes. Elements too large to scale
    (beyond 2**50 once scaled) are rounded by Python itself."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        scaled = x * 10.0 ** digits
        rounded = np.round(scaled)  # half to even, on the scaled value
        tie = np.flatnonzero(scaled - np.floor(scaled) == 0.5)
        if len(tie):  # the exact product says which side of the half the value is
            _, error = _times_exactly(x[tie], 10.0 ** digits)
            rounded[tie] = np.where(error > 0, np.ceil(scaled[tie]), np.where(error < 0, np.floor(scaled[tie]), rounded[tie]))
        out = rounded / 10.0 ** digits
    large = ~(np.abs(scaled) < 2.0**50)
    if large.any():
        out[large] = [round(v, digits) for v in x[large].tolist()]
    return out


@dataclass
class _Combination:
    """One combination of the non-number axes: its body and which number-axis values it accepts."""

    body: dict[str, Any]  # the base with these values, without the number axes' fields
    valid: bool  # the body alone passes the schema, and each value can be checked on its own
    accepted: list[np.ndarray]  # per number axis: each value passes the schema in this body
    messages: dict[tuple, str] = field(default_factory=dict)  # refusals, by the offending values


class Sweep:
    """A grid over a base request; iterate :meth:`chunks` for the rows."""

    def __init__(self, base: dict[str, Any], workload: str, axes: Sequence[Axis], catalog: Catalog | None = None,
                 chunk: int = CHUNK):
        self.base, self.workload, self.cat, self.chunk = dict(base), workload, catalog or get_catalog(), chunk
        self.base.pop("trace", None)
        self.base = keep_answer(self.base, axes)
        self.axes = ordered(axes)
        self.outer = [a for a in self.axes if not a.numeric]
        self.inner = [a for a in self.axes if a.numeric]
        self.inner_size = size(self.inner)
        self.total = size(self.axes)
        self.names = column_names(workload, axes)
        self.grid_names = grid_columns(axes)
        self.result_names = [r for r in RESULTS[workload] if r not in self.grid_names]
        self.per_field = schema_is_per_field(workload)
        self._combination: tuple[int, _Combination] | None = None
        self._strides = [math.prod(len(a.values) for a in self.inner[k + 1:]) for k in range(len(self.inner))]
        self._inner_values = [np.array(a.values, dtype=object) for a in self.inner]
        self._inner_typed = [_typed(a.values) for a in self.inner]

    # -- the grid --------------------------------------------------------------------------------
    def outer_values(self, index: int) -> tuple:
        out = []
        for a in reversed(self.outer):
            index, k = divmod(index, len(a.values))
            out.append(a.values[k])
        return tuple(reversed(out))

    def inner_indices(self, start: int, stop: int) -> list[np.ndarray]:
        j = np.arange(start, stop)
        return [(j // stride) % len(a.values) for a, stride in zip(self.inner, self._strides)]

    def point_body(self, outer: Sequence[Any], inner: Sequence[Any]) -> dict[str, Any]:
        body = self.base
        for a, v in zip(self.outer, outer):
            body = set_field(body, a.field, v)
        for a, v in zip(self.inner, inner):
            body = set_field(body, a.field, v)
        return body

    def combination(self, index: int) -> _Combination:
        """The index-th combination of the non-number axes (they come in order: only the last is kept)."""
        if self._combination is None or self._combination[0] != index:
            body = self.point_body(self.outer_values(index), ())
            for a in self.inner:
                body.pop(a.field, None)
            schema = request_mod.SCHEMAS[self.workload]
            valid = self.per_field and is_valid(body, schema)
            accepted = [np.array([valid and is_valid({**body, a.field: v}, schema) for v in a.values], dtype=bool)
                        for a in self.inner]
            self._combination = (index, _Combination(body, valid, accepted))
        return self._combination[1]

    # -- estimating ------------------------------------------------------------------------------
    def chunks(self) -> Iterator[Rows]:
        """The rows of each run of up to ``chunk`` grid points, in grid order."""
        for start in range(0, self.total, self.chunk):
            yield self._estimate(start, min(start + self.chunk, self.total))

    def _estimate(self, start: int, stop: int) -> Rows:
        n = stop - start
        results = _empty_results(self.workload, n)
        chunk = _Chunk(n, {name: [None] * n for name in self.grid_names}, [""] * n)
        chunk.columns["workload"] = [self.workload] * n
        first = start
        while first < stop:
            index = first // self.inner_size
            block_stop = min(stop, (index + 1) * self.inner_size)
            self._block(chunk, index, first - index * self.inner_size, block_stop - index * self.inner_size, first - start)
            first = block_stop
        if chunk.groups:
            self._results(chunk, results)
        shown = {name: results.columns[name] for name in self.result_names}
        return Rows(n, {**chunk.columns, **shown, "error": chunk.errors}, self.names, results.missing, set(shown))

    def _block(self, chunk: _Chunk, index: int, j0: int, j1: int, offset: int) -> None:
        """Rows j0..j1 of one combination of the non-number axes; ``offset``: their first row in the chunk."""
        combo = self.combination(index)
        outer = self.outer_values(index)
        m = j1 - j0
        idx = self.inner_indices(j0, j1)
        cols = chunk.columns
        for name in ("gpu_key", "llm_key"):
            cols[name][offset:offset + m] = [combo.body.get(name)] * m
        for a, v in zip(self.outer, outer):
            cols[a.field][offset:offset + m] = [v] * m
        for a, k, values in zip(self.inner, idx, self._inner_values):
            cols[a.field][offset:offset + m] = values[k].tolist()
        if not combo.valid:  # checked and estimated one row at a time, as a single estimate does
            for r in range(m):
                point = tuple(a.values[k[r]] for a, k in zip(self.inner, idx))
                self._one_row(chunk, self.point_body(outer, point), offset + r)
            return
        ok = np.ones(m, dtype=bool)
        for k, accepted in zip(idx, combo.accepted):
            ok &= accepted[k]
        for r in np.flatnonzero(~ok).tolist():  # a value the schema refuses: the single estimate's message
            point = tuple(a.values[k[r]] for a, k in zip(self.inner, idx))
            key = tuple(None if acc[k[r]] else v for v, acc, k in zip(point, combo.accepted, idx))
            if key not in combo.messages:
                combo.messages[key] = self._refusal(self.point_body(outer, point))
            chunk.errors[offset + r] = combo.messages[key]
        good = (np.flatnonzero(ok) + offset).tolist()
        if not good:
            return
        picked = [k[ok] for k in idx]
        try:
            if len(good) < 2:
                raise NeedsRows("one row")
            body = dict(combo.body)
            for a, k, typed in zip(self.inner, picked, self._inner_typed):
                body[a.field] = _swept(a, k, typed)
            req = request_mod.validate(body, self.workload, schema_checked=True)
            res, scenario = group_scenario(self.cat, req, self.workload)
        except RequestError:  # did not look at the numbers (it would have needed rows): the same for every row
            message = self._refusal(self.point_body(outer, [a.values[k[0]] for a, k in zip(self.inner, picked)]))
            for r in good:
                chunk.errors[r] = message
            return
        except (NeedsRows, TypeError, ValueError, ArithmeticError):
            for i, r in enumerate(good):
                self._one_row(chunk, self.point_body(outer, [a.values[k[i]] for a, k in zip(self.inner, picked)]), r)
            return
        chunk.add(Group(res, scenario, good), req, self.workload)

    def _one_row(self, chunk: _Chunk, body: dict[str, Any], r: int) -> None:
        try:
            req = request_mod.validate(body, self.workload)
            res = resolve(self.cat, req, self.workload)
            scenario = build(res)
        except RequestError:
            chunk.errors[r] = self._refusal(body)
            return
        chunk.add(Group(res, scenario, [r]), req, self.workload)

    def _refusal(self, body: dict[str, Any]) -> str:
        """The message a single estimate of ``body`` refuses with (asked only for refused bodies)."""
        try:
            run(body, self.workload, self.cat)
        except VramplanError as exc:
            return str(exc)
        raise AssertionError(f"expected a refusal for {body}")  # pragma: no cover

    def _results(self, chunk: _Chunk, results: _Results) -> None:
        result = evaluate_groups(self.cat, chunk.groups, self.workload)
        sizes = [g.size for g in chunk.groups]
        figures = headline(self.cat, self.workload, result, np.repeat(np.array(chunk.priced, dtype=bool), sizes))
        rows = np.array([r for g in chunk.groups for r in g.rows])
        refused = ~result.ok
        figures["runtime"] = np.repeat(np.array([g.res.runtime.key for g in chunk.groups], dtype=object), sizes)
        estimated = rows[~refused]
        for name in RESULTS[self.workload]:
            results.columns[name][estimated] = figures[name][~refused]
        results.missing[estimated] = False
        for i in np.flatnonzero(refused).tolist():  # a formula the row breaks: the single estimate's words
            chunk.errors[rows[i]] = self._refusal(self._row_body(chunk, int(rows[i])))
        for i in np.flatnonzero(figures["problem"] != "").tolist():
            if not refused[i]:
                chunk.errors[rows[i]] = figures["problem"][i]
        search = np.repeat(np.array(chunk.searched, dtype=bool), sizes)
        for i in np.flatnonzero(search & (figures["memory_status"] == "insufficient") & ~refused).tolist():
            self._searched_row(chunk, results, int(rows[i]))

    def _row_body(self, chunk: _Chunk, r: int) -> dict[str, Any]:
        """The request body of row ``r`` of a chunk."""
        body = self.base
        for a in self.axes:
            body = set_field(body, a.field, chunk.columns[a.field][r])
        return body

    def _searched_row(self, chunk: _Chunk, results: _Results, r: int) -> None:
        """enable_offloading without an amount where the row does not fit: the single estimate's search."""
        body = self._row_body(chunk, r)
        try:
            out = run(body, self.workload, self.cat)
        except VramplanError as exc:
            results.missing[r] = True
            chunk.errors[r] = str(exc)
            return
        capacity = float(results.columns["capacity_gib"][r])
        for name in RESULTS[self.workload]:
            value = capacity if name == "capacity_gib" else fits(out, capacity) if name == "fits" \
                else binding(out, capacity) if name == "binding" else _field_of(out, name)
            results.columns[name][r] = np.nan if value is None and results.columns[name].dtype == np.float64 else value


def _field_of(response: dict[str, Any], path: str) -> Any:
    """A response field by its column name (``serving.ttft_ms`` reads ``response["serving"]["ttft_ms"]``)."""
    value: Any = response
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


@dataclass
class Rows:
    """A chunk of a sweep's rows as typed columns: lists for the grid's own columns, numpy arrays
    (float64, bool, or object for text) for the results; ``missing`` marks rows without an
    estimate (their results are empty; ``error`` says why)."""

    n: int
    columns: dict[str, Any]
    names: list[str]
    missing: np.ndarray
    results: set[str]  # the result columns: empty where ``missing``

    def column(self, name: str) -> list:
        """One column as Python values, ``None`` where a row has no value."""
        values = self.columns[name]
        if isinstance(values, np.ndarray):
            empty = self.missing if name in self.results else np.zeros(self.n, dtype=bool)
            if values.dtype == np.float64:
                empty = empty | np.isnan(values)
            values = values.tolist()
            for r in np.flatnonzero(empty).tolist():
                values[r] = None
        return values

    def records(self) -> Iterator[dict[str, Any]]:
        """The rows as dicts, in column order."""
        columns = [self.column(name) for name in self.names]
        for values in zip(*columns):
            yield dict(zip(self.names, values))


#: Result columns' numpy types (float64 unless named here; NaN in a number column means "no value").
_KINDS = {"fits": bool, "binding": object, "memory_status": object, "runtime": object, "serving.load": object, "serving.limited_by": object,
          "serving.input_tokens": np.int64, "serving.output_tokens": np.int64}


@dataclass
class _Results:
    columns: dict[str, np.ndarray]
    missing: np.ndarray


def _empty_results(workload: str, n: int) -> _Results:
    columns = {}
    for name in RESULTS[workload]:
        kind = _KINDS.get(name, np.float64)
        columns[name] = np.full(n, np.nan) if kind is np.float64 else np.full(n, None, dtype=object) if kind is object \
            else np.zeros(n, dtype=kind)
    return _Results(columns, np.ones(n, dtype=bool))


@dataclass
class _Chunk:
    n: int
    columns: dict[str, list]
    errors: list[str]
    groups: list[Group] = field(default_factory=list)
    searched: list[bool] = field(default_factory=list)  # per group: searches offloading where it does not fit
    priced: list[bool] = field(default_factory=list)  # per group: the request gives gpu_hour_cost

    def add(self, group: Group, req: dict[str, Any], workload: str) -> None:
        self.groups.append(group)
        self.searched.append(needs_offload_search(req, workload, "insufficient"))
        self.priced.append(req.get("gpu_hour_cost") is not None)


def _typed(values: Sequence[Any]) -> np.ndarray:
    """A number axis's values as int64 (all ints within 2**53) or float64."""
    if all(isinstance(v, int) and -EXACT_INT < v < EXACT_INT for v in values):
        return np.array(values, dtype=np.int64)
    return np.array(values, dtype=np.float64)


def _swept(axis: Axis, picked: np.ndarray, typed: np.ndarray) -> Any:
    """An axis's values at the picked rows: one Python number if they agree, else a :class:`Swept`."""
    if len(np.unique(picked)) == 1:
        return axis.values[int(picked[0])]
    if typed.dtype == np.float64 and not all(isinstance(v, float) for v in axis.values):
        raise NeedsRows("an axis mixing ints and floats, or ints past 2**53")
    return typed[picked].view(Swept)


def memory_figures(cat: Catalog, workload: str, result: BatchResult) -> dict[str, np.ndarray]:
    """``vram_usage``, ``capacity_gib``, ``actual_vram_percentage``, ``memory_status`` and ``problem``
    (why a configuration cannot run) for every row, by the response's rules (see :func:`headline`)."""
    n, values = result.n, result.values
    capacity = result.column("gpu_mem_gib")
    vram = np.zeros(n)
    for label, raw in component_bytes(cat.formulas.components(workload), values).items():
        raw = np.broadcast_to(np.asarray(raw, dtype=np.float64), (n,))
        shown = (raw > 0) | (label in ALWAYS_SHOWN)
        vram = vram + np.where(shown, round_like_python(raw / GIB, 2), 0.0)
    vram = round_like_python(vram, 2)
    with np.errstate(all="ignore"):
        share = np.where(capacity != 0, vram / capacity * 100, 0.0)
    actual = round_like_python(share, 1)
    status = np.full(n, "insufficient", dtype=object)
    for limit, name in reversed(STATUS):
        status[share <= limit] = name  # the unrounded share, as the response's memory_status
    problem = np.full(n, "", dtype=object)
    row_values = None
    for condition, message in configuration_checks(values, workload):
        hit = np.broadcast_to(np.asarray(condition, dtype=bool), (n,))
        if hit.any():
            row_values = as_lists(values) if row_values is None else row_values
            status[hit] = "error"
            for i in np.flatnonzero(hit).tolist():
                words = message(Row((row_values, i)))
                problem[i] = f"{problem[i]}; {words}" if problem[i] else words
    for condition, word in status_overrides(values, values, workload):
        hit = np.broadcast_to(np.asarray(condition, dtype=bool), (n,))
        status[hit & (status != "error")] = word
    return {"vram_usage": vram, "capacity_gib": capacity, "actual_vram_percentage": actual, "memory_status": status,
            "problem": problem}


def headline(cat: Catalog, workload: str, result: BatchResult, priced: np.ndarray) -> dict[str, np.ndarray]:
    """The response's headline figures for every row of a batch, by the response's own rules:
    components merged by label (:func:`~vramplan.estimate.component_bytes`), each rounded to 0.01
    GiB, summed and rounded; ``memory_status`` from the unrounded share, the percentage rounded to 0.1; a
    configuration error makes the status ``error`` (``problem`` words it) and
    :func:`~vramplan.estimate.status_overrides` apply; ``fits`` as the planner defines it; each
    speed figure rounded as the response rounds it; the ``serving`` object as
    :func:`vramplan.estimate._serving` words it (``priced``: rows whose request gives a GPU-hour price)."""
    figures = memory_figures(cat, workload, result)
    for name in RESULTS[workload]:
        if name in FIGURES:
            formula, digits = FIGURES[name]
            figures[name] = round_like_python(result.column(formula), digits)
    if workload == "inference":
        figures.update(_serving(result, priced))
    figures["binding"] = _binding(figures, figures["capacity_gib"], workload)
    figures["fits"] = figures["binding"] == None  # noqa: E711 - elementwise over an object array
    return figures


def _binding(figures: dict[str, np.ndarray], capacity: np.ndarray, workload: str) -> np.ndarray:
    """What keeps each row from fitting, as :func:`vramplan.planner.binding` says it (no headroom, no SLO);
    None where it fits."""
    status = figures["memory_status"]
    out = np.full(len(status), None, dtype=object)
    if workload == "inference":
        queued = figures["serving.queued_requests"]
        waiting = (figures["serving.load"] != "open_loop") & ~np.isnan(queued) & (np.nan_to_num(queued) != 0)
        out[waiting] = figures["serving.limited_by"][waiting]
        out[(figures["serving.load"] == "open_loop") & np.isnan(figures["serving.ttft_ms"])] = "capacity"
    out[np.isin(status, NOT_FITTING) | (figures["vram_usage"] > capacity + 1e-9)] = "memory"
    out[status == "error"] = "configuration"
    return out


def _serving(result: BatchResult, priced: np.ndarray) -> dict[str, np.ndarray]:
    """The ``serving`` object's fields for every row (see :func:`vramplan.estimate._serving`)."""
    column = result.column
    past = column("srv_past_capacity") != 0
    load = np.where(column("srv_open_loop") != 0, "open_loop", np.where(column("srv_static") != 0, "static_batch", "closed_loop"))

    def latency(name: str) -> np.ndarray:
        return np.where(past, np.nan, round_like_python(column(name) * 1000, 2))

    codes = column("srv_limited_code").astype(np.int64)
    words = np.array([LIMITED_BY.get(int(c), "") for c in range(int(codes.max(initial=0)) + 1)], dtype=object)
    output_tps = column("srv_output_tps")
    return {
        "serving.input_tokens": column("input_tokens").astype(np.int64),
        "serving.output_tokens": column("output_tokens").astype(np.int64),
        "serving.load": load.astype(object),
        "serving.running_sequences": round_like_python(column("srv_running"), 2),
        "serving.queued_requests": np.where(past, np.nan, round_like_python(column("srv_queued"), 2)),
        "serving.output_throughput_tps": round_like_python(output_tps, 1),
        "serving.total_throughput_tps": round_like_python(column("srv_total_tps"), 1),
        "serving.requests_per_second": round_like_python(column("srv_requests_per_s"), 4),
        "serving.ttft_ms": latency("srv_ttft_s"), "serving.itl_ms": latency("srv_itl_s"),
        "serving.e2e_latency_ms": latency("srv_e2e_s"),
        "serving.utilisation": round_like_python(column("srv_utilisation"), 3),
        "serving.limited_by": words[codes],
        "serving.cost_per_hour": np.where(priced, round_like_python(column("srv_cost_per_hour"), 4), np.nan),
        "serving.cost_per_million_output_tokens": np.where(priced & (output_tps > 0),
                                                           round_like_python(column("srv_cost_per_mtok"), 4), np.nan),
    }


def sweep(base: dict[str, Any], workload: str, axes: Sequence[Axis], catalog: Catalog | None = None,
          chunk: int = CHUNK) -> Iterator[Rows]:
    """The grid's rows in chunks (see :class:`Sweep`)."""
    return Sweep(base, workload, axes, catalog, chunk).chunks()
