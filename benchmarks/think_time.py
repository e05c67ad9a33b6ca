"""What a producer's own time between pushes costs on this machine: the bare-socket floor of
``push.py``, made to spend a given time between reading one +OK and writing the next PUSH.

A sequential push costs one round trip plus the producer's own work. If the round trip did not
depend on that work, spending S microseconds more per push would add S to each push. Where it
does (the server's side idles meanwhile, and waking it, or its CPU, takes longer the longer it
idled), it adds more. This prints, for each added time S, the time per push and what it added
beyond S itself, so that a client's extra work per push can be priced on the machine at hand.

Each round runs every S once, in rotating order, with --jobs pushes each on one connection
(after --warmup untimed ones); the medians over the rounds are printed. The time is spent
spinning on ``time.perf_counter``, which keeps the producer's CPU busy as real work would.

Usage (a private Faktory is started unless ``--url`` is given; the server is FLUSHed!):

    .venv/bin/python benchmarks/think_time.py [--spins 0,5,10,20,30,40] [--jobs 2000]
        [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

BENCH_DIR: Final = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import push  # noqa: E402
import throughput  # noqa: E402  (also puts the repository on sys.path)


def _spin(microseconds: float) -> None:
    end = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < end:
        pass


def _per_push(floor: push.FloorSocket, spin: float, jobs: int) -> float:
    """Microseconds per push, each after ``spin`` microseconds of spinning."""
    start = time.perf_counter()
    for i in range(jobs):
        if spin:
            _spin(spin)
        floor.push(i)
    return (time.perf_counter() - start) / jobs * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spins", default="0,5,10,20,30,40", help="microseconds, comma-separated")
    parser.add_argument("--jobs", type=int, default=2000, help="pushes per measurement (2000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (5)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed pushes first (200)")
    parser.add_argument("--url", help="an existing server (it is FLUSHed!); default: our own")
    args = parser.parse_args(argv)
    spins = [float(text) for text in args.spins.split(",")]
    if 0.0 not in spins:
        spins.insert(0, 0.0)
    load = os.getloadavg()
    times: dict[float, list[float]] = {spin: [] for spin in spins}
    with throughput._server(args.url) as url:
        admin = throughput.Admin(url)
        floor = push.FloorSocket(url)
        try:
            for i in range(args.warmup):
                floor.push(i)
            for _, spin in throughput.rotating(spins, args.rounds):
                admin.flush()
                times[spin].append(_per_push(floor, spin, args.jobs))
        finally:
            floor.close()
            admin.close()
    base = statistics.median(times[0.0])
    print(f"{args.jobs:,} pushes per measurement, {args.rounds} rounds, medians")
    print(f"{'spin us':>8} {'us/push':>9} {'added beyond the spin':>22} {'rate vs spin 0':>15}")
    for spin in spins:
        median = statistics.median(times[spin])
        print(f"{spin:8g} {median:9.1f} {median - base - spin:22.1f} {base / median:15.2f}")
    after = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs; load average before "
        f"{', '.join(f'{x:.2f}' for x in load)}, after {', '.join(f'{x:.2f}' for x in after)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
