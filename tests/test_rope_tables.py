"""The rotary embeddings' cos/sin tables vLLM and SGLang precompute for every position the model's rope covers.

vLLM's ``RotaryEmbedding`` (vllm/model_executor/layers/rotary_embedding/base.py) registers ``cos_sin_cache``, a
buffer of ``positions x rotary_dim`` elements in the model dtype, and ``get_rope`` (``__init__.py``) keeps one per
distinct rope; its scaling classes decide the positions. Each figure below is worked out by hand from the config.
"""

from __future__ import annotations

import pytest

import vramplan
from vramplan.architecture import from_hf_config
from vramplan.errors import RequestError
from vramplan.estimate import trace_values as values

BASE = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256,
        "tie_word_embeddings": False}
LLAMA31_8B = {**BASE, "max_position_embeddings": 131072,
              "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
MIB = 2 ** 20


def elements(config: dict) -> int:
    return from_hf_config(config).rope_table_elements


def test_llama3_rope_covers_max_position_embeddings():
    # Llama3RotaryEmbedding keeps RotaryEmbedding's table: 131,072 positions x 128 rotary dims
    assert elements(LLAMA31_8B) == 131072 * 128 == 16_777_216


def test_linear_and_dynamic_scaling_multiply_the_positions():
    # LinearScalingRotaryEmbedding / DynamicNTKScalingRotaryEmbedding: max_position x factor positions
    assert elements({**BASE, "max_position_embeddings": 4096,
                     "rope_scaling": {"type": "linear", "factor": 4.0}}) == 4096 * 4 * 128
    assert elements({**BASE, "max_position_embeddings": 4096,
                     "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}) == 8192 * 128


def test_yarn_takes_the_original_length_times_the_factor():
    # gpt-oss: yarn factor 32 over 4,096 original positions, head_dim 64 -> 131,072 x 64 = 8,388,608
    gpt_oss = {**BASE, "model_type": "gpt_oss", "head_dim": 64, "num_attention_heads": 64, "max_position_embeddings": 131072,
               "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096}}
    assert elements(gpt_oss) == 131072 * 64 == 8_388_608


def test_mla_rope_turns_the_rope_part_of_each_head():
    # DeepSeek-V3: get_rope(qk_rope_head_dim 64, ...) with its yarn (deepseek_yarn) factor 40 over 4,096:
    # 163,840 positions x 64 = 10,485,760 elements (20 MiB in bf16)
    ds = {"model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432, "num_hidden_layers": 4,
          "num_attention_heads": 128, "num_key_value_heads": 128, "vocab_size": 129280, "kv_lora_rank": 512,
          "q_lora_rank": 1536, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
          "max_position_embeddings": 163840,
          "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096}}
    assert elements(ds) == 163840 * 64 == 10_485_760


def test_longrope_keeps_a_short_and_a_long_table():
    # Phi-3 mini 128K (head_dim 3072 / 32 = 96): Phi3LongRoPEScaledRotaryEmbedding concatenates the short table
    # (original 4,096 positions, read from the top-level key as the config states it) and the long one (131,072)
    phi3 = {"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064, "tie_word_embeddings": False,
            "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
            "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 48, "long_factor": [1.0] * 48}}
    assert elements(phi3) == (4096 + 131072) * 96 == 12_976_128


def test_partial_rotary_and_a_stated_rotary_dim():
    # GLM-4.5: partial_rotary_factor 0.5 of head_dim 128 -> 64 rotary dims x 131,072
    assert elements({**BASE, "max_position_embeddings": 131072, "partial_rotary_factor": 0.5}) == 131072 * 64
    # MiniMax-M2 states rotary_dim 64 beside head_dim 128: 196,608 x 64
    assert elements({**BASE, "max_position_embeddings": 196608, "rotary_dim": 64}) == 196608 * 64


def test_gemma3_adds_a_table_for_the_local_rope():
    # Gemma 3 12B: global layers take rope_theta with a linear factor 8 (8 x 131,072 positions), sliding layers
    # rope_local_base_freq unscaled (131,072): (1,048,576 + 131,072) x 256 = 301,989,888 elements (576 MiB in bf16)
    gemma3 = {"model_type": "gemma3_text", "hidden_size": 3840, "intermediate_size": 15360, "num_hidden_layers": 48,
              "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 262208,
              "max_position_embeddings": 131072, "sliding_window": 1024, "sliding_window_pattern": 6,
              "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0,
              "rope_scaling": {"rope_type": "linear", "factor": 8.0}}
    assert elements(gemma3) == (8 * 131072 + 131072) * 256 == 301_989_888


def test_no_table_without_rotary_embeddings():
    assert elements({**BASE, "max_position_embeddings": 131072, "position_embedding_type": "nope"}) == 0


def test_a_malformed_rope_scaling_is_refused_by_name():
    with pytest.raises(RequestError) as exc:
        from_hf_config({**LLAMA31_8B, "rope_scaling": {"rope_type": "linear", "factor": "eight"}})
    assert "custom_model.rope_scaling.factor" in str(exc.value)
    with pytest.raises(RequestError) as exc:
        from_hf_config({**LLAMA31_8B, "rope_scaling": {"rope_type": "linear", "factor": 1e9}})
    assert "custom_model.rope_scaling.factor" in str(exc.value)
    with pytest.raises(RequestError) as exc:
        from_hf_config({**LLAMA31_8B, "partial_rotary_factor": 2})
    assert "custom_model.partial_rotary_factor" in str(exc.value)


def _estimate(runtime: str, gpu: str = "h100_80", **settings) -> dict[str, float]:
    body = {"gpu_key": gpu, "llm_key": "custom", "custom_model": LLAMA31_8B, "runtime": runtime, "seq_length": 8192,
            "trace": True}
    if settings:
        body["runtime_settings"] = settings
    return values(vramplan.estimate_inference(body))


def test_vllm_loads_the_table_with_the_model_and_sizes_its_pool_after_it():
    with_table, without = _estimate("vllm"), _estimate("vllm", rope_table=0)
    table = 16_777_216 * 2  # bf16: the 32 MiB by which vLLM's "Loading model weights took 14.99 GiB" exceeds the weights
    assert with_table["rope_table_bytes"] == table == 32 * MIB
    assert with_table["weights_loaded_bytes"] == with_table["weights_gpu_bytes"] + table
    assert without["kv_pool_bytes"] - with_table["kv_pool_bytes"] == pytest.approx(table, abs=1)
    assert with_table["framework_overhead_bytes"] - without["framework_overhead_bytes"] == pytest.approx(table, abs=1)


def test_sglang_keeps_the_table_in_fp32_on_cuda_and_in_the_model_dtype_on_rocm():
    assert _estimate("sglang")["rope_table_bytes"] == 16_777_216 * 4
    assert _estimate("sglang", gpu="mi300x")["rope_table_bytes"] == 16_777_216 * 2


def test_runtimes_that_compute_cos_and_sin_per_forward_hold_no_table():
    assert _estimate("transformers")["rope_table_bytes"] == 0
    assert _estimate("tensorrt-llm")["rope_table_bytes"] == 0
