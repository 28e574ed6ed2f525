"""Fidelity benchmark: vramplan's estimates against real measurements.

Runs every usable case of the calibration folder (``../shared/calibration`` beside the repository
by default) and of ``benchmarks/measured/*.jsonl`` through the public Python API and prints, per
case, the measured figure, the estimate and the error, then the median and max |error| per group.

    .venv/bin/python benchmarks/fidelity.py [--calibration-dir DIR] [--markdown] [--quiet]

How each record becomes a request (docs/FIDELITY.md says why):

* H200 transformers runs (``h200-transformers.jsonl``): ``llm_key: custom`` with the run's
  ``hf_config``, ``gpu_key: h200``, ``runtime: transformers``. Inference uses
  ``seq_length = prompt_tokens``: the measured peak is the prefill of the prompt (the 16 greedy
  decode steps that follow add 16 tokens of KV, under 1%, and no larger transient), and the KV
  figure was read after prefill. ``vram_usage`` is compared with ``nvidia_smi_peak_bytes``; the
  weights (plus the cuBLAS workspaces the allocator holds before any forward, which the run's
  ``weights_bytes`` includes) with ``weights_bytes``; the KV cache with
  ``kv_cache_bytes_after_prefill``.
* llama.cpp log records (``published-llama3-8b.yaml``): the model buffer is the GPU weights, the
  KV buffer the KV cache (K and V types may differ: each half is evaluated with its own type),
  the compute buffer the activations + logits transient at n_ubatch (``runtime_settings``).
* vLLM log records: weights as loaded; the KV pool vLLM reports, with the run's
  gpu_memory_utilization and the GPU's memory as torch sees it (``custom_vram``). With pipeline
  stages, the pool the replica admits from: the log's token count ("GPU KV cache size: N tokens",
  the smallest stage's blocks, as vLLM sizes every stage alike) x one stage's bytes a token - its
  "Available KV cache memory" line is one worker's, a stage with more room than the count leaves the
  busiest one (the last, whose profile runs the sampler), and the estimate is the busiest GPU's.
* ``finetune_peak`` records (torchtune, unsloth) come from other stacks (torch.compile, fused
  kernels, offloaded checkpointing, unstated recipes): they are skipped with the reason printed.

Exit status 0 whatever the errors: this is a report, not a gate (tests pin the mechanisms). Without the
calibration folder (a clone without ``../shared``), it says which files are missing and which groups
they would give, and prints the groups it can (``benchmarks/measured``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

import vramplan
from vramplan.estimate import trace_values

GIB = 1024 ** 3
MIB = 1024 ** 2
REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO.parent / "shared" / "calibration"
MEASURED_DIR = REPO / "benchmarks" / "measured"

# GPUs named in the published records, by the catalog's keys.
GPU_KEYS = {"RTX 4080": "rtx_4080", "RTX 3090": "rtx_3090", "H100 80GB": "h100_80"}
# llama.cpp KV types (type_k / type_v) by vramplan kv_cache_quantization keys.
KV_TYPES = {"f16": "fp16", "bf16": "bf16", "f32": "fp32", "q8_0": "q8_0", "q4_0": "q4_0", "q4_1": "q4_1",
            "q5_0": "q5_0", "q5_1": "q5_1", "iq4_nl": "iq4_nl"}
# llama.cpp file types as printed, by vramplan quantization keys.
GGUF_TYPES = {"Q4_0": "q4_0", "Q5_K_S": "q5_k_s", "Q4_K_M": "q4_k_m", "Q8_0": "q8_0", "F16": "fp16"}


class Row:
    def __init__(self, group: str, case: str, measured: float, estimate: float, unit: str = "GiB"):
        self.group, self.case, self.measured, self.estimate, self.unit = group, case, measured, estimate, unit

    @property
    def error(self) -> float:
        return (self.estimate - self.measured) / self.measured * 100


# --------------------------------------------------------------------------------------------
# H200 transformers runs


def _optimizer(name: str) -> str:
    if "8bit" in name.lower():
        return "paged_adamw_8bit" if "paged" in name.lower() else "adamw_8bit"
    return "adamw"


def transformers_request(case: dict, gpu_key: str = "h200") -> tuple[str, dict]:
    s = case["settings"]
    dtype = s["weights_dtype"]
    body: dict = {"gpu_key": gpu_key, "llm_key": "custom", "custom_model": case["hf_config"],
                  "runtime": s.get("runtime", "transformers"), "batch_size": s["batch_size"], "trace": True}
    flash = s.get("attention", "sdpa") != "eager"
    if "expandable_segments:True" in (s.get("allocator") or ""):  # PYTORCH_CUDA_ALLOC_CONF of the run (measure.py)
        body["runtime_settings"] = {"expandable_segments": 1}
    if case["workload"] == "inference":
        body.update({"seq_length": s["prompt_tokens"], "quantization": dtype,
                     "kv_cache_quantization": "fp32" if dtype == "fp32" else "bf16",
                     "optimization_config": {"flash_attention": flash}})
        if s.get("kv_cache"):  # a quantized cache (measure.py): quanto 4-bit is int4, HQQ 8-bit int8
            body["kv_cache_quantization"] = f"int{s['kv_cache'][1]}"
        if s.get("generated_tokens", 16) > 16:  # a long answer: the lengths as generate ran them (+1: the prefill's token)
            body.update({"input_tokens": s["prompt_tokens"], "output_tokens": s["generated_tokens"] + 1})
            del body["seq_length"]
        return "inference", body
    method = s["method"]
    body.update({"seq_length": s["seq_length"], "finetuning_method": method,
                 "gradient_accumulation_steps": s.get("gradient_accumulation_steps", 1),
                 "optimizer": _optimizer(s.get("optimizer") or "adamw"),
                 "optimization_config": {"flash_attention": flash,
                                         "gradient_checkpointing": bool(s.get("gradient_checkpointing"))}})
    if method == "full":
        body["fine_tuning_quantization"] = dtype if dtype in ("fp32", "bf16", "fp16") else "bf16"
    else:
        body["lora_rank"] = s["lora_rank"]
        targets = s.get("lora_target_modules") or "all-linear"
        body["lora_target_modules"] = targets
    return "finetuning", body


def transformers_rows(cases: list[dict], prefix: str, gpu_key: str) -> list[Row]:
    rows = []
    for case in cases:
        workload, body = transformers_request(case, gpu_key)
        fn = vramplan.estimate_inference if workload == "inference" else vramplan.estimate_finetuning
        resp = fn(body)
        v = trace_values(resp)
        m = case["measured"]
        cid = case["id"]
        label = "inference" if workload == "inference" else "fine-tuning"
        rows.append(Row(f"{prefix} {label} vram", cid, m["nvidia_smi_peak_bytes"] / GIB, resp["vram_usage"]))
        if m.get("weights_bytes"):
            # the run's weights_bytes is memory_allocated after building the model: cuBLAS/cuBLASLt workspaces too,
            # as many as that torch had created by then; runs that record what was allocated before the model
            # (pre_model_allocated_bytes) are compared on the model's own tensors
            if m.get("pre_model_allocated_bytes") is not None:
                m = {**m, "weights_bytes": m["weights_bytes"] - m["pre_model_allocated_bytes"]}
                est = v["weights_gpu_bytes"]
            else:
                est = v["weights_gpu_bytes"] + v["rt_library_workspace_mib"] * MIB
            if workload == "finetuning":
                est += v.get("lora_adapter_bytes", 0)
            rows.append(Row(f"{prefix} weights", cid, m["weights_bytes"] / GIB, est / GIB))
        if workload == "inference" and m.get("kv_cache_bytes_after_prefill"):
            rows.append(Row(f"{prefix} KV", cid, m["kv_cache_bytes_after_prefill"] / GIB, v["kv_needed_bytes"] / GIB))
    return rows


# --------------------------------------------------------------------------------------------
# Published llama.cpp / vLLM records


def _gpu_key(label: str) -> str | None:
    for name, key in GPU_KEYS.items():
        if name in label:
            return key
    return None


def _value_gib(rec: dict) -> float:
    unit = rec["unit"]
    if unit.startswith("MiB"):
        return rec["value"] * MIB / GIB
    return float(rec["value"])  # vLLM prints GiB (V0 labels them GB)


def _pool_gib(rec: dict, pp: int, token_bytes: float) -> float:
    """The KV pool a vLLM log record gives, in GiB on the busiest GPU: the "Available KV cache memory"
    line, or, with pipeline stages, the log's token count x ``token_bytes`` (one token's keys and values
    on one GPU, the engine's kv_attention_bytes_per_seq / seq x kv_share_per_gpu, which the pinned-pool
    formula also uses): the pool admission uses (see the module docstring)."""
    quote = " ".join(rec["quote"]) if isinstance(rec.get("quote"), list) else str(rec.get("quote"))
    if pp == 1 or "GPU KV cache size:" not in quote:
        return _value_gib(rec)
    tokens = int(quote.split("GPU KV cache size:")[1].split("tokens")[0].replace(",", ""))
    return tokens * token_bytes / GIB


def llamacpp_rows(records: list[dict], skipped: list[str]) -> list[Row]:
    rows = []
    for rec in records:
        if "llama.cpp" not in rec["framework"] or rec["kind"] not in ("inference_weights", "kv_cache", "compute_buffer"):
            continue
        st = rec["settings"]
        quant = GGUF_TYPES.get(rec["quant"])
        gpu = _gpu_key(rec["gpu"])
        if quant is None or gpu is None:
            skipped.append(f"{rec['id']}: quant {rec['quant']} / GPU {rec['gpu']} not mapped")
            continue
        base = {"gpu_key": gpu, "llm_key": "llama-3.1-8b-instruct", "runtime": "llama.cpp", "quantization": quant,
                "batch_size": 1, "seq_length": st["n_ctx"], "trace": True,
                "optimization_config": {"flash_attention": bool(st["flash_attn"])},
                "runtime_settings": {"max_prefill_tokens": st["n_ubatch"]}}

        def run(kv: str) -> dict[str, float]:
            return trace_values(vramplan.estimate_inference({**base, "kv_cache_quantization": kv}))

        k_type, v_type = KV_TYPES[st["type_k"]], KV_TYPES[st["type_v"]]
        v = run(k_type)
        if rec["kind"] == "inference_weights":
            rows.append(Row("llama.cpp model buffer", rec["id"], _value_gib(rec), v["weights_gpu_bytes"] / GIB))
        elif rec["kind"] == "kv_cache":
            # K and V each hold half the elements; evaluate each half with its own type.
            kv = (v["kv_needed_bytes"] + run(v_type)["kv_needed_bytes"]) / 2
            rows.append(Row("llama.cpp KV buffer", rec["id"], _value_gib(rec), kv / GIB))
        else:
            est = v["compute_buffer_bytes"] if "compute_buffer_bytes" in v else \
                v["activations_gpu_bytes"] + v["logits_extra_bytes"]
            rows.append(Row("llama.cpp compute buffer", rec["id"], _value_gib(rec), est / GIB))
    return rows


def _vllm_quant(rec: dict) -> tuple[str, str]:
    st = rec.get("settings", {})
    q = (st.get("quantization") or "").lower()
    dtype = (st.get("dtype") or "torch.bfloat16").replace("torch.", "")
    dtype = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(dtype, "bf16")
    quant = {"": dtype, "fp8": "fp8", "gptq_marlin": "gptq", "compressed-tensors": "int8"}.get(q, dtype)
    kv = st.get("kv_cache_dtype", "auto")
    kv_key = {"fp8": "fp8", "auto": "fp32" if dtype == "fp32" else dtype}.get(kv, dtype)
    return quant, kv_key


def vllm_rows(records: list[dict], skipped: list[str]) -> list[Row]:
    rows = []
    groups: dict[str, dict] = {}
    for rec in records:
        if rec["framework"].startswith("vllm") and rec["kind"] in ("inference_weights", "kv_cache"):
            groups.setdefault(rec["group"], {})[rec["id"]] = rec
    for group, recs in groups.items():
        kv_recs = [r for r in recs.values() if r["kind"] == "kv_cache"]
        for rec in recs.values():
            st = rec.get("settings") or next((r.get("settings") for r in kv_recs if r.get("settings")), {})
            gpu = _gpu_key(rec["gpu"])
            if gpu is None:
                skipped.append(f"{rec['id']}: GPU {rec['gpu']} not in the catalog")
                continue
            quant, kv = _vllm_quant({**rec, "settings": st})
            total_gib = st.get("gpu_total_memory_gib")
            if total_gib is None:
                # V0 log: total_gpu_memory=23.58GiB in the quoted profiling line
                quote = " ".join(rec["quote"]) if isinstance(rec.get("quote"), list) else str(rec.get("quote"))
                if "total_gpu_memory=" in quote:
                    total_gib = float(quote.split("total_gpu_memory=")[1].split("GiB")[0])
            tp, pp = st.get("tensor_parallel_size", 1), st.get("pipeline_parallel_size", 1)
            settings = {"gpu_memory_utilization": st.get("gpu_memory_utilization", 0.9)}
            v0 = "V0" in rec["framework"] or "V0" in str(rec.get("notes", ""))
            if v0:
                # V0 without chunked prefill profiles max(max_model_len, 2048) tokens in one batch, 256 sequences
                settings["max_prefill_tokens"] = max(st.get("max_model_len", 2048), 2048)
                settings["max_num_seqs"] = 256
            body = {"gpu_key": gpu, "llm_key": "llama-3.1-8b-instruct", "runtime": "vllm-v0" if v0 else "vllm",
                    "quantization": quant, "kv_cache_quantization": kv, "batch_size": 1,
                    "seq_length": st.get("max_model_len", 8192),
                    "num_gpus": tp * pp, "inference_parallelism": "tensor" if tp > 1 else "pipeline",
                    "runtime_settings": settings, "trace": True}
            if total_gib:
                body["custom_vram"] = total_gib
            resp = vramplan.estimate_inference(body)
            v = trace_values(resp)
            if rec["kind"] == "inference_weights":
                if "weights_gb" in rec or rec["id"].endswith("-weights"):
                    rows.append(Row("vLLM weights", rec["id"], _value_gib(rec), v["weights_loaded_bytes"] / GIB
                                    if "weights_loaded_bytes" in v else v["weights_gpu_bytes"] / GIB))
            else:
                token_bytes = v["kv_attention_bytes_per_seq"] / v["seq"] * v["kv_share_per_gpu"]
                rows.append(Row("vLLM KV pool", rec["id"], _pool_gib(rec, pp, token_bytes), v["kv_pool_bytes"] / GIB))
    return rows


def finetune_peak_skips(records: list[dict], skipped: list[str]) -> None:
    for rec in records:
        if rec["kind"] == "finetune_peak":
            why = ("torchtune recipe defaults (activation checkpointing, optimizer, torch.compile) are not stated in the table"
                   if "torchtune" in rec["framework"] else
                   "unsloth's offloaded checkpointing and fused kernels are not modelled; the value is a max sequence length")
            skipped.append(f"{rec['id']}: {why}")


# --------------------------------------------------------------------------------------------


def load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


#: Calibration files and the groups each one feeds (named when a file is missing).
CALIBRATION_FILES = {
    "h200-transformers.jsonl": "H200 fine-tuning vram, H200 weights, H200 inference vram, H200 KV",
    "published-llama3-8b.yaml": "llama.cpp model/KV/compute buffers, vLLM weights and KV pool",
}


def missing_files(cal_dir: Path) -> list[str]:
    """One line per calibration file that is not there, naming the groups it would have given."""
    return [f"{cal_dir / name} is missing: no {groups}" for name, groups in CALIBRATION_FILES.items()
            if not (cal_dir / name).is_file()]


def collect(cal_dir: Path) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    skipped: list[str] = []
    h200 = cal_dir / "h200-transformers.jsonl"
    if h200.is_file():
        rows += transformers_rows(load_jsonl(h200), "H200", "h200")
    pub = cal_dir / "published-llama3-8b.yaml"
    if pub.is_file():
        records = yaml.safe_load(pub.read_text())
        rows += llamacpp_rows(records, skipped)
        rows += vllm_rows(records, skipped)
        finetune_peak_skips(records, skipped)
    for path in sorted(MEASURED_DIR.glob("*.jsonl")):
        # memory runs; decode timings (workload "decode", or no workload) are another kind
        cases = [c for c in load_jsonl(path) if c.get("workload") in ("inference", "finetuning")]
        if not cases:
            continue
        device = cases[0].get("device", "")
        gpu = "h100_80" if "H100" in device else "h200"
        rows += transformers_rows(cases, f"new {path.stem}", gpu)
    return rows, skipped


def summary(rows: list[Row]) -> list[tuple[str, int, float, float]]:
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.group, []).append(r)
    return [(g, len(rs), statistics.median(abs(r.error) for r in rs), max(abs(r.error) for r in rs))
            for g, rs in groups.items()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration-dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--markdown", action="store_true", help="print the README table only")
    ap.add_argument("--quiet", action="store_true", help="summary only")
    args = ap.parse_args(argv)
    t0 = time.time()
    missing = missing_files(args.calibration_dir)
    for line in missing:  # the groups that need the calibration folder beside the project are left out, said so
        print(f"note: {line} (give --calibration-dir DIR; the folder sits beside the project as ../shared/calibration)",
              file=sys.stderr)
    rows, skipped = collect(args.calibration_dir)
    summ = summary(rows)
    if args.markdown:
        print("| group | cases | median abs error | max abs error |")
        print("| --- | ---: | ---: | ---: |")
        for g, n, med, mx in summ:
            print(f"| {g} | {n} | {med:.1f}% | {mx:.1f}% |")
        return 0
    if not args.quiet:
        current = None
        order = {g: i for i, (g, *_rest) in enumerate(summ)}
        for r in sorted(rows, key=lambda r: order[r.group]):
            if r.group != current:
                current = r.group
                print(f"\n## {current}")
                print(f"{'case':<72} {'measured':>10} {'estimate':>10} {'error':>8}")
            print(f"{r.case[:72]:<72} {r.measured:>10.3f} {r.estimate:>10.3f} {r.error:>+7.1f}%")
        if skipped:
            print("\n## skipped")
            for s in skipped:
                print(f"- {s}")
    print(f"\n{'group':<40} {'n':>3} {'median |err|':>13} {'max |err|':>10}")
    for g, n, med, mx in summ:
        print(f"{g:<40} {n:>3} {med:>12.1f}% {mx:>9.1f}%")
    print(f"\n({len(rows)} comparisons in {time.time() - t0:.1f} s; figures in GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
