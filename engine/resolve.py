"""Resolve a validated request's keys through the registries: GPU, model, formats, runtime, links.

Unknown keys raise :class:`RequestError` with the closest valid keys; every unknown key of one
request is reported at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from . import follows, formatrules, hardware, hub, keptmodules
from .architecture import CSA_RATIO, Architecture, from_hf_config
from .elementwise import holds, number_or
from .errors import RequestError
from .ggufmix import format_bits
from .registry import Entry
from .runtimetext import accepted_range, outside_accepted
from .scenario import kv_is_fp8

if TYPE_CHECKING:
    from .catalog import Catalog

#: The range a request may set a runtime constant to (``runtime_settings``), by the unit the runtime
#: catalog gives the constant: far beyond any real deployment (the catalog's largest fraction is an
#: efficiency of 1.16, its largest token count 8,192), and small enough that the formulas stay finite.
SETTING_RANGES: dict[str, tuple[float, float]] = {
    "flag": (0, 1), "fraction": (0, 2), "tokens": (0, 16777216), "sequences": (0, 1048576), "MiB": (0, 1048576),
    "bytes": (0, 1024), "tensors": (0, 1024), "copies": (0, 1024), "us": (0, 1e7), "FLOP": (0, 1e4), "GB/s": (0, 1e6),
}
#: Units that count things a runtime cannot split (max_num_seqs 0.5 would admit half a sequence).
WHOLE_UNITS = ("sequences", "tokens", "steps")
#: The range for a unit not listed above (a plugin runtime's own units).
OTHER_SETTING_RANGE = (0, 1e12)


@dataclass
class Resolved:
    workload: str
    request: dict[str, Any]
    gpu: Entry
    gpu_memory_gib: float
    model_key: str
    model_name: str
    model: Entry | None
    arch: Architecture
    quant: Entry
    kv_quant: Entry | None
    runtime: Entry
    interconnect: Entry
    host_link: Entry | None
    optimizer: Entry | None = None  # fine-tuning only
    hardware_class: str | None = None  # catalogs/hardware_classes key; None when no class matches the GPU
    hardware_order: tuple[str, ...] = ()  # the class and its fallbacks, for per-class runtime constants
    weight_bits: dict[str, float] = field(default_factory=dict)  # bits per parameter by role, this model in this format
    assumptions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    weights_file_bytes: int | None = None  # exact bytes of a Hub model's checkpoint in the requested format
    kept_layer_params: float = 0.0  # layer parameters the checkpoint keeps at 16 bits (modules_to_not_convert)
    model_config: Any = None  # the model's config.json object (catalog config, a Hub model's, custom_model)


def _format(cat: Catalog, key: str, field_name: str) -> Entry:
    entry = cat.quantization.get(key, field_name)
    target = entry.data.get("alias_of")
    return cat.quantization.get(target, field_name) if target else entry


def resolve(cat: Catalog, req: dict[str, Any], workload: str) -> Resolved:
    problems: list[tuple[str, str]] = []
    suggestions: dict[str, list[str]] = {}
    assumptions: list[str] = []
    warnings: list[str] = []

    def lookup(fn, *args):
        try:
            return fn(*args)
        except RequestError as exc:
            problems.extend(exc.problems)
            suggestions.update(exc.suggestions)
            return None

    gpu = lookup(cat.gpus.get, req["gpu_key"])
    model = arch = hub_info = None
    if req["llm_key"] == "custom":
        arch = lookup(lambda config: from_hf_config(config, where="custom_model"), req.get("custom_model"))
        from .modelfiles import display_name

        model_name = display_name(req.get("custom_model") or {}) or "custom model"
    elif hub.is_hub_key(req["llm_key"]):  # hf:ORG/NAME[@REVISION]: config.json and safetensors headers
        hub_info = lookup(hub.resolve_model, req["llm_key"])
        if hub_info is not None:
            arch = lookup(lambda config: from_hf_config(config, where=f"llm_key {req['llm_key']}: config.json"),
                          hub_info["config"])
        model_name = req["llm_key"][len(hub.PREFIX):]
    else:
        model = lookup(cat.models.get, req["llm_key"])
        if model is not None:
            arch = cat.architectures[model.key]
        model_name = model.data["name"] if model else req["llm_key"]

    if workload == "inference":
        quant = lookup(_format, cat, req["quantization"], "quantization")
        kv_quant = lookup(_format, cat, req["kv_cache_quantization"], "kv_cache_quantization")
        if kv_quant is not None and "kv_cache_bits" not in kv_quant.data:
            problems.append(("kv_cache_quantization", f"{kv_quant.key} cannot store a KV cache "
                             f"(KV formats: {', '.join(e.key for e in cat.quantization if 'kv_cache_bits' in e.data)})"))
    else:
        qkey, rule = formatrules.finetuning_weights(cat.format_rules, req)
        if rule is not None:
            _say(rule, assumptions, warnings)
        quant = lookup(_format, cat, qkey, "fine_tuning_quantization")
        kv_quant = None
    optimizer = lookup(_optimizer, cat, req) if workload == "finetuning" else None

    runtime_key = req.get("runtime")
    if runtime_key is None:
        facts = formatrules.facts(workload, req, quant.data["kind"] if quant is not None else None)
        rule = formatrules.rule_for(cat.format_rules, "runtime", facts)
        if rule is not None and rule.data["runtime"] in cat.runtimes:
            runtime_key = rule.data["runtime"]
            _say(rule, assumptions, warnings)
        else:
            runtime_key = cat.default_runtime
            assumptions.append(f"runtime: {runtime_key} (the default)")
    runtime = lookup(cat.runtimes.get, runtime_key)
    if runtime is not None:
        known = runtime.data["constants"]
        for name, value in (req.get("runtime_settings") or {}).items():
            spec = known.get(name) or _variant_spec(cat, known, name)
            if spec is None:
                problems.append((f"runtime_settings.{name}", f"{runtime.key} has no constant {name!r} "
                                 f"(see the runtime catalog: {', '.join(sorted(known))})"))
                continue
            problem = _setting_problem(spec["unit"], value) or _accepted_problem(runtime.key, spec, value)
            if problem:
                problems.append((f"runtime_settings.{name}", problem))
        if not problems:
            problems.extend(_followed_problems(runtime, req))
        if not problems:
            problems.extend(_launch_problems(runtime, req))
        eager = runtime_value(runtime, req, "eager_score_bytes")
        if workload == "inference" and req["optimization_config"].get("flash_attention") is False and eager == 0:
            # A runtime with no unfused attention path materializes no score matrix (its eager_score_bytes is 0).
            warnings.append(f"flash_attention false is ignored: {runtime.key} always runs a fused attention kernel")
        settings = req.get("runtime_settings") or {}
        compute = (quant.data.get("compute") if quant is not None else None) or ""
        act_override = runtime_value(runtime, req, "activation_bytes")
        if (workload == "inference" and compute == "fp32" and not req.get("kv_cache_quantization_given")
                and not act_override and kv_quant is not None and kv_quant.key != "fp32"):
            # A torch runtime's cache holds the keys and values its projections compute, in the weights' dtype
            # (transformers DynamicCache; vLLM / SGLang kv_cache_dtype "auto"); the seed's fp16 default would halve it.
            kv_quant = cat.quantization.get("fp32")
            req["kv_cache_quantization"] = "fp32"
            assumptions.append(f"KV cache: fp32, the weights' dtype - {runtime.key} keeps keys and values in the dtype its "
                               "projections compute them in (kv_cache_quantization not given; fp16 would halve it)")
        fp8_only = runtime_value(runtime, req, "cmp_kv_fp8")
        if (workload == "inference" and arch is not None and arch.is_compressed and fp8_only
                and kv_quant is not None and kv_quant.key != "fp8"):
            if not req.get("kv_cache_quantization_given"):
                kv_quant = cat.quantization.get("fp8")
                req["kv_cache_quantization"] = "fp8"
                assumptions.append(f"KV cache: fp8 - {runtime.key} keeps a compressed-attention (DeepSeek V4) cache in FP8 "
                                   "only (kv_cache_quantization not given)")
            else:
                warnings.append(f"{runtime.key} keeps a compressed-attention (DeepSeek V4) cache in FP8 only and refuses "
                                f"{kv_quant.key}; estimated as asked")
        if (workload == "inference" and arch is not None and kv_quant is not None
                and runtime_value(runtime, req, "kv_quant_residual_tokens")
                and float(kv_quant.data.get("kv_cache_bits", 16)) < 16 and not kv_is_fp8(kv_quant.data)
                and any(kind != "full" for kind in arch.layer_types)):
            # transformers cache_utils.py QuantizedCache: "only supported for models with only full attention layers"
            kinds = sorted({kind for kind in arch.layer_types if kind != "full"})
            warnings.append(f"{runtime.key}: the quantized cache ({kv_quant.key}, QuantizedCache) takes only models whose "
                            f"layers are all full attention and refuses this one ({', '.join(kinds)} layers); estimated as asked")
        pinned = settings.get("kv_pool_tokens")
        if pinned and not runtime_value(runtime, req, "kv_preallocate"):
            warnings.append(f"runtime_settings.kv_pool_tokens is ignored: {runtime.key} sizes its cache by the request "
                            "(it has no preallocated pool)")

    link_key = req.get("interconnect_type") or (gpu.data["default_interconnect"] if gpu else None)
    interconnect = lookup(cat.interconnects.get, link_key, "interconnect_type") if link_key else None
    host_key = gpu.data.get("host_link") if gpu else None
    host_link = None
    if host_key:
        host_link = lookup(cat.interconnects.get, host_key, "gpu_key")

    mem = None
    if gpu is not None:
        if gpu.data.get("custom"):
            if req.get("custom_vram") is None:
                problems.append(("custom_vram", f"required when gpu_key is {gpu.key}"))
            mem = req.get("custom_vram")
        elif req.get("custom_vram") is not None:
            mem = req["custom_vram"]
            assumptions.append(f"GPU memory: {mem} GiB from custom_vram instead of the catalog's {gpu.data['memory_gib']} GiB")
        else:
            mem = gpu.data["memory_gib"]

    if problems:
        raise RequestError(problems, suggestions=suggestions)
    if workload == "inference" and req["inference_parallelism"] == "expert":
        _check_expert_split(cat, arch, runtime)
    if workload == "inference":
        _layer_split(cat, runtime, req, assumptions)
        arch = _chunks_kept_whole(arch, runtime, assumptions)
    if arch.assumed:
        assumptions.extend(f"model: {a}" for a in arch.assumed)
    if workload == "inference":
        quant = _deployment(cat, runtime, gpu, quant, kv_quant, warnings)
    file_bytes = _exact_weights_bytes(hub_info, quant, req, workload, assumptions)
    warnings.extend(params_disagree(hub_info, arch))
    cls = cat.gpu_classes.get(gpu.key)
    if cls is None:
        warnings.append(f"GPU {gpu.key} (vendor {gpu.data['vendor']}, category {gpu.data['category']}) matches no hardware class "
                        f"({', '.join(cat.hardware_classes.keys())}); runtime efficiencies are each runtime's plain values, "
                        f"measured on NVIDIA data-center GPUs: set hardware_class in its catalog entry, or register a hardware class")
    # (settings that change nothing are said by request.check, which sees what the client sent)
    hw_class = cat.hardware_classes.get(cls).data if cls is not None else None
    warnings.extend(_other_class_settings(cat, req.get("runtime_settings"), gpu.key))
    warnings.extend(_uncertainty_warnings(workload, hw_class, gpu.data, arch, runtime.key, req))
    if workload == "inference" and not formatrules.loads(cat, runtime.key, quant):
        warnings.append(f"{runtime.key} does not load {quant.key} weights; estimated as if it did "
                        f"(runtimes that do: {', '.join(quant.data.get('runtimes', []))})")
    # GGUF file types choose a ggml type per tensor from the model's shape (llama-quant.cpp rules in the catalog)
    bits = format_bits(cat.gguf, quant, arch)
    config = (model.data.get("config") if model is not None else hub_info["config"] if hub_info
              else req.get("custom_model"))
    where = ("custom_model" if req["llm_key"] == "custom" else f"llm_key {req['llm_key']}: config.json" if hub_info
             else f"llm_key {req['llm_key']}: catalog config")
    bits, kept_params = _checkpoint_kept(config, arch, quant, bits, assumptions, where)
    bits = _checkpoint_experts(cat, config, arch, quant, bits, assumptions)
    bits, kept_params = _unconverted_experts(cat, arch, quant, runtime, req, workload, bits, kept_params, warnings)
    kv_quant = _checkpoint_kv(cat, config, quant, kv_quant, runtime, req, assumptions)
    return Resolved(
        workload=workload, request=req, gpu=gpu, gpu_memory_gib=float(mem), model_key=req["llm_key"],
        model_name=model_name, model=model, arch=arch, quant=quant, kv_quant=kv_quant, runtime=runtime,
        interconnect=interconnect, host_link=host_link, optimizer=optimizer, hardware_class=cls,
        hardware_order=cat.hardware_orders.get(gpu.key, ()), weight_bits=bits, assumptions=assumptions, warnings=warnings,
        weights_file_bytes=file_bytes, kept_layer_params=kept_params, model_config=config)


def _deployment(cat, runtime: Entry, gpu: Entry, quant: Entry, kv_quant: Entry | None, warnings: list[str]) -> Entry:
    """The weights format the runtime runs on this GPU, by its profile's ``deployment`` block (what the planner
    searches): where the runtime, or its kernels for this format, do not run on the GPU, a warning says why and the
    estimate goes on as if they did; where the format names ``dequantized_to``, the runtime loads the weights
    dequantized on such a GPU instead of refusing (transformers' FP8 and MXFP4 quantizers: "We will default to
    dequantizing the model to bf16"), and so does the estimate. A KV format outside its ``kv_cache_formats`` - other
    than the weights' own dtype, which a cache dtype "auto" keeps - is said and estimated as asked. A GPU of vendor
    "other" (a custom one, a plugin's) is not judged: no block can say it falls short."""
    dep = runtime.data.get("deployment")
    if not dep:
        return quant
    kv_ok = dep.get("kv_cache_formats") or ()
    if kv_quant is not None and kv_ok and kv_quant.key not in kv_ok and kv_quant.key != quant.data.get("compute"):
        warnings.append(f"{runtime.key} has no {kv_quant.key} KV cache (it keeps {', '.join(kv_ok)}); estimated as asked")
    if gpu.data.get("vendor") == "other":  # the seed's custom GPU, a plugin's own hardware: no vendor to judge by
        return quant
    name = gpu.data["label"]
    short = formatrules.unmet(dep, gpu.data)
    if short is not None:
        warnings.append(f"{runtime.key} does not run on the {name}: {short}; estimated as if it did")
        return quant
    needs = (dep.get("formats") or {}).get(quant.key)
    short = formatrules.unmet(needs, gpu.data) if needs else None
    if short is None:
        return quant
    where = needs["source"].split(" - ")[0]  # a source reads "where - what it says"; the warning names the where
    to = needs.get("dequantized_to")
    if to:
        fallback = cat.quantization.get(to)
        others = _runs_natively(cat, quant, gpu)
        warnings.append(f"{runtime.key} dequantizes {quant.key} weights to {fallback.key} on the {name}: {short} "
                        f"({where}); estimated in {fallback.key}"
                        + (f" ({', '.join(others)} keep{'s' if len(others) == 1 else ''} them in {quant.key} there)"
                           if others else ""))
        return fallback
    warnings.append(f"{runtime.key} does not run {quant.key} weights on the {name}: {short} ({where}); "
                    "estimated as if it did")
    return quant


def _runs_natively(cat, quant: Entry, gpu: Entry) -> list[str]:
    """The runtimes searched by default whose deployment block runs this weights format on this GPU as it is."""
    out = []
    for e in cat.runtimes:
        if not formatrules.searched_by_default(e) or not formatrules.loads(cat, e.key, quant):
            continue
        dep = e.data["deployment"]
        needs = (dep.get("formats") or {}).get(quant.key)
        if formatrules.unmet(dep, gpu.data) is None and (needs is None or formatrules.unmet(needs, gpu.data) is None):
            out.append(e.key)
    return out


def _checkpoint_kept(config: Any, arch: Architecture, quant: Entry, bits: dict[str, float],
                     assumptions: list[str], where: str) -> tuple[dict[str, float], float]:
    """The format's bits by role with the modules the checkpoint keeps at 16 bits, where the request runs
    the model in the checkpoint's own quantization method (:mod:`vramplan.keptmodules`); and the layer
    parameters so kept."""
    qc = keptmodules.checkpoint_config(config)
    if qc is None or keptmodules.checkpoint_format(qc) != quant.key:
        return bits, 0.0
    key = keptmodules.checkpoint_key(config)
    said = f"{key}."
    if key not in ("quantization_config", "text_config.quantization_config"):  # ModelOpt's hf_quant_config.json
        said = "hf_quant_config.json quantization."
        if where.endswith(": config.json"):
            where, key = where.removesuffix("config.json") + "hf_quant_config.json", "quantization"
    kept = keptmodules.kept(arch, qc, where, key)
    if kept is None:
        return bits, 0.0
    assumptions.append(f"weights: the checkpoint keeps at 16 bits (its {said}{kept.source}) "
                       f"{kept.said}; its other linear layers are {quant.key}")
    return keptmodules.apply(bits, kept), keptmodules.kept_layer_params(arch, kept)


def _unconverted_experts(cat, arch: Architecture, quant: Entry, runtime: Entry, req: dict, workload: str,
                         bits: dict[str, float], kept_params: float, warnings: list[str]) -> tuple[dict[str, float], float]:
    """A format the runtime converts module by module, linear layers only (the format's ``linear_modules_only``:
    transformers' bitsandbytes integration), leaves an MoE's routed experts - fused 3-D parameters in transformers 5 -
    in the checkpoint's 16 bits; QLoRA's prepare_model_for_kbit_training then casts them to fp32 with every other
    16-bit parameter that is not a Params4bit (the runtime's kbit_training_upcast). The feed-forward roles' bits become
    the parameter-weighted mean (params x bits stays the bytes), and the experts count among the layer parameters the
    matmuls read unpacked."""
    only = quant.data.get("linear_modules_only")
    # fine-tuning runs on transformers + peft whatever the profile (catalogs/runtime_constants: the training stack)
    converts = only and (any(key in only["runtimes"] for key in formatrules.lineage(cat, runtime.key))
                         or (workload == "finetuning" and "transformers" in only["runtimes"]))
    if not arch.is_moe or not converts:
        return bits, kept_params
    routed = len(arch.moe_layers) * arch.num_experts * arch.expert_matrix_params
    roles = arch.param_roles()
    upcast = (workload == "finetuning" and req.get("finetuning_method") == "qlora"
              and bool(runtime_value(runtime, req, "kbit_training_upcast")))
    kept_bits = 32.0 if upcast else keptmodules.KEPT_BITS
    out, default, moved, fmt_bytes = dict(bits), float(bits.get("default", 16)), 0, 0.0
    for role in ("ffn_gate", "ffn_up", "ffn_down"):
        if routed > 0 and roles[role] >= routed:
            fmt = float(bits.get(role, default))
            out[role] = (routed * kept_bits + (roles[role] - routed) * fmt) / roles[role]
            moved += routed
            fmt_bytes += routed * fmt / 8
    if not moved:
        return bits, kept_params
    dtype = "fp32 (prepare_model_for_kbit_training casts them)" if upcast else "bf16"
    warnings.append(f"{runtime.key} converts linear layers only to {quant.key}: this MoE's routed experts ({moved / 1e9:.1f}B "
                    f"parameters, fused 3-D tensors in transformers 5) stay in {dtype}, {moved * kept_bits / 8e9:.1f} GB "
                    f"against {fmt_bytes / 1e9:.1f} GB in {quant.key}")
    return out, kept_params + moved


def _followed_problems(runtime: Entry, req: dict) -> list[tuple[str, str]]:
    """A value a ``follows`` rule derives from the settings given that the runtime would not take (outside the
    constant's ``accepts``), named by the setting that moved it."""
    settings = req.get("runtime_settings") or {}
    constants = runtime.data["constants"]
    out = []
    for name, value in _followed_before_gpu(runtime, settings).items():
        spec = constants[name]
        if outside_accepted(spec.get("accepts"), value):
            rule = spec["follows"]
            cause = sorted(set(follows.triggers_of(rule)) & settings.keys()) or sorted(settings)
            out.append((f"runtime_settings.{cause[0]}", f"makes {runtime.key}'s {name} {value:g} ({rule['expr']}), outside "
                        f"what it accepts ({accepted_range(spec['accepts'])}): set {name} too"))
    return out


def _launch_problems(runtime: Entry, req: dict) -> list[tuple[str, str]]:
    """runtime_settings of request limits the runtime refuses to start with: a prompt limit (``max_input_tokens``) not
    below the request limit (``max_model_len``), or - where the runtime cannot split a prompt over steps
    (``prefill_mixes_decode`` 0) - a prefill budget below the prompt limit (text-generation-launcher main.rs)."""
    settings = req.get("runtime_settings") or {}
    if not {"max_input_tokens", "max_model_len", "max_prefill_tokens"} & settings.keys():
        return []
    cap_in = float(runtime_value(runtime, req, "max_input_tokens") or 0)
    cap_total = float(runtime_value(runtime, req, "max_model_len") or 0)
    out = []
    if cap_in and cap_total and cap_in >= cap_total:
        name = "max_input_tokens" if "max_input_tokens" in settings else "max_model_len"
        out.append((f"runtime_settings.{name}", f"{runtime.key} refuses to start with max_input_tokens {cap_in:g} not below "
                                                f"max_model_len {cap_total:g}: set both"))
    if cap_in and "max_prefill_tokens" in settings and not runtime_value(runtime, req, "prefill_mixes_decode") \
            and settings["max_prefill_tokens"] < cap_in:
        out.append(("runtime_settings.max_prefill_tokens",
                    f"{runtime.key} refuses to start with max_prefill_tokens {settings['max_prefill_tokens']:g} below "
                    f"max_input_tokens {cap_in:g}: it prefills a prompt in one step"))
    return out


def runtime_value(runtime: Entry, req: dict, name: str) -> Any:
    """A runtime constant as the request sees it before a GPU is chosen: its ``runtime_settings`` override, else what a
    ``follows`` rule derives from the settings given (one limited to some vendors' GPUs aside), else the profile's
    value (None where the profile has no such constant)."""
    settings = req.get("runtime_settings") or {}
    if name in settings:
        return settings[name]
    constants = runtime.data["constants"]
    if constants.get(name, {}).get("follows"):
        derived = _followed_before_gpu(runtime, settings)
        if name in derived:
            return derived[name]
    return constants.get(name, {}).get("value")


def _followed_before_gpu(runtime: Entry, settings: dict) -> dict[str, float]:
    """What the profile's ``follows`` rules derive from ``settings`` over its untiered values (no GPU yet, so a rule
    limited to some vendors does not apply)."""
    if not settings:
        return {}
    plain = {k: settings.get(k, c["value"]) for k, c in runtime.data["constants"].items()}
    return follows.followed(runtime.data, settings, plain)


def _checkpoint_kv(cat, config: Any, quant: Entry | None, kv_quant: Entry | None, runtime: Entry | None, req: dict,
                   assumptions: list[str]) -> Entry | None:
    """The KV format a ModelOpt checkpoint states, where the request runs that checkpoint in its own format, names no
    KV format, and the runtime's "auto" cache dtype takes the checkpoint's (``kv_dtype_from_checkpoint``)."""
    if kv_quant is None or quant is None or runtime is None or req.get("kv_cache_quantization_given"):
        return kv_quant
    takes = runtime_value(runtime, req, "kv_dtype_from_checkpoint")
    qc = keptmodules.checkpoint_config(config)
    if not takes or qc is None or keptmodules.checkpoint_format(qc) != quant.key:
        return kv_quant
    fmt = keptmodules.checkpoint_kv_format(qc)
    entry = cat.quantization.get(fmt) if fmt else None
    if entry is None or entry.key == kv_quant.key or "kv_cache_bits" not in entry.data:
        return kv_quant
    req["kv_cache_quantization"] = entry.key
    assumptions.append(f"KV cache: {entry.key} - the checkpoint's quantization config states it and {runtime.key}'s "
                       "default cache dtype takes it (kv_cache_quantization not given)")
    return entry


#: ``expert_dtype`` of a DeepSeek V4 config.json -> the catalog format its routed experts are stored in: "fp4" is
#: E2M1 pairs with one UE8M0 scale per 32 (DeepSeek V4 inference/model.py ``Linear`` fp4 branch; vLLM's
#: DeepseekV4FP8Config loads them with Mxfp4MoEMethod), MXFP4's layout; "fp8" the block-scaled FP8 of the rest.
EXPERT_DTYPES = {"fp4": "mxfp4", "fp8": "fp8"}


def _checkpoint_experts(cat, config: Any, arch: Architecture, quant: Entry, bits: dict[str, float],
                        assumptions: list[str]) -> dict[str, float]:
    """DeepSeek V4's checkpoints mix formats: where a request runs one in its own method (FP8), the routed experts
    are in the format ``expert_dtype`` names (FP4 in the released V4 checkpoints), the compressors' projections and
    the indexer's weights_proj in bf16 ("wkv and wgate in the checkpoint is stored in bf16"; ``weights_proj`` built
    bf16) and the hyper-connection parameters in fp32 (``set_dtype(torch.float32)``), all per DeepSeek V4
    inference/model.py. The role's bits become the parameter-weighted mean, so params x bits stays the bytes."""
    if not arch.is_compressed or not isinstance(config, dict):
        return bits
    qc = keptmodules.checkpoint_config(config)
    expert_fmt = EXPERT_DTYPES.get(str(config.get("expert_dtype") or "").lower())
    if qc is None or keptmodules.checkpoint_format(qc) != quant.key:
        return bits
    roles, h = arch.param_roles(), arch.hidden_size
    out = dict(bits)
    default = bits.get("default", 16)
    role_bits = lambda role: float(bits.get(role, default))  # noqa: E731
    said = []
    if expert_fmt and expert_fmt != quant.key and arch.is_moe:
        fmt = cat.quantization.get(expert_fmt)
        e_bits = float(fmt.data["bits"].get("default")) if fmt is not None else None
        routed = len(arch.moe_layers) * arch.num_experts * arch.expert_matrix_params
        if e_bits:
            for role in ("ffn_gate", "ffn_up", "ffn_down"):
                if roles[role]:
                    out[role] = (routed * e_bits + (roles[role] - routed) * role_bits(role)) / roles[role]
            said.append(f"the routed experts in {expert_fmt} ({e_bits:g} bits; its expert_dtype {config['expert_dtype']!r})")
    wide = arch.compressor_linear_params + arch.indexed_layers * arch.index_n_heads * h  # + the indexers' weights_proj
    if roles["attn_k"]:
        out["attn_k"] = (wide * 16 + (roles["attn_k"] - wide) * role_bits("attn_k")) / roles["attn_k"]
    out["other"] = 32.0
    said.append("the compressors and the indexer's weights_proj in bf16 and the hyper-connections in fp32")
    assumptions.append(f"weights: the checkpoint stores {'; '.join(said)}; its other linear layers are {quant.key}")
    return out


def _setting_problem(unit: str, value: float) -> str | None:
    lo, hi = SETTING_RANGES.get(unit, OTHER_SETTING_RANGE)
    if unit == "flag" and value not in (0, 1):
        return f"is a flag: 0 or 1, got {value!r}"
    if not lo <= value <= hi:
        return f"{value!r} is out of range for a constant in {unit}: {lo:g} to {hi:g}"
    if unit in WHOLE_UNITS and value % 1:
        return f"counts {unit}: a whole number, got {value!r}"
    return None


def _class_variant(cat: Catalog, name: str) -> tuple[str, str] | None:
    """``(constant, class)`` where a setting's name is ``<constant>_<class>`` for a per-hardware-class constant
    (catalogs/runtime_constants ``per_hardware_class``) and a registered class; else None."""
    per_class = (e.key for e in cat.runtime_constants if e.data.get("per_hardware_class"))
    return hardware.class_variant(name, per_class, cat.hardware_classes.keys())


def _variant_spec(cat: Catalog, known: dict[str, dict], name: str) -> dict | None:
    """The constant a setting ``<name>_<class>`` specialises for one hardware class, where the runtime has that
    per-class constant - a setting may name the variant though the profile keeps none for that class
    (``decode_bw_eff_nvidia_consumer`` under vLLM, for an RTX 4090); else None."""
    variant = _class_variant(cat, name)
    return known.get(variant[0]) if variant else None


def _other_class_settings(cat: Catalog, settings: dict[str, float] | None, gpu_key: str) -> list[str]:
    """Warnings for the runtime_settings that specialise a per-hardware-class constant for a class this GPU is not in
    (``decode_bw_eff_amd`` on an H100): the estimate keeps the value for the GPU's own class."""
    order = cat.hardware_orders.get(gpu_key, ())
    out = []
    for name in settings or {}:
        variant = _class_variant(cat, name)
        if variant and variant[1] not in order:
            out.append(f"runtime_settings.{name} does not apply: {gpu_key} is not in hardware class {variant[1]} "
                       f"(its classes: {', '.join(order) or 'none'}); set {variant[0]} for this GPU")
    return out


def _accepted_problem(runtime_key: str, constant: dict, value: float) -> str | None:
    accepts = constant.get("accepts")
    if not outside_accepted(accepts, value):
        return None
    return f"{value!r} is not accepted by {runtime_key}: {accepted_range(accepts)} ({accepts['source']})"


def _exact_weights_bytes(info: dict | None, quant: Entry, req: dict[str, Any], workload: str,
                         assumptions: list[str]) -> int | None:
    """A Hub model's exact weight bytes (its safetensors headers), where the request runs it in the
    checkpoint's own format; else None and the bytes are computed from parameters x bits."""
    if not info:
        return None
    assumptions.extend(f"model: {n}" for n in info["notes"])
    if not info.get("weights_bytes") or req.get("custom_weights_bytes") or workload != "inference":
        return None
    if info.get("quantization") != quant.key:
        return None
    assumptions.append(f"weights: {info['weights_bytes']:,} bytes as the checkpoint's safetensors headers state them")
    return int(info["weights_bytes"])


#: How far a checkpoint's parameter count may sit from its config's reading before the estimate says so. A draft layer
#: the config's layers do not include stays inside it (DeepSeek-V3's multi-token-prediction layer: 684.5 B in the
#: checkpoint for 671 B, +2.0%); a family read with the wrong layers does not (a non-gated MLP read as gated: +50% of
#: the MLP).
PARAMS_DISAGREE = 0.05


def params_disagree(info: dict | None, arch: Architecture) -> list[str]:
    """A warning when a Hub model's or model file's tensors hold a parameter count far from what vramplan reads
    from its config.json: layers of its family the reading does not model, so the KV cache, activations and
    speed - computed from that reading - are in doubt. Packed checkpoints (several weights per stored element)
    count stored elements, so they are not compared."""
    if not info or not info.get("params") or any("packed" in n for n in info["notes"]):
        return []
    read = arch.param_count()
    off = info["params"] / read - 1 if read else 0.0
    if abs(off) <= PARAMS_DISAGREE:
        return []
    return [f"the checkpoint's tensors hold {info['params']:,} parameters, {off:+.0%} from the {read:,} vramplan reads "
            f"from its config.json (model_type {arch.model_type!r}): it has layers or tensors the reading does not "
            f"model, so its KV cache, activations and speed - estimated from that reading - are uncertain"]


def _say(rule: Entry, assumptions: list[str], warnings: list[str]) -> None:
    """What an applied format rule asks to be said."""
    if rule.data.get("assumption"):
        assumptions.append(rule.data["assumption"])
    if rule.data.get("warning"):
        warnings.append(rule.data["warning"])


def _optimizer(cat: Catalog, req: dict[str, Any]) -> Entry:
    """The optimizer entry, after the seed's use_8bit_optimizer / use_paged_optimizer flags.

    The flags turn the requested optimizer into its registered variant (``variant_of``) with int8
    states and/or paging, as asked. The request itself is left as given; the response lists the flags
    of the optimizer in use (estimate._optimization_flags)."""
    entry = cat.optimizers.get(req["optimizer"], "optimizer")
    opt = req["optimization_config"]
    want_8bit = bool(opt.get("use_8bit_optimizer")) or entry.data["state_dtype"] == "int8"
    want_paged = bool(opt.get("use_paged_optimizer")) or bool(entry.data.get("paged"))
    if (want_8bit, want_paged) != (entry.data["state_dtype"] == "int8", bool(entry.data.get("paged"))):
        for variant in cat.optimizers:
            d = variant.data
            if d.get("variant_of") == entry.key and (d["state_dtype"] == "int8", bool(d.get("paged"))) == (want_8bit, want_paged):
                entry = variant
                break
    return entry


def _check_expert_split(cat: Catalog, arch: Architecture, runtime: Entry) -> None:
    """inference_parallelism "expert" splits the routed experts across the GPUs and replicates the rest (attention
    data parallelism): a dense model has no experts to split, and a runtime without the mode cannot run it."""
    if not arch.is_moe:
        raise RequestError([("inference_parallelism", "expert (attention data parallelism + expert parallelism) splits "
                             "the routed experts of an MoE model across the GPUs; this model is dense (no routed experts), "
                             "so every GPU would hold the whole model: use tensor or pipeline")])
    if not runtime.data["constants"]["attention_dp"]["value"]:
        able = [e.key for e in cat.runtimes if e.data["constants"]["attention_dp"]["value"]]
        raise RequestError([("inference_parallelism", f"expert (attention data parallelism + expert parallelism) is not a "
                             f"mode of {runtime.key}; runtimes that have it: {', '.join(able)} (or use tensor or pipeline)")])


def _chunks_kept_whole(arch: Architecture, runtime: Entry, assumptions: list[str]) -> Architecture:
    """Chunked attention (Llama 4) is read as a window of attention_chunk_size tokens; a runtime that keeps every token
    of those layers and attends to all of them in decode (runtime constant chunked_attention_window 0: TensorRT-LLM)
    has full-attention layers there."""
    if not arch.window_is_chunk or runtime.data["constants"]["chunked_attention_window"]["value"]:
        return arch
    n = arch.num_sliding_layers
    assumptions.append(f"attention: {runtime.key} keeps every token of the {n} chunked-attention layers "
                       f"(attention_chunk_size {arch.sliding_window:,} chunks only a prompt's attention there) - estimated "
                       "as full-attention layers, a prompt beyond one chunk included")
    return replace(arch, layer_types=tuple("full" if t == "sliding" else t for t in arch.layer_types), sliding_window=None,
                   attn_mask_window=None, window_is_chunk=False)


def splits_layers(runtime: Entry) -> bool:
    """Whether the runtime can place a model's layers on the GPUs in stages (inference_parallelism pipeline); TGI
    shards every layer (tensor parallelism) and nothing else (runtime constant pipeline_parallel)."""
    return bool(runtime.data["constants"]["pipeline_parallel"]["value"])


def _layer_split(cat: Catalog, runtime: Entry, req: dict[str, Any], assumptions: list[str]) -> None:
    """A runtime without pipeline parallelism: over several GPUs, a request that leaves inference_parallelism out
    (the seed API's default is pipeline) is split the only way the runtime splits a model, and says so; one that
    states pipeline is refused."""
    if req["inference_parallelism"] != "pipeline" or holds(req["num_gpus"] <= 1) or splits_layers(runtime):
        return
    if req.get("inference_parallelism_given"):
        able = [e.key for e in cat.runtimes if splits_layers(e)]
        raise RequestError([("inference_parallelism", f"pipeline is not a split {runtime.key} has: it shards every layer "
                             f"over the GPUs (tensor parallelism) and places none on a GPU of its own; use tensor, or a "
                             f"runtime with pipeline parallelism ({', '.join(able)})")])
    req["inference_parallelism"] = "tensor"
    assumptions.append(f"multi-GPU split: tensor parallelism - {runtime.key} shards every layer over the GPUs and has no "
                       f"pipeline parallelism (inference_parallelism left out; the API's default, pipeline, is not a "
                       f"split it can run)")


def _uncertainty_warnings(workload: str, hw_class: dict[str, Any] | None, gpu: dict[str, Any], arch: Architecture,
                          runtime: str, req: dict[str, Any]) -> list[str]:
    """Say where the estimate leans on runtime internals the calibration did not cover (docs/FIDELITY.md)."""
    out = []
    if hw_class is not None and not hw_class["calibrated"]:
        out.append(f"{runtime} on {hw_class['backend']}: the runtime's context, allocator and compute-buffer "
                   f"constants were measured on NVIDIA GPUs; this backend allocates differently, so treat the "
                   f"overheads as approximate")
    if arch.vision_params:
        out.append("the model has a vision encoder: its weights are counted, but image-token activations and "
                   "the encoder's own transients are not modelled")
    images = number_or(req.get("images_per_sequence"), 0)
    if not (arch.image_tokens_per_image or arch.cross_tokens_per_image) and holds(images > 0):
        out.append("images_per_sequence is ignored: this model's config states no fixed number of tokens per image")
    if arch.is_compressed:
        ratios = sorted({r for r in arch.compress_ratios if r > 0})
        n_csa = arch.indexed_layers
        others = ", ".join(f"{sum(1 for x in arch.compress_ratios if x == r)} one per {r}" for r in ratios if r != CSA_RATIO)
        out.append(f"compressed attention (DeepSeek V4): every layer keeps its last {arch.sliding_window:,} tokens' "
                   f"rows; {n_csa} layers add one compressed row per {CSA_RATIO} tokens with a lightning-indexer key, of which "
                   f"attention reads the index_topk = {arch.index_topk:,} the indexer selects, "
                   f"{others or 'no other'} (all read); the compressors' fp32 state of partial windows is counted per "
                   f"sequence, and the residual stream is {arch.hc_mult} hidden states wide in the activations. Not "
                   f"modelled: the time of the hyper-connections' mixing, runtimes' own page rounding of the "
                   f"compressed caches, and the multi-token-prediction layer (not counted, as for DeepSeek V3)")
    elif arch.index_topk:
        out.append(f"sparse attention (DeepSeek V3.2's lightning indexer): its key cache, {arch.index_head_dim} FP8 "
                   f"keys and their fp32 scales a token a layer, is counted, and attention reads "
                   f"only the index_topk = {arch.index_topk:,} tokens the indexer selects while the indexer scores every "
                   f"cached token; an FP8 cache takes the runtime's layout (vLLM and SGLang: DeepSeek's block-scaled "
                   f"656 bytes a token a layer; TensorRT-LLM: per-tensor FP8, 576). Prompts are priced in MLA's latent "
                   f"space, as vLLM and TensorRT-LLM run them: a runtime that switches short prompts to dense attention "
                   f"prefills those under about 10,000 tokens faster")
    if arch.num_recurrent_layers:
        what = ("in_proj's B, C and x, 3 x hidden a token" if arch.recurrent_kind == "short_conv"
                else "chunked-scan intermediates")
        out.append(f"hybrid model: the recurrent layers' per-sequence state is modelled; their prefill transients "
                   f"({what}) are not")
    opt = req.get("optimization_config") or {}
    if workload == "finetuning":
        if arch.is_moe:
            out.append("MoE fine-tuning: saved activations are counted for the routed experts' share of tokens; "
                       "router, permutation and expert-parallel buffers are not modelled")
        if not opt.get("flash_attention", True):
            out.append("eager attention in training: the saved score tensors are estimated (softmax output and "
                       "its fp32 result), not calibrated")
        if req.get("runtime") not in (None, "transformers"):
            out.append(f"fine-tuning memory is modelled on PyTorch / transformers / peft; {runtime} does not train, "
                       "so the transformers mechanisms were used")
    return out
