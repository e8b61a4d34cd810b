"""`hpoq run` on the shipped smoke experiment (shrunk), with the real trainer and runner."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from hpoq.config.loader import load_experiment
from hpoq.config.settings import Settings
from hpoq.core.benchmark_index import read_cache
from hpoq.core.runtime import Runtime
from hpoq.core.tracking import make_client
from hpoq.core.variants import VariantRef
from tests.integration.cluster import cluster_env

pytestmark = pytest.mark.slow


def _shrink(config: Path) -> Path:
    """The smoke experiment with fewer, shorter trials and a smaller dataset."""
    hpo = yaml.safe_load((config / "hpo" / "smoke.yaml").read_text())
    hpo["n_trials"] = 2
    hpo["search_space"]["epochs"] = {"type": "int", "low": 1, "high": 2}
    (config / "hpo" / "smoke.yaml").write_text(yaml.safe_dump(hpo))
    data = yaml.safe_load((config / "data" / "synthetic_ner.yaml").read_text())
    data["synthetic"].update(train_sentences=200, validation_sentences=40, test_sentences=40)
    (config / "data" / "synthetic_ner.yaml").write_text(yaml.safe_dump(data))
    bench = yaml.safe_load((config / "benchmark.yaml").read_text())
    bench.update(batch_sizes=[1, 8], iterations=3, warmup_iterations=1)
    (config / "benchmark.yaml").write_text(yaml.safe_dump(bench))
    final = yaml.safe_load((config / "final_training" / "smoke.yaml").read_text())
    final["epochs"] = 3
    (config / "final_training" / "smoke.yaml").write_text(yaml.safe_dump(final))
    return config / "experiment" / "smoke.yaml"


def _processes_for(output: Path) -> list[int]:
    """Processes started for this output directory (workers carry it in their environment)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("HPOQ_OUTPUT_DIR") == str(output):
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _run(path: Path, env: dict[str, str]) -> dict:  # type: ignore[type-arg]
    result = subprocess.run(
        [sys.executable, "-m", "hpoq.producer", "run", str(path), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_hpoq_run_completes_the_smoke_pipeline_and_a_second_run_does_nothing(
    config_copy: Path, tmp_path: Path
) -> None:
    path = _shrink(config_copy)
    output = tmp_path / "out"
    env = cluster_env(output, "")
    env.pop("HPOQ_REDIS_URL")  # the embedded default
    first = _run(path, env)
    assert first["new_work"] and first["trials_enqueued"] == 2
    [best] = first["best_trials"]
    assert best["source"] == "mlflow" and 0.0 <= best["value"] <= 1.0
    bench, final_bench = first["benchmarks"]  # the best trial's, then the final model's
    assert bench["status"] == "measured" and {e["batch_size"] for e in bench["entries"]} == {1, 8}
    assert (final_bench["study_name"], final_bench["status"]) == ("final_tiny-bert", "measured")
    [final] = first["final_models"]  # trained on train + validation, scored on test
    assert (
        final["name"] == "final_tiny-bert"
        and final["source"]["trial_number"] == best["trial_number"]
    )
    assert final["metrics"]["test.macro-f1"] > final["metrics"]["test_untrained.macro-f1"]
    assert first["final_enqueued"] == 1

    experiment = load_experiment(path)
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    study = runtime.study_store(experiment.hpo.checkpoint).load(
        VariantRef("tiny-bert", 1, "hpo_tiny-bert")
    )
    assert study is not None
    finished = study.get_trials(
        states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    )
    assert len(finished) == 2
    client = make_client(runtime.mlflow_uri())
    hpo_runs = client.search_runs(
        [client.get_experiment_by_name(experiment.hpo_experiment_name).experiment_id],
        filter_string="tags.`hpoq.stage` = 'hpo'",  # the report's run is not a trial
    )
    assert len(hpo_runs) == 2
    cached = read_cache(runtime.layout, bench["key"])
    assert cached is not None and cached["result"]["runner"] == "torch"
    study_dir = runtime.layout.study_dir("tiny-bert", "hpo_tiny-bert")
    assert len(list(study_dir.glob("trial_*/metrics.json"))) == 2
    assert len(list(study_dir.glob("trial_*/checkpoint"))) == 1  # save_only_best

    second = _run(path, env)
    assert not second["new_work"]
    assert [p["action"] for p in second["plan"]] == ["reused"]
    assert second["best_trials"] == first["best_trials"]
    assert second["final_models"] == first["final_models"] and second["final_enqueued"] == 0
    bench_runs = client.search_runs(
        [client.get_experiment_by_name(experiment.benchmark_experiment_name).experiment_id]
    )
    assert len(bench_runs) == 2  # the best trial and the final model, each measured once


def _sigint_as_in_a_terminal() -> None:
    """Ctrl-C reaches a command run in the foreground of a terminal. A process started in
    the background of a non-interactive shell (`pytest &`, some CI runners) inherits SIGINT
    *ignored*, and Python keeps it ignored: `hpoq run` would then never see the signal,
    finish its sweep and exit 0. The command under test gets what a terminal gives it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_the_workers_cleanly_and_the_next_run_resumes(tmp_path: Path) -> None:
    import time

    from tests.factories import write_experiment
    from tests.integration.cluster import wait_for

    path = write_experiment(tmp_path, n_trials=3)
    output = tmp_path / "out"
    env = cluster_env(output, "", HPOQ_CHEAP_OBJECTIVE_SLEEP="1.5")
    env.pop("HPOQ_REDIS_URL")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpoq.producer", "run", str(path), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_sigint_as_in_a_terminal,
    )
    experiment = load_experiment(path)
    runtime = Runtime.from_settings(Settings(output_dir=output, platform="local"))
    ref = VariantRef("tiny", 1, "hpo_tiny")

    def running() -> list[optuna.trial.FrozenTrial]:
        study = runtime.study_store(experiment.hpo.checkpoint).load(ref)
        states = (optuna.trial.TrialState.RUNNING,)
        return [] if study is None else study.get_trials(states=states)

    wait_for(running, 120, "a running trial")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-2000:]
    time.sleep(1)
    assert running() == []  # the job in hand finished: nothing left RUNNING
    assert _processes_for(output) == []  # workers and the embedded Redis are gone

    resumed = _run(path, env)
    assert resumed["plan"][0]["action"] == "continued"
    study = runtime.study_store(experiment.hpo.checkpoint).load(ref)
    assert study is not None
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3
    assert running() == []
    assert [b["status"] for b in resumed["benchmarks"]] == ["measured"]
