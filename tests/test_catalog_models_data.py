"""The model catalog files: schema-valid, keys unique across files, enough models, seed keys present."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "catalogs" / "models"
SCHEMA = json.loads((ROOT / "schemas" / "catalog-models.schema.json").read_text())
FILES = sorted(MODEL_DIR.glob("*.yaml"))


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_model_file_matches_schema(path):
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(_load(path)), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{path.name}: $.{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


def _all_models() -> dict[str, tuple[str, dict]]:
    seen: dict[str, tuple[str, dict]] = {}
    for path in FILES:
        for key, entry in _load(path)["models"].items():
            assert key not in seen, f"model key {key!r} is in both {seen[key][0]} and {path.name}"
            seen[key] = (path.name, entry)
    return seen


def test_keys_unique_across_files_and_catalog_is_large_enough():
    assert len(_all_models()) >= 80


def test_seed_keys_present():
    models = _all_models()
    for key in ("llama-3-8b-instruct", "llama-3.1-70b-instruct"):
        assert key in models
    assert models["llama-3-8b-instruct"][1]["config"]["hidden_size"] == 4096
    assert models["llama-3.1-70b-instruct"][1]["config"]["num_hidden_layers"] == 80


def test_every_entry_cites_its_config_on_huggingface():
    for key, (fname, entry) in _all_models().items():
        assert entry["source"].startswith("https://huggingface.co/"), f"{fname}: {key}"
        assert entry["source"].endswith("config.json"), f"{fname}: {key}"
        assert entry.get("hf_repo") and entry["hf_repo"] in entry["source"], f"{fname}: {key}"


def test_moe_entries_state_active_params():
    for key, (fname, entry) in _all_models().items():
        cfg = entry["config"].get("text_config", entry["config"])
        is_moe = any(cfg.get(k) for k in ("num_local_experts", "num_experts", "n_routed_experts"))
        assert is_moe == ("active_params_b" in entry), f"{fname}: {key}"
        if is_moe:
            assert entry["active_params_b"] < entry["params_b"]


def test_slips_found_in_the_spot_check_stay_fixed():
    """Values checked against each model's own config.json (issue 15's spot check)."""
    models = {k: e for k, (_, e) in _all_models().items()}
    base = models["mistral-nemo-base-2407"]
    assert base["context_length"] == 128000 and base["config"]["max_position_embeddings"] == 128000
    assert models["mistral-nemo-instruct-2407"]["config"]["max_position_embeddings"] == 1024000
    assert models["qwen2.5-14b"]["config"]["rms_norm_eps"] == 1e-5
    assert models["kimi-k2-instruct"]["config"]["quantization_config"] == {
        "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
