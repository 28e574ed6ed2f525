"""An example third-party vramplan plugin.

It adds one GPU, its hardware class and one interconnect in code (``register_gpus``,
``register_hardware_classes``, ``register_interconnects``) and one quantization format from a data
file (``register_catalog_dirs``), to show both ways. vramplan
finds it through the ``vramplan`` entry point in this package's pyproject.toml; nothing in
vramplan itself changes.
"""

from pathlib import Path

from vramplan import hookimpl

__version__ = "1.2.0"


@hookimpl
def register_gpus(register):
    register("acme_x1", {
        "label": "ACME X1 48GB",
        "vendor": "other",
        "category": "datacenter",
        "architecture": "acme-1",
        "memory_gib": 48,
        "memory_type": "HBM3",
        "memory_bandwidth_gb_s": 2000,
        "fp32_tflops": 50,
        "fp16_tflops": 400,
        "bf16_tflops": 400,
        "fp8_tflops": 800,
        "tdp_w": 500,
        "flash_attention": True,
        "default_interconnect": "acme_link",
        "host_link": "pcie5",
        "source": "https://example.com/acme-x1-datasheet (fictional example)",
    })


@hookimpl
def register_hardware_classes(register):
    # Runtime profiles have no *_acme efficiencies; the fallback says whose to use, and
    # calibrated: false makes every estimate on it say the overheads are approximate.
    register("acme", {
        "label": "ACME accelerators",
        "match": [{"vendor": "other", "architecture": "acme-1"}],
        "backend": "ACME RT",
        "calibrated": False,
        "fallback": "nvidia_datacenter",
        "source": "https://example.com/acme-rt (fictional example)",
    })


@hookimpl
def register_interconnects(register):
    register("acme_link", {
        "label": "ACME Link",
        "kind": "other",
        "bandwidth_gb_s": 200,
        "latency_us": 2,
        "source": "https://example.com/acme-link (fictional example)",
    })


@hookimpl
def register_catalog_dirs():
    return [Path(__file__).parent / "catalogs"]
