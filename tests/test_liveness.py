"""Which formulas produced an estimate's numbers: each expression read with the values the trace recorded."""

from __future__ import annotations

import pytest

import vramplan
from vramplan.catalog import get_catalog
from vramplan.formulaset import parse_expression
from vramplan.liveness import contributing_names, live_steps


def names(expr: str, **values) -> set[str]:
    return contributing_names(parse_expression(expr, where="test", declared=values), values)


@pytest.mark.parametrize("expr,values,expected", [
    # the branch not taken did not contribute; the condition did
    ("a if c else b", {"a": 5, "b": 7, "c": 0}, {"c", "b"}),
    ("a if c else b", {"a": 5, "b": 7, "c": 1}, {"c", "a"}),
    # a term of 0 adds nothing: 3 + 0 = 3 whatever produced the 0
    ("x + y", {"x": 3, "y": 0}, {"x"}),
    ("x - y", {"x": 0, "y": 2}, {"y"}),
    # a factor of 0 decides the product alone; a factor of 1 changes nothing
    ("x * y * z", {"x": 4, "y": 0, "z": 9}, {"y"}),
    ("x * y", {"x": 4, "y": 1}, {"x"}),
    ("x / y", {"x": 4, "y": 1}, {"x"}),
    ("x / y", {"x": 4, "y": 2}, {"x", "y"}),
    # and/or stop where Python stops
    ("p and q", {"p": 0, "q": 1}, {"p"}),
    ("p or q", {"p": 0, "q": 1}, {"p", "q"}),
    # functions read every argument
    ("min(a, b)", {"a": 1, "b": 2}, {"a", "b"}),
])
def test_contributing_names(expr, values, expected):
    assert names(expr, **values) == expected


def test_an_inference_estimate_is_made_of_inference_formulas():
    body = {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m", "trace": True}
    out = vramplan.estimate_inference(body)
    evaluated = {s["id"] for s in out["trace"]}
    live = {s["id"] for s in live_steps(get_catalog().formulas, out["trace"], ["kv_cache_gpu_bytes", "ms_per_token"])}
    # The shared graph evaluates fine-tuning formulas for an inference request too ...
    assert {"lora_params", "trainable_params", "train_tokens"} <= evaluated
    # ... but the KV cache and decode time do not depend on them.
    assert not live & {"lora_params", "trainable_params", "train_tokens", "optimizer_states_total_bytes"}
    # KV bytes per token per layer (2 x 8 KV heads x 128 x 2 bytes) feed the KV cache: live
    assert {"kv_bytes_per_token_layer", "kv_cache_gpu_bytes", "ms_per_token"} <= live


def test_fine_tuning_responses_carry_no_inference_assumptions():
    out = vramplan.estimate_finetuning({"gpu_key": "rtx_3090", "llm_key": "llama-3-8b-instruct",
                                        "finetuning_method": "qlora"})
    text = " ".join(out["assumptions"])
    assert "generate" not in text and "logits kept for the last position" not in text
    assert "KV cache" not in text and "dynamic KV" not in text
    assert any("zero_grad" in a for a in out["assumptions"])  # the runtime's training behaviour instead
    inference = vramplan.estimate_inference({"gpu_key": "rtx_3090", "llm_key": "llama-3-8b-instruct"})
    assert any("dynamic KV cache" in a for a in inference["assumptions"])
    assert not any("zero_grad" in a for a in inference["assumptions"])
