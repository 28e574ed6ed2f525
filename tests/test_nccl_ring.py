"""NCCL's own cost lines for ring collectives: the interconnect catalog's nccl_ring tables, the protocol NCCL runs,
and what a link without a table keeps.

Every number below is worked out from NCCL's sources (NVIDIA/nccl src/graph/tuning.cc: ring baseLat LL 6.6 /
LL128 14.0 / Simple 8.4 us, NVLink hwLat 0.6 / 1.9 / 3.4 us a step, LL at half the bus capped at llMaxBw, LL128 at
0.92; src/graph/topo.h: the GB/s NCCL takes an NVLink link to carry).
"""

from __future__ import annotations

import textwrap

import pytest

import vramplan
from vramplan.catalog import build_catalog, get_catalog, reset
from vramplan.scenario import nccl_ring_vars

from conftest import trace_of

# (links, GB/s a link from topo.h, llMaxBw of the GPU generation) for each NVIDIA fabric in the catalog
FABRICS = {
    "nvlink_gen2": (6, 20.0, 39.0),           # V100: SM70_NVLINK_BW, Volta
    "nvlink_gen3": (12, 20.0, 87.7),          # A100: SM80_NVLINK_BW, Ampere
    "nvlink_gen4": (18, 20.6, 141.0),         # H100 / H200: SM90_NVLINK_BW, Hopper
    "nvlink_gen4_bridge": (12, 20.6, 141.0),  # H100 NVL pair, 600 GB/s bidirectional = 12 links
    "nvlink_gen4_h800": (8, 20.6, 141.0),
    "nvlink_gen4_bridge_h200nvl": (18, 20.6, 141.0),
    "nvlink_gen5": (18, 40.1, 282.0),         # B200: SM100_NVLINK_BW, Blackwell (2 x Hopper's)
    "nvswitch": (18, 20.6, 141.0),
    "nvswitch_nvl72": (18, 40.1, 282.0),
    "nvlink_bridge_ga102": (4, 12.0, 87.7),   # RTX 3090 / A6000: SM86_NVLINK_BW
}


@pytest.mark.parametrize("key", sorted(FABRICS))
def test_each_nvidia_fabric_carries_nccls_lines(key):
    links, per_link, ll_cap = FABRICS[key]
    ring = get_catalog().interconnects.get(key).data["nccl_ring"]
    bus = links * per_link
    assert ring["simple"] == {"base_us": 8.4, "step_us": 3.4, "bus_gb_s": pytest.approx(bus)}
    assert ring["ll128"] == {"base_us": 14.0, "step_us": 1.9, "bus_gb_s": pytest.approx(0.92 * bus)}
    assert ring["ll"] == {"base_us": 6.6, "step_us": 0.6, "bus_gb_s": pytest.approx(min(ll_cap, bus / 2))}


def test_h100_numbers_by_hand():
    # 18 x 20.6 = 370.8 GB/s; LL128 0.92 x 370.8 = 341.136; LL min(141, 185.4) = 141.
    v = nccl_ring_vars(get_catalog().interconnects.get("nvlink_gen4").data)
    assert (v["ic_simple_bus_gb_s"], v["ic_ll128_bus_gb_s"], v["ic_ll_bus_gb_s"]) == pytest.approx((370.8, 341.136, 141.0))


def test_a_link_without_a_table_keeps_one_line_its_latency_a_step_and_its_bandwidth():
    pcie = get_catalog().interconnects.get("pcie4").data
    assert "nccl_ring" not in pcie
    v = nccl_ring_vars(pcie)
    for proto in ("ll", "ll128", "simple"):
        assert (v[f"ic_{proto}_base_us"], v[f"ic_{proto}_step_us"], v[f"ic_{proto}_bus_gb_s"]) == (0.0, 5.7, 31.5)


def test_tgi_decodes_one_sequence_on_ll_and_gets_faster_from_4_to_8_h100s():
    """Llama 3.1 8B (32 layers, 4096 wide: 8 KB a token) under TGI, one user. TP4: LL 6.6 + 6 x 0.6 = 10.2 us + 1.5 x
    8192 B / 141 GB/s = 87.1 ns; TP8: 6.6 + 14 x 0.6 = 15.0 us + 1.75 x 8192 / 141e9 = 101.7 ns. 64 all-reduces a step:
    0.6584 ms at TP4, 0.9665 ms at TP8 - 0.31 ms more, where the weights' read halves (about 2 GB at 3.35 TB/s x 0.85:
    ~0.7 ms less). The Simple line charged before (2 x 7 x 3.4 = 47.6 us at TP8, 20.4 at TP4) made TP8 the slower."""
    body = {"gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "quantization": "bf16", "runtime": "tgi",
            "inference_parallelism": "tensor", "input_tokens": 1000, "output_tokens": 200, "trace": True}
    t4 = trace_of(vramplan.estimate_inference({**body, "num_gpus": 4}, suggestions=False))
    t8 = trace_of(vramplan.estimate_inference({**body, "num_gpus": 8}, suggestions=False))
    assert t4["ring_proto"] == 1 and t8["ring_proto"] == 1
    assert t4["decode_tp_comm_s"] == pytest.approx(64 * (10.2e-6 + 1.5 * 8192 / 141e9), rel=1e-9)
    assert t8["decode_tp_comm_s"] == pytest.approx(64 * (15.0e-6 + 1.75 * 8192 / 141e9), rel=1e-9)
    assert t8["srv_itl_one_s"] < t4["srv_itl_one_s"]


def test_a_user_interconnect_with_a_broken_table_is_skipped_naming_the_field(tmp_path, monkeypatch):
    root = tmp_path / "catalogs"
    (root / "interconnects").mkdir(parents=True)
    (root / "interconnects" / "mine.yaml").write_text(textwrap.dedent("""\
        interconnects:
          my_link:
            label: My link
            kind: nvlink
            bandwidth_gb_s: 100
            latency_us: 2
            source: a made-up link for the test
            nccl_ring:
              ll: {base_us: 6.6, step_us: 0.6, bus_gb_s: 40}
              simple: {base_us: 8.4, step_us: 3.4, bus_gb_s: -1}
              source: not NCCL at all
        """))
    monkeypatch.setenv("VRAMPLAN_CATALOG_DIR", str(root))
    try:
        cat = build_catalog(load_entrypoints=False)
        reset(cat)
        [failure] = cat.host.failures
        assert "my_link" not in cat.interconnects
        assert "$.interconnects.my_link.nccl_ring: 'll128' is a required property" in failure.error
        assert "$.interconnects.my_link.nccl_ring.simple.bus_gb_s: -1 is less than or equal to the minimum of 0" in failure.error
    finally:
        reset()
