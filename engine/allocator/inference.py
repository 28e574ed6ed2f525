"""A transformers generation's allocations written from the estimate's own values, replayed through the
caching-allocator model (:mod:`vramplan.allocator.caching`): the reserve beyond the allocated peak.

The prefill's transients and the key / value tensors the dynamic cache makes between them decide which freed
blocks later requests can reuse, and so how much ``nvidia-smi`` shows beyond what is allocated - not a share
of any total (the fitted ``allocator_slack_fraction`` ranged 0.01-0.55 over the calibration runs). So the
sequence is written out and replayed, as :mod:`vramplan.allocator.training` does for a training step.

What the sequence follows (transformers 5.17, torch 2.11, ``LlamaForCausalLM`` and the identical Qwen2 /
Mistral layers, 16-bit weights, SDPA's flash kernel without a mask; recorded on the meta device by
benchmarks/allocator/replay_inference.py, which gives the same peaks):

* model build: the cuBLAS / cuBLASLt workspaces, then every parameter in construction order (embedding;
  per layer q, its bias, k, its bias, v, its bias, o, gate, up, down and the two norms; the final norm; an
  untied head);
* ``generate``'s prefill - ``model(input_ids, use_cache=True, logits_to_keep=1)``: the int64 ids, the
  embedding output (kept to the end of the forward), positions and the rotary cos / sin tables (fp32
  intermediates of positions x head_dim), then per layer: RMSNorm (an fp32 copy, its square, the mean,
  rsqrt, the fp32 product, the 16-bit copy and the weighted output), q / k / v, rotate_half on q and k (the
  product, the negated half, the concatenation, the second product, the sum), the cache's keys and values
  (``DynamicLayer.update``: torch.cat of the empty cache and the new keys - a copy the cache keeps), SDPA's
  output, its fp32 logsumexp and RNG state (a zero-byte tensor takes no block: the allocator returns no
  memory for it), o, the residual sum, the second norm, gate, act(gate), up, their product,
  down, the second residual sum; the previous layer's output freed. Then the final norm and the head on the
  last position only, the argmax;
* offloaded layers (the last ``offload_layers``; accelerate's device map fills the GPU in module order): their
  parameters are not built on the GPU; ``dispatch_model`` hooks each of their modules that holds parameters
  (accelerate hooks.py ``attach_align_device_hook``: one AlignDevicesHook a leaf module), so each linear's and
  norm's weight (and bias) is copied to the GPU just before that module runs and released just after
  (``pre_forward`` / ``post_forward`` ``set_module_tensor_to_device``);
* its first decode step, ``model(next_ids, past_key_values=cache)``: the same with one token per sequence,
  except that each layer's keys and values are concatenated to a new tensor one token longer and the old one
  freed - so every cached tensor is allocated again at a size the freed ones cannot take (above 10 MiB the
  allocator rounds to 2 MiB: a cache whose size is a multiple of 2 MiB grows into the next block size).

Later decode steps are not written: the cache tensors grow into the next 2 MiB size every
2 MiB / (batch x kv_dim x 2) tokens, and how much each crossing leaves behind depends on where every block
sits; when the device fills, the allocator frees its unused cached segments and retries
(c10/cuda/CUDACachingAllocator.cpp ``release_cached_blocks`` after a failed cudaMalloc), so a long generation
that fragments further still runs. On the calibration runs (16 generated tokens) the second to sixteenth
steps changed the reserve by 2 MB at most but for one multi-head model (SmolLM2 1.7B at 16 x 2048: the
first step 1.36 GB - measured 1.36 - the sixteenth 1.50).

Qwen3 adds an RMSNorm of head_dim on each query and key head right after its projection (the projection's output
freed once normed; q_norm and k_norm built after o_proj). Phi-3's differences are the fused_qkv, fused_gate_up and
rope_cat_layout flags.

A model that windows every layer (Mistral v0.1; a Phi-3 whose config sets its window) is written with what the window
brings: one counter a layer (DynamicSlidingWindowLayer), the forward's bool mask once there are as many keys as the
window (masking_utils), the KV heads repeat_kv copies because of it, SDPA's conversion of the mask (zeros_like in the
compute dtype filled by its logical_not; a copy padded to 8 keys where they are not a multiple of 8) and the
memory-efficient kernel (its output already in (batch, tokens, heads, dim) order; in inference no logsumexp and no GPU
seed or offset), and a decode step that rebuilds each layer's keys and values from the window's last tokens and the
new one; in fp32 (every forward masked: the prompt at least as long as the window) the same with 4-byte tensors, the
norms making no fp32 copy of their input nor a 16-bit one of the product and the rotary tables no 16-bit copies (an fp32
model's ``.to(float32)`` / ``.to(x.dtype)`` return the tensor itself; the memory-efficient kernel runs fp32). Gemma 2
under eager attention is written too (:func:`_gemma2`: its two masks,
four norms, soft-capped scores and the probabilities each layer keeps, its sliding layers' window cache).

bitsandbytes LLM.int8 (``load_in_8bit``) is written too: the model comes from a checkpoint, one tensor at a time
(transformers loads synchronously when it quantizes on the fly), each linear's weight materialized in the model dtype,
copied to fp16 and quantized into the int8 CB and fp32 SCB it keeps (:func:`_int8_load`); the cuBLAS workspaces come
with the first forward's rotary matmul; every projection runs MatMul8bitLt's sequence (:func:`_int8_linear`: the fp16
copy of the input, its int8 copy and row scales, the threshold's abs and bool, the int32 product, the fp16 dequantized
output and its bf16 copy). Outlier columns are not written (they depend on the activations' values).

Not written (the estimate keeps the fitted fraction, formulas/memory/runtime_overhead.yaml): other layer
families (other qk-norms, partial rotary, MoE, recurrent or cross-attention layers), layers of two kinds under SDPA,
other eager attentions' masks and scores, fp32 weights where a forward is unmasked (fp32 with grouped KV heads and no
mask takes SDPA's math path, its scores materialized), other
quantized weights (NF4, GPTQ, AWQ, ...) or a quantized cache, several GPUs, a cache kept on the host.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from . import caching

#: The longest sequence replayed (about 0.15 s of pure Python): a prefill and one decode step write 88-200 events
#: a layer each (events_bound).
MAX_EVENTS = 200_000


class Shape(NamedTuple):
    """What the sequence needs, each a value of the formula graph (formulas/memory/runtime_overhead.yaml
    ``infer_reserve_simulated_bytes`` passes them in this order)."""

    mem_seqs: int        # sequences prefilled together (the batch)
    seq: int             # tokens per sequence the prefill processes
    hidden: int
    intermediate: int
    q_dim: int
    kv_dim: int
    n_heads: int
    n_layers: int
    vocab: int
    p_output: int        # parameters of an untied output head (0: tied to the embedding)
    qkv_bias: int        # 1 when q, k and v have biases (Qwen2): parameters of their own
    act_bytes: int       # bytes per element of the weights, activations and cache (2)
    #: the cuBLAS / cuBLASLt workspaces allocated before the model (the runtime's library_workspace_mib)
    library_workspace_bytes: int
    offload_layers: int = 0  # decoder layers whose weights stay on the host (the last ones), streamed module by module
    fused_qkv: int = 0        # q, k and v from one linear whose output the attention's views keep (Phi-3 qkv_proj)
    fused_gate_up: int = 0    # gate and up from one linear, chunked into views (Phi-3 gate_up_proj)
    rope_cat_layout: int = 0  # rotary ends in torch.cat with the (empty) pass-through part: a copy, and q contiguous
                              # in (batch, heads, tokens, head_dim) order, so the attention output is copied back
    qk_head_norm: int = 0     # an RMSNorm of head_dim on each query and key head after its projection (Qwen3)
    gemma2_layer: int = 0     # Gemma2DecoderLayer under eager attention (four (1 + w) norms, soft-capped scores)
    #: the window the written layers keep and mask with (0: none) - Gemma 2's on its even layers, or every layer's where
    #: a model windows all of them (Mistral v0.1, a Phi-3 whose config sets one)
    infer_reserve_window: int = 0
    #: bitsandbytes LLM.int8 linears (transformers load_in_8bit): the model is loaded from a checkpoint, quantizing each
    #: linear's weight on the way (:func:`_int8_load`), and every projection runs MatMul8bitLt (:func:`_int8_linear`)
    int8_matmul: int = 0
    #: Gemma 2's soft-caps (attn_logit_softcapping, final_logit_softcapping; Gemma2Config's 50 / 30 unless a config sets
    #: null): each adds / cap, tanh, x cap - three new tensors - to the scores of every layer and to the head's logits
    attn_softcap: int = 1
    final_softcap: int = 1
    #: PyTorch's allocator in its expandable-segments mode (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True; the
    #: runtime_settings expandable_segments): one segment a pool, mapped in pages as it grows (caching.Allocator)
    expandable_segments: int = 0

    @classmethod
    def of(cls, values: dict) -> Shape:
        """The shape from an estimate's trace values (expandable_segments is rt_expandable_segments there)."""
        return cls(*(int(values[f] if f in values else values.get("rt_" + f, cls._field_defaults.get(f, 0)))
                     for f in cls._fields))


def rope_events(w: caching.Writer, t: int, d: int, a: int, cat_layout: int = 0) -> int:
    """apply_rotary_pos_emb on one of q, k (``t`` tokens of width ``d``): x * cos, rotate_half (-x2, cat), * sin, the
    sum (Phi-3: then torch.cat with the pass-through part, a copy); the result's handle."""
    new, free = w.new, w.free
    xc = new(t * d * a)
    neg = new(t * d * a // 2)
    rot = new(t * d * a)
    free(neg)
    xs = new(t * d * a)
    free(rot)
    out = new(t * d * a)
    free(xc, xs)
    if cat_layout:
        whole = new(t * d * a)
        free(out)
        out = whole
    return out


def _rms_norm(w: caching.Writer, t: int, width: int, rows: int, a: int) -> int:
    """LlamaRMSNorm on ``t`` tokens over ``width`` (``rows`` of it a token: Qwen3's q_norm / k_norm run per head), the
    output's handle: hidden.to(float32), pow(2).mean(-1), + eps, rsqrt, the product, .to(dtype), x weight. In an fp32
    model both casts return the tensor they are given: no fp32 copy of the input, no 16-bit copy of the product."""
    new, free = w.new, w.free
    x32 = 0 if a == 4 else new(t * width * 4)
    sq = new(t * width * 4)
    mean = new(t * rows * 4)
    free(sq)
    eps = new(t * rows * 4)
    r = new(t * rows * 4)
    free(eps)
    prod = new(t * width * 4)
    free(r)
    if a == 4:
        out = new(t * width * a)
        free(prod, mean)
        return out
    free(x32)
    back = new(t * width * a)
    out = new(t * width * a)
    free(back, prod, mean)
    return out


def _rotary_tables(w: caching.Writer, s: int, hd: int, a: int) -> tuple[int, int]:
    """The rotary embedding's cos and sin for ``s`` positions: fp32 positions, the frequencies' product, the
    concatenation, cos / sin and the attention scaling, then the 16-bit copies (an fp32 model's ``.to(x.dtype)``
    returns the tables themselves); (cos, sin)."""
    new, free = w.new, w.free
    pos32, freqs, emb32, cos32, cosm = new(s * 4), new(s * hd // 2 * 4), new(s * hd * 4), new(s * hd * 4), new(s * hd * 4)
    free(cos32)
    sin32, sinm = new(s * hd * 4), new(s * hd * 4)
    free(sin32)
    if a == 4:
        free(pos32, freqs, emb32)
        return cosm, sinm
    cos, sin = new(s * hd * a), new(s * hd * a)
    free(pos32, freqs, emb32, cosm, sinm)
    return cos, sin


def _bool_mask(w: caching.Writer, batch: int, s: int, kv: int, window: bool) -> int:
    """masking_utils' (1, 1, s, kv) bool mask for ``s`` queries over ``kv`` keys, built from int64 position ranges
    (the batch's, the heads' one, the queries', the keys'); a sliding one ands a 'within the window' comparison in."""
    new, free = w.new, w.free
    b, h = new(batch * 8), new(8)
    q0 = new(s * 8)
    q1 = new(s * 8)
    free(q0)
    k0 = new(kv * 8)
    k1 = new(kv * 8)
    free(k0)
    if window:
        one = new(1)
        d = new(s * 8)
        gt = new(s * kv)
        free(d)
        both = new(s * kv)
        free(gt, one)
        le = new(s * kv)
        m = new(s * kv)
        free(le, both)
    else:
        m = new(s * kv)
    free(b, h, q1, k1)
    return m


def eager_scores(w: caching.Writer, score: int, a: int, capped: bool, qc: int = 0) -> int:
    """Eager attention's scores without autograd (Gemma 2's generation, a checkpointed training forward): q @ k^T (q's
    copy, where matmul needed one, goes once read), x scaling (then / softcap, tanh, x softcap where capped), + the
    mask, softmax in fp32 (the fp32 copy goes) and its 16-bit copy (the softmax's output and the masked scores go);
    ``score`` elements a tensor. The probabilities' handle."""
    new, free = w.new, w.free
    sc = new(score * a)
    if qc:
        free(qc)
    for _ in range(1 + 3 * capped):
        nxt = new(score * a)
        free(sc)
        sc = nxt
    masked = new(score * a)
    free(sc)
    f32 = new(score * 4)
    sm = new(score * 4)
    free(f32)
    probs = new(score * a)
    free(sm, masked)
    return probs


def _grow_cache(w: caching.Writer, cache: list[int], layer: int, nbytes: int, sliding: bool) -> None:
    """Layer ``layer``'s keys and values after a forward, ``nbytes`` each: DynamicLayer concatenates the keys, then the
    values, each releasing the tensor it replaces at once; DynamicSlidingWindowLayer concatenates both, then drops the
    old ones (``cache`` holds the live handles, 0 before the prefill)."""
    pair = (2 * layer, 2 * layer + 1)
    if sliding:
        grown = [w.new(nbytes), w.new(nbytes)]
        w.free(*(cache[j] for j in pair if cache[j]))
        cache[pair[0]], cache[pair[1]] = grown
        return
    for j in pair:
        g = w.new(nbytes)
        if cache[j]:
            w.free(cache[j])
        cache[j] = g


def _next_ids(w: caching.Writer, batch: int, ids: int, logits: int, first: bool) -> int:
    """The greedy pick after a forward: the prefill's prompt ids are freed before the argmax, a decode step's previous
    token after it; then the logits."""
    if first:
        w.free(ids)
        nxt = w.new(batch * 8)
    else:
        nxt = w.new(batch * 8)
        w.free(ids)
    w.free(logits)
    return nxt


def _generate(w: caching.Writer, batch: int, seq: int, forward) -> list[int]:
    """generate's prefill and its first decode step through ``forward(s, cached, ids, first)``."""
    ids = w.new(batch * seq * 8)
    nxt = forward(seq, 0, ids, True)
    forward(1, seq, nxt, False)
    return w.events


#: a decoder layer's modules in the order a checkpoint's sorted keys name them (input_layernorm, mlp.*, post_attention_layernorm,
#: self_attn.*; Qwen3's k_norm / q_norm among the projections)
_CHECKPOINT_ORDER = ("n1", "down", "gate", "gate_up", "up", "n2", "kn", "k", "o", "qn", "qkv", "q", "v")


def _int8_load(w: caching.Writer, rows: int, cols: int, a: int) -> None:
    """One linear's weight loaded with load_in_8bit (transformers 5.17 core_model_loading: on-the-fly quantization
    loads synchronously, so one tensor at a time): the checkpoint tensor materialized on the GPU in the model dtype;
    Bnb8bitQuantize copies it to the host and ``Int8Params(...).to(cuda)`` quantizes it (bitsandbytes 0.50
    Int8Params._quantize: ``.to(device, float16)``, int8_vectorwise_quant's row_stats (SCB, fp32 a row) and out_row
    (CB, int8) - the two it keeps); the fp16 copy is freed as _quantize returns, the materialized tensor once the
    conversion's dict is replaced."""
    value = w.new(rows * cols * a)
    half = w.new(rows * cols * 2)
    w.new(rows * 4)
    w.new(rows * cols)
    w.free(half, value)


def _int8_linear(w: caching.Writer, t: int, cols: int, rows: int, a: int) -> int:
    """Linear8bitLt's forward on ``t`` tokens of ``cols`` inputs into ``rows`` outputs in inference (bitsandbytes 0.50
    autograd/_functions.py MatMul8bitLt.forward, backends/cuda/ops.py, backends/default/ops.py), the output's handle:
    the fp16 copy of the input; int8_vectorwise_quant with the 6.0 threshold - row_stats (fp32 a token), out_row (int8),
    ``A.abs() >= threshold`` (the abs freed once compared, the bool kept to the function's end) and ``outliers.any()``
    (a one-byte tensor read on the host); the fp16 copy goes once quantized. int8_scaled_mm: the int32 product
    (int8_linear_matmul), int8_mm_dequant's fp16 output and its ``.to(bf16)`` - then the fp16 and the int32 go;
    MatMul8bitLt's quantized input and its row statistics go as it returns.

    No outlier column is written: which input columns reach the threshold depends on the activations' values, not on
    the shapes (a trained model's few outlier features add subA / subB copies of a few columns and addmm's second output;
    a randomly initialised one's MLP product crosses 6.0 in nearly every column of a long prompt, which adds a copy of
    the input and the weight dequantized in fp32)."""
    new, free = w.new, w.free
    half = new(t * cols * 2)
    stats = new(t * 4)
    quant = new(t * cols)
    absolute = new(t * cols * 2)
    outliers = new(t * cols)
    free(absolute)
    found = new(1)
    free(found, outliers, half)
    product = new(t * rows * 4)
    dequant = new(t * rows * 2)
    out = new(t * rows * a)
    free(dequant, product, quant, stats)
    return out


def events_bound(v: Shape) -> int:
    """At most how many events the sequence has: the model build (14 a layer; 50 loading LLM.int8 linears), the ids,
    and two forwards of 124 events a layer (with head norms; 26 more staging an offloaded one's weights; under 200 with
    a window mask's copies and conversion, or Gemma 2's four norms and soft-capped scores; 16 more a linear under
    LLM.int8) and under 90 around them (masks, counters)."""
    per_layer = (200 if v.gemma2_layer or v.infer_reserve_window else 150) + 120 * (v.int8_matmul > 0)
    return (50 if v.int8_matmul else 14) * v.n_layers + 5 + 2 * (per_layer * v.n_layers + 90)


def events(v: Shape) -> list[int]:
    """The sequence: ``e >= 0`` a malloc of ``e`` bytes (handles numbered 1, 2, ... in order), ``e < 0`` the free
    of handle ``~e``."""
    w = caching.Writer()
    new, free = w.new, w.free

    B, S, H, I = v.mem_seqs, v.seq, v.hidden, v.intermediate
    Q, K, L, V, a = v.q_dim, v.kv_dim, v.n_layers, v.vocab, v.act_bytes
    hd = Q // max(v.n_heads, 1)

    #: each module's parameters in construction order: (module, [its tensors' elements]) - Phi3Attention builds o_proj
    #: before qkv_proj (models/phi3/modeling_phi3.py)
    attention = ([("o", [Q * H]), ("qkv", [H * (Q + 2 * K)])] if v.fused_qkv else
                 [("q", [H * Q] + [Q] * v.qkv_bias), ("k", [H * K] + [K] * v.qkv_bias), ("v", [H * K] + [K] * v.qkv_bias),
                  ("o", [Q * H])])
    if v.qk_head_norm:  # Qwen3Attention builds q_norm and k_norm after o_proj
        attention += [("qn", [Q // max(v.n_heads, 1)]), ("kn", [Q // max(v.n_heads, 1)])]
    mlp = [("gate_up", [H * 2 * I])] if v.fused_gate_up else [("gate", [H * I]), ("up", [H * I])]
    modules = attention + mlp + [("down", [I * H]), ("n1", [H]), ("n2", [H])] + [("n3", [H]), ("n4", [H])] * v.gemma2_layer
    on_host = min(max(v.offload_layers, 0), L)
    #: each linear's (outputs, inputs) - what LLM.int8 quantizes row by row
    shapes = {"q": (Q, H), "k": (K, H), "v": (K, H), "o": (H, Q), "qkv": (Q + 2 * K, H), "gate": (I, H), "up": (I, H),
              "gate_up": (2 * I, H), "down": (H, I)}
    #: LLM.int8 is written for the Llama-like layers with every layer on the GPU (Gemma 2's writer and offloaded layers,
    #: which bitsandbytes keeps in fp32 on the host, are not)
    int8 = bool(v.int8_matmul) and not v.gemma2_layer and on_host == 0
    if int8:
        # from_pretrained(load_in_8bit=True): the checkpoint's tensors in dot_natural_key order (lm_head, the embedding,
        # each layer's modules by name, the final norm), the linears' weights quantized as they come; the cuBLAS
        # workspaces wait for the first forward's first torch matmul
        if v.p_output:
            new(v.p_output * a)
        new(V * H * a)
        in_checkpoint = sorted(modules, key=lambda m: _CHECKPOINT_ORDER.index(m[0]))
        for _ in range(L):
            for name, tensors in in_checkpoint:
                if name in shapes:
                    for n in tensors[1:]:  # Qwen2's q / k / v biases ('...bias' sorts before '...weight'), 16-bit
                        new(n * a)
                    _int8_load(w, *shapes[name], a)
                else:
                    new(tensors[0] * a)
        new(H * a)
    else:
        new(v.library_workspace_bytes)
        new(V * H * a)
        for _ in range(L - on_host):
            for _, tensors in modules:
                for n in tensors:
                    new(n * a)
        new(H * a)
        if v.p_output:
            new(v.p_output * a)
    sizes = dict(modules)
    staged: list[int] = []

    def stage(i: int, module: str) -> None:
        """An offloaded layer's module: its weights copied to the GPU before it runs (pre_forward)."""
        if i >= L - on_host:
            staged.extend(new(n * a) for n in sizes[module])

    def unstage() -> None:
        """... and released after it ran (post_forward)."""
        free(*staged)
        staged.clear()

    cache = [0] * (2 * L)

    def norm(t: int, width: int = H, rows: int = 1) -> int:
        return _rms_norm(w, t, width, rows, a)

    def rope(t: int, d: int) -> int:
        return rope_events(w, t, d, a, v.rope_cat_layout)

    def linear(t: int, module: str) -> int:
        """A projection's output on ``t`` tokens: one tensor, or LLM.int8's MatMul8bitLt sequence."""
        rows, cols = shapes[module]
        return _int8_linear(w, t, cols, rows, a) if int8 else new(t * rows * a)

    win = 0 if v.gemma2_layer else v.infer_reserve_window   # every layer windowed (Mistral v0.1, a Phi-3 with its window)
    rep = v.n_heads // max(K // max(hd, 1), 1)

    def forward(s: int, cached: int, ids: int, first: bool) -> int:
        """One forward of ``s`` new tokens a sequence on ``cached`` cached ones; the argmax's handle."""
        t = B * s
        emb = new(t * H * a)
        lifted = [new(8) for _ in range(L)] if first and win else []  # a DynamicSlidingWindowLayer's counter each
        ar = new(s * 8)
        pos = new(s * 8)
        free(ar)
        # the keys a windowed layer attends to: its last window - 1 cached tokens and the new ones; masking_utils builds
        # the mask once there are as many keys as the window (kv_length < window lets SDPA run causal instead)
        kv = min(cached, win - 1) + s if win and cached else cached + s
        masked = _bool_mask(w, B, s, kv, True) if win and kv >= win else 0
        if first and int8:  # the rotary tables' fp32 matmul is the first cuBLAS call: its workspaces
            new(v.library_workspace_bytes)
        cos, sin = _rotary_tables(w, s, hd, a)
        x = emb
        for i in range(L):
            stage(i, "n1")
            n1 = norm(t)
            unstage()
            if v.fused_qkv:  # q, k and v are views of one output, freed with the attention's locals
                stage(i, "qkv")
                qkv = linear(t, "qkv")
                unstage()
            else:
                proj = []
                for m, width in (("q", Q), ("k", K), ("v", K)):
                    stage(i, m)
                    proj.append(linear(t, m))
                    unstage()
                    if v.qk_head_norm and m != "v":  # Qwen3: the head norm right after the projection, which it frees
                        stage(i, m + "n")
                        normed = norm(t, width, width // hd)
                        unstage()
                        free(proj[-1])
                        proj[-1] = normed
                q, k, vv = proj
            qr, kr = rope(t, Q), rope(t, K)
            if not v.fused_qkv:
                free(q, k)
            if lifted:  # the counter's first update replaces the scalar it started from
                new(8)
                free(lifted.pop(0))
            _grow_cache(w, cache, i, B * kv * K * a, win > 0)
            free(kr)
            if not v.fused_qkv:
                free(vv)
            if masked:
                # a mask keeps SDPA from grouped heads: repeat_kv copies keys and values. SDPA converts the bool mask
                # (attention.cpp convert_boolean_attn_mask: zeros_like in the compute dtype over the batch, the
                # logical_not it fills by), pads a copy to 8 keys where they are not a multiple of 8 (preprocess_mask,
                # which lets the unpadded one go) and runs the memory-efficient kernel: only its output is on the GPU
                # in inference (no logsumexp without grad; seed and offset are CPU tensors without dropout)
                rk = rv = 0
                if rep > 1:
                    rk, rv = new(B * kv * Q * a), new(B * kv * Q * a)
                bias = new(B * s * kv * a)
                ln = new(B * s * kv)
                free(ln)
                if kv % 8:
                    padded = new(B * s * (kv + 8 - kv % 8) * a)
                    free(bias)
                    bias = padded
                o = new(t * Q * a)
                free(bias)
                if rep > 1:
                    free(rk, rv)
            else:
                o = new(t * Q * a)  # SDPA's output, then its fp32 logsumexp and RNG state (its empty tensor takes no block)
                lse, seed, offset = new(B * v.n_heads * s * 4), new(16), new(8)
                free(offset, seed, lse)
            # transpose(1, 2).contiguous() of flash's (batch, heads, tokens, dim) output; the memory-efficient kernel
            # (a mask) writes its output in (batch, tokens, heads, dim) order already
            if v.rope_cat_layout and s > 1 and not masked:
                copied = new(t * Q * a)
                free(o)
                o = copied
            stage(i, "o")
            op = linear(t, "o")
            unstage()
            free(o)
            if v.fused_qkv:
                free(qkv)
            free(qr, n1)
            h = new(t * H * a)
            free(op)
            stage(i, "n2")
            n2 = norm(t)
            unstage()
            if v.fused_gate_up:  # Phi3MLP: gate_up_proj's output stays under its chunk views until the MLP returns
                stage(i, "gate_up")
                gate_up = linear(t, "gate_up")
                unstage()
                act = new(t * I * a)
                prod = new(t * I * a)
                free(act)
                stage(i, "down")
                down = linear(t, "down")
                unstage()
                free(prod, gate_up, n2)
            else:
                stage(i, "gate")
                gate = linear(t, "gate")
                unstage()
                act = new(t * I * a)
                free(gate)
                stage(i, "up")
                up = linear(t, "up")
                unstage()
                prod = new(t * I * a)
                free(act, up)
                stage(i, "down")
                down = linear(t, "down")
                unstage()
                free(prod, n2)
            out = new(t * H * a)
            free(down, h)
            if x != emb:
                free(x)
            x = out
        fn = norm(t)
        free(x, pos, emb)
        if masked:
            free(masked)
        free(sin, cos)
        logits = new(B * V * a)
        free(fn)
        return _next_ids(w, B, ids, logits, first)

    if v.gemma2_layer:
        return _gemma2(v, w, staged_module=stage, unstage=unstage, cache=cache)
    return _generate(w, B, S, forward)


def _gemma2(v: Shape, w: caching.Writer, staged_module, unstage, cache: list[int]) -> list[int]:
    """Gemma 2 under eager attention (transformers 5.17 models/gemma2/modeling_gemma2.py), after the same model build
    with four norms a layer: generate's prefill and first decode step.

    The embedding scaled by sqrt(hidden) (a copy); one 8-byte counter a sliding layer, replaced at its first cache
    update (DynamicSlidingWindowLayer); two masks a forward (masking_utils eager masks: the causal and the sliding
    one, each built from int64 position ranges and bool comparisons into a (batch, 1, queries, keys) 16-bit where());
    per layer Gemma2RMSNorm (x.float() normed, times (1 + weight.float()), then the 16-bit copy) before and after
    the attention and the MLP; eager_attention_forward: repeat_kv's copies of keys and values (grouped heads), q made
    contiguous (a prompt of several sequences: matmul merges their batch and head dimensions), scores x scaling (/ softcap, tanh, x softcap
    unless the config sets attn_logit_softcapping null), + mask (each a new tensor), softmax in fp32
    and back - the probabilities, which the decoder layer keeps until it returns - then probabilities x values and
    the transposed copy (a prompt); gelu(gate) x up; the head soft-capped (/ cap, tanh, x cap; not with
    final_logit_softcapping null). The decode step's
    sliding layers concatenate the window's last tokens with the new one (w tokens) and drop the prompt's tensors;
    the full layers grow by one token."""
    new, free = w.new, w.free
    B, S, H, I = v.mem_seqs, v.seq, v.hidden, v.intermediate
    Q, K, L, V, a = v.q_dim, v.kv_dim, v.n_layers, v.vocab, v.act_bytes
    hd = Q // max(v.n_heads, 1)
    rep = v.n_heads // max(K // max(hd, 1), 1)        # query heads a KV head serves (repeat_kv copies when > 1)
    win = v.infer_reserve_window
    sliding = [win > 0 and i % 2 == 0 for i in range(L)]   # Gemma2Config layer_types: even layers slide

    def norm(t: int) -> int:
        x32, sq = new(t * H * 4), new(t * H * 4)
        mean = new(t * 4)
        free(sq)
        eps = new(t * 4)
        free(mean)
        r = new(t * 4)
        free(eps)
        prod = new(t * H * 4)
        free(r, x32)
        w32 = new(H * 4)
        w1 = new(H * 4)
        free(w32)
        out32 = new(t * H * 4)
        free(w1, prod)
        out = new(t * H * a)
        free(out32)
        return out

    def normed(i: int, module: str, t: int) -> int:
        staged_module(i, module)
        out = norm(t)
        unstage()
        return out

    def linear(i: int, module: str, n: int) -> int:
        staged_module(i, module)
        out = new(n)
        unstage()
        return out

    def rope(t: int, d: int) -> int:
        return rope_events(w, t, d, a)

    def mask(s: int, kv: int, window: bool) -> int:
        """The eager mask: the bool one turned into torch.where(mask, 0, min) in the compute dtype."""
        m = _bool_mask(w, B, s, kv, window)
        sc = new(a)
        out = new(B * s * kv * a)
        free(sc, m)
        return out

    def forward(s: int, cached: int, ids: int, first: bool) -> int:
        t = B * s
        e0 = new(t * H * a)
        emb = new(t * H * a)
        free(e0)
        lifted = [new(8) for i in range(L) if sliding[i]] if first else []
        ar = new(s * 8)
        pos = new(s * 8)
        free(ar)
        kv_full = cached + s
        kv_win = min(cached, win - 1) + s if cached else s
        m_full = mask(s, kv_full, False)
        m_win = mask(s, kv_win, True) if any(sliding) else 0
        cos, sin = _rotary_tables(w, s, hd, a)
        x = emb
        for i in range(L):
            kv = kv_win if sliding[i] else kv_full
            n1 = normed(i, "n1", t)
            q = linear(i, "q", t * Q * a)
            k = linear(i, "k", t * K * a)
            vv = linear(i, "v", t * K * a)
            qr, kr = rope(t, Q), rope(t, K)
            free(q, k)
            if first and sliding[i]:  # the counter's first update replaces the scalar it started from
                new(8)
                free(lifted.pop(0))
            _grow_cache(w, cache, i, B * kv * K * a, sliding[i])
            free(kr, vv)
            rk = rv = 0
            if rep > 1:
                rk, rv = new(B * kv * Q * a), new(B * kv * Q * a)
            qc = new(t * Q * a) if s > 1 and B > 1 else 0  # matmul merges (B, heads) of q laid out (B, s, heads, hd)
            score = B * v.n_heads * s * kv
            probs = eager_scores(w, score, a, bool(v.attn_softcap), qc)
            ao = new(t * Q * a)
            if s > 1:
                aoc = new(t * Q * a)
                free(ao)
                ao = aoc
            if rep > 1:
                free(rk, rv)
            op = linear(i, "o", t * H * a)
            free(ao, qr, n1)
            pa = normed(i, "n2", t)
            free(op)
            h = new(t * H * a)
            free(pa)
            pf = normed(i, "n3", t)
            gate = linear(i, "gate", t * I * a)
            act = new(t * I * a)
            free(gate)
            up = linear(i, "up", t * I * a)
            prod = new(t * I * a)
            free(act, up)
            down = linear(i, "down", t * H * a)
            free(prod, pf)
            pff = normed(i, "n4", t)
            free(down)
            out = new(t * H * a)
            free(pff, h, probs)
            if x != emb:
                free(x)
            x = out
        fn = norm(t)
        free(x, m_full)
        if m_win:
            free(m_win)
        free(emb, pos, sin, cos)
        logits = new(B * V * a)
        for _ in range(3 * v.final_softcap):  # / final softcap, tanh, x final softcap
            capped = new(B * V * a)
            free(logits)
            logits = capped
        free(fn)
        return _next_ids(w, B, ids, logits, first)

    return _generate(w, B, S, forward)


def simulate(v: Shape) -> caching.Allocator:
    """Every event through the reference allocator (the benchmark's and the tests' view)."""
    a = caching.Allocator(expandable_segments=bool(v.expandable_segments))
    a.replay(events(v))
    return a


@lru_cache(maxsize=4096)
def peaks(shape: Shape) -> tuple[int, int]:
    """``(peak reserved, peak allocated)`` bytes of the sequence, by the fast replay (the same allocator rules;
    tests/test_inference_reserve.py checks they agree with :func:`simulate`)."""
    def chunks():
        yield events(shape), [], True
    return caching.replay_peaks(chunks(), bool(shape.expandable_segments))


def reserve_bytes(*args: float) -> int:
    """The formula function ``inference_allocator_reserve``: peak reserved - peak allocated of the sequence for
    the :class:`Shape` given positionally (bytes the allocator holds beyond the allocated peak)."""
    if len(args) != len(Shape._fields):
        raise TypeError(f"inference_allocator_reserve takes {len(Shape._fields)} arguments "
                        f"({', '.join(Shape._fields)}), not {len(args)}")
    if any(x < 0 for x in args):  # sizes and counts: a negative one would read as a free
        raise ValueError("inference_allocator_reserve: a negative size or count")
    shape = Shape(*(int(x) for x in args))
    if events_bound(shape) > MAX_EVENTS:  # whatever formula calls it (an override too): never a hang
        raise ValueError(f"inference_allocator_reserve: more than {MAX_EVENTS:,} allocator events to replay")
    reserved, allocated = peaks(shape)
    return reserved - allocated
