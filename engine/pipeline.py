"""One pass of the request pipeline: validate → resolve → scenario → evaluate → estimate.

Each stage takes the previous stage's output and the :class:`~vramplan.catalog.Catalog` it is
given, and nothing else; nothing here searches or calls a layer above (the auto-offload search,
the planner, suggestions and reports sit above, in :mod:`vramplan.answer` and beside it). What a
pass makes is handed on whole as an :class:`Outcome`, so a report renders from the resolved request,
the response and its trace instead of running the pipeline again.

A formula that fails for numbers the client supplied (a custom config, ``runtime_settings``) is the
request's error, not the engine's: :func:`run` names those fields (see :func:`_blame`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import request as request_mod
from . import scenario as scenario_mod
from .catalog import Catalog
from .errors import FormulaError, RequestError, VramplanError
from .estimate import assemble, negative_output, response_targets
from .resolve import Resolved, resolve
from .scenario import Notes


@dataclass
class Outcome:
    """What one pass made: the body as sent, the validated request (defaults applied), the resolved
    catalog entries, and the response (with its ``trace`` when the request asked for one)."""

    body: dict[str, Any]
    request: dict[str, Any]
    resolved: Resolved
    response: dict[str, Any]

    @property
    def workload(self) -> str:
        return self.resolved.workload


def run(body: dict[str, Any], workload: str, catalog: Catalog, *, strict: bool = False) -> Outcome:
    """The whole pass for one request body.

    ``strict``: refuse fields the schema does not know (default: ignore them with a warning).
    """
    try:
        req, notes = request_mod.check(body, workload, strict=strict)
    except RequestError as exc:
        raise with_unknown_keys(catalog, body, exc, workload) from None
    try:
        res, out = estimate(catalog, req, workload, notes)
    except FormulaError as exc:
        raise _blame(catalog, body, workload, exc) from None
    return Outcome(body, req, res, out)


def estimate(cat: Catalog, req: dict[str, Any], workload: str, request_notes: list[str]) -> tuple[Resolved, dict[str, Any]]:
    """resolve → scenario → evaluate → estimate for a validated request (``request_notes``: what
    validation said, e.g. the unknown fields it ignored)."""
    res = resolve(cat, req, workload)
    s, said = scenario_mod.build_with_notes(res)
    components = cat.formulas.components(workload)
    trace: list | None = [] if req.get("trace") else None
    v = cat.formulas.evaluate(s, response_targets(components, workload), trace=trace)
    fid = negative_output(v, workload)
    if fid is not None:
        err = FormulaError([(f"formula {fid} ({cat.formulas.formulas[fid].file})", f"gave {v[fid]!r}, a negative figure")])
        err.formula = fid
        raise err
    return res, assemble(res, s, v, components, trace, notes_of(res, said, request_notes))


def notes_of(res: Resolved, said: Notes, request_notes: list[str] = ()) -> Notes:
    """Every stage's notes in the order a response lists them: validation, resolve, scenario."""
    return Notes(assumptions=[*res.assumptions, *said.assumptions],
                 warnings=[*request_notes, *res.warnings, *said.warnings])


def _blame(cat: Catalog, body: dict[str, Any], workload: str, exc: FormulaError) -> VramplanError:
    """A formula that fails (overflow, division by zero, not finite, negative) because of numbers the
    request carries is the request's error: a :class:`RequestError` naming those fields.

    Which fields: each of the request's :data:`DATA_OVERRIDES` (each ``runtime_settings`` member,
    ``custom_model``, ``custom_weights_bytes``, ``custom_vram``) is taken away in turn, and the ones
    without which the same request evaluates are named; if no single one suffices, all of them
    together are tried. If the request still fails without them, the server's formulas or data are
    at fault and the :class:`FormulaError` stands (a 500 with an incident id over HTTP).
    """
    if exc.formula is None or not isinstance(body, dict):
        return exc
    names = _client_numbers(body, workload)
    culprits = [name for name in names if _evaluates(cat, _without(cat, body, [name]), workload)]
    if not culprits and len(names) > 1 and _evaluates(cat, _without(cat, body, names), workload):
        culprits = names
    if not culprits:
        return exc
    what = exc.problems[0][1] if exc.problems else "fails"
    together = f" (together with {', '.join(culprits[1:])})" if len(culprits) > 1 else ""
    return RequestError([(name, f"is out of the range the engine can size{together if i == 0 else ''}: "
                                f"formula {exc.formula} {what}") for i, name in enumerate(culprits)])


#: Request fields that replace the engine's own data with the client's numbers: the model's
#: architecture, its weight bytes, the GPU's memory, the runtime's constants. A formula these make
#: fail is the request's error. The workload's own numbers (batch, context, users, GPUs, ...) are not
#: here: every value the schema allows them must evaluate, so a failure there is the engine's.
DATA_OVERRIDES = ("custom_model", "custom_weights_bytes", "custom_vram", "runtime_settings")


def _client_numbers(body: dict[str, Any], workload: str) -> list[str]:
    """The data overrides the client sent, by field path: each ``runtime_settings`` member, the
    others whole."""
    out = []
    for name in DATA_OVERRIDES:
        value = body.get(name)
        if name == "runtime_settings" and isinstance(value, dict):
            out += [f"{name}.{member}" for member in value]
        elif name == "custom_model" and isinstance(value, dict) and body.get("llm_key") == "custom":
            out.append(name)
        elif name not in ("runtime_settings", "custom_model") and value is not None:
            out.append(name)
    return out


def _without(cat: Catalog, body: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """``body`` without the named fields (defaults apply); without ``custom_model``, a catalog model stands in."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in body.items()}
    for name in names:
        top, _, member = name.partition(".")
        if member:
            out.get(top, {}).pop(member, None)
        elif top == "custom_model":
            out.pop(top, None)
            out["llm_key"] = next((e.key for e in cat.models), "")
        else:
            out.pop(top, None)
    return out


def _evaluates(cat: Catalog, body: dict[str, Any], workload: str) -> bool:
    try:
        req, notes = request_mod.check(body, workload)
        estimate(cat, req, workload, notes)
    except VramplanError:
        return False
    return True


def with_unknown_keys(cat: Catalog, body: Any, exc: RequestError, workload: str) -> RequestError:
    """Add unknown catalog keys to a schema error, so one message names every bad field."""
    if not isinstance(body, dict):
        return exc
    problems, suggestions = list(exc.problems), dict(exc.suggestions)
    named = {w for w, _ in problems}
    for fld, reg in (("gpu_key", cat.gpus), ("llm_key", cat.models), ("quantization", cat.quantization),
                     ("kv_cache_quantization", cat.quantization), ("runtime", cat.runtimes),
                     ("interconnect_type", cat.interconnects), ("optimizer", cat.optimizers)):
        if fld == "optimizer" and workload != "finetuning":
            continue
        key = body.get(fld)
        if fld in named or not isinstance(key, str) or (fld == "llm_key" and (key == "custom" or key.startswith("hf:"))):
            continue
        try:
            reg.get(key, fld)
        except RequestError as unknown:
            problems.extend(unknown.problems)
            suggestions.update(unknown.suggestions)
    return RequestError(problems, suggestions=suggestions)
