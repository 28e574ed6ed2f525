"""benchmarks/replay_burst.py's scheduler replays on bursts small enough to follow round by round."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "replay_burst", Path(__file__).resolve().parents[1] / "benchmarks" / "replay_burst.py")
rb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rb)


def test_prefix_replay_runs_what_the_pool_holds_first_come():
    # two requests of 2 prompt + 2 answer tokens in a 5-token pool: round 1 holds request 0 (3 tokens, request 1's 3
    # more do not fit), round 2 request 0 again (4) - it ends; rounds 3 and 4 request 1 (3, then 4). One at a time,
    # never pushed out once running.
    r = rb.replay_prefix(2, 2, 2, 5)
    assert r == {"rounds": 4, "running": 1.0, "preempted": 0, "recomputed": 0}


def test_prefix_replay_keeps_a_preempted_requests_answer():
    # two requests of 1 + 3 tokens in a 6-token pool: round 1 both (2 + 2), round 2 both (3 + 3), round 3 request 0
    # needs 4 and request 1 the 4 past it - request 1 waits with its 2 tokens; round 3 ends request 0 (3 made); round 4
    # request 1 resumes at 1 + 2 and makes its last token: its prompt and 2 answer tokens are recomputed.
    r = rb.replay_prefix(1, 3, 2, 6)
    assert r["rounds"] == 4 and r["preempted"] == 1 and r["recomputed"] == 1 + 2
    assert r["running"] == (2 + 2 + 1 + 1) / 4


def test_chunked_replay_prefills_then_decodes():
    # a pool and budget that hold everything, one-token blocks: round 1 admits both 2-token prompts and samples their
    # first tokens, round 2 decodes their second - both end after 2 rounds, nothing preempted or recomputed.
    r = rb.replay_chunked(2, 2, 2, 10**6, budget=512, block=1, watermark=0)
    assert r == {"rounds": 2, "running": 2.0, "preempted": 0, "recomputed": 0}


def test_chunked_replay_spreads_a_prompt_over_the_budget():
    # one 10-token prompt, a 4-token budget: chunks of 4, 4 and 2 (the third samples the first token), then one decode
    # round for the second - 4 rounds, 2 tokens made.
    r = rb.replay_chunked(10, 2, 1, 10**6, budget=4, block=1, watermark=0)
    assert r["rounds"] == 4 and r["running"] == 2 / 4 and r["preempted"] == 0
