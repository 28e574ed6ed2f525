"""The inference allocator reserve: generate's prefill and first decode step written from the estimate's values
(vramplan.allocator.inference) and replayed through the caching-allocator model, for the models whose layers the
sequence writes; the fitted share for the rest - a sequence small enough to follow by hand, the decode step's
growing cache, the reserve against measured runs, the routing of each class, the fast replay against the reference
one, and a batch of estimates against single ones."""

from __future__ import annotations

import pytest

import vramplan
from vramplan import semantics
from vramplan.allocator import inference
from vramplan.estimate import trace_values as values
from vramplan.many import estimate_many

from model_configs import LLAMA32_1B, PHI3_MINI

#: One sequence of one token through a model whose every tensor is at most 512 bytes.
TINY = dict(mem_seqs=1, seq=1, hidden=8, intermediate=16, q_dim=8, kv_dim=8, n_heads=1, n_layers=1, vocab=32,
            p_output=0, qkv_bias=0, act_bytes=2, library_workspace_bytes=69_207_040, offload_layers=0)


def test_tiny_generation_reserve_by_hand():
    # The 69,207,040-byte workspaces open a large-pool segment of ceil(69,207,040 / 2 MiB) = 34 x 2,097,152 =
    # 71,303,168 bytes (split: the 2,096,128 rest > 1 MiB stays free in it); every other tensor takes one 512-byte
    # block of a single 2 MiB small-pool segment. Reserved 71,303,168 + 2,097,152 = 73,400,320.
    # Live blocks at most: 11 parameters (embedding 32 x 8 x 2 = 512 bytes, q k v o gate up down, two norms, final
    # norm) + 15 in the decode step when rotate_half concatenates k's halves: the cached keys and values, the previous
    # token's id, the embedding, positions, cos, sin, the normed input, q, k, v, q rotated, k x cos, k's negated half
    # and the concatenation = 26 (the prefill's most is 13: no cache or previous id yet).
    # Allocated peak 69,207,040 + 26 x 512 = 69,220,352; reserve 73,400,320 - 69,220,352 = 4,179,968.
    shape = inference.Shape(**TINY)
    assert inference.peaks(shape) == (73_400_320, 69_220_352)
    assert semantics.FUNCTIONS["inference_allocator_reserve"](*shape) == 4_179_968


def test_tiny_generation_under_expandable_segments_by_hand():
    # expandable_segments:True: the workspaces map ceil(69,207,040 / 20 MiB) = 4 large-pool pages (83,886,080 bytes),
    # the 26 small blocks one 2 MiB page: 85,983,232 reserved; the allocated peak stays 69,220,352. Reserve 16,762,880.
    shape = inference.Shape(**TINY, expandable_segments=1)
    assert inference.peaks(shape) == (85_983_232, 69_220_352)
    assert inference.simulate(shape).peak_reserved == 85_983_232
    assert semantics.FUNCTIONS["inference_allocator_reserve"](*shape) == 16_762_880


def test_phi3_layers_by_hand():
    # Phi-3 builds o_proj before qkv_proj (8 x 24 x 2 = 384 bytes), then gate_up_proj (8 x 32 x 2 = 512), down and the
    # norms: 8 parameters with the embedding and the final norm. The most live is 14, when SDPA's output, logsumexp
    # and two RNG tensors join the ids, embedding, positions, cos, sin, the cached keys and values, the normed input,
    # the qkv output (its views keep it until the attention returns) and q rotated (its closing torch.cat a copy).
    # 73,400,320 - (69,207,040 + 22 x 512) = 4,182,016.
    shape = inference.Shape(**{**TINY, "fused_qkv": 1, "fused_gate_up": 1, "rope_cat_layout": 1})
    assert inference.events(shape)[:8] == [69_207_040, 512, 128, 384, 512, 256, 16, 16]
    assert inference.peaks(shape) == (73_400_320, 69_218_304)


def test_qwen3_head_norms_by_hand():
    # Qwen3 builds q, k, v, o, then q_norm and k_norm (head_dim 8 x 2 = 16 bytes each): 13 parameters with the rest.
    # q is normed (and freed) before k is projected: the norms' fp32 temporaries reach 14 live blocks at most, under
    # the decode step's 15 in k's rotary. 73,400,320 - (69,207,040 + 28 x 512) = 4,178,944.
    shape = inference.Shape(**{**TINY, "qk_head_norm": 1})
    assert inference.events(shape)[:8] == [69_207_040, 512, 128, 128, 128, 128, 16, 16]
    assert inference.peaks(shape) == (73_400_320, 69_221_376)
    resp, v = generate({**LLAMA32_1B, "model_type": "qwen3"})
    assert v["qk_head_norm"] == 1 and v["infer_reserve_simulated"] == 1


def test_gemma2_eager_layers_by_hand():
    # Gemma2DecoderLayer builds q k v o (8 x 8 x 2 = 128 bytes each), gate up down (256) and four norms (16), then the
    # final norm: 13 parameters with the embedding. Its decode step holds a 16-bit mask beside the cache, the previous
    # id, the scaled embedding, the positions, cos and sin (8); the normed input, q, k, v and q rotated (5) and k's
    # rotary temporaries (3) make 16 at the peak - no repeat_kv copies with one KV head a query head, no q copy for one
    # sequence. (The prefill's most is 14: no cache or previous id; its MLP reaches the same 14.)
    # 73,400,320 - (69,207,040 + 29 x 512) = 4,178,432.
    shape = inference.Shape(**{**TINY, "gemma2_layer": 1})
    assert inference.events(shape)[:15] == [69_207_040, 512, 128, 128, 128, 128, 256, 256, 256, 16, 16, 16, 16, 16, 8]
    assert inference.peaks(shape) == (73_400_320, 69_221_888)
    assert semantics.FUNCTIONS["inference_allocator_reserve"](*shape) == 4_178_432


def test_gemma2_soft_caps_follow_the_config():
    # Without attn_logit_softcapping the scores are only scaled (one new tensor, not four: no / cap, tanh, x cap), and
    # without final_logit_softcapping the head's logits are not capped (three fewer): over generate's two forwards
    # (prefill and first decode step) of the one-layer TINY model, 2 x (3 x 1 + 3) = 12 fewer allocations. The peak is
    # in the decode step's rotary on k either way: the same 16 blocks (test_gemma2_eager_layers_by_hand).
    capped = inference.Shape(**{**TINY, "gemma2_layer": 1})
    plain = capped._replace(attn_softcap=0, final_softcap=0)
    count = lambda shape: sum(1 for e in inference.events(shape) if e > 0)  # noqa: E731
    assert count(capped) - count(plain) == 12
    assert count(capped) - count(capped._replace(final_softcap=0)) == 6
    assert inference.peaks(plain) == inference.peaks(capped) == (73_400_320, 69_221_888)
    # a Gemma 2 config that turns them off reaches the written sequence
    cfg = {**GEMMA2_9B, "attn_logit_softcapping": None, "final_logit_softcapping": None}
    v = values(vramplan.estimate_inference({"gpu_key": "h200", "llm_key": "custom", "custom_model": cfg,
                                            "runtime": "transformers", "seq_length": 2048, "trace": True,
                                            "optimization_config": {"flash_attention": False}}))
    assert (v["gemma2_layer"], v["attn_softcap"], v["final_softcap"], v["infer_reserve_simulated"]) == (1, 0, 0, 1)


def test_gemma2_decode_keeps_only_the_window_in_sliding_layers():
    # 2 sequences of 40 tokens, window 16, 4 layers (0 and 2 slide), 4 heads of 16 over 2 KV heads: the prompt's keys
    # and values are 2 x 40 x 32 x 2 = 5120 bytes a tensor in every layer; the decode step grows the full layers' to
    # 41 tokens (5248) and rebuilds the sliding layers' from the window's last 15 tokens and the new one (16 tokens:
    # 2 x 16 x 32 x 2 = 2048), dropping the prompt's.
    shape = inference.Shape(**{**TINY, "mem_seqs": 2, "seq": 40, "hidden": 64, "intermediate": 128, "q_dim": 64,
                               "kv_dim": 32, "n_heads": 4, "n_layers": 4, "vocab": 128, "gemma2_layer": 1,
                               "infer_reserve_window": 16})
    sizes = [e for e in inference.events(shape) if e >= 0]
    assert sizes.count(5248) == 4 and sizes.count(2048) >= 4
    assert sizes.count(5120) >= 8


def test_phi3_attention_output_is_copied_back_only_for_a_prompt():
    # q leaves Phi-3's rotary contiguous in (batch, heads, tokens, dim) order, so transpose(1, 2).contiguous() copies
    # the attention output - for several tokens, not for the decode step's one (a size-1 dim needs no copy).
    # 2 sequences of 5 tokens, q_dim 8: the prefill's copy is 2 x 5 x 8 x 2 = 160 bytes right after SDPA's RNG
    # offset (8 bytes) is freed; the decode step's output (2 x 1 x 8 x 2 = 32) goes straight to o_proj.
    shape = inference.Shape(**{**TINY, "mem_seqs": 2, "seq": 5, "fused_qkv": 1, "fused_gate_up": 1, "rope_cat_layout": 1})
    ev = inference.events(shape)
    offsets = [i for i, e in enumerate(ev) if e == 8 and ev[i - 1] == 16]  # SDPA's seed (16) then offset (8)
    assert len(offsets) == 2
    prefill, decode = offsets
    assert ev[prefill + 4] == 160 and ev[prefill + 5] < 0  # three frees, the copy, then the output it replaces
    assert ev[decode + 4] == 2 * 1 * 8 * 2 and ev[decode + 4] == 32  # o_proj's output (2 x 1 x hidden 8 x 2)


def test_an_offloaded_layer_is_staged_module_by_module():
    # The tiny model's layer on the host: the build holds the embedding and the final norm only (2 blocks), and each
    # module's weight comes to the GPU just before it runs and leaves just after - one at most at a time, never during
    # the decode step's rotary (15 live): 2 + 15 = 17 blocks. Reserve 73,400,320 - (69,207,040 + 17 x 512) = 4,184,576.
    shape = inference.Shape(**{**TINY, "offload_layers": 1})
    assert inference.peaks(shape) == (73_400_320, 69_215_744)
    ev = inference.events(shape)
    # the build: workspaces, the embedding (32 x 8 x 2) and the final norm (8 x 2), then the prompt's ids (1 x 1 x 8)
    assert ev[:4] == [69_207_040, 512, 16, 8]
    kept = inference.events(inference.Shape(**TINY))
    assert kept[:13] == [69_207_040, 512] + [128, 128, 128, 128, 256, 256, 256, 16, 16] + [16, 8]  # every weight built
    # the 9 weights not built are staged once in each of the two forwards: 9 mallocs more, as many frees more
    mallocs = lambda e: sum(1 for x in e if x >= 0)  # noqa: E731
    assert mallocs(ev) == mallocs(kept) + 9 and len(ev) - mallocs(ev) == len(kept) - mallocs(kept) + 18


def test_the_first_decode_step_grows_every_cached_tensor_by_one_token():
    # 2 sequences of 5 tokens, kv_dim 8, 16-bit: the prefill caches 2 x 5 x 8 x 2 = 160-byte keys and values per
    # layer; the decode step concatenates each to 2 x 6 x 8 x 2 = 192 bytes and frees the 160-byte one at once.
    shape = inference.Shape(**{**TINY, "mem_seqs": 2, "seq": 5, "n_layers": 3})
    ev = inference.events(shape)
    sizes, handle = {}, 0
    for e in ev:
        if e >= 0:
            handle += 1
            sizes[handle] = e
    grown = [i for i, e in enumerate(ev) if e == 192]
    assert len(grown) == 2 * 3  # keys and values of three layers
    replaced = {~ev[i + 1] for i in grown if ev[i + 1] < 0}
    assert len(replaced) == 6 and {sizes[h] for h in replaced} == {160}  # each frees the shorter tensor it replaces


def test_fast_replay_agrees_with_the_reference_allocator():
    for kw in ({"mem_seqs": 3, "seq": 700, "hidden": 256, "intermediate": 704, "q_dim": 256, "kv_dim": 64, "n_heads": 4,
                "n_layers": 4, "vocab": 5000},
               {"mem_seqs": 16, "seq": 4096, "hidden": 512, "intermediate": 1536, "q_dim": 512, "kv_dim": 128, "n_heads": 8,
                "n_layers": 3, "vocab": 32000, "p_output": 32000 * 512, "qkv_bias": 1}):
        shape = inference.Shape(**{**TINY, **kw})
        a = inference.simulate(shape)
        assert inference.peaks(shape) == (a.peak_reserved, a.peak_allocated)


#: Calibration runs (../shared/calibration/h200-transformers.jsonl; ids and measured bytes copied from the file):
#: the sequence's reserved peak beyond its allocated one against the run's. The sequence opens one 2 MiB small-pool
#: segment more than these runs held, so its reserve reads 2,097,152 bytes high; nothing else differs.
MEASURED = {
    "h200a-inf-llama-3.2-1b-bf16-sdpa-b64-s1024": (LLAMA32_1B, 64, 1024, 10_332_667_904 - 8_985_129_984),
    "h200a-inf-mistral-7b-v0.3-bf16-sdpa-b16-s1024": (
        {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
         "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 32768,
         "tie_word_embeddings": False, "hidden_act": "silu"}, 16, 1024, 19_669_188_608 - 18_659_558_400),
    "h200a-inf-qwen2.5-14b-bf16-sdpa-b8-s2048": (
        {"model_type": "qwen2", "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 48,
         "num_attention_heads": 40, "num_key_value_heads": 8, "vocab_size": 152064, "tie_word_embeddings": False,
         "hidden_act": "silu", "use_sliding_window": False}, 8, 2048, 35_808_870_400 - 35_014_831_104),
}


#: Gemma 2 9B under eager attention (the same file): the written masks, soft-capped scores and the probabilities each
#: layer keeps give the run's reserve but for the same 2 MiB small segment and one 512-byte block the run held live at
#: its peak that neither the written nor transformers' recorded sequence (meta device) has.
GEMMA2_9B = {"model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336, "num_hidden_layers": 42,
             "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 256000,
             "max_position_embeddings": 8192, "tie_word_embeddings": True, "sliding_window": 4096,
             "query_pre_attn_scalar": 256, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
             "hidden_activation": "gelu_pytorch_tanh"}
MEASURED_EAGER = {
    "h200a-inf-gemma-2-9b-bf16-eager-b1-s2048": (GEMMA2_9B, 1, 2048, 20_327_694_336 - 20_041_640_960),
    "h200a-inf-gemma-2-9b-bf16-eager-b1-s8192": (GEMMA2_9B, 1, 8192, 36_624_662_528 - 32_763_063_296),
}


@pytest.mark.parametrize("run", sorted(MEASURED_EAGER))
def test_the_simulated_eager_gemma2_reserve_is_the_measured_one(run):
    config, batch, seq, measured = MEASURED_EAGER[run]
    resp, v = generate(config, batch_size=batch, seq_length=seq, optimization_config={"flash_attention": False})
    assert v["gemma2_layer"] == 1 and v["infer_reserve_simulated"] == 1
    assert v["allocator_reserve_bytes"] == v["infer_reserve_simulated_bytes"] == measured + 2_097_152 + 512


#: Models that window every layer, as transformers 5.17 generates with them (benchmarks/allocator/replay_inference.py
#: record(): the ops' own allocations on the meta device, replayed through the same allocator model - peak reserved -
#: peak allocated): the bool mask, the KV heads repeated for it, SDPA's conversion to an additive mask and the
#: memory-efficient kernel, each layer's sliding cache and counter.
WINDOWED = {
    "Mistral 7B v0.1's widths, 4 layers, window 4096, 1 x 8192": (
        {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
         "num_key_value_heads": 8, "head_dim": 128, "num_hidden_layers": 4, "vocab_size": 32000, "sliding_window": 4096,
         "max_position_embeddings": 32768, "tie_word_embeddings": False, "hidden_act": "silu"}, 1, 8192, 419_222_528),
    "Phi-3 mini's widths, 4 layers, window 2047, 8 x 4096": (
        {**PHI3_MINI, "num_hidden_layers": 4, "sliding_window": 2047}, 8, 4096, 977_443_840),
}


@pytest.mark.parametrize("case", sorted(WINDOWED))
def test_a_window_on_every_layer_is_written(case):
    config, batch, seq, recorded = WINDOWED[case]
    resp, v = generate(config, batch_size=batch, seq_length=seq)
    assert v["sdpa_window_mask"] == 1 and v["infer_reserve_window"] == config["sliding_window"]
    assert v["infer_reserve_simulated"] == 1 and v["infer_reserve_simulated_bytes"] == recorded


def test_a_windowed_decode_step_keeps_the_window():
    # 2 sequences of 37 tokens, window 16, every layer windowed, 4 heads of 16 over 2 KV heads. The decode step rebuilds
    # each layer's keys and values from the window's last 15 tokens and the new one: 2 x 16 x 32 x 2 = 2048 bytes a
    # tensor, 6 of them over 3 layers - never the 38-token 2 x 38 x 32 x 2 = 4864 a growing cache would take. Its
    # mask over those 16 keys is converted to an additive one: 2 x 1 x 16 x 2 = 64 bytes a layer.
    shape = inference.Shape(**{**TINY, "mem_seqs": 2, "seq": 37, "hidden": 64, "intermediate": 128, "q_dim": 64,
                               "kv_dim": 32, "n_heads": 4, "n_layers": 3, "vocab": 128, "infer_reserve_window": 16})
    sizes = [e for e in inference.events(shape) if e >= 0]
    assert sizes.count(4864) == 0 and sizes.count(2048) >= 6
    # without the window the step grows every tensor to 38 tokens
    plain = [e for e in inference.events(shape._replace(infer_reserve_window=0)) if e >= 0]
    assert plain.count(4864) == 6


@pytest.mark.parametrize("run", sorted(MEASURED))
def test_the_simulated_reserve_is_the_measured_one(run):
    config, batch, seq, measured = MEASURED[run]
    resp, v = generate(config, batch_size=batch, seq_length=seq)
    assert v["infer_reserve_simulated"] == 1
    assert v["allocator_reserve_bytes"] == v["infer_reserve_simulated_bytes"] == measured + 2_097_152
    assert any(a.startswith("allocator reserve: simulated") for a in resp["assumptions"])


def test_an_int8_linear_follows_matmul8bitlt():
    # 3 tokens of 5 inputs into 7 outputs, bf16 activations (bitsandbytes 0.50 MatMul8bitLt.forward in inference):
    # the fp16 copy of the input 3 x 5 x 2 = 30; int8_vectorwise_quant's row_stats 3 x 4 = 12 and out_row 3 x 5 = 15, the
    # threshold's abs (30, freed once compared) and bool (15), outliers.any() (1 byte, read and freed); the bool goes as
    # the function returns, then the fp16 copy; int8_linear_matmul's int32 3 x 7 x 4 = 84, int8_mm_dequant's fp16 42 and
    # its .to(bf16) 42 (the output, handle 9); the fp16 and int32 go, then the quantized input and its statistics.
    w = inference.caching.Writer()
    assert inference._int8_linear(w, 3, 5, 7, 2) == 9
    assert w.events == [30, 12, 15, 30, 15, ~4, 1, ~6, ~5, ~1, 84, 42, 42, ~8, ~7, ~3, ~2]


def test_an_int8_weight_is_loaded_through_an_fp16_copy():
    # A 4 x 6 weight from a bf16 checkpoint: materialized on the GPU (4 x 6 x 2 = 48), its fp16 copy (48), SCB (4 rows
    # x 4 = 16) and CB (24, int8); the fp16 copy and the bf16 tensor go, CB and SCB stay.
    w = inference.caching.Writer()
    inference._int8_load(w, 4, 6, 2)
    assert w.events == [48, 48, 16, 24, ~2, ~1]


def test_an_int8_model_loads_in_checkpoint_order():
    # TINY under LLM.int8: the embedding (32 x 8 x 2 = 512); the layer's tensors in their checkpoint names' order -
    # input_layernorm (16), mlp.down_proj (8 x 16), gate_proj, up_proj (16 x 8 each), post_attention_layernorm,
    # self_attn.k_proj, o_proj, q_proj, v_proj (8 x 8 each) - each linear as 2 a, 2, 4 x rows, 1 byte an element; the
    # final norm. The workspaces (69,207,040) come only in the first forward, after the prompt's ids (8 bytes), the
    # embedding output (16) and the positions' arange (8) and copy (8), where the rotary tables' matmul runs.
    events = inference.events(inference.Shape(**TINY, int8_matmul=1))
    loaded = [e for e in events[:events.index(69_207_040)] if e >= 0]
    linear = lambda rows, cols: [rows * cols * 2, rows * cols * 2, rows * 4, rows * cols]
    assert loaded == ([512, 16] + linear(8, 16) + linear(16, 8) + linear(16, 8) + [16] + linear(8, 8) * 4 + [16]
                      + [8, 16, 8, 8])


def test_an_int8_generation_is_simulated_and_its_peak_is_the_estimates():
    resp, v = generate(LLAMA32_1B, quantization="int8", batch_size=16, seq_length=2048)
    assert v["int8_matmul"] == 1 and v["infer_reserve_simulated"] == 1
    shape = inference.Shape(mem_seqs=16, seq=2048, hidden=2048, intermediate=8192, q_dim=2048, kv_dim=512, n_heads=32,
                            n_layers=16, vocab=128256, p_output=0, qkv_bias=0, act_bytes=2,
                            library_workspace_bytes=int(v["library_workspace_bytes"]), int8_matmul=1)
    reserved, allocated = inference.peaks(shape)
    assert v["allocator_reserve_bytes"] == reserved - allocated
    # The simulated peak is the up-projection of a layer (the formulas' ffn_int8 moment) on top of the weights and the
    # cache: int8 layers 16 x (2048 x (2048 + 512 + 512 + 2048 + 3 x 8192) x 1 + (2048 + 512 + 512 + 2048 + 2 x 8192 + 2048)
    # x 4 fp32 row scales) + 2 norms x 2048 x 2 + the bf16 embedding 128256 x 2048 x 2 + the final norm; the cache 16 x 2 x
    # 32,768 x 512 x 2; 32,768 tokens x (4 x 2048 x 2 live hidden tensors (the embedding output generate's forward keeps,
    # the layer's input, the attention's residual sum and the normed input) + act(gate)
    # 8192 x 2 + int32 8192 x 4 + fp16 8192 x 2 + the bf16 output 8192 x 2 + the int8 input 2048 + its scale 4); the
    # workspaces. Within 1% of that sum (the rest: positions, rotary tables, the previous layer's output).
    layers = 16 * (2048 * (2 * 2048 + 2 * 512 + 3 * 8192) + 4 * (2 * 2048 + 2 * 512 + 2 * 8192 + 2048) + 2 * 2048 * 2)
    weights = layers + 128256 * 2048 * 2 + 2048 * 2
    cache = 16 * 2 * 32768 * 512 * 2
    moment = 32768 * (4 * 2048 * 2 + 8192 * 2 + 8192 * 4 + 8192 * 2 + 8192 * 2 + 2048 + 4)
    assert allocated == pytest.approx(weights + cache + moment + v["library_workspace_bytes"], rel=0.01)


def test_an_fp32_norm_and_rotary_tables_make_no_copies():
    # LlamaRMSNorm on 2 tokens of 8 in fp32: .to(float32) returns the input - pow(2) (2 x 8 x 4 = 64), the mean (2 x 4 = 8),
    # + eps (8), rsqrt (8), the product (64); .to(fp32) returns the product, x weight makes the output (64).
    w = inference.caching.Writer()
    assert inference._rms_norm(w, 2, 8, 1, 4) == 6
    assert w.events == [64, 8, ~1, 8, 8, ~3, 64, ~4, 64, ~5, ~2]
    # In bf16 the fp32 copy of the input (64) comes first and the product's 16-bit copy (32) before the output (32).
    w = inference.caching.Writer()
    assert inference._rms_norm(w, 2, 8, 1, 2) == 8
    assert w.events == [64, 64, 8, ~2, 8, 8, ~4, 64, ~5, ~1, 32, 32, ~7, ~6, ~3]
    # The rotary tables for 3 positions of head_dim 4 in fp32: positions 3 x 4 = 12, frequencies 3 x 2 x 4 = 24, their
    # concatenation 48, cos 48 and x scaling 48 (cos freed), sin likewise; .to(fp32) keeps cos and sin themselves.
    w = inference.caching.Writer()
    assert inference._rotary_tables(w, 3, 4, 4) == (5, 7)
    assert w.events == [12, 24, 48, 48, 48, ~4, 48, 48, ~6, ~1, ~2, ~3]


def test_fp32_with_a_window_on_every_layer_is_simulated_from_the_prompt_the_window_masks():
    # Mistral-style window of 256 on every layer, fp32: a 512-token prompt is masked in the prefill and the decode step
    # (SDPA's memory-efficient kernel runs fp32), so the sequence is written; its reserve is the replay's.
    window = {**LLAMA32_1B, "model_type": "mistral", "sliding_window": 256}
    resp, v = generate(window, quantization="fp32", seq_length=512)
    assert v["act_bytes"] == 4 and v["kv_bits"] == 32 and v["infer_reserve_simulated"] == 1
    shape = inference.Shape(mem_seqs=2, seq=512, hidden=2048, intermediate=8192, q_dim=2048, kv_dim=512, n_heads=32,
                            n_layers=16, vocab=128256, p_output=0, qkv_bias=0, act_bytes=4,
                            library_workspace_bytes=int(v["library_workspace_bytes"]), infer_reserve_window=256)
    reserved, allocated = inference.peaks(shape)
    assert v["allocator_reserve_bytes"] == reserved - allocated
    # a prompt as long as the window is masked too; a shorter one is not (the fitted share, test above)
    assert generate(window, quantization="fp32", seq_length=256)[1]["infer_reserve_simulated"] == 1
    assert generate(window, quantization="fp32", seq_length=255)[1]["infer_reserve_simulated"] == 0


def generate(config: dict, **kw) -> tuple[dict, dict[str, float]]:
    body = {"gpu_key": "h200", "llm_key": "custom", "custom_model": config, "runtime": "transformers", "trace": True,
            "batch_size": 2, "seq_length": 512, **kw}
    resp = vramplan.estimate_inference(body)
    return resp, values(resp)


EAGER = {"optimization_config": {"flash_attention": False}}
UNCOVERED = {
    "partial rotary (Phi-4-mini's 0.75)": ({**PHI3_MINI, "partial_rotary_factor": 0.75}, {}),
    "fp32 weights": (LLAMA32_1B, {"quantization": "fp32"}),
    "fp32 inside a window (unmasked grouped heads: SDPA's math path)": (
        {**LLAMA32_1B, "model_type": "mistral", "sliding_window": 256}, {"quantization": "fp32", "seq_length": 128}),
    "two GPUs": (LLAMA32_1B, {"num_gpus": 2}),
    "the cache on the host": (LLAMA32_1B, {"enable_offloading": True, "offload_kv_cache": True}),
    "a qk-norm over whole projections (OLMo 2)": ({**LLAMA32_1B, "model_type": "olmo2"}, {}),
    "4-bit weights": (LLAMA32_1B, {"quantization": "nf4"}),
    "MLP biases": ({**LLAMA32_1B, "mlp_bias": True}, {}),
    "Llama attention biases (o_proj's too)": ({**LLAMA32_1B, "attention_bias": True}, {}),
    "Gemma 2 under SDPA (only its eager attention is written)": (GEMMA2_9B, {}),
    "Gemma 2 with one KV head (repeat_kv's views, not copies)": ({**GEMMA2_9B, "num_key_value_heads": 1}, EAGER),
    "Gemma 2 without grouped heads": ({**GEMMA2_9B, "num_key_value_heads": 16}, EAGER),
}


@pytest.mark.parametrize("case", sorted(UNCOVERED))
def test_uncovered_generations_keep_the_fitted_share(case):
    config, kw = UNCOVERED[case]
    resp, v = generate(config, **kw)
    assert v["infer_reserve_simulated"] == 0 and v["infer_reserve_simulated_bytes"] == 0
    # 0.22 x (the prefill's transient + the KV cache) (catalogs/runtimes/transformers.yaml allocator_slack_fraction)
    assert v["allocator_reserve_bytes"] == pytest.approx(0.22 * (v["transient_bytes"] + v["kv_needed_bytes"]))
    assert any(a.startswith("allocator reserve: the fitted share") for a in resp["assumptions"])


def test_other_runtimes_do_not_replay_generate():
    resp, v = generate(LLAMA32_1B, runtime="vllm")
    assert v["infer_reserve_simulated"] == 0
    assert not any(a.startswith("allocator reserve") for a in resp["assumptions"])


def test_runtime_settings_can_turn_the_simulation_off_for_fast_sweeps():
    body = {"gpu_key": "h100_80", "llm_key": "llama-3.2-1b", "runtime": "transformers", "batch_size": 8, "seq_length": 2048}
    slow = vramplan.estimate_inference(body)
    fast = vramplan.estimate_inference({**body, "runtime_settings": {"infer_reserve_simulation": 0}})
    assert any(a.startswith("allocator reserve: simulated") for a in slow["assumptions"])
    assert ("allocator reserve: the fitted share of the prefill's transients and the KV cache - runtime_settings "
            "infer_reserve_simulation is 0") in fast["assumptions"]
    assert fast["vram_usage"] != slow["vram_usage"]


def test_a_batch_of_estimates_gives_what_single_estimates_give():
    # Rows of new shapes (the function runs row by row) next to uncovered ones (fp32 weights).
    bodies = [{"gpu_key": "h200", "llm_key": "custom", "custom_model": LLAMA32_1B, "runtime": "transformers",
               "batch_size": b, "seq_length": s, "quantization": q}
              for b in (1, 3) for s in (512, 2000) for q in ("bf16", "fp32")]
    many = estimate_many(bodies, "inference")
    for body, got in zip(bodies, many):
        one = vramplan.estimate_inference(dict(body))
        assert got["vram_usage"] == one["vram_usage"]
        assert got["memory_breakdown"] == one["memory_breakdown"]


@pytest.mark.parametrize("args, error", [
    ((1, 1, 8, 16, 8, 8, 1, 1, 32, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), TypeError),           # one argument short
    ((1, -1, 8, 16, 8, 8, 1, 1, 32, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0), ValueError),      # a negative size
    ((1, 1, 8, 16, 8, 8, 1, 10_000, 32, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0), ValueError),  # 10,000 layers: too many
    ((1, 1, 8, 16, 8, 8, 1, 3_000, 32, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0), ValueError),   # 3,000 LLM.int8 layers
])
def test_the_function_refuses_what_it_cannot_replay(args, error):
    with pytest.raises(error):
        inference.reserve_bytes(*args)
