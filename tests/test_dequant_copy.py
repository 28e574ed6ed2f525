"""bitsandbytes 4-bit (NF4 / FP4) dequantizes a whole weight before the GEMM of a product of many rows
(bitsandbytes 0.50 gemm_4bit -> _dequant_linear_fallback; before 0.50 MatMul4Bit always did past one row): a
transient copy of the layer's largest linear in the activation dtype, with its fp32 block scales, beside the MLP's
intermediates. The figures are worked here by hand from the model's shapes."""

from __future__ import annotations

import pytest

import vramplan
from conftest import trace_of
from vramplan.catalog import get_catalog

# Llama 3 8B: hidden 4096, MLP 14336, 8 KV heads of 128 (kv_dim 1024), 32 layers.
H8, I8, KV8, L8 = 4096, 14336, 1024, 32
# Llama 3 70B: hidden 8192, MLP 28672.
H70, I70 = 8192, 28672
BF16 = 2
SCALES = 4 / 64          # the double-quantized absmax dequantized to fp32, one per block of 64 weights


def traced(body: dict) -> dict:
    return trace_of(vramplan.estimate_inference({"runtime": "transformers", **body, "trace": True}))


def test_the_bitsandbytes_4bit_formats_declare_the_copy_and_no_other_format_does():
    formats = get_catalog().quantization
    for key in ("nf4", "fp4"):
        copy = formats.get(key).data["dequant_copy"]
        assert copy["min_rows"] == 5                     # up to 4 rows the fused cgemm_4bit kernel reads packed weights
        assert copy["scale_bytes_per_weight"] == SCALES
    for key in ("bf16", "int8", "int4", "awq", "gptq", "fp8"):
        assert "dequant_copy" not in formats.get(key).data


def test_a_2048_token_nf4_prefill_holds_up_projs_dequantized_weight_beside_two_intermediates():
    t = traced({"gpu_key": "h200", "llm_key": "llama-3-8b", "quantization": "nf4", "batch_size": 1, "seq_length": 2048})
    weight = I8 * H8 * (BF16 + SCALES)                   # 58,720,256 weights x 2.0625 = 121,110,528
    assert weight == 121_110_528
    assert t["dequant_copy_weight_bytes"] == pytest.approx(weight)
    # act(gate) and up_proj's output, 2048 x 14336 each, beside the weight: 117,440,512 + 121,110,528
    moment = 2048 * 2 * I8 * BF16 + weight
    assert t["ffn_dequant_bytes"] == pytest.approx(moment)
    unquantized = 2048 * 3 * I8 * BF16                   # act, up and their product: 176,160,768
    assert moment > unquantized
    assert t["ffn_transient_bytes"] == pytest.approx(moment)
    # with the layer's four hidden-size tensors (embedding output, layer input, residual, normed input)
    assert t["prefill_peak_bytes"] == pytest.approx(moment + 2048 * 4 * H8 * BF16)   # 305,659,904
    assert t["activations_gpu_bytes"] == pytest.approx(305_659_904)


def test_bf16_weights_are_multiplied_as_they_are():
    t = traced({"gpu_key": "h200", "llm_key": "llama-3-8b", "quantization": "bf16", "batch_size": 1, "seq_length": 2048})
    assert t["dequant_copy_weight_bytes"] == 0
    assert t["ffn_dequant_bytes"] == 0
    assert t["ffn_transient_bytes"] == pytest.approx(2048 * 3 * I8 * BF16)


def test_a_short_prompt_on_a_large_model_is_set_by_the_weight_not_the_tokens():
    """Llama 3 70B NF4, a stated 128-token prompt: the copy (484 MB) is twenty times the tokens' intermediates."""
    t = traced({"gpu_key": "h200", "llm_key": "llama-3-70b", "quantization": "nf4", "batch_size": 1,
                "input_tokens": 128, "output_tokens": 128})
    weight = I70 * H70 * (BF16 + SCALES)                 # 484,442,112
    assert t["ffn_dequant_bytes"] == pytest.approx(128 * 2 * I70 * BF16 + weight)     # 499,122,176
    assert t["ffn_transient_bytes"] == pytest.approx(499_122_176)
    assert 128 * 3 * I70 * BF16 < weight / 20


def test_four_rows_take_the_fused_kernel():
    """A 4-token prompt with one sequence: no copy in the prefill, none in its one-sequence decode steps."""
    t = traced({"gpu_key": "h200", "llm_key": "llama-3-8b", "quantization": "nf4", "batch_size": 1,
                "input_tokens": 4, "output_tokens": 60})
    assert t["ffn_dequant_bytes"] == 0
    assert t["decode_dequant_copy_bytes"] == 0
    assert t["ffn_transient_bytes"] == pytest.approx(4 * 3 * I8 * BF16)


def test_a_batched_decode_step_can_be_the_peak_after_a_short_prompt():
    """8 x (16 + 4080): the prefill's moment came while the cache held 16 of 4096 tokens; each decode step of 8
    sequences dequantizes up_proj again beside 8 sequences' two intermediates - the largest transient beside the
    whole cache (one layer's keys, the dynamic cache's torch.cat copy, is smaller)."""
    t = traced({"gpu_key": "h200", "llm_key": "llama-3-8b", "quantization": "nf4", "batch_size": 8,
                "input_tokens": 16, "output_tokens": 4080})
    weight = I8 * H8 * (BF16 + SCALES)
    step = 8 * 2 * I8 * BF16 + weight                    # 458,752 + 121,110,528 = 121,569,280
    assert t["decode_dequant_copy_bytes"] == pytest.approx(step)
    keys = 8 * 4096 * KV8 * BF16                         # 67,108,864
    assert t["kv_decode_step_bytes"] == pytest.approx(keys)
    prefill = 128 * 2 * I8 * BF16 + weight + 128 * 4 * H8 * BF16     # 132,644,864
    growth = 8 * 4096 * L8 * 2 * KV8 * BF16 * 4080 / 4096            # the cache the answer adds: 4,278,190,080
    assert t["prefill_peak_bytes"] == pytest.approx(prefill)
    assert t["kv_growth_bytes"] == pytest.approx(growth)
    assert t["activations_gpu_bytes"] == pytest.approx(step)


def test_memory_never_falls_as_the_prompt_grows_under_nf4():
    prev = 0.0
    for n in (1, 4, 5, 16, 512, 2048, 8192):
        got = vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "llama-3-8b", "quantization": "nf4",
                                           "runtime": "transformers", "batch_size": 1, "input_tokens": n,
                                           "output_tokens": 16})["vram_usage"]
        assert got >= prev
        prev = got


def test_a_qlora_layers_backward_dequantizes_its_weights_again():
    """QLoRA with checkpointing: the recomputed layer's backward multiplies the output gradient by each dequantized
    weight (MatMul4Bit.backward) - Llama 2 7B's 11,008 x 4,096 MLP weight with its scales beside the layer's tensors.
    LoRA on bf16 weights multiplies them as they are."""
    body = {"gpu_key": "h200", "llm_key": "llama-2-7b", "batch_size": 1, "seq_length": 4096, "lora_rank": 16,
            "optimization_config": {"gradient_checkpointing": True}, "trace": True}
    q = trace_of(vramplan.estimate_finetuning({**body, "finetuning_method": "qlora"}))
    weight = 11008 * 4096 * (BF16 + SCALES)              # 45,088,768 x 2.0625 = 92,995,584
    assert q["dequant_copy_weight_bytes"] == pytest.approx(92_995_584)
    assert q["recompute_bytes"] == pytest.approx(q["layer_backward_bytes"] + weight)
    lo = trace_of(vramplan.estimate_finetuning({**body, "finetuning_method": "lora", "quantization": "bf16"}))
    assert lo["dequant_copy_weight_bytes"] == 0
    assert lo["recompute_bytes"] == pytest.approx(lo["layer_backward_bytes"])
