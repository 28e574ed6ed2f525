"""``vramplan formulas list|check|show``: the formula graph as loaded, overrides included."""

from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner

from vramplan.catalog import build_catalog, reset
from vramplan.cli import main


def run(*args):
    return CliRunner().invoke(main, ["formulas", *args])


def test_list_shows_formulas_and_variables_with_units_and_meanings():
    out = run("list").output
    assert "Formulas (" in out and "Scenario variables (" in out and "Declared runtime constants (" in out
    line = next(x for x in out.splitlines() if x.split()[:1] == ["moment_bytes"])
    assert line.split()[1] == "bytes" and line.endswith("[formulas/optimizations/optimizer_8bit.yaml]")
    var = next(x for x in out.splitlines() if x.split()[:1] == ["optimizer_moments"])
    assert var.split()[1] == "tensors" and "states_per_param" in var
    data = json.loads(run("list", "--format", "json").output)
    by_id = {f["id"]: f for f in data["formulas"]}
    assert by_id["weights_gpu_bytes"]["unit"] == "bytes" and by_id["weights_gpu_bytes"]["overrides"] is None
    assert {"name": "rt_kv_preallocate", "unit": "flag", "default": 0} .items() <= \
        next(v for v in data["variables"] if v["name"] == "rt_kv_preallocate").items()


def test_check_runs_every_builtin_case():
    result = run("check")
    assert result.exit_code == 0, result.output
    last = result.output.splitlines()[-1]
    assert last.endswith("0 do not, 0 superseded by overrides")


def test_show_prints_inputs_references_and_cases():
    result = run("show", "moment_bytes")
    assert result.exit_code == 0
    out = result.output
    assert out.startswith("moment_bytes [bytes]\n")
    assert "moment_bytes = (optimizer_state_bytes if optimizer_state_bytes > 0 else state_dtype_bytes) + " \
           "optimizer_state_overhead_bytes" in out
    assert any(x.split()[:3] == ["state_dtype_bytes", "formula", "bytes"] for x in out.splitlines())
    assert any(x.split()[:4] == ["optimizer_state_bytes", "scenario", "variable", "bytes"] for x in out.splitlines())
    assert "formula optimizer_states_total_bytes" in out and "arXiv:2110.02861" in out
    assert "passed     formulas/optimizations/optimizer_8bit.yaml#2: 1.015625" in out


def test_show_names_what_the_engine_reads():
    out = run("show", "weights_gpu_bytes").output
    assert "memory component 'Base Model Weights' (formulas/memory/weights.yaml)" in out
    assert "the engine: per_gpu (pipeline stages) (vocabulary/outputs.yaml)" in out


def test_show_unknown_id_suggests_the_closest():
    result = run("show", "moment_byte")
    assert result.exit_code == 2
    assert result.output.startswith("error: ID: no formula is called 'moment_byte' (closest: moment_bytes, ")


@pytest.fixture
def override(tmp_path, monkeypatch):
    """Install a catalog with an override folder holding ``text``; put the real catalog back after."""
    def install(text: str):
        (tmp_path / "mine.yaml").write_text(textwrap.dedent(text))
        monkeypatch.setenv("VRAMPLAN_FORMULA_PATH", str(tmp_path))
        reset(build_catalog(load_entrypoints=False))
        return tmp_path / "mine.yaml"

    yield install
    reset()


def test_check_runs_an_overrides_cases_and_names_one_that_no_longer_holds(override):
    path = override("""\
        id: lora_fp16_moments
        kind: helper
        description: my override
        formulas:
          - id: moment_bytes
            description: fp16 moments for everyone
            inputs: [optimizer_state_overhead_bytes]
            expr: 2 + optimizer_state_overhead_bytes
            unit: bytes
        cases:
          - formula: moment_bytes
            note: 2 bytes plus bnb's 4/256 = 2.015625
            inputs: {optimizer_state_overhead_bytes: 0.015625}
            expected: 2.015625
          - formula: moment_bytes
            note: a wrong expectation
            inputs: {optimizer_state_overhead_bytes: 0}
            expected: 4
        """)
    result = run("check")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert f"FAILED     {path}#1 moment_bytes: expected 4.0, got 2 (a wrong expectation)" in lines
    # The built-in file's three moment_bytes cases describe the replaced formula: superseded, not failed.
    assert lines[-1].endswith("1 do not, 3 superseded by overrides")
    show = run("show", "moment_bytes").output
    assert f"file: {path} (VRAMPLAN_FORMULA_PATH:{path.parent})" in show
    assert "overrides: formulas/optimizations/optimizer_8bit.yaml" in show
