"""DeepSeek V4 (vramplan.families._deepseek_v4): compressed attention, the grouped output projection, hyper-connections,
the official checkpoint's mixed formats.

Every count is itemized by hand from DeepSeek V4's inference/model.py (Attention, Compressor, Indexer, Block, Gate,
Transformer) for DeepSeek-V4-Flash's config.json; the bytes of its cache from the row layout vLLM and SGLang keep
(448 FP8 + 8 scale bytes + 64 x 2 rotated = 584 a row; 128 + 4 = 132 an indexer key).
"""

from __future__ import annotations

import copy

import pytest

import vramplan
from vramplan.architecture import from_hf_config
from vramplan.catalog import get_catalog
from vramplan.errors import RequestError
from vramplan.estimate import trace_values
from vramplan.scenario import _model_vars

from server_fixtures import PREFIX, api_token, app, auth_headers, client, isolated_data_dir, sqlite_store  # noqa: F401

FLASH = get_catalog().models.get("deepseek-v4-flash").data["config"]
RATIOS = FLASH["compress_ratios"][:43]  # the 44th entry is the multi-token-prediction layer's


def test_flash_layers_read_from_compress_ratios():
    a = from_hf_config(FLASH)
    assert len(FLASH["compress_ratios"]) == 44 and a.compress_ratios == tuple(RATIOS)
    assert (RATIOS.count(0), RATIOS.count(4), RATIOS.count(128)) == (2, 21, 20)
    assert a.layer_types == ("sliding",) * 43 and a.sliding_window == 128  # every layer keeps its window
    assert (a.num_kv_heads, a.head_dim, a.kv_lora_rank, a.indexed_layers) == (1, 512, 0, 21)
    assert a.kv_elements_per_token_per_layer == 512  # one row, key and value alike


def test_flash_parameters_by_hand():
    a = from_hf_config(FLASH)
    d, heads, D, rq, g, ro, E, inter, V, hc = 4096, 64, 512, 1024, 8, 1024, 256, 2048, 129280, 4
    attention = (rq * d + rq + heads * D * rq            # wq_a, q_norm, wq_b
                 + D * d + D                             # wkv (key = value), kv_norm
                 + g * ro * (heads * D // g) + d * g * ro  # wo_a (grouped), wo_b
                 + heads)                                # attn_sink
    csa = 2 * (2 * D) * d + 4 * (2 * D) + D              # overlapping compressor: wkv, wgate [1024, 4096], ape [4, 1024], norm
    indexer = 64 * 128 * rq + 64 * d + 2 * 256 * d + 4 * 256 + 128  # wq_b, weights_proj, its compressor (coff 2 over 128)
    hca = 2 * D * d + 128 * D + D                        # compressor: wkv, wgate [512, 4096], ape [128, 512], norm
    hyper = 2 * ((2 + hc) * hc * hc * d + (2 + hc) * hc + 3)  # hc_attn / hc_ffn: fn, base, scale
    moe = d * E + E * 3 * inter * d + 3 * inter * d      # router, 256 experts, the shared expert
    layer = attention + hyper + moe + 2 * d              # + attn_norm, ffn_norm
    total = (43 * layer + 21 * (csa + indexer) + 20 * hca
             + (43 - 3) * E                              # the router's correction bias, not on the 3 hash layers
             + 2 * V * d + d + hc * hc * d + hc + 1)     # embed, head, norm, hc_head
    assert a.param_count() == total == 284_332_240_471  # the announced 284B (without the 6.6B MTP layer)
    active = total - 43 * (E - 6) * 3 * inter * d
    assert a.param_count(active=True) == active == 13_799_632_471


def test_flash_cache_variables_by_hand():
    v = _model_vars(from_hf_config(FLASH))
    assert v["kv_cmp_equiv"] == 21 / 4 + 20 / 128 == 5.40625
    assert v["kv_cmp_index_equiv"] == 5.25 and v["n_layers_indexed"] == 21 and v["cmp_attention"] == 1
    # kv and score buffers in fp32: CSA 2 x (2 x 4) x (2 x 512) + its indexer 2 x 8 x 256, HCA 2 x 128 x 512
    assert v["cmp_state_elems"] == 21 * (2 * 8 * 1024 + 2 * 8 * 256) + 20 * (2 * 128 * 512) == 3_051_520
    row = get_catalog().formulas.evaluate({**v, "kv_bits": 8.0, "kv_fp8": 1.0, "rt_kv_int8_group_bits": 0.0, "rt_dsa_fp8_scaled_kv": 1.0}, ["kv_bytes_per_token_layer"])
    assert row["kv_bytes_per_token_layer"] == 448 + 8 + 2 * 64 == 584


def _flash(**over):
    body = {"gpu_key": "h200", "num_gpus": 4, "llm_key": "deepseek-v4-flash", "quantization": "fp8",
            "kv_cache_quantization": "fp8", "runtime": "vllm", "inference_parallelism": "tensor",
            "input_tokens": 8192, "output_tokens": 1024, "batch_size": 1, "trace": True}
    body.update(over)
    out = vramplan.estimate_inference(body)
    return out, trace_values(out)


def test_flash_cache_per_sequence_on_vllm():
    _, v = _flash()
    # vLLM keeps the window plus its 16 extra tokens in 16-token blocks: 144 rows x 43 layers; 9216 tokens of context
    window = 584 * 43 * 144
    compressed = 9216 * (584 * 5.40625 + 132 * 5.25)
    state = 4 * 3_051_520
    assert v["kv_tokens_sliding"] == 144 and v["kv_attention_bytes_per_seq"] == window + compressed + state == 51_306_112


def test_flash_official_checkpoint_bytes_by_hand():
    out, v = _flash()
    routed = 43 * 256 * 2048 * 4096                        # per ffn role; in FP4 (E2M1 + UE8M0 per 32): 4.25 bits
    shared = 43 * 2048 * 4096                              # FP8
    ffn = 3 * (routed * 4.25 / 8 + shared)
    wide = 21 * (2 * 1024 * 4096 + 2 * 256 * 4096 + 64 * 4096) + 20 * 2 * 512 * 4096  # compressors, weights_proj: bf16
    attn = 43 * (4096 * 1024 + 64 * 512 * 1024 + 8 * 1024 * 4096 + 4096 * 8 * 1024) + 21 * 64 * 128 * 1024  # FP8
    attn += 43 * 512 * 4096                                # wkv, FP8
    hyper = 43 * 2 * (24 * 16384 + 24 + 3) + 4 * 16384 + 4 + 1  # fp32
    norms = (43 * (2 * 4096 + 1024 + 512 + 64)             # attn / ffn norms, q_norm, kv_norm, sinks
             + 21 * (4 * 1024 + 512 + 4 * 256 + 128)       # CSA compressors' ape and norm, their indexers' compressors'
             + 20 * (128 * 512 + 512)                      # HCA compressors' ape and norm
             + 40 * 256 + 4096)                            # router biases (not on the 3 hash layers), the final norm
    small = 2 * (43 * 4096 * 256 + norms)                  # routers and norm-like parameters, 16 bits
    embed = 2 * 2 * 129280 * 4096                          # embed and head, bf16
    assert v["weights_computed_bytes"] == ffn + 2 * wide + attn + 4 * hyper + small + embed == 155_993_861_852
    assert any("routed experts in mxfp4" in a for a in out["assumptions"])


def test_flash_in_bf16_is_not_the_checkpoint_mix():
    out, v = _flash(quantization="bf16")
    assert v["weights_computed_bytes"] == 2 * 284_332_240_471
    assert not any("routed experts" in a for a in out["assumptions"])


def test_flash_decode_reads_the_windows_the_top_k_and_every_hca_entry():
    _, v = _flash()
    ctx = 8192 + 1024 / 2                                   # a decoding sequence's mean context
    assert v["srv_ctx_mean"] == ctx
    assert v["decode_cmp_entries"] == 5.25 * min(ctx, 512 * 4) + (20 / 128) * ctx == 12_112
    # every head scores and weighs one 512-wide row: 4 x 64 x 512 FLOPs an entry; tensor parallelism over the 4 GPUs
    # splits the heads, so a GPU does a quarter
    attn = 4 * 64 * 512 * (43 * 128 + 12_112) / 4
    assert v["decode_attn_flops_per_token"] == pytest.approx(attn + v["decode_index_flops_per_token"], rel=1e-12)
    assert any("compressed attention (DeepSeek V4)" in w for w in _flash()[0]["warnings"])


def test_long_context_grows_the_cache_by_the_compressed_rows_only():
    _, short = _flash(input_tokens=8192, output_tokens=1)
    _, long = _flash(input_tokens=8192 + 65536, output_tokens=1)
    grew = long["kv_attention_bytes_per_seq"] - short["kv_attention_bytes_per_seq"]
    assert grew == 65536 * (584 * 5.40625 + 132 * 5.25)  # 3,850.25 bytes a token over the model


BAD = [
    ({"compress_ratios": "4,128"}, "compress_ratios"),
    ({"compress_ratios": [0] * 10}, "compress_ratios"),
    ({"compress_ratios": [0, -4] + [4] * 42}, "compress_ratios"),   # "item 1: must be at least 0"
    ({"compress_ratios": ["4"] * 44}, "compress_ratios"),
    ({"compress_ratios": [4.0] * 44}, "compress_ratios"),
    ({"compress_ratios": [2 ** 62] * 44}, "compress_ratios"),       # above any real ratio: a compressor state of exabytes
    ({"compress_ratios": [4] * 100_000}, "compress_ratios"),
    ({"hc_mult": 10 ** 6}, "hc_mult"),
    ({"o_lora_rank": 10 ** 9}, "o_lora_rank"),
    ({"o_groups": 0}, "o_groups"),
    ({"o_groups": 7}, "o_groups"),
    ({"o_lora_rank": -1}, "o_lora_rank"),
    ({"hc_mult": None}, "hc_mult"),
    ({"num_key_value_heads": 2}, "num_key_value_heads"),
    ({"qk_rope_head_dim": 512}, "qk_rope_head_dim"),
    ({"index_topk": None}, "index_topk"),
    ({"head_dim": None}, "head_dim"),
    ({"num_hash_layers": -1}, "num_hash_layers"),
    ({"sliding_window": 0}, "sliding_window"),
]


@pytest.mark.parametrize("change, field", BAD)
def test_malformed_v4_configs_name_the_key(change, field):
    cfg = copy.deepcopy(FLASH)
    for k, v in change.items():
        if v is None:
            cfg.pop(k)
        else:
            cfg[k] = v
    with pytest.raises(RequestError) as e:
        from_hf_config(cfg)
    assert [f for f, _ in e.value.problems] == [f"custom_model.{field}"]


def test_v4_config_over_http(client, auth_headers):
    r = client.post(f"{PREFIX}/inference", headers=auth_headers,
                    json={"gpu_key": "h200", "num_gpus": 4, "llm_key": "custom", "custom_model": FLASH, "quantization": "fp8"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["vram_usage"] > 0 and any("DeepSeek V4" in w for w in body.get("warnings", []))


def test_models_import_says_what_a_v4_token_adds(tmp_path):
    import json

    from click.testing import CliRunner

    from vramplan.cli.models import models

    (tmp_path / "config.json").write_text(json.dumps(FLASH))
    res = CliRunner().invoke(models, ["import", str(tmp_path / "config.json")])
    assert res.exit_code == 0, res.output
    # in 16 bits a row is 1024 bytes: 1024 x 5.40625 compressed rows + 132 x 5.25 indexer keys = 6,229 bytes a token
    assert "6,229 bytes in 16 bits" in res.output and "43 windows of 128 tokens" in res.output
    assert "21 window + 1/4 compressed (indexed), 20 window + 1/128 compressed" in res.output


def test_vllm_and_sglang_keep_a_v4_cache_in_fp8():
    body = {"gpu_key": "h200", "num_gpus": 4, "llm_key": "deepseek-v4-flash", "quantization": "fp8",
            "input_tokens": 8192, "output_tokens": 1024, "trace": True}
    for runtime in ("vllm", "sglang"):
        out = vramplan.estimate_inference({**body, "runtime": runtime})  # no KV format named: FP8, 584-byte rows
        assert trace_values(out)["kv_bytes_per_token_layer"] == 584
        assert any("FP8 only (kv_cache_quantization not given)" in a for a in out["assumptions"])
        out = vramplan.estimate_inference({**body, "runtime": runtime, "kv_cache_quantization": "bf16"})
        assert trace_values(out)["kv_bytes_per_token_layer"] == 1024  # as asked, 512 x 2, and said to be refused
        assert any("refuses bf16" in w for w in out["warnings"])
    out = vramplan.estimate_inference({**body, "runtime": "tensorrt-llm"})  # states nothing: the request's fp16 default
    assert trace_values(out)["kv_bytes_per_token_layer"] == 1024
    assert not any("FP8 only" in a for a in out["assumptions"])


def test_sglang_sizes_v4_windows_with_the_context():
    """SGLang's DSV4PoolConfigurator gives the window pool (every layer's window rows and the CSA compressors' rings)
    0.1 of the full tokens: a long sequence takes window capacity in proportion to its context, about twice vLLM's
    bytes a token (3,850 compressed + 3,850 of window share) - so it admits about half as many."""
    body = {"gpu_key": "h200", "num_gpus": 8, "llm_key": "deepseek-v4-flash", "quantization": "fp8",
            "inference_parallelism": "tensor", "input_tokens": 100_000, "output_tokens": 2_400, "concurrent_users": 512,
            "trace": True}
    sg = trace_values(vramplan.estimate_inference({**body, "runtime": "sglang"}))
    vl = trace_values(vramplan.estimate_inference({**body, "runtime": "vllm"}))
    windows = 584 * 43 * sg["kv_tokens_sliding"] + 4 * 21 * (2 * 8 * 1024 + 2 * 8 * 256)
    times = sg["kv_tokens_full"] * 0.1 / sg["kv_tokens_sliding"]
    assert sg["kv_pool_seq_bytes"] == pytest.approx(sg["kv_attention_bytes_per_seq"] + windows * (times - 1), rel=1e-12)
    assert vl["kv_pool_seq_bytes"] == vl["kv_attention_bytes_per_seq"]
    assert 1.9 < sg["kv_pool_seq_bytes"] / vl["kv_pool_seq_bytes"] < 2.1


def test_a_v4_checkpoints_fp4_experts_are_packed_not_missing_parameters(tmp_path):
    """The released V4 checkpoints store each routed expert's FP4 weights as I8 pairs: the headers count half the
    elements, which is packing, not a model the reading gets wrong - no params-disagree warning."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    from vramplan.modelfiles import read_model_file
    from vramplan.resolve import params_disagree

    tiny = {"model_type": "deepseek_v4", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 1, "head_dim": 32, "qk_rope_head_dim": 8, "q_lora_rank": 16, "o_lora_rank": 8,
            "o_groups": 2, "n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16,
            "index_n_heads": 2, "index_head_dim": 16, "index_topk": 4, "sliding_window": 8,
            "compress_ratios": [4, 128, 0], "hc_mult": 2, "num_hash_layers": 1, "vocab_size": 100,
            "expert_dtype": "fp4", "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}
    (tmp_path / "config.json").write_text(json.dumps(tiny))
    save_file({"layers.0.ffn.experts.0.w1.weight": np.zeros((16, 32), np.int8)}, str(tmp_path / "model.safetensors"))
    info = read_model_file(tmp_path)
    assert any("packed" in n for n in info["notes"])
    assert params_disagree(info, from_hf_config(tiny)) == []


def test_the_residual_stream_is_hc_mult_hidden_states_wide():
    _, v = _flash()
    assert v["residual_streams"] == 4
    # the live hidden-size tensors of a prefill chunk: the runtime's count, the residual counted 4 times
    expected = v["prefill_tokens"] * (v["rt_hidden_live_tensors"] + 3) * 4096 * v["act_bytes"]
    assert v["hidden_live_bytes"] == expected
