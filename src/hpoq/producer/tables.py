"""Tables that never hide a value.

rich shrinks a table to the console's width and cuts what does not fit ("minilm-…"). A
console that is not a terminal (a file, a pipe, CI's log) has no width to respect: there
the table is printed at its natural width, every cell whole. On a terminal narrower than
the table, cells wrap (`overflow="fold"`) instead of being cut.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

NOT_MEASURED = "n/a"
MAX_WIDTH = 100_000  # wide enough for any table hpoq prints


def new_table(*headers: str, title: str | None = None, right: Iterable[str] = ()) -> Table:
    """A table whose cells fold rather than truncate; `right`: right-aligned columns."""
    aligned = set(right)
    table = Table(title=title)
    for header in headers:
        table.add_column(
            escape(header),
            justify="right" if header in aligned else "left",
            overflow="fold",
        )
    return table


def print_table(console: Console, table: Table) -> None:
    """Print `table` whole: at its natural width when the console is not a terminal."""
    if console.is_terminal:
        console.print(table)
        return
    unbounded = console.options.update(max_width=MAX_WIDTH)
    width = max(console.measure(table, options=unbounded).maximum, 20)
    # Console.print never renders wider than its console: a console as wide as the table,
    # on the same file.
    Console(file=console.file, width=width, no_color=console.no_color).print(table, crop=False)


def cell(value: object) -> str:
    """A user-provided value as table text (rich markup in it is shown, not interpreted)."""
    return escape(str(value))


def number(value: float | None, digits: int = 2) -> str:
    return NOT_MEASURED if value is None else f"{value:.{digits}f}"
