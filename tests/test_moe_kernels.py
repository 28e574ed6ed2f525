"""MoE decode kernels (formulas/performance/decode.yaml), each mechanism worked out by hand.

A fused MoE layer sorts its tokens by expert and pads each expert's list to whole tiles of the grouped
GEMM (vLLM fused_moe moe_align_block_size, triton_kernels routing); the tile grows with the tokens per
expert (triton_kernels opt_flags: max(16, min(next_power_of_2(tokens x top_k // experts), 128))). The
tensor cores multiply the padding rows like real ones, so a decode step's routed-expert FLOPs grow by
the padded rows over the real ones. The layer also runs more kernels than a dense MLP (router GEMM,
top-k, sorting, the reduction): a fixed cost per MoE layer.

gpt-oss-20b: 24 layers, all MoE, 32 experts of which 4 per token, hidden 2880, expert intermediate 2880,
gated (gate, up, down).
"""

from __future__ import annotations

import math

import pytest

import vramplan
from vramplan.catalog import get_catalog
from vramplan.estimate import trace_values as values

from model_configs import MIXTRAL

CAT = get_catalog()
EXPERT_PARAMS = 24 * 4 * 2880 * 2880 * 3     # 96 x 24,883,200 = 2,388,787,200 routed-expert params a token multiplies with


def rt(runtime: str, name: str) -> float:
    return float(CAT.runtimes.get(runtime).data["constants"][name]["value"])


def gpt_oss_20b(users: int, runtime: str = "vllm") -> dict[str, float]:
    body = {"gpu_key": "h200", "llm_key": "gpt-oss-20b", "quantization": "mxfp4", "runtime": runtime,
            "input_tokens": 1000, "output_tokens": 1000, "concurrent_users": users, "trace": True}
    return values(vramplan.estimate_inference(body))


def test_each_touched_expert_computes_whole_tiles_of_rows():
    t = gpt_oss_20b(64)
    assert t["srv_decode_seqs"] == 64                          # 64 users all fit the H200's KV pool
    # 64 tokens x 4 experts / 32 experts = 8 rows per expert on average.
    assert t["moe_tokens_per_expert"] == pytest.approx(8.0, rel=1e-12)
    # The next power of two of 8 is 8, below the smallest tile of 16: tiles of 16 rows.
    assert rt("vllm", "moe_block_m_min") == 16 and rt("vllm", "moe_block_m_max") == 128
    assert t["moe_block_m"] == 16
    # 64 tokens leave an expert untouched with probability (28/32)^64 = 0.875^64 = 1.9e-4, so a touched expert
    # holds 8 / coverage = 8.00155 rows (sd sqrt(8.00155) = 2.8287, near Poisson). One tile of 16 always; a second
    # only past 16.5 rows, (16.5 - 8.00155) / 2.8287 = 3.0044 sd up: 1 - Phi(3.0044) = 0.0012 (logistic Phi of
    # Bowling et al. 2009). 1.0012 tiles x 16 / 8.00155 = 2.0020 rows computed per real one.
    coverage = 1 - 0.875 ** 64
    assert t["expert_coverage"] == pytest.approx(coverage, rel=1e-12)
    rows = 8 / coverage
    z = (16.5 - rows) / rows ** 0.5
    tiles = 1 + 1 - 1 / (1 + math.exp(-(0.07056 * z ** 3 + 1.5976 * z)))
    assert tiles == pytest.approx(1.0012, abs=1e-4)
    assert t["moe_expected_tiles"] == pytest.approx(tiles, rel=1e-12)
    assert t["moe_padded_rows"] == pytest.approx(tiles * 16 / rows, rel=1e-12)
    assert t["moe_padded_rows"] == pytest.approx(2.0020, abs=1e-4)
    assert t["expert_active_params"] == 2388787200 == EXPERT_PARAMS
    # The routed experts' FLOPs count twice over (less the untouched share); the rest of the matmuls once.
    extra = 2 * (tiles * 16 / rows - 1) * EXPERT_PARAMS        # ~4.79e9 FLOPs per token of padding rows
    assert t["decode_gemm_flops_per_token"] == pytest.approx(2 * t["matmul_params_active"] + extra, rel=1e-12)


def test_tiles_grow_with_the_tokens_per_expert_and_the_routing_spills_some_over():
    # 256 users: 256 x 4 / 32 = 32 rows per expert - a tile of 32, every expert touched (1 - 0.875^256 = 1 - 1.4e-15).
    # The mean fills the tile exactly, so the experts that get more than 32.5 rows (sd sqrt(32) = 5.657: 0.088 sd above
    # the mean, Phi = 0.5353) spill into a second: 2 - 0.5353 = 1.4647 tiles, 1.4647 x 32 / 32 = 1.4647 rows per real one.
    t = gpt_oss_20b(256)
    assert t["srv_decode_seqs"] == 256
    assert t["moe_block_m"] == 32
    z = 0.5 / 32 ** 0.5
    spill = 1 - 1 / (1 + math.exp(-(0.07056 * z ** 3 + 1.5976 * z)))
    assert spill == pytest.approx(0.4647, abs=1e-4)
    assert t["moe_padded_rows"] == pytest.approx(1 + spill, rel=1e-9)
    assert t["decode_gemm_flops_per_token"] == pytest.approx(2 * t["matmul_params_active"] + 2 * spill * EXPERT_PARAMS, rel=1e-9)


def test_fused_moe_layers_add_their_extra_kernels_to_the_fixed_step_cost():
    t = gpt_oss_20b(64)
    # vLLM on an H200 replays a graph at 64 sequences: 24 layers x 25 us, plus 24 MoE layers x 22 us - the fixed
    # cost of a fused_moe call measured in graph replays (~28 us), less the ~6 us of a dense MLP's 3 kernels that
    # the per-layer cost already holds = 600 + 528 = 1,128 us.
    assert t["decode_cuda_graphs"] == 1
    assert rt("vllm", "decode_layer_overhead_us") == 25 and rt("vllm", "moe_layer_overhead_us") == 22
    assert t["decode_overhead_s"] == pytest.approx((24 * 25 + 24 * 22) * 1e-6, rel=1e-12)


def test_dense_models_and_mat_vec_decoding_pad_nothing():
    dense = values(vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "llama-3-8b", "quantization": "bf16",
                                                "runtime": "vllm", "concurrent_users": 64, "trace": True}))
    assert dense["moe_block_m"] == 0 and dense["moe_padded_rows"] == 1 and dense["expert_active_params"] == 0
    assert dense["decode_gemm_flops_per_token"] == pytest.approx(2 * dense["matmul_params_active"], rel=1e-12)
    # llama.cpp decodes one sequence with mat-vec kernels (mul_mat_id, one routed row each): no tiles, and its
    # per-layer overhead already holds its MoE graph nodes (moe_layer_overhead_us 0). Mixtral, 2 of 8 experts.
    mix = values(vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "custom", "custom_model": MIXTRAL,
                                              "quantization": "bf16", "runtime": "llama.cpp", "trace": True}))
    assert mix["decode_matvec"] == 1 and mix["moe_block_m"] == 0 and mix["moe_padded_rows"] == 1
    assert mix["moe_tokens_per_expert"] == pytest.approx(2 / 8, rel=1e-12)    # 1 token x 2 / 8


def test_mla_decodes_in_the_latent_space_where_the_runtime_absorbs_the_up_projections():
    """DeepSeek-V2-Lite (27 layers, 16 heads, kv_lora_rank 512, rope 64, qk_nope 128): vLLM scores the 576-wide latent and
    weights the 512-wide one, 2 x 16 x (2 x 512 + 64) = 34,816 FLOPs per cached token and layer; transformers
    decompresses the heads, 4 x q_dim = 4 x 16 x 192 = 12,288. Same request, same context: the ratio is 34,816 / 12,288."""
    body = {"gpu_key": "h100_80", "llm_key": "deepseek-v2-lite-chat", "quantization": "bf16", "input_tokens": 1024,
            "output_tokens": 256, "batch_size": 1}
    tv = values(vramplan.estimate_inference({**body, "runtime": "vllm", "trace": True}))
    tt = values(vramplan.estimate_inference({**body, "runtime": "transformers", "trace": True}))
    assert tv["decode_attn_flops_per_token"] == pytest.approx(34816 * 27 * (1024 + 128), rel=1e-9)
    assert tv["decode_attn_flops_per_token"] / tt["decode_attn_flops_per_token"] == pytest.approx(34816 / 12288, rel=1e-9)


def test_an_open_loops_capacity_reads_the_experts_its_full_rounds_touch():
    """Qwen3-30B-A3B (8 of 128 experts a token) on an H100 under vLLM: an open loop at 0.5 requests/s runs a few
    sequences, whose rounds touch a fraction of the experts; the rounds at its admission cap touch them all. The
    capacity round reads what a closed loop at the cap reads (decode_layer_bytes is linear in the coverage), not
    the operating point's share."""
    body = {"gpu_key": "h100_80", "llm_key": "qwen3-30b-a3b", "quantization": "fp8", "runtime": "vllm",
            "input_tokens": 1000, "output_tokens": 200, "trace": True}
    light = values(vramplan.estimate_inference({**body, "request_rate": 0.5}))
    full = values(vramplan.estimate_inference({**body, "concurrent_users": 100000}))
    assert light["srv_n_cap"] == full["srv_decode_seqs"]
    assert light["expert_coverage"] < 0.9 < light["expert_coverage_cap"] == pytest.approx(full["expert_coverage"], rel=1e-12)
    assert light["srv_weights_s"] < light["srv_weights_cap_s"] == pytest.approx(full["srv_weights_s"], rel=1e-9)


def test_unpacked_mxfp4_experts_stream_at_the_measured_share_of_the_bandwidth_on_hopper():
    """gpt-oss-20b MXFP4 on an H100 (3,352 GB/s; vLLM decode at 0.85) with one sequence: the round's routed experts
    (coverage 4/32) stream at 0.477 of the bandwidth (triton PR #9248's 2,290 of 4,800 GB/s on an H200), not at 0.85 -
    the round grows by exactly the expert bytes it touches x (1 / (0.477 x 3352) - 1 / (0.85 x 3352)) per GB/s. On a
    B200 (W4A8, FP8 MMAs) nothing changes."""
    body = {"gpu_key": "h100_80", "llm_key": "gpt-oss-20b", "quantization": "mxfp4", "runtime": "vllm",
            "input_tokens": 1000, "output_tokens": 200, "batch_size": 1, "trace": True}
    slow = values(vramplan.estimate_inference(body))
    fast = values(vramplan.estimate_inference({**body, "runtime_settings": {"unpacked_moe_stream_of_peak": 0}}))
    touched = slow["expert_coverage"] * slow["expert_weights_bytes"] * slow["weights_scale"]
    assert slow["expert_coverage"] == pytest.approx(4 / 32)
    bw = slow["gpu_bw_gb_s"] * 1e9
    assert slow["decode_unpacked_moe_s"] == pytest.approx(touched * (1 / (0.477 * bw) - 1 / (0.85 * bw)), rel=1e-9)
    assert slow["srv_weights_s"] - fast["srv_weights_s"] == pytest.approx(slow["decode_unpacked_moe_s"], rel=1e-9)
    b200 = values(vramplan.estimate_inference({**body, "gpu_key": "b200"}))
    assert b200["decode_unpacked_moe_s"] == 0


def test_each_routed_expert_writes_a_hidden_wide_row_that_the_combine_reads_back():
    """gpt-oss-20b under vLLM: fused_moe's second GEMM writes intermediate_cache3 (tokens, top_k, hidden) in bf16 and
    moe_sum reads it back - 24 MoE layers x 2 passes x 4 experts x 2880 x 2 bytes = 1,105,920 bytes a token, on top of
    the norms' and activations' 24 x (2880 + 4 x 2880) x 8 = 2,764,800. It is paid per sequence, so the round at 256
    users grows by 256 x 1,105,920 / (0.85 x 4,800 GB/s) over what the same round costs without it."""
    t = gpt_oss_20b(256)
    assert t["moe_combine_token_bytes"] == 24 * 2 * 4 * 2880 * 2 == 1105920
    assert rt("vllm", "elementwise_traffic_bytes") == 8
    assert t["elementwise_token_bytes"] == 24 * (2880 + 4 * 2880) * 8 + 1105920 == 3870720
    stream = t["decode_stream_gb_s"] * 1e9
    assert t["srv_elementwise_s"] == pytest.approx((3870720 + t["sampler_seq_bytes"]) / stream, rel=1e-12)
    # The combine is 2 x 4 x 2880 x 2 = 46,080 bytes a layer against the layer's whole expert set read once a round
    # (32 x 3 x 2880 x 2880 MXFP4 weights): at 256 sequences 11.8 MB, at 1 sequence 46 KB - it grows with the batch.
    one = gpt_oss_20b(1)
    assert one["moe_combine_token_bytes"] == t["moe_combine_token_bytes"]   # per token: the same at any batch


def test_tensor_parallel_ranks_each_combine_every_token_and_dense_models_combine_nothing():
    """Mixtral 8x7B (32 MoE layers, 2 of 8 experts, hidden 4096) over 2 tensor-parallel GPUs in vLLM: each rank holds
    half of every expert's width, so its second GEMM writes a full 4096-wide partial row per routed expert for every
    token before the all-reduce - 32 x 2 x 2 x 4096 x 2 = 1,048,576 bytes a token on each rank, 2,097,152 over both.
    Llama 3 8B has no MoE layer: 0."""
    mix = values(vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "custom", "custom_model": MIXTRAL,
                                              "quantization": "bf16", "runtime": "vllm", "num_gpus": 2, "inference_parallelism": "tensor",
                                              "concurrent_users": 64, "trace": True}))
    assert mix["tp"] == 2 and mix["n_moe_layers"] == 32
    assert mix["moe_combine_token_bytes"] == 2 * 32 * 2 * 2 * 4096 * 2 == 2097152
    dense = values(vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "llama-3-8b", "quantization": "bf16",
                                                "runtime": "vllm", "concurrent_users": 64, "trace": True}))
    assert dense["moe_combine_token_bytes"] == 0


def test_a_pipeline_stage_streams_only_its_own_layers_activations():
    """Llama 3.1 8B in vLLM on one H100 and over 2 pipeline stages: the token's elementwise traffic is 32 x (4096 +
    14336) x 8 = 4,718,592 bytes over all layers; a stage runs 16 of them, so its per-sequence share is half of it and
    half the sampler's 128,256 x 12 = 1,539,072 (only the last stage samples; the round spreads it over the stages) -
    (4,718,592 + 1,539,072) / 2 = 3,128,832 bytes, as its KV read is half the sequence's."""
    body = {"gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "quantization": "bf16", "runtime": "vllm",
            "input_tokens": 1000, "output_tokens": 1000, "concurrent_users": 64, "trace": True}
    one = values(vramplan.estimate_inference(body))
    two = values(vramplan.estimate_inference({**body, "num_gpus": 2, "inference_parallelism": "pipeline"}))
    assert one["elementwise_token_bytes"] == two["elementwise_token_bytes"] == 32 * (4096 + 14336) * 8 == 4718592
    assert two["sampler_seq_bytes"] == 128256 * 12 == 1539072
    stream = two["decode_stream_gb_s"] * 1e9
    assert two["srv_elementwise_s"] == pytest.approx(3128832 / stream, rel=1e-12)
    assert one["srv_elementwise_s"] == pytest.approx(6257664 / (one["decode_stream_gb_s"] * 1e9), rel=1e-12)
    assert two["decode_kv_seq_bytes"] == pytest.approx(one["decode_kv_seq_bytes"] / 2, rel=1e-12)


def test_tensorrt_llm_copies_each_tokens_input_per_routed_expert_before_the_first_gemm():
    """Qwen3-30B-A3B (48 MoE layers, 8 of 128 experts, hidden 2048) in FP8 on an H100: TensorRT-LLM's expandInputRowsKernel
    writes every token's FP8 input once per routed expert and the first grouped GEMM reads the copy - 48 x 2 x 8 x 2048 x
    1 byte = 1,572,864 bytes a token; vLLM's fused_moe_kernel reads the rows in place (0). gpt-oss-20b MXFP4 on the same
    H100 runs TensorRT-LLM's Triton backend (W4A16), which gathers in place too (0)."""
    body = {"gpu_key": "h100_80", "llm_key": "qwen3-30b-a3b", "quantization": "fp8", "input_tokens": 1000,
            "output_tokens": 200, "concurrent_users": 64, "trace": True}
    trt = values(vramplan.estimate_inference({**body, "runtime": "tensorrt-llm"}))
    vllm = values(vramplan.estimate_inference({**body, "runtime": "vllm"}))
    assert rt("tensorrt-llm", "moe_permute_inputs") == 1 and trt["act_quant_bits"] == 8
    assert trt["moe_permute_token_bytes"] == 48 * 2 * 8 * 2048 * 1 == 1572864
    assert vllm["moe_permute_token_bytes"] == 0
    # Both combine the experts' bf16 rows: 48 x 2 x 8 x 2048 x 2 = 3,145,728 bytes a token.
    assert trt["moe_combine_token_bytes"] == vllm["moe_combine_token_bytes"] == 3145728
    assert trt["elementwise_token_bytes"] - vllm["elementwise_token_bytes"] == pytest.approx(
        1572864 + 48 * (2048 + 8 * 768) * (rt("tensorrt-llm", "elementwise_traffic_bytes") - rt("vllm", "elementwise_traffic_bytes")))
    oss = values(vramplan.estimate_inference({**body, "llm_key": "gpt-oss-20b", "quantization": "mxfp4",
                                              "runtime": "tensorrt-llm"}))
    assert oss["unpacked_gemm_rate"] < 1 and oss["moe_permute_token_bytes"] == 0


def test_the_permuted_inputs_are_in_the_format_the_gemm_quantizes_them_to_on_that_gpu():
    """act_quant_bits is the format's activation_quant where the GPU runs its compute type natively, else 0 (the 16-bit
    compute dtype): FP8 on an H100 8 bits (W8A8), on an A100 (no FP8 MMA: W8A16) 0; NVFP4 on a B200 4.5 bits (E2M1 + an
    FP8 scale per 16: W4A4), on an H100 0 (W4A16); MXFP4 on a B200 8.25 (MXFP8 activations: W4A8). TensorRT-LLM's
    copy of Qwen3-30B-A3B's inputs in NVFP4 on a B200 is then 48 x 2 x 8 x 2048 x 4.5 / 8 = 884,736 bytes a token."""
    def at(gpu: str, quant: str, llm: str = "qwen3-30b-a3b") -> dict[str, float]:
        return values(vramplan.estimate_inference({"gpu_key": gpu, "llm_key": llm, "quantization": quant,
                                                   "runtime": "tensorrt-llm", "concurrent_users": 8, "trace": True}))
    assert at("h100_80", "fp8")["act_quant_bits"] == 8
    assert at("a100_80", "fp8")["act_quant_bits"] == 0
    b200 = at("b200", "nvfp4")
    assert b200["act_quant_bits"] == 4.5
    assert b200["moe_permute_token_bytes"] == 48 * 2 * 8 * 2048 * 4.5 / 8 == 884736
    assert at("h100_80", "nvfp4")["act_quant_bits"] == 0
    assert at("b200", "mxfp4", "gpt-oss-20b")["act_quant_bits"] == 8.25


def test_transformers_expert_loop_gathers_a_copy_of_each_experts_rows():
    """transformers' MixtralExperts loop takes current_state = hidden_states[token_idx] - a gathered copy per expert - so
    Mixtral 8x7B in bf16 moves 32 layers x 2 x 2 experts x 4096 x 2 bytes = 1,048,576 bytes a token for it; llama.cpp's
    decode mul_mat_id reads the rows in place (0)."""
    def at(runtime: str) -> dict[str, float]:
        return values(vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "custom", "custom_model": MIXTRAL,
                                                   "quantization": "bf16", "runtime": runtime, "trace": True}))
    assert rt("transformers", "moe_permute_inputs") == 1
    assert at("transformers")["moe_permute_token_bytes"] == 32 * 2 * 2 * 4096 * 2 == 1048576
    assert at("llama.cpp")["moe_permute_token_bytes"] == 0
