"""The GPU and interconnect catalogs are valid data and agree with hand-checked facts.

These tests read the YAML files directly (no engine code), so they pin the data itself:
every file validates against its JSON Schema, keys are unique across files, links resolve,
and a handful of numbers match the vendors' datasheets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parent.parent
GPU_DIR = ROOT / "catalogs" / "gpus"
INTERCONNECT_DIR = ROOT / "catalogs" / "interconnects"
GPU_SCHEMA = ROOT / "schemas" / "catalog-gpus.schema.json"
INTERCONNECT_SCHEMA = ROOT / "schemas" / "catalog-interconnects.schema.json"

GPU_FILES = sorted(GPU_DIR.glob("*.yaml"))
INTERCONNECT_FILES = sorted(INTERCONNECT_DIR.glob("*.yaml"))

EXPECTED_GPU_FILES = {
    "nvidia-geforce.yaml",
    "nvidia-workstation.yaml",
    "nvidia-datacenter.yaml",
    "amd.yaml",
    "intel.yaml",
    "apple.yaml",
    "custom.yaml",
}


def _load(path: Path) -> dict:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _validator(schema_path: Path) -> Draft202012Validator:
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _errors(validator: Draft202012Validator, data: dict, path: Path) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}: {err.json_path}: {err.message}"
        for err in sorted(validator.iter_errors(data), key=lambda e: e.json_path)
    ]


@pytest.fixture(scope="module")
def gpus() -> dict[str, dict]:
    """All GPUs from every file, keyed by gpu_key (duplicates checked separately)."""
    merged: dict[str, dict] = {}
    for path in GPU_FILES:
        merged.update(_load(path)["gpus"])
    return merged


@pytest.fixture(scope="module")
def interconnects() -> dict[str, dict]:
    merged: dict[str, dict] = {}
    for path in INTERCONNECT_FILES:
        merged.update(_load(path)["interconnects"])
    return merged


# ----------------------------------------------------------------------------- structure


def test_expected_gpu_files_exist():
    assert {p.name for p in GPU_FILES} >= EXPECTED_GPU_FILES


@pytest.mark.parametrize("path", GPU_FILES, ids=lambda p: p.name)
def test_gpu_file_matches_schema(path: Path):
    errors = _errors(_validator(GPU_SCHEMA), _load(path), path)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path", INTERCONNECT_FILES, ids=lambda p: p.name)
def test_interconnect_file_matches_schema(path: Path):
    errors = _errors(_validator(INTERCONNECT_SCHEMA), _load(path), path)
    assert not errors, "\n".join(errors)


def test_schema_rejects_a_bad_entry():
    """The validator really checks entries: a string memory and an unknown field both fail."""
    bad = {"gpus": {"x": {**_load(GPU_DIR / "nvidia-geforce.yaml")["gpus"]["rtx_4090"]}}}
    bad["gpus"]["x"]["memory_gib"] = "twenty-four"
    bad["gpus"]["x"]["vram"] = 24
    messages = [e.message for e in _validator(GPU_SCHEMA).iter_errors(bad)]
    assert any("is not of type 'number'" in m for m in messages)
    assert any("Additional properties" in m for m in messages)


def test_gpu_keys_unique_across_files():
    seen: dict[str, str] = {}
    duplicates = []
    for path in GPU_FILES:
        for key in _load(path)["gpus"]:
            if key in seen:
                duplicates.append(f"{key}: {seen[key]} and {path.name}")
            seen[key] = path.name
    assert not duplicates, duplicates


def test_interconnect_keys_unique_across_files():
    seen: dict[str, str] = {}
    duplicates = []
    for path in INTERCONNECT_FILES:
        for key in _load(path)["interconnects"]:
            if key in seen:
                duplicates.append(f"{key}: {seen[key]} and {path.name}")
            seen[key] = path.name
    assert not duplicates, duplicates


def test_at_least_80_gpus(gpus):
    assert len(gpus) >= 80


def test_links_resolve(gpus, interconnects):
    missing = [
        f"{key}.{field} = {gpu[field]!r}"
        for key, gpu in gpus.items()
        for field in ("default_interconnect", "host_link")
        if field in gpu and gpu[field] not in interconnects
    ]
    assert not missing, missing


def test_seed_interconnect_keys_present(interconnects):
    # The seed documents pcie4 and nvlink_gen4; offloading needs nvme and host RAM paths.
    for key in ("pcie3", "pcie4", "pcie5", "nvlink_gen2", "nvlink_gen3", "nvlink_gen4",
                "nvlink_gen5", "nvswitch", "infiniband_hdr", "infiniband_ndr",
                "ethernet_100g", "ethernet_400g", "infinity_fabric", "nvme", "cpu_ram"):
        assert key in interconnects, key


def test_seed_gpus_and_custom_keys_present(gpus):
    for key in ("rtx_4090", "h100_80", "custom_discrete", "custom_apple_silicon"):
        assert key in gpus, key
    assert gpus["custom_discrete"]["custom"] is True
    assert gpus["custom_apple_silicon"]["custom"] is True
    assert not any(g.get("custom") for k, g in gpus.items() if not k.startswith("custom_"))


def test_calibration_gpus_present(gpus):
    # GPUs named in ../shared/calibration must resolve to a catalog key.
    for key in ("rtx_3070", "rtx_3080", "rtx_3080_ti", "rtx_3090", "rtx_4070_ti", "rtx_4080",
                "rtx_4090", "rtx_a6000", "h100_80", "h200", "apple_m1_8", "apple_m1_max_64",
                "apple_m2_ultra_192", "apple_m3_max_64"):
        assert key in gpus, key


# ----------------------------------------------------------------------------- hand-known facts


def test_rtx_4090_facts(gpus):
    g = gpus["rtx_4090"]
    assert g["memory_gib"] == 24
    # 384-bit bus x 21 Gbps / 8 = 1008 GB/s
    assert g["memory_bandwidth_gb_s"] == 384 * 21 / 8 == 1008
    # Dense FP16 w/ FP32 accumulate: 128 SMs x 2.52 GHz x 512 FLOP/clk = 165.2 TFLOPS
    assert g["bf16_tflops"] == pytest.approx(128 * 2.52e9 * 512 / 1e12, abs=0.1)
    assert g["fp8_tflops"] == pytest.approx(330.3)
    assert g["default_interconnect"] == "pcie4"


def test_h100_sxm_facts(gpus):
    g = gpus["h100_80"]
    assert g["memory_gib"] == 80
    assert g["memory_bandwidth_gb_s"] == 3350
    # Datasheet BF16 1979 TFLOPS is with 2:4 sparsity; dense is half.
    assert g["bf16_tflops"] == pytest.approx(1979 / 2, abs=1)
    assert g["default_interconnect"] == "nvlink_gen4"


def test_other_datasheet_facts(gpus):
    assert gpus["h200"]["memory_gib"] == 141
    assert gpus["h200"]["memory_bandwidth_gb_s"] == 4800
    assert gpus["a100_80"]["memory_bandwidth_gb_s"] == 2039
    assert gpus["a100_80_pcie"]["memory_bandwidth_gb_s"] == 1935
    assert gpus["a100_40"]["bf16_tflops"] == 312
    assert gpus["rtx_3090"]["memory_bandwidth_gb_s"] == 936
    assert gpus["rtx_5090"]["memory_gib"] == 32
    assert gpus["rtx_5090"]["memory_bandwidth_gb_s"] == 512 * 28 / 8
    assert gpus["mi300x"]["memory_gib"] == 192
    assert gpus["b200"]["default_interconnect"] == "nvlink_gen5"
    # L40S datasheet prints BF16 "362.05 | 733*": the dense figure, not sparse/2.
    assert gpus["l40s"]["bf16_tflops"] == pytest.approx(362.05)


def test_interconnect_facts(interconnects):
    # PCIe 4.0 x16: 16 GT/s x 16 lanes x 128/130 / 8 bits = 31.5 GB/s per direction
    assert interconnects["pcie4"]["bandwidth_gb_s"] == pytest.approx(16 * 16 * 128 / 130 / 8, abs=0.05)
    assert interconnects["pcie3"]["bandwidth_gb_s"] == pytest.approx(15.75, abs=0.05)
    assert interconnects["pcie5"]["bandwidth_gb_s"] == pytest.approx(63.0, abs=0.05)
    # H100 NVLink: 900 GB/s bidirectional = 450 per direction
    assert interconnects["nvlink_gen4"]["bandwidth_gb_s"] == 900 / 2
    assert interconnects["nvlink_gen3"]["bandwidth_gb_s"] == 600 / 2
    assert interconnects["nvlink_gen5"]["bandwidth_gb_s"] == 1800 / 2
    assert interconnects["infiniband_ndr"]["bandwidth_gb_s"] == 400 / 8
    assert interconnects["nvme"]["kind"] == "storage"


# ----------------------------------------------------------------------------- family rules

PRE_ADA_NVIDIA = {"pascal", "volta", "turing", "ampere"}
PRE_AMPERE_NVIDIA = {"pascal", "volta", "turing"}


def test_fp8_null_before_ada(gpus):
    offenders = [k for k, g in gpus.items()
                 if g["vendor"] == "nvidia" and g["architecture"] in PRE_ADA_NVIDIA
                 and g.get("fp8_tflops") is not None]
    assert not offenders, offenders


def test_fp8_present_from_ada(gpus):
    offenders = [k for k, g in gpus.items()
                 if g["vendor"] == "nvidia" and g["architecture"] in {"ada", "hopper", "blackwell"}
                 and not g.get("fp8_tflops")]
    assert not offenders, offenders


def test_bf16_null_before_ampere(gpus):
    offenders = [k for k, g in gpus.items()
                 if g["vendor"] == "nvidia" and g["architecture"] in PRE_AMPERE_NVIDIA
                 and g["bf16_tflops"] is not None]
    assert not offenders, offenders


def test_fp4_only_on_blackwell_and_cdna4(gpus):
    offenders = [k for k, g in gpus.items()
                 if g.get("fp4_tflops") is not None
                 and g["architecture"] not in {"blackwell", "cdna4"}]
    assert not offenders, offenders


def test_flash_attention_from_ampere_on_nvidia(gpus):
    for key, g in gpus.items():
        if g["vendor"] != "nvidia":
            continue
        expected = g["architecture"] not in PRE_AMPERE_NVIDIA
        assert g["flash_attention"] is expected, key


def test_geforce_uses_fp32_accumulate_half_rate(gpus):
    """GeForce Ampere/Ada/Blackwell: FP16 w/ FP32 accumulate dense = 2 x FP32 shader rate."""
    for key, g in gpus.items():
        if g["category"] == "consumer" and g["vendor"] == "nvidia" and \
                g["architecture"] in {"ampere", "ada", "blackwell"}:
            assert g["fp16_tflops"] == pytest.approx(2 * g["fp32_tflops"], rel=0.01), key


def test_nvidia_has_compute_capability(gpus):
    missing = [k for k, g in gpus.items() if g["vendor"] == "nvidia" and "compute_capability" not in g]
    assert not missing, missing


def test_unified_memory_rule(gpus):
    """memory_gib = unified_memory_gib x gpu_memory_fraction wherever memory is unified."""
    for key, g in gpus.items():
        if "unified_memory_gib" in g:
            assert "gpu_memory_fraction" in g, key
            assert g["memory_gib"] == pytest.approx(
                g["unified_memory_gib"] * g["gpu_memory_fraction"], abs=0.02), key


def test_apple_wired_limit_fractions(gpus):
    # macOS default: 2/3 of RAM up to 36 GB, 3/4 above (M1 8 GB -> 5.33 GiB, M2 Ultra 192 -> 144).
    apple = {k: g for k, g in gpus.items() if g["category"] == "apple"}
    assert len(apple) >= 15
    for key, g in apple.items():
        expected = 2 / 3 if g["unified_memory_gib"] <= 36 else 3 / 4
        assert g["gpu_memory_fraction"] == pytest.approx(expected, abs=1e-3), key
    assert gpus["apple_m1_8"]["memory_gib"] == pytest.approx(8 * 2 / 3, abs=0.01)
    assert gpus["apple_m2_ultra_192"]["memory_gib"] == 144
    assert gpus["apple_m1_max_64"]["memory_gib"] == 48


def test_dense_tensor_at_least_fp32(gpus):
    """Tensor/matrix rates are never below the plain FP32 rate (Pascal's 1/64-rate FP16 aside)."""
    for key, g in gpus.items():
        if g["architecture"] in {"pascal"}:
            continue
        for field in ("fp16_tflops", "bf16_tflops"):
            if g.get(field) is not None:
                assert g[field] >= g["fp32_tflops"] * 0.99, (key, field)


# ----------------------------------------------------------------------------- issue 15 additions

NEW_GPUS = ("rtx_5060", "rtx_5060_ti_8", "rtx_5050", "rtx_pro_6000_maxq", "rtx_pro_6000_server", "rtx_pro_5000",
            "rtx_pro_4500", "rtx_pro_4000", "h200_nvl", "h800", "gh200_144", "gb300", "jetson_thor", "mi350x",
            "mi300a", "rx_9070", "rx_9070_xt", "radeon_ai_pro_r9700", "ryzen_ai_max_395", "arc_b580", "arc_b570",
            "arc_pro_b60", "apple_m5_32")


def test_new_gpus_present(gpus):
    assert set(NEW_GPUS) <= set(gpus)


def test_new_gpus_reproduce_the_vendors_headline_figures(gpus):
    # GeForce Blackwell: "AI TOPS" = FP4 sparse = 2 x dense FP4; bus width x data rate / 8 = bandwidth
    assert 2 * gpus["rtx_5060"]["fp4_tflops"] == pytest.approx(614, abs=1)
    assert gpus["rtx_5060"]["memory_bandwidth_gb_s"] == 128 * 28 / 8
    assert 2 * gpus["rtx_5050"]["fp4_tflops"] == pytest.approx(421, abs=1)
    assert gpus["rtx_5050"]["memory_bandwidth_gb_s"] == 128 * 20 / 8
    assert gpus["rtx_5060_ti_8"]["memory_gib"] == 8 and 2 * gpus["rtx_5060_ti_8"]["fp4_tflops"] == pytest.approx(759, abs=1)
    # RTX PRO Blackwell: AI TOPS (FP4 sparse) 3511 / 2064 / 1687 / 1247
    for key, tops in (("rtx_pro_6000_maxq", 3511), ("rtx_pro_5000", 2064), ("rtx_pro_4500", 1687), ("rtx_pro_4000", 1247)):
        assert 2 * gpus[key]["fp4_tflops"] == pytest.approx(tops, rel=0.002), key
        assert gpus[key]["fp16_tflops"] == pytest.approx(gpus[key]["fp4_tflops"] / 4, rel=0.002), key
    # Hopper: H200 NVL dense = sparse / 2 (1671*, 3341*); H800 keeps H100 SXM compute
    assert gpus["h200_nvl"]["bf16_tflops"] == pytest.approx(1671 / 2, abs=0.5)
    assert gpus["h800"]["bf16_tflops"] == gpus["h100_80"]["bf16_tflops"]
    assert gpus["gh200_144"]["memory_gib"] == 144 and gpus["gh200_144"]["memory_bandwidth_gb_s"] == 4900
    # GB300 NVL72: 1080 PF FP4 dense / 72 GPUs = 15 PF each
    assert gpus["gb300"]["fp4_tflops"] == pytest.approx(1080_000 / 72)
    assert gpus["jetson_thor"]["fp4_tflops"] == 2070 / 2
    # AMD: MI350X 256 CUs x 2.2 GHz x 4096 FP16 FLOP/clk; RDNA 4 INT4 sparse = 4 x INT8 dense
    assert gpus["mi350x"]["fp16_tflops"] == pytest.approx(256 * 2.2 * 4096 / 1000, abs=0.1)
    assert 4 * gpus["rx_9070_xt"]["int8_tops"] == pytest.approx(1557, abs=1)
    assert 4 * gpus["rx_9070"]["int8_tops"] == pytest.approx(1156, abs=1)
    assert 4 * gpus["radeon_ai_pro_r9700"]["int8_tops"] == pytest.approx(1531, abs=1)
    # Intel Arc Pro B60: 197 INT8 TOPS as Intel prints it
    assert gpus["arc_pro_b60"]["int8_tops"] == 197


def test_unified_memory_devices(gpus):
    assert gpus["ryzen_ai_max_395"]["memory_gib"] == 96 and gpus["ryzen_ai_max_395"]["unified_memory_gib"] == 128
    assert gpus["mi300a"]["host_link"] == gpus["jetson_thor"]["host_link"] == "unified_memory"
    assert gpus["apple_m5_32"]["memory_gib"] == pytest.approx(32 * 2 / 3, abs=0.01)


@pytest.mark.parametrize("key", NEW_GPUS)
def test_new_gpus_run_an_estimate(key):
    import vramplan

    out = vramplan.estimate_inference({"gpu_key": key, "llm_key": "llama-3.1-8b-instruct", "quantization": "q4_k_m"})
    assert out["model_weights_gb"] == 4.58 and out["estimated_throughput_tps"] > 0
