"""Many estimates at once: the request pipeline once per group of similar requests, the formulas
once per batch.

The planner, ``vramplan sweep`` and the page's fit map ask thousands of requests that differ in a
few numbers (context, batch, users, GPUs). :func:`estimate_many` answers them as
:func:`vramplan.answer.estimate` answers each one — the same response, or the same error — in a
fraction of the time:

1. every body is validated as usual;
2. requests that differ only in top-level numbers form a group; the group goes through resolve and
   scenario **once**, with each differing number as a :class:`Swept` array of the rows' values.
   Arithmetic on a :class:`Swept` is elementwise, the same operations the scalar code does; any
   step that needs one value (an ``if``, ``min()``, ``int()``, a formatted message, an integer
   past 2**53, a division by zero) raises :class:`NeedsRows`, and that group goes through the
   pipeline row by row instead — slower, never different;
3. the groups' scenarios are stacked into columns and the formula graph is evaluated once for the
   whole batch (:func:`vramplan.batch.evaluate_batch`);
4. each row's response is assembled from its own numbers by :func:`vramplan.estimate.assemble`.

Rows that a single estimate would treat specially go through :func:`~vramplan.answer.estimate` itself:
a request for a trace, and ``enable_offloading`` without an amount where the request does not fit
(that searches for the fewest offloaded layers).

``tests/test_many.py`` checks every response and every refusal against one-at-a-time estimates
on random requests and on the request schema's extremes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from . import request as request_mod
from . import scenario as scenario_mod
from .batch import BatchResult, evaluate_batch
from .catalog import Catalog, get_catalog
from .elementwise import NeedsRows
from .errors import RequestError, VramplanError
from .answer import estimate as run
from .estimate import assemble, needs_offload_search, negative_output, response_targets
from .pipeline import notes_of, with_unknown_keys
from .resolve import Resolved, resolve
from .scenario import Notes

#: Integers beyond this are exact in Python but not in binary64: a group that reaches one goes row by row.
EXACT_INT = 2**53
#: Rows evaluated together (bounds the memory of one batch: ~300 columns of this many float64).
CHUNK = 16384


class Swept(np.ndarray):
    """One request number across the rows of a group: elementwise arithmetic and comparisons only.

    Python code written for one request runs unchanged on it as long as it only computes with the
    value; anything that needs a single value raises :class:`NeedsRows` instead of quietly
    taking the first row's or the whole array's.
    """

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__" or any(o is not None for o in kwargs.get("out") or ()):
            raise NeedsRows(f"{ufunc.__name__}.{method} over rows")  # a reduction or an in-place update
        plain = [x.view(np.ndarray) if isinstance(x, Swept) else x for x in inputs]
        if ufunc in (np.true_divide, np.floor_divide, np.remainder, np.divmod) and np.any(np.equal(plain[1], 0)):
            raise NeedsRows("division by zero in some row")  # Python raises there; numpy would not
        result = getattr(ufunc, method)(*plain, **kwargs)
        if not isinstance(result, np.ndarray):
            raise NeedsRows(f"{ufunc.__name__} gave {type(result).__name__}")
        if result.dtype.kind in "iu":  # integers: Python's grow, numpy's wrap; check in floating point
            approx = getattr(ufunc, method)(*[np.asarray(x, dtype=np.float64) for x in plain], **kwargs)
            if np.any(np.abs(approx) >= EXACT_INT):
                raise NeedsRows(f"{ufunc.__name__} past 2**53")
        return result.view(Swept)

    def _one_value(self, *args, **kwargs):
        raise NeedsRows("one value of a swept request field was needed")

    __bool__ = __len__ = __iter__ = __format__ = __str__ = __repr__ = __int__ = __float__ = __index__ = _one_value
    __complex__ = __round__ = __getitem__ = __contains__ = __array_function__ = _one_value


def swept(values: Sequence[Any]) -> Any:
    """The values of one field across rows: a plain number if all rows agree, else a :class:`Swept`."""
    first = values[0]
    if all(type(v) is type(first) and v == first for v in values):
        return first
    if isinstance(first, int) and not all(-EXACT_INT < v < EXACT_INT for v in values):
        raise NeedsRows("an integer past 2**53")
    return np.array(values, dtype=np.int64 if isinstance(first, int) else np.float64).view(Swept)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Group:
    """Rows that share a resolved request and a scenario (plain numbers and :class:`Swept` arrays)."""

    res: Resolved
    scenario: dict[str, Any]
    rows: list[Any]  # the callers' row handles, in order
    requests: list[dict[str, Any]] | None = None  # each row's validated request, when the caller has them
    notes: Notes = field(default_factory=Notes)  # what the scenario stage said: the same for every row (a
    # message naming one row's number needs rows)

    @property
    def size(self) -> int:
        return len(self.rows)


def group_scenario(cat: Catalog, req: dict[str, Any], workload: str) -> tuple[Resolved, dict[str, Any]]:
    """resolve and scenario for a request whose numbers may be :class:`Swept` (may raise NeedsRows)."""
    res, s, _ = group_scenario_with_notes(cat, req, workload)
    return res, s


def group_scenario_with_notes(cat: Catalog, req: dict[str, Any], workload: str) -> tuple[Resolved, dict[str, Any], Notes]:
    """:func:`group_scenario` and what the scenario stage said (:class:`~vramplan.scenario.Notes`)."""
    try:
        res = resolve(cat, req, workload)
        return (res, *scenario_mod.build_with_notes(res))
    except (RequestError, NeedsRows):
        raise
    except (TypeError, ValueError, ArithmeticError) as exc:  # code that took an array for one value
        raise NeedsRows(f"{type(exc).__name__}: {exc}") from None


def group_key(req: dict[str, Any]) -> str:
    """Requests with the same key differ only in top-level numbers (of the same types)."""
    fixed = {k: v for k, v in req.items() if not is_number(v)}
    kinds = sorted((k, type(v).__name__) for k, v in req.items() if is_number(v))
    return json.dumps([fixed, kinds], sort_keys=True, default=repr)


def stack(groups: list[Group]) -> tuple[dict[str, Any], int]:
    """The groups' scenarios as columns over their rows, in group order: a number every row shares
    stays a number; anything else becomes one float64 array."""
    n = sum(g.size for g in groups)
    names = set(groups[0].scenario)
    for g in groups[1:]:
        names &= g.scenario.keys()  # a runtime's own constants: no formula reads one all runtimes lack
    columns: dict[str, Any] = {}
    for name in groups[0].scenario:
        if name not in names:
            continue
        values = [g.scenario[name] for g in groups]
        first = values[0]
        if not isinstance(first, np.ndarray) and all(
                not isinstance(v, np.ndarray) and type(v) is type(first) and v == first for v in values):
            columns[name] = first
            continue
        if not any(isinstance(v, np.ndarray) for v in values):
            columns[name] = np.repeat(np.array(values, dtype=np.float64), [g.size for g in groups])
            continue
        col = np.empty(n, dtype=np.float64)
        start = 0
        for g, v in zip(groups, values):
            col[start:start + g.size] = v.view(np.ndarray) if isinstance(v, np.ndarray) else v
            start += g.size
        columns[name] = col
    return columns, n


def evaluate_groups(cat: Catalog, groups: list[Group], workload: str) -> BatchResult:
    columns, n = stack(groups)
    return evaluate_batch(cat.formulas, columns, n, response_targets(cat.formulas.components(workload), workload))


class Row(Mapping):
    """One row of some column sets (each: name → a number all rows share, or a Python list, with
    the row's index in it), read on demand: a response reads a few dozen of ~300 values, so none
    is copied out ahead. The first set holding a name answers for it."""

    __slots__ = ("layers",)

    def __init__(self, *layers: tuple[dict[str, Any], int]):
        self.layers = layers

    def __getitem__(self, name: str) -> Any:
        for columns, row in self.layers:
            if name in columns:
                value = columns[name]
                return value[row] if value.__class__ is list else value
        raise KeyError(name)

    def __iter__(self):
        seen: set[str] = set()
        for columns, _ in self.layers:
            for name in columns:
                if name not in seen:
                    seen.add(name)
                    yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)


def as_lists(values: dict[str, Any]) -> dict[str, Any]:
    """Arrays as Python lists (ints stay ints, floats become floats), numbers as they are."""
    return {k: (v.view(np.ndarray).tolist() if isinstance(v, np.ndarray) else v) for k, v in values.items()}


# -- estimate_many --------------------------------------------------------------------------------

def estimate_many(bodies: Iterable[dict[str, Any]], workload: str, catalog: Catalog | None = None) -> list[dict[str, Any] | VramplanError]:
    """Each body's response, or the :class:`~vramplan.errors.VramplanError` its single estimate
    raises, in order: what ``[run(b, workload, catalog) for b in bodies]`` gives, errors returned
    instead of raised."""
    cat = catalog or get_catalog()
    bodies = list(bodies)
    out: list[Any] = [None] * len(bodies)
    for start in range(0, len(bodies), CHUNK):
        _estimate_chunk(cat, bodies[start:start + CHUNK], workload, out, start)
    return out


def _single(cat: Catalog, body: dict[str, Any], workload: str) -> dict[str, Any] | VramplanError:
    try:
        return run(body, workload, cat)
    except VramplanError as exc:
        return exc


def _estimate_chunk(cat: Catalog, bodies: list[dict[str, Any]], workload: str, out: list, offset: int) -> None:
    by_key: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for i, body in enumerate(bodies):
        if isinstance(body, dict) and body.get("trace"):
            out[offset + i] = _single(cat, body, workload)
            continue
        try:
            req, notes = request_mod.check(body, workload)
        except RequestError as exc:
            out[offset + i] = with_unknown_keys(cat, body, exc, workload)
            continue
        if notes:  # a request with ignored inputs says so in its own warnings: row by row (rare)
            out[offset + i] = _single(cat, body, workload)
            continue
        by_key.setdefault(group_key(req), []).append((offset + i, req))
    groups: list[Group] = []
    for members in by_key.values():
        groups.extend(_groups_of(cat, members, workload, out))
    if not groups:
        return
    result = evaluate_groups(cat, groups, workload)
    components = cat.formulas.components(workload)
    formula_values = as_lists({f.id: result.values[f.id] for f in result.formulas})
    refused = result.refused_by.tolist()
    row = 0
    for g in groups:
        scenario = as_lists(g.scenario)
        for j, (index, req) in enumerate(zip(g.rows, g.requests)):
            v = Row((formula_values, row), (scenario, j))
            if refused[row] >= 0 or negative_output(v, workload) is not None:
                # a formula the row breaks: run() names the request's field to blame, or the formula
                out[index] = _single(cat, bodies[index - offset], workload)
            else:
                s = Row((scenario, j))
                res = replace(g.res, request=req)
                response = assemble(res, s, v, components, None, notes_of(res, g.notes))
                if needs_offload_search(req, workload, response["memory_status"]):
                    response = _single(cat, bodies[index - offset], workload)
                out[index] = response
            row += 1


def _groups_of(cat: Catalog, members: list[tuple[int, dict[str, Any]]], workload: str, out: list) -> list[Group]:
    """One group for requests that differ only in numbers, or one per row where the pipeline needs rows."""
    if len(members) > 1:
        first = members[0][1]
        req = dict(first)
        try:
            for name, value in first.items():
                if is_number(value):
                    req[name] = swept([m[1][name] for m in members])
            res, s, notes = group_scenario_with_notes(cat, req, workload)
            return [Group(res, s, [m[0] for m in members], [m[1] for m in members], notes)]
        except RequestError as exc:  # raised the same way for every row: it did not look at the numbers
            for index, _ in members:
                out[index] = exc
            return []
        except NeedsRows:
            pass
    groups = []
    for index, req in members:
        try:
            res = resolve(cat, req, workload)
            s, notes = scenario_mod.build_with_notes(res)
            groups.append(Group(res, s, [index], [req], notes))
        except RequestError as exc:
            out[index] = exc
    return groups
