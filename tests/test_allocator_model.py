"""The caching-allocator model (vramplan.allocator.caching) follows the rules of
c10/cuda/CUDACachingAllocator.cpp; each case works the segments out by hand."""

from __future__ import annotations

from vramplan.allocator import caching as cca
from vramplan.allocator import training as synthetic

MiB = 1 << 20


def test_rounding_and_segment_sizes():
    # kMinBlockSize 512: 1 byte -> 512, 513 -> 1024.
    assert cca.round_size(1) == 512 and cca.round_size(513) == 1024
    # <= 1 MiB: a 2 MiB small-pool segment; 1-10 MiB: a 20 MiB segment; >= 10 MiB: rounded up to 2 MiB.
    assert cca.allocation_size(MiB) == 2 * MiB
    assert cca.allocation_size(MiB + 512) == 20 * MiB
    assert cca.allocation_size(10 * MiB) == 10 * MiB
    assert cca.allocation_size(10 * MiB + 1) == 12 * MiB


def test_a_3_mib_request_splits_a_20_mib_segment_and_frees_merge():
    a = cca.Allocator()
    a.malloc("x", 3 * MiB)       # new 20 MiB segment, split: 3 MiB used, 17 MiB free (17 MiB > 1 MiB)
    a.malloc("y", 30 * MiB)      # nothing free fits: a 30 MiB segment
    a.malloc("z", 100)           # small pool: a 2 MiB segment, 512 bytes used
    assert a.reserved == (20 + 30 + 2) * MiB
    a.free("x")                  # 3 MiB merges back with the 17 MiB rest: one free 20 MiB block
    a.malloc("w", 19 * MiB)      # fits the merged block; the 1 MiB rest is not split off (needs > 1 MiB)
    assert a.reserved == 52 * MiB
    assert a.allocated == 20 * MiB + 30 * MiB + 512   # w holds the whole 20 MiB block


def test_best_fit_and_a_freed_block_too_small_for_the_next_request():
    # Two 40 MiB tensors, the first freed, then 24 MiB + 24 MiB: the first 24 MiB takes the freed
    # 40 MiB block (split: 16 MiB rest), the second finds only 16 MiB free and opens a 24 MiB segment.
    a = cca.Allocator()
    a.malloc(1, 40 * MiB)
    a.malloc(2, 40 * MiB)
    a.free(1)
    a.malloc(3, 24 * MiB)
    a.malloc(4, 24 * MiB)
    assert a.reserved == (40 + 40 + 24) * MiB
    assert a.peak_reserved - a.allocated == 16 * MiB  # the 16 MiB rest stays reserved, unused


def test_expandable_segments_map_20_mib_pages_at_the_tail():
    # expandable_segments:True - one segment per pool, mapped in 20 MiB pages (large pool):
    a = cca.Allocator(expandable_segments=True)
    a.malloc(1, 30 * MiB)        # maps ceil(30 / 20) = 2 pages = 40 MiB; 10 MiB free tail (split at >= 512 B)
    assert a.reserved == 40 * MiB
    a.malloc(2, 25 * MiB)        # no free block fits; the 10 MiB free tail lacks 15 MiB -> 1 more page
    assert a.reserved == 60 * MiB
    a.free(1)                    # a 30 MiB hole at the front
    a.malloc(3, 24 * MiB)        # fits the hole (best fit), rest 6 MiB stays free
    a.malloc(4, 24 * MiB)        # nothing fits (6 MiB hole, 5 MiB tail): 19 MiB lacking -> 1 page
    assert a.reserved == 80 * MiB
    # The same sequence without expandable segments: a 30 MiB and a 26 MiB segment (25 rounded to 2 MiB),
    # 24 MiB into the freed 30 MiB block (its 6 MiB rest split off), then a new 24 MiB segment: 80 MiB.
    b = cca.Allocator()
    for h, n in ((1, 30), (2, 25), (3, 24), (4, 24)):
        b.malloc(h, n * MiB)
        if h == 2:
            b.free(1)
    assert b.reserved == (30 + 26 + 24) * MiB


def test_state_init_carves_the_freed_logit_block_so_the_next_step_opens_a_new_one():
    # The training-reserve mechanism of docs/FIDELITY.md in miniature (MiB): a 100 MiB weight, step 0's
    # 400 MiB fp32 logit tensor (its own 400 MiB segment, >= 10 MiB: rounded to 2 MiB), freed after the loss.
    a = cca.Allocator()
    a.malloc("w", 100 * MiB)
    a.malloc("logits0", 400 * MiB)
    a.free("logits0")
    # Step 0's optimizer: exp_avg and exp_avg_sq (100 MiB each) and foreach's sqrt(v) temporary (100 MiB)
    # take the only free block, front first: [0,100) [100,200) [200,300), 100 MiB rest.
    a.malloc("exp_avg", 100 * MiB)
    a.malloc("exp_avg_sq", 100 * MiB)
    a.malloc("sqrt_v", 100 * MiB)
    a.free("sqrt_v")             # merges with the rest: one free block of 200 MiB behind the states
    a.malloc("logits1", 400 * MiB)  # 400 > 200: a new 400 MiB segment
    assert a.opened == [(100 * MiB, 100 * MiB), (400 * MiB, 400 * MiB), (400 * MiB, 400 * MiB)]
    assert a.reserved == (100 + 400 + 400) * MiB
    # allocated at step 1's loss: 100 weight + 200 states + 400 logits = 700; the 200 MiB hole stays reserved
    assert a.peak_allocated == 700 * MiB and a.reserved - a.allocated == 200 * MiB


def test_synthetic_sequence_keeps_the_bf16_logits_segment_free_at_the_loss_peak():
    # A model whose every tensor but the loss's is tiny: 4096 tokens x vocab 128,256, hidden 8, one layer,
    # full bf16 fine-tuning, foreach AdamW. The loss phase's four tensors each open a segment in step 0
    # (each >= 10 MiB: its size rounded to 2 MiB; 4096 x 128,256 x 2 = 1,050,673,152 = 1002 MiB exactly):
    # bf16 logits (2 bytes per logit), fp32 copy (4), log_softmax (4); the copy and the logits are freed,
    # nll_loss's gradient (4) takes the copy's block, log_softmax's gradient (4) finds only the 2-byte
    # block free and opens a fourth. The peak holds the three 4-byte tensors (12 x 4096 x 128,256 =
    # 6,304,038,912) while the 2-byte segment is free: reserved - allocated = 1,050,673,152, give or take
    # the tiny tensors (the 2,052,096-byte embedding with its gradient, moments and temporaries, in a
    # 20 MiB large-pool segment or the loss blocks' free space; the rest in 2 MiB small-pool segments):
    # under 32 MiB either way. Step 1 reuses every loss block.
    T, V = 4096, 128256
    v = {"train_tokens": T, "hidden": 8, "intermediate": 16, "vocab": V, "n_layers": 1, "q_dim": 8, "kv_dim": 8,
         "method_full": 1, "mixed_precision": 0, "gradient_checkpointing": 0, "grad_accum": 1, "resid_bytes": 2,
         "act_bytes": 2, "p_output": 0, "moment_bytes": 2, "optimizer_fused_step": 0,
         "layer_saved_bytes_per_token": 64, "head_saved_bytes": T * 8 * 4, "lora_rank": 0,
         "library_workspace_bytes": 69_207_040}
    a = synthetic.simulate(v)
    assert a.peak_allocated >= 12 * T * V
    assert abs(a.peak_reserved - a.peak_allocated - 2 * T * V) < 32 * MiB
    assert sum(seg for n, seg in a.opened if n >= T * V * 2) == 14 * T * V  # four loss segments, none reopened
