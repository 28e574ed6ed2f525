"""transformers' generate prefills the prompt, then grows the cache over the answer: where a request states its prompt
(input_tokens), the memory peak is the larger of the prompt's prefill (its transients beside the prompt's cache) and the
last decode steps (the whole cache and a step's copy). seq_length alone keeps the prefill of the whole context. Llama 3
8B in bf16 on an H100 (32 layers, hidden 4096, 8 KV heads of 128, FFN 14336), worked by hand."""

from __future__ import annotations

import pytest

import vramplan
from conftest import trace_of

L, H, KV, FF = 32, 4096, 1024, 14336
PER_TOKEN = (3 * FF + 4 * H) * 2          # the prefill layer's transients a token: MLP intermediates + 4 hidden tensors
KV_TOKEN = L * 2 * KV * 2                 # keys and values of one token, every layer, bf16: 131,072 bytes


def traced(**fields) -> dict:
    body = {"gpu_key": "h100_80", "llm_key": "llama-3-8b", "quantization": "bf16", "batch_size": 32, **fields}
    out = vramplan.estimate_inference({**body, "trace": True})
    return trace_of(out) | {"vram_usage": out["vram_usage"]}


def test_a_short_stated_prompt_with_a_long_answer_peaks_at_the_last_decode_steps():
    t = traced(input_tokens=128, output_tokens=3968)
    assert t["prefill_context"] == 128 and t["prefill_tokens"] == 32 * 128
    assert t["prefill_peak_bytes"] == pytest.approx(32 * 128 * PER_TOKEN, rel=1e-12)          # 486,539,264
    assert t["kv_needed_bytes"] == pytest.approx(32 * 4096 * KV_TOKEN, rel=1e-12)            # 17,179,869,184
    assert t["kv_growth_bytes"] == pytest.approx(32 * 3968 * KV_TOKEN, rel=1e-12)            # 16,642,998,272
    step = 32 * 4096 * KV * 2                                # DynamicLayer.update's new keys beside the old: 268,435,456
    assert t["kv_decode_step_bytes"] == pytest.approx(step, rel=1e-12)
    assert t["activations_gpu_bytes"] == pytest.approx(step, rel=1e-12)
    # the cache grows into whatever the prompt's prefill left reserved: nothing of it shows beyond the decode state
    assert t["decode_excess_bytes"] == pytest.approx(32 * 3968 * KV_TOKEN + step - 32 * 128 * PER_TOKEN, rel=1e-12)
    assert t["allocator_reserve_bytes"] == 0

    whole = traced(seq_length=4096)                           # the same context, its prompt not stated
    assert whole["prefill_context"] == 4096
    assert whole["activations_gpu_bytes"] == pytest.approx(32 * 4096 * PER_TOKEN, rel=1e-12)  # 15,569,256,448
    assert whole["kv_growth_bytes"] == 0
    assert t["vram_usage"] < whole["vram_usage"] - 15


def test_a_long_stated_prompt_peaks_at_its_prefill_beside_the_prompts_cache():
    t = traced(input_tokens=4000, output_tokens=96)
    prefill = 32 * 4000 * PER_TOKEN                            # 15,204,352,000
    growth = 32 * 96 * KV_TOKEN                                # 402,653,184: the answer's cache, not there at the prefill
    assert t["prefill_peak_bytes"] == pytest.approx(prefill, rel=1e-12)
    assert t["activations_gpu_bytes"] == pytest.approx(prefill - growth, rel=1e-12)         # 14,801,698,816
    assert t["decode_excess_bytes"] == 0


def test_an_answer_alone_leaves_the_prompt_a_guess_and_other_runtimes_size_for_the_worst_case():
    t = traced(output_tokens=512)                              # the prompt is 7 x 512 by proportion, not stated
    assert t["prefill_context"] == 4096 and t["kv_growth_bytes"] == 0
    for runtime in ("vllm", "llama.cpp"):
        fields = {"runtime": runtime}
        if runtime == "llama.cpp":
            fields["quantization"] = "q4_k_m"
        t = traced(input_tokens=128, output_tokens=3968, **fields)
        assert t["prefill_context"] == 4096 and t["kv_growth_bytes"] == 0


def test_memory_never_shrinks_as_the_answer_or_the_prompt_grows():
    answers = [traced(input_tokens=512, output_tokens=o)["vram_usage"] for o in (16, 256, 1024, 4096, 16384)]
    assert answers == sorted(answers)
    prompts = [traced(input_tokens=i, output_tokens=512)["vram_usage"] for i in (16, 256, 1024, 4096, 16384)]
    assert prompts == sorted(prompts)
