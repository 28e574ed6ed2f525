"""Broken data files fail to load with the file and the key path, every problem at once."""

from __future__ import annotations

import textwrap

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
    with pytest.raises(CatalogError) as err:
        build_catalog(load_entrypoints=False, extra_plugins=(plugin,))
    msg = str(err.value)
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
    with pytest.raises(CatalogError, match=r"\$\.interconnects\.slow_link\.bandwidth_gb_s: 'fast' is not of type 'number'"):
        build_catalog(load_entrypoints=False, extra_plugins=(plugin,))


def test_duplicate_key_across_files_names_both_files(tmp_path):
    plugin = plugin_with(tmp_path, "interconnects", """\
        interconnects:
          pcie4:
            label: Another PCIe 4
            bandwidth_gb_s: 32
            latency_us: 1
            source: https://example.com/x
        """)
    with pytest.raises(CatalogError) as err:
        build_catalog(load_entrypoints=False, extra_plugins=(plugin,))
    assert "catalogs/interconnects/interconnects.yaml" in str(err.value) and "broken.yaml" in str(err.value)


def test_invalid_yaml_names_the_line(tmp_path):
    plugin = plugin_with(tmp_path, "runtimes", "runtimes:\n  x: [unclosed\n")
    with pytest.raises(CatalogError, match=r"broken\.yaml:\d+: not valid YAML"):
        build_catalog(load_entrypoints=False, extra_plugins=(plugin,))


def test_yaml_is_loaded_safely(tmp_path):
    plugin = plugin_with(tmp_path, "gpus", "gpus: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        build_catalog(load_entrypoints=False, extra_plugins=(plugin,))


def test_oversized_file_is_refused(tmp_path, monkeypatch):
    import vramplan.datafiles as datafiles

    monkeypatch.setattr(datafiles, "MAX_DATA_FILE_BYTES", 100)
    plugin = plugin_with(tmp_path, "gpus", "gpus: {}\n" + "# padding\n" * 50)
    with pytest.raises(CatalogError, match="data files are limited to 100"):
        build_catalog(load_entrypoints=False, extra_plugins=(plugin,))


def test_runtime_lacking_a_constant_the_formulas_use(tmp_path):
    plugin = plugin_with(tmp_path, "runtimes", """\
        runtimes:
          bare:
            label: Bare
            description: has no constants
            constants:
              cuda_context_mib: {value: 300, unit: MiB, source: test}
        """)
    with pytest.raises(CatalogError, match=r"runtime bare .*lacks constants the formulas use: .*kv_block_tokens"):
        build_catalog(load_entrypoints=False, extra_plugins=(plugin,))


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
    with pytest.raises(CatalogError) as err:
        build_catalog(load_entrypoints=False, extra_plugins=(plugin,))
    assert "half-a-model.config.hidden_size" in str(err.value) and "vocab_size" in str(err.value)


# -- YAML aliases (issue 12, item 6) -----------------------------------------------------------------

def _laughs(levels: int = 9, width: int = 9) -> str:
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("kind", ["gpus", "runtimes"])
def test_an_alias_bomb_is_refused_at_once(tmp_path, kind):
    """9 levels x 9 aliases in a few hundred bytes stand for 9^9 = 387,420,489 nodes."""
    import time

    plugin = plugin_with(tmp_path, kind, _laughs())
    t0 = time.perf_counter()
    with pytest.raises(CatalogError, match=r"broken\.yaml:\d+: not valid YAML: expands to more than 200,000 nodes"):
        build_catalog(load_entrypoints=False, extra_plugins=(plugin,))
    assert time.perf_counter() - t0 < 30  # the catalog itself takes a few seconds on a loaded machine


def test_an_alias_bomb_in_a_formula_folder_is_refused(tmp_path, monkeypatch):
    from vramplan.errors import FormulaError

    (tmp_path / "bomb.yaml").write_text(_laughs())
    monkeypatch.setenv("VRAMPLAN_FORMULA_PATH", str(tmp_path))
    with pytest.raises(FormulaError, match="bomb.yaml:.*expands to more than"):
        build_catalog(load_entrypoints=False)


def test_a_self_referencing_alias_is_refused(tmp_path):
    plugin = plugin_with(tmp_path, "gpus", "gpus: &g {x: *g}\n")
    with pytest.raises(CatalogError, match=r"alias \*g refers to a node that contains it"):
        build_catalog(load_entrypoints=False, extra_plugins=(plugin,))


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
        __name__ = "dev-zero"

        @hookimpl
        def register_catalog_dirs(self):
            return [tmp_path]

    with pytest.raises(CatalogError, match="zero.yaml: is not a regular file"):
        build_catalog(load_entrypoints=False, extra_plugins=(Plugin(),))
