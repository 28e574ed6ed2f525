"""Runtime settings that move together: a profile constant's ``follows`` rule, as data.

Some of a runtime's defaults are not fixed numbers but follow what the deployment sets elsewhere. TGI's
server sizes its KV cache from ``--cuda-memory-fraction x TGI_WIGGLE_ROOM`` (flash_causal_lm.py warmup), so a
deployment launched with ``--cuda-memory-fraction 0.5`` gets half the cache; TGI 2.x's launcher sets an unset
``--max-batch-prefill-tokens`` to ``--max-input-tokens + 50``. A constant states such a rule as

.. code-block:: yaml

    gpu_memory_utilization:
      value: 0.9
      follows:
        expr: launcher_memory_fraction * wiggle_room     # the profile's constants, formula grammar
        vendors: [nvidia, amd]                           # optional: only on these vendors' GPUs
        when_set: [launcher_memory_fraction]             # optional: what triggers it (default: the names expr reads)
        source: flash_causal_lm.py warmup ...

and the request's ``runtime_settings`` decide when it applies: where they set a name in ``when_set`` (or one a rule
already derived) and not the constant itself, the constant is the expression's value over the constants as the
request sees them (tiers, then settings, then earlier rules, in dependency order). A value given in
``runtime_settings`` always wins. A declaration in catalogs/runtime_constants may carry a rule too (every runtime
that keeps the declared meaning gets it, e.g. ``prefill_budget_derived``: a budget the deployment sets is the budget);
a profile's own rule replaces it. The catalog check (:func:`rules_of`, called by vramplan.catalogcheck) refuses names that
are no constant, self-triggers and cycles (the schema refuses unknown vendors), so a rule fails at load, not in a request.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .compiled import Fn, compile_tree
from .errors import FormulaError, RequestError
from .formulaset import parse_expression
from .semantics import FUNCTIONS, refusal
from .semantics import check as check_value


@dataclass(frozen=True)
class Rule:
    name: str                     # the constant the rule sets
    triggers: frozenset[str]      # settings that make it apply
    reads: tuple[str, ...]        # constants the expression reads
    vendors: frozenset[str]       # empty: every vendor
    fn: Fn
    source: str


def expr_names(expr: str) -> list[str]:
    """The names an expression reads (not its functions); none where it does not parse (compile_rule says why)."""
    try:
        tree = ast.parse(" ".join(expr.split()), mode="eval")
    except SyntaxError:
        return []
    return sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in FUNCTIONS})


def triggers_of(spec: Mapping[str, Any]) -> list[str]:
    """The settings that make a rule apply: its ``when_set``, else the names its expression reads."""
    return list(spec.get("when_set") or expr_names(spec["expr"]))


def compile_rule(name: str, spec: Mapping[str, Any], constants: Iterable[str], where: str) -> Rule:
    """One constant's rule, checked against the profile's constants; a :class:`FormulaError` naming ``where``."""
    known = set(constants)
    used = expr_names(spec["expr"])
    unknown = [n for n in used if n not in known]
    if unknown:
        raise FormulaError([(where, f"follows.expr reads {unknown[0]!r}, which is not one of this runtime's constants")])
    tree = parse_expression(spec["expr"], where=f"{where}.follows.expr", declared=used)
    triggers = triggers_of(spec)
    bad = [n for n in triggers if n not in known or n == name]
    if bad or not triggers:
        raise FormulaError([(where, f"follows.when_set names {bad[0]!r}, which is not another of this runtime's constants"
                             if bad else "follows reads no setting that could trigger it: give when_set")])
    return Rule(name, frozenset(triggers), tuple(used), frozenset(spec.get("vendors", ())),
                compile_tree(tree, FUNCTIONS), spec["source"])


def ordered(rules: Iterable[Rule], where: str) -> tuple[Rule, ...]:
    """The rules with each after the rules it depends on (what it reads or is triggered by); a cycle is an error."""
    by_name = {r.name: r for r in rules}
    out: list[Rule] = []
    state: dict[str, int] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2 or name not in by_name:
            return
        if state.get(name) == 1:
            raise FormulaError([(where, "follows rules loop: " + " -> ".join((*path, name)))])
        state[name] = 1
        rule = by_name[name]
        for dep in sorted(set(rule.reads) | rule.triggers):
            visit(dep, (*path, name))
        state[name] = 2
        out.append(rule)

    for name in sorted(by_name):
        visit(name, ())
    return tuple(out)


def rules_of(constants: Mapping[str, Mapping[str, Any]], where: str) -> tuple[Rule, ...]:
    """Every ``follows`` rule of a profile's constants, in the order they apply."""
    rules = [compile_rule(name, c["follows"], constants, f"{where}.constants.{name}")
             for name, c in constants.items() if c.get("follows")]
    return ordered(rules, where)


_CACHE: dict[int, tuple[Any, tuple[Rule, ...]]] = {}


def _cached_rules(runtime: Mapping[str, Any]) -> tuple[Rule, ...]:
    hit = _CACHE.get(id(runtime))
    if hit is None or hit[0] is not runtime:
        hit = (runtime, rules_of(runtime["constants"], "runtime"))
        _CACHE[id(runtime)] = hit
    return hit[1]


def followed(runtime: Mapping[str, Any], settings: Mapping[str, float] | None, value_of: Mapping[str, float],
             vendor: str | None = None) -> dict[str, float]:
    """``{constant: value}`` the rules derive for a request: ``value_of`` holds the constants as the request sees them
    (plain names; tiers and settings applied), ``vendor`` the GPU's (None: not known yet - a rule limited to some
    vendors does not apply). Empty without settings: the profile's own values already agree with its rules."""
    if not settings:
        return {}
    rules = _cached_rules(runtime)
    if not rules:
        return {}
    given = set(settings)
    values = dict(value_of)
    out: dict[str, float] = {}
    for rule in rules:
        if rule.name in given or not (rule.triggers & (given | out.keys())):
            continue
        if rule.vendors and vendor not in rule.vendors:
            continue
        try:
            value, reason = check_value(rule.fn(values))
        except Exception as exc:  # a division by zero, a domain error: the settings' fault, said as such
            reason = refusal(exc)
            if reason is None:
                raise
        if reason:
            field = sorted(rule.triggers & given) or sorted(given)
            raise RequestError([(f"runtime_settings.{field[0]}", f"makes {rule.name} (which follows it) {reason}")])
        if float(value) != values.get(rule.name):  # a rule that moves nothing says nothing and triggers nothing
            out[rule.name] = values[rule.name] = float(value)
    return out


def describe(runtime_key: str, runtime: Mapping[str, Any], derived: Mapping[str, float],
             settings: Mapping[str, float]) -> list[str]:
    """One assumption line per derived constant: its value, the settings it follows and why."""
    rules = {r.name: r for r in _cached_rules(runtime)}
    out = []
    for name, value in derived.items():
        rule = rules[name]
        shown = f"{value:g}" if abs(value) < 1e15 else f"{value:.6g}"
        cause = ", ".join(sorted(rule.triggers & (set(settings) | set(derived)))) or ", ".join(sorted(rule.triggers))
        expr = runtime["constants"][name]["follows"]["expr"]
        how = "" if not expr_names(expr) else f" = {expr}"
        out.append(f"{runtime_key}: {name} {shown}{how}, following runtime_settings {cause} - {rule.source}")
    return out
