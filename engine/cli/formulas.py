"""``vramplan formulas list|check|show ID``: the formula graph, as loaded with every plugin and override.

- ``list``: every formula (id, unit, what it is, its file) and every scenario variable and declared
  runtime constant formulas compute over (name, unit, meaning);
- ``check``: the golden cases of every loaded formula file (:mod:`vramplan.goldencases`), overrides
  included; exit status 1, naming each case, when one no longer holds;
- ``show ID``: one formula with its expression, each input (kind, unit, meaning), what reads it, its
  references and golden cases.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

import click

from ..errors import RequestError
from .common import LIST_FORMAT


@click.group("formulas")
def formulas() -> None:
    """The formulas and the scenario variables they compute over."""


def _catalog():
    from ..catalog import get_catalog

    return get_catalog()


def _first_line(text: str) -> str:
    return " ".join(text.split()).split(". ")[0].rstrip(".")


def _variables(cat) -> list[dict[str, Any]]:
    from ..scenario import VARIABLES

    rows = [{"name": n, "unit": u, "meaning": m, "kind": "scenario"} for n, (u, m) in VARIABLES.items()]
    rows += [{"name": f"rt_{e.key}", "unit": e.data["unit"], "meaning": e.data["description"], "kind": "runtime",
              **({"default": e.data["default"]} if "default" in e.data else {})} for e in cat.runtime_constants]
    return rows


@formulas.command("list")
@LIST_FORMAT
def list_formulas(fmt: str) -> None:
    """Every formula, scenario variable and declared runtime constant, with units and meanings."""
    cat = _catalog()
    fs = cat.formulas
    rows = [{"id": f.id, "unit": f.unit, "description": " ".join(f.description.split()), "file": f.file,
             "source": fs.source_of(f.id), "overrides": fs.overridden[f.id].file if f.id in fs.overridden else None}
            for f in sorted(fs.formulas.values(), key=lambda f: f.id)]
    variables = _variables(cat)
    if fmt == "json":
        click.echo(json.dumps({"formulas": rows, "variables": variables}, indent=2))
        return
    idw = max(len(r["id"]) for r in rows)
    unitw = max(len(r["unit"]) for r in rows + variables)
    click.echo(f"Formulas ({len(rows)}): id, unit, what it is [file]")
    for r in rows:
        over = f"; overrides {r['overrides']}" if r["overrides"] else ""
        click.echo(f"  {r['id']:<{idw}}  {r['unit']:<{unitw}}  {_first_line(r['description'])} [{r['file']}{over}]")
    namew = max(len(v["name"]) for v in variables)
    scenario = [v for v in variables if v["kind"] == "scenario"]
    click.echo(f"\nScenario variables ({len(scenario)}): the request, model, GPU and runtime as numbers")
    for v in scenario:
        click.echo(f"  {v['name']:<{namew}}  {v['unit']:<{unitw}}  {v['meaning']}")
    declared = [v for v in variables if v["kind"] == "runtime"]
    click.echo(f"\nDeclared runtime constants ({len(declared)}): besides every constant of the runtime profile in use "
               f"(vramplan runtimes)")
    for v in declared:
        default = f" (default {v['default']:g})" if "default" in v else ""
        click.echo(f"  {v['name']:<{namew}}  {v['unit']:<{unitw}}  {v['meaning']}{default}")


@formulas.command("check")
@click.option("--verbose", "-v", is_flag=True, help="Also list the cases that hold and those superseded.")
def check(verbose: bool) -> None:
    """Run the golden cases of every loaded formula file; exit 1 if one no longer holds."""
    from ..goldencases import run

    results = run(_catalog().formulas)
    failed = [r for r in results if r.status == "failed"]
    superseded = [r for r in results if r.status == "superseded"]
    for r in results:
        if r.status == "failed" or verbose:
            why = f": {r.message}" if r.message else ""
            click.echo(f"{r.status.upper():<10} {r.name} {r.formula}{why}" + (f" ({r.note})" if r.note and r.status == "failed" else ""))
    files = len({r.file for r in results})
    click.echo(f"{len(results)} golden cases in {files} files: {len(results) - len(failed) - len(superseded)} hold, "
               f"{len(failed)} do not, {len(superseded)} superseded by overrides")
    if failed:
        raise SystemExit(1)


def _input_row(cat, name: str) -> dict[str, Any]:
    from ..scenario import VARIABLES

    fs = cat.formulas
    if name in fs.formulas:
        f = fs.formulas[name]
        return {"name": name, "kind": "formula", "unit": f.unit, "meaning": _first_line(f.description), "where": f.file}
    if name in VARIABLES:
        unit, meaning = VARIABLES[name]
        return {"name": name, "kind": "scenario variable", "unit": unit, "meaning": meaning, "where": "vramplan.scenario"}
    if name.startswith("rt_"):
        const = name[3:]
        if const in cat.runtime_constants:
            d = cat.runtime_constants.get(const)
            return {"name": name, "kind": "runtime constant", "unit": d.data["unit"], "meaning": d.data["description"],
                    "where": str(d.provenance)}
        profile = cat.runtimes.get(cat.default_runtime)
        c = profile.data["constants"].get(const, {})
        return {"name": name, "kind": "runtime constant", "unit": str(c.get("unit", "")),
                "meaning": str(c.get("description") or c.get("source", "")),
                "where": f"runtime profiles ({cat.default_runtime}: {c.get('value', 'n/a')})"}
    return {"name": name, "kind": "unknown", "unit": "", "meaning": "", "where": ""}


def _readers(cat, fid: str) -> list[str]:
    from ..contract import OUTPUTS_FILE, declared_outputs

    fs = cat.formulas
    out = [f"formula {f.id}" for f in sorted(fs.formulas.values(), key=lambda f: f.id) if fid in f.inputs]
    out += [f"memory component {ff.component.label!r} ({ff.file})" for ff in fs.files.values()
            if ff.component and ff.component.output == fid]
    if fid in declared_outputs():
        out.append(f"the engine: {declared_outputs()[fid]['read_by']} ({OUTPUTS_FILE})")
    return out


@formulas.command("show")
@click.argument("formula_id")
@LIST_FORMAT
def show(formula_id: str, fmt: str) -> None:
    """One formula: expression, inputs with units and meanings, what reads it, references, golden cases."""
    from ..goldencases import run_case

    cat = _catalog()
    fs = cat.formulas
    f = fs.formulas.get(formula_id)
    if f is None:
        close = difflib.get_close_matches(formula_id, list(fs.formulas), n=5, cutoff=0.5)
        raise RequestError([("ID", f"no formula is called {formula_id!r}")], suggestions={"ID": close})
    ff = next(x for x in reversed(fs.loaded_files) if any(g is f for g in x.formulas))
    cases = [run_case(fs, x, i, c) for x in fs.loaded_files for i, c in enumerate(x.cases) if c["formula"] == f.id]
    data = {"id": f.id, "unit": f.unit, "description": " ".join(f.description.split()), "expr": f.expr,
            "file": f.file, "source": fs.source_of(f.id),
            "overrides": fs.overridden[f.id].file if f.id in fs.overridden else None,
            "inputs": [_input_row(cat, n) for n in f.inputs], "read_by": _readers(cat, f.id),
            "references": list(f.references) + [r for r in ff.references if r not in f.references],
            "cases": [{"case": c.name, "status": c.status, "expected": c.expected, "note": c.note} for c in cases]}
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
        return
    lines = [f"{f.id} [{f.unit}]", f"  {data['description']}", f"  file: {f.file} ({data['source']})"]
    if data["overrides"]:
        lines.append(f"  overrides: {data['overrides']}")
    lines += ["", f"  {f.id} = {f.expr}", "", "  inputs:"]
    if data["inputs"]:
        w = max(len(r["name"]) for r in data["inputs"])
        kw = max(len(r["kind"]) for r in data["inputs"])
        uw = max(len(r["unit"]) for r in data["inputs"])
        lines += [f"    {r['name']:<{w}}  {r['kind']:<{kw}}  {r['unit']:<{uw}}  {r['meaning']}" for r in data["inputs"]]
    else:
        lines.append("    (none: a constant)")
    lines += ["", "  read by:"] + [f"    {r}" for r in data["read_by"] or ["(nothing: a top-level result)"]]
    lines += ["", "  references:"] + [f"    {r}" for r in data["references"] or ["(none)"]]
    lines += ["", f"  golden cases ({len(cases)}):"]
    lines += [f"    {c.status:<10} {c.name}: {c.expected:.10g}" + (f" - {' '.join(c.note.split())}" if c.note else "") for c in cases]
    click.echo("\n".join(lines))
