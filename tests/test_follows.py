"""Defaults that follow other settings (a runtime constant's ``follows`` rule, engine/follows.py), as the runtimes' own
code ties them: TGI's server sizes its KV cache from --cuda-memory-fraction x TGI_WIGGLE_ROOM (flash_causal_lm.py
warmup, utils/dist.py MEMORY_FRACTION), the launcher reads the same TGI_WIGGLE_ROOM with a default of its own, and TGI
2.x's budget is --max-input-tokens + 50. The expected values are worked out here from those rules."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import vramplan
from test_tgi3 import launcher_vram
from vramplan import follows
from vramplan.catalogcheck import _rules_problem
from vramplan.cli import main as cli
from vramplan.errors import FormulaError
from vramplan.estimate import trace_values
from vramplan.resolve import _followed_problems

GIB = 2**30
# Llama 3.1 8B's cache in bf16: 32 layers x 8 KV heads x 128 x (K + V) x 2 bytes = 128 KiB a token
KV_TOKEN = 32 * 8 * 128 * 2 * 2
BODY = {"gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "runtime": "tgi", "input_tokens": 1000, "output_tokens": 200,
        "concurrent_users": 64}


def traced(settings: dict, **more) -> tuple[dict, dict]:
    out = vramplan.estimate_inference({**BODY, **more, "runtime_settings": settings, "trace": True})
    return out, trace_values(out)


def moved(out: dict) -> list[str]:
    return [a for a in out["assumptions"] if "following runtime_settings" in a]


def test_tgis_cache_follows_its_cuda_memory_fraction():
    base, t0 = traced({})
    half, t = traced({"launcher_memory_fraction": 0.5})
    # the server's share: MEMORY_FRACTION 0.5 x TGI_WIGGLE_ROOM 0.90 = 0.45 of the memory, 0.45 less than by default:
    # 0.45 x 80 GiB / 128 KiB = 294,912 tokens fewer (the weights and the warm-up hold the same either way)
    assert t0["rt_gpu_memory_utilization"] == 0.9 and t["rt_gpu_memory_utilization"] == 0.5 * 0.9
    assert base["kv_pool"]["tokens"] - half["kv_pool"]["tokens"] == 0.45 * 80 * GIB / KV_TOKEN == 294_912
    # the same cache as stating the share itself
    same, _ = traced({"gpu_memory_utilization": 0.45})
    assert same["kv_pool"] == half["kv_pool"]
    # and the launcher's heuristic counts half the memory: (80 GiB x 0.5 x 0.95 - the weights' count) // a token's
    model, token = launcher_vram(32, 4096, 32, 8, 14336, 128256)
    assert t["prefill_vram_max_tokens"] == int((int(80 * 1073741824 * 1 * 0.5 * 0.95) - model) // token) == 101_318
    [line] = moved(half)
    assert line.startswith("tgi: gpu_memory_utilization 0.45 = launcher_memory_fraction * wiggle_room, following "
                           "runtime_settings launcher_memory_fraction - flash_causal_lm.py warmup")
    assert not moved(base)


def test_a_value_given_wins_over_the_rule():
    out, t = traced({"launcher_memory_fraction": 0.5, "gpu_memory_utilization": 0.7})
    assert t["rt_gpu_memory_utilization"] == 0.7 and not moved(out)


def test_one_wiggle_room_moves_the_server_and_the_launcher():
    base, _ = traced({})
    out, t = traced({"wiggle_room": 0.8})
    # TGI_WIGGLE_ROOM=0.8: the server's cache 1.0 x 0.8 of the memory (0.1 x 80 GiB / 128 KiB = 65,536 tokens fewer than
    # 0.90), and the launcher's heuristic 0.8 instead of its own default 0.95
    assert t["rt_gpu_memory_utilization"] == 0.8 and t["rt_launcher_vram_wiggle"] == 0.8
    assert base["kv_pool"]["tokens"] - out["kv_pool"]["tokens"] == 65_536
    model, token = launcher_vram(32, 4096, 32, 8, 14336, 128256)
    assert t["prefill_vram_max_tokens"] == (int(80 * 1073741824 * 1 * 1.0 * 0.8) - model) // token
    assert [line.split(" = ")[0] for line in moved(out)] == ["tgi: gpu_memory_utilization 0.8", "tgi: launcher_vram_wiggle 0.8"]


def test_intels_image_ignores_the_fraction():
    # utils/import_utils.py get_xpu_free_memory: XPU_MEMORY_FRACTION (0.9), whatever fraction it is handed
    out = vramplan.estimate_inference({"gpu_key": "arc_b580", "llm_key": "qwen3-0.6b", "runtime": "tgi", "input_tokens": 500,
                                       "output_tokens": 100, "runtime_settings": {"launcher_memory_fraction": 0.5},
                                       "trace": True})
    assert trace_values(out)["rt_gpu_memory_utilization"] == 0.9 and not moved(out)


def test_tgi2s_cache_is_its_wiggle_room_of_what_is_free_within_the_fraction():
    # TGI 2.x: get_free_memory(device, MEMORY_FRACTION) x TGI_WIGGLE_ROOM = 0.95 x (free - (1 - 0.5) x total): 0.95 x 0.5 x
    # 80 GiB = 40,802,189,312 bytes less than on the whole GPU, whatever the weights and the warm-up hold
    _, whole = traced({}, runtime="tgi-v2")
    _, half = traced({"launcher_memory_fraction": 0.5}, runtime="tgi-v2")
    assert whole["kv_pool_bytes"] - half["kv_pool_bytes"] == pytest.approx(0.95 * 0.5 * 80 * GIB, rel=1e-12)
    assert half["rt_gpu_memory_utilization"] == whole["rt_gpu_memory_utilization"] == 0.95


def test_tgi2s_budget_follows_its_prompt_limit_and_3x_does_not():
    settings = {"max_input_tokens": 8000, "max_model_len": 9000}
    _, t2 = traced(settings, runtime="tgi-v2", input_tokens=5000, output_tokens=500)
    _, t3 = traced(settings, runtime="tgi", input_tokens=5000, output_tokens=500)
    assert t2["rt_max_prefill_tokens"] == 8000 + 50
    # TGI 3 derives its budget from the GPU whatever --max-input-tokens says: 900 TFLOPS / Llama 3.1 8B's FLOPs a token
    assert t3["rt_max_prefill_tokens"] == 4096 and t3["rt_prefill_budget_derived"] == 1 and t3["prefill_budget"] == 59_870
    # a budget the deployment states turns the derivation off (the declared rule of prefill_budget_derived)
    out, t = traced({"max_prefill_tokens": 8192})
    assert t["rt_prefill_budget_derived"] == 0 and t["prefill_budget"] == 8192
    assert [line.split(",")[0] for line in moved(out)] == ["tgi: prefill_budget_derived 0"]


def test_the_runtime_list_and_the_cli_show_the_rules():
    tgi = next(r for r in vramplan.list_runtimes() if r["key"] == "tgi")
    rule = tgi["constants"]["gpu_memory_utilization"]["follows"]
    assert rule["expr"] == "launcher_memory_fraction * wiggle_room" and rule["vendors"] == ["nvidia", "amd"]
    assert "follows" not in tgi["constants"]["launcher_memory_fraction"]
    shown = CliRunner().invoke(cli, ["runtimes", "tgi"]).output
    assert ("= launcher_memory_fraction * wiggle_room where runtime_settings set launcher_memory_fraction or wiggle_room "
            "on nvidia, amd GPUs") in shown


def fake(constants: dict) -> SimpleNamespace:
    full = {name: {"unit": "fraction", "source": "test", **c} for name, c in constants.items()}
    return SimpleNamespace(key="fake", data={"constants": full})


def test_a_value_the_runtime_would_not_take_is_a_422_naming_the_setting():
    rt = fake({"share": {"value": 0.5, "accepts": {"above": 0, "at_most": 1, "source": "a share"},
                         "follows": {"expr": "other * 2", "source": "test rule"}},
               "other": {"value": 0.25}})
    # other 0.8 makes share 1.6, above what it accepts
    assert _followed_problems(rt, {"runtime_settings": {"other": 0.8}}) == [
        ("runtime_settings.other", "makes fake's share 1.6 (other * 2), outside what it accepts (above 0, at most 1): set share too")]
    assert _followed_problems(rt, {"runtime_settings": {"other": 0.3}}) == []
    assert _followed_problems(rt, {"runtime_settings": {"other": 0.8, "share": 0.9}}) == []


@pytest.mark.parametrize("constants, words", [
    ({"a": {"value": 1, "follows": {"expr": "nope * 2", "source": "t"}}},
     "follows.expr reads 'nope', which is not one of this runtime's constants"),
    ({"a": {"value": 1, "follows": {"expr": "b +", "source": "t"}}, "b": {"value": 1}}, "syntax error"),
    ({"a": {"value": 1, "follows": {"expr": "b", "when_set": ["c"], "source": "t"}}, "b": {"value": 1}},
     "follows.when_set names 'c', which is not another of this runtime's constants"),
    ({"a": {"value": 1, "follows": {"expr": "0", "source": "t"}}}, "reads no setting that could trigger it"),
    ({"a": {"value": 1, "follows": {"expr": "b", "source": "t"}}, "b": {"value": 1, "follows": {"expr": "a", "source": "t"}}},
     "follows rules loop: a -> b -> a"),
])
def test_a_broken_rule_is_refused_at_load(constants, words):
    problem = _rules_problem("fake", fake(constants).data["constants"])
    assert problem is not None and words in problem
    with pytest.raises(FormulaError):
        follows.rules_of(fake(constants).data["constants"], "runtimes.fake")


def test_the_shipped_rules_load_in_dependency_order():
    tgi = next(r for r in vramplan.list_runtimes() if r["key"] == "tgi")
    order = [r.name for r in follows.rules_of(tgi["constants"], "runtimes.tgi")]
    assert set(order) == {"gpu_memory_utilization", "launcher_vram_wiggle", "prefill_budget_derived", "mem_fraction_derived"}
    # the declared rule that a stated share turns a derived one off reads gpu_memory_utilization, which TGI derives itself
    assert order.index("gpu_memory_utilization") < order.index("mem_fraction_derived")
