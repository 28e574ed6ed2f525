"""What ``cheapest_deployment`` searches: the candidate replicas, their prices, and the columns that
evaluate many of them at once.

A **configuration** is one replica's setup: a GPU type, GPUs per replica, their split (tensor or
pipeline), a runtime, a weights format the runtime loads and a KV-cache precision it takes. The
space is built from catalog data only:

* GPUs: ``gpu_keys`` or every catalog GPU except the ``custom_*`` placeholders (they have no memory
  of their own). A unified-memory part (Apple silicon, Grace, DGX Spark) is one device per machine:
  one GPU per replica.
* GPUs per replica: 1, 2, 4 or 8 (:data:`GPU_COUNTS`: one node of one interconnect, the link the
  estimate models), each with tensor or pipeline parallelism; splits the model cannot take (heads
  that do not divide, more stages than layers) are left out by the estimate's own
  :func:`~vramplan.estimate.configuration_checks`.
* Runtimes: ``runtimes`` or every runtime whose profile has a ``deployment`` block (vendors, lowest
  NVIDIA compute capability, architectures without a backend, the KV formats searched, with
  sources), unless it says ``searched_by_default: false``; a runtime is paired only with GPUs it
  runs on.
* Weight formats: those whose catalog entry lists the runtime (or the runtime it ``extends``), at or
  above ``min_quality_rank`` (the catalog's ranks). KV precisions: the profile's ``kv_cache_formats`` at or above
  the floor; formats with the same ``kv_cache_bits`` give the same estimate, so one stands for them: the model's
  compute dtype where the profile lists it, else the first listed.
* Quality (the ranking's tie-break): what a format keeps of this model, at most what its checkpoint holds
  (:class:`vramplan.formatrules.Ceiling`), and whether the weights are in the checkpoint's own format.
* A field the request fixes (``quantization``, ``kv_cache_quantization``, ``runtime``, ``num_gpus``,
  ``inference_parallelism``) is not searched.

**Columns.** Each (runtime, format) pair is resolved and turned into a scenario once. What the GPU
decides comes from the pieces :func:`vramplan.scenario.device_vars` is made of - the GPU alone, the
format on it, the runtime on its hardware class, the runtime's constants on it - each computed once
per distinct key; what a replica's size and load decide from :func:`vramplan.scenario.load_vars`
over arrays. A batch of configurations at given loads is a set of columns gathered from those
tables and evaluated in one pass by :func:`vramplan.batch.evaluate_batch`: the numbers one estimate
of each gives (``tests/test_deploy.py`` checks rows against :func:`vramplan.estimate_inference`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import formatrules
from . import request as request_mod
from . import scenario as scenario_mod
from .catalog import Catalog
from .errors import RequestError
from .estimate import configuration_checks
from .registry import Entry
from .resolve import Resolved, resolve, runtime_value, splits_layers

#: GPUs per replica the search tries (one node; the estimate models one GPU-to-GPU link type).
GPU_COUNTS = (1, 2, 4, 8)
#: Request fields the search chooses (a request that gives one fixes it).
SEARCHED = ("quantization", "kv_cache_quantization", "runtime", "num_gpus", "inference_parallelism")
#: Scenario variables a replica's size and load set (vramplan.scenario.load_vars), and the KV precision.
ROW_VARS = ("num_gpus", "tp", "pp", "dp", "ep", "users", "seqs", "mem_users", "mem_seqs", "request_rate", "gpu_hour_cost",
            "micro_batch", "batch_global", "kv_bits", "kv_fp8")


@dataclass
class Price:
    """One GPU-hour of a GPU type: from the request, a catalog reference, or none."""

    usd: float | None
    kind: str | None  # "request" | "reference" | None
    note: dict[str, Any] | None = None  # the reference's offer, date and source

    def describe(self) -> dict[str, Any] | None:
        if self.kind is None:
            return None
        if self.kind == "request":
            return {"kind": "request"}
        return {"kind": "reference", **(self.note or {}),
                "note": "a public list price read on that date, for comparison - not a quote"}


@dataclass
class Pair:
    """A runtime and a weights format it loads, resolved once, with the KV precisions searched."""

    runtime: Entry
    quant: Entry
    res: Resolved
    base: dict[str, Any]  # the scenario on the reference GPU
    kv: list[tuple[str, float, float]]  # (format key, kv_cache_bits, quality_rank)
    settings: dict[str, float] | None  # the request's runtime_settings, and the launch limits the workload needs


@dataclass
class Piece:
    """One kind of per-GPU variables: a table row per distinct key, and each (pair, GPU) combination's row."""

    rows: list[dict[str, float]] = field(default_factory=list)
    index: dict[Any, int] = field(default_factory=dict)
    of_combo: list[int] = field(default_factory=list)

    def row(self, key: Any, make) -> int:
        """The table row for ``key``, made once."""
        i = self.index.get(key)
        if i is None:
            self.rows.append(make())
            i = self.index[key] = len(self.rows) - 1
        return i


@dataclass
class Space:
    """The configurations as parallel arrays (one element each) and the tables their columns come from."""

    cat: Catalog
    body: dict[str, Any]  # the request without the searched fields
    gpus: list[Entry]
    prices: list[Price]
    pairs: list[Pair]
    open_loop: bool
    rate: float  # requests/s (open loop)
    users: int  # clients (closed loop)
    batch: int
    notes: list[str] = field(default_factory=list)
    pieces: dict[str, Piece] = field(default_factory=dict)
    combo_pair: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # per (pair, GPU) combination
    combo: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # per configuration
    n: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    tensor: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    pair: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # per configuration
    gpu: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # per configuration
    kv: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # index into the pair's kv list
    kv_bits: np.ndarray = field(default_factory=lambda: np.zeros(0))
    kv_fp8: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # (weights, KV) quality_rank kept of this model: the catalog's, at most the checkpoint's (formatrules.Ceiling)
    quality: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    native: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # weights in the checkpoint's own format
    ceiling: formatrules.Ceiling = formatrules.NO_CEILING  # what a format keeps of the model
    _tables: dict[str, tuple[str, Any]] | None = None

    @property
    def size(self) -> int:
        return len(self.combo)


    # -- columns ---------------------------------------------------------------------------------
    def tables(self) -> dict[str, tuple[str, Any]]:
        """name -> (kind, value): kind "scalar" (one value), "pair" (an array over pairs) or a piece
        name (an array over that piece's rows); the last source naming a variable wins, as in
        :func:`vramplan.scenario.device_vars`."""
        if self._tables is None:
            out: dict[str, tuple[str, Any]] = {}
            sources: list[tuple[str, list[dict[str, Any]]]] = [("pair", [p.base for p in self.pairs])]
            sources += [(name, piece.rows) for name, piece in self.pieces.items() if piece.rows]
            for kind, rows in sources:
                names = set(rows[0])
                for r in rows[1:]:
                    names &= r.keys()
                for name in names:
                    if name in ROW_VARS:
                        continue
                    values = [r[name] for r in rows]
                    first = values[0]
                    if all(type(v) is type(first) and v == first for v in values):
                        out[name] = ("scalar", first)
                    else:
                        out[name] = (kind, np.array(values, dtype=np.float64))
            self._tables = out
        return self._tables

    def columns(self, rows: np.ndarray, replicas: np.ndarray) -> dict[str, Any]:
        """The scenario columns of configurations ``rows`` with ``replicas`` replicas sharing the load."""
        combo = self.combo[rows]
        index = {"pair": self.pair[rows]}
        for name, piece in self.pieces.items():
            index[name] = np.asarray(piece.of_combo, dtype=np.int64)[combo]
        out: dict[str, Any] = {}
        for name, (kind, value) in self.tables().items():
            out[name] = value if kind == "scalar" else value[index[kind]]
        rate, users = self.load(replicas)
        n, tensor = self.n[rows], self.tensor[rows]
        split = scenario_mod.load_vars(n, True, self.batch, users, rate, 0.0)
        piped = scenario_mod.load_vars(n, False, self.batch, users, rate, 0.0)
        for key, a in split.items():
            b = piped[key]
            out[key] = np.where(tensor, a, b) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) or a != b else a
        out.update(scenario_mod.server_slots({**out, "batch": self.batch}))
        out["kv_bits"] = self.kv_bits[rows]
        out["kv_fp8"] = self.kv_fp8[rows]
        # act_bytes: the runtime's where it fixes it, else the format's (scenario.runtime_act_bytes)
        act = np.array([scenario_mod.activation_bytes(p.quant.data) for p in self.pairs])[index["pair"]]
        out["act_bytes"] = scenario_mod.runtime_act_bytes(np.broadcast_to(out.get("rt_activation_bytes", 0.0), act.shape),
                                                          act, "inference")
        return out

    def load(self, replicas: np.ndarray) -> tuple[Any, Any]:
        """Each replica's share of the load: (request_rate, concurrent_users) as the request fields."""
        if self.open_loop:
            return self.rate / replicas.astype(np.float64), 1
        return 0.0, -(-self.users // replicas.astype(np.int64))  # ceil(users / replicas): the busiest replica

    # -- one replica as a request ----------------------------------------------------------------
    def replica_body(self, row: int, replicas: int, priced: bool = True) -> dict[str, Any]:
        """The inference request that estimates one replica of configuration ``row``."""
        p = self.pairs[int(self.pair[row])]
        body = dict(self.body)
        body.update({"gpu_key": self.gpus[int(self.gpu[row])].key, "num_gpus": int(self.n[row]),
                     "inference_parallelism": "tensor" if self.tensor[row] else "pipeline",
                     "quantization": p.quant.key, "kv_cache_quantization": p.kv[int(self.kv[row])][0],
                     "runtime": p.runtime.key})
        if p.settings:
            body["runtime_settings"] = dict(p.settings)
        if self.open_loop:
            body["request_rate"] = self.rate / replicas
            body.pop("concurrent_users", None)
        else:
            body["concurrent_users"] = -(-self.users // replicas)
        price = self.prices[int(self.gpu[row])]
        if priced and price.usd is not None:
            body["gpu_hour_cost"] = price.usd
        return body


# -- building the space ---------------------------------------------------------------------------

def runs_on(runtime: Entry, gpu: dict[str, Any]) -> bool:
    """Whether the runtime's profile says it runs on this GPU (no ``deployment`` block: anywhere); its
    ``deployment.formats`` say the same per weights format."""
    dep = runtime.data.get("deployment")
    return True if not dep else supported(dep, gpu)


def supported(needs: dict[str, Any], gpu: dict[str, Any]) -> bool:
    """Whether a GPU meets ``vendors`` / ``min_compute_capability`` / ``excluded_architectures``."""
    return formatrules.unmet(needs, gpu) is None


def default_runtimes(cat: Catalog) -> list[str]:
    return [e.key for e in cat.runtimes if formatrules.searched_by_default(e)]


def price_of(gpu: Entry, costs: dict[str, float]) -> Price:
    if gpu.key in costs:
        return Price(float(costs[gpu.key]), "request")
    ref = gpu.data.get("reference_price")
    if ref:
        return Price(float(ref["usd_per_gpu_hour"]), "reference",
                     {"offer": ref["offer"], "date": ref["date"], "source": ref["source"], "currency": "USD"})
    return Price(None, None)


def build_space(cat: Catalog, body: dict[str, Any], gpu_keys: list[str] | None, runtimes: list[str] | None,
                min_quality: float | None, costs: dict[str, float]) -> Space:
    """Every configuration the search considers (see the module docstring). ``body`` is the plan's
    request without the plan fields; the planner has validated it once already."""
    fixed = {k: body[k] for k in SEARCHED if body.get(k) is not None}
    if fixed.get("inference_parallelism") == "expert":
        raise RequestError([("inference_parallelism", "expert (attention data parallelism + expert parallelism) is not "
                             "searched by the deployment planner: leave inference_parallelism out to search pipeline and "
                             "tensor layouts, or estimate an expert layout with POST inference")])
    base_body = {k: v for k, v in body.items() if k not in SEARCHED and k not in ("gpu_key", "trace")}
    gpus = [cat.gpus.get(k) for k in gpu_keys] if gpu_keys else list(cat.gpus)
    gpus = [g for g in gpus if not g.data.get("custom")]
    if "runtime" in fixed:
        runtimes = [fixed["runtime"]] if runtimes is None or fixed["runtime"] in runtimes else []
    keys = runtimes if runtimes is not None else default_runtimes(cat)
    floor = -np.inf if min_quality is None else float(min_quality)
    notes: list[str] = []

    def target(key: str) -> str:
        return cat.quantization.get(key).data.get("alias_of") or key

    pairs: list[Pair] = []
    ref_gpu = gpus[0].key if gpus else None
    for rkey in keys:
        runtime = cat.runtimes.get(rkey, "runtimes")
        dep = runtime.data.get("deployment") or {}
        formats = formatrules.runtime_formats(cat, runtime.key)
        if "quantization" in fixed:
            formats = [e for e in formats if e.key == target(fixed["quantization"])]
        formats = [e for e in formats if e.data["quality_rank"] >= floor]
        kv_keys = list(dep.get("kv_cache_formats", ["fp16"]))
        if "kv_cache_quantization" in fixed:
            kv_keys = [k for k in kv_keys if k == target(fixed["kv_cache_quantization"])]
        kv: list[tuple[str, float, float]] = []
        for k in kv_keys:
            e = cat.quantization.get(k)
            bits, q = float(e.data["kv_cache_bits"]), float(e.data["quality_rank"])
            if q >= floor and all(b != bits for _, b, _ in kv):
                kv.append((k, bits, q))
        if not formats or not kv or ref_gpu is None:
            continue
        for fmt in formats:
            pb = {**base_body, "gpu_key": ref_gpu, "runtime": rkey, "quantization": fmt.key,
                  "kv_cache_quantization": kv[0][0], "num_gpus": 1}
            try:
                req = request_mod.validate(pb, "inference")
                launch = launch_settings(runtime, req)
                if launch:  # estimated as launched for these lengths, which the answer's runtime_settings say
                    pb = {**pb, "runtime_settings": {**(pb.get("runtime_settings") or {}), **launch}}
                    req = request_mod.validate(pb, "inference")
                    if fmt is formats[0]:
                        notes.append(f"{rkey} refuses these lengths as its defaults launch it: estimated launched with "
                                     + ", ".join(f"{k} {v:g}" for k, v in launch.items()))
                res = resolve(cat, req, "inference")
                base = scenario_mod.build(res)
            except RequestError as exc:
                notes.append(f"{rkey} with {fmt.key} left out: {exc}")
                continue
            pairs.append(Pair(runtime, fmt, res, base, kv, req.get("runtime_settings")))
    # one model: every pair's checkpoint is the same
    ceiling = formatrules.checkpoint_ceiling(cat, pairs[0].res.model_config) if pairs else formatrules.NO_CEILING
    if "kv_cache_quantization" not in fixed:
        _name_kv_as_computed(cat, pairs, ceiling.dtype)
    space = Space(cat, base_body, gpus, [price_of(g, costs) for g in gpus], pairs, body.get("request_rate") is not None,
                  float(body.get("request_rate") or 0.0), int(body.get("concurrent_users") or 1),
                  int(body.get("batch_size") or 1), notes=notes, ceiling=ceiling)
    if pairs and gpus:
        _enumerate(space, fixed)
    return space


def _name_kv_as_computed(cat: Catalog, pairs: list[Pair], dtype: str | None) -> None:
    """KV formats of equal bits give the same estimate, so one stands for them: where the runtime takes the model's
    own compute dtype (``dtype``: a bf16 model's bf16 cache, what vLLM's kv_cache_dtype "auto" keeps), that one."""
    if dtype is None or "kv_cache_bits" not in cat.quantization.get(dtype).data:
        return
    bits = float(cat.quantization.get(dtype).data["kv_cache_bits"])
    for p in pairs:
        if dtype in ((p.runtime.data.get("deployment") or {}).get("kv_cache_formats") or ()):
            p.kv = [(dtype if b == bits else k, b, q) for k, b, q in p.kv]


def _layouts(fixed: dict[str, Any], arch, unified: bool) -> list[tuple[int, bool]]:
    counts = [int(fixed["num_gpus"])] if "num_gpus" in fixed else list(GPU_COUNTS)
    if unified:
        counts = [c for c in counts if c == 1]
    splits = [fixed["inference_parallelism"] == "tensor"] if "inference_parallelism" in fixed else [False, True]
    out = []
    for c in counts:
        for tensor in splits:
            if c == 1 and len(splits) > 1 and tensor:
                continue  # one GPU: the split does not matter (pipeline, the request default, stands for both)
            if _takes(arch, c, tensor):
                out.append((c, tensor))
    return out


def _takes(arch, n: int, tensor: bool) -> bool:
    """Whether the model can be split this way (the estimate's configuration checks, no offloading)."""
    s = {"tp": n if tensor else 1, "pp": 1 if tensor else n, "n_heads": arch.num_heads, "n_layers": arch.num_layers,
         "offload_layers": 0}
    return not any(bool(cond) for cond, _ in configuration_checks(s, "inference"))


def _enumerate(space: Space, fixed: dict[str, Any]) -> None:
    """Every pair on every GPU it runs on, every layout the model takes, every KV precision; and the
    per-GPU tables those combinations read."""
    cat, pairs, gpus = space.cat, space.pairs, space.gpus
    arch = pairs[0].res.arch
    layouts = {u: _layouts(fixed, arch, u) for u in (False, True)}
    pieces = {name: Piece() for name in ("gpu", "format", "runtime", "constants")}
    by_runtime: dict[str, list[int]] = {}
    for pi, p in enumerate(pairs):
        by_runtime.setdefault(p.runtime.key, []).append(pi)
    fmt_class = [scenario_mod.format_on_gpu_key(p.quant.data) for p in pairs]
    rt_class = [scenario_mod.runtime_on_gpu_key(p.quant.data) for p in pairs]
    example = {c: pairs[i].quant.data for i, c in enumerate(fmt_class)} | {c: pairs[i].quant.data for i, c in enumerate(rt_class)}
    to_nvme = bool(pairs[0].base["offload_to_nvme"])
    combo_pair: list[int] = []
    combo_gpu: list[int] = []
    combo_layouts: list[bool] = []
    for gi, gpu in enumerate(gpus):
        g = gpu.data
        unified = bool(g.get("unified_memory_gib"))
        if not layouts[unified]:
            continue
        mem = float(g["memory_gib"])
        ic, host = _links(cat, space.body, gpu)
        hw = scenario_mod.gpu_vars(g, mem, ic.data, host.data if host else None)
        order = cat.hardware_orders.get(gpu.key, ())  # as resolve() finds it
        g_row = pieces["gpu"].row(gi, lambda: hw)
        for rkey, members in by_runtime.items():
            runtime = pairs[members[0]].runtime
            if not runs_on(runtime, g):
                continue
            needs = (runtime.data.get("deployment") or {}).get("formats") or {}
            members = [i for i in members if pairs[i].quant.key not in needs or supported(needs[pairs[i].quant.key], g)]
            if not members:
                continue
            rt = runtime.data
            consts = scenario_mod.runtime_constants(rt, gpu, mem, None, arch)
            settings = pairs[members[0]].settings
            c_row = pieces["constants"].row((rkey, id(consts)),
                                            lambda: scenario_mod.runtime_constants(rt, gpu, mem, settings, arch))
            f_rows = {c: pieces["format"].row((gi,) + c, lambda: scenario_mod.format_on_gpu_vars(g, example[c]))
                      for c in {fmt_class[i] for i in members}}
            r_rows = {c: pieces["runtime"].row((rkey, order, hw["host_bw_gb_s"]) + c, lambda: scenario_mod.runtime_on_gpu_vars(
                rt, example[c], order, hw["host_bw_gb_s"], to_nvme, settings)) for c in {rt_class[i] for i in members}}
            m = len(members)
            pieces["gpu"].of_combo.extend([g_row] * m)
            pieces["constants"].of_combo.extend([c_row] * m)
            pieces["format"].of_combo.extend(f_rows[fmt_class[i]] for i in members)
            pieces["runtime"].of_combo.extend(r_rows[rt_class[i]] for i in members)
            combo_pair.extend(members)
            combo_gpu.extend([gi] * m)
            combo_layouts.extend([unified] * m)
    space.pieces = pieces
    space.combo_pair = np.array(combo_pair, dtype=np.int64)
    # each combination x its layouts x its pair's KV precisions, in that order
    per_layout = {u: (np.array([c for c, _ in layouts[u]], dtype=np.int64), np.array([t for _, t in layouts[u]], dtype=bool))
                  for u in (False, True)}
    kv_count = np.array([len(p.kv) for p in pairs], dtype=np.int64)
    unified_of = np.array(combo_layouts, dtype=bool)
    n_layouts = np.where(unified_of, len(layouts[True]), len(layouts[False]))
    counts = n_layouts * kv_count[space.combo_pair]
    combo = np.repeat(np.arange(len(counts)), counts)
    j = np.arange(len(combo)) - np.repeat(np.cumsum(counts) - counts, counts)
    k = kv_count[space.combo_pair][combo]
    layout, kv = j // k, j % k
    u = unified_of[combo]
    n = np.where(u, _take(per_layout[True][0], layout), _take(per_layout[False][0], layout))
    tensor = np.where(u, _take(per_layout[True][1], layout), _take(per_layout[False][1], layout))
    pair_of = space.combo_pair[combo]
    width = max(len(p.kv) for p in pairs)
    bits_table = np.array([[b for _, b, _ in p.kv] + [0.0] * (width - len(p.kv)) for p in pairs])
    ceiling = space.ceiling
    quality_table = np.array([[min(q, ceiling.kv) for _, _, q in p.kv] + [0.0] * (width - len(p.kv)) for p in pairs])
    fp8_table = np.array([[float(scenario_mod.kv_is_fp8(space.cat.quantization.get(k).data)) for k, _, _ in p.kv]
                          + [0.0] * (width - len(p.kv)) for p in pairs])
    kv_bits, kv_q = bits_table[pair_of, kv], quality_table[pair_of, kv]
    space.combo, space.n, space.tensor, space.kv, space.kv_bits = combo, n, tensor.astype(bool), kv, kv_bits
    space.kv_fp8 = fp8_table[pair_of, kv]
    space.pair, space.gpu = pair_of, np.array(combo_gpu, dtype=np.int64)[combo]
    weights_q = np.array([ceiling.weights_rank(p.quant) for p in pairs])[pair_of]
    space.quality = np.stack([weights_q, kv_q], axis=1)
    space.native = np.array([p.quant.key == ceiling.native for p in pairs], dtype=bool)[pair_of]
    # a runtime without pipeline parallelism (TGI: tensor-parallel shards only) has no pipeline layout over several GPUs
    layered = np.array([splits_layers(p.runtime) for p in pairs], dtype=bool)
    keep = space.tensor | (space.n <= 1) | layered[space.pair]
    if not keep.all():
        for name in ("combo", "n", "tensor", "kv", "kv_bits", "kv_fp8", "pair", "gpu", "quality", "native"):
            setattr(space, name, getattr(space, name)[keep])


def launch_settings(runtime: Entry, req: dict[str, Any]) -> dict[str, float]:
    """The request limits a runtime must be launched with to take the workload's lengths, where its defaults
    (``max_input_tokens``, ``max_model_len``: TGI 2.x's 4,095 / 4,096) refuse them and the request does not set
    them: the prompt and the whole request (its prefill budget follows where the runtime ties it to the prompt limit,
    scenario.runtime_constants). Empty where the defaults take them."""
    settings = req.get("runtime_settings") or {}
    out: dict[str, float] = {}
    for name, need in (("max_input_tokens", req["input_tokens"]), ("max_model_len", req["seq_length"])):
        cap = float(runtime_value(runtime, req, name) or 0)
        if name not in settings and 0 < cap < need:
            out[name] = float(need)
    return out


def _take(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[index] where index is in range, 0 elsewhere (the other branch of a where)."""
    if not len(values):
        return np.zeros(len(index), dtype=values.dtype)
    return values[np.minimum(index, len(values) - 1)]


def _links(cat: Catalog, body: dict[str, Any], gpu: Entry) -> tuple[Entry, Entry | None]:
    """The GPU-to-GPU and host links resolve() takes for this GPU."""
    ic = cat.interconnects.get(body.get("interconnect_type") or gpu.data["default_interconnect"], "interconnect_type")
    host = gpu.data.get("host_link")
    return ic, (cat.interconnects.get(host, "gpu_key") if host else None)
