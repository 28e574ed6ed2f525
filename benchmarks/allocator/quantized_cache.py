"""What transformers' quantized KV cache allocates beside the cache it keeps: QuantizedLayer.update replayed on the CPU,
every allocation and free recorded by the PyTorch profiler, in order.

`generate(cache_implementation="quantized")` builds a QuantizedCache (transformers cache_utils.py): the `quanto` backend
by default (generation/utils.py: cache_config.pop("backend", "quanto"); nbits 2 or 4), `hqq` for 8 bits (nbits 1, 2, 3,
4 or 8). Each layer keeps its keys and values quantized in groups of 64 and up to residual_length - 1 = 127 newer tokens in
16 bits; an update dequantizes the whole stored cache, concatenates it with the residual and the new token for attention,
and every 128th decode step quantizes that concatenation again (the prefill quantizes the prompt). The transients are the
same operations on any device; HQQ's optimizer works in fp16 on CUDA and fp32 on the CPU (hqq/core/optimize.py
`dtype = float16 if device.type == "cuda" else float32`), so the CUDA branch is taken here.

Printed in units of one layer's keys at 16 bits for the tokens concerned (the prompt at prefill, the context at a decode
step): the peak an update allocates above what was live before it, and what it leaves behind (the stored cache at
prefill; the returned keys and values, which attention holds, at a decode step). formulas/memory/activations.yaml
kv_quant_prefill_bytes / kv_quant_decode_bytes use them (catalogs/runtimes/transformers.yaml kv_quant_* constants).

Needs torch, transformers, optimum-quanto and hqq (CPU is enough; about a minute):

    python benchmarks/allocator/quantized_cache.py [PROMPT_TOKENS ...]
"""

from __future__ import annotations

import gc
import sys

import torch
from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import Action

import hqq.core.optimize as hqq_optimize

hqq_optimize.float32 = torch.float16  # optimize_weights_proximal_legacy's CUDA branch: fp16 working copies
from transformers.cache_utils import HQQQuantizedLayer, QuantoQuantizedLayer  # noqa: E402

BATCH, KV_HEADS, HEAD_DIM = 4, 8, 128


def allocated(fn):
    """``fn()`` under the profiler: (its result, the peak bytes live above the start, the bytes live at the end above
    the start), counting every CPU allocation of 1 KiB or more."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        out = fn()
    live = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if size < 1024:
            continue
        live += size if action == Action.CREATE else -size if action == Action.DESTROY else 0
        peak = max(peak, live)
    return out, peak, live


def states(tokens: int):
    """Keys and values as the attention hands them to the cache: projections of (batch, tokens, heads, dim) viewed as
    (batch, heads, tokens, dim); the rotary embedding keeps the keys' strides."""
    shape = (BATCH, tokens, KV_HEADS, HEAD_DIM)
    return (torch.randn(shape, dtype=torch.bfloat16).transpose(1, 2),
            torch.randn(shape, dtype=torch.bfloat16).transpose(1, 2))


def study(name: str, layer, prompt: int) -> None:
    unit = 2 * BATCH * KV_HEADS * HEAD_DIM  # bytes of one token's keys at 16 bits, one layer
    k, v = states(prompt)
    out, peak, live = allocated(lambda: layer.update(k, v))
    del out
    gc.collect()
    print(f"{name:12s} prefill of {prompt}: peak {peak / (unit * prompt):.4f}, keeps {live / (unit * prompt):.4f}")
    for step in range(1, 129):
        k1, v1 = states(1)
        cached = prompt + step - 1
        out, peak, live = allocated(lambda: layer.update(k1, v1))
        del out
        gc.collect()
        if step in (1, 127, 128):
            what = "flush" if step == 128 else "step"
            print(f"{name:12s} decode {what} {step:3d} over {cached} cached: peak {peak / (unit * cached):.4f}, "
                  f"returns {live / (unit * cached):.4f}")


def main(argv: list[str]) -> None:
    for prompt in [int(a) for a in argv] or [512, 2048]:
        study("quanto int4", QuantoQuantizedLayer(nbits=4), prompt)
        study("hqq int8", HQQQuantizedLayer(nbits=8), prompt)


if __name__ == "__main__":
    main(sys.argv[1:])
