"""Finds, loads and isolates plugins.

Built-in plugins are listed by module name in :data:`DEFAULT_PLUGINS` and registered exactly like
third-party ones, which arrive through the ``vramplan`` entry-point group. A third-party plugin
that fails to import, or raises inside a hook, is recorded in :attr:`PluginHost.failures` (name,
version, error) and skipped; a failing built-in raises :class:`~vramplan.errors.PluginError`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError

#: Built-in plugins, in registration order.
DEFAULT_PLUGINS = (
    "vramplan.plugins.catalogs",
    "vramplan.plugins.formulas",
    "vramplan.plugins.templates",
)

ENTRY_POINT_GROUP = "vramplan"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str
    builtin: bool
    hooks: tuple[str, ...]


@dataclass(frozen=True)
class PluginFailure:
    name: str
    version: str
    error: str


class PluginHost:
    """One plugin manager plus what it knows of each plugin's origin."""

    def __init__(self, load_entrypoints: bool | None = None, extra_plugins: tuple[Any, ...] = ()):
        if load_entrypoints is None:
            load_entrypoints = os.environ.get("VRAMPLAN_NO_ENTRYPOINTS", "") in ("", "0")
        self.pm = pluggy.PluginManager("vramplan")
        self.pm.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self._versions: dict[str, str] = {}
        self._builtin: set[str] = set()
        from .version import __version__

        for modname in DEFAULT_PLUGINS:
            module = importlib.import_module(modname)
            self.pm.register(module, name=modname)
            self._versions[modname] = __version__
            self._builtin.add(modname)
        if load_entrypoints:
            self._load_entrypoints()
        for plugin in extra_plugins:
            name = getattr(plugin, "__name__", None) or type(plugin).__name__
            self.pm.register(plugin, name=name)
            self._versions[name] = str(getattr(plugin, "__version__", "n/a"))
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"a plugin implements a hook vramplan does not have: {exc}") from None

    def _load_entrypoints(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            version = dist.version if dist is not None else "unknown"
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=ep.name)
                self.pm.check_pending()
            except Exception as exc:  # a broken third-party plugin must not take vramplan down
                if self.pm.has_plugin(ep.name):
                    self.pm.unregister(name=ep.name)
                self.failures.append(PluginFailure(ep.name, version, f"{type(exc).__name__}: {exc}"))
                continue
            self._versions[ep.name] = version

    def is_builtin(self, name: str) -> bool:
        return name in self._builtin

    def call_each(self, hook_name: str, *args: Any) -> list[tuple[str, Any]]:
        """Call every implementation of a hook on its own, so one failure cannot hide the rest.

        Returns ``(plugin name, result)`` pairs in registration order (built-ins first); a failed
        third-party implementation is recorded in :attr:`failures` and left out.
        """
        results = []
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():  # registration order
            results.extend(self.call_each_impl(impl, hook_name, *args))
        return results

    def call_each_impl(self, impl: Any, hook_name: str, *args: Any) -> list[tuple[str, Any]]:
        name = self.pm.get_name(impl.plugin) or repr(impl.plugin)
        try:
            return [(name, impl.function(*args))]
        except PluginError:
            raise
        except Exception as exc:
            if self.is_builtin(name):
                raise PluginError(f"built-in plugin {name} failed in {hook_name}: {type(exc).__name__}: {exc}") from exc
            self.record_failure(name, f"{hook_name}: {type(exc).__name__}: {exc}")
            return []

    def record_failure(self, name: str, error: str, version: str | None = None) -> None:
        """Record a third-party plugin, data file or folder that was skipped, and why."""
        self.failures.append(PluginFailure(name, version or self._versions.get(name, "unknown"), error))

    def plugins(self) -> list[PluginInfo]:
        out = []
        for name, plugin in self.pm.list_name_plugin():
            hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()))
            out.append(PluginInfo(name, self._versions.get(name, "unknown"), name in self._builtin, hooks))
        return out
