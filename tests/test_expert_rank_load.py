"""The busiest expert-parallel rank (formula expert_rank_load). Routing is skewed towards a few hot experts, the same ones
for hundreds of steps (TensorRT-LLM's large-scale EP blog, Table 1: DeepSeek R1 at EP 32, routed tokens by expert slot
mean 128 and standard deviation 164.1), so the rank holding them computes more rows than the mean one and the others
wait for it at the collective after the experts. A rank's load sums its n_experts / ep experts'; the busiest of ep ranks
lies, on average, the mean largest of ep standard normals above the mean (Blom's quantile (ep - 0.375) / (ep + 0.25)).
Worked out here with Python's own normal quantile, not the formula's rational approximation."""
from __future__ import annotations

import math
from statistics import NormalDist

import pytest

import vramplan
from vramplan.estimate import trace_values

CV = 164.1 / 128  # the blog's spread by expert slot


def traced(model: str = "qwen3-235b-a22b", n: int = 8, split: str = "expert", **more) -> tuple[dict, dict]:
    body = {"gpu_key": "h200", "llm_key": model, "quantization": "fp8", "runtime": "tensorrt-llm", "num_gpus": n,
            "inference_parallelism": split, "input_tokens": 4000, "output_tokens": 100, "concurrent_users": 64,
            "trace": True, **more}
    out = vramplan.estimate_inference(body)
    return out, trace_values(out)


def blom(ep: int) -> float:
    return NormalDist().inv_cdf((ep - 0.375) / (ep + 0.25))


def test_the_busiest_rank_of_eight_holding_sixteen_experts_each():
    # Qwen3-235B-A22B: 128 experts over 8 ranks, 16 a rank - a rank's spread 1.282 / 4 = 0.3205, the busiest of 8
    # 1.4342 of those above the mean: 1.4597 the mean's rows
    out, t = traced()
    assert (t["n_experts"], t["ep"]) == (128, 8)
    assert t["expert_rank_load"] == pytest.approx(1 + CV / math.sqrt(16) * blom(8), abs=2e-4)
    assert "the busiest GPU computes 1.46x the mean GPU's routed rows" in " ".join(out["assumptions"])


@pytest.mark.parametrize("ep, exact", [(2, 1 / math.sqrt(math.pi)), (4, 1.0294), (8, 1.4236)])
def test_the_largest_of_ep_normals_is_blom_s_quantile_near_the_exact_mean(ep, exact):
    # The mean largest of 2 standard normals is 1 / sqrt(pi) exactly; of 4 and 8 (tabulated) 1.0294 and 1.4236
    _, t = traced(model="deepseek-r1", n=ep)
    assert t["ep_rank_max_z"] == pytest.approx(blom(ep), abs=4.5e-4)
    assert t["ep_rank_max_z"] == pytest.approx(exact, abs=0.03)


def test_balanced_routing_or_no_expert_split_leaves_the_mean_rank():
    out, t = traced(runtime_settings={"expert_load_cv": 0})
    assert t["expert_rank_load"] == 1
    assert "mean GPU's routed rows" not in " ".join(out["assumptions"])
    _, t = traced(n=8, split="tensor")  # every GPU holds a slice of every expert: no rank holds the hot ones
    assert t["expert_rank_load"] == 1


def test_the_busiest_rank_computes_the_extra_rows_of_a_prompt():
    # One 4,000-token prompt on one rank: it computes the prompt's non-expert FLOPs and load / 8 of its routed-expert
    # FLOPs, so the skew adds 2 x active expert parameters x 4,000 x (load - 1) / 8
    _, skewed = traced()
    _, even = traced(runtime_settings={"expert_load_cv": 0})
    extra = 2 * skewed["expert_active_params"] * 4000 * (skewed["expert_rank_load"] - 1) / 8
    assert skewed["prefill_rank_gemm_flops"] - even["prefill_rank_gemm_flops"] == pytest.approx(extra, rel=1e-9)


def test_weight_bound_decode_does_not_wait_for_the_busy_rank():
    # One user: a round reads the weights; the busiest rank's few extra rows hide under its reads
    one = {"concurrent_users": 1, "input_tokens": 200, "output_tokens": 200}
    skewed, _ = traced(**one)
    even, _ = traced(runtime_settings={"expert_load_cv": 0}, **one)
    assert skewed["serving"]["itl_ms"] == even["serving"]["itl_ms"]


def test_a_spread_below_zero_is_refused_naming_the_setting():
    with pytest.raises(vramplan.RequestError, match=r"runtime_settings\.expert_load_cv"):
        traced(runtime_settings={"expert_load_cv": -1})
