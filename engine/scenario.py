"""Turn a resolved request into a Scenario: flat, named, unit-bearing numbers.

:data:`VARIABLES` is the whole vocabulary formulas may use besides runtime constants (``rt_*``)
and other formulas' ids; the formula loader rejects any other name. Flags are 0 or 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from . import follows, hardware, keptmodules
from .architecture import ROLES, Architecture
from .elementwise import number_or, where
from .errors import RequestError

if TYPE_CHECKING:
    from .registry import Entry
    from .resolve import Resolved

#: name → (unit, meaning)
VARIABLES: dict[str, tuple[str, str]] = {
    # model architecture
    "n_layers": ("layers", "transformer layers"),
    "hidden": ("elements", "hidden size"),
    "n_heads": ("heads", "attention (query) heads"),
    "n_kv_heads": ("heads", "key/value heads (GQA/MQA)"),
    "n_kv_heads_full": ("heads", "key/value heads of a global-attention layer: n_kv_heads, or Gemma 4's "
                                 "num_global_key_value_heads where global layers have their own"),
    "head_dim": ("elements", "query/key head dimension"),
    "q_dim": ("elements", "query projection width (heads x head_dim)"),
    "kv_dim": ("elements", "key projection width (kv heads x head_dim)"),
    "attn_out_dim": ("elements", "attention output width (heads x v head dim)"),
    "intermediate": ("elements", "dense feed-forward width"),
    "vocab": ("tokens", "vocabulary size"),
    "kv_elems_layer": ("elements", "K+V elements one token adds to one full-attention layer's cache"),
    "index_key_elems": ("elements", "keys one token adds to one layer's sparse-attention indexer cache (index_head_dim; "
                                    "DeepSeek V3.2: 128); 0 without an indexer"),
    "mla_rope_elems": ("elements", "the rotated part of an MLA latent or a DeepSeek V4 row in the cache (qk_rope_head_dim; 0 "
                                   "without either)"),
    "residual_streams": ("streams", "hidden states a token's residual stream holds: hc_mult with hyper-connections (DeepSeek "
                                    "V4: 4), else 1"),
    "cmp_attention": ("flag", "1 for compressed attention (DeepSeek V4): one row per cached entry that is key and value, "
                              "in V4's FP8 layout under an FP8 cache; indexer keys per compressed entry, not per token"),
    "kv_cmp_equiv": ("layers", "compressed-attention entries one token adds over all layers, in layers' worth (DeepSeek V4: "
                               "the sum of 1 / compress_ratio over its compressed layers; 0 without compressed attention)"),
    "kv_cmp_index_equiv": ("layers", "the part of kv_cmp_equiv whose entries a lightning indexer selects (DeepSeek V4's "
                                     "ratio-4 CSA layers, which also cache an indexer key per entry); 0 without one"),
    "n_layers_indexed": ("layers", "layers with a lightning indexer (DeepSeek V3.2: every layer; V4: the ratio-4 layers)"),
    "cmp_ring_state_elems": ("elements", "the part of cmp_state_elems in the ratio-4 (CSA) layers' compressors and their "
                                         "indexers' (DeepSeek V4); 0 without one"),
    "cmp_state_elems": ("elements", "fp32 elements of one sequence's compressor state over all layers (DeepSeek V4: the "
                                    "partial windows its compressors have not yet folded into an entry); 0 without one"),
    "index_topk": ("tokens", "tokens a query's sparse attention reads, chosen by the lightning indexer (DeepSeek V3.2: 2,048); "
                             "0 for dense attention"),
    "index_pair_flops": ("FLOP", "the lightning indexer's scoring of one query-key pair in one layer, 2 x index_n_heads x "
                                 "index_head_dim (DeepSeek V3.2: 16,384); 0 without one"),
    "kv_per_head": ("flag", "1 if the KV cache is per KV head (splits with tensor parallelism); 0 for MLA latents"),
    "mla_key_flops": ("FLOP", "MLA decode attention in the latent space (weights absorbed): FLOPs per cached token per layer, "
                              "2 x heads x (kv_lora_rank + qk_rope_head_dim) for QK plus 2 x heads x kv_lora_rank for AV; 0 without MLA"),
    "n_layers_full": ("layers", "layers with global self-attention"),
    "n_layers_sliding": ("layers", "layers with sliding-window attention"),
    "n_kv_layers_full": ("layers", "global-attention layers that keep their own KV cache (Gemma 3n's KV-sharing layers do not)"),
    "n_kv_layers_sliding": ("layers", "sliding-window layers that keep their own KV cache"),
    "kv_full_layer_scale": ("ratio", "a global-attention layer's K and V elements a token over kv_elems_layer: 1 where the "
                                     "layers are alike; Gemma 4's global layers have heads of their own (31B: 4 KV heads "
                                     "of 512 against 16 of 256, 0.5)"),
    "residual_blocks": ("vectors", "hidden-size block representations a token keeps through a forward: Kimi K3's "
                                   "Attention Residuals, ceil(layers / attn_res_block_size) (8 for K3); 0 elsewhere"),
    "attn_full_layer_scale": ("ratio", "a global-attention layer's query width over q_dim: 1 where the layers are alike; "
                                       "Gemma 4's global layers have wider heads (31B: 512 against 256, 2)"),
    "n_layers_cross": ("layers", "cross-attention layers (Llama 3.2 Vision): they cache the image tokens' keys and values"),
    "n_layers_recurrent": ("layers", "linear-attention / state-space layers: a fixed state per sequence, no KV"),
    "conv_channels": ("elements", "channels of a recurrent layer's causal-conv state"),
    "conv_kernel": ("tokens", "causal-conv kernel of a recurrent layer"),
    "ssm_state_elems": ("elements", "elements of one recurrent layer's SSM / delta-rule state per sequence"),
    "ssm_kernel_state_bits": ("bits", "bits the reference kernels return the recurrent state in (0: the compute dtype)"),
    "ssm_cache_bits": ("bits", "bits the checkpoint's config asks the SSM state cache to be kept in (Nemotron-H mamba_ssm_cache_dtype, Qwen3.5 mamba_ssm_dtype; 0: not stated)"),
    "images": ("images", "images per sequence (multimodal models)"),
    "image_context_tokens": ("tokens", "soft tokens the images add to each sequence's context (included in seq)"),
    "cross_kv_tokens": ("tokens", "image tokens each cross-attention layer caches per sequence"),
    "sliding_window": ("tokens", "sliding window size (0 if none)"),
    "rope_table_element_bytes": ("bytes", "bytes per element of the runtime's rope table on this hardware class "
                                          "(0: the compute dtype)"),
    "rope_table_elements": ("elements", "cos/sin table elements of the model's rotary embeddings as a runtime that "
                                        "precomputes them sizes them (positions x rotary_dim per distinct rope; 0 without RoPE)"),
    "is_moe": ("flag", "mixture of experts"),
    "n_experts": ("experts", "routed experts per MoE layer"),
    "experts_per_tok": ("experts", "experts each token is routed to"),
    "moe_intermediate": ("elements", "one expert's feed-forward width"),
    "moe_hidden": ("elements", "the width a routed expert reads and writes: hidden, or Kimi K3's latent width "
                               "(routed_expert_hidden_size)"),
    "shared_intermediate": ("elements", "feed-forward width of the shared expert(s)"),
    "n_shared_experts": ("experts", "shared experts as the config counts them (n_shared_experts; 0 where it states a width)"),
    "max_positions": ("tokens", "the model's context as its config states it (max_position_embeddings; 0 = not stated)"),
    "config_local_experts": ("experts", "the config's own top-level num_local_experts (Mixtral's name for its routed experts; 0 where "
                                        "it names them otherwise or has none) - what TGI's launcher reads as the experts"),
    "checkpoint_quantized": ("flag", "1 if the config.json states a quantization_config with a quant_method (a quantized "
                                     "checkpoint)"),
    "config_text_at_top": ("flag", "1 if the config.json states the language model's sizes at its top level (num_attention_heads, "
                                   "num_hidden_layers, intermediate_size, vocab_size, hidden_size or n_embd), 0 where a "
                                   "multimodal wrapper nests them (text_config)"),
    "n_moe_layers": ("layers", "layers whose feed-forward is MoE"),
    "params_total": ("params", "all parameters"),
    "params_active": ("params", "parameters a token uses (MoE: routed experts only)"),
    "gated_mlp": ("flag", "SwiGLU/GeGLU-style gated MLP (gate, up, down)"),
    "fused_gate_up": ("flag", "gate and up projections in one linear whose output the MLP keeps (Phi-3 / GLM gate_up_proj)"),
    "fused_qkv": ("flag", "q, k and v computed by one linear and split into views (Phi-3 qkv_proj)"),
    "qkv_bias": ("flag", "q, k and v projections have biases (parameters of their own)"),
    "qk_head_norm": ("flag", "an RMSNorm of head_dim normalizes each query and key head (Qwen3, Gemma 3 q_norm / k_norm)"),
    "llama_layer": ("flag", "the model's decoder layers are transformers' LlamaDecoderLayer or one that allocates as it does "
                            "(Mistral, Qwen2; Phi-3 with its fused projections; Qwen3 with its head norms): RMSNorm, "
                            "rotate_half on whole heads, a gated MLP, no biases but q/k/v's"),
    "gemma2_layer": ("flag", "the model's decoder layers are transformers' Gemma2DecoderLayer with grouped KV heads (four "
                             "(1 + weight) RMSNorms, soft-capped attention scores, GeGLU), as the simulated eager "
                             "generation writes them"),
    "norms_per_layer": ("norms", "hidden-size norms a decoder layer applies (2; Gemma 2 / 3 and GLM-4 four)"),
    "norm_scale_fp32": ("flag", "the norm scales in fp32 (Gemma's output * (1 + weight.float())): training saves the fp32 "
                                "normalized input for the weight's gradient"),
    "attn_softcap": ("flag", "attention scores soft-capped, softcap x tanh(scores / softcap) (Gemma 2 attn_logit_softcapping)"),
    "final_softcap": ("flag", "output logits soft-capped (Gemma 2 final_logit_softcapping)"),
    "rope_cat_layout": ("flag", "rotary embedding concatenates rotated and pass-through parts (Phi-3 / GLM), so q leaves "
                                "it contiguous in (batch, heads, tokens, head_dim) order"),
    "mask_window": ("tokens", "sliding window the runtime's attention mask applies (0 if none)"),
    "n_layers_masked": ("layers", "layers whose attention applies the sliding-window mask"),
    "int8_matmul": ("flag", "weights and activations meet in an int8 matmul (bitsandbytes LLM.int8 in transformers)"),
    "dequant_copy_rows": ("rows", "the fewest rows (prompt tokens of a chunk, sequences of a decode step) for which the "
                                  "format's matmul first dequantizes the whole weight into the activation dtype (its "
                                  "dequant_copy: bitsandbytes 4-bit); 0 where it never does"),
    "dequant_copy_scale_bytes": ("bytes", "bytes per weight of the dequantized block scales alive beside that copy"),
    # quantization
    "custom_weights_bytes": ("bytes", "exact weight bytes from a model file (0: compute from params x bits)"),
    "p_kept": ("params", "layer parameters the checkpoint keeps unquantized (its quantization_config modules_to_not_convert, ignore or exclude_modules; 0: none)"),
    "b_kept": ("bits", "bits per parameter of the modules a checkpoint keeps unquantized (its 16-bit dtype)"),
    "kv_bits": ("bits", "bits per KV-cache element, block scales included"),
    "kv_fp8": ("flag", "the KV cache is stored in FP8 (not an 8-bit integer format)"),
    "act_bytes": ("bytes", "bytes per activation element (compute dtype)"),
    "weights_compute_bits": ("bits", "bits per weight element the matmuls read"),
    "act_quant_bits": ("bits", "bits per activation element (scales included) the format's GEMMs quantize their inputs to on "
                              "this GPU (activation_quant where its compute type is native; 0 = the compute dtype)"),
    # workload
    "batch": ("sequences", "batch_size"),
    "users": ("users", "concurrent_users"),
    "seqs": ("sequences", "sequences in flight (batch x users)"),
    "mem_users": ("users", "requests the memory holds at once: users, or on a runtime that sizes its cache by the request "
                           "and has slots (runtime_settings.max_num_seqs), the requests its slots hold"),
    "mem_seqs": ("sequences", "sequences the memory holds at once (mem_users x batch)"),
    "seq": ("tokens", "context per sequence (prompt + generated, plus image tokens)"),
    "input_tokens": ("tokens", "prompt tokens per request (per sequence)"),
    "output_tokens": ("tokens", "generated tokens per request (per sequence)"),
    "prompt_stated": ("flag", "the request states its prompt's length (input_tokens given, or seq_length with output_tokens); "
                              "0 = the prompt is a split of seq_length or a guess"),
    "request_rate": ("requests/s", "open-loop arrival rate; 0 = a closed loop of concurrent_users clients"),
    "gpu_hour_cost": ("currency/GPU-hour", "price of one GPU-hour; 0 = not given"),
    "prefix_caching": ("flag", "enable_prefix_caching"),
    "shared_prefix_ratio": ("fraction", "share of each prompt that is a shared prefix"),
    "continuous_batching": ("flag", "enable_continuous_batching"),
    "flash_attention": ("flag", "fused attention (no materialized scores)"),
    # fine-tuning
    "method_full": ("flag", "full fine-tuning"),
    "method_lora": ("flag", "LoRA"),
    "method_qlora": ("flag", "QLoRA"),
    "mixed_precision": ("flag", "fp32 master weights with 16-bit autocast"),
    "train_param_bytes": ("bytes", "bytes per trained parameter (weights, gradients, moments) in full fine-tuning"),
    "lora_rank": ("rank", "LoRA rank"),
    "micro_batch": ("sequences", "sequences per GPU per forward pass"),
    "grad_accum": ("steps", "gradient accumulation steps"),
    "gradient_checkpointing": ("flag", "recompute activations in backward"),
    "zero_stage": ("stage", "DeepSpeed ZeRO stage"),
    "optimizer_8bit": ("flag", "8-bit optimizer moments (the optimizer's state_dtype is int8)"),
    "optimizer_paged": ("flag", "paged optimizer states (the optimizer's paged)"),
    "optimizer_moments": ("tensors", "optimizer state tensors per parameter (the optimizer's states_per_param: AdamW 2, SGD 0)"),
    "optimizer_factored": ("flag", "Adafactor's factored second moment (the optimizer's factored)"),
    "optimizer_state_bytes": ("bytes", "bytes per optimizer state element when the optimizer fixes its type; 0 = the trained "
                              "parameters' precision (the optimizer's state_dtype)"),
    "optimizer_state_overhead_bytes": ("bytes", "block-quantization scale bytes per state element (block_scale_bytes / block_size)"),
    "optimizer_fused_step": ("flag", "the optimizer updates each tensor in one kernel, with no state-sized temporaries"),
    "fused_kernels": ("flag", "fused cross-entropy / optimizer kernels"),
    "activation_offloading": ("flag", "checkpointed activations kept on the host"),
    "num_samples": ("samples", "dataset size"),
    "tokens_per_sample": ("tokens", "average tokens per sample"),
    "num_epochs": ("epochs", "epochs"),
    "batch_global": ("sequences", "global batch size"),
    # parallelism
    "num_gpus": ("GPUs", "GPUs in the job"),
    "tp": ("GPUs", "tensor-parallel degree"),
    "pp": ("GPUs", "pipeline-parallel degree"),
    "dp": ("GPUs", "data-parallel degree"),
    "ep": ("GPUs", "attention data-parallel ranks that split the routed experts (inference_parallelism expert; 1 otherwise)"),
    # offloading
    "offload_layers": ("layers", "layers whose weights live on the host"),
    "offload_kv": ("flag", "KV cache lives on the host"),
    "offload_enabled": ("flag", "enable_offloading"),
    "offload_to_nvme": ("flag", "offload target is NVMe rather than CPU RAM"),
    # hardware
    "gpu_mem_gib": ("GiB", "memory of one GPU"),
    "gpu_bw_gb_s": ("GB/s", "memory bandwidth of one GPU"),
    "gpu_tflops": ("TFLOP/s", "dense tensor throughput in the compute dtype"),
    "gpu_tflops_16": ("TFLOP/s", "dense fp16/bf16 tensor throughput"),
    "gpu_fp8_tflops": ("TFLOP/s", "dense FP8 tensor throughput (0 where the GPU has no FP8 tensor cores)"),
    "unpacked_gemm_rate": ("fraction", "rate of the format's weight-unpacking (W4A16) GEMM kernels on this GPU against "
                                       "gpu_tflops (the format's unpacked_rate on its architectures; 1 elsewhere)"),
    "gpu_tdp_w": ("W", "board power of one GPU"),
    "gpu_unified": ("flag", "unified memory (Apple silicon, Grace, DGX Spark)"),
    "ic_bw_gb_s": ("GB/s", "GPU-to-GPU link bandwidth per direction"),
    "ic_latency_us": ("us", "GPU-to-GPU link latency"),
    **{f"ic_{proto}_{part}": (unit, f"NCCL ring collectives, {label} protocol: {what} (the interconnect's nccl_ring table; "
                                    f"without it {fallback})")
       for proto, label in (("ll", "LL"), ("ll128", "LL128"), ("simple", "Simple"))
       for part, unit, what, fallback in (("base_us", "us", "base latency of one collective", "0"),
                                          ("step_us", "us", "latency of one ring step", "the link's latency_us"),
                                          ("bus_gb_s", "GB/s", "bus bandwidth reached", "the link's bandwidth_gb_s"))},
    "ic_p2p": ("flag", "the GPUs load from each other's memory over NVLink / NVSwitch (what custom all-reduce kernels need)"),
    "host_bw_gb_s": ("GB/s", "GPU-to-host link bandwidth per direction"),
    "offload_bw_gb_s": ("GB/s", "bandwidth of the offload target path"),
    "eff_decode_bw": ("fraction", "share of memory bandwidth decode achieves (runtime x hardware class)"),
    "eff_prefill_flops": ("fraction", "share of dense throughput prefill achieves (runtime x hardware class)"),
    "eff_train_mfu": ("fraction", "model FLOPs utilization in training (runtime x hardware class)"),
    "power_idle_fraction": ("fraction", "share of TDP a GPU draws while memory-bound"),
    "gpu_fp32_tflops": ("TFLOP/s", "vector (non-tensor) fp32 throughput: the ALUs that dequantize weights"),
    "gpu_cc": ("version", "NVIDIA CUDA compute capability as a number (6.1, 8.9); 0 for other vendors"),
    "gpu_hip": ("flag", "an AMD GPU, programmed through ROCm / HIP (where a runtime may capture HIP graphs)"),
    "gpu_sm_count": ("SMs", "streaming multiprocessors of one GPU; 0 where the catalog has none (no per-SM cap)"),
    "weights_dequantized": ("flag", "weights are stored in a format the matmuls must unpack (integer, GGUF, AWQ/GPTQ, NF4, ...)"),
    "dequant_flops_per_weight": ("FLOP", "ALU work to unpack one weight in a decode mat-vec (runtime x hardware class)"),
}
for _role in ROLES:
    VARIABLES[f"p_{_role}"] = ("params", f"parameters in {_role} tensors")
    VARIABLES[f"b_{_role}"] = ("bits", f"bits per parameter of {_role} tensors")
for _role in ("ffn_gate", "ffn_up", "ffn_down"):
    VARIABLES[f"pa_{_role}"] = ("params", f"{_role} parameters a token is routed through (MoE)")
for _role in ("attn_q", "attn_k", "ffn_gate_inp"):
    VARIABLES[f"pr_{_role}"] = ("params", f"{_role} parameters every tensor-parallel rank keeps whole (MLA latent "
                                          f"down-projections, a sparse-attention indexer, MoE routers)")
for _m in ("q", "k", "v", "o", "gate", "up", "down"):
    VARIABLES[f"lora_{_m}"] = ("flag", f"LoRA adapts {_m}_proj")
    VARIABLES[f"lora_dims_{_m}"] = ("elements", f"sum over every {_m}_proj linear of (in + out) features")
VARIABLES["lora_unadapted_width"] = ("elements", "the part of a token's saved feed-forward width (ffn_saved_width) no adapter "
                                                 "reads: the routed experts' where LoRA cannot reach them (0 otherwise)")

#: Families whose transformers MLP computes gate and up with one linear (gate_up_proj).
FUSED_GATE_UP_FAMILIES = ("phi3", "glm", "glm4")
#: Families whose transformers attention computes q, k, v with one linear (qkv_proj) and slices it
#: (models/phi3/modeling_phi3.py Phi3Attention.forward).
FUSED_QKV_FAMILIES = ("phi3",)
#: Families whose transformers decoder layer is LlamaDecoderLayer or allocates as it does, op for op
#: (models/llama, mistral, qwen2 modeling_*.py: the same RMSNorm, rotate_half, attention and MLP; Qwen2's q/k/v
#: biases are parameters of their own; Phi-3 differs only where fused_qkv, fused_gate_up and rope_cat_layout say),
#: which the simulated inference reserve writes (vramplan.allocator.inference).
LLAMA_LAYER_FAMILIES = ("llama", "mistral", "qwen2", "phi3", "qwen3")
#: Families whose apply_rotary_pos_emb ends in torch.cat([rotated, pass-through]) (partial rotary),
#: which returns q contiguous in (batch, heads, tokens, head_dim) order (models/phi3, glm, glm4).
ROPE_CAT_FAMILIES = ("phi3", "glm", "glm4")

#: Runtime constants Python reads besides the formulas' rt_* inputs; each is declared in
#: catalogs/runtime_constants, so every runtime profile has it (or its declared default) after load.
RUNTIME_READS = ("decode_bw_eff", "prefill_flops_eff", "train_mfu", "power_memory_bound_fraction",
                 "dequant_flops_per_weight", "dequant_flops_per_weight_legacy", "nvme_read_gb_s", "kv_preallocate",
                 "activation_bytes")

#: Bytes per element of each optimizer state_dtype (catalogs/optimizers); "param" follows the trained weights.
STATE_DTYPE_BYTES = {"param": 0, "fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}


def scenario_variable_names() -> list[str]:
    return list(VARIABLES)


#: Scenario variables that are a per-hardware-class runtime constant as the GPU's class picks it (the request's
#: runtime_settings over the profile): variable -> constant.
CLASS_CONSTANTS = {"eff_decode_bw": "decode_bw_eff", "eff_prefill_flops": "prefill_flops_eff", "eff_train_mfu": "train_mfu",
                   "power_idle_fraction": "power_memory_bound_fraction", "rope_table_element_bytes": "rope_table_element_bytes"}


def _rt(runtime: dict[str, Any], name: str, order: tuple[str, ...], settings: dict[str, float] | None = None) -> float:
    """A per-hardware-class runtime constant for a GPU whose class order is ``order`` (see :mod:`vramplan.hardware`),
    the request's ``runtime_settings`` over the profile (:func:`setting_key`)."""
    key = setting_key(settings, name, order)
    return float(settings[key]) if key else hardware.runtime_constant(runtime["constants"], name, order)[1]


def setting_key(settings: dict[str, float] | None, name: str, order: tuple[str, ...]) -> str | None:
    """The runtime_settings member that sets a per-class constant on this GPU, or None: ``<name>_<class>`` along the
    class's fallback chain, then the plain ``<name>``, which the request means for whatever GPU it runs on - so it wins
    over the profile's specialised value as well as its plain one (a setting for another class does not apply:
    resolve warns)."""
    if not settings:
        return None
    return next((key for key in [f"{name}_{cls}" for cls in order] + [name] if key in settings), None)


def _unpack_flops(runtime: dict[str, Any], fmt: dict[str, Any], order: tuple[str, ...],
                  settings: dict[str, float] | None = None) -> float:
    """ALU work per weight of the runtime's mat-vec kernel for this format's block family.

    A runtime may keep a cheaper constant for GGUF's legacy blocks (``dequant_flops_per_weight_legacy``,
    per class like every constant; declared in catalogs/runtime_constants with the general constant as
    its fallback): Metal unpacks Q4_0..Q8_0 with a masked multiply-add against pre-scaled activations,
    k-quants with a longer sequence. Without one, the general constant applies. The request's settings
    come first at each of the two.
    """
    if fmt.get("gguf_block") == "legacy":
        key = setting_key(settings, "dequant_flops_per_weight_legacy", order)
        if key:
            return float(settings[key])
        found = hardware.find_runtime_constant(runtime["constants"], "dequant_flops_per_weight_legacy", order)
        if found is not None:
            return found[1]
    return _rt(runtime, "dequant_flops_per_weight", order, settings)


def _compute_capability(gpu: dict[str, Any]) -> float:
    """The catalog's CUDA compute capability ("6.1") as a number; 0 for non-NVIDIA parts (no CUDA kernels)."""
    cc = gpu.get("compute_capability")
    if gpu["vendor"] != "nvidia" or not cc:
        return 0.0
    major, _, minor = str(cc).partition(".")
    return float(major) + float(minor or 0) / 10


@lru_cache(maxsize=512)
def _llama_layer(a: Architecture, head_norm: bool) -> bool:
    """Whether the model's layers allocate as LlamaDecoderLayer does (LLAMA_LAYER_FAMILIES): no MoE, MLA, partial
    rotary or biases beyond q/k/v - Qwen2's only (Llama / Mistral attention_bias also puts one on o_proj, which the
    written sequence does not build) - and no qk-norm but Qwen3's per-head one."""
    return (a.model_type in LLAMA_LAYER_FAMILIES
            and not (a.is_moe or a.is_mla or a.out_bias or a.mlp_bias or a.lm_head_bias or a.partial_rotary)
            and not (a.qkv_bias and a.model_type != "qwen2")
            and (not a.qk_norm or (a.model_type == "qwen3" and head_norm)))


def _model_vars(a: Architecture) -> dict[str, float]:
    """Everything the scenario takes from the architecture alone (cached per architecture)."""
    roles = a.param_roles()
    active = a.param_roles(active=True)
    head_norm = a.qk_norm and a.qk_norm_params_per_layer == 2 * a.head_dim  # one head_dim weight each for q and k
    s: dict[str, float] = {}
    s.update({
        "n_layers": a.num_layers, "hidden": a.hidden_size, "n_heads": a.num_heads, "n_kv_heads": a.num_kv_heads,
        "n_kv_heads_full": a.full_layer_kv_heads,
        "head_dim": a.head_dim, "q_dim": a.q_dim, "kv_dim": a.num_kv_heads * a.head_dim,
        "attn_out_dim": a.attn_out_dim, "intermediate": a.dense_intermediate_size or a.intermediate_size,
        "vocab": a.vocab_size, "kv_elems_layer": a.kv_elements_per_token_per_layer,
        "index_key_elems": a.index_head_dim if a.index_topk else 0,
        "index_topk": a.index_topk, "index_pair_flops": 2 * a.index_n_heads * a.index_head_dim,
        "mla_rope_elems": a.qk_rope_head_dim if a.is_mla or a.is_compressed else 0,
        "residual_streams": a.hc_mult or 1, "residual_blocks": a.attn_res_blocks, "cmp_attention": int(a.is_compressed), "kv_cmp_equiv": a.compressed_entries_per_token, "kv_cmp_index_equiv": a.indexed_entries_per_token,
        "n_layers_indexed": a.indexed_layers, "cmp_state_elems": a.compressor_state_elems,
        "cmp_ring_state_elems": a.compressor_ring_state_elems,
        "kv_per_head": 0 if a.is_mla else 1,
        "mla_key_flops": 2 * a.num_heads * (2 * a.kv_lora_rank + a.qk_rope_head_dim) if a.is_mla else 0,
        "n_layers_full": a.num_full_layers, "n_layers_sliding": a.num_sliding_layers,
        "n_kv_layers_full": a.num_kv_full_layers, "n_kv_layers_sliding": a.num_kv_sliding_layers,
        "kv_full_layer_scale": a.kv_full_layer_scale, "attn_full_layer_scale": a.attn_full_layer_scale,
        "n_layers_cross": a.num_cross_layers, "n_layers_recurrent": a.num_recurrent_layers,
        "conv_channels": a.conv_channels, "conv_kernel": a.conv_kernel, "ssm_state_elems": a.ssm_state_elems,
        "ssm_kernel_state_bits": a.ssm_kernel_state_bits, "ssm_cache_bits": a.ssm_cache_bits,
        "sliding_window": a.sliding_window or 0, "rope_table_elements": a.rope_table_elements,
        "is_moe": int(a.is_moe), "n_experts": a.num_experts,
        "experts_per_tok": a.experts_per_token, "moe_intermediate": a.moe_intermediate_size,
        "moe_hidden": a.moe_expert_width,
        "shared_intermediate": a.shared_expert_intermediate_size, "n_moe_layers": len(a.moe_layers),
        "n_shared_experts": a.n_shared_experts, "max_positions": a.max_position_embeddings or 0,
        "config_local_experts": a.config_local_experts, "checkpoint_quantized": int(a.checkpoint_quantized),
        "config_text_at_top": int(a.config_text_at_top),
        "params_total": sum(roles.values()), "params_active": sum(active.values()), "gated_mlp": int(a.gated_mlp),
        # transformers' Phi3MLP / GlmMLP: one gate_up_proj, chunked into views (models/phi3/modeling_phi3.py)
        "fused_gate_up": int(a.model_type in FUSED_GATE_UP_FAMILIES and a.gated_mlp and not a.is_moe),
        "fused_qkv": int(a.model_type in FUSED_QKV_FAMILIES and not a.is_mla),
        "rope_cat_layout": int(a.model_type in ROPE_CAT_FAMILIES),
        "qkv_bias": int(bool(a.qkv_bias)),
        "qk_head_norm": int(head_norm),
        "llama_layer": int(_llama_layer(a, head_norm)),
        # Gemma 2 configs soft-cap scores and logits (50 / 30); MHA and single-KV-head layouts copy differently
        "gemma2_layer": int(a.model_type == "gemma2" and not (a.is_moe or a.is_mla or a.qk_norm or a.qkv_bias)
                            and 1 < a.num_kv_heads < a.num_heads),
        "norms_per_layer": a.norms_per_layer,
        "norm_scale_fp32": int(a.norm_scale_fp32),
        "attn_softcap": int(a.attn_softcap),
        "final_softcap": int(a.final_softcap),
        "mask_window": a.attn_mask_window or 0,
        # Phi-3 masks every layer with the window although its KV layout is global (architecture._attn_mask_window)
        "n_layers_masked": (a.num_sliding_layers if a.sliding_window else a.num_layers) if a.attn_mask_window else 0,
    })
    for role in ROLES:
        s[f"p_{role}"] = roles[role]
    for role in ("ffn_gate", "ffn_up", "ffn_down"):
        s[f"pa_{role}"] = active[role]
    for role, n in a.tp_replicated_attention().items():
        s[f"pr_{role}"] = n
    s["pr_ffn_gate_inp"] = roles["ffn_gate_inp"]  # the routers, whole on every rank (tp_replicated_attention)
    _lora_dims(s, a)
    return s


def _quant_vars(qbits: dict[str, float]) -> dict[str, float]:
    s: dict[str, float] = {}
    for role in ROLES:
        s[f"b_{role}"] = float(qbits.get(role, qbits["default"]))
    # Quantizers leave a vision encoder in 16-bit (GGUF: separate mmproj file; bnb/AWQ/GPTQ: skipped modules).
    s["b_vision"] = float(qbits.get("vision", 32 if qbits["default"] >= 32 else 16))
    # Gemma 3n's per-layer embedding table is stored like the token embedding (llama.cpp writes
    # per_layer_token_embd in the token_embd type; fp8/int8/AWQ/GPTQ leave both unquantized).
    s["b_per_layer_embd"] = float(qbits.get("per_layer_embd", qbits.get("token_embd", qbits["default"])))
    return s


_RT_CACHE: dict[int, tuple] = {}


def _runtime_vars(runtime: dict, gpu_key: str, gpu_mem_gib: float, context: float = 0.0,
                  model_type: str = "", vendor: str = "") -> dict[str, float]:
    """A runtime profile's constants as rt_<name> (cached per loaded profile and tier).

    A constant with ``tiers`` takes the first tier that names the GPU in ``gpus`` or its vendor in ``vendors`` (a
    vendor's own image: TGI's ROCm build), whose ``below_gib`` is above the GPU's memory (vLLM and SGLang size their
    token budgets and batch limits by the GPU), whose ``context_above`` is below the model's context (vLLM's V0 engine
    chunks prompts only for models of more than 32K) or that names the config's model_type in ``model_types``
    (TGI's launcher defaults for gemma3 and Qwen2-VL), else its ``value``."""
    hit = _RT_CACHE.get(id(runtime))
    if hit is None or hit[0] is not runtime:
        base = {f"rt_{name}": float(c["value"]) for name, c in runtime["constants"].items()}
        tiered = tuple((f"rt_{name}", tuple((frozenset(t.get("gpus", ())) | {f"vendor:{v}" for v in t.get("vendors", ())},
                                              t.get("below_gib", 0.0), t.get("context_above", float("inf")),
                                              frozenset(t.get("model_types", ())), float(t["value"]))
                                             for t in c["tiers"]))
                       for name, c in runtime["constants"].items() if c.get("tiers"))
        hit = (runtime, base, tiered, {})
        _RT_CACHE[id(runtime)] = hit
    _, base, tiered, by_tier = hit
    if not tiered:
        return base
    maker = f"vendor:{vendor}"
    picks = tuple(next((v for gpus, below, above, types, v in tiers
                        if gpu_key in gpus or maker in gpus or gpu_mem_gib < below or context > above
                        or model_type in types), None)
                  for _, tiers in tiered)
    values = by_tier.get(picks)
    if values is None:
        values = dict(base)
        values.update({name: v for (name, _), v in zip(tiered, picks) if v is not None})
        by_tier[picks] = values
    return values


def activation_bytes(fmt: dict[str, Any]) -> float:
    """Bytes per activation element for a weights format's compute dtype (before a runtime fixes it)."""
    return 4.0 if fmt.get("compute", "fp16") == "fp32" else 2.0


@dataclass
class Notes:
    """What building a scenario says about the request (an offloading choice, a setting it ignores),
    handed back beside the numbers: the stage writes into no earlier stage's lists."""

    assumptions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def build(res: Resolved) -> dict[str, float]:
    """The Scenario for one request: every variable in :data:`VARIABLES` plus ``rt_*`` constants
    (the numbers alone; :func:`build_with_notes` also gives what the stage says)."""
    return build_with_notes(res)[0]


def build_with_notes(res: Resolved) -> tuple[dict[str, float], Notes]:
    """The Scenario for one request and the :class:`Notes` the response words from it."""
    notes = Notes()
    req, a = res.request, res.arch
    qbits = res.weight_bits or res.quant.data["bits"]
    s: dict[str, float] = dict(_model_vars(a))
    s.update(_quant_vars(qbits))
    s["custom_weights_bytes"] = float(req.get("custom_weights_bytes") or res.weights_file_bytes or 0)
    s["p_kept"] = float(res.kept_layer_params)
    s["b_kept"] = keptmodules.KEPT_BITS
    compute = res.quant.data.get("compute", "fp16")
    s["act_bytes"] = activation_bytes(res.quant.data)
    s["weights_compute_bits"] = float(qbits["default"])
    s["int8_matmul"] = int(compute == "int8")
    copy = res.quant.data.get("dequant_copy") or {}
    s["dequant_copy_rows"] = float(copy.get("min_rows", 0))
    s["dequant_copy_scale_bytes"] = float(copy.get("scale_bytes_per_weight", 0))

    n = req.get("num_gpus", 1)
    s["num_gpus"] = n
    s["offload_enabled"] = int(bool(req.get("enable_offloading")))
    # offload_target matters only with offloading on (else it is ignored, and a warning says so)
    s["offload_to_nvme"] = int(bool(req.get("enable_offloading")) and req.get("offload_target") == "nvme")
    s["flash_attention"] = int(bool(req["optimization_config"].get("flash_attention", True)))
    s["batch"] = req["batch_size"]
    s["seq"] = req["seq_length"]
    images = number_or(req.get("images_per_sequence"), 0)
    s["images"] = images
    s["image_context_tokens"] = images * a.image_tokens_per_image
    s["cross_kv_tokens"] = images * a.cross_tokens_per_image
    # image soft tokens sit in the context like text tokens (not +=: a sweep's seq_length is an array of its rows)
    s["seq"] = s["seq"] + s["image_context_tokens"]
    if res.workload == "inference":
        _inference(s, req, a, res, notes)
    else:
        _finetuning(s, req, res, notes)

    s.update(device_vars(res, s["act_bytes"], bool(s["offload_to_nvme"])))
    if res.workload == "inference":
        s.update(server_slots(s))
    if s["unpacked_gemm_rate"] < 1:
        fmt, gpu = res.quant.data, res.gpu.data
        notes.assumptions.append(
            f"compute: the {gpu['label']} ({gpu['architecture']}) has no {fmt.get('compute', 'fp16').upper()} tensor-core "
            f"rate, so {fmt['label']} matmuls run kernels that unpack the weights in registers and multiply at 16 bits "
            f"(W4A16), at {s['unpacked_gemm_rate']:g} of its 16-bit GEMM rate (unpacked_rate, catalogs/quantization)")
    return s, notes


def device_vars(res: Resolved, act_bytes: float, to_nvme: bool) -> dict[str, float]:
    """Every scenario variable the GPU decides, given the runtime, format, links and request it runs with.

    Split from :func:`build` so a search over many GPUs (:mod:`vramplan.deploy`) builds one scenario
    per (runtime, format) and sets only these per GPU, from the same pieces: :func:`gpu_vars` (the GPU
    alone), :func:`format_on_gpu_vars` (its throughput in the format's compute type),
    :func:`runtime_on_gpu_vars` (the runtime's constants for the GPU's hardware class),
    :func:`runtime_constants` (the profile's constants, tiers by GPU applied, ``runtime_settings`` over
    them) and :func:`runtime_act_bytes`."""
    gpu = res.gpu.data
    d = gpu_vars(gpu, res.gpu_memory_gib, res.interconnect.data, res.host_link.data if res.host_link else None)
    d.update(format_on_gpu_vars(gpu, res.quant.data))
    d.update(runtime_on_gpu_vars(res.runtime.data, res.quant.data, res.hardware_order, d["host_bw_gb_s"], to_nvme,
                                 res.request.get("runtime_settings")))
    d.update(runtime_constants(res.runtime.data, res.gpu, res.gpu_memory_gib, res.request.get("runtime_settings"), res.arch))
    d["act_bytes"] = runtime_act_bytes(d.get("rt_activation_bytes", 0.0), act_bytes, res.workload)
    return d


def gpu_vars(gpu: dict[str, Any], memory_gib: float, interconnect: dict[str, Any],
             host_link: dict[str, Any] | None) -> dict[str, float]:
    """What the GPU alone decides (and its links)."""
    return {
        "gpu_mem_gib": memory_gib, "gpu_bw_gb_s": gpu["memory_bandwidth_gb_s"], "gpu_tflops_16": float(_tflops_16(gpu)),
        "gpu_fp8_tflops": float(gpu.get("fp8_tflops") or 0),
        "gpu_tdp_w": gpu["tdp_w"], "gpu_unified": int(bool(gpu.get("unified_memory_gib"))),
        "ic_bw_gb_s": interconnect["bandwidth_gb_s"], "ic_latency_us": interconnect["latency_us"],
        "ic_p2p": int(interconnect.get("kind") in ("nvlink", "nvswitch")),
        **nccl_ring_vars(interconnect),
        # Unified memory: "offloaded" data stays in the same memory the GPU reads.
        "host_bw_gb_s": gpu["memory_bandwidth_gb_s"] if (not host_link or gpu.get("unified_memory_gib"))
        else host_link["bandwidth_gb_s"],
        "gpu_fp32_tflops": float(gpu.get("fp32_tflops") or _tflops_16(gpu)),
        "gpu_cc": _compute_capability(gpu), "gpu_hip": 1.0 if gpu["vendor"] == "amd" else 0.0, "gpu_sm_count": float(gpu.get("sm_count") or 0),
    }


def nccl_ring_vars(interconnect: dict[str, Any]) -> dict[str, float]:
    """NCCL's cost line of each ring protocol over this link (formulas/performance/collectives.yaml): the
    interconnect's nccl_ring table, or - for a link NCCL's model does not cover - the link's own latency a step and
    bandwidth for all three, which makes the protocol choice moot."""
    ring = interconnect.get("nccl_ring")
    plain = {"base_us": 0.0, "step_us": float(interconnect["latency_us"]), "bus_gb_s": float(interconnect["bandwidth_gb_s"])}
    return {f"ic_{proto}_{part}": float((ring[proto] if ring else plain)[part])
            for proto in ("ll", "ll128", "simple") for part in ("base_us", "step_us", "bus_gb_s")}


def kv_is_fp8(fmt: dict[str, Any]) -> bool:
    """Whether a KV-cache format stores FP8 (its compute type; int8 and GGUF caches are integers)."""
    return fmt.get("compute") == "fp8" and fmt.get("kind") == "float"


def _tflops_16(gpu: dict[str, Any]) -> float:
    # Pre-Ampere cards have no bf16 and Pascal's fp16 rate is a fraction of fp32: runtimes then compute in fp32.
    return gpu.get("bf16_tflops") or max(gpu.get("fp16_tflops") or 0, gpu.get("fp32_tflops") or 0)


def format_on_gpu_key(fmt: dict[str, Any]) -> tuple:
    """What :func:`format_on_gpu_vars` reads of a format: formats with equal keys give equal values on a GPU
    (the deployment space computes them once per key)."""
    unpacked = fmt.get("unpacked_rate") or {}
    return (fmt.get("compute", "fp16"), fmt["kind"] != "float", (fmt.get("compute_rate") or {}).get("vs_16bit"),
            unpacked.get("vs_16bit"), tuple(unpacked.get("architectures") or ()),
            (fmt.get("activation_quant") or {}).get("bits"))


def format_on_gpu_vars(gpu: dict[str, Any], fmt: dict[str, Any]) -> dict[str, float]:
    """The GPU's throughput in the format's compute type (its 16-bit rate where it has no native one, or the
    rate the format's unpacking kernels reach on that architecture: ``unpacked_rate``), and the bits its GEMMs
    quantize their inputs to where that type is native (``activation_quant``; 0 = the compute dtype)."""
    native = {"fp8": gpu.get("fp8_tflops"), "int8": gpu.get("int8_tops"), "fp4": gpu.get("fp4_tflops"),
              "fp32": gpu.get("fp32_tflops"), "fp16": gpu.get("fp16_tflops"),
              "bf16": gpu.get("bf16_tflops")}.get(fmt.get("compute", "fp16"))
    rate = float(native or _tflops_16(gpu))
    if native and fmt.get("compute_rate"):  # the format's kernels reach less than the native peak (catalog, cited)
        rate = min(rate, fmt["compute_rate"]["vs_16bit"] * _tflops_16(gpu))
    unpacked = fmt.get("unpacked_rate")
    # W4A16 GEMM kernels issue-bound below the 16-bit GEMMs (catalog, cited); attention keeps gpu_tflops
    factor = unpacked["vs_16bit"] if not native and unpacked and gpu.get("architecture") in unpacked["architectures"] else 1.0
    act_bits = float((fmt.get("activation_quant") or {}).get("bits") or 0) if native else 0.0
    return {"gpu_tflops": rate, "unpacked_gemm_rate": float(factor), "weights_dequantized": int(fmt["kind"] != "float"),
            "act_quant_bits": act_bits}


def runtime_on_gpu_key(fmt: dict[str, Any]) -> tuple:
    """What :func:`runtime_on_gpu_vars` reads of a format (the unpacking cost's kind and ggml block family)."""
    return fmt["kind"] != "float", fmt.get("gguf_block")


def runtime_on_gpu_vars(runtime: dict[str, Any], fmt: dict[str, Any], order: tuple[str, ...], host_bw_gb_s: float,
                        to_nvme: bool, settings: dict[str, float] | None = None) -> dict[str, float]:
    """The runtime's efficiencies for a hardware class (``order``: the class and its fallbacks), the ALU
    work it spends unpacking the format, and the offload path's bandwidth - the request's ``runtime_settings``
    over the profile's values."""
    def rt(name: str) -> float:
        return _rt(runtime, name, order, settings)
    nvme = rt("nvme_read_gb_s")
    dequantized = int(fmt["kind"] != "float")
    return {
        **{var: rt(name) for var, name in CLASS_CONSTANTS.items()},
        "dequant_flops_per_weight": _unpack_flops(runtime, fmt, order, settings) * dequantized,
        "offload_bw_gb_s": min(host_bw_gb_s, nvme) if to_nvme and nvme else host_bw_gb_s,
    }


def launched_context(max_model_len: float, context: float) -> float:
    """The longest request a runtime is launched for: its ``max_model_len`` where one is set (vLLM's --max-model-len,
    TGI's --max-total-tokens), at most the model's context; the context where none is; 0 where neither is known."""
    known = [n for n in (max_model_len, context) if n > 0]
    return min(known) if known else 0.0


def runtime_constants(runtime: dict[str, Any], gpu: Entry, gpu_mem_gib: float,
                      settings: dict[str, float] | None, arch: Architecture) -> dict[str, float]:
    """The profile's constants as rt_<name> on this GPU (its key and vendor; ``gpu_mem_gib``, the memory the request
    runs with) for this model (its context and config model_type) - tiers applied - and the request's
    runtime_settings over them."""
    # defaults keyed to the context read the one the runtime is launched with (vLLM V0's --max-model-len)
    context = launched_context(float((settings or {}).get("max_model_len") or 0), float(arch.max_position_embeddings or 0))
    values = _runtime_vars(runtime, gpu.key, gpu_mem_gib, context, arch.config_model_type, gpu.data.get("vendor") or "")
    if not settings:
        return values
    out = dict(values)
    for name, value in settings.items():
        out[f"rt_{name}"] = float(value)  # the runtime's own flag, set by the request (resolve checked the name)
    # the defaults that follow what the request sets (TGI's KV share follows --cuda-memory-fraction): the profile's rules
    for name, value in followed_constants(runtime, gpu, out, settings).items():
        out[f"rt_{name}"] = value
    return out


def followed_constants(runtime: dict[str, Any], gpu: Entry, values: dict[str, float],
                       settings: dict[str, float] | None) -> dict[str, float]:
    """The constants the profile's ``follows`` rules move for these settings on this GPU (:mod:`vramplan.follows`):
    ``values`` are the rt_<name> variables before the rules, tiers and settings applied."""
    plain = {k[3:]: v for k, v in values.items() if k.startswith("rt_")}
    return follows.followed(runtime, settings, plain, gpu.data.get("vendor") or "")


def runtime_act_bytes(rt_activation_bytes: Any, act_bytes: Any, workload: str) -> Any:
    """Bytes per activation element: the runtime's, where it fixes them (ggml compute buffers hold f32
    activations), else the format's compute type's. Elementwise."""
    if workload != "inference":
        return act_bytes
    return where(rt_activation_bytes > 0, rt_activation_bytes, act_bytes)


def _lora_dims(s: dict[str, float], a) -> None:
    """Σ (in + out) over every linear of each kind, counting each routed expert's copy (peft's all-linear reaches them
    where each expert is nn.Linear modules, as transformers 4 built them; :func:`_without_routed_experts` takes them
    out where the trainer holds them fused - the runtime constant lora_routed_experts)."""
    L, h = a.num_attention_layers, a.hidden_size  # q/k/v/o exist only in attention layers (hybrids)
    n_moe = len(a.moe_layers)
    dense_ff = a.dense_intermediate_size or a.intermediate_size
    ff_layers = sum(1 for i, f in enumerate(a.ffn_sizes) if f and i not in set(a.moe_layers)) if a.ffn_sizes \
        else a.num_layers - n_moe
    ff_copies = ff_layers * (h + dense_ff)
    if n_moe:
        ff_copies += n_moe * a.num_experts * (a.moe_expert_width + a.moe_intermediate_size)
        if a.shared_expert_intermediate_size:
            ff_copies += n_moe * (h + a.shared_expert_intermediate_size)
    s["lora_dims_q"] = L * (h + a.q_dim)
    s["lora_dims_k"] = L * (h + a.num_kv_heads * a.head_dim) if not a.is_mla else L * (h + a.kv_lora_rank + a.qk_rope_head_dim)
    s["lora_dims_v"] = L * (h + a.num_kv_heads * (a.v_head_dim or a.head_dim)) if not a.is_mla else \
        L * (a.kv_lora_rank + a.num_heads * (a.qk_nope_head_dim + a.v_head_dim))
    s["lora_dims_o"] = L * (a.attn_out_dim + h)
    s["lora_dims_gate"] = ff_copies if a.gated_mlp else 0
    s["lora_dims_up"] = ff_copies
    s["lora_dims_down"] = ff_copies
    # A fused linear shares one input: qkv_proj is h -> q + k + v, gate_up_proj h -> 2 x intermediate,
    # so k/v (and up) add only their output width (one lora_A of r x h per fused module).
    if s["fused_qkv"]:
        s["lora_dims_k"] -= L * h
        s["lora_dims_v"] -= L * h
    if s["fused_gate_up"]:
        s["lora_dims_up"] -= L * h
    s["lora_unadapted_width"] = 0.0


def load_vars(num_gpus: Any, tensor: bool, batch: Any, users: Any, request_rate: Any, gpu_hour_cost: Any,
              expert: bool = False) -> dict[str, Any]:
    """The inference variables a replica's size and load set: GPUs and their split, sequences in flight,
    the open loop's rate and the price. Elementwise, so a search (:mod:`vramplan.deploy`) passes arrays
    of many configurations where :func:`build` passes one request's numbers.

    ``expert`` (inference_parallelism "expert", one request only): attention data parallelism with the routed
    experts split over the GPUs (TensorRT-LLM's "DEP"): every GPU is a rank with tp = pp = 1 for everything but
    the routed experts, which ``ep`` splits (tensorrt_llm/mapping.py MappingBase.dp_size = tp_size with
    enable_attention_dp; modules/attention.py Attention.__init__ sets tp_size = 1)."""
    seqs = batch * users
    if expert:
        tp, pp, ep = 1, 1, num_gpus
    else:
        tp, pp = (num_gpus, 1) if tensor else (1, num_gpus)
        ep = 1
    return {"num_gpus": num_gpus, "tp": tp, "pp": pp, "dp": 1, "ep": ep, "users": users, "seqs": seqs, "mem_users": users,
            "mem_seqs": seqs, "request_rate": request_rate, "gpu_hour_cost": gpu_hour_cost, "micro_batch": seqs,
            "batch_global": seqs}


def server_slots(v: dict[str, Any]) -> dict[str, Any]:
    """What the memory holds on a runtime that sizes its cache by the request, where ``runtime_settings.max_num_seqs``
    gives it slots (llama-server's ``--parallel``: tools/server/server.cpp runs that many slots, one sequence each,
    and the context holds all of them - llama-context.cpp n_ctx_seq = PAD(n_ctx / n_seq_max, 256)):
    ``max_num_seqs // batch_size`` requests (at least one). An open loop fills them as requests arrive, a closed
    loop with as many clients or fewer holds its clients' (the others wait for a slot: ``max_num_seqs`` binds in
    the serving model). The load itself (``users``, ``seqs``) is unchanged. Without slots (0, the profile's
    default) or on a runtime with a preallocated pool the memory holds the load: every client's sequences, and an
    open loop one request. ``v`` holds ``batch``, ``users``, ``request_rate`` and the runtime's constants;
    elementwise (a sweep's arrays, :mod:`vramplan.deployspace`'s rows)."""
    slots = v.get("rt_max_num_seqs", 0.0)
    if isinstance(slots, (int, float)) and slots <= 0:
        return {}
    batch, users = v["batch"], v["users"]
    held = slots // batch  # whole numbers: resolve refuses a fractional count of sequences
    held = where(held > 1, held, 1)
    held = where(v["request_rate"] > 0, held, where(users < held, users, held))
    held = where(slots > 0, where(v.get("rt_kv_preallocate", 1.0) > 0, users, held), users)
    return {"mem_users": held, "mem_seqs": held * batch}


def _inference(s: dict[str, float], req: dict[str, Any], a, res: Resolved, notes: Notes) -> None:
    s.update(load_vars(req["num_gpus"], req["inference_parallelism"] == "tensor", req["batch_size"], req["concurrent_users"],
                       number_or(req.get("request_rate"), 0.0), number_or(req.get("gpu_hour_cost"), 0.0),
                       expert=req["inference_parallelism"] == "expert"))
    s["prefix_caching"] = int(req["enable_prefix_caching"])
    s["shared_prefix_ratio"] = req["shared_prefix_ratio"]
    s["continuous_batching"] = int(req["enable_continuous_batching"])
    # image soft tokens are part of each prompt (as they are of seq)
    s["input_tokens"], s["output_tokens"] = req["input_tokens"] + s["image_context_tokens"], req["output_tokens"]
    s["prompt_stated"] = int(bool(req.get("prompt_stated")))
    s["kv_bits"] = float(res.kv_quant.data["kv_cache_bits"])
    s["kv_fp8"] = float(kv_is_fp8(res.kv_quant.data))
    layers = 0
    if s["offload_enabled"]:
        if req.get("num_offload_layers") is not None:
            layers = min(req["num_offload_layers"], a.num_layers)
            if req["num_offload_layers"] > a.num_layers:
                notes.warnings.append(f"num_offload_layers {req['num_offload_layers']} exceeds the model's "
                                      f"{a.num_layers} layers; all layers are offloaded")
        elif req.get("percentage_offload") is not None:
            layers = round(req["percentage_offload"] / 100 * a.num_layers)
        elif not req.get("offload_kv_cache"):
            notes.assumptions.append("offloading: enable_offloading without num_offload_layers or percentage_offload "
                                     "offloads the fewest layers that make the workload fit; none offloaded here")
    elif req.get("num_offload_layers") or req.get("percentage_offload") or req.get("offload_kv_cache"):
        notes.warnings.append("offloading settings are ignored because enable_offloading is false")
    s["offload_layers"] = layers
    s["offload_kv"] = int(bool(s["offload_enabled"] and req.get("offload_kv_cache")))
    for k in ("method_full", "method_lora", "method_qlora", "mixed_precision", "lora_rank", "gradient_checkpointing",
              "zero_stage", "optimizer_8bit", "optimizer_paged", "optimizer_factored", "optimizer_fused_step", "fused_kernels",
              "activation_offloading", "grad_accum", "num_epochs"):
        s[k] = 0
    s.update({"train_param_bytes": 0, "optimizer_moments": 0, "optimizer_state_bytes": 0,
              "optimizer_state_overhead_bytes": 0.0, "num_samples": 0, "tokens_per_sample": req["seq_length"]})
    for m in ("q", "k", "v", "o", "gate", "up", "down"):
        s[f"lora_{m}"] = 0


ALL_LINEAR = ("q", "k", "v", "o", "gate", "up", "down")


def model_linear_names(s: dict[str, float]) -> dict[str, tuple[str, ...]]:
    """The decoder layer's linear modules as transformers names them, with the projections each computes."""
    names: dict[str, tuple[str, ...]] = {}
    if s["fused_qkv"]:
        names["qkv_proj"] = ("q", "k", "v")
    else:
        names.update({"q_proj": ("q",), "k_proj": ("k",), "v_proj": ("v",)})
    names["o_proj"] = ("o",)
    if s["fused_gate_up"]:
        names["gate_up_proj"] = ("gate", "up")
    else:
        if s["gated_mlp"]:
            names["gate_proj"] = ("gate",)
        names["up_proj"] = ("up",)
    names["down_proj"] = ("down",)
    return names


def _lora_targets(targets, s: dict[str, float], notes: Notes) -> tuple[str, ...]:
    """Projections peft adapts: "all-linear" hits every linear of the layers (the head excluded), a list
    hits the modules whose name it gives - on Phi-3 ``qkv_proj`` / ``gate_up_proj``, so ``q_proj`` matches
    nothing there (peft tuners_utils.check_target_module_exists; inject_adapter raises when no module matched)."""
    names = model_linear_names(s)
    if targets == "all-linear":
        return tuple(p for projs in names.values() for p in projs)
    missing = [t for t in targets if t not in names]
    hit = tuple(p for t in targets if t in names for p in names[t])
    if not hit:
        raise RequestError([("lora_target_modules", f"none of {', '.join(targets)} is a linear layer of this model "
                             f"(its layers have {', '.join(names)}); peft would find no module to adapt")])
    if missing:
        notes.warnings.append(f"lora_target_modules: {', '.join(missing)} matches no layer of this model "
                              f"(its layers have {', '.join(names)}); peft adapts only the others")
    return hit


def _without_routed_experts(s: dict[str, float], a, chosen: tuple[str, ...], notes: Notes) -> tuple[str, ...]:
    """The projections LoRA adapts where the trainer holds an MoE's routed experts as fused 3-D parameters
    (runtime constant lora_routed_experts 0): the routed experts' (in + out) features leave the feed-forward
    projections' dimensions, a projection with nothing left is not adapted, and the routed experts' share of a token's
    saved feed-forward width is no adapter's input. Adapting nothing at all is what peft refuses."""
    routed = len(a.moe_layers) * a.num_experts * (a.moe_expert_width + a.moe_intermediate_size)
    kept = []
    for proj in chosen:
        if proj in ("gate", "up", "down"):
            s[f"lora_dims_{proj}"] = max(s[f"lora_dims_{proj}"] - routed, 0)
            if s[f"lora_dims_{proj}"] == 0:
                continue
        kept.append(proj)
    if not kept:
        raise RequestError([("lora_target_modules", "this MoE's routed experts are fused 3-D parameters in transformers 5, "
                             "which peft's target_modules does not reach, and it has no other feed-forward linear layer: "
                             "name attention projections (q_proj, k_proj, v_proj, o_proj) or use all-linear")])
    s["lora_unadapted_width"] = float(a.experts_per_token * a.moe_intermediate_size)
    dropped = [p for p in chosen if p not in kept]
    ffn = [p for p in kept if p in ("gate", "up", "down")]
    notes.assumptions.append(
        "LoRA: transformers 5 holds this MoE's routed experts as fused 3-D parameters, which peft's target_modules "
        "(all-linear included) does not reach - adapters on " + ", ".join(f"{p}_proj" for p in kept)
        + (f" (the shared experts' and dense layers' {' / '.join(ffn)})" if ffn else "")
        + (f"; none on the experts' {', '.join(dropped)}" if dropped else ""))
    return tuple(kept)


def _finetuning(s: dict[str, float], req: dict[str, Any], res: Resolved, notes: Notes) -> None:
    opt = req["optimization_config"]
    method = req["finetuning_method"]
    n = req["num_gpus"]
    s["tp"], s["pp"], s["dp"], s["ep"] = 1, 1, n, 1
    s["users"] = 1
    s["method_full"] = int(method == "full")
    s["method_lora"] = int(method == "lora")
    s["method_qlora"] = int(method == "qlora")
    s["mixed_precision"] = int(method == "full" and req["fine_tuning_quantization"] == "fp32")
    s["train_param_bytes"] = 4 if s["mixed_precision"] else 2
    if s["mixed_precision"]:
        s["act_bytes"] = 2.0  # autocast runs the matmuls in bf16/fp16
    s["lora_rank"] = req["lora_rank"] if method != "full" else 0
    chosen = _lora_targets(req["lora_target_modules"], s, notes) if method != "full" else ()
    if chosen and res.arch.is_moe and not _rt(res.runtime.data, "lora_routed_experts", res.hardware_order,
                                              req.get("runtime_settings")):
        chosen = _without_routed_experts(s, res.arch, chosen, notes)
    for m in ALL_LINEAR:
        s[f"lora_{m}"] = int(m in chosen)
    ga = req["gradient_accumulation_steps"]
    s["grad_accum"] = ga
    mb = req.get("micro_batch_size")
    if mb is None:
        mb = max(1, math.ceil(req["batch_size"] / (ga * n)))
        if req["batch_size"] % (ga * n):
            notes.warnings.append(f"batch_size {req['batch_size']} does not divide into gradient_accumulation_steps {ga} "
                                  f"x {n} GPUs; micro-batch rounded up to {mb}")
    s["micro_batch"] = mb
    s["seqs"] = mb
    s["mem_users"], s["mem_seqs"] = 1, mb
    s["batch_global"] = req["batch_size"]
    s["gradient_checkpointing"] = int(bool(opt.get("gradient_checkpointing")))
    s["zero_stage"] = int(opt.get("zero_stage", 0))
    _optimizer(s, res.optimizer.data)
    s["fused_kernels"] = int(bool(opt.get("use_fused_kernels")))
    s["activation_offloading"] = int(bool(opt.get("activation_offloading")))
    s["num_samples"] = req["num_samples"]
    s["tokens_per_sample"] = req["tokens_per_sample"]
    s["num_epochs"] = req["num_epochs"]
    s.update({"prefix_caching": 0, "shared_prefix_ratio": 0.0, "continuous_batching": 0, "kv_bits": 16.0, "kv_fp8": 0.0,
              "offload_layers": 0, "offload_kv": 0, "input_tokens": req["seq_length"], "output_tokens": 1, "prompt_stated": 0,
              "request_rate": 0.0, "gpu_hour_cost": 0.0})


def _optimizer(s: dict[str, float], opt: dict[str, Any]) -> None:
    """The optimizer catalog entry as scenario variables (catalogs/optimizers, schema catalog-optimizers)."""
    s["optimizer_moments"] = opt["states_per_param"]
    s["optimizer_8bit"] = int(opt["state_dtype"] == "int8")
    s["optimizer_state_bytes"] = STATE_DTYPE_BYTES[opt["state_dtype"]]
    s["optimizer_state_overhead_bytes"] = opt["block_scale_bytes"] / opt["block_size"] if "block_size" in opt else 0.0
    s["optimizer_paged"] = int(bool(opt.get("paged")))
    s["optimizer_factored"] = int(bool(opt.get("factored")))
    s["optimizer_fused_step"] = int(bool(opt.get("fused_step")))
