"""The long fuzz run: tests/test_fuzz_api.py with a bigger budget per operation.

    python benchmarks/fuzz_api.py                        # 1,000 examples per operation
    python benchmarks/fuzz_api.py --max-examples 5000 --seed 1234

CI runs the same test at 25 examples per operation; this is the same checks (no 5xx, every
response valid against /openapi.json, only documented status codes and media types, schema-invalid
requests refused), given more time to find something. It prints pytest's report, the time taken and
examples per second; the exit status is pytest's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-examples", type=int, default=1000, help="examples per operation (default 1000)")
    ap.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    ap.add_argument("-k", default=None, help="only operations matching this pytest -k expression")
    args = ap.parse_args()

    import pytest

    os.environ["VRAMPLAN_FUZZ_MAX_EXAMPLES"] = str(args.max_examples)
    argv = [str(ROOT / "tests" / "test_fuzz_api.py"), "-q", "-p", "no:cacheprovider", "-x",
            "--rootdir", str(ROOT)]
    if args.seed is not None:
        argv.append(f"--hypothesis-seed={args.seed}")
    if args.k:
        argv += ["-k", args.k]
    t0 = time.perf_counter()
    status = pytest.main(argv)
    dt = time.perf_counter() - t0
    print(f"\nfuzz: up to {args.max_examples} examples per operation, {dt:.0f} s, "
          f"{'no failures' if status == 0 else 'FAILURES (see above)'}")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
