"""Modules NVIDIA ModelOpt and compressed-tensors checkpoints keep unquantized, each read as its own loader reads
it (vLLM modelopt.py is_layer_excluded; compressed_tensors/utils/match.py), and the formats their config.json
names. Every figure is worked out here from the config, not read back from the engine.

The fixture is a 2-layer Llama: hidden 64, FFN 128, 4 heads of 16, 2 KV heads, vocabulary 100, untied head.
  per layer: q 64 x 64 = 4,096, k 64 x 32 = 2,048, v 2,048, o 4,096 -> attention 12,288;
             gate, up, down 3 x 64 x 128 = 24,576 -> 36,864 linear parameters a layer, 73,728 in all
  embedding 100 x 64 = 6,400 and head 6,400 (16 bits in every catalog format: 12,800 bytes each)
  norms (2 x 2 + 1) x 64 = 320 at 16 bits: 640 bytes
Kept: layer 0's attention (12,288 parameters) and lm_head (16 bits already).
  fp8   (8 bits):       25,600 + 640 + 12,288 x 2 + (73,728 - 12,288) x 1       = 112,256 bytes
  nvfp4 (4.5 bits):     25,600 + 640 + 24,576 + 61,440 x 4.5 / 8 = + 34,560     =  85,376 bytes
  gptq  (4.15625 bits): 25,600 + 640 + 24,576 + 61,440 x 4.15625 / 8 = + 31,920  =  82,736 bytes
Nothing kept: fp8 26,240 + 73,728 = 99,968; nvfp4 26,240 + 41,472 = 67,712; bf16 26,240 + 147,456 = 173,696.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hub_fixtures import FileServer, lay_out_hub_cache  # noqa: E402

import vramplan
from vramplan import keptmodules
from vramplan.architecture import from_hf_config
from vramplan.errors import RequestError
from vramplan.estimate import trace_values as values
from vramplan.modelfiles import read_model_file

LLAMA = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 100, "tie_word_embeddings": False}
ATTN0 = 4096 + 2048 + 2048 + 4096
assert ATTN0 == 12_288
KEPT_FP8, KEPT_NVFP4, KEPT_GPTQ = 112_256, 85_376, 82_736
assert KEPT_FP8 == 2 * 6400 * 2 + 320 * 2 + ATTN0 * 2 + (73_728 - ATTN0)
assert KEPT_NVFP4 == 2 * 6400 * 2 + 320 * 2 + ATTN0 * 2 + (73_728 - ATTN0) * 4.5 / 8
assert KEPT_GPTQ == 2 * 6400 * 2 + 320 * 2 + ATTN0 * 2 + (73_728 - ATTN0) * 4.15625 / 8
ASSUMED = ("self_attn.q_proj, self_attn.k_proj, self_attn.v_proj, self_attn.o_proj in layer 0; lm_head; "
           "its other linear layers are ")


def _estimate(qc: dict, quantization: str, **cfg) -> dict:
    config = {**LLAMA, **cfg, "quantization_config": qc}
    return vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "custom", "custom_model": config,
                                        "quantization": quantization, "seq_length": 512, "batch_size": 1, "trace": True})


def _kept_said(out: dict) -> list[str]:
    return [a for a in out["assumptions"] if a.startswith("weights: the checkpoint keeps")]


def _ct(weights: dict, ignore, targets=("Linear",)) -> dict:
    """A compressed-tensors quantization_config as llm-compressor writes it (one group)."""
    return {"quant_method": "compressed-tensors", "format": "float-quantized", "quantization_status": "compressed",
            "config_groups": {"group_0": {"targets": targets if isinstance(targets, str) else list(targets), "weights": weights, "input_activations": None}},
            "ignore": ignore}


FP8_DYNAMIC = {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True, "dynamic": False}
NVFP4 = {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16, "symmetric": True}
W4A16 = {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128, "symmetric": True}


# -- NVIDIA ModelOpt -----------------------------------------------------------------------------------

def test_a_modelopt_fp8_config_json_keeps_what_its_ignore_list_names():
    """config.json's quantization_config (ModelOpt >= 0.2x exports): quant_algo FP8 is the catalog's fp8; "ignore"
    lists lm_head and a wildcard over layer 0's attention."""
    qc = {"quant_method": "modelopt", "quant_algo": "FP8", "kv_cache_scheme": {"type": "float", "num_bits": 8},
          "producer": {"name": "modelopt", "version": "0.29.0"}, "ignore": ["lm_head", "model.layers.0.self_attn*"]}
    v = values(out := _estimate(qc, "fp8"))
    assert v["weights_computed_bytes"] == KEPT_FP8
    assert v["p_kept"] == ATTN0 and v["kept_layer_bytes"] == ATTN0 * 2
    assert v["b_attn_q"] == (16 + 8) / 2  # layer 0 at 16 bits, layer 1 at 8, equal parameters
    assert v["b_ffn_down"] == 8
    assert _kept_said(out) == [f"weights: the checkpoint keeps at 16 bits (its quantization_config.ignore) {ASSUMED}fp8"]


def test_a_modelopt_nvfp4_legacy_nested_config_reads_exclude_modules():
    """The hf_quant_config.json shape copied into config.json ({"quantization": {...}}), as vLLM's from_config reads
    both: NVFP4 is the catalog's nvfp4, exclude_modules its list."""
    qc = {"quant_method": "modelopt", "producer": {"name": "modelopt"},
          "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": None, "group_size": 16,
                           "exclude_modules": ["lm_head", "model.layers.0.self_attn"]}}
    v = values(out := _estimate(qc, "nvfp4"))
    assert v["weights_computed_bytes"] == KEPT_NVFP4
    assert _kept_said(out) == ["weights: the checkpoint keeps at 16 bits (its quantization_config.quantization."
                               f"exclude_modules) {ASSUMED}nvfp4"]


def test_modelopt_matches_names_exactly_by_substring_and_by_wildcard_as_vllm_does():
    """vLLM is_layer_excluded: a contained pattern excludes (so "model.layers.1" reaches layer 10 too, as it does in
    vLLM), and fnmatch's * crosses dots. An 11-layer version of the fixture: each layer 36,864 linear parameters."""
    a = from_hf_config({**LLAMA, "num_hidden_layers": 11})
    k = keptmodules.kept(a, {"quant_method": "modelopt", "quant_algo": "FP8", "ignore": ["model.layers.1"]})
    # layers 1 and 10 by substring: 2 of 11 layers of every linear role
    assert k.shares == {r: pytest.approx(2 / 11) for r in
                        ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}
    assert keptmodules.kept_layer_params(a, k) == pytest.approx(2 * 36_864)
    k = keptmodules.kept(a, {"quant_method": "modelopt", "quant_algo": "FP8", "ignore": ["model.layers.*.mlp.down_proj"]})
    assert k.shares == {"ffn_down": 1.0} and k.source == "ignore"
    k = keptmodules.kept(a, {"quant_method": "modelopt", "quant_algo": "FP8", "ignore": ["*.layers.[0-2].self_attn.[qk]_proj"]})
    assert k.shares == {"attn_q": pytest.approx(3 / 11), "attn_k": pytest.approx(3 / 11)}
    assert keptmodules.kept(a, {"quant_method": "modelopt", "quant_algo": "FP8", "ignore": ["", "vision_tower*"]}) is None


# A 4-block Nemotron-H ("M*ME": Mamba2, attention, Mamba2, MoE), hidden 64; its modules are backbone.layers.N.mixer.*:
#   Mamba2 in_proj 64 x (2 x 64 + 2 x 1 group x 8 state + 4 heads) = 64 x 148 = 9,472, out_proj 64 x 64 = 4,096
#   attention (4 heads of 16, 2 KV heads) q 4,096 + k 2,048 + v 2,048 + o 4,096 = 12,288
#   MoE: 4 squared-ReLU experts of 32 (up + down 2 x 4 x 64 x 32 = 16,384), a shared expert of 32 (4,096), router 256
NEMOTRON_H = {"architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h", "hidden_size": 64,
              "num_hidden_layers": 4, "hybrid_override_pattern": "M*ME", "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 16, "mamba_num_heads": 4, "mamba_head_dim": 16, "n_groups": 1,
              "ssm_state_size": 8, "conv_kernel": 4, "n_routed_experts": 4, "num_experts_per_tok": 2,
              "moe_intermediate_size": 32, "moe_shared_expert_intermediate_size": 32, "n_shared_experts": 1,
              "intermediate_size": 32, "mlp_hidden_act": "relu2", "vocab_size": 100, "tie_word_embeddings": False,
              "use_conv_bias": True, "use_bias": False, "max_position_embeddings": 4096, "torch_dtype": "bfloat16"}


def test_a_nemotron_h_checkpoint_names_its_mixers_under_backbone():
    """Nemotron 3 Nano's FP8 recipe: the attention layers and the Mamba2 mixer before each stay in BF16. The modules are
    NemotronH's (backbone.layers.N.mixer.in_proj, ...), matched as vLLM's ModelOpt loader matches them."""
    qc = {"quant_method": "modelopt", "quant_algo": "FP8", "kv_cache_quant_algo": "FP8",
          "ignore": ["lm_head", "backbone.layers.0.mixer.in_proj", "backbone.layers.0.mixer.out_proj", "backbone.layers.1.mixer*"]}
    a = from_hf_config(NEMOTRON_H)
    k = keptmodules.kept(a, qc)
    # all of the attention; the first of the two Mamba2 mixers (half of each projection role); lm_head
    assert k.shares == {"attn_q": 1.0, "attn_k": 1.0, "attn_v": 1.0, "attn_output": 1.0, "ssm_in": 0.5, "ssm_out": 0.5,
                        "output": 1.0}
    assert keptmodules.kept_layer_params(a, k) == 9_472 + 4_096 + 12_288
    req = {"gpu_key": "h100_80", "llm_key": "custom", "quantization": "fp8", "seq_length": 512, "batch_size": 1,
           "trace": True}
    kept = vramplan.estimate_inference({**req, "custom_model": {**NEMOTRON_H, "quantization_config": qc}})
    plain = vramplan.estimate_inference({**req, "custom_model": NEMOTRON_H})
    v, w = values(kept), values(plain)
    assert v["p_kept"] == 25_856 and v["kept_layer_bytes"] == 2 * 25_856
    assert v["b_ssm_in"] == v["b_ssm_out"] == (16 + 8) / 2 and v["b_attn_q"] == 16 and v["b_ffn_up"] == 8
    # the kept parameters take 2 bytes instead of 1 (lm_head is 16 bits in either)
    assert v["weights_computed_bytes"] - w["weights_computed_bytes"] == 25_856
    assert _kept_said(kept) == ["weights: the checkpoint keeps at 16 bits (its quantization_config.ignore) mixer.q_proj, "
                                "mixer.k_proj, mixer.v_proj, mixer.o_proj in layer 1; mixer.in_proj, mixer.out_proj in "
                                "layer 0; lm_head; its other linear layers are fp8"]


def test_the_nemotron_3_nano_fp8_checkpoint_keeps_its_recipe_modules():
    """The catalog's FP8 Nano: 6 attention layers (q 2688 x 4096, k and v 2688 x 256, o 4096 x 2688 = 23,396,352 each)
    and the 6 Mamba2 mixers before them (in_proj 2688 x (2 x 4096 + 2 x 8 x 128 + 64) = 27,697,152, out_proj 4096 x 2688
    = 11,010,048) at 16 bits: 140,378,112 + 232,243,200 = 372,621,312 parameters, a byte each more than in FP8."""
    req = {"gpu_key": "b200", "quantization": "fp8", "seq_length": 4096, "trace": True}
    fp8 = values(vramplan.estimate_inference({**req, "llm_key": "nvidia-nemotron-3-nano-30b-a3b-fp8"}))
    bf16_arch = values(vramplan.estimate_inference({**req, "llm_key": "nvidia-nemotron-3-nano-30b-a3b"}))
    assert fp8["p_kept"] == 6 * 23_396_352 + 6 * (27_697_152 + 11_010_048) == 372_621_312
    assert fp8["weights_computed_bytes"] - bf16_arch["weights_computed_bytes"] == 372_621_312
    # the same checkpoint asked for in another format keeps nothing apart
    assert values(vramplan.estimate_inference({**req, "llm_key": "nvidia-nemotron-3-nano-30b-a3b-fp8",
                                               "quantization": "bf16"}))["p_kept"] == 0


def _kv(qc: dict, runtime: str, quantization: str = "fp8", **extra) -> tuple[dict, list[str]]:
    out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "custom", "runtime": runtime, "seq_length": 512,
                                       "custom_model": {**LLAMA, "quantization_config": qc}, "quantization": quantization,
                                       "batch_size": 1, "trace": True, **extra})
    return values(out), [a for a in out["assumptions"] if a.startswith("KV cache: fp8 - the checkpoint")]


FP8_KV = {"quant_method": "modelopt", "quant_algo": "FP8", "kv_cache_quant_algo": "FP8"}


@pytest.mark.parametrize("runtime, takes", [("vllm", True), ("tensorrt-llm", True), ("sglang", False), ("tgi", False),
                                            ("vllm-v0", False)])
def test_a_modelopt_checkpoint_that_states_an_fp8_cache_gets_it_where_the_runtime_takes_it(runtime, takes):
    """vLLM's resolve_kv_cache_dtype_string and TensorRT-LLM's KvCacheConfig dtype "auto" take the checkpoint's
    kv_cache_quant_algo; the others keep the 16-bit default. The fixture's cache a token: 2 layers x 2 KV heads x 16 x
    (K, V) = 128 values - 128 bytes in FP8, 256 in 16 bits."""
    v, said = _kv(FP8_KV, runtime)
    assert v["kv_bits"] == (8 if takes else 16)
    assert v["srv_kv_token_bytes"] == (128 if takes else 256)
    assert said == ([f"KV cache: fp8 - the checkpoint's quantization config states it and {runtime}'s default cache "
                     "dtype takes it (kv_cache_quantization not given)"] if takes else [])


@pytest.mark.parametrize("qc, fp8", [
    ({"quant_method": "modelopt", "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8"}}, True),
    ({"quant_method": "modelopt", "quant_algo": "FP8", "kv_cache_scheme": {"type": "float", "num_bits": 8, "dynamic": False}}, True),
    # a dynamic scheme, an unknown algorithm, none at all: vLLM keeps "auto"
    ({"quant_method": "modelopt", "quant_algo": "FP8", "kv_cache_scheme": {"type": "float", "num_bits": 8, "dynamic": True}}, False),
    ({"quant_method": "modelopt", "quant_algo": "FP8", "kv_cache_quant_algo": "INT8"}, False),
    ({"quant_method": "modelopt", "quant_algo": "FP8", "kv_cache_quant_algo": None}, False),
    # vLLM reads the statement from ModelOpt configs only
    ({**_ct(FP8_DYNAMIC, []), "kv_cache_scheme": {"type": "float", "num_bits": 8, "dynamic": False}}, False),
])
def test_the_statements_vllm_reads_as_an_fp8_cache(qc, fp8):
    v, _ = _kv(qc, "vllm")
    assert v["kv_bits"] == (8 if fp8 else 16)


def test_a_named_kv_format_another_weight_format_or_the_setting_off_keep_the_request():
    assert _kv(FP8_KV, "vllm", kv_cache_quantization="bf16")[0]["kv_bits"] == 16
    # the checkpoint asked for in bf16 is not that checkpoint's own format
    assert _kv(FP8_KV, "vllm", quantization="bf16")[0]["kv_bits"] == 16
    v, said = _kv(FP8_KV, "vllm", runtime_settings={"kv_dtype_from_checkpoint": 0})
    assert v["kv_bits"] == 16 and said == []


@pytest.mark.parametrize("qc, fmt", [
    ({"quant_method": "modelopt", "quant_algo": "FP8"}, "fp8"),
    ({"quant_method": "modelopt", "quant_algo": "fp8_pb_wo"}, "fp8"),
    ({"quant_method": "modelopt", "quant_algo": "FP8_PER_CHANNEL_PER_TOKEN"}, "fp8"),
    ({"quant_method": "modelopt", "quant_algo": "NVFP4"}, "nvfp4"),
    ({"quant_method": "modelopt", "quantization": {"quant_algo": "W4A16_NVFP4"}}, "nvfp4"),
    ({"quant_method": "modelopt", "quant_algo": "MXFP8"}, None),
    ({"quant_method": "modelopt", "quant_algo": "MIXED_PRECISION"}, None),
    ({"quant_method": "modelopt"}, None),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": FP8_DYNAMIC}}}, "fp8"),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {**FP8_DYNAMIC, "strategy": "block"}}}}, "fp8"),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": NVFP4}}}, "nvfp4"),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": W4A16}}}, "gptq"),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {**W4A16, "symmetric": False}}}}, "gptq"),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {**W4A16, "group_size": 32}}}}, None),
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {
        "num_bits": 8, "type": "int", "strategy": "channel"}}}}, "int8"),
    # two groups that disagree (FP8 attention, NVFP4 MLP) are no one format
    ({"quant_method": "compressed-tensors", "config_groups": {"a": {"weights": FP8_DYNAMIC}, "b": {"weights": NVFP4}}}, None),
    ({"quant_method": "compressed-tensors", "config_groups": "fp8"}, None),
    ({"quant_method": "compressed-tensors"}, None),
])
def test_checkpoint_formats_of_modelopt_and_compressed_tensors(qc, fmt):
    assert keptmodules.checkpoint_format(qc) == fmt


# -- compressed-tensors --------------------------------------------------------------------------------

@pytest.mark.parametrize("weights, quantization, expected", [
    (FP8_DYNAMIC, "fp8", KEPT_FP8), (NVFP4, "nvfp4", KEPT_NVFP4), (W4A16, "gptq", KEPT_GPTQ)])
def test_a_compressed_tensors_checkpoint_keeps_what_it_ignores(weights, quantization, expected):
    """llm-compressor's FP8_DYNAMIC, NVFP4 and W4A16 presets with ignore = lm_head and a re: pattern over layer 0's
    attention (re.match on the full name)."""
    out = _estimate(_ct(weights, ["lm_head", "re:model\\.layers\\.0\\.self_attn\\..*"]), quantization)
    v = values(out)
    assert v["weights_computed_bytes"] == pytest.approx(expected, rel=1e-12)
    assert v["p_kept"] == ATTN0
    assert _kept_said(out) == [f"weights: the checkpoint keeps at 16 bits (its quantization_config.ignore) "
                               f"{ASSUMED}{quantization}"]


def test_compressed_tensors_quantizes_only_what_its_targets_name():
    """Targets re:.*mlp.* quantize the feed-forward only: both layers' attention keeps 16 bits (2 x 12,288), lm_head is
    ignored. fp8: 25,600 + 640 + 24,576 x 2 + 49,152 x 1 = 124,544 bytes."""
    v = values(_estimate(_ct(FP8_DYNAMIC, ["lm_head"], targets=["re:.*mlp.*"]), "fp8"))
    assert v["p_kept"] == 2 * ATTN0
    assert v["weights_computed_bytes"] == 25_600 + 640 + 2 * ATTN0 * 2 + 49_152


def test_compressed_tensors_names_are_exact_not_prefixes():
    """compressed-tensors _match_name compares a plain entry with the full module name: "model.layers.0.self_attn"
    is a parent of the projections, not one of them, and keeps nothing (where ModelOpt's substring rule keeps them)."""
    v = values(_estimate(_ct(FP8_DYNAMIC, ["model.layers.0.self_attn", "Embedding"]), "fp8"))
    assert v["p_kept"] == 0 and v["weights_computed_bytes"] == 99_968
    # a class name: "Linear" ignored leaves every linear layer in 16 bits - 26,240 + 147,456 = 173,696 bytes
    v = values(_estimate(_ct(FP8_DYNAMIC, ["Linear"]), "fp8"))
    assert v["p_kept"] == 73_728 and v["weights_computed_bytes"] == 173_696


def test_a_request_in_another_format_keeps_nothing():
    """The kept modules belong to the checkpoint's own method: the same FP8 checkpoint asked for in bf16 or nvfp4 is
    quantized as those formats say - bf16 173,696 bytes, nvfp4 67,712 (26,240 + 73,728 x 4.5 / 8 = 41,472)."""
    qc = _ct(FP8_DYNAMIC, ["lm_head", "re:model.layers.0.self_attn.*"])
    for quantization, expected in (("bf16", 173_696), ("nvfp4", 67_712)):
        out = _estimate(qc, quantization)
        assert values(out)["p_kept"] == 0 and values(out)["weights_computed_bytes"] == expected
        assert not _kept_said(out)
    mo = {"quant_method": "modelopt", "quant_algo": "NVFP4", "ignore": ["lm_head", "model.layers.0.self_attn*"]}
    assert values(_estimate(mo, "fp8"))["weights_computed_bytes"] == 99_968


# -- malformed lists: 422s naming the field --------------------------------------------------------------

@pytest.mark.parametrize("qc, field, says", [
    (_ct(FP8_DYNAMIC, "lm_head"), "custom_model.quantization_config.ignore", "must be a list"),
    (_ct(FP8_DYNAMIC, ["lm_head", 3]), "custom_model.quantization_config.ignore[1]", "must be a string"),
    (_ct(FP8_DYNAMIC, ["re:model.layers.(0|1"]), "custom_model.quantization_config.ignore[0]",
     "is not a valid regular expression"),
    (_ct(FP8_DYNAMIC, ["lm_head", "re:(.*)*x"]), "custom_model.quantization_config.ignore[1]", "repeats a group"),
    (_ct(FP8_DYNAMIC, ["re:.*\\d+.*x"]), "custom_model.quantization_config.ignore[0]", "has 3 quantifiers"),
    (_ct(FP8_DYNAMIC, ["re:.*(.|\\w)(.|\\w)(.|\\w)x"]), "custom_model.quantization_config.ignore[0]",
     "has 8 combinations of alternatives"),
    (_ct(FP8_DYNAMIC, ["re:(?=a)x"]), "custom_model.quantization_config.ignore[0]", "look-around"),
    (_ct(FP8_DYNAMIC, ["re:a{1,9}"]), "custom_model.quantization_config.ignore[0]", "{m,n}"),
    (_ct(FP8_DYNAMIC, ["lm_head"], targets="Linear"), "custom_model.quantization_config.config_groups.group_0.targets",
     "must be a list"),
    (_ct(FP8_DYNAMIC, [], targets=["re:(a|b)+"]), "custom_model.quantization_config.config_groups.group_0.targets[0]",
     "repeats a group"),
    ({"quant_method": "modelopt", "quant_algo": "FP8", "ignore": {"lm_head": True}},
     "custom_model.quantization_config.ignore", "must be a list"),
    ({"quant_method": "modelopt", "quantization": {"quant_algo": "NVFP4", "exclude_modules": ["lm_head", None]}},
     "custom_model.quantization_config.quantization.exclude_modules[1]", "must be a string"),
])
def test_malformed_lists_are_422s_naming_the_field(qc, field, says):
    fmt = keptmodules.checkpoint_format(qc)
    with pytest.raises(RequestError) as err:
        _estimate(qc, fmt)
    assert str(err.value).startswith(f"{field}: ") and says in str(err.value), str(err.value)


def test_too_many_regular_expression_matches_are_refused():
    """4,096 layers x 7 linear modules + embedding + head = 28,674 modules; 2 re: patterns x 28,674 = 57,348 matches,
    over the 50,000 vramplan runs; 1 pattern (28,674) answers."""
    qc = _ct(FP8_DYNAMIC, ["re:.*mlp.gate$", "re:.*lm_head"])
    with pytest.raises(RequestError) as err:
        _estimate(qc, "fp8", num_hidden_layers=4096)
    assert "custom_model.quantization_config.ignore: 2 re: patterns over 28,674 modules" in str(err.value)
    qc["ignore"] = ["re:.*lm_head"]
    assert values(_estimate(qc, "fp8", num_hidden_layers=4096))["p_kept"] == 0  # the head is no layer parameter


# -- hf_quant_config.json beside config.json ---------------------------------------------------------------

HF_QUANT = {"producer": {"name": "modelopt", "version": "0.19.0"},
            "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": "FP8", "group_size": 16,
                             "exclude_modules": ["lm_head", "model.layers.0.self_attn*"]}}


def test_a_local_config_json_takes_the_hf_quant_config_json_beside_it(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA, "torch_dtype": "bfloat16"}))
    (tmp_path / "hf_quant_config.json").write_text(json.dumps(HF_QUANT))
    info = read_model_file(tmp_path / "config.json")
    assert info["quantization"] == "nvfp4"
    v = values(vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "custom", "custom_model": info["config"],
                                            "quantization": "nvfp4", "seq_length": 512, "batch_size": 1, "trace": True}))
    assert v["weights_computed_bytes"] == KEPT_NVFP4
    # config.json's own quantization_config wins over the file (vLLM reads the file only without one)
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA, "quantization_config": {"quant_method": "fp8"}}))
    assert read_model_file(tmp_path / "config.json")["quantization"] == "fp8"
    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    (tmp_path / "hf_quant_config.json").write_text(json.dumps({"quantization": "NVFP4"}))
    with pytest.raises(RequestError, match=r"hf_quant_config.json.quantization: must be an object"):
        read_model_file(tmp_path / "config.json")


def _hub_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1",
               VRAMPLAN_CACHE_DIR=str(tmp_path / "vramplan-cache"), HF_HUB_DISABLE_TELEMETRY="1",
               VRAMPLAN_NO_ENTRYPOINTS="1")
    return env


def test_a_hub_model_reads_hf_quant_config_json_when_config_json_has_no_quantization_config(tmp_path):
    lay_out_hub_cache(tmp_path / "hub", "acme/tiny-nvfp4", {"config.json": {**LLAMA, "torch_dtype": "bfloat16"},
                                                            "hf_quant_config.json": HF_QUANT})
    bad = {**HF_QUANT, "quantization": {**HF_QUANT["quantization"], "exclude_modules": "lm_head"}}
    lay_out_hub_cache(tmp_path / "hub", "acme/bad-nvfp4", {"config.json": LLAMA, "hf_quant_config.json": bad})
    env = _hub_env(tmp_path)

    def run(model):
        return subprocess.run([sys.executable, "-m", "vramplan", "inference", "--gpu", "h100_80", "--model", model,
                               "--quantization", "nvfp4", "--format", "json"], env=env, capture_output=True, text=True,
                              timeout=120)
    r = run("hf:acme/tiny-nvfp4")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert _kept_said(out) == ["weights: the checkpoint keeps at 16 bits (its hf_quant_config.json quantization."
                               f"exclude_modules) {ASSUMED}nvfp4"]
    r = run("hf:acme/bad-nvfp4")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert ("llm_key hf:acme/bad-nvfp4: hf_quant_config.json.quantization.exclude_modules: must be a list"
            in r.stderr), r.stderr


def test_the_hub_fetches_hf_quant_config_json_only_where_config_json_has_no_quantization_config(tmp_path):
    """Over a loopback Hub: the file is one more small download beside config.json; a model whose config.json says
    its quantization asks nothing more, and a model without either file answers as before (the 404 is no error)."""
    quant = json.dumps(HF_QUANT).encode()
    with_qc = {**LLAMA, "quantization_config": {"quant_method": "fp8"}}
    files = {"acme/mo/config.json": json.dumps(LLAMA).encode(), "acme/mo/hf_quant_config.json": quant,
             "acme/fp8/config.json": json.dumps(with_qc).encode(), "acme/fp8/hf_quant_config.json": quant,
             "acme/plain/config.json": json.dumps(LLAMA).encode()}
    env = {**_hub_env(tmp_path), "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5"}
    env.pop("HF_HUB_OFFLINE")
    with FileServer(files) as server:
        env["HF_ENDPOINT"] = server.url
        got = {}
        for repo in ("mo", "fp8", "plain"):
            r = subprocess.run([sys.executable, "-m", "vramplan", "models", "import", f"hf:acme/{repo}", "--format",
                                "json"], env=env, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            got[repo] = json.loads(r.stdout)["quantization"]
        assert server.sent["acme/mo/hf_quant_config.json"] == len(quant)
        assert not any("acme/fp8/hf_quant_config.json" in path for _, path, _ in server.requests)
    assert got == {"mo": "nvfp4", "fp8": "fp8", "plain": None}
