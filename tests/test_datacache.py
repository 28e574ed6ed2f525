"""Validated data files are cached by content: a warm start parses no YAML and checks no schema,
and a changed, broken or damaged file is never served from the cache."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

import vramplan.datafiles as datafiles
from vramplan import datacache, hookimpl
from vramplan.catalog import build_catalog

GPU = """\
    gpus:
      cached_gpu:
        label: Cached GPU {memory}GB
        vendor: nvidia
        category: consumer
        architecture: ada
        memory_gib: {memory}
        memory_type: GDDR6X
        memory_bandwidth_gb_s: 1008
        fp32_tflops: 82.6
        fp16_tflops: 165
        bf16_tflops: 165
        tdp_w: 450
        flash_attention: true
        default_interconnect: pcie4
        source: https://example.com/cached-gpu
    """


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("VRAMPLAN_CACHE_DIR", str(folder))
    return folder / "validated"


def user_catalog(tmp_path, memory):
    folder = tmp_path / "catalog" / "gpus"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mine.yaml").write_text(textwrap.dedent(GPU.format(memory=memory)))

    class Plugin:
        __name__ = "cache-test"

        @hookimpl
        def register_catalog_dirs(self):
            return [tmp_path / "catalog"]

    return Plugin()


def no_yaml(monkeypatch):
    """Make any YAML parsing or schema explanation fail loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError("parsed a file the cache holds")
    monkeypatch.setattr(datafiles, "_parse_yaml", refuse)
    monkeypatch.setattr(datafiles, "schema_problems", refuse)


def test_a_warm_start_reads_no_yaml(cache, tmp_path, monkeypatch):
    plugin = user_catalog(tmp_path, 24)
    cold = build_catalog(load_entrypoints=False, extra_plugins=(plugin,))
    files = sorted(cache.glob("*.json"))
    assert len(files) >= 40  # the built-in catalogs and formulas, and the plugin's file
    no_yaml(monkeypatch)
    warm = build_catalog(load_entrypoints=False, extra_plugins=(plugin,))
    assert warm.gpus.get("cached_gpu").data == cold.gpus.get("cached_gpu").data
    assert warm.gpus.get("cached_gpu").data["memory_gib"] == 24
    assert sorted(warm.formulas.formulas) == sorted(cold.formulas.formulas)


def test_a_changed_file_is_read_again(cache, tmp_path, monkeypatch):
    build_catalog(load_entrypoints=False, extra_plugins=(user_catalog(tmp_path, 24),))
    changed = build_catalog(load_entrypoints=False, extra_plugins=(user_catalog(tmp_path, 48),))
    assert changed.gpus.get("cached_gpu").data["memory_gib"] == 48
    assert changed.gpus.get("cached_gpu").data["label"] == "Cached GPU 48GB"


def test_a_file_broken_after_it_was_cached_fails_with_its_problem(cache, tmp_path):
    plugin = user_catalog(tmp_path, 24)
    build_catalog(load_entrypoints=False, extra_plugins=(plugin,))
    path = tmp_path / "catalog" / "gpus" / "mine.yaml"
    path.write_text(path.read_text().replace("memory_gib: 24", "memory_gib: twenty-four"))
    for _ in range(2):  # and again: a file that fails is never stored
        cat = build_catalog(load_entrypoints=False, extra_plugins=(plugin,))
        assert "cached_gpu" not in cat.gpus  # a third-party file: skipped and named, the rest loads
        [failure] = [f for f in cat.host.failures if "mine.yaml" in f.error]
        assert re.search(r"mine.yaml: \$.gpus.cached_gpu.memory_gib: 'twenty-four' is not of type 'number'", failure.error)


def test_a_damaged_cache_entry_is_ignored_and_replaced(cache, tmp_path):
    plugin = user_catalog(tmp_path, 24)
    build_catalog(load_entrypoints=False, extra_plugins=(plugin,))
    for entry in cache.glob("*.json"):
        entry.write_text('{"format": "vramplan-validated-data-1", "da')
    cat = build_catalog(load_entrypoints=False, extra_plugins=(plugin,))
    assert cat.gpus.get("cached_gpu").data["memory_gib"] == 24
    assert all(json.loads(entry.read_text())["data"] for entry in cache.glob("*.json"))


def test_a_changed_schema_or_checker_is_a_different_key():
    raw = b"gpus: {}\n"
    assert datacache.key(raw, "catalog-gpus") != datacache.key(raw, "catalog-models")
    assert datacache.key(raw, "catalog-gpus") != datacache.key(raw + b"\n", "catalog-gpus")
    assert datacache.key(raw, "catalog-gpus") == datacache.key(raw, "catalog-gpus")


def test_the_cache_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("VRAMPLAN_CACHE_DIR", "off")
    assert datacache.cache_dir() is None
    build_catalog(load_entrypoints=False, extra_plugins=(user_catalog(tmp_path, 24),))
    assert not list(tmp_path.rglob("*.json"))


def test_the_command_answers_the_same_cold_and_warm(cache, tmp_path):
    env = {"VRAMPLAN_CACHE_DIR": str(cache.parent), "VRAMPLAN_NO_ENTRYPOINTS": "1", "PATH": "/usr/bin:/bin"}
    args = [sys.executable, "-m", "vramplan", "inference", "--gpu", "rtx_4090", "--model", "llama-3-8b-instruct",
            "--format", "json"]
    cold = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
    assert list(cache.glob("*.json"))
    warm = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
    assert json.loads(cold.stdout) == json.loads(warm.stdout)
    assert json.loads(warm.stdout)["memory_details"]["Base Model Weights"] == 14.96  # 8.03e9 params x 2 bytes
