"""The seed's examples answer with every seed field, in the seed's names and types."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

import vramplan
from vramplan.errors import RequestError

SEED_INFERENCE = {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m",
                  "batch_size": 1, "seq_length": 2048}
SEED_FINETUNING = {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "finetuning_method": "lora",
                   "lora_rank": 16, "batch_size": 4, "seq_length": 2048}

INFERENCE_FIELDS = {"vram_usage": float, "vram_percentage": float, "actual_vram_percentage": float, "memory_status": str,
                    "static_shared_memory": float, "per_user_memory": float, "estimated_latency_tps": float,
                    "estimated_throughput_tps": float, "per_user_tps": float, "ms_per_token": float, "tftt": (int, float),
                    "estimated_system_ram_required": float, "offloaded_memory": float, "estimated_power_draw": (int, float),
                    "memory_details": dict, "memory_breakdown": list}
FINETUNING_FIELDS = {"vram_usage": float, "vram_percentage": float, "actual_vram_percentage": float, "memory_status": str,
                     "static_shared_memory": float, "training_tps": float, "samples_per_second": float,
                     "steps_per_second": float, "total_tokens": float, "total_training_time_hours": float,
                     "estimated_system_ram_required": float, "offloaded_memory": float, "estimated_power_draw": (int, float),
                     "active_optimizations": list, "optimization_preset": str, "memory_details": dict, "memory_breakdown": list}
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def _schema(name):
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


@pytest.mark.parametrize("fn,body,fields,schema", [
    (vramplan.estimate_inference, SEED_INFERENCE, INFERENCE_FIELDS, "inference-response"),
    (vramplan.estimate_finetuning, SEED_FINETUNING, FINETUNING_FIELDS, "finetuning-response"),
])
def test_seed_example_has_every_seed_field(fn, body, fields, schema):
    out = fn(dict(body))
    for name, typ in fields.items():
        assert isinstance(out[name], typ), name
    jsonschema.validate(out, _schema(schema))
    # memory_details sums to vram_usage; memory_breakdown gives each component's share.
    assert round(sum(out["memory_details"].values()), 2) == out["vram_usage"]
    for item in out["memory_breakdown"]:
        assert item["size_gb"] == out["memory_details"][item["label"]]
        assert item["value"] == round(item["size_gb"] / out["vram_usage"] * 100, 1)
    assert out["vram_percentage"] == round(min(out["vram_usage"] / 24 * 100, 100), 1)  # RTX 4090: 24 GiB


def test_inference_consistency_of_speed_fields():
    out = vramplan.estimate_inference({**SEED_INFERENCE, "batch_size": 2, "concurrent_users": 3,
                                       "enable_continuous_batching": True})
    # One decode round advances every sequence one token: latency tps = 1000 / ms_per_token; a user's two
    # sequences stream at twice that; throughput is the 6 sequences' tokens over a request's whole time
    # (Little's law: 6 in flight, each taking TTFT + (output - 1) x ITL), and the seed fields equal the
    # serving object's.
    srv = out["serving"]
    assert out["estimated_latency_tps"] == pytest.approx(1000 / out["ms_per_token"], rel=2e-3)
    assert out["per_user_tps"] == pytest.approx(2 * out["estimated_latency_tps"], rel=2e-3)
    assert (out["ms_per_token"], out["estimated_throughput_tps"]) == (srv["itl_ms"], srv["output_throughput_tps"])
    # tftt is the same figure to 0.1 ms, ttft_ms to 0.01 ms: each the value rounded once (517.7499 gives 517.7 and
    # 517.75), so they agree within half of tftt's last digit, not as a rounding of the other
    assert abs(out["tftt"] - srv["ttft_ms"]) <= 0.05 + 1e-9
    e2e_s = (srv["ttft_ms"] + (srv["output_tokens"] - 1) * srv["itl_ms"]) / 1000
    assert srv["e2e_latency_ms"] == pytest.approx(e2e_s * 1000, rel=1e-3)   # ITL is shown to 0.01 ms
    assert out["estimated_throughput_tps"] == pytest.approx(6 * srv["output_tokens"] / e2e_s, rel=2e-3)
    assert out["static_shared_memory"] + 3 * out["per_user_memory"] == pytest.approx(out["vram_usage"], abs=0.02)


@pytest.mark.parametrize("percent,status", [(10, "okay"), (50, "okay"), (50.1, "moderate"), (75, "moderate"),
                                            (80, "high"), (90, "high"), (95, "very_high"), (100, "very_high"),
                                            (100.5, "insufficient")])
def test_memory_status_thresholds(percent, status):
    from vramplan.estimate import memory_status

    assert memory_status(percent) == status


def test_memory_status_follows_the_percentage():
    for seq in (2048, 32768, 131072):
        out = vramplan.estimate_inference({**SEED_INFERENCE, "llm_key": "llama-3.1-70b-instruct", "seq_length": seq})
        from vramplan.estimate import memory_status

        assert out["memory_status"] == memory_status(out["actual_vram_percentage"])


def test_lists_carry_the_contract_fields():
    gpus = {g["key"]: g for g in vramplan.list_gpus()}
    for key in ("rtx_4090", "h100_80"):
        for f in ("key", "label", "memory", "vendor", "memory_bandwidth_gb_s", "bf16_tflops", "tdp_w"):
            assert f in gpus[key], (key, f)
    assert gpus["rtx_4090"]["memory"] == 24 and gpus["h100_80"]["memory"] == 80
    models = {m["key"]: m for m in vramplan.list_models()}
    for key in ("llama-3-8b-instruct", "llama-3.1-70b-instruct"):
        for f in ("key", "name", "params_b", "active_params_b", "family", "context_length"):
            assert f in models[key], (key, f)
    jsonschema.validate(list(gpus.values()), _schema("gpu-list"))
    jsonschema.validate(list(models.values()), _schema("llm-list"))


def test_every_catalog_gpu_and_model_estimates():
    """No catalog entry breaks the engine (one small request each)."""
    for g in vramplan.list_gpus():
        body = {"gpu_key": g["key"], "llm_key": "llama-3.2-1b-instruct"}
        if g.get("custom"):
            body["custom_vram"] = 16
        assert vramplan.estimate_inference(body)["vram_usage"] > 0
    for m in vramplan.list_models():
        assert vramplan.estimate_inference({"gpu_key": "h200", "llm_key": m["key"], "seq_length": 1024})["vram_usage"] > 0
        assert vramplan.estimate_finetuning({"gpu_key": "h200", "llm_key": m["key"], "seq_length": 512})["vram_usage"] > 0


# -- bad input ------------------------------------------------------------------------------------

def test_unknown_keys_list_the_closest():
    with pytest.raises(RequestError) as err:
        vramplan.estimate_inference({"gpu_key": "rtx4090", "llm_key": "llama3-8b-instruct", "quantization": "q4km"})
    e = err.value
    assert "rtx_4090" in e.suggestions["gpu_key"]
    assert "llama-3-8b-instruct" in e.suggestions["llm_key"]
    assert e.suggestions["quantization"][0] == "q4_k_m"
    assert {w for w, _ in e.problems} == {"gpu_key", "llm_key", "quantization"}


def test_every_bad_field_is_named_at_once():
    with pytest.raises(RequestError) as err:
        vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "batch_size": 0,
                                     "seq_length": "long", "shared_prefix_ratio": 1.5, "colour": "red"}, strict=True)
    fields = {w for w, _ in err.value.problems}
    assert {"batch_size", "seq_length", "shared_prefix_ratio", "colour"} <= fields
    assert "colour: unknown field" in str(err.value)


def test_missing_required_fields():
    # each under its own name, not "body" (issue 12)
    with pytest.raises(RequestError) as err:
        vramplan.estimate_finetuning({"llm_key": "llama-3-8b-instruct"})
    assert err.value.problems == [("gpu_key", "is required")]
    with pytest.raises(RequestError) as err:
        vramplan.estimate_inference({})
    assert err.value.problems == [("gpu_key", "is required"), ("llm_key", "is required")]
    with pytest.raises(RequestError, match="body: must be a JSON object"):
        vramplan.estimate_inference(["not", "an", "object"])


def test_custom_gpu_needs_custom_vram():
    with pytest.raises(RequestError, match="custom_vram: required when gpu_key is custom_discrete"):
        vramplan.estimate_inference({"gpu_key": "custom_discrete", "llm_key": "llama-3-8b-instruct"})
    out = vramplan.estimate_inference({"gpu_key": "custom_discrete", "llm_key": "llama-3-8b-instruct", "custom_vram": 20})
    assert out["actual_vram_percentage"] == round(out["vram_usage"] / 20 * 100, 1)


def test_custom_model_missing_fields_are_named():
    with pytest.raises(RequestError) as err:
        vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "custom", "custom_model": {"hidden_size": 4096}})
    msg = str(err.value)
    assert "custom_model.num_hidden_layers" in msg and "custom_model.vocab_size" in msg
    with pytest.raises(RequestError, match="custom_model: required when llm_key is custom"):
        vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "custom"})


def test_kv_format_must_hold_a_kv_cache():
    with pytest.raises(RequestError, match="kv_cache_quantization: q4_k_m cannot store a KV cache"):
        vramplan.estimate_inference({**SEED_INFERENCE, "kv_cache_quantization": "q4_k_m"})


def test_tensor_parallel_over_more_gpus_than_heads_is_a_configuration_error():
    # Llama 3 8B has 32 attention heads: 64-way tensor parallelism cannot split them.
    out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct",
                                       "num_gpus": 64, "inference_parallelism": "tensor"})
    assert out["memory_status"] == "error"
    assert any("32 attention heads" in w for w in out["warnings"])
