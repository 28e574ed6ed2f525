"""The wheel carries the data: formulas, catalogs and schemas ship inside the package.

The wheel is built with the setuptools the test extra installs (``setuptools>=77``, as the build
system requires), so the test passes in a fresh ``python3 -m venv`` after the README's
``pip install -e ".[test]"``, with no network and no ``pip install --upgrade`` first."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_formulas_catalogs_and_schemas(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [wheel] = tmp_path.glob("vramplan-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("formulas", "catalogs", "schemas"):
        shipped = {n for n in names if n.startswith(f"vramplan/{folder}/")}
        expected = {f"vramplan/{p.relative_to(ROOT).as_posix()}" for p in (ROOT / folder).rglob("*")
                    if p.is_file() and p.suffix in (".yaml", ".json")}
        assert expected and expected <= shipped, sorted(expected - shipped)[:5]
    assert "vramplan/cli/__init__.py" in names and "vramplan/cli/plan.py" in names and "vramplan/plugins/catalogs.py" in names
    assert not any(n.startswith(("engine/", "plugins/")) for n in names)  # no top-level engine/plugins modules
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "vramplan = vramplan.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata  # the SPDX string (PEP 639), not the deprecated table
    assert "vramplan/server/static/charts.js" in names  # the page's scripts ship too
