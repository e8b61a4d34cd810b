"""What a person sees of `hpoq run` on the (shrunk) smoke experiment, run once for all:
progress lines in a log file while it runs, `hpoq status` after it, the HTML report
agreeing with `hpoq retrieve --json`, and the report rendered by a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpoq.config.loader import load_experiment
from hpoq.config.settings import Settings
from hpoq.core.mlflow_queries import query_runs_by_tags
from hpoq.core.runtime import Runtime
from hpoq.core.tracking import find_experiment_id, make_client
from hpoq.core.trial_record import STAGE_REPORT
from tests.conftest import CONFIG_DIR
from tests.integration.cluster import cluster_env
from tests.integration.test_local_run import _shrink
from tests.producer.report.test_report import Sections, figure

pytestmark = pytest.mark.slow
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
TRIAL_LINE = re.compile(r"\] tiny-bert hpo_tiny-bert: trial \d+ (COMPLETE|PRUNED)")


@dataclass
class FinishedRun:
    experiment: Path
    env: dict[str, str]
    log: str
    seen_while_running: str


def _hpoq(run: FinishedRun, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpoq.producer", *args],
        env=run.env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    """`hpoq run` with stdout and stderr going to a file, read while it runs."""
    root = tmp_path_factory.mktemp("visible")
    shutil.copytree(CONFIG_DIR, root / "config")
    path = _shrink(root / "config")
    bench = yaml.safe_load((root / "config" / "benchmark.yaml").read_text())
    bench["min_measure_seconds"] = 0.1
    (root / "config" / "benchmark.yaml").write_text(yaml.safe_dump(bench))
    env = cluster_env(root / "out", "")
    env.pop("HPOQ_REDIS_URL")  # the embedded default, stopped at the end of the run
    log_path = root / "run.log"
    with log_path.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpoq.producer", "run", str(path)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    seen = ""
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            running = proc.poll() is None  # before the read: the text predates the end
            text = log_path.read_text()
            if not running or TRIAL_LINE.search(text):
                seen = text if running else ""
                break
            time.sleep(0.2)
        code = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    assert code == 0, log[-4000:]
    return FinishedRun(path, env, log, seen)


def test_a_log_file_shows_each_trial_while_the_run_goes_on(finished: FinishedRun) -> None:
    assert TRIAL_LINE.search(finished.seen_while_running), finished.log[-3000:]
    log = finished.log
    # Where to look comes first; every finished trial has its line, with the best so far.
    assert log.index("worker logs: ") < log.index("trial ")
    assert re.search(r"outputs: .*/out\b", log)
    assert len(re.findall(r"hpo_tiny-bert: trial \d+ (?:COMPLETE|PRUNED|FAIL)", log)) == 2
    assert re.search(r"\(\d/2 finished, \d running, best [0-9.]+, eta [0-9:?]+\)", log)
    assert "benchmark measured: tiny-bert hpo_tiny-bert trial" in log
    # Tables whole in a file: p99 and peak memory (n/a on a CPU), no cut cell.
    assert "p99 ms" in log and "n/a" in log and "…" not in log
    assert re.search(r"^report: .*smoke\.html$", log, re.MULTILINE)


def test_status_after_the_run_reads_what_it_left(finished: FinishedRun) -> None:
    result = _hpoq(finished, "status", str(finished.experiment), "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    [variant] = status["variants"]
    assert (variant["study_name"], variant["finished"], variant["n_trials"]) == (
        "hpo_tiny-bert",
        2,
        2,
    )
    assert status["queues"] == {"hpo": 0, "benchmark": 0, "train": 0}
    where = status["where"]
    assert where["redis_source"] == "snapshot"
    assert Path(where["worker_logs"], "worker-0.log").is_file()
    assert Path(where["report"]).is_file()
    human = _hpoq(finished, "status", str(finished.experiment))
    assert human.returncode == 0, human.stderr
    assert "read from a copy of what the last run left" in human.stdout


def test_the_report_agrees_with_retrieve(finished: FinishedRun) -> None:
    result = _hpoq(finished, "retrieve", str(finished.experiment), "--json")
    assert result.returncode == 0, result.stderr
    [best] = json.loads(result.stdout)["best"]
    assert Path(best["checkpoint"]["local_path"]).is_dir()
    assert best["checkpoint"]["artifact_uri"].endswith("/checkpoint")

    runtime = Runtime.from_settings(
        Settings(output_dir=Path(finished.env["HPOQ_OUTPUT_DIR"]), platform="local")
    )
    experiment = load_experiment(finished.experiment)
    report = runtime.layout.root / "reports" / "smoke.html"
    html = report.read_text(encoding="utf-8")
    page = Sections()
    page.feed(html)
    summary: dict[str, Any] = json.loads(
        re.search(r'id="hpoq-report-summary">(.*?)</script>', html).group(1)  # type: ignore[union-attr]
    )
    [shown] = summary["backbones"]["tiny-bert"]["best"]
    assert (shown["study_name"], shown["trial_number"], shown["value"]) == (
        best["study_name"],
        best["trial_number"],
        best["value"],
    )
    trials = summary["backbones"]["tiny-bert"]["trials"]
    assert trials["complete"] + trials["pruned"] == 2
    [history] = page.of("history", "tiny-bert")
    data, _ = figure(html, history["charts"][0])
    [series] = [t for t in data if t["name"].startswith("macro-f1")]
    assert len(series["x"]) == trials["complete"]
    assert max(series["y"]) == pytest.approx(best["value"])
    for section in ("tradeoff", "latency"):
        assert page.of(section) and all(len(s["charts"]) == 1 for s in page.of(section))
    # Logged to MLflow, in one run of the HPO experiment that is not a trial.
    client = make_client(runtime.mlflow_uri())
    experiment_id = find_experiment_id(client, experiment.hpo_experiment_name)
    assert experiment_id is not None
    process = experiment.tags.process
    [run] = query_runs_by_tags(client, [experiment_id], {process.stage: STAGE_REPORT}, status=None)
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["smoke.html"]


def test_the_report_renders_in_a_browser(finished: FinishedRun, tmp_path: Path) -> None:
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if browser is None:
        pytest.skip(f"no headless browser installed (looked for {', '.join(BROWSERS)})")
    from PIL import Image, ImageStat

    report = Path(finished.env["HPOQ_OUTPUT_DIR"]) / "reports" / "smoke.html"
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,2400",
            "--virtual-time-budget=15000",
            f"--screenshot={shot}",
            report.as_uri(),
        ],
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert shot.is_file()
    with Image.open(shot) as image:
        gray = image.convert("L")
        assert ImageStat.Stat(gray).var[0] > 200  # not a blank page
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 200  # charts drawn, not only text
