"""The plugin contract: every hook vramplan calls, typed and documented.

A plugin is a module (or object) with functions marked ``@vramplan.hookimpl``. Built-in plugins
in ``vramplan.plugins`` use exactly these hooks; third-party packages arrive through the
``vramplan`` entry-point group::

    # pyproject.toml of a plugin package
    [project.entry-points.vramplan]
    acme = "vramplan_acme"

Registration hooks receive a ``register`` callable; each call adds one entry, and the registry
records which plugin (and file, where there is one) supplied it. A key registered twice is an
error naming both contributors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("vramplan")
hookimpl = pluggy.HookimplMarker("vramplan")

#: ``register(key, entry)``: ``entry`` is a dict in the shape of the matching catalog schema.
Register = Callable[[str, dict[str, Any]], None]


@hookspec
def register_gpus(register: Register) -> None:
    """Add accelerators (schema: ``catalog-gpus``, one entry of ``gpus``).

    Example::

        @hookimpl
        def register_gpus(register):
            register("acme_x1", {"label": "ACME X1", "vendor": "other", "memory_gib": 48, ...})
    """


@hookspec
def register_models(register: Register) -> None:
    """Add model variants (schema: ``catalog-models``), architecture as in ``config.json``.

    Example: ``register("my-7b", {"name": "My 7B", "family": "llama", "config": {...}, ...})``
    """


@hookspec
def register_quantization_formats(register: Register) -> None:
    """Add weight / KV-cache storage formats (schema: ``catalog-quantization``).

    Example: ``register("q4_acme", {"label": "ACME 4-bit", "kind": "integer", "bits": {"default": 4.25}, ...})``
    """


@hookspec
def register_interconnects(register: Register) -> None:
    """Add GPU-to-GPU or host links (schema: ``catalog-interconnects``).

    Example: ``register("acme_link", {"label": "ACME Link", "bandwidth_gb_s": 200, "latency_us": 2, ...})``
    """


@hookspec
def register_runtimes(register: Register) -> None:
    """Add runtime profiles (schema: ``catalog-runtimes``): constants formulas see as ``rt_<name>``.

    Example: ``register("my-server", {"label": "My server", "description": "...", "constants": {...}})``
    """


@hookspec
def register_runtime_constants(register: Register) -> None:
    """Declare runtime constants (schema: ``catalog-runtime-constants``): a runtime profile that lacks
    one gets its ``default``, so a plugin formula can use a new ``rt_<name>`` with every runtime.

    Example: ``register("acme_prefetch_mib", {"unit": "MiB", "description": "...", "default": 0, "source": "..."})``
    """


@hookspec
def register_optimizers(register: Register) -> None:
    """Add optimizers a fine-tuning request can name (schema: ``catalog-optimizers``).

    Example: ``register("lion", {"label": "Lion", "states_per_param": 1, "state_dtype": "param", "source": "..."})``
    """


@hookspec
def register_hardware_classes(register: Register) -> None:
    """Add hardware classes: GPUs whose runtime efficiencies differ (schema: ``catalog-hardware-classes``).

    Example: ``register("acme", {"label": "ACME", "match": [{"vendor": "other", "architecture": "acme-1"}],
    "backend": "ACME RT", "calibrated": False, "fallback": "nvidia_datacenter", "source": "..."})``
    """


@hookspec
def register_format_rules(register: Register) -> None:
    """Add format rules: the weights a fine-tuning method trains on, the runtime a format defaults to
    (schema: ``catalog-format-rules``).

    Example: ``register("acme_q_on_acme", {"when": {"quantization_kind": "acme"}, "runtime": "acme-server", "source": "..."})``
    """


@hookspec
def register_catalog_dirs() -> list[Path | str]:
    """Return folders of catalog YAML (sub-folders ``gpus/``, ``models/``, ``quantization/``,
    ``interconnects/``, ``runtimes/``, ``runtime_constants/``, ``optimizers/``, ``hardware_classes/``,
    ``format_rules/``), each file validated against its schema. A file that does not validate or claims
    a key already taken is named in the plugin failures and skipped; the rest keeps loading.

    Example: ``return [Path(__file__).parent / "catalogs"]``
    """


@hookspec
def register_formula_dirs() -> list[Path | str]:
    """Return folders of formula YAML; a formula whose id is built in overrides it. The folder is
    all or nothing: if a file does not load or the formulas do not fit the graph, the plugin's formulas
    are skipped and named in the plugin failures. Two folders may not define or override one id.

    Example: ``return [Path(__file__).parent / "formulas"]``
    """


@hookspec
def register_report_templates() -> list[Path | str]:
    """Return folders of jinja2 report templates; earlier plugins' templates are overridden.

    Example: ``return [Path(__file__).parent / "templates"]``
    """
