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

    python benchmarks/measured/measure.py --all --out FILE.jsonl
"""

from __future__ import annotations

import argparse
import json
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


def run_case(name: str) -> dict:
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    model_name, cfg, workload, st = CASES[name]
    dev = torch.device("cuda")
    torch.cuda.init()
    a = torch.randn(1024, 1024, device=dev)
    (a @ a).sum().item()
    del a
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    context = total - free
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[st["weights_dtype"]]
    attn = "eager" if st.get("attention") == "eager" else "sdpa"
    config = AutoConfig.for_model(**cfg)
    torch.cuda.reset_peak_memory_stats()
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    params = sum(p.numel() for p in model.parameters())
    vocab = cfg["vocab_size"]
    out = {"id": f"h100b-{name}" if "H100" in torch.cuda.get_device_name() else f"h200b-{name}",
           "workload": workload, "model": model_name, "hf_config": cfg, "device": torch.cuda.get_device_name(),
           "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
    m: dict = {"params": params}
    if workload == "inference":
        settings = {"runtime": "transformers", **st}
        model.eval()
        torch.cuda.synchronize()
        m["weights_bytes"] = torch.cuda.memory_allocated()
        b, s = st["batch_size"], st["prompt_tokens"]
        ids = torch.randint(0, vocab, (b, s), device=dev)
        with torch.no_grad():
            t0 = time.time()
            o = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            torch.cuda.synchronize()
            m["prefill_tokens_per_s"] = round(b * s / (time.time() - t0), 1)
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
        settings = {"runtime": "transformers", "mixed_precision_autocast": "bf16" if dtype == torch.float32 else None,
                    "lora_alpha": 2 * st["lora_rank"] if method == "lora" else None,
                    "optimizer": "torch.optim.AdamW (default foreach)", "gradient_accumulation_steps": ga,
                    "attention": attn, "loss": "causal LM cross-entropy over the full sequence (labels = inputs)", **st}
        if method == "lora":
            from peft import LoraConfig, get_peft_model
            lc = LoraConfig(r=st["lora_rank"], lora_alpha=2 * st["lora_rank"], lora_dropout=0.0,
                            target_modules=st["lora_target_modules"], task_type="CAUSAL_LM")
            if st.get("gradient_checkpointing"):
                model.enable_input_require_grads()
            model = get_peft_model(model, lc)
        if st.get("gradient_checkpointing"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        m["trainable_params"] = sum(p.numel() for p in trainable)
        torch.cuda.synchronize()
        m["weights_bytes"] = torch.cuda.memory_allocated()
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
                t0 = time.time()
        torch.cuda.synchronize()
        m["train_tokens_per_s"] = round(2 * st["batch_size"] * s / (time.time() - t0), 1)
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
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--out", default="measured.jsonl")
    ap.add_argument("--timeout", type=int, default=60)
    ap.add_argument("--budget", type=int, default=300, help="start no case after this many seconds")
    args = ap.parse_args()
    if args.case:
        print("RESULT " + json.dumps(run_case(args.case)), flush=True)
        return 0
    t_start = time.time()
    with open(args.out, "a") as fh:
        for name in CASES:
            if time.time() - t_start > args.budget:
                print(f"{name}: skipped (time budget spent)", flush=True)
                continue
            t0 = time.time()
            try:
                p = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True, text=True,
                                   timeout=args.timeout)
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
            print(f"{name}: {time.time() - t0:.0f}s peak_alloc={r['peak_allocated_bytes'] / 1e9:.2f} GB "
                  f"reserved={r['peak_reserved_bytes'] / 1e9:.2f} GB ctx={r['cuda_context_bytes'] / 1e6:.0f} MB "
                  f"(total {time.time() - t_start:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
