"""Evaluate the formula graph over many scenarios at once: numpy arrays through the same checked trees.

A sweep, the planner or the page's fit map asks the same formulas thousands of times with a few
inputs changed. :func:`evaluate_batch` takes one column per scenario variable — a plain number
where every scenario agrees, a numpy array where they differ — and evaluates each formula once for
the whole batch, in the formula set's dependency order:

* a formula whose inputs are all plain numbers runs once through its compiled closure, exactly as
  a single estimate runs it;
* any other formula runs once as numpy operations over the rows, compiled from the same checked
  tree (:func:`compile_batch`) with the operator meanings of :mod:`vramplan.semantics`; each
  operation that would raise in Python (division by zero, a power or ``exp`` out of range, a
  function outside its domain) marks the rows where it would, and only the rows that would reach
  it (``a if c else b``, ``and``/``or`` and chained comparisons short-circuit per row);
* a tree this module has no exact numpy form for (a function it does not know, an unusual
  arity) runs row by row through the closures: slower, never different.

A refused row keeps the first refusal in evaluation order, named exactly as a single estimate
names it (:meth:`BatchResult.error`), and takes no further part. Numbers are binary64 throughout;
where a single estimate computes with exact integers beyond 2**53 the two differ in the last bits
only, below the response's rounding.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from . import semantics
from .errors import FormulaError
from .formulaset import Formula, FormulaSet

#: Codes of the refusals a numpy operation can detect, in :mod:`vramplan.semantics`' words.
REASONS = (semantics.DIVISION_BY_ZERO, semantics.TOO_LARGE, semantics.DOMAIN, semantics.NOT_A_NUMBER)
DIV0, TOO_LARGE, DOMAIN, NAN = 1, 2, 3, 4
_DEAD = -1  # a row refused by an earlier formula


class _Ctx:
    """Per-formula refusal codes, one per row: 0 = fine so far; ``marked`` once any row is refused."""

    __slots__ = ("code", "marked")

    def __init__(self, code: np.ndarray):
        self.code = code
        self.marked = False

    def fail(self, reason: int, cond: Any, active: Any) -> None:
        """Mark rows where ``cond`` holds (among ``active`` ones not already refused) as refused."""
        if not np.any(cond):
            return
        mask = (self.code == 0) & cond
        if active is not None:
            mask &= active
        self.code[mask] = reason
        self.marked = True


Fn = Callable[[Mapping[str, Any], _Ctx, Any], Any]


def _both(active: Any, cond: Any) -> Any:
    return cond if active is None else active & cond


def _truthy(x: Any) -> Any:
    return np.not_equal(x, 0.0)


def _as_float(x: Any) -> Any:
    return x.astype(np.float64) if isinstance(x, np.ndarray) else np.float64(x)


class Unsupported(Exception):
    """A tree (or part) with no exact numpy form here; the formula runs row by row instead."""


_BIN = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply}
_DIVIDING = {ast.Div: np.true_divide, ast.FloorDiv: np.floor_divide, ast.Mod: np.remainder}
_CMP = {ast.Eq: np.equal, ast.NotEq: np.not_equal, ast.Lt: np.less, ast.LtE: np.less_equal,
        ast.Gt: np.greater, ast.GtE: np.greater_equal}


def _power(a: Any, b: Any, ctx: _Ctx, active: Any) -> Any:
    finite = np.isfinite(a) & np.isfinite(b)
    ctx.fail(DIV0, (a == 0) & (b < 0), active)  # Python: zero to a negative power
    ctx.fail(DOMAIN, finite & (a < 0) & (b != np.floor(b)), active)  # Python: a complex number
    result = np.power(a, b)
    ctx.fail(TOO_LARGE, finite & np.isinf(result), active)  # Python: OverflowError
    return result


def _sequential(compare: Callable) -> Callable:
    """Python's min/max over several arguments: keep the first, replace when ``compare(x, kept)``."""
    def pick(args: list, ctx: _Ctx, active: Any) -> Any:
        kept = args[0]
        for x in args[1:]:
            kept = np.where(compare(x, kept), x, kept)
        return kept
    return pick


def _ceil_or_floor(rounding: Callable) -> Callable:
    def apply(args: list, ctx: _Ctx, active: Any) -> Any:
        (x,) = args
        ctx.fail(TOO_LARGE, np.isinf(x), active)  # math.ceil(inf): OverflowError
        ctx.fail(DOMAIN, np.isnan(x), active)  # math.ceil(nan): ValueError
        return rounding(x)
    return apply


def _log_like(log: Callable) -> Callable:
    def apply(args: list, ctx: _Ctx, active: Any) -> Any:
        (x,) = args
        ctx.fail(DOMAIN, x <= 0, active)
        return log(x)
    return apply


def _log(args: list, ctx: _Ctx, active: Any) -> Any:
    if len(args) == 1:
        return _log_like(np.log)(args, ctx, active)
    x, base = args  # math.log(x, base) = log(x) / log(base), each checked, then divided
    ctx.fail(DOMAIN, x <= 0, active)
    ctx.fail(DOMAIN, base <= 0, active)
    ctx.fail(DIV0, base == 1, active)
    return np.log(x) / np.log(base)


def _sqrt(args: list, ctx: _Ctx, active: Any) -> Any:
    (x,) = args
    ctx.fail(DOMAIN, x < 0, active)
    return np.sqrt(x)


def _exp(args: list, ctx: _Ctx, active: Any) -> Any:
    (x,) = args
    result = np.exp(x)
    ctx.fail(TOO_LARGE, np.isfinite(x) & np.isinf(result), active)
    return result


def _abs(args: list, ctx: _Ctx, active: Any) -> Any:
    (x,) = args
    return np.abs(x)


def _clamp(args: list, ctx: _Ctx, active: Any) -> Any:
    x, lo, hi = args
    return np.where(x < lo, lo, np.where(x > hi, hi, x))


def _round_up(args: list, ctx: _Ctx, active: Any) -> Any:
    x, multiple = args
    bad = multiple <= 0
    ctx.fail(DIV0, bad, active)
    quotient = x / multiple
    ctx.fail(TOO_LARGE, np.isinf(quotient), _both(active, ~bad))
    ctx.fail(DOMAIN, np.isnan(quotient), _both(active, ~bad))
    return np.ceil(quotient) * multiple


def _argmin(args: list, ctx: _Ctx, active: Any) -> Any:
    """semantics._argmin: keep the first, replace when smaller (min's choice), its position from 1."""
    kept, at = args[0], np.float64(1)
    for k, x in enumerate(args[1:], start=2):
        smaller = np.less(x, kept)
        kept, at = np.where(smaller, x, kept), np.where(smaller, np.float64(k), at)
    return at


def _choose(args: list, ctx: _Ctx, active: Any) -> Any:
    index, values = args[0], args[1:]
    ctx.fail(DOMAIN, ~((index >= 1) & (index <= len(values)) & (index == np.floor(index))), active)
    result = values[0]
    for k, x in enumerate(values[1:], start=2):
        result = np.where(index == k, x, result)
    return result


#: name → (allowed argument counts, numpy form) for each function of :data:`vramplan.semantics.FUNCTIONS`.
FUNCTIONS: dict[str, tuple[Callable[[int], bool], Callable]] = {
    "min": (lambda n: n >= 2, _sequential(np.less)),
    "max": (lambda n: n >= 2, _sequential(np.greater)),
    "abs": (lambda n: n == 1, _abs),
    "ceil": (lambda n: n == 1, _ceil_or_floor(np.ceil)),
    "floor": (lambda n: n == 1, _ceil_or_floor(np.floor)),
    "sqrt": (lambda n: n == 1, _sqrt),
    "log2": (lambda n: n == 1, _log_like(np.log2)),
    "log": (lambda n: n in (1, 2), _log),
    "exp": (lambda n: n == 1, _exp),
    "clamp": (lambda n: n == 3, _clamp),
    "round_up": (lambda n: n == 2, _round_up),
    "argmin": (lambda n: n >= 2, _argmin),
    "choose": (lambda n: n >= 2, _choose),
}


def compile_batch(node: ast.AST) -> Fn:
    """A numpy function for a checked tree; :class:`Unsupported` if part of it has no exact form."""
    if isinstance(node, ast.Expression):
        return compile_batch(node.body)
    if isinstance(node, ast.Constant):
        value = np.float64(node.value)
        return lambda env, ctx, active: value
    if isinstance(node, ast.Name):
        name = node.id
        return lambda env, ctx, active: env[name]
    if isinstance(node, ast.BinOp):
        left, right, kind = compile_batch(node.left), compile_batch(node.right), type(node.op)
        if kind in _BIN:
            op = _BIN[kind]
            return lambda env, ctx, active: op(left(env, ctx, active), right(env, ctx, active))
        if kind in _DIVIDING:
            op = _DIVIDING[kind]

            def divide(env, ctx, active):
                a, b = left(env, ctx, active), right(env, ctx, active)
                ctx.fail(DIV0, b == 0, active)
                return op(a, b)
            return divide
        if kind is ast.Pow:
            return lambda env, ctx, active: _power(left(env, ctx, active), right(env, ctx, active), ctx, active)
        raise Unsupported(kind.__name__)
    if isinstance(node, ast.UnaryOp):
        operand = compile_batch(node.operand)
        if isinstance(node.op, ast.USub):
            return lambda env, ctx, active: np.negative(operand(env, ctx, active))
        if isinstance(node.op, ast.UAdd):
            return lambda env, ctx, active: _as_float(operand(env, ctx, active))
        if isinstance(node.op, ast.Not):
            return lambda env, ctx, active: _as_float(np.equal(operand(env, ctx, active), 0.0))
        raise Unsupported(type(node.op).__name__)
    if isinstance(node, ast.Compare):
        first = compile_batch(node.left)
        links = [(_CMP[type(o)], compile_batch(c)) for o, c in zip(node.ops, node.comparators)]

        def compare(env, ctx, active):
            left = first(env, ctx, active)
            holds: Any = True
            for op, right_fn in links:  # later links are reached only where the earlier ones held
                if holds is not True and not np.any(holds):
                    break
                right = right_fn(env, ctx, _both(active, holds) if holds is not True else active)
                holds = op(left, right) if holds is True else holds & op(left, right)
                left = right
            return _as_float(holds)
        return compare
    if isinstance(node, ast.BoolOp):
        parts = [compile_batch(x) for x in node.values]
        is_and = isinstance(node.op, ast.And)

        def boolop(env, ctx, active):
            result = parts[0](env, ctx, active)
            going = _truthy(result) if is_and else ~_truthy(result)  # rows that evaluate the next part
            for part in parts[1:]:
                if not np.any(going):
                    break
                value = part(env, ctx, _both(active, going))
                result = np.where(going, value, result)
                going = going & (_truthy(value) if is_and else ~_truthy(value))
            return result
        return boolop
    if isinstance(node, ast.IfExp):
        test, body, orelse = compile_batch(node.test), compile_batch(node.body), compile_batch(node.orelse)

        def choose(env, ctx, active):
            t = _truthy(test(env, ctx, active))
            if np.all(t):
                return body(env, ctx, active)
            if not np.any(t):
                return orelse(env, ctx, active)
            return np.where(t, body(env, ctx, _both(active, t)), orelse(env, ctx, _both(active, ~t)))
        return choose
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in FUNCTIONS or name not in semantics.FUNCTIONS or not FUNCTIONS[name][0](len(node.args)):
            raise Unsupported(f"{name}() with {len(node.args)} argument(s)")
        apply = FUNCTIONS[name][1]
        args = [compile_batch(a) for a in node.args]
        return lambda env, ctx, active: apply([a(env, ctx, active) for a in args], ctx, active)
    raise Unsupported(type(node).__name__)


@lru_cache(maxsize=4096)
def _compiled(formula: Formula) -> Fn | None:
    try:
        return compile_batch(formula.tree)
    except Unsupported:
        return None


@dataclass
class BatchResult:
    """Every formula's value (a number where all rows agree, else an array) and each row's refusal."""

    n: int
    values: dict[str, Any]
    refused_by: np.ndarray  # per row: index into ``formulas`` of the refusing formula, or -1
    reason: np.ndarray  # per row: index into ``reasons``
    formulas: list[Formula]
    reasons: list[str] = field(default_factory=lambda: list(REASONS))

    @property
    def ok(self) -> np.ndarray:
        return self.refused_by < 0

    def error(self, row: int) -> FormulaError | None:
        """The refusal a single estimate of this row raises, or None."""
        k = int(self.refused_by[row])
        if k < 0:
            return None
        f = self.formulas[k]
        return semantics.refused(f.id, f.file, self.reasons[int(self.reason[row]) - 1])

    def column(self, name: str, dtype: Any = np.float64) -> np.ndarray:
        """One value as an array of n rows (a shared number repeated)."""
        value = self.values[name]
        if isinstance(value, np.ndarray):
            return value
        return np.full(self.n, value, dtype=dtype)

    def row(self, row: int, names: Iterable[str]) -> dict[str, Any]:
        """The values of one row as plain Python numbers (shared ones keep their Python type)."""
        out = {}
        for name in names:
            value = self.values[name]
            out[name] = value[row].item() if isinstance(value, np.ndarray) else value
        return out


def evaluate_batch(formulas: FormulaSet, columns: Mapping[str, Any], n: int, targets: Iterable[str]) -> BatchResult:
    """Evaluate what ``targets`` need for ``n`` scenarios given as columns (numbers or length-n arrays)."""
    values: dict[str, Any] = {}
    for name, col in columns.items():
        if isinstance(col, np.ndarray):
            if col.ndim == 0:
                col = col.item()
            elif col.shape != (n,):
                raise ValueError(f"column {name} has shape {col.shape}, expected ({n},)")
            else:
                col = col.astype(np.float64, copy=False)
        elif isinstance(col, np.generic):
            col = col.item()  # a numpy scalar would divide by zero quietly; a Python number raises
        values[name] = col
    plan = formulas.plan(targets)
    refused_by = np.full(n, -1, dtype=np.int32)
    reason = np.zeros(n, dtype=np.int16)
    result = BatchResult(n, values, refused_by, reason, plan)
    refused = False  # any row refused so far
    with np.errstate(all="ignore"):
        for index, f in enumerate(plan):
            if not any(isinstance(values[name], np.ndarray) for name in f.inputs):
                values[f.id] = _shared(f, values, result, index)
                refused = refused or bool((result.refused_by >= 0).any())
                continue
            fn = _compiled(f)
            if fn is None:
                values[f.id] = _row_by_row(f, values, result, index)
                refused = refused or bool((result.refused_by >= 0).any())
                continue
            code = np.where(refused_by < 0, 0, _DEAD).astype(np.int16) if refused else np.zeros(n, dtype=np.int16)
            ctx = _Ctx(code)
            try:
                env = {name: _numpy_value(values[name]) for name in f.inputs}
                value = fn(env, ctx, None)
            except Exception as exc:
                why = semantics.refusal(exc)
                if why is None:
                    raise
                _refuse_all(result, index, why)
                refused = True
                values[f.id] = 0.0
                continue
            if not (isinstance(value, np.ndarray) and value.shape == (n,) and value.dtype == np.float64):
                value = np.array(np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)))
            if not np.isfinite(value).all():
                code[(code == 0) & np.isnan(value)] = NAN
                code[(code == 0) & np.isinf(value)] = TOO_LARGE
                ctx.marked = True
            if ctx.marked:
                new = code > 0
                if new.any():
                    refused = True
                    refused_by[new] = index
                    reason[new] = code[new]
                    value = np.where(new, 0.0, value)
            values[f.id] = value
    return result


def _numpy_value(value: Any) -> Any:
    """An input as numpy computes with it: arrays as they are, numbers as binary64 scalars (never
    numpy integers, which would wrap around where Python's grow)."""
    return value if isinstance(value, np.ndarray) else np.float64(value)


def _refuse_all(result: BatchResult, index: int, reason: str) -> None:
    alive = result.refused_by < 0
    result.refused_by[alive] = index
    result.reason[alive] = _reason_code(result, reason)


def _reason_code(result: BatchResult, reason: str) -> int:
    if reason not in result.reasons:
        result.reasons.append(reason)
    return result.reasons.index(reason) + 1


def _checked(f: Formula, env: dict[str, Any]) -> tuple[Any, str | None]:
    """One evaluation through the formula's closure: ``(value, None)``, or ``(0.0, reason)`` for a refusal the
    evaluators share (:mod:`vramplan.semantics`); anything else is a bug and propagates."""
    try:
        return semantics.check(f.fn(env))
    except Exception as exc:
        reason = semantics.refusal(exc)
        if reason is None:
            raise
        return 0.0, reason


def _shared(f: Formula, values: dict[str, Any], result: BatchResult, index: int) -> Any:
    """A formula whose inputs every row shares: once, through its closure, as a single estimate runs it."""
    value, reason = _checked(f, values)
    if reason:
        _refuse_all(result, index, reason)
        return 0.0
    return value


def _gate(tree: ast.AST) -> tuple[str, float] | None:
    """``(flag, value)`` for an expression ``<anything> if flag else <number>``: the rows whose flag is 0 take the
    number without evaluating the rest (the simulated training reserve is such a formula, 0 for inference)."""
    body = tree.body if isinstance(tree, ast.Expression) else tree
    if (isinstance(body, ast.IfExp) and isinstance(body.test, ast.Name) and isinstance(body.orelse, ast.Constant)
            and isinstance(body.orelse.value, (int, float)) and not isinstance(body.orelse.value, bool)):
        return body.test.id, float(body.orelse.value)
    return None


def _row_by_row(f: Formula, values: dict[str, Any], result: BatchResult, index: int) -> np.ndarray:
    """A formula with no numpy form: each live row through its closure (only the rows that need it, where the
    formula is gated by a flag: :func:`_gate`)."""
    columns = {name: (values[name].tolist() if isinstance(values[name], np.ndarray) else values[name]) for name in f.inputs}
    arrays = [name for name in f.inputs if isinstance(values[name], np.ndarray)]
    out = np.zeros(result.n, dtype=np.float64)
    env = dict(columns)
    live = np.flatnonzero(result.refused_by < 0)
    gate = _gate(f.tree)
    if gate is not None:
        flag = np.broadcast_to(np.asarray(values[gate[0]], dtype=np.float64), (result.n,))[live]
        out[live[flag == 0]] = gate[1]
        live = live[flag != 0]
    for row in live.tolist():
        for name in arrays:
            env[name] = columns[name][row]
        value, reason = _checked(f, env)
        if reason:
            result.refused_by[row] = index
            result.reason[row] = _reason_code(result, reason)
            continue
        out[row] = value
    return out
