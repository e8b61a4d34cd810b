"""The report as one HTML page that opens offline.

plotly.js is inlined once, in the head; each figure is plotly's own `to_html` fragment with
`include_plotlyjs=False` (its JSON escapes `<` and `/`, so no value can close the script).
Every other user-provided string (names, parameter values, error texts) passes through
`html.escape`. Each chart sits in a `<section class="chart" data-section=...>` of its own,
and the page carries its numbers as JSON (`<script type="application/json"
id="hpoq-report-summary">`) for tools and tests.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from hpoq.config.base import Direction
from hpoq.core.retrieval import rank_key
from hpoq.producer.report import figures
from hpoq.producer.report.data import BackboneData, ReportData

TOP_TRIALS = 10
SUMMARY_ID = "hpoq-report-summary"
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1d2330; background: #f6f7f9; }
header { background: #1d2330; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 6px 0; font-size: 22px; }
header p { margin: 0; color: #c9d1e0; font-size: 14px; }
main { padding: 8px 32px 40px 32px; max-width: 1400px; }
h2 { margin: 32px 0 8px 0; border-bottom: 2px solid #d9dee7; padding-bottom: 4px; }
section { background: #fff; border: 1px solid #e1e5ec; border-radius: 6px;
          padding: 12px 16px; margin: 12px 0; }
section h3 { margin: 0 0 8px 0; font-size: 16px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #e6e9ef; padding: 4px 10px; text-align: left;
         vertical-align: top; }
th { background: #f0f2f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #eef7ee; font-weight: 600; }
p.note { color: #6b5300; background: #fff8e1; border-left: 4px solid #f2c94c;
         padding: 8px 12px; margin: 4px 0; }
pre.error { white-space: pre-wrap; word-break: break-word; margin: 0; font-size: 12px;
            max-height: 12em; overflow: auto; }
nav a { margin-right: 14px; }
.muted { color: #6b7385; }
"""


def text(value: object) -> str:
    return escape(str(value), quote=True)


def number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


class Page:
    """Sections appended in order; `html()` joins them into the document."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self._figures = 0

    def heading(self, title: str, anchor: str) -> None:
        self.parts.append(f'<h2 id="{text(anchor)}">{text(title)}</h2>')

    def chart(self, section: str, title: str, chart: Any, **attrs: str) -> None:
        """A section holding one figure, or the note saying why there is none."""
        import plotly.io as pio

        extra = "".join(f' data-{text(k)}="{text(v)}"' for k, v in attrs.items())
        if isinstance(chart, figures.Note):
            body = f'<p class="note">{text(chart.text)}</p>'
            kind = "note"
        else:
            self._figures += 1
            body = pio.to_html(
                chart,
                include_plotlyjs=False,
                full_html=False,
                div_id=f"figure-{self._figures}",
                config={"displaylogo": False, "responsive": True},
            )
            kind = "chart"
        self.parts.append(
            f'<section class="{kind}" data-section="{text(section)}"{extra}>'
            f"<h3>{text(title)}</h3>{body}</section>"
        )

    def table(
        self,
        section: str,
        title: str,
        headers: list[str],
        rows: list[list[str]],
        numeric: set[str] | frozenset[str] = frozenset(),
        highlight: set[int] | frozenset[int] = frozenset(),
        empty: str = "none",
    ) -> None:
        """A table section; cells are already-escaped HTML (use `text`)."""
        if not rows:
            body = f'<p class="muted">{text(empty)}</p>'
        else:
            head = "".join(f"<th>{text(h)}</th>" for h in headers)
            lines = []
            for i, row in enumerate(rows):
                cells = "".join(
                    f'<td class="num">{c}</td>' if h in numeric else f"<td>{c}</td>"
                    for h, c in zip(headers, row, strict=True)
                )
                css = ' class="best"' if i in highlight else ""
                lines.append(f"<tr{css}>{cells}</tr>")
            body = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"
        self.parts.append(
            f'<section class="table" data-section="{text(section)}">'
            f"<h3>{text(title)}</h3>{body}</section>"
        )

    def html(self, title: str, subtitle: str, summary: dict[str, Any], nav: str) -> str:
        from plotly.offline import get_plotlyjs

        data = (
            json.dumps(summary, sort_keys=True)
            .replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
        )
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{text(title)}</title>\n<style>{STYLE}</style>\n"
            f"<script>{get_plotlyjs()}</script>\n"
            f'<script type="application/json" id="{SUMMARY_ID}">{data}</script>\n'
            "</head>\n<body>\n"
            f"<header><h1>{text(title)}</h1><p>{subtitle}</p></header>\n"
            f"<main>\n<nav>{nav}</nav>\n" + "\n".join(self.parts) + "\n</main>\n</body>\n</html>\n"
        )


def render(data: ReportData) -> str:
    """The whole page."""
    objective = data.experiment.selection.objective
    metric, direction = objective.metric, objective.direction
    page = Page()
    _overview(page, data)
    for backbone in data.backbones:
        page.heading(f"Backbone {backbone.name}", f"backbone-{backbone.name}")
        n_complete = backbone.count("COMPLETE")
        page.chart(
            "history",
            f"Optimisation history across {len(backbone.variants)} variant(s)",
            figures.history(backbone, metric),
            backbone=backbone.name,
        )
        page.chart(
            "importances",
            f"Parameter importances ({n_complete} COMPLETE trials, variants pooled)",
            figures.importances(backbone, metric, direction),
            backbone=backbone.name,
        )
        page.chart(
            "parallel",
            f"Parallel coordinates ({n_complete} COMPLETE trials, variants pooled)",
            figures.parallel(backbone, metric, direction),
            backbone=backbone.name,
        )
        _best_trials(page, data, backbone, metric, direction)
    page.heading("Across backbones: accuracy and latency", "benchmarks")
    tradeoffs = figures.tradeoffs(data.tradeoff, metric, direction)
    if not tradeoffs:
        page.chart("tradeoff", "Accuracy against latency", figures.Note("No benchmark measured."))
    for title, fig in tradeoffs:
        page.chart("tradeoff", title, fig)
    for title, fig in figures.latencies(data.tradeoff):
        page.chart("latency", title, fig)
    _benchmark_table(page, data)
    page.heading("Failures", "failures")
    _failures(page, data)
    if data.warnings:
        page.table(
            "warnings",
            "Warnings while reading the results",
            ["warning"],
            [[text(w)] for w in data.warnings],
        )
    nav = " ".join(
        [
            '<a href="#overview">overview</a>',
            *(f'<a href="#backbone-{text(b.name)}">{text(b.name)}</a>' for b in data.backbones),
            '<a href="#benchmarks">benchmarks</a>',
            '<a href="#failures">failures</a>',
        ]
    )
    subtitle = (
        f"objective {text(metric)} ({text(direction.value)}), best trials in "
        f"{text(data.retrieval.scope.value)} scope; generated {text(data.generated_at)}"
    )
    return page.html(f"hpoq report: {data.experiment.name}", subtitle, data.summary(), nav)


def _overview(page: Page, data: ReportData) -> None:
    rows = []
    for b in data.backbones:
        best = b.best[0] if b.best else None
        where = data.checkpoints.get(best.trial_id) if best else None
        checkpoint = "-"
        if where is not None:
            checkpoint = text(where.local_path or where.artifact_uri or "-")
        rows.append(
            [
                text(b.name),
                str(len(b.variants)),
                str(b.count("COMPLETE")),
                str(b.count("PRUNED")),
                str(b.count("FAIL")),
                str(b.count("RUNNING")),
                number(best.value) if best else "-",
                text(f"{best.study_name} #{best.trial_number}") if best else "no COMPLETE trial",
                text(best.source) if best else "-",
                checkpoint,
            ]
        )
    page.parts.append('<span id="overview"></span>')
    page.table(
        "overview",
        "Overview",
        [
            "backbone",
            "variants",
            "complete",
            "pruned",
            "failed",
            "running",
            "best",
            "best trial",
            "source",
            "checkpoint",
        ],
        rows,
        numeric={"variants", "complete", "pruned", "failed", "running", "best"},
    )


def _best_trials(
    page: Page, data: ReportData, backbone: BackboneData, metric: str, direction: Direction
) -> None:
    from hpoq.core.retrieval import BestTrial

    ranked = []
    for v in backbone.variants:
        for t in v.trials:
            if t.state.name == "COMPLETE" and t.values and len(t.values) == 1:
                key = BestTrial(
                    backbone=backbone.name,
                    study_name=v.ref.study_name,
                    variant=v.ref.variant,
                    trial_number=t.number,
                    trial_id="-",
                    run_id=None,
                    metric=metric,
                    value=t.values[0],
                    source="optuna",
                )
                ranked.append((rank_key(key, direction), v, t))
    ranked.sort(key=lambda item: item[0])
    best = {(t.study_name, t.trial_number) for t in backbone.best}
    rows, highlight = [], set()
    for i, (_, v, t) in enumerate(ranked[:TOP_TRIALS]):
        if (v.ref.study_name, t.number) in best:
            highlight.add(i)
        params = ", ".join(f"{k}={_param(p)}" for k, p in sorted(t.params.items()))
        seconds = t.duration.total_seconds() if t.duration is not None else None
        rows.append(
            [
                text(v.ref.study_name),
                str(t.number),
                number(t.values[0]),
                number(seconds, 1),
                text(params),
            ]
        )
    page.table(
        "best-trials",
        f"Best trials (top {TOP_TRIALS} COMPLETE by {metric}; the retrieved best is marked)",
        ["variant", "trial", metric, "seconds", "parameters"],
        rows,
        numeric={metric, "trial", "seconds"},
        highlight=highlight,
        empty="no COMPLETE trial",
    )


def _param(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _benchmark_table(page: Page, data: ReportData) -> None:
    rows = []
    for row in data.benchmarks:
        entries = row.get("entries") or [{}]
        for e in entries:
            rows.append(
                [
                    text(row["backbone"]),
                    text(row["study_name"]),
                    str(row["trial"]),
                    text(row.get("status", "-")),
                    text(e.get("precision", "-")),
                    text(e.get("padding") or "-"),
                    str(e.get("batch_size", "-")),
                    str(e.get("iterations", "-")),
                    number(e.get("latency_p50_ms"), 2),
                    number(e.get("latency_p95_ms"), 2),
                    number(e.get("latency_p99_ms"), 2),
                    number(e.get("throughput_sentences_per_s"), 1),
                    number(e.get("peak_memory_mb"), 1),
                    text(row.get("device_name") or row.get("device") or "-"),
                ]
            )
    page.table(
        "benchmark-table",
        "Benchmarks (peak memory n/a: not measured on this device)",
        [
            "backbone",
            "variant",
            "trial",
            "status",
            "precision",
            "padding",
            "batch",
            "timed",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "sentences/s",
            "peak MiB",
            "device",
        ],
        rows,
        numeric={"batch", "timed", "p50 ms", "p95 ms", "p99 ms", "sentences/s", "peak MiB"},
        empty="no best trial to benchmark yet",
    )


def _failures(page: Page, data: ReportData) -> None:
    rows = [
        [
            text(f.what),
            text(f.backbone),
            text(f.study_name),
            "-" if f.trial_number is None else str(f.trial_number),
            f'<pre class="error">{text(f.error)}</pre>',
            text(f.run_id or "-"),
        ]
        for f in data.failures
    ]
    page.table(
        "failures",
        "Failed trials and benchmarks, with the error each recorded",
        ["what", "backbone", "variant", "trial", "error", "MLflow run"],
        rows,
        empty="no failed trial or benchmark",
    )
