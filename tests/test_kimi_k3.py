"""Kimi K3 (``model_type: kimi_k3`` around a ``kimi_linear`` text config, with a MoonViT ``vision_config``): Kimi Linear's
KDA + MLA layers plus the latent MoE, the gated MLA output, Attention Residuals and the vision tower. Counts worked out
by hand from the modules ml-explore/mlx-lm mlx_lm/models/kimi_k3.py builds (the text model) and ROCm ATOM's port of the
checkpoint's modeling_kimi_k3.py (the vision tower and projector); the real model's total is the released checkpoint's
tensor list, term for term."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

import vramplan
from vramplan.architecture import from_hf_config
from vramplan.errors import RequestError

FULL = [*range(4, 93, 4), 93]
KDA = [i for i in range(1, 94) if i not in FULL]
#: moonshotai/Kimi-K3's config.json (revision 9f62e4e9; its architecture keys and quantization_config), as the catalog
#: entry kimi-k3 holds it
CATALOG = Path(__file__).resolve().parents[1] / "catalogs" / "models" / "new-architectures.yaml"


def _k3() -> dict:
    data = yaml.safe_load(CATALOG.read_text())
    return copy.deepcopy(data.get("models", data)["kimi-k3"]["config"])


#: a small Kimi K3: 4 layers (KDA, KDA, KDA, MLA), a dense first layer, 8 experts working in a 32-wide latent
SMALL = {
    "model_type": "kimi_k3",
    "text_config": {
        "model_type": "kimi_linear", "vocab_size": 128, "hidden_size": 64, "num_hidden_layers": 4,
        "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 96, "hidden_act": "situ",
        "tie_word_embeddings": False,
        "linear_attn_config": {"kda_layers": [1, 2, 3], "full_attn_layers": [4], "num_heads": 2, "head_dim": 32,
                               "short_conv_kernel_size": 4, "use_full_rank_gate": True},
        "num_experts": 8, "moe_intermediate_size": 32, "q_lora_rank": 24, "kv_lora_rank": 16, "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8, "v_head_dim": 16, "mla_use_nope": True, "mla_use_output_gate": True,
        "num_experts_per_token": 2, "num_shared_experts": 1, "first_k_dense_replace": 1,
        "routed_expert_hidden_size": 32, "latent_moe_use_norm": True, "attn_res_block_size": 2,
    },
}


def test_a_small_k3_by_hand():
    a = from_hf_config(SMALL)
    h, v, p, hd, nh, lat = 64, 128, 64, 32, 2, 32
    kda = 3 * (3 * h * p  # q_proj, k_proj, v_proj
               + 3 * p * 4  # three depthwise short convolutions
               + h * hd + hd * p + p + nh  # f_a_proj, f_b_proj, dt_bias, A_log
               + h * nh  # b_proj
               + h * p  # the full-rank g_proj (use_full_rank_gate)
               + hd + p * h)  # o_norm, o_proj
    mla = (h * 24 + 24 + 24 * 2 * (16 + 8)  # q_a_proj, q_a_layernorm, q_b_proj
           + h * (16 + 8) + 16 + 16 * 2 * (16 + 16)  # kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj
           + 2 * 16 * h  # o_proj
           + h * 2 * 16)  # g_proj, the output gate (mla_use_output_gate)
    dense = 3 * h * 96  # layer 0's MLP
    moe = 3 * (h * 8 + 8  # router over the full width and its e_score_correction_bias
               + h * lat + lat + lat * h  # routed_expert_down_proj, routed_expert_norm, routed_expert_up_proj
               + 8 * 3 * 32 * lat  # eight experts of 32 x the 32-wide latent
               + 3 * h * 32)  # one shared expert at the full width
    norms = 4 * 2 * h + h
    attn_res = 4 * (2 * h + 2 * h) + 2 * h  # per layer two res_proj [1, h] and two norms; the output pair
    assert a.moe_expert_hidden_size == lat and a.vision_params == 0
    assert a.param_count() == 2 * v * h + kda + mla + dense + moe + norms + attn_res == 228_742
    active = 2 * v * h + kda + mla + dense + moe - 3 * 6 * 3 * 32 * lat + norms + attn_res  # 2 of 8 experts
    assert a.param_count(active=True) == active == 173_446


def test_attn_res_block_size_0_is_off():
    """0 disables Attention Residuals (the Kimi K3 configs' default ``attn_res_block_size: int = 0``; mlx-lm's
    "0 disables"): the small K3 above without its 4 x (2h + 2h) + 2h = 1,152 Attention Residuals' parameters."""
    cfg = copy.deepcopy(SMALL)
    cfg["text_config"]["attn_res_block_size"] = 0
    assert from_hf_config(cfg).param_count() == 228_742 - (4 * 4 * 64 + 2 * 64) == 227_590


def test_the_released_config_by_hand_matches_the_checkpoint_and_the_card():
    a = from_hf_config(_k3())
    h, v, p, hd, nh, lat = 7168, 163840, 96 * 128, 128, 96, 3584
    kda = 69 * (3 * h * p + 3 * p * 4 + h * hd + hd * p + p + nh + h * nh + h * p + hd + p * h)
    mla = 24 * (h * 1536 + 1536 + 1536 * 96 * 192  # q_a_proj, q_a_layernorm, q_b_proj
                + h * 576 + 512 + 512 * 96 * 256  # kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj
                + 96 * 128 * h + h * 96 * 128)  # o_proj, g_proj
    dense = 3 * h * 33792
    routed = 92 * 896 * 3 * 3072 * lat
    moe = 92 * (h * 896 + 896 + h * lat + lat + lat * h + 3 * h * 2 * 3072) + routed
    norms = 93 * 2 * h + h
    attn_res = 93 * 4 * h + 2 * h
    tower = (3 * 14 * 14 * 1024 + 64 * 64 * 1024  # patch_embed.proj, pos_emb
             + 27 * (1024 * 3 * 1536 + 1536 * 1024 + 2 * 1024 * 4096 + 2 * 1024)  # wqkv, wo, fc0, fc1, norm0, norm1
             + 1024)  # final_layernorm
    projector = 4096 * 4096 + 4096 * h + h  # proj.0, proj.2, post_norm
    assert tower == 401_214_464  # the card's "MoonViT-V2 (401M)"
    total = 2 * v * h + kda + mla + dense + moe + norms + attn_res + tower + projector
    assert a.param_count() == total == 2_779_931_834_976
    # the checkpoint's safetensors hold 1,503,647,073,024 elements: the experts packed two 4-bit values a byte, with a
    # uint8 scale per 32, and A_log stored 128 wide for its 96 heads
    scales = 92 * 896 * (3072 * 112 * 2 + 3584 * 96)
    assert total - routed // 2 + scales + 69 * (128 - 96) == 1_503_647_073_024
    assert abs(total / 2.8e12 - 1) < 0.01  # the card: 2.8T total
    active = total - tower - projector - routed + 92 * 16 * 3 * 3072 * lat
    assert a.param_count(active=True) == active == 105_364_017_760
    assert abs((active - v * h) / 104e9 - 1) < 0.01  # the card: 104B activated (the embedding lookup aside)


def test_latent_experts_set_the_decode_expert_params_and_the_tp_replicated_router():
    from vramplan.estimate import trace_values

    out = vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "custom", "custom_model": _k3(),
                                       "quantization": "mxfp4", "runtime": "vllm", "num_gpus": 8, "trace": True},
                                      suggestions=False)
    tv = trace_values(out)
    assert tv["expert_active_params"] == 92 * 16 * 3072 * 3584 * 3 == 48_620_371_968


def test_attention_residuals_keep_their_block_representations_through_prefill():
    """93 layers in blocks of 12 start blocks at layers 0, 12, ..., 84: 8 block representations of [tokens, 7168] are
    alive by the last block, beside vLLM's 4 hidden-size tensors (rt_hidden_live_tensors) - one 8192-token chunk in
    bf16: 8192 x (4 + 8) x 7168 x 2 = 1,409,286,144 bytes; 8192 x 4 x 7168 x 2 without them."""
    from vramplan.estimate import trace_values

    assert from_hf_config(_k3()).attn_res_blocks == 8
    assert from_hf_config(SMALL).attn_res_blocks == 2  # 4 layers in blocks of 2
    body = {"gpu_key": "h200", "llm_key": "custom", "quantization": "mxfp4", "runtime": "vllm", "num_gpus": 8,
            "trace": True}
    tv = trace_values(vramplan.estimate_inference({**body, "custom_model": _k3()}, suggestions=False))
    assert tv["prefill_tokens"] == 8192
    assert tv["hidden_live_bytes"] == 8192 * (4 + 8) * 7168 * 2 == 1_409_286_144
    off = _k3()
    off["text_config"]["attn_res_block_size"] = 0
    tv = trace_values(vramplan.estimate_inference({**body, "custom_model": off}, suggestions=False))
    assert tv["hidden_live_bytes"] == 8192 * 4 * 7168 * 2


def test_the_checkpoint_keeps_attention_and_shared_experts_in_bf16():
    out = vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "custom", "custom_model": _k3(),
                                       "quantization": "mxfp4", "runtime": "vllm", "num_gpus": 8}, suggestions=False)
    said = next(a for a in out["assumptions"] if a.startswith("weights: the checkpoint keeps"))
    assert "text_config.quantization_config.ignore" in said
    assert "self_attn.in_proj in all 69 layers" in said and "block_sparse_moe.shared_experts in all 92 layers" in said
    assert any("attn_res_block_size = 12" in a for a in out["assumptions"])


def test_a_full_estimate_of_the_released_config_runs():
    out = vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "custom", "custom_model": _k3(),
                                       "quantization": "bf16", "runtime": "vllm", "num_gpus": 8})
    numbers = [v for v in out.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert numbers and all(n >= 0 for n in numbers)
    assert out["static_shared_memory"] > 2_779_931_834_976 * 2 / 8 / 1024**3  # more than a bf16 eighth of the weights


@pytest.mark.parametrize("change, where", [
    ({"routed_expert_hidden_size": 0}, "text_config.routed_expert_hidden_size"),
    ({"routed_expert_hidden_size": 2**40}, "text_config.routed_expert_hidden_size"),
    ({"attn_res_block_size": -1}, "text_config.attn_res_block_size"),
    ({"mla_use_output_gate": [1]}, "text_config.mla_use_output_gate"),
    ({"latent_moe_use_norm": "true"}, "text_config.latent_moe_use_norm"),
])
def test_hostile_text_keys_are_refused_by_name(change, where):
    cfg = copy.deepcopy(SMALL)
    cfg["text_config"].update(change)
    with pytest.raises(RequestError) as err:
        from_hf_config(cfg)
    assert f"custom_model.{where}" in str(err.value)


@pytest.mark.parametrize("change, where", [
    ({"vt_num_hidden_layers": 10**9}, "vision_config.vt_num_hidden_layers"),
    ({"vt_hidden_size": "1024"}, "vision_config.vt_hidden_size"),
    ({"merge_kernel_size": [2, 10**6]}, "vision_config.merge_kernel_size"),
    ({"mm_projector_type": "patchmerger"}, "vision_config.mm_projector_type"),
    ({"norm_type": "batchnorm"}, "vision_config.norm_type"),
    ({"vt_intermediate_size": None}, "vision_config.vt_intermediate_size"),
])
def test_hostile_or_unknown_vision_keys_are_refused_by_name(change, where):
    cfg = _k3()
    cfg["vision_config"].update(change)
    with pytest.raises(RequestError) as err:
        from_hf_config(cfg)
    assert f"custom_model.{where}" in str(err.value)


def test_without_the_k3_keys_it_reads_as_kimi_linear():
    cfg = copy.deepcopy(SMALL)
    for key in ("routed_expert_hidden_size", "latent_moe_use_norm", "attn_res_block_size", "mla_use_output_gate"):
        cfg["text_config"].pop(key)
    a, k3 = from_hf_config(cfg), from_hf_config(SMALL)
    h, lat = 64, 32
    # the router's correction bias is Kimi Linear's too (3 MoE layers x 8 experts, in both counts)
    assert ("norm", 3 * 8) in a.extra_params
    extra = (3 * (h * lat + lat + lat * h)  # latent projections and norm
             - 3 * 8 * 3 * 32 * (h - lat)  # the experts are narrower
             + h * 2 * 16  # g_proj
             + 4 * 4 * h + 2 * h)  # Attention Residuals
    assert k3.param_count() - a.param_count() == extra and a.moe_expert_hidden_size == 0
