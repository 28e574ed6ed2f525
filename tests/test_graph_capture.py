"""CUDA / HIP graph capture in the vLLM family, and what a step costs without it (issue 11).

vLLM replays a captured graph for decode batches up to cuda_graph_max_seqs, on NVIDIA and - as HIP graphs - on
ROCm (hip_graphs 1); `--enforce-eager` (runtime_settings cuda_graph_max_seqs 0) launches every kernel from the
host. V0 pays 47 us a layer for that (vLLM PR #1440: Llama-2-7B, 1.2 s eager vs 1.05 s graphed for 100 tokens =
1.5 ms a step / 32 layers). llama.cpp's HIP build captures nothing and pays no CUDA launch penalty.
"""

from __future__ import annotations

import pytest

from test_performance import rt, traced

BASE = {"llm_key": "llama-3.1-8b", "quantization": "bf16", "input_tokens": 512, "output_tokens": 128, "batch_size": 1}


def test_constants_are_the_ones_the_arithmetic_below_assumes():
    assert rt("vllm-v0", "decode_ungraphed_layer_us") == 47
    assert rt("vllm-v0", "hip_graphs") == 1 and rt("vllm", "hip_graphs") == 1
    assert rt("vllm-v0", "decode_layer_overhead_us") == 25 and rt("vllm-v0", "decode_token_overhead_us") == 4000


@pytest.mark.parametrize("gpu", ["mi300x", "h100_80"])
def test_enforce_eager_adds_the_launch_cost_of_every_layer_on_cuda_and_rocm(gpu):
    """Llama 3.1 8B, one sequence, vLLM V0: graphed, 32 layers x 25 us + the 4,000 us host bubble of a step = 4,800 us of
    fixed cost; eager, 32 x (25 + 47) + 4,000 = 6,304 us - the time between tokens grows by exactly 32 x 47 us = 1.504 ms."""
    graphed, tg = traced({**BASE, "gpu_key": gpu, "runtime": "vllm-v0"})
    eager, te = traced({**BASE, "gpu_key": gpu, "runtime": "vllm-v0", "runtime_settings": {"cuda_graph_max_seqs": 0}})
    assert tg["decode_cuda_graphs"] == 1 and te["decode_cuda_graphs"] == 0
    assert tg["decode_overhead_s"] == pytest.approx(32 * 25e-6 + 4e-3, rel=1e-9)
    assert te["decode_overhead_s"] == pytest.approx(32 * (25 + 47) * 1e-6 + 4e-3, rel=1e-9)
    assert eager["serving"]["itl_ms"] - graphed["serving"]["itl_ms"] == pytest.approx(1.504, abs=0.011)


def test_llama_cpp_on_rocm_captures_nothing_and_pays_no_cuda_launch_penalty():
    """llama.cpp on an MI300X: no graph (hip_graphs 0), and the per-layer cost stays 81 us (no +27 us): 32 x 81 = 2,592
    us + 300 us of per-token host work = 2,892 us."""
    _, t = traced({**BASE, "gpu_key": "mi300x", "runtime": "llama.cpp", "quantization": "q4_k_m"})
    assert t["decode_cuda_graphs"] == 0
    assert t["decode_overhead_s"] == pytest.approx(2892e-6, rel=1e-9)


def test_tgi_replays_graphs_up_to_32_sequences_and_launches_larger_batches_eagerly():
    """text-generation-launcher captures decode graphs for 1, 2, 4, 8, 16 and 32 sequences (--cuda-graphs default);
    a decode batch of 40 runs eagerly. Llama 3.1 8B on an H100, 32 layers: graphed, 32 x 25 us = 800 us of fixed cost
    a step; eager, 32 x (25 + 47) = 2,304 us - the same 47 us a layer vLLM V0 pays without its graph."""
    assert rt("tgi", "cuda_graph_max_seqs") == 32 and rt("tgi", "decode_ungraphed_layer_us") == 47
    body = {**BASE, "gpu_key": "h100_80", "runtime": "tgi"}
    _, at32 = traced({**body, "concurrent_users": 32})
    _, at40 = traced({**body, "concurrent_users": 40})
    assert at32["decode_mb_seqs"] == 32 and at32["decode_cuda_graphs"] == 1
    assert at40["decode_mb_seqs"] == 40 and at40["decode_cuda_graphs"] == 0
    assert at32["decode_overhead_s"] == pytest.approx(32 * 25e-6, rel=1e-9)
    assert at40["decode_overhead_s"] == pytest.approx(32 * (25 + 47) * 1e-6, rel=1e-9)


def test_tensorrt_llm_without_padding_replays_graphs_only_up_to_32_sequences():
    """TensorRT-LLM's default CudaGraphConfig (no enable_padding) captures 1-32, 64 and 128 and pads no batch up to
    them: a decode batch of 33 (or 50, or 100) runs eagerly, taken as every batch past 32. Llama 3.1 8B on an H100, 32
    layers: at 32 clients 32 x 25 us = 800 us of fixed cost a step; at 33, 32 x (25 + 47) = 2,304 us; the same 33 on a
    deployment that pads up to 128 (runtime_settings cuda_graph_max_seqs 128, as enable_padding gives) replays - 800 us."""
    assert rt("tensorrt-llm", "cuda_graph_max_seqs") == 32 and rt("tensorrt-llm", "decode_ungraphed_layer_us") == 47
    body = {**BASE, "gpu_key": "h100_80", "runtime": "tensorrt-llm"}
    _, at32 = traced({**body, "concurrent_users": 32})
    _, at33 = traced({**body, "concurrent_users": 33})
    _, padded = traced({**body, "concurrent_users": 33, "runtime_settings": {"cuda_graph_max_seqs": 128}})
    assert at32["decode_mb_seqs"] == 32 and at32["decode_cuda_graphs"] == 1
    assert at33["decode_mb_seqs"] == 33 and at33["decode_cuda_graphs"] == 0 and padded["decode_cuda_graphs"] == 1
    assert at32["decode_overhead_s"] == pytest.approx(32 * 25e-6, rel=1e-9)
    assert at33["decode_overhead_s"] == pytest.approx(32 * (25 + 47) * 1e-6, rel=1e-9)
    assert padded["decode_overhead_s"] == pytest.approx(32 * 25e-6, rel=1e-9)


@pytest.mark.parametrize("gpu, tp, cap", [("rtx_4090", 1, 24), ("l40s", 1, 32), ("h100_80", 1, 256), ("h100_80", 4, 512),
                                          ("h200", 2, 256), ("b200", 1, 512)])
def test_sglang_captures_by_gpu_memory_and_tensor_parallel_size(gpu, tp, cap):
    """SGLang's cuda_graph_max_bs (server_args.py _handle_gpu_memory_settings): 24 / 32 / 256 / 512 at TP 1-2 below 35 /
    60 / 160 GiB / above, 80 / 160 / 512 at TP 4 or more. A decode batch of cap sequences replays a graph; one of cap + 8
    launches the 32 layers of Llama 3.1 8B eagerly: 32 x 47 us = 1.504 ms more fixed cost a step."""
    body = {"gpu_key": gpu, "llm_key": "llama-3.1-8b", "quantization": "bf16", "runtime": "sglang",
            "input_tokens": 64, "output_tokens": 64}
    if tp > 1:
        body.update(num_gpus=tp, inference_parallelism="tensor")
    _, at = traced({**body, "concurrent_users": cap})
    _, past = traced({**body, "concurrent_users": cap + 8})
    assert at["decode_mb_seqs"] == cap and at["decode_cuda_graphs"] == 1
    assert past["decode_mb_seqs"] == cap + 8 and past["decode_cuda_graphs"] == 0
    assert past["decode_overhead_s"] - at["decode_overhead_s"] == pytest.approx(32 * 47e-6, rel=1e-9)
