"""What the estimate commands and ``plan`` share: reading a request file, the flags that set its
fields, and how the flags become request fields (flags override the file)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

#: Largest request file read (the HTTP API takes 64 KiB; a file may carry a larger custom_model).
MAX_REQUEST_BYTES = 16 * 1024 * 1024


def read_request(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        if path == "-":
            raw = sys.stdin.buffer.read(MAX_REQUEST_BYTES + 1)
        else:
            with open(path, "rb") as fh:  # bounded: a link to /dev/zero must not be read forever
                raw = fh.read(MAX_REQUEST_BYTES + 1)
    except OSError as exc:
        raise click.UsageError(f"--request: cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_REQUEST_BYTES:
        raise click.UsageError(f"--request: {path} is over {MAX_REQUEST_BYTES:,} bytes")
    try:
        body = json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise click.UsageError(f"--request: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise click.UsageError(f"--request: not usable JSON ({str(exc)[:200]})") from None
    if not isinstance(body, dict):
        raise click.UsageError("--request: must hold a JSON object")
    return body


def merge(body: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """Flags given on the command line override the request file's fields."""
    out = dict(body)
    for key, value in flags.items():
        if value is None:
            continue
        if key in ("optimization_config", "runtime_settings"):
            base = out.get(key)
            out[key] = {**(base if isinstance(base, dict) else {}), **value}
        else:
            out[key] = value
    return out


def apply_model_file(body: dict[str, Any], path: str | None, workload: str = "inference") -> dict[str, Any]:
    """``--model-file``: estimate from a config.json, GGUF or safetensors file directly."""
    if not path:
        return body
    from ..hub import read_model

    info = read_model(path)
    config = dict(info["config"])
    if info.get("name") and not config.get("_name_or_path"):
        config["_name_or_path"] = info["name"]  # results are titled by the file's own name (GGUF general.name)
    body = {**body, "llm_key": "custom", "custom_model": config}
    if info.get("weights_bytes") and info.get("kind") in ("gguf", "safetensors"):
        body["custom_weights_bytes"] = int(info["weights_bytes"])
    if info.get("quantization") and "quantization" not in body:
        body["quantization"] = info["quantization"]
    if info.get("kind") == "gguf" and "runtime" not in body and workload == "inference":
        body["runtime"] = "llama.cpp"  # the runtime that loads GGUF files, whatever their tensor types
    return body


FORMATS = click.Choice(["table", "json", "markdown", "html"])

#: ``--format`` of the listing commands (models, gpus, runtimes, plugins, formulas).
LIST_FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
                           help="table for people, json for scripts")


# -- the estimate flags (shared by inference, finetuning and plan) -------------------------------

def _opts(*decorators):
    """Stack click options in the order given (the --help order)."""
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


REQUEST_OPTION = click.option("--request", "request_file", metavar="FILE",
                              help="Request JSON (the HTTP body); - reads stdin. Flags override its fields.")
#: Flags both workloads take, with the same meaning.
SHARED_OPTIONS = _opts(
    click.option("--gpu", "gpu_key", help="gpu_key, e.g. rtx_4090 (see `vramplan gpus`)."),
    click.option("--model", "llm_key", help="llm_key, e.g. llama-3-8b-instruct (see `vramplan models list`) or a Hub id "
                                            "hf:ORG/NAME[@REVISION]."),
    click.option("--model-file", type=click.Path(dir_okay=True), help="config.json, .gguf or .safetensors to estimate from, "
                                                                        "or a GGUF by URL / hf:ORG/NAME/FILE.gguf (header only)."),
    click.option("--batch-size", type=int, help="Sequences per batch (fine-tuning: the global batch)."),
    click.option("--seq-length", type=int, help="Tokens per sequence (prompt + generated)."),
    click.option("--num-gpus", type=int),
    click.option("--interconnect", "interconnect_type", help="Interconnect key, e.g. nvlink_gen4 or pcie4."),
    click.option("--runtime", help="Runtime profile: transformers, vllm, sglang, tensorrt-llm, tgi, llama.cpp, ... "
                 "(see `vramplan runtimes`)."),
    click.option("--custom-vram", type=float, help="GiB, for custom_discrete / custom_apple_silicon or to override."),
    click.option("--offload-target", type=click.Choice(["cpu_ram", "nvme"])),
    click.option("--flash-attention/--no-flash-attention", default=None),
    click.option("--runtime-setting", "runtime_setting", multiple=True, metavar="NAME=VALUE",
                 help="A runtime constant (runtime_settings), e.g. max_num_seqs=4 (llama-server --parallel 4) or "
                      "kv_pool_tokens=91680 (the pool your log states); repeatable, over the request file's."),
)
#: Inference-only flags.
INFERENCE_OPTIONS = _opts(
    click.option("--quantization", help="Weights format: fp16, bf16, fp8, int8, int4, q4_k_m, awq, nf4, ..."),
    click.option("--kv-cache-quantization", help="KV cache format: fp16, fp8, int8, int4, q8_0, q4_0."),
    click.option("--input-tokens", type=int, help="Prompt tokens per request (with --output-tokens, seq_length is their sum)."),
    click.option("--output-tokens", type=int, help="Generated tokens per request."),
    click.option("--concurrent-users", type=int, help="Closed loop: clients, each sending the next request when the last ends."),
    click.option("--request-rate", type=float, help="Open loop: requests/s arriving at random (instead of --concurrent-users)."),
    click.option("--gpu-hour-cost", type=float, help="Price of one GPU-hour, to price the answer."),
    click.option("--parallelism", "inference_parallelism", type=click.Choice(["pipeline", "tensor", "expert"]),
                 help="Multi-GPU split; expert = attention data parallelism + expert parallelism (MoE models, TensorRT-LLM's DEP)."),
    click.option("--prefix-caching/--no-prefix-caching", "enable_prefix_caching", default=None),
    click.option("--shared-prefix-ratio", type=float),
    click.option("--continuous-batching/--no-continuous-batching", "enable_continuous_batching", default=None),
    click.option("--offload", "offload", metavar="auto|N|P%", is_flag=False, flag_value="auto", default=None,
                 help="Offload layers to the host: auto (alone: the fewest that fit), N layers or P% of them."),
    click.option("--offload-layers", "num_offload_layers", type=int, help="Layers to offload (= --offload N)."),
    click.option("--offload-percent", "percentage_offload", type=float, help="Percentage of layers (= --offload P%)."),
    click.option("--offload-kv/--no-offload-kv", "offload_kv_cache", default=None),
)
#: Fine-tuning-only flags (``--offload`` is the finetuning command's own switch; see FINETUNING_OFFLOAD).
FINETUNING_OPTIONS = _opts(
    click.option("--method", "finetuning_method", type=click.Choice(["full", "lora", "qlora"])),
    click.option("--precision", "fine_tuning_quantization", type=click.Choice(["fp32", "fp16", "bf16", "fp8"]),
                 help="Full fine-tuning precision (fp32 = mixed precision)."),
    click.option("--lora-rank", type=int),
    click.option("--lora-targets", help="all-linear or a comma list such as q_proj,v_proj."),
    click.option("--optimizer", help="adamw, adamw_8bit, paged_adamw, paged_adamw_8bit, adafactor, sgd, or one a plugin "
                 "or your catalog folder adds (catalogs/optimizers)."),
    click.option("--micro-batch-size", type=int),
    click.option("--grad-accum", "gradient_accumulation_steps", type=int),
    click.option("--num-samples", type=int),
    click.option("--tokens-per-sample", type=int),
    click.option("--epochs", "num_epochs", type=int),
    click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None),
    click.option("--fused-kernels/--no-fused-kernels", "use_fused_kernels", default=None),
    click.option("--activation-offloading/--no-activation-offloading", default=None),
    click.option("--zero-stage", type=click.IntRange(0, 3)),
)
FINETUNING_OFFLOAD = click.option("--offload/--no-offload", "offload", default=None,
                                  help="ZeRO-Offload: optimizer states to the host.")
OUTPUT_OPTIONS = _opts(
    click.option("--check", is_flag=True, help="Exit status 1 when it does not fit (insufficient or error)."),
    click.option("--trace", is_flag=True, default=None, help="Include every evaluated formula (json; a list in the table)."),
    click.option("--format", "fmt", type=FORMATS, default="table", show_default=True),
)

INFERENCE_ONLY = ("quantization", "kv_cache_quantization", "input_tokens", "output_tokens", "concurrent_users",
                  "request_rate", "gpu_hour_cost", "inference_parallelism",
                  "enable_prefix_caching", "shared_prefix_ratio", "enable_continuous_batching", "num_offload_layers",
                  "percentage_offload", "offload_kv_cache")
FINETUNING_ONLY = ("finetuning_method", "fine_tuning_quantization", "lora_rank", "lora_targets", "optimizer",
                   "micro_batch_size", "gradient_accumulation_steps", "num_samples", "tokens_per_sample", "num_epochs",
                   "gradient_checkpointing", "use_fused_kernels", "activation_offloading", "zero_stage")
SHARED = ("gpu_key", "llm_key", "batch_size", "seq_length", "num_gpus", "interconnect_type", "runtime", "custom_vram",
          "offload_target", "trace")


def parse_offload(value: str) -> dict[str, Any]:
    """``--offload auto|N|P%`` → request fields (auto: the fewest layers with which it fits)."""
    text = value.strip().lower()
    if text == "auto":
        return {"enable_offloading": True}
    try:
        if text.endswith("%"):
            return {"enable_offloading": True, "percentage_offload": float(text[:-1])}
        return {"enable_offloading": True, "num_offload_layers": int(text)}
    except ValueError:
        raise click.UsageError(f"--offload: {value!r} is not auto, a number of layers or a percentage such as 25%") from None


def parse_runtime_settings(items: tuple[str, ...] | None) -> dict[str, float] | None:
    """``--runtime-setting NAME=VALUE`` (repeatable) → runtime_settings; the API checks the names and ranges."""
    if not items:
        return None
    out: dict[str, float] = {}
    for item in items:
        name, sep, text = item.partition("=")
        try:
            value = float(text)
        except ValueError:
            value = None
        if not sep or not name.strip() or value is None:
            raise click.UsageError(f"--runtime-setting: {item!r} is not NAME=NUMBER, e.g. max_num_seqs=4")
        out[name.strip()] = int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
    return out


def inference_fields(flags: dict[str, Any]) -> dict[str, Any]:
    """The inference request fields the flags set (None = not given)."""
    out = {k: flags.get(k) for k in SHARED + INFERENCE_ONLY}
    out["runtime_settings"] = parse_runtime_settings(flags.get("runtime_setting"))
    if flags.get("num_offload_layers") is not None or flags.get("percentage_offload") is not None:
        out["enable_offloading"] = True
    if flags.get("offload") is not None:
        out.update(parse_offload(flags["offload"]))
    if flags.get("flash_attention") is not None:
        out["optimization_config"] = {"flash_attention": flags["flash_attention"]}
    return out


def finetuning_fields(flags: dict[str, Any]) -> dict[str, Any]:
    """The fine-tuning request fields the flags set (None = not given)."""
    out = {k: flags.get(k) for k in SHARED + FINETUNING_ONLY if k not in ("lora_targets", "gradient_checkpointing",
                                                                          "use_fused_kernels", "activation_offloading",
                                                                          "zero_stage")}
    out["runtime_settings"] = parse_runtime_settings(flags.get("runtime_setting"))
    offload = flags.get("offload")
    if offload is not None:
        if isinstance(offload, str) and offload.strip().lower() not in ("auto", "on"):
            raise click.UsageError("--offload: fine-tuning offloads the optimizer states (ZeRO-Offload); give --offload "
                                   "without a number")
        out["enable_offloading"] = offload if isinstance(offload, bool) else True
    opt = {k: flags.get(k) for k in ("flash_attention", "gradient_checkpointing", "use_fused_kernels",
                                     "activation_offloading", "zero_stage") if flags.get(k) is not None}
    if opt:
        out["optimization_config"] = opt
    targets = flags.get("lora_targets")
    if targets:
        out["lora_target_modules"] = "all-linear" if targets == "all-linear" else \
            [t.strip() for t in targets.split(",") if t.strip()]
    return out


def build_request(request_file: str | None, model_file: str | None, fields: dict[str, Any],
                  workload: str) -> dict[str, Any]:
    """The request file, the flags over it, then a model file's architecture."""
    return apply_model_file(merge(read_request(request_file), fields), model_file, workload)


#: The fields every estimate needs, with the flags that give them.
KEY_FLAGS = (("gpu_key", "--gpu"), ("llm_key", "--model"))


def require_keys(*given: dict[str, Any]) -> None:
    """Refuse, naming the flag, a request that has no GPU or no model in any of ``given``."""
    missing = [f"{f}: required (give {flag} or a --request file)" for f, flag in KEY_FLAGS
               if not any(f in g for g in given)]
    if missing:
        raise click.UsageError("; ".join(missing))
