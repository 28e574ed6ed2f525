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

Matching follows transformers' ``should_convert_module`` (quantizers/quantizers_utils.py): a pattern
names a module when it matches the module's full name from the start as a regular expression, or the name
ends with it. The module names are the ones transformers' modeling code gives a decoder
(``model.layers.{i}.self_attn.q_proj``, ``model.layers.{i}.mlp.gate_proj``, an MoE layer's
``mlp.experts`` / ``mlp.gate`` or gpt-oss's ``mlp.router``, ``model.embed_tokens``, ``lm_head``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
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
                 "bitsandbytes": "nf4", "compressed-tensors": None}

_ATTN = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output"}
#: transformers' MLA attention names (models/deepseek_v3/modeling_deepseek_v3.py) by the engine's roles.
_ATTN_MLA = {"q_proj": "attn_q", "kv_a_proj_with_mqa": "attn_k", "kv_b_proj": "attn_v", "o_proj": "attn_output"}
_DENSE = {"gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
#: Families whose MoE block is ``block_sparse_moe`` (transformers models/mixtral, minimax, phimoe).
_BLOCK_SPARSE = ("mixtral", "minimax", "phimoe")


def checkpoint_config(config: Any) -> dict | None:
    """The ``quantization_config`` of a config.json object, or None."""
    qc = config.get("quantization_config") if isinstance(config, Mapping) else None
    return qc if isinstance(qc, dict) else None


def checkpoint_format(qc: Mapping[str, Any]) -> str | None:
    """The catalog format key of a checkpoint's quantization method (None when not one the catalog has)."""
    method = str(qc.get("quant_method") or "").lower()
    if method == "bitsandbytes" and qc.get("load_in_8bit"):
        return "int8"
    return QUANT_METHODS.get(method, method or None)


@dataclass(frozen=True)
class Kept:
    """What a checkpoint keeps at 16 bits: per role, the share of its parameters, and in words."""

    shares: dict[str, float]
    said: str


def _modules(a: Architecture) -> list[tuple[str, dict[str, float]]]:
    """Every linear module transformers builds for this decoder: (full name, {role: parameters})."""
    h = a.hidden_size
    roles = a.param_roles()
    kinds = a.layer_types or ("full",) * a.num_layers
    attn_layers = [i for i, t in enumerate(kinds) if t in ("full", "sliding", "cross")]
    moe = set(a.moe_layers) if a.is_moe else set()
    dense_layers = [i for i in range(a.num_layers) if i not in moe]
    out: list[tuple[str, dict[str, float]]] = [("model.embed_tokens", {"token_embd": roles["token_embd"]}),
                                              ("lm_head", {"output": roles["output"]})]
    names = _ATTN_MLA if a.is_mla else _ATTN
    for i in attn_layers:
        for proj, role in names.items():
            out.append((f"model.layers.{i}.self_attn.{proj}", {role: roles[role] / len(attn_layers)}))
    block = "block_sparse_moe" if a.model_type in _BLOCK_SPARSE else "mlp"
    router = "router" if a.model_type == "gpt_oss" else "gate"
    widths = [a.ffn_sizes[i] if a.ffn_sizes else a.dense_intermediate_size or a.intermediate_size
              for i in range(a.num_layers)]
    for i in dense_layers:
        if not widths[i]:
            continue
        for proj, role in _DENSE.items():
            if role == "ffn_gate" and not a.gated_mlp:
                continue
            out.append((f"model.layers.{i}.mlp.{proj}", {role: widths[i] * h}))
    ffn_roles = [r for r in ("ffn_gate", "ffn_up", "ffn_down") if r != "ffn_gate" or a.gated_mlp]
    for i in sorted(moe):
        out.append((f"model.layers.{i}.{block}.experts",
                    {r: a.num_experts * a.moe_intermediate_size * h for r in ffn_roles}))
        if a.shared_expert_intermediate_size:
            out.append((f"model.layers.{i}.{block}.shared_experts",
                        {r: a.shared_expert_intermediate_size * h for r in ffn_roles}))
        out.append((f"model.layers.{i}.{block}.{router}", {"ffn_gate_inp": roles["ffn_gate_inp"] / len(moe)}))
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


def kept(a: Architecture, qc: Mapping[str, Any], where: str = "config.json") -> Kept | None:
    """The share of each role's parameters the checkpoint keeps at 16 bits, or None when it keeps none
    of the modules the engine counts. A list too long to match is a :class:`RequestError` naming ``where``."""
    patterns = qc.get("modules_to_not_convert")
    if patterns is not None and not isinstance(patterns, list):
        raise RequestError([(f"{where}.quantization_config.modules_to_not_convert",
                             f"must be a list of module names or patterns, not {type(patterns).__name__}")])
    if not patterns:
        return None
    keys = tuple(str(p) for p in patterns if isinstance(p, (str, int)) and not isinstance(p, bool) and str(p))
    if len(keys) * len(_module_names(a)) > MAX_MATCHES:
        raise RequestError([(f"{where}.quantization_config.modules_to_not_convert",
                             f"{len(keys):,} patterns over {len(_module_names(a)):,} modules is over the "
                             f"{MAX_MATCHES:,} matches vramplan makes (a real checkpoint lists a few hundred)")])
    return _kept(a, keys) if keys else None


@lru_cache(maxsize=256)
def _module_names(a: Architecture) -> tuple[str, ...]:
    return tuple(name for name, _ in _modules(a))


@lru_cache(maxsize=256)
def _kept(a: Architecture, patterns: tuple[str, ...]) -> Kept | None:
    matchers = [_matcher(p) for p in patterns]
    totals: dict[str, float] = {}
    kept_params: dict[str, float] = {}
    kept_names: list[str] = []
    for name, params in _modules(a):
        hit = any(m(name) for m in matchers)
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
    whole = [n for n in names if not n.startswith("model.layers.")]
    by_kind: dict[str, list[int]] = {}
    for n in names:
        m = re.match(r"model\.layers\.(\d+)\.(.+)$", n)
        if m:
            by_kind.setdefault(m.group(2), []).append(int(m.group(1)))
    layers_of = {}
    for name, _ in _modules(a):
        m = re.match(r"model\.layers\.(\d+)\.(.+)$", name)
        if m:
            layers_of.setdefault(m.group(2), set()).add(int(m.group(1)))
    groups: dict[str, list[str]] = {}
    for kind, idx in by_kind.items():
        where = f"all {len(idx)} layers" if set(idx) == layers_of.get(kind) else (
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
