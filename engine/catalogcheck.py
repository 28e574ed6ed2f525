"""Load-time checks that tie the catalog kinds, the formulas and the engine's declared needs together.

Each check treats vramplan's own data and third-party data differently: a problem in a built-in
entry fails loudly (:class:`CatalogError` / :class:`FormulaError`); a problem in an entry from a
plugin or the user's catalog folder takes that entry out and records it in the plugin host's
failures, naming the entry and its file, so the rest keeps working.

- a runtime that ``extends`` another gets its constants merged in; its ``deployment`` block names
  existing formats;
- runtime profiles get the declared defaults of constants they lack (``catalogs/runtime_constants``)
  and must define every declared constant without one, in the declared unit, and every constant a
  formula uses; exactly one runtime is the default; their ``follows`` rules (a declaration's where the profile
  has the names it reads) read only the profile's constants and do not loop;
- hardware classes: fallbacks exist and do not loop; every GPU gets at most one class;
- optimizers name existing optimizers in ``variant_of``; format rules name existing formats;
- the formula graph: every input known, no circles, the engine's outputs present in their units
  (:mod:`vramplan.contract`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import contract, follows, hardware, runtimetext
from .architecture import from_hf_config
from .errors import CatalogError, FormulaError, RequestError
from .registry import Entry
from .scenario import RUNTIME_READS, scenario_variable_names

if TYPE_CHECKING:
    from .catalog import Catalog

Problems = list[tuple[str, str]]


def _where(kind: str, entry: Entry) -> str:
    return f"{kind} {entry.key} ({entry.provenance})"


def _reject(cat: Catalog, kind: str, entry: Entry, problem: str, loud: Problems) -> None:
    """A built-in entry's problem is collected for a loud error; a third-party entry is taken out."""
    if (kind, entry.key) in cat.builtin:
        loud.append((_where(kind, entry), problem))
        return
    cat.registry(kind).remove(entry.key)
    prov = entry.provenance
    contributor = prov.file if cat.host.is_builtin(prov.plugin) and prov.file else prov.plugin
    cat.host.record_failure(contributor, f"{kind} {entry.key!r} skipped: {problem}",
                            version=None if contributor == prov.plugin else "n/a")


def check_catalog(cat: Catalog) -> None:
    loud: Problems = []
    _resolve_runtime_bases(cat, loud)
    _settle_runtime_constants(cat, loud)
    _check_deployments(cat, loud)
    _check_hardware_classes(cat, loud)
    _classify_gpus(cat, loud)
    for opt in list(cat.optimizers):
        base = opt.data.get("variant_of")
        if base is not None and (base not in cat.optimizers or base == opt.key):
            _reject(cat, "optimizers", opt, f"variant_of {base!r} is not another registered optimizer", loud)
    for rule in list(cat.format_rules):
        weights = rule.data.get("weights")
        if weights is not None and weights not in cat.quantization:
            _reject(cat, "format_rules", rule, f"weights {weights!r} is not a registered quantization format", loud)
    if loud:
        raise CatalogError(loud)


def _resolve_runtime_bases(cat: Catalog, loud: Problems) -> None:
    """A runtime that ``extends`` another inherits its constants and overrides some (sglang of vllm).

    The merged entry keeps its own provenance; each inherited constant keeps its own ``source``.
    An unknown base or a cycle is a problem of the runtime that names it."""
    merged: dict[str, dict[str, Any]] = {}
    broken: dict[str, str] = {}

    def resolve(key: str, seen: tuple[str, ...]) -> dict[str, Any] | None:
        if key in merged:
            return merged[key]
        entry = cat.runtimes.get(key)
        base_key = entry.data.get("extends")
        if base_key is None:
            merged[key] = entry.data
            return entry.data
        if base_key in seen or base_key not in cat.runtimes:
            broken[key] = "extends itself through " + " -> ".join((*seen, base_key)) if base_key in seen else \
                f"extends unknown runtime {base_key!r}"
            return None
        base = resolve(base_key, (*seen, base_key))
        if base is None:
            broken.setdefault(key, f"extends {base_key!r}, which cannot be resolved")
            return None
        data = {**{k: v for k, v in base.items() if k not in ("default", "assumptions")}, **entry.data,
                "constants": {**base["constants"], **entry.data.get("constants", {})}}
        merged[key] = data
        return data

    for entry in list(cat.runtimes):
        data = resolve(entry.key, (entry.key,))
        if data is not None and data is not entry.data:
            cat.runtimes.replace(entry.key, data)
    for key, why in broken.items():
        _reject(cat, "runtimes", cat.runtimes.get(key), why, loud)


def _settle_runtime_constants(cat: Catalog, loud: Problems) -> None:
    declared = {e.key: e for e in cat.runtime_constants}
    undeclared = sorted(set(RUNTIME_READS) - set(declared))
    if undeclared:
        loud.append(("catalogs/runtime_constants", f"the engine reads runtime constants nothing declares: {', '.join(undeclared)}"))
    for decl in list(declared.values()):
        fallback = decl.data.get("fallback")
        if fallback is not None and fallback not in declared:
            _reject(cat, "runtime_constants", decl, f"fallback {fallback!r} is not a declared runtime constant", loud)
            declared.pop(decl.key, None)
        elif "default" in decl.data and runtimetext.outside_accepted(decl.data.get("accepts"), decl.data["default"]):
            _reject(cat, "runtime_constants", decl, f"default {decl.data['default']:g} is outside what it accepts "
                    f"({runtimetext.accepted_range(decl.data['accepts'])})", loud)
            declared.pop(decl.key, None)
    classes = set(cat.hardware_classes.keys())
    for runtime in list(cat.runtimes):
        constants = {name: _with_declared_accepts(c, _declaration(declared, name, classes))
                     for name, c in (runtime.data.get("constants") or {}).items()}
        outside = [f"{name} {value:g} is outside what it accepts ({runtimetext.accepted_range(c['accepts'])})"
                   for name, c in sorted(constants.items())
                   for value in (c["value"], *(t["value"] for t in c.get("tiers", ())))
                   if runtimetext.outside_accepted(c.get("accepts"), value)]
        if outside:
            _reject(cat, "runtimes", runtime, "; ".join(outside), loud)
            continue
        missing, wrong_unit = [], []
        for name, decl in declared.items():
            if name not in constants:
                if "fallback" in decl.data:
                    continue  # the engine reads the fallback constant instead
                if "default" in decl.data:
                    constants[name] = {"value": decl.data["default"], "unit": decl.data["unit"],
                                       "source": f"default declared by {decl.provenance}: {decl.data['source']}"}
                    if "accepts" in decl.data:
                        constants[name]["accepts"] = decl.data["accepts"]
                else:
                    missing.append(name)
            elif constants[name]["unit"] != decl.data["unit"]:
                wrong_unit.append(f"{name} is in {constants[name]['unit']!r}, declared in {decl.data['unit']!r}")
        _declared_rules(constants, declared)
        lines = [*runtime.data.get("assumptions", ()), *runtime.data.get("training_assumptions", ())]
        unknown = runtimetext.unknown_names(lines, constants)
        rules_problem = _rules_problem(runtime.key, constants) if not missing else None
        if missing or wrong_unit or unknown or rules_problem:
            what = ([f"lacks declared constants without a default: {', '.join(missing)}"] if missing else []) + wrong_unit
            what += [f"assumptions name unknown constants: {', '.join('{' + n + '}' for n in unknown)}"] if unknown else []
            what += [rules_problem] if rules_problem else []
            _reject(cat, "runtimes", runtime, "; ".join(what), loud)
        elif constants != runtime.data.get("constants"):
            cat.runtimes.replace(runtime.key, {**runtime.data, "constants": constants})


def _declared_rules(constants: dict[str, dict[str, Any]], declared: dict[str, Any]) -> None:
    """Give a profile's constants the ``follows`` rule their declaration states, where the profile has none of its own
    and every name the rule reads or is triggered by is one of the profile's constants (a runtime without
    ``max_prefill_tokens`` cannot be given it, so a rule triggered by it has nothing to follow there)."""
    for name, c in list(constants.items()):
        decl = declared.get(name)
        rule = decl.data.get("follows") if decl is not None else None
        if rule is None or "follows" in c:
            continue
        needs = set(follows.triggers_of(rule)) | set(follows.expr_names(rule["expr"]))
        if needs <= constants.keys():
            constants[name] = {**c, "follows": rule}


def _rules_problem(runtime_key: str, constants: dict[str, dict[str, Any]]) -> str | None:
    """What is wrong with a profile's ``follows`` rules (a name that is no constant, a loop), or None."""
    try:
        follows.rules_of(constants, f"runtimes.{runtime_key}")
    except FormulaError as exc:
        return "; ".join(f"{where}: {what}" for where, what in exc.problems)
    return None


def _declaration(declared: dict[str, Any], name: str, classes: set[str]) -> Any:
    """The declaration a profile's constant answers to: its own name, or - for ``<name>_<class>`` - the per-class
    constant it specialises; None for a runtime's own constant."""
    if name in declared:
        return declared[name]
    variant = hardware.class_variant(name, (k for k, d in declared.items() if d.data.get("per_hardware_class")), classes)
    return declared[variant[0]] if variant else None


def _with_declared_accepts(constant: dict[str, Any], decl: Any) -> dict[str, Any]:
    """A profile's constant with what its declaration accepts (what the quantity can mean, for every runtime) beside
    the runtime's own ``accepts`` (its argument check): both bounds hold, each source named; the runtime's bound
    wins where both state the same one."""
    declared = decl.data.get("accepts") if decl is not None else None
    if not declared:
        return constant
    own = constant.get("accepts")
    if own is None:
        return {**constant, "accepts": declared}
    extra = {k: v for k, v in declared.items() if k != "source" and k not in own}
    if not extra:
        return constant
    return {**constant, "accepts": {**extra, **own, "source": f"{own['source']}; {declared['source']}"}}


def _check_deployments(cat: Catalog, loud: Problems) -> None:
    """A runtime's ``deployment`` block (what cheapest_deployment searches) names existing formats: KV
    formats that can hold a KV cache, weights formats it has needs for and the formats it dequantizes them to."""
    for runtime in list(cat.runtimes):
        dep = runtime.data.get("deployment") or {}
        bad = [f"deployment.kv_cache_formats: {k!r} is not a quantization format with kv_cache_bits"
               for k in dep.get("kv_cache_formats", ())
               if k not in cat.quantization or "kv_cache_bits" not in cat.quantization.get(k).data]
        bad += [f"deployment.formats: {k!r} is not a registered quantization format"
                for k in dep.get("formats", {}) if k not in cat.quantization]
        bad += [f"deployment.formats.{k}.dequantized_to: {v['dequantized_to']!r} is not a registered weights format"
                for k, v in dep.get("formats", {}).items()
                if "dequantized_to" in v and (v["dequantized_to"] not in cat.quantization
                                               or cat.quantization.get(v["dequantized_to"]).data["kind"] == "alias")]
        if bad:
            _reject(cat, "runtimes", runtime, "; ".join(bad), loud)


def _check_hardware_classes(cat: Catalog, loud: Problems) -> None:
    classes = {e.key: e.data for e in cat.hardware_classes}
    for entry in list(cat.hardware_classes):
        seen, key = [entry.key], entry.data.get("fallback")
        while key is not None:
            if key not in classes:
                _reject(cat, "hardware_classes", entry, f"fallback {key!r} is not a registered hardware class", loud)
                break
            if key in seen:
                _reject(cat, "hardware_classes", entry, f"fallbacks loop: {' → '.join(seen + [key])}", loud)
                break
            seen.append(key)
            key = classes[key].get("fallback")


def _classify_gpus(cat: Catalog, loud: Problems) -> None:
    """Give every GPU its class and the class's fallback order (once, at load: resolve and the
    deployment search read them per request); a tie between two classes is a problem of the
    third-party class."""
    while True:
        classes = [(e.key, e.data) for e in cat.hardware_classes]
        for gpu in list(cat.gpus):
            named = gpu.data.get("hardware_class")
            if named is not None and named not in cat.hardware_classes:
                _reject(cat, "gpus", gpu, f"hardware_class {named!r} is not a registered hardware class", loud)
                continue
            cls, tied = hardware.classify(classes, gpu.data)
            if tied:
                third_party = [k for k in [cls, *tied] if ("hardware_classes", k) not in cat.builtin]
                problem = (f"matches GPU {gpu.key} as strongly as {', '.join(k for k in [cls, *tied])}: name more fields "
                           f"in its match rule, or set hardware_class on the GPU")
                if not third_party:
                    loud.append((f"hardware classes {', '.join([cls, *tied])}", problem))
                    return
                for k in third_party:
                    _reject(cat, "hardware_classes", cat.hardware_classes.get(k), problem, loud)
                break  # classes changed: classify every GPU again
            cat.gpu_classes[gpu.key] = cls
        else:
            by_key = {e.key: e.data for e in cat.hardware_classes}
            cat.hardware_orders = {key: hardware.lookup_order(by_key, cls) for key, cls in cat.gpu_classes.items()}
            return


def read_architectures(cat: Catalog) -> None:
    """Read every catalog model's config.json into an :class:`Architecture`, once."""
    loud: Problems = []
    for entry in list(cat.models):
        try:
            cat.architectures[entry.key] = from_hf_config(entry.data["config"], where=f"{entry.provenance.file or entry.provenance.plugin}: $.models.{entry.key}.config")
        except RequestError as exc:
            if ("models", entry.key) in cat.builtin:
                loud.extend(exc.problems)
            else:
                _reject(cat, "models", entry, str(exc), loud)
    if loud:
        raise CatalogError(loud)


def check_runtimes_against_formulas(cat: Catalog) -> None:
    """Every runtime defines every constant a formula uses; exactly one runtime is the default."""
    used = {n[3:] for f in cat.formulas.formulas.values() for n in f.inputs if n.startswith("rt_")}
    loud: Problems = []
    for entry in list(cat.runtimes):
        missing = sorted(used - set(entry.data.get("constants") or {}))
        if missing:
            _reject(cat, "runtimes", entry, f"lacks constants the formulas use: {', '.join(missing)}", loud)
    defaults = [e for e in cat.runtimes if e.data.get("default")]
    if len(defaults) > 1:
        for entry in defaults:
            if ("runtimes", entry.key) not in cat.builtin:
                _reject(cat, "runtimes", entry, "marks itself the default runtime, which a built-in runtime already is", loud)
        defaults = [e for e in cat.runtimes if e.data.get("default")]
    if len(defaults) != 1 and len(cat.runtimes):
        loud.append(("runtimes", f"exactly one runtime must be marked default, found {[e.key for e in defaults] or 'none'}"))
    if loud:
        raise CatalogError(loud)
    if defaults:
        cat.default_runtime = defaults[0].key


def check_formula_graph(cat: Catalog, runtimes: Iterable[Entry]) -> None:
    """Inputs known (scenario variables, formulas, constants every given runtime has), no circles,
    the engine's declared outputs present in their units. Raises :class:`FormulaError`."""
    names: set[str] | None = None
    for entry in runtimes:
        keys = set(entry.data.get("constants") or {})
        names = keys if names is None else names & keys
    cat.formulas.finalize(set(scenario_variable_names()) | {f"rt_{c}" for c in names or ()})
    contract.check(cat.formulas)
