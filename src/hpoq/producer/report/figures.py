"""The report's charts, as plotly figures.

Per backbone, Optuna's own visualisation: `plot_optimization_history` over the variant
studies together (one series per variant), and, on the COMPLETE trials of every variant
pooled into one in-memory study (the variants share the search space; more trials make
better estimates), `plot_param_importances` and `plot_parallel_coordinate`. Too few
trials for a chart gives a `Note` (what is missing) instead of a figure or a crash.

Across backbones (plotly directly: Optuna has no chart of benchmarks): accuracy against
p50 latency for every benchmarked point, one panel per batch size, one figure per
(precision, padding), the Pareto front (lower latency, better score) drawn as a line; and
latency p50/p95/p99 and throughput against batch size.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpoq.config.base import Direction
from hpoq.producer.report.data import BackboneData, TradeoffPoint

if TYPE_CHECKING:
    import plotly.graph_objects as go

# Fewer COMPLETE trials than this and the importance evaluator has nothing to compare
# (PED-ANOVA needs a top group and the rest, two trials each; it warns and returns all
# zeros otherwise): the report says so instead of drawing equal bars.
MIN_TRIALS_FOR_IMPORTANCE = 4
MIN_TRIALS_FOR_PARALLEL = 2
HEIGHT = 440
MARKERS = {"best_trial": "circle", "final_model": "diamond"}
COLORS = {"best_trial": "#1f77b4", "final_model": "#2ca02c"}


@dataclass(frozen=True)
class Note:
    """Why a chart is not drawn."""

    text: str


def _styled(fig: go.Figure, height: int = HEIGHT) -> go.Figure:
    """The page's look; the section's heading is the title (none inside the figure)."""
    fig.update_layout(
        title={"text": ""},
        height=height,
        template="plotly_white",
        margin={"l": 60, "r": 30, "t": 40, "b": 50},
    )
    return fig


def _complete(backbone: BackboneData) -> list[Any]:
    return [t for v in backbone.variants for t in v.trials if t.state.name == "COMPLETE"]


def pooled_study(backbone: BackboneData, direction: Direction) -> Any:
    """The COMPLETE trials of every variant in one in-memory study."""
    import optuna

    study = optuna.create_study(direction=direction.value, study_name=backbone.name)
    study.add_trials(_complete(backbone))
    return study


def history(backbone: BackboneData, metric: str) -> go.Figure | Note:
    from optuna.visualization import plot_optimization_history

    studies = [v.study for v in backbone.variants]
    if not _complete(backbone):
        return Note(f"{backbone.name}: no COMPLETE trial yet, so no history to draw.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks some plots experimental
        fig = plot_optimization_history(studies, target_name=metric)
    return _styled(fig)


def importances(backbone: BackboneData, metric: str, direction: Direction) -> go.Figure | Note:
    from optuna.visualization import plot_param_importances

    n = len(_complete(backbone))
    if n < MIN_TRIALS_FOR_IMPORTANCE:
        return Note(
            f"{backbone.name}: parameter importances need at least "
            f"{MIN_TRIALS_FOR_IMPORTANCE} COMPLETE trials; this search has {n}."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = plot_param_importances(pooled_study(backbone, direction), target_name=metric)
    equal = [w for w in caught if "will be equal" in str(w.message)]
    if equal:
        return Note(
            f"{backbone.name}: the {n} COMPLETE trials are too few to tell the parameters "
            f"apart (Optuna: {equal[0].message})"
        )
    return _styled(fig)


def parallel(backbone: BackboneData, metric: str, direction: Direction) -> go.Figure | Note:
    from optuna.visualization import plot_parallel_coordinate

    n = len(_complete(backbone))
    if n < MIN_TRIALS_FOR_PARALLEL:
        return Note(
            f"{backbone.name}: a parallel-coordinate view needs at least "
            f"{MIN_TRIALS_FOR_PARALLEL} COMPLETE trials; this search has {n}."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = plot_parallel_coordinate(pooled_study(backbone, direction), target_name=metric)
    return _styled(fig)


def pareto_front(points: Sequence[TradeoffPoint], direction: Direction) -> list[TradeoffPoint]:
    """The points no other point beats on both latency (lower) and score, by latency."""
    sign = 1.0 if direction is Direction.MAXIMIZE else -1.0
    front: list[TradeoffPoint] = []
    best: float | None = None
    for p in sorted(points, key=lambda p: (p.latency_p50_ms, -sign * p.value)):
        if best is None or sign * p.value > best:
            front.append(p)
            best = sign * p.value
    return front


def _groups(points: Sequence[TradeoffPoint]) -> dict[tuple[str, str], list[TradeoffPoint]]:
    groups: dict[tuple[str, str], list[TradeoffPoint]] = {}
    for p in points:
        groups.setdefault((p.precision, p.padding), []).append(p)
    return groups


def tradeoffs(
    points: Sequence[TradeoffPoint], metric: str, direction: Direction
) -> list[tuple[str, go.Figure]]:
    """(title, figure) per (precision, padding): score against p50 latency, a panel per
    batch size, the Pareto front as a line."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figures = []
    for (precision, padding), group in sorted(_groups(points).items()):
        sizes = sorted({p.batch_size for p in group})
        fig = make_subplots(rows=1, cols=len(sizes), subplot_titles=[f"batch {b}" for b in sizes])
        for col, size in enumerate(sizes, start=1):
            at = [p for p in group if p.batch_size == size]
            for kind in sorted({p.kind for p in at}):
                mine = [p for p in at if p.kind == kind]
                fig.add_trace(
                    go.Scatter(
                        x=[p.latency_p50_ms for p in mine],
                        y=[p.value for p in mine],
                        mode="markers+text",
                        text=[f"{p.study_name} #{p.trial_number}" for p in mine],
                        textposition="top center",
                        customdata=[[p.label, p.latency_p95_ms, p.latency_p99_ms] for p in mine],
                        hovertemplate=(
                            "%{customdata[0]}<br>p50 %{x:.2f} ms, p95 %{customdata[1]:.2f}"
                            " ms, p99 %{customdata[2]:.2f} ms<br>" + metric + " %{y:.4f}"
                            "<extra></extra>"
                        ),
                        marker={
                            "symbol": MARKERS.get(kind, "circle"),
                            "size": 11,
                            "color": COLORS.get(kind, "#1f77b4"),
                        },
                        name=kind.replace("_", " "),
                        legendgroup=kind,
                        showlegend=col == 1,
                    ),
                    row=1,
                    col=col,
                )
            front = pareto_front(at, direction)
            fig.add_trace(
                go.Scatter(
                    x=[p.latency_p50_ms for p in front],
                    y=[p.value for p in front],
                    mode="lines+markers",
                    line={"dash": "dash", "color": "#d62728"},
                    marker={"size": 15, "symbol": "circle-open", "color": "#d62728"},
                    name="Pareto front",
                    legendgroup="pareto",
                    showlegend=col == 1,
                    hoverinfo="skip",
                ),
                row=1,
                col=col,
            )
            fig.update_xaxes(title_text="p50 latency (ms)", row=1, col=col)
        fig.update_yaxes(title_text=metric, row=1, col=1)
        title = f"{metric} against latency: {precision}, {padding} batches"
        figures.append((title, _styled(fig)))
    return figures


def latencies(points: Sequence[TradeoffPoint]) -> list[tuple[str, go.Figure]]:
    """(title, figure) per (precision, padding): p50/p95/p99 latency and throughput
    against batch size, one series per benchmarked model."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figures = []
    palette = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    ]  # fmt: skip
    for (precision, padding), group in sorted(_groups(points).items()):
        fig = make_subplots(
            rows=1,
            cols=2,
            subplot_titles=["latency per batch (ms): p50 solid, p95 dashed, p99 dotted",
                            "throughput (sentences/s)"],
        )  # fmt: skip
        labels = sorted({p.label for p in group})
        for i, label in enumerate(labels):
            color = palette[i % len(palette)]
            mine = sorted((p for p in group if p.label == label), key=lambda p: p.batch_size)
            sizes = [p.batch_size for p in mine]
            for name, dash, values in (
                ("p50", "solid", [p.latency_p50_ms for p in mine]),
                ("p95", "dash", [p.latency_p95_ms for p in mine]),
                ("p99", "dot", [p.latency_p99_ms for p in mine]),
            ):
                fig.add_trace(
                    go.Scatter(
                        x=sizes,
                        y=values,
                        mode="lines+markers",
                        line={"dash": dash, "color": color},
                        name=f"{label} {name}",
                        legendgroup=label,
                    ),
                    row=1,
                    col=1,
                )
            fig.add_trace(
                go.Scatter(
                    x=sizes,
                    y=[p.throughput_sentences_per_s for p in mine],
                    mode="lines+markers",
                    line={"color": color},
                    name=f"{label} throughput",
                    legendgroup=label,
                ),
                row=1,
                col=2,
            )
        sizes_shown = sorted({p.batch_size for p in group})
        for col in (1, 2):
            fig.update_xaxes(
                title_text="batch size", type="log", tickvals=sizes_shown, row=1, col=col
            )
        title = f"latency and throughput by batch size: {precision}, {padding} batches"
        figures.append((title, _styled(fig)))
    return figures
