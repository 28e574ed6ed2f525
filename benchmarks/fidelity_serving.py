"""Serving fidelity: every record of ../shared/calibration/published-serving.yaml through the public API.

Each record is mapped onto an inference request as the calibration folder's README says, then the
estimate's ``serving`` object is compared with the metrics the record reports. It prints every case's
error ((estimate - measured) / measured), the median and 90th-percentile |error| per runtime and per
metric, and every record it could not map with the reason (they count as misses, never dropped).

    .venv/bin/python benchmarks/fidelity_serving.py [--calibration DIR] [--markdown] [--cases]

Mapping (README of the calibration folder; where a source is ambiguous the physically consistent
reading is taken and printed beside the case):

- ``concurrency: C`` -> a closed loop of ``concurrent_users: C`` (batch 1), unless the run has no more
  prompts than C: then all are in flight at once and none follows, one burst of num_prompts;
  ``request_rate: r`` -> an open loop at r requests/s.
- a static batch, and offline runs whose prompts are all submitted at once (request rate inf, or a
  burst of ``num_prompts``) -> one burst of ``batch_size`` = num_prompts (1000 where not stated) from
  one client: the engine runs it as a static batch when it fits the runtime's cap, else as a saturated
  continuous batch (the same as ``concurrent_users`` = num_prompts).
- a record that names no checkpoint (``model: null``) is read as the checkpoint its source's own deployment
  guide serves, where there is one (NAMED_MODELS), and says so beside the case.
- ``runtime: nim`` is TensorRT-LLM; ``tensor_parallel`` -> tensor parallelism over num_gpus; pipeline
  parallelism likewise; a run named DEP (attention data parallelism + expert parallelism), and a TensorRT-LLM
  1.0 MoE run whose note sets enable_attention_dp and --ep, -> ``inference_parallelism: expert``.
- output throughput per GPU x GPUs = the deployment's; lengths "~20000 (+/-15%)" at their stated value;
  a burst with a variable answer length (sonnet) at its mean (total output tokens / prompts), its throughput
  over the time its longest answer takes - at least the answer of the source's one-prompt run, whose seeded
  prompt opens every burst - on rounds that drain as the shorter answers end; ShareGPT (variable lengths, no
  totals) cannot be mapped.
- metrics compared: output (or total) throughput, TTFT, ITL (ITL mean, else TPOT mean, else medians),
  llama.cpp prompt / generation tokens/s, and a static batch's or single request's end-to-end latency.
- a record that does not state its KV cache dtype is read with the checkpoint's (16-bit unless its
  quantization config says FP8), unless that reading is physically impossible: when 16-bit keys and
  values would cap the run's output below what it measured - the sequences the pool holds (at the
  larger KV memory fraction the source names) decoding with nothing else to do, reading the weights and
  their caches at the GPU's full memory bandwidth - the run can only have used an 8-bit cache
  (``bandwidth_bound``), and it is read so.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

import vramplan
from vramplan.catalog import get_catalog
from vramplan.estimate import trace_values

HERE = Path(__file__).resolve().parent
DEFAULT_CAL = HERE.parent.parent / "shared" / "calibration"

MODELS = {
    "meta-llama/Llama-2-7b-hf": "llama-2-7b", "meta-llama/Llama-2-70b-hf": "llama-2-70b",
    "codellama/CodeLlama-7b-hf": "llama-2-7b",  # same architecture (vocabulary 32016 vs 32000)
    "meta-llama/Llama-3.1-8B-Instruct": "llama-3.1-8b-instruct", "meta-llama/Meta-Llama-3.1-8B-Instruct": "llama-3.1-8b-instruct",
    "nvidia/Llama-3.1-8B-Instruct-FP8": "llama-3.1-8b-instruct", "meta-llama/Llama-3.1-70B-Instruct": "llama-3.1-70b-instruct",
    "nvidia/Llama-3.3-70B-Instruct-FP8": "llama-3.3-70b-instruct", "nvidia/Llama-3.3-70B-Instruct-FP4": "llama-3.3-70b-instruct",
    "meta-llama/Llama-3.1-405B-FP8": "llama-3.1-405b-fp8", "meta-llama/Llama-3.1-405B-Instruct": "llama-3.1-405b-instruct",
    "amd/Llama-3.1-405B-Instruct-FP8-KV": "llama-3.1-405b-instruct", "nvidia/Llama-3.1-405B-Instruct-FP8": "llama-3.1-405b-instruct",
    "openai/gpt-oss-20b": "gpt-oss-20b", "openai/gpt-oss-120b": "gpt-oss-120b",
    "nvidia/Qwen3-235B-A22B-FP8": "qwen3-235b-a22b", "nvidia/Qwen3-30B-A3B-FP4": "qwen3-30b-a3b",
    "nvidia/Llama-4-Maverick-17B-128E-Instruct-FP8": "llama-4-maverick-17b-128e-instruct",
    "deepseek-ai/DeepSeek-R1-0528": "deepseek-r1-0528",
}
#: Records whose ``model`` is null (the source names no checkpoint), by ``model_name_in_source``: the
#: checkpoint the source's own deployment guide serves, the catalog entry estimated, and the reading.
NAMED_MODELS = {
    "Nemotron Nano 30B (FP8, TP=2, 2 GPUs)": (
        "nvidia-nemotron-3-nano-30b-a3b-fp8",
        "checkpoint read from Vultr's Nemotron Nano guide (docs.vultr.com/inference-cookbook/cuda/model-guides/nemotron-nano): "
        "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-FP8, which keeps its 6 attention layers and the 6 Mamba layers before them "
        "in BF16 and states an FP8 KV cache, which vLLM's default cache dtype takes (the catalog entry's "
        "quantization_config; resolve_kv_cache_dtype_string, PR #29980, Dec 2025, before 0.16)"),
    "Nemotron Super 49B (FP8, TP=1, 1 GPU)": (
        "llama-3.3-nemotron-super-49b-v1",
        "checkpoint read from Vultr's Nemotron Super guide (docs.vultr.com/inference-cookbook/cuda/model-guides/nemotron-super-49b): "
        "nvidia/Llama-3_3-Nemotron-Super-49B-v1_5-FP8, estimated with v1's architecture (v1.5's full config.json was not "
        "found; its first 10 block_configs, in NVIDIA NeMo Automodel's test slice, equal v1's)"),
}
GPUS = {
    "H200-SXM-141GB": "h200", "H100-SXM-80GB": "h100_80", "H100-80GB (form factor not stated)": "h100_80",
    "H100 (variant not stated)": "h100_80", "B200-180GB": "b200", "B200 (HGX)": "b200", "GB200-192GB": "gb200",
    "RTX-PRO-6000-Blackwell-Server": "rtx_pro_6000", "L40S-48GB": "l40s", "A100 (variant not stated)": "a100_80",
    "A100-80GB (form factor not stated)": "a100_80", "MI300X-192GB": "mi300x", "RTX4090-24GB": "rtx_4090",
}
#: Where the GPU key reads a variant the source does not state.
GPU_READINGS = {"A100 (variant not stated)": "A100 read as SXM 80GB", "H100 (variant not stated)": "H100 read as SXM",
                "H100-80GB (form factor not stated)": "H100 read as SXM"}


#: TensorRT-LLM's A100 / L40S tables say "out tok/s" where the H100 table of the same page says "out tok/s/GPU";
#: read per GPU, the only reading under which tensor-parallel rows agree with the single-GPU ones.
PER_GPU_READING = "'out tok/s' of the A100/L40S tables read per GPU, like the H100 table's"


def _weights(r: dict[str, Any]) -> tuple[str | None, str | None]:
    """(quantization, reading) from the record's weights dtype."""
    raw = str(r.get("weights_dtype") or "").lower()
    model = r.get("model") or ""
    if "gpt-oss" in model:
        return "mxfp4", "gpt-oss checkpoints hold MoE weights in MXFP4 whatever the table label"
    if raw.startswith("fp8"):
        return "fp8", None
    if raw.startswith("fp4"):
        return "nvfp4", "FP4 on Blackwell read as NVFP4"
    if raw in ("f16", "fp16") or raw.startswith("fp16"):
        return "fp16", None
    if raw.startswith("q8_0"):
        return "q8_0", None
    if raw.startswith("bf16"):
        return "bf16", None
    if not raw:
        return "bf16", "weights dtype not stated: the checkpoint's bf16"
    return None, None


#: NVIDIA ModelOpt checkpoints whose hf_quant_config.json sets ``kv_cache_quant_algo: FP8``. TensorRT-LLM's PyTorch
#: backend with ``KvCacheConfig(dtype="auto")`` (what trtllm-bench leaves) takes the KV dtype from the checkpoint
#: (tensorrt_llm/_torch/pyexecutor/_util.py: 1 byte per element when quant_config.quant_mode.has_fp8_kv_cache()).
#: Source: TensorRT-LLM's accuracy tests load these checkpoints with the default KvCacheConfig and assert
#: ``kv_cache_quant_algo == QuantAlgo.FP8`` (Llama 4 Maverick FP8, tests/integration/defs/accuracy/test_llm_api_pytorch.py)
#: or look their reference up under ``kv_cache_quant_algo: FP8`` (references/mmlu.yaml, gsm8k.yaml: Llama 3.3 70B
#: NVFP4, Qwen3-30B-A3B NVFP4, Qwen3-235B-A22B FP8), matched exactly by accuracy_core.get_hypothesis_testing_params.
#: The Llama 3.1 8B / 3.3 70B / 3.1 405B FP8 checkpoints do not: their model cards say only the linear operators'
#: weights and activations are quantized, and the same tests find them under ``quant_algo: FP8`` with no KV entry
#: (the 8B test sets ``KvCacheConfig(dtype="fp8")`` itself to get an FP8 cache). A table whose runs of them only an
#: 8-bit cache explains set it in its harness (kv_readings, HARNESS_READING).
CHECKPOINT_FP8_KV = {
    "nvidia/Llama-3.3-70B-Instruct-FP4", "nvidia/Qwen3-30B-A3B-FP4", "nvidia/Qwen3-235B-A22B-FP8",
    "nvidia/Llama-4-Maverick-17B-128E-Instruct-FP8",
}
CHECKPOINT_KV_READING = ("KV dtype not stated: the checkpoint's hf_quant_config sets kv_cache_quant_algo FP8 and "
                         "TensorRT-LLM's kv dtype 'auto' takes it: fp8 KV cache")


def _kv(r: dict[str, Any]) -> tuple[str | None, str | None]:
    """(KV cache quantization, reading) from the record's KV dtype, else from its checkpoint."""
    raw = str(r.get("kv_cache_dtype") or "").lower()
    if raw.startswith("fp8"):
        return "fp8", None
    if not raw and r.get("model") in CHECKPOINT_FP8_KV and r.get("runtime") in ("tensorrt-llm", "nim"):
        return "fp8", CHECKPOINT_KV_READING
    return None, None


#: trtllm-bench (``throughput`` without ``--max_batch_size`` / ``--max_num_tokens``, as NVIDIA's perf-overview runs it)
#: picks both from the dataset: tensorrt_llm/bench/build/tuning.py calc_engine_setting / finetune_setting.
TRTLLM_BENCH_READING = "trtllm-bench tunes max_batch_size {bs} and max_num_tokens {tok} to the dataset (bench/build/tuning.py)"
#: tuning.py BYTES_PER_ELEM by QuantAlgo (NO_QUANT 2, FP8 1, NVFP4 0.5; anything else 2).
_BENCH_BYTES = {"fp8": 1.0, "nvfp4": 0.5}


def trtllm_bench_settings(body: dict[str, Any], tp: int, pp: int) -> tuple[int, int] | None:
    """(max_batch_size, max_num_tokens) that trtllm-bench's tuning sets for this model, mapping and dataset.

    calc_engine_setting: KV bytes per token = 2 x attention layers x max(tp, kv_heads) x head size x KV bytes (its
    own count from config.json, bench/build/dataclasses.py ModelConfig: head size = head_size / head_dim /
    attention_head_dim, else hidden_size // num_attention_heads; attention layers = num_hidden_layers, or the
    hybrid_override_pattern's '*' and a Mamba-cache term for Nemotron-H, which no TensorRT-LLM record runs and
    this does not emulate. It knows no MLA: DeepSeek's 128 KV heads x 7168 // 128 = 56 count
    874,496 B a token at 1 byte where the latent cache holds 35,136); the memory
    for the KV cache = (device memory x GPUs - parameters x weight bytes) x 0.95; requests = that / (bytes per
    token x (ISL + OSL)). finetune_setting: raw batch = min(requests, 4096) / pp; raw tokens =
    min(raw batch x (1 + ISL / OSL), 32768); the batch rounds up to 32 (under 256, at least 64), 128 (under
    1024) or 256; the tokens to 256 (under 4096, at least 2048), 512 (under 8192) or 1024. None where that
    tuning raises (the parameters at its bytes per element exceed the GPUs' memory, e.g. MXFP4, which it counts
    at 2 bytes): such a run must have set both itself, and the profile's defaults stand.
    """
    model = next(m for m in vramplan.list_models() if m["key"] == body["llm_key"])
    gpu = next(g for g in vramplan.list_gpus() if g["key"] == body["gpu_key"])
    config = get_catalog().models.get(body["llm_key"]).data.get("config") or {}
    config = {**config, **(config.get("text_config") or {})}  # its AliasPath("text_config", ...) fallbacks
    kv_heads = config.get("num_key_value_heads") or model["num_key_value_heads"]
    head_size = next((config[k] for k in ("head_size", "head_dim", "attention_head_dim") if config.get(k)),
                     model["hidden_size"] // model["num_attention_heads"])
    kv_bytes = 1.0 if body.get("kv_cache_quantization") == "fp8" else 2.0  # BYTES_PER_ELEM[kv_cache_quant_algo], else 2
    byte_per_token = 2 * model["num_layers"] * max(tp, kv_heads) * head_size * kv_bytes / 2**30
    engine_gib = model["params_b"] * 1e9 * _BENCH_BYTES.get(body["quantization"], 2.0) / 2**30
    if engine_gib >= gpu["memory"] * tp * pp:
        return None
    cache_gib = (gpu["memory"] * tp * pp - engine_gib) * 0.95
    requests = cache_gib / (byte_per_token * (body["input_tokens"] + body["output_tokens"]))
    raw_bs = min(requests, 4096) / pp
    raw_tok = min(raw_bs * (1 + body["input_tokens"] / body["output_tokens"]), 32768)
    bs = max(64, 32 * math.ceil(raw_bs / 32)) if raw_bs < 256 else 128 * math.ceil(raw_bs / 128) if raw_bs < 1024 \
        else 256 * math.ceil(raw_bs / 256)
    tok = max(2048, 256 * math.ceil(raw_tok / 256)) if raw_tok < 4096 else 512 * math.ceil(raw_tok / 512) if raw_tok < 8192 \
        else 1024 * math.ceil(raw_tok / 1024)
    return bs, tok


#: TensorRT-LLM perf-overview.md: "In many cases, we also use a higher KV cache percentage by setting
#: --kv_cache_free_gpu_mem_fraction 0.95" - the bound takes the larger pool.
BOUND_MEMORY_FRACTION = 0.95
BOUND_READING = ("KV dtype not stated: 16-bit keys and values would cap {id} at {bound:,.0f} output tok/s ({n} sequences "
                 "in a pool of {frac} of free memory, decoding alone, weights and caches read at the full {bw:,.0f} GB/s), "
                 "below the {measured:,.0f} it measured: only an 8-bit cache is consistent, for every run of this checkpoint "
                 "in this source - fp8 KV cache")


def bandwidth_bound(body: dict[str, Any]) -> tuple[float, int, float] | None:
    """(output tok/s ceiling, sequences, GB/s) of a request as it stands: the sequences its KV pool admits
    (at BOUND_MEMORY_FRACTION where the runtime sizes the pool from free memory) decoding with no prompt
    work, no overhead and no compute, each round reading one GPU's weights and their caches at the mean
    context at the GPU's peak bandwidth. No run can exceed it; None for pipelines (micro-batches)."""
    probe = dict(body, trace=True, runtime_settings={**body.get("runtime_settings", {}),
                                                     "gpu_memory_utilization": BOUND_MEMORY_FRACTION})
    v = trace_values(vramplan.estimate_inference(probe))
    if v.get("pp", 1) != 1 or not v.get("srv_max_running"):
        return None
    n = int(v["srv_max_running"])
    bw = float(v["gpu_bw_gb_s"])
    round_s = (v["decode_weight_bytes"] + n * v["decode_kv_seq_bytes"]) / (bw * 1e9)
    return n / round_s, n, bw


def _measured_output_tps(r: dict[str, Any]) -> float | None:
    m = r["metrics"]
    if m.get("output_throughput_tok_s") is not None and "not explicitly per-GPU or total" not in str(r.get("caveats")):
        return float(m["output_throughput_tok_s"])
    if m.get("output_throughput_tok_s_per_gpu") is not None:
        return float(m["output_throughput_tok_s_per_gpu"]) * (r.get("num_gpus") or 1)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    m = re.match(r"^\s*~?\s*([\d.]+)", str(value or ""))
    return float(m.group(1)) if m else None


#: KV pools a source states for its deployment, in tokens: (source repository, GPU, checkpoint, the flag that says it) ->
#: (tokens a GPU's pool holds, the reading). vLLM refuses a max_model_len its pool cannot hold ("The model's max seq len
#: (...) is larger than the maximum number of tokens that can be stored in KV cache (...)", V0 worker.py
#: raise_if_cache_size_invalid), so a max_model_len set below the model's context to what "our setup supports" is the
#: pool: runtime_settings kv_pool_tokens (as --num-gpu-blocks-override would pin it).
LOGGED_POOLS = {
    ("github.com/dstackai/benchmarks", "H100-SXM-80GB", "meta-llama/Llama-3.1-405B-FP8", "--max-model-len 91680"): (
        91680, "KV pool from the source: dstack's 8xH100 README (nvidia/8xh100/README.md, the same vLLM build) runs with "
               "\"max model length (91680) supported by our setup\" - below the model's 131,072, which vLLM refuses beyond "
               "its pool, and 5,730 blocks of 16, the count its refusal prints: a pool of 91,680 tokens per GPU "
               "(kv_pool_tokens), where the estimate's memory gives 212,027 (docs/FIDELITY.md)"),
}


def _logged_pool(r: dict[str, Any]) -> tuple[int, str] | None:
    """(tokens, reading) where the record's source states its deployment's KV pool (LOGGED_POOLS)."""
    for (repo, gpu, model, flag), found in LOGGED_POOLS.items():
        if repo in str(r.get("source")) and r.get("gpu_canonical") == gpu and r.get("model") == model \
                and flag in str(r.get("engine_flags")):
            return found
    return None


#: A record whose id names DEP (TensorRT-LLM's developer-guide tables: "DEP4", "DEP8") ran attention data parallelism
#: with expert parallelism over all its GPUs.
DEP_READING = "DEP{n}: attention data parallelism + expert parallelism over {n} GPUs (inference_parallelism expert)"
#: TensorRT-LLM 1.0 perf-overview MoE runs: "MoE: enable_attention_dp true, --ep set", but the page's YAML nests
#: enable_attention_dp under cuda_graph_config (which forbids extra keys, llmapi/llm_args.py CudaGraphConfig), so it is
#: ambiguous. Read as DEP: the later developer guide labels the same Maverick H200 run DEP8 (4,146 tok/s/GPU = 33.2 k,
#: against 1.0's 31,782 "TP8"), and only DEP's per-rank weights (all but the experts on every GPU) and full-head KV
#: per rank leave H100 the small pool that its 3.3x gap to H200 needs: read as DEP8 the estimate's H100 / H200 ratio is
#: 0.29 against the measured 0.30 (Qwen3-235B 0.69 against 0.63), read as TP8 0.91 (0.83).
V1_DEP_READING = ("MoE run with enable_attention_dp and --ep (the 1.0 YAML nests it under cuda_graph_config, a "
                  "typo: that section is a StrictBaseModel, which refuses a field it does not have, so the YAML as "
                  "printed would not load): read as DEP{n} - attention data parallelism + expert parallelism "
                  "(inference_parallelism expert), as the developer guide labels Maverick H200")


def _attention_dp(r: dict[str, Any], model: str) -> str:
    """The reading that a multi-GPU record ran attention data parallelism + expert parallelism, or ''."""
    n = int(r.get("num_gpus") or 1)
    if re.search(r"-DEP\d+-", str(r.get("id"))):
        return DEP_READING.format(n=n)
    moe = next((m.get("moe") for m in vramplan.list_models() if m["key"] == model), False)
    if moe and "enable_attention_dp true" in str(r.get("runtime_note")) and r.get("expert_parallel"):
        return V1_DEP_READING.format(n=n)
    return ""


#: text-generation-launcher flags -> the tgi profiles' constants they set: the router's limit of requests in flight
#: (the profile's max_num_seqs, default 128), the prefill batch's token budget and the request limits (a prompt's
#: --max-input-tokens, prompt + answer --max-total-tokens; 2.x's prefill budget follows the first, + 50).
TGI_FLAGS = {"--max-concurrent-requests": "max_num_seqs", "--max-batch-prefill-tokens": "max_prefill_tokens",
             "--max-input-tokens": "max_input_tokens", "--max-total-tokens": "max_model_len"}

#: TGI docker images named by a commit rather than a release: the release line the commit belongs to (git log of
#: huggingface/text-generation-inference) - a 2.x image runs the tgi-v2 profile.
TGI_IMAGE_COMMITS = {"sha-11d7af7": "commit 11d7af73 of 4 October 2024, between v2.3.1 and v2.4.0"}

#: Launch flags a source gives beside the record's engine_flags (source prefix -> (flags, reading)).
TGI_LAUNCH_READINGS = {
    "https://github.com/dstackai/benchmarks/blob/06c957ab51572ca18db9c1f4bb254a9eb86df4d7/amd/tgi_vs_vllm/": (
        "--max-input-tokens 125000",
        "launched with --max-input-tokens 125000 beside the record's flags: the source's dev environment "
        "(amd/tgi_vs_vllm/tgi/.dstack.yml) starts text-generation-launcher with it, its task file names the flag with an "
        "unset variable ($MAX-INPUT-TOKEN), and its long-sequence runs send 10,000-token prompts, which 2.x refuses past "
        "max_input_tokens (4,095 unset) - so the prefill budget is 125,050 (max_input_tokens + 50): a burst's prompts "
        "are prefilled in one batch"),
}


#: The decode batch sizes the perf-overview runs capture as CUDA graphs, padding on: every revision's llm_options.yml
#: (docs/source/performance/perf-overview.md at 1.0, docs/source/developer-guide/perf-overview.md later) lists
#: cuda_graph_config batch_sizes [1, 2, 4, ..., 256, 384, 512, 1024, 2048, 4096, 8192]. The engine skips the sizes above
#: its max_batch_size (model_engine.py warmup), so larger decode batches - and, as everywhere, steps that carry a
#: prompt - run eagerly.
TRTLLM_GUIDE_GRAPH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 1024, 2048, 4096, 8192)
TRTLLM_GRAPHS_READING = ("llm_options.yml captures decode graphs up to 8192 sequences, padding on; the largest at or below "
                         "max_batch_size is {n} (cuda_graph_max_seqs)")


def map_record(r: dict[str, Any], fp8_kv: dict[tuple[str, str], str] | None = None) -> tuple[dict[str, Any] | None, list[str], str]:
    """(request body, readings taken, reason when it cannot be mapped). ``fp8_kv`` maps (source, checkpoint) to the
    reading that makes every run of that checkpoint in that source an 8-bit-cache run (``kv_readings``)."""
    notes: list[str] = []
    model = MODELS.get(r.get("model") or "")
    if model is None and not r.get("model") and r.get("model_name_in_source") in NAMED_MODELS:
        model, reading = NAMED_MODELS[r["model_name_in_source"]]
        notes.append(reading)
    if model is None:
        return None, notes, f"model {r.get('model') or r.get('model_name_in_source')!r} is not in the catalog"
    gpu = GPUS.get(r.get("gpu_canonical") or "")
    if gpu is None:
        return None, notes, f"GPU {r.get('gpu_canonical')!r} is not in the catalog"
    if "not explicitly per-GPU or total" in str(r.get("caveats")) and (r.get("num_gpus") or 1) > 1:
        notes.append(PER_GPU_READING)
    if r["gpu_canonical"] in GPU_READINGS:
        notes.append(GPU_READINGS[r["gpu_canonical"]])
    quant, reading = _weights(r)
    if quant is None:
        return None, notes, f"weights dtype {r.get('weights_dtype')!r} has no matching format"
    if reading:
        notes.append(reading)
    runtime = {"nim": "tensorrt-llm"}.get(r["runtime"], r["runtime"])
    version = str(r.get("runtime_version") or "")
    if runtime == "tensorrt-llm" and re.match(r"^0\.[0-7]\b", version):
        runtime = "tensorrt-llm-mmha"
        notes.append(f"TensorRT-LLM {version} predates the XQA kernel: profile tensorrt-llm-mmha")
    if runtime == "vllm" and re.match(r"^0\.[0-7]\b", version):
        runtime = "vllm-v0"
        notes.append(f"vLLM {version.split()[0]} runs the V0 engine (V1 is the default from 0.8): profile vllm-v0")
    flags = str(r.get("engine_flags") or "")
    if runtime == "tgi":
        image = next((c for c in TGI_IMAGE_COMMITS if c in version), None)
        if image or re.match(r"^2\.", version):
            runtime = "tgi-v2"
            notes.append(f"TGI image {image} is {TGI_IMAGE_COMMITS[image]}: profile tgi-v2" if image
                         else f"TGI {version.split()[0]}: profile tgi-v2")
        launch = next((v for k, v in TGI_LAUNCH_READINGS.items() if str(r.get("source")).startswith(k)), None)
        if launch:
            flags = f"{flags} {launch[0]}"
            notes.append(launch[1])
    if "torch.compile" in flags:
        return None, notes, "torch.compile with a static cache is not modelled"
    body: dict[str, Any] = {"gpu_key": gpu, "llm_key": model, "quantization": quant, "runtime": runtime}
    if "--enforce-eager" in flags:  # vLLM: no CUDA / HIP graph is captured, every step launches its kernels
        body.setdefault("runtime_settings", {})["cuda_graph_max_seqs"] = 0
        notes.append("--enforce-eager: every decode step launches its kernels from the host (cuda_graph_max_seqs 0)")
    if (runtime == "vllm-v0" and "--enforce-eager" not in flags and version.startswith("0.6.3")
            and (r.get("input_tokens") or 0) + (r.get("output_tokens") or 0) > 8192):
        # 0.6.3 passed the encoder length to the max_seq_len_to_capture check and kept replaying graphs, with the block
        # table cut at 8192 tokens (vLLM issue #9448; PR #9285, merged 2024-11-07): decode would be faster, not slower.
        notes.append(f"vLLM {version.split()[0]}: contexts past max_seq_len_to_capture (8192) decode eagerly, read as a "
                     "build with PR #9285's fix (0.6.3 itself kept replaying graphs, cutting attention at 8192 tokens - "
                     "faster than measured)")
    steps = re.search(r"--num-scheduler-steps?[ =](\d+)", flags)
    if steps and int(steps.group(1)) > 1:  # vLLM V0 multi-step scheduling (PR #7000)
        body.setdefault("runtime_settings", {})["scheduler_steps"] = int(steps.group(1))
        notes.append(f"--num-scheduler-steps {steps.group(1)}: V0's per-step host work once every {steps.group(1)} steps")
    if runtime in ("tgi", "tgi-v2"):  # text-generation-launcher's batching flags (launcher/src/main.rs)
        for flag, setting in TGI_FLAGS.items():
            found = re.search(rf"{flag}[ =](\d+)", flags)
            if found:
                body.setdefault("runtime_settings", {})[setting] = int(found.group(1))
                notes.append(f"{flag} {found.group(1)}: runtime_settings {setting}")
    pool = _logged_pool(r)
    if pool:
        body.setdefault("runtime_settings", {})["kv_pool_tokens"] = pool[0]
        notes.append(pool[1])
    kv, reading = _kv(r)
    if kv:
        body["kv_cache_quantization"] = kv
    if reading:
        notes.append(reading)
    n = int(r.get("num_gpus") or 1)
    if n > 1:
        body["num_gpus"] = n
        dep = _attention_dp(r, model)
        if (r.get("pipeline_parallel") or 1) > 1 and (r.get("tensor_parallel") or 1) == 1:
            body["inference_parallelism"] = "pipeline"
        elif dep:
            body["inference_parallelism"] = "expert"
            notes.append(dep)
        else:
            body["inference_parallelism"] = "tensor"
            if not r.get("tensor_parallel"):
                notes.append(f"parallelism not stated: tensor parallelism over the {n} GPUs")

    metrics = r["metrics"]
    i, o = _number(r.get("input_tokens")), _number(r.get("output_tokens"))
    if runtime == "llama.cpp":  # llama-bench: pp = prompt only, tg = generation from an empty context
        i, o = (i, 1.0) if metrics.get("prefill_tok_s") else (1.0, o)
    if runtime == "transformers" and o is None and "max_length=128" in str(r.get("benchmark_tool")):
        i, o = 7.0, 121.0
        notes.append("generate to max_length 128: a ~7-token prompt and 121 new tokens (no early EOS)")
    if o is None and r.get("total_output_tokens") and r.get("num_prompts"):
        o = round(r["total_output_tokens"] / r["num_prompts"])
        notes.append(f"variable answer lengths at their mean, {int(o)} tokens")
    if i is None or o is None:
        return None, notes, f"lengths vary ({r.get('dataset') or 'not stated'}): context, not a check"
    if str(r.get("input_tokens") or "").startswith("~"):
        notes.append("approximate lengths at their stated value")
    body.update({"input_tokens": int(i), "output_tokens": max(int(o), 1)})

    if runtime == "tensorrt-llm" and "perf-overview" in str(r.get("source")) and "trtllm-bench" in str(r.get("benchmark_tool")):
        tuned = trtllm_bench_settings(body, int(r.get("tensor_parallel") or n), int(r.get("pipeline_parallel") or 1))
        if tuned:
            body.setdefault("runtime_settings", {}).update(max_num_seqs=tuned[0], max_prefill_tokens=tuned[1])
            notes.append(TRTLLM_BENCH_READING.format(bs=tuned[0], tok=tuned[1]))
        graphs = max(bs for bs in TRTLLM_GUIDE_GRAPH_SIZES if bs <= (tuned[0] if tuned else TRTLLM_GUIDE_GRAPH_SIZES[-1]))
        body.setdefault("runtime_settings", {})["cuda_graph_max_seqs"] = graphs
        notes.append(TRTLLM_GRAPHS_READING.format(n=graphs))

    reading = (fp8_kv or {}).get((str(r.get("source")), str(r.get("model"))))
    if reading and not r.get("kv_cache_dtype") and "kv_cache_quantization" not in body:
        body["kv_cache_quantization"] = "fp8"
        notes.append(reading)

    rate = r.get("request_rate")
    prompts = r.get("num_prompts")
    if r.get("concurrency") and runtime != "llama.cpp" and isinstance(prompts, int) and prompts <= r["concurrency"]:
        body["batch_size"] = prompts  # every prompt is sent at once and the loop never refills: one burst
        notes.append(f"concurrency {r['concurrency']} >= its {prompts} prompts: one burst of {prompts} prompts")
    elif r.get("concurrency") and runtime != "llama.cpp":
        body["concurrent_users"] = int(r["concurrency"])
    elif isinstance(rate, (int, float)) and rate > 0:
        body["request_rate"] = float(rate)
    elif r.get("batch_size"):
        body["batch_size"] = int(r["batch_size"])
        if "static" not in str(r.get("benchmark_tool")).lower() and int(r["batch_size"]) > 1:
            notes.append(f"a burst of {r['batch_size']} prompts sent at once")
    else:  # offline: all prompts queued at once
        prompts = int(r.get("num_prompts") or 1000)
        body["batch_size"] = prompts
        notes.append(f"offline: one burst of {prompts} prompts" + ("" if r.get("num_prompts") else " (not stated: 1000)"))
    if "gptSessionBenchmark" in str(r.get("benchmark_tool")) and body.get("batch_size", 1) > 1:
        _static_session(body, notes)
    return body, notes, ""


#: TensorRT-LLM 0.5-0.6's gptSessionBenchmark runs one static batch (GptSession::generate takes the whole batch and
#: has no queue), so every one of its batch_size sequences held its KV blocks at once.
STATIC_SESSION_READING = ("a static session runs its whole batch at once (gptSessionBenchmark has no queue): its KV cache "
                          "held all {n} sequences, where the profile's pool of {frac} of free memory holds {c} - read with "
                          "gpu_memory_utilization 1.0")


def _static_session(body: dict[str, Any], notes: list[str]) -> None:
    """A static session's batch ran whole: where the profile's KV pool would queue part of it, read the pool as all of
    the free memory (the most a session can allocate), and say so."""
    out = vramplan.estimate_inference(dict(body, trace=True))
    c = out["serving"]["running_sequences"]
    if c < body["batch_size"]:
        frac = trace_values(out)["rt_gpu_memory_utilization"]
        body.setdefault("runtime_settings", {})["gpu_memory_utilization"] = 1.0
        notes.append(STATIC_SESSION_READING.format(n=body["batch_size"], frac=frac, c=int(c)))


#: A checkpoint whose quantization config sets no 8-bit cache (its model card: "only the weights and activations of the
#: linear operators within transformers blocks are quantized"; TensorRT-LLM's own tests set
#: ``kv_cache_quant_algo = FP8`` by hand to get one) that ran with an 8-bit cache was given it by the harness
#: (KvCacheConfig dtype / --kv_cache_dtype fp8), which ran every checkpoint of the table: its other FP8 checkpoints that
#: carry no cache dtype of their own are read the same.
HARNESS_READING = ("KV dtype not stated: {checkpoint}, whose checkpoint sets no KV quantization, ran in this table beyond "
                   "what a 16-bit cache allows, so the table's harness set an 8-bit one - read so for its FP8 checkpoints "
                   "that carry none: fp8 KV cache")


#: Cells of a record's source table that the calibration folder does not hold as records but that bear on how the
#: whole table was run: kv_readings tests them against the 16-bit ceiling as it tests records. They are never compared
#: with an estimate and never enter the statistics. Each is (the record whose row and column it shares, input tokens,
#: output tokens, requests, output tok/s per GPU, where it is printed).
SOURCE_CELLS = (
    ("trtllm-devguide-LLaMAv3370B-H200-TP2-FP8-1024-1024", 1024, 8192, 1500, 2009,
     "perf-overview.md at 03e27c7, LLaMA v3.3 70B table, ISL/OSL 1024/8192, H200 TP2 (FP8); 1,500 requests for that "
     "pair (its Preparing a Dataset table)"),
)


def source_cells(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """SOURCE_CELLS as records of their own, for the cells whose record is among ``records``."""
    by_id = {r["id"]: r for r in records}
    cells = []
    for base, isl, osl, n, per_gpu, where in SOURCE_CELLS:
        if base in by_id:
            r = by_id[base]
            cells.append(dict(r, id=f"{r['id'].rsplit('-', 2)[0]}-{isl}-{osl} (a cell of the same table: {where})",
                              input_tokens=isl, output_tokens=osl, num_prompts=n,
                              metrics={**r["metrics"], "output_throughput_tok_s": None, "output_throughput_tok_s_per_gpu": per_gpu}))
    return cells


def kv_readings(records: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(source, checkpoint) -> reading, for the checkpoints of a source with a run that 16-bit keys and values
    cannot explain (its measured output above ``bandwidth_bound`` at the 16-bit reading; the records' and the
    SOURCE_CELLS of their tables): the source ran that checkpoint with one cache dtype, so all its runs there are read
    with an 8-bit cache. Where that checkpoint's own config sets no 8-bit cache, the source's harness set it, and the
    source's other FP8 checkpoints (FP8 weights as mapped, not a table's label) without a cache dtype of their own are
    read with it too (HARNESS_READING)."""
    found: dict[tuple[str, str], str] = {}
    bodies: dict[int, dict[str, Any] | None] = {}  # each record mapped once, without a reading (both loops use it)

    def body_of(r: dict[str, Any]) -> dict[str, Any] | None:
        if id(r) not in bodies:
            bodies[id(r)] = map_record(r)[0]
        return bodies[id(r)]

    for r in [*records, *source_cells(records)]:
        key = (str(r.get("source")), str(r.get("model")))
        measured = _measured_output_tps(r)
        if key in found or r.get("kv_cache_dtype") or not measured or r.get("runtime") == "llama.cpp":
            continue
        body = body_of(r)
        if body is None or "kv_cache_quantization" in body:
            continue
        bound = bandwidth_bound(body)
        if bound and measured > bound[0]:
            found[key] = BOUND_READING.format(id=r["id"], bound=bound[0], n=bound[1], frac=BOUND_MEMORY_FRACTION, bw=bound[2],
                                              measured=measured)
    for (source, checkpoint) in list(found):
        if checkpoint in CHECKPOINT_FP8_KV:
            continue  # the checkpoint's own cache dtype: nothing said of the harness
        for r in records:
            key = (str(r.get("source")), str(r.get("model")))
            if (key[0] == source and key not in found and not r.get("kv_cache_dtype") and key[1] not in CHECKPOINT_FP8_KV
                    and (body_of(r) or {}).get("quantization") == "fp8"):
                found[key] = HARNESS_READING.format(checkpoint=checkpoint)
    return found


def comparisons(r: dict[str, Any], body: dict[str, Any], out: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(metric, measured, estimated) pairs for what the record reports."""
    m, srv = r["metrics"], out["serving"]
    n = body.get("num_gpus", 1)
    pairs: list[tuple[str, float, float | None]] = []
    if m.get("output_throughput_tok_s") is not None:
        per_gpu = "not explicitly per-GPU or total" in str(r.get("caveats"))  # read per GPU (see PER_GPU_READING)
        pairs.append(("output throughput", m["output_throughput_tok_s"] * (n if per_gpu else 1), srv["output_throughput_tps"]))
    elif m.get("output_throughput_tok_s_per_gpu") is not None:
        pairs.append(("output throughput", m["output_throughput_tok_s_per_gpu"] * n, srv["output_throughput_tps"]))
    elif m.get("total_throughput_tok_s") is not None:
        pairs.append(("output throughput", m["total_throughput_tok_s"] * body["output_tokens"]
                      / (body["input_tokens"] + body["output_tokens"]), srv["output_throughput_tps"]))
    ttft = m.get("ttft_ms_mean") if m.get("ttft_ms_mean") is not None else m.get("ttft_ms_median")
    if ttft is not None:
        pairs.append(("TTFT", ttft, srv["ttft_ms"]))
    itl = next((m[k] for k in ("itl_ms_mean", "tpot_ms_mean", "itl_ms_median", "tpot_ms_median") if m.get(k) is not None), None)
    if itl is not None:
        pairs.append(("ITL", itl, srv["itl_ms"]))
    if m.get("prefill_tok_s") is not None:
        pairs.append(("prefill tokens/s", m["prefill_tok_s"], body["input_tokens"] / srv["ttft_ms"] * 1000 if srv["ttft_ms"] else None))
    if m.get("decode_tok_s_per_user") is not None:
        pairs.append(("decode tokens/s", m["decode_tok_s_per_user"], 1000 / srv["itl_ms"] if srv["itl_ms"] else None))
    if m.get("latency_s") is not None and (r["runtime"] == "transformers" or "static" in str(r.get("benchmark_tool")).lower()):
        pairs.append(("end-to-end", m["latency_s"] * 1000, srv["e2e_latency_ms"]))
    return [(k, float(meas), float(est) if est is not None else float("nan")) for k, meas, est in pairs]


#: A burst whose answers end at the model's EOS (vLLM benchmark_serving.py's sonnet set: max_tokens
#: --sonnet-output-len, ignore_eos off) is over when its longest answer is; the benchmark divides every token generated
#: by that duration. The rounds drain as the shorter answers end, and a round is a line in the sequences it runs
#: (R(b) = a + c b, the serving model's own): over the longest answer's L - 1 rounds after the first tokens they cost
#: a (L - 1) + c (total - n), with c = (ITL at n - ITL alone) / (n - 1) and a = ITL alone - c - for equal answers,
#: (L - 1) x ITL at n, the estimate's own. The longest answer is at least the one the same source's one-prompt run
#: generated: the script seeds its sampler (random.seed(args.seed), 0) so every burst opens with that prompt, and
#: decodes greedily (temperature 0; TGI 0.01).
LONGEST_ANSWER_READING = ("a burst lasts until its longest answer ends: at least {first} tokens, the answer of this source's "
                          "one-prompt run, whose seeded prompt opens every burst (greedy) - its {total:,} tokens over the "
                          "first token plus {first} - 1 rounds draining from {n} sequences as the shorter answers end")


def first_answers(records: list[dict[str, Any]]) -> dict[str, int]:
    """source -> tokens the answer of its one-prompt run held, for sources whose answers end at EOS (a record with
    total output tokens and no fixed output length)."""
    found: dict[str, int] = {}
    for r in records:
        if r.get("num_prompts") == 1 and r.get("output_tokens") is None and r.get("total_output_tokens"):
            found[str(r.get("source"))] = int(r["total_output_tokens"])
    return found


def longest_answer_throughput(r: dict[str, Any], body: dict[str, Any], out: dict[str, Any],
                              first: dict[str, int]) -> tuple[float, str] | None:
    """(output tok/s, reading) of a burst of variable answers that ran at once, lasting until its longest answer
    ends (LONGEST_ANSWER_READING); None where the record is no such burst or its source has no one-prompt run."""
    n, total = body.get("batch_size", 1), r.get("total_output_tokens")
    srv = out["serving"]
    longest = first.get(str(r.get("source")), 0)
    if (r.get("output_tokens") is not None or not total or n <= 1 or longest <= body["output_tokens"]
            or srv["running_sequences"] < n or not srv["itl_ms"]):
        return None  # a fixed answer length, no one-prompt run, or one no longer than the mean: the estimate's own
    alone = vramplan.estimate_inference(dict(body, batch_size=1))["serving"]["itl_ms"]
    duration_ms = drained_burst_ms(srv["ttft_ms"], srv["itl_ms"], alone, n, longest, int(total))
    return total / duration_ms * 1000, LONGEST_ANSWER_READING.format(first=longest, total=int(total), n=n)


def drained_burst_ms(ttft_ms: float, itl_n_ms: float, itl_alone_ms: float, n: int, longest: int, total: int) -> float:
    """How long a burst of n answers, total tokens in all, runs until its longest answer (longest tokens) ends: its
    first tokens, then longest - 1 rounds of a + c x (the answers still running), which add up to a (longest - 1) +
    c (total - n), the line R(b) = a + c b through one sequence alone and all n."""
    c = max(itl_n_ms - itl_alone_ms, 0.0) / (n - 1)
    a = itl_alone_ms - c
    return ttft_ms + a * (longest - 1) + c * max(total - n, 0)


def run(cal_dir: Path) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    data = yaml.safe_load((cal_dir / "published-serving.yaml").read_text())
    cases, unmapped = [], []
    fp8_kv = kv_readings(data["records"])
    first = first_answers(data["records"])
    for r in data["records"]:
        body, notes, why = map_record(r, fp8_kv)
        if body is None:
            unmapped.append((r["id"], why))
            continue
        try:
            out = vramplan.estimate_inference(body)
        except vramplan.VramplanError as exc:
            unmapped.append((r["id"], f"the engine refused the request: {exc}"))
            continue
        longest = longest_answer_throughput(r, body, out, first)
        if longest:
            notes.append(longest[1])
        for metric, measured, est in comparisons(r, body, out):
            if metric == "output throughput" and longest:
                est = longest[0]
            err = (est - measured) / measured if est == est else float("nan")
            cases.append({"id": r["id"], "runtime": body["runtime"], "metric": metric, "measured": measured,
                          "estimate": est, "error": err, "notes": notes, "limited_by": out["serving"]["limited_by"],
                          "load": out["serving"]["load"]})
    return cases, unmapped


def _stats(errors: list[float]) -> tuple[float, float, float]:
    """Median and 90th percentile of |error|, and the worst error with its sign (an estimate the engine could
    not make counts as infinitely wrong)."""
    a = sorted(abs(e) if e == e else float("inf") for e in errors)
    p90 = a[min(len(a) - 1, max(0, round(0.9 * len(a) + 0.5) - 1))]
    worst = max(errors, key=lambda e: abs(e) if e == e else float("inf"))
    return statistics.median(a), p90, worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calibration", type=Path, default=DEFAULT_CAL)
    ap.add_argument("--markdown", action="store_true", help="print the summary as the README's Markdown table")
    ap.add_argument("--cases", action="store_true", help="print every case")
    args = ap.parse_args(argv)
    if not (args.calibration / "published-serving.yaml").is_file():
        print(f"calibration file {args.calibration / 'published-serving.yaml'} not found: nothing to compare "
              "(the shared calibration folder sits beside the repository)")
        return 0
    cases, unmapped = run(args.calibration)
    if args.cases or not args.markdown:
        for c in cases:
            print(f"{c['id'][:62]:62} {c['metric']:18} measured {c['measured']:>10.4g} estimate {c['estimate']:>10.4g} "
                  f"error {c['error']:+7.1%}  [{c['load']}, {c['limited_by']}]" + (f"  ({'; '.join(c['notes'])})" if c["notes"] else ""))
        print()
    groups: dict[tuple[str, str], list[float]] = {}
    for c in cases:
        groups.setdefault((c["metric"], c["runtime"]), []).append(c["error"])
        groups.setdefault((c["metric"], "all"), []).append(c["error"])
    rows = []
    for (metric, runtime), errs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "all", kv[0][1])):
        med, p90, worst = _stats(errs)
        rows.append((metric, runtime, len(errs), med, p90, worst))
    if args.markdown:
        print("| metric | runtime | cases | median abs error | 90th percentile | worst case |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        for metric, runtime, n, med, p90, worst in rows:
            print(f"| {metric} | {runtime} | {n} | {med:.0%} | {p90:.0%} | {worst:+.0%} |")
    else:
        for metric, runtime, n, med, p90, worst in rows:
            print(f"{metric:18} {runtime:14} cases {n:3}  median |error| {med:6.1%}  p90 {p90:6.1%}  worst {worst:+7.1%}")
    print(f"\n{len(unmapped)} of {len(cases and {c['id'] for c in cases}) + len(unmapped)} records not mapped (counted as misses):")
    for rid, why in unmapped:
        print(f"  {rid}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
