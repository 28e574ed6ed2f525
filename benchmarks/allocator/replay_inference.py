"""Replay a transformers prefill (generate's first forward: use_cache, logits_to_keep=1) through the
caching-allocator model on the meta device, as replay_training.py does for training.

SDPA as CUDA runs it: flash without a mask (16-bit), the memory-efficient kernel with a converted
window mask; fp32 without a mask goes to PyTorch's own composite on meta (with grouped KV heads that
is the math path; its fp32 scores came out ~2% below the one measured run, so treat fp32 GQA
figures as approximate). Needs torch and transformers.

    python benchmarks/allocator/replay_inference.py [ID-SUBSTRING]   # calibration runs and measure.py's plan
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import replay_training as rt  # noqa: E402  (patches SDPA / F.linear for the meta device)
from vramplan.allocator import caching as cca  # noqa: E402  (the engine's allocator model)
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

_meta_sdpa = F.scaled_dot_product_attention


def _sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if q.device.type == "meta" and q.dtype == torch.float32 and attn_mask is None:
        if k.shape[1] != q.shape[1]:  # fp32 + grouped heads: no flash / cuDNN, memory-efficient rejects GQA
            return rt._sdpa(q, k, v, attn_mask=None, dropout_p=dropout_p, is_causal=is_causal, scale=scale, enable_gqa=True)
        return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, False, dropout_p, is_causal,
                                                                      scale=scale)[0]
    return _meta_sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                      enable_gqa=enable_gqa)


F.scaled_dot_product_attention = _sdpa


def record(cfg: dict, dtype, batch: int, prompt: int, decode_steps: int = 0, attn: str = "sdpa",
           recorder=rt.Recorder, expandable_segments: bool = False) -> tuple[cca.Allocator, list[tuple]]:
    """generate's prefill (use_cache, logits_to_keep=1) and ``decode_steps`` greedy steps on the meta device: the
    allocator (expandable segments or not) after replaying what the ops allocated and released, and the recorded
    events."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), dtype=dtype, attn_implementation=attn).eval()
    alloc = cca.Allocator(expandable_segments=expandable_segments)
    alloc.malloc("workspace", rt.WORKSPACE_BYTES)
    for p in model.parameters():
        alloc.malloc(("param", id(p)), p.numel() * p.element_size())
    for t in list(model.parameters()) + list(model.buffers()):
        t.untyped_storage()._replay_tracked = True
    rec = recorder()
    with rec, torch.no_grad():
        out = model(input_ids=torch.randint(0, cfg["vocab_size"], (batch, prompt), device="meta"), use_cache=True,
                    logits_to_keep=1)
        for _ in range(decode_steps):
            cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
            del out
            gc.collect()
            rec.mark("decode step")
            out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
        del out
        gc.collect()
    for kind, handle, size, *_ in rec.events:
        if kind == "a" and size:  # a zero-byte tensor takes no block
            alloc.malloc(handle, size)
        elif kind == "f" and handle in alloc.handles:
            alloc.free(handle)
    return alloc, rec.events


def simulate(cfg: dict, dtype, batch: int, prompt: int) -> cca.Allocator:
    """The prefill alone, replayed."""
    return record(cfg, dtype, batch, prompt)[0]


def main(argv: list[str]) -> int:
    select = argv[0] if argv else ""
    sys.path.insert(0, str(rt.REPO / "benchmarks" / "measured"))
    import measure
    cases = [(name, cfg, st, None) for name, (_, cfg, wl, st) in measure.CASES_I16.items()
             if wl == "inference" and st["weights_dtype"] in ("bf16", "fp32")]
    for path in rt.CALIBRATION:
        for line in path.read_text().splitlines() if path.exists() else []:
            c = json.loads(line)
            st = c["settings"]
            if c["workload"] == "inference" and st["weights_dtype"] in ("bf16", "fp32") and st.get("attention") != "eager":
                cases.append((c["id"], c["hf_config"], st, c["measured"]))
    G = 1e9
    for name, cfg, st, m in cases:
        if select not in name:
            continue
        a = simulate(cfg, torch.float32 if st["weights_dtype"] == "fp32" else torch.bfloat16, st["batch_size"],
                     st["prompt_tokens"])
        line = f"{name[:56]:56} allocated {a.peak_allocated / G:7.3f} reserved {a.peak_reserved / G:7.3f} GB"
        if m:
            line += (f" | measured {m['peak_allocated_bytes'] / G:7.3f} {m['peak_reserved_bytes'] / G:7.3f}"
                     f" ({(a.peak_reserved - m['peak_reserved_bytes']) / m['peak_reserved_bytes'] * 100:+.2f}%)")
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
