"""The planner answers "what fits?" by searching the estimator itself, so every answer is checked
here against the estimator: the value fits and the next step does not."""

from __future__ import annotations

import json
import math
import time

import jsonschema
import pytest
from click.testing import CliRunner

import vramplan
from vramplan.catalog import get_catalog
from vramplan.datafiles import load_schema
from vramplan.estimate import trace_values
from vramplan.errors import RequestError
from vramplan.planner import _quant_candidates
from vramplan.request import context_change

SMALL = {"workload": "inference", "gpu_key": "rtx_4090", "llm_key": "llama-3.1-8b-instruct", "quantization": "fp16"}
BIG = {"workload": "inference", "gpu_key": "rtx_4090", "llm_key": "llama-3.1-70b-instruct", "quantization": "fp16"}


def estimate(req: dict, **change) -> dict:
    body = {k: v for k, v in req.items() if k not in ("workload", "find", "headroom", "gpu_keys")}
    body.update(change)
    fn = vramplan.estimate_inference if req["workload"] == "inference" else vramplan.estimate_finetuning
    return fn(body)


def fits(out: dict, capacity: float, headroom: float = 0.0) -> bool:
    """The definition the issue states, written out again here (not imported from the planner)."""
    return out["memory_status"] not in ("insufficient", "error") and out["vram_usage"] <= (1 - headroom) * capacity


def capacity(gpu_key: str) -> float:
    return get_catalog().gpus.get(gpu_key).data["memory_gib"]


def check_schema(answers: dict) -> None:
    jsonschema.validate(answers, load_schema("plan-response"))


@pytest.mark.parametrize("question,field", [("max_seq_length", "seq_length"), ("max_batch_size", "batch_size"),
                                            ("max_concurrent_users", "concurrent_users")])
def test_max_value_fits_and_one_more_does_not(question, field):
    answers = vramplan.plan({**SMALL, "find": [question]})
    check_schema(answers)
    a = answers[question]
    assert isinstance(a["value"], int) and a["value"] >= 1
    assert "limited_by" not in a  # Llama 3.1 8B in fp16 runs out of 24 GiB before 128k tokens or a million users
    at = estimate(SMALL, **{field: a["value"]})
    assert fits(at, 24)
    at.pop("suggestions", None)  # the faces add suggestions (at the boundary it is very_high); the planner does not
    assert a["estimate"] == at  # the estimate is the estimator's, at that value
    assert not fits(estimate(SMALL, **{field: a["value"] + 1}), 24)


def test_max_seq_length_is_capped_by_the_model_context():
    # Llama 3 8B (8192 tokens of context) in Q4_K_M on an 80 GiB H100 fits its whole context.
    a = vramplan.plan({"workload": "inference", "gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct",
                       "quantization": "q4_k_m", "find": ["max_seq_length"]})["max_seq_length"]
    assert a["value"] == 8192
    assert "context length" in a["limited_by"]


def test_context_change_keeps_the_answer_the_request_gives():
    # both halves: the 200-token answer stays, the prompt is the rest of the context
    assert context_change({"input_tokens": 1000, "output_tokens": 200}, 4096) == \
        {"seq_length": 4096, "input_tokens": 3896, "output_tokens": 200}
    # the prompt alone: its answer is the 7:1 proportion's, 700 // 7 = 100
    assert context_change({"input_tokens": 700}, 4096) == {"seq_length": 4096, "input_tokens": 3996, "output_tokens": 100}
    # a context no longer than the answer takes seq_length's own split: 100 // 8 = 12 answer tokens, 88 prompt
    assert context_change({"output_tokens": 200}, 100) == {"seq_length": 100, "input_tokens": 88, "output_tokens": 12}
    assert context_change({"output_tokens": 200}, 1) == {"seq_length": 2, "input_tokens": 1, "output_tokens": 1}
    # neither half, or halves of the wrong type (validation names them): seq_length alone
    assert context_change({}, 4096) == {"seq_length": 4096}
    assert context_change({"output_tokens": "200"}, 4096) == {"seq_length": 4096}


def test_max_seq_length_of_a_request_that_gives_its_lengths():
    """seq_length beside input_tokens + output_tokens that disagree is a 422, so a search that set seq_length
    alone found nothing but the request's own length (Llama 3.1 8B on an H100 answered 1,200 tokens); the
    search keeps the 200-token answer and grows the prompt."""
    req = {"workload": "inference", "gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "input_tokens": 1000,
           "output_tokens": 200}
    a = vramplan.plan({**req, "find": ["max_seq_length"]})["max_seq_length"]
    assert a["value"] == 131072 and "context length" in a["limited_by"]
    assert (a["estimate"]["serving"]["input_tokens"], a["estimate"]["serving"]["output_tokens"]) == (130872, 200)
    # where memory binds (fp16 on a 24 GiB card under transformers): the answer fits, one token more does not
    small = {**req, "gpu_key": "rtx_4090", "runtime": "transformers", "quantization": "fp16", "input_tokens": 60000,
             "output_tokens": 500}
    v = vramplan.plan({**small, "find": ["max_seq_length"]})["max_seq_length"]["value"]
    assert 1000 < v < 60500
    assert fits(estimate(small, input_tokens=v - 500), 24) and not fits(estimate(small, input_tokens=v - 499), 24)
    # and the shorter-context suggestion says all three fields, in step
    out = vramplan.estimate_inference({k: x for k, x in small.items() if k != "workload"})
    shorter = [s for s in out["suggestions"] if s["summary"].startswith("a context of")]
    assert shorter and shorter[0]["change"] == {"seq_length": v, "input_tokens": v - 500, "output_tokens": 500}


def test_min_num_gpus_fits_and_one_fewer_does_not():
    a = vramplan.plan({**BIG, "find": ["min_num_gpus"]})["min_num_gpus"]
    n = a["value"]
    assert n > 1  # 70B in fp16 is ~131 GiB of weights: no single 24 GiB card holds it
    assert fits(estimate(BIG, num_gpus=n), 24)
    assert not fits(estimate(BIG, num_gpus=n - 1), 24)
    assert a["estimate"]["vram_usage"] <= 24


def test_nothing_fits_gives_null_with_a_reason():
    answers = vramplan.plan({**BIG, "find": ["max_seq_length", "max_batch_size", "max_concurrent_users"]})
    check_schema(answers)
    for q in ("max_seq_length", "max_batch_size", "max_concurrent_users"):
        assert answers[q]["value"] is None
        assert "GiB" in answers[q]["reason"] and "24" in answers[q]["reason"]
        assert "estimate" not in answers[q]


def test_concurrent_users_is_an_inference_question():
    req = {"workload": "finetuning", "gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "find": ["max_concurrent_users"]}
    a = vramplan.plan(req)["max_concurrent_users"]
    assert a["value"] is None and "inference" in a["reason"]


def test_finetuning_max_batch_size():
    req = {"workload": "finetuning", "gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "finetuning_method": "qlora",
           "seq_length": 1024, "find": ["max_batch_size"]}
    a = vramplan.plan(req)["max_batch_size"]
    assert a["value"] >= 1
    assert fits(estimate(req, batch_size=a["value"]), 80)
    assert not fits(estimate(req, batch_size=a["value"] + 1), 80)


@pytest.mark.parametrize("req,gib", [(BIG, 24), ({**SMALL, "gpu_key": "rtx_3060", "runtime": "llama.cpp"}, 12),
                                     ({**SMALL, "gpu_key": "h100_80"}, 80)])
def test_best_quantization_is_the_highest_ranked_format_that_fits(req, gib):
    cat = get_catalog()
    a = vramplan.plan({**req, "find": ["best_quantization"]})["best_quantization"]
    body = {k: v for k, v in req.items() if k != "workload"}
    _, ranked, _ = _quant_candidates(body, "inference", cat)
    # both Llama 3.1 checkpoints are bf16 (config torch_dtype bfloat16): no format keeps more than bf16's 96
    rank = {k: min(cat.quantization.get(k).data["quality_rank"], 96) for k in ranked}
    assert a["value"] in ranked and a["quality_rank"] == rank[a["value"]]
    assert fits(estimate(req, quantization=a["value"]), gib)
    for better in (k for k in ranked if rank[k] > rank[a["value"]]):
        assert not fits(estimate(req, quantization=better), gib), f"{better} ranks higher and fits too"
    if rank[a["value"]] == 96:
        assert a["value"] == "bf16"  # among formats that keep as much, the checkpoint's own
    if "runtime" in req:
        assert all(req["runtime"] in cat.quantization.get(k).data["runtimes"] for k in ranked)


def test_quality_order_starts_with_full_precision_and_skips_aliases():
    cat = get_catalog()
    _, ranked, _ = _quant_candidates({}, "inference", cat)
    assert ranked[:3] == ["fp32", "fp16", "bf16"]  # no model: 100, then 96 twice in catalog order
    assert "q8" not in ranked  # alias of q8_0
    assert ranked.index("q8_0") < ranked.index("q6_k") < ranked.index("q4_k_m") < ranked.index("q2_k")


@pytest.mark.parametrize("config, native, weights, kv", [
    ({"torch_dtype": "bfloat16"}, "bf16", 96, 96),
    ({"dtype": "float16"}, "fp16", 96, 96),                        # transformers 5 writes dtype
    ({"torch_dtype": "torch.float32"}, "fp32", 100, 100),
    ({"text_config": {"torch_dtype": "bfloat16"}}, "bf16", 96, 96),  # a multimodal config states it in its text part
    # a quantized checkpoint: its method is the weights' ceiling, its dtype the cache's (FP8 92 / bf16 96)
    ({"torch_dtype": "bfloat16", "quantization_config": {"quant_method": "fp8"}}, "fp8", 92, 96),
    # gpt-oss states no dtype: the quantizers compute in bf16 (keptmodules.KEPT_BITS)
    ({"quantization_config": {"quant_method": "mxfp4"}}, "mxfp4", 74, 96),
    # a method the catalog has no format for: the dtype decides
    ({"torch_dtype": "bfloat16", "quantization_config": {"quant_method": "hqq"}}, "bf16", 96, 96),
    ({}, None, math.inf, math.inf),
    (None, None, math.inf, math.inf),
])
def test_checkpoint_ceiling(config, native, weights, kv):
    from vramplan.formatrules import checkpoint_ceiling

    c = checkpoint_ceiling(get_catalog(), config)
    assert (c.native, c.weights, c.kv) == (native, weights, kv)


def test_no_format_keeps_more_than_the_checkpoint_holds():
    """Llama 3.1 8B's checkpoint is bf16: fp32 stores the same values in twice the bytes (quality 96, not 100), so the
    best format on an 80 GiB H100 is the checkpoint's own bf16 - not fp32, though 8B x 4 bytes = 30 GiB fits too,
    and not fp16, which keeps 96 as well but is not what the checkpoint holds."""
    cat = get_catalog()
    _, ranked, _ = _quant_candidates({"llm_key": "llama-3.1-8b-instruct", "gpu_key": "h100_80"}, "inference", cat)
    assert ranked[:3] == ["bf16", "fp32", "fp16"]  # 96 three times: the native one first, then catalog order
    a = vramplan.plan({**SMALL, "gpu_key": "h100_80", "find": ["best_quantization"]})["best_quantization"]
    assert (a["value"], a["quality_rank"]) == ("bf16", 96)
    # gpt-oss ships MXFP4 experts (quantization_config quant_method mxfp4, rank 74): bf16 or fp8 copies of them keep 74
    _, ranked, _ = _quant_candidates({"llm_key": "gpt-oss-20b", "gpu_key": "h100_80", "runtime": "vllm"}, "inference", cat)
    assert ranked[0] == "mxfp4"
    a = vramplan.plan({"gpu_key": "h100_80", "llm_key": "gpt-oss-20b", "runtime": "vllm",
                       "find": ["best_quantization"]})["best_quantization"]
    assert (a["value"], a["quality_rank"]) == ("mxfp4", 74)
    # fine-tuning precision is not capped: fp32 master weights train more exactly than bf16 ones
    a = vramplan.plan({"workload": "finetuning", "gpu_key": "h200", "llm_key": "llama-3.2-1b", "finetuning_method": "full",
                       "find": ["best_quantization"]})["best_quantization"]
    assert (a["value"], a["quality_rank"]) == ("fp32", 100)


def test_gpus_lists_every_fitting_gpu_fastest_first():
    req = {**SMALL, "seq_length": 4096, "find": ["gpus"]}
    a = vramplan.plan(req)["gpus"]
    rows = a["value"]
    assert len(rows) >= 5 and a["considered"] >= len(rows)
    speeds = [r["per_user_tps"] for r in rows]
    assert speeds == sorted(speeds, reverse=True)
    cat = get_catalog()
    for r in rows:
        out = estimate(req, gpu_key=r["gpu_key"])
        assert fits(out, capacity(r["gpu_key"]))
        assert r["vram_usage"] == out["vram_usage"] and r["per_user_tps"] == out["per_user_tps"]
    listed = {r["gpu_key"] for r in rows}
    missing = [e.key for e in cat.gpus if not e.data.get("custom") and e.key not in listed]
    for key in missing:  # every GPU left out does not fit
        assert not fits(estimate(req, gpu_key=key), capacity(key))


def test_gpus_limited_by_gpu_keys_and_without_a_gpu_key():
    req = {"workload": "finetuning", "llm_key": "llama-3-8b-instruct", "finetuning_method": "lora",
           "gpu_keys": ["rtx_3060", "h100_80", "a100_80"], "find": ["gpus"]}
    answers = vramplan.plan(req)
    check_schema(answers)
    rows = answers["gpus"]["value"]
    assert {r["gpu_key"] for r in rows} <= {"rtx_3060", "h100_80", "a100_80"}
    assert "h100_80" in {r["gpu_key"] for r in rows}
    assert [r["training_tps"] for r in rows] == sorted((r["training_tps"] for r in rows), reverse=True)


def test_headroom_is_respected():
    plain = vramplan.plan({**SMALL, "find": ["max_seq_length"]})["max_seq_length"]["value"]
    a = vramplan.plan({**SMALL, "headroom": 0.1, "find": ["max_seq_length"]})["max_seq_length"]
    assert a["value"] < plain
    assert a["estimate"]["vram_usage"] <= 0.9 * 24
    assert estimate(SMALL, seq_length=a["value"] + 1)["vram_usage"] > 0.9 * 24


def test_several_questions_at_once():
    answers = vramplan.plan({**SMALL, "find": ["max_seq_length", "max_batch_size", "min_num_gpus", "best_quantization"]})
    check_schema(answers)
    assert list(answers) == ["max_seq_length", "max_batch_size", "min_num_gpus", "best_quantization"]
    assert answers["min_num_gpus"]["value"] == 1


@pytest.mark.parametrize("req,field", [
    ({**SMALL, "find": ["biggest_model"]}, "find[0]"),
    ({**SMALL, "find": []}, "find"),
    ({k: v for k, v in SMALL.items() if k != "gpu_key"} | {"find": ["max_seq_length"]}, "gpu_key"),
    ({**SMALL, "find": ["max_seq_length"], "headroom": 1}, "headroom"),
    ({**SMALL, "find": ["max_seq_length"], "workload": "training"}, "workload"),
    ({**SMALL, "find": ["max_seq_length"], "batch_size": 0}, "batch_size"),
    ({**SMALL, "find": ["max_seq_length"], "gpu_key": "rtx_4099"}, "gpu_key"),
])
def test_bad_requests_name_the_field(req, field):
    with pytest.raises(RequestError) as info:
        vramplan.plan(req)
    assert field in [w for w, _ in info.value.problems], info.value.problems


def test_unknown_gpu_keys_suggest_close_ones():
    with pytest.raises(RequestError) as info:
        vramplan.plan({**SMALL, "gpu_keys": ["rtx_4090", "h100_8"], "find": ["gpus"]})
    assert info.value.problems[0][0] == "gpu_keys[1]"
    assert "h100_80" in info.value.suggestions["gpu_keys[1]"]


def test_plan_cli_json_is_the_python_answer(tmp_path):
    from vramplan.cli.plan import plan

    path = tmp_path / "req.json"
    path.write_text(json.dumps({k: v for k, v in SMALL.items() if k != "workload"}))
    result = CliRunner().invoke(plan, ["--request", str(path), "--find", "max_seq_length,best_quantization",
                                       "--headroom", "0.05", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == vramplan.plan({**SMALL, "headroom": 0.05,
                                                       "find": ["max_seq_length", "best_quantization"]})
    table = CliRunner().invoke(plan, ["--request", str(path), "--find", "max_seq_length,gpus", "--gpu-keys", "h100_80,rtx_4090"])
    assert table.exit_code == 0, table.output
    assert "max_seq_length" in table.output and "h100_80" in table.output and "GiB" in table.output
    bad = CliRunner().invoke(plan, ["--request", str(path), "--find", "max_seq"])
    assert bad.exit_code == 2 and "--find" in bad.output


def test_plan_http_route():
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from vramplan.server.report_routes import ROUTES

    client = TestClient(Starlette(routes=ROUTES))
    req = {**SMALL, "find": ["max_batch_size"]}
    r = client.post("/api/v1/vram-calculation/plan", json=req)
    assert r.status_code == 200
    assert r.json() == vramplan.plan(req)
    bad = client.post("/api/v1/vram-calculation/plan", json={**req, "find": ["nope"]})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "find[0]"
    assert client.post("/api/v1/vram-calculation/plan", content=b"{", headers={"content-type": "application/json"}).status_code == 400


def test_authenticated_routes_run_the_check_first():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.testclient import TestClient

    from vramplan.server.report_routes import authenticated_routes

    async def deny(request):
        return JSONResponse({"error": "Unauthorized"}, status_code=401)

    client = TestClient(Starlette(routes=authenticated_routes(deny)))
    assert client.post("/api/v1/vram-calculation/plan", json={**SMALL, "find": ["gpus"]}).status_code == 401
    assert client.post("/api/v1/vram-calculation/report", json=SMALL).status_code == 401


def _latency() -> None:
    """``python tests/test_planner.py``: how long plans take (a benchmark print, not a test)."""
    vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct"})  # load the catalog once
    cases = {
        "max_seq_length": {**SMALL, "find": ["max_seq_length"]},
        "max_batch_size": {**SMALL, "find": ["max_batch_size"]},
        "max_concurrent_users": {**SMALL, "find": ["max_concurrent_users"]},
        "min_num_gpus (70B)": {**BIG, "find": ["min_num_gpus"]},
        "best_quantization (70B)": {**BIG, "find": ["best_quantization"]},
        "gpus (all catalog GPUs)": {**SMALL, "find": ["gpus"]},
        "finetuning max_batch_size": {"workload": "finetuning", "gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct",
                                      "finetuning_method": "qlora", "find": ["max_batch_size"]},
    }
    for name, req in cases.items():
        times = []
        for _ in range(5):
            t = time.perf_counter()
            vramplan.plan(req)
            times.append((time.perf_counter() - t) * 1000)
        print(f"{name:<28} median {sorted(times)[2]:6.1f} ms   min {min(times):6.1f} ms")


if __name__ == "__main__":
    _latency()


def test_a_pinned_pool_answers_load_questions_and_gives_way_for_deployment_questions():
    # 91,680 logged tokens: vLLM admits prompt + half the answer, 2048 + 1024 = 3072 tokens (192 blocks of 16) a
    # sequence, 91,680 / 3,072 = 29.8 -> 29 users; another weight format is another deployment, whose pool is what its
    # memory leaves less what the pin measured (vramplan.planner.unpinned_settings)
    body = {"gpu_key": "h100_80", "llm_key": "llama-3.1-405b-fp8", "quantization": "fp8", "runtime": "vllm", "num_gpus": 8,
            "inference_parallelism": "tensor", "input_tokens": 2048, "output_tokens": 2048, "concurrent_users": 64,
            "runtime_settings": {"kv_pool_tokens": 91680}}
    a = vramplan.plan({**body, "find": ["max_concurrent_users", "best_quantization"]})
    assert a["max_concurrent_users"]["value"] == 91680 // 3072 == 29
    assert a["max_concurrent_users"]["estimate"]["kv_pool"]["tokens"] == 91680
    settings = vramplan.planner.unpinned_settings(body, "inference", get_catalog())
    assert set(settings) == {"kv_pool_tokens", "non_torch_mib"} and settings["kv_pool_tokens"] == 0
    assert settings["non_torch_mib"] > 256
    same = vramplan.estimate_inference({**body, "runtime_settings": settings})
    assert same["kv_pool"]["tokens"] == pytest.approx(91680, abs=2)
    best = a["best_quantization"]
    assert best["estimate"]["kv_pool"]["tokens"] > 91680 and best["estimate"]["serving"]["queued_requests"] == 0


def test_a_pinned_sglang_pool_gives_way_as_its_share_scales_it():
    # SGLang's pool is its share (0.836 on an H100) of the memory free at start-up less the model, so memory the pin says
    # the estimate does not count takes 0.836 of itself off the pool: kept as non-torch memory it is the gap / 0.836,
    # and the deployment's own pool comes back to the logged 300,000 tokens
    body = {"gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "runtime": "sglang", "input_tokens": 2048,
            "output_tokens": 2048, "concurrent_users": 64, "runtime_settings": {"kv_pool_tokens": 300000}}
    free = vramplan.estimate_inference({**body, "runtime_settings": {"kv_pool_tokens": 0}, "trace": True})
    gap_mib = (trace_values(free)["kv_pool_bytes"] - 300000 * 32 * 8 * 128 * 2 * 2) / 2**20  # 128 KiB a token in bf16
    settings = vramplan.planner.unpinned_settings(body, "inference", get_catalog())
    assert settings["non_torch_mib"] == pytest.approx(256 + gap_mib / 0.836, abs=0.01)
    same = vramplan.estimate_inference({**body, "runtime_settings": settings})
    assert same["kv_pool"]["tokens"] == pytest.approx(300000, abs=2)
