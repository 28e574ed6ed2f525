"""What a formula expression means: one table of operators and functions for every evaluator.

vramplan evaluates a checked expression (:func:`vramplan.formulaset.parse_expression`) three
ways: closures compiled from the tree (:mod:`vramplan.compiled`, the default), simpleeval walking
the tree (``VRAMPLAN_EVALUATOR=simpleeval``, the reference) and numpy over many scenarios at once
(:mod:`vramplan.batch`). They give the same values and the same refusals because each takes its
meaning from here:

* **Arithmetic** is Python's on Python numbers (ints stay exact, ``/`` is true division,
  ``//`` and ``%`` floor), through :data:`BINARY`, :data:`COMPARE` and :data:`UNARY`, which
  simpleeval receives as its operator table in place of its own.
* **Powers** (:func:`power`): the exponent is a numeric literal checked at load, so the base may
  be any size; simpleeval's own limit (base and exponent at most 4,000,000, which refused a
  5,000,000-token context while the closures answered) does not apply. A result that is not a
  real number (a negative base to a fractional power) is a domain error, not a complex number.
* **Functions** are the whitelist :data:`FUNCTIONS` and nothing else (two of them,
  ``training_allocator_reserve`` and ``inference_allocator_reserve``, replay a simulated allocation
  sequence: :mod:`vramplan.allocator`).
* **Every formula's value** (:func:`check`) is a finite real number within binary64's range;
  booleans become 1.0 / 0.0.

Refusals name the formula and one of these reasons, whichever evaluator ran:
:data:`DIVISION_BY_ZERO` (``/``, ``//`` or ``%`` by zero, zero to a negative power,
``round_up`` to a non-positive multiple), :data:`TOO_LARGE` (a power, ``exp`` or integer
conversion out of range, or a value beyond binary64), :data:`DOMAIN` (``sqrt``/``log``/
``log2`` outside their domain, ``ceil``/``floor`` of NaN, a complex power, ``choose`` with an
index that is not a whole number from 1 to its count of values, ``betainc`` outside
``a, b > 0, 0 <= x <= 1`` or with a shape beyond ``BETAINC_MAX_SHAPE``) and
:data:`NOT_A_NUMBER` (a NaN value).
"""

from __future__ import annotations

import ast
import math
import operator
import sys
from collections.abc import Callable
from typing import Any

from .allocator.inference import reserve_bytes as _inference_allocator_reserve
from .allocator.training import reserve_bytes as _training_allocator_reserve
from .errors import FormulaError

#: Largest magnitude a formula's value may have (binary64's largest finite number).
MAX_VALUE = sys.float_info.max

DIVISION_BY_ZERO = "division by zero"
TOO_LARGE = "result too large"
DOMAIN = "cannot be evaluated: math domain error"
NOT_A_NUMBER = "result is not a number"


def power(a: Any, b: Any) -> Any:
    """``a ** b`` with a real result: zero to a negative power divides by zero, a float result out
    of range is too large (both raised by Python), a complex result is a domain error."""
    result = a ** b
    if result.__class__ is complex:
        raise ValueError("math domain error")
    return result


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _argmin(*values: float) -> int:
    """The position (1-based) of the smallest argument, the first of equals: ``min``'s choice (keep the first, replace
    when smaller), so a NaN is kept only where it comes first - the protocol, kernel or path whose cost line is
    lowest, without writing each line twice."""
    if len(values) < 2:
        raise TypeError("argmin() takes at least 2 arguments")
    best = 0
    for i in range(1, len(values)):
        if values[i] < values[best]:
            best = i
    return best + 1


def _choose(index: float, *values: float) -> float:
    """The ``index``-th (1-based) of the values - what ``argmin`` picked; an index that is not a whole number from 1
    to the count of values is a math domain error."""
    if not values:
        raise TypeError("choose() takes an index and at least 1 value")
    if not (1 <= index <= len(values) and index == math.floor(index)):
        raise ValueError("math domain error")
    return values[int(index) - 1]


#: Largest shape ``betainc`` takes: its prefactor is exp(lgamma(a + b) - lgamma(a) - lgamma(b) + ...), and the
#: lgammas' rounding (an ulp of lgamma(1e10) ~ 2.2e11 is 3e-5) would be all the answer has beyond this.
BETAINC_MAX_SHAPE = 1e10
_BETAINC_MAX_TERMS = 100_000
_TINY = 1e-300


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz), which converges fast for x < (a + 1) / (a + b + 2):
    Numerical Recipes 3rd ed. 6.4 (betacf), DLMF 8.17.22. About 2,300 terms at a = b = 1e8, x = 1/2."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _BETAINC_MAX_TERMS):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + aa / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            return h
    raise ValueError("math domain error")  # not reached below BETAINC_MAX_SHAPE (shapes need ~ their cube root of terms)


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) - the distribution function of a beta(a, b) variable at x,
    and of binomial and negative binomial counts (P(NB(r, q) <= n) = I_{1-q}(r, n + 1)). Shapes a, b > 0 up to
    BETAINC_MAX_SHAPE and 0 <= x <= 1, else a math domain error."""
    a, b, x = float(a), float(b), float(x)
    if not (0.0 < a <= BETAINC_MAX_SHAPE and 0.0 < b <= BETAINC_MAX_SHAPE and 0.0 <= x <= 1.0):
        raise ValueError("math domain error")
    if x == 0.0 or x == 1.0:
        return x
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        value = front * _beta_fraction(a, b, x) / a
    else:
        value = 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b
    return min(max(value, 0.0), 1.0)


def _round_up(x: float, multiple: float) -> float:
    """``x`` rounded up to a whole multiple (block and padding sizes)."""
    if multiple <= 0:
        raise ZeroDivisionError("round_up to a non-positive multiple")
    return math.ceil(x / multiple) * multiple


#: The only functions a formula may call.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min, "max": max, "abs": abs, "ceil": math.ceil, "floor": math.floor,
    "sqrt": math.sqrt, "log2": math.log2, "exp": math.exp, "log": math.log,
    "clamp": _clamp, "round_up": _round_up, "argmin": _argmin, "choose": _choose,
    # A continued fraction with no numpy form: a batch evaluates formulas that call it row by row.
    "betainc": _betainc,
    # A training run's or a generation's allocation sequence replayed through the caching-allocator
    # model: bytes reserved beyond the allocated peak (vramplan.allocator.training / .inference; no
    # numpy form, so a batch evaluates them row by row, memoised per shape).
    "training_allocator_reserve": _training_allocator_reserve,
    "inference_allocator_reserve": _inference_allocator_reserve,
}

BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: power,
}
COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}
UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
#: Every operator, as simpleeval takes them (it looks up BinOp, Compare and UnaryOp nodes alike).
OPERATORS: dict[type, Callable[..., Any]] = {**BINARY, **COMPARE, **UNARY}


def where(formula_id: str, file: str) -> str:
    """How a refusal names its formula."""
    return f"formula {formula_id} ({file})"


def refusal(exc: BaseException) -> str | None:
    """The reason for an exception raised while evaluating, or None for one that is not a refusal."""
    if isinstance(exc, ZeroDivisionError):
        return DIVISION_BY_ZERO
    if isinstance(exc, OverflowError):
        return TOO_LARGE
    if isinstance(exc, ValueError):
        return DOMAIN
    if isinstance(exc, (TypeError, KeyError)):
        return f"cannot be evaluated: {exc!r}"
    return None


def check(value: Any) -> tuple[Any, str | None]:
    """A formula's value as the engine keeps it, or the reason it is refused."""
    if value is True or value is False:
        return (1.0 if value else 0.0), None
    cls = value.__class__
    if cls is float or isinstance(value, float):
        if value != value:
            return value, NOT_A_NUMBER
        if value in (math.inf, -math.inf):
            return value, TOO_LARGE
        return value, None
    if cls is int or isinstance(value, int):
        return value, (None if -MAX_VALUE <= value <= MAX_VALUE else TOO_LARGE)
    return value, f"gave {value!r}, not a finite number"


def refused(formula_id: str, file: str, reason: str) -> FormulaError:
    """The error for a refused evaluation, naming the formula; ``.formula`` carries its id, so the
    estimate can tell a request that breaks a formula from a broken formula (estimate._blame)."""
    err = FormulaError([(where(formula_id, file), reason)])
    err.formula = formula_id
    return err


def checked(formula_id: str, file: str, value: Any) -> Any:
    """:func:`check`, raising a :class:`FormulaError` naming the formula for a refused value."""
    value, reason = check(value)
    if reason:
        raise refused(formula_id, file, reason)
    return value
