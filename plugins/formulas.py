"""Built-in formulas: memory components, optimizations and performance models."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from vramplan.hookspecs import hookimpl


@hookimpl
def register_formula_dirs():
    return [Path(str(resources.files("vramplan.formulas")))]
