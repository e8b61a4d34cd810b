"""Question 4: variant numbers under contention: 32 processes allocating 100 variants each.

Each process opens its own connection to a private real Redis and, after a common start
barrier, calls `VariantCounter.allocate` (hpoq's Lua script) 100 times on the same counter.
Two rounds:
- floor 0 (nothing known elsewhere): the numbers must be exactly 1..3200;
- random floors from 0 to 2 above the counter's current value (what
  `highest_known_variant` passes when studies or MLflow know of variants, even ones Redis
  has forgotten): every number must still be new and above its floor.
Before them, one process alone allocates the same total, for the uncontended latency.
Checked: zero duplicates, every number above its floor. Measured: allocations per second
(all processes together, first start to last finish) and the latency of one allocation.

    python benchmarks/bench_allocation.py [--quick] [--processes 32] [--per-process 100]

Target: zero duplicates.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import signal
import time
from collections import Counter
from typing import Any

from common import (
    Deadline,
    emit,
    fmt,
    private_redis,
    run,
    say,
    summary,
    target,
    temp_dir,
    verdict,
)

BACKBONE, BASE = "bert", "hpo_bert"


def allocate_many(
    redis_url: str, namespace: str, count: int, floors: bool, barrier: Any, out: Any, seed: int
) -> None:
    """One contender: `count` allocations; puts numbers, floors and timings on `out`."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's handler is not for us
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops us
    from hpoq.core.coordination.connection import connect
    from hpoq.core.coordination.keys import RedisKeys
    from hpoq.core.coordination.variant_counter import VariantCounter

    client = connect(redis_url)
    counter = VariantCounter(client, RedisKeys(namespace))
    rng = random.Random(seed)
    got, asked, latencies = [], [], []
    barrier.wait(timeout=60)
    began = time.time()
    for _ in range(count):
        # sometimes above the counter: variants found in MLflow after Redis lost its data
        floor = rng.randint(0, counter.peek(BACKBONE, BASE) + 2) if floors else 0
        start = time.perf_counter()
        got.append(counter.allocate(BACKBONE, BASE, floor))
        latencies.append(time.perf_counter() - start)
        asked.append(floor)
    ended = time.time()
    client.close()
    out.put(
        {"numbers": got, "floors": asked, "latencies": latencies, "began": began, "ended": ended}
    )


def run_round(
    redis_url: str, namespace: str, processes: int, count: int, floors: bool, deadline: Deadline
) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    children = [
        ctx.Process(
            target=allocate_many, args=(redis_url, namespace, count, floors, barrier, out, seed)
        )
        for seed in range(processes)
    ]
    try:
        for child in children:
            child.start()
        results = [out.get(timeout=max(1.0, deadline.left())) for _ in children]
        for child in children:
            child.join(timeout=10)
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join()
    numbers = [n for r in results for n in r["numbers"]]
    duplicates = sum(c - 1 for c in Counter(numbers).values() if c > 1)
    not_above = sum(
        1 for r in results for n, f in zip(r["numbers"], r["floors"], strict=True) if n <= f
    )
    seconds = max(r["ended"] for r in results) - min(r["began"] for r in results)
    return {
        "allocations": len(numbers),
        "duplicates": duplicates,
        "not_above_floor": not_above,
        "contiguous_from_1": sorted(numbers) == list(range(1, len(numbers) + 1)),
        "highest": max(numbers),
        "seconds": round(seconds, 3),
        "per_second": round(len(numbers) / seconds, 1),
        "latency_ms": summary([x for r in results for x in r["latencies"]], 1000, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the same sizes (a few seconds)")
    parser.add_argument("--processes", type=int, default=32)
    parser.add_argument("--per-process", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    deadline = Deadline(args.timeout, "bench_allocation")

    rounds: dict[str, dict[str, Any]] = {}
    with temp_dir("allocation") as tmp, private_redis(tmp) as redis_url:
        plan = [
            ("alone", 1, args.processes * args.per_process, False),
            ("floor_0", args.processes, args.per_process, False),
            ("random_floors", args.processes, args.per_process, True),
        ]
        for name, processes, count, floors in plan:
            rounds[name] = run_round(redis_url, f"bench{name}", processes, count, floors, deadline)
            r = rounds[name]
            say(
                f"{name:<14} {processes} processes x {count}: "
                f"{r['allocations']} numbers, {r['duplicates']} duplicates, "
                f"{r['not_above_floor']} not above their floor, 1..N exactly: "
                f"{r['contiguous_from_1']}; {r['per_second']} allocations/s; one allocation "
                f"{fmt(r['latency_ms'])}"
            )
    figures = {"processes": args.processes, "per_process": args.per_process, **rounds}
    targets = {
        "duplicates": target(sum(r["duplicates"] for r in rounds.values()), "<=", 0),
        "not_above_floor": target(sum(r["not_above_floor"] for r in rounds.values()), "<=", 0),
        "floor_0_is_1_to_n": target(int(rounds["floor_0"]["contiguous_from_1"]), ">=", 1),
    }
    say(verdict(targets))
    emit("allocation", figures, targets)
    return 0


if __name__ == "__main__":
    run(main)
