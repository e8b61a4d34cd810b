"""Question 7: memory and start-up. Peak RSS of an idle worker and of the producer CLI, the
CLI's start-up time, and proof that the producer never imports torch.

- idle worker: `hpoq worker` on a private Redis, left idle until its pool process has
  finished warming up (RSS steady); RSS and peak RSS (VmHWM) of the main process and of
  the pool process, and whether either has torch's shared library mapped;
- producer CLI: `hpoq --help`, `hpoq config validate` of the shipped smoke experiment,
  `hpoq submit --help`, each run N times in a fresh interpreter: median wall time and peak
  RSS (getrusage of that child), next to a bare `python -c pass` and `import celery`;
- imports: each command run once under an import hook that records every attempt to
  import torch, transformers or mlflow (attempts, not only successes), and the module
  list afterwards; plus the slowest imports of `config validate` (python -X importtime).

    python benchmarks/bench_memory.py [--quick] [--repeats N]

Targets: the producer commands import no torch (and no transformers); the others are
reported for the record.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    REPO,
    Deadline,
    clean_env,
    emit,
    hpoq_worker_argv,
    private_redis,
    processes,
    run,
    say,
    target,
    temp_dir,
    verdict,
    wait_for,
    wait_ready,
)

SMOKE = str(REPO / "config" / "experiment" / "smoke.yaml")
HEAVY = ("torch", "transformers", "mlflow")
COMMANDS: dict[str, list[str]] = {
    "hpoq --help": ["--help"],
    "hpoq config validate": ["config", "validate", SMOKE, "--json"],
    "hpoq submit --help": ["submit", "--help"],
}
BASELINES: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    "python -c 'import celery'": ["-c", "import celery"],
}
HOOK = """
import json, sys
attempted = set()
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {heavy!r}:
            attempted.add(name)
        return None
sys.meta_path.insert(0, Watch())
sys.argv = ["hpoq", *{argv!r}]
from hpoq.producer.cli import main
try:
    main()
except SystemExit:
    pass
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print("\\n@@" + json.dumps({{"attempted": sorted(attempted), "loaded": loaded}}))
"""


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024)
    return out


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def maps_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def idle_worker(deadline: Deadline) -> dict[str, Any]:
    with temp_dir("memory") as tmp, private_redis(tmp) as redis_url:
        from hpoq.core.celery_app import create_app

        env = clean_env(tmp / "out", redis_url)
        control = create_app(redis_url)
        try:
            started = time.monotonic()
            with processes([(hpoq_worker_argv(), env)], tmp / "logs") as procs:
                wait_ready(control, 1, procs, deadline)
                ready_s = time.monotonic() - started
                main_pid = procs[0].pid  # `hpoq worker` execs celery in place: same pid
                pool = wait_for(lambda: children(main_pid), deadline, 0.2)[0]
                history: list[int] = []

                def steady() -> bool:
                    history.append(proc_status(pool)["VmRSS"])
                    return len(history) > 8 and max(history[-8:]) - min(history[-8:]) <= 1

                wait_for(steady, deadline, 0.25)
                warm_s = time.monotonic() - started
                main, child = proc_status(main_pid), proc_status(pool)
                torch_mapped = maps_torch(main_pid) or maps_torch(pool)
        finally:
            control.close()
    return {
        "ready_s": round(ready_s, 2),
        "pool_warm_s": round(warm_s, 2),
        "main_rss_mib": main["VmRSS"],
        "main_peak_rss_mib": main["VmHWM"],
        "pool_rss_mib": child["VmRSS"],
        "pool_peak_rss_mib": child["VmHWM"],
        "total_rss_mib": main["VmRSS"] + child["VmRSS"],
        "torch_mapped": torch_mapped,
    }


def timed_run(argv: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """(wall seconds, peak RSS MiB, exit code) of one fresh interpreter."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, round(usage.ru_maxrss / 1024), proc.returncode


def cli_figures(repeats: int, env: dict[str, str]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    hpoq = [sys.executable, "-m", "hpoq.producer"]
    runs = {
        **{k: hpoq + v for k, v in COMMANDS.items()},
        **{k: [sys.executable, *v] for k, v in BASELINES.items()},
    }
    for name, argv in runs.items():
        results = [timed_run(argv, env) for _ in range(repeats)]
        codes = {code for _, _, code in results}
        rows[name] = {
            "wall_ms": round(statistics.median(r[0] for r in results) * 1000),
            "peak_rss_mib": max(r[1] for r in results),
            "exit_codes": sorted(codes),
        }
    return rows


def import_proof(env: dict[str, str]) -> dict[str, Any]:
    out = {}
    for name, argv in COMMANDS.items():
        code = HOOK.format(heavy=HEAVY, argv=argv)
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        marker = proc.stdout.rsplit("@@", 1)
        if len(marker) != 2:
            raise RuntimeError(f"{name}: no import report\n{proc.stdout[-2000:]}{proc.stderr}")
        out[name] = json.loads(marker[1])
    return out


def slowest_imports(env: dict[str, str], top: int = 8) -> list[dict[str, Any]]:
    """Where `hpoq config validate` spends its import time: self time summed per top-level
    package (python -X importtime)."""
    argv = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "hpoq.producer",
        *COMMANDS["hpoq config validate"],
    ]
    proc = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    totals: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| *(\S+)", line)
        if m:
            package = m.group(3).split(".")[0]
            totals[package] = totals.get(package, 0) + int(m.group(1))
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:top]
    return [{"package": p, "ms": round(us / 1000)} for p, us in ranked]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs per command")
    parser.add_argument("--repeats", type=int, default=None, help="runs per command (7)")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    deadline = Deadline(args.timeout, "bench_memory")

    with temp_dir("cli") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HPOQ_", "MLFLOW_"))}
        env["HPOQ_OUTPUT_DIR"] = str(tmp / "out")
        cli = cli_figures(repeats, env)
        imports = import_proof(env)
        slow = slowest_imports(env)
    worker = idle_worker(deadline)

    for name, row in cli.items():
        say(
            f"{name:<28} {row['wall_ms']:>5} ms median of {repeats}, peak RSS "
            f"{row['peak_rss_mib']} MiB, exit {row['exit_codes']}"
        )
    for name, row in imports.items():
        say(
            f"{name:<28} attempted imports of {'/'.join(HEAVY)}: {row['attempted'] or 'none'}; "
            f"loaded: {row['loaded'] or 'none'}"
        )
    say(
        "slowest imports of `hpoq config validate`: "
        + ", ".join(f"{s['package']} {s['ms']} ms" for s in slow)
    )
    say(
        f"idle worker: main {worker['main_rss_mib']} MiB (peak {worker['main_peak_rss_mib']}), "
        f"pool process {worker['pool_rss_mib']} MiB (peak {worker['pool_peak_rss_mib']}), "
        f"total {worker['total_rss_mib']} MiB; answers pings after {worker['ready_s']} s, pool "
        f"warm after {worker['pool_warm_s']} s; torch mapped: {worker['torch_mapped']}"
    )

    torch_attempts = sorted(
        {
            m
            for row in imports.values()
            for m in row["attempted"]
            if m.split(".")[0] in ("torch", "transformers")
        }
    )
    figures = {
        "cli": cli,
        "imports": imports,
        "slowest_imports": slow,
        "idle_worker": worker,
        "repeats": repeats,
    }
    targets = {
        "producer_torch_or_transformers_import_attempts": target(len(torch_attempts), "<=", 0),
        "idle_worker_torch_mapped": target(int(worker["torch_mapped"]), "<=", 0),
    }
    say(verdict(targets))
    emit("memory", figures, targets)
    return 0


if __name__ == "__main__":
    run(main)
