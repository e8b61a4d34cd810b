"""Best-trial retrieval across MLflow, Optuna and disk: priority, fallbacks, ties, scopes."""

from __future__ import annotations

import logging
import random
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from hpoq.config.base import Direction
from hpoq.config.experiment import Experiment
from hpoq.config.loader import load_experiment
from hpoq.config.selection import SelectionScope
from hpoq.core import mlflow_queries
from hpoq.core.fingerprints import trial_key_hash
from hpoq.core.optuna_setup import RUN_ID_ATTR
from hpoq.core.retrieval import BestTrial, rank_key, retrieve_best_trials
from hpoq.core.runtime import Runtime
from hpoq.core.studies import BACKBONE_ATTR
from hpoq.core.trial_record import MLFLOW_STATUS, TrialRecord, write_metrics_file
from hpoq.core.variants import base_study_name, variant_study_name
from hpoq.errors import InputError

REPO = Path(__file__).resolve().parents[2]
BACKBONES = ["alpha", "beta", "gamma"]
SOURCES = ("mlflow", "optuna", "disk")
DEAD_URL = "http://hpoq:s3cret@127.0.0.1:1"


def make_experiment(
    root: Path,
    direction: str = "maximize",
    scope: str = "overall",
    hpo_experiment: str | None = None,
) -> Experiment:
    """The shipped config tree copied under `root`, with three backbones and the given objective."""
    config = root / "config"
    shutil.copytree(REPO / "config", config)
    hpo_path = config / "hpo" / "smoke.yaml"
    hpo = yaml.safe_load(hpo_path.read_text(encoding="utf-8"))
    architecture = hpo["backbones"][0]["architecture"]
    hpo["backbones"] = [{"name": name, "architecture": architecture} for name in BACKBONES]
    hpo["objective"]["direction"] = direction
    hpo_path.write_text(yaml.safe_dump(hpo), encoding="utf-8")
    selection_path = config / "selection.yaml"
    selection = {"objective": {"metric": "macro-f1", "direction": direction}, "scope": scope}
    selection_path.write_text(yaml.safe_dump(selection), encoding="utf-8")
    if hpo_experiment is not None:
        experiment_path = config / "experiment" / "smoke.yaml"
        spec = yaml.safe_load(experiment_path.read_text(encoding="utf-8"))
        spec["mlflow"]["hpo"] = hpo_experiment
        experiment_path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return load_experiment(config / "experiment" / "smoke.yaml")


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    for name in ("HPOQ_OPTUNA_STORAGE", "HPOQ_PLATFORM", "HPOQ_MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HPOQ_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return Runtime.from_settings()


@pytest.fixture
def client(tmp_path: Path, empty_db: Path, runtime: Runtime) -> MlflowClient:
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    return MlflowClient(tracking_uri=runtime.mlflow_uri())


@pytest.fixture
def dead_client(monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    return MlflowClient(tracking_uri=DEAD_URL)


@dataclass
class Seeder:
    """Writes trials the way the worker records them: MLflow run, Optuna trial, metrics.json."""

    experiment: Experiment
    runtime: Runtime
    client: MlflowClient
    run_ids: dict[tuple[str, int, int], str] = field(default_factory=dict)

    def study_name(self, backbone: str, variant: int) -> str:
        base = base_study_name(self.experiment.hpo.checkpoint.study_name, backbone)
        return variant_study_name(base, variant)

    def variant(
        self,
        backbone: str,
        variant: int,
        values: Sequence[float | None],
        sources: Iterable[str] = SOURCES,
        states: Sequence[str] | None = None,
        shuffle: int | None = None,
    ) -> None:
        """Trial n gets values[n] (None: a FAIL trial). `shuffle` randomises the order in which
        MLflow runs and metrics.json files are written (Optuna numbers follow insertion)."""
        chosen = set(sources)
        states = states or ["COMPLETE" if v is not None else "FAIL" for v in values]
        records = [
            TrialRecord(
                experiment=self.experiment.name,
                backbone=backbone,
                study_name=self.study_name(backbone, variant),
                variant=variant,
                trial_number=n,
                state=state,
                metric="macro-f1",
                value=value,
                params={"lr": 0.1},
            )
            for n, (value, state) in enumerate(zip(values, states, strict=True))
        ]
        order = list(records)
        if shuffle is not None:
            random.Random(shuffle).shuffle(order)
        for record in order:
            run_id = self.mlflow(record) if "mlflow" in chosen else None
            if "disk" in chosen:
                trial_dir = self.runtime.layout.trial_dir(
                    backbone, record.study_name, record.trial_number
                )
                write_metrics_file(trial_dir, record.model_copy(update={"run_id": run_id}))
        if "optuna" in chosen:
            self.optuna(records)

    def mlflow(self, record: TrialRecord, tags: dict[str, str] | None = None) -> str:
        experiment_id = self._experiment_id()
        all_tags = {**record.mlflow_tags(self.experiment.tags), **(tags or {})}
        run = self.client.create_run(experiment_id, tags=all_tags)
        run_id = str(run.info.run_id)
        if record.value is not None:
            self.client.log_batch(run_id, metrics=[Metric(record.metric, record.value, 0, 0)])
        self.client.set_terminated(run_id, status=MLFLOW_STATUS[record.state])
        self.run_ids[(record.backbone, record.variant, record.trial_number)] = run_id
        return run_id

    def optuna(self, records: Sequence[TrialRecord]) -> None:
        first = records[0]
        store = self.runtime.study_store(self.experiment.hpo.checkpoint)
        study = optuna.create_study(
            storage=store.storage_for(first.backbone, first.study_name),
            study_name=first.study_name,
            direction=self.experiment.hpo.objective.direction.value,
            load_if_exists=True,
        )
        study.set_user_attr(BACKBONE_ATTR, first.backbone)
        for record in sorted(records, key=lambda r: r.trial_number):
            run_id = self.run_ids.get((record.backbone, record.variant, record.trial_number))
            state = optuna.trial.TrialState[record.state]
            study.add_trial(
                optuna.trial.create_trial(
                    state=state,
                    value=record.value if state == optuna.trial.TrialState.COMPLETE else None,
                    params={"lr": 0.1},
                    distributions={"lr": optuna.distributions.FloatDistribution(0.0, 1.0)},
                    user_attrs={RUN_ID_ATTR: run_id} if run_id else {},
                )
            )

    def _experiment_id(self) -> str:
        name = self.experiment.hpo_experiment_name
        found = self.client.get_experiment_by_name(name)
        return found.experiment_id if found else self.client.create_experiment(name)


@pytest.fixture
def experiment(tmp_path: Path) -> Experiment:
    return make_experiment(tmp_path)


@pytest.fixture
def seed(experiment: Experiment, runtime: Runtime, client: MlflowClient) -> Seeder:
    return Seeder(experiment, runtime, client)


def only(best: list[BestTrial], backbone: str = "alpha") -> BestTrial:
    [trial] = [t for t in best if t.backbone == backbone]
    return trial


# --- priority and fallbacks ------------------------------------------------------------


def test_mlflow_wins_when_present(seed: Seeder) -> None:
    seed.variant("alpha", 1, [0.4, 0.9, 0.7])
    result = retrieve_best_trials(seed.experiment, seed.runtime, client=seed.client)
    best = only(result.best)
    assert (best.source, best.variant, best.trial_number, best.value) == ("mlflow", 1, 1, 0.9)
    assert best.run_id == seed.run_ids[("alpha", 1, 1)]
    assert best.trial_id == trial_key_hash("alpha", "hpo_alpha", 1)
    assert best.study_name == "hpo_alpha"
    assert result.warnings == []


def test_optuna_answers_when_mlflow_has_no_runs(seed: Seeder) -> None:
    seed.variant("alpha", 1, [0.4, 0.9, 0.7], sources=("optuna", "disk"))
    result = retrieve_best_trials(seed.experiment, seed.runtime, client=seed.client)
    best = only(result.best)
    assert (best.source, best.trial_number, best.run_id) == ("optuna", 1, None)
    assert result.warnings == []


def test_optuna_reports_the_run_id_the_worker_stored(seed: Seeder) -> None:
    seed.variant("alpha", 1, [0.4, 0.9])
    for run_id in seed.run_ids.values():  # MLflow now has nothing to search
        seed.client.delete_run(run_id)
    result = retrieve_best_trials(seed.experiment, seed.runtime, client=seed.client)
    best = only(result.best)
    assert best.source == "optuna"
    assert best.run_id == seed.run_ids[("alpha", 1, 1)]


def test_disk_answers_when_neither_mlflow_nor_optuna_has_trials(seed: Seeder) -> None:
    seed.variant("alpha", 1, [0.4, 0.9, 0.7], sources=("disk",), states=None)
    result = retrieve_best_trials(seed.experiment, seed.runtime, client=seed.client)
    best = only(result.best)
    assert (best.source, best.trial_number, best.value) == ("disk", 1, 0.9)
    assert best.trial_id == trial_key_hash("alpha", "hpo_alpha", 1)


def test_unreachable_mlflow_warns_and_falls_back(seed: Seeder, dead_client: MlflowClient) -> None:
    seed.variant("alpha", 1, [0.4, 0.9, 0.7], sources=("optuna", "disk"))
    seed.variant("beta", 1, [0.2], sources=("disk",))
    result = retrieve_best_trials(seed.experiment, seed.runtime, client=dead_client)
    assert [(t.backbone, t.source) for t in result.best] == [("alpha", "optuna"), ("beta", "disk")]
    assert result.missing == ["gamma"]
    [warning] = result.warnings  # reported once, not once per backbone
    assert warning.startswith("MLflow unreachable: ")
    assert "127.0.0.1:1" in warning
    assert "s3cret" not in warning


def test_unreachable_mlflow_from_the_environment(
    seed: Seeder, monkeypatch: pytest.MonkeyPatch, dead_client: MlflowClient
) -> None:
    seed.variant("alpha", 1, [0.4, 0.9], sources=("optuna",))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", DEAD_URL)
    runtime = Runtime.from_settings()
    result = retrieve_best_trials(seed.experiment, runtime)
    assert only(result.best).source == "optuna"
    assert result.warnings[0].startswith("MLflow unreachable: http://hpoq:***@127.0.0.1:1")


def test_runs_that_are_not_usable_hpo_trials_are_ignored(seed: Seeder) -> None:
    seed.variant("alpha", 1, [0.5], sources=("mlflow",))
    base = TrialRecord(
        experiment=seed.experiment.name,
        backbone="alpha",
        study_name="hpo_alpha",
        variant=1,
        trial_number=7,
        state="COMPLETE",
        metric="macro-f1",
        value=0.99,
        params={},
    )
    tags = seed.experiment.tags
    seed.mlflow(base, {tags.process.stage: "refit"})
    seed.mlflow(base, {tags.process.experiment: "another"})
    seed.mlflow(base, {tags.grouping.trial_key_hash: ""})
    seed.mlflow(base, {tags.process.variant: "one"})
    seed.mlflow(base.model_copy(update={"state": "PRUNED"}))
    seed.mlflow(base.model_copy(update={"metric": "accuracy"}))
    result = retrieve_best_trials(seed.experiment, seed.runtime, client=seed.client)
    best = only(result.best)
    assert (best.source, best.trial_number, best.value) == ("mlflow", 0, 0.5)


def test_hpo_experiment_name_with_quotes(
    tmp_path: Path, runtime: Runtime, client: MlflowClient
) -> None:
    experiment = make_experiment(tmp_path, hpo_experiment='it\'s the "hpo" one')
    seed = Seeder(experiment, runtime, client)
    seed.variant("alpha", 1, [0.3, 0.8])
    result = retrieve_best_trials(experiment, runtime, client=client)
    assert (only(result.best).source, only(result.best).trial_number) == ("mlflow", 1)


# --- disagreement ----------------------------------------------------------------------


def test_disagreement_between_sources_is_warned_and_logged(
    seed: Seeder, caplog: pytest.LogCaptureFixture
) -> None:
    seed.variant("alpha", 1, [0.4, 0.9, 0.7], sources=("mlflow",))
    seed.variant("alpha", 1, [0.95, 0.1, 0.2], sources=("optuna",))
    with caplog.at_level(logging.WARNING, logger="hpoq.core.retrieval"):
        result = retrieve_best_trials(seed.experiment, seed.runtime, client=seed.client)
    best = only(result.best)
    assert (best.source, best.trial_number) == ("mlflow", 1)
    [warning] = result.warnings
    assert "mlflow picks trial 1 of hpo_alpha" in warning
    assert "optuna picks trial 0 of hpo_alpha" in warning
    assert trial_key_hash("alpha", "hpo_alpha", 1) in warning
    assert trial_key_hash("alpha", "hpo_alpha", 0) in warning
    logged = [r.getMessage() for r in caplog.records if r.name == "hpoq.core.retrieval"]
    assert logged == [warning]


@pytest.mark.parametrize(("delta", "warned"), [(1e-12, False), (1e-6, True)])
def test_value_disagreement_beyond_the_tolerance(seed: Seeder, delta: float, warned: bool) -> None:
    seed.variant("alpha", 1, [0.4, 0.9], sources=("mlflow",))
    seed.variant("alpha", 1, [0.4, 0.9 + delta], sources=("optuna",))
    result = retrieve_best_trials(seed.experiment, seed.runtime, client=seed.client)
    assert bool(result.warnings) is warned


def test_disk_is_not_read_when_a_higher_source_answers(seed: Seeder) -> None:
    seed.variant("alpha", 1, [0.4, 0.9], sources=("mlflow", "optuna"))
    seed.variant("alpha", 1, [0.99, 0.1], sources=("disk",))
    result = retrieve_best_trials(seed.experiment, seed.runtime, client=seed.client)
    assert only(result.best).source == "mlflow"
    assert result.warnings == []


# --- the tie-break rule ----------------------------------------------------------------


@pytest.mark.parametrize("source", ["mlflow:order_by", "mlflow:narrow", "optuna", "disk"])
@pytest.mark.parametrize("shuffle", [0, 1, 2])
@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_ties_resolve_by_the_rule_in_every_source(
    tmp_path: Path,
    runtime: Runtime,
    client: MlflowClient,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    shuffle: int,
    direction: str,
) -> None:
    """Best value, then lower variant, then lower trial number, whatever the insertion order."""
    source, _, strategy = source.partition(":")
    if strategy:  # both MLflow search strategies, whatever the store would pick
        monkeypatch.setattr(mlflow_queries, "default_strategy", lambda client: strategy)
    experiment = make_experiment(tmp_path, direction=direction)
    seed = Seeder(experiment, runtime, client)
    best, worse = (0.8, 0.3) if direction == "maximize" else (0.3, 0.8)
    rng = random.Random(shuffle)
    variants = [3, 2, 4]
    rng.shuffle(variants)  # the variants are created in a random order too
    layouts: dict[int, list[float | None]] = {}
    for variant in variants:
        values: list[float | None] = [best, best, best, worse, worse, None]
        rng.shuffle(values)
        layouts[variant] = values
        seed.variant("alpha", variant, values, sources=(source,), shuffle=shuffle)
    result = retrieve_best_trials(experiment, runtime, client=client)
    winner = only(result.best)
    assert (winner.source, winner.variant, winner.value) == (source, 2, best)
    assert winner.trial_number == layouts[2].index(best)

    per_variant = retrieve_best_trials(experiment, runtime, scope="per_variant", client=client)
    assert [(t.variant, t.trial_number) for t in per_variant.best] == [
        (v, layouts[v].index(best)) for v in (2, 3, 4)
    ]


def test_rank_key_orders_by_value_then_variant_then_trial() -> None:
    def trial(value: float, variant: int, number: int) -> BestTrial:
        return BestTrial(
            backbone="a",
            study_name="s",
            variant=variant,
            trial_number=number,
            trial_id=f"{variant}-{number}",
            run_id=None,
            metric="m",
            value=value,
            source="disk",
        )

    trials = [trial(0.5, 2, 0), trial(0.9, 3, 5), trial(0.9, 2, 7), trial(0.9, 2, 3)]
    ranked = sorted(trials, key=lambda t: rank_key(t, Direction.MAXIMIZE))
    assert [t.trial_id for t in ranked] == ["2-3", "2-7", "3-5", "2-0"]
    ranked = sorted(trials, key=lambda t: rank_key(t, Direction.MINIMIZE))
    assert ranked[0].trial_id == "2-0"


def test_minimize_picks_the_lowest_value(
    tmp_path: Path, runtime: Runtime, client: MlflowClient
) -> None:
    experiment = make_experiment(tmp_path, direction="minimize")
    seed = Seeder(experiment, runtime, client)
    seed.variant("alpha", 1, [0.4, -0.2, 0.7])
    seed.variant("beta", 1, [0.4, 0.1], sources=("optuna",))
    seed.variant("gamma", 1, [0.4, 0.3, 0.35], sources=("disk",))
    result = retrieve_best_trials(experiment, runtime, client=client)
    assert [(t.backbone, t.source, t.value) for t in result.best] == [
        ("alpha", "mlflow", -0.2),
        ("beta", "optuna", 0.1),
        ("gamma", "disk", 0.3),
    ]
    assert result.warnings == []


# --- scopes, missing backbones, selection ----------------------------------------------


def test_per_variant_returns_every_variant_from_its_own_best_source(seed: Seeder) -> None:
    seed.variant("alpha", 1, [0.4, 0.6])
    seed.variant("alpha", 2, [0.9, 0.5])
    seed.variant("alpha", 3, [0.1, 0.2, 0.3])
    seed.variant("alpha", 4, [0.7, 0.75], sources=("optuna", "disk"))  # not in MLflow yet
    seed.variant("alpha", 5, [0.2, 0.8], sources=("disk",))  # only its metrics.json files
    seed.variant("alpha", 6, [None, None], states=["PRUNED", "FAIL"])  # nothing COMPLETE
    result = retrieve_best_trials(
        seed.experiment, seed.runtime, scope=SelectionScope.PER_VARIANT, client=seed.client
    )
    got = [(t.variant, t.trial_number, t.source) for t in result.best]
    assert got == [
        (1, 1, "mlflow"),
        (2, 0, "mlflow"),
        (3, 2, "mlflow"),
        (4, 1, "optuna"),
        (5, 1, "disk"),
    ]
    assert [t.study_name for t in result.best][:2] == ["hpo_alpha", "hpo_alpha_v2"]
    assert result.missing == ["beta", "gamma"]
    assert result.warnings == []
    overall = retrieve_best_trials(seed.experiment, seed.runtime, client=seed.client)
    assert (only(overall.best).variant, only(overall.best).source) == (2, "mlflow")


def test_per_variant_disagreement_names_the_variant(seed: Seeder) -> None:
    seed.variant("alpha", 1, [0.4, 0.6], sources=("mlflow",))
    seed.variant("alpha", 2, [0.9, 0.5], sources=("mlflow",))
    seed.variant("alpha", 1, [0.4, 0.6], sources=("optuna",))
    seed.variant("alpha", 2, [0.5, 0.9], sources=("optuna",))
    result = retrieve_best_trials(seed.experiment, seed.runtime, "per_variant", client=seed.client)
    [warning] = result.warnings
    assert "trial 0 of hpo_alpha_v2 (variant 2" in warning
    assert "trial 1 of hpo_alpha_v2 (variant 2" in warning


def test_backbones_without_complete_trials_are_missing(seed: Seeder) -> None:
    seed.variant("alpha", 1, [0.5])
    seed.variant("beta", 1, [None, None], states=["PRUNED", "FAIL"])
    result = retrieve_best_trials(seed.experiment, seed.runtime, client=seed.client)
    assert [t.backbone for t in result.best] == ["alpha"]
    assert result.missing == ["beta", "gamma"]


def test_scope_defaults_to_the_selection_config(
    tmp_path: Path, runtime: Runtime, client: MlflowClient
) -> None:
    experiment = make_experiment(tmp_path, scope="per_variant")
    seed = Seeder(experiment, runtime, client)
    seed.variant("alpha", 1, [0.5])
    seed.variant("alpha", 2, [0.4])
    result = retrieve_best_trials(experiment, runtime, client=client)
    assert result.scope is SelectionScope.PER_VARIANT
    assert [t.variant for t in result.best] == [1, 2]
    overall = retrieve_best_trials(experiment, runtime, scope="overall", client=client)
    assert [t.variant for t in overall.best] == [1]


def test_only_the_backbones_asked_for(seed: Seeder) -> None:
    seed.variant("alpha", 1, [0.5])
    seed.variant("beta", 1, [0.6])
    result = retrieve_best_trials(
        seed.experiment, seed.runtime, backbones=["beta", "gamma"], client=seed.client
    )
    assert [t.backbone for t in result.best] == ["beta"]
    assert result.missing == ["gamma"]
    with pytest.raises(InputError, match="unknown backbone"):
        retrieve_best_trials(seed.experiment, seed.runtime, backbones=["nope"], client=seed.client)
    with pytest.raises(InputError, match="scope: 'best' is not one of overall, per_variant"):
        retrieve_best_trials(seed.experiment, seed.runtime, scope="best", client=seed.client)


def test_unreadable_metrics_files_are_reported(seed: Seeder) -> None:
    seed.variant("alpha", 1, [0.5, 0.7], sources=("disk",))
    broken = seed.runtime.layout.trial_dir("alpha", "hpo_alpha", 9) / "metrics.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json", encoding="utf-8")
    result = retrieve_best_trials(seed.experiment, seed.runtime, client=seed.client)
    assert (only(result.best).source, only(result.best).trial_number) == ("disk", 1)
    [warning] = result.warnings
    assert "1 unreadable metrics.json" in warning


def test_result_serialises_to_json(seed: Seeder) -> None:
    seed.variant("alpha", 1, [0.5])
    data = retrieve_best_trials(seed.experiment, seed.runtime, client=seed.client).model_dump(
        mode="json"
    )
    assert data["scope"] == "overall"
    assert set(data["best"][0]) == {
        "backbone",
        "study_name",
        "variant",
        "trial_number",
        "trial_id",
        "run_id",
        "metric",
        "value",
        "source",
    }
