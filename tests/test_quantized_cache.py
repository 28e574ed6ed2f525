"""transformers' quantized KV cache (QuantizedCache: int4 through optimum-quanto, int8 through HQQ): what it stores and
what it allocates beside that, with the arithmetic written out by hand. The copy counts are the runtime's constants
(measured by benchmarks/allocator/quantized_cache.py); everything around them is worked here."""

from __future__ import annotations

import pytest

import vramplan
from conftest import trace_of
from vramplan.catalog import get_catalog

CAT = get_catalog()


def rt(name: str, runtime: str = "transformers") -> float:
    return float(CAT.runtimes.get(runtime).data["constants"][name]["value"])


def traced(body: dict) -> dict:
    return trace_of(vramplan.estimate_inference({**body, "trace": True}))


# Llama 2 7B: 32 layers, hidden 4096, 32 query and 32 KV heads of 128 (kv_dim 4096), FFN 11008.
L2_LAYERS, L2_HIDDEN, L2_KV, L2_FFN = 32, 4096, 4096, 11008
# Llama 3 8B: 32 layers, 8 KV heads of 128 (kv_dim 1024).
L3_LAYERS, L3_KV = 32, 1024


def test_an_int8_transformers_cache_stores_each_groups_scale_and_zero():
    """HQQ (the backend that takes 8 bits) keeps a 16-bit scale and zero per group of 64: 8.5 bits an element. The int4
    format's 4.5 already counts its group's; TensorRT-LLM's INT8 cache has one scale per tensor: 8 bits."""
    assert rt("kv_int8_group_bits") == 0.5
    body = {"gpu_key": "h100_80", "llm_key": "llama-3-8b", "quantization": "bf16", "batch_size": 32, "seq_length": 4096}
    elems = 32 * 4096 * L3_LAYERS * 2 * L3_KV           # keys and values of every token, every layer: 8,589,934,592
    t8 = traced({**body, "kv_cache_quantization": "int8"})
    assert t8["kv_stored_bits"] == 8.5
    assert t8["kv_cache_gpu_bytes"] == pytest.approx(elems * 8.5 / 8, rel=1e-12)   # 9,126,805,504
    t4 = traced({**body, "kv_cache_quantization": "int4"})
    assert t4["kv_cache_gpu_bytes"] == pytest.approx(elems * 4.5 / 8, rel=1e-12)
    trt = traced({**body, "kv_cache_quantization": "int8", "runtime": "tensorrt-llm"})
    assert trt["kv_stored_bits"] == 8


def test_quantizing_the_prompt_sets_the_prefill_peak_of_a_model_whose_keys_are_wide():
    """Llama 2 7B has as many KV heads as query heads: the HQQ quantization of a layer's 4096-token prompt (12.77 16-bit
    copies of its keys) outgrows the MLP's intermediates, so the attention sets the prefill peak."""
    body = {"gpu_key": "h100_80", "llm_key": "llama-2-7b", "quantization": "bf16", "batch_size": 1, "seq_length": 4096,
            "kv_cache_quantization": "int8"}
    t = traced(body)
    tokens, a = 4096, 2
    keys = tokens * L2_KV * a                                     # one layer's keys in bf16: 33,554,432 bytes
    quant = rt("kv_quant_prefill_copies_hqq") * keys              # 12.7656 x = 428,342,457.1392
    assert t["kv_quant_prefill_bytes"] == pytest.approx(quant, rel=1e-12)
    qkv = tokens * (L2_HIDDEN + 2 * L2_KV) * a                    # 100,663,296
    ffn = tokens * 3 * L2_FFN * a                                 # act(gate), up, their product: 270,532,608
    hidden = tokens * 4 * L2_HIDDEN * a                           # the transformers profile's 4 hidden-size tensors
    assert qkv + quant > ffn
    assert t["activations_gpu_bytes"] == pytest.approx(qkv + quant + hidden, rel=1e-12)

    # the same model with a bf16 cache: no quantization, the MLP sets the peak
    t16 = traced({**body, "kv_cache_quantization": "fp16"})
    assert t16["kv_quant_prefill_bytes"] == 0
    assert t16["activations_gpu_bytes"] == pytest.approx(ffn + hidden, rel=1e-12)


def test_a_decode_step_with_its_residual_and_flush_can_outgrow_a_short_prefill():
    """Eight sequences of a 56-token prompt and a 200-token answer: 199 decode steps pass the 128th, which quantizes the
    residual again. Beside the whole cache, every layer holds up to 127 tokens in bf16 (counted at 8.5 bits in the cache)
    and one layer's flush allocates 15.23 bf16 copies of its keys over the context - more than the prefill's transients,
    even were the prefill the whole 256-token context (the seq_length-only reading) rather than the stated prompt."""
    body = {"gpu_key": "h100_80", "llm_key": "llama-2-7b", "quantization": "bf16", "batch_size": 8, "input_tokens": 56,
            "output_tokens": 200, "kv_cache_quantization": "int8"}
    t = traced(body)
    seqs, seq, a = 8, 256, 2
    residual = 2 * 127 * L2_LAYERS * L2_KV * (a - 8.5 / 8)       # keys and values of 127 tokens, 32 layers: 31,211,520
    flush = seq * L2_KV * a * rt("kv_quant_flush_copies_hqq")     # 31,940,034.56 at 15.23 copies
    decode = seqs * (residual + flush)                            # 505,212,436.48
    assert t["kv_quant_decode_bytes"] == pytest.approx(decode, rel=1e-12)
    def prefill(tokens):  # attention with the quantization (it outgrows the MLP here) and 4 hidden-size tensors
        return (tokens * (L2_HIDDEN + 2 * L2_KV) * a + rt("kv_quant_prefill_copies_hqq") * tokens * L2_KV * a
                + tokens * 4 * L2_HIDDEN * a)
    assert t["prefill_peak_bytes"] == pytest.approx(prefill(seqs * 56), rel=1e-12)    # 72,540,068.25 for 448 tokens
    assert decode > prefill(seqs * seq)                                                # 331,611,740.57 for 2048
    assert t["activations_gpu_bytes"] == pytest.approx(decode, rel=1e-12)

    # 100-token answers: 99 decode steps, no flush - 99 residual tokens and the 4 copies of an ordinary step
    t = traced({**body, "input_tokens": 156, "output_tokens": 100})
    step = seqs * (2 * 99 * L2_LAYERS * L2_KV * (a - 8.5 / 8) + seq * L2_KV * a * rt("kv_quant_step_copies"))
    assert rt("kv_quant_step_copies") == 4
    assert t["kv_quant_decode_bytes"] == pytest.approx(step, rel=1e-12)


def test_int4_uses_quantos_copies_and_runtimes_that_quantize_as_they_write_allocate_none():
    body = {"gpu_key": "h100_80", "llm_key": "llama-3-8b", "quantization": "bf16", "batch_size": 32, "seq_length": 4096}
    t = traced({**body, "kv_cache_quantization": "int4"})
    tokens = 32 * 4096
    assert t["kv_quant_prefill_bytes"] == pytest.approx(3.8125 * tokens * L3_KV * 2, rel=1e-12)   # 1,023,410,176
    # 512-token answers (1/8 of seq_length): the flush, quanto's 6.53 copies, and 127 residual tokens at 2 - 4.5/8 bytes
    assert t["kv_quant_decode_bytes"] == pytest.approx(
        32 * L3_KV * (2 * 127 * L3_LAYERS * (2 - 4.5 / 8) + 4096 * 2 * 6.53), rel=1e-12)      # 2,135,744,839.68
    v = traced({**body, "kv_cache_quantization": "fp8", "runtime": "vllm"})
    assert v["kv_quant_prefill_bytes"] == 0 and v["kv_quant_decode_bytes"] == 0


def test_a_model_with_sliding_window_layers_is_warned_that_transformers_refuses_its_quantized_cache():
    """QuantizedCache raises for any layer type but full attention (cache_utils.py: "only supported for models with only
    full attention layers"): Mistral 7B v0.1 windows every layer. Full-attention Llama 3 and a bf16 cache are not warned."""
    body = {"gpu_key": "h100_80", "quantization": "bf16", "batch_size": 1, "seq_length": 4096}
    said = vramplan.estimate_inference({**body, "llm_key": "mistral-7b-v0.1", "kv_cache_quantization": "int8"})["warnings"]
    assert any("QuantizedCache" in w and "sliding" in w and "int8" in w for w in said)
    for llm, kv in (("llama-3-8b", "int4"), ("mistral-7b-v0.1", "fp16")):
        said = vramplan.estimate_inference({**body, "llm_key": llm, "kv_cache_quantization": kv})["warnings"]
        assert not any("QuantizedCache" in w for w in said)
