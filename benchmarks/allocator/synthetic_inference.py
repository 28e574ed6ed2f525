"""The engine's written generation sequence (vramplan.allocator.inference) against the one transformers records.

For each calibration inference run the written sequence covers (and any config given as JSON), records what
transformers allocates for generate's prefill and first decode step on the meta device (replay_training's
recorder: every storage an op creates and releases), replays both through the allocator model and prints the
peaks side by side, with the measured ones where the run has them. ``--trace`` prints the recorded events with the
op that made each (the way to write a new layer family's sequence). Needs torch and transformers (CPU is enough).

    python benchmarks/allocator/synthetic_inference.py                       # covered calibration runs
    python benchmarks/allocator/synthetic_inference.py --config '{...}' --batch 2 --seq 512 [--dtype fp32] [--attn eager]
    python benchmarks/allocator/synthetic_inference.py --config '{...}' --batch 2 --seq 24 --trace
    python benchmarks/allocator/synthetic_inference.py --expandable            # both under expandable_segments:True
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import replay_inference  # noqa: E402  (SDPA on the meta device as CUDA runs it; record)
import replay_training as rt  # noqa: E402
import vramplan  # noqa: E402
from vramplan.allocator import caching, inference  # noqa: E402
from vramplan.estimate import trace_values  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402


class Recorder(rt.Recorder):
    """replay_training's recorder, keeping the op, shape and dtype of each allocation."""

    op = ""

    def describe(self, t) -> tuple:
        return (self.op, tuple(t.shape), str(t.dtype))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.op = str(func)
        return super().__torch_dispatch__(func, types, args, kwargs)


def written(cfg: dict, quantization: str, batch: int, seq: int, attn: str,
            expandable_segments: bool = False) -> tuple[int, int] | None:
    """The engine's sequence for the same run, or None where the estimate keeps the fitted share."""
    body = {"gpu_key": "h200", "llm_key": "custom", "custom_model": cfg, "runtime": "transformers", "trace": True,
            "quantization": quantization, "kv_cache_quantization": quantization, "batch_size": batch,
            "seq_length": seq, "optimization_config": {"flash_attention": attn != "eager"},
            "runtime_settings": {"expandable_segments": int(expandable_segments)}}
    v = trace_values(vramplan.estimate_inference(body))
    if not v["infer_reserve_simulated"]:
        return None
    return inference.peaks(inference.Shape.of(v))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", help="a config.json object (default: the covered calibration runs)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa")
    ap.add_argument("--trace", action="store_true", help="print the recorded events with their ops")
    ap.add_argument("--expandable", action="store_true", help="replay both under expandable_segments:True")
    a = ap.parse_args(argv)
    runs = []
    if a.config:
        runs.append(("config", json.loads(a.config), a.dtype, a.batch, a.seq, a.attn, None))
    else:
        for path in rt.CALIBRATION:
            for line in path.read_text().splitlines() if path.exists() else []:
                c = json.loads(line)
                st = c["settings"]
                if c["workload"] == "inference" and st["weights_dtype"] in ("bf16", "fp32"):
                    runs.append((c["id"], c["hf_config"], st["weights_dtype"], st["batch_size"], st["prompt_tokens"],
                                 "eager" if st.get("attention") == "eager" else "sdpa", c["measured"]))
    G = 1e9
    for name, cfg, dt, batch, seq, attn, m in runs:
        rec, events = replay_inference.record(cfg, torch.float32 if dt == "fp32" else torch.bfloat16, batch, seq,
                                              decode_steps=1, attn=attn, recorder=Recorder,
                                              expandable_segments=a.expandable)
        if a.trace:
            for e in events:
                print(*e, sep="\t")
        w = written(cfg, dt, batch, seq, attn, a.expandable)
        line = f"{name[:52]:52} recorded {rec.peak_allocated / G:7.3f} / {rec.peak_reserved / G:7.3f} GB"
        line += (f" | written {w[1] / G:7.3f} / {w[0] / G:7.3f}" if w else " | written: not covered (fitted share)")
        if m:
            line += f" | measured {m['peak_allocated_bytes'] / G:7.3f} / {m['peak_reserved_bytes'] / G:7.3f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
