"""Invariants of the serving model over drawn requests (hypothesis), as benchmarks/sweep_serving.py checks
them over the catalog: what a user can rely on whatever the model, GPU, runtime, lengths and load.

- every figure finite and non-negative; the seed fields equal the serving figures at that load;
- e2e = TTFT + (output_tokens - 1) x ITL (the documented decomposition of a request's time);
- closed loop: running + queued = clients, running <= clients, Little's law (requests/s x e2e = clients);
  output throughput, ITL and TTFT never fall as clients are added (one client of batch_size 1, so no
  static burst; the KV pool is sized before any client arrives, so the admission cap does not move);
- open loop: below the sustainable rate the warning names, it serves what arrives and its latencies
  grow with the rate; past it, null latencies and a warning.

Deterministic by default (tests/strategies.py ``checks``); explore with HYPOTHESIS_EXPLORE=N.
"""

from __future__ import annotations

import math
import re

from hypothesis import given
from hypothesis import strategies as st
from strategies import checks

import vramplan

DEPLOYMENTS = [
    ("llama-3.1-8b-instruct", "h100_80", "bf16", 1), ("llama-3.1-8b-instruct", "rtx_4090", "fp8", 1),
    ("llama-3.1-8b-instruct", "a100_80", "bf16", 2), ("llama-3.3-70b-instruct", "h100_80", "fp8", 2),
    ("qwen3-30b-a3b", "h100_80", "fp8", 1), ("deepseek-v2-lite-chat", "a100_80", "bf16", 1),
    ("granite-4.0-h-small", "h100_80", "bf16", 1), ("gemma-3-27b-it", "h200", "fp8", 1),
    ("llama-3.1-8b-instruct", "mi300x", "fp8", 1), ("qwen2.5-7b-instruct", "l4", "awq", 1),
]
RUNTIMES = ["vllm", "vllm-v0", "sglang", "tensorrt-llm", "tgi", "llama.cpp", "transformers"]
LENGTHS = st.sampled_from([(1000, 200), (128, 1), (8000, 100), (200, 2000), (4000, 500), (64, 16)])


def _request(dep, runtime, lengths):
    model, gpu, quant, ngpu = dep
    req = {"llm_key": model, "gpu_key": gpu, "quantization": quant, "runtime": runtime,
           "input_tokens": lengths[0], "output_tokens": lengths[1]}
    if ngpu > 1:
        req.update(num_gpus=ngpu, inference_parallelism="tensor")
    return req


def _close(a, b, rel, abs_=0.0):
    return abs(a - b) <= max(rel * max(abs(a), abs(b)), abs_)


def _check_figures(r, batch=1):
    s = r["serving"]
    for name in ("running_sequences", "queued_requests", "output_throughput_tps", "total_throughput_tps",
                 "requests_per_second", "ttft_ms", "itl_ms", "e2e_latency_ms", "utilisation"):
        v = s[name]
        assert v is None or (math.isfinite(v) and v >= 0), (name, v)
    if s["ttft_ms"] is None:
        return s
    # the seed fields are the serving figures at that load (rounded to 0.1 / 0.01 as the response rounds them)
    assert _close(r["estimated_throughput_tps"], s["output_throughput_tps"], 0.001, 0.11)
    assert _close(r["tftt"], s["ttft_ms"], 0.001, 0.11)
    assert _close(r["ms_per_token"], s["itl_ms"], 0.001, 0.011)
    assert _close(r["per_user_tps"], batch * 1000 / s["itl_ms"], 0.005, 0.11)
    out = s["output_tokens"]
    assert _close(s["e2e_latency_ms"], s["ttft_ms"] + (out - 1) * s["itl_ms"], 0.003, 0.02 * out)
    return s


@checks(80)
@given(dep=st.sampled_from(DEPLOYMENTS), runtime=st.sampled_from(RUNTIMES), lengths=LENGTHS,
       users=st.lists(st.sampled_from([1, 2, 3, 8, 20, 64, 150, 400, 1024]), min_size=2, max_size=3, unique=True))
def test_closed_loop_invariants(dep, runtime, lengths, users):
    rows = []
    for u in sorted(users):
        r = vramplan.estimate_inference(dict(_request(dep, runtime, lengths), concurrent_users=u))
        s = _check_figures(r)
        if s["ttft_ms"] is None:
            return  # nothing fits: not a load question
        assert s["running_sequences"] <= u + 1e-9
        assert _close(s["running_sequences"] + s["queued_requests"], u, 0.001, 0.01)
        # Little's law: every client is either waiting or in service for one e2e latency (requests/s from the total
        # throughput, which the response rounds to 0.1 tokens/s; requests_per_second has only 4 decimals)
        rps = s["total_throughput_tps"] / (s["input_tokens"] + s["output_tokens"])
        assert _close(rps * s["e2e_latency_ms"] / 1000, u, 0.01 + 0.05 / s["total_throughput_tps"], 0.02)
        rows.append((u, s))
    for (u0, a), (u1, b) in zip(rows, rows[1:]):
        # 2 %: a static batch's prompts run in whole passes (llama.cpp's 512-token ubatches: 8 x 128 tokens in 2
        # passes, 150 x 128 = 19,200 in ceil(37.5) = 38), so its throughput may dip by the last pass's rounding
        assert b["output_throughput_tps"] >= a["output_throughput_tps"] * 0.98 - 0.1, (u0, a, u1, b)
        assert b["itl_ms"] >= a["itl_ms"] * 0.995 - 0.011, (u0, a, u1, b)
        assert b["ttft_ms"] >= a["ttft_ms"] * 0.995 - 0.011, (u0, a, u1, b)


SUSTAINS = re.compile(r"sustains about ([0-9.e+-]+) requests/s")


@checks(50)
@given(dep=st.sampled_from(DEPLOYMENTS), runtime=st.sampled_from(["vllm", "sglang", "tensorrt-llm", "tgi"]), lengths=LENGTHS,
       fractions=st.lists(st.sampled_from([0.05, 0.2, 0.5, 0.8, 0.9]), min_size=2, max_size=3, unique=True))
def test_open_loop_invariants(dep, runtime, lengths, fractions):
    req = _request(dep, runtime, lengths)
    flood = vramplan.estimate_inference(dict(req, request_rate=1e6))
    s = flood["serving"]
    assert s["ttft_ms"] is None and s["itl_ms"] is None and s["e2e_latency_ms"] is None
    found = [SUSTAINS.search(w) for w in flood["warnings"] if SUSTAINS.search(w)]
    if s["running_sequences"] < 1:
        return  # the KV cache holds no sequence: nothing is sustainable
    cap = float(found[0].group(1))
    prev = None
    for f in sorted(fractions):
        rate = cap * f
        r = vramplan.estimate_inference(dict(req, request_rate=rate))
        s = _check_figures(r)
        assert s["ttft_ms"] is not None, (rate, cap)
        assert s["limited_by"] == "arrival_rate"
        assert _close(s["requests_per_second"], rate, 0.005, 0.0001)
        # Little's law over the whole stay: arrivals x e2e = in service + waiting
        assert _close(rate * s["e2e_latency_ms"] / 1000, s["running_sequences"] + s["queued_requests"], 0.02, 0.05)
        if prev is not None:
            for name in ("ttft_ms", "itl_ms", "e2e_latency_ms"):
                assert s[name] >= prev[name] * 0.995 - 0.011, (name, prev, s)
        prev = s
