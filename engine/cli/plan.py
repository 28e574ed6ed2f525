"""``vramplan plan`` (what fits?), and the grid syntax ``plan`` and ``sweep`` (:mod:`vramplan.cli.sweep`) share.

A plain click command; :mod:`vramplan.cli` attaches it to the main group, whose error handling
turns every :class:`~vramplan.errors.VramplanError` and usage error into one line and exit 2.

Grid syntax: a comma list ``1,8,32``; numbers take binary suffixes ``k`` (x1024) and ``m``
(x1024^2), so ``2k`` = 2048; a range ``a..b`` is a, 2a, 4a, … up to b (b included), so
``2k..128k`` = 2048, 4096, …, 131072. Text lists (``--gpu-keys``, ``--find``) are comma lists.
"""

from __future__ import annotations

import json
import sys
import re
from typing import Any

import click

from .common import (FINETUNING_ONLY, FINETUNING_OPTIONS, FORMATS, INFERENCE_ONLY, INFERENCE_OPTIONS, SHARED_OPTIONS,
                     apply_model_file, finetuning_fields, inference_fields, merge, read_request)


FIND_CHOICES = ("max_seq_length", "max_batch_size", "max_concurrent_users", "max_request_rate", "min_num_gpus",
                "best_quantization", "gpus", "cheapest_deployment")

_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_number(text: str, flag: str) -> int:
    m = _NUMBER.match(text)
    if not m:
        raise click.UsageError(f"{flag}: {text.strip()!r} is not a number (use 4096, 4k, 1,8,32 or 2k..128k)")
    value = float(m.group(1)) * {"": 1, "k": 1024, "m": 1024 ** 2}[m.group(2).lower()]
    if not value.is_integer() or value < 1:
        raise click.UsageError(f"{flag}: {text.strip()!r} is not a whole number of at least 1")
    return int(value)


def parse_int_grid(text: str, flag: str) -> list[int]:
    """``1,8,32`` / ``2k..128k`` / a mix (``512,2k..8k``) → sorted distinct integers."""
    values: list[int] = []
    for part in text.split(","):
        if not part.strip():
            raise click.UsageError(f"{flag}: empty item in {text!r}")
        if ".." in part:
            lo_text, _, hi_text = part.partition("..")
            lo, hi = parse_number(lo_text, flag), parse_number(hi_text, flag)
            if lo > hi:
                raise click.UsageError(f"{flag}: range {part.strip()!r} runs backwards")
            x = lo
            while x < hi:
                values.append(x)
                x *= 2
            values.append(hi)
        else:
            values.append(parse_number(part, flag))
    return sorted(set(values))


def parse_text_grid(text: str, flag: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise click.UsageError(f"{flag}: empty item in {text!r}")
    return list(dict.fromkeys(items))


# -- plan --------------------------------------------------------------------------------------

def _plan_options(f):
    """``plan`` takes the estimate commands' flags (both workloads'), so a question is asked of the same request."""
    return SHARED_OPTIONS(INFERENCE_OPTIONS(FINETUNING_OPTIONS(f)))


@click.command()
@click.option("--request", "request_file", metavar="FILE", help="Request JSON (an inference or fine-tuning body, "
              "optionally with workload/find/headroom/gpu_keys); - reads stdin. Flags override its fields.")
@click.option("--workload", type=click.Choice(["inference", "finetuning"]), help="Default: the file's, else inference.")
@click.option("--find", "find", metavar="Q[,Q...]",
              help=f"Questions, comma-separated: {', '.join(FIND_CHOICES)}.")
@_plan_options
@click.option("--gpu-keys", help="Limit `gpus` to these GPUs (comma-separated).")
@click.option("--headroom", type=click.FloatRange(0, 1, max_open=True), help="Fraction of GPU memory to keep free.")
@click.option("--slo-ttft-ms", type=click.FloatRange(0, min_open=True), help="SLO: mean time to first token, ms.")
@click.option("--slo-itl-ms", type=click.FloatRange(0, min_open=True), help="SLO: mean time between output tokens, ms.")
@click.option("--slo-e2e-ms", type=click.FloatRange(0, min_open=True), help="SLO: mean end-to-end request latency, ms.")
@click.option("--runtimes", help="cheapest_deployment: runtimes to search (comma-separated; default: every runtime "
              "with a deployment profile).")
@click.option("--min-quality-rank", type=click.FloatRange(0),
              help="cheapest_deployment: weights and KV formats of at least this quality_rank.")
@click.option("--gpu-hour-costs", metavar="KEY=PRICE[,...]", help="cheapest_deployment: price per GPU-hour by GPU key "
              "(overrides the catalog's reference prices).")
@click.option("--max-deployments", type=click.IntRange(1, 1000), help="cheapest_deployment: GPU types to list (default 10).")
@click.option("--check", is_flag=True, help="Exit status 1 when a question has no answer.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True,
              help="markdown / html: the report of the best cheapest_deployment answer (its cost and binding constraint).")
def plan(request_file, workload, find, model_file, gpu_keys, headroom, slo_ttft_ms, slo_itl_ms, slo_e2e_ms, runtimes,
         min_quality_rank, gpu_hour_costs, max_deployments, check, fmt, **flags) -> None:
    """Answer "what fits?": largest context, batch or user count, fewest GPUs, best quantization, GPUs,
    the cheapest deployment that meets an SLO.

    Takes the same model, GPU and workload flags as `inference` and `finetuning`; for
    cheapest_deployment the load (--request-rate or --concurrent-users) is the whole deployment's."""
    from .. import plan as run_plan

    body = read_request(request_file)
    workload = workload or body.get("workload") or "inference"
    other = FINETUNING_ONLY if workload == "inference" else INFERENCE_ONLY + ("num_offload_layers", "percentage_offload")
    given = [k for k in other if flags.get(k) is not None]
    if given:
        opts = {p.name: p.opts[0] for p in click.get_current_context().command.params}
        names = ", ".join(opts.get(k, k) for k in given)
        raise click.UsageError(f"{names}: not {'an inference' if workload == 'inference' else 'a fine-tuning'} "
                               f"setting (give --workload {'finetuning' if workload == 'inference' else 'inference'})")
    fields = inference_fields(flags) if workload == "inference" else finetuning_fields(flags)
    body = apply_model_file(merge(body, fields), model_file, workload)
    body["workload"] = workload
    if headroom is not None:
        body["headroom"] = headroom
    for key, value in (("min_quality_rank", min_quality_rank), ("max_deployments", max_deployments)):
        if value is not None:
            body[key] = value
    if runtimes:
        body["runtimes"] = parse_text_grid(runtimes, "--runtimes")
    if gpu_hour_costs:
        body["gpu_hour_costs"] = parse_prices(gpu_hour_costs, "--gpu-hour-costs")
    if find:
        body["find"] = parse_text_grid(find, "--find")
        bad = [q for q in body["find"] if q not in FIND_CHOICES]
        if bad:
            raise click.UsageError(f"--find: unknown question {', '.join(bad)} (one of {', '.join(FIND_CHOICES)})")
    if gpu_keys:
        body["gpu_keys"] = parse_text_grid(gpu_keys, "--gpu-keys")
    slo = {k: v for k, v in (("ttft_ms", slo_ttft_ms), ("itl_ms", slo_itl_ms), ("e2e_latency_ms", slo_e2e_ms)) if v is not None}
    if slo:
        body["slo"] = {**(body.get("slo") or {}), **slo}
    if "find" not in body:
        raise click.UsageError("--find: required (or a \"find\" list in the --request file)")
    if fmt in ("markdown", "html") and "cheapest_deployment" not in body["find"]:
        raise click.UsageError(f"--format {fmt}: the report is of a deployment; ask --find cheapest_deployment")
    answers = run_plan(body)
    if fmt in ("markdown", "html"):
        answer = answers["cheapest_deployment"]
        if answer["value"] is None:
            raise click.ClickException(f"cheapest_deployment: none: {answer['reason']}")
        from ..report import render_deployment_report

        click.echo(render_deployment_report(answer["value"][0], fmt, slo=body.get("slo"), headroom=body.get("headroom", 0.0)))
    elif fmt == "json":
        click.echo(json.dumps(answers, indent=2))
    else:
        click.echo(plan_table(answers, body))
    if check and any(a["value"] is None for a in answers.values()):
        sys.exit(1)


def parse_prices(text: str, flag: str) -> dict[str, float]:
    """``h100_80=2.5,l40s=1.1`` -> {"h100_80": 2.5, "l40s": 1.1}."""
    out: dict[str, float] = {}
    for item in parse_text_grid(text, flag):
        key, sep, price = item.partition("=")
        try:
            value = float(price)
        except ValueError:
            value = -1.0
        if not sep or not key.strip() or not value >= 0:
            raise click.UsageError(f"{flag}: {item!r} is not KEY=PRICE with a price of at least 0 (e.g. h100_80=2.5)")
        out[key.strip()] = value
    return out


def plan_table(answers: dict[str, Any], body: dict[str, Any]) -> str:
    headroom = body.get("headroom", 0)
    lines = [f"{body['llm_key']} on {body.get('gpu_key', 'each GPU')}" + (f", keeping {headroom:.0%} free" if headroom else "")]
    for q, a in answers.items():
        if a["value"] is None:
            lines.append(f"  {q:<22} none: {a['reason']}")
        elif q == "cheapest_deployment":
            lines += deployment_lines(a)
        elif q == "gpus":
            speed = "per_user_tps" if "per_user_tps" in a["value"][0] else "training_tps"
            lines.append(f"  {q:<22} {len(a['value'])} of {a['considered']} fit, fastest first:")
            for g in a["value"]:
                lines.append(f"    {g['gpu_key']:<24} {g['vram_usage']:8.2f} GiB  {g['memory_status']:<10} {g[speed]:10.1f} {speed}")
        else:
            e = a["estimate"]
            note = f"  (limited by {a['limited_by']})" if a.get("limited_by") else ""
            if a.get("binding"):
                note += f"  (next step fails on {a['binding']})"
            value = f"{a['value']:g} requests/s" if q == "max_request_rate" else a["value"]
            srv = e.get("serving")
            speed = (f", TTFT {srv['ttft_ms']:.0f} ms, ITL {srv['itl_ms']:.1f} ms" if srv and srv["ttft_ms"] is not None else "")
            lines.append(f"  {q:<22} {value}: {e['vram_usage']:.2f} GiB, {e['memory_status']}{speed}{note}")
    return "\n".join(lines)


def deployment_lines(answer: dict[str, Any]) -> list[str]:
    """The cheapest_deployment answer as a ranked table: one line per GPU type, best first."""
    rows = answer["value"]
    load = "requests/s" if "request_rate" in rows[0] else "users"
    lines = [f"  cheapest_deployment    {len(rows)} GPU types, best first ({answer['considered']:,} configurations "
             f"considered, {answer['evaluations']:,} estimates):",
             f"    {'#':>2}  {'GPU':<18} {'GPUs':>4} {'split':<8} {'weights':<8} {'KV':<6} {'runtime':<13} {'repl.':>5} "
             f"{load + ' each':>15} {'TTFT ms':>9} {'ITL ms':>8} {'util':>5} {'cost/h':>9} {'per Mtok':>8}  binding"]
    for i, r in enumerate(rows, 1):
        share = f"{r['request_rate']:.3g}" if "request_rate" in r else str(r["concurrent_users"])
        cost = "-" if r["cost_per_hour"] is None else f"{r['cost_per_hour']:,.2f}"
        per_m = "-" if r["cost_per_million_output_tokens"] is None else f"{r['cost_per_million_output_tokens']:,.3f}"
        ttft = "-" if r["ttft_ms"] is None else f"{r['ttft_ms']:,.0f}"
        itl = "-" if r["itl_ms"] is None else f"{r['itl_ms']:.1f}"
        why = r["binding"] or "-"
        if r.get("binding_step"):
            why += f" (at {r['binding_step']})"
        lines.append(f"    {i:>2}  {r['gpu_key']:<18} {r['num_gpus']:>4} {r['inference_parallelism']:<8} {r['quantization']:<8} "
                     f"{r['kv_cache_quantization']:<6} {r['runtime']:<13} {r['replicas']:>5} {share:>15} {ttft:>9} {itl:>8} "
                     f"{r['utilisation']:>5.0%} {cost:>9} {per_m:>8}  {why}")
    refs = sorted({r["gpu_key"] for r in rows if (r.get("price") or {}).get("kind") == "reference"})
    if refs:
        lines.append(f"    reference list prices (USD, not quotes; see each row's price.source): {', '.join(refs)}")
    unpriced = [r["gpu_key"] for r in rows if r["cost_per_hour"] is None]
    if unpriced:
        lines.append("    no price for " + ", ".join(unpriced) + ": ranked after the priced ones by GPU count (give --gpu-hour-costs)")
    lines += [f"    note: {n}" for n in answer.get("notes") or ()]
    return lines
