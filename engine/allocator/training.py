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
  backward's own vocab x hidden temporary at the end. A later micro-batch's weight gradients are
  temporaries added in place;
* optimizer: on the first step exp_avg and exp_avg_sq per trainable tensor in order (bitsandbytes
  8-bit: two uint8 moments + fp32 absmax per 256 elements), then foreach's sqrt(v) list (none for a
  fused step), freed; zero_grad frees the gradients.

Phi-3's fused projections (fused_qkv, fused_gate_up): each layer builds o_proj before qkv_proj, then gate_up_proj;
peft adapts each fused module once (one A of rank x hidden, one B of rank x the fused width); the forward keeps
gate_up_proj's output whole under its chunk views (one saved piece of tokens x 2 x intermediate) and autocast casts
four weights; in the backward the chunk's and the q / k / v views' gradients are joined into one tensor before the
fused weight's gradient (the sweep's 22 Phi-3 replays: median 1.7%, docs/FIDELITY.md).

A window on every layer (Mistral v0.1, Phi-3 with its config's window): SDPA saves its converted mask for backward,
one batch x tokens x tokens tensor a layer (train_mask_bytes_per_token_layer of the layer's saved bytes), written as
one piece before the others (recorded replays of Phi-3 mini and Mistral 7B v0.1 with their windows: within 5.1%).

Per-head q / k norms (Qwen3, Gemma 3): their saved fp32 inputs (and, trained, normalized inputs), q_dim and kv_dim
wide, are pieces of their own; their forward temporaries are not written.

Not written (the estimate keeps its fitted fractions for them, formulas/memory/runtime_overhead.yaml):
QLoRA (4-bit layers' dequantization), MoE, eager attention's score
tensors, fused cross-entropy, paged or other optimizers, ZeRO, data / tensor / pipeline parallelism,
offloading, models without a gated MLP or with recurrent or cross-attention layers.

Speed: a sequence has thousands of events (Llama 3 8B: 2,600-5,800 per step), so the replay is the fast
one of :func:`vramplan.allocator.caching.replay_peaks`; steps stop once a step starts from the allocator
state the step before started from, and accumulation micro-batches once one leaves the state as it
found it (both then repeat exactly, same peaks), and the result is memoised per shape.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from . import caching

#: The calibration method's run: three AdamW steps (benchmarks/measured/measure.py).
STEPS = 3
LORA_MODULES = ("q", "k", "v", "o", "gate", "up", "down")
#: The longest sequence replayed (about 2 s of pure Python): formulas/memory/runtime_overhead.yaml routes
#: longer ones to the fitted fractions (train_reserve_sequence_events), and the function refuses them.
MAX_EVENTS = 2_000_000


def max_events(v: Shape) -> float:
    """At most how many events the sequence has - the formula train_reserve_sequence_events, the same bound."""
    pieces = 5 + v.layer_saved_bytes_per_token / (2 * max(v.hidden, 1))
    return 3 * (v.grad_accum * (v.n_layers * (4 * pieces + 300) + 50) + 100 * v.n_layers + 100)


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

    @classmethod
    def of(cls, values: dict) -> Shape:
        """The shape from a mapping of the graph's values (an estimate's trace); LoRA flags and the fields with a
        default take it where the mapping lacks them."""
        return cls(*(values.get(f, cls._field_defaults.get(f, 0)) if f.startswith("lora_") or f in cls._field_defaults
                     else values[f] for f in cls._fields))


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
    wb = 4 if mixed else 2                          # weights (and full fine-tuning's grads / states) bytes
    resid, act = v["resid_bytes"], v["act_bytes"]
    tied = v["p_output"] == 0
    eight_bit = v["moment_bytes"] < 2 and v["optimizer_fused_step"]
    fqkv, fgu = bool(v.get("fused_qkv")), bool(v.get("fused_gate_up"))
    # each layer's parameters in construction order (Phi3Attention builds o_proj before qkv_proj) and its linears in
    # the order the forward runs them (autocast's weight copies)
    attn = [("o", q * H), ("qkv", H * (q + 2 * kv))] if fqkv else [("q", H * q), ("k", H * kv), ("v", H * kv), ("o", q * H)]
    mlp = [("gate_up", H * 2 * I)] if fgu else [("gate", H * I), ("up", H * I)]
    layer = attn + mlp + [("down", I * H), ("n1", H), ("n2", H)]
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
        r = int(v["lora_rank"])
        trainable = [(f"{i}.{m}.{ab}", r * (shapes[m][0] if ab == "A" else shapes[m][1]), 4)
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
    if not full and int(v["lora_rank"]):
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

    def layer_saved() -> list[int]:
        """One layer's forward (or its recomputation): each adapted module's LoRA tensors in order, then the saved pieces;
        the handles of what backward needs."""
        kept = []
        for x32, ow in lora_forward:
            base = new(T * ow * act)
            kept.append(new(x32))
            b = new(T * ow * 4)
            scaled = new(T * ow * 4)
            free(b)
            total = new(T * ow * 4)
            free(scaled, base)
            out = new(T * ow * act)
            free(total, out)
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
            saved, copies = [], []
            x = new(T * H * resid)
            for _i in range(L):
                pieces = layer_saved()
                weight_copies = news(copy_bytes)
                if gc:
                    frees(pieces)
                    copies += weight_copies
                    saved.append([x])
                    x = new(T * H * resid)
                else:
                    saved.append(pieces + weight_copies)
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
            g_hidden = new(T * H * act)
            head_grad = None
            if full and tied:  # the head's share of the tied weight's gradient, summed with the embedding's at the end
                head_grad = new(V * H * wb)
            elif full:
                grad("head", V * H, wb)
            free(g_logits)
            free(head_saved)
            if head_copy:
                free(head_copy)
            size = dict(layer)
            for i in reversed(range(L)):
                recomputed = []
                if gc:
                    recomputed = layer_saved() + news(copy_bytes)

                def g(m: str) -> None:
                    if full:
                        grad(f"{i}.{m}", size[m], wb)
                    else:
                        for n, c, b in per_module.get((i, m), ()):
                            grad(n, c, b)
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
            if full and tied:
                # embedding_dense_backward's gradient; the autograd engine's input buffer sums the tied weight's two
                # gradients into a new tensor (input_buffer.cpp accumulate: old_var + var), which AccumulateGrad takes
                # as the gradient - or adds in place into the one an earlier micro-batch left
                emb_grad = new(V * H * wb)
                total = new(V * H * wb)
                free(head_grad)
                free(emb_grad)
                if "embd" in grads:
                    free(total)
                else:
                    grads["embd"] = total
            if full:
                grad("norm", H, wb)
            free(g_hidden)
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
            frees(news([int(c * b) for _, c, b in trainable]))
        frees(list(grads.values()))
        grads = {}
        repeated = yield w.events, marks, True
        w.events, marks = [], []
        if repeated:
            return  # this step started from the state the one before started from: every later step repeats it


def simulate(v: Shape | dict, n_steps: int = STEPS) -> caching.Allocator:
    """Replay every event of ``n_steps`` steps through the reference allocator; ``a.phases`` holds the
    reserved bytes at the start of each phase (the benchmark's view; the engine uses :func:`peaks`)."""
    a = caching.Allocator()
    a.phases = []
    handle = 0
    for ev, marks, _ in steps(v, n_steps):
        at = dict(marks)
        for k, e in enumerate(ev):
            if k in at:
                a.phases.append((at[k], a.reserved))
            if e >= 0:
                handle += 1
                a.malloc(handle, e)
            else:
                a.free(~e)
    a.phases.append(("end", a.reserved))
    return a


@lru_cache(maxsize=4096)
def peaks(shape: Shape) -> tuple[int, int]:
    """``(peak reserved, peak allocated)`` bytes of the sequence's :data:`STEPS` steps, by the fast replay
    (the same allocator rules; tests/test_training_reserve.py checks they agree with :func:`simulate`)."""
    return caching.replay_peaks(steps(shape, STEPS))


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
