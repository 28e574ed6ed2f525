"""Simulated training runs over many shapes (replay_training.simulate), one JSON line each.

    python benchmarks/allocator/sweep.py OUT.jsonl
    python benchmarks/allocator/sweep.py --lora-targets OUT.jsonl   # LoRA on some modules only, with / without checkpointing
    python benchmarks/allocator/sweep.py --gemma2 OUT.jsonl         # Gemma 2 fully trained, eager attention
    python benchmarks/allocator/sweep.py --phi3 OUT.jsonl           # Phi-3 mini / medium and Llama fully trained, new shapes
    python benchmarks/allocator/sweep.py --expandable OUT.jsonl     # any of them under expandable_segments:True
"""
from __future__ import annotations

import itertools
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "measured"))
import measure  # noqa: E402  (model configs)
from replay_training import simulate  # noqa: E402

MODELS = {"qwen2.5-0.5b": measure.QWEN05, "llama-3.2-1b": measure.LLAMA1B, "qwen2.5-1.5b": measure.QWEN15,
          "smollm2-1.7b": measure.SMOL17, "llama-3.2-3b": measure.LLAMA3B, "phi-3-mini": measure.PHI3_MINI,
          "qwen2.5-7b": measure.QWEN7, "llama-3-8b": measure.LLAMA8B}
GEMMA2_9B = dict(measure.GEMMA2_2B, hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
                 num_attention_heads=16, num_key_value_heads=8)  # google/gemma-2-9b config.json (catalogs/models/gemma.yaml)
PHI3_MEDIUM = dict(measure.PHI3_MINI, hidden_size=5120, intermediate_size=17920, num_hidden_layers=40,
                   num_key_value_heads=10, num_attention_heads=40)  # microsoft/Phi-3-medium-4k-instruct (catalogs/models/phi.yaml),
# its 2047 window left out: at 1024 tokens no mask is made, and grouped KV heads under a window keep the pieces
RECIPES = [  # (method, weights dtype, optimizer, checkpointing)
    ("full", "bf16", "adamw", False), ("full", "bf16", "adamw", True), ("full", "fp32", "adamw", False),
    ("full", "fp32", "adamw", True), ("full", "bf16", "adamw8bit", True), ("full", "fp32", "adamw8bit", True),
    ("lora", "bf16", "adamw", False), ("lora", "bf16", "adamw", True)]
SHAPES = [(1, 2048), (4, 1024), (8, 2048)]


def cases():
    combos = list(itertools.product(MODELS.items(), RECIPES, SHAPES))
    random.Random(0).shuffle(combos)  # any prefix of the sweep covers every model and recipe
    for (model, cfg), (method, dtype, opt, gc), (b, s) in combos:
        big = model in ("qwen2.5-7b", "llama-3-8b")
        if big and method == "full" and (dtype == "fp32" or (b, s) == (8, 2048)):
            continue  # beyond one H200 anyway
        if not big and method == "lora" and (b, s) == (1, 2048):
            continue
        st = dict(method=method, weights_dtype=dtype, gradient_checkpointing=gc, batch_size=b, seq_length=s,
                  optimizer="bitsandbytes AdamW8bit" if opt == "adamw8bit" else "torch.optim.AdamW")
        if method == "lora":
            st.update(lora_rank=16, lora_target_modules="all-linear")
        yield {"id": f"sim-{model}-{method}-{dtype}-{opt}-gc{int(gc)}-b{b}-s{s}", "model": model, "workload": "finetuning",
               "hf_config": cfg, "settings": st}


def lora_target_cases():
    """LoRA on q and v, on q k v o, and on q v and down (bf16, 4 x 1024), with and without checkpointing: the modules
    left frozen, and checkpointing's early stop where down is or is not adapted."""
    targets = {"qv": ["q_proj", "v_proj"], "qkvo": ["q_proj", "k_proj", "v_proj", "o_proj"],
               "qvdown": ["q_proj", "v_proj", "down_proj"]}
    for model in ("llama-3.2-1b", "qwen2.5-1.5b", "llama-3.2-3b"):
        for name, modules in targets.items():
            for gc in (False, True):
                st = dict(method="lora", weights_dtype="bf16", gradient_checkpointing=gc, batch_size=4, seq_length=1024,
                          optimizer="torch.optim.AdamW", lora_rank=16, lora_target_modules=modules)
                yield {"id": f"sim-{model}-lora{name}-bf16-adamw-gc{int(gc)}-b4-s1024", "model": model,
                       "workload": "finetuning", "hf_config": MODELS[model], "settings": st}


def full_runs(runs, tag: str = "", **settings):
    """Full fine-tuning cases from (model, config, weights dtype, optimizer, checkpointing, batch, seq, accumulation)."""
    for model, cfg, dtype, opt, gc, b, s, ga in runs:
        st = dict(method="full", weights_dtype=dtype, gradient_checkpointing=gc, batch_size=b, seq_length=s,
                  optimizer="bitsandbytes AdamW8bit" if opt == "adamw8bit" else "torch.optim.AdamW", **settings)
        if ga > 1:
            st["gradient_accumulation_steps"] = ga
        yield {"id": f"sim-{model}-{tag}full-{dtype}-{opt}-gc{int(gc)}-b{b}-s{s}" + (f"-ga{ga}" if ga > 1 else ""),
               "model": model, "workload": "finetuning", "hf_config": cfg, "settings": st}


def gemma2_cases():
    """Gemma 2 fully trained with eager attention (its op-by-op layer): 2B in bf16 at several batch shapes with and
    without checkpointing, past its 4096-token window (8192: the sliding layers' mask differs from the causal one),
    with gradient accumulation, with bitsandbytes AdamW8bit, under bf16 autocast with fp32 weights (the layer the
    written sequence keeps in pieces), and 9B with checkpointing."""
    runs = [("gemma-2-2b", measure.GEMMA2_2B, "bf16", "adamw", False, 2, 1024, 1),
            ("gemma-2-2b", measure.GEMMA2_2B, "bf16", "adamw", False, 4, 512, 1),
            ("gemma-2-2b", measure.GEMMA2_2B, "bf16", "adamw", False, 4, 1024, 2),
            ("gemma-2-2b", measure.GEMMA2_2B, "bf16", "adamw", True, 1, 2048, 1),
            ("gemma-2-2b", measure.GEMMA2_2B, "bf16", "adamw", True, 8, 1024, 1),
            ("gemma-2-2b", measure.GEMMA2_2B, "bf16", "adamw", True, 1, 8192, 1),
            ("gemma-2-2b", measure.GEMMA2_2B, "bf16", "adamw8bit", True, 4, 1024, 1),
            ("gemma-2-2b", measure.GEMMA2_2B, "fp32", "adamw", True, 2, 1024, 1),
            ("gemma-2-9b", GEMMA2_9B, "bf16", "adamw", True, 1, 2048, 1)]
    yield from full_runs(runs, "eager-", attention="eager")


def phi3_cases():
    """Fully trained shapes the 156 do not hold, for the op-by-op layers written from them: Phi-3 mini under autocast
    (accumulation, AdamW8bit without checkpointing, 4096 tokens), in bf16 with accumulation and with its window,
    Phi-3 medium's grouped KV heads (fp32 with AdamW8bit, bf16), Llama 3.2 3B under autocast with accumulation."""
    runs = [("phi-3-mini", measure.PHI3_MINI, "fp32", "adamw", False, 4, 2048, 2),
            ("phi-3-mini", measure.PHI3_MINI, "fp32", "adamw", True, 2, 4096, 1),
            ("phi-3-mini", measure.PHI3_MINI, "fp32", "adamw8bit", False, 2, 1024, 1),
            ("phi-3-mini", measure.PHI3_MINI, "bf16", "adamw", False, 4, 2048, 2),
            ("phi-3-mini-window", measure.PHI3_MINI_WINDOW, "bf16", "adamw", False, 1, 4096, 1),
            ("phi-3-mini-window", measure.PHI3_MINI_WINDOW, "bf16", "adamw8bit", True, 4, 2048, 1),
            ("phi-3-medium", PHI3_MEDIUM, "fp32", "adamw8bit", True, 2, 1024, 1),
            ("phi-3-medium", PHI3_MEDIUM, "bf16", "adamw", True, 4, 1024, 1),
            ("llama-3.2-3b", measure.LLAMA3B, "fp32", "adamw", False, 4, 1024, 2)]
    yield from full_runs(runs)


def expandable(cases_):
    """The same cases under PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (replay_training.simulate reads
    settings.allocator, as measure.py sets the variable)."""
    for case in cases_:
        yield {**case, "id": case["id"] + "-expandable",
               "settings": {**case["settings"], "allocator": "expandable_segments:True"}}


def main(out: str, lora_targets: bool = False, gemma2: bool = False, phi3: bool = False,
         expandable_segments: bool = False) -> int:
    done = set()
    if Path(out).exists():
        done = {json.loads(line)["id"] for line in Path(out).read_text().splitlines() if line.strip()}
    chosen = (lora_target_cases() if lora_targets else gemma2_cases() if gemma2 else phi3_cases() if phi3 else cases())
    with open(out, "a") as fh:
        for case in expandable(chosen) if expandable_segments else chosen:
            if case["id"] in done:
                continue
            t0 = time.time()
            a = simulate(case)
            case["simulated"] = {"peak_allocated_bytes": a.peak_allocated, "peak_reserved_bytes": a.peak_reserved,
                                 "seconds": round(time.time() - t0, 1)}
            fh.write(json.dumps(case) + "\n")
            fh.flush()
            print(case["id"], round(a.peak_reserved / 1e9, 2), flush=True)
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(next(a for a in args if not a.startswith("--")), lora_targets="--lora-targets" in args,
                  gemma2="--gemma2" in args, phi3="--phi3" in args, expandable_segments="--expandable" in args))
