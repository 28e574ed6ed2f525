"""Hypothesis strategies shared by the evaluator tests: random formula expressions over the whole
grammar, and requests drawn from the request schemas themselves, extremes included.

Deterministic by default, as tests/test_properties.py: explore with HYPOTHESIS_EXPLORE=N.
"""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from vramplan.catalog import get_catalog
from vramplan.datafiles import load_schema

_EXPLORE = int(os.environ.get("HYPOTHESIS_EXPLORE", "0"))


def checks(n: int) -> settings:
    return settings(max_examples=_EXPLORE or n, deadline=None, derandomize=not _EXPLORE,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])


# -- expressions ---------------------------------------------------------------------------------

NAMES = ("a", "b", "c")
LITERALS = st.one_of(st.sampled_from(["0", "1", "2", "3", "0.5", "1e18", "1000000000000000000", "1e-300", "7"]),
                     st.integers(0, 10**6).map(str), st.floats(0, 1e6, allow_nan=False).map(repr))
EXPONENTS = st.sampled_from(["2", "3", "4", "0.5", "1.5", "-1", "-2", "0"])
UNARY = ("-", "+", "not ")
BINARY = ("+", "-", "*", "/", "//", "%")
COMPARE = ("<", "<=", ">", ">=", "==", "!=")


def _grow(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(children, children)
    return st.one_of(
        st.tuples(pair, st.sampled_from(BINARY)).map(lambda t: f"({t[0][0]} {t[1]} {t[0][1]})"),
        st.tuples(children, EXPONENTS).map(lambda t: f"({t[0]}) ** {t[1]}"),
        st.tuples(st.sampled_from(UNARY), children).map(lambda t: f"({t[0]}{t[1]})"),
        st.tuples(children, st.lists(st.tuples(st.sampled_from(COMPARE), children), min_size=1, max_size=2)).map(
            lambda t: "(" + t[0] + "".join(f" {op} {x}" for op, x in t[1]) + ")"),
        st.tuples(st.sampled_from(("and", "or")), st.lists(children, min_size=2, max_size=3)).map(
            lambda t: "(" + f" {t[0]} ".join(t[1]) + ")"),
        st.tuples(children, children, children).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        st.tuples(st.sampled_from(("min", "max")), st.lists(children, min_size=2, max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(st.sampled_from(("abs", "ceil", "floor", "sqrt", "log2", "exp", "log")), children).map(
            lambda t: f"{t[0]}({t[1]})"),
        pair.map(lambda t: f"log({t[0]}, {t[1]})"),
        pair.map(lambda t: f"round_up({t[0]}, {t[1]})"),
        st.tuples(children, children, children).map(lambda t: f"clamp({t[0]}, {t[1]}, {t[2]})"),
        st.tuples(children, children, children).map(lambda t: f"betainc({t[0]}, {t[1]}, {t[2]})"),
        st.lists(children, min_size=2, max_size=3).map(lambda t: f"argmin({', '.join(t)})"),
        st.tuples(children, st.lists(children, min_size=1, max_size=3)).map(
            lambda t: f"choose({t[0]}, {', '.join(t[1])})"),
        st.tuples(st.lists(children, min_size=2, max_size=3), children).map(
            lambda t: f"choose(argmin({', '.join(t[0])}), {', '.join(t[0])})"),
    )


expressions = st.recursive(st.one_of(st.sampled_from(NAMES), LITERALS), _grow, max_leaves=12)

#: Input values: what formulas meet (scenario numbers, other formulas' values): ints and floats,
#: zero and negatives, the huge and the tiny.
input_values = st.one_of(
    st.integers(-10**6, 10**6),
    st.sampled_from([0, 1, -1, 2, 0.0, -0.0, 0.5, 1e300, -1e300, 1e-300, 2**53 + 1, 10**18, 1e154, 4_000_001]),
    st.floats(allow_nan=False, allow_infinity=False),
)


# -- requests from the schemas -------------------------------------------------------------------

CAT = get_catalog()
GPUS = sorted(e.key for e in CAT.gpus if not e.data.get("custom"))
MODELS = sorted(e.key for e in CAT.models)
WEIGHT_FORMATS = sorted(e.key for e in CAT.quantization)
KV_FORMATS = sorted(e.key for e in CAT.quantization if "kv_cache_bits" in e.data)
RUNTIMES = sorted(e.key for e in CAT.runtimes)
INTERCONNECTS = sorted(e.key for e in CAT.interconnects)
OPTIMIZERS = sorted(e.key for e in CAT.optimizers)
KEYS = {"gpu_key": GPUS, "llm_key": MODELS, "quantization": WEIGHT_FORMATS, "kv_cache_quantization": KV_FORMATS,
        "runtime": RUNTIMES, "interconnect_type": INTERCONNECTS, "optimizer": OPTIMIZERS}
#: Fields left out: a custom model or weights file is a different input kind; trace is the caller's.
SKIP = {"custom_model", "custom_weights_bytes", "trace", "runtime_settings"}
#: Stand-in ceiling for a schema integer without a maximum.
NO_MAXIMUM = 2**62


def _number(spec: dict) -> st.SearchStrategy:
    lo = spec.get("minimum", 0)
    hi = spec.get("maximum", NO_MAXIMUM)
    if spec.get("type") == "integer":
        return st.one_of(st.sampled_from([lo, hi]), st.integers(lo, min(hi, 4096)), st.integers(lo, hi))
    return st.one_of(st.sampled_from([lo, hi]), st.floats(lo, hi, allow_nan=False))


def _field(name: str, spec: dict) -> st.SearchStrategy:
    if name in KEYS:
        return st.sampled_from(KEYS[name])
    if "enum" in spec:
        return st.sampled_from(spec["enum"])
    if "oneOf" in spec:  # lora_target_modules
        items = spec["oneOf"][1]["items"]["enum"]
        return st.one_of(st.just(spec["oneOf"][0]["const"]), st.lists(st.sampled_from(items), min_size=1,
                                                                       max_size=len(items), unique=True))
    kind = spec.get("type")
    if kind == "boolean":
        return st.booleans()
    if kind in ("integer", "number"):
        return _number(spec)
    if kind == "object" and "properties" in spec:
        return st.fixed_dictionaries({}, optional={k: _field(k, v) for k, v in spec["properties"].items()})
    raise ValueError(f"no strategy for request field {name}: {spec}")


def _runtime_settings(runtime: str) -> st.SearchStrategy:
    constants = sorted(CAT.runtimes.get(runtime).data["constants"])
    value = st.one_of(st.sampled_from([0, 1, 1e308, 2**62]), st.integers(0, 10**6), st.floats(0, 1e6))
    return st.dictionaries(st.sampled_from(constants), value, max_size=3)


def _consistent(body: dict, coin: bool) -> dict:
    """Mostly requests that can run: one way to say how much to offload, a micro-batch within the batch."""
    if "num_offload_layers" in body and "percentage_offload" in body:
        del body["percentage_offload" if coin else "num_offload_layers"]
    if body.get("micro_batch_size", 0) > body.get("batch_size", 1) and coin:
        body["micro_batch_size"] = body.get("batch_size", 1)
    if "custom_vram" in body and not coin:
        del body["custom_vram"]
    return body


def requests(workload: str) -> st.SearchStrategy[dict]:
    """Requests over every field of the workload's schema: any value the schema allows, extremes often."""
    schema = load_schema(f"{workload}-request")
    required = {k: _field(k, schema["properties"][k]) for k in schema.get("required", [])}
    optional = {k: _field(k, v) for k, v in schema["properties"].items() if k not in required and k not in SKIP}

    @st.composite
    def build(draw):
        body = draw(st.fixed_dictionaries(required, optional=optional))
        if draw(st.booleans()) and "runtime" in body:
            body["runtime_settings"] = draw(_runtime_settings(body["runtime"]))
        return _consistent(body, draw(st.booleans()))

    return build()


def extreme_requests(workload: str, n: int, seed: int = 17) -> list[dict]:
    """Requests at the schema's corners: every numeric field at its minimum or maximum, fixed seed."""
    schema = load_schema(f"{workload}-request")["properties"]
    rng = random.Random(seed)
    out = []
    for i in range(n):
        body = {"gpu_key": rng.choice(GPUS), "llm_key": rng.choice(MODELS)}
        for name, spec in schema.items():
            if name in SKIP or name in body or spec.get("type") not in ("integer", "number"):
                continue
            body[name] = spec.get("maximum", NO_MAXIMUM) if rng.random() < 0.5 else spec.get("minimum", 0)
        out.append(_consistent(body, rng.random() < 0.5))
    return out
