"""Memory mechanisms pinned with numbers worked out by hand (docs/FIDELITY.md says where each comes from).

Each test states the mechanism, computes the figure in its comment from the architecture and the
runtime's rule, and checks the engine's traced formula (``trace: true``) against it.
"""

from __future__ import annotations

import pytest

import vramplan
from vramplan.estimate import trace_values as values
from vramplan.errors import RequestError

from model_configs import LLAMA32_1B, MIXTRAL, PHI3_MINI

LLAMA3_8B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256,
             "max_position_embeddings": 8192, "tie_word_embeddings": False}
GEMMA2_9B = {"model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336, "num_hidden_layers": 42,
             "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 256000,
             "max_position_embeddings": 8192, "tie_word_embeddings": True, "sliding_window": 4096,
             "query_pre_attn_scalar": 256,
             "layer_types": ["sliding_attention", "full_attention"] * 21}


def infer(config: dict, **kw) -> dict[str, float]:
    body = {"gpu_key": "h200", "llm_key": "custom", "custom_model": config, "trace": True, **kw}
    return values(vramplan.estimate_inference(body))


def train(config: dict, **kw) -> dict[str, float]:
    """Fine-tuning estimate; checkpointing off unless the test turns it on (the calibration runs set it)."""
    kw.setdefault("optimization_config", {"gradient_checkpointing": False})
    body = {"gpu_key": "h200", "llm_key": "custom", "custom_model": config, "trace": True, **kw}
    return values(vramplan.estimate_finetuning(body))


# ---------------------------------------------------------------------------------------------
# KV cache


def test_gemma2_sliding_window_kv_at_8k_per_runtime():
    # Gemma 2 9B: 42 layers alternating sliding (window 4096) and global; K+V per token per layer
    # = 2 x 8 KV heads x 256 = 4096 elements x 2 bytes (fp16) = 8192 bytes.
    per_token_layer = 2 * 8 * 256 * 2
    # transformers holds the whole 8192-token prompt on every layer until decode trims it:
    #   42 x 8192 x 8192 = 2,818,572,288 bytes (calibration measured 2,818,649,088).
    hf = infer(GEMMA2_9B, runtime="transformers", seq_length=8192, optimization_config={"flash_attention": False})
    assert hf["kv_needed_bytes"] == 42 * 8192 * per_token_layer == 2_818_572_288
    # vLLM frees blocks outside the window: 21 global layers x 8192 + 21 sliding layers x
    #   round_up(4096 + 16, 16) = 4112 tokens -> 8192 x 21 x (8192 + 4112) = 2,116,681,728 bytes.
    vl = infer(GEMMA2_9B, runtime="vllm", seq_length=8192)
    assert vl["kv_needed_bytes"] == per_token_layer * 21 * (8192 + 4112) == 2_116_681_728
    # llama.cpp's SWA cache keeps n_swa + n_ubatch = 4096 + 512 = 4608 cells (padded to 256: 4608):
    #   8192 x 21 x (8192 + 4608) = 2,202,009,600 bytes.
    lc = infer(GEMMA2_9B, runtime="llama.cpp", quantization="q8_0", seq_length=8192)
    assert lc["kv_needed_bytes"] == per_token_layer * 21 * (8192 + 4608) == 2_202_009_600


def test_phi3_mha_kv_has_32_kv_heads():
    # Phi-3 mini is multi-head (32 KV heads x 96 = 3072 = hidden): K+V = 6144 elements x 2 bytes per
    # token per layer; 8 x 4096 tokens x 32 layers x 12288 = 12,884,901,888 bytes = 12 GiB
    # (calibration h200a-inf-phi-3-mini-bf16-sdpa-b8-s4096 measured 12,885,164,544).
    v = infer(PHI3_MINI, quantization="bf16", kv_cache_quantization="bf16", batch_size=8, seq_length=4096)
    assert v["kv_needed_bytes"] == 8 * 4096 * 32 * 6144 * 2 == 12 * 2**30


def test_llamacpp_kv_buffer_q8_0_and_mixed_types():
    # Llama 3 8B, n_ctx 16384: per token per layer K and V each 8 x 128 = 1024 elements.
    # q8_0 = 34 bytes per 32 elements = 8.5 bits: 32 x 16384 x 2048 x 8.5 / 8 = 1,140,850,688 (1088 MiB).
    v = infer(LLAMA3_8B, runtime="llama.cpp", quantization="q4_0", kv_cache_quantization="q8_0", seq_length=16384)
    assert v["kv_needed_bytes"] == 32 * 16384 * 2048 * 8.5 / 8 == 1088 * 2**20
    # The published lcpp-02 log: n_ctx 1024, K iq4_nl (4.5 bits) 18.00 MiB + V f16 64.00 MiB:
    # 32 x 1024 x 1024 x 4.5 / 8 = 18 MiB and 32 x 1024 x 1024 x 2 = 64 MiB - each half with its own type.
    k = infer(LLAMA3_8B, runtime="llama.cpp", quantization="q4_0", kv_cache_quantization="iq4_nl", seq_length=1024)
    assert k["kv_needed_bytes"] / 2 == 18 * 2**20


# ---------------------------------------------------------------------------------------------
# Weights


def test_mixtral_holds_every_expert():
    # Mixtral 8x7B keeps all 8 experts of every layer resident though a token uses 2:
    # 32 layers x 8 experts x 3 x 4096 x 14336 = 45,097,156,608 expert weights, + attention
    # 32 x (2 x 4096^2 + 2 x 4096 x 1024) = 1,342,177,280, + routers 32 x 8 x 4096 = 1,048,576,
    # + embeddings and head 2 x 32000 x 4096 = 262,144,000, + norms 65 x 4096 = 266,240
    # = 46,702,792,704 parameters x 2 bytes (calibration measured params 46,702,792,704).
    params = 32 * 8 * 3 * 4096 * 14336 + 32 * (2 * 4096**2 + 2 * 4096 * 1024) + 32 * 8 * 4096 + 2 * 32000 * 4096 + 65 * 4096
    assert params == 46_702_792_704
    v = infer(MIXTRAL, quantization="bf16")
    assert v["weights_gpu_bytes"] == params * 2


def test_llamacpp_q4_0_model_buffer_4155_99_mib():
    # Llama 3.1 8B Q4_0: every layer matrix Q4_0 (18 bytes per 32 = 4.5 bits): 6,979,321,856 x 4.5 / 8
    # = 3,925,868,544; output.weight Q6_K (210 bytes per 256 = 6.5625 bits): 525,336,576 x 6.5625 / 8
    # = 430,940,160; norms F32: 266,240 x 4 = 1,064,960; token_embd stays on the host (CPU_Mapped).
    # Sum 4,357,873,664 bytes = 4155.99 MiB, as the log prints (calibration lcpp-01).
    v = infer(LLAMA3_8B, runtime="llama.cpp", quantization="q4_0", seq_length=16384)
    assert v["weights_gpu_bytes"] == 3_925_868_544 + 430_940_160 + 1_064_960
    assert round(v["weights_gpu_bytes"] / 2**20, 2) == 4155.99


def test_qlora_upcasts_non_quantized_tensors_to_fp32():
    # prepare_model_for_kbit_training casts embeddings, head and norms to fp32; the linears stay NF4
    # (4 bits + 8-bit absmax per 64 + fp32 absmax per 256 blocks = 4.126953125 bits):
    # 6,979,321,856 x 4.126953125 / 8 = 3,600,416,768, + 2 x 525,336,576 x 4
    # = 4,202,692,608, + 266,240 x 4 = 1,064,960.
    v = train(LLAMA3_8B, finetuning_method="qlora", lora_rank=16, batch_size=4, seq_length=1024,
              optimization_config={"gradient_checkpointing": True})
    expected = 6_979_321_856 * 4.126953125 / 8 + 2 * 525_336_576 * 4 + 266_240 * 4
    assert v["weights_gpu_bytes"] == pytest.approx(expected, rel=1e-12)
    assert v["resid_bytes"] == 4  # the residual stream (and so the checkpoints) is fp32 too


# ---------------------------------------------------------------------------------------------
# Training


def test_training_logits_are_fp32_tensors_at_the_loss_backward():
    # Llama 3 8B LoRA, 4 x 1024 tokens, vocab 128256: log_softmax's fp32 output, nll_loss's fp32
    # gradient and log_softmax's fp32 gradient are alive together = 12 bytes per logit:
    # 4096 x 128256 x 12 = 6,304,038,912 bytes.
    v = train(LLAMA3_8B, finetuning_method="lora", lora_rank=16, batch_size=4, seq_length=1024,
              optimization_config={"gradient_checkpointing": True})
    assert v["train_logits_bytes"] == 4096 * 128256 * 12 == 6_304_038_912


def test_lora_saved_activations_per_token_layer():
    # Llama 3 8B LoRA all-linear r16, bf16, no checkpointing. Frozen linears save nothing; each adapter
    # saves an fp32 copy of its input: 4 x (5 x 4096 [q,k,v,gate,up] + 4096 [o] + 14336 [down]) = 155,648,
    # plus 7 x 16 x 4 = 448 for the lora_A outputs. RMSNorms keep their fp32 input: 2 x 4 x 4096 = 32,768.
    # SDPA keeps q, k, v and its output: 2 x (2 x 4096 + 2 x 1024) = 20,480. The MLP keeps gate, act(gate)
    # and up: 2 x 3 x 14336 = 86,016. Total 295,360 bytes per token per layer.
    v = train(LLAMA3_8B, finetuning_method="lora", lora_rank=16, batch_size=4, seq_length=1024)
    assert v["layer_saved_bytes_per_token"] == 155_648 + 448 + 32_768 + 20_480 + 86_016 == 295_360
    assert v["train_activation_bytes"] == 4096 * 32 * 295_360


def test_mixed_precision_keeps_fp32_residuals_and_per_linear_casts():
    # Llama 3.2 1B full fine-tuning with fp32 master weights under bf16 autocast: norms keep fp32 input and
    # normalized input (2 x 8 x 2048 = 32,768); q, k, v, gate, up each cast the fp32 input to bf16
    # (5 x 2 x 2048 = 20,480); down_proj keeps its bf16 input (2 x 8192 = 16,384) and o_proj reads SDPA's own
    # output (no copy under SDPA); SDPA + MLP core 2 x (2 x 2048 + 2 x 512 + 3 x 8192) = 59,392.
    # Total 129,024 bytes per token per layer.
    # Autocast's bf16 weight copies (tied head included): (1,235,814,400 - 67,584 norm params) x 2.
    v = train(LLAMA32_1B, finetuning_method="full", fine_tuning_quantization="fp32", batch_size=4, seq_length=1024)
    assert v["layer_saved_bytes_per_token"] == 32_768 + 20_480 + 16_384 + 59_392 == 129_024
    assert v["autocast_copy_bytes"] == (1_235_814_400 - 67_584) * 2
    # Backward start: 4096 x 16 x 129,024 + 6,304,038,912 logits + 2,471,493,632 copies + final norm
    # 4096 x 2048 x (4 + 4 + 2) = 83,886,080 -> 17,315,135,488 bytes (calibration peak allocated 32.22 GB
    # = 17.32 GB of these + 14.90 GB of weights and moments).
    assert v["fwd_phase_bytes"] == 4096 * 16 * 129_024 + 6_304_038_912 + 2_471_493_632 + 83_886_080 == 17_315_135_488


def test_adamw_8bit_states():
    # bitsandbytes AdamW8bit (catalogs/optimizers: Optimizer2State.init_state): two uint8 moments + an
    # fp32 absmax per 256-element block: 1,235,814,400 x 2 x (1 + 4 / 256) = 2,510,248,000 bytes
    # (calibration: 2,511,915,520 incl. the 32-bit state bnb keeps for tensors under 4096 elements).
    v = train(LLAMA32_1B, finetuning_method="full", fine_tuning_quantization="bf16", optimizer="adamw_8bit",
              batch_size=4, seq_length=1024, optimization_config={"gradient_checkpointing": True})
    assert v["optimizer_states_gpu_bytes"] == pytest.approx(2_510_248_000, rel=1e-12)
    assert v["optimizer_step_temp_bytes"] == 0  # the fused 8-bit kernel makes no foreach temporaries


def test_full_bf16_step_peak_holds_gradients_and_one_temporary():
    # Pure bf16 Llama 3.2 1B with checkpointing: foreach AdamW's sqrt(v) list is one more state-sized
    # tensor: grads 1,235,814,400 x 2 + temp 1,235,814,400 x 2 = 4,943,257,600 bytes.
    v = train(LLAMA32_1B, finetuning_method="full", fine_tuning_quantization="bf16", batch_size=4, seq_length=1024,
              optimization_config={"gradient_checkpointing": True})
    assert v["step_phase_bytes"] == 4 * 1_235_814_400


# ---------------------------------------------------------------------------------------------
# Attention


def test_fp32_sdpa_with_gqa_materializes_scores():
    # SDPA with fp32 inputs and grouped KV heads runs the math backend (flash/cuDNN are 16-bit only,
    # the memory-efficient kernel rejects GQA): q.k^T and its softmax in fp32 = 8 bytes per score,
    # 2048 x 2048 x 32 heads x 8 = 1,073,741,824 bytes (calibration: 1,074,872,320 above the MLP peak).
    v = infer(LLAMA32_1B, quantization="fp32", kv_cache_quantization="fp32", seq_length=2048)
    assert v["attn_scores_bytes"] == 2048 * 2048 * 32 * 8
    # In bf16 the flash kernel handles GQA: nothing materialized.
    assert infer(LLAMA32_1B, quantization="bf16", seq_length=2048)["attn_scores_bytes"] == 0


def test_llamacpp_compute_buffer_without_fa_holds_f32_kq():
    # llama.cpp without flash attention: KQ is f32, n_kv x n_ubatch x n_head = 16384 x 512 x 32 x 4 bytes
    # = 1 GiB (soft_max runs in place).
    v = infer(LLAMA3_8B, runtime="llama.cpp", quantization="q4_0", seq_length=16384,
              optimization_config={"flash_attention": False})
    assert v["attn_scores_bytes"] == 16384 * 512 * 32 * 4 == 2**30


# ---------------------------------------------------------------------------------------------
# vLLM


def test_vllm_profiles_a_full_batch_and_the_sampler():
    # vLLM reserves what its profile run used: a forward of max_num_batched_tokens (8192) tokens whatever
    # the workload, then the sampler on max_num_seqs (1024) rows x vocab 128256 x 14 bytes.
    v = infer(LLAMA3_8B, runtime="vllm", seq_length=2048)
    assert v["prefill_tokens"] == 8192
    assert v["logits_positions"] == 1024
    # forward peak: 8192 x (3 x 14336 + 4 x 4096) x 2 = 973,078,528
    assert v["activations_gpu_bytes"] == 8192 * (3 * 14336 + 4 * 4096) * 2
    # sampler stage: 1024 x 128256 x 14 + 4 x 8192 x 4096 x 2 hidden = 2,107,113,472
    assert v["logits_stage_bytes"] == 1024 * 128256 * 14 + 4 * 8192 * 4096 * 2


def test_vllm_kv_pool_fills_gpu_memory_utilization():
    # H100 as torch sees it (79.19 GiB) at gpu_memory_utilization 0.95: the pool is what is left after the
    # loaded model (8,030,261,248 x 2 of weights and the rope table, 8,192 positions x 128 x 2 bytes), the profiled
    # peak (2,107,113,472, the sampler stage) and 256 MiB of non-torch memory; the CUDA context and graphs come on top
    # of the budget.
    body = {"gpu_key": "h100_80", "custom_vram": 79.19, "llm_key": "custom", "custom_model": LLAMA3_8B,
            "runtime": "vllm", "seq_length": 8192, "runtime_settings": {"gpu_memory_utilization": 0.95}, "trace": True}
    resp = vramplan.estimate_inference(body)
    v = values(resp)
    pool = 0.95 * 79.19 * 2**30 - 8_030_261_248 * 2 - 8192 * 128 * 2 - 2_107_113_472 - 256 * 2**20
    assert v["kv_pool_bytes"] == pytest.approx(pool, rel=1e-9)
    # 131,072 bytes per token (32 layers x 2048 elements x 2 bytes): vLLM printed 476,016 tokens, 58.11 GiB.
    assert resp["kv_pool"]["tokens"] == int(pool / 131072)
    assert resp["kv_pool"]["tokens"] == pytest.approx(476_016, rel=0.005)


def test_vllm_v0_profile_forward_keeps_gate_up_through_down_proj():
    # V0's LlamaMLP (gate_up, _ = gate_up_proj(x); x = act_fn(gate_up); x, _ = down_proj(x)) holds gate_up (2 x 14336)
    # and act (14336) while down_proj writes: with the residual, the normed input and the down output, 3 x 4096 hidden
    # elements. A 20,000-token profile forward: 20,000 x (3 x 14336 + 3 x 4096) x 2 = 2,211,840,000 bytes (2.06 GiB;
    # the RTX 3090 log: 17.06 GiB peak less 14.99 loaded = 2.07). Attention's q, k, v (4096 + 2 x 1024) stay below.
    v = infer(LLAMA3_8B, runtime="vllm-v0", seq_length=8192,
              runtime_settings={"max_prefill_tokens": 20000, "max_num_seqs": 256})
    assert v["activations_gpu_bytes"] == 20000 * (3 * 14336 + 3 * 4096) * 2 == 2_211_840_000
    assert v["non_torch_bytes"] == 350 * 2**20  # V0's own "non_torch_memory=0.35GiB"


def test_runtime_settings_names_must_be_runtime_constants():
    with pytest.raises(RequestError) as exc:
        vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "custom", "custom_model": LLAMA3_8B,
                                     "runtime": "vllm", "runtime_settings": {"gpu_mem_util": 0.95}})
    assert "runtime_settings.gpu_mem_util" in str(exc.value)


# ---------------------------------------------------------------------------------------------
# Warnings


def test_warns_where_runtime_internals_were_not_measured():
    amd = vramplan.estimate_inference({"gpu_key": "mi300x", "llm_key": "custom", "custom_model": LLAMA3_8B,
                                       "runtime": "vllm"})
    assert any("ROCm" in w for w in amd["warnings"])
    nvidia = vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "custom", "custom_model": LLAMA3_8B,
                                          "runtime": "vllm"})
    assert not any("ROCm" in w or "Metal" in w for w in nvidia["warnings"])


def test_warns_about_a_vision_tower():
    config = {"model_type": "gemma3", "text_config": {"hidden_size": 2560, "intermediate_size": 10240,
              "num_hidden_layers": 34, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                                              "vocab_size": 262208},
              "vision_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                                "num_attention_heads": 16, "patch_size": 14, "image_size": 896}}
    resp = vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "custom", "custom_model": config})
    assert any("vision encoder" in w for w in resp["warnings"])


# ---------------------------------------------------------------------------------------------
# Issue 16: fused projections, LoRA target matching, sliding-window masks, LLM.int8, o_proj's input

PHI3_MINI_WINDOW = {**PHI3_MINI, "sliding_window": 2047}  # the published config.json declares it
MISTRAL_7B_V01 = {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 32000,
                  "max_position_embeddings": 32768, "tie_word_embeddings": False, "sliding_window": 4096}


def test_phi3_lora_all_linear_adapts_the_fused_modules():
    # peft "all-linear" on Phi-3 hits qkv_proj (3072 -> 9216), o_proj (3072 -> 3072), gate_up_proj
    # (3072 -> 16384) and down_proj (8192 -> 3072): rank 16 x 32 layers x (12288 + 6144 + 19456 + 11264)
    # = 16 x 32 x 49152 = 25,165,824 trainable parameters (what peft prints for Phi-3 mini, r 16).
    v = train(PHI3_MINI, finetuning_method="lora", lora_rank=16, lora_target_modules="all-linear",
              batch_size=1, seq_length=1024)
    assert v["lora_params"] == 16 * 32 * (12288 + 6144 + 19456 + 11264) == 25_165_824
    # Naming the fused module adapts q, k and v together: qkv_proj + o_proj = 16 x 32 x (12288 + 6144).
    v = train(PHI3_MINI, finetuning_method="lora", lora_rank=16, lora_target_modules=["qkv_proj", "o_proj"],
              batch_size=1, seq_length=1024)
    assert v["lora_params"] == 16 * 32 * (12288 + 6144) == 9_437_184


def test_lora_targets_that_name_no_module_of_the_model_are_refused():
    # Phi-3 has no q_proj / v_proj (peft raises "Target modules ... not found in the base model").
    with pytest.raises(RequestError, match="lora_target_modules.*qkv_proj, o_proj, gate_up_proj, down_proj"):
        train(PHI3_MINI, finetuning_method="lora", lora_target_modules=["q_proj", "v_proj"], batch_size=1, seq_length=512)
    # and Llama has no qkv_proj
    with pytest.raises(RequestError, match="lora_target_modules"):
        train(LLAMA32_1B, finetuning_method="lora", lora_target_modules=["qkv_proj"], batch_size=1, seq_length=512)
    # a partly matching list adapts what exists and says which names matched nothing
    body = {"gpu_key": "h200", "llm_key": "custom", "custom_model": PHI3_MINI, "finetuning_method": "lora",
            "lora_target_modules": ["q_proj", "o_proj"], "batch_size": 1, "seq_length": 512}
    resp = vramplan.estimate_finetuning(body)
    assert any("q_proj matches no layer" in w for w in resp["warnings"])


def test_phi3_lora_saved_activations_fused_views_and_window_mask():
    # Phi-3 mini LoRA all-linear r16, bf16 base, 1 x 2048 tokens, config window 2047 (2048 > 2047: masked):
    #   norms' fp32 inputs 2 x 4 x 3072 = 24,576; SDPA q, out, k, v 2 x (2 x 3072 + 2 x 3072) = 24,576;
    #   MLP gate, up, act(gate) 2 x 3 x 8192 = 49,152; v is a view of qkv_proj's output, which stays
    #   alive: 2 x (3072 + 3072) more = 12,288; adapters: one fp32 input copy per fused module
    #   4 x 2 x 3072 = 24,576, o and down inputs 4 x (3072 + 8192) = 45,056, lora_A outputs 4 x 4 x 16 = 256;
    #   each layer's SDPA keeps its bf16 additive mask, 2048 x 2 = 4,096 bytes per token.
    #   Sum 24,576 + 24,576 + 49,152 + 12,288 + 69,888 + 4,096 = 184,576 bytes per token and layer.
    v = train(PHI3_MINI_WINDOW, finetuning_method="lora", lora_rank=16, lora_target_modules="all-linear",
              batch_size=1, seq_length=2048)
    assert v["sdpa_window_mask"] == 1
    assert v["train_mask_bytes_per_token_layer"] == 2048 * 2 == 4096
    assert v["layer_saved_bytes_per_token"] == 184_576
    # At 2047 tokens - as many keys as the window - transformers still builds the mask (masking_utils skips it only for
    # kv_length < the window): 2047 x 2 = 4,094 bytes a token. At 2046 there is none: 184,576 - 4,096 = 180,480.
    v = train(PHI3_MINI_WINDOW, finetuning_method="lora", lora_rank=16, lora_target_modules="all-linear",
              batch_size=1, seq_length=2047)
    assert v["sdpa_window_mask"] == 1 and v["train_mask_bytes_per_token_layer"] == 4094
    v = train(PHI3_MINI_WINDOW, finetuning_method="lora", lora_rank=16, lora_target_modules="all-linear",
              batch_size=1, seq_length=2046)
    assert v["sdpa_window_mask"] == 0 and v["layer_saved_bytes_per_token"] == 180_480


def test_full_finetuning_o_proj_input_is_sdpa_output_unless_rope_concatenates():
    # Llama 3.2 1B mixed precision: norms 2 x 8 x 2048 = 32,768; casts 2 x (3 x 2048 + 2 x 2048 + 8192) = 36,864
    # (o_proj reads SDPA's own output: no copy); SDPA + MLP 2 x (4096 + 1024 + 3 x 8192) = 59,392; sum 129,024.
    v = train(LLAMA32_1B, finetuning_method="full", fine_tuning_quantization="fp32", batch_size=4, seq_length=1024)
    assert v["layer_saved_bytes_per_token"] == 32_768 + 36_864 + 59_392 == 129_024
    # Phi-3 mini full bf16 (no window): norms 2 x 6 x 3072 = 36,864; inputs of qkv_proj, gate_up_proj, o_proj (a copy:
    # cat-RoPE leaves q head-major) and down_proj 2 x (3 x 3072 + 8192) = 34,816; SDPA + MLP 2 x (4 x 3072 + 3 x 8192)
    # = 73,728; qkv output kept by the v view 2 x 6144 = 12,288; sum 157,696 (CPU measurement: 16h + 8q + 6kv + 8I).
    v = train(PHI3_MINI, finetuning_method="full", fine_tuning_quantization="bf16", batch_size=1, seq_length=1024)
    assert v["layer_saved_bytes_per_token"] == 36_864 + 34_816 + 73_728 + 12_288 == 157_696


def test_fp32_sdpa_with_a_window_mask_runs_the_memory_efficient_kernel():
    # Mistral 7B v0.1 (window 4096, GQA 32/8) in fp32 at an 8192-token prompt: transformers builds the
    # mask, repeats K and V to 32 heads, and SDPA's memory-efficient kernel runs - no score matrix.
    # Transient: the additive fp32 mask plus logical_not's bool 8192 x 8192 x (4 + 1) = 335,544,320 and
    # the repeated K and V 8192 x 2 x 4096 x 4 = 268,435,456; the shared bool mask 8192^2 = 67,108,864.
    v = infer(MISTRAL_7B_V01, quantization="fp32", kv_cache_quantization="fp32", seq_length=8192)
    assert v["sdpa_window_mask"] == 1 and v["sdpa_math_fallback"] == 0 and v["attn_scores_bytes"] == 0
    assert v["window_mask_transient_bytes"] == 335_544_320 + 268_435_456
    assert v["window_mask_bool_bytes"] == 67_108_864
    # With fewer keys than the window (4095 tokens) there is no mask: enable_gqa, and fp32 GQA falls back to math:
    # scores 4095 x 4095 x 32 heads x 8 bytes = 4,292,870,400. At exactly 4096 the mask is built (kv_length is not
    # below the window) and the memory-efficient kernel runs.
    v = infer(MISTRAL_7B_V01, quantization="fp32", kv_cache_quantization="fp32", seq_length=4095)
    assert v["sdpa_window_mask"] == 0 and v["attn_scores_bytes"] == 4095 * 4095 * 32 * 8 == 4_292_870_400
    v = infer(MISTRAL_7B_V01, quantization="fp32", kv_cache_quantization="fp32", seq_length=4096)
    assert v["sdpa_window_mask"] == 1 and v["attn_scores_bytes"] == 0


def test_eager_attention_keeps_one_additive_mask_per_attention_kind():
    # Eager attention adds masking_utils' eager_mask to its scores: torch.where(bool mask, 0, min) over batch x
    # queries x keys in bf16, built once per forward and alive through every layer. Gemma 2 has causal and sliding
    # layers - two masks: 2 x 1 x 8192 x 8192 x 2 = 268,435,456 bytes at an 8192-token prompt (the transformers
    # generation recorded on the meta device holds both: 2 x 134,217,728 from the first layer to the head).
    v = infer(GEMMA2_9B, runtime="transformers", batch_size=1, seq_length=8192,
              optimization_config={"flash_attention": False})
    assert v["eager_mask_bytes"] == 2 * 8192 * 8192 * 2 == 268_435_456
    assert v["activations_gpu_bytes"] == (max(v["ffn_transient_bytes"], v["attn_transient_bytes"])
                                          + v["hidden_live_bytes"] + 268_435_456)
    # Llama 3 8B at 4 x 1024: one causal mask over the batch, 4 x 1024 x 1024 x 2 = 8,388,608; under SDPA none
    assert infer(LLAMA3_8B, runtime="transformers", batch_size=4, seq_length=1024,
                 optimization_config={"flash_attention": False})["eager_mask_bytes"] == 8_388_608
    assert infer(LLAMA3_8B, runtime="transformers", batch_size=4, seq_length=1024)["eager_mask_bytes"] == 0
    # vLLM's attention is always fused: no eager masks
    assert infer(LLAMA3_8B, runtime="vllm", batch_size=4, seq_length=1024,
                 optimization_config={"flash_attention": False})["eager_mask_bytes"] == 0


def test_phi3_window_mask_in_fp32_inference():
    # Phi-3 mini declares a 2047 window that transformers masks on every layer: at 4096 tokens in fp32
    # (MHA: no repeat) the conversion holds 4096^2 x 5 = 83,886,080 bytes and the bool mask 16,777,216.
    v = infer(PHI3_MINI_WINDOW, quantization="fp32", kv_cache_quantization="fp32", seq_length=4096)
    assert v["window_mask_transient_bytes"] == 83_886_080
    assert v["activations_gpu_bytes"] == v["ffn_transient_bytes"] + v["hidden_live_bytes"] + 16_777_216
    # without the window key nothing is masked
    assert infer(PHI3_MINI, quantization="fp32", kv_cache_quantization="fp32", seq_length=4096)["window_mask_bool_bytes"] == 0


def test_llm_int8_mlp_holds_int32_and_fp16_copies_of_a_linear_output():
    # bitsandbytes LLM.int8, Llama 3 8B, 1 x 2048 prompt: while up_proj runs, act(gate) and up (2 x 14336 x 2 bytes)
    # are alive with the int32 GEMM result (4) and its fp16 dequantization (2) of up's 14336 outputs and with
    # MatMul8bitLt's int8 copy of up's input (4096) and its fp32 row scale (4):
    # 57,344 + 86,016 + 4,100 = 147,460 bytes per token, x 2048 = 301,998,080 (bf16: 3 x 14336 x 2 x 2048 = 176,160,768).
    v = infer(LLAMA3_8B, quantization="int8", kv_cache_quantization="bf16", seq_length=2048)
    assert v["ffn_int8_bytes_per_token"] == 147_460
    assert v["ffn_transient_bytes"] == 301_998_080
    assert infer(LLAMA3_8B, quantization="bf16", seq_length=2048)["ffn_transient_bytes"] == 176_160_768


def test_gemma2_training_saves_four_fp32_norms_and_soft_capped_scores_and_logits():
    # Gemma 2 9B (its config leaves the soft-caps out: Gemma2Config's 50 and 30 apply), full bf16 fine-tuning, eager
    # attention, 1 x 2048 tokens. Against the same shapes as a Llama layer:
    # - four Gemma2RMSNorms, each saving x.float() (4 bytes) and - the weight trained - the fp32 normalized input that
    #   output * (1 + weight.float()) reads (4): 4 x 8 x 3584 = 114,688 bytes a token, against Llama's two norms with a
    #   bf16 normalized input, 2 x (4 + 2) x 3584 = 43,008;
    # - the soft-capped scores: tanh's output (2 bytes) beside the fp32 softmax (4) and its bf16 copy (2), 16 heads x
    #   2048 keys x 8 = 262,144 bytes a token, against 16 x 2048 x 6 = 196,608;
    # - the logits: tanh's output of the final soft-cap (2 bytes) beside the loss's 12: 2048 x 256,000 x 14.
    kw = dict(finetuning_method="full", fine_tuning_quantization="bf16", batch_size=1, seq_length=2048,
              optimization_config={"gradient_checkpointing": False, "flash_attention": False})
    gemma = train(GEMMA2_9B, **kw)
    as_llama = train({**GEMMA2_9B, "model_type": "llama", "layer_types": None, "sliding_window": None,
                      "tie_word_embeddings": True}, **kw)
    assert gemma["norms_per_layer"] == 4 and gemma["norm_scale_fp32"] == 1
    assert gemma["attn_softcap"] == 1 and gemma["final_softcap"] == 1
    assert gemma["train_scores_bytes_per_token_layer"] == 16 * 2048 * 8 == 262_144
    assert as_llama["train_scores_bytes_per_token_layer"] == 16 * 2048 * 6
    assert gemma["layer_saved_bytes_per_token"] - as_llama["layer_saved_bytes_per_token"] == \
        (114_688 - 43_008) + (262_144 - 196_608)
    assert gemma["train_logits_bytes"] == 2048 * 256_000 * 14
    # LoRA: the frozen norm weights need no normalized input - 4 x 4 x 3584 for the norms
    lora = train(GEMMA2_9B, **{**kw, "finetuning_method": "lora"})
    lora_llama = train({**GEMMA2_9B, "model_type": "llama", "layer_types": None, "sliding_window": None,
                        "tie_word_embeddings": True}, **{**kw, "finetuning_method": "lora"})
    assert lora["layer_saved_bytes_per_token"] - lora_llama["layer_saved_bytes_per_token"] == \
        (4 * 4 * 3584 - 2 * 4 * 3584) + (262_144 - 196_608)


def test_softcaps_follow_the_config_and_refuse_a_string():
    off = train({**GEMMA2_9B, "attn_logit_softcapping": None, "final_logit_softcapping": None},
                finetuning_method="lora", optimization_config={"gradient_checkpointing": False, "flash_attention": False})
    assert off["attn_softcap"] == 0 and off["final_softcap"] == 0
    assert train(LLAMA3_8B, finetuning_method="lora")["attn_softcap"] == 0
    with pytest.raises(RequestError, match="final_logit_softcapping"):
        train({**GEMMA2_9B, "final_logit_softcapping": "30"}, finetuning_method="lora")


def test_per_head_q_and_k_norms_save_their_inputs_in_training():
    # Qwen3 0.6B's widths (16 heads x 128 = 2048 query, 8 x 128 = 1024 key elements a token), full bf16 fine-tuning: its
    # q_norm / k_norm keep hidden.to(float32) (4 bytes) and - their weights trained - the bf16 normalized input that
    # weight x hidden.to(input_dtype) reads (2): (2048 + 1024) x 6 = 18,432 bytes a token a layer beyond the same
    # layer without them (a Qwen2-style config without the q/k/v biases). LoRA keeps only the fp32 inputs: 3072 x 4.
    qwen3 = {"model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
             "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
             "max_position_embeddings": 40960, "tie_word_embeddings": True}
    plain = {**qwen3, "model_type": "llama"}
    full = dict(finetuning_method="full", fine_tuning_quantization="bf16", batch_size=4, seq_length=1024)
    assert train(qwen3, **full)["qk_head_norm"] == 1 and train(plain, **full)["qk_head_norm"] == 0
    assert train(qwen3, **full)["layer_saved_bytes_per_token"] - train(plain, **full)["layer_saved_bytes_per_token"] == 18_432
    lora = dict(finetuning_method="lora", batch_size=4, seq_length=1024)
    assert train(qwen3, **lora)["layer_saved_bytes_per_token"] - train(plain, **lora)["layer_saved_bytes_per_token"] == 3072 * 4


# ---------------------------------------------------------------------------------------------
# Attention's tensor rate


def test_attention_multiplies_in_the_activations_dtype_not_the_weights_format():
    """q x K and P x V run at the 16-bit rate whatever format the weights are stored in; an fp32 model at its own
    rate; FP8 only where the runtime's kernels multiply in FP8 (TensorRT-LLM's FP8 context FMHA with an FP8 cache
    or an FP8 o_proj input, from compute capability 8.9). H200 (datasheet): bf16 989.4, FP8 1,978.9, fp32 67.0
    TFLOP/s, compute capability 9.0."""
    def rate(**kw):
        v = infer(LLAMA32_1B, input_tokens=2048, output_tokens=128, **kw)
        return v["attn_tflops"], v["gpu_tflops"]

    # FP8 weights in vLLM: the GEMMs at FP8, attention at bf16 (vLLM's FP8 FlashAttention 3 keeps BF16's speed)
    assert rate(runtime="vllm", quantization="fp8") == (989.4, 1978.9)
    assert rate(runtime="vllm", quantization="fp8", kv_cache_quantization="fp8")[0] == 989.4
    # TensorRT-LLM: a bf16 model with an FP8 cache runs the FP8 context FMHA ...
    assert rate(runtime="tensorrt-llm", quantization="bf16", kv_cache_quantization="fp8") == (1978.9, 989.4)
    # ... as does an FP8 model with a 16-bit cache (the attention writes o_proj's FP8 input) ...
    assert rate(runtime="tensorrt-llm", quantization="fp8")[0] == 1978.9
    # ... but not an int8 cache, which the kernels dequantize into 16-bit math
    assert rate(runtime="tensorrt-llm", quantization="bf16", kv_cache_quantization="int8")[0] == 989.4
    # an fp32 model attends in fp32: min(67.0, 989.4)
    assert rate(runtime="transformers", quantization="fp32")[0] == 67.0


def test_a_tied_weights_gradient_shares_are_alive_at_the_end_of_backward():
    """The head's share of a tied embedding's gradient and embedding_dense_backward's are summed out of place at the
    end of backward: two 128,256 x 2,048 fp32 tensors beyond Llama 3.2 1B's 1,235,814,400 x 4 = 4,943,257,600 bytes of
    gradients - 2 x 262,668,288 x 4 = 2,101,346,304. With bitsandbytes' fused 8-bit step (no temporaries) and
    checkpointing at 1 x 2048 (4.1 GB when backward starts) that is the peak: gradients 7,044,603,904."""
    v = train(LLAMA32_1B, finetuning_method="full", fine_tuning_quantization="fp32", optimizer="adamw_8bit",
              batch_size=1, seq_length=2048, optimization_config={"gradient_checkpointing": True})
    assert v["tied_grad_sum_bytes"] == 2_101_346_304
    assert v["step_is_peak"] == 1 and v["optimizer_step_gpu_bytes"] == 0
    assert v["gradients_gpu_bytes"] == 4_943_257_600 + 2_101_346_304
    # foreach AdamW's sqrt(v) copy (4,943,257,600) is larger: the step stays the peak, the shares are not counted
    v = train(LLAMA32_1B, finetuning_method="full", fine_tuning_quantization="fp32", optimizer="adamw",
              batch_size=1, seq_length=2048, optimization_config={"gradient_checkpointing": True})
    assert v["gradients_gpu_bytes"] == 4_943_257_600 and v["optimizer_step_gpu_bytes"] == 4_943_257_600


def test_checkpointed_autocast_forward_keeps_every_weight_copy_until_its_loss():
    # fp32 Llama 3.2 1B under bf16 autocast with checkpointing, bitsandbytes AdamW8bit, 4 x 1024 tokens. The checkpointed
    # forward saves nothing, but autocast's cache keeps every linear's bf16 copy until the autocast region ends, after
    # the loss. Linears: per layer q 2048 x 2048 + k, v 2048 x 512 + o 2048 x 2048 + gate, up, down 2048 x 8192 =
    # 60,817,408, x 16 = 973,078,528; the tied head is the embedding, 128256 x 2048 = 262,668,288.
    # At the forward's loss: the other 15 layers' copies 973,078,528 x 2 x 15 / 16 = 1,824,522,240 beside the head's and
    # one layer's (2 x (262,668,288 + 60,817,408) = 646,971,392) - together every copy, 2,471,493,632 - and the bf16
    # logits, their fp32 copy and log_softmax's output, 4096 x 128256 x 10 = 5,253,365,760. That moment, 7,077,888,000
    # with the copies, outweighs the loss's backward (12 bytes a logit, 6,304,038,912, the copies gone by then).
    v = values(vramplan.estimate_finetuning({
        "gpu_key": "h200", "llm_key": "custom", "custom_model": LLAMA32_1B, "trace": True, "runtime": "transformers",
        "finetuning_method": "full", "fine_tuning_quantization": "fp32", "optimizer": "adamw_8bit", "batch_size": 4,
        "seq_length": 1024, "optimization_config": {"flash_attention": True, "gradient_checkpointing": True}}))
    assert v["fwd_loss_copies_bytes"] == pytest.approx(1_824_522_240)
    assert v["fwd_logits_bytes"] == pytest.approx(5_253_365_760)
    assert v["loss_copies_bytes"] == pytest.approx(1_824_522_240)
    assert v["loss_logits_bytes"] == pytest.approx(5_253_365_760)
    # the peak is there (8-bit's fused step has no temporaries): checkpoints 16 x 4096 x 2048 x 4 = 536,870,912, the
    # head's saved 4096 x 2048 x 10 = 83,886,080 - 536,870,912 + 7,077,888,000 + 83,886,080 + 646,971,392
    assert v["fwd_phase_bytes"] == pytest.approx(8_345_616_384)
    assert v["autocast_gpu_bytes"] == pytest.approx(2_471_493_632)
    # without checkpointing the saved graph keeps every copy through the backward's start: no extra moment
    v = values(vramplan.estimate_finetuning({
        "gpu_key": "h200", "llm_key": "custom", "custom_model": LLAMA32_1B, "trace": True, "runtime": "transformers",
        "finetuning_method": "full", "fine_tuning_quantization": "fp32", "optimizer": "adamw_8bit", "batch_size": 4,
        "seq_length": 1024, "optimization_config": {"flash_attention": True, "gradient_checkpointing": False}}))
    assert v["loss_copies_bytes"] == 0 and v["loss_logits_bytes"] == pytest.approx(6_304_038_912)


PHI3_MINI = {"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064, "max_position_embeddings": 4096,
             "tie_word_embeddings": False, "hidden_act": "silu"}


def test_the_first_layers_backward_beside_almost_every_gradient_can_be_the_peak():
    """Phi-3 mini fully trained in bf16, bitsandbytes' fused 8-bit step (no temporaries), checkpointing, 8 x 2048.
    Through backward the checkpoints go layer by layer while the gradients come: at its end every gradient is alive
    but layer 0's own and the untied embedding's (made last), beside layer 0's recomputation, its MLP's gradient
    temporaries and its checkpoint - 16,384 x (157,696 + 3 x 2 x 8192) + 16,384 x 3072 x 2 = 3,489,660,928, less
    ((3,821,079,552 - 2 x 32064 x 3072) / 32 + 32064 x 3072) x 2 = 423,506,112: 3,066,154,816 beyond the gradients."""
    v = train(PHI3_MINI, finetuning_method="full", fine_tuning_quantization="bf16", optimizer="adamw_8bit",
              batch_size=8, seq_length=2048, optimization_config={"gradient_checkpointing": True, "flash_attention": True})
    assert v["bwd_end_bytes"] == pytest.approx(3_066_154_816)
    # gradients 3,821,079,552 x 2 = 7,642,159,104: the step phase (10,708,313,920) outweighs the loss's (checkpoints
    # 3,221,225,472 + the forward's logits 16,384 x 32,064 x 10 = 5,253,365,760 + the head's saved), so the peak is there
    assert v["step_phase_bytes"] == pytest.approx(7_642_159_104 + 3_066_154_816)
    assert v["step_phase_bytes"] > v["fwd_phase_bytes"] and v["bwd_end_is_peak"] == 1
    # and the breakdown says so: gradients and the first layer's backward, no step temporaries
    assert v["gradients_gpu_bytes"] == 7_642_159_104 and v["optimizer_step_gpu_bytes"] == 0
    assert v["activations_train_gpu_bytes"] == pytest.approx(3_066_154_816)
    # foreach AdamW's sqrt(v) list (one gradient's size, 7,642,159,104) is the larger moment there
    v = train(PHI3_MINI, finetuning_method="full", fine_tuning_quantization="bf16", optimizer="adamw",
              batch_size=8, seq_length=2048, optimization_config={"gradient_checkpointing": True, "flash_attention": True})
    assert v["bwd_end_is_peak"] == 0 and v["optimizer_step_gpu_bytes"] == 7_642_159_104
    assert v["activations_train_gpu_bytes"] == 0
