"""`vramplan models list|import` and `vramplan gpus` through click's CliRunner."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from safetensors.numpy import save_file

import vramplan
from vramplan.cli.models import gpus, models
from vramplan.listing import filter_models

FAKE_MODELS = [
    {"key": "llama-3-8b-instruct", "name": "Llama 3 8B Instruct", "family": "llama", "params_b": 8.03,
     "active_params_b": None, "context_length": 8192, "capabilities": ["instruct"]},
    {"key": "mixtral-8x7b-instruct", "name": "Mixtral 8x7B Instruct", "family": "mixtral", "params_b": 46.7,
     "active_params_b": 12.9, "context_length": 32768, "capabilities": ["instruct", "moe"]},
    {"key": "qwen2.5-0.5b-instruct", "name": "Qwen2.5 0.5B Instruct", "family": "qwen2.5", "params_b": 0.494,
     "active_params_b": None, "context_length": 32768, "capabilities": ["instruct"]},
]
FAKE_GPUS = [
    {"key": "h100_80", "label": "NVIDIA H100 80GB", "memory": 80, "vendor": "nvidia", "category": "datacenter",
     "memory_bandwidth_gb_s": 3350, "bf16_tflops": 989, "tdp_w": 700},
    {"key": "rtx_4090", "label": "NVIDIA RTX 4090", "memory": 24, "vendor": "nvidia", "category": "consumer",
     "memory_bandwidth_gb_s": 1008, "bf16_tflops": 165, "tdp_w": 450},
    {"key": "mi300x", "label": "AMD MI300X", "memory": 192, "vendor": "amd", "category": "datacenter",
     "memory_bandwidth_gb_s": 5300, "bf16_tflops": 1307, "tdp_w": 750},
]


@pytest.fixture
def fake_lists(monkeypatch):
    """Stand-in lists so these tests state the CLI's filtering, not the catalog's contents."""
    monkeypatch.setattr(vramplan, "list_models", lambda **f: filter_models([dict(m) for m in FAKE_MODELS], **f),
                        raising=False)
    monkeypatch.setattr(vramplan, "list_gpus", lambda: [dict(g) for g in FAKE_GPUS], raising=False)


def run(cmd, args):
    return CliRunner().invoke(cmd, args, catch_exceptions=False)


def test_models_list_filters_and_json(fake_lists):
    res = run(models, ["list", "--min-params", "1", "--format", "json"])
    assert res.exit_code == 0
    assert [m["key"] for m in json.loads(res.output)] == ["llama-3-8b-instruct", "mixtral-8x7b-instruct"]
    res = run(models, ["list", "--family", "MIXTRAL", "--format", "json"])
    assert [m["key"] for m in json.loads(res.output)] == ["mixtral-8x7b-instruct"]
    res = run(models, ["list", "--search", "qwen", "--max-params", "1"])
    assert res.exit_code == 0
    assert "qwen2.5-0.5b-instruct" in res.output and "llama" not in res.output
    assert res.output.splitlines()[0].split()[:2] == ["key", "name"]


def test_models_list_by_capability(fake_lists):
    res = run(models, ["list", "--capability", "moe", "--format", "json"])
    assert [m["key"] for m in json.loads(res.output)] == ["mixtral-8x7b-instruct"]
    res = run(models, ["list", "--capability", "instruct,moe", "--search", "llama", "--format", "json"])
    assert json.loads(res.output) == []
    res = run(models, ["list", "--capability", "instruct", "--capability", "moe"])
    assert "no models match" not in res.output and "mixtral-8x7b-instruct" in res.output


def test_models_list_bad_range_is_usage_error(fake_lists):
    res = CliRunner().invoke(models, ["list", "--min-params", "10", "--max-params", "1"])
    assert res.exit_code == 2
    assert "--min-params" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(models, ["list", "--min-params", "lots"])
    assert res.exit_code == 2
    res = CliRunner().invoke(models, ["list", "--capability", "telepathy"])
    assert res.exit_code == 2 and "--capability: unknown capability 'telepathy'" in res.output


def test_gpus_filters(fake_lists):
    res = run(gpus, ["--vendor", "nvidia", "--min-memory", "40", "--format", "json"])
    assert [g["key"] for g in json.loads(res.output)] == ["h100_80"]
    res = run(gpus, ["--category", "datacenter"])
    assert "mi300x" in res.output and "h100_80" in res.output and "rtx_4090" not in res.output
    assert CliRunner().invoke(gpus, ["--format", "xml"]).exit_code == 2


def _tiny_model_dir(tmp_path):
    save_file({"model.embed_tokens.weight": np.zeros((10, 8), dtype=np.float16),
               "lm_head.weight": np.zeros((10, 8), dtype=np.float16)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "_name_or_path": "org/tiny-chat", "model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 16, "vocab_size": 10,
        "max_position_embeddings": 512, "tie_word_embeddings": False}))
    return tmp_path / "model.safetensors"


def test_import_prints_architecture(tmp_path):
    path = _tiny_model_dir(tmp_path)
    res = run(models, ["import", str(path)])
    assert res.exit_code == 0
    assert "layers" in res.output and "kv heads" in res.output
    assert "320 bytes" in res.output  # 2 tensors x 80 elements x 2 bytes
    res = run(models, ["import", str(path), "--format", "json"])
    data = json.loads(res.output)
    assert (data["layers"], data["hidden_size"], data["kv_heads"], data["head_dim"]) == (1, 8, 1, 4)
    assert data["params"] == 160 and data["weights_bytes"] == 320 and data["quantization"] == "fp16"


def test_import_save_as_writes_schema_valid_entry(tmp_path):
    (tmp_path / "m").mkdir()
    path = _tiny_model_dir(tmp_path / "m")
    out = tmp_path / "catalog"
    res = run(models, ["import", str(path), "--save-as", "tiny-chat", "--catalog-dir", str(out)])
    assert res.exit_code == 0, res.output
    doc = yaml.safe_load((out / "tiny-chat.yaml").read_text())
    entry = doc["models"]["tiny-chat"]
    assert entry["params_b"] == 1.6e-07 and entry["context_length"] == 512 and entry["instruct"] is True
    assert entry["config"]["hidden_size"] == 8
    from vramplan.datafiles import schema_problems
    assert schema_problems(doc, "catalog-models") == []
    again = CliRunner().invoke(models, ["import", str(path), "--save-as", "tiny-chat", "--catalog-dir", str(out)])
    assert again.exit_code == 2 and "--force" in again.output


def test_import_bad_inputs_exit_2_with_one_line(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x00\x01")
    res = CliRunner().invoke(models, ["import", str(bad)])
    assert res.exit_code == 2 and "broken.gguf" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(models, ["import", str(tmp_path / "missing.gguf")])
    assert res.exit_code == 2
    path = _tiny_model_dir(tmp_path)
    res = CliRunner().invoke(models, ["import", str(path), "--save-as", "Bad Key"])
    assert res.exit_code == 2 and "--save-as" in res.output


def test_import_safetensors_without_config_cannot_be_saved(tmp_path):
    save_file({"w": np.zeros((2, 2), dtype=np.float16)}, str(tmp_path / "w.safetensors"))
    res = CliRunner().invoke(models, ["import", str(tmp_path / "w.safetensors"), "--save-as", "w",
                                      "--catalog-dir", str(tmp_path / "c")])
    assert res.exit_code == 2
    assert "config.json" in res.output


def test_saved_model_is_loaded_by_the_catalog_and_estimates(tmp_path, monkeypatch):
    """`models import --save-as` writes into the user catalog folder that the built-in plugin loads."""
    import json as _json

    from click.testing import CliRunner

    import vramplan
    from vramplan.catalog import reset
    from vramplan.cli import main

    monkeypatch.setenv("VRAMPLAN_CATALOG_DIR", str(tmp_path / "catalogs"))
    config = {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
              "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
              "tie_word_embeddings": True, "max_position_embeddings": 131072}
    src = tmp_path / "config.json"
    src.write_text(_json.dumps(config))
    result = CliRunner().invoke(main, ["models", "import", str(src), "--save-as", "my-1b"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "catalogs" / "models" / "my-1b.yaml").is_file()
    reset()
    try:
        out = vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "my-1b", "runtime": "transformers",
                                           "trace": True})
        weights = next(s["value"] for s in out["trace"] if s["id"] == "weights_file_bytes")
        assert weights == 1_235_814_400 * 2  # Llama 3.2 1B's architecture in fp16
    finally:
        reset()


def test_import_of_hostile_files_exits_2_naming_file_and_limit(tmp_path):
    """Issue 12, item 9: each was a traceback (exit 1), a MemoryError or an endless read."""
    import os
    import struct

    os.symlink("/dev/zero", tmp_path / "config.json")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "digits.json").write_text('{"hidden_size": ' + "9" * 4401 + "}")
    (tmp_path / "layers.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1e9,
                                                      "num_attention_heads": 4, "vocab_size": 100,
                                                      "intermediate_size": 128}))
    header = json.dumps({"w": {"dtype": "F16", "shape": [10**18] * 300, "data_offsets": [0, 2]}}).encode()
    (tmp_path / "dims.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0")
    cases = {"config.json": "is not a regular file", "deep.json": "nested too deeply",
             "digits.json": "an integer of 4401 digits (at most 30)",
             "layers.json": "num_hidden_layers: must be an integer from 1 to 4,096, got 1000000000.0",
             "dims.safetensors": "has 300 dimensions (limit 16)"}
    for name, why in cases.items():
        res = CliRunner().invoke(models, ["import", str(tmp_path / name)])
        assert res.exit_code == 2, (name, res.output)
        assert name in res.output and why in res.output and "Traceback" not in res.output, res.output
