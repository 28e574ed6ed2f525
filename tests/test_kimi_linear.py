"""Kimi Linear (moonshotai/Kimi-Linear-48B-A3B modeling_kimi.py; transformers models/kimi_linear): Kimi Delta
Attention layers beside DeepSeek V3's MLA and MoE. Counts worked out by hand from the modules the code builds."""

from __future__ import annotations

import copy

import pytest

import vramplan
from vramplan.architecture import from_hf_config
from vramplan.errors import RequestError

KDA = [1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15, 17, 18, 19, 21, 22, 23, 25, 26]
FULL = [4, 8, 12, 16, 20, 24, 27]
#: the architecture keys of moonshotai/Kimi-Linear-48B-A3B-Instruct's config.json, as the catalog entry holds them
KIMI_LINEAR = {
    "model_type": "kimi_linear", "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 27,
    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 163840, "model_max_length": 1048576,
    "tie_word_embeddings": False, "kv_lora_rank": 512, "q_lora_rank": None, "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "mla_use_nope": True,
    "linear_attn_config": {"head_dim": 128, "num_heads": 32, "short_conv_kernel_size": 4, "kda_layers": KDA,
                           "full_attn_layers": FULL},
    "num_experts": 256, "num_experts_per_token": 8, "num_shared_experts": 1, "moe_intermediate_size": 1024,
    "first_k_dense_replace": 1, "moe_layer_freq": 1,
}


def test_the_48b_counts_by_hand():
    a = from_hf_config(KIMI_LINEAR)
    h, v, p, hd, nh = 2304, 163840, 32 * 128, 128, 32
    kda = 20 * (3 * h * p  # q_proj, k_proj, v_proj
                + 3 * p * 4  # the three depthwise short convolutions, no bias
                + h * hd + hd * p + p + nh  # forget gate f_a / f_b, dt_bias, A_log
                + h * nh  # b_proj
                + h * hd + hd * p  # output gate g_a / g_b
                + hd + p * h)  # the gated RMSNorm, o_proj
    mla = 7 * (h * 32 * (128 + 64)  # q_proj (no q_lora_rank)
               + h * (512 + 64) + 512  # kv_a_proj_with_mqa and its layernorm
               + 512 * 32 * (128 + 128)  # kv_b_proj
               + 32 * 128 * h)  # o_proj
    dense = 3 * h * 9216  # layer 0's MLP (first_k_dense_replace 1)
    # router and its e_score_correction_bias (KimiMoEGate), routed experts, one shared expert
    moe = 26 * (h * 256 + 256 + 256 * 3 * h * 1024 + 3 * h * 1024)
    norms = 27 * 2 * h + h
    assert a.param_count() == 2 * v * h + kda + mla + dense + moe + norms == 49_122_681_728
    assert a.layer_types.count("recurrent") == 20 and [i + 1 for i, t in enumerate(a.layer_types) if t == "full"] == FULL
    assert (a.conv_channels, a.conv_kernel, a.ssm_state_elems) == (3 * p, 4, 32 * 128 * 128)
    active = 2 * v * h + kda + mla + dense + 26 * (h * 256 + 256 + 8 * 3 * h * 1024 + 3 * h * 1024) + norms
    assert a.param_count(active=True) == active == 3_484_459_904


def test_kv_and_state_per_sequence():
    """7 MLA layers cache 512 + 64 values a token; a KDA layer keeps q / k / v's last 3 inputs (3 x 4096 channels, in
    bf16) and a 32 x 128 x 128 state, float32 in vLLM (kda_state_dtype) whatever the cache dtype."""
    from vramplan.estimate import trace_values

    out = vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "kimi-linear-48b-a3b-instruct",
                                       "quantization": "bf16", "runtime": "vllm", "batch_size": 1, "seq_length": 8192,
                                       "trace": True}, suggestions=False)
    tv = trace_values(out)
    assert tv["recurrent_state_bytes_layer"] == 3 * 4096 * 3 * 2 + 32 * 128 * 128 * 4 == 2_170_880
    # vLLM pads each layer's state to one attention page: a block of 16 x ceil(2,170,880 / (16 x 1,152)) = 1,888
    # tokens of the MLA layers' 1,152 bytes = 2,174,976 bytes
    assert tv["kv_block_tokens"] == 1888
    assert tv["recurrent_state_bytes_per_seq"] == 20 * 1888 * 1152 == 43_499_520
    assert tv["kv_bytes_per_token_layer"] == 576 * 2
    assert any("20 Kimi Delta Attention layers" in x for x in out["assumptions"])
    imported = vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "custom", "custom_model": KIMI_LINEAR,
                                            "quantization": "bf16", "runtime": "vllm"}, suggestions=False)
    assert imported["model_weights_gb"] == pytest.approx(49_122_681_728 * 2 / 2**30, rel=0.002)


@pytest.mark.parametrize("change, where", [
    ({"linear_attn_config": {**KIMI_LINEAR["linear_attn_config"], "kda_layers": ["1"]}}, "linear_attn_config.kda_layers"),
    ({"linear_attn_config": {**KIMI_LINEAR["linear_attn_config"], "kda_layers": KDA[:-1]}}, "linear_attn_config"),
    ({"linear_attn_config": {"head_dim": 128, "num_heads": 32}}, "linear_attn_config"),
    ({"linear_attn_config": {**KIMI_LINEAR["linear_attn_config"], "num_heads": 10**9}}, "linear_attn_config.num_heads"),
    ({"linear_attn_config": "kda"}, "linear_attn_config"),
    # Kimi K3's keys are read (tests/test_kimi_k3.py); hostile values of them are refused by name
    ({"routed_expert_hidden_size": 0}, "routed_expert_hidden_size"),
    ({"routed_expert_hidden_size": "3584"}, "routed_expert_hidden_size"),
    ({"attn_res_block_size": -1}, "attn_res_block_size"),
    ({"attn_res_block_size": 10**9}, "attn_res_block_size"),
    ({"mla_use_output_gate": "yes"}, "mla_use_output_gate"),
    ({"latent_moe_use_norm": 1}, "latent_moe_use_norm"),
])
def test_malformed_or_hostile_kimi_k3_keys_are_refused_by_name(change, where):
    cfg = {**copy.deepcopy(KIMI_LINEAR), **change}
    with pytest.raises(RequestError) as err:
        from_hf_config(cfg)
    assert f"custom_model.{where}" in str(err.value)


def test_linear_attn_config_under_another_model_type_is_still_refused():
    with pytest.raises(RequestError, match="linear_attn_config"):
        from_hf_config({**KIMI_LINEAR, "model_type": "deepseek_v3"})


def _mla_gguf(path, arch: str, *, kv, legacy: bool, kda: bool) -> dict:
    """A small MLA GGUF header as llama.cpp's converters write it: 4 layers, hidden 64, 4 heads, kv_lora_rank 32,
    rope 8, nope 16, v 24; ``legacy`` the pre-MLA-cache spelling (key_length / value_length a head's), else the
    latent's widths under the plain keys and a head's under the _mla keys."""
    from gguf import GGUFWriter
    from gguf_fixtures import finish_gguf

    from vramplan.modelfiles import read_model_file

    w = GGUFWriter(str(path), arch)
    w.add_block_count(4)
    w.add_embedding_length(64)
    w.add_feed_forward_length(96)
    w.add_head_count(4)
    w.add_head_count_kv(kv)
    w.add_context_length(4096)
    w.add_kv_lora_rank(32)
    w.add_rope_dimension_count(8)
    if legacy:
        w.add_key_length(16 + 8)
        w.add_value_length(24)
    else:
        w.add_key_length(32 + 8)
        w.add_value_length(32)
        w.add_key_length_mla(16 + 8)
        w.add_value_length_mla(24)
    w.add_expert_count(8)
    w.add_expert_used_count(2)
    w.add_expert_feed_forward_length(32)
    w.add_expert_shared_count(1)
    w.add_leading_dense_block_count(1)
    if kda:
        w.add_uint32(f"{arch}.ssm.conv_kernel", 4)
        w.add_uint32(f"{arch}.kda.head_dim", 16)
    finish_gguf(w)
    return read_model_file(path)["config"]


@pytest.mark.parametrize("legacy", [False, True])
def test_a_deepseek2_gguf_reads_a_heads_mla_widths_from_either_spelling(tmp_path, legacy):
    """llama.cpp's DeepSeek converter writes key_length = kv_lora_rank + rope (40) and value_length = kv_lora_rank (32)
    for its latent cache, a head's 16 + 8 and 24 under key_length_mla / value_length_mla; read as the latter (nope 16,
    v 24), not as 40 - 8 = 32 and 32."""
    cfg = _mla_gguf(tmp_path / "d.gguf", "deepseek2", kv=1, legacy=legacy, kda=False)
    assert (cfg["qk_rope_head_dim"], cfg["qk_nope_head_dim"], cfg["v_head_dim"]) == (8, 16, 24)
    a = from_hf_config(cfg)
    assert (a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim) == (16, 8, 24)


def test_a_kimi_linear_gguf_header_gives_the_kda_and_mla_layout(tmp_path):
    """llama.cpp's Kimi Linear converter marks KDA layers with head_count_kv 0 (MLA layers 1, served as MQA), writes
    short_conv_kernel_size as ssm.conv_kernel and the KDA head size as kda.head_dim; the KDA head count is
    attention.head_count. Layers 1-3 KDA, 4 MLA: conv over q, k, v of 4 x 16 = 64 channels each (192), a state of
    4 x 16 x 16 = 1,024 a layer; the MLA layer caches the 32-wide latent and the 8-wide rope key."""
    cfg = _mla_gguf(tmp_path / "k.gguf", "kimi-linear", kv=[0, 0, 0, 1], legacy=False, kda=True)
    assert cfg["model_type"] == "kimi_linear"
    assert cfg["linear_attn_config"] == {"kda_layers": [1, 2, 3], "full_attn_layers": [4], "num_heads": 4,
                                         "head_dim": 16, "short_conv_kernel_size": 4}
    a = from_hf_config(cfg)
    assert a.layer_types == ("recurrent", "recurrent", "recurrent", "full")
    assert (a.conv_channels, a.conv_kernel, a.ssm_state_elems) == (3 * 4 * 16, 4, 4 * 16 * 16)
    assert (a.kv_lora_rank, a.qk_rope_head_dim, a.qk_nope_head_dim, a.v_head_dim) == (32, 8, 16, 24)
    assert a.kv_elements_per_token_per_layer == 32 + 8
    assert (a.num_experts, a.experts_per_token, a.moe_layers) == (8, 2, (1, 2, 3))
