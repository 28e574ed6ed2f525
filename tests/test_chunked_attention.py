"""Llama 4's chunked attention (attention_chunk_size 8,192 on three layers in four) as each runtime keeps it: vLLM frees
a chunked layer's blocks before the current chunk (a window), TensorRT-LLM chunks only a prompt's attention and keeps -
and, in decode, attends to - every token of every layer (docs/source/features/long-sequence.md; runtime constant
chunked_attention_window)."""
from __future__ import annotations

import vramplan
from vramplan.estimate import trace_values

MAVERICK = {"gpu_key": "h200", "llm_key": "llama-4-maverick-17b-128e-instruct", "num_gpus": 8, "quantization": "fp8",
            "kv_cache_quantization": "fp8", "batch_size": 100}
# 48 layers, 8 KV heads of 128, keys and values, one byte each in FP8: 2,048 bytes a token and layer
TOKEN_LAYER = 8 * 128 * 2 * 1


def traced(body: dict) -> tuple[dict, dict]:
    out = vramplan.estimate_inference({**body, "trace": True})
    return out, trace_values(out)


def test_tensorrt_llm_keeps_every_token_of_the_chunked_layers():
    out, t = traced({**MAVERICK, "runtime": "tensorrt-llm", "inference_parallelism": "expert",
                     "input_tokens": 1024, "output_tokens": 32768})
    assert (t["n_layers_sliding"], t["n_kv_layers_full"]) == (0, 48)
    # a sequence reserves its whole length (33,792 tokens, whole 32-token blocks) in all 48 layers
    assert t["kv_pool_seq_bytes"] == 48 * TOKEN_LAYER * 33_792 == 3_321_888_768
    assert any(a.startswith("attention: tensorrt-llm keeps every token of the 36 chunked-attention layers")
               for a in out["assumptions"])


def test_vllm_keeps_a_chunk_as_a_window():
    out, t = traced({**MAVERICK, "runtime": "vllm", "input_tokens": 1024, "output_tokens": 32768})
    assert (t["n_layers_sliding"], t["n_kv_layers_full"], t["sliding_window"]) == (36, 12, 8192)
    assert not any(a.startswith("attention:") for a in out["assumptions"])


def test_within_one_chunk_both_keep_the_same_cache():
    # 1,000 + 1,000 tokens fit one chunk: every layer holds the 2,016 tokens of 63 blocks either way
    _, trt = traced({**MAVERICK, "runtime": "tensorrt-llm", "inference_parallelism": "expert",
                     "input_tokens": 1000, "output_tokens": 1000})
    assert trt["kv_pool_seq_bytes"] == 48 * TOKEN_LAYER * 2016 == 198_180_864


def test_a_model_without_chunks_is_left_alone():
    out, t = traced({"gpu_key": "h100_80", "llm_key": "gemma-2-9b-it", "runtime": "tensorrt-llm", "input_tokens": 1000,
                     "output_tokens": 8000})
    assert t["n_layers_sliding"] == 21 and t["sliding_window"] == 4096  # Gemma 2's sliding window stays a window
    assert not any(a.startswith("attention:") for a in out["assumptions"])
