"""llama.cpp single-stream decode on the hardware classes its kernels treat differently (issue 11, item 7).

One test per mechanism, each with the arithmetic written out: the mat-vec path on the FP32 ALUs (not
Pascal's 1/64-rate FP16), __dp4a by compute capability, the per-SM streaming cap that holds HBM parts
below their bandwidth, CUDA graphs by architecture / batch / build, the per-token host floor on every
GPU, and Metal's cheaper kernels for legacy GGUF blocks. The constants are the runtime profile's
(llama.cpp: 81 us per layer, 27 us more per layer without a graph, 300 us per token, 10.9 GB/s per SM,
6 FLOP per weight of unpacking, 6 more without __dp4a); the tests spell them out so a changed value or
formula fails here.
"""

from __future__ import annotations

import pytest

from test_performance import FF, KV, L, H, V, Q4KM_HEAD_BYTES, Q4KM_LAYER_BYTES, rt, traced

# Llama 3 8B in F16: every layer matrix and norm in 16 bits, the untied head too; token_embd stays on the host.
F16_LAYER_BYTES = L * (2 * H * H + 2 * H * KV + 3 * H * FF + 2 * H) * 2 + H * 2   # 13,959,176,192
F16_HEAD_BYTES = V * H * 2                                                         # 1,050,673,152


def test_constants_are_the_ones_the_arithmetic_below_assumes():
    assert F16_LAYER_BYTES == 13_959_176_192 and F16_HEAD_BYTES == 1_050_673_152
    assert rt("llama.cpp", "decode_layer_overhead_us") == 81
    assert rt("llama.cpp", "decode_ungraphed_layer_us") == 27
    assert rt("llama.cpp", "decode_token_overhead_us") == 300
    assert rt("llama.cpp", "decode_sm_stream_gb_s") == 10.9
    assert rt("llama.cpp", "cuda_graph_min_cc") == 8.0 and rt("llama.cpp", "cuda_graph_max_seqs") == 1
    assert rt("llama.cpp", "decode_matvec_max_seqs") == 8
    assert rt("llama.cpp", "dequant_flops_per_weight") == 6 and rt("llama.cpp", "dequant_flops_no_dp4a") == 6


def test_pascal_f16_decode_runs_on_the_fp32_alus_not_the_fp16_rate():
    """Tesla P40 (FP32 11.76 TFLOP/s, FP16 0.18), Llama 3 8B F16, one sequence at a mean context of 512 tokens
    (a 256-token prompt and 512 new ones).

    Memory: (15,009,849,344 weights + 2 x 1024 x 2 bytes x 32 layers x 512 cells = 67,108,864 KV + 32 layers x
    (4096 + 14336) x 16 bytes = 9,437,184 of activations + 128,256 x 4 = 513,024 of f32 logits) bytes at min(346 GB/s x 0.9, 30 SMs x 10.9 = 327) =
    311.4 GB/s = 48.4487 ms. Mat-vec arithmetic: (2 x 7,504,924,672
    + 4 x 32 x 4096 x 512) = 15,278,284,800 FLOP / 11.76e12 = 1.299 ms (the FP16 tensor path would have said
    15,278,284,800 / (0.18e12 x 0.6) = 141.5 ms and 7 tok/s). Overhead: no CUDA graph below compute
    capability 8.0, 32 x (81 + 27) us + 300 us = 3.756 ms. Token: 48.4487 + 3.756 = 52.205 ms = 19.16 tok/s.
    """
    out, t = traced({"gpu_key": "p40", "llm_key": "llama-3-8b", "quantization": "fp16", "runtime": "llama.cpp",
                     "input_tokens": 256, "output_tokens": 512})
    assert t["decode_weight_bytes"] == F16_LAYER_BYTES + F16_HEAD_BYTES
    assert t["decode_kv_read_bytes"] == 67_108_864
    assert t["decode_stream_gb_s"] == pytest.approx(311.4, rel=1e-12)
    assert t["decode_elementwise_bytes"] == 32 * (4096 + 14336) * 16 + 128256 * 4 == 9_950_208
    assert t["decode_memory_s"] == pytest.approx((15_009_849_344 + 67_108_864 + 9_950_208) / 311.4e9, rel=1e-9)
    assert t["decode_matvec"] == 1
    assert t["decode_compute_s"] == pytest.approx(15_278_284_800 / 11.76e12, rel=1e-9)
    assert t["decode_cuda_graphs"] == 0
    assert t["decode_overhead_s"] == pytest.approx(3.756e-3, rel=1e-12)
    ms = (15_086_908_416 / 311.4e9 + 3.756e-3) * 1000
    assert out["ms_per_token"] == pytest.approx(ms, abs=0.006)
    assert out["estimated_latency_tps"] == pytest.approx(19.16, abs=0.05)


def test_quantized_decode_needs_dp4a_compute_capability_6_1():
    """Q4_K_M: the P40 (6.1) unpacks at 6 FLOP per weight; the P100 (6.0) falls back to byte-wise products, 6 + 6 = 12.

    P100, Llama 3 8B Q4_K_M: 4.925e9 weight bytes / 4.5 bits = 8.76e9 weights x 12 FLOP / 9.3 TFLOP/s = 11.3 ms of
    ALU work against 4.99e9 bytes / min(732 x 0.9 = 658.8, 56 SMs x 10.9 = 610.4 GB/s) = 8.2 ms of reads: ALU-bound.
    The P40's 6 FLOP on 11.76 TFLOP/s is 4.5 ms against 16 ms of reads: bandwidth-bound.
    """
    base = {"llm_key": "llama-3-8b", "quantization": "q4_k_m", "runtime": "llama.cpp", "input_tokens": 256, "output_tokens": 512}
    _, p100 = traced({**base, "gpu_key": "p100"})
    _, p40 = traced({**base, "gpu_key": "p40"})
    assert p100["decode_unpack_flops_per_weight"] == 12 and p40["decode_unpack_flops_per_weight"] == 6
    weights = Q4KM_LAYER_BYTES + Q4KM_HEAD_BYTES
    assert p100["decode_dequant_s"] == pytest.approx(weights * 8 / 4.5 * 12 / 9.3e12, rel=1e-9)
    assert p100["decode_stream_gb_s"] == pytest.approx(56 * 10.9, rel=1e-12)
    assert p100["decode_dequant_s"] > p100["decode_memory_s"]
    assert p40["decode_dequant_s"] == pytest.approx(weights * 8 / 4.5 * 6 / 11.76e12, rel=1e-9)
    assert p40["decode_dequant_s"] < p40["decode_memory_s"]


def test_hbm_datacenter_gpus_stream_at_the_per_sm_cap_not_their_bandwidth():
    """A100 80GB PCIe (1935 GB/s, 108 SMs): min(1935 x 0.9 = 1741.5, 108 x 10.9 = 1177.2) = 1177.2 GB/s.

    Llama 3 70B Q4_K_M: its weights, KV, one token's activations (80 layers x (8192 + 28672) x 16 bytes =
    47,185,920) and its f32 logits (128,256 x 4 = 513,024) at 1177.2 GB/s, plus 80 layers x 81 us + 300 us with the CUDA graph.
    An RTX 4090 (128 SMs x 10.9 = 1395.2) keeps its bandwidth share 1008 x 0.92 = 927.36 GB/s.
    """
    out, t = traced({"gpu_key": "a100_80_pcie", "llm_key": "llama-3-70b", "quantization": "q4_k_m",
                     "runtime": "llama.cpp", "input_tokens": 256, "output_tokens": 512})
    assert t["decode_stream_gb_s"] == pytest.approx(1177.2, rel=1e-12)
    assert t["decode_elementwise_bytes"] == 80 * (8192 + 28672) * 16 + 128256 * 4 == 47_698_944
    memory_s = (t["decode_weight_bytes"] + t["decode_kv_read_bytes"] + 47_698_944) / 1177.2e9
    assert t["decode_memory_s"] == pytest.approx(memory_s, rel=1e-12)
    assert t["decode_overhead_s"] == pytest.approx((80 * 81 + 300) * 1e-6, rel=1e-12)
    assert out["ms_per_token"] == pytest.approx((memory_s + 6.78e-3) * 1000, abs=0.006)
    _, rtx = traced({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b", "quantization": "q4_k_m",
                     "runtime": "llama.cpp", "input_tokens": 256, "output_tokens": 512})
    assert rtx["decode_stream_gb_s"] == pytest.approx(927.36, rel=1e-12)


def test_cuda_graphs_by_architecture_batch_and_build():
    """Llama 3 8B Q4_K_M, 32 layers: with a replayed graph 32 x 81 + 300 = 2892 us; launched kernel by kernel
    32 x (81 + 27) + 300 = 3756 us - below compute capability 8.0 (RTX 2080 Ti, 7.5), with more than one sequence
    per step, or with a build that captures nothing (runtime_settings cuda_graph_max_seqs 0)."""
    base = {"llm_key": "llama-3-8b", "quantization": "q4_k_m", "runtime": "llama.cpp", "input_tokens": 256, "output_tokens": 512}
    graphed, launched = 2892e-6, 3756e-6
    _, t = traced({**base, "gpu_key": "rtx_4090"})
    assert t["decode_cuda_graphs"] == 1 and t["decode_overhead_s"] == pytest.approx(graphed, rel=1e-12)
    _, t = traced({**base, "gpu_key": "rtx_2080_ti"})
    assert t["decode_cuda_graphs"] == 0 and t["decode_overhead_s"] == pytest.approx(launched, rel=1e-12)
    _, t = traced({**base, "gpu_key": "rtx_4090", "batch_size": 2})
    assert t["decode_cuda_graphs"] == 0 and t["decode_overhead_s"] == pytest.approx(launched, rel=1e-12)
    _, t = traced({**base, "gpu_key": "rtx_4090", "runtime_settings": {"cuda_graph_max_seqs": 0}})
    assert t["decode_cuda_graphs"] == 0 and t["decode_overhead_s"] == pytest.approx(launched, rel=1e-12)


def test_per_token_host_floor_applies_on_every_gpu():
    """Llama 3.2 1B (16 layers) Q4_K_M: 16 x 81 + 300 = 1596 us on an H100 PCIe (graph) and on an M2 Ultra
    (no CUDA graph, but no host-launched CUDA kernels either). The floor is why a 1B model on the H100 reaches
    well under its bandwidth share: the overhead is as large as the weight reads."""
    base = {"llm_key": "llama-3.2-1b", "quantization": "q4_k_m", "runtime": "llama.cpp", "input_tokens": 256, "output_tokens": 512}
    for gpu in ("h100_pcie", "apple_m2_ultra_192"):
        _, t = traced({**base, "gpu_key": gpu})
        assert t["decode_overhead_s"] == pytest.approx(1596e-6, rel=1e-12), gpu
    _, t = traced({**base, "gpu_key": "h100_pcie"})
    assert t["decode_overhead_s"] > 0.5 * t["decode_memory_s"]


def test_metal_unpacks_legacy_blocks_cheaper_than_k_quants():
    """M1 Max (10.62 TFLOP/s), Llama 2 7B: Q4_0 costs 6 FLOP per weight (block_q_n_dot_y: mask, convert,
    multiply-add), Q4_K_M the fitted 32. Q4_0 is then bound by its reads (3.8 GB at 400 x 0.75 = 300 GB/s
    = 12.6 ms against 6.74e9 x 6 / 10.62e12 = 3.8 ms of ALU work); Q4_K_M by the unpacking."""
    base = {"gpu_key": "apple_m1_max_64", "llm_key": "llama-2-7b", "runtime": "llama.cpp", "input_tokens": 64, "output_tokens": 128}
    out, t = traced({**base, "quantization": "q4_0", "trace": True})
    step = next(s for s in out["trace"] if s["id"] == "decode_unpack_flops_per_weight")
    assert step["inputs"]["dequant_flops_per_weight"] == 6
    assert t["decode_dequant_s"] < t["decode_memory_s"]
    out, t = traced({**base, "quantization": "q4_k_m", "trace": True})
    step = next(s for s in out["trace"] if s["id"] == "decode_unpack_flops_per_weight")
    assert step["inputs"]["dequant_flops_per_weight"] == 32
    assert t["decode_dequant_s"] > t["decode_memory_s"]
    # NVIDIA keeps one cost for every block family (MMVQ's dp4a path)
    _, t = traced({**base, "gpu_key": "rtx_4090", "quantization": "q4_0"})
    assert t["decode_unpack_flops_per_weight"] == 6


def test_vllm_and_transformers_keep_their_decode_path():
    """The new constants are neutral for the other runtimes: no per-SM cap, no mat-vec path, no token floor,
    no launch penalty - Llama 3 8B bf16 on an H100 streams at 3350 x 0.85 GB/s under vLLM as before."""
    _, t = traced({"gpu_key": "h100_80", "llm_key": "llama-3-8b", "quantization": "bf16", "runtime": "vllm",
                   "seq_length": 1024})
    assert t["decode_stream_gb_s"] == pytest.approx(3350 * 0.85, rel=1e-12)
    assert t["decode_matvec"] == 0 and t["decode_cuda_graphs"] == 1
    assert t["decode_overhead_s"] == pytest.approx(32 * 25e-6, rel=1e-12)
    _, t = traced({"gpu_key": "h100_80", "llm_key": "llama-3-8b", "quantization": "bf16", "runtime": "transformers",
                   "seq_length": 1024})
    assert t["decode_cuda_graphs"] == 0 and t["decode_overhead_s"] == pytest.approx(32 * 1000e-6, rel=1e-12)
