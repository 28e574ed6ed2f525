"""Hostile requests get a clean, fast answer naming the field (issue 12, items 1-4), and the apxml
compatibility rules: unknown fields warned (or refused when strict), ``null`` = absent, a missing
field named by itself, ignored inputs said so.
"""

from __future__ import annotations

import math
import time

import pytest

import vramplan
from vramplan.configkeys import MAX_CONTEXT, MAX_EXPERTS, MAX_FFN, MAX_HEAD_DIM, MAX_HEADS, MAX_LAYERS, MAX_VOCAB, MAX_WIDTH
from vramplan.catalog import get_catalog
from vramplan.errors import FormulaError, RequestError

get_catalog()  # loaded once here, so the timings below time the request

LLAMA_8B = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256, "max_position_embeddings": 8192}
MIXTRAL = {**LLAMA_8B, "model_type": "mixtral", "num_local_experts": 8, "num_experts_per_tok": 2}


def custom(**config):
    return {"gpu_key": "h100_80", "llm_key": "custom", "custom_model": {**LLAMA_8B, **config}}


def refused(body, workload="inference", **kw) -> RequestError:
    fn = vramplan.estimate_inference if workload == "inference" else vramplan.estimate_finetuning
    with pytest.raises(RequestError) as err:
        fn(body, **kw)
    return err.value


# -- 1. architecture bounds: no real model comes near them, and nothing big is built --------------

@pytest.mark.parametrize("layers", [30_000_000, 100_000_000, MAX_LAYERS + 1])
def test_a_layer_count_no_model_has_is_refused_at_once(layers):
    t0 = time.perf_counter()
    err = refused(custom(num_hidden_layers=layers))
    assert time.perf_counter() - t0 < 0.5  # was 7.5 s and 300 MiB (a tuple of 30 million layer types)
    assert err.problems == [("custom_model.num_hidden_layers",
                             f"{layers} is above 4,096, a limit no real model comes near (largest real: 126 (Llama 3.1 405B))")]


def test_the_largest_allowed_model_is_estimated_finitely():
    """Every key at its ceiling: the response is finite (and does not fit anything)."""
    big = {"model_type": "mixtral", "hidden_size": MAX_WIDTH, "num_hidden_layers": MAX_LAYERS,
           "num_attention_heads": MAX_HEADS, "num_key_value_heads": MAX_HEADS, "head_dim": MAX_HEAD_DIM,
           "intermediate_size": MAX_FFN, "vocab_size": MAX_VOCAB, "num_local_experts": MAX_EXPERTS,
           "num_experts_per_tok": MAX_EXPERTS, "max_position_embeddings": MAX_CONTEXT}
    out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "custom", "custom_model": big,
                                       "seq_length": 16777216, "batch_size": 1048576, "concurrent_users": 1048576})
    assert out["memory_status"] == "insufficient"
    # weights alone: 4096 layers x 65536 experts x 3 x 2^22 x 2^20 x 2 bytes > 10^21 GiB
    assert out["vram_usage"] > 1e21 and math.isfinite(out["vram_usage"])


# -- 2. wrong types: a 422 naming the key path, never a 500 ----------------------------------------

@pytest.mark.parametrize("config, where", [
    ({"num_local_experts": "x"}, "num_local_experts"),
    ({**MIXTRAL, "n_shared_experts": "abc"}, "n_shared_experts"),
    ({**MIXTRAL, "moe_layers": ["a"]}, "moe_layers"),
    ({**MIXTRAL, "first_k_dense_replace": "x"}, "first_k_dense_replace"),
    ({"kv_lora_rank": "x"}, "kv_lora_rank"),
    ({"sliding_window": 4096, "sliding_window_pattern": "x"}, "sliding_window_pattern"),
    ({"model_type": "mistral", "sliding_window": "x"}, "sliding_window"),
    ({"vision_config": {"image_size": "x", "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27}},
     "vision_config.image_size"),
    ({"max_position_embeddings": "x"}, "max_position_embeddings"),
    ({"tie_word_embeddings": "no"}, "tie_word_embeddings"),
    ({"layer_types": "full"}, "layer_types"),
    ({"text_config": []}, "text_config"),
])
def test_every_key_the_engine_reads_is_type_checked(config, where):
    err = refused(custom(**config))
    assert [w for w, _ in err.problems] == [f"custom_model.{where}"]


def test_keys_inside_text_config_are_named_by_their_path():
    err = refused({"gpu_key": "h100_80", "llm_key": "custom",
                   "custom_model": {"model_type": "gemma3", "text_config": {**LLAMA_8B, "head_dim": "wide"}}})
    assert err.problems[0][0] == "custom_model.text_config.head_dim"


# -- 3. huge numbers: a range for every field, a 422 naming it -------------------------------------

@pytest.mark.parametrize("body, field", [
    ({"runtime": "vllm", "runtime_settings": {"gpu_memory_utilization": 1e308}}, "runtime_settings.gpu_memory_utilization"),
    ({"runtime": "vllm", "runtime_settings": {"max_num_seqs": 10**400}}, "runtime_settings.max_num_seqs"),
    ({"custom_weights_bytes": 1e308}, "custom_weights_bytes"),
    ({"custom_weights_bytes": 10**400}, "custom_weights_bytes"),
])
def test_huge_request_numbers_are_the_requests_422(body, field):
    err = refused({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", **body})
    assert [w for w, _ in err.problems] == [field]
    assert len(err.message) < 300  # "an integer of 401 digits", not the digits


@pytest.mark.parametrize("config, field", [
    ({"hidden_size": 10**300}, "custom_model.hidden_size"),
    ({"vocab_size": 10**400}, "custom_model.vocab_size"),
    # a key that takes any finite number: an int too large for a float is out of range, not an OverflowError (a 500)
    ({"attn_logit_softcapping": 10**400}, "custom_model.attn_logit_softcapping"),
    ({"vision_config": {"hidden_size": 10**200, "intermediate_size": 4304, "num_hidden_layers": 27}},
     "custom_model.vision_config.hidden_size"),
])
def test_huge_architecture_numbers_are_the_requests_422(config, field):
    assert [w for w, _ in refused(custom(**config)).problems] == [field]


@pytest.mark.parametrize("setting, value, message", [
    ("gpu_memory_utilization", 2.5, "2.5 is out of range for a constant in fraction: 0 to 2"),
    ("kv_preallocate", 0.5, "is a flag: 0 or 1, got 0.5"),
    ("max_num_seqs", 2_000_000, "2000000 is out of range for a constant in sequences: 0 to 1.04858e+06"),
    ("max_num_seqs", 0.5, "counts sequences: a whole number, got 0.5"),   # half a sequence admitted: none ran
    ("max_prefill_tokens", 2048.25, "counts tokens: a whole number, got 2048.25"),
])
def test_runtime_settings_have_the_range_of_their_unit(setting, value, message):
    err = refused({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "runtime": "vllm",
                   "runtime_settings": {setting: value}})
    assert err.problems == [(f"runtime_settings.{setting}", message)]


@pytest.mark.parametrize("runtime, setting, value, message", [
    # vLLM's own CacheConfig refuses a share of the memory past 1 or of nothing (Field(gt=0, le=1))
    ("vllm", "gpu_memory_utilization", 1.5, "1.5 is not accepted by vllm: above 0, at most 1 (vllm/config/cache.py"),
    ("vllm", "gpu_memory_utilization", 0, "0 is not accepted by vllm: above 0, at most 1"),
    # inherited by a profile that extends vllm without redefining the constant
    ("vllm-v0", "gpu_memory_utilization", 1.01, "1.01 is not accepted by vllm-v0: above 0, at most 1"),
    ("sglang", "gpu_memory_utilization", 1.2, "1.2 is not accepted by sglang: above 0, at most 1 (a share of the GPU's memory"),
    ("tensorrt-llm", "gpu_memory_utilization", 1.2, "1.2 is not accepted by tensorrt-llm: at least 0, at most 1"),
    ("vllm", "kv_block_tokens", 0, "0 is not accepted by vllm: at least 1 (a block holds at least one token"),
    ("llama.cpp", "kv_block_tokens", 0, "0 is not accepted by llama.cpp: at least 1"),
    # declared for every runtime (catalogs/runtime_constants): what the quantity can mean, or the runtimes' own check
    ("vllm", "decode_bw_eff", 0, "0 is not accepted by vllm: above 0, at most 1 (a share of the GPU's datasheet memory"),
    ("transformers", "decode_bw_eff", 1.2, "1.2 is not accepted by transformers: above 0, at most 1"),
    ("vllm", "decode_bw_eff_amd", 1.1, "1.1 is not accepted by vllm: above 0, at most 1"),  # a per-class variant too
    ("transformers", "train_mfu", 1.5, "1.5 is not accepted by transformers: above 0, at most 1 (model FLOPs utilization"),
    ("vllm-v0", "scheduler_steps", 0, "0 is not accepted by vllm-v0: at least 1 (vLLM V0 vllm/config.py SchedulerConfig"),
    ("vllm", "attention_eff_ratio", 0, "0 is not accepted by vllm: above 0 (attention's FLOP rate"),
    ("llama.cpp", "cpu_memory_bw_gb_s", 0, "0 is not accepted by llama.cpp: above 0 (a bandwidth"),
    ("sglang", "kv_swa_full_tokens_ratio", 1.5, "1.5 is not accepted by sglang: at least 0, at most 1 (SGLang server_args.py"),
    # 0 is the estimate's "no limit" (transformers, SGLang's pool-sized batch), not a value these runtimes take
    ("vllm", "max_num_seqs", 0, "0 is not accepted by vllm: at least 1 (vllm/config/scheduler.py SchedulerConfig max_num_seqs"),
    ("vllm", "max_prefill_tokens", 0, "0 is not accepted by vllm: at least 1 (vllm/config/scheduler.py SchedulerConfig max_num_batched"),
    ("vllm-v0", "max_num_seqs", 0, "0 is not accepted by vllm-v0: at least 1"),
    ("tensorrt-llm", "max_num_seqs", 0, "0 is not accepted by tensorrt-llm: at least 1 (max_batch_size"),
    ("tensorrt-llm", "max_prefill_tokens", 0, "0 is not accepted by tensorrt-llm: at least 1 (max_num_tokens"),
    ("tgi", "max_num_seqs", 0, "0 is not accepted by tgi: at least 1 (text-generation-launcher --max-concurrent-requests"),
    ("tgi", "max_prefill_tokens", 0, "0 is not accepted by tgi: at least 1 (text-generation-launcher main.rs"),
])
def test_runtime_settings_outside_what_the_runtime_accepts(runtime, setting, value, message):
    """Inside its unit's range (a fraction up to 2, tokens from 0) but outside what the runtime itself takes:
    refused with the runtime's bound and where it comes from (the constant's `accepts`)."""
    err = refused({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "runtime": runtime,
                   "runtime_settings": {setting: value}})
    [(where, what)] = err.problems
    assert where == f"runtime_settings.{setting}" and what.startswith(message)


def test_runtime_settings_at_the_edge_of_what_the_runtime_accepts():
    body = {"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "seq_length": 4096}
    # vLLM at the whole card: the pool is 1.0 x the card less the weights and activations, more than at 0.9
    full = vramplan.estimate_inference({**body, "runtime": "vllm", "runtime_settings": {"gpu_memory_utilization": 1}})
    usual = vramplan.estimate_inference({**body, "runtime": "vllm"})
    assert full["vram_usage"] > usual["vram_usage"]
    # TensorRT-LLM's validator takes 0 (a pool of nothing): estimated, and nothing can run
    none = vramplan.estimate_inference({**body, "runtime": "tensorrt-llm", "concurrent_users": 4,
                                        "runtime_settings": {"gpu_memory_utilization": 0}})
    assert none["serving"]["running_sequences"] == 0 and none["serving"]["ttft_ms"] is None
    # a block of one token is a block
    vramplan.estimate_inference({**body, "runtime": "vllm", "runtime_settings": {"kv_block_tokens": 1}})
    # SGLang's 0 is its own default (a batch the request-to-token pool sizes), and transformers' the workload's sequences
    vramplan.estimate_inference({**body, "runtime": "sglang", "runtime_settings": {"max_num_seqs": 0}})
    vramplan.estimate_inference({**body, "runtime": "transformers", "runtime_settings": {"max_num_seqs": 0}})
    # the whole bandwidth, and two scheduler steps; half a step is not a step
    vramplan.estimate_inference({**body, "runtime": "vllm-v0", "runtime_settings": {"decode_bw_eff": 1, "scheduler_steps": 2}})
    err = refused({**body, "runtime": "vllm-v0", "runtime_settings": {"scheduler_steps": 1.5}})
    assert err.problems == [("runtime_settings.scheduler_steps", "counts steps: a whole number, got 1.5")]


def test_a_formula_failing_on_the_requests_numbers_is_the_requests_422():
    """decode_bw_eff 5e-324 (the smallest double: above 0, inside what it accepts) makes the weights' read time
    overflow: the engine names the setting, not its own data."""
    err = refused({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "runtime": "vllm",
                   "runtime_settings": {"decode_bw_eff": 5e-324}})
    assert [w for w, _ in err.problems] == ["runtime_settings.decode_bw_eff"]
    assert "too large" in err.message and "formula" in err.message


def test_non_finite_numbers_from_python_callers_are_refused():
    err = refused({"gpu_key": "custom_discrete", "llm_key": "custom", "custom_vram": float("nan"),
                   "custom_model": {**LLAMA_8B, "rope_theta": float("inf")}})
    assert ("custom_vram", "must be a finite number, got nan") in err.problems
    assert ("custom_model.rope_theta", "must be a finite number, got inf") in err.problems


def test_a_formula_broken_by_the_servers_own_data_stays_a_formula_error(monkeypatch):
    """Blame falls on the request only if the request without its numbers evaluates."""
    from vramplan.catalog import get_catalog

    formulas = get_catalog().formulas
    f = formulas.formulas["kv_bytes_per_token_layer"]
    monkeypatch.setitem(formulas.formulas, "kv_bytes_per_token_layer",
                        type(f)(**{**f.__dict__, "fn": lambda v: 1 / 0}))
    formulas._plans.clear()
    try:
        with pytest.raises(FormulaError, match="kv_bytes_per_token_layer"):
            vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "batch_size": 4})
    finally:
        formulas._plans.clear()


# -- 4. no negative figures ------------------------------------------------------------------------

def test_negative_expert_counts_are_refused_not_answered():
    # was a 200 with estimated_throughput_tps -37.1 and ms_per_token -26.97
    err = refused(custom(**{**MIXTRAL, "num_local_experts": -8}))
    assert err.problems == [("custom_model.num_local_experts", "must be at least 0, got -8")]


def test_more_experts_per_token_than_experts_is_refused():
    err = refused(custom(**{**MIXTRAL, "num_experts_per_tok": 9}))
    assert err.problems == [("custom_model.num_experts_per_tok", "9 is more than the 8 experts")]


def test_a_negative_figure_from_the_formulas_is_never_answered(monkeypatch):
    from vramplan.catalog import get_catalog

    formulas = get_catalog().formulas
    f = formulas.formulas["ms_per_token"]
    monkeypatch.setitem(formulas.formulas, "ms_per_token", type(f)(**{**f.__dict__, "fn": lambda v: -26.97}))
    formulas._plans.clear()
    try:
        with pytest.raises(FormulaError, match="ms_per_token.*negative"):
            vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct"})
    finally:
        formulas._plans.clear()


# -- compatibility with apxml clients ----------------------------------------------------------------

SEED = {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m"}


def test_unknown_fields_are_ignored_with_a_warning_naming_the_closest_field():
    out = vramplan.estimate_inference({**SEED, "enable_speculative_decoding": True, "batchsize": 4,
                                       "optimization_config": {"flash_attn": False}})
    plain = vramplan.estimate_inference(SEED)
    assert out["vram_usage"] == plain["vram_usage"]  # ignored: batch stays 1, flash attention on
    assert "ignored unknown field enable_speculative_decoding" in out["warnings"]
    assert "ignored unknown field batchsize (closest known field: batch_size)" in out["warnings"]
    assert ("ignored unknown field optimization_config.flash_attn "
            "(closest known field: optimization_config.flash_attention)") in out["warnings"]


def test_strict_refuses_unknown_fields_with_the_closest_valid_ones():
    err = refused({**SEED, "batchsize": 4, "optimization_config": {"flash_attn": False}}, strict=True)
    assert err.problems == [("batchsize", "unknown field"), ("optimization_config.flash_attn", "unknown field")]
    assert err.suggestions["batchsize"] == ["batch_size"]
    assert err.suggestions["optimization_config.flash_attn"] == ["flash_attention"]


@pytest.mark.parametrize("field", ["num_offload_layers", "percentage_offload", "custom_vram", "runtime",
                                   "interconnect_type", "custom_weights_bytes", "runtime_settings"])
def test_null_means_absent(field):
    assert vramplan.estimate_inference({**SEED, field: None}) == vramplan.estimate_inference(SEED)


def test_null_inside_objects_means_absent_too():
    out = vramplan.estimate_inference({**SEED, "optimization_config": {"flash_attention": None}})
    assert out == vramplan.estimate_inference(SEED)
    ft = vramplan.estimate_finetuning({**SEED, "optimization_config": {"zero_stage": None}, "lora_rank": None})
    assert ft == vramplan.estimate_finetuning(SEED)


def test_a_missing_required_field_is_named_by_its_own_name():
    assert refused({"llm_key": "llama-3-8b-instruct"}).problems == [("gpu_key", "is required")]
    assert refused({"gpu_key": None, "llm_key": "llama-3-8b-instruct"}).problems == [("gpu_key", "is required")]


def test_a_link_and_a_prefix_cache_that_matter_say_nothing():
    """The two warnings above only where the input changes nothing: a link between two GPUs carries their all-reduces,
    a cache with a shared prefix reuses it - and the estimate differs from the one without them."""
    two = {**SEED, "quantization": "fp16", "num_gpus": 2, "inference_parallelism": "tensor", "runtime": "vllm"}
    pcie, nvlink = (vramplan.estimate_inference({**two, "interconnect_type": link}) for link in ("pcie4", "nvlink_gen4"))
    assert not any("interconnect_type" in w for w in pcie["warnings"] + nvlink["warnings"])
    assert pcie["ms_per_token"] > nvlink["ms_per_token"]
    body = {**SEED, "concurrent_users": 8, "input_tokens": 2000, "output_tokens": 200}
    cached = vramplan.estimate_inference({**body, "enable_prefix_caching": True, "shared_prefix_ratio": 0.5})
    assert not any("prefix" in w for w in cached["warnings"]) and not any(w for w in pcie["warnings"] if "link" in w)
    assert cached["vram_usage"] < vramplan.estimate_inference(body)["vram_usage"]  # the prefix's KV stored once


def test_zero_stage_on_one_gpu_is_said_to_save_nothing():
    out = vramplan.estimate_finetuning({**SEED, "optimization_config": {"zero_stage": 2}})
    assert "zero_stage_2" not in out["active_optimizations"]
    assert any(w.startswith("zero_stage 2 is ignored on one GPU") for w in out["warnings"])
    assert out["vram_usage"] == vramplan.estimate_finetuning(SEED)["vram_usage"]
    two = vramplan.estimate_finetuning({**SEED, "num_gpus": 2, "optimization_config": {"zero_stage": 2}})
    assert "zero_stage_2" in two["active_optimizations"]
    assert not any("zero_stage" in w for w in two["warnings"])


@pytest.mark.parametrize("workload, body, warning", [
    ("inference", {"shared_prefix_ratio": 0.5}, "shared_prefix_ratio 0.5 is ignored because enable_prefix_caching is false"),
    ("inference", {"offload_target": "nvme"}, "offload_target nvme is ignored because enable_offloading is false"),
    ("finetuning", {"offload_target": "nvme"}, "offload_target nvme is ignored because enable_offloading is false"),
    ("inference", {"runtime": "vllm", "quantization": "fp16", "optimization_config": {"flash_attention": False}},
     "flash_attention false is ignored: vllm always runs a fused attention kernel"),
    ("finetuning", {"finetuning_method": "lora", "fine_tuning_quantization": "fp32"},
     "fine_tuning_quantization fp32 is ignored for lora"),
    ("finetuning", {"finetuning_method": "full", "lora_rank": 64}, "lora_rank 64 is ignored for full fine-tuning"),
    ("finetuning", {"seq_length": 1024, "tokens_per_sample": 4096}, "tokens_per_sample 4096 is larger than seq_length 1024"),
    ("inference", {"interconnect_type": "pcie4"}, "interconnect_type pcie4 is ignored on one GPU"),
    ("finetuning", {"interconnect_type": "nvlink_gen4"}, "interconnect_type nvlink_gen4 is ignored on one GPU"),
    ("inference", {"enable_prefix_caching": True}, "enable_prefix_caching changes nothing with shared_prefix_ratio 0"),
])
def test_silently_ignored_inputs_say_so(workload, body, warning):
    fn = vramplan.estimate_inference if workload == "inference" else vramplan.estimate_finetuning
    out = fn({**SEED, **body})
    assert any(w.startswith(warning) for w in out["warnings"]), out["warnings"]
    assert not any("is ignored" in w or "is larger than" in w for w in fn(SEED)["warnings"])


def test_offload_target_nvme_slows_zero_offload_fine_tuning():
    """ZeRO-Offload reads and writes the optimizer states each step over the offload path: host RAM
    over the RTX 4090's PCIe 4.0 x16 (31.5 GB/s, catalog) or an NVMe drive (7 GB/s, the runtime's
    nvme_read_gb_s), as inference offloading already was."""
    body = {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "finetuning_method": "full",
            "enable_offloading": True, "trace": True}
    ram = vramplan.estimate_finetuning({**body, "offload_target": "cpu_ram"})
    nvme = vramplan.estimate_finetuning({**body, "offload_target": "nvme"})
    step = {o["training_tps"]: {s["id"]: s["value"] for s in o["trace"]} for o in (ram, nvme)}
    t_ram, t_nvme = step[ram["training_tps"]], step[nvme["training_tps"]]
    states = t_ram["optimizer_offloaded_bytes"]
    assert states > 0
    assert t_nvme["host_traffic_s"] - t_ram["host_traffic_s"] == pytest.approx(2 * states / 7e9 - 2 * states / 31.5e9)
    assert nvme["training_tps"] < ram["training_tps"]
    assert nvme["vram_usage"] == ram["vram_usage"]


def test_memory_status_follows_the_unrounded_share():
    body = {"gpu_key": "custom_discrete", "llm_key": "llama-3-8b-instruct", "runtime": "transformers"}
    vram = vramplan.estimate_inference({**body, "custom_vram": 100})["vram_usage"]
    capacity = vram / 0.5003  # vram is 50.03 % of it
    out = vramplan.estimate_inference({**body, "custom_vram": capacity})
    assert out["vram_usage"] == vram
    assert out["actual_vram_percentage"] == 50.0  # shown rounded to 0.1
    assert out["memory_status"] == "moderate"  # 50.03 % is over the 50 % threshold
