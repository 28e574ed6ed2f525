"""The README is a promise: every command in it runs here, and every output it shows is what the program prints.

Each fenced ``sh`` block is run as a bash script with the project's ``vramplan`` and ``python`` first on
PATH, a throwaway data folder and token store, and these rewrites, each printed in the failure message:

- ``pip install …`` gets ``--dry-run --no-deps --no-index --no-build-isolation``: it resolves the paths,
  extras and build metadata without installing or downloading anything;
- ``python -m pytest`` gets ``--collect-only -q``: running the whole suite from inside it would recurse;
- port 8000 becomes a free port, and after a command sent to the background (``&``) the script waits
  for its ``/healthz`` (and stops it at the end);
- a command that needs the network (a Hub id ``hf:…``, a GGUF by URL) runs only with
  ``VRAMPLAN_README_NETWORK=1``: the suite runs offline.

A fenced block with no language right after an ``sh`` block is that command's output and must equal
it line for line (trailing spaces aside; a last line ``...`` means the README shows the first lines); a ``--check`` command may exit 1 when its output says it does
not fit. Each fidelity table must be what its command prints first (when the calibration folder beside
the project is there; the serving benchmark then lists the records it could not map, which the README
leaves out). Every ``python`` block runs. Every ``vramplan`` command named in the
text answers ``--help``.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
CALIBRATION = ROOT.parent / "shared" / "calibration"


def fenced_blocks() -> list[tuple[str, str, int]]:
    """(language, text, line number) of every fenced block, in order."""
    out, lang, buf, start = [], None, [], 0
    for n, line in enumerate(README.read_text("utf-8").splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, buf, start = line[3:].strip(), [], n
            else:
                out.append((lang, "\n".join(buf), start))
                ENDS[start] = n
                lang = None
        elif lang is not None:
            buf.append(line)
    assert lang is None, "an unclosed fenced block"
    return out


ENDS: dict[int, int] = {}  # a block's first line -> its closing line
BLOCKS = fenced_blocks()
SH = [(i, text, line) for i, (lang, text, line) in enumerate(BLOCKS) if lang == "sh"]


def shown_output(i: int) -> str | None:
    """The unlabeled block right after sh block ``i`` (one blank line between): what its command prints."""
    if i + 1 < len(BLOCKS) and BLOCKS[i + 1][0] == "" and BLOCKS[i + 1][2] == ENDS[BLOCKS[i][2]] + 2:
        return BLOCKS[i + 1][1]
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Commands that need the network (the Hugging Face Hub, a GGUF by URL) run only with VRAMPLAN_README_NETWORK=1.
NETWORK = re.compile(r"\bhf:|https?://(?!127\.0\.0\.1)")


def rewrite(script: str, port: int) -> tuple[str, list[str]]:
    """The block as run here, and the rewrites applied (see the module docstring)."""
    notes, lines = [], []
    for line in script.replace("\\\n", " ").splitlines():
        cmd = line.split("#", 1)[0].rstrip() if not line.lstrip().startswith("curl") else line.rstrip()
        if not cmd.strip():
            continue
        if NETWORK.search(cmd) and os.environ.get("VRAMPLAN_README_NETWORK") != "1":
            notes.append(f"left out (needs the network; VRAMPLAN_README_NETWORK=1 runs it): {cmd}")
            continue
        if "pip install" in cmd:
            cmd = re.sub(r"pip install ([^&]+)", r"pip install \1 --dry-run --no-deps --no-index --no-build-isolation -q",
                         cmd)
            notes.append("pip install: --dry-run --no-deps --no-index --no-build-isolation")
        if re.search(r"python -m pytest\s*$", cmd):
            cmd += " --collect-only -q"
            notes.append("pytest: --collect-only")
        if "8000" in cmd:
            cmd = cmd.replace("8000", str(port))
            notes.append(f"port 8000 -> {port}")
        lines.append(cmd)
        if cmd.endswith("&"):
            lines.append(f"for i in $(seq 150); do curl -fs http://127.0.0.1:{port}/healthz >/dev/null && break; "
                         "sleep 0.2; done")
    if any(line.endswith("&") for line in lines):
        lines.insert(0, "trap 'kill $(jobs -p) 2>/dev/null' EXIT")
    return "set -eo pipefail\n" + "\n".join(lines) + "\n", notes


def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "XDG_DATA_HOME": str(tmp_path / "xdg"), "VRAMPLAN_DATABASE_URL": f"sqlite:///{tmp_path / 'tokens.db'}",
            "VRAMPLAN_ADMIN_SECRET": "readme-test-secret-0123456789", "COLUMNS": "120"}


def run_block(text: str, tmp_path: Path, timeout: int = 300) -> tuple[subprocess.CompletedProcess, str, list[str]]:
    script, notes = rewrite(text, free_port())
    cwd = ROOT if re.search(r"pip install|benchmarks/|python -m pytest", text) else tmp_path
    proc = subprocess.run(["bash", "-c", script], cwd=cwd, env=env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)
    return proc, script, notes


def lines_of(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip("\n").splitlines()]


def test_the_readme_has_the_blocks_this_test_reads():
    assert len(SH) >= 6
    first_i, first_text, _ = SH[1]  # the install block, then the first estimate
    assert first_text.startswith("vramplan inference") and "\n" not in first_text.strip()
    assert shown_output(first_i) is not None  # its printed lines right below it


@pytest.mark.parametrize("i,text,line", SH, ids=[f"line{line}" for _, _, line in SH])
def test_every_command_block_runs_and_prints_what_the_readme_shows(i, text, line, tmp_path):
    proc, script, notes = run_block(text, tmp_path)
    where = f"README.md line {line}, run as:\n{script}\n(rewrites: {', '.join(notes) or 'none'})\n"
    expected = shown_output(i)
    not_fitting = "--check" in text and re.search(r"insufficient|error", proc.stdout or "")
    assert proc.returncode == 0 or (proc.returncode == 1 and not_fitting), \
        where + f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, where + proc.stderr
    if expected is not None:
        shown, printed = lines_of(expected), lines_of(proc.stdout)
        if shown[-1].strip() == "...":  # the README shows the first lines of the output
            shown, printed = shown[:-1], printed[:len(shown) - 1]
        assert printed == shown, where + "the README shows other lines than it prints"
    if "curl" in text:  # the HTTP example answers the estimate's JSON
        assert '"vram_usage"' in proc.stdout and '"memory_status"' in proc.stdout, where + proc.stdout
    if "report.html" in text:
        assert (tmp_path / "report.html").read_text("utf-8").lstrip().lower().startswith("<!doctype html>")


def tables_after(heading: str) -> list[str]:
    """The Markdown tables of a README section, each as text."""
    text = README.read_text("utf-8")
    section = text[text.index(heading):]
    section = section[:section.index("\n## ", 1)]
    tables, current = [], []
    for line in section.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append("\n".join(current))
            current = []
    return tables + (["\n".join(current)] if current else [])


@pytest.mark.skipif(not (CALIBRATION / "h200-transformers.jsonl").is_file(),
                    reason=f"the README's fidelity tables come from {CALIBRATION}, not beside this checkout")
def test_fidelity_tables_are_what_the_benchmarks_print():
    """Each fidelity command of the Fidelity section (in a block or in the text) prints one of its tables first."""
    text = README.read_text("utf-8")
    section = text[text.index("## Fidelity"):]
    section = section[:section.index("\n## ", 1)]
    commands = sorted(set(re.findall(r"python benchmarks/fidelity\w*\.py(?: --[a-z]+)*", section)))
    assert len(commands) >= 3
    tables = [lines_of(t) for t in tables_after("## Fidelity")]
    for command in commands:
        argv = [sys.executable if a == "python" else a for a in shlex.split(command)]
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        printed = lines_of(out.stdout)
        assert any(printed[:len(t)] == t for t in tables), f"{command}: no README table is what it prints first"


@pytest.mark.parametrize("script", ["fidelity.py", "fidelity_speed.py"])
def test_fidelity_benchmarks_say_what_is_missing_without_the_calibration_folder(script, tmp_path):
    flag = "--calibration-dir" if script == "fidelity.py" else "--calibration"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), flag, str(tmp_path / "absent")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert f"{tmp_path / 'absent' / 'h200-transformers.jsonl'} is missing" in out.stderr
    assert f"{tmp_path / 'absent' / 'published-llama3-8b.yaml'} is missing" in out.stderr
    if script == "fidelity.py":  # the groups it can print: this project's own measurements
        assert "new h200-2026-11-26 weights" in out.stdout


@pytest.mark.parametrize("i", [i for i, (lang, _, _) in enumerate(BLOCKS) if lang == "python"])
def test_python_blocks_run(i, tmp_path):
    proc = subprocess.run([sys.executable, "-c", BLOCKS[i][1]], cwd=tmp_path, env=env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_every_vramplan_command_named_in_the_text_exists():
    from click.testing import CliRunner

    from vramplan.cli import main

    text = README.read_text("utf-8")
    named = set()
    for m in re.finditer(r"`vramplan ([a-z]+)(?: ([a-z|]+))?", text):
        group, subs = m.group(1), m.group(2)
        named.add((group,))
        for sub in (subs or "").split("|"):
            if sub and sub in ("list", "import", "create", "revoke"):
                named.add((group, sub))
    assert {("plan",), ("sweep",), ("serve",), ("tokens", "create"), ("models", "import")} <= named
    for argv in sorted(named):
        result = CliRunner().invoke(main, [*argv, "--help"])
        assert result.exit_code == 0, (argv, result.output)


def test_benchmark_scripts_in_the_text_answer_help():
    text = README.read_text("utf-8")
    scripts = set(re.findall(r"python ((?:benchmarks|docs)/[a-z_]+\.py)", text))
    assert {"benchmarks/fidelity.py", "benchmarks/speed.py", "benchmarks/load.py", "docs/screenshots.py"} <= scripts
    for script in sorted(scripts):
        out = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, (script, out.stderr)
