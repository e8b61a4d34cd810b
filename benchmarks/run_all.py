"""Run every benchmark script, one after another, and summarise their targets.

Each script runs in its own process group with a time limit; its output is streamed, and
its last line (one JSON document) is collected. Ctrl-C or SIGTERM stops the running
script with SIGINT first (it then stops its own Redis and workers), SIGKILL after a grace.
The last line printed here is one JSON document with every script's document.

    python benchmarks/run_all.py [--quick] [--ablate] [--only dispatch,sweep]
        [--timeout 900]

With --ablate, bench_dispatch.py also measures its ablations (hpoq with task events on,
as while Flower watches, and the other settings it can turn on).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from common import machine, run, say

HERE = Path(__file__).resolve().parent
SCRIPTS = {
    "memory": "bench_memory.py",
    "allocation": "bench_allocation.py",
    "dispatch": "bench_dispatch.py",
    "job_overhead": "bench_job_overhead.py",
    "sweep": "bench_sweep.py",
    "idempotency": "bench_idempotency.py",
    "retrieval": "bench_retrieval.py",
    "search_quality": "bench_search_quality.py",
    "length_grouping": "bench_length_grouping.py",
    "recovery": "bench_recovery.py",
}
GRACE_S = 60


def run_script(name: str, quick: bool, timeout_s: float, extra: list[str]) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-u",
        str(HERE / SCRIPTS[name]),
        *(["--quick"] if quick else []),
        *extra,
    ]
    say(f"===== {name}: {' '.join(argv[2:])}")
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
        cwd=HERE.parent,
    )
    docs: list[dict[str, Any]] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{"):
                with suppress(ValueError):
                    docs.append(json.loads(line))
                    continue
            print(line, end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        say(f"===== {name}: over {timeout_s:.0f} s, stopping it")
        stop(proc)
    except BaseException:
        stop(proc)
        raise
    finally:
        reader.join(timeout=10)
    last_json = docs[-1] if docs else None
    seconds = round(time.monotonic() - started, 1)
    return {
        "name": name,
        "exit_code": proc.returncode,
        "timed_out": timed_out,
        "seconds": seconds,
        "result": last_json,
    }


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGINT to the script's group (every script, bench_retrieval.py included, cleans up on
    KeyboardInterrupt), SIGKILL to what is left after the grace period."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=GRACE_S)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def summarise(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    targets: dict[str, Any] = {}
    ok = True
    for item in runs:
        doc = item["result"]
        if doc is None or item["exit_code"] != 0:
            ok = False
            say(
                f"{item['name']:<13} FAILED (exit {item['exit_code']}, "
                f"timed out: {item['timed_out']})"
            )
            continue
        for name, t in doc.get("targets", {}).items():
            targets[f"{item['name']}.{name}"] = t
            ok = ok and t["met"]
            state = "met" if t["met"] else "MISSED"
            say(
                f"{item['name']:<13} {name:<46} {t['value']!s:>10}  "
                f"target {t['target']:<10} {state}"
            )
        if item["name"] == "retrieval":
            for row in doc.get("results", []):
                say(
                    f"{'retrieval':<13} {row['backend']} N={row['runs']}: overall x"
                    f"{row['overall_speedup']}, per_variant x{row['per_variant_speedup']} "
                    "against reading every run"
                )
    return targets, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every script in its quick form")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SCRIPTS)}")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per script")
    parser.add_argument(
        "--ablate", action="store_true", help="dispatch also measures its ablations"
    )
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCRIPTS)
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")

    runs = []
    for name in names:
        extra = ["--ablate"] if args.ablate and name == "dispatch" else []
        runs.append(run_script(name, args.quick, args.timeout, extra))
    say("===== summary")
    targets, ok = summarise(runs)
    print(
        json.dumps(
            {
                "benchmark": "all",
                "quick": args.quick,
                "machine": machine(),
                "runs": runs,
                "targets": targets,
                "all_met": ok,
            }
        ),
        flush=True,
    )
    return 0 if all(r["exit_code"] == 0 for r in runs) else 1


if __name__ == "__main__":
    run(main)
