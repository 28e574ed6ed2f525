"""GGUF file types as llama-quantize writes them (catalogs/quantization/gguf.yaml + vramplan.ggufmix).

The fixtures are published tables, copied here digit for digit:

* llama.cpp tools/quantize/README.md, "meta-llama/Llama-3.1-8B": bits/weight and size (GiB) of every
  type, made by llama-quantize (types that need an importance matrix were made with one).
* dranger003's Llama 3 70B table (llama.cpp PR #6745, comment 2093892514): file sizes in GiB, every
  type quantized with an importance matrix. These are whole files, so the GGUF header (tokenizer and
  metadata, a few MiB) comes on top of the tensor data the engine computes.

A transcription of llama_tensor_get_type_impl (src/llama-quant.cpp) written here, branch for branch,
checks the catalog's flattened rules on models that reach the special cases (8 experts, 70B, no GQA,
MLA, tied embeddings, rows that are no whole number of blocks).
"""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

import vramplan
from vramplan import hookimpl
from vramplan.catalog import build_catalog, get_catalog
from vramplan.errors import CatalogError
from vramplan.ggufmix import role_bits, tensor_types, tensors

GIB = 2**30
CAT = get_catalog()

# tools/quantize/README.md, Llama-3.1-8B: type -> (bits/weight, size GiB)
README_8B = {
    "iq1_s": (2.0042, 1.87), "iq1_m": (2.1460, 2.01), "iq2_xxs": (2.3824, 2.23), "iq2_xs": (2.5882, 2.42),
    "iq2_s": (2.7403, 2.56), "iq2_m": (2.9294, 2.74), "iq3_xxs": (3.2548, 3.04), "iq3_xs": (3.4977, 3.27),
    "iq3_s": (3.6606, 3.42), "iq3_m": (3.7628, 3.52), "iq4_xs": (4.4597, 4.17), "iq4_nl": (4.6818, 4.38),
    "q2_k_s": (2.9697, 2.78), "q2_k": (3.1593, 2.95), "q3_k_s": (3.6429, 3.41), "q3_k_l": (4.2979, 4.02),
    "q4_k_s": (4.6672, 4.36), "q4_k_m": (4.8944, 4.58), "q5_k_s": (5.5704, 5.21), "q5_k_m": (5.7036, 5.33),
    "q6_k": (6.5633, 6.14), "q8_0": (8.5008, 7.95),
}
# dranger003, Llama 3 70B, file size GiB (imatrix for every type)
TABLE_70B = {
    "iq1_s": 14.29, "iq1_m": 15.60, "iq2_xxs": 17.79, "iq2_xs": 19.69, "iq2_s": 20.71, "q2_k_s": 22.79,
    "iq2_m": 22.46, "q2_k": 24.56, "iq3_xxs": 25.58, "iq3_xs": 27.29, "q3_k_s": 28.79, "iq3_s": 28.79,
    "iq3_m": 29.74, "q3_k_m": 31.91, "q3_k_l": 34.59, "iq4_xs": 35.30, "iq4_nl": 37.30, "q4_k_s": 37.58,
    "q4_k_m": 39.60, "q5_k_s": 45.32, "q5_k_m": 46.52, "q6_k": 53.91, "q8_0": 69.83,
}


def _file_bytes(fmt: str, arch, rules=None) -> float:
    rules = rules or CAT.gguf
    bits = role_bits(rules, fmt, arch)
    return sum(p * bits.get(role, bits["default"]) for role, p in arch.param_roles().items()) / 8


def test_every_type_of_the_quantize_readme_is_a_format():
    assert set(README_8B) <= set(CAT.gguf.mixes)
    assert {"q3_k_m", "q4_0", "q4_1", "q5_0", "q5_1"} <= set(CAT.gguf.mixes)


@pytest.mark.parametrize("fmt", sorted(README_8B))
def test_llama_3_1_8b_matches_the_quantize_readme_to_the_printed_digit(fmt):
    arch = CAT.architectures["llama-3.1-8b"]
    size = _file_bytes(fmt, arch)
    bpw_table, gib_table = README_8B[fmt]
    assert round(size / GIB, 2) == gib_table
    # bits/weight = tensor bytes x 8 / parameters (8,030,261,248; the 64-element rope_freqs tensor
    # the converter adds moves the ratio by under 1e-7)
    assert round(size * 8 / arch.param_count(), 4) == bpw_table


def test_f16_row_of_the_readme():
    # F16 14.96 GiB: 8,030,261,248 x 2 bytes = 14.957 GiB (the F32 norms add 0.5 MB)
    out = vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "llama-3.1-8b", "quantization": "fp16"})
    assert out["model_weights_gb"] == 14.96


def test_q4_k_m_by_hand():
    """Llama 3.1 8B Q4_K_M, tensor by tensor (32 layers; use_more_bits holds on 16 of them:
    i < 4, i >= 28, and i = 6, 9, ..., 27)."""
    arch = CAT.architectures["llama-3.1-8b"]
    types = {(t.category, t.block): ggml for t, ggml in tensor_types(CAT.gguf, "q4_k_m", arch)}
    more = [i for i in range(32) if types[("attn_v", i)] == "q6_k"]
    assert more == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
    assert [i for i in range(32) if types[("ffn_down", i)] == "q6_k"] == more
    assert types[("output", -1)] == "q6_k" and types[("token_embd", -1)] == "q4_k"
    assert types[("attn_q", 5)] == types[("ffn_up", 5)] == "q4_k"
    # bytes: Q4_K = 144/256, Q6_K = 210/256 bytes per weight
    q, kv, ff, emb = 4096 * 4096, 4096 * 1024, 4096 * 14336, 128256 * 4096
    layers = 32 * (2 * q + kv) * 144 / 256 + 16 * kv * (144 + 210) / 256 + 32 * 2 * ff * 144 / 256 \
        + 16 * ff * (144 + 210) / 256
    total = layers + emb * 144 / 256 + emb * 210 / 256 + (65 * 4096) * 4
    assert _file_bytes("q4_k_m", arch) == pytest.approx(total, abs=1)
    assert total / GIB == pytest.approx(4.5755, abs=1e-4)


def test_q3_k_m_ffn_down_and_iq3_xxs_output():
    arch = CAT.architectures["llama-3.1-8b"]
    q3 = {(t.category, t.block): g for t, g in tensor_types(CAT.gguf, "q3_k_m", arch)}
    # ffn_down: Q5_K on the first n/16 = 2 layers, Q4_K after (not Falcon); attn_v Q5_K on 2 then Q4_K
    assert [q3[("ffn_down", i)] for i in (0, 1, 2, 31)] == ["q5_k", "q5_k", "q4_k", "q4_k"]
    assert [q3[("attn_v", i)] for i in (0, 1, 2)] == ["q5_k", "q5_k", "q4_k"]
    assert q3[("attn_output", 7)] == "q4_k" and q3[("attn_q", 7)] == "q3_k"
    iq3 = {(t.category, t.block): g for t, g in tensor_types(CAT.gguf, "iq3_xxs", arch)}
    assert iq3[("output", -1)] == "q5_k" and iq3[("token_embd", -1)] == "iq3_s"
    assert iq3[("attn_v", 0)] == "q4_k"  # n_gqa = 32 / 8 = 4
    assert iq3[("attn_q", 0)] == iq3[("attn_k", 0)] == "iq2_s"


def test_q2_k_attn_v_depends_on_gqa():
    gqa = {(t.category, t.block): g for t, g in tensor_types(CAT.gguf, "q2_k", CAT.architectures["llama-3.1-8b"])}
    assert gqa[("attn_v", 0)] == "q4_k"
    mha = {(t.category, t.block): g for t, g in tensor_types(CAT.gguf, "q2_k", CAT.architectures["phi-2"])}
    assert mha[("attn_v", 0)] == "q3_k"  # n_gqa = 1


def test_eight_experts_and_70b_special_cases():
    mixtral = {(t.category, t.block): g for t, g in tensor_types(CAT.gguf, "q4_k_m", CAT.architectures["mixtral-8x7b-instruct"])}
    assert mixtral[("attn_v", 10)] == mixtral[("attn_k", 10)] == "q8_0"
    assert mixtral[("attn_output", 10)] == "q5_k"
    llama70 = {(t.category, t.block): g for t, g in tensor_types(CAT.gguf, "q4_k_m", CAT.architectures["llama-3.1-70b-instruct"])}
    # layer 10 of 80 is not a use_more_bits layer (10 < 80/8), so Q4_K would be bumped to Q5_K
    assert llama70[("attn_v", 11)] == "q5_k" and llama70[("attn_v", 0)] == "q6_k"
    llama8 = {(t.category, t.block): g for t, g in tensor_types(CAT.gguf, "q4_k_m", CAT.architectures["llama-3.1-8b"])}
    assert llama8[("attn_v", 4)] == "q4_k"


def test_tied_embedding_takes_the_output_type_and_odd_rows_fall_back():
    # Qwen2.5 0.5B ties its embedding and has hidden 896, not a multiple of 256: the embedding gets the
    # output rule's Q8_0 (nx % 256 != 0), and Q4_K rows of 896 fall back to Q5_0 (tensor_type_fallback)
    arch = CAT.architectures["qwen2.5-0.5b-instruct"]
    types = {(t.category, t.block): g for t, g in tensor_types(CAT.gguf, "q4_k_m", arch)}
    assert types[("output", -1)] == "q8_0"  # category "output": the tied token_embd
    assert types[("attn_q", 3)] == types[("ffn_gate", 3)] == "q5_0"  # rows of 896
    assert types[("ffn_down", 4)] == "q4_k"  # rows of 4864 = 19 x 256 take Q4_K (layer 4 of 24: no more bits)
    assert types[("ffn_down", 0)] == "q6_k"  # 0 < 24 / 8
    llama1b = {(t.category, t.block): g for t, g in tensor_types(CAT.gguf, "q4_k_m", CAT.architectures["llama-3.2-1b-instruct"])}
    assert llama1b[("output", -1)] == "q6_k"


def test_llama_3_70b_file_sizes_with_an_importance_matrix():
    arch = CAT.architectures["llama-3.1-70b-instruct"]
    rules = dataclasses.replace(CAT.gguf, mixes={k: dataclasses.replace(m, imatrix=True) for k, m in CAT.gguf.mixes.items()},
                                cache={})
    for fmt, gib in TABLE_70B.items():
        tensor_gib = _file_bytes(fmt, arch, rules) / GIB
        # the file adds its header: tokenizer and metadata, under 16 MiB
        assert 0 <= gib - tensor_gib < 0.016, (fmt, tensor_gib, gib)


def test_responses_carry_the_whole_file_beside_the_busiest_gpus_share():
    out = vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "llama-3.1-8b", "quantization": "q4_k_m"})
    assert out["model_weights_gb"] == 4.58  # the README's Q4_K_M size
    # llama.cpp keeps token_embd (128256 x 4096 in Q4_K = 0.28 GiB) on the host
    assert out["memory_details"]["Base Model Weights"] == pytest.approx(4.58 - 0.28, abs=0.011)
    two = vramplan.estimate_inference({"gpu_key": "rtx_4090", "llm_key": "llama-3.1-8b", "quantization": "q4_k_m",
                                       "num_gpus": 2, "inference_parallelism": "pipeline"})
    assert two["model_weights_gb"] == 4.58


# -- llama_tensor_get_type_impl, transcribed ----------------------------------------------------

IQ_LOW6 = {"iq2_xxs", "iq2_xs", "iq1_s", "iq2_s", "iq2_m", "iq1_m"}
IQ_LOW7 = IQ_LOW6 | {"iq3_xxs"}
DEFAULT = {"q2_k_s": "q2_k", "q2_k": "q2_k", "iq3_xs": "iq3_s", "q3_k_s": "q3_k", "q3_k_m": "q3_k", "q3_k_l": "q3_k",
           "q4_k_s": "q4_k", "q4_k_m": "q4_k", "q5_k_s": "q5_k", "q5_k_m": "q5_k", "q6_k": "q6_k", "iq2_xxs": "iq2_xxs",
           "iq2_xs": "iq2_xs", "iq2_s": "iq2_xs", "iq2_m": "iq2_s", "iq3_xxs": "iq3_xxs", "iq1_s": "iq1_s", "iq1_m": "iq1_m",
           "iq4_nl": "iq4_nl", "iq4_xs": "iq4_xs", "iq3_s": "iq3_s", "iq3_m": "iq3_s", "q8_0": "q8_0", "q4_0": "q4_0",
           "q4_1": "q4_1", "q5_0": "q5_0", "q5_1": "q5_1"}
IMATRIX = {"iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq3_xxs", "iq3_xs", "q2_k_s"}
BLOCK = {"q4_0": 32, "q4_1": 32, "q5_0": 32, "q5_1": 32, "q8_0": 32, "iq4_nl": 32}


def _more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def reference_type(ft, t, index, count, a, imatrix, is_70b, falcon=False):
    """One tensor's type, following the C++ if-chain literally (ftype names lower-case)."""
    new = DEFAULT[ft]
    n_gqa, n_expert = a.num_heads // a.num_kv_heads, a.num_experts
    cat = t.category
    i_layer = t.block if n_expert > 1 else index
    if cat == "output":
        if falcon or t.ncols % BLOCK.get(new, 256):
            return "q8_0"
        if ft in IQ_LOW7:
            return "q5_k"
        return "q6_k" if new != "q8_0" else new
    if cat == "token_embd":
        if ft in ("iq2_xxs", "iq2_xs", "iq1_s", "iq1_m"):
            return "q2_k"
        if ft in ("iq2_s", "iq2_m", "iq3_xxs"):
            return "iq3_s"
        return new
    if ft in IQ_LOW6:
        if cat == "attn_v":
            return "q4_k" if (n_gqa >= 4 or n_expert >= 4) else ("iq3_s" if ft in ("iq2_s", "iq2_m") else "q2_k")
        if n_expert == 8 and cat == "attn_k":
            return "q4_k"
        if cat == "ffn_down":
            return ("iq3_s" if ft in ("iq2_s", "iq2_m") else "q2_k") if index < count // 8 else new
        if cat == "attn_output":
            if n_expert == 8:
                return "q5_k"
            if ft in ("iq1_s", "iq1_m"):
                return "iq2_xxs"
            if ft in ("iq2_s", "iq2_m"):
                return "iq3_s"
        return new
    if cat == "attn_v":
        if ft == "q2_k":
            new = "q4_k" if n_gqa >= 4 else "q3_k"
        elif ft == "q2_k_s" and n_gqa >= 4:
            new = "q4_k"
        elif ft == "iq3_xxs":
            new = "q4_k" if n_gqa >= 4 else ("iq3_s" if not imatrix else "iq3_xxs")
        elif ft in ("iq3_xs", "iq3_s") and n_gqa >= 4:
            new = "q4_k"
        elif ft == "iq3_m":
            new = "q4_k"
        elif ft == "q3_k_m":
            new = "q5_k" if index < 2 else "q4_k"
        elif ft == "q3_k_l":
            new = "q5_k"
        elif ft in ("iq4_nl", "iq4_xs") and n_gqa >= 4:
            new = "q5_k"
        elif ft in ("q4_k_m", "q5_k_m") and _more_bits(index, count):
            new = "q6_k"
        elif ft == "q4_k_s" and index < 4:
            new = "q5_k"
        if is_70b and new in ("q3_k", "q4_k"):
            new = "q5_k"
        if n_expert == 8:
            new = "q8_0"
        return new
    if cat == "attn_k":
        if n_expert == 8:
            return "q8_0"
        return {"iq3_xs": "iq3_xxs", "iq3_xxs": "iq2_s"}.get(ft, new)
    if cat == "attn_q":
        return {"iq3_xs": "iq3_xxs", "iq3_xxs": "iq2_s"}.get(ft, new)
    if cat == "ffn_down":
        n = count
        if ft == "q2_k":
            return "q3_k"
        if ft == "q2_k_s":
            return "q4_k" if i_layer < n // 8 else new
        if ft == "iq3_xxs" and not imatrix:
            return "q4_k" if i_layer < n // 8 else "q3_k"
        if ft == "q3_k_m":
            return "q5_k" if i_layer < n // 16 else ("q4_k" if (not falcon or _more_bits(i_layer, n)) else "q3_k")
        if ft == "iq3_m" and (i_layer < n // 8 or (n_expert == 8 and _more_bits(i_layer, n))):
            return "q4_k"
        if ft == "q3_k_l":
            return "q4_k" if falcon else "q5_k"
        if ft == "q4_k_m":
            if falcon:
                return "q6_k" if i_layer < n // 16 else ("q5_k" if _more_bits(i_layer, n) else "q4_k")
            return "q6_k" if _more_bits(i_layer, n) else new
        if i_layer < n // 8 and ft in ("iq4_nl", "iq4_xs") and not imatrix:
            return "q5_k"
        if ft == "q5_k_m" and _more_bits(i_layer, n):
            return "q6_k"
        if ft == "q4_k_s" and not falcon and i_layer < n // 8:
            return "q5_k"
        if ft in ("q4_0", "q5_0") and imatrix and i_layer < n // 8:
            return "q4_1" if ft == "q4_0" else "q5_1"
        return new
    if cat == "attn_output":
        if not falcon:
            if n_expert == 8:
                if ft in ("q2_k", "iq3_xs", "iq3_xxs", "q3_k_s", "q3_k_m", "iq4_nl", "q4_k_s", "q4_k_m", "iq3_s",
                          "iq3_m", "iq4_xs"):
                    return "q5_k"
                return new
            return {"q2_k": "q3_k", "iq3_xxs": "iq3_s", "q3_k_m": "q4_k", "q3_k_l": "q5_k", "iq3_m": "q4_k"}.get(ft, new)
        return "q4_k" if ft == "q3_k_l" else new
    if cat in ("ffn_gate", "ffn_up"):
        if ft == "iq3_xs" and count // 8 <= i_layer < 7 * count // 8:
            return "iq3_xxs"
    return new


DIFF_MODELS = ["llama-3.1-8b", "llama-3.1-70b-instruct", "mixtral-8x7b-instruct", "qwen2.5-0.5b-instruct", "phi-2",
               "deepseek-v2-lite", "gemma-2-9b-it", "qwen3-30b-a3b", "qwen2.5-72b-instruct"]


@pytest.mark.parametrize("model", DIFF_MODELS)
def test_catalog_rules_agree_with_the_transcribed_cpp(model):
    arch = CAT.architectures[model]
    is_70b = (arch.model_type in ("llama", "mistral", "mixtral") and arch.num_layers == 80 and arch.num_heads != arch.num_kv_heads) \
        or (arch.model_type == "qwen2" and arch.num_layers == 80)
    listed = tensors(arch)
    n_attn_v = sum(1 for t in listed if t.category == "attn_v")
    for ft in sorted(CAT.gguf.mixes):
        got = tensor_types(CAT.gguf, ft, arch)
        seen: dict[str, int] = {}
        for t, ggml in got:
            index = seen.get(t.category, 0)
            seen[t.category] = index + 1
            count = n_attn_v if t.category == "attn_v" else arch.num_layers
            want = reference_type(ft, t, index, count, arch, ft in IMATRIX, is_70b)
            block = CAT.gguf.types[want]
            if t.ncols % block.block:  # tensor_type_fallback
                want = block.fallback if block.fallback and t.ncols % CAT.gguf.types[block.fallback].block == 0 else "f16"
            assert ggml == want, (model, ft, t)


# -- bad data ------------------------------------------------------------------------------------

def _plugin(tmp_path, text):
    folder = tmp_path / "quantization"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mine.yaml").write_text(textwrap.dedent(text))

    class Plugin:
        __name__ = "my-gguf"

        @hookimpl
        def register_catalog_dirs(self):
            return [tmp_path]

    return Plugin()


def test_a_rule_with_an_unknown_type_or_variable_names_the_file_and_key(tmp_path):
    plugin = _plugin(tmp_path, """\
        quantization_formats:
          q4_k_x:
            label: my mix
            kind: gguf
            gguf:
              type: q4_k
              tensors:
                attn_v: [{when: "layer_index < 3", type: q6_k}]
                ffn_down: [{type: q9_k}]
            quality_rank: 70
            source: https://example.com/mix
        """)
    with pytest.raises(CatalogError) as err:
        build_catalog(load_entrypoints=False, extra_plugins=(plugin,))
    msg = str(err.value)
    assert "mine.yaml: $.quantization_formats.q4_k_x.gguf.tensors.attn_v[0].when: unknown variable 'layer_index'" in msg
    assert "$.quantization_formats.q4_k_x.gguf.tensors.ffn_down[0].type: unknown ggml type 'q9_k'" in msg


def test_a_plugin_gguf_format_is_evaluated_like_the_built_ins(tmp_path, with_plugins):
    plugin = _plugin(tmp_path, """\
        quantization_formats:
          q4_k_pure:
            label: Q4_K everywhere (llama-quantize --pure)
            kind: gguf
            gguf: {type: q4_k}
            quality_rank: 70
            source: https://example.com/pure
        """)
    with with_plugins(plugin):
        out = vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "llama-3.1-8b", "quantization": "q4_k_pure"})
    # every matrix Q4_K (144/256 bytes per weight), 266,240 norm weights F32:
    # (8,030,261,248 - 266,240) x 0.5625 + 266,240 x 4 = 4,516,109,824 bytes = 4.206 GiB
    assert out["model_weights_gb"] == 4.21
