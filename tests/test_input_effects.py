"""Each input moves the result the way the physics does, pinned with hand-computed values.

Llama 3 8B (llama-3-8b-instruct): 32 layers, hidden 4096, 32 query heads, 8 KV heads of 128,
FFN 14336, vocabulary 128256, untied head. Parameters by role:
  token_embd = output = 128256 x 4096 = 525,336,576
  attn_q = attn_output = 32 x 4096 x 4096 = 536,870,912
  attn_k = attn_v = 32 x 4096 x 1024 = 134,217,728
  ffn_gate = ffn_up = ffn_down = 32 x 4096 x 14336 = 1,879,048,192
  norms = (2 x 32 + 1) x 4096 = 266,240                       total 8,030,261,248
"""

from __future__ import annotations

import pytest

EMBD = 128256 * 4096
Q = 32 * 4096 * 4096
K = 32 * 4096 * 1024
FFN = 32 * 4096 * 14336
NORM = 65 * 4096
LAYER_PARAMS = 2 * Q + 2 * K + 3 * FFN + NORM
KV_PER_TOKEN = 2 * 8 * 128 * 2 * 32  # K and V, 8 heads x 128, fp16, 32 layers = 131,072 bytes


def test_param_roles_add_up_to_the_published_count():
    assert LAYER_PARAMS + 2 * EMBD == 8_030_261_248


# -- inference ------------------------------------------------------------------------------------

def test_kv_cache_scales_with_tokens_sequences_and_kv_precision(infer):
    _, t = infer(runtime="transformers", seq_length=2048)
    assert t["kv_cache_gpu_bytes"] == KV_PER_TOKEN * 2048 == 268_435_456  # 256 MiB
    _, t8 = infer(runtime="transformers", seq_length=2048, kv_cache_quantization="fp8")
    assert t8["kv_cache_gpu_bytes"] == 268_435_456 / 2
    _, tb = infer(runtime="transformers", seq_length=2048, batch_size=4, concurrent_users=2)
    assert tb["kv_cache_gpu_bytes"] == 8 * 268_435_456


def test_fp32_weights_keep_an_fp32_cache_unless_the_request_says_otherwise(infer):
    # transformers' cache holds the keys and values its fp32 projections compute: 4 bytes, twice the fp16 default
    out, t = infer(runtime="transformers", quantization="fp32", seq_length=2048)
    assert t["kv_cache_gpu_bytes"] == 2 * KV_PER_TOKEN * 2048 == 536_870_912
    assert any(a.startswith("KV cache: fp32, the weights' dtype") for a in out["assumptions"])
    _, t = infer(runtime="transformers", quantization="fp32", seq_length=2048, kv_cache_quantization="fp16")
    assert t["kv_cache_gpu_bytes"] == KV_PER_TOKEN * 2048  # asked for: kept
    _, t = infer(runtime="llama.cpp", quantization="fp32", seq_length=2048)
    assert t["kv_cache_gpu_bytes"] == KV_PER_TOKEN * 2048  # llama.cpp's cache type is f16 whatever the weights


def test_kv_cache_is_padded_to_the_runtimes_block(infer):
    _, t = infer(runtime="llama.cpp", quantization="q4_k_m", seq_length=1000)
    assert t["kv_cache_gpu_bytes"] == KV_PER_TOKEN * 1024  # llama.cpp pads n_ctx to 256 cells
    _, t = infer(runtime="transformers", seq_length=1000)
    assert t["kv_cache_gpu_bytes"] == KV_PER_TOKEN * 1000


def test_prefix_caching_stores_the_shared_prefix_once(infer):
    # 4 users, half of each prompt shared: 4 x 0.5 private halves + one shared half = 2.5 sequences.
    _, t = infer(runtime="transformers", seq_length=2048, concurrent_users=4, enable_prefix_caching=True,
                 shared_prefix_ratio=0.5)
    assert t["kv_cache_gpu_bytes"] == pytest.approx(2.5 * KV_PER_TOKEN * 2048)
    _, t_off = infer(runtime="transformers", seq_length=2048, concurrent_users=4, shared_prefix_ratio=0.5)
    assert t_off["kv_cache_gpu_bytes"] == 4 * KV_PER_TOKEN * 2048


def test_weights_in_bf16_and_q4_k_m(infer):
    _, t = infer(runtime="transformers", quantization="bf16")
    assert t["weights_gpu_bytes"] == 8_030_261_248 * 2
    _, t = infer(quantization="q4_k_m")  # llama.cpp: token_embd stays on the host
    layer_bits = (Q * 4.5 + K * 4.5 + K * 5.53125 + Q * 4.5 + FFN * 4.5 * 2 + FFN * 5.53125 + NORM * 32)
    assert t["weights_gpu_bytes"] == pytest.approx((layer_bits + EMBD * 6.5625) / 8)
    assert t["weights_file_bytes"] / 2**30 == pytest.approx(4.58, abs=0.005)  # llama.cpp prints 4.58 GiB


def test_tensor_parallel_splits_weights_and_kv_heads(infer):
    _, t1 = infer(runtime="transformers", seq_length=2048)
    _, t2 = infer(runtime="transformers", seq_length=2048, num_gpus=2, inference_parallelism="tensor")
    assert t2["weights_gpu_bytes"] == t1["weights_gpu_bytes"] / 2
    assert t2["kv_cache_gpu_bytes"] == t1["kv_cache_gpu_bytes"] / 2  # 4 of 8 KV heads each
    _, t16 = infer(runtime="transformers", seq_length=2048, num_gpus=16, inference_parallelism="tensor")
    assert t16["kv_cache_gpu_bytes"] == t1["kv_cache_gpu_bytes"] / 8  # 8 KV heads over 16 GPUs: replicated, 1 each


def test_pipeline_splits_layers(infer):
    out, t = infer(runtime="transformers", num_gpus=2, inference_parallelism="pipeline")
    layer_bytes = LAYER_PARAMS * 2
    # 16 layers per stage; the busiest stage holds the embedding (first) or the head (last), equal here.
    assert t["weights_gpu_bytes"] == pytest.approx(layer_bytes / 2 + EMBD * 2)
    assert len(out["per_gpu"]) == 2


def test_offloading_moves_exactly_the_offloaded_layers(infer):
    out0, t0 = infer(runtime="transformers")
    out, t = infer(runtime="transformers", enable_offloading=True, num_offload_layers=8)
    moved = LAYER_PARAMS * 2 * 8 / 32
    assert t0["weights_gpu_bytes"] - t["weights_gpu_bytes"] == pytest.approx(moved)
    assert out["offloaded_memory"] == round(moved / 2**30, 2)
    _, tp = infer(runtime="transformers", enable_offloading=True, percentage_offload=25)
    assert tp["weights_gpu_bytes"] == t["weights_gpu_bytes"]
    assert out["estimated_system_ram_required"] > out0["estimated_system_ram_required"]


def test_offloading_the_kv_cache(infer):
    out, t = infer(runtime="transformers", seq_length=8192, enable_offloading=True, offload_kv_cache=True)
    assert t["kv_cache_gpu_bytes"] == 0
    assert "KV Cache" not in out["memory_details"] or out["memory_details"]["KV Cache"] == 0
    assert out["offloaded_memory"] == round(KV_PER_TOKEN * 8192 / 2**30, 2)


def test_eager_attention_materializes_the_scores(infer):
    _, t = infer(runtime="transformers", seq_length=4096, optimization_config={"flash_attention": False})
    assert t["attn_scores_bytes"] == 4096 * 4096 * 32 * t["rt_eager_score_bytes"] if "rt_eager_score_bytes" in t else True
    _, tf = infer(runtime="transformers", seq_length=4096)
    assert tf["attn_scores_bytes"] == 0
    assert t["activations_gpu_bytes"] > tf["activations_gpu_bytes"]


def test_more_tokens_batch_or_users_never_need_less_memory(infer):
    last = 0
    for seq in (512, 2048, 8192, 32768):
        out, _ = infer(seq_length=seq)
        assert out["vram_usage"] >= last
        last = out["vram_usage"]


# -- fine-tuning -----------------------------------------------------------------------------------

LORA_ALL_LINEAR_R16 = 16 * 32 * (8192 + 5120 + 5120 + 8192 + 3 * 18432)  # r x (in + out) per module = 41,943,040


def test_lora_rank_and_targets_size_the_adapters(train):
    _, t = train(finetuning_method="lora", lora_rank=16)
    assert t["lora_params"] == LORA_ALL_LINEAR_R16 == 41_943_040
    assert t["lora_adapter_bytes"] == 4 * 41_943_040  # fp32 adapters
    _, t32 = train(finetuning_method="lora", lora_rank=32)
    assert t32["lora_params"] == 2 * 41_943_040
    _, tqv = train(finetuning_method="lora", lora_rank=16, lora_target_modules=["q_proj", "v_proj"])
    assert tqv["lora_params"] == 16 * 32 * ((4096 + 4096) + (4096 + 1024))


def test_full_precision_choices(train):
    _, mixed = train(finetuning_method="full", fine_tuning_quantization="fp32")
    _, pure = train(finetuning_method="full", fine_tuning_quantization="bf16")
    P = 8_030_261_248
    assert mixed["weights_gpu_bytes"] == 4 * P and pure["weights_gpu_bytes"] == 2 * P
    assert mixed["optimizer_states_total_bytes"] == 2 * 4 * P  # two fp32 moments
    assert pure["optimizer_states_total_bytes"] == 2 * 2 * P  # two bf16 moments
    assert mixed["grads_bytes"] == 4 * P and pure["grads_bytes"] == 2 * P


def test_8bit_and_paged_optimizers(train):
    P = 8_030_261_248
    # bitsandbytes 8-bit states: one byte per element + a 4-byte absmax per 256 elements.
    _, t8 = train(finetuning_method="full", fine_tuning_quantization="bf16", optimizer="adamw_8bit")
    assert t8["optimizer_states_total_bytes"] == pytest.approx(2 * P * (1 + 4 / 256))
    out, tp = train(finetuning_method="full", fine_tuning_quantization="bf16",
                    optimization_config={"use_paged_optimizer": True, "use_8bit_optimizer": True})
    assert {"use_8bit_optimizer", "use_paged_optimizer"} <= set(out["active_optimizations"])
    assert tp["optimizer_offloaded_bytes"] == pytest.approx(2 * P * (1 + 4 / 256))
    # On the GPU only the largest tensor's moments are paged in at a time: the embedding table.
    assert tp["optimizer_states_gpu_bytes"] == pytest.approx(2 * EMBD * (1 + 4 / 256))
    assert out["offloaded_memory"] >= round(tp["optimizer_offloaded_bytes"] / 2**30, 2) - 0.01


@pytest.mark.parametrize("stage,shard", [(0, (1, 1, 1)), (1, (4, 1, 1)), (2, (4, 4, 1)), (3, (4, 4, 4))])
def test_zero_stages_shard_state_across_gpus(train, stage, shard):
    P = 8_030_261_248
    _, t = train(finetuning_method="full", fine_tuning_quantization="bf16", num_gpus=4, batch_size=4,
                 optimization_config={"zero_stage": stage})
    optim, grads, weights = shard
    assert t["optimizer_states_gpu_bytes"] == pytest.approx(2 * 2 * P / optim)
    assert t["grads_bytes"] == pytest.approx(2 * P / grads)
    assert t["weights_gpu_bytes"] == pytest.approx(2 * P / weights)


def test_qlora_stores_nf4_and_upcasts_embeddings(train):
    _, t = train(finetuning_method="qlora")
    linear = 2 * Q + 2 * K + 3 * FFN
    # NF4 with double quantization: 4 + 8/64 + 32/(64 x 256) bits; embedding, head and norms upcast to fp32.
    expected = linear * (4 + 8 / 64 + 32 / (64 * 256)) / 8 + (2 * EMBD + NORM) * 4
    assert t["weights_gpu_bytes"] == pytest.approx(expected)


def test_gradient_checkpointing_keeps_one_input_per_layer(train):
    _, plain = train(finetuning_method="lora", batch_size=2, seq_length=1024,
                     optimization_config={"gradient_checkpointing": False})
    _, gc = train(finetuning_method="lora", batch_size=2, seq_length=1024,
                  optimization_config={"gradient_checkpointing": True})
    tokens = 2 * 1024
    # Checkpoints: one bf16 hidden state per layer and token; one layer at a time is recomputed in
    # backward: its saved tensors (a 32nd of the plain run's) plus the gradients of gate, up and
    # act(gate) (3 x 14336 bf16 per token).
    assert gc["checkpoint_bytes"] == tokens * 32 * 4096 * 2
    assert gc["recompute_bytes"] == pytest.approx(plain["train_activation_bytes"] / 32 + tokens * 3 * 2 * 14336)
    assert gc["train_activation_bytes"] < plain["train_activation_bytes"] / 10


def test_micro_batch_from_accumulation_and_data_parallel_gpus(train):
    _, t = train(batch_size=32, gradient_accumulation_steps=4, num_gpus=2, seq_length=1000)
    assert t["train_tokens"] == 32 / (4 * 2) * 1000


def test_training_time_follows_tokens(train):
    out, _ = train(num_samples=100000, tokens_per_sample=512, num_epochs=2)
    assert out["total_tokens"] == 100000 * 512 * 2
    assert out["total_training_time_hours"] == pytest.approx(out["total_tokens"] / out["training_tps"] / 3600, rel=1e-2)


def test_offloading_without_an_amount_offloads_the_fewest_layers_that_fit():
    import vramplan

    body = {"gpu_key": "rtx_4090", "llm_key": "llama-3.1-70b-instruct", "quantization": "q4_k_m", "seq_length": 4096}
    assert vramplan.estimate_inference(body)["memory_status"] == "insufficient"
    out = vramplan.estimate_inference({**body, "enable_offloading": True})
    n = int(out["assumptions"][0].split("offloading: ")[1].split(" of ")[0])
    fits = vramplan.estimate_inference({**body, "enable_offloading": True, "num_offload_layers": n})
    short = vramplan.estimate_inference({**body, "enable_offloading": True, "num_offload_layers": n - 1})
    # suggestions answer the request as given (auto offloading may offload more for headroom; a fixed count not)
    same = lambda o: {k: v for k, v in o.items() if k not in ("assumptions", "suggestions")}  # noqa: E731
    assert same(out) == same(fits) and fits["memory_status"] != "insufficient"
    assert short["memory_status"] == "insufficient"
    # Small enough to fit without offloading: nothing moves.
    small = vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct",
                                         "quantization": "q4_k_m", "enable_offloading": True})
    assert small["offloaded_memory"] == 0
