"""Measure GPU memory of transformers / peft runs the way ../shared/calibration/README.md describes.

Each case runs in its own process (python measure.py --case NAME): the model is built from its
config.json fields with random weights directly on the GPU, then
* inference: one prefill of batch x prompt (use_cache, logits for the last position only) and
  `generated` greedy decode steps on the returned cache;
* fine-tuning: three torch.optim.AdamW steps (default foreach) on random tokens with labels =
  input_ids; fp32 weights run under torch.autocast(bfloat16); LoRA is peft (dropout 0, alpha 2r);
  gradient checkpointing is non-reentrant; gradient accumulation runs `accum` micro-batches per step.
nvidia_smi_peak_bytes = peak_reserved_bytes + cuda_context_bytes (device memory in use after CUDA
init and one cuBLAS matmul, before any model), as in the calibration file.

Issue 16 adds the classes the estimate missed most on held-out runs, and decode speed:
* LLM.int8 inference (``weights_dtype: int8``): the bf16 model is saved and loaded back with
  BitsAndBytesConfig(load_in_8bit=True) as users load it; the peak counts from before the load;
* fp32 inference with a sliding-window config (Mistral 7B v0.1 beyond and within its window, Phi-3
  mini with its published ``sliding_window: 2047``);
* Phi-3 mini LoRA (all-linear, with and without the window) and full bf16 fine-tuning;
* pure-bf16 full fine-tuning of 0.5B-7B models, and fp32 mixed precision with bitsandbytes AdamW8bit;
* every training case also records the caching allocator's segments (count and sizes at the end,
  torch.cuda.memory_stats peaks), and two cases repeat under expandable_segments, so the next
  session can model the reserve from segments instead of fitted fractions;
* bitsandbytes NF4 (saved and loaded back like LLM.int8): a short prompt (the prefill's dequantized weight) and a
  two-layer Mixtral-width MoE (its fused routed experts stay bf16 in transformers 5); a LoRA case records the live
  allocator blocks right after get_peft_model (``lora_census``);
* ``decode`` cases: transformers generate() with the dynamic cache and the static cache (eager:
  disable_compile) at batch 1-64; each process warms up with the same shapes first, then times
  generate(max_new_tokens=1) and generate(max_new_tokens=65) twice and keeps the faster pair
  (ms per decode step = (t65 - t1) / 64).

Every case runs in its own process. The whole plan fits about ten minutes of an H200:

    python benchmarks/measured/measure.py --all --out FILE.jsonl --budget 540
    python benchmarks/measured/measure.py --list          # the cases, in the order they run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

QWEN15 = {"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
          "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
          "tie_word_embeddings": True, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "hidden_act": "silu",
          "use_sliding_window": False}
QWEN3 = {**QWEN15, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16}
QWEN7 = {**QWEN15, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
         "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False}
LLAMA3B = {"model_type": "llama", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
           "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256,
           "max_position_embeddings": 131072, "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False,
           "hidden_act": "silu", "rope_theta": 500000.0}
LLAMA1B = {**LLAMA3B, "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "head_dim": 64}
SMOL17 = {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
          "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 49152, "max_position_embeddings": 8192,
          "tie_word_embeddings": True, "hidden_act": "silu", "rope_theta": 130000.0}
GEMMA2_2B = {"model_type": "gemma2", "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
             "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 256000,
             "max_position_embeddings": 8192, "sliding_window": 4096, "query_pre_attn_scalar": 256,
             "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "hidden_activation": "gelu_pytorch_tanh",
             "tie_word_embeddings": True}

MISTRAL7B_V01 = {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 32000,
                 "max_position_embeddings": 32768, "tie_word_embeddings": False, "sliding_window": 4096,
                 "hidden_act": "silu", "rope_theta": 10000.0}
PHI3_MINI = {"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064, "max_position_embeddings": 4096,
             "tie_word_embeddings": False, "hidden_act": "silu", "pad_token_id": 32000, "bos_token_id": 1,
             "eos_token_id": 32000}
PHI3_MINI_WINDOW = {**PHI3_MINI, "sliding_window": 2047}  # as the published config.json declares it
QWEN05 = {**QWEN15, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
          "num_key_value_heads": 2}
LLAMA8B = {**LLAMA3B, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
           "tie_word_embeddings": False, "max_position_embeddings": 8192}
# Mixtral 8x7B's widths over two layers: the MoE's fused routed experts under bitsandbytes (docs/FIDELITY.md)
MIXTRAL_2L = {"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 2,
              "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8, "num_experts_per_tok": 2,
              "vocab_size": 32000, "max_position_embeddings": 32768, "tie_word_embeddings": False, "hidden_act": "silu",
              "rope_theta": 1000000.0}

# name: (model, config, workload, settings)
CASES = {
    "ft-qwen2.5-1.5b-full-bf16-gc0-b2-s1024": ("qwen2.5-1.5b", QWEN15, "finetuning",
        dict(method="full", weights_dtype="bf16", gradient_checkpointing=False, batch_size=2, seq_length=1024)),
    "ft-qwen2.5-1.5b-full-fp32-gc1-b4-s2048": ("qwen2.5-1.5b", QWEN15, "finetuning",
        dict(method="full", weights_dtype="fp32", gradient_checkpointing=True, batch_size=4, seq_length=2048)),
    "ft-smollm2-1.7b-full-bf16-gc1-b8-s2048": ("smollm2-1.7b", SMOL17, "finetuning",
        dict(method="full", weights_dtype="bf16", gradient_checkpointing=True, batch_size=8, seq_length=2048)),
    "ft-llama-3.2-1b-full-bf16-gc1-ga2-b4-s2048": ("llama-3.2-1b", LLAMA1B, "finetuning",
        dict(method="full", weights_dtype="bf16", gradient_checkpointing=True, batch_size=4, seq_length=2048,
             gradient_accumulation_steps=2)),
    "ft-llama-3.2-3b-lora-qkvo-r32-gc0-b2-s2048": ("llama-3.2-3b", LLAMA3B, "finetuning",
        dict(method="lora", weights_dtype="bf16", gradient_checkpointing=False, batch_size=2, seq_length=2048,
             lora_rank=32, lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])),
    "ft-qwen2.5-3b-lora-r8-gc1-b8-s1024": ("qwen2.5-3b", QWEN3, "finetuning",
        dict(method="lora", weights_dtype="bf16", gradient_checkpointing=True, batch_size=8, seq_length=1024,
             lora_rank=8, lora_target_modules="all-linear")),
    "ft-qwen2.5-7b-lora-r16-gc0-b1-s2048": ("qwen2.5-7b", QWEN7, "finetuning",
        dict(method="lora", weights_dtype="bf16", gradient_checkpointing=False, batch_size=1, seq_length=2048,
             lora_rank=16, lora_target_modules="all-linear")),
    "inf-smollm2-1.7b-bf16-sdpa-b16-s2048": ("smollm2-1.7b", SMOL17, "inference",
        dict(weights_dtype="bf16", attention="sdpa", batch_size=16, prompt_tokens=2048, generated_tokens=16)),
    "inf-llama-3.2-3b-fp32-sdpa-b1-s4096": ("llama-3.2-3b", LLAMA3B, "inference",
        dict(weights_dtype="fp32", attention="sdpa", batch_size=1, prompt_tokens=4096, generated_tokens=16)),
    "inf-gemma-2-2b-bf16-eager-b2-s4096": ("gemma-2-2b", GEMMA2_2B, "inference",
        dict(weights_dtype="bf16", attention="eager", batch_size=2, prompt_tokens=4096, generated_tokens=16)),
    "inf-qwen2.5-1.5b-bf16-sdpa-b8-s8192": ("qwen2.5-1.5b", QWEN15, "inference",
        dict(weights_dtype="bf16", attention="sdpa", batch_size=8, prompt_tokens=8192, generated_tokens=16)),
}

# Issue 16 - the classes furthest off on held-out runs, in the order they run (most informative first).
CASES_I16 = {
    "inf-llama-3.2-1b-int8-b16-s2048": ("llama-3.2-1b", LLAMA1B, "inference",
        dict(weights_dtype="int8", attention="sdpa", batch_size=16, prompt_tokens=2048, generated_tokens=16)),
    "inf-llama-3.2-3b-int8-b8-s2048": ("llama-3.2-3b", LLAMA3B, "inference",
        dict(weights_dtype="int8", attention="sdpa", batch_size=8, prompt_tokens=2048, generated_tokens=16)),
    # a narrow prompt on a random-weight 8B: silu(gate) x up crosses the 6.0 threshold in nearly every column of
    # down_proj's input, so bitsandbytes copies the input and dequantizes the whole weight in fp32 (docs/FIDELITY.md)
    "inf-llama-3-8b-int8-b1-s2048": ("llama-3-8b", LLAMA8B, "inference",
        dict(weights_dtype="int8", attention="sdpa", batch_size=1, prompt_tokens=2048, generated_tokens=16)),
    "inf-mistral-7b-v0.1-fp32-sdpa-b1-s8192": ("mistral-7b-v0.1", MISTRAL7B_V01, "inference",
        dict(weights_dtype="fp32", attention="sdpa", batch_size=1, prompt_tokens=8192, generated_tokens=16)),
    "inf-mistral-7b-v0.1-fp32-sdpa-b1-s4096": ("mistral-7b-v0.1", MISTRAL7B_V01, "inference",
        dict(weights_dtype="fp32", attention="sdpa", batch_size=1, prompt_tokens=4096, generated_tokens=16)),
    "inf-phi-3-mini-window-fp32-sdpa-b2-s4096": ("phi-3-mini", PHI3_MINI_WINDOW, "inference",
        dict(weights_dtype="fp32", attention="sdpa", batch_size=2, prompt_tokens=4096, generated_tokens=16)),
    "ft-phi-3-mini-window-lora-r16-gc0-b4-s2048": ("phi-3-mini", PHI3_MINI_WINDOW, "finetuning",
        dict(method="lora", weights_dtype="bf16", gradient_checkpointing=False, batch_size=4, seq_length=2048,
             lora_rank=16, lora_target_modules="all-linear")),
    "ft-phi-3-mini-lora-qkvo-r16-gc0-b4-s2048": ("phi-3-mini", PHI3_MINI, "finetuning",
        dict(method="lora", weights_dtype="bf16", gradient_checkpointing=False, batch_size=4, seq_length=2048,
             lora_rank=16, lora_target_modules=["qkv_proj", "o_proj"])),
    "ft-phi-3-mini-full-bf16-gc1-b4-s2048": ("phi-3-mini", PHI3_MINI, "finetuning",
        dict(method="full", weights_dtype="bf16", gradient_checkpointing=True, batch_size=4, seq_length=2048)),
    "ft-qwen2.5-0.5b-full-bf16-gc0-b8-s1024": ("qwen2.5-0.5b", QWEN05, "finetuning",
        dict(method="full", weights_dtype="bf16", gradient_checkpointing=False, batch_size=8, seq_length=1024)),
    "ft-llama-3.2-3b-full-bf16-gc1-b4-s1024": ("llama-3.2-3b", LLAMA3B, "finetuning",
        dict(method="full", weights_dtype="bf16", gradient_checkpointing=True, batch_size=4, seq_length=1024)),
    "ft-qwen2.5-7b-full-bf16-gc1-b1-s2048": ("qwen2.5-7b", QWEN7, "finetuning",
        dict(method="full", weights_dtype="bf16", gradient_checkpointing=True, batch_size=1, seq_length=2048)),
    "ft-llama-3.2-1b-full-fp32-adamw8bit-gc1-b4-s1024": ("llama-3.2-1b", LLAMA1B, "finetuning",
        dict(method="full", weights_dtype="fp32", gradient_checkpointing=True, batch_size=4, seq_length=1024,
             optimizer="bitsandbytes AdamW8bit")),
    "ft-qwen2.5-1.5b-full-fp32-adamw8bit-gc0-b2-s1024": ("qwen2.5-1.5b", QWEN15, "finetuning",
        dict(method="full", weights_dtype="fp32", gradient_checkpointing=False, batch_size=2, seq_length=1024,
             optimizer="bitsandbytes AdamW8bit")),
    # the same shapes as two cases above under expandable_segments (PYTORCH_CUDA_ALLOC_CONF)
    "ft-llama-3.2-3b-full-bf16-gc1-b4-s1024-expandable": ("llama-3.2-3b", LLAMA3B, "finetuning",
        dict(method="full", weights_dtype="bf16", gradient_checkpointing=True, batch_size=4, seq_length=1024,
             allocator="expandable_segments:True")),
    "ft-qwen2.5-0.5b-full-bf16-gc0-b8-s1024-expandable": ("qwen2.5-0.5b", QWEN05, "finetuning",
        dict(method="full", weights_dtype="bf16", gradient_checkpointing=False, batch_size=8, seq_length=1024,
             allocator="expandable_segments:True")),
    # transformers' quantized cache (QuantizedCache, docs/FIDELITY.md): HQQ int8 on a model with as many KV heads as query
    # heads (its prompt's quantization outgrows the MLP), quanto int4 on Llama 3 8B; 160 generated tokens pass the 128th
    # decode step, which quantizes the residual again
    "inf-phi-3-mini-bf16-kv-hqq8-b4-s2048-g160": ("phi-3-mini", PHI3_MINI, "inference",
        dict(weights_dtype="bf16", attention="sdpa", batch_size=4, prompt_tokens=2048, generated_tokens=160,
             kv_cache=("hqq", 8))),
    "inf-llama-3-8b-bf16-kv-quanto4-b16-s2048-g160": ("llama-3-8b", LLAMA8B, "inference",
        dict(weights_dtype="bf16", attention="sdpa", batch_size=16, prompt_tokens=2048, generated_tokens=160,
             kv_cache=("quanto", 4))),
    # a short prompt and a long answer: generate prefills 128 tokens, then the cache grows to 2176 over 2048 decode steps
    # (the stated-prompt peak, docs/FIDELITY.md; and what the steps' torch.cat leaves reserved)
    "inf-llama-3.2-1b-bf16-b32-s128-g2048": ("llama-3.2-1b", LLAMA1B, "inference",
        dict(weights_dtype="bf16", attention="sdpa", batch_size=32, prompt_tokens=128, generated_tokens=2048)),
    # bitsandbytes NF4 with a short prompt: the prefill's dequantized weight (an 8192 x 3072 MLP matrix, 52 MB) against
    # 128 tokens' intermediates (6 MB) - dequant_copy_weight_bytes, docs/FIDELITY.md
    "inf-llama-3.2-3b-nf4-b1-s128": ("llama-3.2-3b", LLAMA3B, "inference",
        dict(weights_dtype="nf4", attention="sdpa", batch_size=1, prompt_tokens=128, generated_tokens=16)),
    # an MoE loaded in NF4: transformers 5 leaves its fused routed experts in bf16 (weights_bytes says how many bits)
    "inf-mixtral-2l-nf4-b1-s512": ("mixtral-2l", MIXTRAL_2L, "inference",
        dict(weights_dtype="nf4", attention="sdpa", batch_size=1, prompt_tokens=512, generated_tokens=16)),
    # the held-out LoRA run whose weights_bytes held 108 MiB beyond parameters, adapters and one workspace: the census of
    # live blocks after get_peft_model (lora_census) names them
    "ft-qwen2.5-3b-lora-r8-gc1-b8-s1024": CASES["ft-qwen2.5-3b-lora-r8-gc1-b8-s1024"],
}
DECODE_MODELS = {"llama-3.2-1b": LLAMA1B, "llama-3-8b": LLAMA8B}
for _model, _cfg in DECODE_MODELS.items():
    for _cache in ("dynamic", "static"):
        for _b in (1, 8, 32, 64):
            CASES_I16[f"decode-{_model}-bf16-{_cache}-b{_b}-ctx512"] = (_model, _cfg, "decode",
                dict(weights_dtype="bf16", attention="sdpa", cache=_cache, batch_size=_b, prompt_tokens=512,
                     timed_steps=64))


def _block_census(torch) -> list:
    """The live (allocated) blocks of the caching allocator by size: [size in bytes, count], largest first, the 24
    largest sizes - what weights_bytes holds beside the parameters."""
    sizes: dict[int, int] = {}
    for seg in torch.cuda.memory_snapshot():
        for block in seg.get("blocks", []):
            if block.get("state") == "active_allocated":
                sizes[block["size"]] = sizes.get(block["size"], 0) + 1
    return [[size, n] for size, n in sorted(sizes.items(), reverse=True)[:24]]


def _allocator_summary(torch) -> dict:
    """Segments the caching allocator holds at the end of the run, and its peak statistics."""
    stats = torch.cuda.memory_stats()
    segs = torch.cuda.memory_snapshot()
    sizes = sorted((seg["total_size"] for seg in segs), reverse=True)
    return {
        "segments": len(sizes), "segment_bytes": sum(sizes), "largest_segments": sizes[:12],
        "segments_2mib": sum(1 for x in sizes if x == 2 * 1024**2), "segments_20mib": sum(1 for x in sizes if x == 20 * 1024**2),
        "free_in_segments_bytes": sum(seg["total_size"] - seg["allocated_size"] for seg in segs),
        "reserved_large_pool_peak": stats.get("reserved_bytes.large_pool.peak"),
        "reserved_small_pool_peak": stats.get("reserved_bytes.small_pool.peak"),
        "segment_count_peak": stats.get("segment.all.peak"), "num_alloc_retries": stats.get("num_alloc_retries"),
        "inactive_split_bytes_peak": stats.get("inactive_split_bytes.all.peak"),
    }


def _build(cfg: dict, dtype, attn: str, dev, torch, m: dict, out_dir: str | None = None):
    """The model on the GPU with random weights; int8 and nf4 are saved and loaded back through bitsandbytes."""
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.for_model(**cfg)
    if dtype not in ("int8", "nf4"):
        torch.cuda.reset_peak_memory_stats()
        with torch.device(dev):
            return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    import tempfile
    from transformers import BitsAndBytesConfig
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation=attn)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        model.save_pretrained(tmp)
        del model
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        bnb = (BitsAndBytesConfig(load_in_8bit=True) if dtype == "int8" else
               BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16))
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.bfloat16, attn_implementation=attn, device_map="cuda",
                                                     quantization_config=bnb)
    torch.cuda.synchronize()
    m["peak_reserved_after_load_bytes"] = torch.cuda.max_memory_reserved()
    return model


def _decode(model, st: dict, vocab: int, dev, torch, m: dict) -> None:
    """ms per decode step of generate() at this batch and cache, after a warm-up at the same shapes."""
    b, ctx, steps = st["batch_size"], st["prompt_tokens"], st["timed_steps"]
    ids = torch.randint(0, vocab, (b, ctx), device=dev)
    kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
    if st["cache"] == "static":
        kw.update(cache_implementation="static", disable_compile=True)

    def gen(n: int) -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    with torch.no_grad():
        gen(steps + 1)  # warm-up: the same shapes, so the allocator and cuBLAS have what they need
        best = None
        for _ in range(2):
            t1, tn = gen(1), gen(steps + 1)
            if best is None or tn - t1 < best[1] - best[0]:
                best = (t1, tn)
    m["prefill_plus_one_s"] = round(best[0], 5)
    m["ms_per_step"] = round((best[1] - best[0]) / steps * 1000, 3)
    m["tokens_per_s"] = round(b * 1000 / m["ms_per_step"], 1)


def run_case(name: str) -> dict:
    import torch
    import transformers

    model_name, cfg, workload, st = {**CASES, **CASES_I16}[name]
    dev = torch.device("cuda")
    torch.cuda.init()
    a = torch.randn(1024, 1024, device=dev)
    (a @ a).sum().item()
    del a
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    context = total - free
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "int8": "int8", "nf4": "nf4"}[st["weights_dtype"]]
    attn = "eager" if st.get("attention") == "eager" else "sdpa"
    m: dict = {}
    # what the allocator holds before any model (the warm-up's cuBLAS workspace): weights_bytes - this is the
    # model's own tensors, whichever workspaces this torch has created by then (docs/FIDELITY.md)
    m["pre_model_allocated_bytes"] = torch.cuda.memory_allocated()
    model = _build(cfg, dtype, attn, dev, torch, m)
    params = sum(p.numel() for p in model.parameters())
    vocab = cfg["vocab_size"]
    out = {"id": f"h100b-{name}" if "H100" in torch.cuda.get_device_name() else f"h200b-{name}",
           "workload": workload, "model": model_name, "hf_config": cfg, "device": torch.cuda.get_device_name(),
           "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
    m["params"] = params
    if workload == "decode":
        out["kind"] = "decode"
        model.eval()
        _decode(model, st, vocab, dev, torch, m)
        out["settings"] = {"runtime": "transformers", **st}
        out["measured"] = m
        return out
    if workload == "inference":
        settings = {"runtime": "transformers", **st}
        if dtype in ("int8", "nf4"):
            import bitsandbytes
            settings["quantization_detail"] = ("bitsandbytes LLM.int8 (load_in_8bit, threshold 6.0), bf16 compute"
                                               if dtype == "int8" else
                                               "bitsandbytes NF4, double quantization, bf16 compute")
            out["versions"]["bitsandbytes"] = bitsandbytes.__version__
        model.eval()
        torch.cuda.synchronize()
        m["weights_bytes"] = torch.cuda.memory_allocated()
        b, s = st["batch_size"], st["prompt_tokens"]
        ids = torch.randint(0, vocab, (b, s), device=dev)
        quantized = {}
        if st.get("kv_cache"):  # generate(cache_implementation="quantized") builds this cache (generation/utils.py)
            from transformers import QuantizedCache
            backend, nbits = st["kv_cache"]
            quantized["past_key_values"] = QuantizedCache(backend=backend, config=model.config, nbits=nbits)
            mod = __import__("hqq" if backend == "hqq" else "optimum.quanto", fromlist=["__version__"])
            out["versions"][backend] = getattr(mod, "__version__", "?")
        with torch.no_grad():
            t0 = time.time()
            o = model(input_ids=ids, use_cache=True, logits_to_keep=1, **quantized)
            torch.cuda.synchronize()
            m["prefill_tokens_per_s"] = round(b * s / (time.time() - t0), 1)
            m["prefill_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
            cache = o.past_key_values
            nxt = o.logits[:, -1:].argmax(-1)
            del o
            torch.cuda.synchronize()
            m["kv_cache_bytes_after_prefill"] = torch.cuda.memory_allocated() - m["weights_bytes"]
            for i in range(st["generated_tokens"]):
                o = model(input_ids=nxt, past_key_values=cache, use_cache=True)
                cache = o.past_key_values
                nxt = o.logits[:, -1:].argmax(-1)
                del o
    else:
        method = st["method"]
        ga = st.get("gradient_accumulation_steps", 1)
        optimizer = st.get("optimizer", "torch.optim.AdamW (default foreach)")
        settings = {"runtime": "transformers", "mixed_precision_autocast": "bf16" if dtype == torch.float32 else None,
                    "lora_alpha": 2 * st["lora_rank"] if method == "lora" else None,
                    "optimizer": optimizer, "gradient_accumulation_steps": ga,
                    "attention": attn, "loss": "causal LM cross-entropy over the full sequence (labels = inputs)", **st}
        if method == "lora":
            from peft import LoraConfig, get_peft_model
            lc = LoraConfig(r=st["lora_rank"], lora_alpha=2 * st["lora_rank"], lora_dropout=0.0,
                            target_modules=st["lora_target_modules"], task_type="CAUSAL_LM")
            if st.get("gradient_checkpointing"):
                model.enable_input_require_grads()
            torch.cuda.synchronize()
            m["pre_peft_allocated_bytes"] = torch.cuda.memory_allocated()
            model = get_peft_model(model, lc)
            torch.cuda.synchronize()
            m["lora_census"] = _block_census(torch)
        if st.get("gradient_checkpointing"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        m["trainable_params"] = sum(p.numel() for p in trainable)
        torch.cuda.synchronize()
        m["weights_bytes"] = torch.cuda.memory_allocated()
        if "8bit" in optimizer.lower():
            import bitsandbytes
            opt = bitsandbytes.optim.AdamW8bit(trainable, lr=1e-5)
            out["versions"]["bitsandbytes"] = bitsandbytes.__version__
        else:
            opt = torch.optim.AdamW(trainable, lr=1e-5)
        mb = st["batch_size"] // ga
        s = st["seq_length"]
        t0 = time.time()
        for step in range(3):
            for _ in range(ga):
                ids = torch.randint(0, vocab, (mb, s), device=dev)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.float32):
                    loss = model(input_ids=ids, labels=ids, use_cache=False).loss / ga
                loss.backward()
                del loss
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step == 0:
                torch.cuda.synchronize()
                m["weights_plus_optimizer_state_bytes"] = torch.cuda.memory_allocated()
                m["step0_peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
                t0 = time.time()
        torch.cuda.synchronize()
        m["train_tokens_per_s"] = round(2 * st["batch_size"] * s / (time.time() - t0), 1)
        m["allocator"] = _allocator_summary(torch)
    torch.cuda.synchronize()
    m["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
    m["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
    m["cuda_context_bytes"] = context
    m["nvidia_smi_peak_bytes"] = m["peak_reserved_bytes"] + context
    out["settings"] = settings
    out["measured"] = m
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case")
    ap.add_argument("--all", action="store_true", help="the issue 16 plan (CASES_I16), in order")
    ap.add_argument("--calibration-cases", action="store_true", help="the 2026-11-26 cases (CASES) instead")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--out", default="measured.jsonl")
    ap.add_argument("--timeout", type=int, default=120)
    ap.add_argument("--budget", type=int, default=540, help="start no case after this many seconds")
    args = ap.parse_args()
    plan = CASES if args.calibration_cases else CASES_I16
    if args.list:
        for name in plan:
            print(name)
        return 0
    if args.case:
        print("RESULT " + json.dumps(run_case(args.case)), flush=True)
        return 0
    t_start = time.time()
    with open(args.out, "a") as fh:
        for name in plan:
            if time.time() - t_start > args.budget:
                print(f"{name}: skipped (time budget spent)", flush=True)
                continue
            st = plan[name][3]
            env = dict(os.environ)
            if st.get("allocator"):
                env["PYTORCH_CUDA_ALLOC_CONF"] = st["allocator"]
            t0 = time.time()
            try:
                p = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True, text=True,
                                   timeout=args.timeout, env=env)
            except subprocess.TimeoutExpired:
                print(f"{name}: timed out", flush=True)
                continue
            lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
            if p.returncode or not lines:
                print(f"{name}: failed rc={p.returncode}\n{p.stderr[-1500:]}", flush=True)
                continue
            fh.write(lines[-1][7:] + "\n")
            fh.flush()
            r = json.loads(lines[-1][7:])["measured"]
            if "ms_per_step" in r:
                print(f"{name}: {time.time() - t0:.0f}s {r['ms_per_step']:.2f} ms/step (total {time.time() - t_start:.0f}s)",
                      flush=True)
                continue
            print(f"{name}: {time.time() - t0:.0f}s peak_alloc={r['peak_allocated_bytes'] / 1e9:.2f} GB "
                  f"reserved={r['peak_reserved_bytes'] / 1e9:.2f} GB ctx={r['cuda_context_bytes'] / 1e6:.0f} MB "
                  f"(total {time.time() - t_start:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
