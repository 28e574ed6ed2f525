"""Format rules: which weights format a fine-tuning method trains on, which runtime a format defaults to,
and which formats a runtime loads.

The rules are catalog data (``catalogs/format_rules``), read here by resolve and the planner alike,
so the two never disagree. A rule applies when the request meets every field of its ``when``;
where several applicable rules set the same thing (``weights`` or ``runtime``), the one whose
``when`` names more fields wins, and a tie goes to the rule registered last: plugins and the user's
catalog folder load after the built-ins, so their rules override them as formula overrides do.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import keptmodules
from .registry import Entry, Registry

if TYPE_CHECKING:
    from .catalog import Catalog


def facts(workload: str, request: Mapping[str, Any], quantization_kind: str | None = None) -> dict[str, Any]:
    """What a rule's ``when`` can test, from a validated request (its defaults applied)."""
    out: dict[str, Any] = {"workload": workload}
    if workload == "finetuning":
        out["finetuning_method"] = request.get("finetuning_method")
        out["fine_tuning_quantization"] = request.get("fine_tuning_quantization")
    if quantization_kind is not None:
        out["quantization_kind"] = quantization_kind
    return out


def rule_for(rules: Registry, action: str, facts_: Mapping[str, Any]) -> Entry | None:
    """The rule that decides ``action`` ("weights" or "runtime") for these facts, or None."""
    best: Entry | None = None
    for rule in rules:
        when = rule.data["when"]
        if action in rule.data and all(facts_.get(k) == v for k, v in when.items()):
            if best is None or len(when) >= len(best.data["when"]):
                best = rule
    return best


def finetuning_weights(rules: Registry, request: Mapping[str, Any]) -> tuple[str, Entry | None]:
    """``(quantization key, rule)`` the weights of a fine-tuning request are estimated in.

    Without a rule the request's own ``fine_tuning_quantization`` applies (full fine-tuning)."""
    rule = rule_for(rules, "weights", facts("finetuning", request))
    if rule is not None:
        return rule.data["weights"], rule
    return request["fine_tuning_quantization"], None


def lineage(cat: Catalog, runtime: str) -> Iterator[str]:
    """The runtime's key, then the keys of the runtimes it ``extends``, nearest first (a cycle stops it)."""
    key: str | None = runtime
    seen: set[str] = set()
    while key is not None and key not in seen:
        seen.add(key)
        yield key
        key = cat.runtimes.get(key).data.get("extends") if key in cat.runtimes else None


def runtime_formats(cat: Catalog, runtime: str) -> list[Entry]:
    """Weights and KV formats (aliases aside) the runtime loads: those whose ``runtimes`` list names it, and
    those that list none; a runtime no format names loads what the runtime it ``extends`` loads (TensorRT-LLM's
    MMHA profile, for one, is TensorRT-LLM with older attention kernels). Catalog order."""
    named = next((key for key in lineage(cat, runtime)
                  if any(e.data["kind"] != "alias" and key in e.data.get("runtimes", ()) for e in cat.quantization)),
                 runtime)
    return [e for e in cat.quantization if e.data["kind"] != "alias" and named in e.data.get("runtimes", [named])]


def loads(cat: Catalog, runtime: str, fmt: Entry) -> bool:
    """Whether the runtime loads this format (:func:`runtime_formats`; an alias, as the format it names)."""
    target = cat.quantization.get(fmt.data["alias_of"]) if fmt.data.get("alias_of") else fmt
    return any(e.key == target.key for e in runtime_formats(cat, runtime))


def searched_by_default(runtime: Entry) -> bool:
    """Whether the planner searches the runtime unless a plan names its runtimes: it has a ``deployment`` block
    that does not say ``searched_by_default: false``."""
    dep = runtime.data.get("deployment")
    return bool(dep) and dep.get("searched_by_default", True)


def unmet(needs: Mapping[str, Any], gpu: Mapping[str, Any]) -> str | None:
    """Why a GPU (its catalog data) falls short of a runtime's ``deployment`` requirements (or of one format's in
    ``deployment.formats``); None where it meets ``vendors`` / ``excluded_architectures`` /
    ``min_compute_capability`` (a compute capability binds NVIDIA GPUs only)."""
    vendor = "apple" if gpu.get("category") == "apple" else gpu.get("vendor")
    if "vendors" in needs and vendor not in needs["vendors"]:
        return f"it runs on {', '.join(needs['vendors'])} GPUs, not {vendor} ones"
    if gpu.get("architecture") in needs.get("excluded_architectures", ()):
        return f"it has no kernels for the {gpu['architecture']} architecture"
    need = needs.get("min_compute_capability")
    if need and vendor == "nvidia" and gpu.get("compute_capability"):
        if _cc(gpu["compute_capability"]) < _cc(need):
            return f"compute capability {gpu['compute_capability']} is below the {need} it needs"
    return None


def _cc(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


#: config.json ``torch_dtype`` (transformers 5: ``dtype``) -> the catalog's format key.
DTYPE_FORMATS = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


@dataclass(frozen=True)
class Ceiling:
    """How much of a model's quality a serving format can keep: never more than its checkpoint holds. Weights
    stored again with more bits are the same values (Llama 3.1 in fp32 is its bf16 checkpoint upcast; gpt-oss's
    experts in bf16 are its MXFP4 ones dequantized), so a format above the checkpoint's own keeps that format's
    quality - the **native** format (the checkpoint's quantization method, else its ``torch_dtype``). Keys and
    values are computed in the model's 16-bit (or 32-bit) dtype whatever the weights' format, so a KV format keeps
    at most that dtype's quality. Unknown (no config, no dtype): no ceiling."""
    native: str | None
    weights: float
    kv: float
    dtype: str | None = None  # the format of the model's compute dtype (bf16, fp16, fp32): its keys' and values'

    def weights_rank(self, fmt: Entry) -> float:
        return min(float(fmt.data["quality_rank"]), self.weights)

    def kv_rank(self, fmt: Entry) -> float:
        return min(float(fmt.data["quality_rank"]), self.kv)


NO_CEILING = Ceiling(None, math.inf, math.inf)


def _dtype_format(config: Mapping[str, Any]) -> str | None:
    for c in (config, config.get("text_config")):
        if isinstance(c, Mapping):
            name = str(c.get("torch_dtype") or c.get("dtype") or "").removeprefix("torch.")
            if name in DTYPE_FORMATS:
                return DTYPE_FORMATS[name]
    return None


def checkpoint_ceiling(cat: Catalog, config: Any) -> Ceiling:
    """The quality a serving format can keep of the model whose config.json (catalog ``config``, a Hub model's,
    ``custom_model``) this is (:class:`Ceiling`)."""
    if not isinstance(config, Mapping):
        return NO_CEILING
    qc = keptmodules.checkpoint_config(config)
    quantized = keptmodules.checkpoint_format(qc) if qc is not None else None
    dtype = _dtype_format(config)
    if quantized is not None and quantized not in cat.quantization:
        quantized = None
    if quantized is not None and dtype is None:
        dtype = "bf16"  # the quantizers' compute dtype (keptmodules.KEPT_BITS: transformers loads them in bfloat16)
    native = quantized or dtype
    if native is None:
        return NO_CEILING
    rank = lambda key: float(cat.quantization.get(key).data["quality_rank"])  # noqa: E731
    return Ceiling(native, rank(native), rank(dtype) if dtype else math.inf, dtype)

