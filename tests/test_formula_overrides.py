"""Overrides and plugin formulas are checked at load against what the engine reads.

An override folder named in VRAMPLAN_FORMULA_PATH fails loudly, naming the file and the formula; a
plugin's formula folder is all or nothing and skipped with a failure that names it; two folders may
not override one formula.
"""

from __future__ import annotations

import textwrap

import pytest

import vramplan
from vramplan import hookimpl
from vramplan.catalog import build_catalog, get_catalog
from vramplan.errors import FormulaError

from conftest import trace_of

GIB = 2**30


def _formula_file(folder, name: str, fid: str, inputs: list[str], expr: str, unit: str = "bytes"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        id: {name}
        kind: helper
        description: test override
        formulas:
          - id: {fid}
            description: test
            inputs: [{", ".join(inputs)}]
            expr: '{expr}'
            unit: {unit}
        """))
    return path


def _plugin(folder, name: str = "formula-plugin"):
    class Formulas:
        __name__ = name

        @hookimpl
        def register_formula_dirs(self):
            return [folder]

    return Formulas()


def test_override_in_the_wrong_unit_fails_at_load_naming_file_and_formula(tmp_path, monkeypatch):
    path = _formula_file(tmp_path / "mine", "weights_gib", "weights_gpu_bytes", ["weights_file_bytes"],
                         "weights_file_bytes / 1073741824", unit="GiB")
    monkeypatch.setenv("VRAMPLAN_FORMULA_PATH", str(tmp_path / "mine"))
    with pytest.raises(FormulaError) as err:
        build_catalog(load_entrypoints=False)
    assert err.value.problems == [(f"{path}: formula weights_gpu_bytes",
                                   "unit is 'GiB', but the engine reads it in 'bytes' for per_gpu (pipeline stages) "
                                   "(vocabulary/outputs.yaml)")]


def test_memory_component_outputs_must_be_bytes(tmp_path, monkeypatch):
    path = _formula_file(tmp_path / "mine", "kv_mib", "kv_cache_gpu_bytes", ["kv_needed_bytes"],
                         "kv_needed_bytes / 1048576", unit="MiB")
    monkeypatch.setenv("VRAMPLAN_FORMULA_PATH", str(tmp_path / "mine"))
    with pytest.raises(FormulaError) as err:
        build_catalog(load_entrypoints=False)
    assert f"{path}: formula kv_cache_gpu_bytes: unit is 'MiB'" in str(err.value)


def test_the_same_bad_override_from_a_plugin_is_skipped_and_named(tmp_path):
    path = _formula_file(tmp_path, "weights_gib", "weights_gpu_bytes", ["weights_file_bytes"],
                         "weights_file_bytes / 1073741824", unit="GiB")
    cat = build_catalog(load_entrypoints=False, extra_plugins=(_plugin(tmp_path),))
    [failure] = [f for f in cat.host.failures if f.name == "formula-plugin"]
    assert failure.error.startswith(f"formulas skipped: {path}: formula weights_gpu_bytes: unit is 'GiB'")
    assert cat.formulas.formulas["weights_gpu_bytes"].file == "formulas/memory/weights.yaml"  # the built-in is back
    assert "weights_gpu_bytes" not in cat.formulas.overridden


def test_an_override_that_no_longer_reads_the_pieces_still_runs_pipeline_parallel(tmp_path, with_plugins):
    # weights_gpu_bytes without embd_gpu_bytes & co.: the engine still evaluates every id it reads
    # (vocabulary/outputs.yaml), so per-GPU memory of pipeline stages cannot hit a missing value.
    _formula_file(tmp_path, "weights_even", "weights_gpu_bytes", ["weights_file_bytes", "pp"], "weights_file_bytes / pp")
    with with_plugins(_plugin(tmp_path)) as cat:
        assert cat.host.failures == []
        out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "num_gpus": 2,
                                           "inference_parallelism": "pipeline", "trace": True})
    t = trace_of(out)
    # Llama 3 8B bf16: 8,030,261,248 params x 2 bytes = 16,060,522,496 bytes, half per stage.
    assert t["weights_gpu_bytes"] == 16_060_522_496 / 2
    assert [g["stage"] for g in out["per_gpu"]] == [0, 1] and "embd_gpu_bytes" in t


def test_two_folders_overriding_one_formula_is_an_error_naming_both(tmp_path, monkeypatch):
    a = _formula_file(tmp_path / "a", "ctx_a", "fixed_overhead_bytes", [], "1073741824")
    b = _formula_file(tmp_path / "b", "ctx_b", "fixed_overhead_bytes", [], "2147483648")
    monkeypatch.setenv("VRAMPLAN_FORMULA_PATH", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    with pytest.raises(FormulaError) as err:
        build_catalog(load_entrypoints=False)
    assert err.value.problems == [(f"{b}: formula fixed_overhead_bytes",
                                   f"also defined by {a} (VRAMPLAN_FORMULA_PATH:{tmp_path / 'a'}); two folders may not "
                                   "both define or override one formula")]


def test_a_plugin_overriding_what_another_plugin_overrides_is_skipped_naming_both(tmp_path):
    a = _formula_file(tmp_path / "a", "ctx_a", "fixed_overhead_bytes", [], "1073741824")
    b = _formula_file(tmp_path / "b", "ctx_b", "fixed_overhead_bytes", [], "2147483648")
    cat = build_catalog(load_entrypoints=False, extra_plugins=(_plugin(tmp_path / "a", "first"), _plugin(tmp_path / "b", "second")))
    assert cat.formulas.formulas["fixed_overhead_bytes"].file == str(a)
    [failure] = cat.host.failures
    assert failure.name == "second" and str(a) in failure.error and str(b) in failure.error


def test_a_plugin_formula_file_that_does_not_parse_is_skipped(tmp_path):
    (tmp_path / "bad.yaml").write_text("id: bad\nkind: helper\ndescription: x\nformulas:\n"
                                       "  - {id: fixed_overhead_bytes, description: x, inputs: [], expr: '__import__(1)', unit: bytes}\n")
    cat = build_catalog(load_entrypoints=False, extra_plugins=(_plugin(tmp_path),))
    [failure] = cat.host.failures
    assert "bad.yaml: formula fixed_overhead_bytes" in failure.error and "not allowed" in failure.error
    assert cat.formulas.formulas["fixed_overhead_bytes"].file.startswith("formulas/")


def test_formula_path_folders_still_fail_loudly(tmp_path, monkeypatch):
    (tmp_path / "bad.yaml").write_text("id: bad\nkind: helper\ndescription: x\nformulas:\n"
                                       "  - {id: fixed_overhead_bytes, description: x, inputs: [], expr: '__import__(1)', unit: bytes}\n")
    monkeypatch.setenv("VRAMPLAN_FORMULA_PATH", str(tmp_path))
    with pytest.raises(FormulaError, match="bad.yaml: formula fixed_overhead_bytes"):
        build_catalog(load_entrypoints=False)


# -- an explicit catalog reaches every search ------------------------------------------------------

SMALL_GPU = {"label": "Test GPU 12GB", "vendor": "nvidia", "category": "consumer", "architecture": "ada",
             "memory_gib": 12, "memory_type": "GDDR6X", "memory_bandwidth_gb_s": 500, "fp32_tflops": 40,
             "fp16_tflops": 80, "bf16_tflops": 80, "tdp_w": 200, "flash_attention": True,
             "default_interconnect": "pcie4", "host_link": "pcie4", "source": "https://example.com/test-gpu-12"}


class SmallGpu:
    __name__ = "small-gpu-plugin"

    @hookimpl
    def register_gpus(self, register):
        register("test_gpu_12", dict(SMALL_GPU))


def test_auto_offloading_uses_the_catalog_it_was_given():
    from vramplan.answer import estimate as run

    cat = build_catalog(load_entrypoints=False, extra_plugins=(SmallGpu(),))
    assert "test_gpu_12" not in get_catalog().gpus  # not installed: only the explicit catalog knows it
    body = {"gpu_key": "test_gpu_12", "llm_key": "llama-3-8b-instruct", "enable_offloading": True}
    out = run(body, "inference", cat)
    n = int(out["assumptions"][0].split(":")[1].split()[0])
    assert out["assumptions"][0] == (f"offloading: {n} of 32 layers offloaded, the fewest with which the workload fits "
                                     "(enable_offloading without num_offload_layers or percentage_offload)")
    assert out["memory_status"] != "insufficient"
    # One Llama 3 8B layer in bf16: (2 x 4096 x 4096 + 2 x 4096 x 1024 + 3 x 4096 x 14336) x 2 + 2 x 4096 x 2 norms
    # = 436,224,000 bytes; the offloaded memory is n of them.
    assert out["offloaded_memory"] == pytest.approx(n * 436_224_000 / GIB, abs=0.01)
    fewer = run({**body, "num_offload_layers": n - 1}, "inference", cat)
    assert fewer["memory_status"] == "insufficient"


def test_the_planner_uses_the_catalog_it_was_given():
    from vramplan.planner import plan

    cat = build_catalog(load_entrypoints=False, extra_plugins=(SmallGpu(),))
    answer = plan({"workload": "inference", "find": ["max_seq_length"], "gpu_key": "test_gpu_12",
                   "llm_key": "llama-3.2-1b-instruct"}, cat)
    assert answer["max_seq_length"]["value"] > 0 and answer["max_seq_length"]["estimate"]["memory_status"] != "insufficient"
