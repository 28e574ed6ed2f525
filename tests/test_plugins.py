"""Plugins: built-ins register like third parties, registries record provenance, failures are isolated."""

from __future__ import annotations

import importlib.metadata
import os
import sys
import types

import pytest

import vramplan
from vramplan import hookimpl
from vramplan.catalog import build_catalog, get_catalog
from vramplan.errors import CatalogError, PluginError
from vramplan.pluginhost import DEFAULT_PLUGINS

GPU = {"label": "Test GPU 32GB", "vendor": "other", "category": "datacenter", "architecture": "test",
       "memory_gib": 32, "memory_type": "HBM", "memory_bandwidth_gb_s": 1000, "fp32_tflops": 10,
       "fp16_tflops": 100, "bf16_tflops": 100, "tdp_w": 300, "flash_attention": True,
       "default_interconnect": "pcie4", "source": "https://example.com/test-gpu"}


class GpuPlugin:
    __name__ = "test-gpu-plugin"

    @hookimpl
    def register_gpus(self, register):
        register("test_gpu_32", dict(GPU))


def test_builtins_are_ordinary_plugins():
    cat = get_catalog()
    names = [p.name for p in cat.host.plugins()]
    assert list(DEFAULT_PLUGINS) == [n for n in names if n in DEFAULT_PLUGINS]
    assert all(p.builtin for p in cat.host.plugins() if p.name in DEFAULT_PLUGINS)


def test_registry_records_provenance():
    cat = get_catalog()
    entry = cat.gpus.get("rtx_4090")
    assert entry.provenance.plugin == "vramplan.plugins.catalogs"
    assert entry.provenance.file == "catalogs/gpus/nvidia-geforce.yaml"


def test_plugin_adds_a_gpu_and_an_estimate_runs_on_it(with_plugins):
    with with_plugins(GpuPlugin()) as cat:
        assert cat.gpus.get("test_gpu_32").provenance.plugin == "test-gpu-plugin"
        out = vramplan.estimate_inference({"gpu_key": "test_gpu_32", "llm_key": "llama-3-8b-instruct"})
        # 32 GiB card: the percentage is vram_usage / 32.
        assert out["actual_vram_percentage"] == round(out["vram_usage"] / 32 * 100, 1)


def test_duplicate_key_names_both_contributors():
    class Dup:
        __name__ = "dup-plugin"

        @hookimpl
        def register_gpus(self, register):
            register("rtx_4090", dict(GPU))

    with pytest.raises(CatalogError) as err:
        build_catalog(load_entrypoints=False, extra_plugins=(Dup(),))
    msg = str(err.value)
    assert "'rtx_4090'" in msg and "vramplan.plugins.catalogs (catalogs/gpus/nvidia-geforce.yaml)" in msg and "dup-plugin" in msg


def test_invalid_entry_from_a_third_party_plugin_is_reported_and_skipped():
    class Bad:
        __name__ = "bad-entry-plugin"

        @hookimpl
        def register_gpus(self, register):
            register("bad_gpu", {**GPU, "memory_gib": "eighty"})

    cat = build_catalog(load_entrypoints=False, extra_plugins=(Bad(), GpuPlugin()))
    assert "bad_gpu" not in cat.gpus and "test_gpu_32" in cat.gpus
    failure = next(f for f in cat.host.failures if f.name == "bad-entry-plugin")
    assert "memory_gib" in failure.error and "'eighty' is not of type 'number'" in failure.error


def test_a_plugin_raising_in_a_hook_is_reported_and_the_rest_keep_working():
    class Raises:
        __name__ = "raising-plugin"
        __version__ = "9.9"

        @hookimpl
        def register_interconnects(self, register):
            raise RuntimeError("boom")

    cat = build_catalog(load_entrypoints=False, extra_plugins=(Raises(), GpuPlugin()))
    assert "test_gpu_32" in cat.gpus
    [failure] = [f for f in cat.host.failures if f.name == "raising-plugin"]
    assert failure.version == "9.9" and "RuntimeError: boom" in failure.error


def test_misspelled_hook_is_caught():
    class Typo:
        __name__ = "typo-plugin"

        @hookimpl
        def register_gpu(self, register):  # missing "s"
            pass

    with pytest.raises(PluginError, match="does not have"):
        build_catalog(load_entrypoints=False, extra_plugins=(Typo(),))


def test_broken_entry_point_is_reported_with_name_and_version(monkeypatch):
    class FakeDist:
        version = "0.0.1"

    class FakeEP:
        name = "broken-plugin"
        dist = FakeDist()

        def load(self):
            raise ImportError("No module named 'nonexistent'")

    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [FakeEP()] if group == "vramplan" else real(group=group))
    cat = build_catalog(load_entrypoints=True)
    [failure] = [f for f in cat.host.failures if f.name == "broken-plugin"]
    assert failure.version == "0.0.1" and "No module named 'nonexistent'" in failure.error
    assert len(cat.gpus) > 80  # everything else loaded


def test_plugin_formula_dir_overrides_by_id(tmp_path, with_plugins):
    (tmp_path / "ctx.yaml").write_text(
        "id: ctx\nkind: helper\ndescription: bigger context\nformulas:\n"
        "  - id: fixed_overhead_bytes\n    description: a plugin's own runtime memory\n"
        "    inputs: []\n    expr: '1073741824'\n    unit: bytes\n")

    class Formulas:
        __name__ = "formula-plugin"

        @hookimpl
        def register_formula_dirs(self):
            return [tmp_path]

    with with_plugins(Formulas()) as cat:
        assert cat.formulas.formulas["fixed_overhead_bytes"].file.endswith("ctx.yaml")
        out = vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "trace": True})
        assert {s["id"]: s["value"] for s in out["trace"]}["fixed_overhead_bytes"] == 1073741824


def test_cli_lists_plugins(with_plugins):
    from click.testing import CliRunner

    from vramplan.cli import main

    with with_plugins(GpuPlugin()):
        result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0
    assert "vramplan.plugins.catalogs" in result.output and "test-gpu-plugin" in result.output


def _example_installed() -> bool:
    return any(ep.name == "acme" for ep in importlib.metadata.entry_points(group="vramplan"))


@pytest.mark.skipif(not _example_installed() and not os.environ.get("CI"),
                    reason="examples/vramplan-acme is not pip-installed here (CI installs it)")
def test_example_plugin_through_its_entry_point():
    cat = build_catalog(load_entrypoints=True)
    assert cat.gpus.get("acme_x1").provenance.plugin == "acme"
    assert cat.interconnects.get("acme_link").provenance.plugin == "acme"
    assert cat.gpu_classes["acme_x1"] == "acme" and cat.hardware_classes.get("acme").provenance.plugin == "acme"
    fmt = cat.quantization.get("acme_q5")
    assert fmt.provenance.plugin == "acme" and fmt.provenance.file.endswith("quantization/acme.yaml")
    from vramplan.catalog import reset

    reset(cat)
    try:
        out = vramplan.estimate_inference({"gpu_key": "acme_x1", "llm_key": "llama-3-8b-instruct",
                                           "quantization": "acme_q5", "trace": True})
        t = {s["id"]: s["value"] for s in out["trace"]}
        # Llama 3 8B layers at 5.25 bits (norms 16), embedding and head at 16 bits:
        layers = (536870912 * 2 + 134217728 * 2 + 1879048192 * 3) * 5.25 + 266240 * 16
        assert t["weights_gpu_bytes"] == pytest.approx((layers + 525336576 * 16 * 2) / 8)
        assert out["actual_vram_percentage"] == round(out["vram_usage"] / 48 * 100, 1)
    finally:
        reset()


# -- every registration hook -----------------------------------------------------------------------

TINY_CONFIG = {"model_type": "llama", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 8,
               "num_attention_heads": 16, "num_key_value_heads": 4, "head_dim": 64, "vocab_size": 32000,
               "max_position_embeddings": 4096, "tie_word_embeddings": False}


class EveryHook:
    """One plugin that uses every registration hook once."""

    __name__ = "every-hook-plugin"

    @hookimpl
    def register_models(self, register):
        register("tiny-llama", {"name": "Tiny Llama", "family": "llama", "params_b": 0.17, "context_length": 4096,
                                "source": "https://example.com/tiny/config.json", "config": dict(TINY_CONFIG)})

    @hookimpl
    def register_quantization_formats(self, register):
        register("q6_test", {"label": "Test 6-bit", "kind": "integer", "bits": {"default": 6, "token_embd": 16, "output": 16,
                                                                                "norm": 16},
                             "quality_rank": 1, "source": "https://example.com/q6 (test)"})

    @hookimpl
    def register_interconnects(self, register):
        register("test_link", {"label": "Test link", "bandwidth_gb_s": 100, "latency_us": 3, "source": "https://example.com/link"})

    @hookimpl
    def register_optimizers(self, register):
        register("momentum_sgd", {"label": "SGD with momentum", "states_per_param": 1, "state_dtype": "param",
                                  "source": "torch/optim/sgd.py: momentum > 0 keeps one momentum_buffer"})

    @hookimpl
    def register_runtimes(self, register):
        base = get_catalog().runtimes.get("transformers").data["constants"]
        register("test-server", {"label": "Test server", "description": "transformers with a 1 GiB CUDA context",
                                 "constants": {**base, "cuda_context_mib": {"value": 1024, "unit": "MiB", "source": "test"}}})


def test_every_registration_hook_adds_entries_with_provenance(with_plugins):
    with with_plugins(EveryHook()) as cat:
        for kind, key in (("models", "tiny-llama"), ("quantization", "q6_test"), ("interconnects", "test_link"),
                          ("optimizers", "momentum_sgd"), ("runtimes", "test-server")):
            entry = cat.registry(kind).get(key)
            assert entry.provenance.plugin == "every-hook-plugin" and entry.provenance.file is None, kind
        body = {"gpu_key": "h100_80", "llm_key": "tiny-llama", "quantization": "q6_test", "runtime": "test-server",
                "interconnect_type": "test_link", "trace": True}
        t = {s["id"]: s["value"] for s in vramplan.estimate_inference(body)["trace"]}
        # Tiny Llama layers: 8 x (2 x 1024 x 1024 + 2 x 1024 x 256 + 3 x 1024 x 4096) = 121,634,816 params at 6 bits,
        # 8 x 2 x 1024 + 1024 norm params at 16 bits, embedding and head 2 x 32000 x 1024 at 16 bits:
        layers = 121_634_816 * 6 + 17_408 * 16
        assert t["weights_gpu_bytes"] == pytest.approx((layers + 65_536_000 * 16) / 8)
        # The runtime's own CUDA context: 1024 MiB in place of transformers' 716.8.
        assert t["fixed_overhead_bytes"] == pytest.approx((1024 + 66) * 1048576)
        ft = vramplan.estimate_finetuning({"gpu_key": "h100_80", "llm_key": "tiny-llama", "finetuning_method": "full",
                                           "fine_tuning_quantization": "bf16", "optimizer": "momentum_sgd", "trace": True})
        tf = {s["id"]: s["value"] for s in ft["trace"]}
        # One bf16 momentum buffer per parameter: (121,634,816 + 17,408 + 65,536,000) x 2 bytes.
        assert tf["optimizer_states_total_bytes"] == (121_634_816 + 17_408 + 65_536_000) * 2
