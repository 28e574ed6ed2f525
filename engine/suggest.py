"""What would make it fit: suggestions for an estimate that does not fit, or fits with little headroom.

A layer above the pipeline, beside the planner: :func:`estimate` runs one estimate
(:func:`vramplan.answer.estimate`) and, when its ``memory_status`` is ``insufficient`` or ``error`` (or
``very_high``, for headroom, except on a runtime that preallocates its KV pool to a share of the GPU
by design), or when its load does not all run (an open loop past capacity, a closed loop whose requests
queue: :func:`load_waits`; then with no memory headroom asked), adds ``suggestions``. The faces
(:mod:`vramplan`'s Python functions, hence the CLI, the HTTP API, the page and the reports) call this
module; the pipeline never does, and the planner's own searches run the bare pipeline, so nothing here
recurses.

**Every suggestion is found by the planner and checked by an estimate, never guessed.** Each is a
``change`` (request fields to set; :func:`apply_change` says how a change merges into a request)
whose estimate *fits* in the planner's sense (:func:`vramplan.planner.fits`): not ``insufficient``
nor ``error``, and for a ``very_high`` request at most 90 % of the GPU (the seed's ``high`` threshold),
so that a suggestion for headroom really leaves some.

Candidates, each the smallest step of its kind that fits (planner searches: gallop + bisect):

- inference: a lower-precision KV cache; the best weight format that fits (``best_quantization``);
  fewer layers on the GPU (``num_offload_layers``, the fewest offloaded); tensor parallelism over the
  fewest GPUs up to :data:`MAX_GPUS`; a shorter context, a smaller batch, fewer users (``max_*``); the
  catalog GPU with the least memory that fits (the same vendor and category first, then the same vendor's
  cards: the same software stack); lower weight formats on 2, 4 or 8 GPUs (the best format per count); for an
  open loop past capacity, the fewest slots that sustain it on a runtime that sizes its cache by the request
  (``runtime_settings.max_num_seqs``, llama-server's ``--parallel``), the highest rate the deployment sustains
  (``max_request_rate``) and copies of the deployment behind a load balancer;
- fine-tuning: gradient checkpointing, an 8-bit (then paged 8-bit) optimizer, more gradient
  accumulation at the same global batch, LoRA or QLoRA instead of full fine-tuning (QLoRA instead of
  LoRA), a lower full-fine-tuning precision, ZeRO stages on several GPUs, optimizer offloading,
  more GPUs (ZeRO-3 for full fine-tuning), a smaller batch or context, another GPU;
- fine-tuning: memory savers stacked (checkpointing, a paged 8-bit optimizer, micro-batch 1, LoRA,
  QLoRA), the shortest stack that fits, else the whole stack on the fewest GPUs.

**A pinned pool** (``runtime_settings.kv_pool_tokens``, the pool a deployment's log states) belongs to that
deployment: candidates that change only the load or the lengths keep it; the others are other deployments, estimated
with what the pin measured - the estimate's own pool less the logged one, kept as non-torch memory - in their
``runtime_settings``.

**Cheapest first.** Each suggestion says what it costs, and ``keeps`` multiplies what is left of the
request: quality (the changed format's ``quality_rank`` over the old one's, catalog
``quantization/formats.yaml``), speed (decode ``per_user_tps`` or ``training_tps`` after over before,
at most 1: a faster result costs nothing), workload (context, batch or users kept, after over
before) and hardware (GPU memory before over after, the memory bought standing in for money, which
the catalog does not price). Suggestions are listed by ``keeps``, highest first; at most
:data:`MAX_SUGGESTIONS`.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

from .catalog import Catalog, get_catalog
from .errors import VramplanError
from .answer import estimate as run
from . import formatrules
from .formatrules import finetuning_weights
from .request import context_change, validate
from .resolve import splits_layers
from .search import Probe, capacity_gib, search_min
from .verdict import fits

#: memory_status → headroom the suggestion must leave (very_high is over 90 %: reach the "high" band).
TARGETS = {"insufficient": 0.0, "error": 0.0, "very_high": 0.10}
#: Suggestions listed at most.
MAX_SUGGESTIONS = 6
#: Most GPUs a suggestion adds up to: one node (DGX/HGX H100 and B200 systems hold 8 GPUs on one
#: NVLink/NVSwitch fabric; tensor parallelism beyond a node crosses a slower network).
MAX_GPUS = 8
#: Most copies of a deployment a suggestion spreads an open loop's arrivals over (beyond, the planner's
#: cheapest_deployment prices the fleet).
MAX_REPLICAS = 64
#: Most sequences a slots suggestion gives a runtime that sizes its cache by the request (llama-server's --parallel
#: has no cap of its own; the memory of so many contexts binds first on every catalog GPU but the largest).
MAX_SLOTS = 512
#: Request fields a change may set and still run the deployment whose KV pool a request pins to what its log states
#: (runtime_settings.kv_pool_tokens): the load and the lengths. Any other change is another deployment, whose pool
#: its memory decides, and is estimated without the pin.
SAME_POOL = frozenset({"request_rate", "concurrent_users", "batch_size", "seq_length", "input_tokens", "output_tokens"})
#: Planner questions that search the load or the lengths (the pinned pool stays); the others search the deployment.
SAME_POOL_QUESTIONS = frozenset({"max_request_rate", "max_concurrent_users", "max_batch_size", "max_seq_length"})
#: Fine-tuning methods in the order a memory-bound user steps down (full → LoRA → QLoRA).
METHOD_STEPS = {"full": ("lora", "qlora"), "lora": ("qlora",), "qlora": ()}
#: GPU counts a lower weight format is tried on with tensor parallelism: the sizes that split the attention
#: heads of common models evenly (32, 64, 128 heads) and that serving stacks run (vLLM/SGLang --tp 2, 4, 8).
TP_SIZES = (2, 4, 8)
#: GPU categories one buys or rents as a card or a server GPU (not an edge module or a laptop/desktop SoC).
CARD_CATEGORIES = ("consumer", "workstation", "datacenter")
METHOD_LABEL = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}


def apply_change(body: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """The request with a suggestion's ``change`` applied: fields replaced, ``optimization_config`` merged."""
    out = dict(body)
    for key, value in change.items():
        if key == "optimization_config":
            out[key] = {**(body.get(key) or {}), **value}
        else:
            out[key] = value
    return out


def estimate(body: dict[str, Any], workload: str, catalog: Catalog | None = None, *, strict: bool = False) -> dict[str, Any]:
    """One estimate, with ``suggestions`` when it does not fit or fits with little headroom (``strict``: refuse
    unknown fields, as :func:`vramplan.answer.estimate` does)."""
    return add_suggestions(body, workload, run(body, workload, catalog, strict=strict), catalog)


def memory_needs_suggestions(out: dict[str, Any]) -> bool:
    """Does the memory call for suggestions? Not when it fits with headroom, nor when it is ``very_high`` on a
    runtime that preallocates its KV pool (vLLM, SGLang, TensorRT-LLM, TGI: the response's ``kv_pool``), which
    fills the GPU to its memory-utilization setting by design: there very_high is the normal state."""
    status = out["memory_status"]
    return status in TARGETS and not (status == "very_high" and "kv_pool" in out)


def load_waits(out: dict[str, Any]) -> bool:
    """Does the load not all run - an open loop past capacity (null latencies), or a closed loop some of whose
    requests queue behind the runtime's admission (its KV pool, max_num_seqs, token budget)? The planner does not
    call that fitting (:func:`vramplan.verdict.binding`), whatever the memory."""
    srv = out.get("serving")
    if not srv:
        return False
    if srv["load"] == "open_loop":
        return srv["ttft_ms"] is None
    return bool(srv["queued_requests"])


def needs_suggestions(out: dict[str, Any]) -> bool:
    """Does this response get ``suggestions``? When the memory calls for them (:func:`memory_needs_suggestions`)
    or the load does not all run (:func:`load_waits`)."""
    return memory_needs_suggestions(out) or load_waits(out)


def add_suggestions(body: dict[str, Any], workload: str, out: dict[str, Any], catalog: Catalog | None = None) -> dict[str, Any]:
    """``out`` (the pipeline's response to ``body``) with ``suggestions`` where :func:`needs_suggestions`."""
    if needs_suggestions(out):
        out["suggestions"] = suggestions(body, workload, out, catalog)
    return out


def suggestions(body: dict[str, Any], workload: str, out: dict[str, Any], catalog: Catalog | None = None) -> list[dict]:
    """Changes that make ``body`` fit, cheapest first (see the module docstring)."""
    cat = catalog or get_catalog()
    search = _Search(body, workload, out, cat)
    if search.hopeless():
        return []
    if workload == "inference":
        found = search.inference()
    else:
        found = search.finetuning()
        found += search.combinations(found)
    unique: dict[str, dict] = {}
    for s in found:
        unique.setdefault(repr(sorted(s["change"].items())), s)
    ranked = sorted(unique.values(), key=lambda s: (-s["keeps"], len(s["change"]), s["vram_usage"]))
    return ranked[:MAX_SUGGESTIONS]


class _Search:
    """The candidate changes for one request, each estimated once."""

    def __init__(self, body: dict[str, Any], workload: str, out: dict[str, Any], cat: Catalog):
        self.body = {k: v for k, v in body.items() if k != "trace"}
        self.workload, self.out, self.cat = workload, out, cat
        # the headroom a memory verdict asks for; none where only the load does not run (the memory is fine)
        self.headroom = TARGETS[out["memory_status"]] if memory_needs_suggestions(out) else 0.0
        self.capacity = capacity_gib(self.body, cat)
        self.req = validate(self.body, workload)  # defaults applied: the "before" of every change
        # the split the estimate ran: a runtime without pipeline parallelism (TGI) takes tensor where the request leaves
        # inference_parallelism out (resolve._layer_split), and pipeline is no change to offer it
        rt = out.get("runtime") if workload == "inference" else None
        self.layered = splits_layers(cat.runtimes.get(rt)) if rt in cat.runtimes else True
        if not self.layered and self.req.get("inference_parallelism") == "pipeline":
            self.req = {**self.req, "inference_parallelism": "tensor"}
        self.speed_field = "per_user_tps" if workload == "inference" else "training_tps"
        self._pin: dict[str, Any] | None = None  # runtime_settings for other deployments under a pinned pool
        self._model_ceiling: formatrules.Ceiling | None = None  # what formats keep of this model (_ceiling)

    # -- a bound first ---------------------------------------------------------------------------
    def hopeless(self) -> bool:
        """True when even every lever at its most frugal at once does not fit, so no suggestion can.

        Memory falls with each lever (the planner's searches rely on the same monotonicity), so the
        request with all of them at their extreme is a lower bound for every suggestion: inference on
        :data:`MAX_GPUS` of the catalog's largest GPU in its lowest-quality weight format and smallest KV
        format, one sequence of one token (pipeline parallelism: no head-divisibility error), and, for
        the offloading suggestion, the request with every layer offloaded; fine-tuning with QLoRA,
        checkpointing, a paged 8-bit optimizer, micro-batch 1, optimizer offloading and ZeRO-3 over
        :data:`MAX_GPUS` of the largest GPU. Only ``insufficient`` counts: a bound that cannot run
        (``error``, a refused request) proves nothing, and the full search runs. Two estimates, which
        spare a hopeless request (a model far beyond any node) the hundreds a search would take."""
        largest = max((e for e in self.cat.gpus if not e.data.get("custom")), key=lambda e: e.data.get("memory_gib") or 0)
        base = {k: v for k, v in self._base(True).items() if k != "custom_vram"}
        base.update({"gpu_key": largest.key, "num_gpus": MAX_GPUS, "seq_length": 1, "batch_size": 1})
        for f in ("input_tokens", "output_tokens", "micro_batch_size", "request_rate"):
            base.pop(f, None)
        if self.workload == "inference":
            formats = [e for e in self.cat.quantization if e.data.get("kind") != "alias"]
            lowest = min(formats, key=lambda e: e.data["quality_rank"])
            kv = min((e for e in formats if "kv_cache_bits" in e.data), key=lambda e: e.data["kv_cache_bits"])
            # pipeline: no head-divisibility error; a runtime without it (TGI) takes its tensor split
            split = {"inference_parallelism": "pipeline" if self.layered else "tensor"}
            bounds = [{**base, "quantization": lowest.key, "kv_cache_quantization": kv.key, "concurrent_users": 1,
                       **split, "enable_offloading": False}]
            arch = self._arch()
            if arch is not None:
                bounds.append({**self._base(True), "enable_offloading": True, "num_offload_layers": arch.num_layers, **split})
        else:
            bounds = [{**base, "finetuning_method": "qlora", "optimizer": "paged_adamw_8bit", "enable_offloading": True,
                       "gradient_accumulation_steps": 1,
                       "optimization_config": {**(self.body.get("optimization_config") or {}),
                                               "gradient_checkpointing": True, "zero_stage": 3}}]
        for body in bounds:
            try:
                result = run(body, self.workload, self.cat)
            except VramplanError:
                return False
            if result["memory_status"] != "insufficient":
                return False
        return True

    # -- one candidate -------------------------------------------------------------------------
    def _base(self, deployment_changes: bool) -> dict[str, Any]:
        """The request a candidate starts from: where the candidate changes the deployment (:data:`SAME_POOL`), its
        pinned pool (runtime_settings.kv_pool_tokens) gives way to what the pin measured (:meth:`_unpinned`)."""
        settings = self.body.get("runtime_settings") or {}
        if not deployment_changes or "kv_pool_tokens" not in settings:
            return self.body
        return {**self.body, "runtime_settings": self._unpinned()}

    def _unpinned(self) -> dict[str, Any]:
        """runtime_settings for another deployment than the one whose pool the request pins
        (:func:`vramplan.planner.unpinned_settings`), estimated once."""
        if self._pin is None:
            from .planner import unpinned_settings

            self._pin = unpinned_settings(self.body, self.workload, self.cat)
        return self._pin

    def _changed(self, change: dict[str, Any]) -> dict[str, Any]:
        """The request with ``change`` applied, from :meth:`_base`."""
        return apply_change(self._base(bool(set(change) - SAME_POOL)), change)

    def _estimate(self, change: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return run(self._changed(change), self.workload, self.cat)
        except VramplanError:
            return None

    def _fits(self, result: dict[str, Any] | None, change: dict[str, Any]) -> bool:
        if result is None:
            return False
        capacity = capacity_gib(apply_change(self.body, change), self.cat)
        return fits(result, capacity, self.headroom)

    def suggest(self, change: dict[str, Any], summary: str, result: dict[str, Any] | None = None,
                **cost: Any) -> dict[str, Any] | None:
        """A suggestion if ``change`` fits (estimating it unless ``result`` is given), else None. A change of the
        deployment under a pinned pool says so: its ``runtime_settings`` leave the pin out (:meth:`_base`)."""
        settings = self.body.get("runtime_settings") or {}
        if "kv_pool_tokens" in settings and set(change) - SAME_POOL and "runtime_settings" not in change:
            change = {**change, "runtime_settings": self._unpinned()}
        result = result if result is not None else self._estimate(change)
        if not self._fits(result, change):
            return None
        return self._describe(change, summary, result, cost)

    def _describe(self, change, summary, result, cost) -> dict[str, Any]:
        before, after = self.out.get(self.speed_field), result.get(self.speed_field)
        keeps = 1.0
        costs: dict[str, Any] = {}
        if before and after is not None:
            costs["speed"] = {"field": self.speed_field, "before": before, "after": after}
            keeps *= min(1.0, after / before)
        for name in ("quality_rank", "workload"):
            if name in cost:
                c = cost[name]
                costs[name] = c
                if c["before"]:
                    keeps *= min(1.0, c["after"] / c["before"])
        gpus_before = int(self.req["num_gpus"])
        gpus_after = int(change.get("num_gpus", gpus_before)) * int(cost.get("replicas", 1))
        cap_after = capacity_gib(apply_change(self.body, change), self.cat)
        mem_before, mem_after = gpus_before * self.capacity, gpus_after * cap_after
        if (gpus_after, cap_after) != (gpus_before, self.capacity):
            costs["gpus"] = {"before": gpus_before, "after": gpus_after}
            costs["gpu_memory_gib"] = {"before": round(mem_before, 2), "after": round(mem_after, 2)}
            if mem_after > mem_before:
                keeps *= mem_before / mem_after
        return {"change": change, "summary": summary, "vram_usage": result["vram_usage"],
                "actual_vram_percentage": result["actual_vram_percentage"], "memory_status": result["memory_status"],
                "cost": costs, "keeps": round(keeps, 3)}

    def _plan(self, question: str, extra: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The planner's answer to one question about the request (+ ``extra`` fields), or None."""
        from .planner import plan as planner_plan  # the planner (and numpy) only when a suggestion is searched

        try:
            base = self._base(question not in SAME_POOL_QUESTIONS or bool(set(extra or {}) - SAME_POOL))
            answers = planner_plan({**base, **(extra or {}), "workload": self.workload, "find": [question],
                                    "headroom": self.headroom}, self.cat)
        except VramplanError:
            return None
        answer = answers[question]
        return answer if answer.get("value") is not None else None

    def _rank(self, key: str) -> float:
        """A weights format's quality_rank; for inference, what it keeps of this model (at most its checkpoint's:
        formatrules.Ceiling)."""
        return self._ceiling().weights_rank(self.cat.quantization.get(key))

    def _kv_rank(self, key: str) -> float:
        return self._ceiling().kv_rank(self.cat.quantization.get(key))

    def _ceiling(self) -> formatrules.Ceiling:
        if self.workload != "inference":
            return formatrules.NO_CEILING  # training precision is not capped: fp32 master weights train better
        if self._model_ceiling is None:
            from .planner import model_ceiling
            self._model_ceiling = model_ceiling(self.cat, self.body, self.req)
        return self._model_ceiling

    def _label(self, key: str) -> str:
        entry = self.cat.quantization.get(key)
        return str(entry.data.get("label") or key).split(" (")[0]

    # -- shared candidates ---------------------------------------------------------------------
    def _shrink(self, question: str, field: str, noun: str) -> dict | None:
        """A shorter context / smaller batch / fewer users: the largest value that fits."""
        before = int(self.req[field])
        if before <= 1:
            return None
        answer = self._plan(question)
        if answer is None or answer["value"] >= before:
            return None
        value = answer["value"]
        change = context_change(self.body, value) if field == "seq_length" else {field: value}
        return self.suggest(change, f"{noun} {value:,} instead of {before:,}", answer["estimate"],
                            workload={"field": field, "before": before, "after": value})

    def _more_gpus(self, extra: dict[str, Any], how: str) -> dict | None:
        answer = self._plan("min_num_gpus", extra)
        if answer is None or answer["value"] > MAX_GPUS or answer["value"] == int(self.req["num_gpus"]):
            return None
        n = answer["value"]
        return self.suggest({"num_gpus": n, **extra}, f"{n} GPUs {how}", answer["estimate"])

    def _other_gpu(self) -> dict | None:
        """The catalog GPU with the least memory that fits, the fastest of those (the same vendor and category
        first, then the same vendor's cards: the same software stack; then any).

        GPUs are estimated in order of memory, a tier at a time, and the search stops at the first memory
        size where one fits: that is the answer the whole catalog would give, usually after a few estimates.
        Not offered when the request sizes its own memory (``custom_vram``): the user named their card."""
        if self.req.get("custom_vram") is not None:
            return None
        here = self.cat.gpus.get(self.req["gpu_key"]).data

        def tier(g: dict) -> int:
            if g.get("vendor") == here.get("vendor") and g.get("category") == here.get("category"):
                return 0
            return 1 if g.get("vendor") == here.get("vendor") and g.get("category") in CARD_CATEGORIES else 2

        candidates = [e for e in self.cat.gpus if not e.data.get("custom") and e.key != self.req["gpu_key"]]
        for t in (0, 1, 2):
            sizes: dict[float, list] = {}
            for e in candidates:
                if tier(e.data) == t:
                    sizes.setdefault(float(e.data.get("memory_gib") or 0.0), []).append(e)
            for size in sorted(sizes):
                fitting = []
                for e in sizes[size]:
                    change = {"gpu_key": e.key}
                    result = self._estimate(change)
                    if self._fits(result, change):
                        fitting.append((result.get(self.speed_field) or 0.0, e, change, result))
                if fitting:
                    _, e, change, result = max(fitting, key=lambda f: (f[0], f[1].key))
                    gpu = e.data
                    return self.suggest(change, f"{gpu['label']} ({gpu['memory_gib']:g} GiB) instead", result)
        return None

    # -- inference -----------------------------------------------------------------------------
    def inference(self) -> list[dict]:
        req, found = self.req, []
        runtime = self.out.get("runtime")
        kv_now = req["kv_cache_quantization"]
        kv_bits = self.cat.quantization.get(kv_now).data.get("kv_cache_bits", 16)
        kv_formats = sorted((e for e in formatrules.runtime_formats(self.cat, runtime)
                             if e.data.get("kv_cache_bits", 99) < kv_bits),
                            key=lambda e: -e.data["quality_rank"])
        for e in kv_formats:  # the best KV format that fits
            s = self.suggest({"kv_cache_quantization": e.key}, f"{self._label(e.key)} KV cache instead of "
                             f"{self._label(kv_now)}", quality_rank={"field": "kv_cache_quantization",
                                                                  "before": self._kv_rank(kv_now), "after": self._kv_rank(e.key)})
            if s:
                found.append(s)
                break
        best = self._plan("best_quantization")
        if best is not None and best["value"] != req["quantization"]:
            q = best["value"]
            found.append(self.suggest({"quantization": q}, f"{self._label(q)} weights (quality rank "
                                      f"{best['quality_rank']:g} instead of {self._rank(req['quantization']):g})",
                                      best["estimate"], quality_rank={"field": "quantization",
                                                                      "before": self._rank(req["quantization"]),
                                                                      "after": best["quality_rank"]}))
        found.append(self._offload())
        if req["inference_parallelism"] == "expert":  # a MoE model (resolve refuses a dense one): keep its split
            found.append(self._more_gpus({"inference_parallelism": "expert"}, "with attention data + expert parallelism"))
            if req["num_gpus"] > 1:
                found.append(self.suggest({"inference_parallelism": "tensor"}, "tensor instead of attention data + expert parallelism"))
        elif req["num_gpus"] == 1 or req["inference_parallelism"] == "tensor":
            found.append(self._more_gpus({"inference_parallelism": "tensor"}, "with tensor parallelism"))
        else:
            found.append(self._more_gpus({}, "with pipeline parallelism"))
            found.append(self.suggest({"inference_parallelism": "tensor"}, "tensor instead of pipeline parallelism"))
        if req["num_gpus"] > 1 and req["inference_parallelism"] == "tensor" and self.layered:
            found.append(self.suggest({"inference_parallelism": "pipeline"}, "pipeline instead of tensor parallelism"))
        found.append(self._shrink("max_seq_length", "seq_length", "a context of"))
        found.append(self._shrink("max_batch_size", "batch_size", "a batch of"))
        found.append(self._shrink("max_concurrent_users", "concurrent_users", "concurrent users:"))
        found.append(self._other_gpu())
        found.extend(self.quantized_on_more_gpus())
        if load_waits(self.out):
            found.append(self._slots())
            found.extend(self._rates())
        return [s for s in found if s]

    def _slots(self) -> dict | None:
        """An open loop past capacity on a runtime that sizes its cache by the request (no ``kv_pool``: llama.cpp,
        transformers), which serves it from ``runtime_settings.max_num_seqs`` slots (scenario.server_slots; one
        request at a time without): the fewest slots, a whole number of requests, that sustain the rate - a gallop
        and a bisection on requests held, more slots never serving fewer - if their memory fits."""
        if "kv_pool" in self.out or not self.req.get("request_rate") or self.out["serving"]["ttft_ms"] is not None:
            return None
        batch = int(self.req["batch_size"])
        settings = dict(self.body.get("runtime_settings") or {})
        now = max(int(settings.get("max_num_seqs") or 0) // batch, 1)
        seen: dict[int, dict[str, Any] | None] = {}

        def change(k: int) -> dict[str, Any]:
            return {"runtime_settings": {**settings, "max_num_seqs": k * batch}}

        def sustains(k: int) -> bool:
            if k not in seen:
                seen[k] = self._estimate(change(k))
            out = seen[k]
            return out is not None and out["memory_status"] != "error" and out["serving"]["ttft_ms"] is not None

        top = max(MAX_SLOTS // batch, 1)
        hi = search_min(SimpleNamespace(fits=sustains), now + 1, top) if now < top else None  # the planner's search
        if hi is None:
            return None
        n, before = hi * batch, now * batch
        how = f"llama-server --parallel {n}, " if self.out.get("runtime") == "llama.cpp" else ""
        return self.suggest(change(hi), f"{n} slots instead of {before} ({how}runtime_settings.max_num_seqs {n})", seen[hi])

    def _rates(self) -> list[dict | None]:
        """An open loop past capacity, from the highest arrival rate one deployment sustains (the planner's
        max_request_rate, m): that rate, what the load gives up; and the whole rate over k = ceil(rate / m) copies
        of the deployment behind a load balancer, each taking rate / k - the change is that per-copy load, its cost
        k times the GPUs."""
        before = self.req.get("request_rate")
        if not before:
            return []
        answer = self._plan("max_request_rate")
        if answer is None or answer["value"] >= before:
            return []
        value = answer["value"]
        found = [self.suggest({"request_rate": value}, f"{value:.3g} requests/s instead of {before:g}", answer["estimate"],
                              workload={"field": "request_rate", "before": before, "after": value})]
        k = math.ceil(before / value)
        if k <= MAX_REPLICAS:
            n = int(self.req["num_gpus"])
            digits = 3 - math.floor(math.log10(before / k))  # 4 significant digits, rounded up: k copies take it all
            per = math.ceil(before / k * 10 ** digits) / 10 ** digits
            found.append(self.suggest({"request_rate": per}, f"{k} copies of this deployment ({k * n} GPUs) behind a load "
                                      f"balancer, {per:.3g} requests/s each", replicas=k))
        return found

    def _offload(self) -> dict | None:
        """The fewest layers offloaded to the host that fit (none if the workload already offloads)."""
        req = self.req
        if req["enable_offloading"] and (req.get("num_offload_layers") or req.get("percentage_offload")):
            return None
        arch = self._arch()
        if arch is None:
            return None
        n_layers = arch.num_layers
        base = {**self._base(True), "enable_offloading": True}
        base.pop("percentage_offload", None)
        from .planner import estimator
        probe = Probe(estimator("inference", self.cat), base, "num_offload_layers", self.capacity, self.headroom)
        n = search_min(probe, 1, n_layers)
        if n is None:
            return None
        target = req["offload_target"].replace("cpu_ram", "CPU RAM").replace("nvme", "NVMe")
        return self.suggest({"enable_offloading": True, "num_offload_layers": n},
                            f"offload {n} of {n_layers} layers to {target}", probe.seen[n])

    def _arch(self):
        if self.req["llm_key"] == "custom":
            from .architecture import from_hf_config

            try:
                return from_hf_config(self.req.get("custom_model") or {}, where="custom_model")
            except VramplanError:
                return None
        return self.cat.architectures.get(self.req["llm_key"])

    # -- fine-tuning ---------------------------------------------------------------------------
    def finetuning(self) -> list[dict]:
        req, found = self.req, []
        opt = req["optimization_config"]
        method = req["finetuning_method"]
        if not opt.get("gradient_checkpointing"):
            found.append(self.suggest({"optimization_config": {"gradient_checkpointing": True}}, "gradient checkpointing"))
        if req["optimizer"] in ("adamw", "paged_adamw"):
            for optimizer, words in (("adamw_8bit", "8-bit AdamW"), ("paged_adamw_8bit", "paged 8-bit AdamW")):
                s = self.suggest({"optimizer": optimizer}, f"{words} optimizer instead of {req['optimizer']}")
                if s:
                    found.append(s)
                    break
        found.append(self._accumulate())
        base_rank = self._base_rank()
        for step in METHOD_STEPS[method]:
            s = self.suggest({"finetuning_method": step}, f"{METHOD_LABEL[step]} instead of {METHOD_LABEL[method]}",
                             quality_rank={"field": "finetuning_method", "before": base_rank,
                                           "after": self._rank(self._base_format(step))})
            if s:
                found.append(s)
                break
        if method == "full":
            best = self._plan("best_quantization")
            if best is not None and best["value"] != req["fine_tuning_quantization"]:
                q = best["value"]
                found.append(self.suggest({"fine_tuning_quantization": q}, f"full fine-tuning in {q} instead of "
                                          f"{req['fine_tuning_quantization']}", best["estimate"],
                                          quality_rank={"field": "fine_tuning_quantization", "before": base_rank,
                                                        "after": best["quality_rank"]}))
        if req["num_gpus"] > 1:
            for stage in range(int(opt.get("zero_stage", 0)) + 1, 4):
                s = self.suggest({"optimization_config": {"zero_stage": stage}}, f"ZeRO stage {stage} across "
                                 f"{req['num_gpus']} GPUs")
                if s:
                    found.append(s)
                    break
        if not req["enable_offloading"]:
            found.append(self.suggest({"enable_offloading": True}, "optimizer states offloaded to "
                                      + ("CPU RAM" if req["offload_target"] == "cpu_ram" else "NVMe")))
        extra = {"optimization_config": {**(self.body.get("optimization_config") or {}), "zero_stage": 3}} \
            if method == "full" else {}
        found.append(self._more_gpus(extra, "with ZeRO stage 3" if extra else "with data parallelism"))
        found.append(self._shrink("max_batch_size", "batch_size", "a batch of"))
        found.append(self._shrink("max_seq_length", "seq_length", "a sequence length of"))
        found.append(self._other_gpu())
        return [s for s in found if s]

    def _accumulate(self) -> dict | None:
        """More gradient accumulation at the same global batch: a smaller micro-batch per GPU."""
        req = self.req
        if req.get("micro_batch_size") is not None:
            return None
        accum, per_step = int(req["gradient_accumulation_steps"]), int(req["num_gpus"])
        most = int(req["batch_size"]) // per_step
        if most <= accum:
            return None
        from .planner import estimator
        probe = Probe(estimator("finetuning", self.cat), self.body, "gradient_accumulation_steps", self.capacity,
                      self.headroom)
        n = search_min(probe, accum + 1, most)
        if n is None:
            return None
        micro = -(-int(req["batch_size"]) // (n * per_step))
        return self.suggest({"gradient_accumulation_steps": n}, f"{n} gradient accumulation steps (micro-batch "
                            f"{micro}, the same global batch of {req['batch_size']})", probe.seen[n])

    # -- combinations --------------------------------------------------------------------------
    def quantized_on_more_gpus(self) -> list[dict]:
        """Lower weight formats on more GPUs (tensor parallelism over :data:`TP_SIZES`): for each GPU count,
        the best format that fits on it (Q4_K_M on two cards, not only IQ2_XXS on one). Each count only
        tries formats better than the one a smaller count needed, so the whole scan is about one pass
        over the formats."""
        from .planner import _quant_candidates
        _, ranked, _ = _quant_candidates(self.body, "inference", self.cat, self.req, self._ceiling())
        before = self._rank(self.req["quantization"])
        ranked = [q for q in ranked if self._rank(q) < before]
        found, floor = [], None  # floor: the rank the previous (smaller) GPU count reached
        for n in TP_SIZES:
            if n <= int(self.req["num_gpus"]):
                continue
            for q in ranked:
                if floor is not None and self._rank(q) <= floor:
                    break
                change = {"quantization": q, "num_gpus": n, "inference_parallelism": "tensor"}
                s = self.suggest(change, f"{self._label(q)} weights on {n} GPUs with tensor parallelism",
                                 quality_rank={"field": "quantization", "before": before, "after": self._rank(q)})
                if s:
                    found.append(s)
                    floor = self._rank(q)
                    break
        return found

    def combinations(self, singles: list[dict]) -> list[dict]:
        """Fine-tuning: memory savers stacked in the order a practitioner adds them, the shortest stack
        (of two or more) that fits and holds no single suggestion already made; else all of them on the
        fewest GPUs."""
        req, change, words = self.req, {}, []
        rank = None
        steps = []
        if not req["optimization_config"].get("gradient_checkpointing"):
            steps.append(({"optimization_config": {"gradient_checkpointing": True}}, "gradient checkpointing", None))
        if req["optimizer"] in ("adamw", "paged_adamw"):
            steps.append(({"optimizer": "paged_adamw_8bit"}, "a paged 8-bit AdamW optimizer", None))
        per_step = int(req["num_gpus"])
        most = int(req["batch_size"]) // per_step
        if req.get("micro_batch_size") is None and most > int(req["gradient_accumulation_steps"]):
            steps.append(({"gradient_accumulation_steps": most}, f"{most} gradient accumulation steps (micro-batch 1)",
                          None))
        before = self._base_rank()
        for method in METHOD_STEPS[req["finetuning_method"]]:
            steps.append(({"finetuning_method": method}, METHOD_LABEL[method],
                          {"field": "finetuning_method", "before": before,
                           "after": self._rank(self._base_format(method))}))
        for step, text, quality in steps:
            change = apply_change(change, step)
            words.append(text)
            rank = quality or rank
            if len(words) < 2:
                continue
            if any(_within(single["change"], change) for single in singles):
                return []  # a shorter change already fits
            cost = {"quality_rank": rank} if rank else {}
            s = self.suggest(change, " + ".join(words), **cost)
            if s:
                return [s]
        if len(words) < 1:
            return []
        answer = self._plan("min_num_gpus", change)
        if answer is None or answer["value"] > MAX_GPUS:
            return []
        n = answer["value"]
        cost = {"quality_rank": rank} if rank else {}
        return [s for s in [self.suggest({**change, "num_gpus": n}, " + ".join(words) + f" on {n} GPUs",
                                         answer["estimate"], **cost)] if s]

    def _base_format(self, method: str | None = None) -> str:
        """The format the base weights are estimated in for a method (catalogs/format_rules: LoRA keeps a
        16-bit base, QLoRA an NF4 one, full fine-tuning in fp8 bf16; else the request's own precision)."""
        req = {**self.req, "finetuning_method": method or self.req["finetuning_method"]}
        key, _ = finetuning_weights(self.cat.format_rules, req)
        return key

    def _base_rank(self) -> float:
        return self._rank(self._base_format())


def _within(small: dict[str, Any], big: dict[str, Any]) -> bool:
    """Does change ``big`` set everything change ``small`` sets (optimization_config key by key)?"""
    for key, value in small.items():
        if key == "optimization_config":
            if not _within(value, big.get(key) or {}):
                return False
        elif key not in big or big[key] != value:
            return False
    return True
