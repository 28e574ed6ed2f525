"""Which formats a runtime loads: one mechanism (formatrules.runtime_formats) for every place that asks."""

from __future__ import annotations


def test_a_runtime_no_format_names_loads_what_the_runtime_it_extends_loads():
    """tensorrt-llm-mmha (TensorRT-LLM before XQA) extends tensorrt-llm and no format lists it: it loads
    TensorRT-LLM's formats everywhere the engine asks — the warning, the planner's ranking, the deployment
    search (one mechanism, formatrules.runtime_formats). fp16 names tensorrt-llm in formats.yaml."""
    import vramplan
    from vramplan import formatrules
    from vramplan.catalog import get_catalog
    from vramplan.planner import loaded_formats

    cat = get_catalog()
    by_hand = [e.key for e in cat.quantization
               if e.data["kind"] != "alias" and "tensorrt-llm" in e.data.get("runtimes", ["tensorrt-llm"])]
    assert "fp16" in by_hand and "q4_k_m" not in by_hand
    assert [e.key for e in formatrules.runtime_formats(cat, "tensorrt-llm-mmha")] == by_hand
    assert sorted(e.key for e in loaded_formats(cat, "tensorrt-llm-mmha")) == sorted(by_hand)
    out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "quantization": "fp16",
                                       "runtime": "tensorrt-llm-mmha"})
    assert not [w for w in out["warnings"] if "does not load" in w]
    # a runtime that formats do name keeps its own list: SGLang (extends vllm) loads nf4, not q4_k_m
    sglang = [e.key for e in formatrules.runtime_formats(cat, "sglang")]
    assert "nf4" in sglang and "q4_k_m" not in sglang
