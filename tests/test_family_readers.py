"""ERNIE 4.5 MoE (vramplan.families._ernie4_5_moe), expert counts under names no reader takes, MLPs without a gate,
EXAONE 4.0's letter patterns, DeepSeek V3.2's sparse attention and what tensor parallelism replicates, DeepSeek V4 refused.

Counts itemized by hand from transformers' modular_ernie4_5_moe.py (Ernie4_5_MoeDecoderLayer, Ernie4_5_MoeSparseMoeBlock).
"""

from __future__ import annotations

import pytest

import vramplan
from vramplan.architecture import from_hf_config
from vramplan.errors import RequestError

from server_fixtures import PREFIX, api_token, app, auth_headers, client, isolated_data_dir, sqlite_store  # noqa: F401

#: baidu/ERNIE-4.5-21B-A3B-PT's architecture keys.
ERNIE_21B = {
    "model_type": "ernie4_5_moe", "architectures": ["Ernie4_5_MoeForCausalLM"], "hidden_size": 2560,
    "intermediate_size": 12288, "moe_intermediate_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 20,
    "num_key_value_heads": 4, "head_dim": 128, "moe_num_experts": 64, "moe_num_shared_experts": 2, "moe_k": 6,
    "moe_layer_start_index": 1, "moe_layer_end_index": 27, "moe_layer_interval": 1, "vocab_size": 103424,
    "tie_word_embeddings": True, "max_position_embeddings": 131072, "use_bias": False,
}


def test_ernie_4_5_21b_a3b_by_hand():
    a = from_hf_config(ERNIE_21B)
    assert a.moe_layers == tuple(range(1, 28)) and (a.num_experts, a.experts_per_token) == (64, 6)
    embedding = 103424 * 2560                                               # tied
    attention = 28 * (2 * 2560 * 20 * 128 + 2 * 2560 * 4 * 128)            # q, o; k, v: 440,401,920
    dense = 3 * 2560 * 12288                                                # layer 0's MLP
    expert, shared = 3 * 2560 * 1536, 3 * 2560 * 1536 * 2
    moe = 27 * (64 * expert + shared + 2560 * 64 + 64)                      # experts, shared MLP, router, its bias
    norms = 28 * 2 * 2560 + 2560
    assert a.param_count() == embedding + attention + dense + moe + norms == 21_825_437_888
    active = embedding + attention + dense + 27 * (6 * expert + shared + 2560 * 64 + 64) + norms
    assert a.param_count(active=True) == active == 3_352_150_208  # the card: 21B total, 3B activated


def test_ernie_moe_layer_range_and_interval():
    a = from_hf_config({**ERNIE_21B, "moe_layer_start_index": 3, "moe_layer_end_index": -1, "moe_layer_interval": 2})
    assert a.moe_layers == tuple(range(3, 28, 2))  # (i + 1) % 2 == 0 from layer 3 to the last
    defaults = {k: v for k, v in ERNIE_21B.items() if not k.startswith("moe_") or k == "moe_intermediate_size"}
    b = from_hf_config(defaults)  # Ernie4_5_MoeConfig's defaults: 64 experts, top-6, 2 shared, layers 1 to the last
    assert (b.num_experts, b.experts_per_token, b.moe_layers) == (64, 6, tuple(range(1, 28)))
    assert any("moe_k = 6 (ernie4_5_moe default" in s for s in b.assumed)


def test_ernie_estimate_reads_the_experts():
    out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "custom", "custom_model": ERNIE_21B,
                                       "quantization": "bf16", "seq_length": 4096})
    assert out["model_weights_gb"] == pytest.approx(21_825_437_888 * 2 / 2**30, abs=0.01)  # 40.65 GiB


@pytest.mark.parametrize("keys, field", [
    ({"moe_k": 65}, "custom_model.moe_k"),
    ({"moe_layer_interval": 0}, "custom_model.moe_layer_interval"),
    ({"moe_layer_end_index": -2}, "custom_model.moe_layer_end_index"),
    ({"moe_num_experts": "64"}, "custom_model.moe_num_experts"),
])
def test_bad_ernie_keys_name_the_field(keys, field):
    with pytest.raises(RequestError) as e:
        from_hf_config({**ERNIE_21B, **keys})
    assert field in [f for f, _ in e.value.problems]


def test_an_expert_count_under_another_familys_name_is_refused():
    """A family without a reader that counts its experts as ``moe_num_experts`` (ERNIE's spelling, under another
    model_type): read as dense it would be ~1/8 of its size - a 422 naming the key, not a dense estimate."""
    cfg = {**ERNIE_21B, "model_type": "ernie_like_moe"}
    with pytest.raises(RequestError) as e:
        from_hf_config(cfg)
    (field, message), = e.value.problems
    assert field == "custom_model.moe_num_experts" and "read as a dense model" in message


# -- MLPs without a gate (NemotronMLP and the families that subclass it) ----------------------------------------------

#: An Apertus-8B-shaped config (swiss-ai/Apertus-8B-2509's architecture keys).
APERTUS_8B = {"model_type": "apertus", "hidden_size": 4096, "intermediate_size": 21504, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 131072, "tie_word_embeddings": False,
              "hidden_act": "xielu", "max_position_embeddings": 65536}


def test_apertus_mlp_has_no_gate_and_its_attention_per_head_qk_norms_by_hand():
    a = from_hf_config(APERTUS_8B)
    assert not a.gated_mlp
    embedding = 2 * 131072 * 4096                                    # untied embedding and head
    attention = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024)             # q, o; k, v
    mlp = 32 * 2 * 4096 * 21504                                      # up_proj, down_proj (a gate would add a third)
    norms = 32 * 2 * 4096 + 4096 + 32 * 2 * 128                      # attention / feedforward norms, final, q / k norms
    assert a.param_count() == embedding + attention + mlp + norms == 8_053_338_112


@pytest.mark.parametrize("model_type, norm_width", [("nemotron", 2), ("arcee", 1)])
def test_nemotron_and_arcee_mlps_have_no_gate(model_type, norm_width):
    """NemotronMLP / ArceeMLP: up and down only; Nemotron's LayerNorm1P has a bias (two vectors a norm)."""
    cfg = {"model_type": model_type, "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "tie_word_embeddings": False}
    a = from_hf_config(cfg)
    assert a.param_count() == 2 * 100 * 64 + 2 * (64 * 64 * 2 + 2 * 64 * 32) + 2 * 2 * 64 * 256 \
        + (2 * 2 + 1) * 64 * norm_width


# -- EXAONE 4.0: a sliding-window pattern of letters -----------------------------------------------------------------

#: An EXAONE-4.0-32B-shaped config (LGAI-EXAONE/EXAONE-4.0-32B's architecture keys, without layer_types).
EXAONE4_32B = {"model_type": "exaone4", "hidden_size": 5120, "intermediate_size": 27392, "num_hidden_layers": 64,
               "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 102400,
               "sliding_window": 4096, "sliding_window_pattern": "LLLG", "tie_word_embeddings": False,
               "max_position_embeddings": 131072}


def test_exaone4_letter_pattern_makes_every_fourth_layer_global():
    a = from_hf_config(EXAONE4_32B)
    assert a.layer_types == ("sliding", "sliding", "sliding", "full") * 16 and a.sliding_window == 4096
    # a pattern the layers do not divide is repeated: L L G | L L
    b = from_hf_config({**EXAONE4_32B, "num_hidden_layers": 5, "sliding_window_pattern": "LLG"})
    assert b.layer_types == ("sliding", "sliding", "full", "sliding", "sliding")
    # keys and values a token and layer: K, V x 8 heads x 128 x 2 bytes = 4,096; at 32,768 tokens the 16 global
    # layers hold them all, the 48 local ones the window and, in vLLM, one block of 16 beyond it (swa_extra_tokens)
    out = vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "custom", "custom_model": EXAONE4_32B,
                                       "quantization": "bf16", "seq_length": 32768, "runtime": "vllm", "trace": True})
    v = {step["id"]: step["value"] for step in out["trace"]}
    assert v["kv_attention_bytes_per_seq"] == 16 * 4096 * 32768 + 48 * 4096 * (4096 + 16)


def test_exaone4_has_per_head_qk_norms():
    small = {**EXAONE4_32B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 100}
    a = from_hf_config(small)
    assert a.param_count() == 2 * 100 * 64 + 4 * (2 * 64 * 64 + 2 * 64 * 32) + 4 * 3 * 64 * 128 \
        + (4 * 2 + 1) * 64 + 4 * 2 * 16  # the two norms a layer, the final one, q_norm and k_norm of head_dim


@pytest.mark.parametrize("pattern", ["LLXG", "", 4.5])
def test_a_bad_sliding_window_pattern_names_the_field(pattern):
    with pytest.raises(RequestError) as e:
        from_hf_config({**EXAONE4_32B, "sliding_window_pattern": pattern})
    assert [f for f, _ in e.value.problems] == ["custom_model.sliding_window_pattern"]


# -- DeepSeek V3.2: the sparse-attention indexer ---------------------------------------------------------------------

#: DeepSeek-V3's architecture keys; V3.2 adds its lightning indexer (index_n_heads, index_head_dim, index_topk).
DEEPSEEK_V3 = {"model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
               "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128, "n_routed_experts": 256,
               "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3, "kv_lora_rank": 512,
               "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
               "vocab_size": 129280, "tie_word_embeddings": False, "max_position_embeddings": 163840}
DEEPSEEK_V32 = {**DEEPSEEK_V3, "model_type": "deepseek_v32", "index_n_heads": 64, "index_head_dim": 128, "index_topk": 2048}


def test_deepseek_v32_indexer_parameters_by_hand():
    v3, v32 = from_hf_config(DEEPSEEK_V3), from_hf_config(DEEPSEEK_V32)
    # Indexer per layer: wq_b 1536 -> 64 x 128, wk 7168 -> 128, weights_proj 7168 -> 64, k_norm LayerNorm(128) weight + bias
    per_layer = 1536 * 64 * 128 + 7168 * 128 + 7168 * 64 + 2 * 128
    assert v32.param_count() - v3.param_count() == 61 * per_layer == 851_524_864
    assert v32.param_count(active=True) - v3.param_count(active=True) == 61 * per_layer  # it runs for every token


@pytest.mark.parametrize("runtime, kv, per_token_layer", [
    # the latent and rope key in FP8; 128 FP8 indexer keys and one fp32 scale
    ("tensorrt-llm", "fp8", 576 + 132),
    # vLLM's fp8_ds_mla and SGLang's DSA pool: 512 FP8 latent values, 4 fp32 scales, the 64-wide rope key in 16 bits
    ("vllm", "fp8", 512 + 4 * 4 + 64 * 2 + 132),
    ("sglang", "fp8", 512 + 4 * 4 + 64 * 2 + 132),
    # the latent in 16 bits; the indexer keeps FP8 whatever the cache's dtype
    ("vllm", "bf16", 576 * 2 + 132),
    # a vLLM whose sparse backend stores the plain FP8 row, said in runtime_settings
    ({"runtime": "vllm", "runtime_settings": {"dsa_fp8_scaled_kv": 0}}, "fp8", 576 + 132),
])
def test_deepseek_v32_cache_holds_the_indexer_keys(runtime, kv, per_token_layer):
    rt = runtime if isinstance(runtime, dict) else {"runtime": runtime}
    out = vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "custom", "custom_model": DEEPSEEK_V32,
                                       "quantization": "fp8", "kv_cache_quantization": kv, "num_gpus": 8,
                                       "inference_parallelism": "tensor", "seq_length": 4096, "trace": True, **rt})
    v = {step["id"]: step["value"] for step in out["trace"]}
    assert v["kv_bytes_per_token_layer"] == per_token_layer
    assert v["kv_attention_bytes_per_seq"] == 61 * per_token_layer * 4096
    assert any(w.startswith("sparse attention (DeepSeek V3.2's lightning indexer)") and "index_topk = 2,048" in w
               for w in out["warnings"])


def test_deepseek_v32_decode_reads_the_top_k_and_the_indexer_scans_every_key():
    # 32,000-token prompts, 1,536-token answers: a decoding sequence's mean context is 32,000 + 768 = 32,768 tokens
    body = {"gpu_key": "h200", "llm_key": "custom", "quantization": "fp8", "kv_cache_quantization": "fp8",
            "num_gpus": 8, "inference_parallelism": "tensor", "runtime": "vllm", "input_tokens": 32000,
            "output_tokens": 1536, "trace": True}
    v32 = {s["id"]: s["value"] for s in vramplan.estimate_inference({**body, "custom_model": DEEPSEEK_V32})["trace"]}
    v3 = {s["id"]: s["value"] for s in vramplan.estimate_inference({**body, "custom_model": DEEPSEEK_V3})["trace"]}
    assert v32["srv_ctx_mean"] == 32768
    # the cache a step reads: the 656-byte FP8 latents (vLLM's fp8_ds_mla) of 2,048 tokens and the 132-byte indexer
    # keys of all 32,768, of the 788 bytes a token holds - 5,668,864 / 25,821,184; V3 reads all of it
    assert v32["kv_read_share"] == pytest.approx((656 * 2048 + 132 * 32768) / (788 * 32768)) \
        == pytest.approx(5668864 / 25821184)
    assert v3["kv_read_share"] == 1
    # FLOPs: the latent attention over 2,048 tokens, 2 x 128 heads x (2 x 512 + 64) = 278,528 a token and layer, split
    # over TP8; the indexer's 2 x 64 x 128 = 16,384 a cached token and layer, not split, at H200's FP8 1,978.9 TFLOP/s
    # counted at the 16-bit attention's 989.4
    indexer = 16384 * 61 * 32768 * 989.4 / 1978.9
    assert v32["decode_index_flops_per_token"] == pytest.approx(indexer)
    assert v32["decode_attn_flops_per_token"] == pytest.approx(278528 * 61 * 2048 / 8 + indexer)
    assert v3["decode_attn_flops_per_token"] == pytest.approx(278528 * 61 * 32768 / 8)


@pytest.mark.parametrize("runtime, input_tokens, rate_ratio", [
    ("tensorrt-llm", 1000, 0),  # 1,000 + 1,000 within the 2,048: TensorRT-LLM's short path skips the indexer
    # 1,500 + 1,000 past it: the indexer runs, its FP8 logits at the rate of TensorRT-LLM's FP8 sparse attention
    ("tensorrt-llm", 1500, 1),
    ("vllm", 1000, 989.4 / 1978.9),  # vLLM runs it at every context, at twice its 16-bit attention's rate
])
def test_deepseek_v32_indexer_skipped_where_the_runtime_has_a_short_path(runtime, input_tokens, rate_ratio):
    out = vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "custom", "custom_model": DEEPSEEK_V32,
                                       "quantization": "fp8", "num_gpus": 8, "inference_parallelism": "tensor",
                                       "runtime": runtime, "input_tokens": input_tokens, "output_tokens": 1000,
                                       "trace": True})
    v = {step["id"]: step["value"] for step in out["trace"]}
    # mean context input + 500; 16,384 FLOPs a pair over 61 layers, counted at the attention's rate
    assert v["decode_index_flops_per_token"] == pytest.approx(16384 * 61 * (input_tokens + 500) * rate_ratio)


def test_deepseek_v32_prefill_caps_each_query_at_the_top_k():
    body = {"gpu_key": "h200", "llm_key": "custom", "quantization": "fp8", "num_gpus": 8, "runtime": "vllm",
            "inference_parallelism": "tensor", "input_tokens": 8192, "output_tokens": 16, "trace": True}
    v32 = {s["id"]: s["value"] for s in vramplan.estimate_inference({**body, "custom_model": DEEPSEEK_V32})["trace"]}
    # the latent attention over min(position, 2,048) keys a query: 2 x 2048 x 8192 - 2048^2 = 29,360,128 (twice the
    # pairs), 278,528 / 2 FLOPs each; the indexer scores all 8192^2 / 2 causal pairs at half the attention's cost
    attention = 278528 / 2 * 61 * (2 * 2048 * 8192 - 2048 ** 2)
    indexer = 61 * 16384 * 8192 ** 2 / 2 * 989.4 / 1978.9
    assert v32["prefill_attn_flops"] == pytest.approx(attention + indexer)
    # in the latent space a pair costs 278,528 / 98,304 = 2.8x a decompressed head's 4 x q_dim: the sparse prompt
    # costs more than V3's dense one at 8,192 tokens (2.83 x (2 x 4 - 1) = 19.8 > 4^2 = 16 in units of 2048^2 pairs)
    # and less at 32,768 (2.83 x 31 = 87.8 < 256)
    def ttft(model, tokens):
        return vramplan.estimate_inference({**body, "custom_model": model, "input_tokens": tokens})["serving"]["ttft_ms"]
    assert ttft(DEEPSEEK_V32, 8192) > ttft(DEEPSEEK_V3, 8192)
    assert ttft(DEEPSEEK_V32, 32768) < ttft(DEEPSEEK_V3, 32768)


@pytest.mark.parametrize("model, replicated", [
    # q_a_proj 61 x 7168 x 1536, kv_a_proj_with_mqa 61 x 7168 x (512 + 64), 58 MoE routers of 7168 x 256
    (DEEPSEEK_V3, 61 * 7168 * 1536 + 61 * 7168 * 576 + 58 * 7168 * 256),
    # and V3.2's indexer: wq_b 61 x 1536 x 64 x 128, wk and weights_proj 61 x 7168 x (128 + 64)
    (DEEPSEEK_V32, 61 * 7168 * 1536 + 61 * 7168 * 576 + 58 * 7168 * 256 + 61 * 1536 * 8192 + 61 * 7168 * 192),
])
def test_tensor_parallel_ranks_each_hold_the_latent_projections_indexer_and_routers(model, replicated):
    body = {"gpu_key": "h200", "llm_key": "custom", "custom_model": model, "quantization": "bf16", "num_gpus": 8,
            "inference_parallelism": "tensor", "runtime": "vllm", "seq_length": 4096, "trace": True}
    v = {s["id"]: s["value"] for s in vramplan.estimate_inference(body)["trace"]}
    assert v["tp_replicated_bytes"] == 2 * replicated  # bf16
    # a rank holds 1/8 of the split tensors and all of the replicated ones: 1/8 of (layers + 7 more copies)
    assert v["weights_gpu_bytes"] == pytest.approx((v["layer_weights_bytes"] + 7 * 2 * replicated
                                                    + v["end_weights_bytes"]) / 8)
    assert v["matmul_params_tp"] == v["matmul_params_active"] + 7 * replicated
    # pipeline stages split layers, not tensors: nothing is held twice
    pp = {s["id"]: s["value"] for s in vramplan.estimate_inference({**body, "inference_parallelism": "pipeline"})["trace"]}
    assert pp["layer_weights_tp_bytes"] == pp["layer_weights_bytes"]


def test_an_indexer_without_its_shape_names_the_missing_key():
    with pytest.raises(RequestError) as e:
        from_hf_config({**DEEPSEEK_V32, "index_head_dim": None})
    assert [f for f, _ in e.value.problems] == ["custom_model.index_head_dim"]


def test_catalog_deepseek_v32_counts_its_indexers():
    from vramplan.catalog import get_catalog

    a = get_catalog().architectures["deepseek-v3.2"]
    assert (a.index_topk, a.index_head_dim) == (2048, 128)
    # its key cache (kv_cache.yaml): 128 FP8 keys + one fp32 scale for the one block of 128 = 132 bytes a token a layer
    from vramplan.scenario import _model_vars
    assert get_catalog().formulas.evaluate(_model_vars(a), ["kv_index_bytes_layer"])["kv_index_bytes_layer"] == 132
    assert a.param_count() == from_hf_config(DEEPSEEK_V3).param_count() + 851_524_864 == 671_877_929_216


# -- DeepSeek V4's keys under another model_type are refused, not read as a plain decoder -------------------------------
# (model_type deepseek_v4 itself is read: tests/test_deepseek_v4.py)

#: A DeepSeek-V4-Flash-shaped config: 43 layers, one 512-wide KV head, compress_ratios per layer, hyper-connections.
DEEPSEEK_V4 = {"model_type": "deepseek_v4", "vocab_size": 129280, "hidden_size": 4096, "intermediate_size": 2048,
               "moe_intermediate_size": 2048, "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 6,
               "num_hidden_layers": 43, "num_attention_heads": 64, "num_key_value_heads": 1, "head_dim": 512,
               "q_lora_rank": 1024, "o_lora_rank": 1024, "o_groups": 8, "qk_rope_head_dim": 64, "index_head_dim": 128,
               "index_n_heads": 64, "index_topk": 512, "compress_ratios": [0, 0] + [4, 128] * 20 + [4], "hc_mult": 4,
               "sliding_window": 128, "max_position_embeddings": 1048576}


@pytest.mark.parametrize("config, field", [
    ({**DEEPSEEK_V4, "model_type": "deepseek_v3"}, "compress_ratios"),
    # its keys under another model_type, one at a time
    ({**{k: v for k, v in DEEPSEEK_V4.items() if k not in ("compress_ratios", "o_lora_rank")}, "model_type": "deepseek_v3"},
     "hc_mult"),
    ({**{k: v for k, v in DEEPSEEK_V4.items() if k not in ("compress_ratios", "hc_mult")}, "model_type": "llama"},
     "o_lora_rank"),
    # model_type deepseek_v4 without its per-layer ratios
    ({k: v for k, v in DEEPSEEK_V4.items() if k != "compress_ratios"}, "compress_ratios"),
])
def test_deepseek_v4_keys_elsewhere_are_refused_naming_the_key(config, field):
    with pytest.raises(RequestError) as e:
        from_hf_config(config)
    assert [f for f, _ in e.value.problems] == [f"custom_model.{field}"]


def test_deepseek_v4_keys_under_another_model_type_over_http_are_a_422(client, auth_headers):
    r = client.post(f"{PREFIX}/inference", headers=auth_headers,
                    json={"gpu_key": "h200", "llm_key": "custom", "custom_model": {**DEEPSEEK_V4, "model_type": "deepseek_v3"},
                          "quantization": "fp8"})
    assert r.status_code == 422 and "custom_model.compress_ratios" in r.text and "DeepSeek V4" in r.text


# -- GLM-5.x (glm_moe_dsa): indexers shared across layers ------------------------------------------------------------

#: GLM-5.2's shape: DeepSeek V3.2's MLA + sparse attention, 21 of its 78 layers with an indexer of their own.
GLM5 = {"model_type": "glm_moe_dsa", "hidden_size": 6144, "num_hidden_layers": 78, "num_attention_heads": 64,
        "num_key_value_heads": 64, "q_lora_rank": 2048, "kv_lora_rank": 512, "qk_nope_head_dim": 192,
        "qk_rope_head_dim": 64, "v_head_dim": 256, "intermediate_size": 12288, "moe_intermediate_size": 2048,
        "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
        "index_n_heads": 32, "index_head_dim": 128, "index_topk": 2048, "vocab_size": 154880,
        "tie_word_embeddings": False, "max_position_embeddings": 202752,
        "indexer_types": ["full"] * 3 + (["shared"] * 3 + ["full"]) * 18 + ["shared"] * 3}


def test_glm5_shared_indexers_keep_no_indexer():
    """transformers GlmMoeDsaAttention: a "shared" layer sets self.indexer = None and reuses the previous full layer's
    top-k - no wq_b [32 x 128, 2048], wk [128, 6144], weights_proj [32, 6144] or k_norm (weight and bias of 128)."""
    shared = from_hf_config(GLM5)
    every = from_hf_config({k: v for k, v in GLM5.items() if k != "indexer_types"})
    assert (GLM5["indexer_types"].count("full"), shared.indexed_layers, every.indexed_layers) == (21, 21, 78)
    per_indexer = 32 * 128 * 2048 + 128 * 6144 + 32 * 6144 + 2 * 128
    assert every.param_count() - shared.param_count() == 57 * per_indexer == 534_198_528
    # its key cache: 132 bytes a token on 21 of 78 layers, 35.54 a layer on average beside the 576-wide bf16 latent
    from vramplan.catalog import get_catalog
    from vramplan.scenario import _model_vars
    v = get_catalog().formulas.evaluate({**_model_vars(shared), "kv_bits": 16.0, "rt_dsa_fp8_scaled_kv": 0.0},
                                        ["kv_bytes_per_token_layer"])
    assert v["kv_bytes_per_token_layer"] == pytest.approx(576 * 2 + 132 * 21 / 78, rel=1e-12)


def test_glm5_schedule_from_freq_and_offset_and_its_layer_kind():
    # GlmMoeDsaConfig without indexer_types: "full" where max(i - offset + 1, 0) % freq == 0 - freq 4, offset 3 gives
    # layers 0, 1, 2 and every fourth from 6: 21 full, 57 shared, GLM-5.3's list
    cfg = {k: v for k, v in GLM5.items() if k != "indexer_types"}
    a = from_hf_config({**cfg, "index_topk_freq": 4, "index_skip_topk_offset": 3})
    assert a.indexed_layers == 21
    # transformers writes layer_types "deepseek_sparse_attention": attention over the whole context
    b = from_hf_config({**GLM5, "layer_types": ["deepseek_sparse_attention"] * 78})
    assert b.num_full_layers == 78 and b.param_count() == from_hf_config(GLM5).param_count()


@pytest.mark.parametrize("indexer_types, field", [
    (["full"] * 77, "indexer_types"),
    (["full"] * 77 + ["half"], "indexer_types"),
    (["shared"] + ["full"] * 77, "indexer_types[0]"),
])
def test_glm5_bad_indexer_types_name_the_key(indexer_types, field):
    with pytest.raises(RequestError) as e:
        from_hf_config({**GLM5, "indexer_types": indexer_types})
    assert [f for f, _ in e.value.problems] == [f"custom_model.{field}"]
