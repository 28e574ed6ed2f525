"""Everything vramplan knows, loaded once from its plugins: catalogs, formulas and templates.

:func:`get_catalog` builds the :class:`Catalog` on first use and keeps it; nothing is parsed or
loaded per request. :func:`reset` drops it (tests, or after installing a plugin).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .architecture import Architecture, from_hf_config
from .datafiles import is_valid, load_validated, schema_problems
from .errors import CatalogError, FormulaError, RequestError
from .formulaset import FormulaSet, formula_file_from_data
from .ggufmix import GgufRules, add_section, compile_all
from .pluginhost import PluginHost
from .registry import Provenance, Registry

#: Catalog sub-folder → (registry attribute, schema, top-level key).
CATALOG_KINDS = {
    "gpus": ("gpus", "catalog-gpus", "gpus"),
    "models": ("models", "catalog-models", "models"),
    "quantization": ("quantization", "catalog-quantization", "quantization_formats"),
    "interconnects": ("interconnects", "catalog-interconnects", "interconnects"),
    "runtimes": ("runtimes", "catalog-runtimes", "runtimes"),
}
#: Hook name → catalog kind, for plugins that register entries in code.
REGISTER_HOOKS = {
    "register_gpus": "gpus",
    "register_models": "models",
    "register_quantization_formats": "quantization",
    "register_interconnects": "interconnects",
    "register_runtimes": "runtimes",
}
_FIELDS = {"gpus": ("GPU", "gpu_key"), "models": ("model", "llm_key"), "quantization": ("quantization format", "quantization"),
           "interconnects": ("interconnect", "interconnect_type"), "runtimes": ("runtime", "runtime")}


@dataclass
class Catalog:
    host: PluginHost
    gpus: Registry = field(default_factory=lambda: Registry(*_FIELDS["gpus"]))
    models: Registry = field(default_factory=lambda: Registry(*_FIELDS["models"]))
    quantization: Registry = field(default_factory=lambda: Registry(*_FIELDS["quantization"]))
    interconnects: Registry = field(default_factory=lambda: Registry(*_FIELDS["interconnects"]))
    runtimes: Registry = field(default_factory=lambda: Registry(*_FIELDS["runtimes"]))
    formulas: FormulaSet = field(default_factory=FormulaSet)
    template_dirs: list[Path] = field(default_factory=list)
    architectures: dict[str, Architecture] = field(default_factory=dict)
    gguf: GgufRules = field(default_factory=GgufRules)  # llama.cpp's per-tensor GGUF type rules
    default_runtime: str = "transformers"

    def registry(self, kind: str) -> Registry:
        return getattr(self, CATALOG_KINDS[kind][0])


def _display(path: Path) -> str:
    """A short, stable name for a data file: relative to its package or the working directory."""
    parts = path.parts
    for anchor in ("catalogs", "formulas"):
        if anchor in parts:
            i = len(parts) - 1 - parts[::-1].index(anchor)
            return "/".join(parts[i:])
    return str(path)


def _load_catalog_dir(cat: Catalog, root: Path, plugin: str) -> None:
    problems = []
    for sub, (attr, schema, top) in CATALOG_KINDS.items():
        folder = root / sub
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.yaml")):
            shown = _display(path)
            try:
                data = load_validated(path, schema, shown)
            except CatalogError as exc:
                problems.extend(exc.problems)
                continue
            for key, entry in (data.get(top) or {}).items():
                try:
                    getattr(cat, attr).add(key, entry, Provenance(plugin, shown))
                except CatalogError as exc:
                    problems.extend(exc.problems)
            if sub == "quantization" and data.get("gguf"):
                problems.extend(add_section(cat.gguf, data["gguf"], shown))
    if problems:
        raise CatalogError(problems)


def _register_from_code(cat: Catalog, host: PluginHost) -> None:
    for hook, kind in REGISTER_HOOKS.items():
        attr, schema, top = CATALOG_KINDS[kind]
        impls = getattr(host.pm.hook, hook).get_hookimpls()
        for impl in impls:  # registration order: built-ins first
            plugin = host.pm.get_name(impl.plugin)
            staged: list[tuple[str, dict]] = []

            def register(key: str, entry: dict[str, Any], _staged=staged) -> None:
                _staged.append((key, entry))

            results = dict(host.call_each_impl(impl, hook, register))
            if plugin not in results:
                continue  # failed third-party plugin: already reported and skipped
            problems = []
            for key, entry in staged:
                if not is_valid({top: {key: entry}}, schema):  # the fast check; the slow one explains
                    problems += [(f"plugin {plugin}: {kind} {key!r}: {w}", m) for w, m in schema_problems({top: {key: entry}}, schema)]
            if problems:
                if host.is_builtin(plugin):
                    raise CatalogError(problems)
                host.record_failure(plugin, "; ".join(f"{w}: {m}" for w, m in problems))
                continue
            for key, entry in staged:
                getattr(cat, attr).add(key, entry, Provenance(plugin))


def _formula_dirs(host: PluginHost) -> list[tuple[Path, str]]:
    dirs = [(Path(d), name) for name, result in host.call_each("register_formula_dirs") for d in (result or [])]
    env = os.environ.get("VRAMPLAN_FORMULA_PATH", "")
    dirs += [(Path(p), f"VRAMPLAN_FORMULA_PATH:{p}") for p in env.split(os.pathsep) if p.strip()]
    return dirs


def _load_formulas(cat: Catalog, host: PluginHost) -> None:
    problems = []
    first_source = None
    for folder, source in _formula_dirs(host):
        if not folder.is_dir():
            problems.append((str(folder), f"formula folder from {source} does not exist"))
            continue
        first_source = first_source or source
        for path in sorted(folder.rglob("*.yaml")):
            shown = _display(path) if source == first_source else str(path)
            try:
                data = load_validated(path, "formula-file", shown)
                ff = formula_file_from_data(data, file=shown, source=source)
                cat.formulas.add(ff, may_override=source != first_source)
            except (CatalogError, FormulaError) as exc:
                problems.extend(exc.problems)
    if problems:
        raise FormulaError(problems)


def build_catalog(load_entrypoints: bool | None = None, extra_plugins: tuple = ()) -> Catalog:
    """Load every plugin's data and check it as a whole."""
    from .scenario import scenario_variable_names

    host = PluginHost(load_entrypoints=load_entrypoints, extra_plugins=extra_plugins)
    cat = Catalog(host=host)
    for name, dirs in host.call_each("register_catalog_dirs"):
        for d in dirs or []:
            _load_catalog_dir(cat, Path(d), name)
    _register_from_code(cat, host)
    for name, dirs in host.call_each("register_report_templates"):
        cat.template_dirs.extend(Path(d) for d in dirs or [])
    _load_formulas(cat, host)
    _resolve_runtime_bases(cat)
    _check_runtimes(cat)
    _read_architectures(cat)
    compile_all(cat.gguf, cat.quantization)
    cat.formulas.finalize(set(scenario_variable_names()) | {f"rt_{c}" for c in _runtime_constants(cat)})
    return cat


def _resolve_runtime_bases(cat: Catalog) -> None:
    """A runtime that ``extends`` another inherits its constants and overrides some (sglang of vllm).

    The merged entry keeps its own provenance; each inherited constant keeps its own ``source``.
    An unknown base or a cycle is an error naming the runtime and its file."""
    problems = []
    merged: dict[str, dict[str, Any]] = {}

    def resolve(key: str, seen: tuple[str, ...]) -> dict[str, Any] | None:
        if key in merged:
            return merged[key]
        entry = cat.runtimes.get(key)
        base_key = entry.data.get("extends")
        if base_key is None:
            merged[key] = entry.data
            return entry.data
        if base_key in seen or base_key not in cat.runtimes:
            why = "extends itself through " + " -> ".join((*seen, base_key)) if base_key in seen else \
                f"extends unknown runtime {base_key!r}"
            problems.append((f"runtime {key} ({entry.provenance})", why))
            return None
        base = resolve(base_key, (*seen, base_key))
        if base is None:
            return None
        data = {**{k: v for k, v in base.items() if k not in ("default", "assumptions")}, **entry.data,
                "constants": {**base["constants"], **entry.data.get("constants", {})}}
        merged[key] = data
        return data

    for entry in list(cat.runtimes):
        data = resolve(entry.key, (entry.key,))
        if data is not None and data is not entry.data:
            cat.runtimes.replace(entry.key, data)
    if problems:
        raise CatalogError(problems)


def _runtime_constants(cat: Catalog) -> set[str]:
    names: set[str] | None = None
    for entry in cat.runtimes:
        keys = set(entry.data["constants"])
        names = keys if names is None else names & keys
    return names or set()


def _check_runtimes(cat: Catalog) -> None:
    """Every runtime must define every constant any formula uses; exactly one is the default."""
    used = {n[3:] for f in cat.formulas.formulas.values() for n in f.inputs if n.startswith("rt_")}
    problems = []
    for entry in cat.runtimes:
        missing = sorted(used - set(entry.data["constants"]))
        if missing:
            problems.append((f"runtime {entry.key} ({entry.provenance})", f"lacks constants the formulas use: {', '.join(missing)}"))
    defaults = [e.key for e in cat.runtimes if e.data.get("default")]
    if len(defaults) != 1 and len(cat.runtimes):
        problems.append(("runtimes", f"exactly one runtime must be marked default, found {defaults or 'none'}"))
    if problems:
        raise CatalogError(problems)
    if defaults:
        cat.default_runtime = defaults[0]


def _read_architectures(cat: Catalog) -> None:
    problems = []
    for entry in cat.models:
        try:
            cat.architectures[entry.key] = from_hf_config(entry.data["config"], where=f"{entry.provenance.file or entry.provenance.plugin}: $.models.{entry.key}.config")
        except RequestError as exc:
            problems.extend(exc.problems)
    if problems:
        raise CatalogError(problems)


_lock = threading.Lock()
_catalog: Catalog | None = None


def get_catalog() -> Catalog:
    global _catalog
    if _catalog is None:
        with _lock:
            if _catalog is None:
                _catalog = build_catalog()
    return _catalog


def reset(catalog: Catalog | None = None) -> None:
    """Forget the loaded catalog (the next call reloads), or install a given one."""
    global _catalog
    with _lock:
        _catalog = catalog
