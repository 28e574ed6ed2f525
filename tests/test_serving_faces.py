"""The serving model through every face: HTTP (runtimes listing, the serving object in OpenAPI), the CLI
(--input-tokens, --output-tokens, --request-rate, --runtime, `vramplan runtimes`, plan SLOs) and the planner."""

from __future__ import annotations

import jsonschema
import pytest
from click.testing import CliRunner
from server_fixtures import PREFIX, api_token, app, auth_headers, client, isolated_data_dir, sqlite_store  # noqa: F401

import vramplan
from vramplan.cli import main
from vramplan.server.openapi import openapi_document

BODY = {"gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "runtime": "vllm", "input_tokens": 2000, "output_tokens": 500}


def run(*args, input=None):
    return CliRunner().invoke(main, list(args), input=input)


def test_get_runtimes_lists_the_profiles_with_sources(client, auth_headers):
    resp = client.get(f"{PREFIX}/runtimes", headers=auth_headers)
    assert resp.status_code == 200
    body = resp.json()
    assert body == vramplan.list_runtimes()
    doc = openapi_document()
    jsonschema.validate(body, {**doc["components"]["schemas"]["RuntimeList"], "$defs": {}})
    assert client.get(f"{PREFIX}/runtimes").status_code == 401


def test_inference_response_schema_documents_the_serving_object(client, auth_headers):
    resp = client.post(f"{PREFIX}/inference", json={**BODY, "concurrent_users": 20}, headers=auth_headers)
    assert resp.status_code == 200
    serving = openapi_document()["components"]["schemas"]["InferenceResponse"]["properties"]["serving"]
    jsonschema.validate(resp.json()["serving"], serving)
    assert set(serving["required"]) >= {"ttft_ms", "itl_ms", "e2e_latency_ms", "limited_by", "running_sequences",
                                         "queued_requests", "output_throughput_tps", "total_throughput_tps",
                                         "requests_per_second", "cost_per_million_output_tokens"}


def test_request_rate_and_users_together_are_a_422(client, auth_headers):
    resp = client.post(f"{PREFIX}/inference", json={**BODY, "request_rate": 3, "concurrent_users": 4}, headers=auth_headers)
    assert resp.status_code == 422 and "concurrent_users" in resp.text


def test_cli_serving_flags_and_table():
    result = run("inference", "--gpu", "h100_80", "--model", "llama-3.1-8b-instruct", "--runtime", "vllm",
                 "--input-tokens", "2000", "--output-tokens", "500", "--request-rate", "4", "--gpu-hour-cost", "2.5")
    assert result.exit_code == 0, result.output
    out = vramplan.estimate_inference({**BODY, "request_rate": 4, "gpu_hour_cost": 2.5})
    srv = out["serving"]
    assert "load        open loop: 2000 prompt + 500 output tokens per request" in result.output
    assert f"{srv['output_throughput_tps']:,.1f} output tokens/s" in result.output
    assert f"limited by {srv['limited_by']}" in result.output
    assert f"{srv['cost_per_million_output_tokens']:,.3f} per million output tokens" in result.output


def test_cli_runtimes_lists_and_shows_one():
    result = run("runtimes")
    assert result.exit_code == 0
    for key in ("vllm", "sglang", "tensorrt-llm", "tgi", "llama.cpp", "transformers"):
        assert key in result.output
    one = run("runtimes", "tgi")
    assert one.exit_code == 0 and "max_prefill_tokens" in one.output and "launcher.md" in one.output
    bad = run("runtimes", "nope")
    assert bad.exit_code == 2 and "unknown runtime 'nope'" in bad.output


def test_max_request_rate_meets_the_slo_and_the_next_step_does_not():
    slo = {"ttft_ms": 500, "itl_ms": 30}
    answer = vramplan.plan({**BODY, "workload": "inference", "find": ["max_request_rate"], "slo": slo})["max_request_rate"]
    rate = answer["value"]
    srv = answer["estimate"]["serving"]
    assert srv["requests_per_second"] == pytest.approx(rate) and srv["ttft_ms"] <= 500 and srv["itl_ms"] <= 30
    above = vramplan.estimate_inference({**BODY, "request_rate": rate * 1.01})["serving"]
    assert (above["ttft_ms"] is None or above["ttft_ms"] > 500 or above["itl_ms"] > 30)
    assert answer["binding"] in ("ttft_ms", "itl_ms", "capacity")
    assert rate < answer["capacity_requests_per_second"]


def test_max_concurrent_users_under_an_slo_and_min_gpus_for_a_rate():
    slo = {"itl_ms": 25}
    users = vramplan.plan({**BODY, "workload": "inference", "find": ["max_concurrent_users"], "slo": slo})["max_concurrent_users"]
    n = users["value"]
    assert users["estimate"]["serving"]["itl_ms"] <= 25
    assert vramplan.estimate_inference({**BODY, "concurrent_users": n + 1})["serving"]["itl_ms"] > 25
    assert users["binding"] == "itl_ms"
    # 70B in FP8 at 3 requests/s within 60 ms between tokens: the fewest GPUs, tensor parallel
    body = {**BODY, "llm_key": "llama-3.3-70b-instruct", "quantization": "fp8", "inference_parallelism": "tensor",
            "request_rate": 3}
    gpus = vramplan.plan({**body, "workload": "inference", "find": ["min_num_gpus"], "slo": {"itl_ms": 60}})["min_num_gpus"]
    k = gpus["value"]
    srv = gpus["estimate"]["serving"]
    assert srv["itl_ms"] <= 60 and srv["requests_per_second"] == pytest.approx(3)
    if k > 1:
        fewer = vramplan.estimate_inference({**body, "num_gpus": k - 1})
        assert (fewer["memory_status"] in ("insufficient", "error") or fewer["serving"]["itl_ms"] is None
                or fewer["serving"]["itl_ms"] > 60)


def test_cli_plan_with_slo_flags():
    result = run("plan", "--gpu", "h100_80", "--model", "llama-3.1-8b-instruct", "--find", "max_request_rate",
                 "--slo-itl-ms", "30", "--request", "-", input='{"runtime": "vllm", "input_tokens": 2000, "output_tokens": 500}')
    assert result.exit_code == 0, result.output
    assert "requests/s" in result.output and "next step fails on" in result.output


def test_slo_is_for_inference_only():
    with pytest.raises(vramplan.RequestError) as exc:
        vramplan.plan({"workload": "finetuning", "gpu_key": "h100_80", "llm_key": "llama-3-8b", "find": ["max_batch_size"],
                       "slo": {"ttft_ms": 100}})
    assert "slo" in str(exc.value)
