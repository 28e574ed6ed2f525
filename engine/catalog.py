"""Everything vramplan knows, loaded once from its plugins: catalogs, formulas and templates.

:func:`get_catalog` builds the :class:`Catalog` on first use and keeps it; nothing is parsed or
loaded per request. :func:`reset` drops it (tests, or after installing a plugin).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from . import catalogcheck
from .architecture import Architecture
from .datafiles import is_valid, load_validated, schema_problems
from .errors import CatalogError, FormulaError
from .formulaset import FormulaFile, FormulaSet, formula_file_from_data
from .ggufmix import GgufRules, add_section, compile_all
from .pluginhost import PluginHost
from .registry import Provenance, Registry

#: Catalog sub-folder → (registry attribute, schema, top-level key).
CATALOG_KINDS = {
    "gpus": ("gpus", "catalog-gpus", "gpus"),
    "models": ("models", "catalog-models", "models"),
    "quantization": ("quantization", "catalog-quantization", "quantization_formats"),
    "interconnects": ("interconnects", "catalog-interconnects", "interconnects"),
    "runtime_constants": ("runtime_constants", "catalog-runtime-constants", "runtime_constants"),
    "runtimes": ("runtimes", "catalog-runtimes", "runtimes"),
    "optimizers": ("optimizers", "catalog-optimizers", "optimizers"),
    "hardware_classes": ("hardware_classes", "catalog-hardware-classes", "hardware_classes"),
    "format_rules": ("format_rules", "catalog-format-rules", "format_rules"),
}
#: Hook name → catalog kind, for plugins that register entries in code.
REGISTER_HOOKS = {
    "register_gpus": "gpus",
    "register_models": "models",
    "register_quantization_formats": "quantization",
    "register_interconnects": "interconnects",
    "register_runtime_constants": "runtime_constants",
    "register_runtimes": "runtimes",
    "register_optimizers": "optimizers",
    "register_hardware_classes": "hardware_classes",
    "register_format_rules": "format_rules",
}
_FIELDS = {"gpus": ("GPU", "gpu_key"), "models": ("model", "llm_key"), "quantization": ("quantization format", "quantization"),
           "interconnects": ("interconnect", "interconnect_type"), "runtimes": ("runtime", "runtime"),
           "runtime_constants": ("runtime constant", "runtime_settings"), "optimizers": ("optimizer", "optimizer"),
           "hardware_classes": ("hardware class", "hardware_class"), "format_rules": ("format rule", "format_rule")}


def _registry(kind: str):
    return field(default_factory=lambda: Registry(*_FIELDS[kind]))


@dataclass
class Catalog:
    host: PluginHost
    gpus: Registry = _registry("gpus")
    models: Registry = _registry("models")
    quantization: Registry = _registry("quantization")
    interconnects: Registry = _registry("interconnects")
    runtimes: Registry = _registry("runtimes")
    runtime_constants: Registry = _registry("runtime_constants")
    optimizers: Registry = _registry("optimizers")
    hardware_classes: Registry = _registry("hardware_classes")
    format_rules: Registry = _registry("format_rules")
    formulas: FormulaSet = field(default_factory=FormulaSet)
    template_dirs: list[Path] = field(default_factory=list)
    architectures: dict[str, Architecture] = field(default_factory=dict)
    gguf: GgufRules = field(default_factory=GgufRules)  # llama.cpp's per-tensor GGUF type rules
    default_runtime: str = "transformers"
    #: GPU key → its hardware class (None: no class matches; estimates warn).
    gpu_classes: dict[str, str | None] = field(default_factory=dict)
    #: GPU key → its class and the class's fallbacks, most specific first (:func:`hardware.lookup_order`).
    hardware_orders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: (kind, key) of entries from vramplan's own data: a problem with one fails loudly.
    builtin: set[tuple[str, str]] = field(default_factory=set)

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


def _packaged(root: Path, package: str) -> bool:
    """Whether ``root`` is vramplan's own data folder (``vramplan.catalogs`` / ``vramplan.formulas``)."""
    try:
        return root.resolve() == Path(str(resources.files(package))).resolve()
    except (ModuleNotFoundError, OSError):  # pragma: no cover - the package is always installed
        return False


def _load_catalog_dir(cat: Catalog, root: Path, plugin: str) -> None:
    """Load one catalog folder. vramplan's own folder fails loudly; any other (a plugin's, the user's)
    is isolated per file: a file that does not validate or claims a taken key is named and skipped."""
    strict = cat.host.is_builtin(plugin) and _packaged(root, "vramplan.catalogs")
    contributor = plugin if not cat.host.is_builtin(plugin) else str(root)
    if not root.is_dir():
        if strict:
            raise CatalogError([(str(root), "catalog folder does not exist")])
        cat.host.record_failure(contributor, f"catalog folder {root} does not exist", version="n/a")
        return
    problems = []
    for sub, (attr, schema, top) in CATALOG_KINDS.items():
        folder = root / sub
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.yaml")):
            shown = _display(path) if strict else str(path)
            registry = getattr(cat, attr)
            try:
                data = load_validated(path, schema, shown)
                entries = (data.get(top) or {}).items()
                if not strict:  # all or nothing: a file that claims a taken key is skipped whole
                    taken = [(f"{registry.kind} {key!r}", f"registered twice: by {registry.get(key).provenance} and by "
                              f"{Provenance(plugin, shown)}") for key, _ in entries if key in registry]
                    if taken:
                        raise CatalogError(taken)
                if sub == "quantization" and data.get("gguf"):  # llama.cpp's per-tensor type rules
                    gguf_problems = add_section(cat.gguf, data["gguf"], shown)
                    if gguf_problems:
                        raise CatalogError(gguf_problems)
                for key, entry in entries:
                    registry.add(key, entry, Provenance(plugin, shown))
                    if strict:
                        cat.builtin.add((sub, key))
            except CatalogError as exc:
                if strict:
                    problems.extend(exc.problems)
                else:
                    cat.host.record_failure(contributor, f"{shown} skipped: {exc}", version="n/a")
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
                if host.is_builtin(plugin):
                    cat.builtin.add((kind, key))


def _formula_dirs(host: PluginHost) -> list[tuple[Path, str, str]]:
    """``(folder, source, origin)``: origin is "builtin", "plugin" (isolated) or "env" (fails loudly)."""
    dirs = [(Path(d), name, "builtin" if host.is_builtin(name) else "plugin")
            for name, result in host.call_each("register_formula_dirs") for d in (result or [])]
    env = os.environ.get("VRAMPLAN_FORMULA_PATH", "")
    dirs += [(Path(p), f"VRAMPLAN_FORMULA_PATH:{p}", "env") for p in env.split(os.pathsep) if p.strip()]
    return dirs


def _parse_formula_folder(folder: Path, source: str, shown_relative: bool) -> tuple[list[FormulaFile], list[tuple[str, str]]]:
    files, problems = [], []
    for path in sorted(folder.rglob("*.yaml")):
        shown = _display(path) if shown_relative else str(path)
        try:
            data = load_validated(path, "formula-file", shown)
            files.append(formula_file_from_data(data, file=shown, source=source))
        except (CatalogError, FormulaError) as exc:
            problems.extend(exc.problems)
    return files, problems


def _load_formulas(cat: Catalog, host: PluginHost) -> None:
    """Built-in formulas and ``VRAMPLAN_FORMULA_PATH`` folders fail loudly; a plugin's formula folder is
    all or nothing: if one of its files does not load, or its formulas do not fit the graph (unknown
    inputs, circles, the engine's declared outputs, another folder's override of the same id), the
    plugin's formulas are skipped and the failure names the files."""
    problems = []
    for folder, source, origin in _formula_dirs(host):
        if not folder.is_dir():
            if origin == "plugin":
                host.record_failure(source, f"formula folder {folder} does not exist")
            else:
                problems.append((str(folder), f"formula folder from {source} does not exist"))
            continue
        files, file_problems = _parse_formula_folder(folder, source, origin == "builtin")
        if origin != "plugin":
            problems.extend(file_problems)
            for ff in files:
                try:
                    cat.formulas.add(ff, may_override=origin != "builtin")
                except FormulaError as exc:
                    problems.extend(exc.problems)
            continue
        if file_problems:
            host.record_failure(source, "formulas skipped: " + "; ".join(f"{w}: {m}" for w, m in file_problems))
            continue
        saved = cat.formulas.snapshot()
        try:
            for ff in files:
                cat.formulas.add(ff, may_override=True)
            catalogcheck.check_formula_graph(cat, runtimes=[e for e in cat.runtimes if ("runtimes", e.key) in cat.builtin])
        except FormulaError as exc:
            cat.formulas.restore(saved)
            host.record_failure(source, f"formulas skipped: {exc}")
    if problems:
        raise FormulaError(problems)


def build_catalog(load_entrypoints: bool | None = None, extra_plugins: tuple = ()) -> Catalog:
    """Load every plugin's data and check it as a whole.

    Order matters: catalogs first (declared runtime constants fill the runtime profiles' gaps, GPUs
    get their hardware class), then formulas (checked against the runtimes and the engine's declared
    outputs), then the runtimes against what the formulas use."""
    host = PluginHost(load_entrypoints=load_entrypoints, extra_plugins=extra_plugins)
    cat = Catalog(host=host)
    for name, dirs in host.call_each("register_catalog_dirs"):
        for d in dirs or []:
            _load_catalog_dir(cat, Path(d), name)
    _register_from_code(cat, host)
    for name, dirs in host.call_each("register_report_templates"):
        cat.template_dirs.extend(Path(d) for d in dirs or [])
    catalogcheck.check_catalog(cat)
    cat.runtimes.order_by(lambda e: (not e.data.get("default"), e.key))
    _load_formulas(cat, host)
    catalogcheck.check_runtimes_against_formulas(cat)
    catalogcheck.read_architectures(cat)
    compile_all(cat.gguf, cat.quantization)
    catalogcheck.check_formula_graph(cat, runtimes=list(cat.runtimes))
    return cat


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
