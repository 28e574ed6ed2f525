"""The engine's declared contract with the formula graph: ``vocabulary/outputs.yaml``.

Python reads some formula ids directly (the response's figures, the KV pool, per-GPU memory of
pipeline stages). They are declared in data with their unit, so the loader can check any formula
set (overrides and plugins included) against them and fail at load, naming the file and the
formula, instead of at the first request that reads a missing or mis-scaled value.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .datafiles import load_validated
from .errors import FormulaError

OUTPUTS_FILE = "vocabulary/outputs.yaml"
WORKLOADS = ("inference", "finetuning")


@lru_cache(maxsize=1)
def declared_outputs() -> dict[str, dict[str, Any]]:
    """Formula id → ``{unit, workloads, meaning, read_by}``."""
    path = Path(str(resources.files("vramplan.vocabulary").joinpath("outputs.yaml")))
    return load_validated(path, "vocabulary-outputs", OUTPUTS_FILE)["outputs"]


def outputs_by_workload() -> dict[str, tuple[str, ...]]:
    """The ids the engine evaluates for each workload, besides the memory components."""
    return {w: tuple(fid for fid, d in declared_outputs().items() if w in d["workloads"]) for w in WORKLOADS}


def stage_outputs() -> frozenset[str]:
    """The declared outputs read only for a response with pipeline stages (``only_for: pipeline_stages``)."""
    return frozenset(fid for fid, d in declared_outputs().items() if d.get("only_for") == "pipeline_stages")


def check(formulas) -> None:
    """Every declared output is a formula in its declared unit; every memory component is in bytes."""
    problems = []
    for fid, decl in declared_outputs().items():
        f = formulas.formulas.get(fid)
        if f is None:
            problems.append((OUTPUTS_FILE, f"the engine reads {fid} ({decl['read_by']}), which no loaded formula defines"))
        elif f.unit != decl["unit"]:
            problems.append((f"{f.file}: formula {fid}", f"unit is {f.unit!r}, but the engine reads it in {decl['unit']!r} "
                             f"for {decl['read_by']} ({OUTPUTS_FILE})"))
    for ff in formulas.files.values():
        c = ff.component
        f = formulas.formulas.get(c.output) if c else None
        if f is not None and f.unit != "bytes" and f.id not in declared_outputs():  # else reported above
            problems.append((f"{f.file}: formula {f.id}", f"unit is {f.unit!r}, but it is the output of memory component "
                             f"{c.label!r} ({c.file}), which the engine reads in 'bytes'"))
    if problems:
        raise FormulaError(problems)
