"""The ``vramplan`` command.

``vramplan inference`` / ``vramplan finetuning`` take a request file (``--request FILE``, ``-`` for
stdin) and/or friendly flags (flags override the file), and print a table (default) or exactly the
HTTP response body (``--format json``). Every error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import VramplanError

BAR_WIDTH = 30


#: Commands that live in their own modules, imported when they run: the HTTP server's imports alone
#: take longer than answering ``vramplan inference``.
LAZY_COMMANDS = {
    "models": "vramplan.cli_models:models", "gpus": "vramplan.cli_models:gpus", "runtimes": "vramplan.cli_models:runtimes",
    "serve": "vramplan.server.commands:serve", "tokens": "vramplan.server.commands:tokens",
    "plan": "vramplan.cli_plan:plan", "sweep": "vramplan.cli_sweep:sweep",
    "formulas": "vramplan.cli_formulas:formulas",
}


class _Group(click.Group):
    """Every user error — bad flags, bad request, unknown keys — is one line on stderr and exit 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS and name not in self.commands:
            module, _, attr = LAZY_COMMANDS[name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
        except VramplanError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vramplan")
def main() -> None:
    """Will this LLM workload fit on that GPU, and how fast will it run?

    Memory figures are GiB (2^30 bytes); a maker's "24 GB" card is 24 GiB.
    """


# -- shared helpers ---------------------------------------------------------------------------

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
        if key == "optimization_config":
            out[key] = {**out.get(key, {}), **value}
        else:
            out[key] = value
    return out


def apply_model_file(body: dict[str, Any], path: str | None, workload: str = "inference") -> dict[str, Any]:
    """``--model-file``: estimate from a config.json, GGUF or safetensors file directly."""
    if not path:
        return body
    from .hub import read_model

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


def _bar(part: float, total: float) -> str:
    n = 0 if total <= 0 else round(part / total * BAR_WIDTH)
    return "█" * n + "·" * (BAR_WIDTH - n)




def _status_text(status: str) -> str:
    from .estimate import STATUS_TEXT

    text = STATUS_TEXT[status]
    return text.upper() if status in ("insufficient", "error") else text  # the verdicts to not miss


def render_table(body: dict[str, Any], out: dict[str, Any], workload: str) -> str:
    """The human face: the verdict, a bar per memory component against the GPU, then speed."""
    from .catalog import get_catalog

    cat = get_catalog()
    gpu = cat.gpus.get(body["gpu_key"])
    capacity = body.get("custom_vram") or gpu.data["memory_gib"]
    key = body["llm_key"]
    if key == "custom":
        from .modelfiles import display_name

        model = display_name(body.get("custom_model") or {}) or "custom model"
    else:
        model = key if key.startswith("hf:") else cat.models.get(key).data["name"]
    n = body.get("num_gpus", 1)
    lines = [f"{model} on {n} x {gpu.data['label']} ({capacity:g} GiB each), runtime {out.get('runtime')}",
             f"{out['vram_usage']:.2f} GiB of {capacity:g} GiB ({out['actual_vram_percentage']:.1f}%) — "
             f"{out['memory_status']}: {_status_text(out['memory_status'])}", ""]
    width = max(len(k) for k in out["memory_details"]) if out["memory_details"] else 10
    scale = max(capacity, out["vram_usage"])  # bars are shares of the larger of the card and the need
    for label, size in out["memory_details"].items():
        lines.append(f"  {label:<{width}}  {size:8.2f} GiB  {_bar(size, scale)}")
    lines.append(f"  {'Total':<{width}}  {out['vram_usage']:8.2f} GiB  {_bar(out['vram_usage'], scale)}")
    if scale > capacity:
        lines.append(f"  {'GPU':<{width}}  {capacity:8.2f} GiB  {_bar(capacity, scale)}")
    lines.append("")
    if workload == "inference":
        lines += serving_lines(out["serving"])
        lines.append(f"  memory      {out['static_shared_memory']:.2f} GiB shared + {out['per_user_memory']:.2f} GiB per user")
    else:
        lines += [f"  training    {out['training_tps']:.0f} tokens/s, {out['samples_per_second']:.3g} samples/s, "
                  f"{out['total_training_time_hours']:.2f} h for {out['total_tokens']:.3g} tokens"]
    lines.append(f"  host RAM    {out['estimated_system_ram_required']:.1f} GiB   offloaded {out['offloaded_memory']:.2f} GiB   "
                 f"power {out['estimated_power_draw']} W")
    off = out.get("offload")
    if off:
        where = "CPU RAM" if off["target"] == "cpu_ram" else "NVMe"
        lines.append(f"  layers      {off['of_layers'] - off['layers']} of {off['of_layers']} on the GPU, {off['layers']} in {where}"
                     + (", KV cache too" if off["kv_cache"] else ""))
    for w in out.get("warnings", []):
        lines.append(f"  warning: {w}")
    if "suggestions" in out:
        lines += [""] + suggestion_lines(out["suggestions"])
    if "trace" in out:
        lines += ["", "  formulas, in evaluation order:"]
        for step in out["trace"]:
            lines.append(f"    {step['id']} = {_short(step['value'])} {step['unit']}   ({step['expr']})")
    return "\n".join(lines)


def suggestion_lines(suggestions: list[dict[str, Any]]) -> list[str]:
    """What would make it fit, cheapest first, each with its request fields and what it costs."""
    if not suggestions:
        return ["  no change within one node (8 GPUs) that fits was found"]
    lines = ["  what would make it fit (cheapest first; each estimated):"]
    for i, s in enumerate(suggestions, 1):
        lines.append(f"  {i}. {s['summary']}: {s['vram_usage']:.2f} GiB, {s['memory_status']}, keeps {s['keeps']:.0%}")
        lines.append(f"     {_flags(s['change'])}")
    return lines


#: Request field → CLI flag, for showing a suggestion as the flags that apply it.
_FLAG_NAMES = {"gpu_key": "--gpu", "llm_key": "--model", "inference_parallelism": "--parallelism",
               "finetuning_method": "--method", "fine_tuning_quantization": "--precision",
               "gradient_accumulation_steps": "--grad-accum", "num_offload_layers": "--offload-layers",
               "percentage_offload": "--offload-percent", "num_epochs": "--epochs"}
_BOOL_FLAGS = {"enable_offloading": ("--offload", None), "enable_prefix_caching": ("--prefix-caching", "--no-prefix-caching"),
               "gradient_checkpointing": ("--gradient-checkpointing", "--no-gradient-checkpointing"),
               "flash_attention": ("--flash-attention", "--no-flash-attention"),
               "use_fused_kernels": ("--fused-kernels", "--no-fused-kernels"),
               "activation_offloading": ("--activation-offloading", "--no-activation-offloading")}


def _flags(change: dict[str, Any]) -> str:
    parts = []
    items = [(k, v) for k, v in change.items() if k != "optimization_config"] + \
        list((change.get("optimization_config") or {}).items())
    if "num_offload_layers" in change:
        items = [(k, v) for k, v in items if k != "enable_offloading"]  # --offload-layers turns offloading on
    for key, value in items:
        if isinstance(value, bool):
            on, off = _BOOL_FLAGS.get(key, ("--" + key.replace("_", "-"), None))
            parts.append(on if value else (off or f"{on} false"))
        else:
            parts.append(f"{_FLAG_NAMES.get(key, '--' + key.replace('_', '-'))} {value}")
    return " ".join(parts)


def _short(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


LOADS = {"closed_loop": "closed loop", "open_loop": "open loop", "static_batch": "static batch"}


def serving_lines(srv: dict[str, Any]) -> list[str]:
    """The serving object in words: the load, what runs, how fast, what limits it."""
    def ms(value: float | None) -> str:
        return "-" if value is None else (f"{value:,.0f} ms" if value >= 100 else f"{value:.2f} ms")

    lines = [f"  load        {LOADS[srv['load']]}: {srv['input_tokens']} prompt + {srv['output_tokens']} output tokens per request, "
             f"{srv['running_sequences']:g} running" + (f", {srv['queued_requests']:g} queued" if srv["queued_requests"] else ""),
             f"  throughput  {srv['output_throughput_tps']:,.1f} output tokens/s ({srv['total_throughput_tps']:,.1f} with prompts), "
             f"{srv['requests_per_second']:.3g} requests/s, {srv['utilisation']:.0%} of capacity, limited by {srv['limited_by']}",
             f"  latency     first token {ms(srv['ttft_ms'])}, then {ms(srv['itl_ms'])} per token, {ms(srv['e2e_latency_ms'])} per request"]
    if srv["cost_per_million_output_tokens"] is not None:
        lines.append(f"  cost        {srv['cost_per_hour']:,.2f} per hour, {srv['cost_per_million_output_tokens']:,.3f} per million output tokens")
    return lines


def emit(body: dict[str, Any], out: dict[str, Any], workload: str, fmt: str) -> None:
    for warning in out.get("warnings", []):  # fields the API ignored: said on stderr whatever the format
        if warning.startswith("ignored unknown field"):
            click.echo(f"warning: {warning}", err=True)
    if fmt == "json":
        click.echo(json.dumps(out, indent=2))
    elif fmt in ("markdown", "html"):
        from .report import render_report

        click.echo(render_report(body, out, workload, fmt))
    else:
        click.echo(render_table(body, out, workload))


FORMATS = click.Choice(["table", "json", "markdown", "html"])


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
    click.option("--parallelism", "inference_parallelism", type=click.Choice(["pipeline", "tensor"])),
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


def inference_fields(flags: dict[str, Any]) -> dict[str, Any]:
    """The inference request fields the flags set (None = not given)."""
    out = {k: flags.get(k) for k in SHARED + INFERENCE_ONLY}
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


def finish(body: dict[str, Any], out: dict[str, Any], workload: str, fmt: str, check: bool) -> None:
    emit(body, out, workload, fmt)
    if check and out["memory_status"] in ("insufficient", "error"):
        sys.exit(1)


# -- inference ---------------------------------------------------------------------------------

@main.command()
@REQUEST_OPTION
@SHARED_OPTIONS
@INFERENCE_OPTIONS
@OUTPUT_OPTIONS
def inference(request_file, model_file, fmt, check, **flags) -> None:
    """Estimate memory and speed of serving a model."""
    from . import estimate_inference

    body = build_request(request_file, model_file, inference_fields(flags), "inference")
    _require_keys(body)
    finish(body, estimate_inference(body), "inference", fmt, check)


def _require_keys(body: dict[str, Any]) -> None:
    missing = [f for f, opt in (("gpu_key", "--gpu"), ("llm_key", "--model")) if f not in body]
    if missing:
        raise click.UsageError("; ".join(f"{f}: required (give {opt} or a --request file)" for f, opt in
                                         (("gpu_key", "--gpu"), ("llm_key", "--model")) if f in missing))


# -- fine-tuning -------------------------------------------------------------------------------

@main.command()
@REQUEST_OPTION
@SHARED_OPTIONS
@FINETUNING_OPTIONS
@FINETUNING_OFFLOAD
@OUTPUT_OPTIONS
def finetuning(request_file, model_file, fmt, check, **flags) -> None:
    """Estimate memory and speed of fine-tuning a model."""
    from . import estimate_finetuning

    body = build_request(request_file, model_file, finetuning_fields(flags), "finetuning")
    _require_keys(body)
    finish(body, estimate_finetuning(body), "finetuning", fmt, check)


# -- plugins -----------------------------------------------------------------------------------

@main.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def plugins(fmt: str) -> None:
    """List loaded plugins with versions, and any that failed to load."""
    from .catalog import get_catalog

    cat = get_catalog()
    loaded = [{"name": p.name, "version": p.version, "builtin": p.builtin, "hooks": list(p.hooks)} for p in cat.host.plugins()]
    failed = [{"name": f.name, "version": f.version, "error": f.error} for f in cat.host.failures]
    if fmt == "json":
        click.echo(json.dumps({"plugins": loaded, "failed": failed}, indent=2))
        return
    click.echo(f"{'name':<32} {'version':<10} {'kind':<9} hooks")
    for p in loaded:
        kind = "built-in" if p["builtin"] else "plugin"
        click.echo(f"{p['name']:<32} {p['version']:<10} {kind:<9} {', '.join(p['hooks'])}")
    for f in failed:
        click.echo(f"{f['name']:<32} {f['version']:<10} FAILED    {f['error']}")
