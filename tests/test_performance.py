"""Speed, time, power and multi-GPU figures: hand-computed expectations through the public API.

Runtime constants are read from the runtime catalog (they are calibrated and may be re-tuned); the
arithmetic around them is written out here by hand, so a changed formula fails these tests.
"""

from __future__ import annotations

import math

import pytest

import vramplan
from vramplan.catalog import get_catalog

GIB = 2 ** 30
CAT = get_catalog()


def rt(runtime: str, name: str) -> float:
    return float(CAT.runtimes.get(runtime).data["constants"][name]["value"])


def traced(body: dict) -> tuple[dict, dict]:
    out = vramplan.estimate_inference({**body, "trace": True})
    return out, {step["id"]: step["value"] for step in out["trace"]}


# Llama 3 8B shapes: 32 layers, hidden 4096, 32 q heads / 8 KV heads of 128, FFN 14336, vocab 128256.
L, H, KV, FF, V = 32, 4096, 1024, 14336, 128256
Q4KM_LAYER_BYTES = L * (
    (H * H + H * KV + H * H) * 4.5          # q, k, o in Q4_K
    + H * KV * 5.53125                      # v: Q6_K on half the layers
    + 2 * H * FF * 4.5 + FF * H * 5.53125   # gate, up Q4_K; down half Q6_K
    + 2 * H * 32                            # two F32 norms
) / 8 + H * 32 / 8                          # the final norm counts with the layers
Q4KM_HEAD_BYTES = V * H * 6.5625 / 8        # output.weight in Q6_K


def test_decode_ms_per_token_is_bytes_over_bandwidth_plus_layer_overhead():
    """Llama 3 8B Q4_K_M, RTX 4090 (1008 GB/s), llama.cpp, a 256-token prompt and 512 new tokens, one sequence."""
    out, t = traced({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b", "quantization": "q4_k_m",
                     "runtime": "llama.cpp", "input_tokens": 256, "output_tokens": 512})
    weights = Q4KM_LAYER_BYTES + Q4KM_HEAD_BYTES          # token_embd stays on the host
    # K+V, fp16, at the mean context of a decoding token: 256 + 512 / 2 = 512 cells = 64 MiB
    kv = 2 * KV * 2 * L * 512
    assert t["decode_weight_bytes"] == pytest.approx(weights, rel=1e-9)
    assert kv == 64 * 2 ** 20 and t["decode_kv_read_bytes"] == kv
    eff = rt("llama.cpp", "decode_bw_eff_nvidia_consumer")
    activations = L * (H + FF) * rt("llama.cpp", "elementwise_traffic_bytes")   # one token's non-GEMM kernels
    memory_s = (weights + kv + activations) / (1008e9 * eff)
    # the 4090 (compute capability 8.9) replays the step as a CUDA graph: no per-kernel launch penalty,
    # plus the per-token host work (graph build, submission)
    assert t["decode_cuda_graphs"] == 1
    overhead_s = (L * rt("llama.cpp", "decode_layer_overhead_us") + rt("llama.cpp", "decode_token_overhead_us")) * 1e-6
    dequant_s = weights * 8 / 4.5 * rt("llama.cpp", "dequant_flops_per_weight") / 82.58e12
    assert dequant_s < memory_s                            # dp4a unpacking hides behind the reads on NVIDIA
    ms = (memory_s + overhead_s) * 1000
    assert out["ms_per_token"] == pytest.approx(ms, abs=0.006)
    assert out["estimated_latency_tps"] == pytest.approx(1000 / ms, abs=0.06)
    # one user, one sequence: it streams at the decode speed; over the whole request (prefill, then 511 more
    # tokens) it completes 512 tokens every TTFT + 511 x ITL
    assert out["per_user_tps"] == out["estimated_latency_tps"]
    e2e_s = (out["tftt"] + 511 * out["ms_per_token"]) / 1000
    assert out["estimated_throughput_tps"] == pytest.approx(512 / e2e_s, rel=2e-3)


def test_apple_k_quant_decode_is_bound_by_the_alu_unpacking():
    """M1 Max: 4.62 GB of Q4_K_M would stream in 15 ms; unpacking 8.2e9 weights x 32 FLOP on 10.62 TFLOP/s takes longer."""
    _, t = traced({"gpu_key": "apple_m1_max_64", "llm_key": "llama-3-8b", "quantization": "q4_k_m",
                   "runtime": "llama.cpp", "seq_length": 512})
    weights = Q4KM_LAYER_BYTES + Q4KM_HEAD_BYTES
    dequant_s = weights * 8 / 4.5 * rt("llama.cpp", "dequant_flops_per_weight_apple") / 10.62e12
    assert t["decode_dequant_s"] == pytest.approx(dequant_s, rel=1e-9)
    assert t["decode_dequant_s"] > t["decode_memory_s"]
    fp16 = traced({"gpu_key": "apple_m1_max_64", "llm_key": "llama-3-8b", "quantization": "fp16",
                   "runtime": "llama.cpp", "seq_length": 512})[1]
    assert fp16["decode_dequant_s"] == 0                   # float weights need no unpacking


def test_tensor_parallel_adds_two_all_reduces_per_layer_from_the_link():
    """Llama 3 8B fp16, vLLM, 2 GPUs: per layer two all-reduces of 4096 x 2 bytes per sequence - over PCIe a NCCL ring
    (2 x 1 hop of 5.7 us, the link's bandwidth); over NVLink vLLM's custom kernel (5 us, half the link's bandwidth)."""
    base = {"gpu_key": "h100_80", "llm_key": "llama-3-8b", "quantization": "fp16", "runtime": "vllm",
            "num_gpus": 2, "inference_parallelism": "tensor", "seq_length": 2048}
    for link, latency, bw in (("nvlink_gen4", 5e-6, 450.0 * 0.5), ("pcie4", 2 * 1 * 5.7e-6, 31.5)):
        _, t = traced({**base, "interconnect_type": link})
        one = latency + 2 * 1 / 2 * 4096 * 2 / (bw * 1e9)
        assert t["allreduce_s"] == pytest.approx(one, rel=1e-9)
        assert t["decode_tp_comm_s"] == pytest.approx(2 * L * one, rel=1e-9)
    # weights and KV heads are split: each GPU reads half the weights
    _, one_gpu = traced({**base, "num_gpus": 1})
    _, two = traced({**base, "interconnect_type": "nvlink_gen4"})
    assert two["decode_weight_bytes"] == pytest.approx(one_gpu["decode_weight_bytes"] / 2, rel=1e-9)
    assert two["decode_kv_read_bytes"] == pytest.approx(one_gpu["decode_kv_read_bytes"] / 2, rel=1e-9)


def test_kv_heads_are_replicated_when_fewer_than_gpus():
    """8 KV heads on 16 tensor-parallel GPUs: each holds (and reads) one head = 1/8 of the cache, not 1/16."""
    _, one = traced({"gpu_key": "h100_80", "llm_key": "llama-3.1-405b", "quantization": "fp8", "runtime": "vllm",
                     "num_gpus": 8, "inference_parallelism": "tensor", "seq_length": 4096})
    _, sixteen = traced({"gpu_key": "h100_80", "llm_key": "llama-3.1-405b", "quantization": "fp8", "runtime": "vllm",
                         "num_gpus": 16, "inference_parallelism": "tensor", "seq_length": 4096})
    assert sixteen["decode_kv_read_bytes"] == pytest.approx(one["decode_kv_read_bytes"], rel=1e-9)


def test_pipeline_per_gpu_memory_follows_each_stage_layers_and_ends():
    """Llama 3 8B fp16 over 4 stages of 8 layers: the first holds the embedding, the last the head (1.05 GB each)."""
    out = vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b", "quantization": "fp16",
                                       "num_gpus": 4, "inference_parallelism": "pipeline", "seq_length": 4096})
    stages = out["per_gpu"]
    assert [s["layers"] for s in stages] == [8, 8, 8, 8]
    end = V * H * 2 / GIB                                  # 0.978 GiB
    assert stages[0]["vram_usage"] == out["vram_usage"] == stages[3]["vram_usage"]
    for middle in stages[1:3]:
        assert middle["vram_usage"] == pytest.approx(out["vram_usage"] - end, abs=0.011)


def test_pipeline_latency_adds_stages_and_hops():
    """One sequence through 4 stages: 4 stage times + 3 hops; each GPU works a quarter of the round."""
    _, t = traced({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b", "quantization": "fp16", "runtime": "vllm",
                   "num_gpus": 4, "inference_parallelism": "pipeline", "interconnect_type": "pcie4", "seq_length": 2048})
    hop = 5.7e-6 + 4096 * 2 / 31.5e9
    assert t["decode_hop_s"] == pytest.approx(hop, rel=1e-9)
    assert t["ms_per_token"] == pytest.approx((4 * t["decode_stage_s"] + 3 * hop) * 1000, rel=1e-9)
    assert t["gpu_busy_fraction"] == pytest.approx(t["decode_stage_s"] / (4 * t["decode_stage_s"] + 3 * hop), rel=1e-9)


def test_offloaded_layers_stream_over_pcie_or_run_on_the_cpu():
    """8 of Llama 3 8B's 32 fp16 layers on the host: 8 x 436 MB cross PCIe 4.0 (31.5 GB/s) every token."""
    layer_bytes = (2 * H * H + 2 * H * KV + 3 * H * FF + 2 * H + H / 32) * 2   # a 32nd of the final norm each
    body = {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b", "quantization": "fp16", "seq_length": 2048,
            "enable_offloading": True, "offload_target": "cpu_ram", "num_offload_layers": 8}
    out, t = traced({**body, "runtime": "transformers"})
    assert t["offloaded_weights_bytes"] == pytest.approx(8 * layer_bytes, rel=1e-9)
    assert t["decode_offload_s"] == pytest.approx(8 * layer_bytes / 31.5e9, rel=1e-9)
    assert out["ms_per_token"] > 8 * layer_bytes / 31.5e9 * 1000    # the slower path bounds the token
    assert out["offloaded_memory"] == pytest.approx(8 * layer_bytes / GIB, abs=0.01)
    assert out["estimated_system_ram_required"] * GIB >= 8 * layer_bytes
    # llama.cpp computes those layers on the CPU from host memory (weights + their KV)
    _, c = traced({**body, "runtime": "llama.cpp"})
    cpu = (c["offloaded_weights_bytes"] + c["offloaded_kv_bytes"]) / (rt("llama.cpp", "cpu_memory_bw_gb_s") * 1e9)
    assert c["decode_offload_s"] == pytest.approx(cpu, rel=1e-9)
    # NVMe is slower than RAM
    nvme = vramplan.estimate_inference({**body, "runtime": "transformers", "offload_target": "nvme"})
    assert nvme["ms_per_token"] > out["ms_per_token"]


def test_moe_decode_reads_only_routed_experts():
    """Mixtral 8x7B, one sequence: 2 of 8 experts per layer, so 6/8 of the expert bytes are not read."""
    _, t = traced({"gpu_key": "h200", "llm_key": "mixtral-8x7b", "quantization": "bf16", "runtime": "vllm",
                   "seq_length": 2048})
    experts = 32 * 8 * 3 * 4096 * 14336 * 2
    assert t["expert_coverage"] == 0.25
    assert t["decode_layer_bytes"] == pytest.approx(t["layer_weights_bytes"] - 0.75 * experts, rel=1e-9)
    # a batch of 16 touches 1 - (6/8)^16 = 99% of the experts
    _, b = traced({"gpu_key": "h200", "llm_key": "mixtral-8x7b", "quantization": "bf16", "runtime": "vllm",
                   "seq_length": 2048, "batch_size": 16})
    assert b["expert_coverage"] == pytest.approx(1 - 0.75 ** 16, rel=1e-12)


def test_more_users_raise_throughput_and_lower_per_user_speed_until_compute_bound():
    base = {"gpu_key": "h100_80", "llm_key": "llama-3-8b", "quantization": "fp16", "runtime": "vllm",
            "input_tokens": 512, "output_tokens": 512, "enable_continuous_batching": True}
    runs = [vramplan.estimate_inference({**base, "concurrent_users": u}) for u in (1, 4, 16, 64, 256)]
    thr = [r["estimated_throughput_tps"] for r in runs]
    per = [r["per_user_tps"] for r in runs]
    assert thr == sorted(thr) and len(set(thr)) == len(thr)
    assert per == sorted(per, reverse=True) and len(set(per)) == len(per)
    assert thr[1] > 3 * thr[0]                       # memory-bound: 4 users share the weight reads
    _, big = traced({**base, "concurrent_users": 256})
    assert big["decode_compute_s"] > big["decode_weight_bytes"] / (3350e9 * rt("vllm", "decode_bw_eff"))
    # a static batch (transformers generate) prefills all 16 prompts, then decodes 511 rounds of 16
    tf = {**base, "runtime": "transformers", "concurrent_users": 16}
    out, t = traced({**tf, "enable_continuous_batching": False})
    assert out["serving"]["load"] == "static_batch" and t["prefill_seqs"] == 16
    batch_s = t["prefill_ms"] / 1000 + 511 * t["srv_round_op_s"]
    assert out["estimated_throughput_tps"] == pytest.approx(16 * 512 / batch_s, rel=2e-3)
    assert out["tftt"] == pytest.approx(t["prefill_ms"], rel=2e-3)


def test_prefill_flops_and_prefix_caching():
    """TFTT from FLOPs: prefix caching skips the shared half of the prompt."""
    base = {"gpu_key": "h100_80", "llm_key": "llama-3-8b", "quantization": "fp16", "runtime": "vllm", "input_tokens": 8192,
            "output_tokens": 1}
    full, t = traced(base)
    matmul = t["matmul_params_active"]
    assert matmul == pytest.approx(8030261248 - V * H, rel=1e-9)          # the embedding lookup is no matmul
    assert t["prefill_gemm_flops"] == pytest.approx(2 * (matmul - V * H) * 8192 + 2 * V * H, rel=1e-9)
    assert t["prefill_attn_flops"] == pytest.approx(2 * 4096 * 32 * 8192 ** 2, rel=1e-9)
    cached = vramplan.estimate_inference({**base, "enable_prefix_caching": True, "shared_prefix_ratio": 0.5})
    assert cached["tftt"] < 0.6 * full["tftt"]


def test_power_lower_for_memory_bound_decode_than_compute_bound():
    base = {"gpu_key": "h100_80", "llm_key": "llama-3-8b", "quantization": "fp16", "runtime": "vllm", "seq_length": 1024}
    decode = vramplan.estimate_inference(base)
    busy = vramplan.estimate_inference({**base, "batch_size": 256})
    assert decode["estimated_power_draw"] < busy["estimated_power_draw"] <= 700
    two = vramplan.estimate_inference({**base, "num_gpus": 2, "inference_parallelism": "tensor"})
    assert two["estimated_power_draw"] > decode["estimated_power_draw"]      # summed over GPUs


def test_training_time_is_total_tokens_over_tokens_per_second():
    out = vramplan.estimate_finetuning({"gpu_key": "h100_80", "llm_key": "llama-3-8b", "finetuning_method": "lora",
                                        "batch_size": 8, "gradient_accumulation_steps": 2, "seq_length": 2048,
                                        "num_samples": 10000, "tokens_per_sample": 1024, "num_epochs": 2})
    assert out["total_tokens"] == 10000 * 1024 * 2
    assert out["total_training_time_hours"] == pytest.approx(out["total_tokens"] / out["training_tps"] / 3600, abs=0.006)
    assert out["samples_per_second"] == pytest.approx(out["training_tps"] / 1024, rel=1e-3)
    assert out["steps_per_second"] == pytest.approx(out["samples_per_second"] / 8, rel=1e-3)


def test_training_flops_full_lora_checkpointing():
    """6 x P for full, 4 x P + 6 x adapters for LoRA, checkpointing recomputes the layers (not the head)."""
    tok = CAT.formulas.evaluate_one
    args = dict(matmul_params_active=7.5e9, head_params=0.5e9, n_layers=32, n_layers_full=32, attn_full_layer_scale=1,
                q_dim=4096, seq=1024)
    full = tok("train_flops_per_token", dict(args, method_full=1, lora_params=0, gradient_checkpointing=0))
    lora = tok("train_flops_per_token", dict(args, method_full=0, lora_params=4e7, gradient_checkpointing=0))
    gc = tok("train_flops_per_token", dict(args, method_full=0, lora_params=4e7, gradient_checkpointing=1))
    attn = 6 * 32 * 4096 * 1024
    assert full == 6 * 7.5e9 + attn
    assert lora == 4 * 7.5e9 + 6 * 4e7 + attn
    assert gc == lora + 2 * 7.0e9 + attn / 3
    # 8 of the 32 layers global with heads twice as wide (Gemma 4): their attention counts twice - 6 x 40 x 4096 x 1024
    wide = tok("train_flops_per_token", dict(args, n_layers_full=8, attn_full_layer_scale=2, method_full=1, lora_params=0,
                                             gradient_checkpointing=0))
    assert wide == 6 * 7.5e9 + 6 * (32 + 8) * 4096 * 1024


def test_qlora_slower_than_lora_and_fused_kernels_faster():
    base = {"gpu_key": "h200", "llm_key": "llama-3-8b", "batch_size": 4, "seq_length": 1024,
            "optimization_config": {"gradient_checkpointing": True}}
    lora = vramplan.estimate_finetuning({**base, "finetuning_method": "lora"})["training_tps"]
    qlora = vramplan.estimate_finetuning({**base, "finetuning_method": "qlora"})["training_tps"]
    fused = vramplan.estimate_finetuning({**base, "finetuning_method": "lora",
                                          "optimization_config": {"gradient_checkpointing": True, "use_fused_kernels": True}})
    eager = vramplan.estimate_finetuning({**base, "finetuning_method": "lora",
                                          "optimization_config": {"gradient_checkpointing": True, "flash_attention": False}})
    assert 0.4 < qlora / lora < 0.75                 # calibration: 3558 / 6382 = 0.56 on an H200
    assert fused["training_tps"] > lora > eager["training_tps"]


def test_data_parallel_scales_with_exposed_gradient_traffic():
    base = {"gpu_key": "h100_80", "llm_key": "llama-3-8b", "finetuning_method": "full", "batch_size": 8,
            "seq_length": 2048, "optimization_config": {"gradient_checkpointing": True, "zero_stage": 3}}
    one = vramplan.estimate_finetuning({**base, "batch_size": 1})["training_tps"]
    nv = vramplan.estimate_finetuning({**base, "num_gpus": 8, "interconnect_type": "nvlink_gen4"})["training_tps"]
    pcie = vramplan.estimate_finetuning({**base, "num_gpus": 8, "interconnect_type": "pcie4"})["training_tps"]
    assert pcie < nv < 8 * one
    assert nv > 6 * one


def test_transformers_dynamic_cache_is_copied_every_decode_step():
    """transformers' DynamicLayer.update rebuilds each layer's keys and values with torch.cat every step (read + write of
    the whole cache besides attention's read); its QuantizedLayer dequantizes the whole cache to bf16 first. A paged
    cache (vLLM) writes the new token in place. Llama 3 8B bf16 on an H100, 8 sequences of 1792 + 256 tokens."""
    base = {"gpu_key": "h100_80", "llm_key": "llama-3-8b", "quantization": "bf16", "batch_size": 8,
            "input_tokens": 1792, "output_tokens": 256}
    kv16 = 2 * KV * 2 * L * (1792 + 256 // 2)             # keys and values at the mean context: 251,658,240 bytes
    assert kv16 == 251_658_240
    _, t = traced({**base, "runtime": "transformers"})
    assert t["decode_kv_seq_bytes"] == pytest.approx(kv16, rel=1e-12)
    assert t["decode_kv_copy_seq_bytes"] == pytest.approx(2 * kv16, rel=1e-12)
    assert t["decode_kv_read_bytes"] == pytest.approx(8 * 3 * kv16, rel=1e-12)

    # a 4-bit cache (4.5 bits with its scales) is read once at 4.5 bits; its bf16 copy is written, read and written by
    # the concatenation and read by attention
    _, q = traced({**base, "runtime": "transformers", "kv_cache_quantization": "int4"})
    assert q["decode_kv_seq_bytes"] == pytest.approx(kv16 * 4.5 / 16, rel=1e-12)
    assert q["decode_kv_copy_seq_bytes"] == pytest.approx(4 * kv16, rel=1e-12)
    assert q["decode_kv_read_bytes"] == pytest.approx(8 * (kv16 * 4.5 / 16 + 4 * kv16), rel=1e-12)

    _, v = traced({**base, "runtime": "vllm"})
    assert v["decode_kv_copy_seq_bytes"] == 0
    assert v["decode_kv_read_bytes"] == pytest.approx(8 * kv16, rel=1e-12)


def test_a_quantized_transformers_cache_decodes_slower_than_a_16_bit_one():
    """The quantized cache saves memory and costs speed (transformers' KV cache docs), where the bytes it moves grow:
    at 32 sequences of 4,096 tokens on an H100 the dequantized copy outweighs the 4-bit read (the docs' cache table rates
    the quantized cache's latency "Low", the dynamic cache's "Mid")."""
    body = {"gpu_key": "h100_80", "llm_key": "llama-3-8b", "quantization": "bf16", "batch_size": 32, "seq_length": 4096}
    bf16 = vramplan.estimate_inference(body)
    int4 = vramplan.estimate_inference({**body, "kv_cache_quantization": "int4"})
    assert int4["vram_usage"] < bf16["vram_usage"]
    assert int4["ms_per_token"] > bf16["ms_per_token"]
