"""TGI 3.x (the `tgi` profile; 2.x is `tgi-v2`), as text-generation-inference v3.3.6 launches it: a prefill budget its
launcher derives from the GPU's FLOPs and the model's (launcher/src/main.rs compute_optimal), prompt chunks riding with
the running batch's decode, a request limit sized to the KV cache instead of a start-up refusal, and a cache of 90% of
the GPU less everything held (get_cuda_free_memory). Every figure is worked out here from the model's config and those
rules, not read back from the catalog."""
from __future__ import annotations

import math

import pytest

import vramplan
from vramplan.catalog import get_catalog
from vramplan.estimate import trace_values

CAT = get_catalog()
GIB = 1 << 30


def traced(body: dict) -> tuple[dict, dict]:
    out = vramplan.estimate_inference({"input_tokens": 1000, "output_tokens": 200, **body, "trace": True})
    return out, trace_values(out)


def launcher_flop(layers: int, hidden: int, heads: int, kv_heads: int, intermediate: int, experts: int = 1) -> int:
    """Config::flop: q, attention and o over the query heads, k and v over the KV heads, 2 x head_dim x hidden each;
    2 x 3 x hidden x intermediate for gate / up / down per expert a token takes; per layer, times the layers."""
    head_dim = hidden // heads
    attention = 2 * head_dim * hidden * (3 * heads + 2 * kv_heads)
    return layers * (attention + 2 * 3 * hidden * intermediate * experts)


LLAMA_8B = launcher_flop(32, 4096, 32, 8, 14336)      # 15,032,385,536
LLAMA_70B = launcher_flop(80, 8192, 64, 8, 28672)     # 147,639,500,800
QWEN_7B = launcher_flop(28, 3584, 28, 4, 18944)       # 13,769,900,032


def test_the_launcher_counts_a_token_as_its_config_flop():
    assert LLAMA_8B == 15_032_385_536 and LLAMA_70B == 147_639_500_800
    _, t = traced({"gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "runtime": "tgi"})
    assert t["launcher_flop_per_token"] == LLAMA_8B
    _, t = traced({"gpu_key": "h100_80", "llm_key": "mixtral-8x7b-instruct", "runtime": "tgi", "quantization": "fp8"})
    assert t["launcher_flop_per_token"] == launcher_flop(32, 4096, 32, 8, 14336, experts=2)  # num_experts_per_tok 2


@pytest.mark.parametrize("gpu, n, model, expected", [
    # the GPU's f16 FLOPs in the launcher's table x the shards, over the model's, floored; at most its positions
    ("h100_80", 1, "llama-3.1-8b-instruct", 900e12 // LLAMA_8B),          # 59,870
    ("h200", 1, "llama-3.1-8b-instruct", 989e12 // LLAMA_8B),             # 65,791
    ("l4", 1, "llama-3.1-8b-instruct", 121e12 // LLAMA_8B),               # 8,049
    ("a100_80", 2, "llama-3.1-70b-instruct", 2 * 312e12 // LLAMA_70B),    # 4,226
    ("h100_80", 1, "qwen2.5-7b-instruct", 32768),                          # 65,359 capped at 32,768 positions
    # cards nvidia-smi names otherwise than the table ("nvidia-geforce-rtx-4090", "nvidia-h100-pcie") or that have no
    # nvidia-smi (AMD), and Blackwell, missing from it: the default 4,096
    ("rtx_4090", 1, "llama-3.1-8b-instruct", 4096),
    ("h100_pcie", 1, "llama-3.1-8b-instruct", 4096),
    ("b200", 1, "llama-3.1-8b-instruct", 4096),
    ("mi300x", 1, "llama-3.1-8b-instruct", 4096),
    # a multimodal config (vision_config) counts no FLOPs: the default
    ("h100_80", 1, "llama-3.2-11b-vision-instruct", 4096),
])
def test_the_prefill_budget_is_the_launchers_compute_optimum(gpu, n, model, expected):
    assert 900e12 // LLAMA_8B == 59_870 and 2 * 312e12 // LLAMA_70B == 4_226 and 900e12 // QWEN_7B == 65_359
    out, t = traced({"gpu_key": gpu, "llm_key": model, "runtime": "tgi", "num_gpus": n, "inference_parallelism": "tensor"})
    assert t["prefill_budget"] == expected
    assert f"prefill budget: {int(expected):,} tokens a step, as tgi's launcher derives it" in " ".join(out["assumptions"])
    # the budget is what a prompt is chunked into, and what the warm-up prefill reserves memory for
    assert t["prefill_chunks"] == max(math.ceil(1000 / expected), 1) and t["prefill_tokens"] == expected


def launcher_vram(layers: int, hidden: int, heads: int, kv_heads: int, intermediate: int, vocab: int,
                  experts: int = 1) -> tuple[int, int]:
    """Config::model_vram and Config::token_vram: 2 bytes of its own weight count (gate / up / down x num_local_experts,
    (heads + 2 KV heads) x head_dim for q / k / v - no hidden size there - and o, per layer; embeddings and head), and a
    token's keys and values plus (intermediate + intermediate / 2) x experts x 2 bytes x 3 of MoE intermediates."""
    head_dim = hidden // heads
    layer = 3 * intermediate * experts * hidden + (heads + 2 * kv_heads) * head_dim + heads * head_dim * hidden
    model = 2 * (layers * layer + 2 * hidden * vocab)
    token = kv_heads * 2 * head_dim * 2 * layers + (intermediate + intermediate // 2) * experts * 2 * 3
    return model, token


def test_the_launchers_memory_heuristic_caps_a_large_moe_budget():
    # Mixtral 8x22B's config: 56 layers, hidden 6144, 48 heads, 8 KV heads, intermediate 16384, vocabulary 32768, 8 local
    # experts, 2 a token; on four H100s of 80 GiB: 4 x 80 GiB x 0.95 (the launcher's TGI_WIGGLE_ROOM default) available
    model, token = launcher_vram(56, 6144, 48, 8, 16384, 32768, experts=8)
    assert (model, token) == (275_617_021_952, 1_409_024)
    cap = (int(4 * 80 * 2**30 * 0.95) - model) // token                       # 36,053
    optimum = int(4 * 900e12 // launcher_flop(56, 6144, 48, 8, 16384, experts=2))  # 44,042, within 65,536 positions
    assert (cap, optimum) == (36_053, 44_042)
    out, t = traced({"gpu_key": "h100_80", "llm_key": "mixtral-8x22b-instruct", "runtime": "tgi", "num_gpus": 4})
    assert t["prefill_vram_max_tokens"] == cap and t["prefill_budget"] == cap
    assert "its memory heuristic binds" in " ".join(out["assumptions"])
    # a budget stated at launch is not capped
    _, t = traced({"gpu_key": "h100_80", "llm_key": "mixtral-8x22b-instruct", "runtime": "tgi", "num_gpus": 4,
                   "runtime_settings": {"max_prefill_tokens": 44042}})
    assert t["prefill_budget"] == 44_042


@pytest.mark.parametrize("gpu, n, model, cap", [
    # Llama 3.1 8B on an H100: (80 GiB x 0.95 - 14,449,770,496) // 260,096 = 258,191, above the compute optimum 59,870
    ("h100_80", 1, "llama-3.1-8b-instruct", (int(80 * 2**30 * 0.95) - launcher_vram(32, 4096, 32, 8, 14336, 128256)[0])
     // launcher_vram(32, 4096, 32, 8, 14336, 128256)[1]),
    # a quantized checkpoint (gpt-oss's MXFP4 quantization_config): its counts return None, no cap
    ("h100_80", 1, "gpt-oss-120b", 0),
    # no nvidia-smi in the AMD image: no cap
    ("mi300x", 4, "mixtral-8x22b-instruct", 0),
    # a multimodal wrapper states its text sizes in text_config: no count, no cap (Gemma 3 keeps its logged 8,000)
    ("h100_80", 1, "gemma-3-27b-it", 0),
])
def test_the_heuristic_leaves_most_budgets_alone(gpu, n, model, cap):
    _, t = traced({"gpu_key": gpu, "llm_key": model, "runtime": "tgi", "num_gpus": n})
    assert t["prefill_vram_max_tokens"] == cap
    assert cap == 0 or cap > t["prefill_budget"]


def test_the_launchers_multimodal_defaults_key_on_the_configs_own_model_type():
    # launcher main.rs default_optimal: 8,000 for "gemma3" (a multimodal config wrapping gemma3_text), as a TGI log of
    # gemma-3-27b-it on 2 x RTX A6000 prints ("Unkown compute for card nvidia-rtx-a6000", "Default
    # `max_batch_prefill_tokens` to 8000"); the text-only gemma3_text (Gemma 3 1B) has no vision_config, so its FLOPs
    # count: 26 layers, hidden 1152, 4 heads and 1 KV head of 256, intermediate 6912 on one H100
    _, t = traced({"gpu_key": "rtx_a6000", "llm_key": "gemma-3-27b-it", "runtime": "tgi", "num_gpus": 2,
                   "inference_parallelism": "tensor"})
    assert t["prefill_budget"] == 8000
    flop = 26 * (2 * 256 * 1152 * (3 * 4 + 2 * 1) + 2 * 3 * 1152 * 6912)
    _, t = traced({"gpu_key": "h100_80", "llm_key": "gemma-3-1b-it", "runtime": "tgi"})
    assert t["launcher_flop_per_token"] == flop and t["prefill_budget"] == min(900e12 // flop, 32768)


def test_a_budget_the_deployment_sets_is_the_budget():
    _, t = traced({"gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "runtime": "tgi",
                   "runtime_settings": {"max_prefill_tokens": 8192}})
    assert t["prefill_budget"] == 8192 and t["rt_prefill_budget_derived"] == 0
    # other runtimes' budgets are fixed: vLLM's 8,192 on an H100 whatever the model
    _, t = traced({"gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "runtime": "vllm"})
    assert t["prefill_budget"] == 8192


def test_tgi3_starts_whatever_its_cache_holds_and_takes_long_prompts():
    # Llama 3.1 8B on a 24 GB card: vLLM refuses to start for the model's 131,072-token context; TGI 3 sizes
    # max_total_tokens to its cache; TGI 2.x refuses a 20,000-token prompt past its 4,095 default.
    body = {"gpu_key": "rtx_4090", "llm_key": "llama-3.1-8b-instruct", "input_tokens": 20000, "output_tokens": 200}
    tgi = vramplan.estimate_inference({**body, "runtime": "tgi"})
    assert not [w for w in tgi["warnings"] if "refuses" in w]
    assert any("vllm refuses to start" in w for w in vramplan.estimate_inference({**body, "runtime": "vllm"})["warnings"])
    assert any("tgi-v2 refuses this request as launched" in w
               for w in vramplan.estimate_inference({**body, "runtime": "tgi-v2"})["warnings"])


def test_the_cache_is_90_percent_of_the_gpu_less_everything_held():
    # get_cuda_free_memory: free (cudaMemGetInfo) - (1 - 0.90) x total = 0.90 x total - what the weights, the warm-up
    # prefill, non-torch memory, the CUDA context and the library workspaces hold
    out, t = traced({"gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "runtime": "tgi", "concurrent_users": 8})
    held = (t["weights_loaded_bytes"] + t["activations_gpu_bytes"] + t["logits_extra_bytes"] + t["non_torch_bytes"]
            + (t["rt_cuda_context_mib"] + t["rt_library_workspace_mib"]) * 2**20)
    assert t["rt_gpu_memory_utilization"] == 0.9
    assert t["kv_pool_bytes"] == pytest.approx(0.9 * t["gpu_mem_gib"] * GIB - held, rel=1e-12)
    # 2.x took 0.95 of what was free after the warm-up instead
    _, v2 = traced({"gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "runtime": "tgi-v2", "concurrent_users": 8})
    assert v2["kv_pool_bytes"] == pytest.approx(0.95 * (v2["gpu_mem_gib"] * GIB - v2["weights_gpu_bytes"]
                                                        - v2["activations_gpu_bytes"] - v2["logits_extra_bytes"]
                                                        - v2["fixed_overhead_bytes"]), rel=1e-12)


def test_prompt_chunks_ride_with_the_decodes_and_share_the_budget():
    # 200 clients of 1000 + 200 tokens on an H100: the step that carries prompts holds at most the budget, decodes
    # included, and every loop of the router follows it with a decode forward, so n sequences need n x 2 x 1000 / 200
    # prompt tokens beside their n decodes in one step of two: n <= 59,870 x 200 / (2 x 1000 + 200) = 5,442.7
    # (srv_budget_limit); the router's 128 bind first
    _, t = traced({"gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "runtime": "tgi", "concurrent_users": 200})
    assert t["rt_prefill_mixes_decode"] == 1 and t["rt_decode_forward_after_prefill"] == 1
    assert t["srv_budget_limit"] == pytest.approx(59_870 * 200 / (2 * 1000 + 200))
    assert t["srv_max_running"] == 128
    # 2.x paused the running batch for a prefill: no budget shared with the decodes
    _, v2 = traced({"gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "runtime": "tgi-v2", "concurrent_users": 200})
    assert v2["rt_prefill_mixes_decode"] == 0 and v2["srv_budget_limit"] == 1e15


def test_a_bursts_ramp_loop_is_its_prompt_step_and_a_decode_forward():
    # 200 prompts of 1,000 tokens sent at once on a B200 (a card the launcher does not know: 4,096 tokens a step): the
    # router's 128 run (the budget would keep 4,096 x 200 / 2,200 = 372); a loop admits (4,096 - 128 / 2) / 1,000 =
    # 4.03 prompts beside the decodes, and each loop is that step and a decode forward
    out, t = traced({"gpu_key": "b200", "llm_key": "llama-3.1-8b-instruct", "runtime": "tgi", "input_tokens": 1000,
                     "output_tokens": 200, "batch_size": 200})
    assert t["srv_burst"] == 1 and t["srv_burst_cap"] == 128
    assert t["srv_burst_admit_per_round"] == pytest.approx((4096 - 0.5 * 128) / 1000)
    step = max(t["srv_round_op_s"] + (1 - t["srv_mixed_share_op"]) * t["decode_cuda_graphs"] * t["srv_eager_mix_s"],
               t["srv_burst_admit_per_round"] * t["srv_ramp_prompt_s"] + t["decode_cuda_graphs"] * t["srv_eager_mix_s"])
    assert t["srv_burst_ramp_round_s"] == pytest.approx(step + t["srv_round_op_s"], rel=1e-12)


@pytest.mark.parametrize("gpu, chunking, block", [
    ("h100_80", 1, 1),      # flashinfer: BLOCK_SIZE 1, PREFILL_CHUNKING 1
    ("mi300x", 0, 16),      # Dockerfile_amd: ATTENTION=paged (16-token blocks), PREFILL_CHUNKING=0
    ("radeon_pro_w7900", 0, 16),  # the same image on any AMD GPU (a tier on the vendor)
    ("arc_b580", 1, 64),    # Dockerfile_intel: flashdecoding-ipex, 64-token blocks
])
def test_the_images_attention_sets_chunking_and_blocks(gpu, chunking, block):
    _, t = traced({"gpu_key": gpu, "llm_key": "llama-3.2-1b-instruct", "runtime": "tgi"})
    assert t["rt_prefill_mixes_decode"] == chunking and t["rt_kv_block_tokens"] == block


def test_tgi3_is_searched_by_default_and_tgi2_only_when_named():
    deploy = {e.key: e.data["deployment"] for e in CAT.runtimes}
    assert deploy["tgi"].get("searched_by_default", True) is True
    assert deploy["tgi-v2"]["searched_by_default"] is False
    listed = {r["key"]: r for r in vramplan.list_runtimes()}
    assert listed["tgi"]["extends"] == "tgi-v2" and listed["tgi-v2"]["extends"] == "vllm"
