"""Qwen3.5 / 3.6 (transformers models/qwen3_5, qwen3_5_moe): Qwen3-Next's gated-DeltaNet and gated-attention layers,
a dense MLP on every layer (qwen3_5_text) or Qwen3-Next's MoE block on every layer (qwen3_5_moe_text), nested under
``text_config`` beside the Qwen3-VL vision tower. Every count below is worked out by hand from the modules the
transformers code builds."""

from __future__ import annotations

import json

import pytest

import vramplan
from vramplan.architecture import from_hf_config
from vramplan.errors import RequestError


def _types(n: int) -> list[str]:
    return ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(n)]


#: the config.json of Qwen/Qwen3.5-27B (architecture keys), as the catalog entry holds it
VISION_27B = {"model_type": "qwen3_5_vision", "depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
              "in_channels": 3, "patch_size": 16, "temporal_patch_size": 2, "spatial_merge_size": 2,
              "num_position_embeddings": 2304, "out_hidden_size": 5120, "deepstack_visual_indexes": []}
QWEN35_27B = {
    "model_type": "qwen3_5", "architectures": ["Qwen3_5ForConditionalGeneration"], "tie_word_embeddings": False,
    "text_config": {"model_type": "qwen3_5_text", "hidden_size": 5120, "intermediate_size": 17408, "num_hidden_layers": 64,
                    "num_attention_heads": 24, "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 248320,
                    "layer_types": _types(64), "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128,
                    "linear_value_head_dim": 128, "linear_num_key_heads": 16, "linear_num_value_heads": 48,
                    "tie_word_embeddings": False, "mtp_num_hidden_layers": 1},
    "vision_config": VISION_27B,
}


def _vision_by_hand(h, inter, depth, c, t, p, merge, pos, out, deepstack=0):
    """Qwen3VLVisionModel: Conv3d patch embedding with bias, pos_embed, blocks, the merger (and DeepStack mergers)."""
    block = (2 * 2 * h  # norm1, norm2: LayerNorm weight and bias
             + h * 3 * h + 3 * h + h * h + h  # qkv and proj, biased
             + h * inter + inter + inter * h + h)  # linear_fc1 / fc2, biased
    hm = h * merge * merge
    merger = hm * hm + hm + hm * out + out  # linear_fc1 (hm -> hm), linear_fc2 (hm -> out), biased
    return (c * t * p * p * h + h + pos * h + depth * block
            + 2 * h + merger  # the final merger's LayerNorm over h
            + deepstack * (2 * hm + merger))  # DeepStack mergers normalise after the shuffle (over hm)


def test_the_27b_counts_by_hand():
    a = from_hf_config(QWEN35_27B)
    h, v = 5120, 248320
    attn = 16 * (h * 24 * 256 * 2  # q_proj: query and output gate
                 + 2 * h * 4 * 256  # k_proj, v_proj
                 + 24 * 256 * h  # o_proj
                 + 2 * 256)  # q_norm, k_norm
    key_dim, value_dim = 16 * 128, 48 * 128
    conv = 2 * key_dim + value_dim  # 10,240 channels
    deltanet = 48 * (h * conv + h * value_dim + 2 * h * 48  # in_proj_qkv, in_proj_z, in_proj_b, in_proj_a
                     + conv * 4 + 48 + 48 + 128  # conv1d (no bias), dt_bias, A_log, the gated norm of head_v_dim
                     + value_dim * h)  # out_proj
    mlp = 64 * 3 * h * 17408
    norms = 64 * 2 * h + h
    text = 2 * v * h + attn + deltanet + mlp + norms
    vision = _vision_by_hand(1152, 4304, 27, 3, 2, 16, 2, 2304, 5120)
    assert a.vision_params == vision == 460_730_096
    assert a.param_count() == text + vision == 27_356_728_560
    assert a.layer_types.count("recurrent") == 48 and a.num_full_layers == 16
    # the DeltaNet state a sequence keeps: 48 value heads x 128 x 128, and the conv's last kernel - 1 inputs
    assert (a.ssm_state_elems, a.conv_channels, a.conv_kernel) == (48 * 128 * 128, conv, 4)


def test_a_moe_config_without_a_dense_width_is_moe_on_every_layer():
    """Qwen3_5MoeTextConfig has no intermediate_size, no decoder_sparse_step and no mlp_only_layers: every layer is
    Qwen3NextSparseMoeBlock - router, experts, a shared expert and its sigmoid gate (h -> 1)."""
    cfg = {"model_type": "qwen3_5_moe_text", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
           "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 100, "layer_types": _types(4),
           "linear_conv_kernel_dim": 4, "linear_key_head_dim": 8, "linear_value_head_dim": 8, "linear_num_key_heads": 2,
           "linear_num_value_heads": 4, "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
           "shared_expert_intermediate_size": 48}
    a = from_hf_config(cfg)
    assert a.moe_layers == (0, 1, 2, 3) and a.num_experts == 8
    h = 64
    attn = h * 4 * 16 * 2 + 2 * h * 2 * 16 + 4 * 16 * h + 2 * 16
    key_dim, value_dim = 16, 32
    conv = 2 * key_dim + value_dim
    deltanet = 3 * (h * conv + h * value_dim + 2 * h * 4 + conv * 4 + 4 + 4 + 8 + value_dim * h)
    moe = 4 * (h * 8 + 8 * 3 * h * 32 + 3 * h * 48 + h)  # router, experts, shared expert, shared_expert_gate
    total = 2 * 100 * h + attn + deltanet + moe + 4 * 2 * h + h
    assert a.param_count() == total
    active = 2 * 100 * h + attn + deltanet + 4 * (h * 8 + 2 * 3 * h * 32 + 3 * h * 48 + h) + 4 * 2 * h + h
    assert a.param_count(active=True) == active


def test_the_class_defaults_fill_what_a_config_leaves_out():
    """A bare Qwen3.5-MoE text config takes Qwen3_5MoeTextConfig's defaults (the 35B-A3B shape), each reported."""
    a = from_hf_config({"model_type": "qwen3_5_moe_text"})
    assert (a.hidden_size, a.num_layers, a.num_heads, a.num_kv_heads, a.head_dim, a.num_experts) == (2048, 40, 16, 2, 256, 256)
    assert a.layer_types == tuple("full" if (i + 1) % 4 == 0 else "recurrent" for i in range(40))
    assert any("moe_intermediate_size = 512" in x for x in a.assumed)
    assert any("linear_num_value_heads = 32" in x for x in a.assumed)
    dense = from_hf_config({"model_type": "qwen3_5_text"})
    assert (dense.hidden_size, dense.intermediate_size, dense.num_layers, dense.num_kv_heads) == (4096, 12288, 32, 4)


def test_catalog_entries_are_the_announced_sizes():
    from vramplan.catalog import get_catalog

    archs = get_catalog().architectures
    # 35B-A3B: 10 attention and 30 DeltaNet layers of width 2048, 256 experts of 512, top-8, and a shared one of 512
    a = archs["qwen3.5-35b-a3b"]
    h, v = 2048, 248320
    attn = 10 * (h * 16 * 256 * 2 + 2 * h * 2 * 256 + 16 * 256 * h + 2 * 256)
    conv = 2 * 2048 + 4096
    deltanet = 30 * (h * conv + h * 4096 + 2 * h * 32 + conv * 4 + 32 + 32 + 128 + 4096 * h)
    moe = 40 * (h * 256 + 256 * 3 * h * 512 + 3 * h * 512 + h)
    vision = _vision_by_hand(1152, 4304, 27, 3, 2, 16, 2, 2304, 2048)
    assert a.param_count() == 2 * v * h + attn + deltanet + moe + 40 * 2 * h + h + vision == 35_107_181_936
    # 122B-A10B: 12 attention (32 heads, 2 KV heads) and 36 DeltaNet layers (64 value heads) of width 3072, 256
    # experts of 1024, top-8, a shared one of 1024; the same vision tower into 3072
    a, h = archs["qwen3.5-122b-a10b"], 3072
    attn = 12 * (h * 32 * 256 * 2 + 2 * h * 2 * 256 + 32 * 256 * h + 2 * 256)
    conv = 2 * 2048 + 64 * 128
    deltanet = 36 * (h * conv + h * 8192 + 2 * h * 64 + conv * 4 + 64 + 64 + 128 + 8192 * h)
    moe = 48 * (h * 256 + 256 * 3 * h * 1024 + 3 * h * 1024 + h)
    vision = _vision_by_hand(1152, 4304, 27, 3, 2, 16, 2, 2304, 3072)
    text = 2 * v * h + attn + deltanet + 48 * 2 * h + h
    assert a.param_count() == text + moe + vision == 122_562_817_776  # "122B"
    active = text + 48 * (h * 256 + 8 * 3 * h * 1024 + 3 * h * 1024 + h)
    assert a.param_count(active=True) == active == 9_771_288_576  # "10B activated"; the tower is not a text token's
    big = archs["qwen3.5-397b-a17b"]
    assert round(big.param_count() / 1e9, 1) == 396.8  # "397B"
    assert archs["qwen3.5-27b"].param_count() == 27_356_728_560
    # 9B: Qwen3_5TextConfig's defaults - 8 attention and 24 DeltaNet layers of width 4096, a 12,288-wide MLP
    h, conv = 4096, 2 * 2048 + 4096
    nine = (2 * v * h + 8 * (h * 16 * 256 * 2 + 2 * h * 4 * 256 + 16 * 256 * h + 2 * 256)
            + 24 * (h * conv + h * 4096 + 2 * h * 32 + conv * 4 + 32 + 32 + 128 + 4096 * h)
            + 32 * 3 * h * 12288 + 32 * 2 * h + h + _vision_by_hand(1152, 4304, 27, 3, 2, 16, 2, 2304, 4096))
    assert archs["qwen3.5-9b"].param_count() == nine == 9_409_813_744


def test_an_estimate_runs_through_the_engine():
    out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "custom", "custom_model": QWEN35_27B,
                                       "quantization": "bf16", "runtime": "vllm"}, suggestions=False)
    assert out["model_weights_gb"] == pytest.approx(27_356_728_560 * 2 / 2**30, rel=0.002)
    assert any("gated DeltaNet" in x for x in out["assumptions"])
    # a flat config under the wrapper's model_type reads as its text model
    flat = {**QWEN35_27B["text_config"], "model_type": "qwen3_5"}
    assert from_hf_config(flat).param_count() == 27_356_728_560 - 460_730_096


@pytest.mark.parametrize("key, value", [("out_hidden_size", 10**12), ("temporal_patch_size", "2"),
                                        ("num_position_embeddings", -1), ("deepstack_visual_indexes", "all"),
                                        ("spatial_merge_size", 10**6), ("in_channels", True)])
def test_hostile_vision_keys_are_refused_by_name(key, value):
    cfg = json.loads(json.dumps(QWEN35_27B))
    cfg["vision_config"][key] = value
    with pytest.raises(RequestError) as err:
        from_hf_config(cfg)
    assert f"vision_config.{key}" in str(err.value)


def test_a_qwen35moe_gguf_header_gives_the_hybrid_layout(tmp_path):
    """llama.cpp writes Qwen3.5 as arch qwen35 / qwen35moe with Qwen3-Next's ssm.* keys (llama-arch.cpp)."""
    from gguf import GGUFWriter
    from gguf_fixtures import finish_gguf

    from vramplan.modelfiles import read_model_file

    w = GGUFWriter(str(tmp_path / "q.gguf"), "qwen35moe")
    w.add_block_count(4)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_key_length(16)
    w.add_context_length(4096)
    w.add_expert_count(8)
    w.add_expert_used_count(2)
    w.add_expert_feed_forward_length(32)
    w.add_uint32("qwen35moe.expert_shared_feed_forward_length", 48)
    w.add_uint32("qwen35moe.ssm.conv_kernel", 4)
    w.add_uint32("qwen35moe.ssm.state_size", 8)
    w.add_uint32("qwen35moe.ssm.group_count", 2)
    w.add_uint32("qwen35moe.ssm.time_step_rank", 4)
    w.add_uint32("qwen35moe.ssm.inner_size", 32)
    w.add_uint32("qwen35moe.full_attention_interval", 4)
    finish_gguf(w)
    a = from_hf_config(read_model_file(tmp_path / "q.gguf")["config"])
    assert a.model_type == "qwen3_5_moe_text"
    assert a.layer_types == ("recurrent", "recurrent", "recurrent", "full")
    # key_dim 2 x 8 = 16, value_dim 4 x 8 = 32: conv over 2 x 16 + 32 = 64; state 4 heads x 8 x 8
    assert (a.conv_channels, a.ssm_state_elems, a.shared_expert_intermediate_size, a.moe_layers) == (64, 256, 48, (0, 1, 2, 3))


def test_qwen3_vl_30b_a3b_counts_its_deepstack_mergers():
    """Qwen3-VL-30B-A3B-Instruct's config.json: a Qwen3 MoE language model (q_norm / k_norm of head_dim) and the
    Qwen3-VL tower with three DeepStack mergers (layers 8, 16, 24), each normalising over h m^2 after the shuffle."""
    cfg = {"model_type": "qwen3_vl_moe", "tie_word_embeddings": False,
           "text_config": {"model_type": "qwen3_vl_moe_text", "hidden_size": 2048, "intermediate_size": 6144,
                           "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
                           "vocab_size": 151936, "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768,
                           "decoder_sparse_step": 1, "mlp_only_layers": []},
           "vision_config": {"model_type": "qwen3_vl_moe", "deepstack_visual_indexes": [8, 16, 24], "depth": 27,
                             "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16, "in_channels": 3,
                             "patch_size": 16, "temporal_patch_size": 2, "spatial_merge_size": 2,
                             "num_position_embeddings": 2304, "out_hidden_size": 2048}}
    a = from_hf_config(cfg)
    h, v = 2048, 151936
    layer = (h * 32 * 128 + 2 * h * 4 * 128 + 32 * 128 * h + 2 * 128  # q, k, v, o and the q / k norms
             + h * 128 + 128 * 3 * h * 768  # router and experts
             + 2 * h)  # the two RMSNorms
    vision = _vision_by_hand(1152, 4304, 27, 3, 2, 16, 2, 2304, 2048, deepstack=3)
    assert a.vision_params == vision
    assert a.param_count() == 2 * v * h + 48 * layer + h + vision  # untied embedding and head, the final norm


def test_vllm_keeps_the_delta_rule_state_in_the_configs_mamba_ssm_dtype():
    """vLLM's Qwen3_5ForConditionalGenerationConfig sets mamba_ssm_cache_dtype "auto" to the config's mamba_ssm_dtype
    (float32 in Qwen3.5-27B's text_config); the conv state stays in the model dtype. Per DeltaNet layer: conv state
    (2 x 16 x 128 + 48 x 128 = 10,240 channels) x 3 columns x 2 bytes = 61,440, plus 48 x 128 x 128 x 4 bytes =
    3,145,728 - 3,207,168 bytes; a vLLM page of 4 KV heads x 256 x 2 (K, V) x 2 bytes = 4,096 bytes a token must hold
    it: 16 x ceil(3,207,168 / 65,536) = 784 tokens. Without the key it is the model dtype: 61,440 + 1,572,864."""
    from vramplan.estimate import trace_values

    def state(cfg, runtime="vllm"):
        out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "custom", "custom_model": cfg,
                                           "quantization": "bf16", "runtime": runtime, "trace": True},
                                          suggestions=False)
        return trace_values(out)

    cfg = json.loads(json.dumps(QWEN35_27B))
    cfg["text_config"]["mamba_ssm_dtype"] = "float32"
    tv = state(cfg)
    assert tv["recurrent_state_bytes_layer"] == 61_440 + 3_145_728 == 3_207_168
    assert tv["kv_block_tokens"] == 784
    assert state(QWEN35_27B)["recurrent_state_bytes_layer"] == 61_440 + 1_572_864
    # the catalog's Qwen3.5-27B carries the key as released
    out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "qwen3.5-27b", "quantization": "bf16",
                                       "runtime": "vllm", "trace": True}, suggestions=False)
    assert trace_values(out)["recurrent_state_bytes_layer"] == 3_207_168
    cfg["text_config"]["mamba_ssm_dtype"] = "float64"
    with pytest.raises(RequestError, match="custom_model.text_config.mamba_ssm_dtype"):
        from_hf_config(cfg)
