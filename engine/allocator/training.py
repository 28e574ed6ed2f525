"""A training run's allocations written from the estimate's own tensor inventory, replayed through the
caching-allocator model (:mod:`vramplan.allocator.caching`): the reserve beyond the allocated peak.

``nvidia-smi`` shows the allocator's segments, not the live tensors. How much of a training step's
memory stays reserved beyond the allocated peak depends on where each parameter's gradient, moments and
foreach temporaries land among the blocks freed by the forward and the loss (docs/FIDELITY.md, "What
the reserve consists of") - not on any total. So the sequence is written out and replayed: no torch,
only the values the formula graph already has.

What the sequence follows, per micro-batch (Llama-style decoder layers; transformers 5.17, peft 0.21,
torch 2.11 foreach AdamW, as benchmarks/allocator/replay_training.py records them on the meta device):

* model build: the workspaces (69,207,040 bytes), then every parameter in construction order
  (embedding, per layer q, k, v, o, gate, up, down and the two norms, final norm, untied head), then
  LoRA's fp32 A (rank x in) and B (out x rank) per targeted module;
* forward: per layer its saved tensors (``layer_saved_bytes_per_token`` x tokens, as up to four
  tokens x intermediate tensors and tokens x hidden pieces); with checkpointing they are freed at
  once and the layer input stays (tokens x hidden x residual bytes); mixed precision adds the bf16
  copies of the layer's seven weights (kept by the graph, or by autocast's cache until the forward
  ends under checkpointing). Then the head's saved inputs and the loss: bf16 logits, their fp32 copy,
  log_softmax's output; the copy is freed, then the logits (the outputs are dropped);
* backward: nll_loss's and log_softmax's fp32 gradients, the bf16 logits' gradient, the head
  weight's gradient (the tied embedding's), then per layer in reverse: the recomputation
  (checkpointing), the MLP's gradient temporaries (tokens x intermediate) around down, up and gate's
  weight gradients, attention's (tokens x q / kv) around o, q, k and v's, the norms'; the embedding
  backward's vocab x hidden output at the end (an untied embedding's gradient; tied, summed with the head's share
  into a new tensor). A later micro-batch's weight gradients are temporaries added in place;
* optimizer: on the first step exp_avg and exp_avg_sq per trainable tensor in order (bitsandbytes
  8-bit: two uint8 moments + fp32 absmax per 256 elements), then foreach's sqrt(v) list (none for a
  fused step), freed; zero_grad frees the gradients.

Llama-style layers are written op by op as recorded wherever the formula's saved bytes a layer are exactly what such a
layer saves (a structural check): full fine-tuning of a 16-bit model (Phi-3's fused projections and Qwen3's head norms
too) or of fp32 weights under bf16 autocast (Phi-3's too), with or without checkpointing, and LoRA on a 16-bit base (with checkpointing where down is
adapted) - RMSNorm's fp32 chain, rotary's tensors, SDPA, the
projections (autocast's input casts and weight copies; LoRA's modules), the residual sums, checkpointing's no-grad
forward and early-stopping recomputation, and a backward that frees each saved tensor after its last use and makes
each weight's gradient where its matmul's backward does (addmm's, with qkv_bias, after the input's); foreach's sqrt(v)
list is freed last item first (CPython's list_dealloc), zero_grad drops the gradients in parameter order. The bullets
above are the pieces every other layer keeps (docs/FIDELITY.md, "Llama-style layers written op by op").

Gemma 2 under eager attention, fully trained in 16 bits (``gemma2_layer``; with or without checkpointing), is written
op by op too: the embedding's scaled copy, the causal and sliding masks (masking_utils' eager masks, batch x seq x
seq) and rotary's cos / sin tables; per layer four Gemma2RMSNorms (x.float() normalized, x (1 + w.float()), the 16-bit
copy), repeat_kv's key and value copies, the scores (q @ k^T, x scaling, / cap, tanh - kept -, x cap, + mask, softmax
in fp32 and its 16-bit copy), probabilities @ v and its contiguous copy, gelu(gate) x up; in backward the same ops'
gradients in the recorded order (the values' repeat_kv sum before the keys'), a recomputed node's saved tensors
freed before its incoming gradient, and each mask, cos and sin freed with the last checkpoint (or, without
checkpointing, rotary backward) that holds it (docs/FIDELITY.md, "Gemma 2's eager layer written op by op").

Phi-3's fused projections (fused_qkv, fused_gate_up): each layer builds o_proj before qkv_proj, then gate_up_proj;
peft adapts each fused module once (one A of rank x hidden, one B of rank x the fused width); the forward keeps
gate_up_proj's output whole under its chunk views (one saved piece of tokens x 2 x intermediate) and autocast casts
four weights; in the backward the chunk's and the q / k / v views' gradients are joined into one tensor before the
fused weight's gradient (the sweep's 22 Phi-3 replays: median 1.7%, docs/FIDELITY.md).

A window on every layer (Mistral v0.1, Phi-3 with its config's window): SDPA saves its converted mask for backward,
one batch x tokens x tokens tensor a layer (train_mask_bytes_per_token_layer of the layer's saved bytes), written as
one piece before the others (recorded replays of Phi-3 mini and Mistral 7B v0.1 with their windows: within 3.3%).
Phi-3 fully trained in 16 bits with its window (no grouped heads) is written op by op: masking_utils' bool mask after
the embedding, and per layer the mask's conversion (zeros_like kept, logical_not freed) and the memory-efficient
kernel's output - (batch, tokens, heads, dim) already, so o_proj reads it without a copy - and logsumexp (saved
where grad is on: attention.cpp should_compute_logsumexp). LoRA on a Llama-style layer with its window (Mistral v0.1)
likewise, with repeat_kv's key and value copies where the KV heads are grouped (SDPA saves those, not k and v) and
their sums in backward. LoRA without checkpointing: the frozen embedding's output does not require grad, so the first
layer's input norm saves nothing and its q, k, v make only their adapters' gradients.

Per-head q / k norms (Qwen3, Gemma 3): their saved fp32 inputs (and, trained, normalized inputs), q_dim and kv_dim
wide, are pieces of their own; their forward temporaries are not written.

Not written (the estimate keeps its fitted fractions for them, formulas/memory/runtime_overhead.yaml):
QLoRA (4-bit layers' dequantization), MoE, fused cross-entropy, paged or other optimizers, ZeRO, data / tensor /
pipeline parallelism, offloading, models without a gated MLP or with recurrent or cross-attention layers.

Speed: a sequence has thousands of events (Llama 3 8B: 2,600-5,800 per step), so the replay is the fast
one of :func:`vramplan.allocator.caching.replay_peaks`; steps stop once a step starts from the allocator
state the step before started from, and accumulation micro-batches once one leaves the state as it
found it (both then repeat exactly, same peaks), and the result is memoised per shape.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

from . import caching
from .inference import _bool_mask, _rotary_tables, eager_scores, rope_events

#: The calibration method's run: three AdamW steps (benchmarks/measured/measure.py).
STEPS = 3
LORA_MODULES = ("q", "k", "v", "o", "gate", "up", "down")
#: The longest sequence replayed (about 2 s of pure Python): formulas/memory/runtime_overhead.yaml routes
#: longer ones to the fitted fractions (train_reserve_sequence_events), and the function refuses them.
MAX_EVENTS = 2_000_000


def max_events(v: Shape) -> float:
    """At most how many events the sequence has - the formula train_reserve_sequence_events, the same bound."""
    pieces = 5 + v.layer_saved_bytes_per_token / (2 * max(v.hidden, 1))
    return 3 * (v.grad_accum * (v.n_layers * (4 * pieces + 600) + 50) + 100 * v.n_layers + 100)


class Shape(NamedTuple):
    """What the sequence needs, each a value of the formula graph (formulas/memory/runtime_overhead.yaml
    ``train_reserve_simulated_bytes`` passes them in this order)."""

    train_tokens: int
    hidden: int
    intermediate: int
    vocab: int
    n_layers: int
    q_dim: int
    kv_dim: int
    method_full: int
    mixed_precision: int
    gradient_checkpointing: int
    grad_accum: int
    resid_bytes: int
    act_bytes: int
    p_output: int
    moment_bytes: float
    optimizer_fused_step: int
    layer_saved_bytes_per_token: float
    head_saved_bytes: float
    lora_rank: int
    lora_q: int
    lora_k: int
    lora_v: int
    lora_o: int
    lora_gate: int
    lora_up: int
    lora_down: int
    #: the cuBLAS / cuBLASLt workspaces allocated before the model (the runtime's library_workspace_mib: the
    #: calibration runs hold 69,207,040 bytes beyond their parameters once the model is built)
    library_workspace_bytes: int
    #: q, k and v from one linear (Phi-3 qkv_proj, built after o_proj); LoRA adapts it where lora_q is set
    fused_qkv: int = 0
    #: gate and up from one linear (Phi-3 gate_up_proj); LoRA adapts it where lora_gate is set
    fused_gate_up: int = 0
    #: of layer_saved_bytes_per_token, a window mask's copy that SDPA saves for backward (one tensor a layer)
    train_mask_bytes_per_token_layer: float = 0
    #: per-head q / k norms (Qwen3, Gemma 3): each saves its fp32 input (and, trained, its normalized input), q_dim and
    #: kv_dim wide - tensors of their own among the layer's saved bytes
    qk_head_norm: int = 0
    norm_scale_fp32: int = 0
    #: of layer_saved_bytes_per_token, eager attention's saved scores (heads x tokens x sequence a token: the fp32
    #: softmax output, its 16-bit copy and, soft-capped, tanh's output) - tensors of their own, batch x heads x seq x seq
    train_scores_bytes_per_token_layer: float = 0
    attn_softcap: int = 0
    #: the head's logits soft-capped (Gemma 2 final_logit_softcapping): / cap, tanh (its output saved), x cap
    final_softcap: int = 0
    #: q, k and v projections with biases (Qwen2): their backward (addmm's) makes the input's gradient before the weight's
    qkv_bias: int = 0
    #: Gemma2DecoderLayer under eager attention (four (1 + w) norms, repeat_kv's copies, soft-capped scores): the layer
    #: written op by op where fully trained in 16 bits; ``seq`` tokens a sequence, ``n_heads`` query heads and the
    #: ``sliding_window`` (0: none) size its masks and scores
    gemma2_layer: int = 0
    seq: int = 0
    n_heads: int = 0
    sliding_window: int = 0
    #: PyTorch's allocator in its expandable-segments mode (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True; the
    #: runtime_settings expandable_segments, rt_expandable_segments in an estimate's trace): one segment a pool,
    #: mapped in pages as it grows (caching.Allocator)
    expandable_segments: int = 0

    @classmethod
    def of(cls, values: dict) -> Shape:
        """The shape from a mapping of the graph's values (an estimate's trace); LoRA flags and the fields with a
        default take it where the mapping lacks them."""
        return cls(*(values.get(f, values.get("rt_" + f, cls._field_defaults.get(f, 0)))
                     if f.startswith("lora_") or f in cls._field_defaults else values[f] for f in cls._fields))


def steps(v: Shape | dict, n_steps: int = STEPS):
    """The sequence in chunks: yields ``(events, marks, ends_step)``. An event is a malloc of ``e`` bytes
    (``e >= 0``, handles numbered 1, 2, ... in order) or the free of handle ``~e`` (``e < 0``); ``marks``
    are ``(event index, phase label)``. A chunk is one micro-batch (``ends_step`` False) or a step's last
    micro-batch with the optimizer (True); the first starts with the model build.

    A replay may ``send`` back whether the chunk repeated (caching.replay_peaks): a micro-batch after the
    second that left the allocator's state as it found it - the later ones, the same events, would too -
    ends the step's micro-batches; a step that started from the state the step before started from ends
    the sequence (every later step repeats it). Iterating without sending generates every event."""
    if not isinstance(v, dict):
        v = v._asdict()
    w = caching.Writer()
    marks: list[tuple[int, str]] = []
    new, news, free = w.new, w.news, w.free

    def frees(hs: list[int]) -> None:
        w.free(*hs)

    def mark(label: str) -> None:
        marks.append((len(w.events), label))

    T, H, I, V = int(v["train_tokens"]), int(v["hidden"]), int(v["intermediate"]), int(v["vocab"])
    L, q, kv = int(v["n_layers"]), int(v["q_dim"]), int(v["kv_dim"])
    full, mixed = bool(v["method_full"]), bool(v["mixed_precision"])
    gc, ga = bool(v["gradient_checkpointing"]), int(v["grad_accum"])
    rank = int(v["lora_rank"])
    wb = 4 if mixed else 2                          # weights (and full fine-tuning's grads / states) bytes
    resid, act = v["resid_bytes"], v["act_bytes"]
    tied = v["p_output"] == 0
    eight_bit = v["moment_bytes"] < 2 and v["optimizer_fused_step"]
    fqkv, fgu = bool(v.get("fused_qkv")), bool(v.get("fused_gate_up"))
    bias = bool(v.get("qkv_bias"))
    qkn = bool(v.get("qk_head_norm"))
    # each layer's parameters in construction order (Phi3Attention builds o_proj before qkv_proj) and its linears in
    # the order the forward runs them (autocast's weight copies)
    attn = [("o", q * H), ("qkv", H * (q + 2 * kv))] if fqkv else [("q", H * q), ("k", H * kv), ("v", H * kv), ("o", q * H)]
    mlp = [("gate_up", H * 2 * I)] if fgu else [("gate", H * I), ("up", H * I)]
    layer = attn + mlp + [("down", I * H), ("n1", H), ("n2", H)] + ([("n3", H), ("n4", H)] if v.get("gemma2_layer") else [])
    linears = ([("qkv", H * (q + 2 * kv)), ("o", q * H)] if fqkv else attn) + mlp + [("down", I * H)]
    shapes = {"q": (H, q), "k": (H, kv), "v": (H, kv), "o": (q, H), "gate": (H, I), "up": (H, I), "down": (I, H),
              "qkv": (H, q + 2 * kv), "gate_up": (H, 2 * I)}

    new(v["library_workspace_bytes"])
    params = [("embd", V * H)] + [(f"{i}.{n}", c) for i in range(L) for n, c in layer] + [("norm", H)]
    params += [] if tied else [("head", V * H)]
    for _, c in params:
        new(c * wb)
    if full:
        trainable = [(n, c, wb) for n, c in params]
    else:
        # peft's adapters in the order it finds the targeted modules (construction order); a fused module is one target
        flag = {"qkv": "lora_q", "gate_up": "lora_gate"}
        targets = [m for m, _ in layer if m in shapes and v.get(flag.get(m, f"lora_{m}"))]
        trainable = [(f"{i}.{m}.{ab}", rank * (shapes[m][0] if ab == "A" else shapes[m][1]), 4)
                     for i in range(L) for m in targets for ab in "AB"]
        for _, c, b in trainable:
            new(c * b)
    per_module: dict[tuple[int, str], list[tuple[str, int, int]]] = {}  # (layer, module) -> its trainable tensors
    for n, c, b in trainable:
        if n[0].isdigit():
            i, m = n.split(".")[:2]
            per_module.setdefault((int(i), m), []).append((n, c, b))

    lora_forward: list[tuple[int, int]] = []  # (saved fp32 input bytes, output width) per adapted module, in order
    # a layer's saved tensors: a window mask's converted copy (one tensor), up to four tokens x intermediate ones (gate_up's
    # output whole, as one of them, where fused), then tokens x hidden pieces
    mask = v.get("train_mask_bytes_per_token_layer", 0) * T
    rest, pieces_bytes = v["layer_saved_bytes_per_token"] * T - mask, [mask] if mask else []
    scores = v.get("train_scores_bytes_per_token_layer", 0) * T
    if scores:  # eager attention: softmax's fp32 output (4 bytes a score), the probabilities' 16-bit copy (2), tanh's (act)
        shares = (4, 2, act) if v.get("attn_softcap") else (4, 2)
        parts = [int(scores * sh / sum(shares)) for sh in shares]
        pieces_bytes += parts
        rest -= sum(parts)
    if v.get("qk_head_norm"):
        normed = 4 if v.get("norm_scale_fp32") else act
        head_norms = [T * q * 4, T * kv * 4] + ([T * q * normed, T * kv * normed] if full else [])
        pieces_bytes += head_norms
        rest -= sum(head_norms)
    if not full and rank:
        # peft's LoRA forward casts each adapted module's input to the adapters' fp32 (dropout 0: a copy per module on a
        # 16-bit model) and saves it for lora_A's weight gradient: tensors of their own, tokens x in_features x 4
        flags = {m: bool(v.get(f"lora_{m}")) for m in LORA_MODULES}
        on = {**flags, "qkv": flags["q"] or flags["k"] or flags["v"], "gate_up": flags["gate"] or flags["up"]}
        modules = ([("qkv", H, q + 2 * kv)] if fqkv else [("q", H, q), ("k", H, kv), ("v", H, kv)]) + [("o", q, H)] \
            + ([("gate_up", H, 2 * I)] if fgu else [("gate", H, I), ("up", H, I)]) + [("down", I, H)]
        # an fp32 model's input is already fp32: one saved tensor a shared input, the layer's own - only o's and down's
        adapted = [(T * iw * 4, ow) for m, iw, ow in modules if on[m] and (resid < 4 or m in ("o", "down"))]
        if sum(x32 for x32, _ in adapted) <= rest:
            rest -= sum(x32 for x32, _ in adapted)
            if resid < 4:
                # each adapted module's forward, in order (peft LoraLayer.forward on a 16-bit base): the base output,
                # the fp32 input (saved), lora_B's fp32 output, x scaling, the fp32 sum with the base output, its
                # 16-bit copy - recorded on the meta device (mm, _to_copy, mm, mul, add, _to_copy)
                lora_forward = adapted
            else:
                pieces_bytes += [x32 for x32, _ in adapted]
    wide = 0
    if fgu and rest >= 2 * T * I * act:  # gate_up_proj's output, kept whole under its chunk views
        pieces_bytes.append(2 * T * I * act)
        rest -= 2 * T * I * act
        wide = 1
    while wide < 4 and rest >= T * I * act:
        pieces_bytes.append(T * I * act)
        rest -= T * I * act
        wide += 1
    while rest >= T * H * 2:
        pieces_bytes.append(T * H * 2)
        rest -= T * H * 2
    pieces_bytes += [rest] if rest > 0 else []
    pieces_bytes = [int(p) for p in pieces_bytes]
    copy_bytes = [int(c * 2) for _, c in linears] if mixed else []

    # Llama-style layers written op by op as recorded (explicit_layer, explicit_mixed_layer, nograd_layer,
    # nograd_mixed_layer and their backwards below): full fine-tuning of a 16-bit model or of fp32 weights under bf16
    # autocast, with or without checkpointing, and LoRA on a 16-bit base (checkpointed where down is adapted: the
    # recomputation's early stop is then down's lora_A output) - where the formula's saved bytes
    # a layer are exactly the tensors these save (a structural check: a layer that saves anything else, Gemma 2's
    # extra norms say, keeps the pieces above)
    lora_on = {m: bool(v.get(f"lora_{m}")) for m in LORA_MODULES} if not full and rank else {}
    explicit_saved = T * (8 * H + act * (2 * q + 2 * kv + 3 * I)) + (T * act * (4 * H + I) if full else 0) \
        + sum(T * (iw + rank) * 4 for m, iw in (("q", H), ("k", H), ("v", H), ("o", q), ("gate", H), ("up", H),
                                                ("down", I)) if lora_on.get(m))
    if mixed:  # fp32 weights under bf16 autocast: the fp32 residual stream, bf16 casts of the projections' inputs
        explicit_saved = T * (16 * H + act * (5 * H + 2 * q + 2 * kv + 4 * I))
    if qkn:  # Qwen3's q_norm / k_norm: each saves its fp32 input and, trained, its 16-bit copy
        explicit_saved += T * (q + kv) * (4 + (act if full else 0))
    fused = fqkv and fgu and full and not mixed  # Phi-3: qkv_proj's output whole under its views, gate_up_proj's too
    S, heads = int(v.get("seq", 0)), int(v.get("n_heads", 0))
    # Phi-3 with its window on every layer (no grouped heads, so no repeat_kv): SDPA's memory-efficient kernel with the
    # converted mask, one batch x seq x seq tensor a layer
    wmask = fused and kv == q and heads > 0 and S > 0 and T % S == 0 and math.isclose(mask, T * S * act, rel_tol=1e-9)
    # LoRA on a Llama-style layer with a window on every layer (Mistral v0.1): the same kernel, and with grouped KV heads
    # repeat_kv's copies of k and v (query-head wide) in SDPA's saved tensors instead of k and v themselves
    lmask = bool(mask) and not full and not (fqkv or fgu or qkn) and heads > 0 and S > 0 and T % S == 0 \
        and math.isclose(mask, T * (S * act + (2 * (q - kv) * act if kv < q else 0)), rel_tol=1e-9)
    if lmask:  # the mask's bytes are the converted mask and the copies' excess over k and v
        explicit_saved += mask
    # Phi-3 with fp32 weights under bf16 autocast: one input cast and weight copy for each fused projection
    fused_mixed = fqkv and fgu and full and mixed and not mask
    if fused_mixed:
        explicit_saved = T * (16 * H + act * (2 * H + 4 * q + 3 * kv + 4 * I))
    if fused:  # and o_proj's input made contiguous (rotary's cat layout leaves flash's output heads-first; the
        # memory-efficient kernel's output is (batch, tokens, heads, dim) already, so there it saves the mask instead)
        explicit_saved = T * (8 * H + act * (4 * H + 4 * q + 3 * kv + 4 * I)) + (mask - T * q * act if wmask else 0)
    # Gemma 2 fully trained in 16 bits: four norms' fp32 input and normalized input, the first and third norms' outputs,
    # rotary's q, repeat_kv's key and value copies (query-head wide), SDPA-free attention's saved scores, its output's
    # contiguous copy, the MLP's four tensors
    score = T * heads * S                                    # scores a layer (batch x heads x seq x seq)
    gemma = bool(v.get("gemma2_layer")) and full and not mixed and resid < 4 and 0 < kv < q \
        and heads > 0 and S > 0 and T % S == 0 and not (mask or fqkv or fgu or qkn) \
        and math.isclose(scores, score * (6 + (act if v.get("attn_softcap") else 0)), rel_tol=1e-9) \
        and math.isclose(T * (32 * H + act * (2 * H + 4 * q + 4 * I)) + scores, v["layer_saved_bytes_per_token"] * T,
                         rel_tol=1e-9)
    explicit = gemma or not v.get("gemma2_layer") \
        and (full or (any(lora_on.values()) and (lora_on["down"] or not gc))) \
        and not ((mask and not (wmask or lmask)) or scores) \
        and (fused or fused_mixed or not (fqkv or fgu)) \
        and (resid < 4 or (mixed and full and act < 4)) \
        and not (qkn and (mixed or fused)) \
        and math.isclose(explicit_saved, v["layer_saved_bytes_per_token"] * T, rel_tol=1e-9)
    # Such a model's head is written op by op too: its final norm saves what head_saved_bytes counts (fp32 copy, and
    # trained the 16-bit copy and output; under autocast the fp32 input, the normalized product and the head's cast)
    residual: list[int] = []  # the residual stream's current tensor and the embedding's output (the model keeps it)

    def lora_sum(base: int, ow: int) -> int:
        """peft LoraLayer.forward past lora_A: lora_B's fp32 output, x scaling, the fp32 sum with the base output (which
        goes), its 16-bit copy (the module's output)."""
        b = new(T * ow * 4)
        scaled = new(T * ow * 4)
        free(b)
        total = new(T * ow * 4)
        free(scaled, base)
        out = new(T * ow * act)
        free(total)
        return out

    def module(m: str, iw: int, ow: int, kept: list[int], named: dict | None = None, nograd: bool = False) -> int:
        """One linear's forward on a frozen 16-bit base (peft LoraLayer.forward where adapted); its output's handle. The
        fp32 input and lora_A's output are saved (``named[m]``), or, without autograd, freed once the sum is made."""
        base = new(T * ow * act)
        if not lora_on.get(m):
            return base
        x32, a_out = new(T * iw * 4), new(T * rank * 4)
        if not nograd:
            kept += [x32, a_out]
            if named is not None:
                named[m] = (x32, a_out)
        out = lora_sum(base, ow)
        if nograd:
            free(x32, a_out)
        return out

    def norm(kept: list[int], width: int = H, saves_output: bool = True, saves_input: bool = True) -> int:
        """LlamaRMSNorm.forward on a 16-bit input: the fp32 copy (saved), its square, the normalized fp32 product, its
        16-bit copy and the weight's product (the output's handle). Qwen3's q_norm / k_norm run it per head (``width``
        q or kv); their output feeds rotary, which does not save it."""
        kept.append(new(T * width * 4))
        free(new(T * width * 4))
        normed = new(T * width * 4)
        if not saves_input:  # nothing before it requires grad: the fp32 copy is not saved
            free(kept[-1])
        copy = new(T * width * act)
        out = new(T * width * act)
        if full:  # the 16-bit copy is saved for the weight's gradient, the output for the projections' weights'
            kept += [copy, out] if saves_output else [copy]
        else:
            free(copy)
        free(normed)
        return out

    def head_normed(width: int, projected: int, kept: list[int]) -> int:
        """q or k through its head norm where the model has one (Qwen3), the projection's output then freed."""
        if not qkn:
            return projected
        out = norm(kept, width, saves_output=False)
        free(projected)
        return out

    def rotary(width: int) -> int:
        """apply_rotary_pos_emb on q or k as the generation writes it (x cos, rotate_half's neg and cat, x sin, the
        sum, saved)."""
        return rope_events(w, T, width, act)

    def rotary_cat(width: int) -> int:
        """Phi-3's: the same, then the rotated part and the pass-through joined (cat, saved) - the sum goes."""
        return rope_events(w, T, width, act, 1)

    copy_of = dict(zip([m for m, _ in linears], copy_bytes))

    def cast_linear(m: str, ow: int, kept: list[int], cast: bool = True) -> int:
        """One linear under autocast: the input's bf16 cast (saved), the weight's bf16 copy (saved), the output."""
        if cast:
            kept.append(new(T * H * act))
        kept.append(new(copy_of[m]))
        return new(T * ow * act)

    def norm32(kept: list[int]) -> int:
        """LlamaRMSNorm.forward on an fp32 input: its square, the normalized product (saved), the weight's (output)."""
        free(new(T * H * 4))
        kept.append(new(T * H * 4))
        return new(T * H * 4)

    def rotary32(width: int) -> int:
        """apply_rotary_pos_emb on a bf16 q or k with fp32 cos / sin: the products and sum in fp32, rotate_half's neg
        and cat in bf16."""
        m1 = new(T * width * 4)
        neg = new(T * width // 2 * act)
        cat = new(T * width * act)
        free(neg)
        m2 = new(T * width * 4)
        free(cat)
        out = new(T * width * 4)
        free(m1, m2)
        return out

    def rotary32_cat(width: int) -> int:
        """Phi-3's under autocast: the same, then the rotated part and the pass-through joined in fp32 (cat)."""
        out = rotary32(width)
        joined = new(T * width * 4)
        free(out)
        return joined

    def nograd_mixed_layer(weight_copies: list[int]) -> int:
        """An fp32 decoder layer's forward under bf16 autocast and gradient checkpointing, as recorded: each tensor
        freed at its last use but the weights' bf16 copies, which autocast's cache keeps until the forward ends (into
        ``weight_copies``); the layer's output's handle."""
        def lin(m: str, ow: int, cast: bool = True) -> int:
            c = new(T * H * act) if cast else 0
            weight_copies.append(new(copy_of[m]))
            out = new(T * ow * act)
            if cast:
                free(c)
            return out

        def nograd_norm32() -> int:
            free(new(T * H * 4))
            normed = new(T * H * 4)
            out = new(T * H * 4)
            free(normed)
            return out

        if fused_mixed:  # Phi-3: qkv_proj's output stays until its views' last use
            n1 = nograd_norm32()
            qkv = lin("qkv", q + 2 * kv)
            qe, ke = rotary32_cat(q), rotary32_cat(kv)
            qb, kb = new(T * q * act), new(T * kv * act)
            so = new(T * q * act)
            free(qb, kb)
            contiguous = new(T * q * act)
            free(so)
            oo = lin("o", H, cast=False)
            free(contiguous, qe, ke, qkv, n1)
            r1 = new(T * H * 4)
            free(oo)
            n2 = nograd_norm32()
            gu = lin("gate_up", 2 * I)
            si = new(T * I * act)
            prod = new(T * I * act)
            free(si)
            do = lin("down", H, cast=False)
            free(prod, gu, n2)
            r2 = new(T * H * 4)
            free(do, r1)
            return r2
        n1 = nograd_norm32()
        qo, ko, vo = lin("q", q), lin("k", kv), lin("v", kv)
        qe, ke = rotary32(q), rotary32(kv)
        free(qo, ko)
        qb, kb = new(T * q * act), new(T * kv * act)
        so = new(T * q * act)
        free(qb, kb)
        oo = lin("o", H, cast=False)
        free(so, qe, ke, vo, n1)
        r1 = new(T * H * 4)
        free(oo)
        n2 = nograd_norm32()
        go = lin("gate", I)
        si = new(T * I * act)
        free(go)
        uo = lin("up", I)
        prod = new(T * I * act)
        free(si, uo)
        do = lin("down", H, cast=False)
        free(prod, n2)
        r2 = new(T * H * 4)
        free(do, r1)
        return r2

    def explicit_mixed_layer(recompute: bool = False) -> list[int]:
        """A decoder layer's forward in fp32 under bf16 autocast, fully trained, as recorded: the layer's fp32 input
        and first residual stay (each norm's square saves its input), each projection casts its input. As a
        checkpointed layer's recomputation it stops at down's weight copy, its last saved tensor (the input is the
        checkpoint's)."""
        kept = [] if recompute else [residual[0]]
        n1 = norm32(kept)
        if fused_mixed:  # Phi-3: one cast and copy for qkv_proj (its output whole under the views), rotary's fp32 cat,
            kept.append(cast_linear("qkv", q + 2 * kv, kept))  # SDPA's bf16 q, k and output, o's contiguous copy
            qe, ke = rotary32_cat(q), rotary32_cat(kv)
            kept += [new(T * q * act), new(T * kv * act), new(T * q * act), new(T * q * act)]
        else:
            qo, ko = cast_linear("q", q, kept), cast_linear("k", kv, kept)
            kept.append(cast_linear("v", kv, kept))
            qe, ke = rotary32(q), rotary32(kv)
            free(qo, ko)
            kept += [new(T * q * act), new(T * kv * act), new(T * q * act)]  # SDPA's bf16 q and k, its output
        oo = cast_linear("o", H, kept, cast=False)
        free(qe, ke, n1)
        r1 = new(T * H * 4)
        kept.append(r1)
        free(oo)
        n2 = norm32(kept)
        if fused_mixed:
            kept.append(cast_linear("gate_up", 2 * I, kept))
            kept += [new(T * I * act), new(T * I * act)]   # act_fn(gate), the product
        else:
            kept.append(cast_linear("gate", I, kept))
            kept.append(new(T * I * act))          # act_fn(gate)
            kept.append(cast_linear("up", I, kept))
            kept.append(new(T * I * act))          # act_fn(gate) x up
        if recompute:
            kept.append(new(copy_of["down"]))
            free(n2)
            return kept
        do = cast_linear("down", H, kept, cast=False)
        free(n2)
        residual[0] = new(T * H * 4)
        free(do)
        return kept

    def nograd_norm(width: int = H) -> int:
        """LlamaRMSNorm.forward on a 16-bit input without autograd: each temporary dies at its last use."""
        x32 = new(T * width * 4)
        free(new(T * width * 4))
        normed = new(T * width * 4)
        free(x32)
        copy = new(T * width * act)
        out = new(T * width * act)
        free(copy, normed)
        return out

    def nograd_head_normed(width: int, projected: int) -> int:
        if not qkn:
            return projected
        out = nograd_norm(width)
        free(projected)
        return out

    # the memory-efficient kernel's logsumexp, batch x heads x seq in fp32 with seq padded to 32 (kAlignLSE,
    # aten/src/ATen/native/transformers/cuda/attention.cu _efficient_attention_forward)
    lse_bytes = (T // S) * heads * -(-S // 32) * 32 * 4 if wmask or lmask else 0

    def sdpa_mask() -> int:
        """SDPA's bool mask converted for the kernel (attention.cpp convert_boolean_attn_mask): zeros_like in the
        compute dtype over the batch-expanded mask, masked_fill with its logical_not (freed); the converted one's
        handle."""
        converted = new(T * S * act)
        free(new(T * S))
        return converted

    def nograd_fused_layer() -> int:
        """Phi-3's decoder layer under gradient checkpointing, as recorded: qkv_proj's and gate_up_proj's outputs stay
        until their views' last use."""
        n1 = nograd_norm()
        qkv = new(T * (q + 2 * kv) * act)
        qe, ke = rotary_cat(q), rotary_cat(kv)
        if wmask:  # the converted mask (no logsumexp without grad: attention.cpp should_compute_logsumexp)
            converted = sdpa_mask()
            so = new(T * q * act)
            free(converted)
            contiguous = so
        else:
            so = new(T * q * act)
            contiguous = new(T * q * act)
            free(so)
        oo = new(T * H * act)
        free(contiguous, qe, ke, qkv, n1)
        r1 = new(T * H * act)
        free(oo)
        n2 = nograd_norm()
        gu = new(T * 2 * I * act)
        si = new(T * I * act)
        prod = new(T * I * act)
        free(si)
        do = new(T * H * act)
        free(prod, gu, n2)
        r2 = new(T * H * act)
        free(do, r1)
        return r2

    def nograd_layer() -> int:
        """A 16-bit decoder layer's forward under gradient checkpointing (torch.utils.checkpoint runs it without
        saving anything): as recorded, each tensor freed at its last use; the layer's output's handle."""
        if fused:
            return nograd_fused_layer()
        def lin(m: str, iw: int, ow: int) -> int:
            return module(m, iw, ow, [], nograd=True)
        n1 = nograd_norm()
        qo = nograd_head_normed(q, lin("q", H, q))
        ko = nograd_head_normed(kv, lin("k", H, kv))
        vo = lin("v", H, kv)
        qe, ke = rotary(q), rotary(kv)
        free(qo, ko)
        if lmask:  # repeat_kv's copies, the converted mask and the kernel's output; the first three go at its return
            reps = [new(T * q * act), new(T * q * act)] if kv < q else []
            converted = sdpa_mask()
            so = new(T * q * act)
            free(converted, *reps)
        else:
            so = new(T * q * act)
        oo = lin("o", q, H)
        free(so, qe, ke, vo, n1)
        r1 = new(T * H * act)
        free(oo)
        n2 = nograd_norm()
        go = lin("gate", H, I)
        si = new(T * I * act)
        free(go)
        uo = lin("up", H, I)
        prod = new(T * I * act)
        free(si, uo)
        do = lin("down", I, H)
        free(prod, n2)
        r2 = new(T * H * act)
        free(do, r1)
        return r2

    def explicit_fused_layer(recompute: bool) -> list[int]:
        """Phi-3's decoder layer, fully trained in 16 bits, as recorded: x32, copy, output of each norm; qkv_proj's
        output (v's view keeps it), rotary's q and k, SDPA's output and its contiguous copy (o's input); gate_up_proj's
        output, act_fn's, the product."""
        kept: list[int] = []
        n1 = norm(kept)
        kept.append(new(T * (q + 2 * kv) * act))
        kept += [rotary_cat(q), rotary_cat(kv)]
        if wmask:  # the memory-efficient kernel: the converted mask, the output, the logsumexp (all saved)
            kept.append(sdpa_mask())
            kept += [new(T * q * act), new(lse_bytes)]
        else:      # flash: the output, then o_proj's contiguous copy
            kept += [new(T * q * act), new(T * q * act)]
        oo = new(T * H * act)
        r1 = new(T * H * act)
        free(oo)
        norm(kept)
        kept += [new(T * 2 * I * act), new(T * I * act), new(T * I * act)]
        if recompute:
            free(r1)
            return kept
        do = new(T * H * act)
        r2 = new(T * H * act)
        free(do, r1)
        if residual[0] != residual[1]:
            free(residual[0])
        residual[0] = r2
        return kept

    def explicit_layer(recompute: bool = False, first: bool = False) -> tuple[list[int], dict]:
        """A 16-bit decoder layer's forward, fully trained or with LoRA on a frozen base, as recorded (transformers 5.17,
        peft 0.21, SDPA): the saved tensors in order, and by name for LoRA's backward; the layer's output becomes the
        residual. Trained, the norms save their fp32 copy, 16-bit copy and output and the MLP's product is saved;
        frozen (LoRA), the norms save their fp32 copies alone and each module's output lives as the next op needs it.
        As a checkpointed layer's recomputation it stops once the last saved tensor exists (torch.utils.checkpoint's
        early stop): down's input, or with LoRA down's lora_A output (down adapted) - the layer's input and output left
        to the checkpoint."""
        if fused:
            return explicit_fused_layer(recompute), {}
        kept: list[int] = []
        nm: dict = {}
        n1 = norm(kept, saves_input=not first)
        nm["x32_1"] = kept[0]
        qo = head_normed(q, module("q", H, q, kept, nm), kept)
        if qkn and not full:
            nm["x32q"] = kept[-1]
        ko = head_normed(kv, module("k", H, kv, kept, nm), kept)
        if qkn and not full:
            nm["x32k"] = kept[-1]
        nm["vo"] = module("v", H, kv, kept, nm)
        nm["qe"], nm["ke"] = rotary(q), rotary(kv)
        free(qo, ko)
        if lmask:  # SDPA saves q, repeat_kv's copies of k and v, the converted mask, its output and logsumexp
            nm["kr"], nm["vr"] = (new(T * q * act), new(T * q * act)) if kv < q else (nm["ke"], nm["vo"])
            nm["mask"] = sdpa_mask()
            nm["so"], nm["lse"] = new(T * q * act), new(lse_bytes)
            kept += [nm["qe"], nm["kr"], nm["vr"], nm["mask"], nm["so"], nm["lse"]]
        else:
            nm["so"] = new(T * q * act)
            kept += [nm["vo"], nm["qe"], nm["ke"], nm["so"]]
        oo = module("o", q, H, kept, nm)
        if lmask and kv < q:  # k's rotated copy and v, locals to the attention's return
            free(nm["ke"], nm["vo"])
        if not full:
            free(n1)
        r1 = new(T * H * act)
        free(oo)
        n2 = norm(kept)
        nm["x32_2"] = kept[-1]
        nm["go"] = module("gate", H, I, kept, nm)
        nm["si"] = new(T * I * act)
        nm["uo"] = module("up", H, I, kept, nm)
        kept += [nm["go"], nm["si"], nm["uo"]]
        prod = new(T * I * act)
        if recompute and full:
            free(r1)
            return kept + [prod], nm
        if recompute:  # down's base output, its fp32 input and lora_A's output, then the early stop
            base = new(T * H * act)
            nm["down"] = (new(T * I * 4), new(T * rank * 4))
            kept += list(nm["down"])
            free(base, prod, n2, r1)
            return kept, nm
        do = module("down", I, H, kept, nm)
        if full:
            kept.append(prod)
        else:
            free(prod, n2)
        r2 = new(T * H * act)
        free(do, r1)
        if residual[0] != residual[1]:  # the model keeps the embedding's output to the end of its forward
            free(residual[0])
        residual[0] = r2
        return kept, nm

    def norm_backward(g_in: int, copy: int | None, x32: int, g_res: int | None, g=None, x_in: int | None = None,
                      width: int = H, last: tuple = (), recomputed: bool = gc) -> int:
        """LlamaRMSNorm's backward on a 16-bit model, as recorded: the weight's product and, trained (``copy`` saved),
        the normalized input's with the weight's gradient between; the fp32 chain through rsqrt, the 16-bit copy, the
        sum into the residual stream's gradient (a new tensor; the old one and the saved copies go) - none at the final
        norm or a head norm (g_res None)."""
        t1 = new(T * width * act)
        if copy is not None:
            t2 = new(T * width * act)
            if g is not None:
                g()
            free(*((copy, t2, g_in) if recomputed else (t2, g_in, copy)))   # recomputed: the saved copy first
        else:  # frozen (LoRA): no weight gradient
            free(g_in)
        g32 = new(T * width * 4)
        free(t1)
        u1, u2 = new(T * width * 4), new(T * width * 4)
        free(u1, g32)
        d = news([T * width * 4] * 4)
        # recomputed, the saved fp32 copy goes before d[0]; a checkpoint's input (and the mask the first layer's
        # checkpoint is the last to hold) goes with the copy
        free(d[2], d[1], *((x32, d[0]) if recomputed else (d[0], x32)), *last, *((x_in,) if x_in is not None else ()))
        total = new(T * width * 4)
        free(u2, d[3])
        back = new(T * width * act)
        free(total)
        if g_res is None:  # the final norm: its input's gradient starts the residual stream's
            return back
        g_out = new(T * width * act)
        free(g_res, back)
        return g_out

    def rotate_half_backward(width: int, product: int) -> int:
        """rotate_half's backward on x sin's gradient (``product``, freed once read): neg's half, the two slice_backward,
        their sum."""
        neg = new(T * width // 2 * act)
        s1 = new(T * width * act)
        free(neg)
        s2 = new(T * width * act)
        free(product)
        total = new(T * width * act)
        free(s1, s2)
        return total

    def rotary_backward(width: int, g_in: int | None, tables: tuple = ()) -> int:
        """apply_rotary_pos_emb's backward on q or k: x sin's gradient through rotate_half (neg, two slice_backward,
        their sum), x cos's, the sum; the incoming gradient goes before the sum (Phi-3's, g_in None, is a view of a
        larger one, freed by the caller). ``tables`` (cos, sin) go where their last reader's products are made."""
        product = new(T * width * act)
        if tables:
            free(tables[1])
        total = rotate_half_backward(width, product)
        m2 = new(T * width * act)
        if g_in is not None:
            free(g_in)
        if tables:
            free(tables[0])
        out = new(T * width * act)
        free(total, m2)
        return out

    def frozen_norm_backward(g_in: int, x32: int, g_res: int | None, x_in: int | None = None, width: int = H,
                             last: tuple = (), recomputed: bool = gc) -> int:
        """A frozen LlamaRMSNorm's backward (LoRA): the weight's product alone, then as a trained one's."""
        return norm_backward(g_in, None, x32, g_res, None, x_in, width, last, recomputed)

    def lora_backward_start(ow: int, g_out: int, free_out: bool) -> tuple[int, int]:
        """An adapted module's backward up to its saved tensors: the output's gradient in fp32 (the final cast's),
        the base output's back in 16 bits, x scaling's (lora_B's output) - what runs before a recomputation."""
        g_total = new(T * ow * 4)
        if free_out:
            free(g_out)
        g_base = new(T * ow * act)
        g_b = new(T * ow * 4)
        free(g_total)
        return g_base, g_b

    def lora_backward_end(m: str, iw: int, started: tuple[int, int], nm: dict, acc: int | None, g) -> int:
        """The rest of an adapted module's backward: lora_B's and lora_A's (their gradients; the fp32 input's, cast
        back to 16 bits), the base's input gradient, each summed into the input's gradient as it arrives (autograd's
        input buffer, out of place)."""
        g_base, g_b = started
        g(m)
        free(g_b)
        g32 = new(T * iw * 4)
        free(*nm[m])
        g_lora = new(T * iw * act)
        free(g32)
        if acc is not None:
            total = new(T * iw * act)
            free(acc, g_lora)
            g_lora = total
        g_x = new(T * iw * act)
        free(g_base)
        total = new(T * iw * act)
        free(g_lora, g_x)
        return total

    def lora_module_backward(m: str, iw: int, ow: int, g_out: int, free_out: bool, nm: dict, acc: int | None, g) -> int:
        """A module's backward on a frozen base: LoRA's where adapted, else the base's input gradient alone."""
        if lora_on.get(m):
            return lora_backward_end(m, iw, lora_backward_start(ow, g_out, free_out), nm, acc, g)
        g_x = new(T * iw * act)
        if free_out:
            free(g_out)
        if acc is None:
            return g_x
        total = new(T * iw * act)
        free(acc, g_x)
        return total

    def lora_weights_backward(m: str, ow: int, g_out: int, nm: dict, g) -> None:
        """An adapted module's backward where its input needs no gradient (the first layer's q, k, v without
        checkpointing): the output's gradient in fp32, x scaling's, the adapters' gradients; no base or input gradient."""
        if not lora_on.get(m):
            free(g_out)
            return
        g_total = new(T * ow * 4)
        free(g_out)
        g_b = new(T * ow * 4)
        free(g_total)
        g(m)
        free(g_b, *nm[m])

    def explicit_lora_backward(nm: dict, g_res: int, g, x_in: int | None, down_started=None, last: tuple = (),
                               first: bool = False) -> int | None:
        """A LoRA layer's backward as recorded (down's start may have run before the recomputation); the first layer
        without checkpointing stops at q's, k's and v's adapters (``first``: its input needs no gradient), its incoming
        residual gradient gone with o's."""
        if down_started is not None:
            gp = lora_backward_end("down", I, down_started, nm, None, g)
        else:
            gp = lora_module_backward("down", I, H, g_res, False, nm, None, g)
        gu, gs = new(T * I * act), new(T * I * act)   # recomputed (gc), the saved tensors go first
        free(*((nm["si"], nm["uo"], gp) if gc else (gp, nm["uo"], nm["si"])))
        acc = lora_module_backward("up", H, I, gu, True, nm, None, g)
        gg = new(T * I * act)                 # silu_backward
        free(*((nm["go"], gs) if gc else (gs, nm["go"])))
        acc = lora_module_backward("gate", H, I, gg, True, nm, acc, g)
        g_res = frozen_norm_backward(acc, nm["x32_2"], g_res)
        gso = lora_module_backward("o", q, H, g_res, first, nm, None, g)
        if lmask:  # the efficient kernel's backward; repeat_kv's sums (v's, made later, first); v's gradient made
            gq, gkr, gvr = new(T * q * act), new(T * q * act), new(T * q * act)  # contiguous for its projection
            free(gso, *((nm["lse"], nm["vr"], nm["kr"], nm["qe"], nm["mask"], nm["so"]) if gc
                        else (nm["mask"], nm["kr"], nm["qe"], nm["vr"], nm["lse"], nm["so"])))
            if kv < q:
                gv = new(T * kv * act)
                free(gvr)
                gk = new(T * kv * act)
                free(gkr)
            else:
                gk, gv = gkr, gvr
            gk = rotary_backward(kv, gk)
            gq = rotary_backward(q, gq)
            cv = new(T * kv * act)
            free(gv)
            gv = cv
        else:
            gq, gk, gv = new(T * q * act), new(T * kv * act), new(T * kv * act)
            free(*((nm["so"], nm["vo"], nm["qe"], nm["ke"], gso) if gc
                   else (gso, nm["ke"], nm["qe"], nm["vo"], nm["so"])))
            gk = rotary_backward(kv, gk)
            gq = rotary_backward(q, gq)
        if first:
            lora_weights_backward("v", kv, gv, nm, g)
            if qkn:
                gk = frozen_norm_backward(gk, nm["x32k"], None, width=kv)
            ck = new(T * kv * act)
            free(gk)
            lora_weights_backward("k", kv, ck, nm, g)
            if qkn:
                gq = frozen_norm_backward(gq, nm["x32q"], None, width=q)
            cq = new(T * q * act)
            free(gq)
            lora_weights_backward("q", q, cq, nm, g)
            return None
        acc = lora_module_backward("v", H, kv, gv, True, nm, None, g)
        if qkn:
            gk = frozen_norm_backward(gk, nm["x32k"], None, width=kv)
        ck = new(T * kv * act)
        free(gk)
        acc = lora_module_backward("k", H, kv, ck, True, nm, acc, g)
        if qkn:
            gq = frozen_norm_backward(gq, nm["x32q"], None, width=q)
        cq = new(T * q * act)
        free(gq)
        acc = lora_module_backward("q", H, q, cq, True, nm, acc, g)
        return frozen_norm_backward(acc, nm["x32_1"], g_res, x_in, last=last)

    def chunk_mlp_backward(gp: int, si: int, gu: int) -> int:
        """Phi-3's MLP backward from the product's gradient: mul's gradients (act_fn's first), silu's, then chunk's
        backward joining the gate and up halves (cat) for gate_up_proj; the joined gradient's handle."""
        ga, gup = new(T * I * act), new(T * I * act)
        free(*((si, gp) if gc else (gp, si)))   # a recomputed node's saved tensors go first
        gg = new(T * I * act)                 # silu_backward
        free(*((gu, ga) if gc else (ga, gu)))
        gcat = new(T * 2 * I * act)
        free(gg, gup)
        return gcat

    def qkv_views_backward(grads: list[int], gv: int) -> int:
        """The end of Phi-3's q / k / v backward: k's and q's gradients made contiguous (``grads``: k's, q's), then the
        three views' gradients each widened to qkv_proj's width (slice_backward) and summed (v's and k's, then q's);
        the joined gradient's handle."""
        ck = new(T * kv * act)
        free(grads[0])
        cq = new(T * q * act)
        free(grads[1])
        wide = T * (q + 2 * kv) * act
        s1 = new(wide)
        free(gv)
        s2 = new(wide)
        free(ck)
        a1 = new(wide)
        free(s1, s2)
        s3 = new(wide)
        free(cq)
        gqkv = new(wide)
        free(a1, s3)
        return gqkv

    def explicit_fused_backward(sv: list[int], g_res: int, g, x_in: int | None, last: tuple = ()) -> int:
        """Phi-3's layer backward as recorded: mul's gradients (act_fn's first), chunk's backward joining the two halves
        (cat) before gate_up_proj's weight gradient; rotary's on k then q, each back into its slice; the three views'
        gradients each widened to qkv's width (slice_backward) and summed before qkv_proj's."""
        if wmask:  # the converted mask, the kernel's output and logsumexp where flash's output and its copy are
            x32_1, c1, n1, qkv, qe, ke, converted, so, lse, x32_2, c2, n2, gu, si, prod = sv[:15]
            contiguous = None
        else:
            x32_1, c1, n1, qkv, qe, ke, so, contiguous, x32_2, c2, n2, gu, si, prod = sv[:14]
        g("down")
        gp = new(T * I * act)
        free(prod)
        gcat = chunk_mlp_backward(gp, si, gu)
        g("gate_up")
        gx = new(T * H * act)
        free(*((n2, gcat) if gc else (gcat, n2)))
        g_res = norm_backward(gx, c2, x32_2, g_res, lambda: g("n2"))
        g("o")
        gso = new(T * q * act)
        if wmask:  # the efficient kernel's backward; its saved tensors released in the recorded orders (recomputed
            gq, gk, gv = new(T * q * act), new(T * kv * act), new(T * kv * act)  # ones handed over by checkpoint)
            free(gso, *((lse, qkv, ke, qe, converted, so) if gc else (converted, ke, qe, qkv, lse, so)))
        else:
            free(contiguous)
            gq, gk, gv = new(T * q * act), new(T * kv * act), new(T * kv * act)
            free(*((so, qkv, qe, ke, gso) if gc else (gso, ke, qe, qkv, so)))
        tk, tq = rotary_backward(kv, None), rotary_backward(q, None)
        grads = []
        for width, g_in, rot in ((kv, gk, tk), (q, gq, tq)):
            widened = new(T * width * act)
            free(g_in)
            grads.append(new(T * width * act))
            free(widened, rot)
        gqkv = qkv_views_backward(grads, gv)
        g("qkv")
        gx = new(T * H * act)
        free(*((n1, gqkv) if gc else (gqkv, n1)))
        return norm_backward(gx, c1, x32_1, g_res, lambda: g("n1"), x_in, last=last)

    def projection_backward(m: str, g) -> int:
        """q, k or v's backward: mm's makes the weight's gradient, then the input's; addmm's (qkv_bias) the input's
        first; the input gradient's handle."""
        if bias:
            gx = new(T * H * act)
            g(m)
            return gx
        g(m)
        return new(T * H * act)

    def explicit_backward(sv: list[int], g_res: int, g, x_in: int | None = None, last: tuple = ()) -> int:
        """A fully trained 16-bit layer's backward as recorded (torch 2.11 autograd, SDPA's flash backward): each saved
        tensor freed after its last use, each weight's gradient where its matmul's backward makes it; the residual
        stream's new gradient."""
        if fused:
            return explicit_fused_backward(sv, g_res, g, x_in, last)
        x32_1, c1, n1 = sv[:3]
        x32q, cq_saved, x32k, ck_saved = sv[3:7] if qkn else (None,) * 4
        vo, qe, ke, so, x32_2, c2, n2, go, si, uo, prod = sv[7:18] if qkn else sv[3:14]
        g("down")
        gp = new(T * I * act)
        free(prod)
        gu, gs = new(T * I * act), new(T * I * act)  # mul's gradients: up's, then act_fn(gate)'s
        free(*((si, uo, gp) if gc else (gp, uo, si)))
        g("up")
        gx_up = new(T * H * act)
        free(gu)
        gg = new(T * I * act)                 # silu_backward
        free(*((go, gs) if gc else (gs, go)))
        g("gate")
        gx_gate = new(T * H * act)
        free(*((n2, gg) if gc else (gg, n2)))
        gn = new(T * H * act)
        free(gx_up, gx_gate)
        g_res = norm_backward(gn, c2, x32_2, g_res, lambda: g("n2"))
        g("o")
        gso = new(T * q * act)
        gq, gk, gv = new(T * q * act), new(T * kv * act), new(T * kv * act)
        free(*((so, vo, qe, ke, gso) if gc else (gso, ke, qe, vo, so)))
        gk = rotary_backward(kv, gk)
        gq = rotary_backward(q, gq)
        gx_v = projection_backward("v", g)
        free(gv)
        if qkn:  # k_norm's backward (its weight's gradient is a small-pool 256 bytes, not written)
            gk = norm_backward(gk, ck_saved, x32k, None, width=kv)
        ck = new(T * kv * act)                # the key gradient made contiguous
        free(gk)
        gx_k = projection_backward("k", g)
        free(ck)
        gx_vk = new(T * H * act)
        free(gx_v, gx_k)
        if qkn:
            gq = norm_backward(gq, cq_saved, x32q, None, width=q)
        cq = new(T * q * act)
        free(gq)
        gx_q = projection_backward("q", g)
        free(*((n1, cq) if gc else (cq, n1)))
        gn = new(T * H * act)
        free(gx_vk, gx_q)
        return norm_backward(gn, c1, x32_1, g_res, lambda: g("n1"), x_in)

    def norm32_backward(g_in: int, normed: int, x_in: int, g_res: int | None, g, recomputed: bool = gc,
                        input_recomputed: bool | None = None) -> int:
        """LlamaRMSNorm's backward on an fp32 input (under autocast), as recorded: the weight's products (its gradient
        between), the sum into the residual stream's gradient, the chain through rsqrt (the saved input goes), the
        stream's new fp32 gradient; the final norm (g_res None) has no sum."""
        t1, t2 = new(T * H * 4), new(T * H * 4)
        g()
        free(*((normed, t2, g_in) if recomputed else (t2, g_in, normed)))
        u1, u2 = new(T * H * 4), new(T * H * 4)
        free(u1, t1)
        total = None
        if g_res is not None:
            total = new(T * H * 4)
            free(g_res, u2)
        d = news([T * H * 4] * 4)
        if input_recomputed is None:
            input_recomputed = recomputed
        # a recomputed input (the second norm's, under checkpointing) goes before d[0]; a checkpoint's input after
        free(*((d[2], d[1], x_in, d[0]) if input_recomputed else (d[2], d[1], d[0], x_in)))
        out = new(T * H * 4)
        free(total if total is not None else u2, d[3])
        return out

    def rotary32_backward(width: int, g32: int) -> int:
        """apply_rotary_pos_emb's backward under autocast: fp32 products cast to bf16 around rotate_half's backward."""
        m = new(T * width * 4)
        c16 = new(T * width * act)
        free(m)
        total = rotate_half_backward(width, c16)
        m2 = new(T * width * 4)
        c2 = new(T * width * act)
        free(m2, g32)
        out = new(T * width * act)
        free(total, c2)
        return out

    def cast_linear_backward(m: str, g_out: int, saved: tuple[int, ...], g, fp32_input: bool = True) -> int | None:
        """A linear's backward under autocast: the bf16 weight gradient, the input's, the saved cast and copy (and the
        output's gradient) freed, the fp32 weight gradient (the parameter's), and the input's gradient back to fp32
        where the input was cast; that gradient's handle."""
        w16 = new(copy_of[m])
        gx16 = new(T * (I if m == "down" else q if m == "o" else H) * act)
        # the output's gradient, then the saved weight copy and input (``saved``); a recomputed node (checkpointing)
        # releases its saved tensors first, input before weight
        free(*((*saved[::-1], g_out) if gc else (g_out, *saved)))
        g()
        free(w16)
        if not fp32_input:
            return gx16
        gx32 = new(T * H * 4)
        free(gx16)
        return gx32

    def mixed_attention_backward(g16: int, o_saved: tuple, v_saved: int, qb: int, kb: int, so: int, g):
        """Attention's backward under autocast: o's (bf16 and fp32 weight gradients), flash's (the gradient and the
        saved k, q, v - or what holds v - and output released), q's and k's gradients cast to fp32 and through rotary's
        backward; (k's, q's, v's gradients)."""
        gso = cast_linear_backward("o", g16, o_saved, lambda: g("o"), fp32_input=False)
        gq, gk, gv = new(T * q * act), new(T * kv * act), new(T * kv * act)
        free(*((so, v_saved, qb, kb, gso) if gc else (gso, kb, qb, v_saved, so)))
        gk32 = new(T * kv * 4)
        free(gk)
        gq32 = new(T * q * 4)
        free(gq)
        return rotary32_backward(kv, gk32), rotary32_backward(q, gq32), gv

    def explicit_mixed_fused_backward(sv: list[int], x_in: int, g_res: int, g16: int, g, first: bool):
        """Phi-3's layer backward under bf16 autocast, as recorded: the fused projections' bf16 and fp32 weight
        gradients (the output gradient released before the saved copy and input), mul's and chunk's gradients as in
        16 bits, flash's, rotary's fp32 casts, the widening of q's and k's rotated parts, the views' sum into qkv's."""
        (m1, cast1, wqkv, qkv, qb, kb, so, contiguous, wo, r1, m2, cast2, wgu, gu, si, prod, wd) = sv[:17]
        gp = cast_linear_backward("down", g16, (wd, prod), lambda: g("down"), fp32_input=False)
        gcat = chunk_mlp_backward(gp, si, gu)
        gx = cast_linear_backward("gate_up", gcat, (wgu, cast2), lambda: g("gate_up"))
        g_res = norm32_backward(gx, m2, r1, g_res, lambda: g("n2"))
        g16 = new(T * H * act)
        rk, rq, gv = mixed_attention_backward(g16, (wo, contiguous), qkv, qb, kb, so, g)
        grads = []
        for width, rot in ((kv, rk), (q, rq)):   # the rotated part's gradient widened (slice_backward), then summed
            widened = new(T * width * act)
            grads.append(new(T * width * act))
            free(widened, rot)
        gqkv = qkv_views_backward(grads, gv)
        gx = cast_linear_backward("qkv", gqkv, (wqkv, cast1), lambda: g("qkv"))
        g_res = norm32_backward(gx, m1, x_in, g_res, lambda: g("n1"), input_recomputed=False)
        return g_res, (None if first else new(T * H * act))

    def explicit_mixed_backward(sv: list[int], x_in: int, g_res: int, g16: int | None, g, first: bool):
        """A fully trained fp32 layer's backward under bf16 autocast, as recorded: each projection's bf16 gradients and
        its weight's fp32 one, the casts' gradients back to fp32; the residual stream's new fp32 gradient and, above the
        first layer, the bf16 cast of it that the layer below's down projection takes."""
        if fused_mixed:
            return explicit_mixed_fused_backward(sv, x_in, g_res, g16, g, first)
        (m1, cast_q, wq, cast_k, wk, cast_v, wv, vo, qb, kb, so, wo, r1, m2, cast_g, wg, go, si, cast_u, wu, uo, prod,
         wd) = sv[:23]
        gp = cast_linear_backward("down", g16, (wd, prod), lambda: g("down"), fp32_input=False)
        gu, gs = new(T * I * act), new(T * I * act)
        free(*((si, uo, gp) if gc else (gp, uo, si)))
        gx_u = cast_linear_backward("up", gu, (wu, cast_u), lambda: g("up"))
        gg = new(T * I * act)                 # silu_backward
        free(*((go, gs) if gc else (gs, go)))
        gx_g = cast_linear_backward("gate", gg, (wg, cast_g), lambda: g("gate"))
        gn = new(T * H * 4)
        free(gx_u, gx_g)
        g_res = norm32_backward(gn, m2, r1, g_res, lambda: g("n2"))
        g16 = new(T * H * act)
        gk, gq, gv = mixed_attention_backward(g16, (wo,), vo, qb, kb, so, g)
        gx_v = cast_linear_backward("v", gv, (wv, cast_v), lambda: g("v"))
        ck = new(T * kv * act)
        free(gk)
        gx_k = cast_linear_backward("k", ck, (wk, cast_k), lambda: g("k"))
        gx_vk = new(T * H * 4)
        free(gx_v, gx_k)
        cq = new(T * q * act)
        free(gq)
        gx_q = cast_linear_backward("q", cq, (wq, cast_q), lambda: g("q"))
        gn = new(T * H * 4)
        free(gx_vk, gx_q)
        g_res = norm32_backward(gn, m1, x_in, g_res, lambda: g("n1"), input_recomputed=False)
        return g_res, (None if first else new(T * H * act))

    def gemma_norm(kept: list[int], saves_output: bool) -> int:
        """Gemma2RMSNorm.forward (x.float() normalized, times (1 + weight.float()), then the 16-bit copy), as recorded:
        the fp32 copy and the normalized product saved, the square and the weight's product freed; the output's handle
        (saved too where a projection reads it: the first and third norms)."""
        kept.append(new(T * H * 4))
        free(new(T * H * 4))
        kept.append(new(T * H * 4))
        prod = new(T * H * 4)
        out = new(T * H * act)
        free(prod)
        if saves_output:
            kept.append(out)
        return out

    def eager_mask(window: bool) -> int:
        """masking_utils' eager mask for the batch: the (1, 1, seq, seq) bool one, then torch.where(mask, 0, min) in the
        compute dtype, (batch, 1, seq, seq)."""
        m = _bool_mask(w, T // S, S, S, window)
        sc = new(act)
        out = new(T * S * act)
        free(sc, m)
        return out

    def nograd_gemma_norm() -> int:
        """Gemma2RMSNorm.forward without autograd: each tensor freed at its last use; the output's handle."""
        x32, sq = new(T * H * 4), new(T * H * 4)
        free(sq)
        normed = new(T * H * 4)
        free(x32)
        prod = new(T * H * 4)
        free(normed)
        out = new(T * H * act)
        free(prod)
        return out

    def nograd_gemma_layer() -> int:
        """Gemma2DecoderLayer's forward under gradient checkpointing (nothing saved), as recorded: each tensor freed at
        its last use - the probabilities, which the attention returns to the layer, at the layer's return; the layer's
        output's handle."""
        n1 = nograd_gemma_norm()
        qo, ko, vo = new(T * q * act), new(T * kv * act), new(T * kv * act)
        qe, ke = rotary(q), rotary(kv)
        free(qo, ko)
        kr, vr = new(T * q * act), new(T * q * act)
        qc = new(T * q * act) if T > S else 0
        probs = eager_scores(w, score, act, bool(v.get("attn_softcap")), qc)
        ao = new(T * q * act)
        aoc = new(T * q * act)
        free(ao, kr, vr)
        oo = new(T * H * act)
        free(aoc, qe, ke, vo, n1)
        pa = nograd_gemma_norm()
        free(oo)
        r1 = new(T * H * act)
        free(pa)
        pf = nograd_gemma_norm()
        go = new(T * I * act)
        si = new(T * I * act)
        free(go)
        uo = new(T * I * act)
        prod = new(T * I * act)
        free(si, uo)
        do = new(T * H * act)
        free(prod, pf)
        pff = nograd_gemma_norm()
        free(do)
        r2 = new(T * H * act)
        free(pff, r1, probs)
        return r2

    def gemma_layer(recompute: bool = False) -> dict:
        """Gemma2DecoderLayer's forward, fully trained in 16 bits under eager attention, as recorded (transformers 5.17):
        the saved tensors by name; the layer's output becomes the residual. As a checkpointed layer's recomputation it
        stops once the last saved tensor exists (torch.utils.checkpoint's early stop): the last norm's normalized input,
        before its product with (1 + w); down's output and the first sum go."""
        sv: dict = {}
        k1: list[int] = []
        n1 = gemma_norm(k1, True)
        sv["n1"] = k1
        qo, ko, vo = new(T * q * act), new(T * kv * act), new(T * kv * act)
        sv["qe"], ke = rotary(q), rotary(kv)
        free(qo, ko)
        sv["kr"], sv["vr"] = new(T * q * act), new(T * q * act)    # repeat_kv's copies (grouped heads)
        qe = sv["qe"]
        if T > S:  # matmul merges (batch, heads) of q laid out (batch, seq, heads, dim): a copy, saved in its place
            sv["qe"] = new(T * q * act)
        sc = new(score * act)                                     # q @ k^T
        scaled = new(score * act)                                 # x scaling
        free(sc)
        if v.get("attn_softcap"):                                 # / cap, tanh (its output saved), x cap
            divided = new(score * act)
            free(scaled)
            sv["tanh"] = new(score * act)
            free(divided)
            scaled = new(score * act)
        masked = new(score * act)                                 # + the mask
        free(scaled)
        f32 = new(score * 4)
        sv["sm"] = new(score * 4)                                 # softmax's fp32 output
        free(f32)
        sv["probs"] = new(score * act)
        free(masked)
        ao = new(T * q * act)
        sv["ao"] = new(T * q * act)                               # transpose(1, 2).contiguous()
        free(ao)
        oo = new(T * H * act)
        free(*((qe,) if qe != sv["qe"] else ()), ke, vo)          # the states: locals to the attention's return
        k2: list[int] = []
        pa = gemma_norm(k2, False)
        sv["n2"] = k2
        free(oo)
        r1 = new(T * H * act)
        free(pa)
        k3: list[int] = []
        gemma_norm(k3, True)
        sv["n3"] = k3
        sv["go"], sv["si"], sv["uo"], sv["prod"] = news([T * I * act] * 4)   # gate, gelu(gate), up, the product
        do = new(T * H * act)
        k4: list[int] = []
        if recompute:
            k4.append(new(T * H * 4))
            free(new(T * H * 4))
            k4.append(new(T * H * 4))
            sv["n4"] = k4
            free(do, r1)
            return sv
        pff = gemma_norm(k4, False)
        sv["n4"] = k4
        free(do)
        r2 = new(T * H * act)
        free(pff, r1)
        if residual[0] != residual[1]:  # the model keeps the embedding's scaled output to the end of its forward
            free(residual[0])
        residual[0] = r2
        return sv

    def gemma_norm_backward(g_in: int, saved: list[int], free_in: bool, g, g32: int | None = None,
                            x_in: tuple = (), recomputed: bool = False) -> int:
        """Gemma2RMSNorm's backward, as recorded: the gradient's fp32 copy (the incoming 16-bit one goes unless the
        residual stream still needs it; made before a checkpointed layer's recomputation: ``g32``), x (1 + w)'s two
        products (the weight's gradient from the first), the chain through rsqrt (the saved tensors go at their last
        use; a checkpoint's input, ``x_in``, with its fp32 copy), the sum, its 16-bit copy."""
        x32, normed = saved[0], saved[1]
        if g32 is None:
            g32 = new(T * H * 4)
        if free_in:
            free(g_in)
        t = new(T * H * 4)                         # the weight's product first (its gradient, summed), the input's
        g()
        gn = new(T * H * 4)
        free(*((normed, t, g32) if recomputed else (t, g32, normed)))
        u2, u1 = new(T * H * 4), new(T * H * 4)    # x the input (for rsqrt's gradient, summed), x rsqrt
        free(u2, gn)
        d = news([T * H * 4] * 4)                  # mean's expand, pow, x 2, the product
        free(*((d[2], d[1], x32, d[0]) if recomputed else (d[2], d[1], d[0], x32)), *x_in)
        total = new(T * H * 4)
        free(u1, d[3])
        back = new(T * H * act)
        free(total)
        return back

    def gemma_backward(sv: dict | None, g_res: int, g, x_in: int | None = None, last: tuple = (),
                       tables: tuple = ()) -> int:
        """Gemma2DecoderLayer's backward, as recorded (torch 2.11 autograd, eager attention): each saved tensor freed
        after its last use, each weight's gradient where its matmul's backward makes it; the residual stream's new
        gradient. Checkpointed (``sv`` None), the last norm's gradient copy comes before the layer is recomputed, the
        checkpoint's inputs go with the first norm's fp32 copy (``last``: the masks, cos and sin this checkpoint is the
        last to hold, then ``x_in``; without checkpointing ``tables`` go in the first layer's q rotary's backward), and
        a node's recomputed saved tensors go
        before its incoming gradient (checkpoint's unpack hands them over; a saved variable otherwise stays until the
        node is released)."""
        recomputed = sv is None

        def done(incoming: tuple, saved: tuple, saved_recomputed: tuple | None = None) -> None:
            """The frees at a node's end: incoming gradients, then saved tensors - or, recomputed, the saved first."""
            free(*((*(saved_recomputed or saved), *incoming) if recomputed else (*incoming, *saved)))

        g32 = None
        if recomputed:
            g32 = new(T * H * 4)
            sv = gemma_layer(recompute=True)
        gd = gemma_norm_backward(g_res, sv["n4"], False, lambda: g("n4"), g32, recomputed=recomputed)
        g("down")
        gp = new(T * I * act)
        done((gd,), (sv["prod"],))
        gu, gs = new(T * I * act), new(T * I * act)     # mul's gradients: up's, then gelu(gate)'s
        done((gp,), (sv["uo"], sv["si"]), (sv["si"], sv["uo"]))
        g("up")
        gx_up = new(T * H * act)
        free(gu)
        gg = new(T * I * act)                            # gelu_backward
        done((gs,), (sv["go"],))
        g("gate")
        gx_gate = new(T * H * act)
        done((gg,), (sv["n3"][2],))
        gn = new(T * H * act)
        free(gx_up, gx_gate)
        g3 = gemma_norm_backward(gn, sv["n3"], True, lambda: g("n3"), recomputed=recomputed)
        g_mid = new(T * H * act)
        free(g_res, g3)
        go = gemma_norm_backward(g_mid, sv["n2"], False, lambda: g("n2"), recomputed=recomputed)
        g("o")
        gao = new(T * q * act)
        done((go,), (sv["ao"],))
        if T > S:  # the gradient merged over (batch, heads) for the bmm: a copy
            merged = new(T * q * act)
            free(gao)
            gao = merged
        gvr, gpr = new(T * q * act), new(score * act)   # probs^T @ g, g @ v^T
        done((gao,), (sv["vr"], sv["probs"]), (sv["probs"], sv["vr"]))
        g32 = new(score * 4)
        free(gpr)
        sb = new(score * 4)                              # softmax's backward
        done((g32,), (sv["sm"],))
        gb = new(score * act)
        free(sb)
        if "tanh" in sv:                                 # x cap's, tanh's (its saved output goes), / cap's
            m1 = new(score * act)
            free(gb)
            tb = new(score * act)
            done((m1,), (sv["tanh"],))
            gb = new(score * act)
            free(tb)
        ms = new(score * act)                            # x scaling's
        free(gb)
        gkr, gq = new(T * q * act), new(T * q * act)     # the scores' bmm: the keys', the queries' gradients
        done((ms,), (sv["kr"], sv["qe"]), (sv["qe"], sv["kr"]))
        gv = new(T * kv * act)                           # repeat_kv's backward (values', made later, first): the
        free(gvr)                                        # copies' gradients summed
        gk = new(T * kv * act)
        free(gkr)
        gk = rotary_backward(kv, gk)
        gq = rotary_backward(q, gq, tables)
        cv = new(T * kv * act)                           # each gradient made contiguous for its projection
        free(gv)
        g("v")
        gx_v = new(T * H * act)
        free(cv)
        ck = new(T * kv * act)
        free(gk)
        g("k")
        gx_k = new(T * H * act)
        free(ck)
        gx_vk = new(T * H * act)
        free(gx_v, gx_k)
        cq = new(T * q * act)
        free(gq)
        g("q")
        gx_q = new(T * H * act)
        done((cq,), (sv["n1"][2],))
        gn = new(T * H * act)
        free(gx_vk, gx_q)
        g1 = gemma_norm_backward(gn, sv["n1"], True, lambda: g("n1"), x_in=(*last, x_in) if x_in else (),
                                 recomputed=recomputed)
        g_out = new(T * H * act)
        free(g_mid, g1)
        return g_out

    def layer_saved() -> list[int]:
        """One layer's forward (or its recomputation): each adapted module's LoRA tensors in order, then the saved pieces;
        the handles of what backward needs."""
        kept = []
        for x32, ow in lora_forward:
            base = new(T * ow * act)
            kept.append(new(x32))
            free(lora_sum(base, ow))
        return kept + news(pieces_bytes)

    grads: dict[str, int] = {}

    def grad(name: str, numel: float, nbytes: float) -> None:
        if name in grads:      # accumulation: the new gradient is a temporary added in place
            free(new(numel * nbytes))
        else:
            grads[name] = new(numel * nbytes)

    states_made = False
    for step in range(n_steps):
        for k in range(ga):
            if k:  # micro-batch k - 1 ends a chunk
                repeated = yield w.events, marks, False
                w.events, marks = [], []
                if repeated and k >= 2:
                    break  # micro-batch k - 1 (like every later one) left the state as it found it: they repeat
            mark(f"fwd{step}")
            saved, copies, lora_named = [], [], []
            if gemma:  # Gemma2Model: the embedding scaled by sqrt(hidden) (a copy), then the causal and sliding masks
                e0 = new(T * H * act)
                x = new(T * H * act)
                free(e0)
                masks = [eager_mask(False)] + ([eager_mask(True)] if v.get("sliding_window") else [])
                tables = _rotary_tables(w, S, q // heads, act)   # cos, sin: saved by every layer's rotary
            else:
                x = new(T * H * resid)
                if wmask or lmask:  # masking_utils' sliding-window bool mask for the batch, (1, 1, seq, seq)
                    window_mask = _bool_mask(w, T // S, S, S, True)
            residual[:] = [x, x]
            for _i in range(L):
                if gemma and gc:
                    saved.append([x])
                    x = nograd_gemma_layer()
                    continue
                if gemma:
                    saved.append(gemma_layer())
                    continue
                if explicit and gc:
                    saved.append([x])
                    x = nograd_mixed_layer(copies) if mixed else nograd_layer()
                    continue
                if explicit and mixed:
                    pieces, weight_copies = explicit_mixed_layer(), []
                elif explicit:
                    # LoRA without checkpointing: the frozen embedding's output does not require grad (peft makes
                    # the inputs require grad only for checkpointing), so the first layer's input norm saves nothing
                    pieces, named = explicit_layer(first=_i == 0 and not full)
                    lora_named.append(named)
                    weight_copies = []
                else:
                    pieces = layer_saved()
                    weight_copies = news(copy_bytes)
                if gc:
                    frees(pieces)
                    copies += weight_copies
                    saved.append([x])
                    x = new(T * H * resid)
                else:
                    saved.append(pieces + weight_copies)
            if explicit and not gc:
                x = residual[0]
            head_out = None
            if explicit and mixed:  # the final norm on the fp32 stream (its input stays), the head's input cast
                head_kept = [x]
                free(new(T * H * 4))
                head_kept.append(new(T * H * 4))
                head_out = new(T * H * 4)
                head_kept.append(new(T * H * act))
                head_saved = None
            elif gemma:  # the final norm, then the last layer's output, the masks and the embedding's output go (the
                head_kept = []  # checkpoints keep the masks and the first layer's input)
                gemma_norm(head_kept, True)
                free(x, *(() if gc else (*masks, residual[1])))
                head_saved = None
            elif explicit:  # the final norm, then the last layer's output (and the embedding's) go
                head_kept = []
                normed_head = norm(head_kept)
                if not full:  # the frozen head saves nothing of it: it goes with the loss's fp32 copy
                    head_out = normed_head
                free(x)
                if not gc:
                    free(residual[1], *((window_mask,) if wmask or lmask else ()))
                head_saved = None
            else:
                head_saved = new(v["head_saved_bytes"])
            head_copy = new(V * H * 2) if mixed else None
            logits = new(T * V * 2)
            capped = None
            if v.get("final_softcap"):  # Gemma2ForCausalLM: logits / cap, tanh (saved for backward), x cap
                divided = new(T * V * 2)
                free(logits)
                capped = new(T * V * 2)
                free(divided)
                logits = new(T * V * 2)
            fp32_copy, log_probs = new(T * V * 4), new(T * V * 4)
            free(fp32_copy)
            if head_out:
                free(head_out)
            free(logits)
            frees(copies)
            mark(f"bwd{step}")
            g_nll = new(T * V * 4)
            g_lsm = new(T * V * 4)
            free(g_nll)
            free(log_probs)
            g_logits = new(T * V * 2)
            free(g_lsm)
            if capped:  # x cap's, tanh's and / cap's backward, each a new tensor; tanh's saved output goes
                g_mul = new(T * V * 2)
                free(g_logits)
                g_tanh = new(T * V * 2)
                free(g_mul)
                free(capped)
                g_logits = new(T * V * 2)
                free(g_tanh)
            head_grad = None
            g16 = None
            if explicit and mixed:  # the head's bf16 gradients, its weight's fp32 one, the final norm's backward
                w16 = new(V * H * 2)
                gx16 = new(T * H * act)
                free(g_logits, head_copy, head_kept[2])
                head_copy = None
                if tied:
                    head_grad = new(V * H * wb)
                else:
                    grad("head", V * H, wb)
                free(w16)
                gx32 = new(T * H * 4)
                free(gx16)
                g_res = norm32_backward(gx32, head_kept[1], head_kept[0], None, lambda: grad("norm", H, wb),
                                        recomputed=False)
                g16 = new(T * H * act)
            elif explicit and not full:  # the frozen head's input gradient; the frozen final norm's backward
                g_hidden = new(T * H * act)
                free(g_logits)
                g_res = frozen_norm_backward(g_hidden, head_kept[0], None, recomputed=False)
            elif explicit:  # the head's weight gradient, then its input's; the final norm's backward
                if tied:
                    head_grad = new(V * H * wb)
                else:
                    grad("head", V * H, wb)
                g_hidden = new(T * H * act)
                free(g_logits, head_kept[2])
                if gemma:
                    g_res = gemma_norm_backward(g_hidden, head_kept, True, lambda: grad("norm", H, wb))
                else:
                    g_res = norm_backward(g_hidden, head_kept[1], head_kept[0], None, lambda: grad("norm", H, wb),
                                          recomputed=False)
            else:
                g_hidden = new(T * H * act)
                if full and tied:  # the head's share of the tied weight's gradient, summed with the embedding's at the end
                    head_grad = new(V * H * wb)
                elif full:
                    grad("head", V * H, wb)
                free(g_logits)
                free(head_saved)
                g_res = g_hidden  # the residual stream's gradient, a new tensor after each norm's backward where written
            if head_copy:
                free(head_copy)
            size = dict(layer)
            for i in reversed(range(L)):
                recomputed = []
                if gc and not gemma and not (explicit and not full):
                    if explicit:
                        recomputed = explicit_mixed_layer(recompute=True) if mixed else explicit_layer(recompute=True)[0]
                    else:
                        recomputed = layer_saved() + news(copy_bytes)

                def g(m: str) -> None:
                    if full:
                        grad(f"{i}.{m}", size[m], wb)
                    else:
                        for n, c, b in per_module.get((i, m), ()):
                            grad(n, c, b)
                if explicit and not full:  # LoRA: down's backward starts before a checkpointed layer is recomputed
                    if gc:
                        started = lora_backward_start(H, g_res, False)
                        named = explicit_layer(True)[1]
                        g_res = explicit_lora_backward(named, g_res, g, saved[i][0], started,
                                                       (window_mask,) if lmask and i == 0 else ())
                    else:
                        g_res = explicit_lora_backward(lora_named[i], g_res, g, None, first=i == 0)
                    continue
                if gemma and gc:  # Gemma2Config layer_types: even layers slide; the last checkpoint holding each input
                    last = (masks[-1], *tables) if i == 0 else (masks[0],) if i == 1 and len(masks) > 1 else ()
                    g_res = gemma_backward(None, g_res, g, saved[i][0], last)
                    continue
                if gemma:
                    g_res = gemma_backward(saved[i], g_res, g, tables=tables if i == 0 else ())
                    continue
                if explicit and full and not mixed:
                    layer_saved_handles = recomputed if gc else saved[i]
                    g_res = explicit_backward(layer_saved_handles, g_res, g, saved[i][0] if gc else None,
                                              (window_mask,) if wmask and gc and i == 0 else ())
                    continue
                if explicit and mixed and g16 is not None:
                    layer_saved_handles = recomputed if gc else saved[i][1:]
                    g_res, g16 = explicit_mixed_backward(layer_saved_handles, saved[i][0], g_res, g16, g, first=i == 0)
                    continue
                t1 = new(T * I * act)
                g("down")
                t2, t3 = new(T * I * act), new(T * I * act)
                free(t1)
                if fgu:  # chunk's backward joins the two halves' gradients into one for gate_up_proj
                    tgu = new(T * 2 * I * act)
                    free(t2)
                    free(t3)
                    g("gate_up")
                    th = new(T * H * act)
                    free(tgu)
                else:
                    g("up")
                    g("gate")
                    th = new(T * H * act)
                    free(t2)
                    free(t3)
                g("n2")
                ta = new(T * q * act)
                g("o")
                tq, tk, tv = new(T * q * act), new(T * kv * act), new(T * kv * act)
                free(ta)
                if fqkv:  # the views' gradients joined into one for qkv_proj
                    tqkv = new(T * (q + 2 * kv) * act)
                    for h in (tq, tk, tv):
                        free(h)
                    g("qkv")
                    free(tqkv)
                else:
                    for m in ("q", "k", "v"):
                        g(m)
                    for h in (tq, tk, tv):
                        free(h)
                g("n1")
                free(th)
                frees(recomputed + saved[i])
            if gemma:  # the embedding's scaling: its gradient a new tensor, read by the embedding's backward
                scaled_grad = new(T * H * act)
                free(g_res)
                g_res = scaled_grad
            if full and tied:
                # embedding_dense_backward's gradient; the autograd engine's input buffer sums the tied weight's two
                # gradients into a new tensor (input_buffer.cpp accumulate: old_var + var), which AccumulateGrad takes
                # as the gradient - or adds in place into the one an earlier micro-batch left
                emb_grad = new(V * H * wb)
                free(g_res)            # the embedding backward's incoming gradient goes before the sum
                g_res = None
                total = new(V * H * wb)
                free(head_grad)
                free(emb_grad)
                if "embd" in grads:
                    free(total)
                else:
                    grads["embd"] = total
            elif full:  # an untied embedding: embedding_dense_backward's output is its gradient (AccumulateGrad takes it)
                grad("embd", V * H, wb)
            if full and not explicit:
                grad("norm", H, wb)
            if g_res is not None:
                free(g_res)
            if not explicit:
                free(x)
        mark(f"opt{step}")
        if not states_made:
            for _, c, b in trainable:
                if eight_bit and c >= 4096:
                    for nbytes in (c, c, (c + 255) // 256 * 4, (c + 255) // 256 * 4):
                        new(nbytes)
                else:
                    new(c * b)
                    new(c * b)
            states_made = True
        if not v["optimizer_fused_step"]:
            # foreach's sqrt(v) list, released when the list dies - CPython's list_dealloc drops its items last first
            frees(news([int(c * b) for _, c, b in trainable])[::-1])
        # zero_grad(set_to_none=True) drops the gradients parameter by parameter, in the model's order
        frees([grads[n] for n, _, _ in trainable if n in grads])
        grads = {}
        repeated = yield w.events, marks, True
        w.events, marks = [], []
        if repeated:
            return  # this step started from the state the one before started from: every later step repeats it


def simulate(v: Shape | dict, n_steps: int = STEPS) -> caching.Allocator:
    """Replay every event of ``n_steps`` steps through the reference allocator; ``a.phases`` holds the
    reserved bytes at the start of each phase (the benchmark's view; the engine uses :func:`peaks`)."""
    expandable = (v.get("expandable_segments") if isinstance(v, dict) else v.expandable_segments)
    a = caching.Allocator(expandable_segments=bool(expandable))
    a.phases = []
    for ev, marks, _ in steps(v, n_steps):
        start = 0
        for k, label in sorted(dict(marks).items()):  # a phase's reserved bytes before its first event
            if k < len(ev):
                a.replay(ev[start:k])
                a.phases.append((label, a.reserved))
                start = k
        a.replay(ev[start:])
    a.phases.append(("end", a.reserved))
    return a


@lru_cache(maxsize=4096)
def peaks(shape: Shape) -> tuple[int, int]:
    """``(peak reserved, peak allocated)`` bytes of the sequence's :data:`STEPS` steps, by the fast replay
    (the same allocator rules; tests/test_training_reserve.py checks they agree with :func:`simulate`)."""
    return caching.replay_peaks(steps(shape, STEPS), bool(shape.expandable_segments))


def reserve_bytes(*args: float) -> int:
    """The formula function ``training_allocator_reserve``: peak reserved - peak allocated of the sequence
    for the :class:`Shape` given positionally (bytes the allocator holds beyond the allocated peak)."""
    if len(args) != len(Shape._fields):
        raise TypeError(f"training_allocator_reserve takes {len(Shape._fields)} arguments "
                        f"({', '.join(Shape._fields)}), not {len(args)}")
    if any(x < 0 for x in args):  # sizes and counts: a negative one would read as a free
        raise ValueError("training_allocator_reserve: a negative size or count")
    shape = Shape(*(float(x) if isinstance(x, float) and not float(x).is_integer() else int(x) for x in args))
    if max_events(shape) > MAX_EVENTS:  # whatever formula calls it (an override too): never a hang
        raise ValueError(f"training_allocator_reserve: more than {MAX_EVENTS:,} allocator events to replay")
    reserved, allocated = peaks(shape)
    return reserved - allocated
