"""Tables keep every cell whole: off a terminal at their natural width, on one folded."""

from __future__ import annotations

import io

from rich.console import Console

from hpoq.producer.tables import new_table, print_table

LONG = "sentence-transformers-paraphrase-multilingual-minilm-l12-v2"


def test_off_a_terminal_nothing_is_cut() -> None:
    sink = io.StringIO()
    console = Console(file=sink, width=80)
    assert not console.is_terminal
    table = new_table("backbone", "variant", "p99 ms", right=("p99 ms",))
    table.add_row(LONG, f"hpo_{LONG}_v12", "12.34")
    print_table(console, table)
    text = sink.getvalue()
    assert LONG in text and f"hpo_{LONG}_v12" in text and "…" not in text


def test_on_a_narrow_terminal_cells_fold() -> None:
    sink = io.StringIO()
    console = Console(file=sink, width=40, force_terminal=True, color_system=None)
    table = new_table("backbone", "p99 ms")
    table.add_row(LONG, "12.34")
    print_table(console, table)
    text = sink.getvalue()
    assert "…" not in text
    assert "".join(line.strip("│ ") for line in text.splitlines()).count("minilm") == 1
