"""Property tests over the request space of both endpoints (hypothesis).

No unexpected exception, no NaN/inf/negative figure, memory_details sums to vram_usage,
memory_status agrees with the percentage, and monotonicity holds.
"""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import vramplan
from vramplan.catalog import get_catalog
from vramplan.errors import RequestError
from vramplan.estimate import memory_status
from vramplan.ggufmix import format_bits

CAT = get_catalog()
GPUS = sorted(e.key for e in CAT.gpus if not e.data.get("custom"))
MODELS = sorted(e.key for e in CAT.models)
WEIGHT_FORMATS = sorted(e.key for e in CAT.quantization)
KV_FORMATS = sorted(e.key for e in CAT.quantization if "kv_cache_bits" in e.data)
RUNTIMES = sorted(e.key for e in CAT.runtimes)
# Deterministic by default (a red CI run must mean a real defect). Explore further with random
# examples: HYPOTHESIS_EXPLORE=2000 python -m pytest tests/test_properties.py
_EXPLORE = int(os.environ.get("HYPOTHESIS_EXPLORE", "0"))
SETTINGS = settings(max_examples=_EXPLORE or 80, deadline=None, derandomize=not _EXPLORE,
                    suppress_health_check=[HealthCheck.too_slow])

inference_requests = st.fixed_dictionaries(
    {"gpu_key": st.sampled_from(GPUS), "llm_key": st.sampled_from(MODELS)},
    optional={
        "quantization": st.sampled_from(WEIGHT_FORMATS),
        "kv_cache_quantization": st.sampled_from(KV_FORMATS),
        "runtime": st.sampled_from(RUNTIMES),
        "num_gpus": st.integers(1, 16),
        "batch_size": st.integers(1, 64),
        "seq_length": st.integers(1, 262144),
        "concurrent_users": st.integers(1, 64),
        "enable_prefix_caching": st.booleans(),
        "shared_prefix_ratio": st.floats(0, 1),
        "enable_continuous_batching": st.booleans(),
        "inference_parallelism": st.sampled_from(["pipeline", "tensor"]),
        "enable_offloading": st.booleans(),
        "offload_target": st.sampled_from(["cpu_ram", "nvme"]),
        "num_offload_layers": st.integers(0, 200),
        "offload_kv_cache": st.booleans(),
        "optimization_config": st.fixed_dictionaries({}, optional={"flash_attention": st.booleans()}),
    })

finetuning_requests = st.fixed_dictionaries(
    {"gpu_key": st.sampled_from(GPUS), "llm_key": st.sampled_from(MODELS)},
    optional={
        "finetuning_method": st.sampled_from(["full", "lora", "qlora"]),
        "fine_tuning_quantization": st.sampled_from(["fp32", "fp16", "bf16", "fp8"]),
        "lora_rank": st.integers(1, 1024),
        "lora_target_modules": st.one_of(st.just("all-linear"), st.lists(
            st.sampled_from(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
            min_size=1, max_size=7, unique=True)),
        "optimizer": st.sampled_from(["adamw", "adamw_8bit", "paged_adamw", "paged_adamw_8bit", "adafactor", "sgd"]),
        "gradient_accumulation_steps": st.integers(1, 16),
        "batch_size": st.integers(1, 256),
        "seq_length": st.integers(1, 131072),
        "num_samples": st.integers(1, 10**7),
        "tokens_per_sample": st.integers(1, 131072),
        "num_epochs": st.integers(1, 10),
        "num_gpus": st.integers(1, 16),
        "enable_offloading": st.booleans(),
        "offload_target": st.sampled_from(["cpu_ram", "nvme"]),
        "optimization_config": st.fixed_dictionaries({}, optional={
            "flash_attention": st.booleans(), "gradient_checkpointing": st.booleans(),
            "use_8bit_optimizer": st.booleans(), "use_paged_optimizer": st.booleans(),
            "use_fused_kernels": st.booleans(), "activation_offloading": st.booleans(),
            "zero_stage": st.integers(0, 3)}),
    })


def check_response(out: dict) -> None:
    for key, value in out.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert math.isfinite(value) and value >= 0, (key, value)
    assert all(v >= 0 and math.isfinite(v) for v in out["memory_details"].values())
    assert round(sum(out["memory_details"].values()), 2) == out["vram_usage"]
    if out["memory_status"] != "error":
        # the status follows the unrounded share, which rounds to the percentage shown - except that a runtime whose
        # preallocated KV pool cannot hold one sequence does not start: insufficient whatever the share (README)
        refused = any("cannot hold one sequence" in w for w in out["warnings"])
        allowed = {memory_status(out["actual_vram_percentage"] + d) for d in (-0.05, 0, 0.05)}
        assert out["memory_status"] in allowed | ({"insufficient"} if refused else set())


def estimate_or_reject(fn, body):
    try:
        return fn(body)
    except RequestError:
        return None  # a clear rejection of a contradictory request is allowed, a crash is not


@SETTINGS
@given(inference_requests)
def test_inference_responses_are_sane(body):
    out = estimate_or_reject(vramplan.estimate_inference, body)
    if out is not None:
        check_response(out)


@SETTINGS
@given(finetuning_requests)
def test_finetuning_responses_are_sane(body):
    out = estimate_or_reject(vramplan.estimate_finetuning, body)
    if out is not None:
        check_response(out)


def _vram(body):
    return vramplan.estimate_inference(body)["vram_usage"]


@SETTINGS
@given(inference_requests, st.sampled_from(["seq_length", "batch_size", "concurrent_users"]), st.integers(1, 8))
def test_more_tokens_batch_or_users_never_need_less_memory(body, field, factor):
    # A fixed placement: offloading without an amount offloads whatever makes each request fit.
    body = {**body, "num_gpus": 1, "enable_offloading": False}
    base = estimate_or_reject(vramplan.estimate_inference, body)
    assume(base is not None)
    bigger = dict(body)
    default = {"seq_length": 2048, "batch_size": 1, "concurrent_users": 1}[field]
    bigger[field] = body.get(field, default) * (factor + 1)
    out = estimate_or_reject(vramplan.estimate_inference, bigger)
    assume(out is not None)
    assert out["vram_usage"] >= base["vram_usage"] - 0.005 * (len(out["memory_details"]) + len(base["memory_details"]))


@SETTINGS
@given(inference_requests, st.integers(2, 8))
def test_more_tensor_parallel_gpus_never_put_more_weights_on_one(body, n):
    body = {**body, "inference_parallelism": "tensor", "trace": True, "num_gpus": 1, "enable_offloading": False}
    one = estimate_or_reject(vramplan.estimate_inference, body)
    many = estimate_or_reject(vramplan.estimate_inference, {**body, "num_gpus": n})
    assume(one is not None and many is not None)
    w = lambda o: next(s["value"] for s in o["trace"] if s["id"] == "weights_gpu_bytes")
    assert w(many) <= w(one)


@SETTINGS
@given(inference_requests, st.integers(1, 200))
def test_offloading_never_raises_vram(body, layers):
    body = {**body, "enable_offloading": False}
    base = estimate_or_reject(vramplan.estimate_inference, body)
    off = estimate_or_reject(vramplan.estimate_inference, {**body, "enable_offloading": True, "num_offload_layers": layers})
    assume(base is not None and off is not None)
    # vram_usage is the sum of components each rounded to 0.01 GiB: allow one rounding step per component
    # (vLLM's KV pool grows into what offloading frees, so there the total stays put up to rounding).
    assert off["vram_usage"] <= base["vram_usage"] + 0.005 * (len(off["memory_details"]) + len(base["memory_details"]))


ORDERED = sorted((e for e in CAT.quantization if not e.data.get("alias_of")), key=lambda e: e.key)


@SETTINGS
@given(st.sampled_from(MODELS), st.sampled_from(ORDERED), st.sampled_from(ORDERED))
def test_a_smaller_quantization_never_raises_weights(model, a, b):
    """Formats compared where every tensor role is no wider (GGUF types: as llama.cpp stores this model)."""
    roles = ("token_embd", "output", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", "norm")
    arch = CAT.architectures[model]
    bits = lambda e, r: (lambda m: m.get(r, m["default"]))(format_bits(CAT.gguf, e, arch))
    assume(all(bits(a, r) <= bits(b, r) for r in roles))
    w = {}
    for fmt in (a, b):
        out = vramplan.estimate_inference({"gpu_key": "h200", "llm_key": model, "quantization": fmt.key,
                                           "runtime": "transformers", "trace": True})
        w[fmt.key] = next(s["value"] for s in out["trace"] if s["id"] == "weights_file_bytes")
    assert w[a.key] <= w[b.key]


# -- hostile custom_model and runtime_settings (issue 12) ------------------------------------------

from vramplan.configkeys import CONFIG_KEYS, VISION_KEYS  # noqa: E402

HOSTILE = st.one_of(
    st.integers(-(10**6), 10**6), st.integers(-(10**400), 10**400), st.just(0), st.just(-1),
    st.floats(allow_nan=True, allow_infinity=True), st.just(1e308), st.just(float("nan")),
    st.text(max_size=8), st.booleans(), st.none(), st.lists(st.one_of(st.integers(-5, 70), st.text(max_size=3)), max_size=5),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
LLAMA_1B = {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
            "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 128256}
RUNTIME_CONSTANTS = sorted({name for e in CAT.runtimes for name in e.data["constants"]})

hostile_custom_models = st.builds(
    lambda base, changes, vision: {**base, **changes, **({"vision_config": vision} if vision else {})},
    st.sampled_from([LLAMA_1B, {**LLAMA_1B, "model_type": "mixtral", "num_local_experts": 8, "num_experts_per_tok": 2},
                     {**LLAMA_1B, "model_type": "deepseek_v3", "kv_lora_rank": 512, "qk_rope_head_dim": 64,
                      "qk_nope_head_dim": 128, "v_head_dim": 128, "n_routed_experts": 16, "num_experts_per_tok": 4}]),
    st.dictionaries(st.sampled_from(sorted(CONFIG_KEYS)), HOSTILE, max_size=4),
    st.one_of(st.none(), st.dictionaries(st.sampled_from(sorted(VISION_KEYS)), HOSTILE, max_size=4)))
hostile_runtime_settings = st.dictionaries(
    st.one_of(st.sampled_from(RUNTIME_CONSTANTS), st.text(max_size=6)), HOSTILE, max_size=4)


def _answered_or_refused(fn, body) -> None:
    try:
        out = fn(body)
    except RequestError:
        return  # a clear 422 naming the field
    check_response(out)


@SETTINGS
@given(hostile_custom_models, st.sampled_from(["inference", "finetuning"]), st.booleans())
def test_hostile_custom_models_are_answered_or_refused(config, workload, offload):
    fn = vramplan.estimate_inference if workload == "inference" else vramplan.estimate_finetuning
    _answered_or_refused(fn, {"gpu_key": "h100_80", "llm_key": "custom", "custom_model": config,
                              "enable_offloading": offload})


@SETTINGS
@given(st.sampled_from(RUNTIMES), hostile_runtime_settings, st.sampled_from(["inference", "finetuning"]))
def test_hostile_runtime_settings_are_answered_or_refused(runtime, settings_, workload):
    fn = vramplan.estimate_inference if workload == "inference" else vramplan.estimate_finetuning
    _answered_or_refused(fn, {"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "runtime": runtime,
                              "runtime_settings": settings_})


@SETTINGS
@given(st.dictionaries(st.sampled_from(["batch_size", "seq_length", "concurrent_users", "num_gpus", "custom_vram",
                                        "custom_weights_bytes", "shared_prefix_ratio", "num_offload_layers",
                                        "percentage_offload", "enable_offloading", "colour"]), HOSTILE, min_size=1,
                       max_size=4))
def test_hostile_numbers_anywhere_are_answered_or_refused(fields):
    _answered_or_refused(vramplan.estimate_inference, {"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", **fields})
