"""transformers converts a model to bitsandbytes (NF4, FP4, LLM.int8) by replacing its nn.Linear modules
(integrations/bitsandbytes.py replace_with_bnb_linear); transformers 5 holds an MoE layer's routed experts as fused
3-D parameters, so they stay in bf16 - and QLoRA's prepare_model_for_kbit_training casts them to fp32. The parameter
counts are worked here from the models' config.json shapes."""

from __future__ import annotations

import pytest

import vramplan
from vramplan.catalog import get_catalog
from vramplan.estimate import trace_values

NF4 = 4.126953125       # 4 bits + an 8-bit absmax per 64 + an fp32 second-level absmax per 256 blocks
# Mixtral 8x7B: 32 layers, 8 experts, each gate / up / down 14336 x 4096; every layer is MoE, no shared expert.
MIXTRAL_ROUTED = 32 * 8 * 14336 * 4096            # per role: 15,032,385,536


def traced(body: dict, workload: str = "inference") -> dict:
    fn = vramplan.estimate_inference if workload == "inference" else vramplan.estimate_finetuning
    out = fn({**body, "trace": True})
    return {**trace_values(out), "_warnings": out["warnings"]}


def test_the_bitsandbytes_formats_name_transformers_and_the_others_do_not():
    q = get_catalog().quantization
    for key in ("nf4", "fp4", "int8"):
        assert q.get(key).data["linear_modules_only"]["runtimes"] == ["transformers"]
    for key in ("int4", "awq", "gptq", "fp8", "mxfp4", "bf16"):
        assert "linear_modules_only" not in q.get(key).data


def test_mixtral_in_nf4_under_transformers_keeps_every_routed_expert_in_bf16():
    body = {"gpu_key": "h200", "llm_key": "mixtral-8x7b", "quantization": "nf4", "batch_size": 1, "seq_length": 2048}
    t = traced({**body, "runtime": "transformers"})
    v = traced({**body, "runtime": "vllm"})
    assert MIXTRAL_ROUTED == 15_032_385_536
    assert t["p_ffn_gate"] == MIXTRAL_ROUTED            # all of the role is routed experts
    assert t["b_ffn_gate"] == t["b_ffn_up"] == t["b_ffn_down"] == 16.0
    assert v["b_ffn_gate"] == NF4                       # vLLM's path quantizes them as the format says
    # 3 roles x 15,032,385,536 parameters x (16 - 4.126953125) bits / 8 = 66,930,081,792 bytes more
    assert t["weights_gpu_bytes"] - v["weights_gpu_bytes"] == pytest.approx(3 * MIXTRAL_ROUTED * (16 - NF4) / 8)
    assert 3 * MIXTRAL_ROUTED * (16 - NF4) / 8 == pytest.approx(66_930_081_792)
    assert t["p_kept"] == 3 * MIXTRAL_ROUTED            # read unpacked by the matmuls
    said = [w for w in t["_warnings"] if "converts linear layers only" in w]
    assert said and "45.1B parameters" in said[0] and "stay in bf16, 90.2 GB against 23.3 GB in nf4" in said[0]
    assert not [w for w in v["_warnings"] if "converts linear layers only" in w]


def test_shared_experts_and_dense_layers_are_linear_modules_and_are_quantized():
    """DeepSeek-V2-Lite: layer 0 dense (10944 wide), 26 MoE layers of 64 routed experts (1408) and 2 shared ones."""
    t = traced({"gpu_key": "h200", "llm_key": "deepseek-v2-lite", "quantization": "nf4", "batch_size": 1,
                "seq_length": 2048, "runtime": "transformers"})
    routed = 26 * 64 * 1408 * 2048                    # 4,798,283,776
    role = routed + 26 * 2 * 1408 * 2048 + 10944 * 2048   # + shared 149,946,368 + dense 22,413,312
    assert t["p_ffn_gate"] == role == 4_970_643_456
    assert t["b_ffn_gate"] == pytest.approx((routed * 16 + (role - routed) * NF4) / role)


def test_qlora_casts_the_unconverted_experts_to_fp32():
    t = traced({"gpu_key": "h200", "llm_key": "mixtral-8x7b", "finetuning_method": "qlora", "batch_size": 1,
                "seq_length": 1024, "lora_rank": 16}, "finetuning")
    assert t["b_ffn_gate"] == t["b_ffn_down"] == 32.0
    said = [w for w in t["_warnings"] if "converts linear layers only" in w]
    assert said and "stay in fp32" in said[0] and "180.4 GB" in said[0]      # 45.1B x 4 bytes


def test_llm_int8_under_transformers_leaves_them_too():
    t = traced({"gpu_key": "h200", "llm_key": "mixtral-8x7b", "quantization": "int8", "batch_size": 1,
                "seq_length": 1024, "runtime": "transformers"})
    assert t["b_ffn_up"] == 16.0


def test_dense_models_and_other_formats_are_untouched():
    dense = traced({"gpu_key": "h200", "llm_key": "llama-3-8b", "quantization": "nf4", "batch_size": 1,
                    "seq_length": 1024, "runtime": "transformers"})
    assert dense["b_ffn_gate"] == NF4 and dense["p_kept"] == 0
    awq = traced({"gpu_key": "h200", "llm_key": "mixtral-8x7b", "quantization": "awq", "batch_size": 1,
                  "seq_length": 1024, "runtime": "transformers"})
    assert awq["b_ffn_gate"] < 16 and not [w for w in awq["_warnings"] if "converts linear layers only" in w]


def test_lora_on_a_fused_moe_adapts_attention_only_where_nothing_else_is_linear():
    """Mixtral's every feed-forward weight is a routed expert: peft's all-linear finds q, k, v and o only -
    16 x 32 layers x ((4096 + 4096) + 2 x (4096 + 1024) + (4096 + 4096)) = 13,631,488 adapter parameters, not the
    240,123,904 adapters on every expert's gate, up and down that transformers 4's nn.Linear experts took."""
    t = traced({"gpu_key": "h200", "llm_key": "mixtral-8x7b", "finetuning_method": "lora", "batch_size": 1,
                "seq_length": 1024, "lora_rank": 16}, "finetuning")
    assert t["lora_params"] == 16 * 32 * (8192 + 2 * 5120 + 8192) == 13_631_488
    assert t["lora_gate"] == t["lora_up"] == t["lora_down"] == 0
    # saved per token and layer: fp32 copies of q/k/v's and o's inputs, four rank-16 lora_A outputs
    assert t["lora_saved_bytes_per_token_layer"] == 4 * (3 * 4096 + 4096 + 4 * 16) == 65_792


def test_lora_keeps_the_shared_experts_and_dense_layers():
    """DeepSeek-V2-Lite: layer 0's dense MLP (10944) and 26 layers' two shared experts (2 x 1408 wide) are nn.Linear;
    the 64 routed experts of 1408 are fused."""
    t = traced({"gpu_key": "h200", "llm_key": "deepseek-v2-lite", "finetuning_method": "lora", "batch_size": 1,
                "seq_length": 1024, "lora_rank": 16}, "finetuning")
    assert t["lora_dims_down"] == (2048 + 10944) + 26 * (2048 + 2816) == 139_456
    assert t["lora_gate"] == t["lora_down"] == 1
    assert t["lora_unadapted_width"] == 6 * 1408                 # the 6 routed experts a token visits


def test_naming_only_the_experts_projections_is_refused_as_peft_refuses_it():
    with pytest.raises(vramplan.RequestError) as err:
        vramplan.estimate_finetuning({"gpu_key": "h200", "llm_key": "mixtral-8x7b", "finetuning_method": "lora",
                                      "batch_size": 1, "seq_length": 1024, "lora_rank": 16,
                                      "lora_target_modules": ["gate_proj", "up_proj", "down_proj"]})
    assert "lora_target_modules" in str(err.value)
