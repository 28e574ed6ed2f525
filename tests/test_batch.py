"""Batch evaluation (numpy over many scenarios) gives what one-at-a-time evaluation gives: the same
values and the same refusals, row by row, on random expressions over the whole grammar."""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpleeval
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import checks, expressions
from test_evaluators import REFUSALS, formula_set, value_or_refusal

from vramplan import semantics
from vramplan.batch import evaluate_batch

#: Row values in binary64 (the batch evaluator's numbers): zero, signs, the huge and the tiny.
floats = st.one_of(st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.0, 0.5, 1e300, -1e300, 1e-300, 4_000_001.0, 7.0]),
                   st.integers(-10**6, 10**6).map(float), st.floats(allow_nan=False, allow_infinity=False))
#: Per input: one value every row shares, or one value per row.
column = st.one_of(floats.map(lambda x: ("shared", x)), st.lists(floats, min_size=1, max_size=6).map(lambda xs: ("rows", xs)))


def needs_exact_integers(fs, inputs) -> bool:
    """True when one-at-a-time evaluation computes an integer beyond 2**53 (ceil() results, integer
    literals): exact in Python, rounded in binary64, where the batch evaluator is documented to differ."""
    seen = []

    def watch(fn):
        def watched(*args):
            value = fn(*args)
            if type(value) is int and abs(value) > 2**53:
                seen.append(value)
            return value
        return watched

    f = fs.formulas["f"]
    se = simpleeval.SimpleEval(operators={k: watch(v) for k, v in semantics.OPERATORS.items()},
                               functions={k: watch(v) for k, v in semantics.FUNCTIONS.items()}, names=dict(inputs))
    try:
        se.eval(f.expr, previously_parsed=f.tree)
    except Exception:  # the refusal itself is compared elsewhere
        pass
    return bool(seen)


@checks(800)
@given(expressions, st.fixed_dictionaries({"a": column, "b": column, "c": column}))
def test_batch_agrees_with_one_at_a_time_on_random_expressions(expr, cols):
    fs = formula_set(expr)
    assume(fs is not None)
    n = max((len(v) for kind, v in cols.values() if kind == "rows"), default=1)
    rows = [{name: (v if kind == "shared" else v[i % len(v)]) for name, (kind, v) in cols.items()} for i in range(n)]
    assume(not any(needs_exact_integers(fs, row) for row in rows))
    columns = {name: (v if kind == "shared" else np.array([v[i % len(v)] for i in range(n)]))
               for name, (kind, v) in cols.items()}
    result = evaluate_batch(fs, columns, n, ["f"])
    for i, row in enumerate(rows):
        expected = value_or_refusal(fs, row, "compiled")
        err = result.error(i)
        if isinstance(expected, str):
            assert err is not None and str(err) == expected, (expr, row)
        else:
            assert err is None, (expr, row, str(err))
            got = result.row(i, ["f"])["f"]
            assert math.isclose(got, expected, rel_tol=1e-12, abs_tol=0) or got == expected, (expr, row, got, expected)


@pytest.mark.parametrize("expr,rows,expected", [
    # Only the rows that reach an operation can be refused by it: b == 0 takes the other branch.
    ("a / b if b != 0 else 0", {"a": [1.0, 2.0, 3.0], "b": [2.0, 0.0, 4.0]}, [0.5, 0.0, 0.75]),
    ("b != 0 and a / b", {"a": [1.0, 2.0], "b": [0.0, 4.0]}, [0.0, 0.5]),
    ("a < b < a / b", {"a": [3.0, -1.0], "b": [0.0, 2.0]}, [0.0, 0.0]),  # the second link only where a < b
    # Row 2 divides by zero; rows 1 and 3 are fine.
    ("a / b", {"a": [1.0, 1.0, 1.0], "b": [1.0, 0.0, 2.0]}, [1.0, "division by zero", 0.5]),
    # The first refusal in evaluation order wins: log of 0 comes before the division.
    ("log(a) + 1 / b", {"a": [0.0, 1.0], "b": [0.0, 0.0]},
     ["cannot be evaluated: math domain error", "division by zero"]),
    ("min(a, b, 3)", {"a": [1.0, 5.0], "b": [2.0, 4.0]}, [1.0, 3.0]),
])
def test_rows_are_refused_one_by_one(expr, rows, expected):
    fs = formula_set(expr)
    n = len(expected)
    result = evaluate_batch(fs, {k: np.array(v) for k, v in rows.items()}, n, ["f"])
    for i, want in enumerate(expected):
        if isinstance(want, str):
            assert str(result.error(i)) == f"formula f (random.yaml): {want}"
        else:
            assert result.error(i) is None and result.row(i, ["f"])["f"] == want


@pytest.mark.parametrize("expr,inputs,reason", REFUSALS)
def test_each_kind_of_refusal_is_found_in_its_row(expr, inputs, reason):
    # Row 0 holds the refused inputs, row 1 inputs of 3.0 (whatever one-at-a-time gives there);
    # given as arrays and, for row 0 alone, as shared numbers.
    fs = formula_set(expr)
    columns = {k: np.array([float(v), 3.0]) for k, v in inputs.items()}
    result = evaluate_batch(fs, columns, 2, ["f"])
    assert str(result.error(0)) == f"formula f (random.yaml): {reason}"
    second = value_or_refusal(fs, {k: 3.0 for k in inputs}, "compiled")
    assert (str(result.error(1)) if result.error(1) else result.row(1, ["f"])["f"]) == second
    shared = evaluate_batch(fs, dict(inputs), 3, ["f"])
    assert [str(shared.error(i)) for i in range(3)] == [f"formula f (random.yaml): {reason}"] * 3


def test_a_formula_every_row_shares_runs_once_as_a_single_estimate_would():
    fs = formula_set("a * b + c")
    result = evaluate_batch(fs, {"a": 3, "b": 4, "c": np.array([1.0, 2.0])}, 2, ["f"])
    assert result.values["f"].tolist() == [13.0, 14.0]
    fs = formula_set("a * b")
    result = evaluate_batch(fs, {"a": 3, "b": 4}, 2, ["f"])
    assert result.values["f"] == 12 and type(result.values["f"]) is int  # Python's own arithmetic


def test_numpy_integers_never_wrap_around():
    # 3e9 x 4e9 = 1.2e19 exceeds int64 (9.2e18): numpy int64 would wrap to a negative number.
    fs = formula_set("a * b")
    result = evaluate_batch(fs, {"a": np.array([3_000_000_000, 1]), "b": np.array([4_000_000_000, 2])}, 2, ["f"])
    assert result.values["f"].tolist() == [1.2e19, 2.0]


def test_a_function_without_a_numpy_form_runs_row_by_row(monkeypatch):
    # A function added to the whitelist later (here hypot) has no numpy form in vramplan.batch: the
    # formula still evaluates, through its closure, one row at a time.
    monkeypatch.setitem(semantics.FUNCTIONS, "hypot", math.hypot)
    fs = formula_set("hypot(a, b) / c")
    result = evaluate_batch(fs, {"a": np.array([3.0, 5.0]), "b": np.array([4.0, 12.0]), "c": np.array([1.0, 0.0])}, 2, ["f"])
    assert result.row(0, ["f"])["f"] == 5.0  # sqrt(9 + 16)
    assert str(result.error(1)) == "formula f (random.yaml): division by zero"


def test_a_row_by_row_formula_gated_by_a_flag_runs_only_where_the_flag_is_set(monkeypatch):
    # `hypot(a, b) if c else 7`: the rows with c = 0 take 7 without calling the function (an inference sweep does
    # not replay a training run); the others as one at a time would - sqrt(9 + 16) = 5, sqrt(25 + 144) = 13.
    calls = []

    def hypot(x, y):
        calls.append((x, y))
        return math.hypot(x, y)

    monkeypatch.setitem(semantics.FUNCTIONS, "hypot", hypot)
    fs = formula_set("hypot(a, b) if c else 7")
    cols = {"a": np.array([3.0, 1.0, 5.0]), "b": np.array([4.0, 1.0, 12.0]), "c": np.array([1, 0, 1])}
    result = evaluate_batch(fs, cols, 3, ["f"])
    assert result.values["f"].tolist() == [5.0, 7.0, 13.0]
    assert calls == [(3.0, 4.0), (5.0, 12.0)]
    calls.clear()
    shared_off = evaluate_batch(fs, {**cols, "c": 0}, 3, ["f"])
    assert shared_off.values["f"].tolist() == [7.0, 7.0, 7.0] and calls == []
