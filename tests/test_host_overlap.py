"""TensorRT-LLM's PyTorch executor does a step's host work per running request (29 us: NVIDIA/TensorRT-LLM PR #10273,
45.11 ms a step at 1,536 requests) while the GPU runs the previous step (the overlap scheduler): a round takes the
longer of the two, not their sum (issue 11). Values worked out by hand below."""

from __future__ import annotations

import pytest

import vramplan
from test_performance import rt

BODY = {"gpu_key": "b200", "llm_key": "llama-3.1-8b", "quantization": "fp8", "runtime": "tensorrt-llm",
        "input_tokens": 16, "output_tokens": 256}


def test_constants_are_the_ones_the_arithmetic_below_assumes():
    assert rt("tensorrt-llm", "decode_seq_host_us") == 29 and rt("tensorrt-llm", "host_overlaps_step") == 1
    assert rt("tensorrt-llm-mmha", "decode_seq_host_us") == 0


def test_thousands_of_requests_are_bound_by_the_host_work():
    """2,048 sequences (one burst, they all fit on a B200): the host needs 2,048 x 29 us = 59.392 ms a step, more than
    the GPU (an 8B model's FP8 weights and ~140-token caches read in a few ms) - a decode round is the host's 59.39 ms
    and 'overhead' limits the throughput (2,048 / 59.392 ms = 34,483 tok/s at most). The time between tokens adds the
    burst's prefill ramp spread over the 255 later tokens: the executor takes the 16-token prompts (8192 - 2048 / 2) /
    16 = 448 a step, in 2048 / 448 = 4.571 groups (serving_burst.yaml srv_static_ramp_s)."""
    out = vramplan.estimate_inference({**BODY, "batch_size": 2048, "trace": True})
    s, t = out["serving"], {step["id"]: step["value"] for step in out["trace"]}
    assert s["running_sequences"] == 2048
    assert t["srv_round_op_s"] == pytest.approx(59.392e-3, rel=1e-9)
    assert t["srv_static_groups"] == pytest.approx(2048 / 448, rel=1e-12)
    assert s["itl_ms"] == pytest.approx(59.392 + t["srv_static_ramp_s"] / 255 * 1000, abs=0.006)
    assert s["limited_by"] == "overhead"
    assert s["output_throughput_tps"] < 2048 / 59.392e-3


def test_below_the_gpu_round_the_host_work_is_hidden_not_added():
    """64 sequences: host 64 x 29 us = 1.856 ms under a longer GPU round. Without the overlap (runtime_settings
    host_overlaps_step 0, as vLLM V0 waits for its host work) the round grows by exactly those 1.856 ms."""
    overlapped = vramplan.estimate_inference({**BODY, "batch_size": 64})["serving"]["itl_ms"]
    waiting = vramplan.estimate_inference({**BODY, "batch_size": 64, "runtime_settings": {"host_overlaps_step": 0}})["serving"]["itl_ms"]
    assert overlapped > 1.856
    assert waiting - overlapped == pytest.approx(1.856, abs=0.011)
