"""Maps of many estimates: the fit map (GPUs x formats) and memory against context length, Python and HTTP."""

from __future__ import annotations

import math

import jsonschema
import pytest
from server_fixtures import PREFIX, api_token, app, auth_headers, client, isolated_data_dir, sqlite_store  # noqa: F401

import vramplan
from vramplan.datafiles import load_schema
from vramplan.errors import RequestError

MAP = {"llm_key": "llama-3-8b-instruct", "gpu_keys": ["rtx_4060", "rtx_4090"], "quantizations": ["q4_k_m", "fp16"]}


def test_fit_map_cells_are_estimates():
    m = vramplan.fit_map(MAP)
    jsonschema.validate(m, load_schema("fit-map-response"))
    assert [c["key"] for c in m["columns"]] == ["fp16", "q4_k_m"]  # best quality first (96, 78)
    assert [r["gpu_key"] for r in m["rows"]] == ["rtx_4060", "rtx_4090"]
    cell = {(r["gpu_key"], c["key"]): r["cells"][i] for r in m["rows"] for i, c in enumerate(m["columns"])}
    # Llama 3 8B: fp16 weights are 8.03e9 x 2 bytes = 14.96 GiB, over an 8 GiB RTX 4060 but within 24 GiB;
    # Q4_K_M is ~4.6 GiB, within both.
    assert not cell["rtx_4060", "fp16"]["fits"] and cell["rtx_4060", "fp16"]["memory_status"] == "insufficient"
    assert cell["rtx_4060", "q4_k_m"]["fits"] and cell["rtx_4090", "fp16"]["fits"] and cell["rtx_4090", "q4_k_m"]["fits"]
    for (gpu, q), c in cell.items():
        out = vramplan.estimate_inference({"llm_key": "llama-3-8b-instruct", "gpu_key": gpu, "quantization": q})
        assert (c["vram_usage"], c["memory_status"], c["per_user_tps"], c["runtime"]) == \
            (out["vram_usage"], out["memory_status"], out["per_user_tps"], out["runtime"])
    assert cell["rtx_4090", "q4_k_m"]["runtime"] == "llama.cpp" and cell["rtx_4090", "fp16"]["runtime"] == "transformers"


def test_fine_tuning_fit_map_has_one_column_per_method():
    m = vramplan.fit_map({"workload": "finetuning", "llm_key": "llama-3-8b-instruct", "gpu_keys": ["rtx_3090"]})
    assert [c["key"] for c in m["columns"]] == ["full", "lora", "qlora"] and m["speed_field"] == "training_tps"
    full, lora, qlora = m["rows"][0]["cells"]
    assert not full["fits"] and qlora["fits"]  # 8B full fine-tuning needs far more than 24 GiB; QLoRA fits
    assert qlora["vram_usage"] < lora["vram_usage"] < full["vram_usage"]


def test_fit_map_names_bad_keys():
    with pytest.raises(RequestError) as err:
        vramplan.fit_map({**MAP, "gpu_keys": ["rtx_4090", "rtx_4909"]})
    assert "gpu_keys[1]" in str(err.value) and "rtx_4090" in err.value.suggestions["gpu_keys[1]"]
    with pytest.raises(RequestError, match="quantizations"):
        vramplan.fit_map({**MAP, "quantizations": []})


def test_context_curve_crossing_is_the_planners_max_seq_length():
    body = {"gpu_key": "rtx_4090", "llm_key": "llama-3.1-8b-instruct"}  # fp16, 128k context: 24 GiB ends it early
    c = vramplan.context_curve(body)
    jsonschema.validate(c, load_schema("context-curve-response"))
    plan = vramplan.plan({**body, "find": ["max_seq_length"]})["max_seq_length"]
    assert c["crossing"] == plan["value"]
    assert c["model_max"] == 131072 and c["points"][0]["seq_length"] == 512 and c["points"][-1]["seq_length"] == 131072
    usage = [p["vram_usage"] for p in c["points"]]
    # Memory grows with context, up to the caching allocator's reserve, which is not monotone in the shape: a short
    # prefill's tensors fall in the 2 MiB small-pool segments and fragment them (Llama 3.1 8B, one sequence: 125 MiB
    # reserved beyond the allocated peak at 512 tokens, 33 MiB at 768 - as the sequence transformers itself
    # allocates, recorded on the meta device, replays). So a step may dip by that much, never by more.
    assert all(b >= a - 0.1 for a, b in zip(usage, usage[1:])) and usage[-1] > usage[0] + 1


def test_context_curve_of_a_request_that_gives_its_lengths_and_a_pool_that_queues():
    """vLLM preallocates its pool, so memory stays put with context; what ends the curve is admission: 50 clients
    of 500-token answers on Llama 3.3 70B FP8 over 2 H100s. The pool's tokens / 50 sequences (a vLLM sequence
    counts its prompt and half its answer) is the longest prompt at which all 50 run."""
    body = {"gpu_key": "h100_80", "llm_key": "llama-3.3-70b-instruct", "quantization": "fp8", "num_gpus": 2,
            "inference_parallelism": "tensor", "runtime": "vllm", "input_tokens": 5000, "output_tokens": 500,
            "concurrent_users": 50}
    c = vramplan.context_curve(body)
    assert len(c["points"]) > 5 and len({p["vram_usage"] for p in c["points"]}) == 1
    out = vramplan.estimate_inference({**body, "trace": True})
    pool = next(step["value"] for step in out["trace"] if step["id"] == "kv_pool_bytes")

    def admitted(context: int) -> int:
        # 80 layers x 8 KV heads x 128 x (K, V) x 2 bytes / 2 GPUs = 163,840 bytes a token, the context padded to
        # 16-token blocks; a sequence is admitted with its prompt and half its 500-token answer
        per_token = 163840 * math.ceil(context / 16) * 16 / context
        return math.floor(pool / (per_token * (context - 500 + 250)))

    assert admitted(c["crossing"]) >= 50 > admitted(c["crossing"] + 1)
    assert c["note"] == (f"fits up to {c['crossing']:,} tokens; at {c['crossing'] + 1:,} tokens the runtime admits "
                         "fewer sequences than the load sends (kv_cache) and the rest queue")


def test_context_curve_of_an_open_loop_ends_where_its_rate_outruns_the_deployment():
    # gpt-oss-120b on one H100 under vLLM at 5 requests/s with 200-token answers: longer prompts cost more per request,
    # and the curve ends at the longest one the deployment still serves at that rate
    body = {"gpu_key": "h100_80", "llm_key": "gpt-oss-120b", "quantization": "mxfp4", "runtime": "vllm",
            "input_tokens": 2000, "output_tokens": 200, "request_rate": 5}
    c = vramplan.context_curve(body)
    n = c["crossing"]
    assert c["note"] == f"fits up to {n:,} tokens; at {n + 1:,} tokens requests arrive faster than the deployment serves them"
    at = vramplan.estimate_inference({**body, "input_tokens": n - 200}, suggestions=False)["serving"]
    past = vramplan.estimate_inference({**body, "input_tokens": n + 1 - 200}, suggestions=False)["serving"]
    assert at["ttft_ms"] is not None and past["ttft_ms"] is None


def test_maps_over_http(client, auth_headers):
    r = client.post(f"{PREFIX}/fit-map", json=MAP, headers=auth_headers)
    assert r.status_code == 200 and r.json() == vramplan.fit_map(MAP)
    r = client.post(f"{PREFIX}/context-curve", json={"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct"},
                    headers=auth_headers)
    assert r.status_code == 200 and r.json()["note"].startswith("fits")
    bad = client.post(f"{PREFIX}/fit-map", json={**MAP, "workload": "training"}, headers=auth_headers)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "workload"
    assert client.post(f"{PREFIX}/fit-map", json=MAP).status_code == 401
