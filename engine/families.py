"""Families whose layers are not all alike, read family by family from ``config.json``.

:mod:`vramplan.architecture` reads what every decoder shares (hidden size, heads, MoE, MLA,
sliding windows). The families here add layers the generic reading cannot see, and each one is
read from its own config keys, as its transformers ``*Config`` class and modeling code build it:

- **recurrent mixers** whose per-sequence state does not grow with the context: Qwen3-Next's
  gated DeltaNet (``linear_attention`` layers), the Mamba2 layers of Granite 4.0-H and Nemotron-H and
  the Mamba2 mixer Falcon-H1 runs beside the attention of every layer,
  Jamba's Mamba layers and LFM2's short convolutions (``conv`` layers). Each keeps a causal-conv state
  (the last ``kernel - 1`` or ``kernel`` inputs of ``conv_channels`` channels) and, but for LFM2's, an
  SSM / delta-rule state per layer per sequence;
- **KV sharing** (Gemma 3n): the last ``num_kv_shared_layers`` layers read the cache of the last
  earlier layer of their attention type instead of keeping their own;
- **per-layer embeddings** (Gemma 3n): a second lookup table, ``vocab_size_per_layer_input x
  num_hidden_layers x hidden_size_per_layer_input``, that runtimes may keep off the GPU;
- **cross-attention layers** (Llama 3.2 Vision): their keys and values come from the image
  encoder's tokens, a fixed number per image, not from the text context;
- **image tokens in the context** (Gemma 3, Gemma 3n): each image adds a fixed number of soft
  tokens to the sequence.

:func:`read` returns keyword overrides for :class:`vramplan.architecture.Architecture`;
:func:`normalize` renames the keys a family spells differently before the generic reading. Each
reader cites the code it follows. Layer kinds are ``full``, ``sliding``, ``recurrent``, ``cross``
and ``none`` (a block with no token mixer, Nemotron-H's MLP-only blocks).
"""

from __future__ import annotations

import math
from typing import Any, Callable

#: Config class defaults a family's readers fall back on when a key is missing (the values of the
#: transformers ``*Config.__init__`` signatures cited per family below); each use is reported in
#: ``Architecture.assumed``.
CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    # transformers models/qwen3_next/configuration_qwen3_next.py Qwen3NextConfig
    "qwen3_next": {"linear_conv_kernel_dim": 4, "linear_key_head_dim": 128, "linear_value_head_dim": 128,
                   "linear_num_key_heads": 16, "linear_num_value_heads": 32, "full_attention_interval": 4},
    # transformers models/qwen3_5/configuration_qwen3_5.py Qwen3_5TextConfig and qwen3_5_moe/configuration_qwen3_5_moe.py
    # Qwen3_5MoeTextConfig: the same gated-DeltaNet defaults (full_attention_interval popped from kwargs, default 4)
    "qwen3_5_text": {"linear_conv_kernel_dim": 4, "linear_key_head_dim": 128, "linear_value_head_dim": 128,
                     "linear_num_key_heads": 16, "linear_num_value_heads": 32, "full_attention_interval": 4},
    "qwen3_5_moe_text": {"linear_conv_kernel_dim": 4, "linear_key_head_dim": 128, "linear_value_head_dim": 128,
                         "linear_num_key_heads": 16, "linear_num_value_heads": 32, "full_attention_interval": 4},
    # transformers models/granitemoehybrid/configuration_granitemoehybrid.py GraniteMoeHybridConfig
    "granitemoehybrid": {"mamba_n_heads": 128, "mamba_n_groups": 1, "mamba_d_state": 256, "mamba_d_conv": 4,
                         "mamba_expand": 2, "mamba_conv_bias": True, "mamba_proj_bias": False,
                         "shared_intermediate_size": 1024},
    # transformers models/nemotron_h/configuration_nemotron_h.py NemotronHConfig
    "nemotron_h": {"mamba_num_heads": 128, "mamba_head_dim": 64, "ssm_state_size": 128, "n_groups": 8,
                   "conv_kernel": 4, "use_conv_bias": True, "use_bias": False},
    # transformers models/falcon_h1/configuration_falcon_h1.py FalconH1Config
    "falcon_h1": {"mamba_d_ssm": 1024, "mamba_n_heads": 128, "mamba_n_groups": 1, "mamba_d_state": 256, "mamba_d_conv": 4,
                  "mamba_expand": 2, "mamba_conv_bias": True, "mamba_proj_bias": False, "mamba_rms_norm": False,
                  "projectors_bias": False},
    # transformers models/jamba/configuration_jamba.py JambaConfig
    "jamba": {"attn_layer_period": 8, "attn_layer_offset": 4, "expert_layer_period": 2, "expert_layer_offset": 1,
              "mamba_d_state": 16, "mamba_d_conv": 4, "mamba_expand": 2, "mamba_dt_rank": "auto",
              "mamba_conv_bias": True, "mamba_proj_bias": False},
    # transformers models/lfm2/configuration_lfm2.py Lfm2Config, lfm2_moe/configuration_lfm2_moe.py Lfm2MoeConfig
    "lfm2": {"conv_L_cache": 3, "conv_bias": False, "block_multiple_of": 256, "block_ffn_dim_multiplier": 1.0,
             "block_auto_adjust_ff_dim": True},
    "lfm2_moe": {"conv_L_cache": 3, "conv_bias": False, "num_dense_layers": 2},
    # transformers models/ernie4_5_moe/configuration_ernie4_5_moe.py Ernie4_5_MoeConfig
    "ernie4_5_moe": {"moe_num_experts": 64, "moe_k": 6, "moe_intermediate_size": 1536, "moe_num_shared_experts": 2,
                     "moe_layer_start_index": 1, "moe_layer_end_index": -1, "moe_layer_interval": 1},
    # Kimi Linear (moonshotai/Kimi-Linear-48B-A3B configuration_kimi.py KimiLinearConfig; transformers
    # models/kimi_linear): linear_attn_config's head_dim, num_heads and short_conv_kernel_size
    "kimi_linear": {"head_dim": 128, "num_heads": 32, "short_conv_kernel_size": 4},
    # transformers models/gemma4/configuration_gemma4.py Gemma4TextConfig (global_head_dim: the 512 its __post_init__ pops
    # from the kwargs)
    "gemma4_text": {"vocab_size_per_layer_input": 262144, "hidden_size_per_layer_input": 256, "num_kv_shared_layers": 0,
                    "global_head_dim": 512},
    # transformers models/gemma3n/configuration_gemma3n.py Gemma3nTextConfig
    "gemma3n_text": {"vocab_size_per_layer_input": 262144, "hidden_size_per_layer_input": 256, "altup_num_inputs": 4,
                     "num_kv_shared_layers": 15, "laurel_rank": 64},
}

#: What each ``recurrent_kind`` is called in the answers (the estimate's assumptions, ``models import``).
RECURRENT_KIND_WORDS = {"gated_deltanet": "gated DeltaNet", "kda": "Kimi Delta Attention", "mamba2": "Mamba2", "mamba": "Mamba",
                        "short_conv": "short-convolution"}

#: Bits in which the reference kernels return the recurrent state, where the runtime stores what
#: the model code hands it (transformers). 0 = the compute dtype.
#: Qwen3-Next: fla ``chunk_gated_delta_rule`` and transformers' ``torch_chunk_gated_delta_rule``
#: both compute the state in float32 and return it as is (modeling_qwen3_next.py); the Mamba2 /
#: Mamba caches are allocated in the model dtype and copied into (``HybridMambaAttentionDynamicCache``).
STATE_KERNEL_BITS = {"qwen3_next": 32, "qwen3_5_text": 32, "qwen3_5_moe_text": 32, "kimi_linear": 32}

#: Model types whose layers are Qwen3-Next's gated DeltaNet and gated attention -> the family whose class defaults
#: they take. Qwen3.5 / 3.6 (transformers modular_qwen3_5.py) build ``Qwen3_5GatedDeltaNet(Qwen3NextGatedDeltaNet)``
#: and ``Qwen3_5Attention(Qwen3NextAttention)``; ``qwen3_5`` / ``qwen3_5_moe`` are their multimodal wrappers' types, read
#: when a flat config carries no ``text_config``.
GATED_DELTANET_TYPES = {"qwen3_next": "qwen3_next", "qwen3_5_text": "qwen3_5_text", "qwen3_5": "qwen3_5_text",
                        "qwen3_5_moe_text": "qwen3_5_moe_text", "qwen3_5_moe": "qwen3_5_moe_text"}

#: ``mamba_ssm_cache_dtype`` values of a Nemotron-H config.json (Qwen3.5's ``mamba_ssm_dtype``) and their bits (the
#: dtype names vLLM's CacheConfig.mamba_ssm_cache_dtype accepts besides "auto").
SSM_CACHE_DTYPE_BITS = {"float32": 32, "float16": 16, "bfloat16": 16}


def _ssm_cache_bits(cfg: dict, key: str, where: str, problems: list) -> int:
    """Bits of the SSM state cache dtype a config names under ``key`` (SSM_CACHE_DTYPE_BITS), 0 where it names none;
    a value vLLM does not accept is a problem naming the key."""
    value = cfg.get(key)
    if value is None:
        return 0
    bits = SSM_CACHE_DTYPE_BITS.get(value) if isinstance(value, str) else None
    if bits is None:
        problems.append((f"{where}.{key}", f"must be one of {sorted(SSM_CACHE_DTYPE_BITS)}, got {value!r}"))
        return 0
    return bits


def _int(cfg: dict, key: str, family: str, where: str, problems: list, assumed: list, *, minimum: int = 1) -> int:
    """A positive integer config key, or the family's class default (reported), or a problem."""
    value = cfg.get(key)
    if value is None and key in CLASS_DEFAULTS.get(family, {}):
        value = CLASS_DEFAULTS[family][key]
        assumed.append(f"{key} = {value} ({family} default; not in config)")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        problems.append((f"{where}.{key}", f"must be an integer >= {minimum}, got {value!r}"))
        return max(minimum, 1)
    return value


def _flag(cfg: dict, key: str, family: str) -> bool:
    value = cfg.get(key)
    if value is None:
        value = CLASS_DEFAULTS.get(family, {}).get(key, False)
    return bool(value)


def _kinds(raw: Any, layers: int, mapping: dict[str, str], key: str, where: str, problems: list) -> tuple[str, ...] | None:
    """Per-layer kinds from a config list of layer-type strings, or None (with a problem) when malformed."""
    if not isinstance(raw, (list, tuple)) or len(raw) != layers:
        problems.append((f"{where}.{key}", f"must list one of {sorted(mapping)} for each of the {layers} layers"))
        return None
    out = []
    for i, t in enumerate(raw):
        if t not in mapping:
            problems.append((f"{where}.{key}[{i}]", f"{t!r} is not one of {sorted(mapping)}"))
            return None
        out.append(mapping[t])
    return tuple(out)


# -- key spellings ----------------------------------------------------------------------------

def normalize(cfg: dict, model_type: str) -> dict:
    """Rename the keys a family spells differently, before the generic reading sees them."""
    if model_type == "granitemoehybrid":
        # GraniteMoeHybridDecoderLayer: every layer has ``shared_mlp`` (shared_intermediate_size) and,
        # with num_local_experts > 0, ``block_sparse_moe`` whose experts are ``intermediate_size`` wide.
        shared = cfg.get("shared_intermediate_size", CLASS_DEFAULTS["granitemoehybrid"]["shared_intermediate_size"])
        if cfg.get("num_local_experts"):
            cfg = {**cfg, "shared_expert_intermediate_size": shared}
        else:
            cfg = {**cfg, "intermediate_size": shared}  # dense (H-Micro): the shared MLP is the FFN
    elif model_type == "gemma3n_text" and isinstance(cfg.get("intermediate_size"), list):
        widths = cfg["intermediate_size"]
        if widths and all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
            cfg = {**cfg, "intermediate_size": max(widths), "_ffn_widths": list(widths)}
    elif model_type in ("lfm2", "lfm2_moe"):
        # Lfm2Config / Lfm2MoeConfig take LiquidAI's original spellings: ``tie_embedding`` for
        # tie_word_embeddings and (LFM2) ``block_ff_dim`` for intermediate_size, before the MLP adjusts it
        # (_lfm2); LFM2-MoE's first ``num_dense_layers`` layers keep a dense MLP, the rest are MoE
        if cfg.get("tie_word_embeddings") is None and cfg.get("tie_embedding") is not None:
            cfg = {**cfg, "tie_word_embeddings": cfg["tie_embedding"]}
        if model_type == "lfm2" and cfg.get("block_ff_dim") is not None:
            cfg = {**cfg, "intermediate_size": cfg["block_ff_dim"]}
        if model_type == "lfm2_moe":
            dense = cfg.get("num_dense_layers")
            cfg = {**cfg, "first_k_dense_replace": CLASS_DEFAULTS["lfm2_moe"]["num_dense_layers"] if dense is None else dense}
    elif GATED_DELTANET_TYPES.get(model_type) == "qwen3_5_moe_text":
        # Qwen3_5MoeTextConfig has no dense width: every layer is MoE (no mlp_only_layers, no decoder_sparse_step), so the
        # intermediate_size the generic reading requires is never used - the experts' width stands in for it
        if cfg.get("intermediate_size") is None:
            cfg = {**cfg, "intermediate_size": cfg.get("moe_intermediate_size") or 512}  # its class default
    elif model_type == "kimi_linear":
        # KimiLinearConfig's attribute_map (moonshotai configuration_kimi.py, transformers configuration_kimi_linear.py):
        # the checkpoint spells DeepSeek V3's MoE keys its own way
        for theirs, ours in (("num_experts_per_token", "num_experts_per_tok"), ("num_shared_experts", "n_shared_experts"),
                             ("model_max_length", "max_position_embeddings")):
            if cfg.get(ours) is None and cfg.get(theirs) is not None:
                cfg = {**cfg, ours: cfg[theirs]}
    elif model_type == "deepseek_v4":
        # every layer is MoE (no first_k_dense_replace), so the dense width the generic reading requires is never used;
        # SGLang's DeepSeekV4Config spells the window window_size
        if cfg.get("intermediate_size") is None and cfg.get("moe_intermediate_size") is not None:
            cfg = {**cfg, "intermediate_size": cfg["moe_intermediate_size"]}
        if cfg.get("sliding_window") is None and cfg.get("window_size") is not None:
            cfg = {**cfg, "sliding_window": cfg["window_size"]}
    elif model_type in GEMMA4_TYPES:
        # Gemma4TextConfig names the experts per token top_k_experts; with enable_moe_block every decoder layer runs its
        # dense MLP (intermediate_size) and the routed experts side by side (Gemma4TextDecoderLayer.forward: hidden_states_1
        # + hidden_states_2) - the MLP is read as a shared expert of that width. Without it the expert keys are unused.
        if cfg.get("enable_moe_block"):
            cfg = {**cfg, "num_experts_per_tok": cfg.get("top_k_experts"),
                   "shared_expert_intermediate_size": cfg.get("intermediate_size")}
        else:
            cfg = {**cfg, "num_experts": None, "top_k_experts": None, "moe_intermediate_size": None,
                   "expert_intermediate_size": None}
        # use_bidirectional_attention "all": Gemma4TextConfig.__post_init__ sets sliding_window // 2 + 1 ("due to fa we
        # set exclusive bounds")
        window = cfg.get("sliding_window")
        if cfg.get("use_bidirectional_attention") == "all" and isinstance(window, int) and not isinstance(window, bool):
            cfg = {**cfg, "sliding_window": window // 2 + 1}
    elif model_type == "nemotron_h":
        if cfg.get("head_dim") is None and cfg.get("attention_head_dim") is not None:
            cfg = {**cfg, "head_dim": cfg["attention_head_dim"]}
        # NemotronHMoE builds its shared expert as NemotronHMLP(intermediate_size=
        # config.moe_shared_expert_intermediate_size) - its own width, not n_shared_experts x
        # moe_intermediate_size as DeepSeek's (transformers modeling_nemotron_h.py NemotronHMoE.__init__)
        if cfg.get("moe_shared_expert_intermediate_size") is not None:
            cfg = {**cfg, "shared_expert_intermediate_size": cfg["moe_shared_expert_intermediate_size"],
                   "n_shared_experts": None}
    return cfg


# -- readers ----------------------------------------------------------------------------------

#: DeepSeek V4's compression ratio whose layers carry a lightning indexer (inference/model.py ``Attention.__init__``:
#: "if self.compress_ratio == 4: self.indexer = Indexer"); vramplan.architecture.CSA_RATIO is the same number.
CSA_RATIO = 4

def _qwen3_next(cfg: dict, top: dict, base: dict, where: str, problems: list, assumed: list) -> dict:
    """Qwen3-Next: gated DeltaNet ``linear_attention`` layers and gated full attention.

    transformers modeling_qwen3_next.py: ``Qwen3NextGatedDeltaNet`` has ``in_proj_qkvz`` (h ->
    2 key_dim + 2 value_dim), ``in_proj_ba`` (h -> 2 num_v_heads), a depthwise ``conv1d`` over
    conv_dim = 2 key_dim + value_dim (kernel ``linear_conv_kernel_dim``, no bias), ``dt_bias`` and
    ``A_log`` (num_v_heads each), a gated RMSNorm of head_v_dim and ``out_proj`` (value_dim -> h).
    Its cache keeps the conv state and a recurrent state of num_v_heads x head_k_dim x head_v_dim
    (vLLM mamba_utils.py ``gated_delta_net_state_shape``). ``Qwen3NextAttention.q_proj`` is twice
    as wide (query and output gate); the MoE block adds ``shared_expert_gate`` (h -> 1).

    Qwen3.5 / 3.6 (``qwen3_5_text``, ``qwen3_5_moe_text``; transformers modular_qwen3_5.py) split the input projection
    into ``in_proj_qkv`` (h -> 2 key_dim + value_dim), ``in_proj_z`` (h -> value_dim), ``in_proj_b`` and ``in_proj_a``
    (h -> num_v_heads each): the same parameters; the rest is Qwen3-Next's (``Qwen3_5Attention(Qwen3NextAttention)``,
    ``Qwen3_5MoeSparseMoeBlock(Qwen3NextSparseMoeBlock)``), a dense MLP on every layer of ``qwen3_5_text``.
    """
    fam = GATED_DELTANET_TYPES.get(str(cfg.get("model_type")), "qwen3_next")
    L, h = base["layers"], base["hidden"]
    raw = cfg.get("layer_types")
    if raw is None:
        interval = _int(cfg, "full_attention_interval", fam, where, problems, assumed)
        raw = ["linear_attention" if (i + 1) % interval else "full_attention" for i in range(L)]
    kinds = _kinds(raw, L, {"linear_attention": "recurrent", "full_attention": "full"}, "layer_types", where, problems)
    kernel = _int(cfg, "linear_conv_kernel_dim", fam, where, problems, assumed)
    hk = _int(cfg, "linear_key_head_dim", fam, where, problems, assumed)
    hv = _int(cfg, "linear_value_head_dim", fam, where, problems, assumed)
    nk = _int(cfg, "linear_num_key_heads", fam, where, problems, assumed)
    nv = _int(cfg, "linear_num_value_heads", fam, where, problems, assumed)
    if kinds is None:
        return {}
    key_dim, value_dim = hk * nk, hv * nv
    conv = 2 * key_dim + value_dim
    n_attn = kinds.count("full")
    extra = [("attn_q", n_attn * h * base["heads"] * base["head_dim"])]  # the output gate half of q_proj
    if base["n_moe"] and base["shared_inter"]:
        extra.append(("ffn_gate_inp", base["n_moe"] * h))  # shared_expert_gate
    # Qwen3.5's config names the delta-rule state's dtype (``mamba_ssm_dtype: float32`` in every released text_config);
    # vLLM keeps its SSM state cache in it (model_executor/models/config.py Qwen3_5ForConditionalGenerationConfig:
    # mamba_ssm_cache_dtype "auto" takes the HF config's mamba_ssm_dtype, for the Qwen3_5(Moe)ForConditionalGeneration
    # architectures the checkpoints name). Qwen3-Next states none and vLLM reads none for it.
    cache_bits = 0 if fam == "qwen3_next" else _ssm_cache_bits(cfg, "mamba_ssm_dtype", where, problems)
    return {
        "layer_types": kinds, "recurrent_kind": "gated_deltanet", "ssm_cache_bits": cache_bits,
        "conv_channels": conv, "conv_kernel": kernel, "ssm_state_elems": nv * hk * hv,
        "ssm_kernel_state_bits": STATE_KERNEL_BITS[fam],
        "recurrent_params": (("ssm_in", h * (2 * key_dim + 2 * value_dim) + h * 2 * nv), ("ssm_out", value_dim * h),
                             ("norm", conv * kernel + 2 * nv + hv)),
        "extra_params": tuple(extra),
    }


def _mamba2_mixer(h: int, d_inner: int, n_heads: int, n_groups: int, d_state: int, kernel: int,
                  conv_bias: bool, proj_bias: bool, *, out_bias: bool | None = None,
                  gated_norm: bool = True) -> tuple[int, tuple[tuple[str, int], ...]]:
    """Channels of the conv state and parameters of one Mamba2 mixer (transformers
    ``GraniteMoeHybridMambaLayer`` / ``NemotronHMamba2Mixer`` / ``FalconH1Mixer``, all adapted from ``Mamba2Mixer``):
    ``in_proj`` h -> d_inner (gate) + conv_dim + n_heads (dt), depthwise ``conv1d`` over conv_dim =
    d_inner + 2 n_groups d_state, ``dt_bias`` / ``A_log`` / ``D`` of n_heads, a gated RMSNorm of
    d_inner (Falcon-H1: only with mamba_rms_norm), ``out_proj`` d_inner -> h. ``proj_bias`` gives both projections a
    bias unless ``out_bias`` says otherwise for out_proj (Falcon-H1's projectors_bias)."""
    conv = d_inner + 2 * n_groups * d_state
    in_out = d_inner + conv + n_heads
    norm = conv * kernel + (conv if conv_bias else 0) + 3 * n_heads + (d_inner if gated_norm else 0)
    norm += (in_out if proj_bias else 0) + (h if (proj_bias if out_bias is None else out_bias) else 0)
    return conv, (("ssm_in", h * in_out), ("ssm_out", d_inner * h), ("norm", norm))


def _mamba_d_head(cfg: dict, d_inner: int, n_heads: int, width: str, where: str, problems: list) -> int | None:
    """``mamba_d_head``, "auto" (or absent) meaning d_inner / n_heads; None, with a problem, where heads of that size
    do not tile the mixer's width."""
    d_head = cfg.get("mamba_d_head")
    if d_head in (None, "auto"):
        d_head = d_inner // n_heads
    if not isinstance(d_head, int) or isinstance(d_head, bool) or d_head * n_heads != d_inner:
        problems.append((f"{where}.mamba_d_head", f"mamba_d_head x mamba_n_heads must equal {width} ({d_inner}), "
                                                  f"got {d_head!r} x {n_heads}"))
        return None
    return d_head


def _granite_hybrid(cfg: dict, top: dict, base: dict, where: str, problems: list, assumed: list) -> dict:
    """Granite 4.0-H (``granitemoehybrid``): ``layer_types`` of ``mamba`` / ``attention``; every
    layer keeps its (MoE) feed-forward. The cache (transformers ``HybridMambaAttentionDynamicCache``)
    holds conv states of (mamba_expand h + 2 n_groups d_state) x d_conv and SSM states of
    mamba_n_heads x mamba_d_head x mamba_d_state per Mamba layer."""
    fam, L, h = "granitemoehybrid", base["layers"], base["hidden"]
    raw = cfg.get("layer_types", cfg.get("layers_block_type"))
    if raw is None:
        raw = ["mamba"] * L  # GraniteMoeHybridConfig.layers_block_type
        assumed.append("layer_types = all mamba (granitemoehybrid default; not in config)")
    kinds = _kinds(raw, L, {"mamba": "recurrent", "attention": "full"}, "layer_types", where, problems)
    expand = _int(cfg, "mamba_expand", fam, where, problems, assumed)
    n_heads = _int(cfg, "mamba_n_heads", fam, where, problems, assumed)
    n_groups = _int(cfg, "mamba_n_groups", fam, where, problems, assumed)
    d_state = _int(cfg, "mamba_d_state", fam, where, problems, assumed)
    kernel = _int(cfg, "mamba_d_conv", fam, where, problems, assumed)
    d_inner = expand * h
    d_head = _mamba_d_head(cfg, d_inner, n_heads, "mamba_expand x hidden_size", where, problems)
    if d_head is None or kinds is None:
        return {}
    conv, params = _mamba2_mixer(h, d_inner, n_heads, n_groups, d_state, kernel,
                                 _flag(cfg, "mamba_conv_bias", fam), _flag(cfg, "mamba_proj_bias", fam))
    return {"layer_types": kinds, "recurrent_kind": "mamba2", "conv_channels": conv, "conv_kernel": kernel,
            "ssm_state_elems": n_heads * d_head * d_state, "recurrent_params": params}


def _falcon_h1(cfg: dict, top: dict, base: dict, where: str, problems: list, assumed: list) -> dict:
    """Falcon-H1 (TII; transformers modeling_falcon_h1.py ``FalconH1DecoderLayer``): every layer runs its attention and
    a Mamba2 mixer side by side on the same normed input and adds both, then its MLP - so every layer keeps keys and
    values and a Mamba2 state (``FalconHybridMambaAttentionDynamicCache``; vLLM registers the two as separate layers).
    ``FalconH1Mixer``: ``in_proj`` h -> d_ssm (gate) + conv_dim + n_heads (dt), bias ``mamba_proj_bias``; depthwise
    ``conv1d`` over conv_dim = d_ssm + 2 n_groups d_state (bias ``mamba_conv_bias``); ``dt_bias`` / ``A_log`` / ``D`` of
    n_heads; a gated RMSNorm of d_ssm only with ``mamba_rms_norm``; ``out_proj`` d_ssm -> h, bias ``projectors_bias``.
    d_ssm is ``mamba_d_ssm`` (FalconH1Config: mamba_expand x h where it is null); ``mamba_d_head`` "auto" is d_ssm /
    n_heads. The muP multipliers scale activations, not parameters."""
    fam, L, h = "falcon_h1", base["layers"], base["hidden"]
    if "mamba_d_ssm" in cfg and cfg["mamba_d_ssm"] is None:
        d_ssm = _int(cfg, "mamba_expand", fam, where, problems, assumed) * h
    else:
        d_ssm = _int(cfg, "mamba_d_ssm", fam, where, problems, assumed)
    n_heads = _int(cfg, "mamba_n_heads", fam, where, problems, assumed)
    n_groups = _int(cfg, "mamba_n_groups", fam, where, problems, assumed)
    d_state = _int(cfg, "mamba_d_state", fam, where, problems, assumed)
    kernel = _int(cfg, "mamba_d_conv", fam, where, problems, assumed)
    d_head = _mamba_d_head(cfg, d_ssm, n_heads, "the mixer's width mamba_d_ssm", where, problems)
    if d_head is None:
        return {}
    conv, params = _mamba2_mixer(h, d_ssm, n_heads, n_groups, d_state, kernel, _flag(cfg, "mamba_conv_bias", fam),
                                 _flag(cfg, "mamba_proj_bias", fam), out_bias=_flag(cfg, "projectors_bias", fam),
                                 gated_norm=_flag(cfg, "mamba_rms_norm", fam))
    return {"layer_types": ("full",) * L, "recurrent_beside_attention": True, "recurrent_kind": "mamba2",
            "conv_channels": conv, "conv_kernel": kernel, "ssm_state_elems": n_heads * d_head * d_state,
            "recurrent_params": params}


def _deepseek_v4(cfg: dict, top: dict, base: dict, where: str, problems: list, assumed: list) -> dict:
    """DeepSeek V4 (DeepSeek-V4 inference/model.py; vLLM deepseek_v4.py): every layer attends a sliding window of its
    last ``sliding_window`` tokens with one ``head_dim`` row per token that is both key and value (its last
    ``qk_rope_head_dim`` rotated); ``compress_ratios[i]`` > 0 adds a cache of one compressed entry per that many tokens
    (ratio 4, CSA: a lightning indexer picks ``index_topk`` of them per query; any other ratio, HCA: all are read). The
    list may run past the layers: the entries after ``num_hidden_layers`` belong to the multi-token-prediction module,
    which is not counted (as for DeepSeek V3). The output projection is grouped and low-rank (``o_groups``,
    ``o_lora_rank``); ``hc_mult`` residual streams (hyper-connections); the first ``num_hash_layers`` MoE layers route by
    a token-id table instead of the router's bias. The generic MLA reading is switched off: V4 has no kv_lora latent."""
    L, heads = base["layers"], base["heads"]
    at = f"{where}.compress_ratios"
    raw = cfg.get("compress_ratios")  # a list of integers 0..65,536 where present (configkeys)
    if raw is None or len(raw) < L:
        problems.append((at, f"must list a compression ratio (0, or a positive integer) for each of the {L} layers"))
        return {}
    ratios = tuple(raw[:L])
    fam = "deepseek_v4"
    head_dim = _int(cfg, "head_dim", fam, where, problems, assumed)
    rope = _int(cfg, "qk_rope_head_dim", fam, where, problems, assumed)
    q_rank = _int(cfg, "q_lora_rank", fam, where, problems, assumed)
    o_groups = _int(cfg, "o_groups", fam, where, problems, assumed)
    o_rank = _int(cfg, "o_lora_rank", fam, where, problems, assumed)
    hc = _int(cfg, "hc_mult", fam, where, problems, assumed)
    window = _int(cfg, "sliding_window", fam, where, problems, assumed)
    hash_layers = 0
    if cfg.get("num_hash_layers") is None:
        assumed.append("num_hash_layers = 0 (not in config): every MoE layer has its router's correction bias")
    else:
        hash_layers = _int(cfg, "num_hash_layers", fam, where, problems, assumed, minimum=0)
    if rope >= head_dim and not any(k.endswith((".head_dim", ".qk_rope_head_dim")) for k, _ in problems):
        problems.append((f"{where}.qk_rope_head_dim", f"{rope} must be below head_dim {head_dim} (the rotated part of each row)"))
    if heads % o_groups or (heads * head_dim) % o_groups:
        problems.append((f"{where}.o_groups", f"{o_groups} must divide num_attention_heads {heads} (wo_a's groups of heads)"))
    if cfg.get("num_key_value_heads", 1) != 1:
        problems.append((f"{where}.num_key_value_heads", f"must be 1 (one row serves every head), got {cfg.get('num_key_value_heads')!r}"))
    if CSA_RATIO in ratios and not cfg.get("index_topk"):
        problems.append((f"{where}.index_topk", "is required: the ratio-4 layers select entries with a lightning indexer"))
    indexer = {} if CSA_RATIO in ratios else {"index_topk": 0, "index_n_heads": 0, "index_head_dim": 0}  # no CSA layer
    return {**indexer, "layer_types": ("sliding",) * L, "compress_ratios": ratios, "o_groups": o_groups, "o_lora_rank": o_rank,
            "hc_mult": hc, "num_hash_layers": hash_layers, "head_dim": head_dim, "num_kv_heads": 1, "v_head_dim": 0,
            "q_lora_rank": q_rank, "qk_rope_head_dim": rope, "kv_lora_rank": 0, "qk_nope_head_dim": 0}


def _nemotron_h(cfg: dict, top: dict, base: dict, where: str, problems: list, assumed: list) -> dict:
    """Nemotron-H: ``hybrid_override_pattern`` names each block - ``M`` Mamba2 mixer, ``*``
    attention, ``-`` MLP, ``E`` MoE - and each block has a single pre-norm (transformers
    modeling_nemotron_h.py ``NemotronHBlock``). MLPs are squared-ReLU, not gated."""
    fam, L, h = "nemotron_h", base["layers"], base["hidden"]
    pattern = cfg.get("hybrid_override_pattern")
    if not isinstance(pattern, str) or len(pattern) != L or set(pattern) - set("M*-E"):
        problems.append((f"{where}.hybrid_override_pattern", f"must be a string of {L} characters from M, *, - and E"))
        return {}
    kinds = tuple({"M": "recurrent", "*": "full", "-": "none", "E": "none"}[c] for c in pattern)
    n_heads = _int(cfg, "mamba_num_heads", fam, where, problems, assumed)
    d_head = _int(cfg, "mamba_head_dim", fam, where, problems, assumed)
    n_groups = _int(cfg, "n_groups", fam, where, problems, assumed)
    d_state = _int(cfg, "ssm_state_size", fam, where, problems, assumed)
    kernel = _int(cfg, "conv_kernel", fam, where, problems, assumed)
    d_inner = n_heads * d_head
    conv, params = _mamba2_mixer(h, d_inner, n_heads, n_groups, d_state, kernel,
                                 _flag(cfg, "use_conv_bias", fam), _flag(cfg, "use_bias", fam))
    # the SSM state cache dtype the checkpoint asks for (vLLM honours it for Nemotron-H: see the
    # runtime constant model_ssm_cache_dtype)
    cache_bits = _ssm_cache_bits(cfg, "mamba_ssm_cache_dtype", where, problems)
    moe = tuple(i for i, c in enumerate(pattern) if c == "E")
    # per-block FFN width, 0 for the mixer blocks (and a block's one norm follows from its kind: the
    # architecture counts a norm per attention, recurrent and FFN block)
    ffn = tuple(base["inter"] if c == "-" else (base["moe_inter"] if c == "E" else 0) for c in pattern)
    out = {"layer_types": kinds, "recurrent_kind": "mamba2", "conv_channels": conv, "conv_kernel": kernel,
           "ssm_state_elems": n_heads * d_head * d_state, "recurrent_params": params, "ffn_sizes": ffn,
           "gated_mlp": False, "ssm_cache_bits": cache_bits}
    if base["n_experts"]:
        out["moe_layers"] = moe
    return out


def _jamba(cfg: dict, top: dict, base: dict, where: str, problems: list, assumed: list) -> dict:
    """Jamba: Mamba (v1) layers with attention every ``attn_layer_period`` layers from
    ``attn_layer_offset``, MoE every ``expert_layer_period`` from ``expert_layer_offset``
    (transformers modeling_jamba.py ``JambaMambaMixer``): ``in_proj`` h -> 2 d_inner, depthwise
    ``conv1d`` over d_inner, ``x_proj`` d_inner -> dt_rank + 2 d_state, ``dt_proj`` dt_rank ->
    d_inner (with bias), ``A_log`` d_inner x d_state, ``D`` d_inner, RMSNorms over dt, B and C,
    ``out_proj`` d_inner -> h; state: conv of d_inner channels, SSM of d_inner x d_state."""
    fam, L, h = "jamba", base["layers"], base["hidden"]
    raw = cfg.get("layers_block_type")
    if raw is None:
        period = _int(cfg, "attn_layer_period", fam, where, problems, assumed)
        offset = _int(cfg, "attn_layer_offset", fam, where, problems, assumed, minimum=0)
        raw = ["attention" if i % period == offset else "mamba" for i in range(L)]
    kinds = _kinds(raw, L, {"mamba": "recurrent", "attention": "full"}, "layers_block_type", where, problems)
    d_state = _int(cfg, "mamba_d_state", fam, where, problems, assumed)
    kernel = _int(cfg, "mamba_d_conv", fam, where, problems, assumed)
    expand = _int(cfg, "mamba_expand", fam, where, problems, assumed)
    dt_rank = cfg.get("mamba_dt_rank", "auto")
    if dt_rank == "auto":
        dt_rank = math.ceil(h / 16)
    if not isinstance(dt_rank, int) or isinstance(dt_rank, bool) or dt_rank < 1:
        problems.append((f"{where}.mamba_dt_rank", f"must be 'auto' or a positive integer, got {dt_rank!r}"))
        return {}
    if kinds is None:
        return {}
    d_inner = expand * h
    norm = d_inner * kernel + (d_inner if _flag(cfg, "mamba_conv_bias", fam) else 0) + d_inner + d_inner * d_state \
        + d_inner + dt_rank + 2 * d_state
    if _flag(cfg, "mamba_proj_bias", fam):
        norm += 2 * d_inner + h
    out = {"layer_types": kinds, "recurrent_kind": "mamba", "conv_channels": d_inner, "conv_kernel": kernel,
           "ssm_state_elems": d_inner * d_state,
           "recurrent_params": (("ssm_in", h * 2 * d_inner + d_inner * (dt_rank + 2 * d_state) + dt_rank * d_inner),
                                ("ssm_out", d_inner * h), ("norm", norm))}
    if base["n_experts"] > 1:
        period = _int(cfg, "expert_layer_period", fam, where, problems, assumed)
        offset = _int(cfg, "expert_layer_offset", fam, where, problems, assumed, minimum=0)
        out["moe_layers"] = tuple(i for i in range(L) if i % period == offset)
    return out


def _ernie4_5_moe(cfg: dict, top: dict, base: dict, where: str, problems: list, assumed: list) -> dict:
    """ERNIE 4.5 MoE (transformers modular_ernie4_5_moe.py): ``moe_num_experts`` routed experts (``num_experts`` by
    the config's attribute_map), ``moe_k`` per token, a shared MLP ``moe_intermediate_size x moe_num_shared_experts``
    wide, on the layers i with (i + 1) % moe_layer_interval == 0 and moe_layer_start_index <= i <= moe_layer_end_index
    (-1: the last layer; Ernie4_5_MoeDecoderLayer), the others a dense MLP of intermediate_size. Each MoE block adds
    its router (h x experts) and ``moe_statics.e_score_correction_bias`` (one per expert). ``use_bias`` puts biases
    on every linear. Not counted: the router and the bias are kept in fp32 (_keep_in_fp32_modules_strict), 2 extra
    bytes a parameter in a 16-bit model (327,680 bytes a layer for ERNIE-4.5-21B-A3B)."""
    fam, L = "ernie4_5_moe", base["layers"]
    key = "num_experts" if cfg.get("moe_num_experts") is None and cfg.get("num_experts") is not None else "moe_num_experts"
    experts = _int(cfg, key, fam, where, problems, assumed, minimum=0)
    top_k = _int(cfg, "moe_k", fam, where, problems, assumed)
    inter = _int(cfg, "moe_intermediate_size", fam, where, problems, assumed)
    shared = _int(cfg, "moe_num_shared_experts", fam, where, problems, assumed, minimum=0)
    start = _int(cfg, "moe_layer_start_index", fam, where, problems, assumed, minimum=0)
    step = _int(cfg, "moe_layer_interval", fam, where, problems, assumed)
    end = cfg.get("moe_layer_end_index")
    if end is None:
        end = CLASS_DEFAULTS[fam]["moe_layer_end_index"]
        assumed.append(f"moe_layer_end_index = {end} ({fam} default; not in config)")
    end = L - 1 if end == -1 else end
    if experts and top_k > experts:
        problems.append((f"{where}.moe_k", f"{top_k} is more than the {experts} experts"))
    if problems:
        return {}
    moe = tuple(i for i in range(L) if (i + 1) % step == 0 and start <= i <= end) if experts else ()
    out: dict = {"num_experts": experts if moe else 0, "experts_per_token": top_k if moe else 0,
                 "moe_intermediate_size": inter if moe else 0,
                 "shared_expert_intermediate_size": inter * shared if moe else 0, "moe_layers": moe,
                 "dense_intermediate_size": base["inter"], "extra_params": (("norm", len(moe) * experts),)}
    if cfg.get("use_bias"):
        out.update(qkv_bias=True, out_bias=True, mlp_bias=True, lm_head_bias=True)
    return out


#: Kimi K3's MoonViT tower and projector variants :func:`_kimi_k3_vision` counts (the values the released
#: vision_config states); another value of one of these keys is refused by name.
KIMI_K3_VISION_KINDS = {"mm_projector_type": "patchmergerv2", "merge_type": "sd2_tpool", "mlp_type": "mlp2",
                        "pos_emb_type": "divided_fixed"}


def _kimi_linear(cfg: dict, top: dict, base: dict, where: str, problems: list, assumed: list) -> dict:
    """Kimi Linear (moonshotai/Kimi-Linear-48B-A3B modeling_kimi.py; transformers models/kimi_linear): Kimi Delta
    Attention layers and DeepSeek V3's MLA (with no rope applied, ``mla_use_nope``) in the layers
    ``linear_attn_config`` lists as ``full_attn_layers`` (1-indexed, as ``kda_layers``), DeepSeek V3's MoE after the
    first ``first_k_dense_replace`` layers.

    ``KimiDeltaAttention`` with P = num_heads x head_dim: ``q_proj`` / ``k_proj`` / ``v_proj`` (h -> P each), a
    depthwise short convolution on each of q, k and v (``ShortConvolution``, no bias), the low-rank forget gate
    ``f_a_proj`` (h -> head_dim) and ``f_b_proj`` (head_dim -> P), ``dt_bias`` (P), ``A_log`` (num_heads),
    ``b_proj`` (h -> num_heads), the low-rank output gate ``g_a_proj`` / ``g_b_proj`` (a full-rank ``g_proj``, h -> P,
    with ``use_full_rank_gate``), a gated RMSNorm of head_dim and ``o_proj`` (P -> h). Its cache keeps the three
    convolutions' last kernel - 1 inputs (3P channels) and a num_heads x head_dim x head_dim delta-rule state (fla
    ``chunk_kda`` returns it in float32).

    Kimi K3 (``model_type: kimi_k3`` around this text config; ml-explore/mlx-lm mlx_lm/models/kimi_k3.py, the layer
    shapes checked against the released checkpoint's tensor list) adds, each under its own key:

    - ``routed_expert_hidden_size`` (Stable LatentMoE, ``KimiK3SparseMoE``): the router (``gate``, h -> experts, with
      its ``e_score_correction_bias``) and the shared experts see the full width; the routed experts run in the latent
      width - ``routed_expert_down_proj`` (h -> latent) before them, ``routed_expert_norm`` (latent, with
      ``latent_moe_use_norm``) and ``routed_expert_up_proj`` (latent -> h) after them, each expert a gated MLP of
      moe_intermediate_size x latent (``SwitchGLU(expert_dim = latent)``). vLLM-family ports build both projections as
      ``ReplicatedLinear(..., quant_config=None)``, as the router: they are counted with it (``ffn_gate_inp``);
    - ``mla_use_output_gate`` (``KimiK3MLAAttention``): ``g_proj`` h -> heads x v_head_dim, a sigmoid gate on the
      attention output before ``o_proj`` (counted with ``attn_q``, as Qwen3-Next's gate half of q_proj);
    - ``attn_res_block_size`` (Attention Residuals, ``KimiK3DecoderLayer``): each layer's ``self_attention_res_proj``
      and ``mlp_res_proj`` (h -> 1) with their RMSNorms (h), and the model's ``output_attn_res_proj`` / ``_norm``: a
      softmax over the block representations replaces the residual add. A forward keeps one h-wide representation a
      token per started block of attn_res_block_size layers (``ResidualBlocks``: ``attn_res_blocks``, in the prefill
      activations);
    - ``hidden_act: situ`` (SiTU-GLU): beta x tanh(gate / beta) x sigmoid(gate) times a tanh-clipped up projection,
      no parameters of its own.
    """
    fam, L, h = "kimi_linear", base["layers"], base["hidden"]
    lac = cfg.get("linear_attn_config")
    lac = lac if isinstance(lac, dict) else {}
    at = f"{where}.linear_attn_config"
    hd = _int(lac, "head_dim", fam, at, problems, assumed)
    nh = _int(lac, "num_heads", fam, at, problems, assumed)
    kernel = _int(lac, "short_conv_kernel_size", fam, at, problems, assumed)
    kda, full = lac.get("kda_layers"), lac.get("full_attn_layers")
    if kda is None or full is None:
        problems.append((at, "must list kda_layers and full_attn_layers (1-indexed layer numbers): the layout of Kimi "
                             "Delta Attention and MLA layers has no default vramplan can rely on"))
        return {}
    listed = sorted(list(kda) + list(full))
    if listed != list(range(1, L + 1)):
        problems.append((at, f"kda_layers and full_attn_layers must together list each layer 1..{L} once"))
        return {}
    kda_set = set(kda)
    kinds = tuple("recurrent" if i + 1 in kda_set else "full" for i in range(L))
    p = nh * hd
    gate = h * p if lac.get("use_full_rank_gate") else h * hd + hd * p
    out: dict = {
        "layer_types": kinds, "recurrent_kind": "kda",
        "conv_channels": 3 * p, "conv_kernel": kernel, "ssm_state_elems": nh * hd * hd,
        "ssm_kernel_state_bits": STATE_KERNEL_BITS[fam],
        # vLLM mamba_utils.py MambaStateDtypeCalculator.kda_state_dtype: the conv states in the cache dtype, the
        # recurrent state float32 whatever it is - the KDA layer asks for it as a Nemotron-H config does
        "ssm_cache_bits": 32,
        "recurrent_params": (("ssm_in", 3 * h * p + h * hd + hd * p + h * nh + gate), ("ssm_out", p * h),
                             ("norm", 3 * p * kernel + p + nh + hd)),
    }
    extra = _kimi_k3_extras(cfg, base, kinds, where, problems, assumed, out)
    vision = _kimi_k3_vision(top, h, where.removesuffix(".text_config"), problems, assumed)
    if problems:
        return {}
    if extra:
        out["extra_params"] = tuple(extra)
    if vision:
        out["vision_params"] = vision
    return out


def _kimi_k3_extras(cfg: dict, base: dict, kinds: tuple, where: str, problems: list, assumed: list,
                    out: dict) -> list:
    """The parameters a Kimi Linear text model has beyond the generic MLA / MoE count - its router's
    ``e_score_correction_bias`` - and those Kimi K3's keys add (see :func:`_kimi_linear`), by role; sets the experts'
    latent width in ``out``."""
    L, h, n_moe, experts = base["layers"], base["hidden"], base["n_moe"], base["n_experts"]
    extra: list[tuple[str, int]] = []
    # configkeys has bounded every key read here: present means an int (bool for the flags) in range
    # KimiMoEGate.e_score_correction_bias (num_experts, read by its forward whatever the config says) on every MoE layer
    extra.append(("norm", n_moe * experts))
    latent = cfg.get("routed_expert_hidden_size")
    if latent and n_moe:
        out["moe_expert_hidden_size"] = latent
        # routed_expert_down_proj + routed_expert_up_proj (replicated, unquantized, as the router)
        extra.append(("ffn_gate_inp", n_moe * 2 * h * latent))
        if cfg.get("latent_moe_use_norm"):
            extra.append(("norm", n_moe * latent))  # routed_expert_norm
    if cfg.get("mla_use_output_gate"):
        v_head = cfg.get("v_head_dim")
        if not v_head:
            problems.append((f"{where}.v_head_dim", "is required with mla_use_output_gate: g_proj is hidden -> "
                                                   "num_attention_heads x v_head_dim"))
        else:
            extra.append(("attn_q", kinds.count("full") * h * base["heads"] * v_head))  # KimiK3MLAAttention.g_proj
    block = cfg.get("attn_res_block_size")
    if block:
        # per layer self_attention_res_proj / mlp_res_proj [1, h] and their RMSNorms [h]; the model's
        # output_attn_res_proj and output_attn_res_norm
        extra.append(("norm", L * 4 * h + 2 * h))
        out["attn_res_blocks"] = -(-L // block)
        assumed.append(f"attn_res_block_size = {block}: Attention Residuals' parameters are counted, and the "
                       f"{-(-L // block)} block representations a forward keeps (one hidden-size vector a token "
                       f"each) are in the prefill activations")
    return extra


def _kimi_k3_vision(top: dict, text_hidden: int, top_where: str, problems: list, assumed: list) -> int:
    """Kimi K3's MoonViT3d tower and PatchMergerMLPV2 projector (``vision_config`` with ``vt_*`` keys; ROCm ATOM's
    port of the checkpoint's modeling_kimi_k3.py, ``KimiK3VisionTower`` / ``KimiK3PatchMergerProjector``, and the
    checkpoint's vision_tower.* / mm_projector.* tensors): a Conv2d patch embedding 3 x patch^2 -> d (a bias with
    patch_embed_proj_bias), a learned init_pos_emb_height x init_pos_emb_width x d position table (the time embedding
    is a fixed sin/cos buffer), vt_num_hidden_layers blocks of ``wqkv`` (d -> 3 q, q = qkv_hidden_size), ``wo`` (q ->
    d), biases with attn_bias, ``fc0`` / ``fc1`` (d -> vt_intermediate_size -> d, biases with linear_bias) and two
    norms (RMSNorm: a weight; LayerNorm: weight and bias), a final norm; the projector ``proj.0`` (m -> m, m =
    mm_hidden_size x merge kernel area), ``proj.2`` (m -> text_hidden_size), ``post_norm`` (RMSNorm of the text
    width), no biases. 0 without such a vision_config."""
    vc = top.get("vision_config")
    if not isinstance(vc, dict) or vc.get("vt_hidden_size") is None:
        return 0
    at = f"{top_where}.vision_config"
    for key, kind in KIMI_K3_VISION_KINDS.items():
        if vc.get(key) not in (None, kind):
            problems.append((f"{at}.{key}", f"{vc[key]!r} is not the {kind!r} Kimi K3's vision code builds, the only "
                                            f"one vramplan counts"))
    norm_type = vc.get("norm_type") or "rmsnorm"
    if norm_type not in ("rmsnorm", "layernorm"):
        problems.append((f"{at}.norm_type", f"{norm_type!r} is neither 'rmsnorm' nor 'layernorm'"))
    nums = {}
    for key in ("vt_hidden_size", "vt_intermediate_size", "vt_num_hidden_layers", "vt_num_attention_heads"):
        nums[key] = _int(vc, key, "", at, problems, assumed)
    d, inter = nums["vt_hidden_size"], nums["vt_intermediate_size"]
    q = vc.get("qkv_hidden_size") or d
    patch = vc.get("patch_size") or 14
    ph, pw = vc.get("init_pos_emb_height") or 64, vc.get("init_pos_emb_width") or 64
    kernel = vc.get("merge_kernel_size") or [2, 2]
    kernel = [kernel, kernel] if isinstance(kernel, int) else list(kernel)
    if len(kernel) != 2:
        problems.append((f"{at}.merge_kernel_size", "must be [height, width]"))
        return 0
    mm = vc.get("mm_hidden_size") or d
    text = vc.get("text_hidden_size") or text_hidden
    if problems:
        return 0
    per_norm = 2 * d if norm_type == "layernorm" else d
    block = (d * 3 * q + q * d + (3 * q + d if vc.get("attn_bias") else 0)
             + 2 * d * inter + (inter + d if vc.get("linear_bias") else 0) + 2 * per_norm)
    tower = (3 * patch * patch * d + (d if vc.get("patch_embed_proj_bias") else 0) + ph * pw * d
             + nums["vt_num_hidden_layers"] * block + per_norm)
    m = mm * kernel[0] * kernel[1]
    return tower + m * m + m * text + text


def _lfm2(cfg: dict, top: dict, base: dict, where: str, problems: list, assumed: list) -> dict:
    """LFM2 and LFM2-MoE (Liquid AI; transformers modeling_lfm2.py, modular_lfm2_moe.py): ``layer_types``
    of ``conv`` / ``full_attention`` (LFM2 without it: ``full_attn_idxs``, else every layer attends).

    ``Lfm2ShortConv`` has ``in_proj`` h -> 3h (B, C and x), a depthwise ``conv1d`` over h channels of
    kernel ``conv_L_cache`` and ``out_proj`` h -> h (biases with ``conv_bias``); its cache keeps the last
    inputs of the h channels and no SSM state (``Lfm2HybridConvCache``: [batch, h, L_cache]; vLLM's
    ShortConv L_cache - 1 columns). ``Lfm2Attention`` has per-head q / k layernorms (FAMILY_DEFAULTS
    qk_norm). Every layer keeps its feed-forward; LFM2's ``Lfm2MLP`` adjusts its width (block_auto_adjust_ff_dim:
    int(2 x ff / 3), x block_ffn_dim_multiplier where given, rounded up to block_multiple_of), LFM2-MoE's
    dense layers take intermediate_size as it is.

    Not counted: transformers' hybrid cache allocates the conv state for the attention layers too (h x L_cache
    elements each per sequence: 73,728 bytes a sequence for LFM2-1.2B's six in 16 bits), and LFM2-MoE's
    ``expert_bias`` buffer (one float per expert per MoE layer)."""
    fam, L, h = str(cfg.get("model_type")), base["layers"], base["hidden"]
    raw = cfg.get("layer_types")
    if raw is None:
        if fam == "lfm2_moe":  # Lfm2MoeConfig has no default layout: its decoder layers index layer_types
            problems.append((f"{where}.layer_types", f"is required for lfm2_moe: one of 'conv' / 'full_attention' "
                                                     f"for each of the {L} layers"))
            return {}
        idxs = cfg.get("full_attn_idxs")
        if idxs is None:
            idxs = list(range(L))
            assumed.append("layer_types = every layer full_attention (lfm2 default without full_attn_idxs; not in config)")
        raw = ["full_attention" if i in set(idxs) else "conv" for i in range(L)]
    kinds = _kinds(raw, L, {"conv": "recurrent", "full_attention": "full"}, "layer_types", where, problems)
    kernel = _int(cfg, "conv_L_cache", fam, where, problems, assumed)
    bias = _flag(cfg, "conv_bias", fam)
    out: dict = {}
    if fam == "lfm2" and _flag(cfg, "block_auto_adjust_ff_dim", fam):
        ff = int(2 * base["inter"] / 3)
        mult = cfg.get("block_ffn_dim_multiplier", CLASS_DEFAULTS[fam]["block_ffn_dim_multiplier"])
        if mult is not None:  # Lfm2MLP rounds to block_multiple_of only with a multiplier
            multiple = _int(cfg, "block_multiple_of", fam, where, problems, assumed)
            ff = int(mult * ff)
            ff = multiple * ((ff + multiple - 1) // multiple)
        if ff < 1:
            problems.append((f"{where}.block_ff_dim", f"{base['inter']} adjusted by block_auto_adjust_ff_dim "
                                                      f"(2/3, x block_ffn_dim_multiplier) leaves no feed-forward width"))
            return {}
        out["intermediate_size"] = ff
    if fam == "lfm2_moe" and cfg.get("num_dense_layers") is None:
        assumed.append(f"num_dense_layers = {CLASS_DEFAULTS[fam]['num_dense_layers']} (lfm2_moe default; not in config)")
    if kinds is None:
        return {}
    out.update({"layer_types": kinds, "recurrent_kind": "short_conv", "conv_channels": h, "conv_kernel": kernel,
                "ssm_state_elems": 0,
                "recurrent_params": (("ssm_in", 3 * h * h), ("ssm_out", h * h), ("norm", h * kernel + (5 * h if bias else 0)))})
    return out


def _gemma3n(cfg: dict, top: dict, base: dict, where: str, problems: list, assumed: list) -> dict:
    """Gemma 3n (transformers modeling_gemma3n.py).

    ``Gemma3nTextModel`` adds ``embed_tokens_per_layer`` (vocab_size_per_layer_input x L x
    hidden_size_per_layer_input, a lookup), ``per_layer_model_projection`` (h -> L x hpl) with its
    norm, and AltUp's (altup_num_inputs - 1) in- and out-projections of h x h. Each
    ``Gemma3nTextDecoderLayer`` adds AltUp (``correct_output_scale`` h, ``correction_coefs`` n x n,
    ``prediction_coefs`` n -> n^2, ``modality_router`` h -> n, ``router_norm`` h), LAuReL
    (``linear_left`` h -> rank, ``linear_right`` rank -> h, ``post_laurel_norm`` h) and the
    per-layer input path (``per_layer_input_gate`` h -> hpl, ``per_layer_projection`` hpl -> h,
    ``post_per_layer_input_norm`` h). KV sharing follows ``Gemma3nTextConfig.kv_sharing_roles``.
    """
    fam, L, h = "gemma3n_text", base["layers"], base["hidden"]
    hpl = _int(cfg, "hidden_size_per_layer_input", fam, where, problems, assumed)
    vpl = _int(cfg, "vocab_size_per_layer_input", fam, where, problems, assumed)
    n = _int(cfg, "altup_num_inputs", fam, where, problems, assumed)
    rank = _int(cfg, "laurel_rank", fam, where, problems, assumed)
    shared = _int(cfg, "num_kv_shared_layers", fam, where, problems, assumed, minimum=0)
    types = base["layer_types"]
    out: dict = {}
    if not isinstance(cfg.get("layer_types"), list):  # Gemma3nTextConfig: every 5th layer is global
        types = tuple("full" if (i + 1) % 5 == 0 else "sliding" for i in range(L))
        out["layer_types"] = types
        assumed.append("layer_types = every 5th layer global (gemma3n_text default; not in config)")
    first_shared = L - shared
    kv_shared = [False] * L
    for kind in ("full", "sliding"):
        idx = [i for i, t in enumerate(types) if t == kind]
        consumers = [i for i in idx if i >= first_shared]
        if consumers and any(i < first_shared for i in idx):
            for i in consumers:
                kv_shared[i] = True
    per_layer_other = n * n + n ** 3 + h * n + 2 * rank * h + 2 * h * hpl
    per_layer_norm = 2 * h + h + h  # AltUp scale and router norm, LAuReL norm, per-layer input norm
    widths = cfg.get("_ffn_widths")
    out.update({
        "kv_shared": tuple(kv_shared),
        "per_layer_embd_params": vpl * L * hpl,
        "extra_params": (("other", L * per_layer_other + h * L * hpl + 2 * (n - 1) * h * h),
                         ("norm", L * per_layer_norm + hpl)),
        "image_tokens_per_image": _tokens_per_image(top),
    })
    if widths:
        out["ffn_widths"] = tuple(widths)
    encoders = _gemma3n_encoders(top, h)
    if encoders:
        out["vision_params"] = encoders
    return out


#: The model_types of Gemma 4's language model (a bare ``gemma4_text`` config, or ``gemma4`` read as one).
GEMMA4_TYPES = ("gemma4_text", "gemma4")


def _gemma4(cfg: dict, top: dict, base: dict, where: str, problems: list, assumed: list) -> dict:
    """Gemma 4 (transformers models/gemma4/configuration_gemma4.py, modeling_gemma4.py; vLLM gemma4.py).

    - ``layer_types`` of ``sliding_attention`` / ``full_attention`` (Gemma4TextConfig without it: every 6th layer
      global); the last layer is forced global (``__post_init__``);
    - global layers: heads of ``global_head_dim`` (default 512) and, with ``attention_k_eq_v``, ``num_global_key_value_heads``
      KV heads and no ``v_proj`` - the key projection is also the value (Gemma4TextAttention: ``use_alternative_attention``;
      the config's ``per_layer_config`` override gates the KV heads on attention_k_eq_v the same way). The cache keeps the
      value row beside the key row (it is normed, not rotated: past_key_values.update(key_states, value_states); vLLM
      caches k and v alike);
    - ``num_kv_shared_layers``: the last N layers read the cache of the last earlier layer of their type and have no
      k_proj, v_proj or k_norm (``is_kv_shared_layer``); with ``use_double_wide_mlp`` their MLP is twice as wide
      (Gemma4TextMLP: ``layer_idx >= first_kv_shared_layer_idx > 0``);
    - ``enable_moe_block``: beside the MLP, a router (``proj`` h -> experts, ``scale`` of h, ``per_expert_scale`` of
      experts, a weightless norm), ``experts`` (gate_up [E, 2 moe_inter, h], down [E, h, moe_inter]) and three more norms;
    - per-layer embeddings where ``hidden_size_per_layer_input`` > 0 (Gemma4TextModel: ``embed_tokens_per_layer``
      vocab_size_per_layer_input x L x hpl, ``per_layer_model_projection`` h -> L x hpl with its norm of hpl; per layer
      ``per_layer_input_gate`` h -> hpl, ``per_layer_projection`` hpl -> h, ``post_per_layer_input_norm``);
    - ``layer_scalar``, a one-element buffer stored in every layer; v_norm and the router norm have no weight.
    """
    fam, L, h = "gemma4_text", base["layers"], base["hidden"]
    raw = cfg.get("layer_types")
    if raw is None:
        raw = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(L)]
        assumed.append("layer_types = every 6th layer full_attention (gemma4_text default; not in config)")
    kinds = _kinds(raw, L, {"sliding_attention": "sliding", "full_attention": "full"}, "layer_types", where, problems)
    # an explicit null is not a missing key here: the config class keeps None, and the model reads it as "none" (no
    # per-layer embeddings, no sharing) or, for global_head_dim, as head_dim (Gemma4TextAttention: "config.global_head_dim
    # if not self.is_sliding and config.global_head_dim else config.head_dim")
    stated_null = {k for k in ("num_kv_shared_layers", "hidden_size_per_layer_input", "global_head_dim")
                   if k in cfg and cfg[k] is None}
    shared_n = 0 if "num_kv_shared_layers" in stated_null else \
        _int(cfg, "num_kv_shared_layers", fam, where, problems, assumed, minimum=0)
    hpl = 0 if "hidden_size_per_layer_input" in stated_null else \
        _int(cfg, "hidden_size_per_layer_input", fam, where, problems, assumed, minimum=0)
    vpl = _int(cfg, "vocab_size_per_layer_input", fam, where, problems, assumed) if hpl else 0
    global_dim = 0 if "global_head_dim" in stated_null else _int(cfg, "global_head_dim", fam, where, problems, assumed)
    k_eq_v = bool(cfg.get("attention_k_eq_v"))
    global_kv = cfg.get("num_global_key_value_heads") if k_eq_v else None  # an int 1..MAX_HEADS where present (configkeys)
    if global_kv is not None and global_kv > base["heads"]:
        problems.append((f"{where}.num_global_key_value_heads", f"{global_kv} is more than num_attention_heads {base['heads']}"))
    if shared_n >= L:
        problems.append((f"{where}.num_kv_shared_layers", f"{shared_n} must be below num_hidden_layers {L}: a sharing "
                                                          f"layer reads the cache of an earlier layer of its type"))
    if kinds is None or problems:
        return {}
    kinds = kinds[:-1] + ("full",)  # Gemma4TextConfig.__post_init__: "Last layer must use `full_attention`"
    first_shared = L - shared_n
    kv_shared = tuple(i >= first_shared for i in range(L)) if shared_n else ()
    for i in range(first_shared, L) if shared_n else ():
        if kinds[i] not in kinds[:first_shared]:
            problems.append((f"{where}.layer_types[{i}]", f"a KV-sharing layer of kind {raw[i]!r} has no earlier layer of "
                                                          f"that kind before layer {first_shared} to read the cache of"))
            return {}
    inter = base["inter"]
    doubled = [i for i in range(L) if cfg.get("use_double_wide_mlp") and i >= first_shared > 0]
    extra: list[tuple[str, int]] = [("norm", L)]  # layer_scalar
    out: dict = {"layer_types": kinds, "full_head_dim": global_dim, "full_kv_heads": int(global_kv or 0),
                 "full_k_eq_v": k_eq_v, "kv_shared_no_kv_proj": True,
                 "image_tokens_per_image": _tokens_per_image(top), "vision_params": _gemma4_encoders(top, h)}
    if kv_shared:
        out["kv_shared"] = kv_shared
    if doubled and base["n_experts"]:  # the MLP is read as a shared expert: its doubled part by role
        extra += [(role, len(doubled) * inter * h) for role in ("ffn_gate", "ffn_up", "ffn_down")]
    elif doubled:
        out["ffn_widths"] = tuple(2 * inter if i in doubled else inter for i in range(L))
    if base["n_experts"]:  # router.scale, router.per_expert_scale, post_feedforward_layernorm_1 / _2, pre_feedforward_layernorm_2
        extra.append(("norm", base["n_moe"] * (h + base["n_experts"] + 3 * h)))
    if hpl:
        out["per_layer_embd_params"] = vpl * L * hpl
        extra += [("other", h * L * hpl + L * 2 * h * hpl), ("norm", hpl + L * h)]
    out["extra_params"] = tuple(extra)
    return out


def _gemma4_encoders(top: dict, text_hidden: int) -> int:
    """Gemma 4's vision and audio towers and their embedders into the text model (transformers modeling_gemma4.py),
    counted whole like any vision encoder: 0 when the config has neither. Defaults are Gemma4VisionConfig's and
    Gemma4AudioConfig's.

    - vision (``Gemma4VisionModel``): a bias-free patch projection 3 x patch^2 -> h, a position table [2,
      position_embedding_size, h]; per layer q / k / v / o (heads x head_dim, kv_heads x head_dim), a gated MLP, four norms,
      q_norm and k_norm of head_dim (v_norm weightless); with ``use_clipped_linears`` four scalar bounds per linear, with
      ``standardize`` std_bias and std_scale of h;
    - audio (``Gemma4AudioModel``): two bias-free 3x3 convs (1 -> c0 -> c1), each with a bias-free LayerNorm, and
      ``input_proj_linear`` (c0 // 4) x c1 -> h; per conformer layer two feed-forwards (h -> 4h -> h, two norms each),
      attention (q, k, v, post, relative_k_proj h -> h; per_dim_scale of h / heads), a light conv (h -> 2h, depthwise
      kernel x h, h -> h, two norms), three norms, and four scalar bounds per clippable linear (ten) where
      ``use_clipped_linears`` (its default); ``output_proj`` h -> output_proj_dims with bias;
    - ``Gemma4MultimodalEmbedder`` per tower: a projection from the tower's output width to the text hidden size (its
      norm has no weight).
    """
    total = 0
    vc, ac = top.get("vision_config"), top.get("audio_config")
    ok = lambda *xs: all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in xs)  # noqa: E731
    if isinstance(vc, dict):
        vh, inter, n = vc.get("hidden_size", 768), vc.get("intermediate_size", 3072), vc.get("num_hidden_layers", 16)
        heads, kvh, hd = vc.get("num_attention_heads", 12), vc.get("num_key_value_heads", 12), vc.get("head_dim", 64)
        patch, pos = vc.get("patch_size", 16), vc.get("position_embedding_size", 10240)
        if ok(vh, inter, n, heads, kvh, hd, patch, pos):
            layer = 2 * vh * heads * hd + 2 * vh * kvh * hd + 3 * vh * inter + 4 * vh + 2 * hd
            layer += 4 * 7 if vc.get("use_clipped_linears") else 0
            total += 3 * patch * patch * vh + 2 * pos * vh + n * layer + (2 * vh if vc.get("standardize") else 0)
            total += vh * text_hidden
    if isinstance(ac, dict):
        ah, n, heads = ac.get("hidden_size", 1024), ac.get("num_hidden_layers", 12), ac.get("num_attention_heads", 8)
        kernel, out_dim = ac.get("conv_kernel_size", 5), ac.get("output_proj_dims", 1536)
        chans = ac.get("subsampling_conv_channels", [128, 32])
        if isinstance(chans, list) and len(chans) == 2 and ok(ah, n, heads, kernel, out_dim, *chans):
            c0, c1 = chans
            sscp = 9 * c0 + c0 + 9 * c0 * c1 + c1 + (c0 // 4) * c1 * ah
            layer = 24 * ah * ah + ah // heads + kernel * ah + (4 + 2 + 3) * ah
            layer += 4 * 10 if ac.get("use_clipped_linears", True) else 0
            total += sscp + n * layer + ah * out_dim + out_dim + out_dim * text_hidden
    return total


#: Parameters of timm image encoders a config names but does not describe (``vision_config.architecture``).
#: mobilenetv5_300m_enc: 294,284,096 - keras-hub keras_hub/src/models/mobilenetv5/mobilenetv5_presets.py,
#: preset "mobilenetv5_300m_enc_gemma3n" metadata "params" (the Gemma 3n vision backbone).
TIMM_ENCODER_PARAMS = {"mobilenetv5_300m_enc": 294_284_096}


def _gemma3n_encoders(top: dict, text_hidden: int) -> int:
    """Gemma 3n's vision and audio towers and their embedders into the text model (transformers
    modeling_gemma3n.py), counted whole like any vision encoder: 0 when the config has neither.

    - vision: the timm encoder ``vision_config.architecture`` (:data:`TIMM_ENCODER_PARAMS`);
    - audio (``Gemma3nAudioEncoder``): the sub-sample conv projection (two bias-free Conv2d of
      ``sscp_conv_channel_size`` channels, each with a cumulative group norm, then a linear from
      channels x frequency bins to hidden) and ``conf_num_hidden_layers`` conformer blocks - two
      feed-forwards (two norms, h -> 4h -> h), attention (a norm, q/k/v, per-dim scale, relative
      position projection, output, a norm), a light conv (a norm, h -> 2h, depthwise conv of
      ``conf_conv_kernel_size``, a norm, h -> h) and a final norm;
    - ``Gemma3nMultimodalEmbedder`` per modality: an embedding of ``vocab_size`` rows, two norms
      and a projection to the text hidden size.
    """
    total = 0
    vc, ac = top.get("vision_config"), top.get("audio_config")
    if isinstance(vc, dict):
        enc = TIMM_ENCODER_PARAMS.get(str(vc.get("architecture", "mobilenetv5_300m_enc")), 0)
        vh, vv = vc.get("hidden_size", 2048), vc.get("vocab_size", 128)
        if enc and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in (vh, vv)):
            total += enc + vv * vh + 2 * vh + vh * text_hidden
    if isinstance(ac, dict):
        ah, av = ac.get("hidden_size", 1536), ac.get("vocab_size", 128)
        heads, layers = ac.get("conf_num_attention_heads", 8), ac.get("conf_num_hidden_layers", 12)
        kernel, feats = ac.get("conf_conv_kernel_size", 5), ac.get("input_feat_size", 128)
        chans = ac.get("sscp_conv_channel_size", [128, 32])
        kernels = ac.get("sscp_conv_kernel_size", [[3, 3], [3, 3]])
        strides = ac.get("sscp_conv_stride_size", [[2, 2], [2, 2]])
        try:
            ints = [ah, av, heads, layers, kernel, feats, *chans, *(k for pair in kernels for k in pair),
                    *(k for pair in strides for k in pair)]
            ok = len(chans) == len(kernels) == len(strides) == 2 and all(
                isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in ints)
        except TypeError:
            ok = False
        if ok:
            sscp, c_in, f = 0, 1, feats
            for c_out, (kh, kw), (_sh, sw) in zip(chans, kernels, strides):
                sscp += c_in * c_out * kh * kw + c_out
                f = (f + 2 - kw) // sw + 1  # frequency padded by 1 on each side
                c_in = c_out
            sscp += c_in * f * ah
            # two feed-forwards 2 x 8h^2, attention 5h^2 (q, k, v, relative positions, output) and the light
            # conv's 3h^2; nine norms of h, the depthwise kernel x h, the per-dim scale of head_dim
            block = 24 * ah * ah + (9 + kernel) * ah + ah // heads
            total += sscp + layers * block + av * ah + 2 * ah + ah * text_hidden
    return total


def _mllama(cfg: dict, top: dict, base: dict, where: str, problems: list, assumed: list) -> dict:
    """Llama 3.2 Vision (transformers modeling_mllama.py): the text layers listed in
    ``cross_attention_layers`` attend to the image encoder's output instead of the text
    (``MllamaCrossAttentionDecoderLayer``: q/k/v/o as a self-attention layer plus q_norm, k_norm of
    head_dim and two scalar gates); ``embed_tokens`` has vocab_size + 8 rows. Each image yields
    max_num_tiles x ((image_size / patch_size)^2 + 1) vision tokens, whose keys and values every
    cross-attention layer caches."""
    L, h = base["layers"], base["hidden"]
    cross = cfg.get("cross_attention_layers")
    if not isinstance(cross, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < L for i in cross):
        problems.append((f"{where}.cross_attention_layers", f"must list layer indices below {L}"))
        return {}
    kinds = tuple("cross" if i in set(cross) else "full" for i in range(L))
    out = {"layer_types": kinds,
           "extra_params": (("token_embd", 8 * h), ("norm", len(set(cross)) * (2 * base["head_dim"] + 2)))}
    vc = top.get("vision_config")
    if isinstance(vc, dict):
        tiles, size, patch = vc.get("max_num_tiles", 4), vc.get("image_size", 560), vc.get("patch_size", 14)
        if all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in (tiles, size, patch)):
            out["cross_tokens_per_image"] = tiles * ((size // patch) ** 2 + 1)
            out["vision_params"] = _mllama_vision_params(vc, h)
    return out


def _mllama_vision_params(vc: dict, text_hidden: int) -> int:
    """``MllamaVisionModel`` + ``multi_modal_projector`` (transformers modeling_mllama.py):
    patch conv (no bias), class embedding, gated position embedding (patches + 1 rows, a gate, and a
    tile embedding of (aspect ratios + 1) x tiles x (patches + 1) x h), gated pre- and post-tile
    embeddings of (aspect ratios + 1) x tiles x h, pre / post LayerNorms, ``num_hidden_layers``
    local and ``num_global_layers`` gated global encoder layers (q/k/v/o without bias, fc1/fc2 with
    bias, two LayerNorms; global layers add two gates), and a biased projector vision_output_dim -> h."""
    h, inter = vc.get("hidden_size", 1280), vc.get("intermediate_size", 5120)
    local, glob = vc.get("num_hidden_layers", 32), vc.get("num_global_layers", 8)
    c, p, size = vc.get("num_channels", 3), vc.get("patch_size", 14), vc.get("image_size", 560)
    tiles = vc.get("max_num_tiles", 4)
    ratios = len(vc.get("supported_aspect_ratios") or [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]])
    out_dim = vc.get("vision_output_dim", 7680)
    values = (h, inter, local, glob, c, p, size, tiles, out_dim)
    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in values):
        return 0
    patches = (size // p) ** 2 + 1
    layer = 4 * h * h + (h * inter + inter) + (inter * h + h) + 2 * 2 * h
    encoder = (c * p * p * h + h + patches * h + 1 + (ratios + 1) * tiles * patches * h
               + 2 * ((ratios + 1) * tiles * h + 1) + 2 * 2 * h + local * layer + glob * (layer + 2))
    return encoder + out_dim * text_hidden + text_hidden


def _tokens_per_image(top: dict) -> int:
    """Soft tokens one image adds to the context, where the config states a fixed number
    (Gemma 3 ``mm_tokens_per_image``, Gemma 3n ``vision_soft_tokens_per_image``, LLaVA-style
    ``image_seq_length``); 0 when it depends on the image or is not stated."""
    for key in ("mm_tokens_per_image", "vision_soft_tokens_per_image", "image_seq_length"):
        v = top.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return 0


#: model_type (of the language model) -> reader.
READERS: dict[str, Callable[..., dict]] = {
    **{model_type: _qwen3_next for model_type in GATED_DELTANET_TYPES},
    "granitemoehybrid": _granite_hybrid,
    "nemotron_h": _nemotron_h,
    "falcon_h1": _falcon_h1,
    "jamba": _jamba,
    "ernie4_5_moe": _ernie4_5_moe,
    "kimi_linear": _kimi_linear,
    "deepseek_v4": _deepseek_v4,
    "lfm2": _lfm2,
    "lfm2_moe": _lfm2,
    "gemma3n_text": _gemma3n,
    "gemma3n": _gemma3n,
    "gemma4_text": _gemma4,
    "gemma4": _gemma4,
    "mllama_text_model": _mllama,
    "mllama": _mllama,
}


def read(cfg: dict, top: dict, model_type: str, base: dict, *, where: str, problems: list,
         assumed: list) -> dict:
    """Keyword overrides for ``Architecture`` from a family's own keys (empty for ordinary decoders).

    ``base`` carries what the generic reading found: layers, hidden, heads, head_dim, layer_types,
    n_experts, n_moe (MoE layers) and shared_inter. Families without a reader still get the image
    tokens per image their top-level config states.
    """
    reader = READERS.get(model_type)
    out = reader(cfg, top, base, where, problems, assumed) if reader else {}
    if "image_tokens_per_image" not in out and "cross_tokens_per_image" not in out:
        tokens = _tokens_per_image(top)
        if tokens:
            out["image_tokens_per_image"] = tokens
    return out


# -- GGUF metadata ----------------------------------------------------------------------------

#: llama.cpp architectures of gated-DeltaNet hybrids -> model_type (llama-arch.cpp LLM_ARCH_QWEN3NEXT "qwen3next",
#: LLM_ARCH_QWEN35 "qwen35", LLM_ARCH_QWEN35MOE "qwen35moe"; convert_hf_to_gguf.py's Qwen3.5 converters keep
#: Qwen3-Next's ssm.* keys).
GGUF_GATED_DELTANET = {"qwen3next": "qwen3_next", "qwen35": "qwen3_5_text", "qwen35moe": "qwen3_5_moe_text"}


def from_gguf(arch: str, meta: dict, config: dict) -> dict:
    """Add a hybrid family's keys to the config.json-style dict read from a GGUF header.

    llama.cpp's converter (convert_hf_to_gguf.py) writes the recurrent geometry as ``{arch}.ssm.*``:
    Qwen3-Next ``Qwen3NextModel`` (and Qwen3.5 / 3.6, archs ``qwen35`` / ``qwen35moe``) - conv_kernel =
    linear_conv_kernel_dim, state_size = linear_key_head_dim, group_count = linear_num_key_heads, time_step_rank =
    linear_num_value_heads,
    inner_size = linear_value_head_dim x linear_num_value_heads, plus ``full_attention_interval``;
    Granite 4.0-H ``GraniteHybridModel`` - conv_kernel = mamba_d_conv, state_size = mamba_d_state,
    group_count = mamba_n_groups, time_step_rank = mamba_n_heads, inner_size = mamba_n_heads x
    mamba_d_head, with ``attention.head_count_kv`` per layer 0 on Mamba layers (llama-model.cpp
    marks those layers recurrent); LFM2 / LFM2-MoE ``LFM2Model`` / ``LFM2MoeModel`` - ``shortconv.l_cache`` =
    conv_L_cache, ``attention.head_count_kv`` per layer 0 on the conv layers, ``feed_forward_length`` the MLP
    width already adjusted, ``leading_dense_block_count`` = num_dense_layers; Falcon-H1 ``FalconH1Model`` (a
    ``Mamba2Model``) - conv_kernel = mamba_d_conv, state_size = mamba_d_state, group_count = mamba_n_groups,
    inner_size = mamba_d_ssm, time_step_rank = inner_size / d_head (the mixer's heads), attention in every layer;
    Nemotron-H ``NemotronHModel`` (a ``GraniteHybridModel``; arch ``nemotron_h``, or ``nemotron_h_moe`` with experts) -
    the same ssm keys (time_step_rank = mamba_num_heads, inner_size / it = mamba_head_dim) and no pattern string: per
    layer ``attention.head_count_kv`` > 0 marks an attention block, ``feed_forward_length`` > 0 an MLP (MoE) block, both
    0 a Mamba2 block, rebuilt into ``hybrid_override_pattern``; with ``nextn_predict_layers`` the converter appends the
    multi-token-prediction block after the layers (llama-model.cpp reads it as such), left out here; Jamba
    ``JambaModel`` - conv_kernel = mamba_d_conv, inner_size = mamba_expand x hidden, state_size = mamba_d_state,
    time_step_rank = mamba_dt_rank, ``attention.head_count_kv`` per layer 0 on the Mamba layers (which layers hold
    experts is in the tensors, not the header: the reader's expert_layer_period / offset class defaults, reported);
    Kimi Linear ``KimiLinearModel`` (arch ``kimi-linear``) - ``ssm.conv_kernel`` = short_conv_kernel_size,
    ``kda.head_dim`` = the KDA head size, ``attention.head_count`` its heads (llama.cpp has no key of their own) and
    ``attention.head_count_kv`` per layer 0 on the KDA layers (1 on the MLA layers, served as MQA), rebuilt into
    ``linear_attn_config``'s 1-indexed layer lists; the MLA geometry is DeepSeek's keys.
    """
    def get(key):
        v = meta.get(f"{arch}.{key}")
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    kernel, state, groups, rank, inner = (get(f"ssm.{k}") for k in
                                          ("conv_kernel", "state_size", "group_count", "time_step_rank", "inner_size"))
    shared = get("expert_shared_feed_forward_length")
    if arch in GGUF_GATED_DELTANET and None not in (kernel, state, groups, rank, inner) and rank:
        config = {**config, "model_type": GGUF_GATED_DELTANET[arch], "linear_conv_kernel_dim": kernel, "linear_key_head_dim": state,
                  "linear_num_key_heads": groups, "linear_num_value_heads": rank, "linear_value_head_dim": inner // rank,
                  "full_attention_interval": get("full_attention_interval") or 4}
        if shared:
            config["shared_expert_intermediate_size"] = shared
    elif arch in ("lfm2", "lfm2moe") and get("shortconv.l_cache"):
        kv = meta.get(f"{arch}.attention.head_count_kv")
        config = {**config, "model_type": "lfm2" if arch == "lfm2" else "lfm2_moe", "conv_L_cache": get("shortconv.l_cache"),
                  "block_auto_adjust_ff_dim": False}
        if isinstance(kv, list):
            config["layer_types"] = ["full_attention" if k else "conv" for k in kv]
        if arch == "lfm2moe":
            config["num_dense_layers"] = get("leading_dense_block_count") or 0
    elif arch == "granitehybrid" and None not in (kernel, state, groups, rank, inner) and rank:
        kv = meta.get(f"{arch}.attention.head_count_kv")
        hidden = config.get("hidden_size") or 0
        config = {**config, "model_type": "granitemoehybrid", "mamba_d_conv": kernel, "mamba_d_state": state,
                  "mamba_n_groups": groups, "mamba_n_heads": rank, "mamba_d_head": inner // rank,
                  "mamba_expand": inner // hidden if hidden else 2}
        if isinstance(kv, list):
            config["layer_types"] = ["mamba" if not n else "attention" for n in kv]
        if shared:
            config["shared_intermediate_size"] = shared
    elif arch in ("nemotron_h", "nemotron_h_moe") and None not in (kernel, state, groups, rank, inner) and rank:
        kv, ff = meta.get(f"{arch}.attention.head_count_kv"), meta.get(f"{arch}.feed_forward_length")
        if isinstance(kv, list) and isinstance(ff, list) and len(kv) == len(ff):
            moe = arch == "nemotron_h_moe"
            layers = len(kv) - (get("nextn_predict_layers") or 0)  # the converter appends the MTP block last
            pattern = "".join("*" if k else ("E" if moe else "-") if f else "M" for k, f in zip(kv[:layers], ff[:layers]))
            config = {**config, "model_type": "nemotron_h", "num_hidden_layers": layers, "hybrid_override_pattern": pattern,
                      "mamba_num_heads": rank, "mamba_head_dim": inner // rank, "ssm_state_size": state,
                      "n_groups": groups, "conv_kernel": kernel}
            if moe and shared:
                config["moe_shared_expert_intermediate_size"] = shared
    elif arch == "jamba" and None not in (kernel, state, rank, inner):
        kv = meta.get(f"{arch}.attention.head_count_kv")
        hidden = config.get("hidden_size") or 0
        config = {**config, "mamba_d_conv": kernel, "mamba_d_state": state, "mamba_dt_rank": rank,
                  "mamba_expand": inner // hidden if hidden and inner % hidden == 0 else inner / max(hidden, 1)}
        if isinstance(kv, list):
            config["layers_block_type"] = ["attention" if k else "mamba" for k in kv]
    elif arch == "kimi-linear" and kernel and get("kda.head_dim") and get("attention.head_count"):
        kv, heads = meta.get(f"{arch}.attention.head_count_kv"), get("attention.head_count")
        if isinstance(kv, list):  # per layer: 0 on KDA layers
            config = {**config, "model_type": "kimi_linear", "num_key_value_heads": heads, "linear_attn_config": {
                "kda_layers": [i + 1 for i, k in enumerate(kv) if not k],
                "full_attn_layers": [i + 1 for i, k in enumerate(kv) if k],
                "num_heads": heads, "head_dim": get("kda.head_dim"), "short_conv_kernel_size": kernel}}
    elif arch == "falcon-h1" and None not in (kernel, state, groups, rank, inner) and rank:
        config = {**config, "model_type": "falcon_h1", "mamba_d_conv": kernel, "mamba_d_state": state,
                  "mamba_n_groups": groups, "mamba_n_heads": rank, "mamba_d_ssm": inner, "mamba_d_head": inner // rank}
    return config
