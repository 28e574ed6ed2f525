"""Families whose layers are not all alike (vramplan.families): counts, layouts, per-sequence state.

Every parameter count is itemized by hand from the modeling code the reader cites; the estimates
check what one sequence holds against the same hand arithmetic as the formula golden cases.
"""

from __future__ import annotations

import pytest

import vramplan
from vramplan.architecture import from_hf_config
from vramplan.errors import RequestError

QWEN3_NEXT = {  # Qwen/Qwen3-Next-80B-A3B-Instruct config.json (architecture keys)
    "model_type": "qwen3_next", "architectures": ["Qwen3NextForCausalLM"], "hidden_size": 2048,
    "num_hidden_layers": 48, "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256,
    "intermediate_size": 5120, "vocab_size": 151936, "tie_word_embeddings": False, "num_experts": 512,
    "num_experts_per_tok": 10, "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512,
    "decoder_sparse_step": 1, "mlp_only_layers": [], "full_attention_interval": 4, "linear_conv_kernel_dim": 4,
    "linear_key_head_dim": 128, "linear_value_head_dim": 128, "linear_num_key_heads": 16,
    "linear_num_value_heads": 32, "max_position_embeddings": 262144,
}

GRANITE_H_SMALL = {  # ibm-granite/granite-4.0-h-small config.json (architecture keys)
    "model_type": "granitemoehybrid", "hidden_size": 4096, "num_hidden_layers": 40, "num_attention_heads": 32,
    "num_key_value_heads": 8, "intermediate_size": 768, "shared_intermediate_size": 1536, "vocab_size": 100352,
    "tie_word_embeddings": True, "num_local_experts": 72, "num_experts_per_tok": 10,
    "layer_types": (["mamba"] * 5 + ["attention"] + ["mamba"] * 4) * 4, "mamba_n_heads": 128, "mamba_d_head": 64,
    "mamba_n_groups": 1, "mamba_d_state": 128, "mamba_d_conv": 4, "mamba_expand": 2, "mamba_conv_bias": True,
    "mamba_proj_bias": False, "max_position_embeddings": 131072,
}

MLLAMA_11B = {  # meta-llama/Llama-3.2-11B-Vision-Instruct config.json (architecture keys)
    "model_type": "mllama",
    "text_config": {"model_type": "mllama_text_model", "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38],
                    "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 40,
                    "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False,
                    "max_position_embeddings": 131072},
    "vision_config": {"model_type": "mllama_vision_model", "hidden_size": 1280, "intermediate_size": 5120,
                      "num_hidden_layers": 32, "num_global_layers": 8, "attention_heads": 16, "image_size": 560,
                      "patch_size": 14, "max_num_tiles": 4, "num_channels": 3, "vision_output_dim": 7680,
                      "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]]},
}

GEMMA3N_E4B = {  # google/gemma-3n-E4B-it config.json (text tower and image tokens)
    "model_type": "gemma3n", "vision_soft_tokens_per_image": 256,
    "text_config": {"model_type": "gemma3n_text", "hidden_size": 2048, "num_hidden_layers": 35,
                    "intermediate_size": [16384] * 35, "num_attention_heads": 8, "num_key_value_heads": 2,
                    "head_dim": 256, "vocab_size": 262400, "vocab_size_per_layer_input": 262144,
                    "hidden_size_per_layer_input": 256, "sliding_window": 512,
                    "layer_types": (["sliding_attention"] * 4 + ["full_attention"]) * 7, "num_kv_shared_layers": 15,
                    "altup_num_inputs": 4, "laurel_rank": 64, "max_position_embeddings": 32768},
}


def _trace(out: dict) -> dict[str, float]:
    return {step["id"]: step["value"] for step in out["trace"]}


# -- Qwen3-Next ------------------------------------------------------------------------------

def test_qwen3_next_counts_deltanet_mixers_gated_attention_and_moe_by_hand():
    a = from_hf_config(QWEN3_NEXT)
    assert (a.num_full_layers, a.num_recurrent_layers) == (12, 36)  # every 4th layer attends
    assert a.layer_types[3] == "full" and a.layer_types[0] == "recurrent"
    embed = 151936 * 2048 * 2  # untied
    attn = 12 * (2048 * 16 * 256 * 2 + 2 * 2048 * 2 * 256 + 16 * 256 * 2048 + 2 * 256)  # q+gate, k, v, o, q/k norm
    deltanet = 36 * (2048 * (2 * 2048 + 2 * 4096) + 2048 * 64 + 4096 * 2048 + 8192 * 4 + 32 + 32 + 128)
    moe = 48 * (512 * 3 * 512 * 2048 + 3 * 512 * 2048 + 2048 + 512 * 2048)  # experts, shared, shared gate, router
    norms = (48 * 2 + 1) * 2048
    assert a.param_count() == embed + attn + deltanet + moe + norms == 79_674_391_296
    active_moe = 48 * (10 * 3 * 512 * 2048 + 3 * 512 * 2048 + 2048 + 512 * 2048)
    assert a.param_count(active=True) == embed + attn + deltanet + active_moe + norms == 3_874_929_408
    # state: conv over 2 key_dim + value_dim channels, delta-rule state of v_heads x k_dim x v_dim
    assert (a.conv_channels, a.conv_kernel, a.ssm_state_elems) == (2 * 16 * 128 + 32 * 128, 4, 32 * 128 * 128)
    assert a.ssm_kernel_state_bits == 32


@pytest.mark.parametrize("runtime, per_seq_state, block", [
    # vLLM bf16: (8192 x 3 + 524,288) x 2 = 1,097,728 padded to a 544-token page of 2048 bytes = 1,114,112, x 36 layers;
    # the attention layers' blocks grow to 544 tokens so that a page holds one layer's state
    ("vllm", 36 * 544 * 2048, 544),
    # transformers: 8192 x 4 x 2 + 524,288 x 4 (float32 state) = 2,162,688 per layer, x 36
    ("transformers", 36 * (8192 * 4 * 2 + 524288 * 4), 1),
    # llama.cpp: everything F32, kernel - 1 columns - (8192 x 3 + 524,288) x 4 = 2,195,456, x 36; 256-cell padding
    ("llama.cpp", 36 * (8192 * 3 + 524288) * 4, 256),
])
def test_qwen3_next_state_per_sequence_does_not_grow_with_context(runtime, per_seq_state, block):
    # fp8 weights leave vLLM a pool that holds all 8 sequences (bf16 weights would not fit an H200)
    quant = "fp8" if runtime == "vllm" else "bf16"

    def run(seq):
        return vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "custom", "custom_model": QWEN3_NEXT,
                                            "runtime": runtime, "quantization": quant, "seq_length": seq,
                                            "batch_size": 8, "trace": True})
    short, long_ = run(2048), run(32768)
    for out in (short, long_):
        t = _trace(out)
        assert t["recurrent_state_bytes_per_seq"] == per_seq_state
        assert t["kv_bytes_per_seq"] == t["kv_attention_bytes_per_seq"] + per_seq_state
        assert t["recurrent_state_gpu_bytes"] == 8 * per_seq_state
        assert out["memory_details"]["Recurrent State"] == round(8 * per_seq_state / 2**30, 2)
    # only the 12 global layers' keys and values grow: 12 x 2 x 2 x 256 x 2 bytes = 24,576 per token (in whole blocks)
    growth = _trace(long_)["kv_attention_bytes_per_seq"] - _trace(short)["kv_attention_bytes_per_seq"]
    assert growth == 24576 * (-(-32768 // block) - -(-2048 // block)) * block
    assert any("36 gated DeltaNet layers keep" in a for a in short["assumptions"])


def test_vllm_pool_admits_hybrid_sequences_by_their_whole_cost():
    out = vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "custom", "custom_model": QWEN3_NEXT,
                                       "runtime": "vllm", "quantization": "fp8", "seq_length": 2048, "trace": True})
    t = _trace(out)
    # one sequence: 24,576 bytes x 2176 tokens (544-token blocks) + 40,108,032 bytes of state = 93,585,408
    assert t["kv_bytes_per_seq"] == 24576 * 2176 + 36 * 544 * 2048 == 93_585_408
    assert out["kv_pool"]["sequences_at_seq_length"] == int(t["kv_pool_bytes"] // 93_585_408) > 100
    assert out["kv_pool"]["tokens"] == out["kv_pool"]["sequences_at_seq_length"] * 2048


# -- Granite 4.0-H, Nemotron-H, Jamba ---------------------------------------------------------

def test_granite_h_small_mamba2_and_moe_on_every_layer_by_hand():
    a = from_hf_config(GRANITE_H_SMALL)
    assert (a.num_full_layers, a.num_recurrent_layers, len(a.moe_layers)) == (4, 36, 40)
    conv = 2 * 4096 + 2 * 1 * 128  # d_inner + 2 n_groups d_state
    mamba = 36 * (4096 * (8192 + conv + 128) + conv * 4 + conv + 3 * 128 + 8192 + 8192 * 4096)
    attn = 4 * (4096 * 4096 * 2 + 2 * 4096 * 1024)
    ffn = 40 * (72 * 3 * 768 * 4096 + 3 * 1536 * 4096 + 4096 * 72)  # experts, shared MLP, router
    assert a.param_count() == 100352 * 4096 + mamba + attn + ffn + (40 * 2 + 1) * 4096 == 32_207_337_984
    assert (a.conv_channels, a.ssm_state_elems) == (8448, 128 * 64 * 128)


def test_granite_h_dense_uses_the_shared_mlp_as_its_ffn():
    dense = dict(GRANITE_H_SMALL, num_local_experts=0, shared_intermediate_size=8192)
    dense.pop("num_experts_per_tok")
    a = from_hf_config(dense)
    assert not a.is_moe and a.intermediate_size == 8192
    assert a.param_roles()["ffn_down"] == 40 * 8192 * 4096


def test_nemotron_h_pattern_blocks_by_hand():
    cfg = {"model_type": "nemotron_h", "hidden_size": 64, "num_hidden_layers": 4, "hybrid_override_pattern": "M-M*",
           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128,
           "vocab_size": 100, "tie_word_embeddings": False, "mamba_num_heads": 4, "mamba_head_dim": 16, "n_groups": 2,
           "ssm_state_size": 8, "conv_kernel": 4, "use_conv_bias": True, "use_bias": False}
    a = from_hf_config(cfg)
    assert a.layer_types == ("recurrent", "none", "recurrent", "full")
    # mixer: conv over 64 + 2 x 2 x 8 = 96; in_proj 64 x (64 + 96 + 4), conv 96 x 4 + 96, dt/A/D 12, norm 64, out 64 x 64
    mixer = 64 * 164 + 96 * 4 + 96 + 12 + 64 + 64 * 64
    attn = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64
    mlp = 2 * 64 * 128  # squared-ReLU MLP: up and down only
    norms = 4 * 64 + 64  # one pre-norm per block, plus the final one
    assert a.param_count() == 2 * 100 * 64 + 2 * mixer + attn + mlp + norms == 72_088
    assert a.kv_elements_per_token_per_layer == 2 * 2 * 16 and a.num_kv_full_layers == 1


def _nemotron3_nano() -> dict:
    """The catalog entry's config (nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16 config.json)."""
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parent.parent / "catalogs" / "models" / "nvidia.yaml"
    return yaml.safe_load(path.read_text())["models"]["nvidia-nemotron-3-nano-30b-a3b"]["config"]


def test_nemotron3_nano_counts_mamba2_moe_and_attention_blocks_by_hand():
    """nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B: 23 M, 23 E, 6 * blocks of width 2688 (NVIDIA: 31.6B total)."""
    a = from_hf_config(_nemotron3_nano())
    assert (a.num_recurrent_layers, len(a.moe_layers), a.num_full_layers) == (23, 23, 6)
    h = 2688
    # Mamba2 mixer: d_inner 64 heads x 64 = 4096, conv over 4096 + 2 x 8 groups x 128 = 6144 channels;
    # in_proj h x (4096 + 6144 + 64), conv 6144 x 4 + bias 6144, dt_bias / A_log / D 3 x 64, gated norm 4096,
    # out_proj 4096 x h, plus the block's pre-norm
    mamba = h * 10304 + 6144 * 4 + 6144 + 3 * 64 + 4096 + 4096 * h + h
    assert mamba == 38_744_896
    # attention: q 32 x 128, k and v 2 x 128 each, o back to h (no bias), plus the pre-norm
    attn = h * 4096 + 2 * h * 256 + 4096 * h + h
    # MoE: 128 squared-ReLU experts of up + down (1856 wide), the shared expert of its own width 3712
    # (moe_shared_expert_intermediate_size, not n_shared_experts x 1856), the router 128 x h, the pre-norm
    moe = 128 * 2 * 1856 * h + 2 * 3712 * h + 128 * h + h
    embed = 2 * 131072 * h  # untied embedding and output head
    total = 23 * mamba + 6 * attn + 23 * moe + embed + h
    assert a.param_count() == total == 31_577_937_344  # NVIDIA: "31.6B total"
    # a token runs 6 of the 128 experts; "3.2B active (3.6B with embeddings)"
    active_moe = 6 * 2 * 1856 * h + 2 * 3712 * h + 128 * h + h
    active = 23 * mamba + 6 * attn + 23 * active_moe + embed + h
    assert a.param_count(active=True) == active == 3_580_073_408
    assert active - 131072 * h == 3_227_751_872
    # keys and values of the 6 attention blocks: 2 x 2 KV heads x 128 = 512 elements per token per layer
    assert a.kv_elements_per_token_per_layer == 512 and a.num_kv_full_layers == 6
    # SSM state 64 heads x 64 x 128 per Mamba layer; float32 by the config's mamba_ssm_cache_dtype
    assert (a.conv_channels, a.ssm_state_elems, a.ssm_cache_bits) == (6144, 524288, 32)


def test_nemotron3_nano_state_and_kv_per_sequence_in_vllm_by_hand():
    out = vramplan.estimate_inference({"gpu_key": "b200", "llm_key": "nvidia-nemotron-3-nano-30b-a3b",
                                       "runtime": "vllm", "quantization": "bf16", "seq_length": 4096,
                                       "batch_size": 4, "trace": True})
    t = _trace(out)
    # vLLM keeps the SSM state in the config's float32 (NemotronHForCausalLMConfig), the conv state in bf16:
    # 6144 x 3 x 2 + 524,288 x 4 = 2,134,016 bytes per Mamba layer
    assert t["ssm_state_bits"] == 32 and t["recurrent_state_bytes_layer"] == 2_134_016
    # bf16 keys and values: 2 x 2 x 128 x 2 = 1024 bytes per token per attention layer; the state is padded to one
    # attention page of 16 x ceil(2,134,016 / (16 x 1024)) = 2096 tokens = 2,146,304 bytes, x 23 Mamba layers
    assert t["kv_block_tokens"] == 2096
    assert t["recurrent_state_bytes_per_seq"] == 23 * 2096 * 1024 == 49_364_992
    # 4096 tokens in 2096-token blocks -> 4192 tokens x 6 layers x 1024 bytes
    assert t["kv_attention_bytes_per_seq"] == 4192 * 6 * 1024
    assert t["recurrent_state_gpu_bytes"] == 4 * 49_364_992
    # transformers does not read mamba_ssm_cache_dtype: the state stays in the model's bf16 (whole kernel of conv)
    tf = _trace(vramplan.estimate_inference({"gpu_key": "b200", "llm_key": "nvidia-nemotron-3-nano-30b-a3b",
                                             "runtime": "transformers", "quantization": "bf16", "seq_length": 4096,
                                             "trace": True}))
    assert tf["ssm_state_bits"] == 16
    assert tf["recurrent_state_bytes_per_seq"] == 23 * (6144 * 4 * 2 + 524288 * 2)


def test_nemotron_h_bad_ssm_cache_dtype_names_the_field():
    with pytest.raises(RequestError, match="custom_model.mamba_ssm_cache_dtype"):
        from_hf_config({**_nemotron3_nano(), "mamba_ssm_cache_dtype": "float8"})
    without = {k: v for k, v in _nemotron3_nano().items() if k != "mamba_ssm_cache_dtype"}
    assert from_hf_config(without).ssm_cache_bits == 0  # not stated: the runtime's own rule applies


def test_jamba_mamba1_layers_from_periods_by_hand():
    cfg = {"model_type": "jamba", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
           "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 100, "tie_word_embeddings": False,
           "num_experts": 4, "num_experts_per_tok": 2, "attn_layer_period": 2, "attn_layer_offset": 1,
           "expert_layer_period": 2, "expert_layer_offset": 1, "mamba_d_state": 8, "mamba_d_conv": 4,
           "mamba_expand": 2, "mamba_dt_rank": "auto", "mamba_conv_bias": True, "mamba_proj_bias": False}
    a = from_hf_config(cfg)
    assert a.layer_types == ("recurrent", "full", "recurrent", "full") and a.moe_layers == (1, 3)
    # d_inner 128, dt_rank ceil(64 / 16) = 4: in_proj 64 x 256, conv 128 x 4 + 128, x_proj 128 x (4 + 16),
    # dt_proj 4 x 128 + 128, A_log 128 x 8, D 128, dt/B/C norms 4 + 8 + 8, out_proj 128 x 64
    mixer = 64 * 256 + 128 * 4 + 128 + 128 * 20 + 4 * 128 + 128 + 128 * 8 + 128 + 20 + 128 * 64
    attn = 64 * 64 + 2 * 64 * 32 + 64 * 64
    ffn = 2 * 3 * 64 * 128 + 2 * (4 * 3 * 64 * 128 + 64 * 4)  # 2 dense layers, 2 MoE layers with router
    assert a.param_count() == 2 * 100 * 64 + 2 * mixer + 2 * attn + ffn + (4 * 2 + 1) * 64 == 343_400
    assert (a.conv_channels, a.ssm_state_elems, a.recurrent_kind) == (128, 128 * 8, "mamba")


# -- Gemma 3n, Llama 3.2 Vision ---------------------------------------------------------------

def test_gemma3n_e4b_text_tower_by_hand_and_kv_sharing():
    a = from_hf_config(GEMMA3N_E4B)
    h, L, hpl, n = 2048, 35, 256, 4
    embed = 262400 * h  # tied head
    ple = 262144 * L * hpl
    per_layer = (h * 8 * 256 + 2 * h * 2 * 256 + 8 * 256 * h + 2 * 256  # q, k, v, o, q/k norm (v_norm has no weight)
                 + 3 * h * 16384 + 4 * h  # MLP, four norms
                 + (n * n + n ** 3 + h * n + 2 * h)  # AltUp
                 + (2 * 64 * h + h)  # LAuReL
                 + (2 * h * hpl + h))  # per-layer input gate, projection, norm
    model_level = h * L * hpl + hpl + 2 * (n - 1) * h * h + h  # per-layer model projection + norm, AltUp, final norm
    assert a.param_count() == embed + ple + L * per_layer + model_level == 6_866_696_688
    assert a.param_roles()["per_layer_embd"] == ple and a.param_roles(active=True)["per_layer_embd"] == 0
    # the last 15 layers read the cache of the last earlier layer of their type: 16 sliding + 4 global keep one
    assert (a.num_kv_sliding_layers, a.num_kv_full_layers) == (16, 4)
    assert (a.num_sliding_layers, a.num_full_layers, a.sliding_window) == (28, 7, 512)
    assert a.image_tokens_per_image == 256


def test_gemma3n_per_layer_embeddings_follow_the_token_embedding():
    base = {"gpu_key": "rtx_4090", "llm_key": "custom", "custom_model": GEMMA3N_E4B, "quantization": "bf16",
            "seq_length": 4096, "trace": True}
    on_gpu = _trace(vramplan.estimate_inference({**base, "runtime": "transformers"}))
    on_host = _trace(vramplan.estimate_inference({**base, "runtime": "llama.cpp"}))
    ple_bytes = 262144 * 35 * 256 * 2
    assert on_gpu["ple_weights_bytes"] == on_host["ple_weights_bytes"] == ple_bytes
    assert on_gpu["embd_gpu_bytes"] == 262400 * 2048 * 2 + ple_bytes and on_host["embd_gpu_bytes"] == 0


def test_gemma3n_images_add_soft_tokens_to_the_context():
    base = {"gpu_key": "rtx_4090", "llm_key": "custom", "custom_model": GEMMA3N_E4B, "quantization": "bf16",
            "runtime": "transformers", "seq_length": 4096, "trace": True}
    none, two = (_trace(vramplan.estimate_inference({**base, "images_per_sequence": k})) for k in (0, 2))
    assert two["kv_tokens_full"] - none["kv_tokens_full"] == 2 * 256  # transformers: no blocks, the context itself
    # transformers keeps the whole prompt in sliding layers too: 20 caching layers x 2048 bytes x 512 tokens
    assert two["kv_attention_bytes_per_seq"] - none["kv_attention_bytes_per_seq"] == 20 * 2048 * 512


def test_llama32_vision_counts_cross_attention_and_its_vision_encoder_by_hand():
    a = from_hf_config(MLLAMA_11B)
    assert (a.num_full_layers, a.num_cross_layers, a.cross_tokens_per_image) == (32, 8, 4 * (40 * 40 + 1))
    layer = 4096 * 4096 * 2 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    text = (128256 + 8) * 4096 + 128256 * 4096 + 40 * layer + 8 * (2 * 128 + 2) + 4096
    vit_layer = 4 * 1280 * 1280 + (1280 * 5120 + 5120) + (5120 * 1280 + 1280) + 4 * 1280
    vision = (3 * 14 * 14 * 1280 + 1280 + 1601 * 1280 + 1 + 9 * 4 * 1601 * 1280 + 2 * (9 * 4 * 1280 + 1) + 4 * 1280
              + 32 * vit_layer + 8 * (vit_layer + 2))
    projector = 7680 * 4096 + 4096
    assert a.vision_params == vision + projector
    assert a.param_count() == text + vision + projector == 10_670_220_835


def test_llama32_vision_caches_image_tokens_in_cross_attention_layers():
    base = {"gpu_key": "h100_80", "llm_key": "custom", "custom_model": MLLAMA_11B, "quantization": "bf16",
            "runtime": "transformers", "seq_length": 4096, "trace": True}
    text_only = _trace(vramplan.estimate_inference(base))
    one_image = vramplan.estimate_inference({**base, "images_per_sequence": 1})
    t = _trace(one_image)
    assert text_only["kv_attention_bytes_per_seq"] == 32 * 4096 * 4096  # cross layers hold nothing without images
    # 8 cross-attention layers x 6404 vision tokens x (2 x 8 x 128 x 2) bytes
    assert t["kv_attention_bytes_per_seq"] - text_only["kv_attention_bytes_per_seq"] == 8 * 6404 * 4096
    assert t["kv_tokens_full"] == 4096 and t["kv_tokens_cross"] == 6404  # vision tokens stay out of the text context
    assert any("6404 vision tokens" in a for a in one_image["assumptions"])


def test_images_on_a_text_model_are_ignored_with_a_warning():
    out = vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "images_per_sequence": 3})
    assert any("images_per_sequence is ignored" in w for w in out["warnings"])


# -- bad configs name the field ---------------------------------------------------------------

@pytest.mark.parametrize("change, field", [
    ({"layer_types": ["linear_attention", "sliding"] * 24}, "custom_model.layer_types[1]"),
    ({"layer_types": ["full_attention"] * 3}, "custom_model.layer_types"),
    ({"linear_num_value_heads": 0}, "custom_model.linear_num_value_heads"),
])
def test_qwen3_next_bad_keys(change, field):
    with pytest.raises(RequestError) as exc:
        from_hf_config({**QWEN3_NEXT, **change})
    assert field in {w for w, _ in exc.value.problems}


def test_granite_and_nemotron_bad_keys_name_the_field():
    with pytest.raises(RequestError, match="custom_model.mamba_d_head"):
        from_hf_config({**GRANITE_H_SMALL, "mamba_d_head": 48})
    with pytest.raises(RequestError, match="custom_model.hybrid_override_pattern"):
        from_hf_config({"model_type": "nemotron_h", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
                        "intermediate_size": 128, "vocab_size": 100, "hybrid_override_pattern": "MX-*"})
    with pytest.raises(RequestError, match="text_config.cross_attention_layers"):
        from_hf_config({**MLLAMA_11B, "text_config": {**MLLAMA_11B["text_config"], "cross_attention_layers": [41]}})


def test_missing_family_keys_fall_back_to_the_config_class_and_say_so():
    cfg = {k: v for k, v in QWEN3_NEXT.items() if k not in ("linear_conv_kernel_dim", "full_attention_interval")}
    a = from_hf_config(cfg)
    assert a.conv_kernel == 4 and a.num_full_layers == 12
    assert any("linear_conv_kernel_dim = 4" in x for x in a.assumed)


def test_gemma3n_vision_and_audio_towers_by_hand():
    from vramplan.catalog import get_catalog

    a = get_catalog().architectures["gemma-3n-e4b-it"]
    vision = 294_284_096 + 128 * 2048 + 2 * 2048 + 2048 * 2048  # keras-hub MobileNetV5-300M + its embedder
    # audio: conv 1 -> 128 (3x3) + norm, 128 -> 32 (3x3) + norm; frequency 128 -> 64 -> 32; 32 x 32 -> 1536
    sscp = 1 * 128 * 9 + 128 + 128 * 32 * 9 + 32 + 32 * 32 * 1536
    h = 1536
    block = (2 * (2 * h + 8 * h * h)  # two feed-forwards: pre/post norm, h -> 4h -> h
             + (h + 3 * h * h + 192 + h * h + h * h + h)  # attention: norm, q/k/v, per-dim scale, positions, out, norm
             + (h + 2 * h * h + 5 * h + h + h * h)  # light conv: norm, h -> 2h, depthwise k=5, norm, h -> h
             + h)  # block norm
    audio = sscp + 12 * block + 128 * 1536 + 2 * 1536 + 1536 * 2048
    assert a.vision_params == vision + audio == 983_438_688
    assert a.param_count() == 6_866_696_688 + vision + audio == 7_850_135_376


def test_catalog_entries_of_new_architectures_have_their_layouts():
    from vramplan.catalog import get_catalog

    archs = get_catalog().architectures
    assert archs["qwen3-next-80b-a3b-instruct"].num_recurrent_layers == 36
    assert archs["granite-4.0-h-small"].num_recurrent_layers == 36 and archs["granite-4.0-h-small"].num_full_layers == 4
    assert archs["llama-3.2-11b-vision-instruct"].num_cross_layers == 8
    assert sum(archs["gemma-3n-e4b-it"].kv_shared) == 15
    nano = archs["nvidia-nemotron-3-nano-30b-a3b"]
    assert (nano.num_recurrent_layers, len(nano.moe_layers), nano.num_full_layers) == (23, 23, 6)


def _hybrid_gguf(path, arch: str, kv_heads):
    from gguf import GGUFWriter
    from gguf_fixtures import finish_gguf

    w = GGUFWriter(str(path), arch)
    w.add_block_count(4)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(kv_heads)
    w.add_key_length(16)
    w.add_context_length(4096)
    w.add_expert_count(4)
    w.add_expert_used_count(2)
    w.add_expert_feed_forward_length(32)
    w.add_uint32(f"{arch}.expert_shared_feed_forward_length", 64)
    w.add_uint32(f"{arch}.ssm.conv_kernel", 4)
    w.add_uint32(f"{arch}.ssm.state_size", 16)
    w.add_uint32(f"{arch}.ssm.group_count", 2 if arch == "qwen3next" else 1)
    w.add_uint32(f"{arch}.ssm.time_step_rank", 4)
    w.add_uint32(f"{arch}.ssm.inner_size", 64 if arch == "qwen3next" else 128)
    if arch == "qwen3next":
        w.add_uint32(f"{arch}.full_attention_interval", 4)
    finish_gguf(w)


def test_hybrid_gguf_headers_give_the_recurrent_layout(tmp_path):
    """llama.cpp writes the recurrent geometry as {arch}.ssm.* (convert_hf_to_gguf.py Qwen3NextModel,
    GraniteHybridModel); Granite's Mamba layers have 0 KV heads."""
    from vramplan.modelfiles import read_model_file

    _hybrid_gguf(tmp_path / "qn.gguf", "qwen3next", 2)
    a = from_hf_config(read_model_file(tmp_path / "qn.gguf")["config"])
    assert a.layer_types == ("recurrent", "recurrent", "recurrent", "full")
    # key_dim 2 x 16 = 32, value_dim 4 x 16 = 64: conv over 2 x 32 + 64 = 128; state 4 heads x 16 x 16
    assert (a.conv_channels, a.ssm_state_elems, a.shared_expert_intermediate_size) == (128, 1024, 64)
    _hybrid_gguf(tmp_path / "gr.gguf", "granitehybrid", [0, 0, 2, 0])
    g = from_hf_config(read_model_file(tmp_path / "gr.gguf")["config"])
    assert g.layer_types == ("recurrent", "recurrent", "full", "recurrent") and g.num_kv_heads == 2
    # d_inner 128 = 4 heads x 32; conv over 128 + 2 x 1 x 16 = 160; state 4 x 32 x 16
    assert (g.conv_channels, g.ssm_state_elems, g.shared_expert_intermediate_size) == (160, 2048, 64)


@pytest.mark.parametrize("moe", [False, True])
def test_a_nemotron_h_gguf_header_gives_its_blocks(tmp_path, moe):
    """llama.cpp's NemotronHModel (a GraniteHybridModel) writes no pattern string: per layer head_count_kv > 0 is an
    attention block, feed_forward_length > 0 an MLP (MoE under arch nemotron_h_moe) block, both 0 a Mamba2 block; the
    MoE converter appends the multi-token-prediction block (both > 0) after the layers, with nextn_predict_layers."""
    from gguf import GGUFWriter
    from gguf_fixtures import decoder_header, finish_gguf

    from vramplan.modelfiles import read_model_file

    arch = "nemotron_h_moe" if moe else "nemotron_h"
    blocks = "ME*EME" if moe else "M*M-M*"
    w = GGUFWriter(str(tmp_path / "nh.gguf"), arch)
    decoder_header(w, layers=len(blocks) + moe, ff=[32 if c in "-E" else 0 for c in blocks] + [32] * moe,
                   kv=[2 if c == "*" else 0 for c in blocks] + [2] * moe, key_length=16,
                   ssm={"conv_kernel": 4, "state_size": 16, "group_count": 2, "inner_size": 128, "time_step_rank": 8})
    if moe:
        w.add_expert_count(8)
        w.add_expert_used_count(2)
        w.add_expert_feed_forward_length(32)
        w.add_expert_shared_feed_forward_length(48)
        w.add_uint32(f"{arch}.nextn_predict_layers", 1)
    finish_gguf(w)
    config = read_model_file(tmp_path / "nh.gguf")["config"]
    assert (config["model_type"], config["hybrid_override_pattern"], config["num_hidden_layers"]) == ("nemotron_h", blocks, 6)
    a = from_hf_config(config)
    kinds = {"M": "recurrent", "*": "full", "-": "none", "E": "none"}
    assert a.layer_types == tuple(kinds[c] for c in blocks)
    # 8 heads of 128 / 8 = 16: conv over 128 + 2 groups x 2 x 16 = 192 channels; state 8 x 16 x 16
    assert (a.conv_channels, a.conv_kernel, a.ssm_state_elems) == (192, 4, 2048)
    if moe:
        assert (a.moe_layers, a.num_experts, a.experts_per_token, a.shared_expert_intermediate_size) == ((1, 3, 5), 8, 2, 48)


def test_a_jamba_gguf_header_gives_its_mamba_layers(tmp_path):
    """llama.cpp's JambaModel writes the Mamba (v1) mixer as jamba.ssm.* - inner_size = mamba_expand x hidden,
    time_step_rank = mamba_dt_rank - and head_count_kv per layer, 0 on the Mamba layers."""
    from gguf import GGUFWriter
    from gguf_fixtures import decoder_header, finish_gguf

    from vramplan.modelfiles import read_model_file

    w = GGUFWriter(str(tmp_path / "jamba.gguf"), "jamba")
    decoder_header(w, layers=4, ff=128, kv=[0, 2, 0, 0],
                   ssm={"conv_kernel": 4, "state_size": 16, "inner_size": 128, "time_step_rank": 4})
    finish_gguf(w)
    a = from_hf_config(read_model_file(tmp_path / "jamba.gguf")["config"])
    assert a.layer_types == ("recurrent", "full", "recurrent", "recurrent")
    # d_inner 2 x 64 = 128 conv channels; the SSM state 128 x 16
    assert (a.conv_channels, a.conv_kernel, a.ssm_state_elems) == (128, 4, 2048)
