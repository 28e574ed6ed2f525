"""The estimate stage: the evaluated formula graph as the response the seed API defines.

validate → resolve → scenario → evaluate → **estimate** → render. This module maps the formula
values a response reads (declared in vocabulary/outputs.yaml) onto the seed's field names (GiB,
rounded as the seed shows them), plus the additive extras, and words the statuses. The pass that
drives the stages is :mod:`vramplan.pipeline`; nothing here searches or reaches back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import contract, families, follows, runtimetext
from . import request as request_mod
from .resolve import Resolved
from .scenario import Notes, followed_constants, runtime_constants
from .units import GIB


#: Formula ids the engine reads, per workload, besides the components (declared in vocabulary/outputs.yaml).
OUTPUTS = contract.outputs_by_workload()


def response_targets(components: Iterable[Any], workload: str) -> tuple[str, ...]:
    """Every formula value a response reads: each memory component's output, then :data:`OUTPUTS`."""
    return tuple(c.output for c in components) + OUTPUTS[workload]

def trace_values(response: Mapping[str, Any]) -> dict[str, Any]:
    """A traced response's figures by name (``trace: true``): every evaluated formula's value, and every scenario
    input a formula read."""
    out: dict[str, Any] = {}
    for step in response.get("trace") or []:
        for name, value in (step.get("inputs") or {}).items():
            out.setdefault(name, value)
        out[step["id"]] = step["value"]
    return out


#: What srv_limited_code means (formulas/performance/serving.yaml).
LIMITED_BY = {1: "kv_cache", 2: "max_num_batched_tokens", 3: "max_num_seqs", 4: "batch_size", 5: "arrival_rate",
              6: "compute", 7: "memory_bandwidth", 8: "overhead"}

#: memory_status thresholds on actual_vram_percentage (seed: okay ≤ 50, moderate ≤ 75, high ≤ 90, else very_high; > 100 insufficient).
STATUS = ((50.0, "okay"), (75.0, "moderate"), (90.0, "high"), (100.0, "very_high"))


#: What each memory_status means in words (CLI table, reports).
STATUS_TEXT = {"okay": "fits comfortably", "moderate": "fits", "high": "tight fit", "very_high": "very tight fit",
               "insufficient": "does not fit", "error": "configuration error"}


def memory_status(percent: float) -> str:
    for limit, name in STATUS:
        if percent <= limit:
            return name
    return "insufficient"


def _slots_text(runtime: str, s: dict[str, Any], held: str = "requests at a time", rest: str = "the rest queue") -> str:
    """How a runtime that sizes its cache by the request runs from the slots runtime_settings.max_num_seqs gives it
    (scenario.server_slots); for an open loop without them, one request at a time."""
    if s["mem_users"] > 1 or s["mem_users"] < s["users"]:
        return (f"; {runtime} sizes its cache by the request: its {int(s['rt_max_num_seqs'])} slots "
                f"(runtime_settings.max_num_seqs, llama-server's --parallel) hold {int(s['mem_users'])} {held} and "
                f"the memory is theirs; {rest}")
    return (f"; {runtime} sizes its cache by the request, so its {int(s['seqs'])} slot(s) serve one request at a time "
            "while the rest queue (runtime_settings.max_num_seqs gives it more, as llama-server's --parallel does; a closed "
            "loop of N concurrent_users is a server of N slots)")


def _gib(x: float, nd: int = 2) -> float:
    return round(x / GIB, nd)


def configuration_checks(s: Mapping[str, Any], workload: str) -> list[tuple[Any, Callable[[Mapping[str, Any]], str]]]:
    """Well-formed requests whose configuration cannot run (memory_status 'error'), as
    ``(condition, message)`` pairs; ``message(s)`` words it for one scenario. The conditions read
    scenario numbers only, with ``&`` and ``|``, so they hold for one scenario (booleans) and for a
    batch of them (numpy arrays) alike."""
    if workload != "inference":
        return []
    tp, pp, heads, layers, offloaded = s["tp"], s["pp"], s["n_heads"], s["n_layers"], s["offload_layers"]
    return [
        ((tp > 1) & ((heads % tp != 0) | (tp > heads)),
         lambda s: f"tensor parallelism over {int(s['tp'])} GPUs needs the {int(s['n_heads'])} attention heads to "
                   f"divide evenly across them"),
        (pp > layers, lambda s: f"pipeline parallelism over {int(s['pp'])} GPUs needs at least as many layers "
                                f"(the model has {int(s['n_layers'])})"),
        ((pp > 1) & (offloaded != 0) & (layers - offloaded < pp),
         lambda s: "too few layers stay on the GPUs for every pipeline stage to hold one"),
    ]


def _configuration_errors(res: Resolved, s: dict[str, float]) -> tuple[list[str], list[str]]:
    """(configurations that cannot run (memory_status 'error'), warnings about settings past the model's limits)."""
    errors = [message(s) for condition, message in configuration_checks(s, res.workload) if condition]
    mpe = res.arch.max_position_embeddings
    past = [f"seq_length {res.request['seq_length']} exceeds the model's context of {mpe} tokens"] \
        if mpe and res.request["seq_length"] > mpe else []
    if res.workload == "inference":
        past.extend(_runtime_refusals(res, s))
    return errors, past


def _runtime_refusals(res: Resolved, s: dict[str, float]) -> list[str]:
    """The request's lengths past what the runtime accepts as launched (``max_input_tokens``, ``max_model_len``:
    TGI 2.x's router refuses them, its launcher defaulting both to about 4K): a warning, estimated as asked."""
    prompt, total = int(res.request["input_tokens"]), int(res.request["seq_length"])
    cap_in, cap_total = int(s.get("rt_max_input_tokens", 0)), int(s.get("rt_max_model_len", 0))
    past = ([f"a prompt of {prompt:,} tokens is past its max_input_tokens of {cap_in:,}"] if 0 < cap_in < prompt else []) \
        + ([f"{total:,} tokens in all (prompt + answer) are past its max_model_len of {cap_total:,}"]
           if 0 < cap_total < total else [])
    if not past:
        return []
    return [f"{res.runtime.key} refuses this request as launched: {' and '.join(past)} (see `vramplan runtimes "
            f"{res.runtime.key}`); a deployment launched for longer requests says so in runtime_settings max_input_tokens / "
            "max_model_len - estimated as asked"]


def status_overrides(s: Mapping[str, Any], v: Mapping[str, Any], workload: str) -> list[tuple[Any, str]]:
    """Rules that set ``memory_status`` after the thresholds (a configuration error stays an error),
    as ``(condition, status)`` pairs; like :func:`configuration_checks`, for one scenario or a batch."""
    if workload != "inference":
        return []
    # the runtime refuses to start: its preallocated pool cannot hold one sequence
    return [((s["rt_kv_preallocate"] != 0) & (v["srv_max_running"] < 1), "insufficient")]


def needs_offload_search(req: dict[str, Any], workload: str, status: str) -> bool:
    """enable_offloading without an amount, and it does not fit: the fewest offloaded layers that fit are searched."""
    return (workload == "inference" and req["enable_offloading"] and status == "insufficient"
            and req.get("num_offload_layers") is None and req.get("percentage_offload") is None)


def negative_output(v: Mapping[str, Any], workload: str) -> str | None:
    """The first figure the response reads that came out negative, or None: a response never shows one."""
    return next((fid for fid in OUTPUTS[workload] if v[fid] < 0), None)


#: memory_details labels shown even at zero.
ALWAYS_SHOWN = ("Base Model Weights",)


def component_bytes(components, v: dict[str, Any]) -> dict[str, Any]:
    """Bytes per ``memory_details`` label, in display order: components sharing a label add up, a
    later one only when positive. Numbers or numpy arrays alike (``b * (b > 0)`` is b or 0)."""
    raw: dict[str, Any] = {}
    for c in components:
        b = v[c.output]
        raw[c.label] = raw[c.label] + b * (b > 0) if c.label in raw else 0.0 + b
    return raw


def assemble(res: Resolved, s: dict[str, float], v: dict[str, float], components, trace, notes: Notes) -> dict[str, Any]:
    """The response for one scenario's formula values ``v``; ``notes``: what the earlier stages said
    (:func:`vramplan.pipeline.notes_of`), listed first among its assumptions and warnings."""
    details: dict[str, float] = {}
    raw = component_bytes(components, v)
    # Round each component, then let the total be their sum, so memory_details adds up exactly.
    for label, b in raw.items():
        if b > 0 or label in ALWAYS_SHOWN:
            details[label] = _gib(b)
    vram = round(sum(details.values()), 2)
    capacity = res.gpu_memory_gib
    share = vram / capacity * 100 if capacity else 0.0
    actual = round(share, 1)
    errors, past_limits = _configuration_errors(res, s)
    status = "error" if errors else memory_status(share)  # the unrounded share: 50.03 % is moderate
    warnings = [*notes.warnings, *past_limits] + [f"configuration error: {e}" for e in errors]
    if s.get("rt_expandable_segments") == 1 and not (v["infer_reserve_simulated"] or v["train_reserve_simulated"]):
        warnings.append(_expandable_unread(res, s))
    if status == "insufficient":
        warnings.append(f"needs {vram:.2f} GiB on the busiest GPU but {res.gpu.data['label']} has {capacity:g} GiB")
    breakdown = [{"label": k, "value": round(d / vram * 100, 1) if vram else 0.0, "size_gb": d} for k, d in details.items()]
    out: dict[str, Any] = {
        "vram_usage": vram,
        "vram_percentage": round(min(actual, 100.0), 1),
        "actual_vram_percentage": round(actual, 1),
        "memory_status": status,
        "static_shared_memory": _gib(v["static_shared_bytes"]),
    }
    if res.workload == "inference":
        users = s["mem_users"]  # the clients whose requests the memory holds (those beyond a runtime's slots add none)
        static = min(out["static_shared_memory"], vram)
        out["static_shared_memory"] = static
        out.update({
            "per_user_memory": round((vram - static) / users, 2),
            "estimated_latency_tps": round(v["latency_tps"], 1),
            "estimated_throughput_tps": round(v["throughput_tps"], 1),
            "per_user_tps": round(v["per_user_tps"], 1),
            "ms_per_token": round(v["ms_per_token"], 2),
            "tftt": round(v["tftt_ms"], 1),
        })
    else:
        out.update({
            "training_tps": round(v["training_tps"], 1),
            "samples_per_second": round(v["samples_per_second"], 3),
            "steps_per_second": round(v["steps_per_second"], 4),
            "total_tokens": float(v["total_tokens"]),
            "total_training_time_hours": round(v["training_hours"], 2),
        })
    out.update({
        "estimated_system_ram_required": _gib(v["system_ram_bytes"], 1),
        "offloaded_memory": _gib(v["offloaded_total_bytes"]),
        "estimated_power_draw": round(v["power_draw_w"]),
    })
    if res.workload == "finetuning":
        opt = _optimization_flags(res)
        active = [k for k in request_mod.OPTIMIZATION_FLAGS if opt.get(k)]
        if opt.get("zero_stage") and res.request["num_gpus"] > 1:  # on one GPU it shards nothing (see warnings)
            active.append(f"zero_stage_{opt['zero_stage']}")
        out["active_optimizations"] = active
        out["optimization_preset"] = _preset(opt)
    # The whole model in the chosen format (a GGUF: its tensor data), beside the busiest GPU's share above
    out["model_weights_gb"] = _gib(v["weights_file_bytes"])
    out["memory_details"] = details
    out["memory_breakdown"] = breakdown
    out["runtime"] = res.runtime.key
    out["assumptions"] = _assumptions(res, s, v, notes)
    out["warnings"] = warnings
    if s["num_gpus"] > 1:
        out["per_gpu"] = _per_gpu(res, s, v, vram)
    if res.workload == "inference" and res.request["enable_offloading"]:
        out["offload"] = {"layers": int(s["offload_layers"]), "of_layers": int(res.arch.num_layers),
                          "target": res.request["offload_target"], "kv_cache": bool(s["offload_kv"])}
    if res.workload == "inference":
        out["serving"] = _serving(res, s, v, warnings)
        for condition, status_word in status_overrides(s, v, res.workload):
            if condition and out["memory_status"] != "error":
                out["memory_status"] = status_word
    if res.workload == "inference" and s.get("rt_kv_preallocate"):
        per_token = v["kv_attention_bytes_per_seq"] / max(s["seq"], 1) * v["kv_share_per_gpu"]
        state = v["recurrent_state_bytes_per_seq"] * v["recurrent_share_per_gpu"]
        if state:  # a hybrid model's sequence also takes its fixed recurrent state from the pool
            per_seq = per_token * s["seq"] + state
            sequences = int(v["kv_pool_bytes"] // per_seq) if per_seq else 0
            tokens = int(sequences * s["seq"])
        else:
            tokens = int(v["kv_pool_bytes"] / per_token) if per_token else 0
            sequences = tokens // s["seq"] if s["seq"] else 0
        # Under attention data parallelism each GPU's pool holds its own sequences: the deployment holds ep times as many.
        ep = int(s.get("ep", 1))
        out["kv_pool"] = {"size_gb": _gib(v["kv_pool_bytes"]), "tokens": tokens * ep, "sequences_at_seq_length": sequences * ep}
        if v["kv_needed_bytes"] > v["kv_pool_bytes"]:
            pool = f"the KV pool holds {tokens} tokens ({sequences} sequences of {int(s['seq'])})" if ep == 1 else (
                f"each GPU's KV pool holds {tokens} tokens ({sequences} sequences of {int(s['seq'])}, "
                f"{ep * sequences} over the {ep} attention data-parallel GPUs)")
            preempted = int(v["srv_burst_preempted"])
            if v["srv_static"] and preempted:
                warnings.append(f"{pool}; {int(s['seqs'])} sequences started together need more as they grow, and "
                                f"{res.runtime.key} preempts {preempted} of them when it fills, recomputing them after "
                                "the others end (serving_burst.yaml)")
            else:
                warnings.append(f"{pool}; {int(s['seqs'])} sequences in flight need more, and {res.runtime.key} queues the rest "
                                "(serving.queued_requests)" + (
                                    f", preempting {preempted} in all as each wave of the burst grows and recomputing "
                                    "them when they rejoin (serving_burst.yaml)" if preempted else ""))
    if trace is not None:
        out["trace"] = trace
    return out


def _serving(res: Resolved, s: dict[str, float], v: dict[str, float], warnings: list[str]) -> dict[str, Any]:
    """The serving model's answer at this load (formulas/performance/serving.yaml), and what it means."""
    req = res.request
    past = bool(v["srv_past_capacity"])
    open_loop = bool(v["srv_open_loop"])
    load = "open_loop" if open_loop else ("static_batch" if v["srv_static"] else "closed_loop")

    def latency(key: str) -> float | None:
        return None if past else round(v[key] * 1000, 2)

    out = {
        "input_tokens": req["input_tokens"], "output_tokens": req["output_tokens"], "load": load,
        "running_sequences": round(v["srv_running"], 2), "queued_requests": None if past else round(v["srv_queued"], 2),
        "output_throughput_tps": round(v["srv_output_tps"], 1), "total_throughput_tps": round(v["srv_total_tps"], 1),
        "requests_per_second": round(v["srv_requests_per_s"], 4),
        "ttft_ms": latency("srv_ttft_s"), "itl_ms": latency("srv_itl_s"), "e2e_latency_ms": latency("srv_e2e_s"),
        "utilisation": round(v["srv_utilisation"], 3), "limited_by": LIMITED_BY[int(v["srv_limited_code"])],
        "cost_per_hour": round(v["srv_cost_per_hour"], 4) if req.get("gpu_hour_cost") is not None else None,
        "cost_per_million_output_tokens": round(v["srv_cost_per_mtok"], 4)
        if req.get("gpu_hour_cost") is not None and v["srv_output_tps"] > 0 else None,
    }
    capacity = v["srv_capacity_seq_rate"] / s["batch"]
    if past and capacity <= 0:
        warnings.append(f"the KV cache cannot hold one sequence of {int(s['seq'])} tokens on {res.runtime.key}; nothing can run")
    elif past:
        warnings.append(f"request_rate {req['request_rate']:g}/s is past capacity: this deployment sustains about "
                        f"{capacity:.3g} requests/s of {req['input_tokens']} + {req['output_tokens']} tokens; "
                        "latencies grow without bound")
    if s["rt_continuous_batching_always"] and req.get("continuous_batching_given") is False:
        warnings.append(f"{res.runtime.key} always batches continuously; enable_continuous_batching false is ignored")
    return out


def _expandable_unread(res: Resolved, s: dict[str, float]) -> str:
    """Why ``runtime_settings.expandable_segments`` changes nothing in this estimate: only the simulated
    caching-allocator reserves read it."""
    training = res.request.get("finetuning_method") is not None
    if training or s["rt_allocator_slack_fraction"] > 0:
        why = ("this run's reserve is not simulated (see assumptions), and the fitted share that stands in for it "
               "was fitted on the default segments")
    else:
        why = f"{res.runtime.key} does not allocate through PyTorch's caching allocator as generate does (its memory is sized up front)"
    return f"runtime_settings.expandable_segments changes nothing here: only a simulated allocator reserve reads it; {why}"


def _optimization_flags(res: Resolved) -> dict[str, Any]:
    """The request's optimization flags, with the seed's optimizer flags set from the optimizer in use
    (an 8-bit or paged optimizer named by ``optimizer`` shows as use_8bit / use_paged_optimizer)."""
    opt = dict(res.request["optimization_config"])
    if res.optimizer is not None:
        opt["use_8bit_optimizer"] = bool(opt.get("use_8bit_optimizer")) or res.optimizer.data["state_dtype"] == "int8"
        opt["use_paged_optimizer"] = bool(opt.get("use_paged_optimizer")) or bool(res.optimizer.data.get("paged"))
    return opt


def _preset(opt: dict[str, Any]) -> str:
    """'default' when the flags are the documented defaults, 'memory_efficient' when checkpointing and an
    8-bit optimizer are both on, else 'custom'."""
    defaults = request_mod.optimization_defaults("finetuning")
    if all(opt.get(k, v) == v for k, v in defaults.items()):
        return "default"
    if opt.get("gradient_checkpointing") and opt.get("use_8bit_optimizer"):
        return "memory_efficient"
    return "custom"


def _segments(s: dict[str, float]) -> str:
    """Which of the allocator's segment modes the simulated reserve replays."""
    if s.get("rt_expandable_segments") == 1:
        return (", expandable segments (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True: one segment a pool grown in "
                "2 MiB / 20 MiB pages)")
    return ", default segments"


def _assumptions(res: Resolved, s: dict[str, float], v: dict[str, float], notes: Notes) -> list[str]:
    out = list(notes.assumptions)
    # A runtime's serving behaviour belongs to inference responses only; its training behaviour to fine-tuning.
    out.extend(runtimetext.fill(line, lambda name: s.get(f"rt_{name}"))
               for line in res.runtime.data.get("assumptions" if res.workload == "inference" else "training_assumptions", []))
    settings = res.request.get("runtime_settings")
    if settings:  # the defaults that moved with what the request set, and why (the profile's follows rules)
        before = dict(runtime_constants(res.runtime.data, res.gpu, res.gpu_memory_gib, None, res.arch))  # a copy: cached
        before.update({f"rt_{k}": float(x) for k, x in settings.items()})
        derived = followed_constants(res.runtime.data, res.gpu, before, settings)
        out.extend(follows.describe(res.runtime.key, res.runtime.data, derived, settings))
    out.append(f"weights: {res.quant.data['label']} ({res.quant.key}), {v['weights_file_bytes'] / GIB:.2f} GiB in all")
    if res.workload == "inference":
        req = res.request
        out.append(f"KV cache: {res.kv_quant.data['label']}, {int(s['mem_seqs'])} sequence(s) of {int(s['seq'])} tokens in flight")
        split = req["context_split"]
        out.append(f"requests: {req['input_tokens']} prompt + {req['output_tokens']} output tokens"
                   + ("" if split == "given" else f" ({split})"))
        if s.get("rt_prefill_budget_derived") and v.get("prefill_budget") is not None:
            capped = 0 < v.get("prefill_vram_max_tokens", 0) <= v["prefill_budget"]
            out.append(f"prefill budget: {int(v['prefill_budget']):,} tokens a step, as {res.runtime.key}'s launcher derives "
                       "it for this GPU and model (formula prefill_budget" + ("; its memory heuristic binds, formula "
                       "prefill_vram_max_tokens" if capped else "") + "; runtime_settings max_prefill_tokens sets it)")
        if s.get("rt_mem_fraction_derived") and v.get("kv_memory_share") is not None:
            out.append(f"memory share: {v['kv_memory_share']:.3f} of each GPU for the weights and the KV pool, as "
                       f"{res.runtime.key}'s server derives it from the GPU's memory, keeping {v['mem_reserved_mib']:,.0f} MiB "
                       "for activations and graphs (formula mem_fraction_heuristic; runtime_settings gpu_memory_utilization sets it)")
        if v.get("prefill_context", s["seq"]) < s["seq"]:
            out.append(f"memory: the prefill takes the stated {int(v['prefill_context']):,}-token prompt and the cache grows to "
                       f"{int(s['seq']):,} tokens over the answer; the peak is "
                       + ("at the last decode steps" if v.get("decode_excess_bytes", 0) > 0 else "the prompt's prefill"))
        if req.get("request_rate") is not None:
            out.append(f"load: open loop, {req['request_rate']:g} requests/s arriving at random (Poisson), "
                       f"{int(s['batch'])} sequence(s) each"
                       + ("" if s.get("rt_kv_preallocate") else _slots_text(res.runtime.key, s)))
        elif v["srv_static"] and v["srv_static_groups"] > 1:
            group = s["seqs"] / v["srv_static_groups"]
            out.append(f"load: one burst of {int(s['seqs'])} sequences sent together, all running at once; the scheduler "
                       f"takes their prompts first come, first served, {group:.3g} a step, so their first tokens come in "
                       f"{v['srv_static_groups']:.3g} groups ({v['srv_static_ramp_s'] * 1000:,.0f} ms sooner on average "
                       "than the last group's) and their later tokens wait for the rest of the prefill")
        elif v["srv_static"]:
            out.append(f"load: one static batch of {int(s['seqs'])} sequence(s) started together")
        elif v["srv_burst"]:
            cap, kept = int(v["srv_running_closed"]), int(v["srv_burst_grown"])
            grown = (f" (the pool holds {kept} of them grown together: {res.runtime.key} preempts the newest as it fills, "
                     "and they rejoin with the tokens they have generated)" if kept < cap else "")
            out.append(f"load: one burst of {int(s['seqs'])} sequences sent together, more than the {cap} that run at "
                       f"once{grown}: the rest start as slots free, and throughput is over the burst's "
                       f"~{v['srv_burst_rounds']:,.0f} rounds (the first wave entering at "
                       f"{v['srv_burst_admit_per_round']:.3g} prompts a round, the last requests finishing beside ever "
                       f"fewer others), not {s['seqs'] * req['output_tokens'] / v['srv_op_n']:,.0f} rounds at the cap")
        else:
            out.append(f"load: closed loop of {int(s['users'])} client(s) x {int(s['batch'])} sequence(s), each sending "
                       "the next request when the last one finishes (continuous batching)"
                       + ("" if s["mem_users"] >= s["users"] else
                          _slots_text(res.runtime.key, s, "clients' requests", "the others wait for a slot")))
        out.extend(_layout_assumptions(res.arch, s, v))
        if s["tp"] > 1:
            out.append(f"tensor parallelism over {int(s['tp'])} GPUs (interconnect {res.interconnect.key})")
        elif s["pp"] > 1:
            usual = (not req.get("inference_parallelism_given")
                     and res.runtime.data["constants"]["tensor_parallel_usual"]["value"])
            out.append(f"pipeline parallelism: {int(s['pp'])} stages (interconnect {res.interconnect.key})"
                       + (f" - the API's default split; {res.runtime.key} deployments within one node usually shard every "
                          "layer instead (inference_parallelism tensor)" if usual else ""))
        elif s["ep"] > 1:
            out.append(f"attention data parallelism + expert parallelism over {int(s['ep'])} GPUs (interconnect "
                       f"{res.interconnect.key}): each GPU serves its own sequences and holds 1/{int(s['ep'])} of the "
                       "routed experts"
                       + (f"; the busiest GPU computes {v['expert_rank_load']:.2f}x the mean GPU's routed rows, which the "
                          f"others wait for (expert_load_cv {s['rt_expert_load_cv']:g}: routing skewed towards a few hot "
                          "experts, as TensorRT-LLM measured for DeepSeek R1)" if v["expert_rank_load"] > 1 else "")
                       + "; TensorRT-LLM's published DEP runs measured below such estimates "
                       "(docs/PERFORMANCE.md gives by how much: per-step costs of this mode the model does not have yet)")
        if v["infer_reserve_simulated"]:
            out.append("allocator reserve: simulated - generate's prefill and first decode step replayed through PyTorch's "
                       f"caching-allocator rules{_segments(s)} (formulas/memory/runtime_overhead.yaml "
                       "infer_reserve_simulated_bytes)")
        elif s["rt_infer_reserve_simulation"] != 1 and res.runtime.data["constants"]["infer_reserve_simulation"]["value"] == 1:
            out.append("allocator reserve: the fitted share of the prefill's transients and the KV cache - runtime_settings "
                       "infer_reserve_simulation is 0")
        elif s["rt_allocator_slack_fraction"] > 0:
            out.append("allocator reserve: the fitted share of the prefill's transients and the KV cache - the simulated "
                       "sequence does not cover this model (only Llama, Mistral, Qwen2, Qwen3 and Phi-3 layers with SDPA "
                       "and no window or one on every layer - 16-bit, LLM.int8, or fp32 where every forward is masked - "
                       "and 16-bit Gemma 2 layers with eager attention, on one GPU with the cache on it)")
    else:
        out.append(f"{res.request['finetuning_method']} fine-tuning, optimizer {res.optimizer.key}, "
                   f"micro-batch {int(s['micro_batch'])} x {int(s['seq'])} tokens per GPU, "
                   f"{int(v['trainable_params']):,} trainable parameters")
        if s["dp"] > 1:
            out.append(f"data parallelism over {int(s['dp'])} GPUs (interconnect {res.interconnect.key})"
                       + (f", ZeRO stage {int(s['zero_stage'])}" if s["zero_stage"] else ""))
        if v["train_reserve_simulated"]:
            out.append("allocator reserve: simulated - this run's allocation sequence replayed through PyTorch's "
                       f"caching-allocator rules{_segments(s)} (formulas/memory/runtime_overhead.yaml "
                       "train_reserve_simulated_bytes)")
        elif s["rt_train_reserve_simulation"] != 1:
            out.append("allocator reserve: fitted fractions of the logit and gradient blocks - runtime_settings "
                       "train_reserve_simulation is 0")
        else:
            out.append("allocator reserve: fitted fractions of the logit and gradient blocks - the simulated "
                       "sequence does not cover this run (QLoRA, MoE, several GPUs, offloading, "
                       "an optimizer other than AdamW, or more allocator events than a replay takes)")
    out.append("memory figures are GiB (2^30 bytes); vram_usage is the peak nvidia-smi would show on the busiest GPU")
    return out


def _layout_assumptions(a, s: dict[str, float], v: dict[str, float]) -> list[str]:
    """Say what a model with unusual layers keeps per sequence (vramplan.families)."""
    out = []
    if a.num_recurrent_layers:
        kind = families.RECURRENT_KIND_WORDS.get(a.recurrent_kind, a.recurrent_kind)
        out.append(f"recurrent state: {a.num_recurrent_layers} {kind} layers keep "
                   f"{v['recurrent_state_bytes_per_seq'] / 2**20:.2f} MiB per sequence, whatever its length; "
                   f"{a.num_kv_full_layers + a.num_kv_sliding_layers} of {a.num_layers} layers keep a KV cache"
                   + (" (each beside its recurrent mixer)" if a.recurrent_beside_attention else ""))
    shared = sum(a.kv_shared)
    if shared:
        out.append(f"KV sharing: {shared} of {a.num_layers} layers read an earlier layer's cache and keep none")
    if s.get("images"):
        if s["cross_kv_tokens"]:
            out.append(f"images: {int(s['images'])} per sequence, {int(s['cross_kv_tokens'])} vision tokens cached by each of "
                       f"{a.num_cross_layers} cross-attention layers")
        elif s["image_context_tokens"]:
            out.append(f"images: {int(s['images'])} per sequence add {int(s['image_context_tokens'])} tokens to the context")
    return out


def _per_gpu(res: Resolved, s: dict[str, float], v: dict[str, float], busiest: float) -> list[dict[str, Any]]:
    """Memory of each GPU.

    Tensor and data parallelism are symmetric: every GPU is the busiest. Pipeline stages differ in
    their layers and ends; formulas/memory/pipeline_stages.yaml gives the weights and KV cache of
    each kind of stage (first, last, between with or without an extra layer). Each stage also holds
    what every GPU holds alike: the busiest GPU's total less its weights and KV cache.
    """
    n = int(s["num_gpus"])
    if s["pp"] <= 1:
        return [{"gpu": i, "vram_usage": busiest} for i in range(n)]
    base, extra = int(v["pp_stage_layers"]), int(v["pp_stages_with_extra_layer"])
    alike = busiest * GIB - v["weights_gpu_bytes"] - v["kv_cache_gpu_bytes"]
    out = []
    for i in range(n):
        held = (v["pp_first_stage_bytes"] if i == 0 else v["pp_last_stage_bytes"] if i == n - 1
                else v["pp_middle_stage_extra_bytes"] if i < extra else v["pp_middle_stage_bytes"])
        out.append({"gpu": i, "stage": i, "layers": base + (1 if i < extra else 0),
                    "vram_usage": round(min(busiest, (held + alike) / GIB), 2)})
    return out
