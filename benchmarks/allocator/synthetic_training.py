"""A training run's allocations generated from vramplan's own tensor inventory, replayed through the allocator.

replay_training.py records the real op sequence (torch, transformers, peft on the meta device); this
file writes a sequence of the same shape from what an estimate already counts - no torch, only the
values of the estimate's trace (``"trace": true``): the parameter tensors per layer, the per-token
bytes a layer saves (``layer_saved_bytes_per_token``), checkpoints, the loss's logit tensors, the
gradients, the optimizer states and foreach temporaries. It is the candidate mechanism for the
engine's training allocator reserve (docs/FIDELITY.md, "The caching allocator, simulated"), kept
here while it is checked against the recorded sequences and the measured runs:

    python benchmarks/allocator/synthetic_training.py [ID-SUBSTRING] [--phases]
    python benchmarks/allocator/synthetic_training.py --sweep benchmarks/allocator/sweep-2026-12-01.jsonl

What the sequence follows, per micro-batch (Llama-style decoder layers; transformers 5.17, peft 0.21,
torch 2.11 foreach AdamW, as replay_training.py records them):

* model build: the workspaces (69,207,040 bytes), then every parameter in construction order
  (embedding, per layer q, k, v, o, gate, up, down and the two norms, final norm, untied head), then
  LoRA's fp32 A (rank x in) and B (out x rank) per targeted module;
* forward: per layer its saved tensors (``layer_saved_bytes_per_token`` x tokens, as up to four
  tokens x intermediate tensors and tokens x hidden pieces); with checkpointing they are freed at
  once and the layer input stays (tokens x hidden x residual bytes); mixed precision adds the bf16
  copies of the layer's seven weights (kept by the graph, or by autocast's cache until the forward
  ends under checkpointing). Then the head's saved inputs and the loss: bf16 logits, their fp32 copy,
  log_softmax's output; the copy is freed, then the logits (the outputs are dropped);
* backward: nll_loss's and log_softmax's fp32 gradients, the bf16 logits' gradient, the head
  weight's gradient (the tied embedding's), then per layer in reverse: the recomputation
  (checkpointing), the MLP's gradient temporaries (tokens x intermediate) around down, up and gate's
  weight gradients, attention's (tokens x q / kv) around o, q, k and v's, the norms'; the embedding
  backward's own vocab x hidden temporary at the end. A second micro-batch's weight gradients are
  temporaries added in place;
* optimizer: on the first step exp_avg and exp_avg_sq per trainable tensor in order (bitsandbytes
  8-bit: two uint8 moments + fp32 absmax per 256 elements), then foreach's sqrt(v) list (none for a
  fused step), freed; zero_grad frees the gradients.

Not covered yet: QLoRA (4-bit layers' dequantization), fused projections (Phi-3, GLM), MoE, eager
attention's score tensors, fused cross-entropy, ZeRO and pipeline stages.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cuda_caching_allocator as cca  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WORKSPACE_BYTES = 69_207_040  # as replay_training.py: the cuBLAS / cuBLASLt workspaces allocated before the model
LORA_MODULES = ("q", "k", "v", "o", "gate", "up", "down")


def simulate(v: dict, optimizer: str = "adamw", steps: int = 3) -> cca.Allocator:
    """Replay the synthetic sequence of ``steps`` optimizer steps; ``v`` is an estimate's trace values."""
    a = cca.Allocator()
    handles = iter(range(1, 1 << 62))
    a.phases = []

    def new(size: float) -> int:
        h = next(handles)
        a.malloc(h, int(size))
        return h

    def mark(label: str) -> None:
        a.phases.append((label, a.reserved))

    T, H, I, V = int(v["train_tokens"]), int(v["hidden"]), int(v["intermediate"]), int(v["vocab"])
    L, q, kv = int(v["n_layers"]), int(v["q_dim"]), int(v["kv_dim"])
    full, mixed = bool(v["method_full"]), bool(v["mixed_precision"])
    gc, ga = bool(v["gradient_checkpointing"]), int(v["grad_accum"])
    wb = 4 if mixed else 2                          # weights (and full fine-tuning's grads / states) bytes
    resid, act = v["resid_bytes"], v["act_bytes"]
    tied = v["p_output"] == 0
    eight_bit = v["moment_bytes"] < 2 and v["optimizer_fused_step"]
    layer = [("q", H * q), ("k", H * kv), ("v", H * kv), ("o", q * H), ("gate", H * I), ("up", H * I), ("down", I * H),
             ("n1", H), ("n2", H)]
    shapes = {"q": (H, q), "k": (H, kv), "v": (H, kv), "o": (q, H), "gate": (H, I), "up": (H, I), "down": (I, H)}

    new(WORKSPACE_BYTES)
    params = [("embd", V * H)] + [(f"{i}.{n}", c) for i in range(L) for n, c in layer] + [("norm", H)]
    params += [] if tied else [("head", V * H)]
    for _, c in params:
        new(c * wb)
    if full:
        trainable = [(n, c, wb) for n, c in params]
    else:
        targets = [m for m in LORA_MODULES if v.get(f"lora_{m}")]
        r = int(v["lora_rank"])
        trainable = [(f"{i}.{m}.{ab}", r * (shapes[m][0] if ab == "A" else shapes[m][1]), 4)
                     for i in range(L) for m in targets for ab in "AB"]
        for _, c, b in trainable:
            new(c * b)
    per_layer = {}
    for n, c, b in trainable:
        if n[0].isdigit():
            per_layer.setdefault(int(n.split(".")[0]), []).append((n, c, b))

    def saved_pieces() -> list[float]:
        rest, out = v["layer_saved_bytes_per_token"] * T, []
        while len(out) < 4 and rest >= T * I * act:
            out.append(T * I * act)
            rest -= T * I * act
        while rest >= T * H * 2:
            out.append(T * H * 2)
            rest -= T * H * 2
        return out + ([rest] if rest > 0 else [])

    grads: dict[str, int] = {}

    def grad(name: str, numel: float, nbytes: float) -> None:
        if name in grads:      # accumulation: the new gradient is a temporary added in place
            a.free(new(numel * nbytes))
        else:
            grads[name] = new(numel * nbytes)

    states_made = False
    for step in range(steps):
        for _ in range(ga):
            mark(f"fwd{step}")
            saved, copies = [], []
            x = new(T * H * resid)
            for _i in range(L):
                pieces = [new(p) for p in saved_pieces()]
                weight_copies = [new(c * 2) for _, c in layer[:7]] if mixed else []
                if gc:
                    for h in pieces:
                        a.free(h)
                    copies += weight_copies
                    saved.append([x])
                    x = new(T * H * resid)
                else:
                    saved.append(pieces + weight_copies)
            head_saved = new(v["head_saved_bytes"])
            head_copy = new(V * H * 2) if mixed else None
            logits = new(T * V * 2)
            fp32_copy, log_probs = new(T * V * 4), new(T * V * 4)
            a.free(fp32_copy)
            a.free(logits)
            for h in copies:
                a.free(h)
            mark(f"bwd{step}")
            g_nll = new(T * V * 4)
            g_lsm = new(T * V * 4)
            a.free(g_nll)
            a.free(log_probs)
            g_logits = new(T * V * 2)
            a.free(g_lsm)
            g_hidden = new(T * H * act)
            if full:
                grad("embd" if tied else "head", V * H, wb)
            a.free(g_logits)
            a.free(head_saved)
            if head_copy:
                a.free(head_copy)
            for i in reversed(range(L)):
                recomputed = []
                if gc:
                    recomputed = [new(p) for p in saved_pieces()]
                    recomputed += [new(c * 2) for _, c in layer[:7]] if mixed else []
                size = dict(layer)

                def g(m: str) -> None:
                    if full:
                        grad(f"{i}.{m}", size[m], wb)
                    else:
                        for n, c, b in per_layer.get(i, []):
                            if n.split(".")[1] == m:
                                grad(n, c, b)
                t1 = new(T * I * act)
                g("down")
                t2, t3 = new(T * I * act), new(T * I * act)
                a.free(t1)
                g("up")
                g("gate")
                th = new(T * H * act)
                a.free(t2)
                a.free(t3)
                g("n2")
                ta = new(T * q * act)
                g("o")
                tq, tk, tv = new(T * q * act), new(T * kv * act), new(T * kv * act)
                a.free(ta)
                for m in ("q", "k", "v"):
                    g(m)
                for h in (tq, tk, tv):
                    a.free(h)
                g("n1")
                a.free(th)
                for h in recomputed + saved[i]:
                    a.free(h)
            if full and tied:
                a.free(new(V * H * wb))  # embedding_dense_backward's gradient, added into the head's
            if full:
                grad("norm", H, wb)
            a.free(g_hidden)
            a.free(x)
        mark(f"opt{step}")
        if not states_made:
            for _, c, b in trainable:
                if eight_bit and c >= 4096:
                    for nbytes in (c, c, (c + 255) // 256 * 4, (c + 255) // 256 * 4):
                        new(nbytes)
                else:
                    new(c * b)
                    new(c * b)
            states_made = True
        if not v["optimizer_fused_step"]:
            for h in [new(c * b) for _, c, b in trainable]:
                a.free(h)
        for h in grads.values():
            a.free(h)
        grads = {}
    mark("end")
    return a


def against_sweep(path: Path) -> int:
    """The synthetic sequence and the engine against sweep.py's replays of the recorded sequence (vram = peak
    reserved + the CUDA context); fused-projection models (Phi-3) are left out: the sequence does not write them."""
    import fidelity
    import vramplan
    rows = []
    for line in path.read_text().splitlines():
        case = json.loads(line) if line.strip() else None
        if not case or "phi-3" in case["id"]:
            continue
        _, body = fidelity.transformers_request({**case, "settings": {"runtime": "transformers", **case["settings"]}})
        resp = vramplan.estimate_finetuning(body)
        v = fidelity.trace_values(resp)
        a = simulate(v)
        context = v["rt_cuda_context_mib"] * 2**20
        replayed = case["simulated"]["peak_reserved_bytes"] + context
        synthetic = (a.peak_reserved + context - replayed) / replayed * 100
        engine = (resp["vram_usage"] * 2**30 - replayed) / replayed * 100
        rows.append((abs(synthetic), abs(engine)))
        print(f"{case['id'][:60]:60} synthetic {synthetic:+6.1f}%  engine today {engine:+6.1f}%")
    s, e = [r[0] for r in rows], [r[1] for r in rows]
    print(f"{len(rows)} replayed runs: synthetic median {statistics.median(s):.1f}% max {max(s):.1f}%, beyond 5% / 10%:"
          f" {sum(x > 5 for x in s)} / {sum(x > 10 for x in s)} | engine today median {statistics.median(e):.1f}%"
          f" max {max(e):.1f}%, beyond 5% / 10%: {sum(x > 5 for x in e)} / {sum(x > 10 for x in e)}")
    return 0


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(REPO / "benchmarks"))
    if "--sweep" in argv:
        return against_sweep(Path(argv[argv.index("--sweep") + 1]))
    import fidelity
    import vramplan
    select = next((x for x in argv if not x.startswith("--")), "")
    cal = REPO.parent / "shared" / "calibration" / "h200-transformers.jsonl"
    paths = [cal, *sorted((REPO / "benchmarks" / "measured").glob("*.jsonl"))]
    groups: dict[str, list[tuple[float, float]]] = {}
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            case = json.loads(line) if line.strip() else None
            if not case or case.get("workload") != "finetuning" or select not in case["id"] or "measured" not in case:
                continue
            if case["settings"]["weights_dtype"] == "nf4":
                print(f"{case['id'][:60]:60} skipped: QLoRA is not in the synthetic sequence")
                continue
            _, body = fidelity.transformers_request(case)
            resp = vramplan.estimate_finetuning(body)
            v = fidelity.trace_values(resp)
            a = simulate(v)
            m = case["measured"]
            vram = a.peak_reserved + v["rt_cuda_context_mib"] * 2**20
            err = (vram - m["nvidia_smi_peak_bytes"]) / m["nvidia_smi_peak_bytes"] * 100
            engine = (resp["vram_usage"] * 2**30 - m["nvidia_smi_peak_bytes"]) / m["nvidia_smi_peak_bytes"] * 100
            group = "new " + path.stem if path != cal else "H200"
            groups.setdefault(group, []).append((abs(err), abs(engine)))
            if "--phases" in argv:
                print("   reserved at the start of each phase (GB):", " ".join(f"{p}:{r / 1e9:.2f}" for p, r in a.phases))
            print(f"{case['id'][:60]:60} allocated {m['peak_allocated_bytes'] / 1e9:6.2f} synthetic {a.peak_allocated / 1e9:6.2f}"
                  f" | reserved {m['peak_reserved_bytes'] / 1e9:6.2f} synthetic {a.peak_reserved / 1e9:6.2f}"
                  f" | vram {err:+5.1f}% (engine today {engine:+5.1f}%)")
    for group, rows in groups.items():
        s, e = [r[0] for r in rows], [r[1] for r in rows]
        print(f"{group} fine-tuning vram, {len(rows)} runs: synthetic median {statistics.median(s):.1f}% max {max(s):.1f}%"
              f" | engine today median {statistics.median(e):.1f}% max {max(e):.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
