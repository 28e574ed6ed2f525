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
group is checked for every config. A new family adds its group to :data:`FAMILY_KEYS` (and its
nested objects' keys to :data:`VISION_KEYS` / :data:`AUDIO_KEYS`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: Ceilings shared by several keys.
MAX_LAYERS = 4096            # record: 126 layers (Llama 3.1 405B)
MAX_WIDTH = 1 << 20          # record hidden size: 16,384 (Llama 3.1 405B)
MAX_FFN = 1 << 22            # record FFN width: 53,248 (Llama 3.1 405B)
MAX_HEADS = 16384            # record: 232 heads (Falcon-180B)
MAX_HEAD_DIM = 16384         # record: 256 (Gemma 2/3)
MAX_VOCAB = 1 << 24          # record: 262,208 (Gemma 3)
MAX_CONTEXT = 1 << 30        # record: 10,485,760 tokens (Llama 4 Scout)
MAX_EXPERTS = 65536          # record: 896 routed experts (Kimi K3)
MAX_RANK = 65536             # record MLA rank: 1,536 (DeepSeek-V3 q_lora_rank)
MAX_STATE = 65536            # record SSM state size: 256 (Granite 4.0-H mamba_d_state)
MAX_KERNEL = 1024            # record causal-conv kernel: 4 (Mamba, Qwen3-Next)
MAX_SMALL = 1024             # small counts: channels, tiles, AltUp inputs, merge sizes
MAX_NAME = 200               # characters of a model_type, a layer type, an encoder name
MAX_TEXT = 1000              # characters of any other string key read (a model name)


@dataclass(frozen=True)
class Key:
    """One config key.

    ``kind``: ``int``, ``number`` (a finite int or float), ``bool``, ``str``, ``object`` (whose keys
    ``fields`` lists, if given), ``object_list`` (a list of such objects), ``int_list``, ``str_list``,
    ``int_lists`` (a list of lists of ints), ``int_or_list`` (an int or a list of ints),
    ``int_or_auto`` or ``int_or_pattern`` (an int, or a string of L and G letters). ``lo``/``hi`` bound
    a number (or every int of a list); ``record`` names the largest real value; ``max_len`` bounds a
    string or a list.
    """

    kind: str
    lo: float = 0
    hi: float = 0
    record: str = ""
    max_len: int = MAX_LAYERS
    fields: dict[str, Key] | None = field(default=None, compare=False, hash=False)


def _count(lo: int, hi: int, record: str) -> Key:
    return Key("int", lo, hi, record)


_LAYERS = _count(1, MAX_LAYERS, "126 (Llama 3.1 405B)")
_HIDDEN = _count(1, MAX_WIDTH, "16,384 (Llama 3.1 405B)")
_FFN = _count(1, MAX_FFN, "53,248 (Llama 3.1 405B)")
_HEADS = _count(1, MAX_HEADS, "232 (Falcon-180B)")
_HEAD_DIM = _count(1, MAX_HEAD_DIM, "256 (Gemma 2/3)")
_VOCAB = _count(1, MAX_VOCAB, "262,208 (Gemma 3)")
_CONTEXT = _count(1, MAX_CONTEXT, "10,485,760 (Llama 4 Scout)")
_EXPERTS = _count(0, MAX_EXPERTS, "512 (Qwen3-Next)")
_TOP_K = _count(0, MAX_EXPERTS, "10 (Qwen3-Next)")
_STEP = _count(1, MAX_LAYERS, "8 (Jamba attn_layer_period)")
_OFFSET = _count(0, MAX_LAYERS, "4 (Jamba attn_layer_offset)")
_KERNEL = _count(1, MAX_KERNEL, "4 (Mamba, Qwen3-Next)")
_STATE = _count(1, MAX_STATE, "256 (Granite 4.0-H)")
_TOKENS = _count(0, 1 << 20, "576 (LLaVA-1.5 image_seq_length)")
_LAYER_INDICES = Key("int_list", 0, MAX_LAYERS - 1)
_FLAG = Key("bool")
_NAME = Key("str", max_len=MAX_NAME)
#: Keys of a ``rope_scaling`` / ``rope_parameters`` object the engine reads.
_ROPE_KEYS: dict[str, Key] = {
    "rope_type": _NAME, "type": _NAME,
    "factor": Key("number", 0, 1024, "40 (DeepSeek-V3)"),
    "original_max_position_embeddings": _CONTEXT,
    "partial_rotary_factor": Key("number", 0, 1, "0.25 (Qwen3-Next)"),
}

#: Keys of every family: transformers' ``PretrainedConfig`` names and their GPT-2 / Falcon / T5 spellings.
COMMON_KEYS: dict[str, Key] = {
    "model_type": _NAME,
    "_name_or_path": Key("str", max_len=MAX_TEXT),
    "hidden_size": _HIDDEN, "n_embd": _HIDDEN, "d_model": _HIDDEN,
    "num_hidden_layers": _LAYERS, "n_layer": _LAYERS, "num_layers": _LAYERS, "n_layers": _LAYERS,
    "num_attention_heads": _HEADS, "n_head": _HEADS, "num_heads": _HEADS,
    "vocab_size": _VOCAB, "padded_vocab_size": _VOCAB,
    # an int, or one width per layer (Gemma 3n)
    "intermediate_size": Key("int_or_list", 1, MAX_FFN, "53,248 (Llama 3.1 405B)"),
    "ffn_dim": _FFN, "n_inner": _FFN, "ffn_hidden_size": _FFN,
    "head_dim": _HEAD_DIM,
    "max_position_embeddings": _CONTEXT, "n_positions": _CONTEXT, "max_seq_len": _CONTEXT,
    "tie_word_embeddings": _FLAG, "attention_bias": _FLAG, "qkv_bias": _FLAG, "mlp_bias": _FLAG,
    "lm_head_bias": _FLAG,
}

#: Keys a family introduced, by family.
FAMILY_KEYS: dict[str, dict[str, Key]] = {
    # grouped-query / multi-query attention (Llama 2 70B, Falcon, GPT-BigCode)
    "gqa": {"num_key_value_heads": _HEADS, "num_kv_heads": _HEADS, "n_head_kv": _HEADS, "multi_query": _FLAG},
    # sliding-window attention: Mistral, Gemma 2/3 (layer_types or sliding_window_pattern), Cohere 2, Qwen 2
    "sliding_window": {
        "sliding_window": _count(0, MAX_CONTEXT, "131,072 (Qwen 2.5)"),
        "use_sliding_window": _FLAG,
        # every n-th layer global (Gemma 3: 6), or EXAONE 4.0's letters, L local and G global ("LLLG")
        "sliding_window_pattern": Key("int_or_pattern", 1, MAX_LAYERS, "6 (Gemma 3); \"LLLG\" (EXAONE 4.0)"),
        "layer_types": Key("str_list", max_len=MAX_LAYERS),
    },
    # soft-capped attention scores and output logits: Gemma 2 (cap x tanh(x / cap); null turns it off)
    "softcap": {
        "attn_logit_softcapping": Key("number", 0, 1e6, "50.0 (Gemma 2)"),
        "final_logit_softcapping": Key("number", 0, 1e6, "30.0 (Gemma 2)"),
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
        "moe_layers": _LAYER_INDICES,
        "mlp_only_layers": _LAYER_INDICES,
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
    # DeepSeek V3.2: the lightning indexer of its sparse attention
    "dsa": {
        "index_n_heads": _HEADS, "index_head_dim": _HEAD_DIM,
        "index_topk": _count(0, MAX_CONTEXT, "2,048 (DeepSeek-V3.2)"),
        # GLM-5.x (glm_moe_dsa): "shared" layers reuse an earlier layer's top-k and have no indexer of their own
        "indexer_types": Key("str_list", max_len=MAX_LAYERS),
        "index_topk_freq": _count(1, MAX_LAYERS, "4 (GLM-5.2)"),
        "index_skip_topk_offset": _count(0, MAX_LAYERS, "3 (GLM-5.2)"),
    },
    # Kimi Linear: Kimi Delta Attention layers (linear_attn_config), KimiLinearConfig's MoE spellings; Kimi K3's latent
    # MoE, gated MLA output and Attention Residuals
    "kimi_linear": {
        "linear_attn_config": Key("object", fields={
            "head_dim": _HEAD_DIM, "num_heads": _HEADS, "short_conv_kernel_size": _KERNEL,
            "kda_layers": Key("int_list", 1, MAX_LAYERS, "20 of 27 (Kimi Linear)", max_len=MAX_LAYERS),
            "full_attn_layers": Key("int_list", 1, MAX_LAYERS, "7 of 27 (Kimi Linear)", max_len=MAX_LAYERS),
            "use_full_rank_gate": _FLAG,
        }),
        "num_experts_per_token": _TOP_K, "num_shared_experts": _count(0, MAX_EXPERTS, "1 (Kimi Linear)"),
        "model_max_length": _CONTEXT,
        "routed_expert_hidden_size": _count(1, MAX_WIDTH, "3,584 (Kimi K3)"), "latent_moe_use_norm": _FLAG,
        "attn_res_block_size": _count(0, MAX_LAYERS, "12 (Kimi K3); 0 = off"), "mla_use_output_gate": _FLAG,
    },
    # DeepSeek V4: compressed attention, the grouped low-rank output projection, hyper-connections, hash routing
    "deepseek_v4": {
        "compress_ratios": Key("int_list", 0, MAX_RANK, "128 (DeepSeek-V4)", max_len=MAX_LAYERS + 8),
        "o_lora_rank": _count(1, MAX_RANK, "1,024 (DeepSeek-V4)"),
        "o_groups": _count(1, MAX_HEADS, "16 (DeepSeek-V4-Pro)"),
        "hc_mult": _count(1, 64, "4 (DeepSeek-V4)"),
        "num_hash_layers": _count(0, MAX_LAYERS, "3 (DeepSeek-V4)"),
    },
    # Llama 4: chunked attention on RoPE layers, every n-th layer global
    "llama4": {
        "attention_chunk_size": _count(0, MAX_CONTEXT, "8,192 (Llama 4)"),
        "no_rope_layers": Key("int_list", 0, 1),
        "no_rope_layer_interval": _count(1, MAX_LAYERS, "4 (Llama 4)"),
    },
    # rotary embeddings: the part of each head they turn and the positions the scaling covers (the cos/sin tables
    # vLLM precomputes, architecture._rope_table_elements); nested keys other than these are not read
    "rope": {
        "partial_rotary_factor": Key("number", 0, 1, "0.25 (Qwen3-Next)"),
        "rotary_pct": Key("number", 0, 1, "0.25 (GPT-NeoX)"),
        "rotary_dim": _count(1, MAX_HEAD_DIM, "64 (MiniMax-M2)"),
        "original_max_position_embeddings": _CONTEXT,
        "position_embedding_type": _NAME,
        "rope_scaling": Key("object", fields=_ROPE_KEYS),
        "rope_parameters": Key("object", fields={**_ROPE_KEYS, "full_attention": Key("object", fields=_ROPE_KEYS),
                                                 "sliding_attention": Key("object", fields=_ROPE_KEYS)}),
    },
    # Cohere: q/k norm switched by a key
    "cohere": {"use_qk_norm": _FLAG},
    # DeciLM / Nemotron NAS (Llama-3.3-Nemotron-Super): per-layer attention and FFN shapes
    "decilm": {"block_configs": Key("object_list", max_len=MAX_LAYERS, fields={
        "attention": Key("object", fields={"no_op": _FLAG, "replace_with_linear": _FLAG,
                                           "n_heads_in_group": _count(1, MAX_HEADS, "8 (Llama-3.3-Nemotron-Super)")}),
        "ffn": Key("object", fields={"no_op": _FLAG, "replace_with_linear": _FLAG,
                                     "ffn_mult": Key("number", 0, 1024, "5.25 (Llama-3.3-Nemotron-Super)")}),
    })},
    # Qwen3-Next, Qwen3.5 / 3.6: gated DeltaNet linear attention
    "qwen3_next": {
        "linear_conv_kernel_dim": _KERNEL,
        "linear_key_head_dim": _HEAD_DIM, "linear_value_head_dim": _HEAD_DIM,
        "linear_num_key_heads": _HEADS, "linear_num_value_heads": _HEADS,
        "full_attention_interval": _count(1, MAX_LAYERS, "4 (Qwen3-Next)"), "mamba_ssm_dtype": _NAME,
    },
    # Mamba / Mamba2 mixers: Granite 4.0-H, Jamba, Falcon-H1 (mamba_*), Nemotron-H (its own spellings)
    "mamba": {
        "mamba_n_heads": _HEADS, "mamba_n_groups": _HEADS, "mamba_d_state": _STATE, "mamba_d_conv": _KERNEL,
        "mamba_expand": _count(1, MAX_SMALL, "2 (Mamba)"), "mamba_conv_bias": _FLAG, "mamba_proj_bias": _FLAG,
        "mamba_d_ssm": _count(1, MAX_WIDTH, "1,024 (FalconH1Config default)"), "mamba_rms_norm": _FLAG, "projectors_bias": _FLAG,
        "mamba_d_head": Key("int_or_auto", 1, MAX_HEAD_DIM, "64 (Granite 4.0-H)"),
        "mamba_dt_rank": Key("int_or_auto", 1, MAX_WIDTH, "256 (Jamba)"),
        "shared_intermediate_size": _count(0, MAX_FFN, "1,024 (Granite 4.0-H)"),
        "layers_block_type": Key("str_list", max_len=MAX_LAYERS),
        "hybrid_override_pattern": Key("str", max_len=MAX_LAYERS),
        "mamba_num_heads": _HEADS, "mamba_head_dim": _HEAD_DIM, "n_groups": _HEADS, "ssm_state_size": _STATE,
        "conv_kernel": _KERNEL, "use_conv_bias": _FLAG, "use_bias": _FLAG, "attention_head_dim": _HEAD_DIM,
        "moe_shared_expert_intermediate_size": _count(0, MAX_FFN, "3,712 (Nemotron 3 Nano)"),
        "mamba_ssm_cache_dtype": _NAME,
        "attn_layer_period": _STEP, "attn_layer_offset": _OFFSET,
        "expert_layer_period": _STEP, "expert_layer_offset": _OFFSET,
    },
    # ERNIE 4.5 MoE (Baidu): its own expert spellings and the layer range that routes
    "ernie4_5_moe": {
        "moe_num_experts": _EXPERTS, "moe_k": _TOP_K,
        "moe_num_shared_experts": _count(0, MAX_EXPERTS, "2 (ERNIE-4.5-21B-A3B)"),
        "moe_layer_start_index": _count(0, MAX_LAYERS, "3 (ERNIE-4.5-300B-A47B)"),
        "moe_layer_end_index": _count(-1, MAX_LAYERS, "53 (ERNIE-4.5-300B-A47B); -1 the last layer"),
        "moe_layer_interval": _STEP,
        "use_bias": _FLAG,
    },
    # LFM2 / LFM2-MoE (Liquid AI): short-convolution layers beside attention, an FFN width the model adjusts
    "lfm2": {
        "block_ff_dim": _FFN,
        "block_multiple_of": _count(1, MAX_FFN, "256 (LFM2)"),
        "block_ffn_dim_multiplier": Key("number", 0.01, 1024, "1.0 (LFM2)"),
        "block_auto_adjust_ff_dim": _FLAG,
        "conv_L_cache": _KERNEL,
        "conv_bias": _FLAG,
        "full_attn_idxs": _LAYER_INDICES,
        "num_dense_layers": _count(0, MAX_LAYERS, "2 (LFM2-8B-A1B)"),
        "tie_embedding": _FLAG,
    },
    # Gemma 3n: per-layer embeddings, AltUp, LAuReL, KV sharing (Gemma 4 too: hidden_size_per_layer_input 0 = no
    # per-layer embeddings, as Gemma 4 31B states it)
    "gemma3n": {
        "hidden_size_per_layer_input": _count(0, MAX_WIDTH, "256 (Gemma 3n, Gemma 4 E2B / E4B)"),
        "vocab_size_per_layer_input": _VOCAB,
        "altup_num_inputs": _count(1, MAX_SMALL, "4 (Gemma 3n)"),
        "laurel_rank": _count(1, MAX_RANK, "64 (Gemma 3n)"),
        "num_kv_shared_layers": _count(0, MAX_LAYERS, "15 (Gemma 3n E4B)"),
    },
    # Gemma 4: global layers with heads of their own, keys reused as values, an MoE block beside the MLP, wider MLPs in
    # the KV-sharing layers (transformers configuration_gemma4.py Gemma4TextConfig)
    "gemma4": {
        "global_head_dim": _HEAD_DIM,
        "num_global_key_value_heads": _HEADS,
        "attention_k_eq_v": _FLAG,
        "enable_moe_block": _FLAG,
        "top_k_experts": _TOP_K,
        "use_double_wide_mlp": _FLAG,
        "use_bidirectional_attention": _NAME,
    },
    # Llama 3.2 Vision: text layers that cross-attend to the image
    "mllama": {"cross_attention_layers": _LAYER_INDICES},
    # multimodal configs: Pixtral's patch merger and the image tokens per image sit at the top level
    "multimodal": {
        "spatial_merge_size": _count(1, 64, "2 (Mistral 3)"),
        "mm_tokens_per_image": _TOKENS, "vision_soft_tokens_per_image": _TOKENS, "image_seq_length": _TOKENS,
    },
}

#: ``vision_config`` keys (SigLIP, CLIP, Pixtral, Llama 4 and Llama 3.2 vision encoders, Gemma 3n's timm one, Gemma 4's).
VISION_KEYS: dict[str, Key] = {
    "model_type": _NAME,
    "architecture": _NAME,
    "hidden_size": _HIDDEN,
    "intermediate_size": _FFN,
    "num_hidden_layers": _LAYERS, "depth": _LAYERS,
    "num_global_layers": _count(0, MAX_LAYERS, "8 (Llama 3.2 Vision)"),
    "num_channels": _count(1, MAX_SMALL, "3 (RGB)"),
    "patch_size": _count(1, 65536, "16 (Pixtral)"),
    "image_size": _count(0, 65536, "1,540 (Pixtral 12B)"),
    "max_num_tiles": _count(1, MAX_SMALL, "4 (Llama 3.2 Vision)"),
    "supported_aspect_ratios": Key("int_lists", 1, MAX_SMALL, max_len=MAX_SMALL),
    "vocab_size": _VOCAB,
    "projector_input_dim": _FFN, "projector_output_dim": _FFN, "vision_output_dim": _FFN,
    # the Qwen3-VL tower (Qwen3-VL, Qwen3.5 / 3.6)
    "in_channels": _count(1, MAX_SMALL, "3 (RGB)"),
    "temporal_patch_size": _count(1, MAX_SMALL, "2 (Qwen3-VL)"),
    "spatial_merge_size": _count(1, 64, "2 (Mistral 3)"),
    "out_hidden_size": _HIDDEN,
    "num_position_embeddings": _count(1, 1 << 24, "2,304 (Qwen3-VL)"),
    "deepstack_visual_indexes": Key("int_list", 0, MAX_LAYERS - 1, max_len=MAX_LAYERS),
    # Gemma 4's encoder (gemma4_vision): its attention shape, the learned 2-D position table, clipped linears' bounds,
    # the soft-token standardization
    "num_attention_heads": _HEADS, "num_key_value_heads": _HEADS, "head_dim": _HEAD_DIM,
    "position_embedding_size": _count(1, 1 << 20, "10,240 (Gemma 4)"),
    "use_clipped_linears": _FLAG, "standardize": _FLAG,
    # Kimi K3's MoonViT3d tower and PatchMergerMLPV2 projector (vramplan.families._kimi_k3_vision)
    "vt_hidden_size": _HIDDEN, "vt_intermediate_size": _FFN, "vt_num_hidden_layers": _LAYERS,
    "vt_num_attention_heads": _HEADS, "qkv_hidden_size": _count(1, MAX_WIDTH, "1,536 (Kimi K3)"),
    "init_pos_emb_height": _count(1, 65536, "64 (Kimi K3)"), "init_pos_emb_width": _count(1, 65536, "64 (Kimi K3)"),
    "merge_kernel_size": Key("int_or_list", 1, 64, "[2, 2] (Kimi K3)", max_len=2),
    "mm_hidden_size": _HIDDEN, "text_hidden_size": _HIDDEN,
    "attn_bias": _FLAG, "linear_bias": _FLAG, "patch_embed_proj_bias": _FLAG,
    "norm_type": _NAME, "mlp_type": _NAME, "mm_projector_type": _NAME, "merge_type": _NAME, "pos_emb_type": _NAME,
}

#: ``audio_config`` keys (Gemma 3n's and Gemma 4's conformer encoders).
AUDIO_KEYS: dict[str, Key] = {
    "hidden_size": _HIDDEN, "vocab_size": _VOCAB,
    "conf_num_attention_heads": _HEADS, "conf_num_hidden_layers": _LAYERS,
    "conf_conv_kernel_size": _KERNEL, "input_feat_size": _count(1, 65536, "128 (Gemma 3n)"),
    "sscp_conv_channel_size": Key("int_list", 1, MAX_WIDTH, max_len=MAX_SMALL),
    "sscp_conv_kernel_size": Key("int_lists", 1, MAX_KERNEL, max_len=MAX_SMALL),
    "sscp_conv_stride_size": Key("int_lists", 1, MAX_KERNEL, max_len=MAX_SMALL),
    # Gemma 4's conformer (gemma4_audio)
    "num_hidden_layers": _LAYERS, "num_attention_heads": _HEADS, "conv_kernel_size": _KERNEL,
    "subsampling_conv_channels": Key("int_list", 1, MAX_WIDTH, max_len=MAX_SMALL),
    "output_proj_dims": _HIDDEN, "use_clipped_linears": _FLAG,
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
CONFIG_KEYS["vision_config"] = Key("object", fields=VISION_KEYS)
CONFIG_KEYS["audio_config"] = Key("object", fields=AUDIO_KEYS)
CONFIG_KEYS["text_config"] = Key("object", fields=CONFIG_KEYS)  # the language model of a multimodal config


def show(value: Any) -> str:
    """A short rendering of a hostile value for a message (never a 400-digit number)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        return f"an integer of {len(str(abs(value)))} digits" if abs(value) < 10**4000 else "a huge integer"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _bound(n: float) -> str:
    return f"{n:,}" if isinstance(n, int) or float(n).is_integer() else f"{n:g}"


def _number_problem(value: Any, key: Key, integer: bool = True) -> str | None:
    # an int of any size is finite (math.isfinite would overflow converting a 400-digit one to float)
    ok = isinstance(value, int) if integer else isinstance(value, int) or isinstance(value, float) and math.isfinite(value)
    if isinstance(value, bool) or not ok:
        what = "an integer" if integer else "a number"
        return f"must be {what} from {_bound(int(key.lo))} to {_bound(int(key.hi))}, got {show(value)}"
    if value < key.lo:
        return f"must be at least {_bound(key.lo)}, got {show(value)}"
    if value > key.hi:
        record = f" (largest real: {key.record})" if key.record else ""
        return f"{show(value)} is above {_bound(key.hi)}, a limit no real model comes near{record}"
    return None


def _list_problem(value: Any, key: Key, item_problem) -> str | None:
    if not isinstance(value, list):
        return f"must be a list, got {show(value)}"
    if len(value) > key.max_len:
        return f"has {len(value):,} items; at most {key.max_len:,}"
    for i, item in enumerate(value):
        bad = item_problem(item)
        if bad:
            return f"item {i}: {bad}"
    return None


def key_problem(value: Any, key: Key) -> str | None:
    """What is wrong with ``value`` for ``key`` (nested objects aside: see :func:`check_keys`), or None."""
    kind = key.kind
    if kind == "int":
        return _number_problem(value, key)
    if kind == "number":
        return _number_problem(value, key, integer=False)
    if kind == "bool":
        return None if isinstance(value, bool) else f"must be true or false, got {show(value)}"
    if kind == "str":
        if not isinstance(value, str):
            return f"must be a string, got {show(value)}"
        return None if len(value) <= key.max_len else f"is {len(value):,} characters long; at most {key.max_len:,}"
    if kind == "object":
        return None if isinstance(value, dict) else f"must be an object, got {show(value)}"
    if kind == "object_list":
        return _list_problem(value, key, lambda item: None if isinstance(item, dict) else f"must be an object, got {show(item)}")
    if kind == "int_list":
        return _list_problem(value, key, lambda item: _number_problem(item, key))
    if kind == "str_list":
        return _list_problem(value, key, lambda item: None if isinstance(item, str) and len(item) <= MAX_NAME
                             else f"must be a short string (a layer type), got {show(item)}")
    if kind == "int_lists":
        inner = Key("int_list", key.lo, key.hi, max_len=key.max_len)
        return _list_problem(value, key, lambda item: key_problem(item, inner))
    if kind == "int_or_list":
        return key_problem(value, Key("int_list", key.lo, key.hi, key.record)) if isinstance(value, list) \
            else _number_problem(value, key)
    if kind == "int_or_auto":
        return None if value == "auto" else _number_problem(value, key)
    if kind == "int_or_pattern":
        if isinstance(value, str):
            ok = 0 < len(value) <= key.max_len and set(value) <= {"L", "G"}
            return None if ok else f"must be an integer or a pattern of L (local) and G (global) letters, got {show(value)}"
        return _number_problem(value, key)
    raise ValueError(f"unknown key kind {kind!r}")  # pragma: no cover - a table error


#: Objects nest at most this deep (text_config in text_config…); deeper ones are refused, not walked.
MAX_NESTING = 8


def check_keys(config: dict, table: dict[str, Key], where: str, depth: int = 0) -> list[tuple[str, str]]:
    """``(key path, problem)`` for every key of ``table`` that ``config`` holds with a wrong type or
    out of range, nested objects included. ``null`` is absent, as config.json files write it."""
    problems = []
    for name, key in table.items():
        value = config.get(name)
        if value is None:
            continue
        at = f"{where}.{name}"
        bad = key_problem(value, key)
        if bad:
            problems.append((at, bad))
        elif key.fields is not None and key.kind in ("object", "object_list"):
            if depth >= MAX_NESTING:
                problems.append((at, f"nests more than {MAX_NESTING} objects deep"))
            elif key.kind == "object":
                problems += check_keys(value, key.fields, at, depth + 1)
            else:
                for i, item in enumerate(value):
                    problems += check_keys(item, key.fields, f"{at}[{i}]", depth + 1)
    return problems


def check_config(config: dict, where: str) -> list[tuple[str, str]]:
    """Every problem in a config.json object: its keys, ``text_config``, ``vision_config`` and ``audio_config``."""
    return check_keys(config, CONFIG_KEYS, where)


def largest_config() -> dict:
    """A config.json with every count at its ceiling: the largest custom model a request may carry
    (a mixture of experts, so that every MoE path is taken). Tests and benchmarks time it."""
    return {"model_type": "mixtral", "hidden_size": MAX_WIDTH, "num_hidden_layers": MAX_LAYERS,
            "num_attention_heads": MAX_HEADS, "num_key_value_heads": MAX_HEADS, "head_dim": MAX_HEAD_DIM,
            "intermediate_size": MAX_FFN, "vocab_size": MAX_VOCAB, "max_position_embeddings": MAX_CONTEXT,
            "num_local_experts": MAX_EXPERTS, "num_experts_per_tok": MAX_EXPERTS, "moe_intermediate_size": MAX_FFN,
            "tie_word_embeddings": False}


def _key_schema(key: Key, depth: int = 0) -> dict:
    # (no maxItems on per-layer lists: more than MAX_LAYERS items do not fit the API's 64 KiB body,
    # which answers 413 first)
    kind = key.kind
    if kind in ("int", "number"):
        return {"type": ["integer" if kind == "int" else "number", "null"], "minimum": key.lo, "maximum": key.hi}
    if kind == "int_list":
        return {"type": ["array", "null"], "items": {"type": "integer", "minimum": key.lo, "maximum": key.hi}}
    if kind == "int_lists":
        return {"type": ["array", "null"],
                "items": {"type": "array", "items": {"type": "integer", "minimum": key.lo, "maximum": key.hi}}}
    if kind == "str_list":
        return {"type": ["array", "null"], "items": {"type": "string", "maxLength": MAX_NAME}}
    if kind == "int_or_list":
        return {"anyOf": [{"type": "integer", "minimum": key.lo, "maximum": key.hi},
                          {"type": "array", "items": {"type": "integer", "minimum": key.lo, "maximum": key.hi}},
                          {"type": "null"}]}
    if kind == "int_or_auto":
        return {"anyOf": [{"type": "integer", "minimum": key.lo, "maximum": key.hi}, {"const": "auto"}, {"type": "null"}]}
    if kind == "int_or_pattern":
        return {"anyOf": [{"type": "integer", "minimum": key.lo, "maximum": key.hi},
                          {"type": "string", "pattern": "^[LG]+$", "maxLength": key.max_len}, {"type": "null"}]}
    if kind == "str":
        return {"type": ["string", "null"], "maxLength": key.max_len}
    if kind in ("object", "object_list") and key.fields is not None and depth < 2:
        obj = {"type": "object", "properties": {n: _key_schema(k, depth + 1) for n, k in key.fields.items()}}
        return {"type": ["object", "null"], "properties": obj["properties"]} if kind == "object" else \
            {"type": ["array", "null"], "items": obj}
    return {"type": [{"bool": "boolean", "object": "object", "object_list": "array"}[kind], "null"]}


def json_schema() -> dict:
    """The config.json keys the engine reads, as JSON Schema (the API documents ``custom_model`` with
    it; other keys a config.json carries are allowed and ignored)."""
    return {"type": "object", "properties": {n: _key_schema(k) for n, k in CONFIG_KEYS.items()}}
