"""benchmarks/replay_open_loop.py: an open loop stepped round by round with the engine's own costs, beside the
engine's analytic answer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "replay_open_loop", Path(__file__).resolve().parents[1] / "benchmarks" / "replay_open_loop.py")
rol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rol)


def test_replay_of_one_request_at_a_time():
    # arrivals far apart: each request's prompt is taken alone in the round after it arrives (100-token prompt, work
    # 0.01 s, rounds of one sequence 0.002 s), so its first token comes when that round ends - 0.002 + 0.01 s after
    # the round starts, which is when it arrives (the loop idles until then) - and its 3 answer tokens 0.002 s apart
    ttft, itl, e2e = rol.replay(0.001, 100, 3, 8, 512, 0.002, 0.0, 0.01, requests=50)
    assert ttft == pytest.approx(0.012, rel=1e-9)
    assert itl == pytest.approx(0.002, rel=1e-9)
    assert e2e == pytest.approx(0.012 + 2 * 0.002, rel=1e-9)


def test_a_prompts_gemms_hide_under_the_weight_read_the_decodes_leave_free():
    # one request at a time (arrivals far apart), rounds of one sequence 0.002 s reading 0.0015 s of weights, a
    # decode's GEMMs 0.0001 s: the 100-token prompt's 0.01 s of work holds 0.008 s of GEMMs, of which 0.0015 - 0.0001
    # = 0.0014 s run while the weights stream - its round 0.002 + 0.01 - 0.0014 = 0.0106 s
    ttft, itl, e2e = rol.replay(0.001, 100, 3, 8, 512, 0.002, 0.0, 0.01, requests=50, hide=(0.008, 0.0015, 0.0001))
    assert ttft == pytest.approx(0.0106, rel=1e-9)
    assert itl == pytest.approx(0.002, rel=1e-9)


def test_engine_ttft_below_capacity_follows_the_replay():
    # Llama 3.1 8B on an H100 in vLLM, 1000-token prompts at half the sustainable rate: with the prompts that arrive
    # beside a request and the longer rounds arrivals land in (srv_prompt_batch_s) the analytic TTFT is within 10% of
    # the replay's (41.1 ms against 42.5); without them it is 20% short (33.9)
    body = rol.CASES[0]
    cap, budget, one, slope, work, capacity, _, hide = rol._costs(body)
    rate = 0.5 * capacity
    ttft, itl, e2e = rol.replay(rate, 1000, 200, cap, budget, one, slope, work, requests=3000, hide=hide)
    out, op = rol.traced({**body, "request_rate": rate})
    assert abs(out["serving"]["ttft_ms"] / 1000 / ttft - 1) < 0.1
    assert abs((out["serving"]["ttft_ms"] / 1000 - op["srv_prompt_batch_s"]) / ttft - 1) > 0.15
    assert abs(out["serving"]["itl_ms"] / 1000 / itl - 1) < 0.1 and abs(out["serving"]["e2e_latency_ms"] / 1000 / e2e - 1) < 0.1
    # a request alone: the replay's first token is the engine's (26.5 ms; a replay that added the whole prompt work
    # to a one-sequence round gave 31.9)
    alone, _, _ = rol.replay(1e-3, 1000, 200, cap, budget, one, slope, work, requests=20, hide=hide)
    single = rol.traced({**body, "concurrent_users": 1})[0]["serving"]["ttft_ms"] / 1000
    assert alone == pytest.approx(single, rel=0.01)


def test_closed_loop_replay_keeps_identical_requests_together():
    # two clients, 100-token prompts of work 0.01 s, 2-token answers, rounds of 0.002 s: both prompts share the first
    # round (0.002 + 2 x 0.01 = 0.022 s, both first tokens then), the second round (0.002 s) ends both answers, both
    # clients send again at once - every request's first token 0.022 s after it is sent, 4 answers of 2 tokens in
    # 2 x 0.024 s
    ttft, itl, tps = rol.replay_closed(2, 100, 2, 8, 512, 0.002, 0.0, 0.01, requests=4)
    assert ttft == pytest.approx(0.022, rel=1e-9)
    assert itl == pytest.approx(0.002, rel=1e-9)
    assert tps == pytest.approx(4 * 2 / 0.048, rel=1e-9)
