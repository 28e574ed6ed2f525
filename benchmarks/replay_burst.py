"""Replay a vLLM-style scheduler on a burst larger than its KV pool, and compare with the burst formulas.

The burst formulas (formulas/performance/serving_burst.yaml) count the rounds one client's burst takes; a queued
burst turns over at the admission cap C (prompt + half the answer in vLLM's count), because a request the runtime
preempts keeps the tokens it has generated (V0 ``Sequence.reset_state_for_recompute``, V1
``Scheduler._preempt_request`` resetting only ``num_computed_tokens``) and rejoins at the head of the queue. This
replays that scheduler round by round, two ways:

- ``prefix``: each round the running set is the longest first-come prefix whose contexts the pool holds (the test in
  tests/test_serving.py replays this one);
- ``chunked``: vLLM V0 with chunked prefill - a per-step token budget shared by the decodes and the prompt chunks,
  16-token blocks, the newest running request preempted when a decode finds no block, the preempted put back at the
  head of the queue, a waiting request admitted first come, first served once the blocks of its whole context (prompt
  and answer so far) are free beside a 1% watermark, its context then prefilled chunk by chunk.

For dstack's Meta-FP8 405B runs on 8xH100 (vLLM 0.6.3, a 91,680-token pool, benchmark_throughput.py, records of
../shared/calibration/published-serving.yaml) it prints the rounds, the mean running sequences, the preemptions and
the recomputed tokens, beside the rounds the engine counts, and the measured seconds a replayed round implies.

    .venv/bin/python benchmarks/replay_burst.py
"""

from __future__ import annotations

import math

import vramplan
from vramplan.estimate import trace_values

#: (prompt, answer, requests, measured seconds) of dstack's 8xH100 Meta-FP8 405B bursts (comparison/h100sxm5_vs_mi300x
#: csv_data/throughput_comparsion.csv), pool 91,680 tokens ("max model length (91680) supported by our setup").
DSTACK = [(128, 2048, 256, 399.64), (2048, 2048, 256, 876.48), (2048, 2048, 64, 262.46), (128, 2048, 64, 123.15)]
POOL = 91680


def replay_prefix(prompt: int, answer: int, n: int, pool: int) -> dict[str, float]:
    """The longest first-come prefix the pool holds runs each round; the rest wait, keeping their answers."""
    made, rounds, running, preempted, recomputed = [0] * n, 0, 0, 0, 0
    was = [False] * n
    while min(made) < answer:
        used, now = 0, [False] * n
        for i in range(n):
            if made[i] >= answer:
                continue
            need = prompt + made[i] + 1
            if used + need > pool:
                break
            used += need
            now[i] = True
        for i in range(n):
            if was[i] and not now[i] and made[i] < answer:
                preempted += 1
            if now[i] and not was[i] and made[i] > 0:
                recomputed += prompt + made[i]
            if now[i]:
                made[i] += 1
                running += 1
        was = now
        rounds += 1
    return {"rounds": rounds, "running": running / rounds, "preempted": preempted, "recomputed": recomputed}


def replay_chunked(prompt: int, answer: int, n: int, pool: int, budget: int = 512, block: int = 16,
                   watermark: float = 0.01) -> dict[str, float]:
    """vLLM V0 with chunked prefill: a token budget a step, blocks, preemption of the newest, FCFS admission."""
    blocks = lambda tokens: -(-tokens // block)  # noqa: E731
    total = blocks(pool)
    made, filled, held = [0] * n, [0] * n, [0] * n
    state = ["waiting"] * n
    running: list[int] = []
    waiting = list(range(n))
    used = rounds = decoded = preempted = recomputed = finished = 0
    while finished < n:
        decoding = [i for i in running if state[i] == "decode"]
        for i in decoding:                               # each decode needs room for its next token
            need = blocks(prompt + made[i] + 1) - held[i]
            while state[i] == "decode" and need > 0 and used + need > total:
                victim = running.pop()                   # the newest running request
                used -= held[victim]
                held[victim], filled[victim], state[victim] = 0, 0, "waiting"
                waiting.append(victim)
                preempted += 1
            if state[i] == "decode" and need > 0:
                used += need
                held[i] += need
        waiting.sort()                                   # first come, first served: the preempted are the earliest
        decoding = [i for i in running if state[i] == "decode"]
        left = budget - len(decoding)
        for i in running:                                # prompt chunks already started
            if state[i] == "prefill" and left > 0:
                chunk = min(left, prompt + made[i] - filled[i])
                filled[i] += chunk
                left -= chunk
                recomputed += chunk if made[i] else 0
        while waiting and left > 0:                      # admit whole contexts while their blocks are free
            i = waiting[0]
            need = blocks(prompt + made[i])
            if used + need > total * (1 - watermark):
                break
            waiting.pop(0)
            used += need
            held[i], state[i], filled[i] = need, "prefill", 0
            running.append(i)
            chunk = min(left, prompt + made[i])
            filled[i] += chunk
            left -= chunk
            recomputed += chunk if made[i] else 0
        for i in decoding:
            made[i] += 1
            decoded += 1
        for i in list(running):
            if state[i] == "prefill" and filled[i] >= prompt + made[i]:
                state[i] = "decode"
                if made[i] == 0:                         # the last chunk samples the first token
                    made[i] = 1
                    decoded += 1
            if state[i] == "decode" and made[i] >= answer:
                state[i] = "done"
                running.remove(i)
                used -= held[i]
                held[i] = 0
                finished += 1
        rounds += 1
    return {"rounds": rounds, "running": decoded / rounds, "preempted": preempted, "recomputed": recomputed}


def engine_rounds(prompt: int, answer: int, n: int) -> dict[str, float]:
    body = {"gpu_key": "h100_80", "llm_key": "llama-3.1-405b-fp8", "quantization": "fp8", "runtime": "vllm-v0",
            "num_gpus": 8, "inference_parallelism": "tensor", "runtime_settings": {"kv_pool_tokens": POOL},
            "input_tokens": prompt, "output_tokens": answer, "batch_size": n, "trace": True}
    t = trace_values(vramplan.estimate_inference(body, suggestions=False))
    burst = t["srv_burst"] == 1
    rounds = t["srv_burst_rounds"] if burst else answer + t["srv_burst_preempt_rounds"]
    return {"load": "queued" if burst else "static", "cap": t["srv_burst_cap"], "grown": t["srv_burst_grown"],
            "rounds": rounds, "preempted": t["srv_burst_preempted"], "round_ms": t["srv_itl_op_s"] * 1000}


def main() -> None:
    print("| burst | replay | rounds | mean running | preemptions | recomputed tokens | measured ms a round |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for prompt, answer, n, seconds in DSTACK:
        for name, replay in (("prefix", replay_prefix), ("chunked (512)", replay_chunked)):
            r = replay(prompt, answer, n, POOL)
            print(f"| {n} x {prompt} / {answer} | {name} | {r['rounds']:,} | {r['running']:.1f} | {r['preempted']:,} | "
                  f"{r['recomputed']:,} | {seconds / r['rounds'] * 1000:.1f} |")
    print()
    print("| burst | engine load | cap C | grown G | rounds | preemptions | decode round at the cap, ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for prompt, answer, n, _ in DSTACK:
        e = engine_rounds(prompt, answer, n)
        print(f"| {n} x {prompt} / {answer} | {e['load']} | {e['cap']:.0f} | {e['grown']:.0f} | {math.ceil(e['rounds']):,} | "
              f"{e['preempted']:.0f} | {e['round_ms']:.1f} |")


if __name__ == "__main__":
    main()
