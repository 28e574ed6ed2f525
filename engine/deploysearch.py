"""The search behind ``cheapest_deployment`` (:mod:`vramplan.deploy`): the fewest replicas of every
configuration of a :class:`vramplan.deployspace.Space` that can be among the best GPU types shown.

It relies on one monotonicity, the planner's: more replicas (a lighter load each) never make a
configuration worse. Then:

* weights alone rule a configuration out unevaluated when they cannot fit (the busiest of n GPUs
  holds at least 1/n of what one GPU holding the model does);
* priced GPU types are searched first, then the others (which rank after them); within each, levels
  of total GPUs (GPUs per replica x replicas) are opened 1, 4, 16, ..., and a configuration is
  evaluated only once its fewest possible GPUs fall in the open level - so cheap configurations are
  decided first, and each GPU type's best so far, and the ``shown``-th best GPU type so far, set
  aside every configuration that can no longer beat them (or only tie at lower quality);
* a configuration's first estimate gives its capacity, and its replica count starts at the fewest
  replicas below capacity; one that misses for any other reason is tried at the lightest load
  (:data:`MAX_REPLICAS` replicas) - if even that fails no count helps, else an 8-ary search between
  finds the fewest (:data:`POINTS` counts per batch instead of one per bisection step);
* every step evaluates all open configurations at once through the batch evaluator, reading what
  :func:`vramplan.verdict.binding` reads, rounded as the response rounds it (:func:`verdict_figures`,
  :func:`binding_of`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import contract
from .batch import BatchResult, evaluate_batch
from .catalog import Catalog
from .deployspace import Space
from .errors import FormulaError
from .estimate import LIMITED_BY
from .sweep import memory_figures, round_like_python
from .units import GIB
from .verdict import NOT_FITTING, SLO_FIELDS

#: The most replicas a deployment may have (an open loop; a closed loop has at most one per client).
MAX_REPLICAS = 1024
#: GPU types shown when the request does not say.
DEFAULT_SHOWN = 10
#: Weights more than this over a GPU's usable memory rule a configuration out unevaluated (GiB; the
#: response's per-component rounding moves vram_usage by less).
WEIGHT_MARGIN_GIB = 0.1


def declared_targets(names: tuple[str, ...], declared: tuple[str, ...]) -> tuple[str, ...]:
    """``names``, once each is a declared inference output (``vocabulary/outputs.yaml``, which the
    loader checks every formula set against): a renamed output fails here, at import, naming it -
    not at the first deployment search that reads the old name."""
    missing = [n for n in names if n not in declared]
    if missing:
        raise FormulaError([(contract.OUTPUTS_FILE, f"the deployment search (deploysearch.SERVING_TARGETS) reads "
                                                    f"{', '.join(missing)}, not declared for inference")])
    return names


#: What the search reads from the formula graph besides the memory components.
SERVING_TARGETS = declared_targets(
    ("srv_past_capacity", "srv_open_loop", "srv_static", "srv_ttft_s", "srv_itl_s", "srv_e2e_s", "srv_queued",
     "srv_limited_code", "srv_max_running", "srv_capacity_seq_rate"), contract.outputs_by_workload()["inference"])

PENDING, DECIDED, DROPPED, PRUNED = 0, 1, 2, 3


@dataclass
class Outcome:
    """Per configuration: its state and the replica counts known to fail (lo) and to meet the SLO (hi)."""

    state: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    why: np.ndarray  # the binding at the last failing evaluation (object)
    probed: np.ndarray  # evaluated at the lightest load (the most replicas)
    missed: np.ndarray  # last failed on something but capacity (a light-load probe tells whether any count helps)
    seen: dict[str, np.ndarray]  # SLO field -> its value at the lightest load evaluated (for "nothing meets it")
    e2e: np.ndarray  # mean end-to-end latency at hi (a tie-break)
    evaluations: int = 0
    passes: int = 0
    pruned: dict[str, int] = field(default_factory=lambda: {"weights": 0, "gpu_type": 0, "top": 0})


# -- the search -----------------------------------------------------------------------------------

def max_replicas(space: Space) -> int:
    return MAX_REPLICAS if space.open_loop else min(space.users, MAX_REPLICAS)


def search(space: Space, slo: dict[str, float], headroom: float, shown: int = DEFAULT_SHOWN) -> Outcome:
    """The fewest replicas of every configuration that can be among the ``shown`` best GPU types
    (state DECIDED, the count in ``hi``); the others are DROPPED (cannot meet the SLO) or PRUNED."""
    size = space.size
    out = Outcome(state=np.zeros(size, dtype=np.int8), lo=np.zeros(size, dtype=np.int64), hi=np.zeros(size, dtype=np.int64),
                  why=np.full(size, None, dtype=object), probed=np.zeros(size, dtype=bool), missed=np.zeros(size, dtype=bool),
                  seen={k: np.full(size, np.nan) for k in SLO_FIELDS}, e2e=np.full(size, np.inf))
    gpu = space.gpu
    usable = (1.0 - headroom) * np.array([float(g.data["memory_gib"]) for g in space.gpus])[gpu]
    weights = _weights_per_pair(space)
    if weights is not None:
        heavy = np.nan_to_num(weights[space.pair], nan=0.0) / space.n / GIB > usable + WEIGHT_MARGIN_GIB
        out.state[heavy] = DROPPED
        out.why[heavy] = "memory"
        out.pruned["weights"] = int(heavy.sum())
    r_max = max_replicas(space)
    price = price_per_config(space)
    best = Incumbents(len(space.gpus))
    # Priced GPU types first: their answers bound the unpriced ones, which rank after them.
    for phase in (~np.isnan(price), np.isnan(price)):
        active = np.flatnonzero(phase & (out.state == PENDING))
        level = 1
        while True:
            active = active[out.state[active] == PENDING]
            if not len(active):
                break
            least = space.n[active] * (out.lo[active] + 1)
            probe = ~out.probed[active] & out.missed[active]  # first ask whether any count helps
            now = ~probe & (least <= level)
            if not now.any() and not probe.any():
                level = max(level * 4, int(least.min()))
                continue
            rows, replicas = _candidates(space, out, active[now], level, r_max)
            light = active[probe]
            rows = np.concatenate([rows, light])
            replicas = np.concatenate([replicas, np.full(len(light), r_max, dtype=np.int64)])
            decided = _evaluate(space, out, rows, replicas, slo, headroom, r_max)
            if best.update(space, out, decided):
                _prune(space, out, price, shown, best, active[out.state[active] == PENDING])
    return out


class Incumbents:
    """Each GPU type's best decided configuration so far: its GPU count and quality."""

    def __init__(self, n_types: int):
        self.total = np.full(n_types, np.iinfo(np.int64).max)
        self.qw = np.full(n_types, -np.inf)
        self.qkv = np.full(n_types, -np.inf)

    def update(self, space: Space, out: Outcome, rows: np.ndarray) -> bool:
        """Take newly decided rows into account; True if some GPU type's best improved."""
        if not len(rows):
            return False
        g = space.gpu[rows]
        total = space.n[rows] * out.hi[rows]
        qw, qkv = space.quality[rows, 0], space.quality[rows, 1]
        better = (total < self.total[g]) | ((total == self.total[g])
                                            & ((qw > self.qw[g]) | ((qw == self.qw[g]) & (qkv > self.qkv[g]))))
        if not better.any():
            return False
        rows, g, total, qw, qkv = rows[better], g[better], total[better], qw[better], qkv[better]
        order = np.lexsort((-qkv, -qw, total, g))[::-1]  # the best of each type written last
        self.total[g[order]] = total[order]
        self.qw[g[order]] = qw[order]
        self.qkv[g[order]] = qkv[order]
        return True


#: Replica counts tried in one batch for a configuration with a count known to meet the SLO.
POINTS = 8


def _candidates(space: Space, out: Outcome, rows: np.ndarray, level: int, r_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Replica counts to try: the next count above the last that failed (the capacity bound usually
    put it where the answer is); where a count is known to meet the SLO, POINTS counts spread evenly
    below it (a POINTS-ary search instead of bisection: fewer batches, a few more rows)."""
    lo, hi = out.lo[rows], out.hi[rows]
    known = hi > 0
    width = np.where(known, hi - 1 - lo, 1)  # counts left to try: lo + 1 .. hi - 1 (or just lo + 1)
    j = np.arange(POINTS, dtype=np.int64)
    cand = lo[:, None] + np.maximum(1, (width[:, None] * (j[None, :] + 1)) // POINTS)
    keep = cand <= (lo + width)[:, None]
    keep[:, 1:] &= cand[:, 1:] != cand[:, :-1]  # increasing: drop repeats
    r, c = np.nonzero(keep)
    return rows[r], np.minimum(cand[r, c], r_max)


def _weights_per_pair(space: Space) -> np.ndarray | None:
    """Weights on one GPU holding the whole model, per (runtime, format) pair; NaN for a pair where a
    variable the figure reads differs between the GPUs it runs on (no bound is taken for it). With n
    GPUs the busiest holds at least 1/n of them (pipeline stages hold whole layers, tensor
    parallelism splits every matrix)."""
    fs = space.cat.formulas
    inputs = {name for f in fs.plan(("weights_gpu_bytes",)) for name in f.inputs if name not in fs.formulas}
    if inputs & {"kv_bits", "kv_fp8", "users", "seqs", "mem_users", "mem_seqs", "request_rate", "batch_global", "micro_batch"}:
        return None
    plan = fs.plan(("weights_gpu_bytes",))
    names = {name for f in plan for name in f.inputs if name not in fs.formulas}
    columns = {name: np.array([p.base[name] for p in space.pairs], dtype=np.float64) for name in names}
    columns.update({"tp": 1, "pp": 1, "dp": 1, "num_gpus": 1})
    result = evaluate_batch(fs, columns, len(space.pairs), ("weights_gpu_bytes",))
    values = np.where(result.ok, result.column("weights_gpu_bytes"), np.nan)
    tables = space.tables()
    for name, piece in space.pieces.items():
        varying = [n for n in inputs if tables.get(n, ("scalar",))[0] == name]
        if not varying:
            continue
        rows = np.asarray(piece.of_combo, dtype=np.int64)
        for n in varying:
            col = tables[n][1][rows]
            first = np.full(len(space.pairs), np.nan)
            first[space.combo_pair[::-1]] = col[::-1]  # the value at each pair's first combination
            values[np.unique(space.combo_pair[col != first[space.combo_pair]])] = np.nan
    return values


def targets(cat: Catalog) -> tuple[str, ...]:
    return tuple(c.output for c in cat.formulas.components("inference")) + SERVING_TARGETS


def _evaluate(space: Space, out: Outcome, rows: np.ndarray, replicas: np.ndarray, slo: dict[str, float],
              headroom: float, r_max: int) -> np.ndarray:
    """One batch: every row at its replica count; then each row's bounds move. Returns the rows decided."""
    cat = space.cat
    result = evaluate_batch(cat.formulas, space.columns(rows, replicas), len(rows), targets(cat))
    figs = verdict_figures(cat, result)
    why = binding_of(figs, headroom, slo)
    why[~result.ok] = "configuration"
    out.evaluations += len(rows)
    out.passes += 1
    light = replicas == r_max
    out.probed[rows[light]] = True
    order = np.argsort(replicas, kind="stable")  # ascending counts: where rows repeat, the largest count writes last
    rows, replicas, why, light = rows[order], replicas[order], why[order], light[order]
    e2e = figs["e2e_latency_ms"][order]
    for key in slo:
        lighter = light | ~out.probed[rows]
        out.seen[key][rows[lighter]] = figs[key][order][lighter]
    met = np.equal(why, None)
    best = np.full(out.hi.shape, np.iinfo(np.int64).max)
    np.minimum.at(best, rows[met], replicas[met])
    first_met = met & (replicas == best[rows])
    take = first_met & ((out.hi[rows] == 0) | (replicas < out.hi[rows]))
    out.hi[rows[take]] = replicas[take]
    out.e2e[rows[take]] = np.nan_to_num(e2e[take], nan=np.inf)
    fail = ~met & (replicas < best[rows])  # a failure above a count that meets it says nothing more
    r_fail = rows[fail]
    np.maximum.at(out.lo, r_fail, replicas[fail])
    out.why[r_fail] = why[fail]
    # Anything but capacity (whose bound below sets the next count) sends the configuration to the
    # lightest load first: if even that fails, no count helps; if not, the count lies between.
    out.missed[r_fail] = why[fail] != "capacity"
    # What no replica count mends: a configuration that cannot run, a KV cache that holds no sequence,
    # memory that does not depend on the load (an open loop, or a preallocated pool), or a miss at the
    # lightest load.
    max_running = result.column("srv_max_running")[order]
    prealloc = (result.column("rt_kv_preallocate") != 0)[order]
    hopeless = ~met & ((why == "configuration") | (max_running < 1) | light
                       | ((why == "memory") & (space.open_loop | prealloc)))
    out.state[rows[hopeless]] = DROPPED
    out.why[rows[hopeless]] = why[hopeless]
    # The capacity bound: the fewest replicas below capacity (open loop), or with every client admitted
    # (closed loop, a pool of fixed size): the count starts there.
    if space.open_loop:
        cap = result.column("srv_capacity_seq_rate")[order]
        floor = _fewest_below_capacity(space.rate, space.batch, cap)
        raise_to = np.where(fail & (cap > 0), floor - 1, 0)
    else:
        per = np.floor(max_running / space.batch)
        need = np.where(per >= 1, -(-space.users // np.maximum(per, 1)).astype(np.int64), r_max + 1)
        raise_to = np.where(fail & prealloc & (why != "memory"), need - 1, 0)
    np.maximum.at(out.lo, rows, raise_to)
    live = np.unique(rows[out.state[rows] == PENDING])
    lo, hi = out.lo[live], out.hi[live]
    decided = live[(hi > 0) & (hi - lo <= 1)]
    out.state[decided] = DECIDED
    out.state[live[(hi == 0) & (lo >= r_max)]] = DROPPED
    return decided


def verdict_figures(cat: Catalog, result: BatchResult) -> dict[str, np.ndarray]:
    """What :func:`vramplan.verdict.binding` reads, for every row, as the response shows it: the memory
    figures, the load, queued requests and limiting cap, and the latencies (ms, 2 decimals; NaN past capacity)."""
    figs = memory_figures(cat, "inference", result)
    column = result.column
    past = column("srv_past_capacity") != 0
    with np.errstate(all="ignore"):
        for key, formula in (("ttft_ms", "srv_ttft_s"), ("itl_ms", "srv_itl_s"), ("e2e_latency_ms", "srv_e2e_s")):
            figs[key] = np.where(past, np.nan, round_like_python(column(formula) * 1000, 2))
        figs["queued_requests"] = np.where(past, np.nan, round_like_python(column("srv_queued"), 2))
    figs["open_loop"] = column("srv_open_loop") != 0
    codes = column("srv_limited_code").astype(np.int64)
    words = np.array([LIMITED_BY.get(int(c), "") for c in range(int(codes.max(initial=0)) + 1)], dtype=object)
    figs["limited_by"] = words[codes]
    return figs


def binding_of(figs: dict[str, np.ndarray], headroom: float, slo: dict[str, float]) -> np.ndarray:
    """:func:`vramplan.verdict.binding` for every row (None where nothing binds)."""
    n = len(figs["memory_status"])
    status, vram, cap = figs["memory_status"], figs["vram_usage"], figs["capacity_gib"]
    out = np.full(n, None, dtype=object)
    for key, limit in reversed(list(slo.items())):  # the first field named wins, as binding() reads them in order
        value = figs[key]
        out[np.isnan(value) | (value > limit)] = key
    queued = figs["queued_requests"]
    waiting = ~figs["open_loop"] & ~np.isnan(queued) & (np.nan_to_num(queued) != 0)
    out[waiting] = figs["limited_by"][waiting]
    out[figs["open_loop"] & np.isnan(figs["ttft_ms"])] = "capacity"
    out[np.isin(status, NOT_FITTING) | (vram > (1.0 - headroom) * cap + 1e-9)] = "memory"
    out[status == "error"] = "configuration"
    return out


def _fewest_below_capacity(rate: float, batch: int, cap_seq: np.ndarray) -> np.ndarray:
    """Smallest R with (rate / R) x batch below the capacity, computed as the formula computes it."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.floor(rate * batch / np.where(cap_seq > 0, cap_seq, np.inf))
    r = np.clip(np.nan_to_num(r, nan=0.0), 0, MAX_REPLICAS * 4).astype(np.int64) + 1
    for _ in range(2):  # the division rounds: settle on the exact boundary
        r = np.where((rate / r) * batch >= cap_seq, r + 1, r)
        r = np.where((r > 1) & ((rate / np.maximum(r - 1, 1)) * batch < cap_seq), r - 1, r)
    return r


def keys(price: np.ndarray, rows: np.ndarray, total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ranking's first two keys: (0, cost per hour) where the GPU has a price, else (1, GPUs)."""
    p = price[rows]
    priced = ~np.isnan(p)
    return np.where(priced, 0, 1), np.where(priced, p * total, total)


def _prune(space: Space, out: Outcome, price: np.ndarray, shown: int, best: Incumbents, rows: np.ndarray) -> None:
    """Set aside pending configurations ``rows`` that cannot change the answer: more GPUs than their GPU
    type's best so far even at their fewest possible replicas (or as many at lower quality), or a lower
    bound worse than the ``shown``-th best GPU type so far."""
    if not len(rows):
        return
    g = space.gpu[rows]
    least = space.n[rows] * (out.lo[rows] + 1)
    a_qw, a_qkv = space.quality[rows, 0], space.quality[rows, 1]
    total = best.total[g]
    own = (least > total) | ((least == total) & ((a_qw < best.qw[g]) | ((a_qw == best.qw[g]) & (a_qkv < best.qkv[g]))))
    out.state[rows[own]] = PRUNED
    out.pruned["gpu_type"] += int(own.sum())
    known = np.flatnonzero(best.total < np.iinfo(np.int64).max)
    if len(known) < shown:
        return
    type_price = np.array([np.nan if p.usd is None else p.usd for p in space.prices])[known]
    b_group = np.where(np.isnan(type_price), 1, 0)
    b_value = np.where(np.isnan(type_price), best.total[known], type_price * best.total[known])
    kth = np.lexsort((b_value, b_group))[shown - 1]
    k_group, k_value = b_group[kth], b_value[kth]
    rows, least = rows[~own], least[~own]
    p = price[rows]
    r_group = np.where(np.isnan(p), 1, 0)
    r_value = np.where(np.isnan(p), least, p * least)
    beyond = (r_group > k_group) | ((r_group == k_group) & (r_value > k_value * (1 + 1e-12)))
    out.state[rows[beyond]] = PRUNED
    out.pruned["top"] += int(beyond.sum())


def price_per_config(space: Space) -> np.ndarray:
    """Each configuration's price per GPU-hour (NaN where its GPU has none)."""
    return np.array([np.nan if p.usd is None else p.usd for p in space.prices])[space.gpu]
