"""``vramplan sweep``: grid syntax, one row per combination, the estimator's numbers in every row."""

from __future__ import annotations

import csv
import io
import json
import textwrap

import click
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import vramplan
from vramplan.cli.plan import parse_int_grid, parse_text_grid
from vramplan.cli.sweep import sweep
from vramplan.planner import binding, fits
from vramplan.sweep import CHUNK, Axis, Sweep, round_like_python


@pytest.mark.parametrize("text,expected", [
    ("2k..128k", [2048, 4096, 8192, 16384, 32768, 65536, 131072]),
    ("1,8,32", [1, 8, 32]),
    ("32,8,1,8", [1, 8, 32]),  # sorted, distinct
    ("512,2k..8k", [512, 2048, 4096, 8192]),
    ("3..20", [3, 6, 12, 20]),  # the end is included even off the doubling
    ("4096", [4096]),
    ("1.5k", [1536]),
    ("1m", [1048576]),
    ("7..7", [7]),
])
def test_int_grid(text, expected):
    assert parse_int_grid(text, "--seq-length") == expected


@pytest.mark.parametrize("text,words", [
    ("2k..x", "'x' is not a number"),
    ("8..2", "runs backwards"),
    ("0", "at least 1"),
    ("1,,8", "empty item"),
    ("1.3", "whole number"),
    ("-4", "not a number"),
])
def test_bad_int_grid_names_the_flag(text, words):
    with pytest.raises(click.UsageError) as info:
        parse_int_grid(text, "--batch-size")
    assert info.value.message.startswith("--batch-size: ") and words in info.value.message


def test_text_grid():
    assert parse_text_grid("fp16, q4_k_m,fp16", "--quantization") == ["fp16", "q4_k_m"]
    with pytest.raises(click.UsageError, match="--gpu: empty item"):
        parse_text_grid("rtx_4090,", "--gpu")


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_sweep_csv_has_a_row_per_combination_with_the_estimates():
    result = CliRunner().invoke(sweep, ["--gpu", "rtx_4090", "--model", "llama-3-8b-instruct",
                                        "--seq-length", "2k..8k", "--batch-size", "1,4", "--quantization", "fp16,q4_k_m"])
    assert result.exit_code == 0, result.output
    rows = _csv(result.output)
    assert len(rows) == 3 * 2 * 2
    assert list(rows[0]) == ["workload", "gpu_key", "llm_key", "quantization", "seq_length", "batch_size",
                             "vram_usage", "capacity_gib", "actual_vram_percentage", "memory_status", "fits",
                             "binding", "per_user_tps", "estimated_throughput_tps", "ms_per_token", "tftt", "runtime",
                             "serving.input_tokens", "serving.output_tokens", "serving.load", "serving.running_sequences",
                             "serving.queued_requests", "serving.output_throughput_tps", "serving.total_throughput_tps",
                             "serving.requests_per_second", "serving.ttft_ms", "serving.itl_ms", "serving.e2e_latency_ms",
                             "serving.utilisation", "serving.limited_by", "serving.cost_per_hour",
                             "serving.cost_per_million_output_tokens", "error"]
    seen = {(r["quantization"], r["seq_length"], r["batch_size"]) for r in rows}
    assert ("q4_k_m", "8192", "4") in seen and ("fp16", "2048", "1") in seen
    for r in rows:
        out = vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": r["quantization"],
                                           "seq_length": int(r["seq_length"]), "batch_size": int(r["batch_size"])})
        assert float(r["vram_usage"]) == out["vram_usage"]
        assert r["memory_status"] == out["memory_status"] and r["runtime"] == out["runtime"]
        assert r["fits"] == str(fits(out, 24.0)) and r["binding"] == (binding(out, 24.0) or "")


def test_sweep_json_to_a_file_with_a_base_request(tmp_path):
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "finetuning_method": "lora"}))
    target = tmp_path / "grid.json"
    result = CliRunner().invoke(sweep, ["--request", str(base), "--workload", "finetuning", "--method", "lora,qlora",
                                        "--batch-size", "1,2", "--output", str(target)])
    assert result.exit_code == 0, result.output
    rows = json.loads(target.read_text())
    assert len(rows) == 4 and {r["finetuning_method"] for r in rows} == {"lora", "qlora"}
    assert all("training_tps" in r and r["workload"] == "finetuning" for r in rows)
    one = next(r for r in rows if r["finetuning_method"] == "qlora" and r["batch_size"] == 2)
    out = vramplan.estimate_finetuning({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "finetuning_method": "qlora",
                                        "batch_size": 2})
    assert one["vram_usage"] == out["vram_usage"] and one["training_tps"] == out["training_tps"]


@pytest.mark.parametrize("args,flag", [
    (["--gpu", "rtx_4090", "--model", "llama-3-8b-instruct", "--seq-length", "2k..lots"], "--seq-length"),
    (["--gpu", "rtx_4099", "--model", "llama-3-8b-instruct"], "--gpu"),
    (["--gpu", "rtx_4090", "--model", "llama-3-8b-instruct", "--quantization", "fp16,q4_k_x"], "--quantization"),
    (["--model", "llama-3-8b-instruct"], "gpu_key"),
    (["--gpu", "rtx_4090", "--model", "llama-3-8b-instruct", "--method", "lora"], "--method"),
])
def test_sweep_usage_errors_name_the_flag(args, flag):
    result = CliRunner().invoke(sweep, args)
    assert result.exit_code == 2
    assert flag in result.output


def test_unknown_key_suggests_close_ones():
    result = CliRunner().invoke(sweep, ["--gpu", "rtx_4099", "--model", "llama-3-8b-instruct"])
    assert "rtx_4090" in result.output


def sweep_rows(base, workload, axes, catalog=None, chunk=CHUNK):
    grid = Sweep(base, workload, [Axis(f, tuple(v)) for f, v in axes.items()], catalog, chunk)
    return [row for c in grid.chunks() for row in c.records()]


def test_configuration_errors_are_rows_not_failures():
    out = sweep_rows({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "inference_parallelism": "tensor"},
                     "inference", {"num_gpus": [1, 3]})
    assert [r["memory_status"] for r in out] == ["okay", "error"]  # 32 heads do not split over 3 GPUs
    assert out[1]["fits"] is False
    assert out[1]["error"] == "tensor parallelism over 3 GPUs needs the 32 attention heads to divide evenly across them"
    assert out[1]["vram_usage"] > 0  # the figures are still there, as in the response


def test_a_bad_value_is_a_row_with_the_estimates_own_message():
    # batch_size 0 is below the schema's minimum of 1; the other rows are estimated.
    out = sweep_rows({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct"}, "inference",
                     {"batch_size": [0, 1], "seq_length": [1024, 2048]})
    assert [r["error"] == "" for r in out] == [False, False, True, True]
    with pytest.raises(vramplan.RequestError) as info:
        vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "batch_size": 0, "seq_length": 1024})
    assert out[0]["error"] == str(info.value) and out[0]["vram_usage"] is None and out[0]["fits"] is None


def test_a_refused_formula_is_a_row_with_the_refusal(tmp_path, with_plugins):
    # An override whose value divides by (seq - 4096): the single estimate at 4096 tokens is refused,
    # and so is that row of the sweep, with the same words; the rows around it are estimated.
    folder = tmp_path / "formulas"
    folder.mkdir()
    (folder / "odd.yaml").write_text(textwrap.dedent("""
        id: odd
        kind: helper
        description: a formula that cannot be evaluated at one context length
        formulas:
          - id: tftt_ms
            description: refuses at seq 4096
            inputs: [seq]
            expr: 1000 / (seq - 4096)
            unit: ms
        cases:
          - formula: tftt_ms
            inputs: {seq: 5096}
            expected: 1
    """))

    class Plugin:
        @vramplan.hookimpl
        def register_formula_dirs(self):
            return [str(folder)]

    with with_plugins(Plugin()) as cat:
        out = sweep_rows({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct"}, "inference",
                         {"seq_length": [2048, 4096, 8192]}, catalog=cat)
        with pytest.raises(vramplan.FormulaError) as info:
            vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "seq_length": 4096})
    assert out[1]["error"] == str(info.value) and "division by zero" in out[1]["error"]
    assert out[1]["vram_usage"] is None
    # 1000 / (2048 - 4096) = -0.49 -> -0.5 ms; 1000 / (8192 - 4096) = 0.244 -> 0.2 ms
    assert out[0]["tftt"] == -0.5 and out[2]["tftt"] == 0.2


def test_progress_does_not_change_the_rows():
    args = ["--gpu", "rtx_4090", "--model", "llama-3-8b-instruct", "--seq-length", "1k..32k", "--batch-size", "1,2,4"]
    quiet = CliRunner().invoke(sweep, args + ["--no-progress"])
    shown = CliRunner().invoke(sweep, args + ["--progress"])
    assert shown.exit_code == 0 and shown.stdout == quiet.stdout and quiet.stderr == ""
    assert "sweep: 18 / 18 rows (100%)" in shown.stderr


def test_jsonl_rows_have_typed_columns():
    result = CliRunner().invoke(sweep, ["--gpu", "rtx_4090,h100_80", "--model", "llama-3-8b-instruct", "--format", "jsonl",
                                        "--axis", "shared_prefix_ratio=0,0.5", "--axis", "optimization_config.flash_attention=true,false",
                                        "--axis", "enable_prefix_caching=true"])
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in result.output.splitlines()]
    assert len(out) == 2 * 2 * 2
    assert list(out[0])[:7] == ["workload", "gpu_key", "llm_key", "optimization_config.flash_attention",
                                "enable_prefix_caching", "shared_prefix_ratio", "vram_usage"]
    for row in out:
        assert isinstance(row["shared_prefix_ratio"], float) and isinstance(row["optimization_config.flash_attention"], bool)
        assert isinstance(row["vram_usage"], float) and isinstance(row["fits"], bool) and row["error"] == ""
        one = vramplan.estimate_inference({"gpu_key": row["gpu_key"], "llm_key": "llama-3-8b-instruct", "enable_prefix_caching": True,
                                           "shared_prefix_ratio": row["shared_prefix_ratio"],
                                           "optimization_config": {"flash_attention": row["optimization_config.flash_attention"]}})
        assert (row["vram_usage"], row["tftt"], row["memory_status"]) == (one["vram_usage"], one["tftt"], one["memory_status"])


def test_runtime_settings_can_be_swept():
    out = sweep_rows({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "runtime": "vllm"}, "inference",
                     {"runtime_settings.gpu_memory_utilization": [0.5, 0.9]})
    # vLLM preallocates gpu_memory_utilization x 80 GiB: 40 GiB and 72 GiB of the card.
    assert [r["vram_usage"] for r in out] == [
        vramplan.estimate_inference({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "runtime": "vllm",
                                     "runtime_settings": {"gpu_memory_utilization": u}})["vram_usage"] for u in (0.5, 0.9)]
    assert out[0]["vram_usage"] < out[1]["vram_usage"]



def test_a_context_axis_over_both_halves_keeps_the_answer():
    # A base with a 1000-token prompt and a 200-token answer: each context keeps the 200-token answer and the prompt
    # is the rest (2048 - 200 = 1848, 8192 - 200 = 7992); 128 tokens cannot hold the answer. Before, every row
    # refused: "seq_length: 2048 disagrees with input_tokens 1000 + output_tokens 200 = 1200".
    base = {"gpu_key": "h100_80", "llm_key": "llama-3.1-8b", "input_tokens": 1000, "output_tokens": 200}
    out = sweep_rows(base, "inference", {"seq_length": [128, 2048, 8192]})
    assert out[0]["error"] == "output_tokens: 200 leaves no room for input_tokens in seq_length 128"
    assert [(r["serving.input_tokens"], r["serving.output_tokens"]) for r in out[1:]] == [(1848, 200), (7992, 200)]
    for row, prompt in zip(out[1:], (1848, 7992)):
        single = vramplan.estimate_inference({**base, "input_tokens": prompt})
        assert row["error"] == "" and row["vram_usage"] == single["vram_usage"] and row["tftt"] == single["tftt"]
    # With an axis of either half the rows say what the request says: those that disagree are refused.
    mixed = sweep_rows(base, "inference", {"seq_length": [1200, 2048], "output_tokens": [200]})
    assert mixed[0]["error"] == "" and mixed[1]["error"].startswith("seq_length: 2048 disagrees")

def test_columns_picks_and_orders_the_columns():
    result = CliRunner().invoke(sweep, ["--gpu", "rtx_4090", "--model", "llama-3-8b-instruct", "--seq-length", "1k,2k",
                                        "--columns", "fits,seq_length,serving.ttft_ms"])
    assert result.exit_code == 0, result.output
    rows = _csv(result.stdout)
    assert list(rows[0]) == ["fits", "seq_length", "serving.ttft_ms"] and [r["seq_length"] for r in rows] == ["1024", "2048"]
    one = vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "seq_length": 2048})
    assert float(rows[1]["serving.ttft_ms"]) == one["serving"]["ttft_ms"]


@pytest.mark.parametrize("args,words", [
    (["--columns", "vram_usage,speed"], "--columns: no column 'speed'"),
    (["--axis", "seq_length"], "is not FIELD=VALUES"),
    (["--axis", "no_such_field=1"], "--axis no_such_field: not a field of a inference request"),
    (["--axis", "optimization_config.turbo=true"], "optimization_config has no field 'turbo'"),
    (["--axis", "enable_prefix_caching=maybe"], "'maybe' is not true or false"),
    (["--axis", "seq_length=1k", "--seq-length", "2k"], "given twice"),
    (["--axis", "kv_cache_quantization=fp17"], "--axis kv_cache_quantization: unknown quantization format 'fp17'"),
])
def test_axis_usage_errors(args, words):
    result = CliRunner().invoke(sweep, ["--gpu", "rtx_4090", "--model", "llama-3-8b-instruct"] + args)
    assert result.exit_code == 2 and words in result.output, result.output


def test_rows_come_in_grid_order_across_chunks():
    # Chunks of 5 rows over a 2 x 3 x 2 grid: the text axis outermost, the last number axis fastest.
    base = {"llm_key": "llama-3-8b-instruct"}
    axes = {"seq_length": [1024, 2048, 4096], "gpu_key": ["rtx_4090", "h100_80"], "batch_size": [1, 2]}
    out = sweep_rows(base, "inference", axes, chunk=5)
    assert [(r["gpu_key"], r["seq_length"], r["batch_size"]) for r in out] == [
        (g, s, b) for g in ("rtx_4090", "h100_80") for s in (1024, 2048, 4096) for b in (1, 2)]
    assert out == sweep_rows(base, "inference", axes)


@pytest.mark.parametrize("value", [0.285, 1.005, 2.675, 0.125, 0.375, -2.675, 5e13 + 0.125, 1e15 + 0.3, 1e300, 0.0, 26.25])
def test_rounding_over_arrays_is_pythons_round(value):
    # 0.285 is stored as 0.28499999999999998: Python rounds it to 0.28 while 0.285 * 100 = 28.5 exactly
    # in binary64; 0.125 is exact and rounds half to even, to 0.12.
    for digits in (1, 2, 3, 4):
        assert round_like_python(np.array([value]), digits)[0] == round(value, digits)


@given(st.lists(st.floats(-1e16, 1e16, allow_nan=False), min_size=1, max_size=50), st.integers(1, 4))
@settings(max_examples=300, derandomize=True)
def test_rounding_over_arrays_is_pythons_round_everywhere(values, digits):
    assert round_like_python(np.array(values), digits).tolist() == [round(v, digits) for v in values]


@pytest.mark.parametrize("text", ['a, b', 'say "hi"', "line\nbreak", "plain", "", "x\r"])
def test_csv_cells_are_quoted_as_the_csv_module_quotes_them(text):
    from vramplan.cli.sweep import _csv_text

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([text, "end"])
    if "\r" not in text:  # a carriage return is quoted too here (the csv module leaves it bare with "\n" lines)
        assert _csv_text(text) + ",end\n" == buf.getvalue()
    assert next(csv.reader(io.StringIO(_csv_text(text) + ",end"))) == [text, "end"]


def test_axis_items_read_true_and_false_one_way():
    """A boolean axis and an untyped one read true/false alike (any case); only the boolean axis refuses other text."""
    import click

    from vramplan.cli.sweep import _flag_item, _literal

    assert [_flag_item(v, "--axis f") for v in ("true", "FALSE", "True")] == [True, False, True]
    assert [_literal(v) for v in ("TRUE", "false", "8", "0.5", "vllm")] == [True, False, 8, 0.5, "vllm"]
    assert type(_literal("8")) is int
    with pytest.raises(click.UsageError, match="--axis f: '1' is not true or false"):
        _flag_item("1", "--axis f")
