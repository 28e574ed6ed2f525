"""A runtime's ``deployment`` block in a single estimate (engine/resolve.py ``_deployment``).

The planner searched only where a runtime and its format kernels run; a single estimate said nothing. Now it warns
where the runtime, or its kernels for the requested format, do not run on the GPU, and where the runtime falls back
rather than refusing - transformers 5.25's FP8 and MXFP4 quantizers dequantize the checkpoint to bf16 below their
compute capability or off CUDA / ROCm / XPU (quantizer_finegrained_fp8.py, quantizer_mxfp4.py validate_environment)
- the estimate runs in bf16, as the runtime does.

Weights are worked out from the configs by hand:

gpt-oss-20b (hidden 2880, 24 layers, 64 heads of 64, 8 KV heads, 32 experts of width 2880, vocab 201088, untied):
  attention a layer   q 2880x4096+4096 + k, v 2 x (2880x512+512) + o 4096x2880+2880 + sinks 64   = 26,550,144
  MoE a layer         router 2880x32+32 + gate_up 32x2880x5760 + 32x5760 + down 32x2880x2880 + 32x2880 = 796,631,072
  norms a layer       2 x 2880                                                                    = 5,760
  24 layers           24 x 823,186,976                                                            = 19,756,487,424
  embeddings, head    2 x 201088 x 2880                                                           = 1,158,266,880
  final norm          2880                                               total                    = 20,914,757,184
  bf16                x 2 bytes = 41,829,514,368 B = 38.96 GiB
  MXFP4 experts       24 x 32 x 2880 x (5760 + 2880) = 19,110,297,600 weights at 4.25 bits        = 10,152,345,600 B
                      the other 1,804,459,584 parameters in bf16                                  =  3,608,919,168 B
                      13,761,264,768 B = 12.82 GiB

Llama 3.1 8B: 8,030,261,248 parameters; bf16 16,060,522,496 B = 14.96 GiB. FP8 keeps the embeddings and head
(2 x 128256 x 4096 = 1,050,673,152) and the 65 norms of 4096 (266,240) at 16 bits: 2 x 1,050,939,392 =
2,101,878,784 B, and the other 6,979,321,856 weights at one byte: 9,081,200,640 B = 8.46 GiB.
"""

from __future__ import annotations

import re
import textwrap

import vramplan
from vramplan.catalog import build_catalog, get_catalog
from vramplan.deployspace import supported

GIB = 2**30
OSS_BF16 = 20_914_757_184 * 2 / GIB
OSS_MXFP4 = (19_110_297_600 * 4.25 / 8 + (20_914_757_184 - 19_110_297_600) * 2) / GIB
LLAMA_BF16 = 8_030_261_248 * 2 / GIB
LLAMA_FP8 = ((8_030_261_248 - 1_050_673_152 - 266_240) + (1_050_673_152 + 266_240) * 2) / GIB


def infer(llm: str, quant: str, runtime: str, gpu: str) -> dict:
    return vramplan.estimate_inference({"llm_key": llm, "gpu_key": gpu, "quantization": quant, "runtime": runtime,
                                        "seq_length": 2048})


def said(out: dict, pattern: str) -> list[str]:
    return [w for w in out["warnings"] if re.search(pattern, w)]


def test_hand_worked_weights():
    assert round(OSS_BF16, 2) == 38.96 and round(OSS_MXFP4, 2) == 12.82
    assert round(LLAMA_BF16, 2) == 14.96 and round(LLAMA_FP8, 2) == 8.46


def test_transformers_dequantizes_mxfp4_below_compute_capability_7_5():
    out = infer("gpt-oss-20b", "mxfp4", "transformers", "v100_32")
    assert out["model_weights_gb"] == round(OSS_BF16, 2)
    [w] = said(out, "dequantizes")
    assert w.startswith("transformers dequantizes mxfp4 weights to bf16 on the NVIDIA V100")
    assert "compute capability 7.0 is below the 7.5 it needs" in w and "quantizer_mxfp4.py" in w
    # the runtimes searched by default that run MXFP4 on a V100 as it is: llama.cpp (vLLM's MXFP4 needs 8.0)
    assert w.endswith("estimated in bf16 (llama.cpp keeps them in mxfp4 there)")
    # 38.96 GiB of weights do not fit a 32 GiB card: the answer says so, where MXFP4 would have fitted
    assert out["vram_usage"] > 32 and said(out, "has 32 GiB")


def test_transformers_dequantizes_mxfp4_on_apple_mps():
    out = infer("gpt-oss-20b", "mxfp4", "transformers", "apple_m3_max_128")
    assert out["model_weights_gb"] == round(OSS_BF16, 2)
    [w] = said(out, "dequantizes")
    assert "runs on nvidia, amd, intel GPUs, not apple ones" in w


def test_mxfp4_stays_where_transformers_runs_it():
    for gpu in ("h100_80", "t4", "mi300x"):  # 9.0, 7.5 (the bound itself) and ROCm, whose capability passes the check
        out = infer("gpt-oss-20b", "mxfp4", "transformers", gpu)
        assert out["model_weights_gb"] == round(OSS_MXFP4, 2), gpu
        assert not said(out, "dequantizes|does not run"), gpu


def test_transformers_dequantizes_fp8_below_ada():
    a100 = infer("llama-3.1-8b-instruct", "fp8", "transformers", "a100_80")
    assert a100["model_weights_gb"] == round(LLAMA_BF16, 2)
    [w] = said(a100, "dequantizes")
    assert "fp8 weights to bf16" in w and "compute capability 8.0 is below the 8.9 it needs" in w
    assert w.endswith("(sglang, tgi, vllm keep them in fp8 there)")  # FP8 Marlin (W8A16) from Ampere on
    ada = infer("llama-3.1-8b-instruct", "fp8", "transformers", "rtx_4090")
    assert ada["model_weights_gb"] == round(LLAMA_FP8, 2) and not said(ada, "dequantizes")


def test_a_runtime_off_its_hardware_is_said_and_estimated_as_asked():
    out = infer("llama-3.1-8b-instruct", "bf16", "vllm", "apple_m3_max_128")
    assert out["model_weights_gb"] == round(LLAMA_BF16, 2)
    assert said(out, r"^vllm does not run on the Apple M3 Max .*: it runs on nvidia, amd, intel GPUs, not apple ones; "
                     r"estimated as if it did$")
    out = infer("llama-3.1-8b-instruct", "bf16", "tensorrt-llm", "mi300x")
    assert said(out, r"^tensorrt-llm does not run on the AMD Instinct MI300X: it runs on nvidia GPUs, not amd ones")


def test_format_kernels_off_their_hardware_are_said_and_estimated_as_asked():
    out = infer("llama-3.1-8b-instruct", "fp8", "vllm", "t4")
    assert out["model_weights_gb"] == round(LLAMA_FP8, 2)  # no fallback: as asked
    [w] = said(out, "does not run fp8")
    assert "compute capability 7.5 is below the 8.0 it needs" in w and w.endswith("estimated as if it did")
    out = infer("llama-3.1-8b-instruct", "fp8", "vllm", "a100_80")  # FP8 Marlin from Ampere on
    assert not said(out, "does not run")


def test_the_planner_reads_the_same_requirements():
    cat = get_catalog()
    needs = cat.runtimes.get("transformers").data["deployment"]["formats"]["mxfp4"]
    assert not supported(needs, cat.gpus.get("apple_m3_max_128").data)
    assert not supported(needs, cat.gpus.get("v100_32").data)
    assert supported(needs, cat.gpus.get("t4").data) and supported(needs, cat.gpus.get("mi300x").data)


def test_dequantized_to_must_name_a_weights_format(tmp_path):
    folder = tmp_path / "runtimes"
    folder.mkdir()
    (folder / "broken.yaml").write_text(textwrap.dedent("""\
        runtimes:
          fallbacky:
            label: Fallbacky
            description: a vLLM whose FP8 falls back to a format that does not exist
            extends: vllm
            deployment:
              vendors: [nvidia]
              kv_cache_formats: [fp16]
              source: test data
              formats:
                fp8: {min_compute_capability: '8.9', dequantized_to: bf17, source: test data}
        """))

    class Plugin:
        __name__ = "broken-data"

        @vramplan.hookimpl
        def register_catalog_dirs(self):
            return [tmp_path]

    cat = build_catalog(load_entrypoints=False, extra_plugins=(Plugin(),))
    [failure] = [f for f in cat.host.failures if f.name == "broken-data"]
    assert "deployment.formats.fp8.dequantized_to: 'bf17' is not a registered weights format" in failure.error
    assert "fallbacky" not in cat.runtimes and "vllm" in cat.runtimes


def test_the_listing_and_the_cli_show_where_a_runtime_runs():
    from click.testing import CliRunner

    from vramplan.cli import main

    listed = {r["key"]: r for r in vramplan.list_runtimes()}
    dep = listed["transformers"]["deployment"]
    assert dep["formats"]["mxfp4"]["dequantized_to"] == "bf16" and dep["formats"]["mxfp4"]["min_compute_capability"] == "7.5"
    assert listed["tensorrt-llm"]["deployment"]["vendors"] == ["nvidia"]
    out = CliRunner().invoke(main, ["runtimes", "transformers"]).output
    assert "runs on: nvidia, amd, intel, apple GPUs (PyTorch backends" in out
    assert ("mxfp4 weights: nvidia, amd, intel GPUs; NVIDIA from compute capability 7.5; not gaudi2, gaudi3; "
            "elsewhere dequantized to bf16 (transformers 5.25 quantizers/quantizer_mxfp4.py") in out
    out = CliRunner().invoke(main, ["runtimes", "tensorrt-llm"]).output
    assert "runs on: nvidia GPUs; NVIDIA from compute capability 8.0 (TensorRT-LLM docs" in out


def test_vllm_runs_nvfp4_below_blackwell_through_fp4_marlin():
    # ModelOptNvFp4Config.get_min_capability 75; below Blackwell the FP4 Marlin kernels (W4A16)
    for gpu in ("h100_80", "a100_80", "t4"):
        assert not said(infer("llama-3.1-8b-instruct", "nvfp4", "vllm", gpu), "does not run"), gpu
    [w] = said(infer("llama-3.1-8b-instruct", "nvfp4", "vllm", "v100_32"), "does not run")
    assert w.startswith("vllm does not run nvfp4 weights") and "compute capability 7.0 is below the 7.5 it needs" in w
    # below the runtime's own bound, that is what is said, once
    [w] = said(infer("llama-3.1-8b-instruct", "nvfp4", "vllm", "p100"), "does not run")
    assert w.startswith("vllm does not run on the NVIDIA Tesla P100") and "6.0 is below the 7.0 it needs" in w


def test_a_kv_format_the_runtime_does_not_keep_is_said():
    out = infer("llama-3.1-8b-instruct", "bf16", "vllm", "h100_80")
    body = {"llm_key": "llama-3.1-8b-instruct", "gpu_key": "h100_80", "quantization": "bf16", "runtime": "vllm",
            "seq_length": 2048}
    q8 = vramplan.estimate_inference({**body, "kv_cache_quantization": "q8_0"})
    assert said(q8, r"^vllm has no q8_0 KV cache \(it keeps fp16, bf16, fp8\); estimated as asked$")
    assert not said(out, "KV cache \\(")
    # an fp32 model's cache under vLLM is its dtype ("auto"), not a format vLLM's flags name: nothing to say
    fp32 = vramplan.estimate_inference({**body, "quantization": "fp32"})
    assert not said(fp32, "has no")


def test_sglang_nvfp4_marlin_and_vllm_awq_from_turing():
    # SGLang PR #19652: the NVFP4 Marlin fallback below Blackwell (SM75+)
    assert not said(infer("llama-3.1-8b-instruct", "nvfp4", "sglang", "h100_80"), "does not run")
    # vLLM AWQConfig.get_min_capability 75: a V100 (7.0) runs vLLM but not its AWQ kernels
    [w] = said(infer("llama-3.1-8b-instruct", "awq", "vllm", "v100_32"), "does not run")
    assert w.startswith("vllm does not run awq weights") and "7.0 is below the 7.5 it needs" in w
    assert not said(infer("llama-3.1-8b-instruct", "awq", "vllm", "t4"), "does not run")


def test_a_gpu_of_no_named_vendor_is_not_judged():
    # the seed's custom GPU and a plugin's own hardware carry vendor "other": no runtime's block can say they
    # fall short, so nothing is said (the planner still searches only the vendors a block names)
    for gpu in ("custom_discrete", "acme_x1"):
        out = vramplan.estimate_inference({"llm_key": "llama-3.1-8b-instruct", "gpu_key": gpu, "custom_vram": 48,
                                           "seq_length": 2048})
        assert not said(out, "does not run|dequantizes"), gpu
    # a custom Apple GPU is Apple's: vLLM has no Metal backend
    out = vramplan.estimate_inference({"llm_key": "llama-3.1-8b-instruct", "gpu_key": "custom_apple_silicon",
                                       "custom_vram": 64, "runtime": "vllm", "seq_length": 2048})
    assert said(out, "^vllm does not run on the Custom Apple silicon: it runs on nvidia, amd, intel GPUs, not apple ones")
