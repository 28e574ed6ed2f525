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


def test_a_runtimes_assumptions_say_the_constants_this_request_runs_with():
    """A profile's assumption lines name its constants as {name}; a response fills them with the values the formulas
    used: vLLM's max_num_batched_tokens is 8192 on an H100 but 2048 on an A100 (the profile's GPU tier), a
    runtime_settings override shows, and GET /runtimes fills them with the profile's defaults."""
    import vramplan

    body = {"llm_key": "llama-3.1-8b-instruct", "quantization": "bf16", "runtime": "vllm", "input_tokens": 1000,
            "output_tokens": 200}

    def line(out: dict) -> str:
        return next(a for a in out["assumptions"] if a.startswith("vllm: chunked prefill"))

    assert "max_num_batched_tokens 8192;" in line(vramplan.estimate_inference({**body, "gpu_key": "h100_80"}))
    assert "max_num_batched_tokens 2048;" in line(vramplan.estimate_inference({**body, "gpu_key": "a100_80"}))
    assert "max_num_seqs 64;" in line(vramplan.estimate_inference({**body, "gpu_key": "h100_80",
                                                                   "runtime_settings": {"max_num_seqs": 64}}))
    listed = next(r for r in vramplan.list_runtimes() if r["key"] == "vllm")
    assert not any("{" in a for a in listed["assumptions"])
    assert any("max_num_batched_tokens 8192;" in a for a in listed["assumptions"])
