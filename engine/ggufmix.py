"""GGUF files as llama.cpp's quantizer writes them: the ggml type of every tensor, hence the bits.

llama-quantize does not store a "Q4_K_M" file in one type. ``llama_tensor_get_type_impl``
(src/llama-quant.cpp) picks a type per tensor from its category, the file type, the layer and a
few model facts: output.weight in Q6_K, attn_v and ffn_down in Q6_K on half of the layers, ... Those
choices are data: each GGUF format in the quantization catalog lists, per category, ordered
``when`` → ``type`` rules, and the catalog's ``gguf`` section holds the ggml block sizes, a few
derived variables and which models llama.cpp classifies as 70B.

This module is the model's half: which tensors an :class:`Architecture` has in a GGUF file, in the
order llama.cpp visits them (blocks in layer order, tensors by name within a block), under which
llama-quant.cpp category, and each tensor's row length ``ne[0]`` (a type's block must divide it,
else ``tensor_type_fallback``). :func:`role_bits` evaluates the rules tensor by tensor and returns
bits per parameter by engine role, weighted by parameters — what the weights formulas take.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .architecture import Architecture
from .errors import CatalogError, FormulaError
from .formulaset import FUNCTIONS, compile_tree, parse_expression

#: Per-tensor variables a rule may read (see catalogs/quantization/gguf.yaml); ``derived`` adds more.
VARIABLES = ("index", "count", "layer", "blocks", "ncols", "base_block", "n_gqa", "n_expert", "imatrix",
             "falcon", "model_70b")

#: Tensors convert_hf_to_gguf.py writes in F32 and llama-quantize never quantizes (1-D tensors, norms,
#: the MoE router ffn_gate_inp: tensor_allows_quantization); llama.cpp keeps the vision encoder in a
#: separate mmproj file, so it is not part of the GGUF's weights.
FIXED_ROLE_TYPES = {"norm": "f32", "ffn_gate_inp": "f32"}


@dataclass(frozen=True)
class GgmlType:
    block: int
    bytes: int
    fallback: str | None

    @property
    def bits(self) -> float:
        return self.bytes * 8 / self.block


@dataclass
class GgufRules:
    """The catalog's shared GGUF data, merged from every quantization file's ``gguf`` section."""

    types: dict[str, GgmlType] = field(default_factory=dict)
    derived: list[tuple[str, Callable, frozenset]] = field(default_factory=list)  # name, fn, derived names it reads
    model_70b: dict[str, Callable] = field(default_factory=dict)
    falcon_model_types: set[str] = field(default_factory=set)
    origin: dict[str, str] = field(default_factory=dict)  # "types.q4_k" -> file, for duplicate errors
    raw_derived: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (expr, file)
    raw_70b: dict[str, tuple[str, str]] = field(default_factory=dict)
    mixes: dict[str, "Mix"] = field(default_factory=dict)  # format key -> compiled rules
    cache: dict[tuple[str, Architecture], dict[str, float]] = field(default_factory=dict)
    listed: dict[Architecture, list] = field(default_factory=dict)  # tensors with their counters, per model


@dataclass(frozen=True)
class Mix:
    """One GGUF file type: base type, importance-matrix flag, compiled rules per category."""

    base: str
    imatrix: bool
    rules: Mapping[str, tuple[tuple[Callable | None, str], ...]]
    needs: Mapping[str, frozenset] = field(default_factory=dict)  # category -> derived variables its rules read


@dataclass(frozen=True)
class Tensor:
    """One tensor of a GGUF file, as far as its storage depends on it."""

    role: str       # the engine role whose bytes it adds to (architecture.ROLES)
    category: str   # llama-quant.cpp category, or "other" (quantized to the base type)
    block: int      # layer index, -1 outside the blocks
    params: int
    ncols: int      # ne[0], the row length


def add_section(rules: GgufRules, section: Mapping[str, Any], where: str) -> list[tuple[str, str]]:
    """Merge one file's (schema-valid) ``gguf`` section; returns duplicate-key problems."""
    problems: list[tuple[str, str]] = []

    def claim(key: str) -> bool:
        if key in rules.origin:
            problems.append((f"{where}: $.gguf.{key}", f"already defined by {rules.origin[key]}"))
            return False
        rules.origin[key] = where
        return True

    for name, t in (section.get("types") or {}).items():
        if claim(f"types.{name}"):
            rules.types[name] = GgmlType(int(t["block"]), int(t["bytes"]), t.get("fallback"))
    for name, expr in (section.get("derived") or {}).items():
        if claim(f"derived.{name}"):
            rules.raw_derived[name] = (expr, where)
    for model_type, expr in (section.get("model_70b") or {}).items():
        if claim(f"model_70b.{model_type}"):
            rules.raw_70b[model_type] = (expr, where)
    rules.falcon_model_types.update(section.get("falcon_model_types") or ())
    return problems


def _names(expr: str) -> set[str]:
    try:
        return {n.id for n in ast.walk(ast.parse(" ".join(str(expr).split()), mode="eval")) if isinstance(n, ast.Name)}
    except SyntaxError:
        return set()


def _compile(expr: str, where: str, allowed: set[str]) -> Callable:
    """Parse one condition with the formula grammar; only ``allowed`` names may appear."""
    try:
        tree = ast.parse(" ".join(str(expr).split()), mode="eval")
    except SyntaxError as exc:
        raise FormulaError([(where, f"syntax error in expression: {exc.msg}")]) from None
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - set(FUNCTIONS)
    unknown = sorted(used - allowed)
    if unknown:
        raise FormulaError([(where, f"unknown variable {unknown[0]!r} (known: {', '.join(sorted(allowed))})")])
    return compile_tree(parse_expression(expr, where=where, declared=used), FUNCTIONS)


def compile_all(rules: GgufRules, formats) -> None:
    """Check and compile the derived variables, the 70B conditions and every GGUF format's rules.

    ``formats`` is the quantization registry. Every problem is reported at once, naming the file
    and the key: an unknown ggml type, an unknown variable, a condition that does not parse.
    """
    problems: list[tuple[str, str]] = []
    names = set(VARIABLES)
    for name, (expr, where) in rules.raw_derived.items():
        try:
            fn = _compile(expr, f"{where}: $.gguf.derived.{name}", names)
            rules.derived.append((name, fn, frozenset(_names(expr) & {d for d, _, _ in rules.derived})))
            names.add(name)
        except FormulaError as exc:
            problems.extend(exc.problems)
    for model_type, (expr, where) in rules.raw_70b.items():
        try:
            rules.model_70b[model_type] = _compile(expr, f"{where}: $.gguf.model_70b.{model_type}", {"blocks", "n_gqa"})
        except FormulaError as exc:
            problems.extend(exc.problems)
    for name, t in rules.types.items():
        if t.fallback is not None and t.fallback not in rules.types:
            problems.append((f"{rules.origin[f'types.{name}']}: $.gguf.types.{name}.fallback",
                             f"unknown ggml type {t.fallback!r}"))
    for entry in formats:
        spec = entry.data.get("gguf")
        if spec is None:
            continue
        where = f"{entry.provenance.file or entry.provenance.plugin}: $.quantization_formats.{entry.key}.gguf"
        if not rules.types:
            problems.append((where, "a GGUF format needs the ggml types of a `gguf` section in a quantization file"))
            continue
        compiled: dict[str, tuple] = {}
        needs: dict[str, frozenset] = {}
        derived_names = {d for d, _, _ in rules.derived}
        if spec["type"] not in rules.types:
            problems.append((f"{where}.type", f"unknown ggml type {spec['type']!r}"))
        for category, items in (spec.get("tensors") or {}).items():
            out = []
            used: set[str] = set()
            for i, rule in enumerate(items):
                at = f"{where}.tensors.{category}[{i}]"
                used |= _names(rule.get("when") or "") & derived_names
                if rule["type"] not in rules.types:
                    problems.append((f"{at}.type", f"unknown ggml type {rule['type']!r}"))
                cond = None
                if rule.get("when") is not None:
                    try:
                        cond = _compile(rule["when"], f"{at}.when", names)
                    except FormulaError as exc:
                        problems.extend(exc.problems)
                out.append((cond, rule["type"]))
            compiled[category] = tuple(out)
            needs[category] = _closure(used, rules.derived)
        rules.mixes[entry.key] = Mix(spec["type"], bool(spec.get("imatrix", False)), compiled, needs)
    if problems:
        raise CatalogError(problems)


def _closure(used: set[str], derived) -> frozenset:
    """The derived variables ``used`` reads, with those they read in turn."""
    out = set(used)
    for name, _fn, reads in reversed(derived):
        if name in out:
            out |= reads
    return frozenset(out)


# -- the model's side ----------------------------------------------------------------------------

def tensors(a: Architecture) -> list[Tensor]:
    """The quantizable 2-D/3-D tensors of ``a`` as a GGUF file holds them, in llama.cpp's order.

    Names follow convert_hf_to_gguf.py: MoE experts are stacked into one 3-D ``ffn_*_exps`` tensor
    per layer (shared experts ``ffn_*_shexp``); MLA checkpoints (DeepSeek V2/V3, Kimi K2) store
    ``attn_q_a``/``attn_q_b``, ``attn_kv_a_mqa`` and the split ``attn_k_b``/``attn_v_b``, none of
    which llama-quant.cpp puts in a category ("other": the base type). Norms, biases and the
    router are not listed: they stay F32 (:data:`FIXED_ROLE_TYPES`).
    """
    h = a.hidden_size
    out: list[Tensor] = [Tensor("token_embd", "output" if a.tie_word_embeddings else "token_embd", -1,
                                a.vocab_size * h, h)]
    if not a.tie_word_embeddings:
        out.insert(0, Tensor("output", "output", -1, a.vocab_size * h, h))
    moe = set(a.moe_layers) if a.is_moe else set()
    kinds = a.layer_types or ("full",) * a.num_layers
    dense_ff = a.dense_intermediate_size or a.intermediate_size
    for i in range(a.num_layers):
        block: list[Tensor] = []
        kind = kinds[i] if i < len(kinds) else "full"
        if kind == "linear":  # DeciLM replace_with_linear: one hidden x hidden linear (llama.cpp: attn_output)
            block.append(Tensor("attn_output", "attn_output", i, h * h, h))
        elif kind == "recurrent":  # linear attention / SSM mixer: llama.cpp ssm_in / ssm_out, no category (base type)
            for role, n in a.recurrent_params:
                if role in ("ssm_in", "ssm_out") and n:
                    block.append(Tensor(role, "other", i, n, h if role == "ssm_in" else n // h))
        elif kind != "none":
            if a.is_mla:
                nope, rope, v = a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim
                if a.q_lora_rank:
                    block += [Tensor("attn_q", "other", i, h * a.q_lora_rank, h),
                              Tensor("attn_q", "other", i, a.q_lora_rank * a.num_heads * (nope + rope), a.q_lora_rank)]
                else:
                    block.append(Tensor("attn_q", "attn_q", i, h * a.num_heads * (nope + rope), h))
                block += [Tensor("attn_k", "other", i, h * (a.kv_lora_rank + rope), h),
                          Tensor("attn_v", "other", i, a.num_heads * nope * a.kv_lora_rank, nope),
                          Tensor("attn_v", "other", i, a.num_heads * v * a.kv_lora_rank, a.kv_lora_rank)]
            elif a.per_kind_attention:  # Gemma 4: global layers' own head size / KV heads, no k / v where shared
                d, kvh, has_k, has_v = a.attention_shape(i)
                block.append(Tensor("attn_q", "attn_q", i, h * a.num_heads * d, h))
                block += [Tensor("attn_k", "attn_k", i, h * kvh * d, h)] if has_k else []
                block += [Tensor("attn_v", "attn_v", i, h * kvh * d, h)] if has_v else []
            else:
                block += [Tensor("attn_q", "attn_q", i, h * a.q_dim, h),
                          Tensor("attn_k", "attn_k", i, h * a.num_kv_heads * a.head_dim, h),
                          Tensor("attn_v", "attn_v", i, h * a.num_kv_heads * (a.v_head_dim or a.head_dim), h)]
            out_dim = a.num_heads * a.attention_shape(i)[0] if a.per_kind_attention else a.attn_out_dim
            block.append(Tensor("attn_output", "attn_output", i, out_dim * h, out_dim))
        if i in moe:
            experts, ff, shared = a.num_experts, a.moe_intermediate_size, a.shared_expert_intermediate_size
            parts = [(experts * ff, ff)] + ([(shared, shared)] if shared else [])  # _exps before _shexp
        else:
            ff = a.ffn_sizes[i] if a.ffn_sizes else dense_ff
            parts = [(ff, ff)] if ff else []
        for role in ("ffn_down", "ffn_gate", "ffn_up"):
            if role == "ffn_gate" and not a.gated_mlp:
                continue
            for width, inner in parts:
                block.append(Tensor(role, role, i, width * h, inner if role == "ffn_down" else h))
        out += block
    return out


def _model_facts(rules: GgufRules, a: Architecture, mix: Mix) -> dict[str, float]:
    n_gqa = a.num_heads // max(a.num_kv_heads, 1)
    facts = {"blocks": a.num_layers, "n_gqa": n_gqa, "n_expert": a.num_experts, "imatrix": int(mix.imatrix),
             "falcon": int(a.model_type in rules.falcon_model_types), "base_block": rules.types[mix.base].block}
    test = rules.model_70b.get(a.model_type)
    facts["model_70b"] = int(bool(test({"blocks": a.num_layers, "n_gqa": n_gqa}))) if test else 0
    return facts


def tensor_types(rules: GgufRules, fmt_key: str, a: Architecture) -> list[tuple[Tensor, str]]:
    """Each tensor with the ggml type llama-quantize gives it in format ``fmt_key``."""
    mix = rules.mixes[fmt_key]
    facts = _model_facts(rules, a, mix)
    out = []
    for t, index, count, layer in _counted(rules, a):
        chosen = mix.base
        rules_here = mix.rules.get(t.category, ())
        if rules_here:
            v = dict(facts, index=index, count=count, layer=layer, ncols=t.ncols)
            needed = mix.needs.get(t.category, ())
            for name, fn, _reads in rules.derived:  # only the derived variables these rules read
                if name in needed:
                    v[name] = fn(v)
            for cond, ggml in rules_here:
                if cond is None or cond(v):
                    chosen = ggml
                    break
        out.append((t, _fallback(rules, chosen, t.ncols)))
    return out


def _counted(rules: GgufRules, a: Architecture) -> list[tuple[Tensor, int, int, int]]:
    """Each tensor with llama-quant.cpp's counters: its index within its category, the count the rules
    compare it to (qs.n_attention_wv for attn_v, n_layer for the ffn counters) and layer_info()'s layer."""
    hit = rules.listed.get(a)
    if hit is not None:
        return hit
    listed = tensors(a)
    totals: dict[str, int] = {}
    for t in listed:
        totals[t.category] = totals.get(t.category, 0) + 1
    counters: dict[str, int] = {}
    out = []
    for t in listed:
        index = counters.get(t.category, 0)
        counters[t.category] = index + 1
        count = totals[t.category] if t.category == "attn_v" else a.num_layers
        layer = t.block if a.num_experts > 1 else index  # from the tensor's name only with experts
        out.append((t, index, count, layer))
    if len(rules.listed) > 256:
        rules.listed.clear()
    rules.listed[a] = out
    return out


def _fallback(rules: GgufRules, ggml: str, ncols: int) -> str:
    """tensor_type_fallback: a row that is no whole number of blocks takes the fallback type, else F16."""
    t = rules.types[ggml]
    if ncols % t.block == 0:
        return ggml
    if t.fallback and ncols % rules.types[t.fallback].block == 0:
        return t.fallback
    return "f16"


def role_bits(rules: GgufRules, fmt_key: str, a: Architecture) -> dict[str, float]:
    """Bits per parameter by role for ``a`` stored in GGUF format ``fmt_key`` (``default``: the base type).

    Each role's bits are its tensors' bytes over their parameters, so the weights formulas'
    params x bits / 8 gives the file's bytes exactly. Cached per (format, architecture).
    """
    key = (fmt_key, a)
    hit = rules.cache.get(key)
    if hit is not None:
        return hit
    mix = rules.mixes[fmt_key]
    bits: dict[str, float] = {}
    params: dict[str, int] = {}
    for t, ggml in tensor_types(rules, fmt_key, a):
        bits[t.role] = bits.get(t.role, 0.0) + t.params * rules.types[ggml].bits
        params[t.role] = params.get(t.role, 0) + t.params
    out = {"default": rules.types[mix.base].bits}
    out.update({role: bits[role] / params[role] for role in bits if params[role]})
    for role, ggml in FIXED_ROLE_TYPES.items():
        out[role] = rules.types[ggml].bits
    out["vision"] = 16.0  # the mmproj file is not part of this one (and llama.cpp loads it separately)
    if len(rules.cache) > 4096:
        rules.cache.clear()
    rules.cache[key] = out
    return out


def format_bits(rules: GgufRules, fmt, a: Architecture) -> dict[str, float]:
    """Bits per parameter by role for ``a`` in quantization format entry ``fmt``: a GGUF file type's
    per-tensor choices, or the format's fixed ``bits``."""
    if fmt.key in rules.mixes:
        return role_bits(rules, fmt.key, a)
    return fmt.data["bits"]
