"""The engine's simulated training allocator reserve against the measured runs and the recorded sequences.

The sequence and its replay live in the engine (vramplan.allocator.training: what it writes and what it
leaves to the fitted fractions); this script compares its peaks with the measured H200 runs and with
sweep.py's replays of the recorded op sequences:

    python benchmarks/allocator/synthetic_training.py [ID-SUBSTRING] [--phases]
    python benchmarks/allocator/synthetic_training.py --sweep benchmarks/allocator/sweep-2026-12-01.jsonl

"engine today" is the estimate's vram_usage, which now takes this simulated reserve for the classes the
sequence writes (formulas/memory/runtime_overhead.yaml train_reserve_simulated) and the fitted fractions
for the rest; the QLoRA run (not written) is skipped.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from vramplan.allocator.training import Shape
from vramplan.allocator.training import simulate as _simulate

REPO = Path(__file__).resolve().parents[2]


def simulate(v: dict):
    """The reference replay (every event, phases recorded) of an estimate's trace values."""
    return _simulate(Shape.of(v))


def against_sweep(path: Path) -> int:
    """The synthetic sequence and the engine against sweep.py's replays of the recorded sequence (vram = peak
    reserved + the CUDA context), Phi-3's fused projections included."""
    import fidelity
    import vramplan
    rows = []
    for line in path.read_text().splitlines():
        case = json.loads(line) if line.strip() else None
        if not case:
            continue
        _, body = fidelity.transformers_request({**case, "settings": {"runtime": "transformers", **case["settings"]}})
        resp = vramplan.estimate_finetuning(body)
        v = fidelity.trace_values(resp)
        a = simulate(v)
        context = v["rt_cuda_context_mib"] * 2**20
        replayed = case["simulated"]["peak_reserved_bytes"] + context
        synthetic = (a.peak_reserved + context - replayed) / replayed * 100
        engine = (resp["vram_usage"] * 2**30 - replayed) / replayed * 100
        rows.append((abs(synthetic), abs(engine)))
        print(f"{case['id'][:60]:60} synthetic {synthetic:+6.1f}%  engine today {engine:+6.1f}%")
    s, e = [r[0] for r in rows], [r[1] for r in rows]
    print(f"{len(rows)} replayed runs: synthetic median {statistics.median(s):.1f}% max {max(s):.1f}%, beyond 5% / 10%:"
          f" {sum(x > 5 for x in s)} / {sum(x > 10 for x in s)} | engine today median {statistics.median(e):.1f}%"
          f" max {max(e):.1f}%, beyond 5% / 10%: {sum(x > 5 for x in e)} / {sum(x > 10 for x in e)}")
    return 0


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(REPO / "benchmarks"))
    if "--sweep" in argv:
        return against_sweep(Path(argv[argv.index("--sweep") + 1]))
    import fidelity
    import vramplan
    select = next((x for x in argv if not x.startswith("--")), "")
    cal = REPO.parent / "shared" / "calibration" / "h200-transformers.jsonl"
    paths = [cal, *sorted((REPO / "benchmarks" / "measured").glob("*.jsonl"))]
    groups: dict[str, list[tuple[float, float]]] = {}
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            case = json.loads(line) if line.strip() else None
            if not case or case.get("workload") != "finetuning" or select not in case["id"] or "measured" not in case:
                continue
            if case["settings"]["weights_dtype"] == "nf4":
                print(f"{case['id'][:60]:60} skipped: QLoRA is not in the synthetic sequence")
                continue
            _, body = fidelity.transformers_request(case)
            resp = vramplan.estimate_finetuning(body)
            v = fidelity.trace_values(resp)
            a = simulate(v)
            m = case["measured"]
            vram = a.peak_reserved + v["rt_cuda_context_mib"] * 2**20
            err = (vram - m["nvidia_smi_peak_bytes"]) / m["nvidia_smi_peak_bytes"] * 100
            engine = (resp["vram_usage"] * 2**30 - m["nvidia_smi_peak_bytes"]) / m["nvidia_smi_peak_bytes"] * 100
            group = "new " + path.stem if path != cal else "H200"
            groups.setdefault(group, []).append((abs(err), abs(engine)))
            if "--phases" in argv:
                print("   reserved at the start of each phase (GB):", " ".join(f"{p}:{r / 1e9:.2f}" for p, r in a.phases))
            print(f"{case['id'][:60]:60} allocated {m['peak_allocated_bytes'] / 1e9:6.2f} synthetic {a.peak_allocated / 1e9:6.2f}"
                  f" | reserved {m['peak_reserved_bytes'] / 1e9:6.2f} synthetic {a.peak_reserved / 1e9:6.2f}"
                  f" | vram {err:+5.1f}% (engine today {engine:+5.1f}%)")
    for group, rows in groups.items():
        s, e = [r[0] for r in rows], [r[1] for r in rows]
        print(f"{group} fine-tuning vram, {len(rows)} runs: synthetic median {statistics.median(s):.1f}% max {max(s):.1f}%"
              f" | engine today median {statistics.median(e):.1f}% max {max(e):.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
