"""Built-in report templates (Markdown and HTML)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from vramplan.hookspecs import hookimpl


@hookimpl
def register_report_templates():
    return [Path(str(resources.files("vramplan"))) / "templates"]
