#!/usr/bin/env python
"""Trials per GPU-hour: real sweeps through `hpoq worker --slots K` on one GPU, for several
K, model sizes, precisions, and with length-grouped padding off (before) and on (after).

    python scripts/gpu_sweep.py                  # the full matrix on GPU 0 (< 10 min on an H200)
    python scripts/gpu_sweep.py --cpu            # a tiny version on the CPU (a few minutes)
    python scripts/gpu_sweep.py --slots 1,4 --models minilm --precisions bf16 --grouping on
    python scripts/gpu_sweep.py --models bert-4x512 --data templates --slots 1 \\
        --grouping off --trials-per-slot 16     # the earlier single sweep (4x512 BERT)

The matrix: for each K in --slots (one worker started per K, `hpoq worker --gpu 0 --slots
K --queues hpo`, warmed up with K one-epoch trials), each model (MiniLM-sized 6x384 BERT,
DistilBERT-sized 6x768 DistilBERT, both built from config), precision (fp32, bf16) and
padding (`trainer.length_grouping` false = before, true = after), one cell: a variant of
K x --trials-per-slot trials, enqueued through the producer's own Submitter (in process:
`hpoq submit` costs seconds of imports per call) and run to its end before the next cell.
Within a K, cells run MiniLM first, so the cells the targets need come first when the time
budget (--timeout) runs out; a cell that does not fit is recorded as skipped.

Data: a WNUT17-sized synthetic NER set (3,400 training, 1,000 validation sentences) whose
lengths are drawn like tweets' (about 18 words on average, a tail past 50:
`hpoq.core.datasets.synthetic.tweet_like_sentences`); each trial trains 2 epochs at batch
size 32 with the sampled learning rate, warm-up, weight decay and dropout. Nothing is
downloaded.

Per cell: trials per hour = completed trials / (first objective start -> last objective
end) x 3600; GPU busy = mean NVML utilisation of the GPU over that window (the share of
time a kernel ran); the slots' occupancy (sum of objective time / (K x window)); objective
seconds, peak memory, padding share of the training batches, the job overhead and gaps
(as the earlier single sweep reported them). Targets: GPU busy >= 85% for the MiniLM-sized
model at its best K, and trials per hour at the best K with grouping >= 2.5x those of K = 1
without it (each precision). Human lines go to stderr and to <out>/gpu_sweep.log; the
whole report to <out>/gpu_sweep.json (<out>: --out, else $OUT, else ./gpu_sweep_out), with
the worker logs and GPU samples beside it; the last line on stdout is the JSON document.

Everything is private to the run: an embedded Redis, SQLite MLflow and file-journal Optuna
under a temporary folder (hpoq's local defaults). This file is also the module the workers
import the timed objective from (the script's folder is put on their PYTHONPATH), so it
imports nothing heavy at the top.
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
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
if str(REPO) not in sys.path:  # the harness's statistics (standard library only)
    sys.path.insert(0, str(REPO))
from benchmarks.common import quantile  # noqa: E402

RECORD_DIR_ENV = "HPOQ_SWEEP_RECORD_DIR"
OBJECTIVE = f"{Path(__file__).stem}:timed_objective"
LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-DATE", "I-DATE"]
BUSY_TARGET_PCT = 85.0
SPEEDUP_TARGET = 2.5


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
            **_epochs_summary(Path(context.trial_dir)),
        )


def _epochs_summary(trial_dir: Path) -> dict[str, float | None]:
    """Seconds in the epochs (training and validation) and the mean padding share of the
    training batches, from the objective's training.json."""
    try:
        summary = json.loads((trial_dir / "training.json").read_text(encoding="utf-8"))
        epochs = summary["epochs"]
        padding = [float(e["padding_fraction"]) for e in epochs if "padding_fraction" in e]
        return {
            "train_loop_s": float(sum(epoch["seconds"] for epoch in epochs)),
            "padding_fraction": sum(padding) / len(padding) if padding else None,
        }
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return {"train_loop_s": None, "padding_fraction": None}


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


_log_file: dict[str, TextIO | None] = {"file": None}


def log(message: str) -> None:
    """A human line on stderr, and in the run's log file once it is open."""
    print(message, file=sys.stderr, flush=True)
    out = _log_file["file"]
    if out is not None:
        out.write(message + "\n")
        out.flush()


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


# ---------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Model:
    """A backbone built from config (`architecture` in the HPO config)."""

    model_type: str
    layers: int
    hidden_size: int
    heads: int
    intermediate_size: int
    epoch_s_h200: float  # guessed seconds per epoch on an H200 (fp32, grouped): the estimate
    learning_rate: tuple[float, float] = (5e-5, 5e-4)  # the search range (log scale)

    def architecture(self, max_length: int) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "num_layers": self.layers,
            "num_heads": self.heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": max(128, max_length),
        }


MODELS = {
    "minilm": Model("bert", 6, 384, 12, 1536, 0.7),  # MiniLM-L6-H384-sized
    "distilbert": Model("distilbert", 6, 768, 12, 3072, 1.1),  # DistilBERT-base-sized
    "bert-4x512": Model("bert", 4, 512, 8, 2048, 0.9),  # the earlier single sweep's model
    "tiny": Model("bert", 2, 64, 2, 128, 0.1, (2e-3, 1e-2)),  # for --cpu
}


@dataclass(frozen=True)
class Data:
    kind: str  # tweets: WNUT17-sized, tweet-like lengths; templates: the synthetic spec
    train: int
    validation: int
    test: int


DATA = {
    "wnut17": Data("tweets", 3400, 1000, 200),
    "templates": Data("templates", 4000, 800, 100),
    "cpu": Data("tweets", 160, 60, 20),
}


@dataclass(frozen=True)
class Plan:
    slots: tuple[int, ...]
    models: tuple[str, ...]
    precisions: tuple[str, ...]
    groupings: tuple[bool, ...]
    trials_per_slot: int
    epochs: int
    batch_size: int
    max_seq_length: int
    data: str
    device: str  # cuda | cpu

    def cells(self, slots: int) -> list[Cell]:
        """This K's cells, the targets' model first."""
        return [
            Cell(model, precision, grouping, slots)
            for model in self.models
            for precision in self.precisions
            for grouping in self.groupings
        ]

    def trials(self, slots: int) -> int:
        return slots * self.trials_per_slot


@dataclass(frozen=True)
class Cell:
    model: str
    precision: str
    grouping: bool
    slots: int

    @property
    def name(self) -> str:
        """The cell's backbone name (its own study and records)."""
        padding = "grouped" if self.grouping else "shuffled"
        return f"{self.model}-{self.precision}-{padding}-k{self.slots}"


def estimate_s(plan: Plan) -> float:
    """A rough duration of the run on an H200, from guessed epoch times: worker start and
    warm-up per K, cells at a slot speed-up of K^0.6, and a few seconds per cell."""
    total = 0.0
    for slots in plan.slots:
        total += 25.0
        for cell in plan.cells(slots):
            trial_s = 1.0 + plan.epochs * MODELS[cell.model].epoch_s_h200
            total += 3.0 + plan.trials(slots) * trial_s / slots**0.6
    return total


def write_data(root: Path, data: Data) -> dict[str, Any]:
    """The data config; tweet-like splits are written here as CoNLL files."""
    config: dict[str, Any] = {
        "name": f"sweep-{data.kind}",
        "version": "1",
        "format": "conll",
        "local_path": str(root / "data"),
        "splits": {"train": "train.conll", "validation": "validation.conll", "test": "test.conll"},
        "labels": LABELS,
    }
    if data.kind == "templates":
        config["synthetic"] = {
            "seed": 13,
            "train_sentences": data.train,
            "validation_sentences": data.validation,
            "test_sentences": data.test,
        }
        return config
    from hpoq.core.datasets.synthetic import tweet_like_sentences
    from hpoq.core.datasets.writers import write_sentences

    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, count in (
        ("train", data.train),
        ("validation", data.validation),
        ("test", data.test),
    ):
        write_sentences(
            root / "data" / f"{split}.conll", tweet_like_sentences(split, count), "conll"
        )
    return config


def write_experiment(
    root: Path,
    name: str,
    cell: Cell,
    n_trials: int,
    epochs: int,
    plan: Plan,
    data: dict[str, Any],
    seed: int,
) -> Path:
    """A cell as real config files (JSON is YAML), as `hpoq submit` reads them; `name` is
    its backbone (so its study and its records)."""
    config = root / "config" / name
    config.mkdir(parents=True, exist_ok=True)
    hpo = {
        "backbones": [
            {
                "name": name,
                "architecture": MODELS[cell.model].architecture(plan.max_seq_length),
            }
        ],
        "n_trials": n_trials,
        "search_space": {
            "learning_rate": {
                "type": "float",
                "low": MODELS[cell.model].learning_rate[0],
                "high": MODELS[cell.model].learning_rate[1],
                "log": True,
            },
            "batch_size": {"type": "categorical", "choices": [plan.batch_size]},
            "epochs": {"type": "categorical", "choices": [epochs]},
            "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.1},
            "weight_decay": {"type": "float", "low": 0.0, "high": 0.05},
            "dropout": {"type": "float", "low": 0.0, "high": 0.2},
        },
        "sampler": {"type": "tpe", "seed": seed},
        "pruner": {"type": "none"},
        "objective": {"function": OBJECTIVE, "metric": "macro-f1", "direction": "maximize"},
        "trainer": {
            "precision": cell.precision,
            "max_seq_length": plan.max_seq_length,
            "device": plan.device,
            "length_grouping": cell.grouping,
        },
        "checkpoint": {"enabled": True, "save_only_best": True},
    }
    benchmark = {"batch_sizes": [1], "warmup_iterations": 1, "iterations": 1}
    selection = {"objective": {"metric": "macro-f1", "direction": "maximize"}}
    files = {"hpo": hpo, "data": data, "benchmark": benchmark, "selection": selection}
    for stem, content in files.items():
        (config / f"{stem}.yaml").write_text(json.dumps(content, indent=1), encoding="utf-8")
    experiment = {"name": f"gpu-sweep-{name}", **{stem: f"{stem}.yaml" for stem in files}}
    path = config / "experiment.yaml"
    path.write_text(json.dumps(experiment, indent=1), encoding="utf-8")
    return path


class Producer:
    """`hpoq submit`'s Submitter in this process: imports paid once, not per cell."""

    def __init__(self) -> None:
        from hpoq.core.runtime import Runtime
        from hpoq.producer.services import open_services

        self.services = open_services(Runtime.from_settings(), start_embedded=False)

    def submit(self, experiment_path: Path) -> int:
        from hpoq.config.loader import load_experiment
        from hpoq.producer.submit import Submitter

        services = self.services
        submitter = Submitter(
            load_experiment(experiment_path),
            services.runtime,
            services.redis,
            services.keys,
            services.celery,
            mlflow=services.mlflow(),
        )
        return sum(r.trials_enqueued for r in submitter.submit())

    def close(self) -> None:
        self.services.close()


def wait_jobs(
    records: Path,
    backbone: str,
    count: int,
    procs: list[Process],
    deadline: Deadline,
    what: str,
) -> list[dict[str, Any]]:
    """Poll the records until `count` jobs of `backbone` have ended (a task_end that is not a
    retry; jobs that failed before their objective count too)."""
    while True:
        rows = read_records(records)
        ended = {
            r["job_id"]
            for r in rows
            if r["kind"] == "task_end" and r["backbone"] == backbone and r["state"] != "RETRY"
        }
        if len(ended) >= count:
            return rows
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"the worker exited ({proc.log_path.name}):\n{proc.tail()}")
        deadline.check(what)
        time.sleep(0.1)


def start_worker(
    slots: int, device: str, env: dict[str, str], logs: Path, loglevel: str
) -> Process:
    argv = [sys.executable, "-m", "hpoq.producer", "worker", "--queues", "hpo"]
    argv += ["--slots", str(slots), "--loglevel", loglevel]
    if device == "cuda":
        argv += ["--gpu", "0"]
    return Process(argv, env, logs / f"worker-k{slots}.log")


def wait_ready(redis_url: str, procs: list[Process], deadline: Deadline) -> list[str]:
    """Names of the workers answering a broadcast ping."""
    from hpoq.core.celery_app import create_app

    app = create_app(redis_url)
    try:
        while True:
            for proc in procs:
                if not proc.alive():
                    raise RuntimeError(f"worker exited at start:\n{proc.tail()}")
            replies = app.control.ping(timeout=0.5) or []
            names = [name for reply in replies for name in reply]
            if len(names) >= len(procs):
                return names
            deadline.check("waiting for the worker to answer")
            time.sleep(0.2)
    finally:
        app.close()


def detect(args: argparse.Namespace) -> str:
    """ "cuda" or "cpu". The parent never creates a CUDA context."""
    if args.device == "cpu":
        return "cpu"
    try:
        import torch

        available = torch.cuda.is_available()
    except ImportError:
        available = False
    if args.device == "cuda" and not available:
        raise SystemExit("--device cuda: torch sees no CUDA device")
    return "cuda" if available else "cpu"


def run_slots(
    slots: int,
    plan: Plan,
    ctx: RunContext,
) -> None:
    """Start a worker with `slots` slots, warm it up, run this K's cells, stop it."""
    marks: dict[str, float] = {"workers_start": time.time()}
    worker = start_worker(slots, plan.device, ctx.env, ctx.logs, ctx.args.loglevel)
    try:
        wait_ready(ctx.redis_url, [worker], ctx.deadline)
        marks["workers_ready"] = time.time()
        first = plan.cells(slots)[0]
        warm = Cell(first.model, first.precision, True, slots)
        warm_name = f"warm-k{slots}"
        warm_path = write_experiment(
            ctx.root, warm_name, warm, slots, 1, plan, ctx.data, ctx.args.seed
        )
        ctx.producer.submit(warm_path)
        warm_rows = wait_jobs(ctx.records, warm_name, slots, [worker], ctx.deadline, "warm-up")
        pids = {
            r["pid"] for r in warm_rows if r["kind"] == "objective" and r["backbone"] == warm_name
        }
        marks["warm_done"] = time.time()
        log(
            f"K={slots}: worker up in {marks['workers_ready'] - marks['workers_start']:.1f} s, "
            f"warm-up {marks['warm_done'] - marks['workers_ready']:.1f} s on {len(pids)} of "
            f"{slots} slot(s)"
        )
        for cell in plan.cells(slots):
            left = ctx.deadline.end - time.monotonic()
            if left < ctx.args.cell_reserve_s:
                ctx.cells.append({**_cell_fields(cell), "skipped": f"time: {left:.0f} s left"})
                log(f"  {cell.name}: skipped ({left:.0f} s left of the time budget)")
                continue
            ctx.cells.append(run_cell(cell, worker, plan, ctx))
    finally:
        stop_all([worker])


def run_cell(cell: Cell, worker: Process, plan: Plan, ctx: RunContext) -> dict[str, Any]:
    n_trials = plan.trials(cell.slots)
    path = write_experiment(
        ctx.root, cell.name, cell, n_trials, plan.epochs, plan, ctx.data, ctx.args.seed
    )
    marks = {"submit_start": time.time()}
    enqueued = ctx.producer.submit(path)
    marks["submit_end"] = time.time()
    try:
        rows = wait_jobs(ctx.records, cell.name, n_trials, [worker], ctx.deadline, cell.name)
        error = None
    except (TimeoutError, RuntimeError) as exc:
        rows, error = read_records(ctx.records), f"{type(exc).__name__}: {exc}"
    marks["done"] = time.time()
    report = analyse(rows, marks, ctx.sampler, cell.slots, n_trials, cell.name)
    ok = [r for r in rows if r["kind"] == "objective" and r["backbone"] == cell.name]
    completed = sum(1 for r in ok if r["status"] == "ok")
    wall = report.get("sweep_wall_s")
    padding = [r["padding_fraction"] for r in ok if r.get("padding_fraction") is not None]
    result = {
        **_cell_fields(cell),
        "trials_requested": n_trials,
        "trials_enqueued": enqueued,
        "trials_completed": completed,
        "window_s": wall,
        "trials_per_hour": round(completed / wall * 3600, 1) if wall else None,
        "gpu_busy_pct": report.get("gpu_util_mean_pct"),
        "slot_occupancy": _occupancy(report),
        "max_concurrent_trials": _max_concurrent(ok),
        "objective_p50_s": report.get("objective_p50_s"),
        "peak_mem_max_mib": (report.get("peak_mem_mib") or {}).get("max"),
        "padding_fraction": round(sum(padding) / len(padding), 3) if padding else None,
        "best_value": report.get("best_value"),
        "error": error,
        "detail": report,
    }
    busy = "-" if result["gpu_busy_pct"] is None else f"{result['gpu_busy_pct']}%"
    log(
        f"  {cell.name}: {completed}/{n_trials} trials in {wall} s -> "
        f"{result['trials_per_hour']} trials/h; GPU busy {busy}; slots occupied "
        f"{result['slot_occupancy']} (at most {result['max_concurrent_trials']} trials at once); "
        f"objective p50 {result['objective_p50_s']} s; padding {result['padding_fraction']}; "
        f"best macro-F1 {result['best_value']}" + (f"; ERROR {error}" if error else "")
    )
    if error and "TimeoutError" in error:
        raise TimeoutError(error)
    return result


def _cell_fields(cell: Cell) -> dict[str, Any]:
    return {
        "cell": cell.name,
        "model": cell.model,
        "precision": cell.precision,
        "grouping": cell.grouping,
        "padding": "grouped (after)" if cell.grouping else "shuffled (before)",
        "slots": cell.slots,
    }


def _max_concurrent(objectives: list[dict[str, Any]]) -> int:
    """The most objectives that ran at the same moment."""
    events = sorted([(r["start"], 1) for r in objectives] + [(r["end"], -1) for r in objectives])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def _occupancy(report: dict[str, Any]) -> float | None:
    outside = report.get("outside_objective_fraction")
    return None if outside is None else round(1 - outside, 3)


def targets(cells: list[dict[str, Any]], plan: Plan) -> dict[str, Any]:
    """Per precision, for the MiniLM-sized model: GPU busy at the best K (grouping on), and
    trials per hour at that K against K = 1 without grouping."""
    found: dict[str, Any] = {}
    model = "minilm" if "minilm" in plan.models else plan.models[0]
    done = [c for c in cells if c.get("trials_per_hour") and c["model"] == model]
    for precision in plan.precisions:
        after = [c for c in done if c["precision"] == precision and c["grouping"]]
        before = [
            c for c in done if c["precision"] == precision and not c["grouping"] and c["slots"] == 1
        ]
        if not after:
            continue
        best = max(after, key=lambda c: c["trials_per_hour"])
        entry: dict[str, Any] = {
            "model": model,
            "best_slots": best["slots"],
            "trials_per_hour": best["trials_per_hour"],
            "gpu_busy_pct": best["gpu_busy_pct"],
            "gpu_busy_met": None
            if best["gpu_busy_pct"] is None
            else best["gpu_busy_pct"] >= BUSY_TARGET_PCT,
            "gpu_busy_target": f">= {BUSY_TARGET_PCT}%",
        }
        if before:
            speedup = best["trials_per_hour"] / before[0]["trials_per_hour"]
            entry.update(
                k1_before_trials_per_hour=before[0]["trials_per_hour"],
                speedup_vs_k1_before=round(speedup, 2),
                speedup_met=speedup >= SPEEDUP_TARGET,
                speedup_target=f">= {SPEEDUP_TARGET}x",
            )
        found[precision] = entry
    return found


def print_table(cells: list[dict[str, Any]], found: dict[str, Any]) -> None:
    log("")
    header = ("cell", "trials", "window s", "trials/h", "GPU busy %", "slots busy", "obj p50 s",
              "padding", "peak MiB", "best F1")  # fmt: skip
    log(" ".join(f"{h:>12}" if i else f"{h:<34}" for i, h in enumerate(header)))
    for c in cells:
        if "skipped" in c:
            log(f"{c['cell']:<34} skipped ({c['skipped']})")
            continue
        row = (f"{c['trials_completed']}/{c['trials_requested']}", c["window_s"],
               c["trials_per_hour"], c["gpu_busy_pct"], c["slot_occupancy"],
               c["objective_p50_s"], c["padding_fraction"], c["peak_mem_max_mib"],
               c["best_value"])  # fmt: skip
        log(f"{c['cell']:<34} " + " ".join(f"{v!s:>12}" for v in row))
    for precision, t in found.items():
        line = (
            f"target [{t['model']} {precision}]: best K={t['best_slots']} "
            f"{t['trials_per_hour']} trials/h, GPU busy {t['gpu_busy_pct']}% "
            f"(target {t['gpu_busy_target']}: {_verdict(t['gpu_busy_met'])})"
        )
        if "speedup_vs_k1_before" in t:
            line += (
                f"; x{t['speedup_vs_k1_before']} the trials/h of K=1 before the padding change "
                f"({t['k1_before_trials_per_hour']}) (target {t['speedup_target']}: "
                f"{_verdict(t['speedup_met'])})"
            )
        log(line)


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("MET" if met else "MISSED")


@dataclass
class RunContext:
    args: argparse.Namespace
    root: Path
    records: Path
    logs: Path
    env: dict[str, str]
    redis_url: str
    data: dict[str, Any]
    sampler: GpuSampler
    producer: Producer
    deadline: Deadline
    cells: list[dict[str, Any]] = field(default_factory=list)


def main() -> int:
    args = parse_args()
    device = detect(args)
    plan = make_plan(args, device)
    out = Path(args.out or os.environ.get("OUT") or "gpu_sweep_out")
    out.mkdir(parents=True, exist_ok=True)
    _log_file["file"] = (out / "gpu_sweep.log").open("w", encoding="utf-8")
    started = time.time()
    deadline = Deadline(args.timeout)
    total_cells = sum(len(plan.cells(k)) for k in plan.slots)
    total_trials = sum(len(plan.cells(k)) * plan.trials(k) for k in plan.slots)
    log(
        f"gpu_sweep {datetime.now(UTC).isoformat(timespec='seconds')} on {device}: K in "
        f"{list(plan.slots)}, models {list(plan.models)}, {list(plan.precisions)}, grouping "
        f"{['on' if g else 'off' for g in plan.groupings]}; {total_cells} cells, "
        f"{total_trials} trials of {plan.epochs} epoch(s) at batch {plan.batch_size} on "
        f"{plan.data} data"
    )
    if device == "cuda":
        log(
            f"estimate on an H200: ~{estimate_s(plan) / 60:.1f} min (guessed epoch times; "
            f"time budget {args.timeout:.0f} s: cells past it are skipped)"
        )
    root = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="hpoq-gpu-sweep-"))
    root.mkdir(parents=True, exist_ok=True)
    output, records, logs = root / "out", root / "records", root / "logs"
    for directory in (output, records, logs):
        directory.mkdir(parents=True, exist_ok=True)

    from hpoq.core.coordination.embedded import EmbeddedRedis

    redis = EmbeddedRedis(root / "redis")
    sampler = GpuSampler(interval_ms=args.smi_interval_ms, prefer=args.sampler)
    producer: Producer | None = None
    ctx: RunContext | None = None
    error: str | None = None
    try:
        redis.start()
        env = worker_env(output, redis.url, records, device)
        for name in [n for n in os.environ if n.startswith(("HPOQ_", "MLFLOW_"))]:
            del os.environ[name]
        os.environ.update({k: v for k, v in env.items() if k.startswith("HPOQ_")})
        data = write_data(root, DATA[plan.data])
        producer = Producer()
        sampler.start()
        log(f"GPU sampler: {sampler.backend or 'none'} {sampler.note}".rstrip())
        ctx = RunContext(
            args, root, records, logs, env, redis.url, data, sampler, producer, deadline
        )
        for slots in plan.slots:
            run_slots(slots, plan, ctx)
    except (Exception, KeyboardInterrupt) as exc:
        error = f"{type(exc).__name__}: {exc}"
        log(f"error: {error}")
    finally:
        sampler.stop()
        if producer is not None:
            producer.close()
        redis.stop()
    cells = ctx.cells if ctx is not None else []
    found = targets(cells, plan)
    print_table(cells, found)
    device_name = next((c["detail"].get("device_name") for c in cells if c.get("detail")), None)
    report = {
        "check": "gpu_sweep",
        "date": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 1),
        "complete": error is None and all("skipped" not in c and not c.get("error") for c in cells),
        "error": error,
        "device": device,
        "device_name": device_name,
        "gpu_sampler": sampler.backend,
        "gpu_sampler_note": sampler.note or None,
        "plan": asdict(plan),
        "data": asdict(DATA[plan.data]),
        "models": {name: asdict(MODELS[name]) for name in plan.models},
        "targets": found,
        "all_met": bool(found)
        and all(
            t.get("gpu_busy_met") is True and t.get("speedup_met", False) is True
            for t in found.values()
        ),
        "cells": cells,
        "python": sys.version.split()[0],
        "host_cpus": os.cpu_count(),
    }
    save(report, out, root, sampler)
    if not args.work and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        log(f"kept {root}")
    log(f"wrote {out / 'gpu_sweep.json'} and {out / 'gpu_sweep.log'}")
    sys.stderr.flush()
    print(json.dumps(report, sort_keys=True, default=str), flush=True)
    out_file = _log_file["file"]
    if out_file is not None:
        out_file.close()
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
    backbone: str,
) -> dict[str, Any]:
    """The figures of one variant (`backbone`) run by `workers` processes side by side."""
    objectives = sorted(
        (r for r in rows if r["kind"] == "objective" and r.get("backbone") == backbone),
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
            str(r["state"]) for r in rows if r["kind"] == "task_end" and r["backbone"] == backbone
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
        # Seconds since the worker was started: ready, warm_done, submit_*, done.
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


def save(report: dict[str, Any], out: Path, root: Path, sampler: GpuSampler) -> None:
    """The JSON, the worker logs and the GPU samples under `out` (the log is written as the
    run goes)."""
    try:
        (out / "gpu_sweep.json").write_text(json.dumps(report, indent=1, default=str))
        if (root / "logs").is_dir():
            shutil.copytree(root / "logs", out / "gpu_sweep_logs", dirs_exist_ok=True)
        redis_log = root / "redis" / "redis.log"
        if redis_log.is_file():
            (out / "gpu_sweep_logs").mkdir(exist_ok=True)
            shutil.copy(redis_log, out / "gpu_sweep_logs" / "redis.log")
        with (out / "gpu_samples.csv").open("w", encoding="utf-8") as csv:
            csv.write("t,gpu,util_pct,mem_mib\n")
            csv.writelines(f"{t:.3f},{g},{u},{m}\n" for t, g, u, m in sampler.samples)
    except OSError as exc:
        log(f"could not write to {out}: {exc}")


def _csv(value: str, allowed: Iterable[str] | None = None) -> tuple[str, ...]:
    items = tuple(item.strip() for item in value.split(",") if item.strip())
    if allowed is not None:
        unknown = sorted(set(items) - set(allowed))
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}")
    return items


def make_plan(args: argparse.Namespace, device: str) -> Plan:
    """The matrix: the issue's on a GPU, a tiny one on the CPU; flags override either."""
    cpu = device == "cpu"
    slots = tuple(int(k) for k in _csv(args.slots or ("1,2" if cpu else "1,2,4")))
    if not slots or min(slots) < 1:
        raise SystemExit("--slots: positive numbers, e.g. 1,2,4")
    models = _csv(args.models or ("tiny" if cpu else "minilm,distilbert"), MODELS)
    precisions = _csv(args.precisions or ("fp32" if cpu else "fp32,bf16"), ("fp32", "bf16"))
    grouping = _csv(args.grouping or "off,on", ("off", "on"))
    return Plan(
        slots=slots,
        models=models,
        precisions=precisions,
        groupings=tuple(g == "on" for g in grouping),
        trials_per_slot=args.trials_per_slot or (1 if cpu else 3),
        epochs=args.epochs or (1 if cpu else 2),
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        data=args.data or ("cpu" if cpu else "wnut17"),
        device=device,
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--cpu", dest="device", action="store_const", const="cpu")
    parser.add_argument("--slots", help="K values, e.g. 1,2,4 (CPU: 1,2)")
    parser.add_argument("--models", help=f"of {', '.join(MODELS)} (default minilm,distilbert)")
    parser.add_argument("--precisions", help="fp32,bf16 (CPU: fp32)")
    parser.add_argument("--grouping", help="off,on: length grouping before/after (default both)")
    parser.add_argument("--trials-per-slot", type=int, help="trials per cell = K x this (3)")
    parser.add_argument("--epochs", type=int, help="epochs per trial (2; CPU 1)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--data", choices=sorted(DATA), help="wnut17 (CPU: cpu)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sampler", choices=["auto", "nvml", "smi"], default="auto")
    parser.add_argument("--smi-interval-ms", type=int, default=100)
    parser.add_argument("--loglevel", default="WARNING", help="the workers' log level")
    parser.add_argument(
        "--timeout",
        type=float,
        default=540.0,
        help="seconds for the whole run (cells past it skip)",
    )
    parser.add_argument(
        "--cell-reserve-s",
        type=float,
        default=20.0,
        help="skip a cell when fewer seconds than this are left",
    )
    parser.add_argument(
        "--out", help="where the JSON and the log go (default $OUT, ./gpu_sweep_out)"
    )
    parser.add_argument("--work", help="working folder, kept (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary working folder")
    args = parser.parse_args()
    if args.trials_per_slot is not None and args.trials_per_slot < 1:
        parser.error("--trials-per-slot must be at least 1")
    return args


def _on_signal(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    sys.exit(main())
