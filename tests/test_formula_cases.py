"""Golden cases live in the formula files; one parametrized test evaluates them all."""

from __future__ import annotations

import math

import pytest

from vramplan.catalog import get_catalog

CAT = get_catalog()
CASES = [(ff.file, i, case) for ff in CAT.formulas.files.values() for i, case in enumerate(ff.cases)]


@pytest.mark.parametrize("file,index,case", CASES, ids=[f"{f}#{i}" for f, i, _ in CASES])
def test_golden_case(file, index, case):
    got = CAT.formulas.evaluate_one(case["formula"], case["inputs"])
    assert math.isclose(got, case["expected"], rel_tol=case.get("rel_tol", 1e-9), abs_tol=1e-9), (file, case.get("note"))


def test_every_formula_has_a_golden_case():
    """A formula without a worked example is a defect - every one, helpers that only forward a value included."""
    covered = {case["formula"] for ff in CAT.formulas.files.values() for case in ff.cases}
    missing = sorted(f"{f.file}: {f.id}" for f in CAT.formulas.formulas.values() if f.id not in covered)
    assert missing == [], f"{len(missing)} formulas without a golden case:\n" + "\n".join(missing)


def test_cases_name_real_formulas_and_their_inputs():
    for ff in CAT.formulas.files.values():
        for case in ff.cases:
            formula = CAT.formulas.formulas[case["formula"]]
            assert set(case["inputs"]) == set(formula.inputs), (ff.file, case["formula"])


def test_every_formula_is_reachable_from_a_response():
    """No dead formulas: everything loaded feeds a component or a response figure."""
    from vramplan.estimate import OUTPUTS

    needed = set()
    for workload, outputs in OUTPUTS.items():
        targets = [c.output for c in CAT.formulas.components(workload)] + list(outputs)
        needed |= {f.id for f in CAT.formulas.plan(targets)}
    assert sorted(set(CAT.formulas.formulas) - needed) == []
