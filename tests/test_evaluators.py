"""One evaluation semantics: the compiled closures (the default) and simpleeval give the same values
and the same refusals, on random expressions over the whole grammar and on whole requests, the
request schema's extremes included."""

from __future__ import annotations

import ast
import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import checks, expressions, extreme_requests, input_values, requests

import vramplan
from vramplan.catalog import get_catalog
from vramplan.errors import FormulaError, RequestError
from vramplan.formulaset import FormulaSet, evaluator_name, formula_file_from_data

CAT = get_catalog()
REQUESTS = [
    ("inference", {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m"}),
    ("inference", {"gpu_key": "h100_80", "llm_key": "mixtral-8x7b-instruct", "num_gpus": 4, "inference_parallelism": "tensor",
                   "concurrent_users": 16, "runtime": "vllm", "enable_prefix_caching": True, "shared_prefix_ratio": 0.3}),
    ("inference", {"gpu_key": "rtx_3090", "llm_key": "gemma-2-9b-it", "enable_offloading": True, "num_offload_layers": 10,
                   "optimization_config": {"flash_attention": False}, "runtime": "transformers"}),
    ("finetuning", {"gpu_key": "a100_80", "llm_key": "llama-3.1-70b-instruct", "finetuning_method": "qlora",
                    "optimization_config": {"gradient_checkpointing": True}}),
    ("finetuning", {"gpu_key": "h100_80", "llm_key": "qwen2.5-7b-instruct", "finetuning_method": "full", "num_gpus": 8,
                    "batch_size": 64, "optimizer": "adamw_8bit", "optimization_config": {"zero_stage": 3}}),
]


def outcome(fn, body):
    """The response, or the refusal's type and message: what a caller sees."""
    try:
        return fn(dict(body))
    except (FormulaError, RequestError) as exc:
        return (type(exc).__name__, str(exc))


def same_values(a, b):
    """Equal, and of the same Python type (1 and 1.0 differ in a trace)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_values(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same_values(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def max_body(workload: str) -> dict:
    """Every numeric field of the request schema at its maximum (2**62 where it has none)."""
    from strategies import NO_MAXIMUM, SKIP
    from vramplan.datafiles import load_schema

    body = {"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct"}
    for name, spec in load_schema(f"{workload}-request")["properties"].items():
        if name not in SKIP and spec.get("type") in ("integer", "number"):
            body[name] = spec.get("maximum", NO_MAXIMUM)
    body.pop("percentage_offload", None)  # one way to say how much to offload
    for name in ("input_tokens", "output_tokens", "request_rate"):  # seq_length and concurrent_users set the load
        body.pop(name, None)
    return body


def three_ways(workload, body, monkeypatch):
    """The default hot path, the compiled closures with a trace, and simpleeval with a trace."""
    fn = vramplan.estimate_inference if workload == "inference" else vramplan.estimate_finetuning
    monkeypatch.delenv("VRAMPLAN_EVALUATOR", raising=False)
    fast = outcome(fn, body)
    compiled = outcome(fn, {**body, "trace": True})
    monkeypatch.setenv("VRAMPLAN_EVALUATOR", "simpleeval")
    reference = outcome(fn, {**body, "trace": True})
    monkeypatch.delenv("VRAMPLAN_EVALUATOR")
    return fast, compiled, reference


def assert_agree(workload, body, monkeypatch):
    fast, compiled, reference = three_ways(workload, body, monkeypatch)
    assert same_values(compiled, reference), body
    if isinstance(fast, dict):
        assert same_values(fast, {k: v for k, v in compiled.items() if k != "trace"}), body
    else:
        assert fast == compiled, body


@pytest.mark.parametrize("workload,body", REQUESTS)
def test_both_evaluators_give_the_same_trace(workload, body, monkeypatch):
    assert_agree(workload, body, monkeypatch)


def test_the_default_is_the_compiled_closures(monkeypatch):
    monkeypatch.delenv("VRAMPLAN_EVALUATOR", raising=False)
    assert evaluator_name() == "compiled"
    monkeypatch.setenv("VRAMPLAN_EVALUATOR", "")  # empty = unset
    assert evaluator_name() == "compiled"
    monkeypatch.setenv("VRAMPLAN_EVALUATOR", "simpleeval")
    assert evaluator_name() == "simpleeval"
    monkeypatch.setenv("VRAMPLAN_EVALUATOR", "fast")
    with pytest.raises(FormulaError, match="VRAMPLAN_EVALUATOR: 'fast' is not an evaluator"):
        vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct"})


def test_a_five_million_token_context_gets_one_answer(monkeypatch):
    # simpleeval's own power limit (base at most 4,000,000) used to refuse seq ** 2 here while the
    # closures answered. seq_length 5,000,000 is schema-valid (maximum 16,777,216), and both answer.
    body = {"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "seq_length": 5_000_000}
    fast, compiled, reference = three_ways("inference", body, monkeypatch)
    assert same_values(compiled, reference)
    # KV cache alone: 2 (K, V) x 32 layers x 8 KV heads x 128 x 5e6 tokens x 2 bytes = 655,360,000,000 bytes = 610.35 GiB
    assert fast["memory_details"]["KV Cache"] == pytest.approx(2 * 32 * 8 * 128 * 5_000_000 * 2 / 2**30, abs=0.01)
    assert fast["memory_status"] == "insufficient"


@pytest.mark.parametrize("workload", ["inference", "finetuning"])
def test_evaluators_agree_at_the_schema_extremes(workload, monkeypatch):
    for body in extreme_requests(workload, 12):
        assert_agree(workload, body, monkeypatch)


@pytest.mark.parametrize("workload,body", [
    # the longest context the schema allows (16,777,216 tokens), alone and with a pipeline over 8 GPUs
    ("inference", {"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "seq_length": 16777216}),
    ("inference", {"gpu_key": "h100_80", "llm_key": "llama-3-70b-instruct", "seq_length": 16777216, "num_gpus": 8,
                   "runtime": "vllm"}),
    ("finetuning", {"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "seq_length": 16777216}),
    # every number at the schema's top at once (a field without a maximum: 2**62)
    *[(w, max_body(w)) for w in ("inference", "finetuning")],
])
def test_evaluators_agree_at_the_schemas_maxima(workload, body, monkeypatch):
    assert_agree(workload, body, monkeypatch)
    fast, _, _ = three_ways(workload, body, monkeypatch)
    if workload == "inference" and body.get("num_gpus") is None:
        # KV cache alone: 2 (K, V) x 32 layers x 8 KV heads x 128 x 16,777,216 tokens x 2 bytes = 2,048 GiB
        assert fast["memory_details"]["KV Cache"] == pytest.approx(2 * 32 * 8 * 128 * 16777216 * 2 / 2**30, abs=0.01)


@checks(40)
@given(requests("inference"))
def test_evaluators_agree_on_random_inference_requests(body):
    with pytest.MonkeyPatch.context() as mp:
        assert_agree("inference", body, mp)


@checks(40)
@given(requests("finetuning"))
def test_evaluators_agree_on_random_finetuning_requests(body):
    with pytest.MonkeyPatch.context() as mp:
        assert_agree("finetuning", body, mp)


# -- random expressions --------------------------------------------------------------------------

def formula_set(expr: str) -> FormulaSet | None:
    names = sorted({n.id for n in ast.walk(ast.parse(expr, mode="eval")) if isinstance(n, ast.Name) and n.id in "abc"})
    data = {"id": "random", "kind": "helper", "description": "x",
            "formulas": [{"id": "f", "description": "x", "inputs": names, "expr": expr, "unit": "u"}]}
    try:
        ff = formula_file_from_data(data, file="random.yaml", source="test")
    except FormulaError:
        return None  # outside what the loader accepts
    fs = FormulaSet()
    fs.add(ff, may_override=False)
    fs.finalize({"a", "b", "c"})
    return fs


def value_or_refusal(fs: FormulaSet, inputs: dict, evaluator: str):
    try:
        return fs.evaluate_one("f", inputs, evaluator=evaluator)
    except FormulaError as exc:
        return str(exc)


def hot_path(fs: FormulaSet, inputs: dict):
    try:
        return fs.evaluate(inputs, ["f"])["f"]
    except FormulaError as exc:
        return str(exc)


@checks(600)
@given(expressions, st.fixed_dictionaries({"a": input_values, "b": input_values, "c": input_values}))
def test_evaluators_agree_on_random_expressions(expr, inputs):
    fs = formula_set(expr)
    assume(fs is not None)
    compiled = value_or_refusal(fs, inputs, "compiled")
    reference = value_or_refusal(fs, inputs, "simpleeval")
    assert same_values(compiled, reference), (expr, inputs)
    assert same_values(hot_path(fs, inputs), compiled), (expr, inputs)


#: One refusal of each kind: expression, inputs, the reason named after the formula.
REFUSALS = [
    ("a / (b - b)", {"a": 1, "b": 3}, "division by zero"),
    ("a // b", {"a": 1, "b": 0.0}, "division by zero"),
    ("a % b", {"a": 1, "b": 0}, "division by zero"),
    ("b ** -1", {"b": 0}, "division by zero"),
    ("round_up(a, b)", {"a": 5, "b": 0}, "division by zero"),
    ("log(a, b)", {"a": 5, "b": 1}, "division by zero"),
    ("exp(a)", {"a": 1e6}, "result too large"),
    ("a ** 4", {"a": 1e100}, "result too large"),
    ("a * a", {"a": 1e200}, "result too large"),  # a float overflow becomes inf; the value check refuses it
    ("a ** 4 * a ** 4", {"a": 10**80}, "result too large"),  # an exact integer beyond binary64
    ("ceil(a * a)", {"a": 1e200}, "result too large"),
    ("sqrt(a)", {"a": -1}, "cannot be evaluated: math domain error"),
    ("log2(a)", {"a": 0}, "cannot be evaluated: math domain error"),
    ("a ** 0.5", {"a": -4}, "cannot be evaluated: math domain error"),  # Python would give a complex number
    ("a * a - a * a", {"a": 1e200}, "result is not a number"),
    ("choose(a, b, c)", {"a": 3, "b": 1, "c": 2}, "cannot be evaluated: math domain error"),  # past the values
    ("choose(a, b, c)", {"a": 1.5, "b": 1, "c": 2}, "cannot be evaluated: math domain error"),  # not whole
    ("choose(a, b, c)", {"a": 0, "b": 1, "c": 2}, "cannot be evaluated: math domain error"),
    ("betainc(a, b, c)", {"a": 0, "b": 1, "c": 0.5}, "cannot be evaluated: math domain error"),   # a shape of 0
    ("betainc(a, b, c)", {"a": 1, "b": -2, "c": 0.5}, "cannot be evaluated: math domain error"),
    ("betainc(a, b, c)", {"a": 1, "b": 2, "c": 1.5}, "cannot be evaluated: math domain error"),   # x past 1
    ("betainc(a, b, c)", {"a": 2e10, "b": 2, "c": 0.5}, "cannot be evaluated: math domain error"),  # beyond its accuracy
]


#: argmin picks as min does (the first of equals) and says where, from 1; choose takes that place's value.
PICKS = [
    ("argmin(a, b, c)", {"a": 3, "b": 1, "c": 2}, 2),
    ("argmin(a, b, c)", {"a": 2, "b": 1, "c": 1}, 2),  # equals: the first
    ("argmin(a, b)", {"a": -0.0, "b": 0.0}, 1),
    ("argmin(a, b, c)", {"a": 5, "b": 6, "c": 7}, 1),
    ("choose(argmin(a, b, c), a, b, c)", {"a": 3, "b": 1.5, "c": 2}, 1.5),
    ("choose(a, b, c)", {"a": 2, "b": 10, "c": 20}, 20),
    ("choose(a == 1, b, c)", {"a": 1, "b": 10, "c": 20}, 10),  # True is 1
]


#: The regularized incomplete beta function I_x(a, b), worked by hand: I_x(1, 1) = x; I_x(a, 1) = x^a;
#: I_x(1, b) = 1 - (1 - x)^b; I_(1/2)(a, a) = 1/2; the ends; and a negative binomial's distribution function,
#: P(NB(r = 2, q = 1/2) <= 2) = I_(1/2)(2, 3) = (1/2)^2 (1 + 2 x 1/2 + 3 x 1/4) = 0.6875; and a binomial's,
#: P(Bin(10, 0.3) <= 3) = I_0.7(7, 4) = sum_(k <= 3) C(10, k) 0.3^k 0.7^(10 - k).
BETAS = [
    ("betainc(a, b, c)", {"a": 1, "b": 1, "c": 0.3}, 0.3),
    ("betainc(a, b, c)", {"a": 3, "b": 1, "c": 0.5}, 0.125),
    ("betainc(a, b, c)", {"a": 1, "b": 4, "c": 0.5}, 1 - 0.5 ** 4),
    ("betainc(a, b, c)", {"a": 7.5, "b": 7.5, "c": 0.5}, 0.5),
    ("betainc(a, b, c)", {"a": 3, "b": 2, "c": 0}, 0),
    ("betainc(a, b, c)", {"a": 3, "b": 2, "c": 1}, 1),
    ("betainc(a, b, c)", {"a": 2, "b": 3, "c": 0.5}, 0.6875),
    ("betainc(a, b, c)", {"a": 7, "b": 4, "c": 0.7}, sum(math.comb(10, k) * 0.3 ** k * 0.7 ** (10 - k) for k in range(4))),
    ("betainc(a, b, c)", {"a": 1e8, "b": 1e8, "c": 0.5}, 0.5),   # ~2,300 terms of the continued fraction
]


@pytest.mark.parametrize("expr,inputs,expected", BETAS)
def test_betainc(expr, inputs, expected):
    fs = formula_set(expr)
    for evaluator in ("compiled", "simpleeval"):
        assert value_or_refusal(fs, inputs, evaluator) == pytest.approx(expected, rel=1e-6, abs=1e-15), evaluator
    assert hot_path(fs, inputs) == pytest.approx(expected, rel=1e-6, abs=1e-15)


@pytest.mark.parametrize("expr,inputs,expected", PICKS)
def test_argmin_and_choose(expr, inputs, expected):
    fs = formula_set(expr)
    for evaluator in ("compiled", "simpleeval"):
        assert value_or_refusal(fs, inputs, evaluator) == expected, evaluator
    assert hot_path(fs, inputs) == expected


@pytest.mark.parametrize("expr,inputs,reason", REFUSALS)
def test_refusals_are_the_same_in_both_evaluators(expr, inputs, reason):
    fs = formula_set(expr)
    for evaluator in ("compiled", "simpleeval"):
        got = value_or_refusal(fs, inputs, evaluator)
        assert got == f"formula f (random.yaml): {reason}", evaluator
    assert hot_path(fs, inputs) == f"formula f (random.yaml): {reason}"


@pytest.mark.parametrize("file,case", [(ff.file, c) for ff in CAT.formulas.files.values() for c in ff.cases])
def test_golden_cases_under_simpleeval(file, case):
    got = CAT.formulas.evaluate_one(case["formula"], case["inputs"], evaluator="simpleeval")
    assert math.isclose(got, case["expected"], rel_tol=case.get("rel_tol", 1e-9), abs_tol=1e-9), file
