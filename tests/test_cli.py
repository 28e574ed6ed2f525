"""The CLI: seed examples, --format json is exactly the API body, every error is one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import vramplan
from vramplan.cli import main

SEED = {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m", "batch_size": 1, "seq_length": 2048}


def run(*args, input=None):
    return CliRunner().invoke(main, list(args), input=input)


def test_json_output_is_the_http_body(tmp_path):
    path = tmp_path / "req.json"
    path.write_text(json.dumps(SEED))
    result = run("inference", "--request", str(path), "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == vramplan.estimate_inference(dict(SEED))


def test_stdin_request_and_flags_override_the_file():
    result = run("inference", "--request", "-", "--batch-size", "4", "--format", "json", input=json.dumps(SEED))
    assert json.loads(result.output) == vramplan.estimate_inference({**SEED, "batch_size": 4})


def test_friendly_flags_give_a_table_with_bars_and_status():
    result = run("inference", "--gpu", "rtx_4090", "--model", "llama-3-8b-instruct", "--quantization", "q4_k_m")
    assert result.exit_code == 0
    out = vramplan.estimate_inference(dict(SEED))
    assert f"{out['vram_usage']:.2f} GiB of 24 GiB" in result.output
    assert "okay: fits comfortably" in result.output
    assert "Base Model Weights" in result.output and "█" in result.output


def test_finetuning_seed_example():
    body = {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "finetuning_method": "lora", "lora_rank": 16,
            "batch_size": 4, "seq_length": 2048}
    result = run("finetuning", "--request", "-", "--format", "json", input=json.dumps(body))
    assert result.exit_code == 0
    assert json.loads(result.output) == vramplan.estimate_finetuning(dict(body))
    flags = run("finetuning", "--gpu", "rtx_4090", "--model", "llama-3-8b-instruct", "--method", "lora",
                "--lora-rank", "16", "--batch-size", "4", "--seq-length", "2048", "--lora-targets", "q_proj,v_proj",
                "--gradient-checkpointing", "--format", "json")
    assert flags.exit_code == 0
    assert "gradient_checkpointing" in json.loads(flags.output)["active_optimizations"]


@pytest.mark.parametrize("args,field", [
    (["inference", "--gpu", "rtx_4091", "--model", "llama-3-8b-instruct"], "gpu_key: unknown GPU 'rtx_4091' (closest: rtx_4090"),
    (["inference", "--gpu", "rtx_4090", "--model", "llama-3-8b-instruct", "--batch-size", "0"], "batch_size: 0 is less than the minimum of 1"),
    (["inference", "--gpu", "custom_discrete", "--model", "llama-3-8b-instruct"], "custom_vram: required"),
    (["inference", "--model", "llama-3-8b-instruct"], "gpu_key: required"),
    (["inference", "--gpu", "rtx_4090", "--model", "llama-3-8b-instruct", "--nope"], "No such option"),
    (["inference", "--request", "/does/not/exist.json"], "--request: cannot read"),
])
def test_bad_input_is_one_line_and_exit_2(args, field):
    proc = subprocess.run([sys.executable, "-m", "vramplan", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0]
    assert "Traceback" not in proc.stderr


def test_malformed_json_request():
    proc = subprocess.run([sys.executable, "-m", "vramplan", "inference", "--request", "-"], input="{not json",
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: --request: not valid JSON")


def test_model_file_estimates_from_a_config_json(tmp_path):
    config = {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
              "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
              "tie_word_embeddings": True}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = run("inference", "--gpu", "rtx_4090", "--model-file", str(path), "--format", "json", "--trace")
    assert result.exit_code == 0, result.output
    steps = {s["id"]: s["value"] for s in json.loads(result.output)["trace"]}
    # Llama 3.2 1B's architecture: 1,235,814,400 parameters in fp16.
    assert steps["weights_file_bytes"] == 1_235_814_400 * 2
