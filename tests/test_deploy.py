"""cheapest_deployment: the planner's answer meets the SLO on its own, nothing cheaper does (brute force
over a small grid), the batch search reads the same numbers as single estimates, prices and ranking,
its report and faces, and bad input answered clearly."""

from __future__ import annotations

import json
import math
import random

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

import vramplan
from vramplan.batch import evaluate_batch
from vramplan.catalog import get_catalog
from vramplan.cli import main
from vramplan.datafiles import load_schema
from vramplan.deploy import cheaper_step, describe_deployment
from vramplan.deploysearch import _fewest_below_capacity, binding_of, targets, verdict_figures
from vramplan.deployspace import build_space
from vramplan.errors import RequestError
from vramplan.many import estimate_many
from vramplan.report import render_deployment_report
from vramplan.verdict import binding

SLO = {"ttft_ms": 800, "itl_ms": 35}
#: A small grid: two GPU types with given prices, two runtimes, formats of quality_rank 85 and up.
SMALL = {"workload": "inference", "find": ["cheapest_deployment"], "llm_key": "llama-3-8b-instruct", "input_tokens": 1000,
         "output_tokens": 200, "request_rate": 12, "slo": SLO, "gpu_keys": ["l4", "a10"], "runtimes": ["vllm", "llama.cpp"],
         "min_quality_rank": 85, "gpu_hour_costs": {"l4": 0.8, "a10": 0.9}}


def answer(**changes):
    return vramplan.plan({**SMALL, **changes})["cheapest_deployment"]


@pytest.fixture(scope="module")
def small():
    return answer()


def capacity(row) -> float:
    return float(get_catalog().gpus.get(row["gpu_key"]).data["memory_gib"])


# -- the Done-when checks ---------------------------------------------------------------------------

def test_each_answer_estimated_alone_at_its_share_of_the_load_meets_the_slo(small):
    assert small["value"], small
    for row in small["value"]:
        body = row["request"]
        # the replica's share of the load: the whole request_rate split evenly over the replicas
        assert body["request_rate"] == pytest.approx(12 / row["replicas"], rel=1e-15)
        out = vramplan.estimate_inference(body)
        srv = out["serving"]
        assert out["vram_usage"] <= capacity(row) and out["memory_status"] not in ("insufficient", "error")
        assert srv["ttft_ms"] is not None and srv["ttft_ms"] <= SLO["ttft_ms"]
        assert srv["itl_ms"] <= SLO["itl_ms"]
        assert binding(out, capacity(row), 0.0, SLO) is None
        assert (row["ttft_ms"], row["itl_ms"], row["vram_usage"]) == (srv["ttft_ms"], srv["itl_ms"], out["vram_usage"])


def _grid(cat, gpus, runtimes, floor):
    """Every configuration of the small grid, written out from the catalog without the search's code:
    GPUs x 1/2/4/8 GPUs x split x runtime x formats it loads x KV formats its profile lists."""
    for gpu in gpus:
        for n in (1, 2, 4, 8):
            for split in (("pipeline",) if n == 1 else ("pipeline", "tensor")):
                for runtime in runtimes:
                    kv_keys = cat.runtimes.get(runtime).data["deployment"]["kv_cache_formats"]
                    for fmt in cat.quantization:
                        if runtime not in fmt.data.get("runtimes", ()) or fmt.data["quality_rank"] < floor:
                            continue
                        for kv in kv_keys:
                            if cat.quantization.get(kv).data["quality_rank"] >= floor:
                                yield gpu, n, split, runtime, fmt.key, kv


def test_no_cheaper_configuration_in_a_brute_force_grid_meets_the_slo(small):
    """Every (configuration, replica count) of the grid that costs less than the answer, estimated one by
    one: none meets the SLO; and one at the answer's cost does (the answer's own)."""
    cat = get_catalog()
    best = small["value"][0]
    prices = SMALL["gpu_hour_costs"]
    bodies, costs = [], []
    for gpu, n, split, runtime, quant, kv in _grid(cat, ["l4", "a10"], ["vllm", "llama.cpp"], 85):
        replicas = 1
        while prices[gpu] * n * replicas <= best["cost_per_hour"] + 1e-9:
            bodies.append({"gpu_key": gpu, "llm_key": "llama-3-8b-instruct", "num_gpus": n, "inference_parallelism": split,
                           "runtime": runtime, "quantization": quant, "kv_cache_quantization": kv, "input_tokens": 1000,
                           "output_tokens": 200, "request_rate": 12 / replicas})
            costs.append(prices[gpu] * n * replicas)
            replicas += 1
    assert len(bodies) > 300  # the grid is not trivial
    results = estimate_many(bodies, "inference")
    meets = [not isinstance(out, Exception) and binding(out, capacity(body), 0.0, SLO) is None
             for body, out in zip(bodies, results)]
    cheaper = [(c, b) for c, b, ok in zip(costs, bodies, meets) if ok and c < best["cost_per_hour"] - 1e-9]
    assert cheaper == []
    assert any(ok and math.isclose(c, best["cost_per_hour"]) for c, ok in zip(costs, meets))
    # worked by hand: one A10 per replica misses the 35 ms ITL at 4 requests/s (int8 weights, fp8 KV: ~35.6 ms),
    # so 2 replicas of two A10s at 0.9 an hour = 3.6; a million output tokens at 12 requests/s x 200 tokens
    # = 2,400 tokens/s cost 3.6 / (2400 x 3600) x 1e6 = 0.41667
    assert (best["gpu_key"], best["replicas"], best["total_gpus"], best["cost_per_hour"]) == ("a10", 2, 4, 3.6)
    assert best["output_throughput_tps"] == pytest.approx(2400, abs=0.5)
    assert best["cost_per_million_output_tokens"] == pytest.approx(3.6 / (2400 * 3600) * 1e6, abs=1e-4)


def test_a_light_load_is_served_in_the_checkpoints_own_format_not_a_wider_one():
    """Two requests/s on one L40S fit in every 16- and 32-bit layout at the same price (one GPU): the tie goes to the
    quality kept, and fp32 keeps no more of Llama 3.1's bf16 checkpoint than bf16 (both 96, not 100), so the bf16
    weights - the checkpoint's own - with a bf16 cache (vLLM's kv_cache_dtype auto), not fp32's slower prefill."""
    a = vramplan.plan({"find": ["cheapest_deployment"], "llm_key": "llama-3.1-8b-instruct", "input_tokens": 1000,
                       "output_tokens": 100, "request_rate": 2, "gpu_keys": ["l40s"], "runtimes": ["vllm"],
                       "min_quality_rank": 96})["cheapest_deployment"]
    [row] = a["value"]
    assert (row["quantization"], row["kv_cache_quantization"], row["total_gpus"]) == ("bf16", "bf16", 1)
    assert (row["quality_rank"], row["kv_quality_rank"]) == (96, 96)
    # the fp32 layout it beat: the same GPU, the same price, a slower answer
    fp32 = vramplan.estimate_inference({**row["request"], "quantization": "fp32", "kv_cache_quantization": "fp16"})
    assert fp32["serving"]["ttft_ms"] > row["ttft_ms"]


@pytest.mark.parametrize("load", [{"request_rate": 4}, {"concurrent_users": 90},
                                  {"request_rate": 4, "runtime_settings": {"max_num_seqs": 6}},
                                  {"concurrent_users": 90, "runtime_settings": {"max_num_seqs": 6}}])
def test_the_batch_search_reads_what_single_estimates_read(load):
    """Random configurations of a whole-catalog space at random replica counts: the batch figures the
    search decides on (memory, latencies, what binds) equal each single estimate's."""
    cat = get_catalog()
    body = {"llm_key": "llama-3-8b-instruct", "input_tokens": 1500, "output_tokens": 300, **load}
    space = build_space(cat, body, None, None, None, {})
    rng = random.Random(17)
    rows = np.array(rng.sample(range(space.size), 120))
    replicas = np.array([rng.choice([1, 2, 3, 7, 40]) for _ in rows])
    result = evaluate_batch(cat.formulas, space.columns(rows, replicas), len(rows), targets(cat))
    figs = verdict_figures(cat, result)
    slo = {"ttft_ms": 900, "e2e_latency_ms": 12000}
    why = binding_of(figs, 0.1, slo)
    singles = estimate_many([space.replica_body(int(r), int(k), priced=False) for r, k in zip(rows, replicas)], "inference")
    for i, (row, out) in enumerate(zip(rows, singles)):
        assert not isinstance(out, Exception), out
        srv = out["serving"]
        cap = float(space.gpus[int(space.gpu[row])].data["memory_gib"])
        assert figs["vram_usage"][i] == out["vram_usage"]
        assert figs["memory_status"][i] == out["memory_status"]
        for key in ("ttft_ms", "itl_ms", "e2e_latency_ms"):
            expected = np.nan if srv[key] is None else srv[key]
            assert figs[key][i] == pytest.approx(expected, nan_ok=True, abs=0)
        assert why[i] == binding(out, cap, 0.1, slo)


def test_the_whole_catalog_search_considers_over_ten_thousand_configurations():
    a = vramplan.plan({"workload": "inference", "find": ["cheapest_deployment"], "llm_key": "llama-3.3-70b-instruct",
                       "input_tokens": 2000, "output_tokens": 500, "request_rate": 5,
                       "slo": {"ttft_ms": 2000, "itl_ms": 50}})["cheapest_deployment"]
    assert a["considered"] > 10_000
    assert a["evaluations"] < a["considered"]  # pruned: most configurations are never estimated
    assert len(a["value"]) == 10
    best = a["value"][0]
    out = vramplan.estimate_inference(best["request"])
    assert binding(out, capacity(best), 0.0, {"ttft_ms": 2000, "itl_ms": 50}) is None
    assert "notes" not in a  # every chosen replica agreed with its single estimate


# -- mechanisms worked by hand ----------------------------------------------------------------------

def test_the_replica_count_starts_at_the_fewest_replicas_below_capacity():
    # 5 requests/s, 1 sequence each, against capacities of 2, 2.5, 5 and 0.7 sequences/s:
    # 2: 5/2 = 2.5 >= 2, 5/3 = 1.67 < 2 -> 3;  2.5: 5/2 = 2.5 is not below 2.5 -> 3;
    # 5: 5/1 = 5 is not below 5, 5/2 = 2.5 -> 2;  0.7: 5/7 = 0.714 >= 0.7, 5/8 = 0.625 -> 8
    assert _fewest_below_capacity(5.0, 1, np.array([2.0, 2.5, 5.0, 0.7])).tolist() == [3, 3, 2, 8]
    # two sequences a request: 5 x 2 = 10 sequences/s against 4 -> 10/3 = 3.33 < 4 -> 3
    assert _fewest_below_capacity(5.0, 2, np.array([4.0])).tolist() == [3]


def test_one_step_cheaper_is_one_replica_fewer_or_half_the_gpus():
    body = {"gpu_key": "a10", "llm_key": "llama-3-8b-instruct", "num_gpus": 4, "request_rate": 1.25}
    less, words = cheaper_step(body, 4)
    assert less["request_rate"] == pytest.approx(5 / 3) and words == "3 replicas"  # 1.25 x 4 = 5 requests/s over 3
    closed, _ = cheaper_step({**{k: v for k, v in body.items() if k != "request_rate"}, "concurrent_users": 34}, 6)
    assert closed["concurrent_users"] == 41  # 6 replicas x 34 users = 204, over 5 replicas: ceil(40.8)
    half, words = cheaper_step(body, 1)
    assert half["num_gpus"] == 2 and words == "2 GPUs per replica"
    assert cheaper_step({**body, "num_gpus": 1}, 1) == (None, None)


def test_cost_of_a_deployment_by_hand():
    body = {"gpu_key": "l4", "llm_key": "llama-3-8b-instruct", "num_gpus": 2, "inference_parallelism": "tensor",
            "runtime": "vllm", "quantization": "fp8", "input_tokens": 1000, "output_tokens": 200, "request_rate": 2.0,
            "gpu_hour_cost": 0.8}
    d = describe_deployment(get_catalog(), body, 3, {"itl_ms": 35})
    # 3 replicas x 2 GPUs x 0.8 = 4.8 an hour; each replica serves 2 requests/s x 200 tokens = 400 tokens/s,
    # 1,200 in all: 4.8 / (1200 x 3600) x 1e6 = 1.1111 per million output tokens
    assert d["total_gpus"] == 6 and d["cost_per_hour"] == pytest.approx(4.8)
    assert d["output_throughput_tps"] == pytest.approx(1200, abs=0.1)
    assert d["cost_per_million_output_tokens"] == pytest.approx(1.1111, abs=1e-4)
    # the catalog's reference price for the L4 is not 0.8, so the price is the request's
    assert d["price"] == {"kind": "request"}
    assert d["binding_step"] == "2 replicas"


# -- prices and ranking -----------------------------------------------------------------------------

def test_reference_prices_are_marked_and_request_prices_override_them():
    cat = get_catalog()
    ref = cat.gpus.get("l4").data["reference_price"]
    a = answer(gpu_hour_costs={"a10": 0.9})  # the L4 keeps its catalog reference price
    l4 = next(r for r in a["value"] if r["gpu_key"] == "l4")
    assert l4["gpu_hour_cost"] == ref["usd_per_gpu_hour"]
    assert l4["price"]["kind"] == "reference" and l4["price"]["date"] == ref["date"]
    assert "not a quote" in l4["price"]["note"]
    assert l4["cost_per_hour"] == pytest.approx(ref["usd_per_gpu_hour"] * l4["total_gpus"], abs=1e-4)
    a10 = next(r for r in a["value"] if r["gpu_key"] == "a10")
    assert a10["price"] == {"kind": "request"} and a10["gpu_hour_cost"] == 0.9


def test_unpriced_gpus_come_after_the_priced_ones_by_gpu_count():
    a = vramplan.plan({**SMALL, "gpu_keys": ["l4", "a10", "rtx_4090", "rtx_3090"], "gpu_hour_costs": {"a10": 0.9},
                       "max_deployments": 10})["cheapest_deployment"]
    rows = a["value"]
    priced = [r for r in rows if r["cost_per_hour"] is not None]
    unpriced = [r for r in rows if r["cost_per_hour"] is None]
    assert {r["gpu_key"] for r in priced} == {"a10", "l4"} and {r["gpu_key"] for r in unpriced} == {"rtx_4090", "rtx_3090"}
    assert rows[:len(priced)] == priced  # priced first
    assert [r["cost_per_hour"] for r in priced] == sorted(r["cost_per_hour"] for r in priced)
    assert [r["total_gpus"] for r in unpriced] == sorted(r["total_gpus"] for r in unpriced)
    assert all(r["price"] is None for r in unpriced)


def test_the_answer_follows_the_plan_response_schema(small):
    jsonschema.validate({"cheapest_deployment": small}, load_schema("plan-response"))
    jsonschema.validate({"cheapest_deployment": answer(slo={"ttft_ms": 0.01})}, load_schema("plan-response"))


def test_fixed_fields_are_not_searched():
    body = {k: v for k, v in SMALL.items() if k != "runtimes"}
    a = vramplan.plan({**body, "quantization": "fp8", "kv_cache_quantization": "fp8", "num_gpus": 2,
                       "runtime": "vllm"})["cheapest_deployment"]
    assert a["value"]
    assert all((r["quantization"], r["kv_cache_quantization"], r["num_gpus"], r["runtime"]) == ("fp8", "fp8", 2, "vllm")
               for r in a["value"])


def test_runtimes_only_on_hardware_they_run_on():
    """TensorRT-LLM runs on NVIDIA only, FP8 there from Ada (8.9) on: never on an MI300X, never FP8 on an A10."""
    space = build_space(get_catalog(), {"llm_key": "llama-3-8b-instruct", "request_rate": 1}, ["mi300x", "a10", "l4"],
                        ["tensorrt-llm"], None, {})
    seen = {(space.gpus[int(g)].key, space.pairs[int(p)].quant.key) for g, p in zip(space.gpu, space.pair)}
    assert not any(g == "mi300x" for g, _ in seen)
    assert ("a10", "fp8") not in seen and ("l4", "fp8") in seen and ("a10", "awq") in seen


# -- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, field", [
    ({"gpu_keys": ["l4", "h100x"]}, "gpu_keys[1]"),
    ({"runtimes": ["vlm"]}, "runtimes[0]"),
    ({"gpu_hour_costs": {"a100x": 1.0}}, "gpu_hour_costs.a100x"),
    ({"gpu_hour_costs": {"a10": -1}}, "gpu_hour_costs.a10"),
    ({"min_quality_rank": "high"}, "min_quality_rank"),
    ({"max_deployments": 0}, "max_deployments"),
    ({"request_rate": 0}, "request_rate"),
])
def test_bad_fields_are_named(changes, field):
    with pytest.raises(RequestError) as exc:
        answer(**changes)
    assert field in {f for f, _ in exc.value.problems}, exc.value.problems


def test_an_unknown_runtime_gets_the_closest_names():
    with pytest.raises(RequestError) as exc:
        answer(runtimes=["vlm"])
    assert "vllm" in exc.value.suggestions["runtimes[0]"]


@pytest.mark.parametrize("changes, words", [
    ({"slo": {"ttft_ms": 0.5}}, "the lowest ttft_ms any reaches is"),
    ({"min_quality_rank": 101}, "no runtime searched loads a weights format at min_quality_rank 101"),
    ({"gpu_hour_cost": 2.0}, "give gpu_hour_costs"),
    ({"custom_vram": 80}, "leave out custom_vram"),
    ({"gpu_keys": ["custom_discrete"]}, "custom placeholders"),
    ({"gpu_keys": ["mi300x"], "runtimes": ["tensorrt-llm"]}, "runs on the GPUs given"),
])
def test_questions_without_an_answer_say_why(changes, words):
    a = answer(**changes)
    assert a["value"] is None and words in a["reason"], a["reason"]


def test_fine_tuning_has_no_deployment():
    a = vramplan.plan({"workload": "finetuning", "find": ["cheapest_deployment"], "llm_key": "llama-3-8b-instruct"})
    assert a["cheapest_deployment"]["value"] is None and "serving question" in a["cheapest_deployment"]["reason"]


def test_http_plan_and_deployment_report(small):
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from vramplan.server.api import PREFIX
    from vramplan.server.report_routes import ROUTES

    with TestClient(Starlette(routes=ROUTES)) as client:  # the routes without authentication
        ok = client.post(f"{PREFIX}/plan", json=SMALL)
        assert ok.status_code == 200 and ok.json()["cheapest_deployment"]["value"][0]["gpu_key"] == "a10"
        bad = client.post(f"{PREFIX}/plan", json={**SMALL, "runtimes": ["vlm"]})
        assert bad.status_code == 422 and "runtimes[0]" in json.dumps(bad.json())
        none = client.post(f"{PREFIX}/plan", json={**SMALL, "slo": {"ttft_ms": 0.5}})
        assert none.status_code == 200 and none.json()["cheapest_deployment"]["value"] is None
        row = small["value"][0]
        report = client.post(f"{PREFIX}/report?workload=inference&format=markdown", json={**row, "slo": SLO})
        assert report.status_code == 200, report.text
        assert f"| Cost per hour | {row['cost_per_hour']:g} |" in report.text
        assert f"**Binding constraint: `{row['binding']}`**" in report.text
        html = client.post(f"{PREFIX}/report?workload=inference&format=html", json={**row, "slo": SLO})
        assert html.status_code == 200 and 'data-field="binding">capacity<' in html.text
        for wrong, field in (({"replicas": 0}, "replicas"), ({"slo": {"ttft_ms": -1}}, "slo"), ({"request": 3}, "request")):
            resp = client.post(f"{PREFIX}/report?workload=inference&format=markdown", json={**row, **wrong})
            assert resp.status_code == 422 and field in json.dumps(resp.json()), resp.text


def test_the_report_shows_cost_and_binding_constraint(small):
    row = small["value"][0]
    # 2 replicas of 2 A10s at 6 requests/s each; one replica would take all 12, past what it serves
    assert (row["replicas"], row["binding"], row["binding_step"]) == (2, "capacity", "1 replica")
    md = render_deployment_report(row, "markdown", slo=SLO)
    assert md.startswith("# Deployment: Llama 3 8B Instruct, 2 replicas of 2 x NVIDIA A10")
    # 4 GPUs x 0.9 = 3.6 an hour; 3.6 / (2400 tokens/s x 3600 s) x 1e6 = 0.41667 per million
    assert "| Cost per hour | 3.6 |" in md and "| Cost per million output tokens | 0.4167 |" in md
    assert "Price: 0.9 per GPU-hour, from the request." in md
    assert "**Binding constraint: `capacity`**: with 1 replica requests arrive faster than a replica serves them" in md
    assert "| Time between output tokens (`itl_ms`) | 35 |" in md
    html = render_deployment_report(row, "html", slo=SLO)
    assert 'data-field="cost_per_hour">3.6<' in html and '<a href="#deployment">Deployment</a>' in html
    plain = vramplan.report.render_report(row["request"], "inference", "markdown")
    assert "## Deployment" not in plain  # an ordinary report is unchanged


def test_cli_table_report_and_bad_prices():
    runner = CliRunner()
    args = ["plan", "--find", "cheapest_deployment", "--model", "llama-3-8b-instruct", "--input-tokens", "1000",
            "--output-tokens", "200", "--request-rate", "12", "--slo-ttft-ms", "800", "--slo-itl-ms", "35",
            "--gpu-keys", "l4,a10", "--runtimes", "vllm,llama.cpp", "--min-quality-rank", "85",
            "--gpu-hour-costs", "l4=0.8,a10=0.9"]
    table = runner.invoke(main, args)
    assert table.exit_code == 0, table.output
    first = next(line for line in table.output.splitlines() if line.strip().startswith("1 "))
    assert "a10" in first and " 3.60 " in first and "capacity (at 1 replica)" in first
    report = runner.invoke(main, args + ["--format", "markdown"])
    assert report.exit_code == 0 and "**Binding constraint: `capacity`**" in report.output
    bad = runner.invoke(main, args[:-1] + ["l4=cheap"])
    assert bad.exit_code == 2 and "--gpu-hour-costs" in bad.output


def test_the_search_reads_only_declared_outputs():
    """SERVING_TARGETS is checked against vocabulary/outputs.yaml at import: a renamed output is named there."""
    from vramplan.deploysearch import SERVING_TARGETS, declared_targets
    from vramplan.errors import FormulaError

    assert "srv_ttft_s" in SERVING_TARGETS
    assert declared_targets(("srv_ttft_s",), ("srv_ttft_s", "srv_itl_s")) == ("srv_ttft_s",)
    with pytest.raises(FormulaError) as err:
        declared_targets(("srv_ttft_s", "srv_ttft_seconds"), ("srv_ttft_s", "srv_itl_s"))
    assert str(err.value) == ("vocabulary/outputs.yaml: the deployment search (deploysearch.SERVING_TARGETS) reads "
                              "srv_ttft_seconds, not declared for inference")
