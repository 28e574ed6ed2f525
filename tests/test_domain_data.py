"""Optimizers, hardware classes, runtime constants and format rules are catalog data.

Each test adds or changes one of them the way a user or a plugin would (a YAML file in
VRAMPLAN_CATALOG_DIR, or a hook) and checks the estimate against values worked out by hand.
"""

from __future__ import annotations

import textwrap

import pytest

import vramplan
from vramplan import hookimpl
from vramplan.catalog import build_catalog, get_catalog, reset
from vramplan.errors import RequestError
from vramplan.request import validate
from vramplan.resolve import resolve
from vramplan.scenario import build

from conftest import trace_of

LLAMA32_1B = "llama-3.2-1b-instruct"
P_1B = 1_235_814_400  # Llama 3.2 1B parameters (tied head)

LION = """\
    optimizers:
      lion:
        label: Lion
        states_per_param: 1
        state_dtype: param
        variant_of: adamw_never_used_here
        source: 'Chen et al. 2023, Symbolic Discovery of Optimization Algorithms (arXiv:2302.06675): one momentum buffer'
    """


def _user_catalog(tmp_path, monkeypatch, files: dict[str, str]):
    """Write files into a user catalog folder and build a catalog that reads it."""
    root = tmp_path / "catalogs"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    monkeypatch.setenv("VRAMPLAN_CATALOG_DIR", str(root))
    return build_catalog(load_entrypoints=False)


@pytest.fixture
def installed():
    """Install a catalog for the block; always put the real one back."""
    def install(cat):
        reset(cat)
        return cat

    yield install
    reset()


def _lion_files(extra: str = "") -> dict[str, str]:
    return {"optimizers/lion.yaml": LION.replace("        variant_of: adamw_never_used_here\n", "").rstrip(" ") + extra}


def test_lion_added_as_a_user_catalog_file_works_end_to_end(tmp_path, monkeypatch, installed):
    cat = installed(_user_catalog(tmp_path, monkeypatch, _lion_files()))
    assert cat.optimizers.get("lion").provenance.file.endswith("optimizers/lion.yaml")
    body = {"gpu_key": "h100_80", "llm_key": LLAMA32_1B, "finetuning_method": "full", "fine_tuning_quantization": "bf16",
            "batch_size": 4, "seq_length": 1024, "trace": True}
    lion = vramplan.estimate_finetuning({**body, "optimizer": "lion"})
    adamw = vramplan.estimate_finetuning({**body, "optimizer": "adamw"})
    t, ta = trace_of(lion), trace_of(adamw)
    # Pure bf16 full fine-tuning: Lion keeps one momentum buffer in the parameters' bf16:
    # 1,235,814,400 x 1 x 2 bytes = 2,471,628,800 bytes = 2.30 GiB; AdamW keeps two: 4,943,257,600 = 4.60 GiB.
    assert t["optimizer_states_total_bytes"] == 2_471_628_800
    assert ta["optimizer_states_total_bytes"] == 4_943_257_600
    assert lion["memory_details"]["Optimizer States"] == 2.30 and adamw["memory_details"]["Optimizer States"] == 4.60
    # torch-style step (no fused kernel): one state-sized temporary = 1,235,814,400 x 2 bytes.
    assert t["optimizer_step_temp_bytes"] == 2_471_628_800
    assert "optimizer lion" in " ".join(lion["assumptions"])


def test_unknown_optimizer_names_the_closest_keys(tmp_path, monkeypatch, installed):
    installed(_user_catalog(tmp_path, monkeypatch, _lion_files()))
    with pytest.raises(RequestError) as err:
        vramplan.estimate_finetuning({"gpu_key": "h100_80", "llm_key": LLAMA32_1B, "optimizer": "lino"})
    assert err.value.problems == [("optimizer", "unknown optimizer 'lino'")]
    assert "lion" in err.value.suggestions["optimizer"]


def test_seed_flags_pick_a_registered_variant(tmp_path, monkeypatch, installed):
    lion_8bit = """\
      lion_8bit:
        label: Lion 8-bit
        states_per_param: 1
        state_dtype: int8
        block_size: 256
        block_scale_bytes: 4
        fused_step: true
        variant_of: lion
        source: bitsandbytes optim/lion.py Lion8bit = Optimizer1State(optim_bits=8), 256-element blocks
    """
    installed(_user_catalog(tmp_path, monkeypatch, _lion_files(lion_8bit)))
    out = vramplan.estimate_finetuning({"gpu_key": "h100_80", "llm_key": LLAMA32_1B, "finetuning_method": "full",
                                        "fine_tuning_quantization": "bf16", "optimizer": "lion", "trace": True,
                                        "optimization_config": {"use_8bit_optimizer": True}})
    t = trace_of(out)
    # One uint8 buffer + a 4-byte absmax per 256 elements: 1,235,814,400 x (1 + 4/256) = 1,255,124,000 bytes.
    assert t["optimizer_states_total_bytes"] == pytest.approx(1_255_124_000, rel=1e-12)
    assert "optimizer lion_8bit" in " ".join(out["assumptions"]) and "use_8bit_optimizer" in out["active_optimizations"]


def test_broken_user_catalog_file_is_skipped_and_named(tmp_path, monkeypatch, installed):
    cat = installed(_user_catalog(tmp_path, monkeypatch, {
        **_lion_files(),
        "gpus/mine.yaml": "gpus:\n  my_gpu: {label: Mine, memory_gib: eighty}\n",
        "optimizers/typo.yaml": "optimizers:\n  adam2:\n    label: x\n    states_per_param: 2\n    state_dtype: fp64\n"
                                "    source: https://example.com/x\n",
    }))
    errors = {f.error.split(" skipped: ")[0]: f.error for f in cat.host.failures}
    assert set(errors) == {str(tmp_path / "catalogs/gpus/mine.yaml"), str(tmp_path / "catalogs/optimizers/typo.yaml")}
    assert "$.gpus.my_gpu.memory_gib: 'eighty' is not of type 'number'" in errors[str(tmp_path / "catalogs/gpus/mine.yaml")]
    assert "'fp64' is not one of 'param', 'fp32', 'bf16', 'fp16', 'int8'" in errors[str(tmp_path / "catalogs/optimizers/typo.yaml")]
    assert "my_gpu" not in cat.gpus and "adam2" not in cat.optimizers and "lion" in cat.optimizers
    out = vramplan.estimate_finetuning({"gpu_key": "h100_80", "llm_key": LLAMA32_1B, "optimizer": "lion"})
    assert out["memory_status"] == "okay"


def test_optimizer_naming_a_missing_variant_base_is_skipped(tmp_path, monkeypatch):
    cat = _user_catalog(tmp_path, monkeypatch, {"optimizers/lion.yaml": LION})
    assert "lion" not in cat.optimizers
    [failure] = cat.host.failures
    assert "optimizers 'lion' skipped: variant_of 'adamw_never_used_here' is not another registered optimizer" in failure.error


# -- hardware classes ------------------------------------------------------------------------------

GPU = {"label": "Test GPU 32GB", "vendor": "other", "category": "datacenter", "architecture": "test-arch",
       "memory_gib": 32, "memory_type": "HBM", "memory_bandwidth_gb_s": 1000, "fp32_tflops": 10,
       "fp16_tflops": 100, "bf16_tflops": 100, "tdp_w": 300, "flash_attention": True,
       "default_interconnect": "pcie4", "source": "https://example.com/test-gpu"}


def _scenario(cat, gpu_key: str, runtime: str = "transformers"):
    res = resolve(cat, validate({"gpu_key": gpu_key, "llm_key": "llama-3-8b-instruct", "runtime": runtime}, "inference"),
                  "inference")
    return res, build(res)


def test_builtin_gpus_get_their_class_and_its_efficiencies():
    cat = get_catalog()
    assert {cat.gpu_classes[k] for k in ("h100_80", "rtx_4090", "mi300x", "apple_m2_max_64", "custom_discrete")} == \
        {"nvidia_datacenter", "nvidia_consumer", "amd", "apple"}
    assert cat.gpu_classes["custom_discrete"] == "nvidia_consumer"  # named in its entry: an RTX 4090 placeholder
    assert all(cls is not None for key, cls in cat.gpu_classes.items() if ("gpus", key) in cat.builtin)
    # transformers: decode_bw_eff 0.85 plain, decode_bw_eff_amd 0.75 (catalogs/runtimes/transformers.yaml).
    assert _scenario(cat, "h100_80")[1]["eff_decode_bw"] == 0.85
    res, s = _scenario(cat, "mi300x")
    assert s["eff_decode_bw"] == 0.75
    assert any(w.startswith("transformers on ROCm/HIP: ") for w in res.warnings)


def test_runtime_settings_reach_the_per_class_efficiencies():
    """A request's runtime_settings override the efficiencies the engine reads per hardware class, as every other
    constant (they were read from the profile alone, so decode_bw_eff: 0.5 changed nothing). The plain name is what
    the request means for whatever GPU it runs on, so it wins over the profile's class value; <name>_<class> wins
    where the GPU is of that class and, for another class, changes nothing and says so. vLLM has no per-SM cap
    (decode_sm_stream_gb_s 0): the stream is the datasheet bandwidth x the share."""
    def stream(gpu, **settings):
        out = vramplan.estimate_inference({"gpu_key": gpu, "llm_key": "llama-3-8b-instruct", "runtime": "vllm",
                                           "input_tokens": 512, "output_tokens": 128, "concurrent_users": 4,
                                           "runtime_settings": settings, "trace": True})
        t = trace_of(out)
        return t["decode_stream_gb_s"], t["decode_memory_s"], out["warnings"]

    assert stream("h100_80")[0] == pytest.approx(3350 * 0.85)  # vLLM's plain 0.85
    assert stream("h100_80", decode_bw_eff=0.5)[0] == pytest.approx(3350 * 0.5)
    assert stream("mi300x")[0] == pytest.approx(5300 * 0.75)  # vLLM's decode_bw_eff_amd
    amd_default, amd_half = stream("mi300x"), stream("mi300x", decode_bw_eff=0.5)
    assert amd_half[0] == pytest.approx(5300 * 0.5)  # the plain setting over the profile's amd value
    assert amd_half[1] == pytest.approx(amd_default[1] * 0.75 / 0.5)  # the same bytes, streamed at 2/3 the rate
    assert stream("mi300x", decode_bw_eff=0.5, decode_bw_eff_amd=0.6)[0] == pytest.approx(5300 * 0.6)
    h100 = stream("h100_80", decode_bw_eff_amd=0.6)
    assert h100[0] == pytest.approx(3350 * 0.85)
    assert [w for w in h100[2] if w.startswith("runtime_settings.decode_bw_eff_amd does not apply: h100_80 is not in "
                                                "hardware class amd (its classes: nvidia_datacenter); set decode_bw_eff")]
    # a class the profile keeps no value for is still a class: vLLM on an RTX 4090 (1,008 GB/s) has only the plain 0.85
    assert stream("rtx_4090")[0] == pytest.approx(1008 * 0.85)
    assert stream("rtx_4090", decode_bw_eff_nvidia_consumer=0.5)[0] == pytest.approx(1008 * 0.5)
    with pytest.raises(RequestError, match="has no constant 'decode_bw_eff_martian'"):
        stream("rtx_4090", decode_bw_eff_martian=0.5)


def test_runtime_settings_reach_the_training_mfu():
    """train_mfu is per class too: halving it doubles a step's matmul time (tokens x FLOPs per token / (bf16 FLOP/s
    x train_mfu)), and the step (matmuls, elementwise traffic, optimizer) takes longer by that much."""
    body = {"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "training_type": "lora", "seq_length": 2048,
            "batch_size": 4, "runtime": "transformers", "trace": True}
    mfu = get_catalog().runtimes.get("transformers").data["constants"]["train_mfu"]["value"]
    usual = vramplan.estimate_finetuning(body)
    half = vramplan.estimate_finetuning({**body, "runtime_settings": {"train_mfu": mfu / 2}})
    gemm, gemm_half = trace_of(usual)["train_gemm_s_per_step"], trace_of(half)["train_gemm_s_per_step"]
    assert gemm_half == pytest.approx(2 * gemm)
    # 4 samples a step at the sample rates each reports: the step grew by the matmul time it doubled
    assert 4 / half["samples_per_second"] - 4 / usual["samples_per_second"] == pytest.approx(gemm, rel=0.01)


class OtherVendorGpu:
    __name__ = "test-gpu-plugin"

    @hookimpl
    def register_gpus(self, register):
        register("test_gpu_32", dict(GPU))


def test_a_gpu_no_class_matches_gets_a_warning_not_a_silent_default():
    cat = build_catalog(load_entrypoints=False, extra_plugins=(OtherVendorGpu(),))
    assert cat.gpu_classes["test_gpu_32"] is None and cat.hardware_orders["test_gpu_32"] == ()
    res, s = _scenario(cat, "test_gpu_32")
    assert s["eff_decode_bw"] == 0.85  # the runtime's plain value...
    [warning] = [w for w in res.warnings if "matches no hardware class" in w]  # ...and it says so
    assert warning.startswith("GPU test_gpu_32 (vendor other, category datacenter) matches no hardware class")


class AcmeClass:
    __name__ = "acme-class-plugin"

    @hookimpl
    def register_hardware_classes(self, register):
        register("acme", {"label": "ACME accelerators", "match": [{"vendor": "other", "architecture": "test-arch"}],
                          "backend": "ACME RT", "calibrated": False, "fallback": "amd",
                          "source": "https://example.com/acme (test)"})


def test_a_plugin_class_with_a_fallback_takes_that_class_efficiencies():
    cat = build_catalog(load_entrypoints=False, extra_plugins=(OtherVendorGpu(), AcmeClass()))
    assert cat.gpu_classes["test_gpu_32"] == "acme"
    # acme falls back to amd, which has no fallback (catalogs/hardware_classes): looked up once, at load
    assert cat.hardware_orders["test_gpu_32"] == ("acme", "amd")
    res, s = _scenario(cat, "test_gpu_32")
    assert res.hardware_order is cat.hardware_orders["test_gpu_32"]
    # No runtime has *_acme constants; the fallback amd gives transformers' decode_bw_eff_amd 0.75,
    # prefill_flops_eff_amd and train_mfu_amd likewise.
    consts = cat.runtimes.get("transformers").data["constants"]
    assert s["eff_decode_bw"] == 0.75 == consts["decode_bw_eff_amd"]["value"]
    assert s["eff_prefill_flops"] == consts["prefill_flops_eff_amd"]["value"]
    assert any(w.startswith("transformers on ACME RT: ") for w in res.warnings)
    assert not any("matches no hardware class" in w for w in res.warnings)


def test_a_plugin_class_tied_with_a_builtin_one_is_skipped():
    class Greedy:
        __name__ = "greedy-class-plugin"

        @hookimpl
        def register_hardware_classes(self, register):
            register("hopper", {"label": "Hopper", "match": [{"vendor": "nvidia", "architecture": "hopper"}],
                                "backend": "CUDA", "calibrated": True, "source": "https://example.com/x (test)"})

    cat = build_catalog(load_entrypoints=False, extra_plugins=(Greedy(),))
    assert "hopper" not in cat.hardware_classes and cat.gpu_classes["h100_80"] == "nvidia_datacenter"
    assert cat.hardware_orders["h100_80"] == ("nvidia_datacenter",)  # ordered after the skipped class left
    [failure] = [f for f in cat.host.failures if f.name == "greedy-class-plugin"]
    assert "hardware_classes 'hopper' skipped: matches GPU" in failure.error and "nvidia_datacenter" in failure.error


def test_a_more_specific_plugin_class_wins():
    class Hopper:
        __name__ = "hopper-class-plugin"

        @hookimpl
        def register_hardware_classes(self, register):
            register("hopper", {"label": "Hopper", "backend": "CUDA", "calibrated": True, "fallback": "nvidia_datacenter",
                                "match": [{"vendor": "nvidia", "category": "datacenter", "architecture": "hopper"}],
                                "source": "https://example.com/x (test)"})

    cat = build_catalog(load_entrypoints=False, extra_plugins=(Hopper(),))
    assert cat.gpu_classes["h100_80"] == "hopper" and cat.gpu_classes["a100_80"] == "nvidia_datacenter"
    assert cat.hardware_orders["h100_80"] == ("hopper", "nvidia_datacenter")
    assert _scenario(cat, "h100_80")[1]["eff_decode_bw"] == 0.85  # falls back to the plain value


# -- runtime constants -----------------------------------------------------------------------------

def test_plugin_runtime_with_a_new_constant_and_a_formula_that_uses_it(tmp_path, with_plugins):
    builtin = get_catalog().runtimes.get("transformers").data
    (tmp_path / "reserve.yaml").write_text(textwrap.dedent("""\
        id: acme_reserve
        kind: helper
        description: ACME's server reserves a fixed pool at start-up.
        formulas:
          - id: fixed_overhead_bytes
            description: Runtime memory that does not grow with the workload, plus ACME's reserve.
            inputs: [rt_cuda_context_mib, rt_library_workspace_mib, rt_cuda_graph_mib, non_torch_bytes, rt_acme_reserve_mib]
            expr: (rt_cuda_context_mib + rt_library_workspace_mib + rt_cuda_graph_mib + rt_acme_reserve_mib) * 1048576 + non_torch_bytes
            unit: bytes
        cases:
          - formula: fixed_overhead_bytes
            note: 716.8 + 66 + 0 + 512 MiB = 1294.8 MiB = 1,357,699,891.2 bytes
            inputs: {rt_cuda_context_mib: 716.8, rt_library_workspace_mib: 66, rt_cuda_graph_mib: 0, non_torch_bytes: 0, rt_acme_reserve_mib: 512}
            expected: 1357699891.2
        """))

    class Acme:
        __name__ = "acme-runtime-plugin"

        @hookimpl
        def register_runtime_constants(self, register):
            register("acme_reserve_mib", {"unit": "MiB", "description": "memory ACME's server reserves at start-up",
                                          "default": 0, "source": "other runtimes reserve nothing of the kind"})

        @hookimpl
        def register_runtimes(self, register):
            constants = {**builtin["constants"], "acme_reserve_mib": {"value": 512, "unit": "MiB", "source": "ACME docs (test)"}}
            register("acme-server", {"label": "ACME server", "description": "test", "constants": constants})

        @hookimpl
        def register_formula_dirs(self):
            return [tmp_path]

    with with_plugins(Acme()) as cat:
        assert cat.host.failures == []
        assert cat.runtimes.get("vllm").data["constants"]["acme_reserve_mib"]["value"] == 0  # the declared default
        body = {"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "trace": True}
        acme = trace_of(vramplan.estimate_inference({**body, "runtime": "acme-server"}))
        plain = trace_of(vramplan.estimate_inference({**body, "runtime": "transformers"}))
        # transformers: (716.8 + 66.0009765625 + 0) MiB = 782.8009765625 x 1,048,576 = 820,826,316.8 bytes (the
        # workspaces are 69,207,040 bytes); ACME adds 512 MiB = 536,870,912.
        assert plain["fixed_overhead_bytes"] == pytest.approx(820_826_316.8)
        assert acme["fixed_overhead_bytes"] == pytest.approx(820_826_316.8 + 536_870_912)


def test_plugin_formula_needing_an_undeclared_constant_is_skipped(tmp_path):
    (tmp_path / "needs.yaml").write_text(textwrap.dedent("""\
        id: needs
        kind: helper
        description: needs rt_acme_reserve_mib, which nothing declares
        formulas:
          - id: fixed_overhead_bytes
            description: x
            inputs: [rt_acme_reserve_mib]
            expr: rt_acme_reserve_mib * 1048576
            unit: bytes
        """))

    class Needs:
        __name__ = "needs-plugin"

        @hookimpl
        def register_formula_dirs(self):
            return [tmp_path]

    cat = build_catalog(load_entrypoints=False, extra_plugins=(Needs(),))
    assert cat.formulas.formulas["fixed_overhead_bytes"].file == "formulas/memory/shared_and_per_user.yaml"
    [failure] = [f for f in cat.host.failures if f.name == "needs-plugin"]
    assert "input 'rt_acme_reserve_mib' is neither a scenario variable nor a formula id" in failure.error


# -- format rules ----------------------------------------------------------------------------------

def test_resolve_and_planner_read_the_same_format_rules(with_plugins):
    class Fp16Lora:
        __name__ = "fp16-lora-plugin"

        @hookimpl
        def register_format_rules(self, register):
            # As specific as the built-in lora rule; a tie goes to the rule registered last (plugins after built-ins).
            register("lora_fp16", {"when": {"workload": "finetuning", "finetuning_method": "lora"},
                                   "weights": "fp16", "source": "https://example.com/x (test)"})

    body = {"gpu_key": "h100_80", "llm_key": LLAMA32_1B, "finetuning_method": "lora"}
    assert "(bf16), 2.30 GiB" in " ".join(vramplan.estimate_finetuning(body)["assumptions"])
    with with_plugins(Fp16Lora()):
        out = vramplan.estimate_finetuning(body)
        answer = vramplan.plan({**body, "workload": "finetuning", "find": ["best_quantization"]})
    # 1,235,814,400 params x 2 bytes = 2.30 GiB either way; the format named is what changed.
    assert "weights: FP16 (fp16), 2.30 GiB" in " ".join(out["assumptions"])
    assert answer["best_quantization"]["reason"] == "nothing to choose: lora fixes the base weights' format (fp16)"


def test_gguf_defaults_to_llama_cpp_and_full_fp8_warns():
    out = vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m"})
    assert out["runtime"] == "llama.cpp" and "runtime: llama.cpp (the default for GGUF quantizations)" in out["assumptions"]
    ft = vramplan.estimate_finetuning({"gpu_key": "h100_80", "llm_key": LLAMA32_1B, "finetuning_method": "full",
                                       "fine_tuning_quantization": "fp8"})
    assert ft["warnings"][0].startswith("full fine-tuning in fp8 keeps bf16 weights")
