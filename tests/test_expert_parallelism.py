"""inference_parallelism "expert": attention data parallelism + expert parallelism (TensorRT-LLM's "DEP").

Every GPU is a rank that holds everything but the routed experts in full and num_experts / N of the experts,
admits whole sequences (all their KV heads) into its own pool under its own caps, and the MoE layers exchange
the tokens' hidden states (all-gather before, reduce-scatter after) instead of the per-layer all-reduces.
The model is a small Mixtral-shaped config so every figure can be worked out by hand here.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import vramplan
from vramplan.cli import main as cli_main
from vramplan.errors import RequestError
from vramplan.estimate import trace_values

from server_fixtures import PREFIX, api_token, app, auth_headers, client, isolated_data_dir, sqlite_store  # noqa: F401

# 4 layers, hidden 1024, 8 query heads / 2 KV heads of 128, 8 experts of width 2048 (top 2), vocab 32000, untied.
MOE = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": 1024, "num_hidden_layers": 4,
       "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 128, "intermediate_size": 2048,
       "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32000, "tie_word_embeddings": False,
       "max_position_embeddings": 4096, "torch_dtype": "bfloat16"}
BASE = {"gpu_key": "h100_80", "llm_key": "custom", "custom_model": MOE, "quantization": "bf16",
        "kv_cache_quantization": "bf16", "runtime": "vllm", "input_tokens": 1024, "output_tokens": 1024}

# Parameters by hand, bf16 (2 bytes each):
#   attention a layer: q 1024x1024 + k 1024x256 + v 1024x256 + o 1024x1024 = 2,621,440
#   experts a layer:   8 x 3 x 1024 x 2048 = 50,331,648;  router 1024 x 8 = 8,192;  norms 2 x 1024
#   layers: 4 x 52,963,328 + final norm 1024 = 211,854,336 params = 423,708,672 bytes
#   routed experts: 4 x 50,331,648 = 201,326,592 params = 402,653,184 bytes
#   embedding and head: 2 x 32000 x 1024 = 65,536,000 params = 131,072,000 bytes
LAYER_BYTES = 423_708_672
EXPERT_BYTES = 402_653_184
HEAD_BYTES = 65_536_000
ALL_BYTES = LAYER_BYTES + 2 * HEAD_BYTES  # 554,780,672


def traced(**extra) -> tuple[dict, dict]:
    out = vramplan.estimate_inference({**BASE, **extra, "trace": True})
    return out, trace_values(out)


def test_each_gpu_holds_the_replicated_weights_and_a_quarter_of_the_experts():
    _, one = traced()
    _, dep = traced(num_gpus=4, inference_parallelism="expert")
    _, tp = traced(num_gpus=4, inference_parallelism="tensor")
    assert one["weights_gpu_bytes"] == ALL_BYTES
    # 554,780,672 - 3/4 x 402,653,184 (the other three ranks' experts) = 554,780,672 - 301,989,888 = 252,790,784
    assert dep["weights_gpu_bytes"] == 252_790_784
    # tensor parallelism splits everything but the routers (vLLM's gate is a ReplicatedLinear), which every rank holds
    # whole: 554,780,672 / 4 = 138,695,168, plus 3/4 of the routers' 4 x 8,192 x 2 = 65,536 bytes, 49,152 -> 138,744,320
    assert tp["weights_gpu_bytes"] == 138_744_320


def test_one_gpu_with_expert_is_one_gpu():
    a, _ = traced()
    b, _ = traced(inference_parallelism="expert")
    assert {k: v for k, v in a.items() if k != "trace"} == {k: v for k, v in b.items() if k != "trace"}


def test_kv_pool_per_rank_holds_every_kv_head_and_the_caps_are_per_rank():
    _, dep = traced(num_gpus=4, inference_parallelism="expert", concurrent_users=6000)
    _, tp = traced(num_gpus=4, inference_parallelism="tensor", concurrent_users=6000)
    # KV a token, all heads on the sequence's rank: 4 layers x 2 heads x 128 x 2 (K, V) x 2 bytes = 4096 bytes.
    # vLLM admits the prompt and half the answer: 4096 x (1024 + 512) = 6,291,456 bytes a sequence.
    assert dep["srv_kv_seq_bytes"] == 6_291_456
    # tensor parallelism over 4 GPUs with 2 KV heads: each GPU holds ceil(2/4) = 1 head of 2 -> 3,145,728
    assert tp["srv_kv_seq_bytes"] == 3_145_728
    # each of the 4 ranks admits whole sequences into its own pool
    assert dep["srv_kv_limit"] == 4 * (dep["kv_pool_bytes"] // 6_291_456)
    # vLLM's max_num_seqs 1024 (80 GiB GPU) binds per rank: 4 x 1024 = 4096 run, against 1024 under tensor parallelism
    assert dep["srv_seq_limit"] == 4096 and tp["srv_seq_limit"] == 1024
    assert dep["srv_running"] == 4096 and tp["srv_running"] == 1024


def test_one_decode_step_reads_the_rank_weights_and_exchanges_hidden_states_around_each_moe_layer():
    _, dep = traced(num_gpus=4, inference_parallelism="expert")
    _, one = traced()
    # One sequence: its 2 of 8 experts a layer are touched (coverage 0.25). A rank reads its replicated layer bytes
    # (423,708,672 - 402,653,184 = 21,055,488), the touched quarter of its own 100,663,296 bytes of experts
    # (25,165,824) and the head (65,536,000): 111,757,312 bytes.
    assert dep["decode_weight_bytes"] == 111_757_312
    # H100 NVLink 4 through NCCL: all-gather and reduce-scatter over 4 ranks, bf16 both ways (vLLM), one sequence's
    # 2 x 3/4 x 1024 x 2 bytes - a few kilobytes, which NCCL's cost model runs on LL: 6.6 us base + 3 steps x 0.6 us
    # = 8.4 us a collective (LL128: 14 + 3 x 1.9 = 19.7, Simple: 8.4 + 3 x 3.4 = 18.6), the bytes at LL's 141 GB/s.
    # bandwidth 4 MoE layers x 3/4 x 1024 x (2 + 2) bytes / 141e9 = 12,288 / 141e9 s a sequence;
    # latency 4 MoE layers x 2 x 8.4 us = 67.2 us a round, on top of the per-layer launches.
    assert dep["dep_proto"] == 1
    assert dep["srv_comm_token_s"] == pytest.approx(12_288 / 141e9, rel=1e-12)
    assert dep["srv_fixed_s"] - dep["decode_overhead_s"] == pytest.approx(67.2e-6, rel=1e-9)
    # no per-layer all-reduce under attention data parallelism
    assert dep["allreduce_latency_s"] == 0 and dep["allreduce_token_s"] == 0
    # a sequence's attention runs on one rank with all its heads: 1/4 of the one-GPU attention per GPU on average
    assert dep["srv_attn_s"] == pytest.approx(one["srv_attn_s"] / 4, rel=1e-12)
    # the step: the weight read (111,757,312 B at the decode kernels' stream rate, above the 1-sequence GEMM time),
    # then attention, elementwise, the exchange, and the fixed part (bf16: nothing to unpack)
    weights_s = 111_757_312 / (dep["decode_stream_gb_s"] * 1e9)
    assert dep["srv_token_s"] < weights_s
    step = weights_s + dep["srv_attn_s"] + dep["srv_elementwise_s"] + 12_288 / 141e9 + dep["decode_overhead_s"] + 67.2e-6
    assert dep["srv_round_one_s"] == pytest.approx(step, rel=1e-9)


def test_a_burst_prefills_each_rank_own_prompts_in_its_own_passes():
    # 64 prompts of 1024 tokens sent at once (batch_size 64) to 4 attention-DP ranks, vLLM's 8,192-token step budget
    # (H100 80 GB): 65,536 prompt tokens = 8 chunks in all, but each rank prefills its own 16 prompts, 16,384 tokens
    # = 2 passes, the four ranks side by side. The weights a rank reads once a pass are read 2 times, not 8.
    _, dep = traced(num_gpus=4, inference_parallelism="expert", batch_size=64)
    _, one = traced(batch_size=64)
    assert dep["rt_max_prefill_tokens"] == 8192 and dep["prefill_seqs"] == 64
    assert dep["prompt_tokens"] == 65_536 and dep["prefill_chunks"] == 8
    assert dep["prefill_rank_share"] == 16 / 64 and dep["prefill_passes"] == 2
    # one GPU has no ranks: its passes are its chunks
    assert one["prefill_passes"] == one["prefill_chunks"] == 8
    # what a pass reads on a rank: its layers, 423,708,672 less the other ranks' 3/4 x 402,653,184 = 121,718,784
    # bytes, and the head, 65,536,000 (the embedding is a lookup) - 187,254,784 bytes, twice, at H100's 3,350 GB/s
    # x the decode kernels' efficiency
    assert dep["gpu_weights_total_bytes"] == 187_254_784
    assert dep["gpu_bw_gb_s"] == 3350
    assert dep["prefill_weight_read_s"] == pytest.approx(
        2 * 187_254_784 / (3350e9 * dep["eff_decode_bw"]), rel=1e-12)
    # the all-gather / reduce-scatter latency once a layer and pass of the rank: 4 MoE layers x 2 passes
    assert dep["prefill_comm_s"] == pytest.approx(
        4 * (2 * dep["prefill_dep_latency_s"] + 65_536 * dep["prefill_dep_token_s"]), rel=1e-12)
    # a step's worth of prompt work is the rank's pass: prefill_ms over 2, not over 8
    assert dep["srv_chunk_s"] == pytest.approx(dep["prefill_ms"] / 1000 / 2, rel=1e-12)


def test_tensorrt_llm_gathers_fp8_hidden_states_for_fp8_weights():
    _, v = traced(num_gpus=4, inference_parallelism="expert", runtime="tensorrt-llm", quantization="fp8")
    # FP8 gather (1 byte) + bf16 reduce-scatter (2), one sequence's on NCCL's LL line (141 GB/s): 4 x 3/4 x 1024 x 3 / 141e9
    assert v["dep_gather_bytes"] == 1 and v["dep_proto"] == 1
    assert v["srv_comm_token_s"] == pytest.approx(4 * 0.75 * 1024 * 3 / 141e9, rel=1e-12)


def test_a_dense_model_with_expert_is_refused_naming_the_field():
    with pytest.raises(RequestError) as exc:
        vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "num_gpus": 2,
                                     "inference_parallelism": "expert"})
    field, message = exc.value.problems[0]
    assert field == "inference_parallelism"
    assert "dense" in message and "tensor or pipeline" in message


def test_a_runtime_without_attention_data_parallelism_is_refused():
    with pytest.raises(RequestError) as exc:
        vramplan.estimate_inference({**BASE, "runtime": "llama.cpp", "quantization": "q8_0", "num_gpus": 2,
                                     "inference_parallelism": "expert"})
    field, message = exc.value.problems[0]
    assert field == "inference_parallelism" and "vllm" in message and "tensorrt-llm" in message


def test_http_api_answers_422_and_the_cli_takes_the_choice(client, auth_headers):
    r = client.post(f"{PREFIX}/inference", headers=auth_headers,
                    json={"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "num_gpus": 2, "inference_parallelism": "expert"})
    assert r.status_code == 422 and "inference_parallelism" in r.text
    ok = client.post(f"{PREFIX}/inference", headers=auth_headers, json={**BASE, "num_gpus": 4, "inference_parallelism": "expert"})
    assert ok.status_code == 200, ok.text
    res = CliRunner().invoke(cli_main, ["inference", "--gpu", "h100_80", "--model", "mixtral-8x7b-instruct", "--num-gpus", "4",
                                        "--parallelism", "expert", "--runtime", "vllm", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["vram_usage"] > 0
    bad = CliRunner().invoke(cli_main, ["inference", "--gpu", "h100_80", "--model", "llama-3-8b-instruct", "--num-gpus", "2",
                                        "--parallelism", "expert"])
    assert bad.exit_code == 2 and "inference_parallelism" in bad.output


def test_the_deployment_planner_refuses_a_fixed_expert_split():
    with pytest.raises(RequestError) as exc:
        vramplan.plan({"llm_key": "mixtral-8x7b-instruct", "runtime": "vllm", "num_gpus": 4, "inference_parallelism": "expert",
                       "find": ["cheapest_deployment"], "concurrent_users": 8})
    field, message = exc.value.problems[0]
    assert field == "inference_parallelism" and "not searched by the deployment planner" in message


def test_other_planner_questions_keep_the_expert_split():
    # min_num_gpus estimates the request at each GPU count with its split. Mixtral 8x7B bf16 is 86.99 GiB, its routed
    # experts 32 layers x 8 x 3 x 4096 x 14336 = 45,097,156,608 params x 2 bytes = 84.0 GiB: one H100 cannot hold it;
    # on two, each holds 86.99 - 84.0 / 2 = 44.99 GiB.
    out = vramplan.plan({"gpu_key": "h100_80", "llm_key": "mixtral-8x7b-instruct", "runtime": "vllm", "quantization": "bf16",
                         "inference_parallelism": "expert", "find": ["min_num_gpus"]})
    assert out["min_num_gpus"]["value"] == 2
    assert out["min_num_gpus"]["estimate"]["memory_details"]["Base Model Weights"] == pytest.approx(44.99, abs=0.01)


def test_the_response_says_the_split_and_how_far_published_dep_runs_fell_below():
    out, _ = traced(num_gpus=4, inference_parallelism="expert")
    said = [a for a in out["assumptions"] if a.startswith("attention data parallelism + expert parallelism over 4 GPUs")]
    assert len(said) == 1 and "1/4 of the routed experts" in said[0] and "below such estimates" in said[0]
    one, _ = traced()
    assert not any("expert parallelism" in a for a in one["assumptions"])


def test_the_response_kv_pool_counts_every_rank():
    """The response's kv_pool is the deployment's: each of the 4 GPUs' pools holds pool bytes / 4,096 tokens (all
    heads of its own sequences), the deployment 4 times that; size_gb stays one GPU's pool."""
    out, dep = traced(num_gpus=4, inference_parallelism="expert")
    per_rank = int(dep["kv_pool_bytes"] / 4096)
    assert out["kv_pool"]["tokens"] == 4 * per_rank
    assert out["kv_pool"]["sequences_at_seq_length"] == 4 * (per_rank // 2048)
    assert out["kv_pool"]["size_gb"] == pytest.approx(dep["kv_pool_bytes"] / 2**30, abs=0.006)
