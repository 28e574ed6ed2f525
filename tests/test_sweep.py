"""``vramplan sweep``: grid syntax, one row per combination, the estimator's numbers in every row."""

from __future__ import annotations

import csv
import io
import json

import click
import pytest
from click.testing import CliRunner

import vramplan
from vramplan.cli_plan import parse_int_grid, parse_text_grid, sweep, sweep_rows


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
                             "per_user_tps", "estimated_throughput_tps", "ms_per_token", "tftt", "runtime", "error"]
    seen = {(r["quantization"], r["seq_length"], r["batch_size"]) for r in rows}
    assert ("q4_k_m", "8192", "4") in seen and ("fp16", "2048", "1") in seen
    for r in rows:
        out = vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": r["quantization"],
                                           "seq_length": int(r["seq_length"]), "batch_size": int(r["batch_size"])})
        assert float(r["vram_usage"]) == out["vram_usage"]
        assert r["memory_status"] == out["memory_status"] and r["runtime"] == out["runtime"]
        assert r["fits"] == str(out["memory_status"] not in ("insufficient", "error"))


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


def test_configuration_errors_are_rows_not_failures():
    rows = sweep_rows({"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "inference_parallelism": "tensor"},
                      "inference", {"num_gpus": [1, 3]})
    assert [r["memory_status"] for r in rows][1] == "error"  # 32 heads do not split over 3 GPUs
    assert rows[1]["fits"] is False


def test_progress_bar_does_not_change_the_rows():
    axes = {"seq_length": [1024, 2048], "batch_size": [1, 2]}
    base = {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct"}
    assert sweep_rows(base, "inference", axes, progress=True) == sweep_rows(base, "inference", axes)
