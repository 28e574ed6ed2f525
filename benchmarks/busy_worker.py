"""/healthz latency while a worker is busy with the largest custom models a request may carry.

    python benchmarks/busy_worker.py                  # 1 worker, 64 heavy requests at once, 3 rounds
    python benchmarks/busy_worker.py --heavy 200 --kind report

A real ``vramplan serve`` (the same throwaway setup as ``benchmarks/load.py``) gets ``--heavy``
concurrent requests, each for the largest custom model the architecture bounds allow
(``vramplan.configkeys.largest_config()``) with an offloading search (``--kind inference``), or its
HTML report (``--kind report``: ~15 estimates each). Meanwhile /healthz is asked every 20 ms. The
script prints /healthz's latency at idle and while the heavy requests are in flight (p50 / p95 /
max), and how long the heavy batch took. Not a timed test; tests/test_service_hardening.py checks
the bound (under 1 s while busy) at a smaller size.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import Server  # noqa: E402

PREFIX = "/api/v1/vram-calculation"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def round_trip(base: str, token: str, heavy: int, kind: str) -> tuple[list[float], list[float], float, list[int]]:
    import httpx

    from vramplan.configkeys import largest_config

    body = {"gpu_key": "h100_80", "llm_key": "custom", "custom_model": largest_config(), "enable_offloading": True}
    path = f"{PREFIX}/inference" if kind == "inference" else f"{PREFIX}/report?workload=inference&format=html"
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=heavy + 8, max_keepalive_connections=heavy + 8)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as c:
        await c.post(path, json=body, headers=headers)  # warm: imports, caches
        idle = []
        for _ in range(20):
            t0 = time.perf_counter()
            await c.get("/healthz")
            idle.append(time.perf_counter() - t0)
        t_start = time.perf_counter()
        tasks = [asyncio.create_task(c.post(path, json=body, headers=headers)) for _ in range(heavy)]
        await asyncio.sleep(0.05)
        busy = []
        while not all(t.done() for t in tasks):
            t0 = time.perf_counter()
            await c.get("/healthz")
            if not all(t.done() for t in tasks):
                busy.append(time.perf_counter() - t0)
            await asyncio.sleep(0.02)
        statuses = [t.result().status_code for t in tasks]
        return idle, busy, time.perf_counter() - t_start, statuses


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heavy", type=int, default=64, help="concurrent heavy requests per round (default 64)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--kind", choices=["inference", "report"], default="inference")
    args = ap.parse_args()
    with Server(args.workers) as server:
        for n in range(1, args.rounds + 1):
            idle, busy, took, statuses = asyncio.run(round_trip(server.base, server.token, args.heavy, args.kind))
            ms = lambda xs, q: f"{percentile(xs, q) * 1000:7.1f}"  # noqa: E731
            bad = sum(s != 200 for s in statuses)
            print(f"round {n}: {args.heavy} x largest custom model ({args.kind}) took {took:.2f} s, {bad} non-200;"
                  f" /healthz idle p50 {ms(idle, .5)} ms;"
                  + (f" busy ({len(busy)} probes) p50 {ms(busy, .5)} p95 {ms(busy, .95)} max {max(busy) * 1000:.1f} ms"
                     if busy else " no probe landed while busy")
                  + (f", mean {statistics.mean(busy) * 1000:.1f} ms" if busy else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
