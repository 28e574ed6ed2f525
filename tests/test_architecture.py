"""Architecture read from config.json: parameter counts by role, layer layout, KV size, errors.

Every catalog model's count is recomputed from its config and compared with the published total
(0.5%), so a family the mapping gets wrong shows up by name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import vramplan

from vramplan.architecture import ROLES, Architecture, from_hf_config
from vramplan.errors import RequestError

MODEL_DIR = Path(__file__).resolve().parent.parent / "catalogs" / "models"


def _catalog() -> dict[str, dict]:
    out = {}
    for path in sorted(MODEL_DIR.glob("*.yaml")):
        out.update(yaml.safe_load(path.read_text())["models"])
    return out


CATALOG = _catalog()
MOE = {k: v for k, v in CATALOG.items() if "active_params_b" in v}

# Published active figures are often rounded, and vendors differ on whether the embedding lookup
# counts as active. (convention, relative tolerance, why); convention "lookup" = without token_embd,
# "none" = without token_embd and the output head. The first matching prefix applies.
ACTIVE_RULES: dict[str, tuple[str, float, str]] = {
    "gpt-oss": ("lookup", 0.005, "OpenAI counts the unembedding, not the embedding lookup (3.61B / 5.13B)"),
    "deepseek-v2-lite": ("lookup", 0.025, "'2.4B activated' is rounded to 0.1B and leaves the lookup out"),
    "deepseek-coder-v2-lite": ("lookup", 0.025, "same architecture as DeepSeek-V2-Lite"),
    "deepseek-v3.2": ("both", 0.04, "'37B activated' is V3's figure rounded to 1B; V3.2's indexers add 0.85B a token"),
    "deepseek-v3": ("both", 0.02, "'37B activated' is rounded to 1B"),
    "deepseek-r1": ("both", 0.02, "'37B activated' is rounded to 1B"),
    "kimi-k2": ("lookup", 0.03, "'32B activated' is rounded to 1B"),
    "llama-4": ("both", 0.03, "'17B active' is rounded to 1B"),
    "qwen3-30b-a3b": ("both", 0.02, "'3.3B activated' is rounded to 0.1B"),
    "qwen3-235b-a22b": ("both", 0.025, "'22B activated' is rounded to 1B"),
    "phi-3.5-moe": ("both", 0.01, "'6.6B active' is rounded to 0.1B"),
    "glm-4.5-air": ("none", 0.02, "'12B active' is rounded to 1B, counted without the embedding and the head"),
    "glm-4.": ("none", 0.005, "'32B active' counts neither the embedding nor the head"),
    "qwen3-coder-480b": ("both", 0.02, "'35B activated' is rounded to 1B"),
    "qwen3-coder-30b": ("both", 0.02, "'3.3B activated' is rounded to 0.1B"),
    "minimax-m2": ("none", 0.03, "'10B activated' is rounded to 1B"),
    "nvidia-nemotron-3-nano": ("lookup", 0.02, "'3.2B active (3.6B with embeddings)' is rounded to 0.1B"),
}

# Published totals rounded more coarsely than 0.5% (key prefix -> relative tolerance, why).
TOTAL_RULES: dict[str, tuple[float, str]] = {
    "glm-4.5-air": (0.01, "'106B' is rounded (the count is 106.85B without the MTP layer)"),
    "glm-4.": (0.01, "'355B' is rounded (the count is 352.80B without the MTP layer, 358.3B with it and its embedding and head copies)"),
}


@pytest.mark.parametrize("key", sorted(CATALOG))
def test_catalog_param_count_matches_published_total(key):
    entry = CATALOG[key]
    arch = from_hf_config(entry["config"])
    counted = arch.param_count() / 1e9
    tol = next((rel for prefix, (rel, _why) in TOTAL_RULES.items() if key.startswith(prefix)), 0.005)
    assert counted == pytest.approx(entry["params_b"], rel=tol), (
        f"{key}: counted {counted:.3f}B from config, published {entry['params_b']}B")


@pytest.mark.parametrize("key", sorted(CATALOG))
def test_catalog_entry_in_16_bit_weighs_its_stated_size(key):
    """Through the whole engine: the entry's bf16 weights (model_weights_gb) agree with params_b x 2 bytes,
    within the same tolerance as the count (transformers loads the whole checkpoint, vision encoder included)."""
    entry = CATALOG[key]
    out = vramplan.estimate_inference({"gpu_key": "h200", "llm_key": key, "quantization": "bf16", "runtime": "transformers"})
    stated_gib = entry["params_b"] * 1e9 * 2 / 2**30
    tol = next((rel for prefix, (rel, _why) in TOTAL_RULES.items() if key.startswith(prefix)), 0.005)
    assert out["model_weights_gb"] == pytest.approx(stated_gib, rel=tol, abs=0.01), key


@pytest.mark.parametrize("key", sorted(MOE))
def test_catalog_active_params_match_published(key):
    entry = MOE[key]
    arch = from_hf_config(entry["config"])
    convention, tol = "both", 0.005
    for prefix, (conv, rel, _why) in ACTIVE_RULES.items():
        if key.startswith(prefix):
            convention, tol = conv, rel
            break
    roles = arch.param_roles(active=True)
    left_out = {"both": 0, "lookup": roles["token_embd"], "none": roles["token_embd"] + roles["output"]}[convention]
    active = sum(roles.values()) - left_out
    assert active / 1e9 == pytest.approx(entry["active_params_b"], rel=tol), (
        f"{key}: counted {active / 1e9:.3f}B active ({convention}), published {entry['active_params_b']}B")


# -- hand-computed roles --------------------------------------------------------------------

LLAMA3_8B = CATALOG["llama-3-8b-instruct"]["config"]


def test_llama3_8b_roles_by_hand():
    r = from_hf_config(LLAMA3_8B).param_roles()
    assert r["token_embd"] == 128256 * 4096
    assert r["output"] == 128256 * 4096  # untied
    assert r["attn_q"] == 32 * 4096 * 4096
    assert r["attn_k"] == 32 * 4096 * (8 * 128)
    assert r["attn_v"] == 32 * 4096 * (8 * 128)
    assert r["attn_output"] == 32 * 4096 * 4096
    assert r["ffn_gate"] == r["ffn_up"] == r["ffn_down"] == 32 * 4096 * 14336
    assert r["ffn_gate_inp"] == 0
    assert r["norm"] == (32 * 2 + 1) * 4096
    assert r["vision"] == 0
    assert set(r) == set(ROLES)
    assert sum(r.values()) == 8_030_261_248  # the checkpoint's safetensors total


def test_llama3_8b_kv_elements_per_token():
    arch = from_hf_config(LLAMA3_8B)
    # K and V, 8 KV heads of 128 each
    assert arch.kv_elements_per_token_per_layer == 2 * 8 * 128
    assert arch.num_full_layers == 32 and arch.sliding_window is None


def test_tied_embeddings_drop_output_matrix():
    r = from_hf_config(CATALOG["llama-3.2-1b-instruct"]["config"]).param_roles()
    assert r["output"] == 0
    assert r["token_embd"] == 128256 * 2048
    assert r["attn_q"] == 16 * 2048 * (32 * 64)  # head_dim 64 from config


def test_gemma2_9b_alternates_sliding_and_full_layers():
    arch = from_hf_config(CATALOG["gemma-2-9b-it"]["config"])
    assert arch.num_layers == 42
    assert arch.num_sliding_layers == 21 and arch.num_full_layers == 21
    assert arch.layer_types[0] == "sliding" and arch.layer_types[1] == "full"
    assert arch.sliding_window == 4096
    assert arch.head_dim == 256
    assert arch.param_roles()["output"] == 0  # Gemma ties embeddings


def test_gemma3_every_sixth_layer_global_and_class_defaults_filled():
    # google/gemma-3-4b-it's text_config lists only what differs from Gemma3TextConfig
    cfg = {"model_type": "gemma3", "text_config": {"model_type": "gemma3_text", "hidden_size": 2560,
                                                   "intermediate_size": 10240, "num_hidden_layers": 34,
                                                   "sliding_window": 1024}}
    arch = from_hf_config(cfg)
    assert (arch.num_heads, arch.num_kv_heads, arch.head_dim, arch.vocab_size) == (8, 4, 256, 262208)
    assert arch.num_full_layers == 5 and arch.num_sliding_layers == 29  # layers 6, 12, 18, 24, 30
    assert arch.layer_types[5] == "full" and arch.layer_types[4] == "sliding"
    assert arch.sliding_window == 1024
    assert any("num_attention_heads" in a for a in arch.assumed)
    # qk-norm: one head_dim weight each for q and k, per layer
    assert arch.qk_norm_params_per_layer == 2 * 256


def test_mistral_v01_slides_every_layer_v03_none():
    v01 = from_hf_config(CATALOG["mistral-7b-v0.1"]["config"])
    assert v01.num_sliding_layers == 32 and v01.sliding_window == 4096
    v03 = from_hf_config(CATALOG["mistral-7b-v0.3"]["config"])
    assert v03.num_sliding_layers == 0 and v03.sliding_window is None


def test_gpt_oss_alternates_128_token_window_and_counts_biases_and_sinks():
    arch = from_hf_config(CATALOG["gpt-oss-20b"]["config"])
    assert arch.num_sliding_layers == 12 and arch.sliding_window == 128
    assert arch.layer_types[:2] == ("sliding", "full")
    r = arch.param_roles()
    # 24 layers x 32 experts x (gate+up: 2*2880 x 2880, down: 2880 x 2880)
    assert r["ffn_gate"] + r["ffn_up"] + r["ffn_down"] == 24 * 32 * 3 * 2880 * 2880
    assert r["ffn_gate_inp"] == 24 * 2880 * 32


def test_cohere2_three_sliding_to_one_full():
    arch = from_hf_config(CATALOG["command-r7b"]["config"])
    assert arch.num_full_layers == 8 and arch.num_sliding_layers == 24
    assert arch.layer_types[3] == "full"


def test_llama4_chunked_attention_is_sliding_with_chunk_window():
    scout = from_hf_config(CATALOG["llama-4-scout-17b-16e-instruct"]["config"])
    assert scout.sliding_window == 8192
    assert scout.num_full_layers == 12  # every 4th layer is global NoPE
    assert scout.layer_types[3] == "full" and scout.layer_types[0] == "sliding"
    assert len(scout.moe_layers) == 48
    maverick = from_hf_config(CATALOG["llama-4-maverick-17b-128e-instruct"]["config"])
    assert maverick.moe_layers == tuple(range(1, 48, 2))  # interleave_moe_layer_step 2
    r = maverick.param_roles()
    # 24 dense layers (intermediate_size_mlp 16384) + 24 MoE layers (128 routed + 1 shared, 8192 each)
    assert r["ffn_down"] == 24 * 5120 * 16384 + 24 * 129 * 5120 * 8192
    assert maverick.vision_params > 0 and maverick.param_roles(active=True)["vision"] == 0


def test_mixtral_active_params_about_12_9b():
    arch = from_hf_config(CATALOG["mixtral-8x7b-instruct"]["config"])
    attn = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024)
    experts_two = 32 * 2 * 3 * 4096 * 14336
    embed = 2 * 32000 * 4096
    norms = (2 * 32 + 1) * 4096
    router = 32 * 4096 * 8
    assert arch.param_count(active=True) == attn + experts_two + embed + norms + router
    assert arch.param_count(active=True) / 1e9 == pytest.approx(12.9, rel=0.005)


def test_deepseek_v3_mla_kv_and_layers():
    arch = from_hf_config(CATALOG["deepseek-v3"]["config"])
    assert arch.is_mla
    assert arch.kv_elements_per_token_per_layer == 512 + 64  # compressed latent + shared rope key
    assert len(arch.moe_layers) == 58 and min(arch.moe_layers) == 3  # first_k_dense_replace 3
    r = arch.param_roles()
    assert r["attn_q"] == 61 * (7168 * 1536 + 1536 * 128 * (128 + 64))
    assert r["attn_k"] == 61 * 7168 * (512 + 64)
    assert r["attn_v"] == 61 * 512 * 128 * (128 + 128)
    # 3 dense layers of 18432 plus 58 MoE layers of (256 routed + 1 shared) x 2048
    assert r["ffn_up"] == 3 * 7168 * 18432 + 58 * 257 * 7168 * 2048


def test_deepseek_v2_lite_q_without_lora():
    arch = from_hf_config(CATALOG["deepseek-v2-lite"]["config"])
    assert arch.q_lora_rank == 0
    assert arch.param_roles()["attn_q"] == 27 * 2048 * 16 * (128 + 64)
    assert len(arch.moe_layers) == 26


def test_phi2_biases_layernorm_and_plain_mlp():
    r = from_hf_config(CATALOG["phi-2"]["config"]).param_roles()
    h, i, L, v = 2560, 10240, 32, 51200
    assert r["ffn_gate"] == 0 and r["ffn_up"] == L * h * i
    biases = L * (3 * h + h + i + h) + v  # qkv, dense, fc1, fc2, lm_head
    layernorms = (L + 1) * 2 * h  # one LayerNorm (weight + bias) per layer + the final one
    assert r["norm"] == biases + layernorms


def test_qk_norm_variants():
    olmo = from_hf_config(CATALOG["olmo-2-7b-instruct"]["config"])
    assert olmo.qk_norm_params_per_layer == 4096 + 4096  # over whole q and k projections
    qwen3 = from_hf_config(CATALOG["qwen3-8b"]["config"])
    assert qwen3.qk_norm_params_per_layer == 2 * 128
    plus = from_hf_config(CATALOG["command-r-plus"]["config"])
    assert plus.qk_norm_params_per_layer == (96 + 8) * 128
    assert not from_hf_config(CATALOG["command-r"]["config"]).qk_norm


def test_direct_architecture_construction_still_counts():
    arch = Architecture(model_type="toy", hidden_size=8, num_layers=2, num_heads=2, num_kv_heads=1,
                        head_dim=4, intermediate_size=16, vocab_size=10, tie_word_embeddings=True)
    assert arch.param_count() == 10 * 8 + 2 * (8 * 8 + 2 * 8 * 4 + 8 * 8 + 3 * 8 * 16) + (2 * 2 + 1) * 8


# -- errors ---------------------------------------------------------------------------------

def test_missing_hidden_size_names_the_field():
    cfg = {k: v for k, v in LLAMA3_8B.items() if k != "hidden_size"}
    with pytest.raises(RequestError) as exc:
        from_hf_config(cfg)
    assert [w for w, _ in exc.value.problems] == ["custom_model.hidden_size"]
    assert "custom_model.hidden_size" in str(exc.value)


def test_every_missing_key_is_named_at_once():
    with pytest.raises(RequestError) as exc:
        from_hf_config({"model_type": "llama", "num_hidden_layers": 2})
    fields = {w for w, _ in exc.value.problems}
    assert fields == {"custom_model.hidden_size", "custom_model.num_attention_heads",
                      "custom_model.vocab_size", "custom_model.intermediate_size"}


def test_nested_text_config_errors_name_the_nested_path():
    with pytest.raises(RequestError) as exc:
        from_hf_config({"model_type": "llava", "text_config": {"model_type": "llama", "hidden_size": 64}})
    assert "custom_model.text_config.num_hidden_layers" in {w for w, _ in exc.value.problems}


def test_malformed_values_and_moe_without_top_k():
    with pytest.raises(RequestError) as exc:
        from_hf_config(dict(LLAMA3_8B, hidden_size="big", num_key_value_heads=0))
    fields = {w for w, _ in exc.value.problems}
    assert fields == {"custom_model.hidden_size", "custom_model.num_key_value_heads"}
    with pytest.raises(RequestError, match="num_experts_per_tok"):
        from_hf_config(dict(LLAMA3_8B, num_local_experts=8))


def test_not_an_object():
    with pytest.raises(RequestError, match="custom_model"):
        from_hf_config(["hidden_size", 4096])


# -- measured counts ------------------------------------------------------------------------

CALIBRATION = Path(__file__).resolve().parents[2] / "shared" / "calibration" / "h200-transformers.jsonl"


def _measured() -> dict[str, tuple[dict, int]]:
    if not CALIBRATION.exists():
        return {}
    import json
    out = {}
    for line in CALIBRATION.read_text().splitlines():
        run = json.loads(line)
        if run.get("measured", {}).get("params"):
            out.setdefault(run["model"], (run["hf_config"], run["measured"]["params"]))
    return out


MEASURED = _measured()


@pytest.mark.skipif(not MEASURED, reason="calibration data not present")
@pytest.mark.parametrize("model", sorted(MEASURED))
def test_count_equals_parameters_measured_on_a_gpu(model):
    """transformers built these models and counted their parameters; the count must be exact,
    from the run's config and from the catalog entry of the same key."""
    hf_config, measured = MEASURED[model]
    assert from_hf_config(hf_config).param_count() == measured
    assert from_hf_config(CATALOG[model]["config"]).param_count() == measured


# -- layers that differ (DeciLM / Nemotron NAS block_configs) -------------------------------

NEMOTRON_49B = CATALOG["llama-3.3-nemotron-super-49b-v1"]["config"]


def test_nemotron_super_reads_every_layer_of_block_configs():
    arch = from_hf_config(NEMOTRON_49B)
    assert arch.num_layers == 80 and arch.num_kv_heads == 64 // 8
    # attention is a no-op in layers 6, 7, 11, 42-51 and 53-70: 2 + 1 + 10 + 18 = 31 of 80
    assert arch.num_full_layers == 49 and arch.layer_types.count("none") == 31
    assert arch.layer_types[6] == "none" and arch.layer_types[52] == "full"
    # FFN width = round_up(int(2 x ffn_mult x 8192 / 3), 256): 5.25 -> 28672, 2.625 -> 14336, 3.28125 -> 17920,
    # 1.3125 -> 7168, 1.0 -> int(5461.3) = 5461 -> 5632, 0.5 -> 2730 -> 2816
    assert arch.ffn_sizes[1] == 28672 and arch.ffn_sizes[0] == 14336 and arch.ffn_sizes[11] == 17920
    assert arch.ffn_sizes[42] == 7168 and arch.ffn_sizes[54] == 5632 and arch.ffn_sizes[62] == 2816
    r = arch.param_roles()
    assert r["attn_q"] == 49 * 8192 * 8192 and r["attn_k"] == r["attn_v"] == 49 * 8192 * 8 * 128
    assert r["ffn_down"] == 8192 * sum(arch.ffn_sizes)
    # norms: one per attention layer, one per FFN, and the final one
    assert r["norm"] == (49 + 80 + 1) * 8192
    assert arch.param_count() == 49_867_145_216


def test_nemotron_kv_cache_counts_only_layers_with_attention(infer):
    # 49 attention layers x K and V x 8 heads x 128 x 2 bytes = 200,704 bytes per token; 1000 tokens
    _, t = infer(llm_key="llama-3.3-nemotron-super-49b-v1", gpu_key="h200", runtime="transformers", seq_length=1000)
    assert t["kv_cache_gpu_bytes"] == 49 * 2 * 8 * 128 * 2 * 1000


def test_block_configs_errors_name_the_block():
    bad = dict(NEMOTRON_49B, num_hidden_layers=79)
    with pytest.raises(RequestError, match=r"custom_model\.block_configs: has 80 entries for num_hidden_layers 79"):
        from_hf_config(bad)
    blocks = [dict(b) for b in NEMOTRON_49B["block_configs"]]
    blocks[3] = {"attention": {"n_heads_in_group": 7}, "ffn": {"ffn_mult": 1.0}}
    with pytest.raises(RequestError, match=r"block_configs\[3\]\.attention\.n_heads_in_group: must be a positive divisor"):
        from_hf_config(dict(NEMOTRON_49B, block_configs=blocks))
    blocks[3] = {"attention": {"n_heads_in_group": 4}, "ffn": {"ffn_mult": 1.0}}
    with pytest.raises(RequestError, match=r"different n_heads_in_group \[4, 8\]"):
        from_hf_config(dict(NEMOTRON_49B, block_configs=blocks))
    blocks[3] = {"attention": {"replace_with_linear": True}, "ffn": {"ffn_mult": "wide"}}
    with pytest.raises(RequestError, match=r"block_configs\[3\]\.ffn\.ffn_mult: must be a (positive )?number"):  # (configkeys.py: type first)
        from_hf_config(dict(NEMOTRON_49B, block_configs=blocks))


def test_linear_attention_replacement_is_one_hidden_square_matrix():
    blocks = [{"attention": {"n_heads_in_group": 8}, "ffn": {"ffn_mult": 1.5}},
              {"attention": {"replace_with_linear": True}, "ffn": {"no_op": True}}]
    cfg = {"model_type": "nemotron-nas", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8,
           "vocab_size": 100, "tie_word_embeddings": False, "block_configs": blocks}
    arch = from_hf_config(cfg)
    r = arch.param_roles()
    # layer 0: q 256x256, k/v 256x32 (1 KV head of 32); ffn 1.5 -> int(256) = 256; layer 1: one 256x256 linear
    assert r["attn_q"] == 256 * 256 and r["attn_k"] == 256 * 32
    assert r["attn_output"] == 256 * 256 + 256 * 256
    assert r["ffn_up"] == 256 * 256 and arch.ffn_sizes == (256, 0)
    assert r["norm"] == (2 + 1 + 1) * 256  # two attention-side norms, one FFN norm, the final one
    assert arch.num_full_layers == 1


def test_glm45_and_minimax_m2_qk_norms():
    glm = from_hf_config(CATALOG["glm-4.5"]["config"])
    assert glm.qk_norm_params_per_layer == 2 * 128 and glm.qkv_bias  # use_qk_norm: one head_dim weight each
    assert not from_hf_config(CATALOG["glm-4.5-air"]["config"]).qk_norm
    assert glm.moe_layers == tuple(range(3, 92)) and glm.shared_expert_intermediate_size == 1536
    m2 = from_hf_config(CATALOG["minimax-m2"]["config"])
    assert m2.qk_norm_params_per_layer == (48 + 8) * 128  # per_layer: over all q and all k outputs
    assert m2.num_experts == 256 and m2.moe_intermediate_size == 1536 and len(m2.moe_layers) == 62
