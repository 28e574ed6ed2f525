"""Every ``config.json`` key the engine reads, with its type and bounds: the guard in front of
:func:`vramplan.architecture.from_hf_config`.

A ``config.json`` is hostile input (a request's ``custom_model``, a file given to ``models
import``), so each key is checked before anything is computed from it: its type (a string where a
count belongs was a 500 with a traceback) and a range that no real model comes near (30,000,000
layers made a worker build a 30-million-item tuple for 7.5 s). The bounds are far above the
largest published models — each entry says which model holds today's record — and low enough
that every product the formulas take of them stays a finite float.

The tables are grouped by the family that introduced the keys. The engine reads every key
whatever ``model_type`` says (a ``llama`` config with ``kv_lora_rank`` is read as MLA), so every
group is checked for every config. A new family adds its group to :data:`FAMILY_KEYS`;
:data:`VISION_KEYS` covers ``vision_config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Ceilings shared by several keys.
MAX_LAYERS = 4096            # record: 126 layers (Llama 3.1 405B)
MAX_WIDTH = 1 << 20          # record hidden size: 16,384 (Llama 3.1 405B)
MAX_FFN = 1 << 22            # record FFN width: 53,248 (Llama 3.1 405B)
MAX_HEADS = 16384            # record: 232 heads (Falcon-180B)
MAX_HEAD_DIM = 16384         # record: 256 (Gemma 2/3)
MAX_VOCAB = 1 << 24          # record: 262,208 (Gemma 3)
MAX_CONTEXT = 1 << 30        # record: 10,485,760 tokens (Llama 4 Scout)
MAX_EXPERTS = 65536          # record: 512 routed experts (Qwen3-Next)
MAX_RANK = 65536             # record MLA rank: 1,536 (DeepSeek-V3 q_lora_rank)
MAX_NAME = 200               # characters of a model_type or a layer type


@dataclass(frozen=True)
class Key:
    """One config key: ``kind`` is ``int``, ``bool``, ``str``, ``object``, ``int_list`` or ``str_list``;
    ``lo``/``hi`` bound an int (or every item of an int list); ``record`` names the largest real value."""

    kind: str
    lo: int = 0
    hi: int = 0
    record: str = ""


def _count(lo: int, hi: int, record: str) -> Key:
    return Key("int", lo, hi, record)


_LAYERS = _count(1, MAX_LAYERS, "126 (Llama 3.1 405B)")
_HIDDEN = _count(1, MAX_WIDTH, "16,384 (Llama 3.1 405B)")
_FFN = _count(1, MAX_FFN, "53,248 (Llama 3.1 405B)")
_HEADS = _count(1, MAX_HEADS, "232 (Falcon-180B)")
_VOCAB = _count(1, MAX_VOCAB, "262,208 (Gemma 3)")
_CONTEXT = _count(1, MAX_CONTEXT, "10,485,760 (Llama 4 Scout)")
_EXPERTS = _count(0, MAX_EXPERTS, "512 (Qwen3-Next)")
_TOP_K = _count(0, MAX_EXPERTS, "10 (Qwen3-Next)")
_STEP = _count(1, MAX_LAYERS, "2 (Llama 4 Maverick)")
_FLAG = Key("bool")

#: Keys of every family: transformers' ``PretrainedConfig`` names and their GPT-2 / Falcon / T5 spellings.
COMMON_KEYS: dict[str, Key] = {
    "model_type": Key("str"),
    "_name_or_path": Key("str"),
    "hidden_size": _HIDDEN, "n_embd": _HIDDEN, "d_model": _HIDDEN,
    "num_hidden_layers": _LAYERS, "n_layer": _LAYERS, "num_layers": _LAYERS, "n_layers": _LAYERS,
    "num_attention_heads": _HEADS, "n_head": _HEADS, "num_heads": _HEADS,
    "vocab_size": _VOCAB, "padded_vocab_size": _VOCAB,
    "intermediate_size": _FFN, "ffn_dim": _FFN, "n_inner": _FFN, "ffn_hidden_size": _FFN,
    "head_dim": _count(1, MAX_HEAD_DIM, "256 (Gemma 2/3)"),
    "max_position_embeddings": _CONTEXT, "n_positions": _CONTEXT, "max_seq_len": _CONTEXT,
    "tie_word_embeddings": _FLAG, "attention_bias": _FLAG, "qkv_bias": _FLAG, "mlp_bias": _FLAG,
    "lm_head_bias": _FLAG,
    "text_config": Key("object"), "vision_config": Key("object"),
}

#: Keys a family introduced, by family.
FAMILY_KEYS: dict[str, dict[str, Key]] = {
    # grouped-query / multi-query attention (Llama 2 70B, Falcon, GPT-BigCode)
    "gqa": {"num_key_value_heads": _HEADS, "num_kv_heads": _HEADS, "n_head_kv": _HEADS, "multi_query": _FLAG},
    # sliding-window attention: Mistral, Gemma 2/3 (layer_types or sliding_window_pattern), Cohere 2, Qwen 2
    "sliding_window": {
        "sliding_window": _count(0, MAX_CONTEXT, "131,072 (Qwen 2.5)"),
        "use_sliding_window": _FLAG,
        "sliding_window_pattern": _count(1, MAX_LAYERS, "6 (Gemma 3)"),
        "layer_types": Key("str_list", 0, MAX_LAYERS),
    },
    # mixture of experts: Mixtral, Qwen-MoE, DeepSeek, Phi-3.5-MoE, gpt-oss, Llama 4
    "moe": {
        "num_local_experts": _EXPERTS, "num_experts": _EXPERTS, "n_routed_experts": _EXPERTS,
        "num_experts_per_tok": _TOP_K, "moe_topk": _TOP_K, "top_k": _TOP_K, "experts_per_token": _TOP_K,
        "moe_intermediate_size": _FFN, "expert_intermediate_size": _FFN,
        "shared_expert_intermediate_size": _count(0, MAX_FFN, "20,480 (Qwen1.5-MoE-A2.7B)"),
        "n_shared_experts": _count(0, MAX_EXPERTS, "2 (DeepSeek-V2)"),
        "first_k_dense_replace": _count(0, MAX_LAYERS, "3 (DeepSeek-V3)"),
        "interleave_moe_layer_step": _STEP, "decoder_sparse_step": _STEP, "moe_layer_freq": _STEP,
        "moe_layers": Key("int_list", 0, MAX_LAYERS - 1),
        "mlp_only_layers": Key("int_list", 0, MAX_LAYERS - 1),
        "intermediate_size_mlp": _FFN,
    },
    # multi-head latent attention: DeepSeek V2/V3, Kimi K2
    "mla": {
        "kv_lora_rank": _count(0, MAX_RANK, "512 (DeepSeek-V3)"),
        "q_lora_rank": _count(0, MAX_RANK, "1,536 (DeepSeek-V3)"),
        "qk_rope_head_dim": _count(0, MAX_HEAD_DIM, "64 (DeepSeek-V3)"),
        "qk_nope_head_dim": _count(0, MAX_HEAD_DIM, "128 (DeepSeek-V3)"),
        "v_head_dim": _count(0, MAX_HEAD_DIM, "128 (DeepSeek-V3)"),
    },
    # Llama 4: chunked attention on RoPE layers, every n-th layer global
    "llama4": {
        "attention_chunk_size": _count(0, MAX_CONTEXT, "8,192 (Llama 4)"),
        "no_rope_layers": Key("int_list", 0, 1),
        "no_rope_layer_interval": _count(1, MAX_LAYERS, "4 (Llama 4)"),
    },
    # Cohere: q/k norm switched by a key
    "cohere": {"use_qk_norm": _FLAG},
    # multimodal configs: Pixtral's patch merger sits at the top level
    "multimodal": {"spatial_merge_size": _count(1, 64, "2 (Mistral 3)")},
}

#: ``vision_config`` keys (SigLIP, CLIP, Pixtral, Llama 4 vision encoders).
VISION_KEYS: dict[str, Key] = {
    "model_type": Key("str"),
    "hidden_size": _HIDDEN,
    "intermediate_size": _FFN,
    "num_hidden_layers": _LAYERS, "depth": _LAYERS,
    "num_channels": _count(1, 1024, "3 (RGB)"),
    "patch_size": _count(1, 65536, "16 (Pixtral)"),
    "image_size": _count(0, 65536, "1,540 (Pixtral 12B)"),
    "projector_input_dim": _FFN, "projector_output_dim": _FFN, "vision_output_dim": _FFN,
}


def _merged() -> dict[str, Key]:
    out = dict(COMMON_KEYS)
    for family, keys in FAMILY_KEYS.items():
        for name, key in keys.items():
            if name in out and out[name] != key:  # one meaning per key, whichever family spells it
                raise RuntimeError(f"config key {name!r} declared twice with different bounds ({family})")
            out[name] = key
    return out


#: Every top-level (or ``text_config``) key the engine reads.
CONFIG_KEYS: dict[str, Key] = _merged()


def show(value: Any) -> str:
    """A short rendering of a hostile value for a message (never a 400-digit number)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        return f"an integer of {len(str(abs(value)))} digits" if abs(value) < 10**4000 else "a huge integer"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _int_problem(value: Any, key: Key) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer from {key.lo:,} to {key.hi:,}, got {show(value)}"
    if value < key.lo:
        return f"must be at least {key.lo:,}, got {show(value)}"
    if value > key.hi:
        record = f" (largest real: {key.record})" if key.record else ""
        return f"{show(value)} is above {key.hi:,}, a limit no real model comes near{record}"
    return None


def key_problem(value: Any, key: Key) -> str | None:
    """What is wrong with ``value`` for ``key``, or None."""
    if key.kind == "int":
        return _int_problem(value, key)
    if key.kind == "bool":
        return None if isinstance(value, bool) else f"must be true or false, got {show(value)}"
    if key.kind == "str":
        if not isinstance(value, str):
            return f"must be a string, got {show(value)}"
        return None if len(value) <= MAX_NAME * 5 else f"is {len(value)} characters long; at most {MAX_NAME * 5}"
    if key.kind == "object":
        return None if isinstance(value, dict) else f"must be an object, got {show(value)}"
    if key.kind in ("int_list", "str_list"):
        if not isinstance(value, list):
            return f"must be a list, got {show(value)}"
        if len(value) > MAX_LAYERS:
            return f"has {len(value):,} items; at most {MAX_LAYERS:,} (one per layer)"
        for i, item in enumerate(value):
            if key.kind == "str_list":
                if not isinstance(item, str) or len(item) > MAX_NAME:
                    return f"item {i} must be a layer type name (a short string), got {show(item)}"
            else:
                bad = _int_problem(item, key)
                if bad:
                    return f"item {i}: {bad}"
        return None
    raise ValueError(f"unknown key kind {key.kind!r}")  # pragma: no cover - a table error


def check_keys(config: dict, table: dict[str, Key], where: str) -> list[tuple[str, str]]:
    """``(key path, problem)`` for every key of ``table`` that ``config`` holds with a wrong type or
    out of range. ``null`` is absent, as config.json files write it."""
    problems = []
    for name, key in table.items():
        value = config.get(name)
        if value is None:
            continue
        bad = key_problem(value, key)
        if bad:
            problems.append((f"{where}.{name}", bad))
    return problems


def check_config(config: dict, where: str) -> list[tuple[str, str]]:
    """Every problem in a config.json object: top-level keys, ``text_config`` and ``vision_config``."""
    problems = check_keys(config, CONFIG_KEYS, where)
    text = config.get("text_config")
    if isinstance(text, dict):
        problems += check_keys(text, CONFIG_KEYS, f"{where}.text_config")
    vision = config.get("vision_config")
    if isinstance(vision, dict):
        problems += check_keys(vision, VISION_KEYS, f"{where}.vision_config")
    return problems


def largest_config() -> dict:
    """A config.json with every count at its ceiling: the largest custom model a request may carry
    (a mixture of experts, so that every MoE path is taken). Tests and benchmarks time it."""
    return {"model_type": "mixtral", "hidden_size": MAX_WIDTH, "num_hidden_layers": MAX_LAYERS,
            "num_attention_heads": MAX_HEADS, "num_key_value_heads": MAX_HEADS, "head_dim": MAX_HEAD_DIM,
            "intermediate_size": MAX_FFN, "vocab_size": MAX_VOCAB, "max_position_embeddings": MAX_CONTEXT,
            "num_local_experts": MAX_EXPERTS, "num_experts_per_tok": MAX_EXPERTS, "moe_intermediate_size": MAX_FFN,
            "tie_word_embeddings": False}


def _key_schema(key: Key) -> dict:
    if key.kind == "int":
        return {"type": ["integer", "null"], "minimum": key.lo, "maximum": key.hi}
    # (no maxItems: more than MAX_LAYERS items do not fit the API's 64 KiB body, which answers 413 first)
    if key.kind == "int_list":
        return {"type": ["array", "null"], "items": {"type": "integer", "minimum": key.lo, "maximum": key.hi}}
    if key.kind == "str_list":
        return {"type": ["array", "null"], "items": {"type": "string", "maxLength": MAX_NAME}}
    return {"type": [{"bool": "boolean", "str": "string", "object": "object"}[key.kind], "null"]}


def json_schema() -> dict:
    """The config.json keys the engine reads, as JSON Schema (the API documents ``custom_model`` with
    it; other keys a config.json carries are allowed and ignored)."""
    text = {"type": ["object", "null"], "properties": {n: _key_schema(k) for n, k in CONFIG_KEYS.items()}}
    props = dict(text["properties"])
    props["text_config"] = text
    props["vision_config"] = {"type": ["object", "null"],
                              "properties": {n: _key_schema(k) for n, k in VISION_KEYS.items()}}
    return {"type": "object", "properties": props}
