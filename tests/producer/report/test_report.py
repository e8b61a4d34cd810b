"""The report of a finished experiment, built from real Optuna studies, a real MLflow store
(SQLite) and a benchmark result on disk: one chart per section with the experiment's data,
notes instead of charts where there are too few trials, every user string escaped."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import optuna
import pytest

from hpoq.config.experiment import Experiment
from hpoq.core.benchmark_index import cache_path, select_candidates
from hpoq.core.optuna_setup import create_variant_study
from hpoq.core.retrieval import retrieve_best_trials
from hpoq.core.runtime import Runtime
from hpoq.core.tracking import ensure_experiment, make_client
from hpoq.core.trial_record import STAGE_BENCHMARK, STAGE_HPO, write_json_atomic
from hpoq.core.variants import VariantRef
from hpoq.producer.report.build import build_report, write_report
from tests.factories import make_experiment, seed_mlflow_store

EVIL = "<script>alert('boom')</script> & \"quotes\""


class Sections(HTMLParser):
    """Each `<section>`'s data attributes and the chart divs and notes inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[dict[str, Any]] = []
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "section":
            self.sections.append({"attrs": found, "charts": [], "notes": 0})
        elif self.sections and tag == "div" and "plotly-graph-div" in (found.get("class") or ""):
            self.sections[-1]["charts"].append(found["id"])
        elif self.sections and tag == "p" and found.get("class") == "note":
            self.sections[-1]["notes"] += 1

    def of(self, section: str, backbone: str | None = None) -> list[dict[str, Any]]:
        return [
            s
            for s in self.sections
            if s["attrs"].get("data-section") == section
            and (backbone is None or s["attrs"].get("data-backbone") == backbone)
        ]


def figure(html: str, div_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The data and layout plotly.js is given for the chart `div_id`."""
    decoder = json.JSONDecoder()
    start = html.index(f'Plotly.newPlot(                        "{div_id}",')
    position = html.index("[", start)
    data, end = decoder.raw_decode(html, position)
    layout, _ = decoder.raw_decode(html, html.index("{", end))
    return data, layout


def _trial(study: optuna.Study, value: float | None, params: dict[str, Any]) -> None:
    distributions = {
        "learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
        "batch_size": optuna.distributions.CategoricalDistribution([8, 16]),
        "epochs": optuna.distributions.IntDistribution(1, 2),
    }
    state = optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.FAIL
    study.add_trial(
        optuna.trial.create_trial(
            params=params, distributions=distributions, value=value, state=state
        )
    )


@pytest.fixture
def finished(tmp_path: Path, hpoq_env: Path, mlflow_template: Path) -> tuple[Experiment, Runtime]:
    """`tiny`: two variants, 6 COMPLETE trials and one FAIL (its run tagged with an error);
    `small`: one COMPLETE trial. tiny's best is benchmarked; small's benchmark failed."""
    experiment = make_experiment(tmp_path, backbones=("tiny", "small"))
    runtime = Runtime.from_settings()
    seed_mlflow_store(mlflow_template, hpoq_env)
    store = runtime.study_store(experiment.hpo.checkpoint)
    v1 = create_variant_study(store, VariantRef("tiny", 1, "hpo_tiny"), experiment.hpo)
    for i, value in enumerate([0.61, 0.72, 0.55, 0.80]):
        _trial(v1, value, {"learning_rate": 1e-3 * (i + 1), "batch_size": 8 + 8 * (i % 2),
                           "epochs": 1 + i % 2})  # fmt: skip
    _trial(v1, None, {"learning_rate": 5e-3, "batch_size": 8, "epochs": 1})
    v2 = create_variant_study(store, VariantRef("tiny", 2, "hpo_tiny_v2"), experiment.hpo)
    _trial(v2, 0.83, {"learning_rate": 2e-3, "batch_size": 16, "epochs": 2})
    _trial(v2, 0.70, {"learning_rate": 4e-3, "batch_size": 8, "epochs": 1})
    small = create_variant_study(store, VariantRef("small", 1, "hpo_small"), experiment.hpo)
    _trial(small, 0.50, {"learning_rate": 1e-3, "batch_size": 8, "epochs": 1})

    client = make_client(runtime.mlflow_uri())
    process, error_tag = experiment.tags.process, experiment.tags.benchmark.error
    hpo_id = ensure_experiment(client, experiment.hpo_experiment_name, None)
    failed = client.create_run(
        hpo_id,
        tags={
            process.stage: STAGE_HPO,
            process.experiment: experiment.name,
            process.backbone: "tiny",
            process.study_name: "hpo_tiny",
            process.trial_number: "4",
            error_tag: f"RuntimeError: {EVIL}",
        },
    )
    client.set_terminated(failed.info.run_id, status="FAILED")

    candidates, _, _ = select_candidates(experiment, runtime, client=client)
    by_backbone = {c.backbone: c for c in candidates if c.study_name != "hpo_tiny"}
    tiny = by_backbone.get("tiny") or next(c for c in candidates if c.backbone == "tiny")
    entries = [
        {"precision": "fp32", "padding": padding, "batch_size": size, "status": "ok",
         "iterations": 100,
         "latency_ms": {"p50": base * size, "p95": base * size * 1.5, "p99": base * size * 2,
                        "mean": base * size, "min": base, "max": base * size * 3},
         "throughput_sentences_per_s": 1000.0 / base, "throughput_tokens_per_s": 5000.0 / base,
         "peak_memory_mb": None, "error": None}
        for padding, base in (("sorted", 1.0), ("fixed", 2.0))
        for size in (1, 4)
    ]  # fmt: skip
    for candidate in candidates:
        if candidate.backbone != "tiny":
            continue
        write_json_atomic(
            cache_path(runtime.layout, candidate.key),
            {
                "benchmark_key": candidate.key,
                "fence": 1,
                "run_id": None,
                "result": {"device": "cpu", "device_name": "test cpu", "memory_kind": "none",
                           "entries": entries},
            },
        )  # fmt: skip
    assert tiny is not None
    small_key = next(c.key for c in candidates if c.backbone == "small")
    bench_id = ensure_experiment(client, experiment.benchmark_experiment_name, None)
    run = client.create_run(
        bench_id,
        tags={
            "benchmark_key": small_key,
            process.stage: STAGE_BENCHMARK,
            process.experiment: experiment.name,
            process.backbone: "small",
            process.study_name: "hpo_small",
            process.trial_number: "0",
            error_tag: "checkpoint missing <b>here</b>",
        },
    )
    client.set_terminated(run.info.run_id, status="FAILED")
    return experiment, runtime


def test_the_report_has_one_chart_per_section_with_the_runs_data(
    finished: tuple[Experiment, Runtime],
) -> None:
    experiment, runtime = finished
    client = make_client(runtime.mlflow_uri())
    html, _ = build_report(experiment, runtime, client)
    page = Sections()
    page.feed(html)
    page.close()
    for section in page.sections:
        assert len(section["charts"]) + section["notes"] <= 1, section

    # Per backbone: history, importances and parallel coordinates; notes where too few.
    [tiny_history] = page.of("history", "tiny")
    [tiny_importances] = page.of("importances", "tiny")
    [tiny_parallel] = page.of("parallel", "tiny")
    for section in (tiny_history, tiny_importances, tiny_parallel):
        assert len(section["charts"]) == 1
    [small_importances] = page.of("importances", "small")
    [small_parallel] = page.of("parallel", "small")
    assert small_importances["charts"] == [] and small_importances["notes"] == 1
    assert small_parallel["charts"] == [] and small_parallel["notes"] == 1
    assert len(page.of("history", "small")[0]["charts"]) == 1

    # The numbers agree with the retrieval (what `hpoq retrieve` prints) and the studies.
    summary = json.loads(
        re.search(
            r'<script type="application/json" id="hpoq-report-summary">(.*?)</script>', html
        ).group(1)  # type: ignore[union-attr]
    )
    retrieval = retrieve_best_trials(experiment, runtime, client=client)
    for best in retrieval.best:
        [shown] = summary["backbones"][best.backbone]["best"]
        assert (shown["study_name"], shown["trial_number"]) == (best.study_name, best.trial_number)
        assert shown["value"] == best.value
    assert summary["backbones"]["tiny"]["trials"]["complete"] == 6
    assert summary["backbones"]["tiny"]["trials"]["fail"] == 1
    assert summary["backbones"]["small"]["trials"]["complete"] == 1

    data, _ = figure(html, tiny_history["charts"][0])
    points = {t["name"]: t for t in data if t["name"].startswith("macro-f1 of")}
    assert sorted(len(t["x"]) for t in points.values()) == [2, 4]  # COMPLETE per variant
    assert max(y for t in points.values() for y in t["y"]) == pytest.approx(0.83)

    # Across backbones: accuracy against latency with the Pareto front, and latencies.
    tradeoff = page.of("tradeoff")
    assert len(tradeoff) == 2  # fp32 x (sorted, fixed)
    data, _ = figure(html, tradeoff[0]["charts"][0])
    front = [t for t in data if t["name"] == "Pareto front"]
    assert len(front) == 2  # one per batch size panel
    best_points = [t for t in data if t["name"] == "best trial"]
    assert {v for t in best_points for v in t["y"]} <= {0.80, 0.83}
    assert len(page.of("latency")) == 2
    assert "n/a" in html  # peak memory not measured on a CPU

    # Failures, escaped; the page needs nothing from the network.
    [failures] = page.of("failures")
    assert "&lt;script&gt;alert(&#x27;boom&#x27;)&lt;/script&gt;" in html
    assert "<script>alert(" not in html
    assert "checkpoint missing &lt;b&gt;here&lt;/b&gt;" in html
    assert failures["attrs"]["data-section"] == "failures"
    assert not re.search(r"<script[^>]+src=", html)
    assert html.count("Plotly.newPlot(") == sum(len(s["charts"]) for s in page.sections)


def test_a_report_is_written_and_kept_in_one_mlflow_run(
    finished: tuple[Experiment, Runtime], tmp_path: Path
) -> None:
    experiment, runtime = finished
    first = write_report(experiment, runtime, tmp_path / "r" / "report.html")
    second = write_report(experiment, runtime, tmp_path / "r" / "report.html")
    assert first.mlflow_error is None and first.run_id is not None
    assert second.run_id == first.run_id  # updated in place, not one run per report
    assert Path(first.path).read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    client = make_client(runtime.mlflow_uri())
    names = [a.path for a in client.list_artifacts(first.run_id)]
    assert names == ["report.html"]
    # Retrieval ignores the report's run: it is not a trial.
    assert retrieve_best_trials(experiment, runtime, client=client).warnings == []
