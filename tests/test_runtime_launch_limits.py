"""What a runtime accepts as launched: TGI 2.x's launcher caps a prompt and a request at about 4K tokens unless told
otherwise, and its prefill budget follows the prompt limit (text-generation-launcher main.rs, router/src/validation.rs).
The values are worked out here from those rules, not read back from the catalog."""
from __future__ import annotations

import pytest

import vramplan
from vramplan.catalog import get_catalog
from vramplan.errors import RequestError
from vramplan.estimate import trace_values
from server_fixtures import PREFIX, api_token, app, auth_headers, client, isolated_data_dir, sqlite_store  # noqa: F401

CAT = get_catalog()
BODY = {"gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "concurrent_users": 8}


def constant(runtime: str, name: str) -> float:
    return float(CAT.runtimes.get(runtime).data["constants"][name]["value"])


def refusals(out: dict) -> list[str]:
    return [w for w in out["warnings"] if "refuses this request as launched" in w]


def test_tgi_launcher_defaults():
    # main.rs: max_position_embeddings capped at max_default 4096; max_input_tokens = 4096 - 1 = 4095,
    # max_model_len = 4096, max_batch_prefill_tokens = max_input_tokens + 50 = 4145.
    assert constant("tgi-v2", "max_input_tokens") == 4096 - 1
    assert constant("tgi-v2", "max_model_len") == 4096
    assert constant("tgi-v2", "max_prefill_tokens") == 4096 - 1 + 50
    # the other runtimes state no cap of their own (0): the model's context binds
    for runtime in ("vllm", "sglang", "tensorrt-llm", "transformers", "llama.cpp"):
        assert constant(runtime, "max_input_tokens") == 0 and constant(runtime, "max_model_len") == 0


def test_a_long_prompt_under_tgi_defaults_is_refused_with_a_warning():
    out = vramplan.estimate_inference({**BODY, "runtime": "tgi-v2", "input_tokens": 5000, "output_tokens": 500})
    [w] = refusals(out)
    # 5,000 > 4,095 and 5,000 + 500 = 5,500 > 4,096: both limits named
    assert "a prompt of 5,000 tokens is past its max_input_tokens of 4,095" in w
    assert "5,500 tokens in all (prompt + answer) are past its max_model_len of 4,096" in w
    assert w.endswith("estimated as asked") and out["serving"]["ttft_ms"] > 0
    # vLLM takes the same request up to the model's 131,072-token context: no such warning
    assert refusals(vramplan.estimate_inference({**BODY, "runtime": "vllm", "input_tokens": 5000, "output_tokens": 500})) == []


def test_the_edges_of_tgi_defaults():
    # 4,000 + 96 = 4,096 tokens: at both limits, accepted
    assert refusals(vramplan.estimate_inference({**BODY, "runtime": "tgi-v2", "input_tokens": 4000, "output_tokens": 96})) == []
    # one more answer token: 4,097 in all, past max_model_len only
    [w] = refusals(vramplan.estimate_inference({**BODY, "runtime": "tgi-v2", "input_tokens": 4000, "output_tokens": 97}))
    assert "4,097 tokens in all" in w and "max_input_tokens" not in w.split("(see")[0]


def test_a_deployment_launched_for_long_prompts():
    settings = {"max_input_tokens": 8000, "max_model_len": 9000}
    out = vramplan.estimate_inference({**BODY, "runtime": "tgi-v2", "input_tokens": 5000, "output_tokens": 500,
                                       "runtime_settings": settings, "trace": True})
    assert refusals(out) == []
    # TGI sets an unset --max-batch-prefill-tokens to --max-input-tokens + 50 = 8,050
    assert trace_values(out)["rt_max_prefill_tokens"] == 8000 + 50
    assert any("max_batch_prefill_tokens 8050" in a for a in out["assumptions"])
    # given explicitly, the budget is what was given
    given = vramplan.estimate_inference({**BODY, "runtime": "tgi-v2", "input_tokens": 5000, "output_tokens": 500, "trace": True,
                                         "runtime_settings": {**settings, "max_prefill_tokens": 12000}})
    assert trace_values(given)["rt_max_prefill_tokens"] == 12000
    # the budget follows only TGI's prompt limit: vLLM's max_prefill_tokens is its own (8,192 on an 80 GiB GPU)
    vllm = vramplan.estimate_inference({**BODY, "runtime": "vllm", "input_tokens": 5000, "output_tokens": 500,
                                        "runtime_settings": settings, "trace": True})
    assert trace_values(vllm)["rt_max_prefill_tokens"] == 8192
    assert not any("following runtime_settings" in a for a in vllm["assumptions"])
    # and the response says where TGI's budget came from (once: TGI 2.x's budget was never derived, so nothing else moves)
    [line] = [a for a in out["assumptions"] if "following runtime_settings" in a]
    assert line.startswith("tgi-v2: max_prefill_tokens 8050 = max_input_tokens + prefill_tokens_over_input, following "
                           "runtime_settings max_input_tokens - text-generation-launcher main.rs")


@pytest.mark.parametrize("settings, field, words", [
    # --max-input-tokens alone: max_model_len stays 4,096 and main.rs refuses max_input_tokens >= max_model_len
    ({"max_input_tokens": 8000}, "runtime_settings.max_input_tokens",
     "tgi-v2 refuses to start with max_input_tokens 8000 not below max_model_len 4096"),
    ({"max_model_len": 4095}, "runtime_settings.max_model_len",
     "tgi-v2 refuses to start with max_input_tokens 4095 not below max_model_len 4095"),
    # "`max_batch_prefill_tokens` must be >= `max_input_tokens`": TGI 2.x prefills a prompt in one step
    ({"max_input_tokens": 8000, "max_model_len": 9000, "max_prefill_tokens": 4000}, "runtime_settings.max_prefill_tokens",
     "tgi-v2 refuses to start with max_prefill_tokens 4000 below max_input_tokens 8000"),
])
def test_launches_tgi_refuses(settings, field, words):
    with pytest.raises(RequestError) as err:
        vramplan.estimate_inference({**BODY, "runtime": "tgi-v2", "runtime_settings": settings})
    [(where, what)] = err.value.problems
    assert where == field and what.startswith(words)


def test_a_runtime_that_chunks_prompts_takes_a_budget_below_its_limit():
    # vLLM splits prompts over steps (prefill_mixes_decode 1): a 2,048-token budget under an 8,000-token prompt limit runs
    out = vramplan.estimate_inference({**BODY, "runtime": "vllm", "input_tokens": 5000, "output_tokens": 500,
                                       "runtime_settings": {"max_input_tokens": 8000, "max_model_len": 9000,
                                                            "max_prefill_tokens": 2048}})
    assert refusals(out) == [] and out["serving"]["ttft_ms"] > 0


def test_the_http_api_answers_422_naming_the_setting(client, auth_headers):
    r = client.post(f"{PREFIX}/inference", headers=auth_headers,
                    json={**BODY, "runtime": "tgi-v2", "runtime_settings": {"max_input_tokens": 8000}})
    assert r.status_code == 422, r.text
    assert "runtime_settings.max_input_tokens" in r.text and "refuses to start" in r.text


def test_the_planner_launches_tgi_for_the_lengths_it_searches():
    body = {"llm_key": "llama-3.1-8b-instruct", "runtime": "tgi-v2", "input_tokens": 6000, "output_tokens": 500,
            "concurrent_users": 16, "find": ["cheapest_deployment"], "gpu_keys": ["h100_80", "l40s"]}
    answer = vramplan.plan(body)["cheapest_deployment"]
    # TGI's defaults refuse a 6,000-token prompt: every row says how it was launched (6,000 and 6,000 + 500)
    assert answer["value"] and all(r["runtime_settings"] == {"max_input_tokens": 6000, "max_model_len": 6500}
                                   for r in answer["value"])
    assert any("estimated launched with max_input_tokens 6000, max_model_len 6500" in n for n in answer["notes"])
    # the row's request reproduces it: no refusal, and the prefill budget that launch gives (6,000 + 50)
    row = vramplan.estimate_inference({**answer["value"][0]["request"], "trace": True})
    assert refusals(row) == [] and trace_values(row)["rt_max_prefill_tokens"] == 6000 + 50
    # lengths the defaults take: no launch settings
    short = vramplan.plan({**body, "input_tokens": 1000, "output_tokens": 200})["cheapest_deployment"]
    assert all("runtime_settings" not in r for r in short["value"]) and not short.get("notes")


# -- the start-up check: vLLM refuses to start unless its pool holds one request of --max-model-len ----------------

def starts(out: dict) -> list[str]:
    return [w for w in out["warnings"] if "refuses to start as launched" in w]


def test_vllm_on_a_24_gib_card_needs_a_shorter_max_model_len():
    body = {"gpu_key": "rtx_4090", "llm_key": "llama-3.1-8b-instruct", "runtime": "vllm", "seq_length": 4096}
    out = vramplan.estimate_inference({**body, "trace": True})
    pool = trace_values(out)["kv_pool_bytes"]
    # Llama 3.1 8B in 16 bits: 32 layers x 8 KV heads x 128 x 2 (keys, values) x 2 bytes = 131,072 bytes a token, so one
    # request of its 131,072-token context needs 16 GiB - more than the pool left on a 24 GiB card.
    per_token = 32 * 8 * 128 * 2 * 2
    assert per_token * 131072 > pool
    # the longest length that starts: whole 16-token blocks that fit the pool
    longest = int(pool // per_token) // 16 * 16
    [w] = starts(out)
    assert "one request of 131,072 tokens (the model's context" in w
    assert f"launched with max_model_len {longest:,} or less it starts and takes these 4,096-token requests" in w
    # launched so, it starts: no warning; one block more, the same warning naming that max_model_len
    assert starts(vramplan.estimate_inference({**body, "runtime_settings": {"max_model_len": longest}})) == []
    [w] = starts(vramplan.estimate_inference({**body, "runtime_settings": {"max_model_len": longest + 16}}))
    assert f"one request of {longest + 16:,} tokens (its max_model_len)" in w and f"max_model_len {longest:,} or less" in w


def test_where_the_pool_holds_the_whole_context_or_the_runtime_starts_anyway():
    body = {"llm_key": "llama-3.1-8b-instruct", "seq_length": 4096}
    # an 80 GiB H100: 16 GiB for one 131,072-token request fits its pool
    assert starts(vramplan.estimate_inference({**body, "gpu_key": "h100_80", "runtime": "vllm"})) == []
    # SGLang caps a request to its pool and TensorRT-LLM admits what its pool holds: both start on the 4090
    for runtime in ("sglang", "tensorrt-llm"):
        assert starts(vramplan.estimate_inference({**body, "gpu_key": "rtx_4090", "runtime": runtime})) == []
    # a request that does not fit at all says so as before, without the start-up warning
    big = vramplan.estimate_inference({**body, "gpu_key": "rtx_4090", "runtime": "vllm", "seq_length": 131072})
    assert big["memory_status"] == "insufficient" and starts(big) == []


def test_the_planner_launches_vllm_with_a_max_model_len_where_it_would_not_start():
    body = {"llm_key": "llama-3.1-8b-instruct", "runtime": "vllm", "input_tokens": 3000, "output_tokens": 500,
            "concurrent_users": 4, "find": ["cheapest_deployment"], "gpu_keys": ["rtx_4090", "h100_80"]}
    answer = vramplan.plan(body)["cheapest_deployment"]
    rows = {r["gpu_key"]: r for r in answer["value"]}
    # the 4090's pool cannot hold one 131,072-token request: launched with the request's 3,000 + 500 tokens
    assert rows["rtx_4090"]["runtime_settings"] == {"max_model_len": 3500}
    assert rows["rtx_4090"]["request"]["runtime_settings"] == {"max_model_len": 3500}
    assert starts(vramplan.estimate_inference(rows["rtx_4090"]["request"])) == []
    assert any(n.startswith("vllm on rtx_4090: launched with max_model_len 3,500 - one request of 131,072 tokens (the model's "
                            "context)") for n in answer["notes"])
    # the H100's holds 16 GiB for it: launched as vLLM's defaults launch it
    assert "runtime_settings" not in rows["h100_80"]
    assert not any(n.startswith("vllm on h100_80") for n in answer["notes"])


def test_the_planner_launches_tgi_whole_where_its_pool_holds_less_than_4096_tokens():
    # Qwen2.5-14B in AWQ on a 12 GiB RTX 4070 leaves TGI a pool under one request of its 4,096-token default limit
    # (48 layers x 8 KV heads x 128 x 2 x 2 bytes = 196,608 bytes a token, 0.75 GiB for 4,096)
    body = {"llm_key": "qwen2.5-14b-instruct", "quantization": "awq", "runtime": "tgi-v2", "input_tokens": 1500,
            "output_tokens": 500, "concurrent_users": 1, "find": ["cheapest_deployment"], "gpu_keys": ["rtx_4070"]}
    single = vramplan.estimate_inference({k: v for k, v in body.items() if k not in ("find", "gpu_keys")} | {"gpu_key": "rtx_4070"})
    [w] = starts(single)
    assert "one request of 4,096 tokens (its max_model_len)" in w and "(and max_input_tokens below it)" in w
    answer = vramplan.plan(body)["cheapest_deployment"]
    [row] = answer["value"]
    # launched with the request's 2,000 tokens in all, a prompt limit below it (the request's 1,500) and the prefill
    # budget the row was estimated with (4,095 + 50), so TGI starts and the row's figures stand
    assert row["runtime_settings"] == {"max_model_len": 2000, "max_input_tokens": 1500, "max_prefill_tokens": 4145}
    again = vramplan.estimate_inference(row["request"])
    assert starts(again) == [] and refusals(again) == [] and again["serving"]["ttft_ms"] == row["ttft_ms"]
    assert any(n.startswith("tgi-v2 on rtx_4070: launched with max_model_len 2,000, max_input_tokens 1,500, "
                            "max_prefill_tokens 4,145 - one request of 4,096 tokens (its max_model_len)") for n in answer["notes"])


def test_vllm_v0_defaults_follow_the_max_model_len_it_is_launched_with():
    body = {"gpu_key": "a100_80", "llm_key": "llama-3.1-8b-instruct", "runtime": "vllm-v0", "seq_length": 4096, "trace": True}
    # V0 chunks prompts into 512-token steps for max_model_len > 32K - Llama 3.1's 131,072-token context, by default
    tv = trace_values(vramplan.estimate_inference(body))
    assert tv["rt_max_prefill_tokens"] == 512 and tv["rt_prefill_mixes_decode"] == 1
    # launched with --max-model-len 8192: no chunking, prompts in steps of their own of max(8192, 2048) = 8,192 tokens
    tv = trace_values(vramplan.estimate_inference({**body, "runtime_settings": {"max_model_len": 8192}}))
    assert tv["rt_max_prefill_tokens"] == max(8192, 2048) and tv["rt_prefill_mixes_decode"] == 0


def test_a_planner_row_launched_to_start_keeps_the_defaults_it_was_estimated_with():
    # vLLM V0 on an RTX 4090: the pool cannot hold Llama 3.1 8B's 131,072-token context, so the row is launched with
    # max_model_len 3,500 - under which V0 would neither chunk prompts nor keep a 512-token budget (32K and below:
    # max(max_model_len, 2048)); the row keeps the chunking and budget it was estimated with
    body = {"llm_key": "llama-3.1-8b-instruct", "runtime": "vllm-v0", "input_tokens": 3000, "output_tokens": 500,
            "concurrent_users": 4, "find": ["cheapest_deployment"], "runtimes": ["vllm-v0"], "gpu_keys": ["rtx_4090"]}
    [row] = vramplan.plan(body)["cheapest_deployment"]["value"]
    assert row["runtime_settings"] == {"max_model_len": 3500, "max_prefill_tokens": 512, "prefill_mixes_decode": 1}
    again = vramplan.estimate_inference(row["request"])
    assert starts(again) == [] and again["serving"]["ttft_ms"] == row["ttft_ms"] and again["serving"]["itl_ms"] == row["itl_ms"]
