"""Replay a transformers / peft training run through the caching-allocator model, without a GPU.

The run executes for real on PyTorch's meta device (every op, every shape, autograd, gradient
checkpointing, peft, foreach AdamW), a TorchDispatchMode records each new storage and a weak
reference records its release, and the allocations and frees are replayed through
vramplan.allocator.caching (engine/allocator/caching.py). What the meta device cannot run is put back as CUDA runs it:

* SDPA: flash attention without a mask (grouped KV heads natively; output laid out like q, as
  flash's empty_like(q) does), the memory-efficient kernel with the additive mask SDPA converts a
  bool mask into (aten attention.cpp convert_boolean_attn_mask);
* torch.autocast(bfloat16) for fp32 weights: F.linear and SDPA cast fp32 inputs to bf16, leaf
  weights' casts cached per autocast region (a module-level patch, so checkpoint's recomputation in
  the backward thread sees it);
* AdamW with foreach=True (CUDA's default); bitsandbytes AdamW8bit as its states (uint8 moments +
  fp32 absmax per 256-element block; fp32 states under 4096 elements), updated in place.

Not covered: bitsandbytes 4-bit / 8-bit layers (no meta kernels), allocations outside PyTorch's
allocator (cuBLAS's own workspace beyond the 69,207,040 bytes the calibration counted before the
model), kernels' internal scratch.

Needs torch, transformers and peft (not dependencies of vramplan):

    python benchmarks/allocator/replay_training.py [ID-SUBSTRING] [--phases] [--segments]
    python benchmarks/allocator/replay_training.py --plan   # predictions for measure.py's training cases
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import weakref
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import transformers.masking_utils as _masking
from transformers import AutoConfig, AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vramplan.allocator import caching as cca  # noqa: E402  (the engine's allocator model)
from vramplan.catalog import get_catalog  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CALIBRATION = [REPO.parent / "shared" / "calibration" / "h200-transformers.jsonl",
               REPO / "benchmarks" / "measured" / "h200-2026-11-26.jsonl"]
# cuBLAS + cuBLASLt workspaces the calibration found allocated before the model: transformers' library_workspace_mib
WORKSPACE_BYTES = round(get_catalog().runtimes.get("transformers").data["constants"]["library_workspace_mib"]["value"] * 1048576)

# packed-sequence detection reads values (.item()), which meta tensors do not have; no packing here
_masking.find_packed_sequence_indices = lambda *a, **k: None


class Recorder(TorchDispatchMode):
    """Each storage an op creates (views and in-place results share one) and, by weak reference, its release."""

    def __init__(self):
        super().__init__()
        self.events: list[tuple] = []
        self.n = 0

    def track(self, t) -> None:
        if not isinstance(t, torch.Tensor):
            return
        s = t.untyped_storage()
        if getattr(s, "_replay_tracked", False):
            return
        s._replay_tracked = True
        self.n += 1
        self.events.append(("a", self.n, s.nbytes()) + self.describe(t))
        weakref.finalize(s, self.events.append, ("f", self.n, s.nbytes()))

    def describe(self, t) -> tuple:
        """What an allocation event carries beyond (kind, handle, bytes): nothing here."""
        return ()

    def mark(self, label: str) -> None:
        self.events.append(("m", label, 0))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            self.track(t)
        return out


class _Autocast:
    on = False
    cache: dict | None = None

    @classmethod
    def cast(cls, a):
        if cls.on and isinstance(a, torch.Tensor) and a.dtype == torch.float32:
            if cls.cache is not None and a.is_leaf and a.requires_grad:
                if id(a) not in cls.cache:
                    cls.cache[id(a)] = a.to(torch.bfloat16)
                return cls.cache[id(a)]
            return a.to(torch.bfloat16)
        return a


class autocast_bf16:
    def __init__(self, cache: bool = True):
        self.use_cache = cache

    def __enter__(self):
        _Autocast.on, _Autocast.cache = True, ({} if self.use_cache else None)

    def __exit__(self, *exc):
        _Autocast.on, _Autocast.cache = False, None


_linear = F.linear


def _linear_autocast(x, w, b=None):
    return _linear(_Autocast.cast(x), _Autocast.cast(w), None if b is None else _Autocast.cast(b))


F.linear = _linear_autocast
_sdpa = F.scaled_dot_product_attention


def _sdpa_meta(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if q.device.type != "meta":
        return _sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                     enable_gqa=enable_gqa)
    q, k, v = _Autocast.cast(q), _Autocast.cast(k), _Autocast.cast(v)
    if attn_mask is None:
        return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, False, scale=scale)[0]
    # aten/src/ATen/native/transformers/attention.cpp scaled_dot_product_attention, memory-efficient branch:
    # convert_boolean_attn_mask (zeros_like in the query's dtype, masked_fill_ of the logical_not), then preprocess_mask
    # (pad_bias<8>: a padded copy when a stride but the last is not a multiple of 8 - the converted mask is released)
    bias = attn_mask
    if attn_mask.dtype == torch.bool:
        bias = torch.zeros_like(attn_mask, dtype=q.dtype)
        bias.masked_fill_(attn_mask.logical_not(), float("-inf"))
    if any(st % 8 for st in bias.stride()[:-1]) or bias.stride(-1) != 1:
        last = bias.shape[-1]
        bias = F.pad(bias, (0, 8 - last % 8))[..., :last]
    bias = bias.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, bias, True, dropout_p, is_causal,
                                                                      scale=scale)[0]
    # inference: no logsumexp (should_compute_logsumexp is false) and, without dropout, the kernel's seed and offset
    # are CPU tensors (attention.cu _efficient_attention_forward) - only its output, written in (batch, tokens, heads,
    # dim) order, is on the GPU
    return torch.empty(q.shape[0], q.shape[2], q.shape[1], v.shape[-1], dtype=q.dtype, device=q.device).transpose(1, 2)


F.scaled_dot_product_attention = _sdpa_meta


class AdamW8bitStates:
    """bitsandbytes AdamW8bit's memory on the meta device (Optimizer8bit, min_8bit_size 4096, blocksize 256)."""

    def __init__(self, params):
        self.params, self.state = list(params), {}

    def step(self):
        for p in self.params:
            if id(p) in self.state:
                continue
            if p.numel() >= 4096:
                blocks = (p.numel() + 255) // 256
                self.state[id(p)] = [torch.zeros(p.numel(), dtype=torch.uint8, device=p.device) for _ in range(2)] + \
                    [torch.zeros(blocks, dtype=torch.float32, device=p.device) for _ in range(2)]
            else:
                self.state[id(p)] = [torch.zeros_like(p, dtype=torch.float32) for _ in range(2)]

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None


def simulate(case: dict, steps: int = 3) -> cca.Allocator:
    """Peak allocated / reserved of the calibration method: the model built on the GPU, then `steps`
    optimizer steps (README of the calibration folder)."""
    st, cfg = case["settings"], case["hf_config"]
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[st["weights_dtype"]]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), dtype=dtype,
                                                 attn_implementation="eager" if st.get("attention") == "eager" else "sdpa")
        if st["method"] == "lora":
            from peft import LoraConfig, get_peft_model
            if st.get("gradient_checkpointing"):
                model.enable_input_require_grads()
            model = get_peft_model(model, LoraConfig(r=st["lora_rank"], lora_alpha=2 * st["lora_rank"], lora_dropout=0.0,
                                                     target_modules=st.get("lora_target_modules") or "all-linear",
                                                     task_type="CAUSAL_LM"))
    if st.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model.train()
    alloc = cca.Allocator(expandable_segments="expandable_segments:True" in (st.get("allocator") or ""))
    alloc.malloc("workspace", WORKSPACE_BYTES)
    seen: set[int] = set()
    for p in model.parameters():  # built on the GPU in construction order
        if id(p) not in seen:
            seen.add(id(p))
            alloc.malloc(("param", id(p)), p.numel() * p.element_size())
    for t in list(model.parameters()) + list(model.buffers()):
        t.untyped_storage()._replay_tracked = True
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = AdamW8bitStates(trainable) if "8bit" in (st.get("optimizer") or "").lower() else \
        torch.optim.AdamW(trainable, lr=1e-5, foreach=True)  # CUDA's default; on meta it would loop per tensor
    mixed = dtype == torch.float32
    ga = st.get("gradient_accumulation_steps", 1)
    rec = Recorder()
    with rec:
        for step in range(steps):
            for _ in range(ga):
                rec.mark(f"fwd{step}")
                ids = torch.randint(0, cfg["vocab_size"], (st["batch_size"] // ga, st["seq_length"]), device="meta")
                if mixed:
                    with autocast_bf16():
                        loss = model(input_ids=ids, labels=ids, use_cache=False).loss / ga
                else:
                    loss = model(input_ids=ids, labels=ids, use_cache=False).loss / ga
                rec.mark(f"bwd{step}")
                if mixed:
                    with autocast_bf16(cache=False):  # checkpoint recomputes under the forward's autocast state
                        loss.backward()
                else:
                    loss.backward()
                del loss
            rec.mark(f"opt{step}")
            opt.step()
            opt.zero_grad(set_to_none=True)
            gc.collect()
    gc.collect()
    alloc.phases = []
    alloc.segments = [("model", n, seg) for n, seg in alloc.opened]  # (phase, request, segment) per new segment
    phase = "model"
    for kind, handle, size in rec.events:
        if kind == "m":
            alloc.phases.append((phase, alloc.reserved))
            phase = handle
        elif kind == "a":
            opened = len(alloc.opened)
            alloc.malloc(handle, size)
            alloc.segments += [(phase, n, seg) for n, seg in alloc.opened[opened:]]
        elif handle in alloc.handles:
            alloc.free(handle)
    alloc.phases.append((phase, alloc.reserved))
    return alloc


def segment_report(case: dict, a: cca.Allocator) -> str:
    """Where the reserve comes from: per phase, the segments opened, and how many of them the loss
    phase's logit tensors opened (a request of micro-batch tokens x vocab x 2 or 4 bytes)."""
    st = case["settings"]
    tokens = st["batch_size"] // st.get("gradient_accumulation_steps", 1) * st["seq_length"]
    logit_sizes = {tokens * case["hf_config"]["vocab_size"] * b for b in (2, 4)}
    out: dict[str, list[float]] = {}
    for phase, n, seg in a.segments:
        row = out.setdefault(phase, [0, 0.0, 0, 0.0])
        if n in logit_sizes:
            row[2] += 1
            row[3] += seg / 1e9
        else:
            row[0] += 1
            row[1] += seg / 1e9
    return "   segments opened (GB): " + " ".join(
        f"{p}:{r[1] + r[3]:.2f}" + (f"[{r[2]} logit {r[3]:.2f}]" if r[2] else "") for p, r in out.items())


def main(argv: list[str]) -> int:
    select = next((a for a in argv if not a.startswith("--")), "")
    G = 1e9
    if "--plan" in argv:
        sys.path.insert(0, str(REPO / "benchmarks" / "measured"))
        import measure
        cases = [{"id": name, "workload": wl, "hf_config": cfg, "settings": st, "measured": None}
                 for name, (_, cfg, wl, st) in measure.CASES_I16.items() if wl == "finetuning"]
    else:
        cases = [json.loads(line) for path in CALIBRATION if path.exists() for line in path.read_text().splitlines() if line.strip()]
    errors = []
    for case in cases:
        if case["workload"] != "finetuning" or select not in case["id"]:
            continue
        if case["settings"]["weights_dtype"] == "nf4":
            print(f"{case['id'][:60]:60} skipped: bitsandbytes 4-bit layers have no meta kernels")
            continue
        a = simulate(case)
        m = case.get("measured")
        if "--phases" in argv:
            print("   reserved at the end of each phase (GB):", " ".join(f"{p}:{r / G:.2f}" for p, r in a.phases))
        if "--segments" in argv:
            print(segment_report(case, a))
        if m:
            err = (a.peak_reserved - m["peak_reserved_bytes"]) / m["peak_reserved_bytes"] * 100
            errors.append(abs(err))
            print(f"{case['id'][:60]:60} allocated {m['peak_allocated_bytes'] / G:6.2f} sim {a.peak_allocated / G:6.2f}"
                  f" | reserved {m['peak_reserved_bytes'] / G:6.2f} sim {a.peak_reserved / G:6.2f} ({err:+.1f}%)", flush=True)
        else:
            print(f"{case['id'][:60]:60} predicted allocated {a.peak_allocated / G:6.2f} reserved {a.peak_reserved / G:6.2f} GB",
                  flush=True)
    if errors:
        print(f"\n{len(errors)} runs: median |error| of peak reserved {statistics.median(errors):.1f}%, max {max(errors):.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
