"""A runtime without pipeline parallelism (TGI: text-generation-launcher shards every layer over the GPUs with
--num-shard and places no layer on a GPU of its own): over several GPUs a request that leaves inference_parallelism out
(the seed API's default is pipeline) is estimated with the tensor split it runs, and says so; one that states pipeline
is refused naming the field; the deployment planner has no pipeline layout for it and the suggestions offer none.
Runtimes that have both splits keep the API's default."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

import vramplan
from vramplan.cli import main as cli_main
from vramplan.errors import RequestError
from vramplan.estimate import trace_values

from server_fixtures import PREFIX, api_token, app, auth_headers, client, isolated_data_dir, sqlite_store  # noqa: F401

BASE = {"gpu_key": "h100_80", "llm_key": "llama-3.3-70b-instruct", "num_gpus": 4, "input_tokens": 1000,
        "output_tokens": 200, "concurrent_users": 8}


def traced(body: dict) -> tuple[dict, dict]:
    out = vramplan.estimate_inference({**body, "trace": True})
    return out, trace_values(out)


@pytest.mark.parametrize("runtime", ["tgi", "tgi-v2"])
def test_tgi_over_four_gpus_is_four_tensor_shards_when_the_split_is_left_out(runtime):
    out, t = traced({**BASE, "runtime": runtime})
    assert (t["tp"], t["pp"]) == (4, 1)  # four shards of every layer, one stage
    assert any(a.startswith("multi-GPU split: tensor parallelism") and runtime in a for a in out["assumptions"])
    stated, _ = traced({**BASE, "runtime": runtime, "inference_parallelism": "tensor"})
    for field in ("vram_usage", "ms_per_token", "tftt", "estimated_throughput_tps"):
        assert out[field] == stated[field]
    assert not any(a.startswith("multi-GPU split") for a in stated["assumptions"])


def test_a_runtime_with_both_splits_keeps_the_api_default():
    out, t = traced({**BASE, "runtime": "vllm"})
    assert (t["tp"], t["pp"]) == (1, 4)
    assert not any(a.startswith("multi-GPU split") for a in out["assumptions"])


def test_one_gpu_has_nothing_to_split_so_a_stated_pipeline_is_fine():
    _, t = traced({**BASE, "num_gpus": 1, "llm_key": "llama-3.1-8b-instruct", "runtime": "tgi",
                   "inference_parallelism": "pipeline"})
    assert (t["tp"], t["pp"]) == (1, 1)


def test_a_stated_pipeline_split_is_refused_naming_the_field(client, auth_headers):
    body = {**BASE, "runtime": "tgi", "inference_parallelism": "pipeline"}
    with pytest.raises(RequestError) as exc:
        vramplan.estimate_inference(body)
    field, message = exc.value.problems[0]
    assert field == "inference_parallelism" and "tgi" in message and "vllm" in message and "tgi-v2" not in message
    r = client.post(f"{PREFIX}/inference", headers=auth_headers, json=body)
    assert r.status_code == 422 and "inference_parallelism" in r.text
    res = CliRunner().invoke(cli_main, ["inference", "--gpu", "h100_80", "--model", "llama-3.3-70b-instruct",
                                        "--num-gpus", "4", "--runtime", "tgi", "--parallelism", "pipeline"])
    assert res.exit_code != 0 and "inference_parallelism" in res.output


def test_the_planner_searches_no_pipeline_layout_for_tgi():
    # one GPU type, weights and KV fixed, Llama 3.1 8B (32 heads: 2, 4 and 8 shards all divide them): vLLM has one GPU
    # plus {pipeline, tensor} x {2, 4, 8} = 7 layouts, TGI one GPU plus tensor x {2, 4, 8} = 4 - 11 in all
    body = {"workload": "inference", "find": ["cheapest_deployment"], "llm_key": "llama-3.1-8b-instruct",
            "gpu_keys": ["h100_80"], "runtimes": ["tgi", "vllm"], "quantization": "bf16", "kv_cache_quantization": "bf16",
            "input_tokens": 1000, "output_tokens": 200, "request_rate": 40, "slo": {"itl_ms": 15}}
    answer = vramplan.plan(body)["cheapest_deployment"]
    assert answer["considered"] == 7 + 4
    fixed = vramplan.plan({**body, "inference_parallelism": "pipeline"})["cheapest_deployment"]
    assert fixed["considered"] == 4 + 1  # vLLM's one GPU and three pipelines, TGI's one GPU


def test_suggestions_for_tgi_add_shards_not_stages():
    out = vramplan.estimate_inference({**BASE, "num_gpus": 2, "runtime": "tgi", "concurrent_users": 20,
                                       "input_tokens": 4000, "output_tokens": 500})
    # 70B in bf16 does not leave 20 users' caches room on two shards; the fewest shards that do are 4 (three would not
    # divide its 64 heads) - not the "3 GPUs with pipeline parallelism" a layer split would take
    found = [(s["summary"], s["change"]) for s in out.get("suggestions", [])]
    assert found and not any("pipeline" in summary for summary, _ in found)
    assert ("4 GPUs with tensor parallelism", {"num_gpus": 4, "inference_parallelism": "tensor"}) in found


@pytest.mark.parametrize("runtime, told", [("vllm", True), ("sglang", True), ("tensorrt-llm", True),
                                           ("transformers", False), ("llama.cpp", False)])
def test_the_default_pipeline_split_is_pointed_out_where_the_runtime_usually_shards(runtime, told):
    # vLLM, SGLang and TensorRT-LLM deployments within a node run tensor parallelism; the API's default split (pipeline)
    # is kept for them but said; transformers (device_map "auto") and llama.cpp (--split-mode layer) split by layers
    body = {**BASE, "llm_key": "llama-3.1-8b-instruct", "runtime": runtime, "quantization": "bf16"}
    out, t = traced(body)
    assert (t["tp"], t["pp"]) == (1, 4)
    line = next(a for a in out["assumptions"] if a.startswith("pipeline parallelism: 4 stages"))
    assert ("the API's default split" in line) == told
    stated, _ = traced({**body, "inference_parallelism": "pipeline"})
    assert not any("the API's default split" in a for a in stated["assumptions"])
