"""Arithmetic that reads the same for one request and for many.

The request pipeline (validate → resolve → scenario) is written for one request. To estimate many
requests that differ only in numbers, :mod:`vramplan.many` runs it once with those numbers as
arrays of the rows' values: plain arithmetic then works row by row, and any step that needs one
value (an ``if``, ``min()``, ``int()``, a formatted message) raises :class:`NeedsRows`, so the
group is estimated one row at a time instead. The helpers here keep common steps elementwise —
a bound, a default for a missing number, a condition every row agrees on — so a sweep over
context lengths or request rates stays fast. For a single request they are the plain Python
operations; numpy is imported only when an array is actually passed in.
"""

from __future__ import annotations

from typing import Any

_PLAIN = (int, float)


class NeedsRows(Exception):
    """A step of the pipeline needed one value of a field that differs across rows: take them one by one."""


def at_least(x: Any, low: Any) -> Any:
    """``max(low, x)``, row by row for an array."""
    if isinstance(x, _PLAIN):
        return max(low, x)
    import numpy as np

    return np.maximum(x, low)


def at_most(x: Any, high: Any) -> Any:
    """``min(high, x)``, row by row for an array."""
    if isinstance(x, _PLAIN):
        return min(high, x)
    import numpy as np

    return np.minimum(x, high)


def number_or(x: Any, default: float) -> Any:
    """``float(x)``, or ``default`` where the field is absent (``None``)."""
    if x is None:
        return default
    if isinstance(x, _PLAIN):
        return float(x)
    return x.astype("float64")


def holds(condition: Any) -> bool:
    """A condition as one truth value: an array's rows must all agree, else :class:`NeedsRows`."""
    if isinstance(condition, bool):
        return condition
    import numpy as np

    values = np.asarray(condition, dtype=bool)
    if values.all():
        return True
    if not values.any():
        return False
    raise NeedsRows("the rows disagree on a condition")
