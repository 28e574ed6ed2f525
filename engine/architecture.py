"""A model's architecture, read from a Hugging Face ``config.json`` — the one place that knows
how each family spells its keys.

Families write the same idea under different names (Mixtral ``num_local_experts``, Qwen-MoE
``num_experts``, DeepSeek ``n_routed_experts``; Gemma ``layer_types`` or
``sliding_window_pattern``; multimodal configs nest the language model under ``text_config``).
:func:`from_hf_config` maps them onto one :class:`Architecture`, and the architecture counts its
own parameters by *tensor role* (``attn_q``, ``ffn_down``, ``token_embd``…), the unit in which
quantization formats state their storage cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from . import families
from .configkeys import check_config
from .errors import RequestError

#: Tensor roles, named as GGUF names tensors (llama.cpp ``LLM_TENSOR_NAMES``), so a quantization
#: format's per-role bits apply directly. ``norm`` covers every 1-D tensor (norms and biases).
#: ``vision`` is a multimodal model's image encoder and projector, which llama.cpp keeps in a
#: separate ``mmproj`` file and serving stacks load unquantized; it is 0 for text-only models.
ROLES = ("token_embd", "output", "attn_q", "attn_k", "attn_v", "attn_output",
         "ffn_gate", "ffn_up", "ffn_down", "ffn_gate_inp", "norm", "vision",
         "ssm_in", "ssm_out", "per_layer_embd", "other")
#: The last four belong to families with unusual layers (:mod:`vramplan.families`): ``ssm_in`` /
#: ``ssm_out`` are the input-side and output projections of recurrent mixers (llama.cpp
#: ``ssm_in`` / ``ssm_out``; their conv weights, A, D and dt biases are 1-D-like and kept with
#: ``norm``, as llama-quant.cpp leaves ``ssm_conv1d`` unquantized); ``per_layer_embd`` is Gemma
#: 3n's per-layer embedding table (a lookup, held where ``token_embd`` is); ``other`` gathers the
#: small matrices a family adds (Gemma 3n AltUp, LAuReL and per-layer projections).

#: What a family does when its config leaves a key out (the family's ``*Config`` class defaults
#: in transformers), and what its modeling code builds that no config key states. Keys:
#: tie_word_embeddings, qkv_bias, out_bias, mlp_bias, lm_head_bias, gated_mlp, norms_per_layer,
#: norm_bias, qk_norm ("head": one weight of head_dim each for q and k; "full": over the whole q and
#: k projections; "heads": one per head; False: none), qk_norm_key (the config key that switches it),
#: and ``config``: class defaults for architecture keys a real config.json may omit (Gemma 3's
#: ``text_config`` lists only what differs from them).
FAMILY_DEFAULTS: dict[str, dict] = {
    "llama": {"tie_word_embeddings": False},
    "mistral": {"tie_word_embeddings": False},
    "mixtral": {"tie_word_embeddings": False},
    "qwen2": {"tie_word_embeddings": False, "qkv_bias": True},
    "qwen2_moe": {"tie_word_embeddings": False, "qkv_bias": True},
    "qwen3": {"tie_word_embeddings": False, "qk_norm": True},
    "qwen3_moe": {"tie_word_embeddings": False, "qk_norm": True},
    # Qwen3-VL's language models are Qwen3's (transformers modeling_qwen3_vl.py Qwen3VLTextAttention: q_norm / k_norm
    # of head_dim); Qwen3VLConfig / Qwen3VLMoeConfig default tie_word_embeddings to False
    "qwen3_vl_text": {"tie_word_embeddings": False, "qk_norm": True},
    "qwen3_vl_moe_text": {"tie_word_embeddings": False, "qk_norm": True},
    "gemma": {"tie_word_embeddings": True, "norm_scale_fp32": True},
    "gemma2": {"tie_word_embeddings": True, "norms_per_layer": 4, "norm_scale_fp32": True,
               "softcap": {"attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}},
    "gemma3_text": {"tie_word_embeddings": True, "norms_per_layer": 4, "qk_norm": True, "norm_scale_fp32": True,
                    "config": {"vocab_size": 262208, "num_attention_heads": 8, "num_key_value_heads": 4,
                               "head_dim": 256, "max_position_embeddings": 131072, "sliding_window": 4096,
                               "sliding_window_pattern": 6}},
    "gemma3": {"tie_word_embeddings": True, "norms_per_layer": 4, "qk_norm": True, "norm_scale_fp32": True},
    "phi3": {"tie_word_embeddings": False},
    "phimoe": {"tie_word_embeddings": False, "qkv_bias": True, "norm_bias": True},
    "phi": {"tie_word_embeddings": False, "qkv_bias": True, "gated_mlp": False, "norm_bias": True,
            "norms_per_layer": 1, "out_bias": True, "mlp_bias": True, "lm_head_bias": True},
    "deepseek_v2": {"tie_word_embeddings": False},
    "deepseek_v3": {"tie_word_embeddings": False},
    "deepseek_v32": {"tie_word_embeddings": False},
    "deepseek_v4": {"tie_word_embeddings": False},  # DeepSeek V4 inference/model.py: head and embed are separate tensors
    "kimi_k2": {"tie_word_embeddings": False},
    "kimi_linear": {"tie_word_embeddings": False},  # KimiLinearConfig.tie_word_embeddings
    "cohere": {"tie_word_embeddings": True, "norms_per_layer": 1, "qk_norm": "heads", "qk_norm_key": "use_qk_norm"},
    "cohere2": {"tie_word_embeddings": True, "norms_per_layer": 1},
    "granite": {"tie_word_embeddings": True},
    "glm": {"tie_word_embeddings": False, "qkv_bias": True},
    "glm4": {"tie_word_embeddings": False, "qkv_bias": True, "norms_per_layer": 4},
    "olmo2": {"tie_word_embeddings": False, "qk_norm": "full"},
    "llama4_text": {"tie_word_embeddings": False},  # use_qk_norm is a weightless L2 norm
    "gpt_oss": {"tie_word_embeddings": False, "qkv_bias": True, "out_bias": True},
    "falcon": {"tie_word_embeddings": True},
    "smollm3": {"tie_word_embeddings": True},
    "glm4_moe": {"tie_word_embeddings": False, "qkv_bias": True, "qk_norm": True, "qk_norm_key": "use_qk_norm"},
    # MiniMax-M2: qk_norm_type "per_layer" = one RMSNorm over the whole q and k projections
    "minimax_m2": {"tie_word_embeddings": False, "qk_norm": "full", "qk_norm_key": "use_qk_norm"},
    "nemotron-nas": {"tie_word_embeddings": False},
    # families with unusual layers (vramplan.families reads their own keys)
    "qwen3_next": {"tie_word_embeddings": False, "qk_norm": True},
    # Qwen3.5 / 3.6: Qwen3-Next's layers (vramplan.families.GATED_DELTANET_TYPES); the class defaults of transformers
    # Qwen3_5TextConfig / Qwen3_5MoeTextConfig (qwen3_5 / qwen3_5_moe: their wrappers, for a flat config)
    **{t: {"tie_word_embeddings": False, "qk_norm": True,
           "config": {"vocab_size": 248320, "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 32,
                      "num_attention_heads": 16, "num_key_value_heads": 4, "head_dim": 256}}
       for t in ("qwen3_5_text", "qwen3_5")},
    **{t: {"tie_word_embeddings": False, "qk_norm": True,
           "config": {"vocab_size": 248320, "hidden_size": 2048, "num_hidden_layers": 40, "num_attention_heads": 16,
                      "num_key_value_heads": 2, "head_dim": 256, "num_experts": 256, "num_experts_per_tok": 8,
                      "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512}}
       for t in ("qwen3_5_moe_text", "qwen3_5_moe")},
    "granitemoehybrid": {"tie_word_embeddings": False},
    "falcon_h1": {"tie_word_embeddings": False},  # FalconH1Config.tie_word_embeddings
    "nemotron_h": {"tie_word_embeddings": False},
    "jamba": {"tie_word_embeddings": False},
    "gemma3n_text": {"tie_word_embeddings": True, "norms_per_layer": 4, "qk_norm": True},
    # Gemma 4 (transformers configuration_gemma4.py Gemma4TextConfig): four norms a layer, q_norm / k_norm of the layer's
    # head size, RMSNorm scales multiplied in fp32 (Gemma4RMSNorm: normed * weight.float()); vramplan.families._gemma4
    # reads the rest. ``config``: the class defaults a text_config may leave out.
    "gemma4_text": {"tie_word_embeddings": True, "norms_per_layer": 4, "qk_norm": True, "norm_scale_fp32": True,
                    "config": {"vocab_size": 262144, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                               "max_position_embeddings": 131072, "sliding_window": 512}},
    "gemma4": {"tie_word_embeddings": True, "norms_per_layer": 4, "qk_norm": True, "norm_scale_fp32": True},
    "mllama_text_model": {"tie_word_embeddings": False},
    "ernie4_5_moe": {"tie_word_embeddings": True},
    # squared-ReLU / xIELU MLPs without a gate (transformers NemotronMLP: up_proj, down_proj; ArceeMLP and ApertusMLP
    # subclass it); Nemotron's LayerNorm1P has a bias, Apertus per-head q / k RMSNorms (its xIELU's two scalars a layer
    # are not counted)
    "nemotron": {"tie_word_embeddings": False, "gated_mlp": False, "norm_bias": True},
    "arcee": {"tie_word_embeddings": False, "gated_mlp": False},
    # EXAONE 4.0: per-head q / k RMSNorms; the two norms a layer come after attention and the MLP
    "exaone4": {"qk_norm": True},
    "apertus": {"tie_word_embeddings": False, "gated_mlp": False, "qk_norm": True},
    # LFM2 / LFM2-MoE: Lfm2Attention's q_layernorm / k_layernorm of head_dim; tied unless tie_embedding says not
    "lfm2": {"tie_word_embeddings": True, "qk_norm": True},
    "lfm2_moe": {"tie_word_embeddings": True, "qk_norm": True},
}

_SLIDING = {"sliding_attention", "sliding", "local", "chunked_attention"}
#: ``layer_types`` entries the generic reading takes as attention over the whole context.
_FULL = {"full_attention", "full", "attention", "global", "global_attention", "deepseek_sparse_attention"}
#: model_types whose layers are recurrent (Mamba, Mamba2, Falcon-Mamba, RWKV, RecurrentGemma, xLSTM) or mix attention
#: with them (Bamba, Zamba, Hymba): refused by name where no reader in vramplan.families takes them, since their
#: keys (state_size, num_heads ...) would otherwise be read as a plain decoder's or fail on keys they do not have.
_RECURRENT_FAMILIES = {"mamba", "mamba2", "falcon_mamba", "bamba", "zamba", "zamba2", "hymba", "rwkv", "rwkv5",
                       "rwkv6", "rwkv7", "recurrent_gemma", "xlstm", "minimax", "minimax_text_01"}
#: Config keys of recurrent, linear-attention and convolution layers: Mamba / Mamba2 mixers (Jamba, Bamba, Falcon-H1,
#: Zamba, Granite 4.0-H, Nemotron-H), Kimi Linear's ``linear_attn_config``, MiniMax's ``attn_type_list`` (only where it
#: marks a layer 0, linear), Qwen3-Next's gated DeltaNet, LFM2's short convolutions. vramplan.families reads them for its
#: families; a config of any other model_type that has one is refused (from_hf_config), since the generic reading would
#: count those layers as attention.
_MIXER_KEYS = ("mamba_d_state", "mamba_n_heads", "mamba_d_ssm", "mamba_expand", "ssm_state_size", "hybrid_override_pattern",
               "layers_block_type", "attn_layer_indices", "linear_attn_config", "attn_type_list", "linear_num_value_heads",
               "linear_conv_kernel_dim", "conv_L_cache", "full_attn_idxs")

#: Keys of DeepSeek V4's attention and residual stream, which only its reader takes (vramplan.families._deepseek_v4):
#: compressed attention (compress_ratios, per layer 0, 4 or 128 - a cache of one compressed entry per that many tokens
#: beside a sliding window), the grouped low-rank output projection (o_lora_rank, o_groups) and hyper-connections
#: (hc_mult parallel residual streams). Under another model_type the generic reading would take such a config for a
#: one-KV-head decoder with a full cache in every layer: refused, naming the key.
_COMPRESSED_ATTENTION_KEYS = ("compress_ratios", "o_lora_rank", "hc_mult")
#: The compression ratio whose layers select entries with a lightning indexer (vLLM deepseek_v4.py: "Only C4A uses
#: sparse attention and hence has indexer"); every other ratio's entries are all read. One number with the reader's.
CSA_RATIO = families.CSA_RATIO


@dataclass(frozen=True)
class Architecture:
    """The numbers that memory and FLOPs depend on, in config.json's own terms."""

    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    v_head_dim: int = 0
    max_position_embeddings: int | None = None
    layer_types: tuple[str, ...] = ()  # one per layer: "full", "sliding", "none" (no attention), "linear"
    sliding_window: int | None = None
    attn_mask_window: int | None = None  # the window transformers' attention mask applies (see _attn_mask_window)
    #: the window is chunked attention's (Llama 4's attention_chunk_size: a token attends within its chunk), which a
    #: runtime may keep as a window or not (runtime constant chunked_attention_window)
    window_is_chunk: bool = False
    gated_mlp: bool = True
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    lm_head_bias: bool = False
    qk_norm: bool = False
    qk_norm_params_per_layer: int = 0  # 0 with qk_norm = one head_dim weight each for q and k
    partial_rotary: bool = False  # rotary embedding on part of each head (partial_rotary_factor < 1)
    #: elements of the cos/sin tables a runtime that precomputes them builds for the text model (see _rope_table_elements)
    rope_table_elements: int = 0
    norms_per_layer: int = 2
    norm_bias: bool = False
    #: the norm scales in fp32 (Gemma's ``output * (1.0 + weight.float())``), so training saves the fp32 normalized input
    norm_scale_fp32: bool = False
    #: attention scores / output logits soft-capped (Gemma 2: ``cap * tanh(x / cap)``; tanh saves its output)
    attn_softcap: bool = False
    final_softcap: bool = False
    # Mixture of experts
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0  # all shared experts together
    #: the config's own count of shared experts (``n_shared_experts``: DeepSeek, GLM-4.5), 0 where it states a width
    #: (``shared_expert_intermediate_size``) or none - what TGI's launcher reads when it counts a token's FLOPs
    n_shared_experts: int = 0
    #: the config's own model_type, a multimodal wrapper's where the language model is nested (Gemma 3's "gemma3" around
    #: "gemma3_text") - what runtimes that special-case families read (TGI's launcher: its prefill budget for gemma3)
    config_model_type: str = ""
    #: what the config.json states at its own top level, as a reader of the raw file sees it (TGI's launcher,
    #: launcher/src/main.rs RawConfig): ``num_local_experts`` (Mixtral's name for the routed experts; 0 where the config
    #: names them otherwise or has none), a ``quantization_config`` with a ``quant_method``, and the language model's
    #: sizes (num_attention_heads, num_hidden_layers, intermediate_size, vocab_size, hidden_size or n_embd) - not nested
    #: in a multimodal wrapper's text_config
    config_local_experts: int = 0
    checkpoint_quantized: bool = False
    config_text_at_top: bool = False
    #: the width the routed experts take in and give back, where it is not hidden_size: Kimi K3's latent MoE
    #: (``routed_expert_hidden_size``; vramplan.families._kimi_linear) - 0 = hidden_size
    moe_expert_hidden_size: int = 0
    # hidden-size block representations a token keeps through a forward (Kimi K3's Attention Residuals: one per started
    # block of attn_res_block_size layers); 0 elsewhere
    attn_res_blocks: int = 0
    moe_layers: tuple[int, ...] = ()  # indices of layers whose FFN is MoE
    dense_intermediate_size: int = 0  # FFN size of the non-MoE layers of an MoE model
    # Layers that differ (DeciLM / Nemotron NAS block_configs): FFN width per layer, 0 = no FFN
    ffn_sizes: tuple[int, ...] = ()
    # Multi-head latent attention (DeepSeek V2/V3, Kimi K2)
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    # Sparse attention (DeepSeek V3.2 DSA): the lightning indexer's heads, head size and the tokens it selects; 0 = none
    index_n_heads: int = 0
    index_head_dim: int = 0
    index_topk: int = 0
    # GLM-5.x's indexer sharing (indexer_types "shared"): attention layers that reuse an earlier layer's top-k and
    # keep no indexer, no indexer keys and no scoring of their own
    shared_indexer_layers: int = 0
    # Compressed attention (DeepSeek V4; vramplan.families._deepseek_v4): per layer 0 (its sliding window only), 4 (one
    # compressed entry per 4 tokens, chosen by a lightning indexer: CSA) or another ratio (every compressed entry read:
    # HCA); the grouped low-rank output projection; hyper-connections (hc_mult residual streams); hash-routed layers
    compress_ratios: tuple[int, ...] = ()
    o_groups: int = 0
    o_lora_rank: int = 0
    hc_mult: int = 0
    num_hash_layers: int = 0
    # Multimodal: image encoder + projector parameters (``vision_config``), counted whole
    vision_params: int = 0
    # Families with unusual layers (vramplan.families): layer_types may also hold "recurrent"
    # (linear attention / SSM: a fixed state per sequence, no KV), "cross" (attends to image
    # tokens) and "none" (no token mixer).
    recurrent_kind: str = ""  # "gated_deltanet", "mamba2", "mamba", "short_conv" (LFM2)
    recurrent_beside_attention: bool = False  # every attention layer also runs a recurrent mixer (Falcon-H1)
    conv_channels: int = 0  # channels of a recurrent layer's causal-conv state
    conv_kernel: int = 0
    ssm_state_elems: int = 0  # elements of one recurrent layer's SSM / delta-rule state, per sequence
    ssm_kernel_state_bits: int = 0  # bits the reference kernels return the state in (0: compute dtype)
    ssm_cache_bits: int = 0  # bits the checkpoint or its layer code asks the SSM state cache to be kept in (Nemotron-H
    # mamba_ssm_cache_dtype, Qwen3.5 mamba_ssm_dtype; vLLM's Kimi Delta Attention: float32); 0: not stated
    recurrent_params: tuple[tuple[str, int], ...] = ()  # (role, params) of one recurrent mixer
    kv_shared: tuple[bool, ...] = ()  # per layer: reads another layer's KV cache (Gemma 3n, Gemma 4)
    #: the KV-sharing layers have no k / v projections and no k_norm of their own (Gemma 4: Gemma4TextAttention builds
    #: them only ``if not self.is_kv_shared_layer``); Gemma 3n's checkpoints keep them
    kv_shared_no_kv_proj: bool = False
    # Global (full-attention) layers shaped unlike the sliding ones (Gemma 4: global_head_dim, num_global_key_value_heads,
    # attention_k_eq_v): their head size and KV heads (0: head_dim / num_kv_heads, as every other layer), and whether
    # their keys double as values - no v_proj weight; the cache still holds a value row per key row (the value is the
    # key projection normed without rope: transformers Gemma4TextAttention.forward, vLLM gemma4.py Gemma4Attention)
    full_head_dim: int = 0
    full_kv_heads: int = 0
    full_k_eq_v: bool = False
    ffn_widths: tuple[int, ...] = ()  # per-layer dense FFN widths where they differ (Gemma 3n)
    per_layer_embd_params: int = 0
    extra_params: tuple[tuple[str, int], ...] = ()  # (role, params) the generic count misses
    cross_tokens_per_image: int = 0  # keys/values each cross-attention layer caches per image
    image_tokens_per_image: int = 0  # soft tokens an image adds to the context
    assumed: tuple[str, ...] = field(default=(), compare=False)

    # -- shape facts ---------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def moe_expert_width(self) -> int:
        """The width a routed expert's gate / up projections read and its down projection writes: hidden_size, or
        Kimi K3's latent width (its experts are moe_intermediate_size x moe_expert_hidden_size matrices)."""
        return self.moe_expert_hidden_size or self.hidden_size

    @property
    def expert_matrix_params(self) -> int:
        """One routed expert's gate, up or down matrix: moe_intermediate_size x moe_expert_width (the count the
        parameter roles, the checkpoint's module list and its expert formats all build on)."""
        return self.moe_intermediate_size * self.moe_expert_width

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def is_compressed(self) -> bool:
        """DeepSeek V4's compressed attention: one K = V row per cached entry, a window in every layer."""
        return bool(self.compress_ratios)

    @property
    def indexed_layers(self) -> int:
        """Layers with a lightning indexer: every attention layer of a sparse-attention model (DeepSeek V3.2), the
        ratio-4 layers of a compressed one (DeepSeek V4's CSA: ``Attention.__init__`` builds the indexer only there)."""
        if self.is_compressed:
            return sum(1 for r in self.compress_ratios if r == CSA_RATIO)
        return self.num_attention_layers - self.shared_indexer_layers if self.index_topk else 0

    @property
    def compressed_entries_per_token(self) -> float:
        """Compressed cache entries one token adds over all layers, as layers' worth (sum of 1 / ratio)."""
        return sum(1 / r for r in self.compress_ratios if r > 0)

    @property
    def indexed_entries_per_token(self) -> float:
        """Indexer keys one token adds over all layers of a compressed model, as layers' worth (CSA: 1 / 4 a layer)."""
        return sum(1 / r for r in self.compress_ratios if r == CSA_RATIO)

    def _compressors(self) -> list[tuple[int, int, int]]:
        """(ratio, coff, width) of every compressor over all layers (DeepSeek V4 ``Compressor``): one per compressed
        layer over head_dim, coff 2 where windows overlap (ratio 4, CSA) else 1, and a CSA layer's indexer's own over
        index_head_dim (coff 2)."""
        out = []
        for r in self.compress_ratios:
            if r > 0:
                out.append((r, 2 if r == CSA_RATIO else 1, self.head_dim))
            if r == CSA_RATIO:
                out.append((r, 2, self.index_head_dim))
        return out

    @property
    def compressor_linear_params(self) -> int:
        """The compressors' wkv and wgate over all layers, [coff x width, hidden] each."""
        return sum(2 * coff * width * self.hidden_size for _r, coff, width in self._compressors())

    @property
    def compressor_state_elems(self) -> int:
        """fp32 elements of the per-sequence compressor state over all layers: a kv and a score buffer of coff x ratio
        slots of coff x width each per compressor."""
        return sum(2 * (coff * r) * (coff * width) for r, coff, width in self._compressors())

    @property
    def compressor_ring_state_elems(self) -> int:
        """The part of compressor_state_elems in the ratio-4 (CSA) layers' overlapping compressors and their indexers'
        (the rings SGLang sizes with the window pool; the other ratios' state is kept per request)."""
        return sum(2 * (coff * r) * (coff * width) for r, coff, width in self._compressors() if r == CSA_RATIO)

    @property
    def num_sliding_layers(self) -> int:
        return sum(1 for t in self.layer_types if t == "sliding")

    @property
    def num_full_layers(self) -> int:
        """Layers with global softmax attention (each keeps a full-length KV cache)."""
        if not self.layer_types:
            return self.num_layers
        return sum(1 for t in self.layer_types if t == "full")

    @property
    def num_recurrent_layers(self) -> int:
        """Layers with a recurrent mixer: those of kind "recurrent", or every attention layer where the mixer runs
        beside the attention (Falcon-H1)."""
        if self.recurrent_beside_attention:
            return self.num_full_layers + self.num_sliding_layers
        return sum(1 for t in self.layer_types if t == "recurrent")

    @property
    def num_cross_layers(self) -> int:
        return sum(1 for t in self.layer_types if t == "cross")

    @property
    def num_attention_layers(self) -> int:
        """Layers with attention projections: softmax self-attention (full or windowed) and
        cross-attention (the others have none, a recurrent mixer, or a plain linear)."""
        return self.num_full_layers + self.num_sliding_layers + self.num_cross_layers

    def _kv_owning(self, kind: str) -> int:
        shared = self.kv_shared or (False,) * len(self.layer_types)
        return sum(1 for t, s in zip(self.layer_types, shared) if t == kind and not s)

    @property
    def num_kv_full_layers(self) -> int:
        """Global-attention layers that keep their own KV cache (Gemma 3n's shared layers do not)."""
        return self._kv_owning("full") if self.layer_types else self.num_layers

    @property
    def num_kv_sliding_layers(self) -> int:
        return self._kv_owning("sliding")

    @property
    def kv_elements_per_token_per_layer(self) -> int:
        """K and V elements one token adds to one layer's cache.

        MLA caches the compressed latent plus the shared rope key (DeepSeek-V2 paper §2.1.3);
        everyone else caches K and V for every KV head (GQA/MQA shrink ``num_kv_heads``).
        """
        if self.is_mla:
            return self.kv_lora_rank + self.qk_rope_head_dim
        if self.is_compressed:  # DeepSeek V4: one row serves as key and value (Attention.forward, kv = wkv(x))
            return self.num_kv_heads * self.head_dim
        return self.num_kv_heads * (self.head_dim + (self.v_head_dim or self.head_dim))

    @property
    def per_kind_attention(self) -> bool:
        """Whether attention layers differ in shape by kind (Gemma 4's global layers) or KV-sharing layers lack k / v."""
        return bool(self.full_head_dim or self.full_kv_heads or self.full_k_eq_v or self.kv_shared_no_kv_proj)

    @property
    def full_layer_kv_heads(self) -> int:
        """KV heads of a global-attention layer (Gemma 4's num_global_key_value_heads; num_kv_heads elsewhere)."""
        return self.full_kv_heads or self.num_kv_heads

    @property
    def full_layer_head_dim(self) -> int:
        """Head size of a global-attention layer (Gemma 4's global_head_dim; head_dim elsewhere)."""
        return self.full_head_dim or self.head_dim

    @property
    def kv_elements_per_token_full_layer(self) -> int:
        """K and V elements one token adds to a global-attention layer's cache: kv_elements_per_token_per_layer, but for
        global layers of their own shape (Gemma 4: 2 x full_kv_heads x full_head_dim - with attention_k_eq_v too, as
        the cache stores the value row beside the key row)."""
        if not (self.full_head_dim or self.full_kv_heads):
            return self.kv_elements_per_token_per_layer
        return 2 * self.full_layer_kv_heads * self.full_layer_head_dim

    @property
    def kv_full_layer_scale(self) -> float:
        """A global layer's K and V elements a token over kv_elements_per_token_per_layer (1 where the layers are alike;
        Gemma 4 31B: 4 x 512 / (16 x 256) = 0.5)."""
        base = self.kv_elements_per_token_per_layer
        return self.kv_elements_per_token_full_layer / base if base else 1.0

    @property
    def attn_full_layer_scale(self) -> float:
        """A global layer's query width (heads x head size) over q_dim's: 1 where the layers are alike; Gemma 4's
        global layers keep the head count with wider heads (31B: 512 / 256 = 2)."""
        return self.full_layer_head_dim / self.head_dim if self.head_dim else 1.0

    def attention_shape(self, i: int) -> tuple[int, int, bool, bool]:
        """Layer i's attention: (head size, KV heads, has k_proj, has v_proj) - global layers with heads of their own
        (full_head_dim, full_kv_heads; no v_proj with full_k_eq_v), KV-sharing layers without k / v projections where
        kv_shared_no_kv_proj (Gemma 4); every layer alike otherwise."""
        full = i < len(self.layer_types) and self.layer_types[i] == "full"
        d = self.full_layer_head_dim if full else self.head_dim
        kvh = self.full_layer_kv_heads if full else self.num_kv_heads
        own_kv = not (self.kv_shared_no_kv_proj and i < len(self.kv_shared) and self.kv_shared[i])
        return d, kvh, own_kv, own_kv and not (full and self.full_k_eq_v)

    def _per_kind_attention_params(self, r: dict[str, int]) -> None:
        """Attention weights layer by layer where kinds differ in shape (Gemma 4, transformers Gemma4TextAttention):
        q_proj h -> heads x d and o_proj back, with d = full_head_dim on global layers; k_proj (and v_proj unless the
        layer is a global one with full_k_eq_v) h -> kv_heads x d on the layers that keep their own KV (kv_shared layers
        have none when kv_shared_no_kv_proj); q_norm of d on every layer, k_norm of d where k_proj is (v_norm has no
        weight)."""
        h = self.hidden_size
        for i, kind in enumerate(self.layer_types):
            if kind not in ("full", "sliding", "cross"):
                continue
            d, kvh, own_kv, has_v = self.attention_shape(i)
            q = self.num_heads * d
            r["attn_q"] += h * q
            r["attn_output"] += q * h
            if own_kv:
                r["attn_k"] += h * kvh * d
            if has_v:
                r["attn_v"] += h * kvh * d
            if self.qkv_bias:
                r["norm"] += q + (kvh * d if own_kv else 0) + (kvh * d if has_v else 0)
            if self.qk_norm:
                r["norm"] += d + (d if own_kv else 0)

    @property
    def q_dim(self) -> int:
        if self.is_mla:
            return self.num_heads * (self.qk_nope_head_dim + self.qk_rope_head_dim)
        return self.num_heads * self.head_dim

    @property
    def attn_out_dim(self) -> int:
        return self.num_heads * (self.v_head_dim or self.head_dim)

    # -- parameters by role --------------------------------------------------------------------
    def param_roles(self, active: bool = False) -> dict[str, int]:
        """Parameters by tensor role.

        ``active=True`` counts what one text token runs through: only the experts it is routed to
        (plus shared experts), both embedding matrices, and no vision encoder. Vendors differ on
        whether the embedding lookup counts as "active" (OpenAI's gpt-oss figures leave it out).
        """
        h, L = self.hidden_size, self.num_layers
        La = self.num_attention_layers  # layers with attention weights (all but DeciLM no-op / linear ones)
        r = dict.fromkeys(ROLES, 0)
        r["token_embd"] = self.vocab_size * h
        r["output"] = 0 if self.tie_word_embeddings else self.vocab_size * h
        if self.lm_head_bias:
            r["norm"] += self.vocab_size
        # attention (MLA's down-projections to the latents and a sparse-attention indexer: tp_replicated_attention)
        whole = self.tp_replicated_attention()
        r["attn_q"], r["attn_k"] = whole["attn_q"], whole["attn_k"]
        if self.is_mla:
            nope_rope = self.qk_nope_head_dim + self.qk_rope_head_dim
            r["attn_q"] += La * (self.q_lora_rank or h) * self.num_heads * nope_rope  # q_b_proj, or q_proj
            if self.q_lora_rank:
                r["norm"] += La * self.q_lora_rank
            r["attn_v"] = La * self.kv_lora_rank * self.num_heads * (self.qk_nope_head_dim + self.v_head_dim)
            r["norm"] += La * self.kv_lora_rank
        elif self.is_compressed:
            r.update(self._compressed_attention_params(r))
        elif self.per_kind_attention:
            self._per_kind_attention_params(r)
        else:
            kv = self.num_kv_heads * self.head_dim
            r["attn_q"] += La * h * self.q_dim
            r["attn_k"] += La * h * kv
            r["attn_v"] = La * h * self.num_kv_heads * (self.v_head_dim or self.head_dim)
            if self.qkv_bias:
                r["norm"] += La * (self.q_dim + kv + self.num_kv_heads * (self.v_head_dim or self.head_dim))
        if self.index_topk and not self.is_compressed:  # V3.2's indexer k_norm LayerNorm (projections: tp_replicated_attention)
            r["norm"] += self.indexed_layers * 2 * self.index_head_dim
        if not (self.is_compressed or self.per_kind_attention):
            r["attn_output"] = La * self.attn_out_dim * h
        if self.out_bias:
            r["norm"] += La * h
        if self.qk_norm and not self.per_kind_attention:
            r["norm"] += La * (self.qk_norm_params_per_layer or 2 * self.head_dim)
        n_linear = sum(1 for t in self.layer_types if t == "linear")
        if n_linear:  # DeciLM replace_with_linear attention: one hidden x hidden linear
            r["attn_output"] += n_linear * h * h
        # feed-forward
        moe_layers = set(self.moe_layers) if self.is_moe else set()
        n_moe = len(moe_layers)
        n_dense = L - n_moe
        dense_ff = self.dense_intermediate_size or self.intermediate_size
        mats = 3 if self.gated_mlp else 2
        up_like = dense_ff * h * n_dense  # one matrix's worth over dense layers
        if self.ffn_sizes:
            up_like = h * sum(f for i, f in enumerate(self.ffn_sizes) if i not in moe_layers)
        elif self.ffn_widths and not n_moe:
            up_like = sum(self.ffn_widths) * h
        if self.gated_mlp:
            r["ffn_gate"] += up_like
        r["ffn_up"] += up_like
        r["ffn_down"] += up_like
        if self.mlp_bias:
            r["norm"] += n_dense * ((mats - 1) * dense_ff + h)
        if n_moe:
            experts = self.experts_per_token if active else self.num_experts
            per_expert = self.expert_matrix_params
            shared = self.shared_expert_intermediate_size * h  # shared experts work at the full width
            for role in ("ffn_gate", "ffn_up", "ffn_down"):
                if role == "ffn_gate" and not self.gated_mlp:
                    continue
                r[role] += n_moe * (experts * per_expert + shared)
            r["ffn_gate_inp"] = n_moe * h * self.num_experts
            if self.model_type == "qwen2_moe" and self.shared_expert_intermediate_size:
                r["ffn_gate_inp"] += n_moe * h  # shared_expert_gate
            if self.model_type == "gpt_oss":  # expert biases (gate_up and down) and router bias
                r["norm"] += n_moe * (experts * (2 * self.moe_intermediate_size + h) + self.num_experts)
        # norms: per layer (pre-attention, pre-FFN; Gemma 2/3 add two post-norms) and the final one
        norm_width = h * (2 if self.norm_bias else 1)
        norms = L * self.norms_per_layer
        if self.ffn_sizes:  # DeciLM: a layer's pre-attention norm exists with its attention, pre-FFN norm with its FFN
            norms = (La + n_linear + self.num_recurrent_layers) + sum(1 for f in self.ffn_sizes if f)
        r["norm"] += (norms + 1) * norm_width
        if self.model_type == "gpt_oss":
            r["norm"] += L * self.num_heads  # attention sinks
        r["vision"] = 0 if active else self.vision_params  # the image encoder runs per image, not per token
        # families with unusual layers: recurrent mixers, their extras, per-layer embeddings
        for role, n in self.recurrent_params:
            r[role] += self.num_recurrent_layers * n
        for role, n in self.extra_params:
            r[role] += n
        # per-layer embeddings are looked up (one row per token), never multiplied: left out of
        # what a token runs through, as the vision encoder is
        r["per_layer_embd"] = 0 if active else self.per_layer_embd_params
        return r

    def _compressed_attention_params(self, r: dict[str, int]) -> dict[str, int]:
        """DeepSeek V4's attention, hyper-connections and routing extras by role, over all layers (DeepSeek V4
        inference/model.py ``Attention``, ``Compressor``, ``Indexer``, ``Block``, ``Gate``, ``Transformer``): wq_a
        [q_lora_rank, hidden] and wq_b [heads x head_dim, q_lora_rank] with q_norm; one wkv [head_dim, hidden] row that
        is key and value, with kv_norm; the grouped output wo_a [o_groups x o_lora_rank, heads x head_dim / o_groups]
        and wo_b [hidden, o_groups x o_lora_rank]; a sink logit per head. A compressed layer's ``Compressor``: wkv and
        wgate [coff x head_dim, hidden] (coff 2 where windows overlap, ratio 4), ape [ratio, coff x head_dim], norm
        [head_dim]. A CSA layer's indexer: wq_b, weights_proj (tp_replicated_attention) and its own compressor over
        index_head_dim (coff 2). Hyper-connections: per block hc_attn / hc_ffn fn [(2 + hc) x hc, hc x hidden], base
        [(2 + hc) x hc], scale [3]; hc_head fn [hc, hc x hidden], base [hc], scale [1]. The router's correction bias
        [experts] on all but the hash-routed layers (their token-id table tid2eid is an integer lookup, left out)."""
        h, L = self.hidden_size, self.num_layers
        D, H, rq, hc = self.head_dim, self.num_heads, self.q_lora_rank, self.hc_mult
        out = {k: r[k] for k in ("attn_q", "attn_k", "attn_v", "attn_output", "norm", "other")}
        out["attn_q"] += L * (H * D * rq if rq else h * H * D)  # wq_b (wq_a: tp_replicated_attention)
        out["attn_output"] += L * (self.o_lora_rank * H * D + h * self.o_groups * self.o_lora_rank)
        out["norm"] += L * ((rq or 0) + D + H)  # q_norm, kv_norm, attn_sink
        out["attn_k"] += self.compressor_linear_params
        out["norm"] += sum(r * coff * width + width for r, coff, width in self._compressors())  # ape [ratio, coff x width], norm
        mix = (2 + hc) * hc
        out["other"] += L * 2 * (mix * hc * h + mix + 3) + hc * hc * h + hc + 1
        if self.is_moe:
            out["norm"] += (len(self.moe_layers) - min(self.num_hash_layers, len(self.moe_layers))) * self.num_experts
        return out

    def param_count(self, active: bool = False) -> int:
        return sum(self.param_roles(active).values())

    def tp_replicated_attention(self) -> dict[str, int]:
        """Attention parameters by role that every tensor-parallel rank keeps whole instead of a 1 / tp slice: MLA's
        down-projections to the latents, q_a_proj and kv_a_proj_with_mqa (vLLM's DeepseekV2MLAAttention builds them as
        fused_qkv_a_proj with disable_tp=True, or kv_a_proj_with_mqa as a ReplicatedLinear; SGLang likewise), and
        DeepSeek V3.2's lightning indexer, wq_b from the q latent, wk and weights_proj (vLLM's Indexer: "no tensor
        parallel, just replicated"). The MoE routers are replicated too (vLLM's gate is a ReplicatedLinear): the whole
        ffn_gate_inp role. Norms, also replicated, are left out: a few KB a layer."""
        h, La = self.hidden_size, self.num_attention_layers
        r = {"attn_q": 0, "attn_k": 0}
        if self.is_mla:
            r["attn_q"] += La * h * (self.q_lora_rank or 0)  # without a q latent, q_proj is column-parallel
            r["attn_k"] += La * h * (self.kv_lora_rank + self.qk_rope_head_dim)
        if self.is_compressed:  # DeepSeek V4: wq_a and the single kv row wkv, replicated as MLA's down-projections
            r["attn_q"] += La * h * (self.q_lora_rank or 0)
            r["attn_k"] += La * h * self.num_kv_heads * self.head_dim
        n_index = self.indexed_layers
        if self.index_topk:  # wq_b from the q latent and weights_proj; V3.2's indexer also has its own wk
            r["attn_q"] += n_index * (self.q_lora_rank or h) * self.index_n_heads * self.index_head_dim
            r["attn_k"] += n_index * (0 if self.is_compressed else h * self.index_head_dim) + n_index * h * self.index_n_heads
        return r


# -- reading config.json ---------------------------------------------------------------------

def _first(cfg: dict, *keys, default=None):
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return default


def _require_int(value, name: str, problems: list[tuple[str, str]]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        problems.append((name, f"must be a positive integer, got {value!r}"))
        return 1
    return value


def from_hf_config(config: dict, *, where: str = "custom_model") -> Architecture:
    """Read a ``config.json`` object (any family) into an :class:`Architecture`.

    Raises :class:`RequestError` naming every missing or malformed key at once. Keys a family's
    ``*Config`` class fills in when the file omits them (``FAMILY_DEFAULTS[...]["config"]``) are
    taken from there and listed in ``Architecture.assumed``.
    """
    if not isinstance(config, dict):
        raise RequestError([(where, "must be a config.json object")])
    bad = check_config(config, where)  # types and bounds of every key read below (configkeys.py)
    if bad:
        raise RequestError(bad)
    top = config
    cfg = config
    if isinstance(cfg.get("text_config"), dict):  # multimodal: the language model is nested
        merged = dict(cfg["text_config"])
        merged.setdefault("model_type", cfg.get("model_type"))
        for k in ("tie_word_embeddings",):
            if k not in merged and k in cfg:
                merged[k] = cfg[k]
        cfg = merged
        where = f"{where}.text_config"
    model_type = str(cfg.get("model_type") or "unknown")
    cfg = families.normalize(cfg, model_type)
    if model_type in _RECURRENT_FAMILIES and model_type not in families.READERS:
        raise RequestError([(f"{where}.model_type", f"{model_type!r} is a recurrent family (state-space or RNN layers, "
                                                    f"no attention KV cache) that vramplan does not read; it reads "
                                                    f"recurrent layers for {', '.join(sorted(families.READERS))}")])
    # MiniMax's attn_type_list marks its linear (lightning) layers 0; MiniMax-M2 lists only 1s, softmax attention
    mixer = next((k for k in _MIXER_KEYS if cfg.get(k) is not None
                  and (k != "attn_type_list" or 0 in (cfg[k] if isinstance(cfg[k], list) else [0]))), None)
    if mixer and model_type not in families.READERS:
        raise RequestError([(f"{where}.{mixer}", f"belongs to recurrent, linear-attention or convolution layers, which "
                                                 f"vramplan reads for {', '.join(sorted(families.READERS))} only: read as "
                                                 f"model_type {model_type!r}, those layers would be counted as attention "
                                                 f"(a KV cache, parameters and speed they do not have)")])
    compressed = next((k for k in _COMPRESSED_ATTENTION_KEYS if cfg.get(k) is not None), None)
    if compressed and model_type not in families.READERS:
        raise RequestError([(f"{where}.{compressed}", f"belongs to DeepSeek V4's compressed attention, grouped output "
                                                      f"projection and hyper-connections, which vramplan reads for "
                                                      f"model_type 'deepseek_v4' only: read as model_type {model_type!r}, "
                                                      f"its cache, parameters and speed would be wrong")])
    fam = FAMILY_DEFAULTS.get(model_type, {})
    assumed: list[str] = []
    problems: list[tuple[str, str]] = []
    class_defaults = fam.get("config", {})
    for key, value in class_defaults.items():
        if cfg.get(key) is None:
            cfg = {**cfg, key: value}
            assumed.append(f"{key} = {value} ({model_type} default; not in config)")

    hidden = _first(cfg, "hidden_size", "n_embd", "d_model")
    layers = _first(cfg, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    heads = _first(cfg, "num_attention_heads", "n_head", "num_heads")
    blocks = _decilm_blocks(cfg, hidden, heads, layers, where, problems)
    if problems:  # a malformed block_configs: its keys are what is wrong, not the null ones it would fill in
        raise RequestError(problems)
    if blocks:  # the per-layer shapes fill in the keys a DeciLM config leaves null
        cfg = {**cfg, "intermediate_size": max(blocks[1]) or 1, "num_key_value_heads": blocks[2]}
    vocab = _first(cfg, "vocab_size", "padded_vocab_size")
    inter = _first(cfg, "intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size")
    required = (("hidden_size", hidden), ("num_hidden_layers", layers), ("num_attention_heads", heads),
                ("vocab_size", vocab), ("intermediate_size", inter))
    missing = [name for name, v in required if v is None]
    if missing:
        raise RequestError([(f"{where}.{m}", "is required to size the model but is missing") for m in missing])
    hidden = _require_int(hidden, f"{where}.hidden_size", problems)
    layers = _require_int(layers, f"{where}.num_hidden_layers", problems)
    heads = _require_int(heads, f"{where}.num_attention_heads", problems)
    vocab = _require_int(vocab, f"{where}.vocab_size", problems)
    inter = _require_int(inter, f"{where}.intermediate_size", problems)

    kv_heads = _first(cfg, "num_key_value_heads", "num_kv_heads", "n_head_kv")
    if kv_heads is None:
        if cfg.get("multi_query"):
            kv_heads = 1
        else:
            kv_heads = heads
            assumed.append("num_key_value_heads = num_attention_heads (no GQA key in config)")
    kv_heads = _require_int(kv_heads, f"{where}.num_key_value_heads", problems)
    if kv_heads > heads:
        problems.append((f"{where}.num_key_value_heads", f"{kv_heads} is more than num_attention_heads {heads}"))
    head_dim = cfg.get("head_dim")
    if head_dim is None:  # derived: only worth reporting when hidden_size and heads were sound
        head_dim = hidden // max(heads, 1) or (1 if problems else 0)
        if not head_dim:
            problems.append((f"{where}.head_dim", f"hidden_size {hidden} / num_attention_heads {heads} "
                                                  "gives no whole head dimension; give head_dim"))
            head_dim = 1
    head_dim = _require_int(head_dim, f"{where}.head_dim", problems)

    tie = cfg.get("tie_word_embeddings")
    if tie is None:
        tie = fam.get("tie_word_embeddings", True)
        if model_type not in FAMILY_DEFAULTS:
            assumed.append("tie_word_embeddings = true (transformers' default; not in config)")

    layer_types, window = _attention_layout(cfg, model_type, layers)
    if blocks:
        layer_types, window = blocks[0], None

    # mixture of experts
    n_exp = _first(cfg, "num_local_experts", "num_experts", "n_routed_experts", default=0) or 0
    top_k = _first(cfg, "num_experts_per_tok", "moe_topk", "top_k", "experts_per_token", "moe_k", default=0) or 0
    moe_inter = shared_inter = dense_inter = 0
    moe_layers: tuple[int, ...] = ()
    if n_exp:
        moe_inter = _first(cfg, "moe_intermediate_size", "expert_intermediate_size", default=None)
        if moe_inter is None:
            moe_inter = inter  # Mixtral, Phi-3.5-MoE, gpt-oss, Llama 4: the experts are full FFNs
        if cfg.get("n_shared_experts"):
            shared_inter = int(cfg["n_shared_experts"]) * moe_inter
        elif cfg.get("shared_expert_intermediate_size"):
            shared_inter = int(cfg["shared_expert_intermediate_size"])
        if isinstance(cfg.get("moe_layers"), list) and cfg["moe_layers"]:  # Llama 4 states them
            moe_layers = tuple(int(i) for i in cfg["moe_layers"] if 0 <= int(i) < layers)
        else:
            first_dense = int(cfg.get("first_k_dense_replace") or 0)
            step = int(_first(cfg, "interleave_moe_layer_step", "decoder_sparse_step", "moe_layer_freq",
                              default=1) or 1)
            only_mlp = set(cfg.get("mlp_only_layers") or [])
            moe_layers = tuple(i for i in range(layers)
                               if i >= first_dense and (i + 1) % step == 0 and i not in only_mlp)
        dense_inter = _first(cfg, "intermediate_size_mlp", default=inter)
        if model_type in ("llama4_text", "llama4"):
            shared_inter = moe_inter  # one shared expert per MoE layer
        if not top_k:
            problems.append((f"{where}.num_experts_per_tok", "is required for a mixture-of-experts model"))
        elif top_k > n_exp:
            problems.append((f"{where}.num_experts_per_tok", f"{top_k} is more than the {n_exp} experts"))

    if not n_exp and model_type not in families.READERS:
        # a count of experts under a name the generic reading does not take (another family's spelling): read as a
        # dense model its parameters, memory and speed would be wrong
        stray = next((k for k, v in cfg.items() if "expert" in k.lower() and isinstance(v, int)
                      and not isinstance(v, bool) and v > 0), None)
        if stray:
            problems.append((f"{where}.{stray}", "names experts, but none of the expert counts vramplan reads "
                                                 "(num_local_experts, num_experts, n_routed_experts) is set: read as a "
                                                 "dense model its parameters, memory and speed would be wrong - give "
                                                 "num_local_experts, num_experts_per_tok and moe_intermediate_size"))

    shared_indexers = 0
    if cfg.get("index_topk"):  # DeepSeek V3.2's sparse attention: its indexer needs its shape
        problems += [(f"{where}.{k}", "is required with index_topk (the sparse-attention indexer)")
                     for k in ("index_n_heads", "index_head_dim") if not cfg.get(k)]
        shared_indexers = _shared_indexers(cfg, layers, where, problems)

    # multi-head latent attention
    kv_lora = int(cfg.get("kv_lora_rank") or 0)
    v_head = int(cfg.get("v_head_dim") or 0)
    if kv_lora:
        missing_mla = [k for k in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim") if not cfg.get(k)]
        problems += [(f"{where}.{k}", "is required with kv_lora_rank (multi-head latent attention)")
                     for k in missing_mla]

    # q/k normalization: per-head weights (Qwen3, Gemma 3), over the whole projection (OLMo 2),
    # or one per head (Cohere)
    qk_kind = fam.get("qk_norm", False)
    if fam.get("qk_norm_key"):
        qk_kind = qk_kind if cfg.get(fam["qk_norm_key"]) else False
    qk_params = 0
    if qk_kind == "full" or qk_kind == "heads":
        qk_params = (heads + kv_heads) * head_dim
    elif qk_kind:
        qk_params = 2 * head_dim

    if problems:
        raise RequestError(problems)
    base = {"layers": layers, "hidden": hidden, "heads": heads, "head_dim": head_dim, "layer_types": layer_types,
            "n_experts": int(n_exp), "n_moe": len(moe_layers), "shared_inter": int(shared_inter), "inter": inter,
            "moe_inter": int(moe_inter)}
    special = families.read(cfg, top, model_type, base, where=where, problems=problems, assumed=assumed)
    raw_types = cfg.get("layer_types")
    if not special.get("layer_types") and isinstance(raw_types, list) and len(raw_types) == layers:
        # a kind the generic reading does not know (a recurrent or convolution layer of a family that has no
        # reader in vramplan.families) would be counted as attention - its KV, parameters and speed wrong
        unknown = next(((i, t) for i, t in enumerate(raw_types) if str(t) not in _FULL | _SLIDING), None)
        if unknown is not None:
            problems.append((f"{where}.layer_types[{unknown[0]}]",
                             f"{unknown[1]!r} is a layer kind vramplan does not read for model_type {model_type!r}: "
                             f"it reads {', '.join(sorted(_FULL))} and {', '.join(sorted(_SLIDING))} layers here; "
                             f"recurrent and convolution layers only for the families it knows "
                             f"({', '.join(sorted(families.READERS))})"))
    if problems:
        raise RequestError(problems)
    if special.get("layer_types"):  # a family's own layout decides which layers are windowed
        window = cfg.get("sliding_window") if "sliding" in special["layer_types"] else None
    fields = dict(
        model_type=model_type,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads if not kv_lora else heads,
        head_dim=head_dim if not kv_lora else int(cfg.get("qk_nope_head_dim", 0)) + int(cfg.get("qk_rope_head_dim", 0)),
        v_head_dim=v_head,
        intermediate_size=inter,
        vocab_size=vocab,
        tie_word_embeddings=bool(tie),
        max_position_embeddings=_first(cfg, "max_position_embeddings", "n_positions", "max_seq_len"),
        layer_types=layer_types,
        sliding_window=int(window) if window else None,
        attn_mask_window=_attn_mask_window(cfg, model_type, window),
        window_is_chunk=bool(window) and window == cfg.get("attention_chunk_size") and "sliding" in layer_types,
        gated_mlp=bool(fam.get("gated_mlp", True)),
        qkv_bias=bool(_first(cfg, "attention_bias", "qkv_bias", default=fam.get("qkv_bias", False))),
        out_bias=bool(fam.get("out_bias", False)),
        mlp_bias=bool(_first(cfg, "mlp_bias", default=fam.get("mlp_bias", False))),
        lm_head_bias=bool(_first(cfg, "lm_head_bias", default=fam.get("lm_head_bias", False))),
        qk_norm=bool(qk_params),
        qk_norm_params_per_layer=qk_params,
        partial_rotary=_partial_rotary(cfg),
        norms_per_layer=int(fam.get("norms_per_layer", 2)),
        norm_bias=bool(fam.get("norm_bias", False)),
        norm_scale_fp32=bool(fam.get("norm_scale_fp32", False)),
        attn_softcap=_softcap(cfg, fam, "attn_logit_softcapping"),
        final_softcap=_softcap(cfg, fam, "final_logit_softcapping"),
        num_experts=int(n_exp),
        experts_per_token=int(top_k),
        moe_intermediate_size=int(moe_inter),
        shared_expert_intermediate_size=int(shared_inter),
        n_shared_experts=int(cfg.get("n_shared_experts") or 0) if n_exp else 0,
        config_model_type=str(top.get("model_type") or model_type),
        **_raw_config_facts(top),
        moe_layers=moe_layers,
        dense_intermediate_size=int(dense_inter),
        ffn_sizes=blocks[1] if blocks else (),
        kv_lora_rank=kv_lora,
        q_lora_rank=int(cfg.get("q_lora_rank") or 0),
        qk_rope_head_dim=int(cfg.get("qk_rope_head_dim") or 0),
        qk_nope_head_dim=int(cfg.get("qk_nope_head_dim") or 0),
        index_n_heads=int(cfg.get("index_n_heads") or 0) if cfg.get("index_topk") else 0,
        index_head_dim=int(cfg.get("index_head_dim") or 0) if cfg.get("index_topk") else 0,
        index_topk=int(cfg.get("index_topk") or 0),
        shared_indexer_layers=shared_indexers,
        vision_params=_vision_params(top, hidden),
    )
    fields.update(special)
    fields["sliding_window"] = int(window) if window else None
    fields["rope_table_elements"] = _rope_table_elements(cfg, model_type, head_dim, int(cfg.get("qk_rope_head_dim") or 0),
                                                         tuple(fields["layer_types"]), int(fields.get("full_head_dim") or 0))
    return Architecture(**fields, assumed=tuple(assumed))


def _shared_indexers(cfg: dict, layers: int, where: str, problems: list[tuple[str, str]]) -> int:
    """Layers whose sparse-attention indexer is shared (GLM-5.x, transformers modular_glm_moe_dsa.py
    ``GlmMoeDsaAttention``: ``skip_topk = config.indexer_types[layer_idx] == "shared"`` and then ``self.indexer =
    None`` - the layer reuses the previous full layer's top-k). ``indexer_types`` lists "full" / "shared" per layer;
    without it, ``index_topk_freq`` / ``index_skip_topk_offset`` give the schedule as GlmMoeDsaConfig derives it
    ("full" where max(i - offset + 1, 0) % freq == 0); with neither, every layer has its own (DeepSeek V3.2)."""
    kinds = cfg.get("indexer_types")
    if kinds is not None:
        if len(kinds) != layers or set(kinds) - {"full", "shared"}:
            problems.append((f"{where}.indexer_types", f"must list 'full' or 'shared' for each of the {layers} layers"))
            return 0
        if kinds and kinds[0] == "shared":
            problems.append((f"{where}.indexer_types[0]", "the first layer has no earlier indexer to share: 'full'"))
            return 0
        return kinds.count("shared")
    freq = cfg.get("index_topk_freq")
    if freq is None:
        return 0
    offset = cfg.get("index_skip_topk_offset")
    offset = 2 if offset is None else offset
    return sum(1 for i in range(layers) if max(i - offset + 1, 0) % freq)  # freq >= 1 (configkeys)


def _decilm_blocks(cfg: dict, hidden, heads, layers, where: str, problems: list[tuple[str, str]]):
    """DeciLM / Nemotron NAS ``block_configs``: each layer's attention (GQA group size, or a no-op, or
    one linear) and FFN (``ffn_mult`` of the hidden size, or a no-op, or one linear).

    Returns (layer_types, ffn_sizes, kv_heads) or None when the config has no block_configs. FFN
    width = round_up(int(2 * ffn_mult * hidden / 3), 256), as ``_ffn_mult_to_intermediate_size`` in
    the model's modeling_decilm.py (and vLLM / llama.cpp's converter) computes it.
    """
    raw = cfg.get("block_configs")
    if raw is None:
        return None
    at = f"{where}.block_configs"
    if not (isinstance(raw, list) and raw and all(isinstance(b, dict) for b in raw)):
        problems.append((at, "must be a list of per-layer objects"))
        return None
    if not (isinstance(hidden, int) and isinstance(heads, int) and hidden > 0 and heads > 0):
        return None  # reported with the other required keys
    if isinstance(layers, int) and layers != len(raw):
        problems.append((at, f"has {len(raw)} entries for num_hidden_layers {layers}"))
        return None
    kinds, ffn, groups = [], [], set()
    for i, b in enumerate(raw):
        attn, mlp = b.get("attention") or {}, b.get("ffn") or {}
        if attn.get("no_op"):
            kinds.append("none")
        elif attn.get("replace_with_linear"):
            kinds.append("linear")
        else:
            group = attn.get("n_heads_in_group")
            if isinstance(group, bool) or not isinstance(group, int) or group <= 0 or heads % group:
                problems.append((f"{at}[{i}].attention.n_heads_in_group",
                                 f"must be a positive divisor of num_attention_heads {heads}, got {group!r}"))
                return None
            groups.add(group)
            kinds.append("full")
        if mlp.get("no_op"):
            ffn.append(0)
        elif mlp.get("replace_with_linear"):
            ffn.append(0)
            problems.append((f"{at}[{i}].ffn.replace_with_linear", "a linear FFN replacement is not supported"))
        else:
            mult = mlp.get("ffn_mult")
            if isinstance(mult, bool) or not isinstance(mult, (int, float)) or mult <= 0:
                problems.append((f"{at}[{i}].ffn.ffn_mult", f"must be a positive number, got {mult!r}"))
                return None
            width = int(2 * mult * hidden / 3)
            ffn.append(-(-width // 256) * 256)
    if len(groups) > 1:
        problems.append((at, f"attention layers use different n_heads_in_group {sorted(groups)}; "
                             "one KV-head count per model is supported"))
        return None
    kv_heads = heads // groups.pop() if groups else heads
    return tuple(kinds), tuple(ffn), kv_heads


def _raw_config_facts(top: dict) -> dict[str, Any]:
    """The Architecture fields that read the config's own top level (see Architecture.config_local_experts)."""
    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    experts = top.get("num_local_experts")
    qc = top.get("quantization_config")
    return {"config_local_experts": int(experts) if whole(experts) and experts > 0 else 0,
            "checkpoint_quantized": isinstance(qc, dict) and bool(qc.get("quant_method")),
            "config_text_at_top": all(whole(top.get(k)) for k in ("num_attention_heads", "num_hidden_layers",
                                                                  "intermediate_size", "vocab_size"))
                                  and whole(top.get("hidden_size", top.get("n_embd")))}


def _attention_layout(cfg: dict, model_type: str, layers: int) -> tuple[tuple[str, ...], int | None]:
    """Which layers attend within a window, and the window. Chunked attention (Llama 4) is
    treated as sliding with window = ``attention_chunk_size``: both bound the KV a layer keeps."""
    window = cfg.get("sliding_window")
    if cfg.get("use_sliding_window") is False:
        window = None
    chunk = cfg.get("attention_chunk_size")
    raw_types = cfg.get("layer_types")
    if isinstance(raw_types, list) and len(raw_types) == layers:
        layer_types = tuple("sliding" if str(t) in _SLIDING else "full" for t in raw_types)
        if chunk and "chunked_attention" in raw_types:
            window = chunk
    elif chunk and model_type in ("llama4_text", "llama4"):
        # transformers Llama4TextConfig: layers that use RoPE attend in chunks; every
        # ``no_rope_layer_interval``-th layer (default 4) is a global NoPE layer
        flags = cfg.get("no_rope_layers")
        if not (isinstance(flags, list) and len(flags) == layers):
            interval = int(cfg.get("no_rope_layer_interval") or 4)
            flags = [int((i + 1) % interval != 0) for i in range(layers)]
        layer_types = tuple("sliding" if f else "full" for f in flags)
        window = chunk
    elif window and isinstance(cfg.get("sliding_window_pattern"), str):
        # EXAONE 4.0: one letter a layer, the pattern repeated - L local (the window), G global
        p = cfg["sliding_window_pattern"]
        layer_types = tuple("sliding" if p[i % len(p)] == "L" else "full" for i in range(layers))
    elif window and cfg.get("sliding_window_pattern"):
        p = int(cfg["sliding_window_pattern"])  # Gemma 3, Cohere 2: every p-th layer is global
        layer_types = tuple("full" if (i + 1) % p == 0 else "sliding" for i in range(layers))
    elif window and model_type == "gemma2":
        layer_types = tuple("sliding" if i % 2 == 0 else "full" for i in range(layers))
    elif window and model_type in ("mistral", "mixtral") and window < (cfg.get("max_position_embeddings") or 0):
        layer_types = ("sliding",) * layers
    else:
        layer_types = ("full",) * layers
        if model_type == "phi3":
            window = None  # Phi-3's config names a window its attention layers do not use
    if "sliding" not in layer_types:
        window = None
    return layer_types, window


def _softcap(cfg: dict, fam: dict, key: str) -> bool:
    """Whether ``key`` caps its values: a positive number in the config; where the file leaves the key out, the
    family's ``*Config`` default (Gemma2Config: 50.0 and 30.0); an explicit null or 0 turns it off."""
    value = cfg[key] if key in cfg else fam.get("softcap", {}).get(key)
    return bool(value) and value > 0


def _partial_rotary(cfg: dict) -> bool:
    """Whether the rotary embedding turns only part of each head (partial_rotary_factor below 1; GPT-NeoX style
    rotary_pct); a value that is not a number reads as full rotary, as transformers' default 1.0."""
    factor = _first(cfg, "partial_rotary_factor", "rotary_pct", default=1.0)
    return isinstance(factor, (int, float)) and not isinstance(factor, bool) and 0 < factor < 1


#: Families whose attention layers carry no rotary embedding (vLLM's model code builds no table for them):
#: Jamba and Nemotron-H (NoPE attention between Mamba layers), and the learned / ALiBi position families.
_NO_ROPE_FAMILIES = {"jamba", "nemotron_h", "mamba", "mamba2", "falcon_mamba", "gpt2", "gpt_bigcode", "opt", "bloom",
                     "mpt"}
#: Families whose sliding-window layers take a rope of their own base (rope_local_base_freq, no scaling): a second table.
_LOCAL_ROPE_FAMILIES = {"gemma3", "gemma3_text", "gemma3n", "gemma3n_text"}


def _rope_positions(rope: dict, max_pos: int, original: int) -> int:
    """Positions of one cos/sin table as vLLM's get_rope sizes it for the rope's scaling type
    (vllm/model_executor/layers/rotary_embedding/__init__.py and the classes it picks).

    - default, llama3, mrope: ``max_position`` (RotaryEmbedding._compute_cos_sin_cache);
    - linear, dynamic: ``max_position x factor`` (LinearScalingRotaryEmbedding, DynamicNTKScalingRotaryEmbedding);
    - yarn, deepseek_yarn: ``ceil(original_max_position_embeddings x factor)`` (YaRNScalingRotaryEmbedding,
      DeepseekScalingRotaryEmbedding - get_rope hands them the original length);
    - longrope (su): ``original + max_position`` (Phi3LongRoPEScaledRotaryEmbedding keeps the short and the long table).
    """
    kind = str(rope.get("rope_type") or rope.get("type") or "default")
    factor = rope.get("factor")
    factor = float(factor) if isinstance(factor, (int, float)) and not isinstance(factor, bool) and factor > 0 else 1.0
    if kind in ("linear", "dynamic"):
        return int(max_pos * factor)
    if kind in ("yarn", "deepseek_yarn"):
        return math.ceil(original * factor)
    if kind in ("longrope", "su"):
        return original + max_pos
    return max_pos


def _rope_table_elements(cfg: dict, model_type: str, head_dim: int, qk_rope_head_dim: int,
                         layer_types: tuple[str, ...], full_head_dim: int = 0) -> int:
    """Elements of the cos/sin tables a runtime that precomputes them holds for the text model: one table of
    ``positions x rotary_dim`` per distinct rope (cos and sin, rotary_dim / 2 each), shared by every layer - vLLM's
    get_rope caches one RotaryEmbedding per (head size, rotary dim, max position, scaling, dtype), whose
    ``cos_sin_cache`` buffer is ``_compute_cos_sin_cache()`` (base.py). ``rotary_dim`` is the config's rotary_dim
    where it states one, else head_dim x partial_rotary_factor (MLA: qk_rope_head_dim). Gemma 3 / 3n add a second
    table for their sliding layers' local base (vLLM gemma3.py: rope_local_base_freq, no scaling). transformers v5's
    per-layer-type ``rope_parameters`` give the global layers' rope under ``full_attention`` (over ``full_head_dim``
    where global layers have heads of their own size, Gemma 4's global_head_dim) and, where the config states one for
    ``sliding_attention`` and no rope_local_base_freq, a second table for the sliding layers (vLLM gemma4.py builds one
    get_rope per layer type). 0 for families without rotary embeddings."""
    all_params = cfg.get("rope_parameters") if isinstance(cfg.get("rope_parameters"), dict) else None
    params = all_params
    sliding_rope = None
    if params and isinstance(params.get("full_attention"), dict):  # transformers v5: one rope per layer type
        params = params["full_attention"]
        if isinstance(all_params.get("sliding_attention"), dict):
            sliding_rope = all_params["sliding_attention"]
    rope = params or (cfg.get("rope_scaling") if isinstance(cfg.get("rope_scaling"), dict) else {})
    if (model_type in _NO_ROPE_FAMILIES or cfg.get("position_embedding_type") in ("nope", "alibi", "absolute")
            or not any(t in ("full", "sliding") for t in layer_types or ("full",))):
        return 0
    max_pos = _first(cfg, "max_position_embeddings", "n_positions", "max_seq_len", default=0) or 0
    original = _first(rope, "original_max_position_embeddings", default=None) \
        or _first(cfg, "original_max_position_embeddings", default=None) or max_pos
    factor = _first(rope, "partial_rotary_factor", default=None) or _first(cfg, "partial_rotary_factor", "rotary_pct",
                                                                           default=1.0)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor <= 1:
        factor = 1.0
    rotary_dim = qk_rope_head_dim or cfg.get("rotary_dim") or int((full_head_dim or head_dim) * factor)  # MiniMax-M2 / GPT-J state it
    elements = _rope_positions(rope, int(max_pos), int(original)) * rotary_dim
    if model_type in _LOCAL_ROPE_FAMILIES and cfg.get("rope_local_base_freq") and "sliding" in layer_types:
        elements += int(max_pos) * rotary_dim  # the local rope: default scaling at the model's max position
    elif sliding_rope is not None and not cfg.get("rope_local_base_freq") and "sliding" in layer_types:
        local = sliding_rope.get("partial_rotary_factor")
        local = local if isinstance(local, (int, float)) and not isinstance(local, bool) and 0 < local <= 1 else 1.0
        elements += _rope_positions(sliding_rope, int(max_pos), int(original)) * int(head_dim * local)
    return elements


def _attn_mask_window(cfg: dict, model_type: str, window: int | None) -> int | None:
    """The sliding window transformers' own attention mask applies, where it differs from the KV layout.

    Phi-3's modeling code builds a sliding-window mask from ``config.sliding_window`` on every layer
    (transformers models/phi3/modeling_phi3.py ``Phi3Model.forward``: ``create_sliding_window_causal_mask``
    when ``sliding_window`` is set), although :func:`_attention_layout` treats its layers as global
    (the window does not bound what the KV cache keeps). Other families mask their sliding layers.
    """
    if model_type == "phi3" and isinstance(cfg.get("sliding_window"), int) and cfg["sliding_window"] > 0:
        return int(cfg["sliding_window"])
    return int(window) if window else None


#: ``vision_config.model_type`` of the Qwen3-VL vision tower (Qwen3-VL, Qwen3.5 / 3.6 - whose ``Qwen3_5VisionConfig``
#: subclasses ``Qwen3VLVisionConfig`` without DeepStack).
_QWEN3_VL_VISION = {"qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_vision", "qwen3_5_moe", "qwen3_5_moe_vision"}


def _qwen3_vl_vision_params(vc: dict, h: int, inter: int, depth: int) -> int:
    """``Qwen3VLVisionModel`` (transformers modeling_qwen3_vl.py): a biased ``nn.Conv3d`` patch embedding of kernel
    (temporal_patch_size, patch_size, patch_size) over ``in_channels``, a learned ``pos_embed`` of
    ``num_position_embeddings`` rows, ``depth`` blocks (two LayerNorms, biased qkv and proj, biased linear_fc1 / fc2 MLP)
    and ``Qwen3VLVisionPatchMerger``: a LayerNorm of h, linear_fc1 (h m^2 -> h m^2) and linear_fc2 (h m^2 ->
    out_hidden_size), both biased, with m = spatial_merge_size; one more merger per ``deepstack_visual_indexes`` entry,
    its LayerNorm over h m^2 (use_postshuffle_norm). Qwen3.5 lists no DeepStack layers."""
    # configkeys has bounded these keys (positive ints where present); absent ones take Qwen3VLVisionConfig's defaults
    c, p, t = vc.get("in_channels") or 3, vc.get("patch_size") or 16, vc.get("temporal_patch_size") or 2
    merged = h * (vc.get("spatial_merge_size") or 2) ** 2
    out = vc.get("out_hidden_size") or 3584
    n_deep = len(vc.get("deepstack_visual_indexes") or [])
    merger = merged * merged + merged + merged * out + out
    return (c * t * p * p * h + h + (vc.get("num_position_embeddings") or 2304) * h + depth * _vit_block_params(h, inter)
            + 2 * h + merger + n_deep * (2 * merged + merger))


def _vit_block_params(h: int, inter: int) -> int:
    """One SigLIP / CLIP-style ViT block (also Qwen3-VL's): two LayerNorms with bias, biased q / k / v / o, a biased
    two-matrix MLP."""
    return 4 * h * h + 4 * h + 2 * h * inter + inter + h + 4 * h


def _vision_params(config: dict, text_hidden: int) -> int:
    """Parameters of a multimodal model's image encoder and projector, from ``vision_config``.

    Counted from the encoder's transformer shape (attention 4·h², MLP 2 or 3·h·i, biases and
    norms) plus patch/position embeddings and the projector into the language model; the
    layouts follow transformers' SigLIP (Gemma 3), Pixtral (Mistral 3) and Llama 4 vision code.
    Returns 0 for text-only configs.
    """
    vc = config.get("vision_config")
    if not isinstance(vc, dict):
        return 0
    h = vc.get("hidden_size")
    inter = vc.get("intermediate_size")
    n = vc.get("num_hidden_layers") or vc.get("depth")
    if not all(isinstance(x, int) and x > 0 for x in (h, inter, n)):
        return 0
    kind = str(vc.get("model_type") or "")
    if kind in _QWEN3_VL_VISION:
        return _qwen3_vl_vision_params(vc, h, inter, n)
    c = int(vc.get("num_channels") or 3)
    p = int(vc.get("patch_size") or 14)
    img = int(vc.get("image_size") or 0)
    patches = (img // p) ** 2 if img else 0
    if kind == "pixtral":  # RMSNorm, gated MLP, no biases, rotary positions
        per_layer = 4 * h * h + 3 * h * inter + 2 * h
        merge = int(config.get("spatial_merge_size") or 1)
        encoder = n * per_layer + c * p * p * h + h
        projector = h + (h * merge * merge) * h + h * text_hidden + text_hidden * text_hidden
        return encoder + projector
    # SigLIP / CLIP-style ViT: LayerNorm with bias, biased projections, 2-matrix GELU MLP
    encoder = n * _vit_block_params(h, inter) + c * p * p * h + patches * h + 2 * h
    if kind == "llama4_vision_model":
        encoder += h + h + 2 * h  # class embedding, extra position, second (pre) LayerNorm
        proj_in = int(vc.get("projector_input_dim") or h)
        proj_out = int(vc.get("projector_output_dim") or proj_in)
        out_dim = int(vc.get("vision_output_dim") or proj_out)
        adapter = inter * proj_in + proj_out * proj_out  # pixel-shuffle MLP
        return encoder + adapter + out_dim * text_hidden
    if kind == "siglip_vision_model":  # Gemma 3: soft-embedding norm + input projection
        return encoder + h + h * text_hidden
    return encoder + h * text_hidden
