"""Many estimates at once (vramplan.many.estimate_many, vramplan.sweep) give what one-at-a-time
estimates give: every response to its rounding, every refusal word for word, on random requests,
random grids and the request schema's extremes."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import CAT, checks, extreme_requests, requests

import vramplan
from vramplan.datafiles import load_schema
from vramplan.errors import VramplanError
from vramplan.answer import estimate as run
from vramplan.many import estimate_many
from vramplan.planner import binding, capacity_gib, fits
from vramplan.sweep import RESULTS, Axis, Sweep, _field_of


def single(body, workload, catalog=None):
    try:
        return run(dict(body) if isinstance(body, dict) else body, workload, catalog)
    except VramplanError as exc:
        return exc


def step(x) -> float:
    """One unit in the last decimal the response rounded to (1 for an integer)."""
    if isinstance(x, int):
        return 1.0
    text = repr(float(x))
    return 10.0 ** -len(text.split(".")[1]) if "." in text and "e" not in text else 1e-9 * abs(x)


def differences(a, b, path="$"):
    """Where two responses differ beyond one rounding step (and status words only where the figures do)."""
    if isinstance(a, BaseException) or isinstance(b, BaseException):
        same = type(a) is type(b) and str(a) == str(b)
        return [] if same else [(path, str(a)[:300], str(b)[:300])]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [(path, sorted(a.keys() ^ b.keys()))]
        out = [d for k in a if k not in ("memory_status", "fits") for d in differences(a[k], b[k], f"{path}.{k}")]
        # a status word may differ only where the figure it reads sits a rounding step apart
        if a.get("memory_status") != b.get("memory_status") and a.get("actual_vram_percentage") == b.get("actual_vram_percentage"):
            out.append((f"{path}.memory_status", a["memory_status"], b["memory_status"]))
        if a.get("fits") != b.get("fits") and a.get("vram_usage") == b.get("vram_usage"):
            out.append((f"{path}.fits", a["fits"], b["fits"]))
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [(path, len(a), len(b))]
        return [d for x, y, i in zip(a, b, range(len(a))) for d in differences(x, y, f"{path}[{i}]")]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        if a == b or abs(a - b) <= max(step(a), step(b)) * 1.0001:
            return []
        return [(path, a, b)]
    return [] if a == b else [(path, a, b)]


def assert_same_as_single(bodies, workload, catalog=None):
    many = estimate_many(bodies, workload, catalog)
    assert len(many) == len(bodies)
    for body, got in zip(bodies, many):
        assert not differences(got, single(body, workload, catalog)), (body, differences(got, single(body, workload, catalog)))


def numeric_fields(workload):
    props = load_schema(f"{workload}-request")["properties"]
    return {k: v for k, v in props.items() if v.get("type") in ("integer", "number")}


@st.composite
def similar_requests(draw, workload):
    """A few requests and, for each, copies with some numbers changed: what a planner or a fit map asks."""
    fields = numeric_fields(workload)
    out = []
    for body in draw(st.lists(requests(workload), min_size=1, max_size=3)):
        out.append(body)
        for _ in range(draw(st.integers(0, 6))):
            name = draw(st.sampled_from(sorted(fields)))
            spec = fields[name]
            lo, hi = spec.get("minimum", 0), spec.get("maximum", 2**40)
            value = draw(st.integers(int(lo), int(min(hi, 2**40))) if spec["type"] == "integer" else st.floats(lo, hi))
            out.append({**body, name: value})
    return out


@pytest.mark.parametrize("workload", ["inference", "finetuning"])
def test_estimate_many_agrees_at_the_schema_extremes(workload):
    bodies = extreme_requests(workload, 16, seed=5)
    assert_same_as_single(bodies + [{**b, "num_gpus": 2} for b in bodies], workload)


@checks(30)
@given(similar_requests("inference"))
def test_estimate_many_agrees_on_random_inference_requests(bodies):
    assert_same_as_single(bodies, "inference")


@checks(30)
@given(similar_requests("finetuning"))
def test_estimate_many_agrees_on_random_finetuning_requests(bodies):
    assert_same_as_single(bodies, "finetuning")


def test_estimate_many_groups_what_it_can_and_keeps_every_kind_of_answer():
    base = {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct"}
    bodies = [
        *({**base, "seq_length": s, "batch_size": b} for s in (1024, 8192, 65536) for b in (1, 4)),  # one group
        {**base, "batch_size": 0},  # refused by the schema
        {**base, "gpu_key": "rtx_4099"},  # an unknown key, with suggestions
        {**base, "trace": True},  # a trace: estimated on its own
        {**base, "seq_length": 32768, "enable_offloading": True},  # does not fit as is: the offload search
        {**base, "inference_parallelism": "tensor", "num_gpus": 3},  # a configuration error
        "not an object",
    ]
    many = estimate_many(bodies, "inference")
    assert isinstance(many[6], vramplan.RequestError) and "batch_size" in str(many[6])
    assert isinstance(many[7], vramplan.RequestError) and "rtx_4090" in str(many[7].suggestions)
    assert "trace" in many[8]
    assert any("layers offloaded" in a for a in many[9]["assumptions"])
    assert many[10]["memory_status"] == "error"
    assert isinstance(many[11], vramplan.RequestError)
    for body, got in zip(bodies, many):
        assert not differences(got, single(body, "inference"))


def test_estimate_many_uses_the_catalog_it_is_given(with_plugins):
    class Plugin:
        @vramplan.hookimpl
        def register_gpus(self, register):
            register("tiny_gpu", {"label": "Tiny GPU 6GB", "vendor": "other", "category": "datacenter", "architecture": "test",
                                  "memory_gib": 6, "memory_type": "GDDR", "memory_bandwidth_gb_s": 300, "fp32_tflops": 5,
                                  "fp16_tflops": 20, "bf16_tflops": 20, "tdp_w": 100, "flash_attention": True,
                                  "default_interconnect": "pcie4", "source": "https://example.com/tiny-gpu"})

    with with_plugins(Plugin()) as cat:
        bodies = [{"gpu_key": "tiny_gpu", "llm_key": "llama-3-8b-instruct", "seq_length": s} for s in (1024, 4096)]
        many = estimate_many(bodies, "inference", cat)
        assert [m["memory_status"] for m in many] == ["insufficient", "insufficient"]  # 8B in fp16 is ~15 GiB
        for body, got in zip(bodies, many):
            assert not differences(got, single(body, "inference", cat))


# -- sweeps ---------------------------------------------------------------------------------------

STRUCTURAL = {
    "inference": {"quantization": sorted({"fp16", "q4_k_m", "awq", "fp8", "int4"} & set(e.key for e in CAT.quantization)),
                  "runtime": sorted(e.key for e in CAT.runtimes), "inference_parallelism": ["pipeline", "tensor"],
                  "enable_offloading": [True, False], "optimization_config.flash_attention": [True, False]},
    "finetuning": {"finetuning_method": ["full", "lora", "qlora"], "optimizer": ["adamw", "sgd", "paged_adamw_8bit"],
                   "optimization_config.gradient_checkpointing": [True, False]},
}


@st.composite
def grids(draw, workload):
    """A base request and up to three number axes (any schema value, out-of-range ones too) and one other axis."""
    base = draw(requests(workload))
    fields = numeric_fields(workload)
    axes = []
    for name in draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=3, unique=True)):
        spec = fields[name]
        lo, hi = spec.get("minimum", 0), spec.get("maximum", 2**40)
        if spec["type"] == "integer":
            value = st.one_of(st.sampled_from([lo, hi, lo - 1]), st.integers(int(lo), int(min(hi, 2**20))))
        else:
            value = st.one_of(st.sampled_from([lo, hi]), st.floats(lo, hi))
        axes.append(Axis(name, tuple(draw(st.lists(value, min_size=1, max_size=4, unique=True)))))
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(STRUCTURAL[workload])))
        axes.append(Axis(name, tuple(draw(st.lists(st.sampled_from(STRUCTURAL[workload][name]), min_size=1,
                                                   max_size=3, unique=True)))))
    return base, axes


def assert_rows_match(base, workload, axes, chunk=7, catalog=None):
    grid = Sweep(base, workload, axes, catalog, chunk)
    out = [r for c in grid.chunks() for r in c.records()]
    assert len(out) == grid.total
    for row in out:
        body = dict(grid.base)
        for a in grid.axes:
            head, _, rest = a.field.partition(".")
            body = {**body, head: {**body.get(head, {}), rest: row[a.field]}} if rest else {**body, head: row[a.field]}
        expected = single(body, workload, catalog)
        if isinstance(expected, VramplanError):
            assert row["error"] == str(expected) and row["vram_usage"] is None, (body, row)
            continue
        want = {name: _field_of(expected, name) for name in RESULTS[workload]}
        want["capacity_gib"] = row["capacity_gib"]
        want["fits"] = fits(expected, row["capacity_gib"])
        want["binding"] = binding(expected, row["capacity_gib"])
        got = {name: row[name] for name in want}
        assert not differences(got, want), (body, differences(got, want))
        if expected["memory_status"] == "error":
            assert row["error"] == "; ".join(w.removeprefix("configuration error: ") for w in expected["warnings"]
                                             if w.startswith("configuration error: "))
        else:
            assert row["error"] == ""
        assert row["capacity_gib"] == capacity_gib(body, catalog or CAT)


@checks(25)
@given(grids("inference"))
def test_sweep_rows_agree_with_single_estimates_inference(grid):
    assert_rows_match(*grid[:1], "inference", grid[1])


@checks(25)
@given(grids("finetuning"))
def test_sweep_rows_agree_with_single_estimates_finetuning(grid):
    assert_rows_match(*grid[:1], "finetuning", grid[1])


@pytest.mark.parametrize("workload", ["inference", "finetuning"])
def test_sweep_rows_agree_at_the_schema_extremes(workload):
    fields = numeric_fields(workload)
    for base in extreme_requests(workload, 4, seed=9):
        axes = [Axis(name, (fields[name].get("minimum", 0), fields[name].get("maximum", 2**62)))
                for name in ("seq_length", "batch_size", "num_gpus")]
        assert_rows_match(base, workload, axes, chunk=5)


def test_a_sweep_with_a_plugin_formula_refuses_the_rows_a_single_estimate_refuses(tmp_path, with_plugins):
    folder = tmp_path / "formulas"
    folder.mkdir()
    (folder / "odd.yaml").write_text(textwrap.dedent("""
        id: odd
        kind: helper
        description: refuses where batch divides 8
        formulas:
          - id: tftt_ms
            description: refuses where batch divides 8
            inputs: [batch]
            expr: 1 / (batch % 8) + 10
            unit: ms
        cases:
          - formula: tftt_ms
            inputs: {batch: 9}
            expected: 11
    """))

    class Plugin:
        @vramplan.hookimpl
        def register_formula_dirs(self):
            return [str(folder)]

    with with_plugins(Plugin()) as cat:
        assert_rows_match({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct"}, "inference",
                          [Axis("batch_size", (1, 8, 9, 16, 17)), Axis("seq_length", (1024, 2048))], catalog=cat)
        bodies = [{"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "batch_size": b} for b in (7, 8, 9)]
        many = estimate_many(bodies, "inference", cat)
        assert isinstance(many[1], vramplan.FormulaError) and "division by zero" in str(many[1])
        assert many[0]["tftt"] == round(1 / 7 + 10, 1) and many[2]["tftt"] == 11.0


def test_serving_columns_follow_the_response_past_capacity_and_with_a_price():
    base = {"gpu_key": "h100_80", "llm_key": "llama-3.1-8b-instruct", "runtime": "vllm", "input_tokens": 2000,
            "output_tokens": 500, "gpu_hour_cost": 2.5}
    axes = [Axis("request_rate", (0.5, 5.0, 5000.0)), Axis("num_gpus", (1, 2))]
    assert_rows_match(base, "inference", axes)
    grid = Sweep(base, "inference", axes)
    out = [r for c in grid.chunks() for r in c.records()]
    # 5,000 requests/s of 2,500 tokens is far past what one H100 sustains: no latency, a warning in the
    # response; 0.5 requests/s is well within it.
    slow, fast = out[0], out[4]
    assert fast["serving.ttft_ms"] is None and fast["serving.queued_requests"] is None
    assert slow["serving.ttft_ms"] > 0 and slow["serving.load"] == "open_loop"
    assert slow["serving.cost_per_hour"] == 2.5 and out[1]["serving.cost_per_hour"] == 5.0  # 2 GPUs x 2.50


def test_request_numbers_go_through_the_scenario_as_arrays():
    """Rows that differ only in numbers share one resolve and scenario, each number an array of the rows'
    values: nothing on the way may need one value or update the array in place (which would send the
    group row by row - the same answers at a hundred times the cost)."""
    import numpy as np

    from vramplan.catalog import get_catalog
    from vramplan.many import group_scenario, is_number, swept
    from vramplan.request import validate

    base = {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m"}
    reqs = [validate({**base, "seq_length": s, "batch_size": b, "concurrent_users": u}, "inference")
            for s, b, u in ((512, 1, 1), (2048, 4, 2), (8192, 2, 8))]
    req = {k: (swept([r[k] for r in reqs]) if is_number(v) else v) for k, v in reqs[0].items()}
    _, s = group_scenario(get_catalog(), req, "inference")
    rows = {k: s[k].view(np.ndarray).tolist() for k in ("seq", "seqs")}
    assert rows == {"seq": [512, 2048, 8192], "seqs": [1, 8, 16]}  # seqs = batch x users: 1x1, 4x2, 2x8
