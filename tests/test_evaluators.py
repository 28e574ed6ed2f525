"""The compiled evaluator and simpleeval agree on every formula."""

from __future__ import annotations

import math

import pytest

import vramplan
from vramplan.catalog import get_catalog

CAT = get_catalog()
REQUESTS = [
    ("inference", {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m"}),
    ("inference", {"gpu_key": "h100_80", "llm_key": "mixtral-8x7b-instruct", "num_gpus": 4, "inference_parallelism": "tensor",
                   "concurrent_users": 16, "runtime": "vllm", "enable_prefix_caching": True, "shared_prefix_ratio": 0.3}),
    ("inference", {"gpu_key": "rtx_3090", "llm_key": "gemma-2-9b-it", "enable_offloading": True, "num_offload_layers": 10,
                   "optimization_config": {"flash_attention": False}, "runtime": "transformers"}),
    ("finetuning", {"gpu_key": "a100_80", "llm_key": "llama-3.1-70b-instruct", "finetuning_method": "qlora",
                    "optimization_config": {"gradient_checkpointing": True}}),
    ("finetuning", {"gpu_key": "h100_80", "llm_key": "qwen2.5-7b-instruct", "finetuning_method": "full", "num_gpus": 8,
                    "batch_size": 64, "optimizer": "adamw_8bit", "optimization_config": {"zero_stage": 3}}),
]


@pytest.mark.parametrize("workload,body", REQUESTS)
def test_both_evaluators_give_the_same_trace(workload, body, monkeypatch):
    fn = vramplan.estimate_inference if workload == "inference" else vramplan.estimate_finetuning
    compiled = fn({**body, "trace": True})
    monkeypatch.setenv("VRAMPLAN_EVALUATOR", "simpleeval")
    reference = fn({**body, "trace": True})
    assert [s["id"] for s in compiled["trace"]] == [s["id"] for s in reference["trace"]]
    for a, b in zip(compiled["trace"], reference["trace"]):
        assert math.isclose(a["value"], b["value"], rel_tol=1e-12, abs_tol=1e-12), a["id"]
    assert compiled == reference


@pytest.mark.parametrize("file,case", [(ff.file, c) for ff in CAT.formulas.files.values() for c in ff.cases])
def test_golden_cases_under_simpleeval(file, case):
    got = CAT.formulas.evaluate_one(case["formula"], case["inputs"], evaluator="simpleeval")
    assert math.isclose(got, case["expected"], rel_tol=case.get("rel_tol", 1e-9), abs_tol=1e-9), file
