"""Auditable reports (Markdown and HTML) of one estimate: the last stage, ``render``.

A layer above the pipeline and the searches. :func:`report_context` runs the pipeline **once** (with
a trace, through :func:`vramplan.answer.outcome`), asks the planner's searches what the report shows
beside it (suggestions, the context curve, a deployment's cost), and hands those products to
:func:`build_context`, which only reads them: plain, JSON-able data from the resolved request, the
response with its trace, the planner's answers and the catalog. :func:`render_context` fills the
jinja2 templates. Keeping the context plain lets tests freeze one and snapshot the templates alone.

Templates: one :class:`jinja2.Environment` per template search path, ``StrictUndefined``,
autoescape for ``*.html*``. The loader searches, first match wins:

1. ``$VRAMPLAN_TEMPLATE_DIR`` (a user's folder),
2. folders plugins register with ``register_report_templates``, the last registered first,
3. the built-in ``vramplan/templates`` (registered by the built-in plugin, always searched last),

so a user or plugin overrides ``report.html.j2`` whole, or one partial such as
``partials/verdict.html.j2``. Charts are drawn in Python (:mod:`vramplan.charts`) and offered to
templates as ``stacked_bar_svg(memory, capacity)`` and ``context_chart_svg(curve)``.
"""

from __future__ import annotations

import json
import math
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from . import charts, contract, maps
from .answer import outcome
from .catalog import Catalog, get_catalog
from .datafiles import load_schema
from .deploy import describe_deployment
from .estimate import OUTPUTS, STATUS_TEXT
from .liveness import live_steps
from .maps import context_lengths  # noqa: F401  (the report's curve; tests use it from here)
from .pipeline import Outcome
from .request import SCHEMAS
from .scenario import CLASS_CONSTANTS, VARIABLES, setting_key
from .suggest import add_suggestions, load_waits
from .units import GIB, MIB
from .version import __version__

FORMATS = {"markdown": "report.md.j2", "html": "report.html.j2"}
BUILTIN_TEMPLATES = Path(__file__).parent / "templates"


#: Units of request fields (the schemas' descriptions say the same in words).
REQUEST_UNITS = {
    "custom_vram": "GiB", "num_gpus": "GPUs", "batch_size": "sequences", "seq_length": "tokens",
    "concurrent_users": "users", "shared_prefix_ratio": "fraction", "num_offload_layers": "layers",
    "percentage_offload": "%", "custom_weights_bytes": "bytes", "lora_rank": "rank",
    "gradient_accumulation_steps": "steps", "micro_batch_size": "sequences", "num_samples": "samples",
    "tokens_per_sample": "tokens", "num_epochs": "epochs", "headroom": "fraction",
}

#: Response fields shown as performance figures: (field, label, unit).
PERFORMANCE = {
    "inference": (("per_user_tps", "Decode speed per user", "tokens/s"),
                  ("estimated_throughput_tps", "Throughput, all users", "tokens/s"),
                  ("estimated_latency_tps", "Latency-bound speed", "tokens/s"),
                  ("ms_per_token", "Time per output token", "ms"),
                  ("tftt", "Time to first token", "ms"),
                  ("static_shared_memory", "Memory shared by all users", "GiB"),
                  ("per_user_memory", "Memory each user adds", "GiB"),
                  ("estimated_system_ram_required", "Host RAM required", "GiB"),
                  ("offloaded_memory", "Offloaded memory", "GiB"),
                  ("estimated_power_draw", "Power draw", "W")),
    "finetuning": (("training_tps", "Training throughput", "tokens/s"),
                   ("samples_per_second", "Samples per second", "samples/s"),
                   ("steps_per_second", "Optimizer steps per second", "steps/s"),
                   ("total_tokens", "Tokens to train on", "tokens"),
                   ("total_training_time_hours", "Training time", "h"),
                   ("static_shared_memory", "Static memory", "GiB"),
                   ("estimated_system_ram_required", "Host RAM required", "GiB"),
                   ("offloaded_memory", "Offloaded memory", "GiB"),
                   ("estimated_power_draw", "Power draw", "W")),
}

_URL = re.compile(r"https?://[^\s)\]>'\"]+")


# -- numbers ----------------------------------------------------------------------------------

def exact(v: Any) -> str:
    """A number as a reader retypes it into a calculator: integers whole, others to 10 digits."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if float(v).is_integer() and abs(v) < 1e16:
        return str(int(v))
    return f"{v:.10g}"


def human(v: Any, unit: str) -> str:
    """Bytes also in GiB or MiB, so a reader sees the scale; other units left alone."""
    if unit != "bytes" or not isinstance(v, (int, float)) or isinstance(v, bool):
        return ""
    return f"{v / GIB:.3f} GiB" if abs(v) >= GIB / 10 else f"{v / MIB:.2f} MiB"


def sentence(text: Any) -> str:
    """First letter upper-cased, the rest untouched (jinja's ``capitalize`` lowercases "GiB")."""
    text = str(text)
    return text[:1].upper() + text[1:]


def md_cell(text: Any) -> str:
    """Text safe inside Markdown, also in a table cell: pipes and HTML escaped, one line."""
    return (str(text).replace("\\", "\\\\").replace("|", "\\|").replace("&", "&amp;").replace("<", "&lt;")
            .replace(">", "&gt;").replace("\n", " "))


# -- context ----------------------------------------------------------------------------------

def _request_rows(body: dict[str, Any], req: dict[str, Any], workload: str) -> list[dict[str, Any]]:
    """The request in the schema's field order, defaults applied and marked."""
    order = list(load_schema(SCHEMAS[workload])["properties"])
    rows = []
    for field in sorted(req, key=lambda f: order.index(f) if f in order else len(order)):
        value = req[field]
        if field in ("trace", "custom_model") or value is None:
            continue
        if field == "optimization_config":
            for k, v in value.items():
                given = k in (body.get("optimization_config") or {})
                rows.append({"field": f"optimization_config.{k}", "value": _show(v), "unit": "", "default": not given})
            continue
        rows.append({"field": field, "value": _show(value), "unit": REQUEST_UNITS.get(field, ""), "default": field not in body})
    if "custom_model" in req:
        cfg = req["custom_model"] or {}
        rows.append({"field": "custom_model", "value": f"config.json with {len(cfg)} keys", "unit": "", "default": False})
    return rows


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return str(v)


def _source(entry) -> dict[str, Any]:
    text = str(entry.data.get("source", "")) if entry is not None else ""
    return {"source": text, "urls": _URL.findall(text)}


def _provenance(res) -> list[dict[str, Any]]:
    rows = []
    items = [("GPU", res.gpu), ("Model", res.model), ("Weights format", res.quant)]
    if res.kv_quant is not None and res.kv_quant.key != res.quant.key:
        items.append(("KV cache format", res.kv_quant))
    items += [("Runtime", res.runtime), ("Interconnect", res.interconnect)]
    for what, entry in items:
        if entry is None:  # custom model
            rows.append({"what": what, "key": res.model_key, "label": res.model_name, "plugin": "request",
                         "file": "custom_model", "source": "the request's config.json", "urls": []})
            continue
        src = _source(entry)
        if what == "Runtime" and not src["source"]:
            src = {"source": "each constant cites its own source (see Runtime constants)", "urls": []}
        rows.append({"what": what, "key": entry.key, "label": str(entry.data.get("label") or entry.data.get("name") or entry.key),
                     "plugin": entry.provenance.plugin, "file": entry.provenance.file or "", **src})
    return rows


def _formulas(cat: Catalog, trace: list[dict[str, Any]], runtime, settings: dict[str, Any] | None = None,
              order: tuple[str, ...] = ()) -> tuple[list[dict], list[dict], list[dict]]:
    """(formulas in evaluation order, scenario inputs they read, runtime constants they read). A constant the
    request's ``settings`` (runtime_settings) set says so beside the profile's source, and so does a per-class
    efficiency (``eff_decode_bw``...) one of them set for this GPU's classes (``order``)."""
    known = cat.formulas.formulas
    consts = runtime.data["constants"]
    settings = settings or {}
    scenario: dict[str, dict] = {}
    runtime_rows: dict[str, dict] = {}
    out = []
    for step in trace:
        f = known.get(step["id"])
        inputs = []
        for name, value in step["inputs"].items():
            if name in known:
                unit, kind = known[name].unit, "formula"
            elif name.startswith("rt_"):
                key = name[3:]  # rt_<name> is the profile's plain constant (per-class ones feed the eff_* variables)
                c = consts.get(key, {})
                unit, kind = str(c.get("unit", "")), "runtime"
                source = str(c.get("source", "not available"))
                if key in settings:
                    source = f"set by the request (runtime_settings.{key}); the profile's: {source}"
                runtime_rows.setdefault(name, {"name": name, "constant": key, "value": exact(value), "unit": unit,
                                               "source": source})
            else:
                unit, meaning = VARIABLES.get(name, ("", ""))
                key = setting_key(settings, CLASS_CONSTANTS[name], order) if name in CLASS_CONSTANTS else None
                if key:
                    meaning = f"{meaning}; set by the request (runtime_settings.{key})"
                kind = "scenario"
                scenario.setdefault(name, {"name": name, "value": exact(value), "unit": unit, "meaning": meaning})
            inputs.append({"name": name, "value": exact(value), "unit": unit, "kind": kind})
        out.append({"id": step["id"], "description": f.description if f else "", "expr": step["expr"],
                    "unit": step["unit"], "file": step["file"], "references": list(f.references) if f else [],
                    "inputs": inputs, "value": exact(step["value"]), "human": human(step["value"], step["unit"])})
    return out, sorted(scenario.values(), key=lambda r: r["name"]), sorted(runtime_rows.values(), key=lambda r: r["name"])


def _suggestion_row(s: dict[str, Any]) -> dict[str, Any]:
    """One suggestion as a report row: the change as request JSON, the result, and what it costs in words."""
    costs = []
    for name, words, unit in (("quality_rank", "quality rank", ""), ("speed", "", " tokens/s"), ("workload", "", ""),
                              ("gpus", "GPUs", ""), ("gpu_memory_gib", "GPU memory", " GiB")):
        c = s["cost"].get(name)
        if c is None or c["before"] == c["after"]:
            continue
        if name == "speed":
            words = "decode per user" if c["field"] == "per_user_tps" else "training"
        elif name == "workload":
            words = c["field"].replace("_", " ")
        costs.append(f"{words} {exact(round(c['before'], 1))} → {exact(round(c['after'], 1))}{unit}")
    return {"summary": s["summary"], "change": json.dumps(s["change"]), "vram_usage": s["vram_usage"],
            "percent": s["actual_vram_percentage"], "status": s["memory_status"], "cost": "; ".join(costs),
            "keeps": s["keeps"]}


def _live_trace(cat: Catalog, out: dict[str, Any], workload: str) -> list[dict[str, Any]]:
    """The trace steps that produced this estimate's numbers: the components it shows and the figures it
    reports (:mod:`vramplan.liveness`), not the other workload's or the branches not taken."""
    values = {step["id"]: step["value"] for step in out["trace"]}
    outputs = [c.output for c in cat.formulas.components(workload) if values.get(c.output, 0) > 0]
    staged = any("stage" in g for g in out.get("per_gpu", []))
    read = [fid for fid in OUTPUTS[workload] if staged or fid not in contract.stage_outputs()]
    return live_steps(cat.formulas, out["trace"], outputs + read)


def report_context(body: dict[str, Any], workload: str, catalog: Catalog | None = None, *, strict: bool = False,
                   suggestions: bool = True, deployment: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything a report of ``body`` shows: one pass of the pipeline with a trace (auto-offload
    included, as the API answers), its ``suggestions`` when it does not fit (``suggestions=False``:
    none), the context curve around it, and with ``deployment`` (``replicas``, optionally ``slo`` and
    ``headroom``) the cost and binding constraint of that many replicas
    (:func:`vramplan.deploy.describe_deployment`). ``strict`` refuses unknown fields, as the API does."""
    cat = catalog or get_catalog()
    done = outcome({**body, "trace": True}, workload, cat, strict=strict)
    if suggestions:
        add_suggestions(body, workload, done.response, cat)
    figures = None
    if deployment is not None:
        slo = deployment.get("slo") or {}
        figures = {"slo": slo, **describe_deployment(cat, body, deployment.get("replicas"), slo,
                                                      float(deployment.get("headroom") or 0.0))}
    return build_context(done, maps.curve(done, cat), cat, deployment=figures)


#: The serving object's figures in a report: (field, label, unit); a latency past capacity is null and shows a dash.
SERVING = (("running_sequences", "Sequences running at once", "sequences"),
           ("queued_requests", "Requests waiting", "requests"),
           ("output_throughput_tps", "Output throughput", "tokens/s"),
           ("total_throughput_tps", "Throughput with the prompts", "tokens/s"),
           ("requests_per_second", "Requests completed", "requests/s"),
           ("utilisation", "Share of capacity in use", "fraction"),
           ("ttft_ms", "Time to first token", "ms"),
           ("itl_ms", "Time between output tokens", "ms"),
           ("e2e_latency_ms", "Whole request", "ms"),
           ("cost_per_hour", "Cost per hour", "currency/h"),
           ("cost_per_million_output_tokens", "Cost per million output tokens", "currency"))
LOADS = {"closed_loop": "a closed loop of {users} client{s}, each sending its next request when the last one ends",
         "open_loop": "an open loop of {rate:g} requests/s arriving at random",
         "static_batch": "one static batch"}


def _serving(out: dict[str, Any], req: dict[str, Any]) -> dict[str, Any] | None:
    """The serving figures of an inference report, with the sentence that says what load they are for and,
    when the load does not all run (an open loop past capacity, a closed loop whose requests queue), why."""
    srv = out.get("serving")
    if not srv:
        return None
    users = int(req.get("concurrent_users") or 1)
    load = LOADS.get(srv["load"], srv["load"]).format(users=users, s="" if users == 1 else "s",
                                                      rate=float(req.get("request_rate") or 0))
    summary = f"{load[0].upper()}{load[1:]}: {srv['input_tokens']:,} prompt + {srv['output_tokens']:,} output tokens a request."
    alert = None
    if load_waits(out) and srv["load"] == "open_loop":
        alert = (f"past capacity: requests arrive faster than the deployment serves them (about "
                 f"{srv['requests_per_second']:.3g} requests/s, limited by `{srv['limited_by']}`), so the queue and the "
                 "latencies grow without bound; the seed's `tftt` and `ms_per_token` are the figures at capacity, before any queue")
    elif load_waits(out):  # an open loop's queue below capacity is its waiting time, not a load that waits
        alert = (f"{srv['queued_requests']:g} requests wait: the runtime runs {srv['running_sequences']:g} sequences at "
                 f"once (limited by `{srv['limited_by']}`)")
    if alert is None:
        summary += f" Limited by `{srv['limited_by']}`."
    rows = [{"field": f, "label": label, "value": srv[f], "unit": unit} for f, label, unit in SERVING
            if f in srv and (srv[f] is not None or f in ("ttft_ms", "itl_ms", "e2e_latency_ms"))]
    return {"summary": summary, "alert": alert, "rows": rows}


def build_context(done: Outcome, curve: dict[str, Any], catalog: Catalog, *,
                  deployment: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report's context, read off one pipeline pass (``done``: its response carries the trace, and
    ``suggestions`` if it has any) and the planner's answers: the context ``curve``
    (:func:`vramplan.maps.curve`) and, for a deployment report, ``deployment`` (the figures of
    :func:`vramplan.deploy.describe_deployment` and the ``slo`` asked). Runs nothing."""
    cat, out, req, res, workload = catalog, done.response, done.request, done.resolved, done.workload
    body = {k: v for k, v in done.body.items() if k != "trace"}
    suggestions = out.get("suggestions")
    capacity = float(res.gpu_memory_gib)
    vram = float(out["vram_usage"])
    formulas, scenario, runtime_constants = _formulas(cat, _live_trace(cat, out, workload), res.runtime,
                                                      req.get("runtime_settings"), res.hardware_order)
    curve = {**curve, "request": dict(curve["request"])}
    for p in curve["points"]:
        if p["seq_length"] == curve["request"]["seq_length"]:
            curve["request"]["vram_usage"] = p["vram_usage"]
    curve["request"].setdefault("vram_usage", vram)
    total = sum(out["memory_details"].values()) or 1.0
    extra = {}
    if deployment is not None:
        extra["deployment"] = _deployment(res, deployment)
    return {**extra,
        "title": (f"Deployment: {res.model_name}, {extra['deployment']['replicas']} replica"
                  f"{'s' if extra['deployment']['replicas'] != 1 else ''} of {int(req['num_gpus'])} x {res.gpu.data['label']}"
                  if extra else
                  f"{'Inference' if workload == 'inference' else 'Fine-tuning'}: {res.model_name} on "
                  f"{int(req['num_gpus'])} x {res.gpu.data['label']}"),
        "workload": workload,
        "version": __version__,
        "request": _request_rows(body, req, workload),
        "verdict": {"status": out["memory_status"], "text": STATUS_TEXT.get(out["memory_status"], out["memory_status"]),
                    "vram_usage": vram, "capacity": capacity, "percent": out["actual_vram_percentage"],
                    "gpu": res.gpu.data["label"], "num_gpus": int(req["num_gpus"]), "model": res.model_name,
                    "runtime": out.get("runtime", res.runtime.key)},
        "suggestions": [_suggestion_row(s) for s in suggestions] if suggestions is not None else None,
        "memory": [{"label": k, "size_gb": v, "percent_of_total": round(v / total * 100, 1),
                    "percent_of_capacity": round(v / capacity * 100, 1) if capacity else 0.0}
                   for k, v in out["memory_details"].items()],
        "per_gpu": out.get("per_gpu", []),
        "kv_pool": out.get("kv_pool"),
        "curve": curve,
        "performance": [{"field": f, "label": label, "value": out[f], "unit": unit}
                        for f, label, unit in PERFORMANCE[workload] if f in out],
        "serving": _serving(out, req) if workload == "inference" else None,
        "active_optimizations": out.get("active_optimizations", []),
        "formulas": formulas,
        "scenario": scenario,
        "runtime_constants": runtime_constants,
        "provenance": _provenance(res),
        "assumptions": list(out.get("assumptions", [])),
        "warnings": list(out.get("warnings", [])),
        "plugins": [{"name": p.name, "version": p.version, "builtin": p.builtin, "hooks": list(p.hooks)}
                    for p in cat.host.plugins()],
        "plugin_failures": [{"name": f.name, "version": f.version, "error": f.error} for f in cat.host.failures],
    }


SLO_LABELS = {"ttft_ms": "Time to first token", "itl_ms": "Time between output tokens", "e2e_latency_ms": "Whole request"}


def _deployment(res, figures: dict[str, Any]) -> dict[str, Any]:
    """A deployment's cost and binding constraint (``figures``: :func:`vramplan.deploy.describe_deployment`'s
    and the ``slo`` asked), worded for the report."""
    slo = figures["slo"]
    replicas, n = figures["replicas"], int(res.request["num_gpus"])
    if "request_rate" in figures:
        load = (f"{figures['request_rate'] * replicas:.4g} requests/s in all, {figures['request_rate']:.4g} per replica "
                "(open loop)")
    else:
        load = f"{figures['concurrent_users']} concurrent users per replica, {figures['concurrent_users'] * replicas} in all"
    price = figures["price"]
    if price is None:
        price_text = "no price: give gpu_hour_cost in the request"
    elif price["kind"] == "reference":
        price_text = (f"{figures['gpu_hour_cost']:g} USD per GPU-hour: a reference list price ({price['offer']}, read "
                      f"{price['date']}; {price['source']}), not a quote")
    else:
        price_text = f"{figures['gpu_hour_cost']:g} per GPU-hour, from the request"
    srv = {k: figures[k] for k in ("ttft_ms", "itl_ms", "e2e_latency_ms")}
    return {
        "replicas": replicas, "num_gpus": n, "total_gpus": figures["total_gpus"], "gpu": res.gpu.data["label"], "load": load,
        "output_throughput_tps": figures["output_throughput_tps"], "utilisation": figures["utilisation"],
        "limited_by": figures["limited_by"], "price": price_text,
        "cost_per_hour": figures["cost_per_hour"], "cost_per_million_output_tokens": figures["cost_per_million_output_tokens"],
        "binding": figures["binding"] or "none",
        "binding_detail": figures["binding_detail"] or "one replica of one GPU: nothing cheaper in this configuration",
        "slo": [{"field": k, "label": SLO_LABELS[k], "limit": limit, "value": srv[k],
                 "met": srv[k] is not None and srv[k] <= limit} for k, limit in slo.items()],
    }


def render_deployment_report(row: dict[str, Any], fmt: str, slo: dict[str, float] | None = None,
                             headroom: float = 0.0, catalog: Catalog | None = None) -> str:
    """The report of one cheapest_deployment answer (its ``request`` and ``replicas``)."""
    ctx = report_context(row["request"], "inference", catalog, suggestions=False,
                         deployment={"replicas": row["replicas"], "slo": slo, "headroom": headroom})
    return render_context(ctx, fmt, catalog)


# -- templates --------------------------------------------------------------------------------

def template_dirs(catalog: Catalog | None = None) -> list[Path]:
    """The loader's search path, first match wins: user folder, plugins (last registered first), built-ins."""
    cat = catalog or get_catalog()
    dirs: list[Path] = []
    user = os.environ.get("VRAMPLAN_TEMPLATE_DIR")
    if user:
        dirs.append(Path(user))
    dirs += [Path(d) for d in reversed(cat.template_dirs)]
    builtin = [d for d in dirs if d.resolve() == BUILTIN_TEMPLATES.resolve()]
    dirs = [d for d in dirs if d not in builtin] + [BUILTIN_TEMPLATES]
    return dirs


def _svg(s: str) -> Markup:
    return Markup(s)  # built by charts.py, which escapes every text it writes


def stacked_bar_svg(memory: list[dict[str, Any]], capacity: float) -> Markup:
    return _svg(charts.stacked_bar([(m["label"], m["size_gb"]) for m in memory], capacity,
                                   title="Memory by component against GPU capacity"))


def context_chart_svg(curve: dict[str, Any]) -> Markup:
    req = curve["request"]
    return _svg(charts.line_chart([(p["seq_length"], p["vram_usage"]) for p in curve["points"]], curve["capacity"],
                                  crossing=curve["crossing"], marker=(req["seq_length"], req["vram_usage"]),
                                  title="Memory versus context length"))


@lru_cache(maxsize=8)
def _environment(search_path: tuple[str, ...]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(p) for p in search_path]),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2", "svg"), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(exact=exact, md=md_cell, sentence=sentence)
    env.globals.update(stacked_bar_svg=stacked_bar_svg, context_chart_svg=context_chart_svg,
                       short_number=charts.short_number)
    return env


def environment(catalog: Catalog | None = None) -> jinja2.Environment:
    """The one Environment for the current search path (rebuilt only when the path changes)."""
    return _environment(tuple(str(d) for d in template_dirs(catalog)))


def render_context(context: dict[str, Any], fmt: str, catalog: Catalog | None = None) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r} (one of {', '.join(FORMATS)})")
    return environment(catalog).get_template(FORMATS[fmt]).render(**context)


def render_report(body: dict[str, Any], workload: str, fmt: str, catalog: Catalog | None = None, *,
                  strict: bool = False, deployment: dict[str, Any] | None = None) -> str:
    """The report for one request (:func:`report_context`, then :func:`render_context`); with
    ``deployment`` (``replicas``, ``slo``, ``headroom``), the report of that deployment."""
    return render_context(report_context(body, workload, catalog, strict=strict, deployment=deployment), fmt, catalog)
