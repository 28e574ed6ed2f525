"""Load benchmark: a real ``vramplan serve --workers 2`` on loopback, driven at 64 connections.

    python benchmarks/load.py                      # 30 s at 64 connections: req/s, p50/p99, errors, RSS
    python benchmarks/load.py --requests 100000    # memory flatness: worker RSS every 10,000 requests
    python benchmarks/load.py --generator httpx    # without wrk (slower client; it shares the CPUs)

Not a timed test: it prints numbers. Everything stays on 127.0.0.1: the server listens on a free
loopback port, with a token created through the CLI (``vramplan tokens create``) in a throwaway
SQLite store (``VRAMPLAN_DATABASE_URL``) and a throwaway data dir, all removed at the end.

The load generator is ``wrk`` (Debian: ``apt-get install wrk``) with a Lua script that rotates
through a few POST inference bodies and stops each thread after its share of a fixed request
count; without wrk, an asyncio + httpx generator with the same bodies and the same bounds.
Server memory is the VmRSS of each uvicorn worker process, read from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATH = "/api/v1/vram-calculation/inference"
BODIES = [
    {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q4_k_m", "batch_size": 1,
     "seq_length": 2048},
    {"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "quantization": "fp16", "batch_size": 8,
     "seq_length": 8192, "concurrent_users": 4},
    {"gpu_key": "rtx_4090", "llm_key": "llama-3-8b-instruct", "quantization": "q8_0", "seq_length": 4096,
     "runtime": "llama.cpp"},
    {"gpu_key": "h100_80", "llm_key": "llama-3-8b-instruct", "quantization": "fp16", "seq_length": 32768,
     "runtime": "vllm", "num_gpus": 2, "inference_parallelism": "tensor"},
]

LUA = r"""
local bodies = { %(bodies)s }
local limit = %(limit)d     -- responses per thread; 0 = until the duration ends
local flags = "%(flags)s"   -- a thread that reaches its limit leaves a file here and stops
local done, i, n = 0, 0, 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
setup = function(thread)
  n = n + 1
  thread:set("id", n)
end
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
response = function(status, headers, body)
  done = done + 1
  if limit > 0 and done == limit then
    io.open(flags .. "/done-" .. id, "w"):close()
    wrk.thread:stop()
  end
end
"""


# -- the server -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vramplan_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "vramplan", *args]


def rss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


def worker_pids(server_pid: int, expected: int, timeout: float = 60) -> list[int]:
    """The uvicorn worker processes: spawned children of the supervisor (not multiprocessing's tracker)."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for pid in children(server_pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "spawn_main" in cmd:
                found.append(pid)
        if len(found) >= expected or time.monotonic() > deadline:
            return sorted(found) or [server_pid]
        time.sleep(0.2)


class Server:
    def __init__(self, workers: int):
        self.workers = workers
        self.tmp = tempfile.TemporaryDirectory(prefix="vramplan-load-")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "XDG_DATA_HOME": os.path.join(self.tmp.name, "data"),
                    "VRAMPLAN_DATABASE_URL": f"sqlite:///{os.path.join(self.tmp.name, 'tokens.db')}",
                    "VRAMPLAN_ADMIN_SECRET": "load-benchmark-operator-secret-0123456789"}

    def __enter__(self):
        made = subprocess.run(vramplan_cmd("tokens", "create", "--name", "load"), env=self.env,
                              capture_output=True, text=True, timeout=120, check=True)
        self.token = made.stdout.strip()
        self.log = open(os.path.join(self.tmp.name, "server.log"), "w+")
        self.proc = subprocess.Popen(vramplan_cmd("serve", "--host", "127.0.0.1", "--port", str(self.port),
                                                  "--workers", str(self.workers), "--log-level", "warning"),
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_healthy()
        self.pids = worker_pids(self.proc.pid, self.workers)
        return self

    def _wait_healthy(self) -> None:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                raise SystemExit(f"vramplan serve did not come up:\n{self.log.read()}")
            time.sleep(0.2)

    def rss_mib(self) -> list[float]:
        return [rss_kib(pid) / 1024 for pid in self.pids]

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.tmp.cleanup()


# -- load generators --------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * _UNITS[unit]


def run_wrk(server: Server, *, connections: int, threads: int, duration: float, limit: int, tmp: str) -> dict:
    """wrk for ``duration`` seconds, or until ``limit`` responses (0: no limit), whichever comes first."""
    per_thread = -(-limit // threads) if limit else 0
    script = os.path.join(tmp, "post.lua")
    flags = tempfile.mkdtemp(dir=tmp)
    bodies = ", ".join(json.dumps(json.dumps(b)) for b in BODIES)
    Path(script).write_text(LUA % {"bodies": bodies, "limit": per_thread, "token": server.token, "flags": flags})
    proc = subprocess.Popen(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{int(duration)}s",
                             "--timeout", "10s", "--latency", "-s", script, server.base + PATH],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wrk sleeps out its whole duration even when every thread has stopped; SIGINT ends it early
    # (it still prints its report, over the time actually run).
    deadline = time.monotonic() + duration + 120
    while proc.poll() is None:
        if limit and len(os.listdir(flags)) >= threads:
            proc.send_signal(signal.SIGINT)
            break
        if time.monotonic() > deadline:
            proc.kill()
            break
        time.sleep(0.05)
    text, stderr = proc.communicate(timeout=60)
    if "requests in" not in text:
        raise SystemExit(f"wrk failed ({proc.returncode}):\n{text}\n{stderr}")
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+(?:us|ms|s|m))", text, re.M))
    requests = int(done.group(1))
    seconds = _ms(done.group(2) + done.group(3)) / 1000
    return {"requests": requests, "seconds": seconds, "rps": requests / seconds,
            "p50_ms": _ms(latency["50"]), "p99_ms": _ms(latency["99"]),
            "errors": (sum(map(int, socket_errors.groups())) if socket_errors else 0)
            + (int(non2xx.group(1)) if non2xx else 0), "raw": text}


def run_httpx(server: Server, *, connections: int, threads: int, duration: float, limit: int, tmp: str) -> dict:
    """asyncio + httpx: ``connections`` concurrent clients, same bodies, same bounds."""
    import httpx

    async def go() -> dict:
        latencies: list[float] = []
        errors = 0
        started = time.perf_counter()
        deadline = started + duration
        headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
        payloads = [json.dumps(b).encode() for b in BODIES]
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        # TCP_NODELAY: httpx writes headers and body apart; without it Nagle + delayed ACK add 40 ms a request.
        transport = httpx.AsyncHTTPTransport(limits=limits, socket_options=[
            (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        async with httpx.AsyncClient(base_url=server.base, transport=transport, timeout=10) as client:
            async def worker(n: int) -> None:
                nonlocal errors
                i = n
                while time.perf_counter() < deadline and (not limit or len(latencies) + errors < limit):
                    i += 1
                    t0 = time.perf_counter()
                    try:
                        resp = await client.post(PATH, content=payloads[i % len(payloads)], headers=headers)
                        ok = resp.status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    if ok:
                        latencies.append((time.perf_counter() - t0) * 1000)
                    else:
                        errors += 1

            await asyncio.gather(*(worker(n) for n in range(connections)))
        seconds = time.perf_counter() - started
        latencies.sort()
        total = len(latencies) + errors
        return {"requests": total, "seconds": seconds, "rps": total / seconds,
                "p50_ms": statistics.median(latencies) if latencies else float("nan"),
                "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan"),
                "errors": errors, "raw": ""}

    return asyncio.run(go())


# -- the two modes ----------------------------------------------------------------------------

def fmt_rss(values: list[float]) -> str:
    return " + ".join(f"{v:.1f}" for v in values) + f" = {sum(values):.1f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=30, help="seconds of load (default 30)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    ap.add_argument("--max-requests", type=int, default=2_000_000,
                    help="stop the timed run after this many requests anyway (default 2,000,000)")
    ap.add_argument("--requests", type=int, default=0,
                    help="memory-flatness mode: send this many requests, printing RSS every --every")
    ap.add_argument("--every", type=int, default=10_000)
    ap.add_argument("--generator", choices=["auto", "wrk", "httpx"], default="auto")
    args = ap.parse_args()

    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "httpx"
    if generator == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk); or use --generator httpx")
    drive = run_wrk if generator == "wrk" else run_httpx

    with Server(args.workers) as server, tempfile.TemporaryDirectory() as tmp:
        print(f"vramplan serve --workers {args.workers} on {server.base} (worker pids {server.pids}); "
              f"load: {generator}, {args.connections} connections, POST {PATH} ({len(BODIES)} bodies rotating); "
              f"{os.cpu_count()} CPUs shared by server and load generator")
        print(f"worker RSS at start:  {fmt_rss(server.rss_mib())}")
        # Warm-up: each worker loads its catalog on first use.
        drive(server, connections=args.connections, threads=args.threads, duration=5, limit=2000, tmp=tmp)
        print(f"worker RSS warmed up: {fmt_rss(server.rss_mib())}")

        if args.requests:
            sent, total_errors, t0 = 0, 0, time.perf_counter()
            first = None
            while sent < args.requests:
                chunk = min(args.every, args.requests - sent)
                r = drive(server, connections=args.connections, threads=args.threads, duration=600,
                          limit=chunk, tmp=tmp)
                sent += r["requests"]
                total_errors += r["errors"]
                rss = server.rss_mib()
                first = first or rss
                print(f"after {sent:>7,} requests: RSS {fmt_rss(rss)}  ({r['rps']:,.0f} req/s, "
                      f"p99 {r['p99_ms']:.1f} ms, errors {r['errors']})", flush=True)
            growth = sum(server.rss_mib()) - sum(first)
            print(f"{sent:,} requests in {time.perf_counter() - t0:.0f} s, errors {total_errors}; "
                  f"RSS growth after the first {args.every:,}: {growth:+.1f} MiB")
        else:
            r = drive(server, connections=args.connections, threads=args.threads, duration=args.duration,
                      limit=args.max_requests, tmp=tmp)
            print(r["raw"].rstrip() if r["raw"] else "")
            print(f"requests/s {r['rps']:,.0f}   p50 {r['p50_ms']:.1f} ms   p99 {r['p99_ms']:.1f} ms   "
                  f"errors {r['errors']}   ({r['requests']:,} requests in {r['seconds']:.1f} s)")
            print(f"worker RSS after {r['requests']:,} requests: {fmt_rss(server.rss_mib())}")


if __name__ == "__main__":
    main()
