"""Replay an open loop (Poisson arrivals) through a continuous-batching step loop, beside the engine's open-loop answer.

The engine answers an open loop analytically (formulas/performance/serving.yaml, serving_load.yaml): the concurrency a
request sees is the fixed point m = 1 + lambda E2E(m) on the line through one sequence and the cap (which is the mean
of the birth-death process whose completion rate at n running is n / E2E(n)), a request's first token comes after its
own prefill, the decodes beside it, half a round and the prompts arriving beside it (gated rounds: each takes the
prompts that arrived during the one before), and near capacity the birth-death process's wait for a slot (the queue
beyond the cap, srv_slot_wait_s) is added. This replays the same deployment step by step with the engine's own costs -
a round of n decodes costs srv_round_one_s + (n - 1) x the per-sequence slope to the cap's round (srv_round_cap_s),
each prompt taken in a round adds its prompt work (srv_prompt_work_s: its GEMMs and the rest, its tokens' collectives
included) less what of its GEMMs hides under the round's weight read - with Poisson arrivals, a first-come queue, the
runtime's per-step token budget and its admission cap, and prints both.

It is a check of the queueing approximations, not of the costs (both sides use the engine's): the replay's first token
waits for the round in progress (longer when it carries prompts: an arrival lands in a long round more often) and comes
at the end of a round that also prefills the prompts that arrived beside it, which the analytic TTFT counts as gated
rounds whose lengths carry on (srv_prompt_batch_s); and near capacity its queue forms when the number running reaches
the cap, as the birth-death wait has it. A round's decodes cost the line through one sequence and the cap
(srv_round_one_s, srv_round_cap_s), which is above the engine's round between the two where that is flat (weight-bound)
and then rising; a prompt's GEMMs run while the weights stream, in the part of the read the decodes' own GEMMs leave
free (a request alone: 26.6 ms to its first token, the engine's 26.5). Dense models only: a MoE round's cost is not
linear in the sequences (the experts they touch). A second table replays closed loops of identical requests whose
clients all start at once, as a fixed-length benchmark runs them: requests admitted in the same round end in the same
round and come back together, so their prompts share a round for good (the engine's closed loop spreads them as real
traffic's lengths would).

    .venv/bin/python benchmarks/replay_open_loop.py
"""

from __future__ import annotations

import random

import vramplan
from vramplan.estimate import trace_values

CASES = [
    {"llm_key": "llama-3.1-8b-instruct", "gpu_key": "h100_80", "quantization": "bf16", "runtime": "vllm",
     "input_tokens": 1000, "output_tokens": 200},
    {"llm_key": "llama-3.1-8b-instruct", "gpu_key": "h100_80", "quantization": "bf16", "runtime": "vllm",
     "input_tokens": 4000, "output_tokens": 300},
    {"llm_key": "llama-3.3-70b-instruct", "gpu_key": "h100_80", "quantization": "fp8", "num_gpus": 2, "inference_parallelism": "tensor", "runtime": "vllm",
     "input_tokens": 2000, "output_tokens": 500},
]
LOADS = [0.05, 0.2, 0.5, 0.7, 0.85, 0.95]   # arrival rate as a share of the engine's sustainable rate


def traced(body: dict) -> tuple[dict, dict]:
    out = vramplan.estimate_inference({**body, "trace": True}, suggestions=False)
    return out, trace_values(out)


def _round(now: float, waiting: list, running: list, last: dict, gaps: list, cap: int, budget: int, prompt: int,
           answer: int, one: float, slope: float, work: float, hide: tuple = (0.0, 0.0, 0.0)) -> tuple[float, list, list]:
    """One round: the decodes running, and the waiting prompts taken first come, first served within the token budget
    and the cap (chunk by chunk); returns the time it ends, the requests whose prompts it finished (their first token)
    and those whose answers it ended. ``hide`` = (a prompt's GEMM time, the round's weight read, a decode's GEMM time):
    the prompts' GEMMs run while the weights stream, in the part of the read the decodes' own GEMMs leave free, as the
    engine's mixed round has it (srv_round_op_s: max(weights, decodes' and prompts' GEMMs)); zeros add the whole prompt
    work on top."""
    n, left, tokens, entered = len(running), budget - len(running), 0, []
    for w in waiting:
        if left <= 0 or n + len(entered) >= cap:
            break
        chunk = min(left, w[1])
        w[1] -= chunk
        left -= chunk
        tokens += chunk
        if w[1] == 0:
            entered.append(w)
    gemm, weights, token = hide
    share = tokens / prompt
    now += one + max(n - 1, 0) * slope + share * work - min(share * gemm, max(weights - max(n, 1) * token, 0.0))
    for r in running:
        r[1] += 1
        gaps.append(now - last[r[0]])
        last[r[0]] = now
    ended = [r for r in running if r[1] >= answer]
    for r in ended:
        running.remove(r)
    for w in entered:
        waiting.remove(w)
        last[w[0]] = now
        running.append([w[0], 1])
    return now, entered, ended


def replay(rate: float, prompt: int, answer: int, cap: int, budget: int, one: float, slope: float, work: float,
           requests: int = 6000, seed: int = 1, hide: tuple = (0.0, 0.0, 0.0)) -> tuple[float, float, float]:
    """Mean TTFT, ITL and E2E (s) of ``requests`` Poisson arrivals, the first tenth left out as warm-up."""
    rng = random.Random(seed)
    arrivals, at = [], 0.0
    for _ in range(requests):
        at += rng.expovariate(rate)
        arrivals.append(at)
    now, waiting, running, arrived, finished = 0.0, [], [], 0, 0
    first, done, last, gaps = [0.0] * requests, [0.0] * requests, {}, []
    while finished < requests:
        while arrived < requests and arrivals[arrived] <= now:
            waiting.append([arrived, prompt])
            arrived += 1
        if not running and not waiting:
            now = arrivals[arrived]
            continue
        now, entered, ended = _round(now, waiting, running, last, gaps, cap, budget, prompt, answer, one, slope, work, hide)
        for r in ended:
            done[r[0]] = now
            finished += 1
        for w in entered:
            first[w[0]] = now
    skip = requests // 10
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return (mean([first[i] - arrivals[i] for i in range(skip, requests)]), mean(gaps),
            mean([done[i] - arrivals[i] for i in range(skip, requests)]))


def replay_closed(users: int, prompt: int, answer: int, cap: int, budget: int, one: float, slope: float, work: float,
                  requests: int = 3000, spread: float = 0.0, seed: int = 2, hide: tuple = (0.0, 0.0, 0.0)) -> tuple[float, float, float]:
    """Mean TTFT, ITL (s) and output tokens/s of ``users`` clients that each send the next request when the last answer
    ends (identical lengths), the first fifth of the requests left out. The clients' first requests leave at once
    (``spread`` 0, as a fixed-length benchmark sends them) or at uniform random times over ``spread`` seconds (clients
    out of step, as varying lengths leave them)."""
    rng = random.Random(seed)
    pending = sorted((rng.uniform(0, spread) if spread else 0.0, i) for i in range(users))
    now, waiting, running, issued, finished = 0.0, [], [], users, 0
    start, last = {i: at for at, i in pending}, {}
    ttfts, gaps = [], []
    while finished < requests:
        while pending and pending[0][0] <= now:
            waiting.append([pending.pop(0)[1], prompt])
        if not running and not waiting:
            now = pending[0][0]
            continue
        now, entered, ended = _round(now, waiting, running, last, gaps, cap, budget, prompt, answer, one, slope, work, hide)
        for w in entered:
            ttfts.append(now - start[w[0]])
        for _ in ended:                                     # each client sends its next request at once
            finished += 1
            waiting.append([issued, prompt])
            start[issued] = now
            issued += 1
    skip = len(ttfts) // 5
    return sum(ttfts[skip:]) / len(ttfts[skip:]), sum(gaps) / len(gaps), finished * answer / now


def _costs(body: dict) -> tuple[int, int, float, float, float, float, str, tuple]:
    """The engine's cap, token budget, one-sequence round, per-sequence slope to the cap's round, a prompt's work,
    sustainable sequence rate for this deployment, a name for it, and what of a prompt's work hides under a round's
    weight read (_round's ``hide``)."""
    _, t = traced({**body, "concurrent_users": 1})
    cap, budget = int(t["srv_n_cap"]), int(t["prefill_budget"]) or 10**9
    one = t["srv_round_one_s"]
    slope = (t["srv_round_cap_s"] - one) / max(cap - 1, 1)
    work = t["srv_prompt_work_s"]
    name = f"{body['llm_key']} {body.get('num_gpus', 1)}x{body['gpu_key']} {body['input_tokens']}/{body['output_tokens']}"
    hide = (t["srv_prompt_gemm_s"], t["srv_weights_s"], t["srv_token_s"])
    return cap, budget, one, slope, work, t["srv_capacity_seq_rate"], name, hide


def main() -> None:
    print("| case | load | engine TTFT ms | replay TTFT ms | engine ITL ms | replay ITL ms | engine E2E s | replay E2E s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for body in CASES:
        cap, budget, one, slope, work, capacity, name, hide = _costs(body)
        for load in LOADS:
            rate = load * capacity
            out, _ = traced({**body, "request_rate": rate})
            s = out["serving"]
            ttft, itl, e2e = replay(rate, body["input_tokens"], body["output_tokens"], cap, budget, one, slope, work, hide=hide)
            print(f"| {name} | {load:.2f} | {s['ttft_ms']:,.1f} | {ttft * 1000:,.1f} | {s['itl_ms']:.2f} | {itl * 1000:.2f} | "
                  f"{s['e2e_latency_ms'] / 1000:.2f} | {e2e:.2f} |")
    print()
    print("Closed loops of identical requests: clients in step (all starting at once, as a fixed-length benchmark runs "
          "them) and out of step (first requests spread over one end-to-end time):")
    print()
    print("| case | clients | engine TTFT ms | replay TTFT ms, in step / out of step | engine ITL ms | replay ITL ms, in step / "
          "out of step | engine tok/s | replay tok/s, in step / out of step |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for body in CASES[:2]:
        cap, budget, one, slope, work, _, name, hide = _costs(body)
        for users in (1, 8, 64, 256):
            out, _ = traced({**body, "concurrent_users": users})
            s = out["serving"]
            lengths = (body["input_tokens"], body["output_tokens"], cap, budget, one, slope, work)
            ttft, itl, tps = replay_closed(users, *lengths, hide=hide)
            ttft2, itl2, tps2 = replay_closed(users, *lengths, spread=s["e2e_latency_ms"] / 1000, hide=hide)
            print(f"| {name} | {users} | {s['ttft_ms']:,.1f} | {ttft * 1000:,.1f} / {ttft2 * 1000:,.1f} | {s['itl_ms']:.2f} | "
                  f"{itl * 1000:.2f} / {itl2 * 1000:.2f} | {s['output_throughput_tps']:,.0f} | {tps:,.0f} / {tps2:,.0f} |")


if __name__ == "__main__":
    main()
