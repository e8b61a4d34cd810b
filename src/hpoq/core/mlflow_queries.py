"""MLflow run searches: safe filter strings, every page of a result, the best run by a metric.

Quoting. MLflow tokenises a filter with sqlparse and then only strips the outer quotes of a
value; it never unescapes anything. So `'it''s'` is compared as `it''s` and `'it\\'s'` as
`it\\'s`: the usual SQL or backslash escapes silently match the wrong runs. A value is
therefore quoted with whichever quote it does not contain, and the result is checked by
parsing it with MLflow's own filter parser; a value that holds both quote characters (or
otherwise does not survive the round trip) cannot be written in a filter at all. Such a
value is left out of the server-side filter and checked exactly on the client instead.
`query_runs_by_tags` always re-checks every required tag on the client, so a lenient server
(a case-insensitive MySQL collation, say) cannot hand back a near miss either.

Best run. `find_best_run_by_metric` never reads every run: it asks the server for a small
ordered page (PostgreSQL, MySQL, a tracking server) or narrows by `metrics.x >= best` rounds
(SQLite, whose plan for MLflow's metric ORDER BY is quadratic), then makes sure every run
tied with the best value is seen before the caller's tie-break picks one.

Imports mlflow lazily: the CLI stays fast until a command searches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from hpoq.config.base import Direction
from hpoq.config.tags import TagsRegistry

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

FINISHED = "FINISHED"
DEFAULT_PAGE_SIZE = 1000
# Small pages: the best run is on the first page of an ordered search, and each narrowing
# round keeps about 1/BEST_RUN_PAGE_SIZE of the runs.
BEST_RUN_PAGE_SIZE = 10
# Built so that a value that leaks out of its quotes shows up as extra or missing clauses.
_PROBE = "attributes.status = 'X' AND tags.`probe` = {value} AND tags.`after` = 'Y'"


class UnquotableValueError(ValueError):
    """Raised when a value cannot be written in an MLflow filter string without changing it."""


@lru_cache(maxsize=4096)  # parsing a probe costs ~2 ms and the same values recur per query
def quote_filter_value(value: str) -> str:
    """`value` as a quoted filter literal that MLflow reads back exactly.

    Raises UnquotableValueError when no quoting survives MLflow's parser (a value holding both
    `'` and `"`, for example); filter such a value on the client instead.
    """
    for quote in ("'", '"'):
        if quote in value:
            continue
        literal = f"{quote}{value}{quote}"
        if _parses_back(_PROBE.format(value=literal), value):
            return literal
    raise UnquotableValueError(f"{value!r} cannot be quoted in an MLflow filter string")


@lru_cache(maxsize=1024)
def quote_identifier(name: str) -> str:
    """A metric, param or tag name in backticks, checked like values (UnquotableValueError)."""
    literal = f"`{name}`"
    if name and "`" not in name and '"' not in name:
        parsed = _parse_filter(f"tags.{literal} = 'v'")
        ordered = _parse_order_by(f"metrics.{literal} DESC")
        if [c.get("key") for c in parsed] == [name] and ordered == ("metric", name, False):
            return literal
    raise UnquotableValueError(f"{name!r} cannot be used as a name in an MLflow filter")


@lru_cache(maxsize=4096)
def format_filter_number(value: float) -> str | None:
    """A float as a filter literal that parses back to the same double, else None."""
    if not math.isfinite(value):
        return None
    # repr round-trips a double exactly; MLflow's parser rejects the '+' of 'e+20'.
    literal = repr(float(value)).replace("e+", "e")
    parsed = _parse_filter(f"metrics.`probe` = {literal} AND tags.`after` = 'Y'")
    if len(parsed) == 2 and float(parsed[0]["value"]) == value:
        return literal
    return None


def _parses_back(probe: str, value: str) -> bool:
    keys = [(c.get("key"), c.get("value")) for c in _parse_filter(probe)]
    return keys == [("status", "X"), ("probe", value), ("after", "Y")]


def _parse_filter(text: str) -> list[dict[str, Any]]:
    """MLflow's own parse of a filter string (the server runs the same code); [] if invalid."""
    from mlflow.utils.search_utils import SearchUtils

    try:
        parsed = SearchUtils.parse_search_filter(text)  # type: ignore[no-untyped-call]
    except Exception:
        return []
    return list(parsed)


def _parse_order_by(text: str) -> tuple[str, str, bool] | None:
    from mlflow.utils.search_utils import SearchUtils

    try:
        kind, key, ascending = SearchUtils.parse_order_by_for_search_runs(text)  # type: ignore[no-untyped-call]
    except Exception:
        return None
    return str(kind), str(key), bool(ascending)


def tag_filter(required_tags: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """(filter clauses for the tags that can be quoted, the tags left to the client)."""
    clauses: list[str] = []
    client_only: dict[str, str] = {}
    for key, value in required_tags.items():
        try:
            clauses.append(f"tags.{quote_identifier(key)} = {quote_filter_value(value)}")
        except UnquotableValueError:
            client_only[key] = value
    return " AND ".join(clauses), client_only


def join_filters(*parts: str) -> str:
    return " AND ".join(p for p in parts if p)


def query_runs_by_tags(
    client: MlflowClient,
    experiment_ids: list[str],
    required_tags: Mapping[str, str],
    status: str | None = FINISHED,
    extra_filter: str = "",
    order_by: list[str] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> Iterator[Run]:
    """Every run of `experiment_ids` whose tags equal `required_tags` (and status, unless None).

    Filters on the server and follows page tokens to the last page; every run is then checked
    exactly on the client (see the module docstring). Lazy: stop iterating to stop fetching.
    A run that moves between pages while it is being paged (new runs logged meanwhile) is
    yielded once at most.
    """
    pages = search_pages(
        client, experiment_ids, required_tags, status, extra_filter, order_by, page_size
    )
    for runs, _ in pages:
        yield from runs


def search_pages(
    client: MlflowClient,
    experiment_ids: list[str],
    required_tags: Mapping[str, str],
    status: str | None = FINISHED,
    extra_filter: str = "",
    order_by: list[str] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> Iterator[tuple[list[Run], bool]]:
    """query_runs_by_tags one server page at a time: (matching runs, whether it was the last)."""
    tags_clause, _ = tag_filter(required_tags)
    status_clause = f"attributes.status = {quote_filter_value(status)}" if status else ""
    filter_string = join_filters(status_clause, tags_clause, extra_filter)
    seen: set[str] = set()
    token: str | None = None
    while True:
        page = client.search_runs(
            experiment_ids=experiment_ids,
            filter_string=filter_string,
            max_results=page_size,
            order_by=order_by,
            page_token=token,
        )
        runs = []
        for run in page:
            if run.info.run_id not in seen and _matches(run, required_tags, status):
                seen.add(run.info.run_id)
                runs.append(run)
        token = page.token
        yield runs, not token
        if not token:
            return


def _matches(run: Run, required_tags: Mapping[str, str], status: str | None) -> bool:
    if status is not None and run.info.status != status:
        return False
    tags = run.data.tags
    return all(tags.get(key) == value for key, value in required_tags.items())


def metric_value(run: Run, metric: str) -> float | None:
    """The run's (latest) value of `metric`, or None when it is missing or not a number."""
    value = run.data.metrics.get(metric)
    if value is None or not math.isfinite(value):
        return None
    return float(value)


SearchStrategy = Literal["order_by", "narrow"]


def default_strategy(client: MlflowClient) -> SearchStrategy:
    """`narrow` on a SQLite store, `order_by` elsewhere.

    MLflow's SQL for ORDER BY a metric left-joins a materialised subquery that SQLite scans
    once per run: quadratic, 1.4 s per search at 10,000 runs (benchmarks/bench_retrieval.py).
    PostgreSQL and MySQL hash-join it, and two requests beat several there.
    """
    uri = str(getattr(client, "tracking_uri", ""))
    return "narrow" if uri.startswith("sqlite:") else "order_by"


def find_best_run_by_metric(
    client: MlflowClient,
    experiment_ids: list[str],
    required_tags: Mapping[str, str],
    metric: str,
    direction: Direction,
    *,
    tie_break: Callable[[Run], Any] | None = None,
    accept: Callable[[Run], bool] | None = None,
    extra_filter: str = "",
    page_size: int = BEST_RUN_PAGE_SIZE,
    strategy: SearchStrategy | None = None,
) -> Run | None:
    """The FINISHED run with the best `metric`, found on the server; `tie_break` (smallest
    wins; by default the run id) chooses among every run sharing the best value.

    `order_by`: the first page of a search ordered by the metric gives the best value; when
    that page holds nothing but ties, every run equal to it is fetched (`metrics.x = v`,
    paged), so ties are all seen however many there are.
    `narrow`: pages (run-id order, which is random) of runs at least as good as the best so
    far; a strictly better one starts the next round, which keeps about 1/page_size of the
    runs; a round that finds only equals has read every tie.
    `accept` rejects runs on the client (they are skipped, the search goes on). Runs without
    a finite value never win.
    """
    search = _BestSearch(
        client, experiment_ids, required_tags, metric, direction, accept, extra_filter, page_size
    )
    chosen = strategy or default_strategy(client)
    found = search.by_narrowing() if chosen == "narrow" else search.by_ordering()
    if found is None:
        return None
    top, ties = found
    return min([*ties, top], key=tie_break or (lambda run: run.info.run_id))


class _BestSearch:
    def __init__(
        self,
        client: MlflowClient,
        experiment_ids: list[str],
        required_tags: Mapping[str, str],
        metric: str,
        direction: Direction,
        accept: Callable[[Run], bool] | None,
        extra_filter: str,
        page_size: int,
    ) -> None:
        self.client, self.experiment_ids, self.required = client, experiment_ids, required_tags
        self.metric, self.name = metric, quote_identifier(metric)
        self.maximize = direction is Direction.MAXIMIZE
        self.accept, self.extra, self.page_size = accept, extra_filter, page_size

    def pages(self, clause: str = "", **kw: Any) -> Iterator[tuple[list[Run], bool]]:
        extra = join_filters(self.extra, clause)
        pages = search_pages(
            self.client, self.experiment_ids, self.required, extra_filter=extra, **kw
        )
        for runs, last in pages:
            yield [run for run in runs if self.usable(run)], last

    def usable(self, run: Run) -> bool:
        return metric_value(run, self.metric) is not None and (
            self.accept is None or self.accept(run)
        )

    def raw(self, run: Run) -> float:
        value = metric_value(run, self.metric)
        assert value is not None  # only usable runs get here
        return value

    def signed(self, run: Run) -> float:
        """Larger is better, in either direction."""
        return self.raw(run) if self.maximize else -self.raw(run)

    def by_ordering(self) -> tuple[Run, list[Run]] | None:
        order = f"metrics.{self.name} {'DESC' if self.maximize else 'ASC'}"
        for runs, last in self.pages(order_by=[order], page_size=self.page_size):
            if not runs:
                continue
            top = runs[0]
            ties = [run for run in runs if self.raw(run) == self.raw(top)]
            # Ties are contiguous in the ordering: a worse run (or the end) closes them.
            if last or len(ties) < len(runs):
                return top, ties
            return top, self.equal_to(top)
        return None

    def by_narrowing(self) -> tuple[Run, list[Run]] | None:
        best: Run | None = None
        while True:
            clause = ""
            if best is not None:
                literal = format_filter_number(self.raw(best))
                if literal is None:  # never seen for a finite double; ordering is always right
                    return self.by_ordering()
                clause = f"metrics.{self.name} {'>=' if self.maximize else '<='} {literal}"
            order = ["attributes.run_id ASC"]
            ties: list[Run] = []
            better: list[Run] = []
            for runs, _ in self.pages(clause, order_by=order, page_size=self.page_size):
                better = [r for r in runs if best is None or self.signed(r) > self.signed(best)]
                if better:
                    break
                ties.extend(runs)
            if not better:
                return None if best is None else (best, ties)
            best = max(better, key=self.signed)

    def equal_to(self, top: Run) -> list[Run]:
        """Every usable run whose value equals top's."""
        best = self.raw(top)
        literal = format_filter_number(best)
        # Without a literal (never seen for a finite double) read every run: slow, not wrong.
        clause = "" if literal is None else f"metrics.{self.name} = {literal}"
        return [r for runs, _ in self.pages(clause) for r in runs if self.raw(r) == best]


def parse_int_tag(run: Run, tag: str) -> int | None:
    """A tag holding a non-negative integer in canonical form ('3', not '03'), else None."""
    text = run.data.tags.get(tag)
    if text is None or not text.isdigit() or not text.isascii() or str(int(text)) != text:
        return None
    return int(text)


def group_runs_by_variant(runs: Iterable[Run], tags: TagsRegistry) -> dict[int, list[Run]]:
    """Runs keyed by their variant number (tag process.variant); runs without a valid one are
    left out, as they cannot be attributed to any variant."""
    grouped: dict[int, list[Run]] = {}
    for run in runs:
        variant = parse_int_tag(run, tags.process.variant)
        if variant is not None:
            grouped.setdefault(variant, []).append(run)
    return grouped
