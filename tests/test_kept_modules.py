"""Modules a quantized checkpoint keeps at 16 bits (quantization_config.modules_to_not_convert), in the
catalog path: Meta's FP8 Llama 3.1 405B and gpt-oss in MXFP4. Every figure is worked out here from the
config (layers, hidden, intermediate, heads), not read back from the engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

sys.path.insert(0, str(Path(__file__).parent))
from hub_fixtures import lay_out_hub_cache  # noqa: E402

import vramplan
from vramplan.architecture import from_hf_config
from vramplan.estimate import trace_values as values
from vramplan import keptmodules
from vramplan.errors import RequestError

# Llama 3.1 405B: 126 layers, hidden 16384, intermediate 53248, 128 heads of 128, 8 KV heads, vocab 128256.
H, FF, L, V = 16384, 53248, 126, 128256
ATTN = H * H + 2 * H * 8 * 128 + H * H  # q 268,435,456 + k, v 16,777,216 each + o 268,435,456 = 570,425,344
MLP = 3 * H * FF  # gate, up, down: 2,617,245,696
EMBD = V * H  # 2,101,346,304 (the head is the same size, untied)
NORMS = (2 * L + 1) * H  # 4,145,152
assert (ATTN, MLP, EMBD, NORMS) == (570_425_344, 2_617_245_696, 2_101_346_304, 4_145_152)

# Meta's checkpoint: attention of all 126 blocks, the feed-forward of blocks 0 and 125, embedding, head and norms in
# bf16 (2 bytes); the feed-forward of blocks 1-124 in FP8 (1 byte):
#   2 x 2,101,346,304 x 2 + 126 x 570,425,344 x 2 + 2 x 2,617,245,696 x 2 + 124 x 2,617,245,696 + 4,145,152 x 2
#   = 8,405,385,216 + 143,747,186,688 + 10,468,982,784 + 324,538,466,304 + 8,290,304 = 487,168,311,296 bytes (~487 GB)
META_FP8_BYTES = 2 * EMBD * 2 + L * ATTN * 2 + 2 * MLP * 2 + 124 * MLP + NORMS * 2
assert META_FP8_BYTES == 487_168_311_296
# the generic fp8 format: every linear layer in FP8 - 8,405,385,216 + 126 x (570,425,344 + 2,617,245,696) + 8,290,304
PLAIN_FP8_BYTES = 2 * EMBD * 2 + L * (ATTN + MLP) + NORMS * 2
assert PLAIN_FP8_BYTES == 410_060_226_560


def _run(model: str, quantization: str, **extra) -> dict:
    req = {"gpu_key": "h100_80", "llm_key": model, "quantization": quantization, "num_gpus": 8, "seq_length": 2048,
           "batch_size": 1, "runtime": "vllm", "inference_parallelism": "tensor", "trace": True}
    req.update(extra)
    return vramplan.estimate_inference(req)


def test_meta_fp8_405b_keeps_attention_and_the_end_blocks_in_bf16():
    out = _run("llama-3.1-405b-instruct-fp8", "fp8")
    v = values(out)
    assert v["weights_file_bytes"] == pytest.approx(META_FP8_BYTES, rel=1e-12)
    # kept in bf16 over the layers: 126 x 570,425,344 + 2 x 2,617,245,696 = 77,108,084,736 params, x 2 bytes
    assert v["kept_layer_bytes"] == pytest.approx((L * ATTN + 2 * MLP) * 2, rel=1e-12)
    # every linear layer's share: attention all 16 bits, the feed-forward (2 x 16 + 124 x 8) / 126 bits on average
    assert v["b_attn_q"] == 16 and v["b_attn_output"] == 16
    assert v["b_ffn_down"] == pytest.approx((2 * 16 + 124 * 8) / 126, rel=1e-12)
    # a decode step reads the layers and the head (not the embedding) - 8 tensor-parallel shares:
    # (487,168,311,296 - 2,101,346,304 x 2) / 8 = 60,370,702,336 bytes per GPU
    assert v["decode_weight_bytes"] == pytest.approx((META_FP8_BYTES - EMBD * 2) / 8, rel=1e-12)
    said = [a for a in out["assumptions"] if "modules_to_not_convert" in a]
    assert said == ["weights: the checkpoint keeps at 16 bits (its quantization_config.modules_to_not_convert) "
                    "self_attn.q_proj, self_attn.k_proj, self_attn.v_proj, self_attn.o_proj in all 126 layers; "
                    "mlp.gate_proj, mlp.up_proj, mlp.down_proj in layers 0, 125; lm_head; its other linear layers are fp8"]


def test_the_same_model_in_plain_fp8_and_the_checkpoint_in_bf16_keep_nothing_apart():
    plain = values(_run("llama-3.1-405b-instruct", "fp8"))  # AMD's / NVIDIA's checkpoints: every linear layer FP8
    assert plain["weights_file_bytes"] == pytest.approx(PLAIN_FP8_BYTES, rel=1e-12)
    assert plain["kept_layer_bytes"] == 0
    # Meta's checkpoint asked for in bf16 is every tensor at 2 bytes: 2 x (2 x 2,101,346,304 + 126 x (570,425,344 +
    # 2,617,245,696) + 4,145,152) = 812,144,922,624 - the request's format, not the checkpoint's
    out = _run("llama-3.1-405b-instruct-fp8", "bf16")
    assert values(out)["weights_file_bytes"] == pytest.approx(2 * (2 * EMBD + L * (ATTN + MLP) + NORMS), rel=1e-12)
    assert not [a for a in out["assumptions"] if "modules_to_not_convert" in a]


def test_meta_fp8_405b_halves_the_kv_pool_on_8_h100():
    """77.1 GB more weights over 8 tensor-parallel H100s: each GPU holds 77,108,084,736 / 8 = 9,638,510,592 bytes
    (8.98 GiB) more, and vLLM's KV pool (a share of memory less weights and the rest) loses exactly that - from about
    19.5 GiB a GPU to about 10.5, under 0.55 of it: the mechanism behind the dstack records' slower 405B runs."""
    meta = values(_run("llama-3.1-405b-instruct-fp8", "fp8"))
    plain = values(_run("llama-3.1-405b-instruct", "fp8"))
    grown = (META_FP8_BYTES - PLAIN_FP8_BYTES) / 8  # 77,108,084,736 / 8 = 9,638,510,592 bytes a GPU
    assert meta["weights_gpu_bytes"] - plain["weights_gpu_bytes"] == pytest.approx(grown, rel=1e-9)
    assert plain["kv_pool_bytes"] - meta["kv_pool_bytes"] == pytest.approx(grown, rel=1e-6)
    assert meta["kv_pool_bytes"] < 0.55 * plain["kv_pool_bytes"]


# gpt-oss-20b: 24 layers, hidden 2880, 64 heads of 64 (q_dim 4096), 8 KV heads (512), 32 experts of 2880.
OSS_ATTN = 2880 * 4096 + 2 * 2880 * 512 + 4096 * 2880  # 26,542,080 a layer
OSS_ROUTER = 2880 * 32  # 92,160 a layer
assert (OSS_ATTN, OSS_ROUTER) == (26_542_080, 92_160)


def test_gpt_oss_20b_in_mxfp4_keeps_attention_and_routers_at_16_bits():
    out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "gpt-oss-20b", "quantization": "mxfp4",
                                       "seq_length": 2048, "batch_size": 1, "trace": True})
    v = values(out)
    assert (v["b_attn_q"], v["b_attn_k"], v["b_attn_v"], v["b_attn_output"], v["b_ffn_gate_inp"]) == (16, 16, 16, 16, 16)
    assert v["b_ffn_gate"] == v["b_ffn_up"] == v["b_ffn_down"] == 4.25  # the experts, in MXFP4
    # 24 x (26,542,080 + 92,160) = 639,221,760 params kept, x 2 bytes = 1,278,443,520
    assert v["kept_layer_bytes"] == 24 * (OSS_ATTN + OSS_ROUTER) * 2 == 1_278_443_520
    # the experts: 24 layers x 32 x 2880 x 2880 x 3 matrices x 4.25 / 8 bytes = 10,149,580,800
    assert v["expert_weights_bytes"] == pytest.approx(24 * 32 * 2880 * 2880 * 3 * 4.25 / 8, rel=1e-12)
    assert any("self_attn.q_proj" in a and "mlp.router in all 24 layers" in a for a in out["assumptions"])
    # the unpacking pass leaves the 16-bit tensors out: one GPU, all layers on it
    assert v["decode_dequant_bytes"] == pytest.approx(v["decode_weight_bytes"] - 1_278_443_520, rel=1e-12)


def test_gpt_oss_in_bf16_keeps_nothing_apart():
    v = values(vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "gpt-oss-20b", "quantization": "bf16",
                                            "seq_length": 2048, "batch_size": 1, "trace": True}))
    assert v["kept_layer_bytes"] == 0 and v["b_ffn_gate"] == 16


def test_matching_follows_transformers_should_convert_module():
    """A pattern matches from the start as a regular expression, or the module name ends with it; MiniMax's bare
    "gate" names every router, "e_score_correction_bias" no linear module."""
    tiny = {"model_type": "mixtral", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 128, "num_local_experts": 4, "num_experts_per_tok": 2,
            "vocab_size": 100, "tie_word_embeddings": False}
    a = from_hf_config(tiny)
    k = keptmodules.kept(a, {"quant_method": "fp8", "modules_to_not_convert": ["gate", "e_score_correction_bias", "lm_head"]})
    assert k.shares == {"output": 1.0, "ffn_gate_inp": 1.0}
    k = keptmodules.kept(a, {"modules_to_not_convert": ["model.layers.0", "model.layers.3.self_attn"]})
    # layer 0 whole (1 of 4 layers' attention, experts and router) and layer 3's attention: attention 2 of 4 layers
    assert k.shares["attn_q"] == 0.5 and k.shares["ffn_up"] == 0.25 and k.shares["ffn_gate_inp"] == 0.25
    assert keptmodules.kept(a, {"modules_to_not_convert": ["vision_tower"]}) is None
    assert keptmodules.kept(a, {"modules_to_not_convert": []}) is None
    # a pattern that is no regular expression matches as text, and a bad list is no list
    assert keptmodules.kept(a, {"modules_to_not_convert": ["model.layers.1.self_attn("]}) is None
    with pytest.raises(RequestError):  # a string would be read letter by letter: refused, naming the field
        keptmodules.kept(a, {"modules_to_not_convert": "lm_head"})
    # methods: fbgemm_fp8 is the catalog's fp8
    assert keptmodules.checkpoint_format({"quant_method": "fbgemm_fp8"}) == "fp8"
    assert keptmodules.checkpoint_format({"quant_method": "compressed-tensors"}) is None


def test_a_custom_model_config_with_its_quantization_config_is_honoured():
    """The custom_model path reads the same config.json key: a 2-layer Llama (hidden 64, FFN 128, 4 heads of 16,
    2 KV heads) with layer 0 kept - per layer q 4096 + k 2048 + v 2048 + o 4096 + 3 x 8192 = 36,864 linear params,
    so 36,864 kept at 16 bits: 73,728 bytes."""
    cfg = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 100, "tie_word_embeddings": False,
           "quantization_config": {"quant_method": "fbgemm_fp8", "modules_to_not_convert": ["model.layers.0"]}}
    v = values(vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "custom", "custom_model": cfg,
                                            "quantization": "fp8", "seq_length": 512, "batch_size": 1, "trace": True}))
    assert v["kept_layer_bytes"] == 36_864 * 2
    assert v["b_attn_q"] == (16 + 8) / 2


def test_a_hub_fbgemm_fp8_checkpoint_takes_its_exact_bytes_and_says_what_it_keeps(tmp_path):
    """fbgemm_fp8 is the catalog's fp8, so a Hub checkpoint run in fp8 takes its safetensors headers' bytes (before,
    the method name did not match and the bytes were computed). A 2-layer Llama (hidden 64, FFN 128, 4 heads of 16,
    2 KV heads, tied embedding 100 x 64) with layer 0 kept in bf16 and layer 1's linears in FP8 with an fp32 scale per
    output row: embedding 6,400 x 2 + final norm 64 x 2 + layer 0 (36,864 linear + 128 norm) x 2 + layer 1's norms
    128 x 2 + its linears 36,864 x 1 + scales (64 + 32 + 32 + 64 + 128 + 128 + 64 = 512 rows) x 4
    = 12,800 + 128 + 73,984 + 256 + 36,864 + 2,048 = 126,080 bytes."""
    config = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 100, "tie_word_embeddings": True,
              "max_position_embeddings": 512, "torch_dtype": "bfloat16",
              "quantization_config": {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0,
                                      "modules_to_not_convert": ["model.layers.0"]}}
    shapes = {"self_attn.q_proj": (64, 64), "self_attn.k_proj": (32, 64), "self_attn.v_proj": (32, 64),
              "self_attn.o_proj": (64, 64), "mlp.gate_proj": (128, 64), "mlp.up_proj": (128, 64), "mlp.down_proj": (64, 128)}
    t = {"model.embed_tokens.weight": np.zeros((100, 64), np.float16), "model.norm.weight": np.zeros(64, np.float16)}
    for i in range(2):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            t[f"model.layers.{i}.{norm}.weight"] = np.zeros(64, np.float16)
        for name, shape in shapes.items():
            if i == 0:
                t[f"model.layers.0.{name}.weight"] = np.zeros(shape, np.float16)
            else:  # FP8 E4M3 bytes (stored here as U8: one byte each) and the row-wise fp32 scale
                t[f"model.layers.1.{name}.weight"] = np.zeros(shape, np.uint8)
                t[f"model.layers.1.{name}.weight_scale"] = np.zeros((shape[0], 1), np.float32)
    lay_out_hub_cache(tmp_path / "hub", "acme/tiny-fp8", {"config.json": config, "model.safetensors": save(t)})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1",
               VRAMPLAN_CACHE_DIR=str(tmp_path / "vramplan-cache"), HF_HUB_DISABLE_TELEMETRY="1", VRAMPLAN_NO_ENTRYPOINTS="1")
    r = subprocess.run([sys.executable, "-m", "vramplan", "inference", "--gpu", "rtx_4090", "--model", "hf:acme/tiny-fp8",
                        "--quantization", "fp8", "--format", "json"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "weights: 126,080 bytes as the checkpoint's safetensors headers state them" in out["assumptions"]
    assert ("weights: the checkpoint keeps at 16 bits (its quantization_config.modules_to_not_convert) self_attn.q_proj, "
            "self_attn.k_proj, self_attn.v_proj, self_attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj in layer 0; "
            "its other linear layers are fp8") in out["assumptions"]


def test_a_hostile_modules_list_in_a_request_is_refused_or_matched_as_text():
    """custom_model is request input: a list too long to match is a 422 naming the field, and a pattern that is
    no checkpoint's form (nested quantifiers that would make a regular expression backtrack for ever) is plain text.
    4,096 layers x (4 attention + 3 feed-forward) + embedding + head = 28,674 modules; 200 patterns x 28,674 =
    5,734,800 > 4,000,000 matches."""
    big = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 4096, "num_attention_heads": 4,
           "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 100,
           "quantization_config": {"quant_method": "fp8", "modules_to_not_convert": [f"x{i}" for i in range(200)]}}
    req = {"gpu_key": "h100_80", "llm_key": "custom", "custom_model": big, "quantization": "fp8", "seq_length": 512,
           "batch_size": 1}
    with pytest.raises(RequestError) as err:
        vramplan.estimate_inference(req)
    assert "custom_model.quantization_config.modules_to_not_convert" in str(err.value)
    assert "200 patterns over 28,674 modules" in str(err.value)
    # the same model with a short list answers; "(.*)*x" is read as text (matching nothing), "self_attn" as a suffix
    # of no module (names end in q_proj ...) and "lm_head" as the head
    big["quantization_config"]["modules_to_not_convert"] = ["(.*)*x" * 8, "lm_head", True, None, {"a": 1}]
    out = vramplan.estimate_inference(req)
    assert out["memory_status"] != "error"
    assert not [a for a in out["assumptions"] if "modules_to_not_convert" in a and "self_attn" in a]
    # neither "fp8" checkpoints of another method nor a quantization_config that is no object change the bits
    big["quantization_config"] = "fp8"
    assert vramplan.estimate_inference(req)["memory_status"] != "error"


@pytest.mark.parametrize("value", ["self_attn", {"self_attn": True}, 3])
def test_a_modules_list_that_is_no_list_is_a_422_naming_it(value):
    """transformers iterates modules_to_not_convert as a list; a string (which would be read letter by letter),
    an object or a number is refused, naming the field, rather than silently ignored."""
    cfg = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 100,
           "quantization_config": {"quant_method": "fp8", "modules_to_not_convert": value}}
    with pytest.raises(RequestError) as err:
        vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "custom", "custom_model": cfg, "quantization": "fp8",
                                     "seq_length": 512, "batch_size": 1})
    assert "custom_model.quantization_config.modules_to_not_convert" in str(err.value)
    assert "must be a list" in str(err.value)
