"""Serving under load (formulas/performance/serving.yaml): each mechanism worked out by hand.

Llama 3 8B in bf16 on one H100 (3350 GB/s, 989.4 dense bf16 TFLOP/s) under vLLM unless a test says
otherwise. Its shapes: 32 layers, hidden 4096, 32 query / 8 KV heads of 128, FFN 14336, vocabulary
128256. Runtime constants are read from the catalog (calibrated, may be re-tuned); the arithmetic
around them is written out here.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

import vramplan
from vramplan.catalog import get_catalog
from vramplan.errors import RequestError
from vramplan.estimate import trace_values
from vramplan.request import validate
from vramplan.resolve import resolve
from vramplan.scenario import build

CAT = get_catalog()
L, H, FF, V = 32, 4096, 14336, 128256
MATMUL = 8030261248 - V * H                  # params a token multiplies with (the embedding lookup is no matmul)
HEAD = V * H
WEIGHT_BYTES = (MATMUL) * 2                  # decode reads every layer weight and the head once a round, bf16
KV_PER_TOKEN = 2 * 8 * 128 * 2 * L           # K + V, 8 heads of 128, bf16, 32 layers = 131,072 bytes
BW = 3350e9 * 0.85                           # H100 bandwidth x vLLM's decode efficiency
FLOPS = 989.4e12 * 0.6                       # dense bf16 x vLLM's GEMM efficiency
SAMPLE = V * 12 / BW                         # V1's greedy sampler, a sequence: bf16 logits 2 + fp32 copy 2 + 4 + argmax 4
BASE = {"gpu_key": "h100_80", "llm_key": "llama-3-8b", "quantization": "bf16", "runtime": "vllm"}


def seen_on(gpu_key: str, runtime: str, name: str) -> float:
    """A runtime constant as a request on that GPU sees it: the scenario's rt_<name>, tiers applied."""
    res = resolve(CAT, validate({**BASE, "gpu_key": gpu_key, "runtime": runtime}, "inference"), "inference")
    return build(res)[f"rt_{name}"]


def rt(runtime: str, name: str) -> float:
    return float(CAT.runtimes.get(runtime).data["constants"][name]["value"])


def traced(body: dict) -> tuple[dict, dict]:
    out = vramplan.estimate_inference({**body, "trace": True})
    return out, {step["id"]: step["value"] for step in out["trace"]}


def test_constants_this_file_assumes():
    assert rt("vllm", "decode_bw_eff") == 0.85 and rt("vllm", "prefill_flops_eff") == 0.6
    assert KV_PER_TOKEN == 131072 and WEIGHT_BYTES == 15009849344
    assert rt("vllm", "sampler_traffic_bytes") == 12 and rt("vllm-v0", "sampler_traffic_bytes") == 36


def prefill_alone_s(prompt: int, flops: float = FLOPS, bw: float = BW) -> float:
    """vLLM prefill of one prompt that fits one 8192-token step: max(compute, weight reads) + elementwise + overhead."""
    gemm = 2 * (MATMUL - HEAD) * prompt + 2 * HEAD                      # the head only for the last position
    attn = 2 * 4096 * L * prompt ** 2                                    # causal QK and AV, 4 x q_dim per pair / 2
    compute = (gemm + attn / rt("vllm", "attention_eff_ratio")) / flops
    elementwise = prompt * L * (H + FF) * rt("vllm", "elementwise_traffic_bytes") / bw + V * 12 / bw   # + its first token's sampler
    return max(compute, WEIGHT_BYTES / bw) + elementwise + L * rt("vllm", "prefill_layer_overhead_us") * 1e-6


def round_s(n: int, ctx: float) -> float:
    """A decode round of n sequences at a mean context: GEMMs (weights or FLOPs), then attention reading KV and
    each token's elementwise kernels streaming its hidden and feed-forward activations (as a prompt token's do)."""
    gemm = max(WEIGHT_BYTES / BW, n * 2 * MATMUL / FLOPS)
    attention = n * ctx * KV_PER_TOKEN / BW
    elementwise = n * (L * (H + FF) * rt("vllm", "elementwise_traffic_bytes") / BW + SAMPLE)    # + each sequence's sampler
    return gemm + attention + elementwise + L * rt("vllm", "decode_layer_overhead_us") * 1e-6


def test_one_request_alone_is_its_prefill_then_its_decode_rounds():
    out, t = traced({**BASE, "input_tokens": 2048, "output_tokens": 256})
    srv = out["serving"]
    assert srv["load"] == "static_batch" and srv["running_sequences"] == 1
    assert t["prefill_ms"] / 1000 == pytest.approx(prefill_alone_s(2048), rel=1e-9)
    itl = round_s(1, 2048 + 128)                                     # mean context: prompt + half the answer
    assert srv["itl_ms"] == pytest.approx(itl * 1000, abs=0.006)
    e2e = prefill_alone_s(2048) + 255 * itl
    assert srv["e2e_latency_ms"] == pytest.approx(e2e * 1000, rel=1e-4)
    assert srv["output_throughput_tps"] == pytest.approx(256 / e2e, rel=1e-3)
    assert srv["total_throughput_tps"] == pytest.approx((2048 + 256) / e2e, rel=1e-3)
    assert srv["limited_by"] == "memory_bandwidth"


def test_an_mi300x_prefills_at_the_share_of_its_peak_its_matrix_cores_reach():
    """ROCm GEMMs (catalogs/runtimes/vllm.yaml prefill_flops_eff_amd): vLLM's NVIDIA 0.6 scaled by how much of the
    datasheet peak an MI300X's matrix cores reach against NVIDIA's, 45% against 93% (arXiv 2510.27583): 0.29 of
    1,307.4 TFLOP/s = 379 TFLOP/s, against the H100's 594 although its peak is 1.3x the H100's. Its weight reads at
    0.75 of 5,300 GB/s. The profiles that extend vLLM's take the same."""
    assert round(0.6 * 0.45 / 0.93, 2) == 0.29
    flops, bw = 1307.4e12 * 0.29, 5300e9 * 0.75
    for runtime in ("vllm", "vllm-v0", "sglang", "tgi"):
        seen = trace_values(traced({**BASE, "gpu_key": "mi300x", "runtime": runtime, "input_tokens": 2048,
                                    "output_tokens": 256})[0])
        assert seen["eff_prefill_flops"] == 0.29 and seen["eff_decode_bw"] == 0.75, runtime
    out, t = traced({**BASE, "gpu_key": "mi300x", "input_tokens": 2048, "output_tokens": 256})
    alone = prefill_alone_s(2048, flops, bw)
    assert t["prefill_ms"] / 1000 == pytest.approx(alone, rel=1e-9)
    # 28.59 TFLOP of GEMMs + 1.10 of attention at 0.8 of the rate = 29.96 TFLOP-equivalent at 379.1 TFLOP/s = 79.0 ms
    # (above the 3.8 ms of weight reads), + 9.66 GB of elementwise traffic at 3,975 GB/s = 2.4 ms, + 32 x 25 us
    assert alone == pytest.approx(0.0790 + 0.0024 + 0.0008, abs=1e-4)
    assert prefill_alone_s(2048) == pytest.approx(0.0505 + 0.0034 + 0.0008, abs=1e-4)   # an H100: 593.6 TFLOP/s
    seen = trace_values(traced({**BASE, "gpu_key": "mi300x", "runtime": "transformers", "input_tokens": 2048,
                                "output_tokens": 256})[0])
    assert seen["eff_prefill_flops"] == round(0.67 * 0.45 / 0.93, 2) == 0.32


def test_chunked_prefill_interference_in_a_closed_loop():
    """64 clients: between two of a sequence's tokens 63/256 of a prompt starts; its chunks ride in the decode
    steps, in the share of steps its tokens fill (504 prompt tokens a round into 8192 - 64 free per step), where
    its GEMMs add to the step's and hide under the weight reads only as far as that step leaves slack."""
    out, t = traced({**BASE, "input_tokens": 2048, "output_tokens": 256, "concurrent_users": 64})
    srv = out["serving"]
    assert srv["load"] == "closed_loop" and srv["running_sequences"] == 64 and srv["queued_requests"] == 0
    prompts = 63 / 256                                                   # prompts starting per round
    share = prompts * 2048 / (8192 - 64)                                 # 504 / 8128 = 0.062 of the steps carry chunks
    assert share == pytest.approx(0.062008, abs=1e-6)
    weights, decode_gemm = WEIGHT_BYTES / BW, 64 * 2 * MATMUL / FLOPS     # 5.27 ms of reads, 1.62 ms of FLOPs
    prompt_gemm = (2 * (MATMUL - HEAD) * 2048 + 2 * HEAD) / FLOPS       # 48.2 ms: compute-bound where it rides
    prompt_rest = (2 * 4096 * L * 2048 ** 2 / rt("vllm", "attention_eff_ratio") / FLOPS
                   + 2048 * L * (H + FF) * rt("vllm", "elementwise_traffic_bytes") / BW + SAMPLE)
    gemms = (1 - share) * weights + max(share * weights, share * decode_gemm + prompts * prompt_gemm)
    elementwise = L * (H + FF) * rt("vllm", "elementwise_traffic_bytes") / BW + SAMPLE   # one decode token's kernels, sampler
    itl = (gemms + 64 * (2176 * KV_PER_TOKEN / BW + elementwise) + L * rt("vllm", "decode_layer_overhead_us") * 1e-6
           + prompts * prompt_rest)
    assert srv["itl_ms"] == pytest.approx(itl * 1000, abs=0.006)
    # TTFT: its own prompt, the 63 other sequences' decodes riding in its step (their attention, and their GEMM
    # FLOPs on top of a compute-bound chunk), and half a round of waiting for the step under way.
    chunk = prefill_alone_s(2048)
    ttft = chunk + 63 * (2176 * KV_PER_TOKEN / BW + elementwise) + (max(WEIGHT_BYTES / BW, 63 * 2 * MATMUL / FLOPS + chunk)
                                                   - max(WEIGHT_BYTES / BW, chunk)) + 0.5 * itl * 63 / 64
    assert srv["ttft_ms"] == pytest.approx(ttft * 1000, rel=1e-4)
    # Little's law: 64 sequences in flight, each taking TTFT + 255 ITL
    e2e = ttft + 255 * itl
    assert srv["output_throughput_tps"] == pytest.approx(64 * 256 / e2e, rel=1e-3)
    assert out["estimated_throughput_tps"] == srv["output_throughput_tps"]
    assert out["ms_per_token"] == srv["itl_ms"] and abs(out["tftt"] - srv["ttft_ms"]) <= 0.05 + 1e-9   # each rounded once


def _short_prompt_round_parts() -> tuple[float, float, float, float]:
    """256 clients of 128-token prompts and answers: (decode GEMMs, one prompt's GEMMs, one prompt's other work,
    the decodes' attention, elementwise kernels and fixed cost) of a round, on the H100."""
    decode_gemm = 256 * 2 * MATMUL / FLOPS                              # 6.47 ms: over the 5.27 ms of weight reads
    prompt_gemm = (2 * (MATMUL - HEAD) * 128 + 2 * HEAD) / FLOPS        # the head for the last position only
    prompt_rest = (2 * 4096 * L * 128 ** 2 / 0.8 / FLOPS                 # causal attention at 0.8 of the GEMM rate
                   + 128 * L * (H + FF) * 8 / BW                         # 8 bytes per element of non-GEMM traffic
                   + SAMPLE)                                             # the first token's sampler
    attention_fixed = (256 * 192 * KV_PER_TOKEN / BW                     # mean context 128 + 64
                       + 256 * (L * (H + FF) * 8 / BW + SAMPLE)          # each decode token's non-GEMM traffic, sampler
                       + L * 25e-6)                                      # 25 us a layer
    return decode_gemm, prompt_gemm, prompt_rest, attention_fixed


def test_short_prompts_ride_in_compute_bound_steps_without_a_weight_read_of_their_own():
    """vLLM: 255/128 = 1.99 prompts (255 tokens) start per round and fill 255 / (8192 - 256) of the steps; the
    decode GEMMs are already compute-bound, so the prompts add their FLOPs and nothing for weights."""
    assert rt("vllm", "prefill_layer_overhead_us") == 25 and rt("vllm", "elementwise_traffic_bytes") == 8
    out, t = traced({**BASE, "input_tokens": 128, "output_tokens": 128, "concurrent_users": 256})
    assert out["serving"]["running_sequences"] == 256
    assert t["srv_mixed_share_op"] == pytest.approx(255 / 7936, rel=1e-12)
    decode_gemm, prompt_gemm, prompt_rest, attention_fixed = _short_prompt_round_parts()
    assert decode_gemm > WEIGHT_BYTES / BW
    itl = decode_gemm + 255 / 128 * (prompt_gemm + prompt_rest) + attention_fixed
    assert out["serving"]["itl_ms"] == pytest.approx(itl * 1000, abs=0.006)


def test_sglang_prefills_the_waiting_prompts_in_one_pass_of_their_own():
    """SGLang (no mixed chunks) pauses the decodes for one prefill pass a round holding the 1.99 waiting prompts
    (255 tokens, under its per-pass budget): the pass reads the weights once and does their FLOPs, whichever is
    slower, plus its layers' launch overhead."""
    assert rt("sglang", "prefill_mixes_decode") == 0
    out, t = traced({**BASE, "runtime": "sglang", "input_tokens": 128, "output_tokens": 128, "concurrent_users": 256})
    assert out["serving"]["running_sequences"] == 256 and t["srv_passes_op"] == 1
    decode_gemm, prompt_gemm, prompt_rest, attention_fixed = _short_prompt_round_parts()
    prefill_pass = max(WEIGHT_BYTES / BW, 255 / 128 * prompt_gemm) + 255 / 128 * prompt_rest + L * 25e-6
    itl = decode_gemm + attention_fixed + prefill_pass
    assert out["serving"]["itl_ms"] == pytest.approx(itl * 1000, abs=0.006)


def test_tgi_2_pauses_decodes_for_prefill_so_nothing_hides():
    out, t = traced({**BASE, "runtime": "tgi-v2", "input_tokens": 2048, "output_tokens": 256, "concurrent_users": 64})
    assert rt("tgi-v2", "prefill_mixes_decode") == 0
    assert out["serving"]["itl_ms"] == pytest.approx((t["srv_round_op_s"] + 63 / 256 * t["srv_prefill_seq_s"]) * 1000, abs=0.006)
    vllm = vramplan.estimate_inference({**BASE, "input_tokens": 2048, "output_tokens": 256, "concurrent_users": 64})
    assert out["serving"]["itl_ms"] > vllm["serving"]["itl_ms"]


def test_kv_pool_limits_admission_and_the_rest_queue():
    """2000 clients of 3584 + 512 tokens: vLLM admits what its pool holds at a prompt and half an answer each."""
    out, t = traced({**BASE, "input_tokens": 3584, "output_tokens": 512, "concurrent_users": 2000})
    per_seq = (3584 + 0.5 * 512) * KV_PER_TOKEN                       # 503,316,480 bytes (4096 tokens: no block padding)
    admitted = math.floor(t["kv_pool_bytes"] / per_seq)
    budget = 8192 * 512 / 4096                                         # 1024: the token budget does not bind first
    assert admitted < budget < 2000
    srv = out["serving"]
    assert srv["running_sequences"] == admitted
    assert srv["queued_requests"] == 2000 - admitted
    assert srv["limited_by"] == "kv_cache"
    # memory is the pool, not 2000 sequences' caches: vLLM queues what it cannot hold instead of running out
    assert out["memory_details"]["KV Cache"] == pytest.approx(t["kv_pool_bytes"] / 2 ** 30, abs=0.006)
    assert out["memory_status"] != "insufficient"
    # the queued clients wait for earlier requests: E2E = clients / throughput (Little's law)
    rate = srv["requests_per_second"]
    assert srv["e2e_latency_ms"] == pytest.approx(2000 / rate * 1000, rel=1e-3)


def test_sliding_window_admission_follows_each_runtimes_pool_split():
    """gpt-oss-120b alternates 18 sliding (128-token window) and 18 full-attention layers, 8 KV heads of 64, bf16:
    2 x 8 x 64 x 2 = 2048 bytes a token and layer. 1024 + 1024 tokens (2048, whole 32-token blocks). TensorRT-LLM splits
    its pool into one equal share per window size (resource_manager.py calculate_max_num_blocks_for_vswa): the full
    layers fill their half first, so a sequence costs the pool what 36 full layers would. vLLM's one block pool gives
    each sliding layer only its window."""
    body = {"gpu_key": "h200", "llm_key": "gpt-oss-120b", "quantization": "mxfp4", "input_tokens": 1024,
            "output_tokens": 1024, "concurrent_users": 4000}
    assert rt("tensorrt-llm", "kv_window_equal_share") == 1 and rt("tensorrt-llm", "kv_reserve_output_fraction") == 1
    out, t = traced({**body, "runtime": "tensorrt-llm"})
    per_token_layer = 2 * 8 * 64 * 2
    assert t["kv_bytes_per_token_layer"] == per_token_layer
    whole = per_token_layer * 2 * 18 * 2048                                  # 150,994,944: twice the full layers' half
    assert t["kv_pool_seq_bytes"] == whole
    sliding = t["kv_tokens_sliding"]                                        # the window and the runtime's extra tokens
    assert 128 <= sliding < 2048
    assert t["kv_attention_bytes_per_seq"] == per_token_layer * 18 * (2048 + sliding)
    # GUARANTEED_NO_EVICT reserves the whole answer: 2048 tokens of the 2048-token context
    assert t["srv_kv_seq_bytes"] == pytest.approx(whole, rel=1e-12)
    assert out["serving"]["running_sequences"] == math.floor(t["kv_pool_bytes"] / whole)
    assert out["serving"]["limited_by"] == "kv_cache"
    vout, v = traced({**body, "runtime": "vllm", "runtime_settings": {"max_num_seqs": 4000, "max_prefill_tokens": 1e6}})
    assert seen_on("h200", "vllm", "kv_window_equal_share") == 0
    shared = per_token_layer * 18 * (v["kv_tokens_full"] + v["kv_tokens_sliding"])
    assert v["kv_pool_seq_bytes"] == shared < whole
    # a prompt and half an answer admitted, at the per-token average of the layers' caches
    per_seq = shared / 2048 * (1024 + 0.5 * 1024)
    assert vout["serving"]["running_sequences"] == math.floor(v["kv_pool_bytes"] / per_seq)
    # SGLang keeps the sliding layers in a pool of 0.8 x the full layers' tokens (set_num_tokens_hybrid_swa): a full-layer
    # token costs 18 + 0.8 x 18 = 32.4 layers' worth - between vLLM's 18 + windows and TensorRT-LLM's 36
    assert rt("sglang", "kv_swa_full_tokens_ratio") == 0.8
    sout, g = traced({**body, "runtime": "sglang", "runtime_settings": {"max_num_seqs": 4000}})
    assert g["kv_tokens_sliding"] / 0.8 < g["kv_tokens_full"] == 2048
    assert g["kv_pool_seq_bytes"] == pytest.approx(per_token_layer * (18 + 0.8 * 18) * 2048, rel=1e-12)
    assert shared < g["kv_pool_seq_bytes"] < whole


@pytest.mark.parametrize("runtime, gemma_trims, mistral_trims", [
    ("vllm", True, True),        # V1: a block table per KV cache group, sliding groups free what leaves the window
    ("vllm-v0", False, True),    # one table per sequence: interleaved windows are treated as full attention
    ("tgi", False, False),       # the router allocates blocks for every prompt and answer token, window or not
])
def test_runtimes_with_one_block_table_per_sequence_keep_whole_contexts_in_sliding_layers(runtime, gemma_trims,
                                                                                           mistral_trims):
    """6144 + 2048 tokens (8192, whole 16-token blocks). Gemma 2 9B: 21 sliding (window 4096) and 21 full layers, 8 KV
    heads of 256 in bf16 = 8192 bytes a token and layer. Mistral 7B v0.1: all 32 layers slide (4096), 8 KV heads of 128
    = 4096 bytes. A trimmed sliding layer keeps the window and one block, 4096 + 16 = 4112 tokens."""
    def seq_bytes(llm_key: str) -> float:
        _, t = traced({"gpu_key": "h100_80", "llm_key": llm_key, "quantization": "bf16", "runtime": runtime,
                       "input_tokens": 6144, "output_tokens": 2048, "concurrent_users": 8})
        return t["kv_attention_bytes_per_seq"]

    gemma_sliding = 4112 if gemma_trims else 8192
    assert seq_bytes("gemma-2-9b") == 8192 * (21 * 8192 + 21 * gemma_sliding)    # 2,116,681,728 or 2,818,572,288
    assert seq_bytes("mistral-7b-v0.1") == 4096 * 32 * (4112 if mistral_trims else 8192)


def test_token_budget_and_max_num_seqs_cap_admission():
    # 8192-token steps, 7936 + 256-token requests: 8192 x 256 / 8192 = 256 sequences keep decoding
    out = vramplan.estimate_inference({**BASE, "llm_key": "llama-3.2-1b", "input_tokens": 7936, "output_tokens": 256,
                                       "concurrent_users": 400})
    assert out["serving"]["running_sequences"] == 256 and out["serving"]["limited_by"] == "max_num_batched_tokens"
    # max_num_seqs set lower binds first
    capped = vramplan.estimate_inference({**BASE, "llm_key": "llama-3.2-1b", "input_tokens": 7936, "output_tokens": 256,
                                          "concurrent_users": 400, "runtime_settings": {"max_num_seqs": 100}})
    assert capped["serving"]["running_sequences"] == 100 and capped["serving"]["limited_by"] == "max_num_seqs"
    assert capped["serving"]["queued_requests"] == 300


def test_static_batch_prefills_everything_then_decodes_together():
    """transformers generate on 16 prompts: TTFT is the batch's prefill, then 255 rounds of 16."""
    body = {**BASE, "runtime": "transformers", "input_tokens": 1024, "output_tokens": 256, "batch_size": 16}
    out, t = traced(body)
    srv = out["serving"]
    assert srv["load"] == "static_batch" and t["prefill_seqs"] == 16
    assert srv["ttft_ms"] == pytest.approx(t["prefill_ms"], abs=0.006)
    assert srv["itl_ms"] / 1000 == pytest.approx(t["srv_round_op_s"], abs=5e-6)   # itl_ms is rounded to 0.01 ms
    batch = t["prefill_ms"] / 1000 + 255 * t["srv_round_op_s"]
    assert srv["output_throughput_tps"] == pytest.approx(16 * 256 / batch, rel=1e-3)
    # with continuous batching (a server on top) the same 16 clients desynchronise: each request waits only
    # for its own prompt, so the first token comes far sooner than after all 16 prompts
    cont = vramplan.estimate_inference({**body, "batch_size": 1, "concurrent_users": 16, "enable_continuous_batching": True})
    assert cont["serving"]["load"] == "closed_loop"
    assert cont["serving"]["ttft_ms"] < srv["ttft_ms"] / 4


def test_a_burst_larger_than_the_cap_pays_for_its_ramp_and_drain():
    """One client's burst of 2000 requests of 3584 + 512 tokens: vLLM runs what its admission counts (C) and queues the
    rest. A closed loop of 2000 clients keeps C busy until the end; the burst's first wave enters at the token budget's
    pace and its last requests finish beside ever fewer others, so it takes more rounds than 2000 x 512 / C."""
    body = {**BASE, "input_tokens": 3584, "output_tokens": 512}
    loop, lt = traced({**body, "concurrent_users": 2000})
    burst, bt = traced({**body, "batch_size": 2000})
    c = loop["serving"]["running_sequences"]
    assert burst["serving"]["running_sequences"] == c and bt["srv_burst"] == 1 and lt["srv_burst"] == 0
    # the first wave enters at (8192 - C / 2) / 3584 prompts a round (decodes share vLLM's 8192-token budget)
    pace = (8192 - c / 2) / 3584
    # vLLM counts a prompt and half an answer, but a wave admitted within S = C / pace rounds grows together: when its
    # first ends the others hold all but up to S of their answers, 0.5 x 512 x (1 - S / 512) tokens more each, and the
    # pool keeps only `kept` of them
    grown = 3584 + 256 + 0.5 * 512 * (1 - min(c / pace, 512) / 512)
    kept = min(c, math.floor(bt["kv_pool_bytes"] / (grown * KV_PER_TOKEN)))
    assert bt["srv_burst_grown"] == kept < c
    # the rest are preempted and rejoin the queue's head with their answers so far, so the burst still turns over at
    # the cap C: floor(1999 / C) turnovers after the last one's place in the ramp
    turnovers = math.floor(1999 / c)
    rounds = max((1999 - c * turnovers) / pace + turnovers * 512, 1999 / pace) + 512
    assert bt["srv_burst_rounds"] == pytest.approx(rounds, rel=1e-9)
    assert rounds > 2000 * 512 / c                                # more rounds than the cap would need
    # each round beyond the closed loop's count costs a round of one sequence; and for each grown wave's worth of the
    # burst vLLM preempts the c - kept the grown pool cannot hold and recomputes their contexts (half-way between where
    # the pool filled, 4096 x kept / c tokens, and full length) at a prompt's prefill rate
    preempted = math.floor(1999 / kept) * (c - kept)
    assert bt["srv_burst_preempted"] == preempted and bt["prefill_seqs"] == 1
    redo = preempted * 4096 * (1 + kept / c) / 2 * bt["prefill_ms"] / 1000 / 3584
    assert bt["srv_burst_recompute_s"] == pytest.approx(redo, rel=1e-9)
    assert any("queues the rest" in w and f"preempting {preempted} in all" in w for w in burst["warnings"])
    extra = (rounds - 2000 * 512 / c) * bt["srv_round_one_s"] + redo
    closed_time = 2000 * bt["srv_e2e_op_s"] / c                   # the closed loop at the cap: c sequences per E2E
    assert burst["serving"]["output_throughput_tps"] == pytest.approx(2000 * 512 / (closed_time + extra), rel=1e-3)
    assert burst["serving"]["output_throughput_tps"] < loop["serving"]["output_throughput_tps"]
    # a request waits for its prompt to enter: request j at (j mod C) / pace ramp rounds + floor(j / C) x 512 turnover
    # rounds, on average; a ramp round carries the pace's prompts (their GEMMs and attention), so it takes the longer of
    # that and a round at the operating point
    waves, left = 2000 // c, 2000 - (2000 // c) * c
    ramp = (waves * c * (c - 1) / 2 + left * (left - 1) / 2) / pace / 2000
    turn = 512 * (c * waves * (waves - 1) / 2 + waves * left) / 2000
    assert bt["srv_burst_ramp_rounds"] == pytest.approx(ramp, rel=1e-9) and bt["srv_burst_turn_rounds"] == pytest.approx(turn, rel=1e-9)
    # (one GPU: a ramp prompt's work is a mixed-in prompt's, its GEMMs and the rest)
    assert bt["srv_ramp_prompt_s"] == pytest.approx(bt["srv_prompt_gemm_s"] + bt["srv_prompt_other_s"], rel=1e-12)
    ramp_round = max(bt["srv_round_op_s"], pace * (bt["srv_prompt_gemm_s"] + bt["srv_prompt_other_s"]))
    assert bt["srv_burst_ramp_round_s"] == pytest.approx(ramp_round, rel=1e-9)
    # and a round's prompts get their first tokens together when it ends: (1 - 1 / pace) / 2 of a round more
    # where a round admits more than one (here (8192 - C / 2) / 3584 = 2.2 of them)
    assert pace > 1
    wait = max(ramp * ramp_round + turn * bt["srv_itl_op_s"], 1999 / 2 / pace * ramp_round) + (1 - 1 / pace) / 2 * ramp_round
    assert burst["serving"]["ttft_ms"] / 1000 == pytest.approx(bt["srv_ttft_op_s"] + wait, rel=1e-4)
    # the closed loop of 2000 clients makes every one wait (2000 - C) / throughput instead
    assert loop["serving"]["ttft_ms"] / 1000 == pytest.approx(
        lt["srv_ttft_op_s"] + (2000 - c) / loop["serving"]["requests_per_second"], rel=1e-3)
    said = [a for a in burst["assumptions"] if a.startswith("load: one burst of 2000 sequences")]
    assert said and f"more than the {int(c)} that run at once (the pool holds {kept} of them grown together" in said[0]
    assert f"~{rounds:,.0f} rounds" in said[0]
    # a burst that fits at full length (3584 + 512 tokens a sequence) runs as one static batch: no drain of its own
    fits = math.floor(bt["kv_pool_bytes"] / (4096 * KV_PER_TOKEN))
    small, st = traced({**body, "batch_size": fits})
    assert small["serving"]["load"] == "static_batch" and st["srv_burst_extra_s"] == 0


def test_a_queued_burst_runs_at_the_cap_because_preempted_requests_keep_their_answers():
    """The scheduler the burst formulas stand for, simulated: each round the running set is the longest first-come
    prefix whose contexts the pool holds; a request pushed out keeps the tokens it has generated (vLLM recompute) and
    resumes from there. For dstack's 256 x 128 / 2048 burst in a 91,680-token pool it takes as many rounds as the
    burst counted at the admission cap (prompt + half the answer), not in waves of what the pool holds grown together."""
    spec = importlib.util.spec_from_file_location(
        "replay_burst", Path(__file__).resolve().parents[1] / "benchmarks" / "replay_burst.py")
    replay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(replay)                               # its replays: tests/test_replay_burst.py
    rounds = replay.replay_prefix(128, 2048, 256, 91680)["rounds"]
    cap, kept = 91680 // (128 + 1024), 91680 // (128 + 2048)      # 79 admitted by the count, 42 held grown
    def counted(c, pace=1e9):                                     # srv_burst_rounds, the whole wave entering at once
        return max((255 - c * (255 // c)) / pace + (255 // c) * 2048, 255 / pace) + 2048
    assert (cap, kept) == (79, 42)
    assert counted(cap) == pytest.approx(3 * 2048 + 2048, abs=0.01)
    assert abs(counted(cap) / rounds - 1) < 0.1                  # within 10% of the simulated scheduler
    assert counted(kept) / rounds > 1.7                           # waves of 42 would take 1.7x too many rounds
    # the engine on that burst (vLLM V0, 405B FP8 over 8 x H100, the pool pinned to 91,680 tokens): the same cap and
    # grown wave, and its count - the first wave entering at V0's 512-token budget - within 10% of the simulation
    _, t = traced({"gpu_key": "h100_80", "llm_key": "llama-3.1-405b-fp8", "quantization": "fp8", "runtime": "vllm-v0",
                   "num_gpus": 8, "inference_parallelism": "tensor", "runtime_settings": {"kv_pool_tokens": 91680},
                   "input_tokens": 128, "output_tokens": 2048, "batch_size": 256})
    assert t["srv_burst"] == 1 and (t["srv_burst_cap"], t["srv_burst_grown"]) == (cap, kept)
    assert t["srv_burst_rounds"] == pytest.approx(counted(cap, (512 - cap / 2) / 128), rel=1e-9)
    assert abs(t["srv_burst_rounds"] / rounds - 1) < 0.1


def test_a_static_burst_that_outgrows_the_pool_preempts_and_recomputes():
    """vLLM admits a sequence by its prompt and half its answer; a burst whose sequences start and grow together needs
    the whole answer's cache by the end, so the last admitted are preempted once the pool is full and recomputed after."""
    body = {**BASE, "input_tokens": 4096, "output_tokens": 4096}
    _, probe = traced({**body, "batch_size": 1})
    pool = probe["kv_pool_bytes"]
    admitted = math.floor(pool / ((4096 + 0.5 * 4096) * KV_PER_TOKEN))       # what vLLM's admission counts
    # they enter at (8192 - admitted / 2) / 4096 prompts a round, within S = admitted / pace rounds, so grown they
    # hold all but up to S of their answers: 0.5 x 4096 x (1 - S / 4096) tokens more than the admission counted
    pace = (8192 - admitted / 2) / 4096
    full = math.floor(pool / ((4096 + 2048 + 2048 * (1 - (admitted / pace) / 4096)) * KV_PER_TOKEN))
    assert full < admitted
    out, t = traced({**body, "batch_size": admitted})
    assert out["serving"]["load"] == "static_batch" and out["serving"]["running_sequences"] == admitted
    assert t["srv_burst_full_limit"] == full and t["srv_burst_preempted"] == admitted - full
    # the first preempted stopped when the pool filled, at 8192 x full / admitted tokens, with the rest of its answer left
    rounds = min(4096, 8192 * (1 - full / admitted))
    assert t["srv_burst_preempt_rounds"] == pytest.approx(rounds, rel=1e-12)
    # recomputation redoes their contexts, between the fill point and full length, at the batch prefill's rate per token
    redo = (admitted - full) * 8192 * (1 + full / admitted) / 2 * t["prefill_ms"] / 1000 / (admitted * 4096)
    assert t["srv_burst_recompute_s"] == pytest.approx(redo, rel=1e-9)
    batch = t["srv_e2e_op_s"] + rounds * t["srv_round_one_s"] + redo
    assert out["serving"]["output_throughput_tps"] == pytest.approx(admitted * 4096 / batch, rel=1e-3)
    assert any(f"preempts {admitted - full} of them" in w for w in out["warnings"])
    # TensorRT-LLM reserves the whole answer at admission: it admits only what fits at full length, nothing preempted
    trt, tt = traced({**body, "runtime": "tensorrt-llm", "batch_size": 2})
    assert tt["srv_burst_full_limit"] == tt["srv_kv_limit"] and tt["srv_burst_preempted"] == 0


def test_open_loop_waits_grow_towards_capacity_and_past_it_latencies_are_null():
    body = {**BASE, "input_tokens": 2000, "output_tokens": 500}
    flood = vramplan.estimate_inference({**body, "request_rate": 1e6})
    cap = flood["serving"]["requests_per_second"]
    assert flood["serving"]["ttft_ms"] is None and flood["serving"]["e2e_latency_ms"] is None
    assert any(f"sustains about {cap:.3g} requests/s" in w for w in flood["warnings"])
    runs = [vramplan.estimate_inference({**body, "request_rate": f * cap})["serving"] for f in (0.05, 0.5, 0.9, 0.99)]
    e2e = [r["e2e_latency_ms"] for r in runs]
    assert e2e == sorted(e2e) and e2e[-1] > 1.5 * e2e[0]
    for f, r in zip((0.05, 0.5, 0.9, 0.99), runs):
        assert r["requests_per_second"] == pytest.approx(f * cap, rel=1e-3)
        assert r["utilisation"] == pytest.approx(f, abs=2e-3)
        assert r["limited_by"] == "arrival_rate"
        # Little's law: in service + waiting = arrivals x end-to-end time (each reported to two decimals)
        assert r["running_sequences"] + r["queued_requests"] == pytest.approx(f * cap * r["e2e_latency_ms"] / 1000,
                                                                              rel=2e-3, abs=0.011)


def test_open_loop_concurrency_solves_m_equals_one_plus_lambda_e2e_on_the_line():
    """Processor sharing on the line through one request alone and capacity, worked from public outputs."""
    body = {**BASE, "input_tokens": 2000, "output_tokens": 500}
    alone = vramplan.estimate_inference(body)["serving"]["e2e_latency_ms"] / 1000
    _, t = traced({**body, "request_rate": 1e6})
    n_cap, e_cap = t["srv_n_cap"], t["srv_e2e_cap_s"]
    slope = (e_cap - alone) / (n_cap - 1)
    lam = 4.0
    m = (1 + lam * (alone - slope)) / (1 - lam * slope)
    _, op = traced({**body, "request_rate": lam})
    assert op["srv_op_n"] == pytest.approx(m, rel=1e-6)


def birth_death_slot_wait(lam: float, t: dict) -> float:
    """The mean wait for a slot of the birth-death process, summed state by state: n in service complete n / E2E(n) a
    second (E2E on the line through one request alone and the cap), lambda arrive; at the cap C and beyond, they
    complete at capacity. Lq = sum over the states beyond C of the requests waiting, Wq = Lq / lambda."""
    one, slope, cap, capacity = t["srv_e2e_one_s"], t["srv_secant_slope"], int(t["srv_n_cap"]), t["srv_capacity_seq_rate"]
    weights = [1.0]
    for n in range(1, cap + 1):
        weights.append(weights[-1] * lam / (n / (one + slope * (n - 1))))
    rho = lam / capacity
    total = sum(weights) + weights[-1] * rho / (1 - rho)
    waiting = weights[-1] / total * sum(k * rho ** k for k in range(1, 20000))
    return waiting / lam


def test_open_loop_waits_for_a_slot_as_the_birth_death_process_does():
    """Near capacity an open loop's requests queue when the number in service reaches the cap: the wait is the birth-
    death process's, whose completion rate at n in service is n / E2E(n) (summed here state by state), not M/M/c's
    independent servers (Sakasegawa's approximation gave 1.52 s at 0.95 of capacity with 4000-token prompts where
    benchmarks/replay_open_loop.py's replay gives 0.54 s)."""
    body = {**BASE, "input_tokens": 4000, "output_tokens": 300}
    _, full = traced({**body, "request_rate": 1e6})
    for share in (0.7, 0.85, 0.95):
        lam = share * full["srv_capacity_seq_rate"]
        out, t = traced({**body, "request_rate": lam})
        wait = birth_death_slot_wait(lam, t)
        assert t["srv_slot_wait_s"] == pytest.approx(wait, rel=1e-6, abs=1e-9)
        assert t["srv_queue_wait_s"] == pytest.approx(t["srv_prompt_batch_s"] + wait, rel=1e-6, abs=1e-9)
        rho, c = lam / t["srv_capacity_seq_rate"], t["srv_n_cap"]
        assert wait < rho ** math.sqrt(2 * (c + 1)) / (1 - rho) / lam                  # below M/M/c's independent slots
    assert t["srv_slot_wait_s"] > 0.1                                                  # at 0.95 the queue is real
    # one slot: the M/M/1 queue, Wq = rho^2 / (1 - rho) / lambda (llama-server with one slot, 1/4 of capacity)
    one = {"gpu_key": "rtx_4090", "llm_key": "llama-3.1-8b", "quantization": "q4_k_m", "runtime": "llama.cpp",
           "enable_continuous_batching": True, "input_tokens": 1000, "output_tokens": 200}
    _, cap1 = traced({**one, "request_rate": 1e6})
    lam = cap1["srv_capacity_seq_rate"] / 4
    _, t1 = traced({**one, "request_rate": lam})
    assert t1["srv_n_cap"] == 1 and t1["srv_service_shape"] == 0
    assert t1["srv_slot_wait_s"] == pytest.approx(0.25 ** 2 / 0.75 / lam, rel=1e-9)


def test_open_loop_first_tokens_wait_for_the_prompts_arriving_beside_them():
    """Poisson arrivals: a round takes every prompt that arrived during the round before, so round lengths carry on,
    L' = T_d + w N with N ~ Poisson(lambda L): mean T, variance V = lambda w^2 T / (1 - x^2), x = lambda w. An arrival
    lands in a size-biased round (mean T + V / T), waits half of it and is taken in the next with the lambda (T + V / T)
    others that arrived during it. Worked from the trace's parts, and the round-length recursion iterated to its fixed
    point."""
    body = {**BASE, "input_tokens": 1000, "output_tokens": 200}
    cap = vramplan.estimate_inference({**body, "request_rate": 1e6})["serving"]["requests_per_second"]
    lam = 0.5 * cap
    out, t = traced({**body, "request_rate": lam})
    w = t["srv_prompt_gemm_s"] + t["srv_prompt_other_s"]   # its collectives are in the other part
    T = t["srv_itl_op_s"]
    var = 0.0
    for _ in range(200):                                   # Var L' = w^2 Var N = w^2 (lambda T + lambda^2 Var L)
        var = w * w * (lam * T + lam * lam * var)
    size_biased = T + var / T
    batch = (size_biased - T) / 2 + lam * w * size_biased   # half a round beyond srv_ttft_op_s's T / 2, and the others
    assert t["srv_prompt_batch_s"] == pytest.approx(batch, rel=1e-9)
    assert batch > lam * w * (T + w / 2)                   # more than one round of arrivals
    slots = birth_death_slot_wait(lam, t)                                             # ~0 at half capacity
    assert t["srv_queue_wait_s"] == pytest.approx(batch + slots, rel=1e-9, abs=1e-12)  # they wait in the queue
    assert out["serving"]["ttft_ms"] / 1000 == pytest.approx(t["srv_ttft_op_s"] + batch + slots, abs=6e-6)
    # those waiting for their round are queued requests: Little's law still holds
    srv = out["serving"]
    assert srv["running_sequences"] + srv["queued_requests"] == pytest.approx(lam * srv["e2e_latency_ms"] / 1000, rel=2e-3)
    # a closed loop is left as it was (its clients' prompts come at a round's end; PERFORMANCE 'What remains off')
    _, closed = traced({**body, "concurrent_users": 20})
    assert closed["srv_prompt_batch_s"] == 0


def test_open_loop_capacity_never_outruns_the_prompts_work():
    """One-token answers: at the cap a request's round trip is its prompt and half a round of the others' (n - 1
    prompts), which would count prompts about twice as fast as the busiest GPU computes them; the open loop's capacity
    is at most 1 / w, a prompt's work w, and an arrival rate at or past it is past capacity."""
    body = {**BASE, "input_tokens": 1000, "output_tokens": 1}
    _, t = traced({**body, "request_rate": 1e6})
    w = t["srv_prompt_gemm_s"] + t["srv_prompt_other_s"]
    assert t["srv_n_cap"] / t["srv_e2e_cap_s"] > 1.5 / w                  # the round trip alone would allow this
    assert t["srv_capacity_seq_rate"] == pytest.approx(1 / w, rel=1e-12)
    near, tn = traced({**body, "request_rate": 0.9 / w})
    assert near["serving"]["ttft_ms"] is not None and tn["srv_prompt_batch_s"] > 0
    past = vramplan.estimate_inference({**body, "request_rate": 1.01 / w})
    assert past["serving"]["ttft_ms"] is None
    assert any(f"sustains about {1 / w:.3g} requests/s" in x for x in past["warnings"])
    # 200-token answers: the cap's round trip binds, far below 1 / w
    _, t200 = traced({**BASE, "input_tokens": 1000, "output_tokens": 200, "request_rate": 1e6})
    assert t200["srv_capacity_seq_rate"] == pytest.approx(t200["srv_n_cap"] / t200["srv_e2e_cap_s"], rel=1e-12)
    assert t200["srv_capacity_seq_rate"] < 0.7 / (t200["srv_prompt_gemm_s"] + t200["srv_prompt_other_s"])


def test_closed_loop_of_one_token_answers_runs_at_the_prompts_pace():
    """64 clients sending 1000-token prompts for one-token answers: a round trip of a prompt and half a round of the
    others' would give 2 / w requests a second; the busiest GPU works through 1 / w. The clients wait the difference
    before their first token, those waiting are queued, and Little's law holds (users = rate x cycle)."""
    body = {**BASE, "input_tokens": 1000, "output_tokens": 1, "concurrent_users": 64}
    out, t = traced(body)
    w = t["srv_prompt_gemm_s"] + t["srv_prompt_other_s"]
    srv = out["serving"]
    assert t["srv_loop_seq_rate"] > 1.5 / w                       # the round trip alone
    assert srv["requests_per_second"] == pytest.approx(1 / w, rel=1e-3)
    assert srv["output_throughput_tps"] == pytest.approx(1 / w, rel=1e-3)
    cycle = 64 / (1 / w)                                          # each client's request every 64 w
    assert srv["e2e_latency_ms"] / 1000 == pytest.approx(cycle, rel=2e-3)
    assert t["srv_prompt_wait_s"] == pytest.approx(cycle - 64 / t["srv_loop_seq_rate"], rel=1e-9)
    assert srv["running_sequences"] + srv["queued_requests"] == pytest.approx(64, abs=0.02)
    assert srv["queued_requests"] > 0.3 * 64
    # 200-token answers: the round trip binds, nothing waits
    _, t200 = traced({**body, "output_tokens": 200})
    assert t200["srv_prompt_wait_s"] == 0 and t200["srv_seq_rate"] == t200["srv_loop_seq_rate"]


def test_open_loop_on_llama_cpp_runs_from_the_slots_max_num_seqs_gives():
    """llama-server's --parallel as runtime_settings.max_num_seqs: the slots hold that many requests at once and the
    memory is theirs; without it an open loop is one request at a time."""
    body = {"gpu_key": "rtx_4090", "llm_key": "llama-3.1-8b", "quantization": "q4_k_m", "runtime": "llama.cpp",
            "enable_continuous_batching": True, "input_tokens": 1000, "output_tokens": 200, "request_rate": 2}
    one = vramplan.estimate_inference(body)
    eight = vramplan.estimate_inference({**body, "runtime_settings": {"max_num_seqs": 8}})
    # the cache: 1,200 tokens a slot padded to 256 cells (an explicit --parallel is not unified: llama-context.cpp
    # n_ctx_seq = PAD(n_ctx / n_seq_max, 256)), 131,072 bytes a token (32 layers x 8 KV heads x 128 x K and V x
    # fp16): 1 slot 1,280 cells = 0.15625 GiB, 8 slots 10,240 cells = 1.25 GiB
    assert one["memory_details"]["KV Cache"] == round(1280 * 131072 / 2**30, 2) == 0.16
    assert eight["memory_details"]["KV Cache"] == round(8 * 1280 * 131072 / 2**30, 2) == 1.25
    # the same memory as a closed loop of 8 clients (a server of 8 slots)
    closed = {k: v for k, v in body.items() if k != "request_rate"}
    users8 = vramplan.estimate_inference({**closed, "concurrent_users": 8})
    assert eight["vram_usage"] == users8["vram_usage"] and eight["per_user_memory"] == users8["per_user_memory"]
    # one slot serves about 0.575 requests/s: 2 arrive, past capacity; 8 slots take them all, and Little's law holds
    assert one["serving"]["ttft_ms"] is None and one["serving"]["limited_by"] == "batch_size"
    srv = eight["serving"]
    assert srv["ttft_ms"] is not None and srv["requests_per_second"] == pytest.approx(2, rel=1e-3)
    assert 1 < srv["running_sequences"] <= 8
    assert srv["running_sequences"] + srv["queued_requests"] == pytest.approx(2 * srv["e2e_latency_ms"] / 1000, rel=2e-3, abs=0.011)
    assert any("8 slots" in a and "hold 8 requests at a time" in a for a in eight["assumptions"])
    # 7 slots with requests of 2 sequences: 7 // 2 = 3 requests at a time, 6 sequences' memory
    s = build(resolve(CAT, validate({**body, "batch_size": 2, "runtime_settings": {"max_num_seqs": 7}}, "inference"), "inference"))
    assert (s["mem_users"], s["mem_seqs"]) == (3, 6) and (s["users"], s["seqs"]) == (1, 2)   # the load is one request's
    # a closed loop keeps its clients: beyond the slots they queue, and the memory is the slots' (4 x 1,280 cells)
    four = vramplan.estimate_inference({**closed, "concurrent_users": 8, "runtime_settings": {"max_num_seqs": 4}})
    assert four["serving"]["running_sequences"] == 4 and four["serving"]["queued_requests"] == 4
    assert four["serving"]["limited_by"] == "max_num_seqs"
    assert four["memory_details"]["KV Cache"] == round(4 * 1280 * 131072 / 2**30, 2) == 0.62
    assert four["vram_usage"] == vramplan.estimate_inference({**closed, "concurrent_users": 4})["vram_usage"]
    # ... as few clients as slots or fewer: their own memory
    two = vramplan.estimate_inference({**closed, "concurrent_users": 2, "runtime_settings": {"max_num_seqs": 4}})
    assert two["memory_details"]["KV Cache"] == round(2 * 1280 * 131072 / 2**30, 2)
    assert two["serving"]["queued_requests"] == 0
    # a runtime with a preallocated pool is unchanged by it (its open loop already runs many requests): the same
    # bytes, which the sampler's profile (max_num_seqs rows) only moves between the Logits and KV Cache lines, so
    # vram_usage - the sum of the lines, each rounded to 0.01 GiB - may differ by that rounding
    pooled = {**BASE, "input_tokens": 1000, "output_tokens": 200, "request_rate": 2}
    assert vramplan.estimate_inference({**pooled, "runtime_settings": {"max_num_seqs": 8}})["vram_usage"] == \
        pytest.approx(vramplan.estimate_inference(pooled)["vram_usage"], abs=0.011)


def test_a_pool_the_deployment_logged_is_the_pool_it_admits_from():
    """runtime_settings.kv_pool_tokens (vLLM's "GPU KV cache size", --num-gpu-blocks-override): the pool holds those
    tokens whatever the memory left over, and admission reads it; a runtime without a pool ignores it and says so."""
    body = {**BASE, "input_tokens": 1000, "output_tokens": 200, "concurrent_users": 50}
    free = vramplan.estimate_inference(body)
    pinned = vramplan.estimate_inference({**body, "runtime_settings": {"kv_pool_tokens": 50000}})
    assert free["kv_pool"]["tokens"] > 400_000 and free["serving"]["running_sequences"] == 50
    # 50,000 tokens x 131,072 bytes = 6,553,600,000 bytes = 6.10 GiB
    assert pinned["kv_pool"]["tokens"] == 50000
    assert pinned["memory_details"]["KV Cache"] == round(50000 * KV_PER_TOKEN / 2**30, 2) == 6.1
    # vLLM admits a sequence with its prompt and half its answer in 16-token blocks: 1,100 tokens -> 69 blocks = 1,104;
    # 50,000 / 1,104 = 45.3 -> 45 run, 5 of the 50 clients wait
    assert pinned["serving"]["running_sequences"] == 50000 // (16 * math.ceil(1100 / 16)) == 45
    assert pinned["serving"]["queued_requests"] == 5 and pinned["serving"]["limited_by"] == "kv_cache"
    assert pinned["vram_usage"] < free["vram_usage"]
    cpp = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "llama-3-8b", "runtime": "llama.cpp",
                                       "runtime_settings": {"kv_pool_tokens": 50000}})
    assert "runtime_settings.kv_pool_tokens is ignored: llama.cpp sizes its cache by the request (it has no preallocated " \
           "pool)" in cpp["warnings"] and "kv_pool" not in cpp


def test_open_loop_moe_batch_guess_counts_what_each_running_sequence_adds():
    """An open loop guesses the batch its MoE rounds run (routing coverage, tile padding) before it knows the rounds:
    Little's law at the arrival rate on a round linear in the batch. Near capacity a guess with no per-sequence cost
    (gpt-oss-20b on an RTX 5090 under V0: 20 sequences where 82 run) padded each expert's tiles as for a quarter of
    the batch, so the operating point's round came out longer than capacity's and Little's law broke."""
    body = {"llm_key": "gpt-oss-20b", "gpu_key": "rtx_5090", "quantization": "mxfp4", "runtime": "vllm-v0",
            "input_tokens": 1000, "output_tokens": 200}
    cap = vramplan.estimate_inference({**body, "request_rate": 1e6})["serving"]["requests_per_second"]
    lam = 0.97 * cap
    out, t = traced({**body, "request_rate": lam})
    # what one more running sequence adds: its KV read, non-GEMM traffic, host work (V0 does not overlap it), its
    # token's GEMMs at the prompt's rate, and 1/200 of a successor's 1000-token prompt
    c = (t["decode_kv_seq_bytes"] / (t["decode_stream_gb_s"] * 1e9) + t["srv_elementwise_s"] + t["srv_host_seq_s"]
         + t["srv_prompt_gemm_s"] / 1000 + (t["srv_prompt_gemm_s"] + t["srv_prompt_other_s"]) / 200)
    assert t["srv_guess_seq_s"] == pytest.approx(c, rel=1e-9)
    stay = t["prefill_ms"] / 1000 + 199.5 * t["srv_full_read_s"]
    m = lam * stay / (1 - lam * 199.5 * c)
    assert t["srv_decode_seqs"] == pytest.approx(m, rel=1e-9)
    assert 0.9 * t["srv_op_n"] < m < 1.1 * t["srv_op_n"]             # the guess lands near the batch that runs
    assert t["srv_round_op_s"] <= t["srv_round_cap_s"]                # fewer sequences, no longer a round
    srv = out["serving"]
    assert srv["running_sequences"] + srv["queued_requests"] == pytest.approx(lam * srv["e2e_latency_ms"] / 1000, rel=5e-3)


def test_past_capacity_when_nothing_fits_in_the_kv_pool():
    out = vramplan.estimate_inference({**BASE, "input_tokens": 2_000_000, "output_tokens": 100})
    assert out["serving"]["running_sequences"] == 0 and out["serving"]["ttft_ms"] is None
    assert out["serving"]["limited_by"] == "kv_cache"
    assert any("cannot hold one sequence" in w for w in out["warnings"])
    assert out["memory_status"] == "insufficient"           # vLLM refuses to start with such a max_model_len


def test_price_per_million_output_tokens():
    out = vramplan.estimate_inference({**BASE, "input_tokens": 2000, "output_tokens": 500, "concurrent_users": 32,
                                       "gpu_hour_cost": 2.5})
    srv = out["serving"]
    assert srv["cost_per_hour"] == 2.5
    assert srv["cost_per_million_output_tokens"] == pytest.approx(2.5 / (srv["output_throughput_tps"] * 3600) * 1e6, rel=1e-3)
    assert vramplan.estimate_inference({**BASE, "concurrent_users": 32})["serving"]["cost_per_million_output_tokens"] is None


def test_context_split_rules():
    def split(**fields):
        out = vramplan.estimate_inference({**BASE, **fields})
        return out["serving"]["input_tokens"], out["serving"]["output_tokens"], out["assumptions"]

    assert split(seq_length=2048)[:2] == (1792, 256)                     # 1/8 answer
    assert split(seq_length=32768)[:2] == (31744, 1024)                  # at most 1024
    assert split(input_tokens=1000, output_tokens=100)[:2] == (1000, 100)
    assert split(input_tokens=1000, seq_length=1500)[:2] == (1000, 500)
    assert split(output_tokens=300)[:2] == (2100, 300)                   # 7:1
    assert split(input_tokens=700)[:2] == (700, 100)
    assert any("7/8 prompt" in a for a in split(seq_length=2048)[2])
    with pytest.raises(RequestError) as exc:
        vramplan.estimate_inference({**BASE, "input_tokens": 1000, "output_tokens": 100, "seq_length": 2000})
    assert "seq_length" in str(exc.value) and "1100" in str(exc.value)
    with pytest.raises(RequestError) as exc:
        vramplan.estimate_inference({**BASE, "output_tokens": 2048, "seq_length": 2048})
    assert "output_tokens" in str(exc.value)
    with pytest.raises(RequestError) as exc:
        vramplan.estimate_inference({**BASE, "request_rate": 2, "concurrent_users": 8})
    assert "concurrent_users" in str(exc.value)


def test_runtimes_that_always_batch_continuously_ignore_the_flag_with_a_warning():
    out = vramplan.estimate_inference({**BASE, "concurrent_users": 8, "enable_continuous_batching": False})
    assert out["serving"]["load"] == "closed_loop"
    assert any("always batches continuously" in w for w in out["warnings"])
    assert not any("continuously" in w for w in vramplan.estimate_inference({**BASE, "concurrent_users": 8})["warnings"])


def test_runtime_profiles_extend_and_tier_by_gpu():
    runtimes = {r["key"]: r for r in vramplan.list_runtimes()}
    assert {"transformers", "vllm", "sglang", "tensorrt-llm", "tgi", "llama.cpp"} <= set(runtimes)
    for r in runtimes.values():
        assert all(c["source"] for c in r["constants"].values()), r["key"]
    assert runtimes["sglang"]["extends"] == "vllm"
    # inherited as is
    assert runtimes["sglang"]["constants"]["cuda_graph_mib"] == runtimes["vllm"]["constants"]["cuda_graph_mib"]
    assert runtimes["tensorrt-llm"]["constants"]["kv_reserve_output_fraction"]["value"] == 1
    # vLLM's step budget by GPU: 8192 on an H100, 2048 on an A100 (named) and on a 24 GiB card (below 70 GiB)
    assert seen_on("h100_80", "vllm", "max_prefill_tokens") == 8192
    assert seen_on("a100_80", "vllm", "max_prefill_tokens") == 2048
    assert seen_on("rtx_4090", "vllm", "max_num_seqs") == 256
    # SGLang's chunked_prefill_size by GPU memory: 2048 below 35 GiB, 4096 below 60 (an L40S, an A100 40GB), 8192 below
    # 160, 16384 above
    assert [seen_on(k, "sglang", "max_prefill_tokens") for k in ("rtx_4090", "l40s", "a100_40", "h100_80", "b200")] \
        == [2048, 4096, 4096, 8192, 16384]


def test_pre_xqa_tensorrt_llm_reads_kv_once_per_query_head():
    """Llama 2 70B (64 query / 8 KV heads): the old kernel reads each sequence's cache 8 times per round."""
    body = {"gpu_key": "h100_80", "llm_key": "llama-2-70b", "quantization": "fp8", "kv_cache_quantization": "fp8",
            "num_gpus": 2, "inference_parallelism": "tensor", "input_tokens": 2048, "output_tokens": 2048, "batch_size": 64}
    _, new = traced({**body, "runtime": "tensorrt-llm"})
    _, old = traced({**body, "runtime": "tensorrt-llm-mmha"})
    assert old["srv_attn_s"] == pytest.approx(8 * new["srv_attn_s"], rel=1e-9)


def v0_seen(llm_key: str, name: str) -> float:
    res = resolve(CAT, validate({**BASE, "llm_key": llm_key, "runtime": "vllm-v0"}, "inference"), "inference")
    return build(res)[f"rt_{name}"]


def test_vllm_v0_defaults_from_its_source():
    """V0 (0.5-0.7): 256 sequences on every GPU, graphs up to 256, host work per running sequence the GPU waits for
    (V1 has none); chunked prefill into 512 tokens only for models of more than 32K context, else prompts first with
    max(max_model_len, 2048) tokens a step - Llama 3 8B (8,192) 8192, Mistral 7B v0.1 (32,768) 32768, Llama 3.1 8B
    (131,072) 512 and chunked."""
    assert [seen_on(k, "vllm-v0", "max_num_seqs") for k in ("rtx_4090", "h100_80")] == [256, 256]
    assert [seen_on(k, "vllm-v0", "max_prefill_tokens") for k in ("rtx_4090", "h100_80")] == [8192, 8192]
    assert (v0_seen("llama-3-8b", "max_prefill_tokens"), v0_seen("llama-3-8b", "prefill_mixes_decode")) == (8192, 0)
    assert (v0_seen("llama-3.1-8b", "max_prefill_tokens"), v0_seen("llama-3.1-8b", "prefill_mixes_decode")) == (512, 1)
    assert CAT.models.get("mistral-7b-v0.1").data["config"]["max_position_embeddings"] == 32768
    assert (v0_seen("mistral-7b-v0.1", "max_prefill_tokens"), v0_seen("mistral-7b-v0.1", "prefill_mixes_decode")) == (32768, 0)
    assert seen_on("h100_80", "vllm-v0", "cuda_graph_max_seqs") == 256
    assert seen_on("h100_80", "vllm-v0", "decode_seq_host_us") == 80
    assert seen_on("h100_80", "vllm-v0", "decode_token_overhead_us") == 4000
    assert seen_on("h100_80", "vllm", "decode_seq_host_us") == 0


def test_vllm_v0_host_work_grows_each_round_with_the_running_sequences():
    """64 users, 512-token prompts and 256-token answers: with V1's budgets, limits and graphs in mixed steps given to V0, the differences
    are the host work - a 4 ms bubble a step (RFC #6854) plus 64 running sequences x 80 us = 5.12 ms, 9.12 ms more per
    round (every round, with or without a chunk) - and V0's sampler, which takes softmax and log_softmax of every row:
    36 bytes a vocabulary entry against V1's 12, (64 + 63/256 first tokens) x 128,256 x 24 / 2.8475e12 = 69.5 us;
    output throughput follows Little's law on the longer request."""
    body = {**BASE, "input_tokens": 512, "output_tokens": 256, "concurrent_users": 64}
    same = {"max_prefill_tokens": 8192, "max_num_seqs": 1024, "cuda_graph_max_seqs": 512, "prefill_mixes_decode": 1,
            "mixed_steps_eager": 0}
    v1, t1 = traced(body)
    v0, t0 = traced({**body, "runtime": "vllm-v0", "runtime_settings": same})
    assert t0["srv_op_n"] == t1["srv_op_n"] == 64
    assert t0["srv_host_seq_s"] == pytest.approx(80e-6) and t1["srv_host_seq_s"] == 0
    sampler = (64 + 63 / 256) * V * (36 - 12) / BW        # the decodes' rows and the first-token row of 63/256 prompts
    assert sampler == pytest.approx(69.5e-6, abs=0.1e-6)
    assert t0["srv_round_op_s"] - t1["srv_round_op_s"] == pytest.approx(4e-3 + 64 * 80e-6 + sampler, rel=1e-9)
    assert v0["serving"]["itl_ms"] - v1["serving"]["itl_ms"] == pytest.approx(4 + 5.12 + 0.0695, abs=0.011)
    assert v0["serving"]["output_throughput_tps"] < v1["serving"]["output_throughput_tps"]


def test_nvfp4_gemms_run_at_their_kernels_rate_not_the_fp4_peak():
    """NVFP4 GEMMs reach ~2.13x the 16-bit GEMM rate (vLLM PR #20646 on B200), not the 4x of the peaks: on a B200
    (bf16 2,250, fp4 9,000 TFLOP/s dense) the matmuls run at min(9000, 2.13 x 2250) = 4,792.5; FP8 keeps its peak."""
    def tflops(quant: str) -> float:
        res = resolve(CAT, validate({**BASE, "gpu_key": "b200", "quantization": quant}, "inference"), "inference")
        return build(res)["gpu_tflops"]
    assert tflops("nvfp4") == pytest.approx(2.13 * 2250)
    assert tflops("mxfp4") == pytest.approx(2 * 2250)  # W4A8: FP8 MMAs on Blackwell, min(9000, 2 x 2250) = 4500
    assert tflops("fp8") == pytest.approx(4500)
    assert tflops("bf16") == pytest.approx(2250)
    # a GPU without an FP4 rate and without a measured unpacking rate computes NVFP4 at its 16-bit rate (A100: 312)
    res = resolve(CAT, validate({**BASE, "gpu_key": "a100_80", "quantization": "nvfp4"}, "inference"), "inference")
    assert build(res)["gpu_tflops"] == pytest.approx(312)


def test_4bit_microscaling_on_hopper_runs_at_the_unpacking_kernels_rate():
    """Hopper has no FP4 MMA: MXFP4 / NVFP4 GEMM kernels unpack in registers and multiply in bf16 (W4A16), issue-bound
    at 0.53 of the bf16 GEMMs (between Marlin's 0.43 and FlashInfer's W4A16 0.63, catalog). The GPU's rate for the
    format stays its 16-bit 989.4 (attention runs there); its quantized GEMMs get the factor. bf16 and FP8 keep
    their peaks; Blackwell multiplies MXFP4 with FP8 MMAs; Ampere has no measurement and keeps the 16-bit rate."""
    def rates(gpu: str, quant: str) -> tuple[float, float]:
        res = resolve(CAT, validate({**BASE, "gpu_key": gpu, "llm_key": "gpt-oss-20b", "quantization": quant},
                                    "inference"), "inference")
        d = build(res)
        return d["gpu_tflops"], d["unpacked_gemm_rate"]
    assert rates("h100_80", "mxfp4") == (pytest.approx(989.4), pytest.approx(0.53))
    assert rates("h100_80", "nvfp4") == (pytest.approx(989.4), pytest.approx(0.53))
    assert rates("h200", "mxfp4") == (pytest.approx(989.4), pytest.approx(0.53))  # a Hopper with the H100's tensor cores
    assert rates("h100_80", "bf16") == (pytest.approx(989.4), 1.0)
    assert rates("h100_80", "fp8") == (pytest.approx(1978.9), 1.0)
    assert rates("h100_80", "awq") == (pytest.approx(989.4), 1.0)   # no unpacked_rate: its Hopper kernels are not measured
    assert rates("b200", "mxfp4") == (pytest.approx(4500), 1.0)     # W4A8: min(9000, 2 x 2250)
    assert rates("a100_80", "mxfp4") == (pytest.approx(312), 1.0)
    # and the response says so, with the rate
    said = vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "gpt-oss-20b", "quantization": "mxfp4"})["assumptions"]
    assert any(a.startswith("compute: the NVIDIA H200") and "W4A16" in a and "0.53 of its 16-bit GEMM rate" in a for a in said)
    said = vramplan.estimate_inference({"gpu_key": "b200", "llm_key": "gpt-oss-20b", "quantization": "mxfp4"})["assumptions"]
    assert not any(a.startswith("compute:") for a in said)


def test_unpacking_rate_slows_large_batch_decode_of_gpt_oss_on_hopper():
    """gpt-oss-20b in MXFP4 on an H100 at 512 sequences: its experts multiply at the unpacking kernels' 524.382
    (0.53 x 989.4), what the checkpoint keeps in bf16 at 989.4 - 24 layers of attention (2880 x (4096 + 512 + 512)
    + 4096 x 2880 = 26,542,080) and router (2880 x 32 = 92,160) = 639,221,760 params, and the bf16 head
    (201,088 x 2880 = 579,133,440): 2 x 1,218,355,200 = 2,436,710,400 FLOPs a token at 16 bits."""
    body = {"gpu_key": "h100_80", "llm_key": "gpt-oss-20b", "quantization": "mxfp4", "runtime": "vllm",
            "input_tokens": 1000, "output_tokens": 1000, "concurrent_users": 512}
    _, steps = traced(body)
    assert steps["gemm16_kept_params"] == 24 * (2880 * (4096 + 512 + 512) + 4096 * 2880 + 2880 * 32) == 639_221_760
    assert steps["gemm16_head_params"] == 201_088 * 2880 == 579_133_440
    flops = steps["decode_gemm_flops_per_token"]
    f16 = 2 * (639_221_760 + 579_133_440)
    assert steps["srv_token_s"] == pytest.approx(((flops - f16) / 524.382e12 + f16 / 989.4e12) / 0.6)
    # at the bf16 rate alone the same token would take flops / 593.64e12 - the unpacking costs more than 1.5x that
    assert steps["srv_token_s"] > 1.5 * flops / (989.4e12 * 0.6)


def test_sglang_pool_is_sized_before_any_client_arrives():
    # SGLang sizes its KV pool at startup from mem_fraction_static (no sampler profile run), so 1024 clients cannot
    # shrink it: the pool's tokens are the same as with one client, and the running cap stays what that pool admits.
    # Qwen3-30B-A3B q4_k_m on an RTX 4090, 1000 + 200 tokens: SGLang admits a sequence with its prompt and 0.55 of
    # its answer (kv_reserve_output_fraction), 1000 + 0.55 x 200 = 1110 tokens; the pool's T tokens hold floor(T / 1110).
    # (Before: the logits of 1024 clients' rows came out of the pool - 16,749 tokens, 15 running, 669 tok/s.)
    req = {"gpu_key": "rtx_4090", "llm_key": "qwen3-30b-a3b", "quantization": "q4_k_m", "runtime": "sglang",
           "input_tokens": 1000, "output_tokens": 200}
    one = vramplan.estimate_inference({**req, "concurrent_users": 1})
    many = vramplan.estimate_inference({**req, "concurrent_users": 1024})
    assert rt("sglang", "kv_reserve_output_fraction") == 0.55
    tokens = one["kv_pool"]["tokens"]
    assert many["kv_pool"]["tokens"] == tokens
    assert many["memory_details"]["KV Cache"] == one["memory_details"]["KV Cache"]
    assert many["serving"]["running_sequences"] == math.floor(tokens / 1110)
    assert many["serving"]["queued_requests"] == 1024 - math.floor(tokens / 1110)


def test_tensor_parallel_ranks_each_run_the_norms_on_the_whole_hidden_state_and_sample_whole_rows():
    """Llama 3 8B over 2 tensor-parallel H100s, 64 sequences: each rank holds the all-reduced 4096-wide hidden state and
    runs the norms and residual adds on all of it, but only half of the 14,336-wide feed-forward activation; the
    gathered logits are sampled whole on each rank. Per GPU and sequence: 32 x (4096 + 7168) x 8 = 2,883,584 bytes of
    elementwise traffic + 128,256 x 12 = 1,539,072 of sampler traffic = 4,422,656 bytes."""
    body = {**BASE, "num_gpus": 2, "inference_parallelism": "tensor", "input_tokens": 1024, "output_tokens": 1024,
            "batch_size": 64}
    out, t = traced(body)
    per_seq = 32 * (4096 + 14336 // 2) * 8 + 128256 * 12
    assert per_seq == 4422656
    assert t["decode_mb_seqs"] == 64
    assert t["decode_elementwise_bytes"] == pytest.approx(64 * per_seq, rel=1e-12)
    assert t["srv_elementwise_s"] == pytest.approx(per_seq / (t["decode_stream_gb_s"] * 1e9), rel=1e-12)
    # a split hidden state would have been 32 x (4096 + 14336) x 8 / 2 = 2,359,296 bytes of elementwise traffic a rank
    assert t["decode_elementwise_bytes"] > 64 * (2359296 + 128256 * 12)


def test_temperature_sampling_is_a_runtime_setting_that_streams_more_per_row():
    """Greedy (12 bytes a vocabulary entry) is the default; a deployment sampling with a temperature sets ~48 (softmax,
    exponential noise, division, argmax): each running sequence's row then costs 128,256 x 36 / 2.8475e12 = 1.6215 us
    more a round, 256 of them 0.4151 ms."""
    body = {**BASE, "input_tokens": 512, "output_tokens": 256, "concurrent_users": 256}
    _, greedy = traced(body)
    _, sampled = traced({**body, "runtime_settings": {"sampler_traffic_bytes": 48}})
    per_row = 128256 * 36 / BW
    assert per_row == pytest.approx(1.6215e-6, abs=1e-10)
    assert sampled["srv_elementwise_s"] - greedy["srv_elementwise_s"] == pytest.approx(per_row, rel=1e-9)
    assert greedy["srv_op_n"] == sampled["srv_op_n"] == 256
    assert sampled["decode_elementwise_bytes"] - greedy["decode_elementwise_bytes"] == pytest.approx(256 * 128256 * 36, rel=1e-12)


def test_tensor_parallel_all_reduces_use_the_runtimes_custom_kernel_on_nvlink_and_nccl_elsewhere():
    """Llama 3 70B (80 layers, hidden 8192) over 8 H100s on NVSwitch, one user: vLLM's custom all-reduce takes 5 us
    whatever the GPU count and moves the hidden state at half the 450 GB/s link - 2 x 7/8 x 16,384 B / 225e9 = 127.43 ns
    a token; 160 all-reduces a step = 160 x (5 us + 0.12743 us) = 820.39 us. TGI all-reduces through NCCL, whose cost
    model (tuning.cc) runs a 16 KB message on LL: 6.6 us base + 2 x 7 steps x 0.6 us = 15.0 us, the 28,672 bus bytes at
    LL's 141 GB/s (Hopper's cap) = 203.35 ns - against Simple's 8.4 + 14 x 3.4 = 56.0 us and LL128's 40.6 us; 160 x
    15.203 us = 2.433 ms. Four L40S on PCIe have no NVLink peer loads and no NCCL table here: vLLM falls back to NCCL at
    the link's 5.7 us a step, 2 x 3 x 5.7 = 34.2 us."""
    body = {"gpu_key": "h100_80", "llm_key": "llama-3-70b", "quantization": "bf16", "num_gpus": 8,
            "inference_parallelism": "tensor", "input_tokens": 512, "output_tokens": 128}
    _, v = traced({**body, "runtime": "vllm"})
    assert v["allreduce_custom"] == 1 and v["decode_mb_seqs"] == 1
    assert v["allreduce_latency_s"] == pytest.approx(5e-6, rel=1e-12)
    assert v["allreduce_token_s"] == pytest.approx(2 * 7 / 8 * 16384 / 225e9, rel=1e-12)
    assert v["decode_tp_comm_s"] == pytest.approx(160 * (5e-6 + 2 * 7 / 8 * 16384 / 225e9), rel=1e-9)
    assert v["decode_tp_comm_s"] == pytest.approx(820.39e-6, abs=0.01e-6)
    _, g = traced({**body, "runtime": "tgi"})
    assert g["allreduce_custom"] == 0 and g["ring_proto"] == 1
    assert g["allreduce_latency_s"] == pytest.approx(6.6e-6 + 14 * 0.6e-6, rel=1e-12)
    assert g["decode_tp_comm_s"] == pytest.approx(160 * (15.0e-6 + 2 * 7 / 8 * 16384 / 141e9), rel=1e-9)
    assert g["decode_tp_comm_s"] == pytest.approx(2.4325e-3, abs=0.001e-3)
    _, pcie = traced({**body, "gpu_key": "l40s", "num_gpus": 4, "quantization": "fp8", "runtime": "vllm"})
    assert pcie["allreduce_custom"] == 0 and pcie["allreduce_latency_s"] == pytest.approx(6 * 5.7e-6, rel=1e-12)


def test_a_decode_step_too_large_for_the_custom_kernel_all_reduces_through_nccl():
    """vLLM's custom kernel takes messages up to 8 MiB (hidden 8192 x 2 bytes = 16 KiB a token): one user's 128-token
    prompt (2 MiB) and decode step stay on it; a burst of 256 decodes (4 MiB) too, but its prompts are prefilled in passes
    of 8192 tokens (128 MiB), which go to NCCL - on Simple (56.0 us + 8192 x 28,672 B / 370.8 GB/s = 689.5 us, against
    LL128's 40.6 us + 8192 x 28,672 B / 341.136 GB/s = 729.1 us); 1024 decodes (16 MiB) go to NCCL as well, on LL128
    (40.6 + 86.1 = 126.7 us against Simple's 56.0 + 79.2 = 135.2 us)."""
    body = {"gpu_key": "h100_80", "llm_key": "llama-3-70b", "quantization": "fp8", "num_gpus": 8,
            "inference_parallelism": "tensor", "runtime": "vllm", "kv_cache_quantization": "fp8",
            "input_tokens": 128, "output_tokens": 128}
    _, one = traced(body)
    assert one["decode_mb_seqs"] == 1 and one["allreduce_custom"] == 1 and one["prefill_allreduce_custom"] == 1
    _, burst = traced({**body, "batch_size": 256})
    assert burst["decode_mb_seqs"] == 256 and 256 * 8192 * 2 == 4 * 2 ** 20 and burst["allreduce_custom"] == 1
    assert burst["prompt_tokens"] / burst["prefill_chunks"] == 8192 and burst["prefill_allreduce_custom"] == 0
    assert burst["prefill_ring_proto"] == 3
    assert burst["prefill_allreduce_latency_s"] == pytest.approx(8.4e-6 + 14 * 3.4e-6, rel=1e-12)
    assert burst["prefill_allreduce_token_s"] == pytest.approx(2 * 7 / 8 * 16384 / 370.8e9, rel=1e-12)
    _, large = traced({**body, "batch_size": 1024, "runtime_settings": {"max_num_seqs": 1024}})
    assert large["decode_mb_seqs"] == 1024 and large["ring_proto"] == 2
    assert large["allreduce_custom"] == 0 and large["allreduce_latency_s"] == pytest.approx(14e-6 + 14 * 1.9e-6, rel=1e-12)
    assert large["allreduce_token_s"] == pytest.approx(2 * 7 / 8 * 16384 / (0.92 * 18 * 20.6e9), rel=1e-12)


def test_tensorrt_llms_custom_all_reduce_takes_16_mb_over_two_gpus_and_8_mb_beyond():
    """TensorRT-LLM 1.0 sizes its all-reduce workspace by the GPUs (plugin.py max_workspace_size_auto: 16,000,000 bytes
    for tp <= 2, 8,000,000 beyond); vLLM's is 8 MiB at any tp. 600 decodes of Llama 3 70B (hidden 8192 x 2 bytes):
    600 x 16,384 = 9,830,400 bytes - TensorRT-LLM's kernel over 2 GPUs, NCCL over 4 and for vLLM."""
    body = {"gpu_key": "h100_80", "llm_key": "llama-3-70b", "quantization": "fp8", "inference_parallelism": "tensor",
            "kv_cache_quantization": "fp8", "input_tokens": 128, "output_tokens": 128, "batch_size": 600,
            "runtime_settings": {"max_num_seqs": 600}}
    assert 600 * 8192 * 2 == 9_830_400
    _, trt2 = traced({**body, "runtime": "tensorrt-llm", "num_gpus": 2})
    assert trt2["decode_mb_seqs"] == 600 and trt2["allreduce_max_bytes"] == 16_000_000 and trt2["allreduce_custom"] == 1
    _, trt4 = traced({**body, "runtime": "tensorrt-llm", "num_gpus": 4})
    assert trt4["allreduce_max_bytes"] == 8_000_000 and trt4["allreduce_custom"] == 0
    _, vllm2 = traced({**body, "runtime": "vllm", "num_gpus": 2})
    assert vllm2["allreduce_max_bytes"] == 8 * 2 ** 20 and vllm2["allreduce_custom"] == 0


def test_the_sustainable_rate_pays_the_all_reduce_path_of_the_caps_batch_whatever_the_rate_asked():
    """Llama 3.3 70B over 8 H100s under vLLM, 200 + 2000 tokens: the cap is max_num_seqs' 1024 sequences, whose decode
    step all-reduces 1024 x 8192 x 2 = 16 MiB - NCCL, not the 8 MiB custom kernel (5 us, half the link's rate) a light
    load's batch uses, and on NCCL's LL128 line (14 + 2 x 7 x 1.9 = 40.6 us; 0.92 x 18 x 20.6 = 341.136 GB/s). The rounds
    that set the capacity run the cap's batch at every rate: 2 x 80 all-reduces x (40.6 - 5) us = 5.696 ms more a round
    than the light load's, and each sequence's all-reduce bytes at LL128's rate instead of the kernel's. Before, at 90%
    of the rate the capacity read 6.40 requests/s, under the 6.71 the warning gave, and the load was reported past
    capacity."""
    body = {"gpu_key": "h100_80", "llm_key": "llama-3.3-70b-instruct", "quantization": "bf16", "num_gpus": 8,
            "inference_parallelism": "tensor", "runtime": "vllm", "input_tokens": 200, "output_tokens": 2000}
    _, full = traced({**body, "request_rate": 1e6})
    assert full["srv_n_cap"] == 1024 and full["allreduce_custom"] == 0
    _, light = traced({**body, "request_rate": full["srv_capacity_seq_rate"] / 10})
    assert light["allreduce_custom"] == 1 and light["allreduce_custom_cap"] == 0 and light["ring_proto_cap"] == 2
    assert light["srv_fixed_cap_s"] - light["srv_fixed_s"] == pytest.approx(2 * 80 * (40.6e-6 - 5e-6), rel=1e-9)
    kernel, ll128 = 2 * 7 / 8 * 16384 / (0.5 * 450e9), 2 * 7 / 8 * 16384 / 341.136e9
    assert light["srv_comm_token_s"] - light["srv_comm_token_cap_s"] == pytest.approx(2 * 80 * (kernel - ll128), rel=1e-9)
    assert light["srv_capacity_seq_rate"] == pytest.approx(full["srv_capacity_seq_rate"], rel=1e-9)
    near, _ = traced({**body, "request_rate": 0.97 * full["srv_capacity_seq_rate"]})
    assert near["serving"]["ttft_ms"] is not None and near["serving"]["limited_by"] == "arrival_rate"


def test_a_burst_that_fits_gets_its_first_tokens_group_by_group_under_continuous_batching():
    """One client's 64 prompts of 1000 tokens on vLLM: all 64 run at once (a static batch by admission), but the
    scheduler takes the prompts first come, first served, as many whole ones a step as the 8192-token budget holds
    beside the decodes - (8192 - 64 / 2) / 1000 = 8.16, so 8 a step in 64 / 8 = 8 groups. Group k's first tokens come
    after k / 8 of the whole batch's prefill P: the mean is P x 9 / 16, 7 / 16 of P sooner than the last group's. The
    time is not saved - each request's 199 later tokens absorb it - so end to end and throughput stay the static
    batch's P + 199 rounds. transformers' generate (no continuous batching) and TensorRT-LLM's GptSession prefill
    every prompt first: one group, first tokens after all of P."""
    body = {**BASE, "input_tokens": 1000, "output_tokens": 200, "batch_size": 64}
    out, t = traced(body)
    assert t["srv_static"] == 1 and t["srv_continuous"] == 1 and t["srv_running_closed"] == 64
    assert t["srv_burst_admit_per_round"] == pytest.approx((8192 - 64 / 2) / 1000)
    assert t["srv_static_groups"] == 8
    whole = t["prefill_ms"] / 1000 * 64 / t["prefill_seqs"]                       # P, the whole batch's prefill
    assert t["prefill_seqs"] == 64
    assert t["srv_static_ramp_s"] == pytest.approx(whole * 7 / 16, rel=1e-12)
    assert t["srv_ttft_op_s"] == pytest.approx(whole * 9 / 16, rel=1e-12)
    assert t["srv_itl_op_s"] == pytest.approx(t["srv_round_op_s"] + whole * 7 / 16 / 199, rel=1e-12)
    assert t["srv_e2e_op_s"] == pytest.approx(whole + 199 * t["srv_round_op_s"], rel=1e-12)
    s = out["serving"]
    assert s["load"] == "static_batch" and s["ttft_ms"] == pytest.approx(whole * 9 / 16 * 1000, abs=0.006)
    assert any("8 groups" in a for a in out["assumptions"])
    # the same 64 on runtimes that prefill all of them first: one group, no head start
    for runtime, extra in (("transformers", {}), ("tensorrt-llm-mmha", {})):
        _, u = traced({**body, "runtime": runtime, **extra})
        assert u["srv_static_groups"] == 1 and u["srv_static_ramp_s"] == 0
        assert u["srv_ttft_op_s"] == pytest.approx(u["prefill_ms"] / 1000 * 64 / u["prefill_seqs"], rel=1e-12)
    # TensorRT-LLM's batch manager (enable_continuous_batching) takes them in flight, like vLLM
    _, m = traced({**body, "runtime": "tensorrt-llm-mmha", "enable_continuous_batching": True})
    assert m["srv_continuous"] == 1 and m["srv_static_groups"] > 1


def test_a_budget_smaller_than_a_step_of_prompts_stretches_a_bursts_prefill():
    """vLLM V0 chunks prompts into 512-token steps for a model of more than 32K context (Llama 3.1 8B): a step takes
    512 - 64 / 2 = 480 prompt tokens beside the decodes, 0.48 of a 1000-token prompt, so 64 prompts need 64 / 0.48 =
    133.3 steps, each at least a decode round with V0's host bubble - longer than the prompts' prefill alone. Every one of
    those steps carries prompt tokens, so V0 launches it eagerly: 32 layers x 47 us = 1.504 ms more than a graphed decode
    round. The burst's prefill is the longer of the two, its first tokens come on average after 65 / 128 of it (64
    groups of one), and its end to end is that prefill plus 199 rounds."""
    body = {**BASE, "llm_key": "llama-3.1-8b-instruct", "runtime": "vllm-v0", "input_tokens": 1000, "output_tokens": 200,
            "batch_size": 64}
    out, t = traced(body)
    assert t["srv_burst_admit_per_round"] == pytest.approx(480 / 1000) and t["srv_static_groups"] == 64
    alone = t["prefill_ms"] / 1000 * 64 / t["prefill_seqs"]
    eager = 32 * 47e-6
    assert t["decode_cuda_graphs"] == 1 and t["srv_eager_mix_s"] == pytest.approx(eager, rel=1e-12)
    ramp = 64 / 0.48 * max(t["srv_round_op_s"] + (1 - t["srv_mixed_share_op"]) * eager, 0.48 * t["srv_ramp_prompt_s"] + eager)
    assert ramp > alone and t["srv_static_prefill_s"] == pytest.approx(ramp, rel=1e-12)
    assert t["srv_ttft_op_s"] == pytest.approx(ramp * 65 / 128, rel=1e-12)
    assert t["srv_e2e_op_s"] == pytest.approx(ramp + 199 * t["srv_round_op_s"], rel=1e-12)


@pytest.mark.parametrize("runtime", ["vllm", "tgi", "tensorrt-llm"])
def test_one_prompt_past_the_cap_does_not_make_the_first_tokens_come_sooner(runtime):
    """64 prompts that all run at once and 65 of which one waits for a slot: both ramp up at the token budget's pace,
    the 64 in groups of whole prompts (srv_static_ramp_s), the 65 in ramp rounds that carry the pace's prompts
    (srv_burst_ramp_round_s) - the mean first token is the same ramp's, within 10% (it was 930 ms against 160 ms on
    vLLM when a queued burst's ramp rounds were priced as decode rounds)."""
    body = {**BASE, "llm_key": "llama-3.1-8b-instruct", "runtime": runtime, "input_tokens": 1000, "output_tokens": 200,
            "runtime_settings": {"max_num_seqs": 64}}
    fits = vramplan.estimate_inference({**body, "batch_size": 64})["serving"]
    past = vramplan.estimate_inference({**body, "batch_size": 65})["serving"]
    assert fits["load"] == "static_batch" and past["load"] == "closed_loop" and past["running_sequences"] == 64
    assert past["ttft_ms"] == pytest.approx(fits["ttft_ms"], rel=0.1)


@pytest.mark.parametrize("lengths", [(1000, 200), (128, 1)])
def test_an_moe_deployments_sustainable_rate_does_not_depend_on_the_rate_asked(lengths):
    """gpt-oss-120b on an H100 (128 experts, 4 a token): the rounds that set the sustainable rate run the admission
    cap's sequences, so their grouped GEMMs pad tiles at the cap's rows per expert - not at the operating point's,
    which at a tenth of the rate has ~1 row per touched expert in a 16-row tile (a 16x padding that made the capacity
    30% lower there). Padding at the cap: moe_tokens_per_expert_cap = cap x 4 / 128, the same whatever the rate.
    With one-token answers the capacity is the first tokens': the decodes riding in a prompt's chunks read the
    experts the cap's sequences touch (srv_weights_cap_s), not the operating point's (which read 423 requests/s at 90% of
    the rate against 453 at the cap)."""
    body = {**BASE, "llm_key": "gpt-oss-120b", "quantization": "mxfp4", "input_tokens": lengths[0], "output_tokens": lengths[1]}
    _, full = traced({**body, "request_rate": 1e6})
    cap = full["srv_n_cap"]
    _, light = traced({**body, "request_rate": full["srv_capacity_seq_rate"] / 10})
    assert light["srv_n_cap"] == cap and light["moe_tokens_per_expert_cap"] == pytest.approx(cap * 4 / 128)
    assert light["moe_padded_rows_cap"] == pytest.approx(full["moe_padded_rows"], rel=1e-12)   # at the cap, as the full loop's
    assert light["moe_padded_rows"] > 2 * light["moe_padded_rows_cap"]                        # the light load pads far more
    assert light["srv_capacity_seq_rate"] == pytest.approx(full["srv_capacity_seq_rate"], rel=0.01)


def test_an_moe_rounds_dense_and_expert_gemms_each_pay_their_own_roofline():
    """Qwen3-30B-A3B in FP8 on an H200 under vLLM, 256 clients of 1000 + 200 tokens: the dense GEMMs (attention
    projections, head) and the grouped MoE GEMM are separate kernels on one stream, so each takes the slower of its own
    reads and arithmetic. A token's routed-expert FLOPs: 48 layers x 8 experts x 3 x 2048 x 768 = 1,811,939,328
    parameters, 2 FLOPs each, times the tile padding, at the H200's FP8 1,978.9 TFLOP/s x vLLM's 0.6. 256 tokens touch
    1 - (120/128)^256 of a layer's experts. The experts' ~6 ms of reads outlast their ~1.1 ms of arithmetic, while the
    dense side's 256 tokens of arithmetic outlast its weight reads - so the round pays more than the slower of the
    sums (which hid the dense arithmetic under the experts' reads); the same in the rounds that carry prompt chunks. A
    dense model is one kernel class: unchanged."""
    body = {**BASE, "gpu_key": "h200", "llm_key": "qwen3-30b-a3b", "quantization": "fp8", "input_tokens": 1000,
            "output_tokens": 200, "concurrent_users": 256}
    _, t = traced(body)
    n = 256
    assert t["srv_op_n"] == n
    coverage = 1 - (120 / 128) ** n
    assert t["expert_coverage"] == pytest.approx(coverage, rel=1e-12)
    expert_token = 2 * t["moe_padded_rows"] * 48 * 8 * 3 * 2048 * 768 / (1978.9e12 * 0.6)
    assert t["srv_expert_token_s"] == pytest.approx(expert_token, rel=1e-9)
    experts_read = coverage * t["srv_expert_read_s"]
    dense = max(t["srv_weights_s"] - experts_read, n * (t["srv_token_s"] - expert_token), t["srv_dequant_s"])
    expert = max(experts_read, n * expert_token)
    assert experts_read > n * expert_token                                        # the grouped GEMM: bound by reads
    assert n * (t["srv_token_s"] - expert_token) > t["srv_weights_s"] - experts_read   # the dense GEMMs: by arithmetic
    assert t["srv_gemm_op_s"] == pytest.approx(dense + expert, rel=1e-9)
    assert t["srv_gemm_op_s"] > 1.03 * max(t["srv_weights_s"], n * t["srv_token_s"], t["srv_dequant_s"])
    # the rounds that carry prompt chunks: the same two kernels, the chunks' non-expert FLOPs on the dense side and
    # their routed ones on the grouped GEMM's, the experts read once for decodes and chunks together
    share, prompts = t["srv_mixed_share_op"], t["srv_prompts_op"]
    union = coverage + (1 - coverage) * t["srv_pass_coverage"]
    mixed = (max(share * (t["srv_mixed_weights_s"] - union * t["srv_expert_read_s"]),
                 share * n * (t["srv_token_s"] - expert_token) + prompts * t["srv_prompt_gemm_local_s"], 0)
             + max(share * union * t["srv_expert_read_s"], share * n * expert_token + prompts * t["srv_prompt_gemm_spread_s"]))
    assert 0 < share < 1 and t["srv_mixed_gemm_op_s"] == pytest.approx(mixed, rel=1e-9)
    assert t["srv_mixed_gemm_op_s"] >= max(share * t["srv_mixed_weights_s"], share * n * t["srv_token_s"] + prompts * t["srv_prompt_gemm_s"])
    _, d = traced({**body, "llm_key": "llama-3.1-8b-instruct"})
    assert d["srv_expert_token_s"] == 0 and d["srv_expert_read_s"] == 0
    assert d["srv_gemm_op_s"] == max(d["srv_weights_s"], d["srv_op_n"] * d["srv_token_s"], d["srv_dequant_s"])
    assert d["srv_mixed_gemm_op_s"] == pytest.approx(max(
        d["srv_mixed_share_op"] * d["srv_mixed_weights_s"],
        d["srv_mixed_share_op"] * d["srv_op_n"] * d["srv_token_s"] + d["srv_prompts_op"] * d["srv_prompt_gemm_s"],
        d["srv_mixed_share_op"] * d["srv_dequant_s"]), rel=1e-12)


def test_an_moe_prompt_reads_the_experts_its_own_tokens_touch():
    """Qwen3-30B-A3B in bf16 (48 layers of 128 experts, 8 a token, each 3 x 2048 x 768), 4 clients of 1000 + 200
    tokens: a decode round's 4 tokens touch 1 - (120/128)^4 = 22.75% of a layer's experts, a 1000-token prompt
    1 - (120/128)^1000 = all of them. SGLang prefills in a pass of its own: the pass reads the round's weights and
    the other 77.25% of the 57,982,058,496 expert bytes. vLLM mixes the chunk into a decode step: that step reads the
    union of both, the same here."""
    body = {**BASE, "llm_key": "qwen3-30b-a3b", "input_tokens": 1000, "output_tokens": 200, "concurrent_users": 4}
    experts = 48 * 128 * 3 * 2048 * 768 * 2
    decode_cov = 1 - (120 / 128) ** 4
    out, t = traced({**body, "runtime": "sglang"})
    assert t["expert_coverage"] == pytest.approx(decode_cov, rel=1e-12) and t["srv_pass_coverage"] == pytest.approx(1.0)
    more = (1 - decode_cov) * experts / (t["decode_expert_stream_gb_s"] * 1e9)
    assert t["srv_pass_weights_s"] == pytest.approx(t["srv_weights_s"] + more, rel=1e-9)
    prompts = 3 / 200                                   # the other 3 clients' successors start each round
    assert t["srv_passes_op"] == pytest.approx(prompts)
    itl = (t["srv_round_op_s"] + max(prompts * t["srv_pass_weights_s"], prompts * t["srv_prompt_gemm_s"])
           + prompts * (t["srv_prompt_other_s"] + t["srv_pass_fixed_s"]))
    assert out["serving"]["itl_ms"] == pytest.approx(itl * 1000, abs=0.006)
    _, v = traced({**body, "runtime": "vllm"})
    assert v["srv_mixed_weights_s"] == pytest.approx(v["srv_weights_s"] + (1 - decode_cov) * 1.0 * experts
                                                     / (v["decode_expert_stream_gb_s"] * 1e9), rel=1e-9)


def test_a_pipelines_prompt_passes_read_every_expert_so_more_clients_never_lower_throughput():
    """DeepSeek R1 over 8 pipeline stages under SGLang, 8000 + 100 tokens: 64 clients make decode micro-batches of 8
    that touch 1 - (248/256)^8 = 22.5% of the experts; each 8000-token prompt's pass touches all of them, whatever
    the clients. Read at the decodes' coverage, the passes cost more per prompt as clients grew and throughput fell
    (628 -> 551 tokens/s from 128 to 256 clients)."""
    body = {"gpu_key": "h200", "llm_key": "deepseek-r1", "quantization": "fp8", "num_gpus": 8, "runtime": "sglang",
            "input_tokens": 8000, "output_tokens": 100}
    rates = []
    for users in (64, 128, 256):
        out, t = traced({**body, "concurrent_users": users})
        assert t["srv_pass_coverage"] == pytest.approx(1.0)
        rates.append(out["serving"]["output_throughput_tps"])
    assert t["expert_coverage"] < 1 and rates == sorted(rates)


def test_a_clients_sequences_arriving_together_are_prefilled_together_under_continuous_batching():
    """Two clients each sending 4 sequences of 1000-token prompts: a request's 4 prompts arrive at once and the
    scheduler admits them in one step (4,000 tokens, under the 8192 budget), so its first tokens come after all four
    prompts' prefill - not after one prompt's, as if they came one by one - and no sooner than the same 4 prompts'
    prefill for one client alone (a static burst), which has no other sequences riding in its step."""
    body = {**BASE, "input_tokens": 1000, "output_tokens": 200, "batch_size": 4}
    alone, ta = traced(body)
    two, tt = traced({**body, "concurrent_users": 2})
    assert ta["srv_static"] == 1 and ta["prefill_seqs"] == 4
    assert tt["srv_static"] == 0 and tt["prefill_seqs"] == 4 and tt["srv_running_closed"] == 8
    assert tt["prompt_tokens"] == 4 * 1000 == ta["prompt_tokens"]
    assert tt["prefill_ms"] == pytest.approx(ta["prefill_ms"], rel=1e-12)            # the same 4 prompts, one pass
    assert two["serving"]["ttft_ms"] >= alone["serving"]["ttft_ms"] >= round(tt["prefill_ms"], 2) - 0.005   # reported to 2 decimals
    one_by_one, t1 = traced({**body, "batch_size": 1, "concurrent_users": 8})
    assert t1["prefill_seqs"] == 1 and one_by_one["serving"]["ttft_ms"] < two["serving"]["ttft_ms"]


def test_vllm_v0_multi_step_scheduling_pays_the_host_work_once_every_n_steps():
    """--num-scheduler-steps 8 (runtime_settings scheduler_steps 8): V0's 4 ms bubble and 80 us a running sequence
    come once every 8 steps (vLLM RFC #6854). 16 users: (4 ms + 16 x 80 us = 5.28 ms) x 7/8 = 4.62 ms less a round."""
    body = {**BASE, "runtime": "vllm-v0", "input_tokens": 512, "output_tokens": 256, "concurrent_users": 16}
    one, t1 = traced(body)
    eight, t8 = traced({**body, "runtime_settings": {"scheduler_steps": 8}})
    assert t1["srv_op_n"] == t8["srv_op_n"] == 16
    assert t8["srv_host_seq_s"] == pytest.approx(80e-6 / 8, rel=1e-12)
    assert t1["srv_round_op_s"] - t8["srv_round_op_s"] == pytest.approx((4e-3 + 16 * 80e-6) * 7 / 8, rel=1e-9)


def test_a_prefill_step_pays_the_runtimes_per_step_host_work_too():
    """vLLM V0's 4 ms bubble (RFC #6854: the sampled tokens copied back, turned into Python objects, the next step's
    inputs prepared, the scheduler run) comes with every step, a prompt's too - its first token is sampled and handed
    back the same way - and multi-step scheduling does not spread it (prefill steps run single-step). One user, a
    128-token prompt in one pass: exactly 4 ms more to the first token than with no bubble, with or without
    --num-scheduler-steps 8. Before, a second user raised throughput less than nothing: 1 -> 2 users of Qwen3 0.6B
    with one-token answers went 861 -> 767 tokens/s, the lone user's first token paying no step cost at all."""
    body = {**BASE, "runtime": "vllm-v0", "input_tokens": 128, "output_tokens": 1}
    with_bubble, t = traced(body)
    without, _ = traced({**body, "runtime_settings": {"decode_token_overhead_us": 0}})
    assert t["prefill_chunks"] == 1
    assert with_bubble["serving"]["ttft_ms"] - without["serving"]["ttft_ms"] == pytest.approx(4.0, abs=0.011)
    multi, _ = traced({**body, "runtime_settings": {"scheduler_steps": 8}})
    assert multi["serving"]["ttft_ms"] == pytest.approx(with_bubble["serving"]["ttft_ms"], abs=0.011)
    tiny = {**body, "llm_key": "qwen3-0.6b"}
    rates = [vramplan.estimate_inference({**tiny, "concurrent_users": u})["serving"]["output_throughput_tps"] for u in (1, 2, 4)]
    assert rates == sorted(rates)


def test_vllm_v0_decodes_contexts_past_max_seq_len_to_capture_eagerly():
    """V0 replays a decode step's graph only while every running sequence is within max_seq_len_to_capture (8192,
    arg_utils.py; model_runner.py _use_captured_graph), so 7,692 + 500 tokens replay and 7,693 + 500 launch their
    32 layers' kernels one by one: 32 x 47 us = 1.504 ms more a round. V1's piecewise graphs leave attention out of
    the capture and replay at any context."""
    assert rt("vllm-v0", "cuda_graph_max_context") == 8192 and rt("vllm-v0", "decode_ungraphed_layer_us") == 47
    body = {**BASE, "llm_key": "llama-3.1-8b-instruct", "runtime": "vllm-v0", "output_tokens": 500}
    _, within = traced({**body, "input_tokens": 7692})
    _, past = traced({**body, "input_tokens": 7693})
    assert within["decode_cuda_graphs"] == 1 and past["decode_cuda_graphs"] == 0
    assert past["srv_fixed_s"] - within["srv_fixed_s"] == pytest.approx(32 * 47e-6, rel=1e-9)
    _, v1 = traced({**body, "runtime": "vllm", "input_tokens": 32000})
    assert v1["decode_cuda_graphs"] == 1


def test_vllm_v0_runs_the_steps_that_carry_prompt_chunks_eagerly():
    """vLLM V0's _use_captured_graph needs a decode-only batch: the rounds that carry prompt chunks launch every layer's
    kernels from the host (47 us a layer, vllm-v0's decode_ungraphed_layer_us) although their decodes alone would replay a
    graph. Llama 3.1 8B on an H100, 64 clients with 2,000-token prompts: 32 layers x 47 us = 1.504 ms more in the share of
    rounds with prompts; the same request with mixed_steps_eager 0 lacks exactly that. vLLM V1 replays piecewise graphs in
    mixed steps (0); TensorRT-LLM's PyTorch executor runs them eagerly too (can_run_cuda_graph needs no context request), at
    the same borrowed 47 us a layer; its C++ runtime of 0.5-0.7 enqueues a TensorRT engine from native code (0)."""
    body = {"gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "quantization": "bf16", "runtime": "vllm-v0",
            "input_tokens": 2000, "output_tokens": 200, "concurrent_users": 64}
    _, eager = traced(body)
    _, graphed = traced({**body, "runtime_settings": {"mixed_steps_eager": 0}})
    assert rt("vllm-v0", "mixed_steps_eager") == 1 and rt("vllm-v0", "decode_ungraphed_layer_us") == 47
    assert eager["srv_eager_mix_s"] == pytest.approx(32 * 47e-6, rel=1e-12) and graphed["srv_eager_mix_s"] == 0
    assert eager["decode_cuda_graphs"] == 1 and 0 < eager["srv_mixed_share_op"] <= 1
    assert eager["srv_round_op_s"] - graphed["srv_round_op_s"] == pytest.approx(eager["srv_mixed_share_op"] * 32 * 47e-6, rel=1e-9)
    # --enforce-eager: every decode already pays the launches (in srv_fixed_s), the mixed rounds pay nothing more.
    _, forced = traced({**body, "runtime_settings": {"cuda_graph_max_seqs": 0}})
    _, forced_graphed = traced({**body, "runtime_settings": {"cuda_graph_max_seqs": 0, "mixed_steps_eager": 0}})
    assert forced["decode_cuda_graphs"] == 0 and forced["srv_round_op_s"] == pytest.approx(forced_graphed["srv_round_op_s"], rel=1e-12)
    v1 = traced({**body, "runtime": "vllm"})[1]
    assert rt("vllm", "mixed_steps_eager") == 0 and v1["srv_eager_mix_s"] == 0
    assert rt("tensorrt-llm", "mixed_steps_eager") == 1 and rt("tensorrt-llm", "decode_ungraphed_layer_us") == 47
    # (a deployment that pads its decode batches up to 128 captured sequences, enable_padding: the 64 replay a graph)
    _, trt = traced({**body, "runtime": "tensorrt-llm", "runtime_settings": {"cuda_graph_max_seqs": 128}})
    _, trt_graphed = traced({**body, "runtime": "tensorrt-llm", "runtime_settings": {"cuda_graph_max_seqs": 128, "mixed_steps_eager": 0}})
    assert trt["decode_cuda_graphs"] == 1 and trt["srv_eager_mix_s"] == pytest.approx(32 * 47e-6, rel=1e-12)
    assert trt["srv_round_op_s"] - trt_graphed["srv_round_op_s"] == pytest.approx(trt["srv_mixed_share_op"] * 32 * 47e-6, rel=1e-9)
    assert rt("tensorrt-llm-mmha", "decode_ungraphed_layer_us") == 0


@pytest.mark.parametrize("gpu, runtime, model, rate", [
    # TensorRT-LLM decodes DeepSeek's latent attention with FlashMLA on Hopper: BF16 WGMMAs, H200's 989.4 dense
    # 16-bit TFLOP/s, though its XQA attention multiplies an FP8 cache at the FP8 rate (1,978.9) ...
    ("h200", "tensorrt-llm", "deepseek-r1", 989.4),
    # ... a GQA model's XQA decode on the same GPU keeps the FP8 rate ...
    ("h200", "tensorrt-llm", "llama-3.1-8b-instruct", 1978.9),
    # ... Blackwell's MLA kernels multiply the FP8 cache in FP8 (B200: 4,500) ...
    ("b200", "tensorrt-llm", "deepseek-r1", 4500.0),
    # ... and vLLM's attention multiplies in 16 bits everywhere (its FP8 FlashAttention keeps BF16's speed)
    ("h200", "vllm", "deepseek-r1", 989.4),
])
def test_mla_decode_on_hopper_multiplies_in_16_bits_in_tensorrt_llm(gpu, runtime, model, rate):
    body = {"gpu_key": gpu, "llm_key": model, "quantization": "fp8", "kv_cache_quantization": "fp8", "runtime": runtime,
            "num_gpus": 8 if model == "deepseek-r1" else 1, "input_tokens": 1000, "output_tokens": 1000,
            "concurrent_users": 64}
    v = trace_values(vramplan.estimate_inference({**body, "trace": True}))
    assert v["decode_attn_tflops"] == rate
    # a round's attention arithmetic at that rate: 64 users' 1,000-2,000-token contexts, FLOPs / (rate x 0.6 efficiency)
    assert v["decode_compute_s"] == pytest.approx(
        (v["decode_gemm_flops_per_token"] / v["decode_gemm_tflops"] + v["decode_attn_flops_per_token"] / rate)
        * v["decode_mb_seqs"] / (1e12 * v["eff_prefill_flops"]), rel=1e-12)
