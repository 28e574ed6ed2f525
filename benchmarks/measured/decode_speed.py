"""Measure eager transformers decode speed (ms per decode step) on the GPU at hand.

For each model (built from config.json fields with random weights on the GPU, bf16, SDPA) and each
(batch, context): prefill `context` tokens, run 8 warm-up decode steps, then time 32 greedy decode
steps on the dynamic cache, synchronizing around the timed loop. One process for all cases; the
device and versions are recorded with each line.

    python benchmarks/measured/decode_speed.py --out decode.jsonl [--budget 200]
"""

from __future__ import annotations

import argparse
import json
import time

MODELS = {
    "llama-3.2-1b": {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
                     "max_position_embeddings": 131072, "tie_word_embeddings": True},
    "llama-3-8b": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256,
                   "max_position_embeddings": 8192, "tie_word_embeddings": False},
    "qwen2.5-14b": {"model_type": "qwen2", "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 48,
                    "num_attention_heads": 40, "num_key_value_heads": 8, "vocab_size": 152064,
                    "max_position_embeddings": 32768, "tie_word_embeddings": False, "use_sliding_window": False},
    "mixtral-8x7b": {"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000,
                     "max_position_embeddings": 32768, "tie_word_embeddings": False, "num_local_experts": 8,
                     "num_experts_per_tok": 2},
}
SHAPES = {  # model: [(batch, context)]
    "llama-3.2-1b": [(1, 1024), (8, 1024), (32, 1024)],
    "llama-3-8b": [(1, 1024), (8, 1024), (32, 1024), (1, 8192)],
    "qwen2.5-14b": [(1, 1024), (16, 1024)],
    "mixtral-8x7b": [(1, 1024), (8, 1024)],
}


def main() -> int:
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="decode.jsonl")
    ap.add_argument("--budget", type=int, default=200)
    args = ap.parse_args()
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name()
    t_start = time.time()
    # Achieved HBM bandwidth: a large device-to-device copy (bytes read + written).
    x = torch.empty(2 * 1024**3, dtype=torch.uint8, device=dev)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    t0 = time.time()
    for _ in range(10):
        y.copy_(x)
    torch.cuda.synchronize()
    copy_gb_s = 10 * 2 * x.numel() / (time.time() - t0) / 1e9
    del x, y
    with open(args.out, "w") as fh:
        fh.write(json.dumps({"kind": "copy_bandwidth", "device": name, "gb_s_read_plus_write": round(copy_gb_s, 1)}) + "\n")
        for model_name, cfg in MODELS.items():
            if time.time() - t_start > args.budget:
                print(f"{model_name}: skipped (budget)", flush=True)
                continue
            config = AutoConfig.for_model(**cfg)
            with torch.device(dev):
                model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
            model.eval()
            for batch, ctx in SHAPES[model_name]:
                with torch.no_grad():
                    ids = torch.randint(0, cfg["vocab_size"], (batch, ctx), device=dev)
                    o = model(input_ids=ids, use_cache=True, logits_to_keep=1)
                    cache, nxt = o.past_key_values, o.logits[:, -1:].argmax(-1)
                    del o
                    for _ in range(8):
                        o = model(input_ids=nxt, past_key_values=cache, use_cache=True)
                        cache, nxt = o.past_key_values, o.logits[:, -1:].argmax(-1)
                        del o
                    torch.cuda.synchronize()
                    t0 = time.time()
                    steps = 32
                    for _ in range(steps):
                        o = model(input_ids=nxt, past_key_values=cache, use_cache=True)
                        cache, nxt = o.past_key_values, o.logits[:, -1:].argmax(-1)
                        del o
                    torch.cuda.synchronize()
                    ms = (time.time() - t0) / steps * 1000
                    del cache
                rec = {"kind": "decode", "device": name, "model": model_name, "hf_config": cfg,
                       "settings": {"runtime": "transformers", "weights_dtype": "bf16", "attention": "sdpa",
                                    "batch_size": batch, "context_tokens": ctx + 8, "timed_steps": steps},
                       "measured": {"ms_per_step": round(ms, 3), "tokens_per_s": round(batch * 1000 / ms, 1)},
                       "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                print(model_name, batch, ctx, f"{ms:.2f} ms/step", flush=True)
            del model
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
