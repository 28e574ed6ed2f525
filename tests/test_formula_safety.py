"""Formula files from plugins and VRAMPLAN_FORMULA_PATH are untrusted: anything beyond arithmetic
over declared inputs is refused at load, naming the file and the formula."""

from __future__ import annotations

import textwrap

import pytest

from vramplan.catalog import build_catalog
from vramplan.errors import FormulaError
from vramplan.formulaset import FormulaSet, formula_file_from_data, parse_expression


def load_one(expr: str, inputs=("seq",)):
    data = {"id": "hostile", "kind": "helper", "description": "x",
            "formulas": [{"id": "evil", "description": "x", "inputs": list(inputs), "expr": expr, "unit": "bytes"}]}
    return formula_file_from_data(data, file="plugin/hostile.yaml", source="test")


@pytest.mark.parametrize("expr,why", [
    ("seq.__class__", "Attribute"),
    ("__import__('os').system('true')", "not allowed"),
    ("open('/etc/passwd')", "function 'open' is not allowed"),
    ("(lambda: 1)()", "not allowed"),
    ("[x for x in (1, 2)]", "ListComp is not allowed"),
    ("{1: 2}[1]", "not allowed"),
    ("seq ** seq", "exponents must be numeric literals"),
    ("seq ** 100", "exponents must be numeric literals"),
    ("9" * 30, "larger than"),
    ("'text'", "only numeric literals"),
    ("max(seq, key=1)", "keyword arguments"),
    ("seq if seq else ", "syntax error"),
])
def test_hostile_expressions_are_refused_at_load(expr, why):
    with pytest.raises(FormulaError) as err:
        load_one(expr)
    message = str(err.value)
    assert "plugin/hostile.yaml: formula evil" in message
    if why:
        assert why in message


def test_deep_nesting_is_refused():
    expr = "1" + " + (1" * 60 + ")" * 60
    with pytest.raises(FormulaError, match="deeper than"):
        load_one(expr, inputs=())


def test_undeclared_and_unused_names_are_refused():
    with pytest.raises(FormulaError, match="'batch' is not a declared input"):
        load_one("seq * batch")
    with pytest.raises(FormulaError, match="declared input 'seq' is not used"):
        load_one("1 + 1")


def test_division_by_zero_and_overflow_are_clean_errors():
    fs = FormulaSet()
    fs.add(load_one("1 / (seq - seq)"), may_override=False)
    fs.finalize({"seq"})
    with pytest.raises(FormulaError, match="division by zero"):
        fs.evaluate({"seq": 3.0}, ["evil"])
    fs = FormulaSet()
    fs.add(load_one("exp(seq)"), may_override=False)
    fs.finalize({"seq"})
    with pytest.raises(FormulaError, match="too large|not a finite number"):
        fs.evaluate({"seq": 1e6}, ["evil"])


def test_cycles_are_refused():
    fs = FormulaSet()
    data = {"id": "loop", "kind": "helper", "description": "x", "formulas": [
        {"id": "a", "description": "x", "inputs": ["b"], "expr": "b + 1", "unit": "u"},
        {"id": "b", "description": "x", "inputs": ["a"], "expr": "a + 1", "unit": "u"}]}
    fs.add(formula_file_from_data(data, file="loop.yaml", source="t"), may_override=False)
    with pytest.raises(FormulaError, match="circle"):
        fs.finalize(set())


def test_parse_expression_returns_a_tree_that_evaluates():
    tree = parse_expression("max(seq, 2) * 2", where="w", declared={"seq"})
    import simpleeval

    assert simpleeval.SimpleEval(names={"seq": 5}, functions={"max": max}).eval("", previously_parsed=tree) == 10


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_formula_path_file_with_hostile_formula_names_file_and_formula(tmp_path, monkeypatch):
    write(tmp_path, "bad.yaml", """\
        id: bad
        kind: helper
        description: tries to escape
        formulas:
          - id: escape
            description: attribute access
            inputs: [seq]
            expr: seq.__class__.__bases__
            unit: bytes
        """)
    monkeypatch.setenv("VRAMPLAN_FORMULA_PATH", str(tmp_path))
    with pytest.raises(FormulaError) as err:
        build_catalog(load_entrypoints=False)
    assert f"{tmp_path}/bad.yaml: formula escape" in str(err.value)
    assert "Attribute is not allowed" in str(err.value)


def test_formula_path_overrides_a_builtin_by_id(tmp_path, monkeypatch, infer):
    """A user's folder replaces kv_bytes_per_token_layer: doubling it doubles the KV cache."""
    write(tmp_path, "kv.yaml", """\
        id: kv_override
        kind: helper
        description: pretend every KV element takes twice the bits
        formulas:
          - id: kv_bytes_per_token_layer
            description: doubled
            inputs: [kv_elems_layer, kv_bits]
            expr: 2 * kv_elems_layer * kv_bits / 8
            unit: bytes
        """)
    from vramplan.catalog import reset

    monkeypatch.setenv("VRAMPLAN_FORMULA_PATH", str(tmp_path))
    reset(build_catalog(load_entrypoints=False))
    try:
        _, t = infer(seq_length=2048)
        # Llama 3 8B: 2 x 8 KV heads x 128 x 16 bits / 8 = 4096 bytes per token and layer, doubled.
        assert t["kv_bytes_per_token_layer"] == 2 * 4096
        assert t["kv_bytes_per_seq"] == 2 * 4096 * 32 * 2048
    finally:
        monkeypatch.delenv("VRAMPLAN_FORMULA_PATH")
        reset()


def test_duplicate_formula_id_within_one_source_is_an_error(tmp_path, monkeypatch):
    for name in ("a.yaml", "b.yaml"):
        write(tmp_path, name, f"""\
            id: dup_{name[0]}
            kind: helper
            description: duplicate
            formulas:
              - id: same_id
                description: x
                inputs: [seq]
                expr: seq
                unit: tokens
            """)
    monkeypatch.setenv("VRAMPLAN_FORMULA_PATH", str(tmp_path))
    with pytest.raises(FormulaError, match="same_id.*already defined"):
        build_catalog(load_entrypoints=False)


# -- powers that grow too fast (issue 12, item 5) ---------------------------------------------------

def _product(terms: list[str]) -> str:
    """A balanced product (a left-leaning one of 70 terms would nest deeper than the depth limit)."""
    if len(terms) == 1:
        return terms[0]
    mid = len(terms) // 2
    return f"({_product(terms[:mid])} * {_product(terms[mid:])})"


def _tower(base: str, levels: int) -> str:
    for _ in range(levels):
        base = f"({base} ** 4)"
    return base


@pytest.mark.parametrize("expr", [
    # 12 levels of **4 on a 1e18 literal: 4^12 = 16,777,216 factors, a number of 3 x 10^8 digits
    _tower("999999999999999999", 12) + " * 0 + kv_elems_layer * kv_bits / 8",
    # a float made an integer by ceil, then raised: 18 x 4^4 = 4,608 factors
    _tower("ceil(kv_bits * 1e17)", 4) + " * 0 + kv_elems_layer * kv_bits / 8",
    # products of powers: 70 factors of x^4 = 280
    _product(["kv_elems_layer ** 4"] * 70) + " * 0 + kv_bits",
])
def test_powers_of_powers_are_refused_at_load(expr):
    with pytest.raises(FormulaError, match=r"can build an integer of degree \d+ in its inputs \(limit 256\)"):
        load_one(expr, inputs=("kv_elems_layer", "kv_bits"))


def test_modest_powers_still_load():
    """seq^4 (a 4-level-free power), ceil(x / 8) * 8, products of a handful of inputs: the built-ins' kind."""
    load_one("(seq ** 4) ** 2 + ceil(seq / 8) * 8 * seq * seq")


def test_powers_compounding_over_the_formula_graph_are_refused(tmp_path, monkeypatch):
    """Each formula squares the last (degree 4 each, within the limit alone); chained, the 5th is 4^5."""
    formulas = "".join(f"""
          - id: p{i}
            description: x
            inputs: [{'seq' if i == 0 else f'p{i - 1}'}]
            expr: {'seq' if i == 0 else f'p{i - 1}'} ** 4
            unit: x""" for i in range(6))
    write(tmp_path, "chain.yaml", f"""\
        id: chain
        kind: helper
        description: a tower spread over formulas
        formulas:{textwrap.indent(textwrap.dedent(formulas), '          ')}
        """)
    monkeypatch.setenv("VRAMPLAN_FORMULA_PATH", str(tmp_path))
    with pytest.raises(FormulaError) as err:
        build_catalog(load_entrypoints=False)
    assert "chain.yaml: formula p4: can build an integer of degree 1024" in str(err.value)
    assert "p3" not in str(err.value)  # 4^4 = 256 is allowed


def test_the_tower_override_of_the_issue_fails_at_load_not_at_the_first_request(tmp_path, monkeypatch):
    write(tmp_path, "tower.yaml", f"""\
        id: evil
        kind: helper
        description: a power tower times zero
        formulas:
          - id: kv_bytes_per_token_layer
            description: x
            inputs: [kv_elems_layer, kv_bits]
            expr: "{_tower('999999999999999999', 12)} * 0 + kv_elems_layer * kv_bits / 8"
            unit: bytes
        """)
    monkeypatch.setenv("VRAMPLAN_FORMULA_PATH", str(tmp_path))
    with pytest.raises(FormulaError, match="tower.yaml: formula kv_bytes_per_token_layer: can build an integer"):
        build_catalog(load_entrypoints=False)


def test_a_broken_formula_path_fails_the_cli_loudly(tmp_path):
    """VRAMPLAN_FORMULA_PATH is the user's own: a bad file is exit 2 naming it, for estimates and serve."""
    import os
    import subprocess
    import sys

    write(tmp_path, "bad.yaml", "id: bad\nkind: helper\ndescription: x\nformulas:\n  - id: f\n    description: x\n"
                                "    inputs: [seq]\n    expr: seq.__class__\n    unit: x\n")
    env = {**os.environ, "VRAMPLAN_FORMULA_PATH": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg"),
           "VRAMPLAN_ADMIN_SECRET": "x" * 32, "VRAMPLAN_DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}"}
    for argv in (["inference", "--gpu", "h100_80", "--model", "llama-3-8b-instruct"], ["serve", "--port", "1"]):
        out = subprocess.run([sys.executable, "-m", "vramplan", *argv], env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 2, out.stderr
        assert f"{tmp_path}/bad.yaml: formula f" in out.stderr and "Traceback" not in out.stderr
    missing = subprocess.run([sys.executable, "-m", "vramplan", *argv[:1]], capture_output=True, text=True, timeout=120,
                             env={**env, "VRAMPLAN_FORMULA_PATH": str(tmp_path / "nowhere")})
    assert missing.returncode == 2 and "nowhere: formula folder from VRAMPLAN_FORMULA_PATH" in missing.stderr
