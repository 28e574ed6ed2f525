"""Speed fidelity: run every speed measurement in ../shared/calibration through the public API.

For each case it prints the measured figure, the estimate and the relative error of the estimate
((estimate - measured) / measured), and per group the median and maximum |error|.

    .venv/bin/python benchmarks/fidelity_speed.py [--calibration DIR] [--markdown [--summary]]

Groups and what each case asks the engine:

- ``decode llama.cpp NVIDIA`` / ``decode llama.cpp Apple``: llama-bench ``tg512`` tokens/s
  (Llama 3 8B, batch 1) = ``estimated_latency_tps`` for 512 output tokens after a 1-token prompt on
  ``runtime`` llama.cpp; plus the llama.cpp ``tg128`` records of ``published-serving.yaml`` that map
  (CodeLlama 7B on an RTX 4090, a January 2024 build from before CUDA graphs:
  ``runtime_settings.cuda_graph_max_seqs`` 0).
- ``prefill llama.cpp``: llama-bench ``pp512`` tokens/s = 512 / ``tftt`` for one 512-token prompt (the
  same two sources).
- ``prefill transformers H200``: ``prefill_tokens_per_s`` = batch x prompt tokens / ``tftt``.
  Cases that are the first of their process include CUDA/cuBLAS warm-up (calibration README); they
  are printed but left out of the statistics, and named as such.
- ``training transformers H200``: ``train_tokens_per_s`` = ``training_tps``.
- ``training torchtune (other runtime)``: torchtune README tokens/s (torch.compile, recipe
  defaults not in the table); shown for reference with the transformers runtime and checkpointing,
  not part of the targets.

Targets (issue 6): decode median |error| <= 15% and max <= 35%; training within 25%. Issue 11: llama.cpp
single-stream decode worst case <= 45% (the ``decode llama.cpp, every source`` line; Pascal and HBM
datacenter GPUs are judged on runs kept outside the project).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml

import vramplan

HERE = Path(__file__).resolve().parent
DEFAULT_CAL = HERE.parent.parent / "shared" / "calibration"

#: llama-bench GPU labels -> catalog keys.
GPU_KEYS = {
    "NVIDIA GeForce RTX 3070 8GB": "rtx_3070", "NVIDIA GeForce RTX 3080 10GB": "rtx_3080",
    "NVIDIA GeForce RTX 3080 Ti 12GB": "rtx_3080_ti", "NVIDIA GeForce RTX 4070 Ti 12GB": "rtx_4070_ti",
    "NVIDIA GeForce RTX 4080 16GB": "rtx_4080", "NVIDIA GeForce RTX 3090 24GB": "rtx_3090",
    "NVIDIA GeForce RTX 4090 24GB": "rtx_4090", "Apple M1 (7-core GPU, 8GB)": "apple_m1_8",
    "Apple M1 Max (32-core GPU, 64GB)": "apple_m1_max_64", "Apple M2 Ultra (76-core GPU, 192GB)": "apple_m2_ultra_192",
    "Apple M3 Max (40-core GPU, 64GB)": "apple_m3_max_64",
    "1x RTX 4090": "rtx_4090", "1x RTX A6000": "rtx_a6000",
}
QUANT = {"F16": "fp16", "Q4_K_M": "q4_k_m"}

#: First inference case of its process: the measurement includes CUDA / cuBLAS warm-up (calibration README).
#: Recognisable because a shorter prompt of the same model ran 5-40x slower per token than a longer one.
WARMUP = {
    "h200a-inf-llama-3-8b-bf16-sdpa-b1-s2048": "warm-up: 3,745 tok/s vs 28,693 for the same model at 8192 tokens",
    "h200a-inf-llama-3.2-1b-bf16-sdpa-b1-s2048": "warm-up: 5,050 tok/s vs 191,153 for the same model at b64",
    "h200c-inf-llama-3-8b-nf4-b1-s2048": "warm-up: the only inference case of its bitsandbytes process",
}

TARGETS = {"decode": (0.15, 0.35), "training": (None, 0.25)}

#: Architectures of published models the catalog has no entry for (their config.json fields).
CUSTOM_MODELS = {
    "codellama-7b": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32016,
                     "max_position_embeddings": 16384, "rope_theta": 1000000, "tie_word_embeddings": False},
}
HF_MODELS = {"codellama/CodeLlama-7b-hf": "codellama-7b"}
SERVING_GPUS = {"RTX4090-24GB": "rtx_4090"}
#: published-serving.yaml llama.cpp sources whose builds predate ggml-cuda's CUDA graphs (PR #6766, May 2024).
PRE_GRAPH_SOURCES = {"https://github.com/ggml-org/llama.cpp/pull/4766"}


#: Calibration files and the groups each one feeds (named when a file is missing).
CALIBRATION_FILES = {
    "published-llama3-8b.yaml": "decode llama.cpp NVIDIA / Apple, prefill llama.cpp, training torchtune",
    "h200-transformers.jsonl": "prefill transformers H200, training transformers H200",
    "published-serving.yaml": "llama.cpp decode and prefill cases from the serving records",
}


def missing_files(cal: Path) -> list[str]:
    """One line per calibration file that is not there, naming the groups it would have given."""
    return [f"{cal / name} is missing: no {groups}" for name, groups in CALIBRATION_FILES.items()
            if not (cal / name).is_file()]


def _cases(cal: Path):
    """Yield (group, id, measured, request kind, request body, how to read the estimate, note)."""
    published = yaml.safe_load((cal / "published-llama3-8b.yaml").read_text()) \
        if (cal / "published-llama3-8b.yaml").is_file() else []
    for r in published:
        if r["kind"] in ("decode_tps", "prefill_tps"):
            gpu = GPU_KEYS[r["gpu"]]
            body = {"gpu_key": gpu, "llm_key": "llama-3-8b", "quantization": QUANT[r["quant"]], "runtime": "llama.cpp",
                    "batch_size": 1}
            label = f"{r['gpu'].replace('NVIDIA GeForce ', '')} {r['quant']}"
            if r["kind"] == "decode_tps":  # tg512: 512 tokens generated from an empty context
                group = "decode llama.cpp Apple" if gpu.startswith("apple") else "decode llama.cpp NVIDIA"
                body.update({"input_tokens": 1, "output_tokens": 512})
                yield group, label + " tg512", r["value"], "inference", body, lambda o: o["estimated_latency_tps"], ""
            else:  # pp512: one 512-token prompt
                body.update({"input_tokens": 512, "output_tokens": 1})
                yield "prefill llama.cpp", label + " pp512", r["value"], "inference", body, lambda o: 512 / o["tftt"] * 1000, ""
        elif r["kind"] == "finetune_peak" and r.get("tokens_per_second") and r["framework"] == "torchtune":
            method = {"Full finetune": "full", "LoRA": "lora", "QLoRA": "qlora"}[r["settings"]["method"]]
            body = {"gpu_key": GPU_KEYS[r["gpu"]], "llm_key": "llama-3.1-8b", "finetuning_method": method,
                    "fine_tuning_quantization": "bf16", "batch_size": 2, "seq_length": 2048,
                    "optimization_config": {"gradient_checkpointing": True, "flash_attention": True}}
            yield ("training torchtune (other runtime)", f"{r['gpu']} {r['settings']['method']}", r["tokens_per_second"],
                   "finetuning", body, lambda o: o["training_tps"], "torch.compile; recipe settings assumed")
    h200 = cal / "h200-transformers.jsonl"
    for line in (h200.read_text().splitlines() if h200.is_file() else []):
        if not line.strip():
            continue
        r = json.loads(line)
        st, m = r["settings"], r["measured"]
        dtype = st["weights_dtype"]
        base = {"gpu_key": "h200", "llm_key": "custom", "custom_model": r["hf_config"], "runtime": "transformers",
                "seq_length": st.get("prompt_tokens") or st["seq_length"], "batch_size": st["batch_size"]}
        if r["workload"] == "inference":
            if "prefill_tokens_per_s" not in m:
                continue
            body = {**{k: v for k, v in base.items() if k != "seq_length"}, "input_tokens": st["prompt_tokens"], "output_tokens": 1,
                    "quantization": dtype, "optimization_config": {"flash_attention": st["attention"] != "eager"}}
            tokens = st["batch_size"] * st["prompt_tokens"]
            yield ("prefill transformers H200", r["id"], m["prefill_tokens_per_s"], "inference", body,
                   (lambda t: lambda o: t / o["tftt"] * 1000)(tokens), WARMUP.get(r["id"], ""))
        else:
            if "train_tokens_per_s" not in m:
                continue
            method = st["method"]
            body = {**base, "finetuning_method": method,
                    "gradient_accumulation_steps": st["gradient_accumulation_steps"],
                    "optimization_config": {"gradient_checkpointing": st["gradient_checkpointing"],
                                            "flash_attention": st["attention"] != "eager"}}
            if method == "full":
                body["fine_tuning_quantization"] = dtype
            else:
                body["lora_rank"] = st["lora_rank"]
                if st["lora_target_modules"] != "all-linear":
                    body["lora_target_modules"] = st["lora_target_modules"]
            if "AdamW8bit" in st["optimizer"]:
                body["optimizer"] = "adamw_8bit"
            yield ("training transformers H200", r["id"], m["train_tokens_per_s"], "finetuning", body,
                   lambda o: o["training_tps"], "")


def _model_body(model: str) -> dict:
    if model in CUSTOM_MODELS:
        return {"llm_key": "custom", "custom_model": CUSTOM_MODELS[model]}
    return {"llm_key": model}


def _serving_cases(cal: Path):
    """The llama.cpp records of published-serving.yaml that map onto a request (pp512 / tg128, one GPU)."""
    path = cal / "published-serving.yaml"
    for r in (yaml.safe_load(path.read_text())["records"] if path.is_file() else []):
        if r.get("runtime") != "llama.cpp" or r.get("num_gpus") != 1:
            continue
        gpu, model = SERVING_GPUS.get(r.get("gpu_canonical")), HF_MODELS.get(r.get("model"))
        quant = {"F16": "fp16", "Q8_0": "q8_0", "Q4_0": "q4_0", "Q4_K_M": "q4_k_m"}.get(r.get("weights_dtype"))
        if not (gpu and model and quant):
            continue
        body = {"gpu_key": gpu, **_model_body(model), "quantization": quant, "runtime": "llama.cpp", "batch_size": 1}
        if r["source"] in PRE_GRAPH_SOURCES:
            body["runtime_settings"] = {"cuda_graph_max_seqs": 0}
        m = r["metrics"]
        if m.get("decode_tok_s_per_user") and r.get("output_tokens"):
            n = r["output_tokens"]
            yield ("decode llama.cpp NVIDIA", r["id"], m["decode_tok_s_per_user"], "inference",
                   {**body, "input_tokens": 1, "output_tokens": n},
                   lambda o: o["estimated_latency_tps"], "")
        if m.get("prefill_tok_s") and r.get("input_tokens"):
            n = r["input_tokens"]
            yield ("prefill llama.cpp", r["id"], m["prefill_tok_s"], "inference", {**body, "input_tokens": n, "output_tokens": 1},
                   (lambda t: lambda o: t / o["tftt"] * 1000)(n), "")


def run(cal: Path) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    cases = [*_cases(cal), *_serving_cases(cal)]
    for group, case_id, measured, kind, body, read, note in cases:
        fn = vramplan.estimate_inference if kind == "inference" else vramplan.estimate_finetuning
        est = float(read(fn(body)))
        groups.setdefault(group, []).append({"id": case_id, "measured": measured, "estimate": est,
                                             "error": est / measured - 1,
                                             "excluded": bool(note.startswith("warm-up")),
                                             "note": note})
    every = [r for g, rows in groups.items() if g.startswith("decode llama.cpp") for r in rows]
    if every:
        groups[EVERY] = every
    order = {g: i for i, g in enumerate(ORDER)}
    return dict(sorted(groups.items(), key=lambda kv: order.get(kv[0], len(ORDER))))


EVERY = "decode llama.cpp, every source"
#: Print order.
ORDER = ("decode llama.cpp NVIDIA", "decode llama.cpp Apple", EVERY, "prefill llama.cpp",
         "prefill transformers H200", "training transformers H200", "training torchtune (other runtime)")


def summary(rows: list[dict]) -> tuple[float, float, int]:
    errs = [abs(r["error"]) for r in rows if not r["excluded"]]
    return (statistics.median(errs), max(errs), len(errs)) if errs else (float("nan"), float("nan"), 0)


def print_text(groups: dict[str, list[dict]]) -> None:
    for group, rows in groups.items():
        if group == EVERY:
            med, mx, n = summary(rows)
            worst = max((r for r in rows if not r["excluded"]), key=lambda r: abs(r["error"]))
            print(f"\n== {group}: median |error| {med:.1%}, max {mx:.1%} over {n} cases (worst: {worst['id']})")
            continue
        print(f"\n== {group}")
        print(f"{'case':58s} {'measured':>10s} {'estimate':>10s} {'error':>8s}")
        for r in rows:
            flag = f"  ({r['note']})" if r["note"] else ""
            print(f"{r['id'][:58]:58s} {r['measured']:10.1f} {r['estimate']:10.1f} {r['error']:+8.1%}{flag}")
        med, mx, n = summary(rows)
        print(f"{'median |error| / max |error| over ' + str(n) + ' cases':58s} {'':10s} {med:10.1%} {mx:8.1%}")


def print_markdown(groups: dict[str, list[dict]], cases: bool = True) -> None:
    print("| speed group | cases | median \\|error\\| | max \\|error\\| |")
    print("|---|---:|---:|---:|")
    for group, rows in groups.items():
        med, mx, n = summary(rows)
        print(f"| {group} | {n} | {med:.1%} | {mx:.1%} |")
    if not cases:
        return
    for group, rows in groups.items():
        if group == EVERY:
            continue
        print(f"\n**{group}**\n")
        print("| case | measured | estimate | error |")
        print("|---|---:|---:|---:|")
        for r in rows:
            note = f" ({r['note']})" if r["note"] else ""
            print(f"| {r['id']}{note} | {r['measured']:.1f} | {r['estimate']:.1f} | {r['error']:+.1%} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration", type=Path, default=DEFAULT_CAL)
    ap.add_argument("--markdown", action="store_true", help="Markdown tables: the summary, then every case")
    ap.add_argument("--summary", action="store_true", help="with --markdown: the summary table only (the README's)")
    args = ap.parse_args(argv)
    missing = missing_files(args.calibration)
    for line in missing:
        print(f"note: {line} (give --calibration DIR; the folder sits beside the project as ../shared/calibration)",
              file=sys.stderr)
    groups = run(args.calibration)
    if not groups:
        print("no speed measurements to compare: every group needs the calibration folder", file=sys.stderr)
        return 0
    if args.markdown:
        print_markdown(groups, cases=not args.summary)
    else:
        print_text(groups)
    return 0


if __name__ == "__main__":
    sys.exit(main())
