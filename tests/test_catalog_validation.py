"""Broken data files are named with the file and the key path, every problem at once.

A third-party file (a plugin's folder, the user's catalog folder) is skipped and reported in the
plugin failures while the rest loads; vramplan's own data fails loudly.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from vramplan import hookimpl
from vramplan.catalog import build_catalog
from vramplan.errors import CatalogError


def plugin_with(tmp_path, kind: str, text: str):
    folder = tmp_path / kind
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broken.yaml").write_text(textwrap.dedent(text))

    class Plugin:
        __name__ = "broken-data"

        @hookimpl
        def register_catalog_dirs(self):
            return [tmp_path]

    return Plugin()


def skipped(plugin) -> str:
    """Build a catalog with ``plugin``; return the one failure it records (the rest must load)."""
    cat = build_catalog(load_entrypoints=False, extra_plugins=(plugin,))
    [failure] = [f for f in cat.host.failures if f.name == "broken-data"]
    assert "rtx_4090" in cat.gpus and "pcie4" in cat.interconnects  # everything else loaded
    return failure.error


def test_typo_missing_unit_field_and_negative_bandwidth_all_reported(tmp_path):
    plugin = plugin_with(tmp_path, "gpus", """\
        gpus:
          my_gpu:
            label: My GPU
            vendor: nvidia
            category: consumer
            architecture: ada
            memory_gb: 24
            memory_type: GDDR6X
            memory_bandwidth_gb_s: -1008
            fp32_tflops: 82.6
            fp16_tflops: 165
            bf16_tflops: 165
            tdp_w: 450
            flash_attention: true
            default_interconnect: pcie4
            source: https://example.com/x
        """)
    msg = skipped(plugin)
    assert f"{tmp_path}/gpus/broken.yaml skipped: " in msg
    assert f"{tmp_path}/gpus/broken.yaml: $.gpus.my_gpu: unknown key ('memory_gb' was unexpected)" in msg
    assert "$.gpus.my_gpu: 'memory_gib' is a required property" in msg
    assert "$.gpus.my_gpu.memory_bandwidth_gb_s: -1008 is less than or equal to the minimum of 0" in msg


def test_wrong_type_names_the_path(tmp_path):
    plugin = plugin_with(tmp_path, "interconnects", """\
        interconnects:
          slow_link:
            label: Slow
            bandwidth_gb_s: fast
            latency_us: 1
            source: https://example.com/x
        """)
    assert "$.interconnects.slow_link.bandwidth_gb_s: 'fast' is not of type 'number'" in skipped(plugin)


def test_duplicate_key_across_files_names_both_files(tmp_path):
    plugin = plugin_with(tmp_path, "interconnects", """\
        interconnects:
          pcie4:
            label: Another PCIe 4
            bandwidth_gb_s: 32
            latency_us: 1
            source: https://example.com/x
        """)
    msg = skipped(plugin)
    assert "catalogs/interconnects/interconnects.yaml" in msg and "broken.yaml" in msg and "'pcie4'" in msg


def test_invalid_yaml_names_the_line(tmp_path):
    plugin = plugin_with(tmp_path, "runtimes", "runtimes:\n  x: [unclosed\n")
    assert re.search(r"broken\.yaml:\d+: not valid YAML", skipped(plugin))


def test_yaml_is_loaded_safely(tmp_path):
    plugin = plugin_with(tmp_path, "gpus", "gpus: !!python/object/apply:os.system ['echo pwned']\n")
    assert "not valid YAML" in skipped(plugin)


def test_oversized_file_is_refused(tmp_path, monkeypatch):
    from importlib import resources

    import vramplan.datafiles as datafiles

    # A limit just above the largest built-in data file (so the built-in catalog still loads under it) and a
    # plugin file over it: the limit follows the package's own files instead of assuming their size.
    largest = max(f.stat().st_size for pkg in ("vramplan.formulas", "vramplan.catalogs")
                  for f in Path(str(resources.files(pkg))).rglob("*.yaml"))
    limit = largest + 1024
    monkeypatch.setattr(datafiles, "MAX_DATA_FILE_BYTES", limit)
    plugin = plugin_with(tmp_path, "gpus", "gpus: {}\n" + "# padding\n" * (limit // 10 + 100))
    assert f"data files are limited to {limit}" in skipped(plugin)


def test_runtime_lacking_a_constant_the_formulas_use(tmp_path):
    plugin = plugin_with(tmp_path, "runtimes", """\
        runtimes:
          bare:
            label: Bare
            description: has no constants
            constants:
              cuda_context_mib: {value: 300, unit: MiB, source: test}
        """)
    msg = skipped(plugin)
    # The engine reads decode_bw_eff & co. itself (catalogs/runtime_constants: no default), so a profile
    # without them is refused before any estimate could divide by a missing efficiency.
    assert re.search(r"runtimes 'bare' skipped: lacks declared constants without a default: .*decode_bw_eff", msg)


def test_runtime_assumptions_naming_an_unknown_constant(tmp_path):
    """An assumption line's {name} must name one of the profile's constants: a typo would print verbatim."""
    plugin = plugin_with(tmp_path, "runtimes", """\
        runtimes:
          typo:
            label: Typo
            description: a vLLM with a misspelt placeholder
            extends: vllm
            assumptions: ['typo: prefill in steps of {max_prefil_tokens} tokens']
        """)
    assert re.search(r"runtimes 'typo' skipped: assumptions name unknown constants: \{max_prefil_tokens\}", skipped(plugin))


def test_runtime_whose_own_value_is_outside_what_it_accepts(tmp_path):
    """A profile's value (and each tier's) must lie inside its constant's `accepts`: a default the runtime itself
    would refuse is a data error, caught when the catalog loads."""
    plugin = plugin_with(tmp_path, "runtimes", """\
        runtimes:
          greedy:
            label: Greedy
            description: a vLLM that claims more than the card
            extends: vllm
            constants:
              gpu_memory_utilization:
                value: 1.2
                unit: fraction
                accepts: {above: 0, at_most: 1, source: test}
                source: test
              kv_block_tokens:
                value: 16
                unit: tokens
                accepts: {at_least: 1, source: test}
                source: test
                tiers:
                - {below_gib: 40, value: 0, source: test}
        """)
    assert re.search(r"runtimes 'greedy' skipped: gpu_memory_utilization 1\.2 is outside what it accepts \(above 0, at most 1\); "
                     r"kv_block_tokens 0 is outside what it accepts \(at least 1\)", skipped(plugin))


def test_declared_bounds_hold_for_every_runtime_and_class(tmp_path):
    """What a declaration accepts (catalogs/runtime_constants: decode_bw_eff is a share of the bandwidth, above 0 and
    at most 1) holds for every profile's value of it, its per-class variants included."""
    plugin = plugin_with(tmp_path, "runtimes", """\
        runtimes:
          faster:
            label: Faster
            description: a vLLM that streams faster than the memory on AMD
            extends: vllm
            constants:
              decode_bw_eff_amd: {value: 1.3, unit: fraction, source: test}
        """)
    assert re.search(r"runtimes 'faster' skipped: decode_bw_eff_amd 1\.3 is outside what it accepts \(above 0, at most 1\)",
                     skipped(plugin))


def test_a_runtimes_own_bound_adds_to_the_declared_one(tmp_path):
    """A profile's own `accepts` on a declared constant narrows it; both bounds hold and both sources are named."""
    plugin = plugin_with(tmp_path, "runtimes", """\
        runtimes:
          capped:
            label: Capped
            description: a vLLM whose own check caps the bandwidth share
            extends: vllm
            constants:
              decode_bw_eff:
                value: 0.8
                unit: fraction
                source: test
                accepts: {at_most: 0.9, source: its own check}
        """)
    cat = build_catalog(load_entrypoints=False, extra_plugins=(plugin,))
    accepts = cat.runtimes.get("capped").data["constants"]["decode_bw_eff"]["accepts"]
    assert accepts["above"] == 0 and accepts["at_most"] == 0.9
    assert accepts["source"].startswith("its own check; a share of the GPU's datasheet memory bandwidth")


def test_a_declared_default_outside_its_own_bound(tmp_path):
    plugin = plugin_with(tmp_path, "runtime_constants", """\
        runtime_constants:
          warp_share:
            unit: fraction
            description: a share that cannot be more than everything
            default: 1.5
            source: test
            accepts: {at_least: 0, at_most: 1, source: test}
        """)
    assert re.search(r"runtime_constants 'warp_share' skipped: default 1\.5 is outside what it accepts \(at least 0, at most 1\)",
                     skipped(plugin))


def test_runtime_lacking_a_constant_only_the_formulas_use(tmp_path):
    from vramplan.catalog import get_catalog

    builtin = get_catalog().runtimes.get("transformers").data["constants"]
    declared = {k: v for k, v in builtin.items() if k in {"decode_bw_eff", "prefill_flops_eff", "train_mfu",
                                                          "power_memory_bound_fraction", "dequant_flops_per_weight",
                                                          "attention_eff_ratio", "cpu_memory_bw_gb_s"}}
    plugin = plugin_with(tmp_path, "runtimes", "runtimes:\n  bare:\n    label: Bare\n    description: d\n"
                         "    constants:\n" + "".join(f"      {k}: {{value: {v['value']}, unit: {v['unit']}, source: test}}\n"
                                                      for k, v in declared.items()))
    cat = build_catalog(load_entrypoints=False, extra_plugins=(plugin,))
    assert "bare" not in cat.runtimes and "transformers" in cat.runtimes
    [failure] = [f for f in cat.host.failures if f.name == "broken-data"]
    assert re.search(r"runtimes 'bare' skipped: lacks constants the formulas use: .*kv_block_tokens", failure.error)


def test_the_same_problems_in_vramplans_own_data_fail_loudly(tmp_path, monkeypatch):
    import vramplan.catalog as catalog_mod

    plugin = plugin_with(tmp_path, "interconnects", """\
        interconnects:
          slow_link: {label: Slow, bandwidth_gb_s: fast, latency_us: 1, source: https://example.com/x}
        """)
    monkeypatch.setattr(catalog_mod.PluginHost, "is_builtin", lambda self, name: True)
    monkeypatch.setattr(catalog_mod, "_packaged", lambda root, package: True)
    with pytest.raises(CatalogError, match=r"\$\.interconnects\.slow_link\.bandwidth_gb_s: 'fast' is not of type 'number'"):
        build_catalog(load_entrypoints=False, extra_plugins=(plugin,))


def test_a_missing_plugin_folder_is_named_and_skipped(tmp_path):
    class Gone:
        __name__ = "broken-data"

        @hookimpl
        def register_catalog_dirs(self):
            return [tmp_path / "nowhere"]

    assert f"catalog folder {tmp_path / 'nowhere'} does not exist" in skipped(Gone())


def test_model_config_missing_fields_names_them(tmp_path):
    plugin = plugin_with(tmp_path, "models", """\
        models:
          half-a-model:
            name: Half
            family: llama
            params_b: 1
            context_length: 4096
            source: https://example.com/config.json
            config: {model_type: llama, num_hidden_layers: 16}
        """)
    msg = skipped(plugin)
    assert "half-a-model.config.hidden_size" in msg and "vocab_size" in msg


# -- YAML aliases (issue 12, item 6) -----------------------------------------------------------------

def _laughs(levels: int = 9, width: int = 9) -> str:
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("kind", ["gpus", "runtimes"])
def test_an_alias_bomb_is_refused_at_once(tmp_path, kind):
    """9 levels x 9 aliases in a few hundred bytes stand for 9^9 = 387,420,489 nodes: a plugin's file
    is skipped and named, the rest of the catalog loads."""
    import time

    plugin = plugin_with(tmp_path, kind, _laughs())
    t0 = time.perf_counter()
    assert re.search(r"broken\.yaml:\d+: not valid YAML: expands to more than 200,000 nodes", skipped(plugin))
    assert time.perf_counter() - t0 < 60  # the catalog itself takes seconds on a loaded machine


def test_an_alias_bomb_in_a_formula_folder_is_refused(tmp_path, monkeypatch):
    from vramplan.errors import FormulaError

    (tmp_path / "bomb.yaml").write_text(_laughs())
    monkeypatch.setenv("VRAMPLAN_FORMULA_PATH", str(tmp_path))
    with pytest.raises(FormulaError, match="bomb.yaml:.*expands to more than"):
        build_catalog(load_entrypoints=False)


def test_a_self_referencing_alias_is_refused(tmp_path):
    plugin = plugin_with(tmp_path, "gpus", "gpus: &g {x: *g}\n")
    assert "alias *g refers to a node that contains it" in skipped(plugin)


def test_modest_aliases_still_load(tmp_path):
    """The built-in catalogs share config blocks with anchors (llama.yaml, mistral.yaml)."""
    from vramplan.datafiles import read_yaml

    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {x: 1, y: [1, 2]}\none: *b\ntwo: {<<: *b, x: 3}\n")
    assert read_yaml(path) == {"base": {"x": 1, "y": [1, 2]}, "one": {"x": 1, "y": [1, 2]}, "two": {"x": 3, "y": [1, 2]}}


def test_a_data_file_that_is_not_a_regular_file_is_refused(tmp_path):
    import os

    folder = tmp_path / "gpus"
    folder.mkdir()
    os.symlink("/dev/zero", folder / "zero.yaml")

    class Plugin:
        __name__ = "broken-data"

        @hookimpl
        def register_catalog_dirs(self):
            return [tmp_path]

    assert "zero.yaml: is not a regular file" in skipped(Plugin())
