"""benchmarks/fidelity.py's weights comparison: a run's weights_bytes is memory_allocated() once the model is
built, so it holds the cuBLAS workspaces that torch had created by then; runs that also record what was
allocated before the model are compared on the model's own tensors."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("fidelity", ROOT / "benchmarks" / "fidelity.py")
fidelity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fidelity)

MIB = 1024 ** 2


def _case() -> dict:
    # the first inference run of the 2026-11-26 session (SmolLM2 1.7B bf16): weights_bytes 3,456,308,736 =
    # 1,711,376,384 parameters x 2 bytes + 33,555,968 (one 32 MiB workspace and 1,536 bytes more)
    for line in (ROOT / "benchmarks" / "measured" / "h200-2026-11-26.jsonl").read_text().splitlines():
        case = json.loads(line)
        if case["workload"] == "inference":
            return case
    raise AssertionError("no inference run in the session file")


def test_weights_with_the_workspaces_of_the_reading_or_the_models_own_tensors():
    case = _case()
    (old,) = [r for r in fidelity.transformers_rows([case], "x", "h200") if r.group == "x weights"]
    # no record of what came before the model: the estimate adds the profile's 66 MiB of workspaces
    params_bytes = case["measured"]["params"] * 2
    assert abs(old.estimate * 2 ** 30 - (params_bytes + 66 * MIB)) < 2 * MIB
    # with it (here: the 32 MiB workspace and 1 MiB more), the model's own tensors on both sides
    newer = copy.deepcopy(case)
    newer["measured"]["pre_model_allocated_bytes"] = 33 * MIB
    (new,) = [r for r in fidelity.transformers_rows([newer], "x", "h200") if r.group == "x weights"]
    assert new.measured * 2 ** 30 == case["measured"]["weights_bytes"] - 33 * MIB
    assert abs(new.estimate * 2 ** 30 - params_bytes) < 2 * MIB


def test_a_pipeline_runs_pool_is_the_token_count_it_admits_from():
    # vLLM's PP 2 log: "Available KV cache memory: 66.54 GiB" (one worker's) beside "GPU KV cache size: 1,075,312
    # tokens" (every stage gets the smallest stage's blocks). One stage holds 16 of Llama 3.1 8B's 32 layers:
    # 16 x 8 KV heads x 128 x 2 (K, V) x 2 bytes = 65,536 bytes a token; 1,075,312 x 65,536 = 70,471,647,232 bytes
    rec = {"value": 66.54, "unit": "GiB",
           "quote": ["Available KV cache memory: 66.54 GiB", "GPU KV cache size: 1,075,312 tokens"]}
    assert fidelity._pool_gib(rec, pp=2, token_bytes=16 * 8 * 128 * 2 * 2) == 70_471_647_232 / 2 ** 30
    # without stages the worker's line is the pool (its token count says the same: 63.76 GiB at TP 2)
    assert fidelity._pool_gib({**rec, "value": 63.76}, pp=1, token_bytes=32 * 4 * 128 * 2 * 2) == 63.76


def test_the_engines_token_bytes_on_a_pipeline_stage_are_the_stages_layers():
    # what fidelity.py multiplies the log's token count by: one token's keys and values on one PP 2 stage of
    # Llama 3.1 8B - 16 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes = 65,536
    v = fidelity.trace_values(fidelity.vramplan.estimate_inference({
        "gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "runtime": "vllm", "seq_length": 8192,
        "num_gpus": 2, "inference_parallelism": "pipeline", "trace": True}))
    assert v["kv_attention_bytes_per_seq"] / v["seq"] * v["kv_share_per_gpu"] == 65_536
