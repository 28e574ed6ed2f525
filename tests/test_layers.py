"""The request flows one way: the pipeline makes one pass, searches sit above it, reports read its products.

- :func:`vramplan.pipeline.run` is validate → resolve → scenario → evaluate → estimate, once: it never
  searches (the auto-offload search is :mod:`vramplan.answer`'s, above it);
- the scenario stage hands its notes back instead of writing into the resolve stage's lists;
- a report's context is built from one pass's :class:`~vramplan.pipeline.Outcome` and the planner's
  answers, running nothing itself.

(tests/test_import_graph.py checks the same layering in the imports.)
"""

from __future__ import annotations

import pytest

from vramplan import answer, maps, pipeline, report
from vramplan import request as request_mod
from vramplan import resolve as resolve_mod
from vramplan.catalog import get_catalog
from vramplan.scenario import build_with_notes
from vramplan.units import GIB

# Llama 3 8B in bf16 is 16,060,522,496 bytes = 14.96 GiB of weights: over an 8 GiB RTX 4060 whole.
TOO_BIG = {"gpu_key": "rtx_4060", "llm_key": "llama-3-8b-instruct", "enable_offloading": True}


def test_the_pipeline_makes_one_pass_and_the_search_sits_above_it(monkeypatch):
    cat = get_catalog()
    one = pipeline.run(TOO_BIG, "inference", cat)
    assert one.response["memory_status"] == "insufficient"  # one pass: no layer offloaded
    assert one.response["offloaded_memory"] == 0.0
    assert ("offloading: enable_offloading without num_offload_layers or percentage_offload offloads the fewest "
            "layers that make the workload fit; none offloaded here") in one.response["assumptions"]
    passes = []
    real = pipeline.run
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: passes.append(a[0]) or real(*a, **k))
    out = answer.estimate(TOO_BIG, "inference", cat)
    n = out["offload"]["layers"]
    assert out["memory_status"] != "insufficient" and 0 < n < 32
    assert out["assumptions"][0].startswith(f"offloading: {n} of 32 layers offloaded, the fewest")
    # the first pass, then one per probe of num_offload_layers (gallop 1, 2, 4, ... then bisect): at most
    # 2 x log2(32) = 10 probes, each a single pass
    assert passes[0] == TOO_BIG and all(p["num_offload_layers"] >= 1 for p in passes[1:])
    assert 2 <= len(passes) <= 11
    # the fewest: one layer fewer does not fit
    fewer = pipeline.run({**TOO_BIG, "num_offload_layers": n - 1}, "inference", cat).response
    assert fewer["memory_status"] == "insufficient"


def test_the_scenario_returns_its_notes_and_leaves_the_resolve_stage_alone():
    cat = get_catalog()
    body = {"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "num_offload_layers": 3}  # offloading off
    req, _ = request_mod.check(body, "inference")
    res = resolve_mod.resolve(cat, req, "inference")
    before = (list(res.warnings), list(res.assumptions))
    _, notes = build_with_notes(res)
    assert notes.warnings == ["offloading settings are ignored because enable_offloading is false"]
    assert (res.warnings, res.assumptions) == before  # nothing written into resolve's lists
    # and the response lists them after resolve's, as before
    out = pipeline.run(body, "inference", cat).response
    assert out["warnings"][-1] == "offloading settings are ignored because enable_offloading is false"


def test_the_seq_length_warning_is_the_estimate_stages_own():
    cat = get_catalog()
    # Llama 3 8B's context is 8,192 tokens
    done = pipeline.run({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "seq_length": 9000}, "inference", cat)
    assert "seq_length 9000 exceeds the model's context of 8192 tokens" in done.response["warnings"]
    assert not any("exceeds" in w for w in done.resolved.warnings)


def test_a_report_context_is_read_off_one_pass_and_runs_nothing(monkeypatch):
    cat = get_catalog()
    body = {"gpu_key": "h100_80", "llm_key": "llama-3-70b-instruct", "quantization": "q4_k_m", "num_gpus": 2}
    expected = report.report_context(body, "inference")
    done = answer.outcome({**body, "trace": True}, "inference", cat)
    curve = maps.curve(done, cat)

    def refuse(*args, **kwargs):
        raise AssertionError("build_context ran a pipeline stage")

    for module, name in ((pipeline, "run"), (pipeline, "estimate"), (resolve_mod, "resolve"), (request_mod, "validate"),
                         (request_mod, "check"), (answer, "outcome"), (report, "outcome")):
        monkeypatch.setattr(module, name, refuse)
    ctx = report.build_context(done, curve, cat)
    assert ctx == expected
    # what it shows came from that pass: two pipeline stages of Llama 3 70B (80 layers, 40 each)
    assert [(g["stage"], g["layers"]) for g in ctx["per_gpu"]] == [(0, 40), (1, 40)]
    assert ctx["verdict"]["vram_usage"] == done.response["vram_usage"]
    shown = {f["id"] for f in ctx["formulas"]}
    assert {"pp_first_stage_bytes", "pp_last_stage_bytes"} <= shown  # the formulas that gave per_gpu


def test_a_single_gpu_report_lists_no_pipeline_stage_formulas():
    ctx = report.report_context({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m"},
                                "inference")
    assert not any(f["id"].startswith("pp_") for f in ctx["formulas"])


@pytest.mark.parametrize("layers,stages,expected", [(80, 3, [27, 27, 26]), (32, 4, [8, 8, 8, 8]), (32, 5, [7, 7, 6, 6, 6])])
def test_pipeline_stages_hold_the_layers_dealt_out_evenly(layers, stages, expected):
    # Llama 3 70B has 80 layers, Llama 3 8B 32; each stage holds floor(L / P), the first L mod P one more
    model = "llama-3-70b-instruct" if layers == 80 else "llama-3-8b-instruct"
    out = answer.estimate({"gpu_key": "h100_80", "llm_key": model, "num_gpus": stages, "quantization": "q4_k_m"},
                          "inference", get_catalog())
    assert [g["layers"] for g in out["per_gpu"]] == expected
    assert max(g["vram_usage"] for g in out["per_gpu"]) <= out["vram_usage"]


def test_per_gpu_memory_of_pipeline_stages_by_hand():
    """Llama 3 8B in bf16 over 2 pipeline stages on transformers: 16 layers each; stage 0 holds the embedding,
    stage 1 the untied head; each also holds what every GPU holds alike (the busiest total less its weights
    and KV). The two ends are the same size (128,256 x 4,096 x 2 bytes = 1,050,673,152), so the stages are
    equal and each is the busiest."""
    out = answer.estimate({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "num_gpus": 2, "trace": True},
                          "inference", get_catalog())
    t = {s["id"]: s["value"] for s in out["trace"]}
    end = 128256 * 4096 * 2
    assert t["pp_first_end_bytes"] == end and t["pp_last_end_bytes"] == end
    layer = t["layer_weights_bytes"] / 32
    kv_layer = t["kv_needed_bytes"] / 16
    assert t["pp_first_stage_bytes"] == pytest.approx(16 * layer + end + 16 * kv_layer, rel=1e-12)
    alike = out["vram_usage"] * GIB - t["weights_gpu_bytes"] - t["kv_cache_gpu_bytes"]
    stage0 = round(min(out["vram_usage"], (t["pp_first_stage_bytes"] + alike) / GIB), 2)
    assert out["per_gpu"] == [{"gpu": 0, "stage": 0, "layers": 16, "vram_usage": stage0},
                              {"gpu": 1, "stage": 1, "layers": 16, "vram_usage": stage0}]
    assert stage0 == out["vram_usage"]


def test_an_estimate_that_fits_loads_no_search_machinery():
    """`vramplan inference …` starts in a fresh process each time: an answer that fits (no suggestion to
    search) must not pay for the planner, the deployment search or numpy (~0.2 s of imports here)."""
    import subprocess
    import sys

    code = ("import sys, vramplan\n"
            "out = vramplan.estimate_inference({'gpu_key': 'rtx_4090', 'llm_key': 'llama-3-8b-instruct',"
            " 'quantization': 'q4_k_m'})\n"
            "assert 'suggestions' not in out, out.get('memory_status')\n"
            "print(sorted(m for m in ('numpy', 'vramplan.planner', 'vramplan.deploy', 'vramplan.suggest')"
            " if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # suggest is the entry point (it decides whether to search); what it would search with stays unloaded
    assert done.stdout.strip() == "['vramplan.suggest']"
