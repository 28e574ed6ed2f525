"""Falcon-H1 (vramplan.families._falcon_h1): attention and a Mamba2 mixer side by side in every layer.

Counts itemized by hand from transformers' modeling_falcon_h1.py (FalconH1DecoderLayer, FalconH1Mixer) and
configuration_falcon_h1.py (FalconH1Config).
"""

from __future__ import annotations

import pytest

import vramplan
from vramplan.architecture import from_hf_config
from vramplan.errors import RequestError

#: A small Falcon-H1-shaped config, every key stated.
SMALL = {"model_type": "falcon_h1", "hidden_size": 64, "vocab_size": 100, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128, "mamba_d_ssm": 32, "mamba_n_heads": 4,
         "mamba_d_head": 8, "mamba_n_groups": 1, "mamba_d_state": 16, "mamba_d_conv": 4, "mamba_conv_bias": True,
         "mamba_proj_bias": False, "mamba_rms_norm": False, "projectors_bias": False, "tie_word_embeddings": False}


def traced(runtime: str, **extra) -> dict:
    out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "custom", "custom_model": {**SMALL, **extra},
                                       "quantization": "bf16", "runtime": runtime, "seq_length": 1000, "trace": True})
    return {s["id"]: s["value"] for s in out["trace"]}


def test_every_layer_has_attention_a_mamba2_mixer_and_an_mlp():
    a = from_hf_config(SMALL)
    # embedding and head 2 x 100 x 64 = 12,800
    # attention q 64x64 + k 64x32 + v 64x32 + o 64x64 = 12,288; MLP 3 x 64 x 128 = 24,576
    # mixer: conv_dim 32 + 2 x 1 x 16 = 64; in_proj 64 x (32 + 64 + 4) = 6,400; conv1d 64 x 4 + bias 64 = 320;
    #        dt_bias, A_log, D 3 x 4 = 12; out_proj 32 x 64 = 2,048 -> 8,780
    # norms: input and pre-FFN 2 x 64 a layer, the final one 64
    per_layer = 12288 + 24576 + 8780 + 2 * 64
    assert a.param_count() == 12800 + 2 * per_layer + 64 == 104_408
    assert a.num_full_layers == 2 and a.num_recurrent_layers == 2 and a.recurrent_kind == "mamba2"


def test_each_layer_keeps_keys_values_and_a_mamba2_state():
    # KV a token and layer: 2 heads x 16 x (K, V) x 2 bytes = 128
    # state a layer: conv 64 channels x the whole kernel of 4 (transformers) + SSM 4 heads x 8 x 16, 2 bytes each
    hf = traced("transformers")
    assert hf["kv_bytes_per_token_layer"] == 128
    assert hf["recurrent_state_bytes_layer"] == (64 * 4 + 4 * 8 * 16) * 2 == 1536
    assert hf["recurrent_state_bytes_per_seq"] == 2 * 1536
    assert hf["kv_attention_bytes_per_seq"] == 128 * 2 * 1000
    # vLLM keeps kernel - 1 conv columns, (64 x 3 + 512) x 2 = 1,408 bytes, padded to one attention page of 16 tokens
    # x 128 = 2,048; its cache blocks round 1,000 tokens up to 1,008
    v = traced("vllm")
    assert v["recurrent_state_bytes_layer"] == (64 * 3 + 4 * 8 * 16) * 2 == 1408
    assert v["recurrent_state_bytes_per_seq"] == 2 * 2048
    assert v["kv_attention_bytes_per_seq"] == 128 * 2 * 1008


def test_a_null_mamba_d_ssm_is_expand_times_hidden():
    a = from_hf_config({**SMALL, "mamba_d_ssm": None, "mamba_expand": 2, "mamba_d_head": "auto"})
    # d_ssm 2 x 64 = 128, d_head 128 / 4 = 32; conv_dim 128 + 32 = 160; in_proj 64 x (128 + 160 + 4) = 18,688;
    # conv1d 160 x 4 + 160 = 800; 12; out_proj 128 x 64 = 8,192 -> 27,692 a mixer
    assert a.param_count() == 104_408 + 2 * (27692 - 8780)
    assert a.ssm_state_elems == 4 * 32 * 16


def test_an_unstated_tie_is_falcon_h1s_own_default_untied():
    a = from_hf_config({k: v for k, v in SMALL.items() if k != "tie_word_embeddings"})
    assert a.param_count() == 104_408  # the head counted beside the embedding (FalconH1Config: untied)


def test_optional_biases_and_the_gated_norm():
    a = from_hf_config({**SMALL, "mamba_proj_bias": True, "projectors_bias": True, "mamba_rms_norm": True})
    # in_proj bias 100, out_proj bias 64, gated RMSNorm weight 32, a layer
    assert a.param_count() == 104_408 + 2 * (100 + 64 + 32)


def test_missing_mixer_keys_take_the_class_defaults_and_say_so():
    cfg = {k: v for k, v in SMALL.items() if k not in ("mamba_d_state", "mamba_d_conv")}
    a = from_hf_config(cfg)
    assert a.ssm_state_elems == 4 * 8 * 256 and a.conv_kernel == 4
    assert "mamba_d_state = 256 (falcon_h1 default; not in config)" in a.assumed


def test_a_head_size_that_does_not_tile_the_mixer_names_the_field():
    with pytest.raises(RequestError) as e:
        from_hf_config({**SMALL, "mamba_d_head": 16})
    assert [f for f, _ in e.value.problems] == ["custom_model.mamba_d_head"]


def test_models_import_names_the_layer_kind(tmp_path):
    import json

    from click.testing import CliRunner

    from vramplan.cli import main as cli_main

    path = tmp_path / "config.json"
    path.write_text(json.dumps(SMALL))
    out = CliRunner().invoke(cli_main, ["models", "import", str(path)]).output
    assert "2 full + Mamba2" in out and "256 bytes in 16 bits" in out  # 128 bytes a layer x 2 layers


def test_the_answer_says_every_layer_keeps_both():
    out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "custom", "custom_model": SMALL,
                                       "quantization": "bf16", "runtime": "vllm", "seq_length": 1000})
    assert any("2 of 2 layers keep a KV cache (each beside its recurrent mixer)" in a for a in out["assumptions"])


def test_a_falcon_h1_gguf_header_gives_the_mixer(tmp_path):
    """llama.cpp's FalconH1Model (a Mamba2Model in convert_hf_to_gguf.py) writes the mixer as falcon-h1.ssm.*:
    inner_size = mamba_d_ssm, time_step_rank = its heads, and attention keys for every layer."""
    from gguf import GGUFWriter
    from gguf_fixtures import decoder_header, finish_gguf

    from vramplan.modelfiles import read_model_file

    path = tmp_path / "falcon-h1.gguf"
    w = GGUFWriter(str(path), "falcon-h1")
    decoder_header(w, layers=2, ff=128, kv=2, key_length=16,
                   ssm={"conv_kernel": 4, "state_size": 16, "group_count": 1, "inner_size": 32, "time_step_rank": 4})
    finish_gguf(w)
    a = from_hf_config(read_model_file(path)["config"])
    assert a.model_type == "falcon_h1" and a.num_full_layers == 2 and a.num_recurrent_layers == 2
    # conv_dim 32 + 2 x 1 x 16 = 64 channels; SSM state 4 heads x (32 / 4) x 16
    assert (a.conv_channels, a.conv_kernel, a.ssm_state_elems) == (64, 4, 4 * 8 * 16)
