"""LFM2 / LFM2-MoE (Liquid AI): short-convolution layers beside attention (vramplan.families._lfm2).

Counts are itemized by hand from transformers' modeling_lfm2.py / modular_lfm2_moe.py; the state a
sequence keeps from each runtime's cache layout (transformers Lfm2HybridConvCache: L_cache columns;
llama.cpp: L_cache - 1 columns in f32; vLLM ShortConv: L_cache - 1 columns in the model dtype).
"""

from __future__ import annotations

import pytest

import vramplan
from vramplan.architecture import from_hf_config
from vramplan.errors import RequestError

#: LiquidAI/LFM2-1.2B's architecture keys: attention on layers 2, 5, 8, 10, 12 and 14, short convolutions elsewhere.
LFM2_1_2B = {
    "model_type": "lfm2", "architectures": ["Lfm2ForCausalLM"], "hidden_size": 2048, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 65536, "block_ff_dim": 12288,
    "block_auto_adjust_ff_dim": True, "block_multiple_of": 256, "block_ffn_dim_multiplier": 1.0,
    "conv_L_cache": 3, "conv_bias": False, "tie_embedding": True, "max_position_embeddings": 128000,
    "layer_types": ["conv", "conv", "full_attention", "conv", "conv", "full_attention", "conv", "conv",
                    "full_attention", "conv", "full_attention", "conv", "full_attention", "conv", "full_attention",
                    "conv"],
    "rope_theta": 1000000.0, "norm_eps": 1e-5,
}


def _trace(out: dict) -> dict[str, float]:
    return {step["id"]: step["value"] for step in out["trace"]}


def test_lfm2_1_2b_counts_short_convolutions_attention_and_the_adjusted_mlp_by_hand():
    a = from_hf_config(LFM2_1_2B)
    assert a.layer_types.count("recurrent") == 10 and a.num_full_layers == 6
    # Lfm2MLP: int(2 x 12288 / 3) = 8192, x 1.0, rounded up to a multiple of 256 = 8192
    assert a.intermediate_size == 8192
    assert (a.recurrent_kind, a.conv_channels, a.conv_kernel, a.ssm_state_elems) == ("short_conv", 2048, 3, 0)
    assert a.tie_word_embeddings  # tie_embedding, LiquidAI's spelling
    embedding = 65536 * 2048                                     # 134,217,728 (tied: no separate head)
    mlp = 16 * 3 * 2048 * 8192                                   # 805,306,368 (w1, w3, w2 on every layer)
    attention = 6 * (2048 * 2048 + 2 * 2048 * 512 + 2048 * 2048)  # q, k, v, out_proj: 62,914,560
    qk_norms = 6 * 2 * 64                                        # q_layernorm, k_layernorm of head_dim 64
    conv = 10 * (2048 * 3 * 2048 + 2048 * 2048 + 2048 * 3)       # in_proj, out_proj, depthwise kernel: 167,833,600
    norms = 16 * 2 * 2048 + 2048                                 # operator_norm, ffn_norm; embedding_norm
    assert a.param_count() == embedding + mlp + attention + qk_norms + conv + norms == 1_170_340_608


@pytest.mark.parametrize("runtime, state_bytes", [
    ("transformers", 10 * 2048 * 3 * 2),  # Lfm2HybridConvCache [batch, hidden, L_cache] in bf16 a conv layer: 122,880
    ("llama.cpp", 10 * 2048 * 2 * 4),     # n_embd_r = (L_cache - 1) x n_embd, f32: 163,840
])
def test_lfm2_keeps_kv_only_on_its_attention_layers_and_a_small_conv_state(runtime, state_bytes):
    out = vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "custom", "custom_model": LFM2_1_2B,
                                       "quantization": "bf16", "seq_length": 32768, "runtime": runtime,
                                       "trace": True})
    v = _trace(out)
    # 6 attention layers x keys and values x 8 KV heads x 64 x 2 bytes x 32,768 tokens = 402,653,184
    assert v["kv_attention_bytes_per_seq"] == 6 * 2 * 8 * 64 * 2 * 32768
    assert v["recurrent_state_bytes_per_seq"] == state_bytes
    assert any("10 short-convolution layers" in line and "6 of 16 layers keep a KV cache" in line
               for line in out["assumptions"])


def test_lfm2_in_vllm_keeps_l_cache_minus_one_columns_per_conv_layer():
    out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "custom", "custom_model": LFM2_1_2B,
                                       "quantization": "bf16", "seq_length": 4096, "runtime": "vllm", "trace": True})
    v = _trace(out)
    assert v["recurrent_state_bytes_layer"] == 2048 * 2 * 2  # ShortConv state (L_cache - 1, hidden) in bf16: 8,192


def test_lfm2_mlp_width_follows_the_adjust_flags():
    def width(**keys):
        return from_hf_config({**LFM2_1_2B, **keys}).intermediate_size

    assert width(block_auto_adjust_ff_dim=False) == 12288  # taken as it is
    # no multiplier: int(2 x 1000 / 3) = 666, not rounded (Lfm2MLP rounds only with a multiplier)
    assert width(block_ff_dim=1000, block_ffn_dim_multiplier=None) == 666
    # a multiplier: int(1.5 x 666) = 999, rounded up to 1024
    assert width(block_ff_dim=1000, block_ffn_dim_multiplier=1.5) == 1024
    # LFM2.5-style configs give intermediate_size without block_ff_dim
    cfg = {k: v for k, v in LFM2_1_2B.items() if k != "block_ff_dim"}
    assert from_hf_config({**cfg, "intermediate_size": 6656}).intermediate_size == 4608  # int(4437.3) -> 4608


def test_lfm2_without_layer_types_reads_full_attn_idxs():
    cfg = {k: v for k, v in LFM2_1_2B.items() if k != "layer_types"}
    a = from_hf_config({**cfg, "full_attn_idxs": [2, 5, 8, 10, 12, 14]})
    assert [i for i, t in enumerate(a.layer_types) if t == "full"] == [2, 5, 8, 10, 12, 14]
    every = from_hf_config(cfg)  # neither: Lfm2Config makes every layer attend, and says so
    assert every.num_full_layers == 16 and any("every layer full_attention" in s for s in every.assumed)


def test_lfm2_moe_counts_dense_and_expert_layers_by_hand():
    cfg = {"model_type": "lfm2_moe", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
           "num_key_value_heads": 2, "vocab_size": 100, "intermediate_size": 96, "moe_intermediate_size": 32,
           "num_experts": 4, "num_experts_per_tok": 2, "num_dense_layers": 1, "conv_L_cache": 3,
           "layer_types": ["conv", "full_attention", "conv", "full_attention"]}
    a = from_hf_config(cfg)
    assert a.moe_layers == (1, 2, 3) and a.intermediate_size == 96  # LFM2-MoE's dense MLP is not adjusted
    embedding = 100 * 64
    attention = 2 * (64 * 64 + 2 * 64 * 32 + 64 * 64) + 2 * 2 * 16  # two attention layers, their q / k norms
    conv = 2 * (3 * 64 * 64 + 64 * 64 + 64 * 3)
    dense = 3 * 64 * 96                                             # layer 0
    moe = 3 * (4 * 3 * 32 * 64 + 64 * 4)                            # layers 1-3: 4 experts and the router
    norms = 4 * 2 * 64 + 64
    assert a.param_count() == embedding + attention + conv + dense + moe + norms == 157_696
    # active: 2 of the 4 experts
    assert a.param_count(active=True) == embedding + attention + conv + dense + 3 * (2 * 3 * 32 * 64 + 64 * 4) + norms


def test_lfm2_moe_without_num_dense_layers_takes_the_class_default_and_says_so():
    cfg = {"model_type": "lfm2_moe", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
           "num_key_value_heads": 2, "vocab_size": 100, "intermediate_size": 96, "moe_intermediate_size": 32,
           "num_experts": 4, "num_experts_per_tok": 2, "layer_types": ["conv", "full_attention"] * 2}
    a = from_hf_config(cfg)
    assert a.moe_layers == (2, 3) and any("num_dense_layers = 2" in s for s in a.assumed)


@pytest.mark.parametrize("change, field", [
    ({"model_type": "lfm2_moe", "intermediate_size": 7168, "num_experts": 4, "num_experts_per_tok": 2,
      "moe_intermediate_size": 32, "layer_types": None}, "custom_model.layer_types"),
    ({"layer_types": ["conv", "mamba"] * 8}, "custom_model.layer_types[1]"),
    ({"conv_L_cache": 0}, "custom_model.conv_L_cache"),
    ({"block_ffn_dim_multiplier": 0}, "custom_model.block_ffn_dim_multiplier"),
    ({"block_ff_dim": 1}, "custom_model.block_ff_dim"),
    ({"full_attn_idxs": "2,5", "layer_types": None}, "custom_model.full_attn_idxs"),
])
def test_bad_lfm2_keys_name_the_field(change, field):
    cfg = {k: v for k, v in {**LFM2_1_2B, **change}.items() if v is not None}
    with pytest.raises(RequestError) as e:
        vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "custom", "custom_model": cfg})
    assert field in [f for f, _ in e.value.problems]


def test_an_unknown_layer_kind_is_refused_not_counted_as_attention():
    """A family vramplan has no reader for, whose layer_types name a convolution layer: counting it as
    attention would give it a KV cache (this config's would be 16 / 6 of LFM2's) - a 422 naming the entry."""
    with pytest.raises(RequestError) as e:
        from_hf_config({**{k: v for k, v in LFM2_1_2B.items() if not k.startswith(("conv_", "block_"))},
                        "model_type": "somehybrid", "intermediate_size": 8192})
    (field, message), = e.value.problems
    assert field == "custom_model.layer_types[0]" and "'conv'" in message and "lfm2" in message


def test_lfm2_gguf_header_gives_the_conv_layout(tmp_path):
    """llama.cpp's LFM2Model writes shortconv.l_cache, head_count_kv 0 on the conv layers and the MLP width
    already adjusted (convert_hf_to_gguf.py)."""
    from gguf import GGUFWriter
    from gguf_fixtures import decoder_header, finish_gguf

    from vramplan.modelfiles import read_model_file

    w = GGUFWriter(str(tmp_path / "lfm2.gguf"), "lfm2")
    decoder_header(w, layers=4, ff=256, kv=[0, 2, 0, 2])
    w.add_uint32("lfm2.shortconv.l_cache", 3)
    finish_gguf(w)
    a = from_hf_config(read_model_file(tmp_path / "lfm2.gguf")["config"])
    assert a.layer_types == ("recurrent", "full", "recurrent", "full") and a.num_kv_heads == 2
    assert (a.conv_channels, a.conv_kernel, a.intermediate_size) == (64, 3, 256)  # 256 as written, not re-adjusted


def test_catalog_lfm2_1_2b_is_the_config_above():
    from vramplan.catalog import get_catalog

    a = get_catalog().architectures["lfm2-1.2b"]
    assert a == from_hf_config(LFM2_1_2B) and round(a.param_count() / 1e9, 2) == 1.17


@pytest.mark.parametrize("model_type, keys, field", [
    # the keys of Falcon-H1 (parallel attention + Mamba2 in every layer, read for model_type falcon_h1), Bamba, Kimi
    # Linear and MiniMax-Text-01's linear layers, under a model_type no reader takes
    ("falcon_h1_like", {"mamba_d_ssm": 1024, "mamba_n_heads": 16}, "custom_model.mamba_n_heads"),
    ("bamba_like", {"mamba_n_heads": 128, "attn_layer_indices": [9, 18]}, "custom_model.mamba_n_heads"),
    ("kimi_like", {"linear_attn_config": {"kda_layers": [1, 2, 3]}}, "custom_model.linear_attn_config"),
    ("minimax_like", {"attn_type_list": [0, 0, 1]}, "custom_model.attn_type_list"),
])
def test_recurrent_keys_of_a_family_without_a_reader_are_refused_by_name(model_type, keys, field):
    """Read as a plain decoder these layers would be counted as attention; the 422 names the key that says they are
    not."""
    cfg = {"model_type": model_type, "hidden_size": 1024, "num_hidden_layers": 4, "vocab_size": 1000,
           "num_attention_heads": 8, "intermediate_size": 4096, **keys}
    with pytest.raises(RequestError) as e:
        from_hf_config(cfg)
    (got, message), = e.value.problems
    assert got == field and "counted as attention" in message and "nemotron_h" in message


@pytest.mark.parametrize("model_type", ["mamba2", "falcon_mamba", "bamba", "rwkv7", "zamba2"])
def test_a_recurrent_family_without_a_reader_is_refused_by_its_model_type(model_type):
    """HF's Mamba2Config (state_size, num_heads, head_dim, expand, no attention keys): before, its num_heads read as
    attention heads and the 422 asked for an intermediate_size it does not have."""
    cfg = {"model_type": model_type, "hidden_size": 2048, "num_hidden_layers": 4, "vocab_size": 1000, "num_heads": 64,
           "head_dim": 64, "state_size": 128, "expand": 2, "conv_kernel": 4, "n_groups": 8}
    with pytest.raises(RequestError) as e:
        from_hf_config(cfg)
    (got, message), = e.value.problems
    assert got == "custom_model.model_type" and "recurrent family" in message


def test_minimax_m2s_all_softmax_attn_type_list_is_read_as_attention():
    cfg = {"model_type": "minimax_m2", "hidden_size": 1024, "num_hidden_layers": 3, "vocab_size": 1000,
           "num_attention_heads": 8, "intermediate_size": 4096, "attn_type_list": [1, 1, 1]}
    assert from_hf_config(cfg).num_full_layers == 3


def test_a_gguf_with_recurrent_layers_vramplan_does_not_read_is_refused(tmp_path):
    """llama.cpp's Mamba2 GGUF (convert_hf_to_gguf.py Mamba2Model) describes its mixers as mamba2.ssm.*."""
    from gguf import GGUFWriter
    from gguf_fixtures import finish_gguf

    from vramplan.modelfiles import read_model_file

    w = GGUFWriter(str(tmp_path / "m.gguf"), "mamba2")
    w.add_block_count(4)
    w.add_embedding_length(64)
    w.add_uint32("mamba2.ssm.conv_kernel", 4)
    w.add_uint32("mamba2.ssm.state_size", 16)
    finish_gguf(w, tokens=False)
    with pytest.raises(RequestError) as e:
        read_model_file(tmp_path / "m.gguf")
    (field, message), = e.value.problems
    assert "mamba2.ssm." in message and "'mamba2'" in message
