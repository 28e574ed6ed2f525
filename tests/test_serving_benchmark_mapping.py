"""How benchmarks/fidelity_serving.py reads TensorRT-LLM's perf-overview runs: the KV dtype their NVIDIA
ModelOpt checkpoints carry, and the max_batch_size / max_num_tokens trtllm-bench tunes for each dataset
(tensorrt_llm/bench/build/tuning.py). Each figure is worked out by hand here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import vramplan
from vramplan.estimate import trace_values

_spec = importlib.util.spec_from_file_location(
    "fidelity_serving", Path(__file__).resolve().parent.parent / "benchmarks" / "fidelity_serving.py")
fs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fs)


def _record(model: str, **over) -> dict:
    r = {"id": "t", "model": model, "runtime": "tensorrt-llm", "runtime_version": "1.0", "kv_cache_dtype": None,
         "weights_dtype": "fp4", "gpu_canonical": "B200-180GB", "num_gpus": 1, "tensor_parallel": 1,
         "pipeline_parallel": 1, "input_tokens": 1000, "output_tokens": 1000, "request_rate": "inf",
         "num_prompts": 3000, "benchmark_tool": "trtllm-bench throughput (offline, all requests queued)",
         "source": "https://github.com/NVIDIA/TensorRT-LLM/blob/x/docs/source/performance/perf-overview.md",
         "metrics": {"output_throughput_tok_s": 7007}}
    r.update(over)
    return r


def test_checkpoint_kv_dtype_follows_hf_quant_config():
    # nvidia/Llama-3.3-70B-Instruct-FP4 carries kv_cache_quant_algo FP8 (TensorRT-LLM's accuracy references list
    # it only as NVFP4 + FP8 KV) and kv dtype 'auto' takes it; the record states no KV dtype.
    assert fs._kv(_record("nvidia/Llama-3.3-70B-Instruct-FP4")) == ("fp8", fs.CHECKPOINT_KV_READING)
    # The Llama 3.1 8B FP8 checkpoint quantizes only the linear layers: bf16 KV, no reading.
    assert fs._kv(_record("nvidia/Llama-3.1-8B-Instruct-FP8", weights_dtype="fp8")) == (None, None)
    # A stated KV dtype wins, and is no reading.
    assert fs._kv(_record("nvidia/Llama-3.1-8B-Instruct-FP8", kv_cache_dtype="fp8")) == ("fp8", None)
    # vLLM runs are not read from the checkpoint (the source is TensorRT-LLM's loader).
    assert fs._kv(_record("nvidia/Qwen3-30B-A3B-FP4", runtime="vllm")) == (None, None)


def test_trtllm_bench_tuning_llama70b_nvfp4_b200():
    # Llama 3.3 70B (70.55e9 parameters, 80 layers, 8 KV heads of 128) in NVFP4 with an FP8 KV cache on one
    # B200 (180 GiB), 1000/1000:
    #   bytes per token = 2 x 80 x max(1, 8) x 128 x 1 = 163,840 B = 1.52588e-4 GiB
    #   engine = 70.55e9 x 0.5 / 2^30 = 32.853 GiB; cache = (180 - 32.853) x 0.95 = 139.79 GiB
    #   requests = 139.79 / (1.52588e-4 x 2000) = 458.1 -> raw batch 458.1 (pp 1)
    #   batch: 256 <= 458.1 < 1024 -> 128 x ceil(458.1 / 128) = 512
    #   tokens: 458.1 x (1 + 1000 / 1000) = 916.2 < 4096 -> max(2048, 256 x 4) = 2048
    body = {"gpu_key": "b200", "llm_key": "llama-3.3-70b-instruct", "quantization": "nvfp4", "runtime": "tensorrt-llm",
            "kv_cache_quantization": "fp8", "input_tokens": 1000, "output_tokens": 1000, "batch_size": 3000}
    assert fs.trtllm_bench_settings(body, 1, 1) == (512, 2048)


def test_trtllm_bench_tuning_llama8b_fp8_h200_short_requests():
    # Llama 3.1 8B (8.03e9, 32 layers, 8 KV heads of 128) in FP8 with a bf16 KV cache on one H200 (141 GiB), 128/128:
    #   bytes per token = 2 x 32 x 8 x 128 x 2 = 131,072 B = 1.2207e-4 GiB
    #   engine = 8.03e9 x 1 / 2^30 = 7.4785 GiB; cache = (141 - 7.4785) x 0.95 = 126.85 GiB
    #   requests = 126.85 / (1.2207e-4 x 256) = 4059 -> batch >= 1024: 256 x ceil(4059 / 256) = 256 x 16 = 4096
    #   tokens: min(4059 x 2, 32768) = 8118, in [4096, 8192) -> 512 x ceil(8118 / 512) = 512 x 16 = 8192
    body = {"gpu_key": "h200", "llm_key": "llama-3.1-8b-instruct", "quantization": "fp8", "runtime": "tensorrt-llm",
            "input_tokens": 128, "output_tokens": 128, "batch_size": 30000}
    assert fs.trtllm_bench_settings(body, 1, 1) == (4096, 8192)


def test_trtllm_bench_tuning_counts_deepseek_kv_as_its_config_says_not_as_mla():
    # trtllm-bench's ModelConfig knows no MLA: DeepSeek-R1's config.json has 128 KV heads and no head_dim, so the
    # head size is hidden_size // num_attention_heads = 7168 // 128 = 56. DEP8 (tp 8) on H200 (141 GiB), FP8 KV, 1024/1024:
    #   bytes per token = 2 x 61 x max(8, 128) x 56 x 1 = 874,496 B = 8.14444e-4 GiB (the latent cache: 35,136 B)
    #   engine = 671e9 x 1 / 2^30 = 624.92 GiB; cache = (141 x 8 - 624.92) x 0.95 = 477.93 GiB
    #   requests = 477.93 / (8.14444e-4 x 2048) = 286.5 -> batch: 256 <= 286.5 < 1024 -> 128 x ceil(2.24) = 384
    #   tokens: 286.5 x 2 = 573 < 4096 -> max(2048, 256 x 3) = 2048
    body = {"gpu_key": "h200", "llm_key": "deepseek-r1-0528", "quantization": "fp8", "runtime": "tensorrt-llm",
            "kv_cache_quantization": "fp8", "num_gpus": 8, "inference_parallelism": "expert",
            "input_tokens": 1024, "output_tokens": 1024, "batch_size": 3000}
    assert fs.trtllm_bench_settings(body, 8, 1) == (384, 2048)


def test_trtllm_bench_tuning_that_would_raise_leaves_the_defaults():
    # gpt-oss-120b at tuning.py's 2 bytes per element (MXFP4 is not in its table): 116.83e9 x 2 / 2^30 = 217.6 GiB,
    # more than one H200's 141 GiB -> calc_engine_setting raises, so such a run set both itself.
    body = {"gpu_key": "h200", "llm_key": "gpt-oss-120b", "quantization": "mxfp4", "runtime": "tensorrt-llm",
            "input_tokens": 1024, "output_tokens": 1024, "batch_size": 3000}
    assert fs.trtllm_bench_settings(body, 1, 1) is None


def test_perf_overview_record_maps_with_both_readings_printed():
    body, notes, why = fs.map_record(_record("nvidia/Llama-3.3-70B-Instruct-FP4"))
    assert why == ""
    assert body["kv_cache_quantization"] == "fp8"
    # worked out above; 512 is also in the guide's graph list, so every decode batch up to it replays a graph
    assert body["runtime_settings"] == {"max_num_seqs": 512, "max_prefill_tokens": 2048, "cuda_graph_max_seqs": 512}
    assert fs.CHECKPOINT_KV_READING in notes
    assert fs.TRTLLM_BENCH_READING.format(bs=512, tok=2048) in notes
    assert fs.TRTLLM_GRAPHS_READING.format(n=512) in notes
    # A trtllm-bench run from another source (its own settings unknown) keeps the profile's defaults.
    other = _record("nvidia/Llama-3.3-70B-Instruct-FP4", source="https://example.org/blog")
    assert "runtime_settings" not in fs.map_record(other)[0]


def test_bandwidth_bound_is_the_sequences_over_one_round_of_reads_at_peak_bandwidth():
    # Llama 3.1 8B FP8 on an H100 (3,350 GB/s), 1000/1000, at most 10 sequences: each round reads the weights
    # (6.98e9 linear parameters at 1 byte + the 525.3e6-parameter head at 2 bytes = 8.03e9 bytes) and every
    # sequence's bf16 cache at its mean context (1000 + 500 tokens x 131,072 bytes = 1.966e8 bytes):
    #   (8.03e9 + 10 x 1.966e8) / 3.35e12 = 2.984 ms a round -> 10 / 2.984 ms = 3,351 output tok/s at most
    body = {"gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "quantization": "fp8", "runtime": "tensorrt-llm",
            "input_tokens": 1000, "output_tokens": 1000, "batch_size": 3000, "runtime_settings": {"max_num_seqs": 10}}
    ceiling, n, bw = fs.bandwidth_bound(body)
    assert (n, bw) == (10, 3350)
    assert abs(ceiling - 3351) / 3351 < 0.005


def test_a_run_beyond_its_16_bit_ceiling_reads_every_run_of_its_checkpoint_with_an_8_bit_cache():
    # 1000/1000 on one H100 with a bf16 cache: ~267 sequences fit and the ceiling is ~14,700 tok/s; 15,220 measured
    # is beyond it, so that run - and the 128/128 run of the same checkpoint in the same source, which alone
    # would pass - are read with an FP8 cache. A run of another source is left alone.
    fast = _record("nvidia/Llama-3.1-8B-Instruct-FP8", id="fast", weights_dtype="fp8", gpu_canonical="H100-SXM-80GB",
                   metrics={"output_throughput_tok_s": 15220})
    short = dict(fast, id="short", input_tokens=128, output_tokens=128, metrics={"output_throughput_tok_s": 28312})
    elsewhere = dict(fast, id="elsewhere", source="https://example.org/other", metrics={"output_throughput_tok_s": 9000})
    readings = fs.kv_readings([short, fast, elsewhere])
    assert list(readings) == [(fast["source"], "nvidia/Llama-3.1-8B-Instruct-FP8")]
    assert "would cap fast at" in readings[(fast["source"], "nvidia/Llama-3.1-8B-Instruct-FP8")]
    for r in (short, fast):
        body, notes, _ = fs.map_record(r, readings)
        assert body["kv_cache_quantization"] == "fp8" and any("only an 8-bit cache" in n for n in notes)
    assert "kv_cache_quantization" not in fs.map_record(elsewhere, readings)[0]


def test_a_harness_that_set_an_8_bit_cache_set_it_for_the_tables_other_fp8_checkpoints():
    # The 8B FP8 checkpoint sets no KV quantization, yet its 1000/1000 H100 run (15,220 tok/s) is beyond the ~14,700 a
    # bf16 cache allows: the table's harness set an FP8 cache. The table's 70B FP8 run (nothing beyond its own 16-bit
    # ceiling) is read with it too; its 70B FP4 run (not FP8 weights; its checkpoint carries FP8 itself) gets no harness
    # reading, nor does a 70B FP8 run of another source.
    fast = _record("nvidia/Llama-3.1-8B-Instruct-FP8", id="fast", weights_dtype="fp8", gpu_canonical="H100-SXM-80GB",
                   metrics={"output_throughput_tok_s": 15220})
    big = _record("nvidia/Llama-3.3-70B-Instruct-FP8", id="big", weights_dtype="fp8", gpu_canonical="H200-SXM-141GB",
                  metrics={"output_throughput_tok_s": 2909})
    fp4 = _record("nvidia/Llama-3.3-70B-Instruct-FP4", id="fp4", metrics={"output_throughput_tok_s": 7007})
    other = dict(big, id="other", source="https://example.org/other")
    readings = fs.kv_readings([fast, big, fp4, other])
    assert set(readings) == {(fast["source"], "nvidia/Llama-3.1-8B-Instruct-FP8"), (big["source"], "nvidia/Llama-3.3-70B-Instruct-FP8")}
    assert readings[(big["source"], "nvidia/Llama-3.3-70B-Instruct-FP8")] == fs.HARNESS_READING.format(
        checkpoint="nvidia/Llama-3.1-8B-Instruct-FP8")
    body, notes, _ = fs.map_record(big, readings)
    assert body["kv_cache_quantization"] == "fp8" and fs.HARNESS_READING.format(checkpoint="nvidia/Llama-3.1-8B-Instruct-FP8") in notes
    assert not any("harness" in n for n in fs.map_record(fp4, readings)[1])
    assert "kv_cache_quantization" not in fs.map_record(other, readings)[0]
    # Without the 8B run nothing says the harness set a cache dtype: the 70B keeps its checkpoint's.
    assert fs.kv_readings([big, fp4, other]) == {}


def test_a_cell_of_the_source_table_that_no_16_bit_cache_explains_sets_the_tables_reading():
    # The developer guide's Llama 3.3 70B FP8 table on 2 x H200 (TP2): the folder holds its 1024/1024 cell, which a
    # 16-bit cache explains. The same table's 1024/8192 cell (SOURCE_CELLS) is 2,009 tok/s a GPU, 4,018 in all. Its
    # 16-bit ceiling, by hand: a GPU reads 68.45e9 linear parameters / 2 at 1 byte + the 1.0507e9-parameter head / 2 at
    # 2 bytes = 35.27e9 bytes a round, and each sequence's cache at its mean context (1024 + 4096 tokens x 80 layers x
    # 8 KV heads x 128 x 2 x 2 bytes / 2 GPUs = 838.9e6 bytes); with n sequences in the pool, n / ((35.27e9 + n x
    # 838.9e6) / 4.8e12) - 3,555 tok/s at the 69 it holds, below the 4,018 measured: the table ran an 8-bit cache.
    base = _record("nvidia/Llama-3.3-70B-Instruct-FP8", id="trtllm-devguide-LLaMAv3370B-H200-TP2-FP8-1024-1024",
                   weights_dtype="fp8", gpu_canonical="H200-SXM-141GB", num_gpus=2, tensor_parallel=2, input_tokens=1024,
                   output_tokens=1024, metrics={"output_throughput_tok_s": None, "output_throughput_tok_s_per_gpu": 2582})
    (cell,) = fs.source_cells([base])
    assert (cell["input_tokens"], cell["output_tokens"], cell["metrics"]["output_throughput_tok_s_per_gpu"]) == (1024, 8192, 2009)
    body = fs.map_record(cell)[0]
    ceiling, n, bw = fs.bandwidth_bound(body)
    weights = 68.45e9 / 2 + 1.0507e9 / 2 * 2
    cache = 5120 * 80 * 8 * 128 * 2 * 2 / 2
    assert bw == 4800 and abs(ceiling - n / ((weights + n * cache) / 4.8e12)) / ceiling < 0.01
    assert ceiling < 4018
    # gpt-oss in the same table is labelled "fp8" but its checkpoint is MXFP4, whose cache the guide leaves at
    # 'auto' on Hopper: the harness reading reaches FP8 checkpoints as mapped, not a table's label.
    oss = _record("openai/gpt-oss-120b", id="oss", weights_dtype="fp8 (table label; gpt-oss checkpoints are MXFP4)",
                  gpu_canonical="H200-SXM-141GB", metrics={"output_throughput_tok_s": None, "output_throughput_tok_s_per_gpu": 6798})
    readings = fs.kv_readings([base, oss])
    assert list(readings) == [(base["source"], "nvidia/Llama-3.3-70B-Instruct-FP8")]
    assert "1024-8192 (a cell of the same table" in readings[(base["source"], "nvidia/Llama-3.3-70B-Instruct-FP8")]
    body, notes, _ = fs.map_record(base, readings)
    assert body["kv_cache_quantization"] == "fp8"
    assert "kv_cache_quantization" not in fs.map_record(oss, readings)[0]
    # Without its base record the cell says nothing.
    assert fs.source_cells([oss]) == [] and fs.kv_readings([oss]) == {}


def test_enforce_eager_maps_to_no_captured_graph():
    # dstack's MI300X runs: benchmark_throughput.py ... --enforce-eager: vLLM captures no graph at all.
    r = _record("meta-llama/Llama-3.1-405B-FP8", runtime="vllm", runtime_version="0.6.3", weights_dtype="fp8",
                gpu_canonical="MI300X-192GB", num_gpus=8, tensor_parallel=8, input_tokens=2048, output_tokens=2048,
                request_rate=None, num_prompts=64, batch_size=64, benchmark_tool="benchmark_throughput.py",
                engine_flags="benchmark_throughput.py --tensor-parallel-size 8 --enforce-eager --num-scheduler-step 1",
                source="dstack")
    body, notes, why = fs.map_record(r)
    assert why == "" and body["runtime"] == "vllm-v0"
    assert body["runtime_settings"] == {"cuda_graph_max_seqs": 0}
    assert any("--enforce-eager" in n for n in notes)
    body, _, _ = fs.map_record({**r, "engine_flags": "benchmark_throughput.py --tensor-parallel-size 8"})
    assert "runtime_settings" not in body


def test_num_scheduler_steps_maps_to_the_host_work_once_every_n_steps():
    # dstack's Meta-FP8 MI300X runs: --enforce-eager --num-scheduler-step 15 (vLLM accepts the prefix of the flag).
    r = _record("meta-llama/Llama-3.1-405B-FP8", runtime="vllm", runtime_version="0.6.3", weights_dtype="fp8",
                gpu_canonical="MI300X-192GB", num_gpus=8, tensor_parallel=8, request_rate=None, num_prompts=64,
                batch_size=64, benchmark_tool="benchmark_throughput.py", source="dstack",
                engine_flags="benchmark_throughput.py --tensor-parallel-size 8 --enforce-eager --num-scheduler-step 15")
    body, notes, _ = fs.map_record(r)
    assert body["runtime_settings"] == {"cuda_graph_max_seqs": 0, "scheduler_steps": 15}
    body, _, _ = fs.map_record({**r, "engine_flags": "benchmark_throughput.py --num-scheduler-step 1"})
    assert "runtime_settings" not in body


def test_a_static_session_ran_its_whole_batch():
    # gptSessionBenchmark (TensorRT-LLM 0.5-0.6) runs one static batch with no queue: Llama 2 7B fp16 on an A100 80GB at
    # batch 60, 128 + 2048 tokens, needs 60 x 2176 tokens x 512 KiB (32 layers x 2 x 4096 x 2 bytes) = 63.75 GiB of cache,
    # more than 0.9 of the memory left after 12.55 GiB of weights holds, but all 60 ran: the pool is read as all of it.
    r = _record("meta-llama/Llama-2-7b-hf", runtime="tensorrt-llm", runtime_version="0.6.1", weights_dtype="fp16",
                kv_cache_dtype="fp16", gpu_canonical="A100 (variant not stated)", input_tokens=128, output_tokens=2048,
                batch_size=60, num_prompts=None, request_rate=None, benchmark_tool="cpp gptSessionBenchmark (static batch)",
                source="https://github.com/NVIDIA/TensorRT-LLM/blob/x/docs/source/performance.md")
    body, notes, why = fs.map_record(r)
    assert why == "" and body["batch_size"] == 60
    assert body["runtime_settings"]["gpu_memory_utilization"] == 1.0
    assert any("static session" in n for n in notes)
    out = fs.vramplan.estimate_inference(body)["serving"]
    assert out["load"] == "static_batch" and out["running_sequences"] == 60
    default = fs.vramplan.estimate_inference({k: v for k, v in body.items() if k != "runtime_settings"})["serving"]
    assert default["running_sequences"] < 60                     # the profile's 0.9 pool would have queued some
    # a batch the default pool holds is left alone: 16 sequences of 128 + 2048
    small, small_notes, _ = fs.map_record({**r, "batch_size": 16})
    assert "gpu_memory_utilization" not in small.get("runtime_settings", {})
    assert not any("static session" in n for n in small_notes)


def test_a_pool_the_source_states_pins_the_h100_runs_and_not_the_mi300x_ones():
    # dstack's 8xH100 runs set --max-model-len 91680, "supported by our setup": the pool of that deployment; the MI300X
    # runs copy the flag onto GPUs whose memory holds millions of tokens, and keep the pool their memory gives.
    h100 = _record("meta-llama/Llama-3.1-405B-FP8", runtime="vllm", runtime_version="0.6.3.post2.dev308+gb489fc3c",
                   weights_dtype="fp8", gpu_canonical="H100-SXM-80GB", num_gpus=8, tensor_parallel=8, input_tokens=2048,
                   output_tokens=2048, request_rate=None, num_prompts=64, batch_size=64,
                   benchmark_tool="vLLM benchmarks/benchmark_throughput.py",
                   engine_flags="benchmark_throughput.py --tensor-parallel-size 8 --max-model-len 91680 --num-scheduler-step 1",
                   source="https://github.com/dstackai/benchmarks/blob/x/comparison/h100sxm5_vs_mi300x/csv_data/t.csv")
    body, notes, why = fs.map_record(h100)
    assert why == "" and body["runtime_settings"] == {"kv_pool_tokens": 91680} == {"kv_pool_tokens": 5730 * 16}
    assert any("supported by our setup" in n for n in notes)
    mi300x = {**h100, "gpu_canonical": "MI300X-192GB"}
    body, notes, _ = fs.map_record(mi300x)
    assert "runtime_settings" not in body and not any("supported by our setup" in n for n in notes)


def test_tgi_launcher_flags_set_the_router_limits():
    # dstack's TGI runs on 8 x MI300X: --max-concurrent-requests 8192 lifts the router's limit of requests in flight
    # (the profile's 128) - all 256 of a burst run at once; --max-total-tokens sets the request limit (max_model_len),
    # --max-batch-prefill-tokens the prefill budget. The image sha-11d7af7 is a commit between v2.3.1 and v2.4.0: tgi-v2.
    r = _record("meta-llama/Llama-3.1-405B-Instruct", runtime="tgi", runtime_version="sha-11d7af7-rocm",
                weights_dtype="bf16", gpu_canonical="MI300X-192GB", num_gpus=8, tensor_parallel=8, input_tokens=80,
                output_tokens=58, request_rate=None, num_prompts=256, batch_size=256, source="dstack",
                benchmark_tool="modified vLLM benchmark_serving.py",
                engine_flags="text-generation-launcher --num-shard 8 --sharded true --max-concurrent-requests 8192 "
                             "--max-total-tokens 130000")
    body, notes, why = fs.map_record(r)
    assert why == "" and body["runtime"] == "tgi-v2"
    assert body["runtime_settings"] == {"max_num_seqs": 8192, "max_model_len": 130000}
    assert "--max-concurrent-requests 8192: runtime_settings max_num_seqs" in notes
    body, _, _ = fs.map_record({**r, "engine_flags": "text-generation-launcher --max-batch-prefill-tokens=16384"})
    assert body["runtime_settings"] == {"max_prefill_tokens": 16384}
    body, _, _ = fs.map_record({**r, "engine_flags": "text-generation-launcher --num-shard 8"})
    assert "runtime_settings" not in body
    # a release of 3.x, or none stated, is the current profile
    body, _, _ = fs.map_record({**r, "runtime_version": "3.3.6", "engine_flags": None})
    assert body["runtime"] == "tgi"
    body, _, _ = fs.map_record({**r, "runtime_version": "2.4.1", "engine_flags": None})
    assert body["runtime"] == "tgi-v2"


def test_the_dstack_tgi_launch_takes_the_prompt_limit_its_long_prompts_need():
    # The source starts TGI with --max-input-tokens 125000 beside the record's flags (its 10,000-token prompts need more
    # than 2.x's 4,095): 2.x's prefill budget is then 125,000 + 50, so a burst of 256 x 80-token prompts (20,480
    # tokens) is prefilled in one batch - where 4,145 would take ceil(20,480 / 4,145) = 5.
    source = next(iter(fs.TGI_LAUNCH_READINGS)) + "tgi/data/result_tgi_short.csv"
    r = _record("meta-llama/Llama-3.1-405B-Instruct", runtime="tgi", runtime_version="sha-11d7af7-rocm",
                weights_dtype="bf16", gpu_canonical="MI300X-192GB", num_gpus=8, tensor_parallel=8, input_tokens=80,
                output_tokens=58, request_rate=None, num_prompts=256, batch_size=256, source=source,
                benchmark_tool="modified vLLM benchmark_serving.py",
                engine_flags="text-generation-launcher --num-shard 8 --sharded true --max-concurrent-requests 8192 "
                             "--max-total-tokens 130000")
    body, notes, why = fs.map_record(r)
    assert body["runtime_settings"] == {"max_num_seqs": 8192, "max_input_tokens": 125000, "max_model_len": 130000}
    assert any("launched with --max-input-tokens 125000" in n for n in notes)
    tv = trace_values(vramplan.estimate_inference({**body, "trace": True}))
    assert tv["prefill_budget"] == 125000 + 50


def test_perf_overview_graphs_stop_at_the_largest_listed_size_within_max_batch_size():
    # llm_options.yml lists [1, 2, 4, ..., 256, 384, 512, 1024, 2048, 4096, 8192]; the engine skips sizes above its
    # max_batch_size, so a run tuned to 768 sequences replays graphs up to 512 and 2304 up to 2048; 384 is listed.
    sizes = fs.TRTLLM_GUIDE_GRAPH_SIZES
    assert [max(b for b in sizes if b <= n) for n in (768, 2304, 384, 96)] == [512, 2048, 384, 64]
    # DeepSeek R1 on 8 x H200 (DEP8): trtllm-bench tunes 384 a rank, which the list holds.
    r = _record("deepseek-ai/DeepSeek-R1-0528", weights_dtype="fp8", kv_cache_dtype="fp8", gpu_canonical="H200-SXM-141GB", num_gpus=8,
                tensor_parallel=8, input_tokens=1024, output_tokens=1024, id="x-DEP8-y",
                source="https://github.com/NVIDIA/TensorRT-LLM/blob/x/docs/source/developer-guide/perf-overview.md")
    body, notes, why = fs.map_record(r)
    assert why == "" and body["runtime_settings"]["max_num_seqs"] == 384
    assert body["runtime_settings"]["cuda_graph_max_seqs"] == 384


def test_a_drained_burst_runs_its_longest_answer_on_rounds_that_shrink():
    # 16 answers, 936 tokens in all, the longest 85; the first tokens come after 200 ms; a round costs 44 ms for one
    # sequence and 47 ms for all 16, so c = (47 - 44) / 15 = 0.2 ms a sequence and a = 44 - 0.2 = 43.8 ms.
    # After the first tokens the longest answer runs 84 rounds: a x 84 = 3679.2 ms, plus c x every later token of
    # every answer (936 - 16 = 920) = 184 ms -> 200 + 3679.2 + 184 = 4063.2 ms.
    assert abs(fs.drained_burst_ms(200, 47, 44, 16, 85, 936) - 4063.2) < 1e-9
    # Equal answers of 60 (960 tokens) never drain: 200 + 59 rounds at the 16-sequence 47 ms = 2973 ms.
    assert abs(fs.drained_burst_ms(200, 47, 44, 16, 60, 960) - 2973.0) < 1e-9


def test_the_one_prompt_run_of_a_source_bounds_its_bursts_longest_answer():
    src = "https://github.com/dstackai/benchmarks/blob/x/result_vllm_short.csv"
    one = {"id": "one", "source": src, "num_prompts": 1, "output_tokens": None, "total_output_tokens": 85}
    burst = {"id": "b16", "source": src, "num_prompts": 16, "output_tokens": None, "total_output_tokens": 936}
    fixed = {"id": "f", "source": "other", "num_prompts": 1, "output_tokens": 128, "total_output_tokens": 128}
    assert fs.first_answers([one, burst, fixed]) == {src: 85}
    out = {"serving": {"running_sequences": 16, "itl_ms": 47.0, "ttft_ms": 200.0}}
    body = {"batch_size": 16, "output_tokens": 58}
    # A fixed answer length, a source without a one-prompt run, and a first answer no longer than the mean keep the
    # estimate's own throughput (None: nothing to re-read, and no second estimate is made).
    assert fs.longest_answer_throughput(dict(burst, output_tokens=58), body, out, {src: 85}) is None
    assert fs.longest_answer_throughput(burst, body, out, {}) is None
    assert fs.longest_answer_throughput(burst, body, out, {src: 58}) is None
    # A burst the runtime did not take at once (fewer running than sent) is not a drained burst either.
    queued = {"serving": dict(out["serving"], running_sequences=12)}
    assert fs.longest_answer_throughput(burst, body, queued, {src: 85}) is None
