"""Suggestions: when it does not fit (or barely fits), what change would — each one applied and checked here."""

from __future__ import annotations

import math

import jsonschema
import pytest
from server_fixtures import PREFIX, api_token, app, auth_headers, client, isolated_data_dir, sqlite_store  # noqa: F401

import vramplan
from vramplan.estimate import trace_values
from vramplan.catalog import get_catalog
from vramplan.datafiles import load_schema
from vramplan.suggest import apply_change

CASES = [
    # Llama 3 8B in fp16 (~15 GiB of weights) on an 8 GiB card: insufficient
    ("inference", {"gpu_key": "rtx_4060", "llm_key": "llama-3-8b-instruct"}),
    # Llama 3 70B in fp16 (~131 GiB) on a 24 GiB card
    ("inference", {"gpu_key": "rtx_3090", "llm_key": "llama-3-70b-instruct"}),
    # 128k tokens of context for Llama 3.1 8B on a 24 GiB card: the KV cache alone is 16 GiB
    ("inference", {"gpu_key": "rtx_4090", "llm_key": "llama-3.1-8b-instruct", "seq_length": 131072}),
    # tensor parallelism over 3 GPUs cannot split 64 attention heads: memory_status error
    ("inference", {"gpu_key": "h100_80", "llm_key": "llama-3-70b-instruct", "num_gpus": 3,
                   "inference_parallelism": "tensor"}),
    # full fine-tuning of an 8B model with AdamW needs ~16 bytes per parameter: far over 24 GiB
    ("finetuning", {"gpu_key": "rtx_3090", "llm_key": "llama-3-8b-instruct", "finetuning_method": "full"}),
    # LoRA without checkpointing at batch 8 x 2048 tokens: activations dominate
    ("finetuning", {"gpu_key": "rtx_3090", "llm_key": "llama-3-8b-instruct", "batch_size": 8,
                    "optimization_config": {"gradient_checkpointing": False}}),
]


def estimate(workload: str, body: dict) -> dict:
    return (vramplan.estimate_inference if workload == "inference" else vramplan.estimate_finetuning)(body)


def capacity(body: dict) -> float:
    return body.get("custom_vram") or get_catalog().gpus.get(body["gpu_key"]).data["memory_gib"]


@pytest.mark.parametrize("workload,body", CASES)
def test_every_suggestion_applied_fits(workload, body):
    out = estimate(workload, body)
    assert out["memory_status"] in ("insufficient", "error")
    jsonschema.validate(out, load_schema(f"{workload}-response"))
    assert out["suggestions"], "a way to make it fit exists for each of these"
    keeps = [s["keeps"] for s in out["suggestions"]]
    assert keeps == sorted(keeps, reverse=True)  # cheapest first
    for s in out["suggestions"]:
        changed = apply_change(body, s["change"])
        again = estimate(workload, changed)
        assert again["memory_status"] not in ("insufficient", "error"), s
        assert again["vram_usage"] <= capacity(changed)
        assert (again["vram_usage"], again["memory_status"]) == (s["vram_usage"], s["memory_status"])


def test_very_high_gets_suggestions_that_leave_headroom():
    # Llama 3.1 8B in Q8_0 on llama.cpp (7.4 GiB on the GPU: token_embd stays in host memory) with 54,000 tokens of
    # context (KV: 2 x 32 layers x 8 heads x 128 x 2 bytes = 128 KiB per token, 54,016 cells = 6.6 GiB) on a
    # 16 GiB card: 14.4 GiB is 90 %, and this is a little more
    body = {"gpu_key": "rtx_4080", "llm_key": "llama-3.1-8b-instruct", "quantization": "q8_0", "seq_length": 54000}
    out = vramplan.estimate_inference(body)
    assert out["memory_status"] == "very_high", out["actual_vram_percentage"]
    assert out["suggestions"]
    for s in out["suggestions"]:
        again = vramplan.estimate_inference(apply_change(body, s["change"]))
        assert again["actual_vram_percentage"] <= 90.0  # out of the very_high band
        assert again["memory_status"] in ("okay", "moderate", "high")


def test_a_fitting_estimate_has_no_suggestions():
    out = vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m"})
    assert out["memory_status"] == "okay" and "suggestions" not in out


def test_the_best_format_that_fits_an_8_gib_card():
    # Llama 3 8B: Q8_0 is 8.5 bits per weight -> 8.03e9 x 8.5 / 8 = 8.53e9 bytes = 7.95 GiB of weights alone, which
    # with the runtime's context and buffers cannot fit 8 GiB; Q6_K is 6.5625 bits -> 6.1 GiB, which leaves ~1.5 GiB.
    out = vramplan.estimate_inference({"gpu_key": "rtx_4060", "llm_key": "llama-3-8b-instruct"})
    quant = [s for s in out["suggestions"] if set(s["change"]) == {"quantization"}]
    assert [s["change"]["quantization"] for s in quant] == ["q6_k"]
    assert quant[0]["cost"]["quality_rank"] == {"field": "quantization", "before": 96.0, "after": 86}
    assert quant[0]["keeps"] == pytest.approx(86 / 96, abs=0.001)  # faster than fp16, so only quality is lost


def test_a_configuration_error_is_answered_with_a_gpu_count_that_divides_the_heads():
    body = {"gpu_key": "h100_80", "llm_key": "llama-3-70b-instruct", "num_gpus": 3, "inference_parallelism": "tensor"}
    out = vramplan.estimate_inference(body)
    assert out["memory_status"] == "error"
    counts = [s["change"]["num_gpus"] for s in out["suggestions"] if "num_gpus" in s["change"]]
    # 64 query heads and 8 KV heads split evenly over 2 (70B in fp16 = 131 GiB: one 80 GiB card is too small)
    assert counts and all(64 % n == 0 for n in counts)
    assert 2 in counts


def test_fine_tuning_steps_down_to_lora():
    out = vramplan.estimate_finetuning({"gpu_key": "rtx_3090", "llm_key": "llama-3-8b-instruct", "finetuning_method": "full"})
    changes = [s["change"] for s in out["suggestions"]]
    assert {"finetuning_method": "lora"} in changes
    lora = next(s for s in out["suggestions"] if s["change"] == {"finetuning_method": "lora"})
    # LoRA keeps the base in bf16 (quality rank 96, as full fine-tuning in fp16 stores it)
    assert lora["cost"]["quality_rank"]["before"] == lora["cost"]["quality_rank"]["after"] == 96


def test_stacked_memory_savers_when_no_single_one_fits():
    body = {"gpu_key": "rtx_3090", "llm_key": "llama-3-8b-instruct", "batch_size": 8,
            "optimization_config": {"gradient_checkpointing": False}}
    out = vramplan.estimate_finetuning(body)
    stacked = [s for s in out["suggestions"] if len(s["change"]) >= 2 and "gpu_key" not in s["change"]]
    assert stacked
    assert stacked[0]["change"]["optimization_config"] == {"gradient_checkpointing": True}
    # gradient checkpointing alone does not fit (else it would be a suggestion by itself and no stack is made)
    alone = vramplan.estimate_finetuning(apply_change(body, {"optimization_config": {"gradient_checkpointing": True}}))
    assert alone["memory_status"] == "insufficient"


def test_apply_change_merges_optimization_config():
    body = {"optimization_config": {"flash_attention": False}, "batch_size": 4}
    assert apply_change(body, {"optimization_config": {"gradient_checkpointing": True}, "batch_size": 2}) == \
        {"optimization_config": {"flash_attention": False, "gradient_checkpointing": True}, "batch_size": 2}


def test_suggestions_and_plan_defaults_over_http(client, auth_headers):
    body = {"gpu_key": "rtx_4060", "llm_key": "llama-3-8b-instruct"}
    r = client.post(f"{PREFIX}/inference", json=body, headers=auth_headers)
    assert r.status_code == 200 and r.json()["suggestions"] == vramplan.estimate_inference(body)["suggestions"]
    # POST plan without `workload` answers for inference, as the CLI and POST report assume
    plan = client.post(f"{PREFIX}/plan", json={**body, "find": ["max_seq_length"]}, headers=auth_headers)
    assert plan.status_code == 200
    assert plan.json() == vramplan.plan({**body, "workload": "inference", "find": ["max_seq_length"]})


def test_a_preallocated_kv_pool_at_its_utilisation_is_not_a_headroom_problem():
    # vLLM takes gpu_memory_utilization (0.9) of the card for weights + KV pool by design: over 90 % is normal
    out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "runtime": "vllm"})
    assert out["memory_status"] == "very_high" and "kv_pool" in out
    assert "suggestions" not in out


LOADS = [
    # gpt-oss-120b on one H100 under vLLM, 50 requests/s of 2000 + 200 tokens: far past what it sustains (~7.5/s)
    {"gpu_key": "h100_80", "llm_key": "gpt-oss-120b", "quantization": "mxfp4", "runtime": "vllm", "input_tokens": 2000,
     "output_tokens": 200, "request_rate": 50},
    # Llama 3.3 70B FP8 over 2 H100s, 50 clients of 5000 + 500 tokens: vLLM's pool admits 42, 8 requests wait
    {"gpu_key": "h100_80", "llm_key": "llama-3.3-70b-instruct", "quantization": "fp8", "num_gpus": 2,
     "inference_parallelism": "tensor", "runtime": "vllm", "input_tokens": 5000, "output_tokens": 500, "concurrent_users": 50},
]


@pytest.mark.parametrize("body", LOADS)
def test_a_load_that_does_not_all_run_gets_suggestions_that_run_it(body):
    """The memory is fine (very_high is vLLM's pool by design), but the load is not: an open loop past capacity, a
    closed loop whose requests queue. Each suggestion, applied, runs the whole load: latencies for the open loop,
    no queue for the closed one - and asks no memory headroom."""
    out = vramplan.estimate_inference(body)
    srv = out["serving"]
    assert out["memory_status"] == "very_high" and "kv_pool" in out
    assert srv["ttft_ms"] is None if "request_rate" in body else srv["queued_requests"] > 0
    jsonschema.validate(out, load_schema("inference-response"))
    assert out["suggestions"]
    for s in out["suggestions"]:
        changed = apply_change(body, s["change"])
        again = vramplan.estimate_inference(changed)
        assert again["memory_status"] not in ("insufficient", "error") and again["vram_usage"] <= capacity(changed)
        if "request_rate" in body:
            assert again["serving"]["ttft_ms"] is not None, s
        else:
            assert again["serving"]["queued_requests"] == 0, s


def test_the_suggested_rates_and_users_are_what_the_deployment_sustains_and_admits():
    rate_body, users_body = LOADS
    out = vramplan.estimate_inference(rate_body)
    lower = [s for s in out["suggestions"] if set(s["change"]) == {"request_rate"}]
    best = vramplan.plan({**rate_body, "find": ["max_request_rate"]})["max_request_rate"]["value"]
    assert lower and lower[0]["change"]["request_rate"] == best
    assert best <= out["serving"]["requests_per_second"] * 1.001     # no more than the capacity the warning states
    assert lower[0]["cost"]["workload"] == {"field": "request_rate", "before": 50, "after": best}
    # or the whole 50/s over k = ceil(50 / best) copies, each taking 50 / k (rounded up): k times the GPUs
    k = math.ceil(50 / best)
    copies = [s for s in out["suggestions"] if "copies of this deployment" in s["summary"]]
    assert copies and copies[0]["summary"].startswith(f"{k} copies of this deployment ({k} GPUs)")
    per = copies[0]["change"]["request_rate"]
    assert k * per >= 50 and per <= best and copies[0]["cost"]["gpus"] == {"before": 1, "after": k}
    assert "workload" not in copies[0]["cost"]                          # the whole load is served
    # the closed loop: as many clients as the pool admits at once (42 of the 50)
    out = vramplan.estimate_inference(users_body)
    fewer = [s for s in out["suggestions"] if set(s["change"]) == {"concurrent_users"}]
    assert fewer and fewer[0]["change"]["concurrent_users"] == out["serving"]["running_sequences"] == 42


def test_an_open_loop_on_llama_cpp_is_offered_the_fewest_slots_that_serve_it():
    """One llama-server slot serves ~0.575 requests/s of 1000 + 200 tokens; at 2 requests/s the fewest slots that take
    them all (runtime_settings.max_num_seqs, --parallel), checked against one fewer; the rest of the settings kept."""
    body = {"gpu_key": "rtx_4090", "llm_key": "llama-3.1-8b", "quantization": "q4_k_m", "runtime": "llama.cpp",
            "enable_continuous_batching": True, "input_tokens": 1000, "output_tokens": 200, "request_rate": 2,
            "runtime_settings": {"max_prefill_tokens": 512}}
    out = vramplan.estimate_inference(body)
    assert out["serving"]["ttft_ms"] is None and "kv_pool" not in out
    slots = [s for s in out["suggestions"] if "slots instead of 1" in s["summary"]]
    assert len(slots) == 1
    n = slots[0]["change"]["runtime_settings"]["max_num_seqs"]
    assert slots[0]["change"] == {"runtime_settings": {"max_prefill_tokens": 512, "max_num_seqs": n}}
    assert f"llama-server --parallel {n}" in slots[0]["summary"]
    # n slots sustain 2 requests/s, n - 1 do not; the memory is n slots' (more than one slot's)
    served = vramplan.estimate_inference(apply_change(body, slots[0]["change"]))
    assert served["serving"]["ttft_ms"] is not None and served["serving"]["requests_per_second"] == pytest.approx(2, rel=1e-3)
    fewer = vramplan.estimate_inference({**body, "runtime_settings": {"max_prefill_tokens": 512, "max_num_seqs": n - 1}})
    assert fewer["serving"]["ttft_ms"] is None
    assert served["vram_usage"] == slots[0]["vram_usage"] > out["vram_usage"]
    # n slots serve at most n x one slot's rate (each request's e2e time only grows beside others): n >= ceil(2 / 0.575)
    assert n >= math.ceil(2 / out["serving"]["requests_per_second"])
    # a runtime with a preallocated pool already runs many requests at once: no slots suggestion there
    pooled = vramplan.estimate_inference(LOADS[0])
    assert not [s for s in pooled["suggestions"] if "slots" in s["summary"]]


def test_a_model_beyond_any_node_gets_an_empty_list_from_the_bound():
    """The largest config the schema allows (hidden 2^20, 4096 layers, ~6.6 PB of fp16 weights) cannot fit even
    in 1-bit weights over 8 of the largest catalog GPU: two bounding estimates say so, no search runs."""
    import vramplan.suggest as suggest
    from vramplan.configkeys import largest_config

    body = {"gpu_key": "h100_80", "llm_key": "custom", "custom_model": largest_config()}
    out = vramplan.estimate_inference(body)
    assert out["memory_status"] == "insufficient" and out["suggestions"] == []
    runs = []
    real = suggest.run
    try:
        suggest.run = lambda *a, **k: runs.append(a) or real(*a, **k)
        vramplan.estimate_inference(body)
    finally:
        suggest.run = real
    assert len(runs) <= 3  # the estimate itself and the two bounds


def test_a_pinned_pool_stays_for_the_load_and_becomes_the_memory_it_measured_for_another_deployment():
    """runtime_settings.kv_pool_tokens pins a logged pool: suggestions that change the load or the lengths keep it; those
    that change the deployment leave it out and keep, as non-torch memory, what it says the model does not count (the
    model's own pool less the logged one) - so the unchanged deployment would get the logged pool back."""
    pin = {"kv_pool_tokens": 91680, "max_num_seqs": 512}
    body = {"gpu_key": "h100_80", "llm_key": "llama-3.1-405b-fp8", "quantization": "fp8", "runtime": "vllm", "num_gpus": 8,
            "inference_parallelism": "tensor", "input_tokens": 2048, "output_tokens": 2048, "concurrent_users": 64,
            "runtime_settings": pin}
    out = vramplan.estimate_inference(body)
    assert out["kv_pool"]["tokens"] == 91680 and out["serving"]["queued_requests"] > 0
    rest = {"max_num_seqs": 512}
    free = vramplan.estimate_inference({**body, "runtime_settings": rest, "trace": True})
    t = trace_values(free)
    # the logged pool: 91,680 tokens x 516,096 bytes (126 layers x 8 KV heads x 128 x K, V x 2 bytes) / 8 GPUs
    logged = 91680 * 516096 / 8
    unexplained_mib = (t["kv_pool_bytes"] - logged) / 2**20
    assert unexplained_mib > 5000                                   # the model's pool is ~2x the logged one here
    moved = [s for s in out["suggestions"] if set(s["change"]) - {"concurrent_users", "seq_length", "input_tokens", "output_tokens"}]
    kept = [s for s in out["suggestions"] if s not in moved]
    assert moved and kept
    for s in kept:
        assert "runtime_settings" not in s["change"]
        assert vramplan.estimate_inference(apply_change(body, s["change"]))["kv_pool"]["tokens"] == 91680
    for s in moved:
        settings = s["change"]["runtime_settings"]
        assert settings["kv_pool_tokens"] == 0 and settings["max_num_seqs"] == 512   # 0: sized from the memory
        # vLLM's own non-torch memory at TP 1 (256 MiB, catalogs/runtimes/vllm.yaml) plus what the pin measured
        assert settings["non_torch_mib"] == pytest.approx(t["rt_non_torch_mib"] + unexplained_mib, abs=0.001)
        assert t["rt_non_torch_mib"] == 256
        again = vramplan.estimate_inference(apply_change(body, s["change"]))
        assert again["vram_usage"] == s["vram_usage"] and again["serving"]["queued_requests"] == 0
    # the same deployment with the pin's memory instead of the pin: the logged pool again (to the byte's rounding)
    same = vramplan.estimate_inference({**body, "runtime_settings": moved[0]["change"]["runtime_settings"]})
    assert same["kv_pool"]["tokens"] == pytest.approx(91680, abs=2)
