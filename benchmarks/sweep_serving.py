"""Sanity sweep of the serving model: invariants a serious user expects, over many requests.

Not a fidelity benchmark (benchmarks/fidelity_serving.py compares with published runs): this one runs
many combinations of model x GPU x quantization x tensor-parallel GPUs x runtime x lengths x load through
``vramplan.estimate_inference`` (and the planner) and prints every request that breaks an invariant the
serving model's own description promises (formulas/performance/serving.yaml, the README's "Serving
under load"):

- no exception but ``RequestError``; no negative, NaN or infinite figure;
- the seed's fields agree with ``serving`` (``estimated_throughput_tps``, ``tftt``, ``ms_per_token``,
  ``per_user_tps`` = 1000 / ITL);
- closed loop: ``running_sequences`` = min(users, the admission cap) with one cap for every load that
  queues for admission (with answers of a token or two requests also wait for the prompts' work),
  ``running + queued = users``, Little's law (requests/s x e2e = users), e2e = TTFT + (output - 1) x ITL;
  output throughput, TTFT and ITL non-decreasing in users, throughput never above the capacity the
  open loop reports (where the runtime's KV pool is the deployment's whatever the load: transformers and
  llama.cpp size their cache by the request, so U clients and an open loop are different deployments);
- open loop: below capacity it serves what arrives (``arrival_rate``), latencies non-decreasing in the
  rate, Little's law (rate x e2e = running + queued); past capacity nulls and a warning with the rate;
- single-stream decode: FP8/FP4 not slower than BF16 on GPUs with the units; more tensor-parallel GPUs
  not more than 5 % slower (where they are, it is the all-reduces: TGI's NCCL rings);
- planner: ``max_concurrent_users`` / ``max_request_rate`` under an SLO meet it at the answer, and the
  direct estimate one step further breaks it (unless memory or capacity binds).

    .venv/bin/python benchmarks/sweep_serving.py [--quick] [--examples N]

Tolerances are relative (0.5 % for figures the response rounds, 1 % for Little's law); the response
rounds latencies to 0.01 ms and throughputs to 0.1 tokens/s, which the checks allow for.
"""

from __future__ import annotations

import argparse
import functools
import math
import re
import sys
import time
from collections import defaultdict
from typing import Any

import vramplan
from vramplan.errors import RequestError
from vramplan.estimate import LIMITED_BY

#: What limits a load when requests wait for admission: the admission caps (srv_limit_code 1-4).
ADMISSION = {LIMITED_BY[code] for code in (1, 2, 3, 4)}

USERS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
RATE_FRACTIONS = [0.1, 0.3, 0.5, 0.7, 0.9, 0.97]

# (model, gpu, quantization, GPUs[, split]): dense, MoE, hybrid / state-space, sliding-window, MLA,
# multimodal; consumer, datacenter (NVIDIA, AMD), Apple; tensor parallelism unless a split is named
# (pipeline, refused by TGI, which has none; or expert: attention data parallelism + expert parallelism, refused by
# the runtimes without it).
FULL_DEPLOYMENTS = [
    ("llama-3.1-8b-instruct", "rtx_4090", "bf16", 1), ("llama-3.1-8b-instruct", "rtx_4090", "fp8", 1),
    ("llama-3.1-8b-instruct", "rtx_3090", "awq", 1), ("llama-3.1-8b-instruct", "a100_80", "bf16", 1),
    ("llama-3.1-8b-instruct", "h100_80", "bf16", 1), ("llama-3.1-8b-instruct", "h100_80", "fp8", 1),
    ("llama-3.1-8b-instruct", "h100_80", "bf16", 2), ("llama-3.1-8b-instruct", "b200", "nvfp4", 1),
    ("llama-3.1-8b-instruct", "mi300x", "fp8", 1), ("llama-3.1-8b-instruct", "apple_m3_max_128", "q4_k_m", 1),
    ("llama-3.1-8b-instruct", "l4", "int4", 1), ("llama-3.1-8b-instruct", "t4", "gptq", 1),
    ("llama-3.3-70b-instruct", "h100_80", "fp8", 2), ("llama-3.3-70b-instruct", "h100_80", "bf16", 4),
    ("llama-3.3-70b-instruct", "h100_80", "bf16", 8), ("llama-3.3-70b-instruct", "a100_80", "bf16", 4),
    ("llama-3.3-70b-instruct", "h200", "fp8", 1), ("llama-3.3-70b-instruct", "b200", "fp4", 2),
    ("llama-3.3-70b-instruct", "mi300x", "bf16", 2), ("llama-3.3-70b-instruct", "rtx_4090", "q4_k_m", 2),
    ("llama-3.1-405b-instruct-fp8", "h100_80", "fp8", 8), ("llama-3.1-405b-instruct", "mi300x", "bf16", 8),
    ("qwen3-30b-a3b", "h100_80", "fp8", 1), ("qwen3-30b-a3b", "rtx_4090", "q4_k_m", 1),
    ("qwen3-235b-a22b", "h200", "fp8", 4), ("mixtral-8x7b-instruct", "a100_80", "bf16", 2),
    ("gpt-oss-20b", "rtx_5090", "mxfp4", 1), ("gpt-oss-120b", "h100_80", "mxfp4", 1),
    ("deepseek-v2-lite-chat", "a100_80", "bf16", 1), ("deepseek-r1", "h200", "fp8", 8),
    ("deepseek-v3", "b200", "fp8", 8), ("qwen3-next-80b-a3b-instruct", "h100_80", "fp8", 2),
    ("granite-4.0-h-small", "h100_80", "bf16", 1), ("nvidia-nemotron-3-nano-30b-a3b", "h100_80", "bf16", 1),
    ("gemma-3-27b-it", "h100_80", "bf16", 1), ("gemma-2-9b-it", "rtx_4090", "bf16", 1),
    ("mistral-7b-instruct-v0.1", "a10g", "fp16", 1), ("llama-3.2-11b-vision-instruct", "a100_80", "bf16", 1),
    ("qwen2.5-7b-instruct", "h100_80", "bf16", 1), ("qwen3-0.6b", "h100_80", "bf16", 1),
    ("phi-3.5-moe-instruct", "h100_80", "bf16", 2), ("llama-4-scout-17b-16e-instruct", "h100_80", "bf16", 4),
    ("llama-3.3-70b-instruct", "a100_80", "bf16", 4, "pipeline"), ("deepseek-r1", "h200", "fp8", 8, "pipeline"),
    ("qwen3-235b-a22b", "h100_80", "fp8", 4, "pipeline"),
    ("qwen3-235b-a22b", "h200", "fp8", 4, "expert"), ("deepseek-r1", "h200", "fp8", 8, "expert"),
    ("qwen3-30b-a3b", "h100_80", "fp8", 2, "expert"),
]
QUICK_DEPLOYMENTS = [
    ("llama-3.1-8b-instruct", "h100_80", "bf16", 1), ("llama-3.3-70b-instruct", "h100_80", "fp8", 2),
    ("qwen3-30b-a3b", "rtx_4090", "q4_k_m", 1), ("deepseek-v2-lite-chat", "a100_80", "bf16", 1),
    ("granite-4.0-h-small", "h100_80", "bf16", 1), ("gemma-3-27b-it", "h200", "fp8", 1),
    ("qwen3-30b-a3b", "h100_80", "fp8", 2, "expert"),
]
RUNTIMES = ["vllm", "vllm-v0", "sglang", "tensorrt-llm", "tgi", "llama.cpp", "transformers"]
QUICK_RUNTIMES = ["vllm", "sglang", "tgi", "llama.cpp"]
LENGTHS = [(1000, 200), (128, 1), (8000, 100), (200, 2000), (30000, 500)]
QUICK_LENGTHS = [(1000, 200), (128, 1), (8000, 100)]

# Single-stream decode: FP8 / FP4 against BF16 on GPUs with FP8 (FP4) units.
QUANT_PAIRS = [
    ("llama-3.1-8b-instruct", "h100_80", "fp8"), ("llama-3.1-8b-instruct", "h200", "fp8"),
    ("llama-3.1-8b-instruct", "b200", "fp8"), ("llama-3.1-8b-instruct", "b200", "nvfp4"),
    ("llama-3.1-8b-instruct", "b200", "fp4"), ("llama-3.1-8b-instruct", "mi300x", "fp8"),
    ("llama-3.1-8b-instruct", "rtx_4090", "fp8"), ("llama-3.1-8b-instruct", "rtx_5090", "nvfp4"),
    ("qwen3-30b-a3b", "h100_80", "fp8"), ("llama-3.3-70b-instruct", "h200", "fp8"),
    ("llama-3.3-70b-instruct", "b200", "nvfp4"),
]
TP_MODELS = [
    ("llama-3.1-8b-instruct", "h100_80", "bf16"), ("llama-3.3-70b-instruct", "h100_80", "fp8"),
    ("llama-3.3-70b-instruct", "mi300x", "bf16"), ("qwen3-30b-a3b", "h100_80", "bf16"),
    ("llama-3.1-8b-instruct", "a100_80", "bf16"), ("llama-3.1-8b-instruct", "rtx_4090", "bf16"),
]
PLANNER = [
    ("llama-3.1-8b-instruct", "h100_80", "bf16", 1, "vllm", {"itl_ms": 20}),
    ("llama-3.1-8b-instruct", "h100_80", "bf16", 1, "sglang", {"ttft_ms": 500, "itl_ms": 40}),
    ("llama-3.3-70b-instruct", "h100_80", "fp8", 2, "vllm", {"e2e_latency_ms": 20000}),
    ("qwen3-30b-a3b", "h100_80", "fp8", 1, "tensorrt-llm", {"itl_ms": 25}),
    ("llama-3.1-8b-instruct", "rtx_4090", "q4_k_m", 1, "llama.cpp", {"itl_ms": 60}),
]

SERVING_NUMBERS = ("running_sequences", "queued_requests", "output_throughput_tps", "total_throughput_tps",
                   "requests_per_second", "ttft_ms", "itl_ms", "e2e_latency_ms", "utilisation")
SEED_NUMBERS = ("vram_usage", "estimated_latency_tps", "estimated_throughput_tps", "per_user_tps", "ms_per_token",
                "tftt", "estimated_power_draw")


class Sweep:
    """Runs requests, remembers findings per check, counts what it ran."""

    def __init__(self) -> None:
        self.findings: dict[str, list[str]] = defaultdict(list)
        self.runs = 0
        self.refused: dict[str, int] = defaultdict(int)

    def estimate(self, req: dict[str, Any]) -> dict[str, Any] | None:
        self.runs += 1
        try:
            r = vramplan.estimate_inference(req, suggestions=False)  # the serving figures; suggestions are not checked here
            if any("ignored unknown field" in w for w in r["warnings"]):
                raise SystemExit(f"sweep bug: {short(req)} has a field the API ignores: {r['warnings']}")
            return r
        except RequestError as exc:
            self.refused[str(exc).split(":")[0][:60]] += 1
            return None
        except Exception as exc:  # noqa: BLE001 - the sweep reports any other exception as a finding
            self.flag("exception", req, f"{type(exc).__name__}: {exc}")
            return None

    def flag(self, check: str, req: dict[str, Any], detail: str) -> None:
        self.findings[check].append(f"{short(req)} -> {detail}")


def short(req: dict[str, Any]) -> str:
    keys = ("llm_key", "gpu_key", "quantization", "num_gpus", "runtime", "input_tokens", "output_tokens",
            "concurrent_users", "request_rate", "batch_size")
    return "{" + ", ".join(f"{k}={req[k]!r}" for k in keys if k in req) + "}"


def close(a: float, b: float, rel: float, abs_: float = 0.0) -> bool:
    return abs(a - b) <= max(rel * max(abs(a), abs(b)), abs_)


def base_request(model: str, gpu: str, quant: str, ngpu: int, runtime: str, inp: int, out: int,
                 parallelism: str = "tensor") -> dict[str, Any]:
    req: dict[str, Any] = {"llm_key": model, "gpu_key": gpu, "quantization": quant, "runtime": runtime,
                           "input_tokens": inp, "output_tokens": out}
    if ngpu > 1:
        req.update(num_gpus=ngpu, inference_parallelism=parallelism)
    return req


def check_figures(sw: Sweep, req: dict[str, Any], r: dict[str, Any]) -> None:
    """No negative, NaN or infinite figure; the seed fields agree with serving."""
    s = r["serving"]
    for name in SERVING_NUMBERS:
        v = s.get(name)
        if v is not None and (not math.isfinite(v) or v < 0):
            sw.flag("bad_number", req, f"serving.{name} = {v}")
    for name in SEED_NUMBERS:
        v = r.get(name)
        if v is not None and (not math.isfinite(v) or v < 0):
            sw.flag("bad_number", req, f"{name} = {v}")
    if s["ttft_ms"] is None:  # past capacity: checked by the open-loop pass
        return
    pairs = [("estimated_throughput_tps", s["output_throughput_tps"], 0.001, 0.11),
             ("tftt", s["ttft_ms"], 0.001, 0.11), ("ms_per_token", s["itl_ms"], 0.001, 0.011)]
    if s["itl_ms"]:  # one user sees its batch_size sequences each advance a token per ITL
        pairs.append(("per_user_tps", req.get("batch_size", 1) * 1000 / s["itl_ms"], 0.005, 0.11))
    for name, want, rel, abs_ in pairs:
        if r.get(name) is None or not close(r[name], want, rel, abs_):
            sw.flag("seed_disagrees", req, f"{name} = {r.get(name)} but serving gives {want:.4g}")
    out = s["output_tokens"]
    total = s["output_throughput_tps"] * (s["input_tokens"] + out) / out if out else None
    if total is not None and not close(s["total_throughput_tps"], total, 0.002, 0.2 * (s["input_tokens"] + out) / out):
        sw.flag("total_tps", req, f"total {s['total_throughput_tps']} but output {s['output_throughput_tps']} x (in + out) / out = {total:.1f}")
    if s["utilisation"] is not None and s["utilisation"] > 1 + 1e-9:
        sw.flag("utilisation_above_1", req, f"utilisation {s['utilisation']}")
    if s["cost_per_million_output_tokens"] is not None and s["output_throughput_tps"] > 0:
        want = s["cost_per_hour"] / (s["output_throughput_tps"] * 3600) * 1e6
        if not close(s["cost_per_million_output_tokens"], want, 0.005 + 0.05 / s["output_throughput_tps"], 0.002):  # tok/s rounded to 0.1
            sw.flag("cost", req, f"{s['cost_per_million_output_tokens']} per million but {s['cost_per_hour']}/h at {s['output_throughput_tps']} tok/s = {want:.4g}")
    pool = r.get("kv_pool")
    if pool and pool.get("tokens") and req.get("runtime") in ("vllm", "vllm-v0") and s["running_sequences"] > 0:
        # vLLM admits a sequence with its prompt and, on average, half its answer (srv_kv_seq_bytes)
        fit = pool["tokens"] / (s["input_tokens"] + 0.5 * out)
        if s["running_sequences"] > fit * 1.01 + 1:
            sw.flag("running_above_pool", req, f"running {s['running_sequences']} but the pool's {pool['tokens']} tokens hold {fit:.1f}")
    e2e = s["ttft_ms"] + (out - 1) * s["itl_ms"]
    if not close(s["e2e_latency_ms"], e2e, 0.003, 0.02 * out):
        sw.flag("e2e_not_ttft_plus_itl", req, f"e2e {s['e2e_latency_ms']} ms, ttft + (out-1) itl = {e2e:.2f} ms")


def closed_ladder(sw: Sweep, req: dict[str, Any], users: list[int], capacity_rps: float | None) -> None:
    """A closed loop from 1 to 1024 clients: admission, Little's law and monotone figures."""
    rows = []
    for u in users:
        q = dict(req, concurrent_users=u)
        r = sw.estimate(q)
        if r is None:
            return
        check_figures(sw, q, r)
        s = r["serving"]
        rows.append((u, q, s))
        if s["ttft_ms"] is None:
            continue
        b = req.get("batch_size", 1)
        if s["running_sequences"] > max_num_seqs(req["runtime"]):
            sw.flag("running_above_max_num_seqs", q, f"running {s['running_sequences']} > max_num_seqs {max_num_seqs(req['runtime'])}")
        if s["running_sequences"] > u * b + 1e-9:
            sw.flag("running_above_users", q, f"running {s['running_sequences']} > {u} users x {b}")
        if not close(s["running_sequences"] / b + s["queued_requests"], u, 0.001, 0.01):
            sw.flag("running_plus_queued", q, f"running {s['running_sequences']} + queued {s['queued_requests']} != {u}")
        # requests/s from the total throughput (rounded to 0.1 tokens/s; requests_per_second to 4 decimals)
        rps = s["total_throughput_tps"] / (s["input_tokens"] + s["output_tokens"]) / req.get("batch_size", 1)
        little = rps * s["e2e_latency_ms"] / 1000
        if not close(little, u, 0.01 + 0.05 / max(s["total_throughput_tps"], 1e-9), 0.02):
            sw.flag("little_closed", q, f"requests/s {rps:.5g} x e2e {s['e2e_latency_ms']} ms = {little:.3f} != {u} users")
        # The open loop's capacity bounds the closed loop only on the same deployment: a runtime with a preallocated
        # KV pool (vLLM, SGLang, TensorRT-LLM, TGI) keeps it whatever the load; transformers and llama.cpp size their
        # cache by the request (batch_size x concurrent_users sequences, n_ctx = context x slots), so U clients are a
        # deployment of U slots and an open loop one of batch_size slots - unless runtime_settings.max_num_seqs gives
        # them their slots (llama-server's --parallel), which both loops then share.
        slots = (req.get("runtime_settings") or {}).get("max_num_seqs")
        if slots and s["running_sequences"] > slots + 1e-9:
            sw.flag("running_above_slots", q, f"running {s['running_sequences']} > {slots} slots")
        if capacity_rps and (preallocates(req["runtime"]) or slots) and s["requests_per_second"] > capacity_rps * 1.01:
            sw.flag("above_capacity", q, f"{s['requests_per_second']} requests/s above the open loop's sustainable {capacity_rps}")
    # requests queue for admission (the cap, limited_by one of ADMISSION) or, with answers of a token or two, for the
    # prompts' work (srv_prompt_seq_rate; limited_by what the rounds wait on): only the first kind holds a fixed cap
    admitted = [(u, s) for u, _, s in rows if s["queued_requests"] and s["queued_requests"] > 0.5 and s["limited_by"] in ADMISSION]
    caps = {s["running_sequences"] for _, s in admitted}
    if len(caps) > 1:
        detail = ", ".join(f"{u} users: {s['running_sequences']}" for u, s in admitted)
        sw.flag("admission_cap_moves", req, f"running sequences once requests queue: {detail}")
    for (u0, _, a), (u1, q1, b) in zip(rows, rows[1:]):
        if a["ttft_ms"] is None or b["ttft_ms"] is None:
            continue
        if b["output_throughput_tps"] < a["output_throughput_tps"] * 0.995 - 0.1:
            sw.flag("throughput_drops", q1, f"{u0} users {a['output_throughput_tps']} tok/s -> {u1} users {b['output_throughput_tps']} "
                    f"(running {a['running_sequences']} -> {b['running_sequences']}, {a['limited_by']} -> {b['limited_by']})")
        if b["itl_ms"] < a["itl_ms"] * 0.995 - 0.011:
            sw.flag("itl_drops", q1, f"{u0} users {a['itl_ms']} ms -> {u1} users {b['itl_ms']} ms "
                    f"(running {a['running_sequences']} -> {b['running_sequences']})")
        if b["ttft_ms"] < a["ttft_ms"] * 0.995 - 0.011:
            sw.flag("ttft_drops", q1, f"{u0} users {a['ttft_ms']} ms -> {u1} users {b['ttft_ms']} ms "
                    f"(running {a['running_sequences']} -> {b['running_sequences']})")


@functools.lru_cache(maxsize=None)
def max_num_seqs(runtime: str) -> float:
    """The largest max_num_seqs the runtime's profile names (any GPU tier); inf where it has none."""
    c = next(r for r in vramplan.list_runtimes() if r["key"] == runtime)["constants"].get("max_num_seqs") or {}
    values = [c.get("value", 0)] + [t["value"] for t in c.get("tiers", [])]
    return max(values) if max(values) > 0 else math.inf


@functools.lru_cache(maxsize=None)
def preallocates(runtime: str) -> bool:
    """Whether the runtime's KV pool is allocated once for the deployment (kv_preallocate), whatever the load."""
    c = next(r for r in vramplan.list_runtimes() if r["key"] == runtime)["constants"].get("kv_preallocate") or {}
    return bool(c.get("value"))


SUSTAINS = re.compile(r"sustains about ([0-9.e+-]+) requests/s")


def open_loop(sw: Sweep, req: dict[str, Any]) -> float | None:
    """Past capacity first (the sustainable rate), then rates below it."""
    q = dict(req, request_rate=1e6)
    r = sw.estimate(q)
    if r is None:
        return None
    s = r["serving"]
    check_figures(sw, q, r)
    if s["ttft_ms"] is not None or s["itl_ms"] is not None or s["e2e_latency_ms"] is not None:
        sw.flag("past_capacity_not_null", q, f"ttft {s['ttft_ms']}, itl {s['itl_ms']}, e2e {s['e2e_latency_ms']}")
    m = next((SUSTAINS.search(w) for w in r["warnings"] if SUSTAINS.search(w)), None)
    if m is None:
        if s["running_sequences"] >= 1:
            sw.flag("past_capacity_no_rate", q, f"warnings {r['warnings']}")
        return None
    cap = float(m.group(1))
    if not close(s["requests_per_second"], cap, 0.02, 0.0001):
        sw.flag("past_capacity_rate", q, f"served {s['requests_per_second']} requests/s, warning says {cap}")
    prev = None
    for f in RATE_FRACTIONS:
        rate = cap * f
        q = dict(req, request_rate=rate)
        r = sw.estimate(q)
        if r is None:
            return cap
        check_figures(sw, q, r)
        s = r["serving"]
        if s["ttft_ms"] is None:
            sw.flag("null_below_capacity", q, f"{f:.0%} of the sustainable {cap} requests/s gives nulls ({s['limited_by']})")
            continue
        if s["limited_by"] != "arrival_rate":
            sw.flag("open_limited_by", q, f"{f:.0%} of capacity limited by {s['limited_by']}")
        if not close(s["requests_per_second"], rate, 0.005, 0.0001):
            sw.flag("open_not_served", q, f"serves {s['requests_per_second']} of {rate:.4g} requests/s")
        little = rate * s["e2e_latency_ms"] / 1000  # requests in the system; running counts sequences
        in_system = s["running_sequences"] / req.get("batch_size", 1) + s["queued_requests"]
        if not close(little, in_system, 0.02, 0.05):
            sw.flag("little_open", q, f"rate x e2e = {little:.3f} but running {s['running_sequences']} + queued {s['queued_requests']}")
        if prev is not None:
            for name in ("ttft_ms", "itl_ms", "e2e_latency_ms"):
                if s[name] < prev[name] * 0.995 - 0.011:
                    sw.flag(f"open_{name}_drops", q, f"{prev[name]} -> {s[name]} as the rate grows to {f:.0%} of capacity")
        prev = s
    return cap


def single_stream(sw: Sweep, req: dict[str, Any]) -> dict[str, Any] | None:
    r = sw.estimate(dict(req, concurrent_users=1))
    return r["serving"] if r else None


def quant_pairs(sw: Sweep, runtimes: list[str]) -> None:
    """FP8 / FP4 decode is not slower than BF16 on a GPU with the units, and prefill not slower either."""
    for model, gpu, quant in QUANT_PAIRS:
        for rt in runtimes:
            if rt in ("llama.cpp",):
                continue
            base = base_request(model, gpu, "bf16", 1, rt, 1000, 200)
            ngpu = 1
            a = single_stream(sw, base)
            if a is None or a["ttft_ms"] is None:
                ngpu = 2
                base = base_request(model, gpu, "bf16", 2, rt, 1000, 200)
                a = single_stream(sw, base)
            q = base_request(model, gpu, quant, ngpu, rt, 1000, 200)
            b = single_stream(sw, q)
            if a is None or b is None or a["ttft_ms"] is None or b["ttft_ms"] is None:
                continue
            if b["itl_ms"] > a["itl_ms"] * 1.02:
                sw.flag("lowbit_decode_slower", q, f"ITL {b['itl_ms']} ms vs bf16 {a['itl_ms']} ms")
            if b["ttft_ms"] > a["ttft_ms"] * 1.02:
                sw.flag("lowbit_prefill_slower", q, f"TTFT {b['ttft_ms']} ms vs bf16 {a['ttft_ms']} ms")
            qa = dict(base, concurrent_users=256)
            qb = dict(q, concurrent_users=256)
            ra, rb = sw.estimate(qa), sw.estimate(qb)
            if ra and rb and ra["serving"]["output_throughput_tps"] and rb["serving"]["output_throughput_tps"] is not None:
                ta, tb = ra["serving"]["output_throughput_tps"], rb["serving"]["output_throughput_tps"]
                if tb < ta * 0.98:
                    sw.flag("lowbit_throughput_lower", qb, f"{tb} tok/s at 256 users vs bf16 {ta} "
                            f"(running {rb['serving']['running_sequences']} vs {ra['serving']['running_sequences']})")


def tp_pairs(sw: Sweep, runtimes: list[str]) -> None:
    """More tensor-parallel GPUs: a memory-bound single stream gets faster, or slower only by the all-reduces."""
    for model, gpu, quant in TP_MODELS:
        for rt in runtimes:
            if rt == "llama.cpp":
                continue
            prev = None
            for tp in (1, 2, 4, 8):
                q = base_request(model, gpu, quant, tp, rt, 1000, 200)
                s = single_stream(sw, q)
                if s is None or s["ttft_ms"] is None:
                    continue
                if prev is not None and s["itl_ms"] > prev[1]["itl_ms"] * 1.05:
                    sw.flag("tp_decode_slower", q, f"ITL {s['itl_ms']} ms at tp {tp} vs {prev[1]['itl_ms']} ms at tp {prev[0]}")
                if prev is not None and s["ttft_ms"] > prev[1]["ttft_ms"] * 1.05:
                    sw.flag("tp_prefill_slower", q, f"TTFT {s['ttft_ms']} ms at tp {tp} vs {prev[1]['ttft_ms']} ms at tp {prev[0]}")
                prev = (tp, s)


def planner(sw: Sweep) -> None:
    """The planner's answers meet the SLO at their value; one step further they do not."""
    for model, gpu, quant, ngpu, rt, slo in PLANNER:
        base = base_request(model, gpu, quant, ngpu, rt, 1000, 200)
        sw.runs += 1
        try:
            ans = vramplan.plan(dict(base, find=["max_concurrent_users", "max_request_rate"], slo=slo))
        except RequestError as exc:
            sw.flag("planner_refused", base, str(exc))
            continue

        def meets(s: dict[str, Any]) -> bool:
            return all(s.get(k) is not None and s[k] <= v for k, v in slo.items())

        # each answer must meet the SLO, and one step further must not (unless the answer is bound by capacity)
        for question, field, step, name in (("max_concurrent_users", "concurrent_users", lambda v: v + 1, "users"),
                                            ("max_request_rate", "request_rate", lambda v: v * 1.05, "rate")):
            found = ans.get(question) or {}
            if not found.get("value"):
                continue
            value = found["value"]
            at = sw.estimate(dict(base, **{field: value}))
            nxt = sw.estimate(dict(base, **{field: step(value)}))
            if at and not meets(at["serving"]):
                sw.flag(f"planner_{name}_breaks_slo", base, f"{question} {value} but at it: "
                        + ", ".join(f"{k} {at['serving'][k]}" for k in slo))
            if nxt and meets(nxt["serving"]) and found.get("binding") in slo:
                sw.flag(f"planner_{name}_not_max", base, f"{question} {value} ({found.get('binding')}) but {step(value):.4g} "
                        "meets the SLO too: " + ", ".join(f"{k} {nxt['serving'][k]}" for k in slo))

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small subset (seconds)")
    ap.add_argument("--examples", type=int, default=4, help="requests shown per check (default 4)")
    args = ap.parse_args(argv)
    deployments = QUICK_DEPLOYMENTS if args.quick else FULL_DEPLOYMENTS
    runtimes = QUICK_RUNTIMES if args.quick else RUNTIMES
    lengths = QUICK_LENGTHS if args.quick else LENGTHS
    users = [1, 4, 16, 64, 256, 1024] if args.quick else USERS
    sw = Sweep()
    t0 = time.perf_counter()
    for model, gpu, quant, ngpu, *par in deployments:
        for rt in runtimes:
            for inp, out in lengths:
                req = base_request(model, gpu, quant, ngpu, rt, inp, out, *par)
                cap = open_loop(sw, req)
                closed_ladder(sw, req, users, cap)
                # one client's burst of sequences (a static batch where it fits), priced
                for b in (1, 8, 64):
                    q = dict(req, batch_size=b, gpu_hour_cost=2.5)
                    r = sw.estimate(q)
                    if r is not None:
                        check_figures(sw, q, r)
    # seq_length alone: 1/8 of it is the answer (at most 1024 tokens), the rest the prompt
    for model, gpu, quant, ngpu, *par in deployments[:8]:
        for seq in (256, 4096, 32768):
            q = dict(base_request(model, gpu, quant, ngpu, "vllm", 1, 1, *par), seq_length=seq, concurrent_users=16)
            del q["input_tokens"], q["output_tokens"]
            r = sw.estimate(q)
            if r is not None:
                check_figures(sw, q, r)
                out = min(seq // 8, 1024)
                if (r["serving"]["input_tokens"], r["serving"]["output_tokens"]) != (seq - out, out):
                    sw.flag("seq_length_split", q, f"split {r['serving']['input_tokens']} + {r['serving']['output_tokens']}")
    # several sequences per client (batch_size 4), closed and open loop
    for model, gpu, quant, ngpu, *par in deployments[:6]:
        for rt in ("vllm", "tgi", "transformers"):
            req = dict(base_request(model, gpu, quant, ngpu, rt, 1000, 200, *par), batch_size=4)
            cap = open_loop(sw, req)
            closed_ladder(sw, req, [1, 2, 8, 32, 128], cap)
    # servers of slots (llama-server --parallel 8 as runtime_settings.max_num_seqs): the open and the closed loop are
    # then one deployment - its capacity bounds every closed loop, and at most 8 run
    for model, gpu, quant, ngpu, *par in deployments[:6]:
        for rt in ("llama.cpp", "transformers"):
            for b in (1, 2):
                req = dict(base_request(model, gpu, quant, ngpu, rt, 1000, 200, *par), batch_size=b,
                           enable_continuous_batching=True, runtime_settings={"max_num_seqs": 8})
                cap = open_loop(sw, req)
                closed_ladder(sw, req, [1, 2, 4, 8, 16, 64], cap)
    quant_pairs(sw, runtimes)
    tp_pairs(sw, runtimes)
    planner(sw)
    took = time.perf_counter() - t0
    print(f"serving sweep: {sw.runs} requests in {took:.1f} s, "
          f"{sum(sw.refused.values())} refused with RequestError, {sum(len(v) for v in sw.findings.values())} findings")
    for reason, n in sorted(sw.refused.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  refused {n:5d}: {reason}")
    for check in sorted(sw.findings):
        rows = sw.findings[check]
        print(f"\n{check}: {len(rows)}")
        for row in rows[: args.examples]:
            print(f"  {row}")
    return 1 if sw.findings.get("exception") or sw.findings.get("bad_number") else 0


if __name__ == "__main__":
    sys.exit(main())
