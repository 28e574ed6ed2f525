"""Gemma 4 (vramplan.families._gemma4): global layers with heads of their own, keys reused as values, KV-sharing layers
without k / v projections, an MoE block beside the MLP, per-layer embeddings, vision and audio towers.

Counts are itemized by hand from transformers' models/gemma4/modeling_gemma4.py (Gemma4TextAttention, Gemma4TextMLP,
Gemma4TextRouter, Gemma4TextExperts, Gemma4TextDecoderLayer, Gemma4TextModel, Gemma4VisionModel, Gemma4AudioModel,
Gemma4MultimodalEmbedder); the cache layout from the same attention forward and vLLM's gemma4.py (both cache a value
row beside every key row, also where attention_k_eq_v makes the key projection the value).
"""

from __future__ import annotations

import copy

import pytest

import vramplan
from vramplan.architecture import from_hf_config
from vramplan.errors import RequestError

S, F = "sliding_attention", "full_attention"

#: google/gemma-4-31B-it's config.json as transformers 5.7.0 serializes it (a public model report that also lists
#: every tensor: 31,273,088,876 parameters); the keys vramplan reads, the rest (token ids, eps ...) left out.
GEMMA4_31B = {
    "architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4", "tie_word_embeddings": True,
    "vision_soft_tokens_per_image": 280,
    "text_config": {
        "model_type": "gemma4_text", "attention_bias": False, "attention_k_eq_v": True, "enable_moe_block": False,
        "expert_intermediate_size": None, "final_logit_softcapping": 30.0, "global_head_dim": 512, "head_dim": 256,
        "hidden_size": 5376, "hidden_size_per_layer_input": 0, "intermediate_size": 21504,
        "layer_types": ([S] * 5 + [F]) * 10, "max_position_embeddings": 262144, "moe_intermediate_size": None,
        "num_attention_heads": 32, "num_experts": None, "num_global_key_value_heads": 4, "num_hidden_layers": 60,
        "num_key_value_heads": 16, "num_kv_shared_layers": 0,
        "rope_parameters": {"full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1000000.0,
                                               "rope_type": "proportional"},
                            "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}},
        "sliding_window": 1024, "tie_word_embeddings": True, "top_k_experts": None,
        "use_bidirectional_attention": "vision", "use_double_wide_mlp": False, "vocab_size": 262144,
        "vocab_size_per_layer_input": 262144},
    "vision_config": {
        "model_type": "gemma4_vision", "default_output_length": 280, "head_dim": 72, "hidden_size": 1152,
        "intermediate_size": 4304, "num_attention_heads": 16, "num_hidden_layers": 27, "num_key_value_heads": 16,
        "patch_size": 16, "pooling_kernel_size": 3, "position_embedding_size": 10240, "standardize": True,
        "use_clipped_linears": False},
}

#: The E-model towers (Gemma4VisionConfig's defaults with clipped linears, and the released audio_config as ollama's
#: tests copy it).
VISION_E = {"model_type": "gemma4_vision", "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 16,
            "num_attention_heads": 12, "num_key_value_heads": 12, "head_dim": 64, "patch_size": 16,
            "position_embedding_size": 10240, "use_clipped_linears": True, "standardize": False}
AUDIO_E = {"model_type": "gemma4_audio", "hidden_size": 1024, "num_hidden_layers": 12, "num_attention_heads": 8,
           "conv_kernel_size": 5, "output_proj_dims": 1536, "subsampling_conv_channels": [128, 32],
           "use_clipped_linears": True}

#: Text configs of the other sizes as several public test fixtures agree on them (E4B / E2B: not a config.json read here,
#: kept out of the catalog; 26B A4B's is pinned key for key by several loaders and is the catalog's gemma-4-26b-a4b-it,
#: with 31B's vision tower). 26B A4B: 128 experts, 8 a token, MoE beside a 2112-wide MLP; E4B / E2B: per-layer embeddings
#: and the last 18 / 20 layers sharing KV (E2B's shared layers with a double-wide MLP).
GEMMA4_26B_A4B_TEXT = {
    "model_type": "gemma4_text", "hidden_size": 2816, "num_hidden_layers": 30, "intermediate_size": 2112,
    "num_attention_heads": 16, "num_key_value_heads": 8, "num_global_key_value_heads": 2, "head_dim": 256,
    "global_head_dim": 512, "vocab_size": 262144, "max_position_embeddings": 262144, "sliding_window": 1024,
    "final_logit_softcapping": 30.0, "use_double_wide_mlp": False, "num_kv_shared_layers": 0,
    "hidden_size_per_layer_input": 0, "attention_k_eq_v": True, "enable_moe_block": True, "num_experts": 128,
    "top_k_experts": 8, "moe_intermediate_size": 704, "tie_word_embeddings": True, "layer_types": ([S] * 5 + [F]) * 5}
GEMMA4_E4B_TEXT = {
    "model_type": "gemma4_text", "hidden_size": 2560, "num_hidden_layers": 42, "intermediate_size": 10240,
    "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 256, "global_head_dim": 512, "vocab_size": 262144,
    "max_position_embeddings": 131072, "sliding_window": 512, "final_logit_softcapping": 30.0,
    "use_double_wide_mlp": False, "num_kv_shared_layers": 18, "hidden_size_per_layer_input": 256,
    "vocab_size_per_layer_input": 262144, "attention_k_eq_v": False, "enable_moe_block": False,
    "tie_word_embeddings": True, "layer_types": ([S] * 5 + [F]) * 7}
GEMMA4_E2B_TEXT = {
    "model_type": "gemma4_text", "hidden_size": 1536, "num_hidden_layers": 35, "intermediate_size": 6144,
    "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256, "global_head_dim": 512,
    "num_global_key_value_heads": None, "attention_k_eq_v": False, "sliding_window": 512, "vocab_size": 262144,
    "vocab_size_per_layer_input": 262144, "hidden_size_per_layer_input": 256, "num_kv_shared_layers": 20,
    "use_double_wide_mlp": True, "max_position_embeddings": 131072, "final_logit_softcapping": 30.0,
    "layer_types": ([S] * 4 + [F]) * 7}

#: A small dense config that takes every path: 6 layers (the last forced global), global heads of 32 with 2 KV heads
#: and keys as values, the last 2 layers sharing KV with a double-wide MLP, per-layer embeddings of 8.
SMALL = {
    "model_type": "gemma4_text", "hidden_size": 64, "num_hidden_layers": 6, "intermediate_size": 128,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "global_head_dim": 32,
    "num_global_key_value_heads": 2, "attention_k_eq_v": True, "vocab_size": 100, "vocab_size_per_layer_input": 100,
    "hidden_size_per_layer_input": 8, "num_kv_shared_layers": 2, "use_double_wide_mlp": True, "sliding_window": 8192,
    "max_position_embeddings": 8192, "layer_types": [S, S, F, S, S, S]}

#: A small MoE config: one sliding and one global layer, 4 experts of 16, 2 a token, beside a 32-wide MLP; without
#: attention_k_eq_v the global layer keeps num_key_value_heads (num_global_key_value_heads is not applied) and v_proj.
SMALL_MOE = {
    "model_type": "gemma4_text", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 32,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "global_head_dim": 32,
    "num_global_key_value_heads": 1, "attention_k_eq_v": False, "vocab_size": 100, "hidden_size_per_layer_input": 0,
    "enable_moe_block": True, "num_experts": 4, "top_k_experts": 2, "moe_intermediate_size": 16,
    "layer_types": [S, F]}


def _trace(out: dict) -> dict[str, float]:
    return {step["id"]: step["value"] for step in out["trace"]}


def test_small_dense_config_counts_every_gemma4_part_by_hand():
    a = from_hf_config(SMALL)
    assert a.layer_types == ("sliding", "sliding", "full", "sliding", "sliding", "full")  # last layer forced global
    assert a.kv_shared == (False, False, False, False, True, True)
    embedding = 100 * 64                                    # tied: no separate head
    sliding_own = 3 * (64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 16 + 16)  # q, k, v, o, q_norm, k_norm: 3 x 12,320
    full_own = 64 * 128 + 64 * 64 + 128 * 64 + 32 + 32      # q (4 x 32), k (2 x 32, no v_proj: k_eq_v), o; norms of 32
    sliding_shared = 64 * 64 + 64 * 64 + 16                 # layer 4: q, o, q_norm - no k / v / k_norm
    full_shared = 64 * 128 + 128 * 64 + 32                  # layer 5
    mlp = 3 * 64 * (4 * 128 + 2 * 256)                      # gate, up, down; the 2 sharing layers double-wide
    norms = 6 * 4 * 64 + 64 + 6                             # four a layer, the final norm, layer_scalar
    ple = 100 * 6 * 8 + 64 * 48 + 6 * 2 * 64 * 8 + 8 + 6 * 64  # table, model projection, gate / projection, norms
    total = embedding + sliding_own + full_own + sliding_shared + full_shared + mlp + norms + ple
    assert a.param_count() == total == 301_150
    assert a.param_roles()["per_layer_embd"] == 4_800
    # KV a token: sliding 2 heads x 16 x (K, V) = 64 elements; global 2 heads x 32 x 2 = 128 (V cached beside K)
    assert (a.kv_elements_per_token_per_layer, a.kv_elements_per_token_full_layer, a.kv_full_layer_scale) == (64, 128, 2.0)
    assert (a.num_kv_full_layers, a.num_kv_sliding_layers) == (1, 3)


def test_small_dense_config_kv_bytes_through_an_estimate():
    out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "custom", "custom_model": SMALL,
                                       "quantization": "bf16", "seq_length": 4096, "runtime": "transformers",
                                       "trace": True})
    v = _trace(out)
    # bf16: (1 global layer x 128 + 3 sliding x 64 elements) x 2 bytes x 4096 tokens (window 8192 > context)
    assert v["kv_attention_bytes_per_seq"] == (128 + 3 * 64) * 2 * 4096 == 2_621_440


def test_small_moe_config_runs_the_experts_beside_the_mlp():
    a = from_hf_config(SMALL_MOE)
    assert (a.num_experts, a.experts_per_token, a.moe_intermediate_size, a.shared_expert_intermediate_size) == (4, 2, 16, 32)
    embedding = 100 * 64
    sliding = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 16 + 16        # 12,320
    full = 64 * 128 + 2 * 64 * 64 + 128 * 64 + 32 + 32          # k and v of 2 heads x 32: 24,640
    mlp = 2 * 3 * 64 * 32                                        # the dense MLP on both layers
    experts = 2 * 4 * 3 * 64 * 16                                # gate_up [4, 32, 64] and down [4, 64, 16] a layer
    router = 2 * (64 * 4 + 64 + 4)                               # proj, scale, per_expert_scale
    norms = 2 * (4 + 3) * 64 + 64 + 2                            # four + three MoE norms a layer, final, layer_scalar
    total = embedding + sliding + full + mlp + experts + router + norms
    assert a.param_count() == total == 81_834
    assert a.param_count(active=True) == total - 2 * 2 * 3 * 64 * 16  # 2 of 4 experts a token
    assert a.kv_elements_per_token_full_layer == 2 * 2 * 32      # num_key_value_heads: k_eq_v off


def test_gemma4_31b_matches_the_checkpoint_tensor_by_tensor():
    a = from_hf_config(GEMMA4_31B)
    assert a.num_full_layers == 10 and a.num_sliding_layers == 50 and a.sliding_window == 1024
    assert a.final_softcap and a.tie_word_embeddings and a.image_tokens_per_image == 280
    h = 5376
    embedding = 262144 * h                                          # 1,409,286,144
    sliding = 50 * (h * 8192 + 2 * h * 4096 + 8192 * h + 2 * 256)   # 32 x 256 queries, 16 x 256 keys and values
    full = 10 * (h * 16384 + h * 2048 + 16384 * h + 2 * 512)        # 32 x 512 queries, 4 x 512 keys = values
    mlp = 60 * 3 * h * 21504
    norms = 60 * 4 * h + h + 60                                     # and 60 layer_scalar
    text = embedding + sliding + full + mlp + norms
    assert text == 30_697_345_340                                   # "30.7B" announced for the language model
    vh = 1152
    vision_layer = 4 * vh * vh + 3 * vh * 4304 + 4 * vh + 2 * 72
    vision = 27 * vision_layer + 768 * vh + 2 * 10240 * vh + 2 * vh + vh * h  # patches, positions, std_*, embed_vision
    assert a.param_count() == text + vision == 31_273_088_876       # the checkpoint's own total
    assert a.param_count(active=True) == text


def test_gemma4_31b_kv_bytes_per_token():
    a = from_hf_config(GEMMA4_31B)
    # sliding: 16 KV heads x 256 x (K, V) = 8192 elements; global: 4 x 512 x 2 = 4096 (values cached beside keys)
    assert (a.kv_elements_per_token_per_layer, a.kv_elements_per_token_full_layer, a.kv_full_layer_scale) == (8192, 4096, 0.5)
    out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "custom", "custom_model": GEMMA4_31B,
                                       "quantization": "bf16", "seq_length": 1024, "runtime": "transformers",
                                       "trace": True})
    # bf16 at 1024 tokens (the window): (50 x 8192 + 10 x 4096) x 2 bytes x 1024 = 922,746,880
    assert _trace(out)["kv_attention_bytes_per_seq"] == (50 * 8192 + 10 * 4096) * 2 * 1024 == 922_746_880


def test_gemma4_31b_global_layers_attend_with_their_wider_heads():
    """Global q_proj is 32 heads x 512 against the sliding layers' 32 x 256 (q_dim 8192): twice the attention FLOPs a
    query-key pair. One 4,096-token prompt: 2 x 8192 x (10 x 2 x 4096^2 + 50 x (2 x 1024 x 4096 - 1024^2))."""
    assert from_hf_config(GEMMA4_31B).attn_full_layer_scale == 2
    out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "custom", "custom_model": GEMMA4_31B,
                                       "quantization": "bf16", "runtime": "vllm", "input_tokens": 4096,
                                       "output_tokens": 256, "trace": True})
    tv = _trace(out)
    assert tv["prefill_seqs"] == 1
    assert tv["prefill_attn_flops"] == 16384 * (10 * 2 * 4096**2 + 50 * (2 * 1024 * 4096 - 1024**2)) == 11_510_512_353_280


def test_gemma4_31b_global_kv_heads_are_replicated_past_four_gpus():
    """Over 8 GPUs the sliding layers' 16 KV heads split 2 a GPU, the global layers' 4 are replicated (vLLM
    get_num_kv_heads: max(1, 4 // 8) = 1 a GPU). At 4,096 tokens a sliding layer keeps vLLM's window of 1,024 + its
    extra 16 tokens (1,040, one block more): 50 x 16,384 x 1,040 = 851,968,000 bytes, the global layers 10 x 8,192 x
    4,096 = 335,544,320; a GPU holds 851,968,000 / 8 + 335,544,320 / 4 = 190,382,080 of the 1,187,512,320. Over 4 GPUs
    both split 4 ways: a quarter."""
    def share(gpus):
        out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "custom", "custom_model": GEMMA4_31B,
                                           "quantization": "bf16", "runtime": "vllm", "num_gpus": gpus, "inference_parallelism": "tensor",
                                           "seq_length": 4096, "trace": True}, suggestions=False)
        tv = _trace(out)
        assert tv["kv_attention_bytes_per_seq"] == 50 * 16384 * 1040 + 10 * 8192 * 4096 == 1_187_512_320
        return tv["kv_share_per_gpu"]

    assert share(8) == pytest.approx((851_968_000 / 8 + 335_544_320 / 4) / 1_187_512_320) == 190_382_080 / 1_187_512_320
    assert share(4) == pytest.approx(0.25)


@pytest.mark.parametrize("text, towers, total, announced", [
    # the Gemma 4 model card (as the HF launch blog and several READMEs quote it): 26B A4B "25.2B total, 3.8B active"
    # (language model; the vision tower taken as 31B's)
    (GEMMA4_26B_A4B_TEXT, {"vision_config": GEMMA4_31B["vision_config"]}, 25_805_936_206, 25.2),
    # E4B: "8B with embeddings" - the whole checkpoint, towers included
    (GEMMA4_E4B_TEXT, {"vision_config": VISION_E, "audio_config": AUDIO_E}, 7_941_101_802, 8.0),
    # E2B: "5.1B with embeddings"
    (GEMMA4_E2B_TEXT, {"vision_config": VISION_E, "audio_config": AUDIO_E}, 5_104_298_467, 5.1),
])
def test_other_sizes_against_their_announced_totals(text, towers, total, announced):
    a = from_hf_config({"model_type": "gemma4", "text_config": text, **towers})
    roles = a.param_roles()
    assert a.param_count() == total
    counted = total - roles["vision"] if announced == 25.2 else total  # 26B's figure is its language model
    assert abs(counted / 1e9 - announced) < 0.1  # the model card's figures: 25.2B, "8B", 5.1B


def test_26b_a4b_active_and_e_models_effective_sizes():
    moe = from_hf_config({"model_type": "gemma4", "text_config": GEMMA4_26B_A4B_TEXT})
    assert moe.param_count() == 25_233_141_790
    assert round(moe.param_count(active=True) / 1e9, 1) == 3.8      # "3.8B active": 8 of 128 experts + the MLP
    for text, effective in ((GEMMA4_E4B_TEXT, 4.5), (GEMMA4_E2B_TEXT, 2.3)):
        a = from_hf_config({"model_type": "gemma4", "text_config": text,
                            "vision_config": VISION_E, "audio_config": AUDIO_E})
        roles = a.param_roles()
        # "effective": without the token embedding and the per-layer embedding table (both are lookups, which
        # runtimes may keep off the GPU); the towers stay in
        # (E4B 4.45B, E2B 2.35B against the card's 4.5B and 2.3B)
        assert abs((a.param_count() - roles["token_embd"] - roles["per_layer_embd"]) / 1e9 - effective) < 0.06


def test_e2b_shares_kv_from_layer_15_and_doubles_its_mlp_there():
    a = from_hf_config({"model_type": "gemma4", "text_config": GEMMA4_E2B_TEXT})
    assert sum(a.kv_shared) == 20 and (a.num_kv_full_layers, a.num_kv_sliding_layers) == (3, 12)
    assert a.ffn_widths == (6144,) * 15 + (12288,) * 20
    # global layers: 1 KV head of 512 (no k_eq_v: num_key_value_heads) against 1 of 256
    assert a.kv_full_layer_scale == 2.0


def test_defaults_and_nulls_read_as_the_config_class_does():
    bare = {"model_type": "gemma4_text", "hidden_size": 64, "num_hidden_layers": 12, "intermediate_size": 128,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 100,
            "vocab_size_per_layer_input": 100}
    a = from_hf_config(bare)
    assert a.layer_types == (("sliding",) * 5 + ("full",)) * 2 and a.sliding_window == 512
    assert a.full_head_dim == 512 and a.per_layer_embd_params == 100 * 12 * 256  # class defaults, reported
    assert any("global_head_dim = 512" in s for s in a.assumed)
    nulls = from_hf_config({**bare, "hidden_size_per_layer_input": None, "global_head_dim": None,
                            "num_kv_shared_layers": None})
    assert nulls.per_layer_embd_params == 0 and nulls.full_head_dim == 0 and not nulls.kv_shared


@pytest.mark.parametrize("path, value", [
    ("text_config.global_head_dim", "512"),
    ("text_config.global_head_dim", -1),
    ("text_config.num_global_key_value_heads", 10**30),
    ("text_config.top_k_experts", -2),
    ("text_config.attention_k_eq_v", "yes"),
    ("text_config.hidden_size_per_layer_input", 10**12),
    ("text_config.use_bidirectional_attention", ["all"]),
    ("vision_config.position_embedding_size", 10**12),
    ("vision_config.head_dim", "72"),
    ("audio_config.subsampling_conv_channels", [0, 32]),
    ("audio_config.output_proj_dims", 10**9),
])
def test_hostile_keys_are_refused_naming_the_key(path, value):
    cfg = copy.deepcopy(GEMMA4_31B)
    cfg.setdefault("audio_config", dict(AUDIO_E))
    node = cfg
    *parents, key = path.split(".")
    for p in parents:
        node = node[p]
    node[key] = value
    with pytest.raises(RequestError) as e:
        from_hf_config(cfg)
    assert [f for f, _ in e.value.problems] == [f"custom_model.{path}"]


def test_impossible_sharing_is_refused_naming_the_key():
    with pytest.raises(RequestError) as e:
        from_hf_config({**SMALL, "num_kv_shared_layers": 6})
    assert [f for f, _ in e.value.problems] == ["custom_model.num_kv_shared_layers"]
    with pytest.raises(RequestError) as e:  # a sharing global layer with no earlier global layer to read from
        from_hf_config({**SMALL, "layer_types": [S, S, S, S, S, S], "num_kv_shared_layers": 1})
    assert [f for f, _ in e.value.problems] == ["custom_model.layer_types[5]"]


def test_full_estimate_of_gemma4_31b_succeeds():
    out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "custom", "custom_model": GEMMA4_31B,
                                       "quantization": "bf16"})
    # bf16 weights alone are 31,273,088,876 x 2 bytes = 58.25 GiB
    assert out["model_weights_gb"] == pytest.approx(58.25, abs=0.01)
    assert 58.25 < out["vram_usage"] < 80


def test_the_26b_a4b_catalog_entry_is_the_pinned_text_config():
    from vramplan.catalog import get_catalog

    a = get_catalog().architectures["gemma-4-26b-a4b-it"]
    # the same text config as GEMMA4_26B_A4B_TEXT above (25,233,141,790 by the test of announced sizes) and 31B's tower
    assert a.param_count() == from_hf_config({"model_type": "gemma4", "text_config": GEMMA4_26B_A4B_TEXT,
                                              "vision_config": GEMMA4_31B["vision_config"]}).param_count() == 25_805_936_206
    assert a.param_count() - a.param_roles()["vision"] == 25_233_141_790
    assert (a.num_experts, a.experts_per_token, a.full_kv_heads, a.full_head_dim, a.full_k_eq_v) == (128, 8, 2, 512, True)
    entry = next(m for m in vramplan.list_models() if m["key"] == "gemma-4-26b-a4b-it")
    assert entry["params_b"] == 25.81 and entry["active_params_b"] == 3.82


def test_catalog_entry_reads_as_the_checkpoint():
    entry = next(m for m in vramplan.list_models() if m["key"] == "gemma-4-31b-it")
    assert entry["params_b"] == 31.3 and entry["context_length"] == 262144
    out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "gemma-4-31b-it", "quantization": "bf16"})
    assert out["model_weights_gb"] == pytest.approx(31_273_088_876 * 2 / 2**30, abs=0.01)


def test_gguf_tensor_list_follows_the_per_layer_attention_shapes():
    from vramplan.ggufmix import tensors

    a = from_hf_config(SMALL)
    listed = {role: sum(t.params for t in tensors(a) if t.role == role)
              for role in ("attn_q", "attn_k", "attn_v", "attn_output")}
    # the llama.cpp-style tensor list the GGUF mixes quantize carries the same attention weights as the count by role:
    # no attn_k / attn_v in the 2 sharing layers, no attn_v in the global one (k_eq_v)
    assert listed == {role: a.param_roles()[role] for role in listed}
    assert listed["attn_v"] == 3 * 64 * 32
