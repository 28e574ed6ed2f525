"""``vramplan inference`` and ``vramplan finetuning``: one estimate, printed as a table (the human
face: the verdict, a bar per memory component against the GPU, then speed), as exactly the HTTP
response body (``--format json``), or as a report (``--format markdown|html``)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..verdict import NOT_FITTING
from .common import (FINETUNING_OFFLOAD, FINETUNING_OPTIONS, INFERENCE_OPTIONS, OUTPUT_OPTIONS, REQUEST_OPTION,
                     SHARED_OPTIONS, build_request, finetuning_fields, inference_fields, require_keys)

BAR_WIDTH = 30


def _bar(part: float, total: float) -> str:
    n = 0 if total <= 0 else round(part / total * BAR_WIDTH)
    return "█" * n + "·" * (BAR_WIDTH - n)




def _status_text(status: str) -> str:
    from ..estimate import STATUS_TEXT

    text = STATUS_TEXT[status]
    return text.upper() if status in NOT_FITTING else text  # the verdicts to not miss


def render_table(body: dict[str, Any], out: dict[str, Any], workload: str) -> str:
    """The human face: the verdict, a bar per memory component against the GPU, then speed."""
    from ..catalog import get_catalog
    from ..search import capacity_gib

    cat = get_catalog()
    gpu = cat.gpus.get(body["gpu_key"])
    capacity = capacity_gib(body, cat)
    key = body["llm_key"]
    if key == "custom":
        from ..modelfiles import display_name

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
        if key == "runtime_settings":  # the whole object: each entry as the repeatable flag
            parts += [f"--runtime-setting {name}={v:.12g}" if isinstance(v, float) else f"--runtime-setting {name}={v}"
                      for name, v in value.items()]
        elif isinstance(value, bool):
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


def _say_ignored(warnings: list[str]) -> None:
    """Fields the API ignored, said on stderr whatever the format."""
    for warning in warnings:
        if warning.startswith("ignored unknown field"):
            click.echo(f"warning: {warning}", err=True)


def finish(body: dict[str, Any], workload: str, fmt: str, check: bool) -> None:
    """Estimate ``body`` once and print it in ``fmt`` (a report: the report's own pass, with its trace);
    ``check``: exit 1 when it does not fit."""
    if fmt in ("markdown", "html"):
        from ..report import render_context, report_context

        ctx = report_context(body, workload)
        _say_ignored(ctx["warnings"])
        click.echo(render_context(ctx, fmt))
        status = ctx["verdict"]["status"]
    else:
        from .. import estimate_finetuning, estimate_inference

        out = (estimate_inference if workload == "inference" else estimate_finetuning)(body)
        _say_ignored(out.get("warnings", []))
        click.echo(json.dumps(out, indent=2) if fmt == "json" else render_table(body, out, workload))
        status = out["memory_status"]
    if check and status in NOT_FITTING:
        sys.exit(1)


# -- inference ---------------------------------------------------------------------------------

@click.command()
@REQUEST_OPTION
@SHARED_OPTIONS
@INFERENCE_OPTIONS
@OUTPUT_OPTIONS
def inference(request_file, model_file, fmt, check, **flags) -> None:
    """Estimate memory and speed of serving a model."""
    body = build_request(request_file, model_file, inference_fields(flags), "inference")
    require_keys(body)
    finish(body, "inference", fmt, check)


# -- fine-tuning -------------------------------------------------------------------------------

@click.command()
@REQUEST_OPTION
@SHARED_OPTIONS
@FINETUNING_OPTIONS
@FINETUNING_OFFLOAD
@OUTPUT_OPTIONS
def finetuning(request_file, model_file, fmt, check, **flags) -> None:
    """Estimate memory and speed of fine-tuning a model."""
    body = build_request(request_file, model_file, finetuning_fields(flags), "finetuning")
    require_keys(body)
    finish(body, "finetuning", fmt, check)
