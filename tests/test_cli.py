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


# -- answers, not just numbers ------------------------------------------------------------------

BIG_ON_SMALL = ["--gpu", "rtx_4060", "--model", "llama-3-8b-instruct"]  # ~15 GiB of fp16 weights on an 8 GiB card


def test_check_exits_1_when_it_does_not_fit_and_0_when_it_does():
    assert run("inference", *BIG_ON_SMALL).exit_code == 0  # without --check: exit 0 as before
    assert run("inference", *BIG_ON_SMALL, "--check").exit_code == 1
    assert run("inference", "--gpu", "rtx_4090", "--model", "llama-3-8b-instruct", "--quantization", "q4_k_m",
               "--check").exit_code == 0
    full = ["finetuning", "--gpu", "rtx_3090", "--model", "llama-3-8b-instruct", "--method", "full", "--check"]
    assert run(*full).exit_code == 1


def test_the_table_lists_suggestions_as_flags_that_apply_them():
    result = run("inference", *BIG_ON_SMALL)
    assert "what would make it fit" in result.output
    out = vramplan.estimate_inference({"gpu_key": "rtx_4060", "llm_key": "llama-3-8b-instruct"})
    first = out["suggestions"][0]
    assert first["summary"] in result.output
    # the flags printed under it reproduce the suggestion's estimate
    flag_line = result.output.split(first["summary"])[1].splitlines()[1].split()
    again = run("inference", *BIG_ON_SMALL, *flag_line, "--format", "json")
    assert json.loads(again.output)["vram_usage"] == first["vram_usage"]


LLAMA_SERVER = ("--gpu", "rtx_4090", "--model", "llama-3.1-8b", "--quantization", "q4_k_m", "--runtime", "llama.cpp",
                "--continuous-batching", "--input-tokens", "1000", "--output-tokens", "200", "--request-rate", "2")


def test_runtime_settings_from_flags_over_the_file_and_suggested_as_flags(tmp_path):
    body = {"gpu_key": "rtx_4090", "llm_key": "llama-3.1-8b", "quantization": "q4_k_m", "runtime": "llama.cpp",
            "enable_continuous_batching": True, "input_tokens": 1000, "output_tokens": 200, "request_rate": 2}
    result = run("inference", *LLAMA_SERVER, "--runtime-setting", "max_num_seqs=8", "--format", "json")
    assert json.loads(result.output) == vramplan.estimate_inference({**body, "runtime_settings": {"max_num_seqs": 8}})
    # a flag adds to the request file's runtime_settings, and overrides the same name
    path = tmp_path / "req.json"
    path.write_text(json.dumps({**body, "runtime_settings": {"max_prefill_tokens": 1024, "max_num_seqs": 2}}))
    result = run("inference", "--request", str(path), "--runtime-setting", "max_num_seqs=8", "--format", "json")
    assert json.loads(result.output) == vramplan.estimate_inference(
        {**body, "runtime_settings": {"max_prefill_tokens": 1024, "max_num_seqs": 8}})
    bad = run("inference", *LLAMA_SERVER, "--runtime-setting", "max_num_seqs")
    assert bad.exit_code == 2 and "--runtime-setting: 'max_num_seqs' is not NAME=NUMBER" in bad.output
    # one slot is past capacity; the table prints the slots suggestion as the flag, which reproduces its estimate
    table = run("inference", *LLAMA_SERVER)
    line = next(l for l in table.output.splitlines() if l.strip().startswith("--runtime-setting max_num_seqs="))
    slots = next(s for s in vramplan.estimate_inference(body)["suggestions"] if "runtime_settings" in s["change"])
    again = run("inference", *LLAMA_SERVER, *line.split(), "--format", "json")
    assert json.loads(again.output)["vram_usage"] == slots["vram_usage"]


@pytest.mark.parametrize("value,fields", [("auto", {"enable_offloading": True}),
                                          ("12", {"enable_offloading": True, "num_offload_layers": 12}),
                                          ("25%", {"enable_offloading": True, "percentage_offload": 25.0})])
def test_offload_auto_n_or_percent(value, fields):
    result = run("inference", *BIG_ON_SMALL, "--offload", value, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == vramplan.estimate_inference({"gpu_key": "rtx_4060", "llm_key": "llama-3-8b-instruct",
                                                                     **fields})


def test_offload_alone_is_auto_and_the_table_says_where_the_layers_went():
    result = run("inference", *BIG_ON_SMALL, "--offload")
    out = vramplan.estimate_inference({"gpu_key": "rtx_4060", "llm_key": "llama-3-8b-instruct", "enable_offloading": True})
    n = out["offload"]["layers"]
    assert 0 < n < 32 and out["offload"]["of_layers"] == 32  # Llama 3 8B has 32 layers
    assert f"{32 - n} of 32 on the GPU, {n} in CPU RAM" in result.output
    assert run("inference", *BIG_ON_SMALL, "--offload", "lots").exit_code == 2


def test_trace_in_the_table_lists_the_formulas():
    result = run("inference", "--gpu", "rtx_4090", "--model", "llama-3-8b-instruct", "--trace")
    assert result.exit_code == 0
    assert "formulas, in evaluation order:" in result.output
    assert "kv_bytes_per_seq = " in result.output


def test_plan_takes_the_estimate_flags():
    # --quantization and --seq-length shape the request the planner searches, as for `inference`
    result = run("plan", "--gpu", "rtx_4090", "--model", "llama-3-8b-instruct", "--quantization", "q4_k_m",
                 "--seq-length", "4096", "--find", "max_concurrent_users", "--format", "json")
    assert result.exit_code == 0, result.output
    expected = vramplan.plan({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m",
                              "seq_length": 4096, "find": ["max_concurrent_users"]})
    assert json.loads(result.output) == expected
    ft = run("plan", "--workload", "finetuning", "--gpu", "rtx_3090", "--model", "llama-3-8b-instruct", "--method",
             "qlora", "--find", "max_batch_size", "--format", "json")
    assert json.loads(ft.output) == vramplan.plan({"workload": "finetuning", "gpu_key": "rtx_3090",
                                                   "llm_key": "llama-3-8b-instruct", "finetuning_method": "qlora",
                                                   "find": ["max_batch_size"]})
    wrong = run("plan", "--gpu", "rtx_3090", "--model", "llama-3-8b-instruct", "--method", "qlora", "--find", "gpus")
    assert wrong.exit_code == 2 and "--method: not an inference setting" in wrong.output


def test_plan_workload_defaults_to_inference_everywhere():
    body = {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "find": ["max_batch_size"]}
    assert vramplan.plan(body) == vramplan.plan({**body, "workload": "inference"})


def test_plugins_table_has_a_header_row():
    lines = run("plugins").output.splitlines()
    assert lines[0].split() == ["name", "version", "kind", "hooks"]
    assert any(line.startswith("vramplan.plugins.catalogs") for line in lines[1:])


def test_a_gguf_model_file_is_titled_by_its_name_and_runs_on_llama_cpp(tmp_path):
    from gguf import LlamaFileType
    from test_modelfiles import _write_tiny_gguf

    path = tmp_path / "weights-folder-name.gguf"
    _write_tiny_gguf(path, file_type=LlamaFileType.MOSTLY_F16)  # general.name "tiny-llama", an fp16 GGUF
    table = run("inference", "--gpu", "rtx_4090", "--model-file", str(path))
    assert table.exit_code == 0, table.output
    assert table.output.startswith("tiny-llama on 1 x NVIDIA GeForce RTX 4090")
    assert "runtime llama.cpp" in table.output.splitlines()[0]  # fp16 alone would default to transformers
    report = run("inference", "--gpu", "rtx_4090", "--model-file", str(path), "--format", "markdown")
    assert report.output.startswith("# Inference: tiny-llama on 1 x NVIDIA GeForce RTX 4090")


def test_import_of_an_incomplete_config_is_an_error_without_save_as(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama", "hidden_size": 2048}))  # no layers, heads, vocab ...
    result = run("models", "import", str(path))
    assert result.exit_code == 2
    assert "num_hidden_layers" in result.output and "Traceback" not in result.output


def test_import_prints_sizes_with_two_decimals():
    from vramplan.cli.models import _summary_text

    # Llama 3 8B Q4_K_M as llama.cpp reads it: 8,030,261,248 parameters in 4,920,734,720 bytes = 4.58 GiB
    text = _summary_text({"name": "Meta-Llama-3-8B-Instruct", "kind": "gguf", "params": 8_030_261_248,
                          "weights_bytes": 4_920_734_720, "weights_gib": round(4_920_734_720 / 2**30, 2),
                          "quantization": "q4_k_m", "tensor_types": {}, "notes": []})
    assert "8.03 B (8,030,261,248)" in text
    assert "4,920,734,720 bytes (4.58 GiB)" in text


@pytest.mark.parametrize("command", [["models", "list"], ["gpus"], ["runtimes"], ["plugins"], ["formulas", "list"]])
def test_listing_commands_share_one_format_option(command):
    r = run(*command, "--help")
    assert r.exit_code == 0, r.output
    assert "--format [table|json] table for people, json for scripts [default: table]" in " ".join(r.output.split())
