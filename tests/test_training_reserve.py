"""The training allocator reserve: simulated (vramplan.allocator.training replayed through the caching-allocator
model) for the classes the sequence writes, the fitted fractions for the rest - with sequences small enough
to follow by hand, the routing of each class, the fast replay against the reference one, and a batch of
estimates against single ones."""

from __future__ import annotations

import random

import pytest

import vramplan
from vramplan.estimate import trace_values as values
from vramplan import semantics
from vramplan.allocator import caching, training
from vramplan.many import estimate_many

from model_configs import LLAMA32_1B, MIXTRAL, PHI3_MINI

MiB = 1 << 20

#: A model whose every tensor is under 512 bytes: 1 token, hidden 8, intermediate 16, vocab 32, one layer, tied.
TINY = dict(train_tokens=1, hidden=8, intermediate=16, vocab=32, n_layers=1, q_dim=8, kv_dim=8, method_full=1,
            mixed_precision=0, gradient_checkpointing=0, grad_accum=1, resid_bytes=2, act_bytes=2, p_output=0,
            moment_bytes=2, optimizer_fused_step=0, layer_saved_bytes_per_token=64, head_saved_bytes=32, lora_rank=0,
            lora_q=0, lora_k=0, lora_v=0, lora_o=0, lora_gate=0, lora_up=0, lora_down=0,
            library_workspace_bytes=69_207_040)
# Common to the tiny cases: the 69,207,040-byte workspaces open a large-pool segment of ceil(69,207,040 / 2 MiB)
# = 34 x 2,097,152 = 71,303,168 bytes, split (the 2,096,128 rest > 1 MiB) so 69,207,040 of it is allocated; every
# other tensor takes one 512-byte block of a single 2 MiB small-pool segment (4096 blocks, never full):
# reserved 71,303,168 + 2,097,152 = 73,400,320, allocated 69,207,040 + 512 x (live blocks at the peak).
RESERVED = 73_400_320


def test_tiny_full_fine_tuning_reserve_by_hand():
    # Full bf16, foreach AdamW: 11 parameters (embedding, q k v o gate up down, two norms, final norm). The peak is
    # the optimizer's: 11 parameters + 11 gradients + 22 moments + 11 sqrt(v) temporaries = 55 blocks (the
    # backward's most is 28: 11 parameters, x, 2 saved pieces of 32 bytes, g_hidden, up to 13 gradients and
    # temporaries; step 1's backward adds the 22 moments: 50 < 55). 73,400,320 - (69,207,040 + 55 x 512)
    # = 73,400,320 - 69,235,200 = 4,165,120.
    shape = training.Shape(**TINY)
    assert training.peaks(shape) == (RESERVED, 69_235_200)
    assert semantics.FUNCTIONS["training_allocator_reserve"](*shape) == 4_165_120


def test_tiny_run_under_expandable_segments_by_hand():
    # PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True: one segment a pool, mapped in pages at its tail - 20 MiB pages
    # in the large pool, 2 MiB in the small. The workspaces take ceil(69,207,040 / 20,971,520) = 4 pages = 83,886,080
    # bytes (the 14,679,040 left stay mapped, free); the 55 small blocks of the optimizer's peak one 2 MiB page.
    # Reserved 83,886,080 + 2,097,152 = 85,983,232; the allocated peak is the default mode's 69,235,200 (512-byte
    # rounding either way). 85,983,232 - 69,235,200 = 16,748,032: a tiny run pays the 20 MiB page.
    shape = training.Shape(**TINY, expandable_segments=1)
    assert training.peaks(shape) == (85_983_232, 69_235_200)
    assert semantics.FUNCTIONS["training_allocator_reserve"](*shape) == 16_748_032


def test_tiny_gradient_accumulation_keeps_the_optimizer_peak():
    # Two micro-batches: the second's gradients are temporaries added in place (one block at a time), so its
    # backward holds at most 9 blocks beyond parameters, moments and gradients (tq, tk, tv, th, x, the two saved
    # pieces, g_hidden and one gradient temporary): step 1, 11 + 22 + 11 + 9 = 53 < 55 - the same reserve.
    shape = training.Shape(**{**TINY, "grad_accum": 2})
    assert training.peaks(shape) == (RESERVED, 69_235_200)


def test_tiny_lora_reserve_by_hand():
    # LoRA rank 1 on all seven projections: 14 fp32 adapters (A and B, 32-64 bytes each), 11 frozen bf16
    # parameters: 25 blocks after the build. Step 0's backward holds at most 25 + x, the 2 saved pieces, g_hidden,
    # th, tq, tk, tv and the 14 adapter gradients = 47 (the q/k/v gradients are made while tq, tk, tv live);
    # the optimizer: 25 + 14 gradients + 28 moments + 14 sqrt(v) = 81. Step 1's backward: 25 + 28 moments + 22
    # = 75 < 81. 73,400,320 - (69,207,040 + 81 x 512) = 73,400,320 - 69,248,512 = 4,151,808.
    lora = {**TINY, "method_full": 0, "lora_rank": 1, "moment_bytes": 4,
            **{f"lora_{m}": 1 for m in training.LORA_MODULES}}
    shape = training.Shape(**lora)
    assert training.peaks(shape) == (RESERVED, 69_248_512)
    assert semantics.FUNCTIONS["training_allocator_reserve"](*shape) == 4_151_808


def test_a_tied_weights_gradient_is_the_sum_made_at_the_end_of_backward():
    # Tied embedding and head (vocab 64 x hidden 8 x 2 bytes = 1,024, a size no other tensor here has): the head's
    # matmul backward makes its share early; the embedding's backward makes the other at the end, and the autograd
    # engine's input buffer sums them into a third tensor (out of place), which becomes the gradient - the two
    # shares are freed. So the backward allocates three 1,024-byte tensors, frees two of them and the sum (the
    # gradient) lives until the optimizer step ends. With a second micro-batch AccumulateGrad adds its sum into the
    # gradient in place: three more made and all three freed.
    def backward(events, marks, first_handle=1):
        """The 1,024-byte tensors a chunk makes and frees from its bwd0 mark to its opt0 mark (or its end)."""
        at = {label: k for k, label in marks}
        handle, made, freed = first_handle - 1, [], []
        for k, e in enumerate(events):
            handle += e >= 0
            if at["bwd0"] <= k < at.get("opt0", len(events)):
                if e == 1024:
                    made.append(handle)
                elif e < 0 and ~e in made:
                    freed.append(~e)
        return made, freed

    made, freed = backward(*next(training.steps(training.Shape(**{**TINY, "vocab": 64})))[:2])
    assert len(made) == 3 and freed == made[:2]  # the sum outlives the backward
    # two micro-batches: the first step's first chunk ends with the first micro-batch; the second micro-batch's sum
    # is added in place into the gradient, so all three of its tensors are freed before the optimizer step
    chunks = training.steps(training.Shape(**{**TINY, "vocab": 64, "grad_accum": 2}))
    events, marks, _ = next(chunks)
    made, freed = backward(events, marks)
    assert len(made) == 3 and freed == made[:2]
    events2, marks2, _ = chunks.send(False)
    made2, freed2 = backward(events2, marks2, first_handle=sum(e >= 0 for e in events) + 1)
    assert len(made2) == 3 and sorted(freed2) == made2


def test_lora_saves_each_adapted_modules_fp32_input_as_a_tensor_of_its_own():
    # peft's LoRA forward on a 16-bit base, per adapted module in order (recorded: mm, _to_copy, mm, mul, add,
    # _to_copy): the base output (tokens x out x 2), the input cast to the fp32 adapters' dtype (tokens x in x 4, which
    # lora_A saves), lora_B's fp32 output, x scaling, the fp32 sum with the base output and its 16-bit copy - 6
    # allocations, of which all but the saved input are freed. One token, hidden 8, q_dim 8, intermediate 16: q, k, v
    # and o are 16, 32, 32, 32, 32, 16 bytes; gate and up (out 16) 32, 32, 64, 64, 64, 32; down (in 16, out 8) 16, 64,
    # 32, 32, 32, 16. The saved inputs are 6 x 32 + 64 = 256 of the layer's 320 saved bytes; the 64 left are two
    # intermediate-wide pieces (1 x 16 x 2 = 32). x (1 x 8 x 2 = 16) comes first.
    lora = {**TINY, "method_full": 0, "lora_rank": 1, "moment_bytes": 4, "layer_saved_bytes_per_token": 320,
            **{f"lora_{m}": 1 for m in training.LORA_MODULES}}
    events, marks, _ = next(training.steps(training.Shape(**lora)))
    at = dict((label, k) for k, label in marks)
    forward = events[at["fwd0"]:at["bwd0"]]
    small, wide = [16, 32, 32, 32, 32, 16], [32, 32, 64, 64, 64, 32]
    assert [e for e in forward if e >= 0][:1 + 6 * 7 + 2] == \
        [16] + small * 4 + wide * 2 + [16, 64, 32, 32, 32, 16] + [32, 32]
    assert sum(e < 0 for e in forward[:1 + 6 * 7 + 5 * 7 + 2]) == 5 * 7  # each module's five transients freed
    # an fp32 model's input is already fp32: only o's and down's inputs (the attention output, the MLP product) are
    # tensors of their own - 32 + 64 = 96, and 320 - 96 = 224 leaves four intermediate pieces and six of 16 bytes
    events, marks, _ = next(training.steps(training.Shape(**{**lora, "resid_bytes": 4})))
    fwd = dict((label, k) for k, label in marks)["fwd0"]
    assert events[fwd + 1:fwd + 13] == [32, 64] + [32] * 4 + [16] * 6


def test_eager_attentions_saved_scores_are_tensors_of_their_own():
    # Eager attention saves softmax's fp32 output (4 bytes a score) and the probabilities' 16-bit copy (2) - with a
    # soft-cap also tanh's output (2): of 64 + 48 saved bytes a token, the 48 of scores are 32 + 16 (no cap) or 24 +
    # 12 + 12 (capped), written as their own tensors after x (16); the 64 left are two intermediate pieces (1 x 16 x 2).
    shape = training.Shape(**{**TINY, "layer_saved_bytes_per_token": 64 + 48, "train_scores_bytes_per_token_layer": 48})
    events, marks, _ = next(training.steps(shape))
    fwd = dict((label, k) for k, label in marks)["fwd0"]
    assert events[fwd:fwd + 5] == [16, 32, 16, 32, 32]
    events, marks, _ = next(training.steps(shape._replace(attn_softcap=1)))
    fwd = dict((label, k) for k, label in marks)["fwd0"]
    assert events[fwd:fwd + 6] == [16, 24, 12, 12, 32, 32]


def test_soft_capped_logits_keep_tanhs_output_for_backward():
    # Gemma2ForCausalLM caps the head's logits: / cap, tanh, x cap, each a new tokens x vocab x 2 tensor (1 x 32 x 2 =
    # 64 bytes here, a size nothing else has), tanh's output kept for backward; backward runs x cap's, tanh's and / cap's
    # gradients, three more. Uncapped, the step makes two 64-byte tensors (the logits, their 16-bit gradient); capped
    # eight, and tanh's output (the third) is freed only once backward has begun.
    def logits_tensors(shape):
        events, marks, _ = next(training.steps(shape))
        at = dict((label, k) for k, label in marks)
        handle, made, freed_at = 0, [], {}
        for k, e in enumerate(events[:at["opt0"]]):
            handle += e >= 0
            if e == 64:
                made.append(handle)
            elif e < 0 and ~e in made:
                freed_at[~e] = k
        return made, freed_at, at["bwd0"]

    made, _, _ = logits_tensors(training.Shape(**TINY))
    assert len(made) == 2
    made, freed_at, bwd = logits_tensors(training.Shape(**{**TINY, "final_softcap": 1}))
    assert len(made) == 8 and freed_at[made[2]] > bwd and freed_at[made[1]] < bwd


FUSED = {**TINY, "fused_qkv": 1, "fused_gate_up": 1}


def test_tiny_fused_projections_by_hand():
    # Phi-3's layer: o_proj (8 x 8 x 2 = 128 bytes) built before qkv_proj (8 x (8 + 2 x 8) x 2 = 384), gate_up_proj
    # (8 x 32 x 2 = 512), down (256), the two norms (16 each); embedding 512 and final norm 16 around them: 8
    # parameters. The peak is the optimizer's: 8 parameters + 8 gradients + 16 moments + 8 sqrt(v) = 40 blocks (the
    # backward's most is 37: 8 + 16 moments + x, the saved gate_up output (2 x 16 x 2 = 64 bytes, one piece), g_hidden,
    # five gradients and th, ta, tq, tk, tv). 73,400,320 - (69,207,040 + 40 x 512) = 4,172,800.
    shape = training.Shape(**FUSED)
    events = next(training.steps(shape))[0]
    assert events[:9] == [69_207_040, 512, 128, 384, 512, 256, 16, 16, 16]
    assert training.peaks(shape) == (RESERVED, 69_227_520)
    assert semantics.FUNCTIONS["training_allocator_reserve"](*shape) == 4_172_800


def test_lora_on_fused_projections_adapts_each_fused_module_once():
    # peft all-linear on Phi-3's layer finds o_proj, qkv_proj, gate_up_proj, down_proj in that order; rank 1 fp32:
    # o A 1 x 8 x 4 = 32, B 8 x 1 x 4 = 32; qkv A 32, B 24 x 4 = 96; gate_up A 32, B 32 x 4 = 128; down A 16 x 4 = 64, B 32.
    shape = training.Shape(**{**FUSED, "method_full": 0, "lora_rank": 1, "moment_bytes": 4,
                              **{f"lora_{m}": 1 for m in training.LORA_MODULES}})
    events = next(training.steps(shape))[0]
    assert events[9:17] == [32, 32, 32, 96, 32, 128, 64, 32]


def test_a_saved_window_mask_is_one_tensor_a_layer():
    # 16 of a layer's 80 saved bytes a token are SDPA's converted window mask: the forward saves it whole (16 bytes),
    # then the rest as tokens x intermediate pieces (1 x 16 x 2 = 32, twice) - after the workspaces, 11 parameters
    # and the layer input x (1 x 8 x 2 = 16).
    shape = training.Shape(**{**TINY, "layer_saved_bytes_per_token": 80, "train_mask_bytes_per_token_layer": 16})
    events = next(training.steps(shape))[0]
    assert events[12:16] == [16, 16, 32, 32]


def test_head_norms_save_tensors_of_their_own():
    # Qwen3's q_norm / k_norm in full fine-tuning: each saves its fp32 input (1 token x 8 x 4 = 32 bytes, for q and k)
    # and its bf16 normalized input (16 each), written before the layer's other saved pieces (the remaining 64 bytes:
    # two tokens x intermediate pieces of 32) - after the workspaces, 11 parameters and the layer input x (16).
    shape = training.Shape(**{**TINY, "layer_saved_bytes_per_token": 64 + 96, "qk_head_norm": 1})
    events = next(training.steps(shape))[0]
    assert events[12:19] == [16, 32, 32, 16, 16, 32, 32]


def test_the_function_names_its_arguments_when_given_the_wrong_number_and_refuses_negative_ones():
    with pytest.raises(TypeError, match="training_allocator_reserve takes 41 arguments"):
        semantics.FUNCTIONS["training_allocator_reserve"](1, 2, 3)
    # a negative size would read as a free in the event list: a domain error (the formula's refusal), not a replay
    with pytest.raises(ValueError, match="negative"):
        semantics.FUNCTIONS["training_allocator_reserve"](*training.Shape(**{**TINY, "hidden": -8}))
    assert semantics.refusal(ValueError()) == semantics.DOMAIN
    # 1,000 layers x 1,000 micro-batches: 3 x (1,000 x (1,000 x (4 x (5 + 64 / 16) + 600) + 50) + 100,000 + 100)
    # = 3 x (636,050,000 + 100,100) events at most > 2,000,000 - refused before anything is generated
    with pytest.raises(ValueError, match="more than 2,000,000 allocator events"):
        semantics.FUNCTIONS["training_allocator_reserve"](*training.Shape(**{**TINY, "n_layers": 1000, "grad_accum": 1000}))


def _reference_peaks(chunks) -> tuple[int, int]:
    a = caching.Allocator()
    handle = 0
    for ev in chunks:
        for e in ev:
            if e >= 0:
                handle += 1
                a.malloc(handle, e)
            else:
                a.free(~e)
    return a.peak_reserved, a.peak_allocated


def _as_steps(chunks):
    """Chunks of events as training.steps yields them, each ending a step."""
    for ev in chunks:
        yield ev, [], True


def test_fast_replay_matches_the_reference_allocator_on_hand_checked_and_random_sequences():
    # The hand-checked case of test_allocator_model (MiB): 40 + 40, free the first, 24 + 24 -> 104 MiB reserved,
    # peak allocated 40 + 24 + 24 = 88 MiB (the first 24 takes the freed 40 MiB block, its 16 MiB rest split off).
    seq = [40 * MiB, 40 * MiB, ~1, 24 * MiB, 24 * MiB]
    assert caching.replay_peaks(_as_steps([seq])) == _reference_peaks([seq]) == (104 * MiB, 88 * MiB)
    rng = random.Random(16)
    for _ in range(30):
        live, ev, n = [], [], 0
        for _ in range(400):
            if live and rng.random() < 0.45:
                ev.append(~live.pop(rng.randrange(len(live))))
            else:
                n += 1
                live.append(n)
                ev.append(rng.choice([rng.randrange(1, 4096), rng.randrange(1, 2 * MiB), rng.randrange(MiB, 64 * MiB)]))
        chunks = [ev[:200], ev[200:]]
        assert caching.replay_peaks(_as_steps(chunks)) == _reference_peaks(chunks)


@pytest.mark.parametrize("expandable, reserved", [(False, 30 * MiB), (True, 40 * MiB)])
def test_the_fast_replay_leaves_out_steps_that_repeat_exactly(expandable, reserved):
    # Step k allocates 30 MiB and frees it. Step 0 opens a 30 MiB segment (start: nothing; end: one free 30 MiB
    # block); step 1 reuses it and ends where it started - step 2 would start from step 1's start: not generated.
    # Expandable segments: step 0 maps 2 pages of 20 MiB (40 MiB; a 10 MiB free tail) and the free merges them back
    # into one free 40 MiB block - the same two steps.
    generated = []

    def chunks():
        for k in range(5):
            generated.append(k)
            repeated = yield [30 * MiB, ~(k + 1)], [], True
            if repeated:
                return
    assert caching.replay_peaks(chunks(), expandable_segments=expandable) == (reserved, 30 * MiB)
    assert generated == [0, 1]


def test_repeated_micro_batches_are_left_out_and_the_peaks_stay_those_of_every_event():
    # 16 micro-batches of accumulation: the fast replay stops generating them once one leaves the state as it
    # found it, and gets the reference allocator's peaks over all of them.
    shape = training.Shape(**{**TINY, "grad_accum": 16, "train_tokens": 4096, "hidden": 2048, "intermediate": 8192,
                              "vocab": 32000, "n_layers": 2, "q_dim": 2048, "kv_dim": 512,
                              "layer_saved_bytes_per_token": 60000, "head_saved_bytes": 4096 * 2048 * 2})
    every = sum(len(ev) for ev, _, _ in training.steps(shape))
    a = training.simulate(shape)
    assert training.peaks(shape) == (a.peak_reserved, a.peak_allocated)
    sent = []

    def counting():
        gen = training.steps(shape)
        chunk = next(gen)
        while True:
            sent.append(len(chunk[0]))
            repeated = yield chunk
            try:
                chunk = gen.send(repeated)
            except StopIteration:
                return
    caching.replay_peaks(counting())
    assert sum(sent) < every / 2


def test_expandable_replay_leaves_out_repeated_micro_batches_and_keeps_the_peaks_of_every_event():
    # 16 micro-batches: the replay stops making them once one repeats, with the peaks of every event replayed.
    shape = training.Shape(**{**TINY, "grad_accum": 16, "train_tokens": 4096, "hidden": 2048, "intermediate": 8192,
                              "vocab": 32000, "n_layers": 2, "q_dim": 2048, "kv_dim": 512,
                              "layer_saved_bytes_per_token": 60000, "head_saved_bytes": 4096 * 2048 * 2,
                              "expandable_segments": 1})
    a = training.simulate(shape)
    assert a.expandable
    assert training.peaks(shape) == (a.peak_reserved, a.peak_allocated)
    assert training.peaks(shape._replace(expandable_segments=0)) != training.peaks(shape)


def test_runtime_settings_expandable_segments_replays_that_mode():
    body = {"gpu_key": "h200", "llm_key": "llama-3.2-1b", "finetuning_method": "full", "batch_size": 4,
            "seq_length": 1024, "trace": True}
    default = vramplan.estimate_finetuning(body)
    expandable = vramplan.estimate_finetuning({**body, "runtime_settings": {"expandable_segments": 1}})
    vd, ve = values(default), values(expandable)
    assert vd["train_reserve_simulated"] == ve["train_reserve_simulated"] == 1
    # Each estimate's reserve is its own mode's replay of every event through the reference allocator.
    for v, mode in ((vd, False), (ve, True)):
        a = training.simulate(training.Shape.of(v))
        assert a.expandable is mode
        assert v["train_reserve_simulated_bytes"] == a.peak_reserved - a.peak_allocated
    assert vd["train_reserve_simulated_bytes"] != ve["train_reserve_simulated_bytes"]
    # Nothing else moves: the peak differs by the reserves' difference (each figure rounded to 0.01 GiB).
    gap = (ve["train_reserve_simulated_bytes"] - vd["train_reserve_simulated_bytes"]) / 2**30
    assert abs(expandable["vram_usage"] - default["vram_usage"] - gap) <= 0.02
    assert any("expandable segments (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True" in x
               for x in expandable["assumptions"])
    assert any("allocator reserve: simulated" in x and "default segments" in x for x in default["assumptions"])
    assert not expandable["warnings"]


@pytest.mark.parametrize("model, batch, checkpointing", [("llama-3.2-3b", 4, True), ("qwen2.5-0.5b", 8, False)])
def test_the_readmes_expandable_segments_figures_are_what_the_engine_gives(model, batch, checkpointing):
    from pathlib import Path
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    body = {"gpu_key": "h200", "llm_key": model, "finetuning_method": "full", "fine_tuning_quantization": "bf16",
            "batch_size": batch, "seq_length": 1024, "optimization_config": {"gradient_checkpointing": checkpointing}}
    default = vramplan.estimate_finetuning(body)["vram_usage"]
    expandable = vramplan.estimate_finetuning({**body, "runtime_settings": {"expandable_segments": 1}})["vram_usage"]
    assert f"from {default:.2f} to {expandable:.2f} GiB" in readme or f"from {default:.2f} to {expandable:.2f}" in readme


def test_expandable_segments_where_no_simulated_reserve_reads_it_says_it_changes_nothing():
    qlora = {"gpu_key": "h200", "llm_key": "llama-3.1-8b", "finetuning_method": "qlora", "batch_size": 2,
             "seq_length": 1024}
    plain = vramplan.estimate_finetuning(qlora)
    flagged = vramplan.estimate_finetuning({**qlora, "runtime_settings": {"expandable_segments": 1}})
    assert flagged["vram_usage"] == plain["vram_usage"]
    assert any(w.startswith("runtime_settings.expandable_segments changes nothing here") and "fitted" in w
               for w in flagged["warnings"])
    served = {"gpu_key": "h200", "llm_key": "llama-3.1-8b", "runtime": "vllm", "seq_length": 2048}
    plain = vramplan.estimate_inference(served)
    flagged = vramplan.estimate_inference({**served, "runtime_settings": {"expandable_segments": 1}})
    assert flagged["vram_usage"] == plain["vram_usage"]
    assert any(w.startswith("runtime_settings.expandable_segments changes nothing here") and "vllm" in w
               for w in flagged["warnings"])
    with pytest.raises(vramplan.RequestError, match="runtime_settings.expandable_segments: is a flag"):
        vramplan.estimate_inference({**served, "runtime_settings": {"expandable_segments": 2}})


def train(config: dict, **kw) -> tuple[dict, dict[str, float]]:
    kw.setdefault("optimization_config", {"gradient_checkpointing": False})
    body = {"gpu_key": "h200", "llm_key": "custom", "custom_model": config, "trace": True, "batch_size": 2,
            "seq_length": 512, **kw}
    resp = vramplan.estimate_finetuning(body)
    return resp, values(resp)


COVERED = {
    "full bf16": dict(finetuning_method="full", fine_tuning_quantization="bf16"),
    "full fp32 mixed": dict(finetuning_method="full", fine_tuning_quantization="fp32"),
    "lora": dict(finetuning_method="lora", lora_rank=16),
    "adamw 8-bit": dict(finetuning_method="full", optimizer="adamw_8bit"),
    "checkpointing": dict(finetuning_method="full", optimization_config={"gradient_checkpointing": True}),
    "accumulation": dict(finetuning_method="lora", gradient_accumulation_steps=2),
    "phi-3 fused projections, lora": dict(finetuning_method="lora", lora_rank=16),
    "phi-3 fused projections, full bf16": dict(finetuning_method="full", fine_tuning_quantization="bf16"),
    "phi-3 with its window (the converted mask saved each layer)": dict(finetuning_method="lora", seq_length=4096),
    "eager attention (its scores saved)": dict(finetuning_method="lora", optimization_config={"flash_attention": False}),
}


@pytest.mark.parametrize("case", sorted(COVERED))
def test_covered_classes_take_the_simulated_reserve(case):
    config = {**PHI3_MINI, "sliding_window": 2047} if "window" in case else PHI3_MINI if case.startswith("phi-3") else LLAMA32_1B
    resp, v = train(config, **COVERED[case])
    if "window" in case:  # every layer saves SDPA's converted mask: batch x tokens x tokens x 2 bytes, per token 4096 x 2
        assert v["train_mask_bytes_per_token_layer"] == 4096 * 2
    assert v["train_reserve_simulated"] == 1
    simulated = training.reserve_bytes(*training.Shape.of(v))
    assert v["allocator_reserve_bytes"] == v["train_reserve_simulated_bytes"] == simulated > 0
    assert any(a.startswith("allocator reserve: simulated") for a in resp["assumptions"])


UNCOVERED = {
    "qlora": (LLAMA32_1B, dict(finetuning_method="qlora")),
    "moe": (MIXTRAL, dict(finetuning_method="lora")),
    "paged optimizer": (LLAMA32_1B, dict(finetuning_method="full", optimizer="paged_adamw_8bit")),
    "zero on two gpus": (LLAMA32_1B, dict(finetuning_method="full", num_gpus=2,
                                          optimization_config={"gradient_checkpointing": False, "zero_stage": 2})),
}


@pytest.mark.parametrize("case", sorted(UNCOVERED))
def test_uncovered_classes_keep_the_fitted_fractions(case):
    config, kw = UNCOVERED[case]
    resp, v = train(config, **kw)
    assert v["train_reserve_simulated"] == 0 and v["train_reserve_simulated_bytes"] == 0
    # 0.25 x the loss's logit bytes + 0.75 x the gradients (catalogs/runtime_constants/engine.yaml)
    assert v["allocator_reserve_bytes"] == pytest.approx(0.25 * v["train_logits_bytes"] + 0.75 * v["grads_bytes"])
    assert any(a.startswith("allocator reserve: fitted fractions") for a in resp["assumptions"])


def test_a_batch_of_estimates_gives_what_single_estimates_give():
    # Rows differing in batch size (new shapes: the function runs row by row) and in the method (covered and not).
    bodies = [{"gpu_key": "h200", "llm_key": "custom", "custom_model": LLAMA32_1B, "batch_size": b, "seq_length": 1024,
               "finetuning_method": m, "optimization_config": {"gradient_checkpointing": gc}}
              for b in (1, 3, 4) for m in ("full", "lora", "qlora") for gc in (False, True)]
    many = estimate_many(bodies, "finetuning")
    for body, got in zip(bodies, many):
        one = vramplan.estimate_finetuning(dict(body))
        assert got["vram_usage"] == one["vram_usage"]
        assert got["memory_breakdown"] == one["memory_breakdown"]


def test_a_sequence_too_long_to_replay_keeps_the_fractions():
    # hidden 8 with intermediate 65,536: the layer saves ~4 x 65,536 x 2 bytes per token beyond the tokens x
    # intermediate pieces' four, i.e. tens of thousands of tokens x hidden pieces per layer: 3 x 16 layers x
    # 4 x (5 + saved / 16) events is far beyond the routing's 500,000 - not replayed (an estimate, and the dozen
    # new shapes a request's suggestions probe, must stay within seconds).
    config = {**LLAMA32_1B, "hidden_size": 8, "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 8,
              "intermediate_size": 65536}
    resp, v = train(config, finetuning_method="full")
    assert v["train_reserve_sequence_events"] > 500_000
    assert v["train_reserve_simulated"] == 0
    assert v["allocator_reserve_bytes"] == pytest.approx(0.25 * v["train_logits_bytes"] + 0.75 * v["grads_bytes"])


def test_runtime_settings_can_turn_the_simulation_off_for_fast_sweeps():
    body = {"gpu_key": "h100_80", "llm_key": "llama-3.2-1b", "finetuning_method": "full", "batch_size": 4, "seq_length": 1024}
    slow = vramplan.estimate_finetuning(body)
    fast = vramplan.estimate_finetuning({**body, "runtime_settings": {"train_reserve_simulation": 0}})
    assert any(a.startswith("allocator reserve: simulated") for a in slow["assumptions"])
    assert "allocator reserve: fitted fractions of the logit and gradient blocks - runtime_settings " \
           "train_reserve_simulation is 0" in fast["assumptions"]
    assert fast["vram_usage"] != slow["vram_usage"]



# --- Llama-style layers written op by op (engine/allocator/training.py explicit_layer and its kin) -----------------
# A tiny Llama layer whose formula inventory is exactly what the recorded layer saves: 1 token, hidden 8, q 8, kv 4
# (GQA), intermediate 16, bf16. Fully trained, a layer saves the input norm's fp32 copy (32 bytes), 16-bit copy (16) and
# output (16), v (8), the rotated q (16) and k (8), SDPA's output (16), the same three of the second norm, gate's
# output, act_fn's, up's and their product (4 x 32): 64 + 16 + 8 + 16 + 8 + 64 + 128 = 304 bytes a token (8 x 8 +
# 2 x (2 x 8 + 2 x 4 + 3 x 16) + 2 x (4 x 8 + 16) = 64 + 144 + 96); the head saves the final norm's three (32 + 16 + 16).
LLAMA16 = {**TINY, "kv_dim": 4, "layer_saved_bytes_per_token": 304, "head_saved_bytes": 64}


def _ops(events, start=0, stop=None, first_handle=1):
    """The chunk's events from start to stop as ('a', size) / ('f', size), handles resolved to their sizes."""
    sizes, handle, out = {}, first_handle - 1, []
    for k, e in enumerate(events):
        if e >= 0:
            handle += 1
            sizes[handle] = e
        if start <= k < (len(events) if stop is None else stop):
            out.append(("a", e) if e >= 0 else ("f", sizes[~e]))
    return out


def _phase(shape, label, until):
    events, marks, _ = next(training.steps(training.Shape(**shape)))
    at = {name: k for k, name in marks}
    return events, at[label], at[until]


def a(*sizes):
    return [("a", s) for s in sizes]


def f(*sizes):
    return [("f", s) for s in sizes]


def test_a_16_bit_layers_forward_is_written_as_recorded():
    # transformers' LlamaDecoderLayer in bf16 (recorded on the meta device): RMSNorm casts to fp32 (32, saved),
    # squares it (32, freed), multiplies by rsqrt (32), casts back (16) and scales by the weight (16), freeing the
    # product; q, k, v (16, 8, 8); rotary on q: x cos (16), rotate_half's neg (8) and cat (16), x sin (16), the sum
    # (16, saved) - then on k at width 4; q and k go, SDPA's output (16), o's (16), the residual sum (16, o's goes);
    # the second norm; gate (32), act_fn (32), up (32), their product (32), down (16), the second residual sum (16):
    # down's output and the first sum go. The embedding's output (16, x) stays: the model holds it to the end.
    events, fwd, bwd = _phase(LLAMA16, "fwd0", "bwd0")
    ops = _ops(events, fwd, bwd)
    norm = a(32, 32) + f(32) + a(32, 16, 16) + f(32)
    rot_q, rot_k = a(16, 8, 16) + f(8) + a(16) + f(16) + a(16) + f(16, 16), a(8, 4, 8) + f(4) + a(8) + f(8) + a(8) + f(8, 8)
    layer = norm + a(16, 8, 8) + rot_q + rot_k + f(16, 8) + a(16, 16, 16) + f(16) + norm + a(32, 32, 32, 32, 16, 16) + f(16, 16)
    assert ops[:1 + len(layer)] == a(16) + layer
    # the head: the final norm's three, then the last residual sum and the embedding's output go before the logits
    assert ops[1 + len(layer):1 + len(layer) + len(norm) + 3] == norm + f(16, 16) + a(32 * 2)


def test_a_16_bit_layers_backward_frees_each_saved_tensor_at_its_last_use():
    # After the head (its weight's gradient is the tied embedding's share) and the final norm's backward, the layer's:
    # down's weight gradient (16 x 8 x 2 = 256) and input gradient (32), the product goes; mul's two gradients (up's
    # first), up's weight gradient and input gradient (16); silu_backward (32); gate's two; their sum (16); then the
    # norm's backward (two 16-byte products with the weight's 16-byte gradient between, the fp32 chain of 32s, its
    # 16-bit copy and the residual stream's new gradient); o's gradients (128, 16), SDPA's three (16, 8, 8), rotary's
    # backward on k then q, v's (4 x 8 x 2 = 64, 16), k's (after a contiguous copy of its gradient, 8) and their sum,
    # q's (after its copy: 16, 128, 16), the sum into the norm (16).
    events, bwd, opt = _phase(LLAMA16, "bwd0", "opt0")
    allocs = [s for op, s in _ops(events, bwd, opt) if op == "a"]
    nb = [16, 16, 16, 32, 32, 32, 32, 32, 32, 32, 32, 16, 16]          # a norm's backward: its 13 allocations
    head = [128, 128, 64, 512, 16]                                        # nll, log_softmax, logits', share, input's
    final_norm = nb[:-1]                                                  # no residual sum at the final norm
    layer = [256, 32, 32, 32, 256, 16, 32, 256, 16, 16] + nb + [128, 16, 16, 8, 8] \
        + [8, 4, 8, 8, 8, 8, 8] + [16, 8, 16, 16, 16, 16, 16] + [64, 16, 8, 64, 16, 16, 16, 128, 16, 16] + nb
    assert allocs[:len(head) + len(final_norm) + len(layer)] == head + final_norm + layer


def test_checkpointing_writes_the_no_grad_forward_and_an_early_stopping_recomputation():
    # Under torch.utils.checkpoint the forward saves nothing: the norm's fp32 copy goes as soon as it is used, the
    # attention's tensors with o's output, gate's with act_fn's; the layer input (16) is the checkpoint's. In backward
    # the recomputation saves as the plain forward does but stops once down's input exists (the early stop): no down,
    # no second residual sum, the first one freed.
    gc = {**LLAMA16, "gradient_checkpointing": 1}
    events, fwd, bwd = _phase(gc, "fwd0", "bwd0")
    ops = _ops(events, fwd, bwd)
    norm = a(32, 32) + f(32) + a(32) + f(32) + a(16, 16) + f(16, 32)
    rot_q, rot_k = a(16, 8, 16) + f(8) + a(16) + f(16) + a(16) + f(16, 16), a(8, 4, 8) + f(4) + a(8) + f(8) + a(8) + f(8, 8)
    layer = norm + a(16, 8, 8) + rot_q + rot_k + f(16, 8) + a(16, 16) + f(16, 16, 8, 8, 16) + a(16) + f(16) + norm \
        + a(32, 32) + f(32) + a(32, 32) + f(32, 32) + a(16) + f(32, 16) + a(16) + f(16, 16)
    assert ops[:1 + len(layer)] == a(16) + layer
    events, bwd, opt = _phase(gc, "bwd0", "opt0")
    allocs = [s for op, s in _ops(events, bwd, opt) if op == "a"]
    head_and_final_norm = 5 + 12
    recompute = [32, 32, 32, 16, 16, 16, 8, 8] + [16, 8, 16, 16, 16] + [8, 4, 8, 8, 8] + [16, 16, 16] \
        + [32, 32, 32, 16, 16] + [32, 32, 32, 32]
    assert allocs[head_and_final_norm:head_and_final_norm + len(recompute) + 1] == recompute + [256]


def test_autocasts_fp32_layer_keeps_its_input_and_casts_each_projections():
    # fp32 weights under bf16 autocast (the layer input and first residual sum are fp32 and saved by the norms'
    # squares): the norm squares (32, freed), normalizes (32, saved) and scales (32); q, k, v each cast the input
    # (16, saved), copy the weight (8 x 8 x 2 = 128, 8 x 4 x 2 = 64, 64; saved) and multiply (16, 8, 8); rotary
    # multiplies in fp32 (q: 32, 16, 16, 32, 32); SDPA casts q and k back to bf16 (16, 8) and saves its output (16);
    # o copies its weight (128) ... The inventory: 16 x 8 + 2 x (5 x 8 + 2 x 8 + 2 x 4 + 4 x 16) = 128 + 256 = 384.
    mixed = {**LLAMA16, "mixed_precision": 1, "resid_bytes": 4, "moment_bytes": 4, "layer_saved_bytes_per_token": 384,
             "head_saved_bytes": 8 * 10}
    events, fwd, bwd = _phase(mixed, "fwd0", "bwd0")
    allocs = [s for op, s in _ops(events, fwd, bwd) if op == "a"]
    assert allocs[:1 + 3 + 9] == [32] + [32, 32, 32] + [16, 128, 16, 16, 64, 8, 16, 64, 8]
    ops = _ops(events, fwd, bwd)
    assert ops[1:4] == a(32) + f(32) + a(32)   # the square goes at once; the input (32) is never freed in the forward
    # its backward: down's bf16 weight gradient (256) and input gradient (32), then the fp32 one, the parameter's (512)
    events, bwd, opt = _phase(mixed, "bwd0", "opt0")
    allocs = [s for op, s in _ops(events, bwd, opt) if op == "a"]
    i = allocs.index(256)
    assert allocs[i:i + 3] == [256, 32, 512]
    # as recorded, mm's backward releases the output gradient (16), then the weight copy (256), then the input (32)
    assert _contains(_ops(events, bwd, opt), a(256, 32) + f(16, 256, 32) + a(512))


def test_lora_keeps_each_modules_output_and_writes_the_layer_as_recorded():
    # LoRA rank 1 on q and v of the 16-bit layer, no checkpointing: a frozen norm saves only its fp32 copy (its 16-bit
    # copy goes); an adapted module makes the base output (16), saves the fp32 input (32) and lora_A's output (4), makes
    # lora_B's fp32 output, its scaled copy and the sum (32 each for q; 16 each for v), and keeps the 16-bit output.
    # The inventory: 8 x 8 + 2 x (2 x 8 + 2 x 4 + 3 x 16) + (8 + 1) x 4 x 2 = 64 + 144 + 72 = 280.
    lora = {**LLAMA16, "method_full": 0, "lora_rank": 1, "moment_bytes": 4, "layer_saved_bytes_per_token": 280,
            "lora_q": 1, "lora_v": 1}
    events, fwd, bwd = _phase(lora, "fwd0", "bwd0")
    ops = _ops(events, fwd, bwd)
    # the first layer: nothing before its input norm requires grad (the frozen embedding's output; peft makes the
    # inputs require grad only under checkpointing), so the fp32 copy (32) goes once the normalized product exists
    norm = a(32, 32) + f(32) + a(32) + f(32) + a(16, 16) + f(16, 32)
    q = a(16, 32, 4, 32, 32) + f(32) + a(32) + f(32, 16) + a(16) + f(32)
    v = a(8, 32, 4, 16, 16) + f(16) + a(16) + f(16, 8) + a(8) + f(16)
    assert ops[:1 + len(norm) + len(q) + 1 + len(v)] == a(16) + norm + q + a(8) + v
    # a later layer's norm keeps it
    events, fwd, bwd = _phase({**lora, "n_layers": 2}, "fwd0", "bwd0")
    assert _contains(_ops(events, fwd, bwd), a(32, 32) + f(32) + a(32, 16, 16) + f(16, 32) + q)


def test_the_optimizers_lists_are_freed_as_python_frees_them():
    # foreach AdamW's sqrt(v) list dies at the end of the step: CPython's list_dealloc drops its items last first;
    # zero_grad(set_to_none=True) then drops the gradients parameter by parameter, in the model's order (embedding,
    # q, k, v, o, gate, up, down, the two norms, the final norm) - not in the order backward made them.
    events, marks, _ = next(training.steps(training.Shape(**LLAMA16)))
    at = {name: k for k, name in marks}
    ops = _ops(events, at["opt0"])
    params = [512, 128, 64, 64, 128, 256, 256, 256, 16, 16, 16]      # bytes: embedding 32 x 8 x 2, q 8 x 8 x 2, ...
    k = len(params) * 2
    assert ops[:k] == a(*[s for p in params for s in (p, p)])       # the moments, two per parameter
    assert ops[k:k + len(params)] == a(*params)                      # the sqrt(v) list
    assert ops[k + len(params):k + 2 * len(params)] == f(*params[::-1])
    assert ops[k + 2 * len(params):] == f(*params)


def test_a_biased_projections_backward_makes_the_input_gradient_first():
    # Qwen2's q, k and v carry biases: addmm's backward makes the input's gradient (16) before the weight's (v: 4 x 8 x
    # 2 = 64); without a bias mm's makes the weight's first.
    # After rotary's backward: v's two, k's contiguous copy (8), k's two, their sum (16), q's copy (16) and q's two.
    def allocs(shape):
        events, bwd, opt = _phase(shape, "bwd0", "opt0")
        return [s for op, s in _ops(events, bwd, opt) if op == "a"]

    def contains(seq, sub):
        return any(seq[i:i + len(sub)] == sub for i in range(len(seq)))
    assert contains(allocs(LLAMA16), [64, 16, 8, 64, 16, 16, 16, 128, 16])
    assert contains(allocs({**LLAMA16, "qkv_bias": 1}), [16, 64, 8, 16, 64, 16, 16, 16, 128])


def test_a_layer_saving_anything_else_keeps_the_pieces():
    # The op-by-op layer is written only where the formula's inventory is exactly what it saves: 16 more bytes a token
    # (Gemma 2's extra norms, say) and the layer is the saved pieces again - x (16), then up to four intermediate-wide
    # pieces (32 each) and hidden-wide ones (16).
    events, fwd, bwd = _phase({**LLAMA16, "layer_saved_bytes_per_token": 320}, "fwd0", "bwd0")
    assert [s for op, s in _ops(events, fwd, bwd) if op == "a"][:5] == [16, 32, 32, 32, 32]


def test_phi3s_fused_layer_is_written_as_recorded():
    # Phi-3 fully trained in bf16, kv 4: qkv_proj's output (1 x (8 + 2 x 4) x 2 = 32) stays whole under its q / k / v
    # views (v's keeps it); rotary's cat layout adds a sixth tensor (the rotated part joined with the pass-through,
    # saved) after the five; SDPA's output (16) and its contiguous copy (16, o's input); gate_up_proj's output (64),
    # act_fn's (32), the product (32). The inventory: 8 x 8 + 2 x (4 x 8 + 4 x 8 + 3 x 4 + 4 x 16) = 64 + 280 = 344.
    phi3 = {**LLAMA16, "fused_qkv": 1, "fused_gate_up": 1, "layer_saved_bytes_per_token": 344}
    events, fwd, bwd = _phase(phi3, "fwd0", "bwd0")
    ops = _ops(events, fwd, bwd)
    norm = a(32, 32) + f(32) + a(32, 16, 16) + f(32)
    rot_q = a(16, 8, 16) + f(8) + a(16) + f(16) + a(16) + f(16, 16) + a(16) + f(16)
    rot_k = a(8, 4, 8) + f(4) + a(8) + f(8) + a(8) + f(8, 8) + a(8) + f(8)
    layer = norm + a(32) + rot_q + rot_k + a(16, 16, 16, 16) + f(16) + norm + a(64, 32, 32, 16, 16) + f(16, 16)
    assert ops[:1 + len(layer)] == a(16) + layer
    # backward: chunk's backward joins gate's and up's gradients (64) before gate_up_proj's weight gradient (16 x 2 x 8
    # x 2 = 512); the three views' gradients are each widened to qkv's width (32) and summed (v's and k's, then q's)
    # before qkv_proj's weight gradient (8 x 16 x 2 = 256)
    events, bwd, opt = _phase(phi3, "bwd0", "opt0")
    allocs = [s for op, s in _ops(events, bwd, opt) if op == "a"]

    def contains(seq, sub):
        return any(seq[i:i + len(sub)] == sub for i in range(len(seq)))
    assert contains(allocs, [256, 32, 32, 32, 32, 64, 512, 16])   # down's two, mul's two, silu's, the cat, gate_up's
    assert contains(allocs, [8, 16, 32, 32, 32, 32, 32, 256, 16])  # k's and q's copies, widened, summed, qkv's


def test_lora_with_checkpointing_starts_downs_backward_before_recomputing_to_its_lora_a():
    # LoRA rank 1 on all seven modules of the 16-bit layer, checkpointing. Inventory: 8 x 8 + 2 x (2 x 8 + 2 x 4 + 3 x 16)
    # + 4 x ((8 + 1) x 6 + 16 + 1) = 64 + 144 + 4 x 71 = 492; the frozen head saves the final norm's fp32 copy (32).
    lora = {**LLAMA16, "method_full": 0, "lora_rank": 1, "moment_bytes": 4, "layer_saved_bytes_per_token": 492,
            "head_saved_bytes": 32, "gradient_checkpointing": 1, **{f"lora_{m}": 1 for m in training.LORA_MODULES}}
    # the checkpointed forward: an adapted module frees its fp32 input (32) and lora_A's output (4) once the sum exists
    events, fwd, bwd = _phase(lora, "fwd0", "bwd0")
    ops = _ops(events, fwd, bwd)
    nograd_norm = a(32, 32) + f(32) + a(32) + f(32) + a(16, 16) + f(16, 32)
    q = a(16, 32, 4, 32, 32) + f(32) + a(32) + f(32, 16) + a(16) + f(32, 32, 4)
    assert ops[1:1 + len(nograd_norm) + len(q)] == nograd_norm + q
    # the backward: nll, log_softmax's and the logits' gradients (128, 128, 64) and the head's input gradient (16) - the
    # frozen head makes no weight gradient - and the frozen final norm's backward (16, 32, 32, 32, four 32s, 32, 16);
    # then down's backward begins with what needs no saved tensor: the output's gradient in fp32 (32), the base's in
    # 16 bits (16), x scaling's (32) - and only then is the layer recomputed (its norm: 32, 32, 32, 16, 16 ...) up to
    # lora_A's output of down (down's base output 16, its fp32 input 64, lora_A's output 4), where the recomputation
    # stops; down's backward goes on with its adapters' gradients (A 1 x 16 x 4 = 64, B 8 x 1 x 4 = 32), the fp32 input's
    # gradient (64), its 16-bit copy (32), the base's input gradient (32) and their sum (32); mul's two (32, 32).
    events, bwd, opt = _phase(lora, "bwd0", "opt0")
    allocs = [s for op, s in _ops(events, bwd, opt) if op == "a"]
    head = [128, 128, 64, 16] + [16, 32, 32, 32, 32, 32, 32, 32, 32, 16]
    assert allocs[:len(head) + 3 + 5] == head + [32, 16, 32] + [32, 32, 32, 16, 16]
    tail = [32, 16, 64, 4] + [64, 32, 64, 32, 32, 32] + [32, 32]   # the product, down's recomputed three, ...
    assert any(allocs[k:k + len(tail)] == tail for k in range(len(allocs)))


def test_lora_backward_sums_each_modules_input_gradients_as_they_arrive():
    # LoRA on q and v only, no checkpointing (inventory 280, as above). After rotary's backward: v's (adapted) output
    # gradient in fp32 (1 x 4 x 4 = 16), the base output's in 16 bits (8), x scaling's (16); its adapters' gradients
    # (A 1 x 8 x 4 = 32, B 4 x 1 x 4 = 16), the fp32 input's gradient (32), its 16-bit copy (16), the base's input
    # gradient (16) and their sum (16); k's contiguous copy (8), frozen k's input gradient (16) summed in (16); q's copy
    # (16), q's four of its start and adapters (32, 16, 32, then 32 and 32), its fp32 input's gradient (32), the copy
    # (16) summed in (16), the base's (16) and the total (16).
    lora = {**LLAMA16, "method_full": 0, "lora_rank": 1, "moment_bytes": 4, "layer_saved_bytes_per_token": 280,
            "head_saved_bytes": 32, "lora_q": 1, "lora_v": 1}
    events, bwd, opt = _phase({**lora, "n_layers": 2}, "bwd0", "opt0")   # the second layer (the first is below)
    allocs = [s for op, s in _ops(events, bwd, opt) if op == "a"]
    expected = [16, 8, 16, 32, 16, 32, 16, 16, 16] + [8, 16, 16] + [16, 32, 16, 32, 32, 32, 32, 16, 16, 16, 16]
    assert any(allocs[k:k + len(expected)] == expected for k in range(len(allocs)))
    # The first layer (no checkpointing) needs no input gradient below its attention: v's output gradient in fp32 (16;
    # the incoming 8 goes) and x scaling's (16), its adapters' gradients (A 8 x 1 x 4 = 32, B 16), then x scaling's,
    # its saved fp32 input (32) and lora_A's output (4) go; k's contiguous copy (8) and nothing else for frozen k; q's
    # copy (16), fp32 gradient (32), x scaling's (32), adapters' (32, 32): no base input gradients, no sums, no norm
    # backward - backward ends there.
    events, bwd, opt = _phase(lora, "bwd0", "opt0")
    ops = _ops(events, bwd, opt)
    tail = a(16) + f(8) + a(16) + f(16) + a(32, 16) + f(16, 32, 4) + a(8) + f(8, 8) \
        + a(16) + f(16) + a(32) + f(16) + a(32) + f(32) + a(32, 32) + f(32, 32, 4)
    assert ops[-len(tail):] == tail


def test_qwen3s_head_norms_are_written_in_the_layer():
    # Qwen3's q_norm / k_norm (per head, RMSNorm over head_dim) run after the q and k projections: each the norm's
    # chain at the projection's width (q 8: fp32 copy 32 saved, square 32, product 32, 16-bit copy 16 saved, output 16;
    # k 4: 16, 16, 16, 8, 8), the projection's output then freed; rotary takes the normed output, which it does not save.
    # The inventory: 304 + (8 + 4) x (4 + 2) = 376. In backward each head norm's backward (at width 4, then 8) comes
    # before the key's / query's contiguous copy; its 256-byte weight gradient (small pool) is not written.
    qwen3 = {**LLAMA16, "qk_head_norm": 1, "layer_saved_bytes_per_token": 376}
    events, fwd, bwd = _phase(qwen3, "fwd0", "bwd0")
    ops = _ops(events, fwd, bwd)
    norm = a(32, 32) + f(32) + a(32, 16, 16) + f(32)
    q_norm = a(32, 32) + f(32) + a(32, 16, 16) + f(32)
    k_norm = a(16, 16) + f(16) + a(16, 8, 8) + f(16)
    assert ops[:1 + len(norm) + 1 + len(q_norm) + 2 + len(k_norm) + 2] == \
        a(16) + norm + a(16) + q_norm + f(16) + a(8) + k_norm + f(8) + a(8)
    events, bwd, opt = _phase(qwen3, "bwd0", "opt0")
    allocs = [s for op, s in _ops(events, bwd, opt) if op == "a"]
    k_back = [8, 8, 16, 16, 16, 16, 16, 16, 16, 16, 8]        # t1, t2, g32, u1, u2, four 16s, the sum, the copy
    assert any(allocs[k:k + 15] == [64, 16] + k_back + [8, 64] for k in range(len(allocs)))  # v's two, k's norm, copy, k


# Gemma 2 under eager attention, fully trained in bf16: 1 token of a 1-token sequence, hidden 8, 2 query heads of 4
# (q 8) over one KV head (kv 4: repeat_kv copies), intermediate 16, window 4096. The inventory: four norms' fp32 input
# and normalized input (4 x 2 x 4 x 8 = 256), the first and third norms' outputs (2 x 16), rotary's q and the two
# copies and the attention's contiguous output (4 x 16), the MLP's four (4 x 32) and the scores: 2 heads x 1 key x
# (fp32 softmax 4 + probabilities 2 + tanh 2) = 16 - 256 + 32 + 64 + 128 + 16 = 496 bytes a token.
GEMMA2 = {**TINY, "kv_dim": 4, "layer_saved_bytes_per_token": 496, "head_saved_bytes": 80,
          "train_scores_bytes_per_token_layer": 16, "attn_softcap": 1, "final_softcap": 1, "norm_scale_fp32": 1,
          "gemma2_layer": 1, "seq": 1, "n_heads": 2, "sliding_window": 4096}
# Gemma2RMSNorm: x.float() (32, saved), its square (32, freed), the normalized product (32, saved), x (1 + w) (32),
# the 16-bit copy (16), the product freed
GEMMA_NORM = a(32, 32) + f(32) + a(32, 32, 16) + f(32)


def _contains(seq, sub):
    return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def test_gemma2s_eager_layer_is_written_as_recorded():
    # The layer: the input norm, q / k / v (16, 8, 8), rotary on q and k, q's and k's projections go; repeat_kv's copies
    # of k and v (16 each, q wide); the scores (2 heads x 1 x 1 x 2 = 4 bytes): q @ k^T, x scaling (the product goes),
    # / cap, tanh (kept), x cap, + the mask, softmax in fp32 (the copy 8 goes, the output 8 kept) and its 16-bit copy
    # (the masked scores go); probabilities @ v (16) and its contiguous copy (16), o (16); k's rotated copy and v go at
    # the attention's return; the post-attention norm, o's output goes, the residual sum (16), the norm's output goes;
    # the pre-feedforward norm, gate, gelu, up, product (32 each), down (16); the post-feedforward norm, down's output
    # goes, the second sum (16), then the norm's output and the first sum.
    events, fwd, bwd = _phase(GEMMA2, "fwd0", "bwd0")
    ops = _ops(events, fwd, bwd)
    rot_q, rot_k = a(16, 8, 16) + f(8) + a(16) + f(16) + a(16) + f(16, 16), a(8, 4, 8) + f(4) + a(8) + f(8) + a(8) + f(8, 8)
    scores = a(4, 4) + f(4) + a(4) + f(4) + a(4) + f(4) + a(4, 4) + f(4) + a(8, 8) + f(8) + a(4) + f(4)
    layer = GEMMA_NORM + a(16, 8, 8) + rot_q + rot_k + f(16, 8) + a(16, 16) + scores + a(16, 16) + f(16) + a(16) \
        + f(8, 8) + GEMMA_NORM + f(16) + a(16) + f(16) + GEMMA_NORM + a(32, 32, 32, 32, 16) + GEMMA_NORM + f(16) \
        + a(16) + f(16, 16)
    assert ops[:3] == a(16, 16) + f(16)                      # the embedding, scaled by sqrt(hidden) into a copy
    assert _contains(ops, layer)
    # the head: the final norm, then the last layer's output, the two masks (1 x 1 x 1 x 2 bytes) and the embedding's
    # output go before the logits (1 x 32 x 2 = 64), which are soft-capped
    assert _contains(ops, GEMMA_NORM + f(16, 2, 2, 16) + a(64, 64) + f(64) + a(64) + f(64) + a(64))


def test_gemma2s_eager_layer_backward_frees_each_saved_tensor_at_its_last_use():
    # A Gemma norm's backward: the gradient's fp32 copy (32; the 16-bit one goes unless the residual stream keeps it),
    # x (1 + w)'s product with the normalized input (the weight's gradient, 16 bytes, from it) and with (1 + w), the
    # chain through rsqrt (two products, then mean's expand, pow, x 2 and their product), the sum, its 16-bit copy (16):
    # 12 allocations.
    norm_back = [32, 32, 16, 32, 32, 32, 32, 32, 32, 32, 32, 16]
    events, bwd, opt = _phase(GEMMA2, "bwd0", "opt0")
    ops = _ops(events, bwd, opt)
    allocs = [s for op, s in ops if op == "a"]
    # the attention's: o's weight gradient (8 x 8 x 2 = 128) and input gradient (16), probabilities^T @ g (16) and
    # g @ v^T (4), the fp32 copy (8) and softmax's backward (8), its 16-bit copy (4), x cap's, tanh's, / cap's and x
    # scaling's (4 each), the scores' bmm's two (16, 16), repeat_kv's sums (8, 8: v's first)
    assert _contains(allocs, [128, 16, 16, 4, 8, 8, 4, 4, 4, 4, 4, 16, 16, 8, 8])
    # the input norm's backward ends the layer: q's weight gradient (128) and input gradient (16) after its contiguous
    # copy (16), the three input gradients' sum (16), the norm's backward, the residual stream's new gradient (16)
    assert _contains(allocs, [16, 128, 16, 16] + norm_back + [16])
    # softmax's saved output (8) and tanh's (4) go as their backwards finish
    assert _contains(ops, a(8) + f(4) + a(8) + f(8, 8) + a(4) + f(8) + a(4) + f(4) + a(4) + f(4, 4))


def test_gemma2s_checkpointed_layer_recomputes_to_the_last_norms_normalized_input():
    # Checkpointed, the layer's backward starts with the post-feedforward norm's fp32 gradient copy (32), made before
    # the recomputation; the recomputation writes the layer as the forward does (the same saved tensors) and stops
    # once the last norm's normalized input exists - its x32 (32), square (32, freed), normalized product (32) - then
    # down's output (16) and the first sum (16) go; the norm's backward continues from the copy already made: the
    # weight's product (32), the weight's gradient (16), the input's product (32); the normalized input, the weight's
    # product and the copy go.
    gc = {**GEMMA2, "gradient_checkpointing": 1}
    events, bwd, opt = _phase(gc, "bwd0", "opt0")
    ops = _ops(events, bwd, opt)
    early_stop = a(16) + a(32, 32) + f(32) + a(32) + f(16, 16) + a(32, 16, 32) + f(32, 32, 32)
    assert _contains(ops, early_stop)   # down (16), the last norm's chain to its normalized input, the stop
    allocs = [s for op, s in ops if op == "a"]
    recompute = [32, 32, 32, 32, 16, 16, 8, 8]                         # the input norm, q, k, v
    assert _contains(allocs, [32] + recompute)                          # after the gradient's fp32 copy


def test_gemma2_with_lora_keeps_the_pieces():
    # LoRA on Gemma 2 saves what the fully trained layer does not write op by op: the layer keeps the saved pieces -
    # the scores' three (8, 4, 4) first.
    lora = {**GEMMA2, "method_full": 0, "lora_rank": 1, "lora_q": 1, "layer_saved_bytes_per_token": 496 - 96 + 36}
    events, fwd, bwd = _phase(lora, "fwd0", "bwd0")
    allocs = [s for op, s in _ops(events, fwd, bwd) if op == "a"]
    assert _contains(allocs, [8, 4, 4])


# Phi-3 fully trained in bf16 with its window on the layer (kv 8 = q: no repeat_kv), 1 token: SDPA gets the converted
# mask and runs the memory-efficient kernel. Inventory: norms 8 x 8 = 64, then 2 x (4 x 8 + 4 x 8 + 3 x 8 + 4 x 16) = 304
# for the flash layout; the efficient kernel's output needs no contiguous copy (- 2 x 8 = -16) and saves the mask
# (1 token x 1 key x 2 = 2): 64 + 304 - 16 + 2 = 354.
PHI3_WINDOW = {**TINY, "fused_qkv": 1, "fused_gate_up": 1, "layer_saved_bytes_per_token": 354, "head_saved_bytes": 64,
               "train_mask_bytes_per_token_layer": 2, "seq": 1, "n_heads": 2}
PHI3_ROT = a(16, 8, 16) + f(8) + a(16) + f(16) + a(16) + f(16, 16) + a(16) + f(16)   # rotary's cat layout on 8 wide


def test_phi3s_windowed_layer_saves_the_converted_mask_and_no_contiguous_copy():
    # After qkv_proj (1 x 24 x 2 = 48) and rotary on q and k: zeros_like over the mask (2, saved), its logical_not (1,
    # freed), the kernel's output (16, o's input itself) and logsumexp (1 x 2 heads x 32 (seq padded to 32) x 4 = 256,
    # saved), o (16), the residual sum (16), o's output freed.
    events, fwd, bwd = _phase(PHI3_WINDOW, "fwd0", "bwd0")
    ops = _ops(events, fwd, bwd)
    norm = a(32, 32) + f(32) + a(32, 16, 16) + f(32)
    attention = a(2, 1) + f(1) + a(16, 256, 16, 16) + f(16)
    assert _contains(ops, norm + a(48) + PHI3_ROT + PHI3_ROT + attention + norm + a(64, 32, 32, 16, 16))
    # masking_utils' (1, 1, 1, 1) bool mask is made after the embedding, kept through the forward and freed after the
    # embedding's output at the head (before the logits, 1 x 32 x 2 = 64)
    assert ops[0] == ("a", 16)
    head = [k for k, op in enumerate(ops) if op == ("a", 64 * 1) and k > 20][-1]
    assert ops[head - 3:head] == f(16, 16, 1)
    # backward: o's weight gradient (8 x 8 x 2 = 128) and input gradient (16), the kernel's three gradients, then the
    # node's inputs and saved tensors: the gradient, mask, k, q, qkv (48), logsumexp, output
    events, b0, o0 = _phase(PHI3_WINDOW, "bwd0", "opt0")
    assert _contains(_ops(events, b0, o0), a(128, 16, 16, 16, 16) + f(16, 2, 16, 16, 48, 256, 16))


def test_phi3s_windowed_layer_with_checkpointing_releases_the_recomputed_tensors_as_recorded():
    # Recomputed (checkpoint's unpack hands the saved tensors over): the gradient, logsumexp, qkv, k, q, mask, output;
    # the first layer's checkpoint is the last to hold the bool mask (1), freed with the first norm's fp32 copy (32)
    # before the layer's input (16)
    shape = {**PHI3_WINDOW, "gradient_checkpointing": 1}
    events, b0, o0 = _phase(shape, "bwd0", "opt0")
    ops = _ops(events, b0, o0)
    assert _contains(ops, a(128, 16, 16, 16, 16) + f(16, 256, 48, 16, 16, 2, 16))
    assert _contains(ops, f(32, 32, 32, 32, 1, 16))


def test_an_untied_embeddings_gradient_is_made_at_the_end_of_backward_and_dropped_first():
    # Fully trained with an untied head (p_output 1): embedding_dense_backward's output (32 x 8 x 2 = 512) is the last
    # tensor backward makes before the residual stream's gradient (16) goes, and zero_grad drops it first (the model's
    # parameter order starts with the embedding)
    shape = {**LLAMA16, "p_output": 1}
    events, b0, o0 = _phase(shape, "bwd0", "opt0")
    ops = _ops(events, b0, o0)
    assert ops[-2:] == a(512) + f(16)
    events, o0, _ = _phase(shape, "opt0", "opt0")
    frees = [s for op, s in _ops(events, o0) if op == "f"]
    # the foreach sqrt list, one tensor a parameter freed last first, then one gradient a parameter in the model's
    # order - the embedding's (512) first, the head's (512) last
    n = len(frees) // 2
    assert frees[n:] == frees[:n][::-1] and frees[n] == frees[-1] == 512


# Phi-3 with fp32 weights under bf16 autocast, 1 token, kv 8 = q. Inventory: the fp32 stream, normalized inputs and
# first sum 16 x 8 = 128; qkv_proj's and gate_up_proj's input casts 2 x 8, qkv's output 24 + SDPA's bf16 q, k and
# output 24 + o's contiguous copy 8, gate_up's output 32, act_fn's 16 and the product 16, x 2 bytes = 2 x 136 = 272: 400.
PHI3_AUTOCAST = {**TINY, "fused_qkv": 1, "fused_gate_up": 1, "mixed_precision": 1, "resid_bytes": 4, "moment_bytes": 4,
                 "layer_saved_bytes_per_token": 400, "head_saved_bytes": 80}
NORM32 = a(32) + f(32) + a(32, 32)                   # the square (freed), the normalized input (saved), the output
ROT32_CAT = a(32, 8, 16) + f(8) + a(32) + f(16) + a(32) + f(32, 32) + a(32) + f(32)   # fp32 products, the fp32 cat


def test_phi3s_autocast_layer_casts_once_per_fused_projection():
    # qkv_proj: the input's cast (16), the weight's bf16 copy (8 x 24 x 2 = 384), the output (48); rotary in fp32 on
    # q and k joined by an fp32 cat; SDPA's bf16 q, k, output and o's contiguous copy (16 each); o's weight copy (128)
    # and output (16); the rotated q and k and the first norm's output go (32 each); the sum (32); gate_up_proj: cast
    # (16), copy (8 x 32 x 2 = 512), output (64); act_fn's and the product (32 each); down's copy (256) and output (16)
    events, fwd, bwd = _phase(PHI3_AUTOCAST, "fwd0", "bwd0")
    layer = NORM32 + a(16, 384, 48) + ROT32_CAT + ROT32_CAT + a(16, 16, 16, 16, 128, 16) + f(32, 32, 32) + a(32) + f(16) \
        + NORM32 + a(16, 512, 64, 32, 32, 256, 16) + f(32) + a(32) + f(16)
    assert _ops(events, fwd, bwd)[:1 + len(layer)] == a(32) + layer
    # backward: down's bf16 weight gradient (256) and input gradient (32), then the output gradient, the weight copy
    # and the product go (16, 256, 32), the parameter's fp32 gradient (512); mul's, silu's and chunk's gradients as in
    # 16 bits; gate_up_proj's bf16 weight gradient (512) and input gradient (16), the joined gradient, the copy and the
    # cast go (64, 512, 16), the fp32 gradient (1024), the input gradient back to fp32 (32)
    events, b0, o0 = _phase(PHI3_AUTOCAST, "bwd0", "opt0")
    assert _contains(_ops(events, b0, o0), a(256, 32) + f(16, 256, 32) + a(512) + f(256) + a(32, 32) + f(32, 32) + a(32)
                     + f(32, 64) + a(64) + f(32, 32) + a(512, 16) + f(64, 512, 16) + a(1024) + f(512) + a(32) + f(16))
    # checkpointed, the no-grad forward casts qkv_proj's input and frees it once the output exists; autocast's cache
    # keeps the weight copy (384) past the layer, to the end of the forward
    events, fwd, bwd = _phase({**PHI3_AUTOCAST, "gradient_checkpointing": 1}, "fwd0", "bwd0")
    ops = _ops(events, fwd, bwd)
    assert _contains(ops, NORM32[:2] + a(32, 32) + f(32) + a(16, 384, 48) + f(16) + ROT32_CAT)
    assert ops.index(("f", 384)) > ops.index(("a", 256))  # after the layer (down's copy), with the forward's end


# LoRA rank 1 on q and v of a Mistral-style layer (kv 4 of q 8: grouped heads) with its window on the layer, 1 token:
# SDPA gets the converted mask, so transformers repeats k and v to the query heads (repeat_kv: 16 each) and the
# memory-efficient kernel saves them, the mask (1 x 1 x 2 = 2) and its logsumexp (2 heads x 32 x 4 = 256). The inventory:
# 280 as above, plus the mask's 2 and the copies' excess over k and v, 2 x (8 - 4) x 2 = 16: 298.
MISTRAL_WINDOW_LORA = {**LLAMA16, "method_full": 0, "lora_rank": 1, "moment_bytes": 4, "head_saved_bytes": 32,
                       "lora_q": 1, "lora_v": 1, "layer_saved_bytes_per_token": 298,
                       "train_mask_bytes_per_token_layer": 18, "seq": 1, "n_heads": 2, "n_layers": 2}


def test_lora_on_a_windowed_layer_with_grouped_heads_saves_the_repeated_keys_and_values():
    # after rotary, q's and k's projections go (16, 8); repeat_kv's k and v (16, 16), the converted mask (2, its
    # logical_not 1 freed), the kernel's output (16) and logsumexp (256); frozen o's output (16); then the rotated k
    # and v, locals of the attention, go (8, 8) with the norm's output (16); the residual sum (16), o's output goes
    events, fwd, bwd = _phase(MISTRAL_WINDOW_LORA, "fwd0", "bwd0")
    assert _contains(_ops(events, fwd, bwd), f(16, 8) + a(16, 16, 2, 1) + f(1) + a(16, 256, 16) + f(8, 8, 16) + a(16)
                     + f(16))
    # backward: o's input gradient (16), the kernel's three (16 each: q-head wide), the gradient and the node's saved
    # tensors released (16; mask 2, k's copy, q, v's copy, logsumexp 256, output), then repeat_kv's sums back to the
    # KV heads (8 each) - v's first, made later in the forward - each copy's gradient freed
    events, b0, o0 = _phase(MISTRAL_WINDOW_LORA, "bwd0", "opt0")
    assert _contains(_ops(events, b0, o0), a(16, 16, 16, 16) + f(16, 2, 16, 16, 16, 256, 16) + a(8) + f(16) + a(8) + f(16))
    # the window's bool mask (1 byte) goes at the head with the embedding's output (16)
    events, fwd, bwd = _phase(MISTRAL_WINDOW_LORA, "fwd0", "bwd0")
    assert _contains(_ops(events, fwd, bwd), f(16, 16, 1))


def test_a_recomputed_layers_nodes_release_their_saved_tensors_before_the_incoming_gradient():
    # gate_proj's backward in the 16-bit layer: its weight's gradient (16 x 8 x 2 = 256), the input's (16), then the
    # node releases the incoming gradient (silu's, 32) and its saved input (the second norm's output, 16). Without
    # checkpointing the gradient goes first (the saved input is released with the node); recomputed under
    # checkpointing, checkpoint's unpack hook hands the saved input over and it goes first.
    for gc, released in ((0, f(32, 16)), (1, f(16, 32))):
        events, b0, o0 = _phase({**LLAMA16, "gradient_checkpointing": gc}, "bwd0", "opt0")
        assert _contains(_ops(events, b0, o0), a(256, 16) + released), gc
