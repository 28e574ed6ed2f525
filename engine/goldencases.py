"""Run the golden cases of every loaded formula file: built-ins, plugins and overrides alike.

A golden case (a formula file's ``cases:``) gives a formula's inputs and the value worked out by
hand. :func:`run` evaluates each against the formula as loaded now, so an override's own cases are
checked, and a built-in case whose formula an override replaced is reported as superseded (it
describes the replaced formula) rather than as a failure. ``vramplan formulas check`` and the
test suite both use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import FormulaError
from .formulaset import FormulaSet

DEFAULT_REL_TOL = 1e-9


@dataclass(frozen=True)
class CaseResult:
    file: str
    index: int  # position in the file's cases
    formula: str
    status: str  # "passed", "failed" or "superseded"
    expected: float
    got: float | None
    message: str  # why it failed, or which file superseded it
    note: str

    @property
    def name(self) -> str:
        return f"{self.file}#{self.index}"


def run_case(formulas: FormulaSet, ff, index: int, case: dict[str, Any]) -> CaseResult:
    """One case of formula file ``ff`` against the formulas as loaded now."""
    fid, expected, note = case["formula"], float(case["expected"]), case.get("note", "")

    def result(status: str, got: float | None = None, message: str = "") -> CaseResult:
        return CaseResult(ff.file, index, fid, status, expected, got, message, note)

    current = formulas.formulas.get(fid)
    if current is None:
        return result("failed", message=f"no loaded formula is called {fid}")
    if fid in formulas.overridden and formulas.source_of(fid) != ff.source:
        return result("superseded", message=f"{fid} is overridden by {current.file}")
    if set(case["inputs"]) != set(current.inputs):
        missing = sorted(set(current.inputs) - set(case["inputs"]))
        extra = sorted(set(case["inputs"]) - set(current.inputs))
        return result("failed", message="inputs differ from the formula's"
                      + (f"; missing {', '.join(missing)}" if missing else "") + (f"; not inputs: {', '.join(extra)}" if extra else ""))
    try:
        got = formulas.evaluate_one(fid, case["inputs"])
    except FormulaError as exc:
        return result("failed", message=str(exc))
    if math.isclose(got, expected, rel_tol=case.get("rel_tol", DEFAULT_REL_TOL), abs_tol=1e-9):
        return result("passed", got)
    return result("failed", got, f"expected {expected!r}, got {got!r}")


def run(formulas: FormulaSet) -> list[CaseResult]:
    """Every case of every loaded formula file, in load order."""
    return [run_case(formulas, ff, i, case) for ff in formulas.loaded_files for i, case in enumerate(ff.cases)]
