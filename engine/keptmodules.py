"""Modules a quantized checkpoint keeps at 16 bits.

A quantization format in the catalog states the bits of every linear layer, but real checkpoints often
leave some layers unquantized and say which in their config.json: ``quantization_config.
modules_to_not_convert`` (transformers' quantizers; vLLM's fbgemm_fp8 and mxfp4 read the same list).
Meta's FP8 Llama 3.1 405B keeps attention and its first and last blocks in bf16 (Llama 3 paper,
arXiv:2407.21783 section 6.2); gpt-oss keeps attention, routers, embedding and head in bf16 and only
its experts in MXFP4. Where a request runs a model in its checkpoint's own method, those modules keep
the model's 16 bits; a request for another format (bf16, a GGUF type, AWQ) quantizes as the format says.

The engine counts parameters by tensor role summed over all layers, so a module kept in some layers only
(layer 0's feed-forward) becomes a bits-per-parameter average over the role: ``share x 16 + (1 - share) x
format bits``, with ``share`` the kept parameters of the role over all of them. ``params x bits / 8`` then
stays the exact byte count, in the weights and in every formula that reads ``b_*``.

Three checkpoint families say it, each matched with its own loader's semantics:

- ``modules_to_not_convert`` (transformers' quantizers, vLLM's fbgemm_fp8 / mxfp4): transformers'
  ``should_convert_module`` (quantizers/quantizers_utils.py) - a pattern names a module when it matches the
  module's full name from the start as a regular expression, or the name ends with it.
- NVIDIA ModelOpt (``quant_method: modelopt``; the list is ``ignore`` in config.json, ``exclude_modules`` in
  the older ``hf_quant_config.json`` ``quantization`` object): vLLM's ``ModelOptQuantConfigBase.
  is_layer_excluded`` (model_executor/layers/quantization/modelopt.py) - the exact name, a pattern contained in
  the name, or a shell wildcard (``fnmatch``) over the whole name.
- compressed-tensors (``quant_method: compressed-tensors``): a module is quantized when a ``config_groups``
  entry's ``targets`` names it and ``ignore`` does not (compressed_tensors/utils/match.py ``is_match`` /
  ``_match_name`` / ``_match_class``, which vLLM's compressed_tensors utils repeat): ``re:PATTERN`` is
  ``re.match`` on the full name, anything else the exact full name or a class name (``Linear`` names every
  linear layer). Linear layers no group targets, and those ignored, keep 16 bits.

The module names are the ones transformers' modeling code gives a decoder (``model.layers.{i}.self_attn.q_proj``,
``model.layers.{i}.mlp.gate_proj``, an MoE layer's ``mlp.experts`` / ``mlp.gate`` or gpt-oss's ``mlp.router``,
``model.embed_tokens``, ``lm_head``). An MoE layer's experts are one module here (vLLM's FusedMoE prefix
``model.layers.{i}.mlp.experts``): a list naming single experts does not reach them. Nemotron-H names its decoder
``backbone`` and each block's one module ``mixer`` (``backbone.layers.{i}.mixer.q_proj``, a Mamba2 block's
``mixer.in_proj`` / ``mixer.out_proj``, an MoE block's ``mixer.experts`` / ``mixer.shared_experts`` / ``mixer.gate``,
``backbone.embeddings``), as transformers' modeling_nemotron_h.py and vLLM's nemotron_h.py do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

from .architecture import Architecture
from .errors import RequestError

#: Bits an unconverted module is stored in: the checkpoint's 16-bit compute dtype (transformers'
#: FbgemmFp8HfQuantizer and Mxfp4HfQuantizer load in bfloat16; Meta's and OpenAI's config.json say
#: torch_dtype bfloat16).
KEPT_BITS = 16.0

#: ``quantization_config.quant_method`` -> the catalog's format key (catalogs/quantization). fbgemm_fp8
#: is FP8 E4M3 weights with one fp32 scale per output row (transformers integrations/fbgemm_fp8.py
#: FbgemmFp8Linear: weight float8_e4m3fn, weight_scale (out_features, 1)), the fp8 entry's 8 bits.
QUANT_METHODS = {"awq": "awq", "gptq": "gptq", "mxfp4": "mxfp4", "fp8": "fp8", "fbgemm_fp8": "fp8",
                 "bitsandbytes": "nf4", "compressed-tensors": None, "modelopt": None}

#: ModelOpt ``quant_algo`` -> the catalog's format key (vLLM modelopt.py QUANT_ALGOS). The three FP8 recipes store
#: E4M3 weights with a per-tensor, per-channel or 128x128-block fp32 scale - under 0.01 bit a weight, the fp8
#: entry's 8 bits; NVFP4 and W4A16_NVFP4 store E2M1 weights with an E4M3 scale per 16, the nvfp4 entry's 4.5 bits
#: (W4A16_NVFP4 multiplies in 16 bits: its bytes are nvfp4's, its GEMM rate is not). MXFP8 and MIXED_PRECISION
#: (a format per layer) have no catalog entry: no format, nothing kept.
MODELOPT_ALGOS = {"FP8": "fp8", "FP8_PER_CHANNEL_PER_TOKEN": "fp8", "FP8_PB_WO": "fp8", "NVFP4": "nvfp4",
                  "W4A16_NVFP4": "nvfp4"}

#: compressed-tensors weight schemes (type, bits, group size, strategies) -> the catalog's format key, after the
#: library's presets (compressed_tensors/quantization/quant_scheme.py). FP8 / FP8_DYNAMIC / FP8_BLOCK: 8-bit float
#: with a per-tensor, per-channel or 128x128-block scale -> fp8. NVFP4 / NVFP4A16: 4-bit float, group 16, an FP8
#: scale per group (TENSOR_GROUP) -> nvfp4. W8A8 / W8A16: 8-bit int, per-channel scale -> int8. W4A16 /
#: W4A16_ASYM: 4-bit int, group 128, a 16-bit scale (and with ASYM a 4-bit zero point packed beside it) per group =
#: 4 + 16/128 (+ 4/128) bits -> gptq (4 + 20/128 = 4.15625 bits: exact for ASYM, 0.03 bit over for the symmetric
#: preset), not int4 (4.25, an fp16 zero per group, 0.125 bit over) - and vLLM runs both on GPTQ's Marlin kernels
#: (CompressedTensorsWNA16). Any other scheme, or groups that disagree, is no one format: nothing kept.
_CT_SCHEMES = (("float", 8, None, ("tensor", "channel", "block"), "fp8"),
               ("float", 4, 16, ("tensor_group", "group"), "nvfp4"),
               ("int", 8, None, ("tensor", "channel"), "int8"),
               ("int", 4, 128, ("group",), "gptq"),
               # compressed-tensors "mxfp4-pack-quantized" (Kimi K3's routed experts): 4-bit floats, one scale per 32
               ("float", 4, 32, ("group",), "mxfp4"))

_ATTN = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output"}
#: transformers' MLA attention names (models/deepseek_v3/modeling_deepseek_v3.py) by the engine's roles.
_ATTN_MLA = {"q_proj": "attn_q", "kv_a_proj_with_mqa": "attn_k", "kv_b_proj": "attn_v", "o_proj": "attn_output"}
_DENSE = {"gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
#: The token embedding's module name: transformers' ``model.embed_tokens``, Nemotron-H's ``backbone.embeddings``.
_EMBEDDING = {False: "model.embed_tokens", True: "backbone.embeddings"}
_LAYER = re.compile(r"(?:model|backbone)\.layers\.(\d+)\.(.+)$")
#: Families whose MoE block is ``block_sparse_moe`` (transformers models/mixtral, minimax, phimoe).
_BLOCK_SPARSE = ("mixtral", "minimax", "phimoe", "kimi_linear")  # Kimi K3's checkpoint: layers.N.block_sparse_moe


#: The key under which a Hub or local checkpoint's ``hf_quant_config.json`` (ModelOpt's older export, beside a
#: config.json without ``quantization_config``) travels inside the config object.
HF_QUANT_CONFIG = "hf_quant_config"


def checkpoint_config(config: Any) -> dict | None:
    """The ``quantization_config`` of a config.json object; where there is none, the ``quantization`` object of
    the checkpoint's hf_quant_config.json as a ModelOpt config (what vLLM's ModelOptQuantConfigBase.from_config
    reads from that file); or None."""
    if not isinstance(config, Mapping):
        return None
    qc = config.get("quantization_config")
    if isinstance(qc, dict):
        return qc
    tc = config.get("text_config")  # Kimi K3's config.json states it in its text_config only
    if isinstance(tc, Mapping) and isinstance(tc.get("quantization_config"), dict):
        return tc["quantization_config"]
    hq = config.get(HF_QUANT_CONFIG)
    inner = hq.get("quantization") if isinstance(hq, dict) else None
    return {"quant_method": "modelopt", **inner} if isinstance(inner, dict) else None


def checkpoint_key(config: Any) -> str:
    """Where :func:`checkpoint_config` found it: ``quantization_config`` or ``hf_quant_config.quantization``."""
    if isinstance(config, Mapping) and isinstance(config.get("quantization_config"), dict):
        return "quantization_config"
    tc = config.get("text_config") if isinstance(config, Mapping) else None
    if isinstance(tc, Mapping) and isinstance(tc.get("quantization_config"), dict):
        return "text_config.quantization_config"
    return f"{HF_QUANT_CONFIG}.quantization"


def _modelopt(qc: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """A ModelOpt config's inner object (the legacy nested ``quantization``, as vLLM reads both) and its prefix."""
    inner = qc.get("quantization")
    return (inner, "quantization.") if isinstance(inner, dict) else (qc, "")


def checkpoint_format(qc: Mapping[str, Any]) -> str | None:
    """The catalog format key of a checkpoint's quantization method (None when not one the catalog has)."""
    method = str(qc.get("quant_method") or "").lower()
    if method == "bitsandbytes" and qc.get("load_in_8bit"):
        return "int8"
    if method.startswith("modelopt"):  # vLLM _extract_modelopt_quant_algo: any quant_method starting "modelopt"
        return MODELOPT_ALGOS.get(str(_modelopt(qc)[0].get("quant_algo") or "").upper())
    if method == "compressed-tensors":
        return _ct_format(qc)
    return QUANT_METHODS.get(method, method or None)


def checkpoint_kv_format(qc: Mapping[str, Any]) -> str | None:
    """The KV cache format a ModelOpt checkpoint states - vLLM's get_kv_cache_quant_algo_string
    (vllm/utils/torch_utils.py): ``kv_cache_scheme`` or ``kv_cache_quant_algo``, in the nested ``quantization`` object or
    beside it; "FP8", or a static 8-bit float scheme, is the catalog's fp8. None for anything else (other methods, no
    statement, a format the catalog has no KV entry for)."""
    if not str(qc.get("quant_method") or "").lower().startswith("modelopt"):
        return None
    inner, _ = _modelopt(qc)
    algo = (inner.get("kv_cache_scheme") or qc.get("kv_cache_scheme") or inner.get("kv_cache_quant_algo")
            or qc.get("kv_cache_quant_algo"))
    if isinstance(algo, Mapping):
        return "fp8" if algo.get("dynamic") is False and algo.get("num_bits") == 8 and algo.get("type") == "float" else None
    return "fp8" if isinstance(algo, str) and algo.lower() == "fp8" else None


def _ct_format(qc: Mapping[str, Any]) -> str | None:
    """The one catalog format every ``config_groups`` entry's weights agree on, or None."""
    groups = qc.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        return None
    found = set()
    for group in groups.values():
        w = group.get("weights") if isinstance(group, dict) else None
        if not isinstance(w, dict):
            return None
        kind, bits = str(w.get("type") or "").lower(), w.get("num_bits")
        size, strategy = w.get("group_size"), str(w.get("strategy") or "").lower()
        found.add(next((key for t, b, g, strategies, key in _CT_SCHEMES
                        if kind == t and bits == b and (g is None or size == g) and strategy in strategies), None))
    return found.pop() if len(found) == 1 else None


@dataclass(frozen=True)
class Kept:
    """What a checkpoint keeps at 16 bits: per role, the share of its parameters, in words, and the list in its
    quantization object that says so (``modules_to_not_convert``, ``ignore``, ``exclude_modules``)."""

    shares: dict[str, float]
    said: str
    source: str = "modules_to_not_convert"


def _modules(a: Architecture) -> list[tuple[str, dict[str, float]]]:
    """Every linear module transformers builds for this decoder: (full name, {role: parameters})."""
    h = a.hidden_size
    roles = a.param_roles()
    kinds = a.layer_types or ("full",) * a.num_layers
    attn_layers = [i for i, t in enumerate(kinds) if t in ("full", "sliding", "cross")]
    moe = set(a.moe_layers) if a.is_moe else set()
    dense_layers = [i for i in range(a.num_layers) if i not in moe]
    # Nemotron-H (transformers modeling_nemotron_h.py, vLLM nemotron_h.py): the decoder is ``backbone``, its embedding
    # ``backbone.embeddings``, and every block holds one ``mixer`` - attention, Mamba2, MLP or MoE
    nemotron_h = a.model_type == "nemotron_h"
    layers = "backbone.layers" if nemotron_h else "model.layers"
    out: list[tuple[str, dict[str, float]]] = [(_EMBEDDING[nemotron_h], {"token_embd": roles["token_embd"]}),
                                              ("lm_head", {"output": roles["output"]})]
    names = _ATTN_MLA if a.is_mla else _ATTN
    attn = "mixer" if nemotron_h else "self_attn"
    for i in attn_layers:
        for proj, role in names.items():
            out.append((f"{layers}.{i}.{attn}.{proj}", {role: roles[role] / len(attn_layers)}))
    if nemotron_h and a.recurrent_kind == "mamba2":  # NemotronHMamba2Mixer: in_proj (x, z, B, C, dt), out_proj
        mamba_layers = [i for i, t in enumerate(kinds) if t == "recurrent"]
        for i in mamba_layers:
            out.append((f"{layers}.{i}.mixer.in_proj", {"ssm_in": roles["ssm_in"] / len(mamba_layers)}))
            out.append((f"{layers}.{i}.mixer.out_proj", {"ssm_out": roles["ssm_out"] / len(mamba_layers)}))
    if a.recurrent_kind == "kda":  # Kimi Delta Attention's projections are its self_attn's (Kimi Linear, Kimi K3)
        kda_layers = [i for i, t in enumerate(kinds) if t == "recurrent"]
        for i in kda_layers:
            out.append((f"model.layers.{i}.self_attn.in_proj", {"ssm_in": roles["ssm_in"] / len(kda_layers)}))
            out.append((f"model.layers.{i}.self_attn.o_proj", {"ssm_out": roles["ssm_out"] / len(kda_layers)}))
    block = "mixer" if nemotron_h else "block_sparse_moe" if a.model_type in _BLOCK_SPARSE else "mlp"
    router = "router" if a.model_type == "gpt_oss" else "gate"
    widths = [a.ffn_sizes[i] if a.ffn_sizes else a.dense_intermediate_size or a.intermediate_size
              for i in range(a.num_layers)]
    for i in dense_layers:
        if not widths[i]:
            continue
        for proj, role in _DENSE.items():
            if role == "ffn_gate" and not a.gated_mlp:
                continue
            out.append((f"{layers}.{i}.{block}.{proj}", {role: widths[i] * h}))
    ffn_roles = [r for r in ("ffn_gate", "ffn_up", "ffn_down") if r != "ffn_gate" or a.gated_mlp]
    for i in sorted(moe):
        out.append((f"{layers}.{i}.{block}.experts",
                    {r: a.num_experts * a.expert_matrix_params for r in ffn_roles}))
        if a.shared_expert_intermediate_size:
            out.append((f"{layers}.{i}.{block}.shared_experts",
                        {r: a.shared_expert_intermediate_size * h for r in ffn_roles}))
        out.append((f"{layers}.{i}.{block}.{router}", {"ffn_gate_inp": roles["ffn_gate_inp"] / len(moe)}))
    return out


#: Patterns read as transformers reads them (a regular expression matched from the start): names, dots and at
#: most two ``*`` (``model.layers.*.self_attn``), the forms checkpoints write. Anything else is matched as plain text
#: (a prefix or a suffix), so that no pattern in a request can make the regular-expression engine backtrack for long.
_PLAIN = re.compile(r"[\w.]+")
_GLOB = re.compile(r"[\w.*]+")
#: Patterns x modules one checkpoint may ask to match (Meta's 405B: 511 patterns x 884 modules = 451,724).
MAX_MATCHES = 4_000_000


def _matcher(key: str):
    """transformers quantizers_utils.should_convert_module, negated, for one pattern: it matches the name from the
    start as a regular expression (``re.match``; a plain name is a prefix, its dots read as dots) or the name ends
    with it."""
    if not _PLAIN.fullmatch(key) and _GLOB.fullmatch(key) and key.count("*") <= 2:
        try:
            rx = re.compile(key)
        except re.error:
            pass
        else:
            return lambda name: bool(rx.match(name)) or name.endswith(key)
    return lambda name: name.startswith(key) or name.endswith(key)


def kept(a: Architecture, qc: Mapping[str, Any], where: str = "config.json",
         key: str = "quantization_config") -> Kept | None:
    """The share of each role's parameters the checkpoint keeps at 16 bits, or None when it keeps none of the
    modules the engine counts. ``qc`` is found at ``where``.``key`` (:func:`checkpoint_key`); a malformed list,
    or one too long to match, is a :class:`RequestError` naming that field."""
    method = str(qc.get("quant_method") or "").lower()
    if method.startswith("modelopt"):
        return _modelopt_kept(a, qc, where, key)
    if method == "compressed-tensors":
        return _ct_kept(a, qc, where, key)
    patterns = qc.get("modules_to_not_convert")
    if patterns is not None and not isinstance(patterns, list):
        raise RequestError([(f"{where}.{key}.modules_to_not_convert",
                             f"must be a list of module names or patterns, not {type(patterns).__name__}")])
    if not patterns:
        return None
    keys = tuple(str(p) for p in patterns if isinstance(p, (str, int)) and not isinstance(p, bool) and str(p))
    if len(keys) * len(_module_names(a)) > MAX_MATCHES:
        raise RequestError([(f"{where}.{key}.modules_to_not_convert",
                             f"{len(keys):,} patterns over {len(_module_names(a)):,} modules is over the "
                             f"{MAX_MATCHES:,} matches vramplan makes (a real checkpoint lists a few hundred)")])
    return _kept(a, keys) if keys else None


@lru_cache(maxsize=256)
def _module_names(a: Architecture) -> tuple[str, ...]:
    return tuple(name for name, _ in _modules(a))


@lru_cache(maxsize=256)
def _kept(a: Architecture, patterns: tuple[str, ...]) -> Kept | None:
    matchers = [_matcher(p) for p in patterns]
    return _tally(a, lambda name: any(m(name) for m in matchers))


def _string_list(value: Any, field: str, what: str) -> tuple[str, ...]:
    """A list of strings, as the loaders iterate it; anything else a :class:`RequestError` naming ``field``."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RequestError([(field, f"must be a list of {what}, not {type(value).__name__}")])
    bad = next((i for i, v in enumerate(value) if not isinstance(v, str)), None)
    if bad is not None:
        raise RequestError([(f"{field}[{bad}]", f"must be a string (one of the {what}), not {type(value[bad]).__name__}")])
    return tuple(value)


def _over_budget(n_patterns: int, a: Architecture, field: str) -> None:
    n_modules = len(_module_names(a))
    if n_patterns * n_modules > MAX_MATCHES:
        raise RequestError([(field, f"{n_patterns:,} patterns over {n_modules:,} modules is over the {MAX_MATCHES:,} "
                                    "matches vramplan makes (a real checkpoint lists a few hundred)")])


# -- NVIDIA ModelOpt -------------------------------------------------------------------------------------

def _modelopt_kept(a: Architecture, qc: Mapping[str, Any], where: str, key: str) -> Kept | None:
    """The modules a ModelOpt checkpoint excludes: ``ignore`` in config.json (vLLM's from_config reads that key
    there), else ``exclude_modules`` (the key of hf_quant_config.json, which older config.json exports copy)."""
    inner, prefix = _modelopt(qc)
    name = "ignore" if "ignore" in inner or "exclude_modules" not in inner else "exclude_modules"
    field = f"{where}.{key}.{prefix}{name}"
    patterns = tuple(p for p in _string_list(inner.get(name), field, "module names or wildcards") if p)
    if not patterns:
        return None
    _over_budget(len(patterns), a, field)
    k = _modelopt_cached(a, patterns)
    return replace(k, source=f"{prefix}{name}") if k else None


def _excluded_by_modelopt(name: str, pattern: str) -> bool:
    """vLLM ModelOptQuantConfigBase.is_layer_excluded for one pattern: the exact name, the pattern contained in the
    name (kept there for exports before ModelOpt 0.39), or a shell wildcard over the whole name (fnmatch; its
    ``*`` crosses dots). Python's fnmatch.translate compiles each ``*`` segment to an atomic group (3.11; before, a
    look-ahead that acts as one), ``(?>.*?X)``, which never backtracks into an earlier segment: no wildcard can make
    the match run for long (20 ``*`` over an 80-character name: 6 us)."""
    return pattern == name or pattern in name or (any(c in pattern for c in "*?[") and fnmatchcase(name, pattern))


@lru_cache(maxsize=256)
def _modelopt_cached(a: Architecture, patterns: tuple[str, ...]) -> Kept | None:
    return _tally(a, lambda name: any(_excluded_by_modelopt(name, p) for p in patterns))


# -- compressed-tensors ----------------------------------------------------------------------------------

#: ``re:`` patterns read as regular expressions: those a checkpoint writes (``re:.*mlp.gate$``,
#: ``re:model.layers.\d+.self_attn.*``, ``re:.*(q|k|v)_proj$``): at most 2 quantifiers (``*``, ``+``, ``?``), none on a
#: group (no nested repetition), alternatives whose product over the groups is at most 4, no ``{m,n}``,
#: back-references, look-arounds or inline flags, at most MAX_RE_CHARS characters. Python's backtracking engine
#: then takes, measured on 46- to 50-character module names, at most 0.09 ms a match (``.*(.|\w).*(.|\w)Q``; with a
#: product of 8 0.17 ms, with 3 quantifiers 1.4 ms, with 9 three-way groups 40 ms, so those are refused), and
#: MAX_RE_MATCHES patterns x modules bound a request's matching to about 4 s at worst (a real checkpoint: a few
#: patterns over a few hundred modules).
MAX_RE_QUANTIFIERS = 2
MAX_RE_ALTERNATIVES = 4
MAX_RE_CHARS = 120
MAX_RE_MATCHES = 50_000
_RE_ESCAPES = set("dDwWsS") | {c for c in map(chr, range(33, 127)) if not c.isalnum()}


_LITERAL = re.compile(r"(?:[\w\-/]|\\[^\w])*")


def _one_branch_matches(group: str) -> bool:
    """A group of distinct literal alternatives none of which begins another (``q|k|v``, ``gate|up|down``): at one
    place at most one of them matches, so it multiplies no backtracking."""
    alts = [re.sub(r"\\(.)", r"\1", a) for a in group.split("|")]
    return (all(_LITERAL.fullmatch(a) for a in group.split("|"))
            and not any(a != b and b.startswith(a) or (a == b and i != j)
                        for i, a in enumerate(alts) for j, b in enumerate(alts)))


def _re_problem(rx: str) -> str | None:
    """Why vramplan does not run this regular expression (None when it does)."""
    if len(rx) > MAX_RE_CHARS:
        return f"is longer than the {MAX_RE_CHARS} characters vramplan matches"
    quantifiers, i, last = 0, 0, None  # last: what a quantifier would repeat ("atom", "group", "quant", None)
    branches, starts, product = [1], [], 1  # alternatives of each open group (the whole pattern first), their starts
    while i < len(rx):
        c = rx[i]
        if c == "\\":
            if i + 1 >= len(rx) or rx[i + 1] not in _RE_ESCAPES:
                return f"uses an escape vramplan does not read ({rx[i:i + 2]!r}; it reads \\d \\w \\s and escaped symbols)"
            i, last = i + 2, "atom"
            continue
        if c == "[":
            j = i + 1 + (rx[i + 1:i + 2] == "^")
            j += rx[j:j + 1] == "]"
            end = rx.find("]", j)
            if end < 0 or "[" in rx[j:end] or "\\" in rx[j:end]:
                return "has a character class vramplan does not read (no escapes or [ inside [...])"
            i, last = end + 1, "atom"
            continue
        if c == "(":
            if rx[i + 1:i + 2] == "?" and rx[i + 2:i + 3] != ":":
                return "uses a look-around, named group or inline flag (vramplan reads (...) and (?:...))"
            i, last = i + (3 if rx[i + 1:i + 2] == "?" else 1), None
            branches.append(1)
            starts.append(i)
            continue
        if c in "*+?":
            if last == "group":
                return "repeats a group (nested repetition can backtrack for ever)"
            if last != "atom":
                return "has a quantifier with nothing to repeat, or two in a row"
            quantifiers += 1
            i, last = i + 1, "quant"
            continue
        if c in "{}":
            return "uses {m,n} repetition (vramplan reads *, + and ?)"
        if c == "|":
            branches[-1] += 1
        elif c == ")" and len(branches) > 1:
            n = branches.pop()
            product *= 1 if _one_branch_matches(rx[starts.pop():i]) else n
        last = "group" if c == ")" else None if c in "|^$" else "atom"
        i += 1
    product *= branches[0]
    if quantifiers > MAX_RE_QUANTIFIERS:
        return f"has {quantifiers} quantifiers (vramplan matches at most {MAX_RE_QUANTIFIERS}, which bounds its time)"
    if product > MAX_RE_ALTERNATIVES:
        return (f"has {product} combinations of alternatives (vramplan matches at most {MAX_RE_ALTERNATIVES}, "
                "which bounds its time)")
    try:
        re.compile(rx)
    except re.error as exc:
        return f"is not a valid regular expression ({exc})"
    return None


def _ct_kept(a: Architecture, qc: Mapping[str, Any], where: str, key: str) -> Kept | None:
    """The linear modules a compressed-tensors checkpoint leaves unquantized: those no ``config_groups`` entry
    targets, and those ``ignore`` names."""
    field = f"{where}.{key}"
    what = "module names, re: patterns or class names"
    groups = qc.get("config_groups")
    lists = [(f"{field}.config_groups.{g}.targets", grp.get("targets") if isinstance(grp, dict) else None)
             for g, grp in (groups.items() if isinstance(groups, dict) else ())]
    lists = [(f, _string_list(v, f, what)) for f, v in lists + [(f"{field}.ignore", qc.get("ignore"))]]
    rx_fields = []
    for f, values in lists:
        for i, v in enumerate(values):
            if v.startswith("re:"):
                rx_fields.append(f)
                problem = _re_problem(v[3:])
                if problem:
                    raise RequestError([(f"{f}[{i}]", f"{v!r} {problem}")])
    n_modules = len(_module_names(a))
    if len(rx_fields) * n_modules > MAX_RE_MATCHES:
        raise RequestError([(" and ".join(dict.fromkeys(rx_fields)),
                             f"{len(rx_fields):,} re: patterns over {n_modules:,} modules is over the "
                             f"{MAX_RE_MATCHES:,} regular-expression matches vramplan makes")])
    targets = tuple(v for f, values in lists[:-1] for v in values)
    ignore = lists[-1][1]
    _over_budget(len(targets) + len(ignore), a, f"{field}.ignore")
    k = _ct_cached(a, targets, ignore)
    return replace(k, source="ignore") if k else None


def _ct_matcher(patterns: tuple[str, ...]):
    """compressed-tensors ``_match_name`` or ``_match_class`` over a list, for this module list: ``re:`` is
    ``re.match``, else the exact full name or the class (``Linear`` for every module here but the embedding)."""
    exact = {p for p in patterns if not p.startswith("re:")}
    rxs = [re.compile(p[3:]) for p in patterns if p.startswith("re:")]
    return lambda name, cls: name in exact or cls in exact or any(r.match(name) for r in rxs)


@lru_cache(maxsize=256)
def _ct_cached(a: Architecture, targets: tuple[str, ...], ignore: tuple[str, ...]) -> Kept | None:
    targeted, ignored = _ct_matcher(targets), _ct_matcher(ignore)

    def hit(name: str) -> bool:
        if name in _EMBEDDING.values():  # an Embedding: no Linear target reaches it, and the formats keep it
            return False
        return not targeted(name, "Linear") or ignored(name, "Linear")
    return _tally(a, hit)


def _tally(a: Architecture, is_kept) -> Kept | None:
    """Per role, the share of parameters in the modules ``is_kept(name)`` names."""
    totals: dict[str, float] = {}
    kept_params: dict[str, float] = {}
    kept_names: list[str] = []
    for name, params in _modules(a):
        hit = is_kept(name)
        for role, n in params.items():
            totals[role] = totals.get(role, 0.0) + n
            if hit:
                kept_params[role] = kept_params.get(role, 0.0) + n
        if hit:
            kept_names.append(name)
    shares = {r: kept_params[r] / totals[r] for r in kept_params if totals.get(r)}
    if not shares:
        return None
    return Kept(shares=shares, said=_describe(a, kept_names))


def _describe(a: Architecture, names: list[str]) -> str:
    """The kept modules in words: whole-model ones, then per module kind the layers (all, or their indices)."""
    whole = [n for n in names if not _LAYER.match(n)]
    by_kind: dict[str, list[int]] = {}
    for n in names:
        m = _LAYER.match(n)
        if m:
            by_kind.setdefault(m.group(2), []).append(int(m.group(1)))
    layers_of = {}
    for name, _ in _modules(a):
        m = _LAYER.match(name)
        if m:
            layers_of.setdefault(m.group(2), set()).add(int(m.group(1)))
    groups: dict[str, list[str]] = {}
    for kind, idx in by_kind.items():
        where = f"all {len(idx)} layers" if set(idx) == layers_of.get(kind) and len(idx) > 1 else (
            "layer" + ("s " if len(idx) > 1 else " ") + ", ".join(str(i) for i in sorted(idx)))
        groups.setdefault(where, []).append(kind)
    parts = [f"{', '.join(kinds)} in {where}" for where, kinds in groups.items()]
    return "; ".join(parts + whole)


def apply(bits: Mapping[str, float], k: Kept) -> dict[str, float]:
    """The format's bits by role with the kept share of each role at :data:`KEPT_BITS` (a weighted average,
    exact in bytes: params x bits / 8 = kept params x 16 / 8 + the rest x format bits / 8)."""
    out = dict(bits)
    for role, share in k.shares.items():
        fmt = float(bits.get(role, bits["default"]))
        out[role] = share * KEPT_BITS + (1 - share) * fmt
    return out


def kept_layer_params(a: Architecture, k: Kept | None) -> float:
    """Parameters of the transformer-layer tensors the checkpoint keeps at 16 bits (embedding and head aside)."""
    if k is None:
        return 0.0
    roles = a.param_roles()
    return sum(share * roles[r] for r, share in k.shares.items() if r not in ("token_embd", "output"))
