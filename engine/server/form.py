"""The calculator page's form, generated from the API's own request schemas and the catalog.

The page cannot disagree with the API because it is built from the same data: every control is a
property of ``inference-request`` / ``finetuning-request`` with that schema's ``default`` as its
initial value (a checkbox is checked when the default is true), its ``minimum`` / ``maximum``, its
``enum`` as a drop-down and its ``description`` as help. The page sends only what differs from the
default, so the API applies the rest exactly as for any client.

:data:`LAYOUT` places the fields people look for first; every other scalar property of a schema
(one added by a later version or a plugin's schema) lands in "More settings" on its own, with its
default. Drop-downs whose choices live in the catalog (weight and KV formats, runtimes,
interconnects, optimizers) list the catalog's entries, plugins' included.
"""

from __future__ import annotations

import json
from typing import Any

from ..catalog import Catalog

#: (section id, title, workload or "both", fields in display order). A field a schema lacks is skipped.
LAYOUT = (
    ("hardware", "Model and hardware", "both", ("num_gpus", "custom_vram", "batch_size", "seq_length")),
    ("serving", "Serving", "inference",
     ("quantization", "kv_cache_quantization", "runtime", "concurrent_users", "input_tokens", "output_tokens",
      "request_rate", "gpu_hour_cost", "inference_parallelism", "interconnect_type", "enable_prefix_caching",
      "shared_prefix_ratio", "enable_continuous_batching", "optimization_config.flash_attention", "runtime_settings")),
    ("offloading", "Offloading", "inference",
     ("enable_offloading", "offload_target", "num_offload_layers", "percentage_offload", "offload_kv_cache")),
    ("training", "Training", "finetuning",
     ("finetuning_method", "fine_tuning_quantization", "lora_rank", "optimizer", "gradient_accumulation_steps",
      "micro_batch_size", "runtime", "interconnect_type", "num_samples", "tokens_per_sample", "num_epochs",
      "runtime_settings")),
    ("memory-savers", "Memory savers", "finetuning",
     ("optimization_config.gradient_checkpointing", "optimization_config.flash_attention",
      "optimization_config.use_8bit_optimizer", "optimization_config.use_paged_optimizer",
      "optimization_config.use_fused_kernels", "optimization_config.activation_offloading",
      "optimization_config.zero_stage", "enable_offloading", "offload_target")),
)
#: Fields the page handles itself (pickers filled from the API) or cannot edit as one control.
NOT_CONTROLS = {"gpu_key", "llm_key", "custom_model", "custom_weights_bytes", "trace"}

LABELS = {
    "num_gpus": "GPUs", "custom_vram": "GPU memory (GiB)", "batch_size": "Batch size", "seq_length": "Context (tokens)",
    "quantization": "Weights", "kv_cache_quantization": "KV cache", "runtime": "Runtime",
    "concurrent_users": "Concurrent users", "input_tokens": "Prompt tokens", "output_tokens": "Output tokens",
    "request_rate": "Requests per second", "gpu_hour_cost": "Price per GPU-hour",
    "inference_parallelism": "Multi-GPU split", "interconnect_type": "Interconnect",
    "enable_prefix_caching": "Prefix caching", "shared_prefix_ratio": "Shared prefix (0-1)",
    "enable_continuous_batching": "Continuous batching", "enable_offloading": "Offload to the host",
    "offload_target": "Offload to", "num_offload_layers": "Layers to offload", "percentage_offload": "Layers to offload (%)",
    "offload_kv_cache": "Offload the KV cache", "finetuning_method": "Method", "fine_tuning_quantization": "Full fine-tuning precision",
    "lora_rank": "LoRA rank", "optimizer": "Optimizer", "gradient_accumulation_steps": "Gradient accumulation",
    "micro_batch_size": "Micro-batch", "num_samples": "Dataset samples", "tokens_per_sample": "Tokens per sample",
    "num_epochs": "Epochs", "optimization_config.flash_attention": "Flash attention",
    "optimization_config.gradient_checkpointing": "Gradient checkpointing",
    "optimization_config.use_8bit_optimizer": "8-bit optimizer", "optimization_config.use_paged_optimizer": "Paged optimizer",
    "optimization_config.use_fused_kernels": "Fused kernels", "optimization_config.activation_offloading": "Activation offloading",
    "optimization_config.zero_stage": "ZeRO stage", "optimization_config.sequence_packing": "Sequence packing",
    "runtime_settings": "Runtime settings (JSON)",
}
#: Placeholders for optional fields without a default (what the API does when they are left empty).
EMPTY = {
    "runtime": "default for the format", "interconnect_type": "the GPU's own", "custom_vram": "the catalog's",
    "num_offload_layers": "fewest that fit", "percentage_offload": "-", "micro_batch_size": "batch / accumulation",
    "tokens_per_sample": "= context", "runtime_settings": '{"max_num_seqs": 4}',
}


def _properties(schema: dict) -> dict[str, dict]:
    """Top-level and ``optimization_config.*`` properties, by dotted name."""
    props = dict(schema.get("properties") or {})
    out = {k: v for k, v in props.items() if k != "optimization_config"}
    opt = (props.get("optimization_config") or {}).get("properties") or {}
    out.update({f"optimization_config.{k}": v for k, v in opt.items()})
    return out


def _kind(prop: dict) -> str | None:
    if isinstance(prop.get("enum"), list):
        return "select"
    kind = prop.get("type")
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return "json"  # a map of names to values (runtime_settings): one text field holding a JSON object
    return {"boolean": "checkbox", "integer": "integer", "number": "number", "string": "text"}.get(kind) \
        if isinstance(kind, str) else None


def _catalog_choices(name: str, workload: str, cat: Catalog) -> list[tuple[str, str]] | None:
    """(value, label) from the catalog for string fields whose values are catalog keys."""
    if name == "quantization":
        entries = sorted((e for e in cat.quantization if e.data["kind"] != "alias"), key=lambda e: -e.data["quality_rank"])
        return [(e.key, f"{_short_label(e)} · quality {e.data['quality_rank']:g}") for e in entries]
    if name == "kv_cache_quantization":
        entries = [e for e in cat.quantization if "kv_cache_bits" in e.data and e.data["kind"] != "alias"]
        entries.sort(key=lambda e: -e.data["kv_cache_bits"])
        return [(e.key, f"{_short_label(e)} ({e.data['kv_cache_bits']:g} bits)") for e in entries]
    if name == "runtime":
        return [(e.key, str(e.data.get("label") or e.key)) for e in cat.runtimes]
    if name == "interconnect_type":
        return [(e.key, str(e.data.get("label") or e.key)) for e in cat.interconnects]
    if name == "optimizer" and workload == "finetuning":
        return [(e.key, e.key) for e in cat.optimizers]
    return None


def _short_label(entry) -> str:
    return str(entry.data.get("label") or entry.key).split(" (")[0]


def field_spec(name: str, prop: dict, workload: str, cat: Catalog) -> dict[str, Any] | None:
    """One control: what the template needs to draw it and the page to read it."""
    kind = _kind(prop)
    if kind is None:
        return None
    default = raw_default = prop.get("default")
    options = None
    if kind == "select":
        options = [(str(v), str(v)) for v in prop["enum"]]
    elif kind == "text":
        options = _catalog_choices(name, workload, cat)
        if options is not None:
            kind = "select"
    if kind == "integer" and isinstance(prop.get("maximum"), int) and prop.get("minimum") is not None \
            and prop["maximum"] - prop["minimum"] <= 8:
        kind, options = "select", [(str(i), str(i)) for i in range(prop["minimum"], prop["maximum"] + 1)]
        default = str(default) if default is not None else None
    label = LABELS.get(name) or name.rsplit(".", 1)[-1].replace("_", " ").capitalize()
    return {
        "name": name, "id": name, "kind": kind, "label": label,
        "type": "json" if kind == "json" else prop.get("type", "string") if not isinstance(prop.get("enum"), list) else "string",
        "default": default, "default_json": json.dumps(raw_default), "options": options,
        "blank": EMPTY.get(name, "-") if default is None and kind == "select" else None,
        "placeholder": EMPTY.get(name, "") if default is None else "",
        "min": prop.get("minimum", prop.get("exclusiveMinimum")), "max": prop.get("maximum"),
        "step": "1" if prop.get("type") == "integer" else "any",
        "help": prop.get("description", ""),
        # a drop-down whose entries are long (catalog labels) takes the form's full width
        "wide": bool(options) and max(len(text) for _, text in options) > 16,
    }


def build(schemas: dict[str, dict], cat: Catalog) -> dict[str, Any]:
    """Sections, each for one workload or for both: ``{"sections": [...], "defaults": {workload: {field: default}}}``.

    A "both" section holds one control per field that every workload's schema declares alike (same
    default and bounds); a field that differs gets a control per workload instead."""
    props = {w: _properties(s) for w, s in schemas.items()}
    sections: list[dict[str, Any]] = []
    placed: dict[str, set[str]] = {w: set() for w in schemas}

    def specs(w: str, names) -> list[dict[str, Any]]:
        out = []
        for name in names:
            if name in props[w] and name not in NOT_CONTROLS and name not in placed[w]:
                spec = field_spec(name, props[w][name], w, cat)
                if spec:
                    out.append(spec)
        return out

    for sid, title, where, names in LAYOUT:
        if where == "both":
            alike = [n for n in names if all(n in props[w] for w in schemas)
                     and len({json.dumps({k: props[w][n].get(k) for k in ("default", "minimum", "maximum", "type", "enum")},
                                         sort_keys=True) for w in schemas}) == 1]
            shared = specs(next(iter(schemas)), alike)
            if shared:
                sections.append({"id": sid, "title": title, "workload": "both", "fields": shared})
                for w in schemas:
                    placed[w].update(f["name"] for f in shared)
            workloads = list(schemas)
        else:
            workloads = [where]
        for w in workloads:
            fields = specs(w, names)
            if fields:
                sections.append({"id": f"{sid}-{w}", "title": title, "workload": w, "fields": fields})
                placed[w].update(f["name"] for f in fields)
    for w in schemas:  # everything else a schema offers, with its default
        rest = specs(w, props[w])
        if rest:
            sections.append({"id": f"more-{w}", "title": "More settings", "workload": w, "fields": rest, "more": True})
    _assign_ids(sections)
    defaults = {w: {n: p["default"] for n, p in props[w].items() if "default" in p} for w in schemas}
    return {"sections": sections, "defaults": defaults}


def _assign_ids(sections: list[dict[str, Any]]) -> None:
    """Element ids: the field's own name (``optimization_config.x`` → ``x``), prefixed ``ft_`` for a fine-tuning
    control whose name an inference or shared control already uses."""
    taken: set[str] = set()
    for section in sorted(sections, key=lambda s: s["workload"] == "finetuning"):
        for f in section["fields"]:
            base = f["name"].rsplit(".", 1)[-1]
            f["id"] = f"ft_{base}" if base in taken and section["workload"] == "finetuning" else base
            taken.add(f["id"])
