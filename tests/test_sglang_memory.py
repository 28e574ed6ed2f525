"""SGLang 0.5's memory share and KV pool (python/sglang/srt/server_args.py _handle_gpu_memory_settings, PR #10975;
model_runner.py profile_max_num_token). Unset, --mem-fraction-static is round((gpu_mem - reserved) / gpu_mem, 3) with
reserved = 512 + max(chunked_prefill_size, 2048) x 1.5 + cuda_graph_max_bs x 2 + tp_size x pp_size / 8 x 1024 MiB
(+ 3 x cuda_graph_max_bs x dp_size under DP attention), at least 10 GiB on a GPU above 60 GiB; the pool is that share
of the memory free at start-up (after the CUDA context and communicators) less the loaded model. Worked out here."""
from __future__ import annotations

import pytest

import vramplan
from vramplan.estimate import trace_values

MIB = 2**20


def traced(gpu: str, n: int = 1, split: str | None = None, model: str = "llama-3.1-8b-instruct", **more) -> tuple[dict, dict]:
    body = {"gpu_key": gpu, "llm_key": model, "runtime": "sglang", "input_tokens": 1000, "output_tokens": 200,
            "concurrent_users": 64, "num_gpus": n, "trace": True, **more}
    if split:
        body["inference_parallelism"] = split
    out = vramplan.estimate_inference(body)
    return out, trace_values(out)


def share(gpu_mib: int, reserved: float) -> float:
    return round((gpu_mib - reserved) / gpu_mib, 3)


@pytest.mark.parametrize("gpu, n, split, model, reserved", [
    # H100 80 GB, TP 1: chunked_prefill_size 8,192, cuda_graph_max_bs 256 -> 512 + 12,288 + 512 + 128
    ("h100_80", 1, None, "llama-3.1-8b-instruct", 512 + 8192 * 1.5 + 256 * 2 + 1 * 1024 / 8),
    # TP 4: cuda_graph_max_bs 512 at TP 4 or more -> 512 + 12,288 + 1,024 + 512
    ("h100_80", 4, "tensor", "llama-3.3-70b-instruct", 512 + 8192 * 1.5 + 512 * 2 + 4 * 1024 / 8),
    # RTX 4090 (24 GiB): 2,048-token chunks, 24 graph sequences, no 10 GiB floor below 60 GiB
    ("rtx_4090", 1, None, "llama-3.1-8b-instruct", 512 + 2048 * 1.5 + 24 * 2 + 1024 / 8),
    # B200 (180 GiB): 16,384-token chunks, 512 graph sequences
    ("b200", 1, None, "llama-3.1-8b-instruct", 512 + 16384 * 1.5 + 512 * 2 + 1024 / 8),
    # eight H200s under DP attention: every GPU counts in its tp_size (so 512 graph sequences a rank, the TP 4 tier),
    # and 3 + 1.5 MiB a graph sequence on each of the 8 ranks, the graphs being past 300
    ("h200", 8, "expert", "deepseek-r1", 512 + 8192 * 1.5 + 512 * 2 + 8 * 1024 / 8 + (3 + 1.5) * 512 * 8),
])
def test_the_share_sglang_derives(gpu, n, split, model, reserved):
    gpu_mib = {"h100_80": 80, "rtx_4090": 24, "b200": 180, "h200": 141}[gpu] * 1024
    out, t = traced(gpu, n, split, model, **({"quantization": "fp8"} if model == "deepseek-r1" else {}))
    assert t["mem_reserved_mib"] == reserved
    assert t["kv_memory_share"] == share(gpu_mib, reserved)
    assert f"memory share: {share(gpu_mib, reserved):.3f} of each GPU for the weights and the KV pool, as sglang's server " \
           f"derives it from the GPU's memory, keeping {reserved:,.0f} MiB" in " ".join(out["assumptions"])


def test_the_shares_it_prints():
    # (81,920 - 13,440) / 81,920 = 0.8359 -> 0.836; (24,576 - 3,760) / 24,576 = 0.8470 -> 0.847;
    # (184,320 - 26,240) / 184,320 = 0.8576 -> 0.858
    assert (share(81920, 13440), share(24576, 3760), share(184320, 26240)) == (0.836, 0.847, 0.858)


def test_the_pool_is_the_share_of_what_is_free_at_start_less_the_model():
    _, t = traced("h100_80")
    free_at_start = 80 * 1024 * MIB - 716.8 * MIB - 256 * MIB  # less the CUDA context and the non-torch buffers
    assert (t["rt_cuda_context_mib"], t["non_torch_bytes"]) == (716.8, 256 * MIB)
    assert t["kv_pool_bytes"] == pytest.approx(0.836 * free_at_start - t["weights_loaded_bytes"], rel=1e-12)
    # the activations of a prefill come out of the reserve, not out of the pool
    assert t["activations_gpu_bytes"] > 0


def test_a_stated_share_is_the_share():
    out, t = traced("h100_80", runtime_settings={"gpu_memory_utilization": 0.88})
    _, d = traced("h100_80")
    assert t["kv_memory_share"] == 0.88 and t["rt_mem_fraction_derived"] == 0
    # the pools differ by (0.88 - 0.836) of the memory free at start-up
    free_at_start = 80 * 1024 * MIB - 716.8 * MIB - 256 * MIB
    assert t["kv_pool_bytes"] - d["kv_pool_bytes"] == pytest.approx((0.88 - 0.836) * free_at_start, rel=1e-9)
    said = " ".join(out["assumptions"])
    assert "memory share:" not in said
    assert "sglang: mem_fraction_derived 0, following runtime_settings gpu_memory_utilization" in said


def test_vllm_keeps_its_own_share_and_budget():
    out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "runtime": "vllm",
                                       "input_tokens": 1000, "output_tokens": 200, "trace": True})
    t = trace_values(out)
    assert t["kv_memory_share"] == 0.9 and t["rt_kv_pool_share_of_start"] == 0
    assert "memory share:" not in " ".join(out["assumptions"])
